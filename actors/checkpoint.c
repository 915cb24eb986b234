/* The checkpoint actor.  At start it asks `criu check` (asynchronously)
 * whether checkpoints can work on this kernel; until it knows, checkpoint
 * creations wait in its mailbox queue.  Without a working CRIU a creation
 * is `unavailable` with criu's own words (PROTOCOL.md).  Listing and
 * deleting are plain directory work and need no CRIU. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "actors/actors.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

typedef struct pending
{
  uint64_t token;
  char *raw; /* the forwarded "req" message */
  size_t raw_len;
  struct pending *next;
} pending_t;

typedef struct checkpointer
{
  zcd_daemon_t *daemon;
  actor_t *actor;
  bool checked;
  bool available;
  char *reason;
  pending_t *waiting;
} checkpointer_t;

static void
s_reply_error (checkpointer_t *self, uint64_t token, zcd_code_t code, const char *message)
{
  zcd_send_reply_error (self->daemon->actors, CHECKPOINT_ACTOR, token, code, message);
}

static void
s_reply_ok (checkpointer_t *self, uint64_t token, const msgpack_sbuffer *result)
{
  zcd_send_reply_ok (self->daemon->actors, CHECKPOINT_ACTOR, token, result);
}

/* checkpoint_dir, else <bundle>/checkpoints */
static char *
s_checkpoint_dir (const msgpack_object *msg, const msgpack_object *body)
{
  char *dir = mp_get_strdup (body, "checkpoint_dir");
  if (dir)
    return dir;
  cleanup_free char *bundle = mp_get_strdup (msg, "bundle");
  if (bundle == NULL || asprintf (&dir, "%s/checkpoints", bundle) < 0)
    return NULL;
  return dir;
}

static void
s_pack_entry (msgpack_packer *pk, const char *name, json_t *meta)
{
  msgpack_pack_map (pk, 7);
  mp_pack_kv_str (pk, "name", name);
  mp_pack_kv_int (pk, "created", (int64_t) json_integer_value (json_object_get (meta, "created")));
  const char *flags[] = { "exit", "tcp", "unix_sockets", "shell" };
  for (int i = 0; i < 4; i++)
    mp_pack_kv_bool (pk, flags[i], json_is_true (json_object_get (meta, flags[i])));
  mp_pack_str (pk, "empty_ns");
  json_t *ns = json_object_get (meta, "empty_ns");
  msgpack_pack_array (pk, json_is_array (ns) ? json_array_size (ns) : 0);
  for (size_t i = 0; json_is_array (ns) && i < json_array_size (ns); i++)
    mp_pack_str (pk, json_string_value (json_array_get (ns, i)) ?: "");
}

static int
s_compare_names (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static void
s_list (checkpointer_t *self, uint64_t token, const char *dir)
{
  char *names[1024];
  size_t n = 0;
  cleanup_dir DIR *d = opendir (dir);
  for (struct dirent *de; d && n < 1024 && (de = readdir (d));)
    if (zcd_valid_id (de->d_name, strlen (de->d_name)))
      names[n++] = strdup (de->d_name);
  qsort (names, n, sizeof *names, s_compare_names);
  msgpack_sbuffer result;
  msgpack_sbuffer_init (&result);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &result, msgpack_sbuffer_write);
  json_t *metas[1024];
  size_t kept = 0;
  for (size_t i = 0; i < n; i++)
    {
      char path[4096];
      snprintf (path, sizeof path, "%s/%s/zcd-checkpoint.json", dir, names[i]);
      metas[i] = json_load_file (path, 0, NULL);
      kept += metas[i] != NULL;
    }
  msgpack_pack_map (&pk, 1);
  mp_pack_str (&pk, "checkpoints");
  msgpack_pack_array (&pk, kept);
  for (size_t i = 0; i < n; i++)
    {
      if (metas[i])
        s_pack_entry (&pk, names[i], metas[i]);
      json_decref (metas[i]);
      free (names[i]);
    }
  s_reply_ok (self, token, &result);
  msgpack_sbuffer_destroy (&result);
}

static void
s_delete (checkpointer_t *self, uint64_t token, const char *dir, const char *name)
{
  char path[4096];
  struct stat st;
  snprintf (path, sizeof path, "%s/%s", dir, name);
  if (stat (path, &st) < 0)
    {
      {
      char message[4200];
      snprintf (message, sizeof message, "no checkpoint `%s` in %s", name, dir);
      s_reply_error (self, token, ZCD_E_NOT_FOUND, message);
    }
      return;
    }
  cleanup_error zcd_error_t *err = NULL;
  if (zcd_rm_rf (path, &err) < 0)
    s_reply_error (self, token, ZCD_E_INTERNAL, err->msg);
  else
    s_reply_ok (self, token, NULL);
}

