"""Checkpoint directories as hostile input (issue 8, defects 3 and 4).

zcd deletes only what it made: a checkpoint is a real directory holding
zcd's marker (`zcd-checkpoint.json`, the metadata zcd writes after a
successful dump); anything else is `not_found` and stays untouched.  Listing
never blocks on what it finds (a FIFO as marker) and never follows a
symlink.  These tests need no CRIU and run on one runtime only: the
checkpoint actor does the directory work itself.  The checkpoint_create
tests stand a fake `criu` in the daemon's PATH, so that the request reaches
the container actor and the runtime's dump fails the way it would with a
broken CRIU.
"""

import json
import os
import stat
import time

import pytest

from conftest import assert_error

MARKER = "zcd-checkpoint.json"
SLEEP = ["sleep", "1000"]


@pytest.fixture
def runtime():
    """runc only: nothing here depends on the runtime."""
    return "runc"


def marker_json(name, **changes):
    """What container_checkpoint.c writes, compact, as zcd would."""
    meta = {"name": name, "created": time.time_ns(), "exit": False, "tcp": False,
            "unix_sockets": False, "shell": False, "empty_ns": []}
    meta.update(changes)
    return json.dumps(meta, separators=(",", ":"))


def make_checkpoint(cdir, name, marker=True, **changes):
    """A checkpoint-looking directory with an image file, and zcd's marker
    unless marker=False."""
    d = cdir / name
    d.mkdir(parents=True)
    d.chmod(0o700)  # as zcd makes it
    (d / "pages-1.img").write_bytes(b"\0" * 64)
    if marker:
        (d / MARKER).write_text(marker_json(name, **changes))
        (d / MARKER).chmod(0o600)
    return d


def snapshot(path):
    """Every path below `path` (not following symlinks) with its type and
    content: equal snapshots mean nothing was touched."""
    out = {}
    for root, dirs, files in os.walk(path, followlinks=False):
        for n in dirs + files:
            p = os.path.join(root, n)
            if root == str(path) and n == "zcd.log":
                continue  # the daemon's own log lives in tmp_path too
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[p] = ("file", f.read())
            elif stat.S_ISLNK(st.st_mode):
                out[p] = ("link", os.readlink(p))
            else:
                out[p] = (stat.S_IFMT(st.st_mode), None)
    return out


def names(reply):
    assert reply.get("ok") is True, reply
    return [c["name"] for c in reply["checkpoints"]]


# --------------------------------------------------------------------------
# checkpoint_delete


def test_checkpoint_delete_without_marker_is_not_found(zcd, tmp_path):
    client = zcd.client()
    cdir = tmp_path / "cps"
    victim = make_checkpoint(cdir, "x", marker=False)
    (victim / "sub").mkdir()
    (victim / "sub" / "data").write_text("precious")
    before = snapshot(cdir)
    assert_error(client.call("checkpoint_delete", checkpoint_dir=str(cdir), name="x"),
                 "not_found", "no checkpoint `x`")
    assert snapshot(cdir) == before


@pytest.mark.parametrize("bad", ["invalid-json", "wrong-name", "missing-field", "wrong-type",
                                 "directory", "fifo", "symlink", "foreign-owner", "too-large",
                                 "readable-by-others", "open-directory"])
