/* The fan-out's merged event stream: every node consumed losslessly
 * (PROTOCOL.md section 5), each event tagged with its node and the boot of
 * the daemon that delivered it.
 *
 * Per node: a SUB (every topic), a DEALER of its own for the syncs, and a
 * monitor of the SUB.  A sync is `state`, `events` since the last seq held,
 * `state`, pipelined on that DEALER.  One DEALER connection delivers in
 * order, so when both states name the same boot the replay between them
 * came from that daemon too; otherwise the daemon restarted in the middle
 * and the sync runs again.  The SUB is not read while a sync is in flight:
 * what it queues meanwhile is either replayed already (seq <= known,
 * dropped) or newer.
 *
 * A daemon restart makes the SUB connect again; the monitor reports the
 * new handshake before any message of that connection can be read, and a
 * new sync runs before the SUB is read further.  So a live event is tagged
 * with the boot the last sync saw only when it came over the connection
 * that sync followed.  A message read just as a new handshake is reported
 * is dropped: the sync's replay brings it again, from the log. */
#include "lib/zcd_fanout_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* SUB messages read from one node per turn, so one busy node cannot
 * starve the others' delivery. */
#define FO_LIVE_BATCH 256
/* A sync the daemon answered with an error is retried after this long. */
#define FO_RETRY_MS 500
#define FO_MONITOR_EVENTS                                                                          \
  (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH                                 \
   | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL                    \
   | ZMQ_EVENT_DISCONNECTED)

/* ---- queues ------------------------------------------------------------------ */

void
fo_queue_push (fo_queue_t *q, zcd_fanout_event_t *event)
{
  fo_event_node_t *n = calloc (1, sizeof *n);
  if (n == NULL)
    {
      /* losing it silently would break the guarantee: better to stop */
      abort ();
    }
  n->event = event;
  if (q->tail)
    q->tail->next = n;
  else
    q->head = n;
  q->tail = n;
}

zcd_fanout_event_t *
fo_queue_pop (fo_queue_t *q)
{
  fo_event_node_t *n = q->head;
  if (n == NULL)
    return NULL;
  q->head = n->next;
  if (q->head == NULL)
    q->tail = NULL;
  zcd_fanout_event_t *event = n->event;
  free (n);
  return event;
}

void
fo_queue_clear (fo_queue_t *q)
{
  zcd_fanout_event_t *event;
  while ((event = fo_queue_pop (q)))
    zcd_fanout_event_destroy (&event);
}

void
zcd_fanout_event_destroy (zcd_fanout_event_t **self_p)
{
  if (self_p == NULL || *self_p == NULL)
    return;
  zcd_event_destroy (&(*self_p)->event);
  free (*self_p);
  *self_p = NULL;
}

static zcd_fanout_event_t *
s_wrap (zcd_fanout_t *self, size_t index, zcd_event_t *event, const char *boot_id)
{
  zcd_fanout_event_t *fe = calloc (1, sizeof *fe);
  if (fe == NULL)
    abort (); /* as fo_queue_push */
  fe->index = index;
  fe->node = self->nodes[index].name;
  fe->event = event;
  snprintf (fe->boot_id, sizeof fe->boot_id, "%s", boot_id);
  return fe;
}

/* ---- accessors ------------------------------------------------------------------ */

void
zcd_fanout_set_since (zcd_fanout_t *self, uint64_t since_seq)
{
  self->since = since_seq;
  for (size_t i = 0; i < self->n_nodes; i++)
    zcd_fanout_set_node_since (self, i, since_seq);
}

void
zcd_fanout_set_node_since (zcd_fanout_t *self, size_t index, uint64_t since_seq)
{
  if (index < self->n_nodes && !self->nodes[index].stream.started)
    self->nodes[index].stream.since = since_seq;
}

uint64_t
zcd_fanout_node_last_seq (const zcd_fanout_t *self, size_t index)
{
  return index < self->n_nodes ? self->nodes[index].stream.known : 0;
}

const char *
zcd_fanout_node_boot_id (const zcd_fanout_t *self, size_t index)
{
  return index < self->n_nodes ? self->nodes[index].stream.boot_id : "";
}

bool
zcd_fanout_node_truncated (const zcd_fanout_t *self, size_t index)
{
  return index < self->n_nodes && self->nodes[index].stream.truncated;
}

uint64_t
zcd_fanout_node_syncs (const zcd_fanout_t *self, size_t index)
{
  return index < self->n_nodes ? self->nodes[index].stream.syncs : 0;
}

