/* core/fsutil: atomic writes (content, mode, no temp files left, clean
 * failures; the replace variant never fsyncs), bounded reads, mkdir_p, rm_rf, process start times, clocks and
 * the id rules of PROTOCOL.md section 3. */
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
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/fsutil.h"

typedef struct
{
  char dir[64];
} fixture_t;

static int
s_setup (void **state)
{
  fixture_t *f = calloc (1, sizeof *f);
  strcpy (f->dir, "/tmp/zcd-test-fsutil-XXXXXX");
  if (mkdtemp (f->dir) == NULL)
    return -1;
  *state = f;
  return 0;
}

static int
s_teardown (void **state)
{
  fixture_t *f = *state;
  zcd_rm_rf (f->dir, NULL);
  free (f);
  return 0;
}

static void
s_path (char *out, size_t size, const fixture_t *f, const char *rel)
{
  int n = snprintf (out, size, "%s/%s", f->dir, rel);
  assert_true (n > 0 && (size_t) n < size);
}

/* Entries of a directory (not . and ..), and how many hold `needle`. */
static int
s_count_entries (const char *dir, const char *needle, int *matching)
{
  DIR *d = opendir (dir);
  assert_non_null (d);
  int n = 0, m = 0;
  for (struct dirent *de = readdir (d); de; de = readdir (d))
    {
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      n++;
      if (needle && strstr (de->d_name, needle))
        m++;
    }
  closedir (d);
  if (matching)
    *matching = m;
  return n;
}

static char *
s_read (const char *path, size_t max, size_t *len)
{
  char *buf = NULL;
  zcd_error_t *err = NULL;
  if (zcd_read_file (path, max, &buf, len, &err) < 0)
    fail_msg ("read %s: %s", path, err->msg);
  return buf;
}

static void
s_write (const char *path, const void *data, size_t len, mode_t mode)
{
  zcd_error_t *err = NULL;
  if (zcd_write_file_atomic (path, data, len, mode, &err) < 0)
    fail_msg ("write %s: %s", path, err->msg);
}

/* ---- atomic writes ---- */

static void
test_atomic_write_replaces_content (void **state)
{
  fixture_t *f = *state;
  char path[128];
  s_path (path, sizeof path, f, "state.json");
  mode_t old_umask = umask (0);
  s_write (path, "first version, longer", 21, 0600);
  s_write (path, "second", 6, 0640);
  umask (old_umask);
  size_t len = 0;
  cleanup_free char *got = s_read (path, 1024, &len);
  assert_int_equal (len, 6);
  assert_string_equal (got, "second");
  struct stat st;
  assert_int_equal (stat (path, &st), 0);
  assert_int_equal (st.st_mode & 0777, 0640);
  int temps;
  assert_int_equal (s_count_entries (f->dir, ".tmp", &temps), 1);
  assert_int_equal (temps, 0);
  /* Empty content is a valid file. */
  s_write (path, "", 0, 0600);
  cleanup_free char *empty = s_read (path, 1024, &len);
  assert_int_equal (len, 0);
  assert_string_equal (empty, "");
}

static void
test_atomic_write_replaces_whole_inode (void **state)
{
  /* A reader holding the old file keeps the old bytes: the new content is
   * a new inode renamed over the name, never a rewrite in place. */
  fixture_t *f = *state;
  char path[128];
  s_path (path, sizeof path, f, "pidfile");
  s_write (path, "1234", 4, 0644);
  cleanup_close int old_fd = open (path, O_RDONLY | O_CLOEXEC);
  assert_true (old_fd >= 0);
  s_write (path, "5678", 4, 0644);
  char buf[8] = { 0 };
  assert_int_equal (pread (old_fd, buf, sizeof buf - 1, 0), 4);
  assert_string_equal (buf, "1234");
  size_t len;
  cleanup_free char *now = s_read (path, 16, &len);
  assert_string_equal (now, "5678");
}

