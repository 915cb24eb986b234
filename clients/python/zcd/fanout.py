"""The fan-out client: N zcd nodes, one request to all or some, and their
event streams merged losslessly by (node, seq), each event tagged with the
boot of the daemon that delivered it.  The same protocol as libzcd's
lib/zcd_fanout_events.c (docs/fanout.md):

- per node a SUB (every topic), a DEALER of its own for syncs, and a
  monitor of the SUB;
- a sync is `state`, `events` since the last seq held, `state`, pipelined
  on that DEALER; its replay is kept only when both states name the same
  boot (one connection delivers in order, so one daemon served it);
- the SUB is not read while a sync is in flight; a live event is delivered
  when its seq is the next one, a gap or a heartbeat announcing a newer
  last_seq (or an unknown boot) starts a sync;
- a new handshake of the SUB (the daemon restarted, the sockets
  reconnected) starts a sync before the SUB is read further, and a message
  read just as such a handshake is reported is left to that sync's replay.
"""
import time
from dataclasses import dataclass, field
from typing import Optional

import zmq
from zmq.utils.monitor import parse_monitor_message

from .client import (DEFAULT_TIMEOUT_MS, SINCE_NOW, NodeFileError, ZcdError, load_nodes,
                     make_socket, pack, read_cert, read_reply, unpack)

RETRY_S = 0.5      # a sync the daemon refused is retried after this long
LIVE_BATCH = 256   # SUB messages read from one node per turn
_MONITOR = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_DISCONNECTED)


@dataclass
class Result:
    """One node's answer to a fan-out request: reply is the final reply
    (ok or the daemon's error), None when none came; error is None when ok."""
    node: str
    reply: Optional[dict] = None
    error: Optional[str] = None

    @property
    def ok(self):
        return self.error is None


@dataclass
class FanOutEvent:
    node: str
    boot_id: str
    event: dict

    @property
    def seq(self):
        return self.event["seq"]


@dataclass
class _Stream:
    since: int = SINCE_NOW
    started: bool = False
    known: int = 0
    boot_id: str = ""
    retired: set = field(default_factory=set)
    need_sync: bool = True
    rids: Optional[dict] = None   # the sync in flight: {"state1", "events", "state2"}
    got: dict = field(default_factory=dict)
    replay: list = field(default_factory=list)
    replay_known: int = 0
    replay_truncated: bool = False
    deadline: float = 0.0
    retry_at: float = 0.0
    syncs: int = 0
    truncated: bool = False
    error: str = ""


class _NodeConn:
    def __init__(self, fanout, node):
        self.node = node
        self.fanout = fanout
        self.dealer = None  # requests
        self.rids = 0
        self.abandoned = set()
        self.evt = self.sub = self.monitor = None  # the event stream
        self.evt_rids = 0
        self.stream = _Stream(since=fanout.since)

    def request_socket(self):
        if self.dealer is None:
            self.dealer = make_socket(self.fanout.ctx, zmq.DEALER, self.node, self.fanout.keys)
            self.dealer.connect(self.node.cmd_ep)
        return self.dealer

    def connect_stream(self):
        ctx, keys = self.fanout.ctx, self.fanout.keys
        self.evt = make_socket(ctx, zmq.DEALER, self.node, keys)
        self.evt.connect(self.node.cmd_ep)
        self.sub = make_socket(ctx, zmq.SUB, self.node, keys)
        # the monitor is in place before the SUB connects: no handshake unseen
        self.monitor = self.sub.get_monitor_socket(_MONITOR)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(self.node.evt_ep)
        if self.stream.since != SINCE_NOW:
            self.stream.known = self.stream.since

    def close(self):
        for s in (self.dealer, self.evt, self.monitor, self.sub):
            if s is not None:
                s.close(linger=0)


