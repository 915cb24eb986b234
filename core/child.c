#include "core/child.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/log.h"

extern char **environ;

typedef struct
{
  int fd;
  loop_watch_t *watch;
  char *buf;
  size_t len, cap;
} child_stream_t;

struct child
{
  children_t *reg;
  pid_t pid;
  bool exited;
  int wait_status;
  bool timed_out;
  bool forgotten;
  child_stream_t out, err;
  size_t max_output;
  loop_timer_t *deadline;
  child_done_fn fn;
  void *arg;
};

struct children
{
  loop_t *loop;
  zhashx_t *by_pid; /* pid (as a pointer-sized key) -> child_t */
  uint64_t unclaimed;
};

static size_t
s_pid_hash (const void *key)
{
  return (size_t) (uintptr_t) key;
}

static int
s_pid_compare (const void *a, const void *b)
{
  uintptr_t x = (uintptr_t) a, y = (uintptr_t) b;
  return x < y ? -1 : x > y;
}

children_t *
children_new (loop_t *loop)
{
  children_t *self = calloc (1, sizeof *self);
  if (self == NULL)
    return NULL;
  self->loop = loop;
  self->by_pid = zhashx_new ();
  zhashx_set_key_hasher (self->by_pid, s_pid_hash);
  zhashx_set_key_comparator (self->by_pid, s_pid_compare);
  zhashx_set_key_duplicator (self->by_pid, NULL);
  zhashx_set_key_destructor (self->by_pid, NULL);
  return self;
}

static void
s_stream_close (children_t *reg, child_stream_t *s)
{
  if (s->watch)
    loop_remove (reg->loop, s->watch);
  s->watch = NULL;
  if (s->fd >= 0)
    close (s->fd);
  s->fd = -1;
}

static void
s_child_free (child_t *c)
{
  s_stream_close (c->reg, &c->out);
  s_stream_close (c->reg, &c->err);
  loop_timer_cancel (c->reg->loop, c->deadline);
  free (c->out.buf);
  free (c->err.buf);
  free (c);
}

void
children_destroy (children_t **reg)
{
  if (reg == NULL || *reg == NULL)
    return;
  children_t *self = *reg;
  for (child_t *c = zhashx_first (self->by_pid); c; c = zhashx_next (self->by_pid))
    s_child_free (c);
  zhashx_destroy (&self->by_pid);
  free (self);
  *reg = NULL;
}

int
child_exit_code (int wait_status)
{
  if (WIFEXITED (wait_status))
    return WEXITSTATUS (wait_status);
  if (WIFSIGNALED (wait_status))
    return 128 + WTERMSIG (wait_status);
  return 255;
}

static void
s_maybe_complete (child_t *c)
{
  if (!c->exited || c->out.fd >= 0 || c->err.fd >= 0)
    return;
  children_t *reg = c->reg;
  zhashx_delete (reg->by_pid, (void *) (uintptr_t) c->pid);
  if (!c->forgotten && c->fn)
    {
      child_result_t res = {
        .pid = c->pid,
        .wait_status = c->wait_status,
        .exit_code = child_exit_code (c->wait_status),
        .timed_out = c->timed_out,
        .out = c->out.buf ? c->out.buf : "",
        .out_len = c->out.len,
        .err = c->err.buf ? c->err.buf : "",
        .err_len = c->err.len,
      };
      c->fn (&res, c->arg);
    }
  s_child_free (c);
}

