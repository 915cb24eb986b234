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
#include "core/cgroup.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/logtail.h"
#include "core/mp.h"

/* What checkpoint_list and checkpoint_delete recognise as zcd's. */
#define CHECKPOINT_MARKER "zcd-checkpoint.json"

/* The checkpoint directory, made with one mkdir when missing (never its
 * parents: a checkpoint_dir whose parent does not exist is a client's
 * mistake, not a tree for zcd to build), then opened as itself (a symlink
 * or a non-directory is refused); and in it the image directory `name`,
 * which must not exist yet: zcd never reuses a directory it did not make. */
static int
s_make_image_dir (const char *dir, const char *name, zcd_error_t **err)
{
  if (mkdir (dir, 0700) < 0 && errno != EEXIST)
    {
      if (errno == ENOENT)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                         "checkpoint_dir: the parent directory of `%s` does not exist", dir);
      if (errno == ENOTDIR || errno == EACCES || errno == ELOOP || errno == ENAMETOOLONG)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "checkpoint_dir: `%s`: %s", dir,
                         strerror (errno));
      return zcd_fail_errno (err, errno, "checkpoint_dir: mkdir `%s`", dir);
    }
  cleanup_close int dfd = zcd_open_client_dir (AT_FDCWD, dir, "checkpoint_dir", err);
  if (dfd < 0)
    return -1;
  /* Relative to the directory just checked: a symlink swapped in for it
   * meanwhile cannot move the image elsewhere. */
  if (mkdirat (dfd, name, 0700) == 0)
    return 0;
  if (errno == EEXIST)
    return zcd_fail (err, ZCD_E_ALREADY_EXISTS, "checkpoint `%s` exists in %s", name, dir);
  return zcd_fail_errno (err, errno, "checkpoint `%s`: mkdir in %s", name, dir);
}

/* Where the dumped container's cgroups are: a restore by crun re-creates
 * them (CRIU puts the process back there first) and leaves them empty. */
static json_t *
s_cgroup_dirs (const container_t *self)
{
  json_t *dirs = json_array ();
  if (self->cgroup == NULL)
    return dirs;
  char **entries = cgroup_paths_controller_dirs (self->cgroup);
  for (char **e = entries; e && *e; e++)
    {
      const char *eq = strchr (*e, '=');
      if (eq)
        json_array_append_new (dirs, json_string (eq + 1));
      free (*e);
    }
  free (entries);
  const char *unified = cgroup_paths_unified (self->cgroup);
  if (unified)
    json_array_append_new (dirs, json_string (unified));
  return dirs;
}

static json_t *
s_metadata (const container_t *self, const char *name, const msgpack_object *cp,
            char **empty_ns)
{
  json_t *meta = json_pack (
      "{s:s,s:I,s:b,s:b,s:b,s:b}", "name", name, "created", (json_int_t)zcd_now_ns (), "exit",
      mp_get_bool (cp, "exit", false), "tcp", mp_get_bool (cp, "tcp", false), "unix_sockets",
      mp_get_bool (cp, "unix_sockets", false), "shell", mp_get_bool (cp, "shell", false));
  json_object_set_new (meta, "empty_ns", container_json_strv (empty_ns));
  json_object_set_new (meta, "id", json_string (self->id));
  json_object_set_new (meta, "cgroups", s_cgroup_dirs (self));
  return meta;
}

/* runtime checkpoint; the metadata that checkpoint_list reads is written
 * only once the dump succeeded (container_checkpoint_done), and the image
 * directory made here is removed again when it fails
 * (container_checkpoint_failed, also when the runtime could not start). */
static void
s_keep_metadata (container_t *self, const char *name, const char *image, const msgpack_object *cp,
                 char **empty_ns)
{
  json_t *meta = s_metadata (self, name, cp, empty_ns);
  free (self->checkpoint_meta);
  free (self->checkpoint_meta_path);
  self->checkpoint_meta = json_dumps (meta, JSON_COMPACT);
  json_decref (meta);
  if (image == NULL || asprintf (&self->checkpoint_meta_path, "%s/" CHECKPOINT_MARKER, image) < 0)
    self->checkpoint_meta_path = NULL;
}

/* CRIU's work directory (its dump.log) is in the container's state
 * directory, not in the image: the image of a failed dump is removed, and
 * the log is what says why it failed. */
