/* The container actor's model and operations (see container.h). */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jansson.h>

#include "actors/container.h"
#include "core/bundle.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"
#include "core/shimproto.h"

static char *
s_strdup0 (const char *s)
{
  return s ? strdup (s) : NULL;
}

static char **
s_strv_dup (char *const *v)
{
  size_t n = mp_strv_len (v);
  char **out = calloc (n + 1, sizeof *out);
  for (size_t i = 0; i < n; i++)
    out[i] = strdup (v[i]);
  return out;
}

static char **
s_strv_concat (char *const *a, char *const *b)
{
  size_t na = mp_strv_len (a), nb = mp_strv_len (b);
  char **out = calloc (na + nb + 1, sizeof *out);
  for (size_t i = 0; i < na; i++)
    out[i] = strdup (a[i]);
  for (size_t i = 0; i < nb; i++)
    out[na + i] = strdup (b[i]);
  return out;
}

/* ------------------------------------------------------------------ */
/* Processes                                                           */

void
container_proc_free (container_proc_t *p)
{
  free (p->name);
  mp_strv_free (p->args);
  mp_strv_free (p->env);
  free (p->cwd);
  free (p->additional_gids);
  mp_strv_free (p->capabilities);
  free (p->rlimits);
  free (p->apparmor_profile);
  free (p->selinux_label);
  free (p->stdin_path);
  free (p->stdout_path);
  free (p->stderr_path);
  free (p);
}

container_proc_t *
container_find_proc (container_t *self, const char *name)
{
  for (container_proc_t *p = self->procs; p; p = p->next)
    if (strcmp (p->name, name) == 0)
      return p;
  return NULL;
}

void
container_remove_proc (container_t *self, container_proc_t *p)
{
  for (container_proc_t **pp = &self->procs; *pp; pp = &(*pp)->next)
    if (*pp == p)
      {
        *pp = p->next;
        container_proc_free (p);
        return;
      }
}

uint32_t
container_count_processes (const container_t *self)
{
  uint32_t n = 0;
  for (container_proc_t *p = self->procs; p; p = p->next)
    if (p->started)
      n++;
  return n;
}

void
container_proc_append (container_t *self, container_proc_t *p)
{
  container_proc_t **pp = &self->procs;
  while (*pp)
    pp = &(*pp)->next;
  *pp = p;
}

static void
s_pack_rlimits_from_bundle (container_proc_t *p, const bundle_info_t *info)
{
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
  msgpack_pack_array (&pk, info->n_rlimits);
  for (size_t i = 0; i < info->n_rlimits; i++)
    {
      msgpack_pack_map (&pk, 3);
      mp_pack_kv_str (&pk, "type", info->rlimits[i].type);
      mp_pack_kv_uint (&pk, "soft", info->rlimits[i].soft);
      mp_pack_kv_uint (&pk, "hard", info->rlimits[i].hard);
    }
  p->rlimits = buf.data;
  p->rlimits_len = buf.size;
}

container_proc_t *
container_init_proc_from_bundle (container_t *self, const bundle_info_t *info)
{
  container_proc_t *p = calloc (1, sizeof *p);
  p->name = strdup ("init");
  p->is_init = true;
  p->terminal = info->terminal;
  p->args = s_strv_dup (info->args);
  p->env = s_strv_dup (info->env);
  p->cwd = s_strdup0 (info->cwd ? info->cwd : "/");
  p->uid = info->uid;
  p->gid = info->gid;
  if (info->n_additional_gids)
    {
      p->additional_gids = calloc (info->n_additional_gids, sizeof (uint32_t));
      memcpy (p->additional_gids, info->additional_gids,
              info->n_additional_gids * sizeof (uint32_t));
      p->n_additional_gids = info->n_additional_gids;
    }
  p->capabilities = s_strv_dup (info->capabilities);
  s_pack_rlimits_from_bundle (p, info);
  p->no_new_privileges = info->no_new_privileges;
  p->apparmor_profile = s_strdup0 (info->apparmor_profile);
  p->selinux_label = s_strdup0 (info->selinux_label);
  p->stdin_path = s_strdup0 (self->stdin_path);
  p->stdout_path = s_strdup0 (self->stdout_path);
  p->stderr_path = s_strdup0 (self->stderr_path);
  return p;
}

