/* zcd-shim internals: one shim supervises one container process (DESIGN.md,
 * "The shim"; the contract with the daemon is core/shimproto.h).
 *
 * The shim is single-threaded and owns everything in shim_t; the files of
 * shim/ each handle one part of its life: arguments, detaching and the
 * start (main.c), runtime invocations (runtime.c, runtime_log.c), stdio and
 * the terminal (stdio.c, console.c), the report to the daemon (report.c),
 * the seccomp self-sandbox (sandbox.c) and the reap loop (reap.c).
 *
 * One exception to the single thread: with --log-path the output goes
 * through a bounded ring to a writer thread (outlog.c), so that a slow or
 * full disk never stalls the relay; the file and its rotation are
 * logfile.c's. */
#ifndef ZCD_SHIM_H
#define ZCD_SHIM_H

#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/err.h"

#define SHIM_MAX_RUNTIME_ARGS 32
#define SHIM_MAX_RESTORE_ARGS 24
#define SHIM_RELAY_BUF 4096

typedef enum
{
  SHIM_MODE_INIT,
  SHIM_MODE_EXEC,
  SHIM_MODE_RESTORE,
} shim_mode_t;

typedef struct
{
  shim_mode_t mode;
  const char *id;
  const char *bundle;
  const char *runtime;
  const char *checkpoint;
  const char *stdin_path; /* NULL: /dev/null */
  const char *stdout_path;
  const char *stderr_path;
  /* --log-path: output into a rotated file instead of stdout/stderr */
  const char *log_path;
  uint64_t log_max_bytes;
  unsigned log_max_files;
  const char *runtime_args[SHIM_MAX_RUNTIME_ARGS];
  size_t runtime_args_len;
  /* restore's own flags, those of the dump (--tcp-established, ...) */
  const char *restore_args[SHIM_MAX_RESTORE_ARGS];
  size_t restore_args_len;
  bool no_pivot;
  bool terminal;
  int sync_fd; /* -1: nobody listens */
} shim_args_t;

/* One direction of byte copying between two fds, with a buffer so that a
 * slow destination stops the reading instead of blocking the shim. */
typedef struct
{
  int src; /* -1 once the source is finished */
  int dst; /* -1 once closed */
  size_t off, len;
  bool dst_is_terminal;        /* end of input is ^D, not a close */
  bool close_dst_when_drained; /* close_stdin arrived: EOF after the data */
  bool eot_when_drained;       /* same for a terminal: send ^D */
  bool finishing_input;        /* close_stdin: relaying what the source still holds */
  size_t finish_left;          /* ... this many bytes more (FIONREAD at close_stdin) */
  /* Output relays: a destination that failed (ENOSPC, EIO) is replaced by
   * discarding, so the container never blocks on a full pipe. */
  bool discard_on_error;
  bool to_log;                 /* the destination is the log's ring (outlog.c), never full */
  bool error_logged;           /* reap.c said so in shim.log */
  int dst_error;               /* errno that ended the destination, else 0 */
  unsigned long long dropped;  /* bytes thrown away since */
  char buf[SHIM_RELAY_BUF];
} shim_relay_t;

typedef struct
{
  shim_args_t args;
  char dir[PATH_MAX]; /* absolute path of the state directory (the cwd) */
  /* args.runtime found in PATH once (execvp would search it on every
   * call); "" when not found, and each call searches as execvp does. */
  char runtime_path[PATH_MAX];
  /* The runtimes' --log: the shim's memfd as /proc/<shim>/fd/<n> (valid
   * while the shim lives, also for the delete helper), else a file. */
  char runtime_log[PATH_MAX + 16];
  int exit_fd;        /* write end of `exit`, held until the shim exits */
  int control_fd;
  /* What the runtime hands to the container as fds 0, 1, 2. */
  int container_stdio[3];
  int console_listen_fd; /* -1 without a terminal */
  int master_fd;         /* pty master, -1 without a terminal */
  shim_relay_t stdin_relay;  /* stdin path -> pipe or master */
  shim_relay_t stdout_relay; /* pipe or master -> stdout path */
  shim_relay_t stderr_relay; /* pipe -> stderr path (no terminal) */
  pid_t pid;                 /* the container process */
  pid_t delete_helper_pid;   /* init: forked before the sandbox, -1 if none */
  int delete_helper_fd;      /* write end of its go-pipe */
  int delete_report_fd;      /* read end of its error text */
  bool is_helper;            /* in the helper: shim.log belongs to the shim */
  int signal_fd;
  char control_buf[16]; /* one zcd_control_record being assembled */
  size_t control_len;
  bool exited;
  int exit_status;
  int exit_status_fd;          /* exitStatus reserved at start (see report.c) */
  char exit_status_tmp[64];
} shim_t;

