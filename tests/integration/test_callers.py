"""Callers (PROTOCOL.md section 1, "Callers"): who a caller is, what it may
see and touch, and the rootless containers of callers that are not root.

The unprivileged callers are real users (testuser.py) whose requests come
from processes of their uid (caller_proxy.py): the daemon learns them from
the ipc connection's peer credentials, as it would any local user's."""
import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import zmq

from caller_proxy import CallerProxy
from conftest import (DEFAULT_WAIT, assert_error, make_rootfs, oci_config, pack, read_text,
                      unpack, wait_for)
from test_curve import curve_args, free_port, write_cert
from testuser import OTHER_USER, ensure_test_user


@pytest.fixture(scope="module")
def users():
    return ensure_test_user(), ensure_test_user(OTHER_USER)


@pytest.fixture(scope="module")
def shared_dir():
    """A directory every test user can read: the rootfs and bundles."""
    d = Path(tempfile.mkdtemp(prefix="zcd-callers-", dir="/tmp"))
    d.chmod(0o755)
    make_rootfs(d / "rootfs")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def rootless_config(rootfs, uid, gid, args):
    """runc spec --rootless, for a busybox rootfs, mapping container root to
    uid/gid."""
    c = oci_config(rootfs, args=args)
    c["process"]["noNewPrivileges"] = True
    c["linux"] = {
        "uidMappings": [{"containerID": 0, "hostID": uid, "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": gid, "size": 1}],
        "namespaces": [{"type": t} for t in ["pid", "ipc", "uts", "mount", "user"]],
        "maskedPaths": c["linux"]["maskedPaths"],
        "readonlyPaths": c["linux"]["readonlyPaths"],
    }
    mounts = []
    for m in c["mounts"]:
        if m["destination"] == "/sys/fs/cgroup":
            continue
        if m["destination"] == "/sys":
            m = {"destination": "/sys", "type": "none", "source": "/sys",
                 "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
        if m["destination"] == "/dev/pts":
            m = dict(m, options=[o for o in m["options"] if not o.startswith("gid=")])
        mounts.append(m)
    c["mounts"] = mounts
    return c


class UserSide:
    """One unprivileged user: its proxy and a directory of its own."""

    def __init__(self, user, shared):
        self.name, self.uid, self.gid = user
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=shared))
        os.chown(self.dir, self.uid, self.gid)
        self.proxy = CallerProxy(self.uid, self.gid, os.getgrouplist(self.name, self.gid))
        self.shared = shared
        self.n = 0

    def bundle(self, args, edit=None, uid=None, gid=None):
        self.n += 1
        b = self.shared / f"{self.name}-bundle{self.n}-{os.getpid()}-{time.monotonic_ns()}"
        b.mkdir()
        config = rootless_config(self.shared / "rootfs", self.uid if uid is None else uid,
                                 self.gid if gid is None else gid, args)
        if edit:
            edit(config)
        (b / "config.json").write_text(json.dumps(config))
        b.chmod(0o755)
        return str(b)

    def call(self, zcd, op, **keys):
        return self.proxy.call(zcd.cmd_ep, op, **keys)

    def close(self):
        self.proxy.close()


@pytest.fixture
def group_zcd(zcd_factory, runtime, users):
    d = zcd_factory(runtime=runtime, args=["--group", "zcd"], start=False)
    os.chmod(d.state_dir, 0o711)
    return d.start()


@pytest.fixture
def alice(users, shared_dir):
    side = UserSide(users[0], shared_dir)
    yield side
    side.close()


@pytest.fixture
def bob(users, shared_dir):
    side = UserSide(users[1], shared_dir)
    yield side
    side.close()


def proc_uid(pid):
    for line in read_text(f"/proc/{pid}/status").splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


def start_rootless(zcd, side, cid, args=("sleep", "100"), **keys):
    reply = side.call(zcd, "create", id=cid, bundle=side.bundle(list(args)), **keys)
    assert reply["ok"] is True, reply
    zcd.created_ids.add(cid)
    return reply["container"]


def wait_exit(zcd, side, cid):
    def gone():
        r = side.call(zcd, "state", id=cid)
        return r.get("error", {}).get("code") == "not_found"
    wait_for(gone, what=f"{cid} gone")


