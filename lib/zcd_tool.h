/* Helpers that zcd's own command-line tools (zctr, zcd-oci) share; in
 * libzcd's archive, not part of its installed interface. */
#ifndef ZCD_TOOL_H
#define ZCD_TOOL_H

#include "lib/zcd_client.h"

/* A client of address (NULL = $ZCD_ADDRESS or the default) using
 * timeout_ms; NULL with errno (a malformed endpoint). */
zcd_client_t *zcd_tool_client (const char *address, int timeout_ms);
/* path made absolute against our cwd (the daemon resolves nothing against
 * it); malloc'd, NULL if that fails. */
char *zcd_tool_absolute (const char *path);
/* Signal by number (1-64) or name (KILL, SIGKILL, kill); 0 if unknown. */
int zcd_tool_parse_signal (const char *s);
/* The host pid of a Container's init process (a `state` reply's map), or 0. */
uint64_t zcd_tool_init_pid (const msgpack_object *container);

#endif
