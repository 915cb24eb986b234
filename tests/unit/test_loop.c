/* core/loop: fd watches, removal from handlers, the timer heap (order,
 * ties, cancellation, thousands of timers), deferred work, the before-sleep
 * hook, and ZeroMQ sockets through their edge-like ZMQ_FD. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include "core/fsutil.h"
#include "core/loop.h"

/* Every run is bounded: a guard timer stops the loop and flags the test as
 * stuck, instead of the test hanging until the runner's limit. */
typedef struct
{
  loop_timer_t *timer;
  bool fired;
} guard_t;

static void
s_guard_fired (loop_t *loop, void *arg)
{
  guard_t *g = arg;
  g->timer = NULL;
  g->fired = true;
  loop_stop (loop);
}

static void
s_run_guarded (loop_t *loop, uint64_t limit_ms)
{
  guard_t g = { 0 };
  g.timer = loop_timer_add (loop, limit_ms, s_guard_fired, &g);
  assert_non_null (g.timer);
  assert_int_equal (loop_run (loop), 0);
  assert_false (g.fired);
  loop_timer_cancel (loop, g.timer);
}

static int
s_eventfd_ready (void)
{
  int fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  assert_true (fd >= 0);
  uint64_t one = 1;
  assert_int_equal (write (fd, &one, sizeof one), sizeof one);
  return fd;
}

/* ---- fd watches ---- */

typedef struct
{
  int fd;
  int calls;
  uint32_t revents;
  uint64_t value;
} fd_probe_t;

static void
s_read_and_stop (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  fd_probe_t *p = arg;
  p->calls++;
  p->revents = revents;
  assert_int_equal (fd, p->fd);
  assert_int_equal (read (fd, &p->value, sizeof p->value), sizeof p->value);
  loop_stop (loop);
}

static void
test_fd_watch_fires (void **state)
{
  loop_t *loop = loop_new ();
  assert_non_null (loop);
  int efd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  assert_true (efd >= 0);
  fd_probe_t probe = { .fd = efd };
  loop_watch_t *w = loop_add_fd (loop, efd, EPOLLIN, s_read_and_stop, &probe);
  assert_non_null (w);
  uint64_t seven = 7;
  assert_int_equal (write (efd, &seven, sizeof seven), sizeof seven);
  s_run_guarded (loop, 5000);
  assert_int_equal (probe.calls, 1);
  assert_true (probe.revents & EPOLLIN);
  assert_int_equal (probe.value, 7);
  loop_remove (loop, w);
  close (efd);
  loop_destroy (&loop);
  assert_null (loop);
}

static void
test_add_fd_twice_fails (void **state)
{
  loop_t *loop = loop_new ();
  int efd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  fd_probe_t probe = { .fd = efd };
  loop_watch_t *w = loop_add_fd (loop, efd, EPOLLIN, s_read_and_stop, &probe);
  assert_non_null (w);
  assert_null (loop_add_fd (loop, efd, EPOLLIN, s_read_and_stop, &probe));
  loop_remove (loop, w);
  close (efd);
  loop_destroy (&loop);
}

/* Level-triggered and never read: only the removal keeps it from firing
 * again on every turn. */
typedef struct
{
  loop_watch_t *watch;
  int calls;
} self_remover_t;

static void
s_remove_self (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  self_remover_t *r = arg;
  r->calls++;
  loop_remove (loop, r->watch);
  loop_remove (loop, r->watch); /* twice is harmless */
}

static void
s_nothing (loop_t *loop, void *arg)
{
}

/* Before-sleep hook: keeps the turns coming without sleeping (deferred work
 * pending means a zero timeout) and stops after *until turns. */
static void
s_stop_after_turns (loop_t *loop, void *arg)
{
  uint64_t *until = arg;
  if (loop_turns (loop) >= *until)
    loop_stop (loop);
  else
    loop_defer (loop, s_nothing, NULL);
}

