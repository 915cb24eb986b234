/* The fan-out client: the object, its CURVE sockets, and requests sent to
 * many nodes at once (docs/fanout.md); the nodes and the node file are in
 * zcd_fanout_nodes.c, the event stream in zcd_fanout_events.c.
 *
 * Each node gets its own DEALER for requests, so replies are matched by
 * (node, rid); the event side (zcd_fanout_events.c) has sockets of its
 * own, so a long replay never queues behind a create, nor the reverse. */
#include "lib/zcd_fanout_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "core/mp.h"

void
fo_set_error (zcd_fanout_t *self, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  zcd_set_text (&self->last_error, fmt, ap);
  va_end (ap);
}

const char *
zcd_fanout_last_error (const zcd_fanout_t *self)
{
  return self->last_error ? self->last_error : "";
}

zcd_fanout_t *
zcd_fanout_new (void)
{
  zcd_fanout_t *self = calloc (1, sizeof *self);
  if (self == NULL)
    return NULL;
  self->ctx = zmq_ctx_new ();
  if (self->ctx == NULL)
    {
      free (self);
      return NULL;
    }
  self->timeout_ms = ZCD_DEFAULT_TIMEOUT_MS;
  self->since = ZCD_SINCE_NOW;
  return self;
}

void
zcd_fanout_destroy (zcd_fanout_t **self_p)
{
  if (self_p == NULL || *self_p == NULL)
    return;
  zcd_fanout_t *self = *self_p;
  for (size_t i = 0; i < self->n_nodes; i++)
    {
      fo_node_t *node = &self->nodes[i];
      fo_stream_close (node);
      if (node->dealer)
        zmq_close (node->dealer);
      zcd_rids_free (&node->abandoned);
      free (node->name);
      free (node->cmd_ep);
      free (node->evt_ep);
    }
  free (self->nodes);
  zcd_stash_clear (&self->stash);
  fo_queue_clear (&self->ready);
  zmq_ctx_term (self->ctx);
  free (self->last_error);
  free (self);
  *self_p = NULL;
}

void
zcd_fanout_set_timeout (zcd_fanout_t *self, int timeout_ms)
{
  self->timeout_ms = timeout_ms;
}

size_t
zcd_fanout_size (const zcd_fanout_t *self)
{
  return self->n_nodes;
}

const char *
zcd_fanout_node_name (const zcd_fanout_t *self, size_t index)
{
  return index < self->n_nodes ? self->nodes[index].name : NULL;
}

int
zcd_fanout_node_index (const zcd_fanout_t *self, const char *name)
{
  for (size_t i = 0; i < self->n_nodes; i++)
    if (strcmp (self->nodes[i].name, name) == 0)
      return (int)i;
  return -1;
}

/* ---- sockets -------------------------------------------------------------- */

void *
fo_socket (zcd_fanout_t *self, fo_node_t *node, int type, const char *endpoint)
{
  if (node->server_key[0] && !self->client_public[0])
    {
      fo_set_error (self, "node %s: a CURVE server key but no client certificate", node->name);
      errno = EINVAL;
      return NULL;
    }
  void *s = zcd_socket_new (self->ctx, type);
  if (s == NULL)
    return NULL;
  if (node->server_key[0]
      && (zmq_setsockopt (s, ZMQ_CURVE_SERVERKEY, node->server_key, FO_KEY_LEN + 1) != 0
          || zmq_setsockopt (s, ZMQ_CURVE_PUBLICKEY, self->client_public, FO_KEY_LEN + 1) != 0
          || zmq_setsockopt (s, ZMQ_CURVE_SECRETKEY, self->client_secret, FO_KEY_LEN + 1) != 0))
    goto fail;
  if (endpoint && zmq_connect (s, endpoint) != 0)
    goto fail;
  return s;
fail:;
  int saved = errno;
  fo_set_error (self, "node %s: %s: %s", node->name, endpoint ? endpoint : "socket",
                zmq_strerror (saved));
  zmq_close (s);
  errno = saved;
  return NULL;
}

static int
s_connect (zcd_fanout_t *self, fo_node_t *node)
{
  if (node->dealer == NULL)
    node->dealer = fo_socket (self, node, ZMQ_DEALER, node->cmd_ep);
  return node->dealer ? 0 : -1;
}

