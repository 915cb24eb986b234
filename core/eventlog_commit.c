/* The event log's group commit and compaction through io_uring (issue 9:
 * the loop thread never waits on the disk); guarantees in core/eventlog.h.
 *
 * At most one chain is in flight, a commit or a compaction:
 *   commit:     WRITE(batch, at its file offset) -> FDATASYNC [-> FSYNC(dir)]
 *   compaction: WRITE(temp) -> FSYNC(temp) -> RENAMEAT(temp, log) -> FSYNC(dir)
 * Appends made meanwhile wait in memory for the next commit.  A batch is
 * copied out of the image before it is submitted: appends may move the
 * image (realloc) while the kernel still reads the batch. */
#include "core/eventlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/eventlog_int.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/uring.h"

/* One chain at a time needs URING_CHAIN_MAX slots; twice that is ample. */
#define RING_ENTRIES 16

typedef enum
{
  IDLE,
  COMMITTING,
  COMPACTING,
} busy_t;

struct eventlog_async
{
  zcd_uring_t *uring;
  eventlog_commit_fn fn;
  void *arg;
  int dirfd;  /* the log's directory: renames and its fsync */
  char *base; /* the log's name in it */
  busy_t busy;
  zcd_uring_chain_t chain;
  /* The commit in flight: bytes [image_from, image_to) of the image, as
   * they were at the start, written at file offset `off`. */
  char *batch;
  size_t batch_cap, batch_len, written, image_to;
  off_t off;
  uint64_t seq; /* the newest seq in the batch */
  uint64_t submit_ns; /* monotonic, the commit's first submit (fsync latency) */
  bool sync_dir;
  /* The rename of a compaction is done but its directory's fsync failed:
   * the next commit syncs the directory too, before it counts as durable. */
  bool dir_unsynced;
  /* The compaction in flight. */
  char *file; /* header + retained records */
  size_t file_len, drop;
  uint64_t floor;
  int tmpfd;
  char tmpname[300];
};

static void s_commit_done (zcd_uring_chain_t *chain, void *arg);
static void s_compact_done (zcd_uring_chain_t *chain, void *arg);

static void
s_report (eventlog_t *log, const zcd_error_t *err)
{
  if (log->async->fn)
    log->async->fn (log, err, log->async->arg);
}

/* ---- set-up ---- */

int
eventlog_commit_attach (eventlog_t *log, loop_t *loop, eventlog_commit_fn fn, void *arg,
                        zcd_error_t **err)
{
  struct eventlog_async *a = calloc (1, sizeof *a);
  if (a == NULL)
    return zcd_fail_errno (err, ENOMEM, "event log: commit");
  a->fn = fn;
  a->arg = arg;
  a->dirfd = a->tmpfd = -1;
  log->async = a;
  const char *slash = strrchr (log->path, '/');
  cleanup_free char *dir = slash ? strndup (log->path, (size_t) (slash - log->path) + 1)
                                 : strdup (".");
  a->base = strdup (slash ? slash + 1 : log->path);
  if (dir == NULL || a->base == NULL)
    return zcd_fail_errno (err, ENOMEM, "event log: commit");
  a->dirfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (a->dirfd < 0)
    return zcd_fail_errno (err, errno, "event log: open `%s`", dir);
  a->uring = zcd_uring_new (loop, RING_ENTRIES, err);
  return a->uring ? 0 : -1;
}

void
eventlog_async_free (eventlog_t *log)
{
  struct eventlog_async *a = log->async;
  if (a == NULL)
    return;
  /* Waits for the kernel to be done with our buffers.  A compaction cut
   * short here renamed its file or left a temp that the next open sweeps;
   * either way the file at the log's path is whole. */
  zcd_uring_destroy (&a->uring);
  if (a->tmpfd >= 0)
    close (a->tmpfd);
  if (a->dirfd >= 0)
    close (a->dirfd);
  free (a->batch);
  free (a->file);
  free (a->base);
  free (a);
  log->async = NULL;
}

void
eventlog_async_wait (eventlog_t *log)
{
  struct eventlog_async *a = log->async;
  while (a && a->uring && a->busy != IDLE && zcd_uring_in_flight (a->uring) > 0)
    zcd_uring_wait (a->uring);
}

bool
eventlog_commit_busy (const eventlog_t *log)
{
  return log->async && log->async->busy != IDLE;
}

/* ---- commit ---- */

/* Submit what is left of the batch: the rest of a short write again, then
 * the fdatasync that makes it durable. */
