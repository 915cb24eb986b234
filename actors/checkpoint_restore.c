/* What a restore takes from a checkpoint: the runtime's restore flags
 * (those of the dump), and the clean-up of what crun's restore leaves of
 * the dumped container's cgroups (docs/design.md, "Checkpoint and
 * restore"). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <jansson.h>

#include "actors/actors.h"
#include "actors/checkpoint_int.h"
#include "core/child.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

void
checkpoint_source_clear (checkpoint_source_t *src)
{
  mp_strv_free (src->restore_args);
  free (src->dumped_id);
  mp_strv_free (src->dumped_cgroups);
  memset (src, 0, sizeof *src);
}

#define CGROUP_MOUNTS "/sys/fs/cgroup/"
#define CGROUP_DIRS_MAX 32

/* A cgroup directory as zcd records them: under /sys/fs/cgroup, without
 * "." or ".." components or empty ones.  The marker is zcd's (its owner
 * and mode say so), but what it names is removed and written to as root:
 * checked again. */
static bool
s_cgroup_dir_ok (const char *dir)
{
  size_t len = strlen (dir);
  if (len >= PATH_MAX || strncmp (dir, CGROUP_MOUNTS, strlen (CGROUP_MOUNTS)) != 0)
    return false;
  for (const char *c = dir + 1; c && *c; c = strchr (c, '/') ? strchr (c, '/') + 1 : NULL)
    {
      size_t n = strcspn (c, "/");
      if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
        return false;
    }
  return dir[len - 1] != '/';
}

static char **
s_cgroup_dirs (json_t *array)
{
  size_t n = json_is_array (array) ? json_array_size (array) : 0;
  if (n > CGROUP_DIRS_MAX)
    n = CGROUP_DIRS_MAX;
  char **v = calloc (n + 1, sizeof *v);
  size_t k = 0;
  for (size_t i = 0; v && i < n; i++)
    {
      const char *dir = json_string_value (json_array_get (array, i));
      if (dir && s_cgroup_dir_ok (dir))
        v[k++] = strdup (dir);
    }
  return v;
}

/* The restore flags are those of the dump: CRIU restores sockets, a shell
 * job or empty namespaces only when told again. */
static char **
s_restore_args (json_t *meta)
{
  static const struct { const char *key, *flag; } flags[] = {
    { "tcp", "--tcp-established" }, { "unix_sockets", "--ext-unix-sk" },
    { "shell", "--shell-job" },
  };
  json_t *ns = json_object_get (meta, "empty_ns");
  size_t n_ns = json_is_array (ns) ? json_array_size (ns) : 0;
  if (n_ns > 8) /* there are 8 kinds of namespace; the shim takes 24 flags */
    n_ns = 8;
  char **v = calloc (4 + 2 * n_ns, sizeof *v);
  size_t k = 0;
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
    if (json_is_true (json_object_get (meta, flags[i].key)))
      v[k++] = strdup (flags[i].flag);
  for (size_t i = 0; i < n_ns; i++)
    if (json_is_string (json_array_get (ns, i)))
      {
        v[k++] = strdup ("--empty-ns");
        v[k++] = strdup (json_string_value (json_array_get (ns, i)));
      }
  return v;
}

void
checkpoint_source_fill (checkpoint_source_t *src, json_t *meta)
{
  src->restore_args = s_restore_args (meta);
  const char *id = json_string_value (json_object_get (meta, "id"));
  src->dumped_id = id && zcd_valid_id (id, strlen (id)) ? strdup (id) : NULL;
  src->dumped_cgroups = s_cgroup_dirs (json_object_get (meta, "cgroups"));
}


#define CGROUP_SUPER_MAGIC_V1 0x27e0eb
#define CGROUP_SUPER_MAGIC_V2 0x63677270

/* A directory of a cgroup file system, not followed through a link. */
static bool
s_is_cgroup_dir (const char *dir)
{
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return false;
  struct statfs fs;
  bool ok = fstatfs (fd, &fs) == 0
            && (fs.f_type == CGROUP_SUPER_MAGIC_V1 || fs.f_type == CGROUP_SUPER_MAGIC_V2);
  close (fd);
  return ok;
}

/* The pids of a cgroup, read whole before any moves out of it. */
static size_t
s_read_pids (const char *dir, long *pids, size_t cap)
{
  char path[PATH_MAX + 16], text[8192];
  snprintf (path, sizeof path, "%s/cgroup.procs", dir);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  ssize_t n = fd >= 0 ? read (fd, text, sizeof text - 1) : -1;
  if (fd >= 0)
    close (fd);
  text[n > 0 ? n : 0] = '\0';
  size_t k = 0;
  for (char *c = text, *end; *c && k < cap; c = end)
    {
      long pid = strtol (c, &end, 10);
      if (end == c)
        break;
      pids[k++] = pid;
    }
  return k;
}

/* rmdir of an empty cgroup, waiting out EBUSY a little: the kernel lets go
 * of a cgroup a moment after its last task left (a forked child). */
static void
s_rmdir_when_empty (const char *dir)
{
  long pids[1];
  if (!s_is_cgroup_dir (dir) || s_read_pids (dir, pids, 1) > 0)
    return; /* gone, not a cgroup, or in use: not ours to remove */
  for (int tries = 0; rmdir (dir) < 0; tries++)
    {
      if (errno != EBUSY || tries == 20)
        {
          if (errno != ENOENT)
            fprintf (stderr, "rmdir %s: %s\n", dir, strerror (errno));
          return;
        }
      usleep (100 * 1000);
    }
}

