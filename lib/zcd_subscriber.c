/* Lossless event consumption (PROTOCOL.md section 5).
 *
 * PUB drops messages for a subscriber past its high-water mark, and a new
 * subscription takes effect some time after connect; the event log covers
 * both.  The subscriber takes every live event (no topic filter), so `seq`
 * must grow by exactly one: anything else is a gap, and the log is replayed
 * from the last seq accounted for.  A heartbeat announcing a newer last_seq
 * catches the loss of the very last events, which no later event reveals.
 * The container filter is applied here, after the gap check. */
#include "lib/zcd_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

typedef struct event_node
{
  zcd_event_t *event;
  struct event_node *next;
} event_node_t;

struct _zcd_subscriber_t
{
  char *cmd_ep, *evt_ep, *filter;
  uint64_t since;
  /* Every seq <= known has been delivered (or queued) or is known not to
   * match the filter. */
  uint64_t known;
  bool started, need_replay, truncated;
  uint64_t replays;
  int hwm, timeout_ms;
  zcd_client_t *client;
  void *sub;
  event_node_t *head, *tail;
  char last_error[512];
};

zcd_subscriber_t *
zcd_subscriber_new (const char *cmd_ep, const char *evt_ep, const char *id_filter,
                    uint64_t since_seq)
{
  if (evt_ep == NULL)
    evt_ep = getenv ("ZCD_EVENTS_ADDRESS");
  if (evt_ep == NULL || *evt_ep == '\0')
    evt_ep = ZCD_DEFAULT_EVENTS_ADDRESS;
  zcd_subscriber_t *self = calloc (1, sizeof *self);
  if (self == NULL)
    return NULL;
  self->cmd_ep = cmd_ep ? strdup (cmd_ep) : NULL;
  self->evt_ep = strdup (evt_ep);
  self->filter = id_filter && *id_filter ? strdup (id_filter) : NULL;
  self->since = since_seq;
  self->timeout_ms = ZCD_DEFAULT_TIMEOUT_MS;
  if (self->evt_ep == NULL)
    zcd_subscriber_destroy (&self);
  return self;
}

void
zcd_subscriber_destroy (zcd_subscriber_t **self_p)
{
  if (self_p == NULL || *self_p == NULL)
    return;
  zcd_subscriber_t *self = *self_p;
  if (self->sub)
    zmq_close (self->sub);
  zcd_client_destroy (&self->client);
  while (self->head)
    {
      event_node_t *node = self->head;
      self->head = node->next;
      zcd_event_destroy (&node->event);
      free (node);
    }
  free (self->cmd_ep);
  free (self->evt_ep);
  free (self->filter);
  free (self);
  *self_p = NULL;
}

void
zcd_subscriber_set_rcvhwm (zcd_subscriber_t *self, int hwm)
{
  self->hwm = hwm;
}

void
zcd_subscriber_set_timeout (zcd_subscriber_t *self, int timeout_ms)
{
  self->timeout_ms = timeout_ms;
  if (self->client)
    zcd_client_set_timeout (self->client, timeout_ms);
}

uint64_t
zcd_subscriber_last_seq (const zcd_subscriber_t *self)
{
  return self->known;
}

bool
zcd_subscriber_truncated (const zcd_subscriber_t *self)
{
  return self->truncated;
}

uint64_t
zcd_subscriber_replays (const zcd_subscriber_t *self)
{
  return self->replays;
}

void *
zcd_subscriber_socket (zcd_subscriber_t *self)
{
  return self->sub;
}

const char *
zcd_subscriber_last_error (const zcd_subscriber_t *self)
{
  return self->last_error;
}

static int
s_fail (zcd_subscriber_t *self, const char *what)
{
  int saved = errno;
  snprintf (self->last_error, sizeof self->last_error, "%s: %s", what,
            self->client && *zcd_client_last_error (self->client)
                ? zcd_client_last_error (self->client)
                : zmq_strerror (saved));
  errno = saved;
  return -1;
}

static bool
s_matches (const zcd_subscriber_t *self, const zcd_event_t *event)
{
  return self->filter == NULL || strcmp (self->filter, event->id) == 0;
}

static void
s_enqueue (zcd_subscriber_t *self, zcd_event_t *event)
{
  event_node_t *node = calloc (1, sizeof *node);
  if (node == NULL)
    {
      zcd_event_destroy (&event);
      return;
    }
  node->event = event;
  if (self->tail)
    self->tail->next = node;
  else
    self->head = node;
  self->tail = node;
}

static void
s_on_replayed (const zcd_reply_t *partial, void *arg)
{
  zcd_subscriber_t *self = arg;
  zcd_event_t *event = zcd_event_from_obj (zcd_reply_get (partial, "event"));
  if (event == NULL)
    return;
  /* The replay is in seq order: known advances with it, so a replay cut
   * short by a timeout resumes where it stopped, without duplicates. */
  if (event->seq <= self->known)
    {
      zcd_event_destroy (&event);
      return;
    }
  self->known = event->seq;
  if (s_matches (self, event))
    s_enqueue (self, event);
  else
    zcd_event_destroy (&event);
}

static int
s_replay (zcd_subscriber_t *self)
{
  zcd_reply_t *reply = NULL;
  self->need_replay = true;
  int rc = zcd_client_events (self->client, self->filter, self->known, s_on_replayed, self, &reply);
  self->replays++;
  if (rc < 0)
    {
      zcd_reply_destroy (&reply);
      return s_fail (self, "replay events");
    }
  bool truncated = false;
  if (zcd_reply_get_bool (reply, "truncated", &truncated) && truncated)
    self->truncated = true;
  uint64_t last_seq = 0;
  zcd_reply_get_uint (reply, "last_seq", &last_seq);
  zcd_reply_destroy (&reply);
  /* With a filter, the events of other containers up to last_seq were
   * skipped by the daemon: they are accounted for.  Without one, the
   * replayed seqs themselves say how far the log went, so a daemon that
   * assigned more while streaming the replay loses nothing. */
  if (self->filter && last_seq > self->known)
    self->known = last_seq;
  self->need_replay = false;
  return 0;
}

