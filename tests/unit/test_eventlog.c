/* core/eventlog: seq across restarts, torn tails, damage, compaction and the
 * crashes around it, replay filters, the Event encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/eventlog.h"
#include "core/fsutil.h"
#include "core/log.h"

#define HEADER 24
#define MAX_SEQS 200000

typedef struct
{
  char dir[64];
  char path[128];
} fixture_t;

static int
s_setup (void **state)
{
  fixture_t *f = calloc (1, sizeof *f);
  strcpy (f->dir, "/tmp/test_eventlog.XXXXXX");
  if (mkdtemp (f->dir) == NULL)
    return -1;
  snprintf (f->path, sizeof f->path, "%s/events.log", f->dir);
  *state = f;
  return 0;
}

static int
s_teardown (void **state)
{
  fixture_t *f = *state;
  zcd_rm_rf (f->dir, NULL);
  free (f);
  return 0;
}

static eventlog_t *
s_open (const char *path, uint64_t retain)
{
  eventlog_t *log = NULL;
  zcd_error_t *err = NULL;
  int rc = eventlog_open (path, retain, &log, &err);
  if (rc < 0)
    fail_msg ("eventlog_open: %s", err->msg);
  return log;
}

static const char *const s_ids[] = { "a", "b", "c" };

/* Event i (1-based) has ts = 1000 * i and id s_ids[i % 3]. */
static void
s_append_range (eventlog_t *log, uint64_t from, uint64_t to)
{
  for (uint64_t i = from; i <= to; i++)
    {
      zcd_event_t ev = { .type = "exit", .id = s_ids[i % 3], .pid = "init", .has_status = true,
                         .status = (uint32_t) (i % 256), .ts = (int64_t) (1000 * i) };
      assert_int_equal (eventlog_append (log, &ev, NULL, NULL), i);
    }
}

static void
s_flush (eventlog_t *log)
{
  zcd_error_t *err = NULL;
  if (eventlog_flush (log, &err) < 0)
    fail_msg ("eventlog_flush: %s", err->msg);
}

typedef struct
{
  uint64_t *seqs;
  size_t n;
  size_t stop_after; /* 0 = never */
} collect_t;

static int
s_collect (const char *encoded, size_t len, uint64_t seq, void *arg)
{
  collect_t *c = arg;
  if (c->n < MAX_SEQS)
    c->seqs[c->n] = seq;
  c->n++;
  return c->stop_after && c->n == c->stop_after ? 7 : 0;
}

/* Replays and returns the seqs seen (caller frees c.seqs). */
static collect_t
s_replay (eventlog_t *log, uint64_t since_seq, int64_t since_ns, const char *id, bool *truncated)
{
  collect_t c = { calloc (MAX_SEQS, sizeof (uint64_t)), 0, 0 };
  assert_int_equal (eventlog_replay (log, since_seq, since_ns, id, s_collect, &c, truncated), 0);
  return c;
}

static char *
s_read (const char *path, size_t *len)
{
  char *buf = NULL;
  zcd_error_t *err = NULL;
  if (zcd_read_file (path, 1 << 30, &buf, len, &err) < 0)
    fail_msg ("read: %s", err->msg);
  return buf;
}

static void
s_write (const char *path, const char *buf, size_t len)
{
  FILE *f = fopen (path, "w");
  assert_non_null (f);
  assert_int_equal (fwrite (buf, 1, len, f), len);
  fclose (f);
}

/* Offsets of the records in a log file, parsed independently of the code
 * under test: [u32 len][u32 crc][payload] after a 24-byte header. */
static size_t
s_record_offsets (const char *buf, size_t len, size_t *offs, size_t max)
{
  size_t n = 0;
  for (size_t o = HEADER; o + 8 <= len && n < max;)
    {
      uint32_t plen;
      memcpy (&plen, buf + o, 4);
      if (o + 8 + plen > len)
        break;
      offs[n++] = o;
      o += 8 + plen;
    }
  return n;
}

static int
s_count_files_with_prefix (const char *dir, const char *prefix)
{
  DIR *d = opendir (dir);
  int n = 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    n += strncmp (de->d_name, prefix, strlen (prefix)) == 0;
  closedir (d);
  return n;
}

