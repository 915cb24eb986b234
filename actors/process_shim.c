/* A process's shim (see actors/process.h): zcd-shim is spawned, its start
 * record read from the sync pipe, and the `exit` FIFO watched, whose
 * hang-up is the shim's end (DESIGN.md, "The shim").  What happens goes to
 * the process's owner through its callbacks, each the last thing a handler
 * here does (the owner may destroy the process in it). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/process.h"
#include "core/caller.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

struct process_shim
{
  process_t *process;
  zcd_daemon_t *daemon;
  const process_callbacks_t *cb;
  void *owner;
  char *container_id;
  char *runtime;
  char **runtime_args;
  uint32_t run_uid, run_gid; /* rootless: its user; 0: root */
  char *run_groups;
  bool restoring; /* from a checkpoint: the longer start deadline */
  int exit_fd;
  loop_watch_t *exit_watch;
  int sync_fd;
  loop_watch_t *sync_watch;
  char sync_buf[sizeof (struct zcd_sync_record) + ZCD_SYNC_MAX_TEXT];
  size_t sync_len;
  loop_timer_t *start_timer;
  /* A `delete --force` of the init's runtime container that the report
   * waits for: until it ended, a new container of the same id would be
   * deleted with it, so the id must not be free yet. */
  child_t *cleanup;
  void (*after_cleanup) (process_shim_t *self);
};

/* What the sync pipe said so far. */
typedef enum
{
  SYNC_PENDING,
  SYNC_STARTED,
  SYNC_FAILED,
  SYNC_EOF /* closed without a record: the shim died */
} sync_outcome_t;

static void
s_close_sync (process_shim_t *self)
{
  loop_remove (self->daemon->loop, self->sync_watch);
  self->sync_watch = NULL;
  if (self->sync_fd >= 0)
    close (self->sync_fd);
  self->sync_fd = -1;
}

void
process_shim_stop (process_t *p)
{
  process_shim_t *self = p->shim;
  if (self == NULL)
    return;
  loop_t *loop = self->daemon->loop;
  loop_remove (loop, self->exit_watch);
  loop_timer_cancel (loop, self->start_timer);
  if (self->exit_fd >= 0)
    close (self->exit_fd);
  s_close_sync (self);
  if (self->cleanup)
    child_forget (self->daemon->children, self->cleanup);
  free (self->container_id);
  free (self->runtime);
  free (self->run_groups);
  mp_strv_free (self->runtime_args);
  free (self);
  p->shim = NULL;
}

static process_shim_t *
s_shim_new (process_t *p, const process_launch_t *launch)
{
  process_shim_t *self = calloc (1, sizeof *self);
  self->process = p;
  self->daemon = launch->daemon;
  self->cb = launch->cb;
  self->owner = launch->owner;
  self->exit_fd = self->sync_fd = -1;
  self->container_id = strdup (launch->container_id);
  self->runtime = strdup (launch->runtime);
  self->restoring = launch->checkpoint_dir != NULL;
  self->run_uid = p->run_uid = launch->run_uid;
  self->run_gid = p->run_gid = launch->run_gid;
  self->run_groups = launch->run_groups ? strdup (launch->run_groups) : NULL;
  size_t n = mp_strv_len (launch->runtime_args);
  self->runtime_args = calloc (n + 1, sizeof (char *));
  for (size_t i = 0; i < n; i++)
    self->runtime_args[i] = strdup (launch->runtime_args[i]);
  p->shim = self;
  free (p->dir);
  p->dir = zcd_process_dir (launch->daemon->config, launch->container_id, p->name);
  return self;
}

/* ------------------------------------------------------------------ */
/* Reports to the owner                                                */

static void
s_report_failed (process_shim_t *self, zcd_code_t code, const char *message)
{
  process_t *p = self->process;
  const process_callbacks_t *cb = self->cb;
  void *owner = self->owner;
  p->state = PROCESS_FAILED;
  /* Nothing more to hear from this shim: it ends by itself, or was
   * killed. */
  process_shim_stop (p);
  cb->failed (owner, p, code, message);
}

/* The last lines of shim.log, which holds the shim's and the runtime's own
 * words about a failure. */
static char *
s_shim_log_tail (const process_t *p)
{
  cleanup_free char *text = NULL;
  cleanup_free char *path = NULL;
  if (asprintf (&path, "%s/shim.log", p->dir) < 0
      || zcd_read_file_nofollow (path, 1 << 20, &text, NULL, NULL) < 0 || text[0] == '\0')
    return strdup ("the shim died before the process started (no shim.log)");
  size_t len = strlen (text);
  const char *start = len > 1024 ? text + len - 1024 : text;
  char *out = NULL;
  if (asprintf (&out, "the shim died before the process started: %s", start) < 0)
    return NULL;
  for (char *c = out; *c; c++)
    if (*c == '\n')
      *c = ' ';
  return out;
}

