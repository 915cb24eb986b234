/* The state dir's housekeeping for container directories (issue 9: the
 * loop never waits on the disk):
 *
 *   .trash/  a container's or process's directory is renamed here when it
 *            goes (one rename on the loop, atomic: the restart never meets
 *            a half-removed directory); a forked child removes it later.
 *   .spare/  fresh, never used container skeletons (<n>/procs/init with
 *            its `exit` and `control` FIFOs, and an empty file that becomes
 *            state.json), made ahead by the same child: a create renames
 *            one to containers/<id> instead of making three directories,
 *            two FIFOs and a file on the loop.
 *
 * Why: every inode the loop makes or frees waits on the file system's
 * allocator.  On ext4 without a journal (this machine's root) an inode
 * allocation skips, one buffer lookup each, every free inode of its group
 * freed in the last minutes (fs/ext4/ialloc.c, recently_deleted): 0.25 to
 * over 1 ms per mkdir, mknod or new file under load, which made up most of
 * the loop's time per container (3 to 11 ms of CPU).  The child pays what
 * is left of it on another CPU, between creates, and the skeletons are
 * spread over the file system's inode groups (s_spread_subdirs), where it
 * is cheap.
 *
 * A skeleton is made fresh for one container and handed over whole
 * (RENAME_NOREPLACE), so DESIGN.md's "a container directory is made fresh,
 * never reused" holds.  Nothing here touches what zcd did not make: the
 * child works only inside .trash and .spare, through the fds it was given. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "actors/actors.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"

/* Skeletons kept ready; below SPARE_LOW a job starts at once, else it waits
 * SWEEP_DELAY_MS so that one fork serves many discards: a fork of the
 * daemon costs the loop 0.2-0.5 ms here, and copy-on-write faults after. */
#define SPARE_TARGET 32
#define SPARE_LOW 16
#define SWEEP_DELAY_MS 1000
#define SWEEP_MAX_DELAY_MS 60000

struct container_dirs
{
  zcd_daemon_t *daemon;
  int trash_fd, spare_fd;
  /* Ready skeletons, oldest first: .spare/<seq> (a ring). */
  uint64_t ready[SPARE_TARGET];
  size_t ready_head, ready_count;
  uint64_t next_seq; /* the next skeleton a job makes */
  child_t *job;      /* the running child */
  uint64_t job_from; /* it makes .spare/<job_from ...> */
  unsigned job_n;
  bool trash_pending;      /* something went to .trash since the job started */
  loop_timer_t *timer;     /* a delayed job */
  uint64_t failing_jobs;   /* consecutive jobs that could not make skeletons */
  uint64_t failing_sweeps; /* consecutive sweeps that left something in .trash */
};

/* ------------------------------------------------------------------ */
/* The child's work                                                    */

typedef struct
{
  int trash_fd, spare_fd;
  uint64_t from;
  unsigned n;
} dirs_job_t;

/* Names as process_shim.c's s_make_fifos makes them. */
static const char *const s_fifos[] = { "exit", "control" };