static void
test_remove_self_in_handler (void **state)
{
  loop_t *loop = loop_new ();
  int efd = s_eventfd_ready ();
  self_remover_t r = { 0 };
  r.watch = loop_add_fd (loop, efd, EPOLLIN, s_remove_self, &r);
  assert_non_null (r.watch);
  uint64_t until = 5;
  loop_set_before_sleep (loop, s_stop_after_turns, &until);
  s_run_guarded (loop, 5000);
  assert_int_equal (loop_turns (loop), 5);
  assert_int_equal (r.calls, 1);
  close (efd);
  loop_destroy (&loop);
}

/* Two fds ready in the same epoll_wait batch: whichever handler runs first
 * removes the other watch and frees the other's state, so the other handler
 * running later in the turn would be a use after free (ASan/valgrind). */
typedef struct peer peer_t;
struct peer
{
  int fd;
  loop_watch_t *watch;
  peer_t **other; /* points at the other's slot, NULLed when freed */
  int *total_calls;
};

static void
s_remove_other (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  peer_t *me = arg;
  (*me->total_calls)++;
  peer_t *other = *me->other;
  if (other)
    {
      loop_remove (loop, other->watch);
      close (other->fd);
      *me->other = NULL;
      free (other);
    }
  uint64_t v;
  assert_int_equal (read (fd, &v, sizeof v), sizeof v);
}

static void
test_remove_other_in_same_turn (void **state)
{
  loop_t *loop = loop_new ();
  int total = 0;
  peer_t *a = calloc (1, sizeof *a), *b = calloc (1, sizeof *b);
  a->fd = s_eventfd_ready ();
  b->fd = s_eventfd_ready ();
  a->other = &b;
  b->other = &a;
  a->total_calls = b->total_calls = &total;
  a->watch = loop_add_fd (loop, a->fd, EPOLLIN, s_remove_other, a);
  b->watch = loop_add_fd (loop, b->fd, EPOLLIN, s_remove_other, b);
  uint64_t until = 3;
  loop_set_before_sleep (loop, s_stop_after_turns, &until);
  s_run_guarded (loop, 5000);
  assert_int_equal (total, 1);
  /* Exactly one survived; its watch is still live. */
  assert_true ((a == NULL) != (b == NULL));
  peer_t *left = a ? a : b;
  loop_remove (loop, left->watch);
  close (left->fd);
  free (left);
  loop_destroy (&loop);
}

/* ---- timers ---- */

typedef struct
{
  int order[64];
  int n;
} trace_t;

typedef struct
{
  trace_t *trace;
  int id;
  loop_timer_t **cancel; /* a timer to cancel when this one fires */
  bool stop;
} timer_probe_t;

static void
s_timer_record (loop_t *loop, void *arg)
{
  timer_probe_t *p = arg;
  p->trace->order[p->trace->n++] = p->id;
  if (p->cancel)
    {
      loop_timer_cancel (loop, *p->cancel);
      *p->cancel = NULL;
    }
  if (p->stop)
    loop_stop (loop);
}

static void
s_stop_at_seven (loop_t *loop, void *arg)
{
  trace_t *trace = arg;
  if (trace->n == 7)
    loop_stop (loop);
}

static void
test_timers_fire_in_order (void **state)
{
  loop_t *loop = loop_new ();
  trace_t trace = { 0 };
  /* Due times 20 ms apart: adding them (microseconds) cannot reorder them. */
  const uint64_t delays[] = { 60, 20, 40, 0, 20, 40, 0 };
  const int expected[] = { 3, 6, 1, 4, 2, 5, 0 };
  timer_probe_t probes[7];
  uint64_t start = zcd_mono_ms ();
  for (int i = 0; i < 7; i++)
    {
      probes[i] = (timer_probe_t){ .trace = &trace, .id = i };
      assert_non_null (loop_timer_add (loop, delays[i], s_timer_record, &probes[i]));
    }
  uint64_t added = zcd_mono_ms ();
  loop_set_before_sleep (loop, s_stop_at_seven, &trace);
  s_run_guarded (loop, 5000);
  assert_true (zcd_mono_ms () - start >= 60);
  assert_int_equal (trace.n, 7);
  if (added - start < 20)
    for (int i = 0; i < 7; i++)
      assert_int_equal (trace.order[i], expected[i]);
  else /* descheduled while adding: only equal delays keep a fixed order */
    print_message ("adding took %llu ms: order check skipped\n",
                   (unsigned long long) (added - start));
  loop_destroy (&loop);
}

