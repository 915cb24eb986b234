/* zctr containers: start, exec, kill, pause, resume, update; list is
 * zctr_state.c's, stats zctr_stats.c's.  With --node, start, kill, pause
 * and resume are parsed and built here and sent by zctr_node.c (to the --on
 * nodes). */
#include "tools/zctr/zctr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum
{
  OPT_LABEL = ZCTR_OPT_FIRST_LOCAL,
  OPT_RUNTIME,
  OPT_RUNTIME_ARG,
  OPT_NO_PIVOT,
  OPT_STDIN,
  OPT_STDOUT,
  OPT_STDERR,
  OPT_ATTACH,
  OPT_CHECKPOINT,
  OPT_CHECKPOINT_DIR,
  OPT_ID,
  OPT_PID,
  OPT_TTY,
  OPT_CWD,
  OPT_ENV,
  OPT_UID,
  OPT_GID,
  OPT_SIGNAL,
  OPT_ALL,
  OPT_MEMORY,
  OPT_CPU_SHARES,
  OPT_CPU_QUOTA,
  OPT_CPU_PERIOD,
  OPT_PIDS_LIMIT,
  OPT_CPUSET_CPUS,
  OPT_CPUSET_MEMS,
  OPT_BLKIO_WEIGHT,
  OPT_LOG,
  OPT_LOG_MAX_BYTES,
  OPT_LOG_MAX_FILES,
};

/* A growing NULL-terminated vector of borrowed strings (argv entries). */
typedef struct
{
  const char **v;
  size_t n;
} strv_t;

static void
s_strv_push (strv_t *sv, const char *s)
{
  const char **grown = realloc (sv->v, (sv->n + 2) * sizeof *grown);
  if (grown == NULL)
    abort ();
  sv->v = grown;
  sv->v[sv->n++] = s;
  sv->v[sv->n] = NULL;
}

/* Print the reply as JSON when asked, then release it. */
static int
s_done (zctr_t *z, zcd_reply_t *reply)
{
  if (z->json && reply)
    zctr_print_json (zcd_reply_root (reply));
  zcd_reply_destroy (&reply);
  return 0;
}

/* A path option for the daemon, into *slot: made absolute against our cwd;
 * with --node it names a file on the node, which must be absolute already. */
static int
s_path (bool nodes, char **slot, const char *arg)
{
  if (nodes && arg[0] != '/')
    return zctr_error (ZCTR_EXIT_USAGE, "with --node, paths must be absolute: %s", arg);
  free (*slot);
  *slot = nodes ? strdup (arg) : zcd_tool_absolute (arg);
  return 0;
}

/* --log, --log-max-bytes, --log-max-files of start and exec: the path
 * into *abs_log (as s_path), the limits into log (0 stays the daemon's
 * default, so 0 is refused rather than sent as nothing); the daemon checks
 * their ranges. */
static int
s_log_opt (bool nodes, char **abs_log, zcd_log_opts_t *log, int opt, const char *arg)
{
  if (opt == OPT_LOG)
    return s_path (nodes, abs_log, arg);
  bool files = opt == OPT_LOG_MAX_FILES;
  uint64_t *slot = files ? &log->max_files : &log->max_bytes;
  bool ok = files ? zctr_parse_u64 (arg, slot) : zctr_parse_bytes (arg, slot);
  if (!ok || *slot == 0)
    return zctr_error (ZCTR_EXIT_USAGE, "--log-max-%s: not a valid %s: %s",
                       files ? "files" : "bytes", files ? "number" : "size", arg);
  return 0;
}

/* After parsing: the limits mean nothing without a log. */
static int
s_log_check (const char *abs_log, zcd_log_opts_t *log)
{
  if (abs_log == NULL && (log->max_bytes || log->max_files))
    return zctr_error (ZCTR_EXIT_USAGE, "--log-max-bytes and --log-max-files need --log PATH");
  log->path = abs_log;
  return 0;
}

/* A request that changes a container (body consumed): to the --on nodes
 * with --node, else to the daemon, its reply printed with --json. */
