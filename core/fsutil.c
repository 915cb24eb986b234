#include "core/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cleanup.h"

static int
s_write_all (int fd, const void *data, size_t len)
{
  const char *p = data;
  while (len > 0)
    {
      ssize_t n = write (fd, p, len);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      p += n;
      len -= (size_t) n;
    }
  return 0;
}

void
zcd_random_hex (char *out, size_t n_chars)
{
  static const char hex[] = "0123456789abcdef";
  unsigned char bytes[32];
  size_t need = (n_chars + 1) / 2;
  if (need > sizeof bytes)
    need = sizeof bytes;
  /* The shim's seccomp filter may refuse getrandom: fall back to what only
   * this process at this instant would pick, which still never collides. */
  if (getrandom (bytes, need, GRND_NONBLOCK) != (ssize_t) need)
    {
      static uint64_t counter;
      uint64_t mix = zcd_mono_ns () ^ ((uint64_t) getpid () << 40) ^ (++counter * 0x9e3779b97f4a7c15ULL);
      for (size_t i = 0; i < need; i++, mix = mix * 6364136223846793005ULL + 1442695040888963407ULL)
        bytes[i] = (unsigned char) (mix >> 56);
    }
  for (size_t i = 0; i < n_chars && i / 2 < need; i++)
    out[i] = hex[(bytes[i / 2] >> ((i % 2) ? 0 : 4)) & 0xf];
  out[n_chars] = '\0';
}

/* The rename itself is only durable once the directory of `name` is. */
static void
s_fsync_parent (int dirfd, const char *name)
{
  const char *slash = strrchr (name, '/');
  if (slash == NULL)
    {
      if (dirfd == AT_FDCWD)
        zcd_fsync_dir (".");
      else
        fsync (dirfd);
      return;
    }
  char dir[4096];
  size_t dlen = (size_t) (slash - name);
  if (dlen == 0)
    dlen = 1;
  if (dlen >= sizeof dir)
    return;
  memcpy (dir, name, dlen);
  dir[dlen] = '\0';
  cleanup_close int dfd = openat (dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0)
    fsync (dfd);
}

/* Temp name, write, [fsync], rename, [fsync of the directory]. */
static int
s_write_and_rename (int dirfd, const char *name, const void *data, size_t len, mode_t mode,
                    bool durable, zcd_error_t **err)
{
  char tmp[4096];
  /* An unpredictable temp name, created exclusively: nobody can plant a
   * file or symlink under the name we are about to write (issue 8). */
  char suffix[17];
  zcd_random_hex (suffix, 16);
  int n = snprintf (tmp, sizeof tmp, "%s.tmp.%s", name, suffix);
  if (n < 0 || (size_t) n >= sizeof tmp)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "path too long: %s", name);
  cleanup_close int fd
      = openat (dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0)
    return zcd_fail_errno (err, errno, "open `%s`", tmp);
  if (s_write_all (fd, data, len) < 0 || (durable && fsync (fd) < 0))
    {
      int saved = errno;
      unlinkat (dirfd, tmp, 0);
      return zcd_fail_errno (err, saved, "write `%s`", tmp);
    }
  if (renameat (dirfd, tmp, dirfd, name) < 0)
    {
      int saved = errno;
      unlinkat (dirfd, tmp, 0);
      return zcd_fail_errno (err, saved, "rename `%s`", tmp);
    }
  if (durable)
    s_fsync_parent (dirfd, name);
  return 0;
}

int
zcd_write_fileat_atomic (int dirfd, const char *name, const void *data, size_t len, mode_t mode,
                         zcd_error_t **err)
{
  return s_write_and_rename (dirfd, name, data, len, mode, true, err);
}

int
zcd_write_file_atomic (const char *path, const void *data, size_t len, mode_t mode,
                       zcd_error_t **err)
{
  return zcd_write_fileat_atomic (AT_FDCWD, path, data, len, mode, err);
}

