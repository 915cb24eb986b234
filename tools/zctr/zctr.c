/* zctr: the command-line client of zcd, in the manner of containerd's ctr. */
#include "tools/zctr/zctr.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int
zctr_error (int code, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  fputs ("zctr: ", stderr);
  vfprintf (stderr, fmt, ap);
  fputc ('\n', stderr);
  va_end (ap);
  return code;
}

int
zctr_usage (const zctr_t *z, bool needs_on, const char *text)
{
  return zctr_error (ZCTR_EXIT_USAGE, "usage: zctr %s%s%s", z->nodes ? "--node FILE " : "",
                     z->nodes && needs_on ? "--on NAME " : "", text);
}

int
zctr_common_option (zctr_t *z, int opt, const char *arg, bool *handled)
{
  *handled = true;
  switch (opt)
    {
    case ZCTR_OPT_ADDRESS:
      z->address = arg;
      return 0;
    case ZCTR_OPT_EVENTS_ADDRESS:
      z->events_address = arg;
      return 0;
    case ZCTR_OPT_JSON:
      z->json = true;
      return 0;
    case ZCTR_OPT_NODE:
      z->node_file = arg;
      return 0;
    case ZCTR_OPT_CLIENT_CERT:
      z->client_cert = arg;
      return 0;
    case ZCTR_OPT_ON:
      return zctr_node_on (z, arg);
    case ZCTR_OPT_TIMEOUT:
      {
        char *end = NULL;
        errno = 0;
        long ms = strtol (arg, &end, 10);
        if (errno || end == arg || *end || ms < -1 || ms > 86400000)
          return zctr_error (ZCTR_EXIT_USAGE, "--timeout: not a number of milliseconds: %s", arg);
        z->timeout_ms = (int) ms;
        if (z->client)
          zcd_client_set_timeout (z->client, z->timeout_ms);
        return 0;
      }
    case 'h':
      zctr_help (stdout, z->help_cmd, z->help_sub);
      exit (0);
    default:
      *handled = false;
      zctr_help (stderr, z->help_cmd, z->help_sub);
      return ZCTR_EXIT_USAGE;
    }
}

zcd_client_t *
zctr_client (zctr_t *z)
{
  if (z->client)
    return z->client;
  z->client = zcd_tool_client (z->address, z->timeout_ms);
  if (z->client == NULL)
    zctr_error (ZCTR_EXIT_FAIL, "cannot use endpoint %s: %s", z->address ? z->address : "(default)",
                strerror (errno));
  return z->client;
}

int
zctr_fail_request (zctr_t *z, const char *what)
{
  return zctr_error (ZCTR_EXIT_FAIL, "%s: %s", what,
                     z->client ? zcd_client_last_error (z->client) : "no client");
}

void
zctr_print_json (const msgpack_object *obj)
{
  zcd_json_print (stdout, obj, true);
  fputc ('\n', stdout);
}

void
zctr_print_flat (const msgpack_object *obj, const char *prefix)
{
  if (obj->type == MSGPACK_OBJECT_MAP)
    {
      for (uint32_t i = 0; i < obj->via.map.size; i++)
        {
          const msgpack_object *key = &obj->via.map.ptr[i].key;
          if (key->type != MSGPACK_OBJECT_STR)
            continue;
          if (!*prefix && (zcd_obj_str_eq (key, "rid") || zcd_obj_str_eq (key, "ok")))
            continue;
          char *path = NULL;
          if (asprintf (&path, "%s%s%.*s", prefix, *prefix ? "." : "", (int) key->via.str.size,
                        key->via.str.ptr)
              < 0)
            return;
          zctr_print_flat (&obj->via.map.ptr[i].val, path);
          free (path);
        }
      return;
    }
  printf ("%s: ", prefix);
  if (obj->type == MSGPACK_OBJECT_STR)
    printf ("%.*s\n", (int) obj->via.str.size, obj->via.str.ptr);
  else
    {
      zcd_json_print (stdout, obj, false);
      fputc ('\n', stdout);
    }
}

bool
zctr_parse_u64 (const char *s, uint64_t *out)
{
  if (s == NULL || *s < '0' || *s > '9')
    return false;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull (s, &end, 10);
  if (errno || *end)
    return false;
  *out = v;
  return true;
}

bool
zctr_parse_bytes (const char *s, uint64_t *out)
{
  if (s == NULL || *s < '0' || *s > '9')
    return false;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull (s, &end, 10);
  if (errno)
    return false;
  int shift = 0;
  if (*end && strchr ("kK", *end))
    shift = 10;
  else if (*end && strchr ("mM", *end))
    shift = 20;
  else if (*end && strchr ("gG", *end))
    shift = 30;
  else if (*end)
    return false;
  if (shift && end[1] != '\0' && strcasecmp (end + 1, "b") != 0)
    return false;
  if (shift && v > (UINT64_MAX >> shift))
    return false;
  *out = (uint64_t) v << shift;
  return true;
}

static int
s_cmd_version (zctr_t *z)
{
  zcd_client_t *cli = zctr_client (z);
  zcd_reply_t *reply = NULL;
  if (cli == NULL)
    return ZCTR_EXIT_FAIL;
  if (zcd_client_version (cli, &reply) < 0)
    {
      zcd_reply_destroy (&reply);
      return zctr_fail_request (z, "version");
    }
  if (z->json)
    zctr_print_json (zcd_reply_root (reply));
  else
    {
      uint64_t major = 0, minor = 0, patch = 0, protocol = 0;
      zcd_reply_get_uint (reply, "major", &major);
      zcd_reply_get_uint (reply, "minor", &minor);
      zcd_reply_get_uint (reply, "patch", &patch);
      zcd_reply_get_uint (reply, "protocol", &protocol);
      char *revision = zcd_reply_get_strdup (reply, "revision");
      printf ("zcd %llu.%llu.%llu (revision %s), protocol %llu\n", (unsigned long long) major,
              (unsigned long long) minor, (unsigned long long) patch, revision ? revision : "?",
              (unsigned long long) protocol);
      free (revision);
    }
  zcd_reply_destroy (&reply);
  return 0;
}

