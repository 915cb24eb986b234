/* The container's stdio.  Without a terminal, fds 0-2 are pipes the shim
 * relays to and from the client's paths: pipes are what CRIU can
 * checkpoint and restore, and stdin's lets a close_stdin record end the
 * input although the client's FIFO never ends.  With a terminal, the shim
 * copies pty master -> stdout path and stdin path -> master.  With
 * --log-path the output relays (pipes or master) feed the log's ring
 * instead of a path (outlog.c). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "shim/shim.h"

/* FIFOs are opened read-write: open never blocks waiting for a peer, a
 * writer's close never reads as EOF (for stdin only close_stdin ends the
 * stream), and a reader's absence never raises SIGPIPE.  O_NONBLOCK all
 * the same: a FIFO put in place between the lstat and the open gets the
 * other flags, and must not block the shim either (written alone it fails
 * with ENXIO, read alone it reads as EOF); the relay takes EAGAIN in its
 * stride.  O_NOCTTY: a path may name a terminal, and the shim leads its
 * session (main.c), so an open without it would make that terminal the
 * shim's controlling one. */
static int
s_open_output (const char *path, zcd_error_t **err)
{
  if (path == NULL)
    path = "/dev/null";
  struct stat st;
  /* A client's path is used as named: a symlink in its last component is
   * refused (the daemon already said so at admission; this closes the
   * window between its check and this open). */
  int flags = O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC;
  if (lstat (path, &st) == 0 && S_ISFIFO (st.st_mode))
    flags = O_RDWR | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC;
  int fd = open (path, flags, 0644);
  if (fd < 0)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "open `%s`: %s", path,
                     errno == ELOOP ? "a symbolic link" : strerror (errno));
  return fd;
}

static int
s_open_input (const char *path, zcd_error_t **err)
{
  struct stat st;
  int flags = O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC;
  if (lstat (path, &st) == 0 && S_ISFIFO (st.st_mode))
    flags = O_RDWR | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC;
  int fd = open (path, flags);
  if (fd < 0)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "open `%s`: %s", path,
                     errno == ELOOP ? "a symbolic link" : strerror (errno));
  return fd;
}

static int
s_set_nonblock (int fd)
{
  int flags = fcntl (fd, F_GETFL);
  return flags < 0 ? -1 : fcntl (fd, F_SETFL, flags | O_NONBLOCK);
}

/* The container writes into a pipe the shim copies to the client's path
 * (a missing path is /dev/null, copied all the same): CRIU can dump a pipe
 * and reconnect it on restore, not a host file opened outside the
 * container's mounts (checkpoint.c, DESIGN.md).  The destination is
 * non-blocking (s_open_output), so a client FIFO nobody reads stops the
 * copying, and then the container, never the shim. */
static int
s_output_pipe (shim_relay_t *relay, const char *path, int *container_end, zcd_error_t **err)
{
  int dst = s_open_output (path, err);
  if (dst < 0)
    return -1;
  int pipe_fds[2];
  if (pipe2 (pipe_fds, O_CLOEXEC) < 0)
    {
      close (dst);
      return zcd_fail_errno (err, errno, "pipe for output");
    }
  s_set_nonblock (pipe_fds[0]);
  *container_end = pipe_fds[1];
  shim_relay_init (relay, pipe_fds[0], dst, false);
  relay->discard_on_error = true;
  return 0;
}

/* stdin is a pipe too, for the same reason; without a path its write end
 * is closed at once, which reads as EOF, as /dev/null would. */
static int
s_input_pipe (shim_t *self, zcd_error_t **err)
{
  int source = -1;
  if (self->args.stdin_path && (source = s_open_input (self->args.stdin_path, err)) < 0)
    return -1;
  int pipe_fds[2];
  if (pipe2 (pipe_fds, O_CLOEXEC) < 0)
    {
      if (source >= 0)
        close (source);
      return zcd_fail_errno (err, errno, "pipe for stdin");
    }
  self->container_stdio[0] = pipe_fds[0];
  if (source < 0)
    {
      close (pipe_fds[1]);
      return 0;
    }
  s_set_nonblock (pipe_fds[1]);
  shim_relay_init (&self->stdin_relay, source, pipe_fds[1], false);
  return 0;
}

/* With --log-path both output pipes feed the log's ring (outlog.c): the
 * relay reads them as ever, and the writer thread does the disk. */
static int
s_log_pipe (shim_relay_t *relay, int *container_end, zcd_error_t **err)
{
  int pipe_fds[2];
  if (pipe2 (pipe_fds, O_CLOEXEC) < 0)
    return zcd_fail_errno (err, errno, "pipe for output");
  s_set_nonblock (pipe_fds[0]);
  *container_end = pipe_fds[1];
  shim_relay_init (relay, pipe_fds[0], -1, false);
  relay->to_log = true;
  return 0;
}

