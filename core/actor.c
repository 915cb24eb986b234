#include "core/actor.h"

#include <czmq.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

/* At most this many messages per actor per turn: a chatty actor cannot
 * starve the others or the loop's fds. */
#define ACTOR_BATCH 64

/* A message waiting for room in a full mailbox: the body, then the
 * sender's name (NUL-terminated) after it. */
typedef struct
{
  size_t len;
  const char *from;
  char body[];
} overflow_msg_t;

struct actor
{
  actor_system_t *sys;
  const actor_class_t *cls;
  char *name;
  char routing_id[24];
  size_t routing_id_len;
  void *mailbox; /* DEALER */
  void *state;
  zlistx_t *overflow; /* overflow_msg_t, oldest first; NULL until first needed */
  bool marked;        /* has input queued: in the system's ready list */
  bool dead;
};

struct actor_system
{
  loop_t *loop;
  void *ctx;
  void *bus; /* ROUTER */
  loop_watch_t *bus_watch;
  char endpoint[64];
  int mailbox_hwm;
  size_t overflow_limit;
  uint64_t serial;
  zhashx_t *by_name;
  zlistx_t *ready;    /* marked actors, for the next drain */
  zlistx_t *draining; /* the list the running drain works through */
  bool drain_scheduled;
  zlistx_t *dead; /* destroyed and not marked: freed by s_reap */
  bool reap_scheduled;
  actor_system_stats_t stats;
  uint64_t busy_said_ms; /* when a refused send was last logged */
  uint64_t lost;         /* failed sends nobody was told about */
  uint64_t lost_said_ms;
};

static void s_drain (loop_t *loop, void *arg);

/* Mailboxes never write to the bus; the watch exists so the loop makes the
 * bus process its commands when they arrive.  A closed mailbox (and its
 * eventfd) is only freed once the bus acknowledges the pipe's end, and an
 * idle bus would otherwise hold every destroyed actor's socket. */
static void
s_on_bus_input (loop_t *loop, void *bus, void *arg)
{
  zmq_msg_t stray;
  zmq_msg_init (&stray);
  while (zmq_msg_recv (&stray, bus, ZMQ_DONTWAIT) >= 0)
    ;
  zmq_msg_close (&stray);
}

static void
s_overflow_msg_free (void **item)
{
  free (*item);
  *item = NULL;
}

static void
s_system_free (actor_system_t *self)
{
  zhashx_destroy (&self->by_name);
  zlistx_destroy (&self->ready);
  zlistx_destroy (&self->draining);
  zlistx_destroy (&self->dead);
  free (self);
}

actor_system_t *
actor_system_new (loop_t *loop, void *zmq_ctx, int mailbox_hwm, zcd_error_t **err)
{
  actor_system_t *self = calloc (1, sizeof *self);
  if (self == NULL)
    {
      zcd_fail_errno (err, ENOMEM, "actor system");
      return NULL;
    }
  self->loop = loop;
  self->ctx = zmq_ctx;
  self->mailbox_hwm = mailbox_hwm > 0 ? mailbox_hwm : 1000;
  self->overflow_limit = (size_t)self->mailbox_hwm;
  self->by_name = zhashx_new ();
  self->ready = zlistx_new ();
  self->draining = zlistx_new ();
  self->dead = zlistx_new ();
  snprintf (self->endpoint, sizeof self->endpoint, "inproc://zcd-actors-%p", (void *)self);
  self->bus = zmq_socket (zmq_ctx, ZMQ_ROUTER);
  int one = 1, zero = 0;
  if (self->bus == NULL || zmq_setsockopt (self->bus, ZMQ_ROUTER_MANDATORY, &one, sizeof one) < 0
      || zmq_setsockopt (self->bus, ZMQ_SNDHWM, &self->mailbox_hwm, sizeof (int)) < 0
      || zmq_setsockopt (self->bus, ZMQ_LINGER, &zero, sizeof zero) < 0
      || zmq_bind (self->bus, self->endpoint) < 0
      || (self->bus_watch = loop_add_zsock (loop, self->bus, s_on_bus_input, self)) == NULL)
    {
      zcd_fail (err, ZCD_E_INTERNAL, "actor bus: %s", zmq_strerror (zmq_errno ()));
      if (self->bus)
        zmq_close (self->bus);
      s_system_free (self);
      return NULL;
    }
  return self;
}

