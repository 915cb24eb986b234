"""The durable event log through the wire (PROTOCOL.md section 5, `events`):
replay filters, retention and truncation, seq across restarts, a torn tail,
and the lossless subscriber of libzcd with a tiny receive high-water mark."""

import os
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import BUILD
from restore_util import (assert_contiguous, create_running, of, pump_updates, replay, replay_all,
                          restart)

SLEEP = ["sleep", "1000"]


def resume_all(client, ids):
    for c in ids:
        client.ok("update", id=c, status="running")


def kill_all(client, events, ids):
    for c in ids:
        client.ok("signal", id=c, signal=9)
    for c in ids:
        events.wait_exit(c)


def short_lived(client, events, bundle, cid, names):
    """Start and finish one `true` container per name; returns their ids."""
    ids = [cid(n) for n in names]
    b = bundle(args=["true"])
    for c in ids:
        client.ok("create", id=c, bundle=b)
        events.wait_exit(c)
    return ids


# --------------------------------------------------------------------------
# replay filters


def test_replay_since_seq_since_ts_and_id(zcd, client, events, bundle, cid):
    a, b, c = short_lived(client, events, bundle, cid, ["a", "b", "c"])
    everything, final = replay(client, since_seq=0)
    assert_contiguous(everything)
    assert final["last_seq"] == everything[-1]["seq"] == 6
    assert "truncated" not in final or final["truncated"] is False
    assert [(e["id"], e["type"]) for e in everything] == [
        (a, "start-container"), (a, "exit"), (b, "start-container"), (b, "exit"),
        (c, "start-container"), (c, "exit")]
    # the replay carries the very events that were published
    assert everything == sorted(events.events, key=lambda e: e["seq"])

    for k in range(0, 7):
        got = replay_all(client, since_seq=k)
        assert [e["seq"] for e in got] == list(range(k + 1, 7))

    # since: strictly after a timestamp
    ts = [e["ts"] for e in everything]
    assert ts == sorted(ts)
    for i, e in enumerate(everything):
        got = replay_all(client, since=e["ts"])
        assert [g["seq"] for g in got] == [x["seq"] for x in everything if x["ts"] > e["ts"]]
    assert replay_all(client, since=ts[0] - 1) == everything
    assert replay_all(client, since=ts[-1]) == []

    # id, alone and with since_seq
    only_b, final = replay(client, id=b)
    assert only_b == of(everything, b)
    assert final["last_seq"] == 6, "last_seq is the newest seq, matching or not"
    assert replay_all(client, id=b, since_seq=3) == of(everything, b)[1:]
    assert replay_all(client, id=cid("never")) == []
    assert replay_all(client, id=a, since_seq=6) == []


# --------------------------------------------------------------------------
# retention


def test_retain_50_truncates_old_replays(zcd_factory, runtime, bundle, cid):
    d = zcd_factory(runtime=runtime, args=["--events-retain", "50"])
    client, events = d.client(), d.subscriber("")
    ids = [cid(f"u{i}") for i in range(3)]
    for c in ids:
        create_running(client, c, bundle(args=SLEEP))
    pump_updates(client, ids, 120 - 3)
    last = client.ok("state")["last_seq"]
    assert last == 120

    kept, final = replay(client, since_seq=0)
    assert final.get("truncated") is True
    oldest = final["oldest_seq"]
    assert oldest == last - 50 + 1
    assert [e["seq"] for e in kept] == list(range(oldest, last + 1))
    assert final["last_seq"] == last

    for since in (oldest - 1, oldest, last - 1, last):
        got, final = replay(client, since_seq=since)
        assert not final.get("truncated", False), (since, final)
        assert [e["seq"] for e in got] == list(range(since + 1, last + 1))
    got, final = replay(client, since_seq=oldest - 2)
    assert final.get("truncated") is True and final["oldest_seq"] == oldest

    # retention survives a restart: still the newest 50, seq continues
    resume_all(client, ids)
    last = client.ok("state")["last_seq"]
    restart(d, "term")
    client, events = d.client(), d.subscriber("")
    kept, final = replay(client, since_seq=0)
    assert final.get("truncated") is True
    assert [e["seq"] for e in kept] == list(range(last - 49, last + 1))
    kill_all(client, events, ids)
    assert events.events[0]["seq"] == last + 1


# --------------------------------------------------------------------------
# seq across restarts


