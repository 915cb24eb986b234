/* shim/logfile.c, the `log` key's file (PROTOCOL.md `create`): created 0640
 * or appended to, never through a symlink or into anything but a regular
 * file; rotated before it passes max_bytes into name.1 ... name.<n-1>, the
 * newest in name, lines kept whole where they fit; one file starts over; a
 * name in the rotation's way that is not a regular file stops it (nothing
 * moved, nothing written through), and it resumes once the name is gone.
 *
 * The shim's source is compiled in: the shim is a program of its own, not
 * a library the tests link. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sys/ioctl.h>
#include <sys/mman.h>

#include "core/fsutil.h"
/* The rotation's renames go through s_renameat, which can put a file in
 * the gap between a rename and the create that follows it. */
static int s_renameat (int, const char *, int, const char *);
#define renameat s_renameat
#include "shim/logfile.c"
#undef renameat
#include "shim/outlog.c"

/* Set by a test: what appears at `app.log` right after it is renamed. */
static char s_plant_link_to[256];

static int
s_renameat (int olddirfd, const char *from, int newdirfd, const char *to)
{
  int rc = renameat (olddirfd, from, newdirfd, to);
  if (rc == 0 && s_plant_link_to[0] && strcmp (from, "app.log") == 0)
    {
      /* Another user's hard link to a file that is not the log's. */
      if (linkat (AT_FDCWD, s_plant_link_to, olddirfd, "app.log", 0) < 0)
        abort ();
      s_plant_link_to[0] = '\0';
    }
  return rc;
}

/* main.c's; nothing to drop in a test. */
void
shim_drop_code_pages (void)
{
}

typedef struct
{
  char dir[64];
  char log[128];
  shim_logfile_t file;
} fixture_t;

static int
s_setup (void **state)
{
  fixture_t *f = calloc (1, sizeof *f);
  strcpy (f->dir, "/tmp/zcd-test-logrot-XXXXXX");
  if (mkdtemp (f->dir) == NULL)
    return -1;
  snprintf (f->log, sizeof f->log, "%s/app.log", f->dir);
  f->file.fd = f->file.dirfd = -1;
  *state = f;
  return 0;
}

static int
s_teardown (void **state)
{
  fixture_t *f = *state;
  shim_logfile_close (&f->file);
  zcd_rm_rf (f->dir, NULL);
  free (f);
  return 0;
}

static void
s_name (char *out, size_t size, const fixture_t *f, const char *rel)
{
  int n = snprintf (out, size, "%s/%s", f->dir, rel);
  assert_true (n > 0 && (size_t)n < size);
}

/* Size of dir/rel, -1 when it is not there. */
static long
s_size (const fixture_t *f, const char *rel)
{
  char path[512];
  s_name (path, sizeof path, f, rel);
  struct stat st;
  return lstat (path, &st) == 0 ? (long)st.st_size : -1;
}

static char *
s_read (const fixture_t *f, const char *rel)
{
  char path[512];
  s_name (path, sizeof path, f, rel);
  char *text = NULL;
  if (zcd_read_file (path, 1 << 20, &text, NULL, NULL) < 0)
    return NULL;
  return text;
}

/* Lines "<7 digits> <pad>\n" of 100 bytes, numbers from..to, written in
 * chunks of `chunk` bytes (a chunk ends anywhere, as a read does). */
static void
s_write_lines (fixture_t *f, int from, int to, size_t chunk)
{
  size_t len = (size_t)(to - from + 1) * 100;
  char *buf = malloc (len);
  for (int i = from; i <= to; i++)
    {
      char *line = buf + (size_t)(i - from) * 100;
      snprintf (line, 101, "%07d %091d", i, 0);
      line[99] = '\n';
    }
  for (size_t off = 0; off < len; off += chunk)
    {
      size_t n = len - off < chunk ? len - off : chunk;
      assert_int_equal (shim_logfile_write (&f->file, buf + off, n), n);
    }
  free (buf);
}

/* Every line of a file is whole and numbered; the numbers follow on from
 * *next (0: anything) and *next is the one after the last. */
static void
s_check_lines (const fixture_t *f, const char *rel, int *next)
{
  char *text = s_read (f, rel);
  assert_non_null (text);
  size_t len = strlen (text);
  assert_int_equal (len % 100, 0);
  for (size_t off = 0; off < len; off += 100)
    {
      assert_int_equal (text[off + 99], '\n');
      int n = atoi (text + off);
      if (*next)
        assert_int_equal (n, *next);
      *next = n + 1;
    }
  free (text);
}

