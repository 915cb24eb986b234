/* The checkpoint actor.  At start it asks `criu check` (asynchronously)
 * whether checkpoints can work on this kernel; until it knows, checkpoint
 * creations wait in its mailbox queue.  Without a working CRIU a creation
 * is `unavailable` with criu's own words (PROTOCOL.md).  Listing and
 * deleting are plain directory work and need no CRIU; the removal of a
 * tree, and the fsync of a new checkpoint, run in forked children so the
 * loop thread never waits on the disk (issue 9). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <czmq.h>
#include <jansson.h>

#include "actors/actors.h"
#include "actors/checkpoint_int.h"
#include "core/amsg_gen.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

/* zcd's mark on a checkpoint it made (container_checkpoint.c writes it). */
#define CHECKPOINT_MARKER "zcd-checkpoint.json"
/* zcd writes a few hundred bytes; anything much larger is not its file. */
#define CHECKPOINT_MARKER_MAX (64 * 1024)
/* A listing is one reply built in one loop turn, an open and a read per
 * entry: 10,000 keeps both to a fraction of a second and about 1 MiB. */
#define CHECKPOINT_LIST_MAX 10000

/* A checkpoint_delete whose removal runs in a forked child. */
typedef struct removal
{
  struct checkpointer *self;
  child_t *child;
  uint64_t token;
  char *what;   /* "delete checkpoint `x` (what is left is DIR/.zcd-deleting.N)" */
  void *handle; /* in the checkpointer's `removals` */
} removal_t;

typedef struct checkpointer
{
  zcd_daemon_t *daemon;
  actor_t *actor;
  bool checked;
  bool available;
  char *reason;
  zlistx_t *waiting;  /* amsg_req_t copies: creations waiting for `criu check`, in order */
  zlistx_t *removals; /* removal_t: deletions whose child runs */
} checkpointer_t;

static void
s_reply_error (checkpointer_t *self, uint64_t token, zcd_code_t code, const char *message)
{
  zcd_send_reply_error (self->daemon->actors, CHECKPOINT_ACTOR, token, code, message, false);
}

static void
s_reply_ok (checkpointer_t *self, uint64_t token, const msgpack_sbuffer *result)
{
  zcd_send_reply_ok (self->daemon->actors, CHECKPOINT_ACTOR, token, result, false);
}

/* checkpoint_dir, else <bundle>/checkpoints.  Trailing slashes are dropped:
 * with one, the kernel would follow a symlinked last component despite
 * O_NOFOLLOW. */
static char *
s_checkpoint_dir (const char *bundle, const msgpack_object *body)
{
  char *dir = mp_get_strdup (body, "checkpoint_dir");
  if (dir == NULL && (bundle == NULL || asprintf (&dir, "%s/checkpoints", bundle) < 0))
    return NULL;
  for (size_t len = strlen (dir); len > 1 && dir[len - 1] == '/'; len--)
    dir[len - 1] = '\0';
  return dir;
}

/* The checkpoint directory itself, never a symlink to one.  A missing one
 * is not_found (s_list turns that into an empty list). */
static int
s_open_checkpoint_dir (const char *dir, zcd_error_t **err)
{
  return zcd_open_client_dir (AT_FDCWD, dir, "checkpoint_dir", err);
}

/* The fields and types container_checkpoint.c writes, and a name that is
 * the directory's own: anything else is not zcd's marker. */
static bool
s_marker_valid (json_t *meta, const char *name)
{
  static const char *const flags[] = { "exit", "tcp", "unix_sockets", "shell" };
  json_t *created = json_object_get (meta, "created");
  json_t *ns = json_object_get (meta, "empty_ns");
  const char *own = json_string_value (json_object_get (meta, "name"));
  if (!json_is_object (meta) || own == NULL || strcmp (own, name) != 0 || !json_is_integer (created)
      || json_integer_value (created) < 0 || !json_is_array (ns))
    return false;
  for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
    if (!json_is_boolean (json_object_get (meta, flags[i])))
      return false;
  for (size_t i = 0; i < json_array_size (ns); i++)
    if (!json_is_string (json_array_get (ns, i)))
      return false;
  return true;
}

