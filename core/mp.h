/* msgpack helpers on top of msgpack-c.
 *
 * Hostile input is checked by mp_check before msgpack-c sees it: msgpack-c
 * allocates room for a container's declared element count up front, so a
 * 5-byte "array of 4 billion" must be refused before it reaches the
 * unpacker, and nesting is bounded so no input can exhaust the stack. */
#ifndef ZCD_MP_H
#define ZCD_MP_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"

#define MP_MAX_DEPTH 32

/* 0 when buf holds exactly one well-formed msgpack object with nesting at
 * most max_depth and every declared count backed by enough bytes. */
int mp_check (const char *buf, size_t len, int max_depth);

/* mp_check then unpack into *out (caller: msgpack_unpacked_init before,
 * msgpack_unpacked_destroy after, on success or failure).
 * Fails with ZCD_E_INVALID_REQUEST. */
int mp_unpack (const char *buf, size_t len, msgpack_unpacked *out, zcd_error_t **err);

/* Value of a str key in a map object, NULL when absent or obj is no map. */
const msgpack_object *mp_map_get (const msgpack_object *map, const char *key);
/* Same with a key of `len` bytes (not NUL-terminated). */
const msgpack_object *mp_map_getn (const msgpack_object *map, const char *key, size_t len);

/* The one byte-level reader, shared by the daemon and libzcd, for when no
 * object tree is wanted (a map's header to extend it, a record's fields
 * indexed in place): a cursor over raw msgpack.  Each read takes one
 * object of its kind and returns false, leaving the cursor where it was,
 * when the next object is of another kind or is cut short.  mp_check is a
 * walk made of these reads. */
typedef struct mp_reader
{
  const unsigned char *p, *end;
} mp_reader_t;

void mp_reader_init (mp_reader_t *r, const void *buf, size_t len);
size_t mp_reader_left (const mp_reader_t *r);
/* Element count of a map (pairs) or an array; the elements follow. */
bool mp_read_map (mp_reader_t *r, uint32_t *count);
bool mp_read_array (mp_reader_t *r, uint32_t *count);
/* A str or bin: *s points into the buffer (not NUL-terminated). */
bool mp_read_str (mp_reader_t *r, const char **s, size_t *len);
bool mp_read_bin (mp_reader_t *r, const char **s, size_t *len);
/* Any int encoding of an in-range value. */
bool mp_read_uint (mp_reader_t *r, uint64_t *out);
bool mp_read_int (mp_reader_t *r, int64_t *out);
bool mp_read_bool (mp_reader_t *r, bool *out);
bool mp_read_nil (mp_reader_t *r);
/* Skip one whole object, checked as mp_check does (nesting at most
 * max_depth, every declared count backed by bytes). */
bool mp_skip (mp_reader_t *r, int max_depth);

/* Conversions; each returns false when the object has another type or the
 * value is out of range.  Any int encoding of an in-range value is fine. */
bool mp_as_uint (const msgpack_object *o, uint64_t *out);
bool mp_as_int (const msgpack_object *o, int64_t *out);
bool mp_as_bool (const msgpack_object *o, bool *out);
/* Newly allocated NUL-terminated copy of a str; NULL for a non-str or a str
 * holding a NUL byte. */
char *mp_strdup (const msgpack_object *o);
bool mp_str_eq (const msgpack_object *o, const char *s);

/* Map lookups with a default.  The type was validated at the edge, so a
 * wrong type just yields the default. */
char *mp_get_strdup (const msgpack_object *map, const char *key); /* NULL if absent */
uint64_t mp_get_uint (const msgpack_object *map, const char *key, uint64_t dflt);
bool mp_get_bool (const msgpack_object *map, const char *key, bool dflt);
/* NULL-terminated array of copies of a [str]; NULL if absent.  Free with
 * mp_strv_free. */
char **mp_get_strv (const msgpack_object *map, const char *key);
void mp_strv_free (char **v);
size_t mp_strv_len (char *const *v);

/* Packing shorthands. */
void mp_pack_str (msgpack_packer *pk, const char *s);
void mp_pack_strn (msgpack_packer *pk, const char *s, size_t n);
void mp_pack_kv_str (msgpack_packer *pk, const char *key, const char *value); /* nil if NULL */
void mp_pack_kv_uint (msgpack_packer *pk, const char *key, uint64_t value);
void mp_pack_kv_int (msgpack_packer *pk, const char *key, int64_t value);
void mp_pack_kv_bool (msgpack_packer *pk, const char *key, bool value);
void mp_pack_strv (msgpack_packer *pk, char *const *v); /* [] if NULL */

#endif
