/* What the shim tells the world: the one sync record for the daemon, and
 * shim.log, which (like every file the shim writes) is replaced atomically,
 * so the shim keeps its bounded text in memory and rewrites it whole. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/shimproto.h"
#include "shim/shim.h"

#define SHIM_LOG_MAX 8192

/* Static, not on the heap: the shim must stay small and the log is rare. */
static char s_log_text[SHIM_LOG_MAX];
static size_t s_log_len;

void
shim_log (shim_t *self, const char *fmt, ...)
{
  if (self->is_helper)
    return;
  char line[1024];
  va_list ap;
  va_start (ap, fmt);
  int n = vsnprintf (line, sizeof line - 1, fmt, ap);
  va_end (ap);
  if (n < 0)
    return;
  size_t len = (size_t) n < sizeof line - 1 ? (size_t) n : sizeof line - 2;
  line[len++] = '\n';
  /* A full log keeps its beginning: the first failure explains the rest. */
  if (s_log_len + len > SHIM_LOG_MAX)
    return;
  memcpy (s_log_text + s_log_len, line, len);
  s_log_len += len;
  zcd_write_file_atomic ("shim.log", s_log_text, s_log_len, 0644, NULL);
}

static void
s_write_all (int fd, const void *data, size_t len)
{
  const char *p = data;
  while (len > 0)
    {
      ssize_t n = write (fd, p, len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return;
      p += n;
      len -= (size_t) n;
    }
}

static void
s_send (shim_t *self, const struct zcd_sync_record *head, const char *text)
{
  if (self->args.sync_fd < 0)
    return;
  /* One write keeps the record whole for a reader that reads once. */
  char buf[sizeof *head + ZCD_SYNC_MAX_TEXT];
  memcpy (buf, head, sizeof *head);
  if (head->text_len > 0)
    memcpy (buf + sizeof *head, text, head->text_len);
  s_write_all (self->args.sync_fd, buf, sizeof *head + head->text_len);
  close (self->args.sync_fd);
  self->args.sync_fd = -1;
}

void
shim_report_started (shim_t *self)
{
  struct zcd_sync_record head = {
    .magic = ZCD_SYNC_MAGIC,
    .type = ZCD_SYNC_STARTED,
    .pid = (int32_t) self->pid,
  };
  s_send (self, &head, NULL);
}

void
shim_report_error (shim_t *self, const zcd_error_t *error)
{
  const char *text = error && error->msg ? error->msg : "unknown failure";
  size_t len = strlen (text);
  if (len > ZCD_SYNC_MAX_TEXT)
    len = ZCD_SYNC_MAX_TEXT;
  struct zcd_sync_record head = {
    .magic = ZCD_SYNC_MAGIC,
    .type = ZCD_SYNC_ERROR,
    .code = error ? (int32_t) error->code : ZCD_E_INTERNAL,
    .sys_errno = error ? error->sys_errno : 0,
    .text_len = (uint32_t) len,
  };
  /* A runtime failure is in shim.log already, in the runtime's words. */
  if (head.code != ZCD_E_RUNTIME_ERROR)
    shim_log (self, "start failed: %s", text);
  s_send (self, &head, text);
}

int
shim_write_number (const char *name, unsigned long long value, zcd_error_t **err)
{
  char text[32];
  int n = snprintf (text, sizeof text, "%llu", value);
  /* Replaced atomically but not fsynced: these files describe a process
   * of this boot, which a power loss ends too; a crash of the daemon (or
   * of this shim) leaves them whole in the page cache.  An fsync here
   * stood on every create's and every exit's path. */
  return zcd_write_file_replace (name, text, (size_t) n, 0644, err);
}

int
shim_reserve_exit_status (shim_t *self, zcd_error_t **err)
{
  char suffix[17];
  zcd_random_hex (suffix, 16);
  snprintf (self->exit_status_tmp, sizeof self->exit_status_tmp, "exitStatus.tmp.%s", suffix);
  self->exit_status_fd
      = open (self->exit_status_tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (self->exit_status_fd < 0)
    return zcd_fail_errno (err, errno, "reserve exitStatus");
  /* "255" is the longest status: the space it needs is reserved now (a
   * delayed-allocation write reserves its blocks; no fsync needed). */
  if (write (self->exit_status_fd, "255", 3) != 3)
    {
      int saved = errno;
      close (self->exit_status_fd);
      self->exit_status_fd = -1;
      unlink (self->exit_status_tmp);
      return zcd_fail_errno (err, saved, "reserve exitStatus");
    }
  return 0;
}

int
shim_commit_exit_status (shim_t *self, zcd_error_t **err)
{
  if (self->exit_status_fd < 0)
    return shim_write_number ("exitStatus", (unsigned long long) self->exit_status, err);
  /* Overwritten in place (lseek+write: the sandbox allows no pwrite or
   * ftruncate), padded to the reserved length with newlines, which the
   * daemon's number parser stops at. */
  char text[4] = "\n\n\n";
  int n = snprintf (text, sizeof text, "%d", self->exit_status);
  if (n < 3)
    text[n] = '\n';
  int rc = 0;
  if (lseek (self->exit_status_fd, 0, SEEK_SET) < 0 || write (self->exit_status_fd, text, 3) != 3
      || rename (self->exit_status_tmp, "exitStatus") < 0)
    rc = zcd_fail_errno (err, errno, "write exitStatus");
  close (self->exit_status_fd);
  self->exit_status_fd = -1;
  if (rc < 0)
    {
      unlink (self->exit_status_tmp);
      /* The reserved file failed us: try the ordinary way. */
      zcd_error_free (err);
      return shim_write_number ("exitStatus", (unsigned long long) self->exit_status, err);
    }
  return 0;
}
