/* zcd-oci internals: a runc-compatible command line over zcd's wire
 * protocol (what Slurm's oci.conf calls instead of runc). */
#ifndef ZCD_OCI_H
#define ZCD_OCI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/zcd_client.h"
#include "lib/zcd_tool.h"

/* runc's convention: every failure exits 1 (usage errors included);
 * `run` exits with the container's own status. */
#define OCI_EXIT_FAIL 1

/* The OCI runtime-spec version our `state` output claims. */
#define OCI_SPEC_VERSION "1.0.2"

typedef struct
{
  const char *address;        /* --address; NULL = $ZCD_ADDRESS or the default */
  const char *events_address; /* --events-address; NULL = $ZCD_EVENTS_ADDRESS or derived */
  const char *log_path;       /* --log: errors and debug lines are appended here */
  bool log_json;              /* --log-format json */
  bool debug;                 /* --debug */
  int timeout_ms;             /* of each request to the daemon */
  zcd_client_t *client;       /* created on first use */
} oci_t;

/* ---- oci_main.c: messages, the client, small parsers ---- */

/* "zcd-oci: <message>" on stderr (and a line in the --log file); returns
 * OCI_EXIT_FAIL. */
int oci_error (oci_t *o, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
/* A debug line, only with --debug: to the --log file, else stderr. */
void oci_debug (oci_t *o, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
/* The connected client (borrowed), or NULL after printing why. */
zcd_client_t *oci_client (oci_t *o);
/* The event endpoint: --events-address, $ZCD_EVENTS_ADDRESS, or derived
 * from an ipc command address (ipc://DIR/zcd.sock -> ipc://DIR/events.sock).
 * Malloc'd; NULL after printing why (a tcp address gives nothing to derive). */
char *oci_events_endpoint (oci_t *o);
/* Container ids as zcd accepts them (PROTOCOL.md section 3): they also
 * name our record files, so nothing else may pass. */
bool oci_valid_id (const char *id);
/* Why a daemon request failed: its error code, or "" for a local failure
 * (no daemon, timeout). */
const char *oci_reply_code (const zcd_reply_t *reply);
/* Report a failed request; "not_found" becomes runc's "container does not
 * exist", "already_exists" its "container with given ID already exists". */
int oci_fail_request (oci_t *o, const char *what, const zcd_reply_t *reply);
/* Write pid to path as runc does (a temporary file renamed into place). */
int oci_write_pid_file (oci_t *o, const char *path, uint64_t pid);

/* ---- oci_bundle.c: what we read from a bundle's config.json ---- */

typedef struct
{
  char *bundle; /* absolute */
  char *rootfs; /* root.path made absolute against the bundle */
  bool terminal;
  json_t *annotations; /* object (maybe empty); owned */
} oci_bundle_t;

/* Load and check <bundle>/config.json; 0, or -1 after printing why
 * (unless quiet). */
int oci_bundle_load (oci_t *o, const char *bundle, oci_bundle_t *out, bool quiet);
void oci_bundle_free (oci_bundle_t *b);

/* ---- oci_record.c: containers created but not yet started ---- */

/* zcd creates and starts in one step; `create` only records the request
 * here (one 0600 JSON file per container in a 0700 per-uid directory),
 * `start` sends it.  Every call returns -1 after printing why, except
 * oci_record_load, which returns NULL quietly when there is no record. */
int oci_record_save (oci_t *o, const char *id, json_t *record, bool replace);
json_t *oci_record_load (oci_t *o, const char *id);
int oci_record_remove (oci_t *o, const char *id);

/* ---- oci_state.c / oci_lifecycle.c: shared helpers ---- */

/* Host pid of a zcd Container's init process (0 when it has none). */
/* Send zcd's `create`; *pid gets the host pid of the container's init.
 * 0 or an exit code (message printed). */
int oci_send_create (oci_t *o, const char *id, const char *bundle, const zcd_create_opts_t *opts,
                     uint64_t *pid);
/* Send zcd's `create` for a detached container (stdio /dev/null) and write
 * the pid file when one is given; 0 or an exit code (message printed). */
int oci_create_detached (oci_t *o, const char *id, const char *bundle, const char *pid_file,
                         bool no_pivot);

/* The options and operand of run and create (runc's; run also takes
 * --detach and a few more it ignores). */
typedef struct
{
  const char *id, *bundle, *pid_file;
  bool detach, no_pivot;
} oci_create_args_t;
/* Parse argv (argv[0] is "run" or "create"); 0, or an exit code after
 * printing why. */
int oci_create_args (oci_t *o, int argc, char **argv, oci_create_args_t *a);

/* ---- commands ---- */

int oci_cmd_run (oci_t *o, int argc, char **argv);    /* oci_run.c */
int oci_cmd_create (oci_t *o, int argc, char **argv); /* oci_lifecycle.c */
int oci_cmd_start (oci_t *o, int argc, char **argv);  /* oci_lifecycle.c */
int oci_cmd_kill (oci_t *o, int argc, char **argv);   /* oci_lifecycle.c */
int oci_cmd_delete (oci_t *o, int argc, char **argv); /* oci_lifecycle.c */
int oci_cmd_state (oci_t *o, int argc, char **argv);  /* oci_state.c */

/* ---- oci_run.c: shared with delete --force ---- */

/* Wait for the exit event of container id's init on an already started
 * subscriber; its status, or -1 after printing why (timeout_ms, -1 =
 * forever). */
int oci_wait_exit (oci_t *o, zcd_subscriber_t *sub, const char *id, int timeout_ms);
/* A started subscriber to id's events from now on, or NULL after printing
 * why. */
zcd_subscriber_t *oci_subscribe (oci_t *o, const char *id);

#endif
