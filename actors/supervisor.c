/* The supervisor actor (see actors/supervisor.h): its life cycle, the
 * dispatch of requests, and the turn's end.  Its other parts:
 * supervisor_table.c (the container table, events), supervisor_gate.c (the
 * start gate), supervisor_ops.c (the requests it answers itself),
 * supervisor_replay.c (`events`), supervisor_restore.c (a restart). */
#include "actors/supervisor.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/amsg_gen.h"
#include "core/cleanup.h"
#include "core/edge.h"
#include "core/eventlog.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"
#include "core/proto.h"

#include "actors/supervisor_int.h"

/* ------------------------------------------------------------------ */
/* Requests                                                            */

/* Park the request and hand it to actor `to` as a "req" message (with the
 * container's bundle when given: the checkpoint actor needs it).  The
 * client's bytes go on as they came (bin): the receiver decodes them
 * once. */
void
supervisor_park_and_send (supervisor_t *self, edge_request_t *req, const char *to,
                          const char *bundle, const char *container_actor)
{
  amsg_req_t m = { .op = edge_request_op (req)->code, .bundle = bundle, .actor = container_actor };
  edge_request_raw_view (req, &m.body.ptr, &m.body.size);
  m.token = edge_request_park (self->edge, req);
  cleanup_error zcd_error_t *err = NULL;
  if (amsg_req_send (self->daemon->actors, SUPERVISOR_NAME, to, &m, &err) < 0)
    edge_reply_error (self->edge, m.token, err->code, err->msg);
}

static void
s_forward (supervisor_t *self, edge_request_t *req)
{
  cleanup_free char *id = mp_get_strdup (edge_request_body (req), "id");
  container_entry_t *e = id ? zhashx_lookup (self->containers, id) : NULL;
  /* Another caller's container is as good as absent (PROTOCOL.md "Callers"). */
  if (e == NULL || !supervisor_may_see (edge_request_caller (req), e))
    {
      edge_fail (self->edge, req, ZCD_E_NOT_FOUND, "no container `%s`", id ? id : "");
      return;
    }
  supervisor_park_and_send (self, req, e->actor, NULL, NULL);
}

/* The ops whose success is an event (PROTOCOL.md "Emits"). */
static bool
s_emits_events (proto_op_code_t op)
{
  return op == PROTO_OP_CREATE || op == PROTO_OP_EXEC || op == PROTO_OP_UPDATE
         || op == PROTO_OP_CHECKPOINT_CREATE;
}

static void
s_handle_request (void *arg, edge_request_t *req)
{
  supervisor_t *self = arg;
  if (self->stopping)
    {
      edge_fail (self->edge, req, ZCD_E_UNAVAILABLE, "the daemon is shutting down");
      return;
    }
  if (self->flush_failures > 0 && s_emits_events (edge_request_op (req)->code))
    {
      /* Its events could not be logged, so it could not be answered: say
       * so now rather than do the work and hold the reply (issue 8). */
      edge_fail (self->edge, req, ZCD_E_UNAVAILABLE,
                 "no space left on the state dir (the event log cannot be written): `%s` "
                 "changes nothing until it can",
                 edge_request_op (req)->name);
      return;
    }
  switch (edge_request_op (req)->code)
    {
    case PROTO_OP_VERSION:
      supervisor_op_version (self, req);
      break;
    case PROTO_OP_STATE:
      supervisor_op_state (self, req);
      break;
    case PROTO_OP_METRICS:
      supervisor_op_metrics (self, req);
      break;
    case PROTO_OP_EVENTS:
      supervisor_op_events (self, req);
      break;
    case PROTO_OP_CREATE:
      supervisor_op_create (self, req);
      break;
    case PROTO_OP_EXEC:
    case PROTO_OP_SIGNAL:
    case PROTO_OP_UPDATE:
    case PROTO_OP_UPDATE_PROCESS:
      s_forward (self, req);
      break;
    case PROTO_OP_STATS:
      supervisor_op_stats (self, req);
      break;
    case PROTO_OP_CHECKPOINT_CREATE:
    case PROTO_OP_CHECKPOINT_LIST:
    case PROTO_OP_CHECKPOINT_DELETE:
      supervisor_op_checkpoint (self, req);
      break;
    default:
      edge_fail (self->edge, req, ZCD_E_UNAVAILABLE, "`%s` is not implemented by this daemon yet",
                 edge_request_op (req)->name);
      break;
    }
}

