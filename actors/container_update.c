/* The container operations that change a running container in place:
 * `signal` (the runtime's kill, or a pidfd for an exec process), `update`
 * (resources and pause/resume through the runtime) and `update_process`
 * (a resize or stdin close through the shim's control FIFO).  Each plans
 * its operation (container_fsm.c carries it out). */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "actors/container.h"
#include "core/caller.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/mp.h"
#include "core/shimproto.h"

/* An exec process is signalled through its pidfd (process_signal), so a
 * pid recycled after its exit is never hit (issue 8, defect 11). */
static void
s_signal_exec (container_t *self, process_t *p, int sig, container_plan_t *plan)
{
  int rc = process_signal (p, sig);
  if (rc == -ESRCH)
    /* Gone (or a stranger now holds the pid): the exit is on its way. */
    zcd_fail (&plan->err, ZCD_E_NOT_FOUND, "process `%s` in `%s` has exited", p->name, self->id);
  else if (rc == -EPERM)
    /* A rootless shim reported a pid its owner may not signal: the
     * owner's doing (core/caller.h, zcd_signal_owned). */
    zcd_fail (&plan->err, ZCD_E_INVALID_STATE,
              "process `%s` in `%s`: pid %u is not its owner's to signal", p->name, self->id,
              p->system_pid);
  else if (rc < 0)
    zcd_fail (&plan->err, ZCD_E_INTERNAL, "signal %d to %u: %s", sig, p->system_pid,
              strerror (-rc));
}

/* The pid namespace of pid, as /proc names it ("pid:[4026531836]"). */
static bool
s_pid_ns (const char *pid, char *out, size_t size)
{
  char path[300];
  snprintf (path, sizeof path, "/proc/%s/ns/pid", pid);
  ssize_t n = readlink (path, out, size - 1);
  if (n <= 0)
    return false;
  out[n] = '\0';
  return true;
}

/* `all` for a rootless container: it has no cgroup of its own
 * (container_cgroup.c), and both runtimes' `kill --all` walk the cgroup
 * ("lstat : no such file or directory").  Its processes are those of its
 * init's pid namespace, signalled as its owner: a pid the rootless shim
 * reported is the owner's word, so the signal reaches only what the owner
 * could signal itself. */
static void
s_signal_rootless_all (container_t *self, process_t *init, int sig, container_plan_t *plan)
{
  char init_pid[16], want[64], ours[64], got[64];
  snprintf (init_pid, sizeof init_pid, "%u", init->system_pid);
  if (!s_pid_ns (init_pid, want, sizeof want))
    {
      zcd_fail (&plan->err, ZCD_E_NOT_FOUND, "container `%s` has exited", self->id);
      return;
    }
  if (s_pid_ns ("self", ours, sizeof ours) && strcmp (want, ours) == 0)
    {
      zcd_fail (&plan->err, ZCD_E_INVALID_STATE,
                "`all`: container `%s` is rootless and shares the host's pid namespace, so "
                "nothing tells its processes apart (give it a pid namespace)",
                self->id);
      return;
    }
  cleanup_dir DIR *proc = opendir ("/proc");
  size_t hit = 0;
  for (struct dirent *de; proc && (de = readdir (proc));)
    {
      if (de->d_name[0] < '1' || de->d_name[0] > '9' || !s_pid_ns (de->d_name, got, sizeof got)
          || strcmp (got, want) != 0)
        continue;
      if (zcd_kill_as (self->owner.uid, self->owner.gid, (pid_t)atoi (de->d_name), sig) == 0)
        hit++;
    }
  if (hit == 0)
    zcd_fail (&plan->err, ZCD_E_NOT_FOUND, "container `%s` has exited", self->id);
}

void
container_plan_signal (container_t *self, const msgpack_object *body, container_plan_t *plan)
{
  cleanup_free char *pid = mp_get_strdup (body, "pid");
  uint64_t sig = mp_get_uint (body, "signal", 0);
  bool all = mp_get_bool (body, "all", false);
  process_t *p = container_find_process (self, pid ? pid : "init");
  if (p == NULL || p->state != PROCESS_RUNNING)
    {
      zcd_fail (&plan->err, ZCD_E_NOT_FOUND, "no process `%s` in `%s`", pid ? pid : "init",
                self->id);
      return;
    }
  if (!p->is_init && !all)
    {
      s_signal_exec (self, p, (int)sig, plan);
      return;
    }
  if (all && self->owner.uid != 0)
    {
      s_signal_rootless_all (self, container_init_process (self), (int)sig, plan);
      return;
    }
  char signame[16];
  snprintf (signame, sizeof signame, "%llu", (unsigned long long)sig);
  const char *words_all[] = { "kill", "--all", self->id, signame, NULL };
  const char *words[] = { "kill", self->id, signame, NULL };
  plan->step = STEP_KILL;
  plan->words = container_strv_dup (all ? words_all : words);
  /* The pause after a `kill --all` changes nothing the client sees, so it
   * emits no event (container.h, STEP_REFREEZE_AFTER_KILL). */
  if (self->state == CONTAINER_PAUSED && sig == SIGKILL)
    plan->then = STEP_THAW_AFTER_KILL;
  else if (self->state == CONTAINER_PAUSED && all)
    plan->then = STEP_REFREEZE_AFTER_KILL;
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
  return zcd_write_file_replace (*path_out, text, strlen (text), 0600, err);
}

