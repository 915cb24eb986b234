#!/bin/sh
# Installs the Debian packages zcd builds, runs and tests with, then has
# install-criu.sh make sure CRIU and crun can checkpoint.
# Idempotent and silent when everything is present: it asks dpkg first and
# only touches apt (update + install) for what is missing.
# With package names as arguments it installs just those, the same way, and
# stops there: install-criu.sh asks for its build dependencies like this.
set -eu

PACKAGES="build-essential pkg-config libzmq3-dev libczmq-dev libmsgpack-dev
liburing-dev libseccomp-dev libjansson-dev libcmocka-dev clang libclang-rt-14-dev runc crun
criu busybox-static python3-zmq python3-msgpack python3-pytest valgrind
slurmctld slurmd slurm-client munge
libmicrohttpd-dev prometheus scdoc pandoc debhelper dpkg-dev lintian fakeroot
gnuplot-nox groff-base man-db"

install_missing ()
{
    missing=""
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        case "$status" in
            *" installed") ;;
            *) missing="$missing $pkg" ;;
        esac
    done

    [ -z "$missing" ] && return 0

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

    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
}

if [ $# -gt 0 ]; then
    install_missing "$@"
    exit 0
fi

# shellcheck disable=SC2086
install_missing $PACKAGES
# zcd builds and tests without CRIU, so nothing there may fail `make deps`;
# install-criu.sh says what went wrong itself, this is for its own bugs.
sh "$(dirname "$0")/install-criu.sh" \
    || echo "install-deps: install-criu.sh failed; checkpoint ops may answer \`unavailable'" >&2
