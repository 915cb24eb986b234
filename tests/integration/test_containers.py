"""Containers, processes and events against the real runtimes.  Every test
runs once per runtime (runc, crun) on a fresh daemon (conftest.zcd)."""

import os
import stat
import time
from pathlib import Path

import pytest

from conftest import (RUNTIMES, assert_error, cgroup_dir, container_dir, leftover_runtime_containers,
                      processes_under, read_text, wait_file_contains, wait_for)

SLEEP = ["sleep", "1000"]
# exec processes inherit nothing (PROTOCOL.md: env defaults to empty)
PATH_ENV = ["PATH=/bin"]


def exec_ok(client, **keys):
    keys.setdefault("env", PATH_ENV)
    return client.ok("exec", **keys)


def start(client, events, bundle_path, cid, **keys):
    """create, check the reply and the start-container event; returns the
    Container map of the reply."""
    reply = client.ok("create", id=cid, bundle=bundle_path, **keys)
    container = reply["container"]
    assert container["id"] == cid
    assert container["status"] == "running"
    # pids are the container's own processes, never the host's
    assert os.getpid() not in container["pids"], "host processes listed as the container's"
    assert 1 not in container["pids"]
    ev = events.wait_type(cid, "start-container", "init")
    init = init_process(container)
    assert ev["system_pid"] == init["system_pid"] > 0
    return container


def init_process(container):
    procs = {p["pid"]: p for p in container["processes"]}
    assert "init" in procs, container
    return procs["init"]


def kill_and_wait(client, events, cid, sig=9):
    client.ok("signal", id=cid, signal=sig)
    return events.wait_exit(cid)


def gone(client, cid):
    reply = client.call("state", id=cid)
    return reply.get("ok") is False and reply["error"]["code"] == "not_found"


def state_of(client, cid):
    return client.ok("state", id=cid)["containers"][0]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


# --------------------------------------------------------------------------
# create and the init process


def test_ls_output_captured(client, events, bundle, cid, tmp_path):
    c = cid("ls")
    out, err = tmp_path / "ls.out", tmp_path / "ls.err"
    start(client, events, bundle(args=["ls", "/"]), c, stdout=str(out), stderr=str(err))
    ev = events.wait_exit(c)
    assert ev["status"] == 0
    assert ev["oom_killed"] is False
    assert {"bin", "proc", "dev", "etc", "tmp"} <= set(out.read_text().split())
    assert err.read_text() == ""
    # the exit event was delivered: a later state no longer holds the container
    assert gone(client, c)


def test_stdout_regular_file_is_appended(client, events, bundle, cid, tmp_path):
    out = tmp_path / "append.out"
    out.write_text("before\n")
    c = cid("app")
    start(client, events, bundle(args=["echo", "after"]), c, stdout=str(out))
    assert events.wait_exit(c)["status"] == 0
    assert out.read_text() == "before\nafter\n"


def test_missing_executable_is_runtime_error_and_id_reusable(client, events, bundle, cid,
                                                            runtime):
    c = cid("nox")
    reply = client.call("create", id=c, bundle=bundle(args=["/no/such/binary"]))
    # the runtime's own words: runc "stat ...: no such file or directory",
    # crun "executable file `...` not found"
    assert_error(reply, "runtime_error", "/no/such/binary", "no such file|not found")
    assert gone(client, c)
    assert leftover_runtime_containers({c}) == set()
    # the id is free again at once
    start(client, events, bundle(args=["true"]), c)
    assert events.wait_exit(c)["status"] == 0
    assert len(events.find(lambda e: e["id"] == c and e["type"] == "start-container")) == 1


def test_running_container_shows_in_state(client, events, bundle, cid):
    b = bundle(args=["top", "-b", "-d", "1"])
    cz, ca = cid("zz"), cid("aa")
    container = start(client, events, b, cz, labels=["role=web", "x"])
    start(client, events, bundle(args=SLEEP), ca)
    init = init_process(container)
    pid = init["system_pid"]
    assert alive(pid)
    assert "top" in Path(f"/proc/{pid}/cmdline").read_text()

    st = state_of(client, cz)
    assert st["status"] == "running"
    assert st["bundle"] == b
    assert st["labels"] == ["role=web", "x"]
    assert st["runtime"]
    assert abs(st["created"] - time.time_ns()) < 120 * 10**9
    assert pid in st["pids"]
    sinit = init_process(st)
    assert sinit["args"] == ["top", "-b", "-d", "1"]
    assert sinit["terminal"] is False
    assert sinit["system_pid"] == pid

    every = client.ok("state")
    ids = [x["id"] for x in every["containers"]]
    assert ids == sorted(ids) and set(ids) >= {cz, ca}
    assert client.ok("metrics")["containers"] >= 2

    assert kill_and_wait(client, events, cz)["status"] == 137
    assert kill_and_wait(client, events, ca)["status"] == 137
    assert not alive(pid)
    assert client.ok("state")["containers"] == []


