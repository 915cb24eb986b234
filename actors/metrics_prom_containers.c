/* The per-container Prometheus families and the shims' (see
 * actors/metrics_prom.h): cgroup numbers as the stats actor read them,
 * each process's `log-dropped` count, and the shims' resident memory. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actors/metrics_prom.h"
#include "actors/supervisor_int.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/mp.h"

/* The shim writes its count of dropped log bytes here, in decimal, in its
 * process's directory (bounded container logs). */
#define LOG_DROPPED_FILE "log-dropped"

/* A family whose header is written before its first sample only: a
 * family without samples is left out. */
typedef struct
{
  const char *name, *type, *help;
  bool started;
} lazy_family_t;

static void
s_lazy_u64 (metrics_text_t *t, lazy_family_t *f, const metrics_label_t *labels, size_t n,
            uint64_t value, bool seconds)
{
  if (!f->started)
    metrics_family (t, f->name, f->type, f->help);
  f->started = true;
  if (seconds)
    metrics_put_seconds (t, f->name, labels, n, value);
  else
    metrics_put_u64 (t, f->name, labels, n, value);
}

/* ------------------------------------------------------------------ */
/* cgroup numbers                                                      */

static bool
s_path_uint (const msgpack_object *map, const char *const *path, uint64_t *out)
{
  const msgpack_object *o = map;
  for (; *path && o; path++)
    o = o->type == MSGPACK_OBJECT_MAP ? mp_map_get (o, *path) : NULL;
  return o && mp_as_uint (o, out);
}

typedef enum
{
  CPU,
  MEMORY,
  PIDS,
  OOM_KILLS,
  N_CGROUP_FAMILIES
} cgroup_family_t;

/* The Stats map of container `id` (NULL: none, or an empty one: its
 * cgroup is unknown or gone) and its OOM kills. */
static void
s_put_cgroup_family (metrics_text_t *t, lazy_family_t *f, cgroup_family_t which, const char *id,
                     const msgpack_object *stats, const msgpack_object *oom_kills)
{
  static const char *const cpu[] = { "cpu", "usage", "total", NULL };
  static const char *const memory[] = { "memory", "usage", "usage", NULL };
  static const char *const pids[] = { "pids", "current", NULL };
  metrics_label_t label = { "id", id };
  uint64_t v;
  if (stats == NULL || stats->type != MSGPACK_OBJECT_MAP || stats->via.map.size == 0)
    return;
  switch (which)
    {
    case CPU:
      if (s_path_uint (stats, cpu, &v))
        s_lazy_u64 (t, f, &label, 1, v, true);
      break;
    case MEMORY:
      if (s_path_uint (stats, memory, &v))
        s_lazy_u64 (t, f, &label, 1, v, false);
      break;
    case PIDS:
      if (s_path_uint (stats, pids, &v))
        s_lazy_u64 (t, f, &label, 1, v, false);
      break;
    default:
      {
        const msgpack_object *o = oom_kills ? mp_map_get (oom_kills, id) : NULL;
        if (o && mp_as_uint (o, &v))
          s_lazy_u64 (t, f, &label, 1, v, false);
      }
    }
}

/* The families, each together: container by container within each. */
static void
s_put_cgroups (supervisor_t *sup, metrics_text_t *t, const zcd_caller_t *caller,
               const msgpack_object *result)
{
  lazy_family_t f[N_CGROUP_FAMILIES] = {
    { "zcd_container_cpu_seconds_total", "counter", "CPU time of the container's cgroup.", false },
    { "zcd_container_memory_usage_bytes", "gauge", "Memory use of the container's cgroup.", false },
    { "zcd_container_pids", "gauge", "Tasks in the container's cgroup (pids.current).", false },
    { "zcd_container_oom_kills_total", "counter",
      "Processes of the container's cgroup the kernel's OOM killer killed.", false },
  };
  const msgpack_object *stats = mp_map_get (result, "stats");
  const msgpack_object *oom_kills = mp_map_get (result, "oom_kills");
  if (stats == NULL || stats->type != MSGPACK_OBJECT_MAP)
    return;
  if (oom_kills && oom_kills->type != MSGPACK_OBJECT_MAP)
    oom_kills = NULL;
  for (cgroup_family_t which = 0; which < N_CGROUP_FAMILIES; which++)
    for (uint32_t i = 0; i < stats->via.map.size; i++)
      {
        const msgpack_object_kv *kv = &stats->via.map.ptr[i];
        cleanup_free char *id = mp_strdup (&kv->key);
        /* Asked for as the caller's; a container that left meanwhile (or
         * whose id another caller's took) is left out. */
        container_entry_t *e = id ? zhashx_lookup (sup->containers, id) : NULL;
        if (e && e->view && supervisor_may_see (caller, e))
          s_put_cgroup_family (t, &f[which], which, id, &kv->val, oom_kills);
      }
}