static char *
s_work_dir (container_t *self)
{
  char *work = NULL;
  free (self->checkpoint_log);
  self->checkpoint_log = NULL;
  if (asprintf (&work, "%s/criu", self->dir) < 0)
    return NULL;
  if ((mkdir (work, 0700) < 0 && errno != EEXIST)
      || asprintf (&self->checkpoint_log, "%s/dump.log", work) < 0)
    {
      self->checkpoint_log = NULL;
      free (work);
      return NULL;
    }
  /* An earlier dump's log must not speak for this one (its success, or
   * its errors) when the runtime fails before CRIU writes. */
  if (unlink (self->checkpoint_log) < 0 && errno != ENOENT)
    log_warn ("container %s: %s: %s", self->id, self->checkpoint_log, strerror (errno));
  return work;
}

static char **
s_words (container_t *self, const char *image, const msgpack_object *cp, char **empty_ns)
{
  const char *words[28];
  size_t n = 0;
  words[n++] = "checkpoint";
  words[n++] = "--image-path";
  words[n++] = image ? image : "";
  cleanup_free char *work = s_work_dir (self);
  if (work)
    {
      words[n++] = "--work-path";
      words[n++] = work;
    }  if (!mp_get_bool (cp, "exit", false))
    words[n++] = "--leave-running";
  if (mp_get_bool (cp, "tcp", false))
    words[n++] = "--tcp-established";
  if (mp_get_bool (cp, "unix_sockets", false))
    words[n++] = "--ext-unix-sk";
  if (mp_get_bool (cp, "shell", false))
    words[n++] = "--shell-job";
  for (size_t i = 0; empty_ns && empty_ns[i] && n + 4 < sizeof words / sizeof words[0]; i++)
    {
      words[n++] = "--empty-ns";
      words[n++] = empty_ns[i];
    }
  words[n++] = self->id;
  words[n] = NULL;
  return container_strv_dup (words);
}

/* Namespace kinds, each at most once: what a runtime's --empty-ns can
 * name (runc takes "network"; crun 1.8 has no such option). */
static bool
s_empty_ns_ok (char **empty_ns, zcd_error_t **err)
{
  static const char *const kinds[] = { "pid", "network", "mount", "ipc",
                                       "uts", "user",    "cgroup", "time" };
  unsigned seen = 0;
  for (size_t i = 0; empty_ns && empty_ns[i]; i++)
    {
      size_t k = 0;
      while (k < 8 && strcmp (empty_ns[i], kinds[k]) != 0)
        k++;
      if (k == 8 || (seen & (1u << k)))
        {
          zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                    "key `checkpoint.empty_ns`: `%s` is not a namespace kind (pid, network, "
                    "mount, ipc, uts, user, cgroup, time), or is named twice",
                    empty_ns[i]);
          return false;
        }
      seen |= 1u << k;
    }
  return true;
}

void
container_plan_checkpoint (container_t *self, const msgpack_object *body, container_plan_t *plan)
{
  const msgpack_object *cp = mp_map_get (body, "checkpoint");
  cleanup_free char *name = mp_get_strdup (cp, "name");
  cleanup_free char *dir = mp_get_strdup (body, "checkpoint_dir");
  if (dir == NULL && asprintf (&dir, "%s/checkpoints", self->bundle) < 0)
    dir = NULL;
  if (name == NULL || dir == NULL || !zcd_valid_id (name, strlen (name)))
    {
      zcd_fail (&plan->err, ZCD_E_INVALID_ARGUMENT, "key `checkpoint.name`: required, an id");
      return;
    }
  /* With a trailing slash the kernel would follow a symlinked last
   * component despite O_NOFOLLOW. */
  for (size_t len = strlen (dir); len > 1 && dir[len - 1] == '/'; len--)
    dir[len - 1] = '\0';
  char **empty_ns = mp_get_strv (cp, "empty_ns");
  if (!s_empty_ns_ok (empty_ns, &plan->err))
    {
      mp_strv_free (empty_ns);
      return;
    }
  cleanup_error zcd_error_t *err = NULL;
  if (s_make_image_dir (dir, name, &err) < 0)
    {
      mp_strv_free (empty_ns);
      zcd_fail (&plan->err, err->code, "%s", err->msg);
      return;
    }
  cleanup_free char *image = NULL;
  if (asprintf (&image, "%s%s%s", dir, strcmp (dir, "/") == 0 ? "" : "/", name) < 0)
    image = NULL;
  s_keep_metadata (self, name, image, cp, empty_ns);
  plan->step = STEP_CHECKPOINT;
  plan->words = s_words (self, image, cp, empty_ns);
  mp_strv_free (empty_ns);
}

