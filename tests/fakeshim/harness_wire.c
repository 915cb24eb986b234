/* The client side of tests/unit/test_actors.c (see harness.h): requests
 * built from json_pack formats and sent as msgpack on a DEALER, replies
 * and events read back as JSON, each with a deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "tests/fakeshim/harness.h"

/* ---- msgpack <-> JSON, so requests and replies read as JSON ---------- */

static void
s_pack_json (msgpack_packer *pk, json_t *j)
{
  const char *key;
  json_t *v;
  size_t i;
  switch (json_typeof (j))
    {
    case JSON_OBJECT:
      msgpack_pack_map (pk, json_object_size (j));
      json_object_foreach (j, key, v)
      {
        msgpack_pack_str (pk, strlen (key));
        msgpack_pack_str_body (pk, key, strlen (key));
        s_pack_json (pk, v);
      }
      break;
    case JSON_ARRAY:
      msgpack_pack_array (pk, json_array_size (j));
      json_array_foreach (j, i, v) s_pack_json (pk, v);
      break;
    case JSON_STRING:
      msgpack_pack_str (pk, json_string_length (j));
      msgpack_pack_str_body (pk, json_string_value (j), json_string_length (j));
      break;
    case JSON_INTEGER:
      if (json_integer_value (j) >= 0)
        msgpack_pack_uint64 (pk, (uint64_t)json_integer_value (j));
      else
        msgpack_pack_int64 (pk, json_integer_value (j));
      break;
    case JSON_REAL:
      msgpack_pack_double (pk, json_real_value (j));
      break;
    case JSON_TRUE:
      msgpack_pack_true (pk);
      break;
    case JSON_FALSE:
      msgpack_pack_false (pk);
      break;
    default:
      msgpack_pack_nil (pk);
      break;
    }
}

