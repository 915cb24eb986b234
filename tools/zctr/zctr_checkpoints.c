/* zctr checkpoints: create, list, delete. */
#include "tools/zctr/zctr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum
{
  OPT_EXIT = ZCTR_OPT_FIRST_LOCAL,
  OPT_TCP,
  OPT_UNIX_SOCKETS,
  OPT_SHELL,
  OPT_EMPTY_NS,
  OPT_CHECKPOINT_DIR,
};

typedef struct
{
  zcd_checkpoint_opts_t opts;
  const char **empty_ns;
  size_t n_empty_ns;
  char *abs_dir;
} checkpoint_args_t;

static int
s_checkpoint_opt (void *ctx, int opt, const char *arg)
{
  checkpoint_args_t *a = ctx;
  switch (opt)
    {
    case OPT_EXIT:
      a->opts.exit = true;
      break;
    case OPT_TCP:
      a->opts.tcp = true;
      break;
    case OPT_UNIX_SOCKETS:
      a->opts.unix_sockets = true;
      break;
    case OPT_SHELL:
      a->opts.shell = true;
      break;
    case OPT_EMPTY_NS:
      {
        const char **grown = realloc (a->empty_ns, (a->n_empty_ns + 2) * sizeof *grown);
        if (grown == NULL)
          abort ();
        a->empty_ns = grown;
        a->empty_ns[a->n_empty_ns++] = arg;
        a->empty_ns[a->n_empty_ns] = NULL;
        break;
      }
    case OPT_CHECKPOINT_DIR:
      free (a->abs_dir);
      a->abs_dir = zcd_tool_absolute (arg);
      a->opts.checkpoint_dir = a->abs_dir;
      break;
    }
  return 0;
}

static void
s_print_checkpoints (const zcd_reply_t *reply)
{
  zctr_table_t *t = zctr_table_new ();
  static const char *const headers[]
      = { "NAME", "CREATED", "AGE", "EXIT", "TCP", "UNIX", "SHELL", "EMPTY-NS" };
  for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++)
    zctr_table_column (t, headers[i], 0);
  const msgpack_object *list = zcd_reply_get (reply, "checkpoints");
  for (uint32_t i = 0; list && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size; i++)
    {
      const msgpack_object *c = &list->via.array.ptr[i];
      char *name = zcd_obj_strdup (zcd_obj_get (c, "name"));
      int64_t created = 0;
      zcd_obj_int (zcd_obj_get (c, "created"), &created);
      zctr_fmt_t when, age;
      zctr_table_cell (t, "%s", name ? name : "?");
      zctr_table_cell (t, "%s", zctr_fmt_time (when, created, false));
      zctr_table_cell (t, "%s", zctr_fmt_age (age, created));
      static const char *const keys[4] = { "exit", "tcp", "unix_sockets", "shell" };
      for (int k = 0; k < 4; k++)
        {
          bool flag = false;
          zcd_obj_bool (zcd_obj_get (c, keys[k]), &flag);
          zctr_table_cell (t, "%s", flag ? "yes" : "no");
        }
      const msgpack_object *ns = zcd_obj_get (c, "empty_ns");
      char spaces[256] = "";
      size_t used = 0;
      for (uint32_t k = 0; ns && ns->type == MSGPACK_OBJECT_ARRAY && k < ns->via.array.size; k++)
        {
          const msgpack_object *e = &ns->via.array.ptr[k];
          if (e->type == MSGPACK_OBJECT_STR && used < sizeof spaces)
            used += (size_t) snprintf (spaces + used, sizeof spaces - used, "%s%.*s",
                                       k ? "," : "", (int) e->via.str.size, e->via.str.ptr);
        }
      zctr_table_cell (t, "%s", spaces[0] ? spaces : "-");
      free (name);
    }
  zctr_table_print (t, stdout, NULL);
  zctr_table_destroy (&t);
}

/* list takes [ID], create ID NAME, delete [ID] NAME; ID may only be left
 * out with --checkpoint-dir (a restored-from container is usually gone). */
static bool
s_operands (const char *sub, int argc, char **argv, const checkpoint_args_t *a, const char **id,
            const char **name)
{
  int operands = argc - optind;
  bool has_dir = a->opts.checkpoint_dir != NULL;
  *id = *name = NULL;
  if (strcmp (sub, "list") == 0 || strcmp (sub, "ls") == 0)
    {
      *id = operands == 1 ? argv[optind] : NULL;
      return operands == 1 || (operands == 0 && has_dir);
    }
  bool is_delete = strcmp (sub, "delete") == 0 || strcmp (sub, "rm") == 0;
  if (operands == 1 && is_delete && has_dir)
    {
      *name = argv[optind];
      return true;
    }
  if (operands != 2)
    return false;
  *id = argv[optind];
  *name = argv[optind + 1];
  return true;
}

static int
s_run (zctr_t *z, const char *sub, int argc, char **argv, checkpoint_args_t *a)
{
  const char *id, *name;
  bool is_list = strcmp (sub, "list") == 0 || strcmp (sub, "ls") == 0;
  if (!s_operands (sub, argc, argv, a, &id, &name))
    return zctr_error (ZCTR_EXIT_USAGE, "usage: zctr checkpoints %s (see zctr --help)", sub);
  zcd_client_t *cli = zctr_client (z);
  if (cli == NULL)
    return ZCTR_EXIT_FAIL;
  zcd_reply_t *reply = NULL;
  int rc;
  if (strcmp (sub, "create") == 0)
    {
      a->opts.empty_ns = a->empty_ns;
      rc = zcd_client_checkpoint_create (cli, id, name, &a->opts, &reply);
    }
  else if (is_list)
    rc = zcd_client_checkpoint_list (cli, id, a->opts.checkpoint_dir, &reply);
  else if (strcmp (sub, "delete") == 0 || strcmp (sub, "rm") == 0)
    rc = zcd_client_checkpoint_delete (cli, id, a->opts.checkpoint_dir, name, &reply);
  else
    return zctr_error (ZCTR_EXIT_USAGE, "unknown checkpoints command: %s", sub);
  if (rc < 0)
    {
      zcd_reply_destroy (&reply);
      return zctr_fail_request (z, sub);
    }
  if (z->json)
    zctr_print_json (zcd_reply_root (reply));
  else if (is_list)
    s_print_checkpoints (reply);
  zcd_reply_destroy (&reply);
  return 0;
}

int
zctr_cmd_checkpoints (zctr_t *z, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "exit", no_argument, NULL, OPT_EXIT },
    { "tcp", no_argument, NULL, OPT_TCP },
    { "unix-sockets", no_argument, NULL, OPT_UNIX_SOCKETS },
    { "shell", no_argument, NULL, OPT_SHELL },
    { "empty-ns", required_argument, NULL, OPT_EMPTY_NS },
    { "checkpoint-dir", required_argument, NULL, OPT_CHECKPOINT_DIR },
    { NULL, 0, NULL, 0 },
  };
  if (argc < 2)
    {
      zctr_help (stderr, "checkpoints", NULL);
      return ZCTR_EXIT_USAGE;
    }
  const char *sub = argv[1];
  if (zctr_is_help (sub))
    {
      zctr_help (stdout, "checkpoints", NULL);
      return 0;
    }
  z->help_sub = sub;
  checkpoint_args_t a = { 0 };
  int rc = zctr_getopt (z, argc - 1, argv + 1, longopts, s_checkpoint_opt, &a);
  if (rc == 0)
    rc = s_run (z, sub, argc - 1, argv + 1, &a);
  free (a.empty_ns);
  free (a.abs_dir);
  return rc;
}
