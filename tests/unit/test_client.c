/* libzcd against a fake daemon: a ROUTER served from a thread (this test
 * only; the daemon itself is single-threaded) answers requests from a
 * shared event log, and the test thread publishes live events on an XPUB,
 * whose subscription messages tell when the subscriber is really there. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "core/mp.h"
#include "lib/zcd_client.h"

#define LOG_MAX 4096
#define WAIT_MS 10000

typedef struct
{
  uint64_t seq;
  char id[16];
} logged_t;

typedef struct
{
  void *ctx;
  char dir[64];
  char cmd_ep[128], evt_ep[128];
  pthread_t thread;
  void *pipe; /* test end of the stop pipe */
  void *xpub;
  pthread_mutex_t lock;
  logged_t log[LOG_MAX];
  size_t n_log;
  uint64_t events_requests; /* replays served */
} fake_t;

/* ---- fake daemon: the ROUTER side ---------------------------------- */

typedef struct
{
  zmq_msg_t frames[8];
  int n;
} request_t;

static void
s_pack_s (msgpack_packer *pk, const char *s)
{
  mp_pack_str (pk, s);
}

/* Send the envelope of req (all frames but the body), then body. */
static void
s_reply (void *router, request_t *req, bool keep_envelope, const msgpack_sbuffer *body)
{
  int upto = keep_envelope ? req->n - 1 : 1; /* frame 0 is the identity */
  for (int i = 0; i < upto; i++)
    zmq_send (router, zmq_msg_data (&req->frames[i]), zmq_msg_size (&req->frames[i]), ZMQ_SNDMORE);
  zmq_send (router, body->data, body->size, 0);
}

static void
s_pack_rid (msgpack_packer *pk, const msgpack_object *req)
{
  s_pack_s (pk, "rid");
  const msgpack_object *rid = mp_map_get (req, "rid");
  if (rid)
    msgpack_pack_object (pk, *rid);
  else
    msgpack_pack_nil (pk);
}

static void
s_pack_event (msgpack_packer *pk, uint64_t seq, const char *id)
{
  msgpack_pack_map (pk, 5);
  mp_pack_kv_uint (pk, "seq", seq);
  mp_pack_kv_str (pk, "type", "exit");
  mp_pack_kv_str (pk, "id", id);
  mp_pack_kv_str (pk, "pid", "init");
  mp_pack_kv_uint (pk, "status", seq % 256);
}

