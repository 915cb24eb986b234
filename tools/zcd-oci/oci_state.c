/* zcd-oci state: the OCI state JSON of a container, as `runc state` prints
 * it (Slurm reads its "status").  A container zcd runs is described from
 * zcd's `state` op, plus the root path and annotations of its bundle's
 * config.json (zcd keeps neither); a created-only one from its record. */
#include "tools/zcd-oci/oci.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* RFC 3339 with nanoseconds, trailing zeros trimmed (Go's RFC3339Nano,
 * which runc prints). */
static void
s_format_time (int64_t ns, char *buf, size_t size)
{
  time_t secs = (time_t)(ns / 1000000000);
  long frac = (long)(ns % 1000000000);
  struct tm tm;
  gmtime_r (&secs, &tm);
  size_t n = strftime (buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
  if (frac > 0 && n + 12 < size)
    {
      n += (size_t)snprintf (buf + n, size - n, ".%09ld", frac);
      while (buf[n - 1] == '0')
        buf[--n] = '\0';
    }
  snprintf (buf + n, size - n, "Z");
}

/* Print the state document; bundle details are best effort (a bundle
 * removed since the start still leaves a state). */
static int
s_print_state (oci_t *o, const char *id, const char *status, uint64_t pid, const char *bundle,
               int64_t created_ns, const char *owner)
{
  oci_bundle_t b;
  bool have_bundle = oci_bundle_load (o, bundle, &b, true) == 0;
  char created[64];
  s_format_time (created_ns, created, sizeof created);
  json_t *doc
      = json_pack ("{s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:o}", "ociVersion", OCI_SPEC_VERSION,
                   "id", id, "pid", (json_int_t)pid, "status", status, "bundle", bundle, "rootfs",
                   have_bundle ? b.rootfs : "", "created", created, "owner", owner, "annotations",
                   have_bundle ? json_incref (b.annotations) : json_object ());
  if (have_bundle)
    oci_bundle_free (&b);
  char *text = doc ? json_dumps (doc, JSON_INDENT (2) | JSON_PRESERVE_ORDER) : NULL;
  json_decref (doc);
  if (text == NULL)
    return oci_error (o, "state: out of memory");
  printf ("%s\n", text);
  free (text);
  return 0;
}

/* zcd's view of id: 0 and *reply (caller frees), 1 when zcd has no such
 * container, or -1 after printing why. */
static int
s_zcd_state (oci_t *o, const char *id, zcd_reply_t **reply)
{
  zcd_client_t *cli = oci_client (o);
  if (cli == NULL)
    return -1;
  if (zcd_client_state (cli, id, reply) == 0)
    return 0;
  bool absent = strcmp (oci_reply_code (*reply), "not_found") == 0;
  int rc = absent ? 1 : (oci_fail_request (o, "state", *reply), -1);
  zcd_reply_destroy (reply);
  return rc;
}

static int
s_state_of_record (oci_t *o, const char *id, json_t *record)
{
  const char *status = json_string_value (json_object_get (record, "status"));
  const char *bundle = json_string_value (json_object_get (record, "bundle"));
  const char *owner = json_string_value (json_object_get (record, "owner"));
  json_int_t created = json_integer_value (json_object_get (record, "created"));
  return s_print_state (o, id, status ? status : "created", 0, bundle ? bundle : "", created,
                        owner ? owner : "");
}

static int
s_state (oci_t *o, const char *id)
{
  zcd_reply_t *reply = NULL;
  /* Twice: a `start` in between moves the container from its record to
   * zcd, and must not read as a container that does not exist. */
  for (int attempt = 0; attempt < 2; attempt++)
    {
      int rc = s_zcd_state (o, id, &reply);
      if (rc < 0)
        return OCI_EXIT_FAIL;
      if (rc == 0)
        break;
      json_t *record = oci_record_load (o, id);
      if (record)
        {
          rc = s_state_of_record (o, id, record);
          json_decref (record);
          return rc;
        }
    }
  if (reply == NULL)
    return oci_error (o, "container does not exist");
  const msgpack_object *c = zcd_reply_get (reply, "containers/0");
  char *status = zcd_obj_strdup (zcd_obj_get (c, "status"));
  char *bundle = zcd_obj_strdup (zcd_obj_get (c, "bundle"));
  int64_t created = 0;
  zcd_obj_int (zcd_obj_get (c, "created"), &created);
  uint64_t pid = status && strcmp (status, "stopped") == 0 ? 0 : zcd_tool_init_pid (c);
  int rc
      = s_print_state (o, id, status ? status : "running", pid, bundle ? bundle : "", created, "");
  free (status);
  free (bundle);
  zcd_reply_destroy (&reply);
  return rc;
}

int
oci_cmd_state (oci_t *o, int argc, char **argv)
{
  optind = 0;
  while (getopt_long (argc, argv, "", (const struct option[]){ { NULL, 0, NULL, 0 } }, NULL) != -1)
    return oci_error (o, "state: bad usage (see zcd-oci --help)");
  if (argc - optind != 1)
    return oci_error (o, "state: \"state\" requires exactly 1 argument: the container id");
  if (!oci_valid_id (argv[optind]))
    return oci_error (o, "container does not exist");
  return s_state (o, argv[optind]);
}
