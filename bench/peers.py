#!/usr/bin/python3
"""zcd against containerd 1.6 (run through bench/peers; stdlib only).

A private containerd (root, state, socket and config under a temp dir)
runs the start benchmark through `ctr run --rm --rootfs` on the same busybox
rootfs, N and C as bench/run, with runc and with crun as the runtime binary
of io.containerd.runc.v2; zcd runs the same N and C in the same run, and the
table gives zcd / containerd.  Then M `sleep` containers through `ctr run -d`
for containerd's shim RSS/PSS.

Settings: BENCH_N, BENCH_C, BENCH_RUNTIMES, BENCH_MAX_STARTS as bench/run;
BENCH_PEERS_M=100 containerd containers for the memory figures.
"""
import concurrent.futures
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import benchlib  # noqa: E402

NS = "zcdbench"  # containerd namespace


class Containerd:
    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "containerd")
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "containerd.sock")
        config = os.path.join(self.dir, "config.toml")
        with open(config, "w") as f:
            f.write('version = 2\n'
                    f'root = "{self.dir}/root"\n'
                    f'state = "{self.dir}/state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    '[grpc]\n'
                    f'  address = "{self.sock}"\n'
                    '[ttrpc]\n'
                    f'  address = "{self.sock}.ttrpc"\n')
        self.log = open(self.dir + ".log", "w")
        self.proc = subprocess.Popen(["containerd", "--config", config],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while self.ctr(["version"], check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start; see {self.dir}.log")
            time.sleep(0.1)

    def ctr(self, args, check=True, timeout=120):
        return subprocess.run(["ctr", "--address", self.sock, "--namespace", NS] + args,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              check=check, timeout=timeout)

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        for cid in self.ctr(["task", "ls", "-q"], check=False).stdout.split():
            self.ctr(["task", "kill", "-s", "SIGKILL", cid], check=False)
            self.ctr(["task", "delete", "-f", cid], check=False)
        for cid in self.ctr(["container", "ls", "-q"], check=False).stdout.split():
            self.ctr(["container", "delete", cid], check=False)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        # Shims outlive containerd by design: end ours (by pid).
        for pid, _, _ in shims(self.dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        # The empty dirs containerd made for our namespace: its cgroup parents
        # and the shim's runc root (rmdir: anything still in them stays).
        for path in (glob.glob(f"/sys/fs/cgroup/*/{NS}") +
                     [f"/sys/fs/cgroup/{NS}", f"/run/containerd/runc/{NS}"]):
            try:
                os.rmdir(path)
            except OSError:
                pass


def shims(containerd_dir):
    """(pid, rss_kib, pss_kib) of containerd-shim-runc-v2 processes serving
    our containerd (its socket path is on their command line)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            if not cmd or not cmd[0].endswith(b"containerd-shim-runc-v2"):
                continue
            if containerd_dir.encode() not in b" ".join(cmd):
                continue
            rss = pss = 0
            with open(f"/proc/{entry}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss = int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss = int(line.split()[1])
            out.append((int(entry), rss, pss))
        except OSError:
            continue
    return out


def ctr_start(cd, rootfs, runtime, n, c, prefix, spawned=None):
    """n `ctr run --rm` of `true`, c at a time: containers/s and latencies.
    spawned (a dict) gets each id's wall-clock time just before its `ctr`
    was spawned (bench/bench_plots.py matches them with containerd's
    /tasks/start events)."""
    binary = subprocess.run(["which", runtime], stdout=subprocess.PIPE, text=True).stdout.strip()

    def one(i):
        if spawned is not None:
            spawned[f"{prefix}-{i}"] = time.time()
        t0 = time.monotonic()
        p = cd.ctr(["run", "--rm", "--runc-binary", binary, "--rootfs", rootfs,
                    f"{prefix}-{i}", "/bin/true"], check=False, timeout=300)
        return time.monotonic() - t0, p.returncode, p.stderr.strip()

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=c) as pool:
        results = list(pool.map(one, range(n)))
    secs = time.monotonic() - t0
    ok = [r for r in results if r[1] == 0]
    errors = [r[2] for r in results if r[1] != 0]
    lat = sorted(int(r[0] * 1e9) for r in ok)
    return {"mode": "ctr run --rm", "runtime": runtime, "n": n, "c": c, "ok": len(ok),
            "failed": n - len(ok), "elapsed_s": secs, "per_s": len(ok) / secs if secs else 0,
            "lifecycle_ms": latency(lat), "first_error": errors[0][-300:] if errors else ""}


def latency(sorted_ns):
    n = len(sorted_ns)

    def pct(q):
        if not n:
            return 0.0
        rank = min(max(int(q * n + 0.999999), 1), n)
        return sorted_ns[rank - 1] / 1e6

    return {"n": n, "p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99), "max": pct(1.0),
            "mean": sum(sorted_ns) / n / 1e6 if n else 0.0}


def ctr_density(cd, rootfs, m):
    binary = subprocess.run(["which", "crun"], stdout=subprocess.PIPE, text=True).stdout.strip()
    base = cd.rss_kib()
    running = 0
    first_error = ""
    for i in range(m):
        p = cd.ctr(["run", "-d", "--runc-binary", binary, "--rootfs", rootfs,
                    f"zb-d-{i}", "/bin/sleep", "1000000"], check=False)
        if p.returncode != 0:
            first_error = p.stderr.strip()[-300:]
            break
        running += 1
    found = shims(cd.dir)
    return {"level": m, "running": running, "runtime": "crun", "first_error": first_error,
            "daemon_rss_kib": cd.rss_kib(), "daemon_rss_base_kib": base,
            "shim_rss_kib": benchlib.summary([r for _, r, _ in found]),
            "shim_pss_kib": benchlib.summary([p for _, _, p in found])}


def main():
    json_path = None
    if sys.argv[1:2] == ["--json"] and len(sys.argv) > 2:
        json_path = sys.argv[2]
    elif len(sys.argv) > 1:
        print("usage: bench/peers [--json FILE]", file=sys.stderr)
        return 2
    s = bench.settings()
    m = bench.env_int("BENCH_PEERS_M", 100)
    res = {"settings": dict(s, peers_m=m), "machine": benchlib.machine(),
           "started": time.time(), "peers": {"start": []}}
    res["machine"]["containerd"] = benchlib._first_line(["containerd", "--version"])
    tmp = tempfile.mkdtemp(prefix="zcd-peers-")
    cd = None
    try:
        bundles = bench.make_bundles(tmp)
        rootfs = os.path.join(tmp, "rootfs")
        cd = Containerd(tmp)
        for runtime in s["runtimes"]:
            daemon = bench.Daemon(tmp, f"state-{runtime}", runtime, s["max_starts"])
            try:
                for c in s["cs"]:
                    bench.log(f"peers: {runtime} C={c}: zcd")
                    z = bench.run_json([bench.LOAD, "start", "-s", daemon.state,
                                        "-b", bundles["true"], "-n", str(s["n"]), "-c", str(c),
                                        "-p", f"{bench.PREFIX}-p-{runtime}-c{c}"])
                    bench.log(f"peers: {runtime} C={c}: containerd")
                    k = ctr_start(cd, rootfs, runtime, s["n"], c, f"zb-k-{runtime}-c{c}")
                    res["peers"]["start"].append({
                        "runtime": runtime, "c": c, "containerd": k, "zcd": z,
                        "zcd_per_s": z["per_s"],
                        "zcd_over_containerd": z["per_s"] / k["per_s"] if k["per_s"] else 0})
                daemon.drain()
            finally:
                daemon.stop()
        bench.log(f"peers: containerd density, {m} sleep containers")
        res["peers"]["density"] = ctr_density(cd, rootfs, m)
    finally:
        if cd:
            cd.stop()
        bench.cleanup_leftovers(tmp)
        subprocess.run(["rm", "-rf", "--one-file-system", tmp])
    res["elapsed_s"] = time.time() - res["started"]
    res["goals"] = benchlib.goals(res)
    print(benchlib.table(res))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
