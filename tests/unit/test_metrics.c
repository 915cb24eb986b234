/* core/metrics: histogram buckets (bounds inclusive, cumulative in the
 * text, +Inf and _count equal, _sum exact in seconds), label values and
 * HELP text escaped as the Prometheus text format 0.0.4 wants, and
 * core/metrics_http's --metrics-listen syntax. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"
#include "core/metrics_http.h"

static char *
s_take (metrics_text_t *t)
{
  size_t len;
  char *text = metrics_text_take (t, &len);
  assert_non_null (text);
  assert_int_equal (strlen (text), len);
  return text;
}

static void
test_hist_buckets_are_cumulative (void **state)
{
  metrics_hist_t h = { 0 };
  metrics_hist_observe (&h, 100000);       /* exactly 0.0001: in that bucket */
  metrics_hist_observe (&h, 100001);       /* just above: the next */
  metrics_hist_observe (&h, 2000000000);   /* 2 s */
  metrics_hist_observe (&h, 120000000000); /* past the last bound: +Inf only */
  metrics_text_t t;
  metrics_text_init (&t);
  metrics_put_hist (&t, "x_seconds", NULL, 0, &h);
  char *text = s_take (&t);
  assert_non_null (strstr (text, "x_seconds_bucket{le=\"0.0001\"} 1\n"));
  assert_non_null (strstr (text, "x_seconds_bucket{le=\"0.00025\"} 2\n"));
  assert_non_null (strstr (text, "x_seconds_bucket{le=\"1\"} 2\n"));
  assert_non_null (strstr (text, "x_seconds_bucket{le=\"2.5\"} 3\n"));
  assert_non_null (strstr (text, "x_seconds_bucket{le=\"60\"} 3\n"));
  assert_non_null (strstr (text, "x_seconds_bucket{le=\"+Inf\"} 4\n"));
  assert_non_null (strstr (text, "x_seconds_count 4\n"));
  assert_non_null (strstr (text, "x_seconds_sum 122.000200001\n"));
  free (text);
}

static void
test_labels_and_help_are_escaped (void **state)
{
  metrics_text_t t;
  metrics_text_init (&t);
  metrics_family (&t, "y_total", "counter", "a \\ back\nslash");
  metrics_label_t labels[] = { { "id", "a\"b\\c\nd" }, { "pid", "init" } };
  metrics_put_u64 (&t, "y_total", labels, 2, 7);
  metrics_put_seconds (&t, "z_seconds", NULL, 0, 1500000001);
  char *text = s_take (&t);
  assert_string_equal (text, "# HELP y_total a \\\\ back\\nslash\n"
                             "# TYPE y_total counter\n"
                             "y_total{id=\"a\\\"b\\\\c\\nd\",pid=\"init\"} 7\n"
                             "z_seconds 1.500000001\n");
  free (text);
}

static void
test_histogram_labels_keep_le_last (void **state)
{
  metrics_hist_t h = { 0 };
  metrics_hist_observe (&h, 1);
  metrics_text_t t;
  metrics_text_init (&t);
  metrics_label_t op = { "op", "create" };
  metrics_put_hist (&t, "r_seconds", &op, 1, &h);
  char *text = s_take (&t);
  assert_non_null (strstr (text, "r_seconds_bucket{op=\"create\",le=\"0.0001\"} 1\n"));
  assert_non_null (strstr (text, "r_seconds_sum{op=\"create\"} 0.000000001\n"));
  assert_non_null (strstr (text, "r_seconds_count{op=\"create\"} 1\n"));
  free (text);
}

static void
test_empty_text_is_a_text (void **state)
{
  metrics_text_t t;
  metrics_text_init (&t);
  char *text = s_take (&t);
  assert_string_equal (text, "");
  free (text);
}

static void
test_listen_syntax (void **state)
{
  const char *good[] = { "9100", ":9100", "127.0.0.1:9100", "0.0.0.0:1", "[::1]:65535", NULL };
  const char *bad[] = { "",         ":",     "0",         "65536",     "x:9100", "localhost:9100",
                        "1.2.3.4:", "[::1]", "[::1:9100", "::1:9100x", "9100 ",  "-1",
                        NULL };
  for (const char **p = good; *p; p++)
    {
      zcd_error_t *err = NULL;
      if (metrics_http_check_listen (*p, &err) != 0)
        fail_msg ("`%s` refused: %s", *p, err ? err->msg : "?");
    }
  for (const char **p = bad; *p; p++)
    {
      zcd_error_t *err = NULL;
      if (metrics_http_check_listen (*p, &err) == 0)
        fail_msg ("`%s` accepted", *p);
      assert_non_null (strstr (err->msg, "--metrics-listen"));
      zcd_error_free (&err);
    }
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_hist_buckets_are_cumulative),
    cmocka_unit_test (test_labels_and_help_are_escaped),
    cmocka_unit_test (test_histogram_labels_keep_le_last),
    cmocka_unit_test (test_empty_text_is_a_text),
    cmocka_unit_test (test_listen_syntax),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
