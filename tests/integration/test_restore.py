"""Live restore (DESIGN.md "Restart"): the daemon dies or stops, containers
and shims keep running or die meanwhile, and the restarted daemon rebuilds
its table, reports every exit that happened while it was down exactly once,
and keeps paused containers paused.  containerd 0.2's restart scenarios."""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import (cgroup_dir, container_dir, kill_runtime_container, leftover_runtime_containers, read_text,
                      wait_file_contains)
from restore_util import (PATH_ENV, container_procs, init_pid, kill_daemon, of, pid_alive,
                          replay_all, restart, shim_pid, sigkill, start_timed, state_ids,
                          wait_gone)

TOP = ["top", "-b", "-d", "1"]
SLEEP = ["sleep", "1000"]


def start_many(client, events, bundle_path, ids):
    """Create every container with pipelined requests; returns {id: init pid}."""
    rids = {client.send("create", id=c, bundle=bundle_path): c for c in ids}
    pids = {}
    for rid, c in rids.items():
        reply = client.recv(rid, timeout=60)[1]
        assert reply.get("ok") is True, reply
        pids[c] = {p["pid"]: p for p in reply["container"]["processes"]}["init"]["system_pid"]
    for c in ids:
        events.wait_type(c, "start-container")
    return pids


def exec_sleep(client, cid, pid):
    reply = client.ok("exec", id=cid, pid=pid, args=SLEEP, env=PATH_ENV)
    return reply["system_pid"]


def kill_all(client, events, ids):
    for c in ids:
        client.ok("signal", id=c, signal=9)
    for c in ids:
        events.wait_exit(c)


def exits_of(log, cid, pid="init"):
    return of(log, cid, "exit", pid)


def assert_exit_once(log, cid, status, pid="init"):
    hits = exits_of(log, cid, pid)
    assert len(hits) == 1, f"{cid}/{pid}: {len(hits)} exit events: {hits!r}"
    assert hits[0]["status"] == status, hits[0]
    return hits[0]


# --------------------------------------------------------------------------


def test_sigkill_daemon_then_kill_inits(zcd, client, events, bundle, cid, tmp_path):
    """10 top containers; SIGKILL the daemon; kill -9 the init of 3 and an
    exec of a survivor and of a victim while it is down; restart."""
    ids = [cid(f"top{i}") for i in range(10)]
    inits = start_many(client, events, bundle(args=TOP), ids)
    survivor, exec_victim = ids[0], ids[1]
    victims = ids[7:]
    # an exec in a victim (dies with its init) and one in a survivor
    victim_exec = exec_sleep(client, victims[0], "ex")
    survivor_exec = exec_sleep(client, exec_victim, "ex")
    last_before = client.ok("state")["last_seq"]

    kill_daemon(zcd)
    for c in victims:
        sigkill(inits[c])
    sigkill(survivor_exec)
    for pid in [inits[c] for c in victims] + [victim_exec, survivor_exec]:
        wait_gone(pid)
    # the shims record the exits and go, except for the last victim's,
    # which the restarted daemon may still find alive: both paths count
    for c in victims[:-1]:
        wait_gone(shim_pid(zcd, c))

    restart_s = start_timed(zcd)
    client, events = zcd.client(), zcd.subscriber("")
    log = replay_all(client, since_seq=last_before)
    survivors = [c for c in ids if c not in victims]
    events.wait(lambda: sorted(state_ids(client)) == sorted(survivors), 20,
                f"state to hold exactly the survivors {survivors}")
    for c in victims:
        events.wait(lambda: exits_of(replay_all(client, id=c), c), 20, f"exit of {c}")
    log = replay_all(client, since_seq=last_before)
    for c in victims:
        assert_exit_once(log, c, 137)
    # exec exits come before their init's exit; the survivor's exec is gone
    ex = assert_exit_once(log, victims[0], 137, "ex")
    assert ex["seq"] < exits_of(log, victims[0])[0]["seq"]
    assert_exit_once(log, exec_victim, 137, "ex")
    assert set(container_procs(client, exec_victim)) == {"init"}
    assert not exits_of(log, survivor) and not exits_of(log, exec_victim)
    for c in survivors:
        assert init_pid(client, c) == inits[c], "a survivor keeps its process"
        assert pid_alive(inits[c])
    assert not of(log, victims[0], "start-container"), "no start event twice"

    # an exec into a survivor after the restart works as before
    out = tmp_path / "after.out"
    client.ok("exec", id=survivor, pid="echo", args=["sh", "-c", "echo restored-$((6*7))"],
              env=PATH_ENV, stdout=str(out))
    wait_file_contains(out, "restored-42")
    assert events.wait_exit(survivor, "echo")["status"] == 0

    # a dead container's id is free at once
    b = bundle(args=["true"])
    client.ok("create", id=victims[1], bundle=b)
    events.wait_exit(victims[1])

    # another restart publishes nothing again
    last = client.ok("state")["last_seq"]
    restart(zcd, "term")
    client, events = zcd.client(), zcd.subscriber("")
    assert replay_all(client, since_seq=last) == []
    assert sorted(state_ids(client)) == sorted(survivors)
    full = replay_all(client, since_seq=0)
    for c in victims[::2]:
        assert_exit_once(full, c, 137)
    kill_all(client, events, survivors)
    assert state_ids(client) == []
    print(f"restart after SIGKILL answered version in {restart_s * 1000:.1f} ms")


