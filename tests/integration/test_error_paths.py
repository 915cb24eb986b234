"""The error paths of every operation (issue 14: "`internal` means a bug in zcd").

Every client mistake answers `invalid_argument` naming the key and why, every
race with an exit `not_found` or `invalid_state`, a full state dir
`unavailable`, a runtime failure `runtime_error`, a missing CRIU
`unavailable` (PROTOCOL.md, "Error codes").  For each operation of
PROTOCOL.md section 4 the mistakes and races a client can produce are
enumerated here with the exact code expected, and no reply at all, on any
path, may be `internal`.

Each test walks a table and collects every mismatch before failing, so one
run reports them all.  Everything that involves a container runs on runc and
crun; the rest on one daemon (runc)."""

import json
import os
import re
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import DEFAULT_WAIT, wait_for

SLEEP = ["sleep", "1000"]
PATH_ENV = ["PATH=/bin"]
RACE_TRIES = 50
INIT_RACES = 30      # each one a fresh container


# --------------------------------------------------------------------------
# the checker


class Expect:
    """Wraps a conftest.Client: every reply it receives (partial or final,
    expected or not) is checked for `internal`; expect() compares a reply
    with the codes allowed for it.  Mismatches are collected; done() fails
    with all of them."""

    def __init__(self, client, daemon=None):
        self.client = client
        self.daemon = daemon
        self.problems = []
        self.internal = []
        orig = client.recv

        def recv(rid, timeout=DEFAULT_WAIT):
            partials, final = orig(rid, timeout)
            for r in partials + [final]:
                err = r.get("error")
                if isinstance(err, dict) and err.get("code") == "internal":
                    self.internal.append(r)
            return partials, final
        client.recv = recv

    def __call__(self, label, reply, codes, *needles):
        """codes: one code, or a tuple of the allowed ones ("ok" = success).
        needles: regexps the error message must contain (case-insensitive)."""
        codes = (codes,) if isinstance(codes, str) else tuple(codes)
        if reply.get("ok") is True:
            got, msg = "ok", ""
        else:
            err = reply.get("error") or {}
            got, msg = err.get("code"), err.get("message", "")
            if not isinstance(got, str) or not isinstance(msg, str):
                self.problems.append(f"{label}: malformed error reply {reply!r}")
                return reply
        if got == "internal":
            self.problems.append(f"{label}: `internal`: {reply!r}")
        elif got not in codes:
            self.problems.append(f"{label}: expected {'/'.join(codes)}, got {reply!r}")
        elif got != "ok":
            for n in needles:
                if not re.search(n, msg, re.I):
                    self.problems.append(f"{label}: {got} message {msg!r} lacks {n!r}")
        return reply

    def call(self, label, codes, op, *needles, timeout=DEFAULT_WAIT, **keys):
        return self(label, self.client.call(op, timeout=timeout, **keys), codes, *needles)

    def done(self):
        problems = list(self.problems)
        problems += [f"`internal` reply (elsewhere): {r!r}" for r in self.internal
                     if not any(f"{r!r}" in p for p in problems)]
        if self.daemon is not None and not self.daemon.running():
            problems.append(f"zcd died:\n{self.daemon.log_tail(30)}")
        if problems:
            pytest.fail(f"{len(problems)} error path(s) wrong:\n  " + "\n  ".join(problems))


@pytest.fixture
def zcd_runc(zcd_factory):
    """For tables that involve no running container: one runtime is enough."""
    return zcd_factory(runtime="runc")


@pytest.fixture
def short_dir():
    """A short path: AF_UNIX socket paths are at most 107 bytes."""
    d = tempfile.mkdtemp(prefix="zcd-ep-", dir="/tmp")
    yield Path(d)
    subprocess.run(["rm", "-rf", d])


def unix_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)
    return s


LONG_PATH = "/tmp/" + "/".join(["d" * 200] * 25)          # 5,029 bytes: > PATH_MAX


def start(expect, events, bundle_path, c, **keys):
    reply = expect.client.call("create", id=c, bundle=bundle_path, **keys)
    assert reply.get("ok") is True, f"create {c}: {reply!r}"
    events.wait_type(c, "start-container", "init")
    return reply["container"]


def exec_ok(expect, events, c, pid, args, **keys):
    keys.setdefault("env", PATH_ENV)
    reply = expect.client.call("exec", id=c, pid=pid, args=args, **keys)
    assert reply.get("ok") is True, f"exec {c}/{pid}: {reply!r}"
    events.wait_type(c, "start-process", pid)
    return reply["system_pid"]


def kill_and_wait(client, events, c):
    reply = client.call("signal", id=c, signal=9)
    assert reply.get("ok") is True, f"kill {c}: {reply!r}"
    return events.wait_exit(c)


def run_to_exit(expect, events, bundle, c):
    """A container that has come and gone: its id now names nothing."""
    start(expect, events, bundle(args=["true"]), c)
    events.wait_exit(c)
    wait_for(lambda: expect.client.call("state", id=c).get("ok") is False,
             what=f"{c} to leave state")


# --------------------------------------------------------------------------
# ops without a container: version, state, stats, events, metrics, and the
# lookups of every container op


