/* The supervisor's state, shared by its files: supervisor.c (life cycle,
 * request dispatch, the turn's end), supervisor_table.c (the container
 * table, events in and out, acks), supervisor_gate.c (the start gate),
 * supervisor_ops.c (version, state, metrics, stats, checkpoints),
 * supervisor_replay.c (`events` replays) and supervisor_restore.c. */
#ifndef ZCD_SUPERVISOR_INT_H
#define ZCD_SUPERVISOR_INT_H

#include <czmq.h>

#include "actors/metrics_prom.h"
#include "actors/supervisor.h"
#include "core/amsg_gen.h"
#include "core/edge.h"
#include "core/eventlog.h"

#define LATENCY_RING 4096
/* Creates admitted but waiting for a start slot; past this a create is
 * answered `busy` (PROTOCOL.md: a bounded queue is full, retry later). */
#define MAX_QUEUED_CREATES 10000

typedef struct container_entry
{
  char *id;
  char *view; /* msgpack map entries of the Container, minus "pids", without the header */
  size_t view_len;
  uint32_t view_entries;
  char *cgroup_procs; /* where the container's pids are listed */
  /* cgroup_procs's directory, kept open (O_PATH): `state` opens the file
   * afresh in it, with no path walk.  Not the file itself: a v1
   * cgroup.procs fd read again within a second returns the pid list it
   * read first (the kernel keeps a pidlist per open file for a while). */
  int procs_dir_fd;
  char *bundle;
  uint32_t owner; /* uid whose container it is (PROTOCOL.md "Callers"); 0: root's */
  uint64_t init_pid;
  char *actor; /* the container actor that holds this id now */
  uint32_t processes;
} container_entry_t;

typedef struct queued_create
{
  uint64_t token;
  char *id;
  container_spec_t *spec; /* the request, decoded once at admission */
} queued_create_t;

typedef struct ack
{
  char *to;
  char *tag;
} ack_t;

typedef struct replay
{
  edge_request_t *req;
  uint64_t after_seq; /* the newest seq sent (or the request's since_seq) */
  int64_t since_ns;
  char *id;
  zcd_caller_t caller; /* sees only its own containers' events */
  bool truncated;
  uint64_t oldest_seq;
  uint64_t next_try_ms;      /* monotonic; 0 = at once */
  uint64_t backoff_ms;       /* 0 while the replay moves */
  uint64_t last_progress_ms; /* an event sent, or the start */
} replay_t;

struct supervisor
{
  zcd_daemon_t *daemon;
  actor_t *actor;
  edge_t *edge;
  eventlog_t *log;
  zhashx_t *containers; /* id -> container_entry_t */
  zhashx_t *reserved;   /* ids admitted but not started yet -> token */
  zhashx_t *draining;   /* id -> actor whose exit is out but which is not gone yet */
  zlistx_t *held;        /* queued_create_t waiting for a draining id, in order */
  zlistx_t *start_queue; /* queued_create_t waiting for a start slot, in order */
  int starting;
  size_t queued;
  zlistx_t *replays; /* replay_t, newest first */
  /* ack_t: "logged" notices owed once the log is flushed, in order; the
   * ones for the events of the commit in flight wait in acks_committing. */
  zlistx_t *acks;
  zlistx_t *acks_committing;
  loop_timer_t *replay_timer;
  uint64_t replay_timer_due_ms;
  size_t n_replays;
  uint64_t replays_abandoned; /* their client went away */
  uint64_t replays_stalled;   /* ended with `busy`: their client did not read */
  loop_timer_t *flush_timer;
  bool stopping;            /* SIGTERM: finishing what is in progress */
  loop_timer_t *stop_timer; /* ... for at most SUPERVISOR_STOP_GRACE_MS */
  uint64_t flush_failures; /* consecutive failed event-log flushes */
  loop_timer_t *heartbeat;
  char boot_id[40];
  uint64_t started_mono_ns;
  uint64_t events_total;
  uint64_t latencies[LATENCY_RING];
  uint64_t latency_count;
  zhashx_t *start_times;    /* token -> mono ns of the create request */
  zhashx_t *restore_leftovers; /* token of a restore -> checkpoint_source_t (its cgroups) */
  zhashx_t *last_event_seq; /* actor name -> seq of its newest event */
  struct metrics_prom *prom; /* Prometheus text, GET /metrics (actors/metrics_prom.h) */
};