static void
test_seq_contiguous_across_reopen (void **state)
{
  fixture_t *f = *state;
  eventlog_t *log = s_open (f->path, 100);
  assert_int_equal (eventlog_last_seq (log), 0);
  assert_int_equal (eventlog_oldest_seq (log), 0);
  s_append_range (log, 1, 3);
  s_flush (log);
  eventlog_destroy (&log);
  assert_null (log);

  log = s_open (f->path, 100);
  assert_int_equal (eventlog_last_seq (log), 3);
  assert_int_equal (eventlog_oldest_seq (log), 1);
  assert_int_equal (eventlog_count (log), 3);
  s_append_range (log, 4, 6);
  s_flush (log);
  /* Appended but never flushed (so never published): gone after a crash. */
  s_append_range (log, 7, 7);
  eventlog_destroy (&log);

  log = s_open (f->path, 100);
  assert_int_equal (eventlog_last_seq (log), 6);
  bool truncated = true;
  collect_t c = s_replay (log, 0, INT64_MIN, NULL, &truncated);
  assert_int_equal (c.n, 6);
  for (size_t i = 0; i < c.n; i++)
    assert_int_equal (c.seqs[i], i + 1);
  assert_false (truncated);
  free (c.seqs);
  eventlog_destroy (&log);
}

static void
s_expect_key (const msgpack_object_map *m, const char *key, msgpack_object_type type)
{
  for (uint32_t i = 0; i < m->size; i++)
    {
      const msgpack_object *k = &m->ptr[i].key;
      if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen (key)
          && memcmp (k->via.str.ptr, key, k->via.str.size) == 0)
        {
          if (m->ptr[i].val.type != type)
            fail_msg ("key %s has msgpack type %d, want %d", key, m->ptr[i].val.type, type);
          return;
        }
    }
  fail_msg ("key %s missing", key);
}

typedef struct
{
  const char *want;
  size_t len;
  bool same;
} same_bytes_t;

static int
s_compare (const char *encoded, size_t len, uint64_t seq, void *arg)
{
  same_bytes_t *cmp = arg;
  cmp->same = len == cmp->len && memcmp (encoded, cmp->want, len) == 0;
  return 0;
}

