/* The container actor's insides, shared by its files.  Calls go down this
 * list, never back up (a file calls only files below it):
 *
 *   container_restore.c     the actor rebuilt after a restart
 *   container.c             the actor: creation, messages, the process
 *                           callbacks, exits, leaving
 *   container_fsm.c         the state machine: which ops each state accepts,
 *                           the current operation, the queue, runtime calls
 *   container_exec.c        exec             } each plans an operation:
 *   container_update.c      signal, update,  } answer now, or the runtime
 *                           update_process   } call (or start) it waits for
 *   container_checkpoint.c  checkpoint_create
 *   container_cgroup.c      the cgroup and its OOM watch
 *   container_view.c        the model: processes, views (packed once per
 *                           change), state.json, reports to the supervisor
 *   process.c, process_shim.c  a process and its shim (actors/process.h)
 */
#ifndef ZCD_CONTAINER_H
#define ZCD_CONTAINER_H

#include <czmq.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "actors/actors.h"
#include "actors/process.h"
#include "core/amsg_gen.h"
#include "core/cgroup.h"
#include "core/proto.h"

/* A container's state.  container_fsm.c's table says which operations
 * each one accepts; the others are answered `invalid_state`. */
typedef enum
{
  CONTAINER_CREATING, /* the init is starting: the create is the current operation */
  CONTAINER_RUNNING,
  CONTAINER_PAUSED,
  CONTAINER_EXITING, /* the init exited; the execs' exits go out before its own */
  CONTAINER_STOPPED, /* the init's exit is out; the container leaves once it is logged */
  CONTAINER_STATE_COUNT
} container_state_t;

/* What the current operation waits for.  An operation may take two runtime
 * calls in a row (`then`): an update's pause or resume after its
 * resources, or the thaw (or re-freeze) after a kill of a paused
 * container. */
typedef enum
{
  STEP_NONE,
  STEP_INIT_START, /* the init's shim runs the runtime's create */
  STEP_EXEC_START, /* an exec's shim runs the runtime's exec */
  STEP_PAUSE,
  STEP_RESUME,
  STEP_UPDATE,
  STEP_KILL,
  STEP_CHECKPOINT,
  /* A frozen cgroup holds even SIGKILL until it is thawed (cgroup v1
   * freezer): a kill of a paused container resumes it, as docker does. */
  STEP_THAW_AFTER_KILL,
  /* Both runtimes' `kill --all` freeze, signal and then THAW the cgroup,
   * whatever it was: a paused container is frozen again. */
  STEP_REFREEZE_AFTER_KILL,
  /* The operation failed (`failure`); its answer waits for the removal of
   * what it left (a failed dump's image directory), done in a child. */
  STEP_CLEANUP
} container_step_t;

/* The one operation running; its completion alone (container_op_finish)
 * clears it. */
typedef struct container_current
{
  proto_op_code_t op; /* PROTO_OP_COUNT: none runs */
  uint64_t token;     /* the request it answers */
  container_step_t step, then;
  child_t *child;       /* the runtime call (or STEP_CLEANUP's removal) in flight */
  process_t *process;   /* STEP_INIT_START / STEP_EXEC_START: the process starting */
  bool emitted;         /* it emitted events: its reply follows them */
  zcd_error_t *failure; /* STEP_CLEANUP: the answer once the removal ended */
} container_current_t;

/* What an operation's handler decided: finished (err, or NULL for ok {}),
 * or a step to wait for. */
typedef struct container_plan
{
  zcd_error_t *err;
  container_step_t step, then;
  char **words;       /* the runtime call's words (the fsm's, freed by it) */
  process_t *process; /* STEP_EXEC_START: the process, already spawned */
} container_plan_t;

/* Whose container it is (PROTOCOL.md "Callers").  uid 0: root's, run as
 * root; any other: rootless, its shim and every runtime call run as this
 * user (DESIGN.md "Who is calling"). */
typedef struct container_owner
{
  uint32_t uid, gid;
  char *groups; /* "g1,g2": the user's supplementary groups, for setpriv */
} container_owner_t;

/* A create request, decoded once by the supervisor, with its bundle as
 * admission parsed it. */
