/* zcd: the container supervisor daemon.  main() only reads the flags,
 * takes the state directory, sets up the process (subreaper, signals, fd
 * limit) and runs the one loop; everything else lives in the actors. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <zmq.h>
#include <czmq.h>

#include "actors/actors.h"
#include "actors/metrics_prom.h"
#include "actors/supervisor.h"
#include "core/cleanup.h"
#include "core/edge.h"
#include "core/fsutil.h"
#include "core/mp.h"
#include "core/log.h"
#include "core/metrics_http.h"
#include "core/version.h"
#include "tools/zcd_statedir.h"

static const char s_usage[] =
  "usage: zcd [options]\n"
  "  --state-dir DIR            state directory (default /run/zcd)\n"
  "  --listen EP                command endpoint, repeatable (default ipc://<state-dir>/zcd.sock)\n"
  "  --publish EP               event endpoint, repeatable (default ipc://<state-dir>/events.sock)\n"
  "  --runtime NAME             OCI runtime binary (default runc)\n"
  "  --runtime-args ARGS        extra global runtime args, space separated\n"
  "  --shim PATH                zcd-shim binary (default: beside zcd)\n"
  "  --criu PATH                CRIU binary for checkpoint/restore, for both runtimes\n"
  "                             (default: the first criu on PATH)\n"
  "  --start-timeout DUR        time a container gets to start (default 30s)\n"
  "  --max-concurrent-starts N  runtime creates at once (default 2 x CPUs)\n"
  "  --events-retain N          events kept in the log (default 100000)\n"
  "  --max-request-size BYTES   largest request body (default 1048576)\n"
  "  --client-queue N           replies a client has not taken yet, in messages (default 1000)\n"
  "  --client-queue-bytes BYTES ... and in bytes (default 4194304).  Past either, the client\n"
  "                             is not served until it reads: its next 64 requests (4 MiB)\n"
  "                             wait, in order, and more are dropped and logged; what waits\n"
  "                             60 s without the client reading is dropped too\n"
  "  --heartbeat DUR            heartbeat period (default 1s)\n"
  "  --log-level LEVEL          debug, info, warn, error (default info)\n"
  "  --log-format FORMAT        text or json (default text)\n"
  "  --group NAME               group of the ipc socket files (default root)\n"
  "  --curve-secret FILE        czmq certificate of the daemon (tcp endpoints)\n"
  "  --curve-clients DIR        public certificates of the allowed clients\n"
  "  --insecure-tcp             allow tcp endpoints without CURVE (tests only)\n"
  "  --metrics-listen ADDR:PORT serve Prometheus metrics at http://ADDR:PORT/metrics\n"
  "                             (:PORT or PORT: 127.0.0.1; [ADDR]:PORT for IPv6).  No\n"
  "                             authentication: whoever reaches it sees every container\n"
  "  --version, --help\n"
  "DUR: a number with ms, s, m or h (a bare number is seconds).\n";

/* "30s", "500ms", "2m", "1h", "5" (seconds) -> milliseconds; -1 if bad. */
static int64_t
s_parse_duration (const char *text)
{
  char *end;
  errno = 0;
  double v = strtod (text, &end);
  if (errno || end == text || v < 0)
    return -1;
  double ms;
  if (*end == '\0' || strcmp (end, "s") == 0)
    ms = v * 1000;
  else if (strcmp (end, "ms") == 0)
    ms = v;
  else if (strcmp (end, "m") == 0)
    ms = v * 60000;
  else if (strcmp (end, "h") == 0)
    ms = v * 3600000;
  else
    return -1;
  return (int64_t) ms;
}

static int64_t
s_parse_count (const char *flag, const char *text)
{
  char *end;
  errno = 0;
  long long v = strtoll (text, &end, 10);
  if (errno || *end || v < 0)
    {
      fprintf (stderr, "zcd: %s: `%s` is not a non-negative number\n", flag, text);
      exit (2);
    }
  return v;
}

static void
s_strv_push (char ***v, const char *s)
{
  size_t n = mp_strv_len (*v);
  *v = realloc (*v, (n + 2) * sizeof (char *));
  (*v)[n] = strdup (s);
  (*v)[n + 1] = NULL;
}