/* The marker of the entry open as fd: a regular file (not a symlink, not a
 * FIFO: opening never blocks the daemon), at most CHECKPOINT_MARKER_MAX
 * bytes, owned by the daemon's own uid (zcd wrote it; nobody else can give
 * a file that owner), holding what s_marker_valid wants. */
static json_t *
s_read_marker (int fd, const char *name, zcd_error_t **err)
{
  cleanup_close int mfd = zcd_open_client_file (fd, CHECKPOINT_MARKER, O_RDONLY, S_IFREG,
                                                CHECKPOINT_MARKER_MAX, "marker", err);
  if (mfd < 0)
    return NULL;
  struct stat st;
  if (fstat (mfd, &st) < 0)
    {
      zcd_fail_errno (err, errno, "stat " CHECKPOINT_MARKER);
      return NULL;
    }
  if (st.st_uid != geteuid ())
    {
      zcd_fail (err, ZCD_E_NOT_FOUND, CHECKPOINT_MARKER " is owned by uid %u, not zcd's",
                (unsigned) st.st_uid);
      return NULL;
    }
  /* zcd writes it 0600.  A file of zcd's uid that others may read is not
   * one: a container's output file the shim created at a client's path
   * (0644) holds whatever the container printed. */
  if ((st.st_mode & 077) != 0)
    {
      zcd_fail (err, ZCD_E_NOT_FOUND, CHECKPOINT_MARKER " has mode %o, not zcd's 0600",
                (unsigned) (st.st_mode & 0777));
      return NULL;
    }
  /* Read to the end: only its owner, zcd's uid, could grow it past the
   * size just checked. */
  json_error_t jerr;
  json_t *meta = json_loadfd (mfd, JSON_REJECT_DUPLICATES, &jerr);
  if (meta && s_marker_valid (meta, name))
    return meta;
  json_decref (meta);
  zcd_fail (err, ZCD_E_NOT_FOUND, CHECKPOINT_MARKER " is not zcd's checkpoint metadata");
  return NULL;
}

/* Open the checkpoint `name` of dfd if it is zcd's: a real directory (a
 * symlink, a file or anything else is not followed nor opened) that holds
 * zcd's marker.  Every way of not being one is the same answer, not_found
 * "no checkpoint `x` in DIR (why)": what checkpoint_list does not show,
 * checkpoint_delete does not find.  Returns the entry's fd and, if meta is
 * not NULL, its metadata. */
static int
s_open_checkpoint (int dfd, const char *dir, const char *name, json_t **meta, zcd_error_t **err)
{
  cleanup_error zcd_error_t *why = NULL;
  cleanup_close int fd = zcd_open_client_dir (dfd, name, "entry", &why);
  if (fd < 0 && why->code == ZCD_E_NOT_FOUND)
    return zcd_fail (err, ZCD_E_NOT_FOUND, "no checkpoint `%s` in %s", name, dir);
  /* The image directory zcd made: its uid's, 0700 (what CRIU adds in it
   * cannot widen that). */
  struct stat st;
  if (fd >= 0 && (fstat (fd, &st) < 0 || st.st_uid != geteuid () || (st.st_mode & 077) != 0))
    return zcd_fail (err, ZCD_E_NOT_FOUND, "no checkpoint `%s` in %s (not a directory zcd made)",
                     name, dir);
  json_t *m = fd < 0 ? NULL : s_read_marker (fd, name, &why);
  if (m == NULL)
    return zcd_fail (err, ZCD_E_NOT_FOUND, "no checkpoint `%s` in %s (%s)", name, dir, why->msg);
  if (meta)
    *meta = m;
  else
    json_decref (m);
  return steal_fd (&fd);
}

int
checkpoint_find (const char *dir, const char *name, checkpoint_source_t *src,
                 zcd_error_t **err)
{
  cleanup_close int dfd = s_open_checkpoint_dir (dir, err);
  if (dfd < 0)
    return -1;
  json_t *meta = NULL;
  cleanup_close int fd = s_open_checkpoint (dfd, dir, name, &meta, err);
  if (fd < 0)
    return -1;
  if (src)
    checkpoint_source_fill (src, meta);
  json_decref (meta);
  return 0;
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
  msgpack_pack_array (pk, json_array_size (ns));
  for (size_t i = 0; i < json_array_size (ns); i++)
    mp_pack_str (pk, json_string_value (json_array_get (ns, i)));
}

