/* The stats actor: answers `stats` straight from the containers' cgroups
 * (v1 and v2, core/cgroup.c), never through the runtime.
 *
 * It keeps its own table, container id -> cgroup directories, which each
 * container fills once it knows its cgroups (`cgroup`) and empties when it
 * leaves (`uncgroup`): the container found the directories once, from its
 * init's pid; nothing here derives them again (issue 9 part 4).  A
 * `collect` names the ids only; a container with no cgroups here (never
 * reported, or gone meanwhile) gets an empty Stats map rather than failing
 * the whole call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "actors/actors.h"
#include "core/amsg_gen.h"
#include "core/cgroup.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

typedef struct stats_entry
{
  char *actor; /* the container actor that reported it: a later one of the same id replaces it */
  cgroup_paths_t *paths;
} stats_entry_t;

typedef struct stats
{
  zcd_daemon_t *daemon;
  actor_t *actor;
  zhashx_t *cgroups; /* container id -> stats_entry_t */
} stats_t;

static void
s_entry_destroy (void **item)
{
  stats_entry_t *e = *item;
  if (e == NULL)
    return;
  free (e->actor);
  cgroup_paths_destroy (&e->paths);
  free (e);
  *item = NULL;
}

/* One container's Stats map; {} when its cgroup is unknown or vanished
 * (it just exited). */
static void
s_pack_one (msgpack_packer *pk, const stats_entry_t *e)
{
  msgpack_sbuffer one;
  msgpack_sbuffer_init (&one);
  msgpack_packer opk;
  msgpack_packer_init (&opk, &one, msgpack_sbuffer_write);
  /* A root directory would be the host's counters, never a container's. */
  if (e && !zcd_cgroup_dir_is_root (cgroup_paths_dir (e->paths, "memory"))
      && cgroup_stats_pack (e->paths, &opk, NULL) == 0)
    pk->callback (pk->data, one.data, one.size);
  else
    msgpack_pack_map (pk, 0);
  msgpack_sbuffer_destroy (&one);
}

/* {id: OOM kills} of the ids whose cgroup is known and counts them
 * (Prometheus metrics: the Stats map has no such count).  Each file is
 * read once, before the map's size is written: a cgroup removed meanwhile
 * must not change the count. */
static void
s_pack_oom_kills (stats_t *self, msgpack_packer *pk, const char *const *ids, size_t n)
{
  cleanup_free uint64_t *kills = calloc (n + 1, sizeof *kills);
  cleanup_free bool *known = calloc (n + 1, sizeof *known);
  size_t n_known = 0;
  for (size_t i = 0; kills && known && i < n; i++)
    {
      stats_entry_t *e = zhashx_lookup (self->cgroups, ids[i]);
      /* A root directory would be the host's count (as in s_pack_one). */
      known[i] = e && !zcd_cgroup_dir_is_root (cgroup_paths_dir (e->paths, "memory"))
                 && cgroup_oom_kills (e->paths, &kills[i]);
      n_known += known[i];
    }
  mp_pack_str (pk, "oom_kills");
  msgpack_pack_map (pk, n_known);
  for (size_t i = 0; n_known && i < n; i++)
    if (known[i])
      mp_pack_kv_uint (pk, ids[i], kills[i]);
}

static void
s_on_collect (actor_t *actor, const char *from, const amsg_collect_t *m)
{
  stats_t *self = actor_state (actor);
  size_t n = 0;
  while (m->ids[n])
    n++;
  bool oom_kills = m->has_oom_kills && m->oom_kills;
  msgpack_sbuffer result;
  msgpack_sbuffer_init (&result);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &result, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, oom_kills ? 3 : 2);
  mp_pack_kv_int (&pk, "timestamp", zcd_now_ns ());
  mp_pack_str (&pk, "stats");
  msgpack_pack_map (&pk, n);
  for (size_t i = 0; i < n; i++)
    {
      mp_pack_str (&pk, m->ids[i]);
      s_pack_one (&pk, zhashx_lookup (self->cgroups, m->ids[i]));
    }
  if (oom_kills)
    s_pack_oom_kills (self, &pk, m->ids, n);
  zcd_send_reply_ok (self->daemon->actors, STATS_ACTOR, m->token, &result, false);
  msgpack_sbuffer_destroy (&result);
}

static void
s_on_cgroup (actor_t *actor, const char *from, const amsg_cgroup_t *m)
{
  stats_t *self = actor_state (actor);
  cleanup_error zcd_error_t *err = NULL;
  cgroup_paths_t *paths = NULL;
  if (cgroup_paths_from_dirs ((cgroup_version_t)m->version, m->unified, m->controllers, &paths,
                              &err)
      < 0)
    {
      /* Internal messages are ours: a bad one is a bug, and that
       * container's stats stay empty. */
      log_error ("bug: stats: the cgroups %s reported for `%s`: %s", from, m->id, err->msg);
      return;
    }
  stats_entry_t *e = calloc (1, sizeof *e);
  e->actor = strdup (from);
  e->paths = paths;
  zhashx_update (self->cgroups, m->id, e);
}

static void
s_on_uncgroup (actor_t *actor, const char *from, const amsg_uncgroup_t *m)
{
  stats_t *self = actor_state (actor);
  stats_entry_t *e = zhashx_lookup (self->cgroups, m->id);
  /* An earlier container of the same id leaving late must not take the
   * entry of the one that has the id now. */
  if (e && strcmp (e->actor, from) == 0)
    zhashx_delete (self->cgroups, m->id);
}

static void
s_destroy_state (actor_t *actor)
{
  stats_t *self = actor_state (actor);
  zhashx_destroy (&self->cgroups);
  free (self);
}

static const amsg_stats_handlers_t s_handlers = {
  .on_collect = s_on_collect,
  .on_cgroup = s_on_cgroup,
  .on_uncgroup = s_on_uncgroup,
};

static const actor_class_t s_class = {
  .kind = "stats",
  AMSG_STATS_DISPATCH (&s_handlers),
  .destroy_state = s_destroy_state,
};

actor_t *
stats_actor_new (zcd_daemon_t *daemon, zcd_error_t **err)
{
  stats_t *self = calloc (1, sizeof *self);
  self->daemon = daemon;
  self->cgroups = zhashx_new ();
  zhashx_set_destructor (self->cgroups, s_entry_destroy);
  self->actor = actor_new (daemon->actors, &s_class, STATS_ACTOR, self, err);
  if (self->actor == NULL)
    {
      zhashx_destroy (&self->cgroups);
      free (self);
      return NULL;
    }
  return self->actor;
}