def test_duplicate_id_already_exists(client, events, bundle, cid):
    c = cid("dup")
    start(client, events, bundle(args=SLEEP), c)
    assert_error(client.call("create", id=c, bundle=bundle(args=SLEEP)), "already_exists")
    assert kill_and_wait(client, events, c)["status"] == 137


@pytest.mark.parametrize("args,status", [
    (["true"], 0),
    (["sh", "-c", "exit 3"], 3),
    (["false"], 1),
])
def test_exit_status(client, events, bundle, cid, args, status):
    c = cid("st")
    start(client, events, bundle(args=args), c)
    assert events.wait_exit(c)["status"] == status


def test_sigkill_gives_137(client, events, bundle, cid):
    c = cid("k9")
    start(client, events, bundle(args=SLEEP), c)
    assert kill_and_wait(client, events, c, 9)["status"] == 137


def test_sigterm_with_trap_gives_143(client, events, bundle, cid, tmp_path):
    # PID 1 of a namespace ignores TERM unless it handles it: trap it.
    out = tmp_path / "term.out"
    c = cid("trap")
    script = "trap 'echo bye; exit 143' TERM; echo ready; while :; do sleep 1 & wait; done"
    start(client, events, bundle(args=["sh", "-c", script]), c, stdout=str(out))
    wait_file_contains(out, "ready")
    assert kill_and_wait(client, events, c, 15)["status"] == 143
    assert "bye" in out.read_text()


def test_exec_dies_on_sigterm_gives_143(client, events, bundle, cid):
    c = cid("tx")
    start(client, events, bundle(args=SLEEP), c)
    exec_ok(client, id=c, pid="s1", args=["sleep", "1000"])
    events.wait_type(c, "start-process", "s1")
    client.ok("signal", id=c, pid="s1", signal=15)
    assert events.wait_exit(c, "s1")["status"] == 143
    assert kill_and_wait(client, events, c)["status"] == 137


def test_sigusr1_trap_prints(client, events, bundle, cid, tmp_path):
    out = tmp_path / "usr1.out"
    c = cid("usr1")
    script = "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 1 & wait; done"
    start(client, events, bundle(args=["sh", "-c", script]), c, stdout=str(out))
    wait_file_contains(out, "ready")
    client.ok("signal", id=c, signal=10)
    wait_file_contains(out, "got-usr1")
    assert kill_and_wait(client, events, c)["status"] == 137


def test_signal_all(client, events, bundle, cid):
    c = cid("all")
    container = start(client, events, bundle(args=["sh", "-c", "sleep 1000 & sleep 1000 & wait"]), c)
    st = wait_for(lambda: (lambda s: s if len(s["pids"]) >= 3 else None)(state_of(client, c)),
                  what="three processes in the container")
    client.ok("signal", id=c, signal=9, all=True)
    assert events.wait_exit(c)["status"] == 137
    for pid in st["pids"]:
        wait_for(lambda: not alive(pid), what=f"pid {pid} gone")
    assert init_process(container)["system_pid"] in st["pids"]


def test_signal_errors(client, events, bundle, cid):
    assert_error(client.call("signal", id=cid("none"), signal=9), "not_found")
    c = cid("sig")
    start(client, events, bundle(args=SLEEP), c)
    assert_error(client.call("signal", id=c, pid="nope", signal=9), "not_found")
    assert kill_and_wait(client, events, c)["status"] == 137


def test_create_with_terminal(client, events, bundle, cid, tmp_path):
    out = tmp_path / "tty.out"
    c = cid("tty")
    container = start(client, events,
                      bundle(args=["sh", "-c", "tty; echo init-tty-ok"], terminal=True),
                      c, stdout=str(out))
    assert init_process(container)["terminal"] is True
    assert events.wait_exit(c)["status"] == 0
    text = wait_file_contains(out, "init-tty-ok")
    assert "/dev/pts/" in text or "/dev/console" in text


