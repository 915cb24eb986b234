/* The edge's sockets and requests: binding the command ROUTERs and event
 * PUBs, receiving and checking requests, and the life of a request (parked
 * by token, kept for a stream, freed once answered).  The output side is
 * core/edge_out.c and core/edge_reply.c; CURVE is core/edge_curve.c. */
#include "core/edge.h"

#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/edge_int.h"
#include "core/fsutil.h"
#include "core/log.h"

size_t
edge_token_hash (const void *key)
{
  uint64_t x = (uint64_t) (uintptr_t) key;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (size_t) x;
}

int
edge_token_compare (const void *a, const void *b)
{
  uintptr_t x = (uintptr_t) a, y = (uintptr_t) b;
  return x < y ? -1 : x > y;
}

void
edge_free_item (void **item)
{
  free (*item);
  *item = NULL;
}

void
edge_request_free (edge_request_t *req)
{
  /* A parked request can be answered while its own handler still runs (a
   * start that fails at once): the handler's caller frees it then. */
  if (req->edge && req->edge->current == req)
    {
      req->state = REQ_ANSWERED;
      return;
    }
  for (int i = 0; i < req->n_frames; i++)
    zmq_msg_close (&req->frames[i]);
  edge_peer_unref (req->peer);
  free (req->rid);
  free (req);
}

/* ------------------------------------------------------------------ */
/* Parked and kept requests                                            */

uint64_t
edge_request_park (edge_t *self, edge_request_t *req)
{
  req->state = REQ_PARKED;
  req->token = ++self->next_token;
  zhashx_insert (self->parked, (void *) (uintptr_t) req->token, req);
  return req->token;
}

edge_request_t *
edge_request_keep (edge_t *self, edge_request_t *req)
{
  req->state = REQ_KEPT;
  return req;
}

void
edge_request_release (edge_t *self, edge_request_t *req)
{
  if (req)
    edge_request_free (req);
}

const msgpack_object *
edge_request_body (const edge_request_t *req)
{
  return req->decoded.body;
}

const zcd_caller_t *
edge_request_caller (const edge_request_t *req)
{
  return &req->caller;
}

const proto_op_t *
edge_request_op (const edge_request_t *req)
{
  return req->op;
}

void
edge_request_raw_view (const edge_request_t *req, const char **body, size_t *len)
{
  *body = req->raw;
  *len = req->raw_len;
}

void
edge_request_raw_body (const edge_request_t *req, char **copy, size_t *len)
{
  *copy = malloc (req->raw_len ? req->raw_len : 1);
  memcpy (*copy, req->raw, req->raw_len);
  *len = req->raw_len;
}

uint64_t
edge_requests_total (const edge_t *self)
{
  return self->requests_total;
}

uint64_t
edge_errors_total (const edge_t *self)
{
  return self->errors_total;
}

const metrics_hist_t *
edge_request_latency (const edge_t *self, proto_op_code_t op)
{
  return op < PROTO_OP_COUNT ? &self->request_latency[op] : NULL;
}

uint64_t
edge_replies_lost (const edge_t *self)
{
  return self->replies_lost;
}

uint64_t
edge_oversized_total (const edge_t *self)
{
  return self->oversized_total;
}

/* ------------------------------------------------------------------ */
/* Receiving                                                           */

static void
s_capture_rid (edge_request_t *req)
{
  const msgpack_object *rid = req->decoded.rid;
  if (rid == NULL)
    return;
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
  msgpack_pack_object (&pk, *rid);
  req->rid = buf.data;
  req->rid_len = buf.size;
}

void
edge_handle_message (edge_t *self, edge_request_t *req, zmq_msg_t *body)
{
  self->requests_total++;
  req->raw = zmq_msg_data (body);
  req->raw_len = zmq_msg_size (body);
  cleanup_error zcd_error_t *err = NULL;
  proto_request_init (&req->decoded);
  int rc = proto_decode_request (req->raw, req->raw_len, self->cfg.max_request_size,
                                 &req->decoded, &err);
  s_capture_rid (req);
  /* No User-Id: no ZAP handler saw the connection (inproc, or tcp with
   * --insecure-tcp, for tests only): the daemon's own. */
  const char *user_id = zmq_msg_gets (body, "User-Id");
  req->caller = ZCD_CALLER_ADMIN;
  if (rc == 0 && user_id && !zcd_caller_parse (user_id, &req->caller))
    {
      zcd_fail (&err, ZCD_E_INTERNAL, "unknown caller `%s`", user_id);
      rc = -1;
    }
  if (rc < 0)
    {
      edge_answer_error (self, req, err->code, err->msg, 0);
      req->state = REQ_ANSWERED;
    }
  else
    {
      req->op = req->decoded.op;
      self->current = req;
      self->fn (self->arg, req);
      self->current = NULL;
      if (req->state == REQ_NEW)
        {
          log_error ("bug: request `%s` left unanswered", req->op->name);
          edge_answer_error (self, req, ZCD_E_INTERNAL, "request left unanswered", 0);
          req->state = REQ_ANSWERED;
        }
    }
  /* The decoded body points into the raw message: neither outlives the
   * handler.  A parked or kept request keeps its frames and rid only. */
  proto_request_fini (&req->decoded);
  req->raw = NULL;
  req->raw_len = 0;
  if (req->state == REQ_ANSWERED)
    edge_request_free (req);
}