def test_exec_dies_while_down_reported_before_init_exit(zcd, client, events, bundle, cid):
    """An exec that dies while the daemon is down, in a container whose init
    exits later: its exit is published at restore, the init's after it."""
    c = cid("ex")
    init = start_many(client, events, bundle(args=SLEEP), [c])[c]
    e1 = exec_sleep(client, c, "e1")
    e2 = exec_sleep(client, c, "e2")
    kill_daemon(zcd)
    sigkill(e1)
    wait_gone(e1)
    wait_gone(shim_pid(zcd, c, "e1"))
    start_timed(zcd)
    client, events = zcd.client(), zcd.subscriber("")
    events.wait(lambda: exits_of(replay_all(client, id=c), c, "e1"), 20, "exit of e1")
    assert set(container_procs(client, c)) == {"init", "e2"}
    client.ok("signal", id=c, signal=9)
    events.wait_exit(c)
    log = replay_all(client, id=c)
    a = assert_exit_once(log, c, 137, "e1")
    b = assert_exit_once(log, c, 137, "e2")
    i = assert_exit_once(log, c, 137)
    assert a["seq"] < i["seq"] and b["seq"] < i["seq"]
    assert not pid_alive(init) and not pid_alive(e2)


def test_shim_sigkilled_while_daemon_runs(zcd, client, events, bundle, cid):
    """DESIGN.md: a shim that dies without an exitStatus leaves its process
    unwatched; the daemon kills the process and reports 137."""
    c = cid("shim")
    init = start_many(client, events, bundle(args=SLEEP), [c])[c]
    shim = shim_pid(zcd, c)
    sigkill(shim)
    ev = events.wait_exit(c)
    assert ev["status"] == 137, ev
    assert ev.get("oom_killed") is False
    wait_gone(init)
    events.wait(lambda: c not in state_ids(client), 10, "the container to leave state")
    assert not leftover_runtime_containers({c}) or events.wait(
        lambda: not leftover_runtime_containers({c}), 10, "runtime state to go")
    assert len(exits_of(replay_all(client, id=c), c)) == 1
    # the id is free again
    client.ok("create", id=c, bundle=bundle(args=["true"]))
    assert events.wait_event(lambda e: e["id"] == c and e["type"] == "exit"
                             and e["seq"] > ev["seq"])["status"] == 0


@pytest.mark.parametrize("also_process", [False, True], ids=["shim", "shim+process"])
def test_shim_sigkilled_while_daemon_down(zcd, client, events, bundle, cid, also_process):
    """Shim gone, no exitStatus: 137 (the process is killed) when the
    process survived, 255 when it is gone too."""
    c = cid("sd")
    init = start_many(client, events, bundle(args=SLEEP), [c])[c]
    shim = shim_pid(zcd, c)
    kill_daemon(zcd)
    sigkill(shim)
    wait_gone(shim)
    if also_process:
        sigkill(init)
        wait_gone(init)
    start_timed(zcd)
    client, events = zcd.client(), zcd.subscriber("")
    want = 255 if also_process else 137
    events.wait(lambda: exits_of(replay_all(client, id=c), c), 20, f"exit of {c}")
    assert_exit_once(replay_all(client, id=c), c, want)
    wait_gone(init)
    events.wait(lambda: c not in state_ids(client), 10, "the container to leave state")
    events.wait(lambda: not leftover_runtime_containers({c}), 10, "runtime state to go")


@pytest.mark.parametrize("how", ["term", "kill"])
def test_paused_stays_paused(zcd, client, events, bundle, cid, how):
    c, other = cid("pz"), cid("run")
    inits = start_many(client, events, bundle(args=SLEEP), [c, other])
    client.ok("update", id=c, status="paused")
    events.wait_type(c, "pause")
    freezer = cgroup_dir(inits[c], "freezer") / "freezer.state"
    assert read_text(freezer).strip() == "FROZEN"
    last = client.ok("state")["last_seq"]
    restart(zcd, how)
    client, events = zcd.client(), zcd.subscriber("")
    assert client.ok("state", id=c)["containers"][0]["status"] == "paused"
    assert client.ok("state", id=other)["containers"][0]["status"] == "running"
    assert read_text(freezer).strip() == "FROZEN"
    assert replay_all(client, since_seq=last) == [], "a restore publishes no pause/resume"
    # exec into a paused container is refused, resume works and is an event
    r = client.call("exec", id=c, pid="x", args=["true"], env=PATH_ENV)
    assert r["ok"] is False and r["error"]["code"] == "invalid_state", r
    client.ok("update", id=c, status="running")
    assert events.wait_type(c, "resume")["seq"] == last + 1
    assert read_text(freezer).strip() == "THAWED"
    kill_all(client, events, [c, other])


