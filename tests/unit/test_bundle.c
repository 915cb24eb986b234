/* core/bundle: config.json checks, against bundles written to temp dirs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/bundle.h"
#include "core/cleanup.h"
#include "core/fsutil.h"

/* A busybox-style bundle, as `runc spec` would write it, trimmed. */
static const char *const s_base_config = "{"
  "\"ociVersion\": \"1.0.2-dev\","
  "\"process\": {"
  "  \"terminal\": true,"
  "  \"user\": {\"uid\": 1000, \"gid\": 100, \"additionalGids\": [10, 4294967295]},"
  "  \"args\": [\"sh\", \"-c\", \"echo hi\"],"
  "  \"env\": [\"PATH=/bin\", \"TERM=xterm\"],"
  "  \"cwd\": \"/srv\","
  "  \"capabilities\": {\"bounding\": [\"CAP_KILL\", \"CAP_CHOWN\"],"
  "                     \"effective\": [\"CAP_KILL\"]},"
  "  \"rlimits\": [{\"type\": \"RLIMIT_NOFILE\", \"hard\": 18446744073709551615,"
  "                 \"soft\": 1024}],"
  "  \"noNewPrivileges\": true,"
  "  \"apparmorProfile\": \"zcd-default\""
  "},"
  "\"root\": {\"path\": \"rootfs\", \"readonly\": true},"
  "\"hostname\": \"box\","
  "\"linux\": {\"cgroupsPath\": \"/zcd/web1\", \"namespaces\": [{\"type\": \"pid\"}]}"
  "}";

/* Four rules; rule 3 holds `openat` and `close` so tests can break names[1]. */
static const char *const s_seccomp = "{"
  "\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": 1,"
  "\"architectures\": [\"SCMP_ARCH_X86_64\", \"SCMP_ARCH_X86\", \"SCMP_ARCH_X32\","
  "                    \"SCMP_ARCH_AARCH64\", \"SCMP_ARCH_ARM\"],"
  "\"flags\": [\"SECCOMP_FILTER_FLAG_LOG\"],"
  "\"syscalls\": ["
  "  {\"names\": [\"read\", \"write\", \"exit_group\", \"arm_fadvise64_64\"],"
  "   \"action\": \"SCMP_ACT_ALLOW\"},"
  "  {\"names\": [\"personality\"], \"action\": \"SCMP_ACT_ALLOW\","
  "   \"args\": [{\"index\": 0, \"value\": 4294967295, \"op\": \"SCMP_CMP_EQ\"}]},"
  "  {\"names\": [\"clone\"], \"action\": \"SCMP_ACT_ALLOW\","
  "   \"args\": [{\"index\": 0, \"value\": 2114060288, \"valueTwo\": 0,"
  "              \"op\": \"SCMP_CMP_MASKED_EQ\"}]},"
  "  {\"names\": [\"openat\", \"close\"], \"action\": \"SCMP_ACT_ERRNO\", \"errnoRet\": 38}"
  "]}";

typedef struct
{
  char dir[64];
} fixture_t;

static int
s_setup (void **state)
{
  fixture_t *f = calloc (1, sizeof *f);
  if (f == NULL)
    return -1;
  strcpy (f->dir, "/tmp/zcd-test-bundle-XXXXXX");
  if (mkdtemp (f->dir) == NULL)
    return -1;
  *state = f;
  return 0;
}

static int
s_teardown (void **state)
{
  fixture_t *f = *state;
  zcd_rm_rf (f->dir, NULL);
  free (f);
  return 0;
}

static void
s_write_config_text (fixture_t *f, const char *text)
{
  char path[128];
  snprintf (path, sizeof path, "%s/config.json", f->dir);
  assert_int_equal (zcd_write_file_atomic (path, text, strlen (text), 0644, NULL), 0);
}