/* The daemon's counters as the `metrics` op's map and its Prometheus
 * text both report them (supervisor_ops.c). */
typedef struct supervisor_counters
{
  uint64_t containers, processes, events_total, requests_total, errors_total;
  uint64_t uptime_ns, rss_bytes, open_fds;
  uint64_t replies_lost, requests_dropped, oversized, replays_abandoned, replays_stalled;
  actor_system_stats_t actors;
} supervisor_counters_t;

/* supervisor.c */
/* Park the request and hand it to actor `to` as a "req" message (with the
 * container's bundle when given: the checkpoint actor needs it). */
void supervisor_park_and_send (supervisor_t *self, edge_request_t *req, const char *to,
                               const char *bundle, const char *container_actor);

/* May this caller see and act on container e? (PROTOCOL.md "Callers") */
static inline bool
supervisor_may_see (const zcd_caller_t *caller, const container_entry_t *e)
{
  return caller->admin || e->owner == caller->uid;
}

/* supervisor_table.c */
void supervisor_entry_destroy (void **item); /* zhashx destructor of `containers` */
/* The event actor `from` reports: the table follows it, it is logged and
 * queued for publishing, and the actor's next reply will follow it.
 * Returns its seq (0 when it could not be stored). */
uint64_t supervisor_log_event (supervisor_t *self, const char *from, const amsg_event_t *m);
void supervisor_on_event (actor_t *actor, const char *from, const amsg_event_t *m);
void supervisor_on_view (actor_t *actor, const char *from, const amsg_view_t *m);
void supervisor_on_gone (actor_t *actor, const char *from, const amsg_gone_t *m);
/* The Container map of PROTOCOL.md: the cached view and the current pids. */
void supervisor_pack_container (container_entry_t *e, msgpack_packer *pk);
void supervisor_ack_destroy (void **item); /* zlistx destructor of the ack lists */
/* After a flush: tell each actor in `acks` that its event is durable, in
 * order; the list is left empty. */
void supervisor_send_acks (supervisor_t *self, zlistx_t *acks);

/* supervisor_gate.c */
void supervisor_op_create (supervisor_t *self, edge_request_t *req);
/* A create ended: on success the start event and the create's reply in
 * one message (issue 9 part 3), else the reply's error; a slot is free. */
void supervisor_on_started (actor_t *actor, const char *from, const amsg_started_t *m);
void supervisor_queued_create_free (queued_create_t *q);
/* zhashx destructor of a checkpoint_source_t. */
void supervisor_free_source (void **item);
/* The earlier container of `id` is gone: its held creates join the queue. */
void supervisor_release_held (supervisor_t *self, const char *id);

/* supervisor_ops.c */
void supervisor_op_version (supervisor_t *self, edge_request_t *req);
void supervisor_op_state (supervisor_t *self, edge_request_t *req);
void supervisor_op_metrics (supervisor_t *self, edge_request_t *req);
void supervisor_read_counters (supervisor_t *self, supervisor_counters_t *out);
void supervisor_op_stats (supervisor_t *self, edge_request_t *req);
void supervisor_op_checkpoint (supervisor_t *self, edge_request_t *req);

/* On SIGTERM, in-progress requests get this long to finish. */
#define SUPERVISOR_STOP_GRACE_MS 10000

/* supervisor_replay.c */
void supervisor_op_events (supervisor_t *self, edge_request_t *req);
void supervisor_run_replays (supervisor_t *self);
void supervisor_replays_free (supervisor_t *self);
/* End every replay with `unavailable` (message) and free it. */
void supervisor_replays_stop (supervisor_t *self, const char *message);

#endif