static json_t *
s_to_json (const msgpack_object *o)
{
  switch (o->type)
    {
    case MSGPACK_OBJECT_BOOLEAN:
      return json_boolean (o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
      return json_integer ((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
      return json_integer ((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
      return json_real (o->via.f64);
    case MSGPACK_OBJECT_STR:
      return json_stringn (o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY:
      {
        json_t *a = json_array ();
        for (uint32_t i = 0; i < o->via.array.size; i++)
          json_array_append_new (a, s_to_json (&o->via.array.ptr[i]));
        return a;
      }
    case MSGPACK_OBJECT_MAP:
      {
        json_t *m = json_object ();
        for (uint32_t i = 0; i < o->via.map.size; i++)
          {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type != MSGPACK_OBJECT_STR)
              fail_msg ("a map key that is not a str");
            char *key = strndup (k->via.str.ptr, k->via.str.size);
            json_object_set_new (m, key, s_to_json (&o->via.map.ptr[i].val));
            free (key);
          }
        return m;
      }
    default:
      return json_null ();
    }
}

static json_t *
s_decode (const void *data, size_t len)
{
  msgpack_unpacked m;
  msgpack_unpacked_init (&m);
  if (msgpack_unpack_next (&m, data, len, NULL) != MSGPACK_UNPACK_SUCCESS)
    fail_msg ("a message that is not msgpack (%zu bytes)", len);
  json_t *j = s_to_json (&m.data);
  msgpack_unpacked_destroy (&m);
  return j;
}

const char *
h_str (json_t *obj, const char *key)
{
  const char *v = json_string_value (json_object_get (obj, key));
  return v ? v : "";
}

json_int_t
h_int (json_t *obj, const char *key)
{
  json_t *v = json_object_get (obj, key);
  if (!json_is_integer (v))
    fail_msg ("no integer `%s` in %s", key, json_dumps (obj, JSON_COMPACT));
  return json_integer_value (v);
}

/* ---- the wire -------------------------------------------------------- */

/* One whole message from sock, the last frame (the body) decoded; NULL
 * when nothing came before the deadline.  topic: the first frame, if any. */
static json_t *
s_recv (void *sock, int64_t deadline, char *topic, size_t topic_cap)
{
  zmq_pollitem_t item = { sock, 0, ZMQ_POLLIN, 0 };
  int64_t left = deadline - h_now_ms ();
  if (zmq_poll (&item, 1, left > 0 ? left : 0) <= 0)
    return NULL;
  json_t *body = NULL;
  bool first = true;
  int more = 1;
  while (more)
    {
      zmq_msg_t frame;
      zmq_msg_init (&frame);
      if (zmq_msg_recv (&frame, sock, 0) < 0)
        fail_msg ("zmq_msg_recv: %s", zmq_strerror (zmq_errno ()));
      more = zmq_msg_more (&frame);
      if (first && topic)
        snprintf (topic, topic_cap, "%.*s", (int)zmq_msg_size (&frame),
                  (const char *)zmq_msg_data (&frame));
      first = false;
      if (!more)
        body = s_decode (zmq_msg_data (&frame), zmq_msg_size (&frame));
      zmq_msg_close (&frame);
    }
  return body;
}

uint64_t
h_send (harness_t *h, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  json_error_t jerr;
  json_t *req = json_vpack_ex (&jerr, 0, fmt, ap);
  va_end (ap);
  if (req == NULL)
    fail_msg ("bad request format `%s`: %s", fmt, jerr.text);
  uint64_t rid = ++h->next_rid;
  json_object_set_new (req, "rid", json_integer ((json_int_t)rid));
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
  s_pack_json (&pk, req);
  char key[32];
  snprintf (key, sizeof key, "%llu", (unsigned long long)rid);
  json_object_set_new (h->sent, key, req);
  int n = zmq_send (h->dealer, buf.data, buf.size, 0);
  msgpack_sbuffer_destroy (&buf);
  assert_true (n >= 0);
  return rid;
}

/* A reply carries its request under "_request", so that a failure that
 * prints the reply says what was asked. */
json_t *
h_next_reply (harness_t *h)
{
  int64_t deadline = h_now_ms () + HARNESS_WAIT_MS;
  for (;;)
    {
      json_t *r = s_recv (h->dealer, deadline, NULL, 0);
      if (r == NULL)
        fail_msg ("no reply within %d ms (the daemon hangs or lost one); sent: %s", HARNESS_WAIT_MS,
                  json_dumps (h->sent, JSON_COMPACT));
      if (!json_object_get (r, "ok"))
        {
          json_array_append_new (h->partials, r);
          continue;
        }
      char key[32];
      snprintf (key, sizeof key, "%llu", (unsigned long long)h_int (r, "rid"));
      json_t *req = json_object_get (h->sent, key);
      if (req == NULL)
        fail_msg ("a reply to no request: %s", json_dumps (r, JSON_COMPACT));
      json_object_set (r, "_request", req);
      json_object_del (h->sent, key);
      return r;
    }
}

json_t *
h_reply_to (harness_t *h, uint64_t rid)
{
  char key[32];
  snprintf (key, sizeof key, "%llu", (unsigned long long)rid);
  json_t *r = json_object_get (h->early, key);
  if (r)
    {
      json_incref (r);
      json_object_del (h->early, key);
      return r;
    }
  for (;;)
    {
      r = h_next_reply (h);
      if ((uint64_t)h_int (r, "rid") == rid)
        return r;
      snprintf (key, sizeof key, "%llu", (unsigned long long)h_int (r, "rid"));
      json_object_set_new (h->early, key, r);
    }
}

void
h_assert_ok (json_t *r)
{
  if (!json_is_true (json_object_get (r, "ok")))
    fail_msg ("expected success, got %s", json_dumps (r, JSON_COMPACT));
}

const char *
h_assert_error (json_t *r, const char *code)
{
  json_t *e = json_object_get (r, "error");
  if (!json_is_false (json_object_get (r, "ok")) || strcmp (h_str (e, "code"), code) != 0)
    fail_msg ("expected error `%s`, got %s", code, json_dumps (r, JSON_COMPACT));
  return h_str (e, "message");
}

void
h_expect_ok (json_t *r)
{
  h_assert_ok (r);
  json_decref (r);
}

void
h_expect_error (json_t *r, const char *code)
{
  h_assert_error (r, code);
  json_decref (r);
}

json_t *
h_next_event (harness_t *h)
{
  int64_t deadline = h_now_ms () + HARNESS_WAIT_MS;
  for (;;)
    {
      char topic[256];
      json_t *ev = s_recv (h->sub, deadline, topic, sizeof topic);
      if (ev == NULL)
        fail_msg ("no event within %d ms after seq %llu", HARNESS_WAIT_MS,
                  (unsigned long long)h->seq);
      if (strcmp (topic, "/heartbeat") == 0)
        {
          json_decref (ev);
          continue;
        }
      uint64_t seq = (uint64_t)h_int (ev, "seq");
      if (seq != h->seq + 1)
        fail_msg ("event seq %llu after %llu: %s", (unsigned long long)seq,
                  (unsigned long long)h->seq, json_dumps (ev, JSON_COMPACT));
      h->seq = seq;
      return ev;
    }
}

json_t *
h_expect_event (harness_t *h, const char *type, const char *id, const char *pid)
{
  json_t *ev = h_next_event (h);
  if (strcmp (h_str (ev, "type"), type) != 0 || strcmp (h_str (ev, "id"), id) != 0
      || (pid && strcmp (h_str (ev, "pid"), pid) != 0))
    fail_msg ("expected event %s %s %s, got %s", type, id, pid ? pid : "",
              json_dumps (ev, JSON_COMPACT));
  return ev;
}

void
h_expect_exit (harness_t *h, const char *id, const char *pid, int status)
{
  json_t *ev = h_expect_event (h, "exit", id, pid);
  assert_int_equal (h_int (ev, "status"), status);
  json_decref (ev);
}

/* `state` takes its last_seq at the same instant as its snapshot, and the
 * events of a request precede its reply. */
void
h_expect_no_more_events (harness_t *h)
{
  json_t *r = h_call (h, "{s:s}", "op", "state");
  h_assert_ok (r);
  if ((uint64_t)h_int (r, "last_seq") != h->seq)
    fail_msg ("%llu events published, %llu seen", (unsigned long long)h_int (r, "last_seq"),
              (unsigned long long)h->seq);
  json_decref (r);
}

json_t *
h_container (harness_t *h, const char *id)
{
  json_t *r = h_call (h, "{s:s,s:s}", "op", "state", "id", id);
  if (json_is_false (json_object_get (r, "ok")))
    {
      h_assert_error (r, "not_found");
      json_decref (r);
      return NULL;
    }
  json_t *c = json_array_get (json_object_get (r, "containers"), 0);
  assert_non_null (c);
  assert_string_equal (h_str (c, "id"), id);
  json_incref (c);
  json_decref (r);
  return c;
}

void
h_expect_status (harness_t *h, const char *id, const char *status, size_t processes)
{
  json_t *c = h_container (h, id);
  if (c == NULL)
    fail_msg ("container %s is gone, expected %s", id, status);
  assert_string_equal (h_str (c, "status"), status);
  assert_int_equal (json_array_size (json_object_get (c, "processes")), processes);
  json_decref (c);
}

void
h_expect_gone (harness_t *h, const char *id)
{
  json_t *c = h_container (h, id);
  if (c)
    fail_msg ("container %s is still there: %s", id, json_dumps (c, JSON_COMPACT));
}

void
h_replay (harness_t *h, uint64_t since)
{
  json_array_clear (h->partials);
  json_t *r = h_call (h, "{s:s,s:I}", "op", "events", "since_seq", (json_int_t)since);
  h_assert_ok (r);
  size_t i;
  json_t *p;
  json_array_foreach (h->partials, i, p)
  {
    json_t *ev = json_object_get (p, "event");
    if ((uint64_t)h_int (ev, "seq") != h->seq + 1)
      fail_msg ("replayed seq %lld after %llu", (long long)h_int (ev, "seq"),
                (unsigned long long)h->seq);
    h->seq++;
  }
  assert_int_equal (h_int (r, "last_seq"), h->seq);
  json_decref (r);
}

void
h_client_open (harness_t *h, void *zctx)
{
  int zero = 0;
  h->dealer = zmq_socket (zctx, ZMQ_DEALER);
  h->sub = zmq_socket (zctx, ZMQ_SUB);
  zmq_setsockopt (h->dealer, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt (h->sub, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt (h->sub, ZMQ_SUBSCRIBE, "", 0);
  assert_int_equal (zmq_connect (h->dealer, h->cmd_ep), 0);
  assert_int_equal (zmq_connect (h->sub, h->evt_ep), 0);
  int64_t deadline = h_now_ms () + HARNESS_WAIT_MS;
  for (;;)
    {
      char topic[256];
      json_t *ev = s_recv (h->sub, deadline, topic, sizeof topic);
      if (ev == NULL)
        fail_msg ("no heartbeat from the daemon within %d ms", HARNESS_WAIT_MS);
      json_decref (ev);
      if (strcmp (topic, "/heartbeat") == 0)
        return;
    }
}

void
h_client_close (harness_t *h)
{
  if (h->dealer)
    zmq_close (h->dealer);
  if (h->sub)
    zmq_close (h->sub);
  h->dealer = h->sub = NULL;
}
