"""Checkpoint and restore with a real CRIU (issue 10), on runc and crun.

Skipped when CRIU cannot dump and restore a sleeping process here
(criu_util.py: `criu check` and a real trial): `make deps` builds a working
CRIU 4.2.1 and a CRIU-enabled crun into /usr/local when Debian's do not work
here (tools/install-criu.sh).  Without one the ops answer
`unavailable` (test_error_paths.py runs that case with `--criu /bin/false`).

The container's stdio are pipes the shim relays (CRIU cannot dump a host
file opened outside the container's mounts): a restored counter keeps
writing to the client's stdout path."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from criu_util import COUNTER, criu_runtime, needs_criu  # noqa: F401 (fixture)

from conftest import assert_error, read_text, wait_for
from restore_util import restart

# A listener and a client connected to it over loopback, inside the
# container's own network namespace: an established TCP connection.
TCP_PAIR = ["sh", "-c", "ip link set lo up; sleep 1000 | nc -l -p 7000 >/dev/null & sleep 0.3; "
            "(while true; do echo x; sleep 0.1; done) | nc 127.0.0.1 7000"]


pytestmark = needs_criu


@pytest.fixture
def cp(zcd_factory, criu_runtime, bundle, cid, tmp_path):
    """A daemon, its client and events, a checkpoint dir and a stdout file."""
    class Setup:
        pass
    s = Setup()
    s.runtime = criu_runtime
    s.zcd = zcd_factory(runtime=criu_runtime)
    s.client = s.zcd.client()
    s.events = s.zcd.subscriber("")
    s.cdir = str(tmp_path / "cps")
    s.out = tmp_path / "out"
    s.bundle = bundle
    s.cid = cid
    return s


def counted(path):
    return [int(x) for x in read_text(path).split()]


def wait_counting(path, more_than=0, n=5):
    wait_for(lambda: len(counted(path)) >= more_than + n, what="the counter counting", timeout=20)


def assert_unbroken(path):
    numbers = counted(path)
    assert numbers == list(range(len(numbers))), "the count went on from where it stopped"


def start_counter(s, c, **keys):
    b = s.bundle(args=COUNTER, **keys)
    s.client.ok("create", id=c, bundle=b, stdout=str(s.out))
    wait_counting(s.out)
    return b


def checkpoint(s, c, name="cp", **opts):
    return s.client.ok("checkpoint_create", id=c, checkpoint=dict(name=name, **opts),
                       checkpoint_dir=s.cdir, timeout=60)


def restore(s, c, b, name="cp", **keys):
    return s.client.call("create", id=c, bundle=b, stdout=str(s.out), checkpoint=name,
                         checkpoint_dir=s.cdir, timeout=60, **keys)


def kill(s, c):
    s.client.ok("signal", id=c, signal=9)
    s.events.wait_exit(c)


def cgroup_dirs_named(name):
    root = Path("/sys/fs/cgroup")
    return [str(p) for p in root.glob(f"*/{name}") if p.is_dir()] + \
           [str(p) for p in root.glob(f"*/*/{name}") if p.is_dir()]


# --------------------------------------------------------------------------


def test_counter_checkpointed_with_exit_restores_under_new_id(cp):
    first, second = cp.cid("a"), cp.cid("b")
    b = start_counter(cp, first)
    checkpoint(cp, first, exit=True)
    cp.events.wait_type(first, "checkpoint")
    assert cp.events.wait_exit(first)
    assert cp.client.call("state", id=first)["error"]["code"] == "not_found"
    before = len(counted(cp.out))
    reply = restore(cp, second, b)
    assert reply["ok"] is True, reply
    assert reply["container"]["status"] == "running"
    ev = cp.events.wait_type(second, "restore")
    assert ev["id"] == second
    wait_counting(cp.out, before)
    assert_unbroken(cp.out)
    # crun's restore re-creates the dumped container's cgroups: zcd removes them
    wait_for(lambda: cgroup_dirs_named(first) == [], what=f"no cgroup of {first} left")
    kill(cp, second)


def test_leave_running_keeps_counting_and_lists(cp):
    c = cp.cid("r")
    start_counter(cp, c)
    checkpoint(cp, c, name="live")
    before = len(counted(cp.out))
    wait_counting(cp.out, before)
    assert cp.client.ok("state", id=c)["containers"][0]["status"] == "running"
    listed = cp.client.ok("checkpoint_list", id=c, checkpoint_dir=cp.cdir)["checkpoints"]
    assert [e["name"] for e in listed] == ["live"]
    assert listed[0]["exit"] is False and listed[0]["tcp"] is False
    assert_error(checkpoint_call(cp, c, "live"), "already_exists")
    cp.client.ok("checkpoint_delete", id=c, checkpoint_dir=cp.cdir, name="live")
    assert cp.client.ok("checkpoint_list", id=c, checkpoint_dir=cp.cdir)["checkpoints"] == []
    assert not os.path.exists(os.path.join(cp.cdir, "live"))
    kill(cp, c)


def checkpoint_call(s, c, name, **opts):
    return s.client.call("checkpoint_create", id=c, checkpoint=dict(name=name, **opts),
                         checkpoint_dir=s.cdir, timeout=60)


def test_restore_under_the_old_id(cp):
    c = cp.cid("o")
    b = start_counter(cp, c)
    checkpoint(cp, c, exit=True)
    cp.events.wait_exit(c)
    before = len(counted(cp.out))
    assert restore(cp, c, b)["ok"] is True
    wait_counting(cp.out, before)
    assert_unbroken(cp.out)
    kill(cp, c)


def test_paused_container_checkpoints_and_the_restored_one_runs(cp):
    c, c2 = cp.cid("p"), cp.cid("q")
    b = start_counter(cp, c)
    cp.client.ok("update", id=c, status="paused")
    checkpoint(cp, c, exit=True)
    cp.events.wait_exit(c)
    before = len(counted(cp.out))
    reply = restore(cp, c2, b)
    assert reply["ok"] is True, reply
    assert reply["container"]["status"] == "running"
    wait_counting(cp.out, before)
    assert_unbroken(cp.out)
    wait_for(lambda: cgroup_dirs_named(c) == [], what=f"no cgroup of {c} left")
    kill(cp, c2)


@pytest.mark.parametrize("shell", [True, False])
def test_terminal_container(cp, shell):
    """The pty comes from the container's own devpts (newinstance): CRIU
    dumps and restores it with or without `shell` on this machine."""
    c, c2 = cp.cid("t"), cp.cid("u")
    b = start_counter(cp, c, terminal=True)
    opts = {"shell": True} if shell else {}
    checkpoint(cp, c, exit=True, **opts)
    cp.events.wait_exit(c)
    listed = cp.client.ok("checkpoint_list", checkpoint_dir=cp.cdir)["checkpoints"]
    assert listed[0]["shell"] is shell
    before = len(counted(cp.out))
    reply = restore(cp, c2, b)
    assert reply["ok"] is True, reply
    wait_counting(cp.out, before)
    kill(cp, c2)


def established(client, cid):
    """Whether the container's network namespace has an ESTABLISHED TCP
    connection (state 01 in its init's /proc/<pid>/net/tcp)."""
    pid = client.ok("state", id=cid)["containers"][0]["processes"][0]["system_pid"]
    rows = read_text(f"/proc/{pid}/net/tcp").splitlines()[1:]
    return any(r.split()[3] == "01" for r in rows if len(r.split()) > 3)


def test_established_tcp_needs_tcp(cp):
    c, c2 = cp.cid("n"), cp.cid("m")
    b = cp.bundle(args=TCP_PAIR)
    cp.client.ok("create", id=c, bundle=b, stdout=str(cp.out), stderr=str(cp.out))
    # the dump fails on the connection, with CRIU's reason quoted
    wait_for(lambda: established(cp.client, c), what="the connection", timeout=20)
    reply = checkpoint_call(cp, c, "notcp")
    assert_error(reply, "runtime_error", "CRIU log", "dump.log", "tcp-established")
    assert not os.path.exists(os.path.join(cp.cdir, "notcp")), "a failed dump leaves no image"
    assert cp.client.ok("state", id=c)["containers"][0]["status"] == "running"
    # with `tcp` the flag reaches CRIU, which then gets past the connection
    # (CRIU 4.1.1 failed next on socket options it could not read; 4.2.1
    # dumps).  The restore: CRIU reconnects the socket in the restored
    # container's network namespace, which the runtime makes afresh (its
    # loopback down: "Network is unreachable" with runc), so it may fail,
    # but only as an honest runtime_error quoting CRIU's log, leaving
    # nothing behind.
    reply = checkpoint_call(cp, c, "tcp", tcp=True, exit=True)
    if reply.get("ok"):
        cp.events.wait_exit(c)
        reply = restore(cp, c2, b, name="tcp")
        if reply.get("ok"):
            kill(cp, c2)
        else:
            assert_error(reply, "runtime_error", "restore.log")
            assert cp.client.call("state", id=c2)["error"]["code"] == "not_found"
    else:
        assert_error(reply, "runtime_error", "CRIU log")
        assert "tcp-established" not in reply["error"]["message"]
        kill(cp, c)


def test_restore_errors(cp):
    c, c2 = cp.cid("e"), cp.cid("f")
    b = start_counter(cp, c)
    assert_error(restore(cp, c2, b, name="nope"), "not_found")
    checkpoint(cp, c, exit=True)
    cp.events.wait_exit(c)
    # damaged images: the runtime's refusal, with CRIU's log
    image = Path(cp.cdir) / "cp"
    for f in image.glob("pages-*.img"):
        f.write_bytes(b"\0" * 16)
    for f in image.glob("core-*.img"):
        f.write_bytes(b"\0" * 16)
    reply = restore(cp, c2, b)
    assert_error(reply, "runtime_error", "restore.log")
    assert cp.client.call("state", id=c2)["error"]["code"] == "not_found"
    assert cp.client.ok("create", id=c2, bundle=cp.bundle(args=["true"]))["ok"]
    cp.events.wait_exit(c2)


def test_empty_ns_passed_to_the_runtime(cp):
    """runc has --empty-ns; crun 1.8 has not and refuses it.  Only
    namespace kinds, each once, are accepted."""
    c = cp.cid("s")
    start_counter(cp, c)
    for bad in (["bogus"], ["network", "network"], ["network"] * 9):
        assert_error(checkpoint_call(cp, c, "bad", empty_ns=bad), "invalid_argument", "empty_ns")
    # a dump refused before CRIU ran is a failure, whatever an earlier
    # dump's log said: leave-running dump first, then one the runtime refuses
    checkpoint(cp, c, name="first")
    reply = checkpoint_call(cp, c, "ns", empty_ns=["network"])
    if cp.runtime == "runc":
        assert reply["ok"] is True, reply
    else:
        assert_error(reply, "runtime_error", "empty-ns")
        names = [e["name"] for e in
                 cp.client.ok("checkpoint_list", checkpoint_dir=cp.cdir)["checkpoints"]]
        assert names == ["first"]
    kill(cp, c)


def test_checkpoint_survives_a_daemon_restart(cp):
    c, c2 = cp.cid("k"), cp.cid("l")
    b = start_counter(cp, c)
    checkpoint(cp, c, exit=True)
    cp.events.wait_exit(c)
    restart(cp.zcd, "kill")
    client = cp.zcd.client()
    names = [e["name"] for e in client.ok("checkpoint_list", checkpoint_dir=cp.cdir)["checkpoints"]]
    assert names == ["cp"]
    before = len(counted(cp.out))
    reply = client.call("create", id=c2, bundle=b, stdout=str(cp.out), checkpoint="cp",
                        checkpoint_dir=cp.cdir, timeout=60)
    assert reply["ok"] is True, reply
    wait_counting(cp.out, before)
    assert_unbroken(cp.out)
    client.ok("signal", id=c2, signal=9)
    wait_for(lambda: client.call("state", id=c2).get("ok") is False, what="the restored one gone")


@pytest.mark.parametrize("delay_ms", [0, 40, 120, 300])
def test_restore_interrupted_by_a_daemon_crash(cp, delay_ms):
    """SIGKILL the daemon while a restore runs: restarted, it has either a
    running restored container or none, and then nothing of it is left."""
    import time
    c, c2 = cp.cid("x"), cp.cid("y")
    b = start_counter(cp, c)
    checkpoint(cp, c, exit=True)
    cp.events.wait_exit(c)
    cp.client.send("create", id=c2, bundle=b, stdout=str(cp.out), checkpoint="cp",
                   checkpoint_dir=cp.cdir)
    time.sleep(delay_ms / 1000)
    restart(cp.zcd, "kill")
    client = cp.zcd.client()
    cp.zcd.created_ids.add(c2)
    reply = client.call("state", id=c2)
    if reply.get("ok"):
        container = reply["containers"][0]
        assert container["status"] == "running", container
        # a shim still restoring at the crash: its pid is picked up later
        wait_for(lambda: client.ok("state", id=c2)["containers"][0]["processes"][0]["system_pid"],
                 what="the restored init's pid")
        before = len(counted(cp.out))
        wait_counting(cp.out, before)
        client.ok("signal", id=c2, signal=9)
    else:
        assert reply["error"]["code"] == "not_found", reply
    wait_for(lambda: client.call("state", id=c2).get("ok") is False, what="the restored one gone")
    wait_for(lambda: cgroup_dirs_named(c) == [] and cgroup_dirs_named(c2) == [],
             what="no cgroup of either left")


def test_the_loop_serves_while_a_checkpoint_runs(cp):
    """The dump is a child of the loop: a `version` sent after the
    checkpoint_create is answered before it."""
    c = cp.cid("v")
    start_counter(cp, c)
    rid = cp.client.send("checkpoint_create", id=c, checkpoint={"name": "slow"},
                         checkpoint_dir=cp.cdir)
    vrid = cp.client.send("version")
    first = cp.client.recv_any(timeout=60)
    assert first["rid"] == vrid, first
    assert cp.client.recv(rid, timeout=60)[1]["ok"] is True
    kill(cp, c)


def test_unix_sockets_flag_reaches_dump_and_restore(cp):
    """The marker records the dump's flags; the restore passes them again
    (--ext-unix-sk): CRIU accepts it with nothing to use it on, and the
    restored counter goes on."""
    c, c2 = cp.cid("w"), cp.cid("z")
    b = start_counter(cp, c)
    checkpoint(cp, c, name="flags", unix_sockets=True, exit=True)
    cp.events.wait_exit(c)
    entry = cp.client.ok("checkpoint_list", checkpoint_dir=cp.cdir)["checkpoints"][0]
    assert (entry["unix_sockets"], entry["shell"], entry["exit"]) == (True, False, True)
    before = len(counted(cp.out))
    reply = restore(cp, c2, b, name="flags")
    assert reply["ok"] is True, reply
    wait_counting(cp.out, before)
    assert_unbroken(cp.out)
    kill(cp, c2)


def test_shell_without_a_terminal_dumps_but_does_not_restore(cp):
    """`shell` on a container without a terminal: the dump works, and the
    restore (--shell-job again) fails cleanly in CRIU's words, for it
    wants a terminal on the restorer's stdin; nothing is left of it."""
    c, c2 = cp.cid("h"), cp.cid("j")
    b = start_counter(cp, c)
    checkpoint(cp, c, name="sh", shell=True, exit=True)
    cp.events.wait_exit(c)
    reply = restore(cp, c2, b, name="sh")
    assert_error(reply, "runtime_error", "restore.log", "tty")
    assert cp.client.call("state", id=c2)["error"]["code"] == "not_found"
    wait_for(lambda: cgroup_dirs_named(c) == [] and cgroup_dirs_named(c2) == [],
             what="no cgroup of either left")
