/* The `log` key's output path (PROTOCOL.md `create`): the relays read the
 * container's pipes (or its terminal) into a ring, and a writer thread
 * empties the ring into the rotated file (logfile.c).
 *
 * Why a thread: a write(2) to a regular file blocks for as long as the
 * disk takes (O_NONBLOCK means nothing there), and the shim's loop must
 * keep reading the pipes whatever the disk does, or the container blocks
 * on a full pipe.  So the loop only copies into the ring, under a lock the
 * writer never holds across a system call.  When the ring is full, the
 * loop tells a writer that is merely late (the CPUs did not run it yet)
 * from a disk that holds it: for the first it stops reading for a moment
 * (shim_outlog_holding: the pipe's own buffer, then the container, wait,
 * as for any reader), for the second it reads all the same and drops what
 * it read (counted: "the writer fell behind").  Late means: no write in
 * progress for longer than STALL_MS, the last write lost nothing, and the
 * ring moved within HOLD_MAX_MS; so a slow or full disk never holds the
 * container longer than that, and a busy machine loses nothing.  The
 * writer drops what the file refuses (ENOSPC, EIO, a rotation
 * blocked by a name that is not a regular file) and goes on with the next
 * bytes, so writing resumes by itself once there is room again; the first
 * thing it writes then is one line saying how much was lost and why.
 *
 * Memory: the ring is RING_SIZE, mapped and touched once at the start, so
 * the shim's RSS does not grow with what it relays; the thread's stack is
 * small and bounded; the code pages writing faults in are given back once
 * the output pauses (s_trim_when_idle).  The running total of dropped bytes goes to
 * `log-dropped` in the shim's directory (temp + rename), from the writer,
 * at most every DROPPED_EVERY_MS: the loop never waits on a disk for it. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "shim/shim.h"

#define RING_SIZE (256u << 10)
#define WRITER_STACK (64u << 10)
#define DROPPED_EVERY_MS 250
/* After this long without output, the writer gives back the code pages
 * its work faulted in (shim_drop_code_pages, as after the start). */
#define TRIM_IDLE_MS 500
#define DROPPED_FILE "log-dropped"
/* A write(2) that takes longer than this is a disk that holds the writer. */
#define STALL_MS 100
/* The longest the loop leaves the pipes unread for a ring that does not move. */
#define HOLD_MAX_MS 500
/* While it holds, the loop looks at the ring again this often. */
#define HOLD_POLL_MS 5

enum
{
  DROP_BEHIND = 1u << 0, /* the ring was full */
  DROP_FULL = 1u << 1,   /* ENOSPC, EDQUOT, EFBIG */
  DROP_IO = 1u << 2,     /* EIO */
  DROP_ROTATE = 1u << 3, /* a rotation failed */
  DROP_OTHER = 1u << 4,  /* any other errno */
};

typedef struct
{
  unsigned long long bytes;
  unsigned reasons;
} s_gap_t;

/* Static, like the rest of the shim's state: counted in pages. */
static struct
{
  bool active;  /* --log-path given and the file open */
  bool running; /* the writer thread runs */
  shim_logfile_t file;
  char *ring;
  pthread_mutex_t lock;
  pthread_cond_t wake; /* for the writer: data, closing */
  pthread_cond_t done; /* for the loop: the writer finished */
  /* Under lock.  head and tail count bytes ever put and taken: the ring
   * holds head - tail. */
  uint64_t head, tail;
  bool gap_open; /* the loop dropped bytes at ring position gap_at */
  uint64_t gap_at;
  s_gap_t gap;
  unsigned long long dropped; /* the running total */
  bool ready, closing, finished, abandoned;
  long long writing_since_ms; /* the writer is in a write since then (0: not) */
  long long moved_ms;         /* the ring's tail last moved */
  bool file_refusing;         /* the last write lost bytes to the file */
  /* The writer's own. */
  s_gap_t pending;               /* dropped, not yet said in the file */
  int rotate_errno, other_errno; /* the details of DROP_ROTATE, DROP_OTHER */
  char rotate_name[NAME_MAX + 16];
  unsigned long long dropped_written; /* what log-dropped says */
  long long dropped_written_ms;
  bool dropped_file_made;
  bool touched;       /* wrote since the code pages were last dropped */
  long long wrote_ms; /* when it last wrote */
} s_log = {
  .lock = PTHREAD_MUTEX_INITIALIZER,
  .file = { .dirfd = -1, .fd = -1 },
};

