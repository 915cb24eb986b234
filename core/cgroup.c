/* Finding a process's cgroups (see core/cgroup.h), the small file readers
 * the other cgroup files share, and the pids in a cgroup.  The `stats`
 * readers are in cgroup_stats.c, the OOM watch in cgroup_oom.c. */
#include "core/cgroup.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cgroup_int.h"
#include "core/cleanup.h"
#include "core/fsutil.h"

/* Running out of memory reading a few small files is not reportable in any
 * useful way; err.c takes the same line. */
void *
cgroup_xrealloc (void *p, size_t size)
{
  void *q = realloc (p, size ? size : 1);
  if (q == NULL)
    abort ();
  return q;
}

static char *s_xasprintf (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
static char *
s_xasprintf (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  char *s = NULL;
  if (vasprintf (&s, fmt, ap) < 0)
    abort ();
  va_end (ap);
  return s;
}

bool
cgroup_is_dir (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0 && S_ISDIR (st.st_mode);
}

bool
cgroup_exists_in (const char *dir, const char *name)
{
  char path[PATH_MAX];
  if (dir == NULL || (size_t)snprintf (path, sizeof path, "%s/%s", dir, name) >= sizeof path)
    return false;
  return access (path, F_OK) == 0;
}

/* ---- paths ------------------------------------------------------------ */

/* "/" names the hierarchy's root: <root>/memory, not <root>/memory/. */
static const char *
s_suffix (const char *cgroup_path)
{
  return strcmp (cgroup_path, "/") == 0 ? "" : cgroup_path;
}

static void
s_add_controllers (cgroup_paths_t *self, const char *root, char *names, const char *path)
{
  /* A co-mounted hierarchy ("cpu,cpuacct") sits at the joined name;
   * systemd adds per-controller symlinks, other setups may not. */
  cleanup_free char *joined = s_xasprintf ("%s/%s%s", root, names, s_suffix (path));
  bool joined_exists = strchr (names, ',') != NULL && cgroup_is_dir (joined);
  char *save = NULL;
  for (char *name = strtok_r (names, ",", &save); name; name = strtok_r (NULL, ",", &save))
    {
      if (strncmp (name, "name=", 5) == 0 || strlen (name) >= sizeof self->controllers[0].name
          || self->n_controllers == CGROUP_MAX_CONTROLLERS)
        continue;
      size_t i = self->n_controllers++;
      strcpy (self->controllers[i].name, name);
      self->controllers[i].dir = joined_exists
                                     ? s_xasprintf ("%s", joined)
                                     : s_xasprintf ("%s/%s%s", root, name, s_suffix (path));
    }
}

static char *
s_unified_dir (const char *root, const char *path, bool hybrid)
{
  cleanup_free char *unified_root = s_xasprintf ("%s/unified", root);
  bool pure_v2 = cgroup_exists_in (root, "cgroup.controllers");
  if (!pure_v2 && cgroup_is_dir (unified_root))
    return s_xasprintf ("%s%s", unified_root, s_suffix (path));
  if (hybrid)
    return NULL;
  return s_xasprintf ("%s%s", root, s_suffix (path));
}

static int
s_parse_proc_cgroup (const char *root, char *text, cgroup_paths_t *self, zcd_error_t **err)
{
  const char *unified_path = NULL;
  char *save = NULL;
  for (char *line = strtok_r (text, "\n", &save); line; line = strtok_r (NULL, "\n", &save))
    {
      char *colon1 = strchr (line, ':');
      char *colon2 = colon1 ? strchr (colon1 + 1, ':') : NULL;
      if (colon2 == NULL || colon2[1] != '/')
        continue;
      *colon2 = '\0';
      if (colon1[1] == '\0')
        unified_path = colon2 + 1;
      else
        s_add_controllers (self, root, colon1 + 1, colon2 + 1);
    }
  if (self->n_controllers > 0)
    {
      self->version = CGROUP_V1;
      self->unified = unified_path ? s_unified_dir (root, unified_path, true) : NULL;
      return 0;
    }
  if (unified_path == NULL)
    return zcd_fail (err, ZCD_E_INTERNAL, "no cgroup found");
  self->version = CGROUP_V2;
  self->unified = s_unified_dir (root, unified_path, false);
  return 0;
}

int
cgroup_paths_from_file (const char *root, const char *proc_cgroup_file, cgroup_paths_t **out,
                        zcd_error_t **err)
{
  if (root == NULL)
    root = CGROUP_ROOT_DEFAULT;
  cleanup_free char *text = NULL;
  if (zcd_read_file (proc_cgroup_file, CGROUP_FILE_MAX, &text, NULL, err) < 0)
    {
      if (err && *err && ((*err)->sys_errno == ENOENT || (*err)->sys_errno == ESRCH))
        (*err)->code = ZCD_E_NOT_FOUND;
      return -1;
    }
  cgroup_paths_t *self = calloc (1, sizeof *self);
  if (self == NULL)
    return zcd_fail_errno (err, ENOMEM, "cgroup paths");
  if (s_parse_proc_cgroup (root, text, self, err) < 0)
    {
      cgroup_paths_destroy (&self);
      zcd_error_wrap (err, "%s", proc_cgroup_file);
      return -1;
    }
  *out = self;
  return 0;
}

int
cgroup_paths_for_pid (const char *root, pid_t pid, cgroup_paths_t **out, zcd_error_t **err)
{
  char file[64];
  snprintf (file, sizeof file, "/proc/%d/cgroup", (int)pid);
  return cgroup_paths_from_file (root, file, out, err);
}

/* One "name=dir" of cgroup_paths_from_dirs into self. */
static int
s_add_named_dir (cgroup_paths_t *self, const char *entry, zcd_error_t **err)
{
  const char *eq = strchr (entry, '=');
  size_t name_len = eq ? (size_t)(eq - entry) : 0;
  if (eq == NULL || name_len == 0 || name_len >= sizeof self->controllers[0].name || eq[1] != '/')
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                     "cgroup controller `%s`: expected <controller>=<absolute directory>", entry);
  if (self->n_controllers == CGROUP_MAX_CONTROLLERS)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "more than %d cgroup controllers",
                     CGROUP_MAX_CONTROLLERS);
  size_t i = self->n_controllers++;
  memcpy (self->controllers[i].name, entry, name_len);
  self->controllers[i].name[name_len] = '\0';
  self->controllers[i].dir = s_xasprintf ("%s", eq + 1);
  return 0;
}

