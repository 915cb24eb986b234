/* core/cgroup: paths and Stats against fixture trees (v1 and v2), the v2
 * OOM watch on fixture files, and on this machine's cgroup v1: our own
 * cgroups, and a real OOM kill in a scratch memory cgroup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cgroup.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/mp.h"

typedef struct
{
  char root[64];
  pid_t child; /* test_oom_v1_real's child, killed by the teardown if a test failed */
} fixture_t;

static int
s_setup (void **state)
{
  fixture_t *f = calloc (1, sizeof *f);
  if (f == NULL)
    return -1;
  strcpy (f->root, "/tmp/zcd-test-cgroup-XXXXXX");
  if (mkdtemp (f->root) == NULL)
    return -1;
  *state = f;
  return 0;
}

static int
s_teardown (void **state)
{
  fixture_t *f = *state;
  zcd_rm_rf (f->root, NULL);
  if (f->child > 0)
    {
      kill (f->child, SIGKILL);
      waitpid (f->child, NULL, 0);
    }
  free (f);
  /* A failed test_oom_v1_real must not leave its cgroup behind. */
  char scratch[128];
  snprintf (scratch, sizeof scratch, "/sys/fs/cgroup/memory/zcd-test-%d", (int) getpid ());
  rmdir (scratch);
  return 0;
}

/* Write <root>/<rel>, creating its directory. */
static void
s_put (const fixture_t *f, const char *rel, const char *text)
{
  char path[512];
  snprintf (path, sizeof path, "%s/%s", f->root, rel);
  char *slash = strrchr (path, '/');
  *slash = '\0';
  assert_int_equal (zcd_mkdir_p (path, 0755, NULL), 0);
  *slash = '/';
  assert_int_equal (zcd_write_file_atomic (path, text, strlen (text), 0644, NULL), 0);
}

static void
s_mkdir (const fixture_t *f, const char *rel)
{
  char path[512];
  snprintf (path, sizeof path, "%s/%s", f->root, rel);
  assert_int_equal (zcd_mkdir_p (path, 0755, NULL), 0);
}

static char *
s_fixture_path (const fixture_t *f, const char *rel)
{
  char *path = NULL;
  assert_true (asprintf (&path, "%s/%s", f->root, rel) > 0);
  return path;
}

static cgroup_paths_t *
s_paths (const fixture_t *f, const char *proc_cgroup_text)
{
  s_put (f, "proc-cgroup", proc_cgroup_text);
  cleanup_free char *file = s_fixture_path (f, "proc-cgroup");
  cgroup_paths_t *paths = NULL;
  zcd_error_t *err = NULL;
  if (cgroup_paths_from_file (f->root, file, &paths, &err) != 0)
    fail_msg ("cgroup_paths_from_file: %s", err->msg);
  return paths;
}

static void
s_assert_dir (const fixture_t *f, const cgroup_paths_t *paths, const char *controller,
              const char *rel)
{
  cleanup_free char *want = s_fixture_path (f, rel);
  const char *got = cgroup_paths_dir (paths, controller);
  assert_non_null (got);
  assert_string_equal (got, want);
}

/* ---- decoding the packed Stats ---------------------------------------- */

typedef struct
{
  msgpack_sbuffer buf;
  msgpack_unpacked msg;
} packed_t;

static void
s_pack (const cgroup_paths_t *paths, packed_t *p)
{
  msgpack_sbuffer_init (&p->buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &p->buf, msgpack_sbuffer_write);
  zcd_error_t *err = NULL;
  if (cgroup_stats_pack (paths, &pk, &err) != 0)
    fail_msg ("cgroup_stats_pack: %s", err->msg);
  msgpack_unpacked_init (&p->msg);
  size_t off = 0;
  assert_int_equal (msgpack_unpack_next (&p->msg, p->buf.data, p->buf.size, &off),
                    MSGPACK_UNPACK_SUCCESS);
  assert_int_equal (off, p->buf.size);
  assert_int_equal (p->msg.data.type, MSGPACK_OBJECT_MAP);
}

static void
s_packed_free (packed_t *p)
{
  msgpack_unpacked_destroy (&p->msg);
  msgpack_sbuffer_destroy (&p->buf);
}

/* Follow a NULL-terminated chain of map keys. */
static const msgpack_object *
s_at (const packed_t *p, ...)
{
  va_list ap;
  va_start (ap, p);
  const msgpack_object *o = &p->msg.data;
  for (const char *key = va_arg (ap, const char *); key; key = va_arg (ap, const char *))
    {
      o = mp_map_get (o, key);
      if (o == NULL)
        fail_msg ("no key `%s` in the packed Stats", key);
    }
  va_end (ap);
  return o;
}

#define s_uint_at(p, ...) s_uint_of (s_at (p, __VA_ARGS__, (const char *) NULL))

static uint64_t
s_uint_of (const msgpack_object *o)
{
  uint64_t v;
  assert_true (mp_as_uint (o, &v));
  return v;
}

