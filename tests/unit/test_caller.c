/* core/caller: the User-Id the ZAP handler writes and the edge reads back,
 * the ipc peer address libzmq hands to ZAP, acting as a user on one
 * thread, and setpriv's argv. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/caller.h"
#include "core/mp.h"

static void
test_user_id_round_trip (void **state)
{
  char id[ZCD_USER_ID_MAX];
  zcd_caller_t c;
  zcd_caller_user_id (1001, 1002, id);
  assert_string_equal (id, "u:1001:1002");
  assert_true (zcd_caller_parse (id, &c));
  assert_false (c.admin);
  assert_int_equal (c.uid, 1001);
  assert_int_equal (c.gid, 1002);
  zcd_caller_user_id (0, 0, id);
  assert_string_equal (id, "admin");
  assert_true (zcd_caller_parse (id, &c));
  assert_true (c.admin);
  /* u:0 is root: an administrator too */
  assert_true (zcd_caller_parse ("u:0:5", &c));
  assert_true (c.admin);
}

static void
test_bad_user_ids_are_nobody (void **state)
{
  const char *bad[] = { NULL, "", "root", "u:", "u:1", "u:1:", "u::1", "u:-1:1", "u:1:x",
                        "u:4294967295:1", "u:99999999999:1", "u:1:2:3", "admin ", " u:1:1" };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    {
      zcd_caller_t c = { .admin = true };
      assert_false (zcd_caller_parse (bad[i], &c));
    }
}

static void
test_ipc_address (void **state)
{
  uint32_t uid = 7, gid = 7;
  assert_true (zcd_caller_from_ipc_address ("localhost:1001:1002:345", &uid, &gid));
  assert_int_equal (uid, 1001);
  assert_int_equal (gid, 1002);
  assert_true (zcd_caller_from_ipc_address ("a:b:0:0:1", &uid, &gid));
  assert_int_equal (uid, 0);
  const char *bad[] = { NULL, "", "localhost", "1:2:3", ":1:2:3x", "h:1:2:", "h::2:3", "h:x:2:3" };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_false (zcd_caller_from_ipc_address (bad[i], &uid, &gid));
}

/* Only as root: the switch itself.  A root-only file cannot be opened
 * while acting as nobody, and everything is root's again after. */
static void
test_as_user_scope (void **state)
{
  if (geteuid () != 0)
    skip ();
  char path[] = "/tmp/zcd-caller-XXXXXX";
  int fd = mkstemp (path);
  assert_true (fd >= 0);
  close (fd);
  chmod (path, 0600);
  zcd_as_user_t scope;
  assert_int_equal (zcd_as_user_enter (&scope, 65534, 65534), 0);
  assert_int_equal ((int)geteuid (), 65534);
  errno = 0;
  assert_true (open (path, O_RDONLY) < 0);
  assert_int_equal (errno, EACCES);
  zcd_as_user_leave (&scope);
  assert_int_equal ((int)geteuid (), 0);
  fd = open (path, O_RDONLY);
  assert_true (fd >= 0);
  close (fd);
  /* uid 0: nothing changes */
  assert_int_equal (zcd_as_user_enter (&scope, 0, 0), 0);
  assert_false (scope.active);
  zcd_as_user_leave (&scope);
  unlink (path);
}

static void
test_argv_as_user (void **state)
{
  char *argv[] = { "runc", "kill", "x", NULL };
  char **out = zcd_argv_as_user (argv, 1001, 1001, "1001,27");
  assert_non_null (out);
  assert_true (strstr (out[0], "setpriv") != NULL);
  assert_string_equal (out[1], "--reuid=1001");
  assert_string_equal (out[2], "--regid=1001");
  assert_string_equal (out[3], "--groups=1001,27");
  assert_string_equal (out[4], "--");
  assert_string_equal (out[5], "runc");
  assert_null (out[8]);
  mp_strv_free (out);
  out = zcd_argv_as_user (argv, 0, 0, NULL);
  assert_string_equal (out[0], "runc");
  assert_null (out[3]);
  mp_strv_free (out);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_user_id_round_trip), cmocka_unit_test (test_bad_user_ids_are_nobody),
    cmocka_unit_test (test_ipc_address),        cmocka_unit_test (test_as_user_scope),
    cmocka_unit_test (test_argv_as_user),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
