/* libzcd: the C client library of the zcd container supervisor.
 *
 * Speaks the wire protocol of PROTOCOL.md (version 1) over ZeroMQ + msgpack:
 * a DEALER to the command endpoint (pipelined requests matched by `rid`,
 * streaming partial replies) and a SUB to the event endpoint (lossless event
 * consumption, section 5).  Standalone: links libzmq and msgpack-c only.
 *
 * Conventions (czmq style):
 * - thing_new() returns an object the caller owns; thing_destroy(&p) frees it
 *   and sets p to NULL (NULL or *p == NULL is fine).
 * - Functions that can fail return -1 (or NULL) and set errno; a client keeps
 *   a human-readable description of its last failure (zcd_client_last_error).
 * - `const char *` results point into the object they came from and live as
 *   long as it does, unless the comment says "caller frees".
 * - Not thread-safe: one object, one thread at a time (ZeroMQ sockets).
 */
#ifndef ZCD_CLIENT_H
#define ZCD_CLIENT_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZCD_DEFAULT_ADDRESS "ipc:///run/zcd/zcd.sock"
#define ZCD_DEFAULT_EVENTS_ADDRESS "ipc:///run/zcd/events.sock"
/* Default for blocking calls; zcd_client_set_timeout changes it. */
#define ZCD_DEFAULT_TIMEOUT_MS 30000

typedef struct _zcd_body_t zcd_body_t;
typedef struct _zcd_reply_t zcd_reply_t;
typedef struct _zcd_client_t zcd_client_t;
typedef struct _zcd_subscriber_t zcd_subscriber_t;

/* ------------------------------------------------------------------------
 * Request bodies: a msgpack map with str keys, built incrementally.
 *
 * Inside a map every value takes a key; inside an array the key must be
 * NULL.  Misuse (a key in an array, closing too often, ...) marks the body
 * broken and zcd_body_data then returns NULL.  Do not add "rid": the client
 * adds its own.
 * ---------------------------------------------------------------------- */

/* New body, a map; `op` (may be NULL) becomes its "op" key. */
zcd_body_t *zcd_body_new (const char *op);
void zcd_body_destroy (zcd_body_t **self_p);

/* Append a value to the innermost open map (key required) or array (key
 * NULL).  zcd_body_str with value NULL appends nil. */
void zcd_body_str (zcd_body_t *self, const char *key, const char *value);
void zcd_body_uint (zcd_body_t *self, const char *key, uint64_t value);
void zcd_body_int (zcd_body_t *self, const char *key, int64_t value);
void zcd_body_bool (zcd_body_t *self, const char *key, bool value);
void zcd_body_nil (zcd_body_t *self, const char *key);
/* An array of str from a NULL-terminated vector (NULL v = empty array). */
void zcd_body_strv (zcd_body_t *self, const char *key, const char *const *v);
/* Open a nested map or array under key; zcd_body_close ends the innermost. */
void zcd_body_map_open (zcd_body_t *self, const char *key);
void zcd_body_array_open (zcd_body_t *self, const char *key);
void zcd_body_close (zcd_body_t *self);
/* Packer for exactly one value of your own under key: pack one object with
 * it before the next zcd_body_* call.  Borrowed; NULL when broken. */
msgpack_packer *zcd_body_raw (zcd_body_t *self, const char *key);

/* The encoded map; every opened map/array must be closed.  The bytes belong
 * to the body (valid until the next change or destroy).  NULL (errno
 * EINVAL) when the body is broken or still has open containers. */
const char *zcd_body_data (zcd_body_t *self, size_t *len);

/* ------------------------------------------------------------------------
 * Replies: one decoded msgpack map, the last frame of a reply message.
 * ---------------------------------------------------------------------- */

/* Decode a reply body (bytes are copied).  NULL (errno EPROTO) when it is
 * not exactly one msgpack map. */
zcd_reply_t *zcd_reply_decode (const void *data, size_t len);
void zcd_reply_destroy (zcd_reply_t **self_p);