def test_errors_without_containers(zcd_runc, tmp_path):
    x = Expect(zcd_runc.client(), zcd_runc)
    none = "none-zcd"
    # version
    x.call("version ok", "ok", "version")
    x.call("version v=2", "unsupported_version", "version", v=2)
    x.call("version v str", "invalid_argument", "version", r"\bv\b", v="1")
    x.call("version v<0", "invalid_argument", "version", r"\bv\b", v=-1)
    x.call("unknown op", "unknown_op", "no_such_op")
    # state
    x.call("state missing id", "not_found", "state", none, id=none)
    x.call("state bad id", "invalid_argument", "state", r"\bid\b", id="../etc")
    x.call("state id int", "invalid_argument", "state", r"\bid\b", id=5)
    # stats
    x.call("stats missing id", "not_found", "stats", none, id=none)
    x.call("stats missing ids", "not_found", "stats", none, ids=[none])
    x.call("stats ids str", "invalid_argument", "stats", r"\bids\b", ids="abc")
    x.call("stats ids [int]", "invalid_argument", "stats", r"\bids\b", ids=[5])
    x.call("stats bad id", "invalid_argument", "stats", r"\bid\b", id="a/b")
    x.call("stats of nothing", "ok", "stats")
    # events
    x.call("events since_seq<0", "invalid_argument", "events", "since_seq", since_seq=-1)
    x.call("events since_seq str", "invalid_argument", "events", "since_seq", since_seq="1")
    x.call("events since str", "invalid_argument", "events", r"\bsince\b", since="yesterday")
    x.call("events id int", "invalid_argument", "events", r"\bid\b", id=5)
    x.call("events bad id", "invalid_argument", "events", r"\bid\b", id="../x")
    x.call("events since_seq in the future", "ok", "events", since_seq=2**63)
    x.call("events of an unknown id", "ok", "events", id=none)
    x.call("metrics", "ok", "metrics")
    # create: keys
    x.call("create no id", "invalid_argument", "create", r"\bid\b", bundle="/tmp")
    x.call("create no bundle", "invalid_argument", "create", "bundle", id="abc")
    # the container ops on a missing container
    x.call("exec missing", "not_found", "exec", none, id=none, pid="e", args=["true"])
    x.call("signal missing", "not_found", "signal", none, id=none, signal=9)
    x.call("signal all missing", "not_found", "signal", none, id=none, signal=9, all=True)
    x.call("update missing", "not_found", "update", none, id=none, status="paused")
    x.call("update resources missing", "not_found", "update", none, id=none,
           resources={"cpu_shares": 512})
    x.call("update_process missing", "not_found", "update_process", none, id=none,
           pid="init", close_stdin=True)
    x.call("checkpoint_create missing", "not_found", "checkpoint_create", none, id=none,
           checkpoint={"name": "x"})
    x.call("checkpoint_list missing", "not_found", "checkpoint_list", none, id=none)
    x.call("checkpoint_delete missing", "not_found", "checkpoint_delete", none, id=none,
           name="x")
    x.done()


def test_metrics_format_is_checked(zcd_runc):
    """PROTOCOL.md `metrics`: `format` (str, optional: "prometheus" returns
    {"text"}); a known key of the wrong type, or a value out of its range,
    is invalid_argument naming the key."""
    x = Expect(zcd_runc.client(), zcd_runc)
    x.call("metrics format int", "invalid_argument", "metrics", "format", format=5)
    x.call("metrics format xml", "invalid_argument", "metrics", "format", format="xml")
    reply = x.call("metrics prometheus", "ok", "metrics", format="prometheus")
    if reply.get("ok") is True and not isinstance(reply.get("text"), str):
        x.problems.append(f"metrics prometheus: no `text` str in {reply!r}")
    x.done()


def test_update_process_width_alone_checked_before_lookup(zcd_runc):
    """PROTOCOL.md section 2: a request is checked completely before
    anything is looked up; a malformed request gets invalid_argument even
    when the container does not exist.  `width` without `height` is refused
    as invalid_argument on an existing process (test_update_process_error_paths)."""
    x = Expect(zcd_runc.client(), zcd_runc)
    x.call("update_process width alone, missing container", "invalid_argument",
           "update_process", "height", id="none-zcd", pid="init", width=80)
    x.call("update_process height alone, missing container", "invalid_argument",
           "update_process", "width", id="none-zcd", pid="init", height=24)
    x.done()


