/* Request validation and reply packing at the protocol edge.
 *
 * Requests are written as JSON for readability and packed to msgpack here
 * (JSON ints become uint when >= 0, int when < 0); what JSON cannot say
 * (non-str keys, signed encodings, duplicates, bin) is packed by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/mp.h"
#include "core/proto.h"

static void
s_pack_json (msgpack_packer *pk, const json_t *j)
{
  switch (json_typeof (j))
    {
    case JSON_OBJECT:
      {
        msgpack_pack_map (pk, json_object_size (j));
        const char *k;
        json_t *v;
        json_object_foreach ((json_t *) j, k, v)
        {
          mp_pack_str (pk, k);
          s_pack_json (pk, v);
        }
        break;
      }
    case JSON_ARRAY:
      msgpack_pack_array (pk, json_array_size (j));
      for (size_t i = 0; i < json_array_size (j); i++)
        s_pack_json (pk, json_array_get (j, i));
      break;
    case JSON_STRING:
      mp_pack_strn (pk, json_string_value (j), json_string_length (j));
      break;
    case JSON_INTEGER:
      if (json_integer_value (j) >= 0)
        msgpack_pack_uint64 (pk, (uint64_t) json_integer_value (j));
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
    case JSON_NULL:
      msgpack_pack_nil (pk);
      break;
    }
}

static void
s_json_to_mp (const char *json, msgpack_sbuffer *sb)
{
  json_error_t jerr;
  json_t *j = json_loads (json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
  if (j == NULL)
    fail_msg ("bad test JSON %s: %s", json, jerr.text);
  msgpack_sbuffer_init (sb);
  msgpack_packer pk;
  msgpack_packer_init (&pk, sb, msgpack_sbuffer_write);
  s_pack_json (&pk, j);
  json_decref (j);
}

/* Decodes raw bytes; returns the error code (ZCD_OK on success) and, when
 * msg_out is given, a copy of the message. */
static zcd_code_t
s_decode_raw (const char *buf, size_t len, proto_op_code_t *op_out, char **msg_out)
{
  proto_request_t req;
  proto_request_init (&req);
  zcd_error_t *err = NULL;
  int rc = proto_decode_request (buf, len, PROTO_DEFAULT_MAX_REQUEST, &req, &err);
  zcd_code_t code = ZCD_OK;
  if (rc < 0)
    {
      assert_non_null (err);
      assert_null (req.op);
      code = err->code;
      if (msg_out)
        *msg_out = strdup (err->msg);
      zcd_error_free (&err);
    }
  else
    {
      assert_null (err);
      assert_non_null (req.op);
      if (op_out)
        *op_out = req.op->code;
    }
  proto_request_fini (&req);
  return code;
}

static zcd_code_t
s_decode_json (const char *json, char **msg_out)
{
  msgpack_sbuffer sb;
  s_json_to_mp (json, &sb);
  zcd_code_t code = s_decode_raw (sb.data, sb.size, NULL, msg_out);
  msgpack_sbuffer_destroy (&sb);
  return code;
}

#define ACCEPT(json) assert_int_equal (s_decode_json ((json), NULL), ZCD_OK)

/* Refused with `code`, and the message contains `needle`. */
static void
s_refuse (const char *json, zcd_code_t code, const char *needle)
{
  char *msg = NULL;
  zcd_code_t got = s_decode_json (json, &msg);
  if (got != code || msg == NULL || strstr (msg, needle) == NULL)
    fail_msg ("%s: expected %s containing \"%s\", got %s: %s", json, zcd_code_name (code), needle,
              got == ZCD_OK ? "ok" : zcd_code_name (got), msg ? msg : "(no message)");
  free (msg);
}

#define REFUSE_ARG(json, needle) s_refuse ((json), ZCD_E_INVALID_ARGUMENT, (needle))