/* The whole map; borrowed from the reply. */
const msgpack_object *zcd_reply_root (const zcd_reply_t *self);
/* The raw msgpack bytes of the reply; borrowed. */
const char *zcd_reply_bytes (const zcd_reply_t *self, size_t *len);
/* Final reply (it carries "ok"), as opposed to a streamed partial one. */
bool zcd_reply_final (const zcd_reply_t *self);
/* "ok": true */
bool zcd_reply_ok (const zcd_reply_t *self);
/* The echoed rid when it is a uint, else 0 (the library never uses rid 0). */
uint64_t zcd_reply_rid (const zcd_reply_t *self);
/* error.code / error.message; NULL when the reply has none. */
const char *zcd_reply_error_code (const zcd_reply_t *self);
const char *zcd_reply_error_message (const zcd_reply_t *self);

/* Lookup by path: keys separated by '/', a decimal number indexes an array
 * ("containers/0/id", "stats/web1/cpu/usage/total": container ids never
 * hold a '/').  NULL when any step is missing.  Borrowed. */
const msgpack_object *zcd_reply_get (const zcd_reply_t *self, const char *path);
bool zcd_reply_get_uint (const zcd_reply_t *self, const char *path, uint64_t *out);
bool zcd_reply_get_int (const zcd_reply_t *self, const char *path, int64_t *out);
bool zcd_reply_get_bool (const zcd_reply_t *self, const char *path, bool *out);
/* Newly allocated copy of a str (caller frees); NULL if absent or not str. */
char *zcd_reply_get_strdup (const zcd_reply_t *self, const char *path);

/* The same on any object (e.g. an element of "containers"). */
const msgpack_object *zcd_obj_get (const msgpack_object *obj, const char *path);
bool zcd_obj_uint (const msgpack_object *obj, uint64_t *out);
bool zcd_obj_int (const msgpack_object *obj, int64_t *out);
bool zcd_obj_bool (const msgpack_object *obj, bool *out);
char *zcd_obj_strdup (const msgpack_object *obj); /* caller frees */
bool zcd_obj_str_eq (const msgpack_object *obj, const char *s);

/* Write obj as JSON (indented by 2 when pretty).  bin becomes a base64
 * string, ext and non-finite floats null, invalid UTF-8 U+FFFD, non-str map
 * keys their JSON text as a string.  0, or -1 on a write error. */
int zcd_json_print (FILE *out, const msgpack_object *obj, bool pretty);

/* ------------------------------------------------------------------------
 * Client: one DEALER connected to the command endpoint.
 * ---------------------------------------------------------------------- */

/* Connect to endpoint; NULL = $ZCD_ADDRESS, else ZCD_DEFAULT_ADDRESS.
 * Connecting is asynchronous: an absent daemon shows as a timeout later.
 * NULL (errno set) if the endpoint is malformed. */
zcd_client_t *zcd_client_new (const char *endpoint);
void zcd_client_destroy (zcd_client_t **self_p);
const char *zcd_client_endpoint (const zcd_client_t *self);
/* Timeout of the typed calls below, in ms (-1 = wait forever). */
void zcd_client_set_timeout (zcd_client_t *self, int timeout_ms);
int zcd_client_timeout (const zcd_client_t *self);
/* The DEALER socket (a libzmq handle), for zmq_poll; borrowed. */
void *zcd_client_socket (zcd_client_t *self);
/* Description of the last failure: "<code>: <message>" for a daemon error,
 * or the local reason (timeout, undecodable reply, ...).  "" if none. */
const char *zcd_client_last_error (const zcd_client_t *self);

/* Asynchronous API.  Send one request body (a msgpack map without "rid")
 * with a fresh rid added; returns the rid (> 0), or 0 with errno set
 * (EINVAL: not a map; EAGAIN: the socket's send queue is full). */
uint64_t zcd_client_send (zcd_client_t *self, const void *body, size_t len);
/* Next reply to any request sent with zcd_client_send, partial or final,
 * waiting up to timeout_ms (-1 = forever, 0 = poll).  0 and *reply (caller
 * owns) or -1 with errno EAGAIN on timeout, EPROTO for an undecodable
 * reply (dropped), other errno from libzmq. */
int zcd_client_recv (zcd_client_t *self, int timeout_ms, zcd_reply_t **reply);

/* Partial replies of a streaming call; the reply is borrowed for the call. */
typedef void (zcd_partial_fn) (const zcd_reply_t *partial, void *arg);

