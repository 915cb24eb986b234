/* After the start: relay, obey control records, reap until the container
 * process exits, record its status, and (init) have the runtime delete the
 * container.  The shim is a child subreaper, so orphans of the container's
 * process tree land here too: every child is reaped until none is ready,
 * and only the container process's status counts. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/shimproto.h"
#include "shim/shim.h"

/* The exit drain ends when the output pipes read EOF (the writers are
 * gone: the common case, at once), after DRAIN_IDLE_MS without a byte, or
 * DRAIN_TOTAL_MS after the exit, whichever comes first. */
#define DRAIN_IDLE_MS 500
#define DRAIN_TOTAL_MS 1000

/* The helper's life: wait for the go byte, then `delete`, falling back to
 * `delete --force`; the outcome goes back on report_fd as one write, a
 * status byte ('0' done, '1' failed) and the error text, so the shim
 * carries on as soon as the runtime is through, not once this process has
 * been torn down.  EOF instead of the byte means the shim died: the daemon
 * cleans up then. */
static void __attribute__ ((noreturn))
s_delete_helper_main (shim_t *self, int go_fd, int report_fd)
{
  self->is_helper = true;
  char go;
  ssize_t n;
  do
    n = read (go_fd, &go, 1);
  while (n < 0 && errno == EINTR);
  if (n != 1)
    _exit (0);
  static const int no_stdio[3] = { -1, -1, -1 };
  const char *plain[] = { "delete", self->args.id, NULL };
  const char *force[] = { "delete", "--force", self->args.id, NULL };
  zcd_error_t *err = NULL;
  bool deleted = shim_runtime_run (self, plain, no_stdio, &err) == 0;
  if (!deleted)
    {
      zcd_error_free (&err);
      deleted = shim_runtime_run (self, force, no_stdio, &err) == 0;
    }
  if (deleted)
    _exit (write (report_fd, "0", 1) == 1 ? 0 : 1);
  /* Less than PIPE_BUF bytes: one write, read whole by one read. */
  dprintf (report_fd, "1%.2040s", err->msg);
  _exit (1);
}

/* Close everything but the helper's two pipes: it must not hold the exit
 * FIFO, the container's stdio or the pty. */
static void
s_close_other_fds (int keep_a, int keep_b)
{
  int lo = keep_a < keep_b ? keep_a : keep_b, hi = keep_a < keep_b ? keep_b : keep_a;
  close_range (3, (unsigned) lo - 1, 0);
  if (hi > lo + 1)
    close_range ((unsigned) lo + 1, (unsigned) hi - 1, 0);
  close_range ((unsigned) hi + 1, ~0U, 0);
}

int
shim_delete_helper_fork (shim_t *self, zcd_error_t **err)
{
  int go[2], report[2];
  if (pipe2 (go, O_CLOEXEC) < 0)
    return zcd_fail_errno (err, errno, "pipe for the delete helper");
  if (pipe2 (report, O_CLOEXEC) < 0)
    {
      close (go[0]);
      close (go[1]);
      return zcd_fail_errno (err, errno, "pipe for the delete helper");
    }
  pid_t pid = fork ();
  if (pid < 0)
    return zcd_fail_errno (err, errno, "fork the delete helper");
  if (pid == 0)
    {
      s_close_other_fds (go[0], report[1]);
      s_delete_helper_main (self, go[0], report[1]);
    }
  close (go[0]);
  close (report[1]);
  self->delete_helper_pid = pid;
  self->delete_helper_fd = go[1];
  self->delete_report_fd = report[0];
  return 0;
}

