/* zctr stats: resource usage as a table, once or refreshed (--watch).
 * CPU% is the CPU time a container used between two samples over the time
 * between them (the replies' timestamps): a rate needs two points, so one
 * `zctr stats` takes two samples half a second apart.  100% is one CPU. */
#include "tools/zctr/zctr.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

enum
{
  OPT_WATCH = ZCTR_OPT_FIRST_LOCAL,
  OPT_INTERVAL,
};

#define ONE_SHOT_GAP_MS 500
#define DEFAULT_INTERVAL_MS 2000
/* a request in flight is abandoned this often to look at the signal flag */
#define POLL_SLICE_MS 100

typedef struct
{
  bool watch;
  int interval_ms;
  const char *const *ids; /* NULL-terminated; NULL = every container */
} stats_args_t;

typedef struct
{
  char *id;
  uint64_t cpu_ns, mem, limit, pids;
  double cpu_pct; /* -1 until there are two samples */
} stats_row_t;

typedef struct
{
  stats_row_t *rows;
  size_t n;
  int64_t ts; /* ns, the daemon's clock */
} sample_t;

static volatile sig_atomic_t s_stop;

static void
s_on_signal (int sig)
{
  (void)sig;
  s_stop = 1;
}

static void
s_sample_free (sample_t *s)
{
  for (size_t i = 0; i < s->n; i++)
    free (s->rows[i].id);
  free (s->rows);
  *s = (sample_t){ 0 };
}

static bool
s_wanted (const stats_args_t *a, const char *id)
{
  if (a->ids == NULL || a->ids[0] == NULL)
    return true;
  for (size_t i = 0; a->ids[i]; i++)
    if (strcmp (a->ids[i], id) == 0)
      return true;
  return false;
}

/* The rows of a stats reply (only the wanted ids: in --watch the daemon is
 * asked for every container, so one that leaves fails nothing). */
static void
s_sample_from (sample_t *out, const zcd_reply_t *reply, const stats_args_t *a)
{
  *out = (sample_t){ 0 };
  if (!zcd_reply_get_int (reply, "timestamp", &out->ts))
    out->ts = zctr_now_ns ();
  const msgpack_object *stats = zcd_reply_get (reply, "stats");
  if (stats == NULL || stats->type != MSGPACK_OBJECT_MAP || stats->via.map.size == 0)
    return;
  out->rows = calloc (stats->via.map.size, sizeof *out->rows);
  if (out->rows == NULL)
    abort ();
  for (uint32_t i = 0; i < stats->via.map.size; i++)
    {
      const msgpack_object *key = &stats->via.map.ptr[i].key;
      const msgpack_object *s = &stats->via.map.ptr[i].val;
      char *id = zcd_obj_strdup (key);
      if (id == NULL || !s_wanted (a, id))
        {
          free (id);
          continue;
        }
      stats_row_t *r = &out->rows[out->n++];
      r->id = id;
      r->cpu_pct = -1;
      zcd_obj_uint (zcd_obj_get (s, "cpu/usage/total"), &r->cpu_ns);
      zcd_obj_uint (zcd_obj_get (s, "memory/usage/usage"), &r->mem);
      zcd_obj_uint (zcd_obj_get (s, "memory/usage/limit"), &r->limit);
      zcd_obj_uint (zcd_obj_get (s, "pids/current"), &r->pids);
    }
}

/* CPU% of each row against the same container in prev (a new container,
 * or one whose counter went back, a new cgroup under an old id, has none). */
static void
s_rates (sample_t *cur, const sample_t *prev)
{
  if (prev == NULL || cur->ts <= prev->ts)
    return;
  double dt = (double)(cur->ts - prev->ts);
  for (size_t i = 0; i < cur->n; i++)
    for (size_t j = 0; j < prev->n; j++)
      if (strcmp (cur->rows[i].id, prev->rows[j].id) == 0)
        {
          if (cur->rows[i].cpu_ns >= prev->rows[j].cpu_ns)
            cur->rows[i].cpu_pct
                = 100.0 * (double)(cur->rows[i].cpu_ns - prev->rows[j].cpu_ns) / dt;
          break;
        }
}

static int
s_by_cpu (const void *a, const void *b)
{
  const stats_row_t *x = a, *y = b;
  if (x->cpu_pct != y->cpu_pct)
    return x->cpu_pct > y->cpu_pct ? -1 : 1;
  return strcmp (x->id, y->id);
}

