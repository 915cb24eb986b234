#include "core/mp.h"

#include <stdlib.h>
#include <string.h>

/* Walker state for mp_check: a cursor over the raw bytes.  Each step reads
 * one object header and either skips its payload or recurses into its
 * elements; the recursion is bounded by max_depth, and every loop over
 * elements is bounded by the bytes left, so the walk is O(len). */
typedef struct
{
  const unsigned char *p;
  size_t left;
} s_cursor_t;

static int
s_take (s_cursor_t *c, size_t n)
{
  if (n > c->left)
    return -1;
  c->p += n;
  c->left -= n;
  return 0;
}

/* Big-endian unsigned integer of `width` bytes (1, 2 or 4). */
static int
s_read_be (s_cursor_t *c, size_t width, uint64_t *out)
{
  if (width > c->left)
    return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < width; i++)
    v = (v << 8) | c->p[i];
  c->p += width;
  c->left -= width;
  *out = v;
  return 0;
}

static int s_check_object (s_cursor_t *c, int depth, int max_depth);

/* `count` elements follow, each at least `min_bytes_each` bytes long: a
 * count the remaining input cannot hold is refused before any element is
 * read, which is what keeps msgpack-c from allocating for it later. */
static int
s_check_elements (s_cursor_t *c, uint64_t count, unsigned min_bytes_each, int depth,
                  int max_depth)
{
  if (depth + 1 > max_depth)
    return -1;
  if (count > c->left / min_bytes_each)
    return -1;
  uint64_t objects = count * min_bytes_each; /* a map pair is two objects */
  for (uint64_t i = 0; i < objects; i++)
    if (s_check_object (c, depth + 1, max_depth) < 0)
      return -1;
  return 0;
}

/* Payload of `width`-byte declared length (str, bin). */
static int
s_skip_sized (s_cursor_t *c, size_t width)
{
  uint64_t n;
  if (s_read_be (c, width, &n) < 0)
    return -1;
  return s_take (c, n);
}

/* ext: `width`-byte declared length, then a type byte, then the data. */
static int
s_skip_ext (s_cursor_t *c, size_t width)
{
  uint64_t n;
  if (s_read_be (c, width, &n) < 0)
    return -1;
  if (s_take (c, 1) < 0)
    return -1;
  return s_take (c, n);
}

static int
s_check_container (s_cursor_t *c, unsigned char tag, int depth, int max_depth)
{
  uint64_t n;
  switch (tag)
    {
    case 0xdc:
    case 0xde:
      if (s_read_be (c, 2, &n) < 0)
        return -1;
      break;
    case 0xdd:
    case 0xdf:
      if (s_read_be (c, 4, &n) < 0)
        return -1;
      break;
    default:
      n = tag & 0x0f;
      break;
    }
  int is_map = tag == 0xde || tag == 0xdf || (tag >= 0x80 && tag <= 0x8f);
  return s_check_elements (c, n, is_map ? 2 : 1, depth, max_depth);
}

static int
s_check_object (s_cursor_t *c, int depth, int max_depth)
{
  if (c->left == 0)
    return -1;
  unsigned char tag = *c->p;
  c->p++;
  c->left--;

  if (tag <= 0x7f || tag >= 0xe0)
    return 0; /* fixint */
  if (tag <= 0x9f || tag == 0xdc || tag == 0xdd || tag == 0xde || tag == 0xdf)
    return s_check_container (c, tag, depth, max_depth);
  if (tag <= 0xbf)
    return s_take (c, tag & 0x1f); /* fixstr */

  switch (tag)
    {
    case 0xc0: /* nil */
    case 0xc2: /* false */
    case 0xc3: /* true */
      return 0;
    case 0xc4: /* bin 8 */
    case 0xd9: /* str 8 */
      return s_skip_sized (c, 1);
    case 0xc5:
    case 0xda:
      return s_skip_sized (c, 2);
    case 0xc6:
    case 0xdb:
      return s_skip_sized (c, 4);
    case 0xc7:
      return s_skip_ext (c, 1);
    case 0xc8:
      return s_skip_ext (c, 2);
    case 0xc9:
      return s_skip_ext (c, 4);
    case 0xcc:
    case 0xd0:
      return s_take (c, 1);
    case 0xcd:
    case 0xd1:
      return s_take (c, 2);
    case 0xca:
    case 0xce:
    case 0xd2:
      return s_take (c, 4);
    case 0xcb:
    case 0xcf:
    case 0xd3:
      return s_take (c, 8);
    case 0xd4: /* fixext: type byte + 1, 2, 4, 8, 16 data bytes */
      return s_take (c, 2);
    case 0xd5:
      return s_take (c, 3);
    case 0xd6:
      return s_take (c, 5);
    case 0xd7:
      return s_take (c, 9);
    case 0xd8:
      return s_take (c, 17);
    default: /* 0xc1 is never used */
      return -1;
    }
}

int
mp_check (const char *buf, size_t len, int max_depth)
{
  if (buf == NULL)
    return -1;
  s_cursor_t c = { (const unsigned char *) buf, len };
  if (s_check_object (&c, 0, max_depth) < 0)
    return -1;
  return c.left == 0 ? 0 : -1;
}

