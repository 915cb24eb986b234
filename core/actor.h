/* Actors: a name, a state, an inproc ZeroMQ mailbox and a handler per
 * message type, all driven by the one loop (core/loop.h).
 *
 * Transport.  Every actor's mailbox is a DEALER connected to one ROUTER (the
 * bus) owned by the actor system.  A send addresses the destination by
 * name; the system resolves the name to the actor's routing id, which is
 * unique per actor instance (a reused container id never reaches the
 * mailbox of the actor that had it before), and writes [routing id][from]
 * [body] on the bus with ZMQ_DONTWAIT and ZMQ_ROUTER_MANDATORY: a full
 * mailbox (its high-water mark) is ZCD_E_BUSY and a vanished actor
 * ZCD_E_NOT_FOUND, and a send never stalls the loop.
 *
 * Readiness.  Messages between actors only ever originate in this thread,
 * so the sender knows which mailbox just got input: it marks the
 * destination, and the loop drains marked mailboxes in its deferred phase
 * (at most a batch per actor per turn, for fairness).  No per-turn scan of
 * thousands of mailbox sockets.
 *
 * Bodies are msgpack maps with a str "type" key that picks the handler,
 * the same style as the wire. */
#ifndef ZCD_ACTOR_H
#define ZCD_ACTOR_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "core/loop.h"

typedef struct actor_system actor_system_t;
typedef struct actor actor_t;

typedef struct actor_msg
{
  const char *from; /* sender's name */
  const char *type; /* the body's "type" */
  const msgpack_object *body; /* the whole map */
} actor_msg_t;

typedef void (*actor_handler_fn) (actor_t *self, const actor_msg_t *msg);

typedef struct actor_route
{
  const char *type;
  actor_handler_fn fn;
} actor_route_t;

typedef struct actor_class
{
  const char *kind;             /* "container", "process", ... for logs */
  const actor_route_t *routes;  /* terminated by { NULL, NULL } */
  actor_handler_fn unknown;     /* a type with no route; NULL = log + drop */
  void (*destroy_state) (actor_t *self); /* frees the state; may be NULL */
} actor_class_t;

/* The system owns the bus ROUTER; zmq_ctx stays the caller's.
 * mailbox_hwm bounds each mailbox (messages). */
actor_system_t *actor_system_new (loop_t *loop, void *zmq_ctx, int mailbox_hwm, zcd_error_t **err);
/* Destroys every remaining actor, then the bus. */
void actor_system_destroy (actor_system_t **sys);
size_t actor_system_count (const actor_system_t *sys);
loop_t *actor_system_loop (const actor_system_t *sys);
/* Sends answered by EAGAIN or EHOSTUNREACH so far (for metrics/tests). */
uint64_t actor_system_send_failures (const actor_system_t *sys);

/* Create an actor named `name` (unique among live actors: an existing name
 * is ZCD_E_ALREADY_EXISTS).  The actor takes `state`; destroy_state frees
 * it when the actor goes. */
actor_t *actor_new (actor_system_t *sys, const actor_class_t *cls, const char *name, void *state,
                    zcd_error_t **err);
/* Destroy: the name is free at once; the memory goes at the end of the
 * turn, so an actor may destroy itself from its own handler.  Messages
 * still queued in its mailbox are dropped. */
void actor_destroy (actor_t *self);
actor_t *actor_lookup (actor_system_t *sys, const char *name);

void *actor_state (const actor_t *self);
const char *actor_name (const actor_t *self);
actor_system_t *actor_system (const actor_t *self);
loop_t *actor_loop (const actor_t *self);

/* Build a message: actor_msg_begin packs the map header for 1 + n_fields
 * entries and the "type"; the caller packs n_fields key/value pairs with
 * mb.pk; actor_msg_send sends and resets the builder. */
typedef struct actor_msg_builder
{
  msgpack_sbuffer buf;
  msgpack_packer pk;
} actor_msg_builder_t;

void actor_msg_begin (actor_msg_builder_t *mb, const char *type, size_t n_fields);
void actor_msg_discard (actor_msg_builder_t *mb);
/* Sends from `from_name` (any name: the supervisor's edge uses its own). */
int actor_msg_send (actor_system_t *sys, const char *from_name, const char *to,
                    actor_msg_builder_t *mb, zcd_error_t **err);
/* Send a ready-made body (a msgpack map with "type"). */
int actor_send_raw (actor_system_t *sys, const char *from_name, const char *to, const void *body,
                    size_t len, zcd_error_t **err);

#endif