static int
s_make_empty_file (int dirfd, const char *name)
{
  int fd = openat (dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return -1;
  close (fd);
  return 0;
}

/* .spare/<seq>: built under a temp name, renamed into place whole. */
static int
s_make_spare (int spare_fd, uint64_t seq)
{
  char tmp[48], name[32];
  snprintf (tmp, sizeof tmp, "new.%llu", (unsigned long long)seq);
  snprintf (name, sizeof name, "%llu", (unsigned long long)seq);
  if (mkdirat (spare_fd, tmp, 0700) < 0)
    return -1;
  cleanup_close int top = openat (spare_fd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  cleanup_close int procs = -1, init = -1;
  int rc = -1;
  if (top >= 0 && mkdirat (top, ZCD_PROCS_DIR, 0700) == 0
      && (procs = openat (top, ZCD_PROCS_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) >= 0
      && mkdirat (procs, "init", 0700) == 0
      && (init = openat (procs, "init", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) >= 0
      && mknodat (init, s_fifos[0], S_IFIFO | 0600, 0) == 0
      && mknodat (init, s_fifos[1], S_IFIFO | 0600, 0) == 0
      && s_make_empty_file (top, CONTAINER_DIRS_STATE_FILE) == 0
      && renameat2 (spare_fd, tmp, spare_fd, name, RENAME_NOREPLACE) == 0)
    rc = 0;
  if (rc < 0)
    {
      int saved = errno;
      if (top >= 0)
        zcd_rm_tree_fd (spare_fd, tmp, top, NULL);
      errno = saved;
    }
  return rc;
}

/* Remove every entry of .trash (entries that arrive meanwhile may wait for
 * the next job).  One that cannot go yet (a shim still ending wrote into
 * it; a mount point, which is never entered) stays for the next job; the
 * others go on.  Each failure is a line on stderr. */
static int
s_sweep (int trash_fd)
{
  int dup_fd = fcntl (trash_fd, F_DUPFD_CLOEXEC, 0);
  cleanup_dir DIR *d = dup_fd >= 0 ? fdopendir (dup_fd) : NULL;
  if (d == NULL)
    {
      fprintf (stderr, "open .trash: %s\n", strerror (errno));
      return -1;
    }
  rewinddir (d);
  int rc = 0;
  for (struct dirent *de; (de = readdir (d));)
    {
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      cleanup_close int fd = openat (trash_fd, de->d_name,
                                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
      cleanup_error zcd_error_t *err = NULL;
      if (fd < 0 && (errno == ENOTDIR || errno == ELOOP))
        {
          /* Not a directory (a link is removed, never followed). */
          if (unlinkat (trash_fd, de->d_name, 0) < 0 && errno != ENOENT)
            zcd_fail_errno (&err, errno, "remove `%s`", de->d_name);
        }
      else if (fd < 0 && errno != ENOENT)
        zcd_fail_errno (&err, errno, "open `%s`", de->d_name);
      else if (fd >= 0)
        zcd_rm_tree_fd (trash_fd, de->d_name, fd, &err);
      if (err)
        {
          fprintf (stderr, ".trash: %s\n", err->msg);
          rc = -1;
        }
    }
  return rc;
}

/* What a job's exit code says: the skeletons it made (from .. from + made
 * - 1: they are made in order), and what failed (said on stderr). */
#define JOB_MADE_MASK 63
#define JOB_SPARE_FAILED 64
#define JOB_SWEEP_FAILED 128
_Static_assert(SPARE_TARGET <= JOB_MADE_MASK, "a job's count of skeletons fits its exit code");

/* In the forked child: the skeletons first (a create may be waiting for
 * one), then the trash. */
static int
s_job_main (void *arg)
{
  const dirs_job_t *job = arg;
  unsigned made = 0;
  int failed = 0;
  for (; made < job->n; made++)
    if (s_make_spare (job->spare_fd, job->from + made) < 0)
      {
        fprintf (stderr, "make a spare container directory: %s\n", strerror (errno));
        failed |= JOB_SPARE_FAILED;
        break;
      }
  if (s_sweep (job->trash_fd) < 0)
    failed |= JOB_SWEEP_FAILED;
  return (int)made | failed;
}

/* ------------------------------------------------------------------ */
/* The daemon's side                                                   */

static void s_job_done (const child_result_t *res, void *arg);

static void
s_start_job (container_dirs_t *self)
{
  loop_timer_cancel (self->daemon->loop, self->timer);
  self->timer = NULL;
  if (self->job)
    return;
  dirs_job_t job = { self->trash_fd, self->spare_fd, self->next_seq,
                     (unsigned)(SPARE_TARGET - self->ready_count) };
  int keep[] = { self->trash_fd, self->spare_fd };
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.max_output = 4096;
  cleanup_error zcd_error_t *err = NULL;
  self->job = child_fork (self->daemon->children, s_job_main, &job, keep, 2, &opts, s_job_done,
                          self, &err);
  if (self->job == NULL)
    {
      /* Creates make their directories themselves meanwhile; the trash
       * waits for the next discard's try. */
      log_warn ("state dir: cannot start the sweeper: %s", err->msg);
      return;
    }
  self->job_from = job.from;
  self->job_n = job.n;
  self->next_seq += job.n;
  self->trash_pending = false;
}

static void
s_on_timer (loop_t *loop, void *arg)
{
  container_dirs_t *self = arg;
  self->timer = NULL;
  s_start_job (self);
}

/* A job is due: now when the skeletons run low, else after a while (more
 * discards join it); after failures, later and later. */
static void
s_kick (container_dirs_t *self)
{
  if (self->job)
    return; /* its end looks again */
  if (self->ready_count < SPARE_LOW && self->failing_jobs == 0)
    {
      s_start_job (self);
      return;
    }
  if (self->timer || !(self->trash_pending || self->ready_count < SPARE_TARGET))
    return;
  uint64_t delay = SWEEP_DELAY_MS;
  for (uint64_t i = 0; i < self->failing_jobs + self->failing_sweeps && delay < SWEEP_MAX_DELAY_MS;
       i++)
    delay *= 2;
  if (delay > SWEEP_MAX_DELAY_MS)
    delay = SWEEP_MAX_DELAY_MS;
  self->timer = loop_timer_add (self->daemon->loop, delay, s_on_timer, self);
}

/* The child's first line of complaint, for the log. */
static void
s_first_line (const child_result_t *res, char *out, size_t size)
{
  if (res->err_len == 0)
    {
      snprintf (out, size, "%s",
                WIFEXITED (res->wait_status) ? "no reason given" : "it was killed");
      return;
    }
  size_t n = strcspn (res->err, "\n");
  snprintf (out, size, "%.*s%s", (int)n, res->err,
            res->err[n] && res->err[n + 1] ? " (and more)" : "");
}

static void
s_job_done (const child_result_t *res, void *arg)
{
  container_dirs_t *self = arg;
  self->job = NULL;
  /* A child killed by a signal says nothing about its skeletons: they are
   * not used (the next start trashes .spare whole). */
  bool exited = WIFEXITED (res->wait_status);
  unsigned code = exited ? (unsigned)WEXITSTATUS (res->wait_status) : JOB_SPARE_FAILED;
  unsigned made = code & JOB_MADE_MASK;
  if (made > self->job_n)
    {
      made = 0;
      code |= JOB_SPARE_FAILED;
    }
  for (unsigned i = 0; i < made && self->ready_count < SPARE_TARGET; i++)
    {
      self->ready[(self->ready_head + self->ready_count) % SPARE_TARGET] = self->job_from + i;
      self->ready_count++;
    }
  /* Each said once per failing spell (a full disk fails every job; a
   * mount point in .trash, which is never entered, every sweep). */
  char why[512];
  s_first_line (res, why, sizeof why);
  if (code & JOB_SPARE_FAILED)
    {
      if (self->failing_jobs++ == 0)
        log_warn ("state dir: the sweeper: %s", why);
    }
  else if (self->failing_jobs)
    {
      log_info ("state dir: spare container directories are made again");
      self->failing_jobs = 0;
    }
  if (code & JOB_SWEEP_FAILED)
    {
      if (self->failing_sweeps++ == 0)
        log_warn ("state dir: the sweeper: %s (left in .trash, tried again later)", why);
      /* What could not go yet (a shim's last file) goes at a later try. */
      self->trash_pending = true;
    }
  else
    self->failing_sweeps = 0;
  s_kick (self);
}

static int
s_open_dir (const char *state_dir, const char *name, bool fresh)
{
  char path[4200];
  snprintf (path, sizeof path, "%s/%s", state_dir, name);
  if (fresh)
    {
      /* A spare of an earlier run is not used: fresh means of this run. */
      char old[4300];
      snprintf (old, sizeof old, "%s/.trash/spare.%lld", state_dir, (long long)zcd_now_ns ());
      if (rename (path, old) < 0 && errno != ENOENT)
        zcd_rm_rf (path, NULL);
    }
  if (mkdir (path, 0700) < 0 && errno != EEXIST)
    {
      log_error ("state dir: cannot create %s: %s", path, strerror (errno));
      return -1;
    }
  int fd = open (path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    log_error ("state dir: cannot open %s: %s", path, strerror (errno));
  return fd;
}

/* Each skeleton, and so each container, in an inode group of its own
 * choosing: ext4's Orlov allocator spreads the subdirectories of a "top"
 * directory (chattr +T) over the file system, and puts what is made inside
 * them (the FIFOs, state.json, the shim's and the runtime's files) in
 * their group.  Without it every container's inodes pile into the state
 * dir's group, where those of the containers that went before, freed
 * minutes ago, make every allocation a long scan (no journal; see the top
 * of this file): 0.25-1 ms per inode on this machine's root, 0.03 with it.
 * Where the flag means nothing (tmpfs, xfs) it is refused: no matter. */
static void
s_spread_subdirs (int dir_fd)
{
  int flags = 0;
  if (ioctl (dir_fd, FS_IOC_GETFLAGS, &flags) == 0 && !(flags & FS_TOPDIR_FL))
    {
      flags |= FS_TOPDIR_FL;
      ioctl (dir_fd, FS_IOC_SETFLAGS, &flags);
    }
}

container_dirs_t *
container_dirs_new (zcd_daemon_t *daemon)
{
  container_dirs_t *self = calloc (1, sizeof *self);
  self->daemon = daemon;
  self->trash_fd = s_open_dir (daemon->config->state_dir, ".trash", false);
  self->spare_fd = self->trash_fd < 0 ? -1 : s_open_dir (daemon->config->state_dir, ".spare", true);
  if (self->spare_fd < 0)
    {
      /* Without them containers make and remove their directories on the
       * loop, as before. */
      if (self->trash_fd >= 0)
        close (self->trash_fd);
      free (self);
      return NULL;
    }
  s_spread_subdirs (self->spare_fd);
  /* What an earlier run left in .trash goes now. */
  self->trash_pending = true;
  s_start_job (self);
  return self;
}

void
container_dirs_destroy (container_dirs_t **pself)
{
  container_dirs_t *self = pself ? *pself : NULL;
  if (self == NULL)
    return;
  loop_timer_cancel (self->daemon->loop, self->timer);
  /* A running job finishes on its own; what it makes is trashed at the
   * next start. */
  if (self->job)
    child_forget (self->daemon->children, self->job);
  close (self->trash_fd);
  close (self->spare_fd);
  free (self);
  *pself = NULL;
}

int
container_dirs_take (container_dirs_t *self, const char *dest, zcd_error_t **err)
{
  if (self == NULL)
    return 0;
  int rc = 0;
  while (self->ready_count > 0 && rc == 0)
    {
      char name[32];
      snprintf (name, sizeof name, "%llu", (unsigned long long)self->ready[self->ready_head]);
      if (renameat2 (self->spare_fd, name, AT_FDCWD, dest, RENAME_NOREPLACE) == 0)
        rc = 1;
      else if (errno == EEXIST)
        /* The skeleton stays for the next create. */
        return zcd_fail (err, ZCD_E_ALREADY_EXISTS, "`%s` exists", dest);
      else if (errno != ENOENT || faccessat (self->spare_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
        /* Whatever stops this rename (a full disk, dest's parent gone)
         * stops a mkdir too: the caller's says it in its words. */
        break;
      /* Taken, or gone (not to be tried again). */
      self->ready_head = (self->ready_head + 1) % SPARE_TARGET;
      self->ready_count--;
    }
  s_kick (self);
  return rc;
}

void
container_dirs_discard (container_dirs_t *self, const char *dir, const char *tag)
{
  char name[300];
  snprintf (name, sizeof name, "%s.%lld", tag, (long long)zcd_now_ns ());
  if (self && renameat2 (AT_FDCWD, dir, self->trash_fd, name, RENAME_NOREPLACE) == 0)
    {
      self->trash_pending = true;
      s_kick (self);
      return;
    }
  /* No .trash to move it to: removed here, as it stands. */
  cleanup_error zcd_error_t *err = NULL;
  if (zcd_rm_rf (dir, &err) < 0)
    log_warn ("%s", err->msg);
}