void
container_restore_leftovers (container_t *self, pid_t init)
{
  if (self->restoring_from == NULL)
    return;
  cleanup_free char *dir = strdup (self->restoring_from);
  char *slash = dir ? strrchr (dir, '/') : NULL;
  if (slash == NULL || slash == dir)
    return;
  *slash = '\0';
  checkpoint_source_t src = { 0 };
  cleanup_error zcd_error_t *err = NULL;
  if (checkpoint_find (dir, slash + 1, &src, &err) == 0 && src.dumped_id
      && strcmp (src.dumped_id, self->id) != 0)
    checkpoint_remove_cgroups (self->daemon, src.dumped_cgroups, init);
  checkpoint_source_clear (&src);
}

bool
container_checkpoint_dumped (container_t *self)
{
  char tail[256];
  if (self->checkpoint_log == NULL || self->checkpoint_meta_path == NULL
      || zcd_log_tail (self->checkpoint_log, 1, tail, sizeof tail) == 0
      || strstr (tail, "Dumping finished successfully") == NULL)
    return false;
  /* And the image is there: CRIU writes its inventory last. */
  cleanup_free char *inventory = strdup (self->checkpoint_meta_path);
  char *slash = inventory ? strrchr (inventory, '/') : NULL;
  if (slash == NULL)
    return false;
  strcpy (slash + 1, "inventory.img");
  struct stat st;
  return lstat (inventory, &st) == 0 && S_ISREG (st.st_mode) && st.st_size > 0;
}

char *
container_checkpoint_failure_text (container_t *self, const char *runtime_text)
{
  char tail[1536];
  char *text = NULL;
  if (self->checkpoint_log && zcd_log_tail (self->checkpoint_log, 8, tail, sizeof tail) > 0)
    {
      if (asprintf (&text, "%s; CRIU log %s ends:\n%s", runtime_text, self->checkpoint_log, tail)
          < 0)
        text = NULL;
    }
  return text ? text : strdup (runtime_text);
}

void
container_checkpoint_done (container_t *self)
{
  if (self->checkpoint_meta && self->checkpoint_meta_path)
    checkpoint_write_marker (self->daemon, self->checkpoint_meta_path, self->checkpoint_meta);
  free (self->checkpoint_meta);
  free (self->checkpoint_meta_path);
  self->checkpoint_meta = self->checkpoint_meta_path = NULL;
}

/* Remove the image directory `name` of dir that this request made: only if
 * it is still a directory of zcd's uid without a marker (a finished
 * checkpoint is never removed here), through file descriptors, in a forked
 * child: an image's tree can be large.  Not checkpoint_remove_tree: the
 * operation's answer waits for the removal (the name is free again when
 * the client hears of the failure), so it needs the child's end. */
static child_t *
s_remove_image (container_t *self, const char *dir, const char *name, child_done_fn done)
{
  cleanup_close int dfd = zcd_open_client_dir (AT_FDCWD, dir, "checkpoint_dir", NULL);
  cleanup_close int fd = dfd < 0 ? -1 : zcd_open_client_dir (dfd, name, "image", NULL);
  struct stat st;
  if (fd < 0 || fstat (fd, &st) < 0 || st.st_uid != geteuid ()
      || faccessat (fd, CHECKPOINT_MARKER, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
    {
      log_warn ("failed checkpoint `%s` in %s: its image directory is gone or changed, not removed",
                name, dir);
      return NULL;
    }
  cleanup_error zcd_error_t *err = NULL;
  /* The operation's answer waits for it: a removal stuck on a dead disk
   * must not hold the container's operations for ever. */
  child_t *child = checkpoint_fork_removal (self->daemon, dfd, name, fd, 60000, done, self, &err);
  if (child == NULL)
    log_warn ("failed checkpoint `%s` in %s: not removed: %s", name, dir, err->msg);
  return child;
}

/* The runtime's dump failed: what it left in the image directory is no
 * checkpoint, and the name is free again once the removal ended. */
child_t *
container_checkpoint_failed (container_t *self, child_done_fn done)
{
  cleanup_free char *path = steal_pointer (&self->checkpoint_meta_path);
  free (steal_pointer (&self->checkpoint_meta));
  char *image_end = path ? strrchr (path, '/') : NULL; /* "/zcd-checkpoint.json" */
  if (image_end == NULL)
    return NULL;
  *image_end = '\0';
  char *slash = strrchr (path, '/');
  if (slash == NULL)
    return NULL;
  *slash = '\0';
  return s_remove_image (self, slash == path ? "/" : path, slash + 1, done);
}

void
container_checkpoint_cleaned (container_t *self, const child_result_t *res)
{
  if (res->exit_code != 0)
    log_warn ("container %s: a failed checkpoint's image directory: %s", self->id,
              res->timed_out ? "its removal did not end in time"
              : res->err_len ? res->err
                             : "its removal was killed");
}
