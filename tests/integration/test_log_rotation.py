"""Bounded container logs (PROTOCOL.md `create`/`exec`, key `log`; issue 12):
the shim writes the process's output (stdout, stderr, or its terminal) into
`path`, rotated before it passes `max_bytes` into path.1 ... path.<max_files-1>
(shim/logfile.c), through a bounded ring and a writer thread (shim/outlog.c),
so that a full or slow disk drops output (counted in `log-dropped`, marked by
a line in the log) and never blocks the container.

Every test runs once per runtime (runc, crun)."""

import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (assert_error, process_dir, read_text, rss_bytes, sanitized, wait_for)
from criu_util import COUNTER, criu_runtime, needs_criu  # noqa: F401 (fixture)
from restore_util import restart, shim_pid
from test_callers import alice, group_zcd, shared_dir, start_rootless, users, wait_exit  # noqa: F401

KIB, MIB = 1024, 1024 * 1024
PATH_ENV = ["PATH=/bin"]
SLEEP = ["sleep", "1000"]
# Lines of exactly 100 bytes, "<7-digit number> <91 x>\n", in increasing
# order: 524288 of them are 50 MiB.
PAD = "x" * 91
FIRST, LAST = 1000001, 1000000 + 524288
GAP = "zcd-shim: "


def numbered(first, last):
    """A shell pipeline printing lines first..last (seq | sed: buffered
    stdio, fast enough for 50 MiB in a second or two)."""
    return f'seq {first} {last} | sed "s/$/ {PAD}/"'


def log_key(path, max_bytes=None, max_files=None):
    key = {"path": str(path)}
    if max_bytes is not None:
        key["max_bytes"] = max_bytes
    if max_files is not None:
        key["max_files"] = max_files
    return key


def rotated(path, n):
    """path.<n> (n > 0) or path itself."""
    return path.with_name(f"{path.name}.{n}") if n else path


def files_oldest_first(path, max_files):
    return [rotated(path, i) for i in range(max_files - 1, -1, -1) if rotated(path, i).exists()]


def last_line(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    return lines[-1] if lines else None


def last_line_starts(path, prefix):
    """Read once: a rotation between two reads can leave no file at path."""
    line = last_line(path)
    return line is not None and line.startswith(prefix)


def numbers_in(paths):
    """The line numbers of the data lines (gap lines and line fragments
    left aside), in file order, and the gap lines."""
    nums, gaps = [], []
    for p in paths:
        for line in p.read_text(errors="replace").splitlines():
            if line.startswith(GAP):
                gaps.append(line)
                continue
            head = line.split(" ", 1)[0]
            if len(head) == 7 and head.isdigit():
                nums.append(int(head))
    return nums, gaps


def poll_until(cond, seconds):
    """The time cond() first held, polled for up to seconds; else None."""
    deadline = time.monotonic() + seconds
    while True:
        if cond():
            return time.monotonic()
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)


