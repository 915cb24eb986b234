"""zctr for people (issue 12 part 3): aligned tables with units, `--json`
the daemon's reply as is, `stats --watch` redrawn in place on a terminal
and one table per interval elsewhere, one readable line per event, bash
completion, and help that lists every flag the parser takes.

Against real daemons and containers; every wait is for what it needs."""

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from conftest import REPO, ZCTR, read_text, wait_for

COMPLETION = REPO / "tools" / "zctr" / "zctr.bash"
SLEEP = ["sleep", "1000"]
BUSY = ["sh", "-c", "while :; do :; done"]
LIMIT = 48 * 1024 * 1024

SIZE = re.compile(r"^\d+(\.\d+)?(B|KiB|MiB|GiB|TiB)$")
PERCENT = re.compile(r"^\d+\.\d%$")
DURATION = re.compile(r"^(\d+s|\d+m\d\ds|\d+h\d\dm|\d+d\d\dh)$")
CPU_TIME = re.compile(r"^(\d+\.\d\ds|\d+m\d\ds|\d+h\d\dm|\d+d\d\dh)$")
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"

# Every command's help topic: (argv after zctr, the usage line's start).
TOPICS = [
    (["version"], "version"), (["state"], "state"), (["metrics"], "metrics"),
    (["stats"], "stats"), (["events"], "events"), (["spec"], "spec"), (["help"], "help"),
    *[(["containers", s], f"containers {s}") for s in
      ["start", "list", "exec", "kill", "pause", "resume", "update", "stats", "watch"]],
    *[(["checkpoints", s], f"checkpoints {s}") for s in ["create", "list", "delete"]],
]
GLOBAL_FLAGS = {"--address", "--events-address", "--json", "--timeout", "--node", "--on",
                "--client-cert", "--help"}


