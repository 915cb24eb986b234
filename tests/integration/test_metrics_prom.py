"""Prometheus metrics (docs/metrics.md, PROTOCOL.md `metrics`): the op's
`format: "prometheus"` text and `GET /metrics` of `zcd --metrics-listen`.

Both texts must pass `promtool check metrics` without a word, and their
numbers must be the real ones: containers counted, a container's memory
and pids as its cgroup has them, an OOM kill counted, events by type,
request and start histograms that move.  The HTTP side faces hostile
clients: wrong paths and methods, idle connections, a client that never
sends; none of them may stop a scrape or start a thread."""

import http.client
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from caller_proxy import CallerProxy
from conftest import (ZCD, assert_error, cgroup_dir, process_dir, read_text, wait_for)
from test_curve import free_port
from testuser import ensure_test_user

PROMTOOL = shutil.which("promtool") or ("/usr/bin/promtool"
                                        if os.path.exists("/usr/bin/promtool") else None)
needs_promtool = pytest.mark.skipif(PROMTOOL is None,
                                    reason="promtool is not installed (Debian's prometheus)")
SLEEP = ["sleep", "1000"]
MiB = 1024 * 1024
IDLE_TIMEOUT = 5  # METRICS_HTTP_TIMEOUT_S


# --------------------------------------------------------------------------
# helpers


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def samples(text):
    """{(name, ((label, value), ...)): float} of an exposition text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = tuple(sorted((k, re.sub(r"\\(.)", r"\1", v))
                              for k, v in _LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(s, name, **labels):
    return s.get((name, tuple(sorted(labels.items()))))


def ids_in(s):
    return {dict(labels).get("id") for (_, labels) in s if dict(labels).get("id")}


def promtool_clean(text, what):
    if PROMTOOL is None:
        return
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        f"promtool on {what}: exit {r.returncode}\n{r.stdout}{r.stderr}"


def op_text(client):
    reply = client.ok("metrics", format="prometheus")
    assert set(reply) - {"ok", "rid"} == {"text"}, reply
    return reply["text"]


def http_get(port, path="/metrics", method="GET", source="127.0.0.1", body=None,
             headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()


def scrape(port, **kw):
    status, headers, text = http_get(port, **kw)
    assert status == 200, (status, text)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
    return text


def shim_rss(state_dir):
    """Resident bytes of the zcd-shim processes working under state_dir."""
    shim, root, total = ZCD.parent / "zcd-shim", os.path.realpath(state_dir), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (os.readlink(f"/proc/{pid}/exe") == str(shim)
                    and os.readlink(f"/proc/{pid}/cwd").startswith(root + "/")):
                total += int(read_text(f"/proc/{pid}/statm").split()[1]) * os.sysconf(
                    "SC_PAGE_SIZE")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total


def threads(daemon):
    return len(os.listdir(f"/proc/{daemon.proc.pid}/task"))


def init_pid(container):
    return {p["pid"]: p for p in container["processes"]}["init"]["system_pid"]


def kill_all(client, events, *ids):
    for c in ids:
        client.ok("signal", id=c, signal=9)
    for c in ids:
        events.wait_exit(c)
        wait_for(lambda: client.call("state", id=c).get("ok") is False, what=f"{c} to leave")


@pytest.fixture
def mzcd(zcd_factory, runtime):
    """A daemon serving GET /metrics on a free port of 127.0.0.1."""
    port = free_port()
    d = zcd_factory(runtime=runtime, args=["--metrics-listen", f"127.0.0.1:{port}"])
    d.port = port
    return d


@pytest.fixture
def hzcd(zcd_factory):
    """The same with runc only: for what no container takes part in."""
    port = free_port()
    d = zcd_factory(runtime="runc", args=["--metrics-listen", str(port)])
    d.port = port
    return d


# --------------------------------------------------------------------------
# the numbers


@needs_promtool
def test_texts_pass_promtool_and_hold_the_real_numbers(mzcd, bundle, cid):
    client, events = mzcd.client(), mzcd.subscriber("")
    a, b = cid("pa"), cid("pb")
    limited = bundle(args=SLEEP, edit=lambda c: c["linux"]["resources"].update(
        memory={"limit": 64 * MiB, "swap": 64 * MiB}))
    inits = {c: init_pid(client.ok("create", id=c, bundle=limited)["container"])
             for c in (a, b)}
    # both texts, each through promtool's linter
    text = op_text(client)
    promtool_clean(text, "the op's text")
    s = samples(text)
    web = samples(scrape(mzcd.port))
    promtool_clean(scrape(mzcd.port), "GET /metrics")
    for got in (s, web):
        assert value(got, "zcd_containers") == 2
        assert value(got, "zcd_processes") == 2
        assert value(got, "zcd_events_by_type_total", type="start-container") == 2
        assert value(got, "zcd_start_latency_seconds_count") == 2
        assert value(got, "zcd_request_duration_seconds_count", op="create") == 2
        assert value(got, "zcd_shims") == 2
    # per container, against the cgroup itself
    for c, pid in inits.items():
        mem = cgroup_dir(pid, "memory")
        usage = int(read_text(mem / "memory.usage_in_bytes"))
        got = value(s, "zcd_container_memory_usage_bytes", id=c)
        assert got is not None and abs(got - usage) <= max(MiB, usage // 5), (c, got, usage)
        pids_current = int(read_text(cgroup_dir(pid, "pids") / "pids.current"))
        state_pids = client.ok("state", id=c)["containers"][0]["pids"]
        assert value(s, "zcd_container_pids", id=c) == pids_current == len(state_pids) == 1
        cpu = int(read_text(cgroup_dir(pid, "cpuacct") / "cpuacct.usage")) / 1e9
        got_cpu = value(s, "zcd_container_cpu_seconds_total", id=c)
        assert 0 < got_cpu <= cpu + 0.5, (got_cpu, cpu)
        assert value(s, "zcd_container_oom_kills_total", id=c) == 0
    # the shims' memory: what /proc says of every zcd-shim process working
    # in this daemon's state dir (each shim and its delete helper), give
    # or take a page or two
    got = value(s, "zcd_shim_resident_memory_bytes")
    rss = shim_rss(mzcd.state_dir)
    assert rss > 0 and abs(got - rss) <= 64 * 1024, (got, rss)
    # the event log wrote and synced; the histograms move
    assert value(s, "zcd_eventlog_written_bytes_total") > 0
    assert value(s, "zcd_eventlog_fsync_duration_seconds_count") >= 1
    before = value(samples(op_text(client)), "zcd_request_duration_seconds_count", op="state")
    client.ok("state")
    client.ok("state")
    after = samples(op_text(client))
    assert value(after, "zcd_request_duration_seconds_count", op="state") == before + 2
    # the map is unchanged beside the text
    m = client.ok("metrics")
    assert m["containers"] == 2 and "text" not in m
    kill_all(client, events, a, b)
    gone = samples(op_text(client))
    assert value(gone, "zcd_containers") == 0
    assert value(gone, "zcd_events_by_type_total", type="exit") == 2
    assert not ids_in(gone)


def test_an_oom_kill_is_counted(mzcd, bundle, cid):
    """A child hogs memory and is OOM-killed; the init lives on, so the
    container still has its series to say so."""
    client, events = mzcd.client(), mzcd.subscriber("")
    c = cid("oom")
    limit = 16 * MiB
    b = bundle(args=["sh", "-c", "sh -c 'x=aaaaaaaa; while true; do x=$x$x; done'; sleep 1000"],
               edit=lambda cfg: cfg["linux"]["resources"].update(
                   memory={"limit": limit, "swap": limit}))
    pid = init_pid(client.ok("create", id=c, bundle=b)["container"])
    events.wait_type(c, "oom", timeout=60)
    control = read_text(cgroup_dir(pid, "memory") / "memory.oom_control")
    kills = int(re.search(r"oom_kill (\d+)", control).group(1))

    def counted():
        s = samples(scrape(mzcd.port))
        got = value(s, "zcd_container_oom_kills_total", id=c)
        return s if got is not None and got >= 1 else None
    s = wait_for(counted, what="an OOM kill in the metrics")
    assert kills >= 1 and value(s, "zcd_container_oom_kills_total", id=c) >= kills
    assert value(s, "zcd_events_by_type_total", type="oom") >= 1
    assert client.ok("state", id=c)["containers"][0]["status"] == "running"
    # A counter never goes down.  The cgroup can go before the container
    # does (the runtime's delete after the init's exit, while the exit is
    # still being logged); here its tasks leave it and it is removed while
    # the container runs: unreadable, it is no series, never a 0.
    mem = cgroup_dir(pid, "memory")
    root = Path(str(mem)[:str(mem).index("/memory") + len("/memory")])
    for task in read_text(mem / "cgroup.procs").split():
        (root / "cgroup.procs").write_text(task)
    os.rmdir(mem)
    got = value(samples(scrape(mzcd.port)), "zcd_container_oom_kills_total", id=c)
    assert got is None or got >= kills, got
    kill_all(client, events, c)


def test_log_dropped_bytes_come_from_the_shims_file(mzcd, bundle, cid, tmp_path):
    """procs/<pid>/log-dropped (written by the shim of a bounded log): one
    decimal number.  Absent, or not a plain file, it is no series."""
    client, events = mzcd.client(), mzcd.subscriber("")
    c = cid("ld")
    client.ok("create", id=c, bundle=bundle(args=SLEEP))
    client.ok("exec", id=c, pid="e1", args=["sleep", "1000"], env=["PATH=/bin"])
    assert ("zcd_process_log_dropped_bytes_total" not in
            {n for (n, _) in samples(op_text(client))})
    (process_dir(mzcd.state_dir, c) / "log-dropped").write_text("12345\n")
    secret = tmp_path / "secret"
    secret.write_text("777\n")
    os.symlink(secret, process_dir(mzcd.state_dir, c, "e1") / "log-dropped")
    s = samples(op_text(client))
    assert value(s, "zcd_process_log_dropped_bytes_total", id=c, pid="init") == 12345
    assert value(s, "zcd_process_log_dropped_bytes_total", id=c, pid="e1") is None
    kill_all(client, events, c)


@needs_promtool
def test_a_caller_sees_its_own_containers_only(zcd_factory, runtime, bundle, token):
    """Daemon-wide counters count everything (a documented limit), but a
    caller that is not root gets no series of root's containers."""
    name, uid, gid = ensure_test_user()
    d = zcd_factory(runtime=runtime, args=["--group", "zcd"], start=False)
    os.chmod(d.state_dir, 0o711)
    d.start()
    root, events = d.client(), d.subscriber("")
    theirs = f"r-{token}"
    root.ok("create", id=theirs, bundle=bundle(args=SLEEP))
    proxy = CallerProxy(uid, gid, os.getgrouplist(name, gid))
    try:
        reply = proxy.call(d.cmd_ep, "metrics", format="prometheus")
        assert reply["ok"] is True, reply
        promtool_clean(reply["text"], "a caller's text")
        mine = samples(reply["text"])
        assert value(mine, "zcd_containers") == 1
        assert ids_in(mine) == set()
        assert_error(proxy.call(d.cmd_ep, "metrics", format="xml"), "invalid_argument",
                     "format")
    finally:
        proxy.close()
    assert theirs in ids_in(samples(op_text(root)))
    kill_all(root, events, theirs)


