/* The container actor: one per container.  It owns the container's status,
 * labels and process table, runs its operations one at a time in arrival
 * order (its mailbox plus a queue is the order), and drives the runtime
 * for pause, resume, update and kill through asynchronous children, so a
 * hanging runtime delays only this container.  It reports events, views
 * and replies to the supervisor. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "actors/actors.h"
#include "actors/container.h"
#include "core/bundle.h"
#include "core/cgroup.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"
#include "core/shimproto.h"

/* How long exec processes get to report their exit after the init's, before
 * they are killed: the kernel kills them with the pid namespace, so this
 * only matters for containers sharing the host's. */
#define EXEC_DRAIN_MS 5000

static void s_send_view (container_t *self);

/* ------------------------------------------------------------------ */
/* Talking to the supervisor                                           */

static void
s_send (container_t *self, actor_msg_builder_t *mb)
{
  cleanup_error zcd_error_t *err = NULL;
  if (actor_msg_send (self->daemon->actors, actor_name (self->actor), SUPERVISOR_NAME, mb, &err)
      < 0)
    log_error ("container %s: to supervisor: %s", self->id, err->msg);
}

void
container_reply_error (container_t *self, uint64_t token, zcd_code_t code, const char *message)
{
  zcd_send_reply_error (self->daemon->actors, actor_name (self->actor), token, code, message,
                        self->op_emitted);
  self->op_emitted = false;
}

/* result: a packed msgpack map, or NULL for {} */
void
container_reply_ok (container_t *self, uint64_t token, const msgpack_sbuffer *result)
{
  zcd_send_reply_ok (self->daemon->actors, actor_name (self->actor), token, result,
                     self->op_emitted);
  self->op_emitted = false;
}

static const char *
s_status_name (const container_t *self)
{
  return self->paused ? "paused" : self->phase == CONTAINER_STOPPING ? "stopped" : "running";
}

static void
s_pack_view_field (container_t *self, msgpack_packer *pk)
{
  msgpack_sbuffer view;
  msgpack_sbuffer_init (&view);
  container_pack_view (self, &view);
  mp_pack_str (pk, "view");
  msgpack_pack_bin (pk, view.size);
  msgpack_pack_bin_body (pk, view.data, view.size);
  msgpack_sbuffer_destroy (&view);
}

/* What the supervisor needs to route stats and checkpoints: 2 entries. */
static void
s_pack_identity (container_t *self, msgpack_packer *pk)
{
  container_proc_t *init = container_find_proc (self, "init");
  mp_pack_kv_str (pk, "bundle", self->bundle);
  mp_pack_kv_uint (pk, "init_pid", init ? init->system_pid : 0);
}

/* An event, with the view as it is after it (PROTOCOL.md: a client applying
 * events to a `state` snapshot holds the exact state). */
static void
s_emit_acked (container_t *self, const char *etype, const container_proc_t *p, bool with_status,
              int status, bool with_oom, bool oom_killed, const char *ack)
{
  actor_msg_builder_t mb;
  size_t n = 6 + (p ? 1 : 0) + (p && p->system_pid ? 1 : 0) + (with_status ? 1 : 0)
             + (with_oom ? 1 : 0) + (self->cgroup_procs ? 1 : 0) + (ack ? 1 : 0);
  actor_msg_begin (&mb, "event", n);
  if (ack)
    mp_pack_kv_str (&mb.pk, "ack", ack);
  else
    /* An exit (acked) is no operation's doing; the rest are the running
     * operation's, and its reply follows them. */
    self->op_emitted = true;
  mp_pack_kv_str (&mb.pk, "etype", etype);
  mp_pack_kv_str (&mb.pk, "id", self->id);
  s_pack_identity (self, &mb.pk);
  mp_pack_kv_uint (&mb.pk, "processes", container_count_processes (self));
  if (p)
    mp_pack_kv_str (&mb.pk, "pid", p->name);
  if (p && p->system_pid)
    mp_pack_kv_uint (&mb.pk, "system_pid", p->system_pid);
  if (with_status)
    mp_pack_kv_uint (&mb.pk, "status", (uint64_t)status);
  if (with_oom)
    mp_pack_kv_bool (&mb.pk, "oom_killed", oom_killed);
  if (self->cgroup_procs)
    mp_pack_kv_str (&mb.pk, "cgroup_procs", self->cgroup_procs);
  s_pack_view_field (self, &mb.pk);
  s_send (self, &mb);
}

