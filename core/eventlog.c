/* The durable event log; format and guarantees in core/eventlog.h.  This
 * file: records in memory, append, flush, compaction, replay.  Opening and
 * recovery are in eventlog_load.c, the record format in eventlog_record.c. */
#include "core/eventlog.h"

#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/eventlog_int.h"
#include "core/fsutil.h"
#include "core/log.h"

/* A failed compaction is tried again no sooner than this (eventlog_maybe_compact). */
#define COMPACT_RETRY_NS (10 * 1000000000ull)

/* ---- memory ---- */

int
eventlog_reserve (void **p, size_t *cap, size_t need, size_t elem)
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

int
eventlog_push_rec (eventlog_t *log, const eventlog_indexed_t *ev, size_t off, size_t plen)
{
  if (eventlog_reserve ((void **)&log->recs, &log->recs_cap, log->nrecs + 1, sizeof *log->recs) < 0)
    return -1;
  log->recs[log->nrecs++] = (eventlog_rec_t){ .seq = ev->seq,
                                              .ts = ev->ts,
                                              .off = off,
                                              .len = (uint32_t)plen,
                                              .id_off = (uint16_t)ev->id_off,
                                              .id_len = (uint16_t)ev->id_len };
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
      len -= (size_t)n;
    }
  return 0;
}

static int
s_write_pending (eventlog_t *log, zcd_error_t **err)
{
  if (log->fd < 0 && eventlog_open_fd (log, err) < 0)
    return -1;
  if (log->flushed_len == log->image_len)
    return 0;
  /* Written at the known end rather than O_APPEND: a retry after a short
   * write rewrites the same bytes in place instead of leaving a torn record
   * in the middle.  flushed_len only moves once fdatasync said yes, since a
   * failed fsync may have dropped the dirty pages (the retry re-dirties
   * them). */
  uint64_t t0 = zcd_mono_ns ();
  size_t len = log->image_len - log->flushed_len;
  int rc = s_pwrite_all (log->fd, log->image + log->flushed_len, len,
                         (off_t)(log->flushed_len + log->file_skip));
  if (rc == 0)
    rc = fdatasync (log->fd);
  metrics_hist_observe (&log->fsync_latency, zcd_mono_ns () - t0);
  if (rc < 0)
    return zcd_fail_errno (err, errno, "write `%s`", log->path);
  log->written_bytes += len;
  log->flushed_len = log->image_len;
  log->durable_seq = log->last_seq;
  return 0;
}

/* ---- compaction ---- */

size_t
eventlog_first_retained (const eventlog_t *log)
{
  return s_first_retained (log);
}

bool
eventlog_compact_due (const eventlog_t *log)
{
  return log->nrecs > s_compact_threshold (log) && zcd_mono_ns () >= log->compact_retry_ns;
}

/* Memory follows the file just renamed into place: header (with this
 * floor) + the flushed records from recs[drop] on.  Records appended since
 * the file was built (not flushed yet) stay behind them in the image. */
void
eventlog_adopt_compacted (eventlog_t *log, size_t drop, uint64_t seq_floor)
{
  size_t keep_off = drop < log->nrecs ? log->recs[drop].off : log->image_len;
  size_t shift = keep_off - HEADER_SIZE;
  eventlog_fill_header (log->image, seq_floor);
  memmove (log->image + HEADER_SIZE, log->image + keep_off, log->image_len - keep_off);
  log->image_len -= shift;
  log->flushed_len -= shift;
  log->file_skip = 0;
  if (drop > 0)
    memmove (log->recs, log->recs + drop, (log->nrecs - drop) * sizeof *log->recs);
  log->nrecs -= drop;
  for (size_t i = 0; i < log->nrecs; i++)
    log->recs[i].off -= shift;
  log_debug ("event log: compacted to %zu records, %zu bytes", log->nrecs, log->flushed_len);
}

/* Rewrite the file as header + the newest `retain` records.  Everything must
 * be flushed.  The new file replaces the old by rename: a crash leaves one
 * or the other, both whole. */
int
eventlog_rewrite (eventlog_t *log, zcd_error_t **err)
{
  size_t drop = s_first_retained (log);
  size_t keep_off = drop < log->nrecs ? log->recs[drop].off : log->image_len;
  size_t keep_len = log->image_len - keep_off;
  cleanup_free char *file = malloc (HEADER_SIZE + keep_len);
  if (file == NULL)
    return zcd_fail_errno (err, ENOMEM, "compact `%s`", log->path);
  /* The floor carries the seq even if every record were lost. */
  eventlog_fill_header (file, log->last_seq);
  memcpy (file + HEADER_SIZE, log->image + keep_off, keep_len);
  if (zcd_write_file_atomic (log->path, file, HEADER_SIZE + keep_len, 0600, err) < 0)
    {
      zcd_error_wrap (err, "compact event log");
      return -1;
    }
  log->written_bytes += HEADER_SIZE + keep_len;
  /* From here memory must follow the new file, whatever happens next. */
  eventlog_adopt_compacted (log, drop, log->last_seq);
  return eventlog_open_fd (log, err);
}

