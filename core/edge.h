/* The protocol edge: the command ROUTERs and the event PUBs, request
 * framing and validation (PROTOCOL.md section 2), the table of requests
 * waiting for an answer from an actor, and the per-turn output queue.
 *
 * A request handed to the handler is the edge's.  The handler answers it
 * at once (edge_fail, or edge_reply_ok + edge_reply_send), parks it
 * (edge_request_park: a token an actor answers later with
 * edge_reply_parked_ok / edge_reply_error) or keeps it for a streamed reply
 * (edge_request_keep ... edge_request_release).  A request the handler does
 * none of that to is answered `internal`: every request gets exactly one
 * final reply.
 *
 * Replies and publications queue up and leave in edge_flush, which the
 * supervisor calls once per turn after the event log is flushed.  What a
 * client has not taken of its replies is bounded (PROTOCOL.md section 2):
 * past the bounds its requests wait, then are dropped (core/edge_peer.c).
 * ipc:// and inproc:// endpoints are served by one ROUTER and one PUB in
 * the clear; tcp:// endpoints by their own pair, with CURVE.  A reply
 * leaves on the ROUTER its request came in on; a publication on every PUB. */
#ifndef ZCD_EDGE_H
#define ZCD_EDGE_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/caller.h"
#include "core/err.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/proto.h"

typedef struct edge edge_t;
typedef struct edge_request edge_request_t;
typedef struct edge_reply edge_reply_t;
typedef void (*edge_request_fn) (void *arg, edge_request_t *req);

typedef struct edge_config
{
  char *const *listen;  /* NULL-terminated endpoints */
  char *const *publish; /* NULL-terminated endpoints */
  uint64_t max_request_size;
  const char *group;         /* ipc socket files' group, NULL = root */
  const char *curve_secret;  /* czmq certificate file of the server */
  const char *curve_clients; /* directory of allowed client certificates */
  bool insecure_tcp;
  /* Per client (PROTOCOL.md section 2): replies it has not taken, in
   * messages (the ROUTER's high-water mark) and bytes, before its requests
   * wait and then are dropped.  0: the defaults (EDGE_CLIENT_QUEUE_DEFAULT,
   * EDGE_CLIENT_QUEUE_BYTES_DEFAULT). */
  int client_queue;
  uint64_t client_queue_bytes;
} edge_config_t;

edge_t *edge_new (void *zmq_ctx, loop_t *loop, const edge_config_t *cfg, edge_request_fn fn,
                  void *arg, zcd_error_t **err);
/* Sends what is queued, closes the sockets, removes the ipc files. */
void edge_destroy (edge_t **self);

const msgpack_object *edge_request_body (const edge_request_t *req);
/* Who sent it (core/caller.h); valid as long as the request. */
const zcd_caller_t *edge_request_caller (const edge_request_t *req);
const proto_op_t *edge_request_op (const edge_request_t *req);
/* The raw body; valid while the handler runs. */
void edge_request_raw_view (const edge_request_t *req, const char **body, size_t *len);
/* A malloc'ed copy of the raw body, the caller's. */
void edge_request_raw_body (const edge_request_t *req, char **copy, size_t *len);

uint64_t edge_request_park (edge_t *self, edge_request_t *req);
edge_request_t *edge_request_keep (edge_t *self, edge_request_t *req);
void edge_request_release (edge_t *self, edge_request_t *req);

void edge_fail (edge_t *self, edge_request_t *req, zcd_code_t code, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));
/* Start an ok reply with n_entries result entries to pack. */
edge_reply_t *edge_reply_ok (edge_t *self, edge_request_t *req, uint32_t n_entries);
msgpack_packer *edge_reply_packer (edge_reply_t *r);
/* Room for `bytes` more, so a large reply is not grown (and moved) by doubling. */
void edge_reply_reserve (edge_reply_t *r, size_t bytes);
void edge_reply_send (edge_t *self, edge_reply_t *r);     /* queued for this turn's flush */
/* Same, leaving only once the event log is durable up to after_seq. */
void edge_reply_send_after (edge_t *self, edge_reply_t *r, uint64_t after_seq);
void edge_reply_send_now (edge_t *self, edge_reply_t *r); /* for the end of a stream */

/* Answers to parked requests.  result: a bin object holding a msgpack map
 * (or NULL for {}).  after_seq: the newest event the answer follows (0 =
 * none); it leaves only once the event log is durable up to there. */
void edge_reply_parked_ok (edge_t *self, uint64_t token, const msgpack_object *result,
                           uint64_t after_seq);
void edge_reply_error (edge_t *self, uint64_t token, zcd_code_t code, const char *message);
void edge_reply_error_after (edge_t *self, uint64_t token, zcd_code_t code, const char *message,
                             uint64_t after_seq);
/* Requests parked and not answered yet (shutdown waits for them). */
size_t edge_parked_count (const edge_t *self);
/* Answer every parked request with this error (the daemon is stopping). */
void edge_fail_all_parked (edge_t *self, zcd_code_t code, const char *message);

/* edge_send_partial_event's failures. */
#define EDGE_SEND_FULL (-1) /* the client's pipe is full: try again next turn */
#define EDGE_SEND_GONE (-2) /* the client is gone (unroutable): stop the stream */

/* A streaming partial reply {rid, event} sent at once, on the socket the
 * request came in on; 0, EDGE_SEND_FULL or EDGE_SEND_GONE. */
int edge_send_partial_event (edge_request_t *req, const char *event, size_t len);

/* seq: the event's (0 for what is not logged, the heartbeat). */
void edge_queue_publish (edge_t *self, uint64_t seq, const char *topic, const void *data,
                         size_t len);
/* Send what is queued and depends on no event past durable_seq (the event
 * log's); the rest stays queued, in order, for a later flush. */
void edge_flush (edge_t *self, uint64_t durable_seq);

uint64_t edge_requests_total (const edge_t *self);
uint64_t edge_errors_total (const edge_t *self);
uint64_t edge_replies_lost (const edge_t *self);
/* Seconds from a valid request of `op` arriving to its final reply
 * leaving (invalid requests have no op and are not timed). */
const metrics_hist_t *edge_request_latency (const edge_t *self, proto_op_code_t op);
/* Messages dropped whole for too many frames or too many bytes in all. */
uint64_t edge_oversized_total (const edge_t *self);
/* Requests of clients that do not take their replies, dropped unanswered
 * (too many waiting, stalled too long, or the client left meanwhile). */
uint64_t edge_dropped_requests_total (const edge_t *self);
/* Clients with replies or requests waiting because they do not read. */
uint64_t edge_backlogged_peers (const edge_t *self);

/* zhashx helpers for uint64 keys stored in the pointer. */
size_t edge_token_hash (const void *key);
int edge_token_compare (const void *a, const void *b);
void edge_free_item (void **item);

#endif
