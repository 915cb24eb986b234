/* Reading a container's cgroups, v1 and v2, without the runtime: the
 * `stats` operation (PROTOCOL.md `stats`), OOM notification and the OOM
 * verdict on the init process's `exit` event (PROTOCOL.md section 5).
 *
 * The cgroup filesystem root is a parameter (NULL means CGROUP_ROOT_DEFAULT)
 * so tests can point every reader at a fixture tree.  No mountinfo parsing:
 * a v1 controller lives at <root>/<controller><path> (or at the
 * comma-joined name, "<root>/cpu,cpuacct<path>", when that exists), the v2
 * hierarchy at <root><path>, or <root>/unified<path> on a hybrid host. */
#ifndef ZCD_CGROUP_H
#define ZCD_CGROUP_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/err.h"

#define CGROUP_ROOT_DEFAULT "/sys/fs/cgroup"

typedef enum
{
  CGROUP_V1 = 1,
  CGROUP_V2 = 2
} cgroup_version_t;

/* Per-controller directories (v1) or the unified directory (v2) of one
 * cgroup, plus the OOM watch's memory of the last counters it saw. */
typedef struct cgroup_paths cgroup_paths_t;

/* Resolve the cgroups of process `pid` from /proc/<pid>/cgroup.  A process
 * that is gone is ZCD_E_NOT_FOUND.  On success *out is new and the caller's
 * (cgroup_paths_destroy). */
int cgroup_paths_for_pid (const char *root, pid_t pid, cgroup_paths_t **out, zcd_error_t **err);
/* Same from a file in /proc/<pid>/cgroup format ("id:controllers:path"
 * lines).  A file with v1 controller lines is v1 (its `0::` line, if any,
 * gives the hybrid unified directory); a file with only `0::` is v2. */
int cgroup_paths_from_file (const char *root, const char *proc_cgroup_file,
                            cgroup_paths_t **out, zcd_error_t **err);
/* Same from directories already resolved (by the cgroup's owner, passed on
 * in a message): version 1 or 2; unified: the v2 cgroup's directory, or a
 * hybrid v1 host's unified one (NULL: none); controllers (v1, ignored on
 * v2): NULL-terminated "<controller>=<directory>" entries, as
 * cgroup_paths_controller_dirs gives them.  Nothing is read from the
 * filesystem.  A v2 without unified, a v1 without controllers, an entry
 * without "=", a relative directory or more than 16 controllers is
 * ZCD_E_INVALID_ARGUMENT. */
int cgroup_paths_from_dirs (cgroup_version_t version, const char *unified,
                            const char *const *controllers, cgroup_paths_t **out,
                            zcd_error_t **err);
void cgroup_paths_destroy (cgroup_paths_t **paths);
/* The v1 controllers as "<controller>=<directory>" entries, NULL-terminated
 * (empty on v2); the caller frees each entry and the array. */
char **cgroup_paths_controller_dirs (const cgroup_paths_t *paths);
/* v2: the cgroup's directory; v1: the hybrid host's unified directory, or
 * NULL.  Owned by paths. */
const char *cgroup_paths_unified (const cgroup_paths_t *paths);

cgroup_version_t cgroup_paths_version (const cgroup_paths_t *paths);
/* Directory of a v1 controller ("memory", "cpu", "freezer", ...), NULL when
 * the process is not in that hierarchy; for v2 the unified directory
 * whatever the name.  Owned by paths. */
const char *cgroup_paths_dir (const cgroup_paths_t *paths, const char *controller);