def test_checkpoint_errors_without_containers(zcd_runc, tmp_path):
    x = Expect(zcd_runc.client(), zcd_runc)
    cdir = tmp_path / "cps"
    cdir.mkdir()
    afile = tmp_path / "a-file"
    afile.write_text("x")
    # checkpoint_create
    x.call("create no checkpoint", "invalid_argument", "checkpoint_create", "checkpoint",
           id="abc")
    x.call("create checkpoint not a map", "invalid_argument", "checkpoint_create",
           "checkpoint", id="abc", checkpoint="x")
    x.call("create no name", "invalid_argument", "checkpoint_create", "name", id="abc",
           checkpoint={})
    x.call("create no id", "invalid_argument", "checkpoint_create", r"\bid\b",
           checkpoint={"name": "x"}, checkpoint_dir=str(cdir))
    # checkpoint_list
    x.call("list with neither id nor dir", "invalid_argument", "checkpoint_list",
           "id|checkpoint_dir")
    x.call("list relative dir", "invalid_argument", "checkpoint_list", "checkpoint_dir",
           checkpoint_dir="rel/cps")
    x.call("list dir is a file", "invalid_argument", "checkpoint_list", "checkpoint_dir",
           checkpoint_dir=str(afile))
    x.call("list of an empty dir", "ok", "checkpoint_list", checkpoint_dir=str(cdir))
    x.call("list of a missing dir", "ok", "checkpoint_list",
           checkpoint_dir=str(tmp_path / "nothing"))
    # checkpoint_delete
    x.call("delete name not there", "not_found", "checkpoint_delete", "nope",
           checkpoint_dir=str(cdir), name="nope")
    x.call("delete in a missing dir", "not_found", "checkpoint_delete",
           checkpoint_dir=str(tmp_path / "nothing"), name="nope")
    x.call("delete no name", "invalid_argument", "checkpoint_delete", "name",
           checkpoint_dir=str(cdir))
    x.call("delete bad name", "invalid_argument", "checkpoint_delete", "name",
           checkpoint_dir=str(cdir), name="../x")
    x.call("delete with neither id nor dir", "invalid_argument", "checkpoint_delete",
           "id|checkpoint_dir", name="x")
    x.call("delete relative dir", "invalid_argument", "checkpoint_delete", "checkpoint_dir",
           checkpoint_dir="rel/cps", name="x")
    assert os.listdir(cdir) == [] and afile.read_text() == "x"
    x.done()


# --------------------------------------------------------------------------
# create


def write_bundle(base, name, config_text=None, config=None):
    b = base / name
    b.mkdir()
    if config is not None:
        config_text = json.dumps(config)
    if config_text is not None:
        (b / "config.json").write_text(config_text)
    return str(b)


def test_create_error_paths(zcd, events, bundle, cid, tmp_path, short_dir):
    x = Expect(zcd.client(), zcd)
    base = tmp_path / "odd"
    base.mkdir()
    good = bundle(args=SLEEP)
    good_cfg = json.loads(Path(good, "config.json").read_text())

    def cfg(edit):
        c = json.loads(json.dumps(good_cfg))
        edit(c)
        return c

    def seccomp(names=("getpid",), action="SCMP_ACT_ERRNO"):
        def edit(c):
            c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                     "architectures": ["SCMP_ARCH_X86_64"],
                                     "syscalls": [{"names": list(names), "action": action}]}
        return edit

    afile = tmp_path / "not-a-bundle"
    afile.write_text("x")
    adir = short_dir / "a-directory"
    adir.mkdir()
    sock = unix_socket(short_dir / "s.sock")
    bad_ids = []
    try:
        # (label, codes, needles, keys)
        cases = [
            ("bundle relative", "invalid_argument", ["bundle"], {"bundle": "rel/bundle"}),
            ("bundle missing", "invalid_argument", ["bundle"], {"bundle": str(base / "none")}),
            ("bundle is a file", "invalid_argument", ["bundle"], {"bundle": str(afile)}),
            ("bundle lacks config.json", "invalid_argument", ["config.json"],
             {"bundle": write_bundle(base, "empty")}),
            ("config.json invalid JSON", "invalid_argument", ["config.json", "json"],
             {"bundle": write_bundle(base, "broken", '{"ociVersion": "1.0.2", "process": ')}),
            ("config.json not an object", "invalid_argument", ["config.json"],
             {"bundle": write_bundle(base, "array", "[]")}),
            ("config.json without ociVersion", "invalid_argument", ["ociVersion"],
             {"bundle": write_bundle(base, "noversion", "{}")}),
            ("config.json empty args", "invalid_argument", ["args"],
             {"bundle": write_bundle(base, "noargs", config=cfg(
                 lambda c: c["process"].__setitem__("args", [])))}),
            ("config.json no root.path", "invalid_argument", ["root"],
             {"bundle": write_bundle(base, "noroot", config=cfg(
                 lambda c: c["root"].pop("path")))}),
            ("seccomp unknown syscall", "invalid_argument", ["no_such_syscall_zcd"],
             {"bundle": write_bundle(base, "sc1", config=cfg(
                 seccomp(["getpid", "no_such_syscall_zcd"])))}),
            ("seccomp unknown action", "invalid_argument", ["SCMP_ACT_EXPLODE"],
             {"bundle": write_bundle(base, "sc2", config=cfg(
                 seccomp(action="SCMP_ACT_EXPLODE")))}),
            ("stdout is a directory", "invalid_argument", ["stdout", "is a directory"],
             {"stdout": str(adir)}),
            ("stdout is a socket", "invalid_argument", ["stdout", "socket"],
             {"stdout": str(short_dir / "s.sock")}),
            ("stdout > PATH_MAX", "invalid_argument", ["stdout"], {"stdout": LONG_PATH}),
            ("stdout relative", "invalid_argument", ["stdout"], {"stdout": "rel.out"}),
            ("stdout parent missing", "invalid_argument", ["stdout"],
             {"stdout": str(short_dir / "no-dir" / "out")}),
            ("stderr is a directory", "invalid_argument", ["stderr", "is a directory"],
             {"stderr": str(adir)}),
            ("stdin missing", "invalid_argument", ["stdin"],
             {"stdin": str(short_dir / "no-such-input")}),
            ("stdin is a directory", "invalid_argument", ["stdin", "directory"],
             {"stdin": str(adir)}),
            ("labels not strs", "invalid_argument", ["labels"], {"labels": [1]}),
            ("runtime_args not strs", "invalid_argument", ["runtime_args"],
             {"runtime_args": [1]}),
            # the runtime's own failures
            ("missing executable", "runtime_error", ["/no/such/binary"],
             {"bundle": bundle(args=["/no/such/binary"])}),
            ("unknown runtime flag", "runtime_error", [],
             {"runtime_args": ["--no-such-flag-zcd"]}),
            # PROTOCOL.md does not say which; never internal
            ("runtime binary missing", ("invalid_argument", "runtime_error", "unavailable"),
             ["no-such-runtime-zcd"], {"runtime": "/no/such/no-such-runtime-zcd"}),
            ("rootfs missing", ("invalid_argument", "runtime_error"), [],
             {"bundle": write_bundle(base, "noroots", config=cfg(
                 lambda c: c["root"].__setitem__("path", str(base / "no-rootfs"))))}),
        ]
        for i, (label, codes, needles, keys) in enumerate(cases):
            c = cid(f"bad{i}")
            bad_ids.append(c)
            keys = dict(keys)
            keys.setdefault("bundle", good)
            create_refused(x, events, f"create: {label}", codes, needles, id=c, **keys)

        # an id in use, and the same id once it is free again
        c = cid("used")
        start(x, events, good, c)
        x.call("create: id in use", "already_exists", "create", c, id=c, bundle=good)
        assert kill_and_wait(x.client, events, c)["status"] == 137
        wait_for(lambda: x.client.call("state", id=c).get("ok") is False,
                 what=f"{c} to leave state")
        start(x, events, bundle(args=["true"]), c)
        events.wait_exit(c)
    finally:
        sock.close()
    events.drain(0.05)
    # failed creates leave no trace
    leaked = [e for e in events.events if e["id"] in bad_ids]
    if leaked:
        x.problems.append(f"events of failed creates: {leaked}")
    x.done()