/* An actor answers a parked request. */
static void
s_on_reply (actor_t *actor, const char *from, const amsg_reply_t *m)
{
  supervisor_t *self = actor_state (actor);
  if (metrics_prom_on_reply (self, m))
    return; /* a Prometheus scrape's cgroup numbers */
  uint64_t *after = m->after_events ? zhashx_lookup (self->last_event_seq, from) : NULL;
  uint64_t after_seq = after ? *after : 0;
  if (m->ok)
    {
      msgpack_object result = { .type = MSGPACK_OBJECT_BIN };
      result.via.bin.ptr = m->result.ptr;
      result.via.bin.size = (uint32_t)m->result.size;
      edge_reply_parked_ok (self->edge, m->token, m->result.ptr ? &result : NULL, after_seq);
    }
  else
    edge_reply_error_after (self->edge, m->token, m->has_code ? m->code : ZCD_E_INTERNAL,
                            m->message ? m->message : "", after_seq);
}

/* ------------------------------------------------------------------ */
/* The turn's end: commit the log, publish, reply, stream replays        */

static void
s_flush_retry (loop_t *loop, void *arg)
{
  supervisor_t *self = arg;
  self->flush_timer = NULL;
}

/* A failed commit keeps its events (and what depends on them) queued; it
 * is tried again when a backing-off timer fires (which also wakes the
 * loop, since nothing else may), and said once per failing spell rather
 * than once per try. */
static void
s_flush_failed (supervisor_t *self, const zcd_error_t *err)
{
  if (self->flush_failures++ == 0)
    log_error ("event log: %s (events and the replies that follow them wait; retrying)", err->msg);
  uint64_t delay = 10;
  for (uint64_t i = 1; i < self->flush_failures && delay < 1000; i++)
    delay *= 2;
  if (self->flush_timer == NULL)
    self->flush_timer
        = loop_timer_add (self->daemon->loop, delay > 1000 ? 1000 : delay, s_flush_retry, self);
}

/* `back`'s acks join the end of `front`, in order; `back` is left empty.
 * Mostly `front` is empty and the lists just trade places. */
static void
s_acks_join (zlistx_t **front, zlistx_t **back)
{
  if (zlistx_size (*front) == 0)
    {
      zlistx_t *empty = *front;
      *front = *back;
      *back = empty;
      return;
    }
  for (void *a; (a = zlistx_detach (*back, NULL));)
    zlistx_add_end (*front, a);
}

/* A commit ended (eventlog_commit_start: from the loop, or at once).  Its
 * events are durable now, or still waiting after a failure; what may leave
 * leaves in this turn's before-sleep (edge_flush up to the durable seq). */
static void
s_commit_done (eventlog_t *log, const zcd_error_t *err, void *arg)
{
  supervisor_t *self = arg;
  if (err)
    {
      /* The notices go back in front of those queued since, in order:
       * their events are in the next batch again. */
      s_acks_join (&self->acks_committing, &self->acks);
      zlistx_t *all = self->acks_committing;
      self->acks_committing = self->acks;
      self->acks = all;
      s_flush_failed (self, err);
      return;
    }
  if (self->flush_failures)
    log_info ("event log: writable again after %llu failed flushes",
              (unsigned long long)self->flush_failures);
  self->flush_failures = 0;
  /* What the commit made publishable leaves now, before the actors it
   * acknowledges clean up after their exits: a client waiting for an exit
   * (to create the next container) hears of it a few steps earlier. */
  edge_flush (self->edge, eventlog_durable_seq (self->log));
  /* Those queued since (events of the next batch) wait in `acks`. */
  supervisor_send_acks (self, self->acks_committing);
}

/* Start a commit of what this turn (and the turns while the last commit
 * was in flight) appended, unless one is in flight (the batch grows: group
 * commit) or a failing spell's backoff is not over. */
static void
s_commit_kick (supervisor_t *self)
{
  if (self->flush_failures > 0 && self->flush_timer != NULL)
    return;
  if (eventlog_commit_busy (self->log))
    return;
  /* Every notice queued now belongs to an event of this batch (or an
   * older, durable one): they travel with the commit. */
  s_acks_join (&self->acks_committing, &self->acks);
  eventlog_commit_start (self->log);
}

static void
s_before_sleep (loop_t *loop, void *arg)
{
  supervisor_t *self = arg;
  s_commit_kick (self);
  if (zlistx_size (self->replays))
    supervisor_run_replays (self);
  /* Replies that follow no unlogged event leave whatever the disk does. */
  edge_flush (self->edge, eventlog_durable_seq (self->log));
  if (self->stopping && edge_parked_count (self->edge) == 0)
    loop_stop (loop);
}

/* Creates that never reached a start slot, and replays, end with the
 * daemon: each gets its final answer now. */