static void
test_open_creates_0640_and_appends (void **state)
{
  fixture_t *f = *state;
  mode_t old = umask (022);
  assert_int_equal (shim_logfile_open (&f->file, f->log, 4096, 3, NULL), 0);
  umask (old);
  struct stat st;
  assert_int_equal (stat (f->log, &st), 0);
  assert_int_equal (st.st_mode & 07777, 0640);
  assert_int_equal (shim_logfile_write (&f->file, "one\n", 4), 4);
  shim_logfile_close (&f->file);
  assert_int_equal (shim_logfile_open (&f->file, f->log, 4096, 3, NULL), 0);
  assert_int_equal (f->file.size, 4);
  assert_int_equal (shim_logfile_write (&f->file, "two\n", 4), 4);
  char *text = s_read (f, "app.log");
  assert_string_equal (text, "one\ntwo\n");
  free (text);
}

static void
test_open_refuses_what_is_no_regular_file (void **state)
{
  fixture_t *f = *state;
  char path[256], target[256];
  s_name (target, sizeof target, f, "target");
  assert_int_equal (zcd_write_file_replace (target, "keep\n", 5, 0644, NULL), 0);
  s_name (path, sizeof path, f, "link.log");
  assert_int_equal (symlink (target, path), 0);
  zcd_error_t *err = NULL;
  assert_int_equal (shim_logfile_open (&f->file, path, 4096, 3, &err), -1);
  assert_int_equal (err->code, ZCD_E_INVALID_ARGUMENT);
  zcd_error_free (&err);
  s_name (path, sizeof path, f, "fifo.log");
  assert_int_equal (mkfifo (path, 0600), 0);
  assert_int_equal (shim_logfile_open (&f->file, path, 4096, 3, &err), -1);
  zcd_error_free (&err);
  assert_int_equal (shim_logfile_open (&f->file, f->dir, 4096, 3, &err), -1);
  zcd_error_free (&err);
  s_name (path, sizeof path, f, "");
  assert_int_equal (shim_logfile_open (&f->file, path, 4096, 3, &err), -1);
  zcd_error_free (&err);
  assert_int_equal (shim_logfile_open (&f->file, "relative.log", 4096, 3, &err), -1);
  zcd_error_free (&err);
  char *text = s_read (f, "target");
  assert_string_equal (text, "keep\n");
  free (text);
  assert_int_equal (f->file.fd, -1);
  assert_int_equal (f->file.dirfd, -1);
}

/* 200 lines of 100 bytes (20000 bytes), max 4096 and 3 files: the three
 * newest files, none over 4096, whole lines, numbers increasing from
 * app.log.2 to app.log, the last line last; whatever the chunking. */
static void
test_rotation_keeps_newest_whole_lines (void **state)
{
  fixture_t *f = *state;
  const size_t chunks[] = { 100, 4096, 333, 7, 20000 };
  for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++)
    {
      shim_logfile_close (&f->file);
      unlink (f->log);
      char path[256];
      for (int i = 1; i <= 3; i++)
        {
          snprintf (path, sizeof path, "%s.%d", f->log, i);
          unlink (path);
        }
      assert_int_equal (shim_logfile_open (&f->file, f->log, 4096, 3, NULL), 0);
      s_write_lines (f, 1000001, 1000200, chunks[c]);
      assert_int_equal (s_size (f, "app.log.3"), -1);
      int next = 0;
      const char *order[] = { "app.log.2", "app.log.1", "app.log" };
      for (int i = 0; i < 3; i++)
        {
          long size = s_size (f, order[i]);
          assert_true (size > 0 && size <= 4096);
          s_check_lines (f, order[i], &next);
        }
      assert_int_equal (next, 1000201);
    }
}

static void
test_single_file_starts_over (void **state)
{
  fixture_t *f = *state;
  assert_int_equal (shim_logfile_open (&f->file, f->log, 4096, 1, NULL), 0);
  s_write_lines (f, 1000001, 1000100, 250);
  assert_int_equal (s_size (f, "app.log.1"), -1);
  assert_true (s_size (f, "app.log") <= 4096);
  int next = 0;
  s_check_lines (f, "app.log", &next);
  assert_int_equal (next, 1000101);
}

