/* Library-internal interfaces shared by libzcd's files; not installed. */
#ifndef ZCD_PRIVATE_H
#define ZCD_PRIVATE_H

#include "lib/zcd_client.h"

#include <stdarg.h>

/* The client's libzmq context, for the subscriber's SUB socket. */
void *zcd_client_context (zcd_client_t *self);
/* Record a local failure as the client's last error. */
void zcd_client_set_error (zcd_client_t *self, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
/* Milliseconds left until deadline_ms (monotonic), clamped at 0; -1 when
 * deadline_ms is -1 (no deadline). */
int zcd_ms_left (int64_t deadline_ms);
/* Monotonic deadline timeout_ms from now; -1 for timeout_ms < 0. */
int64_t zcd_deadline (int timeout_ms);

#endif
