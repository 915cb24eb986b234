/* zcd-shim: one per container process (DESIGN.md, "The shim"; contract in
 * core/shimproto.h).  main only sequences the phases; each lives in its
 * own file. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "core/shimproto.h"
#include "shim/shim.h"

/* Static: the shim's footprint is counted in pages, and so is its stack. */
static shim_t s_shim;

static void
s_init (shim_t *self)
{
  self->exit_fd = self->control_fd = -1;
  self->container_stdio[0] = self->container_stdio[1] = self->container_stdio[2] = -1;
  self->console_listen_fd = self->master_fd = self->signal_fd = -1;
  self->delete_helper_pid = -1;
  self->delete_helper_fd = self->delete_report_fd = -1;
  self->exit_status_fd = -1;
  shim_relay_init (&self->stdin_relay, -1, -1, false);
  shim_relay_init (&self->stdout_relay, -1, -1, false);
  shim_relay_init (&self->stderr_relay, -1, -1, false);
}

/* fds 0-2 become /dev/null: the shim must not hold the daemon's pipes or
 * terminal, and no file it opens may land on a standard fd.  Every other
 * inherited fd but the sync fd is closed: the shim lives as long as the
 * container and must not pin a socket or file of whoever started it.  The
 * sync fd is made close-on-exec, so no runtime or container holds it. */
static int
s_standard_fds (shim_args_t *args)
{
  if (args->sync_fd >= 0 && fcntl (args->sync_fd, F_GETFD) < 0)
    args->sync_fd = -1;
  if (args->sync_fd >= 0 && args->sync_fd < 3)
    args->sync_fd = fcntl (args->sync_fd, F_DUPFD_CLOEXEC, 3);
  if (args->sync_fd >= 0)
    {
      fcntl (args->sync_fd, F_SETFD, FD_CLOEXEC);
      if (args->sync_fd > 3)
        close_range (3, (unsigned) args->sync_fd - 1, 0);
      close_range ((unsigned) args->sync_fd + 1, ~0U, 0);
    }
  else
    close_range (3, ~0U, 0);
  int devnull = open ("/dev/null", O_RDWR);
  if (devnull < 0)
    return -1;
  for (int fd = 0; fd < 3; fd++)
    if (fd != devnull)
      dup2 (devnull, fd);
  if (devnull > 2)
    close (devnull);
  return 0;
}

/* Detached: in its own session, the shim survives its caller and the
 * caller's terminal, and it is nobody's child but the subreaper's (the
 * daemon).  Started by anyone else (tests, a shell), it forks once: the
 * process the caller started exits at once, and the child (no group
 * leader, so setsid is allowed) carries on.
 *
 * A second fork would only keep the shim from leading its session, which
 * matters for one thing: a session leader without a controlling terminal
 * acquires the first terminal it opens without O_NOCTTY.  The shim opens
 * terminals only as client stdio paths, with O_NOCTTY (stdio.c); the pty
 * master comes over the console socket, and receiving an fd never makes a
 * terminal controlling.  The runtime and the delete helper are not
 * session leaders, so they cannot acquire one either. */
static int
s_detach (zcd_error_t **err)
{
  /* The daemon spawns the shim leading its own session already (setsid in
   * posix_spawn) and never waits for it: then there is nothing to do, and
   * no process made on the way to the runtime's create (under load a new
   * process waits a scheduling period for its first turn). */
  if (getsid (0) == getpid ())
    return 0;
  pid_t pid = fork ();
  if (pid < 0)
    return zcd_fail_errno (err, errno, "fork");
  if (pid > 0)
    _exit (0);
  if (setsid () < 0)
    return zcd_fail_errno (err, errno, "setsid");
  return 0;
}

