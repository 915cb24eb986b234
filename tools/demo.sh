#!/bin/sh
# make demo: start zcd (or use the one already running), then take a busybox
# container through start, exec, pause, resume and kill while `zctr events`
# prints the events as they come.  Cleans up after itself on any exit.
set -eu

BUILD=${BUILD:-build}
# ZCD_BIN and ZCTR_BIN name other binaries: tests/deb/run drives the installed ones.
ZCD=${ZCD_BIN:-$BUILD/zcd}
ZCTR=${ZCTR_BIN:-$BUILD/zctr}
STATE_DIR=${ZCD_STATE_DIR:-/run/zcd}
RUNTIME=${ZCD_RUNTIME:-runc}
ID="demo-$$"

work=$(mktemp -d /tmp/zcd-demo.XXXXXX)
zcd_pid=""
events_pid=""
created=""

say() { printf '\n== %s\n' "$*"; }

export ZCD_ADDRESS="ipc://$STATE_DIR/zcd.sock"
export ZCD_EVENTS_ADDRESS="ipc://$STATE_DIR/events.sock"

zctr() { "$ZCTR" "$@"; }

cleanup() {
    rc=$?
    trap - EXIT INT TERM
    if [ -n "$created" ]; then
        zctr containers kill "$ID" --signal KILL >/dev/null 2>&1 || true
    fi
    if [ -n "$events_pid" ]; then
        kill "$events_pid" 2>/dev/null || true
        wait "$events_pid" 2>/dev/null || true
    fi
    if [ -n "$zcd_pid" ]; then
        kill -TERM "$zcd_pid" 2>/dev/null || true
        wait "$zcd_pid" 2>/dev/null || true
        echo "zcd stopped"
    fi
    if [ $rc -ne 0 ] && [ -f "$work/zcd.log" ]; then
        echo "demo failed (exit $rc); last lines of the daemon log:" >&2
        tail -n 30 "$work/zcd.log" >&2
    fi
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wait for a command to succeed, up to $1 seconds (no fixed sleeps elsewhere).
wait_until() {
    limit=$1; shift
    end=$(($(date +%s) + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.05
    done
}

for bin in "$ZCD" "$ZCTR"; do
    [ -x "$bin" ] || { echo "demo: $bin is not built (run make)" >&2; exit 1; }
done

say "daemon"
if [ -S "$STATE_DIR/zcd.sock" ] && zctr version >/dev/null 2>&1; then
    echo "zcd is already running on $STATE_DIR: using it"
else
    "$ZCD" --state-dir "$STATE_DIR" --runtime "$RUNTIME" --log-level info \
        >"$work/zcd.log" 2>&1 &
    zcd_pid=$!
    if ! wait_until 10 zctr version; then
        echo "demo: zcd did not answer within 10s" >&2
        exit 1
    fi
    echo "started zcd (pid $zcd_pid, state dir $STATE_DIR, runtime $RUNTIME)"
fi

say "zctr version"
zctr version
say "zctr state"
zctr state

# Containers need a bundle: busybox-static in a root filesystem of its own.
bundle="$work/bundle"
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/proc" "$bundle/rootfs/dev" \
    "$bundle/rootfs/sys" "$bundle/rootfs/tmp" "$bundle/rootfs/etc"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$bundle/rootfs/bin/$applet"
done
cat >"$bundle/config.json" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": ["sh", "-c", "trap 'echo demo: got USR1' USR1; while :; do sleep 1 & wait; done"],
    "env": ["PATH=/bin", "TERM=xterm"],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_KILL", "CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_KILL", "CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE"],
      "permitted": ["CAP_KILL", "CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    "noNewPrivileges": true
  },
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "zcd-demo",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
  ],
  "linux": {
    "resources": {"devices": [{"allow": false, "access": "rwm"}],
                  "memory": {"limit": 67108864}},
    "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                   {"type": "uts"}, {"type": "mount"}],
    "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
    "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"]
  }
}
JSON

say "zctr events (in the background: events print as they come)"
"$ZCTR" events --id "$ID" &
events_pid=$!

out="$work/demo.out"
say "start a busybox container: $ID"
zctr containers start "$ID" "$bundle" --stdout "$out"
created=1
zctr state "$ID"

say "exec: echo hello from an exec"
zctr containers exec --id "$ID" --pid hello --env PATH=/bin --stdout "$out" -- echo "hello from an exec"
wait_until 10 grep -q "hello from an exec" "$out"
cat "$out"

say "pause, then resume"
zctr containers pause "$ID"
zctr state "$ID"
zctr containers resume "$ID"

say "signal USR1 (the container's shell traps it)"
zctr containers kill "$ID" --signal USR1
wait_until 10 grep -q "got USR1" "$out"
tail -n 1 "$out"

say "kill"
zctr containers kill "$ID" --signal KILL
wait_until 10 sh -c "! '$ZCTR' state '$ID'"
created=""
zctr state

say "done"
