"""A container workload that survives daemon deaths, and the invariants it
must leave behind; shared by test_crash_issue4.py and tests/soak.py.

Each container follows a script of steps (create, exec, pause, resume,
signal), one request in flight per container, many containers at once,
all pipelined on one DEALER.  When the daemon is killed or stopped, what
was in flight is lost: a create never answered is "unacknowledged" (it may
or may not have happened), the rest of that container's script is dropped,
and a long-running container gets a final kill instead.  At the end every
container still listed is killed, and the full event log is checked:

- seq is 1..last, each once (the replay is never truncated here);
- every acknowledged create has exactly one start-container and exactly
  one init exit, in that order; an unacknowledged one has both or neither;
- every acknowledged exec has exactly one start-process and one exit,
  before its init's exit;
- no container, shim process or runtime state is left."""

import os
import time

from conftest import leftover_runtime_containers, processes_under
from restore_util import kill_daemon, replay, stop_daemon


class Container:
    def __init__(self, cid, bundle, steps, long_running):
        self.id = cid
        self.bundle = bundle
        self.steps = list(steps)  # [(op, keys)], create first
        self.long = long_running
        self.inflight = None  # (rid, op, keys)
        self.not_before = 0.0
        self.acked = False
        self.lost_create = False
        self.execs_acked = set()
        self.done = False