static size_t
s_overflow_len (const actor_t *a)
{
  return a->overflow ? zlistx_size (a->overflow) : 0;
}

static void
s_overflow_drop (actor_t *a)
{
  a->sys->stats.overflow_depth -= s_overflow_len (a);
  zlistx_destroy (&a->overflow);
}

static void
s_actor_release (actor_t *a)
{
  s_overflow_drop (a);
  free (a->name);
  free (a);
}

/* The end of a destroyed actor, once no handler of its can be running. */
static void
s_actor_free (actor_t *a)
{
  if (a->cls->destroy_state)
    a->cls->destroy_state (a);
  s_actor_release (a);
}

static void
s_reap (loop_t *loop, void *arg)
{
  actor_system_t *self = arg;
  self->reap_scheduled = false;
  /* A destroy_state may destroy more actors: they join this list. */
  actor_t *a;
  while ((a = zlistx_detach (self->dead, NULL)))
    s_actor_free (a);
}

void
actor_system_destroy (actor_system_t **sys)
{
  if (sys == NULL || *sys == NULL)
    return;
  actor_system_t *self = *sys;
  zlistx_t *names = zhashx_keys (self->by_name);
  for (char *name = zlistx_first (names); name; name = zlistx_next (names))
    {
      actor_t *a = zhashx_lookup (self->by_name, name);
      if (a)
        actor_destroy (a);
    }
  zlistx_destroy (&names);
  /* Every actor is dead now; the marked ones sit in a ready list. */
  actor_t *a;
  while ((a = zlistx_detach (self->draining, NULL)) || (a = zlistx_detach (self->ready, NULL)))
    s_actor_free (a);
  s_reap (self->loop, self);
  loop_remove (self->loop, self->bus_watch);
  zmq_close (self->bus);
  s_system_free (self);
  *sys = NULL;
}

size_t
actor_system_count (const actor_system_t *sys)
{
  return zhashx_size (sys->by_name);
}

loop_t *
actor_system_loop (const actor_system_t *sys)
{
  return sys->loop;
}

void
actor_system_set_overflow_limit (actor_system_t *sys, size_t per_mailbox)
{
  sys->overflow_limit = per_mailbox;
}

void
actor_system_get_stats (const actor_system_t *sys, actor_system_stats_t *out)
{
  *out = sys->stats;
}

uint64_t
actor_system_send_failures (const actor_system_t *sys)
{
  return sys->stats.send_failures;
}

static void
s_mark_ready (actor_system_t *self, actor_t *a)
{
  if (a->marked || a->dead)
    return;
  a->marked = true;
  zlistx_add_end (self->ready, a);
  if (!self->drain_scheduled)
    {
      self->drain_scheduled = true;
      loop_defer (self->loop, s_drain, self);
    }
}

