"""The container's state machine (issue 9): one operation runs at a time,
and every way an operation ends frees the container for the next one and
leaves the state right.

A runtime that cannot even be started (posix_spawn failing: the binary
gone) must end its operation like any failure: answered, the slot free for
the next operation.  Before issue 9 that path was kept apart by booleans
(`busy`, `thaw_after_kill`): when the re-freeze after a `kill --all` of a
paused container could not start, the kill (delivered) was answered
runtime_error and zcd went on saying `paused` over a thawed cgroup
(test_refreeze_that_cannot_start_reports_running fails on that code; the
two tests before it are regression tests of the queue moving on).

Here the container's runtime is a wrapper script around the real one (runc
or crun), given with the create's `runtime` key, which moves itself away
after a chosen call: a real runtime cannot be made to vanish for one call
of one container, hence the wrapper.  It must be back before the container
exits (its shim runs `<runtime> delete` then).

Every test runs on runc and crun."""

import shutil

from conftest import assert_error, cgroup_dir, wait_for

PATH_ENV = ["PATH=/bin"]
SLEEP = ["sleep", "1000"]
REPLY_WAIT = 10.0  # far longer than a runtime call; a parked op never answers


def make_wrapper(directory, runtime, vanish_after=None):
    """An executable `<directory>/rt-<runtime>` that runs the real runtime.
    With vanish_after (a runtime verb), the wrapper moves itself to
    `<path>.off` after running a call with that verb, so the operation's
    next runtime call cannot be spawned."""
    real = shutil.which(runtime)
    path = directory / f"rt-{runtime}"
    if vanish_after is None:
        text = f'#!/bin/sh\nexec "{real}" "$@"\n'
    else:
        text = ("#!/bin/sh\n"
                "v=\n"
                f'for a; do [ "$a" = "{vanish_after}" ] && v=1; done\n'
                f'"{real}" "$@"\n'
                "rc=$?\n"
                '[ -n "$v" ] && mv "$0" "$0.off"\n'
                "exit $rc\n")
    path.write_text(text)
    path.chmod(0o755)
    return path


def off_path(wrapper):
    return wrapper.with_name(wrapper.name + ".off")


def status_of(client, cid):
    return client.ok("state", id=cid)["containers"][0]["status"]


def kill_and_wait(client, events, cid):
    client.ok("signal", id=cid, signal=9)
    return events.wait_exit(cid)


def test_unspawnable_runtime_frees_the_container(zcd, client, events, bundle, cid, runtime,
                                                 tmp_path):
    """A pause whose runtime cannot be spawned is answered runtime_error
    naming it, and the operation queued behind it still runs."""
    wrapper = make_wrapper(tmp_path, runtime)
    c = cid()
    client.ok("create", id=c, bundle=bundle(args=SLEEP, env=PATH_ENV), runtime=str(wrapper))
    wrapper.rename(off_path(wrapper))
    try:
        paused = client.send("update", id=c, status="paused")
        # Already running: answered without the runtime, once the pause ended.
        running = client.send("update", id=c, status="running")
        assert_error(client.recv(paused, timeout=REPLY_WAIT)[1], "runtime_error",
                     str(wrapper))
        reply = client.recv(running, timeout=REPLY_WAIT)[1]
        assert reply["ok"] is True, reply
        assert status_of(client, c) == "running"
    finally:
        off_path(wrapper).rename(wrapper)
    # The runtime is back: the container takes operations as before.
    client.ok("update", id=c, status="paused")
    events.wait_type(c, "pause")
    assert status_of(client, c) == "paused"
    client.ok("update", id=c, status="running")
    events.wait_type(c, "resume")
    assert kill_and_wait(client, events, c)["status"] == 137


