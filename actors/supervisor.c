#include "actors/supervisor.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "core/bundle.h"
#include "core/cleanup.h"
#include "core/edge.h"
#include "core/eventlog.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"
#include "core/proto.h"
#include "core/version.h"

#include "actors/supervisor_int.h"

static void s_handle_request (void *arg, edge_request_t *req);
static void s_release_held (supervisor_t *self, const char *id);
static void s_release_held (supervisor_t *self, const char *id);

/* ------------------------------------------------------------------ */
/* Container table                                                     */

static void
s_entry_destroy (void **item)
{
  container_entry_t *e = *item;
  if (e == NULL)
    return;
  free (e->id);
  free (e->view);
  free (e->cgroup_procs);
  if (e->procs_fd >= 0)
    close (e->procs_fd);
  free (e->bundle);
  free (e->actor);
  free (e);
  *item = NULL;
}

/* The entry of container `id` as actor `from` reports it; NULL when `from`
 * is an earlier actor of that id, still winding down after its exit while
 * the id already names a new container. */
static container_entry_t *
s_entry_for (supervisor_t *self, const char *id, const char *from, bool may_create)
{
  container_entry_t *e = zhashx_lookup (self->containers, id);
  if (e)
    return strcmp (e->actor, from) == 0 ? e : NULL;
  /* Only a start (or a restored view) brings a container into the table:
   * anything else from an actor whose container already exited must not
   * bring it back. */
  if (!may_create)
    return NULL;
  e = calloc (1, sizeof *e);
  e->procs_fd = -1;
  e->id = strdup (id);
  e->actor = strdup (from);
  zhashx_insert (self->containers, id, e);
  return e;
}

/* A view arrives as a msgpack map (bin payload): keep its entries raw, so
 * `state` is a concatenation, not a re-encoding. */
static void
s_entry_set_view (container_entry_t *e, const msgpack_object *view_bin)
{
  if (view_bin == NULL || view_bin->type != MSGPACK_OBJECT_BIN)
    return;
  const unsigned char *p = (const unsigned char *) view_bin->via.bin.ptr;
  size_t len = view_bin->via.bin.size;
  uint32_t n;
  size_t header;
  if (len >= 1 && (p[0] & 0xf0) == 0x80)
    n = p[0] & 0x0f, header = 1;
  else if (len >= 3 && p[0] == 0xde)
    n = (uint32_t) (p[1] << 8 | p[2]), header = 3;
  else
    return;
  free (e->view);
  e->view = malloc (len - header + 1);
  memcpy (e->view, p + header, len - header);
  e->view_len = len - header;
  e->view_entries = n;
}

/* ------------------------------------------------------------------ */
/* Events                                                              */

/* Returns the event's seq (0 if it could not be stored). */
static uint64_t
s_publish_event (supervisor_t *self, const zcd_event_t *ev)
{
  const char *encoded;
  size_t len;
  uint64_t seq = eventlog_append (self->log, ev, &encoded, &len);
  if (seq == 0)
    {
      log_error ("bug: event %s/%s could not be stored", ev->id, ev->type);
      return 0;
    }
  self->events_total++;
  char topic[256];
  snprintf (topic, sizeof topic, "%s/%s", ev->id, ev->type);
  /* Leaves in the before-sleep phase, after the log is flushed. */
  edge_queue_publish (self->edge, seq, topic, encoded, len);
  return seq;
}

static void
s_entry_set_identity (container_entry_t *e, const msgpack_object *b)
{
  char *bundle = mp_get_strdup (b, "bundle");
  if (bundle)
    {
      free (e->bundle);
      e->bundle = bundle;
    }
  e->init_pid = mp_get_uint (b, "init_pid", e->init_pid);
}

static void
s_entry_set_cgroup_procs (container_entry_t *e, const msgpack_object *b)
{
  cleanup_free char *procs = mp_get_strdup (b, "cgroup_procs");
  if (procs && (e->cgroup_procs == NULL || strcmp (procs, e->cgroup_procs) != 0))
    {
      free (e->cgroup_procs);
      e->cgroup_procs = steal_pointer (&procs);
      if (e->procs_fd >= 0)
        close (e->procs_fd);
      e->procs_fd = -1;
    }
}

