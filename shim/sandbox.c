/* The shim's self-sandbox, installed once the container process runs.
 *
 * From then on the shim only waits for children, relays bytes, resizes the
 * terminal, reads its control FIFO, writes exitStatus and shim.log
 * (temp file, rename; no fsync, see report.c) and tells the delete
 * helper to go; with a log, its writer thread writes and rotates the log
 * and replaces log-dropped.  It never executes anything: the one runtime
 * call it still needs (`delete` for an init) is made by a helper forked
 * before this filter, so execve, clone, socket, ptrace and the rest stay
 * closed.
 *
 * Default action EPERM rather than kill: a syscall missed here (a libc
 * version that reaches a path differently) then fails like any other
 * error the shim already handles, instead of killing the one process that
 * knows the container's exit status; an attacker in control of the shim
 * gains nothing from an EPERM they would not gain from a kill.
 *
 * The filter is compiled (libseccomp's rules turned into BPF) while the
 * runtime creates the container, when the shim only waits; after the start
 * only the kernel load is left, and it still comes before the report, so a
 * shim that cannot sandbox itself fails the start instead of running
 * unconfined. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "shim/shim.h"

static const int s_allowed[] = {
  /* waiting and relaying (readv: into the log's ring, outlog.c) */
  SCMP_SYS (read), SCMP_SYS (readv), SCMP_SYS (write), SCMP_SYS (poll), SCMP_SYS (ppoll),
  SCMP_SYS (wait4), SCMP_SYS (waitid), SCMP_SYS (close), SCMP_SYS (fcntl), SCMP_SYS (lseek),
  /* atomic files: zcd_write_file_atomic; shim.log */
  SCMP_SYS (openat), SCMP_SYS (open), SCMP_SYS (fsync), SCMP_SYS (fdatasync),
  SCMP_SYS (rename), SCMP_SYS (renameat), SCMP_SYS (renameat2), SCMP_SYS (unlinkat),
  SCMP_SYS (unlink), SCMP_SYS (fstat), SCMP_SYS (newfstatat), SCMP_SYS (statx),
  SCMP_SYS (getpid),
  /* the log's writer (outlog.c, logfile.c) rotates with the calls above
   * (renameat, unlinkat, newfstatat), and a log of one file starts over */
  SCMP_SYS (ftruncate),
  /* memory (malloc in error paths) */
  SCMP_SYS (brk), SCMP_SYS (mmap), SCMP_SYS (munmap), SCMP_SYS (mremap), SCMP_SYS (madvise),
  /* signals and leaving */
  SCMP_SYS (rt_sigreturn), SCMP_SYS (rt_sigprocmask), SCMP_SYS (rt_sigaction),
  SCMP_SYS (restart_syscall), SCMP_SYS (exit), SCMP_SYS (exit_group),
  SCMP_SYS (clock_gettime),
  /* Lock code retries a futex wait that fails: EPERM there is a busy loop,
   * not an error (seen with the sanitizers' runtime). */
  SCMP_SYS (futex),
};

typedef scmp_filter_ctx s_filter_t;

static void
s_filter_release (s_filter_t *ctx)
{
  if (*ctx)
    seccomp_release (*ctx);
}

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

/* The compiled program, from shim_sandbox_prepare to the load. */
static struct sock_filter *s_program;
static size_t s_program_len;

/* libseccomp writes the program to an fd only (2.5 has no in-memory
 * export): a memfd holds it until it is read back. */
static int
s_export (scmp_filter_ctx ctx, zcd_error_t **err)
{
  cleanup_close int fd = memfd_create ("shim-filter", MFD_CLOEXEC);
  if (fd < 0)
    return zcd_fail_errno (err, errno, "memfd for the seccomp filter");
  int rc = seccomp_export_bpf (ctx, fd);
  if (rc < 0)
    return zcd_fail_errno (err, -rc, "seccomp_export_bpf");
  struct stat st;
  if (fstat (fd, &st) < 0)
    return zcd_fail_errno (err, errno, "stat the seccomp filter");
  size_t len = (size_t) st.st_size;
  if (len == 0 || len % sizeof *s_program != 0 || len / sizeof *s_program > BPF_MAXINSNS)
    return zcd_fail (err, ZCD_E_INTERNAL, "seccomp filter of %zu bytes", len);
  struct sock_filter *program = malloc (len);
  if (program == NULL)
    return zcd_fail_errno (err, ENOMEM, "seccomp filter");
  if (pread (fd, program, len, 0) != (ssize_t) len)
    {
      free (program);
      return zcd_fail_errno (err, errno, "read back the seccomp filter");
    }
  s_program = program;
  s_program_len = len / sizeof *s_program;
  return 0;
}

int
shim_sandbox_prepare (zcd_error_t **err)
{
  if (s_program)
    return 0;
  __attribute__ ((cleanup (s_filter_release))) s_filter_t ctx
      = seccomp_init (SCMP_ACT_ERRNO (EPERM));
  if (ctx == NULL)
    return zcd_fail (err, ZCD_E_INTERNAL, "seccomp_init failed");
  for (size_t i = 0; i < sizeof s_allowed / sizeof s_allowed[0]; i++)
    {
      /* A name this architecture lacks resolves to a negative pseudo
       * number; libseccomp skips those. */
      int rc = seccomp_rule_add (ctx, SCMP_ACT_ALLOW, s_allowed[i], 0);
      if (rc < 0 && rc != -EDOM && rc != -EFAULT)
        return zcd_fail_errno (err, -rc, "seccomp rule %d", s_allowed[i]);
    }
  /* ioctl only to resize the terminal. */
  int rc = seccomp_rule_add (ctx, SCMP_ACT_ALLOW, SCMP_SYS (ioctl), 1,
                             SCMP_A1 (SCMP_CMP_EQ, (scmp_datum_t) TIOCSWINSZ));
  if (rc < 0)
    return zcd_fail_errno (err, -rc, "seccomp rule for ioctl");
  return s_export (ctx, err);
}

int
shim_sandbox_install (zcd_error_t **err)
{
#if defined(__SANITIZE_ADDRESS__)
  /* LeakSanitizer stops the world with clone and ptrace, which the filter
   * forbids: check now, and the check at exit is skipped. */
  __lsan_do_leak_check ();
#endif
  if (shim_sandbox_prepare (err) < 0)
    return -1;
  /* What seccomp_load does with the default attributes: no_new_privs (a
   * filter needs it without CAP_SYS_ADMIN), then the program, no flags. */
  if (prctl (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    return zcd_fail_errno (err, errno, "set no_new_privs");
  struct sock_fprog prog = { .len = (unsigned short) s_program_len, .filter = s_program };
  /* TSYNC: the log's writer thread (outlog.c), started before, gets the
   * same filter (and no_new_privs); a positive result names a thread that
   * could not be synchronized. */
  long rc = syscall (SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
  if (rc < 0)
    return zcd_fail_errno (err, errno, "load the seccomp filter");
  if (rc > 0)
    return zcd_fail (err, ZCD_E_INTERNAL, "seccomp: thread %ld could not take the filter", rc);
  /* The kernel keeps its own copy. */
  free (s_program);
  s_program = NULL;
  s_program_len = 0;
  return 0;
}