static long long
s_now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec
s_deadline (long long ms_from_now)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  ts.tv_sec += ms_from_now / 1000;
  ts.tv_nsec += (ms_from_now % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000)
    {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
  return ts;
}

/* ------------------------------------------------------------------ */
/* Opening (main thread, before the start)                            */

int
shim_outlog_open (const shim_args_t *args, zcd_error_t **err)
{
  if (shim_logfile_open (&s_log.file, args->log_path, args->log_max_bytes, args->log_max_files, err)
      < 0)
    return -1;
  /* Touched now, so the RSS it takes is taken at the start, not as the
   * output grows. */
  s_log.ring = mmap (NULL, RING_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (s_log.ring == MAP_FAILED)
    {
      s_log.ring = NULL;
      shim_logfile_close (&s_log.file);
      return zcd_fail_errno (err, errno, "log: map its buffer");
    }
  memset (s_log.ring, 0, RING_SIZE);
  /* Not into the delete helper, forked later, which never reads it and
   * lives as long as the container: its copy of these pages would become
   * its own as the shim writes them (256 KiB more per container). */
  madvise (s_log.ring, RING_SIZE, MADV_DONTFORK);
  pthread_condattr_t attr;
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (&s_log.wake, &attr);
  pthread_cond_init (&s_log.done, &attr);
  pthread_condattr_destroy (&attr);
  s_log.active = true;
  return 0;
}

bool
shim_outlog_active (void)
{
  return s_log.active;
}

/* ------------------------------------------------------------------ */
/* The loop's side                                                     */

/* The loop's own: some relay left its pipe unread in this round. */
static bool s_held_this_round;

void
shim_outlog_round_begin (void)
{
  s_held_this_round = false;
}

/* Under lock: the ring is full and its writer only late. */
static bool
s_hold_locked (void)
{
  if (!s_log.running || s_log.head - s_log.tail != RING_SIZE || s_log.finished)
    return false;
  long long now = s_now_ms ();
  bool disk_holds = s_log.file_refusing
                    || (s_log.writing_since_ms && now - s_log.writing_since_ms > STALL_MS)
                    || now - s_log.moved_ms > HOLD_MAX_MS;
  return !disk_holds;
}

bool
shim_outlog_holding (void)
{
  if (!s_log.running)
    return false;
  pthread_mutex_lock (&s_log.lock);
  bool hold = s_hold_locked ();
  pthread_mutex_unlock (&s_log.lock);
  s_held_this_round = s_held_this_round || hold;
  return hold;
}

int
shim_outlog_poll_ms (void)
{
  return s_held_this_round ? HOLD_POLL_MS : -1;
}

/* Under lock: n bytes read and thrown away at the ring's head. */
static void
s_drop_at_head (size_t n)
{
  if (!s_log.gap_open)
    {
      s_log.gap_open = true;
      s_log.gap_at = s_log.head;
    }
  s_log.gap.bytes += n;
  s_log.gap.reasons |= DROP_BEHIND;
  s_log.dropped += n;
}

ssize_t
shim_outlog_read (int src, char *scratch, size_t scratch_len)
{
  pthread_mutex_lock (&s_log.lock);
  size_t free_bytes = RING_SIZE - (size_t)(s_log.head - s_log.tail);
  size_t at = (size_t)(s_log.head % RING_SIZE);
  /* The relay was watched when the round began, but the other relay's
   * read in the same round may have filled the ring since: a writer that
   * is only late gets the bytes later, from the pipe, not a gap. */
  bool hold = free_bytes == 0 && s_hold_locked ();
  pthread_mutex_unlock (&s_log.lock);
  if (hold)
    {
      s_held_this_round = true;
      errno = EAGAIN;
      return -1;
    }
  ssize_t n;
  if (free_bytes == 0)
    {
      /* Read all the same: the container must not wait for the disk. */
      n = read (src, scratch, scratch_len);
      if (n > 0)
        {
          pthread_mutex_lock (&s_log.lock);
          s_drop_at_head ((size_t)n);
          pthread_mutex_unlock (&s_log.lock);
        }
      return n;
    }
  /* Free space is the loop's alone until head moves: no lock to fill it. */
  size_t first = RING_SIZE - at < free_bytes ? RING_SIZE - at : free_bytes;
  struct iovec iov[2] = { { s_log.ring + at, first }, { s_log.ring, free_bytes - first } };
  n = readv (src, iov, iov[1].iov_len ? 2 : 1);
  if (n > 0)
    {
      pthread_mutex_lock (&s_log.lock);
      bool was_empty = s_log.head == s_log.tail;
      s_log.head += (uint64_t)n;
      if (was_empty)
        {
          /* The writer's turn starts now, not at its last write. */
          s_log.moved_ms = s_now_ms ();
          pthread_cond_signal (&s_log.wake);
        }
      pthread_mutex_unlock (&s_log.lock);
    }
  return n;
}

void
shim_outlog_put (const char *data, size_t len)
{
  if (!s_log.active)
    return;
  if (!s_log.running)
    {
      shim_logfile_write (&s_log.file, data, len);
      return;
    }
  pthread_mutex_lock (&s_log.lock);
  size_t free_bytes = RING_SIZE - (size_t)(s_log.head - s_log.tail);
  size_t take = len < free_bytes ? len : free_bytes;
  size_t at = (size_t)(s_log.head % RING_SIZE);
  size_t first = RING_SIZE - at < take ? RING_SIZE - at : take;
  memcpy (s_log.ring + at, data, first);
  memcpy (s_log.ring, data + first, take - first);
  if (s_log.head == s_log.tail && take > 0)
    pthread_cond_signal (&s_log.wake);
  s_log.head += take;
  if (take < len)
    s_drop_at_head (len - take);
  pthread_mutex_unlock (&s_log.lock);
}

/* ------------------------------------------------------------------ */
/* The writer                                                          */

/* log-dropped, replaced whole.  `tmp` differs between the writer and the
 * loop's last word (shim_outlog_finish), which never race on one name. */
static void
s_write_dropped_file (unsigned long long value, const char *tmp)
{
  char text[32];
  int n = snprintf (text, sizeof text, "%llu", value);
  int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0)
    return;
  bool ok = write (fd, text, (size_t)n) == n;
  close (fd);
  if (!ok || rename (tmp, DROPPED_FILE) < 0)
    unlink (tmp);
}

