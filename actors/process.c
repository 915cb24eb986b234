/* The process actor: one per container process (init or exec), owning its
 * shim.  It spawns zcd-shim, reads the shim's start record from the sync
 * pipe, and watches the `exit` FIFO, whose hang-up is the shim's end
 * (DESIGN.md, "The shim").  It tells its container actor what happened:
 * process-started, process-failed, process-exit. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/actors.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"
#include "core/shimproto.h"

typedef enum
{
  PROC_STARTING,
  PROC_RUNNING,
  PROC_FAILED, /* reported; waiting for the shim to go */
  PROC_DONE
} proc_phase_t;

typedef struct process
{
  zcd_daemon_t *daemon;
  actor_t *actor;
  char *container_id;
  char *pid_name;
  char *container_actor;
  char *dir;
  bool is_init;
  char *runtime;
  char **runtime_args;
  proc_phase_t phase;
  int exit_fd;
  loop_watch_t *exit_watch;
  int sync_fd;
  loop_watch_t *sync_watch;
  char sync_buf[sizeof (struct zcd_sync_record) + ZCD_SYNC_MAX_TEXT];
  size_t sync_len;
  loop_timer_t *start_timer;
  pid_t system_pid;
  uint64_t starttime;
} process_t;

static void
s_process_free (process_t *self)
{
  loop_t *loop = self->daemon->loop;
  loop_remove (loop, self->exit_watch);
  loop_remove (loop, self->sync_watch);
  loop_timer_cancel (loop, self->start_timer);
  if (self->exit_fd >= 0)
    close (self->exit_fd);
  if (self->sync_fd >= 0)
    close (self->sync_fd);
  free (self->container_id);
  free (self->pid_name);
  free (self->container_actor);
  free (self->dir);
  free (self->runtime);
  mp_strv_free (self->runtime_args);
  free (self);
}

static void
s_process_destroy_state (actor_t *actor)
{
  process_t *self = actor_state (actor);
  if (self)
    s_process_free (self);
}

static const actor_class_t s_class = {
  .kind = "process",
  .routes = (const actor_route_t[]){ { NULL, NULL } },
  .destroy_state = s_process_destroy_state,
};

static void
s_send_started (process_t *self)
{
  actor_msg_builder_t mb;
  actor_msg_begin (&mb, "process-started", 3);
  mp_pack_kv_str (&mb.pk, "pid", self->pid_name);
  mp_pack_kv_uint (&mb.pk, "system_pid", (uint64_t) self->system_pid);
  mp_pack_kv_uint (&mb.pk, "starttime", self->starttime);
  actor_msg_send (self->daemon->actors, actor_name (self->actor), self->container_actor, &mb, NULL);
}

static void
s_send_failed (process_t *self, zcd_code_t code, const char *message)
{
  actor_msg_builder_t mb;
  actor_msg_begin (&mb, "process-failed", 3);
  mp_pack_kv_str (&mb.pk, "pid", self->pid_name);
  mp_pack_kv_str (&mb.pk, "code", zcd_code_name (code));
  mp_pack_kv_str (&mb.pk, "message", message);
  actor_msg_send (self->daemon->actors, actor_name (self->actor), self->container_actor, &mb, NULL);
}

static void
s_send_exit (process_t *self, int status)
{
  actor_msg_builder_t mb;
  actor_msg_begin (&mb, "process-exit", 2);
  mp_pack_kv_str (&mb.pk, "pid", self->pid_name);
  mp_pack_kv_uint (&mb.pk, "status", (uint64_t) status);
  actor_msg_send (self->daemon->actors, actor_name (self->actor), self->container_actor, &mb, NULL);
}

/* The last lines of shim.log, which holds the shim's and the runtime's own
 * words about a failure. */