static void
s_queue_ack (supervisor_t *self, const char *to, const char *tag)
{
  ack_t *a = calloc (1, sizeof *a);
  a->to = strdup (to);
  a->tag = strdup (tag);
  if (self->acks_tail)
    self->acks_tail->next = a;
  else
    self->acks = a;
  self->acks_tail = a;
}

/* After a flush: tell each actor that its event is durable. */
static void
s_send_acks (supervisor_t *self)
{
  while (self->acks)
    {
      ack_t *a = self->acks;
      self->acks = a->next;
      actor_msg_builder_t mb;
      actor_msg_begin (&mb, "logged", 1);
      mp_pack_kv_str (&mb.pk, "tag", a->tag);
      actor_msg_send (self->daemon->actors, SUPERVISOR_NAME, a->to, &mb, NULL);
      free (a->to);
      free (a->tag);
      free (a);
    }
  self->acks_tail = NULL;
}

static void
s_on_event (actor_t *actor, const actor_msg_t *msg)
{
  supervisor_t *self = actor_state (actor);
  const msgpack_object *b = msg->body;
  cleanup_free char *etype = mp_get_strdup (b, "etype");
  cleanup_free char *id = mp_get_strdup (b, "id");
  cleanup_free char *pid = mp_get_strdup (b, "pid");
  if (etype == NULL || id == NULL)
    return;
  bool init_exit = strcmp (etype, "exit") == 0 && pid && strcmp (pid, "init") == 0;
  bool starts = strcmp (etype, "start-container") == 0 || strcmp (etype, "restore") == 0;
  container_entry_t *e = init_exit ? NULL : s_entry_for (self, id, msg->from, starts);
  if (e)
    {
      s_entry_set_view (e, mp_map_get (b, "view"));
      s_entry_set_identity (e, b);
      e->processes = (uint32_t) mp_get_uint (b, "processes", e->processes);
      s_entry_set_cgroup_procs (e, b);
    }
  zcd_event_t ev = {
    .type = etype,
    .id = id,
    .pid = pid,
    .has_status = mp_map_get (b, "status") != NULL,
    .status = (uint32_t) mp_get_uint (b, "status", 0),
    .system_pid = (uint32_t) mp_get_uint (b, "system_pid", 0),
    .has_oom_killed = mp_map_get (b, "oom_killed") != NULL,
    .oom_killed = mp_get_bool (b, "oom_killed", false),
    .ts = 0,
  };
  uint64_t seq = s_publish_event (self, &ev);
  /* The actor's next reply follows this event: it leaves after the event
   * is durable (edge_flush). */
  uint64_t *last = zhashx_lookup (self->last_event_seq, msg->from);
  if (last == NULL)
    {
      last = malloc (sizeof *last);
      zhashx_insert (self->last_event_seq, msg->from, last);
    }
  *last = seq;
  /* With its init's exit a container leaves `state` and its id is free
   * (PROTOCOL.md `create`), in the same instant the exit takes its seq. */
  container_entry_t *current = zhashx_lookup (self->containers, id);
  if (init_exit && current && strcmp (current->actor, msg->from) == 0)
    {
      zhashx_delete (self->containers, id);
      /* Its directory stays until the exit is logged: a create of the same
       * id waits for "gone" rather than meet it (issue 8, defect 10). */
      zhashx_update (self->draining, id, strdup (msg->from));
    }
  /* The actor removes what it keeps on disk about the exit only once the
   * event is in the log (s_before_sleep): a crash in between loses nothing. */
  cleanup_free char *tag = mp_get_strdup (b, "ack");
  if (tag)
    s_queue_ack (self, msg->from, tag);
}

static void
s_on_view (actor_t *actor, const actor_msg_t *msg)
{
  supervisor_t *self = actor_state (actor);
  cleanup_free char *id = mp_get_strdup (msg->body, "id");
  if (id == NULL)
    return;
  container_entry_t *e = s_entry_for (self, id, msg->from, true);
  if (e == NULL)
    return;
  s_entry_set_view (e, mp_map_get (msg->body, "view"));
  s_entry_set_identity (e, msg->body);
  e->processes = (uint32_t) mp_get_uint (msg->body, "processes", e->processes);
  s_entry_set_cgroup_procs (e, msg->body);
}