def status_kib(pid, field):
    """A KiB field of /proc/<pid>/status (RssAnon: the shim's own memory,
    less the shared file pages VmRSS also counts)."""
    for line in read_text(f"/proc/{pid}/status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def dropped_count(zcd, c, pid="init"):
    text = read_text(process_dir(zcd.state_dir, c, pid) / "log-dropped")
    return int(text) if text.strip() else None


def start(client, events, bundle_path, cid, **keys):
    reply = client.ok("create", id=cid, bundle=bundle_path, **keys)
    events.wait_type(cid, "start-container", "init")
    return reply["container"]


def kill(client, events, cid):
    client.ok("signal", id=cid, signal=9)
    return events.wait_exit(cid)


def go(fifo, text="go\n"):
    """Write to the stdin FIFO the shim holds open (never blocks)."""
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@pytest.fixture
def logdir(tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def stdin_fifo(tmp_path):
    p = tmp_path / "go"
    os.mkfifo(p)
    return p


# --------------------------------------------------------------------------
# rotation


def test_50_mib_rotated_into_three_files_newest_last(zcd, client, events, bundle, cid, logdir,
                                                     stdin_fifo):
    """The issue's test: 50 MiB of numbered lines, max_bytes 1 MiB,
    max_files 3.  At most 3 files of at most 1 MiB each, increasing line
    numbers from path.2 through path.1 to path, the last line written last
    in path; the shim's RSS does not grow with what it relayed."""
    c = cid("rot")
    log = logdir / "app.log"
    # END once more per line on stdin: the one written right after the
    # 50 MiB may meet a full ring and be dropped, a later one is not.
    script = f"read x; {numbered(FIRST, LAST)}; while read x; do echo END; done"
    start(client, events, bundle(args=["sh", "-c", script]), c, stdin=str(stdin_fifo),
          log=log_key(log, MIB, 3))
    # The writer writes the count (0) once it runs: the shim is through its
    # start, its code pages dropped (shim/main.c).
    wait_for(lambda: dropped_count(zcd, c) == 0, what="log-dropped = 0 at the start")
    shim = shim_pid(zcd, c)
    before, anon_before = rss_bytes(shim), status_kib(shim, "RssAnon")
    t0 = time.monotonic()
    ended_at = None
    while ended_at is None and time.monotonic() < t0 + 180:
        go(stdin_fifo)
        ended_at = poll_until(lambda: last_line(log) == "END", 0.5)
    assert ended_at, "no END at the end of the log within 180 s"
    elapsed = ended_at - t0
    # The shim's own memory (the ring was there from the start) did not
    # grow; the code pages writing faulted in (shared, file-backed) are
    # given back once idle (within TRIM_IDLE_MS, shim/outlog.c).
    peak, anon_end = rss_bytes(shim), status_kib(shim, "RssAnon")
    assert anon_end <= anon_before + 128, f"RssAnon grew from {anon_before} to {anon_end} KiB"
    after = wait_for(lambda: rss_bytes(shim) <= before + 128 * KIB and rss_bytes(shim),
                     timeout=10, what=f"the shim's RSS back within 128 KiB of {before // KIB} KiB "
                     f"(now {rss_bytes(shim) // KIB} KiB)")
    # A healthy disk loses nothing: a writer that is merely late (the CPUs
    # are busy) holds the pipes back instead (shim/outlog.c, STALL_MS).
    dropped = wait_for(lambda: dropped_count(zcd, c) is not None and (dropped_count(zcd, c),),
                       what="log-dropped")[0]
    files = files_oldest_first(log, 3)
    sizes = [p.stat().st_size for p in files]
    print(f"\n[{zcd.runtime}] 50 MiB in {elapsed:.1f}s; shim VmRSS before {before // KIB} KiB, "
          f"at END {peak // KIB} KiB, idle after {after // KIB} KiB; RssAnon before "
          f"{anon_before} KiB, at END {anon_end} KiB; "
          f"files {[p.name for p in files]} sizes {sizes}; dropped {dropped}, "
          f"gap lines kept {len(numbers_in(files)[1])}")
    assert files == [rotated(log, 2), rotated(log, 1), log]
    assert not rotated(log, 3).exists()
    assert all(0 < s <= MIB for s in sizes), sizes
    nums, gaps = numbers_in(files)
    assert nums == sorted(nums) and len(set(nums)) == len(nums), "line numbers out of order"
    assert last_line(log) == "END"
    assert dropped == 0 and not gaps, f"{dropped} bytes dropped on a healthy disk"
    if not gaps:
        # Nothing lost in what is kept: the three files hold the newest
        # lines, all of them; a rotated file is full but for a line, or for
        # the 4 KiB slack within which a line that started is moved on to
        # the next file rather than split (shim/logfile.c).
        assert nums[-1] == LAST and nums == list(range(nums[0], LAST + 1))
        assert all(s > MIB - 4096 - 100 for s in sizes[:2]), sizes
    assert kill(client, events, c)["status"] == 137


def test_delete_helper_does_not_hold_the_ring(zcd, client, events, bundle, cid, logdir):
    """The init's delete helper, forked by the shim after the ring was
    mapped, lives as long as the container: it must not keep a copy of the
    256 KiB ring (its pages become its own once the shim writes them)."""
    c = cid("helper")
    start(client, events, bundle(args=SLEEP), c, log=log_key(logdir / "h.log"))
    wait_for(lambda: dropped_count(zcd, c) == 0, what="log-dropped = 0 at the start")
    shim = shim_pid(zcd, c)
    kids = [int(k) for t in os.listdir(f"/proc/{shim}/task")
            for k in read_text(f"/proc/{shim}/task/{t}/children").split()]
    helpers = [k for k in kids if os.readlink(f"/proc/{k}/exe") == os.readlink(f"/proc/{shim}/exe")]
    assert len(helpers) == 1, kids
    # 92 KiB without a log; the ring alone is 256 (an ASan build's shim
    # has megabytes of shadow memory)
    anon = status_kib(helpers[0], "RssAnon")
    assert anon < 192 or sanitized(zcd), f"the delete helper has {anon} KiB of anonymous memory"
    assert kill(client, events, c)["status"] == 137


def test_stderr_and_stdout_both_land_in_the_log(zcd, client, events, bundle, cid, logdir):
    c = cid("both")
    log = logdir / "both.log"
    script = "echo to-stdout; echo to-stderr >&2; echo again-stdout"
    start(client, events, bundle(args=["sh", "-c", script]), c, log=log_key(log))
    assert events.wait_exit(c)["status"] == 0
    lines = log.read_text().splitlines()
    assert sorted(lines) == ["again-stdout", "to-stderr", "to-stdout"], lines
    assert lines.index("to-stdout") < lines.index("again-stdout")
    assert stat.S_IMODE(log.stat().st_mode) & 0o7027 == 0, oct(log.stat().st_mode)


def test_both_streams_flooding_lose_nothing(zcd, client, events, bundle, cid, logdir):
    """stdout and stderr both at full speed on a healthy disk: when one
    relay's read fills the ring, the other one, readable in the same poll
    round, leaves its bytes in its pipe for a writer that is only late
    instead of dropping them (shim/outlog.c).  2 x 12 MiB, kept whole."""
    c = cid("flood")
    log = logdir / "flood.log"
    n = 3 * 40960
    script = (f"({numbered(1000001, 1000000 + n)}) & ({numbered(2000001, 2000000 + n)} >&2) & "
              "wait; echo END")
    start(client, events, bundle(args=["sh", "-c", script]), c, log=log_key(log, 64 * MIB, 2))
    assert events.wait_exit(c)["status"] == 0
    gaps = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(GAP)]
    assert not gaps and log.stat().st_size == 2 * n * 100 + 4, (log.stat().st_size, gaps)
    assert last_line(log) == "END"


def test_exec_with_log_and_an_appended_file(zcd, client, events, bundle, cid, logdir):
    """An exec's output into its own log; an existing regular file is
    appended to, not replaced."""
    c = cid("exec")
    log = logdir / "exec.log"
    log.write_text("earlier\n")
    start(client, events, bundle(args=SLEEP), c)
    client.ok("exec", id=c, pid="e1", env=PATH_ENV,
              args=["sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"],
              log=log_key(log, 4096, 2))
    assert events.wait_exit(c, "e1")["status"] == 3
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier" and sorted(lines[1:]) == ["exec-err", "exec-out"], lines
    assert kill(client, events, c)["status"] == 137


def test_terminal_output_lands_in_the_log(zcd, client, events, bundle, cid, logdir):
    c = cid("tty")
    log = logdir / "tty.log"
    start(client, events, bundle(args=["sh", "-c", "echo on-the-tty; exit 0"], terminal=True),
          c, log=log_key(log))
    assert events.wait_exit(c)["status"] == 0
    assert "on-the-tty" in log.read_text()


def test_single_file_starts_over(zcd, client, events, bundle, cid, logdir):
    """max_files 1: no path.1, the file itself starts over at max_bytes."""
    c = cid("one")
    log = logdir / "one.log"
    script = f"{numbered(1000001, 1000200)}; echo END"
    start(client, events, bundle(args=["sh", "-c", script]), c, log=log_key(log, 4096, 1))
    assert events.wait_exit(c)["status"] == 0
    assert not rotated(log, 1).exists()
    assert 0 < log.stat().st_size <= 4096
    nums, _ = numbers_in([log])
    assert nums == list(range(nums[0], 1000201)) and last_line(log) == "END"


def test_log_survives_a_daemon_restart(zcd, client, events, bundle, cid, logdir, stdin_fifo):
    """The shim holds the log: output after a restart still lands there,
    rotated, and the exit is still reported."""
    c = cid("rst")
    log = logdir / "r.log"
    script = f"read x; {numbered(1000001, 1000100)}; read x; {numbered(1000101, 1000200)}; exit 7"
    start(client, events, bundle(args=["sh", "-c", script]), c, stdin=str(stdin_fifo),
          log=log_key(log, 8192, 2))
    go(stdin_fifo)
    wait_for(lambda: last_line_starts(log, "1000100"), what="first half")
    restart(zcd, "kill")
    client, events = zcd.client(), zcd.subscriber("")
    go(stdin_fifo)
    assert events.wait_exit(c)["status"] == 7
    nums, _ = numbers_in(files_oldest_first(log, 2))
    assert nums[-1] == 1000200 and nums == list(range(nums[0], 1000201))
    assert rotated(log, 1).exists() and not rotated(log, 2).exists()


@needs_criu
def test_restored_container_logs_again(zcd_factory, criu_runtime, bundle, cid, logdir, tmp_path):
    """Checkpointed (exit) and restored with the same `log`: the restored
    counter's output goes on in the same rotated files."""
    zcd = zcd_factory(runtime=criu_runtime)
    client, events = zcd.client(), zcd.subscriber("")
    first, second = cid("cpa"), cid("cpb")
    log = logdir / "c.log"
    key = log_key(log, 4096, 2)
    b = bundle(args=COUNTER)

    def counted():
        return [int(x) for p in files_oldest_first(log, 2) for x in p.read_text().split()
                if x.isdigit()]
    start(client, events, b, first, log=key)
    wait_for(lambda: len(counted()) >= 5, what="counting into the log")
    client.ok("checkpoint_create", id=first, checkpoint={"name": "cp", "exit": True},
              checkpoint_dir=str(tmp_path / "cps"), timeout=60)
    events.wait_exit(first)
    last = counted()[-1]
    reply = client.call("create", id=second, bundle=b, checkpoint="cp",
                        checkpoint_dir=str(tmp_path / "cps"), log=key, timeout=60)
    assert reply["ok"] is True, reply
    wait_for(lambda: counted() and counted()[-1] >= last + 5, what="the restored counter counting")
    numbers = counted()
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), "the count went on unbroken"
    assert all(p.stat().st_size <= 4096 for p in files_oldest_first(log, 2))
    assert kill(client, events, second)["status"] == 137


