/* core/actor: 10,000 actors created and destroyed without leaking fds,
 * message order (streaming and ping-pong), destruction from handlers with
 * messages still queued, name reuse, a full mailbox (its overflow keeps
 * every message in order; past the bound, or with no overflow, ZCD_E_BUSY,
 * never a blocked send), a missing one (ZCD_E_NOT_FOUND), refused
 * messages counted, and state freed only after the handler returned.
 *
 * These test the runtime, not the daemon's messages: the test classes have
 * their own dispatch hook (a table indexed by a uint "type", as the
 * generated amsg_<actor>_dispatch is a switch) and the bodies are packed
 * here and sent with actor_send_raw. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "core/actor.h"
#include "core/fsutil.h"
#include "core/loop.h"
#include "core/mp.h"

#define MANY_ACTORS 10000
#define STREAM_MSGS 10000

typedef struct
{
  void *ctx;
  loop_t *loop;
  actor_system_t *sys;
  loop_timer_t *guard;
  bool guard_fired;
} fixture_t;

/* Per-actor test state, also the record the tests read afterwards (so it
 * is not freed by destroy_state: that only counts). */
typedef struct
{
  const char *label;
  uint64_t received;
  uint64_t next_expected;
  bool out_of_order;
  int destroyed;
  char last_from[64];
  uint64_t last_type;
  uint64_t stop_at; /* stop the loop after this many messages (0 = never) */
  bool *flag;       /* set when "die"/"kill" handling ran */
} probe_t;

static int s_count_fds (void)
{
  DIR *d = opendir ("/proc/self/fd");
  assert_non_null (d);
  int n = 0;
  for (struct dirent *de = readdir (d); de; de = readdir (d))
    if (de->d_name[0] != '.')
      n++;
  closedir (d);
  return n;
}

static void
s_raise_nofile (void)
{
  struct rlimit rl;
  assert_int_equal (getrlimit (RLIMIT_NOFILE, &rl), 0);
  rl.rlim_cur = rl.rlim_max;
  assert_int_equal (setrlimit (RLIMIT_NOFILE, &rl), 0);
}

static int
s_setup_hwm (void **state, int hwm)
{
  fixture_t *f = calloc (1, sizeof *f);
  f->ctx = zmq_ctx_new ();
  if (f->ctx == NULL || zmq_ctx_set (f->ctx, ZMQ_MAX_SOCKETS, 65535) < 0)
    return -1;
  f->loop = loop_new ();
  zcd_error_t *err = NULL;
  f->sys = actor_system_new (f->loop, f->ctx, hwm, &err);
  if (f->sys == NULL)
    {
      fprintf (stderr, "actor_system_new: %s\n", err->msg);
      zcd_error_free (&err);
      return -1;
    }
  *state = f;
  return 0;
}

static int
s_setup (void **state)
{
  return s_setup_hwm (state, 100000);
}

/* Mailboxes of 10 and no overflow: a full mailbox is busy at once. */
static int
s_setup_small_hwm (void **state)
{
  if (s_setup_hwm (state, 10) < 0)
    return -1;
  actor_system_set_overflow_limit (((fixture_t *)*state)->sys, 0);
  return 0;
}

/* Mailboxes of 10 and the default overflow (as many again). */
static int
s_setup_small_hwm_overflow (void **state)
{
  return s_setup_hwm (state, 10);
}

/* Mailboxes of 10 and room for everything in overflow. */
static int
s_setup_small_hwm_big_overflow (void **state)
{
  if (s_setup_hwm (state, 10) < 0)
    return -1;
  actor_system_set_overflow_limit (((fixture_t *)*state)->sys, 1000000);
  return 0;
}

/* The probes live in the tests' frames, gone by teardown time. */
static bool s_tearing_down;

static int
s_teardown (void **state)
{
  fixture_t *f = *state;
  s_tearing_down = true;
  actor_system_destroy (&f->sys);
  s_tearing_down = false;
  loop_destroy (&f->loop);
  zmq_ctx_term (f->ctx);
  free (f);
  return 0;
}

static void
s_guard_fired (loop_t *loop, void *arg)
{
  fixture_t *f = arg;
  f->guard = NULL;
  f->guard_fired = true;
  loop_stop (loop);
}

/* Run until a handler stops the loop, failing after limit_ms. */
static void
s_run (fixture_t *f, uint64_t limit_ms)
{
  f->guard_fired = false;
  f->guard = loop_timer_add (f->loop, limit_ms, s_guard_fired, f);
  assert_int_equal (loop_run (f->loop), 0);
  assert_false (f->guard_fired);
  loop_timer_cancel (f->loop, f->guard);
  f->guard = NULL;
}

