/* The durable event log; format and guarantees in core/eventlog.h. */
#include "core/eventlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"

#define HEADER_SIZE 24
#define FRAME_SIZE 8
static const char s_magic[8] = { 'Z', 'C', 'D', 'E', 'V', 'L', 'G', '1' };

/* One record held in memory: where its frame sits in the image and what
 * replay filters on, so a replay never decodes msgpack. */
typedef struct
{
  uint64_t seq;
  int64_t ts;
  size_t off;      /* of the frame in log->image */
  uint32_t len;    /* payload bytes */
  uint16_t id_off; /* of the id's bytes within the payload */
  uint16_t id_len;
} eventlog_rec_t;

/* A failed compaction is tried again no sooner than this (s_maybe_compact). */
#define COMPACT_RETRY_NS (10 * 1000000000ull)

struct eventlog
{
  char *path;
  int fd; /* -1 after a compaction that could not reopen the file */
  uint64_t retain;
  /* The file's bytes (header, records) followed by the records not yet
   * flushed: the file is image[0 .. HEADER_SIZE), then `file_skip` bytes of
   * records that only the file still holds (s_trim), then
   * image[HEADER_SIZE .. flushed_len). */
  char *image;
  size_t image_len, image_cap, flushed_len, file_skip;
  eventlog_rec_t *recs; /* seq order; the newest `retain` are the log */
  size_t nrecs, recs_cap;
  uint64_t last_seq;
  uint64_t durable_seq; /* every seq up to this one is on disk */
  uint64_t compact_failures; /* in a row; 0 = the last one worked */
  uint64_t compact_retry_ns; /* zcd_mono_ns before which none is tried */
};

/* ---- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) ---- */

static uint32_t s_crc_table[256];
static bool s_crc_ready;

static void
s_crc_init (void)
{
  for (uint32_t i = 0; i < 256; i++)
    {
      uint32_t c = i;
      for (int k = 0; k < 8; k++)
        c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      s_crc_table[i] = c;
    }
  s_crc_ready = true;
}

