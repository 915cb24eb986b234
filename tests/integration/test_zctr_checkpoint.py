"""zctr's checkpoint commands and restore (`containers start --checkpoint`),
end to end against a real daemon, CRIU and runtime (issue 10, item 5).

Skipped when `criu check` fails here, and on crun unless it was built with
CRIU (`crun --version` shows +CRIU)."""

import json
import re
import subprocess

import pytest

from criu_util import COUNTER, criu_runtime, needs_criu  # noqa: F401 (fixture)

from conftest import ZCTR, read_text, wait_for



pytestmark = needs_criu


def zctr(zcd, *args, cwd=None):
    """Run zctr against zcd; the CompletedProcess (text)."""
    return subprocess.run([str(ZCTR), "--address", zcd.cmd_ep, "--timeout", "120000", *args],
                          capture_output=True, text=True, timeout=180, cwd=cwd)


def zctr_ok(zcd, *args, cwd=None):
    res = zctr(zcd, *args, cwd=cwd)
    assert res.returncode == 0, f"zctr {args} exited {res.returncode}: {res.stderr}"
    return res


def counted(path):
    return [int(x) for x in read_text(path).split()]


def state_ids(zcd):
    reply = json.loads(zctr_ok(zcd, "--json", "state").stdout)
    return {c["id"] for c in reply["containers"]}


def listed(zcd, cdir, cwd=None):
    reply = json.loads(zctr_ok(zcd, "--json", "checkpoints", "list", "--checkpoint-dir", cdir,
                               cwd=cwd).stdout)
    return [c["name"] for c in reply["checkpoints"]]


def start_counter(zcd, bundle, cid, out):
    zcd.created_ids.add(cid)
    zctr_ok(zcd, "containers", "start", cid, bundle, "--stdout", str(out))
    wait_for(lambda: len(counted(out)) >= 5, what="counting")


def long_dir(base):
    """An existing directory whose path alone makes an error message longer
    than any fixed buffer a client might print it through."""
    d = base / ("x" * 200) / ("y" * 200) / ("z" * 200)
    d.mkdir(parents=True)
    return str(d)


def assert_printed_whole(res, what, reply):
    """zctr's stderr is the daemon's error, code and whole message, as is."""
    assert reply["ok"] is False, reply
    err = reply["error"]
    assert res.returncode == 1, res
    assert res.stderr == f"zctr: {what}: {err['code']}: {err['message']}\n"


def test_restore_under_new_id(zcd_factory, criu_runtime, bundle, cid, tmp_path):
    zcd = zcd_factory(runtime=criu_runtime)
    events, client = zcd.subscriber(""), zcd.client()
    out, cdir = tmp_path / "out", tmp_path / "cps"
    b = bundle(args=COUNTER)
    first, second = cid("a"), cid("b")
    start_counter(zcd, b, first, out)
    # a failing create prints the daemon's message whole, however long
    bad = str(tmp_path / "out" / ("x" * 200) / ("y" * 200) / ("z" * 200))
    res = zctr(zcd, "checkpoints", "create", first, "cp", "--checkpoint-dir", bad)
    assert len(res.stderr) > 600
    assert_printed_whole(res, "create", client.call("checkpoint_create", id=first,
                                                    checkpoint={"name": "cp"},
                                                    checkpoint_dir=bad))
    zctr_ok(zcd, "checkpoints", "create", first, "cp", "--exit", "--checkpoint-dir", str(cdir))
    events.wait_exit(first)
    wait_for(lambda: first not in state_ids(zcd), what=f"{first} gone from state")
    before = counted(out)

    zcd.created_ids.add(second)
    res = zctr_ok(zcd, "--json", "containers", "start", second, b, "--checkpoint", "cp",
                  "--checkpoint-dir", str(cdir), "--stdout", str(out))
    assert json.loads(res.stdout)["container"]["id"] == second
    events.wait_type(second, "restore")
    wait_for(lambda: len(counted(out)) >= len(before) + 5, what="counting after restore")
    after = counted(out)
    assert after == list(range(len(after))), "the count went on from where it stopped"

    # a relative --checkpoint-dir is zctr's cwd's, not the daemon's
    assert listed(zcd, "cps", cwd=tmp_path) == ["cp"]
    human = zctr_ok(zcd, "checkpoints", "list", "--checkpoint-dir", str(cdir)).stdout
    assert "cp" in human.split("\n", 1)[1].split()
    # the container it came from is gone: the directory alone names it
    zctr_ok(zcd, "checkpoints", "delete", "cp", "--checkpoint-dir", str(cdir))
    assert listed(zcd, str(cdir)) == []

    zctr_ok(zcd, "containers", "kill", second, "--signal", "KILL")
    events.wait_exit(second)


def test_restore_from_missing_checkpoint_fails(zcd_factory, criu_runtime, bundle, cid, tmp_path):
    zcd = zcd_factory(runtime=criu_runtime)
    client = zcd.client()
    b = bundle(args=COUNTER)
    cdir = long_dir(tmp_path)
    x = cid("x")
    zcd.created_ids.add(x)
    args = ["containers", "start", x, b, "--checkpoint", "nope", "--checkpoint-dir", cdir]
    res = zctr(zcd, *args)
    assert "not_found" in res.stdout + res.stderr
    assert_printed_whole(res, "start", client.call("create", id=x, bundle=b, checkpoint="nope",
                                                   checkpoint_dir=cdir))
    # --json keeps stdout for JSON: the error goes to stderr alone
    res = zctr(zcd, "--json", *args)
    assert res.returncode == 1 and res.stdout == "" and "not_found" in res.stderr
    assert x not in state_ids(zcd)


def normalized(text):
    """CRIU's log carries timestamps and pids that differ from run to run."""
    return re.sub(r"\d+", "N", text)


def test_failed_restore_prints_whole_message(zcd_factory, criu_runtime, bundle, cid, tmp_path):
    """CRIU fails the restore: the daemon's message (the runtime's text and
    what CRIU logged, several lines) reaches zctr's stderr whole."""
    zcd = zcd_factory(runtime=criu_runtime)
    events, client = zcd.subscriber(""), zcd.client()
    out, cdir = tmp_path / "out", tmp_path / "cps"
    b = bundle(args=COUNTER)
    first, second = cid("a"), cid("b")
    start_counter(zcd, b, first, out)
    zctr_ok(zcd, "checkpoints", "create", first, "cp", "--exit", "--checkpoint-dir", str(cdir))
    events.wait_exit(first)
    images = list((cdir / "cp").rglob("*.img"))
    assert images, "the checkpoint holds CRIU images"
    for img in images:
        img.write_bytes(b"\0" * 7)
    zcd.created_ids.add(second)
    res = zctr(zcd, "containers", "start", second, b, "--checkpoint", "cp",
               "--checkpoint-dir", str(cdir), "--stdout", str(out))
    assert res.returncode == 1, res
    reply = client.call("create", id=second, bundle=b, checkpoint="cp", checkpoint_dir=str(cdir),
                        timeout=120)
    assert reply["error"]["code"] == "runtime_error", reply
    # runc's text spans lines already; crun's does once the tail of CRIU's
    # log is added to it
    message = reply["error"]["message"]
    assert normalized(res.stderr) == normalized(f"zctr: start: runtime_error: {message}\n")
    assert second not in state_ids(zcd)
