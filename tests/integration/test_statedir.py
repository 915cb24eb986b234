"""The state directory at start-up (DESIGN.md "State on disk", "Security";
issue 8, defect 9): a pre-existing state dir is not trusted as it is.

A directory others can write to (or someone else's) is refused before zcd
writes anything in it; a symlink at the lock, a socket path or the event log
is refused, and the file it points to is never touched.  Each refusal is
exit 1 with one clear line on stderr.  A good pre-existing directory, with a
stale socket of a killed daemon in it, starts as before.
"""

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import ZCD

VICTIM_TEXT = "precious: not zcd's to write\n"


def run_zcd(state_dir, *args):
    """zcd in the foreground: a refusal exits at once (a daemon that starts
    instead runs into the timeout, which fails the test)."""
    return subprocess.run([str(ZCD), "--state-dir", str(state_dir), "--log-level", "info",
                           *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)


@pytest.fixture
def victim(tmp_path):
    """A file outside the state dir that links in it point to."""
    path = tmp_path / "victim"
    path.write_text(VICTIM_TEXT)
    os.chmod(path, 0o644)
    st = path.stat()
    yield path
    assert path.read_text() == VICTIM_TEXT, "the victim file was written"
    after = path.stat()
    assert (after.st_mtime_ns, after.st_size, after.st_mode, after.st_uid) == \
        (st.st_mtime_ns, st.st_size, st.st_mode, st.st_uid), "the victim file was touched"


def assert_refused(run, *needles):
    assert run.returncode == 1, f"exit {run.returncode}\n{run.stdout}{run.stderr}"
    err = run.stderr
    assert "refusing to start" in err, err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"
    return err


def private_dir(state_dir, mode=0o700):
    os.chmod(state_dir, mode)
    return Path(state_dir)


# --------------------------------------------------------------------------
# the directory itself


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o775, 0o757])
def test_writable_state_dir_refused(build_dir, state_dir, victim, mode):
    """The exploit of defect 9: zcd.lock symlinked to a victim in a 1777 dir
    made the daemon overwrite the victim with its pid."""
    d = Path(state_dir)
    os.chmod(d, mode)
    (d / "zcd.lock").symlink_to(victim)
    err = assert_refused(run_zcd(d), state_dir, f"mode {mode:04o}", "write")
    assert "0711" in err                        # says what is required
    # nothing was made in it: the refusal comes before any write
    assert sorted(p.name for p in d.iterdir()) == ["zcd.lock"]
    assert (d / "zcd.lock").is_symlink()


def test_state_dir_of_another_uid_refused(build_dir, state_dir):
    d = private_dir(state_dir)
    os.chown(d, 65534, 65534)
    assert_refused(run_zcd(d), state_dir, "uid 65534", f"uid {os.geteuid()}")
    assert list(d.iterdir()) == []


def test_symlinked_state_dir_refused(build_dir, state_dir):
    """Its target was never checked: --state-dir must name the directory."""
    target = private_dir(state_dir)
    link = Path(f"{state_dir}-link")
    link.symlink_to(target)
    try:
        for given in (str(link), str(link) + "/"):
            assert_refused(run_zcd(given), str(link), "symbolic link")
        assert list(target.iterdir()) == []
    finally:
        link.unlink()


def test_file_as_state_dir_refused(build_dir, state_dir):
    f = Path(state_dir) / "plain"
    f.write_text("x")
    assert_refused(run_zcd(f), str(f), "not a directory")
    assert f.read_text() == "x"


# --------------------------------------------------------------------------
# what zcd writes inside it


def test_symlinked_lock_refused_in_private_dir(build_dir, state_dir, victim):
    d = private_dir(state_dir, 0o711)
    (d / "zcd.lock").symlink_to(victim)
    assert_refused(run_zcd(d), "zcd.lock", "symbolic link")
    assert sorted(p.name for p in d.iterdir()) == ["zcd.lock"]


def test_hard_linked_lock_refused(build_dir, state_dir, victim):
    """A second name for the lock file would have the pid written there."""
    d = private_dir(state_dir)
    os.link(victim, d / "zcd.lock")
    assert_refused(run_zcd(d), "zcd.lock", "2 links")


@pytest.mark.parametrize("name", ["zcd.sock", "events.sock"])
def test_symlinked_socket_refused(build_dir, state_dir, victim, name):
    d = private_dir(state_dir)
    (d / name).symlink_to(victim)
    assert_refused(run_zcd(d), name, "symbolic link")
    assert (d / name).is_symlink() and os.readlink(d / name) == str(victim)


def test_symlinked_configured_endpoint_refused(build_dir, state_dir, victim, tmp_path):
    """--listen/--publish ipc paths outside the state dir are checked too."""
    d = private_dir(state_dir)
    other = Path(f"{state_dir}-ep")
    other.symlink_to(victim)
    try:
        assert_refused(run_zcd(d, "--publish", f"ipc://{other}"), str(other), "symbolic link")
        assert other.is_symlink()
    finally:
        other.unlink()


def test_regular_file_at_socket_path_refused(build_dir, state_dir):
    """libzmq would unlink whatever is there: only a stale socket may go."""
    d = private_dir(state_dir)
    (d / "zcd.sock").write_text("mine")
    assert_refused(run_zcd(d), "zcd.sock", "not a socket")
    assert (d / "zcd.sock").read_text() == "mine"


def test_symlinked_events_log_refused(build_dir, state_dir, victim):
    d = private_dir(state_dir)
    (d / "events.log").symlink_to(victim)
    assert_refused(run_zcd(d), "events.log", "symbolic link")
    assert (d / "events.log").is_symlink()


def test_directory_as_events_log_refused(build_dir, state_dir):
    d = private_dir(state_dir)
    (d / "events.log").mkdir()
    assert_refused(run_zcd(d), "events.log", "not a regular file")
    assert (d / "events.log").is_dir()


# --------------------------------------------------------------------------
# what still starts


@pytest.mark.parametrize("mode", [0o700, 0o711, 0o755])
def test_good_existing_state_dir_starts(zcd_factory, state_dir, mode):
    d = private_dir(state_dir, mode)
    daemon = zcd_factory(state_dir=d)
    assert daemon.client().ok("version")
    assert stat.S_IMODE(d.stat().st_mode) == mode      # left as the admin set it
    lock = d / "zcd.lock"
    assert lock.read_text().strip() == str(daemon.proc.pid)
    assert stat.S_ISSOCK((d / "zcd.sock").lstat().st_mode)


def test_stale_sockets_of_a_killed_daemon_are_fine(zcd_factory, state_dir):
    d = private_dir(state_dir)
    for name in ("zcd.sock", "events.sock"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(d / name))
        s.close()
        assert stat.S_ISSOCK((d / name).lstat().st_mode)
    daemon = zcd_factory(state_dir=d)
    assert daemon.client().ok("version")


def test_missing_state_dir_is_created_0711(zcd_factory, state_dir):
    mask = os.umask(0)
    os.umask(mask)
    d = Path(state_dir) / "parent" / "state"
    daemon = zcd_factory(state_dir=d)
    assert daemon.client().ok("version")
    assert stat.S_IMODE(d.stat().st_mode) == 0o711 & ~mask
    assert stat.S_IMODE(d.parent.stat().st_mode) == 0o755 & ~mask
    assert d.stat().st_uid == os.geteuid()