/* A line longer than a file is cut at max_bytes; nothing passes it. */
static void
test_line_longer_than_a_file (void **state)
{
  fixture_t *f = *state;
  assert_int_equal (shim_logfile_open (&f->file, f->log, 4096, 3, NULL), 0);
  char buf[10000];
  memset (buf, 'x', sizeof buf);
  assert_int_equal (shim_logfile_write (&f->file, buf, sizeof buf), sizeof buf);
  assert_int_equal (s_size (f, "app.log.2"), 4096);
  assert_int_equal (s_size (f, "app.log.1"), 4096);
  assert_int_equal (s_size (f, "app.log"), 10000 - 8192);
}

/* A symlink (to a file outside) at app.log.1 stops the rotation: the file
 * stays at its bound, nothing is renamed or written through, the writer
 * learns why; with the name gone, rotation resumes. */
static void
test_symlink_in_the_way_blocks_rotation (void **state)
{
  fixture_t *f = *state;
  char outside[256], link[256];
  s_name (outside, sizeof outside, f, "outside");
  assert_int_equal (zcd_write_file_replace (outside, "precious\n", 9, 0644, NULL), 0);
  s_name (link, sizeof link, f, "app.log.2");
  assert_int_equal (symlink (outside, link), 0);
  assert_int_equal (shim_logfile_open (&f->file, f->log, 4096, 3, NULL), 0);
  /* 7000 bytes: one rotation, app.log -> app.log.1, which leaves the link
   * beyond alone. */
  s_write_lines (f, 1000001, 1000070, 700);
  assert_true (s_size (f, "app.log.1") > 0);
  char line[4096];
  memset (line, 'y', sizeof line);
  line[sizeof line - 1] = '\n';
  /* The next one would move app.log.1 over the link. */
  assert_int_equal (shim_logfile_write (&f->file, line, sizeof line), 0);
  assert_true (f->file.error_rotating);
  assert_int_equal (f->file.error, EEXIST);
  assert_string_equal (f->file.error_name, "app.log.2");
  struct stat st;
  assert_int_equal (lstat (link, &st), 0);
  assert_true (S_ISLNK (st.st_mode));
  char *text = s_read (f, "outside");
  assert_string_equal (text, "precious\n");
  free (text);
  assert_true (s_size (f, "app.log") <= 4096);
  assert_int_equal (unlink (link), 0);
  assert_int_equal (shim_logfile_write (&f->file, line, sizeof line), sizeof line);
  assert_false (f->file.error_rotating);
  assert_int_equal (lstat (link, &st), 0);
  assert_true (S_ISREG (st.st_mode));
}

/* A name that appears between a rotation's rename and its create (a
 * shared directory) is not written when it has another name too (a hard
 * link to someone's file): the output is dropped, the file untouched. */
static void
test_file_planted_during_rotation_is_not_written (void **state)
{
  fixture_t *f = *state;
  char victim[256];
  s_name (victim, sizeof victim, f, "victim");
  assert_int_equal (zcd_write_file_replace (victim, "precious\n", 9, 0644, NULL), 0);
  assert_int_equal (shim_logfile_open (&f->file, f->log, 4096, 3, NULL), 0);
  s_write_lines (f, 1000001, 1000030, 700);
  snprintf (s_plant_link_to, sizeof s_plant_link_to, "%s", victim);
  char line[4096];
  memset (line, 'y', sizeof line);
  line[sizeof line - 1] = '\n';
  assert_true (shim_logfile_write (&f->file, line, sizeof line) < sizeof line);
  assert_int_equal (s_plant_link_to[0], '\0'); /* the rotation ran */
  char *text = s_read (f, "victim");
  assert_string_equal (text, "precious\n");
  free (text);
}

/* A FIFO (or directory) in the way: same, and nothing else moved. */
static void
test_fifo_in_the_way_moves_nothing (void **state)
{
  fixture_t *f = *state;
  char fifo[256];
  s_name (fifo, sizeof fifo, f, "app.log.1");
  assert_int_equal (mkfifo (fifo, 0600), 0);
  assert_int_equal (shim_logfile_open (&f->file, f->log, 4096, 3, NULL), 0);
  s_write_lines (f, 1000001, 1000040, 4000);
  long before = s_size (f, "app.log");
  char line[200];
  memset (line, 'z', sizeof line);
  line[199] = '\n';
  assert_int_equal (shim_logfile_write (&f->file, line, sizeof line), 0);
  assert_true (f->file.error_rotating && f->file.error == EEXIST);
  assert_int_equal (s_size (f, "app.log"), before);
  assert_int_equal (s_size (f, "app.log.2"), -1);
  struct stat st;
  assert_int_equal (lstat (fifo, &st), 0);
  assert_true (S_ISFIFO (st.st_mode));
}