static void
s_on_output (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  child_t *c = arg;
  child_stream_t *s = fd == c->out.fd ? &c->out : &c->err;
  for (;;)
    {
      char chunk[4096];
      ssize_t n = read (fd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        return;
      if (n <= 0)
        break;
      /* Keep the first max_output bytes; the rest is read and dropped so
       * a chatty child never blocks on a full pipe. */
      size_t room = c->max_output > s->len ? c->max_output - s->len : 0;
      size_t take = (size_t) n < room ? (size_t) n : room;
      if (take > 0)
        {
          if (s->len + take + 1 > s->cap)
            {
              size_t cap = s->cap ? s->cap * 2 : 1024;
              while (cap < s->len + take + 1)
                cap *= 2;
              char *grown = realloc (s->buf, cap);
              if (grown == NULL)
                break;
              s->buf = grown;
              s->cap = cap;
            }
          memcpy (s->buf + s->len, chunk, take);
          s->len += take;
          s->buf[s->len] = '\0';
        }
    }
  s_stream_close (c->reg, s);
  s_maybe_complete (c);
}

static void
s_on_deadline (loop_t *loop, void *arg)
{
  child_t *c = arg;
  c->deadline = NULL;
  if (c->exited)
    return;
  c->timed_out = true;
  /* The child leads its own process group: take its helpers too (a runtime
   * that forked and hangs). */
  kill (-c->pid, SIGKILL);
  kill (c->pid, SIGKILL);
}

static void s_register (children_t *reg, child_t *c, const child_opts_t *opts);

static int
s_open_pipe (children_t *reg, child_t *c, child_stream_t *s, int pipefd[2])
{
  if (pipe2 (pipefd, O_CLOEXEC) < 0)
    return -1;
  fcntl (pipefd[0], F_SETFL, O_NONBLOCK);
  s->fd = pipefd[0];
  return 0;
}

static int
s_setup_actions (posix_spawn_file_actions_t *fa, posix_spawnattr_t *attr, const child_opts_t *opts,
                 int out_w, int err_w)
{
  posix_spawn_file_actions_init (fa);
  posix_spawnattr_init (attr);
  posix_spawn_file_actions_addopen (fa, 0, "/dev/null", O_RDONLY, 0);
  if (out_w >= 0)
    posix_spawn_file_actions_adddup2 (fa, out_w, 1);
  else
    posix_spawn_file_actions_addopen (fa, 1, "/dev/null", O_WRONLY, 0);
  if (err_w >= 0)
    posix_spawn_file_actions_adddup2 (fa, err_w, 2);
  else
    posix_spawn_file_actions_addopen (fa, 2, "/dev/null", O_WRONLY, 0);
  if (opts->pass_fd >= 0)
    posix_spawn_file_actions_adddup2 (fa, opts->pass_fd, 3);
  if (opts->cwd)
    posix_spawn_file_actions_addchdir_np (fa, opts->cwd);
  /* The daemon blocks the signals its signalfd reads: the child must not
   * inherit that mask, nor ignored dispositions. */
  sigset_t none, all;
  sigemptyset (&none);
  sigfillset (&all);
  posix_spawnattr_setsigmask (attr, &none);
  posix_spawnattr_setsigdefault (attr, &all);
  /* Either way the child leads a process group (a session leader leads
   * its group), which the deadline kills; glibc's setpgid after setsid
   * would fail, so only one of the two is asked for. */
  short group = opts->new_session ? POSIX_SPAWN_SETSID : POSIX_SPAWN_SETPGROUP;
  posix_spawnattr_setpgroup (attr, 0);
  return posix_spawnattr_setflags (attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | group);
}

child_t *
child_spawn (children_t *reg, char *const argv[], const child_opts_t *opts_in, child_done_fn fn,
             void *arg, zcd_error_t **err)
{
  child_opts_t opts = opts_in ? *opts_in : (child_opts_t) CHILD_OPTS_DEFAULT;
  child_t *c = calloc (1, sizeof *c);
  if (c == NULL)
    {
      zcd_fail_errno (err, ENOMEM, "spawn `%s`", argv[0]);
      return NULL;
    }
  c->reg = reg;
  c->out.fd = c->err.fd = -1;
  c->max_output = opts.max_output ? opts.max_output : 65536;
  c->fn = fn;
  c->arg = arg;
  int outp[2] = { -1, -1 }, errp[2] = { -1, -1 };
  if (opts.capture
      && (s_open_pipe (reg, c, &c->out, outp) < 0 || s_open_pipe (reg, c, &c->err, errp) < 0))
    {
      zcd_fail_errno (err, errno, "spawn `%s`: pipe", argv[0]);
      if (outp[1] >= 0)
        close (outp[1]);
      s_child_free (c);
      return NULL;
    }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  s_setup_actions (&fa, &attr, &opts, outp[1], errp[1]);
  int rc = posix_spawnp (&c->pid, argv[0], &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy (&fa);
  posix_spawnattr_destroy (&attr);
  if (outp[1] >= 0)
    close (outp[1]);
  if (errp[1] >= 0)
    close (errp[1]);
  if (rc != 0)
    {
      zcd_fail (err, ZCD_E_INTERNAL, "spawn `%s`: %s", argv[0], strerror (rc));
      s_child_free (c);
      return NULL;
    }
  s_register (reg, c, &opts);
  return c;
}

/* A child is running as c->pid: watch its output, arm its deadline and
 * enter it in the table. */
static void
s_register (children_t *reg, child_t *c, const child_opts_t *opts)
{
  if (c->out.fd >= 0)
    c->out.watch = loop_add_fd (reg->loop, c->out.fd, EPOLLIN, s_on_output, c);
  if (c->err.fd >= 0)
    c->err.watch = loop_add_fd (reg->loop, c->err.fd, EPOLLIN, s_on_output, c);
  if (opts->deadline_ms)
    c->deadline = loop_timer_add (reg->loop, opts->deadline_ms, s_on_deadline, c);
  /* An earlier child with this pid exited, but a grandchild still holds
   * its output pipes open: the pid is the kernel's to reuse.  Complete the
   * old one with what it has, so the table never holds two of a pid. */
  child_t *stale = zhashx_lookup (reg->by_pid, (void *) (uintptr_t) c->pid);
  if (stale && stale->exited)
    {
      s_stream_close (reg, &stale->out);
      s_stream_close (reg, &stale->err);
      s_maybe_complete (stale);
    }
  zhashx_insert (reg->by_pid, (void *) (uintptr_t) c->pid, c);
}

/* In the forked child: every fd but stdio and `keep` closed. */
static void
s_close_all_but (const int *keep, size_t n_keep)
{
  int sorted[CHILD_FORK_MAX_FDS];
  size_t n = 0;
  for (size_t i = 0; i < n_keep && n < CHILD_FORK_MAX_FDS; i++)
    if (keep[i] > 2)
      sorted[n++] = keep[i];
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && sorted[j - 1] > sorted[j]; j--)
      {
        int t = sorted[j];
        sorted[j] = sorted[j - 1];
        sorted[j - 1] = t;
      }
  unsigned from = 3;
  for (size_t i = 0; i < n; i++)
    {
      if ((unsigned) sorted[i] > from)
        close_range (from, (unsigned) sorted[i] - 1, 0);
      from = (unsigned) sorted[i] + 1;
    }
  close_range (from, ~0U, 0);
}

static void
s_forked_child (int out_w, int err_w, const int *keep, size_t n_keep, child_fork_fn fn, void *arg)
{
  setpgid (0, 0);
  sigset_t none;
  sigemptyset (&none);
  sigprocmask (SIG_SETMASK, &none, NULL);
  int null_fd = open ("/dev/null", O_RDWR | O_CLOEXEC);
  dup2 (null_fd, 0);
  dup2 (out_w >= 0 ? out_w : null_fd, 1);
  dup2 (err_w >= 0 ? err_w : null_fd, 2);
  s_close_all_but (keep, n_keep);
  _exit (fn (arg) & 0xff);
}

child_t *
child_fork (children_t *reg, child_fork_fn fn, void *fn_arg, const int *keep_fds, size_t n_keep,
            const child_opts_t *opts_in, child_done_fn done, void *arg, zcd_error_t **err)
{
  child_opts_t opts = opts_in ? *opts_in : (child_opts_t) CHILD_OPTS_DEFAULT;
  if (n_keep > CHILD_FORK_MAX_FDS)
    {
      zcd_fail (err, ZCD_E_INTERNAL, "fork: more than %d fds to keep", CHILD_FORK_MAX_FDS);
      return NULL;
    }
  child_t *c = calloc (1, sizeof *c);
  if (c == NULL)
    {
      zcd_fail_errno (err, ENOMEM, "fork");
      return NULL;
    }
  c->reg = reg;
  c->out.fd = c->err.fd = -1;
  c->max_output = opts.max_output ? opts.max_output : 65536;
  c->fn = done;
  c->arg = arg;
  int outp[2] = { -1, -1 }, errp[2] = { -1, -1 };
  if (opts.capture
      && (s_open_pipe (reg, c, &c->out, outp) < 0 || s_open_pipe (reg, c, &c->err, errp) < 0))
    {
      zcd_fail_errno (err, errno, "fork: pipe");
      if (outp[1] >= 0)
        close (outp[1]);
      s_child_free (c);
      return NULL;
    }
  c->pid = fork ();
  if (c->pid == 0)
    s_forked_child (outp[1], errp[1], keep_fds, n_keep, fn, fn_arg);
  int saved = errno;
  if (outp[1] >= 0)
    close (outp[1]);
  if (errp[1] >= 0)
    close (errp[1]);
  if (c->pid < 0)
    {
      zcd_fail_errno (err, saved, "fork");
      s_child_free (c);
      return NULL;
    }
  s_register (reg, c, &opts);
  return c;
}

pid_t
child_pid (const child_t *child)
{
  return child->pid;
}

void
child_forget (children_t *reg, child_t *child)
{
  if (child)
    child->forgotten = true;
}

void
children_reap (children_t *reg)
{
  for (;;)
    {
      int status;
      pid_t pid = waitpid (-1, &status, WNOHANG);
      if (pid <= 0)
        return; /* 0: none left that exited; -1/ECHILD: no children at all */
      child_t *c = zhashx_lookup (reg->by_pid, (void *) (uintptr_t) pid);
      if (c == NULL)
        {
          reg->unclaimed++;
          continue;
        }
      c->exited = true;
      c->wait_status = status;
      loop_timer_cancel (reg->loop, c->deadline);
      c->deadline = NULL;
      s_maybe_complete (c);
    }
}

size_t
children_running (const children_t *reg)
{
  return zhashx_size (reg->by_pid);
}

uint64_t
children_unclaimed_reaped (const children_t *reg)
{
  return reg->unclaimed;
}
