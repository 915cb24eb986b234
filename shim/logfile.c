/* The bounded output file of the `log` key (PROTOCOL.md `create`): the
 * process's output appended to `path`, rotated once it would pass
 * max_bytes into path.1 ... path.<max_files-1> (newest in `path`).
 *
 * Everything goes through a descriptor of the file's directory: the names
 * are only ever last components in it, so a symlink there is never
 * followed (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW; renameat moves a name, never
 * what it points to), and a rename is the only way an old file goes.  A
 * name in the way that is not a regular file (a symlink to a file outside,
 * a FIFO, a directory) stops the rotation instead of being replaced: the
 * file stays at its bound and the output is dropped until the name is
 * cleared (the caller counts it, outlog.c).  The shim runs as a rootless
 * caller, so all of this needs no more than write access to the directory.
 *
 * Lines are kept whole where they can be: a file ends at the last newline
 * that fits, unless the line is longer than a whole file.  Used by one
 * thread at a time (outlog.c's writer, or the main thread before it runs). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim/shim.h"

static void
s_blocked (shim_logfile_t *self, int error, const char *name)
{
  self->error = error;
  self->error_rotating = true;
  snprintf (self->error_name, sizeof self->error_name, "%s", name);
}

/* name.<i> into out; false if it does not fit a name (checked at open). */
static bool
s_slot_name (const shim_logfile_t *self, unsigned i, char *out, size_t cap)
{
  int n = snprintf (out, cap, "%s.%u", self->name, i);
  return n > 0 && (size_t)n < cap;
}

/* Whether `name` may be moved or replaced: absent, or a regular file.
 * Anything else blocks the rotation (EEXIST for "something is there"). */
static bool
s_slot_usable (shim_logfile_t *self, const char *name, bool *exists)
{
  struct stat st;
  *exists = false;
  if (fstatat (self->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    {
      if (errno == ENOENT)
        return true;
      s_blocked (self, errno, name);
      return false;
    }
  if (!S_ISREG (st.st_mode))
    {
      s_blocked (self, EEXIST, name);
      return false;
    }
  *exists = true;
  return true;
}

/* A fresh `name` after the renames.  One that appeared meanwhile is taken
 * as it is when it is a regular file (appended to), never replaced; after
 * a rotation only when it is ours and has no other name: in a shared
 * directory (/tmp) another user may put a file of theirs, or a hard link
 * to someone else's, in the gap between the rename and the create, and the
 * container's output must not go there.  At the start, the file the client
 * named is appended to whoever made it, as a stdout path is. */
static int
s_open_fresh (shim_logfile_t *self, bool after_rotation)
{
  int flags = O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC;
  int fd = openat (self->dirfd, self->name, flags | O_EXCL, 0640);
  bool appeared = false;
  if (fd < 0 && errno == EEXIST)
    {
      appeared = true;
      fd = openat (self->dirfd, self->name, flags & ~O_CREAT);
    }
  if (fd < 0)
    {
      s_blocked (self, errno == ELOOP ? EEXIST : errno, self->name);
      return -1;
    }
  struct stat st;
  if (fstat (fd, &st) < 0 || !S_ISREG (st.st_mode)
      || (appeared && after_rotation && (st.st_uid != self->uid || st.st_nlink != 1)))
    {
      close (fd);
      s_blocked (self, EEXIST, self->name);
      return -1;
    }
  self->size = (uint64_t)st.st_size;
  self->mid_line = false;
  return fd;
}

/* One file in all: the file itself starts over (our own descriptor, so no
 * name can be swapped under it). */
static int
s_rotate_single (shim_logfile_t *self)
{
  if (ftruncate (self->fd, 0) < 0)
    {
      s_blocked (self, errno, self->name);
      return -1;
    }
  self->size = 0;
  self->mid_line = false;
  return 0;
}

/* name.<n-1> (the oldest) goes, name.<n-2> -> name.<n-1>, ..., name ->
 * name.1, then a new name.  Only the run of names that exist from name on
 * moves (a missing name.<k> ends it: name.<k-1> moves there, and what lies
 * beyond is left alone); each of them is checked before anything moves,
 * so a blocked rotation changes nothing. */
int
shim_logfile_rotate (shim_logfile_t *self)
{
  if (self->max_files <= 1)
    return s_rotate_single (self);
  char from[NAME_MAX + 16], to[NAME_MAX + 16];
  bool exists = false;
  if (!s_slot_usable (self, self->name, &exists))
    return -1;
  /* top: the slot the run moves into (free, or the oldest, which goes). */
  unsigned top = 0, last = self->max_files - 1;
  while (exists && top < last)
    {
      top++;
      if (!s_slot_name (self, top, to, sizeof to) || !s_slot_usable (self, to, &exists))
        return -1;
    }
  /* The oldest goes by unlink first: renamed over, it would have ext4
   * (auto_da_alloc) start the writeback of the renamed file in that very
   * call, milliseconds (measured: 2.5 ms on average, up to 8) while the
   * ring fills; unlink and a rename to a free name take well under one. */
  if (exists && unlinkat (self->dirfd, to, 0) < 0 && errno != ENOENT)
    {
      s_blocked (self, errno, to);
      return -1;
    }
  for (unsigned i = top; i >= 1; i--)
    {
      if (i == 1)
        snprintf (from, sizeof from, "%s", self->name);
      else
        s_slot_name (self, i - 1, from, sizeof from);
      s_slot_name (self, i, to, sizeof to);
      if (renameat (self->dirfd, from, self->dirfd, to) < 0 && errno != ENOENT)
        {
          s_blocked (self, errno, from);
          return -1;
        }
    }
  int fd = s_open_fresh (self, true);
  if (fd < 0)
    return -1;
  if (self->fd >= 0)
    close (self->fd);
  self->fd = fd;
  return 0;
}

int
shim_logfile_open (shim_logfile_t *self, const char *path, uint64_t max_bytes, unsigned max_files,
                   zcd_error_t **err)
{
  memset (self, 0, sizeof *self);
  self->dirfd = self->fd = -1;
  self->max_bytes = max_bytes;
  self->max_files = max_files;
  self->uid = geteuid (); /* now: the sandbox refuses it later */
  const char *slash = strrchr (path, '/');
  const char *base = slash ? slash + 1 : path;
  char suffix[16];
  int suffix_len = snprintf (suffix, sizeof suffix, ".%u", max_files);
  if (path[0] != '/' || base[0] == '\0' || strcmp (base, ".") == 0 || strcmp (base, "..") == 0
      || strlen (base) + (size_t)suffix_len > NAME_MAX)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "log: `%s` does not name a file", path);
  snprintf (self->name, sizeof self->name, "%s", base);
  char dir[PATH_MAX];
  snprintf (dir, sizeof dir, "%.*s", base - path > 1 ? (int)(base - path - 1) : 1, path);
  /* O_PATH: only a handle for the *at calls, which need no read access. */
  self->dirfd = open (dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (self->dirfd < 0)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "log: `%s`: %s", dir, strerror (errno));
  bool exists = false;
  if (!s_slot_usable (self, self->name, &exists) || (self->fd = s_open_fresh (self, false)) < 0)
    {
      int e = self->error;
      shim_logfile_close (self);
      return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "log: `%s`: %s", path,
                       e == EEXIST ? "not a regular file" : strerror (e));
    }
  self->error = 0;
  self->error_rotating = false;
  return 0;
}

