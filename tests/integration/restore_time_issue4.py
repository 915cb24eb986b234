"""Measure live restore: N running containers (default 200), then the
daemon is restarted by SIGTERM and by SIGKILL; prints the daemon's own
"restored N containers in X ms" and the time from exec of zcd to its first
`version` answer.  Usage: /usr/bin/python3 tests/integration/restore_time_issue4.py [N] [runtime]"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zmq  # noqa: E402

from conftest import BundleFactory, Daemon, make_rootfs, sweep  # noqa: E402
from restore_util import log_size, restart, restored_line, state_ids  # noqa: E402


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    runtime = sys.argv[2] if len(sys.argv) > 2 else "runc"
    ctx = zmq.Context()
    work = Path(tempfile.mkdtemp(prefix="zcd-rt-w-"))
    d = Daemon(ctx, tempfile.mkdtemp(prefix="zcd-rt-", dir="/tmp"), runtime, log_dir=work)
    d.start()
    b = BundleFactory(work / "bundles", make_rootfs(work / "rootfs"))(args=["sleep", "1000"])
    c = d.client()
    t0 = time.monotonic()
    rids = [c.send("create", id=f"rt{i}", bundle=b) for i in range(n)]
    failed = [r for r in (c.recv(rid, timeout=600)[1] for rid in rids) if not r.get("ok")]
    print(f"{n - len(failed)} containers started in {time.monotonic() - t0:.1f} s "
          f"({runtime}); {len(failed)} failed {failed[:2]}")
    try:
        for how in ("term", "kill", "term"):
            at = log_size(d)
            answer_s = restart(d, how)
            c = d.client()
            listed = len(state_ids(c))
            print(f"restart by SIG{how.upper()}: daemon log says restored {restored_line(d, at)} "
                  f"(containers, ms); exec to first `version` answer {answer_s * 1000:.0f} ms; "
                  f"state lists {listed}")
    finally:
        c = d.client()
        for cid in state_ids(c):
            c.send("signal", id=cid, signal=9)
        deadline = time.monotonic() + 120
        while state_ids(c) and time.monotonic() < deadline:
            time.sleep(0.2)
        d.close_clients()
        d.stop()
        left = sweep(d)
        if left:
            print("left behind:", left)
    ctx.term()


if __name__ == "__main__":
    main()
