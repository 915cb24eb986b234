"""The `checkpoint` section of bench/bench.py (issue 10).

1. Checkpoint and restore latency of a small container (busybox `sleep`) and
   of one holding BENCH_CP_MIB MiB of touched anonymous memory
   (build/bench/memhold), through zcd (`checkpoint_create` with exit=true,
   then `create` with `checkpoint`: request -> reply) and through the bare
   runtime (`<runtime> checkpoint --image-path D id`, then `<runtime> restore
   -d --image-path D -b bundle id2`, the container's stdio pipes, as the
   shim gives them).  The cells alternate round by round (and which of zcd
   and bare goes first), so both see the same machine.
2. The shim's stdio relay: VmRSS of a container's zcd-shim idle and after
   the container wrote BENCH_RELAY_MIB MiB to stdout (a regular file), the
   shim's CPU time per MiB relayed, and the time the container takes to
   write it, next to the bare runtime where the container writes straight
   into the file.

Settings (environment):
  BENCH_CP_N=10          checkpoint+restore pairs per cell
  BENCH_CP_MIB=256       the big container's touched memory
  BENCH_RELAY_MIB=64     written to stdout per relay round
  BENCH_RELAY_N=3        relay rounds per runtime

Talks the wire protocol with python3-zmq and python3-msgpack (which `make
deps` installs for the integration tests); the rest of the bench stays
stdlib only."""
import json
import os
import shutil
import subprocess
import time

SMALL, BIG = "small", "big"
CG_ROOT = "/sys/fs/cgroup"


def settings():
    def env_int(name, default):
        value = os.environ.get(name, "").strip()
        return int(value) if value else default
    return {"n": env_int("BENCH_CP_N", 10), "mib": env_int("BENCH_CP_MIB", 256),
            "relay_mib": env_int("BENCH_RELAY_MIB", 64),
            "relay_n": env_int("BENCH_RELAY_N", 3)}


def pct(values):
    """p50/p95/max/mean of samples (nearest rank)."""
    v = sorted(values)
    if not v:
        return {"n": 0, "p50": 0.0, "p95": 0.0, "max": 0.0, "mean": 0.0}
    rank = lambda q: v[min(len(v) - 1, max(0, int(round(q * len(v) + 0.5)) - 1))]
    return {"n": len(v), "p50": rank(0.50), "p95": rank(0.95), "max": v[-1],
            "mean": sum(v) / len(v)}


def ms_since(t0):
    return (time.monotonic() - t0) * 1000.0


def wait_until(pred, timeout, what, step=0.005):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(step)


# ---- /proc --------------------------------------------------------------------

def proc_status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_cpu(pid):
    """(utime+stime in clock ticks, schedstat run time in ns) of pid."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/schedstat") as f:
        run_ns = int(f.read().split()[0])
    return int(rest[11]) + int(rest[12]), run_ns


def dir_mib(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total / 2**20


def criu_ready(log, timeout=240):
    """True once `criu check` says "Looks good"; waits while criu is missing
    (being rebuilt), gives up at once on a CRIU that runs and says no."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = subprocess.run(["criu", "check"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=60)
            if "Looks good" in r.stdout:
                return True
            why = (r.stdout.strip().splitlines() or ["?"])[-1]
            log(f"checkpoint: skipped: criu check: {why}")
            return False
        except (OSError, subprocess.TimeoutExpired) as e:
            why = str(e)
        if time.monotonic() > deadline:
            log(f"checkpoint: skipped: criu check: {why}")
            return False
        log(f"checkpoint: criu not there ({why}); waiting")
        time.sleep(5)


def sweep_cgroups(prefix):
    """rmdir every empty cgroup dir named prefix* in every hierarchy; returns
    the container names whose dirs were there (crun's restore under a new
    id leaves the old id's dirs behind)."""
    names = set()
    for ctrl in sorted(os.listdir(CG_ROOT)):
        base = os.path.join(CG_ROOT, ctrl)
        if os.path.islink(base) or not os.path.isdir(base):
            continue
        for dirpath, _, _ in os.walk(base, topdown=False):
            name = os.path.basename(dirpath)
            if name.startswith(prefix):
                names.add(name)
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass
    return sorted(names)


