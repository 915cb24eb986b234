/* The supervisor actor: owns the client sockets (ROUTER commands, PUB
 * events), the container table, the event log and the start gate.  It
 * validates every request at the edge (core/proto.c), answers what it owns
 * itself (version, state, metrics, events, create's admission) and forwards
 * the rest to the container actor concerned, matching the reply back by a
 * token.  Replies and events leave once per loop turn, after the event log
 * is flushed (PROTOCOL.md section 5: logged before published, published
 * before the reply). */
#ifndef ZCD_SUPERVISOR_H
#define ZCD_SUPERVISOR_H

#include "actors/actors.h"

typedef struct supervisor supervisor_t;

/* Binds the endpoints, opens the event log, rebuilds the containers found in
 * the state directory.  Returns NULL with *err on failure. */
supervisor_t *supervisor_new (zcd_daemon_t *daemon, zcd_error_t **err);
/* Closes the sockets and removes the ipc socket files; containers keep
 * running (their shims are detached). */
void supervisor_destroy (supervisor_t **self);
/* SIGTERM: new requests are answered `unavailable`, queued creates and
 * replays too; the loop stops once the requests in progress are answered,
 * or after SUPERVISOR_STOP_GRACE_MS.  Containers keep running. */
void supervisor_stop (supervisor_t *self);

struct eventlog;
/* Rebuild the containers found in the state directory (supervisor_restore.c). */
void supervisor_restore_all (zcd_daemon_t *daemon, struct eventlog *log);
/* Move containers kept in an earlier zcd's layout (<state>/<id>/<pid>/) to
 * containers/<id>/procs/<pid>/ (supervisor_migrate.c). */
void supervisor_migrate_layout (const char *state_dir);

#endif