/* args.c: parse argv into *self; the strings stay owned by argv. */
int shim_args_parse (shim_args_t *self, int argc, char **argv, zcd_error_t **err);

/* runtime.c */
/* What every runtime call needs, made once (self->dir set): the log, and
 * runtime_path, args.runtime itself if it names a path, else the first
 * executable regular file of that name in PATH. */
void shim_runtime_prepare (shim_t *self);
/* Run `<runtime> [runtime args] --log <runtime_log>
 * --log-format json <sub_argv...>` with fds 0..2 = stdio (an entry of -1 is
 * replaced by /dev/null for 0 and 1, and captured for 2), and wait for it.
 * A non-zero exit is a ZCD_E_RUNTIME_ERROR whose text is the runtime's own
 * error output. */
int shim_runtime_run (shim_t *self, const char *const *sub_argv, const int stdio[3],
                      zcd_error_t **err);
/* Work that needs no container, done while the mode's first runtime call
 * (create, exec or restore) runs instead of after it. */
typedef int (*shim_work_fn) (shim_t *self, zcd_error_t **err);
/* The start for the shim's mode: create+start, exec or restore; `meanwhile`
 * runs while the first runtime call does, and its failure fails the start
 * once that call has ended. */
int shim_runtime_start (shim_t *self, shim_work_fn meanwhile, zcd_error_t **err);
/* Best effort `delete --force` after a failed start of an init process. */
void shim_runtime_cleanup_failed_start (shim_t *self);

/* runtime_log.c: append to out (NUL-terminated, at most cap bytes in all)
 * the "msg" of every error-level line of a JSON-lines runtime log, joined
 * by "; ".  Returns how many were found. */
size_t shim_runtime_log_errors (const char *text, size_t len, char *out, size_t cap);

/* stdio.c */
int shim_stdio_open (shim_t *self, zcd_error_t **err);
/* Close the shim's copies of what now belongs to the container. */
void shim_stdio_after_start (shim_t *self);
void shim_relay_init (shim_relay_t *self, int src, int dst, bool dst_is_terminal);
/* The one fd the relay waits on now, and for what (pfd->fd -1: none): its
 * destination while bytes are pending, else its source. */
void shim_relay_watch (const shim_relay_t *self, struct pollfd *pfd);
/* Move bytes on the readiness of the fd from shim_relay_watch; failures
 * end the relay (an output relay's destination: discarding), never the
 * shim. */
void shim_relay_on_ready (shim_relay_t *self, const struct pollfd *pfd);
/* End of input (close_stdin, or EOF of a regular file): the destination
 * gets EOF once the buffered bytes are through. */
void shim_relay_close_input (shim_relay_t *self);
/* After the container process exited: copy what is left of stdout and
 * stderr, together, until their writers are gone, idle_ms pass without a
 * byte, or total_ms since the call. */
void shim_stdio_drain (shim_t *self, int idle_ms, int total_ms);

/* logfile.c: the rotated output file; one thread at a time. */
typedef struct
{
  int dirfd; /* the file's directory (O_PATH): every name is relative to it */
  int fd;    /* the current file */
  char name[NAME_MAX + 1];
  uint64_t size; /* of the current file */
  bool mid_line; /* its last byte is not a newline (a gap line starts with one) */
  uint64_t max_bytes;
  unsigned max_files;
  uid_t uid; /* the shim's: a file that appears during a rotation must be its own */
  /* Why the last write stopped short: errno, and whether a rotation failed
   * (then error_name is the name in the way; EEXIST: not a regular file). */
  int error;
  bool error_rotating;
  char error_name[NAME_MAX + 16];
} shim_logfile_t;

/* Open (create 0640, or append to a regular file) without following a
 * symlink; ZCD_E_INVALID_ARGUMENT when path names something else. */