void
container_emit (container_t *self, const char *etype, const container_proc_t *p, bool with_status,
                int status, bool with_oom, bool oom_killed)
{
  s_emit_acked (self, etype, p, with_status, status, with_oom, oom_killed, NULL);
}

static void
s_send_view (container_t *self)
{
  actor_msg_builder_t mb;
  actor_msg_begin (&mb, "view", 5 + (self->cgroup_procs ? 1 : 0));
  mp_pack_kv_str (&mb.pk, "id", self->id);
  s_pack_identity (self, &mb.pk);
  mp_pack_kv_uint (&mb.pk, "processes", container_count_processes (self));
  /* A restored container publishes no start event: the view is where the
   * supervisor learns its cgroup (`pids` in `state`). */
  if (self->cgroup_procs)
    mp_pack_kv_str (&mb.pk, "cgroup_procs", self->cgroup_procs);
  s_pack_view_field (self, &mb.pk);
  s_send (self, &mb);
}

static void
s_send_started (container_t *self, bool ok)
{
  actor_msg_builder_t mb;
  actor_msg_begin (&mb, "started", 3);
  mp_pack_kv_str (&mb.pk, "id", self->id);
  mp_pack_kv_bool (&mb.pk, "ok", ok);
  mp_pack_kv_uint (&mb.pk, "token", self->create_token);
  s_send (self, &mb);
}

/* ------------------------------------------------------------------ */
/* Leaving                                                             */

/* Every request still waiting on this container gets its one final reply
 * before the container goes: a runtime call in flight, an exec whose
 * process had not started yet, and the queued operations. */
static void
s_answer_outstanding (container_t *self)
{
  char message[160];
  snprintf (message, sizeof message, "container `%s` exited", self->id);
  if (self->pending_call)
    {
      child_forget (self->daemon->children, self->pending_call);
      self->pending_call = NULL;
      /* A kill (or the thaw after it) did its job: the container exited. */
      runtime_call_t *call = self->pending_call_arg;
      if (call && (call->kind == OP_SIGNAL || self->thaw_after_kill))
        container_reply_ok (self, self->pending_token, NULL);
      else
        container_reply_error (self, self->pending_token, ZCD_E_NOT_FOUND, message);
      free (self->pending_call_arg);
      self->pending_call_arg = NULL;
    }
  for (container_proc_t *p = self->procs; p; p = p->next)
    if (!p->is_init && !p->started && p->token)
      {
        container_reply_error (self, p->token, ZCD_E_INVALID_STATE, message);
        p->token = 0;
      }
  while (self->ops_head)
    {
      container_op_t *op = self->ops_head;
      self->ops_head = op->next;
      container_reply_error (self, op->token, ZCD_E_NOT_FOUND, message);
      free (op->name);
      free (op->body);
      free (op);
    }
  self->ops_tail = NULL;
}

static void
s_forget_process (container_t *self, container_proc_t *p)
{
  cleanup_free char *dir = zcd_process_dir (self->daemon->config, self->id, p->name);
  container_remove_proc (self, p);
  container_discard_dir (self, dir);
}

static void
s_remove (container_t *self)
{
  s_answer_outstanding (self);
  actor_msg_builder_t mb;
  actor_msg_begin (&mb, "gone", 1);
  mp_pack_kv_str (&mb.pk, "id", self->id);
  s_send (self, &mb);
  container_discard_dir (self, self->dir);
  actor_destroy (self->actor);
}

