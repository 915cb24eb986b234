"""The status zcd reports matches the cgroup freezer (issue 14).

Both runtimes' `kill --all` freeze the cgroup, signal every process and then
THAW it, whatever state it was in: a `signal` with `all: true` to a paused
container used to leave it running while zcd still said `paused` (exec
refused, a second pause a no-op, and `running` after a daemon restart).
zcd now freezes it again after such a kill, with no event (nothing changed
that a client sees); were that re-freeze to fail, it would report `resume`.

Here the freezer's own word (<freezer cgroup>/freezer.state, cgroup v1) is
compared with `state` after every operation, from both states, and across a
daemon restart.  Every test runs on runc and crun."""

import os

import pytest

from conftest import assert_error, cgroup_dir, read_text, wait_file_contains, wait_for
from restore_util import kill_daemon, restart

PATH_ENV = ["PATH=/bin"]
SLEEP = ["sleep", "1000"]
# init: a shell that reports each SIGUSR1 on its stdout (a host file)
TRAP = ("trap 'echo got-usr1' USR1; echo ready; "
        "while :; do sleep 1 & wait; done")
MARK = "got-usr1"
EXPECTED = {"paused": "FROZEN", "running": "THAWED"}


# --------------------------------------------------------------------------
# helpers


def state_of(client, cid):
    return client.ok("state", id=cid)["containers"][0]


def status_of(client, cid):
    return state_of(client, cid)["status"]


def freezer(path, settle=2.0):
    """freezer.state of the container's cgroup.  FREEZING is the kernel's
    transient between the two; it is given `settle` seconds to end (a pause
    the runtime has finished is FROZEN, so a lasting FREEZING is a finding)."""
    state_file = path / "freezer.state"
    value = {}

    def stable():
        value["v"] = state_file.read_text().strip()
        return value["v"] != "FREEZING"
    try:
        wait_for(stable, settle, "the freezer to settle")
    except pytest.fail.Exception:
        pass
    return value["v"]


def replayed_types(client, cid):
    """The container's events from the daemon's log, in seq order.  The
    events an operation causes are logged before its reply (PROTOCOL.md), so
    this is exact right after a reply."""
    partials, final = client.stream("events", id=cid)
    assert final.get("ok") is True, final
    return [p["event"]["type"] + ("" if p["event"].get("pid") in (None, "init")
                                  else ":" + p["event"]["pid"]) for p in partials]


def start_trap(client, events, bundle, cid, out):
    """A container whose init traps SIGUSR1; returns (init host pid, freezer dir)."""
    reply = client.ok("create", id=cid, bundle=bundle(args=["sh", "-c", TRAP]), stdout=str(out))
    pid = [p for p in reply["container"]["processes"] if p["pid"] == "init"][0]["system_pid"]
    events.wait_type(cid, "start-container", "init")
    wait_file_contains(out, "ready")
    return pid, cgroup_dir(pid, "freezer")


def marks(out):
    return read_text(out).count(MARK)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def assert_agree(client, cid, fz):
    """The recorded status equals the freezer's state; returns the status."""
    status = status_of(client, cid)
    got = freezer(fz)
    assert got == EXPECTED.get(status), \
        f"zcd says {status!r}, the freezer says {got!r} ({fz}/freezer.state)"
    return status


def kill_and_wait(client, events, cid):
    client.ok("signal", id=cid, signal=9)
    return events.wait_exit(cid)


# --------------------------------------------------------------------------
# the scenario


def test_signal_all_keeps_a_paused_container_frozen(client, events, bundle, cid, tmp_path):
    c = cid("sa")
    out = tmp_path / "sa.out"
    pid, fz = start_trap(client, events, bundle, c, out)

    client.ok("update", id=c, status="paused")
    assert status_of(client, c) == "paused"
    assert freezer(fz) == "FROZEN"
    before = marks(out)

    client.ok("signal", id=c, signal=10, all=True)
    assert status_of(client, c) == "paused"
    assert freezer(fz) == "FROZEN", "`kill --all` thawed a paused container and zcd left it so"
    # the re-freeze changes nothing a client sees: no event for it
    assert replayed_types(client, c) == ["start-container", "pause"]

    assert_error(client.call("exec", id=c, pid="e1", args=["true"], env=PATH_ENV),
                 "invalid_state", "paused")
    client.ok("update", id=c, status="paused")          # a no-op, still
    assert status_of(client, c) == "paused"
    assert freezer(fz) == "FROZEN"
    assert replayed_types(client, c) == ["start-container", "pause"]

    client.ok("update", id=c, status="running")
    assert status_of(client, c) == "running"
    assert freezer(fz) == "THAWED"
    assert replayed_types(client, c) == ["start-container", "pause", "resume"]
    # the signal was delivered (its handler runs at the latest once thawed)
    wait_for(lambda: marks(out) > before, what="the USR1 trap's marker")
    # and the container runs: it answers a fresh USR1 and takes an exec
    n = marks(out)
    client.ok("signal", id=c, signal=10)
    wait_for(lambda: marks(out) > n, what="a second USR1 marker")
    client.ok("exec", id=c, pid="e1", args=["true"], env=PATH_ENV)
    assert events.wait_exit(c, "e1")["status"] == 0
    assert alive(pid)
    assert kill_and_wait(client, events, c)["status"] == 137