# --------------------------------------------------------------------------
# pause, resume, update


def freezer_state(pid):
    return (cgroup_dir(pid, "freezer") / "freezer.state").read_text().strip()


def test_pause_resume(client, events, bundle, cid):
    c = cid("pz")
    pid = init_process(start(client, events, bundle(args=SLEEP), c))["system_pid"]

    client.ok("update", id=c, status="paused")
    ev = events.wait_type(c, "pause")
    assert state_of(client, c)["status"] == "paused"
    assert freezer_state(pid) == "FROZEN"
    client.ok("update", id=c, status="paused")          # idempotent
    assert state_of(client, c)["status"] == "paused"
    assert_error(client.call("exec", id=c, pid="e1", args=["true"]), "invalid_state")

    client.ok("update", id=c, status="running")
    resume = events.wait_type(c, "resume")
    assert resume["seq"] > ev["seq"]
    assert state_of(client, c)["status"] == "running"
    assert freezer_state(pid) == "THAWED"
    client.ok("update", id=c, status="running")         # idempotent

    exit_ev = kill_and_wait(client, events, c)
    assert exit_ev["status"] == 137
    # events are in order: had the second pause or resume emitted one, it
    # would have arrived before the exit
    mine = [e["type"] for e in events.events if e["id"] == c]
    assert mine == ["start-container", "pause", "resume", "exit"]


def test_kill_paused_container(client, events, bundle, cid):
    c = cid("pk")
    start(client, events, bundle(args=SLEEP), c)
    client.ok("update", id=c, status="paused")
    events.wait_type(c, "pause")
    assert kill_and_wait(client, events, c)["status"] == 137
    assert gone(client, c)


def test_update_resources_reach_cgroup(client, events, bundle, cid):
    c = cid("res")
    b = bundle(args=SLEEP, memory_limit=128 * 2**20)
    pid = init_process(start(client, events, b, c))["system_pid"]
    mem = cgroup_dir(pid, "memory")
    cpu = cgroup_dir(pid, "cpu")
    assert int((mem / "memory.limit_in_bytes").read_text()) == 128 * 2**20

    client.ok("update", id=c, resources={
        "memory_limit": 64 * 2**20, "cpu_shares": 512,
        "cpu_period": 100000, "cpu_quota": 50000, "pids_limit": 100})
    ev = events.wait_type(c, "update")
    assert ev["id"] == c
    assert int((mem / "memory.limit_in_bytes").read_text()) == 64 * 2**20
    assert int((cpu / "cpu.shares").read_text()) == 512
    assert int((cpu / "cpu.cfs_period_us").read_text()) == 100000
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == 50000
    assert (cgroup_dir(pid, "pids") / "pids.max").read_text().strip() == "100"
    assert kill_and_wait(client, events, c)["status"] == 137


def test_update_errors(client, events, bundle, cid):
    assert_error(client.call("update", id=cid("none"), status="paused"), "not_found")


def test_oom_event_before_exit(client, events, bundle, cid):
    c = cid("oom")
    b = bundle(args=["sh", "-c", "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done"],
               memory_limit=16 * 2**20)
    start(client, events, b, c)
    ex = events.wait_exit(c, timeout=60)
    oom = events.wait_type(c, "oom", timeout=1)
    assert oom["seq"] < ex["seq"]
    assert ex["oom_killed"] is True
    assert ex["status"] == 137


# --------------------------------------------------------------------------
# exec


def test_exec_echo(client, events, bundle, cid, tmp_path):
    c = cid("ex")
    out = tmp_path / "exec.out"
    start(client, events, bundle(args=SLEEP), c)
    reply = exec_ok(client, id=c, pid="e1", args=["echo", "hello from exec"],
                      stdout=str(out))
    assert reply["system_pid"] > 0
    ev = events.wait_type(c, "start-process", "e1")
    assert ev["system_pid"] == reply["system_pid"]
    assert events.wait_exit(c, "e1")["status"] == 0
    assert out.read_text() == "hello from exec\n"
    assert [p["pid"] for p in state_of(client, c)["processes"]] == ["init"]
    assert kill_and_wait(client, events, c)["status"] == 137