def test_corrupt_state_dir_moved_aside(zcd, client, events, bundle, cid):
    ids = [cid(f"cs{i}") for i in range(3)]
    inits = start_many(client, events, bundle(args=SLEEP), ids)
    bad = ids[1]
    bad_shim = shim_pid(zcd, bad)
    zcd.close_clients()
    assert zcd.stop() == 0
    Path(container_dir(zcd.state_dir, bad), "state.json").write_bytes(b"{\"id\": \x00\xff garbage")
    zcd.start()
    client, events = zcd.client(), zcd.subscriber("")
    assert sorted(state_ids(client)) == sorted([ids[0], ids[2]])
    broken = list(Path(zcd.state_dir, ".broken").iterdir())
    assert [p.name.split(".")[0] for p in broken] == [bad]
    assert "corrupt" in zcd.log_tail(200) and bad in zcd.log_tail(200)
    assert not Path(container_dir(zcd.state_dir, bad)).exists()
    # The orphan is this test's to clean up.  Its shim still runs in the
    # moved directory, so its own `runtime delete` fails (the runtime's
    # --log path moved with it): the runtime state is removed here.
    sigkill(inits[bad])
    wait_gone(inits[bad])
    wait_gone(bad_shim)
    kill_runtime_container(zcd.runtime, bad)
    client.ok("create", id=bad, bundle=bundle(args=["true"]))
    events.wait_exit(bad)
    kill_all(client, events, [ids[0], ids[2]])


def test_sigterm_leaves_containers_running(zcd, client, events, bundle, cid):
    ids = [cid(f"st{i}") for i in range(3)]
    inits = start_many(client, events, bundle(args=SLEEP), ids)
    shims = {c: shim_pid(zcd, c) for c in ids}
    zcd.close_clients()
    assert zcd.stop() == 0
    for c in ids:
        assert pid_alive(inits[c]) and pid_alive(shims[c])
    zcd.start()
    client, events = zcd.client(), zcd.subscriber("")
    assert sorted(state_ids(client)) == sorted(ids)
    for c in ids:
        assert init_pid(client, c) == inits[c]
        assert client.ok("state", id=c)["containers"][0]["pids"] == [inits[c]]
    kill_all(client, events, ids)
    for c in ids:
        wait_gone(shims[c])
    full = replay_all(client, since_seq=0)
    for c in ids:
        assert_exit_once(full, c, 137)
        assert len(of(full, c, "start-container")) == 1


@pytest.mark.parametrize("change", ["pause", "resume"])
def test_pause_unrecorded_before_death_is_seen(zcd, client, events, bundle, cid, change):
    """The daemon dies between the runtime's pause (or resume) and saving
    state.json: the restored state follows the cgroup freezer, and a SIGKILL
    still ends the container."""
    c = cid("fz")
    init = start_many(client, events, bundle(args=SLEEP), [c])[c]
    if change == "resume":
        client.ok("update", id=c, status="paused")
    kill_daemon(zcd)
    subprocess.run([zcd.runtime, change, c], check=True, capture_output=True, timeout=30)
    start_timed(zcd)
    client, events = zcd.client(), zcd.subscriber("")
    want = "paused" if change == "pause" else "running"
    assert client.ok("state", id=c)["containers"][0]["status"] == want
    client.ok("signal", id=c, signal=9)
    assert events.wait_exit(c)["status"] == 137
    wait_gone(init)


def test_earlier_layout_is_migrated(zcd, client, events, bundle, cid):
    """A daemon upgraded while containers run: an earlier zcd kept them at
    <state>/<id>/<pid>/; the new one moves them under containers/ and
    procs/ (issue 8) and supervises them as before."""
    c = cid("mig")
    init = start_many(client, events, bundle(args=SLEEP), [c])[c]
    e1 = exec_sleep(client, c, "e1")
    kill_daemon(zcd)
    new_dir = Path(container_dir(zcd.state_dir, c))
    old_dir = Path(zcd.state_dir, c)
    os.rename(new_dir, old_dir)
    for proc in (old_dir / "procs").iterdir():
        os.rename(proc, old_dir / proc.name)
    (old_dir / "procs").rmdir()
    start_timed(zcd)
    client, events = zcd.client(), zcd.subscriber("")
    assert not old_dir.exists()
    assert set(container_procs(client, c)) == {"init", "e1"}
    assert Path(container_dir(zcd.state_dir, c), "procs", "e1", "shim.pid").exists()
    client.ok("signal", id=c, signal=9)
    events.wait_exit(c)
    log = replay_all(client, id=c)
    assert_exit_once(log, c, 137, "e1")
    assert_exit_once(log, c, 137)
    assert not pid_alive(init) and not pid_alive(e1)
