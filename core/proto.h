/* The protocol edge: decode and fully validate one request body, and pack
 * replies (PROTOCOL.md section 2).
 *
 * Validation is driven by the tables schema/gen.py generates into
 * core/proto_gen.c: no op has a hand-written decoder, so what
 * docs/protocol.md says a key accepts is exactly what is checked here.
 * Once proto_decode_request succeeds, a handler may read any key of its op
 * with the mp_get_* helpers and trust its type, range and syntax. */
#ifndef ZCD_PROTO_H
#define ZCD_PROTO_H

#include <msgpack.h>
#include <stddef.h>

#include "core/err.h"
#include "core/proto_gen.h"

#define PROTO_DEFAULT_MAX_REQUEST (1024 * 1024)

typedef struct proto_request
{
  msgpack_unpacked unpacked;  /* owns the decoded body */
  const msgpack_object *body; /* the map; NULL until the body decodes as a map */
  const msgpack_object *rid;  /* NULL when absent or the body is undecodable */
  const proto_op_t *op;       /* generated descriptor, NULL unless decoding succeeded */
} proto_request_t;

void proto_request_init (proto_request_t *req);
/* Releases what the request owns; safe after a failed decode and twice. */
void proto_request_fini (proto_request_t *req);

/* Decode and validate one request body.  `buf` is only read during the
 * call (the decoded objects live in req->unpacked).  Order of checks, the
 * first failure being the error: too_large (len > max_size);
 * invalid_request (not msgpack, mp_check fails, not a map, a non-str key,
 * no str `op`); req->rid is set as soon as the map decodes so an error reply
 * can echo it; `v`: wrong type = invalid_argument, above PROTO_VERSION =
 * unsupported_version; unknown_op; each known key's type, range, syntax
 * and absolute path (invalid_argument, "key `user.uid`: expected uint");
 * missing required keys; the op's at-least-one-of rule.  Unknown keys are
 * ignored.  Returns 0, or -1 with *err set (the caller owns it);
 * proto_request_fini is needed either way. */
int proto_decode_request (const char *buf, size_t len, size_t max_size, proto_request_t *req,
                          zcd_error_t **err);

/* Descriptor of a named op, NULL when there is none. */
const proto_op_t *proto_op_find (const char *name, size_t len);
/* Wire name of an event type ("start-container"), NULL when out of range. */
const char *proto_event_type_name (proto_event_t type);

/* Final error reply {"rid"?, "ok": false, "error": {"code", "message"}}
 * appended to *out (caller-initialised).  rid NULL = omitted; message NULL =
 * "". */
void proto_pack_error_reply (msgpack_sbuffer *out, const msgpack_object *rid, zcd_code_t code,
                             const char *message);
/* Same from an error value (NULL = internal). */
void proto_pack_error (msgpack_sbuffer *out, const msgpack_object *rid, const zcd_error_t *err);

/* Final ok reply {"rid"?, "ok": true, <result's entries>}.  result NULL or
 * not a map = no entries; result entries named "rid" or "ok" are dropped so
 * the reply stays well-formed. */
void proto_pack_ok_reply (msgpack_sbuffer *out, const msgpack_object *rid,
                          const msgpack_object *result);

/* For replies packed straight into a packer: open the reply map and write
 * rid (when not NULL) and, for a final reply, "ok": true; the caller then
 * packs exactly n_entries key/value pairs of its own.  A partial reply
 * (streaming ops) carries no "ok". */
void proto_pack_ok_head (msgpack_packer *pk, const msgpack_object *rid, uint32_t n_entries);
void proto_pack_partial_head (msgpack_packer *pk, const msgpack_object *rid, uint32_t n_entries);

#endif
