/* The container's model (see container.h): its processes, its views, its
 * record on disk, and what it reports to the supervisor.  The view is
 * packed once per change and reused by every event, view and reply until
 * something it shows changes; state.json is written only when its text
 * changed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "actors/container.h"
#include "core/amsg_gen.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

/* ------------------------------------------------------------------ */
/* Life                                                                */

static void
s_process_destroy (void **item)
{
  process_destroy ((process_t **)item);
}

container_t *
container_new (zcd_daemon_t *daemon, const char *id)
{
  container_t *self = calloc (1, sizeof *self);
  self->daemon = daemon;
  self->oom_fd = -1;
  self->id = strdup (id);
  self->dir = zcd_container_dir (daemon->config, id);
  self->state = CONTAINER_CREATING;
  self->current.op = PROTO_OP_COUNT;
  self->procs = zlistx_new ();
  zlistx_set_destructor (self->procs, s_process_destroy);
  return self;
}

char **
container_strv_dup (const char *const *v)
{
  size_t n = mp_strv_len ((char *const *)v);
  char **out = calloc (n + 1, sizeof *out);
  for (size_t i = 0; i < n; i++)
    out[i] = strdup (v[i]);
  return out;
}

static char *
s_strdup0 (const char *s)
{
  return s ? strdup (s) : NULL;
}

/* A rootless container's runtime runs in rootless mode and keeps its state
 * in the owner's own directory (zcd_rootless_root), last on the line so
 * that they win over the request's own. */
static void
s_add_rootless_root (container_t *self)
{
  size_t n = mp_strv_len (self->runtime_args);
  char **args = realloc (self->runtime_args, (n + 4) * sizeof (char *));
  if (args == NULL)
    return;
  const char *slash = strrchr (self->runtime, '/');
  cleanup_free char *root = zcd_rootless_root (self->daemon->config, self->owner.uid);
  /* Both runtimes take it (runc, crun); said, not left to their guess. */
  args[n] = strdup ("--rootless=true");
  args[n + 1] = strdup ("--root");
  if (root == NULL || asprintf (&args[n + 2], "%s/%s", root, slash ? slash + 1 : self->runtime) < 0)
    args[n + 2] = strdup ("/nonexistent");
  args[n + 3] = NULL;
  self->runtime_args = args;
}

void
container_apply_spec (container_t *self, const container_spec_t *spec)
{
  const zcd_config_t *cfg = self->daemon->config;
  self->bundle = strdup (spec->bundle);
  self->labels = spec->labels ? container_strv_dup ((const char *const *)spec->labels)
                              : calloc (1, sizeof (char *));
  self->runtime = strdup (spec->runtime ? spec->runtime : cfg->runtime);
  size_t na = mp_strv_len (cfg->runtime_args), nb = mp_strv_len (spec->runtime_args);
  self->runtime_args = calloc (na + nb + 1, sizeof (char *));
  for (size_t i = 0; i < na; i++)
    self->runtime_args[i] = strdup (cfg->runtime_args[i]);
  for (size_t i = 0; i < nb; i++)
    self->runtime_args[na + i] = strdup (spec->runtime_args[i]);
  self->no_pivot = spec->no_pivot;
  self->stdin_path = s_strdup0 (spec->stdin_path);
  self->stdout_path = s_strdup0 (spec->stdout_path);
  self->stderr_path = s_strdup0 (spec->stderr_path);
  self->restoring_from = s_strdup0 (spec->restoring_from);
  self->restore_args
      = spec->restore_args ? container_strv_dup ((const char *const *) spec->restore_args) : NULL;
  self->owner.uid = spec->owner.uid;
  self->owner.gid = spec->owner.gid;
  self->owner.groups = s_strdup0 (spec->owner.groups);
  if (self->owner.uid != 0)
    s_add_rootless_root (self);
}

