/* What the daemon's actors share: the read-only daemon context, the names
 * they address each other by, and the helpers they have in common.
 *
 * The messages between them are modelled in schema/actors.json and
 * generated into core/amsg_gen.h (a struct, a sender and a handler table
 * per message and actor): supervisor -> container `req`, `logged`;
 * container -> supervisor `event`, `started` (a create's start event and
 * reply in one), `view`, `gone`, `reply`; container -> stats `cgroup`,
 * `uncgroup`; supervisor -> stats `collect`; supervisor -> checkpoint
 * `req`, which checkpoint passes on to the container for a creation.
 *
 * A container's processes are no actors: plain objects it owns
 * (actors/process.h), which call it back directly.
 */
#ifndef ZCD_ACTORS_H
#define ZCD_ACTORS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/actor.h"
#include "core/child.h"

#define SUPERVISOR_NAME "supervisor"

typedef struct zcd_config
{
  char *state_dir;
  char **listen;  /* NULL-terminated */
  char **publish; /* NULL-terminated */
  char *runtime;
  char **runtime_args; /* global args for every runtime call */
  char *shim_path;
  char *criu; /* --criu: this CRIU for both runtimes, NULL = PATH's */
  uint64_t start_timeout_ms;
  int max_concurrent_starts;
  uint64_t events_retain;
  uint64_t max_request_size;
  int client_queue;            /* 0 = the edge's default */
  uint64_t client_queue_bytes; /* 0 = the edge's default */
  uint64_t heartbeat_ms;
  char *group;
  char *curve_secret;
  char *curve_clients;
  bool insecure_tcp;
  const char *log_level;
  const char *log_format;
} zcd_config_t;

typedef struct zcd_daemon
{
  const zcd_config_t *config;
  actor_system_t *actors;
  children_t *children;
  loop_t *loop;
  void *zmq_ctx;
  struct container_dirs *dirs; /* the supervisor's (container_dirs_new); NULL: none */
  /* Why checkpoints cannot work here (the checkpoint actor's `criu check`),
   * owned by that actor; NULL while it works or is still being checked. */
  const char *criu_unavailable;
} zcd_daemon_t;

/* Actor names: "c/<id>#<serial>" for a container.  The serial keeps an
 * actor that is still winding down apart from the next one with the same
 * id: the supervisor's table says which actor a container id means now. */
#define CONTAINER_ACTOR_PREFIX "c/"

/* container.c */
/* A create request decoded once, at admission, with its bundle as parsed
 * there (actors/container.h has the fields). */
typedef struct container_spec container_spec_t;
struct bundle_info;
/* From a validated `create` request; takes `info` (the bundle admission
 * parsed).  Free with container_spec_destroy. */
container_spec_t *container_spec_new (const msgpack_object *body, struct bundle_info *info,
                                      char **restore_args);
void container_spec_destroy (container_spec_t **spec);
/* Whose container it is: a caller that is not an administrator gets a
 * rootless one, run as uid/gid (groups: "g1,g2", taken). */
void container_spec_set_owner (container_spec_t *spec, uint32_t uid, uint32_t gid, char *groups);
/* A fresh actor name for container `id` (CONTAINER_ACTOR_PREFIX, id, serial). */
void zcd_container_actor_name (const char *id, char *out, size_t size);

/* Start a container actor for an admitted `create` (spec stays the
 * caller's).  The actor answers the request (token) with its one
 * `started` message, which is also the start event. */
actor_t *container_actor_create (zcd_daemon_t *daemon, const container_spec_t *spec,
                                 uint64_t token, zcd_error_t **err);
/* Rebuild a container actor from its state directory after a restart. */
/* What the event log already holds for a container (the supervisor reads
 * it at restart), so no event is published twice and none is missing. */
typedef struct restore_hints
{
  bool covered;          /* the log reaches back to the container's creation */
  bool start_logged;     /* its start-container (or restore) is in the log */
  char **started_execs;  /* exec ids whose start-process is logged */
  char **exited;         /* process ids whose exit is logged */
  bool logged_paused;    /* its last logged pause/resume was a pause */
} restore_hints_t;
actor_t *container_actor_restore (zcd_daemon_t *daemon, const char *id,
                                  const restore_hints_t *hints, zcd_error_t **err);

