/* The edge's output: replies and publications queue up during a loop turn
 * and leave in edge_flush, once the event log is durable as far as each
 * depends on (PROTOCOL.md section 5: logged before published, published
 * before the reply). */
#include <stdlib.h>
#include <string.h>

#include "core/edge_int.h"
#include "core/fsutil.h"

static void
s_append (edge_t *self, out_msg_t *m)
{
  m->queued_ms = zcd_mono_ms ();
  zlistx_add_end (self->out, m);
  self->out_fresh = true;
}

void
edge_out_msg_free (out_msg_t *m)
{
  for (int i = 0; i < m->n_frames; i++)
    zmq_msg_close (&m->frames[i]);
  free (m->frames);
  free (m);
}

/* Send all frames; 0, or the errno of the send that failed (and every
 * frame released). */
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
  uint64_t now = zcd_mono_ms ();
  self->out_fresh = false;
  self->drops_unflushed = 0;
  out_msg_t *m = zlistx_first (self->out);
  while (m)
    {
      bool held_too_long = m->sock != NULL && now - m->queued_ms >= EDGE_REPLY_HOLD_MAX_MS;
      if (m->after_seq > durable_seq && !held_too_long)
        {
          m = zlistx_next (self->out);
          continue;
        }
      zlistx_detach_cur (self->out);
      if (m->sock == NULL)
        {
          s_send_publication (self, m->frames);
          free (m->frames);
          free (m);
        }
      else
        {
          edge_out_observe (self, m);
          edge_peer_send (self, m); /* or its client's backlog */
        }
      m = zlistx_next (self->out);
    }
}

void
edge_queue_publish (edge_t *self, uint64_t seq, const char *topic, const void *data, size_t len)
{
  zmq_msg_t *frames = calloc (PUB_FRAMES, sizeof *frames);
  zmq_msg_init_size (&frames[0], strlen (topic));
  memcpy (zmq_msg_data (&frames[0]), topic, strlen (topic));
  zmq_msg_init_size (&frames[1], len);
  memcpy (zmq_msg_data (&frames[1]), data, len);
  out_msg_t *m = calloc (1, sizeof *m);
  m->after_seq = seq;
  m->n_frames = PUB_FRAMES;
  m->frames = frames;
  s_append (self, m);
}

out_msg_t *
edge_out_reply_msg (edge_t *self, edge_request_t *req, char *body, size_t len, uint64_t after_seq)
{
  if (edge_peer_over (self, req->peer))
    {
      free (body);
      edge_peer_reply_lost (self, req->peer);
      return NULL;
    }
  out_msg_t *m = calloc (1, sizeof *m);
  m->after_seq = after_seq;
  m->sock = req->router;
  m->n_frames = req->n_frames + 1;
  m->frames = calloc ((size_t) m->n_frames, sizeof *m->frames);
  for (int i = 0; i < req->n_frames; i++)
    {
      zmq_msg_init (&m->frames[i]);
      zmq_msg_copy (&m->frames[i], &req->frames[i]);
    }
  /* The body is the last frame as it is (a `state` of a thousand
   * containers is half a megabyte, not worth a copy), and counts against
   * its client until libzmq lets go of it. */
  m->track = edge_peer_track (req->peer, len);
  zmq_msg_t *last = &m->frames[m->n_frames - 1];
  if (zmq_msg_init_data (last, body, len, edge_peer_release, m->track) < 0)
    {
      /* Out of memory: the body goes, and the reply with it. */
      edge_peer_release (body, m->track);
      m->n_frames--;
      edge_out_msg_free (m);
      self->replies_lost++;
      return NULL;
    }
  return m;
}

void
edge_out_queue_reply (edge_t *self, edge_request_t *req, char *body, size_t len, uint64_t after_seq)
{
  out_msg_t *m = edge_out_reply_msg (self, req, body, len, after_seq);
  if (m == NULL)
    return;
  m->timed_op = req->op ? (int) req->op->code + 1 : 0;
  m->arrived_ns = req->arrived_ns;
  s_append (self, m);
}

void
edge_out_observe (edge_t *self, const out_msg_t *m)
{
  if (m->timed_op > 0 && m->timed_op <= PROTO_OP_COUNT)
    metrics_hist_observe (&self->request_latency[m->timed_op - 1], zcd_mono_ns () - m->arrived_ns);
}