/* ---- requests --------------------------------------------------------------- */

uint64_t
zcd_fanout_send (zcd_fanout_t *self, size_t index, const void *body, size_t len)
{
  if (index >= self->n_nodes)
    {
      errno = EINVAL;
      return 0;
    }
  fo_node_t *node = &self->nodes[index];
  if (s_connect (self, node) < 0)
    return 0;
  if (zcd_send_with_rid (node->dealer, body, len, node->next_rid) < 0)
    {
      int saved = errno;
      fo_set_error (self, "node %s: send: %s", node->name,
                    saved == EINVAL ? "body is not a msgpack map" : zmq_strerror (saved));
      errno = saved;
      return 0;
    }
  return node->next_rid++;
}

/* Wait up to the deadline for any request socket of `want` (NULL = every
 * connected node) to be readable, and read one reply from it, skipping
 * abandoned ones.  0 with *index, *reply; -1 errno EAGAIN on timeout. */
static int
s_next_reply (zcd_fanout_t *self, const bool *want, int64_t deadline, size_t *index,
              zcd_reply_t **reply)
{
  zmq_pollitem_t items[self->n_nodes ? self->n_nodes : 1];
  size_t map[self->n_nodes ? self->n_nodes : 1];
  for (;;)
    {
      size_t n = 0;
      for (size_t i = 0; i < self->n_nodes; i++)
        if (self->nodes[i].dealer && (want == NULL || want[i]))
          {
            items[n] = (zmq_pollitem_t){ self->nodes[i].dealer, 0, ZMQ_POLLIN, 0 };
            map[n++] = i;
          }
      int rc = zmq_poll (items, (int)n, zcd_ms_left (deadline));
      if (rc < 0 && errno != EINTR)
        return -1;
      if (rc <= 0)
        {
          if (rc == 0 || zcd_ms_left (deadline) == 0)
            {
              errno = EAGAIN;
              return -1;
            }
          continue;
        }
      for (size_t k = 0; k < n; k++)
        {
          fo_node_t *node = &self->nodes[map[k]];
          if (!(items[k].revents & ZMQ_POLLIN) || zcd_read_reply (node->dealer, reply) < 0)
            continue;
          uint64_t rid = zcd_reply_rid (*reply);
          if (rid && zcd_rids_take (&node->abandoned, rid, zcd_reply_final (*reply)))
            {
              zcd_reply_destroy (reply);
              continue;
            }
          *index = map[k];
          return 0;
        }
    }
}

int
zcd_fanout_recv (zcd_fanout_t *self, int timeout_ms, size_t *index, zcd_reply_t **reply)
{
  *reply = NULL;
  if (zcd_stash_pop (&self->stash, index, reply))
    return 0;
  return s_next_reply (self, NULL, zcd_deadline (timeout_ms), index, reply);
}

/* The node indexes named in nodes (NULL = all), each once. */
static int
s_targets (zcd_fanout_t *self, const char *const *nodes, size_t *idx, size_t *n)
{
  *n = 0;
  if (nodes == NULL)
    {
      for (size_t i = 0; i < self->n_nodes; i++)
        idx[(*n)++] = i;
      return 0;
    }
  for (; *nodes; nodes++)
    {
      int i = zcd_fanout_node_index (self, *nodes);
      for (size_t k = 0; i >= 0 && k < *n; k++)
        if (idx[k] == (size_t)i)
          i = -2;
      if (i < 0 || *n == self->n_nodes)
        {
          fo_set_error (self, "node %s: %s", *nodes, i == -2 ? "named twice" : "no such node");
          errno = EINVAL;
          return -1;
        }
      idx[(*n)++] = (size_t)i;
    }
  return 0;
}