static int
s_compare_names (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

typedef struct
{
  char **v;
  size_t n, cap;
} names_t;

static void
s_names_free (names_t *names)
{
  for (size_t i = 0; i < names->n; i++)
    free (names->v[i]);
  free (names->v);
}

/* The names in dfd that could be checkpoints (id syntax: so never `.`,
 * `..` nor a `.zcd-deleting.*` leftover), sorted. */
static int
s_read_names (int dfd, const char *dir, names_t *names, zcd_error_t **err)
{
  int dup_fd = fcntl (dfd, F_DUPFD_CLOEXEC, 0);
  cleanup_dir DIR *d = dup_fd < 0 ? NULL : fdopendir (dup_fd);
  if (d == NULL)
    {
      int saved = errno;
      if (dup_fd >= 0)
        close (dup_fd);
      return zcd_fail_errno (err, saved, "checkpoint_dir: read `%s`", dir);
    }
  for (;;)
    {
      errno = 0;
      struct dirent *de = readdir (d);
      if (de == NULL && errno != 0)
        return zcd_fail_errno (err, errno, "checkpoint_dir: read `%s`", dir);
      if (de == NULL)
        break;
      if (!zcd_valid_id (de->d_name, strlen (de->d_name)))
        continue;
      if (names->n == CHECKPOINT_LIST_MAX)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                         "checkpoint_dir `%s` holds more than %d entries: too many to list", dir,
                         CHECKPOINT_LIST_MAX);
      if (names->n == names->cap)
        {
          size_t cap = names->cap ? names->cap * 2 : 64;
          char **grown = realloc (names->v, cap * sizeof *grown);
          if (grown == NULL)
            return zcd_fail_errno (err, ENOMEM, "checkpoint_dir: read `%s`", dir);
          names->v = grown;
          names->cap = cap;
        }
      if ((names->v[names->n] = strdup (de->d_name)) == NULL)
        return zcd_fail_errno (err, ENOMEM, "checkpoint_dir: read `%s`", dir);
      names->n++;
    }
  if (names->n > 1)
    qsort (names->v, names->n, sizeof *names->v, s_compare_names);
  return 0;
}

/* Entries that are not zcd's checkpoints (no marker, a symlink, a FIFO as
 * marker, invalid metadata...) are left out silently: a listing is no
 * place to report on foreign files. */
static void
s_list (checkpointer_t *self, uint64_t token, const char *dir)
{
  cleanup_error zcd_error_t *err = NULL;
  cleanup_close int dfd = s_open_checkpoint_dir (dir, &err);
  /* A missing directory holds no checkpoint: an empty list, as for a
   * container whose default <bundle>/checkpoints was never made. */
  if (dfd < 0 && err->code != ZCD_E_NOT_FOUND)
    {
      s_reply_error (self, token, err->code, err->msg);
      return;
    }
  names_t names = { 0 };
  if (dfd >= 0 && s_read_names (dfd, dir, &names, &err) < 0)
    {
      s_names_free (&names);
      s_reply_error (self, token, err->code, err->msg);
      return;
    }
  json_t **metas = calloc (names.n ? names.n : 1, sizeof *metas);
  size_t kept = 0;
  for (size_t i = 0; metas && i < names.n; i++)
    {
      int fd = s_open_checkpoint (dfd, dir, names.v[i], &metas[i], NULL);
      if (fd >= 0)
        {
          close (fd);
          kept++;
        }
    }
  msgpack_sbuffer result;
  msgpack_sbuffer_init (&result);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &result, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 1);
  mp_pack_str (&pk, "checkpoints");
  msgpack_pack_array (&pk, kept);
  for (size_t i = 0; metas && i < names.n; i++)
    if (metas[i])
      {
        s_pack_entry (&pk, names.v[i], metas[i]);
        json_decref (metas[i]);
      }
  free (metas);
  s_names_free (&names);
  s_reply_ok (self, token, &result);
  msgpack_sbuffer_destroy (&result);
}

