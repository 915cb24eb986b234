/* Runtime invocations: spawn `<runtime> ...`, wait, and on failure turn the
 * runtime's own words into the error.  Every invocation logs through
 * `--log <dir>/runtime.log --log-format json` (a global option of both runc
 * and crun): for create and exec the runtime's stderr is the container's
 * stderr, so the log file is the one place its messages reliably land. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/fsutil.h"
#include "shim/shim.h"

#define ARGV_MAX (SHIM_MAX_RUNTIME_ARGS + 32)
#define ERROR_TEXT_MAX 4096

void
shim_child_reset_signals (void)
{
  /* SIG_IGN survives execve: the container must not inherit the shim's
   * indifference to SIGINT/SIGHUP/SIGPIPE/SIGTERM. */
  const int sigs[] = { SIGINT, SIGHUP, SIGPIPE, SIGTERM, SIGCHLD };
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    signal (sigs[i], SIG_DFL);
  sigset_t none;
  sigemptyset (&none);
  sigprocmask (SIG_SETMASK, &none, NULL);
}

static size_t
s_build_argv (shim_t *self, const char *const *sub_argv, const char **argv, char *log_path,
              size_t log_path_len)
{
  size_t n = 0;
  snprintf (log_path, log_path_len, "%s/runtime.log", self->dir);
  argv[n++] = self->args.runtime;
  for (size_t i = 0; i < self->args.runtime_args_len; i++)
    argv[n++] = self->args.runtime_args[i];
  argv[n++] = "--log";
  argv[n++] = log_path;
  argv[n++] = "--log-format";
  argv[n++] = "json";
  for (size_t i = 0; sub_argv[i] && n < ARGV_MAX - 1; i++)
    argv[n++] = sub_argv[i];
  argv[n] = NULL;
  return n;
}

static off_t
s_file_size (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0 ? st.st_size : 0;
}

/* Where the runtime's stderr text can be read back afterwards: our
 * capture, or the container's stderr when that is a regular file (a
 * runtime that fails before it sets up logging, like crun without CRIU
 * saying "unknown command restore", writes only there). */
typedef struct
{
  int fd;
  off_t from;
  bool owned; /* a read-only reopening, closed after use */
} s_stderr_mark_t;

static s_stderr_mark_t
s_stderr_mark (int capture, int container_stderr)
{
  if (capture >= 0)
    return (s_stderr_mark_t) { capture, 0, false };
  struct stat st;
  if (container_stderr < 0 || fstat (container_stderr, &st) < 0 || !S_ISREG (st.st_mode))
    return (s_stderr_mark_t) { -1, 0, false };
  /* The container's fd is write-only: read the same file through a new
   * read-only open of it. */
  char path[64];
  snprintf (path, sizeof path, "/proc/self/fd/%d", container_stderr);
  return (s_stderr_mark_t) { open (path, O_RDONLY | O_CLOEXEC), st.st_size, true };
}

static void
s_stderr_mark_release (s_stderr_mark_t *mark)
{
  if (mark->owned && mark->fd >= 0)
    close (mark->fd);
  mark->fd = -1;
}

/* The messages the runtime wrote to its log since `from`, else the text it
 * wrote to stderr, else a note that it said nothing. */
static void
s_collect_error_text (const char *log_path, off_t from, s_stderr_mark_t mark, char *out,
                      size_t cap)
{
  out[0] = '\0';
  cleanup_free char *log = NULL;
  size_t len = 0;
  if (zcd_read_file (log_path, 1 << 20, &log, &len, NULL) == 0 && (off_t) len > from)
    shim_runtime_log_errors (log + from, len - (size_t) from, out, cap);
  if (out[0] == '\0' && mark.fd >= 0)
    {
      ssize_t n = pread (mark.fd, out, cap - 1, mark.from);
      if (n < 0)
        n = 0;
      while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        n--;
      out[n] = '\0';
    }
  if (out[0] == '\0')
    snprintf (out, cap, "no error output");
}