const char *
zcd_fanout_node_error (const zcd_fanout_t *self, size_t index)
{
  return index < self->n_nodes ? self->nodes[index].stream.error : "";
}

/* ---- per-node sockets -------------------------------------------------------------- */

void
fo_stream_close (fo_node_t *node)
{
  if (node->sub)
    zmq_close (node->sub);
  if (node->monitor)
    zmq_close (node->monitor);
  if (node->evt_dealer)
    zmq_close (node->evt_dealer);
  node->sub = node->monitor = node->evt_dealer = NULL;
  fo_queue_clear (&node->stream.replay);
  free (node->stream.retired);
  node->stream.retired = NULL;
  node->stream.n_retired = 0;
}

/* The monitor is connected before the SUB is, so no handshake of the SUB
 * goes unreported. */
static int
s_stream_connect (zcd_fanout_t *self, size_t index)
{
  fo_node_t *node = &self->nodes[index];
  fo_stream_t *st = &node->stream;
  char addr[96];
  snprintf (addr, sizeof addr, "inproc://zcd-fanout-%p-%zu", (void *)self, index);
  node->evt_dealer = fo_socket (self, node, ZMQ_DEALER, node->cmd_ep);
  node->sub = node->evt_dealer ? fo_socket (self, node, ZMQ_SUB, NULL) : NULL;
  if (node->sub == NULL || zmq_socket_monitor (node->sub, addr, FO_MONITOR_EVENTS) != 0
      || (node->monitor = zmq_socket (self->ctx, ZMQ_PAIR)) == NULL
      || zmq_connect (node->monitor, addr) != 0
      || zmq_setsockopt (node->sub, ZMQ_SUBSCRIBE, "", 0) != 0
      || zmq_connect (node->sub, node->evt_ep) != 0)
    {
      snprintf (st->error, sizeof st->error, "%s",
                *zcd_fanout_last_error (self) ? zcd_fanout_last_error (self)
                                              : zmq_strerror (errno));
      st->dead = true;
      return -1;
    }
  if (st->since != ZCD_SINCE_NOW)
    st->known = st->since;
  st->need_sync = true;
  return 0;
}

/* ---- boots ------------------------------------------------------------------------------ */

static bool
s_retired (const fo_stream_t *st, const char *boot)
{
  for (size_t i = 0; i < st->n_retired; i++)
    if (strcmp (st->retired[i], boot) == 0)
      return true;
  return false;
}

/* A daemon's boot never comes back: the one replaced is remembered, so a
 * stale heartbeat still queued from it is recognised as old. */
static void
s_set_boot (fo_stream_t *st, const char *boot)
{
  if (strcmp (st->boot_id, boot) == 0)
    return;
  if (st->boot_id[0])
    {
      char (*grown)[FO_BOOT_LEN] = realloc (st->retired, (st->n_retired + 1) * sizeof *grown);
      if (grown)
        {
          st->retired = grown;
          memcpy (st->retired[st->n_retired++], st->boot_id, FO_BOOT_LEN);
        }
    }
  snprintf (st->boot_id, sizeof st->boot_id, "%s", boot);
}

/* ---- syncs -------------------------------------------------------------------------------- */

static bool
s_sync_in_flight (const fo_stream_t *st)
{
  return st->rid_state1 || st->rid_events || st->rid_state2;
}

static void
s_sync_reset (fo_stream_t *st)
{
  st->rid_state1 = st->rid_events = st->rid_state2 = 0;
  fo_queue_clear (&st->replay);
}

