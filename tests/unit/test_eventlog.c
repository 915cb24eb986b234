/* core/eventlog: seq across restarts, torn tails, damage, compaction and the
 * crashes around it, replay filters, the Event encoding; hostile files in
 * the log's directory, failed compactions and a full disk (a tiny tmpfs,
 * when the tests may mount one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/eventlog.h"
#include "core/eventlog_int.h"
#include "core/fsutil.h"
#include "core/log.h"

#define HEADER 24
#define MAX_SEQS 200000

typedef struct
{
  char dir[64];
  char path[128];
  char fs[96];        /* a tiny tmpfs (s_setup_tmpfs), "" when not mounted */
  char why_not[128]; /* why it could not be mounted */
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

/* A 64 KiB tmpfs at <dir>/fs: a disk that really fills up.  Mounting needs
 * root (CAP_SYS_ADMIN); without it the tests that need one are skipped. */
static int
s_setup_tmpfs (void **state)
{
  if (s_setup (state) < 0)
    return -1;
  fixture_t *f = *state;
  char fs[96];
  snprintf (fs, sizeof fs, "%s/fs", f->dir);
  if (mkdir (fs, 0700) < 0)
    return -1;
  if (mount ("tmpfs", fs, "tmpfs", 0, "size=64k,mode=0700") < 0)
    snprintf (f->why_not, sizeof f->why_not, "cannot mount a tmpfs at %s: %s", fs,
              strerror (errno));
  else
    {
      strcpy (f->fs, fs);
      snprintf (f->path, sizeof f->path, "%s/events.log", fs);
    }
  return 0;
}

static int
s_teardown_tmpfs (void **state)
{
  fixture_t *f = *state;
  if (f->fs[0] && umount2 (f->fs, MNT_DETACH) < 0)
    fprintf (stderr, "umount %s: %s\n", f->fs, strerror (errno));
  return s_teardown (state);
}

static void
s_need_tmpfs (fixture_t *f)
{
  if (f->fs[0])
    return;
  print_message ("[  SKIP    ] %s (run as root to mount one)\n", f->why_not);
  skip ();
}