/* Handle one forwarded request; false if it must wait for `criu check`. */
static bool
s_handle (checkpointer_t *self, const msgpack_object *msg, const char *raw, size_t raw_len)
{
  uint64_t token = mp_get_uint (msg, "token", 0);
  cleanup_free char *op = mp_get_strdup (msg, "op");
  const msgpack_object *bin = mp_map_get (msg, "body");
  msgpack_unpacked body;
  msgpack_unpacked_init (&body);
  if (op == NULL || bin == NULL || bin->type != MSGPACK_OBJECT_BIN
      || mp_unpack (bin->via.bin.ptr, bin->via.bin.size, &body, NULL) < 0)
    {
      s_reply_error (self, token, ZCD_E_INTERNAL, "undecodable checkpoint request");
      msgpack_unpacked_destroy (&body);
      return true;
    }
  bool done = true;
  cleanup_free char *dir = s_checkpoint_dir (msg, &body.data);
  if (strcmp (op, "checkpoint_create") == 0)
    {
      if (!self->checked)
        done = false;
      else if (!self->available)
        s_reply_error (self, token, ZCD_E_UNAVAILABLE, self->reason);
      else
        {
          cleanup_free char *to = mp_get_strdup (msg, "actor");
          cleanup_error zcd_error_t *err = NULL;
          if (to == NULL)
            s_reply_error (self, token, ZCD_E_NOT_FOUND, "the container is gone");
          else if (actor_send_raw (self->daemon->actors, SUPERVISOR_NAME, to, raw, raw_len, &err) < 0)
            s_reply_error (self, token, err->code, err->msg);
        }
    }
  else if (dir == NULL)
    s_reply_error (self, token, ZCD_E_INVALID_ARGUMENT, "key `checkpoint_dir`: required");
  else if (strcmp (op, "checkpoint_list") == 0)
    s_list (self, token, dir);
  else
    {
      cleanup_free char *name = mp_get_strdup (&body.data, "name");
      s_delete (self, token, dir, name ? name : "");
    }
  msgpack_unpacked_destroy (&body);
  return done;
}

static void
s_on_req (actor_t *actor, const actor_msg_t *msg)
{
  checkpointer_t *self = actor_state (actor);
  /* Re-encode: the forwarded bytes go on unchanged to the container. */
  msgpack_sbuffer raw;
  msgpack_sbuffer_init (&raw);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &raw, msgpack_sbuffer_write);
  msgpack_pack_object (&pk, *msg->body);
  if (!s_handle (self, msg->body, raw.data, raw.size))
    {
      pending_t *p = calloc (1, sizeof *p);
      p->raw = raw.data;
      p->raw_len = raw.size;
      p->next = self->waiting;
      self->waiting = p;
      return;
    }
  msgpack_sbuffer_destroy (&raw);
}

static void
s_criu_checked (const child_result_t *res, void *arg)
{
  checkpointer_t *self = arg;
  self->checked = true;
  self->available = res->exit_code == 0;
  if (!self->available)
    {
      cleanup_free char *text = zcd_runtime_error_text (res->out, res->err);
      if (asprintf (&self->reason, "CRIU does not work on this machine (`criu check`: %s)", text) < 0)
        self->reason = NULL;
      log_info ("checkpoints unavailable: %s", self->reason);
    }
  while (self->waiting)
    {
      pending_t *p = self->waiting;
      self->waiting = p->next;
      msgpack_unpacked m;
      msgpack_unpacked_init (&m);
      if (mp_unpack (p->raw, p->raw_len, &m, NULL) == 0)
        s_handle (self, &m.data, p->raw, p->raw_len);
      msgpack_unpacked_destroy (&m);
      free (p->raw);
      free (p);
    }
}

static void
s_destroy_state (actor_t *actor)
{
  checkpointer_t *self = actor_state (actor);
  while (self->waiting)
    {
      pending_t *p = self->waiting;
      self->waiting = p->next;
      free (p->raw);
      free (p);
    }
  free (self->reason);
  free (self);
}

static const actor_route_t s_routes[] = { { "req", s_on_req }, { NULL, NULL } };
static const actor_class_t s_class = { .kind = "checkpoint", .routes = s_routes, .destroy_state = s_destroy_state };

actor_t *
checkpoint_actor_new (zcd_daemon_t *daemon, zcd_error_t **err)
{
  checkpointer_t *self = calloc (1, sizeof *self);
  self->daemon = daemon;
  self->actor = actor_new (daemon->actors, &s_class, CHECKPOINT_ACTOR, self, err);
  if (self->actor == NULL)
    {
      free (self);
      return NULL;
    }
  char *argv[] = { "criu", "check", NULL };
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.deadline_ms = 60000;
  cleanup_error zcd_error_t *spawn_err = NULL;
  if (child_spawn (daemon->children, argv, &opts, s_criu_checked, self, &spawn_err) == NULL)
    {
      self->checked = true;
      if (asprintf (&self->reason, "criu is not installed (%s)", spawn_err->msg) < 0)
        self->reason = NULL;
    }
  return self->actor;
}