static void
test_event_encoding (void **state)
{
  fixture_t *f = *state;
  eventlog_t *log = s_open (f->path, 100);
  zcd_event_t full = { .type = "exit", .id = "web1", .pid = "init", .has_status = true,
                       .status = 137, .system_pid = 4242, .has_oom_killed = true,
                       .oom_killed = true, .ts = 1700000000123456789LL };
  const char *enc;
  size_t len;
  assert_int_equal (eventlog_append (log, &full, &enc, &len), 1);
  msgpack_unpacked u;
  msgpack_unpacked_init (&u);
  size_t off = 0;
  assert_int_equal (msgpack_unpack_next (&u, enc, len, &off), MSGPACK_UNPACK_SUCCESS);
  assert_int_equal (off, len);
  assert_int_equal (u.data.type, MSGPACK_OBJECT_MAP);
  const msgpack_object_map *m = &u.data.via.map;
  assert_int_equal (m->size, 8);
  s_expect_key (m, "seq", MSGPACK_OBJECT_POSITIVE_INTEGER);
  s_expect_key (m, "type", MSGPACK_OBJECT_STR);
  s_expect_key (m, "id", MSGPACK_OBJECT_STR);
  s_expect_key (m, "pid", MSGPACK_OBJECT_STR);
  s_expect_key (m, "status", MSGPACK_OBJECT_POSITIVE_INTEGER);
  s_expect_key (m, "system_pid", MSGPACK_OBJECT_POSITIVE_INTEGER);
  s_expect_key (m, "oom_killed", MSGPACK_OBJECT_BOOLEAN);
  s_expect_key (m, "ts", MSGPACK_OBJECT_POSITIVE_INTEGER);
  for (uint32_t i = 0; i < m->size; i++)
    {
      const msgpack_object *v = &m->ptr[i].val;
      if (m->ptr[i].key.via.str.size == 6 && memcmp (m->ptr[i].key.via.str.ptr, "status", 6) == 0)
        assert_int_equal (v->via.u64, 137);
      if (m->ptr[i].key.via.str.size == 2 && memcmp (m->ptr[i].key.via.str.ptr, "ts", 2) == 0)
        assert_int_equal (v->via.u64, 1700000000123456789ULL);
      if (m->ptr[i].key.via.str.size == 10
          && memcmp (m->ptr[i].key.via.str.ptr, "oom_killed", 10) == 0)
        assert_true (v->via.boolean);
    }
  msgpack_unpacked_destroy (&u);

  /* Absent fields are absent, and ts 0 means now. */
  int64_t before = zcd_now_ns ();
  zcd_event_t bare = { .type = "pause", .id = "web1" };
  assert_int_equal (eventlog_append (log, &bare, &enc, &len), 2);
  msgpack_unpacked_init (&u);
  off = 0;
  assert_int_equal (msgpack_unpack_next (&u, enc, len, &off), MSGPACK_UNPACK_SUCCESS);
  assert_int_equal (u.data.via.map.size, 4);
  s_expect_key (&u.data.via.map, "seq", MSGPACK_OBJECT_POSITIVE_INTEGER);
  s_expect_key (&u.data.via.map, "type", MSGPACK_OBJECT_STR);
  s_expect_key (&u.data.via.map, "id", MSGPACK_OBJECT_STR);
  s_expect_key (&u.data.via.map, "ts", MSGPACK_OBJECT_POSITIVE_INTEGER);
  assert_true ((int64_t) u.data.via.map.ptr[3].val.via.u64 >= before);
  msgpack_unpacked_destroy (&u);

  /* A negative ts (a clock before 1970) stays a signed int. */
  zcd_event_t old = { .type = "resume", .id = "web1", .ts = -5 };
  assert_int_equal (eventlog_append (log, &old, &enc, &len), 3);
  msgpack_unpacked_init (&u);
  off = 0;
  assert_int_equal (msgpack_unpack_next (&u, enc, len, &off), MSGPACK_UNPACK_SUCCESS);
  s_expect_key (&u.data.via.map, "ts", MSGPACK_OBJECT_NEGATIVE_INTEGER);
  msgpack_unpacked_destroy (&u);

  zcd_event_t no_id = { .type = "exit" };
  assert_int_equal (eventlog_append (log, &no_id, NULL, NULL), 0);
  assert_int_equal (eventlog_last_seq (log), 3);

  /* Replay hands out the very bytes that were published, after a reopen too. */
  char *copy = malloc (len);
  memcpy (copy, enc, len);
  size_t copy_len = len;
  s_flush (log);
  eventlog_destroy (&log);
  log = s_open (f->path, 100);
  collect_t c = s_replay (log, 2, INT64_MIN, NULL, NULL);
  assert_int_equal (c.n, 1);
  free (c.seqs);
  same_bytes_t cmp = { copy, copy_len, false };
  assert_int_equal (eventlog_replay (log, 2, INT64_MIN, NULL, s_compare, &cmp, NULL), 0);
  assert_true (cmp.same);
  free (copy);
  eventlog_destroy (&log);
}

/* Writes 5 events and returns the file image and the last record's offset. */
static char *
s_five_event_file (fixture_t *f, size_t *len, size_t *last_off)
{
  eventlog_t *log = s_open (f->path, 100);
  s_append_range (log, 1, 5);
  s_flush (log);
  eventlog_destroy (&log);
  char *image = s_read (f->path, len);
  size_t offs[8];
  assert_int_equal (s_record_offsets (image, *len, offs, 8), 5);
  *last_off = offs[4];
  return image;
}

/* The damaged last record is gone, the four before it stay, and the log
 * goes on from seq 5. */
static void
s_expect_last_dropped (fixture_t *f, size_t last_off)
{
  eventlog_t *log = s_open (f->path, 100);
  assert_int_equal (eventlog_last_seq (log), 4);
  assert_int_equal (eventlog_count (log), 4);
  struct stat st;
  assert_int_equal (stat (f->path, &st), 0);
  assert_int_equal ((size_t) st.st_size, last_off);
  s_append_range (log, 5, 5);
  s_flush (log);
  eventlog_destroy (&log);
  log = s_open (f->path, 100);
  assert_int_equal (eventlog_last_seq (log), 5);
  assert_int_equal (eventlog_count (log), 5);
  eventlog_destroy (&log);
}

