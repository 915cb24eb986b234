#include "core/cgroup.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/mp.h"

#define CGROUP_MAX_CONTROLLERS 16
/* memory.stat is the largest file read here, a few KiB. */
#define CGROUP_FILE_MAX (1u << 20)

struct cgroup_paths
{
  cgroup_version_t version;
  /* v2: the cgroup's directory.  v1: the hybrid host's unified directory,
   * NULL when there is none. */
  char *unified;
  size_t n_controllers;
  struct
  {
    char name[32];
    char *dir;
  } controllers[CGROUP_MAX_CONTROLLERS];
  /* v2 memory.events counters at the last OOM watch read. */
  uint64_t oom_seen, oom_kill_seen;
};

/* Running out of memory reading a few small files is not reportable in any
 * useful way; err.c takes the same line. */
static void *
s_xrealloc (void *p, size_t size)
{
  void *q = realloc (p, size ? size : 1);
  if (q == NULL)
    abort ();
  return q;
}

static char *
s_xasprintf (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
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

static bool
s_is_dir (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0 && S_ISDIR (st.st_mode);
}

static bool
s_exists_in (const char *dir, const char *name)
{
  char path[PATH_MAX];
  if (dir == NULL || (size_t) snprintf (path, sizeof path, "%s/%s", dir, name) >= sizeof path)
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
  bool joined_exists = strchr (names, ',') != NULL && s_is_dir (joined);
  char *save = NULL;
  for (char *name = strtok_r (names, ",", &save); name; name = strtok_r (NULL, ",", &save))
    {
      if (strncmp (name, "name=", 5) == 0 || strlen (name) >= sizeof self->controllers[0].name
          || self->n_controllers == CGROUP_MAX_CONTROLLERS)
        continue;
      size_t i = self->n_controllers++;
      strcpy (self->controllers[i].name, name);
      self->controllers[i].dir = joined_exists ? s_xasprintf ("%s", joined)
                                               : s_xasprintf ("%s/%s%s", root, name,
                                                              s_suffix (path));
    }
}

static char *
s_unified_dir (const char *root, const char *path, bool hybrid)
{
  cleanup_free char *unified_root = s_xasprintf ("%s/unified", root);
  bool pure_v2 = s_exists_in (root, "cgroup.controllers");
  if (!pure_v2 && s_is_dir (unified_root))
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
  snprintf (file, sizeof file, "/proc/%d/cgroup", (int) pid);
  return cgroup_paths_from_file (root, file, out, err);
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
static char *
s_read (const char *dir, const char *name)
{
  char path[PATH_MAX];
  if (dir == NULL || (size_t) snprintf (path, sizeof path, "%s/%s", dir, name) >= sizeof path)
    return NULL;
  char *text = NULL;
  if (zcd_read_file (path, CGROUP_FILE_MAX, &text, NULL, NULL) < 0)
    return NULL;
  return text;
}

/* "max" (no limit) and anything unparsable read as 0, as PROTOCOL.md asks
 * for what a cgroup does not have. */
static uint64_t
s_parse_u64 (const char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  if (!isdigit ((unsigned char) *s))
    return 0;
  errno = 0;
  unsigned long long v = strtoull (s, NULL, 10);
  return errno ? 0 : (uint64_t) v;
}

static uint64_t
s_read_u64 (const char *dir, const char *name)
{
  cleanup_free char *text = s_read (dir, name);
  return text ? s_parse_u64 (text) : 0;
}

/* Value of `key` in a flat keyed file ("key value" lines). */
static bool
s_keyed (const char *text, const char *key, uint64_t *out)
{
  size_t klen = strlen (key);
  for (const char *line = text; line && *line;)
    {
      if (strncmp (line, key, klen) == 0 && line[klen] == ' ')
        {
          *out = s_parse_u64 (line + klen + 1);
          return true;
        }
      line = strchr (line, '\n');
      if (line)
        line++;
    }
  return false;
}

static uint64_t
s_keyed0 (const char *text, const char *key)
{
  uint64_t v = 0;
  s_keyed (text, key, &v);
  return v;
}

static uint64_t
s_read_keyed (const char *dir, const char *name, const char *key)
{
  cleanup_free char *text = s_read (dir, name);
  return s_keyed0 (text, key);
}

/* ---- gathering -------------------------------------------------------- */

typedef struct
{
  uint64_t usage, max, failcnt, limit;
} s_mem_t;

typedef struct
{
  uint32_t major, minor;
  char op[16];
  uint64_t value;
} s_blkio_t;

typedef struct
{
  char size[16];
  uint64_t usage, max, failcnt;
} s_hugetlb_t;

typedef struct
{
  uint64_t cpu_total, cpu_kernel, cpu_user;
  uint64_t *percpu;
  size_t n_percpu;
  uint64_t periods, throttled_periods, throttled_time;
  uint64_t cache;
  s_mem_t usage, swap, kernel;
  char *memory_stat;
  uint64_t pids_current, pids_limit;
  s_blkio_t *bytes, *serviced;
  size_t n_bytes, n_serviced;
  s_hugetlb_t *hugetlb;
  size_t n_hugetlb;
} s_stats_t;

static void
s_stats_free (s_stats_t *st)
{
  free (st->percpu);
  free (st->memory_stat);
  free (st->bytes);
  free (st->serviced);
  free (st->hugetlb);
}

static void
s_push_blkio (s_blkio_t **arr, size_t *n, uint32_t major, uint32_t minor, const char *op,
              uint64_t value)
{
  *arr = s_xrealloc (*arr, (*n + 1) * sizeof **arr);
  s_blkio_t *e = &(*arr)[(*n)++];
  e->major = major;
  e->minor = minor;
  snprintf (e->op, sizeof e->op, "%s", op);
  e->value = value;
}

static void
s_read_percpu (const char *dir, s_stats_t *st)
{
  cleanup_free char *text = s_read (dir, "cpuacct.usage_percpu");
  for (char *p = text; p && *p;)
    {
      char *end;
      unsigned long long v = strtoull (p, &end, 10);
      if (end == p)
        break;
      st->percpu = s_xrealloc (st->percpu, (st->n_percpu + 1) * sizeof *st->percpu);
      st->percpu[st->n_percpu++] = (uint64_t) v;
      p = end;
    }
}

/* blkio.throttle.* lines: "8:0 Read 4096"; the last one, "Total N", has no
 * device and is dropped. */
static void
s_read_blkio_v1 (const char *dir, const char *name, s_blkio_t **arr, size_t *n)
{
  char recursive[128];
  snprintf (recursive, sizeof recursive, "%s_recursive", name);
  cleanup_free char *text = s_read (dir, recursive);
  if (text == NULL)
    text = s_read (dir, name);
  char *save = NULL;
  for (char *line = text ? strtok_r (text, "\n", &save) : NULL; line;
       line = strtok_r (NULL, "\n", &save))
    {
      unsigned major, minor;
      char op[16];
      uint64_t value;
      if (sscanf (line, "%u:%u %15s %" SCNu64, &major, &minor, op, &value) == 4)
        s_push_blkio (arr, n, major, minor, op, value);
    }
}

static void
s_read_hugetlb (const char *dir, const char *usage_suffix, s_stats_t *st,
                void (*fill) (const char *dir, s_hugetlb_t *h))
{
  cleanup_dir DIR *d = dir ? opendir (dir) : NULL;
  struct dirent *de;
  size_t suffix_len = strlen (usage_suffix);
  while (d && (de = readdir (d)) != NULL)
    {
      /* hugetlb.<size><suffix>; "hugetlb.2MB.rsvd.*" files are not sizes. */
      const char *name = de->d_name;
      size_t len = strlen (name);
      if (strncmp (name, "hugetlb.", 8) != 0 || len <= 8 + suffix_len
          || strcmp (name + len - suffix_len, usage_suffix) != 0)
        continue;
      size_t size_len = len - 8 - suffix_len;
      if (size_len >= sizeof st->hugetlb[0].size || memchr (name + 8, '.', size_len))
        continue;
      st->hugetlb = s_xrealloc (st->hugetlb, (st->n_hugetlb + 1) * sizeof *st->hugetlb);
      s_hugetlb_t *h = &st->hugetlb[st->n_hugetlb++];
      memset (h, 0, sizeof *h);
      memcpy (h->size, name + 8, size_len);
      h->size[size_len] = '\0';
      fill (dir, h);
    }
}

static void
s_fill_hugetlb_v1 (const char *dir, s_hugetlb_t *h)
{
  char name[64];
  snprintf (name, sizeof name, "hugetlb.%s.usage_in_bytes", h->size);
  h->usage = s_read_u64 (dir, name);
  snprintf (name, sizeof name, "hugetlb.%s.max_usage_in_bytes", h->size);
  h->max = s_read_u64 (dir, name);
  snprintf (name, sizeof name, "hugetlb.%s.failcnt", h->size);
  h->failcnt = s_read_u64 (dir, name);
}

static void
s_fill_hugetlb_v2 (const char *dir, s_hugetlb_t *h)
{
  char name[64];
  snprintf (name, sizeof name, "hugetlb.%s.current", h->size);
  h->usage = s_read_u64 (dir, name);
  snprintf (name, sizeof name, "hugetlb.%s.max", h->size);
  h->max = s_read_u64 (dir, name);
  snprintf (name, sizeof name, "hugetlb.%s.events", h->size);
  h->failcnt = s_read_keyed (dir, name, "max");
}

static void
s_read_mem_v1 (const char *dir, const char *prefix, s_mem_t *m)
{
  char name[64];
  snprintf (name, sizeof name, "%susage_in_bytes", prefix);
  m->usage = s_read_u64 (dir, name);
  snprintf (name, sizeof name, "%smax_usage_in_bytes", prefix);
  m->max = s_read_u64 (dir, name);
  snprintf (name, sizeof name, "%sfailcnt", prefix);
  m->failcnt = s_read_u64 (dir, name);
  snprintf (name, sizeof name, "%slimit_in_bytes", prefix);
  m->limit = s_read_u64 (dir, name);
}

static void
s_gather_v1 (const cgroup_paths_t *paths, s_stats_t *st)
{
  const char *cpuacct = cgroup_paths_dir (paths, "cpuacct");
  const char *memory = cgroup_paths_dir (paths, "memory");
  st->cpu_total = s_read_u64 (cpuacct, "cpuacct.usage");
  s_read_percpu (cpuacct, st);
  /* cpuacct.stat counts USER_HZ ticks. */
  long hz = sysconf (_SC_CLK_TCK);
  uint64_t ns_per_tick = hz > 0 ? 1000000000u / (uint64_t) hz : 10000000u;
  cleanup_free char *cpuacct_stat = s_read (cpuacct, "cpuacct.stat");
  st->cpu_user = s_keyed0 (cpuacct_stat, "user") * ns_per_tick;
  st->cpu_kernel = s_keyed0 (cpuacct_stat, "system") * ns_per_tick;
  cleanup_free char *cpu_stat = s_read (cgroup_paths_dir (paths, "cpu"), "cpu.stat");
  st->periods = s_keyed0 (cpu_stat, "nr_periods");
  st->throttled_periods = s_keyed0 (cpu_stat, "nr_throttled");
  st->throttled_time = s_keyed0 (cpu_stat, "throttled_time");

  s_read_mem_v1 (memory, "memory.", &st->usage);
  s_read_mem_v1 (memory, "memory.memsw.", &st->swap);
  s_read_mem_v1 (memory, "memory.kmem.", &st->kernel);
  st->memory_stat = s_read (memory, "memory.stat");
  st->cache = s_keyed0 (st->memory_stat, "cache");

  const char *pids = cgroup_paths_dir (paths, "pids");
  st->pids_current = s_read_u64 (pids, "pids.current");
  st->pids_limit = s_read_u64 (pids, "pids.max");

  const char *blkio = cgroup_paths_dir (paths, "blkio");
  s_read_blkio_v1 (blkio, "blkio.throttle.io_service_bytes", &st->bytes, &st->n_bytes);
  s_read_blkio_v1 (blkio, "blkio.throttle.io_serviced", &st->serviced, &st->n_serviced);
  s_read_hugetlb (cgroup_paths_dir (paths, "hugetlb"), ".usage_in_bytes", st,
                  s_fill_hugetlb_v1);
}

/* io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6". */
static bool
s_io_field (const char *line, const char *key, uint64_t *out)
{
  size_t klen = strlen (key);
  for (const char *p = strchr (line, ' '); p; p = strchr (p + 1, ' '))
    if (strncmp (p + 1, key, klen) == 0 && p[1 + klen] == '=')
      {
        *out = s_parse_u64 (p + 2 + klen);
        return true;
      }
  return false;
}

static void
s_push_io_ops (s_blkio_t **arr, size_t *n, unsigned major, unsigned minor, const char *line,
               const char *read_key, const char *write_key, const char *discard_key)
{
  uint64_t r = 0, w = 0, d = 0;
  s_io_field (line, read_key, &r);
  s_io_field (line, write_key, &w);
  bool has_discard = s_io_field (line, discard_key, &d);
  s_push_blkio (arr, n, major, minor, "Read", r);
  s_push_blkio (arr, n, major, minor, "Write", w);
  if (has_discard)
    s_push_blkio (arr, n, major, minor, "Discard", d);
  s_push_blkio (arr, n, major, minor, "Total", r + w + d);
}

static void
s_read_io_v2 (const char *dir, s_stats_t *st)
{
  cleanup_free char *text = s_read (dir, "io.stat");
  char *save = NULL;
  for (char *line = text ? strtok_r (text, "\n", &save) : NULL; line;
       line = strtok_r (NULL, "\n", &save))
    {
      unsigned major, minor;
      if (sscanf (line, "%u:%u", &major, &minor) != 2)
        continue;
      s_push_io_ops (&st->bytes, &st->n_bytes, major, minor, line, "rbytes", "wbytes", "dbytes");
      s_push_io_ops (&st->serviced, &st->n_serviced, major, minor, line, "rios", "wios", "dios");
    }
}

static void
s_gather_v2 (const cgroup_paths_t *paths, s_stats_t *st)
{
  const char *dir = paths->unified;
  cleanup_free char *cpu_stat = s_read (dir, "cpu.stat");
  st->cpu_total = s_keyed0 (cpu_stat, "usage_usec") * 1000;
  st->cpu_user = s_keyed0 (cpu_stat, "user_usec") * 1000;
  st->cpu_kernel = s_keyed0 (cpu_stat, "system_usec") * 1000;
  st->periods = s_keyed0 (cpu_stat, "nr_periods");
  st->throttled_periods = s_keyed0 (cpu_stat, "nr_throttled");
  st->throttled_time = s_keyed0 (cpu_stat, "throttled_usec") * 1000;

  st->usage.usage = s_read_u64 (dir, "memory.current");
  st->usage.max = s_read_u64 (dir, "memory.peak");
  st->usage.failcnt = s_read_keyed (dir, "memory.events", "max");
  st->usage.limit = s_read_u64 (dir, "memory.max");
  st->swap.usage = s_read_u64 (dir, "memory.swap.current");
  st->swap.max = s_read_u64 (dir, "memory.swap.peak");
  st->swap.failcnt = s_read_keyed (dir, "memory.swap.events", "max");
  st->swap.limit = s_read_u64 (dir, "memory.swap.max");
  st->memory_stat = s_read (dir, "memory.stat");
  st->cache = s_keyed0 (st->memory_stat, "file");
  /* "kernel" appeared in 5.18; before, its two big parts. */
  if (!s_keyed (st->memory_stat, "kernel", &st->kernel.usage))
    st->kernel.usage = s_keyed0 (st->memory_stat, "kernel_stack")
                       + s_keyed0 (st->memory_stat, "slab");

  st->pids_current = s_read_u64 (dir, "pids.current");
  st->pids_limit = s_read_u64 (dir, "pids.max");
  s_read_io_v2 (dir, st);
  s_read_hugetlb (dir, ".current", st, s_fill_hugetlb_v2);
}

/* ---- packing ---------------------------------------------------------- */

static void
s_pack_mem (msgpack_packer *pk, const char *key, const s_mem_t *m)
{
  mp_pack_str (pk, key);
  msgpack_pack_map (pk, 4);
  mp_pack_kv_uint (pk, "usage", m->usage);
  mp_pack_kv_uint (pk, "max", m->max);
  mp_pack_kv_uint (pk, "failcnt", m->failcnt);
  mp_pack_kv_uint (pk, "limit", m->limit);
}

/* memory.stat as {str: uint}; lines that are not "key number" are left out. */
static void
s_pack_memory_stat (msgpack_packer *pk, const char *text)
{
  size_t n = 0;
  for (int pass = 0; pass < 2; pass++)
    {
      if (pass == 1)
        msgpack_pack_map (pk, n);
      for (const char *line = text; line && *line;)
        {
          const char *end = strchrnul (line, '\n');
          const char *space = memchr (line, ' ', (size_t) (end - line));
          if (space && space > line && isdigit ((unsigned char) space[1]))
            {
              if (pass == 0)
                n++;
              else
                {
                  mp_pack_strn (pk, line, (size_t) (space - line));
                  msgpack_pack_uint64 (pk, s_parse_u64 (space + 1));
                }
            }
          line = *end ? end + 1 : end;
        }
    }
}

static void
s_pack_blkio (msgpack_packer *pk, const char *key, const s_blkio_t *arr, size_t n)
{
  mp_pack_str (pk, key);
  msgpack_pack_array (pk, n);
  for (size_t i = 0; i < n; i++)
    {
      msgpack_pack_map (pk, 4);
      mp_pack_kv_uint (pk, "major", arr[i].major);
      mp_pack_kv_uint (pk, "minor", arr[i].minor);
      mp_pack_kv_str (pk, "op", arr[i].op);
      mp_pack_kv_uint (pk, "value", arr[i].value);
    }
}

static void
s_pack_cpu (msgpack_packer *pk, const s_stats_t *st)
{
  mp_pack_str (pk, "cpu");
  msgpack_pack_map (pk, 2);
  mp_pack_str (pk, "usage");
  msgpack_pack_map (pk, 4);
  mp_pack_kv_uint (pk, "total", st->cpu_total);
  mp_pack_str (pk, "percpu");
  msgpack_pack_array (pk, st->n_percpu);
  for (size_t i = 0; i < st->n_percpu; i++)
    msgpack_pack_uint64 (pk, st->percpu[i]);
  mp_pack_kv_uint (pk, "kernel", st->cpu_kernel);
  mp_pack_kv_uint (pk, "user", st->cpu_user);
  mp_pack_str (pk, "throttling");
  msgpack_pack_map (pk, 3);
  mp_pack_kv_uint (pk, "periods", st->periods);
  mp_pack_kv_uint (pk, "throttled_periods", st->throttled_periods);
  mp_pack_kv_uint (pk, "throttled_time", st->throttled_time);
}

static void
s_pack_stats (msgpack_packer *pk, const s_stats_t *st)
{
  msgpack_pack_map (pk, 5);
  s_pack_cpu (pk, st);

  mp_pack_str (pk, "memory");
  msgpack_pack_map (pk, 5);
  mp_pack_kv_uint (pk, "cache", st->cache);
  s_pack_mem (pk, "usage", &st->usage);
  s_pack_mem (pk, "swap", &st->swap);
  s_pack_mem (pk, "kernel", &st->kernel);
  mp_pack_str (pk, "stats");
  s_pack_memory_stat (pk, st->memory_stat);

  mp_pack_str (pk, "pids");
  msgpack_pack_map (pk, 2);
  mp_pack_kv_uint (pk, "current", st->pids_current);
  mp_pack_kv_uint (pk, "limit", st->pids_limit);

  mp_pack_str (pk, "blkio");
  msgpack_pack_map (pk, 2);
  s_pack_blkio (pk, "io_service_bytes_recursive", st->bytes, st->n_bytes);
  s_pack_blkio (pk, "io_serviced_recursive", st->serviced, st->n_serviced);

  mp_pack_str (pk, "hugetlb");
  msgpack_pack_map (pk, st->n_hugetlb);
  for (size_t i = 0; i < st->n_hugetlb; i++)
    {
      mp_pack_str (pk, st->hugetlb[i].size);
      msgpack_pack_map (pk, 3);
      mp_pack_kv_uint (pk, "usage", st->hugetlb[i].usage);
      mp_pack_kv_uint (pk, "max", st->hugetlb[i].max);
      mp_pack_kv_uint (pk, "failcnt", st->hugetlb[i].failcnt);
    }
}

/* The directory whose absence means the container's cgroup is gone. */
static const char *
s_main_dir (const cgroup_paths_t *paths)
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

int
cgroup_stats_pack (const cgroup_paths_t *paths, msgpack_packer *pk, zcd_error_t **err)
{
  const char *main_dir = s_main_dir (paths);
  if (main_dir == NULL || !s_is_dir (main_dir))
    return zcd_fail (err, ZCD_E_NOT_FOUND, "cgroup `%s` is gone", main_dir ? main_dir : "");
  s_stats_t st = { 0 };
  if (paths->version == CGROUP_V2)
    s_gather_v2 (paths, &st);
  else
    s_gather_v1 (paths, &st);
  s_pack_stats (pk, &st);
  s_stats_free (&st);
  return 0;
}

/* ---- OOM -------------------------------------------------------------- */

static int
s_oom_watch_open_v1 (const char *memory, int *fd_out, zcd_error_t **err)
{
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/memory.oom_control", memory);
  cleanup_close int oom_control = open (path, O_RDONLY | O_CLOEXEC);
  if (oom_control < 0)
    return zcd_fail_errno (err, errno, "open `%s`", path);
  cleanup_close int efd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0)
    return zcd_fail_errno (err, errno, "eventfd");
  snprintf (path, sizeof path, "%s/cgroup.event_control", memory);
  /* A kernel control file: written in place, it cannot be renamed over. */
  cleanup_close int control = open (path, O_WRONLY | O_CLOEXEC);
  if (control < 0)
    return zcd_fail_errno (err, errno, "open `%s`", path);
  char line[32];
  int len = snprintf (line, sizeof line, "%d %d", efd, oom_control);
  if (write (control, line, (size_t) len) != len)
    return zcd_fail_errno (err, errno, "register OOM eventfd with `%s`", path);
  /* The kernel holds its own references now; oom_control can be closed. */
  *fd_out = steal_fd (&efd);
  return 0;
}

static int
s_read_oom_counts (const char *dir, uint64_t *oom, uint64_t *oom_kill)
{
  cleanup_free char *events = s_read (dir, "memory.events");
  if (events == NULL)
    return -1;
  *oom = s_keyed0 (events, "oom");
  *oom_kill = s_keyed0 (events, "oom_kill");
  return 0;
}

static int
s_oom_watch_open_v2 (cgroup_paths_t *paths, int *fd_out, zcd_error_t **err)
{
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/memory.events", paths->unified);
  cleanup_close int fd = inotify_init1 (IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0)
    return zcd_fail_errno (err, errno, "inotify_init1");
  if (inotify_add_watch (fd, path, IN_MODIFY) < 0)
    return zcd_fail_errno (err, errno, "watch `%s`", path);
  /* The baseline is read after the watch exists, so no OOM falls between. */
  if (s_read_oom_counts (paths->unified, &paths->oom_seen, &paths->oom_kill_seen) < 0)
    return zcd_fail_errno (err, errno, "read `%s`", path);
  *fd_out = steal_fd (&fd);
  return 0;
}

int
cgroup_oom_watch_open (cgroup_paths_t *paths, int *fd_out, zcd_error_t **err)
{
  if (paths->version == CGROUP_V2)
    return s_oom_watch_open_v2 (paths, fd_out, err);
  const char *memory = cgroup_paths_dir (paths, "memory");
  if (memory == NULL)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "no memory cgroup to watch for OOM");
  return s_oom_watch_open_v1 (memory, fd_out, err);
}

