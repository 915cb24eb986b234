#include "core/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <czmq.h>
#include <zmq.h>

#include "core/fsutil.h"
#include "core/log.h"

struct loop_watch
{
  int fd;
  void *zsock; /* NULL for a plain fd */
  loop_fd_fn fd_fn;
  loop_zsock_fn zsock_fn;
  void *arg;
  bool dead;
  bool pending;       /* a zsock found readable before the last sleep: handled this turn */
  void *all_handle;   /* in `all` while live */
  void *zsock_handle; /* in `zsocks` while live (a zsock watch) */
};

struct loop_timer
{
  uint64_t due_ms;
  uint64_t order; /* ties fire in the order they were added */
  size_t heap_index;
  loop_timer_fn fn;
  void *arg;
};

typedef struct
{
  loop_hook_fn fn;
  void *arg;
} deferred_t;

struct loop
{
  int epfd;
  bool stopping;
  uint64_t turns;
  zlistx_t *zsocks;    /* live zsock watches, newest first, re-checked every turn */
  zlistx_t *all;       /* every live watch, so none outlives the loop */
  zlistx_t *graveyard; /* removed this turn, freed when it ends */
  loop_timer_t **heap;
  size_t heap_len, heap_cap;
  uint64_t timer_order;
  deferred_t *deferred;
  size_t deferred_len, deferred_cap;
  loop_hook_fn before_sleep;
  void *before_sleep_arg;
};

static void
s_watch_free (void **item)
{
  free (*item);
  *item = NULL;
}

loop_t *
loop_new (void)
{
  loop_t *self = calloc (1, sizeof *self);
  if (self == NULL)
    return NULL;
  self->zsocks = zlistx_new ();
  self->all = zlistx_new ();
  self->graveyard = zlistx_new ();
  self->epfd = epoll_create1 (EPOLL_CLOEXEC);
  if (self->epfd < 0 || !self->zsocks || !self->all || !self->graveyard)
    {
      if (self->epfd >= 0)
        close (self->epfd);
      zlistx_destroy (&self->zsocks);
      zlistx_destroy (&self->all);
      zlistx_destroy (&self->graveyard);
      free (self);
      return NULL;
    }
  zlistx_set_destructor (self->graveyard, s_watch_free);
  return self;
}

void
loop_destroy (loop_t **loop)
{
  if (loop == NULL || *loop == NULL)
    return;
  loop_t *self = *loop;
  for (loop_watch_t *w; (w = zlistx_first (self->all));)
    loop_remove (self, w);
  zlistx_destroy (&self->zsocks);
  zlistx_destroy (&self->all);
  zlistx_destroy (&self->graveyard);
  for (size_t i = 0; i < self->heap_len; i++)
    free (self->heap[i]);
  free (self->heap);
  free (self->deferred);
  close (self->epfd);
  free (self);
  *loop = NULL;
}

