/* The runtime's --log-format json output: one flat JSON object per line,
 * {"level":"error","msg":"...","time":"..."} (runc, logrus) or
 * {"msg": "...", "level": "error", "time": "..."} (crun).  The shim links no
 * JSON library (it is multiplied by the number of processes), so this reads
 * exactly that shape: string values, other scalars skipped, and a line with
 * anything nested or malformed is ignored. */
#include <stdbool.h>
#include <string.h>

#include "shim/shim.h"

#define FIELD_MAX 2048

typedef struct
{
  char *buf;
  size_t cap, len;
} s_text_t;

static void
s_put (s_text_t *t, char c)
{
  if (t->len + 1 < t->cap)
    t->buf[t->len++] = c;
}

static const char *
s_skip_ws (const char *p, const char *end)
{
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
    p++;
  return p;
}

static int
s_hex (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* \uXXXX as UTF-8 (surrogate pairs come out as two replacement-free
 * three-byte sequences: good enough for an error message). */
static const char *
s_unicode_escape (const char *p, const char *end, s_text_t *out)
{
  if (end - p < 4)
    return NULL;
  unsigned cp = 0;
  for (int i = 0; i < 4; i++)
    {
      int h = s_hex (p[i]);
      if (h < 0)
        return NULL;
      cp = cp << 4 | (unsigned) h;
    }
  if (cp < 0x80)
    s_put (out, (char) cp);
  else if (cp < 0x800)
    {
      s_put (out, (char) (0xc0 | cp >> 6));
      s_put (out, (char) (0x80 | (cp & 0x3f)));
    }
  else
    {
      s_put (out, (char) (0xe0 | cp >> 12));
      s_put (out, (char) (0x80 | ((cp >> 6) & 0x3f)));
      s_put (out, (char) (0x80 | (cp & 0x3f)));
    }
  return p + 4;
}

/* p at the opening quote; returns the position after the closing one. */
static const char *
s_string (const char *p, const char *end, s_text_t *out)
{
  if (p >= end || *p != '"')
    return NULL;
  for (p++; p < end; p++)
    {
      if (*p == '"')
        return p + 1;
      if (*p != '\\')
        {
          s_put (out, *p);
          continue;
        }
      if (++p >= end)
        return NULL;
      switch (*p)
        {
        case 'n': s_put (out, '\n'); break;
        case 't': s_put (out, '\t'); break;
        case 'r': s_put (out, '\r'); break;
        case 'b': s_put (out, '\b'); break;
        case 'f': s_put (out, '\f'); break;
        case 'u':
          p = s_unicode_escape (p + 1, end, out);
          if (p == NULL)
            return NULL;
          p--;
          break;
        default: s_put (out, *p); break;
        }
    }
  return NULL;
}

/* Reads one line's level and msg; false when the line is not the shape. */
static bool
s_line_fields (const char *p, const char *end, char *level, char *msg)
{
  level[0] = msg[0] = '\0';
  p = s_skip_ws (p, end);
  if (p >= end || *p++ != '{')
    return false;
  for (;;)
    {
      char key[16];
      s_text_t k = { key, sizeof key, 0 };
      p = s_string (s_skip_ws (p, end), end, &k);
      if (p == NULL)
        return false;
      key[k.len] = '\0';
      p = s_skip_ws (p, end);
      if (p >= end || *p++ != ':')
        return false;
      p = s_skip_ws (p, end);
      if (p < end && *p == '"')
        {
          char scratch[1];
          bool is_level = strcmp (key, "level") == 0, is_msg = strcmp (key, "msg") == 0;
          s_text_t v = { is_level ? level : is_msg ? msg : scratch,
                         is_level ? 16 : is_msg ? FIELD_MAX : sizeof scratch, 0 };
          p = s_string (p, end, &v);
          if (p == NULL)
            return false;
          v.buf[v.len] = '\0';
        }
      else
        for (; p < end && *p != ',' && *p != '}'; p++)
          if (*p == '{' || *p == '[' || *p == '"')
            return false;
      p = s_skip_ws (p, end);
      if (p < end && *p == ',')
        {
          p++;
          continue;
        }
      return p < end && *p == '}';
    }
}

static bool
s_is_error_level (const char *level)
{
  return strcmp (level, "error") == 0 || strcmp (level, "fatal") == 0
         || strcmp (level, "panic") == 0;
}

size_t
shim_runtime_log_errors (const char *text, size_t len, char *out, size_t cap)
{
  if (cap == 0)
    return 0;
  size_t found = 0, used = strlen (out);
  const char *end = text + len;
  char level[16], msg[FIELD_MAX];
  for (const char *line = text; line < end;)
    {
      const char *nl = memchr (line, '\n', (size_t) (end - line));
      const char *line_end = nl ? nl : end;
      if (s_line_fields (line, line_end, level, msg) && s_is_error_level (level) && msg[0])
        {
          const char *sep = used > 0 ? "; " : "";
          size_t need = strlen (sep) + strlen (msg);
          if (used + need < cap)
            {
              memcpy (out + used, sep, strlen (sep));
              memcpy (out + used + strlen (sep), msg, strlen (msg));
              used += need;
              out[used] = '\0';
            }
          found++;
        }
      line = line_end + 1;
    }
  return found;
}