static void
s_assert_blkio (const msgpack_object *arr, size_t i, uint64_t major, uint64_t minor,
                const char *op, uint64_t value)
{
  assert_int_equal (arr->type, MSGPACK_OBJECT_ARRAY);
  assert_true (i < arr->via.array.size);
  const msgpack_object *e = &arr->via.array.ptr[i];
  assert_int_equal (mp_get_uint (e, "major", 999), major);
  assert_int_equal (mp_get_uint (e, "minor", 999), minor);
  assert_true (mp_str_eq (mp_map_get (e, "op"), op));
  assert_int_equal (mp_get_uint (e, "value", 999), value);
}

/* ---- paths ------------------------------------------------------------ */

static const char *const s_v1_proc_cgroup = "12:hugetlb:/box\n"
                                            "11:name=systemd:/box\n"
                                            "8:pids:/box\n"
                                            "7:blkio:/box\n"
                                            "6:freezer:/\n"
                                            "4:memory:/box\n"
                                            "2:cpu,cpuacct:/box\n"
                                            "0::/box\n";

static void
test_paths_v1_hybrid (void **state)
{
  fixture_t *f = *state;
  s_mkdir (f, "cpu,cpuacct/box");
  s_mkdir (f, "unified/box");
  cgroup_paths_t *paths = s_paths (f, s_v1_proc_cgroup);
  assert_int_equal (cgroup_paths_version (paths), CGROUP_V1);
  s_assert_dir (f, paths, "cpu", "cpu,cpuacct/box");
  s_assert_dir (f, paths, "cpuacct", "cpu,cpuacct/box");
  s_assert_dir (f, paths, "memory", "memory/box");
  s_assert_dir (f, paths, "pids", "pids/box");
  s_assert_dir (f, paths, "freezer", "freezer");
  assert_null (cgroup_paths_dir (paths, "systemd"));
  assert_null (cgroup_paths_dir (paths, "name=systemd"));
  assert_null (cgroup_paths_dir (paths, "cpuset"));
  cgroup_paths_destroy (&paths);
  assert_null (paths);
}

/* Without a co-mounted directory, each controller has its own mount (as on
 * this machine). */
static void
test_paths_v1_separate_mounts (void **state)
{
  fixture_t *f = *state;
  cgroup_paths_t *paths = s_paths (f, "3:cpu,cpuacct:/a/b\n1:memory:/a/b\n");
  assert_int_equal (cgroup_paths_version (paths), CGROUP_V1);
  s_assert_dir (f, paths, "cpu", "cpu/a/b");
  s_assert_dir (f, paths, "cpuacct", "cpuacct/a/b");
  s_assert_dir (f, paths, "memory", "memory/a/b");
  cgroup_paths_destroy (&paths);
}

static void
test_paths_v2 (void **state)
{
  fixture_t *f = *state;
  s_put (f, "cgroup.controllers", "cpu io memory pids\n");
  cgroup_paths_t *paths = s_paths (f, "0::/zcd/web1\n");
  assert_int_equal (cgroup_paths_version (paths), CGROUP_V2);
  s_assert_dir (f, paths, "memory", "zcd/web1");
  s_assert_dir (f, paths, "cpu", "zcd/web1");
  cgroup_paths_destroy (&paths);
}

/* Only `0::` but the root is a v1 tmpfs with a unified mount below it. */
static void
test_paths_v2_under_unified (void **state)
{
  fixture_t *f = *state;
  s_mkdir (f, "unified");
  cgroup_paths_t *paths = s_paths (f, "0::/zcd/web1\n");
  assert_int_equal (cgroup_paths_version (paths), CGROUP_V2);
  s_assert_dir (f, paths, "memory", "unified/zcd/web1");
  cgroup_paths_destroy (&paths);
}

static void
test_paths_errors (void **state)
{
  fixture_t *f = *state;
  cgroup_paths_t *paths = NULL;
  zcd_error_t *err = NULL;
  cleanup_free char *missing = s_fixture_path (f, "no-such-file");
  assert_int_equal (cgroup_paths_from_file (f->root, missing, &paths, &err), -1);
  assert_int_equal (err->code, ZCD_E_NOT_FOUND);
  zcd_error_free (&err);

  s_put (f, "proc-cgroup", "garbage\n");
  cleanup_free char *file = s_fixture_path (f, "proc-cgroup");
  assert_int_equal (cgroup_paths_from_file (f->root, file, &paths, &err), -1);
  assert_non_null (strstr (err->msg, "no cgroup found"));
  zcd_error_free (&err);
  assert_null (paths);

  /* pid_max is at most 2^22: this pid cannot exist. */
  assert_int_equal (cgroup_paths_for_pid (NULL, 99999999, &paths, &err), -1);
  assert_int_equal (err->code, ZCD_E_NOT_FOUND);
  zcd_error_free (&err);
}

/* ---- Stats, v1 -------------------------------------------------------- */