/* Blocking call: send body, wait for its final reply.  0 and *reply (caller
 * owns; check zcd_reply_ok) once the final reply arrived, -1 with errno
 * ETIMEDOUT when none came within timeout_ms (a late reply is dropped),
 * other errno as for send/recv.  Replies to other pipelined requests that
 * arrive meanwhile are kept for zcd_client_recv. */
int zcd_client_call (zcd_client_t *self, const void *body, size_t len, int timeout_ms,
                     zcd_reply_t **reply);
/* Same, handing each partial reply to on_partial (may be NULL); the timeout
 * restarts at each partial reply, so a long replay does not time out. */
int zcd_client_call_stream (zcd_client_t *self, const void *body, size_t len, int timeout_ms,
                            zcd_partial_fn *on_partial, void *arg, zcd_reply_t **reply);
/* zcd_client_call with a body built by zcd_body_t and the client timeout;
 * returns 0 only for an "ok": true reply.  On -1, *reply holds the daemon's
 * error reply when there was one (caller owns; errno EREMOTEIO), else NULL
 * (local failure: errno as for zcd_client_call). */
int zcd_client_request (zcd_client_t *self, zcd_body_t *body, zcd_reply_t **reply);

/* ------------------------------------------------------------------------
 * Typed calls.  All use the client timeout and return as zcd_client_request:
 * 0 for an ok reply (*reply: caller owns), -1 otherwise (*reply: the error
 * reply or NULL; see zcd_client_last_error).  `reply` may be NULL when the
 * caller only needs success or failure.  NULL-terminated string vectors.
 * ---------------------------------------------------------------------- */

int zcd_client_version (zcd_client_t *self, zcd_reply_t **reply);
/* id NULL = every container. */
int zcd_client_state (zcd_client_t *self, const char *id, zcd_reply_t **reply);
int zcd_client_metrics (zcd_client_t *self, zcd_reply_t **reply);

/* A bounded output log (key `log` of create and exec), instead of
 * stdout_path and stderr_path.  path absolute, NULL = no log; max_bytes and
 * max_files 0 = the daemon's defaults. */
typedef struct
{
  const char *path;
  uint64_t max_bytes, max_files;
} zcd_log_opts_t;

typedef struct
{
  const char *const *labels;
  const char *runtime;
  const char *const *runtime_args;
  const char *stdin_path, *stdout_path, *stderr_path; /* absolute; NULL = /dev/null */
  bool no_pivot_root;
  const char *checkpoint;     /* restore from this checkpoint */
  const char *checkpoint_dir;
  zcd_log_opts_t log;
} zcd_create_opts_t;
/* opts may be NULL. */
int zcd_client_create (zcd_client_t *self, const char *id, const char *bundle,
                       const zcd_create_opts_t *opts, zcd_reply_t **reply);

typedef struct
{
  const char *const *env;
  const char *cwd;
  bool terminal;
  bool set_user; /* send "user" with uid, gid, additional_gids */
  uint32_t uid, gid;
  const uint32_t *additional_gids;
  size_t n_additional_gids;
  const char *const *capabilities;
  bool no_new_privileges;
  const char *apparmor_profile, *selinux_label;
  const char *stdin_path, *stdout_path, *stderr_path;
  zcd_log_opts_t log;
} zcd_exec_opts_t;
int zcd_client_exec (zcd_client_t *self, const char *id, const char *pid, const char *const *args,
                     const zcd_exec_opts_t *opts, zcd_reply_t **reply);

/* pid NULL = "init". */
int zcd_client_signal (zcd_client_t *self, const char *id, const char *pid, int signal, bool all,
                       zcd_reply_t **reply);
int zcd_client_pause (zcd_client_t *self, const char *id, zcd_reply_t **reply);
int zcd_client_resume (zcd_client_t *self, const char *id, zcd_reply_t **reply);

/* Fields left at ZCD_UNSET (uint) or NULL (str) are not sent. */
#define ZCD_UNSET UINT64_MAX
typedef struct
{
  uint64_t blkio_weight, cpu_shares, cpu_period, cpu_quota;
  uint64_t memory_limit, memory_swap, memory_reservation;
  uint64_t kernel_memory_limit, kernel_tcp_memory_limit, pids_limit;
  const char *cpuset_cpus, *cpuset_mems;
} zcd_resources_t;
void zcd_resources_init (zcd_resources_t *res);
int zcd_client_update (zcd_client_t *self, const char *id, const zcd_resources_t *res,
                       zcd_reply_t **reply);

