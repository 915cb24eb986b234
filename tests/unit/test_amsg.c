/* core/amsg and core/amsg_gen (generated from schema/actors.json): every
 * message type packed and decoded back, with all its fields and with only
 * the required ones; copies that outlive the message; missing, mistyped
 * and out-of-range fields refused; and the typed dispatch of core/actor,
 * which picks the handler by the enum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "core/actor.h"
#include "core/amsg_gen.h"
#include "core/loop.h"
#include "core/mp.h"

/* A packed body, unpacked again: what a handler's decoder sees. */
typedef struct
{
  msgpack_sbuffer buf;
  msgpack_unpacked unpacked;
} packed_t;

static void
s_unpack (packed_t *p)
{
  msgpack_unpacked_init (&p->unpacked);
  zcd_error_t *err = NULL;
  if (mp_unpack (p->buf.data, p->buf.size, &p->unpacked, &err) < 0)
    fail_msg ("unpack: %s", err->msg);
  assert_int_equal (p->unpacked.data.type, MSGPACK_OBJECT_MAP);
}

static void
s_release (packed_t *p)
{
  msgpack_unpacked_destroy (&p->unpacked);
  msgpack_sbuffer_destroy (&p->buf);
}

/* "type" is a uint, the enum value; the map has `entries` entries. */
static void
s_check_envelope (packed_t *p, amsg_type_t type, uint32_t entries)
{
  const msgpack_object *t = mp_map_get (&p->unpacked.data, "type");
  assert_non_null (t);
  assert_int_equal (t->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  assert_int_equal (t->via.u64, type);
  assert_int_equal (p->unpacked.data.via.map.size, entries);
}

/* A bin decoded zero-copy points into the received bytes. */
static void
s_check_bin_in_buffer (packed_t *p, amsg_bin_t b, const char *want, size_t len)
{
  assert_int_equal (b.size, len);
  assert_memory_equal (b.ptr, want, len);
  assert_true (b.ptr >= p->buf.data && b.ptr + b.size <= p->buf.data + p->buf.size);
}

#define PACK(name, m, p)                                                                         \
  do                                                                                               \
    {                                                                                              \
      msgpack_sbuffer_init (&(p)->buf);                                                            \
      zcd_error_t *e_ = NULL;                                                                      \
      if (amsg_##name##_pack ((m), &(p)->buf, &e_) < 0)                                            \
        fail_msg ("pack " #name ": %s", e_->msg);                                                  \
      s_unpack (p);                                                                                \
    }                                                                                              \
  while (0)

#define DECODE(name, p, out)                                                                       \
  do                                                                                               \
    {                                                                                              \
      zcd_error_t *e_ = NULL;                                                                      \
      if (amsg_##name##_decode (&(p)->unpacked.data, (p)->unpacked.zone, (out), &e_) < 0)          \
        fail_msg ("decode " #name ": %s", e_->msg);                                                \
    }                                                                                              \
  while (0)

static const char s_view[] = "\x81\xa2id\xa4web1";

/* ---- round trips ---- */

static void
test_req_round_trip (void **state)
{
  amsg_req_t in = { .token = 1ULL << 40,
                    .op = PROTO_OP_CHECKPOINT_CREATE,
                    .body = { "\x80", 1 },
                    .bundle = "/b/web1",
                    .actor = "container:web1#3" };
  packed_t p;
  amsg_req_t out;
  PACK (req, &in, &p);
  s_check_envelope (&p, AMSG_REQ, 6);
  DECODE (req, &p, &out);
  assert_true (out.token == 1ULL << 40);
  assert_int_equal (out.op, PROTO_OP_CHECKPOINT_CREATE);
  s_check_bin_in_buffer (&p, out.body, "\x80", 1);
  assert_string_equal (out.bundle, "/b/web1");
  assert_string_equal (out.actor, "container:web1#3");
  s_release (&p);

  amsg_req_t bare = { .token = 7, .op = PROTO_OP_VERSION, .body = { "", 0 } };
  PACK (req, &bare, &p);
  s_check_envelope (&p, AMSG_REQ, 4);
  DECODE (req, &p, &out);
  assert_int_equal (out.token, 7);
  assert_int_equal (out.body.size, 0);
  assert_non_null (out.body.ptr); /* present, empty */
  assert_null (out.bundle);
  assert_null (out.actor);
  s_release (&p);
}

static void
test_reply_round_trip (void **state)
{
  msgpack_sbuffer result;
  msgpack_sbuffer_init (&result);
  msgpack_sbuffer_write (&result, s_view, sizeof s_view - 1);
  amsg_reply_t in = { .token = 9, .ok = true, .result = amsg_bin_of (&result), .after_events = true };
  packed_t p;
  amsg_reply_t out;
  PACK (reply, &in, &p);
  s_check_envelope (&p, AMSG_REPLY, 5);
  DECODE (reply, &p, &out);
  assert_int_equal (out.token, 9);
  assert_true (out.ok);
  assert_true (out.after_events);
  s_check_bin_in_buffer (&p, out.result, s_view, sizeof s_view - 1);
  assert_false (out.has_code);
  assert_null (out.message);
  s_release (&p);
  msgpack_sbuffer_destroy (&result);

  amsg_reply_t failed = { .token = 10, .has_code = true, .code = ZCD_E_INVALID_STATE,
                          .message = "container `web1` is paused" };
  PACK (reply, &failed, &p);
  s_check_envelope (&p, AMSG_REPLY, 6);
  DECODE (reply, &p, &out);
  assert_false (out.ok);
  assert_false (out.after_events);
  assert_null (out.result.ptr);
  assert_true (out.has_code);
  assert_int_equal (out.code, ZCD_E_INVALID_STATE);
  assert_string_equal (out.message, "container `web1` is paused");
  s_release (&p);
}

static void
test_event_round_trip (void **state)
{
  amsg_event_t in = {
    .etype = "exit", .id = "web1", .bundle = "/b", .init_pid = 4321, .processes = 1,
    .pid = "init", .has_system_pid = true, .system_pid = 4321, .has_status = true,
    .status = 137, .has_oom_killed = true, .oom_killed = true,
    .cgroup_procs = "/sys/fs/cgroup/web1/cgroup.procs", .view = { s_view, sizeof s_view - 1 },
    .ack = "init",
  };
  packed_t p;
  amsg_event_t out;
  PACK (event, &in, &p);
  s_check_envelope (&p, AMSG_EVENT, 13);
  DECODE (event, &p, &out);
  assert_string_equal (out.etype, "exit");
  assert_string_equal (out.id, "web1");
  assert_string_equal (out.bundle, "/b");
  assert_int_equal (out.init_pid, 4321);
  assert_int_equal (out.processes, 1);
  assert_string_equal (out.pid, "init");
  assert_true (out.has_system_pid && out.system_pid == 4321);
  assert_true (out.has_status && out.status == 137);
  assert_true (out.has_oom_killed && out.oom_killed);
  assert_string_equal (out.cgroup_procs, "/sys/fs/cgroup/web1/cgroup.procs");
  s_check_bin_in_buffer (&p, out.view, s_view, sizeof s_view - 1);
  assert_string_equal (out.ack, "init");
  s_release (&p);

  amsg_event_t bare = { .etype = "pause", .id = "web1", .bundle = "/b",
                        .view = { s_view, sizeof s_view - 1 } };
  PACK (event, &bare, &p);
  s_check_envelope (&p, AMSG_EVENT, 7);
  DECODE (event, &p, &out);
  assert_null (out.pid);
  assert_false (out.has_system_pid);
  assert_false (out.has_status);
  assert_false (out.has_oom_killed);
  assert_null (out.cgroup_procs);
  assert_null (out.ack);
  s_release (&p);
}

static void
test_started_round_trip (void **state)
{
  amsg_started_t in = {
    .id = "web1", .token = 3, .ok = true, .etype = "start-container", .bundle = "/b",
    .has_init_pid = true, .init_pid = 77, .has_processes = true, .processes = 1,
    .pid = "init", .has_system_pid = true, .system_pid = 77, .cgroup_procs = "/cg",
    .view = { s_view, sizeof s_view - 1 },
  };
  packed_t p;
  amsg_started_t out;
  PACK (started, &in, &p);
  s_check_envelope (&p, AMSG_STARTED, 12);
  DECODE (started, &p, &out);
  assert_string_equal (out.id, "web1");
  assert_int_equal (out.token, 3);
  assert_true (out.ok);
  assert_string_equal (out.etype, "start-container");
  assert_string_equal (out.bundle, "/b");
  assert_true (out.has_init_pid && out.init_pid == 77);
  assert_true (out.has_processes && out.processes == 1);
  assert_string_equal (out.pid, "init");
  assert_true (out.has_system_pid && out.system_pid == 77);
  assert_string_equal (out.cgroup_procs, "/cg");
  s_check_bin_in_buffer (&p, out.view, s_view, sizeof s_view - 1);
  assert_false (out.has_code);
  s_release (&p);

  amsg_started_t failed = { .id = "web1", .token = 4, .has_code = true,
                            .code = ZCD_E_RUNTIME_ERROR, .message = "runc: no such file" };
  PACK (started, &failed, &p);
  s_check_envelope (&p, AMSG_STARTED, 6);
  DECODE (started, &p, &out);
  assert_false (out.ok);
  assert_int_equal (out.code, ZCD_E_RUNTIME_ERROR);
  assert_string_equal (out.message, "runc: no such file");
  assert_null (out.view.ptr);
  assert_null (out.etype);
  s_release (&p);
}

static void
test_view_gone_logged_round_trip (void **state)
{
  amsg_view_t view = { .id = "web1", .bundle = "/b", .init_pid = 1, .processes = 2,
                       .cgroup_procs = "/cg", .view = { s_view, sizeof s_view - 1 } };
  packed_t p;
  amsg_view_t vout;
  PACK (view, &view, &p);
  s_check_envelope (&p, AMSG_VIEW, 7);
  DECODE (view, &p, &vout);
  assert_string_equal (vout.id, "web1");
  assert_int_equal (vout.processes, 2);
  assert_string_equal (vout.cgroup_procs, "/cg");
  s_check_bin_in_buffer (&p, vout.view, s_view, sizeof s_view - 1);
  s_release (&p);

  amsg_gone_t gone = { .id = "web1" }, gout;
  PACK (gone, &gone, &p);
  s_check_envelope (&p, AMSG_GONE, 2);
  DECODE (gone, &p, &gout);
  assert_string_equal (gout.id, "web1");
  s_release (&p);

  amsg_logged_t logged = { .tag = "init" }, lout;
  PACK (logged, &logged, &p);
  s_check_envelope (&p, AMSG_LOGGED, 2);
  DECODE (logged, &p, &lout);
  assert_string_equal (lout.tag, "init");
  s_release (&p);
}

static void
test_stats_messages_round_trip (void **state)
{
  const char *ids[] = { "web1", "db", NULL };
  amsg_collect_t collect = { .token = 5, .ids = ids }, cout;
  packed_t p;
  PACK (collect, &collect, &p);
  s_check_envelope (&p, AMSG_COLLECT, 3);
  DECODE (collect, &p, &cout);
  assert_int_equal (cout.token, 5);
  assert_string_equal (cout.ids[0], "web1");
  assert_string_equal (cout.ids[1], "db");
  assert_null (cout.ids[2]);
  s_release (&p);

  const char *none[] = { NULL };
  amsg_collect_t empty = { .token = 6, .ids = none };
  PACK (collect, &empty, &p);
  DECODE (collect, &p, &cout);
  assert_non_null (cout.ids);
  assert_null (cout.ids[0]);
  s_release (&p);

  const char *ctl[] = { "memory=/sys/fs/cgroup/memory/web1", "pids=/sys/fs/cgroup/pids/web1",
                        NULL };
  amsg_cgroup_t cg = { .id = "web1", .version = 1, .unified = "/sys/fs/cgroup/unified/web1",
                       .controllers = ctl },
                cgout;
  PACK (cgroup, &cg, &p);
  s_check_envelope (&p, AMSG_CGROUP, 5);
  DECODE (cgroup, &p, &cgout);
  assert_int_equal (cgout.version, 1);
  assert_string_equal (cgout.unified, "/sys/fs/cgroup/unified/web1");
  assert_string_equal (cgout.controllers[1], "pids=/sys/fs/cgroup/pids/web1");
  assert_null (cgout.controllers[2]);
  s_release (&p);

  amsg_uncgroup_t un = { .id = "web1" }, unout;
  PACK (uncgroup, &un, &p);
  s_check_envelope (&p, AMSG_UNCGROUP, 2);
  DECODE (uncgroup, &p, &unout);
  assert_string_equal (unout.id, "web1");
  s_release (&p);
}

static void
test_type_names (void **state)
{
  assert_string_equal (amsg_type_name (AMSG_REQ), "req");
  assert_string_equal (amsg_type_name (AMSG_UNCGROUP), "uncgroup");
  assert_null (amsg_type_name (AMSG_NONE));
  assert_null (amsg_type_name (AMSG_TYPE_COUNT));
  assert_null (amsg_type_name (UINT64_MAX));
}

/* A copy kept past the handler owns every byte it points to. */
static void
test_dup_outlives_the_message (void **state)
{
  const char *ctl[] = { "memory=/m/web1", "pids=/p/web1", NULL };
  amsg_cgroup_t cg = { .id = "web1", .version = 1, .controllers = ctl };
  packed_t p;
  amsg_cgroup_t decoded;
  PACK (cgroup, &cg, &p);
  DECODE (cgroup, &p, &decoded);
  amsg_cgroup_t *kept = amsg_cgroup_dup (&decoded);
  s_release (&p); /* the zone and the bytes are gone */
  assert_string_equal (kept->id, "web1");
  assert_int_equal (kept->version, 1);
  assert_null (kept->unified);
  assert_string_equal (kept->controllers[0], "memory=/m/web1");
  assert_string_equal (kept->controllers[1], "pids=/p/web1");
  assert_null (kept->controllers[2]);
  free (kept);

  amsg_req_t req = { .token = 3, .op = PROTO_OP_EXEC, .body = { "\x81\xa1" "a\x01", 4 },
                     .actor = "container:web1#1" };
  PACK (req, &req, &p);
  amsg_req_t rd;
  DECODE (req, &p, &rd);
  amsg_req_t *rk = amsg_req_dup (&rd);
  memset (p.buf.data, 0, p.buf.size);
  s_release (&p);
  assert_int_equal (rk->token, 3);
  assert_int_equal (rk->op, PROTO_OP_EXEC);
  assert_int_equal (rk->body.size, 4);
  assert_memory_equal (rk->body.ptr, "\x81\xa1" "a\x01", 4);
  assert_string_equal (rk->actor, "container:web1#1");
  assert_null (rk->bundle);
  free (rk);
}

/* ---- refusals ---- */

/* Decode a hand-built map of `n` pairs written by `fill`; returns the
 * decoder's result and leaves its error in *err. */
typedef void (*fill_fn) (msgpack_packer *pk);

static int
s_decode_event (size_t n, fill_fn fill, zcd_error_t **err)
{
  msgpack_sbuffer sb;
  msgpack_sbuffer_init (&sb);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, n);
  fill (&pk);
  msgpack_unpacked u;
  msgpack_unpacked_init (&u);
  assert_int_equal (mp_unpack (sb.data, sb.size, &u, NULL), 0);
  amsg_event_t out;
  int rc = amsg_event_decode (&u.data, u.zone, &out, err);
  msgpack_unpacked_destroy (&u);
  msgpack_sbuffer_destroy (&sb);
  return rc;
}

static void
s_event_required (msgpack_packer *pk)
{
  mp_pack_kv_uint (pk, "type", AMSG_EVENT);
  mp_pack_kv_str (pk, "etype", "pause");
  mp_pack_kv_str (pk, "id", "web1");
  mp_pack_kv_str (pk, "bundle", "/b");
  mp_pack_kv_uint (pk, "init_pid", 1);
  mp_pack_kv_uint (pk, "processes", 1);
  mp_pack_str (pk, "view");
  msgpack_pack_bin (pk, 0);
}

static void
s_fill_complete (msgpack_packer *pk)
{
  s_event_required (pk);
}

static void
s_fill_no_view (msgpack_packer *pk)
{
  mp_pack_kv_uint (pk, "type", AMSG_EVENT);
  mp_pack_kv_str (pk, "etype", "pause");
  mp_pack_kv_str (pk, "id", "web1");
  mp_pack_kv_str (pk, "bundle", "/b");
  mp_pack_kv_uint (pk, "init_pid", 1);
  mp_pack_kv_uint (pk, "processes", 1);
}

static void
s_fill_big_pid (msgpack_packer *pk)
{
  s_event_required (pk);
  mp_pack_kv_uint (pk, "system_pid", 1ULL << 32);
}

static void
s_fill_str_status (msgpack_packer *pk)
{
  s_event_required (pk);
  mp_pack_kv_str (pk, "status", "0");
}

static void
s_fill_nul_in_id (msgpack_packer *pk)
{
  mp_pack_kv_uint (pk, "type", AMSG_EVENT);
  mp_pack_kv_str (pk, "etype", "pause");
  mp_pack_str (pk, "id");
  mp_pack_strn (pk, "we\0b1", 5);
  mp_pack_kv_str (pk, "bundle", "/b");
  mp_pack_kv_uint (pk, "init_pid", 1);
  mp_pack_kv_uint (pk, "processes", 1);
  mp_pack_str (pk, "view");
  msgpack_pack_bin (pk, 0);
}

static void
s_fill_twice (msgpack_packer *pk)
{
  s_event_required (pk);
  mp_pack_kv_str (pk, "id", "web2");
}

static void
s_fill_view_as_str (msgpack_packer *pk)
{
  s_fill_no_view (pk);
  mp_pack_kv_str (pk, "view", "not bin");
}

static void
s_fill_nil_optional_and_extra (msgpack_packer *pk)
{
  s_event_required (pk);
  mp_pack_str (pk, "pid");
  msgpack_pack_nil (pk);
  mp_pack_kv_str (pk, "from_a_newer_sender", "ignored");
}

static void
s_expect_refused (int rc, zcd_error_t **err, const char *needle)
{
  assert_int_equal (rc, -1);
  assert_non_null (*err);
  assert_int_equal ((*err)->code, ZCD_E_INTERNAL);
  if (strstr ((*err)->msg, needle) == NULL)
    fail_msg ("error `%s` lacks `%s`", (*err)->msg, needle);
  zcd_error_free (err);
}

static void
test_decode_refuses_bad_fields (void **state)
{
  zcd_error_t *err = NULL;
  assert_int_equal (s_decode_event (7, s_fill_complete, &err), 0);
  s_expect_refused (s_decode_event (6, s_fill_no_view, &err), &err, "field `view`: required");
  s_expect_refused (s_decode_event (8, s_fill_big_pid, &err), &err, "field `system_pid`: wrong type");
  s_expect_refused (s_decode_event (8, s_fill_str_status, &err), &err, "field `status`");
  s_expect_refused (s_decode_event (7, s_fill_nul_in_id, &err), &err, "field `id`");
  s_expect_refused (s_decode_event (8, s_fill_twice, &err), &err, "given twice");
  s_expect_refused (s_decode_event (7, s_fill_view_as_str, &err), &err, "want bin");
  /* nil is an absent optional field; unknown keys are skipped */
  assert_int_equal (s_decode_event (9, s_fill_nil_optional_and_extra, &err), 0);

  /* Not a map at all. */
  msgpack_object nil = { .type = MSGPACK_OBJECT_NIL };
  amsg_gone_t gone;
  s_expect_refused (amsg_gone_decode (&nil, NULL, &gone, &err), &err, "not a map");
}

static void
test_decode_refuses_enum_out_of_range (void **state)
{
  msgpack_sbuffer sb;
  msgpack_sbuffer_init (&sb);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 4);
  mp_pack_kv_uint (&pk, "type", AMSG_REPLY);
  mp_pack_kv_uint (&pk, "token", 1);
  mp_pack_kv_bool (&pk, "ok", false);
  mp_pack_kv_uint (&pk, "code", ZCD_CODE_COUNT);
  msgpack_unpacked u;
  msgpack_unpacked_init (&u);
  assert_int_equal (mp_unpack (sb.data, sb.size, &u, NULL), 0);
  amsg_reply_t out;
  zcd_error_t *err = NULL;
  /* after_events is missing too: the bad code is found first */
  s_expect_refused (amsg_reply_decode (&u.data, u.zone, &out, &err), &err, "field `code`");
  msgpack_unpacked_destroy (&u);
  msgpack_sbuffer_destroy (&sb);
}

static void
test_pack_refuses_missing_and_out_of_range (void **state)
{
  msgpack_sbuffer sb;
  msgpack_sbuffer_init (&sb);
  zcd_error_t *err = NULL;
  amsg_gone_t gone = { .id = NULL };
  s_expect_refused (amsg_gone_pack (&gone, &sb, &err), &err, "field `id`: required");
  amsg_req_t req = { .op = PROTO_OP_COUNT, .body = { "", 0 } };
  s_expect_refused (amsg_req_pack (&req, &sb, &err), &err, "field `op`: out of range");
  amsg_collect_t collect = { .token = 1 };
  s_expect_refused (amsg_collect_pack (&collect, &sb, &err), &err, "field `ids`: required");
  amsg_event_t ev = { .etype = "x", .id = "y", .bundle = "z", .view = { NULL, 3 } };
  s_expect_refused (amsg_event_pack (&ev, &sb, &err), &err, "field `view`");
  assert_int_equal (sb.size, 0); /* nothing was written */
  msgpack_sbuffer_destroy (&sb);
}

/* ---- dispatch through the actor runtime ---- */

typedef struct
{
  int collects, cgroups, uncgroups;
  uint64_t token;
  char first_id[32];
  char from[32];
  char controller[64];
  bool stop_on_uncgroup;
} stats_probe_t;

static void
s_on_collect (actor_t *self, const char *from, const amsg_collect_t *m)
{
  stats_probe_t *p = actor_state (self);
  p->collects++;
  p->token = m->token;
  snprintf (p->first_id, sizeof p->first_id, "%s", m->ids[0] ? m->ids[0] : "");
  snprintf (p->from, sizeof p->from, "%s", from);
}

static void
s_on_cgroup (actor_t *self, const char *from, const amsg_cgroup_t *m)
{
  stats_probe_t *p = actor_state (self);
  p->cgroups++;
  snprintf (p->controller, sizeof p->controller, "%s", m->controllers[0]);
}

static void
s_on_uncgroup (actor_t *self, const char *from, const amsg_uncgroup_t *m)
{
  stats_probe_t *p = actor_state (self);
  p->uncgroups++;
  if (p->stop_on_uncgroup)
    loop_stop (actor_loop (self));
}

static const amsg_stats_handlers_t s_stats_handlers = {
  .on_collect = s_on_collect,
  .on_cgroup = s_on_cgroup,
  .on_uncgroup = s_on_uncgroup,
};

static const actor_class_t s_stats_class = {
  .kind = "stats",
  AMSG_STATS_DISPATCH (&s_stats_handlers),
};

/* A table with a hole: cgroup messages are refused. */
static const amsg_stats_handlers_t s_partial_handlers = {
  .on_collect = s_on_collect,
  .on_uncgroup = s_on_uncgroup,
};

static const actor_class_t s_partial_class = {
  .kind = "partial",
  AMSG_STATS_DISPATCH (&s_partial_handlers),
};

static void
s_stop_now (loop_t *loop, void *arg)
{
  loop_stop (loop);
}

static void
test_dispatch_by_enum (void **state)
{
  void *ctx = zmq_ctx_new ();
  loop_t *loop = loop_new ();
  actor_system_t *sys = actor_system_new (loop, ctx, 100, NULL);
  assert_non_null (sys);
  stats_probe_t probe = { .stop_on_uncgroup = true }, partial = { .stop_on_uncgroup = true };
  assert_non_null (actor_new (sys, &s_stats_class, "stats", &probe, NULL));
  assert_non_null (actor_new (sys, &s_partial_class, "partial", &partial, NULL));

  const char *ids[] = { "web1", NULL };
  amsg_collect_t collect = { .token = 42, .ids = ids };
  const char *ctl[] = { "memory=/m/web1", NULL };
  amsg_cgroup_t cg = { .id = "web1", .version = 1, .controllers = ctl };
  amsg_logged_t logged = { .tag = "init" }; /* not a stats message */
  amsg_uncgroup_t un = { .id = "web1" };
  zcd_error_t *err = NULL;
  for (int i = 0; i < 2; i++)
    {
      const char *to = i == 0 ? "stats" : "partial";
      assert_int_equal (amsg_collect_send (sys, "supervisor", to, &collect, &err), 0);
      assert_int_equal (amsg_cgroup_send (sys, "container:web1", to, &cg, &err), 0);
      assert_int_equal (amsg_logged_send (sys, "supervisor", to, &logged, &err), 0);
      assert_int_equal (amsg_uncgroup_send (sys, "container:web1", to, &un, &err), 0);
    }
  /* A typed body missing its required field: decoded, refused, counted. */
  msgpack_sbuffer sb;
  msgpack_sbuffer_init (&sb);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 1);
  mp_pack_kv_uint (&pk, "type", AMSG_COLLECT);
  assert_int_equal (actor_send_raw (sys, "test", "stats", sb.data, sb.size, &err), 0);
  msgpack_sbuffer_destroy (&sb);
  /* An unpackable message is a failed send, counted. */
  amsg_gone_t bad = { .id = NULL };
  assert_int_equal (amsg_gone_send (sys, "test", "stats", &bad, &err), -1);
  assert_int_equal (err->code, ZCD_E_INTERNAL);
  zcd_error_free (&err);
  assert_int_equal (actor_system_send_failures (sys), 1);

  loop_timer_t *guard = loop_timer_add (loop, 5000, s_stop_now, NULL);
  assert_int_equal (loop_run (loop), 0);
  assert_true (probe.uncgroups == 1 && partial.uncgroups == 1); /* not the guard */
  loop_timer_cancel (loop, guard);

  assert_int_equal (probe.collects, 1);
  assert_int_equal (probe.token, 42);
  assert_string_equal (probe.first_id, "web1");
  assert_string_equal (probe.from, "supervisor");
  assert_int_equal (probe.cgroups, 1);
  assert_string_equal (probe.controller, "memory=/m/web1");
  assert_int_equal (probe.uncgroups, 1);
  assert_int_equal (partial.collects, 1);
  assert_int_equal (partial.cgroups, 0);
  assert_int_equal (partial.uncgroups, 1);
  /* Refused: "logged" twice (not a stats message), "cgroup" by the
   * partial table, and the collect without a token (one more turn, in
   * case the stop came before it). */
  assert_non_null (loop_timer_add (loop, 0, s_stop_now, NULL));
  assert_int_equal (loop_run (loop), 0);
  actor_system_stats_t st;
  actor_system_get_stats (sys, &st);
  assert_int_equal (st.refused, 4);
  assert_int_equal (probe.collects, 1);

  actor_system_destroy (&sys);
  loop_destroy (&loop);
  zmq_ctx_term (ctx);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_req_round_trip),
    cmocka_unit_test (test_reply_round_trip),
    cmocka_unit_test (test_event_round_trip),
    cmocka_unit_test (test_started_round_trip),
    cmocka_unit_test (test_view_gone_logged_round_trip),
    cmocka_unit_test (test_stats_messages_round_trip),
    cmocka_unit_test (test_type_names),
    cmocka_unit_test (test_dup_outlives_the_message),
    cmocka_unit_test (test_decode_refuses_bad_fields),
    cmocka_unit_test (test_decode_refuses_enum_out_of_range),
    cmocka_unit_test (test_pack_refuses_missing_and_out_of_range),
    cmocka_unit_test (test_dispatch_by_enum),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