static void
s_stop_now (loop_t *loop, void *arg)
{
  loop_stop (loop);
}

/* Run turns until deferred work (drains, reaping) is done: a zero timer
 * fires after this turn's deferred phase. */
static void
s_run_one_turn (fixture_t *f)
{
  assert_non_null (loop_timer_add (f->loop, 0, s_stop_now, NULL));
  s_run (f, 5000);
}

/* ---- the test classes: their own types, dispatch and bodies ---- */

typedef enum
{
  T_NUM = 1, /* {"n": uint} */
  T_DIE,     /* {} */
  T_KILL,    /* {"victim": str} */
  T_BALL,    /* {"n": uint} */
  T_FLOOD,   /* {"n": uint} */
  T_LIMIT,
  T_UNHANDLED = 99 /* no class has a handler for it */
} test_type_t;

typedef void (*test_handler_fn) (actor_t *self, const actor_msg_t *msg);

/* Indexed by test_type_t; NULL: not taken. */
typedef struct
{
  test_handler_fn on[T_LIMIT];
} test_handlers_t;

static int
s_test_dispatch (actor_t *self, const actor_msg_t *msg, const void *handlers, zcd_error_t **err)
{
  const test_handlers_t *h = handlers;
  if (msg->type_code >= T_LIMIT || h->on[msg->type_code] == NULL)
    return zcd_fail (err, ZCD_E_INTERNAL, "no handler for type %llu",
                     (unsigned long long)msg->type_code);
  h->on[msg->type_code](self, msg);
  return 0;
}

/* Send {"type": type} plus "n": n when n_key, or "victim": victim when
 * that is not NULL. */
static int
s_send_body (actor_system_t *sys, const char *from, const char *to, uint64_t type, bool n_key,
             uint64_t n, const char *victim, zcd_error_t **err)
{
  msgpack_sbuffer sb;
  msgpack_sbuffer_init (&sb);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 1 + (n_key ? 1 : 0) + (victim ? 1 : 0));
  mp_pack_kv_uint (&pk, "type", type);
  if (n_key)
    mp_pack_kv_uint (&pk, "n", n);
  if (victim)
    mp_pack_kv_str (&pk, "victim", victim);
  int rc = actor_send_raw (sys, from, to, sb.data, sb.size, err);
  msgpack_sbuffer_destroy (&sb);
  return rc;
}

static void
s_on_num (actor_t *self, const actor_msg_t *msg)
{
  probe_t *p = actor_state (self);
  uint64_t n = mp_get_uint (msg->body, "n", UINT64_MAX);
  if (n != p->next_expected)
    p->out_of_order = true;
  p->next_expected = n + 1;
  p->received++;
  snprintf (p->last_from, sizeof p->last_from, "%s", msg->from);
  p->last_type = msg->type_code;
  if (p->stop_at && p->received == p->stop_at)
    loop_stop (actor_loop (self));
}

static void
s_on_die (actor_t *self, const actor_msg_t *msg)
{
  probe_t *p = actor_state (self);
  p->received++;
  const char *name_before = actor_name (self);
  actor_destroy (self);
  /* The memory stays until the turn ends. */
  assert_string_equal (actor_name (self), name_before);
  actor_destroy (self); /* twice is harmless */
  if (p->flag)
    *p->flag = true;
}

static void
s_on_kill (actor_t *self, const actor_msg_t *msg)
{
  probe_t *p = actor_state (self);
  p->received++;
  char *victim = mp_get_strdup (msg->body, "victim");
  actor_t *other = actor_lookup (actor_system (self), victim);
  assert_non_null (other);
  actor_destroy (other);
  assert_null (actor_lookup (actor_system (self), victim));
  free (victim);
  if (p->flag)
    *p->flag = true;
}

static void
s_count_destroy (actor_t *self)
{
  probe_t *p = actor_state (self);
  if (!s_tearing_down)
    p->destroyed++;
}

static const test_handlers_t s_handlers = {
  .on = { [T_NUM] = s_on_num, [T_DIE] = s_on_die, [T_KILL] = s_on_kill },
};

static const actor_class_t s_class = {
  .kind = "test",
  .dispatch = s_test_dispatch,
  .handlers = &s_handlers,
  .destroy_state = s_count_destroy,
};

