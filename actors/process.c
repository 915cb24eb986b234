/* A container's process (see actors/process.h): its description, the
 * `Process` view, and what its container sends it (signals, control
 * records).  Its shim is process_shim.c's. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/process.h"
#include "core/bundle.h"
#include "core/caller.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/mp.h"

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

/* ------------------------------------------------------------------ */
/* Descriptions                                                        */

static process_t *
s_new (const char *name, bool is_init)
{
  process_t *p = calloc (1, sizeof *p);
  p->name = s_strdup0 (name);
  p->is_init = is_init;
  p->state = PROCESS_NEW;
  p->pidfd = -1;
  return p;
}

static void
s_pack_rlimits_from_bundle (process_t *p, const bundle_info_t *info)
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

process_t *
process_new_init (const bundle_info_t *info, const char *stdin_path, const char *stdout_path,
                  const char *stderr_path)
{
  process_t *p = s_new ("init", true);
  p->terminal = info->terminal;
  p->args = s_strv_dup (info->args);
  p->env = s_strv_dup (info->env);
  p->cwd = strdup (info->cwd ? info->cwd : "/");
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
  p->stdin_path = s_strdup0 (stdin_path);
  p->stdout_path = s_strdup0 (stdout_path);
  p->stderr_path = s_strdup0 (stderr_path);
  return p;
}

static void
s_user_from_request (process_t *p, const msgpack_object *user)
{
  p->uid = (uint32_t)mp_get_uint (user, "uid", 0);
  p->gid = (uint32_t)mp_get_uint (user, "gid", 0);
  const msgpack_object *gids = mp_map_get (user, "additional_gids");
  if (gids == NULL || gids->type != MSGPACK_OBJECT_ARRAY || gids->via.array.size == 0)
    return;
  p->n_additional_gids = gids->via.array.size;
  p->additional_gids = calloc (p->n_additional_gids, sizeof (uint32_t));
  for (size_t i = 0; i < p->n_additional_gids; i++)
    {
      uint64_t v = 0;
      mp_as_uint (&gids->via.array.ptr[i], &v);
      p->additional_gids[i] = (uint32_t)v;
    }
}

process_t *
process_new_exec (const msgpack_object *body)
{
  cleanup_free char *name = mp_get_strdup (body, "pid");
  process_t *p = s_new (name, false);
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
    s_user_from_request (p, user);
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
  process_log_from_request (&p->log, body);
  return p;
}

process_t *
process_new_unknown (const char *name, bool is_init)
{
  process_t *p = s_new (name, is_init);
  p->args = calloc (1, sizeof (char *));
  p->env = calloc (1, sizeof (char *));
  p->capabilities = calloc (1, sizeof (char *));
  p->cwd = strdup ("/");
  return p;
}

void
process_destroy (process_t **pp)
{
  process_t *p = pp ? *pp : NULL;
  if (p == NULL)
    return;
  process_shim_stop (p);
  if (p->pidfd >= 0)
    close (p->pidfd);
  free (p->name);
  free (p->dir);
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
  process_log_clear (&p->log);
  free (p);
  *pp = NULL;
}

/* ------------------------------------------------------------------ */
/* The `Process` view                                                  */

static void
s_pack_user (msgpack_packer *pk, const process_t *p)
{
  msgpack_pack_map (pk, 3);
  mp_pack_kv_uint (pk, "uid", p->uid);
  mp_pack_kv_uint (pk, "gid", p->gid);
  mp_pack_str (pk, "additional_gids");
  msgpack_pack_array (pk, p->n_additional_gids);
  for (size_t i = 0; i < p->n_additional_gids; i++)
    msgpack_pack_uint32 (pk, p->additional_gids[i]);
}

void
process_pack_view (const process_t *p, msgpack_packer *pk)
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

/* ------------------------------------------------------------------ */
/* Signals and control records                                         */

bool
process_gone (const process_t *p)
{
  if (p->state == PROCESS_EXITED)
    return true;
  if (p->state != PROCESS_RUNNING || p->system_pid == 0)
    return false;
  pid_t pid = (pid_t)p->system_pid;
  uint64_t now = zcd_proc_starttime (pid);
  if (now == 0 || (p->starttime != 0 && now != p->starttime))
    return true;
  return zcd_proc_is_zombie (pid);
}

void
process_pin (process_t *p)
{
  if (p->pidfd >= 0)
    close (p->pidfd);
  p->pidfd = -1;
  pid_t pid = (pid_t)p->system_pid;
  if (pid <= 0 || p->starttime == 0)
    return;
  int fd = (int)syscall (SYS_pidfd_open, pid, 0);
  /* Checked after opening: the fd then holds the process the starttime
   * names, or the pid was someone else's already and nothing is pinned. */
  if (fd >= 0 && zcd_proc_starttime (pid) != p->starttime)
    {
      close (fd);
      fd = -1;
    }
  if (fd >= 0)
    fcntl (fd, F_SETFD, FD_CLOEXEC);
  p->pidfd = fd;
}

int
process_signal (const process_t *p, int sig)
{
  pid_t pid = (pid_t)p->system_pid;
  if (p->state != PROCESS_RUNNING || pid <= 0)
    return -ESRCH;
  /* The pidfd taken when the process became known: gone means ESRCH,
   * never a stranger that got the pid since (the exit is on its way). */
  if (p->pidfd < 0)
    return -ESRCH;
  if (zcd_signal_owned (p->pidfd, pid, p->run_uid, sig) < 0)
    return -errno;
  return 0;
}

int
process_control (const process_t *p, const struct zcd_control_record *rec)
{
  cleanup_free char *path = NULL;
  if (p->dir == NULL)
    return -ENOENT;
  if (asprintf (&path, "%s/control", p->dir) < 0)
    return -ENOMEM;
  /* The shim holds the FIFO's read end as long as it runs: no reader
   * (ENXIO) means it has gone. */
  cleanup_close int fd = open (path, O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  /* A rootless shim's directory is its owner's: what is there now must
   * still be a FIFO of the owner's (or the daemon's), never a file the
   * root daemon would write into. */
  struct stat st;
  if (fstat (fd, &st) < 0)
    return -errno;
  if (!S_ISFIFO (st.st_mode) || (st.st_uid != 0 && st.st_uid != p->run_uid))
    return -EPERM;
  ssize_t n = write (fd, rec, sizeof *rec);
  if (n < 0)
    return -errno;
  return n == (ssize_t)sizeof *rec ? 0 : -EAGAIN;
}
