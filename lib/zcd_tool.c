/* Helpers of zcd's command-line tools (lib/zcd_tool.h). */
#include "lib/zcd_tool.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

zcd_client_t *
zcd_tool_client (const char *address, int timeout_ms)
{
  zcd_client_t *client = zcd_client_new (address);
  if (client)
    zcd_client_set_timeout (client, timeout_ms);
  return client;
}

char *
zcd_tool_absolute (const char *path)
{
  char *abs = realpath (path, NULL);
  if (abs)
    return abs;
  if (path[0] == '/')
    return strdup (path);
  char cwd[PATH_MAX];
  char *joined = NULL;
  if (getcwd (cwd, sizeof cwd) == NULL || asprintf (&joined, "%s/%s", cwd, path) < 0)
    return NULL;
  return joined;
}

int
zcd_tool_parse_signal (const char *s)
{
  if (s[0] >= '0' && s[0] <= '9')
    {
      char *end = NULL;
      errno = 0;
      long n = strtol (s, &end, 10);
      return errno == 0 && *end == '\0' && n >= 1 && n <= 64 ? (int)n : 0;
    }
  if (strncasecmp (s, "SIG", 3) == 0)
    s += 3;
  for (int sig = 1; sig < NSIG && sig <= 64; sig++)
    {
      const char *name = sigabbrev_np (sig);
      if (name && strcasecmp (name, s) == 0)
        return sig;
    }
  return 0;
}

uint64_t
zcd_tool_init_pid (const msgpack_object *container)
{
  const msgpack_object *procs = container ? zcd_obj_get (container, "processes") : NULL;
  for (uint32_t i = 0; procs && procs->type == MSGPACK_OBJECT_ARRAY && i < procs->via.array.size;
       i++)
    {
      const msgpack_object *p = &procs->via.array.ptr[i];
      uint64_t pid = 0;
      if (zcd_obj_str_eq (zcd_obj_get (p, "pid"), "init")
          && zcd_obj_uint (zcd_obj_get (p, "system_pid"), &pid))
        return pid;
    }
  return 0;
}
