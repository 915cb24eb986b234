/* Typed calls: one body builder per operation of PROTOCOL.md section 4. */
#include "lib/zcd_private.h"

#include <errno.h>
#include <stdlib.h>

int
zcd_client_request (zcd_client_t *self, zcd_body_t *body, zcd_reply_t **reply)
{
  if (reply)
    *reply = NULL;
  size_t len = 0;
  const char *data = zcd_body_data (body, &len);
  if (data == NULL)
    {
      zcd_client_set_error (self, "malformed request body");
      errno = EINVAL;
      return -1;
    }
  zcd_reply_t *got = NULL;
  if (zcd_client_call (self, data, len, self ? zcd_client_timeout (self) : -1, &got) < 0)
    return -1;
  if (zcd_reply_ok (got))
    {
      if (reply)
        *reply = got;
      else
        zcd_reply_destroy (&got);
      return 0;
    }
  char *text = zcd_reply_error_text (got);
  zcd_client_set_error (self, "%s", text ? text : "internal: reply without ok");
  free (text);
  if (reply)
    *reply = got;
  else
    zcd_reply_destroy (&got);
  errno = EREMOTEIO;
  return -1;
}

/* Send body and destroy it: every typed call ends here. */
static int
s_finish (zcd_client_t *self, zcd_body_t *body, zcd_reply_t **reply)
{
  if (body == NULL)
    {
      errno = ENOMEM;
      return -1;
    }
  int rc = zcd_client_request (self, body, reply);
  int saved = errno;
  zcd_body_destroy (&body);
  errno = saved;
  return rc;
}

static void
s_opt_str (zcd_body_t *body, const char *key, const char *value)
{
  if (value)
    zcd_body_str (body, key, value);
}

static void
s_opt_strv (zcd_body_t *body, const char *key, const char *const *v)
{
  if (v)
    zcd_body_strv (body, key, v);
}

static void
s_opt_uint (zcd_body_t *body, const char *key, uint64_t value)
{
  if (value != ZCD_UNSET)
    zcd_body_uint (body, key, value);
}

static void
s_opt_log (zcd_body_t *body, const zcd_log_opts_t *log)
{
  if (log->path == NULL)
    return;
  zcd_body_map_open (body, "log");
  zcd_body_str (body, "path", log->path);
  if (log->max_bytes)
    zcd_body_uint (body, "max_bytes", log->max_bytes);
  if (log->max_files)
    zcd_body_uint (body, "max_files", log->max_files);
  zcd_body_close (body);
}

int
zcd_client_version (zcd_client_t *self, zcd_reply_t **reply)
{
  return s_finish (self, zcd_body_new ("version"), reply);
}

int
zcd_client_state (zcd_client_t *self, const char *id, zcd_reply_t **reply)
{
  zcd_body_t *body = zcd_body_new ("state");
  s_opt_str (body, "id", id);
  return s_finish (self, body, reply);
}

int
zcd_client_metrics (zcd_client_t *self, zcd_reply_t **reply)
{
  return s_finish (self, zcd_body_new ("metrics"), reply);
}

zcd_body_t *
zcd_body_for_create (const char *id, const char *bundle, const zcd_create_opts_t *opts)
{
  zcd_body_t *body = zcd_body_new ("create");
  zcd_body_str (body, "id", id);
  zcd_body_str (body, "bundle", bundle);
  if (opts)
    {
      s_opt_strv (body, "labels", opts->labels);
      s_opt_str (body, "runtime", opts->runtime);
      s_opt_strv (body, "runtime_args", opts->runtime_args);
      s_opt_str (body, "stdin", opts->stdin_path);
      s_opt_str (body, "stdout", opts->stdout_path);
      s_opt_str (body, "stderr", opts->stderr_path);
      if (opts->no_pivot_root)
        zcd_body_bool (body, "no_pivot_root", true);
      s_opt_str (body, "checkpoint", opts->checkpoint);
      s_opt_str (body, "checkpoint_dir", opts->checkpoint_dir);
      s_opt_log (body, &opts->log);
    }
  return body;
}

int
zcd_client_create (zcd_client_t *self, const char *id, const char *bundle,
                   const zcd_create_opts_t *opts, zcd_reply_t **reply)
{
  return s_finish (self, zcd_body_for_create (id, bundle, opts), reply);
}