/* A line that starts near the end of a file, cut by the chunk it came in,
 * starts the next file instead of being split between the two. */
static void
test_partial_line_near_the_end_starts_the_next_file (void **state)
{
  fixture_t *f = *state;
  assert_int_equal (shim_logfile_open (&f->file, f->log, 8192, 3, NULL), 0);
  char fill[8150];
  memset (fill, 'a', sizeof fill);
  fill[sizeof fill - 1] = '\n';
  assert_int_equal (shim_logfile_write (&f->file, fill, sizeof fill), sizeof fill);
  /* "HEAD" then "TAIL\n" later: 8150 + 4 fits, 8150 + 9 would too, but
   * the whole line should not straddle a rotation either way. */
  assert_int_equal (shim_logfile_write (&f->file, "line-start ", 11), 11);
  assert_int_equal (s_size (f, "app.log.1"), sizeof fill);
  assert_int_equal (shim_logfile_write (&f->file, "and its end\n", 12), 12);
  char *text = s_read (f, "app.log");
  assert_string_equal (text, "line-start and its end\n");
  free (text);
}

/* The shim's own line after a gap starts on a line of its own. */
static void
test_gap_line_on_its_own_line (void **state)
{
  fixture_t *f = *state;
  assert_int_equal (shim_logfile_open (&f->file, f->log, 4096, 3, NULL), 0);
  assert_int_equal (shim_logfile_write (&f->file, "cut off", 7), 7);
  assert_true (shim_logfile_write_line (&f->file, "zcd-shim: gap\n", 14));
  assert_true (shim_logfile_write_line (&f->file, "zcd-shim: gap\n", 14));
  char *text = s_read (f, "app.log");
  assert_string_equal (text, "cut off\nzcd-shim: gap\nzcd-shim: gap\n");
  free (text);
}

/* Near the end of a file, with the rotation blocked: the gap line is not
 * written in part (the writer keeps it pending); once the rotation can go
 * on, it is written whole, at the top of the next file. */
static void
test_gap_line_whole_or_not_at_all (void **state)
{
  fixture_t *f = *state;
  char link[256];
  s_name (link, sizeof link, f, "app.log.1");
  assert_int_equal (symlink ("/nonexistent", link), 0);
  assert_int_equal (shim_logfile_open (&f->file, f->log, 4096, 3, NULL), 0);
  char fill[4090];
  memset (fill, 'a', sizeof fill);
  assert_int_equal (shim_logfile_write (&f->file, fill, sizeof fill), sizeof fill);
  const char gap[] = "zcd-shim: 100 bytes of output dropped (test)\n";
  assert_false (shim_logfile_write_line (&f->file, gap, sizeof gap - 1));
  assert_int_equal (unlink (link), 0);
  assert_true (shim_logfile_write_line (&f->file, gap, sizeof gap - 1));
  char *text = s_read (f, "app.log");
  assert_string_equal (text, gap);
  free (text);
  assert_int_equal (s_size (f, "app.log.1"), sizeof fill + 1);
}


/* The longest name the rotated names fit (NAME_MAX with ".<max_files>"):
 * rotated to the last of them; one more character is refused. */
static void
test_longest_name_rotates (void **state)
{
  fixture_t *f = *state;
  char base[NAME_MAX + 1], path[512];
  memset (base, 'n', NAME_MAX - 2);
  base[NAME_MAX - 2] = '\0';
  snprintf (path, sizeof path, "%s/%s", f->dir, base);
  zcd_error_t *err = NULL;
  assert_int_equal (shim_logfile_open (&f->file, path, 4096, 5, &err), 0);
  s_write_lines (f, 1000001, 1000200, 4096);
  char rel[2 * NAME_MAX];
  snprintf (rel, sizeof rel, "%s.4", base);
  assert_int_equal (strlen (rel), NAME_MAX);
  assert_true (s_size (f, rel) > 0);
  int next = 0;
  for (int i = 4; i >= 1; i--)
    {
      snprintf (rel, sizeof rel, "%s.%d", base, i);
      s_check_lines (f, rel, &next);
    }
  s_check_lines (f, base, &next);
  assert_int_equal (next, 1000201);
  shim_logfile_close (&f->file);
  snprintf (path, sizeof path, "%s/%sx", f->dir, base);
  assert_int_equal (shim_logfile_open (&f->file, path, 4096, 5, &err), -1);
  assert_int_equal (err->code, ZCD_E_INVALID_ARGUMENT);
  zcd_error_free (&err);
}

