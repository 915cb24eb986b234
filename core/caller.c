/* Callers and acting as them (see core/caller.h). */
#include "core/caller.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static bool
s_parse_u32 (const char *s, size_t len, uint32_t *out)
{
  if (len == 0 || len > 10)
    return false;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++)
    {
      if (s[i] < '0' || s[i] > '9')
        return false;
      v = v * 10 + (uint64_t)(s[i] - '0');
    }
  /* (uid_t) -1 is "no change" to the kernel: never a caller. */
  if (v >= UINT32_MAX)
    return false;
  *out = (uint32_t)v;
  return true;
}

bool
zcd_caller_parse (const char *user_id, zcd_caller_t *out)
{
  if (user_id == NULL)
    return false;
  if (strcmp (user_id, "admin") == 0)
    {
      *out = ZCD_CALLER_ADMIN;
      return true;
    }
  if (strncmp (user_id, "u:", 2) != 0)
    return false;
  const char *uid = user_id + 2, *colon = strchr (uid, ':');
  zcd_caller_t c = { .admin = false };
  if (colon == NULL || !s_parse_u32 (uid, (size_t)(colon - uid), &c.uid)
      || !s_parse_u32 (colon + 1, strlen (colon + 1), &c.gid))
    return false;
  c.admin = c.uid == 0;
  *out = c;
  return true;
}

void
zcd_caller_user_id (uint32_t uid, uint32_t gid, char out[ZCD_USER_ID_MAX])
{
  if (uid == 0)
    snprintf (out, ZCD_USER_ID_MAX, "admin");
  else
    snprintf (out, ZCD_USER_ID_MAX, "u:%" PRIu32 ":%" PRIu32, uid, gid);
}

bool
zcd_caller_from_ipc_address (const char *address, uint32_t *uid, uint32_t *gid)
{
  /* From the right: the host part before them may hold colons too. */
  const char *end = address ? address + strlen (address) : NULL;
  const char *fields[3];
  for (int i = 2; end && i >= 0; i--)
    {
      const char *colon = end;
      while (colon > address && colon[-1] != ':')
        colon--;
      if (colon == address)
        return false;
      fields[i] = colon;
      end = colon - 1;
    }
  if (end == NULL)
    return false;
  uint32_t pid;
  return s_parse_u32 (fields[0], (size_t)(fields[1] - 1 - fields[0]), uid)
         && s_parse_u32 (fields[1], (size_t)(fields[2] - 1 - fields[1]), gid)
         && s_parse_u32 (fields[2], strlen (fields[2]), &pid);
}

int
zcd_as_user_enter (zcd_as_user_t *scope, uint32_t uid, uint32_t gid)
{
  scope->active = false;
  if (uid == 0)
    return 0;
  int n = (int)syscall (SYS_getgroups, 64, scope->groups);
  if (n < 0)
    return -1;
  scope->n_groups = n;
  gid_t only = gid;
  if (syscall (SYS_setgroups, 1, &only) < 0)
    return -1;
  if (syscall (SYS_setresgid, -1, gid, -1) < 0 || syscall (SYS_setresuid, -1, uid, -1) < 0)
    {
      int saved = errno;
      syscall (SYS_setresgid, -1, 0, -1);
      syscall (SYS_setgroups, scope->n_groups, scope->groups);
      errno = saved;
      return -1;
    }
  scope->active = true;
  return 0;
}

void
zcd_as_user_leave (zcd_as_user_t *scope)
{
  if (!scope->active)
    return;
  int saved = errno;
  /* The saved uid stayed 0: taking it back needs no privilege.  If it
   * failed the daemon would go on as the caller, so it does not go on. */
  if (syscall (SYS_setresuid, -1, 0, -1) < 0 || syscall (SYS_setresgid, -1, 0, -1) < 0
      || syscall (SYS_setgroups, scope->n_groups, scope->groups) < 0)
    abort ();
  scope->active = false;
  errno = saved;
}

int
zcd_kill_as (uint32_t uid, uint32_t gid, pid_t pid, int sig)
{
  zcd_as_user_t scope;
  if (zcd_as_user_enter (&scope, uid, gid) < 0)
    return -1;
  int rc = kill (pid, sig);
  zcd_as_user_leave (&scope);
  return rc;
}

char *
zcd_user_groups (uint32_t uid, uint32_t gid)
{
  char buf[4096];
  struct passwd pw, *found = NULL;
  gid_t groups[256];
  int n = 256;
  if (getpwuid_r (uid, &pw, buf, sizeof buf, &found) != 0 || found == NULL
      || getgrouplist (pw.pw_name, gid, groups, &n) < 0)
    {
      groups[0] = gid;
      n = 1;
    }
  char *list = calloc ((size_t)n, 12);
  if (list == NULL)
    return NULL;
  size_t len = 0;
  for (int i = 0; i < n; i++)
    len += (size_t)sprintf (list + len, "%s%u", i ? "," : "", (unsigned)groups[i]);
  return list;
}

char **
zcd_argv_as_user (char *const *argv, uint32_t uid, uint32_t gid, const char *groups)
{
  size_t n = 0;
  while (argv[n])
    n++;
  char **out = calloc (n + 8, sizeof *out);
  if (out == NULL)
    return NULL;
  size_t i = 0;
  if (uid != 0)
    {
      /* setpriv (util-linux) sets real, effective and saved ids; without
       * keep-caps the kernel clears the capabilities on the way. */
      out[i++] = strdup (access ("/usr/bin/setpriv", X_OK) == 0 ? "/usr/bin/setpriv" : "setpriv");
      if (asprintf (&out[i++], "--reuid=%" PRIu32, uid) < 0)
        out[i - 1] = NULL;
      if (asprintf (&out[i++], "--regid=%" PRIu32, gid) < 0)
        out[i - 1] = NULL;
      if (groups && groups[0])
        {
          if (asprintf (&out[i++], "--groups=%s", groups) < 0)
            out[i - 1] = NULL;
        }
      else
        out[i++] = strdup ("--clear-groups");
      out[i++] = strdup ("--");
    }
  for (size_t k = 0; k < n; k++)
    out[i++] = strdup (argv[k]);
  out[i] = NULL;
  return out;
}
