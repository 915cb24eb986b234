/* Upgrade of a state directory written by an earlier zcd, which kept each
 * container at <state-dir>/<id>/ and its processes at <state-dir>/<id>/<pid>/.
 * Client-chosen names now live only under containers/ and procs/ (issue 8):
 * a daemon upgraded while containers run must still find them.
 *
 * Every step is a rename, so a crash in the middle leaves each directory in
 * one place or the other, and the next start finishes the job.  A running
 * shim keeps its working directory across the rename (same inode), and its
 * identity check reads that directory's new path from /proc. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "actors/actors.h"
#include "actors/supervisor.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"

static bool
s_is_dir_at (int dirfd, const char *name)
{
  struct stat st;
  return fstatat (dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR (st.st_mode);
}

/* containers/<id>/<pid>/ -> containers/<id>/procs/<pid>/ */
static void
s_move_processes (int container_fd, const char *id)
{
  if (mkdirat (container_fd, ZCD_PROCS_DIR, 0700) < 0 && errno != EEXIST)
    {
      log_error ("migrate %s: mkdir " ZCD_PROCS_DIR ": %s", id, strerror (errno));
      return;
    }
  cleanup_close int procs_fd
      = openat (container_fd, ZCD_PROCS_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int dup_fd = dup (container_fd);
  cleanup_dir DIR *d = dup_fd >= 0 ? fdopendir (dup_fd) : NULL;
  if (procs_fd < 0 || d == NULL)
    return;
  for (struct dirent *de; (de = readdir (d));)
    {
      if (strcmp (de->d_name, ZCD_PROCS_DIR) == 0 || !zcd_valid_id (de->d_name, strlen (de->d_name))
          || !s_is_dir_at (container_fd, de->d_name))
        continue;
      if (renameat (container_fd, de->d_name, procs_fd, de->d_name) < 0)
        log_error ("migrate %s/%s: %s", id, de->d_name, strerror (errno));
    }
}

void
supervisor_migrate_layout (const char *state_dir)
{
  cleanup_close int state_fd = open (state_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  cleanup_close int root_fd = state_fd < 0 ? -1
                                           : openat (state_fd, ZCD_CONTAINERS_DIR,
                                                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int dup_fd = state_fd >= 0 ? dup (state_fd) : -1;
  cleanup_dir DIR *d = dup_fd >= 0 ? fdopendir (dup_fd) : NULL;
  if (root_fd < 0 || d == NULL)
    return;
  size_t moved = 0;
  for (struct dirent *de; (de = readdir (d));)
    {
      const char *id = de->d_name;
      struct stat st;
      /* An old container directory: a valid id holding a state.json.  The
       * daemon's own entries (containers/, .trash, .broken) have none. */
      if (strcmp (id, ZCD_CONTAINERS_DIR) == 0 || !zcd_valid_id (id, strlen (id))
          || !s_is_dir_at (state_fd, id))
        continue;
      char state_json[300];
      snprintf (state_json, sizeof state_json, "%s/state.json", id);
      if (fstatat (state_fd, state_json, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG (st.st_mode))
        continue;
      if (renameat2 (state_fd, id, root_fd, id, RENAME_NOREPLACE) < 0)
        {
          log_error ("migrate %s: %s", id, strerror (errno));
          continue;
        }
      moved++;
    }
  /* Processes of containers moved now or by a start that crashed midway. */
  int dup_root = dup (root_fd);
  cleanup_dir DIR *containers = dup_root >= 0 ? fdopendir (dup_root) : NULL;
  for (struct dirent *de; containers && (de = readdir (containers));)
    {
      if (!zcd_valid_id (de->d_name, strlen (de->d_name)))
        continue;
      cleanup_close int fd
          = openat (root_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd >= 0)
        s_move_processes (fd, de->d_name);
    }
  if (moved)
    log_info ("moved %zu containers of an earlier zcd into %s/" ZCD_CONTAINERS_DIR "/", moved,
              state_dir);
}