static void
s_write_config (fixture_t *f, json_t *config)
{
  char *text = json_dumps (config, JSON_INDENT (2));
  assert_non_null (text);
  s_write_config_text (f, text);
  free (text);
  json_decref (config);
}

static json_t *
s_base (void)
{
  json_t *config = json_loads (s_base_config, JSON_DECODE_INT_AS_REAL, NULL);
  assert_non_null (config);
  return config;
}

static json_t *
s_base_with_seccomp (void)
{
  json_t *config = s_base ();
  json_t *seccomp = json_loads (s_seccomp, JSON_DECODE_INT_AS_REAL, NULL);
  assert_non_null (seccomp);
  json_object_set_new (json_object_get (config, "linux"), "seccomp", seccomp);
  return config;
}

static json_t *
s_seccomp_of (json_t *config)
{
  return json_object_get (json_object_get (config, "linux"), "seccomp");
}

static json_t *
s_rule (json_t *config, size_t i)
{
  return json_array_get (json_object_get (s_seccomp_of (config), "syscalls"), i);
}

/* Load f->dir and require an invalid_argument error whose message holds
 * `needle`. */
static void
s_expect_invalid_dir (const char *bundle, const char *needle)
{
  bundle_info_t *info = NULL;
  zcd_error_t *err = NULL;
  int rc = bundle_load (bundle, &info, &err);
  if (rc == 0 || err == NULL || strstr (err->msg, needle) == NULL)
    fail_msg ("expected an error holding \"%s\", got rc %d, message \"%s\"", needle, rc,
              err ? err->msg : "(none)");
  assert_int_equal (err->code, ZCD_E_INVALID_ARGUMENT);
  assert_null (info);
  zcd_error_free (&err);
}

static void
s_expect_invalid (fixture_t *f, json_t *config, const char *needle)
{
  s_write_config (f, config);
  s_expect_invalid_dir (f->dir, needle);
}

static bundle_info_t *
s_expect_valid (fixture_t *f)
{
  bundle_info_t *info = NULL;
  zcd_error_t *err = NULL;
  if (bundle_load (f->dir, &info, &err) != 0)
    fail_msg ("bundle_load: %s", err ? err->msg : "(no error)");
  assert_non_null (info);
  return info;
}

static void
test_valid_bundle_extracts_process (void **state)
{
  fixture_t *f = *state;
  s_write_config (f, s_base ());
  bundle_info_t *info = s_expect_valid (f);
  assert_string_equal (info->bundle, f->dir);
  assert_string_equal (info->oci_version, "1.0.2-dev");
  assert_string_equal (info->root_path, "rootfs");
  assert_true (info->root_readonly);
  assert_string_equal (info->hostname, "box");
  assert_string_equal (info->cgroups_path, "/zcd/web1");
  assert_false (info->has_seccomp);
  assert_true (info->terminal);
  assert_string_equal (info->args[0], "sh");
  assert_string_equal (info->args[2], "echo hi");
  assert_null (info->args[3]);
  assert_string_equal (info->env[1], "TERM=xterm");
  assert_null (info->env[2]);
  assert_string_equal (info->cwd, "/srv");
  assert_int_equal (info->uid, 1000);
  assert_int_equal (info->gid, 100);
  assert_int_equal (info->n_additional_gids, 2);
  assert_int_equal (info->additional_gids[0], 10);
  assert_int_equal (info->additional_gids[1], UINT32_MAX);
  assert_string_equal (info->capabilities[0], "CAP_KILL");
  assert_null (info->capabilities[1]);
  assert_int_equal (info->n_rlimits, 1);
  assert_string_equal (info->rlimits[0].type, "RLIMIT_NOFILE");
  assert_true (info->rlimits[0].hard == UINT64_MAX);
  assert_int_equal (info->rlimits[0].soft, 1024);
  assert_true (info->no_new_privileges);
  assert_string_equal (info->apparmor_profile, "zcd-default");
  assert_null (info->selinux_label);
  bundle_info_destroy (&info);
  assert_null (info);
}