def test_exec_env_cwd_and_errors(client, events, bundle, cid, tmp_path):
    c = cid("env")
    out = tmp_path / "env.out"
    start(client, events, bundle(args=SLEEP), c)
    exec_ok(client, id=c, pid="e1", args=["/bin/sh", "-c", "echo foo=$FOO; pwd"],
              env=["FOO=bar"], cwd="/tmp", stdout=str(out))
    assert events.wait_exit(c, "e1")["status"] == 0
    assert out.read_text().split() == ["foo=bar", "/tmp"]

    exec_ok(client, id=c, pid="long", args=SLEEP)
    assert_error(client.call("exec", id=c, pid="long", args=SLEEP), "already_exists")
    reply = client.call("exec", id=c, pid="init", args=SLEEP)
    assert reply.get("ok") is False
    assert reply["error"]["code"] in ("already_exists", "invalid_argument"), reply
    assert_error(client.call("exec", id=cid("none"), pid="x", args=["true"]), "not_found")
    reply = client.call("exec", id=c, pid="bad", args=["/no/such/exe"])
    assert_error(reply, "runtime_error", "/no/such/exe")
    assert kill_and_wait(client, events, c)["status"] == 137
    assert events.wait_exit(c, "long")["status"] == 137


def test_exec_top_in_state(client, events, bundle, cid):
    c = cid("etop")
    start(client, events, bundle(args=SLEEP), c)
    reply = exec_ok(client, id=c, pid="top1", args=["top", "-b"])
    spid = reply["system_pid"]
    st = state_of(client, c)
    procs = {p["pid"]: p for p in st["processes"]}
    assert set(procs) == {"init", "top1"}
    assert procs["top1"]["system_pid"] == spid
    assert procs["top1"]["args"] == ["top", "-b"]
    assert spid in st["pids"]
    assert client.ok("metrics")["processes"] >= 2
    client.ok("signal", id=c, pid="top1", signal=9)
    assert events.wait_exit(c, "top1")["status"] == 137
    assert [p["pid"] for p in state_of(client, c)["processes"]] == ["init"]
    assert kill_and_wait(client, events, c)["status"] == 137


def test_kill_init_with_exec_running(client, events, bundle, cid):
    c = cid("ki")
    start(client, events, bundle(args=SLEEP), c)
    exec_ok(client, id=c, pid="e1", args=SLEEP)
    exec_ok(client, id=c, pid="e2", args=["top", "-b"])
    init_exit = kill_and_wait(client, events, c)
    e1 = events.wait_exit(c, "e1", timeout=1)
    e2 = events.wait_exit(c, "e2", timeout=1)
    assert e1["seq"] < init_exit["seq"] and e2["seq"] < init_exit["seq"]
    assert e1["status"] == 137 and e2["status"] == 137
    assert init_exit["status"] == 137
    assert gone(client, c)


def test_exec_leaving_detached_child_still_exits(client, events, bundle, cid, tmp_path):
    c = cid("det")
    out = tmp_path / "det.out"
    start(client, events, bundle(args=SLEEP), c)
    exec_ok(client, id=c, pid="d1", args=["sh", "-c", "sleep 100 & echo spawned"],
              stdout=str(out))
    assert events.wait_exit(c, "d1", timeout=15)["status"] == 0
    assert "spawned" in out.read_text()
    assert kill_and_wait(client, events, c)["status"] == 137


def test_exec_with_terminal(client, events, bundle, cid, tmp_path):
    c = cid("etty")
    out = tmp_path / "etty.out"
    start(client, events, bundle(args=SLEEP), c)
    exec_ok(client, id=c, pid="t1", terminal=True, args=["sh", "-c", "tty; echo term-ok"],
              stdout=str(out))
    assert events.wait_exit(c, "t1")["status"] == 0
    text = wait_file_contains(out, "term-ok")
    assert "/dev/pts/" in text
    assert kill_and_wait(client, events, c)["status"] == 137


