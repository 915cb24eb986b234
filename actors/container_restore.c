/* Live restore of one container actor from its state directory (DESIGN.md,
 * "Restart").  Runs before the daemon answers any request.  Every process
 * directory gets its shim watched again, or its exit reported; the event
 * log's hints keep an event from being published twice or never. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "actors/container.h"
#include "core/bundle.h"
#include "core/caller.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

static bool
s_in (char *const *list, const char *name)
{
  for (; list && *list; list++)
    if (strcmp (*list, name) == 0)
      return true;
  return false;
}

static char **
s_json_strv (json_t *a)
{
  size_t n = json_is_array (a) ? json_array_size (a) : 0;
  char **v = calloc (n + 1, sizeof *v);
  for (size_t i = 0; i < n; i++)
    v[i] = strdup (json_string_value (json_array_get (a, i)) ?: "");
  return v;
}

static char *
s_json_str (json_t *j, const char *key)
{
  const char *v = json_string_value (json_object_get (j, key));
  return v ? strdup (v) : NULL;
}

static container_t *
s_load_state (zcd_daemon_t *daemon, const char *id, zcd_error_t **err)
{
  container_t *self = container_new (daemon, id);
  cleanup_free char *path = NULL;
  json_error_t jerr;
  json_t *j
      = asprintf (&path, "%s/state.json", self->dir) < 0 ? NULL : json_load_file (path, 0, &jerr);
  if (j == NULL || !json_is_string (json_object_get (j, "bundle"))
      || !json_is_string (json_object_get (j, "runtime")))
    {
      zcd_fail (err, ZCD_E_INTERNAL, "state.json unreadable or incomplete%s%s", j ? "" : ": ",
                j ? "" : jerr.text);
      json_decref (j);
      container_free (self);
      return NULL;
    }
  self->bundle = s_json_str (j, "bundle");
  self->runtime = s_json_str (j, "runtime");
  self->labels = s_json_strv (json_object_get (j, "labels"));
  self->runtime_args = s_json_strv (json_object_get (j, "runtime_args"));
  self->no_pivot = json_is_true (json_object_get (j, "no_pivot_root"));
  self->stdin_path = s_json_str (j, "stdin");
  self->stdout_path = s_json_str (j, "stdout");
  self->stderr_path = s_json_str (j, "stderr");
  self->restoring_from = s_json_str (j, "restored_from");
  json_t *owner = json_object_get (j, "owner");
  json_int_t uid = json_integer_value (json_object_get (owner, "uid"));
  json_int_t gid = json_integer_value (json_object_get (owner, "gid"));
  if (uid > 0 && uid < UINT32_MAX && gid >= 0 && gid < UINT32_MAX)
    {
      self->owner.uid = (uint32_t)uid;
      self->owner.gid = (uint32_t)gid;
      self->owner.groups = s_json_str (owner, "groups");
    }
  self->created = (int64_t)json_integer_value (json_object_get (j, "created"));
  container_set_state (self, json_is_true (json_object_get (j, "paused")) ? CONTAINER_PAUSED
                                                                          : CONTAINER_RUNNING);
  json_decref (j);
  self->process_cb = &container_process_callbacks;
  return self;
}

/* The init's `Process` view comes from the bundle again; a bundle gone
 * meanwhile still leaves a process to account for. */
static process_t *
s_init_proc (container_t *self)
{
  bundle_info_t *info = NULL;
  process_t *p;
  /* Read as its owner, as at the create: the bundle path is the owner's
   * word, and may lead elsewhere by now. */
  zcd_as_user_t scope;
  int rc = zcd_as_user_enter (&scope, self->owner.uid, self->owner.gid);
  if (rc == 0)
    {
      rc = bundle_load (self->bundle, &info, NULL);
      zcd_as_user_leave (&scope);
    }
  if (rc == 0)
    p = process_new_init (info, self->stdin_path, self->stdout_path, self->stderr_path);
  else
    p = process_new_unknown ("init", true);
  bundle_info_destroy (&info);
  return p;
}

