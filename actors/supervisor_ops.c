/* The requests the supervisor answers from its own state (version, state,
 * metrics: its Prometheus text is actors/metrics_prom.c's) and those it
 * hands to the stats and checkpoint actors. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actors/supervisor_int.h"
#include "core/amsg_gen.h"
#include "core/cleanup.h"
#include "core/edge.h"
#include "core/eventlog.h"
#include "core/fsutil.h"
#include "core/mp.h"
#include "core/proto.h"
#include "core/version.h"

/* ------------------------------------------------------------------ */
/* Ops the supervisor answers itself                                   */

void
supervisor_op_version (supervisor_t *self, edge_request_t *req)
{
  edge_reply_t *r = edge_reply_ok (self->edge, req, 5);
  msgpack_packer *pk = edge_reply_packer (r);
  mp_pack_kv_uint (pk, "major", ZCD_VERSION_MAJOR);
  mp_pack_kv_uint (pk, "minor", ZCD_VERSION_MINOR);
  mp_pack_kv_uint (pk, "patch", ZCD_VERSION_PATCH);
  mp_pack_kv_str (pk, "revision", ZCD_REVISION);
  mp_pack_kv_uint (pk, "protocol", PROTO_VERSION);
  edge_reply_send (self->edge, r);
}

static int
s_compare_ids (const void *a, const void *b)
{
  const container_entry_t *x = *(container_entry_t *const *)a;
  const container_entry_t *y = *(container_entry_t *const *)b;
  return strcmp (x->id, y->id);
}

void
supervisor_op_state (supervisor_t *self, edge_request_t *req)
{
  cleanup_free char *only = mp_get_strdup (edge_request_body (req), "id");
  const zcd_caller_t *caller = edge_request_caller (req);
  size_t cap = zhashx_size (self->containers), n = 0;
  cleanup_free container_entry_t **list = calloc (cap + 1, sizeof *list);
  for (container_entry_t *e = zhashx_first (self->containers); e;
       e = zhashx_next (self->containers))
    if (e->view && (only == NULL || strcmp (only, e->id) == 0) && supervisor_may_see (caller, e))
      list[n++] = e;
  if (only && n == 0)
    {
      edge_fail (self->edge, req, ZCD_E_NOT_FOUND, "no container `%s`", only);
      return;
    }
  qsort (list, n, sizeof *list, s_compare_ids);
  edge_reply_t *r = edge_reply_ok (self->edge, req, 4);
  size_t estimate = 256;
  for (size_t i = 0; i < n; i++)
    estimate += list[i]->view_len + 64;
  edge_reply_reserve (r, estimate);
  msgpack_packer *pk = edge_reply_packer (r);
  mp_pack_str (pk, "containers");
  msgpack_pack_array (pk, n);
  for (size_t i = 0; i < n; i++)
    supervisor_pack_container (list[i], pk);
  mp_pack_str (pk, "machine");
  msgpack_pack_map (pk, 2);
  mp_pack_kv_uint (pk, "cpus", (uint64_t)sysconf (_SC_NPROCESSORS_ONLN));
  mp_pack_kv_uint (pk, "memory",
                   (uint64_t)sysconf (_SC_PHYS_PAGES) * (uint64_t)sysconf (_SC_PAGESIZE));
  /* The snapshot holds every event assigned so far, so last_seq is the
   * newest assigned and the reply leaves once those are on disk (the same
   * turn, normally).  While the log cannot be written the reply goes at
   * once all the same (issue 8: `state` keeps working on a full disk),
   * and its newer events come live once logged. */
  uint64_t last = eventlog_last_seq (self->log);
  mp_pack_kv_uint (pk, "last_seq", last);
  mp_pack_kv_str (pk, "boot_id", self->boot_id);
  edge_reply_send_after (self->edge, r, self->flush_failures ? 0 : last);
}

