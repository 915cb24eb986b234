#!/usr/bin/python3
"""zcd benchmark harness (run through bench/run; stdlib only).

Drives build/zcd with build/bench/zcdload (the wire protocol, many requests
in flight) and the bare runtimes with build/bench/bare, on a busybox bundle
made here, and prints one table; --json FILE writes the same figures.

Settings (environment):
  BENCH_N=60             containers per start run (the issue's full run: 500)
  BENCH_C=1,16           lifecycles in flight
  BENCH_RUNTIMES=crun,runc
  BENCH_M=200            sleep containers for the density figures
  BENCH_COST=10,100      running containers for the cost-growth figures
                         (BENCH_COST=10,100,1000 for the full run)
  BENCH_COST_SAMPLES=30  creates measured at each cost level
  BENCH_STATE_SAMPLES=50 `state` calls measured at each cost level
  BENCH_SUBS=1,10,100    event subscribers
  BENCH_UPDATES=200      pause/resume updates generating the events
  BENCH_RTT_N=20000      `version` calls at 1 in flight (x5 at 64)
  BENCH_MAX_STARTS=      --max-concurrent-starts (default: the daemon's, 2 x CPUs)
  BENCH_SECTIONS=start,control,density,checkpoint,plots   which parts to run
                         (checkpoint: issue 10, its settings are in
                         bench/bench_checkpoint.py; plots: issue 12, the
                         sweeps bench/plot.py draws, settings in
                         bench/bench_plots.py)
  BENCH_FULL=1           the issue's sizes: N=500, COST=10,100,1000
  BENCH_ROUNDS=3         start: each cell runs in rounds of N/ROUNDS, zcd, bare,
                         run, zcd, bare, run...: all three see the same load
  BENCH_STATE_FS=ext4    the daemons' state dirs: ext4 (the temp dir's own file
                         system, whatever it is) or tmpfs (a private tmpfs
                         mounted under the temp dir, unmounted after)
"""
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
ZCD = os.path.join(BUILD, "zcd")
LOAD = os.path.join(BUILD, "bench", "zcdload")
BARE = os.path.join(BUILD, "bench", "bare")
PREFIX = "zb"  # every container id this harness makes starts with "zb-"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (table, goals, machine facts)


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def env_list(name, default, conv=str):
    value = os.environ.get(name, "")
    items = value.split(",") if value.strip() else default
    return [conv(x) for x in items if str(x).strip()]


def settings():
    full = os.environ.get("BENCH_FULL") == "1"
    s = {
        "n": env_int("BENCH_N", 500 if full else 60),
        "cs": env_list("BENCH_C", [1, 16], int),
        "runtimes": env_list("BENCH_RUNTIMES", ["crun", "runc"]),
        "m": env_int("BENCH_M", 200),
        "cost_levels": env_list("BENCH_COST", [10, 100, 1000] if full else [10, 100], int),
        "cost_samples": env_int("BENCH_COST_SAMPLES", 30),
        "state_samples": env_int("BENCH_STATE_SAMPLES", 50),
        "subs": env_list("BENCH_SUBS", [1, 10, 100], int),
        "updates": env_int("BENCH_UPDATES", 200),
        "rtt_n": env_int("BENCH_RTT_N", 20000),
        "max_starts": env_int("BENCH_MAX_STARTS", 2 * (os.cpu_count() or 1)),
        "sections": env_list("BENCH_SECTIONS", ["start", "control", "density",
                                                "checkpoint", "plots"]),
        "rounds": max(1, env_int("BENCH_ROUNDS", 3)),
        "state_fs": os.environ.get("BENCH_STATE_FS", "").strip() or "ext4",
    }
    if s["state_fs"] not in ("ext4", "tmpfs"):
        raise SystemExit(f"bench: BENCH_STATE_FS={s['state_fs']}: ext4 or tmpfs")
    return s


def run_json(argv, timeout=1800):
    """Runs a driver; returns the JSON object on its last stdout line."""
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    out = json.loads(lines[-1])
    if proc.returncode != 0:
        out["exit_status"] = proc.returncode
        if proc.stderr.strip():
            out["stderr"] = proc.stderr.strip()[-500:]
    return out


# ---- bundle -------------------------------------------------------------------

