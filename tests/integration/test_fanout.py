"""The fan-out client over three nodes (issue 11, part 5; docs/fanout.md).

Three zcds, each in a network namespace of its own (zf1..zf3, bridged on
zfbr0, 10.231.1.0/24, the host at .254), listening and publishing on tcp at
their namespace's address under CURVE.  Two merged event streams follow all
three from the host: libzcd's (`zctr --node FILE events`) and the Python
client's (`python3 -m zcd --node FILE events`).  30 short containers are
started across the nodes (through both clients), and node zf2's daemon is
stopped and started again on the same state dir in the middle, while its
containers exit.  Both streams must then hold, per node, every seq exactly
once and in order, with no gap up to the node's last_seq; zf2's boot_id
changing exactly once and the others' never; and a start and an exit for
each of the 30 containers."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import zmq

from conftest import (REPO, ZCTR, BundleFactory, Daemon, sweep, wait_for)

sys.path.insert(0, str(REPO / "clients" / "python"))
from zcd import FanOut  # noqa: E402  (clients/python, found through the path above)

NETNS = ["zf1", "zf2", "zf3"]
BRIDGE = "zfbr0"
HOST_ADDR = "10.231.1.254"
CMD_PORT, EVT_PORT = 7101, 7102
RESTARTED = "zf2"
N_CONTAINERS = 30


def node_addr(i):
    return f"10.231.1.{i + 1}"


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def remove_network():
    for ns in NETNS:
        ip("netns", "del", ns, check=False)
    ip("link", "del", BRIDGE, check=False)


@pytest.fixture
def network():
    """A bridge with the host at .254 and one namespace per node, each
    with a veth on the bridge; all removed afterwards, also on failure."""
    if shutil.which("nsenter") is None:
        pytest.fail("nsenter is missing (util-linux)")
    remove_network()  # what a killed run may have left
    try:
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{HOST_ADDR}/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        for i, ns in enumerate(NETNS):
            ip("netns", "add", ns)
            ip("link", "add", f"zfv{i + 1}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", f"zfv{i + 1}", "master", BRIDGE, "up")
            ip("-n", ns, "addr", "add", f"{node_addr(i)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        remove_network()


def write_cert(path, public, secret=None):
    """A czmq certificate file (ZPL), as zcert_save writes it."""
    lines = ["metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    path.write_text("\n".join(lines) + "\n")


class NodeDaemon(Daemon):
    """A zcd inside a network namespace: tcp endpoints at the namespace's
    address under CURVE, ipc ones for the start-up probe.  nsenter, not
    `ip netns exec`: that one remounts /sys, hiding the cgroup mounts."""

    def __init__(self, ctx, ns, addr, curve, log_dir):
        state = tempfile.mkdtemp(prefix=f"zcd-{ns}-", dir="/tmp")
        self.ns = ns
        self.cmd_tcp = f"tcp://{addr}:{CMD_PORT}"
        self.evt_tcp = f"tcp://{addr}:{EVT_PORT}"
        args = ["--listen", f"ipc://{state}/zcd.sock", "--listen", self.cmd_tcp,
                "--publish", f"ipc://{state}/events.sock", "--publish", self.evt_tcp,
                "--curve-secret", str(curve["secret"]), "--curve-clients", str(curve["clients"])]
        super().__init__(ctx, state, "runc", args, log_dir=log_dir)
        self.log_path = Path(log_dir) / f"zcd-{ns}.log"

    def argv(self):
        return ["nsenter", f"--net=/run/netns/{self.ns}"] + super().argv()


@pytest.fixture
def nodes(network, zmq_ctx, tmp_path):
    """Three daemons and the node file naming them; every daemon stopped,
    every container and shim they left killed, afterwards."""
    server = zmq.curve_keypair()
    client = zmq.curve_keypair()
    clients = tmp_path / "clients"
    clients.mkdir()
    write_cert(tmp_path / "server.cert", *server)
    write_cert(tmp_path / "client.cert", *client)
    write_cert(clients / "scheduler.cert", client[0])
    curve = {"secret": tmp_path / "server.cert", "clients": clients}
    daemons = {}
    try:
        for i, ns in enumerate(NETNS):
            daemons[ns] = NodeDaemon(zmq_ctx, ns, node_addr(i), curve, tmp_path).start()
        node_file = tmp_path / "nodes"
        node_file.write_text("# three zcds, one per network namespace\nclient-cert client.cert\n"
                             + "".join(f"{ns} {d.cmd_tcp} {d.evt_tcp} {server[0].decode()}\n"
                                       for ns, d in daemons.items()))
        yield node_file, daemons
    finally:
        left = []
        for d in daemons.values():
            d.stop()
            left += sweep(d)
            shutil.rmtree(d.state_dir, ignore_errors=True)
        if left:
            print("left behind: " + "; ".join(left))


def start_consumer(argv, out_path, err_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "clients" / "python"))
    return subprocess.Popen(argv, stdout=open(out_path, "w"), stderr=open(err_path, "w"),
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def read_stream(path):
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def zctr_start(node_file, ns, cid, bundle):
    r = subprocess.run([str(ZCTR), "--node", str(node_file), "--on", ns, "--timeout", "20000",
                        "containers", "start", cid, bundle], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"zctr start {cid} on {ns}: {r.stderr}"
    assert r.stdout.strip() == f"{ns}: ok"


def py_start_many(fo, plan, bundle):
    """Creates pipelined through the Python fan-out client: all sent, then
    every final reply collected."""
    pending = {}
    for ns, cid in plan:
        pending[(ns, fo.send(ns, {"op": "create", "id": cid, "bundle": bundle}))] = cid
    deadline = time.monotonic() + 60
    while pending:
        got = fo.recv(int(max(0, deadline - time.monotonic()) * 1000))
        assert got is not None, f"no create reply for {sorted(pending.values())}"
        ns, reply = got
        if "ok" in reply:
            cid = pending.pop((ns, reply["rid"]))
            assert reply["ok"], f"create {cid} on {ns}: {reply}"


def complete(stream, last_seq, ids):
    """Every seq up to each node's last_seq, and a start and an exit of every id."""
    seqs = {}
    kinds = {}
    for e in stream:
        seqs.setdefault(e["node"], set()).add(e["seq"])
        kinds.setdefault(e["event"].get("id"), set()).add(e["event"]["type"])
    return (all(seqs.get(ns, set()) >= set(range(1, last + 1)) for ns, last in last_seq.items())
            and all({"start-container", "exit"} <= kinds.get(cid, set()) for cid in ids))


