"""Hostile input (issue 8, and issue 14 defect 4): names that collide with the
daemon's or a container's own files, client paths that would block the loop,
invalid UTF-8, clients that walk away from their replays, ids reused while the
old container drains, signals to exec processes whose pid may be recycled.

State layout under test (DESIGN.md, "State on disk"): the daemon's own files
stay at <state>/ (zcd.sock, events.sock, zcd.lock, events.log, .trash/,
.broken/); client-chosen names live only under <state>/containers/<id>/
(state.json, procs/<process-id>/).

Every test that involves a container runs on runc and crun."""

import itertools
import os
import re
import socket
import stat
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import zmq

from conftest import (ZCD, assert_error, call_alive, container_dir, cpu_share, error_code, pack,
                      process_dir, unpack, wait_for)
from restore_util import (assert_contiguous, kill_daemon, pump_updates, replay, replay_all,
                          restart)

SLEEP = ["sleep", "1000"]
PATH_ENV = ["PATH=/bin"]


# --------------------------------------------------------------------------
# helpers


def start(d, client, events, bundle_path, cid, **keys):
    """create (noticing a daemon death at once), check the reply and the
    start-container event; returns the Container map."""
    reply = call_alive(d, client, "create", id=cid, bundle=bundle_path, **keys)
    assert reply.get("ok") is True, f"create {cid!r}: {reply!r}"
    container = reply["container"]
    assert container["id"] == cid and container["status"] == "running", container
    events.wait_type(cid, "start-container", "init")
    return container


def exec_ok(d, client, events, cid, pid, args, **keys):
    keys.setdefault("env", PATH_ENV)
    reply = call_alive(d, client, "exec", id=cid, pid=pid, args=args, **keys)
    assert reply.get("ok") is True, f"exec {cid}/{pid}: {reply!r}"
    events.wait_type(cid, "start-process", pid)
    return reply["system_pid"]


def gone(client, cid):
    reply = client.call("state", id=cid)
    return reply.get("ok") is False and reply["error"]["code"] == "not_found"


def state_of(client, cid):
    return client.ok("state", id=cid)["containers"][0]


def procs_of(client, cid):
    return {p["pid"]: p for p in state_of(client, cid)["processes"]}


def kill_and_wait(client, events, cid):
    client.ok("signal", id=cid, signal=9)
    return events.wait_exit(cid)


def no_events_for(events, cid):
    events.drain(0.05)
    return events.find(lambda e: e["id"] == cid) == []


def broken_entries(state_dir):
    b = Path(state_dir, ".broken")
    return sorted(os.listdir(b)) if b.is_dir() else []


# hand-made msgpack: the msgpack module refuses to write invalid UTF-8 in a str


class BadStr:
    """A msgpack str whose bytes are not (necessarily) valid UTF-8."""

    def __init__(self, raw):
        self.raw = raw

    def __repr__(self):
        return f"BadStr({self.raw!r})"