static void
test_torn_tail_at_every_offset (void **state)
{
  fixture_t *f = *state;
  size_t len, last_off;
  char *image = s_five_event_file (f, &len, &last_off);
  for (size_t cut = last_off; cut < len; cut++)
    {
      s_write (f->path, image, cut);
      s_expect_last_dropped (f, last_off);
    }
  free (image);
}

static void
test_flipped_byte_in_last_record (void **state)
{
  fixture_t *f = *state;
  size_t len, last_off;
  char *image = s_five_event_file (f, &len, &last_off);
  for (size_t at = last_off; at < len; at++)
    {
      image[at] ^= 0x20;
      s_write (f->path, image, len);
      image[at] ^= 0x20;
      s_expect_last_dropped (f, last_off);
    }
  free (image);
}

/* Damage with valid records after it is not a crash: the records before it
 * stay, the file is kept aside, and seq never goes back. */
static void
test_corrupt_record_in_the_middle (void **state)
{
  fixture_t *f = *state;
  eventlog_t *log = s_open (f->path, 100);
  s_append_range (log, 1, 10);
  s_flush (log);
  eventlog_destroy (&log);
  size_t len, offs[16];
  char *image = s_read (f->path, &len);
  assert_int_equal (s_record_offsets (image, len, offs, 16), 10);
  image[offs[4] + 12] ^= 0x01; /* inside record 5's payload */
  s_write (f->path, image, len);
  free (image);

  log = s_open (f->path, 100);
  assert_int_equal (eventlog_count (log), 4);
  assert_int_equal (eventlog_oldest_seq (log), 1);
  assert_int_equal (eventlog_last_seq (log), 10);
  assert_int_equal (s_count_files_with_prefix (f->dir, "events.log.corrupt."), 1);
  s_append_range (log, 11, 11);
  s_flush (log);

  bool truncated = false;
  collect_t c = s_replay (log, 0, INT64_MIN, NULL, &truncated);
  uint64_t want[] = { 1, 2, 3, 4, 11 };
  assert_int_equal (c.n, 5);
  assert_memory_equal (c.seqs, want, sizeof want);
  assert_true (truncated);
  free (c.seqs);
  c = s_replay (log, 4, INT64_MIN, NULL, &truncated);
  assert_true (truncated);
  free (c.seqs);
  c = s_replay (log, 10, INT64_MIN, NULL, &truncated);
  assert_int_equal (c.n, 1);
  assert_false (truncated);
  free (c.seqs);
  eventlog_destroy (&log);

  /* The repaired file stands on its own. */
  log = s_open (f->path, 100);
  assert_int_equal (eventlog_last_seq (log), 11);
  assert_int_equal (eventlog_count (log), 5);
  eventlog_destroy (&log);
}

/* Random damage anywhere after the header: the log always opens, keeps
 * every record before the first damaged one, and never goes back in seq. */
static void
test_random_damage (void **state)
{
  fixture_t *f = *state;
  eventlog_t *log = s_open (f->path, 100);
  s_append_range (log, 1, 20);
  s_flush (log);
  eventlog_destroy (&log);
  size_t len, offs[32];
  char *image = s_read (f->path, &len);
  assert_int_equal (s_record_offsets (image, len, offs, 32), 20);
  char *copy = malloc (len);
  srand (42);
  for (int round = 0; round < 300; round++)
    {
      memcpy (copy, image, len);
      size_t first = len;
      int flips = 1 + rand () % 4;
      for (int i = 0; i < flips; i++)
        {
          size_t at = HEADER + (size_t) rand () % (len - HEADER);
          copy[at] = (char) (copy[at] ^ (1 + rand () % 255));
          first = at < first ? at : first;
        }
      size_t intact = 0;
      while (intact < 20 && (intact == 19 ? len : offs[intact + 1]) <= first)
        intact++;
      s_write (f->path, copy, len);
      log = s_open (f->path, 100);
      assert_true (eventlog_count (log) >= intact);
      assert_true (eventlog_last_seq (log) >= intact);
      if (flips == 1 && intact < 19)
        assert_int_equal (eventlog_last_seq (log), 20);
      uint64_t next = eventlog_last_seq (log) + 1;
      s_append_range (log, next, next);
      s_flush (log);
      eventlog_destroy (&log);
      log = s_open (f->path, 100);
      assert_int_equal (eventlog_last_seq (log), next);
      eventlog_destroy (&log);
    }
  free (copy);
  free (image);
}