static int
s_oom_watch_read_v1 (const cgroup_paths_t *paths, int fd, bool *oom_happened, zcd_error_t **err)
{
  uint64_t count = 0;
  if (read (fd, &count, sizeof count) < 0 && errno != EAGAIN && errno != EINTR)
    return zcd_fail_errno (err, errno, "read OOM eventfd");
  /* The kernel signals the eventfd once more when the cgroup is removed
   * (mem_cgroup_css_offline); runc checks for the same thing. */
  bool gone = !s_exists_in (cgroup_paths_dir (paths, "memory"), "cgroup.event_control");
  *oom_happened = gone ? count > 1 : count > 0;
  return 0;
}

static int
s_oom_watch_read_v2 (cgroup_paths_t *paths, int fd, bool *oom_happened, zcd_error_t **err)
{
  char buf[4096] __attribute__ ((aligned (__alignof__ (struct inotify_event))));
  for (;;)
    {
      ssize_t n = read (fd, buf, sizeof buf);
      if (n > 0)
        continue;
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno != EAGAIN)
        return zcd_fail_errno (err, errno, "read OOM inotify fd");
      break;
    }
  uint64_t oom, oom_kill;
  *oom_happened = false;
  if (s_read_oom_counts (paths->unified, &oom, &oom_kill) < 0)
    return 0;
  *oom_happened = oom > paths->oom_seen || oom_kill > paths->oom_kill_seen;
  paths->oom_seen = oom;
  paths->oom_kill_seen = oom_kill;
  return 0;
}

