"""Section `plots` of bench/run (issue 12): the series bench/plot.py draws.

Start: per runtime and concurrency C, zcd, the bare runtime (create, start,
wait, delete; and one `run`) and containerd (`ctr run --rm`, when
containerd is installed) in alternating rounds (bench.start_cell), so load
from other work on the machine hits all of them alike.  containerd's start
latency is `ctr` spawned -> containerd's /tasks/start event for that id
(`ctr events`, wall clock); its throughput counts whole `ctr run --rm`s.

Memory: a fresh zcd and a fresh containerd are filled with `sleep`
containers to each level; at each, the daemon's and all its shims'
Rss and Pss (smaps_rollup) divided by the running containers.  The bare
runtime leaves no process behind a running container: its cost is 0.

Settings (environment; BENCH_RUNTIMES, BENCH_ROUNDS and BENCH_MAX_STARTS
as bench/run):
  BENCH_PLOT_C=1,2,4,8,16         lifecycles in flight
  BENCH_PLOT_N=30                 containers per cell, at least; a cell has at
                                  least ROUNDS x 2 x C, so that C lifecycles
                                  stay in flight for most of each round
  BENCH_PLOT_M=10,50,100,200      running containers for the memory series
  BENCH_PLOT_MEM_RUNTIME=crun     the runtime of the memory series
"""
import calendar
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import threading
import time


def settings(bench, s):
    return {
        "cs": bench.env_list("BENCH_PLOT_C", [1, 2, 4, 8, 16], int),
        "n": bench.env_int("BENCH_PLOT_N", 30),
        "levels": sorted(bench.env_list("BENCH_PLOT_M", [10, 50, 100, 200], int)),
        "mem_runtime": os.environ.get("BENCH_PLOT_MEM_RUNTIME", "").strip() or "crun",
        "runtimes": s["runtimes"], "rounds": s["rounds"], "max_starts": s["max_starts"],
    }


def event_time(date, clock, offset):
    """Seconds since the epoch of Go's time.String() pieces, e.g.
    `2026-12-02` `13:28:26.83669506` `+0000`."""
    whole, _, frac = clock.partition(".")
    t = calendar.timegm(time.strptime(f"{date} {whole}", "%Y-%m-%d %H:%M:%S"))
    sign = -1 if offset.startswith("-") else 1
    t -= sign * (int(offset[1:3]) * 3600 + int(offset[3:5]) * 60)
    return t + (float("0." + frac) if frac else 0.0)


