/* The container's runtime calls (pause, resume, update, kill, checkpoint):
 * `<runtime> words...` run as an asynchronous child with a deadline, so a
 * hanging runtime delays only this container; its end answers the
 * operation, and a success sets the new state and emits its event. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/container.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/mp.h"

#define RUNTIME_CALL_MS 30000

static void
s_runtime_done (const child_result_t *res, void *arg)
{
  runtime_call_t *call = arg;
  container_t *self = call->self;
  self->pending_call = NULL;
  self->pending_call_arg = NULL;
  bool failed = res->exit_code != 0 || res->timed_out;
  /* The call that follows a delivered signal cannot undo it: runc thaws a
   * paused container itself when it SIGKILLs it (crun does not), so the
   * thaw after a kill only has to leave it running; a re-freeze after a
   * `kill --all` fails when the signal ended the container, or leaves it
   * running, which is then what zcd reports. */
  if (failed && self->thaw_after_kill)
    {
      failed = false;
      if (call->kind == OP_PAUSE && self->phase != CONTAINER_STOPPING && self->paused)
        container_op_finished (self, OP_RESUME);
      call->kind = OP_NONE;
    }
  self->thaw_after_kill = false;
  if (!failed && self->then_status != OP_NONE)
    {
      /* A second runtime call for the same request: an update's pause or
       * resume after its resources (each with its event), or the thaw that
       * lets a SIGKILL reach a paused container's processes. */
      container_op_kind_t next = self->then_status;
      self->then_status = OP_NONE;
      self->thaw_after_kill = call->kind == OP_SIGNAL;
      container_op_finished (self, call->kind);
      const char *words[] = { next == OP_PAUSE ? "pause" : "resume", self->id, NULL };
      uint64_t token = call->token;
      free (call);
      if (container_run_runtime (self, token, next, words) < 0)
        {
          self->busy = false;
          container_next_op (self);
        }
      return;
    }
  self->then_status = OP_NONE;
  if (failed)
    {
      cleanup_free char *text = res->timed_out ? strdup ("the runtime did not answer in time")
                                               : zcd_runtime_error_text (res->out, res->err);
      if (!res->timed_out && container_init_gone (self))
        {
          /* The runtime failed because the container was exiting (runc:
           * "container not running", crun: "No such process"): a race
           * with its exit, not a runtime failure (issue 14). */
          char why[300];
          snprintf (why, sizeof why, "container `%s` has exited (%s)", self->id, text ? text : "");
          container_reply_error (self, call->token, ZCD_E_NOT_FOUND, why);
        }
      else
        container_reply_error (self, call->token, ZCD_E_RUNTIME_ERROR, text);
      if (call->kind == OP_CHECKPOINT)
        container_checkpoint_failed (self);
    }
  else
    {
      container_op_finished (self, call->kind);
      container_reply_ok (self, call->token, NULL);
    }
  free (call);
  self->busy = false;
  container_next_op (self);
}

/* Run `<runtime> words...` for an operation; the reply goes when it ends. */
int
container_run_runtime (container_t *self, uint64_t token, container_op_kind_t kind,
                       const char *const *words)
{
  char **argv = zcd_runtime_argv (self->runtime, self->runtime_args, words);
  runtime_call_t *call = calloc (1, sizeof *call);
  call->self = self;
  call->token = token;
  call->kind = kind;
  child_opts_t opts = CHILD_OPTS_DEFAULT;
  opts.deadline_ms = RUNTIME_CALL_MS;
  cleanup_error zcd_error_t *err = NULL;
  self->pending_call
      = child_spawn (self->daemon->children, argv, &opts, s_runtime_done, call, &err);
  self->pending_token = token;
  self->pending_call_arg = self->pending_call ? call : NULL;
  mp_strv_free (argv);
  if (self->pending_call == NULL)
    {
      container_reply_error (
          self, token, err->code == ZCD_E_INTERNAL ? ZCD_E_RUNTIME_ERROR : err->code, err->msg);
      free (call);
      /* The operation ended here: the next one may run. */
      self->busy = false;
      return -1;
    }
  return 0;
}

/* After a successful runtime call: new state and its event. */
void
container_op_finished (container_t *self, container_op_kind_t kind)
{
  switch (kind)
    {
    case OP_PAUSE:
      if (self->phase == CONTAINER_STOPPING)
        break; /* the container exited meanwhile: nothing left to report */
      if (self->paused)
        break; /* frozen again after a `kill --all`: no change to report */
      self->paused = true;
      container_save_state (self, NULL);
      container_emit (self, "pause", NULL, false, 0, false, false);
      break;
    case OP_RESUME:
      if (self->phase == CONTAINER_STOPPING)
        break;
      self->paused = false;
      container_save_state (self, NULL);
      container_emit (self, "resume", NULL, false, 0, false, false);
      break;
    case OP_UPDATE:
      if (self->phase == CONTAINER_STOPPING)
        break;
      container_emit (self, "update", NULL, false, 0, false, false);
      break;
    case OP_CHECKPOINT:
      container_checkpoint_done (self);
      container_emit (self, "checkpoint", NULL, false, 0, false, false);
      break;
    default:
      break;
    }
}
