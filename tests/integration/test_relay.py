"""The shim's stdio relay (shim/stdio.c, shim/reap.c): the container writes
into pipes the shim copies to the client's paths.

A destination that fails (a full disk) must never stall the container: the
relay goes on reading and drops the bytes.  The drain after an exit must not
hold the exit back while an orphan keeps the pipe open, yet what the process
wrote before it exited must reach the file.  Every test runs once per
runtime (runc, crun)."""

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import process_dir, read_text, wait_file_contains, wait_for

SLEEP = ["sleep", "1000"]
PATH_ENV = ["PATH=/bin"]
MIB_OF_ZEROS = ["dd", "if=/dev/zero", "bs=1k", "count=1024"]


@pytest.fixture
def small_disk():
    """A 256 KiB tmpfs: the client's stdout file fills it long before a
    container's 1 MiB of output is through."""
    d = tempfile.mkdtemp(prefix="zcd-relay-", dir="/tmp")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip(f"cannot mount a tmpfs (needs CAP_SYS_ADMIN): {r.stderr.strip()}")
    yield Path(d)
    if subprocess.run(["umount", d], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", d], capture_output=True)
    try:
        os.rmdir(d)
    except OSError:
        pass


def start(client, events, bundle_path, cid, **keys):
    client.ok("create", id=cid, bundle=bundle_path, **keys)
    events.wait_type(cid, "start-container", "init")


def kill(client, events, cid):
    client.ok("signal", id=cid, signal=9)
    return events.wait_exit(cid)


def test_full_disk_does_not_wedge_the_container(client, events, bundle, cid, small_disk):
    """ENOSPC on stdout: the container still runs to its end (before the
    relay, dd itself got ENOSPC; it must not block on a full pipe)."""
    c = cid("full")
    out = small_disk / "out"
    start(client, events, bundle(args=MIB_OF_ZEROS), c, stdout=str(out))
    ev = events.wait_exit(c, timeout=15)
    assert ev["status"] == 0
    assert 0 < out.stat().st_size <= 256 * 1024


def test_full_disk_is_logged_once_and_output_goes_on(zcd, client, events, bundle, cid,
                                                     small_disk, tmp_path):
    """The writer gets past its 1 MiB while the process lives (stdout is
    drained, not stalled); shim.log says once that stdout is dropped; the
    other stream is not affected."""
    c = cid("fullog")
    out, err = small_disk / "out", tmp_path / "err"
    script = "dd if=/dev/zero bs=1k count=1024 2>/dev/null; echo written >&2; exec sleep 1000"
    start(client, events, bundle(args=["sh", "-c", script]), c, stdout=str(out),
          stderr=str(err))
    wait_file_contains(err, "written", timeout=15)
    log = process_dir(zcd.state_dir, c) / "shim.log"
    text = wait_for(lambda: read_text(log), timeout=5, what="shim.log")
    assert "stdout: " in text and "output dropped from now on" in text, text
    assert text.count("output dropped") == 1, text
    assert kill(client, events, c)["status"] == 137


def test_exec_exit_not_held_by_a_talking_orphan(client, events, bundle, cid, tmp_path):
    """The orphan keeps the exec's stdout pipe open and writes every 0.2 s:
    the exit is reported within the drain's deadline (~1 s), not when the
    orphan stops."""
    c = cid("orph")
    out = tmp_path / "orphan.out"
    start(client, events, bundle(args=SLEEP), c)
    script = "(while :; do echo x; sleep 0.2; done) & echo parent; exit 0"
    t0 = time.monotonic()
    client.ok("exec", id=c, pid="e1", env=PATH_ENV, args=["sh", "-c", script],
              stdout=str(out))
    ev = events.wait_exit(c, "e1", timeout=10)
    elapsed = time.monotonic() - t0
    assert ev["status"] == 0
    assert elapsed < 5, f"the exit took {elapsed:.1f}s"
    assert "parent" in out.read_text()
    assert kill(client, events, c)["status"] == 137


def test_output_written_just_before_exit_is_complete(client, events, bundle, cid, tmp_path):
    """More than a pipe's worth, written right before the exit: all of it is
    in the file by the time the exit is reported."""
    c = cid("seq")
    out = tmp_path / "seq.out"
    start(client, events, bundle(args=["seq", "1", "100000"]), c, stdout=str(out))
    assert events.wait_exit(c)["status"] == 0
    lines = out.read_text().splitlines()
    assert lines[-1] == "100000"
    assert lines == [str(i) for i in range(1, 100001)]


def test_exec_output_before_exit_is_complete(client, events, bundle, cid, tmp_path):
    c = cid("eseq")
    out = tmp_path / "eseq.out"
    start(client, events, bundle(args=SLEEP), c)
    client.ok("exec", id=c, pid="e1", env=PATH_ENV, args=["seq", "1", "20000"],
              stdout=str(out))
    assert events.wait_exit(c, "e1")["status"] == 0
    assert out.read_text().splitlines()[-1] == "20000"
    assert kill(client, events, c)["status"] == 137


def test_stdout_and_stderr_to_the_same_file(client, events, bundle, cid, tmp_path):
    """Two relays append to one file: both streams arrive whole."""
    c = cid("both")
    out = tmp_path / "both.out"
    script = ("for i in $(seq 1 200); do echo out$i; echo err$i >&2; done; "
              "echo last-out; echo last-err >&2")
    start(client, events, bundle(args=["sh", "-c", script]), c, stdout=str(out),
          stderr=str(out))
    assert events.wait_exit(c)["status"] == 0
    lines = out.read_text().splitlines()
    assert [l for l in lines if l.startswith("out")] == [f"out{i}" for i in range(1, 201)]
    assert [l for l in lines if l.startswith("err")] == [f"err{i}" for i in range(1, 201)]
    assert "last-out" in lines and "last-err" in lines
    assert len(lines) == 402