/* ------------------------------------------------------------------ */
/* Processes: names, shims, dropped log bytes                          */

/* The names of the container's processes, from its cached view (the
 * Container map's entries, `processes`: [{"pid": name, ...}]); a
 * NULL-terminated list the caller frees (mp_strv_free). */
static char **
s_process_names (const container_entry_t *e)
{
  char **names = calloc (1, sizeof *names);
  size_t n = 0, off = 0;
  msgpack_unpacked u;
  msgpack_unpacked_init (&u);
  for (uint32_t i = 0; i < e->view_entries; i++)
    {
      if (msgpack_unpack_next (&u, e->view, e->view_len, &off) != MSGPACK_UNPACK_SUCCESS)
        break;
      bool processes = mp_str_eq (&u.data, "processes");
      if (msgpack_unpack_next (&u, e->view, e->view_len, &off) != MSGPACK_UNPACK_SUCCESS)
        break;
      if (!processes || u.data.type != MSGPACK_OBJECT_ARRAY)
        continue;
      for (uint32_t j = 0; j < u.data.via.array.size; j++)
        {
          const msgpack_object *p = &u.data.via.array.ptr[j];
          char *name = p->type == MSGPACK_OBJECT_MAP ? mp_get_strdup (p, "pid") : NULL;
          if (name == NULL)
            continue;
          names = realloc (names, (n + 2) * sizeof *names);
          names[n++] = name;
          names[n] = NULL;
        }
    }
  msgpack_unpacked_destroy (&u);
  return names;
}

/* A small decimal file of the process's directory, never through a link
 * (the directory is a rootless caller's); false when absent or not one
 * number. */
