"""Slurm step latency: `srun -N3 --container=B true` through zcd-oci and each
node's zcd, against `srun -N3 true` (no container) and against plain
`runc run` in oci.conf, on one three-node cluster (tests/slurm/cluster.py)
in the same run.

slurmstepd reads oci.conf at every step, so the runtimes take turns on one
cluster: each repetition runs the three kinds once, in turn, and the order
rotates, so drift and warm-up touch all three alike.  Each sample is the
wall time of one whole `srun` (it allocates its job, launches the step on
three nodes, waits for it and releases the job).

Settings: BENCH_SLURM_N (repetitions, default 30).  Needs root, Slurm and
munge (`make deps`), $ZCD_BUILD/zcd and zcd-oci (see cluster.py).
  /usr/bin/python3 bench/bench_slurm.py [--reps N] [--json FILE]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "slurm"))
import cluster as C  # noqa: E402

KINDS = ["host", "zcd", "runc"]
LABELS = {
    "host": "srun -N3 true (no container)",
    "zcd": "srun -N3 --container=B true (zcd-oci + zcd)",
    "runc": "srun -N3 --container=B true (runc run)",
}


def percentile(values, p):
    v = sorted(values)
    if not v:
        return 0.0
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def one(cluster, kind, bundle):
    argv = ["srun", "-N3", "true"] if kind == "host" else \
        ["srun", "-N3", f"--container={bundle}", "true"]
    if kind != "host":
        cluster.set_runtime(kind)
    t0 = time.monotonic()
    res = subprocess.run(argv, env=cluster.env(), capture_output=True, text=True,
                         timeout=120, cwd="/")
    dt = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{kind}: {' '.join(argv)} exited {res.returncode}: {res.stderr}")
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_SLURM_N", "30")))
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_slurm: needs root", file=sys.stderr)
        return 1

    cluster = C.Cluster("zcd", with_zcd=True)
    samples = {k: [] for k in KINDS}
    try:
        cluster.start()
        bundle = C.make_bundle(cluster.tmp / "bundle")
        for kind in KINDS:            # warm-up: page cache, first connections
            one(cluster, kind, bundle)
        for i in range(args.reps):
            order = KINDS[i % 3:] + KINDS[:i % 3]
            for kind in order:
                samples[kind].append(one(cluster, kind, bundle))
    finally:
        forced = cluster.stop()
        if forced:
            print("bench_slurm: clean-up had to force:", *forced, sep="\n  ", file=sys.stderr)

    stats = {k: {"n": len(v), "p50_ms": percentile(v, 50) * 1000,
                 "p95_ms": percentile(v, 95) * 1000, "mean_ms": sum(v) / len(v) * 1000}
             for k, v in samples.items()}
    host, zcd, runc = (stats[k]["p50_ms"] for k in KINDS)
    ratios = {"zcd/host_p50": zcd / host, "runc/host_p50": runc / host,
              "zcd/runc_p50": zcd / runc,
              "zcd/runc_p95": stats["zcd"]["p95_ms"] / stats["runc"]["p95_ms"]}

    print(f"\nSlurm 22.05, 3 nodes (network namespaces on one machine), "
          f"{args.reps} repetitions each, interleaved")
    print(f"{'':48} {'p50 ms':>8} {'p95 ms':>8} {'x host':>7}")
    for k in KINDS:
        s = stats[k]
        print(f"{LABELS[k]:48} {s['p50_ms']:8.1f} {s['p95_ms']:8.1f} "
              f"{s['p50_ms'] / host:7.2f}")
    print(f"zcd vs runc: p50 x{ratios['zcd/runc_p50']:.2f}, p95 x{ratios['zcd/runc_p95']:.2f}; "
          f"container cost over a bare step (p50): zcd {zcd - host:+.1f} ms, "
          f"runc {runc - host:+.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"reps": args.reps, "stats": stats, "ratios": ratios,
             "samples_s": samples}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