/* ------------------------------------------------------------------ */
/* Views                                                               */

static void
s_pack_user (msgpack_packer *pk, const container_proc_t *p)
{
  msgpack_pack_map (pk, 3);
  mp_pack_kv_uint (pk, "uid", p->uid);
  mp_pack_kv_uint (pk, "gid", p->gid);
  mp_pack_str (pk, "additional_gids");
  msgpack_pack_array (pk, p->n_additional_gids);
  for (size_t i = 0; i < p->n_additional_gids; i++)
    msgpack_pack_uint32 (pk, p->additional_gids[i]);
}

static void
s_pack_process (msgpack_packer *pk, const container_proc_t *p)
{
  msgpack_pack_map (pk, 15);
  mp_pack_kv_str (pk, "pid", p->name);
  mp_pack_kv_uint (pk, "system_pid", p->system_pid);
  mp_pack_str (pk, "args");
  mp_pack_strv (pk, p->args);
  mp_pack_str (pk, "env");
  mp_pack_strv (pk, p->env);
  mp_pack_kv_str (pk, "cwd", p->cwd ? p->cwd : "/");
  mp_pack_kv_bool (pk, "terminal", p->terminal);
  mp_pack_str (pk, "user");
  s_pack_user (pk, p);
  mp_pack_kv_str (pk, "stdin", p->stdin_path ? p->stdin_path : "");
  mp_pack_kv_str (pk, "stdout", p->stdout_path ? p->stdout_path : "");
  mp_pack_kv_str (pk, "stderr", p->stderr_path ? p->stderr_path : "");
  mp_pack_str (pk, "capabilities");
  mp_pack_strv (pk, p->capabilities);
  mp_pack_str (pk, "rlimits");
  if (p->rlimits)
    pk->callback (pk->data, p->rlimits, p->rlimits_len);
  else
    msgpack_pack_array (pk, 0);
  mp_pack_kv_bool (pk, "no_new_privileges", p->no_new_privileges);
  mp_pack_kv_str (pk, "apparmor_profile", p->apparmor_profile ? p->apparmor_profile : "");
  mp_pack_kv_str (pk, "selinux_label", p->selinux_label ? p->selinux_label : "");
}

static void
s_pack_view_entries (container_t *self, msgpack_packer *pk)
{
  mp_pack_kv_str (pk, "id", self->id);
  mp_pack_kv_str (pk, "bundle", self->bundle);
  mp_pack_kv_str (pk, "status", container_status_name (self));
  mp_pack_str (pk, "labels");
  mp_pack_strv (pk, self->labels);
  mp_pack_kv_str (pk, "runtime", self->runtime);
  mp_pack_kv_int (pk, "created", self->created);
  mp_pack_str (pk, "processes");
  msgpack_pack_array (pk, container_count_processes (self));
  for (container_proc_t *p = self->procs; p; p = p->next)
    if (p->started)
      s_pack_process (pk, p);
}

void
container_pack_view (container_t *self, msgpack_sbuffer *out)
{
  msgpack_packer pk;
  msgpack_packer_init (&pk, out, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 7);
  s_pack_view_entries (self, &pk);
}

