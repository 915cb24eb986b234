/* The daemon of tests/unit/test_actors.c, in a thread of its own over a
 * temporary state dir, and the files the fakes read and write (see
 * harness.h).  The daemon is built as tools/zcd.c builds it; the thread is
 * the test's, not the daemon's design: zcd itself is one thread, and here
 * too everything of the daemon runs in that one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "actors/supervisor.h"
#include "core/log.h"
#include "tests/fakeshim/harness.h"

#define STOP_WAIT_MS 15000 /* a graceful stop may wait for requests in progress */
#define TEST_ALARM_S 90    /* a test that runs past this kills the binary */
#define START_TIMEOUT_MS 10000

static void *s_zctx;
static char s_fakeshim[PATH_MAX], s_fakeruntime[PATH_MAX];

int64_t
h_now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
h_sleep_ms (long ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep (&ts, NULL);
}

const char *
h_fakeruntime (void)
{
  return s_fakeruntime;
}

/* ---- files ---------------------------------------------------------- */

static void
s_write (const char *path, const char *text)
{
  FILE *f = fopen (path, "w");
  if (f == NULL)
    fail_msg ("write %s: %s", path, strerror (errno));
  fputs (text, f);
  fclose (f);
}

char *
h_read (const char *path)
{
  FILE *f = fopen (path, "r");
  char *text = calloc (1, 65536);
  if (f)
    {
      size_t n = fread (text, 1, 65535, f);
      text[n] = '\0';
      fclose (f);
    }
  return text;
}

static void
s_mkdir (const char *path)
{
  if (mkdir (path, 0700) < 0 && errno != EEXIST)
    fail_msg ("mkdir %s: %s", path, strerror (errno));
}

static int
s_rm_one (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  remove (path);
  return 0;
}

/* A bundle for container `id`: config.json, and fake/ for the shim's knobs. */
void
h_bundle (harness_t *h, const char *id, char *out, size_t cap)
{
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/bundles", h->dir);
  s_mkdir (path);
  snprintf (out, cap, "%s/bundles/%s", h->dir, id);
  s_mkdir (out);
  snprintf (path, sizeof path, "%s/fake", out);
  s_mkdir (path);
  snprintf (path, sizeof path, "%s/config.json", out);
  s_write (path, "{\"ociVersion\": \"1.0.2\", \"root\": {\"path\": \"rootfs\"},"
                 " \"process\": {\"args\": [\"sleep\", \"inf\"], \"cwd\": \"/\"}}");
}

void
h_shim_knob (harness_t *h, const char *id, const char *pid, const char *knob, const char *text)
{
  char bundle[PATH_MAX], path[PATH_MAX * 2];
  h_bundle (h, id, bundle, sizeof bundle);
  snprintf (path, sizeof path, "%s/fake/%s.%s", bundle, pid, knob);
  if (text)
    s_write (path, text);
  else
    unlink (path);
}

void
h_runtime_knob (harness_t *h, const char *id, const char *knob, const char *text)
{
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/%s", h->root, id);
  s_mkdir (path);
  snprintf (path, sizeof path, "%s/%s/%s", h->root, id, knob);
  if (text)
    s_write (path, text);
  else
    unlink (path);
}

char *
h_runtime_calls (harness_t *h, const char *id)
{
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/%s/calls", h->root, id);
  return h_read (path);
}

void
h_wait_file_has (const char *path, const char *text)
{
  int64_t deadline = h_now_ms () + HARNESS_WAIT_MS;
  for (;;)
    {
      char *got = h_read (path);
      bool found = strstr (got, text) != NULL;
      free (got);
      if (found)
        return;
      if (h_now_ms () > deadline)
        fail_msg ("%s never held `%s`", path, text);
      h_sleep_ms (5);
    }
}

void
h_wait_ended (pid_t pid)
{
  int64_t deadline = h_now_ms () + HARNESS_WAIT_MS;
  for (;;)
    {
      char path[64];
      snprintf (path, sizeof path, "/proc/%d/stat", (int)pid);
      char *stat = h_read (path);
      const char *p = strrchr (stat, ')');
      bool ended = p == NULL || strncmp (p, ") Z", 3) == 0;
      free (stat);
      if (ended)
        return;
      if (h_now_ms () > deadline)
        fail_msg ("process %d did not end", (int)pid);
      h_sleep_ms (5);
    }
}

/* ---- the daemon ------------------------------------------------------ */

typedef struct
{
  supervisor_t *supervisor;
  children_t *children;
} daemon_ctl_t;

static void
s_on_sigchld (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  daemon_ctl_t *ctl = arg;
  struct signalfd_siginfo info;
  while (read (fd, &info, sizeof info) == (ssize_t)sizeof info)
    ;
  children_reap (ctl->children);
}

