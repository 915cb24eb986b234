#include "core/mp.h"

#include <stdlib.h>
#include <string.h>

/* ---- the byte-level reader ---- */

typedef enum
{
  S_NIL,
  S_BOOL,
  S_INT,
  S_FLOAT,
  S_STR,
  S_BIN,
  S_EXT,
  S_ARRAY,
  S_MAP
} s_kind_t;

/* An object's header: for ints the value (u, or i when neg), for bools u,
 * for str, bin, ext and float the payload's length in u (ext: with its type
 * byte), for arrays and maps the element count in u. */
typedef struct
{
  s_kind_t kind;
  bool neg;
  uint64_t u;
  int64_t i;
} s_head_t;

void
mp_reader_init (mp_reader_t *r, const void *buf, size_t len)
{
  r->p = buf;
  r->end = r->p + (buf ? len : 0);
}

size_t
mp_reader_left (const mp_reader_t *r)
{
  return (size_t)(r->end - r->p);
}

static bool
s_take (mp_reader_t *r, uint64_t n, const unsigned char **out)
{
  if (n > mp_reader_left (r))
    return false;
  if (out)
    *out = r->p;
  r->p += n;
  return true;
}

/* Big-endian unsigned integer of `width` bytes (1, 2, 4 or 8). */
static bool
s_be (mp_reader_t *r, size_t width, uint64_t *out)
{
  const unsigned char *b;
  if (!s_take (r, width, &b))
    return false;
  uint64_t v = 0;
  for (size_t i = 0; i < width; i++)
    v = (v << 8) | b[i];
  *out = v;
  return true;
}

static bool
s_signed (mp_reader_t *r, size_t width, s_head_t *h)
{
  uint64_t v;
  if (!s_be (r, width, &v))
    return false;
  size_t bits = width * 8;
  int64_t sv = bits == 64 ? (int64_t)v : (int64_t)(v << (64 - bits)) >> (64 - bits);
  h->kind = S_INT;
  h->neg = sv < 0;
  h->i = sv;
  h->u = sv < 0 ? 0 : (uint64_t)sv;
  return true;
}

static bool
s_sized (mp_reader_t *r, s_kind_t kind, size_t width, uint64_t extra, s_head_t *h)
{
  h->kind = kind;
  if (!s_be (r, width, &h->u))
    return false;
  h->u += extra;
  return true;
}

static bool
s_fixed (s_kind_t kind, uint64_t n, s_head_t *h)
{
  h->kind = kind;
  h->u = n;
  return true;
}

/* Reads the header of the next object (not its payload or elements). */
static bool
s_header (mp_reader_t *r, s_head_t *h)
{
  const unsigned char *t;
  if (!s_take (r, 1, &t))
    return false;
  unsigned tag = *t;
  h->neg = false;
  if (tag <= 0x7f)
    return s_fixed (S_INT, tag, h);
  if (tag >= 0xe0)
    {
      h->kind = S_INT;
      h->neg = true;
      h->i = (int8_t)tag;
      h->u = 0;
      return true;
    }
  if (tag <= 0x8f)
    return s_fixed (S_MAP, tag & 0x0f, h);
  if (tag <= 0x9f)
    return s_fixed (S_ARRAY, tag & 0x0f, h);
  if (tag <= 0xbf)
    return s_fixed (S_STR, tag & 0x1f, h);
  if (tag >= 0xc4 && tag <= 0xc6)
    return s_sized (r, S_BIN, (size_t)1 << (tag - 0xc4), 0, h);
  if (tag >= 0xc7 && tag <= 0xc9)
    return s_sized (r, S_EXT, (size_t)1 << (tag - 0xc7), 1, h);
  if (tag >= 0xcc && tag <= 0xcf)
    return s_sized (r, S_INT, (size_t)1 << (tag - 0xcc), 0, h);
  if (tag >= 0xd0 && tag <= 0xd3)
    return s_signed (r, (size_t)1 << (tag - 0xd0), h);
  if (tag >= 0xd4 && tag <= 0xd8)
    return s_fixed (S_EXT, ((uint64_t)1 << (tag - 0xd4)) + 1, h);
  if (tag >= 0xd9 && tag <= 0xdb)
    return s_sized (r, S_STR, (size_t)1 << (tag - 0xd9), 0, h);
  switch (tag)
    {
    case 0xc0:
      return s_fixed (S_NIL, 0, h);
    case 0xc2:
    case 0xc3:
      return s_fixed (S_BOOL, tag & 1, h);
    case 0xca:
      return s_fixed (S_FLOAT, 4, h);
    case 0xcb:
      return s_fixed (S_FLOAT, 8, h);
    case 0xdc:
    case 0xdd:
      return s_sized (r, S_ARRAY, tag == 0xdc ? 2 : 4, 0, h);
    case 0xde:
    case 0xdf:
      return s_sized (r, S_MAP, tag == 0xde ? 2 : 4, 0, h);
    default: /* 0xc1 is never used */
      return false;
    }
}