static void
test_every_op_accepts_a_valid_request (void **state)
{
  static const struct
  {
    const char *json;
    proto_op_code_t code;
  } cases[] = {
    { "{\"op\":\"version\"}", PROTO_OP_VERSION },
    { "{\"op\":\"create\",\"id\":\"web1\",\"bundle\":\"/b\",\"stdin\":\"/dev/null\","
      "\"labels\":[\"a\"],\"runtime\":\"crun\",\"runtime_args\":[],\"no_pivot_root\":true,"
      "\"checkpoint\":\"c1\",\"checkpoint_dir\":\"/cp\"}",
      PROTO_OP_CREATE },
    { "{\"op\":\"exec\",\"id\":\"web1\",\"pid\":\"p1\",\"args\":[\"sh\"],\"env\":[\"A=1\"],"
      "\"cwd\":\"/\",\"terminal\":false,\"user\":{\"uid\":0,\"gid\":0,\"additional_gids\":[1,2]},"
      "\"capabilities\":[\"CAP_KILL\"],\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\",\"soft\":1,"
      "\"hard\":2}],\"no_new_privileges\":true,\"apparmor_profile\":\"x\",\"selinux_label\":\"y\"}",
      PROTO_OP_EXEC },
    { "{\"op\":\"signal\",\"id\":\"web1\",\"pid\":\"init\",\"signal\":9,\"all\":true}", PROTO_OP_SIGNAL },
    { "{\"op\":\"update\",\"id\":\"web1\",\"status\":\"paused\","
      "\"resources\":{\"cpu_shares\":512,\"cpuset_cpus\":\"0-1\",\"pids_limit\":10}}",
      PROTO_OP_UPDATE },
    { "{\"op\":\"update_process\",\"id\":\"w\",\"pid\":\"init\",\"close_stdin\":true,"
      "\"width\":80,\"height\":24}",
      PROTO_OP_UPDATE_PROCESS },
    { "{\"op\":\"checkpoint_create\",\"id\":\"w\",\"checkpoint\":{\"name\":\"c1\",\"exit\":true,"
      "\"empty_ns\":[\"network\"]}}",
      PROTO_OP_CHECKPOINT_CREATE },
    { "{\"op\":\"checkpoint_list\",\"checkpoint_dir\":\"/cp\"}", PROTO_OP_CHECKPOINT_LIST },
    { "{\"op\":\"checkpoint_delete\",\"id\":\"w\",\"name\":\"c1\"}", PROTO_OP_CHECKPOINT_DELETE },
    { "{\"op\":\"state\",\"rid\":[1,{\"x\":null}]}", PROTO_OP_STATE },
    { "{\"op\":\"stats\",\"ids\":[\"a\",\"b\"]}", PROTO_OP_STATS },
    { "{\"op\":\"events\",\"since\":-5,\"since_seq\":3,\"id\":\"w\"}", PROTO_OP_EVENTS },
    { "{\"op\":\"metrics\",\"v\":1}", PROTO_OP_METRICS },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    {
      msgpack_sbuffer sb;
      s_json_to_mp (cases[i].json, &sb);
      proto_op_code_t code = PROTO_OP_COUNT;
      char *msg = NULL;
      zcd_code_t rc = s_decode_raw (sb.data, sb.size, &code, &msg);
      if (rc != ZCD_OK)
        fail_msg ("%s refused: %s", cases[i].json, msg);
      assert_int_equal (code, cases[i].code);
      assert_string_equal (proto_ops[code].name, proto_ops[cases[i].code].name);
      msgpack_sbuffer_destroy (&sb);
    }
}

static void
test_wrong_type_for_each_type_class (void **state)
{
  REFUSE_ARG ("{\"op\":\"state\",\"id\":5}", "key `id`: expected str");
  REFUSE_ARG ("{\"op\":\"signal\",\"id\":\"w\",\"signal\":\"9\"}", "key `signal`: expected uint");
  REFUSE_ARG ("{\"op\":\"events\",\"since\":\"yesterday\"}", "key `since`: expected int");
  REFUSE_ARG ("{\"op\":\"events\",\"since\":1.5}", "key `since`: expected int");
  REFUSE_ARG ("{\"op\":\"signal\",\"id\":\"w\",\"signal\":9,\"all\":1}", "key `all`: expected bool");
  REFUSE_ARG ("{\"op\":\"exec\",\"id\":\"w\",\"pid\":\"p\",\"args\":[\"a\"],\"user\":[]}",
              "key `user`: expected map");
  REFUSE_ARG ("{\"op\":\"create\",\"id\":\"w\",\"bundle\":\"/b\",\"labels\":\"a\"}",
              "key `labels`: expected array");
  REFUSE_ARG ("{\"op\":\"exec\",\"id\":\"w\",\"pid\":\"p\",\"args\":[\"a\",1]}",
              "key `args[1]`: expected str");
  REFUSE_ARG ("{\"op\":\"exec\",\"id\":\"w\",\"pid\":\"p\",\"args\":[\"a\"],"
              "\"user\":{\"additional_gids\":[1,\"x\"]}}",
              "key `user.additional_gids[1]`: expected uint");
  REFUSE_ARG ("{\"op\":\"exec\",\"id\":\"w\",\"pid\":\"p\",\"args\":[\"a\"],\"rlimits\":[1]}",
              "key `rlimits[0]`: expected map");
  REFUSE_ARG ("{\"op\":\"exec\",\"id\":\"w\",\"pid\":\"p\",\"args\":[\"a\"],\"user\":{\"uid\":\"root\"}}",
              "key `user.uid`: expected uint");
  REFUSE_ARG ("{\"op\":\"update\",\"id\":\"w\",\"resources\":{\"cpuset_cpus\":3}}",
              "key `resources.cpuset_cpus`: expected str");
  REFUSE_ARG ("{\"op\":\"checkpoint_create\",\"id\":\"w\",\"checkpoint\":{\"name\":\"c\",\"tcp\":\"y\"}}",
              "key `checkpoint.tcp`: expected bool");
  REFUSE_ARG ("{\"op\":\"stats\",\"ids\":[\"a\",null]}", "key `ids[1]`: expected str");
}

static void
test_ranges (void **state)
{
  ACCEPT ("{\"op\":\"signal\",\"id\":\"w\",\"signal\":1}");
  ACCEPT ("{\"op\":\"signal\",\"id\":\"w\",\"signal\":64}");
  REFUSE_ARG ("{\"op\":\"signal\",\"id\":\"w\",\"signal\":0}", "key `signal`: must be 1-64");
  REFUSE_ARG ("{\"op\":\"signal\",\"id\":\"w\",\"signal\":65}", "key `signal`: must be 1-64");
  REFUSE_ARG ("{\"op\":\"signal\",\"id\":\"w\",\"signal\":-9}", "key `signal`: expected uint");
  REFUSE_ARG ("{\"op\":\"update_process\",\"id\":\"w\",\"pid\":\"init\",\"width\":65536}",
              "key `width`");
  REFUSE_ARG ("{\"op\":\"exec\",\"id\":\"w\",\"pid\":\"p\",\"args\":[\"a\"],\"user\":{\"uid\":4294967296}}",
              "key `user.uid`");
  REFUSE_ARG ("{\"op\":\"events\",\"since_seq\":-1}", "key `since_seq`");
  REFUSE_ARG ("{\"op\":\"update\",\"id\":\"w\",\"status\":\"frozen\"}",
              "key `status`: must be \"paused\" or \"running\"");
  ACCEPT ("{\"op\":\"update\",\"id\":\"w\",\"status\":\"running\"}");
  REFUSE_ARG ("{\"op\":\"exec\",\"id\":\"w\",\"pid\":\"p\",\"args\":[]}", "key `args`: must not be empty");
}

static void
test_id_syntax (void **state)
{
  char json[256];
  const char *id64 = "a123456789012345678901234567890123456789012345678901234567890123";
  assert_int_equal (strlen (id64), 64);
  snprintf (json, sizeof json, "{\"op\":\"state\",\"id\":\"%s\"}", id64);
  ACCEPT (json);
  snprintf (json, sizeof json, "{\"op\":\"state\",\"id\":\"%sx\"}", id64);
  REFUSE_ARG (json, "key `id`: invalid id");
  REFUSE_ARG ("{\"op\":\"state\",\"id\":\"\"}", "key `id`: invalid id");
  REFUSE_ARG ("{\"op\":\"state\",\"id\":\"-web\"}", "key `id`: invalid id");
  REFUSE_ARG ("{\"op\":\"state\",\"id\":\".web\"}", "key `id`: invalid id");
  REFUSE_ARG ("{\"op\":\"state\",\"id\":\"a/b\"}", "key `id`: invalid id");
  REFUSE_ARG ("{\"op\":\"state\",\"id\":\"..\"}", "key `id`: invalid id");
  ACCEPT ("{\"op\":\"state\",\"id\":\"9A_b.c-d\"}");
  REFUSE_ARG ("{\"op\":\"stats\",\"ids\":[\"ok\",\"not ok\"]}", "key `ids[1]`: invalid id");
  ACCEPT ("{\"op\":\"signal\",\"id\":\"w\",\"pid\":\"init\",\"signal\":15}");
  ACCEPT ("{\"op\":\"signal\",\"id\":\"w\",\"pid\":\"exec-1\",\"signal\":15}");
  REFUSE_ARG ("{\"op\":\"signal\",\"id\":\"w\",\"pid\":\"_x\",\"signal\":15}", "key `pid`: invalid id");
  REFUSE_ARG ("{\"op\":\"checkpoint_delete\",\"id\":\"w\",\"name\":\"../etc\"}", "key `name`: invalid id");
  REFUSE_ARG ("{\"op\":\"checkpoint_create\",\"id\":\"w\",\"checkpoint\":{\"name\":\"a b\"}}",
              "key `checkpoint.name`: invalid id");
}

static void
test_absolute_paths_and_nul (void **state)
{
  REFUSE_ARG ("{\"op\":\"create\",\"id\":\"w\",\"bundle\":\"rel/b\"}", "key `bundle`: must be an absolute path");
  REFUSE_ARG ("{\"op\":\"create\",\"id\":\"w\",\"bundle\":\"\"}", "key `bundle`: must be an absolute path");
  REFUSE_ARG ("{\"op\":\"create\",\"id\":\"w\",\"bundle\":\"/b\",\"stdout\":\"out.log\"}",
              "key `stdout`: must be an absolute path");
  REFUSE_ARG ("{\"op\":\"exec\",\"id\":\"w\",\"pid\":\"p\",\"args\":[\"a\"],\"stderr\":\"x\"}",
              "key `stderr`: must be an absolute path");
  REFUSE_ARG ("{\"op\":\"create\",\"id\":\"w\",\"bundle\":\"/b\\u0000/x\"}", "key `bundle`: must not contain a NUL");
  REFUSE_ARG ("{\"op\":\"exec\",\"id\":\"w\",\"pid\":\"p\",\"args\":[\"a\\u0000b\"]}",
              "key `args[0]`: must not contain a NUL");
}

static void
test_required_keys_checked_after_types (void **state)
{
  REFUSE_ARG ("{\"op\":\"create\",\"id\":\"w\"}", "key `bundle`: required");
  REFUSE_ARG ("{\"op\":\"create\",\"bundle\":\"/b\"}", "key `id`: required");
  /* A malformed key is reported even though a required one is missing. */
  REFUSE_ARG ("{\"op\":\"create\",\"bundle\":7}", "key `bundle`: expected str");
  REFUSE_ARG ("{\"op\":\"signal\",\"id\":\"w\"}", "key `signal`: required");
  REFUSE_ARG ("{\"op\":\"exec\",\"id\":\"w\",\"pid\":\"p\",\"args\":[\"a\"],"
              "\"rlimits\":[{\"type\":\"RLIMIT_CORE\",\"soft\":1,\"hard\":1},{\"type\":\"x\",\"soft\":1}]}",
              "key `rlimits[1].hard`: required");
  REFUSE_ARG ("{\"op\":\"checkpoint_create\",\"id\":\"w\",\"checkpoint\":{}}", "key `checkpoint.name`: required");
  REFUSE_ARG ("{\"op\":\"checkpoint_list\"}", "key `id` or `checkpoint_dir` is required");
  REFUSE_ARG ("{\"op\":\"checkpoint_delete\",\"name\":\"c\"}", "key `id` or `checkpoint_dir` is required");
  ACCEPT ("{\"op\":\"checkpoint_delete\",\"checkpoint_dir\":\"/cp\",\"name\":\"c\"}");
  REFUSE_ARG ("{\"op\":\"checkpoint_list\",\"checkpoint_dir\":\"cp\"}", "key `checkpoint_dir`: must be an absolute path");
}

static void
test_unknown_keys_ignored (void **state)
{
  ACCEPT ("{\"op\":\"version\",\"future\":{\"deep\":[1,2,3]},\"x\":null}");
  ACCEPT ("{\"op\":\"exec\",\"id\":\"w\",\"pid\":\"p\",\"args\":[\"a\"],\"user\":{\"uid\":1,\"shell\":9}}");
  ACCEPT ("{\"op\":\"signal\",\"id\":\"w\",\"signal\":9,\"bundle\":42}");
}

static void
test_framing_errors (void **state)
{
  static const char garbage[] = { (char) 0xc1 };
  static const char trailing[] = { (char) 0x81, (char) 0xa2, 'o', 'p', (char) 0xa7, 'v', 'e', 'r',
                                   's', 'i', 'o', 'n', (char) 0xc0 };
  static const char huge_map[] = { (char) 0xdf, (char) 0xff, (char) 0xff, (char) 0xff, (char) 0xff };
  assert_int_equal (s_decode_raw (garbage, sizeof garbage, NULL, NULL), ZCD_E_INVALID_REQUEST);
  assert_int_equal (s_decode_raw (trailing, sizeof trailing, NULL, NULL), ZCD_E_INVALID_REQUEST);
  assert_int_equal (s_decode_raw (trailing, sizeof trailing - 1, NULL, NULL), ZCD_OK);
  assert_int_equal (s_decode_raw (huge_map, sizeof huge_map, NULL, NULL), ZCD_E_INVALID_REQUEST);
  assert_int_equal (s_decode_raw ("", 0, NULL, NULL), ZCD_E_INVALID_REQUEST);
  s_refuse ("[\"op\",\"version\"]", ZCD_E_INVALID_REQUEST, "not a map");
  s_refuse ("\"version\"", ZCD_E_INVALID_REQUEST, "not a map");
  s_refuse ("{\"rid\":1}", ZCD_E_INVALID_REQUEST, "`op`");
  s_refuse ("{\"op\":7}", ZCD_E_INVALID_REQUEST, "`op`");

  /* A map with a non-str key is no request body. */
  msgpack_sbuffer sb;
  msgpack_sbuffer_init (&sb);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 2);
  mp_pack_kv_str (&pk, "op", "version");
  msgpack_pack_uint8 (&pk, 1);
  msgpack_pack_nil (&pk);
  assert_int_equal (s_decode_raw (sb.data, sb.size, NULL, NULL), ZCD_E_INVALID_REQUEST);
  msgpack_sbuffer_destroy (&sb);
}

