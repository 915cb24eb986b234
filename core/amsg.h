/* The codec of the actors' internal messages: one packer and one decoder
 * driven by the per-message field tables that schema/gen_actors.py
 * generates (core/amsg_gen.[ch]), as core/proto.c validates requests
 * against core/proto_gen.c's tables.  Code uses the typed wrappers in
 * core/amsg_gen.h (amsg_<name>_send, ...); this is what they call.
 *
 * A body is a msgpack map {"type": <amsg_type_t as uint>, <field>: ...}.
 * Packing counts the map's entries from the fields given (never by hand)
 * and refuses a required pointer that is NULL or an enum out of range.
 * Decoding zeroes the struct, then takes each known key once: str and [str]
 * values become NUL-terminated copies in the message's msgpack zone (C
 * strings, freed with the message, no malloc per field), bin values point
 * into the received bytes (zero-copy), nil is an absent optional field, and
 * unknown keys ("type" among them) are skipped.  A missing required field,
 * a value of another type, a uint out of its range, a str holding a NUL or
 * a key given twice is ZCD_E_INTERNAL: internal messages are ours, so a bad
 * one is a bug, which the runtime logs and counts. */
#ifndef ZCD_AMSG_H
#define ZCD_AMSG_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/actor.h"
#include "core/err.h"

/* Bytes carried as they are (a packed msgpack map, a request body). */
typedef struct amsg_bin
{
  const char *ptr; /* NULL = absent (optional fields) */
  size_t size;
} amsg_bin_t;

static inline amsg_bin_t
amsg_bin_of (const msgpack_sbuffer *buf)
{
  return (amsg_bin_t){ buf->data ? buf->data : "", buf->size };
}

typedef enum
{
  AMSG_F_STR,  /* const char * */
  AMSG_F_U32,  /* uint32_t */
  AMSG_F_U64,  /* uint64_t */
  AMSG_F_INT,  /* int64_t */
  AMSG_F_BOOL, /* bool */
  AMSG_F_BIN,  /* amsg_bin_t */
  AMSG_F_STRV, /* const char *const *, NULL-terminated */
  AMSG_F_ENUM  /* a C enum (int-sized), carried as a uint below `limit` */
} amsg_ftype_t;

typedef struct amsg_field
{
  const char *name;
  amsg_ftype_t type;
  bool optional;
  size_t offset;      /* of the value in the message's struct */
  size_t has_offset;  /* of its has_<name> flag (optional scalars) */
  uint64_t limit;     /* AMSG_F_ENUM: values below it */
  const char *c_type; /* AMSG_F_ENUM: for messages */
} amsg_field_t;

typedef struct amsg_desc
{
  const char *name; /* "req" */
  uint32_t type;    /* its amsg_type_t */
  size_t size;      /* of its struct */
  const amsg_field_t *fields;
  size_t n_fields; /* at most 32 */
} amsg_desc_t;

/* Append the message `m` (a struct described by d) as a body to out.
 * Nothing is appended on failure. */
int amsg_pack (const amsg_desc_t *d, const void *m, msgpack_sbuffer *out, zcd_error_t **err);
/* Pack and actor_send_raw; a message that cannot be packed is a failed
 * send like any other (counted, logged when err is NULL). */
int amsg_send (const amsg_desc_t *d, actor_system_t *sys, const char *from, const char *to,
               const void *m, zcd_error_t **err);
/* Fill the struct `out` from body; zone: the body's (msgpack_unpacked's). */
int amsg_decode (const amsg_desc_t *d, const msgpack_object *body, msgpack_zone *zone, void *out,
                 zcd_error_t **err);
/* A deep copy of the message `m` in one allocation (its strings, bins and
 * arrays included), for a message kept past its handler (a queued
 * request); release it with free (). */
void *amsg_dup (const amsg_desc_t *d, const void *m);

#endif
