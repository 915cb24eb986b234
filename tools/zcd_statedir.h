/* zcd's state directory at start-up (DESIGN.md "State on disk" and
 * "Security"): a pre-existing directory is not trusted as it is.  Others
 * able to write in it could plant a symlink where the daemon writes (its
 * lock, log or sockets) and have it write or replace a file elsewhere as
 * root. */
#ifndef ZCD_STATEDIR_H
#define ZCD_STATEDIR_H

/* Makes `dir` ready for this daemon, or says on stderr why not:
 * - creates it 0711 when missing (missing parents 0755);
 * - refuses it unless it is a directory (not a symlink), owned by the
 *   daemon's euid and not writable by group or others;
 * - takes the single-instance lock `zcd.lock` (opened O_NOFOLLOW; must be a
 *   regular file of ours with no other link) and writes our pid in it;
 * - refuses a symlink, or anything but a stale socket, at the path of an
 *   ipc endpoint in `listen` or `publish` (NULL-terminated, "ipc://PATH"),
 *   and an `events.log` that is not a regular file.
 * Returns the lock's fd, to be held for the daemon's life, or -1. */
int zcd_statedir_take (const char *dir, char *const *listen, char *const *publish);

/* --criu: runc finds `criu` through PATH, and so does crun's libcriu (it
 * has no option for it), so the one way to give both the same CRIU is a
 * `criu` link to it in <dir>/bin, first on the PATH every child inherits.
 * The path must be absolute and name an executable file.  0, or -1 with
 * the reason on stderr. */
int zcd_statedir_use_criu (const char *dir, const char *criu);

#endif