static actor_t *
s_actor (fixture_t *f, const char *name, probe_t *p)
{
  zcd_error_t *err = NULL;
  actor_t *a = actor_new (f->sys, &s_class, name, p, &err);
  if (a == NULL)
    fail_msg ("actor_new %s: %s", name, err->msg);
  return a;
}

static int
s_send_num (fixture_t *f, const char *from, const char *to, uint64_t n, zcd_error_t **err)
{
  return s_send_body (f->sys, from, to, T_NUM, true, n, NULL, err);
}

static void
s_send_num_ok (fixture_t *f, const char *from, const char *to, uint64_t n)
{
  zcd_error_t *err = NULL;
  if (s_send_num (f, from, to, n, &err) < 0)
    fail_msg ("send %s -> %s: %s", from, to, err->msg);
}

/* A body with a type and no fields. */
static void
s_send_type_ok (fixture_t *f, const char *to, test_type_t type)
{
  zcd_error_t *err = NULL;
  if (s_send_body (f->sys, "test", to, type, false, 0, NULL, &err) < 0)
    fail_msg ("send type %d to %s: %s", (int)type, to, err->msg);
}

/* ---- many actors ---- */

typedef struct
{
  int expected;
  int seen;
} fd_wait_t;

static void
s_check_fds (loop_t *loop, void *arg)
{
  fd_wait_t *w = arg;
  w->seen = s_count_fds ();
  if (w->seen == w->expected)
    loop_stop (loop);
  else
    assert_non_null (loop_timer_add (loop, 5, s_check_fds, w));
}

/* Closed mailboxes release their eventfd once the bus has acknowledged the
 * end of their pipe, a few turns after actor_destroy: keep the loop
 * running until the count is back. */
static void
s_wait_fds (fixture_t *f, int expected, uint64_t limit_ms)
{
  fd_wait_t w = { .expected = expected };
  assert_non_null (loop_timer_add (f->loop, 0, s_check_fds, &w));
  f->guard_fired = false;
  f->guard = loop_timer_add (f->loop, limit_ms, s_guard_fired, f);
  assert_int_equal (loop_run (f->loop), 0);
  if (f->guard_fired)
    fail_msg ("%d fds open, expected %d", w.seen, expected);
  loop_timer_cancel (f->loop, f->guard);
}

static void
test_ten_thousand_actors (void **state)
{
  fixture_t *f = *state;
  int fds_before = s_count_fds ();
  uint64_t t0 = zcd_mono_ms ();
  probe_t *probes = calloc (MANY_ACTORS, sizeof *probes);
  actor_t **actors = calloc (MANY_ACTORS, sizeof *actors);
  for (int i = 0; i < MANY_ACTORS; i++)
    {
      char name[32];
      snprintf (name, sizeof name, "c%d", i);
      actors[i] = s_actor (f, name, &probes[i]);
    }
  assert_int_equal (actor_system_count (f->sys), MANY_ACTORS);
  assert_true (s_count_fds () >= fds_before + MANY_ACTORS);
  /* Every mailbox works: one message each, the last stops the loop. */
  probe_t *last = &probes[MANY_ACTORS - 1];
  for (int i = 0; i < MANY_ACTORS; i++)
    {
      char name[32];
      snprintf (name, sizeof name, "c%d", i);
      s_send_num_ok (f, "test", name, 0);
    }
  last->stop_at = 1;
  s_run (f, 60000); /* generous: a loaded 2-core CI machine is slow here */
  for (int i = 0; i < MANY_ACTORS; i++)
    assert_int_equal (probes[i].received, 1);
  for (int i = 0; i < MANY_ACTORS; i++)
    actor_destroy (actors[i]);
  assert_int_equal (actor_system_count (f->sys), 0);
  s_run_one_turn (f); /* frees them */
  for (int i = 0; i < MANY_ACTORS; i++)
    assert_int_equal (probes[i].destroyed, 1);
  uint64_t t1 = zcd_mono_ms ();
  s_wait_fds (f, fds_before, 60000);
  print_message ("%d actors: %llu ms to create, message and destroy; %llu ms more until "
                 "their fds were released\n",
                 MANY_ACTORS, (unsigned long long) (t1 - t0),
                 (unsigned long long) (zcd_mono_ms () - t1));
  free (actors);
  free (probes);
}

