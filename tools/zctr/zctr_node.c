/* zctr --node FILE: the commands that make sense over many nodes, through
 * libzcd's fan-out client (docs/fanout.md).  Reads go to every node unless
 * --on says otherwise; anything that changes a container needs --on, so a
 * forgotten option never starts or kills something on every node. */
#include "tools/zctr/zctr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
typedef void (node_print_fn) (const zcd_fanout_result_t *res, void *ctx);

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
s_send (zctr_t *z, zcd_body_t *body, bool needs_on, node_print_fn *print_one, void *ctx)
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
        print_one (&res[k], ctx);
      else if (!z->json)
        printf ("%s: ok\n", res[k].node);
    }
  zcd_fanout_results_destroy (&res, n);
  return (size_t)ok == n ? 0 : ZCTR_EXIT_FAIL;
}

static void
s_print_flat (const zcd_fanout_result_t *res, void *ctx)
{
  (void) ctx;
  zctr_print_flat (zcd_reply_root (res->reply), res->node);
}

/* state: each node's machine line, then its containers in detail */
static void
s_print_state (const zcd_fanout_result_t *res, void *ctx)
{
  bool *first = ctx;
  if (!*first)
    fputc ('\n', stdout);
  *first = false;
  zctr_state_print (zcd_reply_root (res->reply), NULL, res->node);
}

static void
s_print_version (const zcd_fanout_result_t *res, void *ctx)
{
  (void) ctx;
  uint64_t major = 0, minor = 0, patch = 0, protocol = 0;
  zcd_reply_get_uint (res->reply, "major", &major);
  zcd_reply_get_uint (res->reply, "minor", &minor);
  zcd_reply_get_uint (res->reply, "patch", &patch);
  zcd_reply_get_uint (res->reply, "protocol", &protocol);
  printf ("%s: zcd %llu.%llu.%llu, protocol %llu\n", res->node, (unsigned long long)major,
          (unsigned long long)minor, (unsigned long long)patch, (unsigned long long)protocol);
}

typedef struct
{
  zctr_table_t *table; /* NULL with --ids or --json */
} list_ctx_t;

static void
s_add_list (const zcd_fanout_result_t *res, void *ctx)
{
  list_ctx_t *l = ctx;
  if (l->table)
    {
      zctr_state_list_rows (l->table, zcd_reply_root (res->reply), res->node);
      return;
    }
  const msgpack_object *list = zcd_reply_get (res->reply, "containers");
  for (uint32_t i = 0; list && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size; i++)
    {
      char *id = zcd_obj_strdup (zcd_obj_get (&list->via.array.ptr[i], "id"));
      if (id)
        printf ("%s\n", id);
      free (id);
    }
}

int
zctr_node_change (zctr_t *z, zcd_body_t *body)
{
  return s_send (z, body, true, NULL, NULL);
}

/* One table over every node (rows in node order, each node's by id);
 * printed even when some nodes failed, after their errors. */
int
zctr_node_list (zctr_t *z, bool ids_only)
{
  list_ctx_t l = { .table = ids_only || z->json ? NULL : zctr_state_list_table (true) };
  int rc = s_send (z, zcd_body_new ("state"), false, s_add_list, &l);
  if (l.table)
    zctr_table_print (l.table, stdout, NULL);
  zctr_table_destroy (&l.table);
  return rc;
}

/* ---- events ------------------------------------------------------------------------ */

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

/* The merged stream of events (zctr events parses the options). */
int
zctr_node_events (zctr_t *z, const char *id, uint64_t since_seq, uint64_t count)
{
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
  zcd_fanout_set_since (fo, since_seq);
  char shown[zcd_fanout_size (fo)][256];
  memset (shown, 0, sizeof shown);
  for (uint64_t seen = 0; count == 0 || seen < count;)
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
      if (!skip[fe->index] && (id == NULL || strcmp (id, fe->event->id) == 0))
        {
          zctr_print_event (z, fe->event, fe);
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
    return zctr_cmd_containers (z, argc, argv);
  if (strcmp (cmd, "events") == 0)
    return zctr_cmd_events (z, argc, argv);
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
  bool first = true;
  node_print_fn *print = cmd[0] == 'v'                ? s_print_version
                         : strcmp (cmd, "state") == 0 ? s_print_state
                                                      : s_print_flat;
  return s_send (z, body, false, print, &first);
}