/* Move the checkpoint open as fd out of sight under an unpredictable name
 * of the same directory (atomic: it is listed whole or not at all, and a
 * crash half-way through leaves no half checkpoint under its name), and
 * check that what moved is what was checked. */
static int
s_hide (int dfd, const char *dir, const char *name, int fd, char *hidden, size_t size,
        zcd_error_t **err)
{
  char hex[17];
  zcd_random_hex (hex, 16);
  snprintf (hidden, size, ".zcd-deleting.%s", hex);
  struct stat checked, moved;
  if (fstat (fd, &checked) < 0)
    return zcd_fail_errno (err, errno, "delete checkpoint `%s` in %s: stat", name, dir);
  if (renameat2 (dfd, name, dfd, hidden, RENAME_NOREPLACE) < 0
      && (errno != EINVAL || renameat (dfd, name, dfd, hidden) < 0))
    return zcd_fail_errno (err, errno, "delete checkpoint `%s` in %s: rename", name, dir);
  if (fstatat (dfd, hidden, &moved, AT_SYMLINK_NOFOLLOW) == 0 && moved.st_dev == checked.st_dev
      && moved.st_ino == checked.st_ino)
    return 0;
  /* `name` was swapped for something else after the check: put that back. */
  renameat2 (dfd, hidden, dfd, name, RENAME_NOREPLACE);
  return zcd_fail (err, ZCD_E_NOT_FOUND,
                   "no checkpoint `%s` in %s (it changed while being deleted)", name, dir);
}

/* ---- removals and the marker's fsync, off the loop thread (issue 9) ---- */

typedef struct
{
  int dfd;
  const char *name;
  int fd;
} rm_args_t;

/* In the forked child: exit 0, or 1 + the error's code with its message on
 * stderr. */
static int
s_rm_in_child (void *arg)
{
  rm_args_t *a = arg;
  zcd_error_t *err = NULL;
  if (zcd_rm_tree_fd (a->dfd, a->name, a->fd, &err) == 0)
    return 0;
  fputs (err->msg, stderr);
  return 1 + (int) err->code;
}

/* What a removal child said, as an error (NULL: it removed the tree). */
static zcd_error_t *
s_rm_result (const child_result_t *res, const char *what)
{
  zcd_error_t *err = NULL;
  if (res->exit_code == 0)
    return NULL;
  if (res->exit_code >= 1 && res->exit_code <= (int) ZCD_CODE_COUNT)
    zcd_fail (&err, (zcd_code_t) (res->exit_code - 1), "%s: %s", what, res->err);
  else
    zcd_fail (&err, ZCD_E_INTERNAL, "%s: the removal ended with status %d", what, res->exit_code);
  return err;
}

child_t *
checkpoint_fork_removal (zcd_daemon_t *daemon, int dfd, const char *name, int fd,
                         uint64_t deadline_ms, child_done_fn done, void *arg, zcd_error_t **err)
{
  rm_args_t args = { dfd, name, fd };
  int keep[] = { dfd, fd };
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  if (deadline_ms)
    opts.deadline_ms = deadline_ms;
  return child_fork (daemon->children, s_rm_in_child, &args, keep, 2, &opts, done, arg, err);
}

static void
s_removal_free (removal_t *r)
{
  free (r->what);
  free (r);
}

static void
s_delete_done (const child_result_t *res, void *arg)
{
  removal_t *r = arg;
  checkpointer_t *self = r->self;
  zlistx_detach (self->removals, r->handle);
  cleanup_error zcd_error_t *err = s_rm_result (res, r->what);
  if (err)
    s_reply_error (self, r->token, err->code, err->msg);
  else
    s_reply_ok (self, r->token, NULL);
  s_removal_free (r);
}

static void
s_logged_removal_done (const child_result_t *res, void *arg)
{
  char *what = arg;
  cleanup_error zcd_error_t *err = s_rm_result (res, what);
  if (err)
    log_warn ("%s", err->msg);
  free (what);
}

