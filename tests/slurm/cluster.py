"""A throw-away Slurm 22.05 cluster on one machine: slurmctld in the root
network namespace on a bridge, and three nodes n1..n3, each a network
namespace with its own slurmd and (in zcd mode) its own zcd daemon.

Nothing system-wide is used or changed: munged runs with its own key,
socket, pid, log and seed files; Slurm reads its own slurm.conf (SLURM_CONF)
with oci.conf beside it; every spool, state, log and pid path is under one
temporary directory.  The only names outside it are the bridge `zsbr0`, the
namespaces `zs1`..`zs3` (10.231.2.0/24, controller .254) and, in zcd mode,
the runc state zcd's runtime keeps in /run/runc under ids that start with
the node name.  stop() removes all of it, and start() removes what a killed
earlier run left under those names first.

The runtime in oci.conf is one of:
  runc  plain `runc run` (run mode), its state under <tmp>/runc-<node>
  zcd   zcd-oci talking to the node's zcd (ipc://<tmp>/zcd-<node>/zcd.sock)

By hand (as root):  /usr/bin/python3 tests/slurm/cluster.py [--runtime zcd]
brings the cluster up, prints the environment to use, and waits for Ctrl-C
(the bundles it runs come from bundles.py).
"""

import argparse
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bundles import bundle_config, make_bundle, make_rootfs  # noqa: F401 (used as C.make_bundle)

REPO = Path(__file__).resolve().parents[2]
BRIDGE = "zsbr0"
SUBNET = "10.231.2"
CTL_IP = f"{SUBNET}.254"
NODES = ["n1", "n2", "n3"]
CTLD_PORT = 16817
SLURMD_PORT = 16818
RUNTIMES = ("runc", "zcd")
RANK_ENV = Path(__file__).resolve().parent / "oci-rank-env"


def _build_dir():
    """$ZCD_BUILD (the tests' name), else $BUILD (the benches'), else build."""
    p = Path(os.environ.get("ZCD_BUILD") or os.environ.get("BUILD") or "build")
    return p if p.is_absolute() else REPO / p


def zcd_binary():
    return _build_dir() / "zcd"


def zcd_oci_binary():
    """$ZCD_OCI, else zcd-oci beside the zcd under test, else build-oci's."""
    if os.environ.get("ZCD_OCI"):
        return Path(os.environ["ZCD_OCI"]).resolve()
    for p in (_build_dir() / "zcd-oci", REPO / "build-oci" / "zcd-oci"):
        if p.exists():
            return p
    return _build_dir() / "zcd-oci"