def test_resize_terminal(client, events, bundle, cid, tmp_path):
    c = cid("rsz")
    out = tmp_path / "rsz.out"
    start(client, events, bundle(args=SLEEP), c)
    script = "trap 'stty size' WINCH; echo ready; while :; do sleep 1 & wait; done"
    exec_ok(client, id=c, pid="t1", terminal=True, args=["sh", "-c", script], stdout=str(out))
    wait_file_contains(out, "ready")
    client.ok("update_process", id=c, pid="t1", width=123, height=45)
    wait_file_contains(out, "45 123")
    # a process without a terminal cannot be resized
    assert_error(client.call("update_process", id=c, pid="init", width=80, height=24),
                 "invalid_state")
    assert_error(client.call("update_process", id=c, pid="nope", width=80, height=24),
                 "not_found")
    assert kill_and_wait(client, events, c)["status"] == 137


def test_close_stdin_ends_cat(client, events, bundle, cid, tmp_path):
    c = cid("cat")
    fifo = tmp_path / "stdin.fifo"
    out = tmp_path / "cat.out"
    os.mkfifo(fifo)
    # O_RDWR never blocks on a FIFO; the daemon's side may open it any way
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        start(client, events, bundle(args=["cat"]), c, stdin=str(fifo), stdout=str(out))
        os.write(writer, b"hello through stdin\n")
        wait_file_contains(out, "hello through stdin")
    finally:
        os.close(writer)
    reply = client.call("update_process", id=c, pid="init", close_stdin=True)
    if reply.get("ok") is not True:
        # only acceptable when cat already saw EOF from our close
        assert_error(reply, "not_found")
        assert events.find(lambda e: e["id"] == c and e["type"] == "exit")
    ex = events.wait_exit(c, timeout=15)
    assert ex["status"] == 0
    assert out.read_text() == "hello through stdin\n"


# --------------------------------------------------------------------------
# bundles


def test_invalid_bundles(client, events, bundle, cid, tmp_path):
    c = cid("bad")
    assert_error(client.call("create", id=c, bundle="relative/bundle"),
                 "invalid_argument", "bundle|absolute")
    empty = tmp_path / "empty-bundle"
    empty.mkdir()
    assert_error(client.call("create", id=c, bundle=str(empty)),
                 "invalid_argument", "config.json")
    assert_error(client.call("create", id=c, bundle=str(tmp_path / "does-not-exist")),
                 "invalid_argument")
    broken = tmp_path / "broken-bundle"
    broken.mkdir()
    (broken / "config.json").write_text('{"ociVersion": "1.0.2", "process": ')
    assert_error(client.call("create", id=c, bundle=str(broken)), "invalid_argument", "json")

    def bad_seccomp(config):
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["getpid", "no_such_syscall_zcd"],
                          "action": "SCMP_ACT_ERRNO"}],
        }
    b = bundle(args=["true"], edit=bad_seccomp)
    assert_error(client.call("create", id=c, bundle=b), "invalid_argument", "no_such_syscall_zcd")

    def bad_action(config):
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_EXPLODE", "syscalls": []}
    b = bundle(args=["true"], edit=bad_action)
    assert_error(client.call("create", id=c, bundle=b), "invalid_argument", "SCMP_ACT_EXPLODE|action")

    assert gone(client, c)
    assert events.find(lambda e: e["id"] == c) == []
    assert leftover_runtime_containers({c}) == set()
    # a valid seccomp profile works
    def good(config):
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mknod"], "action": "SCMP_ACT_ERRNO"}]}
    start(client, events, bundle(args=["true"], edit=good), c)
    assert events.wait_exit(c)["status"] == 0


def test_stdio_path_must_be_absolute(client, bundle, cid):
    assert_error(client.call("create", id=cid("rel"), bundle=bundle(args=["true"]),
                             stdout="relative.out"), "invalid_argument", "stdout")


# --------------------------------------------------------------------------
# events