static void
s_on_gone (actor_t *actor, const actor_msg_t *msg)
{
  supervisor_t *self = actor_state (actor);
  cleanup_free char *id = mp_get_strdup (msg->body, "id");
  container_entry_t *e = id ? zhashx_lookup (self->containers, id) : NULL;
  if (e && strcmp (e->actor, msg->from) == 0)
    zhashx_delete (self->containers, id);
  zhashx_delete (self->last_event_seq, msg->from);
  const char *draining = id ? zhashx_lookup (self->draining, id) : NULL;
  if (draining && strcmp (draining, msg->from) == 0)
    {
      zhashx_delete (self->draining, id);
      s_release_held (self, id);
    }
}

/* ------------------------------------------------------------------ */
/* The start gate: at most max_concurrent_starts runtime creates at once  */

static void s_start_next (supervisor_t *self);

static void
s_record_latency (supervisor_t *self, uint64_t token)
{
  uint64_t *t0 = zhashx_lookup (self->start_times, (void *) (uintptr_t) token);
  if (t0 == NULL)
    return;
  self->latencies[self->latency_count++ % LATENCY_RING] = zcd_mono_ns () - *t0;
  zhashx_delete (self->start_times, (void *) (uintptr_t) token);
}

static void
s_on_started (actor_t *actor, const actor_msg_t *msg)
{
  supervisor_t *self = actor_state (actor);
  cleanup_free char *id = mp_get_strdup (msg->body, "id");
  if (id)
    zhashx_delete (self->reserved, id);
  if (mp_get_bool (msg->body, "ok", false))
    s_record_latency (self, mp_get_uint (msg->body, "token", 0));
  else
    zhashx_delete (self->start_times, (void *) (uintptr_t) mp_get_uint (msg->body, "token", 0));
  if (self->starting > 0)
    self->starting--;
  s_start_next (self);
}

static void
s_launch_create (supervisor_t *self, uint64_t token, const char *id, const char *body, size_t len)
{
  msgpack_unpacked unpacked;
  msgpack_unpacked_init (&unpacked);
  cleanup_error zcd_error_t *err = NULL;
  if (mp_unpack (body, len, &unpacked, &err) == 0
      && container_actor_create (self->daemon, &unpacked.data, token, &err) != NULL)
    self->starting++;
  else
    {
      zhashx_delete (self->reserved, id);
      zhashx_delete (self->start_times, (void *) (uintptr_t) token);
      if (err == NULL)
        log_error ("bug: create `%s` failed without a reason", id);
      edge_reply_error (self->edge, token, err ? err->code : ZCD_E_INTERNAL,
                        err ? err->msg : "create failed without a reason (a bug: see the log)");
    }
  msgpack_unpacked_destroy (&unpacked);
}

static void
s_enqueue (queued_create_t **head, queued_create_t **tail, queued_create_t *q)
{
  q->next = NULL;
  if (*tail)
    (*tail)->next = q;
  else
    *head = q;
  *tail = q;
}

/* The earlier container of `id` is gone: its held creates join the queue. */
static void
s_release_held (supervisor_t *self, const char *id)
{
  queued_create_t *keep_head = NULL, *keep_tail = NULL;
  while (self->held_head)
    {
      queued_create_t *q = self->held_head;
      self->held_head = q->next;
      if (strcmp (q->id, id) == 0)
        s_enqueue (&self->queue_head, &self->queue_tail, q);
      else
        s_enqueue (&keep_head, &keep_tail, q);
    }
  self->held_head = keep_head;
  self->held_tail = keep_tail;
  s_start_next (self);
}

static void
s_start_next (supervisor_t *self)
{
  int max = self->daemon->config->max_concurrent_starts;
  while (self->queue_head && self->starting < max)
    {
      queued_create_t *q = self->queue_head;
      self->queue_head = q->next;
      if (self->queue_head == NULL)
        self->queue_tail = NULL;
      self->queued--;
      s_launch_create (self, q->token, q->id, q->body, q->body_len);
      free (q->id);
      free (q->body);
      free (q);
    }
}

