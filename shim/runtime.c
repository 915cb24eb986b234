/* Runtime invocations: spawn `<runtime> ...`, wait, and on failure turn the
 * runtime's own words into the error.  Every invocation logs through
 * `--log <file> --log-format json` (a global option of both runc and crun):
 * for create and exec the runtime's stderr is the container's stderr, so
 * the log is the one place its messages reliably land.  The file is a
 * memfd of the shim, named to the runtime as /proc/<shim>/fd/<n>: nobody
 * but the shim reads the log, and with a file created in the state
 * directory on ext4 (under the daemon's own journal traffic) crun's create
 * took 1.5-3.5 ms longer (median of 150 lifecycles, measured here).
 *
 * A call is spawned with posix_spawn (a vfork-style clone: the shim is
 * suspended until the runtime is executing, no page tables are copied) by
 * the runtime's path found once, and its end is waited for separately, so
 * that work which needs no container is done while the runtime runs. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
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
#include "core/logtail.h"
#include "shim/shim.h"

#define ARGV_MAX (SHIM_MAX_RUNTIME_ARGS + SHIM_MAX_RESTORE_ARGS + 32)
#define ERROR_TEXT_MAX 4096

extern char **environ;

/* The runtimes' log: a memfd, else (none to be had) a file of the state
 * directory. */
static void
s_make_log (shim_t *self)
{
  int fd = memfd_create ("runtime-log", MFD_CLOEXEC);
  if (fd >= 0)
    snprintf (self->runtime_log, sizeof self->runtime_log, "/proc/%d/fd/%d", (int) getpid (),
              fd);
  else
    snprintf (self->runtime_log, sizeof self->runtime_log, "%s/runtime.log", self->dir);
}

/* execvp's search, done once: each call would otherwise try every PATH
 * entry before the runtime's (an execve failing per entry), three times
 * per container.  Not found: runtime_path stays "" and every call searches
 * PATH itself, failing the way execvp would. */
void
shim_runtime_prepare (shim_t *self)
{
  s_make_log (self);
  const char *name = self->args.runtime;
  self->runtime_path[0] = '\0';
  if (strchr (name, '/'))
    {
      snprintf (self->runtime_path, sizeof self->runtime_path, "%s", name);
      return;
    }
  const char *path = getenv ("PATH");
  if (path == NULL)
    path = "/bin:/usr/bin"; /* glibc's execvp default */
  for (const char *dir = path; dir; dir = strchr (dir, ':') ? strchr (dir, ':') + 1 : NULL)
    {
      size_t len = strcspn (dir, ":");
      char candidate[PATH_MAX];
      /* An empty entry is the current directory, as for execvp. */
      int n = snprintf (candidate, sizeof candidate, "%.*s%s%s", (int) len, dir,
                        len ? "/" : "", name);
      struct stat st;
      if (n > 0 && (size_t) n < sizeof candidate && stat (candidate, &st) == 0
          && S_ISREG (st.st_mode) && access (candidate, X_OK) == 0)
        {
          memcpy (self->runtime_path, candidate, (size_t) n + 1);
          return;
        }
    }
}