def test_checkpoint_delete_with_odd_marker_is_not_found(zcd, tmp_path, bad):
    client = zcd.client()
    cdir = tmp_path / "cps"
    d = make_checkpoint(cdir, "x", marker=False)
    m = d / MARKER
    if bad == "invalid-json":
        m.write_text("{not json")
    elif bad == "wrong-name":
        m.write_text(marker_json("y"))
    elif bad == "missing-field":
        meta = json.loads(marker_json("x"))
        del meta["created"]
        m.write_text(json.dumps(meta))
    elif bad == "wrong-type":
        m.write_text(marker_json("x", exit="yes"))
    elif bad == "directory":
        m.mkdir()
    elif bad == "fifo":
        os.mkfifo(m)
    elif bad == "symlink":
        real = tmp_path / "real-marker.json"
        real.write_text(marker_json("x"))
        m.symlink_to(real)
    elif bad == "foreign-owner":
        m.write_text(marker_json("x"))
        os.chown(m, 65534, 65534)
    elif bad == "too-large":
        m.write_text(marker_json("x", pad="z" * 70000))
    elif bad == "readable-by-others":
        # what a container's output file is, created by the root shim at a
        # client's path: zcd's uid, but 0644, and any content
        m.write_text(marker_json("x"))
        m.chmod(0o644)
    elif bad == "open-directory":
        m.write_text(marker_json("x"))
        d.chmod(0o755)
    if m.is_file() and not m.is_symlink() and bad != "readable-by-others":
        m.chmod(0o600)  # only the one flaw under test
    before = snapshot(tmp_path)
    reply = client.call("checkpoint_delete", checkpoint_dir=str(cdir), name="x", timeout=2.0)
    assert_error(reply, "not_found", "no checkpoint `x`")
    assert snapshot(tmp_path) == before


def test_checkpoint_delete_with_marker_removes_it(zcd, tmp_path):
    client = zcd.client()
    cdir = tmp_path / "cps"
    d = make_checkpoint(cdir, "x")
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "sub" / "deeper" / "core.img").write_bytes(b"x" * 10)
    keep = make_checkpoint(cdir, "y")
    assert names(client.call("checkpoint_list", checkpoint_dir=str(cdir))) == ["x", "y"]
    client.ok("checkpoint_delete", checkpoint_dir=str(cdir), name="x")
    assert sorted(os.listdir(cdir)) == ["y"], "the checkpoint (or a hidden leftover) remains"
    assert (keep / MARKER).exists()
    assert names(client.call("checkpoint_list", checkpoint_dir=str(cdir))) == ["y"]
    assert_error(client.call("checkpoint_delete", checkpoint_dir=str(cdir), name="x"),
                 "not_found")


def test_checkpoint_delete_removes_symlinks_inside_without_following(zcd, tmp_path):
    client = zcd.client()
    cdir = tmp_path / "cps"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    d = make_checkpoint(cdir, "x")
    (d / "to-dir").symlink_to(outside)
    (d / "to-file").symlink_to(outside / "keep")
    before = snapshot(outside)
    client.ok("checkpoint_delete", checkpoint_dir=str(cdir), name="x")
    assert os.listdir(cdir) == []
    assert snapshot(outside) == before


def test_checkpoint_delete_through_symlinked_checkpoint_dir_is_refused(zcd, tmp_path):
    client = zcd.client()
    real = tmp_path / "real"
    make_checkpoint(real, "x")
    link = tmp_path / "link"
    link.symlink_to(real)
    before = snapshot(tmp_path)
    # a trailing slash must not make the kernel follow the link either
    for cdir in (str(link), str(link) + "/", str(link) + "//"):
        assert_error(client.call("checkpoint_delete", checkpoint_dir=cdir, name="x"),
                     "invalid_argument", "symbolic link")
    assert snapshot(tmp_path) == before


def test_checkpoint_delete_of_symlinked_entry_is_refused(zcd, tmp_path):
    client = zcd.client()
    elsewhere = tmp_path / "elsewhere"
    make_checkpoint(elsewhere, "x")
    cdir = tmp_path / "cps"
    cdir.mkdir()
    (cdir / "x").symlink_to(elsewhere / "x")
    (cdir / "f").write_text("a file, not a checkpoint")
    before = snapshot(tmp_path)
    assert_error(client.call("checkpoint_delete", checkpoint_dir=str(cdir), name="x"),
                 "not_found", "no checkpoint `x`", "symbolic link")
    assert_error(client.call("checkpoint_delete", checkpoint_dir=str(cdir), name="f"),
                 "not_found", "no checkpoint `f`", "not a directory")
    assert snapshot(tmp_path) == before