/* A restore names a checkpoint zcd made: a missing one is not_found at
 * admission, not the runtime's failure later (PROTOCOL.md `create`). */
static int
s_check_restore_source (const msgpack_object *body, const char *bundle, zcd_error_t **err)
{
  cleanup_free char *name = mp_get_strdup (body, "checkpoint");
  if (name == NULL)
    return 0;
  cleanup_free char *dir = mp_get_strdup (body, "checkpoint_dir");
  if (dir == NULL && asprintf (&dir, "%s/checkpoints", bundle) < 0)
    return zcd_fail_errno (err, ENOMEM, "checkpoint_dir");
  return checkpoint_find (dir, name, err);
}

static void
s_op_create (supervisor_t *self, edge_request_t *req)
{
  const msgpack_object *body = edge_request_body (req);
  cleanup_free char *id = mp_get_strdup (body, "id");
  cleanup_free char *bundle = mp_get_strdup (body, "bundle");
  if (zhashx_lookup (self->containers, id) || zhashx_lookup (self->reserved, id))
    {
      edge_fail (self->edge, req, ZCD_E_ALREADY_EXISTS, "container `%s` already exists", id);
      return;
    }
  if (self->queued >= MAX_QUEUED_CREATES)
    {
      edge_fail (self->edge, req, ZCD_E_BUSY, "%zu creates are already waiting for a start slot",
                 self->queued);
      return;
    }
  /* The bundle is checked here, at admission: a bad bundle is a precise
   * invalid_argument and never takes a start slot. */
  cleanup_error zcd_error_t *err = NULL;
  bundle_info_t *info = NULL;
  if (zcd_check_stdio_paths (body, &err) < 0 || s_check_restore_source (body, bundle, &err) < 0
      || bundle_load (bundle, &info, &err) < 0)
    {
      edge_fail (self->edge, req, err->code, "%s", err->msg);
      return;
    }
  bundle_info_destroy (&info);
  uint64_t token = edge_request_park (self->edge, req);
  uint64_t *t0 = malloc (sizeof *t0);
  *t0 = zcd_mono_ns ();
  zhashx_insert (self->start_times, (void *) (uintptr_t) token, t0);
  zhashx_insert (self->reserved, id, (void *) (uintptr_t) token);
  queued_create_t *q = calloc (1, sizeof *q);
  q->token = token;
  edge_request_raw_body (req, &q->body, &q->body_len);
  self->queued++;
  if (zhashx_lookup (self->draining, id))
    {
      q->id = steal_pointer (&id);
      s_enqueue (&self->held_head, &self->held_tail, q);
      return;
    }
  q->id = steal_pointer (&id);
  s_enqueue (&self->queue_head, &self->queue_tail, q);
  s_start_next (self);
}

/* ------------------------------------------------------------------ */
/* Ops the supervisor answers itself                                   */

static void
s_op_version (supervisor_t *self, edge_request_t *req)
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

static void
s_pack_entry_pids (container_entry_t *e, msgpack_packer *pk)
{
  if (e->procs_fd < 0 && e->cgroup_procs)
    e->procs_fd = open (e->cgroup_procs, O_RDONLY | O_CLOEXEC);
  zcd_pack_cgroup_pids_fd (pk, e->procs_fd);
}

static int
s_compare_ids (const void *a, const void *b)
{
  const container_entry_t *x = *(container_entry_t *const *) a;
  const container_entry_t *y = *(container_entry_t *const *) b;
  return strcmp (x->id, y->id);
}