def test_ipc_socket_files_have_the_group(group_zcd, users):
    import grp
    gid = grp.getgrnam("zcd").gr_gid
    for ep in (group_zcd.cmd_ep, group_zcd.ev_ep):
        st = os.stat(ep[len("ipc://"):])
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == gid and st.st_uid == 0


def test_a_stranger_outside_the_group_cannot_connect(group_zcd):
    """`nobody` is not in the group: its connection is refused by the
    socket file's mode and nothing it sends is answered."""
    nobody = pwd.getpwnam("nobody")
    proxy = CallerProxy(nobody.pw_uid, nobody.pw_gid)
    try:
        with pytest.raises(TimeoutError):
            proxy.call(group_zcd.cmd_ep, "version", timeout=1.0)
    finally:
        proxy.close()
    assert group_zcd.client().call("version")["ok"] is True


def test_rootless_container_runs_as_its_caller(group_zcd, alice, token):
    cid = f"rl-{token}"
    out = alice.dir / "out"
    c = start_rootless(group_zcd, alice, cid,
                       args=("sh", "-c", "id -u; cat /proc/self/uid_map; exec sleep 100"),
                       stdout=str(out))
    pid = c["processes"][0]["system_pid"]
    assert proc_uid(pid) == alice.uid
    # the shim runs as the caller too
    shim_pids = subprocess.run(["pgrep", "-f", f"zcd-shim.*--id {cid}"], capture_output=True,
                               text=True).stdout.split()
    assert shim_pids and all(proc_uid(p) == alice.uid for p in shim_pids)
    text = wait_for(lambda: len(read_text(out).splitlines()) >= 2 and read_text(out),
                    what="output")
    assert text.splitlines()[0] == "0"
    assert f"0 {alice.uid} 1" in " ".join(text.split())
    assert os.stat(out).st_uid == alice.uid
    # the caller signals its own container; the exit comes back
    assert alice.call(group_zcd, "signal", id=cid, signal=9)["ok"] is True
    wait_exit(group_zcd, alice, cid)


def test_callers_see_and_touch_only_their_own(group_zcd, alice, bob, bundle, token):
    root = group_zcd.client()
    mine, theirs = f"a-{token}", f"r-{token}"
    assert root.call("create", id=theirs, bundle=bundle(["sleep", "100"]))["ok"] is True
    start_rootless(group_zcd, alice, mine)
    # alice sees hers only
    state = alice.call(group_zcd, "state")
    assert [c["id"] for c in state["containers"]] == [mine]
    assert set(alice.call(group_zcd, "stats")["stats"]) <= {mine}
    # every op on root's container is not_found for her
    for op, keys in [("state", {}), ("stats", {}), ("signal", {"signal": 15}),
                     ("update", {"status": "paused"}),
                     ("exec", {"pid": "x", "args": ["true"]}),
                     ("update_process", {"pid": "init", "close_stdin": True})]:
        assert_error(alice.call(group_zcd, op, id=theirs, **keys), "not_found")
    # bob sees nothing of hers and cannot touch it
    assert bob.call(group_zcd, "state")["containers"] == []
    assert_error(bob.call(group_zcd, "signal", id=mine, signal=9), "not_found")
    assert_error(bob.call(group_zcd, "update", id=mine, status="paused"), "not_found")
    assert_error(bob.call(group_zcd, "stats", id=mine), "not_found")
    # root sees both
    ids = {c["id"] for c in root.call("state")["containers"]}
    assert {mine, theirs} <= ids
    # her replay holds her container's events only; bob's holds none of them
    final, partials = alice.proxy.call_full(group_zcd.cmd_ep, "events", since_seq=0)
    assert final["ok"] is True
    assert partials and {p["event"]["id"] for p in partials} == {mine}
    assert all(p["event"].get("uid") == alice.uid for p in partials)
    final, partials = bob.proxy.call_full(group_zcd.cmd_ep, "events", since_seq=0)
    assert final["ok"] is True and partials == []
    # she may pause her own, as far as the runtime's rootless rules let
    # her: on cgroup v1 no cgroup is delegated to a user, so no freezer
    r = alice.call(group_zcd, "update", id=mine, status="paused")
    assert r["ok"] is True or r["error"]["code"] == "runtime_error", r
    if r["ok"]:
        assert alice.call(group_zcd, "update", id=mine, status="running")["ok"] is True
    assert alice.call(group_zcd, "signal", id=mine, signal=9)["ok"] is True
    assert root.call("signal", id=theirs, signal=9)["ok"] is True
    wait_exit(group_zcd, alice, mine)


