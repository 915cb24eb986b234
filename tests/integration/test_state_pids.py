"""`pids` in the Container map (PROTOCOL.md `state`, `create`): the host
pids in the container's cgroup as they are now.

A v1 cgroup.procs read again through the same open file within about a
second lists the pids of its first read (the kernel keeps a pidlist per
open file), so `state` right behind a change must not re-read a kept fd."""

from conftest import wait_for

SLEEP = ["sleep", "1000"]
PATH_ENV = ["PATH=/bin"]


def pids_of(client, c):
    return client.ok("state", id=c)["containers"][0]["pids"]


def test_state_pids_follow_execs_at_once(client, events, bundle, cid):
    c = cid("pids")
    created = client.ok("create", id=c, bundle=bundle(args=SLEEP))["container"]
    init = {p["pid"]: p for p in created["processes"]}["init"]["system_pid"]
    assert created["pids"] == [init]
    assert pids_of(client, c) == [init]
    seen = [init]
    for i in range(3):
        spid = client.ok("exec", id=c, pid=f"e{i}", args=SLEEP, env=PATH_ENV)["system_pid"]
        seen.append(spid)
        # no pause between the exec and the state: a stale list would miss it
        assert sorted(pids_of(client, c)) == sorted(seen)
    client.ok("signal", id=c, pid="e0", signal=9)
    events.wait_exit(c, pid="e0")
    seen.remove(seen[1])
    wait_for(lambda: sorted(pids_of(client, c)) == sorted(seen), what="e0 gone from pids")
    client.ok("signal", id=c, signal=9, all=True)
    events.wait_exit(c)
    wait_for(lambda: client.call("state", id=c).get("ok") is False, what=f"{c} to leave")