/* Once the init exited and every exec's exit is out, the init's exit goes
 * last (PROTOCOL.md section 5), then the container leaves the table. */
static void
s_maybe_finish (container_t *self)
{
  if (!self->init_exited)
    return;
  for (container_proc_t *p = self->procs; p; p = p->next)
    if (!p->is_init && p->started)
      return;
  if (self->phase == CONTAINER_STOPPING)
    return; /* the exit is out already, waiting to be logged */
  container_proc_t *init = container_find_proc (self, "init");
  bool oom = self->oom_seen;
  self->phase = CONTAINER_STOPPING;
  if (self->init_exit_logged)
    {
      s_remove (self);
      return;
    }
  /* The container's files go once the supervisor says the exit is in the
   * log ("logged"): a crash before that finds them and reports it. */
  s_emit_acked (self, "exit", init, true, self->init_status, true, oom, "init");
}

static void
s_on_drain_timeout (loop_t *loop, void *arg)
{
  container_t *self = arg;
  self->drain_timer = NULL;
  for (container_proc_t *p = self->procs; p; p = p->next)
    if (!p->is_init && p->started && p->system_pid)
      kill ((pid_t)p->system_pid, SIGKILL);
}

/* Whether the init process has exited (or is exiting: a zombie), even if
 * its exit has not reached this actor yet: a runtime call that failed
 * meanwhile raced that exit. */
bool
container_init_gone (container_t *self)
{
  if (self->init_exited)
    return true;
  container_proc_t *init = container_find_proc (self, "init");
  if (init == NULL || !init->started || init->system_pid == 0)
    return false;
  pid_t pid = (pid_t)init->system_pid;
  uint64_t now = zcd_proc_starttime (pid);
  if (now == 0 || (init->starttime != 0 && now != init->starttime))
    return true;
  return zcd_proc_is_zombie (pid);
}

/* ------------------------------------------------------------------ */
/* Messages from process actors                                        */

static void
s_on_process_started (actor_t *actor, const actor_msg_t *msg)
{
  container_t *self = actor_state (actor);
  cleanup_free char *pid = mp_get_strdup (msg->body, "pid");
  container_proc_t *p = pid ? container_find_proc (self, pid) : NULL;
  if (p == NULL)
    return;
  p->started = true;
  p->system_pid = (uint32_t)mp_get_uint (msg->body, "system_pid", 0);
  p->starttime = mp_get_uint (msg->body, "starttime", 0);
  if (p->is_init)
    {
      container_attach_cgroup (self, (pid_t)p->system_pid);
      self->phase = CONTAINER_RUNNING;
      container_save_state (self, NULL);
      container_emit (self, self->restoring_from ? "restore" : "start-container", p, false, 0,
                      false, false);
      s_send_started (self, true);
      msgpack_sbuffer result;
      msgpack_sbuffer_init (&result);
      msgpack_packer pk;
      msgpack_packer_init (&pk, &result, msgpack_sbuffer_write);
      msgpack_pack_map (&pk, 1);
      mp_pack_str (&pk, "container");
      container_pack_container (self, &pk);
      container_reply_ok (self, self->create_token, &result);
      msgpack_sbuffer_destroy (&result);
      return;
    }
  container_emit (self, "start-process", p, false, 0, false, false);
  msgpack_sbuffer result;
  msgpack_sbuffer_init (&result);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &result, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 1);
  mp_pack_kv_uint (&pk, "system_pid", p->system_pid);
  container_reply_ok (self, p->token, &result);
  p->token = 0;
  msgpack_sbuffer_destroy (&result);
  self->busy = false;
  container_next_op (self);
}

