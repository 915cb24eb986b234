/* core/eventlog_commit: the group commit through io_uring driven by a real
 * loop (issue 9).  Appends made while a commit is in flight wait for the
 * next one; durable_seq moves only when a commit completes; a write that
 * fails on a full disk keeps its records and the retry writes the same
 * bytes at the same offset; a compaction in flight pauses commits while
 * appends go on; without io_uring, commits are synchronous. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/eventlog.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/loop.h"

#define HEADER 24

typedef struct
{
  char dir[64];
  char path[128];
  char fs[96]; /* a tiny tmpfs, "" when it could not be mounted */
  char why_not[128];
  loop_t *loop;
  eventlog_t *log;
  int commits;        /* callbacks run */
  int failures;       /* ... with an error */
  char last_err[256]; /* the last one's message */
  zcd_code_t last_code;
  bool timed_out;
} fixture_t;

static int
s_setup (void **state)
{
  fixture_t *f = calloc (1, sizeof *f);
  strcpy (f->dir, "/tmp/test_evcommit.XXXXXX");
  if (mkdtemp (f->dir) == NULL)
    return -1;
  snprintf (f->path, sizeof f->path, "%s/events.log", f->dir);
  f->loop = loop_new ();
  *state = f;
  return 0;
}

static int
s_teardown (void **state)
{
  fixture_t *f = *state;
  eventlog_destroy (&f->log);
  loop_destroy (&f->loop);
  if (f->fs[0] && umount2 (f->fs, MNT_DETACH) < 0)
    fprintf (stderr, "umount %s: %s\n", f->fs, strerror (errno));
  zcd_rm_rf (f->dir, NULL);
  free (f);
  return 0;
}

/* A 64 KiB tmpfs: a disk that really fills up (needs root). */
static int
s_setup_tmpfs (void **state)
{
  if (s_setup (state) < 0)
    return -1;
  fixture_t *f = *state;
  char fs[96];
  snprintf (fs, sizeof fs, "%s/fs", f->dir);
  if (mkdir (fs, 0700) < 0)
    return -1;
  if (mount ("tmpfs", fs, "tmpfs", 0, "size=64k,mode=0700") < 0)
    snprintf (f->why_not, sizeof f->why_not, "cannot mount a tmpfs at %s: %s", fs,
              strerror (errno));
  else
    {
      strcpy (f->fs, fs);
      snprintf (f->path, sizeof f->path, "%s/events.log", fs);
    }
  return 0;
}