static void
test_atomic_write_in_missing_dir_fails_cleanly (void **state)
{
  fixture_t *f = *state;
  char path[128];
  s_path (path, sizeof path, f, "missing/state.json");
  zcd_error_t *err = NULL;
  assert_int_equal (zcd_write_file_atomic (path, "x", 1, 0644, &err), -1);
  assert_non_null (err);
  assert_int_equal (err->sys_errno, ENOENT);
  assert_non_null (strstr (err->msg, "missing/state.json"));
  zcd_error_free (&err);
  assert_int_equal (s_count_entries (f->dir, NULL, NULL), 0);
  /* NULL err is allowed too. */
  assert_int_equal (zcd_write_file_atomic (path, "x", 1, 0644, NULL), -1);
}

static void
test_atomic_write_failed_rename_leaves_no_temp (void **state)
{
  /* The target name is a non-empty directory: the temp file is written,
   * the rename fails, and the temp file must go. */
  fixture_t *f = *state;
  char path[128], inner[160];
  s_path (path, sizeof path, f, "taken");
  assert_int_equal (mkdir (path, 0755), 0);
  snprintf (inner, sizeof inner, "%s/keep", path);
  s_write (inner, "k", 1, 0644);
  zcd_error_t *err = NULL;
  assert_int_equal (zcd_write_file_atomic (path, "data", 4, 0644, &err), -1);
  assert_non_null (err);
  assert_true (err->sys_errno == EISDIR || err->sys_errno == ENOTEMPTY);
  zcd_error_free (&err);
  int temps;
  assert_int_equal (s_count_entries (f->dir, ".tmp", &temps), 1);
  assert_int_equal (temps, 0);
  size_t len;
  cleanup_free char *kept = s_read (inner, 16, &len);
  assert_string_equal (kept, "k");
}

/* Runs `writer` in a child whose fsync and fdatasync fail with EPERM
 * (seccomp), as a stand-in for "waits on the disk"; returns what the write
 * returned there. */
static int
s_write_without_fsync (const char *path, int (*writer) (const char *, const void *, size_t,
                                                     mode_t, zcd_error_t **))
{
  pid_t pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    {
      scmp_filter_ctx ctx = seccomp_init (SCMP_ACT_ALLOW);
      if (ctx == NULL || seccomp_rule_add (ctx, SCMP_ACT_ERRNO (EPERM), SCMP_SYS (fsync), 0) < 0
          || seccomp_rule_add (ctx, SCMP_ACT_ERRNO (EPERM), SCMP_SYS (fdatasync), 0) < 0
          || seccomp_load (ctx) < 0)
        _exit (2);
      _exit (writer (path, "new", 3, 0600, NULL) == 0 ? 0 : 1);
    }
  int status;
  assert_int_equal (waitpid (pid, &status, 0), pid);
  assert_true (WIFEXITED (status));
  assert_int_not_equal (WEXITSTATUS (status), 2);
  return WEXITSTATUS (status) == 0 ? 0 : -1;
}

/* zcd_write_file_replace: the same whole-file replacement, without a single
 * fsync (so the loop thread may call it); zcd_write_file_atomic does need
 * one, and fails without. */
static void
test_replace_write_never_fsyncs (void **state)
{
  fixture_t *f = *state;
  char path[128];
  s_path (path, sizeof path, f, "state.json");
  s_write (path, "old", 3, 0600);
  cleanup_close int old_fd = open (path, O_RDONLY | O_CLOEXEC);
  assert_true (old_fd >= 0);
  assert_int_equal (s_write_without_fsync (path, zcd_write_file_atomic), -1);
  assert_int_equal (s_write_without_fsync (path, zcd_write_file_replace), 0);
  size_t len;
  cleanup_free char *now = s_read (path, 16, &len);
  assert_string_equal (now, "new");
  /* A new inode renamed over the name, never a rewrite in place. */
  char buf[8] = { 0 };
  assert_int_equal (pread (old_fd, buf, sizeof buf - 1, 0), 3);
  assert_string_equal (buf, "old");
  int temps;
  assert_int_equal (s_count_entries (f->dir, ".tmp", &temps), 1);
  assert_int_equal (temps, 0);
  /* A failed rename leaves no temp either. */
  char taken[128], inner[160];
  s_path (taken, sizeof taken, f, "taken");
  assert_int_equal (mkdir (taken, 0755), 0);
  snprintf (inner, sizeof inner, "%s/keep", taken);
  s_write (inner, "k", 1, 0644);
  zcd_error_t *err = NULL;
  assert_int_equal (zcd_write_file_replace (taken, "data", 4, 0644, &err), -1);
  assert_true (err->sys_errno == EISDIR || err->sys_errno == ENOTEMPTY);
  zcd_error_free (&err);
  assert_int_equal (s_count_entries (f->dir, ".tmp", &temps), 2);
  assert_int_equal (temps, 0);
}