def test_event_order_fields_and_replay(zcd, client, events, bundle, cid, tmp_path):
    c = cid("ev")
    other = cid("other")
    t0 = time.time_ns()
    start(client, events, bundle(args=SLEEP), c)
    exec_ok(client, id=c, pid="e1", args=["true"])
    events.wait_exit(c, "e1")
    client.ok("update", id=c, status="paused")
    client.ok("update", id=c, status="running")
    client.ok("update", id=c, resources={"cpu_shares": 256})
    start(client, events, bundle(args=["true"]), other)
    events.wait_exit(other)
    kill_and_wait(client, events, c)

    live = events.events
    seqs = [e["seq"] for e in live]
    assert seqs == list(range(1, len(live) + 1))       # fresh state dir: from 1
    with_pid = ("start-container", "start-process", "exit")
    mine = [(e["type"], e["pid"] if e["type"] in with_pid else None)
            for e in live if e["id"] == c]
    assert mine == [("start-container", "init"), ("start-process", "e1"), ("exit", "e1"),
                    ("pause", None), ("resume", None), ("update", None), ("exit", "init")]
    for e in live:
        assert t0 - 10**9 <= e["ts"] <= time.time_ns()
        if e["type"] in ("start-container", "start-process"):
            assert e["system_pid"] > 0
        if e["type"] == "exit":
            assert isinstance(e["status"], int)
            if e["pid"] == "init":
                assert isinstance(e["oom_killed"], bool)
    assert [e["ts"] for e in live] == sorted(e["ts"] for e in live)

    # replay equals the live stream
    partials, final = client.stream("events", since_seq=0)
    assert [p["event"] for p in partials] == live
    assert final["last_seq"] == seqs[-1]
    assert not final.get("truncated", False)
    # since_seq, id and since filters
    partials, _ = client.stream("events", since_seq=3)
    assert [p["event"]["seq"] for p in partials] == seqs[3:]
    partials, final = client.stream("events", id=other)
    assert [p["event"] for p in partials] == [e for e in live if e["id"] == other]
    assert final["last_seq"] == seqs[-1]
    cut = live[2]["ts"]
    partials, _ = client.stream("events", since=cut)
    assert [p["event"] for p in partials] == [e for e in live if e["ts"] > cut]

    assert client.ok("state")["last_seq"] == seqs[-1]
    events.wait(lambda: events.heartbeats[-1]["last_seq"] == seqs[-1], 5,
                "a heartbeat carrying the last seq")


def test_prefix_subscription(zcd, client, events, bundle, cid):
    a, b = cid("pa"), cid("pb")
    only_a = zcd.subscriber(a + "/")
    start(client, events, bundle(args=["true"]), a)
    start(client, events, bundle(args=["true"]), b)
    events.wait_exit(a)
    events.wait_exit(b)
    only_a.wait_exit(a)
    assert {e["id"] for e in only_a.events} == {a}


def test_events_retain_truncates_replay(zcd_factory, runtime, bundle, cid):
    d = zcd_factory(runtime=runtime, args=["--events-retain", "3"])
    client, events = d.client(), d.subscriber("")
    for i in range(3):
        c = cid(f"r{i}")
        start(client, events, bundle(args=["true"]), c)
        events.wait_exit(c)
    partials, final = client.stream("events", since_seq=0)
    assert final["last_seq"] == 6
    assert final.get("truncated") is True
    kept = [p["event"]["seq"] for p in partials]
    assert 1 <= len(kept) <= 3 and kept == list(range(kept[0], 7))
    assert final["oldest_seq"] == kept[0]
    partials, final = client.stream("events", since_seq=5)
    assert [p["event"]["seq"] for p in partials] == [6]
    assert not final.get("truncated", False)


def test_seq_continues_across_restart(zcd_factory, runtime, bundle, cid, state_dir):
    d = zcd_factory(runtime=runtime, state_dir=state_dir)
    client, events = d.client(), d.subscriber("")
    c = cid("s1")
    start(client, events, bundle(args=["true"]), c)
    last = events.wait_exit(c)["seq"]
    assert d.stop() == 0
    d2 = zcd_factory(runtime=runtime, state_dir=state_dir)
    client2, events2 = d2.client(), d2.subscriber("")
    assert client2.ok("state")["last_seq"] == last
    c2 = cid("s2")
    start(client2, events2, bundle(args=["true"]), c2)
    first = events2.wait_type(c2, "start-container")
    assert first["seq"] == last + 1


# --------------------------------------------------------------------------
# load and isolation


