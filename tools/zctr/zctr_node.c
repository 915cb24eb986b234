/* zctr --node FILE: the commands that make sense over many nodes, through
 * libzcd's fan-out client (docs/fanout.md).  Reads go to every node unless
 * --on says otherwise; anything that changes a container needs --on, so a
 * forgotten option never starts or kills something on every node. */
#include "tools/zctr/zctr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum
{
  OPT_LABEL = ZCTR_OPT_FIRST_LOCAL,
  OPT_RUNTIME,
  OPT_RUNTIME_ARG,
  OPT_NO_PIVOT,
  OPT_STDIN,
  OPT_STDOUT,
  OPT_STDERR,
  OPT_CHECKPOINT,
  OPT_CHECKPOINT_DIR,
  OPT_PID,
  OPT_SIGNAL,
  OPT_ALL,
  OPT_ID,
  OPT_SINCE_SEQ,
  OPT_COUNT,
};

int
zctr_node_on (zctr_t *z, const char *arg)
{
  char *copy = strdup (arg);
  char **storage = realloc (z->on_storage, (z->n_on + 1) * sizeof *storage);
  if (copy == NULL || storage == NULL)
    abort ();
  z->on_storage = storage;
  z->on_storage[z->n_on] = copy;
  size_t n = 0;
  while (z->on && z->on[n])
    n++;
  char *save = NULL;
  for (char *name = strtok_r (copy, ",", &save); name; name = strtok_r (NULL, ",", &save))
    {
      const char **grown = realloc (z->on, (n + 2) * sizeof *grown);
      if (grown == NULL)
        abort ();
      z->on = grown;
      z->on[n++] = name;
      z->on[n] = NULL;
    }
  z->n_on++;
  return 0;
}

void
zctr_node_free (zctr_t *z)
{
  zcd_fanout_destroy (&z->fanout);
  for (size_t i = 0; i < z->n_on; i++)
    free (z->on_storage[i]);
  free (z->on_storage);
  free (z->on);
  z->on = NULL;
  z->on_storage = NULL;
  z->n_on = 0;
}

static zcd_fanout_t *
s_fanout (zctr_t *z)
{
  if (z->fanout)
    return z->fanout;
  z->fanout = zcd_fanout_new ();
  if (z->fanout == NULL)
    {
      zctr_error (ZCTR_EXIT_FAIL, "fan-out client: %s", strerror (errno));
      return NULL;
    }
  zcd_fanout_set_timeout (z->fanout, z->timeout_ms);
  if (zcd_fanout_load (z->fanout, z->node_file) < 0
      || (z->client_cert && zcd_fanout_set_client_cert (z->fanout, z->client_cert) < 0))
    {
      zctr_error (ZCTR_EXIT_FAIL, "%s", zcd_fanout_last_error (z->fanout));
      zcd_fanout_destroy (&z->fanout);
    }
  return z->fanout;
}

/* The --on nodes: NULL (every node) for "all" or when none was given. */
static const char *const *
s_targets (const zctr_t *z)
{
  for (size_t i = 0; z->on && z->on[i]; i++)
    if (strcmp (z->on[i], "all") == 0)
      return NULL;
  return z->on;
}

/* Send body to the --on nodes; print each node's answer with print_one
 * (NULL: "NODE: ok"), or every reply as one JSON object keyed by node.
 * Failed nodes go to stderr; exit 1 if any failed. */
typedef void (node_print_fn) (const zcd_fanout_result_t *res);

static void
s_print_result_json (const zcd_fanout_result_t *res, size_t n)
{
  printf ("{");
  for (size_t k = 0; k < n; k++)
    {
      printf ("%s\"%s\": ", k ? ", " : "", res[k].node);
      if (res[k].reply)
        zcd_json_print (stdout, zcd_reply_root (res[k].reply), false);
      else
        {
          /* a local failure, shaped as a daemon error */
          printf ("{\"ok\": false, \"error\": {\"code\": \"%s\", \"message\": ",
                  res[k].err == ETIMEDOUT ? "timeout" : "unavailable");
          msgpack_object msg = { .type = MSGPACK_OBJECT_STR };
          msg.via.str.ptr = res[k].error ? res[k].error : "";
          msg.via.str.size = (uint32_t)strlen (msg.via.str.ptr);
          zcd_json_print (stdout, &msg, false);
          printf ("}}");
        }
    }
  printf ("}\n");
}

