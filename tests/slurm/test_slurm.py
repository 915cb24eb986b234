"""Slurm 22.05 runs containers through zcd: `srun --container=BUNDLE` on a
three-node cluster (tests/slurm/cluster.py) whose oci.conf runs zcd-oci
against each node's own zcd daemon.

Needs root, Slurm (slurmctld, slurmd, slurm-client, munge: `make deps`),
$ZCD_BUILD/zcd and zcd-oci.  Every wait has a deadline; no timing is
asserted.
"""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

import cluster as C  # noqa: E402
from testuser import ensure_test_user  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the Slurm cluster needs root"),
    pytest.mark.skipif(any(C.shutil.which(t) is None
                           for t in ("slurmctld", "slurmd", "srun", "munged")),
                       reason="Slurm or munge is not installed (make deps)"),
]

_names = itertools.count(1)


def wait_for(cond, timeout=30.0, what="condition"):
    value = C.wait_until(cond, timeout)
    if not value:
        pytest.fail(f"timed out after {timeout}s waiting for {what}")
    return value


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = C.Cluster("zcd")
    if not os.access(c.zcd_oci, os.X_OK):
        pytest.skip(f"{c.zcd_oci} is not built")
    try:
        c.start()
    except RuntimeError as e:
        pytest.fail(f"the cluster did not start: {e}")
    c.bundle = C.make_bundle(c.tmp / "bundle")
    yield c
    forced = c.stop()
    assert not forced, f"clean-up found leftovers: {forced}"


@pytest.fixture(scope="module")
def user(cluster):
    """zcdtest (group zcd) and a rootless bundle of its own."""
    name, uid, gid = ensure_test_user()
    bundle = C.make_bundle(cluster.tmp / "bundle-user", rootless_uid=uid,
                           rootless_gid=gid, owner=(uid, gid))
    return {"name": name, "uid": uid, "gid": gid, "bundle": bundle}


def job_name():
    return f"zt{os.getpid()}x{next(_names)}"


def srun(cluster, args, user=None, timeout=60):
    """srun -v (it then names the job on stderr); (result, job id)."""
    name = job_name()
    res = cluster.srun(["-v", f"--job-name={name}"] + list(args), user=user, timeout=timeout)
    job = None
    for line in res.stderr.splitlines():
        if "jobid" in line:
            tail = line.split("jobid", 1)[1].strip(" :=")
            digits = "".join(itertools.takewhile(str.isdigit, tail))
            if digits:
                job = int(digits)
                break
    assert job is not None, f"no job id in srun's output:\n{res.stderr}"
    return res, job


def stdout_lines(res):
    return sorted(line for line in res.stdout.splitlines() if line.strip())


def cids(job, user="root"):
    return {node: f"{node}.{user}.{job}.0.0" for node in C.NODES}


def node_events(cluster, node, cid):
    return C.zcd_events(cluster.zcd_endpoint(node), cid)


def assert_started_and_exited_on(cluster, node, cid):
    """The start and exit events of cid in node's zcd event log."""
    def seen():
        evs = node_events(cluster, node, cid)
        types = [e["type"] for e in evs]
        return evs if "start-container" in types and "exit" in types else None
    evs = wait_for(seen, 20, f"start and exit of {cid} in {node}'s event log")
    types = [e["type"] for e in evs]
    assert types.index("start-container") < types.index("exit"), evs
    return evs


def assert_started_and_exited(cluster, job, status, user="root"):
    for node, cid in cids(job, user).items():
        def seen():
            evs = node_events(cluster, node, cid)
            types = [e["type"] for e in evs]
            return evs if "start-container" in types and "exit" in types else None
        evs = wait_for(seen, 20, f"start and exit of {cid} in {node}'s event log")
        types = [e["type"] for e in evs]
        assert types.index("start-container") < types.index("exit"), evs
        exits = [e for e in evs if e["type"] == "exit" and e.get("pid") == "init"]
        assert len(exits) == 1, evs
        assert exits[0]["status"] == status, evs


def shims_of(cluster, ids=None):
    """zcd-shim processes working in any node's zcd state dir (only those
    of the containers `ids`, when given)."""
    found = []
    for node in C.NODES:
        for pid in C.pids_with_cwd_under(cluster.zcd_dir(node)):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if comm != "zcd-shim" or C._is_zombie(pid):
                continue
            if ids is None or any(cid.encode() in argv for cid in ids):
                found.append((node, pid))
    return found


