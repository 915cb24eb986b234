/* The bare OCI runtime doing a container lifecycle, C at a time: the floor
 * that zcd's start throughput is compared with (bench/run).
 *
 * usage: bare -r RUNTIME -b BUNDLE -n N -c C -p PREFIX -m lifecycle|run
 *   lifecycle: `RUNTIME create --pid-file` + `start` + wait for the container
 *              process + `delete`: the same work zcd's shim does
 *   run:       one `RUNTIME run` (create, start, wait, delete in one process)
 * Prints one JSON object: containers/s, and per container the latency of
 * create+start (lifecycle mode) and of the whole lifecycle.
 *
 * The process is a child subreaper, so a container process (whose parent,
 * `RUNTIME create`, exits at once) is reparented here and waited for like
 * the shim does. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fsutil.h"

extern char **environ;

typedef struct
{
  const char *runtime, *bundle, *prefix, *mode, *tmp;
  uint64_t n, c;
} opts_t;

typedef struct
{
  uint64_t start_ns; /* create + start: what a zcd `create` reply waits for */
  uint64_t total_ns; /* through delete */
  bool ok;
} sample_t;

typedef struct
{
  const opts_t *o;
  sample_t *samples;
  atomic_uint_fast64_t next;
  pthread_mutex_t error_lock;
  char first_error[512];
} run_t;

static void
s_note_error (run_t *self, const char *fmt, const char *arg, int code)
{
  pthread_mutex_lock (&self->error_lock);
  if (self->first_error[0] == '\0') {
    int n = snprintf (self->first_error, sizeof self->first_error, fmt, arg);
    if (n > 0 && (size_t) n < sizeof self->first_error)
      snprintf (self->first_error + n, sizeof self->first_error - (size_t) n, " (status %d)",
                code);
  }
  pthread_mutex_unlock (&self->error_lock);
}

/* Runs argv to completion with stdio on /dev/null; its wait status. */
static int
s_run (char *const argv[])
{
  posix_spawn_file_actions_t fa;
  pid_t pid;
  int status = -1;
  posix_spawn_file_actions_init (&fa);
  for (int fd = 0; fd < 3; fd++)
    posix_spawn_file_actions_addopen (&fa, fd, "/dev/null", fd ? O_WRONLY : O_RDONLY, 0);
  int rc = posix_spawnp (&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy (&fa);
  if (rc != 0)
    return -1;
  while (waitpid (pid, &status, 0) < 0)
    if (errno != EINTR)
      return -1;
  return status;
}

static pid_t
s_read_pid (const char *path)
{
  char buf[32] = "";
  FILE *f = fopen (path, "r");
  if (!f)
    return -1;
  if (!fgets (buf, sizeof buf, f))
    buf[0] = '\0';
  fclose (f);
  return (pid_t) atoi (buf);
}

/* create, start, wait, delete; fills *s. */
static void
s_lifecycle (run_t *self, const char *id, sample_t *s)
{
  const opts_t *o = self->o;
  char pidfile[4200];
  snprintf (pidfile, sizeof pidfile, "%s/%s.pid", o->tmp, id);
  char *create[] = { (char *) o->runtime, "create", "--bundle", (char *) o->bundle,
                     "--pid-file", pidfile, (char *) id, NULL };
  char *start[] = { (char *) o->runtime, "start", (char *) id, NULL };
  char *delete[] = { (char *) o->runtime, "delete", (char *) id, NULL };
  uint64_t t0 = zcd_mono_ns ();
  int st = s_run (create);
  if (st != 0) {
    s_note_error (self, "%s create failed", o->runtime, st);
    return;
  }
  pid_t pid = s_read_pid (pidfile);
  unlink (pidfile);
  st = s_run (start);
  s->start_ns = zcd_mono_ns () - t0;
  if (st != 0) {
    s_note_error (self, "%s start failed", o->runtime, st);
    s_run (delete);
    return;
  }
  if (pid > 0)
    while (waitpid (pid, &st, 0) < 0 && errno == EINTR)
      ;
  st = s_run (delete);
  s->total_ns = zcd_mono_ns () - t0;
  s->ok = st == 0;
  if (st != 0)
    s_note_error (self, "%s delete failed", o->runtime, st);
}

static void
s_run_once (run_t *self, const char *id, sample_t *s)
{
  char *run[] = { (char *) self->o->runtime, "run", "--bundle", (char *) self->o->bundle,
                  (char *) id, NULL };
  uint64_t t0 = zcd_mono_ns ();
  int st = s_run (run);
  s->total_ns = zcd_mono_ns () - t0;
  s->ok = st == 0;
  if (st != 0)
    s_note_error (self, "%s run failed", self->o->runtime, st);
}

static void *
s_worker (void *arg)
{
  run_t *self = arg;
  bool whole_run = strcmp (self->o->mode, "run") == 0;
  for (;;) {
    uint64_t i = atomic_fetch_add (&self->next, 1);
    if (i >= self->o->n)
      return NULL;
    char id[128];
    snprintf (id, sizeof id, "%s-%" PRIu64, self->o->prefix, i);
    if (whole_run)
      s_run_once (self, id, &self->samples[i]);
    else
      s_lifecycle (self, id, &self->samples[i]);
  }
}

static int
s_cmp_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  return x < y ? -1 : x > y;
}

