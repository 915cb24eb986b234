"""A hostile rootless caller (PROTOCOL.md "Callers"; docs/security.md): the
directory of its shim is its own, and it may name the runtime binary, so it
can forge everything a shim reports and plant anything there.  None of it
may reach the root daemon's privileges, hang the daemon, or lose input.

The tests came from a review of the change that brought callers: each one
first failed on that change (a root process killed by a forged pid, a root
file written through a planted symlink, root-only text leaked through
shim.log and a re-read bundle, the daemon hung on a planted FIFO, rootless
exec refused, close_stdin postponed forever by /dev/zero)."""
import json
import os
import subprocess
import threading
import time
from pathlib import Path
import pytest
from conftest import assert_error, wait_for, read_text
from test_callers import (alice, bob, group_zcd, shared_dir, start_rootless,  # noqa: F401
                          users, wait_exit)


def as_user(side, argv):
    def drop():
        os.setgroups([side.gid]); os.setresgid(side.gid, side.gid, side.gid)
        os.setresuid(side.uid, side.uid, side.uid)
    return subprocess.run(argv, preexec_fn=drop, capture_output=True, text=True)


def evil_runtime(side, body):
    p = side.dir / f"evil{time.monotonic_ns()}.sh"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    os.chown(p, side.uid, side.gid)
    return str(p)


def test_shim_log_symlink_leaks_root_file(group_zcd, alice, token):
    secret = Path(f"/root/zcd-review-secret-{token}")
    secret.write_text("TOP-SECRET-ROOT-ONLY\n")
    secret.chmod(0o600)
    try:
        rt = evil_runtime(alice, f'echo "$PWD $*" >> {alice.dir}/rtlog\n'
                          f'case "$*" in *create*) rm -f shim.log; ln -s {secret} shim.log; kill -9 $PPID;; esac\n'
                          'exit 1\n')
        r = alice.call(group_zcd, "create", id=f"leak-{token}", bundle=alice.bundle(["true"]), runtime=rt)
        print("REPLY", r)
        print("RTLOG", read_text(alice.dir / "rtlog") if (alice.dir / "rtlog").exists() else None)
        assert "TOP-SECRET" not in json.dumps(r)
    finally:
        secret.unlink()


def test_control_symlink_overwrites_root_file(group_zcd, alice, token):
    victim = Path(f"/root/zcd-review-victim-{token}")
    victim.write_text("ORIGINAL-CONTENT-OF-A-ROOT-FILE\n")
    victim.chmod(0o600)
    cid = f"ctl-{token}"
    try:
        start_rootless(group_zcd, alice, cid, args=("sleep", "100"))
        d = Path(group_zcd.state_dir) / "containers" / cid / "procs" / "init"
        r = as_user(alice, ["sh", "-c", f"cd {d} && ls -la && rm -f control && ln -s {victim} control && ls -la"])
        print(r.stdout, r.stderr)
        rep = alice.call(group_zcd, "update_process", id=cid, pid="init", close_stdin=True)
        print("REPLY", rep)
        rep = alice.call(group_zcd, "update_process", id=cid, pid="init", width=0x4141, height=0x4242)
        print("REPLY2", rep)
        data = victim.read_bytes()
        print("VICTIM", data)
        assert data == b"ORIGINAL-CONTENT-OF-A-ROOT-FILE\n"
    finally:
        victim.unlink()
        alice.call(group_zcd, "signal", id=cid, signal=9)


def test_shim_log_fifo_hangs_daemon(group_zcd, alice, token):
    rt = evil_runtime(alice, 'case "$*" in *create*) rm -f shim.log; mkfifo shim.log; kill -9 $PPID;; esac\nexit 1\n')
    res = {}
    def go():
        try:
            res["r"] = alice.call(group_zcd, "create", id=f"hang-{token}", bundle=alice.bundle(["true"]), runtime=rt)
        except Exception as e:
            res["e"] = e
    t = threading.Thread(target=go); t.start()
    time.sleep(4)
    root = group_zcd.client()
    try:
        v = root.call("version", timeout=3)
        hung = False
    except Exception as e:
        print("version failed", e); hung = True
    # unblock: open the fifo for writing
    fifo = Path(group_zcd.state_dir) / "containers" / f"hang-{token}" / "procs" / "init" / "shim.log"
    print("fifo exists", fifo.exists(), fifo.is_fifo() if fifo.exists() else None)
    if fifo.exists():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK) if hung else None
        if fd is not None:
            os.close(fd)
    t.join(20)
    print("RES", res)
    assert not hung


