/* zcd-oci: runc's command line, served by zcd.  Global options, messages,
 * the daemon client and the small parsers the commands share. */
#include "tools/zcd-oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/version.h"

#define STR_(x) #x
#define STR(x) STR_ (x)
#define OCI_VERSION STR (ZCD_VERSION_MAJOR) "." STR (ZCD_VERSION_MINOR) "." STR (ZCD_VERSION_PATCH)

static const char s_usage[]
    = "usage: zcd-oci [GLOBAL OPTIONS] COMMAND [OPTIONS] ID\n"
      "\n"
      "A runc-compatible front end to the zcd daemon: containers run under zcd\n"
      "(and survive this command), driven through zcd's wire protocol.\n"
      "\n"
      "Commands:\n"
      "  run [-b|--bundle DIR] [--pid-file F] [-d|--detach] ID\n"
      "        create and start ID, relay its stdio, forward SIGTERM, SIGINT, SIGHUP,\n"
      "        SIGUSR1, SIGUSR2 to it, and exit with its status (128+N: killed by N);\n"
      "        a terminal asked for in config.json is relayed (our terminal goes raw);\n"
      "        --detach: return once it runs, its stdio on /dev/null\n"
      "  create [-b|--bundle DIR] [--pid-file F] ID\n"
      "        check the bundle and record ID (zcd creates and starts in one step);\n"
      "        no terminal (runc would need --console-socket)\n"
      "  start ID        start a recorded ID, detached (its stdio is /dev/null)\n"
      "  state ID        print ID's OCI state as JSON\n"
      "  kill [-a|--all] ID [SIGNAL]   SIGNAL: name or number, default TERM\n"
      "  delete [-f|--force] ID        --force kills a running ID first\n"
      "\n"
      "Global options:\n"
      "  --address EP          zcd's command endpoint ($ZCD_ADDRESS, default " ZCD_DEFAULT_ADDRESS
      ")\n"
      "  --events-address EP   its event endpoint ($ZCD_EVENTS_ADDRESS; default derived from\n"
      "                        an ipc address: ipc://DIR/zcd.sock -> ipc://DIR/events.sock)\n"
      "  --log FILE            append error and debug lines to FILE\n"
      "  --log-format text|json\n"
      "  --debug               debug lines (to --log, else stderr)\n"
      "  --root DIR, --rootless VALUE, --systemd-cgroup, --criu PATH\n"
      "                        accepted for runc compatibility and ignored (zcd keeps the\n"
      "                        state; records of created-only containers live in\n"
      "                        $ZCD_OCI_STATE_DIR, else /run/zcd-oci/<uid> for root,\n"
      "                        $XDG_RUNTIME_DIR/zcd-oci or /tmp/zcd-oci-<uid> for others)\n"
      "  -h, --help            this text\n"
      "  -v, --version         the version\n"
      "\n"
      "Errors print a message on stderr and exit 1.\n";