void
checkpoint_remove_tree (zcd_daemon_t *daemon, int dfd, const char *name, int fd, const char *what)
{
  cleanup_error zcd_error_t *err = NULL;
  char *copy = strdup (what);
  if (copy && checkpoint_fork_removal (daemon, dfd, name, fd, 0, s_logged_removal_done, copy, &err))
    return;
  free (copy);
  log_warn ("%s: %s", what, err ? err->msg : strerror (ENOMEM));
}

/* In the forked child: the marker's file system to disk, and with it the
 * images it vouches for (criu does not sync them). */
static int
s_sync_in_child (void *arg)
{
  int fd = open (arg, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 || syncfs (fd) < 0)
    {
      fprintf (stderr, "%s", strerror (errno));
      return 1;
    }
  return 0;
}

static void
s_marker_synced (const child_result_t *res, void *arg)
{
  char *path = arg;
  if (res->exit_code != 0)
    log_warn ("checkpoint marker `%s`: sync to disk failed (%s): the checkpoint may not survive "
              "a power loss",
              path, res->err_len ? res->err : "killed");
  free (path);
}

void
checkpoint_write_marker (zcd_daemon_t *daemon, const char *path, const char *text)
{
  cleanup_error zcd_error_t *err = NULL;
  if (zcd_write_file_replace (path, text, strlen (text), 0600, &err) < 0)
    {
      log_warn ("checkpoint marker: %s", err->msg);
      return;
    }
  char *copy = strdup (path);
  if (copy && child_fork (daemon->children, s_sync_in_child, copy, NULL, 0, NULL, s_marker_synced,
                          copy, &err))
    return;
  free (copy);
  log_warn ("checkpoint marker `%s`: cannot sync it to disk: %s", path,
            err ? err->msg : strerror (ENOMEM));
}

/* Delete only what carries zcd's marker (DESIGN.md, "State on disk"); the
 * removal goes through file descriptors and never follows a symlink, in a
 * forked child; the request is answered when it exits. */
static int
s_delete_checkpoint (checkpointer_t *self, uint64_t token, const char *dir, const char *name,
                     zcd_error_t **err)
{
  if (!zcd_valid_id (name, strlen (name)))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `name`: `%s` is not a valid checkpoint name",
                     name);
  cleanup_close int dfd = s_open_checkpoint_dir (dir, err);
  if (dfd < 0)
    return -1;
  cleanup_close int fd = s_open_checkpoint (dfd, dir, name, NULL, err);
  if (fd < 0)
    return -1;
  char hidden[64];
  if (s_hide (dfd, dir, name, fd, hidden, sizeof hidden, err) < 0)
    return -1;
  removal_t *r = calloc (1, sizeof *r);
  if (r == NULL
      || asprintf (&r->what, "delete checkpoint `%s` (what is left is %s/%s)", name, dir, hidden)
             < 0)
    {
      free (r);
      return zcd_fail_errno (err, ENOMEM, "delete checkpoint `%s`", name);
    }
  r->self = self;
  r->token = token;
  r->child = checkpoint_fork_removal (self->daemon, dfd, hidden, fd, 0, s_delete_done, r, err);
  if (r->child == NULL)
    {
      zcd_error_wrap (err, "%s", r->what);
      s_removal_free (r);
      return -1;
    }
  r->handle = zlistx_add_start (self->removals, r);
  return 0;
}

static void
s_delete (checkpointer_t *self, uint64_t token, const char *dir, const char *name)
{
  cleanup_error zcd_error_t *err = NULL;
  if (s_delete_checkpoint (self, token, dir, name, &err) < 0)
    s_reply_error (self, token, err->code, err->msg);
}

/* A creation goes on to its container once CRIU is known to work; the
 * container answers it.  The request is passed on as it came. */
