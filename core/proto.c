#include "core/proto.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/mp.h"

/* Longest key path in a message ("rlimits[4294967295].soft" fits easily);
 * key names come from the model, never from the input. */
#define KEY_PATH_MAX 128
/* Echoing client bytes in a message is capped and made printable, so an
 * error reply stays short and valid UTF-8 whatever was sent. */
#define ECHO_MAX 64

void
proto_request_init (proto_request_t *req)
{
  memset (req, 0, sizeof *req);
  msgpack_unpacked_init (&req->unpacked);
}

void
proto_request_fini (proto_request_t *req)
{
  msgpack_unpacked_destroy (&req->unpacked);
  msgpack_unpacked_init (&req->unpacked);
  req->body = NULL;
  req->rid = NULL;
  req->op = NULL;
}

/* Key paths are built from model names and indexes and always fit; a
 * truncated one would only shorten a message. */
static void __attribute__ ((format (printf, 2, 3)))
s_path_printf (char out[KEY_PATH_MAX], const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (out, KEY_PATH_MAX, fmt, ap);
  va_end (ap);
}

static int
s_key_fail (zcd_error_t **err, const char *path, const char *what)
{
  return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `%s`: %s", path, what);
}

static bool
s_str_is (const msgpack_object *o, const char *s)
{
  size_t n = strlen (s);
  return o->via.str.size == n && memcmp (o->via.str.ptr, s, n) == 0;
}

static int
s_check_syntax (const proto_key_t *key, const msgpack_object *v, const char *path,
                zcd_error_t **err)
{
  const char *s = v->via.str.ptr;
  size_t n = v->via.str.size;
  switch (key->syntax)
    {
    case PROTO_SYNTAX_NONE:
      return 0;
    case PROTO_SYNTAX_PROCESS_ID:
      if (s_str_is (v, "init"))
        return 0;
      /* exec process ids follow the container id rules */
      __attribute__ ((fallthrough));
    case PROTO_SYNTAX_CONTAINER_ID:
    case PROTO_SYNTAX_NAME:
      if (zcd_valid_id (s, n))
        return 0;
      return s_key_fail (err, path,
                         "invalid id: 1 to 64 chars of [A-Za-z0-9_.-], first char alphanumeric");
    }
  return 0;
}

static int
s_check_str (const proto_key_t *key, const msgpack_object *v, const char *path, zcd_error_t **err)
{
  if (v->type != MSGPACK_OBJECT_STR)
    return s_key_fail (err, path, "expected str");
  if (v->via.str.size > 0 && memchr (v->via.str.ptr, '\0', v->via.str.size) != NULL)
    return s_key_fail (err, path, "must not contain a NUL byte");
  /* Checked here, once for every str the daemon will use: jansson and the
   * runtimes would otherwise drop or mangle it later (issue 8). */
  if (!zcd_valid_utf8 (v->via.str.ptr, v->via.str.size))
    return s_key_fail (err, path, "not valid UTF-8");
  if (key->absolute && (v->via.str.size == 0 || v->via.str.ptr[0] != '/'))
    return s_key_fail (err, path, "must be an absolute path");
  if (key->absolute && v->via.str.size >= PATH_MAX)
    return s_key_fail (err, path, "longer than PATH_MAX (4096)");
  if (s_check_syntax (key, v, path, err) < 0)
    return -1;
  if (key->enum_values != NULL)
    {
      for (const char *const *e = key->enum_values; *e; e++)
        if (s_str_is (v, *e))
          return 0;
      char allowed[256] = "";
      for (const char *const *e = key->enum_values; *e; e++)
        {
          size_t used = strlen (allowed);
          snprintf (allowed + used, sizeof allowed - used, "%s\"%s\"",
                    e == key->enum_values ? "" : " or ", *e);
        }
      char what[300];
      snprintf (what, sizeof what, "must be %s", allowed);
      return s_key_fail (err, path, what);
    }
  return 0;
}

static const char *
s_not_uint_reason (const msgpack_object *v)
{
  return v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? "expected uint, got a negative value"
                                                    : "expected uint";
}

