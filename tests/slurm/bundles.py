"""Busybox OCI bundles for the Slurm cluster test (tests/slurm/), in the
shape slurmstepd wants: the root filesystem at <bundle>/rootfs."""

import json
import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = Path("/bin/busybox")


def make_rootfs(root):
    """A busybox root filesystem: the static binary and one link per applet."""
    root = Path(root)
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for name in applets:
        if name != "busybox" and not (root / "bin" / name).exists():
            os.symlink("busybox", root / "bin" / name)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")
    (root / "tmp").chmod(0o1777)


_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "nodev", "mode=1777"]},
]
_MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
           "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
           "/proc/sched_debug", "/proc/scsi", "/sys/firmware"]
_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def bundle_config(rootless_uid=None, rootless_gid=None, hostname="slurmbox"):
    """An OCI config for a busybox bundle.  Slurm replaces process.args (the
    srun command), process.terminal and root.path (<bundle>/rootfs).

    rootless_uid: the `runc spec --rootless` shape for a job of that user: a
    user namespace mapping container root to the user, no network namespace,
    /sys bound from the host, no cgroup resources."""
    mounts = [dict(m) for m in _MOUNTS]
    namespaces = [{"type": t} for t in ["pid", "ipc", "uts", "mount"]]
    linux = {"namespaces": namespaces, "maskedPaths": list(_MASKED),
             "readonlyPaths": list(_READONLY)}
    if rootless_uid is None:
        namespaces.append({"type": "network"})
        mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["nosuid", "noexec", "nodev", "ro"]})
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    else:
        namespaces.append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": rootless_uid, "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": rootless_gid, "size": 1}]
        mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME=/root"],
            "cwd": "/",
            "capabilities": {k: list(_CAPS) for k in
                             ["bounding", "effective", "permitted", "ambient"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }


def make_bundle(path, rootless_uid=None, rootless_gid=None, owner=None):
    """A bundle directory at path (rootfs/ and config.json), readable by all.
    owner=(uid, gid) hands it to that user (a rootless job's own bundle)."""
    path = Path(path)
    make_rootfs(path / "rootfs")
    cfg = bundle_config(rootless_uid, rootless_gid)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    path.chmod(0o755)
    if owner is not None:
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                os.lchown(name, *owner)
    return str(path)
