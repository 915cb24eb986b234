/* Prometheus text exposition (format 0.0.4): fixed-bucket histograms the
 * daemon's parts fill as things happen, and the writer that turns counters,
 * gauges and histograms into the text the `metrics` op (format
 * "prometheus") and `zcd --metrics-listen` serve (docs/metrics.md).
 *
 * Every histogram uses the same bucket ladder, in seconds, from 100 us to
 * 60 s: wide enough for a request answered from memory, an fdatasync and a
 * container start alike, and one ladder keeps the families comparable.
 * Observations are in nanoseconds (zcd_mono_ns differences): counting is
 * an array increment, nothing is allocated. */
#ifndef ZCD_METRICS_H
#define ZCD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_BUCKETS 18

typedef struct metrics_hist
{
  uint64_t buckets[METRICS_BUCKETS]; /* per bucket, not cumulative */
  uint64_t count;                    /* all observations, those past the last bound too */
  uint64_t sum_ns;
} metrics_hist_t;

void metrics_hist_observe (metrics_hist_t *h, uint64_t ns);

/* A text being written; grows as needed.  Out of memory, it stops growing
 * and metrics_text_take returns NULL. */
typedef struct metrics_text
{
  char *buf;
  size_t len, cap;
  bool failed;
} metrics_text_t;

typedef struct metrics_label
{
  const char *name;  /* [a-zA-Z_][a-zA-Z0-9_]* (ours, not checked) */
  const char *value; /* any UTF-8: escaped as the format wants */
} metrics_label_t;

void metrics_text_init (metrics_text_t *t);
/* The NUL-terminated text (the caller frees it) and its length; the
 * writer is empty again.  NULL when memory ran out on the way. */
char *metrics_text_take (metrics_text_t *t, size_t *len);
void metrics_text_fini (metrics_text_t *t);

/* The # HELP and # TYPE lines that start a family: every sample of the
 * family follows them, together.  type: "counter", "gauge", "histogram". */
void metrics_family (metrics_text_t *t, const char *name, const char *type, const char *help);
/* One sample: name{labels} value.  n_labels may be 0 (labels NULL). */
void metrics_put_u64 (metrics_text_t *t, const char *name, const metrics_label_t *labels,
                      size_t n_labels, uint64_t value);
/* The same for a duration kept in ns, written exactly in seconds. */
void metrics_put_seconds (metrics_text_t *t, const char *name, const metrics_label_t *labels,
                          size_t n_labels, uint64_t ns);
/* A histogram's samples: name_bucket{labels,le} (cumulative, +Inf last),
 * name_sum (seconds) and name_count. */
void metrics_put_hist (metrics_text_t *t, const char *name, const metrics_label_t *labels,
                       size_t n_labels, const metrics_hist_t *h);
/* A family of one unlabelled sample, header included. */
void metrics_put_one (metrics_text_t *t, const char *name, const char *type, const char *help,
                      uint64_t value);

#endif