static void
test_same_due_time_fires_in_insertion_order (void **state)
{
  loop_t *loop = loop_new ();
  trace_t trace = { 0 };
  timer_probe_t probes[50];
  for (int i = 0; i < 50; i++)
    {
      probes[i] = (timer_probe_t){ .trace = &trace, .id = i, .stop = i == 49 };
      assert_non_null (loop_timer_add (loop, 0, s_timer_record, &probes[i]));
    }
  s_run_guarded (loop, 5000);
  assert_int_equal (trace.n, 50);
  for (int i = 0; i < 50; i++)
    assert_int_equal (trace.order[i], i);
  loop_destroy (&loop);
}

static void
test_timer_cancel (void **state)
{
  loop_t *loop = loop_new ();
  trace_t trace = { 0 };
  timer_probe_t probes[6];
  loop_timer_t *timers[6];
  for (int i = 0; i < 6; i++)
    {
      probes[i] = (timer_probe_t){ .trace = &trace, .id = i, .stop = i == 5 };
      timers[i] = loop_timer_add (loop, (uint64_t) i * 5, s_timer_record, &probes[i]);
    }
  /* Cancelled before the run: the head, one in the middle, NULL. */
  loop_timer_cancel (loop, timers[0]);
  loop_timer_cancel (loop, timers[3]);
  loop_timer_cancel (loop, NULL);
  /* Timer 1 cancels timer 2 (later) and timer 4 cancels nothing. */
  probes[1].cancel = &timers[2];
  s_run_guarded (loop, 5000);
  assert_null (timers[2]);
  assert_int_equal (trace.n, 3);
  assert_int_equal (trace.order[0], 1);
  assert_int_equal (trace.order[1], 4);
  assert_int_equal (trace.order[2], 5);
  loop_destroy (&loop);
}

static void
test_timer_cancels_one_due_in_same_turn (void **state)
{
  /* Both are due when the turn fires timers: the first must still be able to
   * cancel the second, which sits in the heap's root position next. */
  loop_t *loop = loop_new ();
  trace_t trace = { 0 };
  timer_probe_t first = { .trace = &trace, .id = 1 };
  timer_probe_t second = { .trace = &trace, .id = 2 };
  timer_probe_t last = { .trace = &trace, .id = 3, .stop = true };
  loop_timer_t *t2;
  assert_non_null (loop_timer_add (loop, 0, s_timer_record, &first));
  t2 = loop_timer_add (loop, 0, s_timer_record, &second);
  assert_non_null (loop_timer_add (loop, 0, s_timer_record, &last));
  first.cancel = &t2;
  s_run_guarded (loop, 5000);
  assert_int_equal (trace.n, 2);
  assert_int_equal (trace.order[0], 1);
  assert_int_equal (trace.order[1], 3);
  loop_destroy (&loop);
}

#define MANY_TIMERS 5000

typedef struct many many_t;
typedef struct
{
  many_t *all;
  int index;
  /* The loop reads the clock itself: its due time lies in [lo, hi]. */
  uint64_t due_lo, due_hi;
} many_probe_t;

struct many
{
  many_probe_t probes[MANY_TIMERS];
  loop_timer_t *timers[MANY_TIMERS];
  int fired_order[MANY_TIMERS];
  int fired;
  int expected;
};

static void
s_many_fired (loop_t *loop, void *arg)
{
  many_probe_t *p = arg;
  many_t *m = p->all;
  assert_true (zcd_mono_ms () >= p->due_lo);
  m->timers[p->index] = NULL;
  m->fired_order[m->fired++] = p->index;
  if (m->fired == m->expected)
    loop_stop (loop);
}