def test_fifty_containers_sixteen_in_flight(zcd, client, events, bundle, cid):
    b = bundle(args=["true"])
    ids = [cid(f"m{i:02d}") for i in range(50)]
    pending = {}
    todo = list(ids)
    replies = {}
    while todo or pending:
        while todo and len(pending) < 16:
            c = todo.pop(0)
            pending[client.send("create", id=c, bundle=b)] = c
        reply = client.recv_any(timeout=60)
        c = pending.pop(reply["rid"])
        replies[c] = reply
    failed = {c: r for c, r in replies.items() if r.get("ok") is not True}
    assert not failed, failed
    for c in ids:
        assert events.wait_exit(c, timeout=60)["status"] == 0
    assert client.ok("state")["containers"] == []
    wait_for(lambda: not leftover_runtime_containers(set(ids)), 30,
             "the runtime's state of 50 exited containers to go")
    wait_for(lambda: not processes_under(zcd.state_dir), 30, "every shim to exit")
    wait_for(lambda: not any(os.path.exists(container_dir(zcd.state_dir, c)) for c in ids), 30,
             "the containers' state directories to go")
    m = client.ok("metrics")
    assert m["containers"] == 0 and m["processes"] == 0
    assert m["start_latency_ns"]["count"] >= 50
    assert 0 < m["start_latency_ns"]["p50"] <= m["start_latency_ns"]["max"]


def hanging_runtime(tmp_path, runtime, hang_id):
    """A runtime wrapper that hangs forever on `create` of hang_id and passes
    every other call to the real runtime.  Returns (path, pid file)."""
    pids = tmp_path / "hang.pids"
    wrapper = tmp_path / f"hang-{runtime}"
    wrapper.write_text(f"""#!/bin/sh
for a in "$@"; do last=$a; done
case " $* " in
*" create "*)
    if [ "$last" = "{hang_id}" ]; then
        echo $$ >> {pids}
        exec sleep 100000
    fi ;;
esac
exec {runtime} "$@"
""")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(wrapper), pids


def kill_pids_in(path):
    for line in read_text(path).split():
        try:
            os.kill(int(line), 9)
        except (ProcessLookupError, ValueError):
            pass


def test_start_timeout(zcd_factory, runtime, bundle, cid, tmp_path):
    c = cid("slow")
    wrapper, pids = hanging_runtime(tmp_path, runtime, c)
    d = zcd_factory(runtime=runtime, args=["--start-timeout", "2s"])
    client, events = d.client(), d.subscriber("")
    try:
        t = time.monotonic()
        reply = client.call("create", id=c, bundle=bundle(args=SLEEP), runtime=wrapper,
                            timeout=30)
        took = time.monotonic() - t
        assert_error(reply, "timeout")
        assert 1.5 <= took <= 15
        assert gone(client, c)
        # the hung runtime was killed with the attempt
        wait_for(lambda: not any(alive(int(p)) for p in read_text(pids).split()), 10,
                 "the hung runtime to be killed")
        # the id is free again
        start(client, events, bundle(args=["true"]), c)
        assert events.wait_exit(c)["status"] == 0
    finally:
        kill_pids_in(pids)


def test_no_head_of_line_blocking(zcd_factory, runtime, bundle, cid, tmp_path):
    stuck, free = cid("stuck"), cid("free")
    wrapper, pids = hanging_runtime(tmp_path, runtime, stuck)
    d = zcd_factory(runtime=runtime, args=["--start-timeout", "8s"])
    client, events = d.client(), d.subscriber("")
    try:
        stuck_rid = client.send("create", id=stuck, bundle=bundle(args=SLEEP), runtime=wrapper)
        wait_for(lambda: read_text(pids).strip(), 5, "the wrapper to hang")
        t = time.monotonic()
        assert client.ok("state", timeout=2)
        start(client, events, bundle(args=SLEEP), free, runtime=wrapper)
        exec_ok(client, id=free, pid="e1", args=["true"])
        events.wait_exit(free, "e1")
        client.ok("update", id=free, status="paused")
        client.ok("update", id=free, status="running")
        assert kill_and_wait(client, events, free)["status"] == 137
        assert time.monotonic() - t < 7, "work on another container waited for the stuck one"
        # the stuck create is still unanswered, and then times out
        partials, final = client.recv(stuck_rid, timeout=30)
        assert_error(final, "timeout")
    finally:
        kill_pids_in(pids)


def test_runtime_key_selects_runtime(zcd, client, events, bundle, cid):
    other = [r for r in RUNTIMES if r != zcd.runtime][0]
    c = cid("rt")
    container = start(client, events, bundle(args=SLEEP), c, runtime=other)
    assert other in container["runtime"]
    assert any(cid_ == c for rt, cid_ in leftover_runtime_containers({c}) if rt == other)
    assert kill_and_wait(client, events, c)["status"] == 137