static void
test_too_large (void **state)
{
  msgpack_sbuffer sb;
  s_json_to_mp ("{\"op\":\"version\",\"pad\":\"0123456789\"}", &sb);
  proto_request_t req;
  proto_request_init (&req);
  zcd_error_t *err = NULL;
  assert_int_equal (proto_decode_request (sb.data, sb.size, sb.size - 1, &req, &err), -1);
  assert_int_equal (err->code, ZCD_E_TOO_LARGE);
  assert_null (req.rid);
  zcd_error_free (&err);
  proto_request_fini (&req);
  proto_request_init (&req);
  assert_int_equal (proto_decode_request (sb.data, sb.size, sb.size, &req, &err), 0);
  proto_request_fini (&req);
  msgpack_sbuffer_destroy (&sb);
}

static void
test_versions_and_unknown_op (void **state)
{
  ACCEPT ("{\"op\":\"version\",\"v\":1}");
  s_refuse ("{\"op\":\"version\",\"v\":2}", ZCD_E_UNSUPPORTED_VERSION, "2");
  /* The version is judged before the op name: a newer client's new op gets
   * unsupported_version, which tells it what is wrong. */
  s_refuse ("{\"op\":\"teleport\",\"v\":3}", ZCD_E_UNSUPPORTED_VERSION, "3");
  REFUSE_ARG ("{\"op\":\"version\",\"v\":\"1\"}", "key `v`");
  REFUSE_ARG ("{\"op\":\"version\",\"v\":-1}", "key `v`");
  s_refuse ("{\"op\":\"teleport\"}", ZCD_E_UNKNOWN_OP, "unknown op `teleport`");
  s_refuse ("{\"op\":\"bad\\u0001\\u00e9name\"}", ZCD_E_UNKNOWN_OP, "bad???name");
  s_refuse ("{\"op\":\"\"}", ZCD_E_UNKNOWN_OP, "unknown op");
}