void
container_pack_container (container_t *self, msgpack_packer *pk)
{
  msgpack_pack_map (pk, 8);
  s_pack_view_entries (self, pk);
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

int
container_save_state (container_t *self, zcd_error_t **err_out)
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
  json_object_set_new (j, "paused", json_boolean (self->paused));
  cleanup_free char *text = json_dumps (j, JSON_COMPACT);
  json_decref (j);
  cleanup_free char *path = NULL;
  cleanup_error zcd_error_t *err = NULL;
  if (text == NULL)
    /* jansson refuses what is not UTF-8: the edge lets none through, so
     * this is ours. */
    zcd_fail (&err, ZCD_E_INTERNAL, "state.json of `%s` cannot be encoded", self->id);
  else if (asprintf (&path, "%s/state.json", self->dir) < 0)
    zcd_fail_errno (&err, ENOMEM, "state.json");
  else
    zcd_write_file_atomic (path, text, strlen (text), 0600, &err);
  if (err == NULL)
    return 0;
  zcd_state_dir_error (&err);
  log_error ("container %s: state.json: %s", self->id, err->msg);
  if (err_out)
    *err_out = steal_pointer (&err);
  return -1;
}

/* ------------------------------------------------------------------ */
/* Creation                                                            */

void
container_free (container_t *self)
{
  loop_t *loop = self->daemon->loop;
  loop_timer_cancel (loop, self->drain_timer);
  loop_remove (loop, self->oom_watch);
  if (self->oom_fd >= 0)
    close (self->oom_fd);
  if (self->pending_call)
    child_forget (self->daemon->children, self->pending_call);
  free (self->pending_call_arg);
  while (self->procs)
    {
      container_proc_t *p = self->procs;
      self->procs = p->next;
      container_proc_free (p);
    }
  while (self->ops_head)
    {
      container_op_t *op = self->ops_head;
      self->ops_head = op->next;
      free (op->name);
      free (op->body);
      free (op);
    }
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
  free (self->checkpoint_meta);
  free (self->checkpoint_meta_path);
  free (self);
}

container_t *
container_new_from_request (zcd_daemon_t *daemon, const msgpack_object *body, zcd_error_t **err)
{
  const zcd_config_t *cfg = daemon->config;
  container_t *self = calloc (1, sizeof *self);
  self->daemon = daemon;
  self->oom_fd = -1;
  self->id = mp_get_strdup (body, "id");
  self->bundle = mp_get_strdup (body, "bundle");
  self->labels = mp_get_strv (body, "labels");
  if (self->labels == NULL)
    self->labels = calloc (1, sizeof (char *));
  self->runtime = mp_get_strdup (body, "runtime");
  if (self->runtime == NULL)
    self->runtime = strdup (cfg->runtime);
  char **extra = mp_get_strv (body, "runtime_args");
  self->runtime_args = s_strv_concat (cfg->runtime_args, extra);
  mp_strv_free (extra);
  self->no_pivot = mp_get_bool (body, "no_pivot_root", false);
  self->stdin_path = mp_get_strdup (body, "stdin");
  self->stdout_path = mp_get_strdup (body, "stdout");
  self->stderr_path = mp_get_strdup (body, "stderr");
  cleanup_free char *checkpoint = mp_get_strdup (body, "checkpoint");
  if (checkpoint)
    {
      cleanup_free char *cdir = mp_get_strdup (body, "checkpoint_dir");
      if (asprintf (&self->restoring_from, "%s/%s", cdir ? cdir : self->bundle, checkpoint) < 0)
        self->restoring_from = NULL;
      if (cdir == NULL)
        {
          free (self->restoring_from);
          if (asprintf (&self->restoring_from, "%s/checkpoints/%s", self->bundle, checkpoint) < 0)
            self->restoring_from = NULL;
        }
    }
  self->created = zcd_now_ns ();
  self->dir = zcd_container_dir (cfg, self->id);
  bundle_info_t *info = NULL;
  if (bundle_load (self->bundle, &info, err) < 0)
    {
      container_free (self);
      return NULL;
    }
  container_proc_append (self, container_init_proc_from_bundle (self, info));
  bundle_info_destroy (&info);
  /* Made fresh, never reused: an existing directory is an earlier
   * container's (the supervisor holds a create until that one is gone). */
  if (zcd_mkdir (self->dir, 0700, err) < 0)
    {
      if (*err && (*err)->code == ZCD_E_ALREADY_EXISTS)
        {
          zcd_error_free (err);
          zcd_fail (err, ZCD_E_ALREADY_EXISTS,
                    "the state directory of an earlier container `%s` is still there", self->id);
        }
      container_free (self);
      return NULL;
    }
  cleanup_free char *procs = NULL;
  cleanup_free char *init_dir = zcd_process_dir (cfg, self->id, "init");
  if (asprintf (&procs, "%s/" ZCD_PROCS_DIR, self->dir) < 0 || init_dir == NULL
      || zcd_mkdir (procs, 0700, err) < 0 || zcd_mkdir (init_dir, 0700, err) < 0)
    {
      zcd_state_dir_error (err);
      zcd_rm_rf (self->dir, NULL);
      container_free (self);
      return NULL;
    }
  return self;
}

