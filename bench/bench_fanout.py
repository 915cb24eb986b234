#!/usr/bin/python3
"""The `fanout` section (issue 11): creates/s through libzcd's fan-out
client across three nodes against one node, in the same run.

Three zcds on this machine, each with its own state dir and tcp endpoints
on 127.0.0.1 under CURVE (the node file lists them); build/bench/fanout_load
sends `create` requests for `true` containers round robin over the chosen
nodes, C in flight in all, and follows the exits through the merged event
stream.  Rounds alternate one node and three nodes, so both see the same
machine.  All nodes share this machine's CPUs: three nodes here measure the
client's and the protocol's overhead and the daemons' parallelism, not
three machines' worth of capacity.

usage: bench/bench_fanout.py [--json FILE]
Settings (environment): BENCH_FANOUT_N=60 (containers per run),
BENCH_FANOUT_C=8 (creates in flight), BENCH_FANOUT_ROUNDS=3, BUILD=build.
Needs python3-zmq (for the CURVE keys), as bench_checkpoint.py does.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (bundles, leftovers, run_json, BUILD)

DRIVER = os.path.join(bench.BUILD, "bench", "fanout_load")
NODES = ["n1", "n2", "n3"]


def env_int(name, default):
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_cert(path, public, secret=None):
    lines = ["metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def start_nodes(tmp):
    """Three daemons under CURVE on loopback; (node file, [Popen])."""
    import zmq
    server, client = zmq.curve_keypair(), zmq.curve_keypair()
    clients = os.path.join(tmp, "clients")
    os.makedirs(clients)
    write_cert(os.path.join(tmp, "server.cert"), *server)
    write_cert(os.path.join(tmp, "client.cert"), *client)
    write_cert(os.path.join(clients, "bench.cert"), client[0])
    lines, procs = ["client-cert client.cert"], []
    for name in NODES:
        state = os.path.join(tmp, f"state-{name}")
        os.makedirs(state, mode=0o700)
        cmd, evt = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        log = open(state + ".log", "w")
        procs.append(subprocess.Popen(
            [bench.ZCD, "--state-dir", state, "--runtime", "runc",
             "--listen", f"ipc://{state}/zcd.sock", "--listen", cmd,
             "--publish", f"ipc://{state}/events.sock", "--publish", evt,
             "--curve-secret", os.path.join(tmp, "server.cert"), "--curve-clients", clients],
            stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(state, "zcd.sock")):
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"zcd did not start; see {state}.log")
            time.sleep(0.01)
        lines.append(f"{name} {cmd} {evt} {server[0].decode()}")
    node_file = os.path.join(tmp, "nodes")
    with open(node_file, "w") as f:
        f.write("\n".join(lines) + "\n")
    return node_file, procs


def drive(node_file, bundle, nodes, n, c, tag):
    return bench.run_json([DRIVER, "-f", node_file, "-b", bundle, "-n", str(n), "-c", str(c),
                           "-o", ",".join(nodes), "-p", f"{bench.PREFIX}-fo{tag}"], timeout=900)


def section(s):
    tmp = tempfile.mkdtemp(prefix="zcd-bench-fanout-")
    procs = []
    res = {"n": s["n"], "c": s["c"], "rounds": s["rounds"], "one": [], "three": []}
    try:
        bundles = bench.make_bundles(tmp)
        node_file, procs = start_nodes(tmp)
        # warm-up: page cache, the runtime's first cgroup setup, CURVE handshakes
        drive(node_file, bundles["true"], NODES, 6, 3, "warm")
        for r in range(s["rounds"]):
            bench.log(f"fanout: round {r + 1}/{s['rounds']}: one node, three nodes "
                      f"({s['n']} each)")
            res["one"].append(drive(node_file, bundles["true"], NODES[:1], s["n"], s["c"],
                                    f"1r{r}"))
            res["three"].append(drive(node_file, bundles["true"], NODES, s["n"], s["c"],
                                      f"3r{r}"))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        bench.cleanup_leftovers(tmp)
        subprocess.run(["rm", "-rf", "--one-file-system", tmp])
    return res


def mean(runs, key):
    return sum(r[key] for r in runs) / len(runs) if runs else 0.0


def print_table(res):
    print(f"\nfanout: `create` of `true` containers through libzcd's fan-out client "
          f"(tcp+CURVE on loopback), N={res['n']} per run, C={res['c']} in flight, "
          f"{res['rounds']} rounds alternating one node and three")
    print("  creates/s = ok create replies / (last reply - first send); lifecycles/s = to "
          "the last init exit seen on the merged event stream; all nodes share "
          f"{os.cpu_count()} CPUs")
    print(f"  {'nodes':6} {'creates/s by round':28} {'mean':>8} {'lifecycles/s':>13} "
          f"{'create ms p50/p95/max (last round)':>36} {'failed':>7}")
    for label, runs in (("1", res["one"]), ("3", res["three"])):
        by_round = "  ".join(f"{r['per_s']:8.1f}" for r in runs)
        lat = runs[-1]["create_ms"] if runs else {"p50": 0, "p95": 0, "max": 0}
        failed = sum(r["failed"] + r["unfinished"] + (r["ok"] - r["exits"]) for r in runs)
        print(f"  {label:6} {by_round:28} {mean(runs, 'per_s'):8.1f} "
              f"{mean(runs, 'lifecycles_per_s'):13.1f} "
              f"{'':12}{lat['p50']:7.1f} / {lat['p95']:6.1f} / {lat['max']:6.1f} {failed:7d}")
        for r in runs:
            if r.get("first_error"):
                print(f"    error: {r['first_error']}")
    one, three = mean(res["one"], "per_s"), mean(res["three"], "per_s")
    res["ratio"] = three / one if one else 0.0
    print(f"  ratio three nodes / one node: {res['ratio']:.2f}")


def main():
    args = sys.argv[1:]
    json_path = args[1] if args[:1] == ["--json"] and len(args) > 1 else None
    for binary in (bench.ZCD, DRIVER):
        if not os.access(binary, os.X_OK):
            print(f"fanout: {binary} is missing: run make first", file=sys.stderr)
            return 2
    s = {"n": env_int("BENCH_FANOUT_N", 60), "c": env_int("BENCH_FANOUT_C", 8),
         "rounds": max(1, env_int("BENCH_FANOUT_ROUNDS", 3))}
    res = section(s)
    print_table(res)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
