/* zcd-oci create, start, kill, delete.
 *
 * zcd creates and starts a container in one step; runc's two are emulated:
 * `create` checks the bundle and records the request (oci_record.c), which
 * `state` reports as "created"; `start` sends zcd's `create`, detached: the
 * container's stdio is /dev/null (no process of ours stays to relay it),
 * and the pid file given to `create` is written then.  A `kill` of a
 * created-only container marks it stopped (runc's init would die of it);
 * `delete` removes the record. */
#include "tools/zcd-oci/oci.h"

#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long delete --force waits for the killed container's exit. */
#define FORCE_DELETE_WAIT_MS 30000

int
oci_send_create (oci_t *o, const char *id, const char *bundle, const zcd_create_opts_t *opts,
                 uint64_t *pid)
{
  zcd_client_t *cli = oci_client (o);
  if (cli == NULL)
    return OCI_EXIT_FAIL;
  zcd_reply_t *reply = NULL;
  if (zcd_client_create (cli, id, bundle, opts, &reply) < 0)
    {
      int rc = oci_fail_request (o, "create", reply);
      zcd_reply_destroy (&reply);
      return rc;
    }
  *pid = zcd_tool_init_pid (zcd_reply_get (reply, "container"));
  zcd_reply_destroy (&reply);
  return 0;
}

int
oci_create_detached (oci_t *o, const char *id, const char *bundle, const char *pid_file,
                     bool no_pivot)
{
  zcd_create_opts_t opts = { .no_pivot_root = no_pivot };
  uint64_t pid = 0;
  int rc = oci_send_create (o, id, bundle, &opts, &pid);
  if (rc)
    return rc;
  oci_debug (o, "%s runs detached, init pid %llu", id, (unsigned long long)pid);
  return pid_file && oci_write_pid_file (o, pid_file, pid) < 0 ? OCI_EXIT_FAIL : 0;
}

/* zcd's status of id ("running", "paused", "stopped"; caller frees), NULL
 * with *absent when zcd has no such container, NULL after printing why
 * otherwise. */
static char *
s_zcd_status (oci_t *o, const char *id, bool *absent)
{
  *absent = false;
  zcd_client_t *cli = oci_client (o);
  zcd_reply_t *reply = NULL;
  if (cli == NULL)
    return NULL;
  if (zcd_client_state (cli, id, &reply) < 0)
    {
      if (strcmp (oci_reply_code (reply), "not_found") == 0)
        *absent = true;
      else
        oci_fail_request (o, "state", reply);
      zcd_reply_destroy (&reply);
      return NULL;
    }
  char *status = zcd_reply_get_strdup (reply, "containers/0/status");
  zcd_reply_destroy (&reply);
  return status ? status : strdup ("running");
}

/* The single operand of a command that takes only an id. */
static const char *
s_one_id (oci_t *o, int argc, char **argv, int first)
{
  if (argc - first != 1)
    {
      oci_error (o, "%s: \"%s\" requires exactly 1 argument: the container id", argv[0], argv[0]);
      return NULL;
    }
  if (!oci_valid_id (argv[first]))
    {
      oci_error (o, "invalid container id: %s", argv[first]);
      return NULL;
    }
  return argv[first];
}

static json_t *
s_new_record (const char *id, const char *bundle, const char *pid_file, bool no_pivot)
{
  struct timespec now;
  clock_gettime (CLOCK_REALTIME, &now);
  struct passwd *pw = getpwuid (geteuid ());
  return json_pack ("{s:s, s:s, s:s?, s:b, s:I, s:s, s:s}", "id", id, "bundle", bundle, "pid_file",
                    pid_file, "no_pivot", no_pivot, "created",
                    (json_int_t)now.tv_sec * 1000000000 + now.tv_nsec, "owner",
                    pw ? pw->pw_name : "", "status", "created");
}