# ---- a wire-protocol client ---------------------------------------------------

class Wire:
    """One DEALER on the daemon's command socket and one SUB on its events."""

    def __init__(self, state_dir):
        import msgpack
        import zmq
        self.zmq, self.msgpack = zmq, msgpack
        self.ctx = zmq.Context()
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(f"ipc://{state_dir}/zcd.sock")
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(f"ipc://{state_dir}/events.sock")
        self.rid = 0
        self.exits = set()
        # A heartbeat proves the subscription is in place (PUB drops what
        # it sends before that).
        self.wait_event(lambda topic, ev: topic == "/heartbeat", 10)

    def close(self):
        self.dealer.close(0)
        self.sub.close(0)
        self.ctx.term()

    def call(self, op, timeout=120, **keys):
        """The final reply to one request (the map with "ok")."""
        self.rid += 1
        body = dict(keys, op=op, rid=self.rid)
        self.dealer.send(self.msgpack.packb(body, use_bin_type=True))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.dealer.poll(int(left * 1000) + 1):
                raise TimeoutError(f"{op}: no reply within {timeout} s")
            reply = self.msgpack.unpackb(self.dealer.recv_multipart()[-1], raw=False,
                                         strict_map_key=False)
            if reply.get("rid") == self.rid and "ok" in reply:
                return reply

    def wait_event(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sub.poll(int(left * 1000) + 1):
                raise TimeoutError(f"no such event within {timeout} s")
            frames = self.sub.recv_multipart()
            topic = frames[0].decode()
            ev = self.msgpack.unpackb(frames[-1], raw=False, strict_map_key=False)
            if topic.endswith("/exit") and ev.get("pid") == "init":
                self.exits.add(ev.get("id"))
            if pred(topic, ev):
                return ev

    def wait_exit(self, cid, timeout=60):
        if cid not in self.exits:
            self.wait_event(lambda topic, ev: cid in self.exits, timeout)
        self.exits.discard(cid)


def err_text(reply):
    e = reply.get("error") or {}
    return f"{e.get('code')}: {e.get('message')}"


def init_pid(reply):
    c = reply.get("container") or {}
    for p in c.get("processes") or []:
        if p.get("pid") == "init" and p.get("system_pid"):
            return p["system_pid"]
    return (c.get("pids") or [0])[0]


# ---- bundles ------------------------------------------------------------------

def make_bundles(tmp, sleep_bundle, memhold, mib, relay_mib):
    """The sleep bundle's spec with other args, on the same rootfs (memhold
    copied into it)."""
    with open(os.path.join(sleep_bundle, "config.json")) as f:
        spec = json.load(f)
    rootfs = spec["root"]["path"]
    shutil.copy(memhold, os.path.join(rootfs, "bin", "memhold"))
    os.chmod(os.path.join(rootfs, "bin", "memhold"), 0o755)
    relay = (f"trap 'busybox head -c {relay_mib * 2**20} /dev/zero' USR1; "
             "while :; do sleep 0.05; done")
    out = {SMALL: sleep_bundle}
    for name, args in ((BIG, ["/bin/memhold", str(mib)]), ("relay", ["sh", "-c", relay])):
        spec["process"]["args"] = args
        path = os.path.join(tmp, "bundle-cp-" + name)
        os.makedirs(path)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(spec, f, indent=1)
        out[name] = path
    return out


def touched(pid, kind, mib):
    """Waits until the big container's memory is all touched."""
    if kind == BIG:
        wait_until(lambda: proc_status_kib(pid, "VmRSS") >= mib * 1024, 60,
                   f"memhold {pid} touching {mib} MiB", step=0.01)


# ---- checkpoint/restore through zcd -------------------------------------------

def zcd_pair(wire, tmp, bundle, kind, mib, cid, out):
    """One checkpoint (exit=true) and restore under a new id through zcd;
    returns {checkpoint_ms, restore_ms, image_mib, restored_rss_mib} or
    {error}."""
    cdir = os.path.join(tmp, "cp-" + cid)
    stdout = os.path.join(tmp, "cp-out")
    r = wire.call("create", id=cid, bundle=bundle, stdout=stdout, stderr=stdout)
    if not r["ok"]:
        return {"error": "create: " + err_text(r)}
    touched(init_pid(r), kind, mib)
    t0 = time.monotonic()
    r = wire.call("checkpoint_create", id=cid, checkpoint={"name": "cp", "exit": True},
                  checkpoint_dir=cdir)
    cp_ms = ms_since(t0)
    if not r["ok"]:
        wire.call("signal", id=cid, signal=9)
        wire.wait_exit(cid)
        return {"error": "checkpoint_create: " + err_text(r)}
    wire.wait_exit(cid)
    out["image_mib"] = dir_mib(cdir)
    cid2 = cid + "-r"
    t0 = time.monotonic()
    r = wire.call("create", id=cid2, bundle=bundle, stdout=stdout, stderr=stdout,
                  checkpoint="cp", checkpoint_dir=cdir)
    restore_ms = ms_since(t0)
    if not r["ok"]:
        return {"error": "create from checkpoint: " + err_text(r), "checkpoint_ms": cp_ms}
    out["restored_rss_mib"] = proc_status_kib(init_pid(r), "VmRSS") / 1024
    wire.call("signal", id=cid2, signal=9)
    wire.wait_exit(cid2)
    d = wire.call("checkpoint_delete", checkpoint_dir=cdir, name="cp")
    if not d["ok"]:
        out["delete_error"] = err_text(d)
    shutil.rmtree(cdir, ignore_errors=True)
    out.update(checkpoint_ms=cp_ms, restore_ms=restore_ms)
    return out


# ---- checkpoint/restore through the bare runtime ------------------------------

def rt_run(argv, timeout=300, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, **kw)
    return r.returncode, r.stdout.strip()[-400:]


def stdio_pipes():
    """Three pipes: the container's ends (stdin read, stdout/err write) and
    ours; the shim holds the other ends the same way."""
    theirs, ours = [], []
    for i in range(3):
        r, w = os.pipe()
        theirs.append(r if i == 0 else w)
        ours.append(w if i == 0 else r)
    return theirs, ours


def spawn_detached(argv, theirs):
    """Runs a detaching runtime command with the container's stdio pipes."""
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=theirs[0], stdout=theirs[1], stderr=theirs[2],
                       timeout=300)
    ms = ms_since(t0)
    for fd in theirs:
        os.close(fd)
    return r.returncode, ms