/* metrics_listen: --metrics-listen's text (its syntax checked), or NULL. */
static void
s_parse_args (int argc, char **argv, zcd_config_t *cfg, const char **metrics_listen)
{
  enum { O_STATE = 256, O_LISTEN, O_PUBLISH, O_RUNTIME, O_RUNTIME_ARGS, O_SHIM, O_START_TIMEOUT,
         O_MAX_STARTS, O_RETAIN, O_MAX_REQ, O_HEARTBEAT, O_LOG_LEVEL, O_LOG_FORMAT, O_GROUP,
         O_CURVE_SECRET, O_CURVE_CLIENTS, O_INSECURE, O_VERSION, O_HELP, O_CLIENT_QUEUE,
         O_CLIENT_QUEUE_BYTES, O_CRIU, O_METRICS_LISTEN };
  static const struct option opts[] = {
    { "state-dir", 1, 0, O_STATE },         { "listen", 1, 0, O_LISTEN },
    { "publish", 1, 0, O_PUBLISH },         { "runtime", 1, 0, O_RUNTIME },
    { "runtime-args", 1, 0, O_RUNTIME_ARGS }, { "shim", 1, 0, O_SHIM },
    { "start-timeout", 1, 0, O_START_TIMEOUT }, { "max-concurrent-starts", 1, 0, O_MAX_STARTS },
    { "events-retain", 1, 0, O_RETAIN },    { "max-request-size", 1, 0, O_MAX_REQ },
    { "heartbeat", 1, 0, O_HEARTBEAT },     { "log-level", 1, 0, O_LOG_LEVEL },
    { "log-format", 1, 0, O_LOG_FORMAT },   { "group", 1, 0, O_GROUP },
    { "curve-secret", 1, 0, O_CURVE_SECRET }, { "curve-clients", 1, 0, O_CURVE_CLIENTS },
    { "insecure-tcp", 0, 0, O_INSECURE },   { "version", 0, 0, O_VERSION },
    { "help", 0, 0, O_HELP },               { "client-queue", 1, 0, O_CLIENT_QUEUE },
    { "client-queue-bytes", 1, 0, O_CLIENT_QUEUE_BYTES }, { "criu", 1, 0, O_CRIU },
    { "metrics-listen", 1, 0, O_METRICS_LISTEN },
    { 0, 0, 0, 0 },
  };
  int c;
  int64_t v;
  while ((c = getopt_long (argc, argv, "", opts, NULL)) != -1)
    switch (c)
      {
      case O_STATE: cfg->state_dir = strdup (optarg); break;
      case O_LISTEN: s_strv_push (&cfg->listen, optarg); break;
      case O_PUBLISH: s_strv_push (&cfg->publish, optarg); break;
      case O_RUNTIME: cfg->runtime = strdup (optarg); break;
      case O_RUNTIME_ARGS:
        for (char *save = NULL, *w = strtok_r (optarg, " ", &save); w; w = strtok_r (NULL, " ", &save))
          s_strv_push (&cfg->runtime_args, w);
        break;
      case O_SHIM: cfg->shim_path = strdup (optarg); break;
      case O_CRIU: cfg->criu = strdup (optarg); break;
      case O_START_TIMEOUT:
      case O_HEARTBEAT:
        if ((v = s_parse_duration (optarg)) <= 0)
          {
            fprintf (stderr, "zcd: bad duration `%s`\n", optarg);
            exit (2);
          }
        *(c == O_START_TIMEOUT ? &cfg->start_timeout_ms : &cfg->heartbeat_ms) = (uint64_t) v;
        break;
      case O_MAX_STARTS: cfg->max_concurrent_starts = (int) s_parse_count ("--max-concurrent-starts", optarg); break;
      case O_RETAIN: cfg->events_retain = (uint64_t) s_parse_count ("--events-retain", optarg); break;
      case O_MAX_REQ: cfg->max_request_size = (uint64_t) s_parse_count ("--max-request-size", optarg); break;
      case O_CLIENT_QUEUE:
        if ((v = s_parse_count ("--client-queue", optarg)) < 1 || v > INT_MAX)
          {
            fprintf (stderr, "zcd: --client-queue: 1 to %d messages\n", INT_MAX);
            exit (2);
          }
        cfg->client_queue = (int) v;
        break;
      case O_CLIENT_QUEUE_BYTES:
        if ((v = s_parse_count ("--client-queue-bytes", optarg)) < 1)
          {
            fprintf (stderr, "zcd: --client-queue-bytes: at least 1\n");
            exit (2);
          }
        cfg->client_queue_bytes = (uint64_t) v;
        break;
      case O_LOG_LEVEL:
        if (zcd_log_set_level (optarg) < 0)
          {
            fprintf (stderr, "zcd: --log-level: debug, info, warn or error\n");
            exit (2);
          }
        break;
      case O_LOG_FORMAT:
        if (zcd_log_set_format (optarg) < 0)
          {
            fprintf (stderr, "zcd: --log-format: text or json\n");
            exit (2);
          }
        break;
      case O_GROUP: cfg->group = strdup (optarg); break;
      case O_CURVE_SECRET: cfg->curve_secret = strdup (optarg); break;
      case O_CURVE_CLIENTS: cfg->curve_clients = strdup (optarg); break;
      case O_INSECURE: cfg->insecure_tcp = true; break;
      case O_METRICS_LISTEN:
        {
          cleanup_error zcd_error_t *err = NULL;
          if (metrics_http_check_listen (optarg, &err) < 0)
            {
              fprintf (stderr, "zcd: %s\n", err->msg);
              exit (2);
            }
          *metrics_listen = optarg;
        }
        break;
      case O_VERSION:
        printf ("zcd %d.%d.%d (%s), protocol 1\n", ZCD_VERSION_MAJOR, ZCD_VERSION_MINOR,
                ZCD_VERSION_PATCH, ZCD_REVISION);
        exit (0);
      case O_HELP: fputs (s_usage, stdout); exit (0);
      default: fputs (s_usage, stderr); exit (2);
      }
  if (optind < argc)
    {
      fprintf (stderr, "zcd: unexpected argument `%s`\n%s", argv[optind], s_usage);
      exit (2);
    }
}