static int
s_change (zctr_t *z, zcd_body_t *body, const char *what)
{
  if (z->nodes)
    return zctr_node_change (z, body);
  zcd_client_t *cli = zctr_client (z);
  zcd_reply_t *reply = NULL;
  int rc = cli && body ? zcd_client_request (cli, body, &reply) : -1;
  zcd_body_destroy (&body);
  if (cli == NULL)
    return ZCTR_EXIT_FAIL;
  if (rc < 0)
    {
      zcd_reply_destroy (&reply);
      return zctr_fail_request (z, what);
    }
  return s_done (z, reply);
}

typedef struct
{
  bool nodes;
  strv_t labels, runtime_args;
  zcd_create_opts_t opts;
  bool attach;
  char *abs_stdio[3];
  char *abs_checkpoint_dir;
  char *abs_log;
} start_args_t;

static int
s_start_opt (void *ctx, int opt, const char *arg)
{
  start_args_t *a = ctx;
  switch (opt)
    {
    case OPT_LABEL:
      s_strv_push (&a->labels, arg);
      break;
    case OPT_RUNTIME:
      a->opts.runtime = arg;
      break;
    case OPT_RUNTIME_ARG:
      s_strv_push (&a->runtime_args, arg);
      break;
    case OPT_NO_PIVOT:
      a->opts.no_pivot_root = true;
      break;
    case OPT_STDIN:
    case OPT_STDOUT:
    case OPT_STDERR:
      return s_path (a->nodes, &a->abs_stdio[opt - OPT_STDIN], arg);
    case OPT_ATTACH:
      a->attach = true;
      break;
    case OPT_CHECKPOINT:
      a->opts.checkpoint = arg;
      break;
    case OPT_CHECKPOINT_DIR:
      return s_path (a->nodes, &a->abs_checkpoint_dir, arg);
    case OPT_LOG:
    case OPT_LOG_MAX_BYTES:
    case OPT_LOG_MAX_FILES:
      return s_log_opt (a->nodes, &a->abs_log, &a->opts.log, opt, arg);
    }
  return 0;
}

/* After a create or exec: print the reply, or stay attached to the
 * process's stdio until it exits (its status becomes ours). */
static int
s_finish_started (zctr_t *z, int rc, zcd_reply_t *reply, zctr_attach_t *attach, const char *what)
{
  if (rc < 0)
    {
      zcd_reply_destroy (&reply);
      zctr_attach_destroy (&attach);
      return zctr_fail_request (z, what);
    }
  if (attach == NULL)
    return s_done (z, reply);
  zcd_reply_destroy (&reply);
  int status = zctr_attach_run (attach);
  zctr_attach_destroy (&attach);
  return status;
}

/* The daemon's own checks, and the FIFOs of --attach (one daemon only). */
static int
s_start_prepare (zctr_t *z, const char *id, start_args_t *a, zctr_attach_t **attach)
{
  if (a->abs_checkpoint_dir && a->opts.checkpoint == NULL)
    return zctr_error (ZCTR_EXIT_USAGE, "--checkpoint-dir needs --checkpoint NAME");
  if (zctr_client (z) == NULL)
    return ZCTR_EXIT_FAIL;
  if (!a->attach)
    return 0;
  if (a->abs_stdio[0] || a->abs_stdio[1] || a->abs_stdio[2] || a->abs_log)
    return zctr_error (ZCTR_EXIT_USAGE,
                       "--attach makes its own stdio: drop --stdin/--stdout/--stderr/--log");
  *attach = zctr_attach_prepare (z, id, "init", false);
  return *attach ? 0 : ZCTR_EXIT_FAIL;
}

static int
s_start_run (zctr_t *z, const char *id, const char *bundle, start_args_t *a)
{
  zctr_attach_t *attach = NULL;
  int rc = z->nodes ? 0 : s_start_prepare (z, id, a, &attach);
  if (rc)
    return rc;
  a->opts.labels = a->labels.v;
  a->opts.runtime_args = a->runtime_args.v;
  a->opts.checkpoint_dir = a->abs_checkpoint_dir;
  a->opts.stdin_path = attach ? zctr_attach_path (attach, 0) : a->abs_stdio[0];
  a->opts.stdout_path = attach ? zctr_attach_path (attach, 1) : a->abs_stdio[1];
  a->opts.stderr_path = attach ? zctr_attach_path (attach, 2) : a->abs_stdio[2];
  zcd_body_t *body = zcd_body_for_create (id, bundle, &a->opts);
  if (z->nodes)
    return zctr_node_change (z, body);
  zcd_reply_t *reply = NULL;
  rc = body ? zcd_client_request (z->client, body, &reply) : -1;
  zcd_body_destroy (&body);
  return s_finish_started (z, rc, reply, attach, "start");
}