static void
test_bad_header_refused_and_kept (void **state)
{
  fixture_t *f = *state;
  s_write (f->path, "not a log at all, certainly not", 31);
  eventlog_t *log = NULL;
  zcd_error_t *err = NULL;
  assert_int_equal (eventlog_open (f->path, 100, &log, &err), -1);
  assert_null (log);
  assert_non_null (strstr (err->msg, "header"));
  zcd_error_free (&err);
  size_t len;
  char *buf = s_read (f->path, &len);
  assert_int_equal (len, 31);
  free (buf);

  /* An empty file (say, touched by hand) is just a new log. */
  s_write (f->path, "", 0);
  log = s_open (f->path, 100);
  assert_int_equal (eventlog_last_seq (log), 0);
  s_append_range (log, 1, 1);
  s_flush (log);
  eventlog_destroy (&log);
}

static size_t
s_file_records (const char *path)
{
  size_t len;
  static size_t offs[MAX_SEQS];
  char *buf = s_read (path, &len);
  size_t n = s_record_offsets (buf, len, offs, MAX_SEQS);
  free (buf);
  return n;
}

static void
test_compaction_keeps_newest_n (void **state)
{
  fixture_t *f = *state;
  eventlog_t *log = s_open (f->path, 10);
  /* Past `retain`, older records are hidden at once, dropped in batches. */
  s_append_range (log, 1, 50);
  s_flush (log);
  assert_int_equal (eventlog_count (log), 10);
  assert_int_equal (eventlog_oldest_seq (log), 41);
  assert_int_equal (eventlog_stored_count (log), 50);
  assert_int_equal (s_file_records (f->path), 50);

  for (uint64_t i = 51; i <= 1000; i++)
    {
      s_append_range (log, i, i);
      s_flush (log);
      assert_true (eventlog_stored_count (log) <= 10 + 1 + 64);
    }
  assert_true (s_file_records (f->path) <= 10 + 1 + 64);

  zcd_error_t *err = NULL;
  assert_int_equal (eventlog_compact (log, &err), 0);
  assert_int_equal (s_file_records (f->path), 10);
  assert_int_equal (eventlog_stored_count (log), 10);
  assert_int_equal (eventlog_oldest_seq (log), 991);
  s_append_range (log, 1001, 1001);
  s_flush (log);
  eventlog_destroy (&log);

  log = s_open (f->path, 10);
  assert_int_equal (eventlog_last_seq (log), 1001);
  assert_int_equal (eventlog_oldest_seq (log), 992);
  s_append_range (log, 1002, 1002);
  eventlog_destroy (&log);

  /* A smaller retain on restart compacts at once. */
  log = s_open (f->path, 3);
  assert_int_equal (eventlog_last_seq (log), 1001);
  assert_int_equal (eventlog_count (log), 3);
  eventlog_destroy (&log);
}

/* Compaction writes a temp file and renames it: a crash leaves the old log
 * (maybe with a temp file beside it) or the new one. */
static void
test_crash_during_compaction (void **state)
{
  fixture_t *f = *state;
  eventlog_t *log = s_open (f->path, 10);
  s_append_range (log, 1, 50);
  s_flush (log);
  size_t old_len, new_len;
  char *old_image = s_read (f->path, &old_len);
  zcd_error_t *err = NULL;
  assert_int_equal (eventlog_compact (log, &err), 0);
  eventlog_destroy (&log);
  char *new_image = s_read (f->path, &new_len);
  assert_true (new_len < old_len);

  char tmp[256];
  snprintf (tmp, sizeof tmp, "%s.tmp.4242", f->path);
  for (int crash_before_rename = 1; crash_before_rename >= 0; crash_before_rename--)
    {
      if (crash_before_rename)
        {
          s_write (f->path, old_image, old_len);
          s_write (tmp, new_image, new_len / 2);
        }
      else
        {
          s_write (f->path, new_image, new_len);
          s_write (tmp, "junk", 4);
        }
      log = s_open (f->path, 10);
      assert_int_equal (eventlog_last_seq (log), 50);
      assert_int_equal (eventlog_oldest_seq (log), 41);
      assert_int_equal (eventlog_stored_count (log), crash_before_rename ? 50 : 10);
      assert_int_equal (access (tmp, F_OK), -1);
      s_append_range (log, 51, 51);
      s_flush (log);
      eventlog_destroy (&log);
      log = s_open (f->path, 10);
      assert_int_equal (eventlog_last_seq (log), 51);
      eventlog_destroy (&log);
    }
  free (old_image);
  free (new_image);
}

