"""Checkpoint and restore with a real CRIU (issue 10), on runc and crun.

Skipped when `criu check` fails on this machine (`make deps` builds a
working CRIU 4.1.1 and a CRIU-enabled crun into /usr/local when Debian's do
not work here); the ops then answer `unavailable` (test_error_paths.py)."""

import json
import os
import subprocess

import pytest

from conftest import read_text, wait_for

COUNTER = ["sh", "-c", "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"]


def criu_works():
    try:
        return subprocess.run(["criu", "check"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def runtime_has_criu(runtime):
    if runtime != "crun":
        return True
    out = subprocess.run(["crun", "--version"], capture_output=True, text=True).stdout
    return "+CRIU" in out


pytestmark = pytest.mark.skipif(not criu_works(), reason="no working CRIU (criu check)")


@pytest.fixture
def criu_runtime(runtime):
    if not runtime_has_criu(runtime):
        pytest.skip(f"{runtime} lacks CRIU")
    return runtime


def counted(path):
    return [int(x) for x in read_text(path).split()]


def test_counter_checkpointed_with_exit_restores_under_new_id(zcd_factory, criu_runtime, bundle,
                                                                cid, tmp_path):
    zcd = zcd_factory(runtime=criu_runtime)
    client, events = zcd.client(), zcd.subscriber("")
    out = tmp_path / "out"
    cdir = tmp_path / "cps"
    b = bundle(args=COUNTER)
    first, second = cid("a"), cid("b")
    client.ok("create", id=first, bundle=b, stdout=str(out))
    wait_for(lambda: len(counted(out)) >= 5, what="counting")
    client.ok("checkpoint_create", id=first, checkpoint={"name": "cp", "exit": True},
              checkpoint_dir=str(cdir))
    events.wait_exit(first)
    before = counted(out)
    client.ok("create", id=second, bundle=b, stdout=str(out), checkpoint="cp",
              checkpoint_dir=str(cdir))
    wait_for(lambda: len(counted(out)) >= len(before) + 5, what="counting after restore")
    after = counted(out)
    assert after == list(range(len(after))), "the count went on from where it stopped"
    client.ok("signal", id=second, signal=9)
    events.wait_exit(second)