static int
s_send (zctr_t *z, zcd_body_t *body, bool needs_on, node_print_fn *print_one)
{
  zcd_fanout_t *fo = s_fanout (z);
  if (fo == NULL || body == NULL)
    {
      zcd_body_destroy (&body);
      return ZCTR_EXIT_FAIL;
    }
  if (needs_on && z->on == NULL)
    {
      zcd_body_destroy (&body);
      return zctr_error (ZCTR_EXIT_USAGE, "with --node, this command needs --on NAME[,NAME] "
                                          "(or --on all)");
    }
  zcd_fanout_result_t *res = NULL;
  size_t n = 0;
  int ok = zcd_fanout_request (fo, s_targets (z), body, &res, &n);
  zcd_body_destroy (&body);
  if (ok < 0)
    return zctr_error (ZCTR_EXIT_USAGE, "%s", zcd_fanout_last_error (fo));
  if (z->json)
    s_print_result_json (res, n);
  for (size_t k = 0; k < n; k++)
    {
      if (res[k].err)
        zctr_error (0, "%s: %s", res[k].node, res[k].error ? res[k].error : "failed");
      else if (print_one && !z->json)
        print_one (&res[k]);
      else if (!z->json)
        printf ("%s: ok\n", res[k].node);
    }
  zcd_fanout_results_destroy (&res, n);
  return (size_t)ok == n ? 0 : ZCTR_EXIT_FAIL;
}

static void
s_print_flat (const zcd_fanout_result_t *res)
{
  zctr_print_flat (zcd_reply_root (res->reply), res->node);
}

static void
s_print_version (const zcd_fanout_result_t *res)
{
  uint64_t major = 0, minor = 0, patch = 0, protocol = 0;
  zcd_reply_get_uint (res->reply, "major", &major);
  zcd_reply_get_uint (res->reply, "minor", &minor);
  zcd_reply_get_uint (res->reply, "patch", &patch);
  zcd_reply_get_uint (res->reply, "protocol", &protocol);
  printf ("%s: zcd %llu.%llu.%llu, protocol %llu\n", res->node, (unsigned long long)major,
          (unsigned long long)minor, (unsigned long long)patch, (unsigned long long)protocol);
}

static void
s_print_list (const zcd_fanout_result_t *res)
{
  const msgpack_object *list = zcd_reply_get (res->reply, "containers");
  for (uint32_t i = 0; list && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size; i++)
    {
      const msgpack_object *c = &list->via.array.ptr[i];
      char *id = zcd_obj_strdup (zcd_obj_get (c, "id"));
      char *status = zcd_obj_strdup (zcd_obj_get (c, "status"));
      char *bundle = zcd_obj_strdup (zcd_obj_get (c, "bundle"));
      uint64_t pid = 0;
      bool has_pid = zcd_obj_uint (zcd_obj_get (c, "pids/0"), &pid);
      char pidtext[24] = "-";
      if (has_pid)
        snprintf (pidtext, sizeof pidtext, "%llu", (unsigned long long)pid);
      printf ("%-12s %-24s %-8s %-10s %s\n", res->node, id ? id : "?", status ? status : "?",
              pidtext, bundle ? bundle : "?");
      free (id);
      free (status);
      free (bundle);
    }
}

/* ---- containers start / kill / pause / resume -------------------------------- */

static void
s_opt_str (zcd_body_t *body, const char *key, const char *value)
{
  if (value)
    zcd_body_str (body, key, value);
}

typedef struct
{
  zcd_body_t *labels, *runtime_args; /* collected as arrays, copied into the body */
  const char *strs[8];               /* runtime, stdin, stdout, stderr, checkpoint, dir */
  bool no_pivot;
  const char *bad;
} start_args_t;

static const char *const s_start_keys[]
    = { "runtime", "stdin", "stdout", "stderr", "checkpoint", "checkpoint_dir" };

