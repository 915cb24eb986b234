/* Actor runtime throughput: creating and destroying actors (until their
 * mailbox sockets and fds are really gone), ping-pong round trips between
 * two actors, and one-way streaming through a bounded mailbox, all driven
 * by the loop as in the daemon.  The bodies are the runtime's share only:
 * {"type": 1, "n": uint} packed here, sent with actor_send_raw and taken
 * by a one-entry dispatch (no amsg codec: test_amsg covers that).
 *
 * usage: bench_actors [actors] [rounds] [messages]
 *        (defaults: 10000, 5, 100000) */
#include <dirent.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <zmq.h>

#include "core/actor.h"
#include "core/fsutil.h"
#include "core/loop.h"
#include "core/mp.h"

#define STREAM_HWM 1000

typedef struct
{
  void *ctx;
  loop_t *loop;
  actor_system_t *sys;
  bool timed_out;
} bench_t;

typedef struct
{
  double min, median, max;
} stats_t;

static double
s_secs (void)
{
  return (double) zcd_mono_ns () / 1e9;
}

static int
s_cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

static stats_t
s_stats (double *samples, int n)
{
  qsort (samples, (size_t) n, sizeof *samples, s_cmp_double);
  return (stats_t){ samples[0], samples[n / 2], samples[n - 1] };
}

static int
s_count_fds (void)
{
  DIR *d = opendir ("/proc/self/fd");
  if (d == NULL)
    return -1;
  int n = 0;
  for (struct dirent *de = readdir (d); de; de = readdir (d))
    if (de->d_name[0] != '.')
      n++;
  closedir (d);
  return n;
}

static void
s_timed_out (loop_t *loop, void *arg)
{
  bench_t *b = arg;
  b->timed_out = true;
  loop_stop (loop);
}

/* Run the loop until a handler stops it; false if it took over limit_s. */
static bool
s_run (bench_t *b, uint64_t limit_s)
{
  b->timed_out = false;
  loop_timer_t *guard = loop_timer_add (b->loop, limit_s * 1000, s_timed_out, b);
  loop_run (b->loop);
  if (!b->timed_out)
    loop_timer_cancel (b->loop, guard);
  return !b->timed_out;
}

/* ---- create + destroy ---- */

typedef struct
{
  int expected;
} fd_wait_t;

static void
s_check_fds (loop_t *loop, void *arg)
{
  fd_wait_t *w = arg;
  if (s_count_fds () <= w->expected)
    loop_stop (loop);
  else
    loop_timer_add (loop, 1, s_check_fds, w);
}

static const actor_class_t s_idle_class = { .kind = "bench" };

/* One round: seconds to create n actors, to destroy them, and until every
 * mailbox fd is released.  Negative on failure. */
static int
s_churn_round (bench_t *b, int n, double *create_s, double *destroy_s, double *total_s)
{
  actor_t **actors = calloc ((size_t) n, sizeof *actors);
  int fds_before = s_count_fds ();
  double t0 = s_secs ();
  for (int i = 0; i < n; i++)
    {
      char name[32];
      snprintf (name, sizeof name, "c%d", i);
      zcd_error_t *err = NULL;
      actors[i] = actor_new (b->sys, &s_idle_class, name, NULL, &err);
      if (actors[i] == NULL)
        {
          fprintf (stderr, "bench_actors: actor %d: %s\n", i, err->msg);
          zcd_error_free (&err);
          free (actors);
          return -1;
        }
    }
  double t1 = s_secs ();
  for (int i = 0; i < n; i++)
    actor_destroy (actors[i]);
  double t2 = s_secs ();
  fd_wait_t w = { fds_before };
  loop_timer_add (b->loop, 0, s_check_fds, &w);
  bool ok = s_run (b, 60);
  double t3 = s_secs ();
  free (actors);
  if (!ok || actor_system_count (b->sys) != 0)
    {
      fprintf (stderr, "bench_actors: %d fds still open after destroying all\n", s_count_fds ());
      return -1;
    }
  *create_s = t1 - t0;
  *destroy_s = t2 - t1;
  *total_s = t3 - t0;
  return 0;
}

/* ---- messages ---- */

typedef struct
{
  uint64_t count;
  uint64_t limit;
  bool broken;
} counter_t;

#define BENCH_MSG_N 1 /* the only type: {"type": 1, "n": uint} */

