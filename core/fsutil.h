/* Files and time.  Every file zcd or the shim writes goes through
 * zcd_write_file_atomic: temp name in the same directory, fsync, rename,
 * fsync of the directory, so a crash leaves the old file or the new one. */
#ifndef ZCD_FSUTIL_H
#define ZCD_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/err.h"

int zcd_write_file_atomic (const char *path, const void *data, size_t len, mode_t mode,
                           zcd_error_t **err);
/* Same, relative to an open directory (the shim works from its own dir). */
int zcd_write_fileat_atomic (int dirfd, const char *name, const void *data, size_t len,
                             mode_t mode, zcd_error_t **err);
/* Read a whole file of at most `max` bytes into a NUL-terminated buffer the
 * caller frees.  A larger file is ZCD_E_TOO_LARGE. */
int zcd_read_file (const char *path, size_t max, char **out, size_t *len, zcd_error_t **err);
int zcd_read_fileat (int dirfd, const char *name, size_t max, char **out, size_t *len,
                     zcd_error_t **err);
int zcd_mkdir_p (const char *path, mode_t mode, zcd_error_t **err);
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

/* Container ids and process ids (PROTOCOL.md section 3). */
int zcd_valid_id (const char *s, size_t len);

#endif
