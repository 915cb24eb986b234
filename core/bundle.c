#include "core/bundle.h"

#include "core/fsutil.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <seccomp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"

/* A path into config.json for messages: "process.args[2]". */
#define BUNDLE_PATH_MAX 256

/* Paths are message text only: a truncated one is still a useful one. */
static void __attribute__ ((format (printf, 2, 3)))
s_pathf (char path[BUNDLE_PATH_MAX], const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (path, BUNDLE_PATH_MAX, fmt, ap);
  va_end (ap);
}

static void
s_json_decref (json_t **j)
{
  if (*j)
    json_decref (*j);
}
#define cleanup_json __attribute__ ((cleanup (s_json_decref)))

/* Running out of memory while checking a bundle is not something the
 * daemon can report meaningfully; err.c takes the same line. */
static char *
s_xstrdup (const char *s)
{
  char *copy = strdup (s);
  if (copy == NULL)
    abort ();
  return copy;
}

static void *
s_xcalloc (size_t n, size_t size)
{
  void *p = calloc (n ? n : 1, size);
  if (p == NULL)
    abort ();
  return p;
}

static void
s_strv_free (char **v)
{
  if (v == NULL)
    return;
  for (char **p = v; *p; p++)
    free (*p);
  free (v);
}

#define s_invalid(err, ...) zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "config.json: " __VA_ARGS__)

/* JSON null counts as absent: Go encoders write null for empty slices. */
static json_t *
s_get (const json_t *obj, const char *key)
{
  json_t *v = json_object_get (obj, key);
  return json_is_null (v) ? NULL : v;
}

/* Numbers are parsed as reals (JSON_DECODE_INT_AS_REAL) because OCI allows
 * uint64 values such as RLIM_INFINITY that jansson's json_int_t cannot
 * hold; an integral real up to `max` is accepted.  2^64 is what
 * 18446744073709551615 rounds to, so it stands for UINT64_MAX. */
static int
s_as_uint (const json_t *v, uint64_t max, const char *path, uint64_t *out, zcd_error_t **err)
{
  if (!json_is_number (v))
    return s_invalid (err, "%s: must be a non-negative integer", path);
  double d = json_number_value (v);
  if (max == UINT64_MAX && d == 18446744073709551616.0)
    {
      *out = UINT64_MAX;
      return 0;
    }
  if (!(d >= 0 && d < 18446744073709551616.0) || (double) (uint64_t) d != d
      || (uint64_t) d > max)
    return s_invalid (err, "%s: must be an integer from 0 to %llu", path,
                      (unsigned long long) max);
  *out = (uint64_t) d;
  return 0;
}

static int
s_opt_uint (const json_t *obj, const char *key, uint64_t max, const char *parent, uint64_t *out,
            zcd_error_t **err)
{
  const json_t *v = s_get (obj, key);
  if (v == NULL)
    return 0;
  char path[BUNDLE_PATH_MAX];
  s_pathf (path, "%s.%s", parent, key);
  return s_as_uint (v, max, path, out, err);
}

static int
s_opt_string (const json_t *obj, const char *key, const char *parent, char **out,
              zcd_error_t **err)
{
  const json_t *v = s_get (obj, key);
  if (v == NULL)
    return 0;
  if (!json_is_string (v))
    return s_invalid (err, "%s.%s: must be a string", parent, key);
  *out = s_xstrdup (json_string_value (v));
  return 0;
}

static int
s_opt_bool (const json_t *obj, const char *key, const char *parent, bool *out,
            zcd_error_t **err)
{
  const json_t *v = s_get (obj, key);
  if (v == NULL)
    return 0;
  if (!json_is_boolean (v))
    return s_invalid (err, "%s.%s: must be a boolean", parent, key);
  *out = json_is_true (v);
  return 0;
}

static int
s_check_object (const json_t *v, const char *path, zcd_error_t **err)
{
  if (v == NULL)
    return s_invalid (err, "%s: missing", path);
  if (!json_is_object (v))
    return s_invalid (err, "%s: must be an object", path);
  return 0;
}

/* A NULL-terminated copy of an array of strings; an absent key gives an
 * empty vector unless `nonempty` asks for at least one element. */