static int
s_send_n (actor_system_t *sys, const char *from, const char *to, uint64_t n, zcd_error_t **err)
{
  msgpack_sbuffer sb;
  msgpack_sbuffer_init (&sb);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 2);
  mp_pack_kv_uint (&pk, "type", BENCH_MSG_N);
  mp_pack_kv_uint (&pk, "n", n);
  int rc = actor_send_raw (sys, from, to, sb.data, sb.size, err);
  msgpack_sbuffer_destroy (&sb);
  return rc;
}

typedef void (*bench_handler_fn) (actor_t *self, const actor_msg_t *msg);

/* handlers: the class's one bench_handler_fn. */
static int
s_dispatch (actor_t *self, const actor_msg_t *msg, const void *handlers, zcd_error_t **err)
{
  if (msg->type_code != BENCH_MSG_N)
    return zcd_fail (err, ZCD_E_INTERNAL, "unknown type %llu", (unsigned long long)msg->type_code);
  ((const bench_handler_fn *) handlers)[0] (self, msg);
  return 0;
}

static void
s_on_ping (actor_t *self, const actor_msg_t *msg)
{
  counter_t *c = actor_state (self);
  uint64_t n = mp_get_uint (msg->body, "n", 0);
  if (strcmp (actor_name (self), "ping") == 0)
    {
      if (n != c->count)
        c->broken = true;
      if (++c->count == c->limit)
        {
          loop_stop (actor_loop (self));
          return;
        }
      n = c->count;
    }
  else
    c->count++;
  if (s_send_n (actor_system (self), actor_name (self), msg->from, n, NULL) < 0)
    {
      c->broken = true;
      loop_stop (actor_loop (self));
    }
}

static void
s_on_sink (actor_t *self, const actor_msg_t *msg)
{
  counter_t *c = actor_state (self);
  if (mp_get_uint (msg->body, "n", UINT64_MAX) != c->count)
    c->broken = true;
  if (++c->count == c->limit)
    loop_stop (actor_loop (self));
}

static const bench_handler_fn s_ping_handler = s_on_ping;
static const actor_class_t s_ping_class = {
  .kind = "bench", .dispatch = s_dispatch, .handlers = &s_ping_handler
};
static const bench_handler_fn s_sink_handler = s_on_sink;
static const actor_class_t s_sink_class = {
  .kind = "bench", .dispatch = s_dispatch, .handlers = &s_sink_handler
};

/* Round trips per second. */
static double
s_ping_pong_round (bench_t *b, uint64_t rounds)
{
  counter_t ping = { .limit = rounds }, pong = { 0 };
  actor_t *a = actor_new (b->sys, &s_ping_class, "ping", &ping, NULL);
  actor_t *z = actor_new (b->sys, &s_ping_class, "pong", &pong, NULL);
  double t0 = s_secs ();
  s_send_n (b->sys, "ping", "pong", 0, NULL);
  bool ok = s_run (b, 120);
  double secs = s_secs () - t0;
  actor_destroy (a);
  actor_destroy (z);
  if (!ok || ping.broken || ping.count != rounds)
    return -1;
  return (double) rounds / secs;
}

/* The sender fills the mailbox until ZCD_E_BUSY and tries again next turn,
 * as a well-behaved actor would. */
typedef struct
{
  actor_system_t *sys;
  uint64_t next, limit, busy;
} streamer_t;

static void
s_stream_more (loop_t *loop, void *arg)
{
  streamer_t *s = arg;
  zcd_error_t *err = NULL; /* taken, so the runtime does not call a retried send lost */
  while (s->next < s->limit && s_send_n (s->sys, "src", "sink", s->next, &err) == 0)
    s->next++;
  zcd_error_free (&err);
  if (s->next < s->limit)
    {
      s->busy++;
      loop_timer_add (loop, 0, s_stream_more, s);
    }
}

/* Messages per second; *busy gets the sends refused by a full mailbox. */
static double
s_stream_round (bench_t *b, uint64_t messages, uint64_t *busy)
{
  counter_t sink = { .limit = messages };
  actor_t *z = actor_new (b->sys, &s_sink_class, "sink", &sink, NULL);
  streamer_t s = { .sys = b->sys, .limit = messages };
  double t0 = s_secs ();
  loop_timer_add (b->loop, 0, s_stream_more, &s);
  bool ok = s_run (b, 120);
  double secs = s_secs () - t0;
  actor_destroy (z);
  *busy = s.busy;
  if (!ok || sink.broken || sink.count != messages)
    return -1;
  return (double) messages / secs;
}

