/* OOM notification of a cgroup (v1: an eventfd registered on
 * memory.oom_control; v2: inotify on memory.events) and the OOM verdict on
 * the init's exit; contracts in core/cgroup.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "core/cgroup.h"
#include "core/cgroup_int.h"
#include "core/cleanup.h"

/* ---- OOM -------------------------------------------------------------- */

static int
s_oom_watch_open_v1 (const char *memory, int *fd_out, zcd_error_t **err)
{
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/memory.oom_control", memory);
  cleanup_close int oom_control = open (path, O_RDONLY | O_CLOEXEC);
  if (oom_control < 0)
    return zcd_fail_errno (err, errno, "open `%s`", path);
  cleanup_close int efd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0)
    return zcd_fail_errno (err, errno, "eventfd");
  snprintf (path, sizeof path, "%s/cgroup.event_control", memory);
  /* A kernel control file: written in place, it cannot be renamed over. */
  cleanup_close int control = open (path, O_WRONLY | O_CLOEXEC);
  if (control < 0)
    return zcd_fail_errno (err, errno, "open `%s`", path);
  char line[32];
  int len = snprintf (line, sizeof line, "%d %d", efd, oom_control);
  if (write (control, line, (size_t)len) != len)
    return zcd_fail_errno (err, errno, "register OOM eventfd with `%s`", path);
  /* The kernel holds its own references now; oom_control can be closed. */
  *fd_out = steal_fd (&efd);
  return 0;
}

static int
s_read_oom_counts (const char *dir, uint64_t *oom, uint64_t *oom_kill)
{
  cleanup_free char *events = cgroup_read_text (dir, "memory.events");
  if (events == NULL)
    return -1;
  *oom = cgroup_keyed0 (events, "oom");
  *oom_kill = cgroup_keyed0 (events, "oom_kill");
  return 0;
}

static int
s_oom_watch_open_v2 (cgroup_paths_t *paths, int *fd_out, zcd_error_t **err)
{
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/memory.events", paths->unified);
  cleanup_close int fd = inotify_init1 (IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0)
    return zcd_fail_errno (err, errno, "inotify_init1");
  if (inotify_add_watch (fd, path, IN_MODIFY) < 0)
    return zcd_fail_errno (err, errno, "watch `%s`", path);
  /* The baseline is read after the watch exists, so no OOM falls between. */
  if (s_read_oom_counts (paths->unified, &paths->oom_seen, &paths->oom_kill_seen) < 0)
    return zcd_fail_errno (err, errno, "read `%s`", path);
  *fd_out = steal_fd (&fd);
  return 0;
}

int
cgroup_oom_watch_open (cgroup_paths_t *paths, int *fd_out, zcd_error_t **err)
{
  if (paths->version == CGROUP_V2)
    return s_oom_watch_open_v2 (paths, fd_out, err);
  const char *memory = cgroup_paths_dir (paths, "memory");
  if (memory == NULL)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "no memory cgroup to watch for OOM");
  return s_oom_watch_open_v1 (memory, fd_out, err);
}

static int
s_oom_watch_read_v1 (const cgroup_paths_t *paths, int fd, bool *oom_happened, zcd_error_t **err)
{
  uint64_t count = 0;
  if (read (fd, &count, sizeof count) < 0 && errno != EAGAIN && errno != EINTR)
    return zcd_fail_errno (err, errno, "read OOM eventfd");
  /* The kernel signals the eventfd once more when the cgroup is removed
   * (mem_cgroup_css_offline); runc checks for the same thing. */
  bool gone = !cgroup_exists_in (cgroup_paths_dir (paths, "memory"), "cgroup.event_control");
  *oom_happened = gone ? count > 1 : count > 0;
  return 0;
}

static int
s_oom_watch_read_v2 (cgroup_paths_t *paths, int fd, bool *oom_happened, zcd_error_t **err)
{
  char buf[4096] __attribute__ ((aligned (__alignof__(struct inotify_event))));
  for (;;)
    {
      ssize_t n = read (fd, buf, sizeof buf);
      if (n > 0)
        continue;
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno != EAGAIN)
        return zcd_fail_errno (err, errno, "read OOM inotify fd");
      break;
    }
  uint64_t oom, oom_kill;
  *oom_happened = false;
  if (s_read_oom_counts (paths->unified, &oom, &oom_kill) < 0)
    return 0;
  *oom_happened = oom > paths->oom_seen || oom_kill > paths->oom_kill_seen;
  paths->oom_seen = oom;
  paths->oom_kill_seen = oom_kill;
  return 0;
}

int
cgroup_oom_watch_read (cgroup_paths_t *paths, int fd, bool *oom_happened, zcd_error_t **err)
{
  if (paths->version == CGROUP_V2)
    return s_oom_watch_read_v2 (paths, fd, oom_happened, err);
  return s_oom_watch_read_v1 (paths, fd, oom_happened, err);
}

bool
cgroup_oom_killed (const cgroup_paths_t *paths)
{
  if (paths->version == CGROUP_V2)
    return cgroup_read_keyed (paths->unified, "memory.events", "oom_kill") > 0;
  cleanup_free char *control
      = cgroup_read_text (cgroup_paths_dir (paths, "memory"), "memory.oom_control");
  uint64_t kills;
  if (cgroup_keyed (control, "oom_kill", &kills))
    return kills > 0;
  return cgroup_keyed0 (control, "under_oom") > 0;
}

bool
cgroup_oom_kills (const cgroup_paths_t *paths, uint64_t *kills)
{
  bool v2 = paths->version == CGROUP_V2;
  const char *dir = v2 ? paths->unified : cgroup_paths_dir (paths, "memory");
  cleanup_free char *text = cgroup_read_text (dir, v2 ? "memory.events" : "memory.oom_control");
  return cgroup_keyed (text, "oom_kill", kills);
}