process_info_t
container_process_info (container_t *self, container_proc_t *p)
{
  process_info_t info = {
    .container_id = self->id,
    .container_actor = actor_name (self->actor),
    .pid_name = p->name,
    .bundle = self->bundle,
    .runtime = self->runtime,
    .runtime_args = self->runtime_args,
    .no_pivot = self->no_pivot,
    .terminal = p->terminal,
    .stdin_path = p->stdin_path,
    .stdout_path = p->stdout_path,
    .stderr_path = p->stderr_path,
    .checkpoint_dir = p->is_init ? self->restoring_from : NULL,
    .is_init = p->is_init,
  };
  return info;
}

int
container_start_init (container_t *self, zcd_error_t **err)
{
  container_proc_t *init = container_find_proc (self, "init");
  process_info_t info = container_process_info (self, init);
  return process_actor_spawn (self->daemon, &info, err) ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* Operations                                                          */

void
container_fail_op (container_t *self, uint64_t token, zcd_code_t code, const char *fmt, ...)
{
  zcd_error_t *err = NULL;
  va_list ap;
  va_start (ap, fmt);
  zcd_failv (&err, code, 0, fmt, ap);
  va_end (ap);
  container_op_done (self, token, err);
  zcd_error_free (&err);
}

static bool
s_accepts_ops (container_t *self, uint64_t token)
{
  if (self->phase != CONTAINER_RUNNING || self->init_exited)
    {
      container_fail_op (self, token, ZCD_E_INVALID_STATE, "container `%s` is %s", self->id,
                         self->init_exited ? "stopping" : "not running yet");
      return false;
    }
  return true;
}

void
container_run_op (container_t *self, container_op_t *op)
{
  msgpack_unpacked unpacked;
  msgpack_unpacked_init (&unpacked);
  if (op->body == NULL || mp_unpack (op->body, op->body_len, &unpacked, NULL) < 0)
    {
      container_fail_op (self, op->token, ZCD_E_INTERNAL, "undecodable forwarded request");
      msgpack_unpacked_destroy (&unpacked);
      return;
    }
  const msgpack_object *body = &unpacked.data;
  const char *name = op->name ? op->name : "";
  if (strcmp (name, "signal") == 0)
    {
      if (self->phase == CONTAINER_CREATING)
        container_fail_op (self, op->token, ZCD_E_INVALID_STATE,
                           "container `%s` is not running yet", self->id);
      else
        container_op_signal (self, op->token, body);
    }
  else if (strcmp (name, "update") == 0)
    {
      if (s_accepts_ops (self, op->token))
        container_op_update (self, op->token, body);
    }
  else if (strcmp (name, "update_process") == 0)
    container_op_update_process (self, op->token, body);
  else if (strcmp (name, "checkpoint_create") == 0)
    {
      if (s_accepts_ops (self, op->token))
        container_op_checkpoint (self, op->token, body);
    }
  else if (strcmp (name, "exec") == 0)
    {
      if (s_accepts_ops (self, op->token))
        container_op_exec (self, op->token, body);
    }
  else
    container_fail_op (self, op->token, ZCD_E_UNKNOWN_OP, "container op `%s`", name);
  msgpack_unpacked_destroy (&unpacked);
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