static void
s_pack_user (zcd_body_t *body, const zcd_exec_opts_t *opts)
{
  zcd_body_map_open (body, "user");
  zcd_body_uint (body, "uid", opts->uid);
  zcd_body_uint (body, "gid", opts->gid);
  zcd_body_array_open (body, "additional_gids");
  for (size_t i = 0; i < opts->n_additional_gids; i++)
    zcd_body_uint (body, NULL, opts->additional_gids[i]);
  zcd_body_close (body);
  zcd_body_close (body);
}

int
zcd_client_exec (zcd_client_t *self, const char *id, const char *pid, const char *const *args,
                 const zcd_exec_opts_t *opts, zcd_reply_t **reply)
{
  zcd_body_t *body = zcd_body_new ("exec");
  zcd_body_str (body, "id", id);
  zcd_body_str (body, "pid", pid);
  zcd_body_strv (body, "args", args);
  if (opts)
    {
      s_opt_strv (body, "env", opts->env);
      s_opt_str (body, "cwd", opts->cwd);
      if (opts->terminal)
        zcd_body_bool (body, "terminal", true);
      if (opts->set_user)
        s_pack_user (body, opts);
      s_opt_strv (body, "capabilities", opts->capabilities);
      if (opts->no_new_privileges)
        zcd_body_bool (body, "no_new_privileges", true);
      s_opt_str (body, "apparmor_profile", opts->apparmor_profile);
      s_opt_str (body, "selinux_label", opts->selinux_label);
      s_opt_str (body, "stdin", opts->stdin_path);
      s_opt_str (body, "stdout", opts->stdout_path);
      s_opt_str (body, "stderr", opts->stderr_path);
      s_opt_log (body, &opts->log);
    }
  return s_finish (self, body, reply);
}

zcd_body_t *
zcd_body_for_signal (const char *id, const char *pid, int signal, bool all)
{
  zcd_body_t *body = zcd_body_new ("signal");
  zcd_body_str (body, "id", id);
  zcd_body_str (body, "pid", pid ? pid : "init");
  zcd_body_int (body, "signal", signal);
  if (all)
    zcd_body_bool (body, "all", true);
  return body;
}

int
zcd_client_signal (zcd_client_t *self, const char *id, const char *pid, int signal, bool all,
                   zcd_reply_t **reply)
{
  return s_finish (self, zcd_body_for_signal (id, pid, signal, all), reply);
}

static zcd_body_t *
s_status_body (const char *id, const char *status)
{
  zcd_body_t *body = zcd_body_new ("update");
  zcd_body_str (body, "id", id);
  zcd_body_str (body, "status", status);
  return body;
}

zcd_body_t *
zcd_body_for_pause (const char *id)
{
  return s_status_body (id, "paused");
}

zcd_body_t *
zcd_body_for_resume (const char *id)
{
  return s_status_body (id, "running");
}

int
zcd_client_pause (zcd_client_t *self, const char *id, zcd_reply_t **reply)
{
  return s_finish (self, zcd_body_for_pause (id), reply);
}

int
zcd_client_resume (zcd_client_t *self, const char *id, zcd_reply_t **reply)
{
  return s_finish (self, zcd_body_for_resume (id), reply);
}

void
zcd_resources_init (zcd_resources_t *res)
{
  res->blkio_weight = res->cpu_shares = res->cpu_period = res->cpu_quota = ZCD_UNSET;
  res->memory_limit = res->memory_swap = res->memory_reservation = ZCD_UNSET;
  res->kernel_memory_limit = res->kernel_tcp_memory_limit = res->pids_limit = ZCD_UNSET;
  res->cpuset_cpus = res->cpuset_mems = NULL;
}

int
zcd_client_update (zcd_client_t *self, const char *id, const zcd_resources_t *res,
                   zcd_reply_t **reply)
{
  zcd_body_t *body = zcd_body_new ("update");
  zcd_body_str (body, "id", id);
  if (res)
    {
      zcd_body_map_open (body, "resources");
      s_opt_uint (body, "blkio_weight", res->blkio_weight);
      s_opt_uint (body, "cpu_shares", res->cpu_shares);
      s_opt_uint (body, "cpu_period", res->cpu_period);
      s_opt_uint (body, "cpu_quota", res->cpu_quota);
      s_opt_str (body, "cpuset_cpus", res->cpuset_cpus);
      s_opt_str (body, "cpuset_mems", res->cpuset_mems);
      s_opt_uint (body, "memory_limit", res->memory_limit);
      s_opt_uint (body, "memory_swap", res->memory_swap);
      s_opt_uint (body, "memory_reservation", res->memory_reservation);
      s_opt_uint (body, "kernel_memory_limit", res->kernel_memory_limit);
      s_opt_uint (body, "kernel_tcp_memory_limit", res->kernel_tcp_memory_limit);
      s_opt_uint (body, "pids_limit", res->pids_limit);
      zcd_body_close (body);
    }
  return s_finish (self, body, reply);
}

