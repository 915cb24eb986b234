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


def test_curve_allows_listed_clients_only(tmp_path, zmq_ctx):
    """With CURVE configured every endpoint of the command socket speaks
    CURVE (one ROUTER serves them all): clients in --curve-clients get
    answers, any other key or a plain client gets nothing."""
    server_public, server_secret = zmq.curve_keypair()
    allowed = zmq.curve_keypair()
    stranger = zmq.curve_keypair()
    clients = tmp_path / "clients"
    clients.mkdir()
    write_cert(tmp_path / "server.cert", server_public, server_secret)
    write_cert(clients / "allowed.cert", allowed[0])
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    state = tempfile.mkdtemp(prefix="zcd-it-", dir="/tmp")
    proc = subprocess.Popen([str(ZCD), "--state-dir", state, "--listen", endpoint,
                             "--curve-secret", str(tmp_path / "server.cert"),
                             "--curve-clients", str(clients)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        reply = None
        for _ in range(30):  # the daemon binds within a few hundred ms
            reply = call(zmq_ctx, endpoint, server_public, allowed, timeout_ms=500)
            if reply is not None or proc.poll() is not None:
                break
        assert reply is not None and reply["ok"] is True and reply["rid"] == 1
        assert call(zmq_ctx, endpoint, server_public, stranger, timeout_ms=1500) is None
        plain = zmq_ctx.socket(zmq.DEALER)
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(endpoint)
        plain.send(pack({"op": "version"}))
        assert not plain.poll(1000)
        plain.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