/* Pack one PROTOCOL.md `Stats` map:
 *   {"cpu": {"usage": {"total", "percpu": [uint], "kernel", "user"},
 *            "throttling": {"periods", "throttled_periods", "throttled_time"}},
 *    "memory": {"cache", "usage": Mem, "swap": Mem, "kernel": Mem,
 *               "stats": {str: uint}},
 *    "pids": {"current", "limit"},
 *    "blkio": {"io_service_bytes_recursive": [{"major", "minor", "op", "value"}],
 *              "io_serviced_recursive": [...]},
 *    "hugetlb": {"<size>": {"usage", "max", "failcnt"}}}
 * Mem = {"usage", "max", "failcnt", "limit"}.  All times in ns, sizes in
 * bytes.  A file the kernel or cgroup version lacks reads as 0, and so does
 * an unlimited limit ("max").
 *   v1: cpuacct.usage/usage_percpu/stat (USER_HZ converted to ns), cpu.stat,
 *       memory.{usage_in_bytes,max_usage_in_bytes,failcnt,limit_in_bytes},
 *       the same for memory.memsw.* (swap: v1 reports memory+swap) and
 *       memory.kmem.*, memory.stat (cache = "cache"), pids.current/max,
 *       blkio.throttle.io_service_bytes_recursive/io_serviced_recursive
 *       (the non-recursive files when those are absent),
 *       hugetlb.<size>.{usage_in_bytes,max_usage_in_bytes,failcnt}.
 *   v2: cpu.stat usage/system/user/nr_periods/nr_throttled/throttled_usec;
 *       usage = memory.current, memory.peak, memory.events "max", memory.max;
 *       swap = memory.swap.current, memory.swap.peak, memory.swap.events
 *       "max", memory.swap.max; kernel.usage = memory.stat "kernel" (or
 *       kernel_stack + slab on older kernels); cache = memory.stat "file";
 *       pids.current/max; io.stat as ops Read, Write, Discard (when the
 *       kernel reports it) and Total per device; hugetlb.<size>.current,
 *       .max (the limit: v2 keeps no peak) and .events "max" as failcnt.
 * A cgroup whose directory is gone is ZCD_E_NOT_FOUND, and nothing is
 * packed then; otherwise exactly one map is packed. */
int cgroup_stats_pack (const cgroup_paths_t *paths, msgpack_packer *pk, zcd_error_t **err);

/* Open an fd that becomes readable when the cgroup meets its memory limit:
 * v1 an eventfd registered through cgroup.event_control on
 * memory.oom_control, v2 an inotify watch on memory.events (whose oom and
 * oom_kill counters are remembered in paths as the baseline).  The caller
 * owns *fd_out (close it to unregister; the kernel also drops a v1
 * registration when the cgroup is removed). */
int cgroup_oom_watch_open (cgroup_paths_t *paths, int *fd_out, zcd_error_t **err);
/* After fd polled readable: drain it and set *oom_happened when a new OOM
 * was recorded.  v1: the eventfd counted OOMs (the kernel also signals it
 * once when the cgroup is removed, which is not counted as an OOM).  v2:
 * memory.events' oom or oom_kill grew since the last call (or the open).
 * A cgroup that vanished is not an error: *oom_happened is then false
 * unless the v1 counter shows more than the removal. */
int cgroup_oom_watch_read (cgroup_paths_t *paths, int fd, bool *oom_happened, zcd_error_t **err);

/* true when the cgroup recorded an OOM kill: v1 `oom_kill N` in
 * memory.oom_control with N > 0 (kernels >= 4.13), else `under_oom 1`;
 * v2 memory.events oom_kill > 0.  false when unreadable. */
bool cgroup_oom_killed (const cgroup_paths_t *paths);
/* How many OOM kills the cgroup recorded: v1 `oom_kill` of
 * memory.oom_control (kernels >= 4.13), v2 memory.events `oom_kill`.
 * false when unreadable (the cgroup is gone) or not counted (an older
 * kernel): a counter has no value then, never 0 (Prometheus metrics,
 * actors/metrics_prom.c). */
bool cgroup_oom_kills (const cgroup_paths_t *paths, uint64_t *kills);

/* The pids in the cgroup's cgroup.procs (v1: the pids, memory, cpu or
 * freezer hierarchy, the first the process is in), sorted ascending.  On
 * success *pids_out (malloc'd, NULL when empty) is the caller's. */
int cgroup_procs_read (const cgroup_paths_t *paths, pid_t **pids_out, size_t *n_out,
                       zcd_error_t **err);

#endif