def cgroup_dirs_named(names):
    """Cgroup directories (any v1 hierarchy, or v2) named like a container."""
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        depth = top.count("/") - 3
        for d in dirs:
            if d in names:
                found.append(os.path.join(top, d))
        if depth >= 4:
            dirs[:] = []
    return found


def leftovers(cluster, job, user="root"):
    ids = set(cids(job, user).values())
    left = []
    for node, cid in cids(job, user).items():
        if cid in C.zcd_container_ids(cluster.zcd_endpoint(node)):
            left.append(f"zcd still has {cid}")
    left += [f"shim pid {pid} on {node}" for node, pid in shims_of(cluster, ids)]
    left += [f"runc state {cid}" for cid in C.runc_list("/run/runc") if cid in ids]
    left += [f"cgroup {d}" for d in cgroup_dirs_named(ids)]
    return left


def assert_no_leftovers(cluster, job, user="root", timeout=15):
    if not C.wait_until(lambda: not leftovers(cluster, job, user), timeout):
        pytest.fail(f"left behind by job {job}: {leftovers(cluster, job, user)}")


def start_background(cluster, args, user=None):
    """srun in the background; (Popen, job name)."""
    name = job_name()
    argv = ["srun", f"--job-name={name}"] + list(args)
    preexec = None
    if user is not None:
        uid, gid = user
        groups = os.getgrouplist(C.pwd.getpwuid(uid).pw_name, gid)

        def preexec():
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
    proc = subprocess.Popen(argv, env=cluster.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd="/",
                            preexec_fn=preexec)
    return proc, name


def job_id_of(cluster, name):
    def find():
        res = C.run(["squeue", "-h", "-o", "%i", "-n", name], check=False, env=cluster.env())
        return int(res.stdout.split()[0]) if res.stdout.split() else None
    return wait_for(find, 30, f"job {name} in squeue")


def finish(proc, timeout=60):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"srun did not end within {timeout}s:\n{err}")
    return proc.returncode, out, err


# --------------------------------------------------------------------------
# as root


def test_hostname_runs_on_all_three_nodes(cluster):
    res, job = srun(cluster, ["-N3", "-l", f"--container={cluster.bundle}", "hostname"])
    assert res.returncode == 0, res.stderr
    # The bundle's hostname, once from each task: inside a container, on n1..n3.
    assert stdout_lines(res) == ["0: slurmbox", "1: slurmbox", "2: slurmbox"], res.stdout
    assert_started_and_exited(cluster, job, 0)
    assert_no_leftovers(cluster, job)


def test_exit_code_comes_back(cluster):
    res, job = srun(cluster, ["-N3", f"--container={cluster.bundle}", "sh", "-c", "exit 7"])
    assert res.returncode == 7, res.stderr
    # Every node's zcd saw its container start and exit with that status.
    assert_started_and_exited(cluster, job, 7)
    assert_no_leftovers(cluster, job)
    res, _ = srun(cluster, ["-N3", f"--container={cluster.bundle}", "true"])
    assert res.returncode == 0, res.stderr


def test_scancel_leaves_nothing_behind(cluster):
    proc, name = start_background(cluster, ["-N3", f"--container={cluster.bundle}",
                                            "sleep", "1000"])
    try:
        job = job_id_of(cluster, name)
        ids = cids(job)
        wait_for(lambda: all(ids[n] in C.zcd_container_ids(cluster.zcd_endpoint(n))
                             for n in C.NODES), 30, "the step's container on every node")
        # Each node's zcd runs its container under a shim.
        assert {n for n, _ in shims_of(cluster, ids.values())} == set(C.NODES)
        C.run(["scancel", str(job)], env=cluster.env())
        rc, _, err = finish(proc)
        assert rc != 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_no_leftovers(cluster, job)
    # Each node's event log shows the container's start and its exit (killed).
    for node, cid in ids.items():
        evs = node_events(cluster, node, cid)
        types = [e["type"] for e in evs]
        assert "start-container" in types and "exit" in types, evs
        exit_ev = [e for e in evs if e["type"] == "exit"][0]
        assert exit_ev["status"] >= 128, evs