/* outlog.c's ring as the loop sees it, its writer started but not run
 * yet (a busy machine): the loop's side only, no thread. */
static void
s_outlog_late_writer (const fixture_t *f)
{
  shim_args_t args = { .log_path = f->log, .log_max_bytes = 4096, .log_max_files = 3 };
  assert_int_equal (shim_outlog_open (&args, NULL), 0);
  s_log.running = true;
  s_log.moved_ms = s_now_ms ();
}

static void
s_outlog_reset (void)
{
  shim_logfile_close (&s_log.file);
  munmap (s_log.ring, RING_SIZE);
  s_log.ring = NULL;
  s_log.active = s_log.running = false;
  s_log.head = s_log.tail = 0;
  s_log.gap_open = false;
  s_log.gap = (s_gap_t){ 0, 0 };
  s_log.dropped = 0;
  s_log.writing_since_ms = s_log.moved_ms = 0;
}

/* Fill the ring from one pipe, 64 KiB (a pipe's size) at a time. */
static void
s_fill_ring (void)
{
  int p[2];
  assert_int_equal (pipe (p), 0);
  static char block[64 << 10];
  memset (block, 'a', sizeof block);
  char scratch[16];
  while (s_log.head - s_log.tail < RING_SIZE)
    {
      assert_int_equal (write (p[1], block, sizeof block), sizeof block);
      assert_int_equal (shim_outlog_read (p[0], scratch, sizeof scratch), sizeof block);
    }
  close (p[0]);
  close (p[1]);
}

/* The two output relays are both readable in one poll round; the first
 * one's read fills the ring.  With a writer that is merely late, the
 * second one's bytes stay in its pipe (EAGAIN, the relay looks again in a
 * few ms) instead of being read and dropped; with a writer the disk holds
 * (a write in progress for over STALL_MS), they are read and counted. */
static void
test_full_ring_leaves_the_other_pipe_for_a_late_writer (void **state)
{
  fixture_t *f = *state;
  s_outlog_late_writer (f);
  int p[2];
  assert_int_equal (pipe (p), 0);
  assert_int_equal (write (p[1], "line\n", 5), 5);
  /* Watched at the start of the round: not full yet. */
  shim_outlog_round_begin ();
  assert_false (shim_outlog_holding ());
  s_fill_ring ();
  char scratch[64];
  errno = 0;
  assert_int_equal (shim_outlog_read (p[0], scratch, sizeof scratch), -1);
  assert_int_equal (errno, EAGAIN);
  int queued = 0;
  assert_int_equal (ioctl (p[0], FIONREAD, &queued), 0);
  assert_int_equal (queued, 5);
  assert_int_equal (s_log.dropped, 0);
  assert_false (s_log.gap_open);
  assert_int_equal (shim_outlog_poll_ms (), HOLD_POLL_MS);
  /* The disk holds the writer: read all the same, and counted. */
  s_log.writing_since_ms = s_now_ms () - 2 * STALL_MS;
  assert_int_equal (shim_outlog_read (p[0], scratch, sizeof scratch), 5);
  assert_int_equal (s_log.dropped, 5);
  assert_true (s_log.gap_open && s_log.gap_at == s_log.head);
  close (p[0]);
  close (p[1]);
  s_outlog_reset ();
}

static long long
s_elapsed_ms (long long since)
{
  return s_now_ms () - since;
}

/* The writer's state, read as the loop reads it: under the lock. */
static bool
s_writer_in_write (void)
{
  pthread_mutex_lock (&s_log.lock);
  bool writing = s_log.writing_since_ms != 0;
  pthread_mutex_unlock (&s_log.lock);
  return writing;
}

static uint64_t
s_ring_used (void)
{
  pthread_mutex_lock (&s_log.lock);
  uint64_t used = s_log.head - s_log.tail;
  pthread_mutex_unlock (&s_log.lock);
  return used;
}

static bool
s_writer_finished (void)
{
  pthread_mutex_lock (&s_log.lock);
  bool finished = s_log.finished;
  pthread_mutex_unlock (&s_log.lock);
  return finished;
}

/* The writer thread for real, held in a write(2) as by a disk that does
 * not answer (its file descriptor swapped for a full pipe).  The loop
 * holds nothing back for it once the write is older than STALL_MS (what
 * it reads past the full ring is dropped and counted), and the exit waits
 * for it no longer than it is told to: what the ring still holds counts as
 * dropped, in log-dropped (written in the shim's directory, the cwd), and
 * the writer, once it comes back, neither writes it nor counts it again.
 * Last: the thread lives on with the process. */