static int
s_compare_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void
s_pack_latency (supervisor_t *self, msgpack_packer *pk)
{
  size_t n = self->latency_count < LATENCY_RING ? self->latency_count : LATENCY_RING;
  uint64_t sorted[LATENCY_RING];
  memcpy (sorted, self->latencies, n * sizeof *sorted);
  qsort (sorted, n, sizeof *sorted, s_compare_u64);
#define PCT(p) (n ? sorted[(size_t)((n - 1) * (p) / 100)] : 0)
  msgpack_pack_map (pk, 5);
  mp_pack_kv_uint (pk, "count", self->latency_count);
  mp_pack_kv_uint (pk, "p50", PCT (50));
  mp_pack_kv_uint (pk, "p95", PCT (95));
  mp_pack_kv_uint (pk, "p99", PCT (99));
  mp_pack_kv_uint (pk, "max", n ? sorted[n - 1] : 0);
#undef PCT
}

static uint64_t
s_rss_bytes (void)
{
  cleanup_fclose FILE *f = fopen ("/proc/self/statm", "re");
  unsigned long long size = 0, resident = 0;
  if (f == NULL || fscanf (f, "%llu %llu", &size, &resident) != 2)
    return 0;
  return resident * (uint64_t)sysconf (_SC_PAGESIZE);
}

static uint64_t
s_open_fds (void)
{
  cleanup_dir DIR *d = opendir ("/proc/self/fd");
  uint64_t n = 0;
  if (d == NULL)
    return 0;
  for (struct dirent *de; (de = readdir (d));)
    if (de->d_name[0] != '.')
      n++;
  return n > 0 ? n - 1 : 0; /* the directory's own fd */
}

void
supervisor_read_counters (supervisor_t *self, supervisor_counters_t *out)
{
  memset (out, 0, sizeof *out);
  for (container_entry_t *e = zhashx_first (self->containers); e;
       e = zhashx_next (self->containers))
    if (e->view)
      {
        out->containers++;
        out->processes += e->processes;
      }
  out->events_total = self->events_total;
  out->requests_total = edge_requests_total (self->edge);
  out->errors_total = edge_errors_total (self->edge);
  out->uptime_ns = zcd_mono_ns () - self->started_mono_ns;
  out->rss_bytes = s_rss_bytes ();
  out->open_fds = s_open_fds ();
  out->replies_lost = edge_replies_lost (self->edge);
  out->requests_dropped = edge_dropped_requests_total (self->edge);
  out->oversized = edge_oversized_total (self->edge);
  out->replays_abandoned = self->replays_abandoned;
  out->replays_stalled = self->replays_stalled;
  actor_system_get_stats (self->daemon->actors, &out->actors);
}

void
supervisor_op_metrics (supervisor_t *self, edge_request_t *req)
{
  /* The schema lets only "prometheus" through. */
  if (mp_map_get (edge_request_body (req), "format"))
    {
      metrics_prom_op (self, req);
      return;
    }
  supervisor_counters_t c;
  supervisor_read_counters (self, &c);
  edge_reply_t *r = edge_reply_ok (self->edge, req, 20);
  msgpack_packer *pk = edge_reply_packer (r);
  mp_pack_kv_uint (pk, "containers", c.containers);
  mp_pack_kv_uint (pk, "processes", c.processes);
  mp_pack_kv_uint (pk, "events_total", c.events_total);
  mp_pack_kv_uint (pk, "requests_total", c.requests_total);
  mp_pack_kv_uint (pk, "errors_total", c.errors_total);
  mp_pack_kv_uint (pk, "uptime_ns", c.uptime_ns);
  mp_pack_kv_uint (pk, "rss_bytes", c.rss_bytes);
  mp_pack_kv_uint (pk, "open_fds", c.open_fds);
  mp_pack_str (pk, "start_latency_ns");
  s_pack_latency (self, pk);
  /* What clients cost that they did not get (issues 8 and 14). */
  mp_pack_kv_uint (pk, "replies_lost_total", c.replies_lost);
  mp_pack_kv_uint (pk, "requests_dropped_total", c.requests_dropped);
  mp_pack_kv_uint (pk, "oversized_total", c.oversized);
  mp_pack_kv_uint (pk, "replays_abandoned_total", c.replays_abandoned);
  mp_pack_kv_uint (pk, "replays_stalled_total", c.replays_stalled);
  /* The actors' mailboxes (issue 9): a failed send is never silent, and
   * these say how often it happened and how close the overflow came. */
  mp_pack_kv_uint (pk, "actor_messages_total", c.actors.sent);
  mp_pack_kv_uint (pk, "actor_send_failures_total", c.actors.send_failures);
  mp_pack_kv_uint (pk, "actor_overflowed_total", c.actors.overflowed);
  mp_pack_kv_uint (pk, "actor_overflow_depth", c.actors.overflow_depth);
  mp_pack_kv_uint (pk, "actor_overflow_peak", c.actors.overflow_peak);
  mp_pack_kv_uint (pk, "actor_refused_total", c.actors.refused);
  edge_reply_send (self->edge, r);
}