/* glibc keeps what a dropped message freed in its arenas: once one big
 * message has been freed, the mmap threshold has grown past its frame size
 * and the next one's frames come from the heap.  Measured without a trim:
 * RSS 8 MiB, 8 MiB after a first 200 x 1 MiB message, 197 MiB for good
 * after a second; 134 MiB for good after a peer that libzmq dropped (or
 * that left) in the middle of a 150 x 1 MiB message, which zcd never sees:
 * hence the trim after every peer that leaves too (s_on_monitor). */
static void
s_on_trim_timer (loop_t *loop, void *arg)
{
  edge_t *self = arg;
  self->trim_timer = NULL;
  malloc_trim (0);
  self->last_trim_ns = zcd_mono_ns ();
}

void
edge_give_memory_back (edge_t *self, uint64_t min_delay_ms)
{
  if (self->trim_timer)
    return; /* one is due already */
  uint64_t since_ms = (zcd_mono_ns () - self->last_trim_ns) / 1000000;
  uint64_t delay_ms = self->last_trim_ns == 0 || since_ms >= EDGE_TRIM_INTERVAL_MS
                          ? 0
                          : EDGE_TRIM_INTERVAL_MS - since_ms;
  if (delay_ms < min_delay_ms)
    delay_ms = min_delay_ms;
  if (delay_ms == 0)
    s_on_trim_timer (self->loop, self);
  else
    self->trim_timer = loop_timer_add (self->loop, delay_ms, s_on_trim_timer, self);
}

/* A ROUTER's peer left: whatever libzmq buffered of an unfinished message
 * of its (or of one cut by ZMQ_MAXMSGSIZE) is freed by now or very soon.
 * Each event is two frames; only that one came is of interest. */
static void
s_on_monitor (loop_t *loop, void *zsock, void *arg)
{
  edge_t *self = arg;
  bool any = false;
  for (;;)
    {
      zmq_msg_t frame;
      zmq_msg_init (&frame);
      int rc = zmq_msg_recv (&frame, zsock, ZMQ_DONTWAIT);
      zmq_msg_close (&frame);
      if (rc < 0)
        break;
      any = true;
    }
  if (any)
    edge_give_memory_back (self, EDGE_TRIM_AFTER_LEAVE_MS);
}

/* A message over the limits (more envelope frames than kept, or more bytes
 * in all than one frame may carry) is answered and dropped whole.  n_parts
 * and bytes: what the peer sent, body included, identity not.  The
 * answer echoes only the leading envelope frames that fit in
 * EDGE_DROP_ECHO_BYTES: a queued answer holding the peer's megabytes would
 * keep them alive for as long as the peer does not read. */
static void
s_drop_oversized (edge_t *self, edge_request_t *req, int n_parts, size_t bytes)
{
  self->requests_total++;
  self->oversized_total++;
  int keep = 1; /* the identity routes the answer */
  size_t echoed = 0;
  while (keep < req->n_frames && echoed + zmq_msg_size (&req->frames[keep]) <= EDGE_DROP_ECHO_BYTES)
    echoed += zmq_msg_size (&req->frames[keep++]);
  for (int i = keep; i < req->n_frames; i++)
    zmq_msg_close (&req->frames[i]);
  req->n_frames = keep;
  char message[160];
  if (bytes > self->frame_cap)
    {
      snprintf (message, sizeof message,
                "message of %zu bytes in %d frames is over the %zu-byte limit", bytes, n_parts,
                self->frame_cap);
      edge_answer_error (self, req, ZCD_E_TOO_LARGE, message, 0);
    }
  else
    {
      snprintf (message, sizeof message, "too many envelope frames (%d, at most %d)", n_parts - 1,
                EDGE_MAX_FRAMES - 1);
      edge_answer_error (self, req, ZCD_E_INVALID_REQUEST, message, 0);
    }
  edge_request_free (req);
}