def run(argv, check=True, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 60)
    res = subprocess.run(argv, **kw)
    if check and res.returncode != 0:
        raise RuntimeError(f"{argv!r} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def ns_name(node):
    return "zs" + node[1:]


def node_ip(node):
    return f"{SUBNET}.{node[1:]}"


def netns_inode(name):
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except FileNotFoundError:
        return None


def pids_in_netns(inode):
    """Host pids whose network namespace is the one with this inode."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                found.append(int(entry))
        except OSError:
            continue
    return found


def pids_with_cwd_under(path):
    found = []
    prefix = str(path).rstrip("/") + "/"
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


def kill_pids(pids, sig=signal.SIGKILL):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_until(cond, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
        interval = min(interval * 2, 0.5)


# --------------------------------------------------------------------------
# the cluster


class Cluster:
    def __init__(self, runtime="runc", zcd=None, zcd_oci=None, base=None,
                 with_zcd=None, log=lambda msg: None):
        assert runtime in RUNTIMES
        self.runtime = runtime
        # The zcd daemons run when oci.conf starts on zcd, or when asked
        # (the bench switches oci.conf between runtimes on one cluster).
        self.with_zcd = runtime == "zcd" if with_zcd is None else with_zcd
        self.zcd = Path(zcd or zcd_binary()).resolve()
        self.zcd_oci = Path(zcd_oci or zcd_oci_binary()).resolve()
        self.base = base
        self.log = log
        self.tmp = None
        self.procs = {}          # name -> Popen (munged, slurmctld, slurmd-n1, zcd-n1, ...)
        self.logs = []
        self.netns_inodes = {}
        self.first_job_id = random.randrange(1_000_000, 60_000_000)

    # -- paths --------------------------------------------------------------

    @property
    def conf(self):
        return self.tmp / "etc" / "slurm.conf"

    def zcd_dir(self, node):
        return self.tmp / f"zcd-{node}"

    def zcd_endpoint(self, node):
        return f"ipc://{self.zcd_dir(node)}/zcd.sock"

    def zcd_events_endpoint(self, node):
        return f"ipc://{self.zcd_dir(node)}/events.sock"

    def runc_root(self, node):
        return self.tmp / f"runc-{node}"

    def env(self, extra=None):
        """The environment for Slurm clients (srun, scancel, squeue)."""
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "SLURM_CONF": str(self.conf), "LANG": "C"}
        env.update(extra or {})
        return env

    # -- start --------------------------------------------------------------

    def start(self, timeout=60):
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout):
        if os.geteuid() != 0:
            raise RuntimeError("the Slurm cluster harness needs root")
        for tool in ("slurmctld", "slurmd", "srun", "munged", "nsenter", "ip"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed (make deps)")
        if self.with_zcd:
            for b in (self.zcd, self.zcd_oci):
                if not os.access(b, os.X_OK):
                    raise RuntimeError(f"{b} is not built")
        remove_stale()
        self.tmp = Path(tempfile.mkdtemp(prefix="zcd-slurm.", dir=self.base))
        # The job's user (also zcdtest) reads bundles and reaches sockets here.
        self.tmp.chmod(0o755)
        self._start_munge()
        self._start_network()
        self._write_conf()
        if self.with_zcd:
            for node in NODES:
                self._start_zcd(node)
        self._start_slurmctld()
        for node in NODES:
            self._start_slurmd(node)
        self._wait_nodes_idle(timeout)

    def _spawn(self, name, argv, env=None):
        logf = open(self.tmp / "log" / f"{name}.out", "ab")
        self.logs.append(logf)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def _start_munge(self):
        (self.tmp / "log").mkdir(mode=0o755)
        mdir = self.tmp / "munge"
        # munged wants every directory on its socket's path searchable by all
        # and its key readable by root only.
        mdir.mkdir(mode=0o755)
        (mdir / "key").mkdir(mode=0o700)
        key = mdir / "key" / "munge.key"
        run(["mungekey", "--create", f"--keyfile={key}"])
        self.munge_socket = mdir / "munge.socket"
        self._spawn("munged", [
            "munged", "--foreground", f"--key-file={key}",
            f"--socket={self.munge_socket}", f"--pid-file={mdir}/munged.pid",
            f"--log-file={self.tmp}/log/munged.log", f"--seed-file={mdir}/munged.seed"])
        if not wait_until(lambda: self.munge_socket.exists(), 10):
            raise RuntimeError("munged did not create its socket:\n" + self.tail("munged"))

    def _start_network(self):
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{CTL_IP}/24", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])
        for node in NODES:
            ns = ns_name(node)
            veth = "zsv" + node[1:]
            run(["ip", "netns", "add", ns])
            self.netns_inodes[node] = netns_inode(ns)
            run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                 "netns", ns])
            run(["ip", "link", "set", veth, "master", BRIDGE, "up"])
            run(["ip", "-n", ns, "addr", "add", f"{node_ip(node)}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def oci_conf_text(self, runtime=None, rank_env=False):
        """oci.conf for runtime; rank_env puts tests/slurm/oci-rank-env in
        front of RunTimeRun (the container then sees its node and rank)."""
        runtime = runtime or self.runtime
        cid = "%n.%u.%j.%s.%t"
        wrap = f"{RANK_ENV} %n %b " if rank_env else ""
        if runtime == "runc":
            # %n keeps each node's runc state apart, as separate machines would.
            rc = f"runc --root {self.tmp}/runc-%n"
            return "\n".join([
                "# written by tests/slurm/cluster.py: plain runc, run mode",
                f'RunTimeQuery="exec {rc} state {cid}"',
                f'RunTimeRun="exec {wrap}{rc} run --bundle %b {cid}"',
                f'RunTimeKill="exec {rc} kill --all {cid} SIGTERM"',
                f'RunTimeDelete="exec {rc} delete --force {cid}"',
                ""])
        # zcd-oci's records (create/start mode only, ZCD_OCI_STATE_DIR) and
        # the FIFOs `run` relays stdio through (TMPDIR) stay in our directory.
        oci = (f"env ZCD_ADDRESS=ipc://{self.tmp}/zcd-%n/zcd.sock "
               f"ZCD_OCI_STATE_DIR={self.tmp}/zcd-oci-state TMPDIR={self.tmp}/zcd-oci-tmp "
               f"{self.zcd_oci}")
        return "\n".join([
            "# written by tests/slurm/cluster.py: zcd-oci against each node's zcd",
            f'RunTimeQuery="exec {oci} state {cid}"',
            f'RunTimeRun="exec {wrap}{oci} run --bundle %b {cid}"',
            f'RunTimeKill="exec {oci} kill -a {cid}"',
            f'RunTimeDelete="exec {oci} delete --force {cid}"',
            ""])

    def _write_conf(self):
        t = self.tmp
        (t / "etc").mkdir(mode=0o755)
        (t / "ctld").mkdir(mode=0o700)
        for node in NODES:
            (t / node).mkdir(mode=0o755)
            (t / node / "spool").mkdir(mode=0o755)
        host = socket.gethostname().split(".")[0]
        lines = [
            "# written by tests/slurm/cluster.py",
            "ClusterName=zcdtest",
            f"SlurmctldHost={host}({CTL_IP})",
            f"SlurmctldPort={CTLD_PORT}",
            f"SlurmdPort={SLURMD_PORT}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={t}/ctld/state",
            f"SlurmctldPidFile={t}/ctld/slurmctld.pid",
            f"SlurmctldLogFile={t}/log/slurmctld.log",
            f"SlurmdSpoolDir={t}/%n/spool",
            f"SlurmdPidFile={t}/%n/slurmd.pid",
            f"SlurmdLogFile={t}/log/slurmd-%n.log",
            f"PlugStackConfig={t}/etc/plugstack.conf",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/pgid",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "KillWait=5",
            "MinJobAge=5",
            "InactiveLimit=0",
            f"FirstJobId={self.first_job_id}",
        ]
        for node in NODES:
            lines.append(f"NodeName={node} NodeAddr={node_ip(node)} CPUs=2 State=UNKNOWN")
        lines.append(f"PartitionName=zcd Nodes={','.join(NODES)} Default=YES "
                     "MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        (t / "etc" / "plugstack.conf").write_text("")
        self.set_runtime(self.runtime)
        for d in ("zcd-oci-state", "zcd-oci-tmp"):
            (t / d).mkdir(mode=0o1777)
            (t / d).chmod(0o1777)
        for node in NODES:
            # Jobs run runc as their own user: the state dir is theirs to write.
            self.runc_root(node).mkdir(mode=0o1777)
            self.runc_root(node).chmod(0o1777)

    def set_runtime(self, runtime, rank_env=False):
        """Point oci.conf at `runtime`.  slurmstepd reads oci.conf at every
        step, so the next step uses it."""
        assert runtime in RUNTIMES
        self.runtime = runtime
        path = self.tmp / "etc" / "oci.conf"
        tmp = path.with_suffix(".new")
        tmp.write_text(self.oci_conf_text(runtime, rank_env))
        tmp.chmod(0o644)
        os.replace(tmp, path)

    def _nsenter(self, node):
        return ["nsenter", f"--net=/run/netns/{ns_name(node)}", "--"]

    def _start_zcd(self, node):
        d = self.zcd_dir(node)
        self._spawn(f"zcd-{node}", self._nsenter(node) + [
            str(self.zcd), "--state-dir", str(d), "--runtime", "runc",
            "--group", "zcd", "--log-level", "info"])
        sock = d / "zcd.sock"
        if not wait_until(lambda: sock.exists() or self.procs[f"zcd-{node}"].poll() is not None, 15) \
                or not sock.exists():
            raise RuntimeError(f"zcd on {node} did not start:\n" + self.tail(f"zcd-{node}"))

    def _start_slurmctld(self):
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-i"], env=self.env())

    def _start_slurmd(self, node):
        self._spawn(f"slurmd-{node}", self._nsenter(node) + [
            "slurmd", "-D", "-N", node], env=self.env())

    def _wait_nodes_idle(self, timeout):
        def idle():
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}:\n" + self.tail(name))
            res = run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False, env=self.env())
            states = dict(line.split() for line in res.stdout.splitlines() if line.strip())
            return all(states.get(n) == "idle" for n in NODES)
        if not wait_until(idle, timeout, interval=0.2):
            raise RuntimeError("nodes did not become idle:\n"
                               + run(["sinfo", "-N"], check=False, env=self.env()).stdout
                               + "\n".join(self.tail(n) for n in self.procs))

    # -- use ----------------------------------------------------------------

    def srun(self, args, user=None, timeout=60, env=None, **kw):
        """Run `srun ARGS` (as `user`, a (uid, gid) pair, when given)."""
        return self.client(["srun"] + list(args), user=user, timeout=timeout, env=env, **kw)

    def client(self, argv, user=None, timeout=60, env=None, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        preexec = None
        if user is not None:
            uid, gid = user
            groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)

            def preexec():
                os.setgroups(groups)
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
        return subprocess.run(argv, env=self.env(env), preexec_fn=preexec,
                              timeout=timeout, cwd="/", **kw)

    def tail(self, name, n=40):
        for p in (self.tmp / "log" / f"{name}.log", self.tmp / "log" / f"{name}.out"):
            try:
                lines = p.read_text(errors="replace").splitlines()
            except (FileNotFoundError, TypeError):
                continue
            if lines:
                return f"--- {p.name}\n" + "\n".join(lines[-n:])
        return f"--- {name}: no log"

    def jobs(self):
        res = run(["squeue", "-h", "-o", "%i"], check=False, env=self.env())
        return res.stdout.split()

    # -- stop ---------------------------------------------------------------

    def stop(self):
        """Tear everything down; safe to call twice and after a failed start.
        Returns a list of what had to be killed by force (empty = clean)."""
        forced = []
        if self.tmp is None:
            return forced
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            jobs = self.jobs()
            if jobs:
                run(["scancel"] + jobs, check=False, env=self.env())
                wait_until(lambda: not self.jobs(), 15, interval=0.2)
        if self.with_zcd:
            for node in NODES:
                forced += self._zcd_kill_all(node)
        for name in [n for n in self.procs if n.startswith("slurmd-")] + ["slurmctld"]:
            self._terminate(name)
        for name in [n for n in self.procs if n.startswith("zcd-")]:
            self._terminate(name)
        forced += self._kill_leftovers()
        self._terminate("munged")
        for logf in self.logs:
            logf.close()
        self.logs = []
        remove_network()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None
        return forced

    def _terminate(self, name, timeout=10):
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def _zcd_kill_all(self, node):
        """Containers still in the node's zcd: SIGKILL them and wait until
        zcd has seen them go (its shims then remove the runtime state)."""
        p = self.procs.get(f"zcd-{node}")
        if p is None or p.poll() is not None:
            return []
        ids = zcd_container_ids(self.zcd_endpoint(node))
        for cid in ids:
            zcd_kill(self.zcd_endpoint(node), cid)
        wait_until(lambda: not zcd_container_ids(self.zcd_endpoint(node)), 15)
        return [f"zcd container {cid} on {node}" for cid in ids]

    def _kill_leftovers(self):
        forced = []
        # runc state: ours under <tmp>/runc-*, zcd's (runc's default root)
        # under ids that start with a node name.
        for node in NODES:
            for root in (str(self.runc_root(node)), "/run/runc"):
                for cid in runc_list(root):
                    if root == "/run/runc" and not cid.startswith(node + "."):
                        continue
                    forced.append(f"runc container {cid} ({root})")
                    run(["runc", "--root", root, "kill", "--all", cid, "KILL"], check=False)
                    run(["runc", "--root", root, "delete", "--force", cid], check=False)
        # Anything still in a node's namespace (slurmstepd, runtimes, shims)
        # or running in one of our directories.
        for _ in range(50):
            pids = []
            for inode in self.netns_inodes.values():
                if inode is not None:
                    pids += pids_in_netns(inode)
            pids += [p for p in pids_with_cwd_under(self.tmp) if p != os.getpid()]
            pids = [p for p in pids if not _is_zombie(p)]
            if not pids:
                break
            forced += [f"process {p} {_cmdline(p)}" for p in pids]
            kill_pids(pids)
            time.sleep(0.1)
        return forced


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return "?"


def _is_zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def runc_list(root):
    if not os.path.isdir(root):
        return []
    res = run(["runc", "--root", root, "list", "-q"], check=False)
    return res.stdout.split()


def remove_network():
    for node in NODES:
        ns = ns_name(node)
        inode = netns_inode(ns)
        if inode is not None:
            kill_pids(pids_in_netns(inode))
            run(["ip", "netns", "del", ns], check=False)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "del", BRIDGE], check=False)


def remove_stale():
    """What an earlier run killed before its clean-up left behind: the
    namespaces and bridge by their names, and zcd's runc state for our ids."""
    remove_network()
    for cid in runc_list("/run/runc"):
        if any(cid.startswith(n + ".") and cid.count(".") == 4 for n in NODES):
            run(["runc", "kill", "--all", cid, "KILL"], check=False)
            run(["runc", "delete", "--force", cid], check=False)


# --------------------------------------------------------------------------
# a minimal zcd client (pyzmq + msgpack), for clean-up and the tests


def zcd_call(endpoint, op, timeout=10.0, **keys):
    """(partials, final) of one request."""
    import msgpack
    import zmq
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        body = dict(op=op, rid=1, **keys)
        sock.send(msgpack.packb(body, use_bin_type=True))
        partials = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000)):
                raise TimeoutError(f"zcd {op} at {endpoint}: no reply in {timeout}s")
            reply = msgpack.unpackb(sock.recv_multipart()[-1], raw=False,
                                    strict_map_key=False)
            if "ok" in reply:
                return partials, reply
            partials.append(reply)
    finally:
        sock.close(0)