void
shim_logfile_close (shim_logfile_t *self)
{
  if (self->fd >= 0)
    close (self->fd);
  if (self->dirfd >= 0)
    close (self->dirfd);
  self->fd = self->dirfd = -1;
}

/* How much of data goes into the current file before a rotation: all of
 * it if it fits; else up to the last newline that fits; else nothing (0:
 * rotate first) when the line would fit a fresh file; else what fits.
 *
 * Near the end of the file (less than a slack left after it), data that
 * fits but ends in the middle of a line goes only up to its last newline,
 * and a line that starts there starts the next file instead: the rest of
 * it comes with the next data (a read ends anywhere), and would not fit. */
static size_t
s_fitting (const shim_logfile_t *self, const char *data, size_t len)
{
  uint64_t room = self->size < self->max_bytes ? self->max_bytes - self->size : 0;
  uint64_t slack = self->max_bytes / 4 < 4096 ? self->max_bytes / 4 : 4096;
  if (len <= room && (data[len - 1] == '\n' || room - len >= slack))
    return len;
  if (len <= room)
    {
      const char *last = memrchr (data, '\n', len);
      if (last)
        return (size_t)(last - data) + 1;
      return self->size > 0 && !self->mid_line ? 0 : len;
    }
  const char *nl = room ? memrchr (data, '\n', (size_t)room) : NULL;
  if (nl)
    return (size_t)(nl - data) + 1;
  if (self->size == 0)
    return (size_t)room;
  const char *end = memchr (data, '\n', len);
  size_t line = end ? (size_t)(end - data) + 1 : len;
  return line <= self->max_bytes && end ? 0 : (size_t)room;
}

/* The size of what was written may not be ours alone (truncated by hand,
 * a file shared by mistake): looked at again before rotating for it. */
static void
s_refresh_size (shim_logfile_t *self)
{
  struct stat st;
  if (fstat (self->fd, &st) == 0)
    self->size = (uint64_t)st.st_size;
}

size_t
shim_logfile_write (shim_logfile_t *self, const char *data, size_t len)
{
  size_t done = 0;
  self->error = 0;
  self->error_rotating = false;
  while (done < len)
    {
      if (self->fd < 0)
        {
          s_blocked (self, EBADF, self->name);
          break;
        }
      size_t chunk = s_fitting (self, data + done, len - done);
      if (chunk == 0)
        {
          s_refresh_size (self);
          if (s_fitting (self, data + done, len - done) == 0 && shim_logfile_rotate (self) < 0)
            break;
          continue;
        }
      ssize_t n = write (self->fd, data + done, chunk);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        {
          self->error = n < 0 ? errno : ENOSPC;
          break;
        }
      done += (size_t)n;
      self->size += (uint64_t)n;
      self->mid_line = data[done - 1] != '\n';
    }
  return done;
}

bool
shim_logfile_write_line (shim_logfile_t *self, const char *line, size_t len)
{
  if (self->mid_line && shim_logfile_write (self, "\n", 1) != 1)
    return false;
  /* A line that does not fit makes a rotation first (s_fitting): written
   * whole, or it failed. */
  return shim_logfile_write (self, line, len) == len;
}
