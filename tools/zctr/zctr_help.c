/* zctr's help: one entry per command, its synopsis (in `zctr --help` too)
 * and its flags explained (`zctr COMMAND [SUB] --help`).  The man page is
 * checked against these texts, so every flag a command takes is here. */
#include "tools/zctr/zctr.h"

#include <string.h>

typedef struct
{
  const char *cmd, *sub;
  const char *synopsis; /* lines after "zctr " in the overview */
  const char *body;     /* what it does, then its options */
} zctr_topic_t;

#define STATS_BODY                                                                                 \
  "Resource usage of the containers (all, or the IDs given), from their cgroups:\n"                \
  "CPU% (of one CPU: 200% is two CPUs busy), CPU-TIME (cumulative), MEMORY, LIMIT,\n"              \
  "MEM% (of the limit) and PIDS.  Without --watch zctr takes two samples 0.5 s\n"                  \
  "apart, so CPU% is the usage over that half second; with --json it prints the\n"                 \
  "daemon's reply to one request instead (cumulative numbers only).\n"                             \
  "\n"                                                                                             \
  "Options:\n"                                                                                     \
  "  --watch           refresh every interval until SIGINT or SIGTERM (exit 0), sorted\n"          \
  "                    by CPU%; on a terminal in place (long ids cut to its width),\n"             \
  "                    else one table per interval, a blank line between; with --json\n"           \
  "                    one reply per line\n"                                                       \
  "  --interval S      seconds between refreshes with --watch (default 2, 0.1 to 3600)\n"

/* start's and exec's */
#define LOG_OPTIONS                                                                                \
  "  --log P           its output (stdout and stderr, or its terminal) into file P,\n"             \
  "                    rotated into P.1 ... (not with --stdout, --stderr, --attach)\n"             \
  "  --log-max-bytes N rotate before P passes N bytes (K, M, G suffixes: powers of\n"              \
  "                    1024; 4K to 1024G; default 10M)\n"                                          \
  "  --log-max-files N files kept, P included (1 to 100; default 5)\n"