static void
test_thousands_of_timers (void **state)
{
  loop_t *loop = loop_new ();
  many_t *m = calloc (1, sizeof *m);
  srand (42);
  for (int i = 0; i < MANY_TIMERS; i++)
    {
      uint64_t delay = (uint64_t) (rand () % 80);
      m->probes[i] = (many_probe_t){ .all = m, .index = i, .due_lo = zcd_mono_ms () + delay };
      m->timers[i] = loop_timer_add (loop, delay, s_many_fired, &m->probes[i]);
      m->probes[i].due_hi = zcd_mono_ms () + delay;
      assert_non_null (m->timers[i]);
    }
  /* Cancel every third from all over the heap. */
  m->expected = MANY_TIMERS;
  for (int i = 0; i < MANY_TIMERS; i += 3)
    {
      loop_timer_cancel (loop, m->timers[i]);
      m->timers[i] = NULL;
      m->expected--;
    }
  s_run_guarded (loop, 10000);
  assert_int_equal (m->fired, m->expected);
  for (int k = 0; k < m->fired; k++)
    {
      int i = m->fired_order[k];
      assert_true (i % 3 != 0);
      if (k > 0)
        {
          /* Sorted by (due time, insertion order), as far as the clock
           * readings around each add tell the due times. */
          const many_probe_t *prev = &m->probes[m->fired_order[k - 1]];
          const many_probe_t *cur = &m->probes[i];
          assert_true (prev->due_lo <= cur->due_hi);
          if (prev->due_lo == prev->due_hi && cur->due_lo == cur->due_hi
              && prev->due_lo == cur->due_lo)
            assert_true (prev->index < cur->index);
        }
    }
  free (m);
  loop_destroy (&loop);
}

/* A timer re-armed with no delay from its own handler waits for the next
 * turn, as deferred work does: otherwise it fires over and over within one
 * turn until the millisecond clock moves, while the fds wait. */
typedef struct
{
  int fires_this_turn;
  int most_in_one_turn;
  int turns_seen;
} rearm_probe_t;

static void
s_rearm (loop_t *loop, void *arg)
{
  rearm_probe_t *p = arg;
  p->fires_this_turn++;
  assert_non_null (loop_timer_add (loop, 0, s_rearm, p));
}

static void
s_rearm_hook (loop_t *loop, void *arg)
{
  rearm_probe_t *p = arg;
  if (p->fires_this_turn > p->most_in_one_turn)
    p->most_in_one_turn = p->fires_this_turn;
  p->fires_this_turn = 0;
  if (++p->turns_seen == 20)
    loop_stop (loop);
}

static void
test_timer_rearmed_from_handler_waits_a_turn (void **state)
{
  loop_t *loop = loop_new ();
  rearm_probe_t p = { 0 };
  loop_set_before_sleep (loop, s_rearm_hook, &p);
  assert_non_null (loop_timer_add (loop, 0, s_rearm, &p));
  s_run_guarded (loop, 5000);
  assert_int_equal (p.turns_seen, 20);
  assert_int_equal (p.most_in_one_turn, 1);
  loop_destroy (&loop);
}

static void
s_never (loop_t *loop, void *arg)
{
  fail_msg ("a timer freed by loop_destroy fired");
}

static void
test_destroy_with_pending_timers (void **state)
{
  /* Timers left pending are freed by loop_destroy (valgrind/ASan check). */
  loop_t *loop = loop_new ();
  for (int i = 0; i < 100; i++)
    assert_non_null (loop_timer_add (loop, 60000 + (uint64_t) i, s_never, NULL));
  loop_destroy (&loop);
}

/* ---- deferred work and the before-sleep hook ---- */

typedef struct
{
  uint64_t handler_turn;
  uint64_t deferred_turn;
  uint64_t hook_turn;
  uint64_t nested_turn;
  uint64_t nested_at_ms;
  uint64_t hook_at_ms;
  char sequence[16];
  int seq_len;
  int hook_calls;
} defer_probe_t;