static void
s_log_line (oci_t *o, const char *level, const char *msg)
{
  if (o->log_path == NULL)
    return;
  int fd = open (o->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd < 0)
    return;
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  struct tm tm;
  char when[40] = "";
  gmtime_r (&ts.tv_sec, &tm);
  strftime (when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  char *line = NULL;
  int n;
  if (o->log_json)
    {
      json_t *obj = json_pack ("{s:s, s:s, s:s}", "level", level, "msg", msg, "time", when);
      char *text = obj ? json_dumps (obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
      n = text ? asprintf (&line, "%s\n", text) : -1;
      free (text);
      json_decref (obj);
    }
  else
    n = asprintf (&line, "time=\"%s\" level=%s msg=\"%s\"\n", when, level, msg);
  if (n > 0 && write (fd, line, (size_t)n) < 0)
    n = -1; /* nowhere left to say so */
  free (line);
  close (fd);
}

/* An error goes to stderr and the --log file; a debug line to the --log
 * file, or to stderr when there is none. */
static void
s_say (oci_t *o, bool debug, const char *fmt, va_list ap)
{
  char *msg = NULL;
  if (vasprintf (&msg, fmt, ap) < 0)
    msg = NULL;
  if (!debug || o->log_path == NULL)
    fprintf (stderr, "zcd-oci: %s%s\n", debug ? "debug: " : "", msg ? msg : fmt);
  s_log_line (o, debug ? "debug" : "error", msg ? msg : fmt);
  free (msg);
}

int
oci_error (oci_t *o, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  s_say (o, false, fmt, ap);
  va_end (ap);
  return OCI_EXIT_FAIL;
}

void
oci_debug (oci_t *o, const char *fmt, ...)
{
  if (!o->debug)
    return;
  va_list ap;
  va_start (ap, fmt);
  s_say (o, true, fmt, ap);
  va_end (ap);
}

zcd_client_t *
oci_client (oci_t *o)
{
  if (o->client)
    return o->client;
  o->client = zcd_tool_client (o->address, o->timeout_ms);
  if (o->client == NULL)
    oci_error (o, "cannot use endpoint %s: %s", o->address ? o->address : "(default)",
               strerror (errno));
  else
    oci_debug (o, "daemon at %s", zcd_client_endpoint (o->client));
  return o->client;
}

char *
oci_events_endpoint (oci_t *o)
{
  const char *given = o->events_address;
  if (given == NULL && (given = getenv ("ZCD_EVENTS_ADDRESS")) != NULL && *given == '\0')
    given = NULL;
  if (given)
    return strdup (given);
  const char *cmd = o->address;
  if (cmd == NULL && ((cmd = getenv ("ZCD_ADDRESS")) == NULL || *cmd == '\0'))
    cmd = ZCD_DEFAULT_ADDRESS;
  static const char suffix[] = "/zcd.sock";
  size_t len = strlen (cmd), slen = strlen (suffix);
  char *derived = NULL;
  if (strncmp (cmd, "ipc://", 6) == 0 && len > 6 + slen && strcmp (cmd + len - slen, suffix) == 0
      && asprintf (&derived, "%.*s/events.sock", (int)(len - slen), cmd) > 0)
    return derived;
  oci_error (o, "cannot derive the event endpoint from %s: give --events-address", cmd);
  return NULL;
}

bool
oci_valid_id (const char *id)
{
  size_t len = strlen (id);
  if (len == 0 || len > 64)
    return false;
  if (!((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= 'A' && id[0] <= 'Z')
        || (id[0] >= '0' && id[0] <= '9')))
    return false;
  for (size_t i = 0; i < len; i++)
    if (!strchr ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", id[i]))
      return false;
  return true;
}

const char *
oci_reply_code (const zcd_reply_t *reply)
{
  const char *code = reply ? zcd_reply_error_code (reply) : NULL;
  return code ? code : "";
}

int
oci_fail_request (oci_t *o, const char *what, const zcd_reply_t *reply)
{
  const char *code = oci_reply_code (reply);
  if (strcmp (code, "not_found") == 0)
    return oci_error (o, "container does not exist");
  if (strcmp (code, "already_exists") == 0)
    return oci_error (o, "container with given ID already exists");
  return oci_error (o, "%s: %s", what, o->client ? zcd_client_last_error (o->client) : "no client");
}

int
oci_write_pid_file (oci_t *o, const char *path, uint64_t pid)
{
  char *abs = zcd_tool_absolute (path);
  char *tmp = NULL;
  if (abs == NULL || asprintf (&tmp, "%s.XXXXXX", abs) < 0)
    {
      free (abs);
      return oci_error (o, "pid file %s: %s", path, strerror (ENOMEM));
    }
  int fd = mkstemp (tmp);
  int rc = 0;
  if (fd < 0)
    rc = oci_error (o, "pid file %s: %s", abs, strerror (errno));
  else
    {
      char text[32];
      int n = snprintf (text, sizeof text, "%llu", (unsigned long long)pid);
      /* runc's pid files are 0644: other users' tools read them */
      if (fchmod (fd, 0644) < 0 || write (fd, text, (size_t)n) != n || close (fd) < 0
          || rename (tmp, abs) < 0)
        {
          rc = oci_error (o, "pid file %s: %s", abs, strerror (errno));
          unlink (tmp);
        }
    }
  free (tmp);
  free (abs);
  return rc;
}

enum
{
  OPT_ROOT = 1000,
  OPT_LOG,
  OPT_LOG_FORMAT,
  OPT_DEBUG,
  OPT_SYSTEMD_CGROUP,
  OPT_ROOTLESS,
  OPT_CRIU,
  OPT_ADDRESS,
  OPT_EVENTS_ADDRESS,
};

/* 0 to go on, or an exit code (help and version exit 0 here). */
static int
s_global_option (oci_t *o, int opt, const char *arg, bool *done)
{
  switch (opt)
    {
    case OPT_LOG:
      o->log_path = arg;
      return 0;
    case OPT_LOG_FORMAT:
      if (strcmp (arg, "text") != 0 && strcmp (arg, "json") != 0)
        return oci_error (o, "invalid log-format: %s", arg);
      o->log_json = strcmp (arg, "json") == 0;
      return 0;
    case OPT_DEBUG:
      o->debug = true;
      return 0;
    case OPT_ROOT:
    case OPT_SYSTEMD_CGROUP:
    case OPT_ROOTLESS:
    case OPT_CRIU:
      return 0; /* runc's own machinery: zcd decides these */
    case OPT_ADDRESS:
      o->address = arg;
      return 0;
    case OPT_EVENTS_ADDRESS:
      o->events_address = arg;
      return 0;
    case 'h':
      fputs (s_usage, stdout);
      *done = true;
      return 0;
    case 'v':
      printf ("zcd-oci version %s\nrevision: %s\nspec: %s\n", OCI_VERSION, ZCD_REVISION,
              OCI_SPEC_VERSION);
      *done = true;
      return 0;
    default:
      fputs (s_usage, stderr);
      return OCI_EXIT_FAIL;
    }
}

static int
s_dispatch (oci_t *o, int argc, char **argv)
{
  static const struct
  {
    const char *name;
    int (*fn) (oci_t *, int, char **);
  } cmds[] = {
    { "run", oci_cmd_run },     { "create", oci_cmd_create }, { "start", oci_cmd_start },
    { "state", oci_cmd_state }, { "kill", oci_cmd_kill },     { "delete", oci_cmd_delete },
  };
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
    if (strcmp (argv[0], cmds[i].name) == 0)
      return cmds[i].fn (o, argc, argv);
  if (strcmp (argv[0], "help") == 0)
    {
      fputs (s_usage, stdout);
      return 0;
    }
  return oci_error (o, "unknown command: %s (see zcd-oci --help)", argv[0]);
}

int
main (int argc, char **argv)
{
  oci_t o = { .timeout_ms = ZCD_DEFAULT_TIMEOUT_MS };
  static const struct option longopts[] = {
    { "root", required_argument, NULL, OPT_ROOT },
    { "log", required_argument, NULL, OPT_LOG },
    { "log-format", required_argument, NULL, OPT_LOG_FORMAT },
    { "debug", no_argument, NULL, OPT_DEBUG },
    { "systemd-cgroup", no_argument, NULL, OPT_SYSTEMD_CGROUP },
    { "rootless", required_argument, NULL, OPT_ROOTLESS },
    { "criu", required_argument, NULL, OPT_CRIU },
    { "address", required_argument, NULL, OPT_ADDRESS },
    { "events-address", required_argument, NULL, OPT_EVENTS_ADDRESS },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'v' },
    { NULL, 0, NULL, 0 },
  };
  int opt;
  /* '+': stop at the command, whose own options follow it */
  while ((opt = getopt_long (argc, argv, "+hv", longopts, NULL)) != -1)
    {
      bool done = false;
      int rc = s_global_option (&o, opt, optarg, &done);
      if (rc || done)
        return rc;
    }
  if (optind >= argc)
    {
      fputs (s_usage, stderr);
      return OCI_EXIT_FAIL;
    }
  /* A reader that goes away (zcd-oci state | head) must not kill us in
   * the middle of a write; run's relay drops what it cannot deliver. */
  signal (SIGPIPE, SIG_IGN);
  int rc = s_dispatch (&o, argc - optind, argv + optind);
  if (fflush (stdout) != 0 && rc == 0)
    rc = OCI_EXIT_FAIL;
  zcd_client_destroy (&o.client);
  return rc;
}