static const zctr_topic_t s_topics[] = {
  { "version", NULL, "version", "The daemon's version and protocol.\n" },
  { "state", NULL, "state [ID]",
    "Every container (or ID) in detail: status, runtime, bundle, creation time,\n"
    "uptime, labels, pids, memory and CPU use, then its processes as a table;\n"
    "first the machine (CPUs, memory) and the newest event.  --json prints the\n"
    "daemon's reply as is.\n" },
  { "metrics", NULL, "metrics", "The daemon's own counters, one \"name: value\" line each.\n" },
  { "stats", NULL, "stats [ID...] [--watch [--interval S]]", STATS_BODY },
  { "containers", "start",
    "containers start ID BUNDLE [--label L]... [--runtime R] [--runtime-arg A]...\n"
    "                   [--no-pivot] [--stdin P] [--stdout P] [--stderr P] [--attach]\n"
    "                   [--log P [--log-max-bytes N] [--log-max-files N]]\n"
    "                   [--checkpoint NAME [--checkpoint-dir D]]",
    "Create and start container ID from the OCI bundle BUNDLE (alias: create).\n"
    "\n"
    "Options:\n"
    "  --label L         a label (repeatable)\n"
    "  --runtime R       the OCI runtime (runc, crun; default: the daemon's)\n"
    "  --runtime-arg A   an argument for the runtime (repeatable)\n"
    "  --no-pivot        do not pivot_root (for a rootfs on a ramdisk)\n"
    "  --stdin P         the init process's stdin (default /dev/null)\n"
    "  --stdout P        its stdout (default /dev/null)\n"
    "  --stderr P        its stderr (default /dev/null)\n"
    "  --attach          stay attached to its stdio; exit with its status\n" LOG_OPTIONS
    "  --checkpoint NAME restore from checkpoint NAME instead of starting afresh\n"
    "  --checkpoint-dir D  where NAME lives (default: the daemon's, for ID)\n" },
  { "containers", "list", "containers list [--ids]",
    "A table of the containers (alias: ls): ID, STATUS, RUNTIME, PID (the init\n"
    "process's host pid), PROCS (processes zcd runs), PIDS (tasks in the\n"
    "cgroup), UPTIME, BUNDLE.\n"
    "\n"
    "Options:\n"
    "  --ids             the ids only, one a line (for scripts and completion)\n" },
  { "containers", "exec",
    "containers exec --id ID --pid P [--tty] [--attach] [--cwd D] [--env K=V]...\n"
    "                  [--uid N] [--gid N] [--stdin P] [--stdout P] [--stderr P]\n"
    "                  [--log P [--log-max-bytes N] [--log-max-files N]] -- ARGS...",
    "Run ARGS as process P in container ID.\n"
    "\n"
    "Options:\n"
    "  --id ID           the container\n"
    "  --pid P           the new process's id (container id syntax)\n"
    "  --tty             give it a terminal\n"
    "  --attach          stay attached to its stdio; exit with its status\n"
    "  --cwd D           its working directory\n"
    "  --env K=V         an environment variable (repeatable)\n"
    "  --uid N           its user id\n"
    "  --gid N           its group id\n"
    "  --stdin P         its stdin (default /dev/null)\n"
    "  --stdout P        its stdout (default /dev/null)\n"
    "  --stderr P        its stderr (default /dev/null)\n" LOG_OPTIONS },
  { "containers", "kill", "containers kill ID [--pid P] [--signal S] [--all]",
    "Send a signal to a process of container ID.\n"
    "\n"
    "Options:\n"
    "  --pid P           the process (default init)\n"
    "  --signal S        number or name (KILL, SIGKILL; default TERM)\n"
    "  --all             to every process of the container\n" },
  { "containers", "pause", "containers pause ID", "Freeze every process of container ID.\n" },
  { "containers", "resume", "containers resume ID", "Thaw container ID.\n" },
  { "containers", "update",
    "containers update ID [--memory BYTES] [--cpu-shares N] [--cpu-quota N]\n"
    "                   [--cpu-period N] [--pids-limit N] [--cpuset-cpus S]\n"
    "                   [--cpuset-mems S] [--blkio-weight N]",
    "Change the resources of container ID.\n"
    "\n"
    "Options:\n"
    "  --memory BYTES    memory limit (k, m, g suffixes: powers of 1024)\n"
    "  --cpu-shares N    CPU shares\n"
    "  --cpu-quota N     CFS quota (microseconds per period)\n"
    "  --cpu-period N    CFS period (microseconds)\n"
    "  --pids-limit N    most tasks\n"
    "  --cpuset-cpus S   CPUs it may use (0-3,5)\n"
    "  --cpuset-mems S   memory nodes it may use\n"
    "  --blkio-weight N  block I/O weight\n" },
  { "containers", "stats", "containers stats [ID...] [--watch [--interval S]]", STATS_BODY },
  { "containers", "watch", "containers watch [ID] [--count N] [--since-seq N]",
    "The events of every container (or ID), as `zctr events`.\n"
    "\n"
    "Options:\n"
    "  --count N         stop after N events\n"
    "  --since-seq N     replay from after event N first (default: from now)\n" },
  { "events", NULL, "events [--id ID] [--since-seq N] [--count N]",
    "The event stream, lossless, one line per event:\n"
    "  TIME  #SEQ  TYPE  ID  PROCESS  pid=HOSTPID status=N oom_killed uid=N\n"
    "(the fields an event has).  --json prints each event as one JSON object a line.\n"
    "\n"
    "Options:\n"
    "  --id ID           only container ID's events\n"
    "  --since-seq N     replay from after event N first (default: from now)\n"
    "  --count N         stop after N events\n" },
  { "checkpoints", "create",
    "checkpoints create ID NAME [--exit] [--tcp] [--unix-sockets] [--shell]\n"
    "                   [--empty-ns NS]... [--checkpoint-dir D]",
    "Checkpoint container ID as NAME (CRIU).\n"
    "\n"
    "Options:\n"
    "  --exit            stop the container once dumped\n"
    "  --tcp             dump established TCP connections\n"
    "  --unix-sockets    dump external unix sockets\n"
    "  --shell           the container is a shell job\n"
    "  --empty-ns NS     a namespace to leave empty (repeatable)\n"
    "  --checkpoint-dir D  where to write (default: the daemon's, for ID)\n" },
  { "checkpoints", "list", "checkpoints list [ID] [--checkpoint-dir D]",
    "A table of checkpoints (alias: ls): NAME, CREATED, AGE and the options they\n"
    "were taken with.  ID may be left out with --checkpoint-dir.\n"
    "\n"
    "Options:\n"
    "  --checkpoint-dir D  where they live (default: the daemon's, for ID)\n" },
  { "checkpoints", "delete",
    "checkpoints delete ID NAME [--checkpoint-dir D]\n"
    "checkpoints delete NAME --checkpoint-dir D",
    "Delete checkpoint NAME (alias: rm).\n"
    "\n"
    "Options:\n"
    "  --checkpoint-dir D  where it lives (default: the daemon's, for ID)\n" },
  { "spec", NULL, "spec --bundle DIR [--rootfs NAME] [--terminal] [--memory BYTES] [-- ARGS...]",
    "Write a runnable busybox bundle: DIR/NAME (the rootfs) and DIR/config.json.\n"
    "\n"
    "Options:\n"
    "  --bundle DIR      the bundle directory (made if missing)\n"
    "  --rootfs NAME     the rootfs directory in it (default rootfs)\n"
    "  --terminal        the process gets a terminal\n"
    "  --memory BYTES    a memory limit (k, m, g suffixes)\n" },
  { "help", NULL, "help [COMMAND [SUBCOMMAND]]", "This text, or a command's.\n" },
};

