"""The state dir's housekeeping (issue 9: the loop never waits on the disk):
a container's directory is renamed into <state>/.trash when it goes and a
forked child removes it there; the same child makes fresh container
skeletons in <state>/.spare that a create renames into place.

What must hold: an exited container's directory leaves containers/ and
then .trash; a create from a skeleton gets a complete directory (FIFOs,
state.json) and nothing of the skeleton's is left over; a restart trashes
an earlier run's skeletons and empties .trash; the removal never follows
a symlink nor enters a mount point (what is not zcd's survives)."""

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import container_dir, process_dir, wait_for

SLEEP = ["sleep", "1000"]


def entries(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def run_true(d, client, events, bundle, cid):
    client.ok("create", id=cid, bundle=bundle(args=["true"]))
    events.wait_exit(cid)


def assert_skeleton(path):
    """A spare as a create expects it: procs/init with both FIFOs and the
    empty file that becomes state.json; nothing else."""
    assert entries(path) == ["procs", "state.json.spare"], entries(path)
    assert entries(path / "procs") == ["init"]
    init = path / "procs" / "init"
    assert entries(init) == ["control", "exit"]
    for fifo in ("control", "exit"):
        assert stat.S_ISFIFO(os.lstat(init / fifo).st_mode)
    st = os.lstat(path / "state.json.spare")
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    for p in (path, path / "procs", init):
        assert stat.S_IMODE(os.lstat(p).st_mode) == 0o700


def test_exited_containers_leave_through_the_trash(zcd_factory, bundle, cid):
    d = zcd_factory(runtime="crun")
    client, events = d.client(), d.subscriber("")
    sd = Path(d.state_dir)
    wait_for(lambda: len(entries(sd / ".spare")) > 0, 10, "spare skeletons")
    ids = [cid(f"t{i}") for i in range(4)]
    for c in ids:
        run_true(d, client, events, bundle, c)
    for c in ids:
        wait_for(lambda: not container_dir(sd, c).exists(), 10, f"{c}'s directory to go")
    # The sweeper runs about a second after the last discard.
    wait_for(lambda: entries(sd / ".trash") == [], 10, ".trash to be emptied")
    spares = entries(sd / ".spare")
    assert spares and all(s.isdigit() for s in spares), spares
    for s in spares:
        assert_skeleton(sd / ".spare" / s)


def test_create_from_a_skeleton(zcd_factory, bundle, cid):
    d = zcd_factory(runtime="crun")
    client, events = d.client(), d.subscriber("")
    sd = Path(d.state_dir)
    wait_for(lambda: len(entries(sd / ".spare")) > 0, 10, "spare skeletons")
    before = set(entries(sd / ".spare"))
    c = cid("s")
    client.ok("create", id=c, bundle=bundle(args=SLEEP))
    events.wait_type(c, "start-container", "init")
    assert len(before - set(entries(sd / ".spare"))) >= 1, "no skeleton was taken"
    cd = container_dir(sd, c)
    assert "state.json.spare" not in entries(cd)
    state = (cd / "state.json").read_text()
    assert f'"id":"{c}"' in state.replace(" ", "")
    # the shim runs in the skeleton's init directory, its FIFOs in use
    init = process_dir(sd, c)
    assert (init / "shim.pid").exists()
    client.ok("update_process", id=c, pid="init", close_stdin=True)
    client.ok("signal", id=c, signal=9)
    events.wait_exit(c)
    wait_for(lambda: not cd.exists(), 10, f"{c}'s directory to go")


def test_restart_empties_trash_and_renews_spares(zcd_factory, bundle, cid, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("not zcd's\n")
    d = zcd_factory(runtime="crun")
    sd = Path(d.state_dir)
    wait_for(lambda: len(entries(sd / ".spare")) > 0, 10, "spare skeletons")
    assert d.stop() == 0
    # What a crash may leave: trees in .trash, one with links out of it, and
    # a skeleton of the earlier run in .spare.
    junk = sd / ".trash" / "junk.1"
    (junk / "a" / "b").mkdir(parents=True)
    (junk / "a" / "b" / "f").write_text("x")
    (junk / "out").symlink_to(victim)
    (junk / "a" / "file-link").symlink_to(victim / "keep")
    os.mkfifo(junk / "fifo")
    (sd / ".trash" / "plain-file").write_text("y")
    old = sd / ".spare" / "999999"
    old.mkdir()
    (old / "marker").write_text("of the earlier run")
    d2 = zcd_factory(runtime="crun", state_dir=str(sd))
    wait_for(lambda: entries(sd / ".trash") == [], 10, ".trash to be emptied")
    assert (victim / "keep").read_text() == "not zcd's\n"
    wait_for(lambda: len(entries(sd / ".spare")) > 0, 10, "new spare skeletons")
    assert "999999" not in entries(sd / ".spare")
    for s in entries(sd / ".spare"):
        assert_skeleton(sd / ".spare" / s)
    client, events = d2.client(), d2.subscriber("")
    run_true(d2, client, events, bundle, cid("after"))


def test_sweeper_never_enters_a_mount(zcd_factory, bundle, cid):
    """A mount point inside .trash (nothing zcd made) is left alone, and the
    rest of the trash still goes."""
    d = zcd_factory(runtime="crun")
    sd = Path(d.state_dir)
    assert d.stop() == 0
    holder = sd / ".trash" / "holder.1"
    mnt = holder / "mnt"
    mnt.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        (mnt / "precious").write_text("not zcd's\n")
        (sd / ".trash" / "other.1").mkdir()
        (sd / ".trash" / "other.1" / "f").write_text("z")
        d2 = zcd_factory(runtime="crun", state_dir=str(sd))
        wait_for(lambda: not (sd / ".trash" / "other.1").exists(), 10, "other.1 to go")
        time.sleep(0.2)
        assert (mnt / "precious").read_text() == "not zcd's\n"
        wait_for(lambda: "the sweeper" in d2.log_tail(200) and "mount point" in d2.log_tail(200),
                 10, "the sweeper's warning")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