int
mp_unpack (const char *buf, size_t len, msgpack_unpacked *out, zcd_error_t **err)
{
  if (mp_check (buf, len, MP_MAX_DEPTH) < 0)
    return zcd_fail (err, ZCD_E_INVALID_REQUEST, "body is not a well-formed msgpack object");
  size_t off = 0;
  msgpack_unpack_return rc = msgpack_unpack_next (out, buf, len, &off);
  if (rc != MSGPACK_UNPACK_SUCCESS || off != len)
    return zcd_fail (err, ZCD_E_INVALID_REQUEST, "body is not a well-formed msgpack object");
  return 0;
}

const msgpack_object *
mp_map_get (const msgpack_object *map, const char *key)
{
  if (map == NULL || map->type != MSGPACK_OBJECT_MAP || key == NULL)
    return NULL;
  for (uint32_t i = 0; i < map->via.map.size; i++)
    {
      const msgpack_object_kv *kv = &map->via.map.ptr[i];
      if (mp_str_eq (&kv->key, key))
        return &kv->val;
    }
  return NULL;
}

bool
mp_as_uint (const msgpack_object *o, uint64_t *out)
{
  if (o == NULL)
    return false;
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    {
      *out = o->via.u64;
      return true;
    }
  /* msgpack-c decodes a non-negative value in a signed encoding as positive
   * already; this covers a packer that did not. */
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= 0)
    {
      *out = (uint64_t) o->via.i64;
      return true;
    }
  return false;
}

bool
mp_as_int (const msgpack_object *o, int64_t *out)
{
  if (o == NULL)
    return false;
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
    {
      *out = o->via.i64;
      return true;
    }
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t) INT64_MAX)
    {
      *out = (int64_t) o->via.u64;
      return true;
    }
  return false;
}

bool
mp_as_bool (const msgpack_object *o, bool *out)
{
  if (o == NULL || o->type != MSGPACK_OBJECT_BOOLEAN)
    return false;
  *out = o->via.boolean;
  return true;
}

char *
mp_strdup (const msgpack_object *o)
{
  if (o == NULL || o->type != MSGPACK_OBJECT_STR)
    return NULL;
  const char *s = o->via.str.ptr;
  size_t n = o->via.str.size;
  if (n > 0 && memchr (s, '\0', n) != NULL)
    return NULL;
  char *copy = malloc (n + 1);
  if (copy == NULL)
    abort ();
  if (n > 0)
    memcpy (copy, s, n);
  copy[n] = '\0';
  return copy;
}

bool
mp_str_eq (const msgpack_object *o, const char *s)
{
  if (o == NULL || s == NULL || o->type != MSGPACK_OBJECT_STR)
    return false;
  size_t n = strlen (s);
  return o->via.str.size == n && (n == 0 || memcmp (o->via.str.ptr, s, n) == 0);
}

char *
mp_get_strdup (const msgpack_object *map, const char *key)
{
  return mp_strdup (mp_map_get (map, key));
}

uint64_t
mp_get_uint (const msgpack_object *map, const char *key, uint64_t dflt)
{
  uint64_t v;
  return mp_as_uint (mp_map_get (map, key), &v) ? v : dflt;
}

bool
mp_get_bool (const msgpack_object *map, const char *key, bool dflt)
{
  bool v;
  return mp_as_bool (mp_map_get (map, key), &v) ? v : dflt;
}

char **
mp_get_strv (const msgpack_object *map, const char *key)
{
  const msgpack_object *arr = mp_map_get (map, key);
  if (arr == NULL || arr->type != MSGPACK_OBJECT_ARRAY)
    return NULL;
  uint32_t n = arr->via.array.size;
  char **v = calloc ((size_t) n + 1, sizeof *v);
  if (v == NULL)
    abort ();
  for (uint32_t i = 0; i < n; i++)
    {
      v[i] = mp_strdup (&arr->via.array.ptr[i]);
      if (v[i] == NULL)
        {
          mp_strv_free (v);
          return NULL;
        }
    }
  return v;
}

void
mp_strv_free (char **v)
{
  if (v == NULL)
    return;
  for (char **p = v; *p; p++)
    free (*p);
  free (v);
}

size_t
mp_strv_len (char *const *v)
{
  size_t n = 0;
  if (v)
    while (v[n])
      n++;
  return n;
}

void
mp_pack_strn (msgpack_packer *pk, const char *s, size_t n)
{
  msgpack_pack_str (pk, n);
  if (n > 0)
    msgpack_pack_str_body (pk, s, n);
}

void
mp_pack_str (msgpack_packer *pk, const char *s)
{
  if (s == NULL)
    msgpack_pack_nil (pk);
  else
    mp_pack_strn (pk, s, strlen (s));
}

void
mp_pack_kv_str (msgpack_packer *pk, const char *key, const char *value)
{
  mp_pack_str (pk, key);
  mp_pack_str (pk, value);
}

void
mp_pack_kv_uint (msgpack_packer *pk, const char *key, uint64_t value)
{
  mp_pack_str (pk, key);
  msgpack_pack_uint64 (pk, value);
}

void
mp_pack_kv_int (msgpack_packer *pk, const char *key, int64_t value)
{
  mp_pack_str (pk, key);
  msgpack_pack_int64 (pk, value);
}

void
mp_pack_kv_bool (msgpack_packer *pk, const char *key, bool value)
{
  mp_pack_str (pk, key);
  if (value)
    msgpack_pack_true (pk);
  else
    msgpack_pack_false (pk);
}

void
mp_pack_strv (msgpack_packer *pk, char *const *v)
{
  size_t n = mp_strv_len (v);
  msgpack_pack_array (pk, n);
  for (size_t i = 0; i < n; i++)
    mp_pack_str (pk, v[i]);
}