typedef enum
{
  RECV_NONE,    /* nothing was waiting */
  RECV_SERVED,  /* a request was served, or answered for its size */
  RECV_DROPPED, /* dropped or held: its client does not read */
} recv_t;

/* The rest of a message whose first frame is part, read and let go of:
 * its size in bytes. */
static size_t
s_drain (void *router, zmq_msg_t *part)
{
  size_t bytes = 0;
  while (zmq_msg_more (part))
    {
      zmq_msg_close (part);
      zmq_msg_init (part);
      if (zmq_msg_recv (part, router, ZMQ_DONTWAIT) < 0)
        break;
      bytes += zmq_msg_size (part);
    }
  zmq_msg_close (part);
  return bytes;
}

/* The envelope frames after the identity into req, the body into part. */
static void
s_read_request (void *router, edge_request_t *req, zmq_msg_t *part, int *n_parts, size_t *bytes)
{
  while (zmq_msg_more (part))
    {
      if (req->n_frames < EDGE_MAX_FRAMES)
        req->frames[req->n_frames++] = *part;
      else
        zmq_msg_close (part);
      zmq_msg_init (part);
      if (zmq_msg_recv (part, router, ZMQ_DONTWAIT) < 0)
        break;
      (*n_parts)++;
      *bytes += zmq_msg_size (part);
    }
}

/* Read one multipart message from router.  libzmq hands over a message
 * only once all of it has arrived, so its frames are all here: read to the
 * end whatever is kept. */
static recv_t
s_receive_one (edge_t *self, void *router)
{
  zmq_msg_t part;
  zmq_msg_init (&part);
  if (zmq_msg_recv (&part, router, ZMQ_DONTWAIT) < 0)
    {
      zmq_msg_close (&part);
      return RECV_NONE;
    }
  if (!zmq_msg_more (&part))
    {
      /* Only ROUTER identities arrive bare: nothing to answer to. */
      zmq_msg_close (&part);
      return RECV_DROPPED;
    }
  edge_peer_t *peer = edge_peer_get (self, router, &part);
  if (edge_peer_dropping (self, peer))
    {
      /* The cheapest path there is: a flood is read at full speed. */
      if (s_drain (router, &part) > self->frame_cap)
        edge_give_memory_back (self, 0);
      edge_peer_drop_request (self, peer, "its requests");
      edge_peer_unref (peer);
      return RECV_DROPPED;
    }
  edge_request_t *req = calloc (1, sizeof *req);
  req->arrived_ns = zcd_mono_ns ();
  req->edge = self;
  req->router = router;
  req->peer = peer;
  int n_parts = 0; /* what the peer sent: the identity is libzmq's */
  size_t bytes = 0;
  s_read_request (router, req, &part, &n_parts, &bytes);
  bool oversized = n_parts > EDGE_MAX_FRAMES || bytes > self->frame_cap;
  bool gated = edge_peer_gated (self, peer);
  if (gated && oversized)
    {
      edge_peer_drop_request (self, peer, "its requests");
      edge_request_free (req);
    }
  else if (gated) /* not served until it takes its replies */
    edge_peer_hold (self, peer, req, &part);
  else if (oversized)
    s_drop_oversized (self, req, n_parts, bytes);
  else
    edge_handle_message (self, req, &part);
  zmq_msg_close (&part);
  if (oversized)
    edge_give_memory_back (self, 0);
  return gated ? RECV_DROPPED : RECV_SERVED;
}