/* The table of up to max_rows rows (0 = all), busiest first. */
static zctr_table_t *
s_table (sample_t *s, size_t max_rows)
{
  qsort (s->rows, s->n, sizeof *s->rows, s_by_cpu);
  zctr_table_t *t = zctr_table_new ();
  zctr_table_column (t, "ID", ZCTR_COL_SHRINK);
  static const char *const headers[] = { "CPU%", "CPU-TIME", "MEMORY", "LIMIT", "MEM%", "PIDS" };
  for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++)
    zctr_table_column (t, headers[i], 0);
  for (size_t i = 0; i < s->n && (max_rows == 0 || i < max_rows); i++)
    {
      const stats_row_t *r = &s->rows[i];
      zctr_fmt_t a, b, c, d, e;
      bool limited = zctr_limit_set (r->limit);
      zctr_table_cell (t, "%s", r->id);
      zctr_table_cell (t, "%s", zctr_fmt_percent (a, r->cpu_pct));
      zctr_table_cell (t, "%s", zctr_fmt_cpu_time (b, r->cpu_ns));
      zctr_table_cell (t, "%s", zctr_fmt_bytes (c, r->mem));
      zctr_table_cell (t, "%s", limited ? zctr_fmt_bytes (d, r->limit) : "-");
      zctr_table_cell (
          t, "%s", zctr_fmt_percent (e, limited ? 100.0 * (double)r->mem / (double)r->limit : -1));
      zctr_table_cell (t, "%llu", (unsigned long long)r->pids);
    }
  return t;
}

static int64_t
s_mono_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep ms, or less when a signal sets s_stop. */
static void
s_wait (int ms)
{
  int64_t deadline = s_mono_ms () + ms;
  for (int64_t left; !s_stop && (left = deadline - s_mono_ms ()) > 0;)
    {
      struct timespec ts = { .tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000 };
      nanosleep (&ts, NULL);
    }
}

/* The reason into err; -1. */
static int __attribute__ ((format (printf, 3, 4)))
s_failed (char *err, size_t cap, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (err, cap, fmt, ap);
  va_end (ap);
  return -1;
}

/* One stats request for every container that a signal can cut short
 * (the typed call waits out its timeout through EINTR).  0 and *reply, or
 * -1 with the reason in err. */
static int
s_request (zctr_t *z, zcd_client_t *cli, zcd_reply_t **reply, char *err, size_t cap)
{
  *reply = NULL;
  zcd_body_t *body = zcd_body_new ("stats");
  size_t len = 0;
  const char *data = body ? zcd_body_data (body, &len) : NULL;
  uint64_t rid = data ? zcd_client_send (cli, data, len) : 0;
  zcd_body_destroy (&body);
  if (rid == 0)
    return s_failed (err, cap, "%s", zcd_client_last_error (cli));
  int64_t deadline = z->timeout_ms < 0 ? INT64_MAX : s_mono_ms () + z->timeout_ms;
  while (!s_stop)
    {
      zcd_reply_t *got = NULL;
      if (zcd_client_recv (cli, POLL_SLICE_MS, &got) < 0)
        {
          if (errno != EAGAIN && errno != EINTR && errno != EPROTO)
            return s_failed (err, cap, "%s", zcd_client_last_error (cli));
          if (s_mono_ms () >= deadline)
            return s_failed (err, cap, "no reply within %d ms", z->timeout_ms);
          continue;
        }
      if (zcd_reply_rid (got) != rid || !zcd_reply_final (got))
        {
          zcd_reply_destroy (&got); /* a reply to a request given up on */
          continue;
        }
      if (zcd_reply_ok (got))
        {
          *reply = got;
          return 0;
        }
      const char *code = zcd_reply_error_code (got), *msg = zcd_reply_error_message (got);
      s_failed (err, cap, "%s: %s", code ? code : "?", msg ? msg : "");
      zcd_reply_destroy (&got);
      return -1;
    }
  return s_failed (err, cap, "interrupted");
}

/* The terminal's size, or false when stdout is not one. */
static bool
s_terminal (struct winsize *ws)
{
  if (!isatty (STDOUT_FILENO) || ioctl (STDOUT_FILENO, TIOCGWINSZ, ws) < 0)
    return false;
  if (ws->ws_col == 0)
    ws->ws_col = 80;
  if (ws->ws_row == 0)
    ws->ws_row = 24;
  return true;
}

typedef struct
{
  bool tty, first;
  const char *error; /* the last request's failure, shown in place of the table */
} frame_t;

/* One refresh: on a terminal over the last one, from its top-left corner,
 * every line cleared to its end and the rest of the screen below; else
 * the table alone, a blank line after the one before. */
static void
s_frame (frame_t *f, sample_t *s, const stats_args_t *a)
{
  struct winsize ws = { 0 };
  bool tty = f->tty && s_terminal (&ws);
  const char *eol = tty ? "\033[K\n" : "\n";
  size_t room = tty && ws.ws_row > 3 ? ws.ws_row - 3 : 0; /* summary, header, cursor */
  if (tty)
    {
      char head[256], now[16];
      time_t t = time (NULL);
      struct tm tm;
      if (localtime_r (&t, &tm) == NULL || strftime (now, sizeof now, "%H:%M:%S", &tm) == 0)
        snprintf (now, sizeof now, "-");
      int n = snprintf (head, sizeof head, "zctr stats  %s  %zu container%s", now, s->n,
                        s->n == 1 ? "" : "s");
      if (room && s->n > room)
        n += snprintf (head + n, sizeof head - (size_t)n, " (%zu shown)", room);
      snprintf (head + n, sizeof head - (size_t)n, "  every %.1fs  (Ctrl-C quits)",
                a->interval_ms / 1000.0);
      if (strlen (head) > ws.ws_col)
        head[ws.ws_col] = '\0';
      printf ("%s%s%s", f->first ? "\033[H\033[2J" : "\033[H", head, eol);
    }
  else if (!f->first)
    fputc ('\n', stdout);
  f->first = false;
  if (f->error)
    printf ("zctr: stats: %s%s", f->error, eol);
  else
    {
      zctr_table_t *t = s_table (s, room);
      zctr_table_style_t style = { .max_width = tty ? ws.ws_col : 0, .eol = eol };
      zctr_table_print (t, stdout, &style);
      zctr_table_destroy (&t);
    }
  if (tty)
    fputs ("\033[J", stdout);
  fflush (stdout);
}