static int
s_strv (const json_t *obj, const char *key, const char *parent, bool nonempty, char ***out,
        zcd_error_t **err)
{
  const json_t *arr = s_get (obj, key);
  if (arr == NULL && nonempty)
    return s_invalid (err, "%s.%s: missing", parent, key);
  if (arr != NULL && !json_is_array (arr))
    return s_invalid (err, "%s.%s: must be an array of strings", parent, key);
  size_t n = json_array_size (arr);
  if (n == 0 && nonempty)
    return s_invalid (err, "%s.%s: must not be empty", parent, key);
  char **v = s_xcalloc (n + 1, sizeof *v);
  for (size_t i = 0; i < n; i++)
    {
      const json_t *s = json_array_get (arr, i);
      if (!json_is_string (s))
        {
          s_strv_free (v);
          return s_invalid (err, "%s.%s[%zu]: must be a string", parent, key, i);
        }
      v[i] = s_xstrdup (json_string_value (s));
    }
  *out = v;
  return 0;
}

static int
s_read_config (const char *bundle, char **out, size_t *len_out, zcd_error_t **err)
{
  cleanup_close int dirfd = open (bundle, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "bundle `%s`: %s", bundle, strerror (errno));
  if (faccessat (dirfd, "config.json", F_OK, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "bundle `%s` has no config.json", bundle);
  cleanup_close int fd = zcd_open_client_file (dirfd, "config.json", O_RDONLY, S_IFREG,
                                               BUNDLE_CONFIG_MAX, "config.json", err);
  if (fd < 0)
    {
      zcd_error_wrap (err, "bundle `%s`", bundle);
      return -1;
    }
  struct stat st;
  if (fstat (fd, &st) < 0)
    return zcd_fail_errno (err, errno, "bundle `%s`: config.json", bundle);
  /* Sized by fstat, one read in the common case; the buffer grows (up to
   * one byte past the limit) only for a file that grew meanwhile. */
  size_t cap = (size_t) st.st_size + 1;
  cleanup_free char *buf = s_xcalloc (1, cap + 1);
  size_t len = 0;
  while (len <= BUNDLE_CONFIG_MAX)
    {
      if (len == cap)
        {
          cap = cap * 2 > BUNDLE_CONFIG_MAX + 1 ? BUNDLE_CONFIG_MAX + 1 : cap * 2;
          char *grown = realloc (buf, cap + 1);
          if (grown == NULL)
            abort ();
          buf = grown;
        }
      ssize_t n = read (fd, buf + len, cap - len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "bundle `%s`: read config.json: %s",
                         bundle, strerror (errno));
      if (n == 0)
        break;
      len += (size_t) n;
    }
  buf[len] = '\0';
  if (len > BUNDLE_CONFIG_MAX)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                     "bundle `%s`: config.json is larger than %u bytes", bundle,
                     BUNDLE_CONFIG_MAX);
  *len_out = len;
  *out = steal_pointer (&buf);
  return 0;
}

/* ---- seccomp ---------------------------------------------------------- */

static const char *const s_seccomp_actions[] = {
  "SCMP_ACT_KILL",  "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
  "SCMP_ACT_TRAP",  "SCMP_ACT_ERRNO",        "SCMP_ACT_TRACE",
  "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",          "SCMP_ACT_NOTIFY",
};