static process_t *
s_exec_proc (container_t *self, const char *name)
{
  cleanup_free char *dir = zcd_process_dir (self->daemon->config, self->id, name);
  cleanup_free char *path = NULL, *data = NULL;
  size_t len = 0;
  process_t *p = NULL;
  msgpack_unpacked m;
  msgpack_unpacked_init (&m);
  if (asprintf (&path, "%s/request.msgpack", dir) >= 0
      && zcd_read_file_nofollow (path, 1 << 20, &data, &len, NULL) == 0
      && mp_unpack (data, len, &m, NULL) == 0 && m.data.type == MSGPACK_OBJECT_MAP)
    p = process_new_exec (&m.data);
  msgpack_unpacked_destroy (&m);
  if (p == NULL)
    return process_new_unknown (name, false);
  free (p->name);
  p->name = strdup (name);
  return p;
}

/* One process: watched again if its shim lives, else its exit is posted.
 * Returns false when the process never started (nothing to report). */
static bool
s_restore_process (container_t *self, process_t *p, const restore_hints_t *hints)
{
  bool alive = false;
  process_launch_t launch = container_process_launch (self);
  process_restore (p, &launch, &alive);
  container_view_changed (self);
  if (p->state != PROCESS_RUNNING)
    return false;
  bool start_logged = p->is_init ? hints->start_logged : s_in (hints->started_execs, p->name);
  if (hints->covered && !start_logged)
    container_emit (self, p,
                    &(amsg_event_t){ .etype = p->is_init ? "start-container" : "start-process" });
  if (!alive)
    container_post_exit (self, p, s_in (hints->exited, p->name));
  return true;
}

