/* Small helpers the daemon's actors share (actors/actors.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "actors/actors.h"
#include "actors/process.h"
#include "core/amsg_gen.h"
#include "core/cleanup.h"
#include "core/mp.h"

/* Client-chosen names live only in these namespaces (DESIGN.md, "State on
 * disk"): no container id can name one of the daemon's own files, and no
 * process id one of its container's (issue 8). */
char *
zcd_containers_root (const zcd_config_t *cfg)
{
  char *path = NULL;
  if (asprintf (&path, "%s/" ZCD_CONTAINERS_DIR, cfg->state_dir) < 0)
    return NULL;
  return path;
}

char *
zcd_container_dir (const zcd_config_t *cfg, const char *id)
{
  char *path = NULL;
  if (asprintf (&path, "%s/" ZCD_CONTAINERS_DIR "/%s", cfg->state_dir, id) < 0)
    return NULL;
  return path;
}

char *
zcd_process_dir (const zcd_config_t *cfg, const char *id, const char *pid_name)
{
  char *path = NULL;
  if (asprintf (&path, "%s/" ZCD_CONTAINERS_DIR "/%s/" ZCD_PROCS_DIR "/%s", cfg->state_dir, id,
                pid_name)
      < 0)
    return NULL;
  return path;
}

char **
zcd_runtime_argv (const char *runtime, char *const *runtime_args, const char *const *words)
{
  size_t n = 1 + mp_strv_len (runtime_args);
  for (const char *const *w = words; w && *w; w++)
    n++;
  char **argv = calloc (n + 1, sizeof *argv);
  size_t i = 0;
  argv[i++] = strdup (runtime);
  for (char *const *a = runtime_args; a && *a; a++)
    argv[i++] = strdup (*a);
  for (const char *const *w = words; w && *w; w++)
    argv[i++] = strdup (*w);
  argv[i] = NULL;
  return argv;
}

static void
s_append_line (char **acc, const char *text, size_t len)
{
  while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' ' || text[len - 1] == '\r'))
    len--;
  while (len > 0 && (*text == ' ' || *text == '\n'))
    text++, len--;
  if (len == 0)
    return;
  size_t old = *acc ? strlen (*acc) : 0;
  char *grown = realloc (*acc, old + len + 3);
  if (grown == NULL)
    return;
  if (old)
    memcpy (grown + old, "; ", 2), old += 2;
  memcpy (grown + old, text, len);
  grown[old + len] = '\0';
  *acc = grown;
}

/* runc and crun write JSON log lines ({"level":"error","msg":...}) when
 * given --log-format json, plain text otherwise: keep what a person needs,
 * the error messages, in order. */
static void
s_collect (char **acc, const char *text)
{
  if (text == NULL)
    return;
  const char *line = text;
  while (*line)
    {
      const char *end = strchr (line, '\n');
      size_t len = end ? (size_t) (end - line) : strlen (line);
      json_error_t jerr;
      json_t *j = len > 0 && line[0] == '{' ? json_loadb (line, len, 0, &jerr) : NULL;
      if (j)
        {
          const char *level = json_string_value (json_object_get (j, "level"));
          const char *msg = json_string_value (json_object_get (j, "msg"));
          if (msg && (level == NULL || strcmp (level, "error") == 0 || strcmp (level, "fatal") == 0))
            s_append_line (acc, msg, strlen (msg));
          json_decref (j);
        }
      else
        s_append_line (acc, line, len);
      if (end == NULL)
        break;
      line = end + 1;
    }
}

char *
zcd_runtime_error_text (const char *out, const char *err)
{
  char *acc = NULL;
  s_collect (&acc, err);
  if (acc == NULL)
    s_collect (&acc, out);
  return acc ? acc : strdup ("the runtime failed without a message");
}

bool
zcd_cgroup_dir_is_root (const char *dir)
{
  /* A process that already exited (a zombie, or a recycled pid's new
   * owner) reads as the hierarchy's root: that is the host, never a
   * container.  v1 roots are <root>/<controller>, v2 <root> or
   * <root>/unified. */
  if (dir == NULL)
    return true;
  size_t len = strlen (dir);
  while (len > 1 && dir[len - 1] == '/')
    len--;
  const char *root = "/sys/fs/cgroup";
  size_t rlen = strlen (root);
  if (len < rlen || strncmp (dir, root, rlen) != 0)
    return false;
  if (len == rlen)
    return true;
  const char *rest = dir + rlen + 1;
  size_t rest_len = len - rlen - 1;
  return memchr (rest, '/', rest_len) == NULL;
}

