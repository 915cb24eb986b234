/* Who is calling (PROTOCOL.md section 1, "Callers"; DESIGN.md "Who is
 * calling"), and acting as that caller.
 *
 * The edge learns a caller from the connection: over ipc the peer's
 * credentials, which libzmq hands to the ZAP handler with the peer
 * address; over tcp the `uid` in the metadata of the client's CURVE
 * certificate (core/edge_curve.c).  The ZAP handler's verdict travels with
 * every message as its User-Id: "admin" or "u:<uid>:<gid>".
 *
 * Acting as a caller: the daemon runs as root, and whatever it opens,
 * stats or signals for a caller that is not an administrator it does with
 * that caller's ids, so it never lends a privilege the caller lacks. */
#ifndef ZCD_CALLER_H
#define ZCD_CALLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct zcd_caller
{
  bool admin; /* root, a CURVE key without a uid, an in-process caller */
  uint32_t uid, gid;
} zcd_caller_t;

#define ZCD_CALLER_ADMIN ((zcd_caller_t){ .admin = true, .uid = 0, .gid = 0 })
#define ZCD_USER_ID_MAX 32

/* A User-Id as the ZAP handler writes it; false when it is neither form
 * (the caller is then refused, never taken for an administrator). */
bool zcd_caller_parse (const char *user_id, zcd_caller_t *out);
/* "u:<uid>:<gid>", or "admin" for uid 0. */
void zcd_caller_user_id (uint32_t uid, uint32_t gid, char out[ZCD_USER_ID_MAX]);
/* The uid and gid of an ipc peer address "<host>:<uid>:<gid>:<pid>" (what
 * libzmq passes to ZAP for a unix socket with SO_PEERCRED). */
bool zcd_caller_from_ipc_address (const char *address, uint32_t *uid, uint32_t *gid);

/* Acting as a user on the calling thread only.  Raw system calls: glibc's
 * wrappers would change the ids of every thread (ZeroMQ's included).
 * While it lasts the thread's effective ids are the user's and its groups
 * the user's primary group alone (fewer than the user may have: a check
 * made so can refuse what the user could do, never allow what it cannot),
 * and the kernel drops the thread's effective capabilities. */
typedef struct zcd_as_user
{
  bool active;
  int n_groups;
  gid_t groups[64];
} zcd_as_user_t;

/* uid 0: nothing changes (still a valid scope).  -1 with errno. */
int zcd_as_user_enter (zcd_as_user_t *scope, uint32_t uid, uint32_t gid);
void zcd_as_user_leave (zcd_as_user_t *scope);

/* Signals for a rootless container's owner.  A pid its shim reported is
 * the owner's word: the signal goes only where the owner's own could (the
 * target's real or saved uid is uid, read from /proc).  Not by acting as
 * the owner: with the real uid still 0, the kernel would let any root
 * process be signalled, and with it switched, the owner could signal the
 * daemon meanwhile.  uid 0: no check. */
int zcd_signal_owned (int pidfd, pid_t pid, uint32_t uid, int sig);
/* kill(2) under the same rule; pid < 0: each member of that process group
 * that passes it (gid is unused: signals know only uids). */
int zcd_kill_as (uint32_t uid, uint32_t gid, pid_t pid, int sig);

/* The supplementary groups of uid as a "g1,g2,..." list for setpriv (the
 * user's entry in the group database; just gid when the user has none).
 * Caller frees. */
char *zcd_user_groups (uint32_t uid, uint32_t gid);
/* argv run as the user: setpriv's prefix (real, effective and saved ids,
 * the groups given) before argv's own words; argv is not taken.  uid 0:
 * a copy of argv.  Caller frees (mp_strv_free). */
char **zcd_argv_as_user (char *const *argv, uint32_t uid, uint32_t gid, const char *groups);

#endif