static void
s_defaults (zcd_config_t *cfg)
{
  if (cfg->state_dir == NULL)
    cfg->state_dir = strdup ("/run/zcd");
  char ep[PATH_MAX + 16];
  if (cfg->listen == NULL)
    {
      snprintf (ep, sizeof ep, "ipc://%s/zcd.sock", cfg->state_dir);
      s_strv_push (&cfg->listen, ep);
    }
  if (cfg->publish == NULL)
    {
      snprintf (ep, sizeof ep, "ipc://%s/events.sock", cfg->state_dir);
      s_strv_push (&cfg->publish, ep);
    }
  if (cfg->runtime == NULL)
    cfg->runtime = strdup ("runc");
  if (cfg->runtime_args == NULL)
    cfg->runtime_args = calloc (1, sizeof (char *));
  if (cfg->shim_path == NULL)
    {
      char self[PATH_MAX];
      ssize_t n = readlink ("/proc/self/exe", self, sizeof self - 1);
      self[n > 0 ? n : 0] = '\0';
      if (asprintf (&cfg->shim_path, "%s/zcd-shim", dirname (self)) < 0)
        exit (1);
    }
  if (cfg->start_timeout_ms == 0)
    cfg->start_timeout_ms = 30000;
  if (cfg->max_concurrent_starts <= 0)
    cfg->max_concurrent_starts = 2 * (int) sysconf (_SC_NPROCESSORS_ONLN);
  if (cfg->events_retain == 0)
    cfg->events_retain = 100000;
  if (cfg->max_request_size == 0)
    cfg->max_request_size = 1024 * 1024;
  if (cfg->heartbeat_ms == 0)
    cfg->heartbeat_ms = 1000;
}

static void
s_config_free (zcd_config_t *cfg)
{
  free (cfg->state_dir);
  mp_strv_free (cfg->listen);
  mp_strv_free (cfg->publish);
  free (cfg->runtime);
  mp_strv_free (cfg->runtime_args);
  free (cfg->shim_path);
  free (cfg->criu);
  free (cfg->group);
  free (cfg->curve_secret);
  free (cfg->curve_clients);
}

typedef struct
{
  zcd_daemon_t *daemon;
  supervisor_t *supervisor;
  int fd;
} signals_t;

static void
s_on_signal (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  signals_t *sig = arg;
  struct signalfd_siginfo info;
  while (read (fd, &info, sizeof info) == (ssize_t) sizeof info)
    {
      if (info.ssi_signo == SIGCHLD)
        children_reap (sig->daemon->children);
      else if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT)
        {
          log_info ("signal %d: shutting down (containers keep running)", (int) info.ssi_signo);
          if (sig->supervisor)
            supervisor_stop (sig->supervisor);
          else
            loop_stop (loop);
        }
      else if (info.ssi_signo == SIGHUP)
        log_info ("SIGHUP: nothing to reload");
    }
  /* A SIGCHLD may have been merged with another: reap anyway. */
  children_reap (sig->daemon->children);
}