static double
s_pct_ms (const uint64_t *v, size_t n, double q)
{
  if (n == 0)
    return 0;
  size_t rank = (size_t) (q * (double) n + 0.999999);
  rank = rank < 1 ? 1 : rank > n ? n : rank;
  return (double) v[rank - 1] / 1e6;
}

static void
s_print_latency (const char *name, uint64_t *v, size_t n)
{
  double sum = 0;
  qsort (v, n, sizeof *v, s_cmp_u64);
  for (size_t i = 0; i < n; i++)
    sum += (double) v[i];
  printf ("\"%s\": {\"n\": %zu, \"p50\": %.3f, \"p95\": %.3f, \"p99\": %.3f, "
          "\"max\": %.3f, \"mean\": %.3f}",
          name, n, s_pct_ms (v, n, 0.50), s_pct_ms (v, n, 0.95), s_pct_ms (v, n, 0.99),
          n ? (double) v[n - 1] / 1e6 : 0.0, n ? sum / (double) n / 1e6 : 0.0);
}

static void
s_report (run_t *self, double secs)
{
  const opts_t *o = self->o;
  uint64_t *start = calloc (o->n + 1, sizeof *start), *total = calloc (o->n + 1, sizeof *total);
  size_t ok = 0;
  for (uint64_t i = 0; i < o->n; i++)
    if (self->samples[i].ok) {
      start[ok] = self->samples[i].start_ns;
      total[ok++] = self->samples[i].total_ns;
    }
  printf ("{\"mode\": \"%s\", \"runtime\": \"%s\", \"n\": %" PRIu64 ", \"c\": %" PRIu64
          ", \"ok\": %zu, \"failed\": %zu, \"elapsed_s\": %.4f, \"per_s\": %.2f, ",
          o->mode, o->runtime, o->n, o->c, ok, (size_t) o->n - ok, secs,
          secs > 0 ? (double) ok / secs : 0.0);
  if (strcmp (o->mode, "lifecycle") == 0) {
    s_print_latency ("create_start_ms", start, ok);
    printf (", ");
  }
  s_print_latency ("lifecycle_ms", total, ok);
  printf (", \"first_error\": \"");
  for (const char *p = self->first_error; *p; p++)
    if (*p != '"' && *p != '\\' && (unsigned char) *p >= 0x20)
      putchar (*p);
  printf ("\"}\n");
  free (start);
  free (total);
}

int
main (int argc, char **argv)
{
  opts_t o = { .runtime = "runc", .prefix = "bare", .mode = "lifecycle", .n = 100, .c = 1 };
  int ch;
  while ((ch = getopt (argc, argv, "r:b:n:c:p:m:")) != -1) {
    switch (ch) {
      case 'r': o.runtime = optarg; break;
      case 'b': o.bundle = optarg; break;
      case 'n': o.n = strtoull (optarg, NULL, 10); break;
      case 'c': o.c = strtoull (optarg, NULL, 10); break;
      case 'p': o.prefix = optarg; break;
      case 'm': o.mode = optarg; break;
      default: goto usage;
    }
  }
  if (!o.bundle || o.c == 0 || o.c > 1024
      || (strcmp (o.mode, "lifecycle") != 0 && strcmp (o.mode, "run") != 0))
    goto usage;
  char tmp[] = "/tmp/zcd-bare-XXXXXX";
  if (!mkdtemp (tmp) || prctl (PR_SET_CHILD_SUBREAPER, 1) != 0) {
    perror ("bare: setup");
    return 2;
  }
  o.tmp = tmp;
  run_t self = { .o = &o, .samples = calloc (o.n + 1, sizeof (sample_t)) };
  atomic_init (&self.next, 0);
  pthread_mutex_init (&self.error_lock, NULL);
  pthread_t *threads = calloc (o.c, sizeof *threads);
  uint64_t t0 = zcd_mono_ns ();
  for (uint64_t i = 0; i < o.c; i++)
    pthread_create (&threads[i], NULL, s_worker, &self);
  for (uint64_t i = 0; i < o.c; i++)
    pthread_join (threads[i], NULL);
  double secs = (double) (zcd_mono_ns () - t0) / 1e9;
  /* Runtime helpers reparented here during the run are reaped only now. */
  while (waitpid (-1, NULL, WNOHANG) > 0)
    ;
  s_report (&self, secs);
  rmdir (tmp);
  free (threads);
  free (self.samples);
  return 0;
usage:
  fputs ("usage: bare -r RUNTIME -b BUNDLE -n N -c C [-p PREFIX] [-m lifecycle|run]\n", stderr);
  return 2;
}