int shim_logfile_open (shim_logfile_t *self, const char *path, uint64_t max_bytes,
                       unsigned max_files, zcd_error_t **err);
/* Append data, rotating as needed; how much was written (all of it, or
 * less with self->error set). */
size_t shim_logfile_write (shim_logfile_t *self, const char *data, size_t len);
/* One line of the shim's own (a gap), on a line of its own: a newline
 * first when the file ends mid-line.  False unless all of it was written. */
bool shim_logfile_write_line (shim_logfile_t *self, const char *line, size_t len);
int shim_logfile_rotate (shim_logfile_t *self);
void shim_logfile_close (shim_logfile_t *self);

/* outlog.c: the log's ring and its writer thread (one per shim).  Only
 * shim_outlog_read and the getters are called while the writer runs. */
int shim_outlog_open (const shim_args_t *args, zcd_error_t **err);
bool shim_outlog_active (void);
/* Start the writer: early, while the runtime works (a thread's start
 * waits for a turn on a CPU), and before the sandbox, which refuses clone
 * and the new thread's own first system calls (rseq registration: glibc
 * aborts when it fails).  shim_outlog_wait_ready: until the thread runs
 * its own code, so that the filter can come next. */
int shim_outlog_start (zcd_error_t **err);
void shim_outlog_wait_ready (void);
/* Read from src into the ring, or, the ring full, into scratch and drop
 * it (counted), unless the writer is only late: then -1 with EAGAIN and
 * the bytes stay in the pipe.  read(2)'s result: bytes taken, 0 at EOF,
 * -1 with errno. */
ssize_t shim_outlog_read (int src, char *scratch, size_t scratch_len);
/* True while the ring is full of bytes a writer that is only late will
 * take: the relays leave the pipes unread.  A poll round starts with
 * shim_outlog_round_begin, and its timeout is shim_outlog_poll_ms: -1, or
 * a few ms when some relay was held back in the round (to look again). */
void shim_outlog_round_begin (void);
bool shim_outlog_holding (void);
int shim_outlog_poll_ms (void);
/* The loop's bytes of its own (the runtime's complaint on a failed start)
 * into the ring, as read ones go. */
void shim_outlog_put (const char *data, size_t len);
/* At the exit: let the writer empty the ring, up to timeout_ms; what is
 * left counts as dropped.  The total dropped. */
unsigned long long shim_outlog_finish (int timeout_ms);
/* How long the writer gets at the end: the exit (or the failure) is
 * reported after it. */
#define SHIM_LOG_FLUSH_MS 1000

/* console.c */
int shim_console_listen (shim_t *self, zcd_error_t **err);
/* Path to give the runtime as --console-socket; static storage. */
const char *shim_console_socket_path (shim_t *self);
int shim_console_receive (shim_t *self, zcd_error_t **err);
void shim_console_resize (shim_t *self, unsigned width, unsigned height);

/* report.c */
void shim_log (shim_t *self, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
void shim_report_started (shim_t *self);
void shim_report_error (shim_t *self, const zcd_error_t *error);
int shim_write_number (const char *name, unsigned long long value, zcd_error_t **err);
/* exitStatus is written when the disk may be full: its bytes are reserved
 * at start (a temp file already holding room for any status), and at the
 * end only overwritten in place and renamed, which needs no new space. */
int shim_reserve_exit_status (shim_t *self, zcd_error_t **err);
int shim_commit_exit_status (shim_t *self, zcd_error_t **err);

/* sandbox.c: only what the reap loop still needs; see the file for the list.
 * prepare compiles the filter (no effect on the shim yet); install loads
 * it, compiling first if prepare was not called. */
int shim_sandbox_prepare (zcd_error_t **err);
int shim_sandbox_install (zcd_error_t **err);

/* main.c: unmap the code and read-only data pages mapped so far (they stay
 * cached and come back on use): a long wait keeps only what it uses. */
void shim_drop_code_pages (void);

/* reap.c */
/* init only: fork the process that will run `runtime delete` once told to,
 * so the sandboxed shim never needs execve. */
int shim_delete_helper_fork (shim_t *self, zcd_error_t **err);
int shim_signals_block_child (shim_t *self, zcd_error_t **err);
/* Relay, obey control records and reap until the container process exits;
 * then write exitStatus and (init) have the helper delete the container. */
int shim_reap_loop (shim_t *self);

#endif