static bool
s_read_number (const char *dir, const char *name, uint64_t *out)
{
  char path[PATH_MAX];
  if (snprintf (path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
    return false;
  cleanup_free char *text = NULL;
  if (zcd_read_file_nofollow (path, 32, &text, NULL, NULL) < 0)
    return false;
  char *end;
  unsigned long long v = strtoull (text, &end, 10);
  if (end == text || text[0] == '-' || (*end && *end != '\n'))
    return false;
  *out = v;
  return true;
}

/* Resident bytes of a process (/proc/<pid>/statm); false when it is gone. */
static bool
s_proc_rss (unsigned long long pid, uint64_t *rss)
{
  char statm[64];
  snprintf (statm, sizeof statm, "/proc/%llu/statm", pid);
  cleanup_free char *text = NULL;
  unsigned long long size, resident;
  if (zcd_read_file (statm, 256, &text, NULL, NULL) < 0
      || sscanf (text, "%llu %llu", &size, &resident) != 2)
    return false;
  *rss = resident * (uint64_t)sysconf (_SC_PAGESIZE);
  return true;
}

/* Whether a and b run the same program, by their exe links read as text:
 * readlink(2) of /proc/<pid>/exe asks no file system, while stat(2)
 * through it asks the program's (getattr): a container's program on a
 * FUSE or NFS mount whose server hangs would hang the loop. */
static bool
s_same_exe (unsigned long long a, unsigned long long b)
{
  char pa[64], pb[64], ea[PATH_MAX], eb[PATH_MAX];
  snprintf (pa, sizeof pa, "/proc/%llu/exe", a);
  snprintf (pb, sizeof pb, "/proc/%llu/exe", b);
  ssize_t na = readlink (pa, ea, sizeof ea);
  ssize_t nb = readlink (pb, eb, sizeof eb);
  return na > 0 && na < (ssize_t)sizeof ea && na == nb && memcmp (ea, eb, (size_t)na) == 0;
}

/* The resident memory of the shim of the process whose directory is dir
 * (real_dir: the same, without links), when it runs: its pid file names
 * it, and it is ours if its working directory is that directory (a pid
 * alone may be a recycled one, or a rootless owner's word).  An init's
 * shim forks its delete helper ahead (shim/reap.c): that child, the same
 * program, is part of what the shim costs; the container's processes,
 * its other children, are not. */
static bool
s_shim_rss (const char *dir, const char *real_dir, uint64_t *rss)
{
  uint64_t pid;
  if (!s_read_number (dir, "shim.pid", &pid) || pid == 0 || pid > INT_MAX)
    return false;
  char link[64], cwd[PATH_MAX];
  snprintf (link, sizeof link, "/proc/%llu/cwd", (unsigned long long)pid);
  ssize_t n = readlink (link, cwd, sizeof cwd - 1);
  if (n <= 0)
    return false;
  cwd[n] = '\0';
  if (strcmp (cwd, real_dir) != 0 || !s_proc_rss (pid, rss))
    return false;
  char children[80];
  snprintf (children, sizeof children, "/proc/%llu/task/%llu/children", (unsigned long long)pid,
            (unsigned long long)pid);
  cleanup_free char *list = NULL;
  if (zcd_read_file (children, 4096, &list, NULL, NULL) < 0)
    return true;
  for (char *p = list, *end; *p; p = end)
    {
      unsigned long long child = strtoull (p, &end, 10);
      uint64_t more;
      if (end == p)
        break;
      if (s_same_exe (pid, child) && s_proc_rss (child, &more))
        *rss += more;
    }
  return true;
}

typedef struct
{
  uint64_t shims, shim_rss;
  lazy_family_t dropped;
} process_walk_t;

static void
s_walk_container (supervisor_t *sup, metrics_text_t *t, const char *real_state,
                  container_entry_t *e, bool visible, process_walk_t *w)
{
  char **names = s_process_names (e);
  for (size_t i = 0; names[i]; i++)
    {
      cleanup_free char *dir = zcd_process_dir (sup->daemon->config, e->id, names[i]);
      char real_dir[PATH_MAX];
      uint64_t v;
      if (dir == NULL)
        continue;
      int n = snprintf (real_dir, sizeof real_dir,
                        "%s/" ZCD_CONTAINERS_DIR "/%s/" ZCD_PROCS_DIR "/%s", real_state, e->id,
                        names[i]);
      bool matchable = real_state[0] && n > 0 && (size_t)n < sizeof real_dir;
      if (matchable && s_shim_rss (dir, real_dir, &v))
        {
          w->shims++;
          w->shim_rss += v;
        }
      if (visible && s_read_number (dir, LOG_DROPPED_FILE, &v))
        {
          metrics_label_t labels[] = { { "id", e->id }, { "pid", names[i] } };
          s_lazy_u64 (t, &w->dropped, labels, 2, v, false);
        }
    }
  mp_strv_free (names);
}

/* Dropped log bytes of the processes the caller may see (listed as they
 * come: one family), then the shims of every container. */
static void
s_put_processes (supervisor_t *sup, metrics_text_t *t, const zcd_caller_t *caller)
{
  process_walk_t w = {
    .dropped
    = { "zcd_process_log_dropped_bytes_total", "counter",
        "Output bytes the process's bounded log dropped (the shim's log-dropped file).", false },
  };
  char real_state[PATH_MAX] = "";
  if (realpath (sup->daemon->config->state_dir, real_state) == NULL)
    real_state[0] = '\0'; /* no shim can be matched, so none is counted */
  for (container_entry_t *e = zhashx_first (sup->containers); e; e = zhashx_next (sup->containers))
    if (e->view)
      s_walk_container (sup, t, real_state, e, supervisor_may_see (caller, e), &w);
  metrics_put_one (t, "zcd_shims", "gauge", "Shims running for the daemon's processes.", w.shims);
  metrics_put_one (t, "zcd_shim_resident_memory_bytes", "gauge",
                   "Resident memory of those shims (with their delete helpers), in all.",
                   w.shim_rss);
}

void
metrics_prom_put_containers (supervisor_t *sup, metrics_text_t *t, const zcd_caller_t *caller,
                             const msgpack_object *stats)
{
  s_put_cgroups (sup, t, caller, stats);
  s_put_processes (sup, t, caller);
}