int
zcd_client_close_stdin (zcd_client_t *self, const char *id, const char *pid, zcd_reply_t **reply)
{
  zcd_body_t *body = zcd_body_new ("update_process");
  zcd_body_str (body, "id", id);
  zcd_body_str (body, "pid", pid ? pid : "init");
  zcd_body_bool (body, "close_stdin", true);
  return s_finish (self, body, reply);
}

int
zcd_client_resize (zcd_client_t *self, const char *id, const char *pid, uint32_t width,
                   uint32_t height, zcd_reply_t **reply)
{
  zcd_body_t *body = zcd_body_new ("update_process");
  zcd_body_str (body, "id", id);
  zcd_body_str (body, "pid", pid ? pid : "init");
  zcd_body_uint (body, "width", width);
  zcd_body_uint (body, "height", height);
  return s_finish (self, body, reply);
}

int
zcd_client_stats (zcd_client_t *self, const char *const *ids, zcd_reply_t **reply)
{
  zcd_body_t *body = zcd_body_new ("stats");
  if (ids && ids[0] && !ids[1])
    zcd_body_str (body, "id", ids[0]);
  else if (ids && ids[0])
    zcd_body_strv (body, "ids", ids);
  return s_finish (self, body, reply);
}

int
zcd_client_checkpoint_create (zcd_client_t *self, const char *id, const char *name,
                              const zcd_checkpoint_opts_t *opts, zcd_reply_t **reply)
{
  zcd_body_t *body = zcd_body_new ("checkpoint_create");
  zcd_body_str (body, "id", id);
  zcd_body_map_open (body, "checkpoint");
  zcd_body_str (body, "name", name);
  if (opts)
    {
      zcd_body_bool (body, "exit", opts->exit);
      zcd_body_bool (body, "tcp", opts->tcp);
      zcd_body_bool (body, "unix_sockets", opts->unix_sockets);
      zcd_body_bool (body, "shell", opts->shell);
      s_opt_strv (body, "empty_ns", opts->empty_ns);
    }
  zcd_body_close (body);
  if (opts)
    s_opt_str (body, "checkpoint_dir", opts->checkpoint_dir);
  return s_finish (self, body, reply);
}

int
zcd_client_checkpoint_list (zcd_client_t *self, const char *id, const char *checkpoint_dir,
                            zcd_reply_t **reply)
{
  zcd_body_t *body = zcd_body_new ("checkpoint_list");
  s_opt_str (body, "id", id);
  s_opt_str (body, "checkpoint_dir", checkpoint_dir);
  return s_finish (self, body, reply);
}

int
zcd_client_checkpoint_delete (zcd_client_t *self, const char *id, const char *checkpoint_dir,
                              const char *name, zcd_reply_t **reply)
{
  zcd_body_t *body = zcd_body_new ("checkpoint_delete");
  s_opt_str (body, "id", id);
  s_opt_str (body, "checkpoint_dir", checkpoint_dir);
  zcd_body_str (body, "name", name);
  return s_finish (self, body, reply);
}

int
zcd_client_events (zcd_client_t *self, const char *id, uint64_t since_seq,
                   zcd_partial_fn *on_event, void *arg, zcd_reply_t **reply)
{
  if (reply)
    *reply = NULL;
  zcd_body_t *body = zcd_body_new ("events");
  if (body == NULL)
    {
      errno = ENOMEM;
      return -1;
    }
  zcd_body_uint (body, "since_seq", since_seq);
  s_opt_str (body, "id", id);
  size_t len = 0;
  const char *data = zcd_body_data (body, &len);
  zcd_reply_t *got = NULL;
  int rc = zcd_client_call_stream (self, data, len, zcd_client_timeout (self), on_event, arg, &got);
  zcd_body_destroy (&body);
  if (rc < 0)
    return -1;
  if (!zcd_reply_ok (got))
    {
      const char *code = zcd_reply_error_code (got);
      const char *message = zcd_reply_error_message (got);
      zcd_client_set_error (self, "%s: %s", code ? code : "internal", message ? message : "");
      rc = -1;
      errno = EREMOTEIO;
    }
  if (reply)
    *reply = got;
  else
    zcd_reply_destroy (&got);
  return rc;
}