uint32_t
eventlog_crc32c (uint32_t crc, const void *data, size_t len)
{
  if (!s_crc_ready)
    s_crc_init ();
  const uint8_t *p = data;
  crc = ~crc;
  while (len--)
    crc = s_crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

static void
s_put_u32 (char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (char) (v >> (8 * i));
}
static void
s_put_u64 (char *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (char) (v >> (8 * i));
}
static uint32_t
s_get_u32 (const char *p)
{
  const uint8_t *u = (const uint8_t *) p;
  return (uint32_t) u[0] | (uint32_t) u[1] << 8 | (uint32_t) u[2] << 16 | (uint32_t) u[3] << 24;
}
static uint64_t
s_get_u64 (const char *p)
{
  return (uint64_t) s_get_u32 (p) | (uint64_t) s_get_u32 (p + 4) << 32;
}

static uint32_t
s_frame_crc (const char *frame, uint32_t len)
{
  /* The length is covered too: a damaged length must not pass as a shorter
   * or longer record whose bytes happen to check out. */
  return eventlog_crc32c (eventlog_crc32c (0, frame, 4), frame + FRAME_SIZE, len);
}

static void
s_fill_header (char *h, uint64_t seq_floor)
{
  memcpy (h, s_magic, 8);
  s_put_u64 (h + 8, seq_floor);
  s_put_u32 (h + 16, eventlog_crc32c (0, h, 16));
  s_put_u32 (h + 20, 0);
}

/* ---- a strict reader for the Event map, enough to index a record ---- */

typedef struct
{
  const uint8_t *p, *end;
} s_reader_t;

static bool
s_take (s_reader_t *r, size_t n, const uint8_t **out)
{
  if ((size_t) (r->end - r->p) < n)
    return false;
  *out = r->p;
  r->p += n;
  return true;
}

static bool
s_read_be (s_reader_t *r, size_t n, uint64_t *v)
{
  const uint8_t *b;
  if (!s_take (r, n, &b))
    return false;
  *v = 0;
  for (size_t i = 0; i < n; i++)
    *v = *v << 8 | b[i];
  return true;
}

/* Any msgpack int; *is_neg tells which of *u (unsigned) or *s holds it. */
static bool
s_read_int (s_reader_t *r, uint64_t *u, int64_t *s, bool *is_neg)
{
  const uint8_t *t;
  if (!s_take (r, 1, &t))
    return false;
  uint8_t tag = *t;
  uint64_t v;
  *is_neg = false;
  if (tag <= 0x7f)
    return *u = tag, true;
  if (tag >= 0xe0)
    return *is_neg = true, *s = (int8_t) tag, true;
  if (tag >= 0xcc && tag <= 0xcf)
    return s_read_be (r, (size_t) 1 << (tag - 0xcc), u);
  if (tag < 0xd0 || tag > 0xd3 || !s_read_be (r, (size_t) 1 << (tag - 0xd0), &v))
    return false;
  size_t bits = (size_t) 8 << (tag - 0xd0);
  int64_t sv = bits == 64 ? (int64_t) v : (int64_t) (v << (64 - bits)) >> (64 - bits);
  if (sv >= 0)
    return *u = (uint64_t) sv, true;
  return *is_neg = true, *s = sv, true;
}

static bool
s_read_uint (s_reader_t *r, uint64_t *u)
{
  int64_t s;
  bool neg;
  return s_read_int (r, u, &s, &neg) && !neg;
}

static bool
s_read_str (s_reader_t *r, const uint8_t **s, size_t *n)
{
  const uint8_t *t;
  uint64_t len;
  if (!s_take (r, 1, &t))
    return false;
  if (*t >= 0xa0 && *t <= 0xbf)
    len = *t & 0x1f;
  else if (*t >= 0xd9 && *t <= 0xdb)
    {
      if (!s_read_be (r, (size_t) 1 << (*t - 0xd9), &len))
        return false;
    }
  else
    return false;
  *n = (size_t) len;
  return len <= EVENTLOG_MAX_RECORD && s_take (r, *n, s);
}

typedef struct
{
  uint64_t seq;
  int64_t ts;
  size_t id_off, id_len;
} s_indexed_t;

/* One value of the Event map: the key decides the type it must have. */
static bool
s_read_field (s_reader_t *r, const uint8_t *base, const uint8_t *k, size_t kn, s_indexed_t *ev,
              unsigned *seen)
{
  const uint8_t *s;
  size_t n;
  uint64_t u;
  int64_t i;
  bool neg;
#define KEY_IS(lit) (kn == sizeof (lit) - 1 && memcmp (k, lit, kn) == 0)
  if (KEY_IS ("seq"))
    return *seen |= 1, s_read_uint (r, &ev->seq);
  if (KEY_IS ("type"))
    return *seen |= 2, s_read_str (r, &s, &n);
  if (KEY_IS ("id"))
    {
      *seen |= 4;
      if (!s_read_str (r, &s, &n))
        return false;
      ev->id_off = (size_t) (s - base);
      ev->id_len = n;
      return true;
    }
  if (KEY_IS ("ts"))
    {
      *seen |= 8;
      if (!s_read_int (r, &u, &i, &neg) || (!neg && u > INT64_MAX))
        return false;
      ev->ts = neg ? i : (int64_t) u;
      return true;
    }
  if (KEY_IS ("pid"))
    return s_read_str (r, &s, &n);
  if (KEY_IS ("status") || KEY_IS ("system_pid"))
    return s_read_uint (r, &u);
  if (KEY_IS ("oom_killed"))
    return s_take (r, 1, &s) && (*s == 0xc2 || *s == 0xc3);
#undef KEY_IS
  /* A key from a newer version: skip it if it is a plain value. */
  const uint8_t *peek = r->p;
  if (peek < r->end && (*peek == 0xc0 || *peek == 0xc2 || *peek == 0xc3))
    return r->p++, true;
  if (s_read_int (r, &u, &i, &neg))
    return true;
  r->p = peek;
  return s_read_str (r, &s, &n);
}

/* Checks that `payload` is exactly one Event map and pulls out its index. */
static bool
s_index_event (const char *payload, size_t len, s_indexed_t *ev)
{
  s_reader_t r = { (const uint8_t *) payload, (const uint8_t *) payload + len };
  const uint8_t *t;
  uint64_t count;
  if (!s_take (&r, 1, &t))
    return false;
  if (*t >= 0x80 && *t <= 0x8f)
    count = *t & 0x0f;
  else if (*t == 0xde || *t == 0xdf)
    {
      if (!s_read_be (&r, *t == 0xde ? 2 : 4, &count))
        return false;
    }
  else
    return false;
  unsigned seen = 0;
  memset (ev, 0, sizeof *ev);
  for (uint64_t i = 0; i < count; i++)
    {
      const uint8_t *k;
      size_t kn;
      if (!s_read_str (&r, &k, &kn) || !s_read_field (&r, (const uint8_t *) payload, k, kn, ev, &seen))
        return false;
    }
  return r.p == r.end && seen == 15 && ev->seq > 0 && ev->id_len <= UINT16_MAX;
}

/* Length of the valid record at image[off], 0 when there is none there. */
static size_t
s_check_frame (const char *buf, size_t len, size_t off, s_indexed_t *ev)
{
  if (len - off < FRAME_SIZE)
    return 0;
  uint32_t plen = s_get_u32 (buf + off);
  if (plen == 0 || plen > EVENTLOG_MAX_RECORD || len - off - FRAME_SIZE < plen)
    return 0;
  if (s_get_u32 (buf + off + 4) != s_frame_crc (buf + off, plen))
    return 0;
  if (!s_index_event (buf + off + FRAME_SIZE, plen, ev))
    return 0;
  return FRAME_SIZE + plen;
}

/* ---- memory ---- */

static int
s_reserve (void **p, size_t *cap, size_t need, size_t elem)
{
  if (need <= *cap)
    return 0;
  size_t ncap = *cap ? *cap : 64;
  while (ncap < need)
    ncap *= 2;
  void *np = realloc (*p, ncap * elem);
  if (np == NULL)
    return -1;
  *p = np;
  *cap = ncap;
  return 0;
}

static int
s_push_rec (eventlog_t *log, const s_indexed_t *ev, size_t off, size_t plen)
{
  if (s_reserve ((void **) &log->recs, &log->recs_cap, log->nrecs + 1, sizeof *log->recs) < 0)
    return -1;
  log->recs[log->nrecs++] = (eventlog_rec_t) { .seq = ev->seq,
                                               .ts = ev->ts,
                                               .off = off,
                                               .len = (uint32_t) plen,
                                               .id_off = (uint16_t) ev->id_off,
                                               .id_len = (uint16_t) ev->id_len };
  if (ev->seq > log->last_seq)
    log->last_seq = ev->seq;
  return 0;
}

static size_t
s_first_retained (const eventlog_t *log)
{
  return log->nrecs > log->retain ? log->nrecs - log->retain : 0;
}

static size_t
s_compact_threshold (const eventlog_t *log)
{
  return log->retain + log->retain / 10 + 64;
}

/* ---- the file ---- */

static int
s_pwrite_all (int fd, const char *p, size_t len, off_t off)
{
  while (len > 0)
    {
      ssize_t n = pwrite (fd, p, len, off);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      p += n;
      off += n;
      len -= (size_t) n;
    }
  return 0;
}

/* The whole file into log->image. */
static int
s_read_image (eventlog_t *log, zcd_error_t **err)
{
  struct stat st;
  if (fstat (log->fd, &st) < 0)
    return zcd_fail_errno (err, errno, "stat `%s`", log->path);
  size_t want = (size_t) st.st_size;
  if (s_reserve ((void **) &log->image, &log->image_cap, want + HEADER_SIZE, 1) < 0)
    return zcd_fail_errno (err, ENOMEM, "read `%s`", log->path);
  size_t got = 0;
  while (got < want)
    {
      ssize_t n = pread (log->fd, log->image + got, want - got, (off_t) got);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return zcd_fail_errno (err, errno, "read `%s`", log->path);
      if (n == 0)
        break;
      got += (size_t) n;
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
                     path, (unsigned) st.st_uid, (unsigned) geteuid ());
  return steal_fd (&fd);
}

static int
s_open_fd (eventlog_t *log, zcd_error_t **err)
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
  s_fill_header (header, 0);
  if (zcd_write_file_atomic (log->path, header, sizeof header, 0600, err) < 0)
    return -1;
  return s_open_fd (log, err);
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
  cleanup_free char *dir = slash ? strndup (path, (size_t) (slash - path) + 1) : strdup (".");
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
          || fstatat (dirfd (d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0
          || !S_ISREG (st.st_mode) || st.st_uid != geteuid ())
        continue;
      log_info ("event log: removing `%s%s` left by an interrupted compaction", dir, de->d_name);
      unlinkat (dirfd (d), de->d_name, 0);
    }
}

