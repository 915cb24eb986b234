/* The supervisor's container table and the events that feed it: what
 * each container actor reports (events, views, its going), the event's way
 * into the log and out to subscribers, and the "logged" notices owed once
 * the log is flushed. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actors/supervisor_int.h"
#include "core/cleanup.h"
#include "core/edge.h"
#include "core/eventlog.h"
#include "core/log.h"
#include "core/mp.h"
#include "core/amsg_gen.h"

/* ------------------------------------------------------------------ */
/* Container table                                                     */

void
supervisor_entry_destroy (void **item)
{
  container_entry_t *e = *item;
  if (e == NULL)
    return;
  free (e->id);
  free (e->view);
  free (e->cgroup_procs);
  if (e->procs_dir_fd >= 0)
    close (e->procs_dir_fd);
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
  e->procs_dir_fd = -1;
  e->id = strdup (id);
  e->actor = strdup (from);
  zhashx_insert (self->containers, id, e);
  return e;
}

/* A view arrives as a packed msgpack map: keep its entries raw, so
 * `state` is a concatenation, not a re-encoding. */
static void
s_entry_set_view (container_entry_t *e, amsg_bin_t view)
{
  mp_reader_t r;
  uint32_t n;
  mp_reader_init (&r, view.ptr, view.size);
  if (view.ptr == NULL || !mp_read_map (&r, &n))
    return;
  size_t len = mp_reader_left (&r);
  free (e->view);
  e->view = malloc (len + 1);
  memcpy (e->view, view.ptr + (view.size - len), len);
  e->view_len = len;
  e->view_entries = n;
}

/* What the supervisor keeps of a container besides its view. */
static void
s_entry_set_identity (container_entry_t *e, const char *bundle, uint32_t init_pid,
                      uint32_t processes, const char *cgroup_procs)
{
  if (bundle && (e->bundle == NULL || strcmp (bundle, e->bundle) != 0))
    {
      free (e->bundle);
      e->bundle = strdup (bundle);
    }
  e->init_pid = init_pid;
  e->processes = processes;
  if (cgroup_procs && (e->cgroup_procs == NULL || strcmp (cgroup_procs, e->cgroup_procs) != 0))
    {
      free (e->cgroup_procs);
      e->cgroup_procs = strdup (cgroup_procs);
      if (e->procs_dir_fd >= 0)
        close (e->procs_dir_fd);
      e->procs_dir_fd = -1;
    }
}

/* cgroup.procs opened afresh in the kept directory (-1 when the cgroup is
 * gone): a fresh open reads the pids as they are now. */