MARKER = "zcd-checkpoint.json"


def test_restore_errors(zcd, events, bundle, cid, tmp_path, zcd_factory, runtime):
    """`create` with `checkpoint`: a checkpoint that is not there is
    not_found ("no such container, process or checkpoint"); one that is
    there, with CRIU not working on this machine, unavailable naming CRIU
    (as checkpoint_create answers), never the runtime's complaint."""
    x = Expect(zcd.client(), zcd)
    cdir = tmp_path / "cps"
    cdir.mkdir()
    good = bundle(args=SLEEP)
    create_refused(x, events, "restore: no such checkpoint", "not_found", ["nope"],
                   id=cid("r1"), bundle=good, checkpoint="nope", checkpoint_dir=str(cdir))
    create_refused(x, events, "restore: missing checkpoint_dir", "not_found", [],
                   id=cid("r2"), bundle=good, checkpoint="nope",
                   checkpoint_dir=str(tmp_path / "nothing"))
    create_refused(x, events, "restore: bad checkpoint name", "invalid_argument",
                   ["checkpoint"], id=cid("r3"), bundle=good, checkpoint="../x",
                   checkpoint_dir=str(cdir))
    create_refused(x, events, "restore: relative checkpoint_dir", "invalid_argument",
                   ["checkpoint_dir"], id=cid("r4"), bundle=good, checkpoint="x",
                   checkpoint_dir="rel/cps")
    # a checkpoint as zcd writes it (marker, an image file), CRIU broken
    cp = cdir / "x"
    cp.mkdir(mode=0o700)
    (cp / "pages-1.img").write_bytes(b"\0" * 64)
    (cp / MARKER).write_text(json.dumps(
        {"name": "x", "created": 1, "exit": False, "tcp": False, "unix_sockets": False,
         "shell": False, "empty_ns": []}, separators=(",", ":")))
    (cp / MARKER).chmod(0o600)
    # a working CRIU: the runtime's refusal of these images (not CRIU's
    # absence); without one, `unavailable` naming CRIU (as checkpoint_create)
    create_refused(x, events, "restore of bad images", "runtime_error", [],
                   id=cid("r5"), bundle=good, checkpoint="x", checkpoint_dir=str(cdir))
    broken = zcd_factory(runtime=runtime, args=["--criu", "/bin/false"])
    nocriu, nevents = Expect(broken.client(), broken), broken.subscriber("")
    # a checkpoint_create waits for the daemon's `criu check`: then it is known
    start(nocriu, nevents, good, cid("r7"))
    nocriu.call("checkpoint without CRIU", "unavailable", "checkpoint_create", "CRIU",
                id=cid("r7"), checkpoint={"name": "z"}, checkpoint_dir=str(tmp_path / "z"),
                timeout=60)
    create_refused(nocriu, nevents, "restore without CRIU", "unavailable", ["CRIU"],
                   id=cid("r6"), bundle=good, checkpoint="x", checkpoint_dir=str(cdir))
    kill_and_wait(nocriu.client, nevents, cid("r7"))
    x.done()
    nocriu.done()