def zctr(zcd, *args, ok=True, timeout=30, cwd=None):
    res = subprocess.run([str(ZCTR), "--address", zcd.cmd_ep, "--events-address", zcd.ev_ep,
                          "--timeout", "20000", *args],
                         capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if ok:
        assert res.returncode == 0, f"zctr {args} exited {res.returncode}: {res.stderr}"
    return res


def table(text, headers):
    """The rows of a table as dicts, after checking that the header is
    `headers` and that every column starts at the same offset on every row
    (two spaces before it, a non-blank first character)."""
    lines = text.rstrip("\n").split("\n")
    assert lines[0].split() == headers, lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    rows = []
    for line in lines[1:]:
        assert line == line.rstrip(), f"trailing blanks: {line!r}"
        for k, at in enumerate(starts):
            assert len(line) > at and line[at] != " ", f"column {headers[k]} not at {at}: {line!r}"
            if k:
                assert line[at - 2:at] == "  ", f"column {headers[k]} not at {at}: {line!r}"
        ends = starts[1:] + [None]
        rows.append({h: line[a:e].rstrip() for h, a, e in zip(headers, starts, ends)})
    return rows


def shape(obj):
    """A reply's structure: keys and types, not the values (which move)."""
    if isinstance(obj, dict):
        return {k: shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [shape(v) for v in obj]
    return type(obj).__name__


def kill_all(client, events, ids):
    for c in ids:
        client.ok("signal", id=c, signal=9)
    for c in ids:
        events.wait_exit(c)
        wait_for(lambda: client.call("state", id=c).get("ok") is False, what=f"{c} to leave")


def init_pid(reply):
    return {p["pid"]: p for p in reply["container"]["processes"]}["init"]["system_pid"]


def complete_many(*cases):
    """COMPREPLY of the completion function for each list of words (the last
    word is the one being completed), as bash would call it; one bash."""
    script = [f"source {COMPLETION}"]
    for words in cases:
        quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
        script.append(f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _zctr; "
                      "printf '%s\\n' \"${COMPREPLY[@]}\"; echo '<end>'")
    res = subprocess.run(["bash", "--norc", "-c", "\n".join(script)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    replies = res.stdout.split("<end>\n")[:-1]
    assert len(replies) == len(cases), res.stdout
    return [[w for w in r.split("\n") if w] for r in replies]


def complete(*words):
    return complete_many(words)[0]


# ---------------------------------------------------------------------------


def test_tables_units_and_json(zcd, client, events, bundle, cid, tmp_path):
    """list, state, stats and checkpoints list: aligned, with units, ids
    as long as the protocol allows whole; --json is the protocol's reply."""
    short, long_id = cid("web"), cid("x" * 50)
    pids = {short: init_pid(client.ok("create", id=short, bundle=bundle(args=SLEEP,
                                                                        memory_limit=LIMIT))),
            long_id: init_pid(client.ok("create", id=long_id, bundle=bundle(args=SLEEP)))}
    client.ok("exec", id=short, pid="e1", args=SLEEP, env=["PATH=/bin"])
    ids = sorted(pids)

    rows = table(zctr(zcd, "containers", "list").stdout,
                 ["ID", "STATUS", "RUNTIME", "PID", "PROCS", "PIDS", "UPTIME", "BUNDLE"])
    assert [r["ID"] for r in rows] == ids
    for r in rows:
        assert r["STATUS"] == "running" and r["RUNTIME"] == zcd.runtime, r
        assert r["PID"] == str(pids[r["ID"]]), r
        assert DURATION.match(r["UPTIME"]), r
        assert r["PROCS"] == ("2" if r["ID"] == short else "1"), r
    assert zctr(zcd, "containers", "list", "--ids").stdout.split("\n") == ids + [""]

    # --json: the reply itself (nothing happens in between: same snapshot)
    reply = client.ok("state")
    for args in (["--json", "containers", "list"], ["state", "--json"]):
        got = json.loads(zctr(zcd, *args).stdout)
        got.pop("rid")
        reply.pop("rid", None)
        assert got == reply
    assert json.loads(zctr(zcd, "--json", "state", short).stdout)["containers"] == \
        client.ok("state", id=short)["containers"]

    # state: each container in detail, its processes as a table
    detail = zctr(zcd, "state", short).stdout
    assert re.match(r"machine: \d+ CPUs, \S+ memory; 1 container; last event #\d+; boot ", detail)
    assert f"\nid:         {short}\n" in detail
    assert re.search(r"\nuptime: +(\S+)\n", detail) and \
        DURATION.match(re.search(r"\nuptime: +(\S+)\n", detail).group(1))
    mem = re.search(r"\nmemory: +(\S+) of 48\.0MiB \((\S+)\)\n", detail)
    assert mem and SIZE.match(mem.group(1)) and PERCENT.match(mem.group(2)), detail
    procs = detail[detail.index("  PROCESS"):]
    prows = table("\n".join(x[2:] for x in procs.rstrip("\n").split("\n")),
                  ["PROCESS", "PID", "TTY", "USER", "CWD", "ARGS"])
    assert [(r["PROCESS"], r["ARGS"]) for r in prows] == [("init", "sleep 1000"),
                                                          ("e1", "sleep 1000")]

    # stats: two samples, CPU% over them; memory with its unit, the limit
    rows = table(zctr(zcd, "stats").stdout,
                 ["ID", "CPU%", "CPU-TIME", "MEMORY", "LIMIT", "MEM%", "PIDS"])
    assert sorted(r["ID"] for r in rows) == ids
    for r in rows:
        assert PERCENT.match(r["CPU%"]) and CPU_TIME.match(r["CPU-TIME"]), r
        assert SIZE.match(r["MEMORY"]), r
    by_id = {r["ID"]: r for r in rows}
    assert by_id[short]["LIMIT"] == "48.0MiB" and PERCENT.match(by_id[short]["MEM%"])
    assert by_id[short]["PIDS"] == "2"
    got = json.loads(zctr(zcd, "--json", "containers", "stats", short).stdout)
    want = client.ok("stats", id=short)
    assert shape(got) == shape(want) and set(got["stats"]) == {short}
    assert got["stats"][short]["memory"]["usage"]["limit"] == LIMIT

    # checkpoints list (an empty directory: the header alone)
    cps = tmp_path / "cps"
    cps.mkdir()
    assert table(zctr(zcd, "checkpoints", "list", "--checkpoint-dir", str(cps)).stdout,
                 ["NAME", "CREATED", "AGE", "EXIT", "TCP", "UNIX", "SHELL", "EMPTY-NS"]) == []
    assert json.loads(zctr(zcd, "checkpoints", "list", "--json", "--checkpoint-dir",
                           str(cps)).stdout)["checkpoints"] == []

    # completion asks this daemon for ids, its endpoint split at ':' by bash
    ep = zcd.cmd_ep.split(":", 1)
    words = [str(ZCTR), "--address", ep[0], ":", ep[1], "containers", "kill"]
    assert complete(*words, "") == ids
    assert complete(*words, short[:4]) == [short]
    assert complete(*words, "--signal", "KI") == ["KILL"]

    # --node: one table, a NODE column; events with their node
    nodes = tmp_path / "nodes"
    nodes.write_text(f"n1 {zcd.cmd_ep} {zcd.ev_ep} -\nnode-two {zcd.cmd_ep} {zcd.ev_ep} -\n")
    rows = table(subprocess.run([str(ZCTR), "--node", str(nodes), "containers", "list"],
                                capture_output=True, text=True, timeout=30, check=True).stdout,
                 ["NODE", "ID", "STATUS", "RUNTIME", "PID", "PROCS", "PIDS", "UPTIME", "BUNDLE"])
    assert sorted((r["NODE"], r["ID"]) for r in rows) == \
        sorted((n, i) for n in ("n1", "node-two") for i in ids)
    res = subprocess.run([str(ZCTR), "--node", str(nodes), "--on", "n1", "events",
                          "--since-seq", "0", "--count", "1"],
                         capture_output=True, text=True, timeout=30, check=True)
    assert re.match(rf"n1  {ISO}\.\d{{3}}Z  #1  start-container  \S+  init  pid=\d+ "
                    r"boot=[0-9a-f-]{8}\n$", res.stdout), res.stdout
    kill_all(client, events, ids)


def test_events_one_line_each(zcd_factory, bundle, cid):
    zcd = zcd_factory(runtime="runc")
    client, events = zcd.client(), zcd.subscriber("")
    c, quick = cid("ev"), cid("quick")
    pid = init_pid(client.ok("create", id=c, bundle=bundle(args=SLEEP)))
    client.ok("update", id=c, status="paused")
    client.ok("update", id=c, status="running")
    client.ok("signal", id=c, signal=9)
    events.wait_exit(c)
    quick_pid = init_pid(client.ok("create", id=quick, bundle=bundle(args=["true"])))
    events.wait_exit(quick)

    lines = zctr(zcd, "events", "--since-seq", "0", "--count", "6").stdout.split("\n")
    assert lines[-1] == "" and len(lines) == 7, lines
    stamp = rf"{ISO}\.\d{{3}}Z"
    want = [
        rf"{stamp}  #1  start-container  {c}  init  pid={pid}",
        rf"{stamp}  #2  pause            {c}",
        rf"{stamp}  #3  resume           {c}",
        rf"{stamp}  #4  exit             {c}  init  (pid={pid} )?status=137",
        rf"{stamp}  #5  start-container  {quick}  init  pid={quick_pid}",
        rf"{stamp}  #6  exit             {quick}  init  (pid={quick_pid} )?status=0",
    ]
    for line, pattern in zip(lines, want):
        assert re.fullmatch(pattern, line), (line, pattern)
    # the same stream for programs: the protocol's Event maps, unchanged
    partials, _ = client.stream("events", since_seq=0)
    replayed = [p["event"] for p in partials]
    got = [json.loads(x) for x in
           zctr(zcd, "--json", "events", "--since-seq", "0", "--count", "6").stdout.splitlines()]
    assert got == replayed[:6]
    # a live one: `containers watch` prints what happens after it started
    live = cid("live")
    watch = subprocess.Popen([str(ZCTR), "--address", zcd.cmd_ep, "--events-address", zcd.ev_ep,
                              "containers", "watch", live, "--since-seq", "4", "--count", "1"],
                             stdout=subprocess.PIPE, text=True)
    try:
        client.ok("create", id=live, bundle=bundle(args=["true"]))
        out, _ = watch.communicate(timeout=20)
    finally:
        watch.kill()
    assert re.fullmatch(rf"{stamp}  #7  start-container  {live}  init  pid=\d+\n", out), out
    events.wait_exit(live)


def read_frames(fd, frames, data, until, deadline):
    """Read the pty into data until until(frames) or the deadline; a frame
    is the text between "cursor home" and "clear below", escapes removed,
    split in lines."""
    while time.monotonic() < deadline:
        if until(frames):
            return True
        r, _, _ = select.select([fd], [], [], 0.1)
        if not r:
            continue
        try:
            chunk = os.read(fd, 65536).decode(errors="replace")
        except OSError:
            return until(frames)
        data.append(chunk)
        text = "".join(data)
        frames[:] = [f.split("\x1b[J")[0].replace("\x1b[2J", "").split("\x1b[K\r\n")[:-1]
                     for f in text.split("\x1b[H")[1:] if "\x1b[J" in f]
    return until(frames)


def test_stats_watch_on_a_terminal(zcd_factory, bundle, cid):
    """In place on a pty, cut to its width, busiest first, containers
    coming and going; SIGINT ends it with 0."""
    zcd = zcd_factory(runtime="runc")
    client, events = zcd.client(), zcd.subscriber("")
    busy, idle, late = cid("busy"), cid("idle-" + "y" * 50), cid("late")
    for c, args in ((busy, BUSY), (idle, SLEEP)):
        client.ok("create", id=c, bundle=bundle(args=args))
    master, slave = pty.openpty()
    cols = 72
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 20, cols, 0, 0))
    proc = subprocess.Popen([str(ZCTR), "--address", zcd.cmd_ep, "stats", "--watch",
                             "--interval", "0.2"],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    frames, data = [], []
    try:
        deadline = time.monotonic() + 20

        def rows(f):
            return [x.split()[0] for x in f[2:]]

        assert read_frames(master, frames, data,
                           lambda fs: len(fs) >= 2 and rows(fs[-1])[:1] == [busy], deadline), \
            "".join(data)[-2000:]
        assert "".join(data).startswith("\x1b[H\x1b[2J")
        for f in frames:
            assert re.match(r"zctr stats  \d\d:\d\d:\d\d  2 containers  every 0\.2s", f[0]), f
            assert f[1].split() == ["ID", "CPU%", "CPU-TIME", "MEMORY", "LIMIT", "MEM%", "PIDS"]
            assert all(len(line) <= cols for line in f), f
        last = frames[-1]
        assert len(last) == 4 and rows(last)[1].endswith("+"), last  # the long id, cut
        assert idle.startswith(rows(last)[1][:-1])
        client.ok("create", id=late, bundle=bundle(args=SLEEP))
        assert read_frames(master, frames, data, lambda fs: late in rows(fs[-1]), deadline)
        client.ok("signal", id=late, signal=9)
        events.wait_exit(late)
        assert read_frames(master, frames, data,
                           lambda fs: late not in rows(fs[-1]) and len(rows(fs[-1])) == 2,
                           deadline)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    kill_all(client, events, [busy, idle])


def test_stats_watch_in_a_pipe(zcd_factory, bundle, cid):
    """Not a terminal: one plain table per interval, a blank line between;
    SIGTERM ends it with 0."""
    zcd = zcd_factory(runtime="crun")
    client, events = zcd.client(), zcd.subscriber("")
    c = cid("piped")
    client.ok("create", id=c, bundle=bundle(args=SLEEP))
    proc = subprocess.Popen([str(ZCTR), "--address", zcd.cmd_ep, "stats", c, "--watch",
                             "--interval", "0.2"], stdout=subprocess.PIPE, text=True)
    try:
        out = ""
        deadline = time.monotonic() + 20
        while out.count("\n\n") < 2 and time.monotonic() < deadline:
            out += proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        out += proc.stdout.read()  # communicate() would skip what readline buffered
    finally:
        proc.kill()
        proc.wait()
    assert "\x1b" not in out
    tables = out.rstrip("\n").split("\n\n")
    assert len(tables) >= 3, out
    for t in tables[:-1]:
        rows = table(t, ["ID", "CPU%", "CPU-TIME", "MEMORY", "LIMIT", "MEM%", "PIDS"])
        assert [r["ID"] for r in rows] == [c] and PERCENT.match(rows[0]["CPU%"]), t
    kill_all(client, events, [c])


def test_start_and_exec_with_a_log(zcd, client, events, bundle, cid, tmp_path):
    """--log P --log-max-bytes 64K --log-max-files 2: ~300 KiB of numbered
    lines end in P and P.1 only, each within 64 KiB, the last line in P;
    P relative to zctr's cwd.  The limits without --log are bad usage;
    exec's output goes to its own log."""
    c, logs = cid("logged"), tmp_path / "logs"
    logs.mkdir()
    last = 1000000 + 3072  # 3072 lines of 100 bytes: 300 KiB
    script = f'seq 1000001 {last} | sed "s/$/ {"x" * 91}/"; exec sleep 1000'
    bad = zctr(zcd, "containers", "start", c, bundle(args=SLEEP), "--log-max-files", "2", ok=False)
    assert bad.returncode == 2 and "--log" in bad.stderr, bad.stderr
    assert client.call("state", id=c).get("ok") is False
    zctr(zcd, "containers", "start", c, bundle(args=["sh", "-c", script]), "--log", "logs/out",
         "--log-max-bytes", "64K", "--log-max-files", "2", cwd=tmp_path)
    out = logs / "out"
    wait_for(lambda: read_text(out).endswith(f"{last} {'x' * 91}\n"), what="the last line in P")
    assert sorted(p.name for p in logs.iterdir()) == ["out", "out.1"]
    for p in (out, logs / "out.1"):
        assert 0 < p.stat().st_size <= 64 * 1024, (p, p.stat().st_size)
    # exec: both streams into its log; its limits are the daemon's defaults
    elog = tmp_path / "exec.log"
    zctr(zcd, "containers", "exec", "--id", c, "--pid", "e1", "--env", "PATH=/bin", "--log",
         str(elog), "--", "sh", "-c", "echo to-stdout; echo to-stderr >&2")
    events.wait_exit(c, "e1")
    assert sorted(elog.read_text().splitlines()) == ["to-stderr", "to-stdout"]
    bad = zctr(zcd, "containers", "exec", "--id", c, "--pid", "e2", "--log-max-bytes", "4K",
               "--", "true", ok=False)
    assert bad.returncode == 2 and "--log" in bad.stderr, bad.stderr
    kill_all(client, events, [c])


# ---- help and completion: no daemon -------------------------------------------------


def help_text(argv):
    res = subprocess.run([str(ZCTR), *argv, "--help"], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, (argv, res.stderr)
    return res.stdout


def flags_of(text):
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))


def test_help_lists_every_flag_the_parser_takes():
    overview = help_text([])
    overview_flags = flags_of(overview)
    # every long option of every command's table is in `zctr --help`
    source = "".join(p.read_text() for p in (REPO / "tools" / "zctr").glob("*.c"))
    declared = {"--" + n for n in re.findall(r'\{ "([a-z-]+)", (?:no|required)_argument', source)}
    assert declared and declared <= overview_flags, declared - overview_flags
    cases, expected = [], []
    for argv, usage in TOPICS:
        text = help_text(argv)
        assert text.startswith(f"usage: zctr {usage}"), (argv, text[:80])
        # the Options lines: "  --flag VALUE  what" or "  --flag  what"
        options = {m.group(1): bool(m.group(2)) for m in
                   re.finditer(r"^  (--[a-z-]+)( [A-Z]\S*)?", text.split("Global options:")[0],
                               re.M)}
        own = set(options)
        assert flags_of(text.split("\n\n")[0]) <= own | GLOBAL_FLAGS, (argv, "synopsis")
        assert own <= overview_flags, (argv, own - overview_flags)
        # the parser takes them all: with --help after them, help, exit 0
        args = [a for flag, value in sorted(options.items()) for a in [flag] + ["1"] * value]
        res = subprocess.run([str(ZCTR), *argv, *args, "--help"], capture_output=True,
                             text=True, timeout=10)
        assert res.returncode == 0 and res.stdout == text, (argv, args, res.stderr)
        expected.append(own | GLOBAL_FLAGS)
        cases.append([str(ZCTR), *argv, "--"])
    # completion offers exactly these (and the global ones)
    for words, got, want in zip(cases, complete_many(*cases), expected):
        assert set(got) == want, words


def test_completion_of_commands_and_paths(tmp_path):
    z = str(ZCTR)
    (tmp_path / "bundle-a").mkdir()
    (tmp_path / "bundle-file").write_text("")
    cases = {
        (z, ""): ["version", "state", "metrics", "stats", "containers", "events", "checkpoints",
                  "spec", "help"],
        (z, "c"): ["containers", "checkpoints"],
        (z, "--json", "containers", ""): ["start", "list", "exec", "kill", "pause", "resume",
                                          "update", "stats", "watch"],
        (z, "c", "st"): ["start", "stats"],
        (z, "checkpoints", ""): ["create", "list", "delete"],
        (z, "checkpoints", "rm", "--c"): ["--checkpoint-dir", "--client-cert"],
        (z, "help", "containers", "e"): ["exec"],
        (z, "containers", "start", "web", str(tmp_path / "bundle-")): [str(tmp_path / "bundle-a")],
        (z, "containers", "create", "--runtime", "c"): ["crun"],
        (z, "--node", str(tmp_path / "bundle-f")): [str(tmp_path / "bundle-file")],
        (z, "stats", "--w"): ["--watch"],
        # exec's ARGS belong to the container: nothing offered
        (z, "containers", "exec", "--id", "x", "--pid", "p", "--", ""): [],
    }
    for words, got in zip(cases, complete_many(*cases)):
        assert got == cases[words], words
