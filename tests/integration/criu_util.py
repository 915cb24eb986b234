"""What the checkpoint tests share: whether CRIU works on this machine
(`make deps` builds a working one into /usr/local when Debian's does not),
and the `criu_runtime` fixture, which skips crun unless it has CRIU.

`criu check` is not enough: CRIU 4.1 passes it on Linux >= 6.16 and then
hangs in its parasite on every dump.  So CRIU counts as working only when it
dumps and restores a sleeping process, each step within TRIAL_SECS; the
verdict is found once per session, when the first test that needs it is set
up (not at collection, so runs that select no checkpoint test never pay for
it, and a hanging CRIU costs one deadline, not one per test)."""

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

COUNTER = ["sh", "-c", "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"]

TRIAL_SECS = 20

_verdict = []  # [None] when CRIU works, else [why not]: found once


def _run(argv, what, log=None):
    """None when argv exits 0 within TRIAL_SECS, else why not (with the last
    error in CRIU's log, if given).  CRIU runs in its own process group so a
    timed-out one goes with all its helpers."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=TRIAL_SECS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"{what} did not finish within {TRIAL_SECS} s"
    if proc.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        why = f"{what} failed (exit {proc.returncode}: {last[0]})"
        return why + _log_error(log) if log else why
    return None


def _log_error(path):
    """CRIU's last error in its log (its RLIMIT_NOFILE one is harmless)."""
    try:
        lines = [x for x in Path(path).read_text(errors="replace").splitlines()
                 if "Error" in x and "RLIMIT_NOFILE" not in x]
    except OSError:
        return ""
    return f": {lines[-1].strip()}" if lines else ""


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)  # only when a subreaper made it ours
    except ChildProcessError:
        pass


def _trial(criu):
    """None when `criu` checks, dumps and restores a sleeping process."""
    why = _run([criu, "check"], "`criu check`")
    if why:
        return why
    with tempfile.TemporaryDirectory(prefix="zcd-criu-trial.") as d:
        # Its own session, no terminal among its files: nothing to hand back
        # on restore but what the dump took.
        victim = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        restored = None
        try:
            why = _run([criu, "dump", "-t", str(victim.pid), "-D", d, "-o", "dump.log"],
                       "`criu dump` of a sleeping process", f"{d}/dump.log")
            if why:
                return why
            # The dump killed it; reaping it frees its pid for the restore.
            victim.wait(timeout=TRIAL_SECS)
            why = _run([criu, "restore", "-D", d, "-d", "--pidfile", f"{d}/pid",
                        "-o", "restore.log"], "`criu restore` of that process", f"{d}/restore.log")
            if why:
                return why
            pid = int(Path(f"{d}/pid").read_text())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm != "sleep":  # not ours to kill then
                return f"`criu restore` left pid {pid} running {comm!r}, not the sleep"
            restored = pid
            return None
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            return f"trial dump and restore: {e}"
        finally:
            victim.kill()
            victim.wait()
            if restored:
                _kill(restored)


def criu_why_not():
    """None when CRIU works here, else why not (found once per session)."""
    if not _verdict:
        criu = shutil.which("criu")
        if criu is None:
            why = "no criu on PATH"
        elif os.geteuid() != 0:
            why = "not root: CRIU dumps need root"
        else:
            why = _trial(criu)
            if why:
                out = subprocess.run([criu, "--version"], capture_output=True, text=True).stdout
                version = "CRIU " + (out.split()[1:2] or ["of unknown version"])[0]
                why = (f"{why} ({criu}, {version}, Linux {os.uname().release}; "
                       "tools/install-criu.sh builds a CRIU that works)")
        _verdict.append(why)
    return _verdict[0]


def criu_works():
    return criu_why_not() is None


class _NoCriu:
    """A skipif condition pytest evaluates when it sets a test up.  It skips
    right there with the trial's own words, which a static `reason` cannot
    carry; false when CRIU works."""

    def __bool__(self):
        why = criu_why_not()
        if why:
            pytest.skip(f"no working CRIU: {why}")
        return False


needs_criu = pytest.mark.skipif(_NoCriu(), reason="no working CRIU")


@pytest.fixture
def criu_runtime(runtime):
    # Also here: a test that takes CRIU's runtime but lacks the mark.
    why = criu_why_not()
    if why:
        pytest.skip(f"no working CRIU: {why}")
    if runtime == "crun":
        out = subprocess.run(["crun", "--version"], capture_output=True, text=True).stdout
        if "+CRIU" not in out:
            pytest.skip("crun lacks CRIU")
    return runtime
