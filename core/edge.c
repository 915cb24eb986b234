#include "core/edge.h"

#include <czmq.h>
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "core/cleanup.h"
#include "core/log.h"
#include "core/mp.h"

/* Frames before the body (identity + envelope) kept per request; a client
 * sending more is answered invalid_request. */
#define EDGE_MAX_FRAMES 32

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
};

struct edge_reply
{
  edge_request_t *req;
  msgpack_sbuffer buf;
  msgpack_packer pk;
};

typedef struct out_msg
{
  uint64_t after_seq; /* leaves only once the event log is durable up to here */
  void *sock;
  int n_frames;
  zmq_msg_t *frames;
  struct out_msg *next;
} out_msg_t;

struct edge
{
  loop_t *loop;
  void *router;
  void *pub;
  void *zap;
  loop_watch_t *router_watch, *zap_watch;
  edge_config_t cfg;
  edge_request_fn fn;
  void *arg;
  zhashx_t *parked; /* token -> edge_request_t */
  uint64_t next_token;
  out_msg_t *out_head, *out_tail;
  zhashx_t *allowed_keys; /* z85 public keys of CURVE clients */
  edge_request_t *current; /* the request whose handler is running */
  char **ipc_paths;
  uint64_t requests_total, errors_total, replies_lost;
};

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

/* ------------------------------------------------------------------ */
/* Output queue                                                        */

static void
s_queue (edge_t *self, void *sock, zmq_msg_t *frames, int n, uint64_t after_seq)
{
  out_msg_t *m = calloc (1, sizeof *m);
  m->after_seq = after_seq;
  m->sock = sock;
  m->n_frames = n;
  m->frames = frames;
  if (self->out_tail)
    self->out_tail->next = m;
  else
    self->out_head = m;
  self->out_tail = m;
}

/* Send all frames; false (and every frame released) if the peer is gone or
 * its pipe is full. */
static bool
s_send_frames (void *sock, zmq_msg_t *frames, int n)
{
  bool ok = true;
  for (int i = 0; i < n; i++)
    {
      if (ok && zmq_msg_send (&frames[i], sock, (i + 1 < n ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) >= 0)
        continue;
      ok = false;
      zmq_msg_close (&frames[i]);
    }
  return ok;
}

void
edge_flush (edge_t *self, uint64_t durable_seq)
{
  /* What waits on events the log does not hold yet stays queued, in order;
   * everything else leaves: a failing disk holds back only the replies and
   * publications that depend on it (issue 8), never `version` or `state`. */
  out_msg_t *kept_head = NULL, *kept_tail = NULL;
  while (self->out_head)
    {
      out_msg_t *m = self->out_head;
      self->out_head = m->next;
      m->next = NULL;
      if (m->after_seq > durable_seq)
        {
          if (kept_tail)
            kept_tail->next = m;
          else
            kept_head = m;
          kept_tail = m;
          continue;
        }
      /* A PUB drops for a slow subscriber by design (the log covers it);
       * a ROUTER reply to a vanished client is counted as lost. */
      if (!s_send_frames (m->sock, m->frames, m->n_frames) && m->sock == self->router)
        self->replies_lost++;
      free (m->frames);
      free (m);
    }
  self->out_head = kept_head;
  self->out_tail = kept_tail;
}

void
edge_queue_publish (edge_t *self, uint64_t seq, const char *topic, const void *data, size_t len)
{
  zmq_msg_t *frames = calloc (2, sizeof *frames);
  zmq_msg_init_size (&frames[0], strlen (topic));
  memcpy (zmq_msg_data (&frames[0]), topic, strlen (topic));
  zmq_msg_init_size (&frames[1], len);
  memcpy (zmq_msg_data (&frames[1]), data, len);
  s_queue (self, self->pub, frames, 2, seq);
}

/* identity + envelope copies + the body */
static zmq_msg_t *
s_reply_frames (edge_request_t *req, const void *body, size_t len, int *n_out)
{
  int n = req->n_frames + 1;
  zmq_msg_t *frames = calloc ((size_t) n, sizeof *frames);
  for (int i = 0; i < req->n_frames; i++)
    {
      zmq_msg_init (&frames[i]);
      zmq_msg_copy (&frames[i], &req->frames[i]);
    }
  zmq_msg_init_size (&frames[n - 1], len);
  memcpy (zmq_msg_data (&frames[n - 1]), body, len);
  *n_out = n;
  return frames;
}

static void
s_request_free (edge_request_t *req)
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
  free (req->rid);
  free (req);
}

