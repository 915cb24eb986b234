/* Load driver for the fan-out client (libzcd's zcd_fanout_t): creates N
 * containers spread round robin over the chosen nodes of a node file, at
 * most C create requests in flight in all, and follows their exits through
 * the merged event stream.  Prints one JSON object on stdout for
 * bench/bench_fanout.py.
 *
 * usage: fanout_load -f NODEFILE -b BUNDLE -n N -c C -p PREFIX [-o NODE,NODE..] [-t SECONDS]
 *   creates/s = create replies ok / (last create reply - first send);
 *   lifecycles/s = the same containers / (last init exit event - first send). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/zcd_client.h"

typedef struct
{
  size_t node;
  uint64_t rid;
  double sent;
} slot_t;

typedef struct
{
  const char *file, *bundle, *prefix, *only;
  uint64_t n, c;
  double timeout_s;
} opts_t;

static double
s_now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
s_cmp_double (const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The chosen node indexes (-o, else every node). */
static size_t
s_nodes (zcd_fanout_t *fo, const char *only, size_t *idx)
{
  size_t n = 0;
  if (only == NULL)
    {
      for (size_t i = 0; i < zcd_fanout_size (fo); i++)
        idx[n++] = i;
      return n;
    }
  char *copy = strdup (only), *save = NULL;
  for (char *name = strtok_r (copy, ",", &save); name; name = strtok_r (NULL, ",", &save))
    {
      int i = zcd_fanout_node_index (fo, name);
      if (i < 0)
        {
          fprintf (stderr, "fanout_load: no node %s\n", name);
          exit (2);
        }
      idx[n++] = (size_t)i;
    }
  free (copy);
  return n;
}

/* Start the event stream and wait until every node has synced: exits of
 * the creates to come are then all after the stream's starting point. */
static void
s_prime_events (zcd_fanout_t *fo, double deadline)
{
  zcd_fanout_event_t *fe = NULL;
  for (;;)
    {
      bool all = true;
      for (size_t i = 0; i < zcd_fanout_size (fo); i++)
        all = all && *zcd_fanout_node_boot_id (fo, i);
      if (all)
        return;
      if (s_now () > deadline)
        {
          fprintf (stderr, "fanout_load: the event streams did not start\n");
          exit (1);
        }
      if (zcd_fanout_next_event (fo, 100, &fe) == 0)
        zcd_fanout_event_destroy (&fe);
    }
}

static uint64_t s_exits;
static double s_last_exit;

static void
s_drain_events (zcd_fanout_t *fo, const char *prefix, int timeout_ms)
{
  zcd_fanout_event_t *fe = NULL;
  while (zcd_fanout_next_event (fo, timeout_ms, &fe) == 0)
    {
      const zcd_event_t *e = fe->event;
      if (strcmp (e->type, "exit") == 0 && e->pid && strcmp (e->pid, "init") == 0
          && strncmp (e->id, prefix, strlen (prefix)) == 0)
        {
          s_exits++;
          s_last_exit = s_now ();
        }
      zcd_fanout_event_destroy (&fe);
      timeout_ms = 0;
    }
}

static uint64_t
s_send_create (zcd_fanout_t *fo, size_t node, const opts_t *o, uint64_t k)
{
  char id[128];
  snprintf (id, sizeof id, "%s-%s-%" PRIu64, o->prefix, zcd_fanout_node_name (fo, node), k);
  zcd_body_t *body = zcd_body_for_create (id, o->bundle, NULL);
  size_t len = 0;
  const char *data = zcd_body_data (body, &len);
  uint64_t rid = zcd_fanout_send (fo, node, data, len);
  zcd_body_destroy (&body);
  return rid;
}