/* The restored init's cgroup in hierarchy `h` (a directory name under
 * /sys/fs/cgroup: "memory", "systemd" for name=systemd, "unified" for the
 * v2 line of a hybrid host), from its /proc/<pid>/cgroup text. */
static bool
s_init_cgroup (const char *proc_cgroup, const char *h, char *out, size_t cap)
{
  char copy[4096];
  snprintf (copy, sizeof copy, "%s", proc_cgroup);
  for (char *save = NULL, *line = strtok_r (copy, "\n", &save); line;
       line = strtok_r (NULL, "\n", &save))
    {
      char *ctrl = strchr (line, ':');
      char *path = ctrl ? strchr (ctrl + 1, ':') : NULL;
      if (path == NULL)
        continue;
      *path++ = '\0';
      ctrl++;
      bool match = strcmp (ctrl, h) == 0
                   || (strncmp (ctrl, "name=", 5) == 0 && strcmp (ctrl + 5, h) == 0)
                   || (ctrl[0] == '\0' && strcmp (h, "unified") == 0);
      if (match)
        return snprintf (out, cap, CGROUP_MOUNTS "%s%s", h, path) < (int) cap;
    }
  return false;
}

static bool
s_same_pid_ns (pid_t a, pid_t b)
{
  char path[64];
  struct stat sa, sb;
  snprintf (path, sizeof path, "/proc/%d/ns/pid", (int) a);
  if (stat (path, &sa) < 0)
    return false;
  snprintf (path, sizeof path, "/proc/%d/ns/pid", (int) b);
  return stat (path, &sb) == 0 && sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev;
}

/* crun moves only the restored init into the new cgroup; its children stay
 * in the dumped one (frozen there, if the dump was of a paused container).
 * Moving them next to the init puts them where they belong, and a task
 * moved into a thawed v1 freezer cgroup thaws.  Only the restored
 * container's own: a dumped container left running (`exit` false) may
 * still live in these cgroups, in its own pid namespace. */
static void
s_adopt (const char *old_dir, const char *h, const char *proc_cgroup, pid_t init)
{
  char new_dir[PATH_MAX], path[PATH_MAX + 16];
  long pids[1024];
  if (init <= 0 || !s_init_cgroup (proc_cgroup, h, new_dir, sizeof new_dir)
      || strcmp (new_dir, old_dir) == 0 || !s_is_cgroup_dir (old_dir) || !s_is_cgroup_dir (new_dir))
    return;
  size_t n = s_read_pids (old_dir, pids, sizeof pids / sizeof pids[0]);
  snprintf (path, sizeof path, "%s/cgroup.procs", new_dir);
  for (size_t i = 0; i < n; i++)
    {
      if (!s_same_pid_ns ((pid_t) pids[i], init))
        continue;
      FILE *to = fopen (path, "we");
      if (to == NULL || fprintf (to, "%ld\n", pids[i]) < 0 || fclose (to) != 0)
        fprintf (stderr, "move %ld to %s: %s\n", pids[i], new_dir, strerror (errno));
    }
}

typedef struct
{
  char **dirs;
  pid_t init;
} leftovers_t;

/* Each v1 hierarchy's copy of the dumped cgroup (crun re-creates it in all
 * of them, named ones included): its tasks join the restored init, then it
 * goes if empty.  A pure v2 host has the one recorded directory. */
static int
s_rmdir_in_child (void *arg)
{
  leftovers_t *l = arg;
  char proc_cgroup[4096] = "", path[PATH_MAX];
  snprintf (path, sizeof path, "/proc/%d/cgroup", (int) l->init);
  int fd = l->init > 0 ? open (path, O_RDONLY | O_CLOEXEC) : -1;
  ssize_t n = fd >= 0 ? read (fd, proc_cgroup, sizeof proc_cgroup - 1) : -1;
  proc_cgroup[n > 0 ? n : 0] = '\0';
  if (fd >= 0)
    close (fd);
  const char *rel = strchr (l->dirs[0] + strlen (CGROUP_MOUNTS), '/');
  DIR *mounts = rel && access (CGROUP_MOUNTS "cgroup.controllers", F_OK) < 0
                    ? opendir (CGROUP_MOUNTS)
                    : NULL;
  for (struct dirent *e; mounts && (e = readdir (mounts));)
    if (e->d_name[0] != '.'
        && snprintf (path, sizeof path, CGROUP_MOUNTS "%s%s", e->d_name, rel) < (int) sizeof path)
      {
        s_adopt (path, e->d_name, proc_cgroup, l->init);
        s_rmdir_when_empty (path);
      }
  if (mounts)
    closedir (mounts);
  for (char **d = l->dirs; *d; d++)
    s_rmdir_when_empty (*d);
  return 0;
}

static void
s_cgroups_removed (const child_result_t *res, void *arg)
{
  if (res->timed_out)
    log_warn ("cgroups left by a restore: their removal did not end in time");
  else if (res->err_len)
    log_warn ("cgroups left by a restore: %.*s", (int) res->err_len, res->err);
}

void
checkpoint_remove_cgroups (zcd_daemon_t *daemon, char **dirs, pid_t restored_init)
{
  if (dirs == NULL || dirs[0] == NULL)
    return;
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.deadline_ms = 10000;
  cleanup_error zcd_error_t *err = NULL;
  leftovers_t leftovers = { dirs, restored_init };
  if (child_fork (daemon->children, s_rmdir_in_child, &leftovers, NULL, 0, &opts,
                  s_cgroups_removed, NULL, &err)
      == NULL)
    log_warn ("cgroups left by a restore: not removed: %s", err->msg);
}
