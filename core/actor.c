#include "core/actor.h"

#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "core/log.h"
#include "core/mp.h"

/* At most this many messages per actor per turn: a chatty actor cannot
 * starve the others or the loop's fds. */
#define ACTOR_BATCH 64

struct actor
{
  actor_system_t *sys;
  const actor_class_t *cls;
  char *name;
  char routing_id[24];
  size_t routing_id_len;
  void *mailbox; /* DEALER */
  void *state;
  bool marked;  /* has input queued: in the system's ready list */
  bool dead;
  actor_t *next_ready;
  actor_t *next_dead;
};

struct actor_system
{
  loop_t *loop;
  void *ctx;
  void *bus; /* ROUTER */
  loop_watch_t *bus_watch;
  char endpoint[64];
  int mailbox_hwm;
  uint64_t serial;
  zhashx_t *by_name;
  actor_t *ready_head, *ready_tail;
  bool drain_scheduled;
  actor_t *dead; /* destroyed this turn; freed in the deferred phase */
  bool reap_scheduled;
  uint64_t send_failures;
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
  self->by_name = zhashx_new ();
  snprintf (self->endpoint, sizeof self->endpoint, "inproc://zcd-actors-%p", (void *) self);
  self->bus = zmq_socket (zmq_ctx, ZMQ_ROUTER);
  int one = 1, zero = 0;
  if (self->bus == NULL
      || zmq_setsockopt (self->bus, ZMQ_ROUTER_MANDATORY, &one, sizeof one) < 0
      || zmq_setsockopt (self->bus, ZMQ_SNDHWM, &self->mailbox_hwm, sizeof (int)) < 0
      || zmq_setsockopt (self->bus, ZMQ_LINGER, &zero, sizeof zero) < 0
      || zmq_bind (self->bus, self->endpoint) < 0
      || (self->bus_watch = loop_add_zsock (loop, self->bus, s_on_bus_input, self)) == NULL)
    {
      zcd_fail (err, ZCD_E_INTERNAL, "actor bus: %s", zmq_strerror (zmq_errno ()));
      if (self->bus)
        zmq_close (self->bus);
      zhashx_destroy (&self->by_name);
      free (self);
      return NULL;
    }
  return self;
}

static void
s_actor_free (actor_t *a)
{
  free (a->name);
  free (a);
}

static void
s_reap (loop_t *loop, void *arg)
{
  actor_system_t *self = arg;
  self->reap_scheduled = false;
  while (self->dead)
    {
      actor_t *a = self->dead;
      self->dead = a->next_dead;
      s_actor_free (a);
    }
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
  while (self->ready_head)
    {
      actor_t *a = self->ready_head;
      self->ready_head = a->next_ready;
      if (a->dead)
        s_actor_free (a);
    }
  s_reap (self->loop, self);
  zhashx_destroy (&self->by_name);
  loop_remove (self->loop, self->bus_watch);
  zmq_close (self->bus);
  free (self);
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

uint64_t
actor_system_send_failures (const actor_system_t *sys)
{
  return sys->send_failures;
}

static void
s_mark_ready (actor_system_t *self, actor_t *a)
{
  if (a->marked || a->dead)
    return;
  a->marked = true;
  a->next_ready = NULL;
  if (self->ready_tail)
    self->ready_tail->next_ready = a;
  else
    self->ready_head = a;
  self->ready_tail = a;
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
  a->state = state;
  /* Routing ids never start with a zero byte (reserved by libzmq). */
  a->routing_id_len = (size_t) snprintf (a->routing_id, sizeof a->routing_id, "a%llu",
                                         (unsigned long long) ++sys->serial);
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
      s_actor_free (a);
      return NULL;
    }
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
  if (self->cls->destroy_state)
    self->cls->destroy_state (self);
  self->state = NULL;
  zmq_close (self->mailbox);
  self->mailbox = NULL;
  /* A marked actor is still linked in a ready list (maybe the one being
   * drained right now): the drain frees it when it gets there. */
  if (self->marked)
    return;
  self->next_dead = sys->dead;
  sys->dead = self;
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

void
actor_msg_begin (actor_msg_builder_t *mb, const char *type, size_t n_fields)
{
  msgpack_sbuffer_init (&mb->buf);
  msgpack_packer_init (&mb->pk, &mb->buf, msgpack_sbuffer_write);
  msgpack_pack_map (&mb->pk, n_fields + 1);
  mp_pack_kv_str (&mb->pk, "type", type);
}

void
actor_msg_discard (actor_msg_builder_t *mb)
{
  msgpack_sbuffer_destroy (&mb->buf);
  msgpack_sbuffer_init (&mb->buf);
}

int
actor_msg_send (actor_system_t *sys, const char *from_name, const char *to,
                actor_msg_builder_t *mb, zcd_error_t **err)
{
  int rc = actor_send_raw (sys, from_name, to, mb->buf.data, mb->buf.size, err);
  actor_msg_discard (mb);
  return rc;
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

int
actor_send_raw (actor_system_t *sys, const char *from_name, const char *to, const void *body,
                size_t len, zcd_error_t **err)
{
  actor_t *dest = zhashx_lookup (sys->by_name, to);
  if (dest == NULL)
    {
      sys->send_failures++;
      return zcd_fail (err, ZCD_E_NOT_FOUND, "no actor `%s`", to);
    }
  if (s_bus_send (sys, dest, from_name, body, len) < 0)
    {
      /* The bus processes its peers' commands (new pipes, read
       * acknowledgements that lower a full pipe) only every so often while
       * sending; ZMQ_EVENTS forces it, and one retry tells a really full
       * mailbox from a stale view of it. */
      uint32_t events;
      size_t size = sizeof events;
      zmq_getsockopt (sys->bus, ZMQ_EVENTS, &events, &size);
      if (s_bus_send (sys, dest, from_name, body, len) < 0)
        {
          int e = zmq_errno ();
          sys->send_failures++;
          if (e == EAGAIN)
            return zcd_fail (err, ZCD_E_BUSY, "mailbox of `%s` is full", to);
          return zcd_fail (err, ZCD_E_INTERNAL, "send to `%s`: %s", to, zmq_strerror (e));
        }
    }
  s_mark_ready (sys, dest);
  return 0;
}

static void
s_dispatch (actor_t *a, const char *from, const char *body, size_t len)
{
  msgpack_unpacked unpacked;
  msgpack_unpacked_init (&unpacked);
  if (mp_unpack (body, len, &unpacked, NULL) < 0 || unpacked.data.type != MSGPACK_OBJECT_MAP)
    {
      log_warn ("%s %s: dropped an undecodable message from %s", a->cls->kind, a->name, from);
      msgpack_unpacked_destroy (&unpacked);
      return;
    }
  char *type = mp_get_strdup (&unpacked.data, "type");
  actor_msg_t msg = { .from = from, .type = type ? type : "", .body = &unpacked.data };
  actor_handler_fn fn = a->cls->unknown;
  for (const actor_route_t *r = a->cls->routes; r && r->type; r++)
    if (strcmp (r->type, msg.type) == 0)
      {
        fn = r->fn;
        break;
      }
  if (fn)
    fn (a, &msg);
  else
    log_warn ("%s %s: no handler for message `%s` from %s", a->cls->kind, a->name, msg.type, from);
  free (type);
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
  actor_t *list = self->ready_head;
  self->ready_head = self->ready_tail = NULL;
  while (list)
    {
      actor_t *a = list;
      list = a->next_ready;
      a->marked = false;
      if (a->dead)
        {
          s_actor_free (a);
          continue;
        }
      if (s_drain_one (a))
        s_mark_ready (self, a);
    }
}