void
container_plan_update (container_t *self, const msgpack_object *body, container_plan_t *plan)
{
  cleanup_free char *status = mp_get_strdup (body, "status");
  const msgpack_object *res = mp_map_get (body, "resources");
  bool paused = self->state == CONTAINER_PAUSED;
  container_step_t change = STEP_NONE;
  if (status && strcmp (status, "paused") == 0 && !paused)
    change = STEP_PAUSE;
  else if (status && strcmp (status, "running") == 0 && paused)
    change = STEP_RESUME;
  if (res && res->type == MSGPACK_OBJECT_MAP && res->via.map.size > 0)
    {
      cleanup_free char *path = NULL;
      cleanup_error zcd_error_t *err = NULL;
      if (s_write_resources (self, res, &path, &err) < 0)
        {
          zcd_state_dir_error (&err);
          zcd_fail (&plan->err, err ? err->code : ZCD_E_INTERNAL, "resources.json: %s",
                    err ? err->msg : "cannot be encoded");
          return;
        }
      const char *words[] = { "update", "--resources", path, self->id, NULL };
      plan->step = STEP_UPDATE;
      plan->then = change;
      plan->words = container_strv_dup (words);
      return;
    }
  /* Already in the asked state: success, no event (PROTOCOL.md). */
  if (change == STEP_NONE)
    return;
  const char *words[] = { change == STEP_PAUSE ? "pause" : "resume", self->id, NULL };
  plan->step = change;
  plan->words = container_strv_dup (words);
}

/* The shim holds the control FIFO's read end as long as it runs: no
 * reader (ENXIO) or no FIFO means the process has exited, a race with its
 * exit (not_found), not a bug. */
static void
s_control (container_t *self, process_t *p, const struct zcd_control_record *rec,
           container_plan_t *plan)
{
  int rc = process_control (p, rec);
  if (rc == 0)
    return;
  if (rc == -ENXIO || rc == -ENOENT || rc == -EPIPE)
    zcd_fail (&plan->err, ZCD_E_NOT_FOUND, "process `%s` in `%s` has exited", p->name, self->id);
  else if (rc == -ELOOP || rc == -EPERM)
    /* A rootless process's directory is its owner's, who replaced the
     * FIFO: the owner's doing, answered as such. */
    zcd_fail (&plan->err, ZCD_E_INVALID_STATE,
              "process `%s`: its control FIFO is no longer a FIFO of its own", p->name);
  else if (rc == -EAGAIN)
    zcd_fail (&plan->err, ZCD_E_BUSY,
              "process `%s`: its shim is not reading control messages; retry", p->name);
  else
    zcd_fail (&plan->err, ZCD_E_INTERNAL, "control FIFO of `%s`: %s", p->name, strerror (-rc));
}

void
container_plan_update_process (container_t *self, const msgpack_object *body,
                               container_plan_t *plan)
{
  cleanup_free char *pid = mp_get_strdup (body, "pid");
  process_t *p = pid ? container_find_process (self, pid) : NULL;
  if (p == NULL || p->state != PROCESS_RUNNING)
    {
      zcd_fail (&plan->err, ZCD_E_NOT_FOUND, "no process `%s` in `%s`", pid ? pid : "", self->id);
      return;
    }
  bool has_w = mp_map_get (body, "width") != NULL, has_h = mp_map_get (body, "height") != NULL;
  if (has_w != has_h)
    {
      zcd_fail (&plan->err, ZCD_E_INVALID_ARGUMENT, "key `%s`: width and height go together",
                has_w ? "height" : "width");
      return;
    }
  if (has_w && !p->terminal)
    {
      zcd_fail (&plan->err, ZCD_E_INVALID_STATE, "process `%s` has no terminal", pid);
      return;
    }
  if (has_w)
    {
      struct zcd_control_record rec
          = { ZCD_CONTROL_MAGIC, ZCD_CONTROL_RESIZE, (uint32_t)mp_get_uint (body, "width", 0),
              (uint32_t)mp_get_uint (body, "height", 0) };
      s_control (self, p, &rec, plan);
      if (plan->err)
        return;
    }
  if (mp_get_bool (body, "close_stdin", false))
    {
      struct zcd_control_record rec = { ZCD_CONTROL_MAGIC, ZCD_CONTROL_CLOSE_STDIN, 0, 0 };
      s_control (self, p, &rec, plan);
    }
}