/* Compaction failed: the file keeps every record since the last one, but
 * memory need not.  The flushed records past retention (no replay shows
 * them) leave memory; file_skip remembers the bytes they still take in the
 * file, so appends keep landing at its end. */
void
eventlog_trim (eventlog_t *log)
{
  if (log->nrecs <= s_compact_threshold (log))
    return;
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

void
eventlog_compact_succeeded (eventlog_t *log)
{
  if (log->compact_failures)
    log_info ("event log `%s`: compacted again after %" PRIu64 " failed tries", log->path,
              log->compact_failures);
  log->compact_failures = 0;
  log->compact_retry_ns = 0;
}

/* Compaction is housekeeping: the records are durable already, so its
 * failure is not the flush's (it used to fail the flush, and with it every
 * reply, for good).  It is said once per failing spell and tried again only
 * after COMPACT_RETRY_NS *and* another retain/10 + 64 appends: each try
 * rewrites up to `retain` records, and on a full disk it fails again at
 * that cost, so trying every turn would load the disk (and, synchronously,
 * stall the loop) for nothing; the count keeps a daemon whose file no
 * longer grows from retrying at all.  Meanwhile memory stays at the
 * retained records (eventlog_trim); only the file grows. */
void
eventlog_compact_failed (eventlog_t *log, const zcd_error_t *err)
{
  if (log->compact_failures++ == 0)
    log_warn ("event log `%s`: %s; events are still logged, but the file grows until a "
              "compaction succeeds (tried again every %llu s at most)",
              log->path, err ? err->msg : "compaction failed",
              (unsigned long long)(COMPACT_RETRY_NS / 1000000000ull));
  log->compact_retry_ns = zcd_mono_ns () + COMPACT_RETRY_NS;
}

/* The synchronous compaction of eventlog_flush (no io_uring, shutdown,
 * tests). */
void
eventlog_maybe_compact (eventlog_t *log)
{
  if (eventlog_compact_due (log))
    {
      cleanup_error zcd_error_t *err = NULL;
      if (eventlog_rewrite (log, &err) == 0)
        {
          eventlog_compact_succeeded (log);
          return;
        }
      eventlog_compact_failed (log, err);
    }
  eventlog_trim (log);
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
  if (t->failed
      || eventlog_reserve ((void **)&log->image, &log->image_cap, log->image_len + len, 1) < 0)
    {
      t->failed = true;
      return -1;
    }
  memcpy (log->image + log->image_len, buf, len);
  log->image_len += len;
  return 0;
}

uint64_t
eventlog_append (eventlog_t *log, const zcd_event_t *ev, const char **encoded, size_t *encoded_len)
{
  if (ev->type == NULL || ev->id == NULL || log->last_seq == UINT64_MAX)
    return 0;
  size_t frame_off = log->image_len;
  s_pack_target_t target = { log, false };
  msgpack_packer pk;
  msgpack_packer_init (&pk, &target, s_pack_write);
  char zeros[FRAME_SIZE] = { 0 };
  s_pack_write (&target, zeros, sizeof zeros);
  eventlog_pack_event (&pk, ev, log->last_seq + 1);
  size_t plen = log->image_len - frame_off - FRAME_SIZE;
  eventlog_indexed_t ix;
  char *frame = log->image + frame_off;
  if (target.failed || plen > EVENTLOG_MAX_RECORD
      || !eventlog_index_event (frame + FRAME_SIZE, plen, &ix)
      || eventlog_push_rec (log, &ix, frame_off, plen) < 0)
    {
      log->image_len = frame_off;
      return 0;
    }
  eventlog_put_u32 (frame, (uint32_t)plen);
  eventlog_put_u32 (frame + 4, eventlog_frame_crc (frame, (uint32_t)plen));
  if (encoded)
    *encoded = frame + FRAME_SIZE;
  if (encoded_len)
    *encoded_len = plen;
  return ix.seq;
}

int
eventlog_flush (eventlog_t *log, zcd_error_t **err)
{
  /* A commit or compaction in flight ends first: its completion is what
   * moves the log's state, and its buffers are the kernel's until then. */
  eventlog_async_wait (log);
  if (s_write_pending (log, err) < 0)
    return -1;
  eventlog_maybe_compact (log);
  return 0;
}

int
eventlog_compact (eventlog_t *log, zcd_error_t **err)
{
  eventlog_async_wait (log);
  if (s_write_pending (log, err) < 0 || eventlog_rewrite (log, err) < 0)
    return -1;
  eventlog_compact_succeeded (log);
  return 0;
}

uint64_t
eventlog_last_seq (const eventlog_t *log)
{
  return log->last_seq;
}

uint64_t
eventlog_written_bytes (const eventlog_t *log)
{
  return log->written_bytes;
}

const metrics_hist_t *
eventlog_fsync_latency (const eventlog_t *log)
{
  return &log->fsync_latency;
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