# --------------------------------------------------------------------------
# hostile requests


def test_log_requests_that_are_refused(zcd, client, events, bundle, cid, logdir, tmp_path):
    """invalid_argument, and nothing made: not the container, not a file."""
    b = bundle(args=["sh", "-c", "echo SHOULD-NOT-RUN"])
    good = logdir / "never.log"
    fifo = logdir / "fifo"
    os.mkfifo(fifo)
    outside = tmp_path / "outside"
    outside.write_text("outside\n")
    link = logdir / "link.log"
    link.symlink_to(outside)
    sub = logdir / "adir"
    sub.mkdir()
    cases = [
        ({"log": log_key(good), "stdout": str(tmp_path / "o")}, "stdout"),
        ({"log": log_key(good), "stderr": str(tmp_path / "e")}, "stderr"),
        ({"log": {"path": "relative.log"}}, "absolute"),
        ({"log": {"max_bytes": 4096}}, "path"),
        ({"log": log_key(good, 4095)}, "max_bytes"),
        ({"log": log_key(good, 2 ** 41)}, "max_bytes"),
        ({"log": log_key(good, None, 0)}, "max_files"),
        ({"log": log_key(good, None, 101)}, "max_files"),
        ({"log": "/x.log"}, "log"),
        ({"log": log_key(fifo)}, "FIFO"),
        ({"log": log_key(link)}, "symbolic link"),
        ({"log": log_key(sub)}, "directory"),
        ({"log": log_key(str(logdir) + "/")}, "log"),
        ({"log": log_key(logdir / "missing" / "x.log")}, "No such file"),
        ({"log": log_key("/dev/null")}, "character device"),
        ({"log": log_key(Path(zcd.state_dir) / "x.log")}, "state dir"),
        ({"log": log_key(logdir / ("n" * 254))}, "too long"),
    ]
    for i, (keys, needle) in enumerate(cases):
        assert_error(client.call("create", id=cid(f"bad{i}"), bundle=b, **keys),
                     "invalid_argument", needle)
    assert client.ok("state")["containers"] == []
    assert not good.exists() and outside.read_text() == "outside\n"
    assert sorted(p.name for p in logdir.iterdir()) == ["adir", "fifo", "link.log"]
    assert list(sub.iterdir()) == []
    # exec is admitted the same way
    c = cid("host")
    start(client, events, bundle(args=SLEEP), c)
    for keys, needle in cases[:3] + cases[9:11]:
        assert_error(client.call("exec", id=c, pid="e1", args=["true"], **keys),
                     "invalid_argument", needle)
    assert [p["pid"] for p in client.ok("state", id=c)["containers"][0]["processes"]] == ["init"]
    assert kill(client, events, c)["status"] == 137