static void s_result_error (zcd_fanout_result_t *res, int err, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
s_result_error (zcd_fanout_result_t *res, int err, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  res->err = err;
  zcd_set_text (&res->error, fmt, ap);
  va_end (ap);
}

/* A final reply for a result: ok, or the daemon's error. */
static void
s_result_reply (zcd_fanout_result_t *res, zcd_reply_t *reply)
{
  res->reply = reply;
  if (zcd_reply_ok (reply))
    return;
  char *text = zcd_reply_error_text (reply);
  s_result_error (res, EREMOTEIO, "%s", text ? text : "internal: reply without ok");
  free (text);
}

/* Collect the final replies of the requests in rids (0 = not pending). */
static void
s_collect (zcd_fanout_t *self, zcd_fanout_result_t *res, uint64_t *rids, size_t n, int timeout_ms)
{
  int64_t deadline = zcd_deadline (timeout_ms);
  bool want[self->n_nodes ? self->n_nodes : 1];
  size_t pending = 0;
  memset (want, 0, sizeof want);
  for (size_t k = 0; k < n; k++)
    if (rids[k])
      want[res[k].index] = true, pending++;
  while (pending)
    {
      size_t index;
      zcd_reply_t *reply = NULL;
      if (s_next_reply (self, want, deadline, &index, &reply) < 0)
        break;
      size_t k = 0;
      while (k < n && !(res[k].index == index && rids[k] == zcd_reply_rid (reply)))
        k++;
      if (k == n)
        zcd_stash_push (&self->stash, index, reply); /* an asynchronous request's reply */
      else if (!zcd_reply_final (reply))
        zcd_reply_destroy (&reply);
      else
        {
          s_result_reply (&res[k], reply);
          rids[k] = 0;
          want[index] = false;
          pending--;
        }
    }
  for (size_t k = 0; k < n; k++)
    if (rids[k])
      {
        zcd_rids_add (&self->nodes[res[k].index].abandoned, rids[k]);
        s_result_error (&res[k], ETIMEDOUT, "no reply from %s within %d ms",
                        self->nodes[res[k].index].cmd_ep, timeout_ms);
      }
}

int
zcd_fanout_call (zcd_fanout_t *self, const char *const *nodes, const void *body, size_t len,
                 int timeout_ms, zcd_fanout_result_t **results, size_t *n_results)
{
  *results = NULL;
  *n_results = 0;
  size_t idx[self->n_nodes ? self->n_nodes : 1], n;
  mp_reader_t r;
  uint32_t count;
  mp_reader_init (&r, body, len);
  if (!mp_read_map (&r, &count))
    {
      fo_set_error (self, "request body is not a msgpack map");
      errno = EINVAL;
      return -1;
    }
  if (s_targets (self, nodes, idx, &n) < 0)
    return -1;
  zcd_fanout_result_t *res = calloc (n ? n : 1, sizeof *res);
  uint64_t *rids = calloc (n ? n : 1, sizeof *rids);
  if (res == NULL || rids == NULL)
    {
      free (res);
      free (rids);
      errno = ENOMEM;
      return -1;
    }
  for (size_t k = 0; k < n; k++)
    {
      res[k].index = idx[k];
      res[k].node = self->nodes[idx[k]].name;
      rids[k] = zcd_fanout_send (self, idx[k], body, len);
      if (rids[k] == 0)
        s_result_error (&res[k], errno, "%s", zcd_fanout_last_error (self));
    }
  s_collect (self, res, rids, n, timeout_ms);
  free (rids);
  int ok = 0;
  for (size_t k = 0; k < n; k++)
    ok += res[k].err == 0;
  *results = res;
  *n_results = n;
  return ok;
}

int
zcd_fanout_request (zcd_fanout_t *self, const char *const *nodes, zcd_body_t *body,
                    zcd_fanout_result_t **results, size_t *n_results)
{
  size_t len = 0;
  const char *data = zcd_body_data (body, &len);
  if (data == NULL)
    {
      *results = NULL;
      *n_results = 0;
      fo_set_error (self, "malformed request body");
      errno = EINVAL;
      return -1;
    }
  return zcd_fanout_call (self, nodes, data, len, self->timeout_ms, results, n_results);
}

void
zcd_fanout_results_destroy (zcd_fanout_result_t **results, size_t n_results)
{
  if (results == NULL || *results == NULL)
    return;
  for (size_t k = 0; k < n_results; k++)
    {
      zcd_reply_destroy (&(*results)[k].reply);
      free ((*results)[k].error);
    }
  free (*results);
  *results = NULL;
}