@pytest.mark.parametrize("how", ["term", "kill"])
def test_seq_contiguous_across_restarts(zcd_factory, runtime, bundle, cid, state_dir, how):
    d = zcd_factory(runtime=runtime, state_dir=state_dir)
    client, events = d.client(), d.subscriber("")
    ids = [cid("k0"), cid("k1")]
    for c in ids:
        create_running(client, c, bundle(args=SLEEP))
    paused = pump_updates(client, ids, 10)
    events.wait(lambda: len(events.events) >= 12, 20, "12 live events")
    before = replay_all(client, since_seq=0)
    assert_contiguous(before)
    assert before == events.events, "every published event is in the log"

    for round_ in range(2):
        restart(d, how)
        client, events = d.client(), d.subscriber("")
        assert client.ok("state")["last_seq"] == before[-1]["seq"]
        assert sorted(c["id"] for c in client.ok("state")["containers"]) == sorted(ids)
        pump_updates(client, ids, 4, paused)
        after = replay_all(client, since_seq=0)
        assert after[:len(before)] == before
        assert_contiguous(after)
        assert len(after) == len(before) + 4
        before = after
    kill_all(client, events, ids)
    assert_contiguous(replay_all(client, since_seq=0))


# --------------------------------------------------------------------------
# a torn tail


def _garbage_variants():
    # random bytes; zeros; a record header promising more than follows; a
    # whole record whose checksum is wrong
    return {
        "random": os.urandom(37),
        "zeros": bytes(64),
        "short_header": struct.pack("<I", 200) + b"\x01\x02",
        "promise": struct.pack("<II", 120, 0xDEADBEEF) + b"\x81\xa3seq\xcd",
        "bad_crc": struct.pack("<II", 5, 0x12345678) + b"\x81\xa1a\x01\x00",
    }


@pytest.mark.parametrize("kind", sorted(_garbage_variants()))
def test_torn_tail_is_dropped_and_seq_continues(zcd_factory, bundle, cid, state_dir, kind):
    # the event log does not depend on the runtime: runc only
    d = zcd_factory(runtime="runc", state_dir=state_dir)
    client, events = d.client(), d.subscriber("")
    short_lived(client, events, bundle, cid, ["t0", "t1"])
    before = replay_all(client, since_seq=0)
    assert len(before) == 4
    d.close_clients()
    assert d.stop() == 0
    log = Path(state_dir, "events.log")
    size = log.stat().st_size
    with open(log, "ab") as f:
        f.write(_garbage_variants()[kind])
    d.start()
    assert log.stat().st_size == size, "the torn tail is cut off the file"
    client, events = d.client(), d.subscriber("")
    assert replay_all(client, since_seq=0) == before
    assert client.ok("state")["last_seq"] == 4
    short_lived(client, events, bundle, cid, ["t2"])
    after = replay_all(client, since_seq=0)
    assert after[:4] == before
    assert_contiguous(after)
    assert [e["seq"] for e in events.events] == [5, 6]


# --------------------------------------------------------------------------
# the lossless subscriber (libzcd) with RCVHWM 10 and a stalled consumer

LOSSLESS_EVENTS = int(os.environ.get("ZCD_LOSSLESS_EVENTS", "600"))


# The replay path is the daemon's alone: the runtime only makes the events,
# so one runtime covers it (the suite's time goes where runtimes differ).
@pytest.mark.parametrize("runtime", ["runc"], indirect=True)
def test_lossless_subscriber_hwm10_stalled(zcd, client, events, bundle, cid, tmp_path):
    prog = BUILD / "tests" / "test_subscriber_live"
    if not prog.exists():
        pytest.fail(f"{prog} is not built (make)")
    ids = [cid(f"p{i}") for i in range(3)]
    for c in ids:
        create_running(client, c, bundle(args=SLEEP))
    go, end, out = tmp_path / "go", tmp_path / "end", tmp_path / "out"
    env = dict(os.environ, ZCD_LIVE_ADDRESS=zcd.cmd_ep, ZCD_LIVE_EVENTS_ADDRESS=zcd.ev_ep,
               ZCD_LIVE_GO=str(go), ZCD_LIVE_END=str(end), ZCD_LIVE_OUT=str(out))
    consumer = subprocess.Popen([str(prog)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        # the consumer has subscribed and replayed the 3 start events
        seen = []
        for line in consumer.stdout:
            seen.append(line)
            if line.strip() == "started":
                break
        else:
            pytest.fail("consumer did not start:\n" + "".join(seen))
        half = LOSSLESS_EVENTS // 2
        paused = pump_updates(client, ids, half)
        go.touch()  # the consumer reads again while the rest is produced
        pump_updates(client, ids, LOSSLESS_EVENTS - half, paused)
        last = client.ok("state")["last_seq"]
        assert last == 3 + LOSSLESS_EVENTS
        tmp = tmp_path / "end.tmp"
        tmp.write_text(str(last))
        tmp.rename(end)
        rest, _ = consumer.communicate(timeout=120)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    assert consumer.returncode == 0, f"consumer failed:\n{rest}"
    lines = out.read_text().splitlines()
    assert lines[-1].startswith("replays ")
    print(f"lossless subscriber: {last} events, {lines[-1]}")
    seqs = [int(line.split()[0]) for line in lines[:-1]]
    assert seqs == list(range(1, last + 1))
    logged = replay_all(client, since_seq=0)
    assert [f"{e['seq']} {e['type']} {e['id']}" for e in logged] == lines[:-1]
    resume_all(client, ids)
    kill_all(client, events, ids)