static void
s_report_shim_died (process_shim_t *self)
{
  cleanup_free char *why = s_shim_log_tail (self->process);
  s_report_failed (self, ZCD_E_SHIM_EXITED, why ? why : "the shim died");
}

static void
s_report_record (process_shim_t *self, sync_outcome_t outcome)
{
  const struct zcd_sync_record *rec = (const struct zcd_sync_record *)self->sync_buf;
  process_t *p = self->process;
  if (outcome == SYNC_STARTED)
    {
      p->state = PROCESS_RUNNING;
      p->system_pid = (uint32_t)rec->pid;
      p->starttime = zcd_proc_starttime (rec->pid);
      process_pin (p);
      self->cb->started (self->owner, p);
      return;
    }
  if (outcome == SYNC_EOF)
    {
      s_report_shim_died (self);
      return;
    }
  char text[ZCD_SYNC_MAX_TEXT + 1];
  size_t n = rec->text_len < ZCD_SYNC_MAX_TEXT ? rec->text_len : ZCD_SYNC_MAX_TEXT;
  memcpy (text, self->sync_buf + sizeof *rec, n);
  text[n] = '\0';
  zcd_code_t code
      = rec->code > 0 && rec->code < ZCD_CODE_COUNT ? (zcd_code_t)rec->code : ZCD_E_RUNTIME_ERROR;
  s_report_failed (self, code, text);
}

/* ------------------------------------------------------------------ */
/* The sync pipe                                                       */

static bool
s_record_complete (const process_shim_t *self)
{
  const struct zcd_sync_record *rec = (const struct zcd_sync_record *)self->sync_buf;
  if (self->sync_len < sizeof *rec || rec->magic != ZCD_SYNC_MAGIC)
    return false;
  size_t text = rec->text_len < ZCD_SYNC_MAX_TEXT ? rec->text_len : ZCD_SYNC_MAX_TEXT;
  return self->sync_len >= sizeof *rec + text;
}

/* Reads what the shim wrote on the sync pipe; an outcome once the record is
 * whole or the pipe closed without one. */