static int
s_check_uint (const proto_key_t *key, const msgpack_object *v, const char *path,
              zcd_error_t **err)
{
  uint64_t u;
  if (!mp_as_uint (v, &u))
    return s_key_fail (err, path,
                       s_not_uint_reason (v));
  if (u < key->min || u > key->max)
    {
      char what[96];
      if (key->max == UINT64_MAX)
        snprintf (what, sizeof what, "must be at least %" PRIu64, key->min);
      else
        snprintf (what, sizeof what, "must be %" PRIu64 "-%" PRIu64, key->min, key->max);
      return s_key_fail (err, path, what);
    }
  return 0;
}

static int s_check_fields (const proto_key_t *fields, size_t n_fields, const msgpack_object *map,
                           const char *prefix, zcd_error_t **err);

static int
s_check_array (const proto_key_t *key, const msgpack_object *v, const char *path,
               zcd_error_t **err)
{
  if (v->type != MSGPACK_OBJECT_ARRAY)
    return s_key_fail (err, path, "expected array");
  if (v->via.array.size < key->min_items)
    return s_key_fail (err, path, key->min_items == 1 ? "must not be empty" : "too few elements");
  for (uint32_t i = 0; i < v->via.array.size; i++)
    {
      const msgpack_object *elem = &v->via.array.ptr[i];
      char elem_path[KEY_PATH_MAX];
      s_path_printf (elem_path, "%s[%" PRIu32 "]", path, i);
      int rc = 0;
      switch (key->type)
        {
        case PROTO_T_STR_ARRAY:
          rc = s_check_str (key, elem, elem_path, err);
          break;
        case PROTO_T_UINT_ARRAY:
          rc = s_check_uint (key, elem, elem_path, err);
          break;
        case PROTO_T_MAP_ARRAY:
          if (elem->type != MSGPACK_OBJECT_MAP)
            rc = s_key_fail (err, elem_path, "expected map");
          else
            rc = s_check_fields (key->fields, key->n_fields, elem, elem_path, err);
          break;
        default:
          break;
        }
      if (rc < 0)
        return -1;
    }
  return 0;
}

static int
s_check_value (const proto_key_t *key, const msgpack_object *v, const char *path,
               zcd_error_t **err)
{
  bool b;
  int64_t i;
  switch (key->type)
    {
    case PROTO_T_ANY:
      return 0;
    case PROTO_T_STR:
      return s_check_str (key, v, path, err);
    case PROTO_T_UINT:
      return s_check_uint (key, v, path, err);
    case PROTO_T_INT:
      return mp_as_int (v, &i) ? 0 : s_key_fail (err, path, "expected int");
    case PROTO_T_BOOL:
      return mp_as_bool (v, &b) ? 0 : s_key_fail (err, path, "expected bool");
    case PROTO_T_MAP:
      if (v->type != MSGPACK_OBJECT_MAP)
        return s_key_fail (err, path, "expected map");
      return s_check_fields (key->fields, key->n_fields, v, path, err);
    case PROTO_T_STR_ARRAY:
    case PROTO_T_UINT_ARRAY:
    case PROTO_T_MAP_ARRAY:
      return s_check_array (key, v, path, err);
    }
  return s_key_fail (err, path, "unknown key type in the model");
}

static const proto_key_t *
s_find_field (const proto_key_t *fields, size_t n_fields, const msgpack_object *name)
{
  if (name->type != MSGPACK_OBJECT_STR)
    return NULL;
  for (size_t i = 0; i < n_fields; i++)
    if (s_str_is (name, fields[i].name))
      return &fields[i];
  return NULL;
}

static void
s_join_path (char *out, const char *prefix, const char *name)
{
  if (prefix[0] == '\0')
    s_path_printf (out, "%s", name);
  else
    s_path_printf (out, "%s.%s", prefix, name);
}

/* Types and values of every known entry first (duplicates included, so no
 * second copy of a key can slip past), then the required ones. */
