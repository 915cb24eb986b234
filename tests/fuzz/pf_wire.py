"""Wire helpers for the protocol fuzzer (tests/fuzz/protocol_fuzz.py).

A small msgpack encoder that can also write what a well-behaved packer never
does: str values holding arbitrary (non-UTF-8) bytes, maps with duplicate
keys, integers in wider-than-needed encodings.  Plus a DEALER client that
pipelines requests and matches replies by rid."""

import struct
import time

import msgpack
import zmq


class RawStr:
    """A msgpack str whose payload is these bytes, valid UTF-8 or not."""

    def __init__(self, data):
        self.data = bytes(data)

    def __repr__(self):
        return f"RawStr({self.data[:60]!r}{'...' if len(self.data) > 60 else ''})"


class Pairs:
    """A msgpack map written from this list of (key, value) pairs, in order,
    duplicates included."""

    def __init__(self, pairs):
        self.pairs = list(pairs)

    def __repr__(self):
        return f"Pairs({self.pairs!r})"


class WideInt:
    """An int written in a given msgpack encoding (e.g. 0xd3 int64 for 5)."""

    FORMATS = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q",
               0xd0: ">b", 0xd1: ">h", 0xd2: ">i", 0xd3: ">q"}

    def __init__(self, value, code):
        self.value = value
        self.code = code

    def __repr__(self):
        return f"WideInt({self.value}, 0x{self.code:02x})"


def _str_header(n):
    if n < 32:
        return bytes([0xa0 | n])
    if n < 256:
        return bytes([0xd9, n])
    if n < 65536:
        return b"\xda" + struct.pack(">H", n)
    return b"\xdb" + struct.pack(">I", n)


def _int(v):
    if 0 <= v < 128:
        return bytes([v])
    if -32 <= v < 0:
        return struct.pack(">b", v)
    if v >= 0:
        for code, fmt, lim in ((0xcc, ">B", 1 << 8), (0xcd, ">H", 1 << 16),
                               (0xce, ">I", 1 << 32), (0xcf, ">Q", 1 << 64)):
            if v < lim:
                return bytes([code]) + struct.pack(fmt, v)
        raise OverflowError(v)
    for code, fmt, lim in ((0xd0, ">b", 1 << 7), (0xd1, ">h", 1 << 15),
                           (0xd2, ">i", 1 << 31), (0xd3, ">q", 1 << 63)):
        if -lim <= v:
            return bytes([code]) + struct.pack(fmt, v)
    raise OverflowError(v)


def encode(obj, out=None):
    """msgpack bytes of obj (dict, list, tuple, str, bytes, int, float, bool,
    None, RawStr, Pairs, WideInt)."""
    top = out is None
    if top:
        out = []
    if obj is None:
        out.append(b"\xc0")
    elif obj is True:
        out.append(b"\xc3")
    elif obj is False:
        out.append(b"\xc2")
    elif isinstance(obj, WideInt):
        out.append(bytes([obj.code]) + struct.pack(WideInt.FORMATS[obj.code], obj.value))
    elif isinstance(obj, int):
        out.append(_int(obj))
    elif isinstance(obj, float):
        out.append(b"\xcb" + struct.pack(">d", obj))
    elif isinstance(obj, str):
        b = obj.encode("utf-8", "surrogatepass")
        out.append(_str_header(len(b)))
        out.append(b)
    elif isinstance(obj, RawStr):
        out.append(_str_header(len(obj.data)))
        out.append(obj.data)
    elif isinstance(obj, (bytes, bytearray)):
        n = len(obj)
        if n < 256:
            out.append(bytes([0xc4, n]))
        elif n < 65536:
            out.append(b"\xc5" + struct.pack(">H", n))
        else:
            out.append(b"\xc6" + struct.pack(">I", n))
        out.append(bytes(obj))
    elif isinstance(obj, (list, tuple)):
        n = len(obj)
        if n < 16:
            out.append(bytes([0x90 | n]))
        elif n < 65536:
            out.append(b"\xdc" + struct.pack(">H", n))
        else:
            out.append(b"\xdd" + struct.pack(">I", n))
        for x in obj:
            encode(x, out)
    elif isinstance(obj, (dict, Pairs)):
        pairs = obj.pairs if isinstance(obj, Pairs) else list(obj.items())
        n = len(pairs)
        if n < 16:
            out.append(bytes([0x80 | n]))
        elif n < 65536:
            out.append(b"\xde" + struct.pack(">H", n))
        else:
            out.append(b"\xdf" + struct.pack(">I", n))
        for k, v in pairs:
            encode(k, out)
            encode(v, out)
    else:
        raise TypeError(f"cannot encode {type(obj)}")
    if top:
        return b"".join(out)
    return None


