/* zctr internals: the CLI's shared state and one entry point per command. */
#ifndef ZCTR_H
#define ZCTR_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "lib/zcd_client.h"
#include "lib/zcd_tool.h"

/* Exit codes: a failed request 1, bad usage 2; --attach exits with the
 * process's own status. */
#define ZCTR_EXIT_FAIL 1
#define ZCTR_EXIT_USAGE 2

typedef struct
{
  const char *address;        /* NULL = library default ($ZCD_ADDRESS) */
  const char *events_address; /* NULL = library default */
  bool json;
  int timeout_ms;
  zcd_client_t *client; /* created on first use */
  /* --node FILE: every command goes through the fan-out client to the
   * nodes the file lists (zctr_node.c) */
  const char *node_file;
  bool nodes;              /* --node seen anywhere: set before the command runs */
  const char *client_cert; /* --client-cert: overrides the node file's */
  const char **on;         /* --on NAME[,NAME]: NULL-terminated, malloc'd */
  char **on_storage;       /* the split --on arguments, freed at exit */
  size_t n_on;
  zcd_fanout_t *fanout; /* created on first use */
  /* the command and subcommand being parsed: what -h/--help explains */
  const char *help_cmd, *help_sub;
} zctr_t;

/* Options every command accepts, wherever they appear. */
enum
{
  ZCTR_OPT_ADDRESS = 1000,
  ZCTR_OPT_EVENTS_ADDRESS,
  ZCTR_OPT_JSON,
  ZCTR_OPT_TIMEOUT,
  ZCTR_OPT_NODE,
  ZCTR_OPT_ON,
  ZCTR_OPT_CLIENT_CERT,
  ZCTR_OPT_FIRST_LOCAL /* commands number their own options from here */
};
#define ZCTR_GLOBAL_OPTIONS                                                                      \
  { "address", required_argument, NULL, ZCTR_OPT_ADDRESS },                                      \
      { "events-address", required_argument, NULL, ZCTR_OPT_EVENTS_ADDRESS },                    \
      { "json", no_argument, NULL, ZCTR_OPT_JSON },                                              \
      { "timeout", required_argument, NULL, ZCTR_OPT_TIMEOUT },                                  \
      { "node", required_argument, NULL, ZCTR_OPT_NODE },                                        \
      { "on", required_argument, NULL, ZCTR_OPT_ON },                                            \
      { "client-cert", required_argument, NULL, ZCTR_OPT_CLIENT_CERT },                          \
      { "help", no_argument, NULL, 'h' }

/* Handle a global option or 'h'/'?' from getopt_long.  Returns 0 when
 * handled, or an exit code (usage printed) the command must return. */
int zctr_common_option (zctr_t *z, int opt, const char *arg, bool *handled);

/* getopt_long over a command's own options (local, NULL-terminated, codes
 * from ZCTR_OPT_FIRST_LOCAL) plus the global ones; each local option goes to
 * on_opt, which returns 0 or an exit code.  On 0, optind indexes the first
 * operand of argv (argv[0] is the command's name). */
typedef int (zctr_local_opt_fn) (void *ctx, int opt, const char *arg);
int zctr_getopt (zctr_t *z, int argc, char **argv, const struct option *local,
                 zctr_local_opt_fn *on_opt, void *ctx);

