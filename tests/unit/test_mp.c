/* mp_check, the byte reader and the msgpack helpers against crafted
 * hostile inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/mp.h"

#define CHECK(bytes) mp_check ((const char *) (bytes), sizeof (bytes), MP_MAX_DEPTH)

/* `depth` nested one-element arrays around a nil. */
static char *
s_nested_arrays (int depth, size_t *len)
{
  char *buf = malloc ((size_t) depth + 1);
  memset (buf, 0x91, (size_t) depth);
  buf[depth] = (char) 0xc0;
  *len = (size_t) depth + 1;
  return buf;
}

static void
test_scalars_and_containers_accepted (void **state)
{
  static const unsigned char nil[] = { 0xc0 };
  static const unsigned char fixmap[] = { 0x81, 0xa2, 'o', 'p', 0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n' };
  static const unsigned char u64[] = { 0xcf, 1, 2, 3, 4, 5, 6, 7, 8 };
  static const unsigned char f64[] = { 0xcb, 0, 0, 0, 0, 0, 0, 0, 0 };
  static const unsigned char fixext16[] = { 0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
  static const unsigned char ext8[] = { 0xc7, 2, 5, 'a', 'b' };
  static const unsigned char bin16[] = { 0xc5, 0, 3, 1, 2, 3 };
  static const unsigned char arr16[] = { 0xdc, 0, 2, 0x01, 0xff };
  static const unsigned char empty_map32[] = { 0xdf, 0, 0, 0, 0 };
  assert_int_equal (CHECK (nil), 0);
  assert_int_equal (CHECK (fixmap), 0);
  assert_int_equal (CHECK (u64), 0);
  assert_int_equal (CHECK (f64), 0);
  assert_int_equal (CHECK (fixext16), 0);
  assert_int_equal (CHECK (ext8), 0);
  assert_int_equal (CHECK (bin16), 0);
  assert_int_equal (CHECK (arr16), 0);
  assert_int_equal (CHECK (empty_map32), 0);
}

static void
test_huge_declared_counts_refused (void **state)
{
  static const unsigned char arr32[] = { 0xdd, 0xff, 0xff, 0xff, 0xff };
  static const unsigned char map32[] = { 0xdf, 0xff, 0xff, 0xff, 0xff };
  /* Three bytes follow: enough for three array elements, not for two pairs. */
  static const unsigned char map_pairs_short[] = { 0x82, 0x01, 0x02, 0x03 };
  static const unsigned char arr_ok_exact[] = { 0x93, 0x01, 0x02, 0x03 };
  static const unsigned char str32[] = { 0xdb, 0xff, 0xff, 0xff, 0xff, 'a' };
  static const unsigned char bin32[] = { 0xc6, 0x7f, 0xff, 0xff, 0xff, 'a' };
  static const unsigned char ext32[] = { 0xc9, 0x00, 0x10, 0x00, 0x00, 1, 'a' };
  assert_int_equal (CHECK (arr32), -1);
  assert_int_equal (CHECK (map32), -1);
  assert_int_equal (CHECK (map_pairs_short), -1);
  assert_int_equal (CHECK (arr_ok_exact), 0);
  assert_int_equal (CHECK (str32), -1);
  assert_int_equal (CHECK (bin32), -1);
  assert_int_equal (CHECK (ext32), -1);
}

static void
test_truncated_and_trailing_refused (void **state)
{
  static const unsigned char truncated_fixstr[] = { 0xa5, 'a', 'b' };
  static const unsigned char truncated_str8[] = { 0xd9, 4, 'a' };
  static const unsigned char truncated_len[] = { 0xda, 0x00 };
  static const unsigned char truncated_u32[] = { 0xce, 1, 2 };
  static const unsigned char trailing[] = { 0xc0, 0xc0 };
  static const unsigned char never_used[] = { 0xc1 };
  assert_int_equal (CHECK (truncated_fixstr), -1);
  assert_int_equal (CHECK (truncated_str8), -1);
  assert_int_equal (CHECK (truncated_len), -1);
  assert_int_equal (CHECK (truncated_u32), -1);
  assert_int_equal (CHECK (trailing), -1);
  assert_int_equal (CHECK (never_used), -1);
  assert_int_equal (mp_check ("", 0, MP_MAX_DEPTH), -1);
  assert_int_equal (mp_check (NULL, 0, MP_MAX_DEPTH), -1);
}

static void
test_depth_bound (void **state)
{
  size_t len;
  char *ok = s_nested_arrays (MP_MAX_DEPTH, &len);
  assert_int_equal (mp_check (ok, len, MP_MAX_DEPTH), 0);
  /* msgpack-c must be able to unpack whatever mp_check lets through. */
  msgpack_unpacked u;
  msgpack_unpacked_init (&u);
  zcd_error_t *err = NULL;
  assert_int_equal (mp_unpack (ok, len, &u, &err), 0);
  assert_null (err);
  msgpack_unpacked_destroy (&u);
  free (ok);

  char *deep = s_nested_arrays (MP_MAX_DEPTH + 1, &len);
  assert_int_equal (mp_check (deep, len, MP_MAX_DEPTH), -1);
  msgpack_unpacked_init (&u);
  assert_int_equal (mp_unpack (deep, len, &u, &err), -1);
  assert_non_null (err);
  assert_int_equal (err->code, ZCD_E_INVALID_REQUEST);
  zcd_error_free (&err);
  msgpack_unpacked_destroy (&u);
  free (deep);

  /* Maps count as nesting too. */
  static const unsigned char map_in_map[] = { 0x81, 0xa1, 'a', 0x81, 0xa1, 'b', 0xc0 };
  assert_int_equal (mp_check ((const char *) map_in_map, sizeof map_in_map, 2), 0);
  assert_int_equal (mp_check ((const char *) map_in_map, sizeof map_in_map, 1), -1);
}

static void
s_pack_sample (msgpack_sbuffer *sb)
{
  msgpack_packer pk;
  msgpack_packer_init (&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map (&pk, 6);
  mp_pack_kv_str (&pk, "name", "web1");
  mp_pack_kv_uint (&pk, "count", 7);
  mp_pack_kv_int (&pk, "neg", -5);
  mp_pack_kv_bool (&pk, "flag", true);
  char *argv[] = { "sh", "-c", NULL };
  mp_pack_str (&pk, "args");
  mp_pack_strv (&pk, argv);
  mp_pack_str (&pk, "signed_pos");
  msgpack_pack_int8 (&pk, 9);
}

static void
test_helpers_round_trip (void **state)
{
  msgpack_sbuffer sb;
  msgpack_sbuffer_init (&sb);
  s_pack_sample (&sb);
  msgpack_unpacked u;
  msgpack_unpacked_init (&u);
  zcd_error_t *err = NULL;
  assert_int_equal (mp_unpack (sb.data, sb.size, &u, &err), 0);
  const msgpack_object *m = &u.data;

  char *name = mp_get_strdup (m, "name");
  assert_string_equal (name, "web1");
  free (name);
  assert_null (mp_get_strdup (m, "count"));
  assert_int_equal (mp_get_uint (m, "count", 0), 7);
  assert_int_equal (mp_get_uint (m, "neg", 42), 42);
  assert_int_equal (mp_get_uint (m, "signed_pos", 0), 9);
  int64_t i;
  assert_true (mp_as_int (mp_map_get (m, "neg"), &i));
  assert_int_equal (i, -5);
  assert_true (mp_get_bool (m, "flag", false));
  assert_false (mp_get_bool (m, "absent", false));
  char **v = mp_get_strv (m, "args");
  assert_int_equal (mp_strv_len (v), 2);
  assert_string_equal (v[1], "-c");
  mp_strv_free (v);
  assert_null (mp_get_strv (m, "name"));
  assert_null (mp_map_get (mp_map_get (m, "name"), "x"));

  msgpack_unpacked_destroy (&u);
  msgpack_sbuffer_destroy (&sb);
}

static void
test_strdup_refuses_embedded_nul (void **state)
{
  msgpack_object o = { .type = MSGPACK_OBJECT_STR };
  o.via.str.ptr = "a\0b";
  o.via.str.size = 3;
  assert_null (mp_strdup (&o));
  o.via.str.size = 1;
  char *s = mp_strdup (&o);
  assert_string_equal (s, "a");
  free (s);
  assert_true (mp_str_eq (&o, "a"));
  assert_false (mp_str_eq (&o, "ab"));
}

static void
test_uint_int_ranges (void **state)
{
  msgpack_object big = { .type = MSGPACK_OBJECT_POSITIVE_INTEGER };
  big.via.u64 = UINT64_MAX;
  int64_t i;
  uint64_t u;
  assert_false (mp_as_int (&big, &i));
  assert_true (mp_as_uint (&big, &u));
  assert_true (u == UINT64_MAX);
  msgpack_object neg = { .type = MSGPACK_OBJECT_NEGATIVE_INTEGER };
  neg.via.i64 = -1;
  assert_false (mp_as_uint (&neg, &u));
  bool b;
  assert_false (mp_as_bool (&neg, &b));
}

/* The byte reader: every encoding of each kind, and a wrong kind or a
 * short buffer leaves the cursor where it was. */
static void
test_reader_reads_each_kind (void **state)
{
  static const unsigned char buf[] = {
    0x83,                         /* map of 3 */
    0xa2, 'i', 'd',               /* fixstr */
    0xd9, 3, 'w', 'e', 'b',       /* str 8 */
    0xcd, 0x12, 0x34,             /* uint 16 */
    0xd1, 0xff, 0xfe,             /* int 16: -2 */
    0xd0, 0x05,                   /* int 8, non-negative: 5 */
    0xc3, 0xc0,                   /* true, nil */
    0xc4, 2, 0xaa, 0xbb,          /* bin 8 */
    0xdc, 0, 1, 0xe0,             /* array 16 of 1: fixint -32 */
  };
  mp_reader_t r;
  mp_reader_init (&r, buf, sizeof buf);
  uint32_t n;
  const char *s;
  size_t len;
  uint64_t u;
  int64_t i;
  bool b;
  assert_false (mp_read_array (&r, &n)); /* a map, not an array */
  assert_int_equal (mp_reader_left (&r), sizeof buf);
  assert_true (mp_read_map (&r, &n));
  assert_int_equal (n, 3);
  assert_true (mp_read_str (&r, &s, &len));
  assert_int_equal (len, 2);
  assert_memory_equal (s, "id", 2);
  assert_false (mp_read_uint (&r, &u));
  assert_true (mp_read_str (&r, &s, &len));
  assert_memory_equal (s, "web", 3);
  assert_false (mp_read_str (&r, &s, &len));
  assert_true (mp_read_uint (&r, &u));
  assert_true (u == 0x1234);
  assert_false (mp_read_uint (&r, &u)); /* negative */
  assert_true (mp_read_int (&r, &i));
  assert_true (i == -2);
  assert_true (mp_read_uint (&r, &u));
  assert_true (u == 5);
  assert_true (mp_read_bool (&r, &b));
  assert_true (b);
  assert_false (mp_read_bool (&r, &b));
  assert_true (mp_read_nil (&r));
  assert_false (mp_read_str (&r, &s, &len)); /* bin is not str */
  assert_true (mp_read_bin (&r, &s, &len));
  assert_int_equal (len, 2);
  assert_true (mp_read_array (&r, &n));
  assert_int_equal (n, 1);
  assert_true (mp_read_int (&r, &i));
  assert_true (i == -32);
  assert_int_equal (mp_reader_left (&r), 0);
  assert_false (mp_read_nil (&r));

  /* A str whose payload is cut short is not taken. */
  static const unsigned char cut[] = { 0xa5, 'a', 'b' };
  mp_reader_init (&r, cut, sizeof cut);
  assert_false (mp_read_str (&r, &s, &len));
  assert_int_equal (mp_reader_left (&r), sizeof cut);
  /* uint 64 above INT64_MAX is a uint, not an int. */
  static const unsigned char big[] = { 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0 };
  mp_reader_init (&r, big, sizeof big);
  assert_false (mp_read_int (&r, &i));
  assert_true (mp_read_uint (&r, &u));
  assert_true (u == 0x8000000000000000ULL);
}

static void
test_reader_skip_is_checked (void **state)
{
  static const unsigned char two[] = { 0x92, 0xa1, 'x', 0x81, 0x01, 0xc2, 0xc0 };
  mp_reader_t r;
  mp_reader_init (&r, two, sizeof two);
  assert_true (mp_skip (&r, MP_MAX_DEPTH));
  assert_int_equal (mp_reader_left (&r), 1); /* the trailing nil */
  assert_true (mp_read_nil (&r));
  /* A huge declared count is refused and the cursor stays. */
  static const unsigned char huge[] = { 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0 };
  mp_reader_init (&r, huge, sizeof huge);
  assert_false (mp_skip (&r, MP_MAX_DEPTH));
  assert_int_equal (mp_reader_left (&r), sizeof huge);
  /* Nesting past the bound. */
  mp_reader_init (&r, two, sizeof two - 1);
  assert_false (mp_skip (&r, 1));
  assert_true (mp_skip (&r, 2));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_scalars_and_containers_accepted),
    cmocka_unit_test (test_huge_declared_counts_refused),
    cmocka_unit_test (test_truncated_and_trailing_refused),
    cmocka_unit_test (test_depth_bound),
    cmocka_unit_test (test_helpers_round_trip),
    cmocka_unit_test (test_strdup_refuses_embedded_nul),
    cmocka_unit_test (test_uint_int_ranges),
    cmocka_unit_test (test_reader_reads_each_kind),
    cmocka_unit_test (test_reader_skip_is_checked),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