void
container_stop (container_t *self)
{
  loop_t *loop = self->daemon->loop;
  loop_timer_cancel (loop, self->drain_timer);
  self->drain_timer = NULL;
  loop_timer_cancel (loop, self->restored_timer);
  self->restored_timer = NULL;
  loop_timer_cancel (loop, self->pid_timer);
  self->pid_timer = NULL;
  loop_remove (loop, self->oom_watch);
  self->oom_watch = NULL;
  if (self->oom_fd >= 0)
    close (self->oom_fd);
  self->oom_fd = -1;
  if (self->current.child)
    child_forget (self->daemon->children, self->current.child);
  self->current.child = NULL;
  for (process_t *p = zlistx_first (self->procs); p; p = zlistx_next (self->procs))
    process_shim_stop (p);
}

void
container_free (container_t *self)
{
  container_stop (self);
  zcd_error_free (&self->current.failure);
  zlistx_destroy (&self->queue);
  zlistx_destroy (&self->restored_exits);
  zlistx_destroy (&self->procs);
  cgroup_paths_destroy (&self->cgroup);
  free (self->cgroup_procs);
  free (self->id);
  free (self->dir);
  free (self->bundle);
  mp_strv_free (self->labels);
  free (self->runtime);
  mp_strv_free (self->runtime_args);
  free (self->stdin_path);
  free (self->stdout_path);
  free (self->stderr_path);
  free (self->restoring_from);
  free (self->owner.groups);
  mp_strv_free (self->restore_args);
  free (self->view);
  free (self->saved_state);
  free (self->checkpoint_meta);
  free (self->checkpoint_meta_path);
  free (self->checkpoint_log);
  free (self);
}

void
container_set_state (container_t *self, container_state_t state)
{
  if (self->state == state)
    return;
  self->state = state;
  container_view_changed (self);
}

const char *
container_status_name (const container_t *self)
{
  switch (self->state)
    {
    case CONTAINER_PAUSED:
      return "paused";
    case CONTAINER_EXITING:
    case CONTAINER_STOPPED:
      return "stopped";
    default:
      return "running";
    }
}

/* ------------------------------------------------------------------ */
/* Processes                                                           */

process_t *
container_find_process (container_t *self, const char *name)
{
  for (process_t *p = zlistx_first (self->procs); p; p = zlistx_next (self->procs))
    if (strcmp (p->name, name) == 0)
      return p;
  return NULL;
}

process_t *
container_init_process (container_t *self)
{
  process_t *p = zlistx_first (self->procs);
  return p && p->is_init ? p : container_find_process (self, "init");
}

void
container_add_process (container_t *self, process_t *p)
{
  zlistx_add_end (self->procs, p);
  container_view_changed (self);
}

void
container_remove_process (container_t *self, process_t *p)
{
  void *handle = zlistx_find (self->procs, p);
  if (handle)
    zlistx_delete (self->procs, handle);
  container_view_changed (self);
}

uint32_t
container_count_processes (container_t *self)
{
  uint32_t n = 0;
  for (process_t *p = zlistx_first (self->procs); p; p = zlistx_next (self->procs))
    if (p->state == PROCESS_RUNNING)
      n++;
  return n;
}

bool
container_init_gone (container_t *self)
{
  if (self->state == CONTAINER_EXITING || self->state == CONTAINER_STOPPED)
    return true;
  process_t *init = container_init_process (self);
  return init && process_gone (init);
}

process_launch_t
container_process_launch (container_t *self)
{
  process_launch_t launch = {
    .daemon = self->daemon,
    .container_id = self->id,
    .bundle = self->bundle,
    .runtime = self->runtime,
    .runtime_args = self->runtime_args,
    .no_pivot = self->no_pivot,
    .cb = self->process_cb,
    .owner = self,
    .run_uid = self->owner.uid,
    .run_gid = self->owner.gid,
    .run_groups = self->owner.groups,
  };
  return launch;
}

/* ------------------------------------------------------------------ */
/* Views                                                               */

void
container_view_changed (container_t *self)
{
  free (self->view);
  self->view = NULL;
  self->view_len = 0;
}

/* The Container map minus "pids" (7 entries, so a one-byte fixmap header),
 * as the supervisor caches it. */