static void
s_write_v1_fixture (const fixture_t *f)
{
  s_mkdir (f, "cpu,cpuacct/box");
  s_put (f, "cpu,cpuacct/box/cpuacct.usage", "123456789\n");
  s_put (f, "cpu,cpuacct/box/cpuacct.usage_percpu", "100000000 23456789 0 \n");
  s_put (f, "cpu,cpuacct/box/cpuacct.stat", "user 250\nsystem 75\n");
  s_put (f, "cpu,cpuacct/box/cpu.stat", "nr_periods 40\nnr_throttled 3\nthrottled_time 5000000\n");
  s_put (f, "memory/box/memory.usage_in_bytes", "1048576\n");
  s_put (f, "memory/box/memory.max_usage_in_bytes", "2097152\n");
  s_put (f, "memory/box/memory.failcnt", "7\n");
  s_put (f, "memory/box/memory.limit_in_bytes", "9223372036854771712\n");
  s_put (f, "memory/box/memory.memsw.usage_in_bytes", "1150000\n");
  s_put (f, "memory/box/memory.memsw.max_usage_in_bytes", "2200000\n");
  s_put (f, "memory/box/memory.memsw.failcnt", "1\n");
  s_put (f, "memory/box/memory.memsw.limit_in_bytes", "4194304\n");
  s_put (f, "memory/box/memory.kmem.usage_in_bytes", "65536\n");
  /* no kmem max/failcnt/limit files: they read as 0 */
  s_put (f, "memory/box/memory.stat", "cache 40960\nrss 819200\nmapped_file 4096\n"
                                      "total_cache 40960\n");
  s_put (f, "pids/box/pids.current", "5\n");
  s_put (f, "pids/box/pids.max", "max\n");
  s_put (f, "blkio/box/blkio.throttle.io_service_bytes_recursive",
         "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 12288\n8:0 Async 0\n8:0 Total 12288\n"
         "Total 12288\n");
  /* The non-recursive file loses to the recursive one. */
  s_put (f, "blkio/box/blkio.throttle.io_service_bytes", "8:0 Read 1\nTotal 1\n");
  /* Only the non-recursive io_serviced exists (an old kernel). */
  s_put (f, "blkio/box/blkio.throttle.io_serviced", "253:1 Read 3\n253:1 Write 4\nTotal 7\n");
  s_put (f, "hugetlb/box/hugetlb.2MB.usage_in_bytes", "4194304\n");
  s_put (f, "hugetlb/box/hugetlb.2MB.max_usage_in_bytes", "6291456\n");
  s_put (f, "hugetlb/box/hugetlb.2MB.failcnt", "2\n");
  s_put (f, "hugetlb/box/hugetlb.2MB.rsvd.usage_in_bytes", "777\n");
  s_put (f, "hugetlb/box/hugetlb.1GB.usage_in_bytes", "0\n");
  s_put (f, "hugetlb/box/hugetlb.1GB.limit_in_bytes", "0\n");
}

