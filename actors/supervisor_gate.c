/* The supervisor's start gate: a create is admitted (id free, bundle
 * valid, queue not full), then waits for one of max_concurrent_starts start
 * slots, or for an earlier container of the same id to be gone ("held").
 * What admission decoded and parsed (the request, config.json) waits with
 * it and is what the container actor starts from: one pass per create. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/supervisor_int.h"
#include "core/bundle.h"
#include "core/caller.h"
#include "core/cleanup.h"
#include "core/edge.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"
#include "core/amsg_gen.h"

/* ------------------------------------------------------------------ */
/* The start gate: at most max_concurrent_starts runtime creates at once  */

static void s_start_next (supervisor_t *self);

static void
s_record_latency (supervisor_t *self, uint64_t token)
{
  uint64_t *t0 = zhashx_lookup (self->start_times, (void *)(uintptr_t)token);
  if (t0 == NULL)
    return;
  uint64_t ns = zcd_mono_ns () - *t0;
  self->latencies[self->latency_count++ % LATENCY_RING] = ns;
  metrics_prom_start_latency (self->prom, ns);
  zhashx_delete (self->start_times, (void *)(uintptr_t)token);
}

void
supervisor_free_source (void **item)
{
  if (item == NULL || *item == NULL)
    return;
  checkpoint_source_clear (*item);
  free (*item);
  *item = NULL;
}

/* A restore by crun re-creates the dumped container's cgroups (CRIU puts
 * the process back there before crun moves it) and leaves them behind,
 * restored or not.  Removed with rmdir, which takes only an empty cgroup:
 * a container of that id that runs keeps its own.  Not while a create of
 * that id is in flight: its cgroup may be made and still empty. */
static void
s_remove_restore_leftovers (supervisor_t *self, const char *id, uint64_t token, pid_t init)
{
  checkpoint_source_t *src = zhashx_lookup (self->restore_leftovers, (void *) (uintptr_t) token);
  if (src == NULL)
    return;
  const char *dumped = src->dumped_id;
  if (dumped && strcmp (dumped, id) != 0 && zhashx_lookup (self->reserved, dumped) == NULL)
    checkpoint_remove_cgroups (self->daemon, src->dumped_cgroups, init);
  zhashx_delete (self->restore_leftovers, (void *) (uintptr_t) token);
}

/* A start slot is free again. */
static void
s_start_ended (supervisor_t *self, const char *id, uint64_t token, bool ok, pid_t init)
{
  zhashx_delete (self->reserved, id);
  s_remove_restore_leftovers (self, id, token, init);
  if (ok)
    s_record_latency (self, token);
  else
    zhashx_delete (self->start_times, (void *)(uintptr_t)token);
  if (self->starting > 0)
    self->starting--;
  s_start_next (self);
}

/* The create's result, {"container": Container}, as the container packed
 * it before (the same map `state` lists), following the start event. */
static void
s_reply_started (supervisor_t *self, const char *from, const amsg_started_t *m, uint64_t seq)
{
  container_entry_t *e = zhashx_lookup (self->containers, m->id);
  if (e == NULL || strcmp (e->actor, from) != 0 || e->view == NULL)
    {
      /* The start event brought the entry in (s_entry_for): only a
       * started without a view (a bug of the sender) lands here. */
      log_error ("bug: container %s started without a view", m->id);
      edge_reply_error_after (self->edge, m->token, ZCD_E_INTERNAL,
                              "the container started but sent no view (a bug: see the log)", seq);
      return;
    }
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 1);
  mp_pack_str (&pk, "container");
  supervisor_pack_container (e, &pk);
  msgpack_object result = { .type = MSGPACK_OBJECT_BIN };
  result.via.bin.ptr = buf.data;
  result.via.bin.size = (uint32_t)buf.size;
  edge_reply_parked_ok (self->edge, m->token, &result, seq);
  msgpack_sbuffer_destroy (&buf);
}