static int
s_submit_batch (eventlog_t *log, zcd_error_t **err)
{
  struct eventlog_async *a = log->async;
  zcd_uring_chain_begin (&a->chain, s_commit_done, log);
  struct io_uring_sqe *sqe = zcd_uring_chain_add (a->uring, &a->chain);
  if (sqe == NULL)
    return zcd_fail (err, ZCD_E_UNAVAILABLE, "write `%s`: the io_uring is full", log->path);
  io_uring_prep_write (sqe, log->fd, a->batch + a->written, (unsigned) (a->batch_len - a->written),
                       (uint64_t) a->off + a->written);
  io_uring_prep_fsync (zcd_uring_chain_add (a->uring, &a->chain), log->fd, IORING_FSYNC_DATASYNC);
  a->sync_dir = a->dir_unsynced;
  if (a->sync_dir)
    io_uring_prep_fsync (zcd_uring_chain_add (a->uring, &a->chain), a->dirfd, 0);
  return zcd_uring_chain_submit (a->uring, &a->chain, err);
}

/* A commit that cannot start at all ends here, as a failed one. */
static bool
s_commit_fail_now (eventlog_t *log, zcd_error_t *err)
{
  if (log->async)
    {
      log->async->busy = IDLE;
      s_report (log, err);
    }
  zcd_error_free (&err);
  return true;
}

static void s_maybe_compact (eventlog_t *log);

bool
eventlog_commit_start (eventlog_t *log)
{
  struct eventlog_async *a = log->async;
  zcd_error_t *err = NULL;
  if (a == NULL || a->uring == NULL)
    {
      if (eventlog_flush (log, &err) < 0)
        return s_commit_fail_now (log, err);
      if (a)
        s_report (log, NULL);
      return true;
    }
  if (a->busy != IDLE)
    return false;
  if (log->flushed_len == log->image_len && !a->dir_unsynced)
    {
      s_report (log, NULL);
      s_maybe_compact (log);
      return true;
    }
  if (log->fd < 0 && eventlog_open_fd (log, &err) < 0)
    return s_commit_fail_now (log, err);
  size_t len = log->image_len - log->flushed_len;
  if (eventlog_reserve ((void **) &a->batch, &a->batch_cap, len, 1) < 0)
    {
      zcd_fail_errno (&err, ENOMEM, "write `%s`", log->path);
      return s_commit_fail_now (log, err);
    }
  /* At the known end rather than O_APPEND: a retry after a failed or short
   * write rewrites the same bytes in place instead of leaving a torn
   * record in the middle. */
  memcpy (a->batch, log->image + log->flushed_len, len);
  a->batch_len = len;
  a->written = 0;
  a->off = (off_t) (log->flushed_len + log->file_skip);
  a->image_to = log->image_len;
  a->seq = log->last_seq;
  a->submit_ns = zcd_mono_ns ();
  a->busy = COMMITTING;
  if (s_submit_batch (log, &err) < 0)
    return s_commit_fail_now (log, err);
  return true;
}

static void
s_commit_done (zcd_uring_chain_t *chain, void *arg)
{
  eventlog_t *log = arg;
  struct eventlog_async *a = log->async;
  int wres = chain->res[0], sres = chain->res[1], dres = a->sync_dir ? chain->res[2] : 0;
  size_t left = a->batch_len - a->written; /* 0: only the directory to sync */
  cleanup_error zcd_error_t *err = NULL;
  if (wres > 0 && (size_t) wres < left)
    {
      /* Short (the link cancelled the fdatasync): write the rest. */
      a->written += (size_t) wres;
      if (s_submit_batch (log, &err) == 0)
        return;
    }
  else if (wres < 0 || (wres == 0 && left > 0) || sres < 0 || dres < 0)
    {
      /* flushed_len does not move: a failed fsync may have dropped the
       * dirty pages, and the retry re-dirties them. */
      int e = wres < 0 ? -wres : wres == 0 && left > 0 ? EIO : sres < 0 ? -sres : -dres;
      zcd_fail_errno (&err, e, "write `%s`", log->path);
    }
  a->busy = IDLE;
  /* Until the fdatasync's completion: the write before it is mostly a copy
   * into the page cache, the fdatasync is the wait on the disk. */
  metrics_hist_observe (&log->fsync_latency, zcd_mono_ns () - a->submit_ns);
  if (err)
    {
      s_report (log, err);
      return;
    }
  log->written_bytes += a->batch_len;
  if (a->sync_dir)
    a->dir_unsynced = false;
  /* Only appends touched the image meanwhile: the batch's bytes are still
   * where they were. */
  log->flushed_len = a->image_to;
  log->durable_seq = a->seq;
  s_report (log, NULL);
  s_maybe_compact (log);
}

/* ---- compaction ---- */

/* Records whose frames are all on disk (the first `n` of recs). */
static size_t
s_flushed_records (const eventlog_t *log)
{
  size_t lo = 0, hi = log->nrecs;
  while (lo < hi)
    {
      size_t mid = lo + (hi - lo) / 2;
      if (log->recs[mid].off < log->flushed_len)
        lo = mid + 1;
      else
        hi = mid;
    }
  return lo;
}