static void
s_answer_unstarted (supervisor_t *self, const char *message)
{
  zlistx_t *lists[] = { self->start_queue, self->held };
  for (size_t i = 0; i < 2; i++)
    for (queued_create_t *q = zlistx_detach (lists[i], NULL); q; q = zlistx_detach (lists[i], NULL))
      {
        zhashx_delete (self->reserved, q->id);
        zhashx_delete (self->start_times, (void *) (uintptr_t) q->token);
        edge_reply_error (self->edge, q->token, ZCD_E_UNAVAILABLE, message);
        supervisor_queued_create_free (q);
      }
  self->queued = 0;
  supervisor_replays_stop (self, message);
}

static void
s_stop_deadline (loop_t *loop, void *arg)
{
  supervisor_t *self = arg;
  self->stop_timer = NULL;
  log_warn ("stopping: %zu requests still in progress after %d s; they are answered "
            "`unavailable`",
            edge_parked_count (self->edge), SUPERVISOR_STOP_GRACE_MS / 1000);
  loop_stop (loop);
}

void
supervisor_stop (supervisor_t *self)
{
  if (self->stopping)
    return;
  self->stopping = true;
  s_answer_unstarted (self, "the daemon is shutting down");
  /* Requests already in the hands of a container (a start, a runtime call)
   * get their own answer if it comes in time; the turn's end stops the
   * loop once none is left. */
  self->stop_timer
      = loop_timer_add (self->daemon->loop, SUPERVISOR_STOP_GRACE_MS, s_stop_deadline, self);
}

static void
s_heartbeat (loop_t *loop, void *arg)
{
  supervisor_t *self = arg;
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 3);
  mp_pack_kv_uint (&pk, "last_seq", eventlog_durable_seq (self->log));
  mp_pack_kv_str (&pk, "boot_id", self->boot_id);
  mp_pack_kv_int (&pk, "ts", zcd_now_ns ());
  edge_queue_publish (self->edge, 0, "/heartbeat", buf.data, buf.size);
  msgpack_sbuffer_destroy (&buf);
  self->heartbeat = loop_timer_add (loop, self->daemon->config->heartbeat_ms, s_heartbeat, self);
}

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

static const amsg_supervisor_handlers_t s_handlers = {
  .on_reply = s_on_reply,
  .on_event = supervisor_on_event,
  .on_started = supervisor_on_started,
  .on_view = supervisor_on_view,
  .on_gone = supervisor_on_gone,
};

static const actor_class_t s_class = {
  .kind = "supervisor",
  AMSG_SUPERVISOR_DISPATCH (&s_handlers),
};

static void
s_read_boot_id (char *out, size_t size)
{
  cleanup_free char *text = NULL;
  if (zcd_read_file ("/proc/sys/kernel/random/uuid", 64, &text, NULL, NULL) == 0)
    {
      text[strcspn (text, "\n")] = '\0';
      snprintf (out, size, "%s", text);
    }
  else
    snprintf (out, size, "%llx-%d", (unsigned long long)zcd_now_ns (), (int)getpid ());
}

