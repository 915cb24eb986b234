/* The container actor's insides, shared by its files: container.c (the
 * actor: messages, events, life cycle, the operation queue),
 * container_runtime.c (runtime calls and what their success changes),
 * container_ops.c (the model: request parsing, views, state on disk, the
 * dispatch of operations), container_update.c (signal, update,
 * update_process), container_exec.c, container_checkpoint.c,
 * container_cgroup.c (the cgroup and its OOM watch) and
 * container_restore.c. */
#ifndef ZCD_CONTAINER_H
#define ZCD_CONTAINER_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "actors/actors.h"
#include "core/cgroup.h"

typedef enum
{
  CONTAINER_CREATING,
  CONTAINER_RUNNING,
  CONTAINER_STOPPING
} container_phase_t;

typedef enum
{
  OP_NONE,
  OP_PAUSE,
  OP_RESUME,
  OP_UPDATE,
  OP_SIGNAL,
  OP_CHECKPOINT
} container_op_kind_t;

/* One process as PROTOCOL.md `Process` reports it. */
typedef struct container_proc
{
  char *name; /* "init" or the exec id */
  bool is_init;
  bool started;
  bool exited; /* its exit event is out, not yet logged */
  uint32_t system_pid;
  uint64_t starttime; /* of system_pid (/proc/<pid>/stat): a recycled pid is not it */
  uint64_t token;     /* the exec request waiting for the start */
  bool terminal;
  char **args, **env;
  char *cwd;
  uint32_t uid, gid;
  uint32_t *additional_gids;
  size_t n_additional_gids;
  char **capabilities;
  char *rlimits; /* packed msgpack array of {type, soft, hard} */
  size_t rlimits_len;
  bool no_new_privileges;
  char *apparmor_profile, *selinux_label;
  char *stdin_path, *stdout_path, *stderr_path;
  struct container_proc *next;
} container_proc_t;

typedef struct container_op
{
  uint64_t token;
  char *name;
  char *body; /* the client's request, validated at the edge */
  size_t body_len;
  struct container_op *next;
} container_op_t;

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
  char *restoring_from; /* checkpoint path of a restore */
  int64_t created;
  container_phase_t phase;
  bool paused;
  container_proc_t *procs;
  container_op_t *ops_head, *ops_tail;
  bool busy;
  bool op_emitted; /* the running operation emitted events: its reply follows them */
  child_t *pending_call;
  uint64_t pending_token; /* the request the runtime call answers */
  void *pending_call_arg;
  char *checkpoint_meta_path; /* written when the dump succeeds */
  char *checkpoint_meta;
  container_op_kind_t then_status;
  bool thaw_after_kill; /* update: pause/resume after the resources */
  uint64_t create_token;
  bool init_exited;
  int init_status;
  bool init_exit_logged;
  bool oom_seen;
  loop_timer_t *drain_timer;
  cgroup_paths_t *cgroup;
  char *cgroup_procs;
  int oom_fd;
  loop_watch_t *oom_watch;
} container_t;

/* A runtime call in flight (pending_call_arg): the request it answers. */
typedef struct runtime_call
{
  container_t *self;
  uint64_t token;
  container_op_kind_t kind;
} runtime_call_t;

extern const actor_class_t container_actor_class;

/* container_ops.c */
container_t *container_new_from_request (zcd_daemon_t *daemon, const msgpack_object *body,
                                         zcd_error_t **err);
void container_free (container_t *self);
int container_start_init (container_t *self, zcd_error_t **err);
/* Write state.json (atomically).  -1 with *err (when err is not NULL):
 * `unavailable` when the state dir's disk is full. */
int container_save_state (container_t *self, zcd_error_t **err);
void container_run_op (container_t *self, container_op_t *op);
container_proc_t *container_find_proc (container_t *self, const char *name);
void container_remove_proc (container_t *self, container_proc_t *p);
void container_proc_append (container_t *self, container_proc_t *p);
void container_proc_free (container_proc_t *p);
struct bundle_info;
container_proc_t *container_init_proc_from_bundle (container_t *self,
                                                   const struct bundle_info *info);
container_proc_t *container_exec_proc_from_request (const msgpack_object *body);
uint32_t container_count_processes (const container_t *self);
/* The Container map minus "pids", as the supervisor caches it. */
void container_pack_view (container_t *self, msgpack_sbuffer *out);
/* The whole Container map, pids included. */
void container_pack_container (container_t *self, msgpack_packer *pk);

/* Answer the running operation with an error (container_op_done). */
void container_fail_op (container_t *self, uint64_t token, zcd_code_t code, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));
typedef struct json_t json_t;
json_t *container_json_strv (char *const *v);

/* What a process actor needs to start p's shim. */
process_info_t container_process_info (container_t *self, container_proc_t *p);

/* container_cgroup.c */
/* Find the init's cgroups, note where its pids are listed, watch for OOM. */
void container_attach_cgroup (container_t *self, pid_t init_pid);

/* container_update.c */
void container_op_signal (container_t *self, uint64_t token, const msgpack_object *body);
void container_op_update (container_t *self, uint64_t token, const msgpack_object *body);
void container_op_update_process (container_t *self, uint64_t token, const msgpack_object *body);

/* container_exec.c */
void container_op_exec (container_t *self, uint64_t token, const msgpack_object *body);
/* An exec reusing the id of a process whose exit is not logged yet waits
 * until it is (then the id is free), instead of meeting its directory. */
bool container_exec_must_wait (container_t *self, const container_op_t *op);

/* container_checkpoint.c */
void container_op_checkpoint (container_t *self, uint64_t token, const msgpack_object *body);

/* container_runtime.c */
/* Run `<runtime> words...` for an operation; the reply goes when it ends.
 * -1 when it cannot start (then the error is answered and the slot freed). */
int container_run_runtime (container_t *self, uint64_t token, container_op_kind_t kind,
                           const char *const *words);
/* After a successful runtime call: new state and its event. */
void container_op_finished (container_t *self, container_op_kind_t kind);

/* container.c */
/* Replies to the supervisor; they follow the events the running operation
 * emitted.  result: a packed msgpack map, or NULL for {}. */
void container_reply_error (container_t *self, uint64_t token, zcd_code_t code,
                            const char *message);
void container_reply_ok (container_t *self, uint64_t token, const msgpack_sbuffer *result);
/* An event with the view as it is after it. */
void container_emit (container_t *self, const char *etype, const container_proc_t *p,
                     bool with_status, int status, bool with_oom, bool oom_killed);
/* Run the queued operations while none is running. */
void container_next_op (container_t *self);
/* Whether the init has exited or is exiting (a zombie), even if its exit has
 * not reached this actor yet. */
bool container_init_gone (container_t *self);
/* Answer the running operation (err NULL = ok {}) and free the slot. */
void container_op_done (container_t *self, uint64_t token, zcd_error_t *err);
void container_note_oom (container_t *self);
/* Restore: post a process's exit to the actor's own mailbox; `logged`: the
 * event log already has it, so it is not published again. */
void container_post_exit (container_t *self, const char *pid, int status, bool logged);
/* Restore: publish an event a crash kept from being logged. */
void container_emit_start (container_t *self, container_proc_t *p);
void container_checkpoint_done (container_t *self);
void container_checkpoint_failed (container_t *self);
void container_notify_view (container_t *self);
/* Remove a container's or process's directory: renamed into
 * <state-dir>/.trash first (atomic), so a shim still writing into it never
 * leaves a half-deleted directory where the restore would look. */
void container_discard_dir (container_t *self, const char *dir);
const char *container_status_name (const container_t *self);

#endif
