/* The event log's bytes: CRC-32C, the file header, the record frame, and
 * the Event map both ways (encoded for an append, checked and indexed
 * strictly when a record is read back).  Format in core/eventlog.h. */
#include <limits.h>
#include <msgpack.h>
#include <stdint.h>
#include <string.h>

#include "core/eventlog_int.h"
#include "core/fsutil.h"

/* ---- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) ---- */

static uint32_t s_crc_table[256];
static bool s_crc_ready;

static void
s_crc_init (void)
{
  for (uint32_t i = 0; i < 256; i++)
    {
      uint32_t c = i;
      for (int k = 0; k < 8; k++)
        c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      s_crc_table[i] = c;
    }
  s_crc_ready = true;
}

uint32_t
eventlog_crc32c (uint32_t crc, const void *data, size_t len)
{
  if (!s_crc_ready)
    s_crc_init ();
  const uint8_t *p = data;
  crc = ~crc;
  while (len--)
    crc = s_crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void
eventlog_put_u32 (char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (char)(v >> (8 * i));
}
static void
s_put_u64 (char *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (char)(v >> (8 * i));
}
uint32_t
eventlog_get_u32 (const char *p)
{
  const uint8_t *u = (const uint8_t *)p;
  return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}
uint64_t
eventlog_get_u64 (const char *p)
{
  return (uint64_t)eventlog_get_u32 (p) | (uint64_t)eventlog_get_u32 (p + 4) << 32;
}

uint32_t
eventlog_frame_crc (const char *frame, uint32_t len)
{
  /* The length is covered too: a damaged length must not pass as a shorter
   * or longer record whose bytes happen to check out. */
  return eventlog_crc32c (eventlog_crc32c (0, frame, 4), frame + FRAME_SIZE, len);
}

void
eventlog_fill_header (char *h, uint64_t seq_floor)
{
  memcpy (h, EVENTLOG_MAGIC, 8);
  s_put_u64 (h + 8, seq_floor);
  eventlog_put_u32 (h + 16, eventlog_crc32c (0, h, 16));
  eventlog_put_u32 (h + 20, 0);
}

/* ---- a strict reader for the Event map, enough to index a record ---- */

typedef struct
{
  const uint8_t *p, *end;
} s_reader_t;

static bool
s_take (s_reader_t *r, size_t n, const uint8_t **out)
{
  if ((size_t)(r->end - r->p) < n)
    return false;
  *out = r->p;
  r->p += n;
  return true;
}

static bool
s_read_be (s_reader_t *r, size_t n, uint64_t *v)
{
  const uint8_t *b;
  if (!s_take (r, n, &b))
    return false;
  *v = 0;
  for (size_t i = 0; i < n; i++)
    *v = *v << 8 | b[i];
  return true;
}

/* Any msgpack int; *is_neg tells which of *u (unsigned) or *s holds it. */
static bool
s_read_int (s_reader_t *r, uint64_t *u, int64_t *s, bool *is_neg)
{
  const uint8_t *t;
  if (!s_take (r, 1, &t))
    return false;
  uint8_t tag = *t;
  uint64_t v;
  *is_neg = false;
  if (tag <= 0x7f)
    return *u = tag, true;
  if (tag >= 0xe0)
    return *is_neg = true, *s = (int8_t)tag, true;
  if (tag >= 0xcc && tag <= 0xcf)
    return s_read_be (r, (size_t)1 << (tag - 0xcc), u);
  if (tag < 0xd0 || tag > 0xd3 || !s_read_be (r, (size_t)1 << (tag - 0xd0), &v))
    return false;
  size_t bits = (size_t)8 << (tag - 0xd0);
  int64_t sv = bits == 64 ? (int64_t)v : (int64_t)(v << (64 - bits)) >> (64 - bits);
  if (sv >= 0)
    return *u = (uint64_t)sv, true;
  return *is_neg = true, *s = sv, true;
}

static bool
s_read_uint (s_reader_t *r, uint64_t *u)
{
  int64_t s;
  bool neg;
  return s_read_int (r, u, &s, &neg) && !neg;
}

static bool
s_read_str (s_reader_t *r, const uint8_t **s, size_t *n)
{
  const uint8_t *t;
  uint64_t len;
  if (!s_take (r, 1, &t))
    return false;
  if (*t >= 0xa0 && *t <= 0xbf)
    len = *t & 0x1f;
  else if (*t >= 0xd9 && *t <= 0xdb)
    {
      if (!s_read_be (r, (size_t)1 << (*t - 0xd9), &len))
        return false;
    }
  else
    return false;
  *n = (size_t)len;
  return len <= EVENTLOG_MAX_RECORD && s_take (r, *n, s);
}

/* One value of the Event map: the key decides the type it must have. */
static bool
s_read_field (s_reader_t *r, const uint8_t *base, const uint8_t *k, size_t kn,
              eventlog_indexed_t *ev, unsigned *seen)
{
  const uint8_t *s;
  size_t n;
  uint64_t u;
  int64_t i;
  bool neg;
#define KEY_IS(lit) (kn == sizeof (lit) - 1 && memcmp (k, lit, kn) == 0)
  if (KEY_IS ("seq"))
    return *seen |= 1, s_read_uint (r, &ev->seq);
  if (KEY_IS ("type"))
    return *seen |= 2, s_read_str (r, &s, &n);
  if (KEY_IS ("id"))
    {
      *seen |= 4;
      if (!s_read_str (r, &s, &n))
        return false;
      ev->id_off = (size_t)(s - base);
      ev->id_len = n;
      return true;
    }
  if (KEY_IS ("ts"))
    {
      *seen |= 8;
      if (!s_read_int (r, &u, &i, &neg) || (!neg && u > INT64_MAX))
        return false;
      ev->ts = neg ? i : (int64_t)u;
      return true;
    }
  if (KEY_IS ("pid"))
    return s_read_str (r, &s, &n);
  if (KEY_IS ("status") || KEY_IS ("system_pid"))
    return s_read_uint (r, &u);
  if (KEY_IS ("oom_killed"))
    return s_take (r, 1, &s) && (*s == 0xc2 || *s == 0xc3);
#undef KEY_IS
  /* A key from a newer version: skip it if it is a plain value. */
  const uint8_t *peek = r->p;
  if (peek < r->end && (*peek == 0xc0 || *peek == 0xc2 || *peek == 0xc3))
    return r->p++, true;
  if (s_read_int (r, &u, &i, &neg))
    return true;
  r->p = peek;
  return s_read_str (r, &s, &n);
}

/* Checks that `payload` is exactly one Event map and pulls out its index. */
bool
eventlog_index_event (const char *payload, size_t len, eventlog_indexed_t *ev)
{
  s_reader_t r = { (const uint8_t *)payload, (const uint8_t *)payload + len };
  const uint8_t *t;
  uint64_t count;
  if (!s_take (&r, 1, &t))
    return false;
  if (*t >= 0x80 && *t <= 0x8f)
    count = *t & 0x0f;
  else if (*t == 0xde || *t == 0xdf)
    {
      if (!s_read_be (&r, *t == 0xde ? 2 : 4, &count))
        return false;
    }
  else
    return false;
  unsigned seen = 0;
  memset (ev, 0, sizeof *ev);
  for (uint64_t i = 0; i < count; i++)
    {
      const uint8_t *k;
      size_t kn;
      if (!s_read_str (&r, &k, &kn)
          || !s_read_field (&r, (const uint8_t *)payload, k, kn, ev, &seen))
        return false;
    }
  return r.p == r.end && seen == 15 && ev->seq > 0 && ev->id_len <= UINT16_MAX;
}

/* Length of the valid record at image[off], 0 when there is none there. */
size_t
eventlog_check_frame (const char *buf, size_t len, size_t off, eventlog_indexed_t *ev)
{
  if (len - off < FRAME_SIZE)
    return 0;
  uint32_t plen = eventlog_get_u32 (buf + off);
  if (plen == 0 || plen > EVENTLOG_MAX_RECORD || len - off - FRAME_SIZE < plen)
    return 0;
  if (eventlog_get_u32 (buf + off + 4) != eventlog_frame_crc (buf + off, plen))
    return 0;
  if (!eventlog_index_event (buf + off + FRAME_SIZE, plen, ev))
    return 0;
  return FRAME_SIZE + plen;
}

/* ---- encoding ---- */

static void
s_pack_kv_str (msgpack_packer *pk, const char *key, const char *value)
{
  msgpack_pack_str_with_body (pk, key, strlen (key));
  msgpack_pack_str_with_body (pk, value, strlen (value));
}

void
eventlog_pack_event (msgpack_packer *pk, const zcd_event_t *ev, uint64_t seq)
{
  uint32_t n = 4 + (ev->pid != NULL) + ev->has_status + (ev->system_pid != 0) + ev->has_oom_killed;
  msgpack_pack_map (pk, n);
  msgpack_pack_str_with_body (pk, "seq", 3);
  msgpack_pack_uint64 (pk, seq);
  s_pack_kv_str (pk, "type", ev->type);
  s_pack_kv_str (pk, "id", ev->id);
  if (ev->pid)
    s_pack_kv_str (pk, "pid", ev->pid);
  if (ev->has_status)
    {
      msgpack_pack_str_with_body (pk, "status", 6);
      msgpack_pack_uint32 (pk, ev->status);
    }
  if (ev->system_pid)
    {
      msgpack_pack_str_with_body (pk, "system_pid", 10);
      msgpack_pack_uint32 (pk, ev->system_pid);
    }
  if (ev->has_oom_killed)
    {
      msgpack_pack_str_with_body (pk, "oom_killed", 10);
      if (ev->oom_killed)
        msgpack_pack_true (pk);
      else
        msgpack_pack_false (pk);
    }
  msgpack_pack_str_with_body (pk, "ts", 2);
  msgpack_pack_int64 (pk, ev->ts ? ev->ts : zcd_now_ns ());
}
