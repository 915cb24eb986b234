"""OOM kills (PROTOCOL.md section 5): the `oom` event comes before the init's
`exit`, which says oom_killed true and 137; a plain SIGKILL says false.
Also after a restart: the restored container's cgroup is watched again."""

from conftest import cgroup_dir, read_text
from restore_util import kill_daemon, of, replay_all, start_timed

LIMIT = 16 * 1024 * 1024
HOG = ["sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done"]
# waits for a file the test writes into its /tmp, then hogs
HOG_LATER = ["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done; "
             "x=aaaaaaaa; while true; do x=$x$x; done"]


def limited(bundle, args):
    def edit(config):
        config["linux"]["resources"]["memory"] = {"limit": LIMIT, "swap": LIMIT}
    return bundle(args=args, edit=edit)


def assert_oom_then_exit(log, cid):
    kinds = [e["type"] for e in log if e["id"] == cid]
    assert kinds == ["start-container", "oom", "exit"], kinds
    ex = of(log, cid, "exit")[0]
    assert ex["pid"] == "init"
    assert ex["status"] == 137, ex
    assert ex["oom_killed"] is True, ex


def test_oom_event_before_exit_and_oom_killed(zcd, client, events, bundle, cid):
    c = cid("oom")
    reply = client.ok("create", id=c, bundle=limited(bundle, HOG))
    init = {p["pid"]: p for p in reply["container"]["processes"]}["init"]["system_pid"]
    events.wait_exit(c, timeout=60)
    live = [e for e in events.events if e["id"] == c]
    assert_oom_then_exit(live, c)
    assert_oom_then_exit(replay_all(client, id=c), c)
    assert init > 0


def test_plain_sigkill_is_not_oom(zcd, client, events, bundle, cid):
    c = cid("k9")
    client.ok("create", id=c, bundle=limited(bundle, ["sleep", "1000"]))
    client.ok("signal", id=c, signal=9)
    ex = events.wait_exit(c)
    assert ex["status"] == 137 and ex["oom_killed"] is False, ex
    assert not of(replay_all(client, id=c), c, "oom")


def test_oom_after_restart_is_still_seen(zcd, client, events, bundle, cid, tmp_path):
    c = cid("oomr")

    def edit(config):
        config["linux"]["resources"]["memory"] = {"limit": LIMIT, "swap": LIMIT}
    b = bundle(args=HOG_LATER, edit=edit)
    reply = client.ok("create", id=c, bundle=b)
    init = {p["pid"]: p for p in reply["container"]["processes"]}["init"]["system_pid"]
    assert int(read_text(cgroup_dir(init, "memory") / "memory.limit_in_bytes")) == LIMIT
    kill_daemon(zcd)
    start_timed(zcd)
    client, events = zcd.client(), zcd.subscriber("")
    # /tmp of the container is a tmpfs of its own: reach it through /proc
    with open(f"/proc/{init}/root/tmp/go", "w"):
        pass
    events.wait_exit(c, timeout=60)
    assert_oom_then_exit(replay_all(client, id=c), c)
