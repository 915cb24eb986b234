#!/bin/sh
# Installs the Debian packages zcd builds, runs and tests with.
# Idempotent and silent when everything is present: it asks dpkg first and
# only touches apt (update + install) for what is missing.
set -eu

PACKAGES="build-essential pkg-config libzmq3-dev libczmq-dev libmsgpack-dev
liburing-dev libseccomp-dev libjansson-dev libcmocka-dev clang libclang-rt-14-dev runc crun
criu busybox-static python3-zmq python3-msgpack python3-pytest valgrind"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done

[ -z "$missing" ] && exit 0

echo "install-deps: installing:$missing"
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-deps: not root and no sudo; install these packages:$missing" >&2
        exit 1
    fi
else
    SUDO=""
fi

export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
