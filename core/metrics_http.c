/* GET /metrics with libmicrohttpd in the daemon's loop (see
 * core/metrics_http.h).  A scrape's connection goes through these states:
 * NEW (headers read), WAITING (suspended, its text asked for), ANSWERED
 * (resumed with its text), SENT; MHD's completion callback frees it. */
#include "core/metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <czmq.h>

#include "core/edge.h"
#include "core/log.h"

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef enum
{
  SCRAPE_NEW,
  SCRAPE_WAITING,
  SCRAPE_ANSWERED,
  SCRAPE_SENT
} scrape_state_t;

typedef struct scrape
{
  metrics_http_t *http;
  uint64_t id;
  struct MHD_Connection *conn;
  scrape_state_t state;
  loop_timer_t *deadline;
  unsigned status;
  char *text;
  size_t len;
  size_t sending; /* bytes of its answer counted in http->sending_bytes */
} scrape_t;

/* Status codes counted, in this order. */
static const unsigned s_codes[] = { 200, 400, 404, 405, 503 };
#define N_CODES (sizeof s_codes / sizeof s_codes[0])

struct metrics_http
{
  loop_t *loop;
  struct MHD_Daemon *mhd;
  loop_watch_t *watch; /* MHD's epoll fd */
  loop_timer_t *timer; /* MHD_get_timeout, or 0 ms after a resume */
  metrics_http_fn fn;
  void *arg;
  zhashx_t *scrapes; /* id -> scrape_t, from NEW to MHD's completion */
  zlistx_t *to_ask;  /* ids of scrapes just suspended, for fn */
  loop_timer_t *ask_timer;
  uint64_t next_id;
  size_t waiting;
  size_t sending_bytes; /* answers not yet all sent (METRICS_HTTP_SENDING_BYTES) */
  uint64_t responses[N_CODES];
  /* metrics_http_destroy has begun: the last MHD_run must not suspend a
   * connection again, since MHD_stop_daemon aborts the process when one
   * is still suspended (daemon.c, close_all_connections). */
  bool stopping;
};

/* ------------------------------------------------------------------ */
/* The listening socket                                                */

/* text -> address; *err says what is wrong. */
static int
s_parse (const char *text, struct sockaddr_storage *ss, socklen_t *len, zcd_error_t **err)
{
  char host[64] = "127.0.0.1";
  const char *port = text;
  const char *colon = strrchr (text, ':');
  if (text[0] == '[')
    {
      const char *close = strchr (text, ']');
      if (close == NULL || close[1] != ':' || (size_t)(close - text - 1) >= sizeof host)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                         "--metrics-listen `%s`: an IPv6 address is [ADDR]:PORT", text);
      snprintf (host, sizeof host, "%.*s", (int)(close - text - 1), text + 1);
      port = close + 2;
    }
  else if (colon)
    {
      if ((size_t)(colon - text) >= sizeof host)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--metrics-listen `%s`: bad address", text);
      if (colon > text)
        snprintf (host, sizeof host, "%.*s", (int)(colon - text), text);
      port = colon + 1;
    }
  char *end;
  errno = 0;
  long p = strtol (port, &end, 10);
  if (*port == '\0' || *end || errno || p < 1 || p > 65535)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                     "--metrics-listen `%s`: the port must be a number from 1 to 65535 "
                     "(ADDR:PORT, :PORT or PORT)",
                     text);
  memset (ss, 0, sizeof *ss);
  struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
  if (inet_pton (AF_INET, host, &v4->sin_addr) == 1)
    {
      v4->sin_family = AF_INET;
      v4->sin_port = htons ((uint16_t)p);
      *len = sizeof *v4;
      return 0;
    }
  if (inet_pton (AF_INET6, host, &v6->sin6_addr) == 1)
    {
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons ((uint16_t)p);
      *len = sizeof *v6;
      return 0;
    }
  return zcd_fail (err, ZCD_E_INVALID_ARGUMENT,
                   "--metrics-listen `%s`: `%s` is not a numeric IPv4 address or a "
                   "bracketed IPv6 one",
                   text, host);
}

int
metrics_http_check_listen (const char *text, zcd_error_t **err)
{
  struct sockaddr_storage ss;
  socklen_t len;
  return s_parse (text, &ss, &len, err);
}

int
metrics_http_listen (const char *text, zcd_error_t **err)
{
  struct sockaddr_storage ss;
  socklen_t len;
  if (s_parse (text, &ss, &len, err) < 0)
    return -1;
  int fd = socket (ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return zcd_fail_errno (err, errno, "--metrics-listen `%s`: socket", text);
  int one = 1;
  setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss.ss_family == AF_INET6)
    setsockopt (fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind (fd, (struct sockaddr *)&ss, len) < 0 || listen (fd, 64) < 0)
    {
      int e = errno;
      close (fd);
      return zcd_fail_errno (err, e, "--metrics-listen `%s`: bind", text);
    }
  return fd;
}