static void
test_minimal_bundle_gets_defaults (void **state)
{
  fixture_t *f = *state;
  s_write_config_text (f, "{\"ociVersion\": \"1.0.0\", \"root\": {\"path\": \"/r\"},"
                          " \"process\": {\"args\": [\"true\"], \"env\": null}}");
  bundle_info_t *info = s_expect_valid (f);
  assert_false (info->terminal);
  assert_null (info->cgroups_path);
  assert_null (info->env[0]);
  assert_null (info->capabilities[0]);
  assert_string_equal (info->cwd, "/");
  assert_int_equal (info->uid, 0);
  assert_int_equal (info->n_rlimits, 0);
  bundle_info_destroy (&info);
}

static void
test_valid_seccomp_profile_passes (void **state)
{
  fixture_t *f = *state;
  s_write_config (f, s_base_with_seccomp ());
  bundle_info_t *info = s_expect_valid (f);
  assert_true (info->has_seccomp);
  bundle_info_destroy (&info);
}

/* What `runc spec` writes today, plus a seccomp section, must pass: the
 * check follows real bundles, not only our hand-written one. */
static void
test_runc_spec_with_seccomp_passes (void **state)
{
  fixture_t *f = *state;
  pid_t pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    {
      int devnull = open ("/dev/null", O_WRONLY);
      dup2 (devnull, 2);
      execlp ("runc", "runc", "spec", "--bundle", f->dir, (char *) NULL);
      _exit (127);
    }
  int status;
  assert_int_equal (waitpid (pid, &status, 0), pid);
  if (WIFEXITED (status) && WEXITSTATUS (status) == 127)
    skip ();
  assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
  char path[128];
  snprintf (path, sizeof path, "%s/config.json", f->dir);
  json_t *config = json_load_file (path, JSON_DECODE_INT_AS_REAL, NULL);
  assert_non_null (config);
  json_object_set_new (json_object_get (config, "linux"), "seccomp",
                       json_loads (s_seccomp, JSON_DECODE_INT_AS_REAL, NULL));
  s_write_config (f, config);
  bundle_info_t *info = s_expect_valid (f);
  assert_true (info->has_seccomp);
  assert_string_equal (info->args[0], "sh");
  assert_true (info->terminal);
  bundle_info_destroy (&info);
}

static void
test_bundle_path_problems (void **state)
{
  fixture_t *f = *state;
  s_expect_invalid_dir ("relative/bundle", "not an absolute path");
  s_expect_invalid_dir ("", "not an absolute path");
  s_expect_invalid_dir (f->dir, "has no config.json");
  char missing[128];
  snprintf (missing, sizeof missing, "%s/nonexistent", f->dir);
  s_expect_invalid_dir (missing, "No such file or directory");
  char sub[128];
  snprintf (sub, sizeof sub, "%s/config.json", f->dir);
  assert_int_equal (mkdir (sub, 0755), 0);
  s_expect_invalid_dir (f->dir, "is a directory, not a regular file");
  /* Issue 8: a FIFO config.json is refused at once; opening it must not
   * wait for a writer (that hung the whole daemon). */
  assert_int_equal (rmdir (sub), 0);
  assert_int_equal (mkfifo (sub, 0600), 0);
  s_expect_invalid_dir (f->dir, "is a FIFO, not a regular file");
  assert_int_equal (unlink (sub), 0);
  assert_int_equal (symlink ("/etc/passwd", sub), 0);
  s_expect_invalid_dir (f->dir, "is a symbolic link");
  assert_int_equal (unlink (sub), 0);
}

static void
test_invalid_json_names_line_and_column (void **state)
{
  fixture_t *f = *state;
  s_write_config_text (f, "{\"ociVersion\": \"1.0.0\",\n  \"process\": {\"args\": [\"sh\",]}}");
  s_expect_invalid_dir (f->dir, "invalid JSON at line 2 column");
  s_write_config_text (f, "[1, 2]");
  s_expect_invalid_dir (f->dir, "config.json: must hold a JSON object");
}