static void
test_duplicate_and_missing_names (void **state)
{
  fixture_t *f = *state;
  probe_t p = { 0 };
  actor_t *a = s_actor (f, "only", &p);
  zcd_error_t *err = NULL;
  assert_null (actor_new (f->sys, &s_class, "only", &p, &err));
  assert_non_null (err);
  assert_int_equal (err->code, ZCD_E_ALREADY_EXISTS);
  zcd_error_free (&err);
  assert_ptr_equal (actor_lookup (f->sys, "only"), a);

  uint64_t failures = actor_system_send_failures (f->sys);
  assert_int_equal (s_send_num (f, "test", "nobody", 1, &err), -1);
  assert_non_null (err);
  assert_int_equal (err->code, ZCD_E_NOT_FOUND);
  assert_non_null (strstr (err->msg, "nobody"));
  zcd_error_free (&err);
  assert_int_equal (actor_system_send_failures (f->sys), failures + 1);
  assert_null (actor_lookup (f->sys, "nobody"));

  /* A type the class has no handler for reaches no handler: refused and
   * counted, and the actor goes on taking the types it has. */
  s_send_type_ok (f, "only", T_UNHANDLED);
  s_send_num_ok (f, "test", "only", 0);
  p.stop_at = 1;
  s_run (f, 5000);
  assert_int_equal (p.received, 1);
  assert_int_equal (p.last_type, T_NUM);
  actor_system_stats_t st;
  actor_system_get_stats (f->sys, &st);
  assert_int_equal (st.refused, 1);
  actor_destroy (a);
  s_run_one_turn (f);
  assert_int_equal (p.destroyed, 1);
}

/* ---- order ---- */

static void
test_stream_order (void **state)
{
  fixture_t *f = *state;
  probe_t a = { 0 }, b = { .stop_at = STREAM_MSGS };
  s_actor (f, "A", &a);
  s_actor (f, "B", &b);
  for (uint64_t i = 0; i < STREAM_MSGS; i++)
    s_send_num_ok (f, "A", "B", i);
  s_run (f, 30000);
  assert_int_equal (b.received, STREAM_MSGS);
  assert_false (b.out_of_order);
  assert_string_equal (b.last_from, "A");
  assert_int_equal (a.received, 0);
}

/* Flow control with no overflow: the sender backs off on ZCD_E_BUSY and
 * resumes on a later turn, so a small mailbox still gets every message, in
 * order. */
typedef struct
{
  fixture_t *f;
  uint64_t next;
  uint64_t busy;
} pacer_t;

static void
s_pace (loop_t *loop, void *arg)
{
  pacer_t *p = arg;
  while (p->next < STREAM_MSGS)
    {
      zcd_error_t *err = NULL;
      if (s_send_num (p->f, "A", "B", p->next, &err) < 0)
        {
          assert_int_equal (err->code, ZCD_E_BUSY);
          zcd_error_free (&err);
          p->busy++;
          break;
        }
      p->next++;
    }
  if (p->next < STREAM_MSGS)
    assert_non_null (loop_timer_add (loop, 0, s_pace, p));
}

static void
test_stream_order_through_small_mailbox (void **state)
{
  fixture_t *f = *state;
  probe_t a = { 0 }, b = { .stop_at = STREAM_MSGS };
  s_actor (f, "A", &a);
  s_actor (f, "B", &b);
  pacer_t pacer = { .f = f };
  assert_non_null (loop_timer_add (f->loop, 0, s_pace, &pacer));
  s_run (f, 30000);
  assert_int_equal (b.received, STREAM_MSGS);
  assert_false (b.out_of_order);
  assert_true (pacer.busy > 0);
  assert_int_equal (actor_system_send_failures (f->sys), pacer.busy);
}

typedef struct
{
  uint64_t rounds;
  uint64_t limit;
  bool wrong_sender;
} pingpong_t;

static void
s_on_ball (actor_t *self, const actor_msg_t *msg)
{
  pingpong_t *p = actor_state (self);
  uint64_t n = mp_get_uint (msg->body, "n", UINT64_MAX);
  bool is_a = strcmp (actor_name (self), "ping") == 0;
  if (strcmp (msg->from, is_a ? "pong" : "ping") != 0)
    p->wrong_sender = true;
  if (is_a)
    {
      if (n != p->rounds)
        p->wrong_sender = true;
      if (++p->rounds == p->limit)
        {
          loop_stop (actor_loop (self));
          return;
        }
      n = p->rounds;
    }
  assert_int_equal (
      s_send_body (actor_system (self), actor_name (self), msg->from, T_BALL, true, n, NULL, NULL),
      0);
}

static const test_handlers_t s_ball_handlers = { .on = { [T_BALL] = s_on_ball } };
static const actor_class_t s_ball_class = {
  .kind = "ball",
  .dispatch = s_test_dispatch,
  .handlers = &s_ball_handlers,
};