static int
s_check_fields (const proto_key_t *fields, size_t n_fields, const msgpack_object *map,
                const char *prefix, zcd_error_t **err)
{
  char path[KEY_PATH_MAX];
  for (uint32_t i = 0; i < map->via.map.size; i++)
    {
      const msgpack_object_kv *kv = &map->via.map.ptr[i];
      if (kv->key.type != MSGPACK_OBJECT_STR)
        {
          if (prefix[0] == '\0')
            return zcd_fail (err, ZCD_E_INVALID_REQUEST, "body map has a key that is not a str");
          return s_key_fail (err, prefix, "map keys must be str");
        }
      const proto_key_t *key = s_find_field (fields, n_fields, &kv->key);
      if (key == NULL)
        continue;
      s_join_path (path, prefix, key->name);
      if (s_check_value (key, &kv->val, path, err) < 0)
        return -1;
    }
  for (size_t i = 0; i < n_fields; i++)
    if (fields[i].required && mp_map_get (map, fields[i].name) == NULL)
      {
        s_join_path (path, prefix, fields[i].name);
        return s_key_fail (err, path, "required");
      }
  return 0;
}

static int
s_check_one_of (const proto_op_t *op, const msgpack_object *body, zcd_error_t **err)
{
  if (op->one_of == NULL)
    return 0;
  char names[256] = "";
  for (const char *const *k = op->one_of; *k; k++)
    {
      if (mp_map_get (body, *k) != NULL)
        return 0;
      size_t used = strlen (names);
      snprintf (names + used, sizeof names - used, "%s`%s`", k == op->one_of ? "" : " or ", *k);
    }
  return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "op `%s`: key %s is required", op->name, names);
}

static int
s_check_together (const proto_op_t *op, const msgpack_object *body, zcd_error_t **err)
{
  if (op->together == NULL)
    return 0;
  const char *present = NULL, *absent = NULL;
  for (const char *const *k = op->together; *k; k++)
    {
      if (mp_map_get (body, *k) != NULL)
        present = present ? present : *k;
      else
        absent = absent ? absent : *k;
    }
  if (present && absent)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `%s`: required with `%s`", absent, present);
  return 0;
}

/* Printable, bounded copy of client bytes for an error message. */
static void
s_echo (char *out, size_t out_size, const char *s, size_t n)
{
  size_t k = 0;
  for (size_t i = 0; i < n && k + 1 < out_size && i < ECHO_MAX; i++)
    {
      unsigned char c = (unsigned char) s[i];
      out[k++] = (c >= 0x20 && c < 0x7f) ? (char) c : '?';
    }
  out[k] = '\0';
}

const proto_op_t *
proto_op_find (const char *name, size_t len)
{
  for (int i = 0; i < PROTO_OP_COUNT; i++)
    if (strlen (proto_ops[i].name) == len && memcmp (proto_ops[i].name, name, len) == 0)
      return &proto_ops[i];
  return NULL;
}

const char *
proto_event_type_name (proto_event_t type)
{
  if ((int) type < 0 || type >= PROTO_EVENT_COUNT)
    return NULL;
  return proto_event_names[type];
}

/* Framing and common keys: everything before the op's own keys. */
static int
s_decode_envelope (proto_request_t *req, const msgpack_object **op_name, zcd_error_t **err)
{
  const msgpack_object *body = &req->unpacked.data;
  if (body->type != MSGPACK_OBJECT_MAP)
    return zcd_fail (err, ZCD_E_INVALID_REQUEST, "body is not a map");
  req->body = body;
  req->rid = mp_map_get (body, "rid");
  const msgpack_object *op = mp_map_get (body, "op");
  if (op == NULL || op->type != MSGPACK_OBJECT_STR)
    return zcd_fail (err, ZCD_E_INVALID_REQUEST, "body has no str `op`");
  const msgpack_object *v = mp_map_get (body, "v");
  if (v != NULL)
    {
      uint64_t version;
      if (!mp_as_uint (v, &version))
        return s_key_fail (err, "v",
                           s_not_uint_reason (v));
      if (version > PROTO_VERSION)
        return zcd_fail (err, ZCD_E_UNSUPPORTED_VERSION,
                         "protocol version %" PRIu64 " requested; this daemon speaks %d", version,
                         PROTO_VERSION);
    }
  *op_name = op;
  return 0;
}