static void
s_op_state (supervisor_t *self, edge_request_t *req)
{
  cleanup_free char *only = mp_get_strdup (edge_request_body (req), "id");
  size_t cap = zhashx_size (self->containers), n = 0;
  cleanup_free container_entry_t **list = calloc (cap + 1, sizeof *list);
  for (container_entry_t *e = zhashx_first (self->containers); e; e = zhashx_next (self->containers))
    if (e->view && (only == NULL || strcmp (only, e->id) == 0))
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
    {
      msgpack_pack_map (pk, list[i]->view_entries + 1);
      pk->callback (pk->data, list[i]->view, list[i]->view_len);
      mp_pack_str (pk, "pids");
      s_pack_entry_pids (list[i], pk);
    }
  mp_pack_str (pk, "machine");
  msgpack_pack_map (pk, 2);
  mp_pack_kv_uint (pk, "cpus", (uint64_t) sysconf (_SC_NPROCESSORS_ONLN));
  mp_pack_kv_uint (pk, "memory", (uint64_t) sysconf (_SC_PHYS_PAGES) * (uint64_t) sysconf (_SC_PAGESIZE));
  mp_pack_kv_uint (pk, "last_seq", eventlog_last_seq (self->log));
  mp_pack_kv_str (pk, "boot_id", self->boot_id);
  edge_reply_send (self->edge, r);
}

static int
s_compare_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  return x < y ? -1 : x > y;
}