/* Host pids listed in an open cgroup.procs file, as a msgpack array;
 * `state` does this for every container, so it is preads of a file just
 * opened in a kept directory: no path walk, no stdio (an empty array for
 * fd -1).  The file must be a fresh open: a v1 cgroup.procs read again
 * through the same fd within about a second lists the pids of the first
 * read. */
void
zcd_pack_cgroup_pids_fd (msgpack_packer *pk, int fd)
{
  enum { MAX_PIDS = 4096 };
  uint32_t pids[MAX_PIDS];
  size_t n = 0;
  char buf[16384];
  size_t carry = 0;
  off_t offset = 0;
  for (; fd >= 0;)
    {
      ssize_t got = pread (fd, buf + carry, sizeof buf - carry - 1, offset);
      if (got <= 0)
        break;
      offset += got;
      size_t len = carry + (size_t) got;
      size_t start = 0;
      for (size_t i = 0; i < len; i++)
        if (buf[i] == '\n')
          {
            if (i > start && n < MAX_PIDS)
              pids[n++] = (uint32_t) strtoul (buf + start, NULL, 10);
            start = i + 1;
          }
      carry = len - start;
      memmove (buf, buf + start, carry);
    }
  msgpack_pack_array (pk, n);
  for (size_t i = 0; i < n; i++)
    msgpack_pack_uint32 (pk, pids[i]);
}

void
zcd_pack_cgroup_pids (msgpack_packer *pk, const char *cgroup_procs)
{
  int fd = cgroup_procs ? open (cgroup_procs, O_RDONLY | O_CLOEXEC) : -1;
  zcd_pack_cgroup_pids_fd (pk, fd);
  if (fd >= 0)
    close (fd);
}

void
zcd_send_reply_error (actor_system_t *actors, const char *from, uint64_t token, zcd_code_t code,
                      const char *message, bool after_events)
{
  amsg_reply_t m = {
    .token = token,
    .has_code = true,
    .code = code,
    .message = message ? message : "",
    .after_events = after_events,
  };
  amsg_reply_send (actors, from, SUPERVISOR_NAME, &m, NULL);
}

void
zcd_send_reply_ok (actor_system_t *actors, const char *from, uint64_t token,
                   const msgpack_sbuffer *result, bool after_events)
{
  amsg_reply_t m = { .token = token, .ok = true, .after_events = after_events };
  if (result)
    m.result = amsg_bin_of (result);
  amsg_reply_send (actors, from, SUPERVISOR_NAME, &m, NULL);
}

void
zcd_container_actor_name (const char *id, char *out, size_t size)
{
  static uint64_t serial;
  snprintf (out, size, CONTAINER_ACTOR_PREFIX "%s#%llu", id, (unsigned long long) ++serial);
}

void
zcd_state_dir_error (zcd_error_t **err)
{
  if (err == NULL || *err == NULL)
    return;
  int e = (*err)->sys_errno;
  if (e == ENOSPC || e == EDQUOT)
    {
      char *msg = NULL;
      if (asprintf (&msg, "no space left on the state dir (%s)", (*err)->msg) >= 0)
        {
          free ((*err)->msg);
          (*err)->msg = msg;
        }
      (*err)->code = ZCD_E_UNAVAILABLE;
    }
}

bool
zcd_under_state_dir (const zcd_config_t *cfg, const char *dir)
{
  char real_dir[PATH_MAX], real_state[PATH_MAX];
  if (realpath (dir, real_dir) == NULL || realpath (cfg->state_dir, real_state) == NULL)
    return false;
  size_t n = strlen (real_state);
  return strncmp (real_dir, real_state, n) == 0 && (real_dir[n] == '\0' || real_dir[n] == '/');
}

/* One stdio path (PROTOCOL.md `create`: an existing file or FIFO, or a new
 * regular file to create).  Only lstat: nothing is opened here, the shim
 * opens it in its own process (O_NOFOLLOW), where a slow path blocks no
 * one.  A symlink is refused, as is anything inside the state dir: a
 * container's output must never land in the daemon's own files. */