static void
s_on_router (loop_t *loop, void *zsock, void *arg)
{
  edge_t *self = arg;
  /* Bounded per wake-up so one flood cannot starve the actors; the loop
   * re-checks ZMQ_EVENTS after the turn and comes back at once.  What was
   * answered leaves at the end of the turn (edge_flush): past a few drops
   * of a flood after it, the turn ends, so a flood makes nobody wait. */
  for (int i = 0; i < EDGE_READ_BATCH; i++)
    {
      recv_t r = s_receive_one (self, zsock);
      if (r == RECV_NONE)
        break;
      if (r == RECV_DROPPED && self->out_fresh
          && ++self->drops_unflushed >= EDGE_DROPS_BEFORE_FLUSH)
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Set-up                                                              */

static sock_kind_t
s_kind (const char *ep)
{
  return strncmp (ep, "ipc://", 6) == 0 || strncmp (ep, "inproc://", 9) == 0 ? SOCK_LOCAL
                                                                             : SOCK_NETWORK;
}

static const char *
s_first_of_kind (char *const *eps, sock_kind_t kind)
{
  for (; eps && *eps; eps++)
    if (s_kind (*eps) == kind)
      return *eps;
  return NULL;
}

/* Binds the endpoints of sock's kind; ipc socket files get mode 0660 and
 * the --group. */
static int
s_bind_all (edge_t *self, void *sock, sock_kind_t kind, char *const *eps, zcd_error_t **err)
{
  gid_t gid = 0;
  if (self->cfg.group)
    {
      struct group *g = getgrnam (self->cfg.group);
      if (g == NULL)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--group: no group `%s`", self->cfg.group);
      gid = g->gr_gid;
    }
  for (; sock && eps && *eps; eps++)
    {
      if (s_kind (*eps) != kind)
        continue;
      if (zmq_bind (sock, *eps) < 0)
        return zcd_fail (err, ZCD_E_INTERNAL, "bind `%s`: %s", *eps, zmq_strerror (zmq_errno ()));
      if (strncmp (*eps, "ipc://", 6) == 0)
        {
          const char *path = *eps + 6;
          if (chmod (path, 0660) < 0 || chown (path, 0, gid) < 0)
            log_warn ("ipc socket %s: %s", path, strerror (errno));
          size_t n = 0;
          while (self->ipc_paths && self->ipc_paths[n])
            n++;
          self->ipc_paths = realloc (self->ipc_paths, (n + 2) * sizeof (char *));
          self->ipc_paths[n] = strdup (path);
          self->ipc_paths[n + 1] = NULL;
        }
    }
  return 0;
}

/* Every ROUTER and PUB gets the same options, whatever its transport.
 *
 * ZMQ_MAXMSGSIZE bounds one frame, not a message: libzmq's decoder checks
 * each frame's size as it reads it and drops the peer that exceeds it
 * (v2_decoder_t::size_ready), but it delivers a multipart message
 * atomically and its high-water marks count whole messages
 * (pipe_t::write counts a message at its last frame), so libzmq buffers
 * every frame of a message before zcd can see any of it.  No option of
 * libzmq 4.3 caps a message's total size (checked in its zmq_setsockopt
 * documentation and sources, issue 8 defect 8).  What zcd can do, it does
 * once the message arrives: drop it whole and give the memory back
 * (s_drop_oversized).  The cap stays at twice the body limit: a lower one
 * would not shrink that exposure (1 MiB frames pass either cap) and would
 * turn the `too_large` answer to a body a little over the limit into a
 * silent disconnect (PROTOCOL.md section 2). */
static void *
s_new_socket (edge_t *self, void *zmq_ctx, int type, zcd_error_t **err)
{
  /* A ROUTER's high-water mark is per client (--client-queue): what a
   * client that does not read can make libzmq keep for it.  A PUB's is per
   * subscriber and drops, which the event log makes up for. */
  int one = 1, zero = 0, hwm = type == ZMQ_ROUTER ? self->client_queue : 100000;
  int64_t maxmsg = (int64_t) self->frame_cap;
  void *sock = zmq_socket (zmq_ctx, type);
  if (sock == NULL)
    {
      zcd_fail (err, ZCD_E_INTERNAL, "zmq_socket: %s", zmq_strerror (zmq_errno ()));
      return NULL;
    }
  if (type == ZMQ_ROUTER)
    zmq_setsockopt (sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
  zmq_setsockopt (sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  zmq_setsockopt (sock, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt (sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
  return sock;
}

static int
s_watch_router (edge_t *self, void *zmq_ctx, sock_kind_t k, zcd_error_t **err)
{
  char ep[80];
  int zero = 0;
  snprintf (ep, sizeof ep, "inproc://zcd-edge-%p-%d", (void *) self, (int) k);
  self->router_watches[k] = loop_add_zsock (self->loop, self->routers[k], s_on_router, self);
  if (self->router_watches[k] == NULL)
    return zcd_fail_errno (err, errno, "watch the command socket");
  if (zmq_socket_monitor (self->routers[k], ep, ZMQ_EVENT_DISCONNECTED) < 0
      || (self->monitors[k] = zmq_socket (zmq_ctx, ZMQ_PAIR)) == NULL
      || zmq_setsockopt (self->monitors[k], ZMQ_LINGER, &zero, sizeof zero) < 0
      || zmq_connect (self->monitors[k], ep) < 0)
    return zcd_fail (err, ZCD_E_INTERNAL, "monitor the command socket: %s",
                     zmq_strerror (zmq_errno ()));
  self->monitor_watches[k] = loop_add_zsock (self->loop, self->monitors[k], s_on_monitor, self);
  return self->monitor_watches[k] ? 0 : zcd_fail_errno (err, errno, "watch the monitor");
}

static int
s_open_sockets (edge_t *self, void *zmq_ctx, zcd_error_t **err)
{
  uint64_t limit = self->cfg.max_request_size;
  self->frame_cap = limit > INT64_MAX / 2 ? (size_t) INT64_MAX : (size_t) (limit * 2);
  const char *network = s_first_of_kind (self->cfg.listen, SOCK_NETWORK);
  if (network == NULL)
    network = s_first_of_kind (self->cfg.publish, SOCK_NETWORK);
  bool curve = network && self->cfg.curve_secret && self->cfg.curve_clients;
  if (network && !curve && !self->cfg.insecure_tcp)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                     "`%s` needs CURVE (only ipc:// and inproc:// do not): give "
                     "--curve-secret FILE and --curve-clients DIR (or --insecure-tcp, "
                     "for tests only)",
                     network);
  for (sock_kind_t k = 0; k < SOCK_KINDS; k++)
    {
      if (s_first_of_kind (self->cfg.listen, k)
          && (self->routers[k] = s_new_socket (self, zmq_ctx, ZMQ_ROUTER, err)) == NULL)
        return -1;
      if (s_first_of_kind (self->cfg.publish, k)
          && (self->pubs[k] = s_new_socket (self, zmq_ctx, ZMQ_PUB, err)) == NULL)
        return -1;
    }
  if (edge_zap_setup (self, zmq_ctx, err) < 0 || (curve && edge_curve_setup (self, zmq_ctx, err) < 0))
    return -1;
  for (sock_kind_t k = 0; k < SOCK_KINDS; k++)
    {
      if (s_bind_all (self, self->routers[k], k, self->cfg.listen, err) < 0
          || s_bind_all (self, self->pubs[k], k, self->cfg.publish, err) < 0)
        return -1;
      if (self->routers[k] && s_watch_router (self, zmq_ctx, k, err) < 0)
        return -1;
    }
  return 0;
}

edge_t *
edge_new (void *zmq_ctx, loop_t *loop, const edge_config_t *cfg, edge_request_fn fn, void *arg,
          zcd_error_t **err)
{
  edge_t *self = calloc (1, sizeof *self);
  self->loop = loop;
  self->cfg = *cfg;
  self->fn = fn;
  self->arg = arg;
  self->parked = zhashx_new ();
  self->out = zlistx_new ();
  zhashx_set_key_duplicator (self->parked, NULL);
  zhashx_set_key_destructor (self->parked, NULL);
  zhashx_set_key_hasher (self->parked, edge_token_hash);
  zhashx_set_key_comparator (self->parked, edge_token_compare);
  edge_peers_init (self);
  if (s_open_sockets (self, zmq_ctx, err) < 0)
    {
      edge_destroy (&self);
      return NULL;
    }
  return self;
}

void
edge_destroy (edge_t **pself)
{
  if (pself == NULL || *pself == NULL)
    return;
  edge_t *self = *pself;
  /* What still waits on the log is dropped: its events were never logged
   * (the supervisor flushed everything that could go). */
  edge_flush (self, 0);
  for (out_msg_t *m = zlistx_detach (self->out, NULL); m; m = zlistx_detach (self->out, NULL))
    edge_out_msg_free (m);
  zlistx_destroy (&self->out);
  for (int k = 0; k < SOCK_KINDS; k++)
    {
      loop_remove (self->loop, self->router_watches[k]);
      loop_remove (self->loop, self->monitor_watches[k]);
    }
  loop_remove (self->loop, self->zap_watch);
  loop_timer_cancel (self->loop, self->trim_timer);
  edge_peers_fini (self);
  for (edge_request_t *r = zhashx_first (self->parked); r; r = zhashx_next (self->parked))
    edge_request_free (r);
  zhashx_destroy (&self->parked);
  zhashx_destroy (&self->allowed_keys);
  for (int k = 0; k < SOCK_KINDS; k++)
    {
      if (self->routers[k] && self->monitors[k])
        zmq_socket_monitor (self->routers[k], NULL, 0);
      if (self->monitors[k])
        zmq_close (self->monitors[k]);
      if (self->routers[k])
        zmq_close (self->routers[k]);
      if (self->pubs[k])
        zmq_close (self->pubs[k]);
    }
  if (self->zap)
    zmq_close (self->zap);
  for (size_t i = 0; self->ipc_paths && self->ipc_paths[i]; i++)
    {
      unlink (self->ipc_paths[i]);
      free (self->ipc_paths[i]);
    }
  free (self->ipc_paths);
  free (self);
  *pself = NULL;
}
