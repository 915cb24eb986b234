/* The durable event log, <state-dir>/events.log (PROTOCOL.md section 5,
 * DESIGN.md "State on disk").
 *
 * Used from the one loop thread: append the events of a loop turn; at the
 * turn's end (before-sleep hook) eventlog_commit_start writes what is
 * pending; publish once the commit says it is durable.  Every retained
 * record also lives in memory, so `events` replays never touch the disk.
 *
 * Group commit (issue 9: the loop thread never waits on the disk): with
 * io_uring (eventlog_commit_attach) a commit is one linked WRITE (the whole
 * pending batch, at its explicit file offset) + FDATASYNC run by the
 * kernel's workers; its completion arrives through the loop.  At most one
 * commit is in flight: events appended meanwhile wait for the next one, so
 * under load each fdatasync covers every event of the turns it took.
 * Without io_uring (the kernel or a seccomp profile refuses it) commits are
 * synchronous, as eventlog_flush.
 *
 * File format (all integers little-endian):
 *   header, 24 bytes: "ZCDEVLG1" | u64 seq_floor | u32 crc32c(first 16) | u32 0
 *   records:          u32 len | u32 crc32c(len bytes + payload) | payload
 * A payload is the msgpack Event map exactly as published.  `seq_floor` is a
 * lower bound for the newest seq ever assigned: it keeps seq contiguous even
 * when the records holding the newest seq are lost to a corrupt record (see
 * eventlog_open).  The header is only ever written by an atomic
 * write-and-rename (creation, compaction), records only at the end of the
 * file, so a crash can only tear the tail.
 *
 * Retention: the newest `retain` records are the log's contents.  The file
 * and memory hold up to retain + retain/10 + 64 records; past that the log is
 * compacted (rewritten with the newest durable `retain` records, atomically,
 * under an unpredictable temp name `<path>.tmp.<16 hex>` created with
 * O_EXCL).  With io_uring the rewrite leaves the loop too: after a commit,
 * the temp file is created, then WRITE + FSYNC + RENAMEAT + FSYNC(directory)
 * run linked in the kernel while commits pause (the pending batch just
 * grows); on completion the log's fd becomes the new file's.  A compaction
 * that fails (a full disk) fails no flush nor commit: it is logged once and
 * tried again after 10 s and another retain/10 + 64 appends; meanwhile the
 * file grows but memory keeps only the retained records.
 *
 * The log is the daemon's own: it is opened without following a symlink and
 * must be a regular file owned by the daemon's euid, or it is refused. */
#ifndef ZCD_EVENTLOG_H
#define ZCD_EVENTLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/loop.h"

#define EVENTLOG_DEFAULT_RETAIN 100000
/* No Event comes close: ids are at most 64 chars, types are short. */
#define EVENTLOG_MAX_RECORD 4096

typedef struct zcd_event
{
  uint64_t seq;     /* ignored by eventlog_append, which assigns it */
  const char *type; /* "start-container", "exit", ...; required */
  const char *id;   /* container id; required */
  const char *pid;  /* NULL when absent */
  bool has_status;
  uint32_t status;
  uint32_t system_pid; /* 0 = absent */
  bool has_oom_killed;
  bool oom_killed;
  int64_t ts; /* ns since the epoch; 0 = now */
  uint32_t uid; /* whose container (PROTOCOL.md "Callers"); 0 = root's, not written */
} zcd_event_t;

typedef struct eventlog eventlog_t;

/* Open `path`, or create it (atomically, with its header) when missing or
 * empty.  `retain` < 1 counts as 1 (the newest record must survive to carry
 * the seq).  Leftover compaction temp files are removed: regular files of
 * ours named `<path>.tmp.` + 16 hex digits, nothing else (a directory or
 * symlink by a similar name is left alone).  A symlink, a non-regular file
 * or a file of another owner at `path` is an error.
 *
 * Damage found while loading:
 * - a torn or corrupt record with no valid record after it (what a crash
 *   leaves) is cut off the file, with a warning;
 * - a corrupt record followed by valid ones (only media damage or a foreign
 *   writer can do that) keeps the records before it; the file is moved
 *   aside to `<path>.corrupt.<ns>` and a new one written holding those
 *   records and, as its seq_floor, the highest seq found anywhere in the old
 *   file, so no seq is ever handed out twice.  Replays across the lost
 *   range report `truncated`;
 * - a bad header is an error: nothing is trustworthy, and nothing is deleted.
 * On success *out is owned by the caller (eventlog_destroy). */
int eventlog_open (const char *path, uint64_t retain, eventlog_t **out, zcd_error_t **err);
/* Does not flush: call eventlog_flush first to keep what was appended.  A
 * commit or compaction in flight is waited for (the kernel may still read
 * the log's buffers), without its callback. */
void eventlog_destroy (eventlog_t **log);

/* Encode `ev` as the PROTOCOL.md Event map (keys seq, type, id, pid?,
 * status?, system_pid?, oom_killed?, ts), assign it seq = last + 1 and buffer
 * it for the next flush.  Returns the seq, or 0 when the event cannot be
 * stored (type or id NULL, encoding over EVENTLOG_MAX_RECORD, out of memory).
 * When `encoded` is not NULL it receives the Event bytes (owned by the log,
 * valid until the next append, flush or compaction). */