int
zcd_write_file_replace (const char *path, const void *data, size_t len, mode_t mode,
                        zcd_error_t **err)
{
  return s_write_and_rename (AT_FDCWD, path, data, len, mode, false, err);
}

int
zcd_write_file_replace_into (const char *made, const char *path, const void *data, size_t len,
                             zcd_error_t **err)
{
  cleanup_close int fd = open (made, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return zcd_fail_errno (err, errno, "open `%s`", made);
  struct stat st;
  if (fstat (fd, &st) < 0)
    return zcd_fail_errno (err, errno, "stat `%s`", made);
  /* Only what was made for this: an empty regular file. */
  if (!S_ISREG (st.st_mode) || st.st_size != 0)
    return zcd_fail (err, ZCD_E_INTERNAL, "`%s` is not an empty regular file", made);
  if (s_write_all (fd, data, len) < 0 || rename (made, path) < 0)
    {
      int saved = errno;
      unlink (made);
      return zcd_fail_errno (err, saved, "write `%s`", path);
    }
  return 0;
}

static int
s_read_fileat (int dirfd, const char *name, int flags, size_t max, char **out, size_t *len_out,
               zcd_error_t **err)
{
  /* O_NONBLOCK, and only a regular file is read: a FIFO or a device put
   * where a file was expected must not hang the reader (the daemon's loop). */
  cleanup_close int fd = openat (dirfd, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC | flags);
  if (fd < 0)
    return zcd_fail_errno (err, errno, "open `%s`", name);
  struct stat st;
  if (fstat (fd, &st) < 0)
    return zcd_fail_errno (err, errno, "stat `%s`", name);
  if (!S_ISREG (st.st_mode))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "`%s` is not a regular file", name);
  size_t cap = 4096, len = 0;
  cleanup_free char *buf = malloc (cap + 1);
  if (buf == NULL)
    return zcd_fail_errno (err, ENOMEM, "read `%s`", name);
  for (;;)
    {
      if (len == cap)
        {
          if (cap >= max + 1)
            return zcd_fail (err, ZCD_E_TOO_LARGE, "`%s` is larger than %zu bytes", name, max);
          cap *= 2;
          char *grown = realloc (buf, cap + 1);
          if (grown == NULL)
            return zcd_fail_errno (err, ENOMEM, "read `%s`", name);
          buf = grown;
        }
      ssize_t n = read (fd, buf + len, cap - len);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return zcd_fail_errno (err, errno, "read `%s`", name);
        }
      if (n == 0)
        break;
      len += (size_t) n;
    }
  if (len > max)
    return zcd_fail (err, ZCD_E_TOO_LARGE, "`%s` is larger than %zu bytes", name, max);
  buf[len] = '\0';
  if (len_out)
    *len_out = len;
  *out = steal_pointer (&buf);
  return 0;
}

int
zcd_read_fileat (int dirfd, const char *name, size_t max, char **out, size_t *len_out,
                 zcd_error_t **err)
{
  return s_read_fileat (dirfd, name, 0, max, out, len_out, err);
}

int
zcd_read_file (const char *path, size_t max, char **out, size_t *len, zcd_error_t **err)
{
  return s_read_fileat (AT_FDCWD, path, 0, max, out, len, err);
}

int
zcd_read_file_nofollow (const char *path, size_t max, char **out, size_t *len, zcd_error_t **err)
{
  return s_read_fileat (AT_FDCWD, path, O_NOFOLLOW, max, out, len, err);
}

int
zcd_mkdir_p (const char *path, mode_t mode, zcd_error_t **err)
{
  char buf[4096];
  size_t len = strlen (path);
  if (len == 0 || len >= sizeof buf)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "bad directory path `%s`", path);
  memcpy (buf, path, len + 1);
  for (char *p = buf + 1; *p; p++)
    {
      if (*p != '/')
        continue;
      *p = '\0';
      if (mkdir (buf, mode) < 0 && errno != EEXIST)
        return zcd_fail_errno (err, errno, "mkdir `%s`", buf);
      *p = '/';
    }
  if (mkdir (buf, mode) < 0 && errno != EEXIST)
    return zcd_fail_errno (err, errno, "mkdir `%s`", buf);
  return 0;
}