/* Current last_seq, for ZCD_SINCE_NOW. */
static int
s_fetch_last_seq (zcd_subscriber_t *self, uint64_t *last_seq)
{
  zcd_reply_t *reply = NULL;
  int rc = zcd_client_state (self->client, NULL, &reply);
  if (rc == 0 && !zcd_reply_get_uint (reply, "last_seq", last_seq))
    {
      zcd_client_set_error (self->client, "state reply without last_seq");
      errno = EPROTO;
      rc = -1;
    }
  zcd_reply_destroy (&reply);
  return rc;
}

static int
s_connect (zcd_subscriber_t *self)
{
  self->client = zcd_client_new (self->cmd_ep);
  if (self->client == NULL)
    return s_fail (self, "connect to the command endpoint");
  zcd_client_set_timeout (self->client, self->timeout_ms);
  self->sub = zcd_socket_new (zcd_client_context (self->client), ZMQ_SUB);
  if (self->sub == NULL)
    return s_fail (self, "SUB socket");
  if (self->hwm > 0)
    zmq_setsockopt (self->sub, ZMQ_RCVHWM, &self->hwm, sizeof self->hwm);
  if (zmq_setsockopt (self->sub, ZMQ_SUBSCRIBE, "", 0) != 0
      || zmq_connect (self->sub, self->evt_ep) != 0)
    return s_fail (self, self->evt_ep);
  return 0;
}

int
zcd_subscriber_start (zcd_subscriber_t *self)
{
  if (self->started)
    return self->need_replay ? s_replay (self) : 0;
  if (self->sub == NULL && s_connect (self) < 0)
    return -1;
  if (self->since == ZCD_SINCE_NOW)
    {
      /* The state snapshot and its last_seq are taken at one instant:
       * nothing to replay, and whatever the fresh SUB misses shows up as a
       * gap or in a heartbeat. */
      uint64_t last_seq = 0;
      if (s_fetch_last_seq (self, &last_seq) < 0)
        return s_fail (self, "fetch last_seq");
      self->known = last_seq;
      self->replays++;
    }
  else
    {
      self->known = self->since;
      self->need_replay = true;
    }
  self->started = true;
  return self->need_replay ? s_replay (self) : 0;
}

static void
s_on_heartbeat (zcd_subscriber_t *self, zmq_msg_t *body)
{
  zcd_reply_t *beat = zcd_reply_decode (zmq_msg_data (body), zmq_msg_size (body));
  uint64_t last_seq = 0;
  if (beat && zcd_reply_get_uint (beat, "last_seq", &last_seq) && last_seq > self->known)
    self->need_replay = true;
  zcd_reply_destroy (&beat);
}

static void
s_on_live (zcd_subscriber_t *self, zmq_msg_t *body)
{
  zcd_event_t *event = zcd_event_decode (zmq_msg_data (body), zmq_msg_size (body));
  if (event == NULL)
    return;
  if (event->seq == self->known + 1)
    {
      self->known = event->seq;
      if (s_matches (self, event))
        {
          s_enqueue (self, event);
          return;
        }
    }
  else if (event->seq > self->known)
    self->need_replay = true; /* the replay brings this event too */
  zcd_event_destroy (&event);
}

/* Read one published message (topic, body) and account for it. */
static void
s_read_published (zcd_subscriber_t *self)
{
  zmq_msg_t topic, body;
  zmq_msg_init (&topic);
  zmq_msg_init (&body);
  if (zmq_msg_recv (&topic, self->sub, ZMQ_DONTWAIT) < 0)
    goto done;
  int frames = 1;
  bool more = zmq_msg_more (&topic);
  while (more)
    {
      zmq_msg_close (&body);
      zmq_msg_init (&body);
      if (zmq_msg_recv (&body, self->sub, 0) < 0)
        goto done;
      frames++;
      more = zmq_msg_more (&body);
    }
  if (frames != 2)
    goto done;
  if (zmq_msg_size (&topic) == strlen ("/heartbeat")
      && memcmp (zmq_msg_data (&topic), "/heartbeat", strlen ("/heartbeat")) == 0)
    s_on_heartbeat (self, &body);
  else
    s_on_live (self, &body);
done:
  zmq_msg_close (&topic);
  zmq_msg_close (&body);
}

int
zcd_subscriber_next (zcd_subscriber_t *self, int timeout_ms, zcd_event_t **event)
{
  *event = NULL;
  if (!self->started && zcd_subscriber_start (self) < 0)
    return -1;
  int64_t deadline = zcd_deadline (timeout_ms);
  for (;;)
    {
      if (self->head)
        {
          event_node_t *node = self->head;
          self->head = node->next;
          if (self->head == NULL)
            self->tail = NULL;
          *event = node->event;
          free (node);
          return 0;
        }
      if (self->need_replay)
        {
          if (s_replay (self) < 0)
            return -1;
          continue;
        }
      zmq_pollitem_t item = { self->sub, 0, ZMQ_POLLIN, 0 };
      int rc = zmq_poll (&item, 1, zcd_ms_left (deadline));
      if (rc < 0)
        return -1;
      if (rc == 0)
        {
          errno = EAGAIN;
          return -1;
        }
      s_read_published (self);
    }
}