static int
s_start (zctr_t *z, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "label", required_argument, NULL, OPT_LABEL },
    { "runtime", required_argument, NULL, OPT_RUNTIME },
    { "runtime-arg", required_argument, NULL, OPT_RUNTIME_ARG },
    { "no-pivot", no_argument, NULL, OPT_NO_PIVOT },
    { "stdin", required_argument, NULL, OPT_STDIN },
    { "stdout", required_argument, NULL, OPT_STDOUT },
    { "stderr", required_argument, NULL, OPT_STDERR },
    { "attach", no_argument, NULL, OPT_ATTACH },
    { "checkpoint", required_argument, NULL, OPT_CHECKPOINT },
    { "checkpoint-dir", required_argument, NULL, OPT_CHECKPOINT_DIR },
    { "log", required_argument, NULL, OPT_LOG },
    { "log-max-bytes", required_argument, NULL, OPT_LOG_MAX_BYTES },
    { "log-max-files", required_argument, NULL, OPT_LOG_MAX_FILES },
    { NULL, 0, NULL, 0 },
  };
  start_args_t a = { .nodes = z->nodes };
  int rc = zctr_getopt (z, argc, argv, longopts, s_start_opt, &a);
  if (rc == 0 && argc - optind != 2)
    rc = zctr_usage (z, true, "containers start ID BUNDLE [options]");
  if (rc == 0 && a.nodes && a.attach)
    rc = zctr_error (ZCTR_EXIT_USAGE, "--attach: not available with --node");
  if (rc == 0)
    rc = s_log_check (a.abs_log, &a.opts.log);
  char *bundle = NULL;
  if (rc == 0)
    rc = s_path (a.nodes, &bundle, argv[optind + 1]);
  if (rc == 0)
    rc = s_start_run (z, argv[optind], bundle, &a);
  free (bundle);
  free (a.labels.v);
  free (a.runtime_args.v);
  for (int i = 0; i < 3; i++)
    free (a.abs_stdio[i]);
  free (a.abs_checkpoint_dir);
  free (a.abs_log);
  return rc;
}

typedef struct
{
  const char *id, *pid;
  strv_t env;
  zcd_exec_opts_t opts;
  bool attach, bad;
  char *abs_stdio[3];
  char *abs_log;
} exec_args_t;

static int
s_exec_opt (void *ctx, int opt, const char *arg)
{
  exec_args_t *a = ctx;
  uint64_t n = 0;
  switch (opt)
    {
    case OPT_ID:
      a->id = arg;
      break;
    case OPT_PID:
      a->pid = arg;
      break;
    case OPT_TTY:
      a->opts.terminal = true;
      break;
    case OPT_ATTACH:
      a->attach = true;
      break;
    case OPT_CWD:
      a->opts.cwd = arg;
      break;
    case OPT_ENV:
      s_strv_push (&a->env, arg);
      break;
    case OPT_UID:
    case OPT_GID:
      if (!zctr_parse_u64 (arg, &n) || n > UINT32_MAX)
        return zctr_error (ZCTR_EXIT_USAGE, "--%s: not an id: %s", opt == OPT_UID ? "uid" : "gid", arg);
      a->opts.set_user = true;
      if (opt == OPT_UID)
        a->opts.uid = (uint32_t) n;
      else
        a->opts.gid = (uint32_t) n;
      break;
    case OPT_STDIN:
    case OPT_STDOUT:
    case OPT_STDERR:
      return s_path (false, &a->abs_stdio[opt - OPT_STDIN], arg);
    case OPT_LOG:
    case OPT_LOG_MAX_BYTES:
    case OPT_LOG_MAX_FILES:
      return s_log_opt (false, &a->abs_log, &a->opts.log, opt, arg);
    }
  return 0;
}