static void
s_on_stop (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  daemon_ctl_t *ctl = arg;
  char how = 0;
  if (read (fd, &how, 1) != 1)
    return;
  if (how == 's' && ctl->supervisor)
    supervisor_stop (ctl->supervisor);
  else
    loop_stop (loop);
}

/* tools/zcd.c's main, minus the flags and the state dir lock. */
static void *
s_daemon_main (void *arg)
{
  harness_t *h = arg;
  sigset_t chld;
  sigemptyset (&chld);
  sigaddset (&chld, SIGCHLD);
  int sfd = signalfd (-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  void *ctx = zmq_ctx_new ();
  zcd_daemon_t daemon = { .config = &h->cfg, .zmq_ctx = ctx };
  daemon.loop = loop_new ();
  daemon.children = children_new (daemon.loop);
  zcd_error_t *err = NULL;
  daemon.actors = actor_system_new (daemon.loop, ctx, 10000, &err);
  daemon_ctl_t ctl = { .children = daemon.children };
  if (daemon.actors)
    {
      loop_add_fd (daemon.loop, sfd, EPOLLIN, s_on_sigchld, &ctl);
      loop_add_fd (daemon.loop, h->stop_r, EPOLLIN, s_on_stop, &ctl);
      ctl.supervisor = supervisor_new (&daemon, &err);
    }
  char ready[600];
  snprintf (ready, sizeof ready, "%s", ctl.supervisor ? "ok" : err ? err->msg : "?");
  if (write (h->ready_w, ready, strlen (ready) + 1) < 0)
    perror ("test_actors: ready pipe");
  if (ctl.supervisor)
    loop_run (daemon.loop);
  supervisor_destroy (&ctl.supervisor);
  actor_system_destroy (&daemon.actors);
  children_destroy (&daemon.children);
  loop_destroy (&daemon.loop);
  zmq_ctx_term (ctx);
  close (sfd);
  zcd_error_free (&err);
  return NULL;
}

void
h_daemon_start (harness_t *h)
{
  assert_false (h->running);
  assert_int_equal (pthread_create (&h->thread, NULL, s_daemon_main, h), 0);
  h->running = true;
  struct pollfd pfd = { h->ready_r, POLLIN, 0 };
  char ready[600] = "";
  if (poll (&pfd, 1, HARNESS_WAIT_MS) != 1 || read (h->ready_r, ready, sizeof ready - 1) <= 0)
    fail_msg ("the daemon did not start within %d ms", HARNESS_WAIT_MS);
  if (strcmp (ready, "ok") != 0)
    {
      pthread_join (h->thread, NULL);
      h->running = false;
      fail_msg ("the daemon did not start: %s", ready);
    }
  h_client_open (h, s_zctx);
}

static void s_kill_leftovers (void);

/* A daemon that does not stop cannot be taken back from its thread: the
 * binary ends there, failed, rather than hang the suite. */
void
h_daemon_stop (harness_t *h, char how)
{
  h_client_close (h);
  if (!h->running)
    return;
  if (write (h->stop_w, &how, 1) != 1)
    fail_msg ("stop pipe: %s", strerror (errno));
  struct timespec until;
  clock_gettime (CLOCK_REALTIME, &until);
  until.tv_sec += STOP_WAIT_MS / 1000;
  if (pthread_timedjoin_np (h->thread, NULL, &until) != 0)
    {
      fprintf (stderr, "test_actors: the daemon did not stop within %d ms: it hangs\n",
               STOP_WAIT_MS);
      s_kill_leftovers ();
      _exit (3);
    }
  h->running = false;
}

/* Every process this test started that is still there: the shims (ours
 * through the subreaper) with their process groups, and runtime calls. */
static void
s_kill_leftovers (void)
{
  DIR *d = opendir ("/proc");
  struct dirent *e;
  while (d && (e = readdir (d)) != NULL)
    {
      char path[300], buf[512];
      pid_t pid = (pid_t)atoi (e->d_name);
      if (pid <= 0)
        continue;
      snprintf (path, sizeof path, "/proc/%d/stat", (int)pid);
      int fd = open (path, O_RDONLY | O_CLOEXEC);
      ssize_t n = fd >= 0 ? read (fd, buf, sizeof buf - 1) : -1;
      if (fd >= 0)
        close (fd);
      if (n <= 0)
        continue;
      buf[n] = '\0';
      char *p = strrchr (buf, ')');
      int ppid = 0, pgid = 0;
      if (p == NULL || sscanf (p + 2, "%*c %d %d", &ppid, &pgid) != 2 || ppid != getpid ())
        continue;
      if (pgid > 1 && pgid != getpgrp ())
        kill (-pgid, SIGKILL);
      kill (pid, SIGKILL);
    }
  if (d)
    closedir (d);
  int64_t deadline = h_now_ms () + HARNESS_WAIT_MS;
  while (h_now_ms () < deadline)
    {
      pid_t pid = waitpid (-1, NULL, WNOHANG);
      if (pid < 0)
        break; /* ECHILD: all reaped */
      if (pid == 0)
        h_sleep_ms (5);
    }
}

static void
s_config (harness_t *h)
{
  snprintf (h->state, sizeof h->state, "%s/state", h->dir);
  snprintf (h->root, sizeof h->root, "%s/root", h->dir);
  snprintf (h->cmd_ep, sizeof h->cmd_ep, "ipc://%s/zcd.sock", h->state);
  snprintf (h->evt_ep, sizeof h->evt_ep, "ipc://%s/events.sock", h->state);
  s_mkdir (h->state);
  s_mkdir (h->root);
  h->listen[0] = h->cmd_ep;
  h->publish[0] = h->evt_ep;
  h->runtime_args[0] = "--root";
  h->runtime_args[1] = h->root;
  h->cfg = (zcd_config_t){
    .state_dir = h->state,
    .listen = h->listen,
    .publish = h->publish,
    .runtime = s_fakeruntime,
    .runtime_args = h->runtime_args,
    .shim_path = s_fakeshim,
    .start_timeout_ms = START_TIMEOUT_MS,
    .max_concurrent_starts = 4,
    .events_retain = 10000,
    .max_request_size = 1024 * 1024,
    .heartbeat_ms = 50,
  };
}

int
h_setup (void **state)
{
  alarm (TEST_ALARM_S);
  harness_t *h = calloc (1, sizeof *h);
  snprintf (h->dir, sizeof h->dir, "/tmp/zcd-actors.XXXXXX");
  if (mkdtemp (h->dir) == NULL)
    return -1;
  s_config (h);
  int stop[2], ready[2];
  if (pipe2 (stop, O_CLOEXEC) < 0 || pipe2 (ready, O_CLOEXEC) < 0)
    return -1;
  h->stop_r = stop[0], h->stop_w = stop[1];
  h->ready_r = ready[0], h->ready_w = ready[1];
  h->sent = json_object ();
  h->early = json_object ();
  h->partials = json_array ();
  *state = h;
  h_daemon_start (h);
  return 0;
}

int
h_teardown (void **state)
{
  harness_t *h = *state;
  h_daemon_stop (h, 'k');
  s_kill_leftovers ();
  nftw (h->dir, s_rm_one, 16, FTW_DEPTH | FTW_PHYS);
  close (h->stop_r), close (h->stop_w), close (h->ready_r), close (h->ready_w);
  json_decref (h->sent);
  json_decref (h->early);
  json_decref (h->partials);
  free (h);
  alarm (0);
  return 0;
}

static void
s_find_fakes (void)
{
  char self[PATH_MAX];
  ssize_t n = readlink ("/proc/self/exe", self, sizeof self - 1);
  self[n > 0 ? n : 0] = '\0';
  const char *dir = dirname (self);
  snprintf (s_fakeshim, sizeof s_fakeshim, "%s/fakeshim", dir);
  snprintf (s_fakeruntime, sizeof s_fakeruntime, "%s/fakeruntime", dir);
}

int
h_init (void)
{
  /* Before any thread: SIGCHLD stays pending for the daemon's signalfd,
   * whichever thread the kernel would have picked. */
  sigset_t chld;
  sigemptyset (&chld);
  sigaddset (&chld, SIGCHLD);
  sigprocmask (SIG_BLOCK, &chld, NULL);
  signal (SIGPIPE, SIG_IGN);
  setenv ("ZSYS_SIGHANDLER", "false", 1);
  /* The shims detach (double fork): they come back to us, as to zcd. */
  prctl (PR_SET_CHILD_SUBREAPER, 1);
  zcd_log_set_level (getenv ("ZCD_TEST_LOG") ? getenv ("ZCD_TEST_LOG") : "error");
  s_find_fakes ();
  if (access (s_fakeshim, X_OK) < 0 || access (s_fakeruntime, X_OK) < 0)
    {
      fprintf (stderr, "test_actors: %s or %s is missing (make builds them)\n", s_fakeshim,
               s_fakeruntime);
      return -1;
    }
  s_zctx = zmq_ctx_new ();
  return 0;
}

void
h_fini (void)
{
  zmq_ctx_term (s_zctx);
}
