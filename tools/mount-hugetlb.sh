#!/bin/sh
# crun 1.8 refuses hybrid cgroup hosts (v1 controllers plus a cgroup2 mount)
# unless hugetlb has a v1 hierarchy, as systemd sets up. Mount one if the host
# is v1/hybrid and it is missing. Does nothing on a pure v2 host, and prints
# nothing when the mount is already there.
set -eu

CG=/sys/fs/cgroup
# Pure cgroup v2: /sys/fs/cgroup itself is the unified hierarchy.
if [ "$(stat -f -c %T "$CG" 2>/dev/null)" = "cgroup2fs" ]; then
    exit 0
fi
# The kernel has no hugetlb controller: nothing crun could want.
if ! grep -q '^hugetlb[[:space:]]' /proc/cgroups 2>/dev/null; then
    exit 0
fi
if mountpoint -q "$CG/hugetlb" 2>/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "mount-hugetlb: need root to mount $CG/hugetlb (crun needs it on this host)" >&2
    exit 1
fi
mkdir -p "$CG/hugetlb"
mount -t cgroup -o hugetlb cgroup "$CG/hugetlb"
