"""Shared by bench/bench.py and bench/peers.py: machine facts, summaries,
the goals of the benchmark issue, and the printed table."""
import os
import platform
import subprocess


def summary(values):
    values = sorted(values)
    n = len(values)
    return {"n": n, "median": values[n // 2] if n else 0, "max": values[-1] if n else 0,
            "total": sum(values)}


def _first_line(argv):
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, timeout=10).stdout
        return out.splitlines()[0].strip() if out else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "missing"


def machine():
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cgroup = "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1"
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "cgroup": cgroup,
            "crun": _first_line(["crun", "--version"]),
            "runc": _first_line(["runc", "--version"])}


def loadavg(when):
    """The 1-minute load average: other work on the machine skews every figure."""
    with open("/proc/loadavg") as f:
        return {"when": when, "load1": float(f.read().split()[0])}


def _ratio(a, b):
    return a / b if b else 0.0


def _start_rows(res):
    return res.get("start", [])


def goals(res):
    """[{goal, measured, met}]: reported against, never asserted."""
    out = []
    for row in _start_rows(res):
        r = _ratio(row["zcd"]["per_s"], row["bare_lifecycle"]["per_s"])
        out.append({"goal": f"{row['runtime']} C={row['c']}: zcd/bare >= 0.95 "
                            "create/start/wait/delete (issue 9)",
                    "measured": f"{r:.2f} x", "met": r >= 0.95})
        if row["c"] == 16:
            r = _ratio(row["zcd"]["per_s"], row["bare_lifecycle"]["per_s"])
            out.append({"goal": f"{row['runtime']}: zcd throughput >= 0.9 x bare "
                                "create/start/wait/delete at C=16",
                        "measured": f"{r:.2f} x", "met": r >= 0.9})
        if row["c"] == 1:
            d = row["zcd"]["create_ms"]["p50"] - row["bare_lifecycle"]["create_start_ms"]["p50"]
            out.append({"goal": f"{row['runtime']}: create p50 at C=1 within 2 ms of bare "
                                "create+start",
                        "measured": f"{d:+.1f} ms", "met": d <= 2.0})
    for peer in res.get("peers", {}).get("start", []):
        if peer.get("c") == 16 and peer.get("zcd_over_containerd"):
            r = peer["zcd_over_containerd"]
            out.append({"goal": f"{peer['runtime']}: zcd >= 4 x containerd at C=16",
                        "measured": f"{r:.2f} x", "met": r >= 4})
    dens = res.get("density")
    if dens:
        rss = dens["shim_rss_kib"]["median"]
        out.append({"goal": "zcd-shim RSS < 1 MiB (median per shim process)",
                    "measured": f"{rss} KiB", "met": rss < 1024})
        if dens.get("containers_with_shims"):
            crss = dens["container_shim_rss_kib"]["median"]
            out.append({"goal": "zcd-shim RSS < 1 MiB (median per container, all its shims)",
                        "measured": f"{crss} KiB", "met": crss < 1024})
        b = dens["bytes_per_container"]
        out.append({"goal": "daemon memory < 64 KiB per container",
                    "measured": f"{b / 1024:.1f} KiB", "met": b < 64 * 1024})
    cost = res.get("cost", [])
    if cost:
        top = max(cost, key=lambda c: c["running"])
        p = top["state"]["latency_ms"]["p99"]
        note = "" if top["running"] >= 1000 else f" (only {top['running']} running)"
        out.append({"goal": "`state` of 1,000 containers < 20 ms (p99)",
                    "measured": f"{p:.1f} ms{note}", "met": p < 20 and top["running"] >= 1000})
    return out


def _lat(l):
    return f"{l['p50']:.1f} / {l['p95']:.1f} / {l['p99']:.1f} / {l['max']:.1f}"