static void
test_stats_v1_fixture (void **state)
{
  fixture_t *f = *state;
  s_write_v1_fixture (f);
  cgroup_paths_t *paths = s_paths (f, s_v1_proc_cgroup);
  packed_t p;
  s_pack (paths, &p);
  uint64_t ns_per_tick = 1000000000u / (uint64_t) sysconf (_SC_CLK_TCK);

  assert_int_equal (s_uint_at (&p, "cpu", "usage", "total"), 123456789);
  assert_int_equal (s_uint_at (&p, "cpu", "usage", "user"), 250 * ns_per_tick);
  assert_int_equal (s_uint_at (&p, "cpu", "usage", "kernel"), 75 * ns_per_tick);
  const msgpack_object *percpu = s_at (&p, "cpu", "usage", "percpu", NULL);
  assert_int_equal (percpu->type, MSGPACK_OBJECT_ARRAY);
  assert_int_equal (percpu->via.array.size, 3);
  assert_int_equal (s_uint_of (&percpu->via.array.ptr[0]), 100000000);
  assert_int_equal (s_uint_of (&percpu->via.array.ptr[1]), 23456789);
  assert_int_equal (s_uint_of (&percpu->via.array.ptr[2]), 0);
  assert_int_equal (s_uint_at (&p, "cpu", "throttling", "periods"), 40);
  assert_int_equal (s_uint_at (&p, "cpu", "throttling", "throttled_periods"), 3);
  assert_int_equal (s_uint_at (&p, "cpu", "throttling", "throttled_time"), 5000000);

  assert_int_equal (s_uint_at (&p, "memory", "cache"), 40960);
  assert_int_equal (s_uint_at (&p, "memory", "usage", "usage"), 1048576);
  assert_int_equal (s_uint_at (&p, "memory", "usage", "max"), 2097152);
  assert_int_equal (s_uint_at (&p, "memory", "usage", "failcnt"), 7);
  assert_true (s_uint_at (&p, "memory", "usage", "limit") == 9223372036854771712ull);
  assert_int_equal (s_uint_at (&p, "memory", "swap", "usage"), 1150000);
  assert_int_equal (s_uint_at (&p, "memory", "swap", "max"), 2200000);
  assert_int_equal (s_uint_at (&p, "memory", "swap", "failcnt"), 1);
  assert_int_equal (s_uint_at (&p, "memory", "swap", "limit"), 4194304);
  assert_int_equal (s_uint_at (&p, "memory", "kernel", "usage"), 65536);
  assert_int_equal (s_uint_at (&p, "memory", "kernel", "limit"), 0);
  assert_int_equal (s_at (&p, "memory", "stats", NULL)->via.map.size, 4);
  assert_int_equal (s_uint_at (&p, "memory", "stats", "rss"), 819200);
  assert_int_equal (s_uint_at (&p, "memory", "stats", "mapped_file"), 4096);

  assert_int_equal (s_uint_at (&p, "pids", "current"), 5);
  assert_int_equal (s_uint_at (&p, "pids", "limit"), 0);

  const msgpack_object *bytes = s_at (&p, "blkio", "io_service_bytes_recursive", NULL);
  assert_int_equal (bytes->via.array.size, 5);
  s_assert_blkio (bytes, 0, 8, 0, "Read", 4096);
  s_assert_blkio (bytes, 1, 8, 0, "Write", 8192);
  s_assert_blkio (bytes, 4, 8, 0, "Total", 12288);
  const msgpack_object *serviced = s_at (&p, "blkio", "io_serviced_recursive", NULL);
  assert_int_equal (serviced->via.array.size, 2);
  s_assert_blkio (serviced, 1, 253, 1, "Write", 4);

  assert_int_equal (s_at (&p, "hugetlb", NULL)->via.map.size, 2);
  assert_int_equal (s_uint_at (&p, "hugetlb", "2MB", "usage"), 4194304);
  assert_int_equal (s_uint_at (&p, "hugetlb", "2MB", "max"), 6291456);
  assert_int_equal (s_uint_at (&p, "hugetlb", "2MB", "failcnt"), 2);
  assert_int_equal (s_uint_at (&p, "hugetlb", "1GB", "usage"), 0);
  s_packed_free (&p);
  cgroup_paths_destroy (&paths);
}

static void
test_stats_of_removed_cgroup_is_not_found (void **state)
{
  fixture_t *f = *state;
  cgroup_paths_t *paths = s_paths (f, "4:memory:/gone\n2:cpuacct:/gone\n");
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
  zcd_error_t *err = NULL;
  assert_int_equal (cgroup_stats_pack (paths, &pk, &err), -1);
  assert_int_equal (err->code, ZCD_E_NOT_FOUND);
  assert_int_equal (buf.size, 0);
  zcd_error_free (&err);
  msgpack_sbuffer_destroy (&buf);
  cgroup_paths_destroy (&paths);
}

/* ---- Stats, v2 -------------------------------------------------------- */