static char *
s_shim_log_tail (process_t *self)
{
  cleanup_free char *text = NULL;
  cleanup_free char *path = NULL;
  if (asprintf (&path, "%s/shim.log", self->dir) < 0
      || zcd_read_file (path, 1 << 20, &text, NULL, NULL) < 0 || text[0] == '\0')
    return strdup ("the shim died before the process started (no shim.log)");
  size_t len = strlen (text);
  const char *start = len > 1024 ? text + len - 1024 : text;
  char *out = NULL;
  if (asprintf (&out, "the shim died before the process started: %s", start) < 0)
    return NULL;
  out[strcspn (out, "\0")] = '\0';
  for (char *p = out; *p; p++)
    if (*p == '\n')
      *p = ' ';
  return out;
}

static void
s_close_sync (process_t *self)
{
  loop_remove (self->daemon->loop, self->sync_watch);
  self->sync_watch = NULL;
  if (self->sync_fd >= 0)
    close (self->sync_fd);
  self->sync_fd = -1;
}

static void
s_handle_sync_record (process_t *self)
{
  const struct zcd_sync_record *rec = (const struct zcd_sync_record *) self->sync_buf;
  loop_timer_cancel (self->daemon->loop, self->start_timer);
  self->start_timer = NULL;
  if (rec->type == ZCD_SYNC_STARTED)
    {
      self->phase = PROC_RUNNING;
      self->system_pid = rec->pid;
      self->starttime = zcd_proc_starttime (rec->pid);
      s_send_started (self);
      return;
    }
  self->phase = PROC_FAILED;
  char text[ZCD_SYNC_MAX_TEXT + 1];
  size_t n = rec->text_len < ZCD_SYNC_MAX_TEXT ? rec->text_len : ZCD_SYNC_MAX_TEXT;
  memcpy (text, self->sync_buf + sizeof *rec, n);
  text[n] = '\0';
  zcd_code_t code = rec->code > 0 && rec->code < ZCD_CODE_COUNT ? (zcd_code_t) rec->code
                                                                : ZCD_E_RUNTIME_ERROR;
  s_send_failed (self, code, text);
}

/* Reads what the shim wrote on the sync pipe; acts once the record is whole
 * or the pipe is closed without one. */