static int
s_start_opt (void *ctx, int opt, const char *arg)
{
  start_args_t *a = ctx;
  switch (opt)
    {
    case OPT_LABEL:
      zcd_body_str (a->labels, NULL, arg);
      break;
    case OPT_RUNTIME_ARG:
      zcd_body_str (a->runtime_args, NULL, arg);
      break;
    case OPT_NO_PIVOT:
      a->no_pivot = true;
      break;
    default:
      {
        int slot = opt == OPT_RUNTIME          ? 0
                   : opt == OPT_CHECKPOINT     ? 4
                   : opt == OPT_CHECKPOINT_DIR ? 5
                                               : 1 + (opt - OPT_STDIN);
        /* paths are the node's: nothing here can make them absolute */
        if (slot != 0 && slot != 4 && arg[0] != '/')
          return zctr_error (ZCTR_EXIT_USAGE, "with --node, paths must be absolute: %s", arg);
        a->strs[slot] = arg;
      }
    }
  return 0;
}

/* The collected array (a body of its own, opened as "v") under key. */
static void
s_copy_array (zcd_body_t *body, const char *key, zcd_body_t *array)
{
  zcd_body_close (array);
  size_t len = 0;
  const char *data = zcd_body_data (array, &len);
  msgpack_unpacked u;
  msgpack_unpacked_init (&u);
  const msgpack_object *v = NULL;
  if (data && msgpack_unpack_next (&u, data, len, NULL) == MSGPACK_UNPACK_SUCCESS)
    v = zcd_obj_get (&u.data, "v");
  if (v && v->type == MSGPACK_OBJECT_ARRAY && v->via.array.size > 0)
    {
      msgpack_packer *pk = zcd_body_raw (body, key);
      if (pk)
        msgpack_pack_object (pk, *v);
    }
  msgpack_unpacked_destroy (&u);
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
    { "checkpoint", required_argument, NULL, OPT_CHECKPOINT },
    { "checkpoint-dir", required_argument, NULL, OPT_CHECKPOINT_DIR },
    { NULL, 0, NULL, 0 },
  };
  start_args_t a = { .labels = zcd_body_new (NULL), .runtime_args = zcd_body_new (NULL) };
  zcd_body_array_open (a.labels, "v");
  zcd_body_array_open (a.runtime_args, "v");
  int rc = zctr_getopt (z, argc, argv, longopts, s_start_opt, &a);
  if (rc == 0 && argc - optind != 2)
    rc = zctr_error (ZCTR_EXIT_USAGE,
                     "usage: zctr --node FILE --on NAME containers start ID BUNDLE");
  if (rc == 0 && argv[optind + 1][0] != '/')
    rc = zctr_error (ZCTR_EXIT_USAGE, "with --node, BUNDLE must be an absolute path on the node");
  zcd_body_t *body = NULL;
  if (rc == 0 && (body = zcd_body_new ("create")))
    {
      zcd_body_str (body, "id", argv[optind]);
      zcd_body_str (body, "bundle", argv[optind + 1]);
      for (size_t i = 0; i < sizeof s_start_keys / sizeof s_start_keys[0]; i++)
        s_opt_str (body, s_start_keys[i], a.strs[i]);
      s_copy_array (body, "labels", a.labels);
      s_copy_array (body, "runtime_args", a.runtime_args);
      if (a.no_pivot)
        zcd_body_bool (body, "no_pivot_root", true);
      rc = s_send (z, body, true, NULL);
    }
  zcd_body_destroy (&a.labels);
  zcd_body_destroy (&a.runtime_args);
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
  else if (opt == OPT_SIGNAL && (a->signal = zctr_parse_signal (arg)) == 0)
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
    return zctr_error (ZCTR_EXIT_USAGE, "usage: zctr --node FILE --on NAME containers kill ID "
                                        "[--pid P] [--signal S] [--all]");
  zcd_body_t *body = zcd_body_new ("signal");
  zcd_body_str (body, "id", argv[optind]);
  zcd_body_str (body, "pid", a.pid);
  zcd_body_uint (body, "signal", (uint64_t)a.signal);
  if (a.all)
    zcd_body_bool (body, "all", true);
  return s_send (z, body, true, NULL);
}