static int
s_open_plain (shim_t *self, zcd_error_t **err)
{
  if (self->args.log_path)
    {
      if (s_log_pipe (&self->stdout_relay, &self->container_stdio[1], err) < 0
          || s_log_pipe (&self->stderr_relay, &self->container_stdio[2], err) < 0)
        return -1;
      return s_input_pipe (self, err);
    }
  if (s_output_pipe (&self->stdout_relay, self->args.stdout_path, &self->container_stdio[1], err)
          < 0
      || s_output_pipe (&self->stderr_relay, self->args.stderr_path, &self->container_stdio[2],
                        err)
             < 0)
    return -1;
  return s_input_pipe (self, err);
}

int
shim_stdio_open (shim_t *self, zcd_error_t **err)
{
  if (self->args.log_path && shim_outlog_open (&self->args, err) < 0)
    return -1;
  if (!self->args.terminal)
    return s_open_plain (self, err);
  /* The relays get their master end once the runtime sends it. */
  if (self->args.log_path)
    {
      shim_relay_init (&self->stdout_relay, -1, -1, false);
      self->stdout_relay.to_log = true;
    }
  else
    {
      int out = s_open_output (self->args.stdout_path, err);
      if (out < 0)
        return -1;
      shim_relay_init (&self->stdout_relay, -1, out, false);
      self->stdout_relay.discard_on_error = true;
    }
  if (self->args.stdin_path)
    {
      int source = s_open_input (self->args.stdin_path, err);
      if (source < 0)
        return -1;
      shim_relay_init (&self->stdin_relay, source, -1, true);
    }
  return 0;
}

void
shim_stdio_after_start (shim_t *self)
{
  for (int i = 0; i < 3; i++)
    if (self->container_stdio[i] >= 0)
      {
        close (self->container_stdio[i]);
        self->container_stdio[i] = -1;
      }
}

void
shim_relay_init (shim_relay_t *self, int src, int dst, bool dst_is_terminal)
{
  self->src = src;
  self->dst = dst;
  self->dst_is_terminal = dst_is_terminal;
  self->off = self->len = 0;
  self->close_dst_when_drained = self->eot_when_drained = self->finishing_input = false;
  self->discard_on_error = self->error_logged = self->to_log = false;
  self->dst_error = 0;
  self->dropped = 0;
}

static void
s_close (int *fd)
{
  if (*fd >= 0)
    close (*fd);
  *fd = -1;
}

/* The destination failed for good; the source still runs dry. */
static bool
s_discarding (const shim_relay_t *self)
{
  return self->dst < 0 && self->dst_error != 0 && self->discard_on_error;
}

/* Nothing pending: carry out a deferred close_stdin. */
static void
s_after_drained (shim_relay_t *self)
{
  if (self->eot_when_drained && self->dst >= 0)
    {
      /* ^D ends the line discipline's read at the start of a line: the
       * terminal's way of saying EOF, since the master stays open. */
      const char eot = 4;
      if (write (self->dst, &eot, 1) < 0 && errno == EAGAIN)
        return;
      self->eot_when_drained = false;
    }
  if (self->close_dst_when_drained)
    {
      s_close (&self->dst);
      self->close_dst_when_drained = false;
    }
}

/* A write failed otherwise than EAGAIN: the reader is gone (EPIPE, EIO) or
 * the file cannot grow (ENOSPC, EFBIG), and nothing will ever drain this.
 * For stdin (the container closed its end) the relay just ends; an output
 * relay goes on reading and throws the bytes away: before the relay, the
 * container got this error itself, and it must not block on a full pipe
 * instead. */
static void
s_dst_failed (shim_relay_t *self, int error)
{
  if (self->discard_on_error)
    self->dropped += self->len;
  self->dst_error = error;
  self->off = self->len = 0;
  self->eot_when_drained = self->close_dst_when_drained = false;
  s_close (&self->dst);
}

static void s_finish_input (shim_relay_t *self);

/* Write what is pending, until done or the destination is full. */
static void
s_write_pending (shim_relay_t *self)
{
  while (self->len > 0 && self->dst >= 0)
    {
      ssize_t n = write (self->dst, self->buf + self->off, self->len);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          if (errno == EAGAIN)
            return;
          s_dst_failed (self, errno);
          return;
        }
      self->off += (size_t) n;
      self->len -= (size_t) n;
    }
  if (self->len == 0)
    self->off = 0;
}

static void
s_on_writable (shim_relay_t *self)
{
  s_write_pending (self);
  if (self->len > 0)
    return;
  if (self->finishing_input)
    s_finish_input (self);
  else
    s_after_drained (self);
}

/* close_stdin: what the client wrote before it still reaches the
 * container (zcd-oci found it dropped: a FIFO's unread bytes went with its
 * close).  What was written before is what a FIFO or pipe holds at that
 * moment (FIONREAD): the input ends there, so a writer that never stops
 * cannot postpone it; a file or device ends at once, as before.  A full
 * destination makes it wait for room, as any relay does. */
