/* `zcd --metrics-listen ADDR:PORT`: GET /metrics over HTTP, with
 * libmicrohttpd driven by the daemon's one loop (docs/metrics.md).
 *
 * No thread of MHD's: it runs in external epoll mode, its epoll fd is one
 * more fd of the loop and its timeout one loop timer, and MHD_run does
 * only non-blocking work.  A GET /metrics is suspended
 * (MHD_suspend_connection) while its text is made elsewhere in the loop,
 * and resumed by metrics_http_answer.
 *
 * Hostile clients are bounded: METRICS_HTTP_MAX_CONNECTIONS in all and
 * METRICS_HTTP_MAX_PER_IP from one address (more are closed at once), an
 * idle or slow connection is closed after METRICS_HTTP_TIMEOUT_S,
 * METRICS_HTTP_CONN_MEMORY bytes of request per connection (a longer
 * request line or header is refused), a request with a body is refused,
 * at most METRICS_HTTP_MAX_WAITING scrapes wait for their text at once
 * (503 past that), and one that waits METRICS_HTTP_ANSWER_MS gets 503;
 * answers being sent hold at most METRICS_HTTP_SENDING_BYTES in all
 * (clients that read slowly or never: 503 past that, but one answer is
 * always let through).
 * Another path is 404, another method than GET or HEAD 405. */
#ifndef ZCD_METRICS_HTTP_H
#define ZCD_METRICS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/loop.h"
#include "core/metrics.h"

#define METRICS_HTTP_MAX_CONNECTIONS 128
#define METRICS_HTTP_MAX_PER_IP 64
#define METRICS_HTTP_TIMEOUT_S 5
#define METRICS_HTTP_CONN_MEMORY (16 * 1024)
#define METRICS_HTTP_MAX_WAITING 16
#define METRICS_HTTP_ANSWER_MS 10000
#define METRICS_HTTP_SENDING_BYTES (32u << 20)

typedef struct metrics_http metrics_http_t;

/* A GET /metrics waits for its text: answer `id` with metrics_http_answer.
 * Called from a loop timer, never from inside MHD. */
typedef void (*metrics_http_fn) (void *arg, uint64_t id);

/* "ADDR:PORT", ":PORT" or "PORT" (ADDR 127.0.0.1), ADDR a numeric IPv4
 * address or a bracketed IPv6 one ("[::1]:9100"); PORT 1 to 65535.  A
 * socket bound to it and listening (non-blocking, close-on-exec), or -1
 * with *err saying what is wrong with the text or the bind. */
int metrics_http_listen (const char *text, zcd_error_t **err);
/* Only the syntax of the text (no socket): 0 or -1 with *err. */
int metrics_http_check_listen (const char *text, zcd_error_t **err);

/* Serve on listen_fd (taken, also on failure). */
metrics_http_t *metrics_http_new (loop_t *loop, int listen_fd, metrics_http_fn fn, void *arg,
                                  zcd_error_t **err);
/* Scrapes still waiting get 503; then every connection is closed. */
void metrics_http_destroy (metrics_http_t **self);

/* The answer to scrape `id`: status 200 with the exposition text, or an
 * error status with a line saying why.  text (malloc'ed) is taken; an id
 * that is no longer waiting (answered, timed out) just frees it. */
void metrics_http_answer (metrics_http_t *self, uint64_t id, unsigned status, char *text,
                          size_t len);

/* Its own families: responses by status code, connections open. */
void metrics_http_put (const metrics_http_t *self, metrics_text_t *t);

#endif