def unpack(data):
    """Decode a reply; a str that is not UTF-8 comes back with surrogate
    escapes (see bad_strings) instead of failing the whole reply."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False,
                           unicode_errors="surrogateescape")


def bad_strings(obj, path="", out=None):
    """Paths of the str values in obj that were not valid UTF-8 on the wire."""
    if out is None:
        out = []
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            out.append(f"{path or '.'}={obj.encode('utf-8', 'surrogateescape')[:80]!r}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            bad_strings(k, f"{path}/<key>", out)
            bad_strings(v, f"{path}/{k}", out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad_strings(v, f"{path}[{i}]", out)
    return out


def rid_key(rid):
    return msgpack.packb(rid, use_bin_type=True)


def short(obj, limit=300):
    """A bounded repr for logs."""
    def trim(o, depth=0):
        if isinstance(o, (list, tuple)) and len(o) > 8:
            return [trim(x, depth + 1) for x in o[:6]] + [f"...({len(o)} items)"]
        if isinstance(o, list):
            return [trim(x, depth + 1) for x in o]
        if isinstance(o, dict):
            return {k: trim(v, depth + 1) for k, v in list(o.items())[:40]}
        if isinstance(o, Pairs):
            return Pairs([(trim(k), trim(v)) for k, v in o.pairs[:40]])
        if isinstance(o, str) and any(0xdc80 <= ord(ch) <= 0xdcff for ch in o[:2000]):
            return RawStr(o.encode("utf-8", "surrogateescape")[:100])
        if isinstance(o, str) and len(o) > 120:
            return o[:100] + f"...({len(o)} chars)"
        if isinstance(o, (bytes, bytearray)) and len(o) > 80:
            return bytes(o[:60]) + b"..."
        return o
    s = repr(trim(obj))
    return s if len(s) <= limit else s[:limit] + "..."


class Request:
    __slots__ = ("rid", "op", "body", "target", "sent", "step", "epoch", "sock",
                 "deadline", "partials", "expect", "wire_len", "envelope", "final")

    def __init__(self, rid, op, body, target, step, epoch, sock, deadline, expect=None):
        self.rid = rid
        self.op = op
        self.body = body
        self.target = target
        self.sent = time.monotonic()
        self.step = step
        self.epoch = epoch
        self.sock = sock
        self.deadline = deadline
        self.partials = []
        self.expect = expect
        self.wire_len = 0
        self.envelope = []
        self.final = None


class Dealer:
    """A DEALER on the command endpoint.  Replies come back through
    poll_replies(); the caller keeps the table of requests in flight."""

    def __init__(self, ctx, endpoint, name, rcvhwm=None):
        self.name = name
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if rcvhwm is not None:
            self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.connect(endpoint)
        self.closed = False

    def send(self, frames):
        self.sock.send_multipart(frames, copy=False)

    def recv_all(self):
        """Every message waiting now, as lists of frames."""
        msgs = []
        while True:
            try:
                msgs.append(self.sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return msgs

    def close(self):
        if not self.closed:
            self.sock.close(0)
            self.closed = True
