"""python3 -m zcd --node FILE [--on NAME[,NAME]] [--json] COMMAND: the
fan-out client from the command line, as `zctr --node` (docs/fanout.md).

Commands: version | state | list | start ID BUNDLE [--label L]... |
kill ID [--signal N] [--all] | events [--since-seq N] [--count N] [--id ID].
start and kill need --on (NAME,NAME or all)."""
import argparse
import json
import signal
import sys

from . import SINCE_NOW, FanOut, NodeFileError


def _print_results(args, results):
    failed = 0
    if args.json:
        print(json.dumps({n: r.reply if r.reply is not None else
                          {"ok": False, "error": {"code": "timeout", "message": r.error}}
                          for n, r in results.items()}), flush=True)
    for name, r in results.items():
        if not r.ok:
            failed += 1
            print(f"zcd: {name}: {r.error}", file=sys.stderr)
        elif not args.json:
            yield name, r.reply
    return failed


def _report(args, results, show):
    gen = _print_results(args, results)
    while True:
        try:
            name, reply = next(gen)
        except StopIteration as stop:
            return 1 if stop.value else 0
        show(name, reply)


def _targets(args, needs_on):
    if not args.on:
        if needs_on:
            raise SystemExit("zcd: this command needs --on NAME[,NAME] (or --on all)")
        return None
    names = [n for arg in args.on for n in arg.split(",") if n]
    return None if "all" in names else names


def _events(fo, args):
    fo.set_since(SINCE_NOW if args.since_seq is None else args.since_seq)
    only = _targets(args, False)
    seen = 0
    shown = {}
    while args.count is None or seen < args.count:
        e = fo.next_event(1000)
        for name in fo.names:  # a node's trouble on stderr, once per change
            err = fo.node_state(name)["error"]
            if err != shown.get(name, "") and err:
                print(f"zcd: {name}: {err}", file=sys.stderr, flush=True)
            shown[name] = err
        if e is None or (only and e.node not in only) or (args.id and e.event.get("id") != args.id):
            continue
        if args.json:
            print(json.dumps({"node": e.node, "boot_id": e.boot_id, "seq": e.seq,
                              "event": e.event}), flush=True)
        else:
            ev = e.event
            extra = " ".join(f"{k}={ev[k]}" for k in ("pid", "system_pid", "status") if k in ev)
            print(f"{e.node} {e.seq} {ev.get('ts', 0)} {ev.get('type')} {ev.get('id') or '-'} "
                  f"{extra} boot={e.boot_id[:8]}", flush=True)
        seen += 1
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m zcd", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--node", required=True, help="node file (docs/fanout.md)")
    p.add_argument("--client-cert", help="this client's czmq certificate")
    p.add_argument("--on", action="append", help="nodes: NAME[,NAME] or all")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=int, default=30000, help="ms")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("version")
    sub.add_parser("state").add_argument("id", nargs="?")
    sub.add_parser("list")
    s = sub.add_parser("start")
    s.add_argument("id")
    s.add_argument("bundle")
    s.add_argument("--label", action="append")
    k = sub.add_parser("kill")
    k.add_argument("id")
    k.add_argument("--signal", type=int, default=15)
    k.add_argument("--all", action="store_true")
    e = sub.add_parser("events")
    e.add_argument("--since-seq", type=int)
    e.add_argument("--count", type=int)
    e.add_argument("--id")
    args = p.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        fo = FanOut(args.node, client_cert=args.client_cert, timeout_ms=args.timeout)
    except NodeFileError as err:
        print(f"zcd: {err}", file=sys.stderr)
        return 1
    try:
        if args.cmd == "events":
            return _events(fo, args)
        if args.cmd == "version":
            return _report(args, fo.request("version", _targets(args, False)),
                           lambda n, r: print(f"{n}: zcd {r['major']}.{r['minor']}.{r['patch']}"))
        if args.cmd == "state":
            keys = {"id": args.id} if args.id else {}
            return _report(args, fo.request("state", _targets(args, False), **keys),
                           lambda n, r: print(f"{n}: {json.dumps(r)}"))
        if args.cmd == "list":
            if not args.json:
                print(f"{'NODE':12} {'ID':24} {'STATUS':8} BUNDLE")
            return _report(args, fo.request("state", _targets(args, False)),
                           lambda n, r: [print(f"{n:12} {c['id']:24} {c['status']:8} {c['bundle']}")
                                         for c in r["containers"]])
        if args.cmd == "start":
            keys = {"labels": args.label} if args.label else {}
            return _report(args, fo.request("create", _targets(args, True), id=args.id,
                                            bundle=args.bundle, **keys),
                           lambda n, r: print(f"{n}: ok"))
        if args.cmd == "kill":
            return _report(args, fo.request("signal", _targets(args, True), id=args.id,
                                            signal=args.signal, all=args.all),
                           lambda n, r: print(f"{n}: ok"))
    except ValueError as err:
        print(f"zcd: {err}", file=sys.stderr)
        return 2
    finally:
        fo.close()
    return 2


if __name__ == "__main__":
    sys.exit(main())
