/* Numbers for people: sizes in powers of 1024 (the unit cgroups count in),
 * durations in the two largest units (3m12s, 2h05m), times in UTC. */
#include "tools/zctr/zctr.h"

#include <stdio.h>
#include <time.h>

const char *
zctr_fmt_bytes (zctr_fmt_t buf, uint64_t n)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  if (n < 1024)
    {
      snprintf (buf, ZCTR_FMT_LEN, "%lluB", (unsigned long long)n);
      return buf;
    }
  double v = (double)n;
  size_t u = 0;
  while (v >= 1024 && u + 1 < sizeof units / sizeof units[0])
    v /= 1024, u++;
  /* three significant digits, whatever the unit */
  int decimals = v < 9.995 ? 2 : v < 99.95 ? 1 : 0;
  snprintf (buf, ZCTR_FMT_LEN, "%.*f%s", decimals, v, units[u]);
  return buf;
}

const char *
zctr_fmt_duration (zctr_fmt_t buf, uint64_t secs)
{
  uint64_t d = secs / 86400, h = secs / 3600 % 24, m = secs / 60 % 60, s = secs % 60;
  if (d)
    snprintf (buf, ZCTR_FMT_LEN, "%llud%02lluh", (unsigned long long)d, (unsigned long long)h);
  else if (h)
    snprintf (buf, ZCTR_FMT_LEN, "%lluh%02llum", (unsigned long long)h, (unsigned long long)m);
  else if (m)
    snprintf (buf, ZCTR_FMT_LEN, "%llum%02llus", (unsigned long long)m, (unsigned long long)s);
  else
    snprintf (buf, ZCTR_FMT_LEN, "%llus", (unsigned long long)s);
  return buf;
}

const char *
zctr_fmt_cpu_time (zctr_fmt_t buf, uint64_t ns)
{
  /* seconds matter under a minute (a short job's whole cost) */
  if (ns < 60ULL * 1000000000ULL)
    {
      snprintf (buf, ZCTR_FMT_LEN, "%.2fs", (double)ns / 1e9);
      return buf;
    }
  return zctr_fmt_duration (buf, ns / 1000000000ULL);
}

const char *
zctr_fmt_percent (zctr_fmt_t buf, double pct)
{
  if (pct < 0)
    snprintf (buf, ZCTR_FMT_LEN, "-");
  else
    snprintf (buf, ZCTR_FMT_LEN, "%.1f%%", pct);
  return buf;
}

const char *
zctr_fmt_time (zctr_fmt_t buf, int64_t ns, bool millis)
{
  time_t secs = (time_t)(ns / 1000000000);
  struct tm tm;
  char base[24];
  if (ns <= 0 || gmtime_r (&secs, &tm) == NULL
      || strftime (base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
    {
      snprintf (buf, ZCTR_FMT_LEN, "-");
      return buf;
    }
  if (millis)
    snprintf (buf, ZCTR_FMT_LEN, "%s.%03dZ", base, (int)(ns % 1000000000 / 1000000));
  else
    snprintf (buf, ZCTR_FMT_LEN, "%sZ", base);
  return buf;
}

int64_t
zctr_now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

const char *
zctr_fmt_age (zctr_fmt_t buf, int64_t since_ns)
{
  int64_t now = zctr_now_ns ();
  if (since_ns <= 0)
    {
      snprintf (buf, ZCTR_FMT_LEN, "-");
      return buf;
    }
  /* a clock stepped back: "0s", not a huge unsigned age */
  return zctr_fmt_duration (buf, now > since_ns ? (uint64_t)(now - since_ns) / 1000000000ULL : 0);
}

bool
zctr_limit_set (uint64_t limit)
{
  /* cgroup v1 says "no limit" with the largest page-aligned long
   * (0x7ffffffffffff000), v2 with "max", which the daemon reports as 0 */
  return limit > 0 && limit < (1ULL << 62);
}
