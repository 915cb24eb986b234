/* The terminal: the runtime connects to console.sock (--console-socket) and
 * sends the pty master over SCM_RIGHTS; the shim keeps it and relays it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "shim/shim.h"

#define CONSOLE_SOCKET "console.sock"

static char s_socket_path[sizeof ((struct sockaddr_un *) 0)->sun_path];

const char *
shim_console_socket_path (shim_t *self)
{
  (void) self;
  return s_socket_path;
}

int
shim_console_listen (shim_t *self, zcd_error_t **err)
{
  /* The runtime connects after it chdir'ed into the bundle (runc does), so
   * it needs the absolute path, and sun_path is short. */
  int n = snprintf (s_socket_path, sizeof s_socket_path, "%s/%s", self->dir, CONSOLE_SOCKET);
  if (n < 0 || (size_t) n >= sizeof s_socket_path)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                     "state directory `%s` is too long for a console socket", self->dir);
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return zcd_fail_errno (err, errno, "console socket");
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  memcpy (addr.sun_path, s_socket_path, (size_t) n);
  unlink (s_socket_path);
  if (bind (fd, (struct sockaddr *) &addr, sizeof addr) < 0 || listen (fd, 1) < 0)
    {
      int saved = errno;
      close (fd);
      return zcd_fail_errno (err, saved, "listen on `%s`", s_socket_path);
    }
  self->console_listen_fd = fd;
  return 0;
}

/* The first descriptor of an SCM_RIGHTS message; any others are closed. */
static int
s_take_fd (struct msghdr *msg)
{
  int found = -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR (msg); c; c = CMSG_NXTHDR (msg, c))
    {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
        continue;
      size_t count = (c->cmsg_len - CMSG_LEN (0)) / sizeof (int);
      int *fds = (int *) CMSG_DATA (c);
      for (size_t i = 0; i < count; i++)
        {
          if (found < 0)
            found = fds[i];
          else
            close (fds[i]);
        }
    }
  return found;
}

static int
s_receive_master (int conn, zcd_error_t **err)
{
  char name[256];
  union
  {
    char buf[CMSG_SPACE (4 * sizeof (int))];
    struct cmsghdr align;
  } control;
  struct iovec iov = { .iov_base = name, .iov_len = sizeof name };
  struct msghdr msg = { .msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control.buf,
                        .msg_controllen = sizeof control.buf };
  ssize_t n;
  do
    n = recvmsg (conn, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return zcd_fail_errno (err, errno, "receive the console");
  int master = s_take_fd (&msg);
  if (master < 0)
    return zcd_fail (err, ZCD_E_RUNTIME_ERROR, "the runtime sent no console descriptor");
  return master;
}

int
shim_console_receive (shim_t *self, zcd_error_t **err)
{
  /* The runtime has exited by now; a connection it made waits in the
   * backlog with its message, so nothing here can block. */
  cleanup_close int conn = accept4 (self->console_listen_fd, NULL, NULL, SOCK_CLOEXEC);
  close (self->console_listen_fd);
  self->console_listen_fd = -1;
  unlink (s_socket_path);
  if (conn < 0)
    return zcd_fail (err, ZCD_E_RUNTIME_ERROR, "the runtime did not connect to the console socket");
  int flags = fcntl (conn, F_GETFL);
  if (flags >= 0)
    fcntl (conn, F_SETFL, flags & ~O_NONBLOCK);
  int master = s_receive_master (conn, err);
  if (master < 0)
    return -1;
  self->master_fd = master;
  fcntl (master, F_SETFL, fcntl (master, F_GETFL) | O_NONBLOCK);
  /* Each relay owns its own descriptor, so ending one never closes the
   * master the other (and resize) still use. */
  self->stdout_relay.src = fcntl (master, F_DUPFD_CLOEXEC, 3);
  if (self->stdin_relay.src >= 0)
    self->stdin_relay.dst = fcntl (master, F_DUPFD_CLOEXEC, 3);
  return 0;
}

void
shim_console_resize (shim_t *self, unsigned width, unsigned height)
{
  if (self->master_fd < 0)
    return;
  struct winsize ws = { .ws_row = (unsigned short) height, .ws_col = (unsigned short) width };
  if (ioctl (self->master_fd, TIOCSWINSZ, &ws) < 0)
    shim_log (self, "resize to %ux%u: %s", width, height, strerror (errno));
}
