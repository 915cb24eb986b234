"""Crash test (issue 4): the daemon is SIGKILLed at random moments while
short containers start and exit, some with execs, and restarted each time;
in the end every acknowledged create has exactly one start and one exit,
seq is contiguous, and nothing is left behind (workload_issue4.check).
The seed is printed; ZCD_SEED=N replays a run's kill schedule."""

import os
import random
import time

from conftest import container_dir, read_text
from workload_issue4 import Workload, seed_from_env

CONTAINERS = 200
IN_FLIGHT = 12
BUDGET_S = 90


def test_sigkill_at_random_moments(zcd, bundle, cid, runtime):
    seed = seed_from_env()
    rng = random.Random(seed)
    print(f"crash test seed {seed} ({runtime}); rerun with ZCD_SEED={seed}")
    bundles = {
        "short": bundle(args=["sh", "-c", "sleep 0.0$((RANDOM % 10))"]),
        "exec": bundle(args=["sleep", "1"]),
        "long": bundle(args=["sleep", "1000"]),
    }
    w = Workload(zcd, bundles, rng, prefix=cid("x") + "-")
    kills = sorted(rng.sample(range(10, CONTAINERS - 10), rng.randint(5, 8)))
    kill_at = []
    restart_ms = []
    t0 = time.monotonic()
    while len(w.containers) < CONTAINERS or w.active() or kill_at:
        assert time.monotonic() - t0 < BUDGET_S * 2, "the workload does not finish"
        while w.active() < IN_FLIGHT and len(w.containers) < CONTAINERS:
            w.new_container("exec" if rng.random() < 0.2 else "short")
            if kills and len(w.containers) >= kills[0]:
                kills.pop(0)
                kill_at.append(time.monotonic() + rng.uniform(0, 0.4))
        w.pump(0.02)
        if kill_at and time.monotonic() >= kill_at[0]:
            kill_at.pop(0)
            restart_ms.append(w.restart("kill") * 1000)
    left = w.finish()
    problems, summary = w.check()
    print(f"seed {seed}: {summary}, restarts {w.restarts}, errors {w.errors}, "
          f"restart ms {[round(x) for x in restart_ms]}, {time.monotonic() - t0:.1f} s")
    for stuck_id, _ in w.stuck:
        print("\n".join(line for line in read_text(zcd.log_path).splitlines()
                        if stuck_id in line))
    assert not problems, "\n".join(problems[:30])
    assert not w.stuck, f"requests never answered: {w.stuck}"
    assert not left, f"containers still listed: {left}"
    assert w.restarts["kill"] >= 5
    assert summary["acked"] >= CONTAINERS // 2, summary


def test_exec_racing_init_exit_gets_one_reply(zcd, client, events, bundle, cid):
    """PROTOCOL.md: every request gets exactly one final reply.  An exec
    that reaches a container while its init exits must get one (ok, or an
    error), and the container's state directory must go with it."""
    rng = random.Random(seed_from_env(4))
    b = bundle(args=["sleep", "0.3"])
    pending = {}
    ids = []
    for i in range(20):
        c = cid(f"race{i}")
        ids.append(c)
        client.ok("create", id=c, bundle=b)
        time.sleep(rng.uniform(0.15, 0.45))  # aim at the init's exit
        pending[client.send("exec", id=c, pid="e1", args=["true"], env=["PATH=/bin"])] = c
    deadline = time.monotonic() + 20
    while pending and time.monotonic() < deadline:
        try:
            pending.pop(client.recv_any(timeout=deadline - time.monotonic())["rid"], None)
        except TimeoutError:
            break
    unanswered = sorted(pending.values())
    for c in ids:
        events.wait_exit(c)
    leftover = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leftover = [c for c in ids if os.path.exists(container_dir(zcd.state_dir, c))]
        if not leftover:
            break
        time.sleep(0.05)
    assert not unanswered, f"exec requests never answered: {unanswered}"
    assert not leftover, f"state directories left: {leftover}"