void
supervisor_on_started (actor_t *actor, const char *from, const amsg_started_t *m)
{
  supervisor_t *self = actor_state (actor);
  if (m->ok)
    {
      amsg_event_t ev = {
        .etype = m->etype ? m->etype : "start-container",
        .id = m->id,
        .bundle = m->bundle,
        .has_owner = m->has_owner,
        .owner = m->owner,
        .init_pid = m->has_init_pid ? m->init_pid : 0,
        .processes = m->has_processes ? m->processes : 1,
        .pid = m->pid ? m->pid : "init",
        .has_system_pid = m->has_system_pid,
        .system_pid = m->system_pid,
        .cgroup_procs = m->cgroup_procs,
        .view = m->view,
      };
      uint64_t seq = supervisor_log_event (self, from, &ev);
      s_reply_started (self, from, m, seq);
    }
  else
    edge_reply_error (self->edge, m->token, m->has_code ? m->code : ZCD_E_INTERNAL,
                      m->message ? m->message : "the start failed without a reason");
  s_start_ended (self, m->id, m->token, m->ok,
                 m->ok && m->has_init_pid ? (pid_t) m->init_pid : 0);
}

void
supervisor_queued_create_free (queued_create_t *q)
{
  if (q == NULL)
    return;
  free (q->id);
  container_spec_destroy (&q->spec);
  free (q);
}

/* The request was decoded and its bundle parsed at admission: the
 * container actor starts from that, not from the bytes again. */
static void
s_launch_create (supervisor_t *self, queued_create_t *q)
{
  cleanup_error zcd_error_t *err = NULL;
  if (container_actor_create (self->daemon, q->spec, q->token, &err) != NULL)
    {
      self->starting++;
      return;
    }
  zhashx_delete (self->reserved, q->id);
  zhashx_delete (self->start_times, (void *)(uintptr_t)q->token);
  s_remove_restore_leftovers (self, q->id, q->token, 0);
  if (err == NULL)
    log_error ("bug: create `%s` failed without a reason", q->id);
  edge_reply_error (self->edge, q->token, err ? err->code : ZCD_E_INTERNAL,
                    err ? err->msg : "create failed without a reason (a bug: see the log)");
}

/* The earlier container of `id` is gone: its held creates join the queue. */
void
supervisor_release_held (supervisor_t *self, const char *id)
{
  for (queued_create_t *q = zlistx_first (self->held); q; q = zlistx_next (self->held))
    if (strcmp (q->id, id) == 0)
      zlistx_add_end (self->start_queue, zlistx_detach_cur (self->held));
  s_start_next (self);
}

static void
s_start_next (supervisor_t *self)
{
  int max = self->daemon->config->max_concurrent_starts;
  while (zlistx_size (self->start_queue) && self->starting < max)
    {
      queued_create_t *q = zlistx_detach (self->start_queue, NULL);
      self->queued--;
      s_launch_create (self, q);
      supervisor_queued_create_free (q);
    }
}

/* A restore names a checkpoint zcd made: a missing one is not_found at
 * admission, not the runtime's failure later (PROTOCOL.md `create`). */
static int
s_check_restore_source (const zcd_daemon_t *daemon, const msgpack_object *body, const char *bundle,
                        checkpoint_source_t *src, zcd_error_t **err)
{
  cleanup_free char *name = mp_get_strdup (body, "checkpoint");
  if (name == NULL)
    return 0;
  cleanup_free char *dir = mp_get_strdup (body, "checkpoint_dir");
  if (dir == NULL && asprintf (&dir, "%s/checkpoints", bundle) < 0)
    return zcd_fail_errno (err, ENOMEM, "checkpoint_dir");
  if (checkpoint_find (dir, name, src, err) < 0)
    return -1;
  /* As checkpoint_create answers without a working CRIU. */
  if (daemon->criu_unavailable)
    return zcd_fail (err, ZCD_E_UNAVAILABLE, "%s", daemon->criu_unavailable);
  return 0;
}

/* What the request names (stdio paths, checkpoint, bundle) is looked at
 * with the caller's ids: a caller that is not an administrator cannot
 * have the daemon read a file it could not read itself. */
static int
s_check_paths_as (zcd_daemon_t *daemon, const zcd_caller_t *caller, const msgpack_object *body,
                  const char *bundle, checkpoint_source_t *src, bundle_info_t **info,
                  zcd_error_t **err)
{
  if (!caller->admin && mp_map_get (body, "checkpoint"))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                     "checkpoint: a restore needs an administrator (CRIU runs as root)");
  zcd_as_user_t scope;
  if (zcd_as_user_enter (&scope, caller->admin ? 0 : caller->uid, caller->gid) < 0)
    return zcd_fail_errno (err, errno, "cannot act as uid %" PRIu32, caller->uid);
  int rc = zcd_check_stdio_paths (daemon->config, body, err) < 0
                   || s_check_restore_source (daemon, body, bundle, src, err) < 0
                   || bundle_load (bundle, info, err) < 0
               ? -1
               : 0;
  zcd_as_user_leave (&scope);
  return rc;
}