/* The bodies some typed calls send, for sending elsewhere (e.g. to many
 * nodes with zcd_fanout_request); caller destroys, NULL on ENOMEM. */
zcd_body_t *zcd_body_for_create (const char *id, const char *bundle, const zcd_create_opts_t *opts);
zcd_body_t *zcd_body_for_signal (const char *id, const char *pid, int signal, bool all);
zcd_body_t *zcd_body_for_pause (const char *id);
zcd_body_t *zcd_body_for_resume (const char *id);

int zcd_client_close_stdin (zcd_client_t *self, const char *id, const char *pid,
                            zcd_reply_t **reply);
int zcd_client_resize (zcd_client_t *self, const char *id, const char *pid, uint32_t width,
                       uint32_t height, zcd_reply_t **reply);

/* ids NULL or empty = every container. */
int zcd_client_stats (zcd_client_t *self, const char *const *ids, zcd_reply_t **reply);

typedef struct
{
  bool exit, tcp, unix_sockets, shell;
  const char *const *empty_ns;
  const char *checkpoint_dir;
} zcd_checkpoint_opts_t;
int zcd_client_checkpoint_create (zcd_client_t *self, const char *id, const char *name,
                                  const zcd_checkpoint_opts_t *opts, zcd_reply_t **reply);
/* id or checkpoint_dir may be NULL (not both). */
int zcd_client_checkpoint_list (zcd_client_t *self, const char *id, const char *checkpoint_dir,
                                zcd_reply_t **reply);
int zcd_client_checkpoint_delete (zcd_client_t *self, const char *id, const char *checkpoint_dir,
                                  const char *name, zcd_reply_t **reply);

/* Replay the event log: events with seq > since_seq (and, when id is not
 * NULL, of that container), each handed to on_event as a partial reply
 * ({"rid", "event": Event}); the final reply carries "last_seq" and maybe
 * "truncated"/"oldest_seq". */
int zcd_client_events (zcd_client_t *self, const char *id, uint64_t since_seq,
                       zcd_partial_fn *on_event, void *arg, zcd_reply_t **reply);

/* ------------------------------------------------------------------------
 * Events and the lossless subscriber (PROTOCOL.md section 5).
 * ---------------------------------------------------------------------- */

typedef struct
{
  uint64_t seq;
  const char *type;       /* "exit", "start-container", ...; never NULL */
  const char *id;         /* container id; "" when absent */
  const char *pid;        /* process id; NULL when absent */
  bool has_status;
  uint32_t status;
  bool has_system_pid;
  uint64_t system_pid;
  bool oom_killed;
  int64_t ts;             /* ns since the epoch */
  const msgpack_object *obj; /* the whole Event map */
  void *priv_;            /* library-owned storage */
} zcd_event_t;

/* Decode one msgpack Event (bytes copied).  NULL (errno EPROTO) when it is
 * no map with a uint "seq" and a str "type". */
zcd_event_t *zcd_event_decode (const void *data, size_t len);
/* Same from an already decoded Event object (copied). */
zcd_event_t *zcd_event_from_obj (const msgpack_object *obj);
void zcd_event_destroy (zcd_event_t **self_p);

/* since_seq for "only events after now" (the subscriber asks `state` for
 * the current last_seq when it starts). */
#define ZCD_SINCE_NOW UINT64_MAX

/* A subscriber that delivers every event with seq > since_seq (of container
 * id_filter, or all when NULL) exactly once, in seq order, across PUB drops:
 * it subscribes first, replays with `events`, then follows the live stream,
 * and replays again on a seq gap or a heartbeat announcing a newer
 * last_seq.  cmd_ep/evt_ep NULL = $ZCD_ADDRESS / $ZCD_EVENTS_ADDRESS or the
 * defaults.  Nothing is connected until zcd_subscriber_start (or the first
 * zcd_subscriber_next), so options can be set first. */
zcd_subscriber_t *zcd_subscriber_new (const char *cmd_ep, const char *evt_ep, const char *id_filter,
                                      uint64_t since_seq);