static const char *
s_view (container_t *self, size_t *len)
{
  if (self->view == NULL)
    {
      msgpack_sbuffer buf;
      msgpack_sbuffer_init (&buf);
      msgpack_packer pk;
      msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
      msgpack_pack_map (&pk, 7);
      mp_pack_kv_str (&pk, "id", self->id);
      mp_pack_kv_str (&pk, "bundle", self->bundle);
      mp_pack_kv_str (&pk, "status", container_status_name (self));
      mp_pack_str (&pk, "labels");
      mp_pack_strv (&pk, self->labels);
      mp_pack_kv_str (&pk, "runtime", self->runtime);
      mp_pack_kv_int (&pk, "created", self->created);
      mp_pack_str (&pk, "processes");
      msgpack_pack_array (&pk, container_count_processes (self));
      for (process_t *p = zlistx_first (self->procs); p; p = zlistx_next (self->procs))
        if (p->state == PROCESS_RUNNING)
          process_pack_view (p, &pk);
      self->view = buf.data;
      self->view_len = buf.size;
    }
  *len = self->view_len;
  return self->view;
}

/* ------------------------------------------------------------------ */
/* State on disk                                                       */

json_t *
container_json_strv (char *const *v)
{
  json_t *a = json_array ();
  for (; v && *v; v++)
    json_array_append_new (a, json_string (*v));
  return a;
}

static char *
s_state_json (container_t *self)
{
  json_t *j = json_object ();
  json_object_set_new (j, "id", json_string (self->id));
  json_object_set_new (j, "bundle", json_string (self->bundle));
  json_object_set_new (j, "labels", container_json_strv (self->labels));
  json_object_set_new (j, "runtime", json_string (self->runtime));
  json_object_set_new (j, "runtime_args", container_json_strv (self->runtime_args));
  json_object_set_new (j, "no_pivot_root", json_boolean (self->no_pivot));
  if (self->stdin_path)
    json_object_set_new (j, "stdin", json_string (self->stdin_path));
  if (self->stdout_path)
    json_object_set_new (j, "stdout", json_string (self->stdout_path));
  if (self->stderr_path)
    json_object_set_new (j, "stderr", json_string (self->stderr_path));
  /* A restart finishes what a crun restore left (container_restore.c). */
  if (self->restoring_from)
    json_object_set_new (j, "restored_from", json_string (self->restoring_from));
  if (self->owner.uid != 0)
    json_object_set_new (j, "owner",
                         json_pack ("{s:I,s:I,s:s}", "uid", (json_int_t)self->owner.uid, "gid",
                                    (json_int_t)self->owner.gid, "groups",
                                    self->owner.groups ? self->owner.groups : ""));
  json_object_set_new (j, "created", json_integer (self->created));
  json_object_set_new (j, "paused", json_boolean (self->state == CONTAINER_PAUSED));
  char *text = json_dumps (j, JSON_COMPACT);
  json_decref (j);
  return text;
}

/* The first state.json of a container made from a skeleton goes into the
 * empty file the skeleton has for it: no inode is made on the loop. */
static int
s_write_state (container_t *self, const char *path, const char *text, zcd_error_t **err)
{
  if (self->spare_state)
    {
      self->spare_state = false;
      cleanup_free char *made = NULL;
      if (asprintf (&made, "%s/" CONTAINER_DIRS_STATE_FILE, self->dir) >= 0
          && zcd_write_file_replace_into (made, path, text, strlen (text), NULL) == 0)
        return 0;
    }
  return zcd_write_file_replace (path, text, strlen (text), 0600, err);
}

int
container_save_state (container_t *self, zcd_error_t **err_out)
{
  cleanup_free char *text = s_state_json (self);
  if (text && self->saved_state && strcmp (text, self->saved_state) == 0)
    return 0; /* the same bytes are on disk already */
  cleanup_free char *path = NULL;
  cleanup_error zcd_error_t *err = NULL;
  if (text == NULL)
    /* jansson refuses what is not UTF-8: the edge lets none through, so
     * this is ours. */
    zcd_fail (&err, ZCD_E_INTERNAL, "state.json of `%s` cannot be encoded", self->id);
  else if (asprintf (&path, "%s/state.json", self->dir) < 0)
    zcd_fail_errno (&err, ENOMEM, "state.json");
  else if (s_write_state (self, path, text, &err) == 0)
    {
      free (self->saved_state);
      self->saved_state = steal_pointer (&text);
      return 0;
    }
  zcd_state_dir_error (&err);
  log_error ("container %s: state.json: %s", self->id, err->msg);
  if (err_out)
    *err_out = steal_pointer (&err);
  return -1;
}