def rt_pid(runtime, cid):
    code, out = rt_run([runtime, "state", cid], timeout=60)
    return json.loads(out).get("pid", 0) if code == 0 else 0


def bare_pair(runtime, tmp, bundle, kind, mib, cid, out):
    """The same pair through `<runtime> checkpoint` / `restore -d`."""
    theirs, ours = stdio_pipes()
    cid2 = cid + "-r"
    image = os.path.join(tmp, "cp-" + cid)
    try:
        code, _ = spawn_detached([runtime, "run", "-d", "-b", bundle, cid], theirs)
        if code != 0:
            return {"error": f"{runtime} run -d: exit {code}"}
        touched(rt_pid(runtime, cid), kind, mib)
        t0 = time.monotonic()
        code, text = rt_run([runtime, "checkpoint", "--image-path", image, cid])
        cp_ms = ms_since(t0)
        if code != 0:
            rt_run([runtime, "delete", "-f", cid])
            return {"error": f"{runtime} checkpoint: exit {code}: {text}"}
        out["image_mib"] = dir_mib(image)
        theirs2, ours2 = stdio_pipes()
        ours += ours2
        code, restore_ms = spawn_detached(
            [runtime, "restore", "-d", "--image-path", image, "-b", bundle, cid2], theirs2)
        if code != 0:
            return {"error": f"{runtime} restore: exit {code}", "checkpoint_ms": cp_ms}
        out["restored_rss_mib"] = proc_status_kib(rt_pid(runtime, cid2), "VmRSS") / 1024
        out.update(checkpoint_ms=cp_ms, restore_ms=restore_ms)
        return out
    finally:
        rt_run([runtime, "delete", "-f", cid2])
        rt_run([runtime, "delete", "-f", cid])
        for fd in ours:
            os.close(fd)
        shutil.rmtree(image, ignore_errors=True)
        out["cgroups_left"] = len(sweep_cgroups(cid))