def test_privilege_a_caller_lacks_is_refused(group_zcd, alice, shared_dir, token):
    """Another uid, root inside without a mapping, checkpoints: invalid_argument,
    and no container."""
    def as_root_unmapped(c):
        del c["linux"]["uidMappings"]
        del c["linux"]["gidMappings"]
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "user"]
    cases = [
        alice.bundle(["true"], edit=as_root_unmapped),
        alice.bundle(["true"], uid=0, gid=0),             # maps container root to host root
        alice.bundle(["true"], uid=alice.uid + 1),        # someone else's uid
    ]
    for i, b in enumerate(cases):
        assert_error(alice.call(group_zcd, "create", id=f"{token}-{i}", bundle=b),
                     "invalid_argument", "process.user")
    for op, keys in [("checkpoint_create", {"id": "x", "checkpoint": {"name": "c"}}),
                     ("checkpoint_list", {"checkpoint_dir": str(alice.dir)}),
                     ("checkpoint_delete", {"checkpoint_dir": str(alice.dir), "name": "c"})]:
        assert_error(alice.call(group_zcd, op, **keys), "invalid_argument", "administrator")
    assert_error(alice.call(group_zcd, "create", id=f"{token}-r", bundle=cases[0],
                            checkpoint="c"), "invalid_argument", "administrator")
    assert alice.call(group_zcd, "state")["containers"] == []


def test_root_only_files_stay_unreadable(group_zcd, alice, shared_dir, token):
    """Whatever bundle the caller writes, a root-only file stays root's:
    not as the bundle, not as stdin, not bind-mounted into the container."""
    secret_dir = Path(tempfile.mkdtemp(prefix="zcd-secret-", dir="/tmp"))
    try:
        secret = secret_dir / "secret"
        secret.write_text("SECRET-CONTENT\n")
        secret.chmod(0o600)
        secret_dir.chmod(0o755)
        # a root-only bundle: the daemon reads config.json as the caller
        hidden = secret_dir / "hidden"
        hidden.mkdir(mode=0o700)
        (hidden / "config.json").write_text(json.dumps(rootless_config(
            shared_dir / "rootfs", alice.uid, alice.gid, ["true"])))
        r = alice.call(group_zcd, "create", id=f"{token}-h", bundle=str(hidden))
        assert_error(r, "invalid_argument")
        assert "SECRET" not in json.dumps(r)
        # stdin: the shim opens it as the caller
        r = alice.call(group_zcd, "create", id=f"{token}-i", bundle=alice.bundle(["cat"]),
                       stdin=str(secret), stdout=str(alice.dir / "in.out"))
        assert r["ok"] is False, r
        assert "SECRET" not in read_text(alice.dir / "in.out")
        # stdout into a root-owned file: opened as the caller, refused,
        # and the file is unchanged
        target = secret_dir / "root-log"
        target.write_text("root's\n")
        target.chmod(0o644)
        r = alice.call(group_zcd, "create", id=f"{token}-o",
                       bundle=alice.bundle(["echo", "OVERWRITTEN"]), stdout=str(target))
        if r["ok"]:
            wait_exit(group_zcd, alice, f"{token}-o")
        assert target.read_text() == "root's\n"
        # a bind mount of the file into the container
        def mount_secret(c):
            c["mounts"].append({"destination": "/secret", "type": "none",
                                "source": str(secret), "options": ["bind", "ro"]})
        out = alice.dir / "bind.out"
        r = alice.call(group_zcd, "create", id=f"{token}-b",
                       bundle=alice.bundle(["cat", "/secret"], edit=mount_secret),
                       stdout=str(out), stderr=str(out))
        if r["ok"]:
            wait_exit(group_zcd, alice, f"{token}-b")
        assert "SECRET" not in read_text(out)
        # the rootfs itself in a root-only directory
        def hidden_root(c):
            c["root"]["path"] = str(hidden)
        r = alice.call(group_zcd, "create", id=f"{token}-r",
                       bundle=alice.bundle(["cat", "/config.json"], edit=hidden_root),
                       stdout=str(out))
        if r["ok"]:
            wait_exit(group_zcd, alice, f"{token}-r")
        assert "SECRET" not in read_text(out)
        assert alice.call(group_zcd, "state")["containers"] == []
    finally:
        shutil.rmtree(secret_dir, ignore_errors=True)