int
cgroup_paths_from_dirs (cgroup_version_t version, const char *unified,
                        const char *const *controllers, cgroup_paths_t **out, zcd_error_t **err)
{
  if (version != CGROUP_V1 && version != CGROUP_V2)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "cgroup version %d: expected 1 or 2",
                     (int)version);
  if (unified && unified[0] != '/')
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "cgroup directory `%s` is not absolute", unified);
  if (version == CGROUP_V2 && unified == NULL)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "cgroup v2 without its directory");
  if (version == CGROUP_V1 && (controllers == NULL || controllers[0] == NULL))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "cgroup v1 without controllers");
  cgroup_paths_t *self = calloc (1, sizeof *self);
  if (self == NULL)
    return zcd_fail_errno (err, ENOMEM, "cgroup paths");
  self->version = version;
  self->unified = unified ? s_xasprintf ("%s", unified) : NULL;
  for (size_t i = 0; version == CGROUP_V1 && controllers[i]; i++)
    if (s_add_named_dir (self, controllers[i], err) < 0)
      {
        cgroup_paths_destroy (&self);
        return -1;
      }
  *out = self;
  return 0;
}

char **
cgroup_paths_controller_dirs (const cgroup_paths_t *paths)
{
  size_t n = paths->version == CGROUP_V1 ? paths->n_controllers : 0;
  char **v = cgroup_xrealloc (NULL, (n + 1) * sizeof *v);
  for (size_t i = 0; i < n; i++)
    v[i] = s_xasprintf ("%s=%s", paths->controllers[i].name, paths->controllers[i].dir);
  v[n] = NULL;
  return v;
}

const char *
cgroup_paths_unified (const cgroup_paths_t *paths)
{
  return paths->unified;
}

void
cgroup_paths_destroy (cgroup_paths_t **paths)
{
  if (paths == NULL || *paths == NULL)
    return;
  cgroup_paths_t *self = *paths;
  free (self->unified);
  for (size_t i = 0; i < self->n_controllers; i++)
    free (self->controllers[i].dir);
  free (self);
  *paths = NULL;
}

cgroup_version_t
cgroup_paths_version (const cgroup_paths_t *paths)
{
  return paths->version;
}