static int
s_create (oci_t *o, const char *id, const char *bundle_arg, const char *pid_file, bool no_pivot)
{
  oci_bundle_t b;
  if (oci_bundle_load (o, bundle_arg, &b, false) < 0)
    return OCI_EXIT_FAIL;
  int rc = 0;
  bool absent = false;
  char *status = NULL;
  char *abs_pid_file = pid_file ? zcd_tool_absolute (pid_file) : NULL;
  if (b.terminal)
    rc = oci_error (o, "config.json asks for a terminal: zcd-oci create/start cannot provide one "
                       "(use run, or set process.terminal to false)");
  else if ((status = s_zcd_status (o, id, &absent)) != NULL)
    rc = oci_error (o, "container with given ID already exists");
  else if (!absent)
    rc = OCI_EXIT_FAIL;
  json_t *record = rc == 0 ? s_new_record (id, b.bundle, abs_pid_file, no_pivot) : NULL;
  if (rc == 0 && (record == NULL || oci_record_save (o, id, record, false) < 0))
    rc = OCI_EXIT_FAIL;
  json_decref (record);
  free (status);
  free (abs_pid_file);
  oci_bundle_free (&b);
  return rc;
}

enum
{
  OPT_PID_FILE = 1000,
  OPT_NO_PIVOT,
  OPT_IGNORED,
  OPT_IGNORED_ARG,
};

/* run's own options come first: create's table starts after them. */
#define RUN_ONLY_OPTIONS 3

int
oci_create_args (oci_t *o, int argc, char **argv, oci_create_args_t *a)
{
  static const struct option longopts[] = {
    { "detach", no_argument, NULL, 'd' },
    { "no-subreaper", no_argument, NULL, OPT_IGNORED },
    { "keep", no_argument, NULL, OPT_IGNORED },
    { "bundle", required_argument, NULL, 'b' },
    { "pid-file", required_argument, NULL, OPT_PID_FILE },
    { "no-pivot", no_argument, NULL, OPT_NO_PIVOT },
    { "no-new-keyring", no_argument, NULL, OPT_IGNORED },
    { "preserve-fds", required_argument, NULL, OPT_IGNORED_ARG },
    { NULL, 0, NULL, 0 },
  };
  bool run = strcmp (argv[0], "run") == 0;
  *a = (oci_create_args_t){ .bundle = "." };
  int opt;
  optind = 0;
  while ((opt = getopt_long (
              argc, argv, run ? "b:d" : "b:", run ? longopts : longopts + RUN_ONLY_OPTIONS, NULL))
         != -1)
    {
      if (opt == 'b')
        a->bundle = optarg;
      else if (opt == OPT_PID_FILE)
        a->pid_file = optarg;
      else if (opt == 'd')
        a->detach = true;
      else if (opt == OPT_NO_PIVOT)
        a->no_pivot = true;
      else if (opt == '?')
        return oci_error (o, "%s: bad usage (see zcd-oci --help)", argv[0]);
    }
  a->id = s_one_id (o, argc, argv, optind);
  return a->id ? 0 : OCI_EXIT_FAIL;
}

int
oci_cmd_create (oci_t *o, int argc, char **argv)
{
  oci_create_args_t a;
  int rc = oci_create_args (o, argc, argv, &a);
  return rc ? rc : s_create (o, a.id, a.bundle, a.pid_file, a.no_pivot);
}

int
oci_cmd_start (oci_t *o, int argc, char **argv)
{
  const char *id = s_one_id (o, argc, argv, 1);
  if (id == NULL)
    return OCI_EXIT_FAIL;
  json_t *record = oci_record_load (o, id);
  if (record == NULL)
    {
      bool absent = false;
      char *status = s_zcd_status (o, id, &absent);
      int rc = status   ? oci_error (o, "cannot start an already running container")
               : absent ? oci_error (o, "container does not exist")
                        : OCI_EXIT_FAIL;
      free (status);
      return rc;
    }
  const char *state = json_string_value (json_object_get (record, "status"));
  const char *bundle = json_string_value (json_object_get (record, "bundle"));
  int rc;
  if (state && strcmp (state, "stopped") == 0)
    rc = oci_error (o, "cannot start a container that has stopped");
  else if (bundle == NULL)
    rc = oci_error (o, "record of %s has no bundle", id);
  else
    rc = oci_create_detached (o, id, bundle,
                              json_string_value (json_object_get (record, "pid_file")),
                              json_is_true (json_object_get (record, "no_pivot")));
  /* The record goes once zcd has the container: kept after a failure, so
   * that delete still finds something to delete. */
  if (rc == 0)
    oci_record_remove (o, id);
  json_decref (record);
  return rc;
}

/* kill of a container zcd does not have: a created-only one becomes
 * stopped, as runc's waiting init would on any deadly signal. */
