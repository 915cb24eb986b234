/* Records of containers that `create` accepted and `start` has not yet
 * sent to zcd (zcd has only create-and-start).
 *
 * One directory per uid, so that nothing needs root nor a chown:
 * $ZCD_OCI_STATE_DIR when set, else /run/zcd-oci/<uid> for root, else
 * $XDG_RUNTIME_DIR/zcd-oci, else /tmp/zcd-oci-<uid>.  Each directory is made
 * 0700 and then opened without following symlinks and checked: ours, and
 * nobody else may write to it (a /tmp name someone else made first is
 * refused, never used).  Files are <id>.json, 0600, opened relative to that
 * directory with O_NOFOLLOW; ids are checked first (oci_valid_id), so a name
 * never leaves the directory. */
#include "tools/zcd-oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Open (making it if missing) directory name under parent, which must end
 * up owned by owner and writable by nobody else; ours gets mode. */
static int
s_open_dir_at (int parent, const char *name, mode_t mode, uid_t owner)
{
  if (mkdirat (parent, name, mode) < 0 && errno != EEXIST)
    return -1;
  int fd = openat (parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return -1;
  struct stat st;
  if (fstat (fd, &st) < 0 || st.st_uid != owner || (st.st_mode & 022))
    {
      close (fd);
      errno = EPERM;
      return -1;
    }
  /* a umask may have taken bits we need, or left some we do not want */
  if ((st.st_mode & 07777) != mode && st.st_uid == geteuid () && fchmod (fd, mode) < 0)
    {
      close (fd);
      return -1;
    }
  return fd;
}

static int
s_open_path (const char *path)
{
  return open (path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* The record directory as an fd, or -1 after printing why. */
static int
s_record_dir (oci_t *o)
{
  uid_t uid = geteuid ();
  const char *override = getenv ("ZCD_OCI_STATE_DIR");
  const char *xdg = getenv ("XDG_RUNTIME_DIR");
  char name[64];
  const char *where;
  int fd = -1;
  if (override && *override)
    {
      where = override;
      int parent = override[0] == '/' ? s_open_path ("/") : -1;
      fd = parent >= 0 ? s_open_dir_at (parent, override + 1, 0700, uid) : -1;
      if (parent >= 0)
        close (parent);
    }
  else if (uid == 0)
    {
      where = "/run/zcd-oci/0";
      int run = s_open_path ("/run");
      int top = run >= 0 ? s_open_dir_at (run, "zcd-oci", 0711, 0) : -1;
      fd = top >= 0 ? s_open_dir_at (top, "0", 0700, 0) : -1;
      if (run >= 0)
        close (run);
      if (top >= 0)
        close (top);
    }
  else
    {
      bool use_xdg = xdg && xdg[0] == '/';
      snprintf (name, sizeof name, use_xdg ? "zcd-oci" : "zcd-oci-%u", (unsigned)uid);
      where = use_xdg ? xdg : "/tmp";
      int parent = s_open_path (where);
      fd = parent >= 0 ? s_open_dir_at (parent, name, 0700, uid) : -1;
      if (parent >= 0)
        close (parent);
    }
  if (fd < 0)
    oci_error (o, "record directory under %s: %s", where,
               errno == EPERM ? "not ours, or writable by others" : strerror (errno));
  return fd;
}

static void
s_record_name (char *buf, size_t size, const char *id)
{
  snprintf (buf, size, "%s.json", id);
}

int
oci_record_save (oci_t *o, const char *id, json_t *record, bool replace)
{
  if (!oci_valid_id (id))
    return oci_error (o, "invalid container id: %s", id);
  int dir = s_record_dir (o);
  if (dir < 0)
    return -1;
  char name[80], tmp[96];
  s_record_name (name, sizeof name, id);
  snprintf (tmp, sizeof tmp, ".%s.%ld.tmp", id, (long)getpid ());
  char *text = json_dumps (record, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
  int fd
      = text ? openat (dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600) : -1;
  size_t len = text ? strlen (text) : 0;
  bool written = fd >= 0 && write (fd, text, len) == (ssize_t)len;
  if (fd >= 0 && close (fd) < 0)
    written = false;
  int rc = 0;
  if (!written)
    rc = oci_error (o, "write record of %s: %s", id, text ? strerror (errno) : "out of memory");
  /* A written file appears whole: linked into place (which refuses to
   * replace an existing record: two creates of one id), or renamed over the
   * old one by an update. */
  else if (replace ? renameat (dir, tmp, dir, name) < 0 : linkat (dir, tmp, dir, name, 0) < 0)
    rc = errno == EEXIST ? oci_error (o, "container with given ID already exists")
                         : oci_error (o, "record %s: %s", id, strerror (errno));
  unlinkat (dir, tmp, 0);
  free (text);
  close (dir);
  return rc ? -1 : 0;
}

json_t *
oci_record_load (oci_t *o, const char *id)
{
  if (!oci_valid_id (id))
    return NULL;
  int dir = s_record_dir (o);
  if (dir < 0)
    return NULL;
  char name[80];
  s_record_name (name, sizeof name, id);
  int fd = openat (dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  close (dir);
  if (fd < 0)
    {
      if (errno != ENOENT)
        oci_error (o, "record of %s: %s", id, strerror (errno));
      return NULL;
    }
  json_error_t jerr;
  json_t *record = json_loadfd (fd, 0, &jerr);
  close (fd);
  if (record == NULL || !json_is_object (record))
    {
      oci_error (o, "record of %s is damaged: %s", id, record ? "not an object" : jerr.text);
      json_decref (record);
      return NULL;
    }
  return record;
}

int
oci_record_remove (oci_t *o, const char *id)
{
  if (!oci_valid_id (id))
    return oci_error (o, "invalid container id: %s", id);
  int dir = s_record_dir (o);
  if (dir < 0)
    return -1;
  char name[80];
  s_record_name (name, sizeof name, id);
  int rc = unlinkat (dir, name, 0) < 0 && errno != ENOENT ? -1 : 0;
  if (rc < 0)
    oci_error (o, "remove record of %s: %s", id, strerror (errno));
  close (dir);
  return rc;
}
