/* Load driver for a running zcd: talks the wire protocol directly (one
 * DEALER with many requests in flight, replies matched by `rid`, one SUB
 * for exit events), so what it measures is the daemon and not a client
 * library.  Prints one JSON object per run on stdout; bench/run turns those
 * into the table.
 *
 * usage:
 *   zcdload start  -s DIR -b BUNDLE -n N -c C -p PREFIX [-r RUNTIME] [-o FIRST] [-W]
 *       create N containers PREFIX-FIRST.., at most C in their lifecycle at
 *       once; a container leaves its slot at its init `exit` event (or, with
 *       -W, at its create reply: for filling the daemon with `sleep`s)
 *   zcdload call   -s DIR -O OP -n N -c C      N requests OP, C in flight
 *   zcdload fanout -s DIR -S SUBS -n UPDATES -c C -i ID,ID..
 *       UPDATES pause/resume updates over the ids while SUBS subscribers
 *       check that every event arrives, in seq order
 *   zcdload drain  -s DIR -p PREFIX -c C      SIGKILL every PREFIX-* container
 *       and wait until `state` has none left
 * DIR is the daemon's state directory (its zcd.sock and events.sock). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "core/cleanup.h"
#include "core/err.h"
#include "core/fsutil.h"
#include "core/mp.h"

#define MAX_SUBS_PER_THREAD 32
#define HEARTBEAT_WAIT_NS (3ULL * 1000000000ULL)
#define REPLY_WAIT_NS (10ULL * 1000000000ULL) /* no reply for this long: lost */

typedef struct
{
  const char *state_dir;
  const char *bundle;
  const char *runtime;
  const char *prefix;
  const char *op;
  const char *ids;
  uint64_t n, c, subs, first;
  bool slot_until_reply;
  double timeout_s;
} opts_t;

typedef struct
{
  void *ctx;
  void *dealer;
  void *sub; /* NULL unless the mode watches events */
} conn_t;

/* One received reply: the unpacked body references `frame`, so both live
 * and die together. */
typedef struct
{
  zmq_msg_t frame;
  msgpack_unpacked up;
  const msgpack_object *body;
} reply_t;

static void
s_die (const char *what)
{
  fprintf (stderr, "zcdload: %s: %s\n", what, errno ? strerror (errno) : "failed");
  exit (2);
}

static uint64_t
s_now (void)
{
  return zcd_mono_ns ();
}

static int
s_cmp_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array, in milliseconds. */
static double
s_pct_ms (const uint64_t *sorted, size_t n, double q)
{
  if (n == 0)
    return 0;
  size_t rank = (size_t) (q * (double) n + 0.999999);
  if (rank < 1)
    rank = 1;
  if (rank > n)
    rank = n;
  return (double) sorted[rank - 1] / 1e6;
}

/* Prints `"name": {"n", "p50", "p95", "p99", "max", "mean"}` (ms); sorts v. */
static void
s_print_latency (const char *name, uint64_t *v, size_t n)
{
  double sum = 0;
  qsort (v, n, sizeof *v, s_cmp_u64);
  for (size_t i = 0; i < n; i++)
    sum += (double) v[i];
  printf ("\"%s\": {\"n\": %zu, \"p50\": %.3f, \"p95\": %.3f, \"p99\": %.3f, "
          "\"max\": %.3f, \"mean\": %.3f}",
          name, n, s_pct_ms (v, n, 0.50), s_pct_ms (v, n, 0.95), s_pct_ms (v, n, 0.99),
          n ? (double) v[n - 1] / 1e6 : 0.0, n ? sum / (double) n / 1e6 : 0.0);
}

