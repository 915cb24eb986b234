/* Event log throughput: appends with one flush (write + fdatasync) per 100
 * events and per event, full and tail replays, reopen.
 *
 * usage: bench_eventlog [events] [dir]   (defaults: 100000, a new dir in /tmp;
 * pass a directory on the state-dir's filesystem for honest fsync costs) */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/eventlog.h"
#include "core/fsutil.h"
#include "core/log.h"

static double
s_secs (void)
{
  return (double) zcd_mono_ns () / 1e9;
}

static int
s_count (const char *encoded, size_t len, uint64_t seq, void *arg)
{
  (*(uint64_t *) arg)++;
  return 0;
}

static int
s_die (zcd_error_t *err)
{
  fprintf (stderr, "bench_eventlog: %s\n", err ? err->msg : "append failed");
  return 1;
}

/* Appends n events, flushing every `batch`; returns events per second. */
static double
s_append (eventlog_t *log, uint64_t n, uint64_t batch, zcd_error_t **err)
{
  static const char *const ids[] = { "web1", "db-primary", "cache.7", "worker_12" };
  double t0 = s_secs ();
  for (uint64_t i = 1; i <= n; i++)
    {
      zcd_event_t ev = { .type = "exit", .id = ids[i % 4], .pid = "init", .has_status = true,
                         .status = 0, .system_pid = 40000 + (uint32_t) (i % 1000) };
      if (eventlog_append (log, &ev, NULL, NULL) == 0)
        return -1;
      if ((i % batch == 0 || i == n) && eventlog_flush (log, err) < 0)
        return -1;
    }
  return (double) n / (s_secs () - t0);
}

int
main (int argc, char **argv)
{
  uint64_t n = argc > 1 ? strtoull (argv[1], NULL, 10) : 100000;
  char tmpl[] = "/tmp/bench_eventlog.XXXXXX";
  const char *dir = argc > 2 ? argv[2] : mkdtemp (tmpl);
  if (n == 0 || dir == NULL)
    {
      fprintf (stderr, "usage: bench_eventlog [events] [dir]\n");
      return 2;
    }
  zcd_log_set_min (ZCD_LOG_WARN);
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/bench-events.log", dir);
  remove (path);

  zcd_error_t *err = NULL;
  eventlog_t *log = NULL;
  if (eventlog_open (path, n, &log, &err) < 0)
    return s_die (err);
  double rate100 = s_append (log, n, 100, &err);
  if (rate100 < 0)
    return s_die (err);
  double rate1 = s_append (log, n / 50 ? n / 50 : 1, 1, &err);
  if (rate1 < 0)
    return s_die (err);

  uint64_t seen = 0;
  double t0 = s_secs ();
  eventlog_replay (log, 0, INT64_MIN, NULL, s_count, &seen, NULL);
  double full = s_secs () - t0;
  uint64_t tail = 0;
  const int tail_reps = 10000;
  t0 = s_secs ();
  for (int i = 0; i < tail_reps; i++)
    eventlog_replay (log, eventlog_last_seq (log) - 10, INT64_MIN, NULL, s_count, &tail, NULL);
  double tail_secs = s_secs () - t0;
  uint64_t by_id = 0;
  t0 = s_secs ();
  eventlog_replay (log, 0, INT64_MIN, "web1", s_count, &by_id, NULL);
  double id_secs = s_secs () - t0;
  eventlog_destroy (&log);

  t0 = s_secs ();
  if (eventlog_open (path, n, &log, &err) < 0)
    return s_die (err);
  double reopen = s_secs () - t0;
  printf ("eventlog in %s, retain %" PRIu64 "\n", dir, n);
  printf ("  append, flush per 100 events: %10.0f events/s\n", rate100);
  printf ("  append, flush per event:      %10.0f events/s\n", rate1);
  printf ("  replay all (%" PRIu64 "):        %10.0f events/s\n", seen, (double) seen / full);
  printf ("  replay since_seq last-10:     %10.0f ns/request\n", tail_secs * 1e9 / tail_reps);
  printf ("  replay id filter (%" PRIu64 " hits): %8.1f ms\n", by_id, id_secs * 1e3);
  printf ("  reopen (%zu retained):      %10.1f ms\n", eventlog_count (log), reopen * 1e3);
  eventlog_destroy (&log);
  remove (path);
  if (argc <= 2)
    remove (dir);
  return 0;
}