/* ------------------------------------------------------------------ */
/* Requests handed to the stats and checkpoint actors                  */

static container_entry_t *
s_visible (supervisor_t *self, const edge_request_t *req, const char *id)
{
  container_entry_t *e = id ? zhashx_lookup (self->containers, id) : NULL;
  return e && e->view && supervisor_may_see (edge_request_caller (req), e) ? e : NULL;
}

void
supervisor_op_stats (supervisor_t *self, edge_request_t *req)
{
  const msgpack_object *body = edge_request_body (req);
  char **ids = mp_get_strv (body, "ids");
  char *one = mp_get_strdup (body, "id");
  if (one)
    {
      mp_strv_free (ids);
      ids = calloc (2, sizeof (char *));
      ids[0] = one;
    }
  size_t n = mp_strv_len (ids);
  for (size_t i = 0; ids && i < n; i++)
    if (s_visible (self, req, ids[i]) == NULL)
      {
        edge_fail (self->edge, req, ZCD_E_NOT_FOUND, "no container `%s`", ids[i]);
        mp_strv_free (ids);
        return;
      }
  if (ids == NULL)
    {
      size_t cap = zhashx_size (self->containers);
      ids = calloc (cap + 1, sizeof (char *));
      for (container_entry_t *e = zhashx_first (self->containers); e;
           e = zhashx_next (self->containers))
        if (e->view && supervisor_may_see (edge_request_caller (req), e))
          ids[n++] = strdup (e->id);
    }
  uint64_t token = edge_request_park (self->edge, req);
  /* The stats actor keeps the containers' cgroups itself (the containers
   * tell it): the ids are all it needs. */
  amsg_collect_t m = { .token = token, .ids = (const char *const *)ids };
  cleanup_error zcd_error_t *err = NULL;
  if (amsg_collect_send (self->daemon->actors, SUPERVISOR_NAME, STATS_ACTOR, &m, &err) < 0)
    edge_reply_error (self->edge, token, err->code, err->msg);
  mp_strv_free (ids);
}

void
supervisor_op_checkpoint (supervisor_t *self, edge_request_t *req)
{
  cleanup_free char *id = mp_get_strdup (edge_request_body (req), "id");
  /* CRIU runs as root, and a checkpoint directory is read and removed by
   * the daemon: no caller but an administrator gets that (PROTOCOL.md
   * "Callers": privilege it lacks is invalid_argument). */
  if (!edge_request_caller (req)->admin)
    {
      edge_fail (self->edge, req, ZCD_E_INVALID_ARGUMENT,
                 "`%s` needs an administrator: checkpoints are made and kept as root",
                 edge_request_op (req)->name);
      return;
    }
  container_entry_t *e = s_visible (self, req, id);
  if (id && e == NULL)
    {
      edge_fail (self->edge, req, ZCD_E_NOT_FOUND, "no container `%s`", id);
      return;
    }
  supervisor_park_and_send (self, req, CHECKPOINT_ACTOR, e ? e->bundle : NULL, e ? e->actor : NULL);
}
