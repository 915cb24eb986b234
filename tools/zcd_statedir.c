/* The state directory's start-up checks; see tools/zcd_statedir.h.  Every
 * refusal is one line on stderr naming the path, what was found and what
 * is required, since it comes before logging is of any use to an operator
 * starting the daemon by hand. */
#include "tools/zcd_statedir.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"

static int __attribute__ ((format (printf, 1, 2)))
s_refuse (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  fputs ("zcd: ", stderr);
  vfprintf (stderr, fmt, ap);
  fputs ("; refusing to start\n", stderr);
  va_end (ap);
  return -1;
}

/* Missing parents are made 0755 (clients must reach the sockets through
 * them), the directory itself 0711: only zcd lists or writes it. */
static int
s_make_dir (const char *dir)
{
  cleanup_error zcd_error_t *err = NULL;
  cleanup_free char *parent = strdup (dir);
  char *slash = parent ? strrchr (parent, '/') : NULL;
  if (slash && slash != parent)
    {
      *slash = '\0';
      if (zcd_mkdir_p (parent, 0755, &err) < 0)
        return s_refuse ("state directory %s: %s", dir, err->msg);
    }
  if (mkdir (dir, 0711) < 0 && errno != EEXIST)
    return s_refuse ("state directory %s: mkdir: %s", dir, strerror (errno));
  return 0;
}

/* lstat, so a symlink named as the state dir is seen as one: its target
 * was never checked, and may be anyone's. */
static int
s_check_dir (const char *dir)
{
  struct stat st;
  if (lstat (dir, &st) < 0)
    return s_refuse ("state directory %s: %s", dir, strerror (errno));
  if (S_ISLNK (st.st_mode))
    return s_refuse ("state directory %s is a symbolic link; it must be a real directory "
                     "(give the link's target as --state-dir if that is the one meant)",
                     dir);
  if (!S_ISDIR (st.st_mode))
    return s_refuse ("state directory %s exists and is not a directory", dir);
  if (st.st_uid != geteuid ())
    return s_refuse ("state directory %s is owned by uid %u (mode %04o); it must be owned by "
                     "uid %u, the user zcd runs as, and not be writable by group or others",
                     dir, (unsigned) st.st_uid, (unsigned) (st.st_mode & 07777),
                     (unsigned) geteuid ());
  if (st.st_mode & 022)
    return s_refuse ("state directory %s has mode %04o, which lets %s write to it; it must be "
                     "writable by its owner only (e.g. chmod 0711 %s)",
                     dir, (unsigned) (st.st_mode & 07777),
                     (st.st_mode & 022) == 022 ? "group and others"
                     : (st.st_mode & 002)      ? "others"
                                               : "its group",
                     dir);
  return 0;
}

/* The pid of the daemon holding the lock, for the message. */
static void
s_read_holder (int fd, char *out, size_t size)
{
  ssize_t n = pread (fd, out, size - 1, 0);
  out[n > 0 ? n : 0] = '\0';
  out[strcspn (out, "\n")] = '\0';
}

/* One daemon per state directory: a second one would fight over the
 * sockets, the log and the containers.  The lock file is written (our pid),
 * so it must be ours: never followed through a symlink, and a regular file
 * with no other name (a hard link planted while the directory was open to
 * others would make the pid overwrite its other name). */