static void
test_ping_pong (void **state)
{
  fixture_t *f = *state;
  pingpong_t ping = { .limit = STREAM_MSGS }, pong = { 0 };
  assert_non_null (actor_new (f->sys, &s_ball_class, "ping", &ping, NULL));
  assert_non_null (actor_new (f->sys, &s_ball_class, "pong", &pong, NULL));
  assert_int_equal (s_send_body (f->sys, "ping", "pong", T_BALL, true, 0, NULL, NULL), 0);
  s_run (f, 30000);
  assert_int_equal (ping.rounds, STREAM_MSGS);
  assert_false (ping.wrong_sender);
  assert_false (pong.wrong_sender);
}

/* ---- destruction with messages queued ---- */

static void
test_destroy_self_in_handler (void **state)
{
  fixture_t *f = *state;
  bool died = false;
  probe_t p = { .flag = &died };
  s_actor (f, "mortal", &p);
  s_send_num_ok (f, "test", "mortal", 0);
  s_send_type_ok (f, "mortal", T_DIE);
  for (int i = 1; i <= 5; i++)
    s_send_num_ok (f, "test", "mortal", (uint64_t) i);
  s_run_one_turn (f);
  assert_true (died);
  assert_int_equal (p.received, 2); /* "num" 0 and "die"; nothing after */
  assert_int_equal (p.destroyed, 1);
  assert_null (actor_lookup (f->sys, "mortal"));
  assert_int_equal (actor_system_count (f->sys), 0);
  zcd_error_t *err = NULL;
  assert_int_equal (s_send_num (f, "test", "mortal", 9, &err), -1);
  assert_int_equal (err->code, ZCD_E_NOT_FOUND);
  zcd_error_free (&err);
  s_run_one_turn (f);
  assert_int_equal (p.received, 2);
}

static void
test_destroy_other_with_queued_messages (void **state)
{
  fixture_t *f = *state;
  bool killed = false;
  probe_t killer = { .flag = &killed }, victim = { 0 }, bystander = { 0 };
  s_actor (f, "killer", &killer);
  s_actor (f, "victim", &victim);
  s_actor (f, "bystander", &bystander);
  /* The killer is marked first, so it runs before the victim's drain. */
  assert_int_equal (s_send_body (f->sys, "test", "killer", T_KILL, false, 0, "victim", NULL), 0);
  for (uint64_t i = 0; i < 10; i++)
    {
      s_send_num_ok (f, "test", "victim", i);
      s_send_num_ok (f, "test", "bystander", i);
    }
  bystander.stop_at = 10;
  s_run (f, 5000);
  assert_true (killed);
  assert_int_equal (victim.received, 0);
  assert_int_equal (victim.destroyed, 1);
  assert_int_equal (bystander.received, 10);
  assert_false (bystander.out_of_order);
  assert_int_equal (actor_system_count (f->sys), 2);
}

static void
test_destroy_outside_loop_with_queued_messages (void **state)
{
  fixture_t *f = *state;
  probe_t p = { 0 };
  actor_t *a = s_actor (f, "queued", &p);
  for (uint64_t i = 0; i < 100; i++)
    s_send_num_ok (f, "test", "queued", i);
  actor_destroy (a); /* marked: freed by the drain, not the reaper */
  s_run_one_turn (f);
  assert_int_equal (p.received, 0);
  assert_int_equal (p.destroyed, 1);
}

static void
test_reused_name_gets_no_old_messages (void **state)
{
  fixture_t *f = *state;
  probe_t old = { 0 }, fresh = { 0 };
  actor_t *a = s_actor (f, "box", &old);
  for (uint64_t i = 100; i < 150; i++)
    s_send_num_ok (f, "old-sender", "box", i);
  actor_destroy (a);
  s_actor (f, "box", &fresh);
  s_send_num_ok (f, "new-sender", "box", 0);
  s_send_num_ok (f, "new-sender", "box", 1);
  fresh.stop_at = 2;
  s_run (f, 5000);
  /* A few more turns: nothing else may arrive. */
  s_run_one_turn (f);
  s_run_one_turn (f);
  assert_int_equal (old.received, 0);
  assert_int_equal (old.destroyed, 1);
  assert_int_equal (fresh.received, 2);
  assert_false (fresh.out_of_order);
  assert_string_equal (fresh.last_from, "new-sender");
  assert_int_equal (fresh.destroyed, 0);
}

/* ---- a full mailbox ---- */