static int
s_write_pending (eventlog_t *log, zcd_error_t **err)
{
  if (log->fd < 0 && s_open_fd (log, err) < 0)
    return -1;
  if (log->flushed_len == log->image_len)
    return 0;
  /* Written at the known end rather than O_APPEND: a retry after a short
   * write rewrites the same bytes in place instead of leaving a torn record
   * in the middle.  flushed_len only moves once fdatasync said yes, since a
   * failed fsync may have dropped the dirty pages (the retry re-dirties
   * them). */
  if (s_pwrite_all (log->fd, log->image + log->flushed_len, log->image_len - log->flushed_len,
                    (off_t) (log->flushed_len + log->file_skip))
          < 0
      || fdatasync (log->fd) < 0)
    return zcd_fail_errno (err, errno, "write `%s`", log->path);
  log->flushed_len = log->image_len;
  log->durable_seq = log->last_seq;
  return 0;
}

/* Rewrite the file as header + the newest `retain` records.  Everything must
 * be flushed.  The new file replaces the old by rename: a crash leaves one
 * or the other, both whole. */
static int
s_compact (eventlog_t *log, zcd_error_t **err)
{
  size_t drop = s_first_retained (log);
  size_t keep_off = drop < log->nrecs ? log->recs[drop].off : log->image_len;
  size_t keep_len = log->image_len - keep_off;
  cleanup_free char *file = malloc (HEADER_SIZE + keep_len);
  if (file == NULL)
    return zcd_fail_errno (err, ENOMEM, "compact `%s`", log->path);
  /* The floor carries the seq even if every record were lost. */
  s_fill_header (file, log->last_seq);
  memcpy (file + HEADER_SIZE, log->image + keep_off, keep_len);
  if (zcd_write_file_atomic (log->path, file, HEADER_SIZE + keep_len, 0600, err) < 0)
    {
      zcd_error_wrap (err, "compact event log");
      return -1;
    }
  /* From here memory must follow the new file, whatever happens next. */
  memcpy (log->image, file, HEADER_SIZE + keep_len);
  log->image_len = log->flushed_len = HEADER_SIZE + keep_len;
  log->file_skip = 0;
  size_t shift = keep_off - HEADER_SIZE;
  if (drop > 0)
    memmove (log->recs, log->recs + drop, (log->nrecs - drop) * sizeof *log->recs);
  log->nrecs -= drop;
  for (size_t i = 0; i < log->nrecs; i++)
    log->recs[i].off -= shift;
  log_debug ("event log: compacted to %zu records, %zu bytes", log->nrecs, log->image_len);
  return s_open_fd (log, err);
}

