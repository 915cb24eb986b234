#!/bin/sh
# Makes sure a working CRIU and a CRIU-enabled crun are on root's PATH.
# Bookworm's own are not enough: its CRIU 3.17 fails `criu check` on recent
# kernels (vDSO layout), and its crun 1.8.1 is built without CRIU. CRIU 4.1
# passes `criu check` on Linux >= 6.16 but hangs in its parasite on every
# dump there (fixed in CRIU 4.2). So when the checks below fail, build CRIU
# 4.2.1 (sid's source, also forky's) and crun 1.8.1 (bookworm's source) from
# Debian's orig tarballs into /usr/local, which precedes /usr on root's PATH;
# an older CRIU there is replaced in place. Never sid binaries: they want
# sid's libc.
#
# The checks are the truth, not a marker of a past install: nothing is built
# when they pass, and then this script is silent and takes about a second
# (CRIU dumps and restores a sleeping process). Any failure (no network, bad
# checksum, build error) is one line and exit 0: zcd builds and tests without
# CRIU, its checkpoint ops then answer `unavailable`.
set -eu

PREFIX=/usr/local
# Pinned rather than multiarch (CRIU's default on Debian) so crun's configure
# and its rpath below have one fixed place to look.
LIBDIR=$PREFIX/lib

CRIU_VERSION=4.2.1
CRIU_URL=http://deb.debian.org/debian/pool/main/c/criu/criu_$CRIU_VERSION.orig.tar.xz
CRUN_VERSION=1.8.1
CRUN_URL=http://deb.debian.org/debian/pool/main/c/crun/crun_$CRUN_VERSION.orig.tar.xz
# From the Checksums-Sha256 of dists/{sid,bookworm}/main/source/Sources.xz,
# whose own sha256 is listed in the InRelease signed by the Debian archive
# keys (checked with gpgv and debian-archive-keyring when pinned). Plain
# http is fine: these hashes, not the transport, vouch for the tarballs.
CRIU_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
CRUN_SHA256=01b68269d94e5fe11106a9b14c2f144be03b16ec798951f4efa6aa16ba9da29a

# Asked of apt only when something has to be built, so a host whose own
# CRIU works never gets protobuf and friends.
BUILD_DEPS="build-essential pkg-config curl xz-utils python3
libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler
python3-protobuf libnl-3-dev libnl-route-3-dev libnet1-dev libcap-dev
libnftables-dev libbsd-dev libgnutls28-dev uuid-dev
libyajl-dev libseccomp-dev libsystemd-dev"

HERE=$(cd "$(dirname "$0")" && pwd)
# Root's own directory: a file another user planted in /var/tmp must not
# stop the build (the stamp) or receive its log (a link).
STATE=/var/cache/zcd
mkdir -p -m 0700 "$STATE" 2>/dev/null || true
LOG=$STATE/install-criu.log
# A build that failed or does not pass its checks will do so again: without
# this every `make deps` would spend minutes finding that out. Keyed on the
# kernel, as that is what the checks judge; downloads are not recorded.
FAILED=$STATE/install-criu.failed
STAMP="criu $CRIU_VERSION crun $CRUN_VERSION kernel $(uname -r)"

# Judge what root's PATH will find even when make runs with a trimmed PATH.
PATH="$PREFIX/sbin:$PREFIX/bin:$PATH"
export PATH

unavailable ()
{
    echo "install-criu: $1; zcd's checkpoint ops will answer \`unavailable'" >&2
    exit 0
}

give_up ()
{
    echo "$STAMP" >"$FAILED"
    unavailable "$1"
}

# `criu check' passes where every dump then hangs (CRIU 4.1 on Linux >=
# 6.16), so CRIU counts as working only when it also dumps and restores a
# sleeping process, each step within the deadline. With a file argument,
# CRIU's logs go there.
TRIAL_SECS=20