static void
s_queue_reply (edge_t *self, edge_request_t *req, const void *body, size_t len, uint64_t after_seq)
{
  int n;
  zmq_msg_t *frames = s_reply_frames (req, body, len, &n);
  s_queue (self, self->router, frames, n, after_seq);
}

/* ------------------------------------------------------------------ */
/* Reply builders                                                      */

static void
s_pack_head (msgpack_packer *pk, const edge_request_t *req, uint32_t n_entries, bool final)
{
  msgpack_pack_map (pk, n_entries + (req->rid ? 1 : 0) + (final ? 1 : 0));
  if (req->rid)
    {
      mp_pack_str (pk, "rid");
      pk->callback (pk->data, req->rid, req->rid_len);
    }
  if (final)
    mp_pack_kv_bool (pk, "ok", true);
}

static void
s_pack_error_body (msgpack_sbuffer *buf, const edge_request_t *req, zcd_code_t code,
                   const char *message)
{
  msgpack_packer pk;
  msgpack_packer_init (&pk, buf, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 2 + (req->rid ? 1 : 0));
  if (req->rid)
    {
      mp_pack_str (&pk, "rid");
      msgpack_sbuffer_write (buf, req->rid, req->rid_len);
    }
  mp_pack_kv_bool (&pk, "ok", false);
  mp_pack_str (&pk, "error");
  msgpack_pack_map (&pk, 2);
  mp_pack_kv_str (&pk, "code", zcd_code_name (code));
  mp_pack_kv_str (&pk, "message", message);
}

static void
s_answer_error (edge_t *self, edge_request_t *req, zcd_code_t code, const char *message,
                uint64_t after_seq)
{
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  s_pack_error_body (&buf, req, code, message);
  s_queue_reply (self, req, buf.data, buf.size, after_seq);
  msgpack_sbuffer_destroy (&buf);
  self->errors_total++;
}

void
edge_fail (edge_t *self, edge_request_t *req, zcd_code_t code, const char *fmt, ...)
{
  cleanup_free char *message = NULL;
  va_list ap;
  va_start (ap, fmt);
  if (vasprintf (&message, fmt, ap) < 0)
    message = NULL;
  va_end (ap);
  s_answer_error (self, req, code, message ? message : "", 0);
  req->state = REQ_ANSWERED;
}

edge_reply_t *
edge_reply_ok (edge_t *self, edge_request_t *req, uint32_t n_entries)
{
  edge_reply_t *r = calloc (1, sizeof *r);
  r->req = req;
  msgpack_sbuffer_init (&r->buf);
  msgpack_packer_init (&r->pk, &r->buf, msgpack_sbuffer_write);
  s_pack_head (&r->pk, req, n_entries, true);
  return r;
}

msgpack_packer *
edge_reply_packer (edge_reply_t *r)
{
  return &r->pk;
}

static void
s_free_body (void *data, void *hint)
{
  free (data);
}

void
edge_reply_send (edge_t *self, edge_reply_t *r)
{
  /* The packed body becomes the reply's last frame as it is: a `state` of
   * a thousand containers is half a megabyte, not worth a copy. */
  int n;
  zmq_msg_t *frames = s_reply_frames (r->req, NULL, 0, &n);
  zmq_msg_close (&frames[n - 1]);
  if (r->buf.size == 0 || zmq_msg_init_data (&frames[n - 1], r->buf.data, r->buf.size, s_free_body, NULL) < 0)
    {
      zmq_msg_init_size (&frames[n - 1], r->buf.size);
      memcpy (zmq_msg_data (&frames[n - 1]), r->buf.data, r->buf.size);
      msgpack_sbuffer_destroy (&r->buf);
    }
  s_queue (self, self->router, frames, n, 0);
  if (r->req->state == REQ_NEW)
    r->req->state = REQ_ANSWERED;
  free (r);
}

void
edge_reply_reserve (edge_reply_t *r, size_t bytes)
{
  if (r->buf.alloc >= r->buf.size + bytes)
    return;
  char *grown = realloc (r->buf.data, r->buf.size + bytes);
  if (grown == NULL)
    return;
  r->buf.data = grown;
  r->buf.alloc = r->buf.size + bytes;
}

