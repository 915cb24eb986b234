#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static zcd_log_level_t s_min_level = ZCD_LOG_INFO;
static int s_json;
static const char *const s_level_names[] = { "debug", "info", "warn", "error" };

int
zcd_log_set_level (const char *name)
{
  for (int i = 0; i < 4; i++)
    if (strcmp (name, s_level_names[i]) == 0)
      {
        s_min_level = (zcd_log_level_t) i;
        return 0;
      }
  return -1;
}

int
zcd_log_set_format (const char *name)
{
  if (strcmp (name, "text") == 0)
    s_json = 0;
  else if (strcmp (name, "json") == 0)
    s_json = 1;
  else
    return -1;
  return 0;
}

void
zcd_log_set_min (zcd_log_level_t level)
{
  s_min_level = level;
}

int
zcd_log_enabled (zcd_log_level_t level)
{
  return level >= s_min_level;
}

static void
s_json_escape (FILE *out, const char *text)
{
  for (const unsigned char *p = (const unsigned char *) text; *p; p++)
    {
      if (*p == '"' || *p == '\\')
        fprintf (out, "\\%c", *p);
      else if (*p < 0x20)
        fprintf (out, "\\u%04x", *p);
      else
        fputc (*p, out);
    }
}

void
zcd_log (zcd_log_level_t level, const char *fmt, ...)
{
  if (level < s_min_level)
    return;
  char text[2048];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (text, sizeof text, fmt, ap);
  va_end (ap);
  struct timespec now;
  clock_gettime (CLOCK_REALTIME, &now);
  struct tm tm;
  gmtime_r (&now.tv_sec, &tm);
  char stamp[32];
  strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  if (s_json)
    {
      fprintf (stderr, "{\"ts\":\"%s.%06ldZ\",\"level\":\"%s\",\"msg\":\"", stamp,
               now.tv_nsec / 1000, s_level_names[level]);
      s_json_escape (stderr, text);
      fputs ("\"}\n", stderr);
    }
  else
    fprintf (stderr, "%s.%06ldZ %-5s %s\n", stamp, now.tv_nsec / 1000, s_level_names[level], text);
}