def create_refused(x, events, label, codes, needles, **keys):
    """A create that must fail: check it, and that it left nothing in
    `state`; a container it started anyway is killed again."""
    c = keys["id"]
    reply = x.call(label, codes, "create", *needles, timeout=60, **keys)
    if reply.get("ok") is True:
        events.wait_type(c, "start-container", "init")
        kill_and_wait(x.client, events, c)
    else:
        x.call(f"{label}: state after", "not_found", "state", id=c)
    return reply


LOG_CASES = [
    ("log not a map", ["log"], "x"),
    ("log without path", ["path"], {"max_bytes": 65536, "max_files": 2}),
    ("log path relative", ["path|log"], {"path": "rel.log", "max_bytes": 65536, "max_files": 2}),
    ("log path is a directory", ["path|log", "directory"],
     {"path": "<dir>", "max_bytes": 65536, "max_files": 2}),
    ("log path not a str", ["path"], {"path": 5}),
    ("log max_bytes < 0", ["max_bytes"], {"path": "<file>", "max_bytes": -1, "max_files": 2}),
    ("log max_files str", ["max_files"], {"path": "<file>", "max_bytes": 65536,
                                          "max_files": "2"}),
]


def test_log_key_errors(zcd, events, bundle, cid, short_dir):
    """PROTOCOL.md `create` and `exec`: `log` = {"path": str (absolute),
    "max_bytes": uint, "max_files": uint}: its mistakes are invalid_argument
    naming the key, like the stdio paths'."""
    x = Expect(zcd.client(), zcd)
    adir = short_dir / "a-directory"
    adir.mkdir()

    def log_value(v):
        if isinstance(v, dict) and v.get("path") in ("<dir>", "<file>"):
            v = dict(v, path=str(adir) if v["path"] == "<dir>" else str(short_dir / "c.log"))
        return v
    good = bundle(args=SLEEP)
    for i, (label, needles, value) in enumerate(LOG_CASES):
        create_refused(x, events, f"create: {label}", "invalid_argument", needles,
                       id=cid(f"log{i}"), bundle=good, log=log_value(value))
    c = cid("exl")
    start(x, events, good, c)
    for i, (label, needles, value) in enumerate(LOG_CASES):
        p = f"log{i}"
        reply = x.call(f"exec: {label}", "invalid_argument", "exec", *needles, id=c, pid=p,
                       args=SLEEP, env=PATH_ENV, log=log_value(value))
        if reply.get("ok") is True:
            x.client.call("signal", id=c, pid=p, signal=9)
            events.wait_exit(c, p)
    assert kill_and_wait(x.client, events, c)["status"] == 137
    x.done()


# --------------------------------------------------------------------------
# exec


def test_exec_error_paths(zcd, events, bundle, cid, short_dir):
    x = Expect(zcd.client(), zcd)
    adir = short_dir / "a-directory"
    adir.mkdir()
    sock = unix_socket(short_dir / "s.sock")
    c = cid("ex")
    try:
        start(x, events, bundle(args=SLEEP), c)
        exec_ok(x, events, c, "long", SLEEP)
        cases = [
            ("pid in use", "already_exists", ["long"], {"pid": "long"}),
            ("pid init", ("already_exists", "invalid_argument"), [], {"pid": "init"}),
            ("bad pid syntax", "invalid_argument", ["pid"], {"pid": "../x"}),
            ("no args", "invalid_argument", ["args"], {"args": []}),
            ("args not strs", "invalid_argument", ["args"], {"args": [1]}),
            ("missing executable", "runtime_error", ["/no/such/exe"],
             {"args": ["/no/such/exe"]}),
            ("stdout is a directory", "invalid_argument", ["stdout", "is a directory"],
             {"stdout": str(adir)}),
            ("stdout is a socket", "invalid_argument", ["stdout", "socket"],
             {"stdout": str(short_dir / "s.sock")}),
            ("stdout > PATH_MAX", "invalid_argument", ["stdout"], {"stdout": LONG_PATH}),
            ("stderr relative", "invalid_argument", ["stderr"], {"stderr": "rel.err"}),
            ("stdin missing", "invalid_argument", ["stdin"],
             {"stdin": str(short_dir / "no-such-input")}),
            ("user uid < 0", "invalid_argument", ["uid"], {"user": {"uid": -1, "gid": 0}}),
            ("user not a map", "invalid_argument", ["user"], {"user": "root"}),
            ("rlimits not maps", "invalid_argument", ["rlimits"], {"rlimits": ["x"]}),
            ("env not strs", "invalid_argument", ["env"], {"env": [1]}),
            # mistakes only the runtime knows (PROTOCOL.md does not say; runc and
            # crun ignore an unknown capability, crun takes a relative cwd):
            # never internal
            ("relative cwd", ("ok", "invalid_argument", "runtime_error"), [], {"cwd": "tmp"}),
            ("unknown capability", ("ok", "invalid_argument", "runtime_error"), [],
             {"capabilities": ["CAP_NO_SUCH_ZCD"]}),
            ("unknown rlimit", ("ok", "invalid_argument", "runtime_error"), [],
             {"rlimits": [{"type": "RLIMIT_NO_SUCH_ZCD", "soft": 1, "hard": 1}]}),
        ]
        for i, (label, codes, needles, keys) in enumerate(cases):
            keys = dict(keys)
            keys.setdefault("pid", f"bad{i}")
            keys.setdefault("args", ["true"])
            keys.setdefault("env", PATH_ENV)
            x.call(f"exec: {label}", codes, "exec", *needles, id=c, **keys)
            events.drain(0.0)
            if keys["pid"] == f"bad{i}" and events.find(
                    lambda e: e["id"] == c and e.get("pid") == keys["pid"]
                    and e["type"] == "start-process"):
                events.wait_exit(c, keys["pid"])        # `true`: gone at once
        procs = {p["pid"] for p in x.client.ok("state", id=c)["containers"][0]["processes"]}
        assert procs == {"init", "long"}, procs

        # paused
        x.call("pause", "ok", "update", id=c, status="paused")
        x.call("exec: paused", "invalid_state", "exec", "paused", id=c, pid="p1",
               args=["true"], env=PATH_ENV)
        x.call("resume", "ok", "update", id=c, status="running")
        exec_ok(x, events, c, "p1", ["true"])
        events.wait_exit(c, "p1")
        assert kill_and_wait(x.client, events, c)["status"] == 137
        events.wait_exit(c, "long")
    finally:
        sock.close()

    # a container that has exited
    gone = cid("gone")
    run_to_exit(x, events, bundle, gone)
    x.call("exec: exited container", "not_found", "exec", gone, id=gone, pid="e",
           args=["true"], env=PATH_ENV)
    x.done()


