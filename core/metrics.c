/* Prometheus histograms and text (see core/metrics.h). */
#include "core/metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds in ns, and the same as the `le` label writes them. */
static const uint64_t s_bounds_ns[METRICS_BUCKETS] = {
  100000,     250000,     500000,     1000000,     2500000,     5000000,
  10000000,   25000000,   50000000,   100000000,   250000000,   500000000,
  1000000000, 2500000000, 5000000000, 10000000000, 30000000000, 60000000000,
};
static const char *const s_bounds_le[METRICS_BUCKETS] = {
  "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
  "0.1",    "0.25",    "0.5",    "1",     "2.5",    "5",     "10",   "30",    "60",
};

void
metrics_hist_observe (metrics_hist_t *h, uint64_t ns)
{
  h->count++;
  h->sum_ns += ns;
  for (size_t i = 0; i < METRICS_BUCKETS; i++)
    if (ns <= s_bounds_ns[i])
      {
        h->buckets[i]++;
        return;
      }
}

/* ---- the text buffer ---- */

void
metrics_text_init (metrics_text_t *t)
{
  memset (t, 0, sizeof *t);
}

void
metrics_text_fini (metrics_text_t *t)
{
  free (t->buf);
  metrics_text_init (t);
}

char *
metrics_text_take (metrics_text_t *t, size_t *len)
{
  char *out = t->buf;
  *len = t->len;
  if (t->failed)
    {
      free (out);
      out = NULL;
      *len = 0;
    }
  else if (out == NULL)
    out = strdup (""); /* nothing written is still a text: the empty one */
  metrics_text_init (t);
  return out;
}

static bool
s_reserve (metrics_text_t *t, size_t more)
{
  if (t->failed)
    return false;
  if (t->len + more + 1 <= t->cap)
    return true;
  size_t cap = t->cap ? t->cap : 4096;
  while (cap < t->len + more + 1)
    cap *= 2;
  char *grown = realloc (t->buf, cap);
  if (grown == NULL)
    {
      t->failed = true;
      return false;
    }
  t->buf = grown;
  t->cap = cap;
  return true;
}

static void
s_append (metrics_text_t *t, const char *s, size_t n)
{
  if (!s_reserve (t, n))
    return;
  memcpy (t->buf + t->len, s, n);
  t->len += n;
  t->buf[t->len] = '\0';
}

static void
s_puts (metrics_text_t *t, const char *s)
{
  s_append (t, s, strlen (s));
}

static void __attribute__ ((format (printf, 2, 3)))
s_printf (metrics_text_t *t, const char *fmt, ...)
{
  char small[128];
  va_list ap;
  va_start (ap, fmt);
  int n = vsnprintf (small, sizeof small, fmt, ap);
  va_end (ap);
  if (n < 0)
    return;
  if ((size_t)n < sizeof small)
    {
      s_append (t, small, (size_t)n);
      return;
    }
  if (!s_reserve (t, (size_t)n))
    return;
  va_start (ap, fmt);
  vsnprintf (t->buf + t->len, (size_t)n + 1, fmt, ap);
  va_end (ap);
  t->len += (size_t)n;
}

/* The format's escapes: in a label value backslash, double quote and
 * newline; in HELP text backslash and newline.  Everything else passes as
 * it is (the text is UTF-8). */
static void
s_escaped (metrics_text_t *t, const char *s, bool quote)
{
  for (const char *p = s; *p; p++)
    {
      const char *rep = *p == '\\'           ? "\\\\"
                        : *p == '\n'         ? "\\n"
                        : quote && *p == '"' ? "\\\""
                                             : NULL;
      if (rep)
        s_puts (t, rep);
      else
        s_append (t, p, 1);
    }
}

/* ---- families and samples ---- */

void
metrics_family (metrics_text_t *t, const char *name, const char *type, const char *help)
{
  s_printf (t, "# HELP %s ", name);
  s_escaped (t, help, false);
  s_printf (t, "\n# TYPE %s %s\n", name, type);
}

/* name{a="x",b="y"[,le="..."]} without the value. */
static void
s_series (metrics_text_t *t, const char *name, const char *suffix, const metrics_label_t *labels,
          size_t n_labels, const char *le)
{
  s_puts (t, name);
  if (suffix)
    s_puts (t, suffix);
  if (n_labels == 0 && le == NULL)
    return;
  s_puts (t, "{");
  for (size_t i = 0; i < n_labels; i++)
    {
      s_printf (t, "%s%s=\"", i ? "," : "", labels[i].name);
      s_escaped (t, labels[i].value ? labels[i].value : "", true);
      s_puts (t, "\"");
    }
  if (le)
    s_printf (t, "%sle=\"%s\"", n_labels ? "," : "", le);
  s_puts (t, "}");
}

void
metrics_put_u64 (metrics_text_t *t, const char *name, const metrics_label_t *labels,
                 size_t n_labels, uint64_t value)
{
  s_series (t, name, NULL, labels, n_labels, NULL);
  s_printf (t, " %" PRIu64 "\n", value);
}

void
metrics_put_seconds (metrics_text_t *t, const char *name, const metrics_label_t *labels,
                     size_t n_labels, uint64_t ns)
{
  s_series (t, name, NULL, labels, n_labels, NULL);
  /* Exact: no float rounds a counter of ns. */
  s_printf (t, " %" PRIu64 ".%09" PRIu64 "\n", ns / 1000000000u, ns % 1000000000u);
}

void
metrics_put_hist (metrics_text_t *t, const char *name, const metrics_label_t *labels,
                  size_t n_labels, const metrics_hist_t *h)
{
  uint64_t cumulative = 0;
  for (size_t i = 0; i < METRICS_BUCKETS; i++)
    {
      cumulative += h->buckets[i];
      s_series (t, name, "_bucket", labels, n_labels, s_bounds_le[i]);
      s_printf (t, " %" PRIu64 "\n", cumulative);
    }
  s_series (t, name, "_bucket", labels, n_labels, "+Inf");
  s_printf (t, " %" PRIu64 "\n", h->count);
  s_series (t, name, "_sum", labels, n_labels, NULL);
  s_printf (t, " %" PRIu64 ".%09" PRIu64 "\n", h->sum_ns / 1000000000u, h->sum_ns % 1000000000u);
  s_series (t, name, "_count", labels, n_labels, NULL);
  s_printf (t, " %" PRIu64 "\n", h->count);
}

void
metrics_put_one (metrics_text_t *t, const char *name, const char *type, const char *help,
                 uint64_t value)
{
  metrics_family (t, name, type, help);
  metrics_put_u64 (t, name, NULL, 0, value);
}
