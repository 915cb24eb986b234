/* zctr state and containers list: the `state` reply for people.  list is
 * one row per container; state is each container in detail, with its
 * processes and (from a `stats` request) what it uses. */
#include "tools/zctr/zctr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum
{
  OPT_IDS = ZCTR_OPT_FIRST_LOCAL,
};

/* A str field, or "-" (the table's word for "none"); the caller frees. */
static char *
s_str (const msgpack_object *obj, const char *path)
{
  char *s = zcd_obj_strdup (zcd_obj_get (obj, path));
  if (s == NULL || *s == '\0')
    {
      free (s);
      s = strdup ("-");
    }
  if (s == NULL)
    abort ();
  return s;
}

static uint32_t
s_array_size (const msgpack_object *obj, const char *path)
{
  const msgpack_object *a = zcd_obj_get (obj, path);
  return a && a->type == MSGPACK_OBJECT_ARRAY ? a->via.array.size : 0;
}

/* Uptime from `created`: a stopped container has none. */
static const char *
s_uptime (zctr_fmt_t buf, const msgpack_object *c)
{
  int64_t created = 0;
  if (zcd_obj_str_eq (zcd_obj_get (c, "status"), "stopped")
      || !zcd_obj_int (zcd_obj_get (c, "created"), &created))
    created = 0;
  return zctr_fmt_age (buf, created);
}

zctr_table_t *
zctr_state_list_table (bool with_node)
{
  zctr_table_t *t = zctr_table_new ();
  if (with_node)
    zctr_table_column (t, "NODE", 0);
  static const char *const headers[]
      = { "ID", "STATUS", "RUNTIME", "PID", "PROCS", "PIDS", "UPTIME", "BUNDLE" };
  for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++)
    zctr_table_column (t, headers[i], 0);
  return t;
}

void
zctr_state_list_rows (zctr_table_t *t, const msgpack_object *reply, const char *node)
{
  const msgpack_object *list = zcd_obj_get (reply, "containers");
  for (uint32_t i = 0; list && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size; i++)
    {
      const msgpack_object *c = &list->via.array.ptr[i];
      char *id = s_str (c, "id"), *status = s_str (c, "status"), *runtime = s_str (c, "runtime");
      char *bundle = s_str (c, "bundle");
      uint64_t pid = zcd_tool_init_pid (c);
      zctr_fmt_t up;
      if (node)
        zctr_table_cell (t, "%s", node);
      zctr_table_cell (t, "%s", id);
      zctr_table_cell (t, "%s", status);
      zctr_table_cell (t, "%s", runtime);
      if (pid)
        zctr_table_cell (t, "%llu", (unsigned long long)pid);
      else
        zctr_table_cell (t, "-");
      zctr_table_cell (t, "%u", s_array_size (c, "processes"));
      zctr_table_cell (t, "%u", s_array_size (c, "pids"));
      zctr_table_cell (t, "%s", s_uptime (up, c));
      zctr_table_cell (t, "%s", bundle);
      free (id);
      free (status);
      free (runtime);
      free (bundle);
    }
}

/* --ids: one id a line, nothing else (what completion reads). */
static void
s_print_ids (const msgpack_object *reply)
{
  const msgpack_object *list = zcd_obj_get (reply, "containers");
  for (uint32_t i = 0; list && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size; i++)
    {
      char *id = zcd_obj_strdup (zcd_obj_get (&list->via.array.ptr[i], "id"));
      if (id)
        printf ("%s\n", id);
      free (id);
    }
}

static int
s_list_opt (void *ctx, int opt, const char *arg)
{
  (void)arg;
  if (opt == OPT_IDS)
    *(bool *)ctx = true;
  return 0;
}

int
zctr_state_list (zctr_t *z, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "ids", no_argument, NULL, OPT_IDS },
    { NULL, 0, NULL, 0 },
  };
  bool ids = false;
  int rc = zctr_getopt (z, argc, argv, longopts, s_list_opt, &ids);
  if (rc)
    return rc;
  if (optind < argc)
    return zctr_usage (z, false, "containers list [--ids]");
  if (z->nodes)
    return zctr_node_list (z, ids);
  zcd_client_t *cli = zctr_client (z);
  zcd_reply_t *reply = NULL;
  if (cli == NULL)
    return ZCTR_EXIT_FAIL;
  if (zcd_client_state (cli, NULL, &reply) < 0)
    {
      zcd_reply_destroy (&reply);
      return zctr_fail_request (z, "list");
    }
  if (z->json)
    zctr_print_json (zcd_reply_root (reply));
  else if (ids)
    s_print_ids (zcd_reply_root (reply));
  else
    {
      zctr_table_t *t = zctr_state_list_table (false);
      zctr_state_list_rows (t, zcd_reply_root (reply), NULL);
      zctr_table_print (t, stdout, NULL);
      zctr_table_destroy (&t);
    }
  zcd_reply_destroy (&reply);
  return 0;
}

