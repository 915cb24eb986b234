"""Issue 3's side-by-side: the time to start 100 `sleep` containers through
zcd (one DEALER, C creates in flight, until every reply is in) against a
loop of bare `<runtime> run -d` on the same bundle, in the same run.
Usage: /usr/bin/python3 bench/start100.py [runtime] [N] [C]"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))


def zcd_starts(state, bundle, runtime, n, inflight):
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"ipc://{state}/zcd.sock")
    sent = done = failed = 0
    t0 = time.monotonic()
    while done < n:
        while sent < n and sent - done < inflight:
            s.send(msgpack.packb({"op": "create", "id": f"s100-{sent}", "bundle": bundle,
                                  "rid": sent}))
            sent += 1
        reply = msgpack.unpackb(s.recv())
        done += 1
        failed += not reply.get("ok")
    elapsed = time.monotonic() - t0
    rss = None
    s.send(msgpack.packb({"op": "metrics"}))
    rss = msgpack.unpackb(s.recv())["rss_bytes"]
    for i in range(n):
        s.send(msgpack.packb({"op": "signal", "id": f"s100-{i}", "signal": 9}))
    for i in range(n):
        s.recv()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s.send(msgpack.packb({"op": "state"}))
        if not msgpack.unpackb(s.recv())["containers"]:
            break
        time.sleep(0.2)
    s.close()
    ctx.term()
    return elapsed, failed, rss


def bare_starts(bundle, runtime, n):
    t0 = time.monotonic()
    failed = 0
    for i in range(n):
        rc = subprocess.run([runtime, "run", "-d", "--bundle", bundle, f"b100-{i}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode
        failed += rc != 0
    elapsed = time.monotonic() - t0
    for i in range(n):
        subprocess.run([runtime, "delete", "-f", f"b100-{i}"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return elapsed, failed


def main():
    runtime = sys.argv[1] if len(sys.argv) > 1 else "crun"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    inflight = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    tmp = tempfile.mkdtemp(prefix="zcd-s100-")
    bundle = os.path.join(tmp, "bundle")
    subprocess.run([os.path.join(BUILD, "zctr"), "spec", "--bundle", bundle, "--", "sleep",
                    "100000"], check=True, stdout=subprocess.DEVNULL)
    state = os.path.join(tmp, "state")
    daemon = subprocess.Popen([os.path.join(BUILD, "zcd"), "--state-dir", state, "--runtime",
                               runtime], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(f"{state}/zcd.sock"):
                break
            time.sleep(0.05)
        z, zfail, rss = zcd_starts(state, bundle, runtime, n, inflight)
        b, bfail = bare_starts(bundle, runtime, n)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{runtime}: {n} containers started through zcd ({inflight} in flight): {z:.2f} s"
          f" ({n / z:.1f}/s, {zfail} failed, daemon RSS {rss / 2**20:.1f} MiB)")
    print(f"{runtime}: {n} x `{runtime} run -d` in a loop: {b:.2f} s ({n / b:.1f}/s, {bfail} failed)")
    print(f"{runtime}: zcd / bare time ratio {z / b:.2f} (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
