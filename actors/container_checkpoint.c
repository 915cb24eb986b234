/* checkpoint_create on a running container: the runtime's dump, and the
 * metadata that marks the image as zcd's (actors/checkpoint.c lists and
 * deletes only what carries it). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "actors/container.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

/* runtime checkpoint; the metadata that checkpoint_list reads is written
 * only once the dump succeeded (container_checkpoint_done). */
void
container_op_checkpoint (container_t *self, uint64_t token, const msgpack_object *body)
{
  const msgpack_object *cp = mp_map_get (body, "checkpoint");
  cleanup_free char *name = mp_get_strdup (cp, "name");
  cleanup_free char *dir = mp_get_strdup (body, "checkpoint_dir");
  if (dir == NULL && asprintf (&dir, "%s/checkpoints", self->bundle) < 0)
    dir = NULL;
  cleanup_free char *image = NULL;
  struct stat st;
  if (name == NULL || dir == NULL || asprintf (&image, "%s/%s", dir, name) < 0)
    {
      container_fail_op (self, token, ZCD_E_INVALID_ARGUMENT, "key `checkpoint.name`: required");
      return;
    }
  if (stat (image, &st) == 0)
    {
      container_fail_op (self, token, ZCD_E_ALREADY_EXISTS, "checkpoint `%s` exists in %s", name, dir);
      return;
    }
  cleanup_error zcd_error_t *err = NULL;
  if (zcd_mkdir_p (image, 0700, &err) < 0)
    {
      container_fail_op (self, token, err->code, "%s", err->msg);
      return;
    }
  bool leave = !mp_get_bool (cp, "exit", false);
  json_t *meta = json_pack ("{s:s,s:I,s:b,s:b,s:b,s:b}", "name", name, "created",
                            (json_int_t) zcd_now_ns (), "exit", !leave, "tcp",
                            mp_get_bool (cp, "tcp", false), "unix_sockets",
                            mp_get_bool (cp, "unix_sockets", false), "shell",
                            mp_get_bool (cp, "shell", false));
  char **empty_ns = mp_get_strv (cp, "empty_ns");
  json_object_set_new (meta, "empty_ns", container_json_strv (empty_ns));
  free (self->checkpoint_meta);
  free (self->checkpoint_meta_path);
  self->checkpoint_meta = json_dumps (meta, JSON_COMPACT);
  json_decref (meta);
  if (asprintf (&self->checkpoint_meta_path, "%s/zcd-checkpoint.json", image) < 0)
    self->checkpoint_meta_path = NULL;
  const char *words[24];
  size_t n = 0;
  words[n++] = "checkpoint";
  words[n++] = "--image-path";
  words[n++] = image;
  if (leave)
    words[n++] = "--leave-running";
  if (mp_get_bool (cp, "tcp", false))
    words[n++] = "--tcp-established";
  if (mp_get_bool (cp, "unix_sockets", false))
    words[n++] = "--ext-unix-sk";
  if (mp_get_bool (cp, "shell", false))
    words[n++] = "--shell-job";
  for (size_t i = 0; empty_ns && empty_ns[i] && n < 20; i++)
    {
      words[n++] = "--empty-ns";
      words[n++] = empty_ns[i];
    }
  words[n++] = self->id;
  words[n] = NULL;
  container_run_runtime (self, token, OP_CHECKPOINT, words);
  mp_strv_free (empty_ns);
}

void
container_checkpoint_done (container_t *self)
{
  if (self->checkpoint_meta && self->checkpoint_meta_path)
    zcd_write_file_atomic (self->checkpoint_meta_path, self->checkpoint_meta,
                           strlen (self->checkpoint_meta), 0600, NULL);
}
