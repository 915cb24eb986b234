/* Per-client bounds (issue 14, defect 2): a client that sends requests and
 * never reads its replies costs bounded memory and, once it is stalled, no
 * CPU, and never slows anybody else.
 *
 * A ROUTER has no per-peer POLLOUT, and its high-water mark counts messages,
 * not bytes: a client's replies piled up in libzmq without bound (326 MiB
 * for 40,000 `state` requests, for good).  So zcd keeps its own count per
 * client (keyed by ROUTER and routing id) of what it owes: every reply body
 * made for the client, until libzmq lets go of it (the body's zmq_msg free
 * function runs once libzmq has written it out or dropped it, possibly in
 * libzmq's I/O thread: hence the atomics, and nothing else of the peer is
 * touched there).  From that count:
 * - a client owing --client-queue messages or --client-queue-bytes bytes is
 *   gated: its requests are not served but wait in order, at most
 *   EDGE_PEER_HELD_MAX (and EDGE_PEER_HELD_BYTES); more are dropped,
 *   counted and logged once per spell;
 * - a reply libzmq refuses (EAGAIN: its pipe holds --client-queue messages)
 *   waits in the client's backlog, retried with its held requests on one
 *   backing-off timer (10 ms doubling to 1 s), never a fixed short one;
 * - a client owing twice its bounds (answers to parked requests keep
 *   coming) has further replies dropped and counted lost;
 * - a client that makes no progress for EDGE_PEER_STALL_MS loses what
 *   waits; one that is gone (EHOSTUNREACH) at once.  An entry nothing
 *   refers to any more is forgotten by the sweep. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/edge_int.h"
#include "core/fsutil.h"
#include "core/log.h"

typedef struct edge_held
{
  edge_request_t *req;
  zmq_msg_t body;
  size_t bytes;
} edge_held_t;

struct edge_peer
{
  /* Also touched in libzmq's I/O thread (edge_peer_release). */
  _Atomic size_t owed_msgs, owed_bytes; /* reply bodies made, not yet let go */
  _Atomic uint64_t released;            /* bodies libzmq took and let go of */
  _Atomic int refs;                     /* the table, requests, reply bodies */
  /* The loop's only. */
  char *name; /* "ipc/<hex routing id>": the table key, and the log's */
  zlistx_t *backlog; /* out_msg_t libzmq would not take yet, in order */
  zlistx_t *held;    /* edge_held_t: its requests, not served yet, in order */
  size_t held_n, held_bytes;
  bool waiting; /* has a backlog or held requests: on self->waiting */
  uint64_t next_try_ms, backoff_ms, last_progress_ms, last_released;
  uint64_t dropped; /* requests and replies dropped since it last caught up */
};

static void s_arm (edge_t *self, uint64_t due_ms);

/* ------------------------------------------------------------------ */
/* Entries and their counts                                            */

void
edge_peer_unref (edge_peer_t *peer)
{
  if (peer == NULL || atomic_fetch_sub (&peer->refs, 1) != 1)
    return;
  zlistx_destroy (&peer->backlog);
  zlistx_destroy (&peer->held);
  free (peer->name);
  free (peer);
}

static void
s_table_unref (void **item)
{
  edge_peer_unref (*item);
  *item = NULL;
}

edge_peer_t *
edge_peer_get (edge_t *self, void *router, zmq_msg_t *identity)
{
  /* Once per request: no printf (a flood of dropped requests spent a
   * third of its time formatting this). */
  static const char hex[] = "0123456789abcdef";
  const unsigned char *id = zmq_msg_data (identity);
  size_t len = zmq_msg_size (identity);
  char name[8 + 2 * 256];
  memcpy (name, router == self->routers[SOCK_LOCAL] ? "ipc/" : "tcp/", 4);
  size_t at = 4;
  for (size_t i = 0; i < len && at + 3 < sizeof name; i++)
    {
      name[at++] = hex[id[i] >> 4];
      name[at++] = hex[id[i] & 15];
    }
  name[at] = '\0';
  edge_peer_t *peer = zhashx_lookup (self->peers, name);
  if (peer == NULL)
    {
      peer = calloc (1, sizeof *peer);
      peer->name = strdup (name);
      peer->backlog = zlistx_new ();
      peer->held = zlistx_new ();
      atomic_init (&peer->refs, 1);
      zhashx_insert (self->peers, name, peer);
      if (self->peer_timer == NULL)
        {
          self->peer_sweep_ms = zcd_mono_ms () + EDGE_PEER_SWEEP_MS;
          s_arm (self, self->peer_sweep_ms);
        }
    }
  atomic_fetch_add (&peer->refs, 1);
  return peer;
}