/* Fills the file system of `dir` with one file until it refuses a byte. */
static void
s_fill (const char *dir, char *filler, size_t size)
{
  snprintf (filler, size, "%s/filler", dir);
  int fd = open (filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  assert_true (fd >= 0);
  static const char block[4096];
  for (size_t chunk = sizeof block; chunk > 0; chunk /= 2)
    while (write (fd, block, chunk) == (ssize_t) chunk)
      ;
  assert_int_equal (errno, ENOSPC);
  close (fd);
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

  /* A temp name as zcd_write_file_atomic makes them. */
  char tmp[256];
  snprintf (tmp, sizeof tmp, "%s.tmp.00000000deadbeef", f->path);
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

static bool
s_exists (const char *path)
{
  struct stat st;
  return lstat (path, &st) == 0;
}

/* The start-up sweep removes compaction temps, and nothing that merely looks
 * like one: zcd only ever deletes what it made. */
static void
test_temp_sweep_removes_only_ours (void **state)
{
  fixture_t *f = *state;
  eventlog_t *log = s_open (f->path, 100);
  s_append_range (log, 1, 3);
  s_flush (log);
  eventlog_destroy (&log);

  static const char *const kept_files[] = {
    "events.log.tmp.4242",              /* the old, predictable naming */
    "events.log.tmp.0123456789ABCDEF",  /* not as zcd writes hex */
    "events.log.tmp.0123456789abcdef0", /* 17 digits */
    "events.log.tmp.0123456789abcde",   /* 15 */
    "events.log.tmp.0123456789abcdeg",
    "events.log.tmp.",
    "other.tmp.0123456789abcdef",
  };
  char path[256], victim[300], dir16[256], link16[256], foreign[256];
  for (size_t i = 0; i < sizeof kept_files / sizeof *kept_files; i++)
    {
      snprintf (path, sizeof path, "%s/%s", f->dir, kept_files[i]);
      s_write (path, "x", 1);
    }
  snprintf (path, sizeof path, "%s.tmp.0123456789abcdef", f->path);
  s_write (path, "half a compaction", 17);
  /* A directory (with something inside) and a symlink by our naming. */
  snprintf (dir16, sizeof dir16, "%s.tmp.fedcba9876543210", f->path);
  assert_int_equal (mkdir (dir16, 0700), 0);
  snprintf (victim, sizeof victim, "%s/keep", dir16);
  s_write (victim, "victim", 6);
  snprintf (link16, sizeof link16, "%s.tmp.1111111111111111", f->path);
  assert_int_equal (symlink (victim, link16), 0);
  /* Our naming, but someone else's file. */
  snprintf (foreign, sizeof foreign, "%s.tmp.2222222222222222", f->path);
  s_write (foreign, "theirs", 6);
  bool chowned = chown (foreign, 65534, 65534) == 0;

  log = s_open (f->path, 100);
  assert_int_equal (eventlog_last_seq (log), 3);
  eventlog_destroy (&log);

  assert_false (s_exists (path));
  for (size_t i = 0; i < sizeof kept_files / sizeof *kept_files; i++)
    {
      snprintf (path, sizeof path, "%s/%s", f->dir, kept_files[i]);
      if (!s_exists (path))
        fail_msg ("%s was removed", kept_files[i]);
    }
  assert_true (s_exists (dir16));
  assert_true (s_exists (link16));
  size_t len;
  char *buf = s_read (victim, &len);
  assert_int_equal (len, 6);
  free (buf);
  assert_int_equal (s_exists (foreign), chowned);
}

/* A client-made directory used to squat on the predictable compaction temp
 * name (`events.log.tmp.<pid>`), failing every compaction with EISDIR and,
 * through the flush, every reply.  Squatters by any name now change
 * nothing. */
static void
test_squatted_temp_names_do_not_break_compaction (void **state)
{
  fixture_t *f = *state;
  char squat[3][256];
  snprintf (squat[0], sizeof squat[0], "%s.tmp.%d", f->path, (int) getpid ());
  snprintf (squat[1], sizeof squat[1], "%s.tmp.4242", f->path);
  snprintf (squat[2], sizeof squat[2], "%s.tmp.00000000deadbeef", f->path);
  for (int i = 0; i < 3; i++)
    assert_int_equal (mkdir (squat[i], 0700), 0);
  eventlog_t *log = s_open (f->path, 10);
  for (uint64_t i = 1; i <= 300; i++)
    {
      s_append_range (log, i, i);
      s_flush (log);
      assert_true (eventlog_stored_count (log) <= 10 + 1 + 64);
      assert_int_equal (eventlog_durable_seq (log), i);
    }
  assert_true (s_file_records (f->path) <= 10 + 1 + 64);
  zcd_error_t *err = NULL;
  if (eventlog_compact (log, &err) < 0)
    fail_msg ("eventlog_compact: %s", err->msg);
  assert_int_equal (s_file_records (f->path), 10);
  eventlog_destroy (&log);
  for (int i = 0; i < 3; i++)
    assert_true (s_exists (squat[i]));
  log = s_open (f->path, 10);
  assert_int_equal (eventlog_last_seq (log), 300);
  assert_int_equal (eventlog_oldest_seq (log), 291);
  eventlog_destroy (&log);
}

/* The log is zcd's own file: a symlink planted in its place (dangling or
 * not), a directory, a FIFO or someone else's file is refused, and nothing
 * is written through it. */
static void
test_open_refuses_what_is_not_our_log (void **state)
{
  fixture_t *f = *state;
  char victim[256];
  snprintf (victim, sizeof victim, "%s/victim", f->dir);
  eventlog_t *log = NULL;
  zcd_error_t *err = NULL;

  for (int dangling = 0; dangling <= 1; dangling++)
    {
      if (!dangling)
        s_write (victim, "victim", 6);
      assert_int_equal (symlink (victim, f->path), 0);
      assert_int_equal (eventlog_open (f->path, 100, &log, &err), -1);
      assert_null (log);
      assert_non_null (strstr (err->msg, "symbolic link"));
      zcd_error_free (&err);
      if (dangling)
        assert_false (s_exists (victim));
      else
        {
          size_t len;
          char *buf = s_read (victim, &len);
          assert_int_equal (len, 6);
          assert_memory_equal (buf, "victim", 6);
          free (buf);
          unlink (victim);
        }
      assert_int_equal (unlink (f->path), 0);
    }

  assert_int_equal (mkdir (f->path, 0700), 0);
  assert_int_equal (eventlog_open (f->path, 100, &log, &err), -1);
  assert_non_null (strstr (err->msg, "not a regular file"));
  zcd_error_free (&err);
  assert_int_equal (rmdir (f->path), 0);

  assert_int_equal (mkfifo (f->path, 0600), 0); /* must not block either */
  assert_int_equal (eventlog_open (f->path, 100, &log, &err), -1);
  assert_non_null (strstr (err->msg, "not a regular file"));
  zcd_error_free (&err);
  assert_int_equal (unlink (f->path), 0);

  log = s_open (f->path, 100);
  s_append_range (log, 1, 1);
  s_flush (log);
  eventlog_destroy (&log);
  if (chown (f->path, 65534, 65534) == 0 && geteuid () != 65534)
    {
      assert_int_equal (eventlog_open (f->path, 100, &log, &err), -1);
      assert_non_null (strstr (err->msg, "owned by uid 65534"));
      zcd_error_free (&err);
    }
}

static void
test_durable_seq (void **state)
{
  fixture_t *f = *state;
  eventlog_t *log = s_open (f->path, 10);
  assert_int_equal (eventlog_durable_seq (log), 0);
  s_append_range (log, 1, 3);
  assert_int_equal (eventlog_durable_seq (log), 0);
  assert_int_equal (eventlog_last_seq (log), 3);
  s_flush (log);
  assert_int_equal (eventlog_durable_seq (log), 3);
  eventlog_destroy (&log);

  /* What was loaded is on disk, also while a new record waits. */
  log = s_open (f->path, 10);
  assert_int_equal (eventlog_durable_seq (log), 3);
  s_append_range (log, 4, 4);
  assert_int_equal (eventlog_durable_seq (log), 3);
  zcd_error_t *err = NULL;
  assert_int_equal (eventlog_compact (log, &err), 0);
  assert_int_equal (eventlog_durable_seq (log), 4);
  /* Across compactions at flush. */
  for (uint64_t i = 5; i <= 200; i++)
    {
      s_append_range (log, i, i);
      assert_int_equal (eventlog_durable_seq (log), i - 1);
      s_flush (log);
      assert_int_equal (eventlog_durable_seq (log), i);
    }
  eventlog_destroy (&log);
}

/* No file descriptor left: the compaction's temp file cannot be created
 * while appends to the open log still work (as on a disk too full for a
 * rewrite).  Returns the limit to restore. */
static struct rlimit
s_no_more_fds (void)
{
  struct rlimit saved, tight;
  assert_int_equal (getrlimit (RLIMIT_NOFILE, &saved), 0);
  int lowest_free = dup (0);
  assert_true (lowest_free >= 0);
  close (lowest_free);
  tight = saved;
  tight.rlim_cur = (rlim_t) lowest_free;
  assert_int_equal (setrlimit (RLIMIT_NOFILE, &tight), 0);
  return saved;
}

/* A failed compaction is housekeeping gone wrong, not a failed flush: the
 * records are durable, durable_seq advances, memory stays bounded by
 * retention (the file keeps the records), appends land at the file's real
 * end, and a later compaction catches up. */
static void
test_failed_compaction_does_not_fail_flush (void **state)
{
  fixture_t *f = *state;
  const size_t threshold = 10 + 1 + 64;
  eventlog_t *log = s_open (f->path, 10);
  s_append_range (log, 1, threshold);
  s_flush (log);
  assert_int_equal (eventlog_stored_count (log), threshold);

  struct rlimit saved = s_no_more_fds ();
  zcd_error_t *err = NULL;
  s_append_range (log, threshold + 1, threshold + 1);
  int rc = eventlog_flush (log, &err);
  uint64_t durable = eventlog_durable_seq (log);
  size_t stored = eventlog_stored_count (log);
  /* More turns, past the threshold again, inside the retry backoff. */
  for (uint64_t i = threshold + 2; i <= 3 * threshold && rc == 0; i++)
    {
      s_append_range (log, i, i);
      rc = eventlog_flush (log, &err);
      if (eventlog_stored_count (log) > threshold + 1)
        rc = -2;
    }
  assert_int_equal (setrlimit (RLIMIT_NOFILE, &saved), 0);
  if (rc == -1)
    fail_msg ("flush failed: %s", err->msg);
  assert_int_equal (rc, 0);
  assert_int_equal (durable, threshold + 1);
  assert_int_equal (stored, 10);
  assert_int_equal (eventlog_durable_seq (log), 3 * threshold);
  /* Not compacted: the file holds every record, written in order. */
  assert_int_equal (s_file_records (f->path), 3 * threshold);
  bool truncated = false;
  collect_t c = s_replay (log, 0, INT64_MIN, NULL, &truncated);
  assert_int_equal (c.n, 10);
  assert_int_equal (c.seqs[0], 3 * threshold - 9);
  assert_true (truncated);
  free (c.seqs);
  eventlog_destroy (&log);

  /* The uncompacted file loads whole (and is compacted on the way). */
  log = s_open (f->path, 10);
  assert_int_equal (eventlog_last_seq (log), 3 * threshold);
  assert_int_equal (eventlog_durable_seq (log), 3 * threshold);
  assert_int_equal (eventlog_oldest_seq (log), 3 * threshold - 9);
  assert_int_equal (s_file_records (f->path), 10);
  eventlog_destroy (&log);
}

/* The same with a disk that is really full: appends still fit in the log
 * file's last page, its rewrite does not. */
static void
test_full_disk_compaction_does_not_fail_flush (void **state)
{
  fixture_t *f = *state;
  s_need_tmpfs (f);
  const size_t retain = 20, threshold = 20 + 2 + 64;
  eventlog_t *log = s_open (f->path, retain);
  s_append_range (log, 1, threshold);
  s_flush (log);
  off_t size = s_file_size (f->path);
  assert_true (4096 - size % 4096 >= 200); /* room for the next records */
  char filler[256];
  s_fill (f->fs, filler, sizeof filler);

  s_append_range (log, threshold + 1, threshold + 2);
  zcd_error_t *err = NULL;
  if (eventlog_flush (log, &err) < 0)
    fail_msg ("flush failed: %s", err->msg);
  assert_int_equal (eventlog_durable_seq (log), threshold + 2);
  assert_int_equal (eventlog_stored_count (log), retain);
  assert_int_equal (s_file_records (f->path), threshold + 2);
  assert_int_equal (eventlog_compact (log, &err), -1);
  assert_int_equal (err->code, ZCD_E_UNAVAILABLE);
  zcd_error_free (&err);
  /* No temp file is left behind by the failed tries. */
  assert_int_equal (s_count_files_with_prefix (f->fs, "events.log.tmp."), 0);

  assert_int_equal (unlink (filler), 0);
  if (eventlog_compact (log, &err) < 0)
    fail_msg ("eventlog_compact: %s", err->msg);
  assert_int_equal (s_file_records (f->path), retain);
  eventlog_destroy (&log);
  log = s_open (f->path, retain);
  assert_int_equal (eventlog_last_seq (log), threshold + 2);
  assert_int_equal (eventlog_count (log), retain);
  eventlog_destroy (&log);
}

/* A write that fails on a full disk fails the flush: the records stay
 * replayable, durable_seq stays behind, and once there is room again the
 * next flush writes them (in place, no garbage between records). */
static void
test_full_disk_write_fails_then_recovers (void **state)
{
  fixture_t *f = *state;
  s_need_tmpfs (f);
  eventlog_t *log = s_open (f->path, 1000);
  s_append_range (log, 1, 5);
  s_flush (log);
  char filler[256];
  s_fill (f->fs, filler, sizeof filler);

  s_append_range (log, 6, 205); /* some 10 KiB: more than the last page holds */
  zcd_error_t *err = NULL;
  assert_int_equal (eventlog_flush (log, &err), -1);
  assert_int_equal (err->code, ZCD_E_UNAVAILABLE);
  assert_non_null (strstr (err->msg, "No space left"));
  zcd_error_free (&err);
  assert_int_equal (eventlog_durable_seq (log), 5);
  assert_int_equal (eventlog_last_seq (log), 205);
  collect_t c = s_replay (log, 5, INT64_MIN, NULL, NULL);
  assert_int_equal (c.n, 200);
  assert_int_equal (c.seqs[199], 205);
  free (c.seqs);
  /* Still full: the retry fails the same way and changes nothing. */
  s_append_range (log, 206, 206);
  assert_int_equal (eventlog_flush (log, &err), -1);
  zcd_error_free (&err);
  assert_int_equal (eventlog_durable_seq (log), 5);

  assert_int_equal (unlink (filler), 0);
  s_flush (log);
  assert_int_equal (eventlog_durable_seq (log), 206);
  eventlog_destroy (&log);
  log = s_open (f->path, 1000);
  assert_int_equal (eventlog_last_seq (log), 206);
  assert_int_equal (eventlog_count (log), 206);
  assert_int_equal (s_file_records (f->path), 206);
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

/* ---- the record reader (eventlog_index_event) on hand-made maps ---- */

/* A record's payload being packed by hand. */
typedef struct
{
  msgpack_sbuffer buf;
  msgpack_packer pk;
} rec_t;

static void
s_rec_begin (rec_t *r, uint32_t n)
{
  msgpack_sbuffer_init (&r->buf);
  msgpack_packer_init (&r->pk, &r->buf, msgpack_sbuffer_write);
  msgpack_pack_map (&r->pk, n);
}

static void
s_key (rec_t *r, const char *k)
{
  msgpack_pack_str_with_body (&r->pk, k, strlen (k));
}

/* The four keys every record has: seq 7, type, id "web1", ts. */
static void
s_rec_base (rec_t *r, uint32_t extra, int64_t ts)
{
  s_rec_begin (r, 4 + extra);
  s_key (r, "seq");
  msgpack_pack_uint64 (&r->pk, 7);
  s_key (r, "type");
  msgpack_pack_str_with_body (&r->pk, "exit", 4);
  s_key (r, "id");
  msgpack_pack_str_with_body (&r->pk, "web1", 4);
  s_key (r, "ts");
  msgpack_pack_int64 (&r->pk, ts);
}

static bool
s_index (rec_t *r, eventlog_indexed_t *ev)
{
  bool ok = eventlog_index_event (r->buf.data, r->buf.size, ev);
  msgpack_sbuffer_destroy (&r->buf);
  return ok;
}

static void
test_record_index (void **state)
{
  (void) state;
  eventlog_indexed_t ev;
  rec_t r;

  /* Every known key, and newer plain values (nil, bool, int, str) skipped. */
  s_rec_base (&r, 8, -5);
  s_key (&r, "pid");
  msgpack_pack_str_with_body (&r.pk, "init", 4);
  s_key (&r, "status");
  msgpack_pack_uint32 (&r.pk, 137);
  s_key (&r, "system_pid");
  msgpack_pack_int32 (&r.pk, 4242); /* a signed encoding of a positive value */
  s_key (&r, "oom_killed");
  msgpack_pack_true (&r.pk);
  s_key (&r, "newer_nil");
  msgpack_pack_nil (&r.pk);
  s_key (&r, "newer_int");
  msgpack_pack_int64 (&r.pk, -1);
  s_key (&r, "newer_big");
  msgpack_pack_uint64 (&r.pk, UINT64_MAX);
  s_key (&r, "newer_str");
  msgpack_pack_str_with_body (&r.pk, "x", 1);
  const char *id_at = memmem (r.buf.data, r.buf.size, "web1", 4); /* for id_off */
  assert_non_null (id_at);
  size_t want_off = (size_t) (id_at - r.buf.data);
  assert_true (s_index (&r, &ev));
  assert_int_equal (ev.seq, 7);
  assert_int_equal (ev.ts, -5);
  assert_int_equal (ev.id_off, want_off);
  assert_int_equal (ev.id_len, 4);

  /* A 16-bit map header is a map all the same. */
  msgpack_sbuffer_init (&r.buf);
  msgpack_packer_init (&r.pk, &r.buf, msgpack_sbuffer_write);
  const char head[] = { (char) 0xde, 0, 4 };
  msgpack_sbuffer_write (&r.buf, head, 3);
  s_key (&r, "seq");
  msgpack_pack_uint64 (&r.pk, 9);
  s_key (&r, "type");
  msgpack_pack_str_with_body (&r.pk, "oom", 3);
  s_key (&r, "id");
  msgpack_pack_str_with_body (&r.pk, "a", 1);
  s_key (&r, "ts");
  msgpack_pack_int64 (&r.pk, 1);
  assert_true (s_index (&r, &ev));
  assert_int_equal (ev.seq, 9);

  /* Refused: a newer key holding an array; status as str; oom_killed as
   * int; a negative seq; seq 0; a ts above INT64_MAX; a missing ts; a
   * byte after the map; a non-map; a map cut short. */
  s_rec_base (&r, 1, 1);
  s_key (&r, "newer");
  msgpack_pack_array (&r.pk, 0);
  assert_false (s_index (&r, &ev));

  s_rec_base (&r, 1, 1);
  s_key (&r, "status");
  msgpack_pack_str_with_body (&r.pk, "0", 1);
  assert_false (s_index (&r, &ev));

  s_rec_base (&r, 1, 1);
  s_key (&r, "oom_killed");
  msgpack_pack_uint8 (&r.pk, 1);
  assert_false (s_index (&r, &ev));

  s_rec_begin (&r, 4);
  s_key (&r, "seq");
  msgpack_pack_int8 (&r.pk, -1);
  s_key (&r, "type");
  msgpack_pack_str_with_body (&r.pk, "exit", 4);
  s_key (&r, "id");
  msgpack_pack_str_with_body (&r.pk, "w", 1);
  s_key (&r, "ts");
  msgpack_pack_int64 (&r.pk, 1);
  assert_false (s_index (&r, &ev));

  s_rec_begin (&r, 4);
  s_key (&r, "seq");
  msgpack_pack_uint64 (&r.pk, 0);
  s_key (&r, "type");
  msgpack_pack_str_with_body (&r.pk, "exit", 4);
  s_key (&r, "id");
  msgpack_pack_str_with_body (&r.pk, "w", 1);
  s_key (&r, "ts");
  msgpack_pack_int64 (&r.pk, 1);
  assert_false (s_index (&r, &ev));

  s_rec_begin (&r, 4);
  s_key (&r, "seq");
  msgpack_pack_uint64 (&r.pk, 1);
  s_key (&r, "type");
  msgpack_pack_str_with_body (&r.pk, "exit", 4);
  s_key (&r, "id");
  msgpack_pack_str_with_body (&r.pk, "w", 1);
  s_key (&r, "ts");
  msgpack_pack_uint64 (&r.pk, (uint64_t) INT64_MAX + 1);
  assert_false (s_index (&r, &ev));

  s_rec_begin (&r, 3);
  s_key (&r, "seq");
  msgpack_pack_uint64 (&r.pk, 1);
  s_key (&r, "type");
  msgpack_pack_str_with_body (&r.pk, "exit", 4);
  s_key (&r, "id");
  msgpack_pack_str_with_body (&r.pk, "w", 1);
  assert_false (s_index (&r, &ev));

  s_rec_base (&r, 0, 1);
  msgpack_pack_nil (&r.pk);
  assert_false (s_index (&r, &ev));

  msgpack_sbuffer_init (&r.buf);
  msgpack_packer_init (&r.pk, &r.buf, msgpack_sbuffer_write);
  msgpack_pack_array (&r.pk, 0);
  assert_false (s_index (&r, &ev));

  s_rec_base (&r, 0, 1);
  r.buf.size -= 1;
  assert_false (s_index (&r, &ev));
}

int
main (void)
{
  /* The damage tests provoke hundreds of expected warnings. */
  zcd_log_set_min (ZCD_LOG_ERROR);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_seq_contiguous_across_reopen, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_event_encoding, s_setup, s_teardown),
    cmocka_unit_test (test_record_index),
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
    cmocka_unit_test_setup_teardown (test_temp_sweep_removes_only_ours, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_squatted_temp_names_do_not_break_compaction, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_open_refuses_what_is_not_our_log, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_durable_seq, s_setup, s_teardown),
    cmocka_unit_test_setup_teardown (test_failed_compaction_does_not_fail_flush, s_setup,
                                     s_teardown),
    cmocka_unit_test_setup_teardown (test_full_disk_compaction_does_not_fail_flush, s_setup_tmpfs,
                                     s_teardown_tmpfs),
    cmocka_unit_test_setup_teardown (test_full_disk_write_fails_then_recovers, s_setup_tmpfs,
                                     s_teardown_tmpfs),
    cmocka_unit_test_setup_teardown (test_hundred_thousand_events, s_setup, s_teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
