/* `events`: a replay of the event log streamed to one client across loop
 * turns (PROTOCOL.md section 4). */
#include <stdlib.h>
#include <string.h>

#include "actors/supervisor_int.h"
#include "core/cleanup.h"
#include "core/log.h"
#include "core/mp.h"

/* ------------------------------------------------------------------ */
/* events: a replay streamed across turns, paced by the client's pipe    */

static int
s_replay_one (const char *encoded, size_t len, uint64_t seq, void *arg)
{
  replay_t *rp = arg;
  if (edge_send_partial_event (rp->req, encoded, len) < 0)
    {
      rp->blocked = true;
      return 1;
    }
  rp->after_seq = seq;
  return 0;
}

typedef struct
{
  replay_t *rp;
  size_t budget;
} budget_t;

static int
s_replay_budgeted (const char *encoded, size_t len, uint64_t seq, void *arg)
{
  budget_t *b = arg;
  if (b->budget == 0)
    return 1;
  b->budget--;
  return s_replay_one (encoded, len, seq, b->rp);
}

/* true when the replay finished (its final reply is out). */
static bool
s_replay_step (supervisor_t *self, replay_t *rp)
{
  rp->blocked = false;
  budget_t b = { rp, REPLAY_BUDGET };
  bool truncated = false;
  eventlog_replay (self->log, rp->after_seq, rp->since_ns, rp->id, s_replay_budgeted, &b, &truncated);
  if (rp->blocked || b.budget == 0)
    return false;
  uint64_t last = eventlog_last_seq (self->log);
  edge_reply_t *r = edge_reply_ok (self->edge, rp->req, rp->truncated ? 3 : 1);
  msgpack_packer *pk = edge_reply_packer (r);
  mp_pack_kv_uint (pk, "last_seq", last);
  if (rp->truncated)
    {
      mp_pack_kv_bool (pk, "truncated", true);
      mp_pack_kv_uint (pk, "oldest_seq", rp->oldest_seq);
    }
  edge_reply_send_now (self->edge, r);
  return true;
}

/* Visits every matching event: only the truncated verdict is wanted. */
static int
s_replay_scan (const char *encoded, size_t len, uint64_t seq, void *arg)
{
  return 0;
}

void
supervisor_op_events (supervisor_t *self, edge_request_t *req)
{
  const msgpack_object *body = edge_request_body (req);
  replay_t *rp = calloc (1, sizeof *rp);
  rp->after_seq = mp_get_uint (body, "since_seq", 0);
  int64_t since_ns = INT64_MIN;
  const msgpack_object *since = mp_map_get (body, "since");
  if (since)
    mp_as_int (since, &since_ns);
  rp->since_ns = since_ns;
  rp->id = mp_get_strdup (body, "id");
  /* Whether the request reaches past retention is decided once, against
   * the log as it is now. */
  bool truncated = false;
  eventlog_replay (self->log, rp->after_seq, rp->since_ns, rp->id, s_replay_scan, NULL, &truncated);
  rp->truncated = truncated;
  rp->oldest_seq = eventlog_oldest_seq (self->log);
  rp->req = edge_request_keep (self->edge, req);
  rp->next = self->replays;
  self->replays = rp;
}

void
supervisor_run_replays (supervisor_t *self)
{
  for (replay_t **p = &self->replays; *p;)
    {
      replay_t *rp = *p;
      if (s_replay_step (self, rp))
        {
          *p = rp->next;
          edge_request_release (self->edge, rp->req);
          free (rp->id);
          free (rp);
        }
      else
        p = &rp->next;
    }
}


void
supervisor_replays_free (supervisor_t *self)
{
  while (self->replays)
    {
      replay_t *rp = self->replays;
      self->replays = rp->next;
      edge_request_release (self->edge, rp->req);
      free (rp->id);
      free (rp);
    }
}
