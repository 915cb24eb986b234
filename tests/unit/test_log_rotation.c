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

#include "core/fsutil.h"
#include "shim/logfile.c"

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
  char path[256];
  s_name (path, sizeof path, f, rel);
  struct stat st;
  return lstat (path, &st) == 0 ? (long)st.st_size : -1;
}

static char *
s_read (const fixture_t *f, const char *rel)
{
  char path[256];
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
    cmocka_unit_test_setup_teardown (test_partial_line_near_the_end_starts_the_next_file, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_gap_line_on_its_own_line, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_gap_line_whole_or_not_at_all, s_setup, s_teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