void
edge_reply_send_now (edge_t *self, edge_reply_t *r)
{
  int n;
  zmq_msg_t *frames = s_reply_frames (r->req, r->buf.data, r->buf.size, &n);
  if (!s_send_frames (self->router, frames, n))
    self->replies_lost++;
  free (frames);
  msgpack_sbuffer_destroy (&r->buf);
  free (r);
}

int
edge_send_partial_event (edge_request_t *req, const char *event, size_t len)
{
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
  s_pack_head (&pk, req, 1, false);
  mp_pack_str (&pk, "event");
  msgpack_sbuffer_write (&buf, event, len);
  int n;
  zmq_msg_t *frames = s_reply_frames (req, buf.data, buf.size, &n);
  msgpack_sbuffer_destroy (&buf);
  /* Only the identity frame can fail (full pipe): a failed send releases
   * everything and is retried with fresh frames next turn. */
  bool ok = s_send_frames (req->edge->router, frames, n);
  free (frames);
  return ok ? 0 : -1;
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
    s_request_free (req);
}

static edge_request_t *
s_take_parked (edge_t *self, uint64_t token)
{
  edge_request_t *req = zhashx_lookup (self->parked, (void *) (uintptr_t) token);
  if (req)
    zhashx_delete (self->parked, (void *) (uintptr_t) token);
  else
    log_warn ("reply for unknown request token %llu", (unsigned long long) token);
  return req;
}

void
edge_reply_parked_ok (edge_t *self, uint64_t token, const msgpack_object *result,
                      uint64_t after_seq)
{
  edge_request_t *req = s_take_parked (self, token);
  if (req == NULL)
    return;
  msgpack_unpacked inner;
  msgpack_unpacked_init (&inner);
  const msgpack_object *map = NULL;
  if (result && result->type == MSGPACK_OBJECT_BIN
      && mp_unpack (result->via.bin.ptr, result->via.bin.size, &inner, NULL) == 0
      && inner.data.type == MSGPACK_OBJECT_MAP)
    map = &inner.data;
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
  uint32_t n = map ? map->via.map.size : 0;
  s_pack_head (&pk, req, n, true);
  for (uint32_t i = 0; i < n; i++)
    {
      msgpack_pack_object (&pk, map->via.map.ptr[i].key);
      msgpack_pack_object (&pk, map->via.map.ptr[i].val);
    }
  s_queue_reply (self, req, buf.data, buf.size, after_seq);
  msgpack_sbuffer_destroy (&buf);
  msgpack_unpacked_destroy (&inner);
  s_request_free (req);
}

void
edge_reply_error (edge_t *self, uint64_t token, zcd_code_t code, const char *message)
{
  edge_reply_error_after (self, token, code, message, 0);
}

void
edge_reply_error_after (edge_t *self, uint64_t token, zcd_code_t code, const char *message,
                        uint64_t after_seq)
{
  edge_request_t *req = s_take_parked (self, token);
  if (req == NULL)
    return;
  s_answer_error (self, req, code, message, after_seq);
  s_request_free (req);
}

