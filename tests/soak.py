"""Soak: mixed container traffic (start, exec, kill, pause, resume; runc and
crun containers side by side) against one daemon that is restarted every
few seconds, by SIGTERM or SIGKILL, for SOAK_S seconds (default 180).

A `zctr events --since-seq N --json` subscriber runs throughout (restarted
from the last seq it printed if it gives up while the daemon is away): it
must deliver every seq exactly once, in order.  At the end every container
still listed is killed and the invariants of
tests/integration/workload_issue4.py are checked.  Prints one summary line;
exits 1 when anything was lost or leaked.  ZCD_SEED=N replays a schedule."""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "integration"))

import zmq  # noqa: E402

from conftest import ZCTR, BundleFactory, Daemon, make_rootfs, sweep  # noqa: E402
from workload_issue4 import Workload, seed_from_env  # noqa: E402

IN_FLIGHT = 16
RUNTIMES = [rt for rt in ("runc", "crun") if shutil.which(rt)]


class EventTail:
    """zctr events as a lossless consumer across daemon restarts."""

    def __init__(self, daemon):
        self.d = daemon
        self.seqs = []
        self.events = []
        self.restarts = 0
        self.bad = []
        self.proc = None
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _spawn(self):
        since = self.seqs[-1] if self.seqs else 0
        return subprocess.Popen(
            [str(ZCTR), "--address", self.d.cmd_ep, "--events-address", self.d.ev_ep,
             "--timeout", "5000", "--json", "events", "--since-seq", str(since)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def _run(self):
        while not self.stop:
            self.proc = self._spawn()
            for line in self.proc.stdout:
                try:
                    ev = json.loads(line)
                except ValueError:
                    self.bad.append(line[:200])
                    continue
                self.seqs.append(ev["seq"])
                self.events.append(ev)
            self.proc.wait()
            if not self.stop:
                self.restarts += 1
                time.sleep(0.2)  # the daemon is away: try again shortly

    def close(self):
        self.stop = True
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
        self.thread.join(10)


def main():
    soak_s = float(os.environ.get("SOAK_S", "180"))
    seed = seed_from_env()
    rng = random.Random(seed)
    print(f"soak: {soak_s:.0f} s, seed {seed} (ZCD_SEED={seed} replays it), runtimes {RUNTIMES}",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="zcd-soak-w-"))
    state_dir = tempfile.mkdtemp(prefix="zcd-soak-", dir="/tmp")
    ctx = zmq.Context()
    d = Daemon(ctx, state_dir, RUNTIMES[0], log_dir=work)
    d.start()
    bf = BundleFactory(work / "bundles", make_rootfs(work / "rootfs"))
    bundles = {
        "short": bf(args=["sh", "-c", "sleep 0.$((RANDOM % 5))"]),
        "exec": bf(args=["sleep", "2"]),
        "long": bf(args=["sleep", "1000"]),
    }
    tail = EventTail(d)
    w = Workload(d, bundles, rng, prefix=f"soak{os.getpid()}-", log=lambda *a: None)
    t0 = time.monotonic()
    next_restart = t0 + rng.uniform(5, 15)
    restart_ms = []
    problems, left, last, lost, leaked = [], [], 0, 0, 0
    summary = {"containers": 0, "acked": 0, "requests": 0}
    try:
        while time.monotonic() - t0 < soak_s:
            while w.active() < IN_FLIGHT:
                kind = rng.choices(["short", "exec", "long"], [3, 3, 4])[0]
                w.new_container(kind, runtime=rng.choice(RUNTIMES))
            w.pump(0.05)
            if time.monotonic() >= next_restart:
                how = rng.choice(["term", "kill"])
                restart_ms.append(round(w.restart(how) * 1000))
                next_restart = time.monotonic() + rng.uniform(5, 15)
        left = w.finish()
        problems, summary = w.check()
        last = summary["events"]
        deadline = time.monotonic() + 30
        while (not tail.seqs or tail.seqs[-1] < last) and time.monotonic() < deadline:
            time.sleep(0.1)
        tail.close()
        if tail.seqs != list(range(1, len(tail.seqs) + 1)) or len(tail.seqs) != last:
            dup = len(tail.seqs) - len(set(tail.seqs))
            problems.append(f"zctr events delivered {len(tail.seqs)} of {last} seqs "
                            f"({dup} twice, in order: {tail.seqs == sorted(tail.seqs)})")
        if left:
            problems.append(f"containers still listed after the kill: {left}")
        if w.stuck:
            problems.append(f"requests never answered: {w.stuck}")
        lost = summary["lost"] + len(w.stuck) + max(0, last - len(set(tail.seqs)))
        leaked = summary["leaked"] + len(left)
    finally:
        tail.close()
        d.close_clients()
        if d.running():
            d.stop()
        extra = sweep(d)
    for p in problems[:40]:
        print("  problem:", p)
    if extra:
        print("  swept after the daemon stopped:", "; ".join(extra))
    print(f"soak: {time.monotonic() - t0:.0f} s, events seen {len(tail.seqs)} "
          f"(log {last}), restarts {w.restarts['term'] + w.restarts['kill']} "
          f"(SIGTERM {w.restarts['term']}, SIGKILL {w.restarts['kill']}, "
          f"max {max(restart_ms, default=0)} ms to answer), containers {summary['containers']} "
          f"(acked {summary['acked']}), requests {summary['requests']}, "
          f"errors {sum(w.errors.values())}, subscriber restarts {tail.restarts}, "
          f"lost: {lost}, leaked: {leaked}", flush=True)
    ctx.term()
    if not problems:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(state_dir, ignore_errors=True)
    else:
        print(f"  kept for inspection: {state_dir} (log {d.log_path})")
    return 0 if not problems and not extra else 1


if __name__ == "__main__":
    sys.exit(main())