def test_exec_racing_init_exit(zcd, events, bundle, cid):
    """An exec sent right behind a SIGKILL of the init: ok, or (a race with
    the exit) not_found / invalid_state; never the runtime's complaint."""
    x = Expect(zcd.client(), zcd)
    b = bundle(args=SLEEP)
    for i in range(INIT_RACES):
        r = cid(f"race{i}")
        start(x, events, b, r)
        krid = x.client.send("signal", id=r, signal=9)
        erid = x.client.send("exec", id=r, pid="late", args=SLEEP, env=PATH_ENV)
        x(f"exec race {i}: kill", x.client.recv(krid)[1], "ok")
        x(f"exec race {i}: exec", x.client.recv(erid)[1], ("ok", "not_found", "invalid_state"))
        events.wait_exit(r)
    x.done()


# --------------------------------------------------------------------------
# signal


def test_signal_error_paths(zcd, events, bundle, cid):
    x = Expect(zcd.client(), zcd)
    c = cid("sg")
    start(x, events, bundle(args=SLEEP), c)
    x.call("signal 0", "invalid_argument", "signal", "signal", id=c, signal=0)
    x.call("signal 65", "invalid_argument", "signal", "signal", id=c, signal=65)
    x.call("signal str", "invalid_argument", "signal", "signal", id=c, signal="KILL")
    x.call("signal no pid", "not_found", "signal", "nope", id=c, pid="nope", signal=9)
    x.call("signal all no pid", "not_found", "signal", "nope", id=c, pid="nope", signal=9,
           all=True)
    x.call("signal bad pid", "invalid_argument", "signal", "pid", id=c, pid="a/b", signal=9)
    exec_ok(x, events, c, "done", ["true"])
    events.wait_exit(c, "done")
    x.call("signal an exited exec", "not_found", "signal", "done", id=c, pid="done", signal=9)

    # racing an exec's exit: `true`, signalled at once
    for i in range(RACE_TRIES):
        p = f"t{i}"
        erid = x.client.send("exec", id=c, pid=p, args=["true"], env=PATH_ENV)
        srid = x.client.send("signal", id=c, pid=p, signal=15)
        x(f"signal race {p}: exec", x.client.recv(erid)[1], "ok")
        x(f"signal race {p}: signal", x.client.recv(srid)[1], ("ok", "not_found", "invalid_state"))
    for i in range(RACE_TRIES):
        events.wait_exit(c, f"t{i}")
    assert kill_and_wait(x.client, events, c)["status"] == 137

    gone = cid("gone")
    run_to_exit(x, events, bundle, gone)
    x.call("signal an exited container", "not_found", "signal", gone, id=gone, signal=9)
    x.call("signal all an exited container", "not_found", "signal", gone, id=gone, signal=9,
           all=True)
    x.done()


def test_signal_racing_init_exit(zcd, events, bundle, cid):
    """Two SIGKILLs back to back (the second with `all` every other time):
    the second races the init's exit, so it answers ok, not_found or
    invalid_state (issue 14), never runtime_error."""
    x = Expect(zcd.client(), zcd)
    b = bundle(args=SLEEP)
    for i in range(INIT_RACES):
        r = cid(f"race{i}")
        start(x, events, b, r)
        k1 = x.client.send("signal", id=r, signal=9)
        k2 = x.client.send("signal", id=r, signal=9, all=bool(i % 2))
        x(f"double kill {i}: first", x.client.recv(k1)[1], "ok")
        x(f"double kill {i}: second", x.client.recv(k2)[1], ("ok", "not_found", "invalid_state"))
        events.wait_exit(r)
    x.done()