def pack_hostile(obj):
    if isinstance(obj, BadStr):
        n = len(obj.raw)
        if n < 32:
            head = bytes([0xa0 | n])
        elif n < 256:
            head = b"\xd9" + bytes([n])
        elif n < 65536:
            head = b"\xda" + struct.pack(">H", n)
        else:
            head = b"\xdb" + struct.pack(">I", n)
        return head + obj.raw
    if isinstance(obj, dict):
        n = len(obj)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(pack_hostile(k) + pack_hostile(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        n = len(obj)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(pack_hostile(x) for x in obj)
    return pack(obj)


_hostile_rids = itertools.count(1)


def call_hostile(d, client, op, timeout=10.0, **keys):
    """Send a request built by pack_hostile; the final reply (fails at once
    when the daemon dies)."""
    rid = f"hostile-{next(_hostile_rids)}"
    body = {"op": op, "rid": rid}
    body.update(keys)
    client.send_raw([pack_hostile(body)])
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.recv(rid, timeout=0.05)[1]
        except TimeoutError:
            pass
        except UnicodeDecodeError as e:
            pytest.fail(f"the reply to {op} {keys!r} holds invalid UTF-8 (the request was "
                        f"taken as valid): {e}")
        if not d.running():
            pytest.fail(f"zcd died on {op} {keys!r}:\n{d.log_tail(30)}")
        if time.monotonic() >= deadline:
            pytest.fail(f"no reply to {op} {keys!r} within {timeout}s:\n{d.log_tail(30)}")


def pump_pause_resume(client, ids, n, window=4, timeout=240):
    """n pause/resume toggles, each exactly one event; leaves them running."""
    paused = pump_updates(client, ids, n, window=window, timeout=timeout)
    for c in ids:
        if paused[c]:
            client.ok("update", id=c, status="running")


# --------------------------------------------------------------------------
# defect 1: container ids that name the daemon's own files

DAEMON_FILES = ["zcd.sock", "events.sock", "zcd.lock", "events.log"]


def second_daemon_refuses(state_dir, runtime):
    """A second zcd on the same state dir must exit non-zero (the lock)."""
    try:
        p = subprocess.run([str(ZCD), "--state-dir", str(state_dir), "--runtime", runtime,
                            "--log-level", "debug"], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=10)
    except subprocess.TimeoutExpired as e:
        pytest.fail("a second zcd on the same state dir kept running (the lock is not held):\n"
                    + (e.stderr or b"").decode(errors="replace")[-2000:])
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode != 0, f"a second zcd on the same state dir exited 0:\n{out}"
    return out


def own_files(state_dir):
    sd = Path(state_dir)
    return {f: os.lstat(sd / f) for f in DAEMON_FILES}


def assert_own_files_intact(state_dir, before, log_before):
    now = own_files(state_dir)
    for f in ("zcd.sock", "events.sock"):
        assert stat.S_ISSOCK(now[f].st_mode), f"{f} is no longer a socket"
        assert now[f].st_ino == before[f].st_ino, f"{f} was replaced"
    assert stat.S_ISREG(now["zcd.lock"].st_mode), "zcd.lock is no longer a regular file"
    assert now["zcd.lock"].st_ino == before["zcd.lock"].st_ino, "zcd.lock was replaced"
    assert stat.S_ISREG(now["events.log"].st_mode), "events.log is no longer a regular file"
    log = Path(state_dir, "events.log").read_bytes()
    assert log.startswith(log_before), "events.log lost bytes it held"
    return log


@pytest.mark.parametrize("name", DAEMON_FILES + ["containers"])
def test_container_id_naming_daemon_file(zcd_factory, runtime, bundle, cid, state_dir, name):
    d = zcd_factory(runtime=runtime, state_dir=state_dir)
    client, events = d.client(), d.subscriber("")
    pre = cid("pre")
    start(d, client, events, bundle(args=["true"]), pre)
    events.wait_exit(pre)
    # the exit is in the log before it is published
    before = own_files(state_dir)
    log_before = Path(state_dir, "events.log").read_bytes()

    # a valid id: the container runs
    start(d, client, events, bundle(args=SLEEP), name)
    assert state_of(client, name)["status"] == "running"
    assert Path(container_dir(state_dir, name), "state.json").is_file()
    log = assert_own_files_intact(state_dir, before, log_before)
    assert len(log) > len(log_before), "the start-container event is not in events.log"

    # the daemon's endpoints still work for new connections, its lock is held
    assert d.client().ok("version", timeout=2)
    d.subscriber("")
    second_daemon_refuses(state_dir, runtime)
    assert call_alive(d, client, "version", timeout=2)["ok"] is True
    assert_own_files_intact(state_dir, before, log_before)

    # the container exits; its clean-up removes only its own directory
    assert kill_and_wait(client, events, name)["status"] == 137
    wait_for(lambda: gone(client, name), what=f"{name} to leave state")
    wait_for(lambda: not container_dir(state_dir, name).exists(), 10,
             f"{container_dir(state_dir, name)} to go")
    assert_own_files_intact(state_dir, before, log_before)
    assert d.client().ok("version", timeout=2)
    assert d.running()

    # after a restart seq continues: nothing is published twice
    live = sorted(events.events, key=lambda e: e["seq"])
    assert_contiguous(live)
    last = live[-1]["seq"]
    restart(d, "term")
    client, events = d.client(), d.subscriber("")
    assert client.ok("state")["last_seq"] == last
    assert replay_all(client, since_seq=0) == live
    after = cid("after")
    start(d, client, events, bundle(args=["true"]), after)
    assert events.wait_type(after, "start-container")["seq"] == last + 1
    events.wait_exit(after)
    assert events.find(lambda e: e["seq"] <= last) == [], "old events published again"


# --------------------------------------------------------------------------
# defect 2: exec ids that name a container's own files

EXEC_FILE_IDS = ["state.json", "procs", "exit", "control", "shim.pid", "exitStatus",
                 "process.json", "pid", "starttime", "shim.log"]


def test_exec_id_naming_container_file(zcd, client, events, bundle, cid):
    c = cid("xf")
    start(zcd, client, events, bundle(args=SLEEP), c)
    state_json = container_dir(zcd.state_dir, c) / "state.json"
    assert state_json.is_file()
    accepted, refused = [], {}
    for name in EXEC_FILE_IDS:
        reply = call_alive(zcd, client, "exec", id=c, pid=name, args=SLEEP, env=PATH_ENV)
        if reply.get("ok") is True:
            events.wait_type(c, "start-process", name)
            accepted.append(name)
        else:
            code = error_code(reply)
            assert code in ("invalid_argument", "already_exists"), \
                f"exec pid {name!r}: {reply!r}"
            refused[name] = reply
            assert not events.find(lambda e: e["id"] == c and e.get("pid") == name)
        assert state_of(client, c)["status"] == "running", f"after exec {name!r}"
        assert state_json.is_file(), f"exec pid {name!r} removed the container's state.json"
    assert set(procs_of(client, c)) == {"init"} | set(accepted)

    # some of them exit: their clean-up touches only their own directory
    ended = [n for n in ("state.json", "exitStatus", "procs") if n in accepted]
    for name in ended:
        client.ok("signal", id=c, pid=name, signal=9)
        assert events.wait_exit(c, name)["status"] == 137
    wait_for(lambda: not set(ended) & set(procs_of(client, c)), what="the ended execs to go")
    assert state_json.is_file(), "an exec's exit removed the container's state.json"
    running = {"init"} | set(accepted) - set(ended)

    # a new daemon on the same state dir still has the container, running
    kill_daemon(zcd)
    zcd.start()
    client, events = zcd.client(), zcd.subscriber("")
    reply = client.call("state", id=c)
    assert reply.get("ok") is True, f"container lost after the restart: {reply!r}; " \
        f".broken holds {broken_entries(zcd.state_dir)}"
    assert reply["containers"][0]["status"] == "running"
    assert set(procs_of(client, c)) == running
    assert broken_entries(zcd.state_dir) == []
    assert kill_and_wait(client, events, c)["status"] == 137
    for name in running - {"init"}:
        assert events.wait_exit(c, name)["status"] == 137


# --------------------------------------------------------------------------
# defect 4: the loop never blocks on a client's path


@pytest.fixture
def zcd_runc(zcd_factory):
    """For tests where no container ever runs: one runtime is enough."""
    return zcd_factory(runtime="runc")


CONFIG_KINDS = ["fifo", "symlink", "directory", "chardev", "huge"]


@pytest.mark.parametrize("kind", CONFIG_KINDS)
def test_config_json_not_a_regular_file(zcd_runc, bundle, cid, tmp_path, kind):
    d = zcd_runc
    client, other, events = d.client(), d.client(), d.subscriber("")
    b = Path(bundle(args=["true"]))
    config = b / "config.json"
    if kind == "fifo":
        config.unlink()
        os.mkfifo(config)
    elif kind == "symlink":
        real = tmp_path / "real-config.json"
        config.rename(real)
        config.symlink_to(real)
    elif kind == "directory":
        config.unlink()
        config.mkdir()
    elif kind == "chardev":
        config.unlink()
        os.mknod(config, stat.S_IFCHR | 0o600, os.makedev(1, 5))    # /dev/zero
    elif kind == "huge":
        with open(config, "r+b") as f:
            f.truncate(2**30)                                       # sparse, 1 GiB
    c = cid("cfg")
    try:
        t0 = time.monotonic()
        create_rid = client.send("create", id=c, bundle=str(b))
        version = other.call("version", timeout=1)
        assert version.get("ok") is True
        _, reply = client.recv(create_rid, timeout=max(0.05, 1 - (time.monotonic() - t0)))
        assert time.monotonic() - t0 < 1.0
        assert_error(reply, "invalid_argument", "config.json")
    except TimeoutError as e:
        pytest.fail(f"config.json as a {kind}: {e} (the loop is blocked?)\n{d.log_tail(20)}")
    finally:
        if kind == "fifo":
            # release a daemon stuck in open(): a writer appears and goes
            try:
                os.close(os.open(config, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
    assert gone(client, c)
    assert no_events_for(events, c)
    assert not container_dir(d.state_dir, c).exists()
    assert client.ok("version", timeout=1)


# issue 14, defect 4: stdio paths are checked, never `internal`

STDIO_CASES = [
    ("stdout", "directory", "director"),
    ("stdout", "socket", "socket"),
    ("stdout", "too_long", ""),
    ("stdout", "missing_parent", ""),
    ("stderr", "directory", "director"),
    ("stdin", "missing", ""),
    ("stdin", "directory", "director"),
]


@pytest.fixture
def short_dir():
    """A directory with a short path (AF_UNIX socket paths are <= 107 bytes)."""
    d = tempfile.mkdtemp(prefix="zcd-h-", dir="/tmp")
    yield Path(d)
    subprocess.run(["rm", "-rf", d])


def stdio_path(kind, base):
    if kind == "directory":
        p = base / "a-directory"
        p.mkdir(exist_ok=True)
        return str(p), None
    if kind == "socket":
        p = base / "out.sock"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(p))
        s.listen(1)
        return str(p), s
    if kind == "too_long":
        return "/tmp/" + "/".join(["d" * 200] * 25), None          # > PATH_MAX
    if kind == "missing_parent":
        return str(base / "no-such-dir" / "out"), None
    if kind == "missing":
        return str(base / "no-such-input"), None
    raise ValueError(kind)


@pytest.mark.parametrize("key,kind,needle", STDIO_CASES,
                         ids=[f"{k}-{v}" for k, v, _ in STDIO_CASES])
def test_stdio_path_refused(zcd, client, events, bundle, cid, short_dir, key, kind, needle):
    path, keep = stdio_path(kind, short_dir)
    try:
        c = cid("io")
        reply = call_alive(zcd, client, "create", id=c, bundle=bundle(args=["true"]),
                           **{key: path})
        msg = assert_error(reply, "invalid_argument", key)
        if needle:
            assert needle in msg.lower(), msg
        assert gone(client, c)
        assert no_events_for(events, c)
        assert not container_dir(zcd.state_dir, c).exists()

        r = cid("run")
        start(zcd, client, events, bundle(args=SLEEP), r)
        reply = call_alive(zcd, client, "exec", id=r, pid="io", args=["true"], env=PATH_ENV,
                           **{key: path})
        msg = assert_error(reply, "invalid_argument", key)
        if needle:
            assert needle in msg.lower(), msg
        assert set(procs_of(client, r)) == {"init"}
        assert not events.find(lambda e: e["id"] == r and e.get("pid") == "io")
        assert not process_dir(zcd.state_dir, r, "io").exists()
        if kind == "missing_parent":
            assert not os.path.exists(os.path.dirname(path))
        if kind == "socket":
            assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert kill_and_wait(client, events, r)["status"] == 137
    finally:
        if keep is not None:
            keep.close()


def test_close_stdin_racing_exec_exit(zcd, client, events, bundle, cid):
    c = cid("cs")
    start(zcd, client, events, bundle(args=SLEEP), c)
    started = []
    for i in range(50):
        p = f"t{i}"
        erid = client.send("exec", id=c, pid=p, args=["true"], env=PATH_ENV)
        if i % 2:
            # after the exec's reply: races only the exit
            ereply = client.recv(erid)[1]
            urid = client.send("update_process", id=c, pid=p, close_stdin=True)
        else:
            # pipelined behind the exec
            urid = client.send("update_process", id=c, pid=p, close_stdin=True)
            ereply = client.recv(erid)[1]
        assert ereply.get("ok") is True, f"exec {p}: {ereply!r}"
        started.append(p)
        ureply = client.recv(urid)[1]
        if ureply.get("ok") is not True:
            assert error_code(ureply) in ("not_found", "invalid_state"), \
                f"close_stdin of {p}: {ureply!r}"
    for p in started:
        assert events.wait_exit(c, p)["status"] == 0
    assert zcd.running()
    assert kill_and_wait(client, events, c)["status"] == 137


# --------------------------------------------------------------------------
# defect 5: a failed event-log flush silences no reply; the compaction's
# temp name is no container's


def test_compaction_temp_name_as_container_id(zcd_factory, runtime, bundle, cid):
    d = zcd_factory(runtime=runtime, args=["--events-retain", "5"])
    client, events = d.client(), d.subscriber("")
    ids = [f"events.log.tmp.{d.proc.pid}", "events.log.tmp", f"events.log.{d.proc.pid}",
           cid("u")]
    for c in ids:
        start(d, client, events, bundle(args=SLEEP), c)
    # compaction runs past retain + retain/10 + 64 records: > 69 events, twice
    paused = {c: False for c in ids}
    for i in range(150):
        c = ids[i % len(ids)]
        paused[c] = not paused[c]
        reply = call_alive(d, client, "update", timeout=5, id=c,
                           status="paused" if paused[c] else "running")
        assert reply.get("ok") is True, f"update #{i} of {c}: {reply!r}"
        if i % 10 == 0:
            assert call_alive(d, client, "version", timeout=2)["ok"] is True
            assert call_alive(d, client, "state", timeout=2)["ok"] is True
    for c in ids:
        if paused[c]:
            client.ok("update", id=c, status="running")
    for c in ids:
        assert kill_and_wait(client, events, c)["status"] == 137

    live = sorted(events.events, key=lambda e: e["seq"])
    assert_contiguous(live)
    last = live[-1]["seq"]
    assert last > 150
    got, final = replay(client, since_seq=0)
    assert final["last_seq"] == last
    assert final.get("truncated") is True
    assert got, "an empty replay"
    assert_contiguous(got, got[0]["seq"])
    assert got[-1]["seq"] == last and final["oldest_seq"] == got[0]["seq"]
    by_seq = {e["seq"]: e for e in live}
    assert all(by_seq[e["seq"]] == e for e in got)
    assert stat.S_ISREG(os.lstat(Path(d.state_dir, "events.log")).st_mode)
    assert client.ok("state")["last_seq"] == last


# --------------------------------------------------------------------------
# defect 6 (and issue 14): replays nobody reads cost no CPU


def many_events(client, bundle, cid, n):
    ids = [cid(f"p{i}") for i in range(4)]
    b = bundle(args=SLEEP)
    for c in ids:
        client.ok("create", id=c, bundle=b)
    pump_pause_resume(client, ids, n)
    return ids


def dealer(ctx, endpoint, ident=None, rcvhwm=1):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.RCVHWM, rcvhwm)
    s.setsockopt(zmq.LINGER, 0)
    if ident is not None:
        s.setsockopt(zmq.ROUTING_ID, ident)
    s.connect(endpoint)
    return s


def connected(s, timeout=10.0):
    """A round trip on a fresh DEALER: from then on its requests reach the
    daemon.  Asks again while unanswered (a routing id still held by a
    vanished peer is refused until the daemon lets go of it); returns the
    other replies that came meanwhile."""
    others = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.send(pack({"op": "version", "rid": "hello"}))
        t = time.monotonic() + 0.2
        while time.monotonic() < t:
            if not s.poll(20, zmq.POLLIN):
                continue
            reply = unpack(s.recv_multipart()[-1])
            if reply.get("rid") == "hello":
                return others
            others.append(reply)
    pytest.fail("no version reply on a fresh DEALER")


# The replay path is the daemon's alone: the runtime only makes the events,
# so one runtime covers it (the suite's time goes where runtimes differ).
@pytest.mark.parametrize("runtime", ["runc"], indirect=True)
def test_abandoned_replays_end(zcd_factory, runtime, bundle, cid, token):
    d = zcd_factory(runtime=runtime)
    client, events = d.client(), d.subscriber("")
    ids = many_events(client, bundle, cid, 600)
    assert client.ok("state")["last_seq"] >= 600
    idents = [f"ab-{token}-{i}".encode() for i in range(200)]
    for i, ident in enumerate(idents):
        s = dealer(d.ctx, d.cmd_ep, ident)
        if i % 2:
            connected(s)
        s.send(pack({"op": "events", "rid": f"abandoned-{i}", "since_seq": 0}))
        s.close(0)
    assert call_alive(d, client, "version", timeout=1)["ok"] is True
    shares = [cpu_share(d.proc.pid, 2.0)]
    if shares[0] >= 0.02:
        # one more window for work that was still draining
        shares.append(cpu_share(d.proc.pid, 2.0))
    print(f"[{runtime}] 200 abandoned replays: zcd CPU {[f'{x:.1%}' for x in shares]}")
    assert shares[-1] < 0.02, \
        f"200 abandoned replays: zcd uses {[f'{x:.1%}' for x in shares]} of a core"
    assert call_alive(d, client, "version", timeout=1)["ok"] is True

    # an abandoned replay has ended: nothing of it reaches a later client
    # that connects with the same routing id
    later = []
    strays = []
    try:
        for ident in idents:
            s = dealer(d.ctx, d.cmd_ep, ident, rcvhwm=1000)
            later.append(s)
            strays += connected(s)
        deadline = time.monotonic() + 1.0             # a measurement window
        while time.monotonic() < deadline:
            for s in later:
                while s.poll(0, zmq.POLLIN):
                    strays.append(unpack(s.recv_multipart()[-1]))
            time.sleep(0.02)
    finally:
        for s in later:
            s.close(0)
    stray_rids = sorted({str(r.get("rid")) for r in strays})
    assert not strays, f"{len(strays)} replies of abandoned replays went to later clients " \
        f"with the same routing ids (rids {stray_rids[:10]})"

    # a replay for a client that reads still works
    got = replay_all(client, since_seq=0)
    assert_contiguous(got)
    for c in ids:
        assert kill_and_wait(client, events, c)["status"] == 137


# The replay path is the daemon's alone: the runtime only makes the events,
# so one runtime covers it (the suite's time goes where runtimes differ).
@pytest.mark.parametrize("runtime", ["runc"], indirect=True)
def test_unread_replays_cost_no_cpu(zcd_factory, runtime, bundle, cid):
    d = zcd_factory(runtime=runtime)
    client, events = d.client(), d.subscriber("")
    ids = many_events(client, bundle, cid, 600)
    socks = []
    try:
        for i in range(50):
            s = dealer(d.ctx, d.cmd_ep)
            connected(s)
            s.send(pack({"op": "events", "rid": i, "since_seq": 0}))
            socks.append(s)
        assert call_alive(d, client, "version", timeout=1)["ok"] is True
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert call_alive(d, client, "version", timeout=1)["ok"] is True
            time.sleep(0.2)
        share = cpu_share(d.proc.pid, 2.0)
        print(f"[{runtime}] 50 unread replays: zcd CPU {share:.1%}")
        assert share < 0.02, f"50 unread replays: zcd uses {share:.1%} of a core after 3 s"
        assert call_alive(d, client, "version", timeout=1)["ok"] is True
        got = replay_all(client, since_seq=0)
        assert_contiguous(got)
    finally:
        for s in socks:
            s.close(0)
    for c in ids:
        assert kill_and_wait(client, events, c)["status"] == 137


# --------------------------------------------------------------------------
# defect 7: invalid UTF-8 is refused naming the key, never dropped


def bad(path_or_text, tail=b"\xff"):
    raw = os.fsencode(path_or_text) if isinstance(path_or_text, (str, Path)) else path_or_text
    return BadStr(raw + tail)


def test_create_invalid_utf8(zcd, client, events, bundle, cid, tmp_path):
    good = bundle(args=["true"])
    # a bundle that exists under a name that is not UTF-8
    odd = bundle(args=["true"], name="bund\udcff")
    assert os.path.isdir(odd)
    cases = [
        ("bundle", {"bundle": BadStr(os.fsencode(odd))}),
        ("labels[1]", {"bundle": good, "labels": ["ok", BadStr(b"l\xfe")]}),
        ("stdout", {"bundle": good, "stdout": bad(tmp_path / "out")}),
        ("stderr", {"bundle": good, "stderr": bad(tmp_path / "err")}),
        ("runtime_args[0]", {"bundle": good, "runtime_args": [BadStr(b"--x\xff")]}),
        ("labels[0]", {"bundle": good, "labels": [BadStr(b"\xc0\xaf")]}),        # overlong
        ("labels[0]", {"bundle": good, "labels": [BadStr(b"\xed\xa0\x80")]}),    # surrogate
    ]
    for n, (key, keys) in enumerate(cases):
        c = cid(f"u{n}")
        reply = call_hostile(zcd, client, "create", id=c, **keys)
        assert_error(reply, "invalid_argument", re.escape(key))
        assert gone(client, c), f"{key}: created anyway"
        assert no_events_for(events, c)
        assert not container_dir(zcd.state_dir, c).exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "err").exists()
    reply = call_hostile(zcd, client, "create", id=BadStr(b"c\xff"), bundle=good)
    assert_error(reply, "invalid_argument", "id")
    assert client.ok("state")["containers"] == []
    assert client.ok("state")["last_seq"] == 0


def test_exec_invalid_utf8(zcd, client, events, bundle, cid, tmp_path):
    c = cid("xu")
    start(zcd, client, events, bundle(args=SLEEP), c)
    cases = [
        ("args[2]", {"args": ["echo", "A", BadStr(b"X\xff"), "B"]}),
        ("args[1]", {"args": ["echo", BadStr(b"\xc0\xaf")]}),
        ("env[1]", {"args": ["true"], "env": ["PATH=/bin", BadStr(b"X=\xff")]}),
        ("cwd", {"args": ["true"], "cwd": BadStr(b"/tmp\xff")}),
        ("stdout", {"args": ["true"], "stdout": bad(tmp_path / "eout")}),
        ("capabilities[0]", {"args": ["true"], "capabilities": [BadStr(b"CAP_\xff")]}),
    ]
    for n, (key, keys) in enumerate(cases):
        p = f"e{n}"
        keys.setdefault("env", PATH_ENV)
        reply = call_hostile(zcd, client, "exec", id=c, pid=p, **keys)
        assert_error(reply, "invalid_argument", re.escape(key))
        assert set(procs_of(client, c)) == {"init"}, f"{key}: started anyway"
        assert not events.find(lambda e: e["id"] == c and e.get("pid") == p)
        assert not process_dir(zcd.state_dir, c, p).exists()
    reply = call_hostile(zcd, client, "exec", id=c, pid=BadStr(b"e\xff"), args=["true"],
                         env=PATH_ENV)
    assert_error(reply, "invalid_argument", "pid")
    assert not (tmp_path / "eout").exists()
    assert kill_and_wait(client, events, c)["status"] == 137


# --------------------------------------------------------------------------
# defect 10: an id is reusable at once, never `internal`


def test_id_reused_while_old_container_drains(zcd, client, events, bundle, cid):
    c = cid("re")
    b = bundle(args=["true"])
    accepted = []
    refused = 0
    pending = set()
    window = 2
    deadline = time.monotonic() + 180
    while len(accepted) < 30 or pending:
        assert time.monotonic() < deadline, f"only {len(accepted)} creates in 180 s"
        while len(accepted) < 30 and len(pending) < window:
            pending.add(client.send("create", id=c, bundle=b))
        try:
            reply = client.recv_any(timeout=30)
        except TimeoutError:
            pytest.fail(f"no reply within 30 s:\n{zcd.log_tail(30)}")
        pending.discard(reply["rid"])
        if reply.get("ok") is True:
            procs = {p["pid"]: p for p in reply["container"]["processes"]}
            accepted.append(procs["init"]["system_pid"])
        else:
            assert error_code(reply) == "already_exists", \
                f"create #{len(accepted) + 1} of a reused id: {reply!r}"
            refused += 1
    n = len(accepted)
    events.wait(lambda: len(events.find(lambda e: e["id"] == c and e["type"] == "exit")) >= n,
                60, f"{n} exits of {c}")
    mine = sorted(events.find(lambda e: e["id"] == c), key=lambda e: e["seq"])
    assert [e["type"] for e in mine] == ["start-container", "exit"] * n, \
        "start and exit do not alternate"
    assert all(e["status"] == 0 for e in mine if e["type"] == "exit")
    assert [e["system_pid"] for e in mine if e["type"] == "start-container"] == accepted
    wait_for(lambda: gone(client, c), what=f"{c} to leave state")
    print(f"{n} creates accepted, {refused} refused as already_exists")


# --------------------------------------------------------------------------
# defect 11: a signal never reaches a recycled pid


def spawn_with_pid(pid, tries=50):
    """A host `sleep` that gets exactly `pid` (ns_last_pid), or None."""
    for _ in range(tries):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(pid - 1))
        except OSError:
            return None
        p = subprocess.Popen(["sleep", "1000"], start_new_session=True)
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
    return None


