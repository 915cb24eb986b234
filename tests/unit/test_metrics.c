/* core/metrics: histogram buckets (bounds inclusive, cumulative in the
 * text, +Inf and _count equal, _sum exact in seconds), label values and
 * HELP text escaped as the Prometheus text format 0.0.4 wants, and
 * core/metrics_http's --metrics-listen syntax and its bound on what
 * clients that do not read hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
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

/* ---- core/metrics_http against clients that never read ---- */

#define BIG_TEXT (4u << 20)
/* More clients than METRICS_HTTP_SENDING_BYTES lets be sent to at once. */
#define N_LAZY ((int)(METRICS_HTTP_SENDING_BYTES / BIG_TEXT) + 4)

typedef struct
{
  metrics_http_t *http;
  unsigned asked;
} http_ctx_t;

/* Every scrape gets a text of BIG_TEXT bytes at once. */
static void
s_answer_big (void *arg, uint64_t id)
{
  http_ctx_t *ctx = arg;
  ctx->asked++;
  char *text = malloc (BIG_TEXT);
  assert_non_null (text);
  memset (text, 'a', BIG_TEXT);
  metrics_http_answer (ctx->http, id, 200, text, BIG_TEXT);
}

static void
s_stop (loop_t *loop, void *arg)
{
  loop_stop (loop);
}

static void
s_run_for (loop_t *loop, uint64_t ms)
{
  loop_timer_add (loop, ms, s_stop, NULL);
  assert_int_equal (loop_run (loop), 0);
}

/* A client that asked for /metrics and reads nothing: a receive buffer
 * as small as the kernel allows, so the kernel holds little of an answer. */
static int
s_lazy_client (uint16_t port)
{
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int small = 1;
  setsockopt (fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons (port) };
  a.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  assert_int_equal (connect (fd, (struct sockaddr *)&a, sizeof a), 0);
  static const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal (send (fd, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
  return fd;
}

/* The status code of the answer the client has, 0 if none yet. */
static unsigned
s_status (int fd)
{
  char head[16] = "";
  ssize_t n = recv (fd, head, sizeof head - 1, MSG_PEEK | MSG_DONTWAIT);
  unsigned code = 0;
  if (n >= 12 && sscanf (head, "HTTP/1.1 %u", &code) != 1)
    code = 0;
  return code;
}

static void
test_http_bounds_what_slow_clients_hold (void **state)
{
  loop_t *loop = loop_new ();
  int lfd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = { .sin_family = AF_INET };
  a.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  assert_int_equal (bind (lfd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal (listen (lfd, 64), 0);
  assert_int_equal (getsockname (lfd, (struct sockaddr *)&a, &alen), 0);
  http_ctx_t ctx = { 0 };
  zcd_error_t *err = NULL;
  ctx.http = metrics_http_new (loop, lfd, s_answer_big, &ctx, &err);
  assert_non_null (ctx.http);
  /* Clients that never read, asking one after the other. */
  int fds[N_LAZY];
  for (int i = 0; i < N_LAZY; i++)
    {
      fds[i] = s_lazy_client (ntohs (a.sin_port));
      s_run_for (loop, 20);
    }
  for (int waited = 0; s_status (fds[N_LAZY - 1]) == 0 && waited < 5000; waited += 50)
    s_run_for (loop, 50);
  assert_int_equal (ctx.asked, N_LAZY);
  unsigned ok = 0, busy = 0;
  for (int i = 0; i < N_LAZY; i++)
    {
      unsigned code = s_status (fds[i]);
      ok += code == 200;
      busy += code == 503;
    }
  /* What they hold stays within the bound: the rest are told 503. */
  assert_int_equal (ok, METRICS_HTTP_SENDING_BYTES / BIG_TEXT);
  assert_int_equal (busy, N_LAZY - ok);
  /* Once the slow ones are gone, a scrape is answered again. */
  for (int i = 0; i < N_LAZY; i++)
    close (fds[i]);
  s_run_for (loop, 100);
  int again = s_lazy_client (ntohs (a.sin_port));
  for (int waited = 0; s_status (again) == 0 && waited < 5000; waited += 50)
    s_run_for (loop, 50);
  assert_int_equal (s_status (again), 200);
  /* Stopped with a client still holding its answer: nothing leaks. */
  metrics_http_destroy (&ctx.http);
  close (again);
  loop_destroy (&loop);
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
    cmocka_unit_test (test_http_bounds_what_slow_clients_hold),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
