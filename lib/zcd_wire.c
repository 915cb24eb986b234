/* The request plumbing that the single-node client (zcd_client.c) and the
 * fan-out (zcd_fanout.c, one DEALER per node) share: socket set-up, the rid
 * prefixed to a body, reading a reply, the list of abandoned rids and the
 * stash of replies that arrived for someone else. */
#include "lib/zcd_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <zmq.h>

#include "core/mp.h"

/* Pipelining: let a benchmark keep many requests in flight before the
 * send queue pushes back with EAGAIN.  Receiving is unbounded: a replay of
 * the whole event log (100,000 partial replies by default) must not make
 * the daemon's ROUTER drop the final reply. */
#define DEALER_SNDHWM 100000

void
zcd_set_text (char **slot, const char *fmt, va_list ap)
{
  char *text = NULL;
  /* Formatted before the old text is freed: an argument may point into it. */
  if (vasprintf (&text, fmt, ap) < 0)
    text = NULL;
  free (*slot);
  *slot = text;
}

char *
zcd_reply_error_text (const zcd_reply_t *reply)
{
  const char *code = zcd_reply_error_code (reply);
  const char *message = zcd_reply_error_message (reply);
  char *text = NULL;
  if (asprintf (&text, "%s: %s", code ? code : "internal", message ? message : "reply without ok")
      < 0)
    text = NULL;
  return text;
}

void *
zcd_socket_new (void *ctx, int type)
{
  void *s = zmq_socket (ctx, type);
  if (s == NULL)
    return NULL;
  int linger = 0, sndhwm = DEALER_SNDHWM, rcvhwm = 0;
  zmq_setsockopt (s, ZMQ_LINGER, &linger, sizeof linger);
  if (type == ZMQ_DEALER)
    {
      zmq_setsockopt (s, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
      zmq_setsockopt (s, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    }
  return s;
}

int
zcd_send_with_rid (void *socket, const void *body, size_t len, uint64_t rid)
{
  mp_reader_t r;
  uint32_t count;
  mp_reader_init (&r, body, len);
  /* count + 1 (the rid) must still fit a map header */
  if (!mp_read_map (&r, &count) || count == UINT32_MAX)
    {
      errno = EINVAL;
      return -1;
    }
  size_t hlen = len - mp_reader_left (&r);
  /* The rid goes first: rewriting the header with count + 1 is all it
   * takes, the caller's entries follow untouched. */
  msgpack_sbuffer sbuf;
  msgpack_sbuffer_init (&sbuf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, count + 1);
  msgpack_pack_str (&pk, 3);
  msgpack_pack_str_body (&pk, "rid", 3);
  msgpack_pack_uint64 (&pk, rid);
  if (len > hlen)
    msgpack_sbuffer_write (&sbuf, (const char *)body + hlen, len - hlen);
  int rc = zmq_send (socket, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  if (rc == 0)
    rc = zmq_send (socket, sbuf.data, sbuf.size, 0);
  int saved = errno;
  msgpack_sbuffer_destroy (&sbuf);
  errno = saved;
  return rc < 0 ? -1 : 0;
}

int
zcd_read_reply (void *socket, zcd_reply_t **reply)
{
  zmq_msg_t last;
  zmq_msg_init (&last);
  int more = 1;
  while (more)
    {
      zmq_msg_close (&last);
      zmq_msg_init (&last);
      if (zmq_msg_recv (&last, socket, ZMQ_DONTWAIT) < 0)
        {
          int saved = errno;
          zmq_msg_close (&last);
          errno = saved;
          return -1;
        }
      more = zmq_msg_more (&last);
    }
  *reply = zcd_reply_decode (zmq_msg_data (&last), zmq_msg_size (&last));
  zmq_msg_close (&last);
  if (*reply == NULL)
    {
      errno = EPROTO;
      return -1;
    }
  return 0;
}

void
zcd_rids_add (zcd_rids_t *rids, uint64_t rid)
{
  if (rids->n == rids->cap)
    {
      size_t cap = rids->cap ? rids->cap * 2 : 16;
      uint64_t *grown = realloc (rids->v, cap * sizeof *grown);
      if (grown == NULL)
        return; /* the late reply then surfaces as an unmatched one: harmless */
      rids->v = grown;
      rids->cap = cap;
    }
  rids->v[rids->n++] = rid;
}

bool
zcd_rids_take (zcd_rids_t *rids, uint64_t rid, bool final)
{
  for (size_t i = 0; i < rids->n; i++)
    if (rids->v[i] == rid)
      {
        if (final)
          rids->v[i] = rids->v[--rids->n];
        return true;
      }
  return false;
}

void
zcd_rids_free (zcd_rids_t *rids)
{
  free (rids->v);
  *rids = (zcd_rids_t){ 0 };
}

void
zcd_stash_push (zcd_stash_t *stash, size_t index, zcd_reply_t *reply)
{
  zcd_stash_node_t *node = calloc (1, sizeof *node);
  if (node == NULL)
    {
      zcd_reply_destroy (&reply);
      return;
    }
  node->index = index;
  node->reply = reply;
  if (stash->tail)
    stash->tail->next = node;
  else
    stash->head = node;
  stash->tail = node;
}

bool
zcd_stash_pop (zcd_stash_t *stash, size_t *index, zcd_reply_t **reply)
{
  zcd_stash_node_t *node = stash->head;
  if (node == NULL)
    return false;
  stash->head = node->next;
  if (stash->head == NULL)
    stash->tail = NULL;
  if (index)
    *index = node->index;
  *reply = node->reply;
  free (node);
  return true;
}

void
zcd_stash_clear (zcd_stash_t *stash)
{
  zcd_reply_t *reply = NULL;
  while (zcd_stash_pop (stash, NULL, &reply))
    zcd_reply_destroy (&reply);
}
