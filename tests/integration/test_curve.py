"""tcp:// endpoints: CURVE with an allow-list of client keys (PROTOCOL.md
section 1), and the refusal of plain tcp without --insecure-tcp."""
import os
import socket
import subprocess
import tempfile

import msgpack
import pytest
import zmq

from conftest import ZCD, pack, unpack


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_cert(path, public, secret=None):
    """A czmq (ZPL) certificate file, as zcert_save writes it."""
    lines = ["metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    path.write_text("\n".join(lines) + "\n")


def call(ctx, endpoint, server_public, client_keys, timeout_ms=3000):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.curve_serverkey = server_public
    s.curve_publickey, s.curve_secretkey = client_keys
    s.connect(endpoint)
    try:
        s.send(pack({"op": "version", "rid": 1}))
        if not s.poll(timeout_ms):
            return None
        return unpack(s.recv())
    finally:
        s.close()


def test_tcp_without_curve_is_refused_at_start(tmp_path):
    state = tempfile.mkdtemp(prefix="zcd-it-", dir="/tmp")
    port = free_port()
    proc = subprocess.run([str(ZCD), "--state-dir", state, "--listen", f"tcp://127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode != 0
    assert "CURVE" in proc.stderr and "--curve-secret" in proc.stderr


def curve_files(tmp_path):
    """(server keypair, allowed client keypair, stranger keypair, secret
    certificate path, clients directory)."""
    server = zmq.curve_keypair()
    allowed = zmq.curve_keypair()
    stranger = zmq.curve_keypair()
    clients = tmp_path / "clients"
    clients.mkdir()
    write_cert(tmp_path / "server.cert", server[0], server[1])
    write_cert(clients / "allowed.cert", allowed[0])
    return server, allowed, stranger, tmp_path / "server.cert", clients


def curve_args(secret, clients):
    return ["--curve-secret", str(secret), "--curve-clients", str(clients)]


def test_curve_allows_listed_clients_only(tmp_path, zmq_ctx):
    """A tcp endpoint is served by its own CURVE socket: clients in
    --curve-clients get answers, any other key or a plain client gets
    nothing."""
    server, allowed, stranger, secret, clients = curve_files(tmp_path)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    state = tempfile.mkdtemp(prefix="zcd-it-", dir="/tmp")
    proc = subprocess.Popen([str(ZCD), "--state-dir", state, "--listen", endpoint]
                            + curve_args(secret, clients),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        reply = None
        for _ in range(30):  # the daemon binds within a few hundred ms
            reply = call(zmq_ctx, endpoint, server[0], allowed, timeout_ms=500)
            if reply is not None or proc.poll() is not None:
                break
        assert reply is not None and reply["ok"] is True and reply["rid"] == 1
        assert call(zmq_ctx, endpoint, server[0], stranger, timeout_ms=1500) is None
        plain = zmq_ctx.socket(zmq.DEALER)
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(endpoint)
        plain.send(pack({"op": "version"}))
        assert not plain.poll(1000)
        plain.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def curve_sub(ctx, endpoint, server_public, client_keys):
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.curve_serverkey = server_public
    s.curve_publickey, s.curve_secretkey = client_keys
    s.setsockopt(zmq.SUBSCRIBE, b"/heartbeat")
    s.connect(endpoint)
    return s


def test_curve_on_tcp_leaves_ipc_clients_alone(tmp_path, zmq_ctx, zcd_factory, state_dir):
    """Issue 8, defect 13: with tcp endpoints under CURVE, a local client on
    the ipc endpoints (zctr's way) is still answered and still gets events;
    on tcp only a listed key gets either."""
    server, allowed, stranger, secret, clients = curve_files(tmp_path)
    cmd_tcp = f"tcp://127.0.0.1:{free_port()}"
    ev_tcp = f"tcp://127.0.0.1:{free_port()}"
    d = zcd_factory(state_dir=state_dir, args=[
        "--listen", f"ipc://{state_dir}/zcd.sock", "--listen", cmd_tcp,
        "--publish", f"ipc://{state_dir}/events.sock", "--publish", ev_tcp,
    ] + curve_args(secret, clients))
    # a plain DEALER on ipc: the fixture's own start-up probe was one too
    reply = d.client().call("version", timeout=5)
    assert reply["ok"] is True and reply["protocol"] == 1
    assert d.req_client().call("state")["ok"] is True
    d.subscriber("/heartbeat")  # waits for a heartbeat on the ipc event endpoint
    # tcp: a listed key is answered and gets events, a stranger neither
    assert call(zmq_ctx, cmd_tcp, server[0], allowed)["ok"] is True
    assert call(zmq_ctx, cmd_tcp, server[0], stranger, timeout_ms=1000) is None
    good = curve_sub(zmq_ctx, ev_tcp, server[0], allowed)
    bad = curve_sub(zmq_ctx, ev_tcp, server[0], stranger)
    try:
        assert good.poll(5000), "no heartbeat for a listed key on the tcp event endpoint"
        topic, _ = good.recv_multipart()
        assert topic == b"/heartbeat"
        assert not bad.poll(1000)
    finally:
        good.close()
        bad.close()
    # and ipc is still served after the tcp traffic
    assert d.client().ok("version")


def test_insecure_tcp_is_plain(zmq_ctx, zcd_factory, state_dir):
    """--insecure-tcp (tests only) keeps tcp in the clear, next to ipc."""
    cmd_tcp = f"tcp://127.0.0.1:{free_port()}"
    d = zcd_factory(state_dir=state_dir, args=[
        "--listen", f"ipc://{state_dir}/zcd.sock", "--listen", cmd_tcp, "--insecure-tcp"])
    plain = zmq_ctx.socket(zmq.DEALER)
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(cmd_tcp)
    try:
        plain.send(pack({"op": "version", "rid": 2}))
        assert plain.poll(5000)
        assert unpack(plain.recv())["rid"] == 2
    finally:
        plain.close()
    assert d.client().ok("version")
