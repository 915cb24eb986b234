/* The container operations that change a running container in place:
 * `signal` (the runtime's kill, or a pidfd for an exec process), `update`
 * (resources and pause/resume through the runtime) and `update_process`
 * (a resize or stdin close through the shim's control FIFO). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jansson.h>

#include "actors/container.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/mp.h"
#include "core/shimproto.h"

/* An exec process is signalled through a pidfd taken while the pid still
 * names the process that started (same start time), so a pid recycled
 * after its exit is never hit (issue 8, defect 11). */
static void
s_signal_exec (container_t *self, uint64_t token, container_proc_t *p, int sig)
{
  pid_t pid = (pid_t)p->system_pid;
  cleanup_close int pidfd = pid > 0 ? (int)syscall (SYS_pidfd_open, pid, 0) : -1;
  if (pidfd < 0 || p->starttime == 0 || zcd_proc_starttime (pid) != p->starttime)
    {
      /* Gone (or a stranger now holds the pid): the exit is on its way. */
      container_fail_op (self, token, ZCD_E_NOT_FOUND, "process `%s` in `%s` has exited", p->name,
                         self->id);
      return;
    }
  if (syscall (SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0)
    {
      if (errno == ESRCH)
        container_fail_op (self, token, ZCD_E_NOT_FOUND, "process `%s` in `%s` has exited", p->name,
                           self->id);
      else
        container_fail_op (self, token, ZCD_E_INTERNAL, "signal %d to %u: %s", sig, p->system_pid,
                           strerror (errno));
      return;
    }
  container_op_done (self, token, NULL);
}

void
container_op_signal (container_t *self, uint64_t token, const msgpack_object *body)
{
  cleanup_free char *pid = mp_get_strdup (body, "pid");
  uint64_t sig = mp_get_uint (body, "signal", 0);
  bool all = mp_get_bool (body, "all", false);
  container_proc_t *p = container_find_proc (self, pid ? pid : "init");
  if (p == NULL || !p->started)
    {
      container_fail_op (self, token, ZCD_E_NOT_FOUND, "no process `%s` in `%s`",
                         pid ? pid : "init", self->id);
      return;
    }
  if (!p->is_init && !all)
    {
      s_signal_exec (self, token, p, (int)sig);
      return;
    }
  char signame[16];
  snprintf (signame, sizeof signame, "%llu", (unsigned long long)sig);
  const char *words_all[] = { "kill", "--all", self->id, signame, NULL };
  const char *words[] = { "kill", self->id, signame, NULL };
  /* A frozen cgroup holds even SIGKILL until it is thawed (cgroup v1
   * freezer): a kill of a paused container resumes it, as docker does. */
  if (self->paused && sig == SIGKILL)
    self->then_status = OP_RESUME;
  /* Both runtimes' `kill --all` freeze, signal and then THAW the cgroup,
   * whatever it was: a paused container must be frozen again, or zcd would
   * report `paused` for a running one (issue 14).  The pause that follows
   * changes nothing the client sees, so it emits no event. */
  else if (self->paused && all)
    self->then_status = OP_PAUSE;
  container_run_runtime (self, token, OP_SIGNAL, all ? words_all : words);
}

static int
s_write_resources (container_t *self, const msgpack_object *res, char **path_out, zcd_error_t **err)
{
  json_t *j = json_object ();
  json_t *memory = json_object (), *cpu = json_object ();
  struct
  {
    const char *key;
    json_t *obj;
    const char *field;
  } map[] = {
    { "memory_limit", memory, "limit" },
    { "memory_swap", memory, "swap" },
    { "memory_reservation", memory, "reservation" },
    { "kernel_memory_limit", memory, "kernel" },
    { "kernel_tcp_memory_limit", memory, "kernelTCP" },
    { "cpu_shares", cpu, "shares" },
    { "cpu_period", cpu, "period" },
    { "cpu_quota", cpu, "quota" },
  };
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (mp_map_get (res, map[i].key))
      json_object_set_new (map[i].obj, map[i].field,
                           json_integer ((json_int_t)mp_get_uint (res, map[i].key, 0)));
  cleanup_free char *cpus = mp_get_strdup (res, "cpuset_cpus");
  cleanup_free char *mems = mp_get_strdup (res, "cpuset_mems");
  if (cpus)
    json_object_set_new (cpu, "cpus", json_string (cpus));
  if (mems)
    json_object_set_new (cpu, "mems", json_string (mems));
  json_object_set_new (j, "memory", memory);
  json_object_set_new (j, "cpu", cpu);
  if (mp_map_get (res, "blkio_weight"))
    json_object_set_new (
        j, "blockIO",
        json_pack ("{s:I}", "weight", (json_int_t)mp_get_uint (res, "blkio_weight", 0)));
  if (mp_map_get (res, "pids_limit"))
    json_object_set_new (
        j, "pids", json_pack ("{s:I}", "limit", (json_int_t)mp_get_uint (res, "pids_limit", 0)));
  cleanup_free char *text = json_dumps (j, JSON_COMPACT);
  json_decref (j);
  if (text == NULL)
    return -1;
  if (asprintf (path_out, "%s/resources.json", self->dir) < 0)
    return zcd_fail_errno (err, ENOMEM, "resources.json");
  return zcd_write_file_atomic (*path_out, text, strlen (text), 0600, err);
}

void
container_op_update (container_t *self, uint64_t token, const msgpack_object *body)
{
  cleanup_free char *status = mp_get_strdup (body, "status");
  const msgpack_object *res = mp_map_get (body, "resources");
  container_op_kind_t change = OP_NONE;
  if (status && strcmp (status, "paused") == 0 && !self->paused)
    change = OP_PAUSE;
  else if (status && strcmp (status, "running") == 0 && self->paused)
    change = OP_RESUME;
  if (res && res->type == MSGPACK_OBJECT_MAP && res->via.map.size > 0)
    {
      cleanup_free char *path = NULL;
      cleanup_error zcd_error_t *err = NULL;
      if (s_write_resources (self, res, &path, &err) < 0)
        {
          zcd_state_dir_error (&err);
          container_fail_op (self, token, err ? err->code : ZCD_E_INTERNAL, "resources.json: %s",
                             err ? err->msg : "cannot be encoded");
          return;
        }
      self->then_status = change;
      const char *words[] = { "update", "--resources", path, self->id, NULL };
      container_run_runtime (self, token, OP_UPDATE, words);
      return;
    }
  if (change == OP_NONE)
    {
      /* Already in the asked state: success, no event (PROTOCOL.md). */
      container_op_done (self, token, NULL);
      return;
    }
  const char *words[] = { change == OP_PAUSE ? "pause" : "resume", self->id, NULL };
  container_run_runtime (self, token, change, words);
}

static int
s_write_control (container_t *self, const char *pid, const struct zcd_control_record *rec)
{
  cleanup_free char *dir = zcd_process_dir (self->daemon->config, self->id, pid);
  cleanup_free char *path = NULL;
  if (asprintf (&path, "%s/control", dir) < 0)
    return -1;
  cleanup_close int fd = open (path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return -1;
  return write (fd, rec, sizeof *rec) == (ssize_t)sizeof *rec ? 0 : -1;
}

/* The shim holds the control FIFO's read end as long as it runs: no
 * reader (ENXIO) or no FIFO means the process has exited, a race with its
 * exit (not_found), not a bug. */
static void
s_control_failed (container_t *self, uint64_t token, const char *pid)
{
  if (errno == ENXIO || errno == ENOENT || errno == EPIPE)
    container_fail_op (self, token, ZCD_E_NOT_FOUND, "process `%s` in `%s` has exited", pid,
                       self->id);
  else if (errno == EAGAIN)
    container_fail_op (self, token, ZCD_E_BUSY,
                       "process `%s`: its shim is not reading control "
                       "messages; retry",
                       pid);
  else
    container_fail_op (self, token, ZCD_E_INTERNAL, "control FIFO of `%s`: %s", pid,
                       strerror (errno));
}

void
container_op_update_process (container_t *self, uint64_t token, const msgpack_object *body)
{
  cleanup_free char *pid = mp_get_strdup (body, "pid");
  container_proc_t *p = container_find_proc (self, pid);
  if (p == NULL || !p->started)
    {
      container_fail_op (self, token, ZCD_E_NOT_FOUND, "no process `%s` in `%s`", pid, self->id);
      return;
    }
  bool has_w = mp_map_get (body, "width") != NULL, has_h = mp_map_get (body, "height") != NULL;
  if (has_w != has_h)
    {
      container_fail_op (self, token, ZCD_E_INVALID_ARGUMENT,
                         "key `%s`: width and height go together", has_w ? "height" : "width");
      return;
    }
  if (has_w && !p->terminal)
    {
      container_fail_op (self, token, ZCD_E_INVALID_STATE, "process `%s` has no terminal", pid);
      return;
    }
  if (has_w)
    {
      struct zcd_control_record rec
          = { ZCD_CONTROL_MAGIC, ZCD_CONTROL_RESIZE, (uint32_t)mp_get_uint (body, "width", 0),
              (uint32_t)mp_get_uint (body, "height", 0) };
      if (s_write_control (self, pid, &rec) < 0)
        {
          s_control_failed (self, token, pid);
          return;
        }
    }
  if (mp_get_bool (body, "close_stdin", false))
    {
      struct zcd_control_record rec = { ZCD_CONTROL_MAGIC, ZCD_CONTROL_CLOSE_STDIN, 0, 0 };
      if (s_write_control (self, pid, &rec) < 0)
        {
          s_control_failed (self, token, pid);
          return;
        }
    }
  container_op_done (self, token, NULL);
}