def test_restart_pid_fifo_hangs_startup(group_zcd, zcd_factory, runtime, alice, token):
    cid = f"rsf-{token}"
    start_rootless(group_zcd, alice, cid)
    d = Path(group_zcd.state_dir) / "containers" / cid / "procs" / "init"
    r = as_user(alice, ["sh", "-c", f"cd {d} && rm -f pid && mkfifo pid && ls -la"])
    print(r.stdout, r.stderr)
    group_zcd.stop()
    again = zcd_factory(runtime=runtime, args=["--group", "zcd"], state_dir=group_zcd.state_dir, start=False)
    again.created_ids.add(cid)
    hung = False
    try:
        again.start(timeout=8)
    except BaseException as e:
        print("START FAILED", type(e), str(e)[:300])
        hung = True
        fd = os.open(d / "pid", os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"1\n"); os.close(fd)
    alice.call(again, "signal", id=cid, signal=9) if not hung else None
    assert not hung


def test_restart_reads_bundle_as_root(group_zcd, zcd_factory, runtime, alice, token):
    import shutil
    cid = f"rsb-{token}"
    src = Path(alice.bundle(["sleep", "100"]))
    b = alice.dir / "mybundle"
    b.mkdir(); shutil.copy(src / "config.json", b / "config.json")
    for p in (b, b / "config.json"):
        os.chown(p, alice.uid, alice.gid)
    r = alice.call(group_zcd, "create", id=cid, bundle=str(b))
    assert r["ok"], r
    group_zcd.created_ids.add(cid)
    secret = Path(f"/root/secret-bundle-{token}")
    secret.mkdir(mode=0o700)
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"]["env"] = ["DB_PASSWORD=TOP-SECRET-ENV"]
    (secret / "config.json").write_text(json.dumps(cfg))
    try:
        r = as_user(alice, ["sh", "-c", f"cd {alice.dir} && mv mybundle old && ln -s {secret} mybundle && cat mybundle/config.json"])
        print("alice cat:", r.returncode, r.stderr.strip())
        group_zcd.stop()
        again = zcd_factory(runtime=runtime, args=["--group", "zcd"], state_dir=group_zcd.state_dir)
        again.created_ids.add(cid)
        st = alice.call(again, "state", id=cid)
        print("STATE", json.dumps(st)[:600])
        alice.call(again, "signal", id=cid, signal=9)
        assert "TOP-SECRET" not in json.dumps(st)
    finally:
        shutil.rmtree(secret)


def test_close_stdin_with_dev_zero_stdin(client, events, bundle, cid, tmp_path):
    from test_containers import start
    c = cid("zero")
    out = tmp_path / "z.out"
    start(client, events, bundle(args=["sh", "-c", "cat >/dev/null; echo closed"]), c, stdin="/dev/zero", stdout=str(out))
    time.sleep(0.5)
    t0 = time.monotonic()
    reply = client.call("update_process", id=c, pid="init", close_stdin=True)
    print("REPLY", reply)
    try:
        ex = events.wait_exit(c, timeout=8)
        print("EXIT after", time.monotonic() - t0, ex)
    finally:
        client.call("signal", id=c, signal=9)
    assert "closed" in out.read_text()


