/* The one event loop.  Every actor, fd and timer of the daemon is driven
 * from here, in one thread, and nothing in here ever blocks except the
 * single epoll_wait per turn.
 *
 * Why epoll and not zmq_poll: with one exit FIFO per process and one mailbox
 * per actor, a zmq_poll set would be rebuilt and scanned in full every turn
 * (thousands of entries); epoll costs O(ready).  ZeroMQ sockets take part
 * through their ZMQ_FD, which is edge-like: the loop re-reads ZMQ_EVENTS
 * after every turn, since any send or receive on a socket may consume the
 * fd's signal while messages are still queued (libzmq's documented
 * caveat for ZMQ_FD).
 *
 * Handlers may add and remove fds, sockets and timers, including their own:
 * removals are deferred until the turn ends (redis's ae does the same), so
 * a handler never runs on freed state. */
#ifndef ZCD_LOOP_H
#define ZCD_LOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct loop loop_t;
typedef struct loop_watch loop_watch_t;
typedef struct loop_timer loop_timer_t;

/* events: EPOLLIN | EPOLLOUT ... as given to epoll; revents passed back. */
typedef void (*loop_fd_fn) (loop_t *loop, int fd, uint32_t revents, void *arg);
/* A ZeroMQ socket has input (ZMQ_POLLIN). */
typedef void (*loop_zsock_fn) (loop_t *loop, void *zsock, void *arg);
typedef void (*loop_timer_fn) (loop_t *loop, void *arg);
typedef void (*loop_hook_fn) (loop_t *loop, void *arg);

loop_t *loop_new (void);
void loop_destroy (loop_t **loop);

/* Watch a plain fd.  The loop does not own the fd: remove the watch before
 * closing it.  Returns NULL on failure (errno set). */
loop_watch_t *loop_add_fd (loop_t *self, int fd, uint32_t events, loop_fd_fn fn, void *arg);
/* Watch a libzmq socket for input. */
loop_watch_t *loop_add_zsock (loop_t *self, void *zsock, loop_zsock_fn fn, void *arg);
/* Stop watching; safe from inside any handler, including the watch's own. */
void loop_remove (loop_t *self, loop_watch_t *watch);

/* One-shot timer after delay_ms (monotonic).  Timers live in a binary heap,
 * so thousands of per-request deadlines cost O(log n) each, not one
 * zloop-style scan per turn. */
loop_timer_t *loop_timer_add (loop_t *self, uint64_t delay_ms, loop_timer_fn fn, void *arg);
/* Cancel a pending timer; NULL is fine.  Must not be called on a timer that
 * already fired (its handle is gone then). */
void loop_timer_cancel (loop_t *self, loop_timer_t *timer);

/* Runs once per turn after the handlers and before the loop sleeps: where the
 * event log is flushed and replies leave, batched per turn. */
void loop_set_before_sleep (loop_t *self, loop_hook_fn fn, void *arg);
/* Ask the loop to run `fn` in this turn's before-sleep phase (before the
 * hook above) or, when called from there, in the next turn without sleeping.
 * Used for actor mailboxes that have input queued. */
void loop_defer (loop_t *self, loop_hook_fn fn, void *arg);

/* Run until loop_stop.  Returns 0, or -1 if epoll failed. */
int loop_run (loop_t *self);
void loop_stop (loop_t *self);
uint64_t loop_turns (const loop_t *self);

#endif