static int
s_lock (const char *dir)
{
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/zcd.lock", dir);
  cleanup_close int fd = open (path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
  if (fd < 0 && errno == ELOOP)
    return s_refuse ("%s is a symbolic link; the lock file must be zcd's own regular file "
                     "(remove the link)",
                     path);
  if (fd < 0)
    return s_refuse ("cannot open %s: %s", path, strerror (errno));
  struct stat st;
  if (fstat (fd, &st) < 0)
    return s_refuse ("cannot stat %s: %s", path, strerror (errno));
  if (!S_ISREG (st.st_mode) || st.st_uid != geteuid () || st.st_nlink != 1)
    return s_refuse ("%s is not zcd's own lock file (found: %s owned by uid %u with %u "
                     "links; required: a regular file owned by uid %u with one link)",
                     path, S_ISREG (st.st_mode) ? "a regular file" : "not a regular file",
                     (unsigned) st.st_uid, (unsigned) st.st_nlink, (unsigned) geteuid ());
  if (flock (fd, LOCK_EX | LOCK_NB) < 0)
    {
      char other[32];
      s_read_holder (fd, other, sizeof other);
      fprintf (stderr,
               "zcd: another zcd (pid %s) is already running on state directory %s; "
               "refusing to start\n",
               other[0] ? other : "?", dir);
      return -1;
    }
  char pid[32];
  int len = snprintf (pid, sizeof pid, "%d\n", (int) getpid ());
  if (ftruncate (fd, 0) < 0 || pwrite (fd, pid, (size_t) len, 0) < 0)
    log_warn ("cannot record the pid in %s", path);
  return steal_fd (&fd);
}

/* libzmq unlinks whatever is at an ipc path before it binds, and zcd then
 * chmods and chowns that path: a symlink there would hand both to its
 * target, and any other file would be deleted.  A stale socket (a daemon
 * that was killed) is the only thing that may be replaced. */
static int
s_check_ipc_paths (char *const *endpoints)
{
  for (; endpoints && *endpoints; endpoints++)
    {
      const char *ep = *endpoints;
      if (strncmp (ep, "ipc://", 6) != 0)
        continue;
      const char *path = ep + 6;
      struct stat st;
      /* "@name" is Linux's abstract namespace and "*" a fresh temp name:
       * neither is a file.  Paths that cannot be looked up are for bind to
       * report. */
      if (path[0] == '@' || strcmp (path, "*") == 0 || lstat (path, &st) < 0)
        continue;
      if (S_ISLNK (st.st_mode))
        return s_refuse ("ipc endpoint %s is a symbolic link; an ipc endpoint must be zcd's own "
                         "socket file (remove the link)",
                         path);
      if (!S_ISSOCK (st.st_mode))
        return s_refuse ("ipc endpoint %s exists and is not a socket; zcd replaces only a "
                         "stale socket there (move the file away)",
                         path);
    }
  return 0;
}

/* The event log refuses these itself (core/eventlog.c); checked here too so
 * the operator gets the reason before anything else starts. */
static int
s_check_event_log (const char *dir)
{
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/events.log", dir);
  struct stat st;
  if (lstat (path, &st) < 0)
    return 0;
  if (S_ISLNK (st.st_mode))
    return s_refuse ("%s is a symbolic link; the event log must be zcd's own regular file "
                     "(remove the link)",
                     path);
  if (!S_ISREG (st.st_mode))
    return s_refuse ("%s exists and is not a regular file; the event log must be one", path);
  return 0;
}

int
zcd_statedir_take (const char *dir, char *const *listen, char *const *publish)
{
  /* "/run/zcd/" would make lstat follow a symlink named /run/zcd. */
  cleanup_free char *clean = strdup (dir);
  if (clean == NULL)
    return s_refuse ("out of memory");
  for (size_t n = strlen (clean); n > 1 && clean[n - 1] == '/'; n--)
    clean[n - 1] = '\0';
  if (clean[0] == '\0')
    return s_refuse ("the state directory must not be empty");
  if (s_make_dir (clean) < 0 || s_check_dir (clean) < 0)
    return -1;
  cleanup_close int lock_fd = s_lock (clean);
  if (lock_fd < 0 || s_check_ipc_paths (listen) < 0 || s_check_ipc_paths (publish) < 0
      || s_check_event_log (clean) < 0)
    return -1;
  return steal_fd (&lock_fd);
}

int
zcd_statedir_use_criu (const char *dir, const char *criu)
{
  struct stat st;
  if (criu[0] != '/')
    return s_refuse ("--criu `%s`: an absolute path is needed", criu);
  if (stat (criu, &st) < 0)
    return s_refuse ("--criu `%s`: %s", criu, strerror (errno));
  if (!S_ISREG (st.st_mode) || access (criu, X_OK) < 0)
    return s_refuse ("--criu `%s`: not an executable file", criu);
  char bin[PATH_MAX], link_path[PATH_MAX + 8], tmp[PATH_MAX + 24];
  snprintf (bin, sizeof bin, "%s/bin", dir);
  snprintf (link_path, sizeof link_path, "%s/criu", bin);
  snprintf (tmp, sizeof tmp, "%s/.criu.%d", bin, (int) getpid ());
  /* bin is zcd's own: a symlink or a file in its place is refused, not
   * followed or replaced. */
  if (mkdir (bin, 0755) < 0 && errno != EEXIST)
    return s_refuse ("%s: %s", bin, strerror (errno));
  if (lstat (bin, &st) < 0 || !S_ISDIR (st.st_mode) || st.st_uid != geteuid ())
    return s_refuse ("%s is not zcd's own directory (remove it)", bin);
  unlink (tmp);
  if (symlink (criu, tmp) < 0 || rename (tmp, link_path) < 0)
    {
      int saved = errno;
      unlink (tmp);
      return s_refuse ("%s: %s", link_path, strerror (saved));
    }
  const char *path = getenv ("PATH");
  cleanup_free char *new_path = NULL;
  if (asprintf (&new_path, "%s:%s", bin, path && *path ? path : "/usr/sbin:/usr/bin:/sbin:/bin")
      < 0)
    return s_refuse ("out of memory");
  setenv ("PATH", new_path, 1);
  return 0;
}
