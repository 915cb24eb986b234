"""`stats` (PROTOCOL.md): read from the containers' own cgroups.

The stats actor keeps each container's cgroup directories as the container
reported them once (issue 9 part 4: one source of truth, no path derived
again from a pid).  So the numbers must be the container's: its memory
limit, its pids; after a daemon restart too (a restored container reports
its cgroups again); and a new container that reuses an id gets its own
cgroup, never the earlier one's."""

from conftest import cgroup_dir, read_text, wait_for
from restore_util import kill_daemon, start_timed

LIMIT = 48 * 1024 * 1024
SLEEP = ["sleep", "1000"]


def limited(bundle, limit, args=SLEEP):
    def edit(config):
        config["linux"]["resources"]["memory"] = {"limit": limit, "swap": limit}
    return bundle(args=args, edit=edit)


def init_pid(container):
    return {p["pid"]: p for p in container["processes"]}["init"]["system_pid"]


def stats_of(client, c):
    reply = client.ok("stats", id=c)
    assert isinstance(reply["timestamp"], int) and reply["timestamp"] > 0, reply
    assert set(reply["stats"]) == {c}, reply
    return reply["stats"][c]


def assert_is_the_containers(s, init, limit):
    """The Stats map holds this container's cgroup, not an empty map, not
    the host's."""
    assert s, "empty Stats for a running container"
    assert s["memory"]["usage"]["limit"] == limit, s["memory"]
    assert s["memory"]["usage"]["usage"] > 0, s["memory"]
    assert s["pids"]["current"] >= 1, s["pids"]
    assert s["cpu"]["usage"]["total"] > 0, s["cpu"]
    # v1 here: the same limit the runtime wrote into the init's cgroup
    mem = cgroup_dir(init, "memory")
    assert int(read_text(mem / "memory.limit_in_bytes")) == limit


def kill_all(client, events, *ids):
    for c in ids:
        client.ok("signal", id=c, signal=9)
    for c in ids:
        events.wait_exit(c)
        wait_for(lambda: client.call("state", id=c).get("ok") is False, what=f"{c} to leave")


def test_stats_read_the_containers_cgroup(zcd, client, events, bundle, cid):
    c, other = cid("st"), cid("other")
    init = init_pid(client.ok("create", id=c, bundle=limited(bundle, LIMIT))["container"])
    client.ok("create", id=other, bundle=limited(bundle, 2 * LIMIT))
    assert_is_the_containers(stats_of(client, c), init, LIMIT)
    both = client.ok("stats")["stats"]
    assert set(both) >= {c, other}
    assert both[c]["memory"]["usage"]["limit"] == LIMIT
    assert both[other]["memory"]["usage"]["limit"] == 2 * LIMIT
    kill_all(client, events, c, other)
    # gone: not_found, and no longer among all
    assert client.call("stats", id=c)["error"]["code"] == "not_found"
    assert c not in client.ok("stats")["stats"]
    # every internal message of those lives (req, started, event, logged,
    # gone, cgroup, uncgroup, collect, reply) was one its receiver takes
    assert client.ok("metrics")["actor_refused_total"] == 0


def test_stats_after_a_restart(zcd, bundle, cid):
    c = cid("str")
    client = zcd.client()
    init = init_pid(client.ok("create", id=c, bundle=limited(bundle, LIMIT))["container"])
    kill_daemon(zcd)
    start_timed(zcd)
    client = zcd.client()
    wait_for(lambda: client.call("state", id=c).get("ok") is True, what=f"{c} restored")
    assert_is_the_containers(stats_of(client, c), init, LIMIT)
    kill_all(client, zcd.subscriber(""), c)


def test_a_reused_id_has_its_own_cgroup(zcd, client, events, bundle, cid):
    c = cid("reuse")
    client.ok("create", id=c, bundle=limited(bundle, LIMIT))
    kill_all(client, events, c)
    events.events.clear()
    second = client.ok("create", id=c, bundle=limited(bundle, 2 * LIMIT))["container"]
    assert_is_the_containers(stats_of(client, c), init_pid(second), 2 * LIMIT)
    kill_all(client, events, c)