static void
test_positive_value_in_signed_encoding (void **state)
{
  msgpack_sbuffer sb;
  msgpack_sbuffer_init (&sb);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 3);
  mp_pack_kv_str (&pk, "op", "signal");
  mp_pack_kv_str (&pk, "id", "w");
  mp_pack_str (&pk, "signal");
  /* 0xd0 0x09 is int8 9: msgpack_pack_int8 would pick the compact fixint. */
  static const char int8_nine[] = { (char) 0xd0, 0x09 };
  msgpack_sbuffer_write (&sb, int8_nine, sizeof int8_nine);
  proto_op_code_t code;
  assert_int_equal (s_decode_raw (sb.data, sb.size, &code, NULL), ZCD_OK);
  assert_int_equal (code, PROTO_OP_SIGNAL);
  msgpack_sbuffer_destroy (&sb);
}

/* Issue 8: jansson turned non-UTF-8 strings into nothing (a bundle path
 * vanished from state.json, an exec argument vanished from argv).  Every
 * str the daemon uses is checked at the edge, naming the key. */
static void
s_expect_bad_utf8 (const char *key_path, void (*pack_rest) (msgpack_packer *, const char *),
                   const char *bad)
{
  msgpack_sbuffer sb;
  msgpack_sbuffer_init (&sb);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  pack_rest (&pk, bad);
  char *msg = NULL;
  assert_int_equal (s_decode_raw (sb.data, sb.size, NULL, &msg), ZCD_E_INVALID_ARGUMENT);
  char want[128];
  snprintf (want, sizeof want, "key `%s`: not valid UTF-8", key_path);
  if (strstr (msg, want) == NULL)
    fail_msg ("expected \"%s\", got \"%s\"", want, msg);
  free (msg);
  msgpack_sbuffer_destroy (&sb);
}

