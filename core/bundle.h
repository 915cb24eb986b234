/* The OCI bundle check at `create` (PROTOCOL.md `create`, DESIGN.md
 * "Security"): one read and one parse of config.json, on the daemon's loop,
 * so that a bad bundle is a precise `invalid_argument` naming the field
 * instead of an opaque runtime failure seconds later.  It also extracts what
 * the daemon reports about the init process (PROTOCOL.md `Process`) and the
 * cgroup path. */
#ifndef ZCD_BUNDLE_H
#define ZCD_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* config.json larger than this is refused: the daemon reads it on its loop. */
#define BUNDLE_CONFIG_MAX (4u * 1024u * 1024u)

typedef struct bundle_rlimit
{
  char *type; /* "RLIMIT_NOFILE" */
  uint64_t soft, hard;
} bundle_rlimit_t;

typedef struct bundle_info
{
  char *bundle;      /* the absolute bundle path, as given */
  char *oci_version; /* ociVersion */
  char *root_path;   /* root.path, as written (may be relative to the bundle) */
  bool root_readonly;
  char *hostname;     /* NULL when absent */
  char *cgroups_path; /* linux.cgroupsPath, NULL when absent */
  bool has_seccomp;   /* linux.seccomp present (and valid) */

  /* process: what PROTOCOL.md `Process` reports for "init". */
  bool terminal;
  char **args; /* NULL-terminated, at least one element */
  char **env;  /* NULL-terminated, never NULL (empty when absent) */
  char *cwd;   /* "/" when absent */
  uint32_t uid, gid;
  /* process.user as the host sees it: through linux.uidMappings and
   * gidMappings when the container has its own user namespace (a rootless
   * caller's container must run as that caller). */
  uint32_t host_uid, host_gid;
  uint32_t *additional_gids; /* n_additional_gids entries, NULL when none */
  size_t n_additional_gids;
  /* process.capabilities.effective (the set the process runs with);
   * NULL-terminated, never NULL.  An old-style flat array is accepted too. */
  char **capabilities;
  bundle_rlimit_t *rlimits; /* n_rlimits entries, NULL when none */
  size_t n_rlimits;
  bool no_new_privileges;
  char *apparmor_profile; /* NULL when absent */
  char *selinux_label;    /* NULL when absent */
} bundle_info_t;

/* Check the bundle at `bundle` and return what the daemon needs from it.
 * `bundle` must be an absolute path of a directory holding a config.json of
 * at most BUNDLE_CONFIG_MAX bytes that parses as JSON with `ociVersion`,
 * `root.path`, `process` and a non-empty `process.args` of strings, and whose
 * `linux.seccomp` section (if any) libseccomp accepts: valid actions, known
 * architectures, syscall names known for the native or a listed
 * architecture, valid argument operators.
 * On success *out is a new bundle_info_t the caller releases with
 * bundle_info_destroy.  On failure *out is untouched and *err holds an
 * ZCD_E_INVALID_ARGUMENT error whose message names the problem, e.g.
 * "config.json: linux.seccomp.syscalls[3].names[1]: unknown syscall
 * `nosuchcall`" (ZCD_E_INTERNAL only when memory runs out). */
int bundle_load (const char *bundle, bundle_info_t **out, zcd_error_t **err);

/* Release *info (NULL is fine) and set it to NULL. */
void bundle_info_destroy (bundle_info_t **info);

#endif
