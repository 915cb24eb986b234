/* --attach: the process's stdio are FIFOs in a private directory; zctr
 * copies its own stdio through them until the process's exit event, then
 * exits with the process's status.  The subscriber exists before the
 * request is sent, so the exit cannot slip by unseen. */
#include "tools/zctr/zctr.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define ATTACH_BUF 65536
/* After the exit event, output still in the pipes is copied until both
 * reach EOF or stay silent this long (a grandchild may hold them open). */
#define DRAIN_QUIET_MS 300
#define DRAIN_MAX_MS 5000

struct zctr_attach
{
  zctr_t *z;
  char *id, *pid;
  bool tty;
  char dir[64];
  char paths[3][96];
  int fifo[3]; /* our ends: stdin write (O_RDWR), stdout and stderr read */
  bool stdin_open;
  char pending[ATTACH_BUF]; /* our stdin read but not yet taken by the FIFO */
  size_t pending_len;
  zcd_subscriber_t *sub;
  bool raw;
  struct termios saved;
  bool exited;
  int status;
};

void
zctr_attach_destroy (zctr_attach_t **a_p)
{
  if (a_p == NULL || *a_p == NULL)
    return;
  zctr_attach_t *a = *a_p;
  if (a->raw)
    tcsetattr (0, TCSANOW, &a->saved);
  for (int i = 0; i < 3; i++)
    {
      if (a->fifo[i] >= 0)
        close (a->fifo[i]);
      if (a->paths[i][0])
        unlink (a->paths[i]);
    }
  if (a->dir[0])
    rmdir (a->dir);
  zcd_subscriber_destroy (&a->sub);
  free (a->id);
  free (a->pid);
  free (a);
  *a_p = NULL;
}

const char *
zctr_attach_path (const zctr_attach_t *a, int fd)
{
  return a->paths[fd];
}

