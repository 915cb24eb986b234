/* The container actor: one per container.  It owns the container's state,
 * labels and processes, runs its operations one at a time in arrival order
 * (container_fsm.c), and reports events, views and replies to the
 * supervisor.  This file is its life: the create, the messages it takes,
 * what its processes tell it (process callbacks, called directly), the
 * exits, and its leaving. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actors/actors.h"
#include "actors/container.h"
#include "core/amsg_gen.h"
#include "core/bundle.h"
#include "core/cgroup.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

/* How long exec processes get to report their exit after the init's, before
 * they are killed: the kernel kills them with the pid namespace, so this
 * only matters for containers sharing the host's. */
#define EXEC_DRAIN_MS 5000

/* ------------------------------------------------------------------ */
/* Leaving                                                             */

/* Every request still waiting on this container gets its one final reply
 * before the container goes.  Nothing may touch self after this (the
 * actor's state goes with it). */
static void
s_remove (container_t *self)
{
  container_ops_abort (self);
  container_forget_cgroup (self);
  container_send_gone (self);
  container_discard_dir (self, self->dir);
  actor_destroy (self->actor);
}

/* p's exit (p->status; the init's says whether an OOM killed it), told
 * "logged" with p's name once it is durable: only then do p's files go. */
static void
s_emit_exit (container_t *self, const process_t *p)
{
  container_emit (self, p,
                  &(amsg_event_t){ .etype = "exit",
                                   .has_status = true,
                                   .status = (uint32_t)p->status,
                                   .has_oom_killed = p->is_init,
                                   .oom_killed = p->is_init && self->oom_seen,
                                   .ack = p->name });
}

static void
s_forget_process (container_t *self, process_t *p)
{
  cleanup_free char *dir = zcd_process_dir (self->daemon->config, self->id, p->name);
  container_remove_process (self, p);
  container_discard_dir (self, dir);
}

/* Once the init exited and every exec's exit is out, the init's exit goes
 * last (PROTOCOL.md section 5), then the container leaves the table.
 * false: the container is gone (self with it). */
static bool
s_maybe_finish (container_t *self)
{
  if (self->state != CONTAINER_EXITING)
    return true; /* running, or the init's exit is out already, waiting to be logged */
  /* A dump with `exit` ends the container: its checkpoint event and reply
   * come first, then the exit (container_checkpoint_ended). */
  if (self->current.step == STEP_CHECKPOINT && self->current.child)
    return true;
  for (process_t *p = zlistx_first (self->procs); p; p = zlistx_next (self->procs))
    if (!p->is_init && p->state == PROCESS_RUNNING)
      return true;
  container_set_state (self, CONTAINER_STOPPED);
  if (self->init_exit_logged)
    {
      s_remove (self);
      return false;
    }
  /* The container's files go once the supervisor says the exit is in the
   * log ("logged"): a crash before that finds them and reports it. */
  s_emit_exit (self, container_init_process (self));
  return true;
}

void
container_checkpoint_ended (container_t *self)
{
  s_maybe_finish (self);
}

static void
s_on_drain_timeout (loop_t *loop, void *arg)
{
  container_t *self = arg;
  self->drain_timer = NULL;
  for (process_t *p = zlistx_first (self->procs); p; p = zlistx_next (self->procs))
    if (!p->is_init && p->state == PROCESS_RUNNING)
      process_signal (p, SIGKILL);
}

static void
s_init_exited (container_t *self, process_t *init, bool logged)
{
  self->init_exit_logged = logged;
  /* An OOM kill whose notification is still queued on the eventfd is
   * published now, before the exit. */
  if (self->oom_fd >= 0)
    {
      bool oom = false;
      cgroup_oom_watch_read (self->cgroup, self->oom_fd, &oom, NULL);
      if (oom || (init->status == 137 && cgroup_oom_killed (self->cgroup)))
        container_note_oom (self);
    }
  container_set_state (self, CONTAINER_EXITING);
  if (!self->drain_timer)
    self->drain_timer
        = loop_timer_add (self->daemon->loop, EXEC_DRAIN_MS, s_on_drain_timeout, self);
}