int
zcd_mkdir (const char *path, mode_t mode, zcd_error_t **err)
{
  if (mkdir (path, mode) == 0)
    return 0;
  if (errno == EEXIST)
    return zcd_fail (err, ZCD_E_ALREADY_EXISTS, "`%s` already exists", path);
  return zcd_fail_errno (err, errno, "mkdir `%s`", path);
}

static const char *
s_type_name (mode_t mode)
{
  switch (mode & S_IFMT)
    {
    case S_IFREG:
      return "a regular file";
    case S_IFDIR:
      return "a directory";
    case S_IFIFO:
      return "a FIFO";
    case S_IFSOCK:
      return "a socket";
    case S_IFCHR:
      return "a character device";
    case S_IFBLK:
      return "a block device";
    case S_IFLNK:
      return "a symbolic link";
    default:
      return "of an odd type";
    }
}

int
zcd_open_client_file (int dirfd, const char *path, int flags, mode_t want_type, size_t max_size,
                      const char *what, zcd_error_t **err)
{
  /* O_NONBLOCK: opening a FIFO must not wait for its writer (issue 8: a
   * config.json that is a FIFO hung the whole daemon).  O_NOFOLLOW: the
   * last component is what the client named, not where a link points. */
  int fd = openat (dirfd, path, flags | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
  if (fd < 0)
    {
      if (errno == ELOOP)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "%s: `%s` is a symbolic link", what, path);
      if (errno == ENOENT || errno == ENOTDIR || errno == EACCES || errno == ENXIO
          || errno == ENAMETOOLONG || errno == EISDIR)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "%s: `%s`: %s", what, path,
                         strerror (errno));
      return zcd_fail_errno (err, errno, "%s: open `%s`", what, path);
    }
  struct stat st;
  if (fstat (fd, &st) < 0)
    {
      int saved = errno;
      close (fd);
      return zcd_fail_errno (err, saved, "%s: stat `%s`", what, path);
    }
  if ((st.st_mode & S_IFMT) != want_type)
    {
      close (fd);
      return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "%s: `%s` is %s, not %s", what, path,
                       s_type_name (st.st_mode), s_type_name (want_type));
    }
  if (want_type == S_IFREG && max_size > 0 && (uint64_t) st.st_size > max_size)
    {
      close (fd);
      return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "%s: `%s` is larger than %zu bytes", what,
                       path, max_size);
    }
  /* A regular file never blocks; clearing the flag keeps later reads plain. */
  fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

int
zcd_read_client_file (int dirfd, const char *path, size_t max, const char *what, char **out,
                      size_t *len_out, zcd_error_t **err)
{
  cleanup_close int fd = zcd_open_client_file (dirfd, path, O_RDONLY, S_IFREG, max, what, err);
  if (fd < 0)
    return -1;
  cleanup_free char *buf = malloc (max + 2);
  if (buf == NULL)
    return zcd_fail_errno (err, ENOMEM, "%s: read `%s`", what, path);
  size_t len = 0;
  while (len <= max)
    {
      ssize_t n = read (fd, buf + len, max + 1 - len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "%s: read `%s`: %s", what, path,
                         strerror (errno));
      if (n == 0)
        break;
      len += (size_t) n;
    }
  if (len > max)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "%s: `%s` is larger than %zu bytes", what, path,
                     max);
  buf[len] = '\0';
  if (len_out)
    *len_out = len;
  *out = steal_pointer (&buf);
  return 0;
}

