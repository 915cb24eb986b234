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
}

void
container_stop (container_t *self)
{
  loop_t *loop = self->daemon->loop;
  loop_timer_cancel (loop, self->drain_timer);
  self->drain_timer = NULL;
  loop_timer_cancel (loop, self->restored_timer);
  self->restored_timer = NULL;
  loop_remove (loop, self->oom_watch);
  self->oom_watch = NULL;
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
  if (self->oom_fd >= 0)
    close (self->oom_fd);
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
  free (self->view);
  free (self->saved_state);
  free (self->checkpoint_meta);
  free (self->checkpoint_meta_path);
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

void
container_pack_container (container_t *self, msgpack_packer *pk)
{
  size_t len;
  const char *view = s_view (self, &len);
  msgpack_pack_map (pk, 8);
  pk->callback (pk->data, view + 1, len - 1);
  mp_pack_str (pk, "pids");
  zcd_pack_cgroup_pids (pk, self->cgroup_procs);
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
  json_object_set_new (j, "created", json_integer (self->created));
  json_object_set_new (j, "paused", json_boolean (self->state == CONTAINER_PAUSED));
  char *text = json_dumps (j, JSON_COMPACT);
  json_decref (j);
  return text;
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
  else if (zcd_write_file_replace (path, text, strlen (text), 0600, &err) == 0)
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
  char trash[4096], target[4200];
  snprintf (trash, sizeof trash, "%s/.trash", self->daemon->config->state_dir);
  snprintf (target, sizeof target, "%s/%s.%lld", trash, self->id, (long long)zcd_now_ns ());
  const char *doomed = dir;
  if (zcd_mkdir_p (trash, 0700, NULL) == 0 && rename (dir, target) == 0)
    doomed = target;
  cleanup_error zcd_error_t *err = NULL;
  /* A shim that is still ending may write one more file into it: what
   * remains is swept from .trash at the next start. */
  if (zcd_rm_rf (doomed, &err) < 0)
    log_warn ("container %s: %s (left for the next sweep)", self->id, err->msg);
}

/* ------------------------------------------------------------------ */
/* Reports to the supervisor                                           */

static void
s_send (container_t *self, actor_msg_builder_t *mb)
{
  cleanup_error zcd_error_t *err = NULL;
  if (actor_msg_send (self->daemon->actors, actor_name (self->actor), SUPERVISOR_NAME, mb, &err)
      < 0)
    log_error ("container %s: to supervisor: %s", self->id, err->msg);
}

static void
s_pack_view_field (container_t *self, msgpack_packer *pk)
{
  size_t len;
  const char *view = s_view (self, &len);
  mp_pack_str (pk, "view");
  msgpack_pack_bin (pk, len);
  msgpack_pack_bin_body (pk, view, len);
}

/* What the supervisor keeps besides the view: identity (bundle, init_pid,
 * to route stats and checkpoints), processes, cgroup_procs; 3 or 4
 * entries. */
static size_t
s_table_fields (container_t *self)
{
  return 3 + (self->cgroup_procs ? 1 : 0);
}

static void
s_pack_table_fields (container_t *self, msgpack_packer *pk)
{
  process_t *init = container_init_process (self);
  mp_pack_kv_str (pk, "bundle", self->bundle);
  mp_pack_kv_uint (pk, "init_pid", init ? init->system_pid : 0);
  mp_pack_kv_uint (pk, "processes", container_count_processes (self));
  if (self->cgroup_procs)
    mp_pack_kv_str (pk, "cgroup_procs", self->cgroup_procs);
}

/* An event, with the view as it is after it (PROTOCOL.md: a client applying
 * events to a `state` snapshot holds the exact state).  ack: the exit's
 * process, told "logged" once the event is durable. */
static void
s_emit (container_t *self, const char *etype, const process_t *p, const char *ack)
{
  bool with_status = p && p->state == PROCESS_EXITED;
  bool with_oom = with_status && p->is_init;
  actor_msg_builder_t mb;
  size_t n = 3 + s_table_fields (self) + (p ? 1 : 0) + (p && p->system_pid ? 1 : 0)
             + (with_status ? 1 : 0) + (with_oom ? 1 : 0) + (ack ? 1 : 0);
  actor_msg_begin (&mb, "event", n);
  if (ack)
    mp_pack_kv_str (&mb.pk, "ack", ack);
  mp_pack_kv_str (&mb.pk, "etype", etype);
  mp_pack_kv_str (&mb.pk, "id", self->id);
  s_pack_table_fields (self, &mb.pk);
  if (p)
    mp_pack_kv_str (&mb.pk, "pid", p->name);
  if (p && p->system_pid)
    mp_pack_kv_uint (&mb.pk, "system_pid", p->system_pid);
  if (with_status)
    mp_pack_kv_uint (&mb.pk, "status", (uint64_t)p->status);
  if (with_oom)
    mp_pack_kv_bool (&mb.pk, "oom_killed", self->oom_seen);
  s_pack_view_field (self, &mb.pk);
  s_send (self, &mb);
}

void
container_emit (container_t *self, const char *etype, const process_t *p)
{
  /* The running operation's doing: its reply follows the event. */
  if (self->current.op != PROTO_OP_COUNT)
    self->current.emitted = true;
  s_emit (self, etype, p, NULL);
}

void
container_emit_exit (container_t *self, const process_t *p)
{
  /* An exit is no operation's doing: no reply waits for it. */
  s_emit (self, "exit", p, p->name);
}

void
container_send_view (container_t *self)
{
  actor_msg_builder_t mb;
  actor_msg_begin (&mb, "view", 2 + s_table_fields (self));
  mp_pack_kv_str (&mb.pk, "id", self->id);
  /* A restored container publishes no start event: the view is where the
   * supervisor learns its cgroup (`pids` in `state`). */
  s_pack_table_fields (self, &mb.pk);
  s_pack_view_field (self, &mb.pk);
  s_send (self, &mb);
}

void
container_send_started (container_t *self, uint64_t token, bool ok)
{
  actor_msg_builder_t mb;
  actor_msg_begin (&mb, "started", 3);
  mp_pack_kv_str (&mb.pk, "id", self->id);
  mp_pack_kv_bool (&mb.pk, "ok", ok);
  mp_pack_kv_uint (&mb.pk, "token", token);
  s_send (self, &mb);
}

void
container_send_gone (container_t *self)
{
  actor_msg_builder_t mb;
  actor_msg_begin (&mb, "gone", 1);
  mp_pack_kv_str (&mb.pk, "id", self->id);
  s_send (self, &mb);
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