/* Compaction failed: the file keeps every record since the last one, but
 * memory need not.  The flushed records past retention (no replay shows
 * them) leave memory; file_skip remembers the bytes they still take in the
 * file, so appends keep landing at its end. */
static void
s_trim (eventlog_t *log)
{
  size_t drop = s_first_retained (log);
  if (drop == 0 || log->recs[drop].off > log->flushed_len)
    return;
  size_t from = log->recs[drop].off;
  size_t gone = from - HEADER_SIZE;
  memmove (log->image + HEADER_SIZE, log->image + from, log->image_len - from);
  log->image_len -= gone;
  log->flushed_len -= gone;
  log->file_skip += gone;
  memmove (log->recs, log->recs + drop, (log->nrecs - drop) * sizeof *log->recs);
  log->nrecs -= drop;
  for (size_t i = 0; i < log->nrecs; i++)
    log->recs[i].off -= gone;
}

/* Compaction is housekeeping: the records are durable already, so its
 * failure is not the flush's (it used to fail the flush, and with it every
 * reply, for good).  It is said once per failing spell and tried again only
 * after COMPACT_RETRY_NS *and* another retain/10 + 64 appends: each try
 * rewrites up to `retain` records synchronously on the loop thread, and on a
 * full disk it fails again at that cost, so trying every turn would stall
 * the loop for nothing; the count keeps a daemon whose file no longer grows
 * from retrying at all.  Meanwhile memory stays at the retained records
 * (s_trim); only the file grows. */
static void
s_maybe_compact (eventlog_t *log)
{
  if (log->nrecs <= s_compact_threshold (log))
    return;
  uint64_t now = zcd_mono_ns ();
  if (now >= log->compact_retry_ns)
    {
      cleanup_error zcd_error_t *err = NULL;
      if (s_compact (log, &err) == 0)
        {
          if (log->compact_failures)
            log_info ("event log `%s`: compacted again after %" PRIu64 " failed tries", log->path,
                      log->compact_failures);
          log->compact_failures = 0;
          return;
        }
      if (log->compact_failures++ == 0)
        log_warn ("event log `%s`: %s; events are still logged, but the file grows until a "
                  "compaction succeeds (tried again every %llu s at most)",
                  log->path, err ? err->msg : "compaction failed",
                  (unsigned long long) (COMPACT_RETRY_NS / 1000000000ull));
      log->compact_retry_ns = now + COMPACT_RETRY_NS;
    }
  s_trim (log);
}