void zcd_subscriber_destroy (zcd_subscriber_t **self_p);
/* SUB receive high-water mark (before start; default libzmq's 1000). */
void zcd_subscriber_set_rcvhwm (zcd_subscriber_t *self, int hwm);
/* Timeout of the subscriber's own requests (events, state). */
void zcd_subscriber_set_timeout (zcd_subscriber_t *self, int timeout_ms);
/* Connect, subscribe, and run the first replay.  0 or -1 (errno; see
 * zcd_subscriber_last_error).  After a failure, the next call retries. */
int zcd_subscriber_start (zcd_subscriber_t *self);
/* Next event, waiting up to timeout_ms (-1 = forever).  0 and *event
 * (caller owns) or -1 with errno EAGAIN on timeout, or another errno when
 * a replay failed (the next call retries it; nothing is lost). */
int zcd_subscriber_next (zcd_subscriber_t *self, int timeout_ms, zcd_event_t **event);
/* Highest seq accounted for (delivered, or known not to match the filter). */
uint64_t zcd_subscriber_last_seq (const zcd_subscriber_t *self);
/* True once a replay came back truncated: events older than the daemon's
 * retention were asked for and could not be delivered. */
bool zcd_subscriber_truncated (const zcd_subscriber_t *self);
/* Number of replays run so far (the first one included). */
uint64_t zcd_subscriber_replays (const zcd_subscriber_t *self);
/* The SUB socket (libzmq handle) for zmq_poll: readable means calling
 * zcd_subscriber_next(0) may yield; events already queued from a replay
 * do not make it readable, so drain with zcd_subscriber_next(0) first. */
void *zcd_subscriber_socket (zcd_subscriber_t *self);
const char *zcd_subscriber_last_error (const zcd_subscriber_t *self);

/* ========================================================================
 * Fan-out: one client, N nodes (a zcd per node), over tcp+CURVE.
 * See docs/fanout.md for the node file and the guarantees.
 * ====================================================================== */

typedef struct _zcd_fanout_t zcd_fanout_t;

/* An empty fan-out: add nodes (zcd_fanout_add_node, zcd_fanout_load) and
 * the client's certificate before the first request or event; sockets are
 * connected lazily, per node. */
zcd_fanout_t *zcd_fanout_new (void);
void zcd_fanout_destroy (zcd_fanout_t **self_p);
/* Read a node file (docs/fanout.md): nodes and, when it names one, the
 * client certificate.  0, or -1 with errno and zcd_fanout_last_error
 * ("FILE:LINE: why"). */
int zcd_fanout_load (zcd_fanout_t *self, const char *path);
/* One node.  server_key: the daemon's CURVE public key (40 chars of Z85),
 * or NULL for a plain connection (ipc, or a daemon run with
 * --insecure-tcp).  Names: 1-64 of [A-Za-z0-9_.-], unique.  0 or -1. */
int zcd_fanout_add_node (zcd_fanout_t *self, const char *name, const char *cmd_ep,
                         const char *evt_ep, const char *server_key);
/* The client's CURVE certificate: a czmq certificate file holding the
 * secret key (the public one is derived when absent), or the two keys in
 * Z85.  0 or -1 (errno EINVAL, last error says why). */
int zcd_fanout_set_client_cert (zcd_fanout_t *self, const char *cert_path);
int zcd_fanout_set_client_keys (zcd_fanout_t *self, const char *public_z85,
                                const char *secret_z85);
/* Timeout of zcd_fanout_request and of the event stream's own requests
 * (state, events), in ms; default ZCD_DEFAULT_TIMEOUT_MS. */
void zcd_fanout_set_timeout (zcd_fanout_t *self, int timeout_ms);
const char *zcd_fanout_last_error (const zcd_fanout_t *self);

size_t zcd_fanout_size (const zcd_fanout_t *self);
const char *zcd_fanout_node_name (const zcd_fanout_t *self, size_t index);
/* Index of the node called name, or -1. */
int zcd_fanout_node_index (const zcd_fanout_t *self, const char *name);

/* The outcome of one request on one node. */
typedef struct
{
  const char *node;   /* the node's name, borrowed from the fan-out */
  size_t index;       /* the node's index */
  zcd_reply_t *reply; /* the final reply (ok or the daemon's error); NULL when none came */
  int err;            /* 0 when the reply is ok; EREMOTEIO for a daemon error;
                         ETIMEDOUT, or another errno, when no reply came */
  char *error;        /* NULL when ok, else "<code>: <message>" or the local reason */
} zcd_fanout_result_t;