static pid_t
s_spawn (const char **argv, const int fds[3])
{
  pid_t pid = fork ();
  if (pid != 0)
    return pid;
  shim_child_reset_signals ();
  for (int i = 0; i < 3; i++)
    if (dup2 (fds[i], i) < 0)
      _exit (127);
  execvp (argv[0], (char *const *) argv);
  dprintf (2, "exec %s: %s\n", argv[0], strerror (errno));
  _exit (127);
}

static int
s_wait (pid_t pid, int *status)
{
  while (waitpid (pid, status, 0) < 0)
    if (errno != EINTR)
      return -1;
  return 0;
}

static void
s_describe_status (int status, char *out, size_t cap)
{
  if (WIFEXITED (status))
    snprintf (out, cap, "exit status %d", WEXITSTATUS (status));
  else if (WIFSIGNALED (status))
    snprintf (out, cap, "killed by signal %d", WTERMSIG (status));
  else
    snprintf (out, cap, "status %#x", status);
}

int
shim_runtime_run (shim_t *self, const char *const *sub_argv, const int stdio[3],
                  zcd_error_t **err)
{
  const char *argv[ARGV_MAX];
  char log_path[PATH_MAX + 16];
  s_build_argv (self, sub_argv, argv, log_path, sizeof log_path);
  cleanup_close int devnull = open ("/dev/null", O_RDWR | O_CLOEXEC);
  cleanup_close int capture = -1;
  if (stdio[2] < 0)
    capture = memfd_create ("runtime-stderr", MFD_CLOEXEC);
  int fds[3] = { stdio[0] >= 0 ? stdio[0] : devnull, stdio[1] >= 0 ? stdio[1] : devnull,
                 stdio[2] >= 0 ? stdio[2] : capture >= 0 ? capture : devnull };
  if (fds[0] < 0 || fds[1] < 0 || fds[2] < 0)
    return zcd_fail_errno (err, errno, "open /dev/null");
  off_t log_from = s_file_size (log_path);
  __attribute__ ((cleanup (s_stderr_mark_release))) s_stderr_mark_t stderr_mark
      = s_stderr_mark (capture, stdio[2]);
  pid_t pid = s_spawn (argv, fds);
  if (pid < 0)
    return zcd_fail_errno (err, errno, "fork for %s %s", argv[0], sub_argv[0]);
  int status = 0;
  if (s_wait (pid, &status) < 0)
    return zcd_fail_errno (err, errno, "wait for %s %s", argv[0], sub_argv[0]);
  if (WIFEXITED (status) && WEXITSTATUS (status) == 0)
    return 0;
  char how[64], text[ERROR_TEXT_MAX];
  s_describe_status (status, how, sizeof how);
  s_collect_error_text (log_path, log_from, stderr_mark, text, sizeof text);
  shim_log (self, "%s %s: %s: %s", argv[0], sub_argv[0], how, text);
  return zcd_fail (err, ZCD_E_RUNTIME_ERROR, "%s %s: %s: %s", self->args.runtime, sub_argv[0],
                   how, text);
}

static const int s_no_stdio[3] = { -1, -1, -1 };

/* For create, exec and restore the runtime's stdio is the container's (the
 * runtime passes it through); with a terminal the container gets the pty,
 * and the runtime's own stderr is captured. */
static const int *
s_start_stdio (shim_t *self)
{
  return self->args.terminal ? s_no_stdio : self->container_stdio;
}

static int
s_create_and_start (shim_t *self, const char *pid_file, zcd_error_t **err)
{
  const char *argv[16];
  size_t n = 0;
  argv[n++] = "create";
  argv[n++] = "--bundle";
  argv[n++] = self->args.bundle;
  argv[n++] = "--pid-file";
  argv[n++] = pid_file;
  if (self->args.terminal)
    {
      argv[n++] = "--console-socket";
      argv[n++] = shim_console_socket_path (self);
    }
  if (self->args.no_pivot)
    argv[n++] = "--no-pivot";
  argv[n++] = self->args.id;
  argv[n] = NULL;
  if (shim_runtime_run (self, argv, s_start_stdio (self), err) < 0)
    return -1;
  if (self->args.terminal && shim_console_receive (self, err) < 0)
    return -1;
  const char *start[] = { "start", self->args.id, NULL };
  return shim_runtime_run (self, start, s_no_stdio, err);
}