int
cgroup_oom_watch_read (cgroup_paths_t *paths, int fd, bool *oom_happened, zcd_error_t **err)
{
  if (paths->version == CGROUP_V2)
    return s_oom_watch_read_v2 (paths, fd, oom_happened, err);
  return s_oom_watch_read_v1 (paths, fd, oom_happened, err);
}

bool
cgroup_oom_killed (const cgroup_paths_t *paths)
{
  if (paths->version == CGROUP_V2)
    return s_read_keyed (paths->unified, "memory.events", "oom_kill") > 0;
  cleanup_free char *control = s_read (cgroup_paths_dir (paths, "memory"), "memory.oom_control");
  uint64_t kills;
  if (s_keyed (control, "oom_kill", &kills))
    return kills > 0;
  return s_keyed0 (control, "under_oom") > 0;
}

/* ---- processes -------------------------------------------------------- */

static int
s_cmp_pid (const void *a, const void *b)
{
  pid_t x = *(const pid_t *) a, y = *(const pid_t *) b;
  return (x > y) - (x < y);
}

int
cgroup_procs_read (const cgroup_paths_t *paths, pid_t **pids_out, size_t *n_out,
                   zcd_error_t **err)
{
  static const char *const hierarchies[] = { "pids", "memory", "cpu", "freezer" };
  const char *dir = NULL;
  for (size_t i = 0; dir == NULL && i < sizeof hierarchies / sizeof *hierarchies; i++)
    dir = cgroup_paths_dir (paths, hierarchies[i]);
  if (dir == NULL)
    dir = s_main_dir (paths);
  cleanup_free char *text = s_read (dir, "cgroup.procs");
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
          pids = s_xrealloc (pids, (n + 1) * sizeof *pids);
          pids[n++] = (pid_t) v;
        }
      p = end;
    }
  if (n > 1)
    qsort (pids, n, sizeof *pids, s_cmp_pid);
  *pids_out = pids;
  *n_out = n;
  return 0;
}