static void
s_connect (conn_t *self, const opts_t *o, bool with_sub)
{
  char ep[4200];
  int hwm = 0;
  self->ctx = zmq_ctx_new ();
  self->dealer = zmq_socket (self->ctx, ZMQ_DEALER);
  zmq_setsockopt (self->dealer, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt (self->dealer, ZMQ_RCVHWM, &hwm, sizeof hwm);
  snprintf (ep, sizeof ep, "ipc://%s/zcd.sock", o->state_dir);
  if (zmq_connect (self->dealer, ep) != 0)
    s_die ("connect commands");
  self->sub = NULL;
  if (!with_sub)
    return;
  self->sub = zmq_socket (self->ctx, ZMQ_SUB);
  zmq_setsockopt (self->sub, ZMQ_RCVHWM, &hwm, sizeof hwm);
  snprintf (ep, sizeof ep, "ipc://%s/events.sock", o->state_dir);
  if (zmq_connect (self->sub, ep) != 0)
    s_die ("connect events");
}

static void
s_close (conn_t *self)
{
  int linger = 0;
  zmq_setsockopt (self->dealer, ZMQ_LINGER, &linger, sizeof linger);
  zmq_close (self->dealer);
  if (self->sub) {
    zmq_setsockopt (self->sub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close (self->sub);
  }
  zmq_ctx_term (self->ctx);
}

static void
s_send (void *dealer, const msgpack_sbuffer *body)
{
  while (zmq_send (dealer, body->data, body->size, 0) < 0)
    if (errno != EINTR)
      s_die ("send");
}

/* Receives one message without waiting and keeps its last frame.  Returns
 * false when nothing is queued.  A frame the daemon should never send
 * (not msgpack, not a map) is fatal: the numbers would be meaningless. */
static bool
s_recv_reply (void *dealer, reply_t *r)
{
  zmq_msg_init (&r->frame);
  for (;;) {
    if (zmq_msg_recv (&r->frame, dealer, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close (&r->frame);
      if (errno == EAGAIN)
        return false;
      if (errno == EINTR) {
        zmq_msg_init (&r->frame);
        continue;
      }
      s_die ("recv");
    }
    if (!zmq_msg_more (&r->frame))
      break;
  }
  zcd_error_t *err = NULL;
  msgpack_unpacked_init (&r->up);
  if (mp_unpack (zmq_msg_data (&r->frame), zmq_msg_size (&r->frame), &r->up, &err) != 0
      || r->up.data.type != MSGPACK_OBJECT_MAP) {
    fprintf (stderr, "zcdload: undecodable reply: %s\n", err ? err->msg : "not a map");
    exit (2);
  }
  r->body = &r->up.data;
  return true;
}

static void
s_reply_free (reply_t *r)
{
  msgpack_unpacked_destroy (&r->up);
  zmq_msg_close (&r->frame);
}

static bool
s_reply_ok (const reply_t *r)
{
  return mp_get_bool (r->body, "ok", false);
}

/* The error text of a failed reply, in a static buffer. */
static const char *
s_reply_error (const reply_t *r)
{
  static char text[512];
  const msgpack_object *e = mp_map_get (r->body, "error");
  cleanup_free char *code = e ? mp_get_strdup (e, "code") : NULL;
  cleanup_free char *msg = e ? mp_get_strdup (e, "message") : NULL;
  snprintf (text, sizeof text, "%s: %s", code ? code : "?", msg ? msg : "?");
  return text;
}

/* Waits for `fd`-less readiness of one socket, up to timeout_ms. */
static void
s_wait_readable (void *sock, long timeout_ms)
{
  zmq_pollitem_t item = { sock, 0, ZMQ_POLLIN, 0 };
  if (zmq_poll (&item, 1, timeout_ms) < 0 && errno != EINTR)
    s_die ("poll");
}

/* Sends one request and waits for the reply carrying `rid`; replies to
 * other requests (late ones, or ones the caller gave up on) are dropped. */
static void
s_call_sync (conn_t *c, msgpack_sbuffer *body, uint64_t rid, reply_t *r, uint64_t deadline_ns)
{
  s_send (c->dealer, body);
  for (;;) {
    while (!s_recv_reply (c->dealer, r)) {
      if (s_now () > deadline_ns) {
        errno = ETIMEDOUT;
        s_die ("no reply");
      }
      s_wait_readable (c->dealer, 100);
    }
    if (mp_get_uint (r->body, "rid", UINT64_MAX) == rid)
      return;
    s_reply_free (r);
  }
}

/* rids of s_call_sync requests: far above any batch's 0..N-1. */
static uint64_t
s_sync_rid (void)
{
  static uint64_t next = 1ULL << 62;
  return next++;
}

/* Packs {"op": op, "rid": rid} plus `extra` more keys the caller packs next. */
static void
s_pack_head (msgpack_packer *pk, const char *op, uint64_t rid, uint32_t extra)
{
  msgpack_pack_map (pk, 2 + extra);
  mp_pack_kv_str (pk, "op", op);
  mp_pack_kv_uint (pk, "rid", rid);
}

/* Receives one event frame pair without waiting; false when none is queued.
 * topic gets "<id>/<type>" (NUL-terminated, truncated to its size). */
static bool
s_recv_event (void *sub, char *topic, size_t topic_size, zmq_msg_t *body)
{
  int n = zmq_recv (sub, topic, topic_size - 1, ZMQ_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR)
      return false;
    s_die ("recv event");
  }
  topic[(size_t) n < topic_size - 1 ? (size_t) n : topic_size - 1] = '\0';
  zmq_msg_init (body);
  while (zmq_msg_recv (body, sub, 0) < 0)
    if (errno != EINTR)
      s_die ("recv event body");
  return true;
}

/* A SUB socket only sees what is published after its subscription reached
 * the publisher; the daemon's heartbeat (every second) proves it has. */
static void
s_await_heartbeat (void *sub)
{
  uint64_t deadline = s_now () + HEARTBEAT_WAIT_NS;
  char topic[256];
  zmq_msg_t body;
  zmq_setsockopt (sub, ZMQ_SUBSCRIBE, "/heartbeat", 10);
  while (s_now () < deadline) {
    s_wait_readable (sub, 100);
    while (s_recv_event (sub, topic, sizeof topic, &body)) {
      zmq_msg_close (&body);
      if (strcmp (topic, "/heartbeat") == 0)
        return;
    }
  }
  fprintf (stderr, "zcdload: no heartbeat from the daemon\n");
  exit (2);
}

/* ---- start: container lifecycles ---------------------------------------- */

typedef struct
{
  uint64_t sent_ns;
  uint64_t create_ns; /* request -> reply */
  bool replied, exited, failed, done;
} lifecycle_t;

typedef struct
{
  const opts_t *o;
  conn_t conn;
  lifecycle_t *slots;
  uint64_t next, inflight, completed, failed, lost;
  uint64_t first_send_ns, last_done_ns;
  char first_error[512];
} start_run_t;

static void
s_send_create (start_run_t *self, uint64_t i)
{
  char id[128];
  msgpack_sbuffer sb;
  msgpack_packer pk;
  snprintf (id, sizeof id, "%s-%" PRIu64, self->o->prefix, self->o->first + i);
  msgpack_sbuffer_init (&sb);
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  s_pack_head (&pk, "create", i, self->o->runtime ? 3 : 2);
  mp_pack_kv_str (&pk, "id", id);
  mp_pack_kv_str (&pk, "bundle", self->o->bundle);
  if (self->o->runtime)
    mp_pack_kv_str (&pk, "runtime", self->o->runtime);
  self->slots[i].sent_ns = s_now ();
  if (self->first_send_ns == 0)
    self->first_send_ns = self->slots[i].sent_ns;
  s_send (self->conn.dealer, &sb);
  msgpack_sbuffer_destroy (&sb);
  self->inflight++;
}

static void
s_finish (start_run_t *self, lifecycle_t *l)
{
  if (l->done)
    return;
  l->done = true;
  self->inflight--;
  self->completed++;
  self->last_done_ns = s_now ();
}

static void
s_on_create_reply (start_run_t *self, const reply_t *r)
{
  uint64_t rid = mp_get_uint (r->body, "rid", UINT64_MAX);
  if (rid >= self->o->n)
    return;
  lifecycle_t *l = &self->slots[rid];
  if (l->replied)
    return;
  l->replied = true;
  l->create_ns = s_now () - l->sent_ns;
  if (!s_reply_ok (r)) {
    l->failed = true;
    if (self->failed++ == 0)
      snprintf (self->first_error, sizeof self->first_error, "%s", s_reply_error (r));
    s_finish (self, l);
  }
  else if (self->o->slot_until_reply || l->exited)
    s_finish (self, l);
}

/* An event topic "<prefix>-<k>/exit" for one of ours: its slot index, or -1. */
static int64_t
s_exit_index (const start_run_t *self, const char *topic)
{
  size_t plen = strlen (self->o->prefix);
  if (strncmp (topic, self->o->prefix, plen) != 0 || topic[plen] != '-')
    return -1;
  char *end = NULL;
  uint64_t k = strtoull (topic + plen + 1, &end, 10);
  if (end == topic + plen + 1 || strcmp (end, "/exit") != 0 || k < self->o->first
      || k - self->o->first >= self->o->n)
    return -1;
  return (int64_t) (k - self->o->first);
}

/* A lifecycle with no reply or no exit event LIFECYCLE_GIVE_UP_NS after its
 * request is counted lost and frees its slot: one lost reply must not stall
 * the run (the protocol promises a reply to every request). */
#define LIFECYCLE_GIVE_UP_NS (60ULL * 1000000000ULL)
static void
s_give_up_stale (start_run_t *self)
{
  uint64_t now = s_now ();
  for (uint64_t i = 0; i < self->next; i++) {
    lifecycle_t *l = &self->slots[i];
    if (!l->done && now - l->sent_ns > LIFECYCLE_GIVE_UP_NS) {
      if (self->lost++ == 0)
        fprintf (stderr, "zcdload: %s-%" PRIu64 ": no %s after 60 s\n", self->o->prefix,
                 self->o->first + i, l->replied ? "exit event" : "reply");
      l->failed = true;
      self->failed++;
      s_finish (self, l);
    }
  }
}

static void
s_drain_start_events (start_run_t *self)
{
  char topic[256];
  zmq_msg_t body;
  while (s_recv_event (self->conn.sub, topic, sizeof topic, &body)) {
    zmq_msg_close (&body);
    int64_t i = s_exit_index (self, topic);
    if (i < 0)
      continue;
    lifecycle_t *l = &self->slots[i];
    l->exited = true;
    if (l->replied)
      s_finish (self, l);
  }
}

static void
s_print_start (start_run_t *self)
{
  uint64_t *lat = calloc (self->o->n + 1, sizeof *lat);
  size_t nlat = 0;
  for (uint64_t i = 0; i < self->o->n; i++)
    if (self->slots[i].replied && !self->slots[i].failed)
      lat[nlat++] = self->slots[i].create_ns;
  double secs = (double) (self->last_done_ns - self->first_send_ns) / 1e9;
  uint64_t ok = self->completed - self->failed;
  printf ("{\"mode\": \"start\", \"n\": %" PRIu64 ", \"c\": %" PRIu64 ", \"ok\": %" PRIu64
          ", \"failed\": %" PRIu64 ", \"lost\": %" PRIu64 ", \"unfinished\": %" PRIu64
          ", \"elapsed_s\": %.4f, \"per_s\": %.2f, ",
          self->o->n, self->o->c, ok, self->failed, self->lost, self->o->n - self->completed, secs,
          secs > 0 ? (double) ok / secs : 0.0);
  s_print_latency ("create_ms", lat, nlat);
  printf (", \"first_error\": \"");
  for (const char *p = self->first_error; *p; p++)
    if (*p != '"' && *p != '\\' && (unsigned char) *p >= 0x20)
      putchar (*p);
  printf ("\"}\n");
  free (lat);
}

static int
s_mode_start (const opts_t *o)
{
  start_run_t self = { .o = o };
  self.slots = calloc (o->n ? o->n : 1, sizeof *self.slots);
  s_connect (&self.conn, o, !o->slot_until_reply);
  if (self.conn.sub) {
    char topic[200];
    snprintf (topic, sizeof topic, "%s-", o->prefix);
    zmq_setsockopt (self.conn.sub, ZMQ_SUBSCRIBE, topic, strlen (topic));
    s_await_heartbeat (self.conn.sub);
  }
  uint64_t deadline = s_now () + (uint64_t) (o->timeout_s * 1e9);
  uint64_t next_stale_check = s_now () + 1000000000ULL;
  while (self.completed < o->n && s_now () < deadline) {
    while (self.inflight < o->c && self.next < o->n)
      s_send_create (&self, self.next++);
    zmq_pollitem_t items[2] = { { self.conn.dealer, 0, ZMQ_POLLIN, 0 },
                                { self.conn.sub, 0, ZMQ_POLLIN, 0 } };
    if (zmq_poll (items, self.conn.sub ? 2 : 1, 100) < 0 && errno != EINTR)
      s_die ("poll");
    reply_t r;
    while (s_recv_reply (self.conn.dealer, &r)) {
      s_on_create_reply (&self, &r);
      s_reply_free (&r);
    }
    if (self.conn.sub)
      s_drain_start_events (&self);
    if (s_now () > next_stale_check) {
      s_give_up_stale (&self);
      next_stale_check = s_now () + 1000000000ULL;
    }
  }
  s_print_start (&self);
  s_close (&self.conn);
  free (self.slots);
  return self.completed == o->n ? 0 : 1;
}

/* ---- call: round trips of one simple op -------------------------------- */

static void
s_send_simple (void *dealer, const char *op, uint64_t rid)
{
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init (&sb);
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  s_pack_head (&pk, op, rid, 0);
  s_send (dealer, &sb);
  msgpack_sbuffer_destroy (&sb);
}

static int
s_mode_call (const opts_t *o)
{
  conn_t conn;
  uint64_t *sent = calloc (o->n + 1, sizeof *sent), *lat = calloc (o->n + 1, sizeof *lat);
  uint64_t next = 0, got = 0, failed = 0, bytes = 0;
  s_connect (&conn, o, false);
  /* The first round trip also sets up the connection: keep it out. */
  s_send_simple (conn.dealer, "version", UINT64_MAX);
  reply_t r;
  while (!s_recv_reply (conn.dealer, &r))
    s_wait_readable (conn.dealer, 100);
  s_reply_free (&r);
  uint64_t t0 = s_now (), deadline = t0 + (uint64_t) (o->timeout_s * 1e9);
  while (got < o->n && s_now () < deadline) {
    while (next - got < o->c && next < o->n) {
      sent[next] = s_now ();
      s_send_simple (conn.dealer, o->op, next++);
    }
    s_wait_readable (conn.dealer, 100);
    while (s_recv_reply (conn.dealer, &r)) {
      uint64_t rid = mp_get_uint (r.body, "rid", UINT64_MAX);
      if (rid < o->n) {
        lat[got++] = s_now () - sent[rid];
        failed += !s_reply_ok (&r);
        bytes += zmq_msg_size (&r.frame);
      }
      s_reply_free (&r);
    }
  }
  double secs = (double) (s_now () - t0) / 1e9;
  printf ("{\"mode\": \"call\", \"op\": \"%s\", \"n\": %" PRIu64 ", \"c\": %" PRIu64
          ", \"ok\": %" PRIu64 ", \"failed\": %" PRIu64 ", \"elapsed_s\": %.4f, "
          "\"per_s\": %.1f, \"reply_bytes\": %" PRIu64 ", ",
          o->op, o->n, o->c, got - failed, failed, secs, secs > 0 ? (double) got / secs : 0.0,
          got ? bytes / got : 0);
  s_print_latency ("latency_ms", lat, got);
  printf ("}\n");
  s_close (&conn);
  free (sent);
  free (lat);
  return got == o->n && failed == 0 ? 0 : 1;
}

/* ---- fanout: events delivered to many subscribers ------------------------ */

typedef struct
{
  void *sock;
  uint64_t last_seq, received, gaps;
  uint64_t last_event_ns; /* when the newest counted event arrived */
  bool ready, done;
} subscriber_t;

typedef struct
{
  void *ctx;
  char endpoint[4200];
  atomic_uint_fast64_t ready;
  atomic_uint_fast64_t floor_seq;  /* events above it are the run's; MAX = not yet */
  atomic_uint_fast64_t target_seq; /* the run's last event; MAX = not yet known */
  atomic_bool stop;
} fanout_t;

typedef struct
{
  fanout_t *shared;
  subscriber_t *subs;
  size_t nsubs;
  pthread_t thread;
} sub_group_t;

static void
s_subscriber_on_event (fanout_t *f, subscriber_t *s, const char *topic, zmq_msg_t *body)
{
  if (strcmp (topic, "/heartbeat") == 0) {
    if (!s->ready) {
      s->ready = true;
      atomic_fetch_add (&f->ready, 1);
    }
    return;
  }
  uint64_t floor_seq = atomic_load (&f->floor_seq);
  if (floor_seq == UINT64_MAX)
    return;
  msgpack_unpacked up;
  zcd_error_t *err = NULL;
  msgpack_unpacked_init (&up);
  if (mp_unpack (zmq_msg_data (body), zmq_msg_size (body), &up, &err) == 0) {
    uint64_t seq = mp_get_uint (&up.data, "seq", 0);
    if (seq > floor_seq) {
      uint64_t expected = (s->last_seq > floor_seq ? s->last_seq : floor_seq) + 1;
      s->gaps += seq != expected;
      s->last_seq = seq;
      s->received++;
      s->last_event_ns = s_now ();
    }
  }
  zcd_error_free (&err);
  msgpack_unpacked_destroy (&up);
}

static void *
s_sub_group_run (void *arg)
{
  sub_group_t *g = arg;
  fanout_t *f = g->shared;
  zmq_pollitem_t *items = calloc (g->nsubs, sizeof *items);
  for (size_t i = 0; i < g->nsubs; i++) {
    g->subs[i].sock = zmq_socket (f->ctx, ZMQ_SUB);
    zmq_setsockopt (g->subs[i].sock, ZMQ_SUBSCRIBE, "", 0);
    if (zmq_connect (g->subs[i].sock, f->endpoint) != 0)
      s_die ("connect subscriber");
    items[i] = (zmq_pollitem_t) { g->subs[i].sock, 0, ZMQ_POLLIN, 0 };
  }
  size_t left = g->nsubs;
  while (left > 0 && !atomic_load (&f->stop)) {
    if (zmq_poll (items, (int) g->nsubs, 100) < 0 && errno != EINTR)
      s_die ("poll subscribers");
    uint64_t target = atomic_load (&f->target_seq);
    for (size_t i = 0; i < g->nsubs; i++) {
      subscriber_t *s = &g->subs[i];
      char topic[256];
      zmq_msg_t body;
      while (s_recv_event (s->sock, topic, sizeof topic, &body)) {
        s_subscriber_on_event (f, s, topic, &body);
        zmq_msg_close (&body);
      }
      if (!s->done && target != UINT64_MAX
          && (s->last_seq >= target || target == atomic_load (&f->floor_seq))) {
        __atomic_store_n (&s->done, true, __ATOMIC_RELEASE);
        left--;
      }
    }
  }
  int linger = 0;
  for (size_t i = 0; i < g->nsubs; i++) {
    zmq_setsockopt (g->subs[i].sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close (g->subs[i].sock);
  }
  free (items);
  return NULL;
}

/* last_seq from `state`. */
static uint64_t
s_last_seq (conn_t *c)
{
  reply_t r;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init (&sb);
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  uint64_t rid = s_sync_rid ();
  s_pack_head (&pk, "state", rid, 0);
  s_call_sync (c, &sb, rid, &r, s_now () + 10ULL * 1000000000ULL);
  msgpack_sbuffer_destroy (&sb);
  uint64_t seq = mp_get_uint (r.body, "last_seq", 0);
  s_reply_free (&r);
  return seq;
}

static void
s_send_update (void *dealer, const char *id, bool pause, uint64_t rid)
{
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init (&sb);
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  s_pack_head (&pk, "update", rid, 2);
  mp_pack_kv_str (&pk, "id", id);
  mp_pack_kv_str (&pk, "status", pause ? "paused" : "running");
  s_send (dealer, &sb);
  msgpack_sbuffer_destroy (&sb);
}

/* Splits "a,b,c" in place; returns the count. */
static size_t
s_split_ids (char *list, char **out, size_t max)
{
  size_t n = 0;
  for (char *save = NULL, *t = strtok_r (list, ",", &save); t && n < max;
       t = strtok_r (NULL, ",", &save))
    out[n++] = t;
  return n;
}

/* Sends o->n pause/resume updates round-robin over the ids, C in flight;
 * each container alternates, so they end as they began when n is a multiple
 * of 2 x ids.  Returns the failures. */
static uint64_t
s_generate_updates (conn_t *c, const opts_t *o, char **ids, size_t nids, char *first_error)
{
  uint64_t next = 0, got = 0, failed = 0, progress = s_now ();
  uint64_t deadline = s_now () + (uint64_t) (o->timeout_s * 1e9);
  while (got < o->n && s_now () < deadline && s_now () - progress < REPLY_WAIT_NS) {
    while (next - got < o->c && next < o->n) {
      s_send_update (c->dealer, ids[next % nids], (next / nids) % 2 == 0, next);
      next++;
    }
    s_wait_readable (c->dealer, 100);
    reply_t r;
    while (s_recv_reply (c->dealer, &r)) {
      got++;
      progress = s_now ();
      if (!s_reply_ok (&r) && failed++ == 0)
        snprintf (first_error, 256, "%s", s_reply_error (&r));
      s_reply_free (&r);
    }
  }
  return failed + (o->n - got);
}

static void
s_start_groups (fanout_t *f, sub_group_t *groups, size_t ngroups, subscriber_t *subs,
                uint64_t nsubs)
{
  for (size_t g = 0, at = 0; g < ngroups; g++) {
    size_t share = (nsubs - at) / (ngroups - g);
    groups[g] = (sub_group_t) { .shared = f, .subs = subs + at, .nsubs = share };
    at += share;
    if (pthread_create (&groups[g].thread, NULL, s_sub_group_run, &groups[g]) != 0)
      s_die ("pthread_create");
  }
  uint64_t deadline = s_now () + HEARTBEAT_WAIT_NS;
  while (atomic_load (&f->ready) < nsubs && s_now () < deadline) {
    struct timespec ts = { 0, 5000000 };
    nanosleep (&ts, NULL);
  }
  if (atomic_load (&f->ready) < nsubs) {
    fprintf (stderr, "zcdload: only %" PRIu64 " of %" PRIu64 " subscribers connected\n",
             (uint64_t) atomic_load (&f->ready), nsubs);
    exit (2);
  }
}

static int
s_mode_fanout (const opts_t *o)
{
  fanout_t f = { .ctx = zmq_ctx_new () };
  atomic_init (&f.ready, 0);
  atomic_init (&f.floor_seq, UINT64_MAX);
  atomic_init (&f.target_seq, UINT64_MAX);
  atomic_init (&f.stop, false);
  snprintf (f.endpoint, sizeof f.endpoint, "ipc://%s/events.sock", o->state_dir);
  char *list = strdup (o->ids ? o->ids : ""), *ids[1024], first_error[256] = "";
  size_t nids = s_split_ids (list, ids, 1024);
  if (nids == 0 || o->subs == 0) {
    fprintf (stderr, "zcdload: fanout needs -i IDS and -S SUBS\n");
    return 2;
  }
  /* Whole pause+resume rounds, so every container ends running. */
  opts_t rounds = *o;
  rounds.n = (o->n + 2 * nids - 1) / (2 * nids) * (2 * nids);
  o = &rounds;
  size_t ngroups = o->subs < 4 ? o->subs : 4;
  subscriber_t *subs = calloc (o->subs, sizeof *subs);
  sub_group_t groups[4];
  s_start_groups (&f, groups, ngroups, subs, o->subs);

  conn_t c;
  s_connect (&c, o, false);
  uint64_t floor_seq = s_last_seq (&c);
  atomic_store (&f.floor_seq, floor_seq);
  uint64_t t0 = s_now ();
  uint64_t failed = s_generate_updates (&c, o, ids, nids, first_error);
  uint64_t gen_ns = s_now () - t0;
  uint64_t target = s_last_seq (&c);
  atomic_store (&f.target_seq, target);
  uint64_t give_up = s_now () + 10ULL * 1000000000ULL;
  bool all_done = false;
  while (!all_done && s_now () < give_up) {
    struct timespec ts = { 0, 2000000 };
    nanosleep (&ts, NULL);
    all_done = true;
    for (uint64_t i = 0; i < o->subs; i++)
      all_done = all_done && __atomic_load_n (&subs[i].done, __ATOMIC_ACQUIRE);
  }
  atomic_store (&f.stop, true);
  for (size_t g = 0; g < ngroups; g++)
    pthread_join (groups[g].thread, NULL);

  uint64_t events = target - floor_seq, delivered = 0, gaps = 0, end_ns = t0, complete = 0;
  for (uint64_t i = 0; i < o->subs; i++) {
    delivered += subs[i].received;
    gaps += subs[i].gaps;
    complete += subs[i].done;
    if (subs[i].last_event_ns > end_ns)
      end_ns = subs[i].last_event_ns;
  }
  double secs = (double) (end_ns - t0) / 1e9;
  printf ("{\"mode\": \"fanout\", \"subscribers\": %" PRIu64 ", \"updates\": %" PRIu64
          ", \"update_failures\": %" PRIu64 ", \"events\": %" PRIu64 ", \"delivered\": %" PRIu64
          ", \"lost\": %" PRIu64 ", \"gaps\": %" PRIu64 ", \"complete_subscribers\": %" PRIu64
          ", \"generate_s\": %.4f, \"elapsed_s\": %.4f, \"events_per_s\": %.1f"
          ", \"deliveries_per_s\": %.1f, \"first_error\": \"%s\"}\n",
          o->subs, o->n, failed, events, delivered, o->subs * events - delivered, gaps, complete,
          (double) gen_ns / 1e9, secs, secs > 0 ? (double) events / secs : 0.0,
          secs > 0 ? (double) delivered / secs : 0.0, first_error);
  s_close (&c);
  zmq_ctx_term (f.ctx);
  free (subs);
  free (list);
  return failed == 0 && delivered == o->subs * events ? 0 : 1;
}

/* ---- drain: kill what a run left ----------------------------------------- */

/* Ids of the containers whose id starts with "<prefix>-", newly allocated
 * (free each and the array). */
static size_t
s_list_prefixed (conn_t *c, const char *prefix, char ***out)
{
  reply_t r;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init (&sb);
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  uint64_t rid = s_sync_rid ();
  s_pack_head (&pk, "state", rid, 0);
  s_call_sync (c, &sb, rid, &r, s_now () + 30ULL * 1000000000ULL);
  msgpack_sbuffer_destroy (&sb);
  const msgpack_object *list = mp_map_get (r.body, "containers");
  size_t n = 0, plen = strlen (prefix);
  *out = NULL;
  if (list && list->type == MSGPACK_OBJECT_ARRAY) {
    *out = calloc (list->via.array.size + 1, sizeof **out);
    for (uint32_t i = 0; i < list->via.array.size; i++) {
      char *id = mp_get_strdup (&list->via.array.ptr[i], "id");
      if (id && strncmp (id, prefix, plen) == 0 && id[plen] == '-')
        (*out)[n++] = id;
      else
        free (id);
    }
  }
  s_reply_free (&r);
  return n;
}

static void
s_free_ids (char **ids, size_t n)
{
  for (size_t i = 0; i < n; i++)
    free (ids[i]);
  free (ids);
}

static void
s_send_kill (void *dealer, const char *id, uint64_t rid)
{
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init (&sb);
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  s_pack_head (&pk, "signal", rid, 2);
  mp_pack_kv_str (&pk, "id", id);
  mp_pack_kv_uint (&pk, "signal", 9);
  s_send (dealer, &sb);
  msgpack_sbuffer_destroy (&sb);
}

/* Thaws and SIGKILLs ids[0..n), C containers in flight.  Returns how many
 * of the 2n requests got no reply within REPLY_WAIT_NS of the last one
 * that did (the protocol promises one reply to every request). */
static uint64_t
s_kill_all (conn_t *c, char **ids, size_t n, uint64_t window, uint64_t deadline)
{
  uint64_t next = 0, got = 0, lost = 0, progress = s_now ();
  /* A paused container's processes cannot die of SIGKILL until thawed:
   * resume each first (a no-op for a running one), on the same DEALER so
   * the container actor sees the resume before the signal. */
  while (got < 2 * n && s_now () < deadline) {
    while (2 * next - got < 2 * window && next < n) {
      s_send_update (c->dealer, ids[next], false, 2 * next);
      s_send_kill (c->dealer, ids[next], 2 * next + 1);
      next++;
    }
    s_wait_readable (c->dealer, 100);
    reply_t r;
    while (s_recv_reply (c->dealer, &r)) {
      if (mp_get_uint (r.body, "rid", UINT64_MAX) < 2 * n)
        got++, progress = s_now ();
      s_reply_free (&r);
    }
    if (s_now () - progress > REPLY_WAIT_NS) {
      fprintf (stderr, "zcdload: %" PRIu64 " requests got no reply in 10 s\n", 2 * next - got);
      lost += 2 * next - got; /* count them lost and go on */
      got = 2 * next;
      progress = s_now ();
    }
  }
  return lost + (2 * n - got);
}

static int
s_mode_drain (const opts_t *o)
{
  conn_t c;
  char **ids;
  s_connect (&c, o, false);
  size_t n = s_list_prefixed (&c, o->prefix, &ids);
  uint64_t t0 = s_now (), deadline = t0 + (uint64_t) (o->timeout_s * 1e9);
  uint64_t lost = s_kill_all (&c, ids, n, o->c, deadline);
  s_free_ids (ids, n);
  size_t left = n;
  uint64_t retry_at = s_now () + 5ULL * 1000000000ULL;
  while (left > 0 && s_now () < deadline) {
    struct timespec ts = { 0, 50000000 };
    nanosleep (&ts, NULL);
    left = s_list_prefixed (&c, o->prefix, &ids);
    if (left > 0 && s_now () > retry_at) {
      for (size_t i = 0; i < left; i++) { /* replies dropped by s_call_sync */
        s_send_update (c.dealer, ids[i], false, UINT64_MAX - 1);
        s_send_kill (c.dealer, ids[i], UINT64_MAX - 1);
      }
      retry_at = s_now () + 5ULL * 1000000000ULL;
    }
    s_free_ids (ids, left);
  }
  printf ("{\"mode\": \"drain\", \"killed\": %zu, \"left\": %zu, \"lost_replies\": %" PRIu64
          ", \"elapsed_s\": %.3f}\n", n, left, lost, (double) (s_now () - t0) / 1e9);
  s_close (&c);
  return left == 0 ? 0 : 1;
}

static void
s_usage (void)
{
  fputs ("usage: zcdload start|call|fanout|drain -s STATE_DIR [-b BUNDLE] [-n N] [-c C]\n"
         "         [-p PREFIX] [-o FIRST] [-r RUNTIME] [-W] [-O OP] [-S SUBS] [-i IDS]\n"
         "         [-t TIMEOUT_S]   (see the top of bench/zcdload.c)\n",
         stderr);
  exit (2);
}

int
main (int argc, char **argv)
{
  opts_t o = { .n = 100, .c = 1, .op = "version", .prefix = "b", .timeout_s = 300 };
  if (argc < 2)
    s_usage ();
  const char *mode = argv[1];
  int ch;
  optind = 2;
  while ((ch = getopt (argc, argv, "s:b:n:c:p:o:r:WO:S:i:t:")) != -1) {
    switch (ch) {
      case 's': o.state_dir = optarg; break;
      case 'b': o.bundle = optarg; break;
      case 'n': o.n = strtoull (optarg, NULL, 10); break;
      case 'c': o.c = strtoull (optarg, NULL, 10); break;
      case 'p': o.prefix = optarg; break;
      case 'o': o.first = strtoull (optarg, NULL, 10); break;
      case 'r': o.runtime = optarg; break;
      case 'W': o.slot_until_reply = true; break;
      case 'O': o.op = optarg; break;
      case 'S': o.subs = strtoull (optarg, NULL, 10); break;
      case 'i': o.ids = optarg; break;
      case 't': o.timeout_s = strtod (optarg, NULL); break;
      default: s_usage ();
    }
  }
  if (!o.state_dir || o.c == 0)
    s_usage ();
  if (strcmp (mode, "start") == 0 && o.bundle)
    return s_mode_start (&o);
  if (strcmp (mode, "call") == 0)
    return s_mode_call (&o);
  if (strcmp (mode, "fanout") == 0)
    return s_mode_fanout (&o);
  if (strcmp (mode, "drain") == 0)
    return s_mode_drain (&o);
  s_usage ();
}