static int
s_exec (shim_t *self, const char *pid_file, zcd_error_t **err)
{
  char process_json[PATH_MAX + 16];
  snprintf (process_json, sizeof process_json, "%s/process.json", self->dir);
  const char *argv[16];
  size_t n = 0;
  argv[n++] = "exec";
  argv[n++] = "--process";
  argv[n++] = process_json;
  argv[n++] = "--detach";
  argv[n++] = "--pid-file";
  argv[n++] = pid_file;
  if (self->args.terminal)
    {
      argv[n++] = "--console-socket";
      argv[n++] = shim_console_socket_path (self);
    }
  argv[n++] = self->args.id;
  argv[n] = NULL;
  if (shim_runtime_run (self, argv, s_start_stdio (self), err) < 0)
    return -1;
  return self->args.terminal ? shim_console_receive (self, err) : 0;
}

/* Best effort: CRIU needs kernel features this project cannot count on. */
static int
s_restore (shim_t *self, const char *pid_file, zcd_error_t **err)
{
  const char *argv[20];
  size_t n = 0;
  argv[n++] = "restore";
  argv[n++] = "--detach";
  argv[n++] = "--image-path";
  argv[n++] = self->args.checkpoint;
  argv[n++] = "--bundle";
  argv[n++] = self->args.bundle;
  argv[n++] = "--pid-file";
  argv[n++] = pid_file;
  if (self->args.terminal)
    {
      argv[n++] = "--console-socket";
      argv[n++] = shim_console_socket_path (self);
    }
  if (self->args.no_pivot)
    argv[n++] = "--no-pivot";
  argv[n++] = self->args.id;
  argv[n] = NULL;
  if (shim_runtime_run (self, argv, s_start_stdio (self), err) < 0)
    return -1;
  return self->args.terminal ? shim_console_receive (self, err) : 0;
}

static int
s_read_pid (shim_t *self, zcd_error_t **err)
{
  cleanup_free char *text = NULL;
  cleanup_error zcd_error_t *why = NULL;
  if (zcd_read_file ("pid", 64, &text, NULL, &why) < 0)
    /* The runtime said yes but made nothing (a `true` as runtime, an
     * odd argument): its failure, not ours. */
    return zcd_fail (err, ZCD_E_RUNTIME_ERROR, "the runtime exited 0 but wrote no pid file (%s)",
                     why->msg);
  char *end = NULL;
  long pid = strtol (text, &end, 10);
  if (end == text || pid <= 0 || pid > INT32_MAX)
    return zcd_fail (err, ZCD_E_RUNTIME_ERROR, "runtime wrote a bad pid file `%s`", text);
  self->pid = (pid_t) pid;
  return 0;
}

int
shim_runtime_start (shim_t *self, zcd_error_t **err)
{
  char pid_file[PATH_MAX + 8];
  snprintf (pid_file, sizeof pid_file, "%s/pid", self->dir);
  int rc;
  switch (self->args.mode)
    {
    case SHIM_MODE_INIT: rc = s_create_and_start (self, pid_file, err); break;
    case SHIM_MODE_EXEC: rc = s_exec (self, pid_file, err); break;
    default: rc = s_restore (self, pid_file, err); break;
    }
  if (rc < 0 || s_read_pid (self, err) < 0)
    return -1;
  /* A process that already exited is still our zombie (we are its
   * subreaper and have not reaped yet), so its start time is readable. */
  uint64_t starttime = zcd_proc_starttime (self->pid);
  if (starttime == 0)
    return zcd_fail (err, ZCD_E_RUNTIME_ERROR, "container process %d is not there",
                     (int) self->pid);
  return shim_write_number ("starttime", starttime, err);
}

void
shim_runtime_cleanup_failed_start (shim_t *self)
{
  if (self->args.mode == SHIM_MODE_EXEC)
    {
      if (self->pid > 0)
        kill (self->pid, SIGKILL);
      return;
    }
  const char *argv[] = { "delete", "--force", self->args.id, NULL };
  zcd_error_t *err = NULL;
  shim_runtime_run (self, argv, s_no_stdio, &err);
  zcd_error_free (&err);
}
