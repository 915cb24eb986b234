/* Library-internal interfaces shared by libzcd's files; not installed. */
#ifndef ZCD_PRIVATE_H
#define ZCD_PRIVATE_H

#include "lib/zcd_client.h"

#include <stdarg.h>

/* The client's libzmq context, for the subscriber's SUB socket. */
void *zcd_client_context (zcd_client_t *self);
/* Record a local failure as the client's last error. */
void zcd_client_set_error (zcd_client_t *self, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
/* Milliseconds left until deadline_ms (monotonic), clamped at 0; -1 when
 * deadline_ms is -1 (no deadline). */
int zcd_ms_left (int64_t deadline_ms);
/* Monotonic deadline timeout_ms from now; -1 for timeout_ms < 0. */
int64_t zcd_deadline (int timeout_ms);

/* ---- zcd_wire.c: what the client and the fan-out's nodes share ---- */

/* Replace *slot (malloc'd text or NULL) with the formatted text (NULL when
 * out of memory). */
void zcd_set_text (char **slot, const char *fmt, va_list ap);
/* A daemon error reply as "<code>: <message>"; malloc'd, NULL when out of
 * memory. */
char *zcd_reply_error_text (const zcd_reply_t *reply);
/* A socket of type on ctx that does not linger; a DEALER also gets a deep
 * send queue (pipelining) and an unbounded receive queue (a long replay
 * must not cost the final reply).  NULL (errno). */
void *zcd_socket_new (void *ctx, int type);
/* Send body with "rid" = rid added, as [empty delimiter, body]; 0, or -1
 * with errno (EINVAL: body is no msgpack map). */
int zcd_send_with_rid (void *socket, const void *body, size_t len, uint64_t rid);
/* Read one whole message (DONTWAIT) and decode its last frame: 0, or -1
 * with errno EAGAIN (nothing waiting) or EPROTO (undecodable, dropped). */
int zcd_read_reply (void *socket, zcd_reply_t **reply);

/* rids whose call timed out: their late replies are dropped. */
typedef struct
{
  uint64_t *v;
  size_t n, cap;
} zcd_rids_t;
void zcd_rids_add (zcd_rids_t *rids, uint64_t rid);
/* Whether rid was abandoned; its final reply takes it off the list. */
bool zcd_rids_take (zcd_rids_t *rids, uint64_t rid, bool final);
void zcd_rids_free (zcd_rids_t *rids);

/* Replies that arrived while a call waited for another, kept in order for
 * the asynchronous recv, each with its node's index (0 for a client). */
typedef struct zcd_stash_node
{
  size_t index;
  zcd_reply_t *reply;
  struct zcd_stash_node *next;
} zcd_stash_node_t;
typedef struct
{
  zcd_stash_node_t *head, *tail;
} zcd_stash_t;
void zcd_stash_push (zcd_stash_t *stash, size_t index, zcd_reply_t *reply);
/* The oldest reply (caller owns) and its index (may be NULL); false when
 * the stash is empty. */
bool zcd_stash_pop (zcd_stash_t *stash, size_t *index, zcd_reply_t **reply);
void zcd_stash_clear (zcd_stash_t *stash);

#endif
