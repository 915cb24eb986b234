/* The `log` key of create and exec (PROTOCOL.md): admission and the
 * process's copy.  The file itself is the shim's (shim/logfile.c,
 * shim/outlog.c): the daemon only checks, as the caller, what the shim
 * will open and rotate as that caller, so that a bad path is a precise
 * invalid_argument at once rather than a failed start, and nothing is made
 * for a refused request. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/process.h"
#include "core/cleanup.h"
#include "core/mp.h"
#include "core/shimproto.h"

void
process_log_from_request (process_log_t *out, const msgpack_object *body)
{
  memset (out, 0, sizeof *out);
  const msgpack_object *log = mp_map_get (body, "log");
  if (log == NULL || log->type != MSGPACK_OBJECT_MAP)
    return;
  out->path = mp_get_strdup (log, "path");
  out->max_bytes = mp_get_uint (log, "max_bytes", ZCD_LOG_DEFAULT_BYTES);
  out->max_files = (uint32_t)mp_get_uint (log, "max_files", ZCD_LOG_DEFAULT_FILES);
}

void
process_log_copy (process_log_t *dst, const process_log_t *src)
{
  process_log_clear (dst);
  dst->path = src->path ? strdup (src->path) : NULL;
  dst->max_bytes = src->max_bytes;
  dst->max_files = src->max_files;
}

void
process_log_clear (process_log_t *log)
{
  free (log->path);
  memset (log, 0, sizeof *log);
}

static const char *
s_kind (mode_t mode)
{
  return S_ISLNK (mode)    ? "a symbolic link"
         : S_ISDIR (mode)  ? "a directory"
         : S_ISFIFO (mode) ? "a FIFO"
         : S_ISSOCK (mode) ? "a socket"
         : S_ISCHR (mode)  ? "a character device"
         : S_ISBLK (mode)  ? "a block device"
                           : "not a regular file";
}

/* The file: a regular one the caller may write, or none yet. */
static int
s_check_file (const char *path, zcd_error_t **err)
{
  struct stat st;
  if (lstat (path, &st) < 0)
    {
      if (errno == ENOENT)
        return 0;
      return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `log`: `%s`: %s", path, strerror (errno));
    }
  if (!S_ISREG (st.st_mode))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `log`: `%s` is %s", path,
                     s_kind (st.st_mode));
  /* As the caller (the scope's effective ids): what its shim could open. */
  if (faccessat (AT_FDCWD, path, W_OK, AT_EACCESS | AT_SYMLINK_NOFOLLOW) < 0)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `log`: `%s`: %s", path, strerror (errno));
  return 0;
}

/* Its directory: the file is made and rotated there (renames), so the
 * caller must be able to write it, not only the file. */
static int
s_check_dir (const zcd_config_t *cfg, const char *path, const char *dir, zcd_error_t **err)
{
  struct stat st;
  if (stat (dir, &st) < 0)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `log`: `%s`: %s", dir, strerror (errno));
  if (!S_ISDIR (st.st_mode))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `log`: `%s` is not a directory", dir);
  if (faccessat (AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) < 0)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                     "key `log`: directory `%s`: %s (the log is rotated in it)", dir,
                     strerror (errno));
  if (zcd_under_state_dir (cfg, dir))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `log`: `%s` is inside zcd's state dir",
                     path);
  return 0;
}

int
process_log_check (const zcd_config_t *cfg, const msgpack_object *body, zcd_error_t **err)
{
  const msgpack_object *log = mp_map_get (body, "log");
  if (log == NULL)
    return 0;
  if (mp_map_get (body, "stdout") || mp_map_get (body, "stderr"))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                     "key `log`: not with `stdout` or `stderr` (the log takes both)");
  process_log_t spec;
  process_log_from_request (&spec, body);
  cleanup_free char *path = spec.path;
  if (path == NULL || path[0] != '/')
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `log.path`: must be an absolute path");
  char *slash = strrchr (path, '/');
  const char *base = slash + 1;
  char suffix[16];
  int suffix_len = snprintf (suffix, sizeof suffix, ".%u", (unsigned)spec.max_files);
  if (base[0] == '\0' || strcmp (base, ".") == 0 || strcmp (base, "..") == 0)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `log`: `%s` does not name a file", path);
  if (strlen (base) + (size_t)suffix_len > NAME_MAX)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                     "key `log`: `%s`: the name is too long for its rotated files", path);
  if (s_check_file (path, err) < 0)
    return -1;
  cleanup_free char *dir = slash == path ? strdup ("/") : strndup (path, (size_t)(slash - path));
  if (dir == NULL)
    return zcd_fail_errno (err, ENOMEM, "key `log`");
  return s_check_dir (cfg, path, dir, err);
}
