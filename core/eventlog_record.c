/* The event log's bytes: CRC-32C, the file header, the record frame, and
 * the Event map both ways (encoded for an append, checked and indexed
 * strictly when a record is read back).  Format in core/eventlog.h. */
#include <limits.h>
#include <msgpack.h>
#include <stdint.h>
#include <string.h>

#include "core/eventlog_int.h"
#include "core/fsutil.h"
#include "core/mp.h"

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

/* A key from a newer version: skipped if it is a plain value (nil, bool,
 * int, str); anything else makes the record invalid. */
static bool
s_skip_plain (mp_reader_t *r)
{
  const char *s;
  size_t n;
  uint64_t u;
  int64_t i;
  bool b;
  return mp_read_nil (r) || mp_read_bool (r, &b) || mp_read_uint (r, &u) || mp_read_int (r, &i)
         || mp_read_str (r, &s, &n);
}

/* One value of the Event map: the key decides the type it must have. */
static bool
s_read_field (mp_reader_t *r, const char *base, const char *k, size_t kn, eventlog_indexed_t *ev,
              unsigned *seen)
{
  const char *s;
  size_t n;
  uint64_t u;
  bool b;
#define KEY_IS(lit) (kn == sizeof (lit) - 1 && memcmp (k, lit, kn) == 0)
  if (KEY_IS ("seq"))
    return *seen |= 1, mp_read_uint (r, &ev->seq);
  if (KEY_IS ("type"))
    return *seen |= 2, mp_read_str (r, &s, &n);
  if (KEY_IS ("id"))
    {
      *seen |= 4;
      if (!mp_read_str (r, &s, &n))
        return false;
      ev->id_off = (size_t)(s - base);
      ev->id_len = n;
      return true;
    }
  if (KEY_IS ("ts"))
    return *seen |= 8, mp_read_int (r, &ev->ts);
  if (KEY_IS ("pid"))
    return mp_read_str (r, &s, &n);
  if (KEY_IS ("status") || KEY_IS ("system_pid") || KEY_IS ("uid"))
    return mp_read_uint (r, &u);
  if (KEY_IS ("oom_killed"))
    return mp_read_bool (r, &b);
#undef KEY_IS
  return s_skip_plain (r);
}

/* Checks that `payload` is exactly one Event map and pulls out its index. */
bool
eventlog_index_event (const char *payload, size_t len, eventlog_indexed_t *ev)
{
  mp_reader_t r;
  uint32_t count;
  mp_reader_init (&r, payload, len);
  memset (ev, 0, sizeof *ev);
  if (!mp_read_map (&r, &count))
    return false;
  unsigned seen = 0;
  for (uint32_t i = 0; i < count; i++)
    {
      const char *k;
      size_t kn;
      if (!mp_read_str (&r, &k, &kn) || !s_read_field (&r, payload, k, kn, ev, &seen))
        return false;
    }
  return mp_reader_left (&r) == 0 && seen == 15 && ev->seq > 0 && ev->id_len <= UINT16_MAX;
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
  uint32_t n = 4 + (ev->pid != NULL) + ev->has_status + (ev->system_pid != 0) + ev->has_oom_killed
               + (ev->uid != 0);
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
  if (ev->uid)
    {
      msgpack_pack_str_with_body (pk, "uid", 3);
      msgpack_pack_uint32 (pk, ev->uid);
    }
  msgpack_pack_str_with_body (pk, "ts", 2);
  msgpack_pack_int64 (pk, ev->ts ? ev->ts : zcd_now_ns ());
}

uint32_t
eventlog_event_uid (const char *encoded, size_t len)
{
  mp_reader_t r;
  uint32_t count;
  mp_reader_init (&r, encoded, len);
  if (!mp_read_map (&r, &count))
    return 0;
  for (uint32_t i = 0; i < count; i++)
    {
      const char *k;
      size_t kn;
      uint64_t uid;
      if (!mp_read_str (&r, &k, &kn))
        return 0;
      if (kn == 3 && memcmp (k, "uid", 3) == 0)
        return mp_read_uint (&r, &uid) && uid <= UINT32_MAX ? (uint32_t)uid : 0;
      if (!s_skip_plain (&r))
        return 0;
    }
  return 0;
}