/* ---- state: each container in detail ------------------------------------------------ */

/* A str array joined by sep, "-" when empty; the caller frees. */
static char *
s_join (const msgpack_object *obj, const char *path, const char *sep)
{
  char *out = NULL;
  size_t len = 0;
  FILE *mem = open_memstream (&out, &len);
  if (mem == NULL)
    abort ();
  const msgpack_object *a = zcd_obj_get (obj, path);
  for (uint32_t i = 0; a && a->type == MSGPACK_OBJECT_ARRAY && i < a->via.array.size; i++)
    {
      const msgpack_object *e = &a->via.array.ptr[i];
      if (i)
        fputs (sep, mem);
      if (e->type == MSGPACK_OBJECT_STR)
        fprintf (mem, "%.*s", (int)e->via.str.size, e->via.str.ptr);
      else
        zcd_json_print (mem, e, false);
    }
  fclose (mem);
  if (len == 0)
    {
      free (out);
      out = strdup ("-");
    }
  return out;
}

/* The cgroup's pids, the first few: a fork bomb's thousands help nobody. */
static void
s_pids_cell (zctr_table_t *kv, const msgpack_object *c)
{
  enum
  {
    SHOWN = 12
  };
  char text[SHOWN * 21 + 32] = "";
  size_t used = 0;
  const msgpack_object *a = zcd_obj_get (c, "pids");
  uint32_t n = a && a->type == MSGPACK_OBJECT_ARRAY ? a->via.array.size : 0;
  for (uint32_t i = 0; i < n && i < SHOWN; i++)
    {
      uint64_t pid = 0;
      zcd_obj_uint (&a->via.array.ptr[i], &pid);
      used += (size_t)snprintf (text + used, sizeof text - used, "%s%llu", i ? " " : "",
                                (unsigned long long)pid);
    }
  if (n > SHOWN)
    snprintf (text + used, sizeof text - used, " ... (%u)", n);
  zctr_table_cell (kv, "%s", n ? text : "-");
}

static void
s_print_processes (const msgpack_object *c)
{
  zctr_table_t *t = zctr_table_new ();
  static const char *const headers[] = { "PROCESS", "PID", "TTY", "USER", "CWD", "ARGS" };
  for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++)
    zctr_table_column (t, headers[i], 0);
  const msgpack_object *procs = zcd_obj_get (c, "processes");
  for (uint32_t i = 0; procs && procs->type == MSGPACK_OBJECT_ARRAY && i < procs->via.array.size;
       i++)
    {
      const msgpack_object *p = &procs->via.array.ptr[i];
      char *pid = s_str (p, "pid"), *cwd = s_str (p, "cwd"), *args = s_join (p, "args", " ");
      uint64_t system_pid = 0, uid = 0, gid = 0;
      bool tty = false;
      zcd_obj_uint (zcd_obj_get (p, "system_pid"), &system_pid);
      zcd_obj_uint (zcd_obj_get (p, "user/uid"), &uid);
      zcd_obj_uint (zcd_obj_get (p, "user/gid"), &gid);
      zcd_obj_bool (zcd_obj_get (p, "terminal"), &tty);
      zctr_table_cell (t, "%s", pid);
      zctr_table_cell (t, "%llu", (unsigned long long)system_pid);
      zctr_table_cell (t, "%s", tty ? "yes" : "no");
      zctr_table_cell (t, "%llu:%llu", (unsigned long long)uid, (unsigned long long)gid);
      zctr_table_cell (t, "%s", cwd);
      zctr_table_cell (t, "%s", args);
      free (pid);
      free (cwd);
      free (args);
    }
  zctr_table_style_t style = { .indent = 2 };
  zctr_table_print (t, stdout, &style);
  zctr_table_destroy (&t);
}

/* What the container uses, from its Stats (absent when stats failed). */
static void
s_usage_rows (zctr_table_t *kv, const msgpack_object *s)
{
  uint64_t mem = 0, limit = 0, cpu = 0, tasks = 0, tasks_limit = 0;
  zcd_obj_uint (zcd_obj_get (s, "memory/usage/usage"), &mem);
  zcd_obj_uint (zcd_obj_get (s, "memory/usage/limit"), &limit);
  zcd_obj_uint (zcd_obj_get (s, "cpu/usage/total"), &cpu);
  zcd_obj_uint (zcd_obj_get (s, "pids/current"), &tasks);
  zcd_obj_uint (zcd_obj_get (s, "pids/limit"), &tasks_limit);
  zctr_fmt_t a, b, c;
  zctr_table_cell (kv, "memory:");
  if (zctr_limit_set (limit))
    zctr_table_cell (kv, "%s of %s (%s)", zctr_fmt_bytes (a, mem), zctr_fmt_bytes (b, limit),
                     zctr_fmt_percent (c, 100.0 * (double)mem / (double)limit));
  else
    zctr_table_cell (kv, "%s (no limit)", zctr_fmt_bytes (a, mem));
  zctr_table_cell (kv, "cpu-time:");
  zctr_table_cell (kv, "%s", zctr_fmt_cpu_time (a, cpu));
  zctr_table_cell (kv, "tasks:");
  if (tasks_limit && tasks_limit < UINT32_MAX)
    zctr_table_cell (kv, "%llu of %llu", (unsigned long long)tasks,
                     (unsigned long long)tasks_limit);
  else
    zctr_table_cell (kv, "%llu", (unsigned long long)tasks);
}