/* Under lock (released around the file): the count, when it changed and
 * DROPPED_EVERY_MS have passed since the last write (force: now). */
static void
s_update_dropped (bool force)
{
  long long now = s_now_ms ();
  bool changed = s_log.dropped != s_log.dropped_written || !s_log.dropped_file_made;
  if (!changed || (!force && now - s_log.dropped_written_ms < DROPPED_EVERY_MS))
    return;
  unsigned long long value = s_log.dropped;
  pthread_mutex_unlock (&s_log.lock);
  s_write_dropped_file (value, DROPPED_FILE ".tmp");
  pthread_mutex_lock (&s_log.lock);
  s_log.dropped_written = value;
  s_log.dropped_written_ms = now;
  s_log.dropped_file_made = true;
}

static const char *
s_errno_text (int e)
{
  const char *text = strerrordesc_np (e);
  return text ? text : "unknown error";
}

/* "<reason>; <reason>" of a gap. */
static void
s_reasons_text (unsigned reasons, char *out, size_t cap)
{
  size_t len = 0;
  out[0] = '\0';
  for (unsigned bit = 1; bit <= DROP_OTHER; bit <<= 1)
    {
      if (!(reasons & bit) || len >= cap)
        continue;
      const char *sep = len ? "; " : "";
      int n = 0;
      if (bit == DROP_BEHIND)
        n = snprintf (out + len, cap - len, "%sthe writer fell behind", sep);
      else if (bit == DROP_FULL)
        n = snprintf (out + len, cap - len, "%sno space left", sep);
      else if (bit == DROP_IO)
        n = snprintf (out + len, cap - len, "%sI/O error", sep);
      else if (bit == DROP_ROTATE && s_log.rotate_errno == EEXIST)
        n = snprintf (out + len, cap - len, "%scannot rotate: `%s` is not a regular file", sep,
                      s_log.rotate_name);
      else if (bit == DROP_ROTATE)
        n = snprintf (out + len, cap - len, "%scannot rotate `%s`: %s", sep, s_log.rotate_name,
                      s_errno_text (s_log.rotate_errno));
      else
        n = snprintf (out + len, cap - len, "%s%s", sep, s_errno_text (s_log.other_errno));
      len = n > 0 ? len + (size_t)n : len;
    }
}