static const char s_global[]
    = "Global options (accepted before or after the command):\n"
      "  --address EP          command endpoint ($ZCD_ADDRESS, default " ZCD_DEFAULT_ADDRESS ")\n"
      "  --events-address EP   event endpoint ($ZCD_EVENTS_ADDRESS, "
      "default " ZCD_DEFAULT_EVENTS_ADDRESS ")\n"
      "  --json                print replies and events as JSON (machine-readable)\n"
      "  --timeout MS          request timeout in milliseconds (default 30000, -1 = none)\n"
      "  --node FILE           many nodes: the fan-out client over the nodes FILE lists\n"
      "                        (docs/fanout.md); see \"With --node\" below\n"
      "  --on NAME[,NAME]      with --node: the nodes a command goes to (\"all\" = every one)\n"
      "  --client-cert FILE    with --node: this client's CURVE certificate (czmq format)\n"
      "  -h, --help            this text; after a command, that command's\n";

static const char s_nodes[]
    = "With --node (the default target is every node; commands that change\n"
      "something need --on):\n"
      "  version | state [ID] | metrics              one answer per node\n"
      "  containers list [--ids]                     merged, with a NODE column\n"
      "  containers start ID BUNDLE [--label L]... [--runtime R] [--runtime-arg A]...\n"
      "                   [--no-pivot] [--stdin P] [--stdout P] [--stderr P]   (paths on the "
      "node)\n"
      "                   [--log P [--log-max-bytes N] [--log-max-files N]]\n"
      "  containers kill ID [--pid P] [--signal S] [--all]\n"
      "  containers pause ID | containers resume ID\n"
      "  events [--id ID] [--since-seq N] [--count N]   merged: NODE TIME #SEQ ... per line\n"
      "\n"
      "Tables are for people; --json prints the daemon's replies for programs.\n"
      "On failure zctr prints the daemon's error code and message on stderr and\n"
      "exits 1 (2 for bad usage); with --attach it exits with the process's status.\n";

