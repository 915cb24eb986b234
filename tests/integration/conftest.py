"""Fixtures for the zcd integration suite.

Everything here talks to the real daemon (build/zcd) over its wire protocol
(../shared/PROTOCOL.md) with pyzmq and msgpack, and to the real runtimes
(runc, crun) with busybox bundles written by this file.  Nothing waits a fixed
time: every wait is for a condition, with a deadline.
"""

import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import msgpack
import pytest
import zmq

REPO = Path(__file__).resolve().parents[2]
_build = Path(os.environ.get("ZCD_BUILD", "build"))
BUILD = _build if _build.is_absolute() else REPO / _build
ZCD = BUILD / "zcd"
ZCTR = BUILD / "zctr"
SHIM_NAME = "zcd-shim"
BUSYBOX = Path("/bin/busybox")

RUNTIMES = ["runc", "crun"]
# zcd passes no --root to the runtime, so each runtime keeps its state here.
RUNTIME_ROOTS = {"runc": "/run/runc", "crun": "/run/crun"}

# Daemon flags the suite always passes; durations in the daemon's syntax.
HEARTBEAT = "200ms"
DEFAULT_WAIT = 20.0


# --------------------------------------------------------------------------
# waiting


def wait_for(cond, timeout=DEFAULT_WAIT, what="condition", interval=0.005):
    """Poll cond() until it returns a truthy value; return that value.
    Fails the test with `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 2, 0.1)


def read_text(path):
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_file_contains(path, needle, timeout=DEFAULT_WAIT):
    return wait_for(lambda: needle in read_text(path) and read_text(path),
                    timeout, f"{needle!r} in {path}")


# --------------------------------------------------------------------------
# msgpack


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def rid_key(rid):
    """rids may be any msgpack value (lists are unhashable): key on bytes."""
    return pack(rid)


# --------------------------------------------------------------------------
# clients


class Client:
    """A DEALER (default) client of the command socket.

    call(op, **keys) sends one request and returns its final reply (the map
    with "ok").  send()/recv() pipeline: many requests in flight, replies
    matched by rid, partial replies (streaming ops) kept per rid."""

    def __init__(self, ctx, endpoint, created_ids=None):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.endpoint = endpoint
        self._rids = itertools.count(1)
        self._partials = {}
        self._finals = {}
        self.envelopes = {}
        self.created_ids = created_ids if created_ids is not None else set()

    def close(self):
        self.sock.close(0)

    def send(self, op, rid=None, envelope=(), **keys):
        """Send one request; returns its rid (an int chosen here unless given)."""
        if rid is None:
            rid = next(self._rids)
        body = {"op": op, "rid": rid}
        body.update(keys)
        if op == "create" and isinstance(keys.get("id"), str):
            self.created_ids.add(keys["id"])
        self.sock.send_multipart(list(envelope) + [pack(body)])
        return rid

    def send_raw(self, frames):
        self.sock.send_multipart(frames)

    def recv_raw(self, timeout=DEFAULT_WAIT):
        """Next message as a list of frames; TimeoutError if none comes."""
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise TimeoutError(f"no reply within {timeout}s")
        return self.sock.recv_multipart()

    def _pump(self, timeout):
        frames = self.recv_raw(timeout)
        reply = unpack(frames[-1])
        assert isinstance(reply, dict), f"reply is not a map: {reply!r}"
        key = rid_key(reply.get("rid"))
        if "ok" in reply:
            assert key not in self._finals, f"two final replies for rid {reply.get('rid')!r}"
            self._finals[key] = reply
            self.envelopes[key] = frames[:-1]
        else:
            self._partials.setdefault(key, []).append(reply)

    def recv(self, rid, timeout=DEFAULT_WAIT):
        """(partials, final) for rid, waiting up to timeout for the final."""
        key = rid_key(rid)
        deadline = time.monotonic() + timeout
        while key not in self._finals:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no final reply for rid {rid!r} within {timeout}s")
            self._pump(left)
        return self._partials.pop(key, []), self._finals.pop(key)

    def recv_any(self, timeout=DEFAULT_WAIT):
        """The next final reply, whichever request it answers."""
        deadline = time.monotonic() + timeout
        while not self._finals:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no final reply within {timeout}s")
            self._pump(left)
        key = next(iter(self._finals))
        return self._finals.pop(key)

    def call(self, op, timeout=DEFAULT_WAIT, **keys):
        rid = self.send(op, **keys)
        return self.recv(rid, timeout)[1]

    def stream(self, op, timeout=DEFAULT_WAIT, **keys):
        rid = self.send(op, **keys)
        return self.recv(rid, timeout)

    def ok(self, op, timeout=DEFAULT_WAIT, **keys):
        reply = self.call(op, timeout=timeout, **keys)
        assert reply.get("ok") is True, f"{op} {keys!r} failed: {reply!r}"
        return reply


class ReqClient:
    """A REQ client: strict send/recv alternation, libzmq adds the empty
    delimiter frame and strips the envelope from the reply."""

    def __init__(self, ctx, endpoint):
        self.sock = ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def close(self):
        self.sock.close(0)

    def call(self, op, timeout=DEFAULT_WAIT, **keys):
        body = {"op": op}
        body.update(keys)
        return self.call_raw(pack(body), timeout)

    def call_raw(self, body, timeout=DEFAULT_WAIT):
        self.sock.send(body)
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise TimeoutError(f"no reply within {timeout}s")
        frames = self.sock.recv_multipart()
        assert len(frames) == 1, f"REQ got {len(frames)} frames"
        return unpack(frames[0])


class Subscriber:
    """A SUB socket on the event endpoint.  Every event received is kept in
    .events (in arrival order) as the decoded map; heartbeats in .heartbeats."""

    def __init__(self, ctx, endpoint, prefix=""):
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt_string(zmq.SUBSCRIBE, prefix)
        if not "/heartbeat".startswith(prefix):
            self.sock.setsockopt_string(zmq.SUBSCRIBE, "/heartbeat")
        self.sock.connect(endpoint)
        self.events = []
        self.topics = []
        self.heartbeats = []

    def close(self):
        self.sock.close(0)

    def _pump(self, timeout):
        if not self.sock.poll(int(max(timeout, 0) * 1000), zmq.POLLIN):
            return False
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            assert len(frames) == 2, f"event message has {len(frames)} frames"
            topic = frames[0].decode()
            body = unpack(frames[1])
            if topic == "/heartbeat":
                self.heartbeats.append(body)
                continue
            assert topic == f"{body['id']}/{body['type']}", \
                f"topic {topic!r} does not match event {body!r}"
            self.topics.append(topic)
            self.events.append(body)

    def ready(self, timeout=10.0):
        """Wait for a heartbeat: from then on the subscription is live and no
        event published later is missed."""
        n = len(self.heartbeats)
        self.wait(lambda: len(self.heartbeats) > n, timeout, "a heartbeat")
        return self

    def wait(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            self._pump(0)
            value = cond()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out after {timeout}s waiting for {what}; "
                            f"events so far: {self.events!r}")
            self._pump(min(left, 0.2))

    def find(self, pred):
        return [e for e in self.events if pred(e)]

    def wait_event(self, pred, timeout=DEFAULT_WAIT, what="event"):
        """The first event received (ever) that matches pred."""
        def first():
            hits = self.find(pred)
            return hits[0] if hits else None
        return self.wait(first, timeout, what)

    def wait_type(self, cid, etype, pid=None, timeout=DEFAULT_WAIT):
        def pred(e):
            return (e.get("id") == cid and e.get("type") == etype
                    and (pid is None or e.get("pid") == pid))
        return self.wait_event(pred, timeout, f"{etype} event of {cid}/{pid}")

    def wait_exit(self, cid, pid="init", timeout=DEFAULT_WAIT):
        return self.wait_type(cid, "exit", pid, timeout)

    def drain(self, timeout=0.0):
        self._pump(timeout)


# --------------------------------------------------------------------------
# the daemon


def ipc_path(endpoint):
    assert endpoint.startswith("ipc://")
    return endpoint[len("ipc://"):]


class Daemon:
    def __init__(self, ctx, state_dir, runtime="runc", args=(), log_dir=None):
        self.ctx = ctx
        self.state_dir = str(state_dir)
        self.runtime = runtime
        self.args = list(args)
        self.cmd_ep = f"ipc://{self.state_dir}/zcd.sock"
        self.ev_ep = f"ipc://{self.state_dir}/events.sock"
        self.log_path = Path(log_dir or self.state_dir) / "zcd.log"
        self.proc = None
        self.created_ids = set()
        self.clients = []
        self.exit_code = None

    def argv(self):
        return [str(ZCD), "--state-dir", self.state_dir, "--runtime", self.runtime,
                "--log-level", "debug", "--heartbeat", HEARTBEAT] + self.args

    def start(self, timeout=15.0):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        probe = Client(self.ctx, self.cmd_ep)
        try:
            rid = probe.send("version")
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    pytest.fail(f"zcd exited with {self.proc.returncode} at start:\n"
                                + self.log_tail())
                try:
                    reply = probe.recv(rid, timeout=0.05)[1]
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"zcd did not answer version within {timeout}s:\n"
                                    + self.log_tail())
            assert reply.get("ok") is True, reply
        finally:
            probe.close()
        return self

    def log_tail(self, n=60):
        lines = read_text(self.log_path).splitlines()
        return "\n".join(lines[-n:])

    def client(self):
        c = Client(self.ctx, self.cmd_ep, self.created_ids)
        self.clients.append(c)
        return c

    def req_client(self):
        c = ReqClient(self.ctx, self.cmd_ep)
        self.clients.append(c)
        return c

    def subscriber(self, prefix="", ready=True):
        s = Subscriber(self.ctx, self.ev_ep, prefix)
        self.clients.append(s)
        return s.ready() if ready else s

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15.0):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return self.exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"zcd did not exit within {timeout}s of SIGTERM:\n"
                            + self.log_tail())
        self.exit_code = self.proc.returncode
        self.log.close()
        return self.exit_code

    def close_clients(self):
        for c in self.clients:
            c.close()
        self.clients = []


# --------------------------------------------------------------------------
# leftovers: runtime state, shims, wrapper processes


def runtime_list(runtime):
    try:
        out = subprocess.run([runtime, "--root", RUNTIME_ROOTS[runtime], "list", "-q"],
                             capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return set()
    return set(out.stdout.split())


def leftover_runtime_containers(ids):
    return {(rt, cid) for rt in RUNTIMES for cid in runtime_list(rt) if cid in ids}


def processes_under(state_dir):
    """Host pids whose cwd is inside state_dir (the shims run there)."""
    found = []
    prefix = str(state_dir).rstrip("/") + "/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if (cwd + "/").startswith(prefix):
            found.append(int(entry))
    return found


def kill_runtime_container(runtime, cid):
    root = RUNTIME_ROOTS[runtime]
    subprocess.run([runtime, "--root", root, "kill", cid, "KILL"],
                   capture_output=True, timeout=30)
    subprocess.run([runtime, "--root", root, "delete", "-f", cid],
                   capture_output=True, timeout=30)


def sweep(daemon, extra_pids=()):
    """Kill what a test left behind; return a description of it (empty = clean).
    Shims and runtime state may take a moment to go after the exit events,
    so both are awaited with a deadline before they count as leftovers."""
    ids = set(daemon.created_ids)
    left = []
    deadline = time.monotonic() + 10
    while True:
        rt_left = leftover_runtime_containers(ids) if ids else set()
        shims = processes_under(daemon.state_dir)
        if (not rt_left and not shims) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if rt_left:
        left.append(f"runtime containers: {sorted(rt_left)}")
        for rt, cid in rt_left:
            kill_runtime_container(rt, cid)
    if shims:
        left.append(f"processes under the state dir: {shims}")
        for pid in shims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for pid in extra_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


# --------------------------------------------------------------------------
# busybox bundles

DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware",
]
READONLY_PATHS = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]


def make_rootfs(path):
    """A busybox root filesystem: the static binary and a symlink per applet."""
    root = Path(path)
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True,
                             text=True, check=True).stdout.split()
    for name in applets:
        if name != "busybox" and not (root / "bin" / name).exists():
            os.symlink("busybox", root / "bin" / name)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")
    (root / "tmp").chmod(0o1777)
    return root


def oci_config(rootfs, args=("sh",), terminal=False, env=None, cwd="/",
               memory_limit=None, readonly=True, hostname="zcd-test"):
    """A complete OCI runtime config (spec 1.0.2) for a busybox container."""
    caps = list(DEFAULT_CAPS)
    resources = {"devices": [{"allow": False, "access": "rwm"}]}
    if memory_limit is not None:
        resources["memory"] = {"limit": int(memory_limit)}
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": bool(terminal),
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": list(env) if env is not None else [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm", "HOME=/root",
            ],
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": [], "ambient": [],
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": bool(readonly)},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666",
                         "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]},
        ],
        "linux": {
            "resources": resources,
            "namespaces": [{"type": t} for t in ["pid", "network", "ipc", "uts", "mount"]],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


class BundleFactory:
    def __init__(self, base, rootfs):
        self.base = Path(base)
        self.rootfs = rootfs
        self._n = itertools.count(1)

    def __call__(self, args=("sh",), terminal=False, env=None, memory_limit=None,
                 cwd="/", edit=None, name=None):
        """Write a bundle directory (config.json over the shared read-only
        busybox rootfs) and return its absolute path as a str.  edit(config)
        may change the config dict before it is written."""
        bundle = self.base / (name or f"bundle{next(self._n)}")
        bundle.mkdir(parents=True, exist_ok=False)
        config = oci_config(self.rootfs, args=args, terminal=terminal, env=env,
                            cwd=cwd, memory_limit=memory_limit)
        if edit is not None:
            edit(config)
        (bundle / "config.json").write_text(json.dumps(config, indent=2))
        return str(bundle)


# --------------------------------------------------------------------------
# cgroups


def cgroup_dir(pid, controller):
    """The host directory of the v1 `controller` cgroup of host pid `pid`."""
    rel = None
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                rel = path
    assert rel is not None, f"pid {pid} has no {controller} cgroup"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fstype, _, superopts = right.split()[:3]
            if fstype == "cgroup" and controller in superopts.split(","):
                mountpoint = left.split()[4]
                return Path(mountpoint + rel)
    pytest.fail(f"no cgroup v1 mount for {controller}")


# --------------------------------------------------------------------------
# fixtures


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def build_dir():
    if not ZCD.exists():
        pytest.fail(f"{ZCD} is not built (run make)")
    return BUILD


@pytest.fixture(scope="session")
def zmq_ctx():
    ctx = zmq.Context()
    yield ctx
    ctx.term()


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory):
    return make_rootfs(tmp_path_factory.mktemp("rootfs"))


@pytest.fixture
def bundle(tmp_path, rootfs):
    return BundleFactory(tmp_path / "bundles", rootfs)


@pytest.fixture
def token():
    """A short random tag that makes this test's container ids unique."""
    return secrets.token_hex(3)