@pytest.mark.parametrize("signal_all", [False, True], ids=["paused", "paused-signal-all"])
def test_paused_container_after_daemon_sigkill(zcd, client, events, bundle, cid, tmp_path,
                                              signal_all):
    c = cid("rp")
    out = tmp_path / "rp.out"
    pid, fz = start_trap(client, events, bundle, c, out)
    client.ok("update", id=c, status="paused")
    if signal_all:
        client.ok("signal", id=c, signal=10, all=True)
    assert status_of(client, c) == "paused"
    assert freezer(fz) == "FROZEN"

    restart(zcd, "kill")
    client, events = zcd.client(), zcd.subscriber("")
    st = state_of(client, c)
    assert st["status"] == "paused", f"after a restart: {st['status']!r}, freezer {freezer(fz)!r}"
    assert freezer(fz) == "FROZEN"
    assert_error(client.call("exec", id=c, pid="e1", args=["true"], env=PATH_ENV),
                 "invalid_state", "paused")

    client.ok("update", id=c, status="running")
    assert status_of(client, c) == "running"
    assert freezer(fz) == "THAWED"
    if signal_all:
        wait_for(lambda: marks(out) >= 1, what="the USR1 trap's marker")
    client.ok("exec", id=c, pid="e1", args=["true"], env=PATH_ENV)
    assert events.wait_exit(c, "e1")["status"] == 0
    assert kill_and_wait(client, events, c)["status"] == 137


# --------------------------------------------------------------------------
# every operation, from both states: the recorded status equals the freezer


OPS = ["pause", "resume", "signal-init", "signal-all", "exec", "update-resources",
       "close-stdin-exec"]


def expected_after(status, op):
    """(reply code or "ok", status after the op)."""
    if op == "pause":
        return "ok", "paused"
    if op == "resume":
        return "ok", "running"
    if op == "exec" and status == "paused":
        return "invalid_state", "paused"
    return "ok", status


def events_for(status, op):
    """The event types the op must add to the container's log."""
    if op == "pause" and status == "running":
        return ["pause"]
    if op == "resume" and status == "paused":
        return ["resume"]
    if op == "exec" and status == "running":
        return ["start-process:e1"]
    if op == "update-resources":
        return ["update"]
    return []


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("status", ["running", "paused"])
def test_status_matches_freezer_after_op(client, events, bundle, cid, tmp_path, status, op):
    c = cid("tb")
    out = tmp_path / "tb.out"
    pid, fz = start_trap(client, events, bundle, c, out)
    # an exec process that lives, for close_stdin (its stdin is /dev/null)
    client.ok("exec", id=c, pid="x1", args=SLEEP, env=PATH_ENV)
    events.wait_type(c, "start-process", "x1")
    if status == "paused":
        client.ok("update", id=c, status="paused")
    assert assert_agree(client, c, fz) == status
    before = replayed_types(client, c)

    if op == "pause":
        reply = client.call("update", id=c, status="paused")
    elif op == "resume":
        reply = client.call("update", id=c, status="running")
    elif op == "signal-init":
        reply = client.call("signal", id=c, signal=10)
    elif op == "signal-all":
        reply = client.call("signal", id=c, signal=10, all=True)
    elif op == "exec":
        reply = client.call("exec", id=c, pid="e1", args=SLEEP, env=PATH_ENV)
    elif op == "update-resources":
        reply = client.call("update", id=c, resources={"cpu_shares": 512})
    elif op == "close-stdin-exec":
        reply = client.call("update_process", id=c, pid="x1", close_stdin=True)
    else:
        raise AssertionError(op)

    code, want = expected_after(status, op)
    if code == "ok":
        assert reply.get("ok") is True, f"{op} on a {status} container: {reply!r}"
    else:
        assert_error(reply, code)
    got = assert_agree(client, c, fz)
    assert got == want, f"{op} on a {status} container: zcd says {got!r}, expected {want!r}"
    assert alive(pid)
    added = [t for t in replayed_types(client, c)[len(before):] if t != "exit:x1"]
    assert added == events_for(status, op), f"{op} on a {status} container added {added}"
    if op == "update-resources":
        assert int((cgroup_dir(pid, "cpu") / "cpu.shares").read_text()) == 512

    exits = ["x1", "e1"] if (op == "exec" and status == "running") else ["x1"]
    assert kill_and_wait(client, events, c)["status"] == 137
    for p in exits:
        events.wait_exit(c, p)