static void
test_replay_filters (void **state)
{
  fixture_t *f = *state;
  eventlog_t *log = s_open (f->path, 100);
  s_append_range (log, 1, 30);
  bool truncated = true;

  collect_t c = s_replay (log, 20, INT64_MIN, NULL, &truncated);
  assert_int_equal (c.n, 10);
  assert_int_equal (c.seqs[0], 21);
  assert_int_equal (c.seqs[9], 30);
  assert_false (truncated);
  free (c.seqs);

  c = s_replay (log, 0, 25000, NULL, &truncated); /* strictly after */
  assert_int_equal (c.n, 5);
  assert_int_equal (c.seqs[0], 26);
  assert_false (truncated);
  free (c.seqs);

  c = s_replay (log, 0, INT64_MIN, "b", &truncated);
  assert_int_equal (c.n, 10);
  for (size_t i = 0; i < c.n; i++)
    assert_int_equal (c.seqs[i] % 3, 1);
  free (c.seqs);

  c = s_replay (log, 10, 20000, "c", &truncated);
  uint64_t want[] = { 23, 26, 29 };
  assert_int_equal (c.n, 3);
  assert_memory_equal (c.seqs, want, sizeof want);
  free (c.seqs);

  c = s_replay (log, 0, INT64_MIN, "nosuch", &truncated);
  assert_int_equal (c.n, 0);
  free (c.seqs);
  c = s_replay (log, 30, INT64_MIN, NULL, &truncated);
  assert_int_equal (c.n, 0);
  assert_false (truncated);
  free (c.seqs);
  c = s_replay (log, UINT64_MAX, INT64_MIN, NULL, &truncated);
  assert_int_equal (c.n, 0);
  assert_false (truncated);
  free (c.seqs);

  /* The callback can stop the replay. */
  collect_t stop = { calloc (8, sizeof (uint64_t)), 0, 3 };
  assert_int_equal (eventlog_replay (log, 0, INT64_MIN, NULL, s_collect, &stop, NULL), 7);
  assert_int_equal (stop.n, 3);
  free (stop.seqs);
  eventlog_destroy (&log);
}

static void
s_check_truncation (eventlog_t *log)
{
  bool truncated = false;
  collect_t c = s_replay (log, 0, INT64_MIN, NULL, &truncated);
  assert_int_equal (c.n, 10);
  assert_int_equal (c.seqs[0], 21);
  assert_true (truncated);
  free (c.seqs);
  c = s_replay (log, 19, INT64_MIN, NULL, &truncated);
  assert_true (truncated);
  free (c.seqs);
  c = s_replay (log, 20, INT64_MIN, NULL, &truncated);
  assert_int_equal (c.n, 10);
  assert_false (truncated);
  free (c.seqs);
  /* With an id filter: the dropped events may have been that container's. */
  c = s_replay (log, 0, INT64_MIN, "a", &truncated);
  assert_true (truncated);
  free (c.seqs);
  /* By time: nothing dropped is newer than the oldest kept (ts 21000). */
  c = s_replay (log, 0, 21000, NULL, &truncated);
  assert_int_equal (c.n, 9);
  assert_false (truncated);
  free (c.seqs);
  c = s_replay (log, 0, 20999, NULL, &truncated);
  assert_int_equal (c.n, 10);
  assert_true (truncated);
  free (c.seqs);
  assert_int_equal (eventlog_oldest_seq (log), 21);
}