bool
zcd_valid_utf8 (const char *s, size_t len)
{
  const unsigned char *p = (const unsigned char *) s, *end = p + len;
  while (p < end)
    {
      unsigned char c = *p;
      if (c < 0x80)
        {
          p++;
          continue;
        }
      size_t n;
      uint32_t cp;
      if (c >= 0xc2 && c <= 0xdf)
        n = 1, cp = c & 0x1f;
      else if (c >= 0xe0 && c <= 0xef)
        n = 2, cp = c & 0x0f;
      else if (c >= 0xf0 && c <= 0xf4)
        n = 3, cp = c & 0x07;
      else
        return false;
      if ((size_t) (end - p) <= n)
        return false;
      for (size_t i = 1; i <= n; i++)
        {
          if ((p[i] & 0xc0) != 0x80)
            return false;
          cp = (cp << 6) | (p[i] & 0x3f);
        }
      /* overlong forms, surrogates, beyond U+10FFFF */
      if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff))
          || (cp >= 0xd800 && cp <= 0xdfff))
        return false;
      p += n + 1;
    }
  return true;
}

static int
s_rm_rf_at (int parent_fd, const char *name)
{
  if (unlinkat (parent_fd, name, 0) == 0 || errno == ENOENT)
    return 0;
  if (errno != EISDIR && errno != EPERM)
    return -1;
  int fd = openat (parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? 0 : -1;
  cleanup_dir DIR *dir = fdopendir (fd);
  if (dir == NULL)
    {
      close (fd);
      return -1;
    }
  struct dirent *de;
  while ((de = readdir (dir)) != NULL)
    {
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      if (s_rm_rf_at (dirfd (dir), de->d_name) < 0)
        return -1;
    }
  if (unlinkat (parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
    return -1;
  return 0;
}

int
zcd_rm_rf (const char *path, zcd_error_t **err)
{
  if (s_rm_rf_at (AT_FDCWD, path) < 0)
    return zcd_fail_errno (err, errno, "remove `%s`", path);
  return 0;
}

int
zcd_fsync_dir (const char *path)
{
  cleanup_close int fd = open (path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  return fsync (fd);
}

int64_t
zcd_now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

uint64_t
zcd_mono_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

uint64_t
zcd_mono_ms (void)
{
  return zcd_mono_ns () / 1000000ULL;
}

uint64_t
zcd_proc_starttime (pid_t pid)
{
  char path[64], buf[1024];
  if (pid <= 0)
    return 0;
  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n = read (fd, buf, sizeof buf - 1);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  /* comm (field 2) may hold spaces and parentheses: fields are counted from
   * the last ')'. */
  char *p = strrchr (buf, ')');
  if (p == NULL)
    return 0;
  p++;
  /* After ')' come fields 3..; starttime is field 22, the 20th of those. */
  for (int field = 3; field < 22; field++)
    {
      p = strchr (p + 1, ' ');
      if (p == NULL)
        return 0;
    }
  return strtoull (p + 1, NULL, 10);
}

bool
zcd_proc_is_zombie (pid_t pid)
{
  char path[64], buf[512];
  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);
  ssize_t n = fd < 0 ? -1 : read (fd, buf, sizeof buf - 1);
  if (n <= 0)
    return false;
  buf[n] = '\0';
  const char *p = strrchr (buf, ')');
  return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

int
zcd_valid_id (const char *s, size_t len)
{
  if (len < 1 || len > 64)
    return 0;
  for (size_t i = 0; i < len; i++)
    {
      unsigned char c = (unsigned char) s[i];
      int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      if (i == 0 && !alnum)
        return 0;
      if (!alnum && c != '_' && c != '.' && c != '-')
        return 0;
    }
  return 1;
}

/* Deep enough for any checkpoint image (CRIU's are flat); the bound keeps a
 * hostile tree from using up the daemon's stack or file descriptors. */
#define RM_TREE_MAX_DEPTH 64

/* Empty the directory open as fd.  Entries are unlinked relative to fd and
 * subdirectories opened O_NOFOLLOW relative to it: a symlink is removed,
 * never followed, and a mount point (another st_dev) is never entered. */
static int
s_rm_contents_fd (int fd, dev_t dev, unsigned depth, zcd_error_t **err)
{
  if (depth >= RM_TREE_MAX_DEPTH)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "more than %d levels of directories",
                     RM_TREE_MAX_DEPTH);
  /* fdopendir owns its fd: a duplicate keeps the caller's. */
  int dup_fd = fcntl (fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0)
    return zcd_fail_errno (err, errno, "dup");
  cleanup_dir DIR *dir = fdopendir (dup_fd);
  if (dir == NULL)
    {
      int saved = errno;
      close (dup_fd);
      return zcd_fail_errno (err, saved, "opendir");
    }
  rewinddir (dir); /* the duplicate shares the caller's offset */
  for (;;)
    {
      errno = 0;
      struct dirent *de = readdir (dir);
      if (de == NULL)
        return errno ? zcd_fail_errno (err, errno, "readdir") : 0;
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      if (unlinkat (fd, de->d_name, 0) == 0 || errno == ENOENT)
        continue;
      int unlink_errno = errno;
      if (unlink_errno != EISDIR && unlink_errno != EPERM)
        return zcd_fail_errno (err, unlink_errno, "remove `%s`", de->d_name);
      cleanup_close int sub
          = openat (fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
      if (sub < 0 && errno == ENOENT)
        continue;
      if (sub < 0) /* EPERM on something that is no directory: unlink's own refusal */
        return zcd_fail_errno (err, errno == ENOTDIR ? unlink_errno : errno, "remove `%s`",
                               de->d_name);
      struct stat st;
      if (fstat (sub, &st) < 0)
        return zcd_fail_errno (err, errno, "stat `%s`", de->d_name);
      if (st.st_dev != dev)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "`%s` is a mount point", de->d_name);
      if (s_rm_contents_fd (sub, dev, depth + 1, err) < 0)
        {
          zcd_error_wrap (err, "%s", de->d_name);
          return -1;
        }
      if (unlinkat (fd, de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return zcd_fail_errno (err, errno, "remove `%s`", de->d_name);
    }
}

int
zcd_rm_tree_fd (int parent_fd, const char *name, int dir_fd, zcd_error_t **err)
{
  struct stat parent, dir;
  if (fstat (parent_fd, &parent) < 0 || fstat (dir_fd, &dir) < 0)
    return zcd_fail_errno (err, errno, "remove `%s`: stat", name);
  if (parent.st_dev != dir.st_dev)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "remove `%s`: it is a mount point", name);
  if (s_rm_contents_fd (dir_fd, dir.st_dev, 0, err) < 0)
    {
      zcd_error_wrap (err, "remove `%s`", name);
      return -1;
    }
  /* AT_REMOVEDIR removes only an empty directory: were `name` swapped for
   * something else since dir_fd was opened, this fails and removes nothing. */
  if (unlinkat (parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
    return zcd_fail_errno (err, errno, "remove `%s`", name);
  return 0;
}

int
zcd_open_client_dir (int dirfd, const char *path, const char *what, zcd_error_t **err)
{
  int fd = openat (dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd >= 0)
    return fd;
  int saved = errno;
  struct stat st;
  /* O_DIRECTORY|O_NOFOLLOW gives ENOTDIR for a symlink too: say which. */
  if (saved == ENOTDIR && fstatat (dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "%s: `%s` is %s, not a directory", what, path,
                     s_type_name (st.st_mode));
  if (saved == ENOENT)
    return zcd_fail (err, ZCD_E_NOT_FOUND, "%s: `%s` does not exist", what, path);
  if (saved == ENOTDIR || saved == ELOOP || saved == EACCES || saved == ENAMETOOLONG)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "%s: `%s`: %s", what, path, strerror (saved));
  return zcd_fail_errno (err, saved, "%s: open `%s`", what, path);
}