def test_checkpoint_delete_odd_checkpoint_dirs(zcd, tmp_path):
    client = zcd.client()
    missing = tmp_path / "missing"
    assert_error(client.call("checkpoint_delete", checkpoint_dir=str(missing), name="x"),
                 "not_found", "does not exist")
    f = tmp_path / "file"
    f.write_text("x")
    assert_error(client.call("checkpoint_delete", checkpoint_dir=str(f), name="x"),
                 "invalid_argument", "not a directory")
    assert_error(client.call("checkpoint_delete", checkpoint_dir="relative/dir", name="x"),
                 "invalid_argument", "checkpoint_dir")
    assert f.read_text() == "x" and not missing.exists()


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", ".zcd-deleting.0", "", "x" * 65,
                                  "-x", "x\ny"])
def test_checkpoint_name_must_be_an_id(zcd, tmp_path, name):
    client = zcd.client()
    cdir = tmp_path / "cps"
    make_checkpoint(cdir, "x")
    before = snapshot(tmp_path)
    assert_error(client.call("checkpoint_delete", checkpoint_dir=str(cdir), name=name),
                 "invalid_argument", "name")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------
# checkpoint_list


def test_checkpoint_list_fifo_marker_does_not_hang(zcd, tmp_path):
    client = zcd.client()
    other = zcd.client()
    cdir = tmp_path / "cps"
    make_checkpoint(cdir, "a")
    fifo_cp = make_checkpoint(cdir, "b", marker=False)
    os.mkfifo(fifo_cp / MARKER)
    make_checkpoint(cdir, "c")
    try:
        rid = client.send("checkpoint_list", checkpoint_dir=str(cdir))
        vrid = other.send("version")
        start = time.monotonic()
        reply = client.recv(rid, timeout=1.0)[1]
        assert other.recv(vrid, timeout=1.0)[1].get("ok") is True
        assert time.monotonic() - start < 1.0
        assert names(reply) == ["a", "c"]
        # and the daemon still serves while the FIFO is there
        assert other.call("version", timeout=1.0).get("ok") is True
    finally:
        # were the daemon stuck in open(), a writer would free it
        try:
            os.close(os.open(fifo_cp / MARKER, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


def test_checkpoint_list_skips_what_is_not_zcds(zcd, tmp_path):
    client = zcd.client()
    cdir = tmp_path / "cps"
    good = make_checkpoint(cdir, "good", tcp=True, empty_ns=["network"])
    make_checkpoint(cdir, "nomarker", marker=False)
    linked = make_checkpoint(cdir, "linkedmarker", marker=False)
    real = tmp_path / "real-marker.json"
    real.write_text(marker_json("linkedmarker"))
    (linked / MARKER).symlink_to(real)
    make_checkpoint(tmp_path / "elsewhere", "linkeddir")
    (cdir / "linkeddir").symlink_to(tmp_path / "elsewhere" / "linkeddir")
    make_checkpoint(cdir, "badjson", marker=False)
    (cdir / "badjson" / MARKER).write_text("[1,2")
    make_checkpoint(cdir, "renamed", marker=False)
    (cdir / "renamed" / MARKER).write_text(marker_json("other"))
    (cdir / "renamed" / MARKER).chmod(0o600)
    (cdir / "plainfile").write_text("x")
    make_checkpoint(cdir, ".hidden")
    before = snapshot(tmp_path)
    reply = client.call("checkpoint_list", checkpoint_dir=str(cdir))
    assert names(reply) == ["good"]
    entry = reply["checkpoints"][0]
    meta = json.loads((good / MARKER).read_text())
    assert entry == {"name": "good", "created": meta["created"], "exit": False, "tcp": True,
                     "unix_sockets": False, "shell": False, "empty_ns": ["network"]}
    assert snapshot(tmp_path) == before


def test_checkpoint_list_of_missing_dir_is_empty(zcd, tmp_path):
    client = zcd.client()
    reply = client.call("checkpoint_list", checkpoint_dir=str(tmp_path / "missing"))
    assert reply.get("ok") is True and reply["checkpoints"] == [], reply
    assert not (tmp_path / "missing").exists()


def test_checkpoint_list_refuses_symlinked_or_odd_dir(zcd, tmp_path):
    client = zcd.client()
    real = tmp_path / "real"
    make_checkpoint(real, "x")
    link = tmp_path / "link"
    link.symlink_to(real)
    for cdir in (str(link), str(link) + "/"):
        assert_error(client.call("checkpoint_list", checkpoint_dir=cdir),
                     "invalid_argument", "symbolic link")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert_error(client.call("checkpoint_list", checkpoint_dir=str(fifo), timeout=1.0),
                 "invalid_argument", "not a directory")
    assert names(client.call("checkpoint_list", checkpoint_dir=str(real))) == ["x"]


def test_checkpoint_list_many_entries(zcd, tmp_path):
    """No fixed-size table: more than the old 1024 entries are all listed."""
    client = zcd.client()
    cdir = tmp_path / "cps"
    cdir.mkdir()
    want = [f"cp{i:05d}" for i in range(1500)]
    for n in want:
        (cdir / n).mkdir(mode=0o700)
        (cdir / n / MARKER).write_text(marker_json(n))
        (cdir / n / MARKER).chmod(0o600)
    assert names(client.call("checkpoint_list", checkpoint_dir=str(cdir))) == want


# --------------------------------------------------------------------------
# checkpoint_create: directories (with a fake criu, see the module doc)


@pytest.fixture
def fake_criu(tmp_path, monkeypatch):
    """A `criu` that passes `criu check` and fails everything else (the
    runtime's dump): the daemon started after this fixture inherits it."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    criu = bindir / "criu"
    criu.write_text("#!/bin/sh\n[ \"$1\" = check ] && exit 0\n"
                    "echo 'fake criu: dumps fail here' >&2\nexit 1\n")
    criu.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    return criu


@pytest.fixture
def running(fake_criu, zcd_factory, runtime, bundle, cid):
    """(daemon, client, container id, bundle) for a running container; killed
    and waited for at the end."""
    d = zcd_factory(runtime=runtime)
    client = d.client()
    events = d.subscriber("")
    c = cid("cp")
    b = bundle(args=SLEEP)
    client.ok("create", id=c, bundle=b)
    yield d, client, c, b
    client.ok("signal", id=c, signal=9)
    events.wait_exit(c)


def create_checkpoint(client, c, cdir, name="x"):
    return client.call("checkpoint_create", id=c, checkpoint={"name": name},
                       checkpoint_dir=str(cdir), timeout=60.0)


def test_checkpoint_create_refuses_odd_checkpoint_dirs(running, tmp_path):
    _, client, c, _ = running
    no_parent = tmp_path / "no" / "such" / "cps"
    assert_error(create_checkpoint(client, c, no_parent), "invalid_argument", "parent")
    assert not (tmp_path / "no").exists(), "zcd made a tree of parents"
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    for cdir in (str(link), str(link) + "/"):
        assert_error(create_checkpoint(client, c, cdir), "invalid_argument", "symbolic link")
    assert os.listdir(real) == []
    f = tmp_path / "file"
    f.write_text("x")
    assert_error(create_checkpoint(client, c, f), "invalid_argument", "not a directory")
    assert f.read_text() == "x"
    cdir = tmp_path / "cps"
    make_checkpoint(cdir, "x", marker=False)
    before = snapshot(cdir)
    assert_error(create_checkpoint(client, c, cdir), "already_exists", "checkpoint `x` exists")
    assert snapshot(cdir) == before


def test_checkpoint_create_failed_dump_leaves_nothing(running, tmp_path):
    """The dump fails (fake criu): the image directory zcd made for it is
    removed again, the checkpoint_dir zcd made (one mkdir) stays, and the
    name can be used again."""
    _, client, c, bundle_path = running
    cdir = tmp_path / "cps"
    assert_error(create_checkpoint(client, c, cdir), "runtime_error")
    assert cdir.is_dir() and stat.S_IMODE(cdir.stat().st_mode) == 0o700
    assert os.listdir(cdir) == [], "the failed dump's image directory remains"
    assert_error(create_checkpoint(client, c, cdir), "runtime_error")
    assert os.listdir(cdir) == []
    # the default checkpoint_dir, <bundle>/checkpoints
    reply = client.call("checkpoint_create", id=c, checkpoint={"name": "y"}, timeout=60.0)
    assert_error(reply, "runtime_error")
    assert os.listdir(os.path.join(bundle_path, "checkpoints")) == []
    assert names(client.call("checkpoint_list", id=c)) == []
