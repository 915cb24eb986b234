"""zcd-oci: the runc-compatible command (Slurm's oci.conf calls it) against a
real daemon and real containers, on runc and crun.

Every run of zcd-oci gets a private TMPDIR (where `run` makes its FIFO
directory: it must be gone afterwards) and a private record directory
($ZCD_OCI_STATE_DIR, for create/start)."""

import json
import os
import re
import select
import signal
import stat
import subprocess
import time
from datetime import datetime, timezone

import pytest

from conftest import BUILD, DEFAULT_WAIT, wait_for

OCI = BUILD / "zcd-oci"


class Oci:
    def __init__(self, daemon, tmp_path):
        self.daemon = daemon
        self.tmp = tmp_path / "tmp"
        self.records = tmp_path / "records"
        self.tmp.mkdir()
        self.env = dict(os.environ, TMPDIR=str(self.tmp), ZCD_OCI_STATE_DIR=str(self.records))
        for k in ("ZCD_ADDRESS", "ZCD_EVENTS_ADDRESS"):
            self.env.pop(k, None)
        self.procs = []

    def argv(self, args, address=True):
        head = [str(OCI)] + (["--address", self.daemon.cmd_ep] if address else [])
        return head + [str(a) for a in args]

    def track(self, cid):
        # the suite's teardown sweeps leftovers of the ids it knows
        self.daemon.created_ids.add(cid)

    def __call__(self, *args, input=b"", address=True, env=None, timeout=DEFAULT_WAIT):
        return subprocess.run(self.argv(args, address), input=input, capture_output=True,
                              env=env or self.env, timeout=timeout)

    def popen(self, *args, stdin=subprocess.DEVNULL):
        p = subprocess.Popen(self.argv(args), stdin=stdin, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env)
        p.out = b""
        self.procs.append(p)
        return p

    def state(self, cid):
        r = self("state", cid)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def wait_running(self, cid):
        def running():
            r = self("state", cid)
            return r.returncode == 0 and json.loads(r.stdout)["status"] == "running"
        wait_for(running, what=f"{cid} running")

    def tmp_left(self):
        return sorted(os.listdir(self.tmp))


@pytest.fixture
def oci(zcd, tmp_path):
    o = Oci(zcd, tmp_path)
    yield o
    for p in o.procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def read_until(proc, needle, timeout=DEFAULT_WAIT):
    """Read proc's stdout into proc.out until it holds needle."""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while needle not in proc.out:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {needle!r} on stdout within {timeout}s; got {proc.out!r}")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(f"stdout ended before {needle!r}; got {proc.out!r}, "
                            f"stderr {proc.stderr.read()!r}")
            proc.out += chunk


