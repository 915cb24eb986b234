#include "core/amsg.h"

#include <stdlib.h>
#include <string.h>

#include "core/mp.h"

static int
s_refuse (zcd_error_t **err, const amsg_desc_t *d, const amsg_field_t *f, const char *why)
{
  return zcd_fail (err, ZCD_E_INTERNAL, "message `%s`: field `%s`: %s", d->name, f->name, why);
}

#define AT(m, off, type) ((type *)((char *)(m) + (off)))
#define CAT(m, off, type) ((const type *)((const char *)(m) + (off)))

/* ---- packing ---- */

static bool
s_present (const amsg_field_t *f, const void *m)
{
  switch (f->type)
    {
    case AMSG_F_STR:
      return *CAT (m, f->offset, char *) != NULL;
    case AMSG_F_STRV:
      return *CAT (m, f->offset, char *const *) != NULL;
    case AMSG_F_BIN:
      return CAT (m, f->offset, amsg_bin_t)->ptr != NULL;
    default:
      return !f->optional || *CAT (m, f->has_offset, bool);
    }
}

/* Why the field cannot be packed, NULL when it can. */
static const char *
s_unpackable (const amsg_field_t *f, const void *m, bool present)
{
  if (f->type == AMSG_F_BIN)
    {
      const amsg_bin_t *b = CAT (m, f->offset, amsg_bin_t);
      return b->ptr == NULL && b->size > 0 ? "size but no bytes" : NULL;
    }
  if (!present)
    return f->optional ? NULL : "required";
  if (f->type == AMSG_F_ENUM)
    {
      int v = *CAT (m, f->offset, int);
      return v < 0 || (uint64_t)v >= f->limit ? "out of range" : NULL;
    }
  return NULL;
}

static void
s_pack_value (msgpack_packer *pk, const amsg_field_t *f, const void *m)
{
  const void *p = CAT (m, f->offset, char);
  switch (f->type)
    {
    case AMSG_F_STR:
      mp_pack_str (pk, *(const char *const *)p);
      break;
    case AMSG_F_U32:
      msgpack_pack_uint32 (pk, *(const uint32_t *)p);
      break;
    case AMSG_F_U64:
      msgpack_pack_uint64 (pk, *(const uint64_t *)p);
      break;
    case AMSG_F_INT:
      msgpack_pack_int64 (pk, *(const int64_t *)p);
      break;
    case AMSG_F_BOOL:
      if (*(const bool *)p)
        msgpack_pack_true (pk);
      else
        msgpack_pack_false (pk);
      break;
    case AMSG_F_BIN:
      {
        const amsg_bin_t *b = p;
        msgpack_pack_bin (pk, b->size);
        if (b->size > 0)
          msgpack_pack_bin_body (pk, b->ptr, b->size);
        break;
      }
    case AMSG_F_STRV:
      mp_pack_strv (pk, (char *const *)*(const char *const *const *)p);
      break;
    case AMSG_F_ENUM:
      msgpack_pack_uint32 (pk, (uint32_t) * (const int *)p);
      break;
    }
}

int
amsg_pack (const amsg_desc_t *d, const void *m, msgpack_sbuffer *out, zcd_error_t **err)
{
  /* "type", then the fields given: the map's size follows from them. */
  size_t entries = 1;
  for (size_t i = 0; i < d->n_fields; i++)
    {
      const amsg_field_t *f = &d->fields[i];
      bool present = s_present (f, m);
      const char *why = s_unpackable (f, m, present);
      if (why)
        return s_refuse (err, d, f, why);
      entries += !f->optional || present;
    }
  msgpack_packer pk;
  msgpack_packer_init (&pk, out, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, entries);
  mp_pack_str (&pk, "type");
  msgpack_pack_uint32 (&pk, d->type);
  for (size_t i = 0; i < d->n_fields; i++)
    {
      const amsg_field_t *f = &d->fields[i];
      if (f->optional && !s_present (f, m))
        continue; /* a required bin with no bytes is an empty one */
      mp_pack_str (&pk, f->name);
      s_pack_value (&pk, f, m);
    }
  return 0;
}