int
proto_decode_request (const char *buf, size_t len, size_t max_size, proto_request_t *req,
                      zcd_error_t **err)
{
  if (len > max_size)
    return zcd_fail (err, ZCD_E_TOO_LARGE, "body of %zu bytes is over the %zu-byte limit", len,
                     max_size);
  if (mp_unpack (buf, len, &req->unpacked, err) < 0)
    return -1;
  const msgpack_object *op_name = NULL;
  if (s_decode_envelope (req, &op_name, err) < 0)
    return -1;
  const proto_op_t *op = proto_op_find (op_name->via.str.ptr, op_name->via.str.size);
  if (op == NULL)
    {
      char shown[ECHO_MAX + 1];
      s_echo (shown, sizeof shown, op_name->via.str.ptr, op_name->via.str.size);
      return zcd_fail (err, ZCD_E_UNKNOWN_OP, "unknown op `%s`", shown);
    }
  if (s_check_fields (op->keys, op->n_keys, req->body, "", err) < 0)
    return -1;
  if (s_check_one_of (op, req->body, err) < 0 || s_check_together (op, req->body, err) < 0)
    return -1;
  req->op = op;
  return 0;
}

static void
s_pack_head (msgpack_packer *pk, const msgpack_object *rid, int ok, uint32_t n_entries)
{
  msgpack_pack_map (pk, n_entries + (rid != NULL) + (ok >= 0));
  if (rid != NULL)
    {
      mp_pack_str (pk, "rid");
      msgpack_pack_object (pk, *rid);
    }
  if (ok >= 0)
    mp_pack_kv_bool (pk, "ok", ok);
}

void
proto_pack_ok_head (msgpack_packer *pk, const msgpack_object *rid, uint32_t n_entries)
{
  s_pack_head (pk, rid, 1, n_entries);
}

void
proto_pack_partial_head (msgpack_packer *pk, const msgpack_object *rid, uint32_t n_entries)
{
  s_pack_head (pk, rid, -1, n_entries);
}

void
proto_pack_error_reply (msgpack_sbuffer *out, const msgpack_object *rid, zcd_code_t code,
                        const char *message)
{
  msgpack_packer pk;
  msgpack_packer_init (&pk, out, msgpack_sbuffer_write);
  const char *name = zcd_code_name (code);
  if (name == NULL || code == ZCD_OK)
    name = zcd_code_name (ZCD_E_INTERNAL);
  s_pack_head (&pk, rid, 0, 1);
  mp_pack_str (&pk, "error");
  msgpack_pack_map (&pk, 2);
  mp_pack_kv_str (&pk, "code", name);
  mp_pack_kv_str (&pk, "message", message ? message : "");
}

void
proto_pack_error (msgpack_sbuffer *out, const msgpack_object *rid, const zcd_error_t *err)
{
  if (err == NULL)
    proto_pack_error_reply (out, rid, ZCD_E_INTERNAL, "failure without an error value");
  else
    proto_pack_error_reply (out, rid, err->code, err->msg);
}

static bool
s_is_reserved_reply_key (const msgpack_object *key)
{
  return mp_str_eq (key, "rid") || mp_str_eq (key, "ok");
}

void
proto_pack_ok_reply (msgpack_sbuffer *out, const msgpack_object *rid, const msgpack_object *result)
{
  msgpack_packer pk;
  msgpack_packer_init (&pk, out, msgpack_sbuffer_write);
  uint32_t n = 0;
  bool has_entries = result != NULL && result->type == MSGPACK_OBJECT_MAP;
  if (has_entries)
    for (uint32_t i = 0; i < result->via.map.size; i++)
      if (!s_is_reserved_reply_key (&result->via.map.ptr[i].key))
        n++;
  s_pack_head (&pk, rid, 1, n);
  if (!has_entries)
    return;
  for (uint32_t i = 0; i < result->via.map.size; i++)
    {
      const msgpack_object_kv *kv = &result->via.map.ptr[i];
      if (s_is_reserved_reply_key (&kv->key))
        continue;
      msgpack_pack_object (&pk, kv->key);
      msgpack_pack_object (&pk, kv->val);
    }
}