static void
s_compact_failed (eventlog_t *log, zcd_error_t *err)
{
  zcd_error_wrap (&err, "compact event log");
  eventlog_compact_failed (log, err);
  zcd_error_free (&err);
  eventlog_trim (log);
}

/* Build header + the retained flushed records, create the temp file (an
 * open, not a wait on the disk) and hand the rest to the ring.  Returns
 * false when nothing is in flight afterwards. */
static bool
s_compact_start (eventlog_t *log)
{
  struct eventlog_async *a = log->async;
  zcd_error_t *err = NULL;
  /* Records appended during the last commit are not on disk yet and stay
   * out of the new file (they follow it, as appends). */
  size_t flushed = s_flushed_records (log);
  size_t drop = eventlog_first_retained (log);
  if (drop > flushed)
    drop = flushed;
  size_t keep_off = drop < log->nrecs ? log->recs[drop].off : log->flushed_len;
  size_t keep_len = log->flushed_len - keep_off;
  free (a->file);
  a->file = malloc (HEADER_SIZE + keep_len);
  if (a->file == NULL)
    {
      zcd_fail_errno (&err, ENOMEM, "write `%s`", a->base);
      s_compact_failed (log, err);
      return false;
    }
  /* The floor carries the seq even if every record were lost; only durable
   * seqs count (the unflushed ones were never published). */
  a->floor = log->durable_seq;
  eventlog_fill_header (a->file, a->floor);
  memcpy (a->file + HEADER_SIZE, log->image + keep_off, keep_len);
  a->file_len = HEADER_SIZE + keep_len;
  a->drop = drop;
  char hex[17];
  zcd_random_hex (hex, 16);
  snprintf (a->tmpname, sizeof a->tmpname, "%s.tmp.%s", a->base, hex);
  a->tmpfd = openat (a->dirfd, a->tmpname, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     0600);
  if (a->tmpfd < 0)
    {
      zcd_fail_errno (&err, errno, "open `%s`", a->tmpname);
      s_compact_failed (log, err);
      return false;
    }
  zcd_uring_chain_begin (&a->chain, s_compact_done, log);
  struct io_uring_sqe *sqe = zcd_uring_chain_add (a->uring, &a->chain);
  if (sqe == NULL)
    {
      unlinkat (a->dirfd, a->tmpname, 0);
      close (a->tmpfd);
      a->tmpfd = -1;
      zcd_fail (&err, ZCD_E_UNAVAILABLE, "the io_uring is full");
      s_compact_failed (log, err);
      return false;
    }
  io_uring_prep_write (sqe, a->tmpfd, a->file, (unsigned) a->file_len, 0);
  io_uring_prep_fsync (zcd_uring_chain_add (a->uring, &a->chain), a->tmpfd, 0);
  io_uring_prep_renameat (zcd_uring_chain_add (a->uring, &a->chain), a->dirfd, a->tmpname,
                          a->dirfd, a->base, 0);
  io_uring_prep_fsync (zcd_uring_chain_add (a->uring, &a->chain), a->dirfd, 0);
  a->busy = COMPACTING;
  zcd_uring_chain_submit (a->uring, &a->chain, NULL);
  return true;
}

static void
s_compact_done (zcd_uring_chain_t *chain, void *arg)
{
  eventlog_t *log = arg;
  struct eventlog_async *a = log->async;
  const int *res = chain->res;
  a->busy = IDLE;
  free (a->file);
  a->file = NULL;
  if (res[2] < 0)
    {
      /* Not renamed: the old file is the log, the temp is litter. */
      int e = (size_t) res[0] != a->file_len ? (res[0] < 0 ? -res[0] : ENOSPC)
              : res[1] < 0                   ? -res[1]
                                             : -res[2];
      zcd_error_t *err = NULL;
      zcd_fail_errno (&err, e, "write `%s`", a->tmpname);
      unlinkat (a->dirfd, a->tmpname, 0);
      close (a->tmpfd);
      a->tmpfd = -1;
      s_compact_failed (log, err);
      return;
    }
  log->written_bytes += a->file_len;
  /* Renamed: the new file is the log now, whatever else happens, and
   * memory follows it. */
  if (log->fd >= 0)
    close (log->fd);
  log->fd = a->tmpfd;
  a->tmpfd = -1;
  eventlog_adopt_compacted (log, a->drop, a->floor);
  eventlog_compact_succeeded (log);
  if (res[3] < 0)
    {
      a->dir_unsynced = true;
      log_warn ("event log `%s`: fsync of its directory after a compaction: %s (the next "
                "commit tries again)",
                log->path, strerror (-res[3]));
    }
}

/* After a commit: compact when the file holds too many records (in flight
 * from here), or keep memory at retention while compactions fail. */
static void
s_maybe_compact (eventlog_t *log)
{
  if (log->async->busy == IDLE && eventlog_compact_due (log) && s_compact_start (log))
    return;
  eventlog_trim (log);
}