static void
test_replay_truncated_and_oldest_seq (void **state)
{
  fixture_t *f = *state;
  eventlog_t *log = s_open (f->path, 10);
  s_append_range (log, 1, 30);
  s_check_truncation (log);
  s_flush (log);
  eventlog_destroy (&log);
  log = s_open (f->path, 10);
  s_check_truncation (log);
  zcd_error_t *err = NULL;
  assert_int_equal (eventlog_compact (log, &err), 0);
  s_check_truncation (log);
  eventlog_destroy (&log);
}

static off_t
s_file_size (const char *path)
{
  struct stat st;
  assert_int_equal (stat (path, &st), 0);
  return st.st_size;
}

/* A write that fails halfway (here: past RLIMIT_FSIZE, as on a full disk)
 * must not leave its torn bytes between records: the retry writes them
 * again in place. */
static void
test_failed_flush_is_retried_in_place (void **state)
{
  fixture_t *f = *state;
  eventlog_t *log = s_open (f->path, 100);
  s_append_range (log, 1, 3);
  s_flush (log);
  off_t good = s_file_size (f->path);

  struct rlimit saved, tight;
  assert_int_equal (getrlimit (RLIMIT_FSIZE, &saved), 0);
  tight = saved;
  tight.rlim_cur = (rlim_t) good + 40;
  signal (SIGXFSZ, SIG_IGN);
  assert_int_equal (setrlimit (RLIMIT_FSIZE, &tight), 0);
  s_append_range (log, 4, 8);
  zcd_error_t *err = NULL;
  int rc = eventlog_flush (log, &err);
  assert_int_equal (setrlimit (RLIMIT_FSIZE, &saved), 0);
  signal (SIGXFSZ, SIG_DFL);
  assert_int_equal (rc, -1);
  zcd_error_free (&err);
  assert_int_equal (s_file_size (f->path), good + 40); /* a torn tail */

  /* Still replayable from memory, and written whole by the next flush. */
  collect_t c = s_replay (log, 3, INT64_MIN, NULL, NULL);
  assert_int_equal (c.n, 5);
  free (c.seqs);
  s_append_range (log, 9, 9);
  s_flush (log);
  eventlog_destroy (&log);
  log = s_open (f->path, 100);
  assert_int_equal (eventlog_last_seq (log), 9);
  assert_int_equal (eventlog_count (log), 9);
  assert_int_equal (s_file_records (f->path), 9);
  eventlog_destroy (&log);
}

static double
s_secs (void)
{
  return (double) zcd_mono_ns () / 1e9;
}

static void
test_hundred_thousand_events (void **state)
{
  fixture_t *f = *state;
  const uint64_t n = 100000;
  eventlog_t *log = s_open (f->path, n);
  double t0 = s_secs ();
  for (uint64_t i = 1; i <= n; i++)
    {
      s_append_range (log, i, i);
      if (i % 100 == 0)
        s_flush (log);
    }
  double t1 = s_secs ();
  collect_t c = s_replay (log, 0, INT64_MIN, NULL, NULL);
  double t2 = s_secs ();
  assert_int_equal (c.n, n);
  assert_int_equal (c.seqs[n - 1], n);
  free (c.seqs);
  c = s_replay (log, n - 10, INT64_MIN, NULL, NULL);
  assert_int_equal (c.n, 10);
  free (c.seqs);
  eventlog_destroy (&log);
  double t3 = s_secs ();
  log = s_open (f->path, n);
  double t4 = s_secs ();
  assert_int_equal (eventlog_count (log), n);
  printf ("eventlog: %.0f appends/s (flush every 100), replay %.0f events/s, "
          "reopen of %" PRIu64 " events %.1f ms\n",
          (double) n / (t1 - t0), (double) n / (t2 - t1), n, (t4 - t3) * 1e3);
  eventlog_destroy (&log);
}

int
main (void)
{
  /* The damage tests provoke hundreds of expected warnings. */
  zcd_log_set_min (ZCD_LOG_ERROR);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_seq_contiguous_across_reopen, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_event_encoding, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_torn_tail_at_every_offset, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_flipped_byte_in_last_record, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_corrupt_record_in_the_middle, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_random_damage, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_bad_header_refused_and_kept, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_compaction_keeps_newest_n, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_crash_during_compaction, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_replay_filters, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_replay_truncated_and_oldest_seq, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_failed_flush_is_retried_in_place, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_hundred_thousand_events, s_setup, s_teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