static int
s_check_stdio_path (const zcd_config_t *cfg, const char *key, const char *path, bool must_exist,
                    zcd_error_t **err)
{
  struct stat st;
  bool exists = lstat (path, &st) == 0;
  if (exists && S_ISLNK (st.st_mode))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `%s`: `%s` is a symbolic link", key, path);
  if (exists && !S_ISREG (st.st_mode) && !S_ISFIFO (st.st_mode) && !S_ISCHR (st.st_mode))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `%s`: `%s` is %s", key, path,
                     S_ISDIR (st.st_mode)    ? "a directory"
                     : S_ISSOCK (st.st_mode) ? "a socket"
                     : S_ISBLK (st.st_mode)  ? "a block device"
                                             : "not a file or FIFO");
  if (!exists && (errno != ENOENT || must_exist))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `%s`: `%s`: %s", key, path,
                     strerror (errno));
  cleanup_free char *dir = strdup (path);
  char *slash = dir ? strrchr (dir, '/') : NULL;
  if (slash == NULL)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `%s`: `%s` is not absolute", key, path);
  if (slash == dir)
    slash[1] = '\0';
  else
    *slash = '\0';
  /* A new file: its directory must be there. */
  if (!exists && (stat (dir, &st) < 0 || !S_ISDIR (st.st_mode)))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `%s`: `%s`: no such directory", key, dir);
  if (S_ISCHR (st.st_mode) && exists)
    return 0; /* a terminal or /dev/null: nothing of ours */
  if (zcd_under_state_dir (cfg, dir))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "key `%s`: `%s` is inside zcd's state dir", key,
                     path);
  return 0;
}

int
zcd_check_stdio_paths (const zcd_config_t *cfg, const msgpack_object *body, zcd_error_t **err)
{
  const char *keys[] = { "stdin", "stdout", "stderr" };
  for (int i = 0; i < 3; i++)
    {
      cleanup_free char *path = mp_get_strdup (body, keys[i]);
      if (path && s_check_stdio_path (cfg, keys[i], path, i == 0, err) < 0)
        return -1;
    }
  return process_log_check (cfg, body, err);
}

char *
zcd_rootless_root (const zcd_config_t *cfg, uint32_t uid)
{
  char *path = NULL;
  if (asprintf (&path, "%s/" ZCD_ROOTLESS_DIR "/%" PRIu32, cfg->state_dir, uid) < 0)
    return NULL;
  return path;
}

int
zcd_prepare_rootless_root (const zcd_config_t *cfg, uint32_t uid, uint32_t gid, zcd_error_t **err)
{
  cleanup_free char *top = NULL;
  cleanup_free char *mine = zcd_rootless_root (cfg, uid);
  if (mine == NULL || asprintf (&top, "%s/" ZCD_ROOTLESS_DIR, cfg->state_dir) < 0)
    return zcd_fail_errno (err, ENOMEM, "rootless root");
  if (mkdir (top, 0711) < 0 && errno != EEXIST)
    return zcd_fail_errno (err, errno, "mkdir `%s`", top);
  if (mkdir (mine, 0700) == 0)
    {
      if (chown (mine, uid, gid) < 0)
        return zcd_fail_errno (err, errno, "chown `%s`", mine);
      return 0;
    }
  if (errno != EEXIST)
    return zcd_fail_errno (err, errno, "mkdir `%s`", mine);
  struct stat st;
  if (lstat (mine, &st) < 0)
    return zcd_fail_errno (err, errno, "stat `%s`", mine);
  if (!S_ISDIR (st.st_mode) || st.st_uid != uid)
    return zcd_fail (err, ZCD_E_INTERNAL, "`%s` is not a directory of uid %" PRIu32, mine, uid);
  return 0;
}

int
zcd_hand_process_dir (const char *dir, uint32_t uid, uint32_t gid, zcd_error_t **err)
{
  cleanup_free char *procs = strdup (dir);
  char *slash = procs ? strrchr (procs, '/') : NULL;
  if (slash == NULL)
    return zcd_fail_errno (err, ENOMEM, "%s", dir);
  *slash = '\0';
  cleanup_free char *container = strdup (procs);
  slash = container ? strrchr (container, '/') : NULL;
  if (slash == NULL)
    return zcd_fail_errno (err, ENOMEM, "%s", dir);
  *slash = '\0';
  const char *passable[] = { container, procs };
  for (int i = 0; i < 2; i++)
    if (chmod (passable[i], 0711) < 0)
      return zcd_fail_errno (err, errno, "chmod `%s`", passable[i]);
  /* The files first, the directory last: while it is still root's, the
   * owner cannot swap a name for a link to something else in between.
   * process.json: what the owner's runtime reads for an exec. */
  const char *mine[] = { "/exit", "/control", "/process.json", "" };
  for (int i = 0; i < 4; i++)
    {
      char path[PATH_MAX];
      snprintf (path, sizeof path, "%s%s", dir, mine[i]);
      if (lchown (path, uid, gid) < 0 && !(errno == ENOENT && i == 2))
        return zcd_fail_errno (err, errno, "chown `%s`", path);
    }
  return 0;
}
