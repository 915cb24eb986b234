/* The client connection: one DEALER, pipelined requests matched by rid.
 *
 * Each request goes out as [empty delimiter, body], the shape a REQ socket
 * gives, so the daemon's envelope handling is the same for both kinds of
 * client; replies are read by their last frame, whatever precedes it. */
#include "lib/zcd_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "core/mp.h"

/* Pipelining: let a benchmark keep many requests in flight before the
 * send queue pushes back with EAGAIN.  Receiving is unbounded: a replay of
 * the whole event log (100,000 partial replies by default) must not make
 * the daemon's ROUTER drop the final reply. */
#define CLIENT_SNDHWM 100000

typedef struct reply_node
{
  zcd_reply_t *reply;
  struct reply_node *next;
} reply_node_t;

struct _zcd_client_t
{
  void *ctx;
  void *dealer;
  char *endpoint;
  uint64_t next_rid;
  int timeout_ms;
  /* replies to other requests that arrived while a call waited */
  reply_node_t *stash_head, *stash_tail;
  /* rids whose call timed out: their late replies are dropped */
  uint64_t *abandoned;
  size_t n_abandoned, cap_abandoned;
  /* heap, whole: a runtime_error carries the runtime's text and CRIU's
   * log tail, several KiB that a fixed buffer would cut short */
  char *last_error;
};

int64_t
zcd_deadline (int timeout_ms)
{
  if (timeout_ms < 0)
    return -1;
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + timeout_ms;
}

int
zcd_ms_left (int64_t deadline_ms)
{
  if (deadline_ms < 0)
    return -1;
  int64_t left = deadline_ms - zcd_deadline (0);
  return left > 0 ? (int) left : 0;
}

void
zcd_client_set_error (zcd_client_t *self, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  char *text = NULL;
  /* Formatted before the old text is freed: an argument may point into it. */
  if (vasprintf (&text, fmt, ap) < 0)
    text = NULL;
  va_end (ap);
  free (self->last_error);
  self->last_error = text;
}

void *
zcd_client_context (zcd_client_t *self)
{
  return self->ctx;
}

