"""One zcd daemon over ZeroMQ + msgpack (PROTOCOL.md), and the files the
fan-out client reads: czmq certificates and the node file (docs/fanout.md)."""
import itertools
import os
import re
from dataclasses import dataclass
from typing import Optional

import msgpack
import zmq
from zmq.utils import z85

# since_seq meaning "only events from now on" (as libzcd's ZCD_SINCE_NOW)
SINCE_NOW = 2**64 - 1
DEFAULT_TIMEOUT_MS = 30000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ZcdError(Exception):
    """A failed request: code is the daemon's error code, or "timeout"."""

    def __init__(self, code, message, reply=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reply = reply


class NodeFileError(ValueError):
    pass


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def valid_key(key):
    """A CURVE key in Z85: 40 characters that decode to 32 bytes."""
    if not isinstance(key, str) or len(key) != 40:
        return False
    try:
        return len(z85.decode(key.encode())) == 32
    except (ValueError, KeyError, TypeError):
        return False


_CERT_LINE = re.compile(r"""^\s*(public-key|secret-key)\s*=\s*(?:"([^"]*)"|'([^']*)'|(\S+))""")


def read_cert(path):
    """(public, secret) Z85 keys (str) of a czmq certificate file; secret is
    None for a public certificate.  A secret-only file gets its public key
    derived.  Raises NodeFileError."""
    keys = {}
    try:
        with open(path) as f:
            for line in f:
                m = _CERT_LINE.match(line)
                if m:
                    keys[m.group(1)] = next(g for g in m.groups()[1:] if g is not None)
    except OSError as e:
        raise NodeFileError(f"certificate {path}: {e.strerror}") from None
    public, secret = keys.get("public-key"), keys.get("secret-key")
    if secret is not None and not valid_key(secret):
        raise NodeFileError(f"certificate {path}: no valid secret-key in Z85")
    if public is None and secret is not None:
        public = zmq.curve_public(secret.encode()).decode()
    if not valid_key(public):
        raise NodeFileError(f"certificate {path}: no valid public-key in Z85")
    return public, secret


@dataclass
class Node:
    name: str
    cmd_ep: str
    evt_ep: str
    server_key: Optional[str]  # None: plain connection (ipc, --insecure-tcp)


def load_nodes(path):
    """(nodes, client_cert_path or None) from a node file: lines
    `NAME COMMAND-EP EVENTS-EP SERVER-KEY` (the key in Z85, `-` for none, or
    the path of the daemon's public certificate) and `client-cert PATH`;
    relative paths are relative to the file's directory; whole-line `#`
    comments.  Raises NodeFileError."""
    base = os.path.dirname(os.path.abspath(path))
    beside = lambda p: p if os.path.isabs(p) else os.path.join(base, p)
    nodes, cert = [], None
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        raise NodeFileError(f"{path}: {e.strerror}") from None
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{path}:{lineno}"
        if len(fields) == 2 and fields[0] == "client-cert":
            cert = beside(fields[1])
            try:
                if read_cert(cert)[1] is None:
                    raise NodeFileError(f"certificate {cert}: no secret-key (a client "
                                        "certificate needs it)")
            except NodeFileError as e:
                raise NodeFileError(f"{where}: {e}") from None
            continue
        if len(fields) != 4:
            raise NodeFileError(f"{where}: expected `NAME COMMAND-EP EVENTS-EP SERVER-KEY` "
                                "or `client-cert PATH`")
        name, cmd_ep, evt_ep, key = fields
        if not _NAME.match(name):
            raise NodeFileError(f"{where}: node {name}: needs a name of 1-64 [A-Za-z0-9_.-]")
        if any(n.name == name for n in nodes):
            raise NodeFileError(f"{where}: node {name}: needs a name not used yet")
        if key == "-":
            key = None
        elif not valid_key(key):
            try:
                key = read_cert(beside(key))[0]
            except NodeFileError as e:
                raise NodeFileError(f"{where}: {e}") from None
        nodes.append(Node(name, cmd_ep, evt_ep, key))
    if not nodes:
        raise NodeFileError(f"{path}: no nodes")
    return nodes, cert


def make_socket(ctx, kind, node, client_keys):
    """A socket for node, with CURVE when the node has a server key (not
    connected: the caller may attach a monitor first)."""
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    if kind == zmq.DEALER:
        s.setsockopt(zmq.SNDHWM, 100000)
        s.setsockopt(zmq.RCVHWM, 0)  # a whole replay must fit
    if node.server_key:
        if client_keys is None:
            raise NodeFileError(f"node {node.name}: a CURVE server key but no client certificate")
        s.curve_serverkey = node.server_key.encode()
        s.curve_publickey = client_keys[0].encode()
        s.curve_secretkey = client_keys[1].encode()
    return s


def read_reply(sock):
    """The last frame of one waiting message, decoded; None if undecodable."""
    frames = sock.recv_multipart(zmq.NOBLOCK)
    try:
        reply = unpack(frames[-1])
    except Exception:  # any malformed body: dropped, as libzcd does
        return None
    return reply if isinstance(reply, dict) else None


class Client:
    """One daemon's command endpoint: call(op, **keys) -> the final reply
    (a dict), raising ZcdError for an error reply or a timeout."""

    def __init__(self, node, client_keys=None, ctx=None, timeout_ms=DEFAULT_TIMEOUT_MS):
        self.node = node
        self.ctx = ctx or zmq.Context.instance()
        self.timeout_ms = timeout_ms
        self.sock = make_socket(self.ctx, zmq.DEALER, node, client_keys)
        self.sock.connect(node.cmd_ep)
        self._rids = itertools.count(1)
        self.stash = []  # replies to other requests, in arrival order

    def close(self):
        self.sock.close()

    def send(self, body):
        rid = next(self._rids)
        self.sock.send_multipart([b"", pack(dict(body, rid=rid))])
        return rid

    def call(self, op, timeout_ms=None, on_partial=None, **keys):
        timeout_ms = self.timeout_ms if timeout_ms is None else timeout_ms
        rid = self.send(dict(keys, op=op))
        while True:
            if not self.sock.poll(timeout_ms):
                raise ZcdError("timeout", f"no reply from {self.node.cmd_ep} within {timeout_ms} ms")
            reply = read_reply(self.sock)
            if reply is None:
                continue
            if reply.get("rid") != rid:
                self.stash.append(reply)
            elif "ok" not in reply:
                if on_partial:
                    on_partial(reply)
            elif reply["ok"]:
                return reply
            else:
                err = reply.get("error") or {}
                raise ZcdError(err.get("code", "internal"), err.get("message", ""), reply)
