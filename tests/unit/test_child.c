/* core/child: captured output, exit codes, deadlines that kill the whole
 * process group, spawn failures, forgotten children and orphans reaped on
 * SIGCHLD through a signalfd, as the daemon does; a function run in a
 * forked child (child_fork). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/child.h"
#include "core/fsutil.h"
#include "core/loop.h"

typedef struct
{
  loop_t *loop;
  children_t *children;
  int sigfd;
  loop_watch_t *sigwatch;
  loop_timer_t *guard;
  bool guard_fired;
} fixture_t;

/* What a completion callback saw; out/err are copies. */
typedef struct
{
  int calls;
  pid_t pid;
  int exit_code;
  int wait_status;
  bool timed_out;
  char *out, *err;
  size_t out_len, err_len;
  uint64_t done_at_ms;
  loop_t *stop; /* stop this loop when it completes */
} result_t;

static void
s_on_sigchld (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  fixture_t *f = arg;
  struct signalfd_siginfo si;
  while (read (fd, &si, sizeof si) == sizeof si)
    ;
  children_reap (f->children);
}

static int
s_setup (void **state)
{
  fixture_t *f = calloc (1, sizeof *f);
  f->loop = loop_new ();
  f->children = children_new (f->loop);
  sigset_t set;
  sigemptyset (&set);
  sigaddset (&set, SIGCHLD);
  f->sigfd = signalfd (-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (f->loop == NULL || f->children == NULL || f->sigfd < 0)
    return -1;
  f->sigwatch = loop_add_fd (f->loop, f->sigfd, EPOLLIN, s_on_sigchld, f);
  *state = f;
  return 0;
}

static int
s_teardown (void **state)
{
  fixture_t *f = *state;
  children_destroy (&f->children);
  loop_remove (f->loop, f->sigwatch);
  close (f->sigfd);
  loop_destroy (&f->loop);
  free (f);
  /* Nothing a test started may outlive it. */
  while (waitpid (-1, NULL, WNOHANG) > 0)
    ;
  return 0;
}

static void
s_guard_fired (loop_t *loop, void *arg)
{
  fixture_t *f = arg;
  f->guard = NULL;
  f->guard_fired = true;
  loop_stop (loop);
}

static void
s_run (fixture_t *f, uint64_t limit_ms)
{
  f->guard_fired = false;
  f->guard = loop_timer_add (f->loop, limit_ms, s_guard_fired, f);
  assert_int_equal (loop_run (f->loop), 0);
  assert_false (f->guard_fired);
  loop_timer_cancel (f->loop, f->guard);
  f->guard = NULL;
}

static void
s_done (const child_result_t *res, void *arg)
{
  result_t *r = arg;
  r->calls++;
  r->pid = res->pid;
  r->exit_code = res->exit_code;
  r->wait_status = res->wait_status;
  r->timed_out = res->timed_out;
  assert_non_null (res->out);
  assert_non_null (res->err);
  assert_int_equal (strlen (res->out), res->out_len);
  r->out = strndup (res->out, res->out_len);
  r->err = strndup (res->err, res->err_len);
  r->out_len = res->out_len;
  r->err_len = res->err_len;
  r->done_at_ms = zcd_mono_ms ();
  if (r->stop)
    loop_stop (r->stop);
}

static void
s_result_clear (result_t *r)
{
  free (r->out);
  free (r->err);
  r->out = r->err = NULL;
}

static child_t *
s_spawn (fixture_t *f, char *const argv[], const child_opts_t *opts, result_t *r)
{
  zcd_error_t *err = NULL;
  r->stop = f->loop;
  child_t *c = child_spawn (f->children, argv, opts, s_done, r, &err);
  if (c == NULL)
    fail_msg ("spawn %s: %s", argv[0], err->msg);
  assert_true (child_pid (c) > 0);
  return c;
}

/* Spawn `sh -c script` and run until it completes. */
static void
s_sh (fixture_t *f, const char *script, const child_opts_t *opts, result_t *r)
{
  char *argv[] = { "sh", "-c", (char *) script, NULL };
  s_spawn (f, argv, opts, r);
  s_run (f, 10000);
  assert_int_equal (r->calls, 1);
}

/* ---- output and exit codes ---- */

static void
test_captures_stdout_and_stderr (void **state)
{
  fixture_t *f = *state;
  result_t r = { 0 };
  s_sh (f, "echo out; echo err >&2; printf 'more'", NULL, &r);
  assert_string_equal (r.out, "out\nmore");
  assert_string_equal (r.err, "err\n");
  assert_int_equal (r.exit_code, 0);
  assert_true (WIFEXITED (r.wait_status));
  assert_int_equal (children_running (f->children), 0);
  s_result_clear (&r);
}

static void
test_exit_codes (void **state)
{
  fixture_t *f = *state;
  const struct
  {
    const char *script;
    int code;
  } cases[] = { { "exit 0", 0 }, { "exit 3", 3 }, { "kill -9 $$", 137 }, { "kill -TERM $$", 143 } };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    {
      result_t r = { 0 };
      s_sh (f, cases[i].script, NULL, &r);
      assert_int_equal (r.exit_code, cases[i].code);
      assert_int_equal (r.exit_code, child_exit_code (r.wait_status));
      assert_false (r.timed_out);
      s_result_clear (&r);
    }
  assert_int_equal (child_exit_code (9 /* killed by SIGKILL */), 137);
  assert_int_equal (child_exit_code (3 << 8), 3);
}

static void
test_output_beyond_max_is_dropped_not_blocking (void **state)
{
  fixture_t *f = *state;
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.max_output = 1000;
  result_t r = { 0 };
  /* 1 MB through a 64 KiB pipe: the child only finishes if the rest is read. */
  s_sh (f, "head -c 1000000 /dev/zero | tr '\\0' x; echo done >&2", &opts, &r);
  assert_int_equal (r.out_len, 1000);
  assert_int_equal (strspn (r.out, "x"), 1000);
  assert_string_equal (r.err, "done\n");
  assert_int_equal (r.exit_code, 0);
  s_result_clear (&r);
}

static void
test_no_capture_cwd_and_pass_fd (void **state)
{
  fixture_t *f = *state;
  int p[2];
  assert_int_equal (pipe2 (p, O_CLOEXEC), 0);
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.capture = false;
  opts.cwd = "/proc";
  opts.pass_fd = p[1];
  result_t r = { 0 };
  s_sh (f, "echo lost; pwd >&3", &opts, &r);
  close (p[1]);
  assert_int_equal (r.out_len, 0);
  assert_string_equal (r.out, "");
  char buf[64] = { 0 };
  assert_int_equal (read (p[0], buf, sizeof buf - 1), 6);
  assert_string_equal (buf, "/proc\n");
  close (p[0]);
  assert_int_equal (r.exit_code, 0);
  s_result_clear (&r);
}

/* ---- deadlines ---- */

static void
test_deadline_kills_sleep (void **state)
{
  fixture_t *f = *state;
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.deadline_ms = 100;
  result_t r = { 0 };
  char *argv[] = { "sleep", "10", NULL };
  uint64_t start = zcd_mono_ms ();
  s_spawn (f, argv, &opts, &r);
  s_run (f, 5000);
  assert_int_equal (r.calls, 1);
  assert_true (r.timed_out);
  assert_int_equal (r.exit_code, 137);
  assert_true (r.done_at_ms - start >= 100);
  assert_true (r.done_at_ms - start < 3000);
  s_result_clear (&r);
}

static void
test_deadline_kills_the_process_group (void **state)
{
  /* The background sleep holds stdout open: completion needs it dead too. */
  fixture_t *f = *state;
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.deadline_ms = 100;
  result_t r = { 0 };
  uint64_t start = zcd_mono_ms ();
  s_sh (f, "sleep 10 & echo started; wait", &opts, &r);
  assert_true (r.timed_out);
  assert_string_equal (r.out, "started\n");
  assert_true (r.done_at_ms - start < 3000);
  s_result_clear (&r);
}

static void
test_deadline_not_reached (void **state)
{
  fixture_t *f = *state;
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.deadline_ms = 5000;
  result_t r = { 0 };
  s_sh (f, "exit 7", &opts, &r);
  assert_false (r.timed_out);
  assert_int_equal (r.exit_code, 7);
  s_result_clear (&r);
}

/* ---- failures, forgetting, orphans ---- */

static void
s_never_done (const child_result_t *res, void *arg)
{
  fail_msg ("callback ran for pid %d", (int) res->pid);
}

/* Under valgrind the vfork-style clone becomes a plain fork, so the exec
 * failure cannot travel back to posix_spawnp: the child exits 127 instead. */
static bool
s_under_valgrind (void)
{
  const char *preload = getenv ("LD_PRELOAD");
  return preload && strstr (preload, "vgpreload");
}

static void
s_expect_spawn_failure (fixture_t *f, const char *prog)
{
  zcd_error_t *err = NULL;
  char *argv[] = { (char *) prog, "x", NULL };
  result_t r = { 0 };
  child_t *c = child_spawn (f->children, argv, NULL, s_done, &r, &err);
  if (c && s_under_valgrind ())
    {
      r.stop = f->loop;
      s_run (f, 10000);
      assert_int_equal (r.exit_code, 127);
      s_result_clear (&r);
      return;
    }
  assert_null (c);
  assert_non_null (err);
  assert_non_null (strstr (err->msg, prog));
  assert_non_null (strstr (err->msg, strerror (ENOENT)));
  zcd_error_free (&err);
  assert_int_equal (r.calls, 0);
}

static void
test_missing_program (void **state)
{
  fixture_t *f = *state;
  s_expect_spawn_failure (f, "zcd-no-such-program");
  s_expect_spawn_failure (f, "/nonexistent/prog");
  assert_int_equal (children_running (f->children), 0);
}

/* Polls a counter from a timer so the loop keeps reaping meanwhile. */
typedef struct
{
  fixture_t *f;
  bool (*done) (fixture_t *f);
} waiter_t;

static void
s_poll (loop_t *loop, void *arg)
{
  waiter_t *w = arg;
  if (w->done (w->f))
    loop_stop (loop);
  else
    assert_non_null (loop_timer_add (loop, 2, s_poll, w));
}

static void
s_wait_for (fixture_t *f, bool (*done) (fixture_t *f), uint64_t limit_ms)
{
  waiter_t w = { f, done };
  assert_non_null (loop_timer_add (f->loop, 0, s_poll, &w));
  s_run (f, limit_ms);
}

static bool
s_none_running (fixture_t *f)
{
  return children_running (f->children) == 0;
}

static void
test_forgotten_child_is_reaped_silently (void **state)
{
  fixture_t *f = *state;
  char *argv[] = { "sh", "-c", "echo bye; exit 4", NULL };
  child_t *c = child_spawn (f->children, argv, NULL, s_never_done, NULL, NULL);
  assert_non_null (c);
  pid_t pid = child_pid (c);
  child_forget (f->children, c);
  assert_int_equal (children_running (f->children), 1);
  s_wait_for (f, s_none_running, 5000);
  /* Reaped by us, not left as a zombie, and not counted as unclaimed. */
  assert_int_equal (waitpid (pid, NULL, WNOHANG), -1);
  assert_int_equal (errno, ECHILD);
  assert_int_equal (children_unclaimed_reaped (f->children), 0);
}

static bool
s_two_unclaimed (fixture_t *f)
{
  return children_unclaimed_reaped (f->children) == 2;
}

static void
test_unregistered_children_are_counted (void **state)
{
  fixture_t *f = *state;
  for (int i = 0; i < 2; i++)
    {
      pid_t pid = fork ();
      assert_true (pid >= 0);
      if (pid == 0)
        _exit (0);
    }
  /* A registered one at the same time is still dispatched to its owner. */
  result_t r = { 0 };
  char *argv[] = { "true", NULL };
  s_spawn (f, argv, NULL, &r);
  r.stop = NULL;
  s_wait_for (f, s_two_unclaimed, 5000);
  s_wait_for (f, s_none_running, 5000);
  assert_int_equal (children_unclaimed_reaped (f->children), 2);
  assert_int_equal (r.calls, 1);
  assert_int_equal (r.exit_code, 0);
  s_result_clear (&r);
}

#define MANY_CHILDREN 50

static void
test_many_children_at_once (void **state)
{
  /* SIGCHLDs coalesce: one signal may stand for many exits. */
  fixture_t *f = *state;
  result_t *r = calloc (MANY_CHILDREN, sizeof *r);
  for (int i = 0; i < MANY_CHILDREN; i++)
    {
      char script[48];
      snprintf (script, sizeof script, "echo %d; exit %d", i, i);
      char *argv[] = { "sh", "-c", script, NULL };
      s_spawn (f, argv, NULL, &r[i]);
      r[i].stop = NULL;
    }
  assert_int_equal (children_running (f->children), MANY_CHILDREN);
  s_wait_for (f, s_none_running, 10000);
  for (int i = 0; i < MANY_CHILDREN; i++)
    {
      char expect[16];
      snprintf (expect, sizeof expect, "%d\n", i);
      assert_int_equal (r[i].calls, 1);
      assert_int_equal (r[i].exit_code, i);
      assert_string_equal (r[i].out, expect);
      s_result_clear (&r[i]);
    }
  free (r);
}

static void
test_destroy_with_running_child (void **state)
{
  /* children_destroy forgets a running child: no callback, no leak. */
  fixture_t *f = *state;
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.deadline_ms = 60000;
  char *argv[] = { "sleep", "10", NULL };
  child_t *c = child_spawn (f->children, argv, &opts, s_never_done, NULL, NULL);
  assert_non_null (c);
  pid_t pid = child_pid (c);
  children_destroy (&f->children);
  assert_null (f->children);
  assert_int_equal (kill (pid, SIGKILL), 0);
  assert_int_equal (waitpid (pid, NULL, 0), pid);
  f->children = children_new (f->loop);
}

/* ---- a function in a forked child ---- */

typedef struct
{
  int kept, dropped;
} fork_fds_t;

/* Reports on stdout which fds it holds; exits 7. */
static int
s_forked (void *arg)
{
  fork_fds_t *fds = arg;
  printf ("kept=%d dropped=%d", fcntl (fds->kept, F_GETFD) >= 0, fcntl (fds->dropped, F_GETFD) >= 0);
  fflush (stdout);
  fprintf (stderr, "why");
  return 7;
}

/* child_fork: the function's return value is the exit code, its output is
 * captured, and the child holds only the fds it was given (none of the
 * daemon's sockets or pipes stay open through it). */
static void
test_fork_runs_a_function_with_only_its_fds (void **state)
{
  fixture_t *f = *state;
  int kept = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  int dropped = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  assert_true (kept >= 0 && dropped >= 0);
  fork_fds_t fds = { kept, dropped };
  result_t r = { .stop = f->loop };
  zcd_error_t *err = NULL;
  child_t *c = child_fork (f->children, s_forked, &fds, &kept, 1, NULL, s_done, &r, &err);
  if (c == NULL)
    fail_msg ("fork: %s", err->msg);
  s_run (f, 10000);
  assert_int_equal (r.calls, 1);
  assert_int_equal (r.exit_code, 7);
  assert_string_equal (r.out, "kept=1 dropped=0");
  assert_string_equal (r.err, "why");
  assert_int_equal (children_running (f->children), 0);
  s_result_clear (&r);
  close (kept);
  close (dropped);
}

int
main (void)
{
  /* As in the daemon: SIGCHLD only through the signalfd. */
  sigset_t set;
  sigemptyset (&set);
  sigaddset (&set, SIGCHLD);
  sigprocmask (SIG_BLOCK, &set, NULL);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_captures_stdout_and_stderr, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_exit_codes, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_output_beyond_max_is_dropped_not_blocking, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_no_capture_cwd_and_pass_fd, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_deadline_kills_sleep, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_deadline_kills_the_process_group, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_deadline_not_reached, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_missing_program, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_forgotten_child_is_reaped_silently, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_unregistered_children_are_counted, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_many_children_at_once, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_destroy_with_running_child, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_fork_runs_a_function_with_only_its_fds, s_setup,
                                     s_teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