static void
s_on_process_failed (actor_t *actor, const actor_msg_t *msg)
{
  container_t *self = actor_state (actor);
  cleanup_free char *pid = mp_get_strdup (msg->body, "pid");
  cleanup_free char *code = mp_get_strdup (msg->body, "code");
  cleanup_free char *message = mp_get_strdup (msg->body, "message");
  container_proc_t *p = pid ? container_find_proc (self, pid) : NULL;
  if (p == NULL)
    return;
  zcd_code_t c = code ? zcd_code_from_name (code) : ZCD_E_RUNTIME_ERROR;
  if (c == ZCD_CODE_COUNT)
    c = ZCD_E_RUNTIME_ERROR;
  if (p->is_init)
    {
      /* A failed create leaves nothing: the id is free again at once. */
      s_send_started (self, false);
      container_reply_error (self, self->create_token, c, message ? message : "");
      s_remove (self);
      return;
    }
  if (c == ZCD_E_RUNTIME_ERROR && container_init_gone (self))
    {
      /* The runtime refused because the container was exiting: a race
       * with its exit, not a runtime failure (issue 14). */
      char why[200];
      snprintf (why, sizeof why, "container `%s` is stopping (%s)", self->id,
                message ? message : "");
      container_reply_error (self, p->token, ZCD_E_INVALID_STATE, why);
    }
  else
    container_reply_error (self, p->token, c, message ? message : "");
  container_remove_proc (self, p);
  cleanup_free char *dir = zcd_process_dir (self->daemon->config, self->id, pid);
  zcd_rm_rf (dir, NULL);
  self->busy = false;
  container_next_op (self);
}

static void
s_on_process_exit (actor_t *actor, const actor_msg_t *msg)
{
  container_t *self = actor_state (actor);
  cleanup_free char *pid = mp_get_strdup (msg->body, "pid");
  container_proc_t *p = pid ? container_find_proc (self, pid) : NULL;
  if (p == NULL || p->exited)
    return;
  int status = (int)mp_get_uint (msg->body, "status", 255);
  bool logged = mp_get_bool (msg->body, "logged", false);
  if (p->is_init)
    {
      self->init_exit_logged = logged;
      /* An OOM kill whose notification is still queued on the eventfd is
       * published now, before the exit. */
      if (self->oom_fd >= 0)
        {
          bool oom = false;
          cgroup_oom_watch_read (self->cgroup, self->oom_fd, &oom, NULL);
          if (oom || (status == 137 && cgroup_oom_killed (self->cgroup)))
            container_note_oom (self);
        }
      self->init_exited = true;
      self->init_status = status;
      if (!self->drain_timer)
        self->drain_timer
            = loop_timer_add (actor_loop (actor), EXEC_DRAIN_MS, s_on_drain_timeout, self);
      s_maybe_finish (self);
      return;
    }
  /* The view leaves the process out from now on; the entry (and its
   * directory) stay until the exit is logged, so the id is not reused
   * before that and a crash meanwhile still reports it. */
  p->started = false;
  p->exited = true;
  if (logged)
    {
      s_forget_process (self, p);
      container_next_op (self);
    }
  else
    s_emit_acked (self, "exit", p, true, status, false, false, p->name);
  s_maybe_finish (self);
}

/* The supervisor flushed the event log past an exit this actor sent. */
static void
s_on_logged (actor_t *actor, const actor_msg_t *msg)
{
  container_t *self = actor_state (actor);
  cleanup_free char *tag = mp_get_strdup (msg->body, "tag");
  container_proc_t *p = tag ? container_find_proc (self, tag) : NULL;
  if (p == NULL)
    return;
  if (p->is_init)
    s_remove (self);
  else if (p->exited)
    {
      s_forget_process (self, p);
      container_next_op (self);
    }
}

/* ------------------------------------------------------------------ */
/* Operations, one at a time                                           */

void
container_op_done (container_t *self, uint64_t token, zcd_error_t *err)
{
  if (err)
    container_reply_error (self, token, err->code, err->msg);
  else
    container_reply_ok (self, token, NULL);
  self->busy = false;
}