static void
s_finish_input (shim_relay_t *self)
{
  for (;;)
    {
      if (self->len > 0)
        {
          s_write_pending (self);
          if (self->len > 0)
            return; /* POLLOUT brings us back */
        }
      if (self->src < 0 || self->dst < 0)
        break;
      if (self->finish_left == 0)
        break;
      size_t want = self->finish_left < sizeof self->buf ? self->finish_left : sizeof self->buf;
      ssize_t n = read (self->src, self->buf, want);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      self->finish_left -= (size_t) n;
      self->off = 0;
      self->len = (size_t) n;
    }
  s_close (&self->src);
  self->finishing_input = false;
  s_after_drained (self);
}

static void
s_on_readable (shim_relay_t *self)
{
  if (self->src < 0 || self->len > 0)
    return;
  ssize_t n = self->to_log ? shim_outlog_read (self->src, self->buf, sizeof self->buf)
                           : read (self->src, self->buf, sizeof self->buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN))
    return;
  if (n <= 0)
    {
      /* EOF of a regular file used as stdin, or EIO of a master whose
       * slave side is closed: the stream is over. */
      if (n == 0)
        shim_relay_close_input (self);
      else
        s_close (&self->src);
      return;
    }
  if (self->to_log)
    return; /* in the ring (or counted there as dropped) */
  if (s_discarding (self))
    {
      self->dropped += (size_t) n;
      return;
    }
  self->off = 0;
  self->len = (size_t) n;
  s_on_writable (self);
}

void
shim_relay_watch (const shim_relay_t *self, struct pollfd *pfd)
{
  /* A relay reads only while its buffer is empty and writes only while it
   * is not: a stalled destination stops the reading, never the shim.  A
   * ^D that met a full terminal waits for room as pending bytes do. */
  pfd->revents = 0;
  if (self->dst >= 0 && (self->len > 0 || self->eot_when_drained))
    {
      pfd->fd = self->dst;
      pfd->events = POLLOUT;
    }
  else if (self->src >= 0 && self->to_log && shim_outlog_holding ())
    pfd->fd = -1;
  else if (self->src >= 0 && (self->dst >= 0 || self->to_log || s_discarding (self)))
    {
      pfd->fd = self->src;
      pfd->events = POLLIN;
    }
  else
    pfd->fd = -1;
}

void
shim_relay_on_ready (shim_relay_t *self, const struct pollfd *pfd)
{
  if (pfd->fd < 0 || pfd->revents == 0)
    return;
  if (pfd->events == POLLOUT)
    s_on_writable (self);
  else
    s_on_readable (self);
}

void
shim_relay_close_input (shim_relay_t *self)
{
  if (self->dst_is_terminal)
    self->eot_when_drained = true;
  else
    self->close_dst_when_drained = true;
  self->finishing_input = true;
  self->finish_left = 0;
  struct stat st;
  int queued = 0;
  if (self->src >= 0 && fstat (self->src, &st) == 0 && S_ISFIFO (st.st_mode)
      && ioctl (self->src, FIONREAD, &queued) == 0 && queued > 0)
    self->finish_left = (size_t) queued;
  s_finish_input (self);
}

static long long
s_now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Both output relays in one poll: a stream that goes quiet does not hold
 * back the other's bytes, and the whole drain has one deadline.  The
 * common end is at once: the writers are gone and both pipes read EOF.
 * An orphan that keeps a pipe open (and talks now and then) holds the exit
 * report back by total_ms at most. */
void
shim_stdio_drain (shim_t *self, int idle_ms, int total_ms)
{
  shim_relay_t *relays[2] = { &self->stdout_relay, &self->stderr_relay };
  long long deadline = s_now_ms () + total_ms;
  for (;;)
    {
      struct pollfd fds[2];
      bool any = false;
      shim_outlog_round_begin ();
      for (int i = 0; i < 2; i++)
        {
          shim_relay_watch (relays[i], &fds[i]);
          any = any || fds[i].fd >= 0;
        }
      /* A full ring the writer is emptying: the pipes wait, not end. */
      int hold_ms = shim_outlog_poll_ms ();
      bool holding = hold_ms >= 0;
      long long left = deadline - s_now_ms ();
      if ((!any && !holding) || left <= 0)
        return;
      int wait_ms = left < idle_ms ? (int) left : idle_ms;
      if (holding && hold_ms < wait_ms)
        wait_ms = hold_ms;
      int rc = poll (fds, 2, wait_ms);
      if (rc < 0 && errno == EINTR)
        continue;
      if (rc == 0 && holding)
        continue;
      if (rc <= 0)
        return;
      for (int i = 0; i < 2; i++)
        shim_relay_on_ready (relays[i], &fds[i]);
    }
}
