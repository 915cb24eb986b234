/* zctr events / containers watch: the lossless event stream, one line an
 * event (one JSON object a line with --json). */
#include "tools/zctr/zctr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum
{
  OPT_ID = ZCTR_OPT_FIRST_LOCAL,
  OPT_SINCE_SEQ,
  OPT_COUNT,
};

/* One object per line, so a reader can split the stream; from a node,
 * the event goes inside an object that names the node and its boot. */
static void
s_print_event_json (const zcd_event_t *event, const zcd_fanout_event_t *from)
{
  if (from == NULL)
    {
      zcd_json_print (stdout, event->obj, false);
      fputc ('\n', stdout);
      return;
    }
  msgpack_object boot = { .type = MSGPACK_OBJECT_STR };
  boot.via.str.ptr = from->boot_id;
  boot.via.str.size = (uint32_t) strlen (from->boot_id);
  /* node names need no escaping (their syntax) */
  printf ("{\"node\": \"%s\", \"boot_id\": ", from->node);
  zcd_json_print (stdout, &boot, false);
  printf (", \"seq\": %llu, \"event\": ", (unsigned long long) event->seq);
  zcd_json_print (stdout, event->obj, false);
  printf ("}\n");
}

/* The longest event type (start-container): the type column's width, so
 * the ids of a stream line up without knowing the lines to come. */
#define TYPE_WIDTH 15

/* One line for people: TIME  #SEQ  TYPE  ID  PROCESS  key=value...; the
 * process id, host pid and status only where the event has them. */
void
zctr_print_event (zctr_t *z, const zcd_event_t *event, const zcd_fanout_event_t *from)
{
  if (z->json)
    {
      s_print_event_json (event, from);
      fflush (stdout);
      return;
    }
  zctr_fmt_t when;
  if (from)
    printf ("%s  ", from->node);
  printf ("%s  #%llu  ", zctr_fmt_time (when, event->ts, true), (unsigned long long) event->seq);
  /* the type and ids come from the daemon: no control character reaches
   * the terminal, as in tables */
  zctr_put_safe (stdout, event->type);
  printf ("%*s", TYPE_WIDTH > zctr_text_width (event->type)
                     ? (int) (TYPE_WIDTH - zctr_text_width (event->type)) + 2 : 2, "");
  zctr_put_safe (stdout, event->id[0] ? event->id : "-");
  if (event->pid)
    {
      fputs ("  ", stdout);
      zctr_put_safe (stdout, event->pid);
    }
  const char *sep = "  ";
  if (event->has_system_pid)
    printf ("%spid=%llu", sep, (unsigned long long) event->system_pid), sep = " ";
  if (event->has_status)
    printf ("%sstatus=%u", sep, event->status), sep = " ";
  if (event->oom_killed)
    printf ("%soom_killed", sep), sep = " ";
  uint64_t uid = 0;
  if (zcd_obj_uint (zcd_obj_get (event->obj, "uid"), &uid))
    printf ("%suid=%llu", sep, (unsigned long long) uid), sep = " ";
  if (from)
    printf ("%sboot=%.8s", sep, from->boot_id);
  fputc ('\n', stdout);
  fflush (stdout);
}

typedef struct
{
  const char *id;
  uint64_t since_seq;
  uint64_t count; /* 0 = forever */
} stream_args_t;

static int
s_stream_opt (void *ctx, int opt, const char *arg)
{
  stream_args_t *a = ctx;
  if (opt == OPT_ID)
    a->id = arg;
  else if (opt == OPT_SINCE_SEQ && !zctr_parse_u64 (arg, &a->since_seq))
    return zctr_error (ZCTR_EXIT_USAGE, "--since-seq: not a number: %s", arg);
  else if (opt == OPT_COUNT && !zctr_parse_u64 (arg, &a->count))
    return zctr_error (ZCTR_EXIT_USAGE, "--count: not a number: %s", arg);
  return 0;
}

static int
s_stream (zctr_t *z, const stream_args_t *a)
{
  zcd_subscriber_t *sub = zcd_subscriber_new (z->address, z->events_address, a->id, a->since_seq);
  if (sub == NULL)
    return zctr_error (ZCTR_EXIT_FAIL, "subscriber: %s", strerror (errno));
  zcd_subscriber_set_timeout (sub, z->timeout_ms);
  bool warned = false;
  int rc = 0;
  for (uint64_t seen = 0; a->count == 0 || seen < a->count;)
    {
      zcd_event_t *event = NULL;
      if (zcd_subscriber_next (sub, -1, &event) < 0)
        {
          if (errno == EINTR || errno == EAGAIN)
            continue;
          rc = zctr_error (ZCTR_EXIT_FAIL, "events: %s", zcd_subscriber_last_error (sub));
          break;
        }
      if (zcd_subscriber_truncated (sub) && !warned)
        {
          warned = true;
          zctr_error (0, "warning: events older than the daemon retains were asked for: "
                         "the replay is incomplete");
        }
      zctr_print_event (z, event, NULL);
      zcd_event_destroy (&event);
      seen++;
      if (ferror (stdout))
        break; /* the reader went away */
    }
  zcd_subscriber_destroy (&sub);
  return rc;
}

int
zctr_cmd_events (zctr_t *z, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "id", required_argument, NULL, OPT_ID },
    { "since-seq", required_argument, NULL, OPT_SINCE_SEQ },
    { "count", required_argument, NULL, OPT_COUNT },
    { NULL, 0, NULL, 0 },
  };
  /* without --since-seq: what happens from now on, as ctr events does */
  stream_args_t a = { .since_seq = ZCD_SINCE_NOW };
  int rc = zctr_getopt (z, argc, argv, longopts, s_stream_opt, &a);
  if (rc)
    return rc;
  if (optind < argc)
    return zctr_usage (z, false, "events [--id ID] [--since-seq N] [--count N]");
  if (z->nodes)
    return zctr_node_events (z, a.id, a.since_seq, a.count);
  return s_stream (z, &a);
}

int
zctr_cmd_watch (zctr_t *z, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "count", required_argument, NULL, OPT_COUNT },
    { "since-seq", required_argument, NULL, OPT_SINCE_SEQ },
    { NULL, 0, NULL, 0 },
  };
  stream_args_t a = { .since_seq = ZCD_SINCE_NOW };
  int rc = zctr_getopt (z, argc, argv, longopts, s_stream_opt, &a);
  if (rc)
    return rc;
  if (argc - optind > 1)
    return zctr_error (ZCTR_EXIT_USAGE, "usage: zctr containers watch [ID] [--count N]");
  a.id = optind < argc ? argv[optind] : NULL;
  return s_stream (z, &a);
}
