/* zcd-oci run: create and start a container through zcd, relay its stdio,
 * forward our signals to it, and exit with its status, as `runc run` does.
 *
 * The daemon cannot take our file descriptors, only paths: the container's
 * stdio are FIFOs in a private 0700 directory, copied to and from our fds
 * 0-2 with poll(); their names are removed as soon as the daemon's shim has
 * opened them (the create reply), so nothing outlives a killed `run`.  A
 * fd 0-2 that is closed or /dev/null is not relayed.  The event subscription starts before the
 * create, so the exit event cannot slip by between the two.  Signals are blocked and read from a
 * signalfd, from the first instruction on, so that one arriving during the create is held and
 * forwarded afterwards, never lost nor acted on by us. */
#include "tools/zcd-oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define RELAY_BUF 65536
/* After the exit event the shim is gone (it reports the exit by exiting,
 * after copying every byte the container wrote): the FIFOs read EOF at
 * once.  These bounds only matter if something else still holds them. */
#define DRAIN_QUIET_MS 2000
#define DRAIN_MAX_MS 10000
/* While our stdin has ended but the FIFO still holds bytes the shim has not
 * taken: how often to look again before sending close_stdin. */
#define STDIN_DRAIN_TICK_MS 10

static const int s_forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2 };

static void
s_forwarded_set (sigset_t *set)
{
  sigemptyset (set);
  for (size_t i = 0; i < sizeof s_forwarded / sizeof s_forwarded[0]; i++)
    sigaddset (set, s_forwarded[i]);
}

typedef struct
{
  oci_t *o;
  const char *id;
  char dir[PATH_MAX];
  char paths[3][PATH_MAX + 16];
  int fifo[3];        /* our ends: stdin write (O_RDWR), stdout and stderr read; -1 unused */
  bool stdin_open;    /* still reading our fd 0 */
  bool stdin_closing; /* our fd 0 ended: close the container's once the FIFO is empty */
  char pending[RELAY_BUF];
  size_t pending_len;
  bool out_broken[3]; /* our fd 1 or 2 failed: its output is dropped */
  int sigfd;
  zcd_subscriber_t *sub;
  bool raw;
  struct termios saved;
} run_t;

zcd_subscriber_t *
oci_subscribe (oci_t *o, const char *id)
{
  char *evt = oci_events_endpoint (o);
  if (evt == NULL)
    return NULL;
  oci_debug (o, "events at %s", evt);
  zcd_subscriber_t *sub = zcd_subscriber_new (o->address, evt, id, ZCD_SINCE_NOW);
  free (evt);
  if (sub)
    zcd_subscriber_set_timeout (sub, o->timeout_ms);
  if (sub == NULL || zcd_subscriber_start (sub) < 0)
    {
      oci_error (o, "subscribe to events: %s",
                 sub ? zcd_subscriber_last_error (sub) : strerror (errno));
      zcd_subscriber_destroy (&sub);
    }
  return sub;
}

/* Take queued events; true (and *status) once id's init has exited. */
static bool
s_take_exit (zcd_subscriber_t *sub, const char *id, int *status)
{
  zcd_event_t *event = NULL;
  bool exited = false;
  while (!exited && zcd_subscriber_next (sub, 0, &event) == 0)
    {
      if (strcmp (event->type, "exit") == 0 && strcmp (event->id, id) == 0 && event->pid
          && strcmp (event->pid, "init") == 0)
        {
          exited = true;
          *status = event->has_status ? (int)event->status : 255;
        }
      zcd_event_destroy (&event);
    }
  return exited;
}

int
oci_wait_exit (oci_t *o, zcd_subscriber_t *sub, const char *id, int timeout_ms)
{
  struct timespec start;
  clock_gettime (CLOCK_MONOTONIC, &start);
  int status = 0;
  while (!s_take_exit (sub, id, &status))
    {
      struct timespec now;
      clock_gettime (CLOCK_MONOTONIC, &now);
      long waited = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
      if (timeout_ms >= 0 && waited >= timeout_ms)
        {
          oci_error (o, "%s did not exit within %d ms", id, timeout_ms);
          return -1;
        }
      zmq_pollitem_t item = { zcd_subscriber_socket (sub), 0, ZMQ_POLLIN, 0 };
      if (zmq_poll (&item, 1, timeout_ms < 0 ? 1000 : timeout_ms - waited) < 0 && errno != EINTR)
        {
          oci_error (o, "wait for the exit of %s: %s", id, zmq_strerror (errno));
          return -1;
        }
    }
  return status;
}