static void
s_pack_bad_bundle (msgpack_packer *pk, const char *bad)
{
  msgpack_pack_map (pk, 3);
  mp_pack_kv_str (pk, "op", "create");
  mp_pack_kv_str (pk, "id", "w");
  mp_pack_kv_str (pk, "bundle", bad);
}

static void
s_pack_bad_arg (msgpack_packer *pk, const char *bad)
{
  msgpack_pack_map (pk, 4);
  mp_pack_kv_str (pk, "op", "exec");
  mp_pack_kv_str (pk, "id", "w");
  mp_pack_kv_str (pk, "pid", "e");
  mp_pack_str (pk, "args");
  msgpack_pack_array (pk, 4);
  mp_pack_str (pk, "echo");
  mp_pack_str (pk, "A");
  mp_pack_str (pk, bad);
  mp_pack_str (pk, "B");
}

static void
s_pack_bad_label (msgpack_packer *pk, const char *bad)
{
  msgpack_pack_map (pk, 4);
  mp_pack_kv_str (pk, "op", "create");
  mp_pack_kv_str (pk, "id", "w");
  mp_pack_kv_str (pk, "bundle", "/b");
  mp_pack_str (pk, "labels");
  msgpack_pack_array (pk, 2);
  mp_pack_str (pk, "ok");
  mp_pack_str (pk, bad);
}