static int
s_pause_resume (zctr_t *z, int argc, char **argv)
{
  int rc = zctr_getopt (z, argc, argv, NULL, NULL, NULL);
  if (rc)
    return rc;
  if (argc - optind != 1)
    return zctr_error (ZCTR_EXIT_USAGE, "usage: zctr --node FILE --on NAME containers %s ID",
                       argv[0]);
  zcd_body_t *body = zcd_body_new ("update");
  zcd_body_str (body, "id", argv[optind]);
  zcd_body_str (body, "status", strcmp (argv[0], "pause") == 0 ? "paused" : "running");
  return s_send (z, body, true, NULL);
}

static int
s_list (zctr_t *z, int argc, char **argv)
{
  int rc = zctr_getopt (z, argc, argv, NULL, NULL, NULL);
  if (rc)
    return rc;
  if (!z->json)
    printf ("%-12s %-24s %-8s %-10s %s\n", "NODE", "ID", "STATUS", "PID", "BUNDLE");
  return s_send (z, zcd_body_new ("state"), false, s_print_list);
}

static int
s_containers (zctr_t *z, int argc, char **argv)
{
  if (argc < 2)
    return s_list (z, 1, argv);
  const char *sub = argv[1];
  argc--, argv++;
  if (strcmp (sub, "list") == 0 || strcmp (sub, "ls") == 0)
    return s_list (z, argc, argv);
  if (strcmp (sub, "start") == 0 || strcmp (sub, "create") == 0)
    return s_start (z, argc, argv);
  if (strcmp (sub, "kill") == 0)
    return s_kill (z, argc, argv);
  if (strcmp (sub, "pause") == 0 || strcmp (sub, "resume") == 0)
    return s_pause_resume (z, argc, argv);
  return zctr_error (ZCTR_EXIT_USAGE, "containers %s: not available with --node (see zctr --help)",
                     sub);
}

/* ---- events ------------------------------------------------------------------------ */