def test_unspawnable_second_call_frees_the_container(zcd, client, events, bundle, cid,
                                                     runtime, tmp_path):
    """An update of resources and status takes two runtime calls; when the
    second (the pause) cannot be spawned, the update's event is out, the
    request is answered runtime_error, the container stays running, and the
    next operation runs."""
    wrapper = make_wrapper(tmp_path, runtime, vanish_after="update")
    c = cid()
    client.ok("create", id=c, bundle=bundle(args=SLEEP, env=PATH_ENV), runtime=str(wrapper))
    try:
        both = client.send("update", id=c, status="paused", resources={"pids_limit": 100})
        after = client.send("update", id=c, status="running")
        assert_error(client.recv(both, timeout=REPLY_WAIT)[1], "runtime_error", str(wrapper))
        reply = client.recv(after, timeout=REPLY_WAIT)[1]
        assert reply["ok"] is True, reply
        events.wait_type(c, "update")
        assert status_of(client, c) == "running"
        assert not [e for e in events.events if e["id"] == c and e["type"] == "pause"]
    finally:
        if off_path(wrapper).exists():
            off_path(wrapper).rename(wrapper)
    assert kill_and_wait(client, events, c)["status"] == 137


def freezer_state(fz):
    """freezer.state once the kernel's transient FREEZING is over."""
    value = {}

    def settled():
        value["v"] = (fz / "freezer.state").read_text().strip()
        return value["v"] != "FREEZING"
    wait_for(settled, 5.0, "the freezer to settle")
    return value["v"]


def test_refreeze_that_cannot_start_reports_running(zcd, client, events, bundle, cid, runtime,
                                                    tmp_path):
    """`kill --all` thaws a paused container; the re-freeze after it cannot
    be spawned here: the signal was delivered (ok), and the container is
    reported as it is, running, with its resume event.  (Before issue 9 the
    kill was answered runtime_error and zcd kept saying `paused` over a
    thawed cgroup.)"""
    wrapper = make_wrapper(tmp_path, runtime, vanish_after="kill")
    c = cid()
    reply = client.ok("create", id=c, bundle=bundle(args=SLEEP, env=PATH_ENV),
                      runtime=str(wrapper))
    pid = reply["container"]["processes"][0]["system_pid"]
    fz = cgroup_dir(pid, "freezer")
    client.ok("update", id=c, status="paused")
    assert freezer_state(fz) == "FROZEN"
    try:
        # SIGCONT: harmless to the init, the runtime still freezes, signals, thaws.
        client.ok("signal", id=c, signal=18, all=True, timeout=REPLY_WAIT)
        events.wait_type(c, "resume")
        assert status_of(client, c) == "running"
        assert freezer_state(fz) == "THAWED"
    finally:
        # A plain wrapper again: the kill below must not make it vanish.
        make_wrapper(tmp_path, runtime)
    assert kill_and_wait(client, events, c)["status"] == 137


def test_ops_run_in_arrival_order(zcd, client, events, bundle, cid, runtime):
    """Operations sent back to back run one at a time, in order: each meets
    the state the one before it left (an exec after a pause is refused, the
    one after the resume runs)."""
    c = cid()
    client.ok("create", id=c, bundle=bundle(args=SLEEP, env=PATH_ENV))
    rids = [
        client.send("update", id=c, status="paused"),
        client.send("exec", id=c, pid="e1", args=["true"], env=PATH_ENV),
        client.send("update", id=c, status="running"),
        client.send("exec", id=c, pid="e2", args=["sleep", "1000"], env=PATH_ENV),
        client.send("signal", id=c, pid="e2", signal=15),
    ]
    replies = [client.recv(r, timeout=REPLY_WAIT)[1] for r in rids]
    assert replies[0]["ok"] is True, replies[0]
    assert_error(replies[1], "invalid_state", "paused")
    assert replies[2]["ok"] is True, replies[2]
    assert replies[3]["ok"] is True and replies[3]["system_pid"] > 0, replies[3]
    assert replies[4]["ok"] is True, replies[4]
    assert events.wait_exit(c, "e2")["status"] == 128 + 15
    types = [e["type"] for e in events.events if e["id"] == c]
    assert types[:3] == ["start-container", "pause", "resume"], types
    assert kill_and_wait(client, events, c)["status"] == 137