/* p exited (p->status).  `logged`: a restart found the exit in the event
 * log already.  false: the container is gone (self with it). */
static bool
s_exited (container_t *self, process_t *p, bool logged)
{
  container_view_changed (self);
  if (p->is_init)
    {
      s_init_exited (self, p, logged);
      return s_maybe_finish (self);
    }
  /* The view leaves the process out from now on; the entry (and its
   * directory) stay until the exit is logged, so the id is not reused
   * before that and a crash meanwhile still reports it. */
  if (logged)
    {
      s_forget_process (self, p);
      container_run_queue (self);
    }
  else
    s_emit_exit (self, p);
  return s_maybe_finish (self);
}

/* ------------------------------------------------------------------ */
/* What the processes tell                                             */

static void
s_init_started (container_t *self, process_t *init)
{
  container_attach_cgroup (self, (pid_t)init->system_pid);
  /* state.json does not change: it was written at the create. */
  container_set_state (self, CONTAINER_RUNNING);
  /* One message is the start event and the create's reply. */
  container_send_started (self, self->current.token,
                          self->restoring_from ? "restore" : "start-container");
  container_op_answered (self);
  container_run_queue (self);
}

static void
s_process_started (void *owner, process_t *p)
{
  container_t *self = owner;
  container_view_changed (self);
  if (p->is_init && self->current.step == STEP_INIT_START)
    {
      s_init_started (self, p);
      return;
    }
  container_emit (self, p, &(amsg_event_t){ .etype = "start-process" });
  if (self->current.step != STEP_EXEC_START || self->current.process != p)
    return;
  msgpack_sbuffer result;
  msgpack_sbuffer_init (&result);
  msgpack_packer pk;
  msgpack_packer_init (&pk, &result, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 1);
  mp_pack_kv_uint (&pk, "system_pid", p->system_pid);
  container_op_finish (self, NULL, &result);
  msgpack_sbuffer_destroy (&result);
}

static void
s_process_failed (void *owner, process_t *p, zcd_code_t code, const char *message)
{
  container_t *self = owner;
  cleanup_error zcd_error_t *err = NULL;
  if (p->is_init)
    {
      /* A failed create leaves nothing: the id is free again at once. */
      container_send_start_failed (self, self->current.token, code, message);
      container_op_answered (self);
      s_remove (self);
      return;
    }
  if (code == ZCD_E_RUNTIME_ERROR && container_init_gone (self))
    /* The runtime refused because the container was exiting: a race with
     * its exit, not a runtime failure (issue 14). */
    zcd_fail (&err, ZCD_E_INVALID_STATE, "container `%s` is stopping (%s)", self->id, message);
  else
    zcd_fail (&err, code, "%s", message);
  bool current = self->current.process == p;
  if (current)
    self->current.process = NULL;
  cleanup_free char *dir = p->dir ? strdup (p->dir) : NULL;
  container_remove_process (self, p);
  if (dir)
    container_discard_dir (self, dir);
  if (current)
    container_op_finish (self, err, NULL);
}

static void
s_process_exited (void *owner, process_t *p)
{
  s_exited (owner, p, false);
}

const process_callbacks_t container_process_callbacks = {
  .started = s_process_started,
  .failed = s_process_failed,
  .exited = s_process_exited,
};

/* ------------------------------------------------------------------ */
/* Exits a restart found: reported on the next turn                    */

typedef struct restored_exit
{
  char *name;
  bool logged;
} restored_exit_t;

static void
s_restored_exit_destroy (void **item)
{
  restored_exit_t *e = *item;
  if (e == NULL)
    return;
  free (e->name);
  free (e);
  *item = NULL;
}

static void
s_on_restored_exits (loop_t *loop, void *arg)
{
  container_t *self = arg;
  self->restored_timer = NULL;
  restored_exit_t *e;
  while ((e = zlistx_detach (self->restored_exits, NULL)))
    {
      process_t *p = container_find_process (self, e->name);
      bool logged = e->logged;
      s_restored_exit_destroy ((void **)&e);
      if (p == NULL || p->state != PROCESS_RUNNING)
        continue;
      p->state = PROCESS_EXITED;
      if (!s_exited (self, p, logged))
        return;
    }
}

