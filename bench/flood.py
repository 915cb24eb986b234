#!/usr/bin/python3
"""A client that floods zcd without reading its replies must not slow the
others (issue 14, defect 2).

Measures `version` round trips per second of a well-behaved client (one
request in flight, build/bench/zcdload) while another client sends `state`
requests as fast as it can and never reads, against the same figure with no
flood, in alternating rounds; prints both rates and their ratio (goal
>= 0.9), and the daemon's RSS and CPU during the flood.

usage: bench/flood.py [--json FILE]
Settings (environment): BENCH_FLOOD_ROUNDS=3, BENCH_FLOOD_N=20000 (round
trips per round), BUILD=build.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
ZCD = os.path.join(BUILD, "zcd")
LOAD = os.path.join(BUILD, "bench", "zcdload")


def flooder(endpoint):
    """Runs in its own process: send `state` requests forever, read none."""
    import msgpack
    import zmq
    sock = zmq.Context().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    body = msgpack.packb({"op": "state", "rid": 1})
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        sock.send(body)


def env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def proc_figures(pid):
    """(RSS bytes, CPU seconds) of pid."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def version_rate(state, n):
    out = subprocess.run([LOAD, "call", "-s", state, "-O", "version", "-n", str(n), "-c", "1"],
                         stdout=subprocess.PIPE, text=True, timeout=600, check=True).stdout
    res = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    return res["per_s"]


def rounds(state, daemon_pid, n_rounds, n):
    """Alternating rounds, quiet first; the flooder runs through each flood
    round only.  Also the RSS peak, and the CPU shares (of one core) of the
    daemon and of the flooder during the flood rounds."""
    res = {"quiet": [], "flooded": [], "rss_peak": 0, "daemon_cpu": [], "flooder_cpu": []}
    for _ in range(n_rounds):
        res["quiet"].append(version_rate(state, n))
        fl = subprocess.Popen([sys.executable, __file__, "--flooder", f"ipc://{state}/zcd.sock"])
        try:
            time.sleep(0.5)  # the flood is under way, the daemon dropping it
            (rss0, cpu0), (_, fcpu0) = proc_figures(daemon_pid), proc_figures(fl.pid)
            t0 = time.monotonic()
            res["flooded"].append(version_rate(state, n))
            (rss1, cpu1), (_, fcpu1) = proc_figures(daemon_pid), proc_figures(fl.pid)
            took = time.monotonic() - t0
            res["rss_peak"] = max(res["rss_peak"], rss0, rss1)
            res["daemon_cpu"].append((cpu1 - cpu0) / took)
            res["flooder_cpu"].append((fcpu1 - fcpu0) / took)
        finally:
            fl.terminate()
            fl.wait()
    return res


def main():
    args = sys.argv[1:]
    if args[:1] == ["--flooder"]:
        flooder(args[1])
    json_path = args[1] if args[:1] == ["--json"] and len(args) > 1 else None
    for binary in (ZCD, LOAD):
        if not os.access(binary, os.X_OK):
            print(f"flood: {binary} is missing: run make first", file=sys.stderr)
            return 2
    n_rounds, n = env_int("BENCH_FLOOD_ROUNDS", 3), env_int("BENCH_FLOOD_N", 20000)
    tmp = tempfile.mkdtemp(prefix="zcd-flood-")
    state = os.path.join(tmp, "state")
    os.makedirs(state)
    log = open(os.path.join(tmp, "zcd.log"), "w")
    daemon = subprocess.Popen([ZCD, "--state-dir", state, "--runtime", "runc"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(state, "zcd.sock")):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("zcd did not start")
            time.sleep(0.01)
        base_rss, _ = proc_figures(daemon.pid)
        res = rounds(state, daemon.pid, n_rounds, n)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)
        log.close()
        subprocess.run(["rm", "-rf", "--one-file-system", tmp])
    q = sum(res["quiet"]) / len(res["quiet"])
    f = sum(res["flooded"]) / len(res["flooded"])
    res.update(ratio=f / q, goal_ratio=0.9, rss_base=base_rss, cpus=os.cpu_count())
    print("\nflood: `version` round trips/s of a well-behaved client (1 in flight) while "
          "another floods `state` requests and reads nothing")
    print(f"  no flood       {'  '.join(f'{x:9.0f}' for x in res['quiet'])}   mean {q:9.0f}")
    print(f"  flooded        {'  '.join(f'{x:9.0f}' for x in res['flooded'])}   mean {f:9.0f}")
    print(f"  ratio          {f / q:.3f}   (goal >= 0.9: {'met' if f / q >= 0.9 else 'NOT met'})")
    print(f"  daemon RSS     {base_rss / 2**20:.1f} MiB before, "
          f"{res['rss_peak'] / 2**20:.1f} MiB peak while flooded")
    print(f"  CPU (of a core, {os.cpu_count()} here) while flooded: daemon "
          f"{max(res['daemon_cpu']) * 100:.0f} %, flooder {max(res['flooder_cpu']) * 100:.0f} %")
    if json_path:
        with open(json_path, "w") as out:
            json.dump(res, out, indent=1)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