def test_curve_certificate_uid_is_the_caller(tmp_path, zmq_ctx, users, bundle, token,
                                             zcd_factory):
    """Over tcp a client key whose certificate names a uid is that user; a
    key without one administers everything."""
    server = zmq.curve_keypair()
    admin_keys, user_keys = zmq.curve_keypair(), zmq.curve_keypair()
    clients = tmp_path / "clients"
    clients.mkdir()
    write_cert(tmp_path / "server.cert", server[0], server[1])
    write_cert(clients / "admin.cert", admin_keys[0])
    (clients / "user.cert").write_text(
        f'metadata\n    uid = "{users[0][1]}"\ncurve\n    public-key = "{user_keys[0].decode()}"\n')
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    state = tempfile.mkdtemp(prefix="zcd-it-", dir="/tmp")
    d = zcd_factory(runtime="runc", state_dir=state,
                    args=["--listen", f"ipc://{state}/zcd.sock", "--listen", endpoint]
                    + curve_args(tmp_path / "server.cert", clients))
    local = d.client()
    assert local.call("create", id=token, bundle=bundle(["sleep", "100"]))["ok"] is True

    def call(keys, op, **kw):
        s = zmq_ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.curve_serverkey = server[0]
        s.curve_publickey, s.curve_secretkey = keys
        s.connect(endpoint)
        try:
            s.send(pack(dict({"op": op, "rid": 1}, **kw)))
            assert s.poll(DEFAULT_WAIT * 1000), "no reply over CURVE"
            return unpack(s.recv())
        finally:
            s.close()
    assert [c["id"] for c in call(admin_keys, "state")["containers"]] == [token]
    assert call(user_keys, "state")["containers"] == []
    assert_error(call(user_keys, "signal", id=token, signal=9), "not_found")
    assert local.call("signal", id=token, signal=9)["ok"] is True


def test_rootless_container_stays_its_callers_across_a_restart(group_zcd, zcd_factory, runtime,
                                                              alice, bob, token):
    """state.json keeps the owner: after a restart the container is still
    hers alone, and its exit (signalled by her) carries her uid."""
    cid = f"rs-{token}"
    start_rootless(group_zcd, alice, cid)
    group_zcd.stop()
    again = zcd_factory(runtime=runtime, args=["--group", "zcd"], state_dir=group_zcd.state_dir)
    again.created_ids.add(cid)
    assert [c["id"] for c in alice.call(again, "state")["containers"]] == [cid]
    assert bob.call(again, "state")["containers"] == []
    assert_error(bob.call(again, "signal", id=cid, signal=9), "not_found")
    assert alice.call(again, "signal", id=cid, signal=9)["ok"] is True
    wait_exit(again, alice, cid)
    final, partials = alice.proxy.call_full(again.cmd_ep, "events", since_seq=0)
    exits = [p["event"] for p in partials if p["event"]["type"] == "exit"]
    assert exits and exits[-1]["id"] == cid and exits[-1]["uid"] == alice.uid


def test_rootless_signal_all_reaches_every_process(group_zcd, alice, token):
    """A rootless container has no cgroup, so `all` goes to every process of
    its pid namespace (as its owner), children included."""
    cid = f"all-{token}"
    out = alice.dir / "all.out"
    c = start_rootless(group_zcd, alice, cid,
                       args=("sh", "-c", "sleep 1000 & sleep 1000 & echo up; wait"),
                       stdout=str(out))
    init = c["processes"][0]["system_pid"]
    wait_for(lambda: "up" in read_text(out), what="children started")
    ns = os.readlink(f"/proc/{init}/ns/pid")

    def members():
        found = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if os.readlink(f"/proc/{d}/ns/pid") == ns:
                        found.append(int(d))
                except OSError:
                    pass
        return found
    assert len(members()) >= 3
    assert alice.call(group_zcd, "signal", id=cid, signal=9, all=True)["ok"] is True
    wait_exit(group_zcd, alice, cid)
    wait_for(lambda: not members(), what="every process of the container gone")
