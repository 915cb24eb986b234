/* Scrapes and the daemon's Prometheus families (see actors/metrics_prom.h,
 * docs/metrics.md). */
#include "actors/metrics_prom.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/supervisor_int.h"
#include "core/cleanup.h"
#include "core/eventlog.h"
#include "core/log.h"
#include "core/metrics_http.h"
#include "core/mp.h"

/* A `collect` token of an HTTP scrape: the edge's tokens count up from 1
 * and never get there, so one reply path serves both. */
#define HTTP_TOKEN_BIT (1ULL << 63)

/* A scrape waiting for the stats actor. */
typedef struct pending
{
  bool http; /* answer metrics_http scrape http_id; else the parked request */
  uint64_t http_id;
  zcd_caller_t caller;
} pending_t;

struct metrics_prom
{
  /* By proto_event_t; the last: a type the schema does not name. */
  uint64_t events_by_type[PROTO_EVENT_COUNT + 1];
  metrics_hist_t start_latency;
  zhashx_t *pending; /* collect token -> pending_t */
  metrics_http_t *http;
};

metrics_prom_t *
metrics_prom_new (void)
{
  metrics_prom_t *self = calloc (1, sizeof *self);
  self->pending = zhashx_new ();
  zhashx_set_key_duplicator (self->pending, NULL);
  zhashx_set_key_destructor (self->pending, NULL);
  zhashx_set_key_hasher (self->pending, edge_token_hash);
  zhashx_set_key_comparator (self->pending, edge_token_compare);
  return self;
}

void
metrics_prom_destroy (metrics_prom_t **pself)
{
  if (pself == NULL || *pself == NULL)
    return;
  metrics_prom_t *self = *pself;
  metrics_http_destroy (&self->http);
  for (pending_t *p = zhashx_first (self->pending); p; p = zhashx_next (self->pending))
    free (p);
  zhashx_destroy (&self->pending);
  free (self);
  *pself = NULL;
}

void
metrics_prom_count_event (metrics_prom_t *self, const char *type)
{
  size_t i = 0;
  while (i < PROTO_EVENT_COUNT && strcmp (proto_event_names[i], type) != 0)
    i++;
  self->events_by_type[i]++;
}

void
metrics_prom_start_latency (metrics_prom_t *self, uint64_t ns)
{
  metrics_hist_observe (&self->start_latency, ns);
}

/* ------------------------------------------------------------------ */
/* The daemon's families                                               */

/* Every counter of the `metrics` map, as the map has it. */
static void
s_put_counters (metrics_text_t *t, const supervisor_counters_t *c)
{
  const struct
  {
    const char *name, *type, *help;
    uint64_t value;
  } f[] = {
    { "zcd_containers", "gauge", "Containers the daemon runs now.", c->containers },
    { "zcd_processes", "gauge", "Processes (inits and execs) of those containers.", c->processes },
    { "zcd_events_total", "counter", "Events logged and published since the daemon started.",
      c->events_total },
    { "zcd_requests_total", "counter", "Requests received, valid or not.", c->requests_total },
    { "zcd_errors_total", "counter", "Requests answered with an error.", c->errors_total },
    { "zcd_resident_memory_bytes", "gauge", "The daemon's resident memory.", c->rss_bytes },
    { "zcd_open_fds", "gauge", "File descriptors the daemon holds open.", c->open_fds },
    { "zcd_replies_lost_total", "counter", "Replies whose client was gone.", c->replies_lost },
    { "zcd_requests_dropped_total", "counter",
      "Requests dropped unanswered from clients that did not read their replies.",
      c->requests_dropped },
    { "zcd_oversized_total", "counter", "Messages dropped for too many frames or bytes.",
      c->oversized },
    { "zcd_replays_abandoned_total", "counter",
      "events replays ended because their client went away.", c->replays_abandoned },
    { "zcd_replays_stalled_total", "counter", "events replays ended with busy after stalling.",
      c->replays_stalled },
    { "zcd_actor_messages_total", "counter", "Messages between the daemon's actors.",
      c->actors.sent },
    { "zcd_actor_send_failures_total", "counter", "Internal sends refused; each is logged.",
      c->actors.send_failures },
    { "zcd_actor_overflowed_total", "counter",
      "Internal messages that waited for room in a full mailbox.", c->actors.overflowed },
    { "zcd_actor_overflow_depth", "gauge", "Internal messages waiting for room now.",
      c->actors.overflow_depth },
    { "zcd_actor_overflow_peak", "gauge",
      "The most internal messages that ever waited for room at once.", c->actors.overflow_peak },
    { "zcd_actor_refused_total", "counter",
      "Internal messages refused by their receiver; each is logged.", c->actors.refused },
  };
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
    metrics_put_one (t, f[i].name, f[i].type, f[i].help, f[i].value);
  metrics_family (t, "zcd_uptime_seconds", "gauge", "Time since the daemon started.");
  metrics_put_seconds (t, "zcd_uptime_seconds", NULL, 0, c->uptime_ns);
}