static void
test_oversized_config_is_refused (void **state)
{
  fixture_t *f = *state;
  char path[128];
  snprintf (path, sizeof path, "%s/config.json", f->dir);
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true (fd >= 0);
  assert_int_equal (ftruncate (fd, BUNDLE_CONFIG_MAX + 1), 0);
  close (fd);
  s_expect_invalid_dir (f->dir, "larger than 4194304 bytes");
  /* Exactly at the limit is read and parsed (and fails as JSON). */
  fd = open (path, O_WRONLY | O_TRUNC);
  assert_int_equal (ftruncate (fd, BUNDLE_CONFIG_MAX), 0);
  close (fd);
  s_expect_invalid_dir (f->dir, "invalid JSON");
}

static void
test_required_fields (void **state)
{
  fixture_t *f = *state;
  json_t *c = s_base ();
  json_object_del (c, "process");
  s_expect_invalid (f, c, "config.json: process: missing");

  c = s_base ();
  json_object_set_new (c, "process", json_string ("sh"));
  s_expect_invalid (f, c, "config.json: process: must be an object");

  c = s_base ();
  json_object_set_new (json_object_get (c, "process"), "args", json_array ());
  s_expect_invalid (f, c, "config.json: process.args: must not be empty");

  c = s_base ();
  json_object_del (json_object_get (c, "process"), "args");
  s_expect_invalid (f, c, "config.json: process.args: missing");

  c = s_base ();
  json_array_append_new (json_object_get (json_object_get (c, "process"), "args"),
                         json_integer (7));
  s_expect_invalid (f, c, "config.json: process.args[3]: must be a string");

  c = s_base ();
  json_object_del (c, "root");
  s_expect_invalid (f, c, "config.json: root: missing");

  c = s_base ();
  json_object_del (json_object_get (c, "root"), "path");
  s_expect_invalid (f, c, "config.json: root.path: missing");

  c = s_base ();
  json_object_del (c, "ociVersion");
  s_expect_invalid (f, c, "config.json: ociVersion: missing");

  c = s_base ();
  json_object_set_new (c, "ociVersion", json_integer (1));
  s_expect_invalid (f, c, "config.json: ociVersion: must be a string");
}

static void
test_mistyped_optional_fields (void **state)
{
  fixture_t *f = *state;
  json_t *c = s_base ();
  json_object_set_new (json_object_get (c, "process"), "terminal", json_string ("yes"));
  s_expect_invalid (f, c, "config.json: process.terminal: must be a boolean");

  c = s_base ();
  json_object_set_new (json_object_get (json_object_get (c, "process"), "user"), "uid",
                       json_integer (-1));
  s_expect_invalid (f, c, "config.json: process.user.uid: must be an integer from 0 to");

  c = s_base ();
  json_object_set_new (json_object_get (json_object_get (c, "process"), "user"), "gid",
                       json_real (1.5));
  s_expect_invalid (f, c, "config.json: process.user.gid: must be an integer");

  c = s_base ();
  json_object_set_new (json_object_get (c, "linux"), "cgroupsPath", json_true ());
  s_expect_invalid (f, c, "config.json: linux.cgroupsPath: must be a string");

  c = s_base ();
  json_object_set_new (json_object_get (c, "process"), "env", json_string ("PATH=/bin"));
  s_expect_invalid (f, c, "config.json: process.env: must be an array of strings");
}

static void
test_seccomp_unknown_syscall_names_it (void **state)
{
  fixture_t *f = *state;
  json_t *c = s_base_with_seccomp ();
  json_array_set_new (json_object_get (s_rule (c, 3), "names"), 1, json_string ("nosuchcall"));
  s_expect_invalid (f, c,
                    "config.json: linux.seccomp.syscalls[3].names[1]: unknown syscall "
                    "`nosuchcall`");
}

