/* build/zcd-shim against the real runtimes (runc and crun), driven the way
 * the daemon drives it (core/shimproto.h): a state directory with the
 * `exit` and `control` FIFOs, the exit read end opened before the spawn, a
 * sync pipe on fd 3, then the record, the hang-up and exitStatus.
 *
 * Covered per runtime: output of `ls /` in the stdout file and status 0;
 * 137 after SIGKILL of the container process (and a shim that survives
 * SIGTERM, SIGINT, SIGHUP, SIGPIPE); 143 after SIGTERM (to a
 * trapping PID 1, and to an exec'd `sleep` that dies of the signal); a
 * missing executable reported as ZCD_SYNC_ERROR in the runtime's own words;
 * close_stdin making `cat` see EOF; an exec into a running init with its
 * own exit status; a terminal with output relay and resize, and ^D for
 * close_stdin; spawned as the daemon spawns it, a shim that runs in place,
 * with no controlling terminal though it opened one, sandboxed when it
 * reports; a runtime that is not there.
 *
 * Run from the repository root; BUILD names the build directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/shimproto.h"

#define DEADLINE_MS 20000

/* snprintf that fails the test instead of truncating a path. */
#define s_format(buf, cap, ...)                                                                    \
  do                                                                                               \
    {                                                                                              \
      int s_n_ = snprintf ((buf), (cap), __VA_ARGS__);                                             \
      if (s_n_ < 0 || (size_t) s_n_ >= (size_t) (cap))                                             \
        fail_msg ("path too long");                                                                \
    }                                                                                              \
  while (0)

typedef struct
{
  const char *runtime;
  char root[PATH_MAX]; /* the runtime's --root: nothing shared with others */
} runtime_t;

typedef struct
{
  char dir[PATH_MAX];
  int exit_fd;
  int control_fd;
  struct zcd_sync_record rec;
  char text[ZCD_SYNC_MAX_TEXT + 1];
} shim_run_t;

static char s_shim[PATH_MAX];
static char s_tmp[PATH_MAX];
static json_t *s_spec; /* `runc spec` output, the template of every bundle */
static int s_counter;
static runtime_t s_runc = { .runtime = "runc" };
static runtime_t s_crun = { .runtime = "crun" };

/* The test is a subreaper: shims detach, and this machine's init reaps
 * orphans late or never. */
static void
s_reap_zombies (void)
{
  while (waitpid (-1, NULL, WNOHANG) > 0)
    ;
}

