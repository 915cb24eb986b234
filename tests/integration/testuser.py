"""The unprivileged caller of the identity and rootless tests: user `zcdtest`
in group `zcd` (the group a daemon's `--group` opens its ipc sockets to).

Created on first use with Debian's useradd/groupadd, kept afterwards (a
user is cheap, and removing one while another test runs as it is not)."""

import grp
import os
import pwd
import subprocess

USER = "zcdtest"
GROUP = "zcd"
# A second unprivileged user: the stranger whose containers zcdtest must
# not see or touch.
OTHER_USER = "zcdtest2"


def _ensure_group(name):
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True)
        return grp.getgrnam(name).gr_gid


def _ensure_user(name, group):
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh",
                        "--groups", group, name], check=True)
        pw = pwd.getpwnam(name)
    return pw


def ensure_test_user(name=USER):
    """(name, uid, gid) of an unprivileged user in group `zcd`."""
    _ensure_group(GROUP)
    pw = _ensure_user(name, GROUP)
    return pw.pw_name, pw.pw_uid, pw.pw_gid


def as_user(uid, gid, groups=()):
    """A preexec_fn for subprocess: run the child as uid/gid."""
    def drop():
        os.setgroups(list(groups))
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    return drop