# --------------------------------------------------------------------------
# the op's key, the flag


def test_format_is_checked(hzcd):
    client = hzcd.client()
    assert_error(client.call("metrics", format="xml"), "invalid_argument", "format")
    assert_error(client.call("metrics", format=5), "invalid_argument", "format")
    assert_error(client.call("metrics", format=""), "invalid_argument", "format")
    assert isinstance(client.ok("metrics", format="prometheus")["text"], str)


def test_bad_metrics_listen_is_a_clear_startup_error(tmp_path):
    out = subprocess.run([str(ZCD), "--help"], capture_output=True, text=True, timeout=10)
    assert "--metrics-listen ADDR:PORT" in out.stdout
    state = tempfile.mkdtemp(prefix="zcd-it-", dir="/tmp")
    try:
        for bad in ("localhost:9100", "127.0.0.1:0", "127.0.0.1:99999", "[::1", "nine"):
            r = subprocess.run([str(ZCD), "--state-dir", state, "--metrics-listen", bad],
                               capture_output=True, text=True, timeout=10)
            assert r.returncode == 2 and "--metrics-listen" in r.stderr, (bad, r)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            r = subprocess.run([str(ZCD), "--state-dir", state, "--metrics-listen",
                                f"127.0.0.1:{port}"], capture_output=True, text=True,
                               timeout=30)
        assert r.returncode == 1 and "bind" in r.stderr and "in use" in r.stderr, r
    finally:
        shutil.rmtree(state, ignore_errors=True)


