/* io_uring driven from the one event loop (issue 9: the loop thread never
 * waits on the disk).  Work that blocks in the kernel (fdatasync, fsync,
 * rename of durable data) is handed to the ring: io_uring runs it on its own
 * kernel workers and posts a completion, the ring's eventfd wakes the
 * loop's epoll, and the chain's callback runs in the loop thread like any
 * other handler.  No thread of ours, no lock.
 *
 * Work is submitted as chains: up to URING_CHAIN_MAX operations linked with
 * IOSQE_IO_LINK, run in order; when one fails (for a read or a write, also
 * when it is short) the rest are cancelled (-ECANCELED).  The callback runs
 * once, when every operation of the chain has completed, with each one's
 * result (cqe->res: >= 0, or -errno).
 *
 * A chain and every buffer and path its operations name belong to the
 * caller until its callback ran: the kernel may read them from a worker at
 * any time before that. */
#ifndef ZCD_URING_H
#define ZCD_URING_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "core/loop.h"

/* Chains fit in the low bits of an 8-aligned pointer (user_data). */
#define URING_CHAIN_MAX 8

typedef struct zcd_uring zcd_uring_t;
typedef struct zcd_uring_chain zcd_uring_chain_t;

typedef void (*zcd_uring_done_fn) (zcd_uring_chain_t *chain, void *arg);

/* Embedded in the caller's state; filled by zcd_uring_chain_begin. */
struct zcd_uring_chain
{
  zcd_uring_done_fn fn;
  void *arg;
  int n;       /* operations in the chain */
  int pending; /* not completed yet */
  int res[URING_CHAIN_MAX];
  struct io_uring_sqe *last; /* while being built: the one to link from */
} __attribute__ ((aligned (8)));

/* A ring of `entries` (at least URING_CHAIN_MAX) submission slots whose
 * completions the loop reads.
 * NULL with *err when the kernel refuses (io_uring missing, disabled by
 * sysctl kernel.io_uring_disabled, or blocked by a seccomp profile). */
zcd_uring_t *zcd_uring_new (loop_t *loop, unsigned entries, zcd_error_t **err);
/* Waits for the chains still in flight (without running their callbacks:
 * their owners are going away too), then closes the ring. */
void zcd_uring_destroy (zcd_uring_t **self);

/* Start building a chain; fn(chain, arg) runs once it completed. */
void zcd_uring_chain_begin (zcd_uring_chain_t *chain, zcd_uring_done_fn fn, void *arg);
/* The next operation of the chain, linked to the one before; fill it with
 * an io_uring_prep_* call (not io_uring_sqe_set_data: user_data is ours).
 * NULL when the chain is full or, at its first operation, the ring has no
 * room (then the chain holds nothing yet: give up on it). */
struct io_uring_sqe *zcd_uring_chain_add (zcd_uring_t *self, zcd_uring_chain_t *chain);
/* Hand the chain to the kernel.  From here fn will run: a submission the
 * kernel refuses (no memory) is tried again on a timer, the operations
 * being in the submission ring already.  -1 (with *err) only for an empty
 * chain. */
int zcd_uring_chain_submit (zcd_uring_t *self, zcd_uring_chain_t *chain, zcd_error_t **err);

/* Chains submitted whose callback has not run yet. */
size_t zcd_uring_in_flight (const zcd_uring_t *self);
/* Block until a completion arrives (at once when nothing is in flight),
 * then run the callbacks of what completed.  Shutdown and tests only: this
 * waits on the disk.  Callers loop on their own condition. */
void zcd_uring_wait (zcd_uring_t *self);
/* Run the callbacks of what has completed, without waiting (the loop does
 * this when the eventfd fires; tests without a loop call it). */
void zcd_uring_reap (zcd_uring_t *self);

#endif