def check_stream(name, stream, last_seq, ids, boots):
    """The guarantees, for one consumer's merged stream."""
    for ns in NETNS:
        mine = [e for e in stream if e["node"] == ns]
        seqs = [e["seq"] for e in mine]
        assert seqs == list(range(1, last_seq[ns] + 1)), \
            f"{name}: {ns}: seqs not exactly 1..{last_seq[ns]} once each, in order: {seqs}"
        assert all(e["seq"] == e["event"]["seq"] for e in mine)
        changes = [(a["seq"], b["seq"]) for a, b in zip(mine, mine[1:])
                   if a["boot_id"] != b["boot_id"]]
        want = 1 if ns == RESTARTED else 0
        assert len(changes) == want, f"{name}: {ns}: boot_id changed at {changes}"
        assert mine[-1]["boot_id"] == boots[ns], f"{name}: {ns}: last boot is not the daemon's"
        if ns == RESTARTED:
            assert mine[0]["boot_id"] != boots[ns]
    for cid, ns in ids.items():
        types = [e["event"]["type"] for e in stream if e["event"].get("id") == cid]
        assert types.count("start-container") == 1 and types.count("exit") == 1, \
            f"{name}: {cid}: {types}"
        assert {e["node"] for e in stream if e["event"].get("id") == cid} == {ns}