static int
s_open_exit (shim_t *self, zcd_error_t **err)
{
  /* The daemon holds the read end already; O_RDWR covers a reader that
   * went away (ENXIO) and still hangs up when the shim exits. */
  self->exit_fd = open ("exit", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (self->exit_fd < 0 && errno == ENXIO)
    self->exit_fd = open ("exit", O_RDWR | O_CLOEXEC);
  if (self->exit_fd < 0)
    return zcd_fail_errno (err, errno, "open the exit FIFO");
  return 0;
}

static int
s_open_fifos (shim_t *self, zcd_error_t **err)
{
  if (s_open_exit (self, err) < 0)
    return -1;
  self->control_fd = open ("control", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (self->control_fd < 0)
    return zcd_fail_errno (err, errno, "open the control FIFO");
  return 0;
}

static int
s_prepare (shim_t *self, zcd_error_t **err)
{
  if (getcwd (self->dir, sizeof self->dir) == NULL)
    return zcd_fail_errno (err, errno, "getcwd");
  shim_runtime_prepare (self);
  if (prctl (PR_SET_CHILD_SUBREAPER, 1) < 0)
    return zcd_fail_errno (err, errno, "become a child subreaper");
  /* The daemon signals containers through the runtime, never the shim:
   * the shim outlives a terminal hang-up, ^C and a stray SIGTERM. */
  signal (SIGINT, SIG_IGN);
  signal (SIGHUP, SIG_IGN);
  signal (SIGPIPE, SIG_IGN);
  signal (SIGTERM, SIG_IGN);
  /* The log's writer starts now, to be running by the time the sandbox
   * comes (outlog.c).  It holds no lock the delete helper's fork could
   * copy held: it waits, or writes its count with plain system calls. */
  if (shim_stdio_open (self, err) < 0 || shim_outlog_start (err) < 0)
    return -1;
  return self->args.terminal ? shim_console_listen (self, err) : 0;
}

/* What needs no container (shim.pid, the FIFOs, the delete helper, the
 * reserved exitStatus, SIGCHLD on a signalfd, the compiled filter), done
 * while the runtime creates the container instead of before or after it:
 * the shim would only wait.  A failure here still fails the start (after
 * the runtime's call ended), as it did when this ran in sequence.
 *
 * shim.pid comes first: a daemon restarted before it exists takes the shim
 * for dead.  Written here, it exists as early after the spawn as it did
 * when the shim forked twice before writing it, and what would delay the
 * runtime is out of its way: each file creation is a journal transaction
 * on ext4 (a millisecond when the disk is busy), and opening `exit` wakes
 * the daemon, which waits on its read end, and may take this CPU. */
static int
s_meanwhile (shim_t *self, zcd_error_t **err)
{
  if (shim_write_number ("shim.pid", (unsigned long long) getpid (), err) < 0
      || s_open_fifos (self, err) < 0)
    return -1;
  if (self->args.mode != SHIM_MODE_EXEC && shim_delete_helper_fork (self, err) < 0)
    return -1;
  if (shim_reserve_exit_status (self, err) < 0 || shim_signals_block_child (self, err) < 0)
    return -1;
  return shim_sandbox_prepare (err);
}

/* The start ran most of the shim's code, and the kernel mapped its pages
 * 64 KiB around each fault: the reap loop that follows, for the container's
 * whole life, needs few of them.  Dropping the pages of the executable's
 * read-only segments (never written: they stay in the page cache, shared,
 * and come back on use) leaves the shim the RSS it uses.
 *
 * The segments come from the program headers, not from the order or the
 * permissions of /proc/self/maps: RELRO (GOT, relocated vtables) shows as
 * r--p there once it is write-protected, but it is private and dirty, and
 * dropping it would hand the shim the file's unrelocated bytes.  So: only
 * PT_LOAD segments without PF_W, less any overlap with PT_GNU_RELRO, whole
 * pages only; and nothing at all if the text itself was relocated
 * (DT_TEXTREL) or the load bias does not add up.  getauxval and the
 * headers in memory: no stdio, whose code would be the RSS saved. */
static bool
s_has_textrel (const ElfW (Phdr) *phdr, size_t phnum, uintptr_t bias)
{
  for (size_t i = 0; i < phnum; i++)
    if (phdr[i].p_type == PT_DYNAMIC)
      for (const ElfW (Dyn) *dyn = (const ElfW (Dyn) *) (bias + phdr[i].p_vaddr);
           dyn->d_tag != DT_NULL; dyn++)
        if (dyn->d_tag == DT_TEXTREL
            || (dyn->d_tag == DT_FLAGS && (dyn->d_un.d_val & DF_TEXTREL)))
          return true;
  return false;
}

/* [from, to) shrunk to the whole pages in it. */
static void
s_drop_inward (uintptr_t from, uintptr_t to, uintptr_t page)
{
  from = (from + page - 1) & ~(page - 1);
  to &= ~(page - 1);
  if (from < to)
    madvise ((void *) from, to - from, MADV_DONTNEED);
}

void
shim_drop_code_pages (void)
{
  const ElfW (Phdr) *phdr = (const ElfW (Phdr) *) getauxval (AT_PHDR);
  size_t phnum = getauxval (AT_PHNUM);
  uintptr_t page = getauxval (AT_PAGESZ), at = (uintptr_t) phdr;
  if (phdr == NULL || phnum == 0 || page == 0 || (page & (page - 1)) != 0)
    return;
  /* The load bias: where the headers are less where they were linked.  A
   * static non-PIE executable has no PT_PHDR and runs where it was linked
   * (the sanitizer builds are dynamic PIEs, with one). */
  uintptr_t bias = 0, relro_from = 0, relro_to = 0;
  for (size_t i = 0; i < phnum; i++)
    if (phdr[i].p_type == PT_PHDR)
      bias = at - phdr[i].p_vaddr;
  bool headers_loaded = false;
  for (size_t i = 0; i < phnum; i++)
    {
      uintptr_t from = bias + phdr[i].p_vaddr, to = from + phdr[i].p_memsz;
      if (phdr[i].p_type == PT_GNU_RELRO)
        relro_from = from, relro_to = to;
      if (phdr[i].p_type == PT_LOAD && at >= from && at < to)
        headers_loaded = true;
    }
  if (!headers_loaded || s_has_textrel (phdr, phnum, bias))
    return;
  for (size_t i = 0; i < phnum; i++)
    {
      if (phdr[i].p_type != PT_LOAD || (phdr[i].p_flags & PF_W))
        continue;
      uintptr_t from = bias + phdr[i].p_vaddr, to = from + phdr[i].p_memsz;
      if (relro_to <= from || relro_from >= to)
        s_drop_inward (from, to, page);
      else
        {
          s_drop_inward (from, relro_from, page);
          s_drop_inward (relro_to, to, page);
        }
    }
}

/* Between a running container and the report: the sandbox is in force
 * before the daemon hears "started" (a shim that cannot confine itself
 * fails the start), and before the reap loop reads anything the container
 * controls. */
static int
s_after_start (shim_t *self, zcd_error_t **err)
{
  shim_stdio_after_start (self);
  /* The log's writer must have begun before the filter (TSYNC) covers it. */
  shim_outlog_wait_ready ();
  return shim_sandbox_install (err);
}

static int
s_fail (shim_t *self, zcd_error_t **err, bool started)
{
  if (started)
    shim_runtime_cleanup_failed_start (self);
  /* What reached the log (the runtime's own words) is on disk before the
   * daemon hears of the failure. */
  shim_outlog_finish (SHIM_LOG_FLUSH_MS);
  /* A shim in its state directory ends with a hang-up of `exit`, also when
   * it failed before it opened it (the runtime could not be started). */
  zcd_error_t *ignored = NULL;
  if (self->dir[0] && self->exit_fd < 0 && s_open_exit (self, &ignored) < 0)
    zcd_error_free (&ignored);
  /* Reported after the cleanup: once the daemon hears of the failure, the
   * runtime no longer knows the container, so the id can be reused. */
  shim_report_error (self, *err);
  zcd_error_free (err);
  return 1;
}

int
main (int argc, char **argv)
{
  shim_t *self = &s_shim;
  zcd_error_t *err = NULL;
  s_init (self);
  int parsed = shim_args_parse (&self->args, argc, argv, &err);
  if (s_standard_fds (&self->args) < 0 && parsed == 0)
    zcd_fail_errno (&err, errno, "open /dev/null");
  if (err)
    return s_fail (self, &err, false);
  if (s_detach (&err) < 0 || s_prepare (self, &err) < 0)
    return s_fail (self, &err, false);
  if (shim_runtime_start (self, s_meanwhile, &err) < 0 || s_after_start (self, &err) < 0)
    return s_fail (self, &err, true);
  shim_report_started (self);
  shim_drop_code_pages ();
  return shim_reap_loop (self);
}