# ---- the stdio relay ----------------------------------------------------------

def shims_of(b, state_dir, cid):
    """(relay, all): the pids of cid's init shims (cwd
    <state-dir>/containers/<cid>/procs/init); the relay is the one whose
    parent is not one of them (the other is its forked delete helper)."""
    pids = [pid for pid, cwd, _, _ in b.shims_under(state_dir)
            if f"/{cid}/" in cwd + "/" and cwd.endswith("/init")]
    ppid = lambda pid: proc_status_kib(pid, "PPid")
    relay = [pid for pid in pids if ppid(pid) not in pids]
    return (relay[0], pids) if len(relay) == 1 else None


def timed_fill(path, nbytes):
    """ms from the first byte seen in path to nbytes seen (1 ms polls): the
    time the container's output takes to land, whatever started it."""
    size = lambda: os.stat(path).st_size if os.path.exists(path) else 0
    wait_until(lambda: size() > 0, 30, f"{path}: first byte", step=0.001)
    t0 = time.monotonic()
    wait_until(lambda: size() >= nbytes, 300, f"{path}: {nbytes} bytes", step=0.001)
    return ms_since(t0)


def zcd_relay(b, wire, state_dir, tmp, bundle, mib, cid, out):
    """The shim's VmRSS idle and after relaying mib MiB, its CPU time for it,
    and the time the output took to land."""
    path = os.path.join(tmp, "relay-" + cid)
    r = wire.call("create", id=cid, bundle=bundle, stdout=path, stderr=path + ".err")
    if not r["ok"]:
        return {"error": "create: " + err_text(r)}
    try:
        shim, pids = wait_until(lambda: shims_of(b, state_dir, cid), 10, f"{cid}: its shim")
        time.sleep(0.3)  # past the start: the shim is idle
        rss = lambda: sum(proc_status_kib(p, "VmRSS") for p in pids)
        out.update(idle_rss_kib=proc_status_kib(shim, "VmRSS"), idle_all_rss_kib=rss(),
                   shim_processes=len(pids))
        ticks0, ns0 = proc_cpu(shim)
        s = wire.call("signal", id=cid, signal=10)
        if not s["ok"]:
            return {"error": "signal: " + err_text(s)}
        out["write_ms"] = timed_fill(path, mib * 2**20)
        time.sleep(0.1)
        ticks1, ns1 = proc_cpu(shim)
        out.update(after_rss_kib=proc_status_kib(shim, "VmRSS"), after_all_rss_kib=rss(),
                   hwm_kib=proc_status_kib(shim, "VmHWM"),
                   cpu_ms=(ticks1 - ticks0) * 1000.0 / os.sysconf("SC_CLK_TCK"),
                   run_ms=(ns1 - ns0) / 1e6, bytes=os.stat(path).st_size)
        return out
    finally:
        wire.call("signal", id=cid, signal=9)
        wire.wait_exit(cid)
        for p in (path, path + ".err"):
            if os.path.exists(p):
                os.unlink(p)