static void
s_restore_execs (container_t *self, const restore_hints_t *hints)
{
  cleanup_free char *procs = NULL;
  if (asprintf (&procs, "%s/" ZCD_PROCS_DIR, self->dir) < 0)
    return;
  cleanup_dir DIR *d = opendir (procs);
  for (struct dirent *de; d && (de = readdir (d));)
    {
      if (strcmp (de->d_name, "init") == 0 || !zcd_valid_id (de->d_name, strlen (de->d_name)))
        continue;
      /* Only directories are processes (a shim's temp file is not one). */
      struct stat st;
      if (fstatat (dirfd (d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR (st.st_mode))
        continue;
      process_t *p = s_exec_proc (self, de->d_name);
      container_add_process (self, p);
      if (!s_restore_process (self, p, hints))
        {
          /* An exec that never started: its request was never answered. */
          cleanup_free char *dir = zcd_process_dir (self->daemon->config, self->id, p->name);
          container_remove_process (self, p);
          /* Through .trash: the sweeper never follows what a rootless
           * owner may have planted in its directory. */
          container_dirs_discard (self->daemon->dirs, dir, "exec");
        }
    }
}

/* Whether the container's cgroup is frozen, or -1 when unknown. */
static int
s_cgroup_frozen (const container_t *self)
{
  if (self->cgroup == NULL)
    return -1;
  bool v2 = cgroup_paths_version (self->cgroup) == CGROUP_V2;
  const char *dir = cgroup_paths_dir (self->cgroup, v2 ? NULL : "freezer");
  cleanup_free char *path = NULL, *text = NULL;
  if (dir == NULL || asprintf (&path, "%s/%s", dir, v2 ? "cgroup.freeze" : "freezer.state") < 0
      || zcd_read_file_nofollow (path, 64, &text, NULL, NULL) < 0)
    return -1;
  return v2 ? text[0] == '1' : strncmp (text, "THAWED", 6) != 0;
}

/* A process whose exit is already posted (the shim is gone). */
static bool
s_init_exited_at_restore (const process_t *init)
{
  return init->system_pid == 0 || zcd_proc_starttime ((pid_t)init->system_pid) == 0
         || zcd_proc_is_zombie ((pid_t)init->system_pid);
}

/* The daemon may die between a runtime's pause (or resume) and saving
 * state.json: the freezer is the truth.  A frozen container believed
 * running could not even be killed (a kill thaws only a paused one). */
static void
s_sync_paused (container_t *self)
{
  int frozen = s_cgroup_frozen (self);
  bool paused = self->state == CONTAINER_PAUSED;
  if (frozen < 0 || (bool)frozen == paused)
    return;
  log_warn ("container %s: state.json says %s, its cgroup is %s", self->id,
            paused ? "paused" : "running", frozen ? "frozen" : "thawed");
  container_set_state (self, frozen ? CONTAINER_PAUSED : CONTAINER_RUNNING);
  container_save_state (self, NULL);
}

#define PID_POLL_MS 100

/* A shim still starting when the daemon died writes the process's pid
 * later, which the daemon that spawned it would have heard on its sync
 * pipe: looked for until it comes or the process ends.  Then the container
 * has its pid, its cgroups, and (a restore) what crun left is cleaned. */
static void
s_on_pid_poll (loop_t *loop, void *arg)
{
  container_t *self = arg;
  self->pid_timer = NULL;
  process_t *init = container_init_process (self);
  if (init == NULL || init->state != PROCESS_RUNNING || init->system_pid)
    return;
  cleanup_free char *path = NULL, *text = NULL;
  pid_t pid = 0;
  if (asprintf (&path, "%s/pid", init->dir) >= 0 && zcd_read_file_nofollow (path, 64, &text, NULL, NULL) == 0)
    pid = (pid_t) strtol (text, NULL, 10);
  uint64_t starttime = pid > 0 ? zcd_proc_starttime (pid) : 0;
  if (starttime == 0)
    {
      self->pid_timer = loop_timer_add (loop, PID_POLL_MS, s_on_pid_poll, self);
      return;
    }
  init->system_pid = (uint32_t) pid;
  init->starttime = starttime;
  process_pin (init);
  container_attach_cgroup (self, pid);
  container_view_changed (self);
  container_send_view (self);
  container_restore_leftovers (self, pid);
}

actor_t *
container_actor_restore (zcd_daemon_t *daemon, const char *id, const restore_hints_t *hints,
                         zcd_error_t **err)
{
  container_t *self = s_load_state (daemon, id, err);
  if (self == NULL)
    return NULL;
  char name[128];
  zcd_container_actor_name (id, name, sizeof name);
  self->actor = actor_new (daemon->actors, &container_actor_class, name, self, err);
  if (self->actor == NULL)
    {
      container_free (self);
      return NULL;
    }
  process_t *init = s_init_proc (self);
  container_add_process (self, init);
  /* Exec exits are posted before the init's, so they are published first. */
  s_restore_execs (self, hints);
  if (!s_restore_process (self, init, hints))
    {
      /* The daemon died in the middle of the create: it was never
       * acknowledged, and nothing of it runs. */
      log_info ("container %s: never started; removed", id);
      container_restore_leftovers (self, 0);
      container_dirs_discard (self->daemon->dirs, self->dir, "never-started");
      actor_destroy (self->actor);
      return NULL;
    }
  bool init_alive = init->system_pid && kill ((pid_t)init->system_pid, 0) == 0;
  if (init_alive)
    container_attach_cgroup (self, (pid_t)init->system_pid);
  /* The daemon may have died before it finished a crun restore's work. */
  if (init->state == PROCESS_RUNNING && init->system_pid == 0)
    self->pid_timer = loop_timer_add (daemon->loop, PID_POLL_MS, s_on_pid_poll, self);
  else
    container_restore_leftovers (self, init_alive ? (pid_t)init->system_pid : 0);
  s_sync_paused (self);
  container_send_view (self);
  /* The daemon may have died between a pause (or resume) and logging its
   * event: the status restored from the freezer then gets its event now,
   * so `state` and the log agree (PROTOCOL.md: a client applying events to
   * a snapshot holds the exact state). */
  bool paused = self->state == CONTAINER_PAUSED;
  if (hints->covered && paused != hints->logged_paused && !s_init_exited_at_restore (init))
    container_emit (self, NULL, &(amsg_event_t){ .etype = paused ? "pause" : "resume" });
  log_debug ("container %s restored (%s, %u processes)", id, container_status_name (self),
             container_count_processes (self));
  return self->actor;
}