def test_fanout_merged_streams_survive_a_restart(nodes, rootfs, tmp_path, token):
    node_file, daemons = nodes
    bundles = BundleFactory(tmp_path / "bundles", rootfs)
    short = bundles(args=["sh", "-c", "sleep 1"])
    c_out, py_out = tmp_path / "zctr-events.jsonl", tmp_path / "py-events.jsonl"
    consumers = [
        start_consumer([str(ZCTR), "--node", str(node_file), "--json", "--timeout", "5000",
                        "events", "--since-seq", "0"], c_out, tmp_path / "zctr-events.err"),
        start_consumer(["/usr/bin/python3", "-m", "zcd", "--node", str(node_file), "--json",
                        "--timeout", "5000", "events", "--since-seq", "0"],
                       py_out, tmp_path / "py-events.err"),
    ]
    fo = FanOut(str(node_file), timeout_ms=20000)
    ids = {}  # container id -> node
    try:
        # every node answers through the fan-out client before anything starts
        versions = fo.request("version")
        assert all(r.ok for r in versions.values()), versions
        # 12 through libzcd (zctr), round robin; then zf2 restarts while 6
        # more start on the others and zf2's containers exit
        for k in range(12):
            ns = NETNS[k % 3]
            ids[f"zf-{token}-{k:02d}"] = ns
            zctr_start(node_file, ns, f"zf-{token}-{k:02d}", short)
        restarted = daemons[RESTARTED]
        assert restarted.stop() == 0
        down = [(NETNS[0 if k % 2 else 2], f"zf-{token}-{k:02d}") for k in range(12, 18)]
        py_start_many(fo, down, short)
        ids.update({cid: ns for ns, cid in down})
        restarted.start()
        # 12 more through the Python client, over all three, the restarted one too
        after = [(NETNS[k % 3], f"zf-{token}-{k:02d}") for k in range(18, N_CONTAINERS)]
        py_start_many(fo, after, short)
        ids.update({cid: ns for ns, cid in after})
        assert len(ids) == N_CONTAINERS
        for d in daemons.values():
            d.created_ids.update(ids)

        def settled():
            states = fo.request("state")
            if not all(r.ok for r in states.values()):
                return None
            if any(r.reply["containers"] for r in states.values()):
                return None  # some still running
            return {ns: r.reply["last_seq"] for ns, r in states.items()}
        last_seq = wait_for(settled, timeout=40, what="every container to exit")
        boots = {ns: r.reply["boot_id"] for ns, r in fo.request("state").items()}
        for name, path in (("zctr", c_out), ("python", py_out)):
            wait_for(lambda: complete(read_stream(path), last_seq, ids), timeout=20,
                     what=f"the {name} stream to hold every event")
    finally:
        fo.close()
        for p in consumers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
    for name, path, p in (("zctr", c_out, consumers[0]), ("python", py_out, consumers[1])):
        # a consumer that died early would show up as an exit code other than SIGTERM's
        assert p.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM), \
            f"{name} events exited {p.returncode}: {Path(str(path)[:-6] + '.err').read_text()}"
        check_stream(name, read_stream(path), last_seq, ids, boots)


def test_node_file_errors_name_the_line(tmp_path):
    """A bad node file is refused by both clients, naming the file and line;
    nothing is connected."""
    key = zmq.curve_keypair()
    write_cert(tmp_path / "client.cert", *key)
    good = f"a tcp://10.231.1.1:1 tcp://10.231.1.1:2 {key[0].decode()}\n"
    cases = {
        "fields": "# nodes\nclient-cert client.cert\n" + good + "b tcp://x:1 tcp://x:2\n",
        "twice": "client-cert client.cert\n" + good + good,
        "key": "client-cert client.cert\nb tcp://x:1 tcp://x:2 missing.pub\n",
        "name": "client-cert client.cert\n-b tcp://x:1 tcp://x:2 -\n",
        "cert": "client-cert nowhere.cert\n" + good,
    }
    lines = {"fields": 4, "twice": 3, "key": 2, "name": 2, "cert": 1}
    env = dict(os.environ, PYTHONPATH=str(REPO / "clients" / "python"))
    for case, text in cases.items():
        path = tmp_path / f"nodes-{case}"
        path.write_text(text)
        for argv in ([str(ZCTR), "--node", str(path), "--timeout", "1000", "version"],
                     ["/usr/bin/python3", "-m", "zcd", "--node", str(path), "--timeout", "1000",
                      "version"]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
            assert r.returncode == 1, (case, argv[0], r.returncode, r.stderr)
            assert f"{path}:{lines[case]}:" in r.stderr, (case, argv[0], r.stderr)
