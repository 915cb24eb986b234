/* The supervisor's Prometheus side (docs/metrics.md): the `metrics` op with
 * format "prometheus" and `GET /metrics` of `zcd --metrics-listen` are one
 * path, a scrape, whose text comes from one function.
 *
 * A scrape asks the stats actor (`collect`, with `oom_kills`) for the
 * cgroup numbers of the containers it may show, the same readers as the
 * `stats` op, and writes the text when the answer comes back: the loop
 * never waits.  Daemon-wide counters are read at that moment from the
 * supervisor, the edge, the event log and the actor system; the shims'
 * memory from /proc and each process's `log-dropped` file from its state
 * directory.
 *
 * Files: metrics_prom.c (scrapes, the daemon's families),
 * metrics_prom_containers.c (per-container families, shims). */
#ifndef ZCD_METRICS_PROM_H
#define ZCD_METRICS_PROM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/amsg_gen.h"
#include "core/caller.h"
#include "core/edge.h"
#include "core/err.h"
#include "core/metrics.h"

typedef struct supervisor supervisor_t;
typedef struct metrics_prom metrics_prom_t;

metrics_prom_t *metrics_prom_new (void);
/* Answers what waits (HTTP 503; parked requests are the edge's) and stops
 * the HTTP server. */
void metrics_prom_destroy (metrics_prom_t **self);

/* What the supervisor counts for the text as it happens. */
void metrics_prom_count_event (metrics_prom_t *self, const char *type);
void metrics_prom_start_latency (metrics_prom_t *self, uint64_t ns);

/* The `metrics` op with format "prometheus": parked until the text is
 * written. */
void metrics_prom_op (supervisor_t *sup, edge_request_t *req);
/* A `reply` to the supervisor: when it answers a scrape's `collect`, the
 * text is written and sent, and true is returned (the reply is taken). */
bool metrics_prom_on_reply (supervisor_t *sup, const amsg_reply_t *m);
/* Serve GET /metrics on listen_fd (a bound, listening TCP socket, taken
 * also on failure). */
int metrics_prom_serve (supervisor_t *sup, int listen_fd, zcd_error_t **err);

/* metrics_prom_containers.c */
/* The per-container families of the containers in `stats` (the stats
 * actor's {timestamp, stats, oom_kills} map), which the caller may see;
 * then the shims of every container. */
void metrics_prom_put_containers (supervisor_t *sup, metrics_text_t *t, const zcd_caller_t *caller,
                                  const msgpack_object *stats);

#endif