criu_ok ()  # [log]
{
    timeout -k 5 "$TRIAL_SECS" criu check </dev/null >>"${1:-/dev/null}" 2>&1 \
        || return 1
    trial=$(mktemp -d /var/tmp/zcd-criu-trial.XXXXXX) || return 1
    # Only its stdio, and no terminal there: CRIU refuses to dump the
    # install lock (fd 9) and would want a terminal back on restore.
    # shellcheck disable=SC2217
    sleep 1000 </dev/null >/dev/null 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
    victim=$!
    ok=1
    # --shell-job: the sleep shares this script's session and group.
    if timeout -k 5 "$TRIAL_SECS" criu dump -t "$victim" -D "$trial" \
           --shell-job -o dump.log </dev/null >/dev/null 2>&1; then
        # The dump killed it; reaping it frees its pid for the restore.
        wait "$victim" 2>/dev/null || true
        if timeout -k 5 "$TRIAL_SECS" criu restore -D "$trial" --shell-job \
               -d --pidfile "$trial/pid" -o restore.log \
               </dev/null >/dev/null 2>&1 \
           && kill -9 "$(cat "$trial/pid")" 2>/dev/null; then
            ok=0
        fi
    fi
    # A dump that timed out may leave the sleep stopped or in the parasite.
    kill -9 "$victim" 2>/dev/null || true
    wait "$victim" 2>/dev/null || true
    [ $# -eq 0 ] || cat "$trial/dump.log" "$trial/restore.log" >>"$1" 2>/dev/null
    rm -rf "$trial"
    return $ok
}

crun_ok ()
{
    crun --version 2>/dev/null | grep -q '+CRIU'
}

# crun's configure finds libcriu through criu.pc; > 3.16.1 gives it the
# join-ns and pre-dump APIs too. Debian ships no criu.pc for bookworm.
libcriu_ok ()
{
    PKG_CONFIG_PATH=$LIBDIR/pkgconfig pkg-config --atleast-version=3.16.2 criu \
        2>/dev/null
}

# What libcriu.so.2 in $LIBDIR exports, one name a line (crun dlsyms them).
libcriu_symbols ()
{
    nm -D --defined-only "$LIBDIR/libcriu.so.2" 2>/dev/null | awk '{print $3}' | sort -u
}

fetch ()  # url sha256 file
{
    curl -fsS --connect-timeout 10 --max-time 600 --retry 1 -o "$3" "$1" \
        2>>"$LOG" || unavailable "could not download $1"
    echo "$2  $3" | sha256sum -c --status \
        || unavailable "sha256 mismatch for $1"
}

# -ncpu, not more: the build shares the host with whatever else runs.
JOBS=$(nproc 2>/dev/null || echo 2)

build_criu ()
{
    fetch "$CRIU_URL" "$CRIU_SHA256" "$WORK/criu.tar.xz"
    tar -xJf "$WORK/criu.tar.xz" -C "$WORK" || unavailable "could not unpack $CRIU_URL"
    cd "$WORK/criu-$CRIU_VERSION"
    # libcriu (crun's way to CRIU) execs `criu swrk` through PATH, as runc
    # does: zcd puts the CRIU it was given (--criu) first on its children's
    # PATH, so both runtimes use the same one.
    # No iptables on these hosts: the default network lock fails every dump.
    # pip would reach the network for the python bindings nothing here uses.
    # PYTHON: a user's pyenv shim may lead PATH and lack protobuf.
    set -- PREFIX="$PREFIX" LIBDIR="$LIBDIR" PYTHON=/usr/bin/python3 \
        NETWORK_LOCK_DEFAULT=NETWORK_LOCK_NFTABLES SKIP_PIP_INSTALL=1
    { make -j"$JOBS" "$@" criu lib && make "$@" install-criu install-lib; } \
        >>"$LOG" 2>&1 || give_up "CRIU $CRIU_VERSION build failed (see $LOG)"
    ldconfig
    cd "$WORK"
}

build_crun ()
{
    fetch "$CRUN_URL" "$CRUN_SHA256" "$WORK/crun.tar.xz"
    tar -xJf "$WORK/crun.tar.xz" -C "$WORK" || unavailable "could not unpack $CRUN_URL"
    cd "$WORK/crun-$CRUN_VERSION"
    # crun dlopens "libcriu.so.2" at checkpoint time; bookworm's criu package
    # has one (3.17) in /lib/x86_64-linux-gnu, so the rpath makes ours win.
    # The prebuilt crun.1 in the tarball spares go-md2man.
    { PKG_CONFIG_PATH=$LIBDIR/pkgconfig ./configure --prefix="$PREFIX" \
          LDFLAGS="-Wl,-rpath,$LIBDIR" PYTHON=/usr/bin/python3 \
          && grep -q '^#define HAVE_CRIU 1' config.h \
          && make -j"$JOBS" \
          && make install-binPROGRAMS install-man; } \
        >>"$LOG" 2>&1 || give_up "crun $CRUN_VERSION build failed (see $LOG)"
    # install-binPROGRAMS drags in libcrun's static archive; nothing uses it.
    rm -f "$LIBDIR/libcrun.a" "$LIBDIR/libcrun.la"
    cd "$WORK"
}

if [ "$(id -u)" -ne 0 ]; then
    crun_ok && exit 0
    unavailable "not root: cannot check or build CRIU and crun (run make deps as root)"
fi

need_criu=0
need_crun=0
criu_ok || need_criu=1
crun_ok || need_crun=1
if [ $need_criu = 0 ] && [ $need_crun = 0 ]; then
    rm -f "$FAILED"  # whatever failed then works now
    exit 0
fi
# Before the lock too: where even the built CRIU fails, say so without
# waiting for another run's build, and without a second trial's deadline.
if [ "$(cat "$FAILED" 2>/dev/null)" = "$STAMP" ]; then
    unavailable "building failed before on this kernel (see $LOG; rm $FAILED to retry)"
fi

# Two `make deps` at once must not build into /usr/local together; the
# second one re-checks after the first is done and finds nothing to do.
exec 9>/run/zcd-install-criu.lock
flock 9
need_criu=0
need_crun=0
criu_ok || need_criu=1
crun_ok || need_crun=1
[ $need_criu = 0 ] && [ $need_crun = 0 ] && exit 0
if [ "$(cat "$FAILED" 2>/dev/null)" = "$STAMP" ]; then
    unavailable "building failed before on this kernel (see $LOG; rm $FAILED to retry)"
fi
if [ $need_crun = 1 ] && ! libcriu_ok; then
    need_criu=1
fi

what=""
[ $need_criu = 1 ] && what="CRIU $CRIU_VERSION"
[ $need_crun = 1 ] && what="${what:+$what and }crun $CRUN_VERSION"
echo "install-criu: building $what into $PREFIX (a few minutes)"
: >"$LOG"
# apt's chatter goes to the log with the build's: one line per outcome here.
# shellcheck disable=SC2086
sh "$HERE/install-deps.sh" $BUILD_DEPS >>"$LOG" 2>&1 \
    || unavailable "could not install the packages CRIU and crun build with (see $LOG)"

WORK=$(mktemp -d /var/tmp/zcd-criu-build.XXXXXX) || unavailable "no scratch directory in /var/tmp"
trap 'rm -rf "$WORK"' EXIT
if [ $need_criu = 1 ]; then
    libcriu_symbols >"$WORK/libcriu.before"
    build_criu
    # The crun kept here dlopens libcriu.so.2 and looks up each function by
    # name: it works with the new one unless that lost a name the old one
    # had (or there was no old one here to have built it against).
    if [ $need_crun = 0 ]; then
        libcriu_symbols >"$WORK/libcriu.after"
        if [ ! -s "$WORK/libcriu.before" ] \
           || [ -n "$(comm -23 "$WORK/libcriu.before" "$WORK/libcriu.after")" ]; then
            need_crun=1
            echo "install-criu: crun may not load the new libcriu; building crun $CRUN_VERSION too"
        fi
    fi
fi
[ $need_crun = 1 ] && build_crun

# The shell remembered where criu and crun were before /usr/local had them.
hash -r
criu_ok "$LOG" \
    || give_up "the CRIU built into $PREFIX fails \`criu check' or a trial dump and restore (see $LOG)"
crun_ok || give_up "the crun built into $PREFIX lacks +CRIU (see $LOG)"
rm -f "$LOG" "$FAILED"
echo "install-criu: $what installed into $PREFIX"
