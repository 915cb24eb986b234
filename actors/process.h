/* A container's process, its init or an exec: a plain object owned by its
 * container actor, not an actor of its own.  It is the one record of the
 * process: what PROTOCOL.md `Process` reports about it, its state, and its
 * shim.  Files:
 *   process.c       the description (from the bundle or the exec request),
 *                   the `Process` view, signals (pidfd) and control records
 *   process_shim.c  zcd-shim: spawn, the start record on the sync pipe, the
 *                   `exit` FIFO whose hang-up is the shim's end (DESIGN.md,
 *                   "The shim"), the start deadline, and the restart
 *
 * Why an object and not an actor: a process has no life apart from its
 * container (it is made, signalled and forgotten only by it), so messages
 * between the two only copied its state into two places.  It tells its
 * owner what happened through process_callbacks_t, called directly. */
#ifndef ZCD_PROCESS_H
#define ZCD_PROCESS_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "actors/actors.h"
#include "core/err.h"
#include "core/shimproto.h"

struct bundle_info;

typedef enum
{
  PROCESS_NEW,      /* described; no shim yet */
  PROCESS_STARTING, /* its shim runs the runtime; no start record yet */
  PROCESS_RUNNING,  /* started: in the container's view */
  PROCESS_FAILED,   /* its start failed (reported) */
  PROCESS_EXITED    /* exited (reported): out of the view, kept until its exit is logged */
} process_state_t;

typedef struct process process_t;
typedef struct process_shim process_shim_t;

/* The `log` key (PROTOCOL.md `create`, `exec`): the output goes to a
 * rotated file the shim writes (shim/outlog.c) instead of stdout/stderr.
 * The shim holds it for the process's life: nothing to keep across a
 * daemon restart. */
typedef struct process_log
{
  char *path; /* NULL: no log */
  uint64_t max_bytes;
  uint32_t max_files;
} process_log_t;

/* What a process tells its owner, each at most once, in this order:
 * started or failed, then exited (only after started).  failed and exited
 * are the last thing the process does in that turn: the owner may destroy
 * it in them.  started must not destroy it. */
typedef struct process_callbacks
{
  void (*started) (void *owner, process_t *p);
  void (*failed) (void *owner, process_t *p, zcd_code_t code, const char *message);
  void (*exited) (void *owner, process_t *p); /* p->status holds the exit status */
} process_callbacks_t;

struct process
{
  char *name; /* "init" or the exec id */
  bool is_init;
  process_state_t state;
  uint32_t system_pid;
  uint64_t starttime; /* of system_pid (/proc/<pid>/stat): a recycled pid is not it */
  /* A pidfd of system_pid, opened as soon as it is known and checked
   * against starttime then: a signal through it reaches this process or
   * none, even when a recycled pid started in the same clock tick (the
   * starttime's 10 ms).  -1 when there is none (gone before we looked). */
  int pidfd;
  int status;         /* the exit status, once PROCESS_EXITED */
  char *dir;          /* its state directory, once spawned or restored */

  /* PROTOCOL.md `Process` */
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
  process_log_t log;

  process_shim_t *shim; /* process_shim.c's; NULL while no shim is watched */
  /* Rootless: the user its shim runs as (0: root).  What the shim reports
   * (its pid) is that user's word: signals to it go as that user. */
  uint32_t run_uid, run_gid;
};

/* What starting (or re-attaching to) the shim takes besides the process's
 * own description.  The strings are copied. */
typedef struct process_launch
{
  zcd_daemon_t *daemon;
  const char *container_id;
  const char *bundle;
  const char *runtime;
  char *const *runtime_args;
  bool no_pivot;
  const char *checkpoint_dir; /* restore the init from this image */
  char *const *restore_args;  /* ... with these runtime restore flags */
  bool fifos_made;            /* the process's directory has its FIFOs (a spare skeleton) */
  /* Rootless (uid != 0): the shim runs as this user, and its directory is
   * handed to it. */
  uint32_t run_uid, run_gid;
  const char *run_groups;
  const process_callbacks_t *cb;
  void *owner;
} process_launch_t;

/* process.c */
/* The init, described by the bundle; the stdio paths are the create's. */
process_t *process_new_init (const struct bundle_info *info, const char *stdin_path,
                             const char *stdout_path, const char *stderr_path);
/* An exec, described by its (validated) request. */
process_t *process_new_exec (const msgpack_object *request);
/* A process whose description is lost (restart): empty lists, cwd "/". */
process_t *process_new_unknown (const char *name, bool is_init);
/* Stops watching the shim (which runs on); never calls back. */
void process_destroy (process_t **p);
void process_pack_view (const process_t *p, msgpack_packer *pk);
/* Whether the started process has exited or is exiting (a zombie), even if
 * its shim has not said so yet; a recycled pid counts as exited. */
bool process_gone (const process_t *p);
/* Open p's pidfd (process_t.pidfd) for system_pid, if it still is the
 * process starttime names; called once the pid is known. */
void process_pin (process_t *p);
/* Signal through the pidfd taken when the pid became known (same start
 * time then), so a recycled pid is never hit.  0, or a negative errno:
 * -ESRCH when the process has exited (or was gone before it was pinned). */
int process_signal (const process_t *p, int sig);
/* Write a control record to the shim's FIFO.  0, or a negative errno:
 * -ENXIO / -ENOENT / -EPIPE when the shim is gone (the process exited),
 * -EAGAIN when it does not read. */
int process_control (const process_t *p, const struct zcd_control_record *rec);

/* process_log.c */
/* The request's `log` (schema-checked), defaults filled in; out->path NULL
 * when it has none. */
void process_log_from_request (process_log_t *out, const msgpack_object *body);
void process_log_copy (process_log_t *dst, const process_log_t *src);
void process_log_clear (process_log_t *log);
/* Admission of `log` (create and exec), run as the caller (core/caller.h)
 * like the stdio paths' (zcd_check_stdio_paths): not with stdout or
 * stderr; its path a regular file the caller may write or a new name in a
 * directory the caller may write, never a symlink, never in the state
 * dir.  invalid_argument naming `log`; nothing is made. */
int process_log_check (const zcd_config_t *cfg, const msgpack_object *body, zcd_error_t **err);

/* process_shim.c */
/* Make the FIFOs in the process's (fresh) directory and start its shim.
 * The outcome comes through launch->cb later.  -1 with *err when the shim
 * could not be started (no callback then). */
int process_spawn (process_t *p, const process_launch_t *launch, zcd_error_t **err);
/* Re-attach after a restart.  When the shim still runs it is watched again
 * (*alive; the process is RUNNING and its exit comes through launch->cb).
 * When it is gone, *alive is false and the process is RUNNING with
 * p->status set (DESIGN.md, "Restart": exitStatus, or 137 after killing a
 * survivor, or 255) if it had started, else FAILED: it never started. */
void process_restore (process_t *p, const process_launch_t *launch, bool *alive);
/* Stop watching the shim (process_destroy's part; no callback). */
void process_shim_stop (process_t *p);

#endif