static void s_sync_fail (fo_node_t *node, int retry_ms, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
s_sync_fail (fo_node_t *node, int retry_ms, const char *fmt, ...)
{
  fo_stream_t *st = &node->stream;
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (st->error, sizeof st->error, fmt, ap);
  va_end (ap);
  s_sync_reset (st);
  st->need_sync = true;
  st->retry_at = zcd_deadline (retry_ms);
}

static uint64_t
s_send_op (fo_node_t *node, const char *op, bool with_since, uint64_t since)
{
  zcd_body_t *body = zcd_body_new (op);
  if (body && with_since)
    zcd_body_uint (body, "since_seq", since);
  size_t len = 0;
  const char *data = body ? zcd_body_data (body, &len) : NULL;
  uint64_t rid = node->evt_next_rid;
  int rc = data ? zcd_send_with_rid (node->evt_dealer, data, len, rid) : -1;
  zcd_body_destroy (&body);
  if (rc < 0)
    return 0;
  node->evt_next_rid++;
  return rid;
}

static void
s_sync_send (zcd_fanout_t *self, fo_node_t *node)
{
  fo_stream_t *st = &node->stream;
  s_sync_reset (st);
  st->need_sync = false;
  st->got_state1 = st->got_events = st->got_state2 = false;
  st->events_ok = st->replay_truncated = false;
  st->boot1[0] = st->boot2[0] = '\0';
  st->replay_known = st->known;
  st->syncs++;
  st->rid_state1 = s_send_op (node, "state", false, 0);
  if (!st->started && st->since == ZCD_SINCE_NOW)
    {
      /* from now: the state snapshot's last_seq is where the stream starts */
      st->got_events = st->got_state2 = st->events_ok = true;
    }
  else if (st->rid_state1)
    {
      st->rid_events = s_send_op (node, "events", true, st->known);
      st->rid_state2 = st->rid_events ? s_send_op (node, "state", false, 0) : 0;
    }
  if (st->rid_state1 == 0 || (!st->got_events && st->rid_state2 == 0))
    s_sync_fail (node, FO_RETRY_MS, "send: %s", zmq_strerror (errno));
  else
    st->sync_deadline = zcd_deadline (self->timeout_ms);
}

/* Both states answered and the replay ended: keep it or run again. */
static void
s_sync_finish (zcd_fanout_t *self, size_t index)
{
  fo_node_t *node = &self->nodes[index];
  fo_stream_t *st = &node->stream;
  bool replayed = st->rid_events != 0;
  if (!st->boot1[0] || (replayed && strcmp (st->boot1, st->boot2) != 0))
    {
      /* the daemon restarted during the sync: its replay may come from
       * either boot */
      s_sync_fail (node, 0, "daemon restarted during a sync");
      return;
    }
  s_set_boot (st, st->boot1);
  if (replayed)
    {
      zcd_fanout_event_t *fe;
      while ((fe = fo_queue_pop (&st->replay)))
        {
          snprintf (fe->boot_id, sizeof fe->boot_id, "%s", st->boot_id);
          fo_queue_push (&self->ready, fe);
        }
      if (st->replay_known > st->known)
        st->known = st->replay_known;
      st->truncated |= st->replay_truncated;
    }
  else
    st->known = st->state1_last_seq;
  st->started = true;
  st->rid_state1 = st->rid_events = st->rid_state2 = 0;
  st->error[0] = '\0';
}

static void
s_on_state (fo_node_t *node, const zcd_reply_t *reply, char *boot, bool first)
{
  char *b = zcd_reply_get_strdup (reply, "boot_id");
  snprintf (boot, FO_BOOT_LEN, "%s", b && zcd_reply_ok (reply) ? b : "");
  free (b);
  if (first)
    zcd_reply_get_uint (reply, "last_seq", &node->stream.state1_last_seq);
}

static void
s_on_replay_final (fo_node_t *node, const zcd_reply_t *reply)
{
  fo_stream_t *st = &node->stream;
  st->got_events = true;
  st->events_ok = zcd_reply_ok (reply);
  bool truncated = false;
  if (zcd_reply_get_bool (reply, "truncated", &truncated) && truncated)
    st->replay_truncated = true;
}

static void
s_on_replayed (zcd_fanout_t *self, size_t index, const zcd_reply_t *partial)
{
  fo_stream_t *st = &self->nodes[index].stream;
  zcd_event_t *event = zcd_event_from_obj (zcd_reply_get (partial, "event"));
  if (event == NULL)
    return;
  /* in seq order: anything at or below what is held is a repeat */
  if (event->seq <= st->replay_known)
    {
      zcd_event_destroy (&event);
      return;
    }
  st->replay_known = event->seq;
  fo_queue_push (&st->replay, s_wrap (self, index, event, ""));
}

/* Every reply waiting on the node's sync DEALER. */
static void
s_read_sync_replies (zcd_fanout_t *self, size_t index)
{
  fo_node_t *node = &self->nodes[index];
  fo_stream_t *st = &node->stream;
  zcd_reply_t *reply = NULL;
  while (node->evt_dealer && (zcd_read_reply (node->evt_dealer, &reply) == 0 || errno == EPROTO))
    {
      if (reply == NULL)
        continue;
      uint64_t rid = zcd_reply_rid (reply);
      bool final = zcd_reply_final (reply);
      if (rid == 0 || !s_sync_in_flight (st))
        ; /* a reply to a sync given up: stale */
      else if (rid == st->rid_state1 && final)
        st->got_state1 = true, s_on_state (node, reply, st->boot1, true);
      else if (rid == st->rid_state2 && final)
        st->got_state2 = true, s_on_state (node, reply, st->boot2, false);
      else if (rid == st->rid_events && !final)
        s_on_replayed (self, index, reply);
      else if (rid == st->rid_events)
        s_on_replay_final (node, reply);
      if (s_sync_in_flight (st) && rid >= st->rid_state1)
        st->sync_deadline = zcd_deadline (self->timeout_ms); /* progress */
      if (s_sync_in_flight (st) && st->got_state1 && st->got_events && st->got_state2)
        {
          const char *code = zcd_reply_error_code (reply);
          if (!st->events_ok || !st->boot1[0])
            s_sync_fail (node, FO_RETRY_MS, "sync refused: %s", code ? code : "no boot_id");
          else
            s_sync_finish (self, index);
        }
      zcd_reply_destroy (&reply);
    }
}

/* ---- the live stream ---------------------------------------------------------------------- */

/* Read the monitor's reports; true when a new connection was made. */
static bool
s_read_monitor (fo_node_t *node)
{
  bool connected = false;
  for (;;)
    {
      zmq_msg_t head, addr;
      zmq_msg_init (&head);
      if (zmq_msg_recv (&head, node->monitor, ZMQ_DONTWAIT) < 0)
        {
          zmq_msg_close (&head);
          return connected;
        }
      uint16_t what = 0;
      uint32_t value = 0;
      if (zmq_msg_size (&head) >= 6)
        {
          memcpy (&what, zmq_msg_data (&head), 2);
          memcpy (&value, (const char *)zmq_msg_data (&head) + 2, 4);
        }
      bool more = zmq_msg_more (&head);
      zmq_msg_close (&head);
      zmq_msg_init (&addr);
      if (more)
        zmq_msg_recv (&addr, node->monitor, 0);
      zmq_msg_close (&addr);
      fo_stream_t *st = &node->stream;
      if (what == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        connected = true, st->need_sync = true;
      else if (what == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        snprintf (st->error, sizeof st->error,
                  "%s refused this client's key (ZAP status %u): is its certificate in the "
                  "daemon's --curve-clients?",
                  node->evt_ep, value);
      else if (what == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
               || what == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        snprintf (st->error, sizeof st->error, "%s: handshake failed (wrong server key?)",
                  node->evt_ep);
      else if (what == ZMQ_EVENT_DISCONNECTED && !st->error[0])
        /* after a refused handshake, the refusal is the news */
        snprintf (st->error, sizeof st->error, "%s: disconnected, reconnecting", node->evt_ep);
    }
}

static void
s_on_heartbeat (fo_stream_t *st, zmq_msg_t *body)
{
  zcd_reply_t *beat = zcd_reply_decode (zmq_msg_data (body), zmq_msg_size (body));
  uint64_t last_seq = 0;
  char *boot = beat ? zcd_reply_get_strdup (beat, "boot_id") : NULL;
  if (boot && *boot && strcmp (boot, st->boot_id) != 0 && !s_retired (st, boot))
    st->need_sync = true; /* a boot no sync has seen yet */
  if (beat && zcd_reply_get_uint (beat, "last_seq", &last_seq) && last_seq > st->known)
    st->need_sync = true; /* events we missed, even if none follows */
  free (boot);
  zcd_reply_destroy (&beat);
}

static void
s_on_live (zcd_fanout_t *self, size_t index, zmq_msg_t *body)
{
  fo_stream_t *st = &self->nodes[index].stream;
  zcd_event_t *event = zcd_event_decode (zmq_msg_data (body), zmq_msg_size (body));
  if (event == NULL)
    return;
  if (event->seq == st->known + 1)
    {
      st->known = event->seq;
      fo_queue_push (&self->ready, s_wrap (self, index, event, st->boot_id));
      return;
    }
  if (event->seq > st->known)
    st->need_sync = true; /* a gap: the replay brings this one too */
  zcd_event_destroy (&event);
}

/* Read one published message; false when none was waiting. */
static bool
s_read_published (zcd_fanout_t *self, size_t index)
{
  fo_node_t *node = &self->nodes[index];
  zmq_msg_t topic, body;
  zmq_msg_init (&topic);
  zmq_msg_init (&body);
  bool got = zmq_msg_recv (&topic, node->sub, ZMQ_DONTWAIT) >= 0;
  int frames = got;
  bool more = got && zmq_msg_more (&topic);
  while (more)
    {
      zmq_msg_close (&body);
      zmq_msg_init (&body);
      if (zmq_msg_recv (&body, node->sub, 0) < 0)
        break;
      frames++;
      more = zmq_msg_more (&body);
    }
  /* A handshake reported now may be the connection this message came
   * on: its boot is not known yet, so it is left to the sync's replay. */
  if (got && !s_read_monitor (node) && frames == 2)
    {
      if (zmq_msg_size (&topic) == 10 && memcmp (zmq_msg_data (&topic), "/heartbeat", 10) == 0)
        s_on_heartbeat (&node->stream, &body);
      else
        s_on_live (self, index, &body);
    }
  zmq_msg_close (&topic);
  zmq_msg_close (&body);
  return got;
}

static bool
s_live (const fo_node_t *node)
{
  const fo_stream_t *st = &node->stream;
  return !st->dead && st->started && !st->need_sync && !s_sync_in_flight (st);
}

/* One node's turn: its monitor, its sync replies, then its live events. */
static void
s_service (zcd_fanout_t *self, size_t index)
{
  fo_node_t *node = &self->nodes[index];
  if (node->stream.dead)
    return;
  s_read_monitor (node);
  s_read_sync_replies (self, index);
  for (int k = 0; k < FO_LIVE_BATCH && s_live (node); k++)
    if (!s_read_published (self, index))
      break;
}

/* Start the syncs that are due and give up those without progress; the
 * earliest time something is due (monotonic ms, -1 = none). */
static int64_t
s_schedule (zcd_fanout_t *self)
{
  int64_t now = zcd_deadline (0), next = -1;
  for (size_t i = 0; i < self->n_nodes; i++)
    {
      fo_node_t *node = &self->nodes[i];
      fo_stream_t *st = &node->stream;
      if (st->dead)
        continue;
      if (s_sync_in_flight (st) && self->timeout_ms >= 0 && now >= st->sync_deadline)
        s_sync_fail (node, 0, "no reply from %s within %d ms", node->cmd_ep, self->timeout_ms);
      if (!s_sync_in_flight (st) && st->need_sync && now >= st->retry_at)
        s_sync_send (self, node);
      int64_t due = s_sync_in_flight (st) ? (self->timeout_ms >= 0 ? st->sync_deadline : -1)
                    : st->need_sync       ? st->retry_at
                                          : -1;
      if (due >= 0 && (next < 0 || due < next))
        next = due;
    }
  return next;
}

static int
s_start (zcd_fanout_t *self)
{
  if (self->events_started)
    return 0;
  if (self->n_nodes == 0)
    {
      fo_set_error (self, "no nodes");
      errno = EINVAL;
      return -1;
    }
  self->events_started = true;
  for (size_t i = 0; i < self->n_nodes; i++)
    s_stream_connect (self, i); /* a node that fails is marked dead, with its error */
  return 0;
}

int
zcd_fanout_next_event (zcd_fanout_t *self, int timeout_ms, zcd_fanout_event_t **event)
{
  *event = NULL;
  if (s_start (self) < 0)
    return -1;
  int64_t deadline = zcd_deadline (timeout_ms);
  size_t n = self->n_nodes;
  zmq_pollitem_t items[3 * n];
  for (;;)
    {
      if ((*event = fo_queue_pop (&self->ready)))
        return 0;
      int64_t due = s_schedule (self);
      int wait = zcd_ms_left (deadline);
      if (due >= 0 && (wait < 0 || zcd_ms_left (due) < wait))
        wait = zcd_ms_left (due);
      int n_items = 0;
      for (size_t i = 0; i < n; i++)
        {
          fo_node_t *node = &self->nodes[i];
          if (node->stream.dead)
            continue;
          items[n_items++] = (zmq_pollitem_t){ node->evt_dealer, 0, ZMQ_POLLIN, 0 };
          items[n_items++] = (zmq_pollitem_t){ node->monitor, 0, ZMQ_POLLIN, 0 };
          if (s_live (node))
            items[n_items++] = (zmq_pollitem_t){ node->sub, 0, ZMQ_POLLIN, 0 };
        }
      int rc = zmq_poll (items, n_items, wait);
      if (rc < 0 && errno != EINTR)
        return -1;
      for (size_t k = 0; k < n; k++)
        s_service (self, (self->rr + k) % n);
      self->rr = n ? (self->rr + 1) % n : 0;
      if (self->ready.head == NULL && zcd_ms_left (deadline) == 0)
        {
          errno = EAGAIN;
          return -1;
        }
    }
}
