/* fakeshim: zcd-shim's contract (core/shimproto.h) kept without any OCI
 * runtime, so that tests/unit/test_actors.c can drive the daemon's actors
 * without runc, crun or root (issue 9, part 8; why fakes: see there).
 *
 * Like the real shim it detaches (double fork, setsid: the daemon's start
 * timeout kills its process group, never the test's), writes shim.pid,
 * holds the write end of the `exit` FIFO until it ends, reads records from
 * the `control` FIFO, reports once on the sync fd, then writes pid,
 * starttime and, at the end, exitStatus (128+N for signal N).  The
 * "container process" is a forked child that waits for signals, so the
 * daemon sees a live pid with a real start time.
 *
 * The runtime's state (what `runc --root DIR` would keep) lives in
 * <root>/<container-id>/, <root> being the `--root` among the runtime args:
 * <process-id>.pid (the process's pid, read by tests/fakeshim/fakeruntime
 * for kill, pause and resume) and <process-id>.control (one line per
 * control record: "resize W H", "close_stdin").
 *
 * Knobs, files in <bundle>/fake/ named <process-id>.<knob> (the process id
 * is the basename of the process directory, the shim's cwd):
 *   start-error  its text: the start fails with runtime_error and that text
 *   die          its text goes to shim.log; the shim exits with no record
 *                (the daemon answers shim_exited)
 *   hang         never report (the daemon's start timeout ends it)
 *   delay-ms     wait that long before the report
 *   exit         the process exits at once with this status
 *   keep-execs   (init) its end does not take the exec processes along,
 *                as a shared pid namespace would not
 * Every fake shim ends by itself after FAKE_LIFETIME_S, so that a test that
 * crashed leaves nothing running for long. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/shimproto.h"

#define FAKE_LIFETIME_S 120

typedef struct
{
  const char *mode;
  const char *id;
  const char *bundle;
  const char *root; /* --root among the runtime args, NULL if none */
  int sync_fd;
  char name[NAME_MAX + 1]; /* the process id: "init" or an exec id */
  char state[PATH_MAX];    /* <root>/<id>, "" without a root */
  int exit_fd;
  int control_fd;
  pid_t child;
} fake_t;

/* ---- small file helpers ------------------------------------------- */

static void
s_write_atomic (const char *path, const char *text)
{
  char tmp[PATH_MAX + 32];
  snprintf (tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid ());
  int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return;
  size_t len = strlen (text);
  bool ok = write (fd, text, len) == (ssize_t)len;
  close (fd);
  if (!ok || rename (tmp, path) < 0)
    unlink (tmp);
}

static void
s_write_number (const char *path, long long value)
{
  char text[32];
  snprintf (text, sizeof text, "%lld", value);
  s_write_atomic (path, text);
}

static void
s_append_line (const char *path, const char *line)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0)
    return;
  dprintf (fd, "%s\n", line);
  close (fd);
}

/* The knob's text (trailing newlines cut), or NULL when it is not set. */
static char *
s_knob (const fake_t *self, const char *knob, char *buf, size_t cap)
{
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/fake/%s.%s", self->bundle, self->name, knob);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  ssize_t n = read (fd, buf, cap - 1);
  close (fd);
  if (n < 0)
    n = 0;
  while (n > 0 && buf[n - 1] == '\n')
    n--;
  buf[n] = '\0';
  return buf;
}