static void
s_pack_latency (supervisor_t *self, msgpack_packer *pk)
{
  size_t n = self->latency_count < LATENCY_RING ? self->latency_count : LATENCY_RING;
  uint64_t sorted[LATENCY_RING];
  memcpy (sorted, self->latencies, n * sizeof *sorted);
  qsort (sorted, n, sizeof *sorted, s_compare_u64);
#define PCT(p) (n ? sorted[(size_t) ((n - 1) * (p) / 100)] : 0)
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
  return resident * (uint64_t) sysconf (_SC_PAGESIZE);
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

static void
s_op_metrics (supervisor_t *self, edge_request_t *req)
{
  uint64_t processes = 0, containers = 0;
  for (container_entry_t *e = zhashx_first (self->containers); e; e = zhashx_next (self->containers))
    if (e->view)
      {
        containers++;
        processes += e->processes;
      }
  edge_reply_t *r = edge_reply_ok (self->edge, req, 9);
  msgpack_packer *pk = edge_reply_packer (r);
  mp_pack_kv_uint (pk, "containers", containers);
  mp_pack_kv_uint (pk, "processes", processes);
  mp_pack_kv_uint (pk, "events_total", self->events_total);
  mp_pack_kv_uint (pk, "requests_total", edge_requests_total (self->edge));
  mp_pack_kv_uint (pk, "errors_total", edge_errors_total (self->edge));
  mp_pack_kv_uint (pk, "uptime_ns", zcd_mono_ns () - self->started_mono_ns);
  mp_pack_kv_uint (pk, "rss_bytes", s_rss_bytes ());
  mp_pack_kv_uint (pk, "open_fds", s_open_fds ());
  mp_pack_str (pk, "start_latency_ns");
  s_pack_latency (self, pk);
  edge_reply_send (self->edge, r);
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */

/* Park the request and hand it to actor `to` as a "req" message (with the
 * container's bundle when given: the checkpoint actor needs it). */
static void
s_park_and_send (supervisor_t *self, edge_request_t *req, const char *to, const char *bundle,
                 const char *container_actor)
{
  const char *body;
  size_t len;
  edge_request_raw_view (req, &body, &len);
  uint64_t token = edge_request_park (self->edge, req);
  actor_msg_builder_t mb;
  actor_msg_begin (&mb, "req", 3 + (bundle ? 1 : 0) + (container_actor ? 1 : 0));
  mp_pack_kv_uint (&mb.pk, "token", token);
  mp_pack_kv_str (&mb.pk, "op", edge_request_op (req)->name);
  mp_pack_str (&mb.pk, "body");
  msgpack_pack_bin (&mb.pk, len);
  msgpack_pack_bin_body (&mb.pk, body, len);
  if (bundle)
    mp_pack_kv_str (&mb.pk, "bundle", bundle);
  if (container_actor)
    mp_pack_kv_str (&mb.pk, "actor", container_actor);
  cleanup_error zcd_error_t *err = NULL;
  if (actor_msg_send (self->daemon->actors, SUPERVISOR_NAME, to, &mb, &err) < 0)
    edge_reply_error (self->edge, token, err->code, err->msg);
}

static void
s_forward (supervisor_t *self, edge_request_t *req)
{
  cleanup_free char *id = mp_get_strdup (edge_request_body (req), "id");
  container_entry_t *e = id ? zhashx_lookup (self->containers, id) : NULL;
  if (e == NULL)
    {
      edge_fail (self->edge, req, ZCD_E_NOT_FOUND, "no container `%s`", id ? id : "");
      return;
    }
  s_park_and_send (self, req, e->actor, NULL, NULL);
}

static container_entry_t *
s_visible (supervisor_t *self, const char *id)
{
  container_entry_t *e = id ? zhashx_lookup (self->containers, id) : NULL;
  return e && e->view ? e : NULL;
}

static void
s_op_stats (supervisor_t *self, edge_request_t *req)
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
    if (s_visible (self, ids[i]) == NULL)
      {
        edge_fail (self->edge, req, ZCD_E_NOT_FOUND, "no container `%s`", ids[i]);
        mp_strv_free (ids);
        return;
      }
  if (ids == NULL)
    {
      size_t cap = zhashx_size (self->containers);
      ids = calloc (cap + 1, sizeof (char *));
      for (container_entry_t *e = zhashx_first (self->containers); e; e = zhashx_next (self->containers))
        if (e->view)
          ids[n++] = strdup (e->id);
    }
  uint64_t token = edge_request_park (self->edge, req);
  actor_msg_builder_t mb;
  actor_msg_begin (&mb, "collect", 3);
  mp_pack_kv_uint (&mb.pk, "token", token);
  mp_pack_str (&mb.pk, "ids");
  msgpack_pack_array (&mb.pk, n);
  for (size_t i = 0; i < n; i++)
    mp_pack_str (&mb.pk, ids[i]);
  mp_pack_str (&mb.pk, "pids");
  msgpack_pack_array (&mb.pk, n);
  for (size_t i = 0; i < n; i++)
    msgpack_pack_uint64 (&mb.pk, s_visible (self, ids[i])->init_pid);
  mp_strv_free (ids);
  cleanup_error zcd_error_t *err = NULL;
  if (actor_msg_send (self->daemon->actors, SUPERVISOR_NAME, STATS_ACTOR, &mb, &err) < 0)
    edge_reply_error (self->edge, token, err->code, err->msg);
}

static void
s_op_checkpoint (supervisor_t *self, edge_request_t *req)
{
  cleanup_free char *id = mp_get_strdup (edge_request_body (req), "id");
  container_entry_t *e = s_visible (self, id);
  if (id && e == NULL)
    {
      edge_fail (self->edge, req, ZCD_E_NOT_FOUND, "no container `%s`", id);
      return;
    }
  s_park_and_send (self, req, CHECKPOINT_ACTOR, e ? e->bundle : NULL, e ? e->actor : NULL);
}

static void
s_handle_request (void *arg, edge_request_t *req)
{
  supervisor_t *self = arg;
  switch (edge_request_op (req)->code)
    {
    case PROTO_OP_VERSION:
      s_op_version (self, req);
      break;
    case PROTO_OP_STATE:
      s_op_state (self, req);
      break;
    case PROTO_OP_METRICS:
      s_op_metrics (self, req);
      break;
    case PROTO_OP_EVENTS:
      supervisor_op_events (self, req);
      break;
    case PROTO_OP_CREATE:
      s_op_create (self, req);
      break;
    case PROTO_OP_EXEC:
    case PROTO_OP_SIGNAL:
    case PROTO_OP_UPDATE:
    case PROTO_OP_UPDATE_PROCESS:
      s_forward (self, req);
      break;
    case PROTO_OP_STATS:
      s_op_stats (self, req);
      break;
    case PROTO_OP_CHECKPOINT_CREATE:
    case PROTO_OP_CHECKPOINT_LIST:
    case PROTO_OP_CHECKPOINT_DELETE:
      s_op_checkpoint (self, req);
      break;
    default:
      edge_fail (self->edge, req, ZCD_E_UNAVAILABLE, "`%s` is not implemented by this daemon yet",
                 edge_request_op (req)->name);
      break;
    }
}

/* A container actor answers a parked request. */
static void
s_on_reply (actor_t *actor, const actor_msg_t *msg)
{
  supervisor_t *self = actor_state (actor);
  uint64_t token = mp_get_uint (msg->body, "token", 0);
  uint64_t *after = mp_get_bool (msg->body, "after_events", false)
                        ? zhashx_lookup (self->last_event_seq, msg->from)
                        : NULL;
  uint64_t after_seq = after ? *after : 0;
  if (mp_get_bool (msg->body, "ok", false))
    edge_reply_parked_ok (self->edge, token, mp_map_get (msg->body, "result"), after_seq);
  else
    {
      cleanup_free char *code = mp_get_strdup (msg->body, "code");
      cleanup_free char *message = mp_get_strdup (msg->body, "message");
      zcd_code_t c = code ? zcd_code_from_name (code) : ZCD_E_INTERNAL;
      edge_reply_error_after (self->edge, token, c == ZCD_CODE_COUNT ? ZCD_E_INTERNAL : c,
                              message ? message : "", after_seq);
    }
}

/* ------------------------------------------------------------------ */
/* The turn's end: flush the log, publish, reply, stream replays         */

static void
s_flush_retry (loop_t *loop, void *arg)
{
  supervisor_t *self = arg;
  self->flush_timer = NULL;
}

/* A failed flush keeps its events (and what depends on them) queued; it is
 * tried again on a backing-off timer, since nothing else may wake the loop,
 * and said once per failing spell rather than once per try. */
static void
s_flush_failed (supervisor_t *self, const zcd_error_t *err)
{
  if (self->flush_failures++ == 0)
    log_error ("event log: %s (events and the replies that follow them wait; retrying)",
               err->msg);
  uint64_t delay = 10;
  for (uint64_t i = 1; i < self->flush_failures && delay < 1000; i++)
    delay *= 2;
  if (self->flush_timer == NULL)
    self->flush_timer = loop_timer_add (self->daemon->loop, delay > 1000 ? 1000 : delay,
                                        s_flush_retry, self);
}

static void
s_before_sleep (loop_t *loop, void *arg)
{
  supervisor_t *self = arg;
  cleanup_error zcd_error_t *err = NULL;
  if (eventlog_flush (self->log, &err) < 0)
    s_flush_failed (self, err);
  else
    {
      if (self->flush_failures)
        log_info ("event log: writable again after %llu failed flushes",
                  (unsigned long long) self->flush_failures);
      self->flush_failures = 0;
      s_send_acks (self);
    }
  if (self->replays)
    supervisor_run_replays (self);
  /* Replies that follow no unlogged event leave whatever the disk does. */
  edge_flush (self->edge, eventlog_durable_seq (self->log));
}

static void
s_heartbeat (loop_t *loop, void *arg)
{
  supervisor_t *self = arg;
  msgpack_sbuffer buf;
  msgpack_sbuffer_init (&buf);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 3);
  mp_pack_kv_uint (&pk, "last_seq", eventlog_last_seq (self->log));
  mp_pack_kv_str (&pk, "boot_id", self->boot_id);
  mp_pack_kv_int (&pk, "ts", zcd_now_ns ());
  edge_queue_publish (self->edge, 0, "/heartbeat", buf.data, buf.size);
  msgpack_sbuffer_destroy (&buf);
  self->heartbeat = loop_timer_add (loop, self->daemon->config->heartbeat_ms, s_heartbeat, self);
}

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

