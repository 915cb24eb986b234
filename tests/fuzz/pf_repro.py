#!/usr/bin/python3
"""Minimal request sequences for the defects tests/fuzz/protocol_fuzz.py found.

Each case starts from a fresh daemon (one per runtime), sends a handful of
requests and says whether the defect still shows:

    /usr/bin/python3 tests/fuzz/pf_repro.py [--build DIR] [--runtime runc|crun|both] [CASE...]

Prints one line per case: `REPRODUCED` (the defect is there, with the
request and reply), `fixed`, or `n/a`.  Exit 1 when any case reproduces."""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import pf_fs  # noqa: E402
from pf_wire import RawStr, encode, short, unpack  # noqa: E402
from conftest import make_rootfs, oci_config  # noqa: E402
import json  # noqa: E402


class Env:
    def __init__(self, build, runtime, workdir, rootfs):
        self.runtime = runtime
        self.root = Path(tempfile.mkdtemp(prefix=f"zrep-{runtime[:2]}-", dir=workdir))
        # the state dir on a small tmpfs of its own, with room for a filler
        self.disk = self.root / "d"
        self.disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0711", "zcdrep",
                        str(self.disk)], check=True)
        self.filler = self.disk / "filler"
        self.state = self.disk / "s"
        os.mkdir(self.state, 0o711)
        self.out = self.root / "o"
        self.out.mkdir()
        self.rootfs = rootfs
        self.n = 0
        self.log = open(self.root / "zcd.log", "ab")
        self.build = build
        self.ctx = zmq.Context()
        self.sock = None
        self.start()
        self.cg = f"zcdrep-{os.getpid()}-{runtime}"

    def start(self):
        self.proc = subprocess.Popen(
            [str(Path(self.build) / "zcd"), "--state-dir", str(self.state), "--runtime",
             self.runtime, "--log-level", "info", "--heartbeat", "200ms"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        if self.sock is not None:
            self.sock.close(0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"ipc://{self.state}/zcd.sock")
        deadline = time.monotonic() + 20
        while True:
            r = self.call({"op": "version"}, 0.3)
            if r is not None:
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("zcd did not start")

    def restart(self, sig):
        if sig is not None:
            self.proc.send_signal(sig)
        self.proc.wait(20)
        self.start()

    def call(self, body, timeout=30):
        self.n += 1
        body = dict(body)
        body["rid"] = self.n
        self.sock.send(encode(body))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                return None
            r = unpack(self.sock.recv_multipart()[-1])
            if r.get("rid") == self.n and "ok" in r:
                return r

    def bundle(self, args=("sleep", "3600"), default_cgroup=False):
        self.n += 1
        b = self.root / f"b{self.n}"
        b.mkdir()
        cfg = oci_config(self.rootfs, args=list(args))
        if not default_cgroup:     # the default path is named after the (unique) id
            cfg["linux"]["cgroupsPath"] = f"/{self.cg}/{self.n}"
        (b / "config.json").write_text(json.dumps(cfg))
        return str(b)

    def cid(self):
        self.n += 1
        return f"rep{os.getpid()}x{self.n}"

    def close(self):
        st = self.call({"op": "state"}, 5) or {}
        for c in st.get("containers") or []:
            self.call({"op": "signal", "id": c["id"], "signal": 9, "all": True}, 5)
        deadline = time.monotonic() + 10
        while (self.call({"op": "state"}, 5) or {}).get("containers") and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.sock.close(0)
        self.ctx.term()
        root = str(self.root) + "/"
        for r in (f"/run/{self.runtime}",):
            for cid, bundle, _, _ in pf_fs.runtime_entries(self.runtime, r):
                if (bundle + "/").startswith(root):
                    pf_fs.force_delete(self.runtime, r, cid)
        for pid in pf_fs.processes_with_cwd_under(self.state):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for cg in pf_fs.cgroup_dirs_with_prefix(self.cg):
            pf_fs.remove_cgroup_tree(cg)
        subprocess.run(["umount", "-l", str(self.disk)], capture_output=True)

    def fill_disk(self):
        try:
            with open(self.filler, "wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        except OSError:
            pass

    def free_disk(self):
        if self.filler.exists():
            self.filler.unlink()


def code(r):
    if r is None:
        return "no reply"
    if r.get("ok"):
        return "ok"
    return (r.get("error") or {}).get("code")


# Each case: (name, what it shows, fn(env) -> (reproduced: bool|None, evidence str))

def _target(env, name="target.txt", text="must not change\n"):
    t = env.root / name
    t.write_text(text)
    return t


def case_stdout_symlink(env):
    t = _target(env)
    link = env.root / "link-out"
    os.symlink(t, link)
    body = {"op": "create", "id": env.cid(),
            "bundle": env.bundle(["sh", "-c", "echo leaked; exec sleep 3600"]),
            "stdout": str(link)}
    r = env.call(body)
    time.sleep(0.5)
    changed = t.read_text() != "must not change\n"
    return (code(r) == "ok" or changed,
            f"create stdout=<symlink to a file> -> {code(r)}; target changed: {changed}")


def case_stdin_symlink(env):
    t = _target(env)
    link = env.root / "link-in"
    os.symlink(t, link)
    r = env.call({"op": "create", "id": env.cid(), "bundle": env.bundle(), "stdin": str(link)})
    return code(r) == "ok", f"create stdin=<symlink to a file> -> {code(r)}"


def case_stdin_dir(env):
    d = env.root / "adir"
    d.mkdir()
    r = env.call({"op": "create", "id": env.cid(), "bundle": env.bundle(), "stdin": str(d)})
    return code(r) == "ok", f"create stdin=<directory> -> {code(r)}"


def case_exec_stdout_symlink(env):
    cid = env.cid()
    if code(env.call({"op": "create", "id": cid, "bundle": env.bundle()})) != "ok":
        return None, "create failed"
    t = _target(env, "exec-target.txt")
    link = env.root / "exec-link"
    os.symlink(t, link)
    r = env.call({"op": "exec", "id": cid, "pid": "e1", "args": ["/bin/echo", "leaked"],
                  "stdout": str(link)})
    time.sleep(0.5)
    changed = t.read_text() != "must not change\n"
    return (code(r) == "ok" or changed,
            f"exec stdout=<symlink to a file> -> {code(r)}; target changed: {changed}")


def _internal_for_stdout(env, path, what):
    r = env.call({"op": "create", "id": env.cid(), "bundle": env.bundle(), "stdout": path})
    return code(r) == "internal", f"create stdout={what} -> {code(r)}: {short(r, 200)}"


def case_stdout_dangling(env):
    p = env.root / "dangling"
    os.symlink("made-through-the-link", p)
    r = env.call({"op": "create", "id": env.cid(), "bundle": env.bundle(), "stdout": str(p)})
    made = os.path.exists(env.root / "made-through-the-link")
    return (code(r) in ("ok", "internal") or made,
            f"create stdout=<dangling symlink> -> {code(r)}; link target created: {made}")


def case_stdout_dangling_deep(env):
    p = env.root / "dangling2"
    os.symlink("no/such/dir", p)
    return _internal_for_stdout(env, str(p), "<dangling symlink into a missing dir>")


def case_stdout_dir(env):
    d = env.root / "outdir"
    d.mkdir()
    return _internal_for_stdout(env, str(d), "<directory>")


def case_stdout_loop(env):
    p = env.root / "loop"
    os.symlink("loop", p)
    return _internal_for_stdout(env, str(p), "<symlink loop>")


def case_stdout_notdir(env):
    t = _target(env, "plain")
    return _internal_for_stdout(env, str(t) + "/x", "<file>/x")


def case_stdout_socket(env):
    return _internal_for_stdout(env, str(env.state / "zcd.sock"), "<a socket>")


def case_stdout_toolong_name(env):
    return _internal_for_stdout(env, str(env.out / ("n" * 300)), "<name of 300 chars>")


def case_runtime_true(env):
    r = env.call({"op": "create", "id": env.cid(), "bundle": env.bundle(), "runtime": "/bin/true"})
    return code(r) == "internal", f"create runtime=/bin/true -> {code(r)}: {short(r, 200)}"


def case_runtime_arg_empty(env):
    r = env.call({"op": "create", "id": env.cid(), "bundle": env.bundle(), "runtime_args": [""]})
    return code(r) == "internal", f"create runtime_args=[\"\"] -> {code(r)}: {short(r, 200)}"


def case_checkpoint_delete_unmarked(env):
    d = env.root / "ckdir"
    d.mkdir()
    (d / "victim").mkdir()
    (d / "victim" / "data").write_text("x")
    (d / "plainfile").write_text("x")
    os.symlink(".", d / "alink")
    cid = env.cid()
    env.call({"op": "create", "id": cid, "bundle": env.bundle()})
    results = []
    for name in ("victim", "plainfile", "alink"):
        for with_id in (False, True):
            body = {"op": "checkpoint_delete", "checkpoint_dir": str(d), "name": name}
            if with_id:
                body["id"] = cid
            r = env.call(body)
            results.append(f"{name}{'+id' if with_id else ''}:{code(r)}")
    gone = [n for n in ("victim", "plainfile", "alink") if not os.path.lexists(d / n)]
    return bool(gone), f"checkpoint_delete of unmarked entries: {results}; removed: {gone}"


def case_paused_signal_all(env):
    seen = []
    bad = False
    for sig, extra, dflt in ((3, {"all": True, "pid": "init"}, False),
                             (3, {"all": True, "pid": "init"}, True), (10, {"all": True}, True),
                             (15, {}, True), (18, {"all": True}, True), (19, {}, True),
                             (1, {"pid": "init"}, True)):
        cid = env.cid()
        r = env.call({"op": "create", "id": cid, "bundle": env.bundle(default_cgroup=dflt)})
        if code(r) != "ok":
            return None, f"create failed: {short(r)}"
        spid = r["container"]["processes"][0]["system_pid"]
        env.call({"op": "update", "id": cid, "status": "paused"})
        body = {"op": "signal", "id": cid, "signal": sig}
        body.update(extra)
        r = env.call(body)
        time.sleep(0.3)
        st = env.call({"op": "state", "id": cid})
        status = st["containers"][0]["status"] if st and st.get("ok") else None
        fr = pf_fs.freezer_of(spid)
        this = status == "paused" and fr is not None and fr[1] != "FROZEN"
        this = this or (status == "running" and fr is not None and fr[1] == "FROZEN")
        bad |= this
        seen.append(f"sig {sig} {extra}{' default cgroup' if dflt else ''}: {code(r)}, "
                    f"state {status!r}, freezer "
                    f"{fr[1] if fr else None}{' <-- MISMATCH' if this else ''}")
        env.call({"op": "signal", "id": cid, "signal": 9, "all": True})
    return bad, "create; update paused; signal ... -> " + "; ".join(seen)


def case_update_process_race(env):
    internal = []
    for _ in range(15):
        cid = env.cid()
        r = env.call({"op": "create", "id": cid, "bundle": env.bundle(["sleep", "0.2"])})
        if code(r) != "ok":
            continue
        for _ in range(200):
            r = env.call({"op": "update_process", "id": cid, "pid": "init", "close_stdin": True})
            if code(r) == "internal":
                internal.append(short(r, 200))
            if code(r) == "not_found":
                break
    return bool(internal), f"update_process close_stdin racing the exit: internal {internal[:2]}"


def case_log_relative(env):
    r = env.call({"op": "create", "id": env.cid(), "bundle": env.bundle(),
                  "log": {"path": "relative", "max_bytes": 10, "max_files": 1}})
    return code(r) == "ok", f"create log={{path: relative}} -> {code(r)} (PROTOCOL.md: absolute)"


def case_nonutf8_label(env):
    r = env.call({"op": "create", "id": env.cid(), "bundle": env.bundle(),
                  "labels": [RawStr(b"bad\xff")]})
    return code(r) == "ok", f"create labels=[<not UTF-8>] -> {code(r)}"


def case_disk_full_events_silent(env):
    out = []
    cid = env.cid()
    env.call({"op": "create", "id": cid, "bundle": env.bundle()})
    env.fill_disk()
    try:
        # events while the disk is full, until one cannot be logged
        for i in range(200):
            r = env.call({"op": "update", "id": cid,
                          "status": "paused" if i % 2 == 0 else "running"}, 3)
            if code(r) != "ok":
                out.append(f"update #{i}: {code(r)}")
                break
        for body in ({"op": "events", "since_seq": 0}, {"op": "state"}, {"op": "version"}):
            t0 = time.monotonic()
            r = env.call(body, 10)
            out.append(f"{body['op']}: {code(r)} in {time.monotonic() - t0:.1f}s")
        silent = any("no reply" in o for o in out)
        return silent, "state dir's disk full: " + "; ".join(out)
    finally:
        env.free_disk()


def _replay(env):
    env.n += 1
    env.sock.send(encode({"op": "events", "since_seq": 0, "rid": env.n}))
    evs = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and env.sock.poll(1000):
        r = unpack(env.sock.recv_multipart()[-1])
        if r.get("rid") != env.n:
            continue
        if "ok" in r:
            return [e["seq"] for e in evs], r
        evs.append(r["event"])
    return None, None


def case_stdout_into_events_log(env):
    log = env.state / "events.log"
    cid = env.cid()
    r = env.call({"op": "create", "id": cid, "stdout": str(log),
                  "bundle": env.bundle(["sh", "-c", "echo garbage-from-the-container; "
                                        "exec sleep 3600"])})
    if code(r) != "ok":
        return False, f"create stdout=<state dir>/events.log -> {code(r)}"
    deadline = time.monotonic() + 3
    while True:
        written = b"garbage-from-the-container" in log.read_bytes()
        if written or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for i in range(5):           # events after the garbage
        env.call({"op": "update", "id": cid, "status": "paused" if i % 2 == 0 else "running"})
    before, fin = _replay(env)
    env.restart(signal.SIGTERM)
    after, fin2 = _replay(env)
    lost = sorted(set(before or []) - set(after or []))
    return bool(written or lost), (f"create stdout=<state dir>/events.log -> ok; the container's output went into "
                  f"the event log: {written}; replay before restart {len(before or [])} events "
                  f"(last_seq {fin and fin.get('last_seq')}), after {len(after or [])} "
                  f"(last_seq {fin2 and fin2.get('last_seq')}); lost: {lost}")


def case_pause_racing_restart(env):
    """update paused sent, then SIGTERM/SIGKILL a moment later: after the
    restart `state` (which follows the freezer) and the log must agree."""
    seen = []
    for attempt in range(24):
        cid = env.cid()
        r = env.call({"op": "create", "id": cid, "bundle": env.bundle()})
        if code(r) != "ok":
            continue
        want = "paused" if attempt % 2 == 0 else "running"
        if want == "running":
            env.call({"op": "update", "id": cid, "status": "paused"})
        env.n += 1
        env.sock.send(encode({"op": "update", "id": cid, "status": want, "rid": env.n}))
        time.sleep([0.002, 0.005, 0.01, 0.02][attempt // 2 % 4])
        sig = signal.SIGTERM if attempt % 4 < 2 else signal.SIGKILL
        env.restart(sig)
        st = env.call({"op": "state", "id": cid})
        status = st["containers"][0]["status"] if st and st.get("ok") else None
        evs, _ = _replay_events(env, cid)
        paused_by_log = False
        for e in evs or []:
            if e["type"] == "pause":
                paused_by_log = True
            elif e["type"] == "resume":
                paused_by_log = False
        if status in ("paused", "running") and (status == "paused") != paused_by_log:
            seen.append(f"{want} + SIG{sig.name[3:]}: state {status!r}, log says "
                        f"{'paused' if paused_by_log else 'running'} "
                        f"({[e['type'] for e in evs]})")
        env.call({"op": "signal", "id": cid, "signal": 9, "all": True})
        if seen:
            break
    return bool(seen), ("update racing a restart: " + "; ".join(seen)) if seen else \
        "update racing a restart: state and log agreed in 24 tries"


def _replay_events(env, cid):
    env.n += 1
    env.sock.send(encode({"op": "events", "since_seq": 0, "id": cid, "rid": env.n}))
    evs = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and env.sock.poll(1000):
        r = unpack(env.sock.recv_multipart()[-1])
        if r.get("rid") != env.n:
            continue
        if "ok" in r:
            return evs, r
        evs.append(r["event"])
    return None, None


def case_sigterm_inflight_unanswered(env):
    """requests the daemon has taken when SIGTERM comes: each should get its
    final reply (the result, or `unavailable`) before the daemon exits."""
    cid = env.cid()
    env.call({"op": "create", "id": cid, "bundle": env.bundle()})
    rids = {}
    for body in ({"op": "create", "id": env.cid(), "bundle": env.bundle()},
                 {"op": "update", "id": cid, "status": "paused"},
                 {"op": "exec", "id": cid, "pid": "e1", "args": ["/bin/sleep", "100"]}):
        env.n += 1
        body["rid"] = env.n
        rids[env.n] = body["op"]
        env.sock.send(encode(body))
    time.sleep(0.03)
    env.proc.send_signal(signal.SIGTERM)
    answered = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (env.proc.poll() is None or env.sock.poll(100)):
        if env.sock.poll(100):
            r = unpack(env.sock.recv_multipart()[-1])
            if r.get("rid") in rids and "ok" in r:
                answered[rids[r["rid"]]] = code(r)
    env.proc.wait(15)
    missing = [op for op in rids.values() if op not in answered]
    env.restart(None)
    env.call({"op": "signal", "id": cid, "signal": 9, "all": True})
    return bool(missing), (f"create, update paused, exec sent 30 ms before SIGTERM: answered "
                           f"{answered}, never answered: {missing}")


CASES = [
    ("stdout-symlink", case_stdout_symlink),
    ("exec-stdout-symlink", case_exec_stdout_symlink),
    ("stdin-symlink", case_stdin_symlink),
    ("stdin-dir", case_stdin_dir),
    ("stdout-dangling-internal", case_stdout_dangling),
    ("stdout-dangling-deep-internal", case_stdout_dangling_deep),
    ("stdout-dir-internal", case_stdout_dir),
    ("stdout-loop-internal", case_stdout_loop),
    ("stdout-notdir-internal", case_stdout_notdir),
    ("stdout-socket-internal", case_stdout_socket),
    ("stdout-longname-internal", case_stdout_toolong_name),
    ("runtime-true-internal", case_runtime_true),
    ("runtime-arg-empty-internal", case_runtime_arg_empty),
    ("checkpoint-delete-unmarked", case_checkpoint_delete_unmarked),
    ("paused-signal-all-thaws", case_paused_signal_all),
    ("update-process-race-internal", case_update_process_race),
    # ("log-relative-accepted", case_log_relative): issue 12 (the `log` key)
    ("nonutf8-label", case_nonutf8_label),
    ("disk-full-events-silent", case_disk_full_events_silent),
    ("stdout-into-events-log", case_stdout_into_events_log),
    ("pause-racing-restart", case_pause_racing_restart),
    ("sigterm-inflight-unanswered", case_sigterm_inflight_unanswered),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--runtime", default="both", choices=["runc", "crun", "both"])
    ap.add_argument("cases", nargs="*")
    opts = ap.parse_args()
    build = opts.build if os.path.isabs(opts.build) else str(REPO / opts.build)
    runtimes = ["runc", "crun"] if opts.runtime == "both" else [opts.runtime]
    workdir = tempfile.mkdtemp(prefix="zrep-", dir="/tmp")
    rootfs = make_rootfs(os.path.join(workdir, "rootfs"))
    any_bad = False
    try:
        for rt in runtimes:
            env = Env(build, rt, workdir, rootfs)
            try:
                for name, fn in CASES:
                    if opts.cases and name not in opts.cases:
                        continue
                    try:
                        bad, why = fn(env)
                    except Exception as e:  # noqa: BLE001
                        bad, why = None, f"error: {e!r}"
                    if env.proc.poll() is not None:
                        bad, why = True, why + f"; zcd DIED (exit {env.proc.returncode})"
                    verdict = {True: "REPRODUCED", False: "fixed", None: "n/a"}[bad]
                    any_bad |= bool(bad)
                    print(f"[{rt}] {name:30s} {verdict:10s} {why}", flush=True)
            finally:
                env.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any_bad else 0


if __name__ == "__main__":
    sys.exit(main())