static void
s_print_event (zctr_t *z, const zcd_fanout_event_t *fe)
{
  const zcd_event_t *e = fe->event;
  msgpack_object boot = { .type = MSGPACK_OBJECT_STR };
  boot.via.str.ptr = fe->boot_id;
  boot.via.str.size = (uint32_t)strlen (fe->boot_id);
  if (z->json)
    {
      /* one object per line; node names need no escaping (their syntax) */
      printf ("{\"node\": \"%s\", \"boot_id\": ", fe->node);
      zcd_json_print (stdout, &boot, false);
      printf (", \"seq\": %llu, \"event\": ", (unsigned long long)e->seq);
      zcd_json_print (stdout, e->obj, false);
      printf ("}\n");
      fflush (stdout);
      return;
    }
  time_t secs = (time_t)(e->ts / 1000000000);
  struct tm tm;
  char when[32] = "-";
  if (e->ts > 0 && gmtime_r (&secs, &tm))
    strftime (when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  printf ("%s %llu %s.%09lldZ %s %s", fe->node, (unsigned long long)e->seq, when,
          (long long)(e->ts > 0 ? e->ts % 1000000000 : 0), e->type, e->id[0] ? e->id : "-");
  if (e->pid)
    printf (" pid=%s", e->pid);
  if (e->has_system_pid)
    printf (" system_pid=%llu", (unsigned long long)e->system_pid);
  if (e->has_status)
    printf (" status=%u", e->status);
  if (e->oom_killed)
    printf (" oom_killed");
  printf (" boot=%.8s\n", fe->boot_id);
  fflush (stdout);
}

typedef struct
{
  const char *id;
  uint64_t since_seq, count;
} events_args_t;

static int
s_events_opt (void *ctx, int opt, const char *arg)
{
  events_args_t *a = ctx;
  if (opt == OPT_ID)
    a->id = arg;
  else if (opt == OPT_SINCE_SEQ && !zctr_parse_u64 (arg, &a->since_seq))
    return zctr_error (ZCTR_EXIT_USAGE, "--since-seq: not a number: %s", arg);
  else if (opt == OPT_COUNT && !zctr_parse_u64 (arg, &a->count))
    return zctr_error (ZCTR_EXIT_USAGE, "--count: not a number: %s", arg);
  return 0;
}

/* A node's trouble (down, key refused) on stderr, once per change. */
static void
s_report_node_errors (zcd_fanout_t *fo, char (*shown)[256])
{
  for (size_t i = 0; i < zcd_fanout_size (fo); i++)
    {
      const char *err = zcd_fanout_node_error (fo, i);
      if (strcmp (err, shown[i]) == 0)
        continue;
      if (*err)
        zctr_error (0, "%s: %s", zcd_fanout_node_name (fo, i), err);
      snprintf (shown[i], sizeof shown[i], "%s", err);
    }
}

static int
s_events (zctr_t *z, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "id", required_argument, NULL, OPT_ID },
    { "since-seq", required_argument, NULL, OPT_SINCE_SEQ },
    { "count", required_argument, NULL, OPT_COUNT },
    { NULL, 0, NULL, 0 },
  };
  events_args_t a = { .since_seq = ZCD_SINCE_NOW };
  int rc = zctr_getopt (z, argc, argv, longopts, s_events_opt, &a);
  if (rc)
    return rc;
  if (optind < argc)
    return zctr_error (ZCTR_EXIT_USAGE,
                       "usage: zctr --node FILE events [--id ID] [--since-seq N] [--count N]");
  zcd_fanout_t *fo = s_fanout (z);
  if (fo == NULL)
    return ZCTR_EXIT_FAIL;
  /* --on limits the stream to some nodes: the others are left out */
  const char *const *on = s_targets (z);
  bool skip[zcd_fanout_size (fo)];
  for (size_t i = 0; i < zcd_fanout_size (fo); i++)
    skip[i] = on != NULL;
  for (size_t k = 0; on && on[k]; k++)
    {
      int i = zcd_fanout_node_index (fo, on[k]);
      if (i < 0)
        return zctr_error (ZCTR_EXIT_USAGE, "--on: no node %s in %s", on[k], z->node_file);
      skip[i] = false;
    }
  zcd_fanout_set_since (fo, a.since_seq);
  char shown[zcd_fanout_size (fo)][256];
  memset (shown, 0, sizeof shown);
  for (uint64_t seen = 0; a.count == 0 || seen < a.count;)
    {
      zcd_fanout_event_t *fe = NULL;
      /* wake up now and then to report nodes in trouble */
      if (zcd_fanout_next_event (fo, 1000, &fe) < 0)
        {
          if (errno != EAGAIN && errno != EINTR)
            return zctr_error (ZCTR_EXIT_FAIL, "events: %s", zcd_fanout_last_error (fo));
          s_report_node_errors (fo, shown);
          continue;
        }
      if (!skip[fe->index] && (a.id == NULL || strcmp (a.id, fe->event->id) == 0))
        {
          s_print_event (z, fe);
          seen++;
        }
      zcd_fanout_event_destroy (&fe);
      if (ferror (stdout))
        break; /* the reader went away */
    }
  return 0;
}

int
zctr_cmd_node (zctr_t *z, int argc, char **argv)
{
  const char *cmd = argv[0];
  int rc;
  if (strcmp (cmd, "containers") == 0 || strcmp (cmd, "c") == 0)
    return s_containers (z, argc, argv);
  if (strcmp (cmd, "events") == 0)
    return s_events (z, argc, argv);
  if (strcmp (cmd, "version") != 0 && strcmp (cmd, "state") != 0 && strcmp (cmd, "metrics") != 0)
    return zctr_error (ZCTR_EXIT_USAGE, "%s: not available with --node (see zctr --help)", cmd);
  if ((rc = zctr_getopt (z, argc, argv, NULL, NULL, NULL)))
    return rc;
  int max_args = strcmp (cmd, "state") == 0 ? 1 : 0;
  if (argc - optind > max_args)
    return zctr_error (ZCTR_EXIT_USAGE, "%s: too many arguments", cmd);
  zcd_body_t *body = zcd_body_new (cmd);
  if (body && optind < argc)
    zcd_body_str (body, "id", argv[optind]);
  return s_send (z, body, false, cmd[0] == 'v' ? s_print_version : s_print_flat);
}