def make_bundles(tmp):
    """A busybox rootfs shared by two bundles: `true` and `sleep`."""
    rootfs = os.path.join(tmp, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    busybox = "/bin/busybox"
    with open(busybox, "rb") as src, open(os.path.join(rootfs, "bin", "busybox"), "wb") as dst:
        dst.write(src.read())
    os.chmod(os.path.join(rootfs, "bin", "busybox"), 0o755)
    for applet in ("sh", "true", "sleep"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    spec_dir = os.path.join(tmp, "spec")
    os.makedirs(spec_dir)
    subprocess.run(["runc", "spec"], cwd=spec_dir, check=True)
    with open(os.path.join(spec_dir, "config.json")) as f:
        spec = json.load(f)
    spec["process"]["terminal"] = False
    spec["root"]["path"] = rootfs
    bundles = {}
    for name, args in (("true", ["true"]), ("sleep", ["sleep", "1000000"])):
        spec["process"]["args"] = args
        path = os.path.join(tmp, "bundle-" + name)
        os.makedirs(path)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(spec, f, indent=1)
        bundles[name] = path
    return bundles


# ---- daemon -------------------------------------------------------------------

MOUNTS = []  # private tmpfs state dirs, unmounted at the end (unmount_all)


def mount_tmpfs(path):
    """A private tmpfs at path (mode 0700: the daemon refuses a state dir
    others can write)."""
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m,mode=0700", "tmpfs", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"BENCH_STATE_FS=tmpfs: mount at {path}: {r.stdout.strip()}")
    MOUNTS.append(path)


def unmount_all():
    """After the shims are gone (their cwd is in the state dir); lazily if
    something still holds it."""
    while MOUNTS:
        path = MOUNTS.pop()
        if subprocess.run(["umount", path], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)


def fs_type(path):
    r = subprocess.run(["stat", "-f", "-c", "%T", path], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    return r.stdout.strip() or "?"


class Daemon:
    state_fs = "ext4"  # BENCH_STATE_FS
    seen_fs = set()    # file system types the state dirs were really on

    def __init__(self, tmp, name, runtime, max_starts):
        self.state = os.path.join(tmp, name)
        self.runtime = runtime
        os.makedirs(self.state)
        if Daemon.state_fs == "tmpfs":
            mount_tmpfs(self.state)
        Daemon.seen_fs.add(fs_type(self.state))
        self.log_path = self.state + ".log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [ZCD, "--state-dir", self.state, "--runtime", runtime,
             "--max-concurrent-starts", str(max_starts)],
            stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        sock = os.path.join(self.state, "zcd.sock")
        while not os.path.exists(sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"zcd did not start; see {self.log_path}")
            time.sleep(0.01)
        run_json([LOAD, "call", "-s", self.state, "-n", "1", "-t", "10"])

    @property
    def pid(self):
        return self.proc.pid

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    drains = []  # every drain's result: lost replies are a protocol anomaly

    def drain(self, timeout=600):
        if self.proc.poll() is None:
            out = run_json([LOAD, "drain", "-s", self.state, "-p", PREFIX, "-c", "16",
                            "-t", str(timeout)], timeout=timeout + 60)
            Daemon.drains.append(out)
            return out
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log(f"zcd {self.pid} ignored SIGTERM for 15 s: SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def shims_under(state_dir):
    """(pid, cwd, rss_kib, pss_kib) of every zcd-shim working under state_dir
    (a shim's cwd is <state-dir>/<container>/<process>)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "zcd-shim":
                    continue
            cwd = os.readlink(f"/proc/{entry}/cwd")
            if not cwd.startswith(state_dir + "/"):
                continue
            rss = pss = 0
            with open(f"/proc/{entry}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss = int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss = int(line.split()[1])
            found.append((int(entry), cwd, rss, pss))
        except OSError:
            continue  # exited while we looked
    return found


def cleanup_leftovers(tmp):
    """Whatever a crashed run left: runtime containers named zb-*, shims
    working under tmp (killed by pid)."""
    for runtime in ("crun", "runc"):
        try:
            out = subprocess.run([runtime, "list", "-q"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        for cid in out.split():
            if cid.startswith(PREFIX + "-"):
                subprocess.run([runtime, "delete", "-f", cid], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60)
    for pid, _, _, _ in shims_under(tmp):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# ---- sections -----------------------------------------------------------------

def round_sizes(n, rounds):
    """N split into `rounds` runs (at most N), summing to N."""
    rounds = max(1, min(rounds, n))
    base, extra = divmod(n, rounds)
    return [base + (1 if i < extra else 0) for i in range(rounds)]


def merge_rounds(runs):
    """One driver result from the results of its rounds: counts and wall
    time add up (so per_s = all completed / all wall time); latency
    percentiles are the rounds' n-weighted means (the drivers report no
    samples), max the largest; per_s of each round is kept."""
    out = dict(runs[0])
    for key in ("n", "ok", "failed", "lost", "unfinished", "elapsed_s"):
        if key in out:
            out[key] = sum(r.get(key, 0) for r in runs)
    out["per_s"] = out["ok"] / out["elapsed_s"] if out.get("elapsed_s") else 0.0
    for key, value in runs[0].items():
        if isinstance(value, dict) and "p50" in value:
            total = sum(r[key]["n"] for r in runs)
            merged = {"n": total, "max": max(r[key]["max"] for r in runs)}
            for q in ("p50", "p95", "p99", "mean"):
                merged[q] = (sum(r[key][q] * r[key]["n"] for r in runs) / total
                             if total else 0.0)
            out[key] = merged
    out["first_error"] = next((r["first_error"] for r in runs if r.get("first_error")), "")
    out["rounds_per_s"] = [r["per_s"] for r in runs]
    return out


def start_cell(s, daemon, bundles, runtime, c, n_cell=None, extra=None):
    """One runtime x C cell, in rounds alternating zcd, bare lifecycle and
    bare run, so a change in the machine's load hits all three alike.
    n_cell overrides N; extra ({key: fn(n, c, tag) -> driver result}) adds
    peers to each round after those three (section `plots`: containerd)."""
    extra = extra or {}
    runs = {"zcd": [], "bare_lifecycle": [], "bare_run": []}
    runs.update({key: [] for key in extra})
    sizes = round_sizes(n_cell or s["n"], s["rounds"])
    for i, n in enumerate(sizes):
        tag = f"{runtime}-c{c}-r{i}"
        names = ", ".join(["zcd", "bare", "run"] + list(extra))
        log(f"start: {runtime} C={c} round {i + 1}/{len(sizes)}: {names} ({n} each)")
        runs["zcd"].append(run_json([LOAD, "start", "-s", daemon.state, "-b", bundles["true"],
                                     "-n", str(n), "-c", str(c), "-r", runtime,
                                     "-p", f"{PREFIX}-s-{tag}"]))
        runs["bare_lifecycle"].append(run_json(
            [BARE, "-r", runtime, "-b", bundles["true"], "-n", str(n), "-c", str(c),
             "-p", f"{PREFIX}-bl-{tag}", "-m", "lifecycle"]))
        runs["bare_run"].append(run_json(
            [BARE, "-r", runtime, "-b", bundles["true"], "-n", str(n), "-c", str(c),
             "-p", f"{PREFIX}-br-{tag}", "-m", "run"]))
        for key, fn in extra.items():
            runs[key].append(fn(n, c, tag))
    row = {"runtime": runtime, "c": c, "rounds": len(sizes)}
    for key, results in runs.items():
        row[key] = merge_rounds(results)
    return row


def start_section(s, tmp, bundles, res):
    """zcd vs bare runtime, per runtime and concurrency."""
    res["start"] = []
    for runtime in s["runtimes"]:
        daemon = Daemon(tmp, f"state-start-{runtime}", runtime, s["max_starts"])
        try:
            # Warm-up: page cache, the runtime's first cgroup setup.
            run_json([LOAD, "start", "-s", daemon.state, "-b", bundles["true"], "-n", "3",
                      "-c", "1", "-p", f"{PREFIX}-warm-{runtime}"])
            run_json([BARE, "-r", runtime, "-b", bundles["true"], "-n", "3", "-c", "1",
                      "-p", f"{PREFIX}-warmb-{runtime}"])
            for c in s["cs"]:
                res["start"].append(start_cell(s, daemon, bundles, runtime, c))
            daemon.drain()
        finally:
            daemon.stop()


def control_section(s, daemon, bundles, res):
    ctl = res["control"] = {"version": [], "fanout": []}
    for c, n in ((1, s["rtt_n"]), (64, 5 * s["rtt_n"])):
        log(f"control: version x{n}, {c} in flight")
        ctl["version"].append(run_json([LOAD, "call", "-s", daemon.state, "-O", "version",
                                        "-n", str(n), "-c", str(c)]))
    nids = 8
    run_json([LOAD, "start", "-s", daemon.state, "-b", bundles["sleep"], "-n", str(nids),
              "-c", str(nids), "-W", "-p", f"{PREFIX}-ev"])
    ids = ",".join(f"{PREFIX}-ev-{i}" for i in range(nids))
    for subs in s["subs"]:
        log(f"control: event fan-out to {subs} subscribers")
        ctl["fanout"].append(run_json([LOAD, "fanout", "-s", daemon.state, "-S", str(subs),
                                       "-n", str(s["updates"]), "-c", "16", "-i", ids]))
    daemon.drain()


def density_section(s, daemon, bundles, res):
    """Fills the daemon with sleep containers up to each cost level and M:
    measures create and state latency at the cost levels, memory at M."""
    res["cost"] = []
    levels = sorted(set(s["cost_levels"]) | {s["m"]})
    base_rss = daemon.rss_kib()
    base_fds = daemon.open_fds()
    running = 0
    for level in levels:
        log(f"density: filling to {level} sleep containers")
        fill = run_json([LOAD, "start", "-s", daemon.state, "-b", bundles["sleep"],
                         "-n", str(level - running), "-c", "8", "-W", "-o", str(running),
                         "-p", f"{PREFIX}-f", "-t", "900"], timeout=1000)
        running += fill["ok"]
        short = running < level
        if short:
            log(f"density: the machine took {running} of {level}: {fill.get('first_error')}")
        if level in s["cost_levels"] or short:
            res["cost"].append(cost_point(s, daemon, bundles, level, running, fill))
        if level == s["m"] or (short and "density" not in res):
            res["density"] = density_point(daemon, level, running, base_rss, base_fds)
        if short:
            break
    log(f"density: removing {running} containers")
    res["density_drain"] = daemon.drain(timeout=900)


def cost_point(s, daemon, bundles, level, running, fill):
    log(f"cost: {running} running: create and state latency")
    create = run_json([LOAD, "start", "-s", daemon.state, "-b", bundles["true"],
                       "-n", str(s["cost_samples"]), "-c", "1",
                       "-p", f"{PREFIX}-c{level}"])
    state = run_json([LOAD, "call", "-s", daemon.state, "-O", "state",
                      "-n", str(s["state_samples"]), "-c", "1"])
    return {"level": level, "running": running, "fill": fill, "create": create, "state": state}


def density_point(daemon, level, running, base_rss, base_fds):
    shims = shims_under(daemon.state)
    rss = daemon.rss_kib()
    per_container = {}
    for _, cwd, r, p in shims:
        key = os.path.dirname(cwd)
        acc = per_container.setdefault(key, [0, 0, 0])
        acc[0] += 1
        acc[1] += r
        acc[2] += p
    return {
        "level": level, "running": running,
        "daemon_rss_kib": rss, "daemon_rss_base_kib": base_rss,
        "daemon_fds": daemon.open_fds(), "daemon_fds_base": base_fds,
        "bytes_per_container": (rss - base_rss) * 1024 / running if running else 0,
        "shims": len(shims),
        "shim_rss_kib": benchlib.summary([r for _, _, r, _ in shims]),
        "shim_pss_kib": benchlib.summary([p for _, _, _, p in shims]),
        "containers_with_shims": len(per_container),
        "shim_processes_per_container": benchlib.summary([a[0] for a in per_container.values()]),
        "container_shim_rss_kib": benchlib.summary([a[1] for a in per_container.values()]),
        "container_shim_pss_kib": benchlib.summary([a[2] for a in per_container.values()]),
    }


def main():
    json_path = None
    args = sys.argv[1:]
    while args:
        if args[0] == "--json" and len(args) > 1:
            json_path, args = args[1], args[2:]
        else:
            print("usage: bench/run [--json FILE]   (settings: see bench/bench.py)",
                  file=sys.stderr)
            return 2
    for binary in (ZCD, LOAD, BARE):
        if not os.access(binary, os.X_OK):
            print(f"bench: {binary} is missing: run make first", file=sys.stderr)
            return 2
    s = settings()
    Daemon.state_fs = s["state_fs"]
    res = {"settings": s, "machine": benchlib.machine(), "started": time.time()}
    tmp = tempfile.mkdtemp(prefix="zcd-bench-")
    daemon = None
    try:
        bundles = make_bundles(tmp)
        res["loadavg"] = [benchlib.loadavg("begin")]
        if "start" in s["sections"]:
            start_section(s, tmp, bundles, res)
            res["loadavg"].append(benchlib.loadavg("after start"))
        if "control" in s["sections"] or "density" in s["sections"]:
            daemon = Daemon(tmp, "state-crun", "crun", s["max_starts"])
            if "control" in s["sections"]:
                control_section(s, daemon, bundles, res)
                res["loadavg"].append(benchlib.loadavg("after control"))
            if "density" in s["sections"]:
                density_section(s, daemon, bundles, res)
                res["loadavg"].append(benchlib.loadavg("after density"))
        if "checkpoint" in s["sections"]:
            import bench_checkpoint  # noqa: E402  (python3-zmq, only here)
            bench_checkpoint.section(sys.modules[__name__], s, tmp, bundles, res)
            res["loadavg"].append(benchlib.loadavg("after checkpoint"))
        if "plots" in s["sections"]:
            import bench_plots  # noqa: E402  (issue 12: what bench/plot.py draws)
            bench_plots.section(sys.modules[__name__], s, tmp, bundles, res)
            res["loadavg"].append(benchlib.loadavg("after plots"))
    finally:
        if daemon:
            try:
                daemon.drain(timeout=300)
            except Exception as e:  # the table still matters more
                log(f"drain failed: {e}")
            daemon.stop()
        cleanup_leftovers(tmp)
        unmount_all()
        subprocess.run(["rm", "-rf", "--one-file-system", tmp])
    res["drains"] = Daemon.drains
    res["state_fs_seen"] = sorted(Daemon.seen_fs)
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
