"""Slow and stalled clients for the protocol fuzzer (issue 14).

Helpers for tests/fuzz/protocol_fuzz.py's slow-client invariants:

  flood-rss      the daemon's VmRSS stays under baseline + FLOOD_SLACK while
                 a client floods it with requests and never reads a reply
  flood-version  a well-behaved client's `version` answers within 1 s
                 during such a flood
  drop-log       once a flood went past the per-client bounds, the daemon's
                 log says that client is "not reading its replies"
  stall-cpu      with clients whose `events` replays are stalled (they never
                 read) and nothing else going on, the daemon uses < 5 % of a
                 core
  stall-version  ... and still answers `version` within 1 s

This module only measures (/proc, its own sockets); the fuzzer decides when
and reports the failures."""

import json
import os
import signal
import subprocess
import sys
import time

import msgpack
import zmq

MIB = 1 << 20
FLOOD_SLACK = 64 * MIB          # what a non-reading client may add to the RSS
VERSION_BOUND_S = 1.0           # a well-behaved client's `version`
STALL_CPU_MAX = 0.05            # share of one core while replays are stalled
DROP_TEXT = "not reading its replies"   # core/edge_peer.c, s_dropping()
CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss(pid):
    """VmRSS of pid in bytes, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _stat_cpu(path):
    with open(path) as f:
        data = f.read()
    head, tail = data.rsplit(")", 1)
    fields = tail.split()
    return head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid):
    """utime + stime of the whole process (every thread), or None."""
    try:
        return _stat_cpu(f"/proc/{pid}/stat")[1]
    except (OSError, IndexError, ValueError):
        return None


def thread_cpu(pid):
    """{"tid comm": cpu seconds} for every thread of pid."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            comm, cpu = _stat_cpu(f"/proc/{pid}/task/{tid}/stat")
        except (OSError, IndexError, ValueError):
            continue
        out[f"{tid} {comm}"] = cpu
    return out


def thread_cpu_diff(before, after, seconds):
    """'tid comm: N %' for the threads that used CPU between two thread_cpu()."""
    rows = []
    for k, v in after.items():
        d = v - before.get(k, 0.0)
        if d > 0:
            rows.append((d, k))
    rows.sort(reverse=True)
    return ", ".join(f"{k}: {100 * d / seconds:.1f} %" for d, k in rows[:8]) or "none"


def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def log_since(path, offset):
    """The daemon log's text from byte offset on."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def drop_lines(text, name=None):
    """Log lines saying a client is not reading its replies (that client's
    only, given its name `ipc/<hex routing id>`)."""
    return [line for line in text.splitlines()
            if DROP_TEXT in line and (name is None or f"client {name}:" in line)]


def dealer(ctx, endpoint, routing_id=None, rcvhwm=1, sndhwm=0):
    """A DEALER that takes at most `rcvhwm` replies before the application
    reads them; an unbounded send queue, so a burst never blocks."""
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, rcvhwm)
    s.setsockopt(zmq.SNDHWM, sndhwm)
    if routing_id is not None:
        s.setsockopt(zmq.ROUTING_ID, routing_id)
    s.connect(endpoint)
    return s


def watch(pid, endpoint, stop, ready=lambda: None):
    """While a flood runs: sample pid's VmRSS every 10 ms and, on a DEALER of
    our own (a well-behaved client: one request in flight, every reply
    read), time a `version` round trip every 50 ms, until stop() is true.
    Calls ready() once it has the first sample.  Returns the figures (a
    dict)."""
    out = {"peak": 0, "peak_at": 0.0, "samples": 0, "gone": False, "probes": 0,
           "worst": 0.0, "late": [], "bad": [], "error": None}
    ctx = zmq.Context()
    sock = dealer(ctx, endpoint, rcvhwm=1000, sndhwm=1000)
    t0 = time.monotonic()
    late = out["late"]          # [s after the flood began, round trip or None: none came]
    try:
        outstanding = None      # [rid, sent at, index in late once late]
        next_probe = t0
        n = 0
        while not stop():
            now = time.monotonic()
            r = rss(pid)
            if r is None:
                out["gone"] = True
                break
            out["samples"] += 1
            if out["samples"] == 1:
                ready()
            if r > out["peak"]:
                out["peak"], out["peak_at"] = r, now - t0
            if outstanding is None and now >= next_probe:
                n += 1
                sock.send(msgpack.packb({"op": "version", "rid": n}))
                outstanding = [n, now, None]
                out["probes"] += 1
            if sock.poll(10):
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        reply = msgpack.unpackb(frames[-1], raw=False)
                    except Exception:  # noqa: BLE001
                        out["bad"].append(repr(frames[-1][:80]))
                        continue
                    if not isinstance(reply, dict) or reply.get("ok") is not True:
                        out["bad"].append(repr(reply)[:200])
                    if outstanding and isinstance(reply, dict) \
                            and reply.get("rid") == outstanding[0]:
                        t = time.monotonic()
                        dt = t - outstanding[1]
                        out["worst"] = max(out["worst"], dt)
                        if dt > VERSION_BOUND_S:
                            if outstanding[2] is None:
                                late.append([outstanding[1] - t0, dt])
                            else:
                                late[outstanding[2]][1] = dt
                        outstanding = None
                        next_probe = t + 0.05
            if outstanding and outstanding[2] is None \
                    and time.monotonic() - outstanding[1] > VERSION_BOUND_S:
                # no reply within the bound: flagged now, its round trip
                # filled in if it comes before the flood ends
                outstanding[2] = len(late)
                late.append([outstanding[1] - t0, None])
    except Exception as e:  # noqa: BLE001
        out["error"] = repr(e)
    finally:
        sock.close(0)
        ctx.term()
    return out


class FloodWatch:
    """watch() in a process of its own (the fuzzer's own work, holding
    Python's GIL, must not count in the round trips it times):
    start() returns once it is sampling; stop() ends it and sets the
    figures as attributes (peak, peak_at, samples, gone, probes, late, bad,
    error; worst())."""

    def __init__(self, pid, endpoint):
        self.pid = pid
        self.endpoint = endpoint
        self.proc = None
        self.peak, self.peak_at, self.samples, self.gone = 0, 0.0, 0, False
        self.probes, self._worst, self.late, self.bad, self.error = 0, 0.0, [], [], None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "watch",
                                      str(self.pid), self.endpoint],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()      # "ready" (or nothing: it failed)
        if line.strip() != "ready":
            self.error = f"the watcher did not start: {line!r}"

    def stop(self):
        if self.proc is None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            data, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            data, _ = self.proc.communicate()
            self.error = "the watcher did not stop within 20 s"
        self.proc = None
        try:
            out = json.loads(data.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.error = self.error or f"no figures from the watcher: {data[-300:]!r}"
            return
        self.peak, self.peak_at = out["peak"], out["peak_at"]
        self.samples, self.gone, self.probes = out["samples"], out["gone"], out["probes"]
        self._worst, self.late, self.bad = out["worst"], out["late"], out["bad"]
        self.error = self.error or out["error"]

    def worst(self):
        return self._worst


def _watch_main(pid, endpoint):
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    out = watch(int(pid), endpoint, lambda: bool(stopping),
                lambda: print("ready", flush=True))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "watch":
        _watch_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: pf_slow.py watch PID ENDPOINT")
