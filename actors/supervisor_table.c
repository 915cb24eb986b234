/* The supervisor's container table and the events that feed it: what
 * each container actor reports (events, views, its going), the event's way
 * into the log and out to subscribers, and the "logged" notices owed once
 * the log is flushed. */
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
  const unsigned char *p = (const unsigned char *)view_bin->via.bin.ptr;
  size_t len = view_bin->via.bin.size;
  uint32_t n;
  size_t header;
  if (len >= 1 && (p[0] & 0xf0) == 0x80)
    n = p[0] & 0x0f, header = 1;
  else if (len >= 3 && p[0] == 0xde)
    n = (uint32_t)(p[1] << 8 | p[2]), header = 3;
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
void
supervisor_send_acks (supervisor_t *self)
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

void
supervisor_on_event (actor_t *actor, const actor_msg_t *msg)
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
      e->processes = (uint32_t)mp_get_uint (b, "processes", e->processes);
      s_entry_set_cgroup_procs (e, b);
    }
  zcd_event_t ev = {
    .type = etype,
    .id = id,
    .pid = pid,
    .has_status = mp_map_get (b, "status") != NULL,
    .status = (uint32_t)mp_get_uint (b, "status", 0),
    .system_pid = (uint32_t)mp_get_uint (b, "system_pid", 0),
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

void
supervisor_on_view (actor_t *actor, const actor_msg_t *msg)
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
  e->processes = (uint32_t)mp_get_uint (msg->body, "processes", e->processes);
  s_entry_set_cgroup_procs (e, msg->body);
}

void
supervisor_on_gone (actor_t *actor, const actor_msg_t *msg)
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
      supervisor_release_held (self, id);
    }
}
