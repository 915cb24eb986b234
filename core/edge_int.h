/* The edge's private parts, shared by core/edge*.c only: the structs and
 * the few functions one file of the edge calls in another.
 *
 *   edge.c        sockets, receiving, requests, parking, life cycle
 *   edge_out.c    the per-turn output queue, its flush, reply frames
 *   edge_reply.c  reply builders and the answers to parked requests
 *   edge_peer.c   per-client bounds: replies not taken, backlog, held requests
 *   edge_curve.c  the ZAP handler and CURVE set-up of the tcp sockets */
#ifndef ZCD_EDGE_INT_H
#define ZCD_EDGE_INT_H

#include <czmq.h>
#include <stdatomic.h>
#include <zmq.h>

#include "core/caller.h"
#include "core/edge.h"
#include "core/metrics.h"

/* Frames before the body (identity + envelope) kept per request; a client
 * sending more is answered invalid_request. */
#define EDGE_MAX_FRAMES 32
/* What the answer to a message dropped for its size echoes of its envelope
 * (s_drop_oversized): routing hops and a REQ delimiter fit many times. */
#define EDGE_DROP_ECHO_BYTES 4096
/* malloc_trim walks every arena: at most once per this interval; after a
 * peer left, a little later, as libzmq frees its frames in its own thread. */
#define EDGE_TRIM_INTERVAL_MS 1000
#define EDGE_TRIM_AFTER_LEAVE_MS 50
#define PUB_FRAMES 2 /* topic, event */
/* Messages read per wake-up of a command socket, and how many dropped ones
 * an answer waits for at most before the turn ends (s_on_router). */
#define EDGE_READ_BATCH 256
#define EDGE_DROPS_BEFORE_FLUSH 16

/* Per-client bounds (PROTOCOL.md section 2, `zcd --help`); the two a flag
 * sets are in edge_config_t. */
#define EDGE_CLIENT_QUEUE_DEFAULT 1000            /* messages: ROUTER SNDHWM */
#define EDGE_CLIENT_QUEUE_BYTES_DEFAULT (4 << 20) /* bytes of replies not taken */
#define EDGE_PEER_HELD_MAX 64                     /* requests waiting per client */
#define EDGE_PEER_HELD_BYTES (4 << 20)            /* ... and their bytes */
#define EDGE_PEER_BACKOFF_MIN_MS 10
#define EDGE_PEER_BACKOFF_MAX_MS 1000
#define EDGE_PEER_STALL_MS 60000 /* no progress this long: what waits is dropped */
#define EDGE_PEER_SWEEP_MS 1000  /* idle clients are forgotten this often */

/* Sockets by who can reach them.  ipc:// and inproc:// endpoints are
 * guarded by file permissions and served in the clear; every other
 * (tcp://) endpoint by its own sockets, with CURVE: CURVE set on one shared
 * socket locked every ipc client out, zctr included (issue 8, defect 13). */
typedef enum
{
  SOCK_LOCAL,
  SOCK_NETWORK,
  SOCK_KINDS
} sock_kind_t;

typedef struct edge_peer edge_peer_t;

typedef enum
{
  REQ_NEW,
  REQ_ANSWERED,
  REQ_PARKED,
  REQ_KEPT
} req_state_t;

struct edge_request
{
  edge_t *edge;
  void *router;      /* the socket it came in on: every reply leaves there */
  edge_peer_t *peer; /* its client (a reference) */
  req_state_t state;
  uint64_t token;
  zmq_msg_t frames[EDGE_MAX_FRAMES]; /* identity, envelope */
  int n_frames;
  char *rid; /* packed rid object, NULL when none */
  size_t rid_len;
  proto_request_t decoded; /* valid while the handler runs */
  const char *raw;
  size_t raw_len;
  const proto_op_t *op;
  zcd_caller_t caller; /* from the body's User-Id (core/caller.h) */
  uint64_t arrived_ns; /* monotonic: read off its socket (request latency) */
};

struct edge_reply
{
  edge_request_t *req;
  msgpack_sbuffer buf;
  msgpack_packer pk;
};

/* A reply body's ticket, the hint of its zmq_msg free function: the body
 * counts against its client until libzmq lets go of it (edge_peer.c). */
typedef struct edge_track
{
  edge_peer_t *peer; /* a reference */
  size_t len;
  bool sent; /* handed to libzmq: its release means the client reads */
} edge_track_t;

/* A reply held for its operation's events while the event log cannot be
 * written (a full disk) goes after this long all the same: the client is
 * not left in silence, and what it was told is not lost (a restart
 * publishes an outcome whose event never reached the log). */
#define EDGE_REPLY_HOLD_MAX_MS 2000

typedef struct out_msg
{
  uint64_t after_seq;  /* leaves only once the event log is durable up to here */
  uint64_t queued_ms;  /* monotonic: a reply is held at most EDGE_REPLY_HOLD_MAX_MS */
  void *sock;          /* a reply's ROUTER; NULL for a publication (every PUB) */
  edge_track_t *track; /* a reply's body; NULL for a publication */
  int n_frames;
  zmq_msg_t *frames;
  /* A final reply to a valid request: its op's code + 1 (0: not timed)
   * and when the request arrived; its latency is taken when it leaves. */
  int timed_op;
  uint64_t arrived_ns;
} out_msg_t;