static int
s_make_fifos (zctr_attach_t *a)
{
  strcpy (a->dir, "/tmp/zctr-attach-XXXXXX");
  if (mkdtemp (a->dir) == NULL)
    {
      a->dir[0] = '\0';
      return zctr_error (-1, "attach: mkdtemp: %s", strerror (errno));
    }
  static const char *const names[3] = { "stdin", "stdout", "stderr" };
  for (int i = 0; i < 3; i++)
    {
      snprintf (a->paths[i], sizeof a->paths[i], "%s/%s", a->dir, names[i]);
      if (mkfifo (a->paths[i], 0600) < 0)
        {
          int saved = errno;
          a->paths[i][0] = '\0';
          return zctr_error (-1, "attach: mkfifo: %s", strerror (saved));
        }
    }
  /* O_RDWR on the stdin FIFO: opening never blocks, and the shim's
   * blocking open for reading finds a writer.  Reading ends are
   * non-blocking: no writer yet is not an error. */
  a->fifo[0] = open (a->paths[0], O_RDWR | O_NONBLOCK | O_CLOEXEC);
  a->fifo[1] = open (a->paths[1], O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  a->fifo[2] = open (a->paths[2], O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (a->fifo[0] < 0 || a->fifo[1] < 0 || a->fifo[2] < 0)
    return zctr_error (-1, "attach: open FIFO: %s", strerror (errno));
  a->stdin_open = true;
  return 0;
}

zctr_attach_t *
zctr_attach_prepare (zctr_t *z, const char *id, const char *pid, bool tty)
{
  zctr_attach_t *a = calloc (1, sizeof *a);
  if (a == NULL)
    return NULL;
  a->z = z;
  a->fifo[0] = a->fifo[1] = a->fifo[2] = -1;
  a->id = strdup (id);
  a->pid = strdup (pid);
  a->tty = tty;
  if (a->id == NULL || a->pid == NULL || s_make_fifos (a) < 0)
    {
      zctr_attach_destroy (&a);
      return NULL;
    }
  a->sub = zcd_subscriber_new (z->address, z->events_address, id, ZCD_SINCE_NOW);
  if (a->sub)
    zcd_subscriber_set_timeout (a->sub, z->timeout_ms);
  if (a->sub == NULL || zcd_subscriber_start (a->sub) < 0)
    {
      zctr_error (-1, "attach: subscribe to events: %s",
                  a->sub ? zcd_subscriber_last_error (a->sub) : strerror (errno));
      zctr_attach_destroy (&a);
      return NULL;
    }
  return a;
}

static void
s_raw_terminal (zctr_attach_t *a)
{
  if (!a->tty || !isatty (0) || tcgetattr (0, &a->saved) < 0)
    return;
  struct termios raw = a->saved;
  cfmakeraw (&raw);
  if (tcsetattr (0, TCSANOW, &raw) == 0)
    a->raw = true;
  struct winsize ws;
  if (ioctl (0, TIOCGWINSZ, &ws) == 0 && ws.ws_col && ws.ws_row)
    zcd_client_resize (zctr_client (a->z), a->id, a->pid, ws.ws_col, ws.ws_row, NULL);
}

static int
s_write_all (int fd, const char *buf, size_t len)
{
  while (len > 0)
    {
      ssize_t n = write (fd, buf, len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return -1;
      buf += n;
      len -= (size_t) n;
    }
  return 0;
}

/* Copy what one FIFO holds to our fd 1 or 2; false at EOF. */
static bool
s_copy_out (zctr_attach_t *a, int i)
{
  char buf[ATTACH_BUF];
  for (;;)
    {
      ssize_t n = read (a->fifo[i], buf, sizeof buf);
      if (n > 0)
        {
          s_write_all (i, buf, (size_t) n);
          continue;
        }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        return true;
      close (a->fifo[i]);
      a->fifo[i] = -1;
      return false;
    }
}

static void
s_close_stdin (zctr_attach_t *a)
{
  a->stdin_open = false;
  close (a->fifo[0]);
  a->fifo[0] = -1;
  /* The shim may hold a writing end of its own: tell it too. */
  zcd_client_close_stdin (zctr_client (a->z), a->id, a->pid, NULL);
}

/* Our stdin to the process, through a pending buffer so that a full FIFO
 * pauses reading rather than losing input. */
static void
s_copy_in (zctr_attach_t *a, bool readable, bool writable)
{
  if (readable && a->pending_len == 0)
    {
      ssize_t n = read (0, a->pending, sizeof a->pending);
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
        {
          s_close_stdin (a);
          return;
        }
      if (n > 0)
        a->pending_len = (size_t) n;
    }
  if (a->pending_len && (writable || readable))
    {
      ssize_t n = write (a->fifo[0], a->pending, a->pending_len);
      if (n > 0)
        {
          memmove (a->pending, a->pending + n, a->pending_len - (size_t) n);
          a->pending_len -= (size_t) n;
        }
    }
}

static void
s_take_events (zctr_attach_t *a)
{
  zcd_event_t *event = NULL;
  while (!a->exited && zcd_subscriber_next (a->sub, 0, &event) == 0)
    {
      if (strcmp (event->type, "exit") == 0 && event->pid && strcmp (event->pid, a->pid) == 0)
        {
          a->exited = true;
          a->status = event->has_status ? (int) event->status : 255;
        }
      zcd_event_destroy (&event);
    }
}

static int64_t
s_now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_drain_output (zctr_attach_t *a)
{
  int64_t give_up = s_now_ms () + DRAIN_MAX_MS;
  while ((a->fifo[1] >= 0 || a->fifo[2] >= 0) && s_now_ms () < give_up)
    {
      struct pollfd fds[2] = { { a->fifo[1], POLLIN, 0 }, { a->fifo[2], POLLIN, 0 } };
      int n = poll (fds, 2, DRAIN_QUIET_MS);
      if (n == 0)
        break;
      for (int i = 0; i < 2; i++)
        if (fds[i].revents && a->fifo[i + 1] >= 0)
          s_copy_out (a, i + 1);
    }
}

int
zctr_attach_run (zctr_attach_t *a)
{
  s_raw_terminal (a);
  for (;;)
    {
      s_take_events (a);
      if (a->exited)
        break;
      zmq_pollitem_t items[5] = {
        { zcd_subscriber_socket (a->sub), 0, ZMQ_POLLIN, 0 },
        { NULL, 0, a->stdin_open && a->pending_len == 0 ? ZMQ_POLLIN : 0, 0 },
        { NULL, a->fifo[0], a->pending_len ? ZMQ_POLLOUT : 0, 0 },
        { NULL, a->fifo[1], a->fifo[1] >= 0 ? ZMQ_POLLIN : 0, 0 },
        { NULL, a->fifo[2], a->fifo[2] >= 0 ? ZMQ_POLLIN : 0, 0 },
      };
      if (zmq_poll (items, 5, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          return zctr_error (ZCTR_EXIT_FAIL, "attach: poll: %s", zmq_strerror (errno));
        }
      if (a->stdin_open && (items[1].revents || items[2].revents))
        s_copy_in (a, items[1].revents != 0, items[2].revents != 0);
      for (int i = 1; i < 3; i++)
        if (items[i + 2].revents && a->fifo[i] >= 0)
          s_copy_out (a, i);
    }
  s_drain_output (a);
  if (a->raw)
    {
      tcsetattr (0, TCSANOW, &a->saved);
      a->raw = false;
    }
  return a->status;
}
