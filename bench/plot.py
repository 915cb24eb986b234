#!/usr/bin/python3
"""Draws docs/bench/*.svg from the `plots` section of a bench/run JSON
(issue 12), with gnuplot; stdlib only.

usage: bench/plot.py [--json FILE] [--out DIR]
  FILE  bench/run --json output (default: docs/bench/plots.json, the figures
        the committed plots came from)
  DIR   where throughput.svg, latency.svg and memory.svg go (default:
        docs/bench)

`make bench` runs it at the end; `make plots` redraws from a saved JSON.
"""
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ("throughput.svg", "latency.svg", "memory.svg")

# One colour per system in every figure, so the three read alike.
COLOUR = {"zcd": "#1f5fbf", "bare": "#d9730d", "run": "#8c8c8c", "containerd": "#2e8b57"}
TERMINAL = 'set terminal svg size {w},{h} dynamic noenhanced font "sans,12" background "white"'
KEY = "set key below Left reverse"


def q(text):
    """A gnuplot double-quoted string."""
    text = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n") + '"'


def num(value):
    return "NaN" if value is None else f"{value:.4f}"


def datablock(name, rows):
    return "\n".join([f"${name} << EOD"] + [" ".join(num(v) for v in r) for r in rows]
                     + ["EOD"])


def runtimes(plots):
    seen = []
    for row in plots["start"]:
        if row["runtime"] not in seen:
            seen.append(row["runtime"])
    return seen


def cs(plots):
    return sorted({row["c"] for row in plots["start"]})


def has_containerd(plots):
    return any("containerd" in row for row in plots["start"])


def when(res):
    t = res["plots"].get("started") or res.get("started") or 0
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def setting(res):
    m = res.get("machine", {})
    return (f"{m.get('cpus', '?')} CPUs, Linux {m.get('kernel', '?')}, cgroup "
            f"{m.get('cgroup', '?')}, {when(res)}")


def concurrency_axes(plots):
    ticks = ", ".join(str(c) for c in cs(plots))
    return ["set logscale x 2", f"set xtics ({ticks})",
            f"set xrange [{min(cs(plots)) * 0.8}:{max(cs(plots)) * 1.25}]",
            'set xlabel "concurrency C (lifecycles in flight)"', "set grid", KEY]


def panels(res, title, body):
    """A multiplot with one panel per runtime; body(runtime) -> lines."""
    plots = res["plots"]
    rts = runtimes(plots)
    out = [TERMINAL.format(w=560 * len(rts), h=520), "set output OUTPUT",
           f"set multiplot layout 1,{len(rts)} title {q(title)}"]
    for rt in rts:
        out += ["reset", *concurrency_axes(plots), f"set title {q('runtime: ' + rt)}"]
        out += body(rt)
    out.append("unset multiplot")
    return out


def rows_of(plots, rt):
    return sorted((r for r in plots["start"] if r["runtime"] == rt), key=lambda r: r["c"])


def throughput(res):
    plots = res["plots"]
    n = min(r["zcd"]["n"] for r in plots["start"])
    title = (f"Start throughput: 'true' containers, whole lifecycle, N >= {n} per cell\n"
             f"{setting(res)}")
    blocks = []

    def body(rt):
        name = "T_" + rt.replace("-", "_")
        blocks.append(datablock(name, [
            (r["c"], r["zcd"]["per_s"], r["bare_lifecycle"]["per_s"], r["bare_run"]["per_s"],
             r["containerd"]["per_s"] if "containerd" in r else None)
            for r in rows_of(plots, rt)]))
        series = [
            f"${name} using 1:2 with linespoints lw 2 pt 7 lc rgb {q(COLOUR['zcd'])} "
            f"title {q('zcd (create request -> exit event)')}",
            f"${name} using 1:3 with linespoints lw 2 pt 5 lc rgb {q(COLOUR['bare'])} "
            f"title {q(f'bare {rt} (create, start, wait, delete)')}",
            f"${name} using 1:4 with linespoints lw 1 dt 3 pt 4 lc rgb {q(COLOUR['run'])} "
            f"title {q(f'{rt} run (one process)')}"]
        if has_containerd(plots):
            series.append(f"${name} using 1:5 with linespoints lw 2 pt 9 "
                          f"lc rgb {q(COLOUR['containerd'])} "
                          f"title {q(f'containerd + {rt} (ctr run --rm)')}")
        return ['set ylabel "containers started and finished per second (1/s)"',
                "set yrange [0:*]", "set offsets 0, 0, graph 0.05, 0",
                "plot " + ", \\\n     ".join(series)]

    lines = panels(res, title, body)
    return blocks + lines