struct edge
{
  loop_t *loop;
  void *routers[SOCK_KINDS]; /* NULL when no endpoint is of that kind */
  void *pubs[SOCK_KINDS];
  void *zap;
  void *monitors[SOCK_KINDS]; /* PAIRs: the ROUTERs' peers that left */
  loop_watch_t *router_watches[SOCK_KINDS], *monitor_watches[SOCK_KINDS], *zap_watch;
  loop_timer_t *trim_timer;
  uint64_t last_trim_ns;
  size_t frame_cap; /* ZMQ_MAXMSGSIZE; also the most a whole message may carry */
  edge_config_t cfg;
  edge_request_fn fn;
  void *arg;
  zhashx_t *parked; /* token -> edge_request_t */
  uint64_t next_token;
  zlistx_t *out; /* out_msg_t, in the order they were queued */
  bool out_fresh;          /* queued since the last flush: someone waits for it */
  int drops_unflushed;     /* requests dropped since then */
  zhashx_t *allowed_keys;  /* z85 public key of a CURVE client -> its User-Id */
  edge_request_t *current; /* the request whose handler is running */
  char **ipc_paths;
  int client_queue;            /* cfg or its default */
  uint64_t client_queue_bytes; /* cfg or its default */
  zhashx_t *peers;             /* name -> edge_peer_t (edge_peer.c) */
  zlistx_t *waiting;           /* edge_peer_t with a backlog or held requests */
  zlistx_t *waiting_due;       /* the same, taken off while the timer serves them */
  size_t n_waiting;
  loop_timer_t *peer_timer; /* one for every client's retry and the sweep */
  uint64_t peer_timer_due_ms, peer_sweep_ms;
  uint64_t requests_total, errors_total, replies_lost, oversized_total, dropped_requests;
  /* From a valid request's arrival to its final reply leaving (or joining
   * its client's backlog), per op (docs/metrics.md). */
  metrics_hist_t request_latency[PROTO_OP_COUNT];
};

/* edge_out.c */
/* A reply to req: copies of its identity and envelope, then body (malloc'ed,
 * taken: it becomes the last frame as it is).  NULL when the client already
 * owes twice its bounds (the reply is counted lost). */
out_msg_t *edge_out_reply_msg (edge_t *self, edge_request_t *req, char *body, size_t len,
                               uint64_t after_seq);
/* Queue body (taken) as the reply to req, for this turn's flush. */
void edge_out_queue_reply (edge_t *self, edge_request_t *req, char *body, size_t len,
                           uint64_t after_seq);
void edge_out_msg_free (out_msg_t *m); /* closes what frames it still has */
/* m is a final reply leaving now: its request's latency, if timed. */
void edge_out_observe (edge_t *self, const out_msg_t *m);

/* edge_peer.c: per-client bounds.  A client is keyed by its ROUTER and
 * routing id; edge_peer_get returns a new reference. */
void edge_peers_init (edge_t *self);
void edge_peers_fini (edge_t *self);
edge_peer_t *edge_peer_get (edge_t *self, void *router, zmq_msg_t *identity);
void edge_peer_unref (edge_peer_t *peer);
edge_track_t *edge_peer_track (edge_peer_t *peer, size_t len);
void edge_peer_release (void *data, void *hint); /* zmq_msg free function */
/* Its requests are not served now: they go to edge_peer_hold. */
bool edge_peer_gated (const edge_t *self, const edge_peer_t *peer);
/* Gated, and as many of its requests wait as may: the next is dropped. */
bool edge_peer_dropping (const edge_t *self, const edge_peer_t *peer);
/* A stream's next partial must wait (EDGE_SEND_FULL). */
bool edge_peer_full (const edge_t *self, const edge_peer_t *peer);
/* It owes twice its bounds: a new reply is dropped. */
bool edge_peer_over (const edge_t *self, const edge_peer_t *peer);
/* Hand m's frames to libzmq: 0, or the errno (frames still m's). */
int edge_peer_try_send (out_msg_t *m);
/* Send reply m, or keep it in its client's backlog, or drop it; takes m. */
void edge_peer_send (edge_t *self, out_msg_t *m);
/* Keep a request of a gated client (body moved), or drop it if too many wait. */
void edge_peer_hold (edge_t *self, edge_peer_t *peer, edge_request_t *req, zmq_msg_t *body);
/* Drop a request of a gated client, counted and logged once per spell. */
void edge_peer_drop_request (edge_t *self, edge_peer_t *peer, const char *why);
void edge_peer_reply_lost (edge_t *self, edge_peer_t *peer);

/* edge_reply.c */
void edge_answer_error (edge_t *self, edge_request_t *req, zcd_code_t code, const char *message,
                        uint64_t after_seq);

/* edge.c */
void edge_request_free (edge_request_t *req);
/* Decode, check and hand a request to the handler; body is the request's. */
void edge_handle_message (edge_t *self, edge_request_t *req, zmq_msg_t *body);
void edge_give_memory_back (edge_t *self, uint64_t min_delay_ms);

/* edge_curve.c: the ZAP handler (who a caller is) and CURVE on the
 * network sockets. */
int edge_zap_setup (edge_t *self, void *zmq_ctx, zcd_error_t **err);
int edge_curve_setup (edge_t *self, void *zmq_ctx, zcd_error_t **err);

#endif