int
shim_signals_block_child (shim_t *self, zcd_error_t **err)
{
  sigset_t set;
  sigemptyset (&set);
  sigaddset (&set, SIGCHLD);
  if (sigprocmask (SIG_BLOCK, &set, NULL) < 0)
    return zcd_fail_errno (err, errno, "block SIGCHLD");
  self->signal_fd = signalfd (-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (self->signal_fd < 0)
    return zcd_fail_errno (err, errno, "signalfd");
  return 0;
}

static int
s_status_code (int status)
{
  if (WIFEXITED (status))
    return WEXITSTATUS (status);
  if (WIFSIGNALED (status))
    return 128 + WTERMSIG (status);
  return 255;
}

/* Reap every child that is ready; a helper that is gone is remembered. */
static void
s_reap_ready (shim_t *self)
{
  for (;;)
    {
      int status = 0;
      pid_t pid = waitpid (-1, &status, WNOHANG);
      if (pid < 0 && errno == EINTR)
        continue;
      if (pid <= 0)
        return;
      if (pid == self->pid && !self->exited)
        {
          self->exited = true;
          self->exit_status = s_status_code (status);
        }
      else if (pid == self->delete_helper_pid)
        {
          shim_log (self, "delete helper ended early (status %#x)", status);
          self->delete_helper_pid = -1;
        }
    }
}

static void
s_drain_signal_fd (shim_t *self)
{
  struct signalfd_siginfo info;
  while (read (self->signal_fd, &info, sizeof info) == (ssize_t) sizeof info)
    ;
}

static void
s_handle_control (shim_t *self, const struct zcd_control_record *rec)
{
  if (rec->magic != ZCD_CONTROL_MAGIC)
    {
      shim_log (self, "control record with bad magic %#x", rec->magic);
      return;
    }
  if (rec->type == ZCD_CONTROL_CLOSE_STDIN)
    shim_relay_close_input (&self->stdin_relay);
  else if (rec->type == ZCD_CONTROL_RESIZE)
    shim_console_resize (self, rec->width, rec->height);
  else
    shim_log (self, "unknown control record type %u", rec->type);
}

static void
s_read_control (shim_t *self)
{
  for (;;)
    {
      ssize_t n = read (self->control_fd, self->control_buf + self->control_len,
                        sizeof self->control_buf - self->control_len);
      if (n <= 0)
        return;
      self->control_len += (size_t) n;
      if (self->control_len == sizeof self->control_buf)
        {
          struct zcd_control_record rec;
          memcpy (&rec, self->control_buf, sizeof rec);
          self->control_len = 0;
          s_handle_control (self, &rec);
        }
    }
}

enum
{
  SLOT_SIGNAL,
  SLOT_CONTROL,
  SLOT_RELAYS, /* then one per relay */
  RELAY_COUNT = 3,
  SLOT_COUNT = SLOT_RELAYS + RELAY_COUNT
};

static const char *const s_relay_names[RELAY_COUNT] = { "stdout", "stderr", "stdin" };

static void
s_relays (shim_t *self, shim_relay_t *relays[RELAY_COUNT])
{
  relays[0] = &self->stdout_relay;
  relays[1] = &self->stderr_relay;
  relays[2] = &self->stdin_relay;
}

/* An output relay that started discarding says so once, when it starts
 * (the client's file ends there); how much was lost, once, at the exit. */
static void
s_log_relay_errors (shim_t *self, bool at_exit)
{
  shim_relay_t *relays[RELAY_COUNT];
  s_relays (self, relays);
  for (int i = 0; i < RELAY_COUNT; i++)
    {
      shim_relay_t *relay = relays[i];
      if (!relay->discard_on_error || relay->dst_error == 0)
        continue;
      if (!relay->error_logged)
        shim_log (self, "%s: %s; output dropped from now on", s_relay_names[i],
                  strerror (relay->dst_error));
      relay->error_logged = true;
      if (at_exit)
        shim_log (self, "%s: %llu bytes dropped", s_relay_names[i], relay->dropped);
    }
}

static void
s_poll_once (shim_t *self)
{
  shim_relay_t *relays[RELAY_COUNT];
  s_relays (self, relays);
  struct pollfd fds[SLOT_COUNT] = {
    [SLOT_SIGNAL] = { .fd = self->signal_fd, .events = POLLIN },
    [SLOT_CONTROL] = { .fd = self->control_fd, .events = POLLIN },
  };
  shim_outlog_round_begin ();
  for (int i = 0; i < RELAY_COUNT; i++)
    shim_relay_watch (relays[i], &fds[SLOT_RELAYS + i]);
  if (poll (fds, SLOT_COUNT, shim_outlog_poll_ms ()) < 0)
    return;
  /* Control first: a resize sent before some input is in effect by the
   * time the container reads that input. */
  if (fds[SLOT_CONTROL].revents)
    s_read_control (self);
  for (int i = 0; i < RELAY_COUNT; i++)
    shim_relay_on_ready (relays[i], &fds[SLOT_RELAYS + i]);
  s_log_relay_errors (self, false);
  if (fds[SLOT_SIGNAL].revents)
    {
      s_drain_signal_fd (self);
      s_reap_ready (self);
    }
}

/* Tell the helper to delete the container. */
static void
s_start_delete_helper (shim_t *self)
{
  if (self->delete_helper_pid <= 0)
    return;
  if (write (self->delete_helper_fd, "d", 1) != 1)
    shim_log (self, "cannot signal the delete helper: %s", strerror (errno));
  close (self->delete_helper_fd);
  self->delete_helper_fd = -1;
}

/* Wait for the helper's report (EOF if it died without one).  The helper
 * itself is not waited for: it exits right after its report, and once the
 * shim is gone the daemon (the subreaper) reaps it. */
static void
s_finish_delete_helper (shim_t *self)
{
  if (self->delete_report_fd < 0)
    return;
  char text[2048];
  ssize_t n;
  do
    n = read (self->delete_report_fd, text, sizeof text - 1);
  while (n < 0 && errno == EINTR);
  if (n <= 0 && self->delete_helper_pid > 0)
    shim_log (self, "the delete helper ended without a report");
  else if (n > 0 && text[0] != '0')
    {
      text[n] = '\0';
      shim_log (self, "delete failed: %s", text + 1);
    }
  close (self->delete_report_fd);
  self->delete_report_fd = -1;
  self->delete_helper_pid = -1;
}

int
shim_reap_loop (shim_t *self)
{
  /* A process that exited before SIGCHLD was blocked left no signal in
   * the signalfd: look once before sleeping. */
  s_reap_ready (self);
  while (!self->exited)
    s_poll_once (self);
  /* What the process wrote before it exited reaches the client's paths
   * before its exit is reported; what orphans write on is not waited for
   * (an exec's exit is reported within DRAIN_TOTAL_MS). */
  shim_stdio_drain (self, DRAIN_IDLE_MS, DRAIN_TOTAL_MS);
  s_log_relay_errors (self, true);
  unsigned long long log_dropped = shim_outlog_finish (SHIM_LOG_FLUSH_MS);
  if (log_dropped > 0)
    shim_log (self, "log: %llu bytes of output dropped (see log-dropped)", log_dropped);
  /* The delete runs while exitStatus is written: the daemon hears of
   * neither before the shim exits (the exit FIFO), and a shim killed in
   * between leaves no exitStatus, which the daemon answers with its own
   * `delete --force` as for any killed shim. */
  s_start_delete_helper (self);
  zcd_error_t *err = NULL;
  if (shim_commit_exit_status (self, &err) < 0)
    {
      shim_log (self, "write exitStatus: %s", err->msg);
      zcd_error_free (&err);
    }
  s_finish_delete_helper (self);
  s_reap_ready (self);
  return 0;
}
