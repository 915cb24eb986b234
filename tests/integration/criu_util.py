"""What the checkpoint tests share: whether CRIU works on this machine
(`make deps` builds a working one into /usr/local when Debian's does not),
and the `criu_runtime` fixture, which skips crun unless it has CRIU."""

import subprocess

import pytest

COUNTER = ["sh", "-c", "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"]


def criu_works():
    try:
        return subprocess.run(["criu", "check"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_criu = pytest.mark.skipif(not criu_works(), reason="no working CRIU (criu check)")


@pytest.fixture
def criu_runtime(runtime):
    if runtime == "crun":
        out = subprocess.run(["crun", "--version"], capture_output=True, text=True).stdout
        if "+CRIU" not in out:
            pytest.skip("crun lacks CRIU")
    return runtime
