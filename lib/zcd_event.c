/* Decoded events (PROTOCOL.md section 5). */
#include "lib/zcd_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct
{
  zcd_reply_t *map; /* the decoded Event map and its bytes */
  char *type, *id, *pid;
} event_storage_t;

void
zcd_event_destroy (zcd_event_t **self_p)
{
  if (self_p == NULL || *self_p == NULL)
    return;
  zcd_event_t *self = *self_p;
  event_storage_t *storage = self->priv_;
  if (storage)
    {
      zcd_reply_destroy (&storage->map);
      free (storage->type);
      free (storage->id);
      free (storage->pid);
      free (storage);
    }
  free (self);
  *self_p = NULL;
}

zcd_event_t *
zcd_event_decode (const void *data, size_t len)
{
  zcd_event_t *self = calloc (1, sizeof *self);
  event_storage_t *storage = calloc (1, sizeof *storage);
  if (self == NULL || storage == NULL)
    {
      free (self);
      free (storage);
      errno = ENOMEM;
      return NULL;
    }
  self->priv_ = storage;
  /* An Event is a map like a reply: reuse the reply decoder and lookups. */
  storage->map = zcd_reply_decode (data, len);
  if (storage->map == NULL || !zcd_reply_get_uint (storage->map, "seq", &self->seq)
      || (storage->type = zcd_reply_get_strdup (storage->map, "type")) == NULL)
    {
      zcd_event_destroy (&self);
      errno = EPROTO;
      return NULL;
    }
  storage->id = zcd_reply_get_strdup (storage->map, "id");
  storage->pid = zcd_reply_get_strdup (storage->map, "pid");
  self->type = storage->type;
  self->id = storage->id ? storage->id : "";
  self->pid = storage->pid;
  uint64_t status = 0;
  self->has_status = zcd_reply_get_uint (storage->map, "status", &status) && status <= UINT32_MAX;
  self->status = self->has_status ? (uint32_t) status : 0;
  self->has_system_pid = zcd_reply_get_uint (storage->map, "system_pid", &self->system_pid);
  zcd_reply_get_bool (storage->map, "oom_killed", &self->oom_killed);
  zcd_reply_get_int (storage->map, "ts", &self->ts);
  self->obj = zcd_reply_root (storage->map);
  return self;
}

zcd_event_t *
zcd_event_from_obj (const msgpack_object *obj)
{
  if (obj == NULL)
    {
      errno = EPROTO;
      return NULL;
    }
  msgpack_sbuffer sbuf;
  msgpack_sbuffer_init (&sbuf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
  msgpack_pack_object (&pk, *obj);
  zcd_event_t *self = zcd_event_decode (sbuf.data, sbuf.size);
  int saved = errno;
  msgpack_sbuffer_destroy (&sbuf);
  errno = saved;
  return self;
}