class CtrEvents:
    """`ctr events` read by a thread: when containerd published each
    container's /tasks/start."""

    def __init__(self, cd):
        self.started = {}
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(["ctr", "--address", cd.sock, "events"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        # date clock offset zone namespace topic event-json
        for line in self.proc.stdout:
            parts = line.rstrip("\n").split(" ", 6)
            if len(parts) < 7 or parts[5] != "/tasks/start":
                continue
            try:
                cid = json.loads(parts[6]).get("container_id")
                when = event_time(parts[0], parts[1], parts[2])
            except (ValueError, IndexError):
                continue
            with self.cond:
                self.started[cid] = when
                self.cond.notify_all()

    def wait(self, ids, timeout):
        """{id: start time} for those of ids seen within timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(i in self.started for i in ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return {i: self.started[i] for i in ids if i in self.started}

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def containerd_cell(peers, cd, events, rootfs, runtime):
    """fn(n, c, tag) for bench.start_cell: one round of `ctr run --rm`."""

    def run(n, c, tag):
        spawned = {}
        out = peers.ctr_start(cd, rootfs, runtime, n, c, f"zb-k-{tag}", spawned)
        seen = events.wait(list(spawned), 10)
        lat = sorted(int((seen[i] - t) * 1e9) for i, t in spawned.items() if i in seen)
        out["start_ms"] = peers.latency(lat)
        out["start_events_missing"] = len(spawned) - len(seen)
        return out

    return run


def warm_containerd(peers, cd, events, rootfs, runtime):
    """A first container per runtime (page cache, the shim binary), until one
    of them proves the event stream is live."""
    for i in range(5):
        spawned = {}
        peers.ctr_start(cd, rootfs, runtime, 1, 1, f"zb-kw-{runtime}-{i}", spawned)
        if events.wait(list(spawned), 5):
            return True
    return False


def start_series(bench, peers, p, tmp, bundles, cd, events):
    rows = []
    rootfs = os.path.join(tmp, "rootfs")
    s = {"n": p["n"], "rounds": p["rounds"]}
    for runtime in p["runtimes"]:
        daemon = bench.Daemon(tmp, f"state-plots-{runtime}", runtime, p["max_starts"])
        try:
            bench.run_json([bench.LOAD, "start", "-s", daemon.state, "-b", bundles["true"],
                            "-n", "3", "-c", "1", "-p", f"{bench.PREFIX}-pw-{runtime}"])
            bench.run_json([bench.BARE, "-r", runtime, "-b", bundles["true"], "-n", "3",
                            "-c", "1", "-p", f"{bench.PREFIX}-pwb-{runtime}"])
            extra = {}
            if cd:
                if not warm_containerd(peers, cd, events, rootfs, runtime):
                    bench.log("plots: no /tasks/start event from `ctr events`: "
                              "containerd's start latency will be missing")
                extra["containerd"] = containerd_cell(peers, cd, events, rootfs, runtime)
            for c in p["cs"]:
                n_cell = max(p["n"], p["rounds"] * 2 * c)
                rows.append(bench.start_cell(s, daemon, bundles, runtime, c, n_cell, extra))
                rows[-1]["load1"] = bench.benchlib.loadavg("")["load1"]
            daemon.drain()
        finally:
            daemon.stop()
    return rows


def rss_pss(pid):
    """(Rss, Pss) KiB of one process from smaps_rollup; (0, 0) if gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def memory_point(level, running, daemon_pid, shim_rss_pss):
    d_rss, d_pss = rss_pss(daemon_pid)
    s_rss = sum(r for r, _ in shim_rss_pss)
    s_pss = sum(p for _, p in shim_rss_pss)
    per = running or 1
    return {"level": level, "running": running, "daemon_rss_kib": d_rss,
            "daemon_pss_kib": d_pss, "shims": len(shim_rss_pss), "shim_rss_kib": s_rss,
            "shim_pss_kib": s_pss, "per_container_rss_kib": (d_rss + s_rss) / per,
            "per_container_pss_kib": (d_pss + s_pss) / per}


def zcd_memory(bench, p, tmp, bundles):
    daemon = bench.Daemon(tmp, "state-plots-mem", p["mem_runtime"], p["max_starts"])
    points, running = [], 0
    try:
        for level in p["levels"]:
            bench.log(f"plots: zcd memory, filling to {level} sleep containers")
            fill = bench.run_json([bench.LOAD, "start", "-s", daemon.state,
                                   "-b", bundles["sleep"], "-n", str(level - running),
                                   "-c", "8", "-W", "-o", str(running),
                                   "-p", f"{bench.PREFIX}-pm", "-t", "900"], timeout=1000)
            running += fill["ok"]
            shims = [(r, q) for _, _, r, q in bench.shims_under(daemon.state)]
            points.append(memory_point(level, running, daemon.pid, shims))
            if running < level:
                bench.log(f"plots: zcd took {running} of {level}: {fill.get('first_error')}")
                break
        daemon.drain(timeout=900)
    finally:
        daemon.stop()
    return points


def containerd_memory(bench, peers, p, cd, rootfs):
    binary = shutil.which(p["mem_runtime"]) or p["mem_runtime"]
    points, running = [], 0

    def one(i):
        r = cd.ctr(["run", "-d", "--runc-binary", binary, "--rootfs", rootfs,
                    f"zb-km-{i}", "/bin/sleep", "1000000"], check=False, timeout=300)
        return r.returncode, r.stderr.strip()[-300:]

    for level in p["levels"]:
        bench.log(f"plots: containerd memory, filling to {level} sleep containers")
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(one, range(running, level)))
        running += sum(1 for rc, _ in results if rc == 0)
        found = [(r, q) for _, r, q in peers.shims(cd.dir)]
        point = memory_point(level, running, cd.proc.pid, found)
        point["first_error"] = next((e for rc, e in results if rc != 0), "")
        points.append(point)
        if running < level:
            break
    return points


def remove_containers(cd):
    """Ends what ctr run -d left, 4 at a time (Containerd.stop goes one by one)."""

    def one(cid):
        cd.ctr(["task", "delete", "-f", cid], check=False)
        cd.ctr(["container", "delete", cid], check=False)

    ids = cd.ctr(["container", "ls", "-q"], check=False).stdout.split()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, ids))


def section(bench, s, tmp, bundles, res):
    # peers.py imports `bench`: let it share this run's module (bench.py may be __main__).
    sys.modules.setdefault("bench", bench)
    import peers  # noqa: E402
    p = settings(bench, s)
    out = res["plots"] = {"settings": p, "started": time.time(), "containerd": None}
    have_ctr = shutil.which("containerd") and shutil.which("ctr")
    if have_ctr:
        out["containerd"] = bench.benchlib._first_line(["containerd", "--version"])
    else:
        bench.log("plots: containerd is not installed (bench/peers installs it): "
                  "its series are left out")
    rootfs = os.path.join(tmp, "rootfs")
    cd = events = None
    try:
        if have_ctr:
            os.makedirs(os.path.join(tmp, "plots-start"))
            cd = peers.Containerd(os.path.join(tmp, "plots-start"))
            events = CtrEvents(cd)
        out["start"] = start_series(bench, peers, p, tmp, bundles, cd, events)
    finally:
        if events:
            events.stop()
        if cd:
            cd.stop()
    out["memory"] = {"zcd": zcd_memory(bench, p, tmp, bundles), "containerd": []}
    if have_ctr:
        # A fresh containerd: the start series' thousand containers do not count.
        os.makedirs(os.path.join(tmp, "plots-mem"))
        cd = peers.Containerd(os.path.join(tmp, "plots-mem"))
        try:
            out["memory"]["containerd"] = containerd_memory(bench, peers, p, cd, rootfs)
        finally:
            bench.log("plots: stopping containerd and its containers")
            remove_containers(cd)
            cd.stop()
    out["elapsed_s"] = time.time() - out["started"]
