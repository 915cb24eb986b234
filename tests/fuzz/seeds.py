#!/usr/bin/python3
"""Write the fuzzer's seed corpus and dictionary.

    seeds.py CORPUS_DIR DICT_FILE

Seeds are a few valid requests per op plus near misses; the dictionary holds
every op and key name of schema/protocol.json, so the fuzzer can reach the
validator's deep branches without guessing names byte by byte.
"""
import json
import os
import sys

import msgpack

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SEEDS = [
    {"op": "version"},
    {"op": "version", "rid": 1, "v": 1},
    {"op": "create", "rid": "c1", "id": "web1", "bundle": "/b", "stdin": "/dev/null",
     "labels": ["x"], "runtime": "runc", "runtime_args": ["--debug"], "no_pivot_root": True,
     "checkpoint": "cp1", "checkpoint_dir": "/cp"},
    {"op": "exec", "id": "web1", "pid": "p1", "args": ["sh", "-c", "true"], "env": ["A=1"],
     "cwd": "/", "terminal": True, "user": {"uid": 0, "gid": 0, "additional_gids": [1, 2]},
     "capabilities": ["CAP_KILL"], "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}],
     "no_new_privileges": True, "apparmor_profile": "a", "selinux_label": "s",
     "stdout": "/tmp/o", "stderr": "/tmp/e"},
    {"op": "signal", "id": "web1", "pid": "init", "signal": 9, "all": False},
    {"op": "signal", "id": "web1", "signal": -1},
    {"op": "update", "id": "web1", "status": "paused",
     "resources": {"cpu_shares": 2, "cpuset_cpus": "0", "memory_limit": 1 << 30}},
    {"op": "update_process", "id": "w", "pid": "p", "close_stdin": True, "width": 80, "height": 25},
    {"op": "checkpoint_create", "id": "w",
     "checkpoint": {"name": "c", "exit": True, "tcp": False, "empty_ns": ["network"]}},
    {"op": "checkpoint_list", "id": "w"},
    {"op": "checkpoint_delete", "checkpoint_dir": "/cp", "name": "c"},
    {"op": "state", "id": "w", "rid": [1, {"a": None}]},
    {"op": "stats", "ids": ["a", "b"]},
    {"op": "events", "since": -1, "since_seq": 5, "id": "w"},
    {"op": "metrics", "rid": b"\x00\x01"},
    {"op": "nope", "v": 2},
    [1, 2, 3],
]


def main(corpus, dict_path):
    os.makedirs(corpus, exist_ok=True)
    for i, seed in enumerate(SEEDS):
        with open(os.path.join(corpus, "seed-%02d" % i), "wb") as f:
            f.write(msgpack.packb(seed, use_bin_type=True))
    with open(os.path.join(ROOT, "schema", "protocol.json")) as f:
        model = json.load(f)
    words = set(["init", "rid", "op", "v", "ok"])

    def keys(ks):
        for k in ks:
            words.add(k["name"])
            words.update(k.get("enum", []))
            keys(k.get("fields", []))

    for op in model["ops"]:
        words.add(op["name"])
        keys(op["keys"])
    with open(dict_path, "w") as f:
        for w in sorted(words):
            # a msgpack fixstr (or str8) header followed by the name
            enc = msgpack.packb(w)
            f.write('"%s"\n' % "".join("\\x%02x" % b for b in enc))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
