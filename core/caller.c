/* Callers and acting as them (see core/caller.h). */
#include "core/caller.h"

#include <dirent.h>
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

/* The kernel's rule for an unprivileged sender of uid: the target's real
 * or saved uid is uid.  Read from /proc: the daemon, root, would pass the
 * kernel's own check for any target. */
static bool
s_signalable_by (pid_t pid, uint32_t uid)
{
  char path[64], line[256];
  snprintf (path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen (path, "re");
  bool ok = false;
  while (f && fgets (line, sizeof line, f))
    {
      unsigned long real, effective, saved;
      if (sscanf (line, "Uid: %lu %lu %lu", &real, &effective, &saved) == 3)
        {
          ok = real == uid || saved == uid;
          break;
        }
    }
  if (f)
    fclose (f);
  return ok;
}

int
zcd_signal_owned (int pidfd, pid_t pid, uint32_t uid, int sig)
{
  /* Checked after the pidfd was taken: if pid is another process by now,
   * the pidfd's own is gone and the send fails (ESRCH). */
  if (uid != 0 && !s_signalable_by (pid, uid))
    {
      errno = EPERM;
      return -1;
    }
  return (int)syscall (SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

static int
s_kill_one (pid_t pid, uint32_t uid, int sig)
{
  int fd = (int)syscall (SYS_pidfd_open, pid, 0);
  if (fd < 0)
    return -1;
  int rc = zcd_signal_owned (fd, pid, uid, sig);
  int saved = errno;
  close (fd);
  errno = saved;
  return rc;
}

/* The process group of pid, from /proc/<pid>/stat (after the command's
 * parenthesis, which may hold anything); -1 when unknown. */
static long
s_pgrp (const char *pid)
{
  char path[300], buf[512];
  snprintf (path, sizeof path, "/proc/%s/stat", pid);
  FILE *f = fopen (path, "re");
  size_t n = f ? fread (buf, 1, sizeof buf - 1, f) : 0;
  if (f)
    fclose (f);
  buf[n] = '\0';
  char *close_paren = strrchr (buf, ')');
  char state;
  long ppid, pgrp;
  if (close_paren == NULL || sscanf (close_paren + 1, " %c %ld %ld", &state, &ppid, &pgrp) != 3)
    return -1;
  return pgrp;
}

int
zcd_kill_as (uint32_t uid, uint32_t gid, pid_t pid, int sig)
{
  if (uid == 0)
    return kill (pid, sig);
  if (pid > 0)
    return s_kill_one (pid, uid, sig);
  /* A process group: each member that is the user's. */
  DIR *proc = opendir ("/proc");
  int hit = 0;
  for (struct dirent *de; proc && (de = readdir (proc));)
    if (de->d_name[0] >= '1' && de->d_name[0] <= '9' && s_pgrp (de->d_name) == -(long)pid
        && s_kill_one ((pid_t)atol (de->d_name), uid, sig) == 0)
      hit++;
  if (proc)
    closedir (proc);
  if (hit == 0)
    errno = ESRCH;
  return hit ? 0 : -1;
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