static int
s_open_procs (container_entry_t *e)
{
  if (e->cgroup_procs == NULL)
    return -1;
  const char *slash = strrchr (e->cgroup_procs, '/');
  if (e->procs_dir_fd < 0 && slash && slash != e->cgroup_procs)
    {
      cleanup_free char *dir = strndup (e->cgroup_procs, (size_t)(slash - e->cgroup_procs));
      e->procs_dir_fd = dir ? open (dir, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
    }
  if (e->procs_dir_fd < 0)
    return -1;
  return openat (e->procs_dir_fd, slash + 1, O_RDONLY | O_CLOEXEC);
}

/* The Container map (PROTOCOL.md): the cached view's entries and "pids". */
void
supervisor_pack_container (container_entry_t *e, msgpack_packer *pk)
{
  msgpack_pack_map (pk, e->view_entries + 1);
  pk->callback (pk->data, e->view, e->view_len);
  mp_pack_str (pk, "pids");
  cleanup_close int fd = s_open_procs (e);
  zcd_pack_cgroup_pids_fd (pk, fd);
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
  metrics_prom_count_event (self->prom, ev->type);
  char topic[256];
  snprintf (topic, sizeof topic, "%s/%s", ev->id, ev->type);
  /* Leaves in the before-sleep phase, after the log is flushed. */
  edge_queue_publish (self->edge, seq, topic, encoded, len);
  return seq;
}

static void
s_queue_ack (supervisor_t *self, const char *to, const char *tag)
{
  ack_t *a = calloc (1, sizeof *a);
  a->to = strdup (to);
  a->tag = strdup (tag);
  zlistx_add_end (self->acks, a);
}

void
supervisor_ack_destroy (void **item)
{
  ack_t *a = *item;
  free (a->to);
  free (a->tag);
  free (a);
  *item = NULL;
}

void
supervisor_send_acks (supervisor_t *self, zlistx_t *acks)
{
  for (void *item; (item = zlistx_detach (acks, NULL));)
    {
      ack_t *a = item;
      /* A container that left meanwhile needs no notice: the runtime logs
       * that not_found (info) and counts it. */
      amsg_logged_send (self->daemon->actors, SUPERVISOR_NAME, a->to,
                        &(amsg_logged_t){ .tag = a->tag }, NULL);
      supervisor_ack_destroy (&item);
    }
}

uint64_t
supervisor_log_event (supervisor_t *self, const char *from, const amsg_event_t *m)
{
  bool init_exit = strcmp (m->etype, "exit") == 0 && m->pid && strcmp (m->pid, "init") == 0;
  bool starts = strcmp (m->etype, "start-container") == 0 || strcmp (m->etype, "restore") == 0;
  container_entry_t *e = init_exit ? NULL : s_entry_for (self, m->id, from, starts);
  if (e)
    {
      s_entry_set_view (e, m->view);
      s_entry_set_identity (e, m->bundle, m->init_pid, m->processes, m->cgroup_procs);
      e->owner = m->has_owner ? m->owner : 0;
    }
  zcd_event_t ev = {
    .type = m->etype,
    .id = m->id,
    .pid = m->pid,
    .has_status = m->has_status,
    .status = m->status,
    .system_pid = m->has_system_pid ? m->system_pid : 0,
    .has_oom_killed = m->has_oom_killed,
    .oom_killed = m->oom_killed,
    .ts = 0,
    .uid = m->has_owner ? m->owner : 0,
  };
  uint64_t seq = s_publish_event (self, &ev);
  /* The actor's next reply follows this event: it leaves after the event
   * is durable (edge_flush). */
  uint64_t *last = zhashx_lookup (self->last_event_seq, from);
  if (last == NULL)
    {
      last = malloc (sizeof *last);
      zhashx_insert (self->last_event_seq, from, last);
    }
  *last = seq;
  /* With its init's exit a container leaves `state` and its id is free
   * (PROTOCOL.md `create`), in the same instant the exit takes its seq. */
  container_entry_t *current = zhashx_lookup (self->containers, m->id);
  if (init_exit && current && strcmp (current->actor, from) == 0)
    {
      zhashx_delete (self->containers, m->id);
      /* Its directory stays until the exit is logged: a create of the same
       * id waits for "gone" rather than meet it (issue 8, defect 10). */
      zhashx_update (self->draining, m->id, strdup (from));
    }
  /* The actor removes what it keeps on disk about the exit only once the
   * event is in the log (s_before_sleep): a crash in between loses nothing. */
  if (m->ack)
    s_queue_ack (self, from, m->ack);
  return seq;
}

void
supervisor_on_event (actor_t *actor, const char *from, const amsg_event_t *m)
{
  supervisor_log_event (actor_state (actor), from, m);
}

void
supervisor_on_view (actor_t *actor, const char *from, const amsg_view_t *m)
{
  supervisor_t *self = actor_state (actor);
  container_entry_t *e = s_entry_for (self, m->id, from, true);
  if (e == NULL)
    return;
  s_entry_set_view (e, m->view);
  s_entry_set_identity (e, m->bundle, m->init_pid, m->processes, m->cgroup_procs);
  e->owner = m->has_owner ? m->owner : 0;
}

void
supervisor_on_gone (actor_t *actor, const char *from, const amsg_gone_t *m)
{
  supervisor_t *self = actor_state (actor);
  container_entry_t *e = zhashx_lookup (self->containers, m->id);
  if (e && strcmp (e->actor, from) == 0)
    zhashx_delete (self->containers, m->id);
  zhashx_delete (self->last_event_seq, from);
  const char *draining = zhashx_lookup (self->draining, m->id);
  if (draining && strcmp (draining, from) == 0)
    {
      zhashx_delete (self->draining, m->id);
      supervisor_release_held (self, m->id);
    }
}
