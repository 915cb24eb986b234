/* exec: a new process in a running container (PROTOCOL.md `exec`). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "actors/container.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

/* ------------------------------------------------------------------ */
/* exec                                                                */

/* The OCI process spec the runtime gets (`runtime exec --process`). */
static json_t *
s_oci_process (const container_proc_t *p, const msgpack_object *body)
{
  json_t *j = json_object ();
  json_object_set_new (j, "terminal", json_boolean (p->terminal));
  json_t *user = json_pack ("{s:I,s:I}", "uid", (json_int_t) p->uid, "gid", (json_int_t) p->gid);
  if (p->n_additional_gids)
    {
      json_t *gids = json_array ();
      for (size_t i = 0; i < p->n_additional_gids; i++)
        json_array_append_new (gids, json_integer (p->additional_gids[i]));
      json_object_set_new (user, "additionalGids", gids);
    }
  json_object_set_new (j, "user", user);
  json_object_set_new (j, "args", container_json_strv (p->args));
  json_object_set_new (j, "env", container_json_strv (p->env));
  json_object_set_new (j, "cwd", json_string (p->cwd));
  if (p->capabilities && p->capabilities[0])
    {
      json_t *caps = json_object ();
      const char *sets[] = { "bounding", "effective", "inheritable", "permitted", "ambient" };
      for (int i = 0; i < 5; i++)
        json_object_set_new (caps, sets[i], container_json_strv (p->capabilities));
      json_object_set_new (j, "capabilities", caps);
    }
  const msgpack_object *rl = mp_map_get (body, "rlimits");
  if (rl && rl->type == MSGPACK_OBJECT_ARRAY)
    {
      json_t *arr = json_array ();
      for (uint32_t i = 0; i < rl->via.array.size; i++)
        {
          const msgpack_object *e = &rl->via.array.ptr[i];
          cleanup_free char *type = mp_get_strdup (e, "type");
          json_array_append_new (arr, json_pack ("{s:s,s:I,s:I}", "type", type ? type : "",
                                                 "soft", (json_int_t) mp_get_uint (e, "soft", 0),
                                                 "hard", (json_int_t) mp_get_uint (e, "hard", 0)));
        }
      json_object_set_new (j, "rlimits", arr);
    }
  json_object_set_new (j, "noNewPrivileges", json_boolean (p->no_new_privileges));
  if (p->apparmor_profile)
    json_object_set_new (j, "apparmorProfile", json_string (p->apparmor_profile));
  if (p->selinux_label)
    json_object_set_new (j, "selinuxLabel", json_string (p->selinux_label));
  return j;
}

container_proc_t *
container_exec_proc_from_request (const msgpack_object *body)
{
  container_proc_t *p = calloc (1, sizeof *p);
  p->name = mp_get_strdup (body, "pid");
  p->args = mp_get_strv (body, "args");
  p->env = mp_get_strv (body, "env");
  if (p->env == NULL)
    p->env = calloc (1, sizeof (char *));
  p->cwd = mp_get_strdup (body, "cwd");
  if (p->cwd == NULL)
    p->cwd = strdup ("/");
  p->terminal = mp_get_bool (body, "terminal", false);
  const msgpack_object *user = mp_map_get (body, "user");
  if (user)
    {
      p->uid = (uint32_t) mp_get_uint (user, "uid", 0);
      p->gid = (uint32_t) mp_get_uint (user, "gid", 0);
      const msgpack_object *gids = mp_map_get (user, "additional_gids");
      if (gids && gids->type == MSGPACK_OBJECT_ARRAY && gids->via.array.size)
        {
          p->n_additional_gids = gids->via.array.size;
          p->additional_gids = calloc (p->n_additional_gids, sizeof (uint32_t));
          for (size_t i = 0; i < p->n_additional_gids; i++)
            {
              uint64_t v = 0;
              mp_as_uint (&gids->via.array.ptr[i], &v);
              p->additional_gids[i] = (uint32_t) v;
            }
        }
    }
  p->capabilities = mp_get_strv (body, "capabilities");
  if (p->capabilities == NULL)
    p->capabilities = calloc (1, sizeof (char *));
  const msgpack_object *rl = mp_map_get (body, "rlimits");
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
  if (rl)
    msgpack_pack_object (&pk, *rl);
  else
    msgpack_pack_array (&pk, 0);
  p->rlimits = buf.data;
  p->rlimits_len = buf.size;
  p->no_new_privileges = mp_get_bool (body, "no_new_privileges", false);
  p->apparmor_profile = mp_get_strdup (body, "apparmor_profile");
  p->selinux_label = mp_get_strdup (body, "selinux_label");
  p->stdin_path = mp_get_strdup (body, "stdin");
  p->stdout_path = mp_get_strdup (body, "stdout");
  p->stderr_path = mp_get_strdup (body, "stderr");
  return p;
}