static const char s_global_short[]
    = "Global options: --address EP, --events-address EP, --json, --timeout MS,\n"
      "  --node FILE, --on NAME[,NAME], --client-cert FILE, -h/--help (zctr --help).\n";

/* The names a command goes by besides its own (cmd NULL: a command). */
static const char *
s_canonical (const char *cmd, const char *name)
{
  static const char *const aliases[][3] = {
    { NULL, "c", "containers" },       { "containers", "create", "start" },
    { "containers", "ls", "list" },    { "checkpoints", "ls", "list" },
    { "checkpoints", "rm", "delete" },
  };
  for (size_t i = 0; name && i < sizeof aliases / sizeof aliases[0]; i++)
    if ((cmd == NULL) == (aliases[i][0] == NULL)
        && (cmd == NULL || strcmp (cmd, aliases[i][0]) == 0) && strcmp (name, aliases[i][1]) == 0)
      return aliases[i][2];
  return name;
}

bool
zctr_is_help (const char *arg)
{
  return arg && (strcmp (arg, "-h") == 0 || strcmp (arg, "--help") == 0);
}

/* A synopsis, line by line: a line of its own (another form of the
 * command) after `next`, a continuation (indented) after `cont`. */
static void
s_synopsis (FILE *out, const char *synopsis, const char *first, const char *next, const char *cont)
{
  for (const char *line = synopsis; *line;)
    {
      const char *end = strchr (line, '\n');
      int n = end ? (int)(end - line) : (int)strlen (line);
      const char *prefix = line == synopsis ? first : *line == ' ' ? cont : next;
      fprintf (out, "%s%.*s\n", prefix, n, line);
      line += n + (end ? 1 : 0);
    }
}

static void
s_overview (FILE *out)
{
  fputs ("usage: zctr [GLOBAL OPTIONS] COMMAND [ARGS]\n\n", out);
  fputs (s_global, out);
  fputs ("\nCommands (zctr COMMAND --help explains one):\n", out);
  for (size_t i = 0; i < sizeof s_topics / sizeof s_topics[0]; i++)
    s_synopsis (out, s_topics[i].synopsis, "  ", "  ", "");
  fputc ('\n', out);
  fputs (s_nodes, out);
}

void
zctr_help (FILE *out, const char *cmd, const char *sub)
{
  static const size_t n_topics = sizeof s_topics / sizeof s_topics[0];
  cmd = s_canonical (NULL, cmd);
  sub = cmd ? s_canonical (cmd, sub) : NULL;
  for (size_t i = 0; cmd && i < n_topics; i++)
    {
      const zctr_topic_t *t = &s_topics[i];
      if (strcmp (t->cmd, cmd) == 0 && (t->sub == NULL || (sub && strcmp (t->sub, sub) == 0)))
        {
          s_synopsis (out, t->synopsis, "usage: zctr ", "       zctr ", "     ");
          fprintf (out, "\n%s\n%s", t->body, s_global_short);
          return;
        }
    }
  /* a group (containers, checkpoints) without a known subcommand: its
   * subcommands' synopses */
  bool group = false;
  for (size_t i = 0; cmd && i < n_topics; i++)
    if (strcmp (s_topics[i].cmd, cmd) == 0)
      {
        if (!group)
          fprintf (out, "usage: zctr %s SUBCOMMAND [ARGS]\n\n", cmd);
        group = true;
        s_synopsis (out, s_topics[i].synopsis, "  zctr ", "  zctr ", "     ");
      }
  if (group)
    {
      fprintf (out, "\nzctr %s SUBCOMMAND --help explains one.\n%s", cmd, s_global_short);
      return;
    }
  s_overview (out);
}
