/* The lossless subscriber (libzcd) against a real daemon, with a receive
 * high-water mark of 10 and a consumer that stalls while the daemon
 * publishes.  The daemon, its containers and the event traffic are set up
 * by tests/integration/test_events_log.py, which runs this binary with:
 *   ZCD_LIVE_ADDRESS, ZCD_LIVE_EVENTS_ADDRESS  the daemon's endpoints
 *   ZCD_LIVE_GO      a path: the consumer stalls until it exists
 *   ZCD_LIVE_END     a path the producer writes the last seq it caused to,
 *                    once done: the consumer stops after that seq
 *   ZCD_LIVE_OUT     where one line per event goes ("seq type id"), then
 *                    "replays N"
 * Started by tests/run-unit without them, it skips. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/zcd_client.h"

#define RCVHWM 10
#define DEADLINE_S 240

static double
s_now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The stall: the consumer reads nothing until the producer says so. */
static void
s_stall_until (const char *path, double deadline)
{
  const struct timespec tick = { 0, 5 * 1000 * 1000 };
  while (access (path, F_OK) != 0)
    {
      assert_true (s_now () < deadline);
      nanosleep (&tick, NULL);
    }
}

/* The producer's last seq, 0 while it is not done. */
static uint64_t
s_read_last (const char *path)
{
  FILE *f = fopen (path, "r");
  unsigned long long last = 0;
  if (f == NULL)
    return 0;
  if (fscanf (f, "%llu", &last) != 1)
    last = 0;
  fclose (f);
  return last;
}

static void
test_every_seq_once_in_order (void **state)
{
  (void) state;
  const char *cmd_ep = getenv ("ZCD_LIVE_ADDRESS");
  const char *evt_ep = getenv ("ZCD_LIVE_EVENTS_ADDRESS");
  const char *end_path = getenv ("ZCD_LIVE_END");
  const char *go = getenv ("ZCD_LIVE_GO");
  const char *out_path = getenv ("ZCD_LIVE_OUT");
  if (!cmd_ep || !evt_ep || !end_path || !go || !out_path)
    {
      print_message ("no daemon given (run by tests/integration/test_events_log.py)\n");
      skip ();
    }
  double deadline = s_now () + DEADLINE_S;
  FILE *out = fopen (out_path, "w");
  assert_non_null (out);

  zcd_subscriber_t *sub = zcd_subscriber_new (cmd_ep, evt_ep, NULL, 0);
  assert_non_null (sub);
  zcd_subscriber_set_rcvhwm (sub, RCVHWM);
  zcd_subscriber_set_timeout (sub, 30000);
  if (zcd_subscriber_start (sub) < 0)
    fail_msg ("start: %s", zcd_subscriber_last_error (sub));
  printf ("started\n");
  fflush (stdout);
  s_stall_until (go, deadline);

  uint64_t expect = 1, last = 0;
  while (last == 0 || expect <= last)
    {
      assert_true (s_now () < deadline);
      if (last == 0)
        last = s_read_last (end_path);
      zcd_event_t *ev = NULL;
      if (zcd_subscriber_next (sub, 200, &ev) < 0)
        {
          /* a replay that failed is retried by the next call */
          assert_true (errno == EAGAIN || errno == EINTR || errno == ETIMEDOUT);
          continue;
        }
      fprintf (out, "%llu %s %s\n", (unsigned long long) ev->seq, ev->type, ev->id);
      if (ev->seq != expect)
        fail_msg ("got seq %llu, expected %llu", (unsigned long long) ev->seq,
                  (unsigned long long) expect);
      expect++;
      zcd_event_destroy (&ev);
    }
  /* nothing beyond what was produced, and nothing twice */
  zcd_event_t *extra = NULL;
  assert_int_equal (zcd_subscriber_next (sub, 300, &extra), -1);
  assert_false (zcd_subscriber_truncated (sub));
  fprintf (out, "replays %llu\n", (unsigned long long) zcd_subscriber_replays (sub));
  fclose (out);
  zcd_subscriber_destroy (&sub);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_every_seq_once_in_order),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
