/* io_uring driven from the event loop; see core/uring.h. */
#include "core/uring.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/log.h"

/* A submission the kernel refused (no memory for requests) is tried again
 * this soon: its operations already sit in the submission ring. */
#define SUBMIT_RETRY_MS 10

struct zcd_uring
{
  struct io_uring ring;
  loop_t *loop;
  int efd;
  loop_watch_t *watch;
  loop_timer_t *retry; /* a refused submission waits for this */
  size_t chains;       /* submitted, callback not run yet */
  size_t ops;          /* submitted operations without their completion */
  uint64_t refused;    /* submissions the kernel refused, in a row */
};

static void s_on_eventfd (loop_t *loop, int fd, uint32_t revents, void *arg);

zcd_uring_t *
zcd_uring_new (loop_t *loop, unsigned entries, zcd_error_t **err)
{
  zcd_uring_t *self = calloc (1, sizeof *self);
  if (self == NULL)
    {
      zcd_fail_errno (err, ENOMEM, "io_uring");
      return NULL;
    }
  self->loop = loop;
  self->efd = -1;
  int rc = io_uring_queue_init (entries, &self->ring, 0);
  if (rc < 0)
    {
      zcd_fail_errno (err, -rc, "io_uring_queue_init");
      free (self);
      return NULL;
    }
  self->efd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (self->efd < 0 || (rc = io_uring_register_eventfd (&self->ring, self->efd)) < 0)
    {
      zcd_fail_errno (err, self->efd < 0 ? errno : -rc, "io_uring eventfd");
      zcd_uring_destroy (&self);
      return NULL;
    }
  if (loop && (self->watch = loop_add_fd (loop, self->efd, EPOLLIN, s_on_eventfd, self)) == NULL)
    {
      zcd_fail_errno (err, errno, "io_uring eventfd: watch");
      zcd_uring_destroy (&self);
      return NULL;
    }
  return self;
}

void
zcd_uring_destroy (zcd_uring_t **pself)
{
  if (pself == NULL || *pself == NULL)
    return;
  zcd_uring_t *self = *pself;
  /* The kernel may still read buffers of operations in flight: wait for
   * each before the ring (and, after us, its owners' memory) goes.  Only
   * the count is touched, never a chain. */
  if (self->refused)
    io_uring_submit (&self->ring);
  while (self->ops > 0)
    {
      struct io_uring_cqe *cqe;
      int rc = io_uring_wait_cqe (&self->ring, &cqe);
      if (rc == -EINTR)
        continue;
      if (rc < 0)
        break;
      io_uring_cqe_seen (&self->ring, cqe);
      self->ops--;
    }
  if (self->loop)
    {
      loop_remove (self->loop, self->watch);
      loop_timer_cancel (self->loop, self->retry);
    }
  io_uring_queue_exit (&self->ring);
  if (self->efd >= 0)
    close (self->efd);
  free (self);
  *pself = NULL;
}

/* ---- submission ---- */

void
zcd_uring_chain_begin (zcd_uring_chain_t *chain, zcd_uring_done_fn fn, void *arg)
{
  memset (chain, 0, sizeof *chain);
  chain->fn = fn;
  chain->arg = arg;
}

struct io_uring_sqe *
zcd_uring_chain_add (zcd_uring_t *self, zcd_uring_chain_t *chain)
{
  if (chain->n == URING_CHAIN_MAX)
    return NULL;
  /* Room for the whole chain is made before its first operation: a chain
   * must never be cut in two by a submission in the middle. */
  if (chain->n == 0 && io_uring_sq_space_left (&self->ring) < URING_CHAIN_MAX)
    {
      io_uring_submit (&self->ring);
      if (io_uring_sq_space_left (&self->ring) < URING_CHAIN_MAX)
        return NULL;
    }
  struct io_uring_sqe *sqe = io_uring_get_sqe (&self->ring);
  if (sqe == NULL)
    return NULL;
  /* The one before is fully prepared by now (prep_* clears the flags). */
  if (chain->last)
    chain->last->flags |= IOSQE_IO_LINK;
  io_uring_prep_nop (sqe);
  io_uring_sqe_set_data64 (sqe, (uint64_t) (uintptr_t) chain | (uint64_t) chain->n);
  chain->last = sqe;
  chain->n++;
  chain->pending++;
  return sqe;
}

static void
s_submit (zcd_uring_t *self)
{
  int rc;
  do
    rc = io_uring_submit (&self->ring);
  while (rc == -EINTR);
  if (rc >= 0)
    {
      if (self->refused)
        log_info ("io_uring: submissions accepted again after %llu refusals",
                  (unsigned long long) self->refused);
      self->refused = 0;
      return;
    }
  if (self->refused++ == 0)
    log_warn ("io_uring: submission refused: %s (tried again every %d ms)", strerror (-rc),
              SUBMIT_RETRY_MS);
}

static void
s_retry_submit (loop_t *loop, void *arg)
{
  zcd_uring_t *self = arg;
  self->retry = NULL;
  s_submit (self);
  if (self->refused)
    self->retry = loop_timer_add (loop, SUBMIT_RETRY_MS, s_retry_submit, self);
}

int
zcd_uring_chain_submit (zcd_uring_t *self, zcd_uring_chain_t *chain, zcd_error_t **err)
{
  if (chain->n == 0)
    return zcd_fail (err, ZCD_E_INTERNAL, "io_uring: empty chain");
  chain->last = NULL;
  self->chains++;
  self->ops += (size_t) chain->n;
  /* Once in the submission ring the operations will run: a refusal by the
   * kernel only delays them (they are submitted again on a timer), so from
   * here the chain always completes. */
  s_submit (self);
  if (self->refused && self->loop && self->retry == NULL)
    self->retry = loop_timer_add (self->loop, SUBMIT_RETRY_MS, s_retry_submit, self);
  return 0;
}

/* ---- completion ---- */

static void
s_complete (zcd_uring_t *self, struct io_uring_cqe *cqe)
{
  uint64_t data = io_uring_cqe_get_data64 (cqe);
  zcd_uring_chain_t *chain = (zcd_uring_chain_t *) (uintptr_t) (data & ~(uint64_t) 7);
  int index = (int) (data & 7);
  int res = cqe->res;
  io_uring_cqe_seen (&self->ring, cqe);
  self->ops--;
  chain->res[index] = res;
  if (--chain->pending > 0)
    return;
  self->chains--;
  chain->fn (chain, chain->arg);
}

void
zcd_uring_reap (zcd_uring_t *self)
{
  struct io_uring_cqe *cqe;
  while (self->ops > 0 && io_uring_peek_cqe (&self->ring, &cqe) == 0)
    s_complete (self, cqe);
}

static void
s_on_eventfd (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  uint64_t count;
  while (read (fd, &count, sizeof count) < 0 && errno == EINTR)
    ;
  zcd_uring_reap (arg);
}

void
zcd_uring_wait (zcd_uring_t *self)
{
  if (self->ops == 0)
    return;
  if (self->refused)
    s_submit (self);
  struct io_uring_cqe *cqe;
  int rc;
  do
    rc = io_uring_wait_cqe (&self->ring, &cqe);
  while (rc == -EINTR);
  if (rc == 0)
    s_complete (self, cqe);
  zcd_uring_reap (self);
}

size_t
zcd_uring_in_flight (const zcd_uring_t *self)
{
  return self->chains;
}
