"""Files, bundles, cgroups and clean-up for the protocol fuzzer.

The canary tree holds files the daemon must never change whatever a client
asks: regular files, a FIFO, directories, symlinks (to a file, a directory,
a FIFO, /dev/zero, nowhere), and broken bundles (config.json a FIFO, a
directory, a symlink, a 1 GiB sparse file, invalid JSON).  snapshot() records
it; diff() names what changed."""

import hashlib
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"


# --------------------------------------------------------------------------
# canary tree


class Canary:
    def __init__(self, root, good_config):
        self.root = Path(root)
        self.paths = {}          # role -> absolute path (str)
        self._build(good_config)
        self.base = self.snapshot(hashes=True)

    def _p(self, role, rel):
        p = self.root / rel
        self.paths[role] = str(p)
        return p

    def _build(self, good_config):
        r = self.root
        r.mkdir(parents=True)
        self._p("file", "file.txt").write_text("canary: must never change\n" * 50)
        self._p("empty", "empty").write_bytes(b"")
        self._p("ro_file", "ro.txt").write_text("read-only canary\n")
        os.chmod(r / "ro.txt", 0o444)
        self._p("exec_file", "script.sh").write_text("#!/bin/sh\necho must-not-run >&2\nexit 3\n")
        os.mkfifo(self._p("fifo", "fifo"))
        d = self._p("dir", "dir")
        d.mkdir()
        (d / "inner.txt").write_text("inner canary\n")
        (d / "sub").mkdir()
        (d / "sub" / "deep.txt").write_text("deep canary\n")
        os.symlink("file.txt", self._p("link_file", "link-file"))
        os.symlink(str(r / "file.txt"), self._p("link_abs_file", "link-abs-file"))
        os.symlink("dir", self._p("link_dir", "link-dir"))
        os.symlink("fifo", self._p("link_fifo", "link-fifo"))
        os.symlink("/dev/zero", self._p("link_zero", "link-zero"))
        os.symlink("nowhere/at/all", self._p("dangling", "dangling"))
        # following this one creates canary/made-through-a-link
        os.symlink("made-through-a-link", self._p("dangling_new", "dangling-new"))
        os.symlink("link-loop", self._p("link_loop", "link-loop"))
        # checkpoint dirs without zcd's marker: never listed, never deleted
        ck = self._p("ckdir", "ckdir")
        ck.mkdir()
        for name in ("cp1", "cp2", "init", "events.log"):
            (ck / name).mkdir()
            (ck / name / "dump.img").write_bytes(b"\0" * 64)
        (ck / "plainfile").write_text("not a checkpoint\n")
        os.symlink("../dir", ck / "linked")
        os.symlink("ckdir", self._p("link_ckdir", "link-ckdir"))
        # broken bundles
        b = r / "bundles"
        b.mkdir()
        self.paths["bundle_parent"] = str(b)

        def bundle(name, make):
            bd = b / name
            bd.mkdir()
            make(bd / "config.json")
            self.paths["bundle_" + name] = str(bd)

        bundle("fifo", lambda p: os.mkfifo(p))
        bundle("dir", lambda p: p.mkdir())
        bundle("link", lambda p: os.symlink(good_config, p))
        bundle("zero", lambda p: os.symlink("/dev/zero", p))
        bundle("dangling", lambda p: os.symlink("nowhere", p))

        def sparse(p):
            with open(p, "wb") as f:
                f.truncate(1 << 30)
        bundle("sparse", sparse)
        bundle("badjson", lambda p: p.write_text('{"ociVersion": "1.0.2", "process": '))
        bundle("nonutf8", lambda p: p.write_bytes(b'{"ociVersion": "1.0.2\xff\xfe", "root": {"path": "\xc0"}}'))
        bundle("array", lambda p: p.write_text("[1, 2, 3]"))
        bundle("empty", lambda p: p.write_bytes(b""))

        def deep(p):
            p.write_text("[" * 100000 + "]" * 100000)
        bundle("deep", deep)

        def badseccomp(p):
            cfg = json.loads(Path(good_config).read_text())
            cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                       "syscalls": [{"names": ["no_such_syscall_zcd"],
                                                     "action": "SCMP_ACT_ERRNO"}]}
            p.write_text(json.dumps(cfg))
        bundle("badseccomp", badseccomp)

        def noroot(p):
            cfg = json.loads(Path(good_config).read_text())
            cfg["root"]["path"] = str(r / "no-such-rootfs")
            p.write_text(json.dumps(cfg))
        bundle("noroot", noroot)
        os.mkdir(b / "noconfig")
        self.paths["bundle_noconfig"] = str(b / "noconfig")

    def snapshot(self, hashes):
        """{relpath: (type, mode, uid, gid, size, mtime_ns, ctime_ns, ino, extra)}"""
        out = {}
        root = str(self.root)
        stack = [root]
        while stack:
            top = stack.pop()
            try:
                names = sorted(os.listdir(top))
            except OSError as e:
                out[os.path.relpath(top, root) + "/"] = ("unreadable", str(e))
                continue
            for name in names:
                p = os.path.join(top, name)
                try:
                    st = os.lstat(p)
                except OSError as e:
                    out[os.path.relpath(p, root)] = ("gone", str(e))
                    continue
                kind = stat.S_IFMT(st.st_mode)
                extra = None
                if stat.S_ISLNK(st.st_mode):
                    extra = os.readlink(p)
                elif stat.S_ISDIR(st.st_mode):
                    stack.append(p)
                elif stat.S_ISREG(st.st_mode) and hashes and st.st_size <= (1 << 20):
                    try:
                        with open(p, "rb", buffering=0) as f:
                            extra = hashlib.sha256(f.read()).hexdigest()
                    except OSError as e:
                        extra = f"unreadable: {e}"
                out[os.path.relpath(p, root)] = (kind, st.st_mode, st.st_uid, st.st_gid,
                                                 st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                                 st.st_ino, extra)
        return out

    def diff(self, hashes=False):
        """A list of human-readable differences from the recorded tree."""
        now = self.snapshot(hashes)
        diffs = []
        for k in sorted(set(self.base) | set(now)):
            a, b = self.base.get(k), now.get(k)
            if a is None:
                diffs.append(f"new: {k} {b}")
            elif b is None:
                diffs.append(f"removed: {k}")
            else:
                fields = ("type", "mode", "uid", "gid", "size", "mtime", "ctime", "ino",
                          "hash/target")
                for i, name in enumerate(fields):
                    if i == 8 and (a[i] is None or b[i] is None):
                        continue
                    if i >= len(a) or i >= len(b) or a[i] != b[i]:
                        diffs.append(f"changed: {k} {name} {a[i] if i < len(a) else '?'}"
                                     f" -> {b[i] if i < len(b) else '?'}")
                        break
        return diffs