/* Why the file took less than it was given. */
static unsigned
s_reason_of_file (void)
{
  const shim_logfile_t *f = &s_log.file;
  if (f->error_rotating)
    {
      s_log.rotate_errno = f->error;
      snprintf (s_log.rotate_name, sizeof s_log.rotate_name, "%s", f->error_name);
      return f->error == ENOSPC || f->error == EDQUOT ? DROP_FULL : DROP_ROTATE;
    }
  if (f->error == ENOSPC || f->error == EDQUOT || f->error == EFBIG)
    return DROP_FULL;
  if (f->error == EIO)
    return DROP_IO;
  s_log.other_errno = f->error;
  return DROP_OTHER;
}

/* The line that marks a gap, once the file takes bytes again.  False when
 * it took none of it (the gap stays pending). */
static bool
s_write_gap_line (void)
{
  char reasons[512], line[640];
  s_reasons_text (s_log.pending.reasons, reasons, sizeof reasons);
  int n = snprintf (line, sizeof line, "zcd-shim: %llu bytes of output dropped (%s)\n",
                    s_log.pending.bytes, reasons);
  size_t len = n > 0 && (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
  if (!shim_logfile_write_line (&s_log.file, line, len))
    return false;
  s_log.pending = (s_gap_t){ 0, 0 };
  return true;
}

/* Write one span of the ring (no lock held); what it could not write is
 * dropped and returned. */
static size_t
s_write_span (const char *data, size_t len)
{
  size_t written = 0;
  unsigned reason = 0;
  if (s_log.pending.bytes > 0 && !s_write_gap_line ())
    reason = s_reason_of_file ();
  else
    {
      written = shim_logfile_write (&s_log.file, data, len);
      if (written < len)
        reason = s_reason_of_file ();
    }
  if (written < len)
    {
      s_log.pending.bytes += len - written;
      s_log.pending.reasons |= reason;
    }
  return len - written;
}

/* Under lock, the ring empty: once idle for TRIM_IDLE_MS, the code pages
 * go.  Writing touches code the idle loop never runs (the file's paths,
 * rotation, formatting), each page faulted in with its neighbours (64 KiB
 * around a fault); they are shared page cache, but they count in the RSS
 * of every shim, and an idle container's shim should keep only what it
 * uses (shim/main.c). */
static void
s_trim_when_idle (void)
{
  if (!s_log.touched || s_now_ms () - s_log.wrote_ms < TRIM_IDLE_MS)
    return;
  s_log.touched = false;
  pthread_mutex_unlock (&s_log.lock);
  shim_drop_code_pages ();
  pthread_mutex_lock (&s_log.lock);
}

/* Under lock: wait for bytes, the end, or the next due count update or
 * trim. */
static void
s_wait (void)
{
  long long until = -1;
  if (s_log.dropped != s_log.dropped_written)
    until = s_log.dropped_written_ms + DROPPED_EVERY_MS;
  if (s_log.touched && (until < 0 || s_log.wrote_ms + TRIM_IDLE_MS < until))
    until = s_log.wrote_ms + TRIM_IDLE_MS;
  if (until < 0)
    {
      pthread_cond_wait (&s_log.wake, &s_log.lock);
      return;
    }
  long long left = until - s_now_ms ();
  if (left > 0)
    {
      struct timespec deadline = s_deadline (left);
      pthread_cond_timedwait (&s_log.wake, &s_log.lock, &deadline);
    }
  s_update_dropped (false);
  if (s_log.head == s_log.tail)
    s_trim_when_idle ();
}

/* Under lock: the next span to write, which ends at the loop's gap (so
 * the gap line lands where the bytes went missing) or the ring's end. */
static size_t
s_next_span (size_t *at)
{
  if (s_log.gap_open && s_log.gap_at == s_log.tail)
    {
      s_log.pending.bytes += s_log.gap.bytes;
      s_log.pending.reasons |= s_log.gap.reasons;
      s_log.gap = (s_gap_t){ 0, 0 };
      s_log.gap_open = false;
    }
  uint64_t end = s_log.head;
  if (s_log.gap_open && s_log.gap_at < end)
    end = s_log.gap_at;
  *at = (size_t)(s_log.tail % RING_SIZE);
  size_t len = (size_t)(end - s_log.tail);
  return len < RING_SIZE - *at ? len : RING_SIZE - *at;
}

static void *
s_writer_main (void *unused)
{
  (void)unused;
  pthread_mutex_lock (&s_log.lock);
  s_log.ready = true;
  s_log.moved_ms = s_now_ms ();
  pthread_cond_broadcast (&s_log.done);
  /* The count exists from the start: a counter that appears only once it
   * is non-zero has no start to count from. */
  s_update_dropped (true);
  for (;;)
    {
      size_t at = 0, len = s_next_span (&at);
      if (len == 0)
        {
          if (s_log.closing)
            break;
          s_wait ();
          continue;
        }
      s_log.writing_since_ms = s_now_ms ();
      pthread_mutex_unlock (&s_log.lock);
      size_t lost = s_write_span (s_log.ring + at, len);
      pthread_mutex_lock (&s_log.lock);
      s_log.touched = true;
      s_log.wrote_ms = s_now_ms ();
      s_log.writing_since_ms = 0;
      s_log.moved_ms = s_log.wrote_ms;
      s_log.file_refusing = lost > 0;
      s_log.tail += len;
      if (s_log.abandoned)
        break; /* the loop counted it all when it gave up on us */
      s_log.dropped += lost;
      s_update_dropped (false);
    }
  /* What was lost at the very end is said too, if the file takes it. */
  if (s_log.pending.bytes > 0 && !s_log.abandoned)
    {
      pthread_mutex_unlock (&s_log.lock);
      s_write_gap_line ();
      pthread_mutex_lock (&s_log.lock);
    }
  if (!s_log.abandoned)
    s_update_dropped (true);
  s_log.finished = true;
  pthread_cond_broadcast (&s_log.done);
  /* Never returns: a thread's exit unregisters its rseq area, a system
   * call the sandbox refuses, and glibc aborts on that refusal.  The
   * process's exit ends this thread. */
  for (;;)
    pthread_cond_wait (&s_log.wake, &s_log.lock);
  return NULL;
}

int
shim_outlog_start (zcd_error_t **err)
{
  if (!s_log.active)
    return 0;
  pthread_attr_t attr;
  pthread_attr_init (&attr);
  pthread_attr_setstacksize (&attr, WRITER_STACK);
  pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  /* Every signal stays the loop's: SIGCHLD is read from its signalfd, and
   * a thread that did not block it would take it (and lose it). */
  sigset_t all, old;
  sigfillset (&all);
  pthread_sigmask (SIG_BLOCK, &all, &old);
  pthread_t thread;
  int rc = pthread_create (&thread, &attr, s_writer_main, NULL);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  pthread_attr_destroy (&attr);
  if (rc != 0)
    return zcd_fail_errno (err, rc, "log: start its writer thread");
  s_log.running = true;
  return 0;
}

void
shim_outlog_wait_ready (void)
{
  if (!s_log.running)
    return;
  pthread_mutex_lock (&s_log.lock);
  while (!s_log.ready)
    pthread_cond_wait (&s_log.done, &s_log.lock);
  pthread_mutex_unlock (&s_log.lock);
}

unsigned long long
shim_outlog_finish (int timeout_ms)
{
  if (!s_log.active)
    return 0;
  if (!s_log.running)
    return s_log.dropped;
  pthread_mutex_lock (&s_log.lock);
  s_log.closing = true;
  pthread_cond_signal (&s_log.wake);
  struct timespec until = s_deadline (timeout_ms);
  while (!s_log.finished)
    if (pthread_cond_timedwait (&s_log.done, &s_log.lock, &until) == ETIMEDOUT)
      break;
  unsigned long long total = s_log.dropped;
  if (!s_log.finished)
    {
      /* The disk holds the writer: what it has not taken is lost with the
       * shim, and counted so. */
      total += s_log.head - s_log.tail;
      s_log.dropped = total;
      s_log.abandoned = true;
    }
  bool write_it = !s_log.finished;
  pthread_mutex_unlock (&s_log.lock);
  if (write_it)
    s_write_dropped_file (total, DROPPED_FILE ".tmp.exit");
  return total;
}