# --------------------------------------------------------------------------
# hostile HTTP clients


def test_other_paths_and_methods(hzcd):
    port = hzcd.port
    for path in ("/", "/metric", "/metrics/", "/metricsx", "/../metrics", "/x" * 300):
        assert http_get(port, path)[0] == 404, path
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"):
        status, headers, _ = http_get(port, method=method, body=b"x" * 10)
        assert status == 405 and headers.get("Allow") == "GET, HEAD", (method, status)
    assert http_get(port, body=b"abc")[0] == 400  # a GET with a body
    status, headers, body = http_get(port, method="HEAD")
    assert status == 200 and body == ""
    # a request line or headers past the per-connection memory
    assert http_get(port, "/metrics?" + "a" * 40000)[0] in (414, 431)
    assert http_get(port, headers={"X-Big": "b" * 40000})[0] in (413, 431)
    # one connection, several scrapes (keep-alive)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(3):
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        assert r.status == 200 and b"zcd_containers" in r.read()
    conn.close()
    # counted, and still one thread of ours
    s = samples(scrape(port))
    assert value(s, "zcd_metrics_http_responses_total", code="404") >= 6
    assert value(s, "zcd_metrics_http_responses_total", code="405") >= 6
    assert hzcd.client().ok("version")


def test_idle_connections_do_not_stop_a_scrape_and_time_out(hzcd):
    port, client = hzcd.port, hzcd.client()
    threads_before = threads(hzcd)
    fds_before = client.ok("metrics")["open_fds"]
    # one client: as many connections as it may have, and more; one that
    # sends half a request line; none of them ever finishes
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    idle[0].sendall(b"GET /metr")
    t0 = time.monotonic()
    # others are served meanwhile: from another address at once, and over
    # the command socket
    text = scrape(port, source="127.0.0.2")
    assert "zcd_metrics_http_connections" in text
    assert time.monotonic() - t0 < 2
    assert value(samples(text), "zcd_metrics_http_connections") <= 64 + 1
    assert client.ok("metrics")["open_fds"] <= fds_before + 64 + 2
    assert threads(hzcd) == threads_before

    def closed(sock):
        sock.settimeout(IDLE_TIMEOUT + 5)
        try:
            return sock.recv(1) == b""
        except ConnectionResetError:
            return True
    # every one is closed: at once past the per-address limit, the rest
    # once idle for the timeout
    assert all(closed(s) for s in idle)
    waited = time.monotonic() - t0
    assert IDLE_TIMEOUT - 1 <= waited <= IDLE_TIMEOUT + 4, waited
    for s in idle:
        s.close()
    assert scrape(port)
    assert threads(hzcd) == threads_before
    wait_for(lambda: client.ok("metrics")["open_fds"] <= fds_before + 2,
             what="the connections' fds to be closed")