def test_rotation_never_replaces_a_symlink(zcd, client, events, bundle, cid, logdir, tmp_path,
                                           stdin_fifo):
    """path.1 is a symlink to a file outside: it is neither written through
    nor replaced; the rotation stops, the output is dropped (counted), and
    once the name is cleared rotation resumes with a line about the gap."""
    c = cid("sym")
    log = logdir / "s.log"
    outside = tmp_path / "precious"
    outside.write_text("precious\n")
    rotated(log, 1).symlink_to(outside)
    script = (f"{numbered(1000001, 1000400)}; read x; "
              f"{numbered(1000401, 1000420)}; exec sleep 1000")
    start(client, events, bundle(args=["sh", "-c", script]), c, stdin=str(stdin_fifo),
          log=log_key(log, 4096, 3))
    # All of the first 400 lines through the writer (all but what s.log
    # took was dropped): none of them is left to rotate the gap line away
    # once the name is cleared.
    wait_for(lambda: (dropped_count(zcd, c) or 0) >= 400 * 100 - 4096,
             what="the first 400 lines dropped and counted")
    assert os.readlink(rotated(log, 1)) == str(outside)
    assert outside.read_text() == "precious\n"
    assert not rotated(log, 2).exists()
    assert log.stat().st_size <= 4096
    os.unlink(rotated(log, 1))
    go(stdin_fifo)
    wait_for(lambda: last_line_starts(log, "1000420"), what="output resumed")
    nums, gaps = numbers_in(files_oldest_first(log, 3))
    assert nums[-20:] == list(range(1000401, 1000421))
    assert any("is not a regular file" in g and "s.log.1" in g for g in gaps), gaps
    assert outside.read_text() == "precious\n"
    assert kill(client, events, c)["status"] == 137