static int
s_kill_record (oci_t *o, const char *id)
{
  json_t *record = oci_record_load (o, id);
  if (record == NULL)
    return oci_error (o, "container does not exist");
  json_object_set_new (record, "status", json_string ("stopped"));
  int rc = oci_record_save (o, id, record, true) < 0 ? OCI_EXIT_FAIL : 0;
  json_decref (record);
  return rc;
}

int
oci_cmd_kill (oci_t *o, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "all", no_argument, NULL, 'a' },
    { NULL, 0, NULL, 0 },
  };
  bool all = false;
  int opt;
  optind = 0;
  while ((opt = getopt_long (argc, argv, "a", longopts, NULL)) != -1)
    if (opt == 'a')
      all = true;
    else
      return oci_error (o, "kill: bad usage (see zcd-oci --help)");
  int left = argc - optind;
  if (left < 1 || left > 2)
    return oci_error (o, "kill: usage: zcd-oci kill [-a] ID [SIGNAL]");
  const char *id = argv[optind];
  int sig = left == 2 ? zcd_tool_parse_signal (argv[optind + 1]) : SIGTERM;
  if (sig == 0)
    return oci_error (o, "unknown signal: %s", argv[optind + 1]);
  if (!oci_valid_id (id))
    return oci_error (o, "container does not exist");
  zcd_client_t *cli = oci_client (o);
  zcd_reply_t *reply = NULL;
  if (cli == NULL)
    return OCI_EXIT_FAIL;
  int rc = 0;
  if (zcd_client_signal (cli, id, "init", sig, all, &reply) < 0)
    rc = strcmp (oci_reply_code (reply), "not_found") == 0 ? s_kill_record (o, id)
                                                           : oci_fail_request (o, "kill", reply);
  zcd_reply_destroy (&reply);
  return rc;
}

/* delete --force of a container zcd runs: SIGKILL to all its processes,
 * and wait for its init's exit (subscribed first, so it cannot be
 * missed).  A paused container is thawed, or the signal would wait. */
static int
s_force_delete (oci_t *o, const char *id, bool paused)
{
  zcd_subscriber_t *sub = oci_subscribe (o, id);
  if (sub == NULL)
    return OCI_EXIT_FAIL;
  zcd_reply_t *reply = NULL;
  int rc = 0;
  if (zcd_client_signal (oci_client (o), id, "init", SIGKILL, true, &reply) < 0)
    {
      /* gone meanwhile: what delete wanted */
      if (strcmp (oci_reply_code (reply), "not_found") != 0)
        rc = oci_fail_request (o, "kill", reply);
      zcd_reply_destroy (&reply);
      zcd_subscriber_destroy (&sub);
      return rc;
    }
  zcd_reply_destroy (&reply);
  if (paused && zcd_client_resume (oci_client (o), id, NULL) < 0)
    oci_debug (o, "resume %s: %s", id, zcd_client_last_error (o->client));
  if (oci_wait_exit (o, sub, id, FORCE_DELETE_WAIT_MS) < 0)
    rc = OCI_EXIT_FAIL;
  zcd_subscriber_destroy (&sub);
  return rc;
}

int
oci_cmd_delete (oci_t *o, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "force", no_argument, NULL, 'f' },
    { NULL, 0, NULL, 0 },
  };
  bool force = false;
  int opt;
  optind = 0;
  while ((opt = getopt_long (argc, argv, "f", longopts, NULL)) != -1)
    if (opt == 'f')
      force = true;
    else
      return oci_error (o, "delete: bad usage (see zcd-oci --help)");
  if (argc - optind != 1)
    return oci_error (o, "delete: \"delete\" requires exactly 1 argument: the container id");
  const char *id = argv[optind];
  if (!oci_valid_id (id))
    return force ? 0 : oci_error (o, "container does not exist");
  json_t *record = oci_record_load (o, id);
  if (record)
    {
      json_decref (record);
      return oci_record_remove (o, id) < 0 ? OCI_EXIT_FAIL : 0;
    }
  bool absent = false;
  char *status = s_zcd_status (o, id, &absent);
  int rc = 0;
  if (status == NULL)
    rc = !absent ? OCI_EXIT_FAIL : force ? 0 : oci_error (o, "container does not exist");
  else if (strcmp (status, "stopped") == 0)
    rc = 0; /* its exit is being handled: zcd forgets it by itself */
  else if (!force)
    rc = oci_error (o, "cannot delete container %s that is not stopped: %s", id, status);
  else
    rc = s_force_delete (o, id, strcmp (status, "paused") == 0);
  free (status);
  return rc;
}