zcd_client_t *
zcd_client_new (const char *endpoint)
{
  if (endpoint == NULL)
    endpoint = getenv ("ZCD_ADDRESS");
  if (endpoint == NULL || *endpoint == '\0')
    endpoint = ZCD_DEFAULT_ADDRESS;
  zcd_client_t *self = calloc (1, sizeof *self);
  if (self == NULL)
    return NULL;
  self->next_rid = 1;
  self->timeout_ms = ZCD_DEFAULT_TIMEOUT_MS;
  self->endpoint = strdup (endpoint);
  self->ctx = zmq_ctx_new ();
  if (self->endpoint == NULL || self->ctx == NULL)
    goto fail;
  self->dealer = zmq_socket (self->ctx, ZMQ_DEALER);
  if (self->dealer == NULL)
    goto fail;
  int linger = 0, sndhwm = CLIENT_SNDHWM, rcvhwm = 0;
  zmq_setsockopt (self->dealer, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt (self->dealer, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
  zmq_setsockopt (self->dealer, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
  if (zmq_connect (self->dealer, endpoint) != 0)
    goto fail;
  return self;
fail:;
  int saved = errno;
  zcd_client_destroy (&self);
  errno = saved;
  return NULL;
}

void
zcd_client_destroy (zcd_client_t **self_p)
{
  if (self_p == NULL || *self_p == NULL)
    return;
  zcd_client_t *self = *self_p;
  if (self->dealer)
    zmq_close (self->dealer);
  if (self->ctx)
    zmq_ctx_term (self->ctx);
  while (self->stash_head)
    {
      reply_node_t *node = self->stash_head;
      self->stash_head = node->next;
      zcd_reply_destroy (&node->reply);
      free (node);
    }
  free (self->abandoned);
  free (self->endpoint);
  free (self->last_error);
  free (self);
  *self_p = NULL;
}

const char *
zcd_client_endpoint (const zcd_client_t *self)
{
  return self->endpoint;
}

void
zcd_client_set_timeout (zcd_client_t *self, int timeout_ms)
{
  self->timeout_ms = timeout_ms;
}

int
zcd_client_timeout (const zcd_client_t *self)
{
  return self->timeout_ms;
}

void *
zcd_client_socket (zcd_client_t *self)
{
  return self->dealer;
}

const char *
zcd_client_last_error (const zcd_client_t *self)
{
  /* NULL also after vasprintf ran out of memory: never hand out NULL */
  return self->last_error ? self->last_error : "";
}

/* Element count and header length of the msgpack map at the head of body. */
static int
s_map_header (const void *body, size_t len, uint32_t *count, size_t *hlen)
{
  mp_reader_t r;
  mp_reader_init (&r, body, len);
  /* count + 1 (the rid) must still fit a map header */
  if (!mp_read_map (&r, count) || *count == UINT32_MAX)
    return -1;
  *hlen = len - mp_reader_left (&r);
  return 0;
}

uint64_t
zcd_client_send (zcd_client_t *self, const void *body, size_t len)
{
  uint32_t count;
  size_t hlen;
  if (s_map_header (body, len, &count, &hlen) < 0)
    {
      zcd_client_set_error (self, "request body is not a msgpack map");
      errno = EINVAL;
      return 0;
    }
  uint64_t rid = self->next_rid;
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
    msgpack_sbuffer_write (&sbuf, (const char *) body + hlen, len - hlen);
  int rc = zmq_send (self->dealer, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  if (rc == 0)
    rc = zmq_send (self->dealer, sbuf.data, sbuf.size, 0);
  msgpack_sbuffer_destroy (&sbuf);
  if (rc < 0)
    {
      int saved = errno;
      zcd_client_set_error (self, "send to %s: %s", self->endpoint, zmq_strerror (saved));
      errno = saved;
      return 0;
    }
  self->next_rid++;
  return rid;
}

static bool
s_take_abandoned (zcd_client_t *self, uint64_t rid, bool final)
{
  for (size_t i = 0; i < self->n_abandoned; i++)
    if (self->abandoned[i] == rid)
      {
        if (final)
          self->abandoned[i] = self->abandoned[--self->n_abandoned];
        return true;
      }
  return false;
}

static void
s_abandon (zcd_client_t *self, uint64_t rid)
{
  if (self->n_abandoned == self->cap_abandoned)
    {
      size_t cap = self->cap_abandoned ? self->cap_abandoned * 2 : 16;
      uint64_t *grown = realloc (self->abandoned, cap * sizeof *grown);
      if (grown == NULL)
        return; /* the late reply then surfaces in zcd_client_recv: harmless */
      self->abandoned = grown;
      self->cap_abandoned = cap;
    }
  self->abandoned[self->n_abandoned++] = rid;
}

/* Read one whole message and decode its last frame.  0, -1 with errno
 * EAGAIN when none is waiting, EPROTO when undecodable. */
static int
s_read_message (zcd_client_t *self, zcd_reply_t **reply)
{
  zmq_msg_t last;
  zmq_msg_init (&last);
  int more = 1;
  while (more)
    {
      zmq_msg_close (&last);
      zmq_msg_init (&last);
      if (zmq_msg_recv (&last, self->dealer, ZMQ_DONTWAIT) < 0)
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
      zcd_client_set_error (self, "undecodable reply from %s", self->endpoint);
      errno = EPROTO;
      return -1;
    }
  return 0;
}

/* Next reply from the socket (not the stash), skipping abandoned ones. */
static int
s_recv_socket (zcd_client_t *self, int64_t deadline, zcd_reply_t **reply)
{
  for (;;)
    {
      zmq_pollitem_t item = { self->dealer, 0, ZMQ_POLLIN, 0 };
      int rc = zmq_poll (&item, 1, zcd_ms_left (deadline));
      if (rc < 0)
        return -1;
      if (rc == 0)
        {
          errno = EAGAIN;
          return -1;
        }
      if (s_read_message (self, reply) < 0)
        {
          if (errno == EAGAIN)
            continue;
          return -1;
        }
      uint64_t rid = zcd_reply_rid (*reply);
      if (rid && s_take_abandoned (self, rid, zcd_reply_final (*reply)))
        {
          zcd_reply_destroy (reply);
          continue;
        }
      return 0;
    }
}

int
zcd_client_recv (zcd_client_t *self, int timeout_ms, zcd_reply_t **reply)
{
  *reply = NULL;
  if (self->stash_head)
    {
      reply_node_t *node = self->stash_head;
      self->stash_head = node->next;
      if (self->stash_head == NULL)
        self->stash_tail = NULL;
      *reply = node->reply;
      free (node);
      return 0;
    }
  return s_recv_socket (self, zcd_deadline (timeout_ms), reply);
}

static void
s_stash (zcd_client_t *self, zcd_reply_t *reply)
{
  reply_node_t *node = calloc (1, sizeof *node);
  if (node == NULL)
    {
      zcd_reply_destroy (&reply);
      return;
    }
  node->reply = reply;
  if (self->stash_tail)
    self->stash_tail->next = node;
  else
    self->stash_head = node;
  self->stash_tail = node;
}

int
zcd_client_call_stream (zcd_client_t *self, const void *body, size_t len, int timeout_ms,
                        zcd_partial_fn *on_partial, void *arg, zcd_reply_t **reply)
{
  *reply = NULL;
  uint64_t rid = zcd_client_send (self, body, len);
  if (rid == 0)
    return -1;
  int64_t deadline = zcd_deadline (timeout_ms);
  for (;;)
    {
      zcd_reply_t *got = NULL;
      if (s_recv_socket (self, deadline, &got) < 0)
        {
          if (errno == EINTR || errno == EPROTO)
            continue;
          int saved = errno == EAGAIN ? ETIMEDOUT : errno;
          s_abandon (self, rid);
          if (saved == ETIMEDOUT)
            zcd_client_set_error (self, "no reply from %s within %d ms", self->endpoint,
                                  timeout_ms);
          else
            zcd_client_set_error (self, "receive from %s: %s", self->endpoint,
                                  zmq_strerror (saved));
          errno = saved;
          return -1;
        }
      if (zcd_reply_rid (got) != rid)
        {
          s_stash (self, got);
          continue;
        }
      if (zcd_reply_final (got))
        {
          *reply = got;
          return 0;
        }
      if (on_partial)
        on_partial (got, arg);
      zcd_reply_destroy (&got);
      deadline = zcd_deadline (timeout_ms);
    }
}

int
zcd_client_call (zcd_client_t *self, const void *body, size_t len, int timeout_ms,
                 zcd_reply_t **reply)
{
  return zcd_client_call_stream (self, body, len, timeout_ms, NULL, NULL, reply);
}