def _start_table(res, lines):
    rows = _start_rows(res)
    if not rows:
        return
    n = rows[0]["zcd"]["n"]
    rounds = rows[0].get("rounds", 1)
    state_fs = res["settings"].get("state_fs", "ext4")
    seen = ", ".join(res.get("state_fs_seen", [])) or "?"
    lines += [
        "",
        f"## Start: `true` containers, whole lifecycle, N={n} per cell, "
        f"state dir on {state_fs} ({seen})",
        "",
        "zcd = `create` request -> init `exit` event, C lifecycles in flight (DEALER);"
        " bare = `<runtime> create`+`start`+wait+`delete`, C threads; run = one"
        " `<runtime> run`, C threads. containers/s = completed / wall time."
        f" Each cell ran in {rounds} rounds of about N/{rounds}, alternating zcd, bare"
        " and run, so all three saw the same machine load; latencies are the rounds'"
        " n-weighted means (max: the largest).",
        "",
        "| runtime | C | zcd /s | bare /s | zcd/bare | zcd/bare by round | run /s | zcd/run "
        "| zcd create ms p50/p95/p99/max | bare create+start ms p50/p95/p99/max | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        z, b, u = r["zcd"], r["bare_lifecycle"], r["bare_run"]
        failed = z["failed"] + z.get("unfinished", 0) + b["failed"] + u["failed"]
        by_round = ", ".join(f"{_ratio(zr, br):.2f}" for zr, br in
                             zip(z.get("rounds_per_s", []), b.get("rounds_per_s", [])))
        lines.append(
            f"| {r['runtime']} | {r['c']} | {z['per_s']:.1f} | {b['per_s']:.1f} "
            f"| {_ratio(z['per_s'], b['per_s']):.2f} | {by_round or '-'} | {u['per_s']:.1f} "
            f"| {_ratio(z['per_s'], u['per_s']):.2f} | {_lat(z['create_ms'])} "
            f"| {_lat(b['create_start_ms'])} | {failed} |")
        for tag, run in (("zcd", z), ("bare", b), ("run", u)):
            if run.get("first_error"):
                lines.append(f"|   | {tag} error: {run['first_error']} ||||||||||")


def _control_table(res, lines):
    ctl = res.get("control")
    if not ctl:
        return
    lines += ["", "## Control plane", "",
              "| figure | value | latency ms p50/p95/p99/max | samples |",
              "|---|---|---|---|"]
    for v in ctl["version"]:
        lines.append(f"| `version` round trips/s, {v['c']} in flight | {v['per_s']:.0f} "
                     f"| {_lat(v['latency_ms'])} | {v['n']} calls |")
    lines += ["", "Event fan-out: pause/resume updates on 8 running containers (16 in flight)"
              " generate the events; every subscriber must see every seq in order.", "",
              "| subscribers | events | events/s | deliveries/s | lost | seq gaps "
              "| update failures |",
              "|---|---|---|---|---|---|---|"]
    for f in ctl["fanout"]:
        lines.append(f"| {f['subscribers']} | {f['events']} | {f['events_per_s']:.1f} "
                     f"| {f['deliveries_per_s']:.0f} | {f['lost']} | {f['gaps']} "
                     f"| {f['update_failures']} |")


def _density_table(res, lines):
    d = res.get("density")
    if not d:
        _peer_density(res, lines)
        return
    rss, pss = d["shim_rss_kib"], d["shim_pss_kib"]
    took = "" if d["running"] >= d["level"] else f" (machine took {d['running']} of {d['level']})"
    lines += [
        "", f"## Density: {d['running']} running `sleep` containers (crun){took}", "",
        "| figure | value |", "|---|---|",
        f"| daemon RSS (VmRSS) | {d['daemon_rss_kib'] / 1024:.1f} MiB "
        f"(empty: {d['daemon_rss_base_kib'] / 1024:.1f} MiB) |",
        f"| daemon bytes per container ((RSS - empty RSS) / {d['running']}) "
        f"| {d['bytes_per_container'] / 1024:.1f} KiB |",
        f"| daemon open fds | {d['daemon_fds']} (empty: {d['daemon_fds_base']}) |",
        f"| zcd-shim RSS median / max / total ({rss['n']} shims, smaps_rollup) "
        f"| {rss['median']} KiB / {rss['max']} KiB / {rss['total'] / 1024:.1f} MiB |",
        f"| zcd-shim PSS median / max / total ({pss['n']} shims) "
        f"| {pss['median']} KiB / {pss['max']} KiB / {pss['total'] / 1024:.1f} MiB |",
    ]
    if d.get("containers_with_shims"):
        per, crss, cpss = (d["shim_processes_per_container"], d["container_shim_rss_kib"],
                           d["container_shim_pss_kib"])
        lines += [
            f"| zcd-shim processes per container median / max ({d['containers_with_shims']}"
            f" containers) | {per['median']} / {per['max']} |",
            f"| zcd-shim RSS per container (all its shim processes) median / max "
            f"| {crss['median']} KiB / {crss['max']} KiB |",
            f"| zcd-shim PSS per container median / max "
            f"| {cpss['median']} KiB / {cpss['max']} KiB |",
        ]
    _peer_density(res, lines)


def _peer_density(res, lines):
    peer = res.get("peers", {}).get("density")
    if peer:
        lines += ["", f"## containerd memory: {peer['running']} running `sleep` containers "
                  f"(`ctr run -d`, {peer.get('runtime', 'crun')})", "",
                  "| figure | value |", "|---|---|"]
        prss, ppss = peer["shim_rss_kib"], peer["shim_pss_kib"]
        lines += [
            f"| containerd-shim RSS median / max / total ({prss['n']} shims, "
            f"{peer['running']} containers) | {prss['median']} KiB / {prss['max']} KiB / "
            f"{prss['total'] / 1024:.1f} MiB |",
            f"| containerd-shim PSS median / max / total | {ppss['median']} KiB / "
            f"{ppss['max']} KiB / {ppss['total'] / 1024:.1f} MiB |",
            f"| containerd RSS | {peer['daemon_rss_kib'] / 1024:.1f} MiB |",
        ]


def _cost_table(res, lines):
    cost = res.get("cost")
    if not cost:
        return
    lines += ["", "## Cost growth: latency with `sleep` containers already running (crun)", "",
              "| running | create ms p50/p95/p99/max | creates | `state` ms p50/p95/p99/max "
              "| `state` calls | `state` reply |",
              "|---|---|---|---|---|---|"]
    for c in cost:
        cr, st = c["create"], c["state"]
        took = "" if c["running"] >= c["level"] else f" (of {c['level']} asked)"
        lines.append(f"| {c['running']}{took} | {_lat(cr['create_ms'])} | {cr['ok']} "
                     f"| {_lat(st['latency_ms'])} | {st['n']} "
                     f"| {st['reply_bytes'] / 1024:.0f} KiB |")


def _peers_table(res, lines):
    peers = res.get("peers", {}).get("start")
    if not peers:
        return
    lines += ["", "## Peers: containerd (`ctr run --rm --rootfs`), same bundle, N and C", "",
              "| runtime | C | containerd /s | zcd /s | zcd/containerd | failed |",
              "|---|---|---|---|---|---|"]
    for p in peers:
        lines.append(f"| {p['runtime']} | {p['c']} | {p['containerd']['per_s']:.1f} "
                     f"| {p.get('zcd_per_s', 0):.1f} | {p.get('zcd_over_containerd', 0):.2f} "
                     f"| {p['containerd']['failed']} |")


def _p(l):
    return f"{l['p50']:.0f} / {l['p95']:.0f}"


def _checkpoint_table(res, lines):
    cp = res.get("checkpoint")
    if not cp:
        return
    cs = cp["settings"]
    if cp.get("skipped"):
        lines += ["", f"## Checkpoint and restore: skipped ({cp['skipped']})"]
        return
    lines += [
        "", f"## Checkpoint and restore (issue 10): {cs['n']} pairs per cell, images on "
        f"{cp.get('image_fs', '?')}", "",
        "zcd = `checkpoint_create` (exit=true) request -> reply, then `create` with "
        "`checkpoint` under a new id, request -> reply; bare = `<runtime> checkpoint "
        "--image-path D`, then `<runtime> restore -d` under a new id, stdio pipes. "
        f"small = busybox `sleep`, big = memhold holding {cs['mib']} MiB it touched. "
        "Rounds alternate the cells (and which of zcd and bare goes first); one warm-up "
        "round is not counted.", "",
        "| runtime | container | image MiB | zcd checkpoint ms p50/p95 "
        "| bare checkpoint ms p50/p95 | zcd/bare p50 | zcd restore ms p50/p95 "
        "| bare restore ms p50/p95 | zcd/bare p50 | failed zcd/bare |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cp["cells"]:
        z, b = c["zcd"], c["bare"]
        lines.append(
            f"| {c['runtime']} | {c['kind']} | {z['image_mib']:.1f} | {_p(z['checkpoint_ms'])} "
            f"| {_p(b['checkpoint_ms'])} "
            f"| {_ratio(z['checkpoint_ms']['p50'], b['checkpoint_ms']['p50']):.2f} "
            f"| {_p(z['restore_ms'])} | {_p(b['restore_ms'])} "
            f"| {_ratio(z['restore_ms']['p50'], b['restore_ms']['p50']):.2f} "
            f"| {z['failed']} / {b['failed']} |")
        for tag, side in (("zcd", z), ("bare", b)):
            if side.get("first_error"):
                lines.append(f"|   | {tag} error: {side['first_error'][:300]} |||||||||")
    bare_left = [f"{c['runtime']} {c['kind']} {c['bare']['cgroups_left']}/{c['bare']['n']}"
                 for c in cp["cells"] if c["bare"].get("cgroups_left")]
    if bare_left:
        lines.append("\nbare pairs whose old id's cgroup dirs the runtime left behind "
                     "(removed by the bench): " + ", ".join(bare_left) + ".")
    _relay_table(cp, lines)
    for rt, leak in sorted(cp.get("leaks", {}).items()):
        lines.append(f"\nzcd ({rt}) after the section: {leak['shims_left']} shims left, "
                     f"{len(leak['cgroup_dirs_left'])} containers' cgroup dirs left "
                     f"(removed by the bench), daemon RSS {leak['daemon_rss_kib'][0]} -> "
                     f"{leak['daemon_rss_kib'][1]} KiB, fds {leak['daemon_fds'][0]} -> "
                     f"{leak['daemon_fds'][1]}.")


def _relay_table(cp, lines):
    relay = cp.get("relay")
    if not relay:
        return
    lines += [
        "", f"## stdio relay: the container writes {relay[0]['mib']} MiB to stdout "
        "(a regular file)", "",
        "zcd: through the shim's pipe relay (4 KiB per read/write); bare: the runtime "
        "hands the container the file itself. Shim RSS is VmRSS of the relaying "
        "zcd-shim (with its delete helper: all); CPU is its utime+stime (clock ticks) "
        "and schedstat run time over the write; write ms = first byte seen in the "
        "file -> all of it seen (1 ms polls).", "",
        "| runtime | shim RSS idle KiB | after KiB | VmHWM KiB | with helper idle/after KiB "
        "| shim CPU ms/MiB (ticks) | (schedstat) | zcd write ms p50 | bare write ms p50 "
        "| zcd/bare | rounds ok zcd/bare |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in relay:
        zw, bw = r["zcd_write_ms"]["p50"], r["bare_write_ms"]["p50"]
        lines.append(
            f"| {r['runtime']} | {r['idle_rss_kib']['p50']:.0f} | {r['after_rss_kib']['p50']:.0f} "
            f"| {r['hwm_kib']['max']:.0f} | {r['idle_all_rss_kib']['p50']:.0f} / "
            f"{r['after_all_rss_kib']['p50']:.0f} | {r['cpu_ms_per_mib']:.2f} "
            f"| {r['run_ms_per_mib']:.2f} | {zw:.0f} | {bw:.0f} | {_ratio(zw, bw):.2f} "
            f"| {r['zcd_ok']} / {r['bare_ok']} of {r['n']} |")
        if r.get("first_error"):
            lines.append(f"|   | error: {r['first_error'][:300]} ||||||||||")


def _plots_table(res, lines):
    plots = res.get("plots")
    if not plots or not plots.get("start"):
        return
    lines += ["", "## Plots (issue 12): the series of docs/bench/*.svg (bench/plot.py)", "",
              "Rounds alternate zcd, bare lifecycle, bare run and containerd (`ctr run "
              "--rm`). Start ms: zcd `create` request -> reply; bare `create` spawned -> "
              "`start` returned; containerd `ctr` spawned -> its /tasks/start event.", "",
              "| runtime | C | N | zcd /s | bare /s | run /s | containerd /s | zcd/bare "
              "| zcd/containerd | start ms p50/p95 zcd | bare | containerd | failed |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    none = {"per_s": 0.0, "failed": 0, "start_ms": {"p50": 0.0, "p95": 0.0}}
    for r in plots["start"]:
        z, b, u = r["zcd"], r["bare_lifecycle"], r["bare_run"]
        k = r.get("containerd", none)
        failed = z["failed"] + z.get("unfinished", 0) + b["failed"] + u["failed"] + k["failed"]
        lines.append(
            f"| {r['runtime']} | {r['c']} | {z['n']} | {z['per_s']:.1f} | {b['per_s']:.1f} "
            f"| {u['per_s']:.1f} | {k['per_s']:.1f} | {_ratio(z['per_s'], b['per_s']):.2f} "
            f"| {_ratio(z['per_s'], k['per_s']):.2f} | {_p(z['create_ms'])} "
            f"| {_p(b['create_start_ms'])} | {_p(k['start_ms'])} | {failed} |")
    mem = plots.get("memory", {})
    if mem.get("zcd"):
        lines += ["", "Memory per running `sleep` container, (daemon + all its shims) / "
                  "running, KiB (Pss / Rss):", "",
                  "| running | zcd Pss | zcd Rss | containerd Pss | containerd Rss |",
                  "|---|---|---|---|---|"]
        kd = {m["level"]: m for m in mem.get("containerd", [])}
        for m in mem["zcd"]:
            k = kd.get(m["level"])
            kp = f"{k['per_container_pss_kib']:.0f} | {k['per_container_rss_kib']:.0f}" \
                if k else "- | -"
            lines.append(f"| {m['running']} | {m['per_container_pss_kib']:.0f} "
                         f"| {m['per_container_rss_kib']:.0f} | {kp} |")


def _anomalies(res, lines):
    """Protocol promises the harness saw broken: every request gets one reply."""
    lost_start = sum(r["zcd"].get("lost", 0) for r in res.get("start", []))
    lost_start += sum(c["create"].get("lost", 0) + c["fill"].get("lost", 0)
                      for c in res.get("cost", []))
    lost_drain = sum(d.get("lost_replies", 0) for d in res.get("drains", []))
    left = sum(d.get("left", 0) for d in res.get("drains", []))
    upd = sum(f["update_failures"] for f in res.get("control", {}).get("fanout", []))
    lines += ["", "## Anomalies", "",
              f"creates with no reply or no exit event within 60 s: {lost_start}; "
              f"signal/update requests with no reply within 10 s (teardown): {lost_drain}; "
              f"containers still listed after teardown: {left}; "
              f"failed or unanswered pause/resume updates: {upd}."]


def table(res):
    m = res["machine"]
    s = res["settings"]
    lines = [f"# zcd benchmarks: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, "
             f"Linux {m['kernel']}, cgroup {m['cgroup']}, {m['crun']}, {m['runc']}",
             "",
             f"Settings: N={s['n']}, C={s['cs']}, M={s['m']}, cost levels "
             f"{s['cost_levels']}, --max-concurrent-starts {s['max_starts']}, "
             f"start rounds {s.get('rounds', 1)}, state dirs on {s.get('state_fs', 'ext4')}; "
             f"run took {res.get('elapsed_s', 0):.0f} s."]
    if res.get("loadavg"):
        lines.append("1-minute load average (other work on the machine skews the figures): "
                     + ", ".join(f"{l['when']} {l['load1']:.1f}" for l in res["loadavg"]) + ".")
    _start_table(res, lines)
    _control_table(res, lines)
    _density_table(res, lines)
    _cost_table(res, lines)
    _peers_table(res, lines)
    _checkpoint_table(res, lines)
    _plots_table(res, lines)
    _anomalies(res, lines)
    gl = res.get("goals", [])
    if gl:
        lines += ["", "## Goals (reported, not asserted)", "", "| goal | measured | met |",
                  "|---|---|---|"]
        for g in gl:
            lines.append(f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else 'NO'} |")
    return "\n".join(lines)