# --------------------------------------------------------------------------
# update


def test_update_error_paths(zcd, events, bundle, cid):
    x = Expect(zcd.client(), zcd)
    c = cid("up")
    start(x, events, bundle(args=SLEEP), c)
    x.call("status bogus", "invalid_argument", "update", "status", id=c, status="sleeping")
    x.call("status int", "invalid_argument", "update", "status", id=c, status=1)
    x.call("resources not a map", "invalid_argument", "update", "resources", id=c, resources=5)
    x.call("memory_limit str", "invalid_argument", "update", "memory_limit", id=c,
           resources={"memory_limit": "1G"})
    x.call("cpu_shares < 0", "invalid_argument", "update", "cpu_shares", id=c,
           resources={"cpu_shares": -2})
    x.call("cpuset_cpus int", "invalid_argument", "update", "cpuset_cpus", id=c,
           resources={"cpuset_cpus": 0})
    # the kernel refuses it: a runtime failure, and nothing changed
    x.call("cpuset_cpus out of range", "runtime_error", "update", id=c,
           resources={"cpuset_cpus": "100000"})
    st = x.client.ok("state", id=c)["containers"][0]
    assert st["status"] == "running", st
    x.call("resources after a failure", "ok", "update", id=c, resources={"cpu_shares": 256})
    assert kill_and_wait(x.client, events, c)["status"] == 137

    gone = cid("gone")
    run_to_exit(x, events, bundle, gone)
    x.call("update an exited container", "not_found", "update", gone, id=gone, status="paused")
    x.done()


def test_update_racing_init_exit(zcd, events, bundle, cid):
    """A pause or a resources update sent right behind a SIGKILL of the
    init races its exit: ok, not_found or invalid_state, never runtime_error."""
    x = Expect(zcd.client(), zcd)
    b = bundle(args=SLEEP)
    for i in range(INIT_RACES):
        r = cid(f"race{i}")
        start(x, events, b, r)
        k = x.client.send("signal", id=r, signal=9)
        if i % 2:
            u = x.client.send("update", id=r, status="paused")
        else:
            u = x.client.send("update", id=r, resources={"cpu_shares": 300})
        x(f"update race {i}: kill", x.client.recv(k)[1], "ok")
        x(f"update race {i}: update", x.client.recv(u)[1], ("ok", "not_found", "invalid_state"))
        events.wait_exit(r)
    x.done()


# --------------------------------------------------------------------------
# update_process


def test_update_process_error_paths(zcd, events, bundle, cid):
    x = Expect(zcd.client(), zcd)
    c = cid("upp")
    start(x, events, bundle(args=SLEEP), c)
    exec_ok(x, events, c, "tty", SLEEP, terminal=True)
    x.call("no pid", "invalid_argument", "update_process", "pid", id=c)
    x.call("missing pid", "not_found", "update_process", "nope", id=c, pid="nope",
           close_stdin=True)
    x.call("resize without terminal", "invalid_state", "update_process", "terminal",
           id=c, pid="init", width=80, height=24)
    x.call("width without height", "invalid_argument", "update_process", "height",
           id=c, pid="tty", width=80)
    x.call("height without width", "invalid_argument", "update_process", "width",
           id=c, pid="tty", height=24)
    x.call("width < 0", "invalid_argument", "update_process", "width",
           id=c, pid="tty", width=-1, height=24)
    x.call("close_stdin int", "invalid_argument", "update_process", "close_stdin",
           id=c, pid="tty", close_stdin=1)
    x.call("resize with terminal", "ok", "update_process", id=c, pid="tty", width=100, height=30)
    exec_ok(x, events, c, "done", ["true"])
    events.wait_exit(c, "done")
    x.call("close_stdin of an exited exec", "not_found", "update_process", "done",
           id=c, pid="done", close_stdin=True)

    # close_stdin racing an exec's exit
    for i in range(RACE_TRIES):
        p = f"t{i}"
        erid = x.client.send("exec", id=c, pid=p, args=["true"], env=PATH_ENV)
        urid = x.client.send("update_process", id=c, pid=p, close_stdin=True)
        x(f"close_stdin race {p}: exec", x.client.recv(erid)[1], "ok")
        x(f"close_stdin race {p}", x.client.recv(urid)[1], ("ok", "not_found", "invalid_state"))
    for i in range(RACE_TRIES):
        events.wait_exit(c, f"t{i}")
    assert kill_and_wait(x.client, events, c)["status"] == 137
    events.wait_exit(c, "tty")

    gone = cid("gone")
    run_to_exit(x, events, bundle, gone)
    x.call("update_process an exited container", "not_found", "update_process", gone,
           id=gone, pid="init", close_stdin=True)
    x.done()


# --------------------------------------------------------------------------
# state and stats of containers that come and go