static void
s_deferred_nested (loop_t *loop, void *arg)
{
  defer_probe_t *p = arg;
  p->nested_turn = loop_turns (loop);
  p->nested_at_ms = zcd_mono_ms ();
  p->sequence[p->seq_len++] = 'n';
  loop_stop (loop);
}

static void
s_deferred (loop_t *loop, void *arg)
{
  defer_probe_t *p = arg;
  p->deferred_turn = loop_turns (loop);
  p->sequence[p->seq_len++] = 'd';
}

static void
s_hook_defers (loop_t *loop, void *arg)
{
  defer_probe_t *p = arg;
  p->hook_calls++;
  if (p->deferred_turn == 0 || p->hook_turn != 0)
    return;
  p->hook_turn = loop_turns (loop);
  p->hook_at_ms = zcd_mono_ms ();
  p->sequence[p->seq_len++] = 'h';
  /* Deferred from the hook: next turn, without sleeping. */
  loop_defer (loop, s_deferred_nested, p);
}

static void
s_handler_defers (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  defer_probe_t *p = arg;
  uint64_t v;
  assert_int_equal (read (fd, &v, sizeof v), sizeof v);
  p->handler_turn = loop_turns (loop);
  p->sequence[p->seq_len++] = 'f';
  loop_defer (loop, s_deferred, p);
}

static void
test_defer_runs_in_same_turn (void **state)
{
  loop_t *loop = loop_new ();
  defer_probe_t p = { 0 };
  int efd = s_eventfd_ready ();
  loop_watch_t *w = loop_add_fd (loop, efd, EPOLLIN, s_handler_defers, &p);
  loop_set_before_sleep (loop, s_hook_defers, &p);
  s_run_guarded (loop, 5000);
  assert_string_equal (p.sequence, "fdhn");
  assert_true (p.handler_turn > 0);
  assert_int_equal (p.deferred_turn, p.handler_turn);
  assert_int_equal (p.hook_turn, p.handler_turn);
  assert_int_equal (p.nested_turn, p.hook_turn + 1);
  /* With nothing else pending the loop would sleep up to a second. */
  assert_true (p.nested_at_ms - p.hook_at_ms < 900);
  loop_remove (loop, w);
  close (efd);
  loop_destroy (&loop);
}

typedef struct
{
  int hook_calls;
  uint64_t last_turn;
  bool repeated_turn;
  int timer_ticks;
} turn_probe_t;

static void
s_count_hook (loop_t *loop, void *arg)
{
  turn_probe_t *p = arg;
  p->hook_calls++;
  if (loop_turns (loop) == p->last_turn)
    p->repeated_turn = true;
  p->last_turn = loop_turns (loop);
  if (p->hook_calls == 30)
    loop_stop (loop);
}

/* Several handlers per turn: a ticking timer plus deferred work each. */
static void
s_noop_deferred (loop_t *loop, void *arg)
{
}

static void
s_ticker (loop_t *loop, void *arg)
{
  turn_probe_t *p = arg;
  p->timer_ticks++;
  loop_defer (loop, s_noop_deferred, NULL);
  loop_defer (loop, s_noop_deferred, NULL);
  assert_non_null (loop_timer_add (loop, 0, s_ticker, p));
}

static void
test_before_sleep_once_per_turn (void **state)
{
  loop_t *loop = loop_new ();
  turn_probe_t p = { 0 };
  loop_set_before_sleep (loop, s_count_hook, &p);
  assert_non_null (loop_timer_add (loop, 0, s_ticker, &p));
  assert_non_null (loop_timer_add (loop, 0, s_ticker, &p));
  guard_t g = { 0 };
  g.timer = loop_timer_add (loop, 5000, s_guard_fired, &g);
  uint64_t turns_before = loop_turns (loop);
  assert_int_equal (loop_run (loop), 0);
  assert_false (g.fired);
  assert_int_equal (p.hook_calls, 30);
  assert_int_equal (loop_turns (loop) - turns_before, 30);
  assert_false (p.repeated_turn);
  assert_true (p.timer_ticks >= 30);
  /* Unset hook: runs no more. */
  loop_set_before_sleep (loop, NULL, NULL);
  loop_timer_cancel (loop, g.timer);
  loop_destroy (&loop); /* frees the pending tickers */
}