def latency(res):
    plots = res["plots"]
    title = (f"Start latency until the container runs: p50 (solid) and p95 (dashed)\n"
             f"{setting(res)}")
    blocks = []

    def body(rt):
        name = "L_" + rt.replace("-", "_")
        rows = []
        for r in rows_of(plots, rt):
            z, b = r["zcd"]["create_ms"], r["bare_lifecycle"]["create_start_ms"]
            k = r.get("containerd", {}).get("start_ms") or {}
            kn = k.get("n", 0)
            rows.append((r["c"], z["p50"], z["p95"], b["p50"], b["p95"],
                         k["p50"] if kn else None, k["p95"] if kn else None))
        blocks.append(datablock(name, rows))
        systems = [("zcd", 2, "zcd (create request -> reply)", 7),
                   ("bare", 4, f"bare {rt} (create spawned -> start returned)", 5)]
        if has_containerd(plots):
            systems.append(("containerd", 6, "containerd (ctr spawned -> /tasks/start event)",
                            9))
        series = []
        for key, col, label, pt in systems:
            colour = q(COLOUR[key])
            series.append(f"${name} using 1:{col} with linespoints lw 2 pt {pt} "
                          f"lc rgb {colour} title {q(label + ' p50')}")
            series.append(f"${name} using 1:{col + 1} with linespoints lw 2 dt 2 pt {pt} "
                          f"lc rgb {colour} title {q(label + ' p95')}")
        return ['set ylabel "start latency (ms, log scale)"', "set logscale y",
                "plot " + ", \\\n     ".join(series)]

    lines = panels(res, title, body)
    return blocks + lines


def memory(res):
    plots = res["plots"]
    mem = plots.get("memory", {})
    rt = plots.get("settings", {}).get("mem_runtime", "crun")
    bare_rts = ", ".join(runtimes(plots)) or rt
    rows = {}
    for key, col in (("zcd", 0), ("containerd", 2)):
        for m in mem.get(key, []):
            row = rows.setdefault(m["running"], [None] * 4)
            row[col] = m["per_container_pss_kib"] / 1024
            row[col + 1] = m["per_container_rss_kib"] / 1024
    data = [(running, *vals) for running, vals in sorted(rows.items())]
    levels = ", ".join(str(r) for r, *_ in data)
    lo, hi = (data[0][0] * 0.8, data[-1][0] * 1.25) if data else (1, 10)
    title = (f"Resident memory per running container ({rt} 'sleep' containers)\n"
             f"{setting(res)}")
    series = [f"$M using 1:2 with linespoints lw 2 pt 7 lc rgb {q(COLOUR['zcd'])} "
              f"title {q('zcd daemon + zcd-shims, Pss')}",
              f"$M using 1:3 with linespoints lw 2 dt 2 pt 7 lc rgb {q(COLOUR['zcd'])} "
              f"title {q('zcd daemon + zcd-shims, Rss')}"]
    if mem.get("containerd"):
        colour = q(COLOUR["containerd"])
        series += [f"$M using 1:4 with linespoints lw 2 pt 9 lc rgb {colour} "
                   f"title {q('containerd + containerd-shim-runc-v2, Pss')}",
                   f"$M using 1:5 with linespoints lw 2 dt 2 pt 9 lc rgb {colour} "
                   f"title {q('containerd + containerd-shim-runc-v2, Rss')}"]
    return [datablock("M", data), TERMINAL.format(w=800, h=560), "set output OUTPUT",
            f"set title {q(title)}", 'set xlabel "running containers"',
            f"set xtics ({levels})", "set logscale x", f"set xrange [{lo}:{hi}]",
            'set ylabel "(daemon + all its shims) / running (MiB, log scale)"',
            "set logscale y", "set grid", KEY,
            f"set label 1 {q(f'bare {bare_rts}: 0 (no process stays resident)')} "
            "at graph 0.02, graph 0.06 left",
            "plot " + ", \\\n     ".join(series)]


def draw(lines, path):
    script = "\n".join(lines).replace("set output OUTPUT", f"set output {q(path)}") + "\n"
    proc = subprocess.run(["gnuplot"], input=script, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"gnuplot for {path}: {proc.stderr.strip()[-800:]}")


def main(argv):
    json_path = os.path.join(ROOT, "docs", "bench", "plots.json")
    out_dir = os.path.join(ROOT, "docs", "bench")
    args = list(argv)
    while args:
        if args[0] in ("--json", "--out") and len(args) > 1:
            if args[0] == "--json":
                json_path = args[1]
            else:
                out_dir = args[1]
            args = args[2:]
        else:
            print(__doc__.strip(), file=sys.stderr)
            return 2
    with open(json_path) as f:
        res = json.load(f)
    if not res.get("plots", {}).get("start"):
        print(f"plot: {json_path} has no `plots` section (BENCH_SECTIONS without plots): "
              "nothing drawn", file=sys.stderr)
        return 0
    if not shutil.which("gnuplot"):
        print("plot: gnuplot is missing (Debian: gnuplot-nox)", file=sys.stderr)
        return 2
    os.makedirs(out_dir, exist_ok=True)
    for name, figure in zip(FILES, (throughput, latency, memory)):
        path = os.path.join(out_dir, name)
        draw(figure(res), path)
        print(f"plot: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