/* A container skeleton's file made ahead becomes state.json: written and
 * renamed over the name, never created; anything but an empty regular
 * file is refused and left as it is. */
static void
test_replace_into_made_file (void **state)
{
  fixture_t *f = *state;
  char made[128], path[128], link[128];
  s_path (made, sizeof made, f, "state.json.spare");
  s_path (path, sizeof path, f, "state.json");
  s_path (link, sizeof link, f, "link");
  zcd_error_t *err = NULL;
  /* none made: ENOENT, and nothing is created */
  assert_int_equal (zcd_write_file_replace_into (made, path, "x", 1, &err), -1);
  assert_int_equal (err->sys_errno, ENOENT);
  zcd_error_free (&err);
  assert_int_equal (s_count_entries (f->dir, NULL, NULL), 0);
  /* an empty file: its inode becomes state.json */
  cleanup_close int fd = open (made, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  assert_true (fd >= 0);
  struct stat before, after;
  assert_int_equal (fstat (fd, &before), 0);
  assert_int_equal (zcd_write_file_replace_into (made, path, "{}", 2, &err), 0);
  assert_int_equal (stat (path, &after), 0);
  assert_true (after.st_ino == before.st_ino);
  size_t len;
  cleanup_free char *text = s_read (path, 16, &len);
  assert_string_equal (text, "{}");
  assert_int_equal (access (made, F_OK), -1);
  /* not empty, or a link: refused, left alone */
  s_write (made, "old", 3, 0600);
  assert_int_equal (zcd_write_file_replace_into (made, path, "new", 3, &err), -1);
  zcd_error_free (&err);
  cleanup_free char *kept = s_read (made, 16, &len);
  assert_string_equal (kept, "old");
  cleanup_free char *same = s_read (path, 16, &len);
  assert_string_equal (same, "{}");
  assert_int_equal (unlink (made), 0);
  assert_int_equal (symlink (path, made), 0);
  assert_int_equal (zcd_write_file_replace_into (made, link, "new", 3, &err), -1);
  assert_int_equal (err->sys_errno, ELOOP);
  zcd_error_free (&err);
  cleanup_free char *still = s_read (path, 16, &len);
  assert_string_equal (still, "{}");
}

static void
test_atomic_writeat_relative (void **state)
{
  fixture_t *f = *state;
  char sub[128];
  s_path (sub, sizeof sub, f, "sub");
  assert_int_equal (mkdir (sub, 0755), 0);
  cleanup_close int dfd = open (f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  assert_true (dfd >= 0);
  zcd_error_t *err = NULL;
  assert_int_equal (zcd_write_fileat_atomic (dfd, "top", "T", 1, 0644, &err), 0);
  assert_int_equal (zcd_write_fileat_atomic (dfd, "sub/inner", "I", 1, 0644, &err), 0);
  assert_null (err);
  char *buf = NULL;
  size_t len = 0;
  assert_int_equal (zcd_read_fileat (dfd, "sub/inner", 16, &buf, &len, &err), 0);
  assert_string_equal (buf, "I");
  free (buf);
  assert_int_equal (zcd_read_fileat (dfd, "top", 16, &buf, &len, &err), 0);
  assert_string_equal (buf, "T");
  free (buf);
  int temps;
  assert_int_equal (s_count_entries (sub, ".tmp", &temps), 1);
  assert_int_equal (temps, 0);
}

/* ---- reads ---- */

static void
test_read_respects_max (void **state)
{
  fixture_t *f = *state;
  /* Sizes around the 4 KiB starting buffer and its doublings. */
  const size_t sizes[] = { 1, 4095, 4096, 4097, 8192, 10000 };
  char *data = malloc (10001);
  for (size_t i = 0; i < 10001; i++)
    data[i] = (char) ('a' + i % 26);
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
    {
      size_t n = sizes[k];
      char path[128];
      s_path (path, sizeof path, f, "blob");
      s_write (path, data, n, 0644);
      size_t len = 0;
      char *got = s_read (path, n, &len); /* exactly max: fine */
      assert_int_equal (len, n);
      assert_memory_equal (got, data, n);
      assert_int_equal (got[n], '\0');
      free (got);
      zcd_error_t *err = NULL;
      char *none = NULL;
      assert_int_equal (zcd_read_file (path, n - 1, &none, &len, &err), -1);
      assert_null (none);
      assert_int_equal (err->code, ZCD_E_TOO_LARGE);
      zcd_error_free (&err);
    }
  free (data);
}

static void
test_read_missing_and_proc (void **state)
{
  fixture_t *f = *state;
  char path[128];
  s_path (path, sizeof path, f, "absent");
  char *buf = NULL;
  size_t len = 0;
  zcd_error_t *err = NULL;
  assert_int_equal (zcd_read_file (path, 100, &buf, &len, &err), -1);
  assert_null (buf);
  assert_int_equal (err->sys_errno, ENOENT);
  zcd_error_free (&err);
  /* /proc files report size 0: the read goes by EOF, not by stat. */
  buf = s_read ("/proc/self/status", 1 << 20, &len);
  assert_true (len > 0);
  assert_non_null (strstr (buf, "Pid:"));
  free (buf);
}

/* ---- directories ---- */

static void
test_mkdir_p (void **state)
{
  fixture_t *f = *state;
  char path[128];
  s_path (path, sizeof path, f, "a/b/c/d");
  zcd_error_t *err = NULL;
  assert_int_equal (zcd_mkdir_p (path, 0755, &err), 0);
  struct stat st;
  assert_int_equal (stat (path, &st), 0);
  assert_true (S_ISDIR (st.st_mode));
  /* Again, with a trailing slash and a doubled one: all exist already. */
  s_path (path, sizeof path, f, "a//b/c/d/");
  assert_int_equal (zcd_mkdir_p (path, 0755, &err), 0);
  /* A file in the way. */
  char file[128];
  s_path (file, sizeof file, f, "a/file");
  s_write (file, "x", 1, 0644);
  s_path (path, sizeof path, f, "a/file/sub");
  assert_int_equal (zcd_mkdir_p (path, 0755, &err), -1);
  assert_int_equal (err->sys_errno, ENOTDIR);
  zcd_error_free (&err);
  assert_int_equal (zcd_mkdir_p ("", 0755, &err), -1);
  assert_int_equal (err->code, ZCD_E_INVALID_ARGUMENT);
  zcd_error_free (&err);
}

static void
test_rm_rf (void **state)
{
  fixture_t *f = *state;
  char path[128], outside[128], link[160], file[160];
  s_path (path, sizeof path, f, "tree/x/y");
  assert_int_equal (zcd_mkdir_p (path, 0755, NULL), 0);
  for (int i = 0; i < 20; i++)
    {
      snprintf (file, sizeof file, "%s/f%d", path, i);
      s_write (file, "data", 4, i % 2 ? 0644 : 0);
    }
  /* A symlink to a directory outside: removed, its target untouched. */
  s_path (outside, sizeof outside, f, "outside");
  assert_int_equal (mkdir (outside, 0755), 0);
  snprintf (file, sizeof file, "%s/precious", outside);
  s_write (file, "p", 1, 0644);
  s_path (link, sizeof link, f, "tree/x/link");
  assert_int_equal (symlink (outside, link), 0);
  /* An empty directory that is not writable still goes. */
  s_path (path, sizeof path, f, "tree/ro");
  assert_int_equal (mkdir (path, 0500), 0);

  s_path (path, sizeof path, f, "tree");
  zcd_error_t *err = NULL;
  assert_int_equal (zcd_rm_rf (path, &err), 0);
  assert_null (err);
  struct stat st;
  assert_int_equal (lstat (path, &st), -1);
  assert_int_equal (errno, ENOENT);
  assert_int_equal (stat (file, &st), 0);
  /* Missing is fine; a plain file goes too. */
  assert_int_equal (zcd_rm_rf (path, &err), 0);
  assert_int_equal (zcd_rm_rf (file, &err), 0);
  assert_int_equal (stat (file, &st), -1);
  assert_int_equal (s_count_entries (outside, NULL, NULL), 0);
}

/* ---- processes, clocks, ids ---- */

static void
test_proc_starttime (void **state)
{
  uint64_t self = zcd_proc_starttime (getpid ());
  assert_true (self > 0);
  assert_int_equal (zcd_proc_starttime (getpid ()), self);
  /* A comm with spaces and parentheses does not shift the fields. */
  char old_name[32] = { 0 };
  prctl (PR_GET_NAME, old_name, 0, 0, 0);
  prctl (PR_SET_NAME, "x) 1 2 (3 4", 0, 0, 0);
  uint64_t renamed = zcd_proc_starttime (getpid ());
  prctl (PR_SET_NAME, old_name, 0, 0, 0);
  assert_int_equal (renamed, self);

  int go[2];
  assert_int_equal (pipe (go), 0);
  pid_t pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    {
      char c;
      close (go[1]);
      (void) !read (go[0], &c, 1);
      _exit (0);
    }
  close (go[0]);
  uint64_t child = zcd_proc_starttime (pid);
  assert_true (child >= self);
  close (go[1]);
  assert_int_equal (waitpid (pid, NULL, 0), pid);
  assert_int_equal (zcd_proc_starttime (pid), 0);
  assert_int_equal (zcd_proc_starttime (0), 0);
  assert_int_equal (zcd_proc_starttime (-1), 0);
}

static void
test_clocks (void **state)
{
  uint64_t a = zcd_mono_ns ();
  uint64_t b = zcd_mono_ns ();
  assert_true (b >= a);
  assert_true (zcd_mono_ms () >= a / 1000000);
  int64_t now = zcd_now_ns ();
  int64_t secs = (int64_t) time (NULL);
  assert_true (now / 1000000000LL >= secs - 1 && now / 1000000000LL <= secs + 1);
}

static int
s_valid (const char *s)
{
  return zcd_valid_id (s, strlen (s));
}

static void
test_valid_id (void **state)
{
  char max[66];
  memset (max, 'a', 64);
  max[64] = '\0';
  assert_true (s_valid (max));
  max[64] = 'a';
  max[65] = '\0';
  assert_false (s_valid (max));

  const char *good[] = { "a", "Z", "9", "web1", "a_b.c-d", "0.1.2", "A-", "x..", NULL };
  for (int i = 0; good[i]; i++)
    if (!s_valid (good[i]))
      fail_msg ("`%s` should be valid", good[i]);
  const char *bad[] = { "", "_a", ".a", "-a", ".", "..", "a/b", "a b", "a\n", "caf\xc3\xa9",
                        "a:b", "a*", "a\\b", NULL };
  for (int i = 0; bad[i]; i++)
    if (s_valid (bad[i]))
      fail_msg ("`%s` should be invalid", bad[i]);
  /* The length is authoritative: a NUL inside is just a bad character. */
  assert_false (zcd_valid_id ("ab\0c", 4));
  assert_true (zcd_valid_id ("ab\0c", 2));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_atomic_write_replaces_content, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_atomic_write_replaces_whole_inode, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_atomic_write_in_missing_dir_fails_cleanly, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_atomic_write_failed_rename_leaves_no_temp, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_atomic_writeat_relative, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_replace_write_never_fsyncs, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_replace_into_made_file, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_read_respects_max, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_read_missing_and_proc, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_mkdir_p, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_rm_rf, s_setup, s_teardown),
    cmocka_unit_test (test_proc_starttime),
    cmocka_unit_test (test_clocks),
    cmocka_unit_test (test_valid_id),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