/* The connected client (borrowed), or NULL after printing why. */
zcd_client_t *zctr_client (zctr_t *z);
/* Print "zctr: <what>" and the client's last error on stderr; returns 1. */
int zctr_fail_request (zctr_t *z, const char *what);
/* Print "zctr: <message>" on stderr; returns code. */
int zctr_error (int code, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
/* Print a whole reply as indented JSON on stdout. */
void zctr_print_json (const msgpack_object *obj);
/* Print an object as "path: value" lines (human output of nested maps). */
void zctr_print_flat (const msgpack_object *obj, const char *prefix);

/* Strict numbers; memory also takes a k/m/g suffix (powers of 1024). */
bool zctr_parse_u64 (const char *s, uint64_t *out);
bool zctr_parse_bytes (const char *s, uint64_t *out);

/* Print an event on stdout, one line (JSON with --json); from: the node
 * it came from with --node, else NULL. */
void zctr_print_event (zctr_t *z, const zcd_event_t *event, const zcd_fanout_event_t *from);
/* "usage: zctr [--node FILE [--on NAME]] <text>" on stderr; returns
 * ZCTR_EXIT_USAGE. */
int zctr_usage (const zctr_t *z, bool needs_on, const char *text);

/* Attach: FIFOs for the process's stdio, copied to and from ours until its
 * exit event.  zctr_attach_prepare makes the FIFOs and opens our ends, and
 * the subscriber (before the request is sent); zctr_attach_run copies and
 * returns the process's exit status (or an error exit code). */
typedef struct zctr_attach zctr_attach_t;
zctr_attach_t *zctr_attach_prepare (zctr_t *z, const char *id, const char *pid, bool tty);
const char *zctr_attach_path (const zctr_attach_t *a, int fd); /* 0, 1, 2 */
int zctr_attach_run (zctr_attach_t *a);
void zctr_attach_destroy (zctr_attach_t **a_p);

/* Tables (zctr_table.c): columns sized by content, two spaces apart,
 * every column starting at the same offset on every row; control
 * characters in cells become '?'. */
typedef struct zctr_table zctr_table_t;
#define ZCTR_COL_SHRINK 1 /* cut (ending in '+') to fit style->max_width */
typedef struct
{
  size_t indent;    /* spaces before every line */
  size_t max_width; /* 0 = no limit; else shrink, then cut lines */
  const char *eol;  /* NULL = "\n" */
  bool no_header;   /* rows only (a key-value block) */
} zctr_table_style_t;
zctr_table_t *zctr_table_new (void);
void zctr_table_destroy (zctr_table_t **t_p);
/* Columns first (at most 16), then cells row after row. */
void zctr_table_column (zctr_table_t *t, const char *header, int flags);
void zctr_table_cell (zctr_table_t *t, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
size_t zctr_table_rows (const zctr_table_t *t);
/* Header line, then the rows; style may be NULL. */
void zctr_table_print (const zctr_table_t *t, FILE *out, const zctr_table_style_t *style);
size_t zctr_text_width (const char *s);
/* s with control characters as '?' (text from the daemon, for a terminal). */
void zctr_put_safe (FILE *out, const char *s);

/* Units (zctr_fmt.c), into a caller's buffer, which they return. */
#define ZCTR_FMT_LEN 40
typedef char zctr_fmt_t[ZCTR_FMT_LEN];
const char *zctr_fmt_bytes (zctr_fmt_t buf, uint64_t n);       /* 512B 1.50KiB 64.0MiB 577MiB */
const char *zctr_fmt_duration (zctr_fmt_t buf, uint64_t secs); /* 45s 3m12s 2h05m 3d04h */
const char *zctr_fmt_cpu_time (zctr_fmt_t buf, uint64_t ns);   /* 3.21s, then as a duration */
const char *zctr_fmt_percent (zctr_fmt_t buf, double pct);     /* 12.5%; "-" when negative */
/* UTC ISO 8601 (2026-12-02T13:22:52.123Z with millis); "-" for ns <= 0. */
const char *zctr_fmt_time (zctr_fmt_t buf, int64_t ns, bool millis);
/* Time since since_ns (realtime ns) as a duration; "-" for since_ns <= 0. */
const char *zctr_fmt_age (zctr_fmt_t buf, int64_t since_ns);
int64_t zctr_now_ns (void);
/* A memory limit that limits something (not 0, not v1's "unlimited"). */
bool zctr_limit_set (uint64_t limit);

/* Help (zctr_help.c): the whole usage (cmd NULL), or one command's or
 * subcommand's, every flag listed.  Unknown topics get the whole usage. */
void zctr_help (FILE *out, const char *cmd, const char *sub);
/* -h or --help as an argument of its own. */
bool zctr_is_help (const char *arg);

/* state and containers list (zctr_state.c); zctr_state_list_rows adds a
 * state reply's containers to a list table made by zctr_state_list_table
 * (node: the NODE column's text, NULL for one daemon). */
int zctr_cmd_state (zctr_t *z, int argc, char **argv);
int zctr_state_list (zctr_t *z, int argc, char **argv);
zctr_table_t *zctr_state_list_table (bool with_node);
void zctr_state_list_rows (zctr_table_t *t, const msgpack_object *reply, const char *node);
/* A state reply for people: the machine, then each container in detail
 * with its processes; stats (may be NULL) adds usage. */
void zctr_state_print (const msgpack_object *state, const msgpack_object *stats, const char *node);

/* stats, once or --watch (zctr_stats.c) */
int zctr_cmd_stats (zctr_t *z, int argc, char **argv);

int zctr_cmd_containers (zctr_t *z, int argc, char **argv);
int zctr_cmd_events (zctr_t *z, int argc, char **argv);
int zctr_cmd_watch (zctr_t *z, int argc, char **argv);
int zctr_cmd_checkpoints (zctr_t *z, int argc, char **argv);
int zctr_cmd_spec (zctr_t *z, int argc, char **argv);
/* --node FILE: the commands that make sense over many nodes (zctr_node.c);
 * zctr_node_on adds the names of one --on argument; zctr_node_free
 * releases what --node and --on hold.  The commands that also serve one
 * daemon parse their arguments in their own files and hand over to
 * zctr_node_change (a request that changes containers: body consumed,
 * --on required), zctr_node_list and zctr_node_events. */
int zctr_cmd_node (zctr_t *z, int argc, char **argv);
int zctr_node_change (zctr_t *z, zcd_body_t *body);
int zctr_node_list (zctr_t *z, bool ids_only);
int zctr_node_events (zctr_t *z, const char *id, uint64_t since_seq, uint64_t count);
int zctr_node_on (zctr_t *z, const char *arg);
void zctr_node_free (zctr_t *z);

#endif
