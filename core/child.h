/* Children run without blocking the loop: spawned with posix_spawn (a
 * vfork-style clone, cheap even when the daemon is large), their output
 * read through pipes watched by the loop, their exit learnt from SIGCHLD
 * (the daemon's signalfd calls children_reap), an optional deadline after
 * which the child's process group is SIGKILLed.  The completion callback
 * runs once both the exit status and the end of its output are in.
 *
 * The daemon is a child subreaper, so it also inherits orphans (a shim's
 * delete helper once the shim is gone): children_reap reaps every child
 * until ECHILD (conmon's habit) and just counts those nobody registered. */
#ifndef ZCD_CHILD_H
#define ZCD_CHILD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/err.h"
#include "core/loop.h"

typedef struct children children_t;
typedef struct child child_t;

typedef struct child_result
{
  pid_t pid;
  int wait_status; /* as from waitpid */
  int exit_code;   /* 0-255, or 128+N when killed by signal N */
  bool timed_out;
  const char *out; /* captured stdout (NUL-terminated; "" if not captured) */
  size_t out_len;
  const char *err; /* captured stderr */
  size_t err_len;
} child_result_t;

typedef void (*child_done_fn) (const child_result_t *res, void *arg);

typedef struct child_opts
{
  uint64_t deadline_ms;  /* 0 = none */
  const char *cwd;       /* NULL = inherit */
  bool capture;          /* capture stdout/stderr (else /dev/null) */
  int pass_fd;           /* -1, or an fd to hand to the child as fd 3 */
  bool new_session;      /* lead a new session (setsid), not only a process group */
  size_t max_output;     /* per stream; 0 = 64 KiB */
} child_opts_t;

#define CHILD_OPTS_DEFAULT { .deadline_ms = 0, .cwd = NULL, .capture = true, .pass_fd = -1, .max_output = 0 }

children_t *children_new (loop_t *loop);
/* Kills (SIGKILL) nothing: children still running are forgotten, their
 * callbacks never run. */
void children_destroy (children_t **reg);

/* Spawn argv[0] (a path, or a name searched in PATH).  On success returns
 * the child handle; `fn` runs exactly once later, unless child_forget is
 * called first.  On failure returns NULL with *err (the program could not
 * be started: its name and errno). */
child_t *child_spawn (children_t *reg, char *const argv[], const child_opts_t *opts,
                      child_done_fn fn, void *arg, zcd_error_t **err);
/* Work that would block the loop on the disk (removing a tree, fsync),
 * run in a forked copy of the daemon: fn(fn_arg) runs in the child, its
 * return value (0-255) is the exit code, what it writes to stdout/stderr is
 * captured as for child_spawn (opts->capture).  The child holds only stdio
 * (stdin /dev/null) and keep_fds (at most CHILD_FORK_MAX_FDS, same numbers),
 * so it keeps no socket, pipe or ring of the daemon alive.  fn runs with
 * the calling thread only (ZeroMQ's are gone): it must not touch the loop,
 * an actor, ZeroMQ or an io_uring.  done, deadline and forget as for
 * child_spawn. */
#define CHILD_FORK_MAX_FDS 8
typedef int (*child_fork_fn) (void *arg);
child_t *child_fork (children_t *reg, child_fork_fn fn, void *fn_arg, const int *keep_fds,
                     size_t n_keep, const child_opts_t *opts, child_done_fn done, void *arg,
                     zcd_error_t **err);
pid_t child_pid (const child_t *child);
/* The owner goes away: the child keeps running and is reaped, but its
 * callback never runs. */
void child_forget (children_t *reg, child_t *child);

/* Reap every exited child (call on SIGCHLD). */
void children_reap (children_t *reg);
size_t children_running (const children_t *reg);
uint64_t children_unclaimed_reaped (const children_t *reg);

/* Exit status as PROTOCOL.md section 3 has it. */
int child_exit_code (int wait_status);

#endif