class Workload:
    """rng: random.Random; bundles: {"short": path, "exec": path, "long": path}."""

    def __init__(self, daemon, bundles, rng, prefix, log=print):
        self.d = daemon
        self.bundles = bundles
        self.rng = rng
        self.prefix = prefix
        self.log = log
        self.client = daemon.client()
        self.containers = {}
        self.pending = {}  # rid -> Container
        self.serial = 0
        self.restarts = {"term": 0, "kill": 0}
        self.requests = 0
        self.errors = {}
        self.stuck = []

    # ---- scripts ------------------------------------------------------

    def new_container(self, kind, runtime=None):
        self.serial += 1
        cid = f"{self.prefix}{self.serial}"
        rng = self.rng
        steps = [("create", {"runtime": runtime} if runtime else {})]
        if kind == "exec":
            steps.append(("exec", {"pid": "e1", "args": ["true"]}))
            if rng.random() < 0.5:
                steps.append(("exec", {"pid": "e2", "args": ["sh", "-c", "sleep 0.05"]}))
        elif kind == "long":
            for _ in range(rng.randint(0, 3)):
                r = rng.random()
                if r < 0.4:
                    steps += [("update", {"status": "paused"}), ("update", {"status": "running"})]
                else:
                    steps.append(("exec", {"pid": f"x{len(steps)}", "args": ["true"]}))
            if rng.random() < 0.3:
                steps.append(("update", {"status": "paused"}))
            steps.append(("signal", {"signal": 9}))
        c = Container(cid, self.bundles[kind], steps, kind == "long")
        self.containers[cid] = c
        return c

    # ---- driving ------------------------------------------------------

    def _send_next(self, c, now):
        if c.inflight or c.done or now < c.not_before:
            return
        if not c.steps:
            c.done = True
            return
        op, keys = c.steps[0]
        body = dict(keys, id=c.id)
        if op == "create":
            body["bundle"] = c.bundle
        elif op == "exec":
            body.setdefault("env", ["PATH=/bin"])
        rid = self.client.send(op, **body)
        self.requests += 1
        c.inflight = (rid, op, keys, now)
        self.pending[rid] = c

    def _on_reply(self, reply, now):
        c = self.pending.pop(reply.get("rid"), None)
        if c is None:
            return
        rid, op, keys, _ = c.inflight
        c.inflight = None
        c.steps.pop(0)
        if reply.get("ok"):
            if op == "create":
                c.acked = True
            elif op == "exec":
                c.execs_acked.add(keys["pid"])
            c.not_before = now + self.rng.uniform(0, 0.2)
            return
        code = reply["error"]["code"]
        self.errors[(op, code)] = self.errors.get((op, code), 0) + 1
        if op == "create":
            c.done = True  # failed creates leave nothing (checked at the end)
            return
        # the container went meanwhile, or is paused: a long one still gets
        # its kill (not_found then is fine)
        c.steps = [("signal", {"signal": 9})] if c.long and op != "signal" else []

    def pump(self, timeout):
        """Send what is due, then take the replies that come within timeout."""
        now = time.monotonic()
        for c in list(self.containers.values()):
            self._send_next(c, now)
        deadline = now + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                reply = self.client.recv_any(timeout=left)
            except TimeoutError:
                break
            self._on_reply(reply, time.monotonic())
            for c in list(self.containers.values()):
                self._send_next(c, time.monotonic())
        for c in self.containers.values():
            if c.inflight and time.monotonic() - c.inflight[3] > 30:
                self.stuck.append((c.id, c.inflight[1]))
                self._forget_inflight(c)

    def active(self):
        return sum(1 for c in self.containers.values() if not c.done)

    def _forget_inflight(self, c):
        rid, op, keys, _ = c.inflight
        self.pending.pop(rid, None)
        c.inflight = None
        if op == "create":
            c.lost_create = True
            c.done = not c.long
            c.steps = [("signal", {"signal": 9})] if c.long else []
            return
        c.steps = [("signal", {"signal": 9})] if c.long else []

    def restart(self, how):
        """Kill or stop the daemon, start it again, reconnect."""
        for c in self.containers.values():
            if c.inflight:
                self._forget_inflight(c)
        self.client = None
        if how == "kill":
            kill_daemon(self.d)
        else:
            stop_daemon(self.d)
        t0 = time.monotonic()
        self.d.start(timeout=60)
        self.restarts[how] += 1
        self.client = self.d.client()
        return time.monotonic() - t0

    # ---- the end ------------------------------------------------------

    def finish(self, timeout=120):
        """Let every script end, kill whatever is still listed, wait for
        the table to empty.  Returns the ids still listed (leaks)."""
        deadline = time.monotonic() + timeout
        while self.active() and time.monotonic() < deadline:
            self.pump(0.2)
        left = []
        while time.monotonic() < deadline:
            left = [c["id"] for c in self.client.ok("state")["containers"]]
            if not left:
                break
            for cid in left:
                self.client.call("signal", id=cid, signal=9)
            time.sleep(0.2)
        return left

    def check(self, settle=30):
        """The invariants; returns (problems, summary dict)."""
        problems = []
        events, final = replay(self.client, timeout=60, since_seq=0)
        if final.get("truncated"):
            problems.append(f"replay truncated at {final.get('oldest_seq')}")
        seqs = [e["seq"] for e in events]
        if seqs != list(range(1, len(seqs) + 1)) or final["last_seq"] != len(seqs):
            dup = len(seqs) - len(set(seqs))
            problems.append(f"seq not 1..{final['last_seq']}: {len(seqs)} events, {dup} duplicates")
        by_id = {}
        for e in events:
            by_id.setdefault(e["id"], []).append(e)
        lost = 0
        for c in self.containers.values():
            evs = by_id.pop(c.id, [])
            lost += self._check_container(c, evs, problems)
        for cid in by_id:
            problems.append(f"events of an id never used: {cid}")
        ids = set(self.containers)
        leaked_rt = self._settle(lambda: leftover_runtime_containers(ids), settle)
        leaked_shims = self._settle(lambda: processes_under(self.d.state_dir), settle)
        for rt, cid in leaked_rt:
            problems.append(f"runtime state left: {rt} {cid}")
        for pid in leaked_shims:
            problems.append(f"process left under the state dir: {pid} {_cmdline(pid)}")
        summary = {"events": len(events), "containers": len(self.containers),
                   "acked": sum(c.acked for c in self.containers.values()),
                   "unacked": sum(c.lost_create for c in self.containers.values()),
                   "requests": self.requests, "lost": lost,
                   "leaked": len(leaked_rt) + len(leaked_shims)}
        return problems, summary

    @staticmethod
    def _settle(probe, timeout):
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def _check_container(self, c, evs, problems):
        """Problems of one container's events; returns 1 if events were lost."""
        starts = [e for e in evs if e["type"] == "start-container"]
        exits = [e for e in evs if e["type"] == "exit" and e.get("pid") == "init"]
        lost = 0
        if c.acked and (len(starts) != 1 or len(exits) != 1):
            problems.append(f"{c.id} (acknowledged): {len(starts)} start, {len(exits)} exit")
            lost = 1
        elif not c.acked and (len(starts) != len(exits) or len(starts) > 1):
            problems.append(f"{c.id} (not acknowledged): {len(starts)} start, {len(exits)} exit")
            lost = 1
        if starts and exits and starts[0]["seq"] > exits[0]["seq"]:
            problems.append(f"{c.id}: exit before start")
        init_exit = exits[0]["seq"] if exits else None
        for pid in sorted({e.get("pid") for e in evs if e.get("pid") not in (None, "init")}
                          | c.execs_acked):
            ps = [e for e in evs if e["type"] == "start-process" and e.get("pid") == pid]
            px = [e for e in evs if e["type"] == "exit" and e.get("pid") == pid]
            want_one = pid in c.execs_acked
            if (want_one and (len(ps) != 1 or len(px) != 1)) or len(ps) != len(px) or len(ps) > 1:
                problems.append(f"{c.id}/{pid} (acked={want_one}): {len(ps)} start, {len(px)} exit")
                lost = 1
            if px and init_exit is not None and px[0]["seq"] > init_exit:
                problems.append(f"{c.id}/{pid}: exit after the init's exit")
        return lost


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def seed_from_env(default=None):
    s = os.environ.get("ZCD_SEED")
    if s:
        return int(s)
    return default if default is not None else int.from_bytes(os.urandom(4), "little")