/* The next object's header, if it is of `kind`; else the cursor stays. */
static bool
s_expect (mp_reader_t *r, s_kind_t kind, s_head_t *h)
{
  const unsigned char *start = r->p;
  if (s_header (r, h) && h->kind == kind)
    return true;
  r->p = start;
  return false;
}

static bool
s_read_count (mp_reader_t *r, s_kind_t kind, uint32_t *count)
{
  s_head_t h;
  if (!s_expect (r, kind, &h))
    return false;
  *count = (uint32_t)h.u; /* at most 4 bytes were read */
  return true;
}

bool
mp_read_map (mp_reader_t *r, uint32_t *count)
{
  return s_read_count (r, S_MAP, count);
}

bool
mp_read_array (mp_reader_t *r, uint32_t *count)
{
  return s_read_count (r, S_ARRAY, count);
}

static bool
s_read_bytes (mp_reader_t *r, s_kind_t kind, const char **s, size_t *len)
{
  const unsigned char *start = r->p, *payload;
  s_head_t h;
  if (!s_expect (r, kind, &h))
    return false;
  if (!s_take (r, h.u, &payload))
    {
      r->p = start;
      return false;
    }
  *s = (const char *)payload;
  *len = (size_t)h.u;
  return true;
}

bool
mp_read_str (mp_reader_t *r, const char **s, size_t *len)
{
  return s_read_bytes (r, S_STR, s, len);
}

bool
mp_read_bin (mp_reader_t *r, const char **s, size_t *len)
{
  return s_read_bytes (r, S_BIN, s, len);
}

bool
mp_read_uint (mp_reader_t *r, uint64_t *out)
{
  const unsigned char *start = r->p;
  s_head_t h;
  if (!s_expect (r, S_INT, &h))
    return false;
  if (h.neg)
    {
      r->p = start;
      return false;
    }
  *out = h.u;
  return true;
}

bool
mp_read_int (mp_reader_t *r, int64_t *out)
{
  const unsigned char *start = r->p;
  s_head_t h;
  if (!s_expect (r, S_INT, &h))
    return false;
  if (!h.neg && h.u > (uint64_t)INT64_MAX)
    {
      r->p = start;
      return false;
    }
  *out = h.neg ? h.i : (int64_t)h.u;
  return true;
}

bool
mp_read_bool (mp_reader_t *r, bool *out)
{
  s_head_t h;
  if (!s_expect (r, S_BOOL, &h))
    return false;
  *out = h.u != 0;
  return true;
}

bool
mp_read_nil (mp_reader_t *r)
{
  s_head_t h;
  return s_expect (r, S_NIL, &h);
}

/* One object and everything in it.  The recursion is bounded by
 * max_depth, and a count the remaining input cannot hold is refused before
 * any element is read (each element takes at least a byte): that is what
 * keeps msgpack-c from allocating for a 5-byte "array of 4 billion".  So
 * the walk is O(len). */
static bool
s_skip (mp_reader_t *r, int depth, int max_depth)
{
  s_head_t h;
  if (!s_header (r, &h))
    return false;
  switch (h.kind)
    {
    case S_STR:
    case S_BIN:
    case S_EXT:
    case S_FLOAT:
      return s_take (r, h.u, NULL);
    case S_ARRAY:
    case S_MAP:
      {
        uint64_t per = h.kind == S_MAP ? 2 : 1; /* a map pair is two objects */
        if (depth + 1 > max_depth || h.u > mp_reader_left (r) / per)
          return false;
        for (uint64_t i = 0; i < h.u * per; i++)
          if (!s_skip (r, depth + 1, max_depth))
            return false;
        return true;
      }
    default:
      return true;
    }
}

bool
mp_skip (mp_reader_t *r, int max_depth)
{
  const unsigned char *start = r->p;
  if (s_skip (r, 0, max_depth))
    return true;
  r->p = start;
  return false;
}

int
mp_check (const char *buf, size_t len, int max_depth)
{
  if (buf == NULL)
    return -1;
  mp_reader_t r;
  mp_reader_init (&r, buf, len);
  return mp_skip (&r, max_depth) && mp_reader_left (&r) == 0 ? 0 : -1;
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
mp_map_getn (const msgpack_object *map, const char *key, size_t len)
{
  if (map == NULL || map->type != MSGPACK_OBJECT_MAP || key == NULL)
    return NULL;
  for (uint32_t i = 0; i < map->via.map.size; i++)
    {
      const msgpack_object *k = &map->via.map.ptr[i].key;
      if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == len
          && (len == 0 || memcmp (k->via.str.ptr, key, len) == 0))
        return &map->via.map.ptr[i].val;
    }
  return NULL;
}

const msgpack_object *
mp_map_get (const msgpack_object *map, const char *key)
{
  return key ? mp_map_getn (map, key, strlen (key)) : NULL;
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
