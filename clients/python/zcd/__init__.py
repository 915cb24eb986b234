"""zcd clients in Python (Debian's python3-zmq and python3-msgpack only).

- Client: one daemon's command endpoint (DEALER, requests matched by rid).
- FanOut: many daemons (nodes) over tcp+CURVE: one request to all or some,
  and their event streams merged losslessly (docs/fanout.md).
- load_nodes / read_cert: the node file and czmq certificate files.
"""
from .client import (Client, Node, NodeFileError, ZcdError, load_nodes, read_cert,
                     SINCE_NOW)
from .fanout import FanOut, FanOutEvent, Result

__all__ = ["Client", "Node", "NodeFileError", "ZcdError", "load_nodes", "read_cert",
           "SINCE_NOW", "FanOut", "FanOutEvent", "Result"]
