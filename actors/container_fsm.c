/* The container's state machine (see container.h).  One operation runs at a
 * time, in `current`; requests that arrive meanwhile wait in `queue`, in
 * arrival order.  A state accepts the operations its row of s_table lists;
 * the others are answered `invalid_state` with the row's words.  An
 * operation's handler plans it (answer now, or a step to wait for: a
 * runtime call, or a process's start).  Only the operation's end (s_end,
 * container_op_finish) clears the slot, whatever ends it: success, a
 * runtime failure, a runtime that could not even be started, or the
 * container's leaving (container_ops_abort). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/container.h"
#include "core/caller.h"
#include "core/cleanup.h"
#include "core/log.h"
#include "core/mp.h"

#define RUNTIME_CALL_MS 30000
/* A dump writes the container's whole memory (CRIU: ~0.5 s for 256 MiB
 * here): minutes for a big one, and still a deadline. */
#define CHECKPOINT_CALL_MS (10 * 60 * 1000)

/* A request waiting for the current operation: decoded once, here. */
typedef struct container_op
{
  proto_op_code_t op;
  uint64_t token;
  char *raw; /* the client's request, validated at the edge */
  msgpack_unpacked body;
} container_op_t;

typedef void (*op_plan_fn) (container_t *self, const msgpack_object *body, container_plan_t *plan);

static const op_plan_fn s_plans[PROTO_OP_COUNT] = {
  [PROTO_OP_EXEC] = container_plan_exec,
  [PROTO_OP_SIGNAL] = container_plan_signal,
  [PROTO_OP_UPDATE] = container_plan_update,
  [PROTO_OP_UPDATE_PROCESS] = container_plan_update_process,
  [PROTO_OP_CHECKPOINT_CREATE] = container_plan_checkpoint,
};

/* Which operations each state accepts (a bit per PROTO_OP_*).  `why`
 * completes "container `<id>` is ..." in the `invalid_state` answer to the
 * others.  No operation ever meets CONTAINER_CREATING: the create itself is
 * the current operation then, so the others wait for its end.  A signal
 * still goes once the init exited: it finds the init gone (not_found), or
 * reaches an exec still draining. */
#define OP(name) (1u << PROTO_OP_##name)
static const struct
{
  const char *why;
  unsigned accepts;
} s_table[CONTAINER_STATE_COUNT] = {
  [CONTAINER_CREATING] = { "not running yet", 0 },
  [CONTAINER_RUNNING]
  = { NULL, OP (EXEC) | OP (SIGNAL) | OP (UPDATE) | OP (UPDATE_PROCESS) | OP (CHECKPOINT_CREATE) },
  [CONTAINER_PAUSED]
  = { "paused", OP (SIGNAL) | OP (UPDATE) | OP (UPDATE_PROCESS) | OP (CHECKPOINT_CREATE) },
  [CONTAINER_EXITING] = { "stopping", OP (SIGNAL) | OP (UPDATE_PROCESS) },
  [CONTAINER_STOPPED] = { "stopping", OP (SIGNAL) | OP (UPDATE_PROCESS) },
};
#undef OP
_Static_assert (PROTO_OP_COUNT <= 32, "s_table's accepts has a bit per op");

static void s_run_step (container_t *self, container_step_t step, char **words);

static bool
s_busy (const container_t *self)
{
  return self->current.op != PROTO_OP_COUNT;
}

/* ------------------------------------------------------------------ */
/* The slot                                                            */

/* The answer goes and the slot is free.  Inside this file the queue moves
 * on from container_run_queue's loop (or the end of a runtime call's
 * callback): a long queue of operations that end at once must not nest one
 * call per operation. */
static void
s_end (container_t *self, const zcd_error_t *err, const msgpack_sbuffer *result)
{
  container_current_t done = self->current;
  self->current = (container_current_t){ .op = PROTO_OP_COUNT };
  container_reply (self, done.token, err, result, done.emitted);
}

void
container_op_finish (container_t *self, const zcd_error_t *err, const msgpack_sbuffer *result)
{
  s_end (self, err, result);
  container_run_queue (self);
}