static void
s_serve_events (fake_t *fake, void *router, request_t *req, const msgpack_object *body)
{
  uint64_t since = mp_get_uint (body, "since_seq", 0);
  char *id = mp_get_strdup (body, "id");
  msgpack_sbuffer sbuf;
  msgpack_sbuffer_init (&sbuf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
  pthread_mutex_lock (&fake->lock);
  fake->events_requests++;
  for (size_t i = 0; i < fake->n_log; i++)
    {
      const logged_t *e = &fake->log[i];
      if (e->seq <= since || (id && strcmp (id, e->id) != 0))
        continue;
      msgpack_sbuffer_clear (&sbuf);
      msgpack_pack_map (&pk, 2);
      s_pack_rid (&pk, body);
      s_pack_s (&pk, "event");
      s_pack_event (&pk, e->seq, e->id);
      s_reply (router, req, true, &sbuf);
    }
  uint64_t last = fake->n_log ? fake->log[fake->n_log - 1].seq : 0;
  pthread_mutex_unlock (&fake->lock);
  msgpack_sbuffer_clear (&sbuf);
  msgpack_pack_map (&pk, 3);
  s_pack_rid (&pk, body);
  mp_pack_kv_bool (&pk, "ok", true);
  mp_pack_kv_uint (&pk, "last_seq", last);
  s_reply (router, req, true, &sbuf);
  msgpack_sbuffer_destroy (&sbuf);
  free (id);
}

static void
s_serve_state (fake_t *fake, void *router, request_t *req, const msgpack_object *body)
{
  msgpack_sbuffer sbuf;
  msgpack_sbuffer_init (&sbuf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
  pthread_mutex_lock (&fake->lock);
  uint64_t last = fake->n_log ? fake->log[fake->n_log - 1].seq : 0;
  pthread_mutex_unlock (&fake->lock);
  msgpack_pack_map (&pk, 4);
  s_pack_rid (&pk, body);
  mp_pack_kv_bool (&pk, "ok", true);
  mp_pack_kv_uint (&pk, "last_seq", last);
  s_pack_s (&pk, "containers");
  msgpack_pack_array (&pk, 0);
  s_reply (router, req, true, &sbuf);
  msgpack_sbuffer_destroy (&sbuf);
}

/* Every other op: an ok reply saying how the request was framed, with the
 * request itself under "req"; "fail" gets an error. */
static void
s_serve_echo (void *router, request_t *req, const msgpack_object *body, bool keep_envelope)
{
  msgpack_sbuffer sbuf;
  msgpack_sbuffer_init (&sbuf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
  if (mp_str_eq (mp_map_get (body, "op"), "fail"))
    {
      msgpack_pack_map (&pk, 3);
      s_pack_rid (&pk, body);
      mp_pack_kv_bool (&pk, "ok", false);
      s_pack_s (&pk, "error");
      msgpack_pack_map (&pk, 2);
      mp_pack_kv_str (&pk, "code", "not_found");
      mp_pack_kv_str (&pk, "message", "no such container x");
    }
  else
    {
      msgpack_pack_map (&pk, 6);
      s_pack_rid (&pk, body);
      mp_pack_kv_bool (&pk, "ok", true);
      mp_pack_kv_uint (&pk, "frames", (uint64_t) req->n);
      mp_pack_kv_bool (&pk, "delimited", req->n == 3 && zmq_msg_size (&req->frames[1]) == 0);
      mp_pack_kv_uint (&pk, "last_seq", 0);
      s_pack_s (&pk, "req");
      msgpack_pack_object (&pk, *body);
    }
  s_reply (router, req, keep_envelope, &sbuf);
  msgpack_sbuffer_destroy (&sbuf);
}

static void
s_request_close (request_t *req)
{
  for (int i = 0; i < req->n; i++)
    zmq_msg_close (&req->frames[i]);
  req->n = 0;
}

/* "hold" is answered only when a "release" comes, just before the release's
 * own reply: the client sees replies out of request order. */
static void
s_serve_one (fake_t *fake, void *router, request_t *req, request_t *held)
{
  zmq_msg_t *last = &req->frames[req->n - 1];
  msgpack_unpacked up;
  msgpack_unpacked_init (&up);
  if (mp_unpack (zmq_msg_data (last), zmq_msg_size (last), &up, NULL) < 0)
    goto done;
  const msgpack_object *body = &up.data;
  const msgpack_object *op = mp_map_get (body, "op");
  if (mp_str_eq (op, "events"))
    s_serve_events (fake, router, req, body);
  else if (mp_str_eq (op, "state"))
    s_serve_state (fake, router, req, body);
  else if (mp_str_eq (op, "never"))
    ;
  else if (mp_str_eq (op, "hold"))
    {
      s_request_close (held);
      *held = *req;
      req->n = 0;
    }
  else if (mp_str_eq (op, "release"))
    {
      if (held->n)
        {
          zmq_msg_t *held_last = &held->frames[held->n - 1];
          msgpack_unpacked held_up;
          msgpack_unpacked_init (&held_up);
          if (mp_unpack (zmq_msg_data (held_last), zmq_msg_size (held_last), &held_up, NULL) == 0)
            s_serve_echo (router, held, &held_up.data, true);
          msgpack_unpacked_destroy (&held_up);
          s_request_close (held);
        }
      s_serve_echo (router, req, body, true);
    }
  else
    s_serve_echo (router, req, body, !mp_str_eq (op, "no_delim"));
done:
  msgpack_unpacked_destroy (&up);
  s_request_close (req);
}

static void *
s_server (void *arg)
{
  fake_t *fake = arg;
  void *router = zmq_socket (fake->ctx, ZMQ_ROUTER);
  void *pipe = zmq_socket (fake->ctx, ZMQ_PAIR);
  int unlimited = 0;
  /* a replay is many messages at once; a ROUTER drops past its HWM */
  zmq_setsockopt (router, ZMQ_SNDHWM, &unlimited, sizeof unlimited);
  zmq_bind (router, fake->cmd_ep);
  zmq_connect (pipe, "inproc://fake-stop");
  zmq_send (pipe, "up", 2, 0);
  request_t held = { .n = 0 };
  for (;;)
    {
      zmq_pollitem_t items[] = { { router, 0, ZMQ_POLLIN, 0 }, { pipe, 0, ZMQ_POLLIN, 0 } };
      if (zmq_poll (items, 2, -1) < 0 || (items[1].revents & ZMQ_POLLIN))
        break;
      request_t req = { .n = 0 };
      int more = 1;
      while (more && req.n < 8)
        {
          zmq_msg_init (&req.frames[req.n]);
          zmq_msg_recv (&req.frames[req.n], router, 0);
          more = zmq_msg_more (&req.frames[req.n]);
          req.n++;
        }
      if (req.n >= 2)
        s_serve_one (fake, router, &req, &held);
      s_request_close (&req);
    }
  s_request_close (&held);
  zmq_close (router);
  zmq_close (pipe);
  return NULL;
}

/* ---- fixture ------------------------------------------------------- */

static int
s_setup (void **state)
{
  fake_t *fake = calloc (1, sizeof *fake);
  strcpy (fake->dir, "/tmp/zcd-test-client-XXXXXX");
  assert_non_null (mkdtemp (fake->dir));
  snprintf (fake->cmd_ep, sizeof fake->cmd_ep, "ipc://%s/cmd.sock", fake->dir);
  snprintf (fake->evt_ep, sizeof fake->evt_ep, "ipc://%s/evt.sock", fake->dir);
  pthread_mutex_init (&fake->lock, NULL);
  fake->ctx = zmq_ctx_new ();
  fake->pipe = zmq_socket (fake->ctx, ZMQ_PAIR);
  assert_int_equal (zmq_bind (fake->pipe, "inproc://fake-stop"), 0);
  fake->xpub = zmq_socket (fake->ctx, ZMQ_XPUB);
  int one = 1, zero = 0;
  zmq_setsockopt (fake->xpub, ZMQ_XPUB_VERBOSE, &one, sizeof one);
  zmq_setsockopt (fake->xpub, ZMQ_LINGER, &zero, sizeof zero);
  assert_int_equal (zmq_bind (fake->xpub, fake->evt_ep), 0);
  assert_int_equal (pthread_create (&fake->thread, NULL, s_server, fake), 0);
  char up[2];
  assert_int_equal (zmq_recv (fake->pipe, up, 2, 0), 2); /* the ROUTER is bound */
  *state = fake;
  return 0;
}

static int
s_teardown (void **state)
{
  fake_t *fake = *state;
  zmq_send (fake->pipe, "$TERM", 5, 0);
  pthread_join (fake->thread, NULL);
  zmq_close (fake->pipe);
  zmq_close (fake->xpub);
  zmq_ctx_term (fake->ctx);
  char path[160];
  snprintf (path, sizeof path, "%s/cmd.sock", fake->dir);
  unlink (path);
  snprintf (path, sizeof path, "%s/evt.sock", fake->dir);
  unlink (path);
  rmdir (fake->dir);
  pthread_mutex_destroy (&fake->lock);
  free (fake);
  return 0;
}

static void
s_log_append (fake_t *fake, uint64_t seq, const char *id)
{
  pthread_mutex_lock (&fake->lock);
  assert_true (fake->n_log < LOG_MAX);
  fake->log[fake->n_log].seq = seq;
  snprintf (fake->log[fake->n_log].id, sizeof fake->log[0].id, "%s", id);
  fake->n_log++;
  pthread_mutex_unlock (&fake->lock);
}

static const char *
s_id_of (uint64_t seq)
{
  return seq % 3 == 0 ? "b" : "a";
}

static void
s_publish (fake_t *fake, uint64_t seq)
{
  char topic[64];
  snprintf (topic, sizeof topic, "%s/exit", s_id_of (seq));
  msgpack_sbuffer sbuf;
  msgpack_sbuffer_init (&sbuf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
  s_pack_event (&pk, seq, s_id_of (seq));
  zmq_send (fake->xpub, topic, strlen (topic), ZMQ_SNDMORE | ZMQ_DONTWAIT);
  zmq_send (fake->xpub, sbuf.data, sbuf.size, ZMQ_DONTWAIT);
  msgpack_sbuffer_destroy (&sbuf);
}

static void
s_publish_heartbeat (fake_t *fake, uint64_t last_seq)
{
  msgpack_sbuffer sbuf;
  msgpack_sbuffer_init (&sbuf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 2);
  mp_pack_kv_uint (&pk, "last_seq", last_seq);
  mp_pack_kv_str (&pk, "boot_id", "boot");
  zmq_send (fake->xpub, "/heartbeat", 10, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  zmq_send (fake->xpub, sbuf.data, sbuf.size, ZMQ_DONTWAIT);
  msgpack_sbuffer_destroy (&sbuf);
}

/* Block until the subscriber's subscription reached the XPUB. */
static void
s_wait_subscribed (fake_t *fake)
{
  zmq_pollitem_t item = { fake->xpub, 0, ZMQ_POLLIN, 0 };
  assert_int_equal (zmq_poll (&item, 1, WAIT_MS), 1);
  unsigned char msg[64];
  assert_true (zmq_recv (fake->xpub, msg, sizeof msg, 0) >= 1);
  assert_int_equal (msg[0], 1);
}

static uint64_t
s_replays_served (fake_t *fake)
{
  pthread_mutex_lock (&fake->lock);
  uint64_t n = fake->events_requests;
  pthread_mutex_unlock (&fake->lock);
  return n;
}

/* ---- builder --------------------------------------------------------- */

static void
test_body_builder_nests_and_counts (void **state)
{
  zcd_body_t *body = zcd_body_new ("exec");
  zcd_body_str (body, "id", "web1");
  const char *args[] = { "sh", "-c", "true", NULL };
  zcd_body_strv (body, "args", args);
  zcd_body_map_open (body, "user");
  zcd_body_uint (body, "uid", 7);
  zcd_body_array_open (body, "additional_gids");
  zcd_body_uint (body, NULL, 10);
  zcd_body_uint (body, NULL, 11);
  zcd_body_close (body);
  zcd_body_close (body);
  zcd_body_int (body, "neg", -5);
  zcd_body_bool (body, "terminal", true);
  zcd_body_str (body, "nothing", NULL);
  size_t len = 0;
  const char *data = zcd_body_data (body, &len);
  assert_non_null (data);
  zcd_reply_t *decoded = zcd_reply_decode (data, len);
  assert_non_null (decoded);
  assert_int_equal (zcd_reply_root (decoded)->via.map.size, 7);
  char *op = zcd_reply_get_strdup (decoded, "op");
  assert_string_equal (op, "exec");
  free (op);
  char *arg1 = zcd_reply_get_strdup (decoded, "args/1");
  assert_string_equal (arg1, "-c");
  free (arg1);
  assert_null (zcd_reply_get (decoded, "args/3"));
  uint64_t gid = 0;
  assert_true (zcd_reply_get_uint (decoded, "user/additional_gids/1", &gid));
  assert_int_equal (gid, 11);
  assert_int_equal (zcd_reply_get (decoded, "user/additional_gids")->via.array.size, 2);
  int64_t neg = 0;
  assert_true (zcd_reply_get_int (decoded, "neg", &neg));
  assert_int_equal (neg, -5);
  assert_false (zcd_reply_get_uint (decoded, "neg", &gid));
  assert_int_equal (zcd_reply_get (decoded, "nothing")->type, MSGPACK_OBJECT_NIL);
  assert_false (zcd_reply_final (decoded));
  zcd_reply_destroy (&decoded);
  assert_null (decoded);
  zcd_body_destroy (&body);
  assert_null (body);
}

static void
test_body_builder_refuses_misuse (void **state)
{
  zcd_body_t *open_map = zcd_body_new ("x");
  zcd_body_map_open (open_map, "m");
  assert_null (zcd_body_data (open_map, NULL)); /* still open */
  zcd_body_close (open_map);
  assert_non_null (zcd_body_data (open_map, NULL));
  zcd_body_destroy (&open_map);

  zcd_body_t *keyless = zcd_body_new ("x");
  zcd_body_str (keyless, NULL, "value in a map without a key");
  assert_null (zcd_body_data (keyless, NULL));
  zcd_body_destroy (&keyless);

  zcd_body_t *keyed = zcd_body_new ("x");
  zcd_body_array_open (keyed, "a");
  zcd_body_uint (keyed, "key in an array", 1);
  zcd_body_close (keyed);
  assert_null (zcd_body_data (keyed, NULL));
  zcd_body_destroy (&keyed);

  zcd_body_t *overclosed = zcd_body_new ("x");
  zcd_body_close (overclosed);
  assert_null (zcd_body_data (overclosed, NULL));
  zcd_body_destroy (&overclosed);
}

static void
test_json_printer_escapes_and_encodes (void **state)
{
  zcd_body_t *body = zcd_body_new (NULL);
  zcd_body_str (body, "s", "a\"b\\c\n\x01\xff\xc3\xa9");
  msgpack_packer *pk = zcd_body_raw (body, "bin");
  msgpack_pack_bin (pk, 4);
  msgpack_pack_bin_body (pk, "abcd", 4);
  zcd_body_array_open (body, "v");
  zcd_body_int (body, NULL, -1);
  zcd_body_bool (body, NULL, false);
  zcd_body_nil (body, NULL);
  zcd_body_close (body);
  size_t len = 0;
  const char *data = zcd_body_data (body, &len);
  zcd_reply_t *decoded = zcd_reply_decode (data, len);
  assert_non_null (decoded);
  char *text = NULL;
  size_t text_len = 0;
  FILE *mem = open_memstream (&text, &text_len);
  assert_int_equal (zcd_json_print (mem, zcd_reply_root (decoded), false), 0);
  fclose (mem);
  assert_string_equal (text,
                       "{\"s\":\"a\\\"b\\\\c\\n\\u0001\\ufffd\xc3\xa9\",\"bin\":\"YWJjZA==\","
                       "\"v\":[-1,false,null]}");
  free (text);
  zcd_reply_destroy (&decoded);
  zcd_body_destroy (&body);
}

/* ---- requests and framing ------------------------------------------- */

static void
test_dealer_frames_like_req (void **state)
{
  fake_t *fake = *state;
  zcd_client_t *cli = zcd_client_new (fake->cmd_ep);
  assert_non_null (cli);
  zcd_reply_t *reply = NULL;
  assert_int_equal (zcd_client_version (cli, &reply), 0);
  uint64_t frames = 0;
  bool delimited = false;
  assert_true (zcd_reply_get_uint (reply, "frames", &frames));
  assert_true (zcd_reply_get_bool (reply, "delimited", &delimited));
  /* identity, empty delimiter, body: what a REQ socket sends */
  assert_int_equal (frames, 3);
  assert_true (delimited);
  uint64_t rid = 0;
  assert_true (zcd_reply_get_uint (reply, "req/rid", &rid));
  assert_int_equal (rid, zcd_reply_rid (reply));
  zcd_reply_destroy (&reply);

  /* A REQ socket with the same body is seen exactly the same way. */
  void *ctx = zmq_ctx_new ();
  void *req = zmq_socket (ctx, ZMQ_REQ);
  assert_int_equal (zmq_connect (req, fake->cmd_ep), 0);
  zcd_body_t *body = zcd_body_new ("version");
  zcd_body_uint (body, "rid", 99);
  size_t len = 0;
  const char *data = zcd_body_data (body, &len);
  assert_int_equal (zmq_send (req, data, len, 0), (int) len);
  char buf[512];
  int n = zmq_recv (req, buf, sizeof buf, 0);
  assert_true (n > 0);
  zcd_reply_t *req_reply = zcd_reply_decode (buf, (size_t) n);
  assert_non_null (req_reply);
  assert_true (zcd_reply_get_uint (req_reply, "frames", &frames));
  assert_true (zcd_reply_get_bool (req_reply, "delimited", &delimited));
  assert_int_equal (frames, 3);
  assert_true (delimited);
  assert_int_equal (zcd_reply_rid (req_reply), 99);
  zcd_reply_destroy (&req_reply);
  zcd_body_destroy (&body);
  zmq_close (req);
  zmq_ctx_term (ctx);

  /* A reply without the delimiter still decodes: the last frame is the body. */
  zcd_body_t *bare = zcd_body_new ("no_delim");
  assert_int_equal (zcd_client_request (cli, bare, &reply), 0);
  assert_true (zcd_reply_ok (reply));
  zcd_reply_destroy (&reply);
  zcd_body_destroy (&bare);
  zcd_client_destroy (&cli);
  assert_null (cli);
}

static void
test_send_adds_rid_to_any_map_header (void **state)
{
  fake_t *fake = *state;
  zcd_client_t *cli = zcd_client_new (fake->cmd_ep);
  /* 15 keys: a fixmap that must become a map16 once rid joins it. */
  zcd_body_t *body = zcd_body_new ("echo");
  char key[16];
  for (int i = 0; i < 14; i++)
    {
      snprintf (key, sizeof key, "k%d", i);
      zcd_body_uint (body, key, (uint64_t) i);
    }
  zcd_reply_t *reply = NULL;
  assert_int_equal (zcd_client_request (cli, body, &reply), 0);
  assert_int_equal (zcd_reply_get (reply, "req")->via.map.size, 16);
  uint64_t k13 = 0;
  assert_true (zcd_reply_get_uint (reply, "req/k13", &k13));
  assert_int_equal (k13, 13);
  zcd_reply_destroy (&reply);
  zcd_body_destroy (&body);

  assert_int_equal (zcd_client_send (cli, "\x91\x01", 2), 0); /* an array */
  assert_int_equal (errno, EINVAL);
  zcd_client_destroy (&cli);
}

static void
test_typed_calls_build_protocol_bodies (void **state)
{
  fake_t *fake = *state;
  zcd_client_t *cli = zcd_client_new (fake->cmd_ep);
  const char *labels[] = { "tier=web", NULL };
  zcd_create_opts_t opts = { .labels = labels, .runtime = "crun", .no_pivot_root = true,
                             .stdout_path = "/tmp/out" };
  zcd_reply_t *reply = NULL;
  assert_int_equal (zcd_client_create (cli, "web1", "/b", &opts, &reply), 0);
  char *label = zcd_reply_get_strdup (reply, "req/labels/0");
  assert_string_equal (label, "tier=web");
  free (label);
  bool no_pivot = false;
  assert_true (zcd_reply_get_bool (reply, "req/no_pivot_root", &no_pivot) && no_pivot);
  assert_null (zcd_reply_get (reply, "req/stdin"));
  zcd_reply_destroy (&reply);

  zcd_resources_t res;
  zcd_resources_init (&res);
  res.memory_limit = 1 << 20;
  res.cpuset_cpus = "0";
  assert_int_equal (zcd_client_update (cli, "web1", &res, &reply), 0);
  assert_int_equal (zcd_reply_get (reply, "req/resources")->via.map.size, 2);
  uint64_t mem = 0;
  assert_true (zcd_reply_get_uint (reply, "req/resources/memory_limit", &mem));
  assert_int_equal (mem, 1 << 20);
  zcd_reply_destroy (&reply);

  const char *ids[] = { "a", "b", NULL };
  assert_int_equal (zcd_client_stats (cli, ids, &reply), 0);
  char *second = zcd_reply_get_strdup (reply, "req/ids/1");
  assert_string_equal (second, "b");
  free (second);
  zcd_reply_destroy (&reply);

  zcd_body_t *fail = zcd_body_new ("fail");
  assert_int_equal (zcd_client_request (cli, fail, &reply), -1);
  assert_non_null (reply);
  assert_false (zcd_reply_ok (reply));
  assert_string_equal (zcd_reply_error_code (reply), "not_found");
  assert_string_equal (zcd_client_last_error (cli), "not_found: no such container x");
  zcd_reply_destroy (&reply);
  zcd_body_destroy (&fail);
  zcd_client_destroy (&cli);
}

static uint64_t
s_send_op (zcd_client_t *cli, const char *op)
{
  zcd_body_t *body = zcd_body_new (op);
  size_t len = 0;
  const char *data = zcd_body_data (body, &len);
  uint64_t rid = zcd_client_send (cli, data, len);
  zcd_body_destroy (&body);
  return rid;
}

static void
test_pipelined_replies_match_by_rid (void **state)
{
  fake_t *fake = *state;
  zcd_client_t *cli = zcd_client_new (fake->cmd_ep);
  uint64_t held = s_send_op (cli, "hold");
  assert_true (held > 0);
  /* The held reply arrives first, while the call waits for its own. */
  zcd_body_t *release = zcd_body_new ("release");
  size_t len = 0;
  const char *data = zcd_body_data (release, &len);
  zcd_reply_t *reply = NULL;
  assert_int_equal (zcd_client_call (cli, data, len, WAIT_MS, &reply), 0);
  char *op = zcd_reply_get_strdup (reply, "req/op");
  assert_string_equal (op, "release");
  free (op);
  assert_int_not_equal (zcd_reply_rid (reply), held);
  zcd_reply_destroy (&reply);
  assert_int_equal (zcd_client_recv (cli, 0, &reply), 0);
  assert_int_equal (zcd_reply_rid (reply), held);
  zcd_reply_destroy (&reply);

  /* A call that times out: its late reply never surfaces. */
  uint64_t abandoned_before = s_send_op (cli, "hold");
  assert_int_equal (zcd_client_recv (cli, 0, &reply), -1);
  assert_int_equal (errno, EAGAIN);
  (void) abandoned_before;
  zcd_body_t *never = zcd_body_new ("never");
  const char *never_data = zcd_body_data (never, &len);
  assert_int_equal (zcd_client_call (cli, never_data, len, 0, &reply), -1);
  assert_int_equal (errno, ETIMEDOUT);
  assert_null (reply);
  data = zcd_body_data (release, &len);
  assert_int_equal (zcd_client_call (cli, data, len, WAIT_MS, &reply), 0);
  zcd_reply_destroy (&reply);
  /* the held "hold" reply is pending for recv; nothing else is */
  assert_int_equal (zcd_client_recv (cli, 0, &reply), 0);
  assert_int_equal (zcd_reply_rid (reply), abandoned_before);
  zcd_reply_destroy (&reply);
  assert_int_equal (zcd_client_recv (cli, 0, &reply), -1);
  zcd_body_destroy (&never);
  zcd_body_destroy (&release);
  zcd_client_destroy (&cli);
}

/* ---- lossless subscriber -------------------------------------------- */

static void
s_expect_seqs (zcd_subscriber_t *sub, uint64_t from, uint64_t to, const char *only_id)
{
  for (uint64_t seq = from; seq <= to; seq++)
    {
      if (only_id && strcmp (s_id_of (seq), only_id) != 0)
        continue;
      zcd_event_t *event = NULL;
      assert_int_equal (zcd_subscriber_next (sub, WAIT_MS, &event), 0);
      assert_int_equal (event->seq, seq);
      assert_string_equal (event->id, s_id_of (seq));
      assert_string_equal (event->type, "exit");
      assert_true (event->has_status);
      assert_int_equal (event->status, seq % 256);
      zcd_event_destroy (&event);
    }
}

static void
s_expect_quiet (zcd_subscriber_t *sub)
{
  zcd_event_t *event = NULL;
  assert_int_equal (zcd_subscriber_next (sub, 0, &event), -1);
  assert_int_equal (errno, EAGAIN);
}

static void
test_subscriber_replay_then_live_dups_and_gap (void **state)
{
  fake_t *fake = *state;
  for (uint64_t seq = 1; seq <= 5; seq++)
    s_log_append (fake, seq, s_id_of (seq));
  zcd_subscriber_t *sub = zcd_subscriber_new (fake->cmd_ep, fake->evt_ep, NULL, 0);
  assert_int_equal (zcd_subscriber_start (sub), 0);
  s_wait_subscribed (fake);
  assert_int_equal (s_replays_served (fake), 1);
  /* Live: repeats of replayed events, a duplicate, then 8 goes missing. */
  for (uint64_t seq = 6; seq <= 10; seq++)
    s_log_append (fake, seq, s_id_of (seq));
  static const uint64_t live[] = { 4, 5, 6, 6, 7, 9, 10, 10 };
  for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
    s_publish (fake, live[i]);
  s_expect_seqs (sub, 1, 10, NULL);
  assert_int_equal (s_replays_served (fake), 2); /* the gap at 9 */
  assert_int_equal (zcd_subscriber_last_seq (sub), 10);

  /* 11 is never published: only the heartbeat tells. */
  s_log_append (fake, 11, s_id_of (11));
  s_publish_heartbeat (fake, 11);
  s_expect_seqs (sub, 11, 11, NULL);
  s_publish_heartbeat (fake, 11);
  s_publish (fake, 11);
  s_expect_quiet (sub);
  assert_false (zcd_subscriber_truncated (sub));
  zcd_subscriber_destroy (&sub);
  assert_null (sub);
}

static void
test_subscriber_filter_and_since_seq (void **state)
{
  fake_t *fake = *state;
  for (uint64_t seq = 1; seq <= 9; seq++)
    s_log_append (fake, seq, s_id_of (seq));
  zcd_subscriber_t *sub = zcd_subscriber_new (fake->cmd_ep, fake->evt_ep, "b", 3);
  assert_int_equal (zcd_subscriber_start (sub), 0);
  s_wait_subscribed (fake);
  /* filtered replay: 6 and 9; last_seq 9 accounts for the others */
  assert_int_equal (zcd_subscriber_last_seq (sub), 9);
  for (uint64_t seq = 10; seq <= 14; seq++)
    s_log_append (fake, seq, s_id_of (seq));
  static const uint64_t live[] = { 9, 10, 11, 13, 14 }; /* 12 (a "b") lost */
  for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
    s_publish (fake, live[i]);
  s_expect_seqs (sub, 4, 14, "b");
  s_expect_quiet (sub);
  zcd_subscriber_destroy (&sub);
}

static void
test_subscriber_survives_hwm_drops (void **state)
{
  fake_t *fake = *state;
  enum { TOTAL = 2000 };
  int hwm = 4;
  zmq_setsockopt (fake->xpub, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zcd_subscriber_t *sub = zcd_subscriber_new (fake->cmd_ep, fake->evt_ep, NULL, 0);
  zcd_subscriber_set_rcvhwm (sub, hwm);
  assert_int_equal (zcd_subscriber_start (sub), 0);
  s_wait_subscribed (fake);
  for (uint64_t seq = 1; seq <= TOTAL; seq++)
    {
      s_log_append (fake, seq, s_id_of (seq));
      s_publish (fake, seq);
    }
  uint64_t expected = 1;
  int64_t deadline = (int64_t) time (NULL) + WAIT_MS / 1000;
  while (expected <= TOTAL && (int64_t) time (NULL) < deadline)
    {
      zcd_event_t *event = NULL;
      if (zcd_subscriber_next (sub, 50, &event) < 0)
        {
          /* The tail may be dropped too: the daemon's heartbeat covers it. */
          assert_int_equal (errno, EAGAIN);
          s_publish_heartbeat (fake, TOTAL);
          continue;
        }
      assert_int_equal (event->seq, expected);
      expected++;
      zcd_event_destroy (&event);
    }
  assert_int_equal (expected, TOTAL + 1);
  assert_true (zcd_subscriber_replays (sub) >= 2);
  zcd_subscriber_destroy (&sub);
}

static void
test_subscriber_since_now_skips_history (void **state)
{
  fake_t *fake = *state;
  for (uint64_t seq = 1; seq <= 5; seq++)
    s_log_append (fake, seq, s_id_of (seq));
  zcd_subscriber_t *sub = zcd_subscriber_new (fake->cmd_ep, fake->evt_ep, NULL, ZCD_SINCE_NOW);
  assert_int_equal (zcd_subscriber_start (sub), 0);
  s_wait_subscribed (fake);
  assert_int_equal (zcd_subscriber_last_seq (sub), 5);
  assert_int_equal (s_replays_served (fake), 0); /* state, not events */
  s_expect_quiet (sub);
  s_log_append (fake, 6, s_id_of (6));
  s_publish (fake, 6);
  s_expect_seqs (sub, 6, 6, NULL);
  zcd_subscriber_destroy (&sub);
}

static void
test_subscriber_reports_unreachable_daemon (void **state)
{
  zcd_subscriber_t *sub
      = zcd_subscriber_new ("ipc:///nonexistent/zcd.sock", "ipc:///nonexistent/ev.sock", NULL, 0);
  zcd_subscriber_set_timeout (sub, 0);
  zcd_event_t *event = NULL;
  assert_int_equal (zcd_subscriber_next (sub, 0, &event), -1);
  assert_int_equal (errno, ETIMEDOUT);
  assert_non_null (strstr (zcd_subscriber_last_error (sub), "no reply"));
  assert_null (event);
  zcd_subscriber_destroy (&sub);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_body_builder_nests_and_counts),
    cmocka_unit_test (test_body_builder_refuses_misuse),
    cmocka_unit_test (test_json_printer_escapes_and_encodes),
    cmocka_unit_test_setup_teardown (test_dealer_frames_like_req, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_send_adds_rid_to_any_map_header, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_typed_calls_build_protocol_bodies, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_pipelined_replies_match_by_rid, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_subscriber_replay_then_live_dups_and_gap, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_subscriber_filter_and_since_seq, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_subscriber_survives_hwm_drops, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_subscriber_since_now_skips_history, s_setup, s_teardown),
    cmocka_unit_test (test_subscriber_reports_unreachable_daemon),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