/* Highest seq of any valid record at or after `from`.  Only called on a
 * damaged file, so a byte-by-byte search is fine; the map-tag check keeps
 * the CRC off most offsets. */
static uint64_t
s_scan_max_seq (const char *buf, size_t len, size_t from)
{
  uint64_t max = 0;
  for (size_t o = from; o + FRAME_SIZE < len;)
    {
      uint8_t tag = (uint8_t) buf[o + FRAME_SIZE];
      s_indexed_t ev;
      size_t n = (tag & 0xf0) == 0x80 || tag == 0xde ? s_check_frame (buf, len, o, &ev) : 0;
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
      if (ftruncate (log->fd, (off_t) bad_off) < 0 || fdatasync (log->fd) < 0)
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
  return s_compact (log, err);
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
  if (log->image_len < HEADER_SIZE || memcmp (log->image, s_magic, 8) != 0
      || s_get_u32 (log->image + 16) != eventlog_crc32c (0, log->image, 16))
    return zcd_fail (err, ZCD_E_INTERNAL,
                     "`%s` is not a zcd event log, or its header is damaged; move it aside "
                     "to start a new log (event seq will restart at 1)",
                     log->path);
  log->last_seq = s_get_u64 (log->image + 8);
  size_t off = HEADER_SIZE;
  uint64_t prev = 0;
  while (off < log->image_len)
    {
      s_indexed_t ev;
      size_t n = s_check_frame (log->image, log->image_len, off, &ev);
      if (n == 0 || ev.seq <= prev)
        break;
      if (s_push_rec (log, &ev, off, n - FRAME_SIZE) < 0)
        return zcd_fail_errno (err, ENOMEM, "load `%s`", log->path);
      prev = ev.seq;
      off += n;
    }
  if (off < log->image_len && s_repair (log, off, err) < 0)
    return -1;
  /* Everything read is on disk, and so is the floor a repair raised. */
  log->durable_seq = log->last_seq;
  s_maybe_compact (log);
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
  if (log->fd >= 0)
    close (log->fd);
  free (log->image);
  free (log->recs);
  free (log->path);
  free (log);
  *plog = NULL;
}

/* ---- append, flush ---- */

typedef struct
{
  eventlog_t *log;
  bool failed;
} s_pack_target_t;

static int
s_pack_write (void *data, const char *buf, size_t len)
{
  s_pack_target_t *t = data;
  eventlog_t *log = t->log;
  if (t->failed || s_reserve ((void **) &log->image, &log->image_cap, log->image_len + len, 1) < 0)
    {
      t->failed = true;
      return -1;
    }
  memcpy (log->image + log->image_len, buf, len);
  log->image_len += len;
  return 0;
}

static void
s_pack_kv_str (msgpack_packer *pk, const char *key, const char *value)
{
  msgpack_pack_str_with_body (pk, key, strlen (key));
  msgpack_pack_str_with_body (pk, value, strlen (value));
}

static void
s_pack_event (msgpack_packer *pk, const zcd_event_t *ev, uint64_t seq)
{
  uint32_t n = 4 + (ev->pid != NULL) + ev->has_status + (ev->system_pid != 0)
               + ev->has_oom_killed;
  msgpack_pack_map (pk, n);
  msgpack_pack_str_with_body (pk, "seq", 3);
  msgpack_pack_uint64 (pk, seq);
  s_pack_kv_str (pk, "type", ev->type);
  s_pack_kv_str (pk, "id", ev->id);
  if (ev->pid)
    s_pack_kv_str (pk, "pid", ev->pid);
  if (ev->has_status)
    {
      msgpack_pack_str_with_body (pk, "status", 6);
      msgpack_pack_uint32 (pk, ev->status);
    }
  if (ev->system_pid)
    {
      msgpack_pack_str_with_body (pk, "system_pid", 10);
      msgpack_pack_uint32 (pk, ev->system_pid);
    }
  if (ev->has_oom_killed)
    {
      msgpack_pack_str_with_body (pk, "oom_killed", 10);
      if (ev->oom_killed)
        msgpack_pack_true (pk);
      else
        msgpack_pack_false (pk);
    }
  msgpack_pack_str_with_body (pk, "ts", 2);
  msgpack_pack_int64 (pk, ev->ts ? ev->ts : zcd_now_ns ());
}

uint64_t
eventlog_append (eventlog_t *log, const zcd_event_t *ev, const char **encoded,
                 size_t *encoded_len)
{
  if (ev->type == NULL || ev->id == NULL || log->last_seq == UINT64_MAX)
    return 0;
  size_t frame_off = log->image_len;
  s_pack_target_t target = { log, false };
  msgpack_packer pk;
  msgpack_packer_init (&pk, &target, s_pack_write);
  char zeros[FRAME_SIZE] = { 0 };
  s_pack_write (&target, zeros, sizeof zeros);
  s_pack_event (&pk, ev, log->last_seq + 1);
  size_t plen = log->image_len - frame_off - FRAME_SIZE;
  s_indexed_t ix;
  char *frame = log->image + frame_off;
  if (target.failed || plen > EVENTLOG_MAX_RECORD
      || !s_index_event (frame + FRAME_SIZE, plen, &ix) || s_push_rec (log, &ix, frame_off, plen) < 0)
    {
      log->image_len = frame_off;
      return 0;
    }
  s_put_u32 (frame, (uint32_t) plen);
  s_put_u32 (frame + 4, s_frame_crc (frame, (uint32_t) plen));
  if (encoded)
    *encoded = frame + FRAME_SIZE;
  if (encoded_len)
    *encoded_len = plen;
  return ix.seq;
}

int
eventlog_flush (eventlog_t *log, zcd_error_t **err)
{
  if (s_write_pending (log, err) < 0)
    return -1;
  s_maybe_compact (log);
  return 0;
}

int
eventlog_compact (eventlog_t *log, zcd_error_t **err)
{
  if (s_write_pending (log, err) < 0 || s_compact (log, err) < 0)
    return -1;
  log->compact_failures = 0;
  log->compact_retry_ns = 0;
  return 0;
}

uint64_t
eventlog_last_seq (const eventlog_t *log)
{
  return log->last_seq;
}

uint64_t
eventlog_durable_seq (const eventlog_t *log)
{
  return log->durable_seq;
}

uint64_t
eventlog_oldest_seq (const eventlog_t *log)
{
  size_t first = s_first_retained (log);
  return first < log->nrecs ? log->recs[first].seq : 0;
}

size_t
eventlog_count (const eventlog_t *log)
{
  return log->nrecs - s_first_retained (log);
}

size_t
eventlog_stored_count (const eventlog_t *log)
{
  return log->nrecs;
}

/* ---- replay ---- */

/* First record index in [lo, nrecs) with seq > since_seq. */
static size_t
s_search_after (const eventlog_t *log, size_t lo, uint64_t since_seq)
{
  size_t hi = log->nrecs;
  while (lo < hi)
    {
      size_t mid = lo + (hi - lo) / 2;
      if (log->recs[mid].seq <= since_seq)
        lo = mid + 1;
      else
        hi = mid;
    }
  return lo;
}

int
eventlog_replay (eventlog_t *log, uint64_t since_seq, int64_t since_ns, const char *id,
                 eventlog_replay_fn fn, void *arg, bool *truncated)
{
  bool missing = false;
  size_t id_len = id ? strlen (id) : 0;
  if (since_seq < log->last_seq)
    {
      /* `want` is the next seq the caller has not seen: a record above it
       * means the ones in between are gone (retention, damage).  Their
       * time is unknown but not after the record that follows them. */
      uint64_t want = since_seq + 1;
      for (size_t i = s_search_after (log, s_first_retained (log), since_seq); i < log->nrecs; i++)
        {
          const eventlog_rec_t *r = &log->recs[i];
          if (r->seq > want && r->ts > since_ns)
            missing = true;
          want = r->seq + 1;
          const char *payload = log->image + r->off + FRAME_SIZE;
          if (r->ts <= since_ns
              || (id && (r->id_len != id_len || memcmp (payload + r->id_off, id, id_len) != 0)))
            continue;
          int rc = fn (payload, r->len, r->seq, arg);
          if (rc != 0)
            {
              if (truncated)
                *truncated = missing;
              return rc;
            }
        }
      if (want <= log->last_seq)
        missing = true;
    }
  if (truncated)
    *truncated = missing;
  return 0;
}