/* container_dirs.c: the state dir's .trash (removed by a forked child,
 * off the loop) and .spare (fresh container skeletons the same child makes
 * ahead: <n>/procs/init with its FIFOs, and the file for state.json). */
typedef struct container_dirs container_dirs_t;
/* A skeleton's empty file for the container's first state.json. */
#define CONTAINER_DIRS_STATE_FILE "state.json.spare"
/* Makes .trash and .spare (an earlier run's spares go to .trash) and starts
 * the child that empties .trash.  NULL when they cannot be made: containers
 * then make and remove their directories themselves. */
container_dirs_t *container_dirs_new (zcd_daemon_t *daemon);
/* A running child finishes on its own. */
void container_dirs_destroy (container_dirs_t **self);
/* Rename a fresh skeleton to dest (which must not exist): 1 when done
 * (dest holds procs/init with its `exit` and `control` FIFOs, and an empty
 * CONTAINER_DIRS_STATE_FILE), 0 when there is none (the caller makes dest
 * itself), -1 with ZCD_E_ALREADY_EXISTS when dest exists.  self may be
 * NULL. */
int container_dirs_take (container_dirs_t *self, const char *dest, zcd_error_t **err);
/* Rename dir into .trash (tag names it there) for the child to remove; when
 * that fails (or self is NULL) remove it here. */
void container_dirs_discard (container_dirs_t *self, const char *dir, const char *tag);

/* stats.c: the "stats" actor.  It keeps each container's cgroup
 * directories as the container reported them (`cgroup`, `uncgroup`) and
 * answers `collect` (token, ids) with a `reply` of their Stats. */
#define STATS_ACTOR "stats"
actor_t *stats_actor_new (zcd_daemon_t *daemon, zcd_error_t **err);

/* checkpoint.c: the "checkpoint" actor.  It learns at start whether CRIU
 * works (`criu check`) and answers checkpoint_list/delete itself; a
 * checkpoint_create goes on to the container actor (`req`'s `actor`) only
 * when CRIU works.  It takes `req` as containers do, with the container's
 * `bundle` when known. */
#define CHECKPOINT_ACTOR "checkpoint"
actor_t *checkpoint_actor_new (zcd_daemon_t *daemon, zcd_error_t **err);
/* What a restore takes from a checkpoint's marker: the runtime's restore
 * flags matching those of the dump (CRIU wants them again), and where the
 * dumped container's cgroups were (crun's restore re-creates them and
 * leaves them behind; supervisor_gate.c removes them when empty). */
typedef struct checkpoint_source
{
  char **restore_args;   /* NULL-terminated */
  char *dumped_id;       /* NULL when the marker predates it */
  char **dumped_cgroups; /* NULL-terminated directories */
} checkpoint_source_t;
void checkpoint_source_clear (checkpoint_source_t *src);

/* 0 when `dir` holds zcd's checkpoint `name` (with its marker); else -1
 * with not_found (no such checkpoint, or not zcd's) or invalid_argument
 * (dir is a symlink or no directory).  Only opens and reads the marker;
 * src (may be NULL) gets what a restore needs from it. */
int checkpoint_find (const char *dir, const char *name, checkpoint_source_t *src,
                     zcd_error_t **err);
/* In a forked child: the tasks of dirs (the dumped container's cgroups,
 * which a crun restore re-creates and leaves tasks in) join the cgroups of
 * restored_init (0: none, a failed restore), then each directory is
 * removed with rmdir (an empty cgroup only). */
void checkpoint_remove_cgroups (zcd_daemon_t *daemon, char **dirs, pid_t restored_init);
/* Remove the directory `name` of dfd, open as fd (zcd_rm_tree_fd), in a
 * forked child; a failure is logged, prefixed with `what`.  The fds stay
 * the caller's. */
void checkpoint_remove_tree (zcd_daemon_t *daemon, int dfd, const char *name, int fd,
                             const char *what);