/* Send one request body (a msgpack map without "rid") to the nodes named
 * in `nodes` (NULL-terminated; NULL = every node) at once, and wait up to
 * timeout_ms (-1 = forever) for each node's final reply; partial replies
 * are skipped.  *results (caller frees with zcd_fanout_results_destroy)
 * gets one entry per node asked, in the order asked.  Returns the number
 * of ok replies, or -1 (errno EINVAL: an unknown node name or a body that
 * is no map; nothing sent). */
int zcd_fanout_call (zcd_fanout_t *self, const char *const *nodes, const void *body, size_t len,
                     int timeout_ms, zcd_fanout_result_t **results, size_t *n_results);
/* The same with a body built by zcd_body_t and the fan-out's timeout. */
int zcd_fanout_request (zcd_fanout_t *self, const char *const *nodes, zcd_body_t *body,
                        zcd_fanout_result_t **results, size_t *n_results);
void zcd_fanout_results_destroy (zcd_fanout_result_t **results, size_t n_results);

/* Asynchronous requests, for pipelining (many in flight per node).  Send
 * to node `index`: the rid (> 0), or 0 with errno.  Receive the next
 * reply (partial or final) of any node: 0 with *index and *reply (caller
 * owns), or -1 with errno EAGAIN on timeout.  Match by (index, rid). */
uint64_t zcd_fanout_send (zcd_fanout_t *self, size_t index, const void *body, size_t len);
int zcd_fanout_recv (zcd_fanout_t *self, int timeout_ms, size_t *index, zcd_reply_t **reply);

/* ---- the merged event stream ----
 * Each node is consumed as PROTOCOL.md section 5 says (subscribe, replay
 * with `events` since the last seq held, gap fill on a seq gap or on a
 * heartbeat announcing a newer last_seq, and a new sync whenever the event
 * connection is made again, e.g. after the daemon restarted).  Every event
 * of every node is delivered once, in seq order per node; nodes interleave
 * as their events arrive.  A node that is down delays only its own
 * events. */

typedef struct
{
  const char *node;  /* borrowed from the fan-out */
  size_t index;
  /* the boot of the daemon that delivered this event to us (docs/fanout.md):
   * it changes once per daemon restart, never back */
  char boot_id[64];
  zcd_event_t *event; /* owned by this struct */
} zcd_fanout_event_t;

/* Where each node's stream starts: events with seq > since_seq
 * (ZCD_SINCE_NOW: from now, the default).  Before the first
 * zcd_fanout_next_event; zcd_fanout_set_node_since sets one node's
 * (to resume where a previous consumer stopped). */
void zcd_fanout_set_since (zcd_fanout_t *self, uint64_t since_seq);
void zcd_fanout_set_node_since (zcd_fanout_t *self, size_t index, uint64_t since_seq);
/* Next event of any node, waiting up to timeout_ms (-1 = forever): 0 and
 * *event (caller owns), or -1 with errno EAGAIN on timeout.  Failures of a
 * node (down, refused) are retried, never returned: see
 * zcd_fanout_node_error. */
int zcd_fanout_next_event (zcd_fanout_t *self, int timeout_ms, zcd_fanout_event_t **event);
void zcd_fanout_event_destroy (zcd_fanout_event_t **self_p);
/* Per node: highest seq delivered (or queued for delivery), the boot_id
 * of the daemon last synced with ("" before), whether a replay came back
 * truncated (events older than the daemon retains were asked for), the
 * number of syncs (state + events) run, and the last failure of its
 * stream ("" once it works again). */
uint64_t zcd_fanout_node_last_seq (const zcd_fanout_t *self, size_t index);
const char *zcd_fanout_node_boot_id (const zcd_fanout_t *self, size_t index);
bool zcd_fanout_node_truncated (const zcd_fanout_t *self, size_t index);
uint64_t zcd_fanout_node_syncs (const zcd_fanout_t *self, size_t index);
const char *zcd_fanout_node_error (const zcd_fanout_t *self, size_t index);

#ifdef __cplusplus
}
#endif

#endif