int
amsg_send (const amsg_desc_t *d, actor_system_t *sys, const char *from, const char *to,
           const void *m, zcd_error_t **err)
{
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  zcd_error_t *why = NULL;
  int rc;
  if (amsg_pack (d, m, &buf, &why) < 0)
    rc = actor_send_fail (sys, to, err, why->code, "%s to `%s`: %s", d->name, to, why->msg);
  else
    rc = actor_send_raw (sys, from, to, buf.data, buf.size, err);
  zcd_error_free (&why);
  msgpack_sbuffer_destroy (&buf);
  return rc;
}

/* ---- decoding ---- */

/* A NUL-terminated copy in the message's zone: handlers get C strings
 * without a malloc per field. */
static bool
s_str (const msgpack_object *v, msgpack_zone *zone, const char **out)
{
  if (v->type != MSGPACK_OBJECT_STR)
    return false;
  size_t n = v->via.str.size;
  if (n > 0 && memchr (v->via.str.ptr, '\0', n) != NULL)
    return false;
  char *s = msgpack_zone_malloc_no_align (zone, n + 1);
  if (s == NULL)
    return false;
  if (n > 0)
    memcpy (s, v->via.str.ptr, n);
  s[n] = '\0';
  *out = s;
  return true;
}

static bool
s_strv (const msgpack_object *v, msgpack_zone *zone, const char *const **out)
{
  if (v->type != MSGPACK_OBJECT_ARRAY)
    return false;
  uint32_t n = v->via.array.size;
  const char **a = msgpack_zone_malloc (zone, ((size_t)n + 1) * sizeof *a);
  if (a == NULL)
    return false;
  for (uint32_t i = 0; i < n; i++)
    if (!s_str (&v->via.array.ptr[i], zone, &a[i]))
      return false;
  a[n] = NULL;
  *out = a;
  return true;
}

static bool
s_uint_below (const msgpack_object *v, uint64_t limit, uint64_t *out)
{
  return mp_as_uint (v, out) && *out < limit;
}

static bool
s_take (const amsg_field_t *f, const msgpack_object *v, msgpack_zone *zone, void *out)
{
  void *p = AT (out, f->offset, char);
  uint64_t u;
  switch (f->type)
    {
    case AMSG_F_STR:
      return s_str (v, zone, p);
    case AMSG_F_U32:
      return s_uint_below (v, (uint64_t)UINT32_MAX + 1, &u) && (*(uint32_t *)p = (uint32_t)u, true);
    case AMSG_F_U64:
      return mp_as_uint (v, p);
    case AMSG_F_INT:
      return mp_as_int (v, p);
    case AMSG_F_BOOL:
      return mp_as_bool (v, p);
    case AMSG_F_BIN:
      if (v->type != MSGPACK_OBJECT_BIN)
        return false;
      ((amsg_bin_t *)p)->ptr = v->via.bin.ptr ? v->via.bin.ptr : "";
      ((amsg_bin_t *)p)->size = v->via.bin.size;
      return true;
    case AMSG_F_STRV:
      return s_strv (v, zone, p);
    case AMSG_F_ENUM:
      return s_uint_below (v, f->limit, &u) && (*(int *)p = (int)u, true);
    }
  return false;
}

static const char *
s_want (const amsg_field_t *f)
{
  static const char *const names[] = {
    [AMSG_F_STR] = "wrong type (want str)",   [AMSG_F_U32] = "wrong type (want uint < 2^32)",
    [AMSG_F_U64] = "wrong type (want uint)",  [AMSG_F_INT] = "wrong type (want int)",
    [AMSG_F_BOOL] = "wrong type (want bool)", [AMSG_F_BIN] = "wrong type (want bin)",
    [AMSG_F_STRV] = "wrong type (want [str])", [AMSG_F_ENUM] = "wrong type or out of range",
  };
  return names[f->type];
}

/* Index of the field named by key k, -1 for any other key. */
static int
s_field_of (const amsg_desc_t *d, const msgpack_object *k)
{
  for (size_t i = 0; i < d->n_fields; i++)
    if (mp_str_eq (k, d->fields[i].name))
      return (int)i;
  return -1;
}