static int
s_run (zcd_fanout_t *fo, const opts_t *o)
{
  size_t idx[zcd_fanout_size (fo)];
  size_t n_nodes = s_nodes (fo, o->only, idx);
  double deadline = s_now () + o->timeout_s;
  s_prime_events (fo, deadline);
  slot_t *slots = calloc (o->c, sizeof *slots);
  double *lat = calloc (o->n ? o->n : 1, sizeof *lat);
  uint64_t sent = 0, ok = 0, failed = 0, in_flight = 0;
  char first_error[256] = "";
  double t0 = s_now (), t_last_reply = t0;
  while ((sent < o->n || in_flight) && s_now () < deadline)
    {
      for (size_t s = 0; s < o->c && sent < o->n; s++)
        if (slots[s].rid == 0)
          {
            slots[s].node = idx[sent % n_nodes];
            slots[s].sent = s_now ();
            slots[s].rid = s_send_create (fo, slots[s].node, o, sent);
            sent++, in_flight += slots[s].rid != 0, failed += slots[s].rid == 0;
          }
      size_t node;
      zcd_reply_t *reply = NULL;
      if (zcd_fanout_recv (fo, 100, &node, &reply) == 0 && zcd_reply_final (reply))
        for (size_t s = 0; s < o->c; s++)
          if (slots[s].rid && slots[s].node == node && slots[s].rid == zcd_reply_rid (reply))
            {
              t_last_reply = s_now ();
              if (zcd_reply_ok (reply))
                lat[ok++] = (t_last_reply - slots[s].sent) * 1000.0;
              else if (failed++ == 0)
                snprintf (first_error, sizeof first_error, "%s: %s", zcd_reply_error_code (reply),
                          zcd_reply_error_message (reply));
              slots[s].rid = 0;
              in_flight--;
            }
      zcd_reply_destroy (&reply);
      s_drain_events (fo, o->prefix, 0);
    }
  while (s_exits < ok && s_now () < deadline)
    s_drain_events (fo, o->prefix, 100);
  qsort (lat, ok, sizeof *lat, s_cmp_double);
  for (char *c = first_error; *c; c++)
    if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
      *c = ' '; /* printed inside a JSON string */
  double elapsed = t_last_reply - t0, life = s_last_exit - t0;
#define PCT(p) (ok ? lat[(size_t)((ok - 1) * (p) / 100)] : 0.0)
  printf (
      "{\"nodes\": %zu, \"n\": %" PRIu64 ", \"c\": %" PRIu64 ", \"ok\": %" PRIu64
      ", \"failed\": %" PRIu64 ", \"unfinished\": %" PRIu64 ", \"exits\": %" PRIu64
      ", \"elapsed_s\": %.4f, \"per_s\": %.2f, \"lifecycle_s\": %.4f, \"lifecycles_per_s\": %.2f"
      ", \"create_ms\": {\"n\": %" PRIu64 ", \"p50\": %.2f, \"p95\": %.2f, \"max\": %.2f}"
      ", \"first_error\": \"%s\"}\n",
      n_nodes, o->n, o->c, ok, failed, o->n - ok - failed, s_exits, elapsed,
      elapsed > 0 ? (double)ok / elapsed : 0.0, life, life > 0 ? (double)s_exits / life : 0.0, ok,
      PCT (50), PCT (95), PCT (100), first_error);
  free (slots);
  free (lat);
  return ok == o->n && s_exits == ok ? 0 : 1;
}

int
main (int argc, char **argv)
{
  opts_t o = { .n = 60, .c = 8, .prefix = "zb-fo", .timeout_s = 300 };
  int opt;
  while ((opt = getopt (argc, argv, "f:b:n:c:p:o:t:")) != -1)
    switch (opt)
      {
      case 'f':
        o.file = optarg;
        break;
      case 'b':
        o.bundle = optarg;
        break;
      case 'n':
        o.n = strtoull (optarg, NULL, 10);
        break;
      case 'c':
        o.c = strtoull (optarg, NULL, 10);
        break;
      case 'p':
        o.prefix = optarg;
        break;
      case 'o':
        o.only = optarg;
        break;
      case 't':
        o.timeout_s = strtod (optarg, NULL);
        break;
      default:
        fprintf (stderr, "usage: fanout_load -f NODEFILE -b BUNDLE -n N -c C -p PREFIX "
                         "[-o NODE,NODE] [-t SECONDS]\n");
        return 2;
      }
  if (o.file == NULL || o.bundle == NULL || o.c == 0)
    {
      fprintf (stderr, "fanout_load: -f and -b are required, -c at least 1\n");
      return 2;
    }
  zcd_fanout_t *fo = zcd_fanout_new ();
  if (fo == NULL || zcd_fanout_load (fo, o.file) < 0)
    {
      fprintf (stderr, "fanout_load: %s\n", fo ? zcd_fanout_last_error (fo) : strerror (errno));
      return 2;
    }
  zcd_fanout_set_timeout (fo, 60000);
  int rc = s_run (fo, &o);
  zcd_fanout_destroy (&fo);
  return rc;
}
