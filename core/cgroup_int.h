/* The cgroup readers' private parts, shared by core/cgroup*.c only.
 *
 *   cgroup.c        paths from /proc/<pid>/cgroup, file readers, cgroup.procs
 *   cgroup_stats.c  the `stats` map from v1 or v2 files
 *   cgroup_oom.c    the OOM watch and the OOM verdict */
#ifndef ZCD_CGROUP_INT_H
#define ZCD_CGROUP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/cgroup.h"

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

/* cgroup.c */
/* realloc that aborts when out of memory (reading a few small files). */
void *cgroup_xrealloc (void *p, size_t size);
bool cgroup_is_dir (const char *path);
bool cgroup_exists_in (const char *dir, const char *name);
/* The text of <dir>/<name> (malloc'd), or NULL when the cgroup (version,
 * kernel) lacks it; dir NULL reads as a missing file. */
char *cgroup_read_text (const char *dir, const char *name);
/* "max" (no limit) and anything unparsable read as 0. */
uint64_t cgroup_parse_u64 (const char *s);
uint64_t cgroup_read_u64 (const char *dir, const char *name);
/* Value of `key` in a flat keyed file's text ("key value" lines). */
bool cgroup_keyed (const char *text, const char *key, uint64_t *out);
uint64_t cgroup_keyed0 (const char *text, const char *key); /* 0 when absent */
uint64_t cgroup_read_keyed (const char *dir, const char *name, const char *key);
/* The directory whose absence means the container's cgroup is gone. */
const char *cgroup_main_dir (const cgroup_paths_t *paths);

#endif