static void
test_non_utf8_strings_refused (void **state)
{
  s_expect_bad_utf8 ("bundle", s_pack_bad_bundle, "/tmp/b\xff");
  s_expect_bad_utf8 ("args[2]", s_pack_bad_arg, "X\xff");
  s_expect_bad_utf8 ("labels[1]", s_pack_bad_label, "\xc0\xaf"); /* overlong '/' */
  s_expect_bad_utf8 ("labels[1]", s_pack_bad_label, "\xed\xa0\x80"); /* a surrogate */
  s_expect_bad_utf8 ("labels[1]", s_pack_bad_label, "\xe2\x82"); /* cut short */
  ACCEPT ("{\"op\":\"create\",\"id\":\"w\",\"bundle\":\"/b\",\"labels\":[\"h\u00e9\u20ac\xf0\x9f\x98\x80\"]}");
  char long_path[PATH_MAX + 64] = "{\"op\":\"create\",\"id\":\"w\",\"bundle\":\"/";
  size_t n = strlen (long_path);
  memset (long_path + n, 'a', PATH_MAX);
  strcpy (long_path + n + PATH_MAX, "\"}");
  REFUSE_ARG (long_path, "key `bundle`: longer than PATH_MAX");
}

/* PROTOCOL.md: a request is checked completely before anything is looked
 * up, so a resize with one dimension is refused even for a missing id. */
