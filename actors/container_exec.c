/* exec: a new process in a running container (PROTOCOL.md `exec`).  The
 * operation waits for the process's start (STEP_EXEC_START); its end comes
 * through the process callbacks (container.c). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "actors/container.h"
#include "core/caller.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

/* The OCI process spec the runtime gets (`runtime exec --process`). */
static json_t *
s_oci_process (const process_t *p, const msgpack_object *body)
{
  json_t *j = json_object ();
  json_object_set_new (j, "terminal", json_boolean (p->terminal));
  json_t *user = json_pack ("{s:I,s:I}", "uid", (json_int_t)p->uid, "gid", (json_int_t)p->gid);
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
          json_array_append_new (arr, json_pack ("{s:s,s:I,s:I}", "type", type ? type : "", "soft",
                                                 (json_int_t)mp_get_uint (e, "soft", 0), "hard",
                                                 (json_int_t)mp_get_uint (e, "hard", 0)));
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

/* The process's directory and files: the spec the runtime gets, and the
 * request itself, which after a restart gives back the process's `Process`
 * view (stdio paths included).  The directory is made here, fresh; on
 * failure it is removed again. */
static int
s_write_files (const char *dir, const process_t *p, const msgpack_object *body, zcd_error_t **err)
{
  if (zcd_mkdir (dir, 0700, err) < 0)
    return -1;
  json_t *spec = s_oci_process (p, body);
  cleanup_free char *text = json_dumps (spec, JSON_COMPACT);
  json_decref (spec);
  msgpack_sbuffer saved;
  msgpack_sbuffer_init (&saved);
  msgpack_packer spk;
  msgpack_packer_init (&spk, &saved, msgpack_sbuffer_write);
  msgpack_pack_object (&spk, *body);
  cleanup_free char *request_path = NULL, *spec_path = NULL;
  int rc = 0;
  if (text == NULL)
    rc = zcd_fail (err, ZCD_E_INTERNAL, "process spec cannot be encoded");
  else if (asprintf (&request_path, "%s/request.msgpack", dir) < 0
           || asprintf (&spec_path, "%s/process.json", dir) < 0)
    rc = zcd_fail_errno (err, ENOMEM, "exec");
  else if (zcd_write_file_replace (request_path, saved.data, saved.size, 0600, err) < 0
           || zcd_write_file_replace (spec_path, text, strlen (text), 0600, err) < 0)
    rc = -1;
  msgpack_sbuffer_destroy (&saved);
  if (rc < 0)
    zcd_rm_rf (dir, NULL);
  return rc;
}

void
container_plan_exec (container_t *self, const msgpack_object *body, container_plan_t *plan)
{
  cleanup_free char *pid = mp_get_strdup (body, "pid");
  if (pid == NULL || container_find_process (self, pid))
    {
      zcd_fail (&plan->err, ZCD_E_ALREADY_EXISTS, "process `%s` already exists in `%s`",
                pid ? pid : "", self->id);
      return;
    }
  cleanup_error zcd_error_t *err = NULL;
  /* A rootless container's shim opens them as its owner: so are they
   * checked (core/caller.h). */
  zcd_as_user_t scope;
  if (zcd_as_user_enter (&scope, self->owner.uid, self->owner.gid) < 0)
    zcd_fail_errno (&err, errno, "cannot act as uid %u", (unsigned)self->owner.uid);
  else if (zcd_check_stdio_paths (self->daemon->config, body, &err) == 0)
    zcd_error_free (&err);
  zcd_as_user_leave (&scope);
  if (err)
    {
      zcd_fail (&plan->err, err->code, "%s", err->msg);
      return;
    }
  process_t *p = process_new_exec (body);
  cleanup_free char *dir = zcd_process_dir (self->daemon->config, self->id, pid);
  if (s_write_files (dir, p, body, &err) < 0)
    {
      process_destroy (&p);
      zcd_state_dir_error (&err);
      zcd_fail (&plan->err, err->code, "exec `%s`: %s", pid, err->msg);
      return;
    }
  process_launch_t launch = container_process_launch (self);
  if (process_spawn (p, &launch, &err) < 0)
    {
      process_destroy (&p);
      zcd_rm_rf (dir, NULL);
      zcd_state_dir_error (&err);
      zcd_fail (&plan->err, err ? err->code : ZCD_E_INTERNAL, "exec: %s", err ? err->msg : "?");
      return;
    }
  container_add_process (self, p);
  /* The reply waits for the start (or its failure); the container's next
   * operation waits with it (one at a time). */
  plan->step = STEP_EXEC_START;
  plan->process = p;
}

bool
container_exec_must_wait (container_t *self, const msgpack_object *body)
{
  cleanup_free char *pid = mp_get_strdup (body, "pid");
  process_t *p = pid ? container_find_process (self, pid) : NULL;
  return p && p->state == PROCESS_EXITED;
}