class FanOut:
    """FanOut(node_file) or FanOut(nodes=[Node...], client_cert=PATH)."""

    def __init__(self, node_file=None, nodes=None, client_cert=None, ctx=None,
                 timeout_ms=DEFAULT_TIMEOUT_MS):
        cert = None
        if node_file is not None:
            nodes, cert = load_nodes(node_file)
        cert = client_cert or cert
        self.keys = None
        if cert is not None:
            public, secret = read_cert(cert)
            if secret is None:
                raise NodeFileError(f"certificate {cert}: no secret-key (a client certificate "
                                    "needs it)")
            self.keys = (public, secret)
        self.ctx = ctx or zmq.Context.instance()
        self.timeout_ms = timeout_ms
        self.since = SINCE_NOW
        self.conns = [_NodeConn(self, n) for n in nodes or []]
        self.by_name = {c.node.name: c for c in self.conns}
        self.stash = []     # (node, reply) for recv()
        self.ready = []     # merged events ready for delivery
        self.started = False
        self.rr = 0

    @property
    def names(self):
        return [c.node.name for c in self.conns]

    def close(self):
        for c in self.conns:
            c.close()

    # ---- requests -------------------------------------------------------

    def _targets(self, nodes):
        if nodes is None:
            return list(self.conns)
        out = []
        for name in nodes:
            c = self.by_name.get(name)
            if c is None:
                raise ValueError(f"node {name}: no such node")
            if c in out:
                raise ValueError(f"node {name}: named twice")
            out.append(c)
        return out

    def send(self, node, body):
        """Send body (a dict without rid) to one node; returns the rid."""
        c = self.by_name[node]
        c.rids += 1
        c.request_socket().send_multipart([b"", pack(dict(body, rid=c.rids))])
        return c.rids

    def _next_reply(self, conns, deadline):
        """(conn, reply) from the request sockets of conns, skipping
        abandoned rids; None on timeout."""
        poller = zmq.Poller()
        for c in conns:
            poller.register(c.request_socket(), zmq.POLLIN)
        while True:
            left = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            ready = dict(poller.poll(left))
            if not ready:
                return None
            for c in conns:
                if c.dealer not in ready:
                    continue
                reply = read_reply(c.dealer)
                if reply is None:
                    continue
                rid = reply.get("rid")
                if rid in c.abandoned:
                    if "ok" in reply:
                        c.abandoned.discard(rid)
                    continue
                return c, reply

    def recv(self, timeout_ms=-1):
        """(node, reply) of any request sent with send(), partial or final;
        None on timeout."""
        if self.stash:
            return self.stash.pop(0)
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        got = self._next_reply(self.conns, deadline)
        return None if got is None else (got[0].node.name, got[1])

    def call(self, body, nodes=None, timeout_ms=None):
        """Send body to the nodes named (None = all) at once; {name: Result}
        once every node answered or the timeout passed."""
        timeout_ms = self.timeout_ms if timeout_ms is None else timeout_ms
        conns = self._targets(nodes)
        results = {c.node.name: Result(c.node.name) for c in conns}
        pending = {}
        for c in conns:
            try:
                pending[c.node.name] = self.send(c.node.name, body)
            except (zmq.ZMQError, NodeFileError) as e:
                results[c.node.name].error = str(e)
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        while pending:
            got = self._next_reply([self.by_name[n] for n in pending], deadline)
            if got is None:
                break
            c, reply = got
            name = c.node.name
            if reply.get("rid") != pending.get(name):
                self.stash.append((name, reply))
            elif "ok" in reply:
                del pending[name]
                r = results[name]
                r.reply = reply
                if not reply["ok"]:
                    err = reply.get("error") or {}
                    r.error = f"{err.get('code', 'internal')}: {err.get('message', '')}"
        for name, rid in pending.items():
            self.by_name[name].abandoned.add(rid)
            results[name].error = (f"timeout: no reply from {self.by_name[name].node.cmd_ep} "
                                   f"within {timeout_ms} ms")
        return results

    def request(self, op, nodes=None, timeout_ms=None, **keys):
        return self.call(dict(keys, op=op), nodes, timeout_ms)

    # ---- the merged event stream ------------------------------------------

    def set_since(self, since_seq, node=None):
        """Where the streams start (SINCE_NOW, the default, or a seq); one
        node's when node is given.  Before the first next_event()."""
        if node is None:
            self.since = since_seq
        for c in self.conns if node is None else [self.by_name[node]]:
            if not c.stream.started:
                c.stream.since = since_seq

    def node_state(self, node):
        """The stream's view of a node: last_seq, boot_id, truncated, syncs,
        error."""
        st = self.by_name[node].stream
        return {"last_seq": st.known, "boot_id": st.boot_id, "truncated": st.truncated,
                "syncs": st.syncs, "error": st.error}

    def events(self, timeout_ms=-1):
        """Iterate over the merged stream (stops after timeout_ms without
        any event; -1 = never)."""
        while True:
            e = self.next_event(timeout_ms)
            if e is None:
                return
            yield e

    def next_event(self, timeout_ms=-1):
        """The next FanOutEvent of any node, or None after timeout_ms."""
        if not self.started:
            self.started = True
            for c in self.conns:
                c.connect_stream()
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        while True:
            if self.ready:
                return self.ready.pop(0)
            due = self._schedule()
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if due is not None:
                wait = max(0.0, due - time.monotonic()) if wait is None else \
                    min(wait, max(0.0, due - time.monotonic()))
            poller = zmq.Poller()
            for c in self.conns:
                poller.register(c.evt, zmq.POLLIN)
                poller.register(c.monitor, zmq.POLLIN)
                if self._live(c):
                    poller.register(c.sub, zmq.POLLIN)
            poller.poll(None if wait is None else int(wait * 1000))
            n = len(self.conns)
            for k in range(n):
                self._service(self.conns[(self.rr + k) % n])
            self.rr = (self.rr + 1) % n if n else 0
            if not self.ready and deadline is not None and time.monotonic() >= deadline:
                return None

    # ---- syncs ----------------------------------------------------------------

    @staticmethod
    def _live(c):
        st = c.stream
        return st.started and not st.need_sync and st.rids is None

    def _schedule(self):
        now, next_due = time.monotonic(), None
        for c in self.conns:
            st = c.stream
            if st.rids is not None and self.timeout_ms >= 0 and now >= st.deadline:
                self._sync_fail(c, 0, f"no reply from {c.node.cmd_ep} within {self.timeout_ms} ms")
            if st.rids is None and st.need_sync and now >= st.retry_at:
                self._sync_send(c)
            due = (st.deadline if self.timeout_ms >= 0 else None) if st.rids is not None \
                else (st.retry_at if st.need_sync else None)
            if due is not None and (next_due is None or due < next_due):
                next_due = due
        return next_due

    def _send_evt(self, c, body):
        c.evt_rids += 1
        c.evt.send_multipart([b"", pack(dict(body, rid=c.evt_rids))], zmq.NOBLOCK)
        return c.evt_rids

    def _sync_send(self, c):
        st = c.stream
        st.need_sync = False
        st.replay = []
        st.replay_known = st.known
        st.replay_truncated = False
        st.got = {}
        st.syncs += 1
        try:
            st.rids = {"state1": self._send_evt(c, {"op": "state"})}
            if not st.started and st.since == SINCE_NOW:
                # from now: the state snapshot's last_seq is where it starts
                st.rids.update(events=None, state2=None)
                st.got.update(events=True, events_ok=True, state2=None)
            else:
                st.rids["events"] = self._send_evt(c, {"op": "events", "since_seq": st.known})
                st.rids["state2"] = self._send_evt(c, {"op": "state"})
        except zmq.ZMQError as e:
            self._sync_fail(c, RETRY_S, f"send: {e}")
            return
        st.deadline = time.monotonic() + self.timeout_ms / 1000

    def _sync_fail(self, c, retry_s, why):
        st = c.stream
        st.error = why
        st.rids = None
        st.replay = []
        st.need_sync = True
        st.retry_at = time.monotonic() + retry_s

    def _sync_finish(self, c):
        st = c.stream
        replayed = st.rids.get("events") is not None
        boot1 = st.got["state1"]
        if not st.got.get("events_ok") or not boot1:
            self._sync_fail(c, RETRY_S, "sync refused by the daemon")
            return
        if replayed and boot1 != st.got["state2"]:
            # the daemon restarted during the sync: the replay may be either boot's
            self._sync_fail(c, 0, "daemon restarted during a sync")
            return
        if boot1 != st.boot_id:
            if st.boot_id:
                st.retired.add(st.boot_id)
            st.boot_id = boot1
        if replayed:
            self.ready.extend(FanOutEvent(c.node.name, boot1, e) for e in st.replay)
            st.known = max(st.known, st.replay_known)
            st.truncated |= st.replay_truncated
        else:
            st.known = st.got["state1_last_seq"]
        st.replay = []
        st.rids = None
        st.started = True
        st.error = ""

    def _on_sync_reply(self, c, reply):
        st = c.stream
        rid, final = reply.get("rid"), "ok" in reply
        if st.rids is None or rid is None:
            return  # a sync given up: stale
        boot = reply.get("boot_id") if reply.get("ok") else ""
        if rid == st.rids["state1"] and final:
            st.got["state1"] = boot or ""
            st.got["state1_last_seq"] = reply.get("last_seq", 0)
        elif rid == st.rids.get("state2") and final:
            st.got["state2"] = boot or ""
        elif rid == st.rids.get("events") and not final:
            ev = reply.get("event")
            if isinstance(ev, dict) and isinstance(ev.get("seq"), int) \
                    and ev["seq"] > st.replay_known:
                st.replay_known = ev["seq"]
                st.replay.append(ev)
        elif rid == st.rids.get("events"):
            st.got["events"] = True
            st.got["events_ok"] = bool(reply.get("ok"))
            st.replay_truncated = bool(reply.get("truncated"))
        else:
            return
        st.deadline = time.monotonic() + self.timeout_ms / 1000  # progress
        if "state1" in st.got and "events" in st.got and "state2" in st.got:
            self._sync_finish(c)

    # ---- live ------------------------------------------------------------------

    def _read_monitor(self, c):
        """Handle the monitor's reports; True when a new handshake was made."""
        connected = False
        st = c.stream
        while True:
            try:
                msg = parse_monitor_message(c.monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return connected
            what, value = msg["event"], msg["value"]
            if what == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                connected = True
                st.need_sync = True
            elif what == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                st.error = (f"{c.node.evt_ep} refused this client's key (ZAP status {value}): "
                            "is its certificate in the daemon's --curve-clients?")
            elif what in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                          zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                st.error = f"{c.node.evt_ep}: handshake failed (wrong server key?)"
            elif what == zmq.EVENT_DISCONNECTED and not st.error:
                # after a refused handshake, the refusal is the news
                st.error = f"{c.node.evt_ep}: disconnected, reconnecting"

    def _on_published(self, c, topic, body):
        st = c.stream
        try:
            msg = unpack(body)
        except Exception:
            return
        if not isinstance(msg, dict):
            return
        if topic == b"/heartbeat":
            boot = msg.get("boot_id")
            if boot and boot != st.boot_id and boot not in st.retired:
                st.need_sync = True  # a boot no sync has seen yet
            if isinstance(msg.get("last_seq"), int) and msg["last_seq"] > st.known:
                st.need_sync = True  # events missed, even if none follows
            return
        seq = msg.get("seq")
        if not isinstance(seq, int):
            return
        if seq == st.known + 1:
            st.known = seq
            self.ready.append(FanOutEvent(c.node.name, st.boot_id, msg))
        elif seq > st.known:
            st.need_sync = True  # a gap: the replay brings this one too

    def _service(self, c):
        self._read_monitor(c)
        while True:
            try:
                reply = read_reply(c.evt)
            except zmq.Again:
                break
            if reply is not None:
                self._on_sync_reply(c, reply)
        for _ in range(LIVE_BATCH):
            if not self._live(c):
                break
            try:
                frames = c.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            # a handshake reported now may be this message's connection
            if self._read_monitor(c) or len(frames) != 2:
                continue
            self._on_published(c, frames[0], frames[1])


__all__ = ["FanOut", "FanOutEvent", "Result", "ZcdError"]
