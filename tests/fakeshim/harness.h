/* What tests/unit/test_actors.c needs around the fakes: the daemon built
 * in-process as tools/zcd.c builds it, run in a thread of its own over a
 * temporary state dir (harness.c), and a client that speaks the wire
 * protocol to it (harness_wire.c: a DEALER for requests, a SUB for events;
 * requests are written as json_pack formats, replies and events read as
 * JSON).  Every helper fails the running cmocka test, with what it saw,
 * instead of returning an error; every wait has a deadline (HARNESS_WAIT_MS).
 *
 * Ownership: json_t results are new references the caller drops, unless
 * said otherwise; strings returned from a json_t live as long as it. */
#ifndef ZCD_TESTS_HARNESS_H
#define ZCD_TESTS_HARNESS_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "actors/actors.h"

#define HARNESS_WAIT_MS 10000 /* one reply, one event, one start of the daemon */

typedef struct
{
  char dir[64];    /* mkdtemp's, under /tmp: bundles/, state/, root/ */
  char state[128]; /* --state-dir */
  char root[128];  /* the fake runtime's --root */
  char cmd_ep[192], evt_ep[192];
  char *listen[2], *publish[2], *runtime_args[3];
  zcd_config_t cfg; /* change it between h_daemon_stop and h_daemon_start */
  pthread_t thread;
  bool running;
  int stop_r, stop_w; /* 's': supervisor_stop, 'k': loop_stop */
  int ready_r, ready_w;
  void *dealer, *sub;
  uint64_t next_rid;
  uint64_t seq;     /* the last event consumed */
  json_t *sent;     /* requests by rid, for the messages of failures */
  json_t *early;    /* replies that came before they were waited for */
  json_t *partials; /* partial replies (`events` replays), in order */
} harness_t;

/* ---- process and daemon (harness.c) ---- */

/* Once, in main, before any thread: SIGCHLD blocked (the daemon's thread
 * reads it from a signalfd), subreaper, the fakes found beside the test
 * binary.  -1 (with a message) when the fakes are missing. */
int h_init (void);
void h_fini (void);
const char *h_fakeruntime (void);
/* cmocka fixtures: a fresh temporary dir and a daemon running in it. */
int h_setup (void **state);
int h_teardown (void **state);
void h_daemon_start (harness_t *h);
/* how: 's' as SIGTERM (requests in progress are answered first), 'k' at
 * once.  A daemon that does not stop ends the test binary, failed. */
void h_daemon_stop (harness_t *h, char how);

int64_t h_now_ms (void);
void h_sleep_ms (long ms);
/* The file's text ("" when it does not exist); free it. */
char *h_read (const char *path);
/* Wait until the file at `path` holds `text` (a fake writes it in its own time). */
void h_wait_file_has (const char *path, const char *text);
/* Wait until process `pid` has ended (gone, or a zombie nobody reaped yet). */
void h_wait_ended (pid_t pid);
/* The bundle of container `id` (made on first use) into out. */
void h_bundle (harness_t *h, const char *id, char *out, size_t cap);
/* Set (text) or clear (NULL) a knob of the fake shim for process `pid` of
 * container `id`, or of the fake runtime for `id` (tests/fakeshim/). */
void h_shim_knob (harness_t *h, const char *id, const char *pid, const char *knob,
                  const char *text);
void h_runtime_knob (harness_t *h, const char *id, const char *knob, const char *text);
/* The fake runtime's calls for `id`, one per line ("pause\nkill 9\n"); free it. */
char *h_runtime_calls (harness_t *h, const char *id);

/* ---- the wire (harness_wire.c) ---- */

/* Connect a DEALER and a SUB (on context zctx) to the daemon, and wait for
 * a heartbeat: from then on no event is missed.  Close them again. */
void h_client_open (harness_t *h, void *zctx);
void h_client_close (harness_t *h);

const char *h_str (json_t *obj, const char *key); /* "" when absent */
json_int_t h_int (json_t *obj, const char *key);  /* fails when absent */

/* Send a request written as a json_pack format and its values; its rid. */
uint64_t h_send (harness_t *h, const char *fmt, ...);
/* The next final reply, in the order the daemon sent them. */
json_t *h_next_reply (harness_t *h);
json_t *h_reply_to (harness_t *h, uint64_t rid);
#define h_call(h, ...) h_reply_to ((h), h_send ((h), __VA_ARGS__))
void h_assert_ok (json_t *r);
/* A failure with `code`; its message. */
const char *h_assert_error (json_t *r, const char *code);
/* The same, then the reply is dropped. */
void h_expect_ok (json_t *r);
void h_expect_error (json_t *r, const char *code);

/* The next event, whose seq must follow the last one consumed: a missed or
 * an unexpected event fails the test where it happens. */
json_t *h_next_event (harness_t *h);
/* The next event is `type` for `id` (and process `pid` unless NULL). */
json_t *h_expect_event (harness_t *h, const char *type, const char *id, const char *pid);
void h_expect_exit (harness_t *h, const char *id, const char *pid, int status);
/* Nothing published beyond the events consumed (`state`'s last_seq). */
void h_expect_no_more_events (harness_t *h);
/* Replay the events after `since` (op `events`) into h->partials, checking
 * their numbering; h->seq moves past them. */
void h_replay (harness_t *h, uint64_t since);

/* `state` of one container, or NULL when it is not_found. */
json_t *h_container (harness_t *h, const char *id);
void h_expect_status (harness_t *h, const char *id, const char *status, size_t processes);
void h_expect_gone (harness_t *h, const char *id);

#endif
