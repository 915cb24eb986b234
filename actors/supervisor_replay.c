/* `events`: a replay of the event log streamed to one client across loop
 * turns (PROTOCOL.md section 4).
 *
 * Every replay has an owner that can go away, and costs nothing while it
 * cannot move (issue 8, defect 6; issue 14):
 * - a client that is gone (ROUTER_MANDATORY says EHOSTUNREACH) ends its
 *   replay at once, silently;
 * - a client whose pipe is full is tried again on a backing-off timer
 *   (10 ms doubling to 1 s), never on a fixed short one, and its replay is
 *   ended with a final `busy` once it has made no progress for
 *   REPLAY_STALL_MS: the client asks again with `since_seq`;
 * - only events the log holds on disk are sent (eventlog_durable_seq): an
 *   event a crash could still lose is never replayed (defect 12), and the
 *   final reply's last_seq is the newest durable seq. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/supervisor_int.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

/* Events sent per replay per turn: a long replay to one client must not
 * hold up the loop for everyone else. */
#define REPLAY_BUDGET 2048
#define REPLAY_BACKOFF_MIN_MS 10
#define REPLAY_BACKOFF_MAX_MS 1000
/* A replay that moves nothing for this long is ended with `busy`. */
#define REPLAY_STALL_MS 30000
/* Replays in progress at once, all clients together; past it `busy`. */
#define REPLAY_MAX 4096

typedef enum
{
  STEP_DONE,    /* everything matching is sent: the final reply can go */
  STEP_MORE,    /* the budget ran out: go on next turn */
  STEP_BLOCKED, /* the client's pipe is full */
  STEP_GONE     /* the client has gone */
} step_t;

typedef struct
{
  replay_t *rp;
  size_t budget;
  uint64_t durable;
  step_t stop;
} pass_t;

static int
s_send_one (const char *encoded, size_t len, uint64_t seq, void *arg)
{
  pass_t *pass = arg;
  if (seq > pass->durable)
    {
      pass->stop = STEP_DONE; /* in seq order: every later one is newer still */
      return 1;
    }
  if (pass->budget == 0)
    {
      pass->stop = STEP_MORE;
      return 1;
    }
  /* Another caller's event is passed over (PROTOCOL.md "Callers"); it
   * takes from the budget all the same, so a step stays short. */
  if (!pass->rp->caller.admin && eventlog_event_uid (encoded, len) != pass->rp->caller.uid)
    {
      pass->budget--;
      pass->rp->after_seq = seq;
      return 0;
    }
  int rc = edge_send_partial_event (pass->rp->req, encoded, len);
  if (rc == EDGE_SEND_GONE)
    {
      pass->stop = STEP_GONE;
      return 1;
    }
  if (rc != 0)
    {
      pass->stop = STEP_BLOCKED;
      return 1;
    }
  pass->budget--;
  pass->rp->after_seq = seq;
  return 0;
}

static void
s_final_reply (supervisor_t *self, replay_t *rp)
{
  edge_reply_t *r = edge_reply_ok (self->edge, rp->req, rp->truncated ? 3 : 1);
  msgpack_packer *pk = edge_reply_packer (r);
  mp_pack_kv_uint (pk, "last_seq", eventlog_durable_seq (self->log));
  if (rp->truncated)
    {
      mp_pack_kv_bool (pk, "truncated", true);
      mp_pack_kv_uint (pk, "oldest_seq", rp->oldest_seq);
    }
  edge_reply_send_now (self->edge, r);
}

static void
s_stalled_reply (supervisor_t *self, replay_t *rp)
{
  char message[200];
  snprintf (message, sizeof message,
            "replay stalled for %d s (the client is not reading); ask again with since_seq %"
            PRIu64,
            REPLAY_STALL_MS / 1000, rp->after_seq);
  /* Best effort: a pipe still full simply loses it, as the client asked
   * for it by not reading. */
  edge_fail (self->edge, rp->req, ZCD_E_BUSY, "%s", message);
  self->replays_stalled++;
  log_warn ("events replay ended: %s", message);
}

static step_t
s_step (supervisor_t *self, replay_t *rp)
{
  pass_t pass = { rp, REPLAY_BUDGET, eventlog_durable_seq (self->log), STEP_DONE };
  eventlog_replay (self->log, rp->after_seq, rp->since_ns, rp->id, s_send_one, &pass, NULL);
  /* Events past the durable seq are nobody's yet: the replay ends at the
   * durable seq, which its final reply gives as last_seq, so a full disk
   * never silences a replay (the held events come live once logged). */
  return pass.stop;
}

static void
s_replay_free (supervisor_t *self, replay_t *rp)
{
  edge_request_release (self->edge, rp->req);
  free (rp->id);
  free (rp);
  self->n_replays--;
}

