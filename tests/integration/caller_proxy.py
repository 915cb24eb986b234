"""Requests sent to a zcd as another user.

The daemon learns an ipc caller from the connection's peer credentials, so
a test that speaks for an unprivileged user needs a process of that uid.
CallerProxy starts one (this file, run as __main__ under the user's ids)
that relays requests over a pipe: each is one length-prefixed msgpack
{"ep", "body", "timeout"}, each answer {"final", "partials"} or
{"error": "timeout"}."""

import os
import struct
import subprocess
import sys

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))


def _write(stream, obj):
    data = msgpack.packb(obj, use_bin_type=True)
    stream.write(struct.pack("<I", len(data)) + data)
    stream.flush()


def _read(stream):
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack("<I", head)
    return msgpack.unpackb(stream.read(n), raw=False)


class CallerProxy:
    def __init__(self, uid, gid, groups=()):
        self.uid, self.gid = uid, gid

        def drop():
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)

        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "caller_proxy.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     preexec_fn=drop, cwd="/")
        self._rid = 0

    def call_full(self, endpoint, op, timeout=20.0, **keys):
        """(final reply, [partial replies]) of one request."""
        self._rid += 1
        body = {"op": op, "rid": self._rid}
        body.update(keys)
        _write(self.proc.stdin, {"ep": endpoint, "body": body, "timeout": timeout})
        answer = _read(self.proc.stdout)
        if answer is None or "error" in answer:
            raise TimeoutError(f"no reply to {op} as uid {self.uid}: {answer}")
        return answer["final"], answer["partials"]

    def call(self, endpoint, op, timeout=20.0, **keys):
        return self.call_full(endpoint, op, timeout, **keys)[0]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _serve():
    import zmq
    ctx = zmq.Context()
    socks = {}
    while True:
        req = _read(sys.stdin.buffer)
        if req is None:
            break
        ep = req["ep"]
        if ep not in socks:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(ep)
            socks[ep] = s
        s = socks[ep]
        rid = req["body"]["rid"]
        s.send(msgpack.packb(req["body"], use_bin_type=True))
        partials, final = [], None
        timeout_ms = int(req["timeout"] * 1000)
        while final is None:
            if not s.poll(timeout_ms):
                break
            reply = msgpack.unpackb(s.recv_multipart()[-1], raw=False)
            if reply.get("rid") != rid:
                continue
            if "ok" in reply:
                final = reply
            else:
                partials.append(reply)
        if final is None:
            _write(sys.stdout.buffer, {"error": "timeout"})
        else:
            _write(sys.stdout.buffer, {"final": final, "partials": partials})
    for s in socks.values():
        s.close(0)
    ctx.term()


if __name__ == "__main__":
    _serve()
