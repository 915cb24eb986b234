/* The event log's private parts, shared by core/eventlog*.c only: the
 * struct and the few functions one file of the log calls in another.
 *
 *   eventlog.c         records in memory, append, flush, compaction, replay
 *   eventlog_commit.c  group commit and compaction through io_uring
 *   eventlog_load.c    open, load, recovery of a torn or corrupt file, temps
 *   eventlog_record.c  CRC-32C, header, frames, the Event map both ways */
#ifndef ZCD_EVENTLOG_INT_H
#define ZCD_EVENTLOG_INT_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/eventlog.h"
#include "core/metrics.h"

#define HEADER_SIZE 24
#define FRAME_SIZE 8
/* The header's first 8 bytes (no NUL in the file). */
#define EVENTLOG_MAGIC "ZCDEVLG1"

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
  uint64_t durable_seq;      /* every seq up to this one is on disk */
  uint64_t compact_failures; /* in a row; 0 = the last one worked */
  uint64_t compact_retry_ns; /* zcd_mono_ns before which none is tried */
  /* Commits through io_uring (eventlog_commit.c); NULL: synchronous. */
  struct eventlog_async *async;
  /* docs/metrics.md: bytes that reached the file (records and compaction
   * rewrites), and each commit's write + fdatasync from submit to
   * completion. */
  uint64_t written_bytes;
  metrics_hist_t fsync_latency;
};

/* What a record's Event map says, as far as the index needs it. */
typedef struct
{
  uint64_t seq;
  int64_t ts;
  size_t id_off, id_len;
} eventlog_indexed_t;

/* eventlog_record.c */
void eventlog_put_u32 (char *p, uint32_t v); /* little-endian */
uint32_t eventlog_get_u32 (const char *p);
uint64_t eventlog_get_u64 (const char *p);
/* CRC of a frame: its length field and its payload of `len` bytes. */
uint32_t eventlog_frame_crc (const char *frame, uint32_t len);
/* The HEADER_SIZE bytes of a header with this seq_floor. */
void eventlog_fill_header (char *h, uint64_t seq_floor);
/* Checks that `payload` is exactly one Event map and pulls out its index. */
bool eventlog_index_event (const char *payload, size_t len, eventlog_indexed_t *ev);
/* Length of the valid record at buf[off], 0 when there is none there. */
size_t eventlog_check_frame (const char *buf, size_t len, size_t off, eventlog_indexed_t *ev);
/* `ev` as the PROTOCOL.md Event map, with this seq. */
void eventlog_pack_event (msgpack_packer *pk, const zcd_event_t *ev, uint64_t seq);

/* eventlog.c */
/* Grow *p (of *cap elements of `elem` bytes) to hold `need`; -1 when out of
 * memory (then *p is unchanged). */
int eventlog_reserve (void **p, size_t *cap, size_t need, size_t elem);
/* Index the record whose frame is at image[off]; raises last_seq. */
int eventlog_push_rec (eventlog_t *log, const eventlog_indexed_t *ev, size_t off, size_t plen);
/* Rewrite the file as header + the newest `retain` records (all flushed). */
int eventlog_rewrite (eventlog_t *log, zcd_error_t **err);
/* Compact when the file holds too many records, with backoff on failure;
 * synchronously (eventlog_flush). */
void eventlog_maybe_compact (eventlog_t *log);
/* Index of the oldest retained record (the ones before it may go). */
size_t eventlog_first_retained (const eventlog_t *log);
/* The file holds too many records and no failed try is too recent. */
bool eventlog_compact_due (const eventlog_t *log);
/* After the rename of a compacted file (header with seq_floor, then the
 * flushed records from recs[drop] on): memory follows it. */
void eventlog_adopt_compacted (eventlog_t *log, size_t drop, uint64_t seq_floor);
/* Drop from memory the flushed records past retention that a failed
 * compaction left in the file. */
void eventlog_trim (eventlog_t *log);
void eventlog_compact_succeeded (eventlog_t *log);
/* Logged once per failing spell; sets the backoff.  Does not trim. */
void eventlog_compact_failed (eventlog_t *log, const zcd_error_t *err);

/* eventlog_commit.c */
/* Block until no commit or compaction is in flight (no-op when
 * synchronous): the synchronous paths start from a settled log. */
void eventlog_async_wait (eventlog_t *log);
/* Wait for what is in flight without running callbacks, then free. */
void eventlog_async_free (eventlog_t *log);

/* eventlog_load.c */
/* (Re)open log->path as the daemon's own regular file into log->fd. */
int eventlog_open_fd (eventlog_t *log, zcd_error_t **err);

#endif
