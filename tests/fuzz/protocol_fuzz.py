#!/usr/bin/python3
"""Stateful protocol fuzzer for zcd (issue 8, "Prove it").

A seeded random client drives a real daemon with sequences of valid but
adversarial requests: reserved and odd ids and process ids, paths to FIFOs,
symlinks, directories and broken bundles, non-UTF-8 strings, duplicate map
keys, huge lists, requests racing exits and each other, abandoned and slow
event replays, and SIGTERM/SIGKILL restarts of the daemon on the same state
dir.  After every step it checks:

  alive      the daemon process is still running (unless we stopped it)
  version    the daemon answers `version` within 1 s
  canary     no file of the canary tree (outside the state dir) changed
  own-files  the daemon's own files in the state dir keep their type
  internal   no reply carries error code `internal`
  shutdown   requests taken before a SIGTERM are answered before zcd exits
  reply      every final reply is well formed, every request gets one
             (within a bound), no invalid request is answered ok, no stdio
             symlink/directory is accepted
  freezer    an idle container's status in `state` matches its cgroup
             freezer (FROZEN <=> paused)
and every few steps and after every restart:
  seq        `events` replays seq 1..last_seq without gaps (unless
             truncated), every event seen before (live or replayed) is
             replayed unchanged, across restarts
  acked      every container acknowledged by a create reply is in `state`
             or has its init `exit` in the log
  state-log  `state` at last_seq equals what the log says up to last_seq
             (containers, exec processes, paused), and the log's per
             container history is well formed (start, ..., exit of execs,
             exit of init)
and now and then (issue 14: clients that do not read their replies; the
first time ~1.5 s into each runtime's run, then every ~--slow-every s), with
a flooder (a DEALER with RCVHWM=1 sending --flood-n `state`/`version`
requests, some about a container with large labels, and never reading)
alongside the other clients for ~3 s, then/or --stall-clients DEALERs whose
`events` {since_seq: 0} replays stall (they never read) with everything else
paused:
  flood-rss      the daemon's VmRSS (sampled every 10 ms) stays under the
                 baseline taken just before the flood + 64 MiB
  flood-version  `version` answers within 1 s during the flood (a client of
                 its own, every 50 ms, and the probe client after each step)
  drop-log       the daemon's log names the flooder (`client ipc/<hex
                 routing id>: not reading its replies`) once it went past
                 its bounds
  stall-cpu      over 2 s, starting 1 s after the stalled replays were
                 asked for, the daemon uses < 5 % of a core (a window in
                 which an event was published is measured again)
  stall-version  `version` answers within 1 s while the replays are stalled
Some seeds start the daemon with --client-queue 50 (--client-queue N to
choose; 0: the daemon's default).

Usage: /usr/bin/python3 tests/fuzz/protocol_fuzz.py [--seed N] [--seconds S]
         [--runtime runc|crun|both] [--build DIR] [--max-live N] [--keep]
         [--slow-every S] [--slow-first S] [--flood-n N] [--stall-clients N]
         [--client-queue N]
Prints `protocol fuzz: seed N, STEPS steps, R restarts, F failures` last;
exits 1 on any failure (with the step log tail and the daemon log tail).
"""

import argparse
import collections
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import msgpack
import zmq

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from pf_wire import bad_strings, Dealer, Pairs, RawStr, Request, WideInt, encode, rid_key, short, unpack  # noqa: E402
import pf_fs  # noqa: E402
import pf_slow  # noqa: E402
from conftest import make_rootfs, oci_config  # noqa: E402

ERROR_CODES = {"invalid_request", "unknown_op", "unsupported_version", "invalid_argument",
               "too_large", "not_found", "already_exists", "invalid_state", "runtime_error",
               "timeout", "shim_exited", "unavailable", "busy", "internal"}

# Names that are, or were, the daemon's own files and directories.
ODD_IDS = ["events.log", "zcd.sock", "events.sock", "zcd.lock", "events.log.tmp.1234",
           "containers", "procs", "state.json", "init", "exit", "control", "exitStatus",
           "shim.pid", "pid", "starttime", "shim.log", "request.msgpack", "process.json",
           "resources.json", "a..b", "x-", "trash", "broken", "checkpoints", "config.json",
           "rootfs", "zcd-shim", "runc", "crun", "stdin", "stdout", "console", "A", "0",
           "a" * 64, "Z" + "_." * 31 + "9", "x" * 63 + "-", "events.log.1", "zcd.sock.lock"]
INVALID_IDS = [".trash", ".broken", "", ".", "..", "../x", "a/b", "/abs", "-x", "_x",
               "a" * 65, "\u00e9t\u00e9", "a b", "a\nb", "a\x00b", "containers/x",
               "x/../../canary", RawStr(b"\xff\xfe"), RawStr(b"ok\xc0\x80"),
               RawStr(b"a\x00b"), RawStr(b"\xed\xa0\x80"), 5, None, ["a"], b"bin-id",
               True, {"id": "x"}, -1, 3.5]
SIGNALS = [9, 9, 9, 15, 10, 12, 1, 2, 3, 17, 18, 19, 28, 31, 34, 64]
BAD_SIGNALS = [0, 65, 255, 2 ** 32, 2 ** 64 - 1, -9, "KILL", None, 9.0]

CMDS = [
    (6, "sleep", ["sleep", "3600"]),
    (3, "echo-sleep", ["sh", "-c", "echo out-$$; echo err-$$ >&2; exec sleep 3600"]),
    (2, "short", ["sleep", "0.3"]),
    (1, "true", ["true"]),
    (1, "stubborn", ["sh", "-c", "trap '' TERM USR1 USR2 HUP INT; while :; do sleep 1; done"]),
    (1, "reader", ["sh", "-c", "read x; echo got $x; exec sleep 3600"]),
    (1, "nobinary", ["/no/such/binary"]),
    (1, "terminal", ["sleep", "3600"]),
]
EXEC_ARGS = [
    (5, ["sleep", "3600"]),
    (3, ["sh", "-c", "echo exec-out; echo exec-err >&2; sleep 0.2"]),
    (2, ["true"]),
    (1, ["false"]),
    (1, ["/no/such/binary"]),
    (1, ["sh", "-c", "kill -9 1"]),   # takes the container's init down with it
]


class Failure:
    def __init__(self, kind, step, detail, request=None, reply=None):
        self.kind = kind
        self.step = step
        self.detail = detail
        self.request = request
        self.reply = reply

    def signature(self):
        import re
        d = re.sub(r"/tmp/zcdf-[^ '`\"]*", "<tmp>", str(self.detail))
        d = re.sub(r"(.)\1{20,}", r"\1...", d)
        d = re.sub(r"\d+", "N", d)
        return f"{self.kind}: {d[:160]}"

    def __str__(self):
        detail = str(self.detail)
        if len(detail) > 1500:
            detail = detail[:1500] + "..."
        s = f"[{self.kind}] step {self.step}: {detail}"
        if self.request is not None:
            s += f"\n    request: {short(self.request, 600)}"
        if self.reply is not None:
            s += f"\n    reply:   {short(self.reply, 600)}"
        return s


MIB = 1 << 20


def peak_at_s(watch):
    return f"{watch.peak_at:.2f} s into the flood"


def weighted(rng, items):
    total = sum(w for w, *_ in items)
    x = rng.uniform(0, total)
    for item in items:
        x -= item[0]
        if x <= 0:
            return item
    return items[-1]


# --------------------------------------------------------------------------
# the daemon


class Daemon:
    def __init__(self, build, state_dir, runtime, log_path):
        self.build = Path(build)
        self.state_dir = state_dir
        self.runtime = runtime
        self.log_path = log_path
        self.proc = None
        self.cmd_ep = f"ipc://{state_dir}/zcd.sock"
        self.ev_ep = f"ipc://{state_dir}/events.sock"
        self.starts = 0

    def start(self, extra=()):
        log = open(self.log_path, "ab")
        log.write(f"=== fuzz: daemon start {self.starts + 1} {time.ctime()} ===\n".encode())
        log.flush()
        argv = [str(self.build / "zcd"), "--state-dir", self.state_dir, "--runtime",
                self.runtime, "--log-level", "info", "--heartbeat", "200ms"] + list(extra)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.starts += 1

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=40):
        try:
            lines = Path(self.log_path).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


# --------------------------------------------------------------------------
# the fuzzer