static void
s_put_events (metrics_text_t *t, const metrics_prom_t *self)
{
  metrics_family (t, "zcd_events_by_type_total", "counter",
                  "Events logged and published since the daemon started, by type.");
  for (size_t i = 0; i <= PROTO_EVENT_COUNT; i++)
    {
      metrics_label_t type = { "type", i < PROTO_EVENT_COUNT ? proto_event_names[i] : "other" };
      /* "other" only once there is one: the schema names every type. */
      if (i < PROTO_EVENT_COUNT || self->events_by_type[i])
        metrics_put_u64 (t, "zcd_events_by_type_total", &type, 1, self->events_by_type[i]);
    }
}

static void
s_put_latencies (metrics_text_t *t, supervisor_t *sup)
{
  metrics_family (t, "zcd_request_duration_seconds", "histogram",
                  "From a valid request's arrival to its final reply leaving, by op.");
  for (size_t op = 0; op < PROTO_OP_COUNT; op++)
    {
      metrics_label_t label = { "op", proto_ops[op].name };
      metrics_put_hist (t, "zcd_request_duration_seconds", &label, 1,
                        edge_request_latency (sup->edge, (proto_op_code_t)op));
    }
  metrics_family (t, "zcd_start_latency_seconds", "histogram",
                  "From a create's arrival to its container running (successful starts).");
  metrics_put_hist (t, "zcd_start_latency_seconds", NULL, 0, &sup->prom->start_latency);
  metrics_put_one (t, "zcd_eventlog_written_bytes_total", "counter",
                   "Bytes written to the event log: committed records and compactions.",
                   eventlog_written_bytes (sup->log));
  metrics_family (t, "zcd_eventlog_fsync_duration_seconds", "histogram",
                  "Event-log commits, from the submit of their write and fdatasync to its "
                  "completion.");
  metrics_put_hist (t, "zcd_eventlog_fsync_duration_seconds", NULL, 0,
                    eventlog_fsync_latency (sup->log));
}

/* The whole text; NULL when memory ran out. */
static char *
s_write_text (supervisor_t *sup, const zcd_caller_t *caller, const msgpack_object *stats,
              size_t *len)
{
  metrics_text_t t;
  metrics_text_init (&t);
  supervisor_counters_t c;
  supervisor_read_counters (sup, &c);
  s_put_counters (&t, &c);
  s_put_events (&t, sup->prom);
  s_put_latencies (&t, sup);
  metrics_prom_put_containers (sup, &t, caller, stats);
  if (sup->prom->http)
    metrics_http_put (sup->prom->http, &t);
  return metrics_text_take (&t, len);
}

/* ------------------------------------------------------------------ */
/* Scrapes                                                             */

static int
s_compare_strs (const void *a, const void *b)
{
  return strcmp (*(char *const *)a, *(char *const *)b);
}

static void
s_fail (supervisor_t *sup, uint64_t token, const pending_t *p, zcd_code_t code, const char *msg)
{
  if (p->http)
    {
      char *text = NULL;
      if (asprintf (&text, "%s\n", msg) < 0)
        text = NULL;
      metrics_http_answer (sup->prom->http, p->http_id, 503, text, text ? strlen (text) : 0);
    }
  else
    edge_reply_error (sup->edge, token, code, msg);
}

