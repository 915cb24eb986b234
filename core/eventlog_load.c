/* Opening the event log: the file's checks (ours, regular, no symlink),
 * creation, loading its records, recovery from a torn tail or a corrupt
 * record, and the sweep of temp files a crashed compaction left. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/eventlog_int.h"
#include "core/fsutil.h"
#include "core/log.h"

/* ---- the file ---- */

/* The whole file into log->image. */
static int
s_read_image (eventlog_t *log, zcd_error_t **err)
{
  struct stat st;
  if (fstat (log->fd, &st) < 0)
    return zcd_fail_errno (err, errno, "stat `%s`", log->path);
  size_t want = (size_t)st.st_size;
  if (eventlog_reserve ((void **)&log->image, &log->image_cap, want + HEADER_SIZE, 1) < 0)
    return zcd_fail_errno (err, ENOMEM, "read `%s`", log->path);
  size_t got = 0;
  while (got < want)
    {
      ssize_t n = pread (log->fd, log->image + got, want - got, (off_t)got);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return zcd_fail_errno (err, errno, "read `%s`", log->path);
      if (n == 0)
        break;
      got += (size_t)n;
    }
  log->image_len = log->flushed_len = got;
  return 0;
}

/* The log is the daemon's own file, so it is opened as one: never through
 * a symlink planted in its place (O_NOFOLLOW), never a FIFO or device
 * (O_NONBLOCK keeps the open itself from waiting; it changes nothing for a
 * regular file), never a file someone else owns.  *missing (when not NULL)
 * tells a log that does not exist yet from one that cannot be opened. */
