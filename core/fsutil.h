/* Files and time.  Every file zcd or the shim writes is replaced whole: a
 * new file under an unpredictable temp name in the same directory, then a
 * rename over the old, so a crash leaves the old file or the new one.
 * zcd_write_file_atomic also fsyncs the file and its directory, for files
 * that must survive a power loss; zcd_write_file_replace does not, for
 * files that only describe processes of this boot (a power loss ends them
 * too; docs/design-durability.md). */
#ifndef ZCD_FSUTIL_H
#define ZCD_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/err.h"

int zcd_write_file_atomic (const char *path, const void *data, size_t len, mode_t mode,
                           zcd_error_t **err);
/* Same, relative to an open directory (the shim works from its own dir). */
int zcd_write_fileat_atomic (int dirfd, const char *name, const void *data, size_t len,
                             mode_t mode, zcd_error_t **err);
/* Temp name, write, rename; no fsync: atomic against a crash of the daemon
 * (the page cache outlives it), not against a power loss.  Never waits on
 * the disk, so the loop thread may call it. */
int zcd_write_file_replace (const char *path, const void *data, size_t len, mode_t mode,
                            zcd_error_t **err);
/* The same into `made`, an empty regular file made ahead in path's
 * directory (a container skeleton's, actors/container_dirs.c) instead of a
 * new temp: no inode is allocated on the caller's thread.  Fails (errno's
 * code; ENOENT: there is none) when `made` is not such a file. */
int zcd_write_file_replace_into (const char *made, const char *path, const void *data, size_t len,
                                 zcd_error_t **err);
/* Read a whole file of at most `max` bytes into a NUL-terminated buffer the
 * caller frees.  A larger file is ZCD_E_TOO_LARGE. */
int zcd_read_file (const char *path, size_t max, char **out, size_t *len, zcd_error_t **err);
/* The same, refusing a symlink as the last component: for files in a
 * directory a rootless container's owner may write (DESIGN.md "Who is
 * calling"), which the root daemon must not be led out of. */
int zcd_read_file_nofollow (const char *path, size_t max, char **out, size_t *len,
                            zcd_error_t **err);
int zcd_read_fileat (int dirfd, const char *name, size_t max, char **out, size_t *len,
                     zcd_error_t **err);
int zcd_mkdir_p (const char *path, mode_t mode, zcd_error_t **err);
/* mkdir of one directory that must not exist yet: an existing path (of any
 * type) is ZCD_E_ALREADY_EXISTS, never reused (DESIGN.md, "State on disk"). */
int zcd_mkdir (const char *path, mode_t mode, zcd_error_t **err);

/* Open a file a client named (relative to dirfd, or AT_FDCWD), without
 * blocking (a FIFO never waits for its writer) or following a symlink in
 * the last component, and check its type (S_IFREG, S_IFDIR, ...) and, for a
 * regular file, its size (max_size 0 = no limit).  Returns the fd (blocking
 * again), or -1 with ZCD_E_INVALID_ARGUMENT naming `what` and the reason
 * ("stdout: `/x` is a directory, not a regular file"). */
int zcd_open_client_file (int dirfd, const char *path, int flags, mode_t want_type,
                          size_t max_size, const char *what, zcd_error_t **err);
/* Read such a file whole (at most max bytes) into a NUL-terminated buffer. */
int zcd_read_client_file (int dirfd, const char *path, size_t max, const char *what, char **out,
                          size_t *len, zcd_error_t **err);
/* Strict UTF-8 (no overlong forms, no surrogates). */
bool zcd_valid_utf8 (const char *s, size_t len);
/* n_chars random hex digits and a NUL (getrandom, or a clock/pid mix where
 * a sandbox refuses it): unpredictable temp names. */
void zcd_random_hex (char *out, size_t n_chars);
/* Remove a tree; missing is not an error. */
int zcd_rm_rf (const char *path, zcd_error_t **err);
int zcd_fsync_dir (const char *path);

int64_t zcd_now_ns (void);   /* CLOCK_REALTIME, ns since the epoch */
uint64_t zcd_mono_ns (void); /* CLOCK_MONOTONIC */
uint64_t zcd_mono_ms (void);

/* Field 22 of /proc/<pid>/stat (start time in clock ticks since boot): with
 * the pid it names a process for good, since pids are recycled.  Returns 0
 * when the process does not exist. */
uint64_t zcd_proc_starttime (pid_t pid);
/* A zombie (or dead) process has exited, whether or not anyone reaped it:
 * on hosts whose init reaps late it lingers. */
bool zcd_proc_is_zombie (pid_t pid);

/* Container ids and process ids (PROTOCOL.md section 3). */
int zcd_valid_id (const char *s, size_t len);

/* Remove the directory `name` of parent_fd, which the caller holds open as
 * dir_fd (O_DIRECTORY|O_NOFOLLOW, and checked to be what it means to
 * delete): everything inside goes through file descriptors, never following
 * a symlink, so a rename or a link planted meanwhile cannot redirect the
 * removal elsewhere; then the (by then empty) directory itself.  At most 64
 * levels deep.  dir_fd stays the caller's. */
int zcd_rm_tree_fd (int parent_fd, const char *name, int dir_fd, zcd_error_t **err);

/* Open a directory a client named (relative to dirfd, or AT_FDCWD) as
 * itself: a symlink is not followed (O_NOFOLLOW; drop trailing slashes
 * first, with one the kernel follows it anyway) and nothing blocks.
 * Missing is ZCD_E_NOT_FOUND; a symlink or another type, ZCD_E_INVALID_ARGUMENT
 * ("checkpoint_dir: `/x` is a symbolic link, not a directory"). */
int zcd_open_client_dir (int dirfd, const char *path, const char *what, zcd_error_t **err);

#endif