actor_t *
actor_new (actor_system_t *sys, const actor_class_t *cls, const char *name, void *state,
           zcd_error_t **err)
{
  if (zhashx_lookup (sys->by_name, name))
    {
      zcd_fail (err, ZCD_E_ALREADY_EXISTS, "actor `%s` exists", name);
      return NULL;
    }
  actor_t *a = calloc (1, sizeof *a);
  if (a == NULL || (a->name = strdup (name)) == NULL)
    {
      free (a);
      zcd_fail_errno (err, ENOMEM, "actor `%s`", name);
      return NULL;
    }
  a->sys = sys;
  a->cls = cls;
  /* Routing ids never start with a zero byte (reserved by libzmq). */
  a->routing_id_len = (size_t)snprintf (a->routing_id, sizeof a->routing_id, "a%llu",
                                        (unsigned long long)++sys->serial);
  int zero = 0;
  a->mailbox = zmq_socket (sys->ctx, ZMQ_DEALER);
  if (a->mailbox == NULL
      || zmq_setsockopt (a->mailbox, ZMQ_ROUTING_ID, a->routing_id, a->routing_id_len) < 0
      || zmq_setsockopt (a->mailbox, ZMQ_RCVHWM, &sys->mailbox_hwm, sizeof (int)) < 0
      || zmq_setsockopt (a->mailbox, ZMQ_LINGER, &zero, sizeof zero) < 0
      || zmq_connect (a->mailbox, sys->endpoint) < 0)
    {
      zcd_fail (err, ZCD_E_INTERNAL, "actor `%s` mailbox: %s", name, zmq_strerror (zmq_errno ()));
      if (a->mailbox)
        zmq_close (a->mailbox);
      s_actor_release (a); /* the state stays the caller's */
      return NULL;
    }
  a->state = state;
  /* The bus learns the new peer when it processes its pending commands;
   * ZMQ_EVENTS makes it do so now (unthrottled), so the first send to the
   * actor cannot miss it. */
  uint32_t events;
  size_t size = sizeof events;
  zmq_getsockopt (sys->bus, ZMQ_EVENTS, &events, &size);
  zhashx_insert (sys->by_name, a->name, a);
  return a;
}

void
actor_destroy (actor_t *self)
{
  if (self == NULL || self->dead)
    return;
  actor_system_t *sys = self->sys;
  self->dead = true;
  zhashx_delete (sys->by_name, self->name);
  if (self->cls->stop)
    self->cls->stop (self);
  zmq_close (self->mailbox);
  self->mailbox = NULL;
  s_overflow_drop (self);
  /* A marked actor is still in a ready list (maybe the one being drained
   * right now): the drain frees it when it gets there. */
  if (self->marked)
    return;
  zlistx_add_end (sys->dead, self);
  if (!sys->reap_scheduled)
    {
      sys->reap_scheduled = true;
      loop_defer (sys->loop, s_reap, sys);
    }
}

actor_t *
actor_lookup (actor_system_t *sys, const char *name)
{
  return zhashx_lookup (sys->by_name, name);
}

void *
actor_state (const actor_t *self)
{
  return self->state;
}

const char *
actor_name (const actor_t *self)
{
  return self->name;
}

actor_system_t *
actor_system (const actor_t *self)
{
  return self->sys;
}

loop_t *
actor_loop (const actor_t *self)
{
  return self->sys->loop;
}

/* ------------------------------------------------------------------ */
/* Sending                                                             */

int
actor_send_fail (actor_system_t *sys, const char *to, zcd_error_t **err, zcd_code_t code,
                 const char *fmt, ...)
{
  sys->stats.send_failures++;
  zcd_error_t *e = NULL;
  va_list ap;
  va_start (ap, fmt);
  zcd_failv (&e, code, 0, fmt, ap);
  va_end (ap);
  if (err)
    {
      if (*err == NULL)
        *err = e;
      else
        zcd_error_free (&e);
      return -1;
    }
  /* Nobody to hand the error to: say it.  A vanished addressee is a race
   * with its exit; the rest are overload or a bug, said at most once a
   * second with the count, so that a flood is not also a log flood. */
  sys->lost++;
  uint64_t now = zcd_mono_ms ();
  if (code == ZCD_E_NOT_FOUND)
    log_info ("message to `%s` dropped: %s", to, e->msg);
  else if (now >= sys->lost_said_ms + 1000)
    {
      sys->lost_said_ms = now;
      log_error ("message to `%s` lost: %s (%llu lost so far)", to, e->msg,
                 (unsigned long long)sys->lost);
    }
  zcd_error_free (&e);
  return -1;
}

