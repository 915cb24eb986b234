/* The stats actor: answers `stats` straight from the containers' cgroups
 * (v1 and v2, core/cgroup.c), never through the runtime.  The supervisor
 * sends it the ids and their init pids; it replies to the request token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/actors.h"
#include "core/cgroup.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

#define STATS_ACTOR_NAME "stats"

typedef struct stats
{
  zcd_daemon_t *daemon;
  actor_t *actor;
} stats_t;

/* One container's Stats map; a container whose cgroup vanished meanwhile
 * (it just exited) gets an empty map rather than failing the whole call. */
static void
s_pack_one (msgpack_packer *pk, pid_t pid)
{
  cgroup_paths_t *paths = NULL;
  msgpack_sbuffer one;
  msgpack_sbuffer_init (&one);
  msgpack_packer opk;
  msgpack_packer_init (&opk, &one, msgpack_sbuffer_write);
  if (pid > 0 && cgroup_paths_for_pid (NULL, pid, &paths, NULL) == 0
      && !zcd_cgroup_dir_is_root (cgroup_paths_dir (paths, "memory"))
      && cgroup_stats_pack (paths, &opk, NULL) == 0)
    pk->callback (pk->data, one.data, one.size);
  else
    msgpack_pack_map (pk, 0);
  cgroup_paths_destroy (&paths);
  msgpack_sbuffer_destroy (&one);
}

static void
s_on_collect (actor_t *actor, const actor_msg_t *msg)
{
  stats_t *self = actor_state (actor);
  uint64_t token = mp_get_uint (msg->body, "token", 0);
  const msgpack_object *ids = mp_map_get (msg->body, "ids");
  const msgpack_object *pids = mp_map_get (msg->body, "pids");
  uint32_t n = ids && ids->type == MSGPACK_OBJECT_ARRAY ? ids->via.array.size : 0;
  msgpack_sbuffer result;
  msgpack_sbuffer_init (&result);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &result, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 2);
  mp_pack_kv_int (&pk, "timestamp", zcd_now_ns ());
  mp_pack_str (&pk, "stats");
  msgpack_pack_map (&pk, n);
  for (uint32_t i = 0; i < n; i++)
    {
      msgpack_pack_object (&pk, ids->via.array.ptr[i]);
      uint64_t pid = 0;
      if (pids && pids->type == MSGPACK_OBJECT_ARRAY && i < pids->via.array.size)
        mp_as_uint (&pids->via.array.ptr[i], &pid);
      s_pack_one (&pk, (pid_t) pid);
    }
  zcd_send_reply_ok (self->daemon->actors, STATS_ACTOR_NAME, token, &result, false);
  msgpack_sbuffer_destroy (&result);
}

static void
s_destroy_state (actor_t *actor)
{
  free (actor_state (actor));
}

static const actor_route_t s_routes[] = { { "collect", s_on_collect }, { NULL, NULL } };
static const actor_class_t s_class = { .kind = "stats", .routes = s_routes, .destroy_state = s_destroy_state };

actor_t *
stats_actor_new (zcd_daemon_t *daemon, zcd_error_t **err)
{
  stats_t *self = calloc (1, sizeof *self);
  self->daemon = daemon;
  self->actor = actor_new (daemon->actors, &s_class, STATS_ACTOR_NAME, self, err);
  if (self->actor == NULL)
    {
      free (self);
      return NULL;
    }
  return self->actor;
}
