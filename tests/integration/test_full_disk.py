"""A full state dir (issue 8: ENOSPC on state.json crashed the daemon and
restarted seq at 1; defect 12: replays must not run ahead of the durable log).

The state dir is a 2 MiB tmpfs; a filler file takes every free page while
containers run.  A full disk is an answer (`unavailable`), never a crash or a
silence: work that needs no disk goes on (DESIGN.md, "State on disk").

Before the disk is filled the event log is made to end so close to a page
boundary that the next event record needs a new page: the first event after
the fill cannot be written until space comes back."""

import errno
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import assert_error, call_alive, container_dir, rid_key, wait_for
from restore_util import assert_contiguous, kill_daemon, pid_alive, replay_all

SLEEP = ["sleep", "1000"]
PATH_ENV = ["PATH=/bin"]
PAGE = 4096


@pytest.fixture
def small_state_dir():
    """A 2 MiB tmpfs as the state dir (mode 0711: the daemon refuses a state
    dir others can write)."""
    d = tempfile.mkdtemp(prefix="zcd-fd-", dir="/tmp")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0711", "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip(f"cannot mount a tmpfs for the state dir (needs CAP_SYS_ADMIN): "
                    f"{r.stderr.strip()}")
    yield d
    if subprocess.run(["umount", d], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", d], capture_output=True)
    try:
        os.rmdir(d)
    except OSError:
        pass


def fill(dirpath):
    """Write a filler file until ENOSPC, down to the last byte of the last
    page; returns its path."""
    path = Path(dirpath, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, PAGE, 256, 1):
            buf = b"\0" * chunk
            while True:
                try:
                    os.write(fd, buf)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    assert os.statvfs(dirpath).f_bavail == 0
    return path


def tighten_log_slack(client, cid, log_path, limit=400):
    """Pause/resume `cid` until the page events.log ends in has less room
    left than the smallest record written so far (an exit record is larger
    than a pause record).  Returns whether `cid` was left paused."""
    paused = False
    sizes = []
    size = os.path.getsize(log_path)
    for _ in range(limit):
        slack = (-size) % PAGE
        if sizes and slack < min(sizes):
            return paused
        paused = not paused
        client.ok("update", id=cid, status="paused" if paused else "running")
        # the reply follows the event, which is in the log before it is published
        new = os.path.getsize(log_path)
        assert new > size, "events.log did not grow with a pause/resume event"
        sizes.append(new - size)
        size = new
    pytest.fail(f"events.log never ended close enough to a page boundary ({sizes[-4:]})")


def start(d, client, events, bundle_path, cid, **keys):
    reply = call_alive(d, client, "create", id=cid, bundle=bundle_path, **keys)
    assert reply.get("ok") is True, f"create {cid}: {reply!r}"
    events.wait_type(cid, "start-container", "init")
    return {p["pid"]: p for p in reply["container"]["processes"]}["init"]["system_pid"]


def gone(client, cid):
    reply = client.call("state", id=cid, timeout=2)
    return reply.get("ok") is False and reply["error"]["code"] == "not_found"


def answers_fast(d, client):
    """version and state each answer within 1 s."""
    for op in ("version", "state"):
        t = time.monotonic()
        reply = call_alive(d, client, op, timeout=1)
        assert reply.get("ok") is True, f"{op} on a full disk: {reply!r}"
        assert time.monotonic() - t < 1


def watch(events, seconds, pred):
    """Collect live events for `seconds` (a measurement window); returns the
    first one matching pred, or None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        events.drain(0.05)
        hits = events.find(pred)
        if hits:
            return hits[0]
    return None


def replay_for(client, seconds):
    """Send `events` {since_seq: 0} and take what comes within `seconds`:
    (rid, events received, final reply or None).  While the log cannot be
    written a daemon may end the replay at the durable seq, or send the
    durable events and hold the final reply (its last_seq) until space
    comes back; it must never send an event the log does not hold."""
    rid = client.send("events", since_seq=0)
    try:
        partials, final = client.recv(rid, timeout=seconds)
        return rid, [p["event"] for p in partials], final
    except TimeoutError:
        return rid, [p["event"] for p in client._partials.get(rid_key(rid), [])], None


def exit_of(cid, pid="init"):
    return lambda e: e["id"] == cid and e["type"] == "exit" and e.get("pid") == pid


def by_seq(evs):
    out = {}
    for e in evs:
        assert e["seq"] not in out or out[e["seq"]] == e, \
            f"seq {e['seq']} names two events: {out[e['seq']]!r} and {e!r}"
        out[e["seq"]] = e
    return out


# --------------------------------------------------------------------------


def test_full_disk_answers_and_recovers(small_state_dir, zcd_factory, runtime, bundle, cid):
    sd = small_state_dir
    d = zcd_factory(runtime=runtime, state_dir=sd)
    client, events = d.client(), d.subscriber("")
    a, b, t = cid("a"), cid("b"), cid("t")
    pids = {c: start(d, client, events, bundle(args=SLEEP), c) for c in (a, b, t)}
    reply = client.ok("exec", id=a, pid="e1", args=SLEEP, env=PATH_ENV)
    e1_pid = reply["system_pid"]
    events.wait_type(a, "start-process", "e1")
    tighten_log_slack(client, t, Path(sd, "events.log"))
    last_before = client.ok("state")["last_seq"]

    findings = []      # checked last, so that one run reports them all
    filler = fill(sd)
    try:
        answers_fast(d, client)

        # a create needs the disk: unavailable, saying why, leaving nothing
        n = cid("new")
        reply = call_alive(d, client, "create", timeout=5, id=n, bundle=bundle(args=["true"]))
        assert_error(reply, "unavailable", "space")
        assert gone(client, n)
        assert not container_dir(sd, n).exists()
        events.drain(0.05)
        assert not events.find(lambda e: e["id"] == n)
        answers_fast(d, client)

        # a signal needs no disk: it is answered, the processes die.  (Its
        # reply follows no event of its own; the exit is a separate event.)
        signal_rid = client.send("signal", id=a, signal=9)
        try:
            signal_reply = client.recv(signal_rid, timeout=5)[1]
            assert signal_reply.get("ok") is True, f"signal on a full disk: {signal_reply!r}"
        except TimeoutError:
            assert d.running(), d.log_tail(30)
            signal_reply = None
            findings.append("no reply to `signal` within 5 s while the disk is full")
        wait_for(lambda: not pid_alive(pids[a]) and not pid_alive(e1_pid), 10,
                 "the killed container's processes to die")
        published = watch(events, 2.0, exit_of(a))
        print(f"[{runtime}] exit of {a} while the disk is full: "
              + (f"published (seq {published['seq']})" if published else "held"))
        answers_fast(d, client)
        replay_rid, full_replay, replay_final = replay_for(client, 2.0)
        print(f"[{runtime}] replay while the disk is full: {len(full_replay)} events "
              f"(durable: {last_before}), final reply "
              + ("held" if replay_final is None else repr(replay_final)))
        answers_fast(d, client)
        seen_full = list(events.events)
    finally:
        os.unlink(filler)

    # space is back: the held events come out, in order, nothing lost
    if replay_final is None:
        partials, replay_final = client.recv(replay_rid, timeout=10)
        full_replay = [p["event"] for p in partials]
    assert replay_final.get("ok") is True, replay_final
    assert_contiguous(full_replay)
    assert replay_final["last_seq"] >= full_replay[-1]["seq"]
    if signal_reply is None:
        signal_reply = client.recv(signal_rid, timeout=10)[1]
        assert signal_reply.get("ok") is True, f"signal, answered late: {signal_reply!r}"
    ex1 = events.wait_exit(a, "e1", timeout=10)
    ex = events.wait_exit(a, timeout=10)
    assert ex1["seq"] < ex["seq"], "the exec's exit after its init's"
    wait_for(lambda: gone(client, a), 10, f"{a} to leave state")
    start(d, client, events, bundle(args=["true"]), n)
    events.wait_exit(n)
    for c in (b, t):
        client.ok("update", id=c, status="running")
        client.ok("signal", id=c, signal=9)
        events.wait_exit(c)

    live = sorted(events.events, key=lambda e: e["seq"])
    assert_contiguous(live)
    assert live[0]["seq"] == 1 and live[-1]["seq"] > last_before
    everything = replay_all(client, since_seq=0)
    assert everything == live, "the replay differs from what was published"
    live_by_seq = by_seq(live)
    for e in full_replay + seen_full:
        assert live_by_seq.get(e["seq"]) == e, f"event {e!r} (seen while full) was lost"
    assert client.ok("state")["containers"] == []
    # the exit statuses survive the full disk (the shim cannot write exitStatus)
    if (ex1["status"], ex["status"]) != (137, 137):
        findings.append(f"exit statuses of processes killed by SIGKILL on a full disk: "
                        f"e1 {ex1['status']}, init {ex['status']} (expected 137)")
    assert not findings, "; ".join(findings)


def test_full_disk_replay_only_durable(small_state_dir, zcd_factory, runtime, bundle, cid):
    """Defect 12: while the log cannot be written, neither the live stream
    nor a replay may carry an event that a crash would lose.  The daemon is
    SIGKILLed while the disk is full; everything a client saw must be in
    the log the next daemon replays, under the same seq."""
    sd = small_state_dir
    d = zcd_factory(runtime=runtime, state_dir=sd)
    client, events = d.client(), d.subscriber("")
    a, b, t = cid("a"), cid("b"), cid("t")
    pids = {c: start(d, client, events, bundle(args=SLEEP), c) for c in (a, b, t)}
    tighten_log_slack(client, t, Path(sd, "events.log"))

    filler = fill(sd)
    try:
        client.ok("signal", id=a, signal=9, timeout=5)
        client.ok("signal", id=b, signal=9, timeout=5)
        wait_for(lambda: not pid_alive(pids[a]) and not pid_alive(pids[b]), 10,
                 "the killed containers to die")
        watch(events, 1.5, lambda e: False)
        replays = [replay_for(client, 1.0)[1]]
        watch(events, 0.5, lambda e: False)
        replays.append(replay_for(client, 1.0)[1])
        seen = list(events.events)
        kill_daemon(d)
    finally:
        os.unlink(filler)

    d.start()
    client, events = d.client(), d.subscriber("")

    def both_exits():
        log = replay_all(client, since_seq=0)
        done = all(any(e["id"] == c and e["type"] == "exit" for e in log) for c in (a, b))
        return log if done else None
    after = wait_for(both_exits, 20, "both exits in the log after the restart")
    assert_contiguous(after)
    durable = by_seq(after)
    problems = []
    for what, evs in (("published live", seen), ("replayed", replays[0] + replays[1])):
        lost = [e for e in evs if durable.get(e["seq"]) != e]
        if lost:
            problems.append(f"{what} while the disk was full, yet not in the log after a "
                            f"crash (or there under another content): "
                            f"{[(e['seq'], e['type'], e['id']) for e in lost]}")
    assert not problems, "; ".join(problems)
    # both exits are reported exactly once, whenever they were logged
    for c in (a, b):
        exits = [e for e in after if e["id"] == c and e["type"] == "exit"]
        assert len(exits) == 1, f"{c}: {exits}"
    wait_for(lambda: gone(client, a) and gone(client, b), 10, "the killed containers to go")
    client.ok("update", id=t, status="running")
    client.ok("signal", id=t, signal=9)
    events.wait_exit(t)