static void
test_keys_that_go_together (void **state)
{
  REFUSE_ARG ("{\"op\":\"update_process\",\"id\":\"none\",\"pid\":\"init\",\"width\":80}",
              "key `height`: required with `width`");
  REFUSE_ARG ("{\"op\":\"update_process\",\"id\":\"none\",\"pid\":\"init\",\"height\":2}",
              "key `width`: required with `height`");
  ACCEPT ("{\"op\":\"update_process\",\"id\":\"a\",\"pid\":\"init\",\"width\":80,\"height\":24}");
  ACCEPT ("{\"op\":\"update_process\",\"id\":\"a\",\"pid\":\"init\",\"close_stdin\":true}");
}

static void
test_duplicate_keys_all_validated (void **state)
{
  msgpack_sbuffer sb;
  msgpack_sbuffer_init (&sb);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 4);
  mp_pack_kv_str (&pk, "op", "signal");
  mp_pack_kv_str (&pk, "id", "w");
  mp_pack_kv_uint (&pk, "signal", 9);
  mp_pack_kv_str (&pk, "signal", "KILL");
  char *msg = NULL;
  assert_int_equal (s_decode_raw (sb.data, sb.size, NULL, &msg), ZCD_E_INVALID_ARGUMENT);
  assert_non_null (strstr (msg, "key `signal`"));
  free (msg);
  msgpack_sbuffer_destroy (&sb);
}

/* The reply echoes want_rid_str (NULL = no rid) and is ok (want_code NULL)
 * or an error with that code and a message. */
static void
s_check_reply (msgpack_sbuffer *sb, const char *want_rid_str, const char *want_code)
{
  msgpack_unpacked u;
  msgpack_unpacked_init (&u);
  zcd_error_t *err = NULL;
  assert_int_equal (mp_unpack (sb->data, sb->size, &u, &err), 0);
  const msgpack_object *reply = &u.data;
  const msgpack_object *rid = mp_map_get (reply, "rid");
  if (want_rid_str == NULL)
    assert_null (rid);
  else
    assert_true (mp_str_eq (rid, want_rid_str));
  bool ok;
  assert_true (mp_as_bool (mp_map_get (reply, "ok"), &ok));
  assert_int_equal (ok, want_code == NULL);
  if (want_code != NULL)
    {
      const msgpack_object *e = mp_map_get (reply, "error");
      assert_true (mp_str_eq (mp_map_get (e, "code"), want_code));
      assert_non_null (mp_map_get (e, "message"));
    }
  msgpack_unpacked_destroy (&u);
}

static void
test_error_reply_echoes_rid (void **state)
{
  static const char *bodies[] = {
    "{\"op\":\"teleport\",\"rid\":\"r-1\"}",
    "{\"op\":\"signal\",\"id\":\"w\",\"signal\":99,\"rid\":\"r-1\"}",
    "{\"rid\":\"r-1\"}",
    "{\"op\":\"version\",\"v\":9,\"rid\":\"r-1\"}",
  };
  static const char *codes[] = { "unknown_op", "invalid_argument", "invalid_request",
                                 "unsupported_version" };
  for (size_t i = 0; i < 4; i++)
    {
      msgpack_sbuffer body;
      s_json_to_mp (bodies[i], &body);
      proto_request_t req;
      proto_request_init (&req);
      zcd_error_t *err = NULL;
      assert_int_equal (proto_decode_request (body.data, body.size, 1 << 20, &req, &err), -1);
      msgpack_sbuffer out;
      msgpack_sbuffer_init (&out);
      proto_pack_error (&out, req.rid, err);
      s_check_reply (&out, "r-1", codes[i]);
      msgpack_sbuffer_destroy (&out);
      zcd_error_free (&err);
      proto_request_fini (&req);
      msgpack_sbuffer_destroy (&body);
    }
  /* Undecodable body: no rid. */
  proto_request_t req;
  proto_request_init (&req);
  zcd_error_t *err = NULL;
  assert_int_equal (proto_decode_request ("\xc1", 1, 1 << 20, &req, &err), -1);
  assert_null (req.rid);
  msgpack_sbuffer out;
  msgpack_sbuffer_init (&out);
  proto_pack_error_reply (&out, req.rid, err->code, err->msg);
  s_check_reply (&out, NULL, "invalid_request");
  msgpack_sbuffer_destroy (&out);
  zcd_error_free (&err);
  proto_request_fini (&req);
}

