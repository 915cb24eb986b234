/* The supervisor's part of a restart: find every container directory,
 * read from the event log what was already published about each, and
 * rebuild the container actors (container_restore.c) before any request
 * is read.  A directory that cannot be read is moved aside to .broken/. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <czmq.h>
#include <jansson.h>

#include "actors/actors.h"
#include "actors/supervisor.h"
#include "core/cleanup.h"
#include "core/eventlog.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

typedef struct
{
  restore_hints_t hints;
  int64_t created;
} candidate_t;

typedef struct
{
  zhashx_t *candidates;
  int64_t oldest_ts;
  bool seen_any;
} scan_t;

static void
s_candidate_destroy (void **item)
{
  candidate_t *c = *item;
  mp_strv_free (c->hints.started_execs);
  mp_strv_free (c->hints.exited);
  free (c);
  *item = NULL;
}

static void
s_push (char ***v, const char *s)
{
  size_t n = mp_strv_len (*v);
  *v = realloc (*v, (n + 2) * sizeof (char *));
  (*v)[n] = strdup (s);
  (*v)[n + 1] = NULL;
}

static int
s_scan_event (const char *encoded, size_t len, uint64_t seq, void *arg)
{
  scan_t *scan = arg;
  msgpack_unpacked m;
  msgpack_unpacked_init (&m);
  if (mp_unpack (encoded, len, &m, NULL) == 0)
    {
      int64_t ts = 0;
      const msgpack_object *t = mp_map_get (&m.data, "ts");
      if (t)
        mp_as_int (t, &ts);
      if (!scan->seen_any)
        scan->oldest_ts = ts, scan->seen_any = true;
      cleanup_free char *id = mp_get_strdup (&m.data, "id");
      cleanup_free char *type = mp_get_strdup (&m.data, "type");
      cleanup_free char *pid = mp_get_strdup (&m.data, "pid");
      candidate_t *c = id ? zhashx_lookup (scan->candidates, id) : NULL;
      /* Events of an earlier container that had the same id are older
       * than this one's creation. */
      if (c && type && ts >= c->created)
        {
          if (strcmp (type, "start-container") == 0 || strcmp (type, "restore") == 0)
            c->hints.start_logged = true;
          else if (strcmp (type, "start-process") == 0 && pid)
            s_push (&c->hints.started_execs, pid);
          else if (strcmp (type, "exit") == 0 && pid)
            s_push (&c->hints.exited, pid);
          else if (strcmp (type, "pause") == 0)
            c->hints.logged_paused = true;
          else if (strcmp (type, "resume") == 0)
            c->hints.logged_paused = false;
        }
    }
  msgpack_unpacked_destroy (&m);
  return 0;
}

static void
s_move_aside (const char *state_dir, const char *id, const char *why)
{
  char broken[4096], from[4096], to[4200];
  snprintf (broken, sizeof broken, "%s/.broken", state_dir);
  snprintf (from, sizeof from, "%s/" ZCD_CONTAINERS_DIR "/%s", state_dir, id);
  snprintf (to, sizeof to, "%s/%s.%lld", broken, id, (long long) zcd_now_ns ());
  zcd_mkdir_p (broken, 0700, NULL);
  if (rename (from, to) < 0)
    log_error ("restore %s: %s; moving it to %s failed: %s", id, why, to, strerror (errno));
  else
    log_error ("restore %s: %s; moved to %s", id, why, to);
}

/* created of a container directory, or -1 if its state.json is unusable. */
static int64_t
s_created (const char *state_dir, const char *id)
{
  char path[4096];
  snprintf (path, sizeof path, "%s/" ZCD_CONTAINERS_DIR "/%s/state.json", state_dir, id);
  json_t *j = json_load_file (path, 0, NULL);
  if (j == NULL)
    return -1;
  json_t *c = json_object_get (j, "created");
  int64_t created = json_is_integer (c) ? (int64_t) json_integer_value (c) : -1;
  json_decref (j);
  return created;
}

static void
s_collect_candidates (const char *state_dir, zhashx_t *candidates)
{
  char root[4096];
  snprintf (root, sizeof root, "%s/" ZCD_CONTAINERS_DIR, state_dir);
  cleanup_dir DIR *d = opendir (root);
  for (struct dirent *de; d && (de = readdir (d));)
    {
      if (!zcd_valid_id (de->d_name, strlen (de->d_name)))
        continue;
      struct stat st;
      if (fstatat (dirfd (d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR (st.st_mode))
        continue;
      int64_t created = s_created (state_dir, de->d_name);
      if (created < 0)
        {
          s_move_aside (state_dir, de->d_name, "state.json is missing or corrupt");
          continue;
        }
      candidate_t *c = calloc (1, sizeof *c);
      c->created = created;
      zhashx_insert (candidates, de->d_name, c);
    }
}

void
supervisor_restore_all (zcd_daemon_t *daemon, eventlog_t *log)
{
  const char *state_dir = daemon->config->state_dir;
  /* Where client-chosen names live: made once, never a client's path. */
  cleanup_free char *root = zcd_containers_root (daemon->config);
  if (root && mkdir (root, 0711) < 0 && errno != EEXIST)
    log_error ("cannot create %s: %s", root, strerror (errno));
  /* Passable, not listable: a rootless shim reaches its own directory
   * below it (zcd_hand_process_dir); only zcd lists it. */
  if (root && chmod (root, 0711) < 0)
    log_error ("cannot chmod %s: %s", root, strerror (errno));
  supervisor_migrate_layout (state_dir);
  scan_t scan = { .candidates = zhashx_new () };
  zhashx_set_destructor (scan.candidates, s_candidate_destroy);
  s_collect_candidates (state_dir, scan.candidates);
  if (zhashx_size (scan.candidates) == 0)
    {
      zhashx_destroy (&scan.candidates);
      return;
    }
  uint64_t t0 = zcd_mono_ns ();
  eventlog_replay (log, 0, INT64_MIN, NULL, s_scan_event, &scan, NULL);
  bool nothing_dropped = eventlog_oldest_seq (log) <= 1;
  size_t restored = 0;
  for (candidate_t *c = zhashx_first (scan.candidates); c; c = zhashx_next (scan.candidates))
    {
      const char *id = zhashx_cursor (scan.candidates);
      c->hints.covered = nothing_dropped || (scan.seen_any && scan.oldest_ts <= c->created);
      cleanup_error zcd_error_t *err = NULL;
      if (container_actor_restore (daemon, id, &c->hints, &err))
        restored++;
      else if (err)
        s_move_aside (state_dir, id, err->msg);
    }
  log_info ("restored %zu containers in %.1f ms", restored, (zcd_mono_ns () - t0) / 1e6);
  zhashx_destroy (&scan.candidates);
}