def bare_relay(runtime, tmp, bundle, mib, cid, out):
    """The same container with stdout straight into the file (no relay)."""
    path = os.path.join(tmp, "relay-" + cid)
    out_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    err_fd = os.open(path + ".err", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        with open(os.devnull) as null:
            r = subprocess.run([runtime, "run", "-d", "-b", bundle, cid], stdin=null,
                               stdout=out_fd, stderr=err_fd, timeout=300)
        if r.returncode != 0:
            return {"error": f"{runtime} run -d: exit {r.returncode}"}
        time.sleep(0.3)
        code, text = rt_run([runtime, "kill", cid, "10"])
        if code != 0:
            return {"error": f"{runtime} kill: {text}"}
        out.update(write_ms=timed_fill(path, mib * 2**20), bytes=os.stat(path).st_size)
        return out
    finally:
        os.close(out_fd)
        os.close(err_fd)
        rt_run([runtime, "delete", "-f", cid])
        sweep_cgroups(cid)
        for p in (path, path + ".err"):
            if os.path.exists(p):
                os.unlink(p)


# ---- the section --------------------------------------------------------------

def runtime_has_criu(runtime):
    if runtime != "crun":
        return True
    r = subprocess.run(["crun", "--version"], stdout=subprocess.PIPE, text=True)
    return "+CRIU" in r.stdout


def attempt(fn, *args):
    """A pair or a relay round; what went wrong is a result, not the end."""
    out = {}
    try:
        return fn(*args, out)
    except (TimeoutError, OSError, subprocess.SubprocessError, ValueError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
        return out


def cp_round(b, cs, tmp, bnd, wires, runtimes, i, samples):
    """Round i: every runtime x size, zcd and bare (which goes first
    alternates by round)."""
    for rt in runtimes:
        for kind in (SMALL, BIG):
            sides = ("bare", "zcd") if isinstance(i, int) and i % 2 else ("zcd", "bare")
            for side in sides:
                cid = f"{b.PREFIX}-cp{side[0]}-{rt}-{kind}-{i}"
                if side == "zcd":
                    one = attempt(zcd_pair, wires[rt], tmp, bnd[kind], kind, cs["mib"], cid)
                else:
                    one = attempt(bare_pair, rt, tmp, bnd[kind], kind, cs["mib"], cid)
                if one.get("error"):
                    b.log(f"checkpoint: {cid}: {one['error']}")
                samples.setdefault((rt, kind, side), []).append(one)


def cell(runs):
    ok = [r for r in runs if "restore_ms" in r]
    med = lambda key: pct([r[key] for r in ok if key in r])["p50"]
    return {"n": len(runs), "ok": len(ok), "failed": len(runs) - len(ok),
            "checkpoint_ms": pct([r["checkpoint_ms"] for r in ok]),
            "restore_ms": pct([r["restore_ms"] for r in ok]),
            "image_mib": med("image_mib"), "restored_rss_mib": med("restored_rss_mib"),
            "cgroups_left": sum(1 for r in runs if r.get("cgroups_left")),
            "delete_errors": sum(1 for r in runs if r.get("delete_error")),
            "first_error": next((r["error"] for r in runs if r.get("error")), "")}


def relay_rows(b, cs, tmp, bnd, daemons, wires, runtimes):
    rows = []
    for rt in runtimes:
        runs = {"zcd": [], "bare": []}
        for i in range(cs["relay_n"]):
            b.log(f"checkpoint: relay {rt} round {i + 1}/{cs['relay_n']}: "
                  f"{cs['relay_mib']} MiB to stdout")
            for side in (("zcd", "bare") if i % 2 == 0 else ("bare", "zcd")):
                cid = f"{b.PREFIX}-rl{side[0]}-{rt}-{i}"
                if side == "zcd":
                    one = attempt(zcd_relay, b, wires[rt], daemons[rt].state, tmp,
                                  bnd["relay"], cs["relay_mib"], cid)
                else:
                    one = attempt(bare_relay, rt, tmp, bnd["relay"], cs["relay_mib"], cid)
                if one.get("error"):
                    b.log(f"checkpoint: {cid}: {one['error']}")
                runs[side].append(one)
        z = [r for r in runs["zcd"] if "write_ms" in r]
        row = {"runtime": rt, "mib": cs["relay_mib"], "n": cs["relay_n"], "zcd_ok": len(z),
               "bare_ok": sum(1 for r in runs["bare"] if "write_ms" in r),
               "first_error": next((r["error"] for r in runs["zcd"] + runs["bare"]
                                    if r.get("error")), ""),
               "zcd_write_ms": pct([r["write_ms"] for r in z]),
               "bare_write_ms": pct([r["write_ms"] for r in runs["bare"] if "write_ms" in r])}
        for key in ("idle_rss_kib", "after_rss_kib", "hwm_kib", "idle_all_rss_kib",
                    "after_all_rss_kib", "shim_processes", "cpu_ms", "run_ms"):
            row[key] = pct([r[key] for r in z])
        row["cpu_ms_per_mib"] = row["cpu_ms"]["mean"] / cs["relay_mib"]
        row["run_ms_per_mib"] = row["run_ms"]["mean"] / cs["relay_mib"]
        rows.append(row)
    return rows


def section(b, s, tmp, bundles, res):
    """b: the bench module (Daemon, log, PREFIX, shims_under, BUILD)."""
    cs = settings()
    out = res["checkpoint"] = {"settings": cs, "cells": [], "relay": []}
    memhold = os.path.join(b.BUILD, "bench", "memhold")
    if not os.access(memhold, os.X_OK):
        raise SystemExit(f"bench: {memhold} is missing: run make first")
    if not criu_ready(b.log):
        out["skipped"] = "criu check failed"
        return
    runtimes = [rt for rt in s["runtimes"] if runtime_has_criu(rt)]
    out["runtimes_skipped"] = [rt for rt in s["runtimes"] if rt not in runtimes]
    bnd = make_bundles(tmp, bundles["sleep"], memhold, cs["mib"], cs["relay_mib"])
    out["image_fs"] = b.fs_type(tmp)
    daemons, wires = {}, {}
    try:
        for rt in runtimes:
            daemons[rt] = b.Daemon(tmp, f"state-cp-{rt}", rt, s["max_starts"])
            wires[rt] = Wire(daemons[rt].state)
        base = {rt: (d.rss_kib(), d.open_fds()) for rt, d in daemons.items()}
        b.log("checkpoint: warm-up round (not counted)")
        cp_round(b, cs, tmp, bnd, wires, runtimes, "w", {})
        samples = {}
        for i in range(cs["n"]):
            b.log(f"checkpoint: round {i + 1}/{cs['n']}: {', '.join(runtimes)} x "
                  f"small, {cs['mib']} MiB x zcd, bare")
            cp_round(b, cs, tmp, bnd, wires, runtimes, i, samples)
        for rt in runtimes:
            for kind in (SMALL, BIG):
                out["cells"].append({"runtime": rt, "kind": kind,
                                     "zcd": cell(samples[(rt, kind, "zcd")]),
                                     "bare": cell(samples[(rt, kind, "bare")])})
        out["relay"] = relay_rows(b, cs, tmp, bnd, daemons, wires, runtimes)
        out["leaks"] = leaks(b, daemons, base)
    finally:
        for w in wires.values():
            w.close()
        for d in daemons.values():
            try:
                d.drain(timeout=300)
            except Exception as e:  # the figures still matter more
                b.log(f"checkpoint: drain failed: {e}")
            d.stop()
        sweep_cgroups(f"{b.PREFIX}-cp")
        sweep_cgroups(f"{b.PREFIX}-rl")


def leaks(b, daemons, base):
    """What zcd left once every container is gone: shims, cgroup dirs of
    checkpointed (old) and restored ids, daemon RSS and fds."""
    out = {}
    for rt, d in daemons.items():
        d.drain(timeout=300)
        time.sleep(1)
        rss0, fds0 = base[rt]
        out[rt] = {"shims_left": len(b.shims_under(d.state)),
                   "daemon_rss_kib": [rss0, d.rss_kib()], "daemon_fds": [fds0, d.open_fds()]}
    # Which daemon left a cgroup dir shows in its name (the runtime).
    left = sweep_cgroups(f"{b.PREFIX}-cpz-")
    for rt in daemons:
        out[rt]["cgroup_dirs_left"] = [n for n in left if n.startswith(f"{b.PREFIX}-cpz-{rt}-")]
    return out