/* ---- ZeroMQ sockets ---- */

#define ZMSGS 1000
#define ZBURST 100

typedef struct
{
  void *tx, *rx;
  int sent;
  int received;
  bool out_of_order;
  bool one_per_call;
  int calls;
} zstream_t;

static void
s_burst (loop_t *loop, void *arg)
{
  zstream_t *z = arg;
  for (int i = 0; i < ZBURST && z->sent < ZMSGS; i++, z->sent++)
    assert_int_equal (zmq_send (z->tx, &z->sent, sizeof z->sent, ZMQ_DONTWAIT), sizeof z->sent);
  if (z->sent < ZMSGS)
    assert_non_null (loop_timer_add (loop, 1, s_burst, z));
}

static bool
s_recv_one (zstream_t *z)
{
  int v;
  if (zmq_recv (z->rx, &v, sizeof v, ZMQ_DONTWAIT) != sizeof v)
    return false;
  if (v != z->received)
    z->out_of_order = true;
  z->received++;
  return true;
}

static void
s_on_zinput (loop_t *loop, void *zsock, void *arg)
{
  zstream_t *z = arg;
  assert_ptr_equal (zsock, z->rx);
  z->calls++;
  if (z->one_per_call)
    s_recv_one (z);
  else
    while (s_recv_one (z))
      ;
  if (z->received == ZMSGS)
    loop_stop (loop);
}