static void
s_write_v2_fixture (const fixture_t *f)
{
  s_put (f, "cgroup.controllers", "cpu io memory pids hugetlb\n");
  s_put (f, "zcd/web1/cpu.stat", "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\n"
                                 "nr_periods 10\nnr_throttled 4\nthrottled_usec 1500\n");
  s_put (f, "zcd/web1/memory.current", "3145728\n");
  s_put (f, "zcd/web1/memory.peak", "4194304\n");
  s_put (f, "zcd/web1/memory.max", "max\n");
  s_put (f, "zcd/web1/memory.events", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n");
  s_put (f, "zcd/web1/memory.swap.current", "8192\n");
  s_put (f, "zcd/web1/memory.swap.max", "1048576\n");
  s_put (f, "zcd/web1/memory.swap.events", "high 0\nmax 2\nfail 0\n");
  s_put (f, "zcd/web1/memory.stat", "anon 2000000\nfile 1000000\nkernel_stack 16384\n"
                                    "slab 50000\nsock 0\n");
  s_put (f, "zcd/web1/pids.current", "3\n");
  s_put (f, "zcd/web1/pids.max", "100\n");
  s_put (f, "zcd/web1/io.stat", "8:16 rbytes=1024 wbytes=2048 rios=1 wios=2 dbytes=512 dios=3\n"
                                "253:0 rbytes=10 wbytes=20 rios=5 wios=6\n");
  s_put (f, "zcd/web1/hugetlb.2MB.current", "2097152\n");
  s_put (f, "zcd/web1/hugetlb.2MB.max", "max\n");
  s_put (f, "zcd/web1/hugetlb.2MB.events", "max 9\n");
  s_put (f, "zcd/web1/hugetlb.2MB.rsvd.current", "0\n");
}

static void
test_stats_v2_fixture (void **state)
{
  fixture_t *f = *state;
  s_write_v2_fixture (f);
  cgroup_paths_t *paths = s_paths (f, "0::/zcd/web1\n");
  packed_t p;
  s_pack (paths, &p);
  assert_int_equal (s_uint_at (&p, "cpu", "usage", "total"), 5000000);
  assert_int_equal (s_uint_at (&p, "cpu", "usage", "user"), 3000000);
  assert_int_equal (s_uint_at (&p, "cpu", "usage", "kernel"), 2000000);
  assert_int_equal (s_at (&p, "cpu", "usage", "percpu", NULL)->via.array.size, 0);
  assert_int_equal (s_uint_at (&p, "cpu", "throttling", "periods"), 10);
  assert_int_equal (s_uint_at (&p, "cpu", "throttling", "throttled_periods"), 4);
  assert_int_equal (s_uint_at (&p, "cpu", "throttling", "throttled_time"), 1500000);

  assert_int_equal (s_uint_at (&p, "memory", "cache"), 1000000);
  assert_int_equal (s_uint_at (&p, "memory", "usage", "usage"), 3145728);
  assert_int_equal (s_uint_at (&p, "memory", "usage", "max"), 4194304);
  assert_int_equal (s_uint_at (&p, "memory", "usage", "failcnt"), 12);
  assert_int_equal (s_uint_at (&p, "memory", "usage", "limit"), 0);
  assert_int_equal (s_uint_at (&p, "memory", "swap", "usage"), 8192);
  assert_int_equal (s_uint_at (&p, "memory", "swap", "max"), 0);
  assert_int_equal (s_uint_at (&p, "memory", "swap", "failcnt"), 2);
  assert_int_equal (s_uint_at (&p, "memory", "swap", "limit"), 1048576);
  assert_int_equal (s_uint_at (&p, "memory", "kernel", "usage"), 16384 + 50000);
  assert_int_equal (s_at (&p, "memory", "stats", NULL)->via.map.size, 5);
  assert_int_equal (s_uint_at (&p, "memory", "stats", "anon"), 2000000);

  assert_int_equal (s_uint_at (&p, "pids", "current"), 3);
  assert_int_equal (s_uint_at (&p, "pids", "limit"), 100);

  const msgpack_object *bytes = s_at (&p, "blkio", "io_service_bytes_recursive", NULL);
  assert_int_equal (bytes->via.array.size, 4 + 3);
  s_assert_blkio (bytes, 0, 8, 16, "Read", 1024);
  s_assert_blkio (bytes, 1, 8, 16, "Write", 2048);
  s_assert_blkio (bytes, 2, 8, 16, "Discard", 512);
  s_assert_blkio (bytes, 3, 8, 16, "Total", 1024 + 2048 + 512);
  s_assert_blkio (bytes, 6, 253, 0, "Total", 30);
  const msgpack_object *serviced = s_at (&p, "blkio", "io_serviced_recursive", NULL);
  s_assert_blkio (serviced, 1, 8, 16, "Write", 2);
  s_assert_blkio (serviced, 5, 253, 0, "Write", 6);

  assert_int_equal (s_at (&p, "hugetlb", NULL)->via.map.size, 1);
  assert_int_equal (s_uint_at (&p, "hugetlb", "2MB", "usage"), 2097152);
  assert_int_equal (s_uint_at (&p, "hugetlb", "2MB", "max"), 0);
  assert_int_equal (s_uint_at (&p, "hugetlb", "2MB", "failcnt"), 9);
  s_packed_free (&p);
  assert_true (cgroup_oom_killed (paths));
  cgroup_paths_destroy (&paths);
}

/* ---- paths passed on as directories (the container to the stats actor) -- */

/* What cgroup_paths_from_dirs rebuilds from another paths' directories. */
static cgroup_paths_t *
s_rebuilt (const cgroup_paths_t *paths)
{
  char **dirs = cgroup_paths_controller_dirs (paths);
  cgroup_paths_t *copy = NULL;
  zcd_error_t *err = NULL;
  if (cgroup_paths_from_dirs (cgroup_paths_version (paths), cgroup_paths_unified (paths),
                              (const char *const *) dirs, &copy, &err)
      != 0)
    fail_msg ("cgroup_paths_from_dirs: %s", err->msg);
  mp_strv_free (dirs);
  return copy;
}

/* The rebuilt paths pack the very same Stats bytes. */
static void
s_assert_same_stats (const cgroup_paths_t *a, const cgroup_paths_t *b)
{
  packed_t pa, pb;
  s_pack (a, &pa);
  s_pack (b, &pb);
  assert_int_equal (pa.buf.size, pb.buf.size);
  assert_memory_equal (pa.buf.data, pb.buf.data, pa.buf.size);
  s_packed_free (&pa);
  s_packed_free (&pb);
}

static void
test_paths_from_dirs_v1 (void **state)
{
  fixture_t *f = *state;
  s_write_v1_fixture (f);
  s_mkdir (f, "unified/box");
  cgroup_paths_t *paths = s_paths (f, s_v1_proc_cgroup);
  char **dirs = cgroup_paths_controller_dirs (paths);
  /* hugetlb, pids, blkio, freezer, memory, cpu, cpuacct: name=systemd is
   * no controller. */
  assert_int_equal (mp_strv_len (dirs), 7);
  cleanup_free char *memory = s_fixture_path (f, "memory/box");
  cleanup_free char *want = NULL;
  assert_true (asprintf (&want, "memory=%s", memory) > 0);
  bool found = false;
  for (size_t i = 0; dirs[i]; i++)
    found = found || strcmp (dirs[i], want) == 0;
  assert_true (found);
  mp_strv_free (dirs);

  cgroup_paths_t *copy = s_rebuilt (paths);
  assert_int_equal (cgroup_paths_version (copy), CGROUP_V1);
  const char *names[] = { "cpu", "cpuacct", "memory", "pids", "freezer", "blkio", "hugetlb" };
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    assert_string_equal (cgroup_paths_dir (copy, names[i]), cgroup_paths_dir (paths, names[i]));
  assert_null (cgroup_paths_dir (copy, "cpuset"));
  cleanup_free char *unified = s_fixture_path (f, "unified/box");
  assert_string_equal (cgroup_paths_unified (copy), unified);
  s_assert_same_stats (paths, copy);
  cgroup_paths_destroy (&copy);
  cgroup_paths_destroy (&paths);
}

static void
test_paths_from_dirs_v2 (void **state)
{
  fixture_t *f = *state;
  s_write_v2_fixture (f);
  cgroup_paths_t *paths = s_paths (f, "0::/zcd/web1\n");
  char **dirs = cgroup_paths_controller_dirs (paths);
  assert_non_null (dirs);
  assert_null (dirs[0]);
  mp_strv_free (dirs);
  cgroup_paths_t *copy = s_rebuilt (paths);
  assert_int_equal (cgroup_paths_version (copy), CGROUP_V2);
  cleanup_free char *dir = s_fixture_path (f, "zcd/web1");
  assert_string_equal (cgroup_paths_dir (copy, "memory"), dir);
  s_assert_same_stats (paths, copy);
  assert_true (cgroup_oom_killed (copy));
  cgroup_paths_destroy (&copy);
  cgroup_paths_destroy (&paths);
}

static void
test_paths_from_dirs_errors (void **state)
{
  static const struct
  {
    int version;
    const char *unified;
    const char *controllers[3];
    const char *says;
  } cases[] = {
    { 3, "/sys/fs/cgroup/x", { NULL }, "version 3" },
    { 2, NULL, { NULL }, "v2 without" },
    { 2, "sys/fs/cgroup/x", { NULL }, "not absolute" },
    { 1, NULL, { NULL }, "v1 without" },
    { 1, NULL, { "memory", NULL }, "`memory`" },
    { 1, NULL, { "=/sys/fs/cgroup/memory/x", NULL }, "expected" },
    { 1, NULL, { "memory=/sys/fs/cgroup/memory/x", "cpu=relative/x", NULL }, "`cpu=relative/x`" },
    { 1, NULL, { "a-controller-name-longer-than-31-bytes=/x", NULL }, "expected" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    {
      cgroup_paths_t *paths = NULL;
      zcd_error_t *err = NULL;
      assert_int_equal (cgroup_paths_from_dirs ((cgroup_version_t) cases[i].version,
                                                cases[i].unified, cases[i].controllers, &paths,
                                                &err),
                        -1);
      assert_null (paths);
      assert_int_equal (err->code, ZCD_E_INVALID_ARGUMENT);
      if (strstr (err->msg, cases[i].says) == NULL)
        fail_msg ("case %zu: `%s` does not say `%s`", i, err->msg, cases[i].says);
      zcd_error_free (&err);
    }
  /* v2 takes no controllers: a list given anyway is ignored. */
  const char *ignored[] = { "memory=/elsewhere", NULL };
  cgroup_paths_t *paths = NULL;
  assert_int_equal (cgroup_paths_from_dirs (CGROUP_V2, "/sys/fs/cgroup/x", ignored, &paths, NULL),
                    0);
  assert_string_equal (cgroup_paths_dir (paths, "memory"), "/sys/fs/cgroup/x");
  cgroup_paths_destroy (&paths);
}

static void
test_procs_fixture (void **state)
{
  fixture_t *f = *state;
  s_put (f, "pids/box/cgroup.procs", "30\n4\n100\n");
  cgroup_paths_t *paths = s_paths (f, s_v1_proc_cgroup);
  pid_t *pids = NULL;
  size_t n = 0;
  assert_int_equal (cgroup_procs_read (paths, &pids, &n, NULL), 0);
  assert_int_equal (n, 3);
  assert_int_equal (pids[0], 4);
  assert_int_equal (pids[1], 30);
  assert_int_equal (pids[2], 100);
  free (pids);
  cgroup_paths_destroy (&paths);
}

/* ---- OOM on fixtures -------------------------------------------------- */

static void
test_oom_killed_v1_fixture (void **state)
{
  fixture_t *f = *state;
  cgroup_paths_t *paths = s_paths (f, "4:memory:/box\n");
  assert_false (cgroup_oom_killed (paths)); /* no file at all */
  s_put (f, "memory/box/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n");
  assert_false (cgroup_oom_killed (paths));
  s_put (f, "memory/box/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
  assert_true (cgroup_oom_killed (paths));
  /* Before 4.13 there is no oom_kill line: under_oom is all there is. */
  s_put (f, "memory/box/memory.oom_control", "oom_kill_disable 1\nunder_oom 1\n");
  assert_true (cgroup_oom_killed (paths));
  cgroup_paths_destroy (&paths);
}

/* The kernel rewrites memory.events in place; so does this, because a
 * rename would replace the inode the watch is on. */
static void
s_rewrite_in_place (const fixture_t *f, const char *rel, const char *text)
{
  cleanup_free char *path = s_fixture_path (f, rel);
  int fd = open (path, O_WRONLY | O_TRUNC);
  assert_true (fd >= 0);
  assert_int_equal (write (fd, text, strlen (text)), (ssize_t) strlen (text));
  close (fd);
}

static bool
s_readable_within (int fd, int timeout_ms)
{
  struct pollfd pfd = { .fd = fd, .events = POLLIN };
  int n;
  do
    n = poll (&pfd, 1, timeout_ms);
  while (n < 0 && errno == EINTR);
  return n == 1 && (pfd.revents & POLLIN);
}

static void
test_oom_watch_v2_fixture (void **state)
{
  fixture_t *f = *state;
  s_put (f, "cgroup.controllers", "memory\n");
  s_put (f, "zcd/web1/memory.events", "low 0\nhigh 0\nmax 0\noom 2\noom_kill 1\n");
  cgroup_paths_t *paths = s_paths (f, "0::/zcd/web1\n");
  int fd = -1;
  zcd_error_t *err = NULL;
  if (cgroup_oom_watch_open (paths, &fd, &err) != 0)
    fail_msg ("cgroup_oom_watch_open: %s", err->msg);
  assert_false (s_readable_within (fd, 0));

  /* Only `max` grows: the fd fires, but that is no OOM. */
  s_rewrite_in_place (f, "zcd/web1/memory.events", "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n");
  assert_true (s_readable_within (fd, 5000));
  bool oom = true;
  assert_int_equal (cgroup_oom_watch_read (paths, fd, &oom, NULL), 0);
  assert_false (oom);
  assert_false (s_readable_within (fd, 0));

  s_rewrite_in_place (f, "zcd/web1/memory.events", "low 0\nhigh 0\nmax 6\noom 3\noom_kill 2\n");
  assert_true (s_readable_within (fd, 5000));
  assert_int_equal (cgroup_oom_watch_read (paths, fd, &oom, NULL), 0);
  assert_true (oom);
  assert_true (cgroup_oom_killed (paths));

  /* Counted once: the same counters again are not a new OOM. */
  s_rewrite_in_place (f, "zcd/web1/memory.events", "low 0\nhigh 1\nmax 6\noom 3\noom_kill 2\n");
  assert_true (s_readable_within (fd, 5000));
  assert_int_equal (cgroup_oom_watch_read (paths, fd, &oom, NULL), 0);
  assert_false (oom);
  close (fd);
  cgroup_paths_destroy (&paths);
}

/* ---- this machine's cgroups ------------------------------------------- */

static bool
s_host_is_v1 (void)
{
  return access ("/sys/fs/cgroup/memory/cgroup.event_control", W_OK) == 0;
}

static void
test_own_cgroups_pack (void **state)
{
  cgroup_paths_t *paths = NULL;
  zcd_error_t *err = NULL;
  if (cgroup_paths_for_pid (NULL, getpid (), &paths, &err) != 0)
    fail_msg ("cgroup_paths_for_pid: %s", err->msg);
  if (!s_host_is_v1 ())
    {
      cgroup_paths_destroy (&paths);
      skip ();
    }
  assert_int_equal (cgroup_paths_version (paths), CGROUP_V1);
  const char *memory = cgroup_paths_dir (paths, "memory");
  assert_non_null (memory);
  struct stat st;
  assert_int_equal (stat (memory, &st), 0);
  packed_t p;
  s_pack (paths, &p);
  /* We have run, and we hold memory. */
  assert_true (s_uint_at (&p, "cpu", "usage", "total") > 0);
  assert_true (s_uint_at (&p, "memory", "usage", "usage") > 0);
  assert_true (s_at (&p, "memory", "stats", NULL)->via.map.size > 0);
  s_packed_free (&p);
  cgroup_paths_destroy (&paths);
}

typedef struct
{
  char dir[128];
  int to_child[2], from_child[2];
} oom_cgroup_t;

/* The child: join the cgroup, say so, wait for the go, then touch 64 MiB
 * against an 8 MiB limit. */
static void __attribute__ ((noreturn))
s_oom_child (oom_cgroup_t *cg)
{
  close (cg->to_child[1]);
  close (cg->from_child[0]);
  char path[192], pid[32];
  snprintf (path, sizeof path, "%s/cgroup.procs", cg->dir);
  int fd = open (path, O_WRONLY);
  int len = snprintf (pid, sizeof pid, "%d", (int) getpid ());
  if (fd < 0 || write (fd, pid, (size_t) len) != len)
    _exit (2);
  close (fd);
  char c = 'j';
  if (write (cg->from_child[1], &c, 1) != 1 || read (cg->to_child[0], &c, 1) != 1)
    _exit (3);
  size_t size = 64u << 20;
  char *mem = mmap (NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED)
    _exit (4);
  for (size_t i = 0; i < size; i += 4096)
    mem[i] = 1;
  _exit (0);
}

static void
s_rmdir_with_deadline (const char *dir)
{
  /* Removal can be refused for a moment while the dead child's charges
   * are released. */
  uint64_t deadline = zcd_mono_ms () + 10000;
  while (rmdir (dir) < 0 && errno == EBUSY && zcd_mono_ms () < deadline)
    poll (NULL, 0, 10);
}

static void
test_oom_v1_real (void **state)
{
  if (!s_host_is_v1 ())
    skip ();
  oom_cgroup_t cg;
  snprintf (cg.dir, sizeof cg.dir, "/sys/fs/cgroup/memory/zcd-test-%d", (int) getpid ());
  assert_int_equal (mkdir (cg.dir, 0755), 0);
  char path[192];
  snprintf (path, sizeof path, "%s/memory.limit_in_bytes", cg.dir);
  int fd = open (path, O_WRONLY);
  assert_true (fd >= 0);
  assert_int_equal (write (fd, "8M", 2), 2);
  close (fd);

  fixture_t *f = *state;
  char proc_cgroup[64];
  snprintf (proc_cgroup, sizeof proc_cgroup, "4:memory:/zcd-test-%d\n", (int) getpid ());
  s_put (f, "proc-cgroup", proc_cgroup);
  cleanup_free char *file = s_fixture_path (f, "proc-cgroup");
  cgroup_paths_t *paths = NULL;
  assert_int_equal (cgroup_paths_from_file (NULL, file, &paths, NULL), 0);
  assert_string_equal (cgroup_paths_dir (paths, "memory"), cg.dir);
  int efd = -1;
  zcd_error_t *err = NULL;
  if (cgroup_oom_watch_open (paths, &efd, &err) != 0)
    fail_msg ("cgroup_oom_watch_open: %s", err->msg);
  assert_false (cgroup_oom_killed (paths));

  assert_int_equal (pipe (cg.to_child), 0);
  assert_int_equal (pipe (cg.from_child), 0);
  pid_t child = fork ();
  assert_true (child >= 0);
  if (child == 0)
    s_oom_child (&cg);
  f->child = child;
  close (cg.to_child[0]);
  close (cg.from_child[1]);
  char c;
  assert_int_equal (read (cg.from_child[0], &c, 1), 1);

  /* The child is in the cgroup now: its own paths say so. */
  cgroup_paths_t *child_paths = NULL;
  assert_int_equal (cgroup_paths_for_pid (NULL, child, &child_paths, NULL), 0);
  assert_string_equal (cgroup_paths_dir (child_paths, "memory"), cg.dir);
  cgroup_paths_destroy (&child_paths);
  /* `paths` knows only the memory hierarchy, the one the child moved in. */
  pid_t *pids = NULL;
  size_t n = 0;
  assert_int_equal (cgroup_procs_read (paths, &pids, &n, NULL), 0);
  assert_int_equal (n, 1);
  assert_int_equal (pids[0], child);
  free (pids);
  assert_false (s_readable_within (efd, 0));

  assert_int_equal (write (cg.to_child[1], "g", 1), 1);
  assert_true (s_readable_within (efd, 20000));
  bool oom = false;
  assert_int_equal (cgroup_oom_watch_read (paths, efd, &oom, NULL), 0);
  assert_true (oom);
  int status;
  assert_int_equal (waitpid (child, &status, 0), child);
  f->child = 0;
  assert_true (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL);
  assert_true (cgroup_oom_killed (paths));

  close (efd);
  close (cg.to_child[1]);
  close (cg.from_child[0]);
  cgroup_paths_destroy (&paths);
  s_rmdir_with_deadline (cg.dir);
  assert_int_equal (access (cg.dir, F_OK), -1);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_paths_v1_hybrid, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_paths_v1_separate_mounts, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_paths_v2, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_paths_v2_under_unified, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_paths_errors, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_stats_v1_fixture, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_stats_of_removed_cgroup_is_not_found, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_stats_v2_fixture, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_paths_from_dirs_v1, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_paths_from_dirs_v2, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_paths_from_dirs_errors, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_procs_fixture, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_oom_killed_v1_fixture, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_oom_watch_v2_fixture, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_own_cgroups_pack, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_oom_v1_real, s_setup, s_teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