struct container_spec
{
  char *id;
  char *bundle;
  char **labels;
  char *runtime;       /* NULL: the daemon's */
  char **runtime_args; /* the request's */
  bool no_pivot;
  char *stdin_path, *stdout_path, *stderr_path;
  process_log_t log;    /* the init's `log` */
  char *restoring_from; /* the checkpoint image of a restore */
  char **restore_args;  /* its runtime restore flags (checkpoint_source_t) */
  struct bundle_info *bundle_info;
  container_owner_t owner;
};

typedef struct container
{
  zcd_daemon_t *daemon;
  actor_t *actor;
  char *id;
  char *dir;
  char *bundle;
  char **labels;
  char *runtime;
  char **runtime_args; /* daemon's --runtime-args, then the request's */
  bool no_pivot;
  char *stdin_path, *stdout_path, *stderr_path;
  char *restoring_from;
  char **restore_args;
  container_owner_t owner;
  int64_t created;
  container_state_t state;
  container_current_t current;
  zlistx_t *queue; /* container_op_t: requests waiting for `current` */
  /* process_t, init first.  zlistx has one cursor: a loop over procs calls
   * nothing that walks them again. */
  zlistx_t *procs;
  const process_callbacks_t *process_cb;
  char *view; /* the packed view (map of 7) while it holds; NULL when stale */
  size_t view_len;
  char *saved_state;          /* state.json as last written */
  bool spare_state;           /* made from a skeleton: state.json's file is there, empty */
  char *checkpoint_meta_path; /* written when the dump succeeds */
  char *checkpoint_log;       /* CRIU's dump.log (its work dir is ours: a failed dump's image goes) */
  char *checkpoint_meta;
  bool init_exit_logged; /* restart: the event log has the init's exit */
  bool oom_seen;         /* the oom event is out */
  loop_timer_t *drain_timer;
  zlistx_t *restored_exits; /* restart: exits reported on the next turn */
  loop_timer_t *restored_timer;
  loop_timer_t *pid_timer; /* restart: waiting for a starting shim's pid file */
  cgroup_paths_t *cgroup;
  char *cgroup_procs;
  int oom_fd;
  loop_watch_t *oom_watch;
} container_t;

/* container.c */
extern const actor_class_t container_actor_class;
extern const process_callbacks_t container_process_callbacks;
/* Restart: report p's exit (p->status) on the next turn, in call order;
 * `logged`: the event log has it already, so it is not published again. */
void container_post_exit (container_t *self, process_t *p, bool logged);

/* container_fsm.c */
/* The create is the container's first operation: the init starts. */
void container_begin_create (container_t *self, uint64_t token, process_t *init);
/* A request for this container: queued, run in order.  An op the table
 * does not know (PROTO_OP_COUNT included) is answered `unknown_op`. */
void container_op_arrive (container_t *self, proto_op_code_t op, uint64_t token, const char *body,
                          size_t len);
/* The current operation ends: its answer (err NULL: ok with result, or {}
 * when result is NULL) goes, the slot is free, the queue moves. */
void container_op_finish (container_t *self, const zcd_error_t *err, const msgpack_sbuffer *result);
/* The current operation's answer went another way (the create's
 * `started`): the slot is free; the queue moves at the caller's
 * container_run_queue (a failed create leaves instead). */
void container_op_answered (container_t *self);
/* Run queued operations while none runs (an exec may wait for an earlier
 * process of its id to be forgotten). */
void container_run_queue (container_t *self);
/* The container leaves: the current and every queued request get their
 * final answer. */
void container_ops_abort (container_t *self);

/* Operation handlers (container_exec.c, container_update.c,
 * container_checkpoint.c): plan the operation on body. */
void container_plan_exec (container_t *self, const msgpack_object *body, container_plan_t *plan);
void container_plan_signal (container_t *self, const msgpack_object *body, container_plan_t *plan);
void container_plan_update (container_t *self, const msgpack_object *body, container_plan_t *plan);
void container_plan_update_process (container_t *self, const msgpack_object *body,
                                    container_plan_t *plan);
void container_plan_checkpoint (container_t *self, const msgpack_object *body,
                                container_plan_t *plan);
/* An exec reusing the id of a process whose exit is not logged yet waits
 * until it is (then the id is free), instead of meeting its directory. */
bool container_exec_must_wait (container_t *self, const msgpack_object *body);
/* The dump succeeded: the marker makes the image zcd's. */
void container_checkpoint_done (container_t *self);
/* The runtime failed after CRIU said it dumped the container: crun's
 * delete of a checkpointed (exited) container races the shim's own delete
 * of it ("cannot rm state directory").  The image is whole: a success. */