def finish(proc, timeout=DEFAULT_WAIT):
    """Wait for proc; (exit code, all its stdout, its stderr)."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, proc.out + out, err


def test_run_exit_status_and_stdio(oci, bundle, cid):
    c = cid()
    oci.track(c)
    b = bundle(args=["sh", "-c", "echo out; echo err >&2; exit 7"])
    r = oci("run", "--bundle", b, c)
    assert r.returncode == 7, r.stderr
    assert r.stdout == b"out\n"
    assert r.stderr == b"err\n"
    assert oci.tmp_left() == [], "run left its FIFO directory behind"
    # the id is free again at once: a second run of it works
    r = oci("run", "-b", b, c)
    assert r.returncode == 7 and r.stdout == b"out\n", r.stderr


def test_run_stdin_relayed(oci, bundle, cid):
    c = cid()
    oci.track(c)
    b = bundle(args=["cat"])
    r = oci("run", "-b", b, c, input=b"hi\n")
    assert (r.returncode, r.stdout) == (0, b"hi\n"), r.stderr
    # More than the container's pipe holds, every byte in order, and
    # stdin's end ends cat.  The container starts reading late: the rest
    # waits in our FIFO when our stdin ends, and closing the container's
    # stdin must not cut it off.
    data = os.urandom(50_000).hex().encode()
    r = oci("run", "-b", bundle(args=["sh", "-c", "sleep 0.5; cat"]), c, input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data
    big = os.urandom(300_000).hex().encode()
    r = oci("run", "-b", b, c, input=big)
    assert (r.returncode, r.stdout == big) == (0, True), r.stderr
    # stdin /dev/null: the container reads EOF at once
    b2 = bundle(args=["sh", "-c", "cat; echo done"])
    r = subprocess.run(oci.argv(["run", "-b", b2, c]), stdin=subprocess.DEVNULL,
                       capture_output=True, env=oci.env, timeout=DEFAULT_WAIT)
    assert (r.returncode, r.stdout) == (0, b"done\n"), r.stderr
    assert oci.tmp_left() == []


SIGNAL_SCRIPT = (
    'for s in INT HUP USR1 USR2; do trap "echo got $s" $s; done; '
    'trap "echo got TERM; exit 3" TERM; echo ready; '
    'while :; do sleep 1 & wait $!; done')


def test_run_forwards_signals_once(oci, bundle, cid):
    c = cid()
    oci.track(c)
    p = oci.popen("run", "-b", bundle(args=["sh", "-c", SIGNAL_SCRIPT]), "--pid-file",
                  oci.tmp.parent / "pid", c)
    read_until(p, b"ready\n")
    # the FIFOs' names go as soon as the daemon's shim has opened them
    assert oci.tmp_left() == []
    for name in ("INT", "HUP", "USR1", "USR2", "TERM"):
        p.send_signal(getattr(signal, "SIG" + name))
        read_until(p, f"got {name}\n".encode())
    code, out, err = finish(p)
    assert code == 3, err
    lines = out.decode().splitlines()
    assert lines[0] == "ready"
    for name in ("INT", "HUP", "USR1", "USR2", "TERM"):
        assert lines.count(f"got {name}") == 1, lines
    assert oci.tmp_left() == []


def test_run_killed_by_signal_and_pid_file(oci, bundle, cid):
    c = cid()
    oci.track(c)
    pid_file = oci.tmp.parent / "init.pid"
    p = oci.popen("run", "-b", bundle(args=["sleep", "1000"]), "--pid-file", pid_file, c)
    oci.wait_running(c)
    st = oci.state(c)
    wait_for(pid_file.exists, what="the pid file")
    assert int(pid_file.read_text()) == st["pid"] > 0
    assert os.path.exists(f"/proc/{st['pid']}")
    r = oci("kill", c, "KILL")
    assert r.returncode == 0, r.stderr
    code, _, err = finish(p)
    assert code == 128 + 9, err


def test_state_json(oci, zcd, bundle, cid, rootfs):
    c = cid()
    oci.track(c)

    def annotate(config):
        config["annotations"] = {"org.example.k": "v"}
    b = bundle(args=["sleep", "1000"], edit=annotate)
    before = datetime.now(timezone.utc)
    p = oci.popen("run", "-b", b, c)
    oci.wait_running(c)
    st = oci.state(c)
    assert st["ociVersion"].startswith("1.")
    assert (st["id"], st["status"], st["bundle"]) == (c, "running", b)
    assert st["rootfs"] == str(rootfs)
    assert st["annotations"] == {"org.example.k": "v"}
    assert st["owner"] == ""
    assert isinstance(st["pid"], int) and st["pid"] > 0
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,9})?Z", st["created"])
    assert m, st["created"]  # RFC 3339, UTC
    created = datetime.fromisoformat(m.group(1)).replace(tzinfo=timezone.utc)
    assert abs((created - before).total_seconds()) < 60
    client = zcd.client()
    client.ok("update", id=c, status="paused")
    assert oci.state(c)["status"] == "paused"
    client.ok("update", id=c, status="running")
    assert oci.state(c)["status"] == "running"
    r = oci("state", "no-such-" + c)
    assert r.returncode == 1 and b"container does not exist" in r.stderr
    assert r.stdout == b""
    assert oci("kill", c, "KILL").returncode == 0
    assert finish(p)[0] == 137
    # gone from zcd once it exited: the query fails, as Slurm expects
    assert oci("state", c).returncode == 1


def test_kill_all(oci, bundle, cid):
    """-a reaches the init's children too; without it only the init gets the
    signal (and a shell as pid 1 ignores an untrapped TERM)."""
    c = cid()
    oci.track(c)
    script = "sleep 1000 & sleep 1000 & echo started; wait; echo children-gone; exit 5"
    p = oci.popen("run", "-b", bundle(args=["sh", "-c", script]), c)
    read_until(p, b"started\n")
    r = oci("kill", "-a", c)  # default signal: TERM
    assert r.returncode == 0, r.stderr
    code, out, err = finish(p)
    assert (code, out) == (5, b"started\nchildren-gone\n"), err
    r = oci("kill", c, "TERM")
    assert r.returncode == 1 and b"container does not exist" in r.stderr
    assert oci("kill", c, "NOSUCHSIG").returncode == 1


def test_delete(oci, zcd, bundle, cid):
    c = cid()
    oci.track(c)
    p = oci.popen("run", "-b", bundle(args=["sleep", "1000"]), c)
    oci.wait_running(c)
    r = oci("delete", c)
    assert r.returncode == 1 and b"not stopped" in r.stderr
    assert oci.state(c)["status"] == "running"
    # --force of a paused container: thawed and killed, and waited for
    zcd.client().ok("update", id=c, status="paused")
    r = oci("delete", "--force", c)
    assert r.returncode == 0, r.stderr
    assert oci("state", c).returncode == 1
    assert finish(p)[0] == 137
    r = oci("delete", c)
    assert r.returncode == 1 and b"container does not exist" in r.stderr
    assert oci("delete", "-f", c).returncode == 0
    # a `run` killed outright leaves nothing in TMPDIR and its container
    # running (as runc's would), for delete --force to end
    p = oci.popen("run", "-b", bundle(args=["sleep", "1000"]), c)
    oci.wait_running(c)
    p.kill()
    p.wait()
    assert oci.tmp_left() == []
    assert oci.state(c)["status"] == "running"
    assert oci("delete", "-f", c).returncode == 0
    assert oci("state", c).returncode == 1


def test_create_start_state_delete(oci, bundle, cid):
    c, c2 = cid("a"), cid("b")
    oci.track(c)
    b = bundle(args=["sleep", "1000"])
    pid_file = oci.tmp.parent / "created.pid"
    r = oci("create", "--bundle", b, "--pid-file", pid_file, c)
    assert r.returncode == 0, r.stderr
    record = oci.records / f"{c}.json"
    assert stat.S_IMODE(os.stat(oci.records).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(record).st_mode) == 0o600
    st = oci.state(c)
    assert (st["status"], st["pid"], st["bundle"]) == ("created", 0, b)
    assert oci("create", "-b", b, c).returncode == 1  # the id is taken
    r = oci("start", c)
    assert r.returncode == 0, r.stderr
    assert not record.exists()
    st = oci.state(c)
    assert st["status"] == "running" and int(pid_file.read_text()) == st["pid"] > 0
    assert oci("start", c).returncode == 1  # already running
    assert oci("delete", "--force", c).returncode == 0
    assert oci("state", c).returncode == 1
    # created, then deleted without ever starting
    assert oci("create", "-b", b, c2).returncode == 0
    assert oci("delete", c2).returncode == 0
    assert oci("state", c2).returncode == 1
    # created, then killed: stopped, and start refuses it
    assert oci("create", "-b", b, c2).returncode == 0
    assert oci("kill", c2, "KILL").returncode == 0
    assert oci.state(c2)["status"] == "stopped"
    r = oci("start", c2)
    assert r.returncode == 1 and b"stopped" in r.stderr
    assert oci("delete", c2).returncode == 0
    assert os.listdir(oci.records) == []


def test_global_flags_and_env_address(oci, bundle, cid, tmp_path):
    c = cid()
    oci.track(c)
    log = tmp_path / "oci.log"
    b = bundle(args=["sh", "-c", "echo via-env"])
    env = dict(oci.env, ZCD_ADDRESS=oci.daemon.cmd_ep)
    # runc's global flags are accepted; --root is ignored (nothing made there)
    r = oci("--root", tmp_path / "runc-root", "--log", log, "--log-format", "json", "--debug",
            "--systemd-cgroup", "--rootless=false", "run", "-b", b, c, address=False, env=env)
    assert (r.returncode, r.stdout) == (0, b"via-env\n"), r.stderr
    assert not (tmp_path / "runc-root").exists()
    r = oci("--log", log, "--log-format", "json", "state", c, address=False, env=env)
    assert r.returncode == 1
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(e["level"] == "debug" for e in entries)
    assert any(e["level"] == "error" and e["msg"] == "container does not exist"
               for e in entries)
    assert oci("--version").returncode == 0
    assert b"run" in oci("--help").stdout