void
container_post_exit (container_t *self, process_t *p, bool logged)
{
  if (self->restored_exits == NULL)
    {
      self->restored_exits = zlistx_new ();
      zlistx_set_destructor (self->restored_exits, s_restored_exit_destroy);
    }
  restored_exit_t *e = calloc (1, sizeof *e);
  e->name = strdup (p->name);
  e->logged = logged;
  zlistx_add_end (self->restored_exits, e);
  /* A 0 ms timer, not a message to itself: nothing can drop it, and
   * container_free cancels it. */
  if (self->restored_timer == NULL)
    self->restored_timer = loop_timer_add (self->daemon->loop, 0, s_on_restored_exits, self);
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */

/* A client request the supervisor parked (token): queued, run in order. */
static void
s_on_req (actor_t *actor, const char *from, const amsg_req_t *m)
{
  container_op_arrive (actor_state (actor), m->op, m->token, m->body.ptr, m->body.size);
}

/* The supervisor flushed the event log past an exit this actor sent
 * (tagged with the process's name). */
static void
s_on_logged (actor_t *actor, const char *from, const amsg_logged_t *m)
{
  container_t *self = actor_state (actor);
  process_t *p = container_find_process (self, m->tag);
  if (p == NULL || p->state != PROCESS_EXITED)
    return;
  if (p->is_init)
    {
      s_remove (self);
      return;
    }
  s_forget_process (self, p);
  container_run_queue (self);
}

/* The actor is destroyed: nothing may call into the container any more;
 * its memory goes after the running handler returned. */
static void
s_stop (actor_t *actor)
{
  container_t *self = actor_state (actor);
  if (self)
    container_stop (self);
}

static void
s_destroy_state (actor_t *actor)
{
  container_t *self = actor_state (actor);
  if (self)
    container_free (self);
}

static const amsg_container_handlers_t s_handlers = {
  .on_req = s_on_req,
  .on_logged = s_on_logged,
};

const actor_class_t container_actor_class = {
  .kind = "container",
  AMSG_CONTAINER_DISPATCH (&s_handlers),
  .stop = s_stop,
  .destroy_state = s_destroy_state,
};

/* ------------------------------------------------------------------ */
/* The create                                                          */

container_spec_t *
container_spec_new (const msgpack_object *body, bundle_info_t *info, char **restore_args)
{
  container_spec_t *spec = calloc (1, sizeof *spec);
  spec->id = mp_get_strdup (body, "id");
  spec->bundle = mp_get_strdup (body, "bundle");
  spec->labels = mp_get_strv (body, "labels");
  spec->runtime = mp_get_strdup (body, "runtime");
  spec->runtime_args = mp_get_strv (body, "runtime_args");
  spec->no_pivot = mp_get_bool (body, "no_pivot_root", false);
  spec->stdin_path = mp_get_strdup (body, "stdin");
  spec->stdout_path = mp_get_strdup (body, "stdout");
  spec->stderr_path = mp_get_strdup (body, "stderr");
  process_log_from_request (&spec->log, body);
  cleanup_free char *checkpoint = mp_get_strdup (body, "checkpoint");
  cleanup_free char *cdir = mp_get_strdup (body, "checkpoint_dir");
  if (checkpoint && cdir && asprintf (&spec->restoring_from, "%s/%s", cdir, checkpoint) < 0)
    spec->restoring_from = NULL;
  else if (checkpoint && !cdir
           && asprintf (&spec->restoring_from, "%s/checkpoints/%s", spec->bundle, checkpoint) < 0)
    spec->restoring_from = NULL;
  spec->bundle_info = info;
  spec->restore_args = restore_args;
  return spec;
}

void
container_spec_set_owner (container_spec_t *spec, uint32_t uid, uint32_t gid, char *groups)
{
  spec->owner.uid = uid;
  spec->owner.gid = gid;
  free (spec->owner.groups);
  spec->owner.groups = groups;
}

void
container_spec_destroy (container_spec_t **pspec)
{
  container_spec_t *spec = pspec ? *pspec : NULL;
  if (spec == NULL)
    return;
  free (spec->id);
  free (spec->bundle);
  mp_strv_free (spec->labels);
  free (spec->runtime);
  mp_strv_free (spec->runtime_args);
  free (spec->stdin_path);
  free (spec->stdout_path);
  free (spec->stderr_path);
  process_log_clear (&spec->log);
  free (spec->restoring_from);
  free (spec->owner.groups);
  mp_strv_free (spec->restore_args);
  bundle_info_destroy (&spec->bundle_info);
  free (spec);
  *pspec = NULL;
}

/* The container's directories, made fresh, never reused: an existing one
 * is an earlier container's (the supervisor holds a create until that one
 * is gone).  A spare skeleton (actors/container_dirs.c) is as fresh, and
 * its init directory has the FIFOs already: 1 then, else 0; -1 on error. */
static int
s_make_dirs (container_t *self, zcd_error_t **err)
{
  int taken = container_dirs_take (self->daemon->dirs, self->dir, err);
  if (taken == 0 && zcd_mkdir (self->dir, 0700, err) < 0)
    taken = -1;
  if (taken < 0)
    {
      if (*err && (*err)->code == ZCD_E_ALREADY_EXISTS)
        {
          zcd_error_free (err);
          zcd_fail (err, ZCD_E_ALREADY_EXISTS,
                    "the state directory of an earlier container `%s` is still there", self->id);
        }
      return -1;
    }
  if (taken)
    {
      self->spare_state = true;
      return 1;
    }
  cleanup_free char *procs = NULL;
  cleanup_free char *init_dir = zcd_process_dir (self->daemon->config, self->id, "init");
  if (asprintf (&procs, "%s/" ZCD_PROCS_DIR, self->dir) < 0 || init_dir == NULL
      || zcd_mkdir (procs, 0700, err) < 0 || zcd_mkdir (init_dir, 0700, err) < 0)
    {
      zcd_state_dir_error (err);
      zcd_rm_rf (self->dir, NULL);
      return -1;
    }
  return 0;
}

static int
s_start_init (container_t *self, process_t *init, bool fifos_made, zcd_error_t **err)
{
  if (container_save_state (self, err) < 0)
    return -1;
  process_launch_t launch = container_process_launch (self);
  launch.checkpoint_dir = self->restoring_from;
  launch.restore_args = self->restore_args;
  launch.fifos_made = fifos_made;
  if (process_spawn (init, &launch, err) < 0)
    {
      zcd_state_dir_error (err);
      return -1;
    }
  return 0;
}

actor_t *
container_actor_create (zcd_daemon_t *daemon, const container_spec_t *spec, uint64_t token,
                        zcd_error_t **err)
{
  container_t *self = container_new (daemon, spec->id);
  container_apply_spec (self, spec);
  self->created = zcd_now_ns ();
  self->process_cb = &container_process_callbacks;
  process_t *init = process_new_init (spec->bundle_info, spec->stdin_path, spec->stdout_path,
                                      spec->stderr_path);
  process_log_copy (&init->log, &spec->log);
  container_add_process (self, init);
  int made = s_make_dirs (self, err);
  if (made < 0)
    {
      container_free (self);
      return NULL;
    }
  char name[128];
  zcd_container_actor_name (self->id, name, sizeof name);
  self->actor = actor_new (daemon->actors, &container_actor_class, name, self, err);
  if (self->actor == NULL)
    {
      zcd_rm_rf (self->dir, NULL);
      container_free (self);
      return NULL;
    }
  if (s_start_init (self, init, made == 1, err) < 0)
    {
      /* The directory is this request's own: it was made above. */
      zcd_rm_rf (self->dir, NULL);
      actor_t *actor = self->actor;
      actor_destroy (actor);
      return NULL;
    }
  container_begin_create (self, token, init);
  return self->actor;
}