def test_close_stdin_with_busy_fifo_writer(client, events, bundle, cid, tmp_path):
    from test_containers import start
    c = cid("busy")
    fifo = tmp_path / "in.fifo"; os.mkfifo(fifo)
    out = tmp_path / "b.out"
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    stop = threading.Event()
    def pump():
        while not stop.is_set():
            try:
                os.write(writer, b"x" * 4096)
            except BlockingIOError:
                time.sleep(0.0005)
    start(client, events, bundle(args=["sh", "-c", "cat >/dev/null; echo closed"]), c, stdin=str(fifo), stdout=str(out))
    th = threading.Thread(target=pump); th.start()
    try:
        time.sleep(0.5)
        reply = client.call("update_process", id=c, pid="init", close_stdin=True)
        print("REPLY", reply)
        try:
            ex = events.wait_exit(c, timeout=8)
            print("EXIT", ex)
        except Exception as e:
            print("NO EXIT", e)
    finally:
        stop.set(); th.join(); os.close(writer)
        client.call("signal", id=c, signal=9)
    assert "closed" in out.read_text()


def test_exec_forged_pid_kills_root_process(group_zcd, alice, token, runtime):
    import shutil
    victim = subprocess.Popen(["sleep", "300"])  # a root process
    real = shutil.which(runtime)
    rt = evil_runtime(alice, f'case "$*" in *" exec "*) \n'
                      f'  while [ $# -gt 0 ]; do [ "$1" = --pid-file ] && pf=$2; shift; done\n'
                      f'  echo {victim.pid} > "$pf"; exit 0;;\n'
                      f'esac\nexec {real} "$@"\n')
    cid = f"fk-{token}"
    try:
        start_rootless(group_zcd, alice, cid, runtime=rt)
        r = alice.call(group_zcd, "exec", id=cid, pid="x", args=["true"])
        print("EXEC", r)
        st = alice.call(group_zcd, "state", id=cid)
        print("STATE pids", [(p["pid"], p.get("system_pid")) for p in st["containers"][0]["processes"]])
        r = alice.call(group_zcd, "signal", id=cid, pid="x", signal=9)
        print("SIGNAL", r)
        time.sleep(0.5)
        print("victim returncode", victim.poll())
        assert victim.poll() is None, "root process killed by a non-root caller"
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.wait()
        # The forged exec's shim (the caller's own process) waits for a
        # process that was never its child: the caller's to end.  Its end
        # must not reach the root victim either (s_collect_status).
        subprocess.run(["pkill", "-KILL", "-f", f"zcd-shim --mode exec --id {cid} "])
        alice.call(group_zcd, "signal", id=cid, signal=9, all=True)
        wait_exit(group_zcd, alice, cid)


def test_rootless_exec_works(group_zcd, alice, token):
    cid = f"ex-{token}"
    start_rootless(group_zcd, alice, cid)
    out = alice.dir / f"exec-{token}.out"
    r = alice.call(group_zcd, "exec", id=cid, pid="e1", args=["/bin/sh", "-c", "echo hi; id -u"],
                   stdout=str(out))
    print("EXEC", r)
    d = Path(group_zcd.state_dir) / "containers" / cid / "procs" / "e1"
    print(subprocess.run(["ls", "-la", str(d)], capture_output=True, text=True).stdout)
    assert r["ok"], r
    wait_for(lambda: "hi" in read_text(out), what="the exec's output")
    alice.call(group_zcd, "signal", id=cid, signal=9, all=True)
    assert "hi" in read_text(out)


def test_exit_fifo_flood_starves_loop(group_zcd, alice, token):
    cid = f"fl-{token}"
    start_rootless(group_zcd, alice, cid)
    d = Path(group_zcd.state_dir) / "containers" / cid / "procs" / "init"
    flood = subprocess.Popen(["sh", "-c", f"exec timeout 20 cat /dev/zero > {d}/exit"],
                             preexec_fn=lambda: (os.setgroups([alice.gid]), os.setresgid(alice.gid, alice.gid, alice.gid), os.setresuid(alice.uid, alice.uid, alice.uid)))
    time.sleep(2)
    root = group_zcd.client()
    hung = False
    t0 = time.monotonic()
    try:
        root.call("version", timeout=5)
    except Exception as e:
        hung = True
    print("version took", time.monotonic() - t0, "hung", hung)
    flood.kill(); flood.wait()
    alice.call(group_zcd, "signal", id=cid, signal=9, all=True)
    assert not hung