def test_many_idle_connections_below_the_limit(hzcd):
    """Idle connections of the same address as the scraper, below its
    limit: the one loop serves the scrape all the same."""
    idle = [socket.create_connection(("127.0.0.1", hzcd.port)) for _ in range(40)]
    try:
        t0 = time.monotonic()
        for _ in range(3):
            assert "zcd_uptime_seconds" in scrape(hzcd.port)
        assert time.monotonic() - t0 < 3
    finally:
        for s in idle:
            s.close()


def test_a_scraper_that_leaves_early(hzcd):
    """Clients that hang up before, during and right after their request."""
    port = hzcd.port
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(10)
    for junk in (b"\x00\xff garbage \r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n",
                 b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                 b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(junk)
    assert scrape(port)
    assert hzcd.client().ok("version")


def _hammer(port, stop, replies):
    """Scrape over and over, two pipelined on each connection, without
    waiting long for the answers."""
    req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(req)
                s.settimeout(0.2)
                if s.recv(16).startswith(b"HTTP/1.1 "):
                    replies.append(1)
        except OSError:
            pass


def test_shutdown_while_scrapes_arrive(hzcd):
    """SIGTERM while scrapes keep arriving: those that wait, and those the
    last turn of the HTTP server reads, must not stop the daemon from
    exiting cleanly (libmicrohttpd aborts the process when stopped with a
    connection still suspended)."""
    stop, replies = threading.Event(), []
    workers = [threading.Thread(target=_hammer, args=(hzcd.port, stop, replies))
               for _ in range(16)]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: len(replies) >= 50, what="scrapes to be answered")
        code = hzcd.stop()
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert code == 0, hzcd.log_tail(10)
