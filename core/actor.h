/* Actors: a name, a state, an inproc ZeroMQ mailbox and a handler per
 * message type, all driven by the one loop (core/loop.h).
 *
 * Transport.  Every actor's mailbox is a DEALER connected to one ROUTER (the
 * bus) owned by the actor system.  A send addresses the destination by
 * name; the system resolves the name to the actor's routing id, which is
 * unique per actor instance (a reused container id never reaches the
 * mailbox of the actor that had it before), and writes [routing id][from]
 * [body] on the bus with ZMQ_DONTWAIT and ZMQ_ROUTER_MANDATORY: a full
 * mailbox (its high-water mark) never stalls the loop (see Overflow), and
 * a vanished actor is ZCD_E_NOT_FOUND.
 *
 * Readiness.  Messages between actors only ever originate in this thread,
 * so the sender knows which mailbox just got input: it marks the
 * destination, and the loop drains marked mailboxes in its deferred phase
 * (at most a batch per actor per turn, for fairness).  No per-turn scan of
 * thousands of mailbox sockets.
 *
 * Overflow.  A send to a full mailbox is not refused at once: the message
 * waits on that mailbox's overflow queue, in order, and moves into the
 * mailbox as soon as the actor has drained room for it (newer sends to the
 * same mailbox queue behind it).  Only past the overflow bound does a send
 * fail, with ZCD_E_BUSY; that, like every failed send, is counted, and
 * logged when the caller passed no err, so no message (a reply, an exit)
 * is ever lost silently.
 *
 * Messages.  A body is a msgpack map whose "type" is a uint: an
 * amsg_type_t for the daemon's actors (core/amsg_gen.h, generated from
 * schema/actors.json), whose senders count the fields and pack the map.
 * The runtime reads only "type" and hands the body to the class's dispatch
 * hook (generated: a switch on the type that decodes the struct and calls
 * the handler for it).  A body that is not a map, has no uint "type", meets
 * a class without a dispatch, or that the dispatch refuses (no handler, a
 * missing or mistyped field) is refused: logged and counted, never given to
 * a handler.
 *
 * State.  actor_destroy frees the name at once, and the state only after
 * the running handler returned (at the end of the drain, or of the turn):
 * a handler may destroy its own actor and still read its state. */
#ifndef ZCD_ACTOR_H
#define ZCD_ACTOR_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/loop.h"

typedef struct actor_system actor_system_t;
typedef struct actor actor_t;

/* A received message, valid during the dispatch call only. */
typedef struct actor_msg
{
  const char *from;           /* sender's name */
  uint64_t type_code;         /* the body's uint "type" (amsg_type_t) */
  const msgpack_object *body; /* the whole map */
  msgpack_zone *zone;         /* the body's zone, freed after the handler */
} actor_msg_t;

/* Decodes the message and calls the matching entry of `handlers`; -1 with
 * *err when the body does not decode or the type has no handler (the
 * runtime logs and counts that).  Generated: amsg_<actor>_dispatch. */
typedef int (*actor_dispatch_fn) (actor_t *self, const actor_msg_t *msg, const void *handlers,
                                  zcd_error_t **err);

typedef struct actor_class
{
  const char *kind;           /* "container", "stats", ... for logs */
  actor_dispatch_fn dispatch; /* NULL: every message is refused */
  const void *handlers;       /* dispatch's handler table */
  /* Called by actor_destroy at once: detach from fds, timers and children
   * so that nothing calls into the state any more.  May be NULL. */
  void (*stop) (actor_t *self);
  /* Frees the state, after the handler that destroyed the actor returned
   * (or at the end of the turn).  May be NULL. */
  void (*destroy_state) (actor_t *self);
} actor_class_t;

/* The system owns the bus ROUTER; zmq_ctx stays the caller's.
 * mailbox_hwm bounds each mailbox (messages); each mailbox's overflow
 * queue holds as many again (actor_system_set_overflow_limit). */
actor_system_t *actor_system_new (loop_t *loop, void *zmq_ctx, int mailbox_hwm, zcd_error_t **err);
/* Destroys every remaining actor, then the bus. */
void actor_system_destroy (actor_system_t **sys);
size_t actor_system_count (const actor_system_t *sys);
loop_t *actor_system_loop (const actor_system_t *sys);
/* Messages a full mailbox may keep waiting; 0 = none: a full mailbox is
 * ZCD_E_BUSY at once (back-pressure only). */
void actor_system_set_overflow_limit (actor_system_t *sys, size_t per_mailbox);

/* Counters since the system started, for metrics and tests. */
typedef struct actor_system_stats
{
  uint64_t sent;           /* messages accepted for delivery */
  uint64_t send_failures;  /* sends refused: no such actor, overflow full, unpackable */
  uint64_t overflowed;     /* sends that waited on an overflow queue */
  uint64_t overflow_depth; /* messages waiting on overflow queues now */
  uint64_t overflow_peak;  /* the most that ever waited at once */
  uint64_t refused;        /* received messages refused: undecodable or unhandled */
} actor_system_stats_t;

void actor_system_get_stats (const actor_system_t *sys, actor_system_stats_t *out);
/* = actor_system_get_stats ().send_failures */
uint64_t actor_system_send_failures (const actor_system_t *sys);

/* Create an actor named `name` (unique among live actors: an existing name
 * is ZCD_E_ALREADY_EXISTS).  The actor takes `state`; destroy_state frees
 * it when the actor goes. */
actor_t *actor_new (actor_system_t *sys, const actor_class_t *cls, const char *name, void *state,
                    zcd_error_t **err);
/* Destroy: the name is free at once and the class's stop runs; the state
 * (destroy_state) and the memory go once the running handler returned, so
 * an actor may destroy itself from its own handler and go on reading its
 * state until it returns.  Messages still queued in its mailbox or its
 * overflow are dropped. */
void actor_destroy (actor_t *self);
actor_t *actor_lookup (actor_system_t *sys, const char *name);

void *actor_state (const actor_t *self);
const char *actor_name (const actor_t *self);
actor_system_t *actor_system (const actor_t *self);
loop_t *actor_loop (const actor_t *self);

/* Send a packed body (a msgpack map with a uint "type"; the generated
 * amsg_<name>_send pack one and call this) from `from_name` (any name: the
 * supervisor's edge uses its own).  The bytes are copied.  0 when the
 * message is in the mailbox or waiting on its overflow; -1 with
 * ZCD_E_NOT_FOUND (no such actor) or ZCD_E_BUSY (mailbox and overflow
 * full).  The body is not checked here: the receiver refuses a bad one. */
int actor_send_raw (actor_system_t *sys, const char *from_name, const char *to, const void *body,
                    size_t len, zcd_error_t **err);
/* Record a send that cannot be made: counts it, logs it when err is NULL
 * (the caller cannot), fills *err; returns -1.  For generated senders. */
int actor_send_fail (actor_system_t *sys, const char *to, zcd_error_t **err, zcd_code_t code,
                     const char *fmt, ...) __attribute__ ((format (printf, 5, 6)));

#endif