edge_track_t *
edge_peer_track (edge_peer_t *peer, size_t len)
{
  edge_track_t *t = calloc (1, sizeof *t);
  t->peer = peer;
  t->len = len;
  atomic_fetch_add (&peer->refs, 1);
  atomic_fetch_add (&peer->owed_msgs, 1);
  atomic_fetch_add (&peer->owed_bytes, len);
  return t;
}

/* The free function of every reply body; runs in libzmq's I/O thread for
 * what was sent, in the loop for what was not. */
void
edge_peer_release (void *data, void *hint)
{
  edge_track_t *t = hint;
  edge_peer_t *peer = t->peer;
  atomic_fetch_sub (&peer->owed_msgs, 1);
  atomic_fetch_sub (&peer->owed_bytes, t->len);
  if (t->sent)
    atomic_fetch_add (&peer->released, 1);
  free (data);
  free (t);
  edge_peer_unref (peer);
}

static bool
s_owes_too_much (const edge_t *self, const edge_peer_t *peer, uint64_t factor)
{
  return atomic_load (&peer->owed_msgs) >= factor * (uint64_t) self->client_queue
         || atomic_load (&peer->owed_bytes) >= factor * self->client_queue_bytes;
}

bool
edge_peer_gated (const edge_t *self, const edge_peer_t *peer)
{
  return zlistx_size (peer->backlog) || zlistx_size (peer->held) || s_owes_too_much (self, peer, 1);
}

bool
edge_peer_dropping (const edge_t *self, const edge_peer_t *peer)
{
  return peer->held_n >= EDGE_PEER_HELD_MAX; /* held ones: gated */
}

bool
edge_peer_full (const edge_t *self, const edge_peer_t *peer)
{
  /* Messages are libzmq's to count for a stream (EAGAIN); bytes are not. */
  return zlistx_size (peer->backlog) || atomic_load (&peer->owed_bytes) >= self->client_queue_bytes;
}

bool
edge_peer_over (const edge_t *self, const edge_peer_t *peer)
{
  return s_owes_too_much (self, peer, 2);
}

/* ------------------------------------------------------------------ */
/* Dropping, logged once per spell                                     */

static void
s_dropping (edge_t *self, edge_peer_t *peer, const char *what)
{
  if (peer->dropped++ == 0)
    log_warn ("client %s: not reading its replies (%zu not taken, %zu bytes): dropping %s "
              "until it reads",
              peer->name, (size_t) atomic_load (&peer->owed_msgs),
              (size_t) atomic_load (&peer->owed_bytes), what);
}

void
edge_peer_drop_request (edge_t *self, edge_peer_t *peer, const char *why)
{
  self->dropped_requests++;
  s_dropping (self, peer, why);
}

void
edge_peer_reply_lost (edge_t *self, edge_peer_t *peer)
{
  self->replies_lost++;
  s_dropping (self, peer, "replies");
}

/* Frees its held requests and its backlog; returns how many replies that
 * lost. */
static size_t
s_free_waiting (edge_peer_t *peer)
{
  size_t replies = zlistx_size (peer->backlog);
  for (edge_held_t *h = zlistx_detach (peer->held, NULL); h; h = zlistx_detach (peer->held, NULL))
    {
      zmq_msg_close (&h->body);
      edge_request_free (h->req);
      free (h);
    }
  for (out_msg_t *m = zlistx_detach (peer->backlog, NULL); m;
       m = zlistx_detach (peer->backlog, NULL))
    edge_out_msg_free (m);
  return replies;
}

/* Everything that waits for peer goes: it left, or stalled too long. */
static void
s_drop_waiting (edge_t *self, edge_peer_t *peer, const char *why)
{
  size_t requests = peer->held_n, replies = 0;
  replies = s_free_waiting (peer);
  peer->held_n = peer->held_bytes = 0;
  self->dropped_requests += requests;
  self->replies_lost += replies;
  if (requests || replies)
    log_warn ("client %s %s: dropped %zu waiting requests and %zu replies", peer->name, why,
              requests, replies);
  peer->dropped = 0; /* the spell ends here, said above */
  edge_give_memory_back (self, 0);
}

/* ------------------------------------------------------------------ */
/* Backlog and held requests                                           */

/* peer has something waiting now: retry it soon, and count its stall from
 * now on unless it was waiting already. */
static void
s_start_waiting (edge_t *self, edge_peer_t *peer)
{
  if (peer->waiting)
    return;
  uint64_t now = zcd_mono_ms ();
  peer->waiting = true;
  zlistx_add_end (self->waiting, peer);
  self->n_waiting++;
  peer->backoff_ms = EDGE_PEER_BACKOFF_MIN_MS;
  peer->next_try_ms = now + peer->backoff_ms;
  peer->last_progress_ms = now;
  peer->last_released = atomic_load (&peer->released);
  s_arm (self, peer->next_try_ms);
}

