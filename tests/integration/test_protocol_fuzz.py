"""A 20-second slice of the stateful protocol fuzzer (tests/fuzz/protocol_fuzz.py,
`make fuzz-protocol` runs it longer): 10 s against runc, 10 s against crun,
with fixed seeds so a failure here replays with

    /usr/bin/python3 tests/fuzz/protocol_fuzz.py --runtime RT --seed SEED --seconds 10

The fuzzer starts its own daemon on a state dir of its own, checks its
invariants after every step (version within 1 s, canary tree untouched, no
`internal` reply, freezer == paused, seq contiguous across restarts, every
acknowledged container in `state` or exited in the log) and cleans up what it
made.  The test fails with the fuzzer's report."""

import shutil
import subprocess

import pytest

from conftest import REPO

FUZZER = REPO / "tests" / "fuzz" / "protocol_fuzz.py"
SLICE_S = 10
# 20250824 also puts crun's state dir on a small tmpfs that the fuzzer fills
# and frees (a full disk must be answered, never silence)
SEEDS = {"runc": 20250801, "crun": 20250824}


@pytest.mark.parametrize("rt", ["runc", "crun"])
def test_protocol_fuzz_slice(build_dir, rt):
    if shutil.which(rt) is None:
        pytest.fail(f"{rt} is not installed (make deps)")
    argv = ["/usr/bin/python3", str(FUZZER), "--runtime", rt, "--seed", str(SEEDS[rt]),
            "--seconds", str(SLICE_S), "--build", str(build_dir)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=SLICE_S + 240,
                              errors="replace")
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"")
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        pytest.fail(f"protocol fuzz ({rt}, seed {SEEDS[rt]}) did not finish within "
                    f"{SLICE_S + 240} s:\n{out[-20000:]}")
    out = proc.stdout + proc.stderr
    summary = [line for line in out.splitlines() if line.startswith("protocol fuzz: seed")]
    print(summary[-1] if summary else out[-2000:])
    if proc.returncode != 0:
        pytest.fail(f"protocol fuzz ({rt}, seed {SEEDS[rt]}) exited {proc.returncode}; "
                    f"replay: {' '.join(argv)}\n{out[-30000:]}", pytrace=False)