static int
s_cmd_metrics (zctr_t *z)
{
  zcd_client_t *cli = zctr_client (z);
  zcd_reply_t *reply = NULL;
  if (cli == NULL)
    return ZCTR_EXIT_FAIL;
  if (zcd_client_metrics (cli, &reply) < 0)
    {
      zcd_reply_destroy (&reply);
      return zctr_fail_request (z, "metrics");
    }
  if (z->json)
    zctr_print_json (zcd_reply_root (reply));
  else
    zctr_print_flat (zcd_reply_root (reply), "");
  zcd_reply_destroy (&reply);
  return 0;
}

int
zctr_getopt (zctr_t *z, int argc, char **argv, const struct option *local, zctr_local_opt_fn *on_opt,
             void *ctx)
{
  struct option all[40];
  static const struct option global[] = { ZCTR_GLOBAL_OPTIONS };
  size_t n = 0;
  for (size_t i = 0; local && local[i].name; i++)
    all[n++] = local[i];
  for (size_t i = 0; i < sizeof global / sizeof global[0]; i++)
    all[n++] = global[i];
  memset (&all[n], 0, sizeof all[n]);
  optind = 0;
  int opt;
  while ((opt = getopt_long (argc, argv, "h", all, NULL)) != -1)
    {
      if (opt >= ZCTR_OPT_FIRST_LOCAL)
        {
          int rc = on_opt (ctx, opt, optarg);
          if (rc)
            return rc;
          continue;
        }
      bool handled;
      int rc = zctr_common_option (z, opt, optarg, &handled);
      if (rc)
        return rc;
    }
  return 0;
}

/* Parse the options of a command that has none of its own. */
static int
s_no_options (zctr_t *z, int argc, char **argv, int max_args)
{
  int rc = zctr_getopt (z, argc, argv, NULL, NULL, NULL);
  if (rc)
    return rc;
  if (argc - optind > max_args)
    return zctr_error (ZCTR_EXIT_USAGE, "%s: too many arguments", argv[0]);
  return 0;
}

/* --node given anywhere before a "--" (global options may follow the
 * command) sends the command to the fan-out client. */
static bool
s_wants_nodes (const zctr_t *z, int argc, char **argv)
{
  if (z->node_file)
    return true;
  for (int i = 1; i < argc && strcmp (argv[i], "--") != 0; i++)
    if (strcmp (argv[i], "--node") == 0 || strncmp (argv[i], "--node=", 7) == 0)
      return true;
  return false;
}

static int
s_dispatch (zctr_t *z, int argc, char **argv)
{
  const char *cmd = argv[0];
  int rc;
  z->help_cmd = cmd;
  z->nodes = s_wants_nodes (z, argc, argv);
  if (z->nodes)
    return zctr_cmd_node (z, argc, argv);
  if (strcmp (cmd, "version") == 0 || strcmp (cmd, "metrics") == 0)
    {
      if ((rc = s_no_options (z, argc, argv, 0)))
        return rc;
      return cmd[0] == 'v' ? s_cmd_version (z) : s_cmd_metrics (z);
    }
  if (strcmp (cmd, "state") == 0)
    return zctr_cmd_state (z, argc, argv);
  if (strcmp (cmd, "stats") == 0)
    return zctr_cmd_stats (z, argc, argv);
  if (strcmp (cmd, "containers") == 0 || strcmp (cmd, "c") == 0)
    return zctr_cmd_containers (z, argc, argv);
  if (strcmp (cmd, "events") == 0)
    return zctr_cmd_events (z, argc, argv);
  if (strcmp (cmd, "checkpoints") == 0)
    return zctr_cmd_checkpoints (z, argc, argv);
  if (strcmp (cmd, "spec") == 0)
    return zctr_cmd_spec (z, argc, argv);
  if (strcmp (cmd, "help") == 0)
    {
      if (argc > 1 && zctr_is_help (argv[1]))
        zctr_help (stdout, "help", NULL);
      else
        zctr_help (stdout, argc > 1 ? argv[1] : NULL, argc > 2 ? argv[2] : NULL);
      return 0;
    }
  zctr_help (stderr, NULL, NULL);
  return zctr_error (ZCTR_EXIT_USAGE, "unknown command: %s", cmd);
}

int
main (int argc, char **argv)
{
  zctr_t z = { .timeout_ms = ZCD_DEFAULT_TIMEOUT_MS };
  static const struct option longopts[] = { ZCTR_GLOBAL_OPTIONS, { NULL, 0, NULL, 0 } };
  int opt;
  /* '+': stop at the command, whose own options come after it */
  while ((opt = getopt_long (argc, argv, "+h", longopts, NULL)) != -1)
    {
      bool handled;
      int rc = zctr_common_option (&z, opt, optarg, &handled);
      if (rc)
        return rc;
    }
  if (optind >= argc)
    {
      zctr_help (stderr, NULL, NULL);
      return ZCTR_EXIT_USAGE;
    }
  /* A closed stdout (zctr events | head) must end us quietly, not kill us
   * in the middle of a write with SIGPIPE's default noise. */
  signal (SIGPIPE, SIG_IGN);
  int rc = s_dispatch (&z, argc - optind, argv + optind);
  if (fflush (stdout) != 0 && rc == 0)
    rc = ZCTR_EXIT_FAIL;
  zcd_client_destroy (&z.client);
  zctr_node_free (&z);
  return rc;
}