static int
s_bus_send (actor_system_t *self, actor_t *dest, const char *from, const void *body, size_t len)
{
  int rc = zmq_send (self->bus, dest->routing_id, dest->routing_id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  if (rc < 0)
    return -1;
  /* Once the first frame is accepted the rest of a multipart message is
   * guaranteed to go through. */
  zmq_send (self->bus, from, strlen (from), ZMQ_SNDMORE | ZMQ_DONTWAIT);
  zmq_send (self->bus, body, len, ZMQ_DONTWAIT);
  return 0;
}

/* 0, or -1 with zmq_errno () set (EAGAIN: the mailbox is full). */
static int
s_try_send (actor_system_t *self, actor_t *dest, const char *from, const void *body, size_t len)
{
  if (s_bus_send (self, dest, from, body, len) == 0)
    return 0;
  /* The bus processes its peers' commands (new pipes, read
   * acknowledgements that lower a full pipe) only every so often while
   * sending; ZMQ_EVENTS forces it, and one retry tells a really full
   * mailbox from a stale view of it. */
  uint32_t events;
  size_t size = sizeof events;
  zmq_getsockopt (self->bus, ZMQ_EVENTS, &events, &size);
  return s_bus_send (self, dest, from, body, len);
}

/* Move waiting messages into the mailbox, oldest first, while it takes
 * them; true when none is left waiting. */
static bool
s_flush_overflow (actor_system_t *self, actor_t *a)
{
  overflow_msg_t *m;
  while ((m = zlistx_first (a->overflow)))
    {
      if (s_try_send (self, a, m->from, m->body, m->len) < 0)
        return false;
      free (zlistx_detach (a->overflow, NULL));
      self->stats.overflow_depth--;
      s_mark_ready (self, a);
    }
  return true;
}

static int
s_overflow_push (actor_system_t *self, actor_t *dest, const char *from, const void *body,
                 size_t len, zcd_error_t **err)
{
  if (s_overflow_len (dest) >= self->overflow_limit)
    {
      /* Said at most once a second: a flood must not become a log flood. */
      uint64_t now = zcd_mono_ms ();
      if (self->overflow_limit > 0 && now >= self->busy_said_ms + 1000)
        {
          self->busy_said_ms = now;
          log_warn ("%s %s: mailbox full and %zu messages waiting: sends refused (busy); "
                    "%llu sends refused so far",
                    dest->cls->kind, dest->name, s_overflow_len (dest),
                    (unsigned long long)self->stats.send_failures + 1);
        }
      return actor_send_fail (self, dest->name, err, ZCD_E_BUSY, "mailbox of `%s` is full",
                              dest->name);
    }
  if (dest->overflow == NULL)
    {
      dest->overflow = zlistx_new ();
      zlistx_set_destructor (dest->overflow, s_overflow_msg_free);
    }
  size_t from_len = strlen (from);
  overflow_msg_t *m = malloc (sizeof *m + len + from_len + 1);
  if (m == NULL)
    abort (); /* out of memory: nothing sensible is left to do */
  m->len = len;
  memcpy (m->body, body, len);
  memcpy (m->body + len, from, from_len + 1);
  m->from = m->body + len;
  zlistx_add_end (dest->overflow, m);
  self->stats.sent++;
  self->stats.overflowed++;
  if (++self->stats.overflow_depth > self->stats.overflow_peak)
    self->stats.overflow_peak = self->stats.overflow_depth;
  /* Marked already (its mailbox is full); the drain moves the overflow. */
  s_mark_ready (self, dest);
  return 0;
}

int
actor_send_raw (actor_system_t *sys, const char *from_name, const char *to, const void *body,
                size_t len, zcd_error_t **err)
{
  actor_t *dest = zhashx_lookup (sys->by_name, to);
  if (dest == NULL)
    return actor_send_fail (sys, to, err, ZCD_E_NOT_FOUND, "no actor `%s`", to);
  /* Behind waiting messages, a new one waits too: order is per mailbox.
   * (The drain moves them in as it makes room; trying here as well would
   * cost two failing sends per message while the mailbox stays full.) */
  if (s_overflow_len (dest) == 0)
    {
      if (s_try_send (sys, dest, from_name, body, len) == 0)
        {
          sys->stats.sent++;
          s_mark_ready (sys, dest);
          return 0;
        }
      int e = zmq_errno ();
      if (e != EAGAIN)
        return actor_send_fail (sys, to, err, ZCD_E_INTERNAL, "send to `%s`: %s", to,
                                zmq_strerror (e));
    }
  return s_overflow_push (sys, dest, from_name, body, len, err);
}

/* ------------------------------------------------------------------ */
/* Receiving                                                           */

static void
s_refuse (actor_t *a, const char *from, const char *why)
{
  a->sys->stats.refused++;
  log_warn ("%s %s: refused a message from %s: %s", a->cls->kind, a->name, from, why);
}

/* The runtime reads the "type" only; the class's dispatch (generated)
 * decodes the rest and picks the handler. */
static void
s_dispatch (actor_t *a, const char *from, const char *body, size_t len)
{
  msgpack_unpacked unpacked;
  msgpack_unpacked_init (&unpacked);
  actor_msg_t msg = { .from = from, .body = &unpacked.data };
  zcd_error_t *err = NULL;
  if (mp_unpack (body, len, &unpacked, NULL) < 0 || unpacked.data.type != MSGPACK_OBJECT_MAP)
    s_refuse (a, from, "not a msgpack map");
  else if (!mp_as_uint (mp_map_get (&unpacked.data, "type"), &msg.type_code))
    s_refuse (a, from, "no uint \"type\"");
  else if (a->cls->dispatch == NULL)
    s_refuse (a, from, "this actor takes no messages");
  else
    {
      msg.zone = unpacked.zone;
      if (a->cls->dispatch (a, &msg, a->cls->handlers, &err) < 0)
        s_refuse (a, from, err ? err->msg : "no reason given");
      zcd_error_free (&err);
    }
  msgpack_unpacked_destroy (&unpacked);
}

/* Receive and dispatch up to ACTOR_BATCH messages; true if more remain. */
static bool
s_drain_one (actor_t *a)
{
  for (int i = 0; i < ACTOR_BATCH && !a->dead; i++)
    {
      zmq_msg_t from, body;
      zmq_msg_init (&from);
      if (zmq_msg_recv (&from, a->mailbox, ZMQ_DONTWAIT) < 0)
        {
          zmq_msg_close (&from);
          return false;
        }
      zmq_msg_init (&body);
      zmq_msg_recv (&body, a->mailbox, ZMQ_DONTWAIT);
      char sender[256];
      size_t n = zmq_msg_size (&from) < sizeof sender - 1 ? zmq_msg_size (&from) : sizeof sender - 1;
      memcpy (sender, zmq_msg_data (&from), n);
      sender[n] = '\0';
      s_dispatch (a, sender, zmq_msg_data (&body), zmq_msg_size (&body));
      zmq_msg_close (&from);
      zmq_msg_close (&body);
    }
  return !a->dead;
}

static void
s_drain (loop_t *loop, void *arg)
{
  actor_system_t *self = arg;
  self->drain_scheduled = false;
  /* Take the current list: actors marked while it runs form the next one. */
  zlistx_t *list = self->ready;
  self->ready = self->draining;
  self->draining = list;
  actor_t *a;
  while ((a = zlistx_detach (self->draining, NULL)))
    {
      a->marked = false;
      if (a->dead)
        {
          s_actor_free (a);
          continue;
        }
      bool more = s_drain_one (a);
      /* The drain made room: waiting messages go in now, behind the rest. */
      if (!a->dead && s_overflow_len (a) > 0)
        s_flush_overflow (self, a);
      if (more)
        s_mark_ready (self, a);
    }
  /* Every handler of this pass returned: what they destroyed can go. */
  s_reap (loop, self);
}
