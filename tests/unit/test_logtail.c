/* core/logtail: the end of a log for an error message (CRIU's dump.log and
 * restore.log): error lines first, a plain tail without them, bounded by
 * the output buffer, and safe on hostile files (many empty lines, a FIFO,
 * a symlink, nothing there). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/logtail.h"

static char s_dir[64];

static int
s_setup (void **state)
{
  snprintf (s_dir, sizeof s_dir, "/tmp/zcd-logtail-XXXXXX");
  assert_non_null (mkdtemp (s_dir));
  return 0;
}

static int
s_teardown (void **state)
{
  char cmd[128];
  snprintf (cmd, sizeof cmd, "rm -rf %s", s_dir);
  return system (cmd);
}

static const char *
s_write (const char *name, const char *text)
{
  static char path[128];
  snprintf (path, sizeof path, "%s/%s", s_dir, name);
  FILE *f = fopen (path, "w");
  assert_non_null (f);
  fputs (text, f);
  fclose (f);
  return path;
}

static void
test_error_lines_then_last (void **state)
{
  const char *p = s_write ("dump.log", "(00.1) a\n(00.2) Error (x.c:1): tcp, consider\n"
                                       "(00.3) b\n(00.4) c\n(00.5) Error (y.c:2): Dumping FAILED.\n");
  char out[512];
  assert_true (zcd_log_tail (p, 8, out, sizeof out) > 0);
  assert_string_equal (out, "(00.2) Error (x.c:1): tcp, consider\n(00.5) Error (y.c:2): Dumping FAILED.");
}

static void
test_plain_tail_without_errors (void **state)
{
  const char *p = s_write ("plain.log", "1\n2\n3\n4\n5\n\n");
  char out[64];
  assert_int_equal (zcd_log_tail (p, 2, out, sizeof out), 3);
  assert_string_equal (out, "4\n5");
  assert_true (zcd_log_tail (p, 1, out, sizeof out) > 0);
  assert_string_equal (out, "5");
}

static void
test_bounded_by_cap (void **state)
{
  char big[3000];
  memset (big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  const char *p = s_write ("long.log", big);
  char out[16];
  assert_int_equal (zcd_log_tail (p, 4, out, sizeof out), 15);
  assert_int_equal (strlen (out), 15);
}

/* 8191 line breaks in the last 8 KiB: once a stack overflow. */
static void
test_only_newlines (void **state)
{
  char *many = malloc (20000);
  memset (many, '\n', 19999);
  many[19999] = '\0';
  many[0] = 'a';
  many[10000] = 'b';
  const char *p = s_write ("newlines.log", many);
  free (many);
  char out[64];
  zcd_log_tail (p, 8, out, sizeof out);
  char mixed[20000];
  for (size_t i = 0; i < sizeof mixed - 1; i++)
    mixed[i] = i % 2 ? '\n' : 'E';
  mixed[sizeof mixed - 1] = '\0';
  p = s_write ("mixed.log", mixed);
  assert_true (zcd_log_tail (p, 8, out, sizeof out) > 0);
}

static void
test_hostile_paths (void **state)
{
  char out[64] = "junk", path[128], target[128];
  snprintf (path, sizeof path, "%s/none", s_dir);
  assert_int_equal (zcd_log_tail (path, 8, out, sizeof out), 0);
  assert_string_equal (out, "");
  snprintf (path, sizeof path, "%s/fifo", s_dir);
  assert_int_equal (mkfifo (path, 0600), 0);
  assert_int_equal (zcd_log_tail (path, 8, out, sizeof out), 0); /* no hang */
  snprintf (target, sizeof target, "%s", s_write ("real.log", "Error: secret\n"));
  snprintf (path, sizeof path, "%s/link", s_dir);
  assert_int_equal (symlink (target, path), 0);
  assert_int_equal (zcd_log_tail (path, 8, out, sizeof out), 0); /* not followed */
  assert_int_equal (zcd_log_tail (s_dir, 8, out, sizeof out), 0); /* a directory */
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_error_lines_then_last, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_plain_tail_without_errors, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_bounded_by_cap, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_only_newlines, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_hostile_paths, s_setup, s_teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