# --------------------------------------------------------------------------
# the daemon's own files


def own_files_problems(state_dir):
    """The daemon's own files must keep their type (a socket stays a socket,
    the log a regular file, nothing becomes a symlink)."""
    problems = []
    want = {"zcd.sock": stat.S_ISSOCK, "events.sock": stat.S_ISSOCK,
            "zcd.lock": stat.S_ISREG, "events.log": stat.S_ISREG}
    for name, ok in want.items():
        p = os.path.join(state_dir, name)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            if name == "events.log":
                continue        # may not be written yet
            problems.append(f"{p} is missing")
            continue
        if not ok(st.st_mode):
            problems.append(f"{p} has type {oct(stat.S_IFMT(st.st_mode))}")
    for name in (".trash", ".broken", "containers"):
        p = os.path.join(state_dir, name)
        if os.path.lexists(p) and not stat.S_ISDIR(os.lstat(p).st_mode):
            problems.append(f"{p} is not a directory")
    return problems


# --------------------------------------------------------------------------
# cgroups


def _mounts():
    v1 = {}
    v2 = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fstype, _, superopts = right.split()[:3]
            mp = left.split()[4]
            if fstype == "cgroup":
                for opt in superopts.split(","):
                    v1.setdefault(opt, mp)
            elif fstype == "cgroup2" and v2 is None:
                v2 = mp
    return v1, v2


_MOUNTS = None


def mounts():
    global _MOUNTS
    if _MOUNTS is None:
        _MOUNTS = _mounts()
    return _MOUNTS


def freezer_of(pid):
    """(file, "FROZEN"|"THAWED"|"FREEZING") for host pid's freezer cgroup, or
    None when the process is gone.  cgroup v1 freezer.state, else v2
    cgroup.freeze ("1" = FROZEN)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    v1, v2 = mounts()
    rel1 = rel2 = None
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if "freezer" in ctrls.split(","):
            rel1 = path
        if ctrls == "" and line.startswith("0::"):
            rel2 = path
    try:
        if rel1 is not None and "freezer" in v1:
            p = v1["freezer"] + rel1 + "/freezer.state"
            with open(p) as f:
                return p, f.read().strip()
        if rel2 is not None and v2 is not None:
            p = v2 + rel2 + "/cgroup.freeze"
            with open(p) as f:
                return p, "FROZEN" if f.read().strip() == "1" else "THAWED"
    except OSError:
        return None
    return None


def cgroup_dirs_with_prefix(prefix):
    """Every cgroup directory (v1 hierarchies and v2) named /<prefix>*."""
    v1, v2 = mounts()
    found = []
    for mp in set(list(v1.values()) + ([v2] if v2 else [])):
        try:
            names = os.listdir(mp)
        except OSError:
            continue
        for n in names:
            if n.startswith(prefix):
                found.append(os.path.join(mp, n))
    return found


def remove_cgroup_tree(path):
    """Thaw, kill and rmdir a cgroup tree that this run made."""
    for top, dirs, _ in os.walk(path, topdown=False):
        for name in ("freezer.state",):
            p = os.path.join(top, name)
            if os.path.exists(p):
                try:
                    with open(p, "w") as f:
                        f.write("THAWED")
                except OSError:
                    pass
        try:
            with open(os.path.join(top, "cgroup.procs")) as f:
                for pid in f.read().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except OSError:
                        pass
        except OSError:
            pass
    for _ in range(50):
        left = False
        for top, dirs, _ in os.walk(path, topdown=False):
            try:
                os.rmdir(top)
            except OSError:
                left = True
        if not left:
            return
        time.sleep(0.05)


# --------------------------------------------------------------------------
# runtime leftovers


def runtime_entries(runtime, root):
    """[(id, bundle, pid, status)] from `<runtime> --root root list --format json`."""
    try:
        out = subprocess.run([runtime, "--root", root, "list", "--format", "json"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    try:
        data = json.loads(out.stdout or "null") or []
    except ValueError:
        return []
    return [(e.get("id"), e.get("bundle") or "", e.get("pid"), e.get("status"))
            for e in data if isinstance(e, dict)]


def force_delete(runtime, root, cid):
    for argv in ([runtime, "--root", root, "resume", cid],
                 [runtime, "--root", root, "kill", cid, "KILL"],
                 [runtime, "--root", root, "delete", "--force", cid]):
        try:
            subprocess.run(argv, capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass


def processes_with_cwd_under(path):
    prefix = str(path).rstrip("/") + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if (cwd + "/").startswith(prefix):
            found.append(int(entry))
    return found