static int
s_watch (zctr_t *z, zcd_client_t *cli, const stats_args_t *a)
{
  struct sigaction sa = { .sa_handler = s_on_signal }; /* no SA_RESTART: waits end */
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  frame_t f = { .tty = isatty (STDOUT_FILENO), .first = true };
  sample_t prev = { 0 };
  bool primed = false;
  char err[512];
  while (!s_stop)
    {
      zcd_reply_t *reply = NULL;
      if (s_request (z, cli, &reply, err, sizeof err) < 0)
        {
          if (s_stop)
            break;
          /* the daemon restarting, say: keep watching, show why it is blank */
          f.error = err;
          if (f.tty && !z->json)
            s_frame (&f, &prev, a);
          else /* a program reading tables or JSON gets no error text */
            zctr_error (0, "stats: %s", err);
          s_wait (a->interval_ms);
          continue;
        }
      f.error = NULL;
      sample_t cur;
      s_sample_from (&cur, reply, a);
      if (z->json)
        {
          zcd_json_print (stdout, zcd_reply_root (reply), false);
          fputc ('\n', stdout);
          fflush (stdout);
        }
      zcd_reply_destroy (&reply);
      s_rates (&cur, primed ? &prev : NULL);
      bool show = primed || z->json;
      s_sample_free (&prev);
      prev = cur;
      primed = true;
      if (!z->json && show)
        s_frame (&f, &cur, a);
      if (ferror (stdout))
        break; /* the reader went away */
      /* the first frame waits for a second sample: CPU% from the start */
      s_wait (show ? a->interval_ms
                   : (a->interval_ms < ONE_SHOT_GAP_MS ? a->interval_ms : ONE_SHOT_GAP_MS));
    }
  s_sample_free (&prev);
  return 0;
}

static int
s_once (zctr_t *z, zcd_client_t *cli, const stats_args_t *a)
{
  zcd_reply_t *first = NULL, *second = NULL;
  if (zcd_client_stats (cli, a->ids, &first) < 0)
    {
      zcd_reply_destroy (&first);
      return zctr_fail_request (z, "stats");
    }
  if (z->json)
    {
      zctr_print_json (zcd_reply_root (first));
      zcd_reply_destroy (&first);
      return 0;
    }
  s_wait (ONE_SHOT_GAP_MS);
  int rc = zcd_client_stats (cli, a->ids, &second);
  if (rc < 0)
    rc = zctr_fail_request (z, "stats");
  else
    {
      sample_t s1, s2;
      s_sample_from (&s1, first, a);
      s_sample_from (&s2, second, a);
      s_rates (&s2, &s1);
      zctr_table_t *t = s_table (&s2, 0);
      zctr_table_print (t, stdout, NULL);
      zctr_table_destroy (&t);
      s_sample_free (&s1);
      s_sample_free (&s2);
    }
  zcd_reply_destroy (&first);
  zcd_reply_destroy (&second);
  return rc;
}

static int
s_stats_opt (void *ctx, int opt, const char *arg)
{
  stats_args_t *a = ctx;
  if (opt == OPT_WATCH)
    {
      a->watch = true;
      return 0;
    }
  char *end = NULL;
  errno = 0;
  double secs = strtod (arg, &end);
  if (errno || end == arg || *end || !(secs >= 0.1 && secs <= 3600))
    return zctr_error (ZCTR_EXIT_USAGE, "--interval: not a number of seconds from 0.1 to 3600: %s",
                       arg);
  a->interval_ms = (int)(secs * 1000 + 0.5);
  return 0;
}

int
zctr_cmd_stats (zctr_t *z, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "watch", no_argument, NULL, OPT_WATCH },
    { "interval", required_argument, NULL, OPT_INTERVAL },
    { NULL, 0, NULL, 0 },
  };
  stats_args_t a = { .interval_ms = -1 };
  int rc = zctr_getopt (z, argc, argv, longopts, s_stats_opt, &a);
  if (rc)
    return rc;
  if (a.interval_ms >= 0 && !a.watch)
    return zctr_error (ZCTR_EXIT_USAGE, "--interval: only with --watch");
  if (a.interval_ms < 0)
    a.interval_ms = DEFAULT_INTERVAL_MS;
  a.ids = (const char *const *)argv + optind;
  zcd_client_t *cli = zctr_client (z);
  if (cli == NULL)
    return ZCTR_EXIT_FAIL;
  return a.watch ? s_watch (z, cli, &a) : s_once (z, cli, &a);
}