static void
test_ok_reply (void **state)
{
  msgpack_sbuffer result_mp;
  s_json_to_mp ("{\"system_pid\":42,\"ok\":\"spoofed\",\"rid\":\"spoofed\"}", &result_mp);
  msgpack_unpacked result;
  msgpack_unpacked_init (&result);
  zcd_error_t *err = NULL;
  assert_int_equal (mp_unpack (result_mp.data, result_mp.size, &result, &err), 0);

  msgpack_object rid = { .type = MSGPACK_OBJECT_STR };
  rid.via.str.ptr = "abc";
  rid.via.str.size = 3;
  msgpack_sbuffer out;
  msgpack_sbuffer_init (&out);
  proto_pack_ok_reply (&out, &rid, &result.data);
  s_check_reply (&out, "abc", NULL);

  msgpack_unpacked u;
  msgpack_unpacked_init (&u);
  assert_int_equal (mp_unpack (out.data, out.size, &u, &err), 0);
  assert_int_equal (u.data.via.map.size, 3);
  assert_int_equal (mp_get_uint (&u.data, "system_pid", 0), 42);
  msgpack_unpacked_destroy (&u);
  msgpack_sbuffer_destroy (&out);

  msgpack_sbuffer_init (&out);
  proto_pack_ok_reply (&out, NULL, NULL);
  s_check_reply (&out, NULL, NULL);
  msgpack_sbuffer_destroy (&out);

  msgpack_unpacked_destroy (&result);
  msgpack_sbuffer_destroy (&result_mp);
}

static void
test_partial_head_has_no_ok (void **state)
{
  msgpack_sbuffer out;
  msgpack_sbuffer_init (&out);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &out, msgpack_sbuffer_write);
  msgpack_object rid = { .type = MSGPACK_OBJECT_POSITIVE_INTEGER };
  rid.via.u64 = 7;
  proto_pack_partial_head (&pk, &rid, 1);
  mp_pack_kv_uint (&pk, "event", 1);
  msgpack_unpacked u;
  msgpack_unpacked_init (&u);
  zcd_error_t *err = NULL;
  assert_int_equal (mp_unpack (out.data, out.size, &u, &err), 0);
  assert_null (mp_map_get (&u.data, "ok"));
  assert_int_equal (mp_get_uint (&u.data, "rid", 0), 7);
  assert_int_equal (mp_get_uint (&u.data, "event", 0), 1);
  msgpack_unpacked_destroy (&u);
  msgpack_sbuffer_destroy (&out);
}

static void
test_names (void **state)
{
  assert_string_equal (proto_event_type_name (PROTO_EVENT_START_CONTAINER), "start-container");
  assert_null (proto_event_type_name (PROTO_EVENT_COUNT));
  assert_ptr_equal (proto_op_find ("exec", 4), &proto_ops[PROTO_OP_EXEC]);
  assert_null (proto_op_find ("exe", 3));
  for (int i = 0; i < PROTO_ERROR_COUNT; i++)
    assert_string_equal (proto_error_names[i], zcd_code_name ((zcd_code_t) (i + 1)));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_every_op_accepts_a_valid_request),
    cmocka_unit_test (test_wrong_type_for_each_type_class),
    cmocka_unit_test (test_ranges),
    cmocka_unit_test (test_id_syntax),
    cmocka_unit_test (test_absolute_paths_and_nul),
    cmocka_unit_test (test_non_utf8_strings_refused),
    cmocka_unit_test (test_keys_that_go_together),
    cmocka_unit_test (test_required_keys_checked_after_types),
    cmocka_unit_test (test_unknown_keys_ignored),
    cmocka_unit_test (test_framing_errors),
    cmocka_unit_test (test_too_large),
    cmocka_unit_test (test_versions_and_unknown_op),
    cmocka_unit_test (test_positive_value_in_signed_encoding),
    cmocka_unit_test (test_duplicate_keys_all_validated),
    cmocka_unit_test (test_error_reply_echoes_rid),
    cmocka_unit_test (test_ok_reply),
    cmocka_unit_test (test_partial_head_has_no_ok),
    cmocka_unit_test (test_names),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