static int
s_exec_run (zctr_t *z, exec_args_t *a, const char *const *args)
{
  zcd_client_t *cli = zctr_client (z);
  if (cli == NULL)
    return ZCTR_EXIT_FAIL;
  zctr_attach_t *attach = NULL;
  if (a->attach && a->abs_log)
    return zctr_error (ZCTR_EXIT_USAGE, "--attach makes its own stdio: drop --log");
  if (a->attach)
    {
      attach = zctr_attach_prepare (z, a->id, a->pid, a->opts.terminal);
      if (attach == NULL)
        return ZCTR_EXIT_FAIL;
    }
  a->opts.env = a->env.v;
  for (int fd = 0; fd < 3; fd++)
    {
      const char *path = attach ? zctr_attach_path (attach, fd) : a->abs_stdio[fd];
      if (fd == 0)
        a->opts.stdin_path = path;
      else if (fd == 1)
        a->opts.stdout_path = path;
      else
        a->opts.stderr_path = path;
    }
  zcd_reply_t *reply = NULL;
  int rc = zcd_client_exec (cli, a->id, a->pid, args, &a->opts, &reply);
  return s_finish_started (z, rc, reply, attach, "exec");
}

static int
s_exec (zctr_t *z, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "id", required_argument, NULL, OPT_ID },
    { "pid", required_argument, NULL, OPT_PID },
    { "tty", no_argument, NULL, OPT_TTY },
    { "attach", no_argument, NULL, OPT_ATTACH },
    { "cwd", required_argument, NULL, OPT_CWD },
    { "env", required_argument, NULL, OPT_ENV },
    { "uid", required_argument, NULL, OPT_UID },
    { "gid", required_argument, NULL, OPT_GID },
    { "stdin", required_argument, NULL, OPT_STDIN },
    { "stdout", required_argument, NULL, OPT_STDOUT },
    { "stderr", required_argument, NULL, OPT_STDERR },
    { "log", required_argument, NULL, OPT_LOG },
    { "log-max-bytes", required_argument, NULL, OPT_LOG_MAX_BYTES },
    { "log-max-files", required_argument, NULL, OPT_LOG_MAX_FILES },
    { NULL, 0, NULL, 0 },
  };
  exec_args_t a = { 0 };
  int rc = zctr_getopt (z, argc, argv, longopts, s_exec_opt, &a);
  if (rc == 0 && (a.id == NULL || a.pid == NULL || optind >= argc))
    rc = zctr_error (ZCTR_EXIT_USAGE, "usage: zctr containers exec --id ID --pid P [options] -- ARGS...");
  if (rc == 0)
    rc = s_log_check (a.abs_log, &a.opts.log);
  if (rc == 0)
    rc = s_exec_run (z, &a, (const char *const *) argv + optind);
  free (a.env.v);
  for (int i = 0; i < 3; i++)
    free (a.abs_stdio[i]);
  free (a.abs_log);
  return rc;
}

typedef struct
{
  const char *pid;
  int signal;
  bool all;
} kill_args_t;

static int
s_kill_opt (void *ctx, int opt, const char *arg)
{
  kill_args_t *a = ctx;
  if (opt == OPT_PID)
    a->pid = arg;
  else if (opt == OPT_ALL)
    a->all = true;
  else if (opt == OPT_SIGNAL && (a->signal = zcd_tool_parse_signal (arg)) == 0)
    return zctr_error (ZCTR_EXIT_USAGE, "--signal: unknown signal: %s", arg);
  return 0;
}

static int
s_kill (zctr_t *z, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "pid", required_argument, NULL, OPT_PID },
    { "signal", required_argument, NULL, OPT_SIGNAL },
    { "all", no_argument, NULL, OPT_ALL },
    { NULL, 0, NULL, 0 },
  };
  kill_args_t a = { .pid = "init", .signal = 15 };
  int rc = zctr_getopt (z, argc, argv, longopts, s_kill_opt, &a);
  if (rc)
    return rc;
  if (argc - optind != 1)
    return zctr_usage (z, true, "containers kill ID [--pid P] [--signal S] [--all]");
  return s_change (z, zcd_body_for_signal (argv[optind], a.pid, a.signal, a.all), "kill");
}

static int
s_pause_resume (zctr_t *z, int argc, char **argv)
{
  int rc = zctr_getopt (z, argc, argv, NULL, NULL, NULL);
  if (rc)
    return rc;
  bool pause = strcmp (argv[0], "pause") == 0;
  if (argc - optind != 1)
    return zctr_usage (z, true, pause ? "containers pause ID" : "containers resume ID");
  const char *id = argv[optind];
  return s_change (z, pause ? zcd_body_for_pause (id) : zcd_body_for_resume (id), argv[0]);
}