def hold_exit_fifo(state_dir, cid, pid):
    """Open the write end of a process's exit FIFO: while it is open the
    daemon sees no EOF, so it still takes the process for running."""
    for path in (process_dir(state_dir, cid, pid) / "exit",
                 Path(state_dir, cid, pid, "exit")):          # the layout before issue 8
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
    pytest.fail(f"no exit FIFO for {cid}/{pid}")


def test_signal_exited_exec_never_hits_recycled_pid(zcd, client, events, bundle, cid):
    c = cid("sg")
    start(zcd, client, events, bundle(args=SLEEP), c)
    # the simple case: the exit is known, the process is gone from state
    exec_ok(zcd, client, events, c, "t0", ["true"])
    assert events.wait_exit(c, "t0")["status"] == 0
    wait_for(lambda: "t0" not in procs_of(client, c), what="t0 to leave state")
    for sig in (9, 15, 10):
        reply = client.call("signal", id=c, pid="t0", signal=sig)
        assert reply.get("ok") is True or error_code(reply) == "not_found", reply

    # the window: the exec has died and a host process holds its pid, but the
    # daemon has not seen the exit yet (the test holds the exit FIFO's write
    # end open, as a slow shim would).  A signal now must not reach the host
    # process.
    hits = []
    for i in range(2):
        p = f"r{i}"
        spid = exec_ok(zcd, client, events, c, p, SLEEP)
        fd = hold_exit_fifo(zcd.state_dir, c, p)
        try:
            os.kill(spid, 9)
            wait_for(lambda: not os.path.exists(f"/proc/{spid}"), 10,
                     f"exec pid {spid} to be reaped by its shim")
            victim = spawn_with_pid(spid)
            if victim is None:
                pytest.skip(f"could not give pid {spid} to a host process (ns_last_pid)")
            zcd.extra_pids.append(victim.pid)
            reply = call_alive(zcd, client, "signal", id=c, pid=p, signal=9)
            assert reply.get("ok") is True or error_code(reply) == "not_found", reply
            # any kill() the daemon made came before its reply
            try:
                victim.wait(timeout=0.5)
                hits.append((p, spid, reply))
            except subprocess.TimeoutExpired:
                pass
        finally:
            os.close(fd)
        assert events.wait_exit(c, p)["status"] == 137
        if victim.poll() is None:
            victim.kill()
        victim.wait()
    assert not hits, f"a signal to an exec that had exited killed the host process that " \
        f"reused its pid: {hits}"
    assert kill_and_wait(client, events, c)["status"] == 137