def zcd_kill(endpoint, cid):
    """SIGKILL every process of cid; failing that (runc cannot signal all the
    processes of a rootless container that has no cgroup), its init: the
    rest of a pid namespace dies with it."""
    _, reply = zcd_call(endpoint, "signal", id=cid, pid="init", signal=9, all=True)
    if reply.get("ok") is not True:
        zcd_call(endpoint, "signal", id=cid, pid="init", signal=9)


def zcd_container_ids(endpoint):
    try:
        _, reply = zcd_call(endpoint, "state", timeout=5)
    except TimeoutError:
        return []
    return [c["id"] for c in reply.get("containers", [])]


def zcd_events(endpoint, cid=None):
    keys = {"id": cid} if cid else {}
    partials, final = zcd_call(endpoint, "events", **keys)
    assert final.get("ok") is True, final
    return [p["event"] for p in partials]


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", choices=["runc", "zcd"], default="runc")
    ap.add_argument("--run", help="run this shell command with SLURM_CONF set, then stop")
    args = ap.parse_args()
    c = Cluster(args.runtime, log=print)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    try:
        c.start()
        bundle = make_bundle(c.tmp / "bundle")
        print(f"cluster up: SLURM_CONF={c.conf}  bundle={bundle}")
        if args.run:
            res = subprocess.run(["sh", "-c", args.run], env=c.env({"B": bundle}))
            return res.returncode
        print("Ctrl-C to stop")
        while not stop["flag"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        forced = c.stop()
        if forced:
            print("clean-up had to force:", *forced, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