static void
test_full_mailbox_is_busy_then_recovers (void **state)
{
  fixture_t *f = *state; /* mailbox_hwm 10 */
  probe_t p = { 0 };
  s_actor (f, "slow", &p);
  zcd_error_t *err = NULL;
  uint64_t accepted = 0;
  uint64_t t0 = zcd_mono_ms ();
  while (accepted < 1000 && s_send_num (f, "test", "slow", accepted, &err) == 0)
    accepted++;
  assert_true (zcd_mono_ms () - t0 < 2000); /* never blocked */
  assert_non_null (err);
  assert_int_equal (err->code, ZCD_E_BUSY);
  assert_non_null (strstr (err->msg, "slow"));
  zcd_error_free (&err);
  print_message ("mailbox_hwm 10: %llu sends accepted before ZCD_E_BUSY\n",
                 (unsigned long long) accepted);
  /* Bounded by the HWM (send and receive side of the inproc pipe). */
  assert_true (accepted >= 10);
  assert_true (accepted <= 40);
  /* Still busy while nothing drained. */
  assert_int_equal (s_send_num (f, "test", "slow", accepted, &err), -1);
  assert_int_equal (err->code, ZCD_E_BUSY);
  zcd_error_free (&err);
  assert_int_equal (actor_system_send_failures (f->sys), 2);

  p.stop_at = accepted;
  s_run (f, 5000);
  assert_int_equal (p.received, accepted);
  assert_false (p.out_of_order);

  /* Drained: the same number fits again, continuing the sequence. */
  for (uint64_t i = 0; i < accepted; i++)
    s_send_num_ok (f, "test", "slow", accepted + i);
  p.stop_at = 2 * accepted;
  s_run (f, 5000);
  assert_int_equal (p.received, 2 * accepted);
  assert_false (p.out_of_order);
}

/* ---- the overflow queue ---- */

static actor_system_stats_t
s_stats (fixture_t *f)
{
  actor_system_stats_t st;
  actor_system_get_stats (f->sys, &st);
  return st;
}

/* Far more sends than the mailbox holds, all at once and with no loop
 * turn between them: none is refused and none is lost, and they arrive in
 * the order they were sent, including those sent while older ones still
 * waited. */
static void
test_overflow_keeps_every_message_in_order (void **state)
{
  fixture_t *f = *state; /* mailbox_hwm 10, overflow 1,000,000 */
  probe_t p = { 0 };
  s_actor (f, "slow", &p);
  for (uint64_t i = 0; i < 2000; i++)
    s_send_num_ok (f, "test", "slow", i);
  actor_system_stats_t st = s_stats (f);
  assert_true (st.overflowed >= 2000 - 40); /* the mailbox took at most 40 */
  assert_int_equal (st.overflow_depth, st.overflowed);
  assert_int_equal (st.send_failures, 0);
  s_run_one_turn (f); /* a first batch drained: some room */
  assert_true (p.received > 0 && p.received < 2000);
  for (uint64_t i = 2000; i < 4000; i++)
    s_send_num_ok (f, "other", "slow", i);
  p.stop_at = 4000;
  s_run (f, 30000);
  assert_int_equal (p.received, 4000);
  assert_false (p.out_of_order);
  assert_string_equal (p.last_from, "other");
  st = s_stats (f);
  assert_int_equal (st.overflow_depth, 0);
  assert_true (st.overflow_peak >= 2000 - 40);
  assert_int_equal (st.send_failures, 0);
  assert_int_equal (st.sent, 4000);
}

/* A handler that floods its own mailbox (as a container posting itself
 * exits) loses nothing either. */
static void
s_on_flood (actor_t *self, const actor_msg_t *msg)
{
  probe_t *p = actor_state (self);
  uint64_t n = mp_get_uint (msg->body, "n", UINT64_MAX);
  if (n != p->next_expected)
    p->out_of_order = true;
  p->next_expected = n + 1;
  p->received++;
  if (n == 0)
    for (uint64_t i = 1; i < 500; i++)
      assert_int_equal (s_send_body (actor_system (self), actor_name (self), actor_name (self),
                                     T_FLOOD, true, i, NULL, NULL),
                        0);
  if (p->received == 500)
    loop_stop (actor_loop (self));
}

static const test_handlers_t s_flood_handlers = { .on = { [T_FLOOD] = s_on_flood } };
static const actor_class_t s_flood_class = {
  .kind = "flood",
  .dispatch = s_test_dispatch,
  .handlers = &s_flood_handlers,
};