void
container_op_answered (container_t *self)
{
  self->current = (container_current_t){ .op = PROTO_OP_COUNT };
}

static void s_end_error (container_t *self, zcd_code_t code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
s_end_error (container_t *self, zcd_code_t code, const char *fmt, ...)
{
  cleanup_error zcd_error_t *err = NULL;
  va_list ap;
  va_start (ap, fmt);
  zcd_failv (&err, code, 0, fmt, ap);
  va_end (ap);
  s_end (self, err, NULL);
}

void
container_begin_create (container_t *self, uint64_t token, process_t *init)
{
  self->current = (container_current_t){
    .op = PROTO_OP_CREATE, .token = token, .step = STEP_INIT_START, .process = init
  };
}

/* Carry out what the handler planned. */
static void
s_start (container_t *self, container_op_t *op)
{
  self->current = (container_current_t){ .op = op->op, .token = op->token };
  if (op->op >= PROTO_OP_COUNT || s_plans[op->op] == NULL)
    {
      s_end_error (self, ZCD_E_UNKNOWN_OP, "container op `%s`",
                   op->op < PROTO_OP_COUNT ? proto_ops[op->op].name : "?");
      return;
    }
  if (!(s_table[self->state].accepts & (1u << op->op)))
    {
      s_end_error (self, ZCD_E_INVALID_STATE, "container `%s` is %s", self->id,
                   s_table[self->state].why);
      return;
    }
  container_plan_t plan = { 0 };
  s_plans[op->op](self, &op->body.data, &plan);
  if (plan.step == STEP_NONE)
    {
      s_end (self, plan.err, NULL);
      zcd_error_free (&plan.err);
      return;
    }
  self->current.step = plan.step;
  self->current.then = plan.then;
  self->current.process = plan.process;
  if (plan.step != STEP_EXEC_START)
    s_run_step (self, plan.step, plan.words);
  mp_strv_free (plan.words);
}

/* ------------------------------------------------------------------ */
/* The queue                                                           */

static void
s_op_destroy (void **item)
{
  container_op_t *op = *item;
  if (op == NULL)
    return;
  msgpack_unpacked_destroy (&op->body);
  free (op->raw);
  free (op);
  *item = NULL;
}

void
container_op_arrive (container_t *self, proto_op_code_t code, uint64_t token, const char *body,
                     size_t len)
{
  container_op_t *op = calloc (1, sizeof *op);
  op->op = code;
  op->token = token;
  op->raw = malloc (len ? len : 1);
  if (body)
    memcpy (op->raw, body, len);
  msgpack_unpacked_init (&op->body);
  if (body == NULL || mp_unpack (op->raw, len, &op->body, NULL) < 0)
    {
      container_reply (
          self, token,
          &(zcd_error_t){ .code = ZCD_E_INTERNAL, .msg = "undecodable forwarded request" }, NULL,
          false);
      s_op_destroy ((void **)&op);
      return;
    }
  if (self->queue == NULL)
    {
      self->queue = zlistx_new ();
      zlistx_set_destructor (self->queue, s_op_destroy);
    }
  zlistx_add_end (self->queue, op);
  container_run_queue (self);
}

void
container_run_queue (container_t *self)
{
  while (!s_busy (self) && self->queue)
    {
      container_op_t *op = zlistx_first (self->queue);
      if (op == NULL)
        return;
      /* Freed processes call back here once the earlier one is gone. */
      if (op->op == PROTO_OP_EXEC && container_exec_must_wait (self, &op->body.data))
        return;
      op = zlistx_detach (self->queue, NULL);
      s_start (self, op);
      s_op_destroy ((void **)&op);
    }
}

void
container_ops_abort (container_t *self)
{
  char message[160];
  snprintf (message, sizeof message, "container `%s` exited", self->id);
  if (s_busy (self))
    {
      container_current_t *c = &self->current;
      if (c->child)
        child_forget (self->daemon->children, c->child);
      c->child = NULL;
      zcd_code_t code = ZCD_E_NOT_FOUND;
      if (c->step == STEP_EXEC_START)
        code = ZCD_E_INVALID_STATE;
      /* A kill (or the thaw after it) did its job: the container exited. */
      bool done = c->step == STEP_KILL || c->step == STEP_THAW_AFTER_KILL
                  || c->step == STEP_REFREEZE_AFTER_KILL;
      /* A failed operation still cleaning up (the removal goes on in its
       * child) has its answer already. */
      const zcd_error_t *err
          = c->failure ? c->failure : &(zcd_error_t){ .code = code, .msg = message };
      container_reply (self, c->token, done ? NULL : err, NULL, c->emitted);
      zcd_error_free (&c->failure);
      *c = (container_current_t){ .op = PROTO_OP_COUNT };
    }
  for (container_op_t *op; self->queue && (op = zlistx_detach (self->queue, NULL));)
    {
      container_reply (self, op->token, &(zcd_error_t){ .code = ZCD_E_NOT_FOUND, .msg = message },
                       NULL, false);
      s_op_destroy ((void **)&op);
    }
}

/* ------------------------------------------------------------------ */
/* Runtime calls                                                       */

static void s_runtime_done (const child_result_t *res, void *arg);

/* What a successful runtime call changes, and its event. */
static void
s_step_succeeded (container_t *self, container_step_t step)
{
  bool live = self->state == CONTAINER_RUNNING || self->state == CONTAINER_PAUSED;
  switch (step)
    {
    case STEP_PAUSE:
      /* Frozen again after a `kill --all` (REFREEZE): no change to report;
       * exited meanwhile: nothing left to report. */
      if (self->state != CONTAINER_RUNNING)
        break;
      container_set_state (self, CONTAINER_PAUSED);
      container_save_state (self, NULL);
      container_emit (self, NULL, &(amsg_event_t){ .etype = "pause" });
      break;
    case STEP_RESUME:
    case STEP_THAW_AFTER_KILL:
      if (self->state != CONTAINER_PAUSED)
        break;
      container_set_state (self, CONTAINER_RUNNING);
      container_save_state (self, NULL);
      container_emit (self, NULL, &(amsg_event_t){ .etype = "resume" });
      break;
    case STEP_UPDATE:
      if (live)
        container_emit (self, NULL, &(amsg_event_t){ .etype = "update" });
      break;
    case STEP_CHECKPOINT:
      container_checkpoint_done (self);
      container_emit (self, NULL, &(amsg_event_t){ .etype = "checkpoint" });
      break;
    default:
      break;
    }
}

/* The call that follows a delivered signal cannot undo it: runc thaws a
 * paused container itself when it SIGKILLs it (crun does not), so the thaw
 * after a kill only has to leave it running; a re-freeze after a `kill
 * --all` fails when the signal ended the container, or leaves it running,
 * which is then what zcd reports.  Either way the kill succeeded. */
static void
s_after_kill_failed (container_t *self, container_step_t step)
{
  if (step == STEP_REFREEZE_AFTER_KILL && self->state == CONTAINER_PAUSED)
    s_step_succeeded (self, STEP_RESUME);
}

static void
s_cleanup_done (const child_result_t *res, void *arg)
{
  container_t *self = arg;
  self->current.child = NULL;
  container_checkpoint_cleaned (self, res);
  cleanup_error zcd_error_t *err = steal_pointer (&self->current.failure);
  s_end (self, err, NULL);
  container_run_queue (self);
}

/* The step failed with *err: the answer goes now, or once what a failed
 * dump left is removed (the name is free when the client hears of it). */
static void
s_fail (container_t *self, container_step_t step, zcd_error_t **err)
{
  child_t *cleanup
      = step == STEP_CHECKPOINT ? container_checkpoint_failed (self, s_cleanup_done) : NULL;
  if (cleanup == NULL)
    {
      s_end (self, *err, NULL);
      zcd_error_free (err);
      return;
    }
  self->current.step = STEP_CLEANUP;
  self->current.then = STEP_NONE;
  self->current.child = cleanup;
  self->current.failure = steal_pointer (err);
}

static void
s_step_failed (container_t *self, container_step_t step, zcd_code_t code, const char *text)
{
  zcd_error_t *err = NULL;
  if (code == ZCD_E_RUNTIME_ERROR && container_init_gone (self))
    /* The runtime failed because the container was exiting (runc:
     * "container not running", crun: "No such process"): a race with its
     * exit, not a runtime failure (issue 14). */
    zcd_fail (&err, ZCD_E_NOT_FOUND, "container `%s` has exited (%s)", self->id, text ? text : "");
  else if (step == STEP_CHECKPOINT && code == ZCD_E_RUNTIME_ERROR)
    {
      cleanup_free char *full = container_checkpoint_failure_text (self, text ? text : "");
      zcd_fail (&err, code, "%s", full);
    }
  else
    zcd_fail (&err, code, "%s", text ? text : "");
  s_fail (self, step, &err);
}

static char **
s_words (const char *verb, const char *id)
{
  const char *w[] = { verb, id, NULL };
  return container_strv_dup (w);
}

/* Run `<runtime> words...` for the current operation's step. */
static void
s_run_step (container_t *self, container_step_t step, char **words)
{
  char **plain = zcd_runtime_argv (self->runtime, self->runtime_args, (const char *const *)words);
  /* A rootless container's runtime state is its user's: so are the calls. */
  char **argv = zcd_argv_as_user (plain, self->owner.uid, self->owner.gid, self->owner.groups);
  mp_strv_free (plain);
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.deadline_ms = step == STEP_CHECKPOINT ? CHECKPOINT_CALL_MS : RUNTIME_CALL_MS;
  cleanup_error zcd_error_t *err = NULL;
  self->current.step = step;
  self->current.child
      = child_spawn (self->daemon->children, argv, &opts, s_runtime_done, self, &err);
  mp_strv_free (argv);
  if (self->current.child)
    return;
  /* The runtime could not be started: the operation ends here (this was
   * the bug of issue 9: nothing freed the slot, and every later operation
   * waited for the container's exit). */
  if (step == STEP_THAW_AFTER_KILL || step == STEP_REFREEZE_AFTER_KILL)
    {
      s_after_kill_failed (self, step);
      s_end (self, NULL, NULL);
      return;
    }
  s_step_failed (self, step, err->code == ZCD_E_INTERNAL ? ZCD_E_RUNTIME_ERROR : err->code,
                 err->msg);
}

/* The step after a successful one, or the operation's end. */
static void
s_step_next (container_t *self)
{
  container_step_t then = self->current.then;
  if (then == STEP_NONE)
    {
      s_end (self, NULL, NULL);
      return;
    }
  self->current.then = STEP_NONE;
  bool pause = then == STEP_PAUSE || then == STEP_REFREEZE_AFTER_KILL;
  char **words = s_words (pause ? "pause" : "resume", self->id);
  s_run_step (self, then, words);
  mp_strv_free (words);
}

static void
s_runtime_done (const child_result_t *res, void *arg)
{
  container_t *self = arg;
  container_step_t step = self->current.step;
  self->current.child = NULL;
  bool failed = res->exit_code != 0 || res->timed_out;
  if (failed && (step == STEP_THAW_AFTER_KILL || step == STEP_REFREEZE_AFTER_KILL))
    {
      s_after_kill_failed (self, step);
      s_end (self, NULL, NULL);
    }
  else if (failed && res->timed_out)
    {
      zcd_error_t *err = NULL;
      zcd_fail (&err, ZCD_E_RUNTIME_ERROR, "the runtime did not answer in time");
      s_fail (self, step, &err);
    }
  else if (failed && !(step == STEP_CHECKPOINT && container_checkpoint_dumped (self)))
    {
      cleanup_free char *text = zcd_runtime_error_text (res->out, res->err);
      s_step_failed (self, step, ZCD_E_RUNTIME_ERROR, text);
    }
  else
    {
      s_step_succeeded (self, step);
      s_step_next (self);
    }
  container_run_queue (self);
  if (step == STEP_CHECKPOINT)
    container_checkpoint_ended (self);
}