static void
test_writer_held_by_the_disk (void **state)
{
  fixture_t *f = *state;
  char cwd[256];
  assert_non_null (getcwd (cwd, sizeof cwd));
  assert_int_equal (chdir (f->dir), 0);
  shim_args_t args = { .log_path = f->log, .log_max_bytes = 1 << 20, .log_max_files = 2 };
  assert_int_equal (shim_outlog_open (&args, NULL), 0);
  int disk[2];
  assert_int_equal (pipe (disk), 0);
  int fl = fcntl (disk[1], F_GETFL);
  fcntl (disk[1], F_SETFL, fl | O_NONBLOCK);
  static char block[64 << 10];
  memset (block, 'b', sizeof block);
  while (write (disk[1], block, sizeof block) > 0)
    ;
  fcntl (disk[1], F_SETFL, fl);
  assert_int_equal (dup2 (disk[1], s_log.file.fd), s_log.file.fd);
  assert_int_equal (shim_outlog_start (NULL), 0);
  shim_outlog_wait_ready ();
  /* The writer takes the first bytes and is held in its write. */
  int src[2];
  assert_int_equal (pipe (src), 0);
  fcntl (src[0], F_SETFL, O_NONBLOCK);
  char scratch[64 << 10];
  assert_int_equal (write (src[1], "first\n", 6), 6);
  assert_int_equal (shim_outlog_read (src[0], scratch, sizeof scratch), 6);
  long long t0 = s_now_ms ();
  while (!s_writer_in_write () && s_elapsed_ms (t0) < 5000)
    usleep (1000);
  assert_true (s_writer_in_write ());
  while (s_ring_used () < RING_SIZE)
    {
      assert_true (write (src[1], block, sizeof block) > 0);
      assert_true (shim_outlog_read (src[0], scratch, sizeof scratch) > 0);
    }
  /* Full; past STALL_MS the disk holds the writer: read and dropped. */
  usleep ((STALL_MS + 20) * 1000);
  shim_outlog_round_begin ();
  assert_false (shim_outlog_holding ());
  assert_int_equal (write (src[1], "dropped\n", 8), 8);
  int queued = 0;
  assert_int_equal (ioctl (src[0], FIONREAD, &queued), 0);
  assert_true (queued >= 8);
  assert_int_equal (shim_outlog_read (src[0], scratch, sizeof scratch), queued);
  assert_int_equal (s_log.dropped, queued);
  /* The exit: no longer than 200 ms for it. */
  long long t1 = s_now_ms ();
  unsigned long long total = shim_outlog_finish (200);
  long long took = s_elapsed_ms (t1);
  assert_true (took >= 190 && took < 1000);
  assert_int_equal (total, (unsigned long long)queued + RING_SIZE);
  char *text = s_read (f, "log-dropped");
  assert_non_null (text);
  assert_int_equal (strtoull (text, NULL, 10), total);
  free (text);
  /* The disk answers at last: the writer ends, and adds nothing. */
  char sink[64 << 10];
  fcntl (disk[0], F_SETFL, O_NONBLOCK);
  t0 = s_now_ms ();
  while (!s_writer_finished () && s_elapsed_ms (t0) < 5000)
    if (read (disk[0], sink, sizeof sink) <= 0)
      usleep (1000);
  pthread_mutex_lock (&s_log.lock);
  assert_true (s_log.finished);
  assert_int_equal (s_log.dropped, total);
  pthread_mutex_unlock (&s_log.lock);
  text = s_read (f, "log-dropped");
  assert_int_equal (strtoull (text, NULL, 10), total);
  free (text);
  assert_int_equal (chdir (cwd), 0);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_open_creates_0640_and_appends, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_open_refuses_what_is_no_regular_file, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_rotation_keeps_newest_whole_lines, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_single_file_starts_over, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_line_longer_than_a_file, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_symlink_in_the_way_blocks_rotation, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_fifo_in_the_way_moves_nothing, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_file_planted_during_rotation_is_not_written, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_partial_line_near_the_end_starts_the_next_file, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_gap_line_on_its_own_line, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_gap_line_whole_or_not_at_all, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_longest_name_rotates, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_full_ring_leaves_the_other_pipe_for_a_late_writer,
                                     s_setup, s_teardown),
    /* last: its writer thread stays */
    cmocka_unit_test_setup_teardown (test_writer_held_by_the_disk, s_setup, s_teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
