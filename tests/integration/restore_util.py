"""Helpers for the restart, event-log, OOM and crash tests (issue 4).

They build on conftest's Daemon/Client/Subscriber: a daemon is restarted
in place (same Daemon object, same state dir), so conftest's teardown still
stops it and sweeps what is left behind."""

import os
import signal
import time
from pathlib import Path

import pytest

from conftest import process_dir, DEFAULT_WAIT, wait_for

PATH_ENV = ["PATH=/bin"]


# --------------------------------------------------------------------------
# the daemon


def kill_daemon(d):
    """SIGKILL the daemon and reap it; its clients are closed (their
    requests in flight are lost with it)."""
    d.close_clients()
    d.proc.kill()
    d.proc.wait()
    d.exit_code = d.proc.returncode
    d.log.close()


def stop_daemon(d):
    """SIGTERM; the daemon must exit 0."""
    d.close_clients()
    code = d.stop()
    assert code == 0, f"zcd exited {code} on SIGTERM:\n{d.log_tail(20)}"


def restart(d, how):
    """Stop the daemon (how = "term" or "kill") and start it again on the
    same state dir.  Returns the time from exec to the first answered
    `version`, in seconds."""
    if how == "kill":
        kill_daemon(d)
    else:
        stop_daemon(d)
    return start_timed(d)


def start_timed(d):
    """Start a stopped daemon again; seconds from exec to its first answer."""
    t0 = time.monotonic()
    d.start()
    return time.monotonic() - t0


def restored_line(d, after=0):
    """The last "restored N containers in X ms" log line after byte offset
    `after` of the daemon log, as (N, ms), or None."""
    try:
        text = Path(d.log_path).read_bytes()[after:].decode(errors="replace")
    except FileNotFoundError:
        return None
    hit = None
    for line in text.splitlines():
        if "restored" in line and "containers in" in line:
            words = line.split()
            i = words.index("restored")
            hit = (int(words[i + 1]), float(words[words.index("in", i) + 1]))
    return hit


def log_size(d):
    try:
        return os.path.getsize(d.log_path)
    except FileNotFoundError:
        return 0


# --------------------------------------------------------------------------
# events


def replay(client, timeout=DEFAULT_WAIT, **keys):
    """(events, final reply) of one `events` request."""
    partials, final = client.stream("events", timeout=timeout, **keys)
    assert final.get("ok") is True, final
    return [p["event"] for p in partials], final


def replay_all(client, **keys):
    return replay(client, **keys)[0]


def assert_contiguous(events, first=1):
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(first, first + len(seqs))), \
        f"seqs not contiguous from {first}: {_seq_summary(seqs)}"


def _seq_summary(seqs):
    bad = [(a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1]
    return f"{len(seqs)} seqs, first {seqs[:3]}, breaks {bad[:10]}"


def of(events, cid, etype=None, pid=None):
    return [e for e in events if e.get("id") == cid
            and (etype is None or e.get("type") == etype)
            and (pid is None or e.get("pid") == pid)]


# --------------------------------------------------------------------------
# processes


def pid_alive(pid):
    """True when pid exists and is no zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pid, timeout=DEFAULT_WAIT):
    wait_for(lambda: not pid_alive(pid), timeout, f"pid {pid} to go")


def shim_pid(d, cid, pid="init"):
    text = Path(process_dir(d.state_dir, cid, pid), "shim.pid").read_text().strip()
    return int(text)


def container_procs(client, cid):
    """{process id: Process} of a running container."""
    c = client.ok("state", id=cid)["containers"][0]
    return {p["pid"]: p for p in c["processes"]}


def init_pid(client, cid):
    return container_procs(client, cid)["init"]["system_pid"]


def state_ids(client):
    return [c["id"] for c in client.ok("state")["containers"]]


def sigkill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def create_running(client, cid, bundle_path, **keys):
    reply = client.ok("create", id=cid, bundle=bundle_path, **keys)
    assert reply["container"]["status"] == "running"
    return reply["container"]


def fail(msg):
    pytest.fail(msg)


def pump_updates(client, ids, n, paused=None, window=8, timeout=180):
    """Alternate pause/resume on the containers `ids`, pipelined (up to
    `window` requests in flight per container), until n updates succeeded;
    each one changes the state, so each is exactly one event.  `paused`
    ({id: bool}, default all running) is updated and returned."""
    if paused is None:
        paused = {c: False for c in ids}
    inflight = {c: 0 for c in ids}
    pending = {}
    done = sent = 0
    deadline = time.monotonic() + timeout
    while done < n:
        assert time.monotonic() < deadline, f"only {done}/{n} updates in {timeout}s"
        for c in ids:
            while inflight[c] < window and sent < n:
                paused[c] = not paused[c]
                rid = client.send("update", id=c, status="paused" if paused[c] else "running")
                pending[rid] = c
                inflight[c] += 1
                sent += 1
        reply = client.recv_any(timeout=max(0.1, deadline - time.monotonic()))
        inflight[pending.pop(reply["rid"])] -= 1
        # a failed update (even `busy`) would make the next one a no-op
        assert reply.get("ok") is True, f"update failed: {reply!r}"
        done += 1
    return paused