static void
s_zpair (void *ctx, int type, void **a, void **b, const char *endpoint)
{
  *a = zmq_socket (ctx, type);
  *b = zmq_socket (ctx, type);
  assert_non_null (*a);
  assert_non_null (*b);
  int hwm = 0, linger = 0; /* the burst must never hit the HWM in this test */
  zmq_setsockopt (*a, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt (*b, ZMQ_RCVHWM, &hwm, sizeof hwm);
  zmq_setsockopt (*a, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt (*b, ZMQ_LINGER, &linger, sizeof linger);
  assert_int_equal (zmq_bind (*b, endpoint), 0);
  assert_int_equal (zmq_connect (*a, endpoint), 0);
}

static void
s_zstream_run (int type, bool one_per_call)
{
  void *ctx = zmq_ctx_new ();
  loop_t *loop = loop_new ();
  zstream_t z = { .one_per_call = one_per_call };
  s_zpair (ctx, type, &z.tx, &z.rx, "inproc://test-loop-stream");
  loop_watch_t *w = loop_add_zsock (loop, z.rx, s_on_zinput, &z);
  assert_non_null (w);
  assert_non_null (loop_timer_add (loop, 0, s_burst, &z));
  s_run_guarded (loop, 10000);
  assert_int_equal (z.sent, ZMSGS);
  assert_int_equal (z.received, ZMSGS);
  assert_false (z.out_of_order);
  if (one_per_call)
    assert_int_equal (z.calls, ZMSGS);
  loop_remove (loop, w);
  zmq_close (z.tx);
  zmq_close (z.rx);
  loop_destroy (&loop);
  zmq_ctx_term (ctx);
}

static void
test_zsock_pair_bursts_drained (void **state)
{
  s_zstream_run (ZMQ_PAIR, false);
}

static void
test_zsock_dealer_bursts_one_per_call (void **state)
{
  /* The handler leaves messages queued each time: ZMQ_FD will not signal
   * again for them, so only the loop's re-check of ZMQ_EVENTS gets them. */
  s_zstream_run (ZMQ_DEALER, true);
}

/* Ping-pong where each handler receives and sends on the same socket: the
 * send can swallow the fd's readiness for a reply already queued. */
typedef struct
{
  void *a, *b;
  int rounds;
  int a_calls, b_calls;
} pingpong_t;

static void
s_pong_side (loop_t *loop, void *zsock, void *arg)
{
  pingpong_t *p = arg;
  int v;
  while (zmq_recv (zsock, &v, sizeof v, ZMQ_DONTWAIT) == sizeof v)
    {
      if (zsock == p->a)
        {
          p->a_calls++;
          assert_int_equal (v, p->rounds);
          if (++p->rounds == ZMSGS)
            {
              loop_stop (loop);
              return;
            }
        }
      else
        p->b_calls++;
      v = zsock == p->a ? p->rounds : v;
      assert_int_equal (zmq_send (zsock, &v, sizeof v, ZMQ_DONTWAIT), sizeof v);
    }
}

static void
test_zsock_ping_pong (void **state)
{
  void *ctx = zmq_ctx_new ();
  loop_t *loop = loop_new ();
  pingpong_t p = { 0 };
  s_zpair (ctx, ZMQ_PAIR, &p.a, &p.b, "inproc://test-loop-pingpong");
  loop_watch_t *wa = loop_add_zsock (loop, p.a, s_pong_side, &p);
  loop_watch_t *wb = loop_add_zsock (loop, p.b, s_pong_side, &p);
  int zero = 0;
  assert_int_equal (zmq_send (p.a, &zero, sizeof zero, 0), sizeof zero);
  s_run_guarded (loop, 10000);
  assert_int_equal (p.rounds, ZMSGS);
  assert_int_equal (p.a_calls, ZMSGS);
  assert_int_equal (p.b_calls, ZMSGS);
  loop_remove (loop, wa);
  loop_remove (loop, wb);
  zmq_close (p.a);
  zmq_close (p.b);
  loop_destroy (&loop);
  zmq_ctx_term (ctx);
}

/* A zsock handler that removes its own watch and closes its socket: the
 * re-check phase must not touch either afterwards. */
typedef struct
{
  void *rx;
  loop_watch_t *watch;
  int calls;
} zcloser_t;

static void
s_zclose_self (loop_t *loop, void *zsock, void *arg)
{
  zcloser_t *c = arg;
  c->calls++;
  loop_remove (loop, c->watch);
  zmq_close (c->rx); /* two messages are still queued */
  c->rx = NULL;
}

static void
test_zsock_remove_and_close_in_handler (void **state)
{
  void *ctx = zmq_ctx_new ();
  loop_t *loop = loop_new ();
  void *tx;
  zcloser_t c = { 0 };
  s_zpair (ctx, ZMQ_PAIR, &tx, &c.rx, "inproc://test-loop-close");
  c.watch = loop_add_zsock (loop, c.rx, s_zclose_self, &c);
  for (int i = 0; i < 3; i++)
    assert_int_equal (zmq_send (tx, &i, sizeof i, 0), sizeof i);
  uint64_t until = 4;
  loop_set_before_sleep (loop, s_stop_after_turns, &until);
  s_run_guarded (loop, 5000);
  assert_int_equal (c.calls, 1);
  assert_null (c.rx);
  zmq_close (tx);
  loop_destroy (&loop);
  zmq_ctx_term (ctx);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_fd_watch_fires),
    cmocka_unit_test (test_add_fd_twice_fails),
    cmocka_unit_test (test_remove_self_in_handler),
    cmocka_unit_test (test_remove_other_in_same_turn),
    cmocka_unit_test (test_timers_fire_in_order),
    cmocka_unit_test (test_same_due_time_fires_in_insertion_order),
    cmocka_unit_test (test_timer_cancel),
    cmocka_unit_test (test_timer_cancels_one_due_in_same_turn),
    cmocka_unit_test (test_thousands_of_timers),
    cmocka_unit_test (test_timer_rearmed_from_handler_waits_a_turn),
    cmocka_unit_test (test_destroy_with_pending_timers),
    cmocka_unit_test (test_defer_runs_in_same_turn),
    cmocka_unit_test (test_before_sleep_once_per_turn),
    cmocka_unit_test (test_zsock_pair_bursts_drained),
    cmocka_unit_test (test_zsock_dealer_bursts_one_per_call),
    cmocka_unit_test (test_zsock_ping_pong),
    cmocka_unit_test (test_zsock_remove_and_close_in_handler),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