static unsigned long long
s_starttime (pid_t pid)
{
  char path[64], buf[1024];
  snprintf (path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  /* Field 22; the command (field 2) may hold spaces, so count after ')'. */
  char *p = strrchr (buf, ')');
  for (int field = 2; p && field < 22; field++)
    p = strchr (p + 1, ' ');
  return p ? strtoull (p + 1, NULL, 10) : 0;
}

/* ---- arguments and detaching -------------------------------------- */

static const char *const s_valued[]
    = { "--mode",   "--id",         "--bundle",  "--runtime",     "--stdin", "--stdout",
        "--stderr", "--checkpoint", "--sync-fd", "--runtime-arg", NULL };

static bool
s_takes_value (const char *opt)
{
  for (size_t i = 0; s_valued[i]; i++)
    if (strcmp (opt, s_valued[i]) == 0)
      return true;
  return false;
}

static void
s_parse (fake_t *self, int argc, char **argv)
{
  const char *prev_runtime_arg = NULL;
  for (int i = 1; i < argc; i++)
    {
      const char *opt = argv[i];
      if (!s_takes_value (opt) || i + 1 >= argc)
        continue; /* flags (--terminal, --no-pivot) and anything newer */
      const char *value = argv[++i];
      if (strcmp (opt, "--mode") == 0)
        self->mode = value;
      else if (strcmp (opt, "--id") == 0)
        self->id = value;
      else if (strcmp (opt, "--bundle") == 0)
        self->bundle = value;
      else if (strcmp (opt, "--sync-fd") == 0)
        self->sync_fd = atoi (value);
      else if (strcmp (opt, "--runtime-arg") == 0)
        {
          if (prev_runtime_arg && strcmp (prev_runtime_arg, "--root") == 0)
            self->root = value;
          else if (strncmp (value, "--root=", 7) == 0)
            self->root = value + 7;
          prev_runtime_arg = value;
        }
    }
}

/* fds 0-2 on /dev/null, the sync fd above them, nothing else inherited:
 * the shim must not pin the daemon's (here: the test's) sockets. */
static void
s_standard_fds (fake_t *self)
{
  if (self->sync_fd >= 0 && fcntl (self->sync_fd, F_GETFD) < 0)
    self->sync_fd = -1;
  if (self->sync_fd >= 0 && self->sync_fd < 3)
    self->sync_fd = fcntl (self->sync_fd, F_DUPFD_CLOEXEC, 3);
  for (int fd = 3; fd < 1024; fd++)
    if (fd != self->sync_fd)
      close (fd);
  int devnull = open ("/dev/null", O_RDWR);
  for (int fd = 0; fd < 3 && devnull >= 0; fd++)
    if (fd != devnull)
      dup2 (devnull, fd);
  if (devnull > 2)
    close (devnull);
}

static void
s_detach (void)
{
  pid_t pid = fork ();
  if (pid != 0)
    _exit (pid < 0 ? 1 : 0);
  setsid ();
  pid = fork ();
  if (pid != 0)
    _exit (pid < 0 ? 1 : 0);
}

/* ---- the report ---------------------------------------------------- */

static void
s_report (fake_t *self, uint32_t type, int32_t pid, int32_t code, const char *text)
{
  if (self->sync_fd < 0)
    return;
  size_t len = text ? strlen (text) : 0;
  if (len > ZCD_SYNC_MAX_TEXT)
    len = ZCD_SYNC_MAX_TEXT;
  struct zcd_sync_record head = {
    .magic = ZCD_SYNC_MAGIC,
    .type = type,
    .pid = pid,
    .code = code,
    .text_len = (uint32_t)len,
  };
  char buf[sizeof head + ZCD_SYNC_MAX_TEXT];
  memcpy (buf, &head, sizeof head);
  if (len)
    memcpy (buf + sizeof head, text, len);
  /* One write: the daemon may read the record in one go. */
  if (write (self->sync_fd, buf, sizeof head + len) < 0)
    perror ("fakeshim: sync record");
  close (self->sync_fd);
  self->sync_fd = -1;
}

/* ---- the fake container process ----------------------------------- */

static void __attribute__ ((noreturn)) s_process_main (pid_t shim, const char *exit_knob)
{
  prctl (PR_SET_PDEATHSIG, SIGKILL);
  if (getppid () != shim)
    _exit (255);
  for (int fd = 3; fd < 1024; fd++)
    close (fd);
  for (int sig = 1; sig < NSIG; sig++)
    signal (sig, SIG_DFL);
  sigset_t none;
  sigemptyset (&none);
  sigprocmask (SIG_SETMASK, &none, NULL);
  if (exit_knob)
    _exit (atoi (exit_knob));
  for (;;)
    pause ();
}

static void
s_state_path (const fake_t *self, const char *name, const char *suffix, char *out, size_t cap)
{
  snprintf (out, cap, "%s/%s%s", self->state, name, suffix);
}

/* init ends: its exec processes go with it, as with a pid namespace. */
static void
s_kill_execs (const fake_t *self)
{
  DIR *d = self->state[0] ? opendir (self->state) : NULL;
  if (d == NULL)
    return;
  struct dirent *e;
  while ((e = readdir (d)) != NULL)
    {
      size_t len = strlen (e->d_name);
      if (len < 5 || strcmp (e->d_name + len - 4, ".pid") != 0
          || strcmp (e->d_name, "init.pid") == 0)
        continue;
      char path[PATH_MAX + NAME_MAX + 2], text[32] = "";
      snprintf (path, sizeof path, "%s/%s", self->state, e->d_name);
      int fd = open (path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        continue;
      ssize_t n = read (fd, text, sizeof text - 1);
      close (fd);
      pid_t pid = n > 0 ? (pid_t)atoi (text) : 0;
      if (pid > 1)
        kill (pid, SIGKILL);
    }
  closedir (d);
}

static void
s_read_control (fake_t *self, char *buf, size_t *len)
{
  for (;;)
    {
      ssize_t n = read (self->control_fd, buf + *len, sizeof (struct zcd_control_record) - *len);
      if (n <= 0)
        return;
      *len += (size_t)n;
      if (*len < sizeof (struct zcd_control_record))
        continue;
      struct zcd_control_record rec;
      memcpy (&rec, buf, sizeof rec);
      *len = 0;
      char line[96], path[PATH_MAX + NAME_MAX + 16];
      if (rec.magic != ZCD_CONTROL_MAGIC)
        snprintf (line, sizeof line, "bad magic %#x", rec.magic);
      else if (rec.type == ZCD_CONTROL_RESIZE)
        snprintf (line, sizeof line, "resize %u %u", rec.width, rec.height);
      else if (rec.type == ZCD_CONTROL_CLOSE_STDIN)
        snprintf (line, sizeof line, "close_stdin");
      else
        snprintf (line, sizeof line, "unknown type %u", rec.type);
      if (self->state[0])
        {
          s_state_path (self, self->name, ".control", path, sizeof path);
          s_append_line (path, line);
        }
    }
}

static int
s_status_code (int status)
{
  if (WIFEXITED (status))
    return WEXITSTATUS (status);
  return WIFSIGNALED (status) ? 128 + WTERMSIG (status) : 255;
}

/* Until the process ends: control records, and every child reaped. */
static int
s_wait_process (fake_t *self, int signal_fd)
{
  char control[sizeof (struct zcd_control_record)];
  size_t control_len = 0;
  for (;;)
    {
      for (;;)
        {
          int status;
          pid_t pid = waitpid (-1, &status, WNOHANG);
          if (pid <= 0)
            break;
          if (pid == self->child)
            return s_status_code (status);
        }
      struct pollfd fds[2] = { { signal_fd, POLLIN, 0 }, { self->control_fd, POLLIN, 0 } };
      if (poll (fds, 2, -1) < 0 && errno != EINTR)
        return 255;
      if (fds[1].revents)
        s_read_control (self, control, &control_len);
      if (fds[0].revents)
        {
          struct signalfd_siginfo info;
          while (read (signal_fd, &info, sizeof info) == (ssize_t)sizeof info)
            ;
        }
    }
}

/* ---- main ---------------------------------------------------------- */

static int
s_fail_before_start (fake_t *self, const char *why, bool report)
{
  s_write_atomic ("shim.log", why);
  if (report)
    s_report (self, ZCD_SYNC_ERROR, 0, ZCD_E_RUNTIME_ERROR, why);
  return 1;
}

static void
s_sleep_ms (long ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
    ;
}

/* Everything before the report: knobs that fail or delay the start. */
static int
s_start (fake_t *self)
{
  char knob[1024];
  if (s_knob (self, "die", knob, sizeof knob))
    return s_fail_before_start (self, knob, false);
  if (s_knob (self, "hang", knob, sizeof knob))
    for (;;)
      pause ();
  if (s_knob (self, "delay-ms", knob, sizeof knob))
    s_sleep_ms (atol (knob));
  if (s_knob (self, "start-error", knob, sizeof knob))
    return s_fail_before_start (self, knob, true);
  return 0;
}

int
main (int argc, char **argv)
{
  fake_t self = { .sync_fd = -1, .exit_fd = -1, .control_fd = -1 };
  s_parse (&self, argc, argv);
  s_standard_fds (&self);
  if (self.id == NULL || self.bundle == NULL)
    return s_fail_before_start (&self, "fakeshim: --id and --bundle are required", true);
  s_detach ();
  alarm (FAKE_LIFETIME_S);
  signal (SIGPIPE, SIG_IGN);
  char cwd[PATH_MAX];
  if (getcwd (cwd, sizeof cwd) == NULL)
    return s_fail_before_start (&self, "fakeshim: getcwd failed", true);
  snprintf (self.name, sizeof self.name, "%s", strrchr (cwd, '/') + 1);
  if (self.root)
    {
      snprintf (self.state, sizeof self.state, "%s/%s", self.root, self.id);
      mkdir (self.root, 0755);
      mkdir (self.state, 0755);
    }
  s_write_number ("shim.pid", getpid ());
  self.exit_fd = open ("exit", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (self.exit_fd < 0 && errno == ENXIO)
    self.exit_fd = open ("exit", O_RDWR | O_CLOEXEC);
  self.control_fd = open ("control", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (self.exit_fd < 0 || self.control_fd < 0)
    return s_fail_before_start (&self, "fakeshim: cannot open the exit or control FIFO", true);
  if (s_start (&self) != 0)
    return 1;

  /* SIGCHLD is blocked before the fork: an exit at once is not missed. */
  sigset_t chld;
  sigemptyset (&chld);
  sigaddset (&chld, SIGCHLD);
  sigprocmask (SIG_BLOCK, &chld, NULL);
  int signal_fd = signalfd (-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  char exit_knob[32];
  const char *exit_now = s_knob (&self, "exit", exit_knob, sizeof exit_knob);
  pid_t shim = getpid ();
  self.child = fork ();
  if (self.child == 0)
    s_process_main (shim, exit_now);
  if (self.child < 0 || signal_fd < 0)
    return s_fail_before_start (&self, "fakeshim: cannot start the process", true);
  char path[PATH_MAX + NAME_MAX + 8];
  s_write_number ("pid", self.child);
  s_write_number ("starttime", (long long)s_starttime (self.child));
  if (self.state[0])
    {
      s_state_path (&self, self.name, ".pid", path, sizeof path);
      s_write_number (path, self.child);
    }
  s_report (&self, ZCD_SYNC_STARTED, (int32_t)self.child, 0, NULL);

  int status = s_wait_process (&self, signal_fd);
  char knob[8];
  if (strcmp (self.name, "init") == 0 && !s_knob (&self, "keep-execs", knob, sizeof knob))
    s_kill_execs (&self);
  if (self.state[0])
    {
      s_state_path (&self, self.name, ".pid", path, sizeof path);
      unlink (path);
    }
  s_write_number ("exitStatus", status);
  return 0;
}