int
edge_peer_try_send (out_msg_t *m)
{
  /* Marked before libzmq can let go of it, unmarked if it did not take it:
   * on a ROUTER only the first frame can fail, and then nothing is taken. */
  m->track->sent = true;
  for (int i = 0; i < m->n_frames; i++)
    {
      int more = i + 1 < m->n_frames ? ZMQ_SNDMORE : 0;
      if (zmq_msg_send (&m->frames[i], m->sock, more | ZMQ_DONTWAIT) >= 0)
        continue;
      int err = zmq_errno () ? zmq_errno () : EIO;
      if (i == 0)
        {
          m->track->sent = false;
          return err;
        }
      /* Not expected: libzmq takes the rest of a message it started. */
      for (; i < m->n_frames; i++)
        zmq_msg_close (&m->frames[i]);
      m->n_frames = 0;
      return 0;
    }
  m->n_frames = 0;
  return 0;
}

void
edge_peer_send (edge_t *self, out_msg_t *m)
{
  edge_peer_t *peer = m->track->peer;
  if (zlistx_size (peer->backlog) == 0)
    {
      int err = edge_peer_try_send (m);
      if (err == 0 || (err != EAGAIN && err != EINTR))
        {
          /* A reply to a vanished client (EHOSTUNREACH) is counted lost. */
          if (err)
            self->replies_lost++;
          edge_out_msg_free (m);
          return;
        }
    }
  zlistx_add_end (peer->backlog, m);
  s_start_waiting (self, peer);
}

void
edge_peer_hold (edge_t *self, edge_peer_t *peer, edge_request_t *req, zmq_msg_t *body)
{
  size_t bytes = zmq_msg_size (body);
  if (peer->held_n >= EDGE_PEER_HELD_MAX
      || (peer->held_n > 0 && peer->held_bytes + bytes > EDGE_PEER_HELD_BYTES))
    {
      edge_peer_drop_request (self, peer, "its requests");
      edge_request_free (req);
      return;
    }
  edge_held_t *h = calloc (1, sizeof *h);
  h->req = req;
  h->bytes = bytes;
  zmq_msg_init (&h->body);
  zmq_msg_move (&h->body, body);
  zlistx_add_end (peer->held, h);
  peer->held_n++;
  peer->held_bytes += bytes;
  s_start_waiting (self, peer);
}

/* ------------------------------------------------------------------ */
/* Retry: one timer for every client                                   */

/* Send what its backlog holds while libzmq takes it; then, caught up,
 * serve its held requests in order until it owes too much again.  false
 * when the client is gone. */
static bool
s_catch_up (edge_t *self, edge_peer_t *peer, bool *progress)
{
  for (out_msg_t *m = zlistx_first (peer->backlog); m; m = zlistx_first (peer->backlog))
    {
      int err = edge_peer_try_send (m);
      if (err == EAGAIN || err == EINTR)
        return true;
      if (err)
        return false;
      zlistx_detach (peer->backlog, NULL);
      edge_out_msg_free (m);
      *progress = true;
    }
  while (zlistx_size (peer->held) && zlistx_size (peer->backlog) == 0
         && !s_owes_too_much (self, peer, 1))
    {
      edge_held_t *h = zlistx_detach (peer->held, NULL);
      peer->held_n--;
      peer->held_bytes -= h->bytes;
      edge_handle_message (self, h->req, &h->body);
      zmq_msg_close (&h->body);
      free (h);
      *progress = true;
    }
  return true;
}

/* A client that dropped things and takes its replies again is told of in
 * the log, and a later spell is logged anew. */
static void
s_end_spell (edge_t *self, edge_peer_t *peer)
{
  if (peer->dropped == 0 || edge_peer_gated (self, peer))
    return;
  log_info ("client %s: reading again (%" PRIu64 " requests or replies dropped)", peer->name,
            peer->dropped);
  peer->dropped = 0;
}