/* Ask the stats actor for the numbers of the containers p's caller may
 * see (sorted: the text lists them in order); p is taken. */
static void
s_start (supervisor_t *sup, uint64_t token, pending_t *p)
{
  size_t cap = zhashx_size (sup->containers), n = 0;
  cleanup_free char **ids = calloc (cap + 1, sizeof *ids);
  for (container_entry_t *e = zhashx_first (sup->containers); e; e = zhashx_next (sup->containers))
    if (e->view && supervisor_may_see (&p->caller, e))
      ids[n++] = e->id;
  qsort (ids, n, sizeof *ids, s_compare_strs);
  amsg_collect_t m = {
    .token = token,
    .ids = (const char *const *)ids,
    .has_oom_kills = true,
    .oom_kills = true,
  };
  cleanup_error zcd_error_t *err = NULL;
  if (amsg_collect_send (sup->daemon->actors, SUPERVISOR_NAME, STATS_ACTOR, &m, &err) < 0)
    {
      s_fail (sup, token, p, err->code, err->msg);
      free (p);
      return;
    }
  zhashx_insert (sup->prom->pending, (void *)(uintptr_t)token, p);
}

void
metrics_prom_op (supervisor_t *sup, edge_request_t *req)
{
  pending_t *p = calloc (1, sizeof *p);
  p->caller = *edge_request_caller (req);
  s_start (sup, edge_request_park (sup->edge, req), p);
}

static void
s_on_http (void *arg, uint64_t id)
{
  supervisor_t *sup = arg;
  pending_t *p = calloc (1, sizeof *p);
  p->http = true;
  p->http_id = id;
  /* Whoever may reach the port sees every container: the operator chose
   * the address (docs/metrics.md). */
  p->caller = ZCD_CALLER_ADMIN;
  s_start (sup, HTTP_TOKEN_BIT | id, p);
}

/* The text as the op's result, {"text": str}. */
static void
s_reply_op (supervisor_t *sup, uint64_t token, const char *text, size_t len)
{
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 1);
  mp_pack_str (&pk, "text");
  msgpack_pack_str (&pk, len);
  msgpack_pack_str_body (&pk, text, len);
  msgpack_object result = { .type = MSGPACK_OBJECT_BIN };
  result.via.bin.ptr = buf.data;
  result.via.bin.size = (uint32_t)buf.size;
  edge_reply_parked_ok (sup->edge, token, &result, 0);
  msgpack_sbuffer_destroy (&buf);
}

bool
metrics_prom_on_reply (supervisor_t *sup, const amsg_reply_t *m)
{
  pending_t *p = zhashx_lookup (sup->prom->pending, (void *)(uintptr_t)m->token);
  if (p == NULL)
    return false;
  zhashx_delete (sup->prom->pending, (void *)(uintptr_t)m->token);
  msgpack_unpacked result;
  msgpack_unpacked_init (&result);
  if (!m->ok || m->result.ptr == NULL
      || mp_unpack (m->result.ptr, m->result.size, &result, NULL) < 0
      || result.data.type != MSGPACK_OBJECT_MAP)
    s_fail (sup, m->token, p, m->has_code ? m->code : ZCD_E_INTERNAL,
            m->message ? m->message : "the stats actor gave no numbers");
  else
    {
      size_t len = 0;
      char *text = s_write_text (sup, &p->caller, &result.data, &len);
      if (text == NULL)
        s_fail (sup, m->token, p, ZCD_E_INTERNAL, "out of memory writing the metrics");
      else if (p->http)
        metrics_http_answer (sup->prom->http, p->http_id, 200, text, len);
      else
        {
          s_reply_op (sup, m->token, text, len);
          free (text);
        }
    }
  msgpack_unpacked_destroy (&result);
  free (p);
  return true;
}

int
metrics_prom_serve (supervisor_t *sup, int listen_fd, zcd_error_t **err)
{
  metrics_http_destroy (&sup->prom->http);
  sup->prom->http = metrics_http_new (sup->daemon->loop, listen_fd, s_on_http, sup, err);
  return sup->prom->http ? 0 : -1;
}
