/* msgpack -> JSON, for printing replies and events.  JSON has no bytes and
 * only UTF-8 text, so bin becomes base64 and invalid UTF-8 U+FFFD: the
 * output is always valid JSON whatever the daemon (or a peer) sent. */
#include "lib/zcd_client.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t
s_utf8_len (const unsigned char *s, size_t n)
{
  size_t need;
  uint32_t cp;
  if (s[0] < 0x80)
    return 1;
  else if ((s[0] & 0xe0) == 0xc0)
    need = 2, cp = s[0] & 0x1f;
  else if ((s[0] & 0xf0) == 0xe0)
    need = 3, cp = s[0] & 0x0f;
  else if ((s[0] & 0xf8) == 0xf0)
    need = 4, cp = s[0] & 0x07;
  else
    return 0;
  if (n < need)
    return 0;
  for (size_t i = 1; i < need; i++)
    {
      if ((s[i] & 0xc0) != 0x80)
        return 0;
      cp = (cp << 6) | (s[i] & 0x3f);
    }
  static const uint32_t min_for_len[5] = { 0, 0, 0x80, 0x800, 0x10000 };
  if (cp < min_for_len[need] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return need;
}

static void
s_print_string (FILE *out, const char *p, size_t n)
{
  const unsigned char *s = (const unsigned char *) p;
  fputc ('"', out);
  size_t i = 0;
  while (i < n)
    {
      unsigned char c = s[i];
      if (c == '"' || c == '\\')
        fprintf (out, "\\%c", c);
      else if (c == '\n')
        fputs ("\\n", out);
      else if (c == '\t')
        fputs ("\\t", out);
      else if (c == '\r')
        fputs ("\\r", out);
      else if (c < 0x20 || c == 0x7f)
        fprintf (out, "\\u%04x", c);
      else
        {
          size_t len = s_utf8_len (s + i, n - i);
          if (len == 0)
            {
              fputs ("\\ufffd", out);
              i++;
              continue;
            }
          fwrite (s + i, 1, len, out);
          i += len;
          continue;
        }
      i++;
    }
  fputc ('"', out);
}

static void
s_print_base64 (FILE *out, const unsigned char *s, size_t n)
{
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  fputc ('"', out);
  for (size_t i = 0; i < n; i += 3)
    {
      uint32_t v = (uint32_t) s[i] << 16;
      if (i + 1 < n)
        v |= (uint32_t) s[i + 1] << 8;
      if (i + 2 < n)
        v |= s[i + 2];
      fputc (alphabet[(v >> 18) & 63], out);
      fputc (alphabet[(v >> 12) & 63], out);
      fputc (i + 1 < n ? alphabet[(v >> 6) & 63] : '=', out);
      fputc (i + 2 < n ? alphabet[v & 63] : '=', out);
    }
  fputc ('"', out);
}

static void
s_newline (FILE *out, bool pretty, int depth)
{
  if (!pretty)
    return;
  fputc ('\n', out);
  for (int i = 0; i < depth; i++)
    fputs ("  ", out);
}

static void s_print (FILE *out, const msgpack_object *obj, bool pretty, int depth);

/* A map key: str as is, anything else as the string of its JSON text. */
static void
s_print_key (FILE *out, const msgpack_object *key)
{
  if (key->type == MSGPACK_OBJECT_STR)
    {
      s_print_string (out, key->via.str.ptr, key->via.str.size);
      return;
    }
  char *text = NULL;
  size_t len = 0;
  FILE *mem = open_memstream (&text, &len);
  if (mem == NULL)
    {
      fputs ("\"\"", out);
      return;
    }
  s_print (mem, key, false, 0);
  fclose (mem);
  s_print_string (out, text, len);
  free (text);
}

static void
s_print_container (FILE *out, const msgpack_object *obj, bool pretty, int depth)
{
  bool is_map = obj->type == MSGPACK_OBJECT_MAP;
  uint32_t size = is_map ? obj->via.map.size : obj->via.array.size;
  fputc (is_map ? '{' : '[', out);
  for (uint32_t i = 0; i < size; i++)
    {
      if (i > 0)
        fputc (',', out);
      s_newline (out, pretty, depth + 1);
      if (is_map)
        {
          s_print_key (out, &obj->via.map.ptr[i].key);
          fputs (pretty ? ": " : ":", out);
          s_print (out, &obj->via.map.ptr[i].val, pretty, depth + 1);
        }
      else
        s_print (out, &obj->via.array.ptr[i], pretty, depth + 1);
    }
  if (size > 0)
    s_newline (out, pretty, depth);
  fputc (is_map ? '}' : ']', out);
}

static void
s_print (FILE *out, const msgpack_object *obj, bool pretty, int depth)
{
  switch (obj->type)
    {
    case MSGPACK_OBJECT_NIL:
      fputs ("null", out);
      break;
    case MSGPACK_OBJECT_BOOLEAN:
      fputs (obj->via.boolean ? "true" : "false", out);
      break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
      fprintf (out, "%" PRIu64, obj->via.u64);
      break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
      fprintf (out, "%" PRId64, obj->via.i64);
      break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
      if (isfinite (obj->via.f64))
        fprintf (out, "%.17g", obj->via.f64);
      else
        fputs ("null", out);
      break;
    case MSGPACK_OBJECT_STR:
      s_print_string (out, obj->via.str.ptr, obj->via.str.size);
      break;
    case MSGPACK_OBJECT_BIN:
      s_print_base64 (out, (const unsigned char *) obj->via.bin.ptr, obj->via.bin.size);
      break;
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP:
      s_print_container (out, obj, pretty, depth);
      break;
    default:
      fputs ("null", out);
      break;
    }
}

int
zcd_json_print (FILE *out, const msgpack_object *obj, bool pretty)
{
  s_print (out, obj, pretty, 0);
  return ferror (out) ? -1 : 0;
}