@pytest.fixture
def cid(token):
    def make(name="c"):
        return f"{name}-{token}"
    return make


@pytest.fixture
def state_dir():
    # ipc paths must stay under ~107 bytes: no pytest tmp_path here.
    d = tempfile.mkdtemp(prefix="zcd-it-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def zcd_factory(build_dir, zmq_ctx, request, tmp_path):
    """Start daemons: zcd_factory(runtime="runc", args=[...], state_dir=None).
    Teardown stops each (SIGTERM), asserts it exited 0 and removed its ipc
    files, then kills any container or shim left behind and fails if there
    was any."""
    daemons = []
    dirs = []
    extra_pids = []

    def start(runtime="runc", args=(), state_dir=None, start=True):
        if state_dir is None:
            state_dir = tempfile.mkdtemp(prefix="zcd-it-", dir="/tmp")
            dirs.append(state_dir)
        d = Daemon(zmq_ctx, state_dir, runtime, args, log_dir=tmp_path)
        d.extra_pids = extra_pids
        daemons.append(d)
        return d.start() if start else d

    yield start

    problems = []
    rep = getattr(request.node, "rep_call", None)
    test_failed = rep is not None and rep.failed
    for d in daemons:
        d.close_clients()
        if d.proc is None:
            continue
        stopped_by_test = d.exit_code is not None
        was_running = d.running()
        code = d.stop()
        if test_failed:
            print(f"--- zcd log ({d.state_dir}) ---\n{d.log_tail(40)}")
        if not was_running and not stopped_by_test:
            problems.append(f"zcd died during the test (exit {code}):\n{d.log_tail(20)}")
        if was_running and code != 0:
            problems.append(f"zcd exited {code} on SIGTERM:\n{d.log_tail(20)}")
        if was_running:
            for ep in (d.cmd_ep, d.ev_ep):
                if os.path.exists(ipc_path(ep)):
                    problems.append(f"{ipc_path(ep)} left after SIGTERM")
        # An actor refusing a message (undecodable, mistyped, no handler) is
        # a schema mismatch between actors: zcd's bug, whatever the test.
        refused = [ln for ln in read_text(d.log_path).splitlines()
                   if "refused a message" in ln]
        if refused:
            problems.append("actors refused messages:\n" + "\n".join(refused[:5]))
        left = sweep(d, extra_pids)
        # a failed test stops half-way: what it left is no separate finding
        if left and not test_failed:
            problems.append("left behind by the test: " + "; ".join(left))
    for sd in dirs:
        shutil.rmtree(sd, ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    if shutil.which(request.param) is None:
        pytest.fail(f"{request.param} is not installed (make deps)")
    return request.param


@pytest.fixture
def zcd(zcd_factory, runtime):
    """A fresh daemon for this test, driving `runtime`."""
    return zcd_factory(runtime=runtime)


@pytest.fixture
def client(zcd):
    return zcd.client()


@pytest.fixture
def events(zcd):
    """A live subscriber to every event of the daemon (subscription confirmed)."""
    return zcd.subscriber("")


def error_code(reply):
    assert reply.get("ok") is False, f"expected an error, got {reply!r}"
    err = reply.get("error")
    assert isinstance(err, dict), reply
    assert isinstance(err.get("code"), str) and isinstance(err.get("message"), str), reply
    return err["code"]


def assert_error(reply, code, *needles):
    got = error_code(reply)
    assert got == code, f"expected {code}, got {reply!r}"
    msg = reply["error"]["message"]
    for n in needles:
        assert re.search(n, msg, re.I), f"error message {msg!r} lacks {n!r}"
    return msg


# --------------------------------------------------------------------------
# state layout, daemon liveness and CPU (test_hostile.py, test_full_disk.py)


def container_dir(state_dir, cid):
    """<state>/containers/<id>/: client-chosen names live only below here."""
    return Path(state_dir, "containers", cid)


def process_dir(state_dir, cid, pid="init"):
    return container_dir(state_dir, cid) / "procs" / pid


def call_alive(daemon, client, op, timeout=DEFAULT_WAIT, **keys):
    """client.call that fails at once, with the daemon's log, when the daemon
    dies while the request is in flight (instead of waiting out the timeout)."""
    rid = client.send(op, **keys)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.recv(rid, timeout=0.05)[1]
        except TimeoutError:
            pass
        if not daemon.running():
            pytest.fail(f"zcd died (exit {daemon.proc.returncode}) with {op} {keys!r} "
                        f"in flight:\n{daemon.log_tail(30)}")
        if time.monotonic() >= deadline:
            pytest.fail(f"no reply to {op} {keys!r} within {timeout}s:\n{daemon.log_tail(30)}")


def rss_bytes(pid):
    """Resident memory of pid (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def sanitized(daemon):
    """An ASan build: its quarantine holds freed memory on purpose, so RSS
    says nothing about a leak there."""
    return "asan" in str(daemon.argv()[0])


def cpu_seconds(pid):
    """utime + stime of every thread of pid, in seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid, seconds):
    """The share of one core pid used over the next `seconds` (a measurement
    window, not a wait for a condition)."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