int
amsg_decode (const amsg_desc_t *d, const msgpack_object *body, msgpack_zone *zone, void *out,
             zcd_error_t **err)
{
  memset (out, 0, d->size);
  if (body == NULL || body->type != MSGPACK_OBJECT_MAP)
    return zcd_fail (err, ZCD_E_INTERNAL, "message `%s`: the body is not a map", d->name);
  uint32_t seen = 0;
  for (uint32_t i = 0; i < body->via.map.size; i++)
    {
      int n = s_field_of (d, &body->via.map.ptr[i].key);
      if (n < 0)
        continue;
      const amsg_field_t *f = &d->fields[n];
      const msgpack_object *v = &body->via.map.ptr[i].val;
      if (seen & (1u << n))
        return s_refuse (err, d, f, "given twice");
      seen |= 1u << n;
      if (f->optional && v->type == MSGPACK_OBJECT_NIL)
        continue;
      if (!s_take (f, v, zone, out))
        {
          if (f->type == AMSG_F_ENUM)
            return zcd_fail (err, ZCD_E_INTERNAL, "message `%s`: field `%s`: want a %s below %llu",
                             d->name, f->name, f->c_type, (unsigned long long)f->limit);
          return s_refuse (err, d, f, s_want (f));
        }
      bool scalar = f->type != AMSG_F_STR && f->type != AMSG_F_STRV && f->type != AMSG_F_BIN;
      if (f->optional && scalar)
        *AT (out, f->has_offset, bool) = true;
    }
  for (size_t i = 0; i < d->n_fields; i++)
    if (!d->fields[i].optional && !(seen & (1u << i)))
      return s_refuse (err, d, &d->fields[i], "required");
  return 0;
}

/* ---- copying ---- */

/* Bytes the copy of field f needs after the struct: strings and bins are
 * the result, a [str]'s pointer array goes to *array_bytes (the arrays come
 * first in the copy, so they stay aligned). */
static size_t
s_extra (const amsg_field_t *f, const void *m, size_t *array_bytes)
{
  const void *p = CAT (m, f->offset, char);
  switch (f->type)
    {
    case AMSG_F_STR:
      {
        const char *str = *(const char *const *)p;
        return str ? strlen (str) + 1 : 0;
      }
    case AMSG_F_BIN:
      {
        const amsg_bin_t *b = p;
        return b->ptr ? b->size : 0;
      }
    case AMSG_F_STRV:
      {
        const char *const *v = *(const char *const *const *)p;
        size_t n = 0, bytes = 0;
        for (; v && v[n]; n++)
          bytes += strlen (v[n]) + 1;
        if (v)
          *array_bytes += (n + 1) * sizeof *v;
        return bytes;
      }
    default:
      return 0;
    }
}

static char *
s_put (char **cursor, const void *src, size_t n)
{
  char *at = *cursor;
  if (n > 0)
    memcpy (at, src, n);
  *cursor += n;
  return at;
}

void *
amsg_dup (const amsg_desc_t *d, const void *m)
{
  size_t head = (d->size + sizeof (void *) - 1) / sizeof (void *) * sizeof (void *);
  size_t arrays = 0, bytes = 0;
  for (size_t i = 0; i < d->n_fields; i++)
    bytes += s_extra (&d->fields[i], m, &arrays);
  char *copy = malloc (head + arrays + bytes);
  if (copy == NULL)
    abort (); /* out of memory: nothing sensible is left to do */
  memcpy (copy, m, d->size);
  char *slots = copy + head, *data = copy + head + arrays;
  for (size_t i = 0; i < d->n_fields; i++)
    {
      const amsg_field_t *f = &d->fields[i];
      void *p = AT (copy, f->offset, char);
      if (f->type == AMSG_F_STR && *(const char **)p)
        *(const char **)p = s_put (&data, *(const char **)p, strlen (*(const char **)p) + 1);
      else if (f->type == AMSG_F_BIN && ((amsg_bin_t *)p)->ptr)
        ((amsg_bin_t *)p)->ptr = s_put (&data, ((amsg_bin_t *)p)->ptr, ((amsg_bin_t *)p)->size);
      else if (f->type == AMSG_F_STRV && *(const char *const **)p)
        {
          const char **v = (const char **)(void *)slots;
          size_t n = 0;
          for (const char *const *src = *(const char *const **)p; *src; src++)
            v[n++] = s_put (&data, *src, strlen (*src) + 1);
          v[n] = NULL;
          slots += (n + 1) * sizeof *v;
          *(const char *const **)p = v;
        }
    }
  return copy;
}