void
container_discard_dir (container_t *self, const char *dir)
{
  container_dirs_discard (self->daemon->dirs, dir, self->id);
}

/* ------------------------------------------------------------------ */
/* Reports to the supervisor                                           */

static uint32_t
s_init_pid (container_t *self)
{
  process_t *init = container_init_process (self);
  return init ? init->system_pid : 0;
}

void
container_emit (container_t *self, const process_t *p, amsg_event_t *ev)
{
  /* The running operation's doing (an acked event, an exit, is no
   * operation's): its reply follows the event. */
  if (ev->ack == NULL && self->current.op != PROTO_OP_COUNT)
    self->current.emitted = true;
  size_t len;
  const char *view = s_view (self, &len);
  ev->id = self->id;
  ev->bundle = self->bundle;
  ev->has_owner = self->owner.uid != 0;
  ev->owner = self->owner.uid;
  ev->init_pid = s_init_pid (self);
  ev->processes = container_count_processes (self);
  ev->cgroup_procs = self->cgroup_procs;
  if (p)
    {
      ev->pid = p->name;
      ev->has_system_pid = p->system_pid != 0;
      ev->system_pid = p->system_pid;
    }
  /* PROTOCOL.md: a client applying events to a `state` snapshot holds the
   * exact state, so the view is the one after the event. */
  ev->view = (amsg_bin_t){ view, len };
  amsg_event_send (self->daemon->actors, actor_name (self->actor), SUPERVISOR_NAME, ev, NULL);
}

void
container_send_view (container_t *self)
{
  size_t len;
  const char *view = s_view (self, &len);
  /* A restored container publishes no start event: the view is where the
   * supervisor learns its identity and cgroup (`pids` in `state`). */
  amsg_view_t m = {
    .id = self->id,
    .bundle = self->bundle,
    .has_owner = self->owner.uid != 0,
    .owner = self->owner.uid,
    .init_pid = s_init_pid (self),
    .processes = container_count_processes (self),
    .cgroup_procs = self->cgroup_procs,
    .view = { view, len },
  };
  amsg_view_send (self->daemon->actors, actor_name (self->actor), SUPERVISOR_NAME, &m, NULL);
}

void
container_send_started (container_t *self, uint64_t token, const char *etype)
{
  process_t *init = container_init_process (self);
  size_t len;
  const char *view = s_view (self, &len);
  amsg_started_t m = {
    .id = self->id,
    .token = token,
    .ok = true,
    .etype = etype,
    .bundle = self->bundle,
    .has_owner = self->owner.uid != 0,
    .owner = self->owner.uid,
    .has_init_pid = true,
    .init_pid = s_init_pid (self),
    .has_processes = true,
    .processes = container_count_processes (self),
    .pid = init ? init->name : NULL,
    .has_system_pid = init && init->system_pid != 0,
    .system_pid = init ? init->system_pid : 0,
    .cgroup_procs = self->cgroup_procs,
    .view = { view, len },
  };
  amsg_started_send (self->daemon->actors, actor_name (self->actor), SUPERVISOR_NAME, &m, NULL);
}

void
container_send_start_failed (container_t *self, uint64_t token, zcd_code_t code,
                             const char *message)
{
  amsg_started_t m = {
    .id = self->id,
    .token = token,
    .ok = false,
    .has_code = true,
    .code = code,
    .message = message,
  };
  amsg_started_send (self->daemon->actors, actor_name (self->actor), SUPERVISOR_NAME, &m, NULL);
}

void
container_send_gone (container_t *self)
{
  amsg_gone_send (self->daemon->actors, actor_name (self->actor), SUPERVISOR_NAME,
                  &(amsg_gone_t){ .id = self->id }, NULL);
}

void
container_reply (container_t *self, uint64_t token, const zcd_error_t *err,
                 const msgpack_sbuffer *result, bool after_events)
{
  const char *from = actor_name (self->actor);
  if (err)
    zcd_send_reply_error (self->daemon->actors, from, token, err->code, err->msg, after_events);
  else
    zcd_send_reply_ok (self->daemon->actors, from, token, result, after_events);
}