static size_t
s_build_argv (shim_t *self, const char *const *sub_argv, const char **argv)
{
  size_t n = 0;
  argv[n++] = self->args.runtime;
  for (size_t i = 0; i < self->args.runtime_args_len; i++)
    argv[n++] = self->args.runtime_args[i];
  argv[n++] = "--log";
  argv[n++] = self->runtime_log;
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
 * capture, or the container's stderr pipe (a runtime that fails before it
 * sets up logging, like crun without CRIU saying "unknown command
 * restore", writes only there). */
typedef struct
{
  int fd;
  bool is_pipe;               /* the container's stderr pipe: read, then pass on */
  shim_relay_t *relay;        /* whose destination gets what was read */
} s_stderr_mark_t;

static s_stderr_mark_t
s_stderr_mark (shim_t *self, int capture, int container_stderr)
{
  if (capture >= 0)
    return (s_stderr_mark_t) { capture, false, NULL };
  if (container_stderr >= 0 && container_stderr == self->container_stdio[2]
      && self->stderr_relay.src >= 0)
    return (s_stderr_mark_t) { self->stderr_relay.src, true, &self->stderr_relay };
  return (s_stderr_mark_t) { -1, false, NULL };
}

/* Read what the runtime left in the container's stderr pipe (the relay is
 * not running yet), and pass it on to the client's stderr as the relay
 * would have. */
static ssize_t
s_stderr_mark_read (shim_t *self, s_stderr_mark_t mark, char *out, size_t cap)
{
  if (!mark.is_pipe)
    return pread (mark.fd, out, cap, 0);
  ssize_t n = read (mark.fd, out, cap);
  /* A failed write loses the text for the client's file only: it is
   * still in the error reported. */
  if (n > 0 && mark.relay->to_log)
    shim_outlog_put (out, (size_t) n);
  else if (n > 0 && mark.relay->dst >= 0 && write (mark.relay->dst, out, (size_t) n) < 0)
    shim_log (self, "the runtime's stderr text did not reach the client's stderr: %s",
              strerror (errno));
  return n;
}

/* The messages the runtime wrote to its log since `from`, else the text it
 * wrote to stderr, else a note that it said nothing. */
static void
s_collect_error_text (shim_t *self, off_t from, s_stderr_mark_t mark, char *out,
                      size_t cap)
{
  out[0] = '\0';
  cleanup_free char *log = NULL;
  size_t len = 0;
  if (zcd_read_file (self->runtime_log, 1 << 20, &log, &len, NULL) == 0 && (off_t) len > from)
    shim_runtime_log_errors (log + from, len - (size_t) from, out, cap);
  /* Read (and passed on) even when the log said it all: a pipe's bytes
   * reach the client's file only this way once the start failed. */
  char stderr_text[ERROR_TEXT_MAX];
  ssize_t n = mark.fd >= 0 ? s_stderr_mark_read (self, mark, stderr_text, sizeof stderr_text - 1)
                           : 0;
  while (n > 0 && (stderr_text[n - 1] == '\n' || stderr_text[n - 1] == ' '))
    n--;
  if (out[0] == '\0' && n > 0)
    snprintf (out, cap, "%.*s", (int) n, stderr_text);
  if (out[0] == '\0')
    snprintf (out, cap, "no error output");
}

/* posix_spawn's child resets what the runtime must not inherit: SIG_IGN
 * survives execve, and the container must not inherit the shim's
 * indifference to SIGINT/SIGHUP/SIGPIPE/SIGTERM, nor its blocked mask.
 * Returns 0 or posix_spawn's error number. */
static int
s_spawn (shim_t *self, const char **argv, const int fds[3], pid_t *pid)
{
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  if (posix_spawn_file_actions_init (&actions) != 0)
    return ENOMEM;
  if (posix_spawnattr_init (&attr) != 0)
    {
      posix_spawn_file_actions_destroy (&actions);
      return ENOMEM;
    }
  int rc = 0;
  for (int i = 0; i < 3 && rc == 0; i++)
    rc = posix_spawn_file_actions_adddup2 (&actions, fds[i], i);
  sigset_t none, reset;
  sigemptyset (&none);
  sigemptyset (&reset);
  const int sigs[] = { SIGINT, SIGHUP, SIGPIPE, SIGTERM, SIGCHLD };
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    sigaddset (&reset, sigs[i]);
  if (rc == 0)
    rc = posix_spawnattr_setsigmask (&attr, &none);
  if (rc == 0)
    rc = posix_spawnattr_setsigdefault (&attr, &reset);
  if (rc == 0)
    rc = posix_spawnattr_setflags (&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  char *const *args = (char *const *) argv;
  if (rc == 0)
    rc = self->runtime_path[0]
             ? posix_spawn (pid, self->runtime_path, &actions, &attr, args, environ)
             : posix_spawnp (pid, argv[0], &actions, &attr, args, environ);
  posix_spawnattr_destroy (&attr);
  posix_spawn_file_actions_destroy (&actions);
  return rc;
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

/* One runtime invocation, from its spawn to its end. */
typedef struct
{
  const char *argv[ARGV_MAX];
  const char *what; /* the subcommand, for messages */
  off_t log_from;
  int devnull, capture;
  s_stderr_mark_t stderr_mark;
  pid_t pid;
} s_call_t;

static void
s_call_release (s_call_t *call)
{
  call->stderr_mark.fd = -1;
  if (call->capture >= 0)
    close (call->capture);
  if (call->devnull >= 0)
    close (call->devnull);
  call->capture = call->devnull = -1;
}

/* Spawn the call; on failure nothing is left to release. */
static int
s_call_begin (shim_t *self, s_call_t *call, const char *const *sub_argv, const int stdio[3],
              zcd_error_t **err)
{
  call->what = sub_argv[0];
  call->pid = -1;
  call->stderr_mark = (s_stderr_mark_t) { -1, false, NULL };
  s_build_argv (self, sub_argv, call->argv);
  call->devnull = open ("/dev/null", O_RDWR | O_CLOEXEC);
  call->capture = stdio[2] < 0 ? memfd_create ("runtime-stderr", MFD_CLOEXEC) : -1;
  int devnull = call->devnull, capture = call->capture;
  int fds[3] = { stdio[0] >= 0 ? stdio[0] : devnull, stdio[1] >= 0 ? stdio[1] : devnull,
                 stdio[2] >= 0 ? stdio[2] : capture >= 0 ? capture : devnull };
  if (fds[0] < 0 || fds[1] < 0 || fds[2] < 0)
    {
      int saved = errno;
      s_call_release (call);
      return zcd_fail_errno (err, saved, "open /dev/null");
    }
  call->log_from = s_file_size (self->runtime_log);
  call->stderr_mark = s_stderr_mark (self, capture, stdio[2]);
  int rc = s_spawn (self, call->argv, fds, &call->pid);
  if (rc == 0)
    return 0;
  s_call_release (call);
  call->pid = -1;
  if (rc == EAGAIN || rc == ENOMEM)
    return zcd_fail_errno (err, rc, "spawn %s %s", call->argv[0], call->what);
  /* The runtime's own failure to exist, as a runtime that cannot run. */
  const char *path = self->runtime_path[0] ? self->runtime_path : call->argv[0];
  shim_log (self, "%s %s: cannot execute `%s`: %s", call->argv[0], call->what, path,
            strerror (rc));
  return zcd_fail (err, ZCD_E_RUNTIME_ERROR, "%s %s: cannot execute `%s`: %s",
                   self->args.runtime, call->what, path, strerror (rc));
}

/* Wait for the call and release it; a failure carries the runtime's words. */
static int
s_call_end (shim_t *self, s_call_t *call, zcd_error_t **err)
{
  int status = 0;
  if (s_wait (call->pid, &status) < 0)
    {
      int saved = errno;
      s_call_release (call);
      return zcd_fail_errno (err, saved, "wait for %s %s", call->argv[0], call->what);
    }
  if (WIFEXITED (status) && WEXITSTATUS (status) == 0)
    {
      s_call_release (call);
      return 0;
    }
  char how[64], text[ERROR_TEXT_MAX];
  s_describe_status (status, how, sizeof how);
  s_collect_error_text (self, call->log_from, call->stderr_mark, text, sizeof text);
  s_call_release (call);
  shim_log (self, "%s %s: %s: %s", call->argv[0], call->what, how, text);
  return zcd_fail (err, ZCD_E_RUNTIME_ERROR, "%s %s: %s: %s", self->args.runtime, call->what,
                   how, text);
}

int
shim_runtime_run (shim_t *self, const char *const *sub_argv, const int stdio[3],
                  zcd_error_t **err)
{
  s_call_t call;
  if (s_call_begin (self, &call, sub_argv, stdio, err) < 0)
    return -1;
  return s_call_end (self, &call, err);
}

/* The end of a call during which other work was done: the call is always
 * waited for; its failure is the one reported, else the work's (*side,
 * handed over to *err). */
static int
s_call_end_after (shim_t *self, s_call_t *call, zcd_error_t **side, zcd_error_t **err)
{
  if (s_call_end (self, call, err) < 0)
    {
      zcd_error_free (side);
      return -1;
    }
  if (*side == NULL)
    return 0;
  if (err)
    *err = *side;
  else
    zcd_error_free (side);
  *side = NULL;
  return -1;
}

/* A call with `meanwhile` done while it runs. */
static int
s_run_meanwhile (shim_t *self, const char *const *sub_argv, const int stdio[3],
                 shim_work_fn meanwhile, zcd_error_t **err)
{
  s_call_t call;
  if (s_call_begin (self, &call, sub_argv, stdio, err) < 0)
    return -1;
  zcd_error_t *work_err = NULL;
  if (meanwhile && meanwhile (self, &work_err) < 0 && work_err == NULL)
    zcd_fail (&work_err, ZCD_E_INTERNAL, "preparing the shim failed");
  return s_call_end_after (self, &call, &work_err, err);
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

static int s_find_process (shim_t *self, uint64_t *starttime, zcd_error_t **err);

/* create, then start.  The container process exists once create is done
 * (and, its parent gone, is our child: even if it exits at once it stays
 * a zombie until the reap loop), so its pid and start time are read and
 * recorded while start runs. */
static int
s_create_and_start (shim_t *self, const char *pid_file, shim_work_fn meanwhile,
                    zcd_error_t **err)
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
  if (s_run_meanwhile (self, argv, s_start_stdio (self), meanwhile, err) < 0)
    return -1;
  if (self->args.terminal && shim_console_receive (self, err) < 0)
    return -1;
  const char *start[] = { "start", self->args.id, NULL };
  s_call_t call;
  if (s_call_begin (self, &call, start, s_no_stdio, err) < 0)
    return -1;
  uint64_t starttime = 0;
  zcd_error_t *record_err = NULL;
  if (s_find_process (self, &starttime, &record_err) == 0)
    shim_write_number ("starttime", starttime, &record_err);
  return s_call_end_after (self, &call, &record_err, err);
}

static int
s_exec (shim_t *self, const char *pid_file, shim_work_fn meanwhile, zcd_error_t **err)
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
  if (s_run_meanwhile (self, argv, s_start_stdio (self), meanwhile, err) < 0)
    return -1;
  return self->args.terminal ? shim_console_receive (self, err) : 0;
}

/* CRIU writes restore.log into the image directory.  One left by an
 * earlier restore would be quoted as this one's when the runtime fails
 * before CRIU runs: it is removed first.  The directory is opened once,
 * without following a symlink, and the log is named relative to it for
 * both the unlink and the read (zcd_log_tail opens its path O_NOFOLLOW).
 * Returns the directory's fd, or -1 (then no log is quoted). */
static int
s_clear_criu_log (shim_t *self)
{
  int dirfd = open (self->args.checkpoint, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dirfd < 0)
    return -1;
  if (unlinkat (dirfd, "restore.log", 0) < 0 && errno != ENOENT)
    shim_log (self, "remove %s/restore.log: %s", self->args.checkpoint, strerror (errno));
  return dirfd;
}

/* A failed restore's answer names CRIU's log and quotes its end: the
 * runtime's own message is rarely more than "criu failed". */
static void
s_add_criu_log (shim_t *self, int dirfd, zcd_error_t **err)
{
  if (dirfd < 0 || err == NULL || *err == NULL || (*err)->code != ZCD_E_RUNTIME_ERROR)
    return;
  char path[PATH_MAX + 16], via_fd[64], tail[1536];
  snprintf (path, sizeof path, "%s/restore.log", self->args.checkpoint);
  snprintf (via_fd, sizeof via_fd, "/proc/self/fd/%d/restore.log", dirfd);
  if (zcd_log_tail (via_fd, 8, tail, sizeof tail) == 0)
    return;
  zcd_error_t *old = *err;
  *err = NULL;
  zcd_fail (err, old->code, "%s; CRIU log %s ends:\n%s", old->msg, path, tail);
  zcd_error_free (&old);
}

static int
s_restore (shim_t *self, const char *pid_file, shim_work_fn meanwhile, zcd_error_t **err)
{
  const char *argv[20 + SHIM_MAX_RESTORE_ARGS];
  size_t n = 0;
  argv[n++] = "restore";
  argv[n++] = "--detach";
  for (size_t i = 0; i < self->args.restore_args_len; i++)
    argv[n++] = self->args.restore_args[i];
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
  cleanup_close int dirfd = s_clear_criu_log (self);
  if (s_run_meanwhile (self, argv, s_start_stdio (self), meanwhile, err) < 0)
    {
      s_add_criu_log (self, dirfd, err);
      return -1;
    }
  return self->args.terminal ? shim_console_receive (self, err) : 0;
}

/* Whether the freezer holds process pid: its /proc/<pid>/cgroup names
 * the cgroup (v1 "N:freezer:/path", v2 "0::/path"), whose freezer.state or
 * cgroup.freeze says. */
static bool
s_frozen (pid_t pid)
{
  char path[PATH_MAX + 64];
  snprintf (path, sizeof path, "/proc/%d/cgroup", (int) pid);
  cleanup_free char *text = NULL;
  if (zcd_read_file (path, 1 << 16, &text, NULL, NULL) < 0)
    return false;
  char *v1 = strstr (text, ":freezer:");
  char *v2 = strncmp (text, "0::", 3) == 0 ? text : strstr (text, "\n0::");
  char *rel = v1 ? v1 + strlen (":freezer:") : v2 ? strstr (v2, "::") + 2 : NULL;
  if (rel == NULL)
    return false;
  rel[strcspn (rel, "\n")] = '\0';
  snprintf (path, sizeof path, v1 ? "/sys/fs/cgroup/freezer%s/freezer.state"
                                  : "/sys/fs/cgroup%s/cgroup.freeze", rel);
  cleanup_free char *state = NULL;
  if (zcd_read_file (path, 64, &state, NULL, NULL) < 0)
    return false;
  return v1 ? strncmp (state, "FROZEN", 6) == 0 : state[0] == '1';
}

/* A checkpoint of a paused container is restored frozen by crun (runc
 * thaws it): zcd's restore gives a running container either way. */
static int
s_thaw_restored (shim_t *self, zcd_error_t **err)
{
  if (!s_frozen (self->pid))
    return 0;
  const char *argv[] = { "resume", self->args.id, NULL };
  return shim_runtime_run (self, argv, s_no_stdio, err);
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

/* The container process's pid, and its start time (the guard against a
 * recycled pid).  A process that already exited is still our zombie (we
 * are its subreaper and have not reaped yet), so its start time is
 * readable. */
static int
s_find_process (shim_t *self, uint64_t *starttime, zcd_error_t **err)
{
  if (s_read_pid (self, err) < 0)
    return -1;
  *starttime = zcd_proc_starttime (self->pid);
  if (*starttime == 0)
    return zcd_fail (err, ZCD_E_RUNTIME_ERROR, "container process %d is not there",
                     (int) self->pid);
  return 0;
}

int
shim_runtime_start (shim_t *self, shim_work_fn meanwhile, zcd_error_t **err)
{
  char pid_file[PATH_MAX + 8];
  snprintf (pid_file, sizeof pid_file, "%s/pid", self->dir);
  if (self->args.mode == SHIM_MODE_INIT)
    /* Records the process itself, while start runs. */
    return s_create_and_start (self, pid_file, meanwhile, err);
  int rc = self->args.mode == SHIM_MODE_EXEC ? s_exec (self, pid_file, meanwhile, err)
                                             : s_restore (self, pid_file, meanwhile, err);
  if (rc < 0)
    {
      /* The runtime may have made the process all the same (what failed
       * was the work done meanwhile, or the console): the cleanup of an
       * exec kills it by this pid. */
      s_read_pid (self, NULL);
      return -1;
    }
  uint64_t starttime = 0;
  if (s_find_process (self, &starttime, err) < 0)
    return -1;
  if (self->args.mode == SHIM_MODE_RESTORE && s_thaw_restored (self, err) < 0)
    return -1;
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