static void
test_seccomp_bad_actions (void **state)
{
  fixture_t *f = *state;
  json_t *c = s_base_with_seccomp ();
  json_object_set_new (s_rule (c, 2), "action", json_string ("SCMP_ACT_MAYBE"));
  s_expect_invalid (f, c,
                    "config.json: linux.seccomp.syscalls[2].action: unknown seccomp action "
                    "`SCMP_ACT_MAYBE`");

  c = s_base_with_seccomp ();
  json_object_set_new (s_seccomp_of (c), "defaultAction", json_string ("allow"));
  s_expect_invalid (f, c, "config.json: linux.seccomp.defaultAction: unknown seccomp action");

  c = s_base_with_seccomp ();
  json_object_del (s_seccomp_of (c), "defaultAction");
  s_expect_invalid (f, c, "config.json: linux.seccomp.defaultAction: missing");

  c = s_base_with_seccomp ();
  json_object_del (s_rule (c, 0), "action");
  s_expect_invalid (f, c, "config.json: linux.seccomp.syscalls[0].action: missing");
}

static void
test_seccomp_bad_architecture (void **state)
{
  fixture_t *f = *state;
  json_t *c = s_base_with_seccomp ();
  json_array_set_new (json_object_get (s_seccomp_of (c), "architectures"), 2,
                      json_string ("SCMP_ARCH_VAX"));
  s_expect_invalid (f, c,
                    "config.json: linux.seccomp.architectures[2]: unknown architecture "
                    "`SCMP_ARCH_VAX`");

  c = s_base_with_seccomp ();
  json_array_set_new (json_object_get (s_seccomp_of (c), "architectures"), 0,
                      json_string ("x86_64"));
  s_expect_invalid (f, c, "linux.seccomp.architectures[0]: unknown architecture `x86_64`");
}

static void
test_seccomp_bad_args (void **state)
{
  fixture_t *f = *state;
  json_t *c = s_base_with_seccomp ();
  json_t *arg = json_array_get (json_object_get (s_rule (c, 1), "args"), 0);
  json_object_set_new (arg, "op", json_string ("SCMP_CMP_ALMOST"));
  s_expect_invalid (f, c,
                    "config.json: linux.seccomp.syscalls[1].args[0].op: unknown comparison "
                    "`SCMP_CMP_ALMOST`");

  c = s_base_with_seccomp ();
  arg = json_array_get (json_object_get (s_rule (c, 2), "args"), 0);
  json_object_set_new (arg, "index", json_integer (6));
  s_expect_invalid (f, c, "linux.seccomp.syscalls[2].args[0].index: must be an integer from 0 to 5");

  c = s_base_with_seccomp ();
  arg = json_array_get (json_object_get (s_rule (c, 2), "args"), 0);
  json_object_del (arg, "value");
  s_expect_invalid (f, c, "linux.seccomp.syscalls[2].args[0].value: missing");

  c = s_base_with_seccomp ();
  json_object_set_new (s_rule (c, 0), "names", json_array ());
  s_expect_invalid (f, c, "linux.seccomp.syscalls[0].names: must be a non-empty array");

  c = s_base_with_seccomp ();
  json_object_set_new (s_rule (c, 3), "errnoRet", json_integer (-2));
  s_expect_invalid (f, c, "linux.seccomp.syscalls[3].errnoRet: must be an integer");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_valid_bundle_extracts_process, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_minimal_bundle_gets_defaults, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_valid_seccomp_profile_passes, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_runc_spec_with_seccomp_passes, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_bundle_path_problems, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_invalid_json_names_line_and_column, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_oversized_config_is_refused, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_required_fields, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_mistyped_optional_fields, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_seccomp_unknown_syscall_names_it, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_seccomp_bad_actions, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_seccomp_bad_architecture, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_seccomp_bad_args, s_setup, s_teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