/* A closed fd, or /dev/null, needs no relay: the daemon's default for an
 * absent path is /dev/null. */
static bool
s_worth_relaying (int fd)
{
  struct stat st;
  if (fstat (fd, &st) < 0)
    return false;
  return !(S_ISCHR (st.st_mode) && st.st_rdev == makedev (1, 3));
}

static int
s_make_fifos (run_t *r)
{
  const char *tmpdir = getenv ("TMPDIR");
  if (tmpdir == NULL || tmpdir[0] != '/' || strlen (tmpdir) > PATH_MAX - 64)
    tmpdir = "/tmp";
  snprintf (r->dir, sizeof r->dir, "%s/zcd-oci-XXXXXX", tmpdir);
  /* mkdtemp makes it 0700: nobody else can reach the FIFOs */
  if (mkdtemp (r->dir) == NULL)
    {
      r->dir[0] = '\0';
      return oci_error (r->o, "mkdtemp: %s", strerror (errno));
    }
  static const char *const names[3] = { "stdin", "stdout", "stderr" };
  for (int i = 0; i < 3; i++)
    {
      if (!s_worth_relaying (i))
        continue;
      snprintf (r->paths[i], sizeof r->paths[i], "%s/%s", r->dir, names[i]);
      if (mkfifo (r->paths[i], 0600) < 0)
        {
          int saved = errno;
          r->paths[i][0] = '\0';
          return oci_error (r->o, "mkfifo: %s", strerror (saved));
        }
      /* Our ends are open before the daemon's shim opens its own (with
       * O_NONBLOCK, where a writer without a reader fails).  O_RDWR for
       * stdin: the open never blocks, and the FIFO never reads EOF, so
       * only close_stdin ends the container's input. */
      int flags = (i == 0 ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_CLOEXEC;
      if ((r->fifo[i] = open (r->paths[i], flags)) < 0)
        return oci_error (r->o, "open %s: %s", r->paths[i], strerror (errno));
    }
  r->stdin_open = r->fifo[0] >= 0;
  return 0;
}

/* Remove the FIFOs' names and their directory; open ends stay usable. */
static void
s_remove_paths (run_t *r)
{
  for (int i = 0; i < 3; i++)
    if (r->paths[i][0])
      {
        unlink (r->paths[i]);
        r->paths[i][0] = '\0';
      }
  if (r->dir[0])
    rmdir (r->dir);
  r->dir[0] = '\0';
}

static void
s_run_cleanup (run_t *r)
{
  if (r->raw)
    tcsetattr (0, TCSANOW, &r->saved);
  for (int i = 0; i < 3; i++)
    if (r->fifo[i] >= 0)
      close (r->fifo[i]);
  s_remove_paths (r);
  if (r->sigfd >= 0)
    close (r->sigfd);
  zcd_subscriber_destroy (&r->sub);
}

/* Write everything to our fd 1 or 2; a non-blocking fd we inherited waits
 * for room.  A reader that went away drops the rest, and we go on (the
 * container must not block on a full FIFO). */
static void
s_write_out (run_t *r, int fd, const char *buf, size_t len)
{
  while (len > 0 && !r->out_broken[fd])
    {
      ssize_t n = write (fd, buf, len);
      if (n > 0)
        {
          buf += n;
          len -= (size_t)n;
        }
      else if (n < 0 && errno == EAGAIN)
        {
          struct pollfd p = { fd, POLLOUT, 0 };
          poll (&p, 1, -1);
        }
      else if (!(n < 0 && errno == EINTR))
        r->out_broken[fd] = true;
    }
}

/* Copy what one output FIFO holds; false once it reads EOF. */
static bool
s_copy_out (run_t *r, int i)
{
  char buf[RELAY_BUF];
  for (;;)
    {
      ssize_t n = read (r->fifo[i], buf, sizeof buf);
      if (n > 0)
        {
          s_write_out (r, i, buf, (size_t)n);
          continue;
        }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        return true;
      close (r->fifo[i]);
      r->fifo[i] = -1;
      return false;
    }
}

/* Our stdin into the FIFO, through a buffer: a full FIFO pauses reading
 * rather than losing input. */
static void
s_copy_in (run_t *r, bool readable)
{
  if (readable && r->pending_len == 0)
    {
      ssize_t n = read (0, r->pending, sizeof r->pending);
      if (n > 0)
        r->pending_len = (size_t)n;
      else if (n == 0 || (errno != EINTR && errno != EAGAIN))
        {
          r->stdin_open = false;
          r->stdin_closing = true;
        }
    }
  if (r->pending_len)
    {
      ssize_t n = write (r->fifo[0], r->pending, r->pending_len);
      if (n > 0)
        {
          memmove (r->pending, r->pending + n, r->pending_len - (size_t)n);
          r->pending_len -= (size_t)n;
        }
    }
}

/* The shim closes the container's stdin on close_stdin at once, dropping
 * whatever it has not read from the FIFO yet: so the request goes only
 * when our bytes are all out of the FIFO (FIONREAD on our own end). */
static void
s_maybe_close_stdin (run_t *r)
{
  int queued = 0;
  if (!r->stdin_closing || r->pending_len || ioctl (r->fifo[0], FIONREAD, &queued) < 0 || queued)
    return;
  r->stdin_closing = false;
  close (r->fifo[0]);
  r->fifo[0] = -1;
  zcd_reply_t *reply = NULL;
  if (zcd_client_close_stdin (oci_client (r->o), r->id, "init", &reply) < 0
      && strcmp (oci_reply_code (reply), "not_found") != 0)
    oci_debug (r->o, "close_stdin: %s", zcd_client_last_error (r->o->client));
  zcd_reply_destroy (&reply);
}

static void
s_forward_signals (run_t *r)
{
  struct signalfd_siginfo info;
  while (read (r->sigfd, &info, sizeof info) == (ssize_t)sizeof info)
    {
      int sig = (int)info.ssi_signo;
      oci_debug (r->o, "forwarding signal %d to %s", sig, r->id);
      zcd_reply_t *reply = NULL;
      /* not_found: the container exited meanwhile; its exit event follows */
      if (zcd_client_signal (oci_client (r->o), r->id, "init", sig, false, &reply) < 0
          && strcmp (oci_reply_code (reply), "not_found") != 0)
        oci_error (r->o, "forward signal %d: %s", sig, zcd_client_last_error (r->o->client));
      zcd_reply_destroy (&reply);
    }
}

static int64_t
s_now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_drain_output (run_t *r)
{
  int64_t give_up = s_now_ms () + DRAIN_MAX_MS;
  while ((r->fifo[1] >= 0 || r->fifo[2] >= 0) && s_now_ms () < give_up)
    {
      struct pollfd fds[2] = { { r->fifo[1], POLLIN, 0 }, { r->fifo[2], POLLIN, 0 } };
      int n = poll (fds, 2, DRAIN_QUIET_MS);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      for (int i = 0; i < 2; i++)
        if (fds[i].revents && r->fifo[i + 1] >= 0)
          s_copy_out (r, i + 1);
    }
}

/* One poll over what is live now.  Only live fds are listed: poll reports
 * a hang-up even without asked-for events, which would spin. */
static int
s_poll_once (run_t *r, bool *sig, bool *in, bool *in_room, bool out[3])
{
  zmq_pollitem_t items[6];
  int slot[6], n = 0;
  items[n] = (zmq_pollitem_t){ zcd_subscriber_socket (r->sub), 0, ZMQ_POLLIN, 0 };
  slot[n++] = -1;
  items[n] = (zmq_pollitem_t){ NULL, r->sigfd, ZMQ_POLLIN, 0 };
  slot[n++] = 3;
  if (r->stdin_open && r->pending_len == 0)
    {
      items[n] = (zmq_pollitem_t){ NULL, 0, ZMQ_POLLIN, 0 };
      slot[n++] = 4;
    }
  if (r->fifo[0] >= 0 && r->pending_len)
    {
      items[n] = (zmq_pollitem_t){ NULL, r->fifo[0], ZMQ_POLLOUT, 0 };
      slot[n++] = 0;
    }
  for (int i = 1; i < 3; i++)
    if (r->fifo[i] >= 0)
      {
        items[n] = (zmq_pollitem_t){ NULL, r->fifo[i], ZMQ_POLLIN, 0 };
        slot[n++] = i;
      }
  if (zmq_poll (items, n, r->stdin_closing ? STDIN_DRAIN_TICK_MS : -1) < 0)
    return errno == EINTR ? 0 : -1;
  for (int k = 0; k < n; k++)
    if (items[k].revents && slot[k] >= 0)
      {
        if (slot[k] == 3)
          *sig = true;
        else if (slot[k] == 4)
          *in = true;
        else if (slot[k] == 0)
          *in_room = true;
        else
          out[slot[k]] = true;
      }
  return 0;
}

/* Relay until the init's exit event; its status, or -1 on a local error. */
static int
s_relay (run_t *r)
{
  int status = 0;
  while (!s_take_exit (r->sub, r->id, &status))
    {
      bool sig = false, in = false, in_room = false, out[3] = { false, false, false };
      if (s_poll_once (r, &sig, &in, &in_room, out) < 0)
        {
          oci_error (r->o, "poll: %s", zmq_strerror (errno));
          return -1;
        }
      if (sig)
        s_forward_signals (r);
      if (in || in_room)
        s_copy_in (r, in);
      s_maybe_close_stdin (r);
      for (int i = 1; i < 3; i++)
        if (out[i] && r->fifo[i] >= 0)
          s_copy_out (r, i);
    }
  s_drain_output (r);
  return status;
}

/* config.json asked for a terminal: the shim allocates it and relays it
 * to our FIFOs; when our stdin is a terminal too it goes raw, so that keys
 * reach the container's line discipline rather than ours. */
static void
s_raw_terminal (run_t *r)
{
  if (!isatty (0) || tcgetattr (0, &r->saved) < 0)
    return;
  struct termios raw = r->saved;
  cfmakeraw (&raw);
  if (tcsetattr (0, TCSANOW, &raw) == 0)
    r->raw = true;
  struct winsize ws;
  if (ioctl (0, TIOCGWINSZ, &ws) == 0 && ws.ws_col && ws.ws_row)
    zcd_client_resize (oci_client (r->o), r->id, "init", ws.ws_col, ws.ws_row, NULL);
}

static int
s_create (run_t *r, const oci_bundle_t *b, const oci_create_args_t *a)
{
  zcd_create_opts_t opts = {
    .no_pivot_root = a->no_pivot,
    .stdin_path = r->paths[0][0] ? r->paths[0] : NULL,
    .stdout_path = r->paths[1][0] ? r->paths[1] : NULL,
    .stderr_path = r->paths[2][0] ? r->paths[2] : NULL,
  };
  uint64_t pid = 0;
  int rc = oci_send_create (r->o, r->id, b->bundle, &opts, &pid);
  if (rc)
    return rc;
  oci_debug (r->o, "%s runs, init pid %llu", r->id, (unsigned long long)pid);
  /* The shim opened the FIFOs before the init ran: their names are of no
   * more use, and once gone they cannot outlive us (Slurm may SIGKILL a
   * `run` whose container ignores SIGTERM). */
  s_remove_paths (r);
  if (b->terminal)
    s_raw_terminal (r);
  return a->pid_file ? oci_write_pid_file (r->o, a->pid_file, pid) : 0;
}

static int
s_run (oci_t *o, const oci_create_args_t *a)
{
  const char *id = a->id;
  oci_bundle_t b;
  if (oci_bundle_load (o, a->bundle, &b, false) < 0)
    return OCI_EXIT_FAIL;
  if (a->detach)
    {
      int rc = oci_create_detached (o, id, b.bundle, a->pid_file, a->no_pivot);
      oci_bundle_free (&b);
      return rc;
    }
  run_t *r = calloc (1, sizeof *r);
  if (r == NULL)
    return oci_error (o, "out of memory");
  r->o = o;
  r->id = id;
  r->fifo[0] = r->fifo[1] = r->fifo[2] = -1;
  sigset_t set;
  s_forwarded_set (&set);
  /* The mask was set before any ZeroMQ thread existed (see oci_cmd_run):
   * this fd gets every forwarded signal sent to us. */
  r->sigfd = signalfd (-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  int rc = r->sigfd < 0 ? oci_error (o, "signalfd: %s", strerror (errno)) : 0;
  if (rc == 0 && (r->sub = oci_subscribe (o, id)) == NULL)
    rc = OCI_EXIT_FAIL;
  if (rc == 0)
    rc = s_make_fifos (r);
  if (rc == 0)
    rc = s_create (r, &b, a);
  if (rc == 0)
    {
      rc = s_relay (r);
      rc = rc < 0 ? OCI_EXIT_FAIL : rc;
      oci_debug (o, "%s exited with status %d", id, rc);
    }
  s_run_cleanup (r);
  free (r);
  oci_bundle_free (&b);
  return rc;
}

int
oci_cmd_run (oci_t *o, int argc, char **argv)
{
  /* Before anything starts a thread (ZeroMQ's I/O thread): threads
   * inherit the mask, so no thread of ours can take a forwarded signal's
   * default action. */
  sigset_t set;
  s_forwarded_set (&set);
  sigprocmask (SIG_BLOCK, &set, NULL);
  oci_create_args_t a;
  int rc = oci_create_args (o, argc, argv, &a);
  return rc ? rc : s_run (o, &a);
}
