/* Decoded replies and lookups by path. */
#include "lib/zcd_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/mp.h"

struct _zcd_reply_t
{
  char *data; /* msgpack-c's objects point into these bytes */
  size_t len;
  msgpack_unpacked unpacked;
  char *error_code; /* NUL-terminated copies, made at decode time */
  char *error_message;
};

zcd_reply_t *
zcd_reply_decode (const void *data, size_t len)
{
  zcd_reply_t *self = calloc (1, sizeof *self);
  if (self == NULL)
    return NULL;
  msgpack_unpacked_init (&self->unpacked);
  self->data = malloc (len ? len : 1);
  if (self->data == NULL)
    {
      zcd_reply_destroy (&self);
      errno = ENOMEM;
      return NULL;
    }
  if (len)
    memcpy (self->data, data, len);
  self->len = len;
  /* The daemon's reader: a reply declaring more elements than it has bytes
   * is refused before msgpack-c allocates for them. */
  if (mp_unpack (self->data, len, &self->unpacked, NULL) < 0
      || self->unpacked.data.type != MSGPACK_OBJECT_MAP)
    {
      zcd_reply_destroy (&self);
      errno = EPROTO;
      return NULL;
    }
  self->error_code = zcd_reply_get_strdup (self, "error/code");
  self->error_message = zcd_reply_get_strdup (self, "error/message");
  return self;
}

void
zcd_reply_destroy (zcd_reply_t **self_p)
{
  if (self_p == NULL || *self_p == NULL)
    return;
  zcd_reply_t *self = *self_p;
  msgpack_unpacked_destroy (&self->unpacked);
  free (self->data);
  free (self->error_code);
  free (self->error_message);
  free (self);
  *self_p = NULL;
}

const msgpack_object *
zcd_reply_root (const zcd_reply_t *self)
{
  return &self->unpacked.data;
}

const char *
zcd_reply_bytes (const zcd_reply_t *self, size_t *len)
{
  if (len)
    *len = self->len;
  return self->data;
}

bool
zcd_reply_final (const zcd_reply_t *self)
{
  return zcd_reply_get (self, "ok") != NULL;
}

bool
zcd_reply_ok (const zcd_reply_t *self)
{
  bool ok = false;
  return zcd_reply_get_bool (self, "ok", &ok) && ok;
}

uint64_t
zcd_reply_rid (const zcd_reply_t *self)
{
  uint64_t rid = 0;
  return zcd_reply_get_uint (self, "rid", &rid) ? rid : 0;
}

const char *
zcd_reply_error_code (const zcd_reply_t *self)
{
  return self->error_code;
}

const char *
zcd_reply_error_message (const zcd_reply_t *self)
{
  return self->error_message;
}

const msgpack_object *
zcd_reply_get (const zcd_reply_t *self, const char *path)
{
  return zcd_obj_get (&self->unpacked.data, path);
}

bool
zcd_reply_get_uint (const zcd_reply_t *self, const char *path, uint64_t *out)
{
  return zcd_obj_uint (zcd_reply_get (self, path), out);
}

bool
zcd_reply_get_int (const zcd_reply_t *self, const char *path, int64_t *out)
{
  return zcd_obj_int (zcd_reply_get (self, path), out);
}

bool
zcd_reply_get_bool (const zcd_reply_t *self, const char *path, bool *out)
{
  return zcd_obj_bool (zcd_reply_get (self, path), out);
}

char *
zcd_reply_get_strdup (const zcd_reply_t *self, const char *path)
{
  return zcd_obj_strdup (zcd_reply_get (self, path));
}

/* One path step: the element of obj named by segment [seg, seg+n). */
static const msgpack_object *
s_step (const msgpack_object *obj, const char *seg, size_t n)
{
  if (obj->type == MSGPACK_OBJECT_MAP)
    return mp_map_getn (obj, seg, n);
  if (obj->type == MSGPACK_OBJECT_ARRAY)
    {
      if (n == 0 || n > 9)
        return NULL;
      uint64_t index = 0;
      for (size_t i = 0; i < n; i++)
        {
          if (seg[i] < '0' || seg[i] > '9')
            return NULL;
          index = index * 10 + (uint64_t) (seg[i] - '0');
        }
      return index < obj->via.array.size ? &obj->via.array.ptr[index] : NULL;
    }
  return NULL;
}

const msgpack_object *
zcd_obj_get (const msgpack_object *obj, const char *path)
{
  if (obj == NULL || path == NULL)
    return NULL;
  const char *p = path;
  while (obj && *p)
    {
      const char *slash = strchr (p, '/');
      size_t n = slash ? (size_t) (slash - p) : strlen (p);
      obj = s_step (obj, p, n);
      p += n;
      if (*p == '/')
        p++;
    }
  return obj;
}

bool
zcd_obj_uint (const msgpack_object *obj, uint64_t *out)
{
  return mp_as_uint (obj, out);
}

bool
zcd_obj_int (const msgpack_object *obj, int64_t *out)
{
  return mp_as_int (obj, out);
}

bool
zcd_obj_bool (const msgpack_object *obj, bool *out)
{
  return mp_as_bool (obj, out);
}

char *
zcd_obj_strdup (const msgpack_object *obj)
{
  if (obj == NULL || obj->type != MSGPACK_OBJECT_STR)
    return NULL;
  return strndup (obj->via.str.ptr, obj->via.str.size);
}

bool
zcd_obj_str_eq (const msgpack_object *obj, const char *s)
{
  return mp_str_eq (obj, s);
}