static int
s_open_checked (const char *path, bool *missing, zcd_error_t **err)
{
  cleanup_close int fd = open (path, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (missing)
    *missing = fd < 0 && errno == ENOENT;
  if (fd < 0 && errno == ELOOP)
    return zcd_fail (err, ZCD_E_INTERNAL,
                     "`%s` is a symbolic link; the event log must be a regular file of "
                     "its own (refusing to follow it)",
                     path);
  if (fd < 0 && errno != EISDIR)
    return zcd_fail_errno (err, errno, "open `%s`", path);
  struct stat st;
  if (fd >= 0 && fstat (fd, &st) < 0)
    return zcd_fail_errno (err, errno, "stat `%s`", path);
  if (fd < 0 || !S_ISREG (st.st_mode))
    return zcd_fail (err, ZCD_E_INTERNAL,
                     "`%s` is not a regular file; refusing to use it as the event log", path);
  if (st.st_uid != geteuid ())
    return zcd_fail (err, ZCD_E_INTERNAL,
                     "`%s` is owned by uid %u, not by zcd (uid %u); refusing to use it as the "
                     "event log",
                     path, (unsigned)st.st_uid, (unsigned)geteuid ());
  return steal_fd (&fd);
}

int
eventlog_open_fd (eventlog_t *log, zcd_error_t **err)
{
  if (log->fd >= 0)
    close (log->fd);
  log->fd = s_open_checked (log->path, NULL, err);
  return log->fd < 0 ? -1 : 0;
}

/* A new log is born whole: header written by rename, never torn. */
static int
s_create (eventlog_t *log, zcd_error_t **err)
{
  char header[HEADER_SIZE];
  eventlog_fill_header (header, 0);
  if (zcd_write_file_atomic (log->path, header, sizeof header, 0600, err) < 0)
    return -1;
  return eventlog_open_fd (log, err);
}

/* `<base>.tmp.` and exactly 16 lowercase hex digits: the only temp names
 * zcd_write_file_atomic makes. */
static bool
s_is_our_temp (const char *name, const char *prefix)
{
  size_t plen = strlen (prefix);
  return strncmp (name, prefix, plen) == 0 && strlen (name + plen) == 16
         && strspn (name + plen, "0123456789abcdef") == 16;
}

/* Temp files of a compaction that crashed before its rename: the log itself
 * is whole (the old one), these are just litter.  Only what zcd itself made
 * goes: a regular file of ours with one of its temp names.  Anything else by
 * that prefix (a directory, a symlink, someone else's file, another naming)
 * is not ours to delete, and with unpredictable temp names it cannot get in
 * the way either. */
static void
s_remove_temps (const char *path)
{
  const char *slash = strrchr (path, '/');
  cleanup_free char *dir = slash ? strndup (path, (size_t)(slash - path) + 1) : strdup (".");
  const char *base = slash ? slash + 1 : path;
  cleanup_free char *prefix = NULL;
  if (dir == NULL || asprintf (&prefix, "%s.tmp.", base) < 0)
    return;
  cleanup_dir DIR *d = opendir (dir);
  if (d == NULL)
    return;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      struct stat st;
      if (!s_is_our_temp (de->d_name, prefix)
          || fstatat (dirfd (d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG (st.st_mode)
          || st.st_uid != geteuid ())
        continue;
      log_info ("event log: removing `%s%s` left by an interrupted compaction", dir, de->d_name);
      unlinkat (dirfd (d), de->d_name, 0);
    }
}

/* ---- loading, recovery ---- */

/* Highest seq of any valid record at or after `from`.  Only called on a
 * damaged file, so a byte-by-byte search is fine; the map-tag check keeps
 * the CRC off most offsets. */
static uint64_t
s_scan_max_seq (const char *buf, size_t len, size_t from)
{
  uint64_t max = 0;
  for (size_t o = from; o + FRAME_SIZE < len;)
    {
      uint8_t tag = (uint8_t)buf[o + FRAME_SIZE];
      eventlog_indexed_t ev;
      size_t n = (tag & 0xf0) == 0x80 || tag == 0xde ? eventlog_check_frame (buf, len, o, &ev) : 0;
      if (n == 0)
        {
          o++;
          continue;
        }
      if (ev.seq > max)
        max = ev.seq;
      o += n;
    }
  return max;
}

static int
s_repair (eventlog_t *log, size_t bad_off, zcd_error_t **err)
{
  size_t file_len = log->image_len;
  uint64_t later = s_scan_max_seq (log->image, file_len, bad_off + 1);
  log->image_len = log->flushed_len = bad_off;
  if (later <= log->last_seq)
    {
      log_warn ("event log `%s`: dropping a torn record at offset %zu (%zu bytes)", log->path,
                bad_off, file_len - bad_off);
      if (ftruncate (log->fd, (off_t)bad_off) < 0 || fdatasync (log->fd) < 0)
        return zcd_fail_errno (err, errno, "truncate `%s`", log->path);
      return 0;
    }
  /* Valid records after a bad one: not a crash (writes only ever go at the
   * end), but damage.  Keep what precedes it, and never hand out a seq the
   * lost records may have carried to subscribers. */
  cleanup_free char *aside = NULL;
  if (asprintf (&aside, "%s.corrupt.%" PRId64, log->path, zcd_now_ns ()) < 0)
    aside = NULL;
  if (aside == NULL || link (log->path, aside) < 0)
    log_error ("event log `%s`: cannot keep a copy of the damaged file: %s", log->path,
               strerror (errno));
  log_error ("event log `%s`: corrupt record at offset %zu; keeping %zu records before it, "
             "events up to seq %" PRIu64 " are lost (damaged file kept as `%s`)",
             log->path, bad_off, log->nrecs, later, aside ? aside : "-");
  log->last_seq = later;
  return eventlog_rewrite (log, err);
}

static int
s_load (eventlog_t *log, zcd_error_t **err)
{
  bool missing = false;
  cleanup_error zcd_error_t *open_err = NULL;
  log->fd = s_open_checked (log->path, &missing, &open_err);
  if (log->fd < 0 && !missing)
    {
      if (err)
        *err = steal_pointer (&open_err);
      return -1;
    }
  if ((log->fd < 0 && s_create (log, err) < 0) || s_read_image (log, err) < 0)
    return -1;
  if (log->image_len == 0 && (s_create (log, err) < 0 || s_read_image (log, err) < 0))
    return -1;
  if (log->image_len < HEADER_SIZE || memcmp (log->image, EVENTLOG_MAGIC, 8) != 0
      || eventlog_get_u32 (log->image + 16) != eventlog_crc32c (0, log->image, 16))
    return zcd_fail (err, ZCD_E_INTERNAL,
                     "`%s` is not a zcd event log, or its header is damaged; move it aside "
                     "to start a new log (event seq will restart at 1)",
                     log->path);
  log->last_seq = eventlog_get_u64 (log->image + 8);
  size_t off = HEADER_SIZE;
  uint64_t prev = 0;
  while (off < log->image_len)
    {
      eventlog_indexed_t ev;
      size_t n = eventlog_check_frame (log->image, log->image_len, off, &ev);
      if (n == 0 || ev.seq <= prev)
        break;
      if (eventlog_push_rec (log, &ev, off, n - FRAME_SIZE) < 0)
        return zcd_fail_errno (err, ENOMEM, "load `%s`", log->path);
      prev = ev.seq;
      off += n;
    }
  if (off < log->image_len && s_repair (log, off, err) < 0)
    return -1;
  /* Everything read is on disk, and so is the floor a repair raised. */
  log->durable_seq = log->last_seq;
  eventlog_maybe_compact (log);
  return 0;
}

int
eventlog_open (const char *path, uint64_t retain, eventlog_t **out, zcd_error_t **err)
{
  eventlog_t *log = calloc (1, sizeof *log);
  if (log == NULL || (log->path = strdup (path)) == NULL)
    {
      free (log);
      return zcd_fail_errno (err, ENOMEM, "open `%s`", path);
    }
  log->fd = -1;
  log->retain = retain < 1 ? 1 : retain;
  s_remove_temps (path);
  if (s_load (log, err) < 0)
    {
      eventlog_destroy (&log);
      zcd_error_wrap (err, "event log");
      return -1;
    }
  log_info ("event log `%s`: %zu events retained (seq %" PRIu64 "..%" PRIu64 ")", path,
            eventlog_count (log), eventlog_oldest_seq (log), log->last_seq);
  *out = log;
  return 0;
}

void
eventlog_destroy (eventlog_t **plog)
{
  eventlog_t *log = *plog;
  if (log == NULL)
    return;
  /* First: the kernel may still be reading the log's buffers. */
  eventlog_async_free (log);
  if (log->fd >= 0)
    close (log->fd);
  free (log->image);
  free (log->recs);
  free (log->path);
  free (log);
  *plog = NULL;
}