static int
s_update_opt (void *ctx, int opt, const char *arg)
{
  zcd_resources_t *res = ctx;
  if (opt == OPT_CPUSET_CPUS || opt == OPT_CPUSET_MEMS)
    {
      *(opt == OPT_CPUSET_CPUS ? &res->cpuset_cpus : &res->cpuset_mems) = arg;
      return 0;
    }
  uint64_t *field = opt == OPT_MEMORY       ? &res->memory_limit
                    : opt == OPT_CPU_SHARES ? &res->cpu_shares
                    : opt == OPT_CPU_QUOTA  ? &res->cpu_quota
                    : opt == OPT_CPU_PERIOD ? &res->cpu_period
                    : opt == OPT_PIDS_LIMIT ? &res->pids_limit
                                            : &res->blkio_weight;
  bool ok = opt == OPT_MEMORY ? zctr_parse_bytes (arg, field) : zctr_parse_u64 (arg, field);
  if (!ok)
    return zctr_error (ZCTR_EXIT_USAGE, "not a valid number: %s", arg);
  return 0;
}

static int
s_update (zctr_t *z, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "memory", required_argument, NULL, OPT_MEMORY },
    { "cpu-shares", required_argument, NULL, OPT_CPU_SHARES },
    { "cpu-quota", required_argument, NULL, OPT_CPU_QUOTA },
    { "cpu-period", required_argument, NULL, OPT_CPU_PERIOD },
    { "pids-limit", required_argument, NULL, OPT_PIDS_LIMIT },
    { "cpuset-cpus", required_argument, NULL, OPT_CPUSET_CPUS },
    { "cpuset-mems", required_argument, NULL, OPT_CPUSET_MEMS },
    { "blkio-weight", required_argument, NULL, OPT_BLKIO_WEIGHT },
    { NULL, 0, NULL, 0 },
  };
  zcd_resources_t res;
  zcd_resources_init (&res);
  int rc = zctr_getopt (z, argc, argv, longopts, s_update_opt, &res);
  if (rc)
    return rc;
  if (argc - optind != 1)
    return zctr_error (ZCTR_EXIT_USAGE, "usage: zctr containers update ID [resource options]");
  zcd_client_t *cli = zctr_client (z);
  zcd_reply_t *reply = NULL;
  if (cli == NULL)
    return ZCTR_EXIT_FAIL;
  if (zcd_client_update (cli, argv[optind], &res, &reply) < 0)
    {
      zcd_reply_destroy (&reply);
      return zctr_fail_request (z, "update");
    }
  return s_done (z, reply);
}

int
zctr_cmd_containers (zctr_t *z, int argc, char **argv)
{
  if (argc < 2)
    return zctr_state_list (z, 1, argv);
  const char *sub = argv[1];
  if (zctr_is_help (sub))
    {
      zctr_help (stdout, "containers", NULL);
      return 0;
    }
  z->help_sub = sub;
  argc--, argv++;
  if (strcmp (sub, "start") == 0 || strcmp (sub, "create") == 0)
    return s_start (z, argc, argv);
  if (strcmp (sub, "list") == 0 || strcmp (sub, "ls") == 0)
    return zctr_state_list (z, argc, argv);
  if (strcmp (sub, "kill") == 0)
    return s_kill (z, argc, argv);
  if (strcmp (sub, "pause") == 0 || strcmp (sub, "resume") == 0)
    return s_pause_resume (z, argc, argv);
  if (z->nodes)
    return zctr_error (ZCTR_EXIT_USAGE,
                       "containers %s: not available with --node (see zctr --help)", sub);
  if (strcmp (sub, "exec") == 0)
    return s_exec (z, argc, argv);
  if (strcmp (sub, "update") == 0)
    return s_update (z, argc, argv);
  if (strcmp (sub, "stats") == 0)
    return zctr_cmd_stats (z, argc, argv);
  if (strcmp (sub, "watch") == 0)
    return zctr_cmd_watch (z, argc, argv);
  return zctr_error (ZCTR_EXIT_USAGE, "unknown containers command: %s (see zctr --help)", sub);
}
