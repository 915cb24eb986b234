/* The `stats` operation's reader: one cgroup's v1 or v2 files gathered
 * and packed as a PROTOCOL.md `Stats` map (see cgroup_stats_pack in
 * core/cgroup.h for which file feeds which field). */
#include <ctype.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cgroup.h"
#include "core/cgroup_int.h"
#include "core/cleanup.h"
#include "core/mp.h"

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
  *arr = cgroup_xrealloc (*arr, (*n + 1) * sizeof **arr);
  s_blkio_t *e = &(*arr)[(*n)++];
  e->major = major;
  e->minor = minor;
  snprintf (e->op, sizeof e->op, "%s", op);
  e->value = value;
}

static void
s_read_percpu (const char *dir, s_stats_t *st)
{
  cleanup_free char *text = cgroup_read_text (dir, "cpuacct.usage_percpu");
  for (char *p = text; p && *p;)
    {
      char *end;
      unsigned long long v = strtoull (p, &end, 10);
      if (end == p)
        break;
      st->percpu = cgroup_xrealloc (st->percpu, (st->n_percpu + 1) * sizeof *st->percpu);
      st->percpu[st->n_percpu++] = (uint64_t)v;
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
  cleanup_free char *text = cgroup_read_text (dir, recursive);
  if (text == NULL)
    text = cgroup_read_text (dir, name);
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
      st->hugetlb = cgroup_xrealloc (st->hugetlb, (st->n_hugetlb + 1) * sizeof *st->hugetlb);
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
  h->usage = cgroup_read_u64 (dir, name);
  snprintf (name, sizeof name, "hugetlb.%s.max_usage_in_bytes", h->size);
  h->max = cgroup_read_u64 (dir, name);
  snprintf (name, sizeof name, "hugetlb.%s.failcnt", h->size);
  h->failcnt = cgroup_read_u64 (dir, name);
}

static void
s_fill_hugetlb_v2 (const char *dir, s_hugetlb_t *h)
{
  char name[64];
  snprintf (name, sizeof name, "hugetlb.%s.current", h->size);
  h->usage = cgroup_read_u64 (dir, name);
  snprintf (name, sizeof name, "hugetlb.%s.max", h->size);
  h->max = cgroup_read_u64 (dir, name);
  snprintf (name, sizeof name, "hugetlb.%s.events", h->size);
  h->failcnt = cgroup_read_keyed (dir, name, "max");
}

static void
s_read_mem_v1 (const char *dir, const char *prefix, s_mem_t *m)
{
  char name[64];
  snprintf (name, sizeof name, "%susage_in_bytes", prefix);
  m->usage = cgroup_read_u64 (dir, name);
  snprintf (name, sizeof name, "%smax_usage_in_bytes", prefix);
  m->max = cgroup_read_u64 (dir, name);
  snprintf (name, sizeof name, "%sfailcnt", prefix);
  m->failcnt = cgroup_read_u64 (dir, name);
  snprintf (name, sizeof name, "%slimit_in_bytes", prefix);
  m->limit = cgroup_read_u64 (dir, name);
}

static void
s_gather_v1 (const cgroup_paths_t *paths, s_stats_t *st)
{
  const char *cpuacct = cgroup_paths_dir (paths, "cpuacct");
  const char *memory = cgroup_paths_dir (paths, "memory");
  st->cpu_total = cgroup_read_u64 (cpuacct, "cpuacct.usage");
  s_read_percpu (cpuacct, st);
  /* cpuacct.stat counts USER_HZ ticks. */
  long hz = sysconf (_SC_CLK_TCK);
  uint64_t ns_per_tick = hz > 0 ? 1000000000u / (uint64_t)hz : 10000000u;
  cleanup_free char *cpuacct_stat = cgroup_read_text (cpuacct, "cpuacct.stat");
  st->cpu_user = cgroup_keyed0 (cpuacct_stat, "user") * ns_per_tick;
  st->cpu_kernel = cgroup_keyed0 (cpuacct_stat, "system") * ns_per_tick;
  cleanup_free char *cpu_stat = cgroup_read_text (cgroup_paths_dir (paths, "cpu"), "cpu.stat");
  st->periods = cgroup_keyed0 (cpu_stat, "nr_periods");
  st->throttled_periods = cgroup_keyed0 (cpu_stat, "nr_throttled");
  st->throttled_time = cgroup_keyed0 (cpu_stat, "throttled_time");

  s_read_mem_v1 (memory, "memory.", &st->usage);
  s_read_mem_v1 (memory, "memory.memsw.", &st->swap);
  s_read_mem_v1 (memory, "memory.kmem.", &st->kernel);
  st->memory_stat = cgroup_read_text (memory, "memory.stat");
  st->cache = cgroup_keyed0 (st->memory_stat, "cache");

  const char *pids = cgroup_paths_dir (paths, "pids");
  st->pids_current = cgroup_read_u64 (pids, "pids.current");
  st->pids_limit = cgroup_read_u64 (pids, "pids.max");

  const char *blkio = cgroup_paths_dir (paths, "blkio");
  s_read_blkio_v1 (blkio, "blkio.throttle.io_service_bytes", &st->bytes, &st->n_bytes);
  s_read_blkio_v1 (blkio, "blkio.throttle.io_serviced", &st->serviced, &st->n_serviced);
  s_read_hugetlb (cgroup_paths_dir (paths, "hugetlb"), ".usage_in_bytes", st, s_fill_hugetlb_v1);
}

/* io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6". */
static bool
s_io_field (const char *line, const char *key, uint64_t *out)
{
  size_t klen = strlen (key);
  for (const char *p = strchr (line, ' '); p; p = strchr (p + 1, ' '))
    if (strncmp (p + 1, key, klen) == 0 && p[1 + klen] == '=')
      {
        *out = cgroup_parse_u64 (p + 2 + klen);
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
  cleanup_free char *text = cgroup_read_text (dir, "io.stat");
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
  cleanup_free char *cpu_stat = cgroup_read_text (dir, "cpu.stat");
  st->cpu_total = cgroup_keyed0 (cpu_stat, "usage_usec") * 1000;
  st->cpu_user = cgroup_keyed0 (cpu_stat, "user_usec") * 1000;
  st->cpu_kernel = cgroup_keyed0 (cpu_stat, "system_usec") * 1000;
  st->periods = cgroup_keyed0 (cpu_stat, "nr_periods");
  st->throttled_periods = cgroup_keyed0 (cpu_stat, "nr_throttled");
  st->throttled_time = cgroup_keyed0 (cpu_stat, "throttled_usec") * 1000;

  st->usage.usage = cgroup_read_u64 (dir, "memory.current");
  st->usage.max = cgroup_read_u64 (dir, "memory.peak");
  st->usage.failcnt = cgroup_read_keyed (dir, "memory.events", "max");
  st->usage.limit = cgroup_read_u64 (dir, "memory.max");
  st->swap.usage = cgroup_read_u64 (dir, "memory.swap.current");
  st->swap.max = cgroup_read_u64 (dir, "memory.swap.peak");
  st->swap.failcnt = cgroup_read_keyed (dir, "memory.swap.events", "max");
  st->swap.limit = cgroup_read_u64 (dir, "memory.swap.max");
  st->memory_stat = cgroup_read_text (dir, "memory.stat");
  st->cache = cgroup_keyed0 (st->memory_stat, "file");
  /* "kernel" appeared in 5.18; before, its two big parts. */
  if (!cgroup_keyed (st->memory_stat, "kernel", &st->kernel.usage))
    st->kernel.usage
        = cgroup_keyed0 (st->memory_stat, "kernel_stack") + cgroup_keyed0 (st->memory_stat, "slab");

  st->pids_current = cgroup_read_u64 (dir, "pids.current");
  st->pids_limit = cgroup_read_u64 (dir, "pids.max");
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
          const char *space = memchr (line, ' ', (size_t)(end - line));
          if (space && space > line && isdigit ((unsigned char)space[1]))
            {
              if (pass == 0)
                n++;
              else
                {
                  mp_pack_strn (pk, line, (size_t)(space - line));
                  msgpack_pack_uint64 (pk, cgroup_parse_u64 (space + 1));
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

int
cgroup_stats_pack (const cgroup_paths_t *paths, msgpack_packer *pk, zcd_error_t **err)
{
  const char *main_dir = cgroup_main_dir (paths);
  if (main_dir == NULL || !cgroup_is_dir (main_dir))
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
