/* Request body builder.  msgpack wants a map's or an array's element count
 * before its elements, and a builder does not know it yet: each open
 * container packs its elements into a buffer of its own, and closing it
 * writes the header with the final count followed by those bytes into the
 * parent. */
#include "lib/zcd_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BODY_MAX_DEPTH 16

typedef struct
{
  msgpack_sbuffer buf;
  msgpack_packer pk;
  uint32_t count;
  bool is_map;
} body_frame_t;

struct _zcd_body_t
{
  body_frame_t frames[BODY_MAX_DEPTH];
  int depth; /* frames in use; frames[0] is the root map */
  bool broken;
  msgpack_sbuffer out;
};

static void
s_frame_init (body_frame_t *frame, bool is_map)
{
  msgpack_sbuffer_init (&frame->buf);
  msgpack_packer_init (&frame->pk, &frame->buf, msgpack_sbuffer_write);
  frame->count = 0;
  frame->is_map = is_map;
}

zcd_body_t *
zcd_body_new (const char *op)
{
  zcd_body_t *self = calloc (1, sizeof *self);
  if (self == NULL)
    return NULL;
  s_frame_init (&self->frames[0], true);
  self->depth = 1;
  msgpack_sbuffer_init (&self->out);
  if (op)
    zcd_body_str (self, "op", op);
  return self;
}

void
zcd_body_destroy (zcd_body_t **self_p)
{
  if (self_p == NULL || *self_p == NULL)
    return;
  zcd_body_t *self = *self_p;
  for (int i = 0; i < self->depth; i++)
    msgpack_sbuffer_destroy (&self->frames[i].buf);
  msgpack_sbuffer_destroy (&self->out);
  free (self);
  *self_p = NULL;
}

/* Packs the key (maps) and counts the element; returns the packer for its
 * value, or NULL (and breaks the body) when key and container disagree. */
static msgpack_packer *
s_begin_value (zcd_body_t *self, const char *key)
{
  if (self == NULL || self->broken)
    return NULL;
  body_frame_t *frame = &self->frames[self->depth - 1];
  if (frame->is_map != (key != NULL))
    {
      self->broken = true;
      return NULL;
    }
  if (key)
    {
      size_t n = strlen (key);
      msgpack_pack_str (&frame->pk, n);
      msgpack_pack_str_body (&frame->pk, key, n);
    }
  frame->count++;
  return &frame->pk;
}

void
zcd_body_str (zcd_body_t *self, const char *key, const char *value)
{
  msgpack_packer *pk = s_begin_value (self, key);
  if (pk == NULL)
    return;
  if (value == NULL)
    {
      msgpack_pack_nil (pk);
      return;
    }
  size_t n = strlen (value);
  msgpack_pack_str (pk, n);
  msgpack_pack_str_body (pk, value, n);
}

void
zcd_body_uint (zcd_body_t *self, const char *key, uint64_t value)
{
  msgpack_packer *pk = s_begin_value (self, key);
  if (pk)
    msgpack_pack_uint64 (pk, value);
}

void
zcd_body_int (zcd_body_t *self, const char *key, int64_t value)
{
  msgpack_packer *pk = s_begin_value (self, key);
  if (pk)
    msgpack_pack_int64 (pk, value);
}

void
zcd_body_bool (zcd_body_t *self, const char *key, bool value)
{
  msgpack_packer *pk = s_begin_value (self, key);
  if (pk == NULL)
    return;
  if (value)
    msgpack_pack_true (pk);
  else
    msgpack_pack_false (pk);
}

void
zcd_body_nil (zcd_body_t *self, const char *key)
{
  msgpack_packer *pk = s_begin_value (self, key);
  if (pk)
    msgpack_pack_nil (pk);
}

void
zcd_body_strv (zcd_body_t *self, const char *key, const char *const *v)
{
  zcd_body_array_open (self, key);
  for (size_t i = 0; v && v[i]; i++)
    zcd_body_str (self, NULL, v[i]);
  zcd_body_close (self);
}

static void
s_open (zcd_body_t *self, const char *key, bool is_map)
{
  if (self == NULL || self->broken)
    return;
  if (self->depth == BODY_MAX_DEPTH)
    {
      self->broken = true;
      return;
    }
  if (s_begin_value (self, key) == NULL)
    return;
  s_frame_init (&self->frames[self->depth], is_map);
  self->depth++;
}

void
zcd_body_map_open (zcd_body_t *self, const char *key)
{
  s_open (self, key, true);
}

void
zcd_body_array_open (zcd_body_t *self, const char *key)
{
  s_open (self, key, false);
}

static void
s_pack_header (msgpack_packer *pk, const body_frame_t *frame)
{
  if (frame->is_map)
    msgpack_pack_map (pk, frame->count);
  else
    msgpack_pack_array (pk, frame->count);
}

void
zcd_body_close (zcd_body_t *self)
{
  if (self == NULL || self->broken)
    return;
  if (self->depth <= 1)
    {
      self->broken = true;
      return;
    }
  body_frame_t *child = &self->frames[self->depth - 1];
  body_frame_t *parent = &self->frames[self->depth - 2];
  s_pack_header (&parent->pk, child);
  if (child->buf.size > 0)
    msgpack_sbuffer_write (&parent->buf, child->buf.data, child->buf.size);
  msgpack_sbuffer_destroy (&child->buf);
  self->depth--;
}

msgpack_packer *
zcd_body_raw (zcd_body_t *self, const char *key)
{
  return s_begin_value (self, key);
}

const char *
zcd_body_data (zcd_body_t *self, size_t *len)
{
  if (self == NULL || self->broken || self->depth != 1)
    {
      errno = EINVAL;
      return NULL;
    }
  msgpack_sbuffer_clear (&self->out);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &self->out, msgpack_sbuffer_write);
  s_pack_header (&pk, &self->frames[0]);
  if (self->frames[0].buf.size > 0)
    msgpack_sbuffer_write (&self->out, self->frames[0].buf.data, self->frames[0].buf.size);
  if (len)
    *len = self->out.size;
  return self->out.data;
}