static bool
s_on_path (const char *name)
{
  char cmd[256];
  s_format (cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
  return system (cmd) == 0;
}

static int
s_make_rootfs (void)
{
  char path[PATH_MAX + 64];
  s_format (path, sizeof path, "mkdir -p %s/rootfs/bin && cp /bin/busybox %s/rootfs/bin/", s_tmp,
            s_tmp);
  if (system (path) != 0)
    return -1;
  const char *applets[] = { "sh", "ls", "cat", "sleep", "echo", "tty", "stty", "true" };
  for (size_t i = 0; i < sizeof applets / sizeof applets[0]; i++)
    {
      s_format (path, sizeof path, "%s/rootfs/bin/%s", s_tmp, applets[i]);
      if (symlink ("busybox", path) < 0)
        return -1;
    }
  s_format (path, sizeof path, "mkdir -p %s/template && runc spec --bundle %s/template", s_tmp,
            s_tmp);
  if (system (path) != 0)
    return -1;
  s_format (path, sizeof path, "%s/template/config.json", s_tmp);
  s_spec = json_load_file (path, 0, NULL);
  return s_spec ? 0 : -1;
}

static int
s_group_setup (void **state)
{
  const char *build = getenv ("BUILD") ? getenv ("BUILD") : "build";
  s_format (s_shim, sizeof s_shim, "%s/zcd-shim", build);
  if (access (s_shim, X_OK) < 0 || access ("/bin/busybox", X_OK) < 0 || !s_on_path ("runc"))
    {
      print_message ("zcd-shim, busybox or runc missing: skipped\n");
      return 0;
    }
  char *abs = realpath (s_shim, NULL);
  s_format (s_shim, sizeof s_shim, "%s", abs);
  free (abs);
  s_format (s_tmp, sizeof s_tmp, "/tmp/zcd-test-shim.XXXXXX");
  if (mkdtemp (s_tmp) == NULL || s_make_rootfs () < 0)
    return -1;
  s_format (s_runc.root, sizeof s_runc.root, "%s/root-runc", s_tmp);
  s_format (s_crun.root, sizeof s_crun.root, "%s/root-crun", s_tmp);
  prctl (PR_SET_CHILD_SUBREAPER, 1);
  /* crun 1.8 refuses a hybrid cgroup host without a v1 hugetlb mount. */
  system ("sh tools/mount-hugetlb.sh >/dev/null 2>&1");
  return 0;
}

/* A failed test can leave a container behind: remove what the runtimes
 * still know under our roots, so no process or cgroup outlives the run. */
static void
s_delete_leftovers (const runtime_t *rt)
{
  char cmd[PATH_MAX * 2];
  s_format (cmd, sizeof cmd,
            "for c in $(%s --root %s list -q 2>/dev/null); do %s --root %s delete --force $c; done"
            " >/dev/null 2>&1",
            rt->runtime, rt->root, rt->runtime, rt->root);
  if (system (cmd) != 0)
    print_message ("cleaning up %s containers failed\n", rt->runtime);
}

static int
s_group_teardown (void **state)
{
  if (s_spec)
    {
      s_delete_leftovers (&s_runc);
      if (s_on_path ("crun"))
        s_delete_leftovers (&s_crun);
    }
  s_reap_zombies ();
  if (s_spec)
    json_decref (s_spec);
  if (s_tmp[0])
    zcd_rm_rf (s_tmp, NULL);
  return 0;
}

static void
s_require (const runtime_t *rt)
{
  if (s_spec == NULL || !s_on_path (rt->runtime))
    skip ();
}

static void
s_unique_id (char *out, size_t cap, const char *what)
{
  s_format (out, cap, "shimtest-%d-%d-%s", (int) getpid (), ++s_counter, what);
}

/* A bundle in <tmp>/<id>/bundle whose config runs args; the root
 * filesystem is shared (read-only) by every bundle. */
static void
s_make_bundle (const char *id, const char *const *args, bool terminal, char *bundle, size_t cap)
{
  s_format (bundle, cap, "%s/%s/bundle", s_tmp, id);
  assert_int_equal (zcd_mkdir_p (bundle, 0755, NULL), 0);
  json_t *spec = json_deep_copy (s_spec);
  json_t *process = json_object_get (spec, "process");
  json_t *argv = json_array ();
  for (size_t i = 0; args[i]; i++)
    json_array_append_new (argv, json_string (args[i]));
  json_object_set_new (process, "args", argv);
  json_object_set_new (process, "terminal", json_boolean (terminal));
  char rootfs[PATH_MAX + 16];
  s_format (rootfs, sizeof rootfs, "%s/rootfs", s_tmp);
  json_object_set_new (json_object_get (spec, "root"), "path", json_string (rootfs));
  char path[PATH_MAX + 16];
  s_format (path, sizeof path, "%s/config.json", bundle);
  assert_int_equal (json_dump_file (spec, path, JSON_INDENT (1)), 0);
  json_decref (spec);
}

/* process.json for an exec: the bundle's process with other args. */
static void
s_write_process_json (const char *dir, const char *const *args)
{
  json_t *process = json_deep_copy (json_object_get (s_spec, "process"));
  json_t *argv = json_array ();
  for (size_t i = 0; args[i]; i++)
    json_array_append_new (argv, json_string (args[i]));
  json_object_set_new (process, "args", argv);
  json_object_set_new (process, "terminal", json_false ());
  char path[PATH_MAX + 16];
  s_format (path, sizeof path, "%s/process.json", dir);
  assert_int_equal (json_dump_file (process, path, 0), 0);
  json_decref (process);
}

static void
s_prepare_dir (shim_run_t *run, const char *id, const char *proc)
{
  memset (run, 0, sizeof *run);
  s_format (run->dir, sizeof run->dir, "%s/%s/%s", s_tmp, id, proc);
  assert_int_equal (zcd_mkdir_p (run->dir, 0755, NULL), 0);
  char path[PATH_MAX + 16];
  s_format (path, sizeof path, "%s/exit", run->dir);
  assert_int_equal (mkfifo (path, 0600), 0);
  run->exit_fd = open (path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  assert_true (run->exit_fd >= 0);
  s_format (path, sizeof path, "%s/control", run->dir);
  assert_int_equal (mkfifo (path, 0600), 0);
  run->control_fd = open (path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  assert_true (run->control_fd >= 0);
}

static size_t
s_read_with_deadline (int fd, char *buf, size_t cap)
{
  size_t got = 0;
  uint64_t deadline = zcd_mono_ms () + DEADLINE_MS;
  while (got < cap && zcd_mono_ms () < deadline)
    {
      struct pollfd pfd = { .fd = fd, .events = POLLIN };
      if (poll (&pfd, 1, 100) <= 0)
        continue;
      ssize_t n = read (fd, buf + got, cap - got);
      if (n <= 0)
        break;
      got += (size_t) n;
    }
  return got;
}

#define SHIM_ARGV_MAX 48

/* The shim's command line for a run; stdout and stderr go to out and err
 * in its directory unless extra says otherwise (the last option wins). */
static void
s_shim_argv (shim_run_t *run, const runtime_t *rt, const char *mode, const char *id,
             const char *bundle, const char *const *extra, const char **argv)
{
  static char out[PATH_MAX + 16], err[PATH_MAX + 16];
  s_format (out, sizeof out, "%s/out", run->dir);
  s_format (err, sizeof err, "%s/err", run->dir);
  const char *fixed[] = { s_shim, "--mode", mode, "--id", id, "--bundle", bundle,
                          "--runtime", rt->runtime, "--runtime-arg", "--root",
                          "--runtime-arg", rt->root, "--sync-fd", "3",
                          "--stdout", out, "--stderr", err };
  size_t n = 0;
  for (; n < sizeof fixed / sizeof fixed[0]; n++)
    argv[n] = fixed[n];
  for (size_t i = 0; extra && extra[i] && n < SHIM_ARGV_MAX - 1; i++)
    argv[n++] = extra[i];
  argv[n] = NULL;
}

/* Spawn the shim and read its one sync record; returns the spawned pid.
 * detached: as the daemon spawns it, leading a session of its own and
 * waited for by nobody.  Otherwise from this process's session: the shim
 * then forks, and the spawned process exits at once. */
static pid_t
s_spawn_shim (shim_run_t *run, const char *const *argv, bool detached)
{
  int sync[2];
  assert_int_equal (pipe2 (sync, O_CLOEXEC), 0);
  pid_t pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    {
      if ((detached && setsid () < 0) || chdir (run->dir) < 0 || dup2 (sync[1], 3) < 0)
        _exit (126);
      execv (argv[0], (char *const *) argv);
      _exit (127);
    }
  close (sync[1]);
  if (!detached)
    {
      int status = 0;
      assert_int_equal (waitpid (pid, &status, 0), pid);
      assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
    }
  size_t got = s_read_with_deadline (sync[0], (char *) &run->rec, sizeof run->rec);
  assert_int_equal (got, sizeof run->rec);
  assert_int_equal (run->rec.magic, ZCD_SYNC_MAGIC);
  assert_true (run->rec.text_len <= ZCD_SYNC_MAX_TEXT);
  got = s_read_with_deadline (sync[0], run->text, run->rec.text_len);
  assert_int_equal (got, run->rec.text_len);
  run->text[got] = '\0';
  /* Exactly one record: EOF follows. */
  char extra_byte;
  assert_int_equal (read (sync[0], &extra_byte, 1), 0);
  close (sync[0]);
  return pid;
}

static void
s_start_shim (shim_run_t *run, const runtime_t *rt, const char *mode, const char *id,
              const char *bundle, const char *const *extra)
{
  const char *argv[SHIM_ARGV_MAX];
  s_shim_argv (run, rt, mode, id, bundle, extra, argv);
  s_spawn_shim (run, argv, false);
}

static void
s_start_init (shim_run_t *run, const runtime_t *rt, const char *id, const char *const *args,
              const char *const *extra, bool terminal)
{
  char bundle[PATH_MAX];
  s_make_bundle (id, args, terminal, bundle, sizeof bundle);
  s_prepare_dir (run, id, "init");
  s_start_shim (run, rt, "init", id, bundle, extra);
}

/* The shim is gone once every write end of `exit` is closed. */
static void
s_wait_hangup (shim_run_t *run)
{
  uint64_t deadline = zcd_mono_ms () + DEADLINE_MS;
  for (;;)
    {
      s_reap_zombies ();
      struct pollfd pfd = { .fd = run->exit_fd, .events = POLLIN };
      if (poll (&pfd, 1, 100) == 1 && (pfd.revents & POLLHUP))
        break;
      if (zcd_mono_ms () > deadline)
        fail_msg ("shim in %s did not hang up", run->dir);
    }
  close (run->exit_fd);
  close (run->control_fd);
  s_reap_zombies ();
}

static char *
s_read_file (const shim_run_t *run, const char *name)
{
  char path[PATH_MAX + 32];
  s_format (path, sizeof path, "%s/%s", run->dir, name);
  char *text = NULL;
  if (zcd_read_file (path, 1 << 20, &text, NULL, NULL) < 0)
    return NULL;
  return text;
}

static int
s_exit_status (const shim_run_t *run)
{
  char *text = s_read_file (run, "exitStatus");
  assert_non_null (text);
  int status = atoi (text);
  free (text);
  return status;
}

/* Output shows up when the container writes it: wait for it. */
static void
s_wait_output (const shim_run_t *run, const char *needle)
{
  uint64_t deadline = zcd_mono_ms () + DEADLINE_MS;
  for (;;)
    {
      char *text = s_read_file (run, "out");
      bool found = text && strstr (text, needle);
      free (text);
      if (found)
        return;
      if (zcd_mono_ms () > deadline)
        fail_msg ("`%s` never appeared in %s/out", needle, run->dir);
      struct pollfd none;
      poll (&none, 0, 10);
    }
}

static bool
s_runtime_knows (const runtime_t *rt, const char *id)
{
  char cmd[PATH_MAX * 2];
  s_format (cmd, sizeof cmd, "%s --root %s state %s >/dev/null 2>&1", rt->runtime, rt->root, id);
  return system (cmd) == 0;
}

static void
s_send_control (shim_run_t *run, uint32_t type, uint32_t width, uint32_t height)
{
  struct zcd_control_record rec = { ZCD_CONTROL_MAGIC, type, width, height };
  assert_int_equal (write (run->control_fd, &rec, sizeof rec), (ssize_t) sizeof rec);
}

static void
test_ls_output_and_exit_zero (void **state)
{
  const runtime_t *rt = *state;
  s_require (rt);
  char id[96];
  s_unique_id (id, sizeof id, "ls");
  shim_run_t run;
  const char *args[] = { "ls", "/", NULL };
  s_start_init (&run, rt, id, args, NULL, false);
  assert_int_equal (run.rec.type, ZCD_SYNC_STARTED);
  assert_true (run.rec.pid > 0);
  s_wait_hangup (&run);
  assert_int_equal (s_exit_status (&run), 0);
  char *out = s_read_file (&run, "out");
  assert_non_null (out);
  assert_non_null (strstr (out, "bin\n"));
  assert_non_null (strstr (out, "proc\n"));
  free (out);
  /* The files of the contract: pid and starttime of the process. */
  char *pid = s_read_file (&run, "pid");
  assert_non_null (pid);
  assert_int_equal (atoi (pid), run.rec.pid);
  free (pid);
  char *starttime = s_read_file (&run, "starttime");
  assert_non_null (starttime);
  assert_true (strtoull (starttime, NULL, 10) > 0);
  free (starttime);
  /* The shim deleted the stopped container. */
  assert_false (s_runtime_knows (rt, id));
}

static void
test_sigkill_is_137 (void **state)
{
  const runtime_t *rt = *state;
  s_require (rt);
  char id[96];
  s_unique_id (id, sizeof id, "kill");
  shim_run_t run;
  const char *args[] = { "sleep", "1000", NULL };
  s_start_init (&run, rt, id, args, NULL, false);
  assert_int_equal (run.rec.type, ZCD_SYNC_STARTED);
  assert_true (zcd_proc_starttime (run.rec.pid) > 0);
  char *starttime = s_read_file (&run, "starttime");
  assert_non_null (starttime);
  assert_int_equal (strtoull (starttime, NULL, 10), zcd_proc_starttime (run.rec.pid));
  free (starttime);
  /* The shim shrugs off what a terminal or a careless kill sends it: an
   * ignored signal is dropped when sent, a fatal one would be acted on
   * before the shim handles the container's exit, so the exitStatus below
   * proves the shim survived them. */
  char *shim_pid = s_read_file (&run, "shim.pid");
  assert_non_null (shim_pid);
  pid_t shim = (pid_t) atoi (shim_pid);
  free (shim_pid);
  assert_true (zcd_proc_starttime (shim) > 0);
  assert_int_equal (kill (shim, SIGTERM), 0);
  assert_int_equal (kill (shim, SIGINT), 0);
  assert_int_equal (kill (shim, SIGHUP), 0);
  assert_int_equal (kill (shim, SIGPIPE), 0);
  assert_int_equal (kill (run.rec.pid, SIGKILL), 0);
  s_wait_hangup (&run);
  assert_int_equal (s_exit_status (&run), 137);
  assert_false (s_runtime_knows (rt, id));
}

/* The container's PID 1 never dies of a signal it has no handler for (the
 * kernel drops those for a namespace's init), so busybox `sleep` as PID 1
 * would ignore SIGTERM: the init traps it and exits 143 itself.  `ready`
 * says the trap is in place, so the signal cannot arrive before it. */
static void
test_sigterm_to_trapping_init_is_143 (void **state)
{
  const runtime_t *rt = *state;
  s_require (rt);
  char id[96];
  s_unique_id (id, sizeof id, "term");
  shim_run_t run;
  const char *args[] = { "sh", "-c",
                         "trap 'exit 143' TERM; echo ready; while true; do sleep 0.1; done", NULL };
  s_start_init (&run, rt, id, args, NULL, false);
  assert_int_equal (run.rec.type, ZCD_SYNC_STARTED);
  s_wait_output (&run, "ready");
  assert_int_equal (kill (run.rec.pid, SIGTERM), 0);
  s_wait_hangup (&run);
  assert_int_equal (s_exit_status (&run), 143);
}

static void
test_missing_executable_is_runtime_error (void **state)
{
  const runtime_t *rt = *state;
  s_require (rt);
  char id[96];
  s_unique_id (id, sizeof id, "nope");
  shim_run_t run;
  const char *args[] = { "nope", NULL };
  s_start_init (&run, rt, id, args, NULL, false);
  assert_int_equal (run.rec.type, ZCD_SYNC_ERROR);
  assert_int_equal (run.rec.code, ZCD_E_RUNTIME_ERROR);
  /* The runtime's own words: runc says `exec: "nope": executable file not
   * found in $PATH`, crun says "executable file `nope` not found in $PATH". */
  assert_non_null (strstr (run.text, "nope"));
  assert_non_null (strstr (run.text, "not found in $PATH"));
  s_wait_hangup (&run);
  char *status = s_read_file (&run, "exitStatus");
  assert_null (status);
  char *log = s_read_file (&run, "shim.log");
  assert_non_null (log);
  assert_non_null (strstr (log, "not found in $PATH"));
  free (log);
  assert_false (s_runtime_knows (rt, id));
}

/* Field 7 of /proc/<pid>/stat: the controlling terminal, 0 for none. */
static long
s_proc_tty (pid_t pid)
{
  char path[64], buf[1024];
  s_format (path, sizeof path, "/proc/%d/stat", (int) pid);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  assert_true (fd >= 0);
  ssize_t n = read (fd, buf, sizeof buf - 1);
  close (fd);
  assert_true (n > 0);
  buf[n] = '\0';
  /* After the command name: state ppid pgrp session tty_nr. */
  const char *p = strrchr (buf, ')');
  assert_non_null (p);
  char state;
  long ppid, pgrp, session, tty;
  assert_int_equal (sscanf (p + 1, " %c %ld %ld %ld %ld", &state, &ppid, &pgrp, &session, &tty),
                    5);
  return tty;
}

static bool
s_proc_status_has (pid_t pid, const char *line)
{
  char path[64];
  s_format (path, sizeof path, "/proc/%d/status", (int) pid);
  char *text = NULL;
  assert_int_equal (zcd_read_file (path, 1 << 16, &text, NULL, NULL), 0);
  bool found = strstr (text, line) != NULL;
  free (text);
  return found;
}

/* Spawned the way the daemon spawns it (leading a session of its own
 * already), the shim runs in place: no fork, the spawned pid is the one
 * in shim.pid.  Leading its session, it must not take a terminal it opens
 * for the container (a client's stdout may be one) as its controlling
 * terminal.  And when it reports the start, its seccomp filter is in force
 * (a shim that could not confine itself would have failed the start). */
static void
test_detached_shim_runs_in_place (void **state)
{
  const runtime_t *rt = *state;
  s_require (rt);
  char id[96], bundle[PATH_MAX], tty[64];
  s_unique_id (id, sizeof id, "lead");
  const char *args[] = { "sleep", "1000", NULL };
  s_make_bundle (id, args, false, bundle, sizeof bundle);
  int master = posix_openpt (O_RDWR | O_NOCTTY | O_CLOEXEC);
  assert_true (master >= 0);
  assert_int_equal (grantpt (master), 0);
  assert_int_equal (unlockpt (master), 0);
  assert_int_equal (ptsname_r (master, tty, sizeof tty), 0);
  shim_run_t run;
  s_prepare_dir (&run, id, "init");
  /* Read access matters: a write-only open never makes a terminal
   * controlling. */
  const char *extra[] = { "--stdin", tty, "--stdout", tty, NULL };
  const char *argv[SHIM_ARGV_MAX];
  s_shim_argv (&run, rt, "init", id, bundle, extra, argv);
  pid_t shim = s_spawn_shim (&run, argv, true);
  assert_int_equal (run.rec.type, ZCD_SYNC_STARTED);
  char *text = s_read_file (&run, "shim.pid");
  assert_non_null (text);
  assert_int_equal (atoi (text), shim);
  free (text);
  assert_int_equal (getsid (shim), shim);
  assert_int_equal (s_proc_tty (shim), 0);
  assert_true (s_proc_status_has (shim, "\nSeccomp:\t2\n"));
  assert_true (s_proc_status_has (shim, "\nNoNewPrivs:\t1\n"));
  assert_int_equal (kill (run.rec.pid, SIGKILL), 0);
  s_wait_hangup (&run);
  assert_int_equal (s_exit_status (&run), 137);
  assert_false (s_runtime_knows (rt, id));
  close (master);
}

/* A runtime that cannot be executed fails the start as the runtime's
 * failure, naming it; the shim still hangs up. */
static void
test_missing_runtime_is_runtime_error (void **state)
{
  const runtime_t *rt = *state;
  s_require (rt);
  runtime_t missing = { .runtime = "no-such-runtime-zcd" };
  s_format (missing.root, sizeof missing.root, "%s", rt->root);
  char id[96];
  s_unique_id (id, sizeof id, "noruntime");
  shim_run_t run;
  const char *args[] = { "true", NULL };
  s_start_init (&run, &missing, id, args, NULL, false);
  assert_int_equal (run.rec.type, ZCD_SYNC_ERROR);
  assert_int_equal (run.rec.code, ZCD_E_RUNTIME_ERROR);
  assert_non_null (strstr (run.text, "no-such-runtime-zcd"));
  s_wait_hangup (&run);
  char *status = s_read_file (&run, "exitStatus");
  assert_null (status);
}

static void
test_close_stdin_ends_cat (void **state)
{
  const runtime_t *rt = *state;
  s_require (rt);
  char id[96], bundle[PATH_MAX], in[PATH_MAX + 8];
  s_unique_id (id, sizeof id, "cat");
  const char *args[] = { "cat", NULL };
  s_make_bundle (id, args, false, bundle, sizeof bundle);
  shim_run_t run;
  s_prepare_dir (&run, id, "init");
  s_format (in, sizeof in, "%s/in", run.dir);
  assert_int_equal (mkfifo (in, 0600), 0);
  int in_fd = open (in, O_RDWR | O_CLOEXEC);
  assert_true (in_fd >= 0);
  const char *extra[] = { "--stdin", in, NULL };
  s_start_shim (&run, rt, "init", id, bundle, extra);
  assert_int_equal (run.rec.type, ZCD_SYNC_STARTED);
  assert_int_equal (write (in_fd, "hello\n", 6), 6);
  s_wait_output (&run, "hello\n");
  /* The client's FIFO stays open: only close_stdin ends the stream. */
  assert_true (zcd_proc_starttime (run.rec.pid) > 0);
  s_send_control (&run, ZCD_CONTROL_CLOSE_STDIN, 0, 0);
  s_wait_hangup (&run);
  assert_int_equal (s_exit_status (&run), 0);
  close (in_fd);
}

static void
s_start_exec (shim_run_t *run, const runtime_t *rt, const char *id, const char *proc,
              const char *const *args)
{
  s_prepare_dir (run, id, proc);
  s_write_process_json (run->dir, args);
  char bundle[PATH_MAX + 16];
  s_format (bundle, sizeof bundle, "%s/%s/bundle", s_tmp, id);
  s_start_shim (run, rt, "exec", id, bundle, NULL);
}

static void
test_exec_into_running_init (void **state)
{
  const runtime_t *rt = *state;
  s_require (rt);
  char id[96];
  s_unique_id (id, sizeof id, "exec");
  shim_run_t init;
  const char *args[] = { "sleep", "1000", NULL };
  s_start_init (&init, rt, id, args, NULL, false);
  assert_int_equal (init.rec.type, ZCD_SYNC_STARTED);

  shim_run_t echo;
  const char *echo_args[] = { "sh", "-c", "echo exec-ok; exit 7", NULL };
  s_start_exec (&echo, rt, id, "e1", echo_args);
  assert_int_equal (echo.rec.type, ZCD_SYNC_STARTED);
  assert_true (echo.rec.pid != init.rec.pid);
  s_wait_hangup (&echo);
  assert_int_equal (s_exit_status (&echo), 7);
  s_wait_output (&echo, "exec-ok\n");

  /* Not PID 1: a real death by SIGTERM, reported as 128 + 15. */
  shim_run_t sleeper;
  const char *sleep_args[] = { "sleep", "1000", NULL };
  s_start_exec (&sleeper, rt, id, "e2", sleep_args);
  assert_int_equal (sleeper.rec.type, ZCD_SYNC_STARTED);
  assert_int_equal (kill (sleeper.rec.pid, SIGTERM), 0);
  s_wait_hangup (&sleeper);
  assert_int_equal (s_exit_status (&sleeper), 143);

  /* An exec shim leaves the container alone. */
  assert_true (s_runtime_knows (rt, id));
  assert_true (zcd_proc_starttime (init.rec.pid) > 0);
  assert_int_equal (kill (init.rec.pid, SIGKILL), 0);
  s_wait_hangup (&init);
  assert_int_equal (s_exit_status (&init), 137);
}

static void
test_exec_missing_executable_is_runtime_error (void **state)
{
  const runtime_t *rt = *state;
  s_require (rt);
  char id[96];
  s_unique_id (id, sizeof id, "execnope");
  shim_run_t init;
  const char *args[] = { "sleep", "1000", NULL };
  s_start_init (&init, rt, id, args, NULL, false);
  assert_int_equal (init.rec.type, ZCD_SYNC_STARTED);
  shim_run_t bad;
  const char *bad_args[] = { "nope", NULL };
  s_start_exec (&bad, rt, id, "e1", bad_args);
  assert_int_equal (bad.rec.type, ZCD_SYNC_ERROR);
  assert_int_equal (bad.rec.code, ZCD_E_RUNTIME_ERROR);
  assert_non_null (strstr (bad.text, "nope"));
  s_wait_hangup (&bad);
  /* The failed exec left the init running. */
  assert_true (zcd_proc_starttime (init.rec.pid) > 0);
  assert_int_equal (kill (init.rec.pid, SIGKILL), 0);
  s_wait_hangup (&init);
  assert_int_equal (s_exit_status (&init), 137);
}

/* A terminal: output comes through the pty relay, input goes to the
 * master, and a resize record reaches the pty before the input that asks
 * for the size (the shim reads control records before relaying). */
static void
test_terminal_relay_and_resize (void **state)
{
  const runtime_t *rt = *state;
  s_require (rt);
  char id[96], bundle[PATH_MAX], in[PATH_MAX + 8];
  s_unique_id (id, sizeof id, "tty");
  const char *args[] = { "sh", "-c", "tty; echo ready; read x; stty size; echo got-$x", NULL };
  s_make_bundle (id, args, true, bundle, sizeof bundle);
  shim_run_t run;
  s_prepare_dir (&run, id, "init");
  s_format (in, sizeof in, "%s/in", run.dir);
  assert_int_equal (mkfifo (in, 0600), 0);
  int in_fd = open (in, O_RDWR | O_CLOEXEC);
  assert_true (in_fd >= 0);
  const char *extra[] = { "--terminal", "--stdin", in, NULL };
  s_start_shim (&run, rt, "init", id, bundle, extra);
  assert_int_equal (run.rec.type, ZCD_SYNC_STARTED);
  s_wait_output (&run, "ready");
  s_send_control (&run, ZCD_CONTROL_RESIZE, 123, 45);
  assert_int_equal (write (in_fd, "abc\n", 4), 4);
  s_wait_hangup (&run);
  assert_int_equal (s_exit_status (&run), 0);
  char *out = s_read_file (&run, "out");
  assert_non_null (out);
  assert_non_null (strstr (out, "/dev/"));
  assert_non_null (strstr (out, "45 123"));
  assert_non_null (strstr (out, "got-abc"));
  free (out);
  close (in_fd);
}

/* close_stdin on a terminal: the master stays open (it carries the
 * output), so the end of input is ^D, which `cat` reads as EOF. */
static void
test_terminal_close_stdin_sends_eot (void **state)
{
  const runtime_t *rt = *state;
  s_require (rt);
  char id[96], bundle[PATH_MAX], in[PATH_MAX + 8];
  s_unique_id (id, sizeof id, "ttycat");
  const char *args[] = { "cat", NULL };
  s_make_bundle (id, args, true, bundle, sizeof bundle);
  shim_run_t run;
  s_prepare_dir (&run, id, "init");
  s_format (in, sizeof in, "%s/in", run.dir);
  assert_int_equal (mkfifo (in, 0600), 0);
  int in_fd = open (in, O_RDWR | O_CLOEXEC);
  assert_true (in_fd >= 0);
  const char *extra[] = { "--terminal", "--stdin", in, NULL };
  s_start_shim (&run, rt, "init", id, bundle, extra);
  assert_int_equal (run.rec.type, ZCD_SYNC_STARTED);
  assert_int_equal (write (in_fd, "line-one\n", 9), 9);
  /* Echo and cat's copy: the line twice. */
  s_wait_output (&run, "line-one\r\nline-one\r\n");
  s_send_control (&run, ZCD_CONTROL_CLOSE_STDIN, 0, 0);
  s_wait_hangup (&run);
  assert_int_equal (s_exit_status (&run), 0);
  close (in_fd);
}

#define FOR_RUNTIME(test, rt) cmocka_unit_test_prestate (test, &rt)

int
main (void)
{
  const struct CMUnitTest tests[] = {
    FOR_RUNTIME (test_ls_output_and_exit_zero, s_runc),
    FOR_RUNTIME (test_ls_output_and_exit_zero, s_crun),
    FOR_RUNTIME (test_sigkill_is_137, s_runc),
    FOR_RUNTIME (test_sigkill_is_137, s_crun),
    FOR_RUNTIME (test_sigterm_to_trapping_init_is_143, s_runc),
    FOR_RUNTIME (test_sigterm_to_trapping_init_is_143, s_crun),
    FOR_RUNTIME (test_missing_executable_is_runtime_error, s_runc),
    FOR_RUNTIME (test_missing_executable_is_runtime_error, s_crun),
    FOR_RUNTIME (test_detached_shim_runs_in_place, s_runc),
    FOR_RUNTIME (test_detached_shim_runs_in_place, s_crun),
    FOR_RUNTIME (test_missing_runtime_is_runtime_error, s_runc),
    FOR_RUNTIME (test_close_stdin_ends_cat, s_runc),
    FOR_RUNTIME (test_close_stdin_ends_cat, s_crun),
    FOR_RUNTIME (test_exec_into_running_init, s_runc),
    FOR_RUNTIME (test_exec_into_running_init, s_crun),
    FOR_RUNTIME (test_exec_missing_executable_is_runtime_error, s_runc),
    FOR_RUNTIME (test_exec_missing_executable_is_runtime_error, s_crun),
    FOR_RUNTIME (test_terminal_relay_and_resize, s_runc),
    FOR_RUNTIME (test_terminal_relay_and_resize, s_crun),
    FOR_RUNTIME (test_terminal_close_stdin_sends_eot, s_runc),
    FOR_RUNTIME (test_terminal_close_stdin_sends_eot, s_crun),
  };
  return cmocka_run_group_tests (tests, s_group_setup, s_group_teardown);
}