static loop_watch_t *
s_watch_new (loop_t *self, int fd, uint32_t events, void *arg)
{
  loop_watch_t *w = calloc (1, sizeof *w);
  if (w == NULL)
    return NULL;
  w->fd = fd;
  w->arg = arg;
  struct epoll_event ev = { .events = events, .data.ptr = w };
  if (epoll_ctl (self->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
    {
      int saved = errno;
      free (w);
      errno = saved;
      return NULL;
    }
  w->all_handle = zlistx_add_start (self->all, w);
  return w;
}

loop_watch_t *
loop_add_fd (loop_t *self, int fd, uint32_t events, loop_fd_fn fn, void *arg)
{
  loop_watch_t *w = s_watch_new (self, fd, events, arg);
  if (w)
    w->fd_fn = fn;
  return w;
}

loop_watch_t *
loop_add_zsock (loop_t *self, void *zsock, loop_zsock_fn fn, void *arg)
{
  int fd;
  size_t size = sizeof fd;
  if (zmq_getsockopt (zsock, ZMQ_FD, &fd, &size) < 0)
    return NULL;
  loop_watch_t *w = s_watch_new (self, fd, EPOLLIN, arg);
  if (w == NULL)
    return NULL;
  w->zsock = zsock;
  w->zsock_fn = fn;
  w->zsock_handle = zlistx_add_start (self->zsocks, w);
  return w;
}

void
loop_remove (loop_t *self, loop_watch_t *watch)
{
  if (watch == NULL || watch->dead)
    return;
  watch->dead = true;
  epoll_ctl (self->epfd, EPOLL_CTL_DEL, watch->fd, NULL);
  zlistx_detach (self->all, watch->all_handle);
  if (watch->zsock)
    zlistx_detach (self->zsocks, watch->zsock_handle);
  /* An epoll event of this turn may still point at it (s_dispatch). */
  zlistx_add_end (self->graveyard, watch);
}

/* ---- timers: a binary min-heap on (due, order) ---- */

static bool
s_timer_before (const loop_timer_t *a, const loop_timer_t *b)
{
  return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->order < b->order);
}

static void
s_heap_swap (loop_t *self, size_t i, size_t j)
{
  loop_timer_t *t = self->heap[i];
  self->heap[i] = self->heap[j];
  self->heap[j] = t;
  self->heap[i]->heap_index = i;
  self->heap[j]->heap_index = j;
}

static void
s_heap_up (loop_t *self, size_t i)
{
  while (i > 0)
    {
      size_t parent = (i - 1) / 2;
      if (!s_timer_before (self->heap[i], self->heap[parent]))
        break;
      s_heap_swap (self, i, parent);
      i = parent;
    }
}

static void
s_heap_down (loop_t *self, size_t i)
{
  for (;;)
    {
      size_t left = 2 * i + 1, right = left + 1, best = i;
      if (left < self->heap_len && s_timer_before (self->heap[left], self->heap[best]))
        best = left;
      if (right < self->heap_len && s_timer_before (self->heap[right], self->heap[best]))
        best = right;
      if (best == i)
        return;
      s_heap_swap (self, i, best);
      i = best;
    }
}

static void
s_heap_remove_at (loop_t *self, size_t i)
{
  self->heap_len--;
  if (i != self->heap_len)
    {
      self->heap[i] = self->heap[self->heap_len];
      self->heap[i]->heap_index = i;
      s_heap_down (self, i);
      s_heap_up (self, i);
    }
}

loop_timer_t *
loop_timer_add (loop_t *self, uint64_t delay_ms, loop_timer_fn fn, void *arg)
{
  if (self->heap_len == self->heap_cap)
    {
      size_t cap = self->heap_cap ? self->heap_cap * 2 : 64;
      loop_timer_t **grown = realloc (self->heap, cap * sizeof *grown);
      if (grown == NULL)
        return NULL;
      self->heap = grown;
      self->heap_cap = cap;
    }
  loop_timer_t *t = calloc (1, sizeof *t);
  if (t == NULL)
    return NULL;
  t->due_ms = zcd_mono_ms () + delay_ms;
  t->order = self->timer_order++;
  t->fn = fn;
  t->arg = arg;
  t->heap_index = self->heap_len;
  self->heap[self->heap_len++] = t;
  s_heap_up (self, t->heap_index);
  return t;
}

void
loop_timer_cancel (loop_t *self, loop_timer_t *timer)
{
  if (timer == NULL)
    return;
  s_heap_remove_at (self, timer->heap_index);
  free (timer);
}

static void
s_fire_timers (loop_t *self)
{
  uint64_t now = zcd_mono_ms ();
  /* Timers added by these handlers wait for the next turn: a zero-delay
   * timer that re-arms itself would otherwise fire until the clock moves.
   * A new root that is not ours to fire means nothing older is due either,
   * since it sorts first with a due time of at least `now`. */
  uint64_t first_new = self->timer_order;
  while (self->heap_len > 0 && self->heap[0]->due_ms <= now
         && self->heap[0]->order < first_new)
    {
      loop_timer_t *t = self->heap[0];
      s_heap_remove_at (self, 0);
      loop_timer_fn fn = t->fn;
      void *arg = t->arg;
      free (t);
      fn (self, arg);
    }
}

/* ---- deferred work and the turn ---- */

void
loop_defer (loop_t *self, loop_hook_fn fn, void *arg)
{
  if (self->deferred_len == self->deferred_cap)
    {
      size_t cap = self->deferred_cap ? self->deferred_cap * 2 : 64;
      deferred_t *grown = realloc (self->deferred, cap * sizeof *grown);
      if (grown == NULL)
        abort (); /* out of memory: nothing sensible is left to do */
      self->deferred = grown;
      self->deferred_cap = cap;
    }
  self->deferred[self->deferred_len++] = (deferred_t){ fn, arg };
}

static void
s_run_deferred (loop_t *self)
{
  /* Work deferred while this runs waits for the next turn, so a chatty pair
   * of actors cannot starve the fds. */
  size_t n = self->deferred_len;
  if (n == 0)
    return;
  deferred_t *batch = malloc (n * sizeof *batch);
  if (batch == NULL)
    abort ();
  memcpy (batch, self->deferred, n * sizeof *batch);
  self->deferred_len = 0;
  for (size_t i = 0; i < n; i++)
    batch[i].fn (self, batch[i].arg);
  free (batch);
}

void
loop_set_before_sleep (loop_t *self, loop_hook_fn fn, void *arg)
{
  self->before_sleep = fn;
  self->before_sleep_arg = arg;
}

static bool
s_zsock_readable (void *zsock)
{
  uint32_t events = 0;
  size_t size = sizeof events;
  if (zmq_getsockopt (zsock, ZMQ_EVENTS, &events, &size) < 0)
    return false;
  return (events & ZMQ_POLLIN) != 0;
}

/* A ZeroMQ socket's fd signals only a change: input that arrived while
 * the socket was busy sending (its commands processed then) leaves no
 * signal.  So before every sleep each socket is asked (ZMQ_EVENTS, which
 * costs libzmq a poll and a getpid); one with input is marked and served
 * here, in the turn the sleep (of 0 ms) ends, rather than asked twice per
 * turn. */
static void
s_serve_pending_zsocks (loop_t *self)
{
  /* A handler may remove watches (detaching at the cursor leaves it on the
   * previous one) or add some (the cursor goes back to the head: the ones
   * served already are no longer pending). */
  for (loop_watch_t *w = zlistx_first (self->zsocks); w; w = zlistx_next (self->zsocks))
    if (w->pending)
      {
        w->pending = false;
        if (s_zsock_readable (w->zsock))
          w->zsock_fn (self, w->zsock, w->arg);
      }
}

static int
s_next_timeout (loop_t *self)
{
  bool zsock_input = false;
  for (loop_watch_t *w = zlistx_first (self->zsocks); w; w = zlistx_next (self->zsocks))
    if (w->pending || s_zsock_readable (w->zsock))
      w->pending = zsock_input = true;
  if (zsock_input || self->deferred_len > 0)
    return 0;
  if (self->heap_len == 0)
    return 1000;
  uint64_t now = zcd_mono_ms ();
  uint64_t due = self->heap[0]->due_ms;
  if (due <= now)
    return 0;
  uint64_t wait = due - now;
  return wait > 1000 ? 1000 : (int) wait;
}

static void
s_dispatch (loop_t *self, struct epoll_event *events, int n)
{
  for (int i = 0; i < n; i++)
    {
      loop_watch_t *w = events[i].data.ptr;
      if (w->dead)
        continue;
      if (w->zsock)
        {
          if (s_zsock_readable (w->zsock))
            w->zsock_fn (self, w->zsock, w->arg);
        }
      else
        w->fd_fn (self, w->fd, events[i].events, w->arg);
    }
}

int
loop_run (loop_t *self)
{
  struct epoll_event events[256];
  self->stopping = false;
  while (!self->stopping)
    {
      self->turns++;
      int n = epoll_wait (self->epfd, events, 256, s_next_timeout (self));
      if (n < 0 && errno != EINTR)
        {
          log_error ("epoll_wait: %s", strerror (errno));
          return -1;
        }
      if (n > 0)
        s_dispatch (self, events, n);
      s_fire_timers (self);
      s_run_deferred (self);
      s_serve_pending_zsocks (self);
      if (self->before_sleep)
        self->before_sleep (self, self->before_sleep_arg);
      zlistx_purge (self->graveyard);
    }
  return 0;
}

void
loop_stop (loop_t *self)
{
  self->stopping = true;
}

uint64_t
loop_turns (const loop_t *self)
{
  return self->turns;
}
