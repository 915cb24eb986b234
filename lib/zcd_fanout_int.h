/* Fan-out internals shared by zcd_fanout.c (nodes, node file, requests)
 * and zcd_fanout_events.c (the merged event stream); not installed. */
#ifndef ZCD_FANOUT_INT_H
#define ZCD_FANOUT_INT_H

#include "lib/zcd_private.h"

#define FO_KEY_LEN 40 /* a CURVE key in Z85 */
#define FO_BOOT_LEN 64

typedef struct fo_event_node
{
  zcd_fanout_event_t *event;
  struct fo_event_node *next;
} fo_event_node_t;

typedef struct
{
  fo_event_node_t *head, *tail;
} fo_queue_t;

/* The event side of one node (zcd_fanout_events.c).  A "sync" is three
 * pipelined requests on the node's own event DEALER: state, events since
 * `known`, state.  The replay is kept only when both states name the same
 * boot: then one daemon served it, and its events carry that boot. */
typedef struct
{
  uint64_t since; /* where the stream starts (ZCD_SINCE_NOW or a seq) */
  bool started;   /* the first sync succeeded */
  uint64_t known; /* every seq <= known is delivered or queued */
  char boot_id[FO_BOOT_LEN];
  char (*retired)[FO_BOOT_LEN]; /* boots seen before the current one */
  size_t n_retired;
  bool need_sync;
  /* the sync in flight: rids 0 when none */
  uint64_t rid_state1, rid_events, rid_state2;
  bool got_state1, got_events, got_state2, events_ok;
  char boot1[FO_BOOT_LEN], boot2[FO_BOOT_LEN];
  uint64_t state1_last_seq;
  uint64_t replay_known; /* highest seq buffered by the replay */
  bool replay_truncated;
  fo_queue_t replay;     /* events of the replay, until the sync commits */
  int64_t sync_deadline; /* monotonic ms: no progress until then = retry */
  int64_t retry_at;      /* monotonic ms: no new sync before (after a refusal) */
  bool dead;             /* its sockets could not be made: skipped */
  uint64_t syncs;
  bool truncated;
  char error[256];
} fo_stream_t;

typedef struct
{
  char *name, *cmd_ep, *evt_ep;
  char server_key[FO_KEY_LEN + 1]; /* "" = no CURVE */
  void *dealer;                    /* requests (zcd_fanout.c) */
  uint64_t next_rid;
  zcd_rids_t abandoned;             /* rids whose call timed out: late replies dropped */
  void *evt_dealer, *sub, *monitor; /* the event stream (zcd_fanout_events.c) */
  uint64_t evt_next_rid;
  fo_stream_t stream;
} fo_node_t;

struct _zcd_fanout_t
{
  void *ctx;
  fo_node_t *nodes;
  size_t n_nodes, cap_nodes;
  char client_public[FO_KEY_LEN + 1], client_secret[FO_KEY_LEN + 1];
  int timeout_ms;
  uint64_t since;
  bool events_started;
  size_t rr;         /* where the next poll round starts */
  zcd_stash_t stash; /* replies for zcd_fanout_recv */
  fo_queue_t ready;  /* merged events ready for delivery */
  char *last_error;
};

void fo_set_error (zcd_fanout_t *self, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
/* A socket of type `type` for node, with CURVE when the node has a server
 * key, connected to endpoint (not connected when NULL).  NULL (errno) on
 * failure, described in the last error. */
void *fo_socket (zcd_fanout_t *self, fo_node_t *node, int type, const char *endpoint);

void fo_queue_push (fo_queue_t *q, zcd_fanout_event_t *event);
zcd_fanout_event_t *fo_queue_pop (fo_queue_t *q);
void fo_queue_clear (fo_queue_t *q);

/* Event side of a node: close its sockets and free its stream state. */
void fo_stream_close (fo_node_t *node);

#endif