void
container_next_op (container_t *self)
{
  while (!self->busy && self->ops_head && actor_state (self->actor) == self)
    {
      container_op_t *op = self->ops_head;
      /* s_on_logged calls back here once the earlier process is gone. */
      if (container_exec_must_wait (self, op))
        return;
      self->ops_head = op->next;
      if (self->ops_head == NULL)
        self->ops_tail = NULL;
      self->busy = true;
      container_run_op (self, op);
      free (op->name);
      free (op->body);
      free (op);
    }
}

static void
s_on_req (actor_t *actor, const actor_msg_t *msg)
{
  container_t *self = actor_state (actor);
  const msgpack_object *body = mp_map_get (msg->body, "body");
  container_op_t *op = calloc (1, sizeof *op);
  op->token = mp_get_uint (msg->body, "token", 0);
  op->name = mp_get_strdup (msg->body, "op");
  if (body && body->type == MSGPACK_OBJECT_BIN)
    {
      op->body = malloc (body->via.bin.size ? body->via.bin.size : 1);
      memcpy (op->body, body->via.bin.ptr, body->via.bin.size);
      op->body_len = body->via.bin.size;
    }
  if (self->ops_tail)
    self->ops_tail->next = op;
  else
    self->ops_head = op;
  self->ops_tail = op;
  container_next_op (self);
}

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

static void
s_destroy_state (actor_t *actor)
{
  container_t *self = actor_state (actor);
  if (self)
    container_free (self);
}

static const actor_route_t s_routes[] = {
  { "req", s_on_req },
  { "process-started", s_on_process_started },
  { "process-failed", s_on_process_failed },
  { "process-exit", s_on_process_exit },
  { "logged", s_on_logged },
  { NULL, NULL },
};

const actor_class_t container_actor_class = {
  .kind = "container",
  .routes = s_routes,
  .destroy_state = s_destroy_state,
};

actor_t *
container_actor_create (zcd_daemon_t *daemon, const msgpack_object *body, uint64_t token,
                        zcd_error_t **err)
{
  container_t *self = container_new_from_request (daemon, body, err);
  if (self == NULL)
    return NULL;
  self->create_token = token;
  char name[128];
  zcd_container_actor_name (self->id, name, sizeof name);
  self->actor = actor_new (daemon->actors, &container_actor_class, name, self, err);
  if (self->actor == NULL)
    {
      zcd_rm_rf (self->dir, NULL);
      container_free (self);
      return NULL;
    }
  if (container_save_state (self, err) < 0 || container_start_init (self, err) < 0)
    {
      zcd_state_dir_error (err);
      /* The directory is this request's own: it was made above. */
      zcd_rm_rf (self->dir, NULL);
      actor_destroy (self->actor);
      return NULL;
    }
  return self->actor;
}

void
container_notify_view (container_t *self)
{
  s_send_view (self);
}

void
container_note_oom (container_t *self)
{
  if (self->oom_seen)
    return;
  self->oom_seen = true;
  container_emit (self, "oom", NULL, false, 0, false, false);
}

void
container_post_exit (container_t *self, const char *pid, int status, bool logged)
{
  actor_msg_builder_t mb;
  actor_msg_begin (&mb, "process-exit", 3);
  mp_pack_kv_str (&mb.pk, "pid", pid);
  mp_pack_kv_uint (&mb.pk, "status", (uint64_t)status);
  mp_pack_kv_bool (&mb.pk, "logged", logged);
  actor_msg_send (self->daemon->actors, actor_name (self->actor), actor_name (self->actor), &mb,
                  NULL);
}

void
container_emit_start (container_t *self, container_proc_t *p)
{
  container_emit (self, p->is_init ? "start-container" : "start-process", p, false, 0, false,
                  false);
}

const char *
container_status_name (const container_t *self)
{
  return s_status_name (self);
}