static int
s_bench_new (bench_t *b)
{
  struct rlimit rl;
  if (getrlimit (RLIMIT_NOFILE, &rl) == 0)
    {
      rl.rlim_cur = rl.rlim_max;
      setrlimit (RLIMIT_NOFILE, &rl);
    }
  b->ctx = zmq_ctx_new ();
  zmq_ctx_set (b->ctx, ZMQ_MAX_SOCKETS, 65535);
  b->loop = loop_new ();
  zcd_error_t *err = NULL;
  b->sys = actor_system_new (b->loop, b->ctx, STREAM_HWM, &err);
  if (b->sys == NULL)
    {
      fprintf (stderr, "bench_actors: %s\n", err->msg);
      zcd_error_free (&err);
      return -1;
    }
  return 0;
}

static void
s_bench_destroy (bench_t *b)
{
  actor_system_destroy (&b->sys);
  loop_destroy (&b->loop);
  zmq_ctx_term (b->ctx);
}

static int
s_churn (bench_t *b, int n, int rounds)
{
  double *create = calloc ((size_t) rounds, sizeof (double));
  double *destroy = calloc ((size_t) rounds, sizeof (double));
  double *total = calloc ((size_t) rounds, sizeof (double));
  int rc = 0;
  for (int r = 0; r < rounds && rc == 0; r++)
    {
      double c = 0, d = 0, t = 0;
      rc = s_churn_round (b, n, &c, &d, &t);
      create[r] = n / c;
      destroy[r] = n / d;
      total[r] = n / t;
    }
  if (rc == 0)
    {
      stats_t sc = s_stats (create, rounds), sd = s_stats (destroy, rounds);
      stats_t st = s_stats (total, rounds);
      printf ("actors (N=%d, %d rounds; median [min..max])\n", n, rounds);
      printf ("  created per second:               %10.0f [%.0f..%.0f]\n", sc.median, sc.min,
              sc.max);
      printf ("  destroyed per second:             %10.0f [%.0f..%.0f]\n", sd.median, sd.min,
              sd.max);
      printf ("  created+destroyed per second:     %10.0f [%.0f..%.0f]  (until every fd is freed)\n",
              st.median, st.min, st.max);
    }
  free (create);
  free (destroy);
  free (total);
  return rc;
}

static int
s_messages (bench_t *b, uint64_t messages, int rounds)
{
  double pp[rounds], st[rounds];
  uint64_t busy = 0;
  for (int r = 0; r < rounds; r++)
    {
      pp[r] = s_ping_pong_round (b, messages / 2);
      uint64_t round_busy = 0;
      st[r] = s_stream_round (b, messages, &round_busy);
      busy += round_busy;
      if (pp[r] < 0 || st[r] < 0)
        {
          fprintf (stderr, "bench_actors: message round %d failed\n", r);
          return -1;
        }
    }
  stats_t p = s_stats (pp, rounds), s = s_stats (st, rounds);
  printf ("messages between two actors (%d rounds; median [min..max])\n", rounds);
  printf ("  ping-pong, %" PRIu64 " round trips/round: %10.0f msgs/s [%.0f..%.0f]  (%.1f us/round trip)\n",
          messages / 2, 2 * p.median, 2 * p.min, 2 * p.max, 1e6 / p.median);
  printf ("  one-way stream, %" PRIu64 " msgs/round:   %10.0f msgs/s [%.0f..%.0f]  (mailbox hwm %d, %" PRIu64
          " refills after BUSY)\n",
          messages, s.median, s.min, s.max, STREAM_HWM, busy / (uint64_t) rounds);
  return 0;
}

int
main (int argc, char **argv)
{
  int n = argc > 1 ? atoi (argv[1]) : 10000;
  int rounds = argc > 2 ? atoi (argv[2]) : 5;
  uint64_t messages = argc > 3 ? strtoull (argv[3], NULL, 10) : 100000;
  if (n <= 0 || rounds <= 0 || messages < 2)
    {
      fprintf (stderr, "usage: bench_actors [actors] [rounds] [messages]\n");
      return 2;
    }
  bench_t b = { 0 };
  if (s_bench_new (&b) < 0)
    return 1;
  int rc = s_churn (&b, n, rounds);
  if (rc == 0)
    rc = s_messages (&b, messages, rounds);
  s_bench_destroy (&b);
  return rc == 0 ? 0 : 1;
}