static void
s_fill (const char *dir, char *filler, size_t size)
{
  snprintf (filler, size, "%s/filler", dir);
  int fd = open (filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  assert_true (fd >= 0);
  static const char block[4096];
  for (size_t chunk = sizeof block; chunk > 0; chunk /= 2)
    while (write (fd, block, chunk) == (ssize_t) chunk)
      ;
  assert_int_equal (errno, ENOSPC);
  close (fd);
}

static void
s_on_commit (eventlog_t *log, const zcd_error_t *err, void *arg)
{
  fixture_t *f = arg;
  f->commits++;
  if (err)
    {
      f->failures++;
      f->last_code = err->code;
      snprintf (f->last_err, sizeof f->last_err, "%s", err->msg);
    }
  loop_stop (f->loop);
}

static void
s_open_attached (fixture_t *f, uint64_t retain)
{
  zcd_error_t *err = NULL;
  if (eventlog_open (f->path, retain, &f->log, &err) < 0)
    fail_msg ("eventlog_open: %s", err->msg);
  if (eventlog_commit_attach (f->log, f->loop, s_on_commit, f, &err) < 0)
    fail_msg ("eventlog_commit_attach: %s", err->msg);
}

static void
s_append_range (eventlog_t *log, uint64_t from, uint64_t to)
{
  for (uint64_t i = from; i <= to; i++)
    {
      zcd_event_t ev = { .type = "exit", .id = "web1", .pid = "init", .has_status = true,
                         .status = (uint32_t) (i % 256), .ts = (int64_t) (1000 * i) };
      assert_int_equal (eventlog_append (log, &ev, NULL, NULL), i);
    }
}

static void
s_deadline (loop_t *loop, void *arg)
{
  fixture_t *f = arg;
  f->timed_out = true;
  loop_stop (loop);
}

/* Run the loop until a commit callback stops it (or 10 s pass). */
static void
s_run_until_commit (fixture_t *f)
{
  int before = f->commits;
  loop_timer_t *t = loop_timer_add (f->loop, 10000, s_deadline, f);
  while (f->commits == before && !f->timed_out)
    loop_run (f->loop);
  if (!f->timed_out)
    loop_timer_cancel (f->loop, t);
  assert_false (f->timed_out);
}

static void
s_stop_when_idle (loop_t *loop, void *arg)
{
  fixture_t *f = arg;
  if (!eventlog_commit_busy (f->log))
    loop_stop (loop);
}

/* Run the loop until nothing is in flight (a compaction has no callback). */
static void
s_run_until_idle (fixture_t *f)
{
  loop_timer_t *t = loop_timer_add (f->loop, 10000, s_deadline, f);
  loop_set_before_sleep (f->loop, s_stop_when_idle, f);
  while (eventlog_commit_busy (f->log) && !f->timed_out)
    loop_run (f->loop);
  loop_set_before_sleep (f->loop, NULL, NULL);
  if (!f->timed_out)
    loop_timer_cancel (f->loop, t);
  assert_false (f->timed_out);
}

static size_t
s_file_size (const char *path)
{
  struct stat st;
  assert_int_equal (stat (path, &st), 0);
  return (size_t) st.st_size;
}

/* Records in the file, parsed independently of the code under test; *whole
 * says whether they end exactly at the file's end (no torn bytes). */
static size_t
s_file_records (const char *path, bool *whole)
{
  char *buf = NULL;
  size_t len = 0;
  zcd_error_t *err = NULL;
  if (zcd_read_file (path, 1 << 26, &buf, &len, &err) < 0)
    fail_msg ("read: %s", err->msg);
  size_t n = 0, o = HEADER;
  while (o + 8 <= len)
    {
      uint32_t plen;
      memcpy (&plen, buf + o, 4);
      if (o + 8 + plen > len)
        break;
      o += 8 + plen;
      n++;
    }
  if (whole)
    *whole = o == len;
  free (buf);
  return n;
}

static int
s_count_temps (const char *dir)
{
  DIR *d = opendir (dir);
  int n = 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    n += strncmp (de->d_name, "events.log.tmp.", 15) == 0;
  closedir (d);
  return n;
}

static void
s_reopen_expect (fixture_t *f, uint64_t retain, uint64_t last, size_t count)
{
  eventlog_destroy (&f->log);
  s_open_attached (f, retain);
  assert_int_equal (eventlog_last_seq (f->log), last);
  assert_int_equal (eventlog_count (f->log), count);
}

/* ---- tests ---- */

static void
test_group_commit_of_appends_in_flight (void **state)
{
  fixture_t *f = *state;
  s_open_attached (f, 1000);
  s_append_range (f->log, 1, 3);
  assert_true (eventlog_commit_start (f->log));
  /* In flight: nothing is durable until the completion is read. */
  assert_true (eventlog_commit_busy (f->log));
  assert_int_equal (f->commits, 0);
  assert_int_equal (eventlog_durable_seq (f->log), 0);
  /* Appends meanwhile wait: no second commit while one is in flight. */
  s_append_range (f->log, 4, 6);
  assert_false (eventlog_commit_start (f->log));
  assert_int_equal (eventlog_durable_seq (f->log), 0);

  s_run_until_commit (f);
  assert_int_equal (f->commits, 1);
  assert_int_equal (f->failures, 0);
  assert_false (eventlog_commit_busy (f->log));
  assert_int_equal (eventlog_durable_seq (f->log), 3);
  assert_int_equal (eventlog_last_seq (f->log), 6);
  bool whole;
  assert_int_equal (s_file_records (f->path, &whole), 3);
  assert_true (whole);

  /* The next batch holds everything appended during the first. */
  assert_true (eventlog_commit_start (f->log));
  s_run_until_commit (f);
  assert_int_equal (f->commits, 2);
  assert_int_equal (eventlog_durable_seq (f->log), 6);
  assert_int_equal (s_file_records (f->path, &whole), 6);
  assert_true (whole);

  /* Nothing pending: the callback runs at once, with success. */
  assert_true (eventlog_commit_start (f->log));
  assert_int_equal (f->commits, 3);
  assert_int_equal (f->failures, 0);
  assert_false (eventlog_commit_busy (f->log));
  s_reopen_expect (f, 1000, 6, 6);
}

/* The synchronous flush (shutdown) settles a commit in flight first: its
 * callback runs, then the rest is written. */
static void
test_flush_waits_for_commit_in_flight (void **state)
{
  fixture_t *f = *state;
  s_open_attached (f, 1000);
  s_append_range (f->log, 1, 3);
  assert_true (eventlog_commit_start (f->log));
  s_append_range (f->log, 4, 5);
  zcd_error_t *err = NULL;
  if (eventlog_flush (f->log, &err) < 0)
    fail_msg ("eventlog_flush: %s", err->msg);
  assert_int_equal (f->commits, 1);
  assert_false (eventlog_commit_busy (f->log));
  assert_int_equal (eventlog_durable_seq (f->log), 5);
  s_reopen_expect (f, 1000, 5, 5);
}

/* A full disk: the commit fails, its records stay buffered and replayable,
 * durable_seq stays, and later commits write the same bytes at the same
 * offset (the file never grows past what a torn try left, and ends up
 * holding exactly the records, no garbage between them). */
static void
test_failed_write_is_retried_at_the_same_offset (void **state)
{
  fixture_t *f = *state;
  if (f->fs[0] == '\0')
    {
      print_message ("[  SKIP    ] %s (run as root to mount one)\n", f->why_not);
      skip ();
    }
  s_open_attached (f, 1000);
  s_append_range (f->log, 1, 5);
  assert_true (eventlog_commit_start (f->log));
  s_run_until_commit (f);
  assert_int_equal (f->failures, 0);
  char filler[256];
  s_fill (f->fs, filler, sizeof filler);

  s_append_range (f->log, 6, 205); /* some 10 KiB: more than the last page holds */
  assert_true (eventlog_commit_start (f->log));
  s_run_until_commit (f);
  assert_int_equal (f->failures, 1);
  assert_int_equal (f->last_code, ZCD_E_UNAVAILABLE);
  assert_non_null (strstr (f->last_err, "No space left"));
  assert_int_equal (eventlog_durable_seq (f->log), 5);
  assert_int_equal (eventlog_last_seq (f->log), 205);
  size_t torn = s_file_size (f->path);

  /* Still full: the retry fails the same way, in the same place. */
  s_append_range (f->log, 206, 206);
  assert_true (eventlog_commit_start (f->log));
  s_run_until_commit (f);
  assert_int_equal (f->failures, 2);
  assert_int_equal (eventlog_durable_seq (f->log), 5);
  assert_int_equal (s_file_size (f->path), torn);

  assert_int_equal (unlink (filler), 0);
  assert_true (eventlog_commit_start (f->log));
  s_run_until_commit (f);
  assert_int_equal (f->failures, 2);
  assert_int_equal (eventlog_durable_seq (f->log), 206);
  bool whole;
  assert_int_equal (s_file_records (f->path, &whole), 206);
  assert_true (whole);
  s_reopen_expect (f, 1000, 206, 206);
}

/* Past the threshold a commit's completion starts the compaction; commits
 * pause while it is in flight, appends go on and are committed after it
 * into the new file. */
static void
test_compaction_in_flight_while_appending (void **state)
{
  fixture_t *f = *state;
  const uint64_t retain = 10, threshold = 10 + 1 + 64;
  s_open_attached (f, retain);
  s_append_range (f->log, 1, threshold);
  assert_true (eventlog_commit_start (f->log));
  s_run_until_commit (f);
  assert_false (eventlog_commit_busy (f->log)); /* not past the threshold yet */

  s_append_range (f->log, threshold + 1, threshold + 1);
  assert_true (eventlog_commit_start (f->log));
  s_run_until_commit (f);
  assert_int_equal (eventlog_durable_seq (f->log), threshold + 1);
  /* The completion started the compaction: it is in flight now. */
  assert_true (eventlog_commit_busy (f->log));
  s_append_range (f->log, threshold + 2, threshold + 5);
  assert_false (eventlog_commit_start (f->log));
  s_run_until_idle (f);
  assert_int_equal (f->commits, 2); /* a compaction is no commit */
  /* The new file holds the retained durable records; the four appended
   * meanwhile are still pending, in memory only. */
  bool whole;
  assert_int_equal (s_file_records (f->path, &whole), retain);
  assert_true (whole);
  assert_int_equal (s_count_temps (f->dir), 0);
  assert_int_equal (eventlog_stored_count (f->log), retain + 4);
  assert_int_equal (eventlog_durable_seq (f->log), threshold + 1);

  assert_true (eventlog_commit_start (f->log));
  s_run_until_commit (f);
  assert_int_equal (eventlog_durable_seq (f->log), threshold + 5);
  assert_int_equal (s_file_records (f->path, &whole), retain + 4);
  assert_true (whole);
  eventlog_destroy (&f->log);
  s_open_attached (f, retain);
  assert_int_equal (eventlog_last_seq (f->log), threshold + 5);
  assert_int_equal (eventlog_oldest_seq (f->log), threshold + 5 - retain + 1);
}

/* A compaction that cannot even create its temp file (no fd left, as on a
 * disk too full for a rewrite) fails no commit: memory stays at retention,
 * the file keeps growing in order, and it is not retried at once. */
static void
test_failed_compaction_fails_no_commit (void **state)
{
  fixture_t *f = *state;
  const uint64_t retain = 10, threshold = 10 + 1 + 64;
  s_open_attached (f, retain);
  s_append_range (f->log, 1, threshold);
  assert_true (eventlog_commit_start (f->log));
  s_run_until_commit (f);

  struct rlimit saved, tight;
  assert_int_equal (getrlimit (RLIMIT_NOFILE, &saved), 0);
  int lowest_free = dup (0);
  assert_true (lowest_free >= 0);
  close (lowest_free);
  tight = saved;
  tight.rlim_cur = (rlim_t) lowest_free;
  assert_int_equal (setrlimit (RLIMIT_NOFILE, &tight), 0);
  for (uint64_t i = threshold + 1; i <= 2 * threshold; i++)
    {
      s_append_range (f->log, i, i);
      assert_true (eventlog_commit_start (f->log));
      s_run_until_commit (f);
      assert_false (eventlog_commit_busy (f->log));
      assert_true (eventlog_stored_count (f->log) <= threshold + 1);
    }
  assert_int_equal (setrlimit (RLIMIT_NOFILE, &saved), 0);
  assert_int_equal (f->failures, 0);
  assert_int_equal (eventlog_durable_seq (f->log), 2 * threshold);
  bool whole;
  assert_int_equal (s_file_records (f->path, &whole), 2 * threshold);
  assert_true (whole);
  assert_int_equal (s_count_temps (f->dir), 0);
  s_reopen_expect (f, retain, 2 * threshold, retain);
}

/* Without attach (or without io_uring) a commit is a synchronous flush. */
static void
test_unattached_commit_is_synchronous (void **state)
{
  fixture_t *f = *state;
  zcd_error_t *err = NULL;
  if (eventlog_open (f->path, 100, &f->log, &err) < 0)
    fail_msg ("eventlog_open: %s", err->msg);
  s_append_range (f->log, 1, 4);
  assert_true (eventlog_commit_start (f->log));
  assert_false (eventlog_commit_busy (f->log));
  assert_int_equal (eventlog_durable_seq (f->log), 4);
  bool whole;
  assert_int_equal (s_file_records (f->path, &whole), 4);
  assert_true (whole);
}

/* Where the kernel refuses io_uring (a seccomp profile, the sysctl
 * kernel.io_uring_disabled), attach says so and commits are synchronous,
 * with the same callback.  Run in a child: the filter cannot be undone. */
static void
test_without_io_uring_commits_are_synchronous (void **state)
{
  fixture_t *f = *state;
  pid_t pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    {
      scmp_filter_ctx ctx = seccomp_init (SCMP_ACT_ALLOW);
      if (ctx == NULL
          || seccomp_rule_add (ctx, SCMP_ACT_ERRNO (ENOSYS), SCMP_SYS (io_uring_setup), 0) < 0
          || seccomp_load (ctx) < 0)
        _exit (2);
      zcd_error_t *err = NULL;
      if (eventlog_open (f->path, 100, &f->log, &err) < 0)
        _exit (3);
      if (eventlog_commit_attach (f->log, f->loop, s_on_commit, f, &err) == 0)
        _exit (4); /* io_uring was not refused */
      s_append_range (f->log, 1, 4);
      if (!eventlog_commit_start (f->log) || f->commits != 1 || f->failures != 0
          || eventlog_commit_busy (f->log) || eventlog_durable_seq (f->log) != 4)
        _exit (5);
      bool whole;
      _exit (s_file_records (f->path, &whole) == 4 && whole ? 0 : 6);
    }
  int status;
  assert_int_equal (waitpid (pid, &status, 0), pid);
  assert_true (WIFEXITED (status));
  assert_int_equal (WEXITSTATUS (status), 0);
}

int
main (void)
{
  zcd_log_set_min (ZCD_LOG_ERROR);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_group_commit_of_appends_in_flight, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_flush_waits_for_commit_in_flight, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_failed_write_is_retried_at_the_same_offset,
                                     s_setup_tmpfs, s_teardown),
    cmocka_unit_test_setup_teardown (test_compaction_in_flight_while_appending, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_failed_compaction_fails_no_commit, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_unattached_commit_is_synchronous, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_without_io_uring_commits_are_synchronous, s_setup,
                                     s_teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
