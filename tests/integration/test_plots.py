"""bench/plot.py (issue 12): the bench JSON becomes three SVG figures.

No containers: a small `plots` section made here is drawn into a temp dir,
and the committed docs/bench/*.svg must exist and parse."""
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLOT = os.path.join(ROOT, "bench", "plot.py")
FIGURES = ("throughput.svg", "latency.svg", "memory.svg")
SVG = "{http://www.w3.org/2000/svg}"

pytestmark = pytest.mark.skipif(shutil.which("gnuplot") is None,
                                reason="gnuplot is missing (Debian: gnuplot-nox)")


def lat(p50):
    return {"n": 10, "p50": p50, "p95": p50 * 1.5, "p99": p50 * 2, "max": p50 * 2,
            "mean": p50}


def fixture(with_containerd=True):
    """What bench/bench_plots.py writes, cut to the keys plot.py reads."""
    start = []
    for rt, rate in (("runc", 8.0), ("crun", 15.0)):
        for c in (1, 2, 4, 8, 16):
            row = {"runtime": rt, "c": c, "rounds": 3,
                   "zcd": {"n": 30, "per_s": rate * 0.9, "failed": 0,
                           "create_ms": lat(40.0 * c)},
                   "bare_lifecycle": {"n": 30, "per_s": rate, "failed": 0,
                                      "create_start_ms": lat(30.0 * c)},
                   "bare_run": {"n": 30, "per_s": rate * 2, "failed": 0}}
            if with_containerd:
                row["containerd"] = {"n": 30, "per_s": rate / 3, "failed": 0,
                                     "start_ms": lat(150.0 * c)}
            start.append(row)
    levels = (10, 50, 100, 200)
    memory = {"zcd": [{"level": m, "running": m, "per_container_pss_kib": 200 + 8000 / m,
                       "per_container_rss_kib": 600 + 8000 / m} for m in levels],
              "containerd": []}
    if with_containerd:
        memory["containerd"] = [{"level": m, "running": m,
                                 "per_container_pss_kib": 2700 + 58000 / m,
                                 "per_container_rss_kib": 13000 + 58000 / m} for m in levels]
    return {"machine": {"cpus": 2, "kernel": "6.1.0", "cgroup": "v2"},
            "plots": {"settings": {"mem_runtime": "crun", "runtimes": ["runc", "crun"]},
                      "started": 1800000000, "start": start, "memory": memory}}


def draw(tmp_path, res):
    src = tmp_path / "bench.json"
    src.write_text(json.dumps(res))
    out = tmp_path / "svg"
    r = subprocess.run(["/usr/bin/python3", PLOT, "--json", str(src), "--out", str(out)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return out


def series(path):
    """{key title: number of <path>s} for every plotted series of an SVG;
    and all its text."""
    root = ET.parse(path).getroot()
    found = {}
    for g in root.iter(SVG + "g"):
        if not (g.get("id") or "").startswith("gnuplot_plot_"):
            continue
        title = " ".join("".join(t.itertext()).strip() for t in g.iter(SVG + "text"))
        found[title] = sum(1 for _ in g.iter(SVG + "path"))
    text = " ".join("".join(t.itertext()) for t in root.iter(SVG + "text"))
    return found, text


def test_plot_draws_every_series(tmp_path):
    out = draw(tmp_path, fixture())
    thr, thr_text = series(out / "throughput.svg")
    for rt in ("runc", "crun"):
        for want in ("zcd (create request -> exit event)",
                     f"bare {rt} (create, start, wait, delete)", f"{rt} run (one process)",
                     f"containerd + {rt} (ctr run --rm)"):
            assert want in thr and thr[want] >= 1, (want, thr)
    assert "Start throughput" in thr_text and "concurrency C" in thr_text
    assert "(1/s)" in thr_text and "runtime: runc" in thr_text and "runtime: crun" in thr_text

    lat_series, lat_text = series(out / "latency.svg")
    for rt in ("runc", "crun"):
        for who in ("zcd (create request -> reply)",
                    f"bare {rt} (create spawned -> start returned)",
                    "containerd (ctr spawned -> /tasks/start event)"):
            for q in ("p50", "p95"):
                assert lat_series.get(f"{who} {q}", 0) >= 1, (who, q, lat_series)
    assert "Start latency" in lat_text and "(ms, log scale)" in lat_text

    mem, mem_text = series(out / "memory.svg")
    for who in ("zcd daemon + zcd-shims", "containerd + containerd-shim-runc-v2"):
        for kind in ("Pss", "Rss"):
            assert mem.get(f"{who}, {kind}", 0) >= 1, (who, kind, mem)
    assert "Resident memory per running container" in mem_text
    assert "running containers" in mem_text and "MiB" in mem_text
    assert "bare runc, crun: 0" in mem_text


def test_plot_without_containerd_leaves_it_out(tmp_path):
    out = draw(tmp_path, fixture(with_containerd=False))
    for name in FIGURES:
        found, _ = series(out / name)
        assert found and not any("containerd" in t for t in found), (name, found)


def test_plot_without_plots_section_draws_nothing(tmp_path):
    out = draw(tmp_path, {"machine": {}, "start": []})
    assert not out.exists()


def test_committed_figures_exist_and_parse():
    for name in FIGURES:
        path = os.path.join(ROOT, "docs", "bench", name)
        assert os.path.exists(path), path
        found, text = series(path)
        assert any(t.startswith("zcd") for t in found), (name, found)
        assert any("containerd" in t for t in found), (name, found)
    with open(os.path.join(ROOT, "docs", "bench", "plots.json")) as f:
        assert json.load(f)["plots"]["start"]