def test_state_and_stats_error_paths(zcd, events, bundle, cid):
    x = Expect(zcd.client(), zcd)
    c, none = cid("st"), cid("none")
    start(x, events, bundle(args=SLEEP), c)
    x.call("state of it", "ok", "state", id=c)
    x.call("stats of it", "ok", "stats", id=c)
    x.call("stats ids, one missing", "not_found", "stats", none, ids=[c, none])
    x.call("pause", "ok", "update", id=c, status="paused")
    x.call("stats of a paused one", "ok", "stats", id=c)
    # racing the exit: state and stats right behind a SIGKILL
    k = x.client.send("signal", id=c, signal=9)
    s1 = x.client.send("stats", id=c)
    s2 = x.client.send("state", id=c)
    s3 = x.client.send("stats")
    x("kill", x.client.recv(k)[1], "ok")
    x("stats racing the exit", x.client.recv(s1)[1], ("ok", "not_found"))
    x("state racing the exit", x.client.recv(s2)[1], ("ok", "not_found"))
    x("stats of all racing the exit", x.client.recv(s3)[1], "ok")
    events.wait_exit(c)
    wait_for(lambda: x.client.call("state", id=c).get("ok") is False, what=f"{c} to leave state")
    x.call("state of an exited container", "not_found", "state", c, id=c)
    x.call("stats of an exited container", "not_found", "stats", c, id=c)
    x.call("stats of all after the exit", "ok", "stats")
    x.call("events of an exited container", "ok", "events", id=c)
    x.done()


# --------------------------------------------------------------------------
# checkpoints on a container whose daemon has no working CRIU (`--criu
# /bin/false`: its `criu check` fails, as Debian 12's CRIU 3.17 does here)


def test_checkpoint_error_paths(zcd_factory, runtime, bundle, cid, tmp_path):
    zcd = zcd_factory(runtime=runtime, args=["--criu", "/bin/false"])
    events = zcd.subscriber("")
    x = Expect(zcd.client(), zcd)
    c = cid("cp")
    cdir = tmp_path / "cps"
    start(x, events, bundle(args=SLEEP), c)
    x.call("create without CRIU", "unavailable", "checkpoint_create", "criu", id=c,
           checkpoint={"name": "x"}, checkpoint_dir=str(cdir), timeout=60)
    x.call("create without CRIU, default dir", "unavailable", "checkpoint_create", "criu",
           id=c, checkpoint={"name": "y"}, timeout=60)
    # a malformed request is refused as such, CRIU or not
    x.call("create bad name", "invalid_argument", "checkpoint_create", "name", id=c,
           checkpoint={"name": "../x"}, checkpoint_dir=str(cdir))
    x.call("create relative dir", "invalid_argument", "checkpoint_create", "checkpoint_dir",
           id=c, checkpoint={"name": "x"}, checkpoint_dir="rel/cps")
    x.call("create empty_ns not strs", "invalid_argument", "checkpoint_create", "empty_ns",
           id=c, checkpoint={"name": "x", "empty_ns": [1]})
    x.call("list by id", "ok", "checkpoint_list", id=c)
    x.call("delete by id, name not there", "not_found", "checkpoint_delete", id=c,
           name="nope")
    x.call("pause", "ok", "update", id=c, status="paused")
    x.call("create without CRIU, paused", "unavailable", "checkpoint_create", "criu", id=c,
           checkpoint={"name": "x"}, checkpoint_dir=str(cdir), timeout=60)
    assert x.client.ok("state", id=c)["containers"][0]["status"] == "paused"
    assert kill_and_wait(x.client, events, c)["status"] == 137
    assert not cdir.exists() or os.listdir(cdir) == []
    x.done()


# --------------------------------------------------------------------------
# a full state dir: unavailable


@pytest.fixture
def small_state_dir():
    """A 4 MiB tmpfs as the state dir (unmounted lazily at the end, after
    the daemon's teardown)."""
    d = tempfile.mkdtemp(prefix="zcd-full-", dir="/tmp")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", d], check=True)
    yield d
    subprocess.run(["umount", "-l", d])
    os.rmdir(d)


def fill(path):
    """Fill the filesystem of `path` with one file; returns it."""
    filler = Path(path) / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    # what a page of slack remains, small writes take: fill them too
    with open(filler, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_full_state_dir_is_unavailable(small_state_dir, zcd_factory, runtime, bundle, cid):
    d = zcd_factory(runtime=runtime, state_dir=small_state_dir)
    x = Expect(d.client(), d)
    events = d.subscriber("")
    c = cid("run")
    start(x, events, bundle(args=SLEEP), c)
    filler = fill(small_state_dir)
    try:
        x.call("create, disk full", "unavailable", "create", "space", id=cid("full"),
               bundle=bundle(args=SLEEP))
        x.call("exec, disk full", "unavailable", "exec", "space", id=c, pid="e1",
               args=["true"], env=PATH_ENV)
        x.call("update resources, disk full", "unavailable", "update", "space", id=c,
               resources={"cpu_shares": 512})
    finally:
        filler.unlink()
    # room again: everything works
    x.call("exec, room again", "ok", "exec", id=c, pid="e2", args=["true"], env=PATH_ENV)
    events.wait_exit(c, "e2")
    x.call("update, room again", "ok", "update", id=c, resources={"cpu_shares": 512})
    assert kill_and_wait(x.client, events, c)["status"] == 137
    x.done()