static void
test_overflow_from_own_handler (void **state)
{
  fixture_t *f = *state; /* mailbox_hwm 10, overflow 1,000,000 */
  probe_t p = { 0 };
  assert_non_null (actor_new (f->sys, &s_flood_class, "self-flood", &p, NULL));
  assert_int_equal (s_send_body (f->sys, "test", "self-flood", T_FLOOD, true, 0, NULL, NULL), 0);
  s_run (f, 30000);
  assert_int_equal (p.received, 500);
  assert_false (p.out_of_order);
  assert_true (s_stats (f).overflowed > 0);
  assert_int_equal (s_stats (f).overflow_depth, 0);
}

/* Past the overflow bound a send is ZCD_E_BUSY and counted; what was
 * accepted still arrives, in order, and the mailbox takes sends again
 * once drained. */
static void
test_overflow_is_bounded (void **state)
{
  fixture_t *f = *state; /* mailbox_hwm 10, overflow 10 */
  probe_t p = { 0 };
  s_actor (f, "slow", &p);
  zcd_error_t *err = NULL;
  uint64_t accepted = 0;
  while (accepted < 1000 && s_send_num (f, "test", "slow", accepted, &err) == 0)
    accepted++;
  assert_non_null (err);
  assert_int_equal (err->code, ZCD_E_BUSY);
  assert_non_null (strstr (err->msg, "slow"));
  zcd_error_free (&err);
  print_message ("mailbox_hwm 10, overflow 10: %llu sends accepted before ZCD_E_BUSY\n",
                 (unsigned long long)accepted);
  assert_true (accepted >= 10 + 10);
  assert_true (accepted <= 40 + 10);
  actor_system_stats_t st = s_stats (f);
  assert_int_equal (st.overflow_depth, 10);
  assert_int_equal (st.send_failures, 1);
  /* A send with no err is refused the same way, and counted. */
  assert_int_equal (s_send_num (f, "test", "slow", accepted, NULL), -1);
  assert_int_equal (actor_system_send_failures (f->sys), 2);

  p.stop_at = accepted;
  s_run (f, 5000);
  assert_int_equal (p.received, accepted);
  assert_false (p.out_of_order);
  assert_int_equal (s_stats (f).overflow_depth, 0);
  for (uint64_t i = 0; i < accepted; i++)
    s_send_num_ok (f, "test", "slow", accepted + i);
  p.stop_at = 2 * accepted;
  s_run (f, 5000);
  assert_int_equal (p.received, 2 * accepted);
  assert_false (p.out_of_order);
}

static void
test_overflow_goes_with_its_actor (void **state)
{
  fixture_t *f = *state; /* mailbox_hwm 10, overflow 1,000,000 */
  probe_t p = { 0 };
  actor_t *a = s_actor (f, "doomed", &p);
  for (uint64_t i = 0; i < 100; i++)
    s_send_num_ok (f, "test", "doomed", i);
  assert_true (s_stats (f).overflow_depth > 0);
  actor_destroy (a);
  assert_int_equal (s_stats (f).overflow_depth, 0);
  s_run_one_turn (f);
  assert_int_equal (p.received, 0);
  assert_int_equal (p.destroyed, 1);
}

/* ---- refused messages ---- */

/* A class with no dispatch takes nothing. */
static const actor_class_t s_mute_class = { .kind = "mute" };

/* Bodies the runtime refuses before any handler runs. */
#define BODY(literal) { literal, sizeof literal - 1 }
static const struct
{
  const char *bytes;
  size_t len;
} s_bad_bodies[] = {
  BODY ("\xc1"),                         /* not msgpack (a reserved byte) */
  BODY ("\x01"),                         /* 1: msgpack, not a map */
  BODY ("\x81\xa1n\x00"),                /* {"n": 0}: no type */
  BODY ("\x82\xa4type\xa3num\xa1n\x00"), /* {"type": "num", "n": 0}: a str type */
  BODY ("\x81\xa4type\xc0"),             /* {"type": nil} */
  BODY ("\x81\xa4type\xff"),             /* {"type": -1} */
};