/* A caller that is not an administrator gets a rootless container that
 * runs as itself: the bundle's process.user must be the caller as the
 * host sees it (through the bundle's user namespace mappings).  What else
 * it may do is for the runtime's own rootless rules to decide. */
static int
s_check_rootless (zcd_daemon_t *daemon, const zcd_caller_t *caller, const msgpack_object *body,
                  const bundle_info_t *info, zcd_error_t **err)
{
  if (caller->admin)
    return 0;
  if (info->host_uid != caller->uid)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                     "process.user: uid %" PRIu32 " runs as host uid %" PRIu32
                     "; a container of uid %" PRIu32 " runs as uid %" PRIu32
                     " (map it with linux.uidMappings)",
                     info->uid, info->host_uid, caller->uid, caller->uid);
  cleanup_free char *groups = zcd_user_groups (caller->uid, caller->gid);
  bool member = info->host_gid == caller->gid;
  for (char *g = groups; g && *g && !member; g = strchr (g, ',') ? strchr (g, ',') + 1 : NULL)
    member = strtoul (g, NULL, 10) == info->host_gid;
  if (!member)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                     "process.user: gid %" PRIu32 " runs as host gid %" PRIu32
                     ", not a group of uid %" PRIu32,
                     info->gid, info->host_gid, caller->uid);
  return zcd_prepare_rootless_root (daemon->config, caller->uid, caller->gid, err);
}

void
supervisor_op_create (supervisor_t *self, edge_request_t *req)
{
  const msgpack_object *body = edge_request_body (req);
  cleanup_free char *id = mp_get_strdup (body, "id");
  cleanup_free char *bundle = mp_get_strdup (body, "bundle");
  if (zhashx_lookup (self->containers, id) || zhashx_lookup (self->reserved, id))
    {
      edge_fail (self->edge, req, ZCD_E_ALREADY_EXISTS, "container `%s` already exists", id);
      return;
    }
  if (self->queued >= MAX_QUEUED_CREATES)
    {
      edge_fail (self->edge, req, ZCD_E_BUSY, "%zu creates are already waiting for a start slot",
                 self->queued);
      return;
    }
  /* The bundle is checked here, at admission: a bad bundle is a precise
   * invalid_argument and never takes a start slot.  Its parse is kept for
   * the container. */
  cleanup_error zcd_error_t *err = NULL;
  bundle_info_t *info = NULL;
  checkpoint_source_t *src = calloc (1, sizeof *src);
  if (src == NULL)
    {
      edge_fail (self->edge, req, ZCD_E_UNAVAILABLE, "out of memory");
      return;
    }
  const zcd_caller_t *caller = edge_request_caller (req);
  if (s_check_paths_as (self->daemon, caller, body, bundle, src, &info, &err) < 0
      || s_check_rootless (self->daemon, caller, body, info, &err) < 0)
    {
      bundle_info_destroy (&info);
      supervisor_free_source ((void **) &src);
      edge_fail (self->edge, req, err->code, "%s", err->msg);
      return;
    }
  uint64_t token = edge_request_park (self->edge, req);
  uint64_t *t0 = malloc (sizeof *t0);
  *t0 = zcd_mono_ns ();
  zhashx_insert (self->start_times, (void *)(uintptr_t)token, t0);
  zhashx_insert (self->reserved, id, (void *)(uintptr_t)token);
  queued_create_t *q = calloc (1, sizeof *q);
  q->token = token;
  q->spec = container_spec_new (body, steal_pointer (&info), steal_pointer (&src->restore_args));
  if (!caller->admin)
    container_spec_set_owner (q->spec, caller->uid, caller->gid,
                              zcd_user_groups (caller->uid, caller->gid));
  if (src->dumped_cgroups && src->dumped_cgroups[0])
    zhashx_insert (self->restore_leftovers, (void *) (uintptr_t) token, steal_pointer (&src));
  supervisor_free_source ((void **) &src);
  self->queued++;
  if (zhashx_lookup (self->draining, id))
    {
      q->id = steal_pointer (&id);
      zlistx_add_end (self->held, q);
      return;
    }
  q->id = steal_pointer (&id);
  zlistx_add_end (self->start_queue, q);
  s_start_next (self);
}