bool container_checkpoint_dumped (container_t *self);
/* A container restored from a checkpoint, met again at a daemon restart:
 * what its restore left of the dumped container's cgroups joins init
 * (0: gone) and goes (checkpoint_remove_cgroups). */
void container_restore_leftovers (container_t *self, pid_t init);
/* The dump's runtime call ended: an exit that came meanwhile goes on now.
 * Nothing may touch self after this (the container may be gone). */
void container_checkpoint_ended (container_t *self);
/* A failed dump's text, with the path and the last lines of CRIU's log;
 * the caller frees it. */
char *container_checkpoint_failure_text (container_t *self, const char *runtime_text);
/* The dump failed (or never ran): its image directory goes, in a forked
 * child (the loop never waits on the disk).  The child, whose `done` runs
 * once the directory is gone, or NULL when there is nothing to wait for. */
child_t *container_checkpoint_failed (container_t *self, child_done_fn done);
/* The removal child ended: a failure is logged. */
void container_checkpoint_cleaned (container_t *self, const child_result_t *res);

/* container_cgroup.c */
/* Find the init's cgroups, note where its pids are listed, tell the stats
 * actor (`cgroup`), watch for OOM. */
void container_attach_cgroup (container_t *self, pid_t init_pid);
/* The container leaves: the stats actor forgets its cgroups (`uncgroup`). */
void container_forget_cgroup (container_t *self);
/* Publish the oom event once. */
void container_note_oom (container_t *self);

/* container_view.c */
container_t *container_new (zcd_daemon_t *daemon, const char *id);
/* From a create's spec (its stdio, runtime, labels; the daemon's defaults). */
void container_apply_spec (container_t *self, const container_spec_t *spec);
/* Detach from everything that could call into the container (timers,
 * fds, children, the processes' shims); container_free does it too. */
void container_stop (container_t *self);
void container_free (container_t *self);
void container_set_state (container_t *self, container_state_t state);
const char *container_status_name (const container_t *self);
process_t *container_find_process (container_t *self, const char *name);
process_t *container_init_process (container_t *self);
void container_add_process (container_t *self, process_t *p);
/* Remove and destroy p. */
void container_remove_process (container_t *self, process_t *p);
uint32_t container_count_processes (container_t *self);
/* Something the view shows changed: it is packed again when next needed. */
void container_view_changed (container_t *self);
/* Write state.json (atomically) when it changed.  -1 with *err (when err is
 * not NULL): `unavailable` when the state dir's disk is full. */
int container_save_state (container_t *self, zcd_error_t **err);
/* Whether the init has exited or is exiting (a zombie), even if its exit
 * has not reached this actor yet: a runtime call that failed meanwhile
 * raced that exit. */
bool container_init_gone (container_t *self);
/* What a process's shim is started with. */
process_launch_t container_process_launch (container_t *self);
/* Send the event ev (the caller fills etype and what is its own: status,
 * oom_killed, ack); this fills the container's fields, p's (pid,
 * system_pid) when p is not NULL, and the view as it is after the event.
 * Unless it is acked (ack: an exit, no operation's doing), the current
 * operation's reply follows it. */
void container_emit (container_t *self, const process_t *p, amsg_event_t *ev);
void container_send_view (container_t *self);
/* The create's one message (issue 9 part 3): the init started, so this is
 * both its start event (etype "start-container" or "restore") and the
 * create's reply, with the view. */
void container_send_started (container_t *self, uint64_t token, const char *etype);
/* The create failed: its reply (the start slot is free). */
void container_send_start_failed (container_t *self, uint64_t token, zcd_code_t code,
                                  const char *message);
void container_send_gone (container_t *self);
/* result: a packed msgpack map, or NULL for {}. */
void container_reply (container_t *self, uint64_t token, const zcd_error_t *err,
                      const msgpack_sbuffer *result, bool after_events);
/* Remove a container's or process's directory: renamed into
 * <state-dir>/.trash (atomic), so a shim still writing into it never leaves
 * a half-deleted directory where the restore would look; a forked child
 * removes it from there (container_dirs.c), off the loop. */
void container_discard_dir (container_t *self, const char *dir);
typedef struct json_t json_t;
json_t *container_json_strv (char *const *v);
char **container_strv_dup (const char *const *v);

#endif