uint64_t eventlog_append (eventlog_t *log, const zcd_event_t *ev, const char **encoded,
                          size_t *encoded_len);

/* Synchronous (shutdown, tests, tools; the daemon's turns use
 * eventlog_commit_start): wait for a commit or compaction in flight (its
 * callback runs), write the buffered records and fdatasync once; then
 * compact if the file holds too many records (a synchronous rewrite of the
 * retained records, one turn in every retain/10 + 64 events).  The result
 * says whether the records
 * are durable, nothing else: a failed compaction is logged and retried later
 * (see above), never returned.  On a failed write the records stay buffered
 * (and replayable), eventlog_durable_seq stays where it was, and the next
 * flush writes them again at the same offset, so a failed write never leaves
 * garbage between records; while flushes keep failing nothing is compacted
 * and memory grows (those records are not durable yet, so none may go). */
int eventlog_flush (eventlog_t *log, zcd_error_t **err);

/* Flush, then rewrite the file with the newest `retain` records now, with no
 * backoff (tests, tools); unlike eventlog_flush, a failed compaction is
 * returned. */
int eventlog_compact (eventlog_t *log, zcd_error_t **err);

/* ---- group commit (core/eventlog_commit.c) ---- */

/* How a commit begun by eventlog_commit_start ended: err NULL when every
 * record it wrote is on disk (eventlog_durable_seq moved to the newest seq
 * it held), else why not.  A failed commit keeps its records buffered and
 * replayable, durable_seq where it was, and the next commit writes them
 * again at the same file offset (so a failed or short write never leaves
 * garbage between records); while commits fail nothing is compacted and
 * memory grows.  Runs in the loop thread; it must not destroy the log. */
typedef void (*eventlog_commit_fn) (eventlog_t *log, const zcd_error_t *err, void *arg);

/* Commit from now on through an io_uring whose completions `loop` reads,
 * reporting to fn(arg).  Returns -1 with *err when the ring cannot be set
 * up: fn is still used, but commits are then synchronous (eventlog_flush
 * inside eventlog_commit_start). */
int eventlog_commit_attach (eventlog_t *log, loop_t *loop, eventlog_commit_fn fn, void *arg,
                            zcd_error_t **err);
/* The end of a loop turn.  While a commit or compaction is in flight,
 * does nothing and returns false (what is pending waits: group commit).
 * Otherwise returns true and fn runs exactly once for this call: from the
 * loop when the commit completes, or before returning when nothing is
 * pending (then err is NULL: all is durable), when the commit cannot be
 * submitted, and without io_uring.  After a successful commit a due
 * compaction starts (see above). */
bool eventlog_commit_start (eventlog_t *log);
/* A commit or compaction is in flight. */
bool eventlog_commit_busy (const eventlog_t *log);

uint64_t eventlog_last_seq (const eventlog_t *log);   /* newest assigned, 0 if none */
/* Bytes written to the file so far (committed records, compactions). */
uint64_t eventlog_written_bytes (const eventlog_t *log);
/* Each commit's write + fdatasync, submit to completion (docs/metrics.md). */
const struct metrics_hist *eventlog_fsync_latency (const eventlog_t *log);
/* Newest seq known to be on disk: what may be published or replayed
 * (PROTOCOL.md: an event is logged before anyone sees it).  Equal to
 * eventlog_last_seq after a successful flush and on open; behind it while
 * appended records are unflushed, their commit is in flight or their write
 * failed; a compaction, failed or not, does not move it. */
uint64_t eventlog_durable_seq (const eventlog_t *log);
uint64_t eventlog_oldest_seq (const eventlog_t *log); /* oldest retained, 0 if none */
size_t eventlog_count (const eventlog_t *log);        /* retained events */
/* Records in memory: flushed and buffered (after a failed compaction the
 * file holds more, see above). */
size_t eventlog_stored_count (const eventlog_t *log);

/* Called per replayed event with the Event bytes (owned by the log).  A
 * non-zero return stops the replay and is returned by eventlog_replay.  It
 * must not append to the log. */
typedef int (*eventlog_replay_fn) (const char *encoded, size_t len, uint64_t seq, void *arg);

/* Calls fn, in seq order, for every retained event with seq > since_seq and
 * ts > since_ns (INT64_MIN: no time filter) and, when id is not NULL, that
 * container id.  *truncated (when not NULL) is set when events the request
 * asks for are no longer retained: older ones dropped by retention, or lost
 * to a corrupt record.  Appended but not yet flushed events are included.
 * Returns 0, or fn's non-zero value. */
int eventlog_replay (eventlog_t *log, uint64_t since_seq, int64_t since_ns, const char *id,
                     eventlog_replay_fn fn, void *arg, bool *truncated);

/* CRC-32C (Castagnoli), exposed for tests and tools. */
/* The `uid` of an encoded Event (0 when it has none: root's). */
uint32_t eventlog_event_uid (const char *encoded, size_t len);
uint32_t eventlog_crc32c (uint32_t crc, const void *data, size_t len);

#endif