const msgpack_object *
edge_request_body (const edge_request_t *req)
{
  return req->decoded.body;
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

uint64_t
edge_replies_lost (const edge_t *self)
{
  return self->replies_lost;
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

static void
s_handle_message (edge_t *self, edge_request_t *req, zmq_msg_t *body)
{
  self->requests_total++;
  req->raw = zmq_msg_data (body);
  req->raw_len = zmq_msg_size (body);
  cleanup_error zcd_error_t *err = NULL;
  proto_request_init (&req->decoded);
  int rc = proto_decode_request (req->raw, req->raw_len, self->cfg.max_request_size,
                                 &req->decoded, &err);
  s_capture_rid (req);
  if (rc < 0)
    {
      s_answer_error (self, req, err->code, err->msg, 0);
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
          s_answer_error (self, req, ZCD_E_INTERNAL, "request left unanswered", 0);
          req->state = REQ_ANSWERED;
        }
    }
  /* The decoded body points into the raw message: neither outlives the
   * handler.  A parked or kept request keeps its frames and rid only. */
  proto_request_fini (&req->decoded);
  req->raw = NULL;
  req->raw_len = 0;
  if (req->state == REQ_ANSWERED)
    s_request_free (req);
}

/* Read one multipart message; returns false when none is waiting. */
static bool
s_receive_one (edge_t *self)
{
  edge_request_t *req = calloc (1, sizeof *req);
  req->edge = self;
  zmq_msg_t part;
  bool more = true, overflow = false;
  zmq_msg_init (&part);
  if (zmq_msg_recv (&part, self->router, ZMQ_DONTWAIT) < 0)
    {
      zmq_msg_close (&part);
      free (req);
      return false;
    }
  for (;;)
    {
      more = zmq_msg_more (&part);
      if (!more)
        break;
      if (req->n_frames < EDGE_MAX_FRAMES)
        req->frames[req->n_frames++] = part;
      else
        {
          overflow = true;
          zmq_msg_close (&part);
        }
      zmq_msg_init (&part);
      if (zmq_msg_recv (&part, self->router, ZMQ_DONTWAIT) < 0)
        break;
    }
  if (req->n_frames == 0)
    {
      /* Only ROUTER identities arrive bare: nothing to answer to. */
      zmq_msg_close (&part);
      free (req);
      return true;
    }
  if (overflow)
    {
      self->requests_total++;
      s_answer_error (self, req, ZCD_E_INVALID_REQUEST, "too many envelope frames", 0);
      s_request_free (req);
    }
  else
    s_handle_message (self, req, &part);
  zmq_msg_close (&part);
  return true;
}

static void
s_on_router (loop_t *loop, void *zsock, void *arg)
{
  edge_t *self = arg;
  /* Bounded per wake-up so one flood cannot starve the actors; the loop
   * re-checks ZMQ_EVENTS after the turn and comes back at once. */
  for (int i = 0; i < 256; i++)
    if (!s_receive_one (self))
      break;
}

/* ------------------------------------------------------------------ */
/* Set-up                                                              */

static int s_setup_curve (edge_t *self, void *zmq_ctx, zcd_error_t **err);

static bool
s_any_tcp (char *const *eps)
{
  for (; eps && *eps; eps++)
    if (strncmp (*eps, "tcp://", 6) == 0)
      return true;
  return false;
}

static int
s_bind_all (edge_t *self, void *sock, char *const *eps, zcd_error_t **err)
{
  gid_t gid = 0;
  if (self->cfg.group)
    {
      struct group *g = getgrnam (self->cfg.group);
      if (g == NULL)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--group: no group `%s`", self->cfg.group);
      gid = g->gr_gid;
    }
  for (; eps && *eps; eps++)
    {
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

static int
s_open_sockets (edge_t *self, void *zmq_ctx, zcd_error_t **err)
{
  int one = 1, zero = 0;
  /* libzmq drops a peer whose message exceeds this, so no peer can make
   * the daemon buffer unbounded input; the body limit itself answers
   * too_large (PROTOCOL.md section 2). */
  int64_t maxmsg = (int64_t) self->cfg.max_request_size * 2;
  int hwm = 100000;
  self->router = zmq_socket (zmq_ctx, ZMQ_ROUTER);
  self->pub = zmq_socket (zmq_ctx, ZMQ_PUB);
  if (self->router == NULL || self->pub == NULL)
    return zcd_fail (err, ZCD_E_INTERNAL, "zmq_socket: %s", zmq_strerror (zmq_errno ()));
  zmq_setsockopt (self->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
  zmq_setsockopt (self->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  zmq_setsockopt (self->router, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt (self->router, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt (self->pub, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  zmq_setsockopt (self->pub, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt (self->pub, ZMQ_SNDHWM, &hwm, sizeof hwm);
  if (s_any_tcp (self->cfg.listen) || s_any_tcp (self->cfg.publish))
    {
      if (self->cfg.curve_secret && self->cfg.curve_clients)
        {
          if (s_setup_curve (self, zmq_ctx, err) < 0)
            return -1;
        }
      else if (!self->cfg.insecure_tcp)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                         "a tcp:// endpoint needs CURVE: give --curve-secret FILE and "
                         "--curve-clients DIR (or --insecure-tcp, for tests only)");
    }
  if (s_bind_all (self, self->router, self->cfg.listen, err) < 0
      || s_bind_all (self, self->pub, self->cfg.publish, err) < 0)
    return -1;
  self->router_watch = loop_add_zsock (self->loop, self->router, s_on_router, self);
  return self->router_watch ? 0 : zcd_fail_errno (err, errno, "watch the command socket");
}

/* ZAP (RFC 27) handler in the loop: zauth would start a thread. */
static void
s_on_zap (loop_t *loop, void *zsock, void *arg)
{
  edge_t *self = arg;
  for (;;)
    {
      zmsg_t *request = zmsg_recv_nowait (zsock);
      if (request == NULL)
        return;
      char *version = zmsg_popstr (request);
      char *request_id = zmsg_popstr (request);
      char *domain = zmsg_popstr (request);
      char *address = zmsg_popstr (request);
      char *identity = zmsg_popstr (request);
      char *mechanism = zmsg_popstr (request);
      zframe_t *key = zmsg_pop (request);
      bool allowed = false;
      char z85[41] = "";
      if (mechanism && strcmp (mechanism, "CURVE") == 0 && key && zframe_size (key) == 32)
        {
          zmq_z85_encode (z85, zframe_data (key), 32);
          allowed = zhashx_lookup (self->allowed_keys, z85) != NULL;
        }
      if (!allowed)
        log_warn ("CURVE client from %s refused", address ? address : "?");
      zmsg_t *reply = zmsg_new ();
      zmsg_addstr (reply, "1.0");
      zmsg_addstr (reply, request_id ? request_id : "");
      zmsg_addstr (reply, allowed ? "200" : "400");
      zmsg_addstr (reply, allowed ? "OK" : "client key not allowed");
      zmsg_addstr (reply, allowed ? z85 : "");
      zmsg_addmem (reply, NULL, 0);
      zmsg_send (&reply, zsock);
      zframe_destroy (&key);
      free (version), free (request_id), free (domain), free (address), free (identity),
          free (mechanism);
      zmsg_destroy (&request);
    }
}

static int
s_setup_curve (edge_t *self, void *zmq_ctx, zcd_error_t **err)
{
  zcert_t *cert = zcert_load (self->cfg.curve_secret);
  if (cert == NULL)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--curve-secret: cannot load `%s`",
                     self->cfg.curve_secret);
  self->allowed_keys = zhashx_new ();
  zdir_t *dir = zdir_new (self->cfg.curve_clients, "-");
  if (dir == NULL)
    {
      zcert_destroy (&cert);
      return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--curve-clients: cannot read `%s`",
                       self->cfg.curve_clients);
    }
  zlist_t *files = zdir_list (dir);
  for (zfile_t *f = zlist_first (files); f; f = zlist_next (files))
    {
      zcert_t *client = zcert_load (zfile_filename (f, NULL));
      if (client)
        zhashx_insert (self->allowed_keys, zcert_public_txt (client), (void *) 1);
      zcert_destroy (&client);
    }
  zlist_destroy (&files);
  zdir_destroy (&dir);
  self->zap = zmq_socket (zmq_ctx, ZMQ_REP);
  int one = 1;
  if (zmq_bind (self->zap, "inproc://zeromq.zap.01") < 0)
    {
      zcert_destroy (&cert);
      return zcd_fail (err, ZCD_E_INTERNAL, "ZAP: %s", zmq_strerror (zmq_errno ()));
    }
  self->zap_watch = loop_add_zsock (self->loop, self->zap, s_on_zap, self);
  void *socks[] = { self->router, self->pub };
  for (int i = 0; i < 2; i++)
    {
      zmq_setsockopt (socks[i], ZMQ_CURVE_SERVER, &one, sizeof one);
      zmq_setsockopt (socks[i], ZMQ_CURVE_SECRETKEY, zcert_secret_key (cert), 32);
    }
  zcert_destroy (&cert);
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
  zhashx_set_key_duplicator (self->parked, NULL);
  zhashx_set_key_destructor (self->parked, NULL);
  zhashx_set_key_hasher (self->parked, edge_token_hash);
  zhashx_set_key_comparator (self->parked, edge_token_compare);
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
  /* What still waits on the log is dropped: its events were never logged. */
  edge_flush (self, UINT64_MAX - 1);
  loop_remove (self->loop, self->router_watch);
  loop_remove (self->loop, self->zap_watch);
  for (edge_request_t *r = zhashx_first (self->parked); r; r = zhashx_next (self->parked))
    s_request_free (r);
  zhashx_destroy (&self->parked);
  zhashx_destroy (&self->allowed_keys);
  if (self->router)
    zmq_close (self->router);
  if (self->pub)
    zmq_close (self->pub);
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