static const actor_route_t s_routes[] = {
  { "event", s_on_event },     { "reply", s_on_reply },     { "view", s_on_view },
  { "gone", s_on_gone },       { "started", s_on_started }, { NULL, NULL },
};

static const actor_class_t s_class = { .kind = "supervisor", .routes = s_routes };

static void
s_read_boot_id (char *out, size_t size)
{
  cleanup_free char *text = NULL;
  if (zcd_read_file ("/proc/sys/kernel/random/uuid", 64, &text, NULL, NULL) == 0)
    {
      text[strcspn (text, "\n")] = '\0';
      snprintf (out, size, "%s", text);
    }
  else
    snprintf (out, size, "%llx-%d", (unsigned long long) zcd_now_ns (), (int) getpid ());
}


supervisor_t *
supervisor_new (zcd_daemon_t *daemon, zcd_error_t **err)
{
  const zcd_config_t *cfg = daemon->config;
  supervisor_t *self = calloc (1, sizeof *self);
  self->daemon = daemon;
  self->started_mono_ns = zcd_mono_ns ();
  s_read_boot_id (self->boot_id, sizeof self->boot_id);
  self->containers = zhashx_new ();
  zhashx_set_destructor (self->containers, s_entry_destroy);
  self->reserved = zhashx_new ();
  self->draining = zhashx_new ();
  zhashx_set_destructor (self->draining, edge_free_item);
  self->last_event_seq = zhashx_new ();
  zhashx_set_destructor (self->last_event_seq, edge_free_item);
  self->start_times = zhashx_new ();
  zhashx_set_key_duplicator (self->start_times, NULL);
  zhashx_set_key_destructor (self->start_times, NULL);
  zhashx_set_key_hasher (self->start_times, edge_token_hash);
  zhashx_set_key_comparator (self->start_times, edge_token_compare);
  zhashx_set_destructor (self->start_times, edge_free_item);
  cleanup_free char *log_path = NULL;
  if (asprintf (&log_path, "%s/events.log", cfg->state_dir) < 0
      || eventlog_open (log_path, cfg->events_retain, &self->log, err) < 0)
    {
      zcd_error_wrap (err, "event log");
      supervisor_destroy (&self);
      return NULL;
    }
  self->actor = actor_new (daemon->actors, &s_class, SUPERVISOR_NAME, self, err);
  if (self->actor == NULL)
    {
      supervisor_destroy (&self);
      return NULL;
    }
  if (stats_actor_new (daemon, err) == NULL
      || checkpoint_actor_new (daemon, err) == NULL)
    {
      supervisor_destroy (&self);
      return NULL;
    }
  /* Rebuild every container before the first request can be read. */
  supervisor_restore_all (daemon, self->log);
  edge_config_t edge_cfg = {
    .listen = cfg->listen,
    .publish = cfg->publish,
    .max_request_size = cfg->max_request_size,
    .group = cfg->group,
    .curve_secret = cfg->curve_secret,
    .curve_clients = cfg->curve_clients,
    .insecure_tcp = cfg->insecure_tcp,
  };
  self->edge = edge_new (daemon->zmq_ctx, daemon->loop, &edge_cfg, s_handle_request, self, err);
  if (self->edge == NULL)
    {
      supervisor_destroy (&self);
      return NULL;
    }
  loop_set_before_sleep (daemon->loop, s_before_sleep, self);
  self->heartbeat = loop_timer_add (daemon->loop, cfg->heartbeat_ms, s_heartbeat, self);
  return self;
}