static sync_outcome_t
s_read_sync (process_shim_t *self)
{
  if (self->sync_fd < 0)
    return SYNC_PENDING;
  for (;;)
    {
      ssize_t n = read (self->sync_fd, self->sync_buf + self->sync_len,
                        sizeof self->sync_buf - self->sync_len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        return SYNC_PENDING;
      if (n > 0)
        {
          self->sync_len += (size_t)n;
          if (s_record_complete (self))
            break;
          if (self->sync_len < sizeof self->sync_buf)
            continue;
        }
      /* EOF (or garbage) before a whole record: the shim is gone. */
      s_close_sync (self);
      loop_timer_cancel (self->daemon->loop, self->start_timer);
      self->start_timer = NULL;
      return SYNC_EOF;
    }
  s_close_sync (self);
  loop_timer_cancel (self->daemon->loop, self->start_timer);
  self->start_timer = NULL;
  const struct zcd_sync_record *rec = (const struct zcd_sync_record *)self->sync_buf;
  return rec->type == ZCD_SYNC_STARTED ? SYNC_STARTED : SYNC_FAILED;
}

static void
s_on_sync (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  process_shim_t *self = arg;
  sync_outcome_t outcome = s_read_sync (self);
  if (outcome != SYNC_PENDING)
    s_report_record (self, outcome);
}

/* ------------------------------------------------------------------ */
/* The shim's end                                                      */

static pid_t
s_read_pid_file (const char *dir, const char *name)
{
  char path[4096];
  snprintf (path, sizeof path, "%s/%s", dir, name);
  cleanup_free char *text = NULL;
  if (zcd_read_file_nofollow (path, 64, &text, NULL, NULL) < 0)
    return 0;
  return (pid_t)strtol (text, NULL, 10);
}

static uint64_t
s_read_starttime (const char *dir)
{
  char path[4096];
  snprintf (path, sizeof path, "%s/starttime", dir);
  cleanup_free char *st = NULL;
  if (zcd_read_file_nofollow (path, 64, &st, NULL, NULL) < 0)
    return 0;
  return strtoull (st, NULL, 10);
}

static void
s_cleaned (const child_result_t *res, void *arg)
{
  process_shim_t *self = arg;
  self->cleanup = NULL;
  self->after_cleanup (self);
}

/* `<runtime> delete --force <id>`, then `then` (NULL: nobody waits).  When
 * the runtime cannot be started, `then` runs at once. */
static void
s_runtime_delete_force (process_shim_t *self, void (*then) (process_shim_t *self))
{
  const char *words[] = { "delete", "--force", self->container_id, NULL };
  char **plain = zcd_runtime_argv (self->runtime, self->runtime_args, words);
  char **argv = zcd_argv_as_user (plain, self->run_uid, self->run_gid, self->run_groups);
  mp_strv_free (plain);
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.deadline_ms = 30000;
  opts.capture = false;
  self->after_cleanup = then;
  self->cleanup = child_spawn (self->daemon->children, argv, &opts, then ? s_cleaned : NULL,
                               self, NULL);
  mp_strv_free (argv);
  if (then == NULL)
    self->cleanup = NULL;
  else if (self->cleanup == NULL)
    then (self);
}

/* The exit status of a process whose shim is gone (DESIGN.md, "Restart").
 * *killed: the shim was killed (no exitStatus), so an init's runtime
 * container is left for zcd to delete. */
static int
s_collect_status (process_shim_t *self, bool *killed)
{
  process_t *p = self->process;
  char path[4096];
  snprintf (path, sizeof path, "%s/exitStatus", p->dir);
  cleanup_free char *text = NULL;
  if (zcd_read_file_nofollow (path, 64, &text, NULL, NULL) == 0)
    {
      char *end;
      long v = strtol (text, &end, 10);
      if (end != text && v >= 0 && v <= 255)
        {
          *killed = false;
          return (int)v;
        }
    }
  *killed = true;
  /* No exitStatus: the shim was killed.  If its process still runs (same
   * pid, same start time) it is killed now and reported as such. */
  pid_t pid = p->system_pid ? (pid_t)p->system_pid : s_read_pid_file (p->dir, "pid");
  uint64_t starttime = p->starttime ? p->starttime : s_read_starttime (p->dir);
  int status = 255;
  if (pid > 0 && starttime != 0 && zcd_proc_starttime (pid) == starttime
      && !zcd_proc_is_zombie (pid))
    {
      zcd_kill_as (self->run_uid, self->run_gid, pid, SIGKILL);
      status = 137;
    }
  return status;
}

static void
s_report_exit (process_shim_t *self)
{
  process_t *p = self->process;
  const process_callbacks_t *cb = self->cb;
  void *owner = self->owner;
  p->state = PROCESS_EXITED;
  process_shim_stop (p);
  cb->exited (owner, p);
}

static void
s_on_exit_fifo (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  process_shim_t *self = arg;
  process_t *p = self->process;
  char drain[256];
  while (read (fd, drain, sizeof drain) > 0)
    ;
  if (!(revents & (EPOLLHUP | EPOLLERR)))
    return;
  /* The shim writes its start record before it can exit: read it first.
   * A start is reported before the exit (started never destroys p). */
  sync_outcome_t outcome = s_read_sync (self);
  if (outcome == SYNC_STARTED)
    s_report_record (self, outcome);
  else if (outcome == SYNC_FAILED)
    {
      s_report_record (self, outcome);
      return;
    }
  if (p->state == PROCESS_STARTING)
    {
      s_report_shim_died (self);
      return;
    }
  bool killed = false;
  p->status = s_collect_status (self, &killed);
  loop_remove (loop, self->exit_watch);
  self->exit_watch = NULL;
  if (p->is_init && killed)
    s_runtime_delete_force (self, s_report_exit);
  else
    s_report_exit (self);
}

/* A restore reads the whole image back (CRIU: ~1 s per GiB here, more on
 * a slow disk): it gets what a dump gets, not what a fresh start gets. */
#define RESTORE_TIMEOUT_MS (10 * 60 * 1000)

static uint64_t
s_start_timeout_ms (const process_shim_t *self)
{
  uint64_t start = self->daemon->config->start_timeout_ms;
  return self->restoring && start < RESTORE_TIMEOUT_MS ? RESTORE_TIMEOUT_MS : start;
}

static void
s_report_timeout (process_shim_t *self)
{
  char message[128];
  snprintf (message, sizeof message, "`%s` did not start within %llu ms", self->process->name,
            (unsigned long long) s_start_timeout_ms (self));
  s_report_failed (self, ZCD_E_TIMEOUT, message);
}

static void
s_on_start_timeout (loop_t *loop, void *arg)
{
  process_shim_t *self = arg;
  process_t *p = self->process;
  self->start_timer = NULL;
  if (p->state != PROCESS_STARTING)
    return;
  /* After its double fork the shim leads its own session and process
   * group, together with the runtime it spawned: take them all, then let
   * the runtime forget the container. */
  pid_t shim = s_read_pid_file (p->dir, "shim.pid");
  pid_t group = shim > 0 ? getpgid (shim) : -1;
  if (group > 1)
    zcd_kill_as (self->run_uid, self->run_gid, -group, SIGKILL);
  if (shim > 0)
    zcd_kill_as (self->run_uid, self->run_gid, shim, SIGKILL);
  /* Failed from here on; the shim's end and its record are no news. */
  p->state = PROCESS_FAILED;
  s_close_sync (self);
  loop_remove (loop, self->exit_watch);
  self->exit_watch = NULL;
  if (p->is_init)
    s_runtime_delete_force (self, s_report_timeout);
  else
    s_report_timeout (self);
}

/* ------------------------------------------------------------------ */
/* Spawn                                                               */

static char **
s_shim_argv (const zcd_config_t *cfg, const process_t *p, const process_launch_t *launch)
{
  const char *mode = launch->checkpoint_dir ? "restore" : p->is_init ? "init" : "exec";
  size_t n = 40 + 2 * mp_strv_len (launch->runtime_args) + 2 * mp_strv_len (launch->restore_args);
  char log_bytes[24], log_files[16];
  char **argv = calloc (n, sizeof *argv);
  size_t i = 0;
#define ARG(x) argv[i++] = strdup (x)
  ARG (cfg->shim_path);
  ARG ("--mode"), ARG (mode);
  ARG ("--id"), ARG (launch->container_id);
  ARG ("--bundle"), ARG (launch->bundle);
  ARG ("--runtime"), ARG (launch->runtime);
  for (char *const *a = launch->runtime_args; a && *a; a++)
    ARG ("--runtime-arg"), ARG (*a);
  if (launch->no_pivot)
    ARG ("--no-pivot");
  if (p->terminal)
    ARG ("--terminal");
  if (p->stdin_path)
    ARG ("--stdin"), ARG (p->stdin_path);
  if (p->stdout_path)
    ARG ("--stdout"), ARG (p->stdout_path);
  if (p->stderr_path)
    ARG ("--stderr"), ARG (p->stderr_path);
  if (p->log.path)
    {
      snprintf (log_bytes, sizeof log_bytes, "%llu", (unsigned long long) p->log.max_bytes);
      snprintf (log_files, sizeof log_files, "%u", (unsigned) p->log.max_files);
      ARG ("--log-path"), ARG (p->log.path);
      ARG ("--log-max-bytes"), ARG (log_bytes);
      ARG ("--log-max-files"), ARG (log_files);
    }
  if (launch->checkpoint_dir)
    ARG ("--checkpoint"), ARG (launch->checkpoint_dir);
  for (char *const *a = launch->restore_args; a && *a; a++)
    ARG ("--restore-arg"), ARG (*a);
  ARG ("--sync-fd"), ARG ("3");
#undef ARG
  argv[i] = NULL;
  return argv;
}

static int
s_make_fifos (const char *dir, zcd_error_t **err)
{
  /* The container made the directory, fresh, for this process alone. */
  const char *fifos[] = { "exit", "control" };
  for (int i = 0; i < 2; i++)
    {
      char path[4096];
      snprintf (path, sizeof path, "%s/%s", dir, fifos[i]);
      if (mkfifo (path, 0600) < 0)
        return zcd_fail_errno (err, errno, "mkfifo `%s`", path);
    }
  return 0;
}

/* Open the exit FIFO's read end and watch it.  Opened before the shim
 * starts (or, on restore, before its liveness is checked), so its hang-up
 * cannot be missed. */
static int
s_watch_exit (process_shim_t *self, zcd_error_t **err)
{
  char path[4096];
  snprintf (path, sizeof path, "%s/exit", self->process->dir);
  self->exit_fd = open (path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (self->exit_fd < 0)
    return zcd_fail_errno (err, errno, "open `%s`", path);
  /* On a restart a rootless owner had the directory meanwhile: only a
   * FIFO is watched, nothing it put in its place. */
  struct stat st;
  if (fstat (self->exit_fd, &st) < 0 || !S_ISFIFO (st.st_mode))
    return zcd_fail (err, ZCD_E_INTERNAL, "`%s` is not a FIFO", path);
  self->exit_watch = loop_add_fd (self->daemon->loop, self->exit_fd, EPOLLIN, s_on_exit_fifo, self);
  if (self->exit_watch == NULL)
    return zcd_fail_errno (err, errno, "watch `%s`", path);
  return 0;
}

static int
s_spawn_shim (process_shim_t *self, const process_launch_t *launch, zcd_error_t **err)
{
  int sync[2];
  if (pipe2 (sync, O_CLOEXEC) < 0)
    return zcd_fail_errno (err, errno, "sync pipe");
  fcntl (sync[0], F_SETFL, O_NONBLOCK);
  self->sync_fd = sync[0];
  char **plain = s_shim_argv (self->daemon->config, self->process, launch);
  char **argv = zcd_argv_as_user (plain, self->run_uid, self->run_gid, self->run_groups);
  mp_strv_free (plain);
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.cwd = self->process->dir;
  /* The shim outlives any request; it must not hold pipes the daemon
   * waits on for EOF. */
  opts.capture = false;
  opts.pass_fd = sync[1];
  /* Spawned detached (its own session), the shim needs no fork of its own
   * before it starts the runtime: a process made under load waits a whole
   * scheduling period for its first turn, so each one on the way to the
   * runtime's create costs milliseconds (shim/main.c, s_detach). */
  opts.new_session = true;
  child_t *child = child_spawn (self->daemon->children, argv, &opts, NULL, NULL, err);
  mp_strv_free (argv);
  close (sync[1]);
  if (child == NULL)
    return -1;
  self->sync_watch = loop_add_fd (self->daemon->loop, self->sync_fd, EPOLLIN, s_on_sync, self);
  self->start_timer
      = loop_timer_add (self->daemon->loop, s_start_timeout_ms (self), s_on_start_timeout, self);
  return 0;
}

int
process_spawn (process_t *p, const process_launch_t *launch, zcd_error_t **err)
{
  process_shim_t *self = s_shim_new (p, launch);
  /* A rootless shim's directory is handed over once the exit FIFO is
   * open: what the user puts there later cannot change what is watched. */
  if ((!launch->fifos_made && s_make_fifos (p->dir, err) < 0) || s_watch_exit (self, err) < 0
      || (self->run_uid && zcd_hand_process_dir (p->dir, self->run_uid, self->run_gid, err) < 0)
      || s_spawn_shim (self, launch, err) < 0)
    {
      process_shim_stop (p);
      return -1;
    }
  p->state = PROCESS_STARTING;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Restart                                                             */

/* A shim is ours if it still runs in this process's state directory: its
 * pid alone could have been recycled while the daemon was down. */
static bool
s_shim_alive (const char *dir)
{
  pid_t shim = s_read_pid_file (dir, "shim.pid");
  if (shim <= 0)
    return false;
  char link[64], cwd[4096];
  snprintf (link, sizeof link, "/proc/%d/cwd", (int)shim);
  ssize_t n = readlink (link, cwd, sizeof cwd - 1);
  if (n <= 0)
    return false;
  cwd[n] = '\0';
  char real[4096];
  if (realpath (dir, real) == NULL)
    return false;
  return strcmp (cwd, real) == 0;
}

void
process_restore (process_t *p, const process_launch_t *launch, bool *alive)
{
  process_shim_t *self = s_shim_new (p, launch);
  pid_t pid = s_read_pid_file (p->dir, "pid");
  p->system_pid = pid > 0 ? (uint32_t)pid : 0;
  p->starttime = pid > 0 ? s_read_starttime (p->dir) : 0;
  process_pin (p);
  *alive = false;
  /* The FIFO is opened before the liveness check: a shim alive at the
   * check holds its write end, so its hang-up cannot be missed.  Without
   * the FIFO there is no shim to watch: the process is accounted for below
   * as if its shim had gone. */
  cleanup_error zcd_error_t *fifo_err = NULL;
  if (s_watch_exit (self, &fifo_err) == 0 && s_shim_alive (p->dir))
    {
      /* A shim still starting when the daemon died: its pid file may come
       * later; its exit is watched all the same. */
      p->state = PROCESS_RUNNING;
      *alive = true;
      return;
    }
  bool killed = true;
  if (pid > 0)
    {
      p->state = PROCESS_RUNNING;
      p->status = s_collect_status (self, &killed);
    }
  else
    p->state = PROCESS_FAILED;
  /* Nobody waits for this delete: the restart happens before any request
   * could reuse the id. */
  if (p->is_init && killed)
    s_runtime_delete_force (self, NULL);
  process_shim_stop (p);
}