def test_scancel_signal_reaches_container_once(cluster):
    # The shell waits in `wait`, which a trapped signal interrupts at once, so
    # every delivery runs the trap (none merges with the next).  USR2 is a
    # marker sent the same way: a second USR1 (the process group getting it
    # besides the runtime forwarding it) would print before the marker.
    # The USR2 trap also shows the background child was spared (a signal to
    # the step's process tree would kill it: USR1's default action).
    script = ("n=0; trap 'n=$((n+1)); echo usr1 $n' USR1; "
              "trap 'kill -0 $s && echo usr2 child-alive' USR2; "
              "trap 'echo term; exit 0' TERM; sleep 1000 & s=$!; echo ready; "
              "while :; do wait $s; done")
    proc, name = start_background(cluster, ["-N1", "-w", "n2",
                                            f"--container={cluster.bundle}",
                                            "sh", "-c", script])
    try:
        job = job_id_of(cluster, name)
        assert proc.stdout.readline().strip() == "ready"
        C.run(["scancel", "--signal=USR1", str(job)], env=cluster.env())
        assert proc.stdout.readline().strip() == "usr1 1"
        C.run(["scancel", "--signal=USR2", str(job)], env=cluster.env())
        assert proc.stdout.readline().strip() == "usr2 child-alive"
        C.run(["scancel", str(job)], env=cluster.env())
        rc, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "usr1" not in out, out
    cid = cids(job)["n2"]
    assert_started_and_exited_on(cluster, "n2", cid)
    assert_no_leftovers(cluster, job)


def test_rank_workaround_gives_each_container_its_node_and_rank(cluster):
    # Slurm's copy of config.json has no per-task variables; oci-rank-env in
    # RunTimeRun adds them from %n and the step's node list.
    res, _ = srun(cluster, ["-N3", "-l", f"--container={cluster.bundle}", "sh", "-c",
                            "echo ${SLURMD_NODENAME:-none} ${SLURM_PROCID:-none}"])
    assert res.returncode == 0, res.stderr
    assert stdout_lines(res) == ["0: none none", "1: none none", "2: none none"], res.stdout
    cluster.set_runtime("zcd", rank_env=True)
    try:
        res, _ = srun(cluster, ["-N3", "-l", f"--container={cluster.bundle}", "sh", "-c",
                                "echo $SLURMD_NODENAME $SLURM_NODEID $SLURM_PROCID"])
    finally:
        cluster.set_runtime("zcd")
    assert res.returncode == 0, res.stderr
    assert stdout_lines(res) == ["0: n1 0 0", "1: n2 1 1", "2: n3 2 2"], res.stdout


# --------------------------------------------------------------------------
# as an unprivileged user, with a rootless bundle


def test_user_hostname_runs_on_all_three_nodes(cluster, user):
    res, job = srun(cluster, ["-N3", "-l", f"--container={user['bundle']}", "hostname"],
                    user=(user["uid"], user["gid"]))
    assert res.returncode == 0, res.stderr
    assert stdout_lines(res) == ["0: slurmbox", "1: slurmbox", "2: slurmbox"], res.stdout
    assert_started_and_exited(cluster, job, 0, user=user["name"])


def test_user_exit_code_and_identity(cluster, user):
    # Container root is the user: uid 0 inside, the user's uid outside.
    res, job = srun(cluster, ["-N3", "-l", f"--container={user['bundle']}",
                              "sh", "-c", "id -u; exit 7"],
                    user=(user["uid"], user["gid"]))
    assert res.returncode == 7, res.stderr
    assert stdout_lines(res) == ["0: 0", "1: 0", "2: 0"], res.stdout
    assert_started_and_exited(cluster, job, 7, user=user["name"])


def test_user_scancel_leaves_nothing_behind(cluster, user):
    proc, name = start_background(cluster, ["-N3", f"--container={user['bundle']}",
                                            "sleep", "1000"],
                                  user=(user["uid"], user["gid"]))
    job = None
    try:
        job = job_id_of(cluster, name)
        ids = cids(job, user["name"])
        wait_for(lambda: all(ids[n] in C.zcd_container_ids(cluster.zcd_endpoint(n))
                             for n in C.NODES), 30, "the step's container on every node")
        C.run(["scancel", str(job)], env=cluster.env())
        rc, _, err = finish(proc)
        assert rc != 0, err
        assert_no_leftovers(cluster, job, user["name"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # What a failure leaves must not fail the module's clean-up check,
        # which runs after another test.
        for node, cid in (cids(job, user["name"]) if job else {}).items():
            if cid in C.zcd_container_ids(cluster.zcd_endpoint(node)):
                C.zcd_kill(cluster.zcd_endpoint(node), cid)