supervisor_t *
supervisor_new (zcd_daemon_t *daemon, zcd_error_t **err)
{
  const zcd_config_t *cfg = daemon->config;
  supervisor_t *self = calloc (1, sizeof *self);
  self->daemon = daemon;
  self->started_mono_ns = zcd_mono_ns ();
  self->prom = metrics_prom_new ();
  s_read_boot_id (self->boot_id, sizeof self->boot_id);
  self->containers = zhashx_new ();
  zhashx_set_destructor (self->containers, supervisor_entry_destroy);
  self->reserved = zhashx_new ();
  self->start_queue = zlistx_new ();
  self->held = zlistx_new ();
  self->replays = zlistx_new ();
  self->acks = zlistx_new ();
  zlistx_set_destructor (self->acks, supervisor_ack_destroy);
  self->acks_committing = zlistx_new ();
  zlistx_set_destructor (self->acks_committing, supervisor_ack_destroy);
  self->draining = zhashx_new ();
  zhashx_set_destructor (self->draining, edge_free_item);
  self->last_event_seq = zhashx_new ();
  zhashx_set_destructor (self->last_event_seq, edge_free_item);
  self->start_times = zhashx_new ();
  zhashx_set_key_duplicator (self->start_times, NULL);
  zhashx_set_key_destructor (self->start_times, NULL);
  zhashx_set_key_hasher (self->start_times, edge_token_hash);
  zhashx_set_key_comparator (self->start_times, edge_token_compare);
  zhashx_set_destructor (self->start_times, edge_free_item);
  self->restore_leftovers = zhashx_new ();
  zhashx_set_key_duplicator (self->restore_leftovers, NULL);
  zhashx_set_key_destructor (self->restore_leftovers, NULL);
  zhashx_set_key_hasher (self->restore_leftovers, edge_token_hash);
  zhashx_set_key_comparator (self->restore_leftovers, edge_token_compare);
  zhashx_set_destructor (self->restore_leftovers, supervisor_free_source);
  cleanup_free char *log_path = NULL;
  if (asprintf (&log_path, "%s/events.log", cfg->state_dir) < 0
      || eventlog_open (log_path, cfg->events_retain, &self->log, err) < 0)
    {
      zcd_error_wrap (err, "event log");
      supervisor_destroy (&self);
      return NULL;
    }
  self->actor = actor_new (daemon->actors, &s_class, SUPERVISOR_NAME, self, err);
  if (self->actor == NULL)
    {
      supervisor_destroy (&self);
      return NULL;
    }
  if (stats_actor_new (daemon, err) == NULL || checkpoint_actor_new (daemon, err) == NULL)
    {
      supervisor_destroy (&self);
      return NULL;
    }
  /* .trash and .spare first: the restore moves what it cannot use aside,
   * and what an earlier run left in .trash goes off the loop. */
  daemon->dirs = container_dirs_new (daemon);
  /* Rebuild every container before the first request can be read. */
  supervisor_restore_all (daemon, self->log);
  edge_config_t edge_cfg = {
    .listen = cfg->listen,
    .publish = cfg->publish,
    .max_request_size = cfg->max_request_size,
    .group = cfg->group,
    .curve_secret = cfg->curve_secret,
    .curve_clients = cfg->curve_clients,
    .insecure_tcp = cfg->insecure_tcp,
    .client_queue = cfg->client_queue,
    .client_queue_bytes = cfg->client_queue_bytes,
  };
  self->edge = edge_new (daemon->zmq_ctx, daemon->loop, &edge_cfg, s_handle_request, self, err);
  if (self->edge == NULL)
    {
      supervisor_destroy (&self);
      return NULL;
    }
  cleanup_error zcd_error_t *uring_err = NULL;
  if (eventlog_commit_attach (self->log, daemon->loop, s_commit_done, self, &uring_err) < 0)
    log_warn ("event log: no io_uring (%s): commits are synchronous, on the loop thread",
              uring_err->msg);
  loop_set_before_sleep (daemon->loop, s_before_sleep, self);
  self->heartbeat = loop_timer_add (daemon->loop, cfg->heartbeat_ms, s_heartbeat, self);
  return self;
}

void
supervisor_destroy (supervisor_t **pself)
{
  if (pself == NULL || *pself == NULL)
    return;
  supervisor_t *self = *pself;
  metrics_prom_destroy (&self->prom);
  if (self->log)
    eventlog_flush (self->log, NULL);
  if (self->edge)
    {
      /* Every request gets its one final reply, even one the daemon
       * stopped in the middle of. */
      s_answer_unstarted (self, "the daemon is shutting down");
      edge_fail_all_parked (self->edge, ZCD_E_UNAVAILABLE,
                            "the daemon stopped before this request finished (it may still "
                            "complete: see `state` once it is back)");
      edge_flush (self->edge, eventlog_durable_seq (self->log));
    }
  loop_timer_cancel (self->daemon->loop, self->stop_timer);
  loop_timer_cancel (self->daemon->loop, self->heartbeat);
  loop_timer_cancel (self->daemon->loop, self->replay_timer);
  loop_timer_cancel (self->daemon->loop, self->flush_timer);
  zlistx_destroy (&self->acks);
  zlistx_destroy (&self->acks_committing);
  supervisor_replays_free (self);
  zlistx_destroy (&self->replays);
  zlistx_t *creates[] = { self->start_queue, self->held };
  for (size_t i = 0; i < 2 && creates[i]; i++)
    for (queued_create_t *q = zlistx_detach (creates[i], NULL); q;
         q = zlistx_detach (creates[i], NULL))
      supervisor_queued_create_free (q);
  zlistx_destroy (&self->start_queue);
  zlistx_destroy (&self->held);
  edge_destroy (&self->edge);
  eventlog_destroy (&self->log);
  container_dirs_destroy (&self->daemon->dirs);
  zhashx_destroy (&self->containers);
  zhashx_destroy (&self->reserved);
  zhashx_destroy (&self->draining);
  zhashx_destroy (&self->start_times);
  zhashx_destroy (&self->restore_leftovers);
  zhashx_destroy (&self->last_event_seq);
  /* The actor's state is this struct: detach it before the actor goes. */
  free (self);
  *pself = NULL;
}