static void
test_refused_messages_are_counted (void **state)
{
  fixture_t *f = *state;
  probe_t p = { 0 }, mute = { 0 };
  assert_non_null (actor_new (f->sys, &s_mute_class, "mute", &mute, NULL));
  assert_non_null (actor_new (f->sys, &s_class, "strict", &p, NULL));
  zcd_error_t *err = NULL;
  /* a well-formed message, and the class has no dispatch */
  assert_int_equal (s_send_num (f, "test", "mute", 0, &err), 0);
  size_t n_bad = sizeof s_bad_bodies / sizeof s_bad_bodies[0];
  for (size_t i = 0; i < n_bad; i++)
    assert_int_equal (
        actor_send_raw (f->sys, "test", "strict", s_bad_bodies[i].bytes, s_bad_bodies[i].len, &err),
        0);
  /* a uint type the class's dispatch has no handler for */
  s_send_type_ok (f, "strict", T_UNHANDLED);
  s_send_num_ok (f, "test", "strict", 0);
  p.stop_at = 1;
  s_run (f, 5000);
  s_run_one_turn (f);
  /* Only the last "num" was taken (the str-typed one, also n = 0, was not). */
  assert_int_equal (p.received, 1);
  assert_false (p.out_of_order);
  assert_int_equal (mute.received, 0);
  assert_int_equal (s_stats (f).refused, 1 + n_bad + 1);
  assert_int_equal (s_stats (f).send_failures, 0);
}

/* ---- deferred free ---- */

typedef struct
{
  int value;
  bool *stopped;
  bool *freed;
  int seen_after_destroy;
} mortal_t;

static void
s_mortal_stop (actor_t *self)
{
  mortal_t *m = actor_state (self);
  *m->stopped = true;
}

static void
s_mortal_free (actor_t *self)
{
  mortal_t *m = actor_state (self);
  *m->freed = true;
  free (m);
}

static int s_seen_after_destroy;

/* Destroys its own actor, then reads and writes its state: valid until
 * the handler returns (ASan builds check it). */
static void
s_on_mortal_die (actor_t *self, const actor_msg_t *msg)
{
  mortal_t *m = actor_state (self);
  actor_destroy (self);
  assert_true (*m->stopped); /* stop runs at once */
  assert_false (*m->freed);  /* the state does not */
  assert_ptr_equal (actor_state (self), m);
  assert_null (actor_lookup (actor_system (self), "mortal"));
  m->value += 41;
  s_seen_after_destroy = m->value;
}

static const test_handlers_t s_mortal_handlers = { .on = { [T_DIE] = s_on_mortal_die } };
static const actor_class_t s_mortal_class = {
  .kind = "mortal",
  .dispatch = s_test_dispatch,
  .handlers = &s_mortal_handlers,
  .stop = s_mortal_stop,
  .destroy_state = s_mortal_free,
};

static void
test_state_freed_after_handler_returns (void **state)
{
  fixture_t *f = *state;
  bool stopped = false, freed = false;
  mortal_t *m = calloc (1, sizeof *m);
  m->value = 1;
  m->stopped = &stopped;
  m->freed = &freed;
  assert_non_null (actor_new (f->sys, &s_mortal_class, "mortal", m, NULL));
  s_send_type_ok (f, "mortal", T_DIE);
  s_run_one_turn (f);
  assert_int_equal (s_seen_after_destroy, 42);
  assert_true (stopped);
  assert_true (freed);
  assert_int_equal (actor_system_count (f->sys), 0);

  /* Destroyed outside any handler: stopped at once, freed when the turn
   * ends. */
  stopped = freed = false;
  m = calloc (1, sizeof *m);
  m->stopped = &stopped;
  m->freed = &freed;
  actor_t *a = actor_new (f->sys, &s_mortal_class, "mortal", m, NULL);
  assert_non_null (a);
  actor_destroy (a);
  assert_true (stopped);
  assert_false (freed);
  s_run_one_turn (f);
  assert_true (freed);
}

int
main (void)
{
  s_raise_nofile ();
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_ten_thousand_actors, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_duplicate_and_missing_names, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_stream_order, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_stream_order_through_small_mailbox, s_setup_small_hwm,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_ping_pong, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_destroy_self_in_handler, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_destroy_other_with_queued_messages, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_destroy_outside_loop_with_queued_messages, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_reused_name_gets_no_old_messages, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_full_mailbox_is_busy_then_recovers, s_setup_small_hwm,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_overflow_keeps_every_message_in_order,
                                     s_setup_small_hwm_big_overflow, s_teardown),
    cmocka_unit_test_setup_teardown (test_overflow_from_own_handler,
                                     s_setup_small_hwm_big_overflow, s_teardown),
    cmocka_unit_test_setup_teardown (test_overflow_is_bounded, s_setup_small_hwm_overflow,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_overflow_goes_with_its_actor,
                                     s_setup_small_hwm_big_overflow, s_teardown),
    cmocka_unit_test_setup_teardown (test_refused_messages_are_counted, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_state_freed_after_handler_returns, s_setup, s_teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