static void
s_forward_create (checkpointer_t *self, const amsg_req_t *m)
{
  if (!self->available)
    {
      s_reply_error (self, m->token, ZCD_E_UNAVAILABLE, self->reason);
      return;
    }
  if (m->actor == NULL)
    {
      s_reply_error (self, m->token, ZCD_E_NOT_FOUND, "the container is gone");
      return;
    }
  cleanup_error zcd_error_t *err = NULL;
  if (amsg_req_send (self->daemon->actors, CHECKPOINT_ACTOR, m->actor, m, &err) < 0)
    s_reply_error (self, m->token, err->code, err->msg);
}

/* checkpoint_list and checkpoint_delete: directory work, answered here. */
static void
s_handle_local (checkpointer_t *self, const amsg_req_t *m)
{
  msgpack_unpacked body;
  msgpack_unpacked_init (&body);
  if (mp_unpack (m->body.ptr, m->body.size, &body, NULL) < 0)
    {
      /* The edge validated these bytes: only a bug lands here. */
      s_reply_error (self, m->token, ZCD_E_INTERNAL, "undecodable checkpoint request");
      msgpack_unpacked_destroy (&body);
      return;
    }
  cleanup_free char *dir = s_checkpoint_dir (m->bundle, &body.data);
  if (dir == NULL)
    s_reply_error (self, m->token, ZCD_E_INVALID_ARGUMENT, "key `checkpoint_dir`: required");
  else if (m->op == PROTO_OP_CHECKPOINT_LIST)
    s_list (self, m->token, dir);
  else
    {
      cleanup_free char *name = mp_get_strdup (&body.data, "name");
      s_delete (self, m->token, dir, name ? name : "");
    }
  msgpack_unpacked_destroy (&body);
}

static void
s_on_req (actor_t *actor, const char *from, const amsg_req_t *m)
{
  checkpointer_t *self = actor_state (actor);
  switch (m->op)
    {
    case PROTO_OP_CHECKPOINT_CREATE:
      if (self->checked)
        s_forward_create (self, m);
      else
        zlistx_add_end (self->waiting, amsg_req_dup (m));
      break;
    case PROTO_OP_CHECKPOINT_LIST:
    case PROTO_OP_CHECKPOINT_DELETE:
      s_handle_local (self, m);
      break;
    default:
      s_reply_error (self, m->token, ZCD_E_UNKNOWN_OP,
                     "the checkpoint actor does not answer this operation");
      break;
    }
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
      self->daemon->criu_unavailable = self->reason;
    }
  /* In the order they came. */
  for (amsg_req_t *m = zlistx_first (self->waiting); m; m = zlistx_next (self->waiting))
    s_forward_create (self, m);
  zlistx_purge (self->waiting);
}

static void
s_destroy_state (actor_t *actor)
{
  checkpointer_t *self = actor_state (actor);
  self->daemon->criu_unavailable = NULL;
  zlistx_destroy (&self->waiting);
  /* Removals still running finish unobserved; nobody is left to answer. */
  for (removal_t *r; (r = zlistx_detach (self->removals, NULL));)
    {
      child_forget (self->daemon->children, r->child);
      s_removal_free (r);
    }
  zlistx_destroy (&self->removals);
  free (self->reason);
  free (self);
}

static const amsg_checkpoint_handlers_t s_handlers = { .on_req = s_on_req };

static const actor_class_t s_class = {
  .kind = "checkpoint",
  AMSG_CHECKPOINT_DISPATCH (&s_handlers),
  .destroy_state = s_destroy_state,
};

/* zlistx destructor of `waiting` (amsg_req_dup copies are one block). */
static void
s_free_req (void **item)
{
  free (*item);
  *item = NULL;
}

actor_t *
checkpoint_actor_new (zcd_daemon_t *daemon, zcd_error_t **err)
{
  checkpointer_t *self = calloc (1, sizeof *self);
  self->daemon = daemon;
  self->waiting = zlistx_new ();
  zlistx_set_destructor (self->waiting, s_free_req);
  self->removals = zlistx_new ();
  self->actor = actor_new (daemon->actors, &s_class, CHECKPOINT_ACTOR, self, err);
  if (self->actor == NULL)
    {
      zlistx_destroy (&self->waiting);
      zlistx_destroy (&self->removals);
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
      daemon->criu_unavailable = self->reason;
    }
  return self->actor;
}