void
container_op_exec (container_t *self, uint64_t token, const msgpack_object *body)
{
  cleanup_free char *pid = mp_get_strdup (body, "pid");
  if (self->paused)
    {
      container_fail_op (self, token, ZCD_E_INVALID_STATE, "container `%s` is paused", self->id);
      return;
    }
  if (container_find_proc (self, pid))
    {
      container_fail_op (self, token, ZCD_E_ALREADY_EXISTS, "process `%s` already exists in `%s`", pid,
                 self->id);
      return;
    }
  cleanup_error zcd_error_t *path_err = NULL;
  if (zcd_check_stdio_paths (self->daemon->config, body, &path_err) < 0)
    {
      container_fail_op (self, token, path_err->code, "%s", path_err->msg);
      return;
    }
  container_proc_t *p = container_exec_proc_from_request (body);
  p->token = token;
  cleanup_free char *dir = zcd_process_dir (self->daemon->config, self->id, pid);
  cleanup_free char *spec_path = NULL;
  cleanup_error zcd_error_t *err = NULL;
  json_t *spec = s_oci_process (p, body);
  cleanup_free char *text = json_dumps (spec, JSON_COMPACT);
  json_decref (spec);
  /* The request itself is kept too: after a restart it gives back the
   * process's `Process` view (stdio paths included). */
  msgpack_sbuffer saved;
  msgpack_sbuffer_init (&saved);
  msgpack_packer spk;
  msgpack_packer_init (&spk, &saved, msgpack_sbuffer_write);
  msgpack_pack_object (&spk, *body);
  cleanup_free char *request_path = NULL;
  if (zcd_mkdir (dir, 0700, &err) < 0)
    {
      msgpack_sbuffer_destroy (&saved);
      container_proc_free (p);
      zcd_state_dir_error (&err);
      container_fail_op (self, token, err->code, "exec `%s`: %s", pid, err->msg);
      return;
    }
  int rc = 0;
  if (text == NULL)
    rc = zcd_fail (&err, ZCD_E_INTERNAL, "process spec cannot be encoded");
  else if (asprintf (&request_path, "%s/request.msgpack", dir) < 0
           || asprintf (&spec_path, "%s/process.json", dir) < 0)
    rc = zcd_fail_errno (&err, ENOMEM, "exec");
  else if (zcd_write_file_atomic (request_path, saved.data, saved.size, 0600, &err) < 0
           || zcd_write_file_atomic (spec_path, text, strlen (text), 0600, &err) < 0)
    rc = -1;
  msgpack_sbuffer_destroy (&saved);
  if (rc < 0)
    {
      container_proc_free (p);
      /* The directory was made just above, for this request. */
      zcd_rm_rf (dir, NULL);
      zcd_state_dir_error (&err);
      container_fail_op (self, token, err->code, "exec `%s`: %s", pid, err->msg);
      return;
    }
  container_proc_append (self, p);
  process_info_t info = container_process_info (self, p);
  if (process_actor_spawn (self->daemon, &info, &err) == NULL)
    {
      container_remove_proc (self, p);
      zcd_rm_rf (dir, NULL);
      zcd_state_dir_error (&err);
      container_fail_op (self, token, err ? err->code : ZCD_E_INTERNAL, "exec: %s",
                         err ? err->msg : "?");
      return;
    }
  /* The reply waits for process-started / process-failed; the container's
   * next operation waits with it (one at a time). */
}

bool
container_exec_must_wait (container_t *self, const container_op_t *op)
{
  if (op->name == NULL || strcmp (op->name, "exec") != 0 || op->body == NULL)
    return false;
  msgpack_unpacked m;
  msgpack_unpacked_init (&m);
  bool wait = false;
  if (mp_unpack (op->body, op->body_len, &m, NULL) == 0)
    {
      cleanup_free char *pid = mp_get_strdup (&m.data, "pid");
      container_proc_t *p = pid ? container_find_proc (self, pid) : NULL;
      wait = p && p->exited;
    }
  msgpack_unpacked_destroy (&m);
  return wait;
}