void
supervisor_destroy (supervisor_t **pself)
{
  if (pself == NULL || *pself == NULL)
    return;
  supervisor_t *self = *pself;
  if (self->log)
    eventlog_flush (self->log, NULL);
  if (self->edge)
    edge_flush (self->edge, eventlog_durable_seq (self->log));
  loop_timer_cancel (self->daemon->loop, self->heartbeat);
  loop_timer_cancel (self->daemon->loop, self->replay_timer);
  loop_timer_cancel (self->daemon->loop, self->flush_timer);
  while (self->acks)
    {
      ack_t *a = self->acks;
      self->acks = a->next;
      free (a->to);
      free (a->tag);
      free (a);
    }
  supervisor_replays_free (self);
  while (self->queue_head)
    {
      queued_create_t *q = self->queue_head;
      self->queue_head = q->next;
      free (q->id);
      free (q->body);
      free (q);
    }
  edge_destroy (&self->edge);
  eventlog_destroy (&self->log);
  zhashx_destroy (&self->containers);
  zhashx_destroy (&self->reserved);
  zhashx_destroy (&self->draining);
  while (self->held_head)
    {
      queued_create_t *q = self->held_head;
      self->held_head = q->next;
      free (q->id);
      free (q->body);
      free (q);
    }
  zhashx_destroy (&self->start_times);
  zhashx_destroy (&self->last_event_seq);
  /* The actor's state is this struct: detach it before the actor goes. */
  free (self);
  *pself = NULL;
}