/* true when rp is finished (and freed by the caller). */
static bool
s_advance (supervisor_t *self, replay_t *rp, uint64_t now)
{
  uint64_t before = rp->after_seq;
  step_t step = s_step (self, rp);
  if (step == STEP_GONE)
    {
      self->replays_abandoned++;
      return true;
    }
  if (step == STEP_DONE)
    {
      s_final_reply (self, rp);
      return true;
    }
  if (rp->after_seq != before || step == STEP_MORE)
    {
      rp->last_progress_ms = now;
      rp->backoff_ms = 0;
    }
  if (step == STEP_MORE)
    {
      rp->next_try_ms = now;
      return false;
    }
  if (now - rp->last_progress_ms >= REPLAY_STALL_MS)
    {
      s_stalled_reply (self, rp);
      return true;
    }
  rp->backoff_ms = rp->backoff_ms ? rp->backoff_ms * 2 : REPLAY_BACKOFF_MIN_MS;
  if (rp->backoff_ms > REPLAY_BACKOFF_MAX_MS)
    rp->backoff_ms = REPLAY_BACKOFF_MAX_MS;
  rp->next_try_ms = now + rp->backoff_ms;
  return false;
}

static void
s_replay_wake (loop_t *loop, void *arg)
{
  supervisor_t *self = arg;
  self->replay_timer = NULL;
  /* The turn this timer ends runs the before-sleep hook, which steps
   * every replay whose time has come. */
}

void
supervisor_run_replays (supervisor_t *self)
{
  uint64_t now = zcd_mono_ms ();
  uint64_t next = UINT64_MAX;
  /* Nothing a step calls adds or removes replays: the list's cursor
   * holds (detaching at it leaves it on the previous one). */
  for (replay_t *rp = zlistx_first (self->replays); rp; rp = zlistx_next (self->replays))
    {
      if (rp->next_try_ms <= now && s_advance (self, rp, now))
        {
          zlistx_detach_cur (self->replays);
          s_replay_free (self, rp);
          continue;
        }
      if (rp->next_try_ms < next)
        next = rp->next_try_ms;
    }
  loop_t *loop = self->daemon->loop;
  if (next == UINT64_MAX)
    {
      loop_timer_cancel (loop, self->replay_timer);
      self->replay_timer = NULL;
      return;
    }
  /* One timer for all replays, at the earliest one's time. */
  uint64_t delay = next > now ? next - now : 0;
  if (self->replay_timer && self->replay_timer_due_ms <= next)
    return;
  loop_timer_cancel (loop, self->replay_timer);
  self->replay_timer = loop_timer_add (loop, delay, s_replay_wake, self);
  self->replay_timer_due_ms = now + delay;
}

/* Visits every matching event: only the truncated verdict is wanted. */
static int
s_visit_none (const char *encoded, size_t len, uint64_t seq, void *arg)
{
  return 0;
}

void
supervisor_op_events (supervisor_t *self, edge_request_t *req)
{
  if (self->n_replays >= REPLAY_MAX)
    {
      edge_fail (self->edge, req, ZCD_E_BUSY, "%d event replays are in progress; retry later",
                 REPLAY_MAX);
      return;
    }
  const msgpack_object *body = edge_request_body (req);
  replay_t *rp = calloc (1, sizeof *rp);
  rp->after_seq = mp_get_uint (body, "since_seq", 0);
  int64_t since_ns = INT64_MIN;
  const msgpack_object *since = mp_map_get (body, "since");
  if (since)
    mp_as_int (since, &since_ns);
  rp->since_ns = since_ns;
  rp->id = mp_get_strdup (body, "id");
  rp->caller = *edge_request_caller (req);
  /* Whether the request reaches past retention is decided once, against
   * the log as it is now. */
  bool truncated = false;
  eventlog_replay (self->log, rp->after_seq, rp->since_ns, rp->id, s_visit_none, NULL, &truncated);
  rp->truncated = truncated;
  rp->oldest_seq = eventlog_oldest_seq (self->log);
  rp->last_progress_ms = zcd_mono_ms ();
  rp->req = edge_request_keep (self->edge, req);
  zlistx_add_start (self->replays, rp);
  self->n_replays++;
}

void
supervisor_replays_free (supervisor_t *self)
{
  for (replay_t *rp; (rp = zlistx_detach (self->replays, NULL));)
    s_replay_free (self, rp);
}

void
supervisor_replays_stop (supervisor_t *self, const char *message)
{
  for (replay_t *rp; (rp = zlistx_detach (self->replays, NULL));)
    {
      edge_fail (self->edge, rp->req, ZCD_E_UNAVAILABLE, "%s; ask again with since_seq %" PRIu64,
                 message, rp->after_seq);
      s_replay_free (self, rp);
    }
}