class Fuzzer:
    def __init__(self, opts, runtime, seed, seconds, workdir, rootfs):
        self.opts = opts
        self.runtime = runtime
        self.seed = seed
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.token = secrets.token_hex(3)
        self.root = Path(tempfile.mkdtemp(prefix=f"zcdf-{runtime[:2]}-", dir=workdir))
        # optionally a small disk (tmpfs) holding the state dir and a filler
        # file that act_disk grows to fill it and deletes again: a full disk
        # must be an answer (`unavailable`), never a silence or a crash
        self.disk_mb = opts.disk_mb
        if self.disk_mb is None:
            self.disk_mb = 8 if self.rng.random() < 0.25 else 0
        self.mounted = False
        disk = self.root / "d"
        disk.mkdir()
        if self.disk_mb:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.disk_mb}m,mode=0711",
                            "zcdfuzz", str(disk)], check=True)
            self.mounted = True
        self.disk_root = str(disk)
        self.filler = disk / "filler"
        self.state_dir = str(disk / "s")
        os.mkdir(self.state_dir, 0o711)
        self.scratch = self.root / "w"
        self.scratch.mkdir()
        os.mkfifo(self.scratch / "fifo-noreader")
        (self.scratch / "existing.out").write_text("")
        self.bundles = self.root / "b"
        self.bundles.mkdir()
        self.rt_roots = {rt: str(self.root / "rt" / rt) for rt in ("runc", "crun")}
        self.rootfs = rootfs
        self.cg_prefix = f"zcdfuzz-{self.token}"
        good = self._write_bundle("good", ["sleep", "3600"], cgroup=False)
        self.canary = pf_fs.Canary(self.root / "canary", good + "/config.json")
        self.daemon = Daemon(opts.build, self.state_dir, runtime, str(self.root / "zcd.log"))
        self.ctx = zmq.Context()
        self.socks = {}
        self.sub = None
        self.extra_socks = []       # abandoned / slow consumers: (Dealer, close_at_step)
        self.pending = {}           # rid_key -> Request
        self.n = 0
        self.step = 0
        self.epoch = 0
        self.restarts = 0
        self.failures = []
        self.kinds_seen = collections.Counter()
        self.steplog = collections.deque(maxlen=30)
        self.log = {}               # seq -> event: every event seen (replays and live)
        self.log_epoch = {}         # seq -> daemon start (epoch) it was first seen in
        self.replayed_max = 0       # highest seq held from a replay
        self.last_seq_seen = 0
        self.live_unconfirmed = {}  # seq -> event seen live, not yet replayed
        self.acks = []              # successful creates: {"id", "spid", "step", "bound"}
        self.known = {}             # id -> dict (from `state`)
        self.dead = collections.deque(maxlen=20)
        self.made_ids = set()       # every id we asked to create (valid syntax)
        self.bundle_n = 0
        self.ops_sent = collections.Counter()
        self.codes = collections.Counter()
        self.last_state = None
        self.boot_ids = []
        self.retain = None
        self.async_mode = False
        self._printed = set()
        self._bad_seen = set()
        self.given_up = set()
        self.trace = open(opts.trace, "a") if opts.trace else None
        # slow clients (issue 14): their own random stream, so that a seed's
        # sequence of ordinary actions does not depend on them
        self.srng = random.Random(f"slow-{seed}")
        self.client_queue = opts.client_queue
        if self.client_queue is None:
            self.client_queue = 50 if self.srng.random() < 0.3 else 0
        self.flood = None           # the flood in progress (a dict), or None
        self.slow_n = 0             # slow-client episodes so far
        self.slow_rids = 0
        self.slow_next = float("inf")
        self.slow_figures = {"floods": [], "stalls": [], "stall_skipped": 0}
        # ASan's quarantine holds freed memory on purpose: RSS says nothing there
        self.sanitized = "asan" in Path(opts.build).name

    # ------------------------------------------------------------ plumbing

    def fail(self, kind, detail, request=None, reply=None):
        f = Failure(kind, self.step, detail, request, reply)
        self.failures.append(f)
        self.kinds_seen[kind] += 1
        sig = f.signature()
        if sig not in self._printed:
            self._printed.add(sig)
            print(f"FAIL [{self.runtime}] {f}", flush=True)
        if self.trace:
            self.trace.write(f"FAIL {f}\n")
        return f

    def note(self, text):
        line = f"{self.step:5d} {text}"
        self.steplog.append(line)
        if self.trace:
            self.trace.write(f"[{self.runtime} {time.monotonic():.3f}] {line}\n")

    def open_sockets(self):
        for s in self.socks.values():
            s.close()
        ep = self.daemon.cmd_ep
        self.socks = {name: Dealer(self.ctx, ep, name) for name in ("main", "race", "probe")}
        if self.sub is not None:
            self.sub.close(0)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 0)
        self.sub.setsockopt_string(zmq.SUBSCRIBE, "")
        self.sub.connect(self.daemon.ev_ep)

    def close_extra(self, all_=False):
        keep = []
        for d, until in self.extra_socks:
            if all_ or self.step >= until:
                d.close()
            else:
                keep.append((d, until))
        self.extra_socks = keep

    def new_rid(self):
        self.n += 1
        n = self.n
        form = self.rng.random()
        if form < 0.7:
            return n
        if form < 0.8:
            return f"r{n}"
        if form < 0.9:
            return [n, "x", [n]]
        if form < 0.95:
            return {"n": n}
        return WideInt(n, 0xd3) if n < 2 ** 63 else n

    def send(self, body, sock="main", target=None, expect=None, deadline=None, envelope=()):
        """Send one request (body: a dict or Pairs; may hold RawStr/WideInt).
        Returns its Request."""
        if isinstance(body, dict):
            body = dict(body)
            rid = body.get("rid")
            if "rid" not in body:
                rid = self.new_rid()
                body["rid"] = rid
        else:
            rid = next((v for k, v in body.pairs if k == "rid"), None)
        if isinstance(rid, WideInt):
            key_rid = rid.value
        else:
            key_rid = rid
        if isinstance(body, dict):
            op = body.get("op")
            op_name = (op if isinstance(op, str) else repr(op))[:40]
        else:
            op = next((v for k, v in body.pairs if k == "op"), None)
            op_name = f"pairs:{op}"
        if deadline is None:
            deadline = {"create": 60, "exec": 60, "checkpoint_create": 120,
                        "update": 30, "signal": 30, "update_process": 30}.get(op_name, 15)
        data = encode(body)
        req = Request(key_rid, op_name, body, target, self.step, self.epoch, sock,
                      time.monotonic() + deadline, expect)
        req.wire_len = len(data)
        req.envelope = list(envelope)
        self.pending[rid_key(key_rid)] = req
        self.socks[sock].send(list(envelope) + [data])
        self.ops_sent[op_name] += 1
        self.note(f"-> [{sock}] {short(body, 240)}")
        return req

    def pump(self, timeout=0.0):
        """Take every reply and event available, waiting up to timeout for the
        first one."""
        poller = zmq.Poller()
        for s in self.socks.values():
            poller.register(s.sock, zmq.POLLIN)
        poller.register(self.sub, zmq.POLLIN)
        got = False
        end = time.monotonic() + timeout
        while True:
            left = max(0.0, end - time.monotonic()) if not got else 0.0
            events = dict(poller.poll(int(left * 1000)))
            if not events:
                return got
            for name, s in self.socks.items():
                if s.sock in events:
                    for frames in s.recv_all():
                        self.on_reply(name, frames)
                        got = True
            if self.sub in events:
                self.take_live_events()
                got = True

    def take_live_events(self):
        while True:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.fail("events", f"event message with {len(frames)} frames")
                continue
            topic = frames[0].decode(errors="replace")
            try:
                ev = unpack(frames[1])
            except Exception as e:  # noqa: BLE001
                self.fail("events", f"undecodable event on {topic!r}: {e}")
                continue
            if topic == "/heartbeat":
                ls = ev.get("last_seq") if isinstance(ev, dict) else None
                if isinstance(ls, int):
                    self.last_seq_seen = max(self.last_seq_seen, ls)
                continue
            if not isinstance(ev, dict) or not isinstance(ev.get("seq"), int):
                self.fail("events", f"malformed event on {topic!r}: {short(ev)}")
                continue
            want = f"{ev.get('id')}/{ev.get('type')}"
            if topic != want:
                self.fail("events", f"topic {topic!r} for event {short(ev)}")
            self.absorb_event(ev, live=True)

    def absorb_event(self, ev, live):
        seq = ev["seq"]
        self.last_seq_seen = max(self.last_seq_seen, seq)
        old = self.log.get(seq)
        if old is not None:
            if self.event_sig(old) != self.event_sig(ev):
                self.fail("seq", f"seq {seq} seen twice with different content: "
                          f"{short(old)} then {short(ev)}")
        else:
            self.log[seq] = ev
            self.log_epoch[seq] = self.epoch
        if live and seq > self.replayed_max:
            self.live_unconfirmed[seq] = ev
        elif not live:
            self.live_unconfirmed.pop(seq, None)

    @staticmethod
    def event_sig(ev):
        return tuple(ev.get(k) for k in ("seq", "type", "id", "pid", "status", "system_pid"))

    def on_reply(self, sockname, frames):
        try:
            reply = unpack(frames[-1])
        except Exception as e:  # noqa: BLE001
            self.fail("reply", f"undecodable reply on {sockname}: {e} {frames[-1][:80]!r}")
            return
        if not isinstance(reply, dict):
            self.fail("reply", f"reply is not a map: {short(reply)}")
            return
        bad = bad_strings(reply)
        key = rid_key(reply.get("rid"))
        fresh = [b for b in bad if b.split("=", 1)[1] not in self._bad_seen]
        if fresh:
            self._bad_seen.update(b.split("=", 1)[1] for b in fresh)
            req0 = self.pending.get(key)
            self.fail("utf8", f"reply holds str values that are not UTF-8: {fresh[:4]}",
                      req0.body if req0 else None, None)
        req = self.pending.get(key)
        if req is None:
            if key in self.given_up:
                self.note(f"<- [{sockname}] late reply to a request given up: {short(reply, 200)}")
                return
            self.fail("reply", f"reply on {sockname} matches no request in flight",
                      reply=reply)
            return
        if "ok" not in reply:
            if req.op != "events" or "event" not in reply:
                self.fail("reply", "partial reply to a non-streaming request",
                          request=req.body, reply=reply)
            req.partials.append(reply)
            return
        del self.pending[key]
        if frames[:-1] != getattr(req, "envelope", []):
            self.fail("reply", f"envelope {frames[:-1]!r} != sent {req.envelope!r}",
                      request=req.body, reply=reply)
        self.note(f"<- [{sockname}] {req.op} {short(reply, 240)}")
        req.final = reply
        self.check_reply(req, reply)
        self.on_final(req, reply)

    def give_up(self, req):
        """Stop waiting for req (its late reply, if any, is dropped)."""
        key = rid_key(req.rid)
        self.pending.pop(key, None)
        self.given_up.add(key)

    def check_reply(self, req, reply):
        ok = reply.get("ok")
        if ok is not True and ok is not False:
            self.fail("reply", "`ok` is not a bool", req.body, reply)
            return
        if ok is False:
            err = reply.get("error")
            if not (isinstance(err, dict) and isinstance(err.get("code"), str)
                    and isinstance(err.get("message"), str)):
                self.fail("reply", "malformed error", req.body, reply)
                return
            code = err["code"]
            self.codes[f"{req.op}:{code}"] += 1
            if code not in ERROR_CODES:
                self.fail("reply", f"unknown error code {code!r}", req.body, reply)
            if code == "internal":
                self.fail("internal", f"{req.op} answered internal: {err['message']}",
                          req.body, reply)
        else:
            self.codes[f"{req.op}:ok"] += 1
        if req.expect == "error" and ok is True:
            self.fail("reply", f"{req.op} accepted a request it must refuse", req.body, reply)
        elif isinstance(req.expect, tuple) and req.expect[0] == "error-because":
            if ok is True:
                self.fail("reply", f"{req.op} accepted it although {req.expect[1]}",
                          req.body, reply)

    def on_final(self, req, reply):
        ok = reply.get("ok") is True
        body = req.body if isinstance(req.body, dict) else {}
        if ok and isinstance(reply.get("container"), dict) and not isinstance(req.body, dict):
            # a create with duplicate keys that was accepted: track it by the reply
            body = {"id": reply["container"].get("id")}
            req.op = "create"
        if req.op == "create" and ok:
            c = reply.get("container")
            spid = None
            if isinstance(c, dict):
                if c.get("id") != body.get("id"):
                    self.fail("reply", "create answered for another id", req.body, reply)
                for p in c.get("processes") or []:
                    if isinstance(p, dict) and p.get("pid") == "init":
                        spid = p.get("system_pid")
            else:
                self.fail("reply", "create reply without container", req.body, reply)
            self.acks.append({"id": c.get("id") if isinstance(c, dict) else body.get("id"),
                              "spid": spid, "at": time.monotonic(), "step": self.step,
                              "bound": None, "epoch": self.epoch})
        if req.op == "events" and ok:
            self.check_events_reply(req, body, reply)
        if req.op == "state" and ok and isinstance(body.get("id"), str):
            cs = reply.get("containers")
            if not (isinstance(cs, list) and len(cs) == 1 and cs[0].get("id") == body["id"]):
                self.fail("reply", "state of one id answered with other containers",
                          req.body, reply)

    def check_events_reply(self, req, body, reply):
        seqs = []
        for p in req.partials:
            ev = p.get("event")
            if not isinstance(ev, dict) or not isinstance(ev.get("seq"), int):
                self.fail("reply", "events partial without an event", req.body, p)
                return
            seqs.append(ev["seq"])
            if isinstance(body.get("id"), str) and ev.get("id") != body["id"]:
                self.fail("reply", f"events for id {body['id']!r} replayed an event of "
                          f"{ev.get('id')!r}", req.body, p)
                return
            since = body.get("since_seq")
            if isinstance(since, int) and ev["seq"] <= since:
                self.fail("reply", f"events since_seq {since} replayed seq {ev['seq']}",
                          req.body, p)
                return
        if seqs != sorted(set(seqs)):
            self.fail("reply", f"events replay not in seq order: {seqs[:20]}", req.body)
        last = reply.get("last_seq")
        if not isinstance(last, int) or (seqs and seqs[-1] > last):
            self.fail("reply", f"events last_seq {last!r} below the replayed {seqs[-1:]}",
                      req.body, reply)

    def wait(self, reqs, timeout):
        """Pump until every request in reqs has its final reply or timeout."""
        end = time.monotonic() + timeout
        keys = [rid_key(r.rid) for r in reqs]
        while any(k in self.pending for k in keys):
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.05))
        return True

    def maybe_wait(self, reqs, timeout):
        if not self.async_mode:
            self.wait(reqs, timeout)

    def call(self, body, timeout, sock="probe"):
        """Send on the probe socket and wait for the final reply.
        Returns (request, reply); reply is None on timeout."""
        req = self.send(body, sock=sock, deadline=timeout + 60)
        self.wait([req], timeout)
        return req, req.final

    # ------------------------------------------------------------ choices

    def fresh_id(self):
        self.n += 1
        return f"f{self.token}{self.n}"

    def pick_valid_id(self):
        r = self.rng.random()
        if r < 0.35:
            cid = self.rng.choice(ODD_IDS)
        else:
            cid = self.fresh_id()
        return cid

    def pick_target(self):
        """An id to act on: mostly a live one, sometimes a dead, odd or invalid one."""
        r = self.rng.random()
        live = sorted(self.known)
        if live and r < 0.65:
            return self.rng.choice(live)
        if self.dead and r < 0.8:
            return self.rng.choice(list(self.dead))
        if r < 0.93:
            return self.rng.choice(ODD_IDS)
        return self.rng.choice(INVALID_IDS)

    def pick_pid(self, cid):
        info = self.known.get(cid) if isinstance(cid, str) else None
        r = self.rng.random()
        if r < 0.4:
            return "init"
        if info and info.get("execs") and r < 0.75:
            return self.rng.choice(sorted(info["execs"]))
        if r < 0.95:
            return self.rng.choice(ODD_IDS)
        return self.rng.choice(INVALID_IDS)

    def scratch_path(self):
        self.n += 1
        return str(self.scratch / f"out-{self.n}")

    def pick_out_path(self):
        """(path or None, reason it must be refused or None)."""
        c = self.canary.paths
        r = self.rng.random()
        if r < 0.25:
            return None, None
        if r < 0.45:
            return self.scratch_path(), None
        if r < 0.52:
            return str(self.scratch / "existing.out"), None
        if r < 0.56:
            return "/dev/null", None
        if r < 0.60:
            return str(self.scratch / "fifo-noreader"), None
        choices = [
            (c["link_file"], "stdout is a symlink (to a canary file)"),
            (c["link_abs_file"], "stdout is a symlink (to a canary file)"),
            (c["dangling"], "stdout is a dangling symlink"),
            (c["dangling_new"], "stdout is a dangling symlink"),
            (c["link_loop"], "stdout is a symlink loop"),
            (c["dir"], "stdout is a directory"),
            (c["link_dir"], "stdout is a symlink to a directory"),
            (c["dir"] + "/sub", "stdout is a directory"),
            (c["link_zero"], "stdout is a symlink to /dev/zero"),
            (c["file"] + "/x", None),
            ("relative/out", "stdout is not absolute"),
            ("", "stdout is empty"),
            (RawStr(str(self.scratch).encode() + b"/\xff\xfe"), "stdout is not UTF-8"),
            ("/" + "d" * 5000, None),
            (str(self.scratch) + "/" + "n" * 300, None),
            (self.state_dir + "/events.log", None),
            (self.state_dir + "/zcd.lock", None),
            (self.state_dir + "/zcd.sock", None),
            (self.state_dir + "/containers", None),
        ]
        return self.rng.choice(choices)

    def pick_in_path(self):
        c = self.canary.paths
        choices = [
            (None, None), (None, None), ("/dev/null", None),
            (c["file"], None), (c["ro_file"], None), (c["fifo"], None), (c["empty"], None),
            (str(self.scratch / "fifo-noreader"), None),
            (c["dir"], "stdin is a directory"),
            (c["link_file"], "stdin is a symlink"),
            (c["link_fifo"], "stdin is a symlink"),
            (c["link_zero"], "stdin is a symlink"),
            (c["dangling"], "stdin is a dangling symlink"),
            (c["bundle_sparse"] + "/config.json", None),
        ]
        return self.rng.choice(choices)

    def pick_labels(self):
        r = self.rng.random()
        if r < 0.5:
            return None
        if r < 0.7:
            return ["app=fuzz", "odd=" + self.rng.choice(ODD_IDS), "", "\u2603 snow", "a" * 300]
        if r < 0.85:
            n = self.rng.choice([1000, 10000, 30000])
            return [f"l{i}={'x' * self.rng.randint(0, 8)}" for i in range(n)]
        if r < 0.95:
            return ["big=" + "y" * self.rng.choice([100000, 900000])]
        return [RawStr(b"bad\xff"), "ok"]

    def _write_bundle(self, name, args, cgroup, terminal=False, edit=None):
        b = self.bundles / name
        b.mkdir()
        cfg = oci_config(self.rootfs, args=args, terminal=terminal)
        if cgroup:
            cfg["linux"]["cgroupsPath"] = f"/{self.cg_prefix}/{name}"
        if edit:
            edit(cfg)
        (b / "config.json").write_text(json.dumps(cfg))
        return str(b)

    def good_bundle(self, odd_id):
        self.bundle_n += 1
        _, kind, args = weighted(self.rng, CMDS)
        # odd ids share names with other runs' containers: a private runtime
        # root and a cgroup path of our own keep them apart
        cgroup = odd_id or self.rng.random() < 0.5
        b = self._write_bundle(f"b{self.bundle_n}", args, cgroup, terminal=(kind == "terminal"))
        return b, kind

    # ------------------------------------------------------------ actions

    def body_create(self, cid=None, good=True):
        odd = False
        if cid is None:
            cid = self.pick_valid_id()
        if isinstance(cid, str) and cid in ODD_IDS:
            odd = True
        body = {"op": "create", "id": cid}
        why = None
        if good:
            body["bundle"], kind = self.good_bundle(odd)
        else:
            kind = "broken"
            c = self.canary.paths
            bundle, why = self.rng.choice([
                (c["bundle_fifo"], "config.json is a FIFO"),
                (c["bundle_dir"], "config.json is a directory"),
                (c["bundle_zero"], "config.json is a symlink to /dev/zero"),
                (c["bundle_dangling"], "config.json is a dangling symlink"),
                (c["bundle_sparse"], "config.json is 1 GiB"),
                (c["bundle_badjson"], "config.json is not JSON"),
                (c["bundle_nonutf8"], "config.json is not UTF-8"),
                (c["bundle_array"], "config.json is not an object"),
                (c["bundle_empty"], "config.json is empty"),
                (c["bundle_deep"], "config.json is not an OCI config"),
                (c["bundle_badseccomp"], "the seccomp profile names an unknown syscall"),
                (c["bundle_noconfig"], "the bundle has no config.json"),
                (c["bundle_noroot"], None),
                (c["bundle_link"], "config.json is a symlink (files opened for a client "
                                   "are opened without following symlinks)"),
                (c["file"], "the bundle is a file"),
                (c["fifo"], "the bundle is a FIFO"),
                (c["dangling"], "the bundle is a dangling symlink"),
                (c["bundle_parent"], "the bundle has no config.json"),
                ("relative/bundle", "the bundle is not absolute"),
                ("/", "/ has no config.json"),
                ("/proc/self", None),
                ("/dev/zero", "the bundle is a device"),
                (RawStr(b"/tmp/\xff"), "the bundle is not UTF-8"),
                ("/" + "p" * 5000, "the bundle path is too long"),
                (self.state_dir, "the state dir is no bundle"),
            ])
            body["bundle"] = bundle
        if odd or self.rng.random() < 0.1:
            root = self.rt_roots[self.runtime]
            body["runtime_args"] = ["--root", root]
        if kind in ("echo-sleep", "reader") or self.rng.random() < 0.5:
            out, w1 = self.pick_out_path()
            err, w2 = self.pick_out_path()
            inp, w3 = self.pick_in_path()
            for k, v in (("stdout", out), ("stderr", err), ("stdin", inp)):
                if v is not None:
                    body[k] = v
            why = why or w1 or w2 or w3
        labels = self.pick_labels()
        if labels is not None:
            body["labels"] = labels
        r = self.rng.random()
        if r < 0.04:
            body["runtime"] = self.rng.choice(["/bin/false", "/bin/true", "no-such-runtime",
                                               self.canary.paths["exec_file"],
                                               self.canary.paths["fifo"], "../runc", ""])
            body.setdefault("runtime_args", ["--root", self.rt_roots["runc"]])
        elif r < 0.08:
            body.setdefault("runtime_args", []).extend(
                self.rng.choice([["--bogus-flag"], ["--debug"] * 2000, [""], ["--log-format", "json"]]))
        elif r < 0.1:
            body["log"] = {"path": self.scratch_path(), "max_bytes": 100, "max_files": 2}
        elif r < 0.12:
            body["checkpoint"] = self.rng.choice(["cp1", "init", "events.log", ".."])
            body["checkpoint_dir"] = self.canary.paths["ckdir"]
            why = why or "no checkpoint with zcd's marker exists there"
        if isinstance(cid, str) and self.valid_id(cid):
            self.made_ids.add(cid)
        expect = None
        if not self.valid_id(cid):
            expect = ("error-because", f"the id {cid!r} is invalid")
        elif why:
            expect = ("error-because", why)
        return body, expect

    @staticmethod
    def valid_id(cid):
        if not isinstance(cid, str) or not 1 <= len(cid) <= 64:
            return False
        if not cid[0].isascii() or not cid[0].isalnum():
            return False
        return all(ch.isascii() and (ch.isalnum() or ch in "_.-") for ch in cid)

    def live_count(self):
        return len(self.known) + sum(1 for r in self.pending.values() if r.op == "create")

    def act_create(self):
        if self.live_count() >= self.opts.max_live:
            return self.act_kill()
        body, expect = self.body_create()
        req = self.send(body, target=body["id"], expect=expect)
        if self.rng.random() < 0.6:
            self.maybe_wait([req], 45)

    def act_create_bad(self):
        cid = self.rng.choice([self.pick_valid_id()] * 3 + INVALID_IDS)
        good = self.rng.random() < 0.3
        if good and self.live_count() >= self.opts.max_live:
            good = False
        body, expect = self.body_create(cid, good=good)
        if good and expect is None and self.rng.random() < 0.5:
            # a good bundle with an invalid key elsewhere
            k, v, why = self.rng.choice([
                ("labels", "not-a-list", "labels is not a list"),
                ("labels", [1, 2], "labels are not strings"),
                ("stdout", 42, "stdout is not a str"),
                ("runtime_args", [RawStr(b"\xff")], "runtime_args is not UTF-8"),
                ("no_pivot_root", "yes", "no_pivot_root is not a bool"),
                ("v", 2, "v is 2"),
                ("bundle", RawStr(body["bundle"].encode() + b"\x00"), "bundle has a NUL"),
            ])
            body[k] = v
            expect = ("error-because", why)
        req = self.send(body, target=cid if isinstance(cid, str) else None, expect=expect)
        self.maybe_wait([req], 30)

    def act_create_race(self):
        """The same new id created twice at once on two sockets, or a create
        and an immediate op on its id."""
        if self.live_count() >= self.opts.max_live - 1:
            return self.act_kill()
        cid = self.pick_valid_id()
        body, expect = self.body_create(cid)
        r1 = self.send(body, target=cid, expect=expect)
        if self.rng.random() < 0.5:
            b2, e2 = self.body_create(cid)
            r2 = self.send(b2, sock="race", target=cid, expect=e2)
            self.maybe_wait([r1, r2], 45)
            return
        follow = self.rng.choice([
            {"op": "signal", "id": cid, "signal": 9},
            {"op": "update", "id": cid, "status": "paused"},
            {"op": "exec", "id": cid, "pid": "e1", "args": ["true"]},
            {"op": "state", "id": cid},
            {"op": "stats", "id": cid},
            {"op": "signal", "id": cid, "signal": 9, "all": True},
        ])
        r2 = self.send(follow, sock="race", target=cid)
        self.maybe_wait([r1, r2], 45)

    def body_exec(self, cid, pid=None):
        pid = pid if pid is not None else (self.fresh_pid() if self.rng.random() < 0.5
                                          else self.rng.choice(ODD_IDS + ["init"] + INVALID_IDS[:6]))
        _, args = weighted(self.rng, EXEC_ARGS)
        body = {"op": "exec", "id": cid, "pid": pid, "args": list(args)}
        why = None
        if pid == "init":
            why = "an exec process cannot be called init"
        elif not self.valid_id(pid):
            why = f"the process id {pid!r} is invalid"
        r = self.rng.random()
        if r < 0.5:
            body["env"] = ["PATH=/bin"]
        elif r < 0.55:
            body["env"] = [f"V{i}=x" for i in range(10000)]
        elif r < 0.58:
            body["args"] = ["echo"] + [f"a{i}" for i in range(10000)]
        elif r < 0.62:
            body["args"] = []
            why = why or "args is empty"
        elif r < 0.65:
            body["args"] = [RawStr(b"sh\xff")]
            why = why or "args is not UTF-8"
        if self.rng.random() < 0.4:
            out, w1 = self.pick_out_path()
            inp, w2 = self.pick_in_path()
            if out is not None:
                body["stdout"] = out
                body["stderr"] = out
            if inp is not None:
                body["stdin"] = inp
            why = why or w1 or w2
        r = self.rng.random()
        if r < 0.05:
            body["terminal"] = True
        elif r < 0.1:
            body["cwd"] = self.rng.choice(["/tmp", "/nonexistent", "relative", "/proc/1/root"])
        elif r < 0.13:
            body["user"] = {"uid": 65534, "gid": 65534, "additional_gids": [1, 2, 2 ** 32 - 1]}
        elif r < 0.15:
            body["user"] = {"uid": 2 ** 32}
            why = why or "uid is out of range"
        elif r < 0.18:
            body["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]
        elif r < 0.2:
            body["capabilities"] = ["CAP_SYS_ADMIN", "CAP_BOGUS"]
        return body, (("error-because", why) if why else None)

    def fresh_pid(self):
        self.n += 1
        return f"e{self.n}"

    def act_exec(self):
        cid = self.pick_target()
        body, expect = self.body_exec(cid)
        req = self.send(body, target=cid if isinstance(cid, str) else None, expect=expect)
        if self.rng.random() < 0.5:
            self.maybe_wait([req], 40)

    def act_exec_race(self):
        live = sorted(self.known)
        if not live:
            return self.act_create()
        cid = self.rng.choice(live)
        pid = self.fresh_pid() if self.rng.random() < 0.7 else self.rng.choice(ODD_IDS)
        b1, e1 = self.body_exec(cid, pid)
        b2, e2 = self.body_exec(cid, pid)
        r1 = self.send(b1, target=cid, expect=e1)
        r2 = self.send(b2, sock="race", target=cid, expect=e2)
        extra = []
        if self.rng.random() < 0.3:
            extra.append(self.send({"op": "signal", "id": cid, "signal": 9}, target=cid))
        self.maybe_wait([r1, r2] + extra, 40)

    def act_signal(self):
        cid = self.pick_target()
        body = {"op": "signal", "id": cid}
        expect = None
        r = self.rng.random()
        if r < 0.9:
            body["signal"] = self.rng.choice(SIGNALS)
        else:
            body["signal"] = self.rng.choice(BAD_SIGNALS)
            expect = ("error-because", f"signal {body['signal']!r} is out of range")
        if self.rng.random() < 0.5:
            body["pid"] = self.pick_pid(cid)
            if not (body["pid"] == "init" or self.valid_id(body["pid"])):
                expect = ("error-because", f"pid {body['pid']!r} is invalid")
        if self.rng.random() < 0.25:
            body["all"] = self.rng.choice([True, True, False, "yes"])
            if body["all"] == "yes":
                expect = ("error-because", "all is not a bool")
        if not self.valid_id(cid):
            expect = ("error-because", f"the id {cid!r} is invalid")
        req = self.send(body, target=cid if isinstance(cid, str) else None, expect=expect)
        if self.rng.random() < 0.5:
            self.maybe_wait([req], 20)

    def act_kill(self):
        live = sorted(self.known)
        if not live:
            return
        cid = self.rng.choice(live)
        req = self.send({"op": "signal", "id": cid, "signal": 9,
                         "all": self.rng.random() < 0.3}, target=cid)
        follow = []
        if self.rng.random() < 0.5:
            # requests racing the exit
            for body in self.rng.sample([
                    {"op": "update", "id": cid, "status": "paused"},
                    {"op": "update", "id": cid, "status": "running"},
                    {"op": "exec", "id": cid, "pid": self.fresh_pid(), "args": ["true"]},
                    {"op": "signal", "id": cid, "signal": 15},
                    {"op": "update_process", "id": cid, "pid": "init", "close_stdin": True},
                    {"op": "update", "id": cid, "resources": {"cpu_shares": 512}},
                    {"op": "stats", "id": cid},
                    {"op": "checkpoint_list", "id": cid}], 3):
                follow.append(self.send(body, sock=self.rng.choice(["main", "race"]),
                                        target=cid))
            if self.rng.random() < 0.3 and self.live_count() < self.opts.max_live:
                b, e = self.body_create(cid)
                follow.append(self.send(b, sock="race", target=cid, expect=e))
        self.maybe_wait([req] + follow, 30)

    def act_update(self):
        cid = self.pick_target()
        body = {"op": "update", "id": cid}
        expect = None
        r = self.rng.random()
        if r < 0.7:
            body["status"] = self.rng.choice(["paused", "running", "paused", "running", "stopped",
                                              "PAUSED", ""])
            if body["status"] not in ("paused", "running"):
                expect = ("error-because", f"status {body['status']!r} is not paused/running")
        else:
            res = {}
            for k, vals in (("cpu_shares", [2, 512, 1024, 2 ** 64 - 1]),
                            ("memory_limit", [64 << 20, 1, 2 ** 63]),
                            ("pids_limit", [100, 1, 0]),
                            ("cpuset_cpus", ["0", "0-99999", "abc", ""]),
                            ("blkio_weight", [10, 1000, 5000]),
                            ("cpu_quota", [10000, 2 ** 63]),
                            ("cpu_period", [100000, 1])):
                if self.rng.random() < 0.35:
                    res[k] = self.rng.choice(vals)
            if self.rng.random() < 0.05:
                res["memory_limit"] = -5
                expect = ("error-because", "memory_limit is negative")
            body["resources"] = res
            if res.get("memory_limit") == 1 or res.get("pids_limit") == 1:
                pass
        if not self.valid_id(cid):
            expect = ("error-because", f"the id {cid!r} is invalid")
        req = self.send(body, target=cid if isinstance(cid, str) else None, expect=expect)
        if self.rng.random() < 0.6:
            self.maybe_wait([req], 30)

    def act_update_process(self):
        cid = self.pick_target()
        body = {"op": "update_process", "id": cid, "pid": self.pick_pid(cid)}
        r = self.rng.random()
        if r < 0.4:
            body["close_stdin"] = True
        elif r < 0.8:
            body["width"] = self.rng.choice([80, 0, 65535, 2 ** 32])
            body["height"] = self.rng.choice([24, 0, 65535])
        else:
            body["width"] = 80
        req = self.send(body, target=cid if isinstance(cid, str) else None)
        self.maybe_wait([req], 20)

    def act_query(self):
        r = self.rng.random()
        cid = self.pick_target()
        if r < 0.3:
            body = {"op": "state"}
            if self.rng.random() < 0.6:
                body["id"] = cid
        elif r < 0.6:
            body = {"op": "stats"}
            x = self.rng.random()
            if x < 0.4:
                body["id"] = cid
            elif x < 0.8:
                ids = sorted(self.known) + [self.rng.choice(ODD_IDS)]
                if self.rng.random() < 0.2:
                    ids = ids + [f"n{i}" for i in range(10000)]
                body["ids"] = ids
        elif r < 0.75:
            body = {"op": "metrics"}
            if self.rng.random() < 0.5:
                body["format"] = self.rng.choice(["prometheus", "json", "", RawStr(b"\xff")])
        else:
            body = {"op": "events"}
            x = self.rng.random()
            if x < 0.4:
                body["since_seq"] = self.rng.choice(
                    [0, max(0, self.last_seq_seen - 5), self.last_seq_seen,
                     self.last_seq_seen + 100, 2 ** 64 - 1])
            elif x < 0.6:
                body["since"] = self.rng.choice([0, time.time_ns() - 10 ** 9, -1, 2 ** 63 - 1])
            if self.rng.random() < 0.4:
                body["id"] = cid
        req = self.send(body, target=None)
        self.maybe_wait([req], 10)

    def act_events_abandoned(self):
        """A DEALER that asks for a replay and goes away without reading
        (or after one partial reply), or stays and never reads."""
        mode = self.rng.choice(["close", "close", "slow"])
        d = Dealer(self.ctx, self.daemon.cmd_ep, "extra", rcvhwm=1 if mode == "slow" else None)
        body = {"op": "events", "rid": "abandoned", "since_seq": 0}
        for _ in range(self.rng.choice([1, 3, 20])):
            d.send([encode(body)])
        if mode == "slow":
            for _ in range(50):
                d.send([encode({"op": "state", "rid": "slow"})])
            self.extra_socks.append((d, self.step + self.rng.randint(5, 60)))
            self.note("slow consumer opened")
        else:
            if self.rng.random() < 0.5:
                d.sock.poll(50)
            d.close()
            self.note("abandoned events requester closed")

    def act_checkpoint(self):
        c = self.canary.paths
        r = self.rng.random()
        cid = self.pick_target()
        name = self.rng.choice(["cp1", "cp2", "init", "events.log", "linked", "plainfile",
                                "..", ".", "a/b", "", RawStr(b"\xff")])
        cdir = self.rng.choice([c["ckdir"], c["link_ckdir"], c["dir"], c["file"], c["fifo"],
                                c["dangling"], "relative", self.state_dir,
                                self.state_dir + "/containers"])
        if r < 0.4:
            body = {"op": "checkpoint_list", "checkpoint_dir": cdir}
            if self.rng.random() < 0.3:
                body["id"] = cid
        elif r < 0.9:
            body = {"op": "checkpoint_delete", "checkpoint_dir": cdir, "name": name}
            if self.rng.random() < 0.3:
                body["id"] = cid
        else:
            live = [k for k, v in self.known.items()
                    if v.get("bundle", "").startswith(str(self.bundles))]
            if not live:
                return
            cid = self.rng.choice(live)
            body = {"op": "checkpoint_create", "id": cid,
                    "checkpoint": {"name": self.rng.choice(["ck1", "init", "events.log"]),
                                   "exit": self.rng.random() < 0.3},
                    "checkpoint_dir": str(self.scratch / "ck")}
        req = self.send(body, target=body.get("id") if isinstance(body.get("id"), str) else None)
        self.maybe_wait([req], 30)

    def act_malformed(self):
        """Bodies that must be refused; each gets exactly one reply."""
        n = self.n = self.n + 1
        cid = self.pick_target()
        choices = [
            ("nonutf8-id", {"op": "state", "id": RawStr(b"\xc3\x28")}),
            ("nonutf8-op", {"op": RawStr(b"vers\xffion")}),
            ("nonutf8-key", Pairs([("op", "version"), ("rid", n), (RawStr(b"\xfe\xff"), 1)])),
            ("nonutf8-label", {"op": "create", "id": self.fresh_id(),
                               "bundle": str(self.bundles / "good"),
                               "labels": ["ok", RawStr(b"\xed\xa0\x80surrogate")]}),
            ("nonutf8-pid", {"op": "signal", "id": cid, "pid": RawStr(b"e\x80"), "signal": 9}),
            ("nul-id", {"op": "signal", "id": RawStr(b"init\x00../../x"), "signal": 9}),
            ("dup-id", Pairs([("op", "signal"), ("rid", n), ("id", "ok-id"),
                              ("id", "../../../tmp"), ("signal", 9)])),
            ("dup-op", Pairs([("op", "version"), ("rid", n), ("op", "create"),
                              ("id", "x"), ("bundle", "/")])),
            ("dup-bundle", Pairs([("op", "create"), ("rid", n), ("id", self.fresh_id()),
                                  ("bundle", str(self.bundles / "good")),
                                  ("bundle", self.canary.paths["bundle_fifo"])])),
            ("wide-int", {"op": "signal", "id": cid, "signal": WideInt(9, 0xd3)}),
            ("neg-uint", {"op": "events", "since_seq": -1}),
            ("float", {"op": "events", "since_seq": 1.5}),
            ("v2", {"op": "version", "v": 2}),
            ("v-huge", {"op": "version", "v": 2 ** 64 - 1}),
            ("unknown-op", {"op": self.rng.choice(["", "Version", "delete", "create\x00",
                                                  "a" * 10000])}),
            ("op-int", {"op": 5}),
            ("no-op", {"id": "x"}),
            ("id-map", {"op": "state", "id": {"a": 1}}),
            ("ids-mixed", {"op": "stats", "ids": ["a", 5, None]}),
            ("labels-map", {"op": "create", "id": self.fresh_id(),
                            "bundle": str(self.bundles / "good"), "labels": {"a": "b"}}),
            ("many-keys", dict([("op", "version")] + [(f"k{i}", i) for i in range(20000)])),
            ("huge-ids", {"op": "stats", "ids": ["x" * 60] * 16000}),
            ("resources-wrong", {"op": "update", "id": cid, "resources": [1, 2]}),
            ("user-wrong", {"op": "exec", "id": cid, "pid": "e", "args": ["true"],
                            "user": {"uid": -1}}),
            ("rlimit-wrong", {"op": "exec", "id": cid, "pid": "e", "args": ["true"],
                              "rlimits": [{"type": "RLIMIT_NOFILE"}]}),
        ]
        # The `log` key (bounded container logs) is issue 12's: until the
        # daemon knows it, it is an unknown key and ignored.
        name, body = self.rng.choice(choices)
        expect = "error"
        # an unknown key is ignored, whatever its name; duplicates: not specified
        if name in ("wide-int", "deep", "many-keys", "huge-ids", "dup-id", "dup-op",
                    "dup-bundle", "nonutf8-key"):
            expect = None
        env = ()
        if self.rng.random() < 0.2:
            env = self.rng.choice([(b"",), (b"hop", b"\xff\x00"), (b"x" * 1000, b"")])
        if isinstance(body, dict) and "rid" not in body:
            body["rid"] = n
        req = self.send(body, target=None, expect=expect, envelope=env)
        if not self.wait([req], 10):
            self.fail("reply", f"no reply within 10 s to malformed request {name}", body)
            self.give_up(req)

    def nested(self, depth):
        x = "leaf"
        for _ in range(depth):
            x = [x]
        return x

    def act_raw(self):
        """Bodies that are no msgpack map at all, oversize bodies, and rid-less
        requests: one reply each (no rid), on a socket of their own."""
        limit = 1 << 20
        choices = [
            ("garbage", b"\xc1\xc1garbage"),
            ("truncated", encode({"op": "version", "rid": 1})[:-3]),
            ("array", encode(["op", "version"])),
            ("int", encode(5)),
            ("empty", b""),
            ("str-body", encode("version")),
            ("map-int-keys", encode({1: "version"})),
            ("norid", encode({"op": "version"})),
            ("norid-bad", encode({"op": "signal", "id": "..", "signal": 9})),
            ("too-large", encode({"op": "version", "pad": "z" * (limit + 1000)})),
            ("too-large-labels", encode({"op": "create", "id": self.fresh_id(),
                                         "bundle": str(self.bundles / "good"),
                                         "labels": ["w" * 1000] * 1100})),
            ("trailing", encode({"op": "version"}) + b"\x00\x01"),
            ("deep", encode({"op": "version", "x": self.nested(200)})),
            ("deeper", encode({"op": "version"})[:-0 or None].replace(b"\x81", b"\x82", 1)
             + encode("x") + b"\x91" * 100000 + encode("leaf")),
            ("nonutf8-rid-only", encode({"op": "version", "rid": RawStr(b"\xff")})),
        ]
        name, data = self.rng.choice(choices)
        d = Dealer(self.ctx, self.daemon.cmd_ep, "raw")
        try:
            d.send([data])
            self.note(f"-> [raw] {name} ({len(data)} bytes)")
            if not d.sock.poll(10000):
                self.fail("reply", f"no reply within 10 s to raw body {name}")
                return
            frames = d.sock.recv_multipart()
            try:
                reply = unpack(frames[-1])
            except Exception as e:  # noqa: BLE001
                self.fail("reply", f"undecodable reply to {name}: {e}")
                return
            self.note(f"<- [raw] {name} {short(reply, 200)}")
            fake = Request(None, f"raw:{name}", name, None, self.step, self.epoch, "raw", 0,
                           None if name in ("norid", "deep", "deeper", "nonutf8-rid-only")
                           else "error")
            self.check_reply(fake, reply)
            if d.sock.poll(100):
                self.fail("reply", f"two replies to raw body {name}")
        finally:
            d.close()

    def act_disk(self):
        """Fill the state dir's disk (tmpfs mode), or free it again."""
        if not self.disk_mb:
            return self.act_query()
        if self.filler.exists():
            self.filler.unlink()
            self.note("disk freed")
            return
        try:
            with open(self.filler, "wb") as f:
                chunk = b"\0" * (1 << 16)
                while True:
                    f.write(chunk)
                    f.flush()
        except OSError:
            pass
        # leave a few KiB, sometimes: a disk almost full fails later writes
        if self.rng.random() < 0.5:
            with open(self.filler, "r+b") as f:
                f.truncate(max(0, os.path.getsize(self.filler) - self.rng.choice([4096, 65536])))
        self.note(f"disk filled ({os.path.getsize(self.filler)} bytes of filler)")

    def act_restart(self):
        """Stop the daemon (SIGTERM or SIGKILL), sometimes with requests in
        flight, start it again on the same state dir, check everything."""
        how = self.rng.choice(["TERM", "TERM", "KILL", "KILL", "KILL-busy", "TERM-busy"])
        if how.endswith("busy"):
            self.async_mode = True
            for _ in range(self.rng.randint(1, 4)):
                self.rng.choice([self.act_create, self.act_kill, self.act_update,
                                 self.act_exec])()
            self.async_mode = False
            self.pump(self.rng.choice([0, 0.005, 0.05]))
        sig = signal.SIGKILL if how.startswith("KILL") else signal.SIGTERM
        self.note(f"== restart by SIG{how}")
        proc = self.daemon.proc
        t0 = time.monotonic()
        proc.send_signal(sig)
        while proc.poll() is None and time.monotonic() - t0 < 20:
            self.pump(0.05)
        if proc.poll() is None:
            self.fail("restart", f"zcd did not exit within 20 s of SIG{how}\n"
                      + self.daemon.log_tail(20))
            proc.kill()
            proc.wait()
        elif sig == signal.SIGTERM:
            if proc.returncode != 0:
                self.fail("restart", f"zcd exited {proc.returncode} on SIGTERM\n"
                          + self.daemon.log_tail(20))
            for f in ("zcd.sock", "events.sock"):
                if os.path.exists(os.path.join(self.state_dir, f)):
                    self.fail("restart", f"{f} left after SIGTERM")
        self.pump(0.05)
        if sig == signal.SIGTERM:
            # what the daemon had taken well before SIGTERM gets its final
            # reply (the result, or `unavailable`) before the daemon exits
            for req in self.pending.values():
                if req.sent < t0 - 0.05 and req.sock in ("main", "race"):
                    self.fail("shutdown", f"{req.op} sent {t0 - req.sent:.2f} s before SIGTERM "
                              f"got no final reply before zcd exited", req.body)
        self.after_daemon_gone()
        self.start_daemon()
        self.restarts += 1
        self.full_check(after_restart=True)

    def after_daemon_gone(self):
        # requests in flight die with the daemon
        lost = [r for r in self.pending.values()]
        if lost:
            self.note(f"{len(lost)} requests in flight lost at the restart: "
                      + ", ".join(sorted({r.op for r in lost})))
        self.pending.clear()
        self.close_extra(all_=True)
        self.abort_flood("the daemon is gone")

    def start_daemon(self):
        extra = []
        if self.retain:
            extra += ["--events-retain", str(self.retain)]
        if self.client_queue:
            extra += ["--client-queue", str(self.client_queue)]
        self.daemon.start(extra)
        self.epoch += 1
        self.open_sockets()
        t0 = time.monotonic()
        attempts = 1
        while True:
            if not self.daemon.alive():
                self.fail("alive", f"zcd exited {self.daemon.proc.returncode} at start\n"
                          + self.daemon.log_tail(30))
                if attempts >= 3:
                    raise SystemExit(2)
                attempts += 1
                self.daemon.start(extra)
                self.open_sockets()
                t0 = time.monotonic()
            req, reply = self.call({"op": "version"}, 0.25)
            if reply is not None:
                break
            self.give_up(req)
            if time.monotonic() - t0 > 30:
                self.fail("version", "zcd did not answer version within 30 s of its start\n"
                          + self.daemon.log_tail(30))
                raise SystemExit(2)
        self.note(f"daemon up after {time.monotonic() - t0:.2f}s")

    # ------------------------------------------------------------ invariants

    def check_alive(self):
        if self.daemon.alive():
            return True
        self.fail("alive", f"zcd died (exit {self.daemon.proc.returncode})\n"
                  + self.daemon.log_tail(30))
        self.after_daemon_gone()
        self.start_daemon()
        self.restarts += 1
        self.full_check(after_restart=True)
        return False

    def check_version(self):
        t0 = time.monotonic()
        req, reply = self.call({"op": "version"}, 1.0)
        if reply is None:
            dt = time.monotonic() - t0
            # how long does it take, if it comes at all?
            ok = self.wait([req], 29)
            kind, why = "version", ""
            if self.flood is not None:
                kind = "flood-version"
                why = (f" (a client that does not read its replies has been flooding "
                       f"for {t0 - self.flood['t0']:.1f} s)")
            self.fail(kind, f"no version reply within 1 s (came after "
                      f"{time.monotonic() - t0:.1f} s){why}" if ok else
                      f"no version reply within 1 s nor 30 s ({dt:.1f}){why}")
            if not ok:
                self.give_up(req)
                return False
        elif reply.get("ok") is not True or reply.get("protocol") != 1:
            self.fail("version", "bad version reply", reply=reply)
        return True

    def check_canary(self):
        hashes = self.step % 10 == 0
        diffs = self.canary.diff(hashes=hashes)
        if diffs:
            self.fail("canary", "files outside the state dir changed:\n      "
                      + "\n      ".join(diffs[:20]))
            # accept the new tree so each change is reported once
            self.canary.base = self.canary.snapshot(hashes=True)
        probs = pf_fs.own_files_problems(self.state_dir)
        if probs:
            key = tuple(probs)
            if key != getattr(self, "_own_last", None):
                self.fail("own-files", "; ".join(probs))
            self._own_last = key

    def check_deadlines(self):
        now = time.monotonic()
        for key, req in list(self.pending.items()):
            if now > req.deadline:
                self.fail("reply", f"no final reply to {req.op} after "
                          f"{now - req.sent:.0f} s", req.body)
                self.give_up(req)

    def busy_ids(self):
        ids = set()
        for r in self.pending.values():
            if r.target is not None:
                ids.add(r.target)
            if r.op in ("signal",) and isinstance(r.body, dict) and r.body.get("all"):
                ids.add(r.target)
        return ids

    def take_state(self, timeout=5.0):
        sent_at = time.monotonic()
        req, reply = self.call({"op": "state"}, timeout)
        self.state_sent_at = sent_at
        if reply is None:
            self.fail("state", f"no state reply within {timeout} s")
            ok = self.wait([req], 25)
            if not ok:
                self.give_up(req)
                return None
            return None
        if reply.get("ok") is not True:
            self.fail("state", "state failed", reply=reply)
            return None
        cs = reply.get("containers")
        if not isinstance(cs, list):
            self.fail("state", "no containers list", reply=reply)
            return None
        ids = [c.get("id") for c in cs]
        if ids != sorted(ids):
            self.fail("state", f"containers not sorted by id: {ids}")
        self.last_seq_seen = max(self.last_seq_seen, reply.get("last_seq") or 0)
        known = {}
        for c in cs:
            execs = set()
            spid = None
            for p in c.get("processes") or []:
                if p.get("pid") == "init":
                    spid = p.get("system_pid")
                else:
                    execs.add(p.get("pid"))
            known[c.get("id")] = {"status": c.get("status"), "spid": spid, "execs": execs,
                                  "bundle": c.get("bundle") or "", "pids": c.get("pids")}
        for cid in self.known:
            if cid not in known:
                self.dead.append(cid)
        self.known = known
        self.last_state = reply
        return reply

    def check_freezer(self, reply):
        busy = self.busy_ids()
        suspects = []
        frs = {}
        for cid, info in self.known.items():
            if info["spid"]:
                fr = pf_fs.freezer_of(info["spid"])
                if fr is not None:
                    frs[cid] = fr
        shared = collections.Counter(fr[0] for fr in frs.values())
        for cid, info in self.known.items():
            if cid in busy or info["status"] not in ("paused", "running"):
                continue
            fr = frs.get(cid)
            if fr is None or shared[fr[0]] > 1:
                continue    # gone, or a cgroup two containers share
            frozen = fr[1] == "FROZEN"
            if frozen != (info["status"] == "paused"):
                suspects.append((cid, info["status"], fr))
        if not suspects:
            return
        # a second look, to rule out a transition in progress
        time.sleep(0.3)
        self.pump(0)
        reply = self.take_state()
        if reply is None:
            return
        busy = self.busy_ids()
        for cid, status, fr in suspects:
            info = self.known.get(cid)
            if info is None or cid in busy or info["status"] != status:
                continue
            fr2 = pf_fs.freezer_of(info["spid"])
            if fr2 is None:
                continue
            if (fr2[1] == "FROZEN") != (status == "paused"):
                self.fail("freezer", f"container {cid!r} is {status!r} in state but its "
                          f"freezer {fr2[0]} says {fr2[1]}")

    def replay(self, since):
        """events since_seq=since on the probe socket: (events, final) or None."""
        req, reply = self.call({"op": "events", "since_seq": since}, 20)
        if reply is None:
            self.fail("seq", f"events since_seq={since} gave no final reply within 20 s")
            self.give_up(req)
            return None
        if reply.get("ok") is not True:
            self.fail("seq", f"events since_seq={since} failed", reply=reply)
            return None
        evs = [p.get("event") for p in req.partials]
        return evs, reply

    def check_replay(self, since):
        got = self.replay(since)
        if got is None:
            return False
        evs, fin = got
        last = fin.get("last_seq")
        if not isinstance(last, int):
            self.fail("seq", "events final reply without last_seq", reply=fin)
            return False
        start = since + 1
        if fin.get("truncated"):
            oldest = fin.get("oldest_seq")
            if not isinstance(oldest, int) or oldest <= start:
                self.fail("seq", f"truncated replay with oldest_seq {oldest!r} "
                          f"(asked since {since})", reply=fin)
            else:
                start = oldest
        seqs = [e.get("seq") if isinstance(e, dict) else None for e in evs]
        want = list(range(start, last + 1))
        if seqs != want:
            missing = sorted(set(want) - set(s for s in seqs if s is not None))
            extra = [s for s in seqs if s not in set(want)]
            self.fail("seq", f"replay since {since}: seqs not {start}..{last} contiguous; "
                      f"missing {missing[:20]}, unexpected {extra[:20]}, "
                      f"order ok: {seqs == sorted(seqs)}")
        if last < self.replayed_max:
            self.fail("seq", f"last_seq went back from {self.replayed_max} to {last}")
        held_missing = [s for s in self.log if start <= s <= last and s not in set(seqs)]
        if held_missing:
            self.fail("seq", f"events held before are missing from the replay: "
                      f"{[short(self.log[s]) for s in held_missing[:5]]}")
        # events of an earlier daemon (before a restart) above last_seq were
        # published but are not in the log; a newer event seen live may be
        # above last_seq (the reply's snapshot was taken before it)
        ahead = [s for s in self.log if s > last and self.log_epoch.get(s, 0) < self.epoch]
        if ahead:
            self.fail("seq", f"events seen before with seq above last_seq {last}: "
                      f"{[short(self.log[s]) for s in sorted(ahead)[:5]]}")
            for s in ahead:
                del self.log[s]
                self.log_epoch.pop(s, None)
        for e in evs:
            if isinstance(e, dict) and isinstance(e.get("seq"), int):
                self.absorb_event(e, live=False)
        self.replayed_max = max(self.replayed_max, last)
        return True

    def full_check(self, after_restart=False):
        """seq contiguity, state vs log, acknowledged containers."""
        st = self.take_state(10)
        if st is None:
            return
        if after_restart:
            boot = st.get("boot_id")
            if boot in self.boot_ids:
                self.fail("restart", f"boot_id {boot!r} did not change at the restart")
            self.boot_ids.append(boot)
        S = st.get("last_seq")
        since = 0 if after_restart else self.replayed_max
        if not self.check_replay(since):
            return
        if not isinstance(S, int):
            self.fail("state", "state without last_seq", reply=st)
            return
        self.check_state_vs_log(st, S)

    def check_state_vs_log(self, st, S):
        seqs = [s for s in self.log if s <= S]
        complete = len(seqs) == S
        if not complete:
            self.note(f"log copy incomplete up to {S} ({len(seqs)} held): state/log check skipped")
            return
        live = {}          # id -> {"start": seq, "spid", "execs": {pid: seq}, "paused"}
        history = collections.defaultdict(list)
        for s in range(1, S + 1):
            e = self.log[s]
            cid, typ, pid = e.get("id"), e.get("type"), e.get("pid")
            history[cid].append(f"{s}:{typ}{'/' + pid if pid else ''}")
            cur = live.get(cid)
            if typ in ("start-container", "restore"):
                if cur is not None and typ == "start-container":
                    self.log_problem(f"{cid!r}: start-container at seq {s} while the "
                                     f"incarnation started at {cur['start']} has no init exit",
                                     history[cid])
                if cur is None:
                    live[cid] = {"start": s, "spid": e.get("system_pid"), "execs": {},
                                 "paused": False}
                continue
            if cur is None:
                if typ not in ("oom",):
                    self.log_problem(f"{cid!r}: {typ} event at seq {s} for a container "
                                     f"not running per the log", history[cid])
                continue
            if typ == "start-process":
                if pid in cur["execs"]:
                    self.log_problem(f"{cid!r}: start-process {pid!r} twice (seq "
                                     f"{cur['execs'][pid]} and {s})", history[cid])
                cur["execs"][pid] = s
            elif typ == "exit":
                if pid == "init":
                    if cur["execs"]:
                        self.log_problem(f"{cid!r}: init exit at seq {s} before the exits "
                                         f"of {sorted(cur['execs'])}", history[cid])
                    cur["exit"] = s
                    del live[cid]
                elif pid in cur["execs"]:
                    del cur["execs"][pid]
                else:
                    self.log_problem(f"{cid!r}: exit of {pid!r} at seq {s} that never "
                                     f"started", history[cid])
            elif typ == "pause":
                cur["paused"] = True
            elif typ == "resume":
                cur["paused"] = False
        in_state = {c.get("id"): c for c in st.get("containers") or []}
        for cid in sorted(set(in_state) | set(live)):
            c, l = in_state.get(cid), live.get(cid)
            if c is not None and l is None:
                self.fail("state-log", f"{cid!r} is in state (last_seq {S}) but the log says "
                          f"it is not running: {history[cid][-8:]}")
                continue
            if l is not None and c is None:
                self.fail("state-log", f"{cid!r} is running per the log (last_seq {S}) but "
                          f"not in state: {history[cid][-8:]}")
                continue
            procs = {p.get("pid"): p for p in c.get("processes") or []}
            init = procs.pop("init", None)
            if init is None:
                self.fail("state-log", f"{cid!r} in state has no init process", reply=c)
            elif l["spid"] is not None and init.get("system_pid") != l["spid"]:
                self.fail("state-log", f"{cid!r}: init system_pid {init.get('system_pid')} in "
                          f"state, {l['spid']} in its start event")
            if set(procs) != set(l["execs"]):
                self.fail("state-log", f"{cid!r}: exec processes in state {sorted(procs)} but "
                          f"per the log {sorted(l['execs'])} (last_seq {S}): "
                          f"{history[cid][-8:]}")
            if (c.get("status") == "paused") != l["paused"]:
                self.fail("state-log", f"{cid!r} is {c.get('status')!r} in state but "
                          f"{'paused' if l['paused'] else 'running'} per its events "
                          f"(last_seq {S}): {history[cid][-8:]}")
        # acknowledged creates
        starts = collections.defaultdict(list)
        for s in range(1, S + 1):
            e = self.log[s]
            if e.get("type") in ("start-container", "restore"):
                starts[e.get("id")].append(s)
        for ack in self.acks:
            if ack.get("done") or ack["at"] >= self.state_sent_at:
                continue    # answered after the snapshot was asked for
            cid = ack["id"]
            if ack["bound"] is None:
                cand = [s for s in starts.get(cid, [])
                        if self.log[s].get("system_pid") == ack["spid"]]
                if not cand:
                    self.fail("acked", f"create of {cid!r} was acknowledged (system_pid "
                              f"{ack['spid']}, step {ack['step']}) but no start-container "
                              f"event of it is in the log up to {S}: {history[cid][-8:]}")
                    ack["done"] = True
                    continue
                ack["bound"] = cand[-1]
            s0 = ack["bound"]
            exits = [s for s in range(s0 + 1, S + 1)
                     if self.log[s].get("id") == cid and self.log[s].get("type") == "exit"
                     and self.log[s].get("pid") == "init"]
            c = in_state.get(cid)
            in_st = False
            if c is not None:
                for p in c.get("processes") or []:
                    if p.get("pid") == "init" and p.get("system_pid") == ack["spid"]:
                        in_st = True
            if exits:
                ack["done"] = True
            elif not in_st:
                self.fail("acked", f"acknowledged container {cid!r} (system_pid {ack['spid']},"
                          f" start seq {s0}) is neither in state nor has an init exit in the "
                          f"log up to {S}: {history[cid][-8:]}")
                ack["done"] = True

    def log_problem(self, text, hist):
        key = ("log", text)
        if key in getattr(self, "_log_problems", set()):
            return
        self._log_problems = getattr(self, "_log_problems", set()) | {key}
        self.fail("state-log", f"event log: {text}; history {hist[-10:]}")

    # ------------------------------------------------------------ slow clients (issue 14)

    def slow_rid(self):
        self.slow_rids += 1
        return f"slow{self.slow_rids}"

    def slow_call(self, body, timeout):
        """call() with a rid of the slow-client stream (the ordinary
        actions' random stream is left alone)."""
        return self.call(dict(body, rid=self.slow_rid()), timeout)

    def schedule_slow(self):
        if self.opts.slow_every > 0:
            self.slow_next = time.monotonic() + self.opts.slow_every * self.srng.uniform(0.6, 1.4)

    def slow_episode(self):
        """A flood by a client that never reads, alongside the other clients
        for a few seconds, then (or instead) stalled event replays with
        everything else paused.  The first episode does both."""
        self.slow_n += 1
        kind = "both" if self.slow_n == 1 else self.srng.choice(["flood", "stall", "both"])
        self.note(f"slow-client episode {self.slow_n}: {kind}")
        if kind == "stall":
            self.stall_check()
            self.schedule_slow()
        else:
            self.start_flood(then_stall=(kind == "both"))

    def slow_metric(self, key):
        req, reply = self.slow_call({"op": "metrics"}, 5)
        if reply is None:
            self.give_up(req)
            return None
        v = reply.get(key) if reply.get("ok") is True else None
        return v if isinstance(v, int) else None

    def make_ballast(self):
        """A sleeping container whose labels (64 to 900 KB) make every
        `state` reply large.  Its id, or None if it was not created."""
        cid = f"f{self.token}bal{self.slow_n}"
        n = self.srng.choice([64, 256, 900])
        bundle = self._write_bundle(f"bal{self.slow_n}", ["sleep", "3600"], cgroup=True)
        labels = [f"ballast{i}=" + "b" * 1000 for i in range(n)]
        self.made_ids.add(cid)
        req = self.send({"op": "create", "id": cid, "bundle": bundle, "labels": labels,
                         "rid": self.slow_rid()}, target=cid)
        self.wait([req], 45)
        if req.final is None or req.final.get("ok") is not True:
            self.note(f"ballast {cid} not created: {short(req.final, 200)}")
            return None
        return cid

    def start_flood(self, then_stall):
        ballast = self.make_ballast() if self.srng.random() < 0.7 else None
        if not self.daemon.alive():
            self.schedule_slow()
            return
        pid = self.daemon.proc.pid
        # the baseline, once the daemon made a few `state` replies (their
        # buffers count in it) and with the ballast in place
        size = 0
        for _ in range(3):
            req, reply = self.slow_call({"op": "state"}, 5)
            if reply is None:
                self.give_up(req)
            else:
                size = max(size, len(msgpack.packb(reply)))
        dropped0 = self.slow_metric("requests_dropped_total")
        base = pf_slow.rss(pid)
        if base is None:
            self.schedule_slow()
            return
        routing = b"F" + self.token.encode() + str(self.slow_n).encode()
        offset = pf_slow.log_size(self.daemon.log_path)
        watch = pf_slow.FloodWatch(pid, self.daemon.cmd_ep)
        watch.start()
        sock = pf_slow.dealer(self.ctx, self.daemon.cmd_ep, routing_id=routing)
        mix = collections.Counter()
        for i in range(self.opts.flood_n):
            x = self.srng.random()
            if ballast and x < 0.3:
                body, what = {"op": "state", "id": ballast, "rid": i}, "state-ballast"
            elif x < 0.9:
                body, what = {"op": "state", "rid": i}, "state"
            else:
                body, what = {"op": "version", "rid": i}, "version"
            sock.send(msgpack.packb(body))
            mix[what] += 1
        t0 = time.monotonic()
        self.flood = {"t0": t0, "until": t0 + self.srng.uniform(2.5, 3.5), "sock": sock,
                      "watch": watch, "base": base, "pid": pid, "name": "ipc/" + routing.hex(),
                      "offset": offset, "dropped0": dropped0, "ballast": ballast,
                      "size": size, "mix": mix, "then_stall": then_stall, "step": self.step,
                      "ops0": collections.Counter(self.ops_sent)}
        self.note(f"flood: {self.opts.flood_n} requests ({dict(mix)}) from "
                  f"{self.flood['name']} that never reads; RSS baseline {base / MIB:.1f} MiB, "
                  f"state replies {size // 1000} KB")

    def abort_flood(self, why):
        f, self.flood = self.flood, None
        if f is None:
            return
        f["watch"].stop()
        f["sock"].close(0)
        self.note(f"flood abandoned: {why}")
        self.schedule_slow()

    def end_flood(self, chain=True):
        """The flood's invariants: RSS bound, `version` within 1 s, the log
        line; then the flooder goes (and, for a `both` episode, stalled
        replays are measured)."""
        f, self.flood = self.flood, None
        w = f["watch"]
        w.stop()
        lines = []
        if self.daemon.alive():
            # the line is logged when the first request is dropped; give
            # the log a moment if it is not there yet
            deadline = time.monotonic() + 3
            while True:
                lines = pf_slow.drop_lines(pf_slow.log_since(self.daemon.log_path, f["offset"]),
                                           f["name"])
                if lines or time.monotonic() >= deadline:
                    break
                self.pump(0.1)
        dropped1 = self.slow_metric("requests_dropped_total") if self.daemon.alive() else None
        f["sock"].close(0)
        dur = time.monotonic() - f["t0"]
        dropped = (dropped1 - f["dropped0"]) if None not in (dropped1, f["dropped0"]) else None
        ops = collections.Counter(self.ops_sent)
        ops.subtract(f["ops0"])
        during = ", ".join(f"{k} {v}" for k, v in ops.most_common(8) if v > 0)
        base, peak = f["base"], w.peak
        what = (f"{self.opts.flood_n} requests ({dict(f['mix'])}) from {f['name']} "
                f"sent at step {f['step']}, "
                f"client-queue {self.client_queue or 'default'}, state replies "
                f"{f['size'] // 1000} KB, {dur:.1f} s")
        if w.gone or not self.daemon.alive():
            self.note(f"flood ended with the daemon gone ({what})")
        elif w.error:
            self.fail("harness", f"flood watcher: {w.error}")
        else:
            if w.samples == 0:
                self.fail("harness", "flood watcher took no RSS sample")
            elif self.sanitized:
                self.note("flood-rss not checked: a sanitized daemon keeps freed memory")
            elif peak >= base + pf_slow.FLOOD_SLACK:
                self.fail("flood-rss", f"VmRSS {peak / MIB:.1f} MiB ({peak_at_s(w)}) while a "
                          f"client floods without reading: over baseline {base / MIB:.1f} MiB "
                          f"+ {pf_slow.FLOOD_SLACK // MIB} MiB; flood: {what}; the fuzzer sent "
                          f"meanwhile: {during or 'nothing'}")
            if w.late:
                lat = "; ".join(f"sent {a:.2f} s in: " + (f"{b:.2f} s" if b else "no reply")
                                for a, b in w.late[:5])
                self.fail("flood-version", f"{len(w.late)} of {w.probes} `version` probes of a "
                          f"client that reads took over {pf_slow.VERSION_BOUND_S:g} s during the "
                          f"flood ({lat}); flood: {what}")
            if w.bad:
                self.fail("flood-version", f"`version` during the flood answered "
                          f"{w.bad[0]} ({len(w.bad)} such)")
            if not lines:
                others = pf_slow.drop_lines(pf_slow.log_since(self.daemon.log_path,
                                                              f["offset"]))
                self.fail("drop-log", f"no `client {f['name']}: {pf_slow.DROP_TEXT}` in the "
                          f"log after a flood past the per-client bounds ({what}; "
                          f"requests_dropped_total grew by {dropped}); other such lines: "
                          f"{others[:3] or 'none'}")
        rec = {"step": f["step"], "base": base, "peak": peak, "worst": w.worst(),
               "probes": w.probes, "dropped": dropped, "logged": bool(lines)}
        self.slow_figures["floods"].append(rec)
        print(f"[{self.runtime}] step {self.step}: flood of {what}: RSS baseline "
              f"{base / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB (+{(peak - base) / MIB:.1f}, "
              f"bound +{pf_slow.FLOOD_SLACK // MIB}{', not checked: ASan' if self.sanitized else ''}"
              f"); `version` worst "
              f"{w.worst() * 1000:.0f} ms over {w.probes} probes; {dropped} requests dropped; "
              f"log line: {'yes' if lines else 'NO'}", flush=True)
        self.note(f"flood ended: peak {peak / MIB:.1f} MiB, dropped {dropped}, "
                  f"log {lines[:1]}")
        if chain and f["then_stall"] and self.daemon.alive():
            self.stall_check(f["ballast"])
        if f["ballast"] and self.daemon.alive():
            self.send({"op": "signal", "id": f["ballast"], "signal": 9, "all": True,
                       "rid": self.slow_rid()}, target=f["ballast"])
        self.schedule_slow()

    def pad_events(self, want, prefer=None):
        """Pause and resume a container until the log holds `want` events
        (one each): a few dozen events are what makes a replay outgrow a
        client's bounds.  Returns the id of a container made for it (to be
        killed), or None."""
        made = None
        have = self.last_seq_seen
        cid = prefer
        for _ in range(3):
            if have >= want:
                break
            running = [c for c, v in sorted(self.known.items())
                       if c.startswith(f"f{self.token}") and v.get("status") == "running"]
            if cid not in running:
                cid = running[0] if running else None
            if cid is None:
                if made is not None:
                    break
                made = cid = f"f{self.token}pad{self.slow_n}"
                bundle = self._write_bundle(f"pad{self.slow_n}", ["sleep", "3600"], cgroup=True)
                self.made_ids.add(cid)
                req = self.send({"op": "create", "id": cid, "bundle": bundle,
                                 "rid": self.slow_rid()}, target=cid)
                self.wait([req], 45)
                if req.final is None or req.final.get("ok") is not True:
                    break
            self.note(f"padding the event log to {want} events with {cid}")
            while have < want:
                failed = False
                for status in ("paused", "running"):
                    req, reply = self.slow_call({"op": "update", "id": cid, "status": status}, 10)
                    if reply is None:
                        self.give_up(req)
                    if reply is None or reply.get("ok") is not True:
                        failed = True
                        break
                    have += 1
                if failed:
                    self.take_state()
                    cid = None
                    break
        return made

    def stall_check(self, ballast=None):
        """Clients whose `events` replays stall (RCVHWM=1, never read) and
        nothing else of ours going on: after 1 s, the daemon's CPU over 2 s
        is < 5 % of a core, and `version` answers within 1 s.  One of those
        clients reads afterwards, to tell whether its replays were stalled
        indeed (or all fitted in its buffers)."""
        if not self.daemon.alive():
            return
        self.close_extra(all_=True)
        if self.filler.exists():
            self.filler.unlink()
            self.note("disk freed for the stall check")
        # Each client asks for at most 60 replays (fewer than the 64
        # requests that wait for a client past its bounds); a client takes
        # about 1,500 messages before its replays stall (1,000 in its queue,
        # the rest in the connection's buffers): 4,000 messages a client
        # need 66 events in the log.
        retain = self.retain or 100000
        pad = None
        if not self.wait(list(self.pending.values()), 15):
            self.slow_figures["stall_skipped"] += 1
            self.note(f"stall check skipped: {len(self.pending)} requests still in flight")
            return
        if min(self.last_seq_seen, retain) < 70:
            self.take_state()
            pad = self.pad_events(70, ballast)
        self.pump(0.05)
        try:
            self.stall_measure(min(self.last_seq_seen, retain))
        finally:
            if pad is not None and self.daemon.alive():
                self.send({"op": "signal", "id": pad, "signal": 9, "all": True,
                           "rid": self.slow_rid()}, target=pad)

    def stall_measure(self, n_ev):
        pid = self.daemon.proc.pid
        per = max(1, min(60, -(-4000 // (n_ev + 1))))
        body = msgpack.packb({"op": "events", "since_seq": 0, "rid": "stalled"})
        socks = []
        tries = []
        late = None
        try:
            for i in range(self.opts.stall_clients):
                routing = b"S" + self.token.encode() + f"{self.slow_n}-{i}".encode()
                s = pf_slow.dealer(self.ctx, self.daemon.cmd_ep, routing_id=routing)
                for _ in range(per):
                    s.send(body)
                socks.append(s)
            self.note(f"stall: {len(socks)} clients x {per} `events` since_seq 0 "
                      f"(~{n_ev} events each), never read")
            time.sleep(1.0)
            for _ in range(3):
                self.take_live_events()
                seq0 = self.last_seq_seen
                th0 = pf_slow.thread_cpu(pid)
                c0, t0 = pf_slow.cpu_seconds(pid), time.monotonic()
                time.sleep(2.0)
                c1, dt = pf_slow.cpu_seconds(pid), time.monotonic() - t0
                th1 = pf_slow.thread_cpu(pid)
                if c0 is None or c1 is None:
                    return      # the daemon is gone: `alive` says so
                self.take_live_events()
                quiet = self.last_seq_seen == seq0
                tries.append(((c1 - c0) / dt, quiet, dt,
                              pf_slow.thread_cpu_diff(th0, th1, dt)))
                if tries[-1][0] < pf_slow.STALL_CPU_MAX or quiet:
                    break
                self.note(f"stall: {tries[-1][0] * 100:.1f} % of a core in a window with "
                          f"events (seq {seq0} -> {self.last_seq_seen}): measured again")
            share, quiet, dt, threads = tries[-1]
            what = (f"{len(socks)} clients x {per} `events` since_seq 0 replays of ~{n_ev} "
                    f"events, client-queue {self.client_queue or 'default'}")
            if share >= pf_slow.STALL_CPU_MAX:
                if quiet:
                    self.fail("stall-cpu", f"the daemon used {share * 100:.1f} % of a core over "
                              f"{dt:.1f} s (bound {pf_slow.STALL_CPU_MAX * 100:g} %) with only "
                              f"stalled replays: {what}; by thread: {threads}; all windows: "
                              + ", ".join(f"{t[0] * 100:.1f} %" for t in tries))
                else:
                    self.note(f"stall check inconclusive: events in every window ({what})")
            t0 = time.monotonic()
            req, reply = self.slow_call({"op": "version"}, pf_slow.VERSION_BOUND_S)
            if reply is None:
                came = self.wait([req], 29)
                late = time.monotonic() - t0
                self.fail("stall-version", f"no version reply within 1 s while {what} "
                          + (f"(came after {late:.1f} s)" if came else "(nor within 30 s)"))
                if not came:
                    self.give_up(req)
            else:
                late = time.monotonic() - t0
            # were they stalled?  The first client reads what has come so
            # far: all it asked for (per replays of n_ev events and a
            # final reply), or less when its replays were waiting
            want = per * (n_ev + 1)
            got = 0
            while got < want and socks[0].poll(100):
                while got < want:
                    try:
                        socks[0].recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    got += 1
        finally:
            for s in socks:
                s.close(0)
        if not tries:
            return
        stalled = got < want
        self.slow_figures["stalls"].append({"step": self.step, "share": share, "quiet": quiet,
                                            "clients": len(socks), "per": per, "events": n_ev,
                                            "stalled": stalled})
        print(f"[{self.runtime}] step {self.step}: {what}: daemon CPU {share * 100:.2f} % of "
              f"a core over {dt:.1f} s ({'quiet' if quiet else 'events published meanwhile'}"
              f"{', ' + str(len(tries)) + ' windows' if len(tries) > 1 else ''}); `version` "
              f"{late * 1000:.0f} ms; replays stalled: "
              f"{'yes' if stalled else 'NO'} (a client had {got} of {want} messages)",
              flush=True)

    def slow_summary(self):
        fl, st = self.slow_figures["floods"], self.slow_figures["stalls"]
        parts = []
        if fl:
            worst = max(fl, key=lambda r: r["peak"] - r["base"])
            parts.append(f"{len(fl)} floods, RSS at most +{(worst['peak'] - worst['base']) / MIB:.1f}"
                         f" MiB over its baseline ({worst['base'] / MIB:.1f} -> "
                         f"{worst['peak'] / MIB:.1f} MiB, step {worst['step']}), `version` at "
                         f"worst {max(r['worst'] for r in fl) * 1000:.0f} ms, log line "
                         f"{sum(r['logged'] for r in fl)}/{len(fl)}")
        else:
            parts.append("no flood")
        if st:
            parts.append(f"{len(st)} stall checks ({sum(r['stalled'] for r in st)} with the "
                         f"replays stalled indeed), daemon CPU at most "
                         f"{max(r['share'] for r in st) * 100:.2f} % of a core")
        else:
            parts.append("no stall check")
        if self.slow_figures["stall_skipped"]:
            parts.append(f"{self.slow_figures['stall_skipped']} stall checks skipped "
                         f"(requests in flight)")
        return "; ".join(parts)

    # ------------------------------------------------------------ main loop

    ACTIONS = [
        (14, "create"), (5, "create_bad"), (4, "create_race"), (9, "exec"), (3, "exec_race"),
        (8, "signal"), (6, "kill"), (10, "update"), (3, "update_process"), (8, "query"),
        (3, "events_abandoned"), (4, "checkpoint"), (8, "malformed"), (3, "raw"), (2, "disk"),
    ]

    def run(self):
        t_end = time.monotonic() + self.seconds
        if self.rng.random() < 0.3:
            self.retain = self.rng.choice([500, 1000])
        self.start_daemon()
        self.boot_ids.append((self.take_state() or {}).get("boot_id"))
        restart_every = self.rng.choice([4.0, 6.0, 10.0])
        print(f"[{self.runtime}] seed {self.seed}: {self.seconds:g} s, restarts every "
              f"~{restart_every:g} s, events-retain {self.retain or 'default'}, state dir "
              f"{'on a %d MiB tmpfs' % self.disk_mb if self.disk_mb else 'on /tmp'}, "
              f"client-queue {self.client_queue or 'default'}", flush=True)
        next_restart = time.monotonic() + min(self.rng.uniform(0.3, 1.5) * restart_every,
                                              self.seconds / 2)   # one restart at least
        if self.opts.slow_every > 0:
            self.slow_next = time.monotonic() + min(self.opts.slow_first, self.seconds / 4)
        while time.monotonic() < t_end:
            self.step += 1
            now = time.monotonic()
            if self.flood is not None and now >= self.flood["until"]:
                self.end_flood()
            elif now >= next_restart and self.flood is None:
                # (not while a flood runs: its figures are one daemon's)
                self.act_restart()
                next_restart = time.monotonic() + self.rng.uniform(0.5, 1.5) * restart_every
            elif self.flood is None and now >= self.slow_next:
                self.slow_episode()
            else:
                _, name = weighted(self.rng, self.ACTIONS)
                try:
                    getattr(self, "act_" + name)()
                except (zmq.ZMQError, OSError) as e:
                    self.fail("harness", f"{name}: {e!r}")
            self.pump(0.01)
            self.close_extra()
            if not self.check_alive():
                continue
            self.check_version()
            self.check_canary()
            self.check_deadlines()
            st = self.take_state()
            if st is not None:
                self.check_freezer(st)
            if self.step % 10 == 0:
                self.full_check()
        if self.flood is not None:
            self.end_flood(chain=False)
        # drain what is still in flight (with room on the disk again)
        if self.filler.exists():
            self.filler.unlink()
            self.note("disk freed for the drain")
        self.wait(list(self.pending.values()), 30)
        self.check_deadlines()
        self.full_check()
        self.finish()

    def finish(self):
        """Kill every container through the daemon, stop the daemon, and check
        that nothing was left behind."""
        self.close_extra(all_=True)
        if self.filler.exists():
            self.filler.unlink()
            self.note("disk freed for the clean-up")
        if not self.daemon.alive():
            self.after_daemon_gone()
            self.start_daemon()
        st = self.take_state()
        deadline = time.monotonic() + 20
        while st is not None and self.known and time.monotonic() < deadline:
            for cid in list(self.known):
                self.send({"op": "signal", "id": cid, "signal": 9, "all": True}, target=cid)
            self.wait(list(self.pending.values()), 5)
            time.sleep(0.2)
            st = self.take_state()
        if self.known:
            self.fail("cleanup", f"containers still in state 20 s after SIGKILL: "
                      f"{ {k: v['status'] for k, v in self.known.items()} }")
        self.full_check()
        metrics = self.call({"op": "metrics"}, 5)[1]
        if metrics and metrics.get("ok"):
            self.note(f"metrics at the end: open_fds {metrics.get('open_fds')} "
                      f"rss {metrics.get('rss_bytes')}")
        proc = self.daemon.proc
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
            if proc.returncode != 0:
                self.fail("cleanup", f"zcd exited {proc.returncode} on SIGTERM at the end\n"
                          + self.daemon.log_tail(20))
        except subprocess.TimeoutExpired:
            self.fail("cleanup", "zcd did not exit within 20 s of SIGTERM at the end")
            proc.kill()
            proc.wait()
        diffs = self.canary.diff(hashes=True)
        if diffs:
            self.fail("canary", "files outside the state dir changed:\n      "
                      + "\n      ".join(diffs[:20]))
        left = self.sweep(grace=10)
        if left:
            self.fail("cleanup", "left behind after every container exited and zcd stopped: "
                      + "; ".join(left))

    def sweep(self, grace=0):
        """Kill what this run left: runtime containers (private roots, and the
        default roots' entries whose bundle is ours), shims, cgroups."""
        left = []
        deadline = time.monotonic() + grace
        root = str(self.root) + "/"
        while True:
            entries = []
            for rt in ("runc", "crun"):
                if shutil.which(rt) is None:
                    continue
                for r in (self.rt_roots[rt], f"/run/{rt}"):
                    for cid, bundle, pid, status in pf_fs.runtime_entries(rt, r):
                        if r == self.rt_roots[rt] or (bundle + "/").startswith(root):
                            entries.append((rt, r, cid, status))
            shims = pf_fs.processes_with_cwd_under(self.state_dir)
            if (not entries and not shims) or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        for rt, r, cid, status in entries:
            left.append(f"{rt} container {cid!r} ({status}, root {r})")
            pf_fs.force_delete(rt, r, cid)
        for pid in shims:
            left.append(f"process {pid} under the state dir")
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        # cgroups of containers that are gone: named after our ids (default
        # path) or below our own prefix (cgroupsPath); the parent dir of the
        # latter is ours to remove
        cgs = pf_fs.cgroup_dirs_with_prefix(f"f{self.token}")
        for parent in pf_fs.cgroup_dirs_with_prefix(self.cg_prefix):
            cgs += [os.path.join(parent, n) for n in os.listdir(parent)
                    if os.path.isdir(os.path.join(parent, n))]
        if cgs:
            left.append(f"{len(cgs)} cgroup dirs, e.g. {sorted(cgs)[:3]}")
        for cg in cgs:
            pf_fs.remove_cgroup_tree(cg)
        for cg in pf_fs.cgroup_dirs_with_prefix(self.cg_prefix):
            pf_fs.remove_cgroup_tree(cg)
        return left

    def cleanup(self):
        try:
            for s in self.socks.values():
                s.close()
            if self.sub is not None:
                self.sub.close(0)
            self.close_extra(all_=True)
        except Exception:  # noqa: BLE001
            pass
        if self.daemon.alive():
            self.daemon.proc.kill()
            self.daemon.proc.wait()
        self.sweep(grace=0)
        if self.mounted:
            subprocess.run(["umount", "-l", self.disk_root], capture_output=True)
            self.mounted = False
        self.ctx.term()

    def report(self):
        lines = []
        if self.failures:
            lines.append(f"--- {len(self.failures)} failures ({self.runtime}, seed {self.seed}) ---")
            firsts = {}
            counts = collections.Counter()
            for f in self.failures:
                sig = f.signature()
                counts[sig] += 1
                firsts.setdefault(sig, f)
            for sig, f in firsts.items():
                lines.append(f"({counts[sig]}x) {f}")
            lines.append(f"--- step log tail ({self.runtime}) ---")
            lines.extend(self.steplog)
            lines.append(f"--- zcd log tail ({self.daemon.log_path}) ---")
            lines.append(self.daemon.log_tail(40))
        top = ", ".join(f"{k} {v}" for k, v in self.ops_sent.most_common())
        lines.append(f"[{self.runtime}] requests: {top}")
        codes = ", ".join(f"{k} {v}" for k, v in sorted(self.codes.items()))
        lines.append(f"[{self.runtime}] replies: {codes}")
        lines.append(f"[{self.runtime}] slow clients: {self.slow_summary()}")
        return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_S", 120)))
    ap.add_argument("--runtime", default="both", choices=["runc", "crun", "both"])
    ap.add_argument("--build", default=os.environ.get("ZCD_BUILD", "build"))
    ap.add_argument("--max-live", type=int, default=8)
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
    ap.add_argument("--trace", help="append every request and reply to this file")
    ap.add_argument("--disk-mb", type=int, default=None,
                    help="state dir on a tmpfs of this size (0: none; default: the seed "
                         "picks 3 MiB in a quarter of the runs)")
    ap.add_argument("--slow-every", type=float, default=15.0,
                    help="seconds between slow-client episodes (a flood without reading, "
                         "stalled event replays; 0: none; default 15)")
    ap.add_argument("--slow-first", type=float, default=1.5,
                    help="seconds into each runtime's run of the first episode, a flood then "
                         "stalled replays (at most a quarter of the run; default 1.5)")
    ap.add_argument("--flood-n", type=int, default=20000,
                    help="requests a flooder sends without reading (default 20000)")
    ap.add_argument("--stall-clients", type=int, default=20,
                    help="clients with stalled `events` replays (default 20)")
    ap.add_argument("--client-queue", type=int, default=None,
                    help="start the daemon with --client-queue N (0: its default; default: "
                         "the seed picks 50 in about a third of the runs)")
    opts = ap.parse_args()
    if not os.path.isabs(opts.build):
        opts.build = str(REPO / opts.build)
    if not os.path.exists(os.path.join(opts.build, "zcd")):
        print(f"protocol fuzz: {opts.build}/zcd is not built", file=sys.stderr)
        return 2
    seed = opts.seed if opts.seed is not None else secrets.randbelow(2 ** 31)
    runtimes = ["runc", "crun"] if opts.runtime == "both" else [opts.runtime]
    print(f"protocol fuzz: seed {seed}, {opts.seconds:g} s, runtimes {runtimes}, "
          f"build {opts.build}", flush=True)
    if os.geteuid() != 0:
        print("protocol fuzz: must run as root (runtimes, cgroups)", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="zcdf-", dir="/tmp")
    total_steps = total_restarts = total_failures = 0
    rc = 0
    try:
        rootfs = make_rootfs(os.path.join(workdir, "rootfs"))
        for i, rt in enumerate(runtimes):
            if shutil.which(rt) is None:
                print(f"protocol fuzz: {rt} is not installed", file=sys.stderr)
                rc = 2
                continue
            fz = Fuzzer(opts, rt, seed + i, opts.seconds / len(runtimes), workdir, rootfs)
            prev = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

            def stop(signum, frame):
                raise KeyboardInterrupt
            signal.signal(signal.SIGTERM, stop)
            try:
                fz.run()
            except KeyboardInterrupt:
                fz.fail("harness", "interrupted")
            except SystemExit:
                pass
            except Exception:  # noqa: BLE001
                fz.fail("harness", traceback.format_exc())
            finally:
                fz.cleanup()
                for s, h in prev.items():
                    signal.signal(s, h)
            print(fz.report(), flush=True)
            print(f"[{rt}] seed {seed + i}: {fz.step} steps, {fz.restarts} restarts, "
                  f"{len(fz.failures)} failures "
                  f"({dict(fz.kinds_seen) if fz.failures else 'none'})", flush=True)
            total_steps += fz.step
            total_restarts += fz.restarts
            total_failures += len(fz.failures)
    finally:
        if not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"protocol fuzz: kept {workdir}")
    print(f"protocol fuzz: seed {seed}, {total_steps} steps, {total_restarts} restarts, "
          f"{total_failures} failures", flush=True)
    if total_failures:
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