static void
s_read_sync (process_t *self)
{
  if (self->sync_fd < 0)
    return;
  for (;;)
    {
      ssize_t n = read (self->sync_fd, self->sync_buf + self->sync_len,
                        sizeof self->sync_buf - self->sync_len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        return;
      if (n > 0)
        {
          self->sync_len += (size_t) n;
          const struct zcd_sync_record *rec = (const struct zcd_sync_record *) self->sync_buf;
          if (self->sync_len >= sizeof *rec && rec->magic == ZCD_SYNC_MAGIC
              && self->sync_len >= sizeof *rec + (rec->text_len < ZCD_SYNC_MAX_TEXT ? rec->text_len : ZCD_SYNC_MAX_TEXT))
            {
              s_close_sync (self);
              s_handle_sync_record (self);
              return;
            }
          if (self->sync_len < sizeof self->sync_buf)
            continue;
        }
      /* EOF (or garbage) before a whole record: the shim is gone. */
      s_close_sync (self);
      if (self->phase == PROC_STARTING)
        {
          loop_timer_cancel (self->daemon->loop, self->start_timer);
          self->start_timer = NULL;
          self->phase = PROC_FAILED;
          cleanup_free char *why = s_shim_log_tail (self);
          s_send_failed (self, ZCD_E_SHIM_EXITED, why ? why : "the shim died");
        }
      return;
    }
}

static void
s_on_sync (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  s_read_sync (arg);
}

static pid_t
s_read_pid_file (const char *dir, const char *name)
{
  char path[4096];
  snprintf (path, sizeof path, "%s/%s", dir, name);
  cleanup_free char *text = NULL;
  if (zcd_read_file (path, 64, &text, NULL, NULL) < 0)
    return 0;
  return (pid_t) strtol (text, NULL, 10);
}

static void
s_runtime_delete_force (process_t *self)
{
  const char *words[] = { "delete", "--force", self->container_id, NULL };
  char **argv = zcd_runtime_argv (self->runtime, self->runtime_args, words);
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.deadline_ms = 30000;
  opts.capture = false;
  child_spawn (self->daemon->children, argv, &opts, NULL, NULL, NULL);
  mp_strv_free (argv);
}

static uint64_t
s_read_starttime (const char *dir)
{
  char path[4096];
  snprintf (path, sizeof path, "%s/starttime", dir);
  cleanup_free char *st = NULL;
  if (zcd_read_file (path, 64, &st, NULL, NULL) < 0)
    return 0;
  return strtoull (st, NULL, 10);
}

/* The exit status of a process whose shim is gone (DESIGN.md, "Restart"). */
static int
s_collect_status (process_t *self)
{
  char path[4096];
  snprintf (path, sizeof path, "%s/exitStatus", self->dir);
  cleanup_free char *text = NULL;
  if (zcd_read_file (path, 64, &text, NULL, NULL) == 0)
    {
      char *end;
      long v = strtol (text, &end, 10);
      if (end != text && v >= 0 && v <= 255)
        return (int) v;
    }
  /* No exitStatus: the shim was killed.  If its process still runs (same
   * pid, same start time) it is killed now and reported as such. */
  pid_t pid = self->system_pid ? self->system_pid : s_read_pid_file (self->dir, "pid");
  uint64_t starttime = self->starttime ? self->starttime : s_read_starttime (self->dir);
  int status = 255;
  if (pid > 0 && starttime != 0 && zcd_proc_starttime (pid) == starttime && !zcd_proc_is_zombie (pid))
    {
      kill (pid, SIGKILL);
      status = 137;
    }
  if (self->is_init)
    s_runtime_delete_force (self);
  return status;
}

static void
s_on_exit_fifo (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  process_t *self = arg;
  char drain[256];
  while (read (fd, drain, sizeof drain) > 0)
    ;
  if (!(revents & (EPOLLHUP | EPOLLERR)))
    return;
  /* The shim writes its start record before it can exit: read it first. */
  s_read_sync (self);
  loop_remove (loop, self->exit_watch);
  self->exit_watch = NULL;
  if (self->phase == PROC_RUNNING)
    s_send_exit (self, s_collect_status (self));
  else if (self->phase == PROC_STARTING)
    {
      cleanup_free char *why = s_shim_log_tail (self);
      s_send_failed (self, ZCD_E_SHIM_EXITED, why ? why : "the shim died");
    }
  self->phase = PROC_DONE;
  actor_destroy (self->actor);
}

static void
s_on_start_timeout (loop_t *loop, void *arg)
{
  process_t *self = arg;
  self->start_timer = NULL;
  if (self->phase != PROC_STARTING)
    return;
  self->phase = PROC_FAILED;
  /* The shim leads its own session and process group, with the runtime it
   * spawned: take them all, then let the runtime forget the container. */
  pid_t shim = s_read_pid_file (self->dir, "shim.pid");
  /* After its double fork the shim sits in the process group its first
   * child made with setsid, together with the runtime it spawned. */
  pid_t group = shim > 0 ? getpgid (shim) : -1;
  if (group > 1)
    kill (-group, SIGKILL);
  if (shim > 0)
    kill (shim, SIGKILL);
  if (self->is_init)
    s_runtime_delete_force (self);
  s_close_sync (self);
  char message[128];
  snprintf (message, sizeof message, "`%s` did not start within %llu ms", self->pid_name,
            (unsigned long long) self->daemon->config->start_timeout_ms);
  s_send_failed (self, ZCD_E_TIMEOUT, message);
}

static char **
s_shim_argv (const zcd_config_t *cfg, const process_info_t *info)
{
  const char *mode = info->checkpoint_dir ? "restore" : info->is_init ? "init" : "exec";
  size_t n = 32 + 2 * mp_strv_len (info->runtime_args);
  char **argv = calloc (n, sizeof *argv);
  size_t i = 0;
#define ARG(x) argv[i++] = strdup (x)
  ARG (cfg->shim_path);
  ARG ("--mode"), ARG (mode);
  ARG ("--id"), ARG (info->container_id);
  ARG ("--bundle"), ARG (info->bundle);
  ARG ("--runtime"), ARG (info->runtime);
  for (char **a = info->runtime_args; a && *a; a++)
    ARG ("--runtime-arg"), ARG (*a);
  if (info->no_pivot)
    ARG ("--no-pivot");
  if (info->terminal)
    ARG ("--terminal");
  if (info->stdin_path)
    ARG ("--stdin"), ARG (info->stdin_path);
  if (info->stdout_path)
    ARG ("--stdout"), ARG (info->stdout_path);
  if (info->stderr_path)
    ARG ("--stderr"), ARG (info->stderr_path);
  if (info->checkpoint_dir)
    ARG ("--checkpoint"), ARG (info->checkpoint_dir);
  ARG ("--sync-fd"), ARG ("3");
#undef ARG
  argv[i] = NULL;
  return argv;
}

static int
s_prepare_dir (process_t *self, zcd_error_t **err)
{
  /* The container made the directory, fresh, for this process alone. */
  const char *fifos[] = { "exit", "control" };
  for (int i = 0; i < 2; i++)
    {
      char path[4096];
      snprintf (path, sizeof path, "%s/%s", self->dir, fifos[i]);
      if (mkfifo (path, 0600) < 0)
        return zcd_fail_errno (err, errno, "mkfifo `%s`", path);
    }
  return 0;
}

/* Open the exit FIFO's read end and watch it.  Opened before the shim
 * starts (or, on restore, before its liveness is checked), so its hang-up
 * cannot be missed. */
static int
s_watch_exit (process_t *self, zcd_error_t **err)
{
  char path[4096];
  snprintf (path, sizeof path, "%s/exit", self->dir);
  self->exit_fd = open (path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (self->exit_fd < 0)
    return zcd_fail_errno (err, errno, "open `%s`", path);
  self->exit_watch = loop_add_fd (self->daemon->loop, self->exit_fd, EPOLLIN, s_on_exit_fifo, self);
  if (self->exit_watch == NULL)
    return zcd_fail_errno (err, errno, "watch `%s`", path);
  return 0;
}

static int
s_spawn_shim (process_t *self, const process_info_t *info, zcd_error_t **err)
{
  int sync[2];
  if (pipe2 (sync, O_CLOEXEC) < 0)
    return zcd_fail_errno (err, errno, "sync pipe");
  fcntl (sync[0], F_SETFL, O_NONBLOCK);
  self->sync_fd = sync[0];
  char **argv = s_shim_argv (self->daemon->config, info);
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.cwd = self->dir;
  /* The shim outlives this intermediate child; it must not hold pipes the
   * daemon waits on for EOF. */
  opts.capture = false;
  opts.pass_fd = sync[1];
  child_t *child = child_spawn (self->daemon->children, argv, &opts, NULL, NULL, err);
  mp_strv_free (argv);
  close (sync[1]);
  if (child == NULL)
    return -1;
  self->sync_watch = loop_add_fd (self->daemon->loop, self->sync_fd, EPOLLIN, s_on_sync, self);
  self->start_timer = loop_timer_add (self->daemon->loop, self->daemon->config->start_timeout_ms,
                                      s_on_start_timeout, self);
  return 0;
}

static process_t *
s_process_new (zcd_daemon_t *daemon, const char *container_id, const char *container_actor,
               const char *pid_name, bool is_init, const char *runtime, char *const *runtime_args)
{
  process_t *self = calloc (1, sizeof *self);
  self->daemon = daemon;
  self->exit_fd = self->sync_fd = -1;
  self->container_id = strdup (container_id);
  self->pid_name = strdup (pid_name);
  self->is_init = is_init;
  self->runtime = strdup (runtime);
  size_t n = mp_strv_len (runtime_args);
  self->runtime_args = calloc (n + 1, sizeof (char *));
  for (size_t i = 0; i < n; i++)
    self->runtime_args[i] = strdup (runtime_args[i]);
  self->dir = zcd_process_dir (daemon->config, container_id, pid_name);
  self->container_actor = strdup (container_actor);
  return self;
}

static actor_t *
s_register (zcd_daemon_t *daemon, process_t *self, zcd_error_t **err)
{
  char name[256];
  /* Nobody addresses a process actor by name, and one whose start failed
   * lingers until its shim is gone, while the id may already be in use
   * again: a serial keeps the names apart. */
  static uint64_t serial;
  snprintf (name, sizeof name, PROCESS_ACTOR_PREFIX "%s/%s#%llu", self->container_id,
            self->pid_name, (unsigned long long) ++serial);
  self->actor = actor_new (daemon->actors, &s_class, name, self, err);
  return self->actor;
}

actor_t *
process_actor_spawn (zcd_daemon_t *daemon, const process_info_t *info, zcd_error_t **err)
{
  process_t *self = s_process_new (daemon, info->container_id, info->container_actor,
                                   info->pid_name, info->is_init,
                                   info->runtime, info->runtime_args);
  if (s_register (daemon, self, err) == NULL)
    {
      /* Not an actor yet: the class destructor will not run. */
      s_process_free (self);
      return NULL;
    }
  if (s_prepare_dir (self, err) < 0 || s_watch_exit (self, err) < 0
      || s_spawn_shim (self, info, err) < 0)
    {
      actor_destroy (self->actor);
      return NULL;
    }
  return self->actor;
}

/* A shim is ours if it still runs in this process's state directory: its
 * pid alone could have been recycled while the daemon was down. */
static bool
s_shim_alive (const char *dir)
{
  pid_t shim = s_read_pid_file (dir, "shim.pid");
  if (shim <= 0)
    return false;
  char link[64], cwd[4096];
  snprintf (link, sizeof link, "/proc/%d/cwd", (int) shim);
  ssize_t n = readlink (link, cwd, sizeof cwd - 1);
  if (n <= 0)
    return false;
  cwd[n] = '\0';
  char real[4096];
  if (realpath (dir, real) == NULL)
    return false;
  return strcmp (cwd, real) == 0;
}

actor_t *
process_actor_restore (zcd_daemon_t *daemon, const char *container_id,
                       const char *container_actor, const char *pid_name, bool is_init,
                       const char *runtime, char *const *runtime_args,
                       process_restore_t *out, zcd_error_t **err)
{
  memset (out, 0, sizeof *out);
  process_t *self = s_process_new (daemon, container_id, container_actor, pid_name, is_init,
                                   runtime, runtime_args);
  pid_t pid = s_read_pid_file (self->dir, "pid");
  out->started = pid > 0;
  out->system_pid = pid > 0 ? (uint32_t) pid : 0;
  self->system_pid = pid;
  self->starttime = out->starttime = pid > 0 ? s_read_starttime (self->dir) : 0;
  /* The FIFO is opened before the liveness check: a shim alive at the
   * check holds its write end, so its hang-up cannot be missed. */
  cleanup_error zcd_error_t *fifo_err = NULL;
  bool watching = s_watch_exit (self, &fifo_err) == 0;
  if (watching && s_shim_alive (self->dir))
    {
      if (s_register (daemon, self, err) == NULL)
        {
          s_process_free (self);
          return NULL;
        }
      /* A shim still starting when the daemon died: its pid file may come
       * later; its exit is watched all the same. */
      self->phase = PROC_RUNNING;
      out->alive = true;
      return self->actor;
    }
  if (out->started)
    out->status = s_collect_status (self);
  else if (is_init)
    s_runtime_delete_force (self);
  s_process_free (self);
  return NULL;
}

void
process_info_free (process_info_t *info)
{
  if (info == NULL)
    return;
  free (info->container_id);
  free (info->pid_name);
  free (info->bundle);
  free (info->runtime);
  mp_strv_free (info->runtime_args);
  free (info->stdin_path);
  free (info->stdout_path);
  free (info->stderr_path);
  free (info->checkpoint_dir);
}