# --------------------------------------------------------------------------
# a full disk


@pytest.fixture
def small_disk():
    """A 256 KiB tmpfs."""
    d = tempfile.mkdtemp(prefix="zcd-log-", dir="/tmp")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip(f"cannot mount a tmpfs (needs CAP_SYS_ADMIN): {r.stderr.strip()}")
    yield Path(d)
    if subprocess.run(["umount", d], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", d], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def test_full_disk_drops_counts_and_marks_the_gap(zcd, client, events, bundle, cid, small_disk,
                                                  stdin_fifo):
    """4 MiB into a 256 KiB disk: the container writes it all without
    waiting, log-dropped counts what was lost, and once there is room again
    the log says so before the next output."""
    c = cid("full")
    log = small_disk / "full.log"
    script = (f"{numbered(1000001, 1041943)}; touch /tmp/written; read x; "
              f"echo after-the-gap; exec sleep 1000")
    init = start(client, events, bundle(args=["sh", "-c", script]), c, stdin=str(stdin_fifo),
                 log=log_key(log, MIB, 3))
    pid = init["processes"][0]["system_pid"]
    t0 = time.monotonic()
    wait_for(lambda: os.path.exists(f"/proc/{pid}/root/tmp/written"), timeout=30,
             what="the container through its 4 MiB")
    elapsed = time.monotonic() - t0
    # all but what the disk took (256 KiB at most), counted within 250 ms
    least = 41943 * 100 - 256 * KIB
    dropped = wait_for(lambda: (dropped_count(zcd, c) or 0) >= least and dropped_count(zcd, c),
                       what=f"at least {least} dropped bytes counted")
    print(f"\n[{zcd.runtime}] 4 MiB onto a 256 KiB disk in {elapsed:.2f}s, dropped {dropped}")
    assert elapsed < 15
    # room again: the log's own file emptied under the shim
    os.truncate(log, 0)
    go(stdin_fifo)
    wait_for(lambda: last_line(log) == "after-the-gap", what="output after the gap")
    lines = log.read_text().splitlines()
    assert lines[-2].startswith(GAP) and "bytes of output dropped (" in lines[-2], lines[-3:]
    assert "no space left" in lines[-2], lines[-3:]
    assert kill(client, events, c)["status"] == 137