static void
s_retry (edge_t *self, edge_peer_t *peer, uint64_t now)
{
  uint64_t released = atomic_load (&peer->released);
  bool progress = released != peer->last_released;
  peer->last_released = released;
  if (!s_catch_up (self, peer, &progress))
    s_drop_waiting (self, peer, "is gone");
  else if (!progress && now - peer->last_progress_ms >= EDGE_PEER_STALL_MS)
    {
      char why[64];
      snprintf (why, sizeof why, "took nothing for %d s", EDGE_PEER_STALL_MS / 1000);
      s_drop_waiting (self, peer, why);
    }
  if (zlistx_size (peer->backlog) == 0 && zlistx_size (peer->held) == 0)
    {
      peer->waiting = false;
      s_end_spell (self, peer);
      return;
    }
  if (progress)
    {
      peer->last_progress_ms = now;
      peer->backoff_ms = EDGE_PEER_BACKOFF_MIN_MS;
    }
  else if ((peer->backoff_ms *= 2) > EDGE_PEER_BACKOFF_MAX_MS)
    peer->backoff_ms = EDGE_PEER_BACKOFF_MAX_MS;
  peer->next_try_ms = now + peer->backoff_ms;
}

/* Entries nothing refers to but the table go: the client left, or is
 * between requests (a new one makes a new entry). */
static void
s_sweep (edge_t *self)
{
  size_t n_idle = 0;
  char **idle = calloc (zhashx_size (self->peers) + 1, sizeof *idle);
  for (edge_peer_t *p = zhashx_first (self->peers); p; p = zhashx_next (self->peers))
    if (p->waiting)
      continue;
    else if (atomic_load (&p->refs) == 1)
      idle[n_idle++] = p->name;
    else
      s_end_spell (self, p);
  for (size_t i = 0; i < n_idle; i++)
    zhashx_delete (self->peers, idle[i]);
  free (idle);
}

static void
s_on_timer (loop_t *loop, void *arg)
{
  edge_t *self = arg;
  self->peer_timer = NULL;
  uint64_t now = zcd_mono_ms ();
  if (now >= self->peer_sweep_ms)
    {
      s_sweep (self);
      self->peer_sweep_ms = now + EDGE_PEER_SWEEP_MS;
    }
  /* Taken off first: serving a held request may make others wait. */
  zlistx_t *due = self->waiting;
  self->waiting = self->waiting_due;
  self->waiting_due = due;
  for (edge_peer_t *p = zlistx_first (due); p; p = zlistx_next (due))
    {
      if (p->next_try_ms <= now)
        s_retry (self, p, now);
      if (!p->waiting)
        {
          self->n_waiting--;
          continue;
        }
      zlistx_add_end (self->waiting, p);
    }
  zlistx_purge (due);
  uint64_t next = zhashx_size (self->peers) ? self->peer_sweep_ms : UINT64_MAX;
  for (edge_peer_t *p = zlistx_first (self->waiting); p; p = zlistx_next (self->waiting))
    if (p->next_try_ms < next)
      next = p->next_try_ms;
  if (next != UINT64_MAX)
    s_arm (self, next);
}

/* The one timer, due at the earliest of what asks for it. */
static void
s_arm (edge_t *self, uint64_t due_ms)
{
  if (self->peer_timer && self->peer_timer_due_ms <= due_ms)
    return;
  loop_timer_cancel (self->loop, self->peer_timer);
  uint64_t now = zcd_mono_ms ();
  self->peer_timer = loop_timer_add (self->loop, due_ms > now ? due_ms - now : 0, s_on_timer, self);
  self->peer_timer_due_ms = due_ms;
}

/* ------------------------------------------------------------------ */
/* Life cycle and counters                                             */

void
edge_peers_init (edge_t *self)
{
  self->client_queue
      = self->cfg.client_queue > 0 ? self->cfg.client_queue : EDGE_CLIENT_QUEUE_DEFAULT;
  self->client_queue_bytes = self->cfg.client_queue_bytes > 0 ? self->cfg.client_queue_bytes
                                                              : EDGE_CLIENT_QUEUE_BYTES_DEFAULT;
  self->peers = zhashx_new ();
  zhashx_set_destructor (self->peers, s_table_unref);
  self->waiting = zlistx_new ();
  self->waiting_due = zlistx_new ();
}

/* Held requests and backlogs go unanswered; a body libzmq still holds
 * keeps its entry alive until libzmq lets go of it (zmq_ctx_term). */
void
edge_peers_fini (edge_t *self)
{
  loop_timer_cancel (self->loop, self->peer_timer);
  self->peer_timer = NULL;
  zlistx_destroy (&self->waiting);
  zlistx_destroy (&self->waiting_due);
  if (self->peers == NULL)
    return;
  for (edge_peer_t *p = zhashx_first (self->peers); p; p = zhashx_next (self->peers))
    {
      s_free_waiting (p);
    }
  zhashx_destroy (&self->peers);
}

uint64_t
edge_dropped_requests_total (const edge_t *self)
{
  return self->dropped_requests;
}

uint64_t
edge_backlogged_peers (const edge_t *self)
{
  return self->n_waiting;
}