static void
s_print_container (const msgpack_object *c, const msgpack_object *stats)
{
  zctr_table_t *kv = zctr_table_new ();
  zctr_table_column (kv, "", 0);
  zctr_table_column (kv, "", 0);
  static const char *const fields[][2] = {
    { "id:", "id" },
    { "status:", "status" },
    { "runtime:", "runtime" },
    { "bundle:", "bundle" },
  };
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    {
      char *v = s_str (c, fields[i][1]);
      zctr_table_cell (kv, "%s", fields[i][0]);
      zctr_table_cell (kv, "%s", v);
      free (v);
    }
  int64_t created = 0;
  zcd_obj_int (zcd_obj_get (c, "created"), &created);
  zctr_fmt_t buf;
  zctr_table_cell (kv, "created:");
  zctr_table_cell (kv, "%s", zctr_fmt_time (buf, created, false));
  zctr_table_cell (kv, "uptime:");
  zctr_table_cell (kv, "%s", s_uptime (buf, c));
  char *labels = s_join (c, "labels", ", ");
  zctr_table_cell (kv, "labels:");
  zctr_table_cell (kv, "%s", labels);
  free (labels);
  zctr_table_cell (kv, "pids:");
  s_pids_cell (kv, c);
  char *id = zcd_obj_strdup (zcd_obj_get (c, "id"));
  const msgpack_object *s = stats && id ? zcd_obj_get (stats, id) : NULL;
  free (id);
  if (s && s->type == MSGPACK_OBJECT_MAP && s->via.map.size > 0)
    s_usage_rows (kv, s);
  zctr_table_cell (kv, "processes:");
  zctr_table_cell (kv, "%u", s_array_size (c, "processes"));
  zctr_table_style_t style = { .no_header = true };
  zctr_table_print (kv, stdout, &style);
  zctr_table_destroy (&kv);
  s_print_processes (c);
}

void
zctr_state_print (const msgpack_object *state, const msgpack_object *stats, const char *node)
{
  uint64_t cpus = 0, memory = 0, last_seq = 0;
  zcd_obj_uint (zcd_obj_get (state, "machine/cpus"), &cpus);
  zcd_obj_uint (zcd_obj_get (state, "machine/memory"), &memory);
  zcd_obj_uint (zcd_obj_get (state, "last_seq"), &last_seq);
  char *boot = s_str (state, "boot_id");
  zctr_fmt_t mem;
  uint32_t n = s_array_size (state, "containers");
  if (node)
    printf ("node %s: ", node);
  else
    printf ("machine: ");
  printf ("%llu CPUs, %s memory; %u container%s; last event #%llu; boot %s\n",
          (unsigned long long)cpus, zctr_fmt_bytes (mem, memory), n, n == 1 ? "" : "s",
          (unsigned long long)last_seq, boot);
  free (boot);
  const msgpack_object *list = zcd_obj_get (state, "containers");
  for (uint32_t i = 0; list && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size; i++)
    {
      fputc ('\n', stdout);
      s_print_container (&list->via.array.ptr[i], stats);
    }
}

int
zctr_cmd_state (zctr_t *z, int argc, char **argv)
{
  int rc = zctr_getopt (z, argc, argv, NULL, NULL, NULL);
  if (rc)
    return rc;
  if (argc - optind > 1)
    return zctr_usage (z, false, "state [ID]");
  const char *id = optind < argc ? argv[optind] : NULL;
  zcd_client_t *cli = zctr_client (z);
  zcd_reply_t *reply = NULL, *stats = NULL;
  if (cli == NULL)
    return ZCTR_EXIT_FAIL;
  if (zcd_client_state (cli, id, &reply) < 0)
    {
      zcd_reply_destroy (&reply);
      return zctr_fail_request (z, "state");
    }
  if (z->json)
    zctr_print_json (zcd_reply_root (reply));
  else
    {
      /* usage is a bonus: a container that just left has none */
      const char *ids[] = { id, NULL };
      if (zcd_client_stats (cli, id ? ids : NULL, &stats) < 0)
        zcd_reply_destroy (&stats);
      zctr_state_print (zcd_reply_root (reply), stats ? zcd_reply_get (stats, "stats") : NULL,
                        NULL);
    }
  zcd_reply_destroy (&stats);
  zcd_reply_destroy (&reply);
  return 0;
}
