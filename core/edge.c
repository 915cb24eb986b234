#include "core/edge.h"

#include <czmq.h>
#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

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
  void *router; /* the socket it came in on: every reply leaves there */
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
  void *sock;         /* a reply's ROUTER; NULL for a publication (every PUB) */
  int n_frames;
  zmq_msg_t *frames;
  struct out_msg *next;
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
  out_msg_t *out_head, *out_tail;
  zhashx_t *allowed_keys;  /* z85 public keys of CURVE clients */
  edge_request_t *current; /* the request whose handler is running */
  char **ipc_paths;
  uint64_t requests_total, errors_total, replies_lost, oversized_total;
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

/* Send all frames; 0, or the errno of the send that failed (and every
 * frame released).  On a ROUTER only the first frame can fail: EAGAIN when
 * the peer's pipe is full, EHOSTUNREACH when the peer is gone
 * (ROUTER_MANDATORY); libzmq takes the rest of a message whose first frame
 * it accepted. */
static int
s_send_frames (void *sock, zmq_msg_t *frames, int n)
{
  int failed = 0;
  for (int i = 0; i < n; i++)
    {
      if (failed == 0
          && zmq_msg_send (&frames[i], sock, (i + 1 < n ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) >= 0)
        continue;
      if (failed == 0)
        failed = zmq_errno () ? zmq_errno () : EIO;
      zmq_msg_close (&frames[i]);
    }
  return failed;
}

/* A publication goes out on every PUB: a subscriber over tcp sees what one
 * over ipc sees.  A PUB drops for a slow subscriber by design (the event
 * log covers it), so a failed send is nobody's loss. */
static void
s_send_publication (edge_t *self, zmq_msg_t *frames)
{
  int last = -1;
  for (int k = 0; k < SOCK_KINDS; k++)
    if (self->pubs[k])
      last = k;
  for (int k = 0; k < last; k++)
    {
      if (self->pubs[k] == NULL)
        continue;
      zmq_msg_t copy[PUB_FRAMES];
      for (int i = 0; i < PUB_FRAMES; i++)
        {
          zmq_msg_init (&copy[i]);
          zmq_msg_copy (&copy[i], &frames[i]);
        }
      s_send_frames (self->pubs[k], copy, PUB_FRAMES);
    }
  if (last >= 0)
    s_send_frames (self->pubs[last], frames, PUB_FRAMES);
  else
    for (int i = 0; i < PUB_FRAMES; i++)
      zmq_msg_close (&frames[i]);
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
      /* A reply to a vanished client (or one whose pipe is full) is
       * counted as lost. */
      if (m->sock == NULL)
        s_send_publication (self, m->frames);
      else if (s_send_frames (m->sock, m->frames, m->n_frames) != 0)
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
  zmq_msg_t *frames = calloc (PUB_FRAMES, sizeof *frames);
  zmq_msg_init_size (&frames[0], strlen (topic));
  memcpy (zmq_msg_data (&frames[0]), topic, strlen (topic));
  zmq_msg_init_size (&frames[1], len);
  memcpy (zmq_msg_data (&frames[1]), data, len);
  s_queue (self, NULL, frames, PUB_FRAMES, seq);
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
  s_queue (self, req->router, frames, n, after_seq);
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
  s_queue (self, r->req->router, frames, n, 0);
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
  if (s_send_frames (r->req->router, frames, n) != 0)
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
  /* Only the identity frame can fail: a failed send releases everything,
   * and a full pipe is retried with fresh frames next turn. */
  int failed = s_send_frames (req->router, frames, n);
  free (frames);
  if (failed == 0)
    return 0;
  return failed == EAGAIN || failed == EINTR ? EDGE_SEND_FULL : EDGE_SEND_GONE;
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

static void
s_give_memory_back (edge_t *self, uint64_t min_delay_ms)
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
    s_give_memory_back (self, EDGE_TRIM_AFTER_LEAVE_MS);
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
      s_answer_error (self, req, ZCD_E_TOO_LARGE, message, 0);
    }
  else
    {
      snprintf (message, sizeof message, "too many envelope frames (%d, at most %d)", n_parts - 1,
                EDGE_MAX_FRAMES - 1);
      s_answer_error (self, req, ZCD_E_INVALID_REQUEST, message, 0);
    }
  s_request_free (req);
}

/* Read one multipart message from router; returns false when none is
 * waiting.  libzmq hands over a message only once all of it has arrived,
 * so its frames are all here: read to the end whatever is kept. */
static bool
s_receive_one (edge_t *self, void *router)
{
  zmq_msg_t part;
  zmq_msg_init (&part);
  if (zmq_msg_recv (&part, router, ZMQ_DONTWAIT) < 0)
    {
      zmq_msg_close (&part);
      return false;
    }
  edge_request_t *req = calloc (1, sizeof *req);
  req->edge = self;
  req->router = router;
  int n_parts = 0; /* what the peer sent: the identity is libzmq's */
  size_t bytes = 0;
  while (zmq_msg_more (&part))
    {
      if (req->n_frames < EDGE_MAX_FRAMES)
        req->frames[req->n_frames++] = part;
      else
        zmq_msg_close (&part);
      zmq_msg_init (&part);
      if (zmq_msg_recv (&part, router, ZMQ_DONTWAIT) < 0)
        break;
      n_parts++;
      bytes += zmq_msg_size (&part);
    }
  if (req->n_frames == 0)
    {
      /* Only ROUTER identities arrive bare: nothing to answer to. */
      zmq_msg_close (&part);
      free (req);
      return true;
    }
  bool oversized = n_parts > EDGE_MAX_FRAMES || bytes > self->frame_cap;
  if (oversized)
    s_drop_oversized (self, req, n_parts, bytes);
  else
    s_handle_message (self, req, &part);
  zmq_msg_close (&part);
  if (oversized)
    s_give_memory_back (self, 0);
  return true;
}

static void
s_on_router (loop_t *loop, void *zsock, void *arg)
{
  edge_t *self = arg;
  /* Bounded per wake-up so one flood cannot starve the actors; the loop
   * re-checks ZMQ_EVENTS after the turn and comes back at once. */
  for (int i = 0; i < 256; i++)
    if (!s_receive_one (self, zsock))
      break;
}

/* ------------------------------------------------------------------ */
/* Set-up                                                              */

static int s_setup_curve (edge_t *self, void *zmq_ctx, zcd_error_t **err);

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
  int one = 1, zero = 0, hwm = 100000;
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
  if (curve && s_setup_curve (self, zmq_ctx, err) < 0)
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
  /* The network sockets only: the local ones stay plain (defect 13). */
  void *socks[] = { self->routers[SOCK_NETWORK], self->pubs[SOCK_NETWORK] };
  for (int i = 0; i < 2; i++)
    {
      if (socks[i] == NULL)
        continue;
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
  for (int k = 0; k < SOCK_KINDS; k++)
    {
      loop_remove (self->loop, self->router_watches[k]);
      loop_remove (self->loop, self->monitor_watches[k]);
    }
  loop_remove (self->loop, self->zap_watch);
  loop_timer_cancel (self->loop, self->trim_timer);
  for (edge_request_t *r = zhashx_first (self->parked); r; r = zhashx_next (self->parked))
    s_request_free (r);
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