# --------------------------------------------------------------------------
# callers that are not root


def test_rootless_log_rotates_as_its_caller(group_zcd, alice, token):
    """The shim runs as the caller and rotates in the caller's directory;
    a root-owned file, or a directory the caller cannot write, is refused
    at admission."""
    secret_dir = Path(tempfile.mkdtemp(prefix="zcd-logroot-", dir="/tmp"))
    try:
        secret_dir.chmod(0o755)
        target = secret_dir / "root.log"
        target.write_text("root's\n")
        target.chmod(0o644)
        b = alice.bundle(["echo", "OVERWRITTEN"])
        for path, needle in [(target, "Permission denied"),
                             (secret_dir / "new.log", "Permission denied")]:
            assert_error(alice.call(group_zcd, "create", id=f"{token}-r", bundle=b,
                                    log=log_key(path)), "invalid_argument", needle)
        assert target.read_text() == "root's\n" and not (secret_dir / "new.log").exists()
        assert sorted(os.listdir(secret_dir)) == ["root.log"]
        # her own directory: written and rotated as her
        log = alice.dir / "mine.log"
        cmd = f"{numbered(1000001, 1000300)}; echo END"
        start_rootless(group_zcd, alice, f"{token}-ok", args=("sh", "-c", cmd),
                       log=log_key(log, 8192, 3))
        wait_exit(group_zcd, alice, f"{token}-ok")
        files = files_oldest_first(log, 3)
        assert files == [rotated(log, 2), rotated(log, 1), log]
        assert all(p.stat().st_uid == alice.uid and p.stat().st_size <= 8192 for p in files)
        assert last_line(log) == "END"
    finally:
        shutil.rmtree(secret_dir, ignore_errors=True)
