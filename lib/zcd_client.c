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

struct _zcd_client_t
{
  void *ctx;
  void *dealer;
  char *endpoint;
  uint64_t next_rid;
  int timeout_ms;
  /* replies to other requests that arrived while a call waited */
  zcd_stash_t stash;
  /* rids whose call timed out: their late replies are dropped */
  zcd_rids_t abandoned;
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
  zcd_set_text (&self->last_error, fmt, ap);
  va_end (ap);
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
  self->dealer = zcd_socket_new (self->ctx, ZMQ_DEALER);
  if (self->dealer == NULL)
    goto fail;
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
  zcd_stash_clear (&self->stash);
  zcd_rids_free (&self->abandoned);
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

uint64_t
zcd_client_send (zcd_client_t *self, const void *body, size_t len)
{
  uint64_t rid = self->next_rid;
  if (zcd_send_with_rid (self->dealer, body, len, rid) < 0)
    {
      int saved = errno;
      if (saved == EINVAL)
        zcd_client_set_error (self, "request body is not a msgpack map");
      else
        zcd_client_set_error (self, "send to %s: %s", self->endpoint, zmq_strerror (saved));
      errno = saved;
      return 0;
    }
  self->next_rid++;
  return rid;
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
      if (zcd_read_reply (self->dealer, reply) < 0)
        {
          if (errno == EAGAIN)
            continue;
          if (errno == EPROTO)
            zcd_client_set_error (self, "undecodable reply from %s", self->endpoint);
          return -1;
        }
      uint64_t rid = zcd_reply_rid (*reply);
      if (rid && zcd_rids_take (&self->abandoned, rid, zcd_reply_final (*reply)))
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
  if (zcd_stash_pop (&self->stash, NULL, reply))
    return 0;
  return s_recv_socket (self, zcd_deadline (timeout_ms), reply);
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
          zcd_rids_add (&self->abandoned, rid);
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
          zcd_stash_push (&self->stash, 0, got);
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