const char *
cgroup_paths_dir (const cgroup_paths_t *paths, const char *controller)
{
  if (paths->version == CGROUP_V2)
    return paths->unified;
  for (size_t i = 0; i < paths->n_controllers; i++)
    if (strcmp (paths->controllers[i].name, controller) == 0)
      return paths->controllers[i].dir;
  return NULL;
}

/* ---- reading cgroup files --------------------------------------------- */

/* The file's text, or NULL when the cgroup (version, kernel) lacks it. */
char *
cgroup_read_text (const char *dir, const char *name)
{
  char path[PATH_MAX];
  if (dir == NULL || (size_t)snprintf (path, sizeof path, "%s/%s", dir, name) >= sizeof path)
    return NULL;
  char *text = NULL;
  if (zcd_read_file (path, CGROUP_FILE_MAX, &text, NULL, NULL) < 0)
    return NULL;
  return text;
}

/* "max" (no limit) and anything unparsable read as 0, as PROTOCOL.md asks
 * for what a cgroup does not have. */
uint64_t
cgroup_parse_u64 (const char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  if (!isdigit ((unsigned char)*s))
    return 0;
  errno = 0;
  unsigned long long v = strtoull (s, NULL, 10);
  return errno ? 0 : (uint64_t)v;
}

uint64_t
cgroup_read_u64 (const char *dir, const char *name)
{
  cleanup_free char *text = cgroup_read_text (dir, name);
  return text ? cgroup_parse_u64 (text) : 0;
}

/* Value of `key` in a flat keyed file ("key value" lines). */
bool
cgroup_keyed (const char *text, const char *key, uint64_t *out)
{
  size_t klen = strlen (key);
  for (const char *line = text; line && *line;)
    {
      if (strncmp (line, key, klen) == 0 && line[klen] == ' ')
        {
          *out = cgroup_parse_u64 (line + klen + 1);
          return true;
        }
      line = strchr (line, '\n');
      if (line)
        line++;
    }
  return false;
}

uint64_t
cgroup_keyed0 (const char *text, const char *key)
{
  uint64_t v = 0;
  cgroup_keyed (text, key, &v);
  return v;
}

uint64_t
cgroup_read_keyed (const char *dir, const char *name, const char *key)
{
  cleanup_free char *text = cgroup_read_text (dir, name);
  return cgroup_keyed0 (text, key);
}
/* The directory whose absence means the container's cgroup is gone. */
const char *
cgroup_main_dir (const cgroup_paths_t *paths)
{
  if (paths->version == CGROUP_V2)
    return paths->unified;
  const char *dir = cgroup_paths_dir (paths, "memory");
  if (dir == NULL)
    dir = cgroup_paths_dir (paths, "cpuacct");
  if (dir == NULL && paths->n_controllers > 0)
    dir = paths->controllers[0].dir;
  return dir;
}

/* ---- processes -------------------------------------------------------- */

static int
s_cmp_pid (const void *a, const void *b)
{
  pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
  return (x > y) - (x < y);
}

int
cgroup_procs_read (const cgroup_paths_t *paths, pid_t **pids_out, size_t *n_out, zcd_error_t **err)
{
  static const char *const hierarchies[] = { "pids", "memory", "cpu", "freezer" };
  const char *dir = NULL;
  for (size_t i = 0; dir == NULL && i < sizeof hierarchies / sizeof *hierarchies; i++)
    dir = cgroup_paths_dir (paths, hierarchies[i]);
  if (dir == NULL)
    dir = cgroup_main_dir (paths);
  cleanup_free char *text = cgroup_read_text (dir, "cgroup.procs");
  if (text == NULL)
    return zcd_fail (err, ZCD_E_NOT_FOUND, "cgroup `%s` is gone", dir ? dir : "");
  pid_t *pids = NULL;
  size_t n = 0;
  for (char *p = text; *p;)
    {
      char *end;
      long v = strtol (p, &end, 10);
      if (end == p)
        break;
      if (v > 0 && v <= INT_MAX)
        {
          pids = cgroup_xrealloc (pids, (n + 1) * sizeof *pids);
          pids[n++] = (pid_t)v;
        }
      p = end;
    }
  if (n > 1)
    qsort (pids, n, sizeof *pids, s_cmp_pid);
  *pids_out = pids;
  *n_out = n;
  return 0;
}