/* zcd_rm_tree_fd (dfd, name, fd) in a forked child (an image's tree can be
 * large, and the loop never waits on the disk), with a deadline (0: the
 * children's default); done gets its end.  The fds stay the caller's. */
child_t *checkpoint_fork_removal (zcd_daemon_t *daemon, int dfd, const char *name, int fd,
                                  uint64_t deadline_ms, child_done_fn done, void *arg,
                                  zcd_error_t **err);
/* Write the marker of a finished checkpoint: in place at once (temp and
 * rename, no fsync: the reply that follows may be read by a list or a
 * restore), then synced to disk with the images by a forked child. */
void checkpoint_write_marker (zcd_daemon_t *daemon, const char *path, const char *text);

/* Helpers shared by the actors (actors/common.c). */
#define ZCD_CONTAINERS_DIR "containers"
#define ZCD_PROCS_DIR "procs"
char *zcd_containers_root (const zcd_config_t *cfg);
/* A state-dir write failed: a full disk becomes `unavailable`, "no space
 * left on the state dir" (PROTOCOL.md), whatever the call that hit it. */
void zcd_state_dir_error (zcd_error_t **err);
/* stdin must exist; stdout/stderr may be new files in an existing
 * directory; an existing path must be a regular file, FIFO or character
 * device, never a symlink, never inside the state dir.  invalid_argument
 * naming the key ("stdout: `/x` is a directory").  `log` too
 * (process_log_check). */
int zcd_check_stdio_paths (const zcd_config_t *cfg, const msgpack_object *body, zcd_error_t **err);
/* Whether `dir` (a real directory path) is the state dir or inside it. */
bool zcd_under_state_dir (const zcd_config_t *cfg, const char *dir);
char *zcd_container_dir (const zcd_config_t *cfg, const char *id);
char *zcd_process_dir (const zcd_config_t *cfg, const char *id, const char *pid_name);
/* Rootless containers (PROTOCOL.md "Callers"): <state-dir>/rootless/<uid>,
 * the runtimes' --root for that user's containers. */
#define ZCD_ROOTLESS_DIR "rootless"
char *zcd_rootless_root (const zcd_config_t *cfg, uint32_t uid);
/* Make it (0700, the user's) unless it is there; one that is there must
 * be a directory of that user, reached without a symlink. */
int zcd_prepare_rootless_root (const zcd_config_t *cfg, uint32_t uid, uint32_t gid,
                               zcd_error_t **err);
/* A rootless process's directory goes to its user (with its FIFOs), and
 * the two above it become passable (0711), never listable. */
int zcd_hand_process_dir (const char *dir, uint32_t uid, uint32_t gid, zcd_error_t **err);
/* argv for "<runtime> [global args] <words...>", NULL-terminated; free with mp_strv_free. */
char **zcd_runtime_argv (const char *runtime, char *const *runtime_args, const char *const *words);
/* Turn a runtime's captured output into one error line: the "msg" of
 * JSON log lines, or the plain text, trimmed. */
char *zcd_runtime_error_text (const char *out, const char *err);
/* true for a hierarchy's root directory (or NULL): what a dead process reads as. */
bool zcd_cgroup_dir_is_root (const char *dir);
void zcd_pack_cgroup_pids (msgpack_packer *pk, const char *cgroup_procs);
void zcd_pack_cgroup_pids_fd (msgpack_packer *pk, int fd);
/* The final answer to a parked request, a `reply` to the supervisor. result: a
 * packed msgpack map, or NULL for {}.  after_events: the request emitted
 * events (sent before this reply), which the reply must follow onto the
 * disk (PROTOCOL.md: the events an operation causes are published before
 * its reply); other replies never wait for the event log. */
void zcd_send_reply_ok (actor_system_t *actors, const char *from, uint64_t token,
                        const msgpack_sbuffer *result, bool after_events);
void zcd_send_reply_error (actor_system_t *actors, const char *from, uint64_t token,
                           zcd_code_t code, const char *message, bool after_events);

#endif
