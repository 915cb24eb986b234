/* Reply builders (ok, error, streamed partials) and the answers to
 * requests an actor answers later (parked by token). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cleanup.h"
#include "core/edge_int.h"
#include "core/log.h"
#include "core/mp.h"

/* The packed body, taken from buf for a reply.  What doubling left unused
 * is given back first: a client is counted for the bytes it is sent, and
 * must not hold twice as many. */
static char *
s_take_body (msgpack_sbuffer *buf, size_t *len)
{
  *len = buf->size;
  if (buf->alloc > buf->size + buf->size / 4 + 4096)
    {
      char *shrunk = realloc (buf->data, buf->size ? buf->size : 1);
      if (shrunk)
        buf->data = shrunk;
    }
  return msgpack_sbuffer_release (buf);
}

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

void
edge_answer_error (edge_t *self, edge_request_t *req, zcd_code_t code, const char *message,
                   uint64_t after_seq)
{
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  s_pack_error_body (&buf, req, code, message);
  size_t len;
  char *body = s_take_body (&buf, &len);
  edge_out_queue_reply (self, req, body, len, after_seq);
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
  edge_answer_error (self, req, code, message ? message : "", 0);
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

void
edge_reply_send (edge_t *self, edge_reply_t *r)
{
  edge_reply_send_after (self, r, 0);
}

void
edge_reply_send_after (edge_t *self, edge_reply_t *r, uint64_t after_seq)
{
  size_t len;
  char *body = s_take_body (&r->buf, &len);
  edge_out_queue_reply (self, r->req, body, len, after_seq);
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

/* The end of a stream: after its partials, which went out at once; what
 * its client's pipe cannot take now waits in its backlog. */
void
edge_reply_send_now (edge_t *self, edge_reply_t *r)
{
  size_t len;
  char *body = s_take_body (&r->buf, &len);
  out_msg_t *m = edge_out_reply_msg (self, r->req, body, len, 0);
  if (m)
    {
      m->timed_op = r->req->op ? (int) r->req->op->code + 1 : 0;
      m->arrived_ns = r->req->arrived_ns;
      edge_out_observe (self, m);
      edge_peer_send (self, m);
    }
  free (r);
}

int
edge_send_partial_event (edge_request_t *req, const char *event, size_t len)
{
  edge_t *self = req->edge;
  /* A client that owes too much, or has replies waiting, is not sent more
   * of a stream: the replay backs off and tries again. */
  if (edge_peer_full (self, req->peer))
    return EDGE_SEND_FULL;
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
  s_pack_head (&pk, req, 1, false);
  mp_pack_str (&pk, "event");
  msgpack_sbuffer_write (&buf, event, len);
  size_t body_len;
  char *body = s_take_body (&buf, &body_len);
  out_msg_t *m = edge_out_reply_msg (self, req, body, body_len, 0);
  if (m == NULL)
    return EDGE_SEND_FULL;
  /* Only the identity frame can fail, and then nothing is taken: a full
   * pipe is retried with fresh frames later. */
  int failed = edge_peer_try_send (m);
  edge_out_msg_free (m);
  if (failed == 0)
    return 0;
  return failed == EAGAIN || failed == EINTR ? EDGE_SEND_FULL : EDGE_SEND_GONE;
}

/* ------------------------------------------------------------------ */
/* Answers to parked requests                                          */

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
  size_t len;
  char *body = s_take_body (&buf, &len);
  edge_out_queue_reply (self, req, body, len, after_seq);
  msgpack_unpacked_destroy (&inner);
  edge_request_free (req);
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
  edge_answer_error (self, req, code, message, after_seq);
  edge_request_free (req);
}

size_t
edge_parked_count (const edge_t *self)
{
  return zhashx_size (self->parked);
}

void
edge_fail_all_parked (edge_t *self, zcd_code_t code, const char *message)
{
  while (zhashx_size (self->parked) > 0)
    {
      edge_request_t *req = zhashx_first (self->parked);
      edge_reply_error (self, req->token, code, message);
    }
}