static void
s_setup_process (void)
{
  /* Detached shims whose intermediate parent exits come back to us, so no
   * zombie is ever left for a host init that reaps late (DESIGN.md). */
  prctl (PR_SET_CHILD_SUBREAPER, 1);
  struct rlimit rl;
  if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
    {
      rl.rlim_cur = rl.rlim_max;
      setrlimit (RLIMIT_NOFILE, &rl);
    }
  signal (SIGPIPE, SIG_IGN);
  /* czmq must not install its own SIGINT/SIGTERM handlers: we own them. */
  setenv ("ZSYS_SIGHANDLER", "false", 1);
  zsys_handler_set (NULL);
}

int
main (int argc, char **argv)
{
  zcd_config_t cfg = { 0 };
  const char *metrics_listen = NULL;
  s_parse_args (argc, argv, &cfg, &metrics_listen);
  s_defaults (&cfg);
  cleanup_error zcd_error_t *err = NULL;
  /* Before anything is written there: a state dir others can write to, or
   * a link planted in it, is refused (tools/zcd_statedir.h). */
  int lock_fd = zcd_statedir_take (cfg.state_dir, cfg.listen, cfg.publish);
  if (lock_fd < 0)
    {
      s_config_free (&cfg);
      return 1;
    }
  s_setup_process ();
  if (cfg.criu && zcd_statedir_use_criu (cfg.state_dir, cfg.criu) < 0)
    {
      s_config_free (&cfg);
      return 2;
    }
  /* Bound before the containers are restored: a port in use stops the
   * start at once. */
  int metrics_fd = metrics_listen ? metrics_http_listen (metrics_listen, &err) : -1;
  if (metrics_listen && metrics_fd < 0)
    {
      fprintf (stderr, "zcd: %s\n", err->msg);
      s_config_free (&cfg);
      return 1;
    }
  sigset_t mask;
  sigemptyset (&mask);
  sigaddset (&mask, SIGCHLD);
  sigaddset (&mask, SIGTERM);
  sigaddset (&mask, SIGINT);
  sigaddset (&mask, SIGHUP);
  sigprocmask (SIG_BLOCK, &mask, NULL);
  signals_t sig = { 0 };
  sig.fd = signalfd (-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

  void *ctx = zmq_ctx_new ();
  zmq_ctx_set (ctx, ZMQ_MAX_SOCKETS, 65535);
  zcd_daemon_t daemon = { .config = &cfg, .zmq_ctx = ctx };
  sig.daemon = &daemon;
  daemon.loop = loop_new ();
  daemon.children = children_new (daemon.loop);
  daemon.actors = actor_system_new (daemon.loop, ctx, 10000, &err);
  if (daemon.actors == NULL)
    {
      fprintf (stderr, "zcd: %s\n", err->msg);
      return 1;
    }
  loop_add_fd (daemon.loop, sig.fd, EPOLLIN, s_on_signal, &sig);
  supervisor_t *supervisor = supervisor_new (&daemon, &err);
  if (supervisor == NULL)
    {
      fprintf (stderr, "zcd: %s\n", err->msg);
      return 1;
    }
  if (metrics_fd >= 0 && metrics_prom_serve (supervisor, metrics_fd, &err) < 0)
    {
      fprintf (stderr, "zcd: %s\n", err->msg);
      supervisor_destroy (&supervisor);
      return 1;
    }
  sig.supervisor = supervisor;
  log_info ("zcd %d.%d.%d listening on %s, events on %s, state in %s, runtime %s",
            ZCD_VERSION_MAJOR, ZCD_VERSION_MINOR, ZCD_VERSION_PATCH, cfg.listen[0],
            cfg.publish[0], cfg.state_dir, cfg.runtime);
  int rc = loop_run (daemon.loop);
  sig.supervisor = NULL;
  supervisor_destroy (&supervisor);
  actor_system_destroy (&daemon.actors);
  children_destroy (&daemon.children);
  loop_destroy (&daemon.loop);
  zmq_ctx_term (ctx);
  close (sig.fd);
  close (lock_fd);
  log_info ("zcd stopped");
  s_config_free (&cfg);
  return rc == 0 ? 0 : 1;
}