static const struct
{
  const char *name;
  enum scmp_compare op;
} s_seccomp_ops[] = {
  { "SCMP_CMP_NE", SCMP_CMP_NE }, { "SCMP_CMP_LT", SCMP_CMP_LT },
  { "SCMP_CMP_LE", SCMP_CMP_LE }, { "SCMP_CMP_EQ", SCMP_CMP_EQ },
  { "SCMP_CMP_GE", SCMP_CMP_GE }, { "SCMP_CMP_GT", SCMP_CMP_GT },
  { "SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ },
};

#define BUNDLE_MAX_ARCHES 32

static int
s_check_action (const json_t *v, const char *path, zcd_error_t **err)
{
  if (v == NULL)
    return s_invalid (err, "%s: missing", path);
  if (!json_is_string (v))
    return s_invalid (err, "%s: must be a string", path);
  const char *name = json_string_value (v);
  for (size_t i = 0; i < sizeof s_seccomp_actions / sizeof *s_seccomp_actions; i++)
    if (strcmp (name, s_seccomp_actions[i]) == 0)
      return 0;
  return s_invalid (err, "%s: unknown seccomp action `%s`", path, name);
}

/* OCI spells architectures SCMP_ARCH_X86_64; libseccomp resolves x86_64. */
static uint32_t
s_resolve_arch (const char *oci_name)
{
  static const char prefix[] = "SCMP_ARCH_";
  if (strncmp (oci_name, prefix, sizeof prefix - 1) != 0)
    return 0;
  char lower[64];
  const char *rest = oci_name + sizeof prefix - 1;
  size_t n = strlen (rest);
  if (n == 0 || n >= sizeof lower)
    return 0;
  for (size_t i = 0; i <= n; i++)
    lower[i] = (char) tolower ((unsigned char) rest[i]);
  return seccomp_arch_resolve_name (lower);
}

static int
s_check_architectures (const json_t *seccomp, uint32_t *arches, size_t *n_arches,
                       zcd_error_t **err)
{
  const json_t *arr = s_get (seccomp, "architectures");
  *n_arches = 0;
  if (arr == NULL)
    return 0;
  if (!json_is_array (arr))
    return s_invalid (err, "linux.seccomp.architectures: must be an array of strings");
  size_t i;
  const json_t *v;
  json_array_foreach (arr, i, v)
  {
    if (!json_is_string (v))
      return s_invalid (err, "linux.seccomp.architectures[%zu]: must be a string", i);
    uint32_t token = s_resolve_arch (json_string_value (v));
    if (token == 0)
      return s_invalid (err, "linux.seccomp.architectures[%zu]: unknown architecture `%s`", i,
                        json_string_value (v));
    if (*n_arches < BUNDLE_MAX_ARCHES)
      arches[(*n_arches)++] = token;
  }
  return 0;
}

/* libseccomp answers a name it knows only for another architecture with a
 * negative pseudo number, not __NR_SCMP_ERROR; so "unknown" means unknown
 * to every architecture libseccomp has tables for, which is what a typo
 * looks like, while a multi-arch profile passes. */
static bool
s_syscall_known (const char *name, const uint32_t *arches, size_t n_arches)
{
  if (seccomp_syscall_resolve_name_arch (seccomp_arch_native (), name) != __NR_SCMP_ERROR)
    return true;
  for (size_t i = 0; i < n_arches; i++)
    if (seccomp_syscall_resolve_name_arch (arches[i], name) != __NR_SCMP_ERROR)
      return true;
  return false;
}

static int
s_check_syscall_arg (const json_t *arg, const char *path, zcd_error_t **err)
{
  if (s_check_object (arg, path, err) < 0)
    return -1;
  uint64_t value;
  char field[BUNDLE_PATH_MAX];
  s_pathf (field, "%s.index", path);
  if (s_get (arg, "index") == NULL)
    return s_invalid (err, "%s: missing", field);
  if (s_as_uint (s_get (arg, "index"), 5, field, &value, err) < 0)
    return -1;
  s_pathf (field, "%s.value", path);
  if (s_get (arg, "value") == NULL)
    return s_invalid (err, "%s: missing", field);
  if (s_as_uint (s_get (arg, "value"), UINT64_MAX, field, &value, err) < 0
      || s_opt_uint (arg, "valueTwo", UINT64_MAX, path, &value, err) < 0)
    return -1;
  const json_t *op = s_get (arg, "op");
  if (op == NULL)
    return s_invalid (err, "%s.op: missing", path);
  if (!json_is_string (op))
    return s_invalid (err, "%s.op: must be a string", path);
  for (size_t i = 0; i < sizeof s_seccomp_ops / sizeof *s_seccomp_ops; i++)
    if (strcmp (json_string_value (op), s_seccomp_ops[i].name) == 0)
      return 0;
  return s_invalid (err, "%s.op: unknown comparison `%s`", path, json_string_value (op));
}

static int
s_check_syscall (const json_t *rule, size_t index, const uint32_t *arches, size_t n_arches,
                 zcd_error_t **err)
{
  char path[BUNDLE_PATH_MAX], field[BUNDLE_PATH_MAX];
  s_pathf (path, "linux.seccomp.syscalls[%zu]", index);
  if (s_check_object (rule, path, err) < 0)
    return -1;
  const json_t *names = s_get (rule, "names");
  if (names == NULL || !json_is_array (names) || json_array_size (names) == 0)
    return s_invalid (err, "%s.names: must be a non-empty array of strings", path);
  size_t i;
  const json_t *v;
  json_array_foreach (names, i, v)
  {
    if (!json_is_string (v))
      return s_invalid (err, "%s.names[%zu]: must be a string", path, i);
    if (!s_syscall_known (json_string_value (v), arches, n_arches))
      return s_invalid (err, "%s.names[%zu]: unknown syscall `%s`", path, i,
                        json_string_value (v));
  }
  s_pathf (field, "%s.action", path);
  uint64_t errno_ret;
  if (s_check_action (s_get (rule, "action"), field, err) < 0
      || s_opt_uint (rule, "errnoRet", UINT32_MAX, path, &errno_ret, err) < 0)
    return -1;
  const json_t *args = s_get (rule, "args");
  if (args == NULL)
    return 0;
  if (!json_is_array (args))
    return s_invalid (err, "%s.args: must be an array", path);
  json_array_foreach (args, i, v)
  {
    s_pathf (field, "%s.args[%zu]", path, i);
    if (s_check_syscall_arg (v, field, err) < 0)
      return -1;
  }
  return 0;
}

static int
s_check_seccomp (const json_t *seccomp, zcd_error_t **err)
{
  if (s_check_object (seccomp, "linux.seccomp", err) < 0)
    return -1;
  uint32_t arches[BUNDLE_MAX_ARCHES];
  size_t n_arches;
  uint64_t errno_ret;
  if (s_check_action (s_get (seccomp, "defaultAction"), "linux.seccomp.defaultAction", err) < 0
      || s_opt_uint (seccomp, "defaultErrnoRet", UINT32_MAX, "linux.seccomp", &errno_ret, err)
             < 0
      || s_check_architectures (seccomp, arches, &n_arches, err) < 0)
    return -1;
  char **flagv = NULL;
  if (s_strv (seccomp, "flags", "linux.seccomp", false, &flagv, err) < 0)
    return -1;
  s_strv_free (flagv);
  const json_t *syscalls = s_get (seccomp, "syscalls");
  if (syscalls == NULL)
    return 0;
  if (!json_is_array (syscalls))
    return s_invalid (err, "linux.seccomp.syscalls: must be an array");
  size_t i;
  const json_t *rule;
  json_array_foreach (syscalls, i, rule)
  {
    if (s_check_syscall (rule, i, arches, n_arches, err) < 0)
      return -1;
  }
  return 0;
}

/* ---- user namespace ---------------------------------------------------- */

/* The host id of container id `id` through linux.<key> (uidMappings or
 * gidMappings); unchanged when there is no such mapping list.  An id the
 * list does not map is UINT32_MAX: nobody's. */
static int
s_host_id (const json_t *linux_section, const char *key, uint32_t id, uint32_t *host,
           zcd_error_t **err)
{
  const json_t *maps = s_get (linux_section, key);
  if (maps == NULL)
    return 0;
  if (!json_is_array (maps))
    return s_invalid (err, "linux.%s: must be an array", key);
  *host = UINT32_MAX;
  for (size_t i = 0; i < json_array_size (maps); i++)
    {
      const json_t *m = json_array_get (maps, i);
      char where[64];
      snprintf (where, sizeof where, "linux.%s[%zu]", key, i);
      uint64_t inside = 0, outside = 0, size = 0;
      if (s_check_object (m, where, err) < 0
          || s_opt_uint (m, "containerID", UINT32_MAX, where, &inside, err) < 0
          || s_opt_uint (m, "hostID", UINT32_MAX, where, &outside, err) < 0
          || s_opt_uint (m, "size", UINT32_MAX, where, &size, err) < 0)
        return -1;
      if (id >= inside && id - inside < size && outside + (id - inside) < UINT32_MAX)
        {
          *host = (uint32_t)(outside + (id - inside));
          return 0;
        }
    }
  return 0;
}

/* ---- process ---------------------------------------------------------- */

static int
s_load_user (const json_t *process, bundle_info_t *info, zcd_error_t **err)
{
  const json_t *user = s_get (process, "user");
  if (user == NULL)
    return 0;
  if (s_check_object (user, "process.user", err) < 0)
    return -1;
  uint64_t uid = 0, gid = 0;
  if (s_opt_uint (user, "uid", UINT32_MAX, "process.user", &uid, err) < 0
      || s_opt_uint (user, "gid", UINT32_MAX, "process.user", &gid, err) < 0)
    return -1;
  info->uid = (uint32_t) uid;
  info->gid = (uint32_t) gid;
  const json_t *gids = s_get (user, "additionalGids");
  if (gids == NULL)
    return 0;
  if (!json_is_array (gids))
    return s_invalid (err, "process.user.additionalGids: must be an array");
  info->n_additional_gids = json_array_size (gids);
  info->additional_gids = s_xcalloc (info->n_additional_gids, sizeof *info->additional_gids);
  for (size_t i = 0; i < info->n_additional_gids; i++)
    {
      char path[BUNDLE_PATH_MAX];
      s_pathf (path, "process.user.additionalGids[%zu]", i);
      uint64_t g;
      if (s_as_uint (json_array_get (gids, i), UINT32_MAX, path, &g, err) < 0)
        return -1;
      info->additional_gids[i] = (uint32_t) g;
    }
  return 0;
}

static int
s_load_capabilities (const json_t *process, bundle_info_t *info, zcd_error_t **err)
{
  const json_t *caps = s_get (process, "capabilities");
  if (caps == NULL || json_is_array (caps))
    return s_strv (process, "capabilities", "process", false, &info->capabilities, err);
  if (!json_is_object (caps))
    return s_invalid (err, "process.capabilities: must be an object");
  static const char *const sets[] = { "bounding", "effective", "inheritable", "permitted",
                                      "ambient" };
  for (size_t i = 0; i < sizeof sets / sizeof *sets; i++)
    {
      char **v = NULL;
      if (s_strv (caps, sets[i], "process.capabilities", false, &v, err) < 0)
        return -1;
      if (strcmp (sets[i], "effective") == 0)
        info->capabilities = v;
      else
        s_strv_free (v);
    }
  return 0;
}

static int
s_load_rlimits (const json_t *process, bundle_info_t *info, zcd_error_t **err)
{
  const json_t *rlimits = s_get (process, "rlimits");
  if (rlimits == NULL)
    return 0;
  if (!json_is_array (rlimits))
    return s_invalid (err, "process.rlimits: must be an array");
  info->n_rlimits = json_array_size (rlimits);
  info->rlimits = s_xcalloc (info->n_rlimits, sizeof *info->rlimits);
  for (size_t i = 0; i < info->n_rlimits; i++)
    {
      char path[BUNDLE_PATH_MAX];
      s_pathf (path, "process.rlimits[%zu]", i);
      const json_t *r = json_array_get (rlimits, i);
      bundle_rlimit_t *out = &info->rlimits[i];
      if (s_check_object (r, path, err) < 0 || s_opt_string (r, "type", path, &out->type, err) < 0
          || s_opt_uint (r, "soft", UINT64_MAX, path, &out->soft, err) < 0
          || s_opt_uint (r, "hard", UINT64_MAX, path, &out->hard, err) < 0)
        return -1;
      if (out->type == NULL)
        return s_invalid (err, "%s.type: missing", path);
    }
  return 0;
}

static int
s_load_process (const json_t *config, bundle_info_t *info, zcd_error_t **err)
{
  const json_t *process = s_get (config, "process");
  if (s_check_object (process, "process", err) < 0)
    return -1;
  if (s_opt_bool (process, "terminal", "process", &info->terminal, err) < 0
      || s_strv (process, "args", "process", true, &info->args, err) < 0
      || s_strv (process, "env", "process", false, &info->env, err) < 0
      || s_opt_string (process, "cwd", "process", &info->cwd, err) < 0
      || s_load_user (process, info, err) < 0 || s_load_capabilities (process, info, err) < 0
      || s_load_rlimits (process, info, err) < 0
      || s_opt_bool (process, "noNewPrivileges", "process", &info->no_new_privileges, err) < 0
      || s_opt_string (process, "apparmorProfile", "process", &info->apparmor_profile, err) < 0
      || s_opt_string (process, "selinuxLabel", "process", &info->selinux_label, err) < 0)
    return -1;
  if (info->cwd == NULL)
    info->cwd = s_xstrdup ("/");
  if (info->capabilities == NULL)
    info->capabilities = s_xcalloc (1, sizeof (char *));
  return 0;
}

static int
s_load_config (const json_t *config, bundle_info_t *info, zcd_error_t **err)
{
  if (!json_is_object (config))
    return s_invalid (err, "must hold a JSON object");
  const json_t *version = s_get (config, "ociVersion");
  if (version == NULL)
    return s_invalid (err, "ociVersion: missing");
  if (!json_is_string (version))
    return s_invalid (err, "ociVersion: must be a string");
  info->oci_version = s_xstrdup (json_string_value (version));

  const json_t *root = s_get (config, "root");
  if (s_check_object (root, "root", err) < 0)
    return -1;
  if (s_opt_string (root, "path", "root", &info->root_path, err) < 0
      || s_opt_bool (root, "readonly", "root", &info->root_readonly, err) < 0)
    return -1;
  if (info->root_path == NULL)
    return s_invalid (err, "root.path: missing");
  const json_t *hostname = s_get (config, "hostname");
  if (hostname != NULL && !json_is_string (hostname))
    return s_invalid (err, "hostname: must be a string");
  if (hostname != NULL)
    info->hostname = s_xstrdup (json_string_value (hostname));
  if (s_load_process (config, info, err) < 0)
    return -1;
  info->host_uid = info->uid;
  info->host_gid = info->gid;

  const json_t *linux_section = s_get (config, "linux");
  if (linux_section == NULL)
    return 0;
  if (s_check_object (linux_section, "linux", err) < 0
      || s_opt_string (linux_section, "cgroupsPath", "linux", &info->cgroups_path, err) < 0
      || s_host_id (linux_section, "uidMappings", info->uid, &info->host_uid, err) < 0
      || s_host_id (linux_section, "gidMappings", info->gid, &info->host_gid, err) < 0)
    return -1;
  const json_t *seccomp = s_get (linux_section, "seccomp");
  if (seccomp == NULL)
    return 0;
  info->has_seccomp = true;
  return s_check_seccomp (seccomp, err);
}

int
bundle_load (const char *bundle, bundle_info_t **out, zcd_error_t **err)
{
  if (bundle == NULL || bundle[0] != '/')
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "bundle `%s` is not an absolute path",
                     bundle ? bundle : "");
  cleanup_free char *buf = NULL;
  size_t len = 0;
  if (s_read_config (bundle, &buf, &len, err) < 0)
    return -1;
  json_error_t jerr;
  cleanup_json json_t *config = json_loadb (buf, len, JSON_DECODE_INT_AS_REAL, &jerr);
  if (config == NULL)
    return s_invalid (err, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                      jerr.text);
  bundle_info_t *info = s_xcalloc (1, sizeof *info);
  info->bundle = s_xstrdup (bundle);
  if (s_load_config (config, info, err) < 0)
    {
      bundle_info_destroy (&info);
      return -1;
    }
  *out = info;
  return 0;
}

void
bundle_info_destroy (bundle_info_t **info)
{
  if (info == NULL || *info == NULL)
    return;
  bundle_info_t *self = *info;
  free (self->bundle);
  free (self->oci_version);
  free (self->root_path);
  free (self->hostname);
  free (self->cgroups_path);
  s_strv_free (self->args);
  s_strv_free (self->env);
  free (self->cwd);
  free (self->additional_gids);
  s_strv_free (self->capabilities);
  for (size_t i = 0; i < self->n_rlimits; i++)
    free (self->rlimits[i].type);
  free (self->rlimits);
  free (self->apparmor_profile);
  free (self->selinux_label);
  free (self);
  *info = NULL;
}
