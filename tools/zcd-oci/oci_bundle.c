/* The few things zcd-oci reads from a bundle's config.json itself: the
 * root path and annotations for `state` (zcd's Container carries neither),
 * and whether a terminal is asked for.  Everything else is the daemon's
 * and the runtime's to check. */
#include "tools/zcd-oci/oci.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void
oci_bundle_free (oci_bundle_t *b)
{
  free (b->bundle);
  free (b->rootfs);
  json_decref (b->annotations);
  memset (b, 0, sizeof *b);
}

/* oci_error, or nothing for a quiet load. */
static int
s_fail (oci_t *o, bool quiet, const char *fmt, const char *a, const char *b)
{
  if (!quiet)
    oci_error (o, fmt, a, b);
  return -1;
}

int
oci_bundle_load (oci_t *o, const char *bundle, oci_bundle_t *out, bool quiet)
{
  memset (out, 0, sizeof *out);
  out->bundle = zcd_tool_absolute (bundle);
  char *config_path = NULL;
  if (out->bundle == NULL || asprintf (&config_path, "%s/config.json", out->bundle) < 0)
    return s_fail (o, quiet, "bundle %s: %s", bundle, strerror (ENOMEM));
  json_error_t jerr;
  json_t *config = json_load_file (config_path, JSON_REJECT_DUPLICATES, &jerr);
  if (config == NULL)
    {
      s_fail (o, quiet, "%s: %s", config_path, jerr.text);
      free (config_path);
      oci_bundle_free (out);
      return -1;
    }
  free (config_path);
  const char *root = json_string_value (json_object_get (json_object_get (config, "root"), "path"));
  json_t *annotations = json_object_get (config, "annotations");
  int rc = 0;
  if (!json_is_object (config) || root == NULL || *root == '\0')
    rc = s_fail (o, quiet, "%s/config.json: %s", out->bundle, "no root.path");
  else if (root[0] == '/')
    out->rootfs = strdup (root);
  else if (asprintf (&out->rootfs, "%s/%s", out->bundle, root) < 0)
    out->rootfs = NULL;
  if (rc == 0 && out->rootfs == NULL)
    rc = s_fail (o, quiet, "bundle %s: %s", bundle, strerror (ENOMEM));
  out->terminal = json_is_true (json_object_get (json_object_get (config, "process"), "terminal"));
  out->annotations = json_is_object (annotations) ? json_incref (annotations) : json_object ();
  json_decref (config);
  if (rc)
    oci_bundle_free (out);
  return rc ? -1 : 0;
}