/* ------------------------------------------------------------------ */
/* Driving MHD from the loop                                           */

static void s_run (metrics_http_t *self);

static void
s_on_timer (loop_t *loop, void *arg)
{
  metrics_http_t *self = arg;
  self->timer = NULL;
  s_run (self);
}

/* MHD wants to run again after `ms` (a timeout to check, data it already
 * holds): one timer, moved as MHD's wish changes. */
static void
s_arm (metrics_http_t *self, uint64_t ms)
{
  loop_timer_cancel (self->loop, self->timer);
  self->timer = loop_timer_add (self->loop, ms, s_on_timer, self);
}

static void
s_run (metrics_http_t *self)
{
  MHD_run (self->mhd);
  MHD_UNSIGNED_LONG_LONG ms;
  if (MHD_get_timeout (self->mhd, &ms) == MHD_YES)
    s_arm (self, ms);
  else
    {
      loop_timer_cancel (self->loop, self->timer);
      self->timer = NULL;
    }
}

static void
s_on_epoll (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  s_run (arg);
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */

static void
s_count (metrics_http_t *self, unsigned status)
{
  for (size_t i = 0; i < N_CODES; i++)
    if (s_codes[i] == status)
      self->responses[i]++;
}

/* Queue `text` (taken) as the response; MHD sends it and, for an
 * unfinished request, closes the connection after it. */
static enum MHD_Result
s_respond (metrics_http_t *self, struct MHD_Connection *conn, unsigned status, char *text,
           size_t len, const char *content_type)
{
  struct MHD_Response *r = MHD_create_response_from_buffer (len, text, MHD_RESPMEM_MUST_FREE);
  if (r == NULL)
    {
      free (text);
      return MHD_NO;
    }
  MHD_add_response_header (r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header (r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  enum MHD_Result ok = MHD_queue_response (conn, status, r);
  MHD_destroy_response (r);
  s_count (self, status);
  return ok;
}

static enum MHD_Result
s_respond_line (metrics_http_t *self, struct MHD_Connection *conn, unsigned status,
                const char *line)
{
  char *text = strdup (line);
  return text ? s_respond (self, conn, status, text, strlen (text), "text/plain; charset=utf-8")
              : MHD_NO;
}

static void
s_on_ask (loop_t *loop, void *arg)
{
  metrics_http_t *self = arg;
  self->ask_timer = NULL;
  for (void *item; (item = zlistx_detach (self->to_ask, NULL));)
    {
      uint64_t id = (uint64_t)(uintptr_t)item;
      scrape_t *s = zhashx_lookup (self->scrapes, item);
      if (s && s->state == SCRAPE_WAITING)
        self->fn (self->arg, id);
    }
}

static void
s_on_deadline (loop_t *loop, void *arg)
{
  scrape_t *s = arg;
  s->deadline = NULL;
  static const char why[] = "the metrics were not ready in time\n";
  metrics_http_answer (s->http, s->id, MHD_HTTP_SERVICE_UNAVAILABLE, strdup (why), sizeof why - 1);
}

/* GET /metrics after its headers: suspended until its text is there.  fn
 * runs from a timer, outside MHD, so that even an answer it gives at once
 * resumes a connection whose suspension is complete. */
static enum MHD_Result
s_wait (metrics_http_t *self, scrape_t *s)
{
  if (self->stopping)
    return s_respond_line (self, s->conn, MHD_HTTP_SERVICE_UNAVAILABLE, "zcd is stopping\n");
  if (self->waiting >= METRICS_HTTP_MAX_WAITING)
    return s_respond_line (self, s->conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                           "too many scrapes in progress\n");
  s->state = SCRAPE_WAITING;
  self->waiting++;
  MHD_suspend_connection (s->conn);
  s->deadline = loop_timer_add (self->loop, METRICS_HTTP_ANSWER_MS, s_on_deadline, s);
  zlistx_add_end (self->to_ask, (void *)(uintptr_t)s->id);
  if (self->ask_timer == NULL)
    self->ask_timer = loop_timer_add (self->loop, 0, s_on_ask, self);
  return MHD_YES;
}

/* The first call, headers only: anything but GET /metrics without a body
 * is answered now. */
static enum MHD_Result
s_first (metrics_http_t *self, struct MHD_Connection *conn, const char *url, const char *method,
         void **con_cls)
{
  if (strcmp (url, "/metrics") != 0)
    return s_respond_line (self, conn, MHD_HTTP_NOT_FOUND, "not found: only /metrics is served\n");
  if (strcmp (method, MHD_HTTP_METHOD_GET) != 0 && strcmp (method, MHD_HTTP_METHOD_HEAD) != 0)
    return s_respond_line (self, conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                           "method not allowed: GET or HEAD\n");
  const char *length
      = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if ((length && strcmp (length, "0") != 0)
      || MHD_lookup_connection_value (conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
    return s_respond_line (self, conn, MHD_HTTP_BAD_REQUEST, "GET /metrics takes no body\n");
  scrape_t *s = calloc (1, sizeof *s);
  if (s == NULL)
    return MHD_NO;
  s->http = self;
  s->id = ++self->next_id;
  s->conn = conn;
  zhashx_insert (self->scrapes, (void *)(uintptr_t)s->id, s);
  *con_cls = s;
  return MHD_YES;
}

static enum MHD_Result
s_on_request (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
              const char *version, const char *upload_data, size_t *upload_data_size,
              void **con_cls)
{
  metrics_http_t *self = cls;
  scrape_t *s = *con_cls;
  if (s == NULL)
    return s_first (self, conn, url, method, con_cls);
  if (*upload_data_size)
    {
      *upload_data_size = 0; /* refused above; nothing to keep */
      return MHD_YES;
    }
  switch (s->state)
    {
    case SCRAPE_NEW:
      return s_wait (self, s);
    case SCRAPE_ANSWERED:
      {
        s->state = SCRAPE_SENT;
        char *text = s->text;
        s->text = NULL;
        return s_respond (self, conn, s->status, text, s->len,
                          s->status == MHD_HTTP_OK ? CONTENT_TYPE : "text/plain; charset=utf-8");
      }
    default:
      return MHD_NO; /* not called in the other states */
    }
}

static void
s_scrape_free (metrics_http_t *self, scrape_t *s)
{
  self->sending_bytes -= s->sending;
  loop_timer_cancel (self->loop, s->deadline);
  free (s->text);
  free (s);
}

static void
s_on_completed (void *cls, struct MHD_Connection *conn, void **con_cls,
                enum MHD_RequestTerminationCode toe)
{
  metrics_http_t *self = cls;
  scrape_t *s = *con_cls;
  if (s == NULL)
    return;
  *con_cls = NULL;
  zhashx_delete (self->scrapes, (void *)(uintptr_t)s->id);
  s_scrape_free (self, s);
}

/* s (WAITING) gets its answer and is resumed; text taken. */
static void
s_answer (metrics_http_t *self, scrape_t *s, unsigned status, char *text, size_t len)
{
  if (text == NULL)
    {
      status = MHD_HTTP_SERVICE_UNAVAILABLE;
      text = strdup ("out of memory\n");
      len = text ? strlen (text) : 0;
    }
  /* An answer stays in memory until its client has read it all but what
   * the kernel's buffers take: clients that read slowly or never would
   * each hold a copy of the text (megabytes with thousands of
   * containers), so those being sent are bounded together.  One is
   * always let through, however large. */
  if (status == MHD_HTTP_OK && self->sending_bytes > 0
      && self->sending_bytes + len > METRICS_HTTP_SENDING_BYTES)
    {
      static const char busy[] = "too many answers still being sent to slow clients\n";
      free (text);
      status = MHD_HTTP_SERVICE_UNAVAILABLE;
      text = strdup (busy);
      len = text ? sizeof busy - 1 : 0;
    }
  s->sending = len;
  self->sending_bytes += len;
  loop_timer_cancel (self->loop, s->deadline);
  s->deadline = NULL;
  s->status = status;
  s->text = text;
  s->len = len;
  s->state = SCRAPE_ANSWERED;
  self->waiting--;
  MHD_resume_connection (s->conn);
  /* MHD's own wake-up is in its epoll set too; this one costs nothing. */
  if (!self->stopping)
    s_arm (self, 0);
}

void
metrics_http_answer (metrics_http_t *self, uint64_t id, unsigned status, char *text, size_t len)
{
  scrape_t *s = self ? zhashx_lookup (self->scrapes, (void *)(uintptr_t)id) : NULL;
  if (s == NULL || s->state != SCRAPE_WAITING)
    {
      free (text);
      return;
    }
  s_answer (self, s, status, text, len);
}

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

static void
s_log (void *arg, const char *fmt, va_list ap)
{
  char line[256];
  vsnprintf (line, sizeof line, fmt, ap);
  line[strcspn (line, "\n")] = '\0';
  log_debug ("metrics http: %s", line);
}

static void
s_log_address (int fd)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char host[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (getsockname (fd, (struct sockaddr *)&ss, &len) == 0)
    {
      bool v6 = ss.ss_family == AF_INET6;
      const void *addr = v6 ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
      inet_ntop (ss.ss_family, addr, host, sizeof host);
      port = ntohs (v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                       : ((struct sockaddr_in *)&ss)->sin_port);
      log_info ("metrics on http://%s%s%s:%u/metrics", v6 ? "[" : "", host, v6 ? "]" : "", port);
    }
}

metrics_http_t *
metrics_http_new (loop_t *loop, int listen_fd, metrics_http_fn fn, void *arg, zcd_error_t **err)
{
  metrics_http_t *self = calloc (1, sizeof *self);
  self->loop = loop;
  self->fn = fn;
  self->arg = arg;
  self->scrapes = zhashx_new ();
  zhashx_set_key_duplicator (self->scrapes, NULL);
  zhashx_set_key_destructor (self->scrapes, NULL);
  zhashx_set_key_hasher (self->scrapes, edge_token_hash);
  zhashx_set_key_comparator (self->scrapes, edge_token_compare);
  self->to_ask = zlistx_new ();
  /* External epoll mode: no MHD_USE_INTERNAL_POLLING_THREAD, no thread
   * per connection, no pool, so MHD starts no thread at all. */
  self->mhd
      = MHD_start_daemon (MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL,
                          NULL, s_on_request, self, MHD_OPTION_EXTERNAL_LOGGER, s_log, self,
                          MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_fd,
                          MHD_OPTION_CONNECTION_LIMIT, (unsigned int)METRICS_HTTP_MAX_CONNECTIONS,
                          MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)METRICS_HTTP_MAX_PER_IP,
                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)METRICS_HTTP_TIMEOUT_S,
                          MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METRICS_HTTP_CONN_MEMORY,
                          MHD_OPTION_NOTIFY_COMPLETED, s_on_completed, self, MHD_OPTION_END);
  if (self->mhd == NULL)
    {
      /* Whether MHD closed it on the way out depends on where it failed. */
      if (fcntl (listen_fd, F_GETFD) >= 0)
        close (listen_fd);
      zcd_fail (err, ZCD_E_INTERNAL, "--metrics-listen: libmicrohttpd did not start");
      metrics_http_destroy (&self);
      return NULL;
    }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info (self->mhd, MHD_DAEMON_INFO_EPOLL_FD);
  self->watch = info ? loop_add_fd (loop, info->epoll_fd, EPOLLIN, s_on_epoll, self) : NULL;
  if (self->watch == NULL)
    {
      zcd_fail (err, ZCD_E_INTERNAL, "--metrics-listen: cannot watch libmicrohttpd's epoll fd");
      metrics_http_destroy (&self);
      return NULL;
    }
  s_log_address (listen_fd);
  s_run (self);
  return self;
}

void
metrics_http_destroy (metrics_http_t **pself)
{
  if (pself == NULL || *pself == NULL)
    return;
  metrics_http_t *self = *pself;
  loop_remove (self->loop, self->watch);
  loop_timer_cancel (self->loop, self->ask_timer);
  if (self->mhd)
    {
      /* MHD must not be stopped with a connection suspended: the waiting
       * ones are answered, and what the last run reads is not suspended. */
      self->stopping = true;
      static const char why[] = "zcd is stopping\n";
      for (scrape_t *s = zhashx_first (self->scrapes); s; s = zhashx_next (self->scrapes))
        if (s->state == SCRAPE_WAITING)
          s_answer (self, s, MHD_HTTP_SERVICE_UNAVAILABLE, strdup (why), sizeof why - 1);
      MHD_run (self->mhd);
      MHD_stop_daemon (self->mhd);
    }
  loop_timer_cancel (self->loop, self->timer);
  /* What MHD did not report completed. */
  for (scrape_t *s = zhashx_first (self->scrapes); s; s = zhashx_next (self->scrapes))
    s_scrape_free (self, s);
  zhashx_destroy (&self->scrapes);
  zlistx_destroy (&self->to_ask);
  free (self);
  *pself = NULL;
}

void
metrics_http_put (const metrics_http_t *self, metrics_text_t *t)
{
  metrics_family (t, "zcd_metrics_http_responses_total", "counter",
                  "Responses of the --metrics-listen HTTP server, by status code.");
  for (size_t i = 0; i < N_CODES; i++)
    {
      char code[8];
      snprintf (code, sizeof code, "%u", s_codes[i]);
      metrics_put_u64 (t, "zcd_metrics_http_responses_total",
                       (metrics_label_t[]){ { "code", code } }, 1, self->responses[i]);
    }
  const union MHD_DaemonInfo *info
      = MHD_get_daemon_info (self->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
  metrics_put_one (t, "zcd_metrics_http_connections", "gauge",
                   "Connections to the --metrics-listen HTTP server now.",
                   info ? info->num_connections : 0);
}
