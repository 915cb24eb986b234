/* zctr spec: write a runnable busybox bundle (rootfs + config.json), so a
 * container can be started on any host with busybox-static and nothing to
 * download. */
#include "tools/zctr/zctr.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUSYBOX_SOURCE "/bin/busybox"

enum
{
  OPT_BUNDLE = ZCTR_OPT_FIRST_LOCAL,
  OPT_ROOTFS,
  OPT_TERMINAL,
  OPT_MEMORY,
};

typedef struct
{
  const char *bundle;
  const char *rootfs;
  bool terminal;
  uint64_t memory; /* 0 = no limit */
} spec_args_t;

static const char *const s_applets[]
    = { "sh",    "ls",   "cat",   "echo",  "top",   "sleep", "true",   "false", "env",
        "id",    "ps",   "kill",  "mkdir", "rm",    "touch", "printf", "head",  "tail",
        "grep",  "wc",   "yes",   "dd",    "stat",  "date",  "hostname", "mount", "test",
        "seq",   "tee",  "awk",   "sed",   "pwd",   "uname", "wait",   "nproc", "chmod",
        "ln",    "cp",   "mv",    "stty",  "tty",   "free",  "pidof",  "timeout", "xargs",
        "readlink", "whoami", "vi", NULL };

static const char *const s_capabilities[]
    = { "CAP_CHOWN",  "CAP_DAC_OVERRIDE",     "CAP_FSETID",     "CAP_FOWNER",  "CAP_MKNOD",
        "CAP_NET_RAW", "CAP_SETGID",          "CAP_SETUID",     "CAP_SETFCAP", "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",   "CAP_AUDIT_WRITE", NULL };

/* Write path through a temporary file and rename, so a reader never sees
 * half a file. */
static int
s_write_atomic (const char *path, const char *data, size_t len, mode_t mode)
{
  char *tmp = NULL;
  if (asprintf (&tmp, "%s.tmp.%d", path, (int) getpid ()) < 0)
    return -1;
  int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  int rc = fd < 0 ? -1 : 0;
  for (size_t done = 0; rc == 0 && done < len;)
    {
      ssize_t n = write (fd, data + done, len - done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        rc = -1;
      else
        done += (size_t) n;
    }
  if (rc == 0 && (fsync (fd) < 0 || fchmod (fd, mode) < 0))
    rc = -1;
  int saved = errno;
  if (fd >= 0)
    close (fd);
  if (rc == 0 && rename (tmp, path) < 0)
    {
      saved = errno;
      rc = -1;
    }
  if (rc < 0)
    unlink (tmp);
  free (tmp);
  errno = saved;
  return rc;
}

static void
s_json_str (FILE *out, const char *s)
{
  fputc ('"', out);
  for (; *s; s++)
    {
      unsigned char c = (unsigned char) *s;
      if (c == '"' || c == '\\')
        fprintf (out, "\\%c", c);
      else if (c < 0x20)
        fprintf (out, "\\u%04x", c);
      else
        fputc (c, out);
    }
  fputc ('"', out);
}

static void
s_json_strv (FILE *out, const char *const *v)
{
  fputc ('[', out);
  for (size_t i = 0; v[i]; i++)
    {
      if (i)
        fputs (", ", out);
      s_json_str (out, v[i]);
    }
  fputc (']', out);
}

static void
s_config_process (FILE *out, const spec_args_t *a, const char *const *args)
{
  fprintf (out, "  \"process\": {\n    \"terminal\": %s,\n", a->terminal ? "true" : "false");
  fputs ("    \"user\": {\"uid\": 0, \"gid\": 0},\n    \"args\": ", out);
  s_json_strv (out, args);
  fprintf (out, ",\n    \"env\": [\"PATH=/bin\"%s],\n", a->terminal ? ", \"TERM=xterm\"" : "");
  fputs ("    \"cwd\": \"/\",\n    \"capabilities\": {\n", out);
  static const char *const sets[] = { "bounding", "effective", "permitted" };
  for (int i = 0; i < 3; i++)
    {
      fprintf (out, "      \"%s\": ", sets[i]);
      s_json_strv (out, s_capabilities);
      fputs (i < 2 ? ",\n" : "\n", out);
    }
  fputs ("    },\n"
         "    \"rlimits\": [{\"type\": \"RLIMIT_NOFILE\", \"hard\": 1024, \"soft\": 1024}],\n"
         "    \"noNewPrivileges\": true\n  },\n",
         out);
}

static const char s_config_mounts[]
    = "  \"mounts\": [\n"
      "    {\"destination\": \"/proc\", \"type\": \"proc\", \"source\": \"proc\"},\n"
      "    {\"destination\": \"/dev\", \"type\": \"tmpfs\", \"source\": \"tmpfs\",\n"
      "     \"options\": [\"nosuid\", \"strictatime\", \"mode=755\", \"size=65536k\"]},\n"
      "    {\"destination\": \"/dev/pts\", \"type\": \"devpts\", \"source\": \"devpts\",\n"
      "     \"options\": [\"nosuid\", \"noexec\", \"newinstance\", \"ptmxmode=0666\", \"mode=0620\", "
      "\"gid=5\"]},\n"
      "    {\"destination\": \"/dev/shm\", \"type\": \"tmpfs\", \"source\": \"shm\",\n"
      "     \"options\": [\"nosuid\", \"noexec\", \"nodev\", \"mode=1777\", \"size=65536k\"]},\n"
      "    {\"destination\": \"/dev/mqueue\", \"type\": \"mqueue\", \"source\": \"mqueue\",\n"
      "     \"options\": [\"nosuid\", \"noexec\", \"nodev\"]},\n"
      "    {\"destination\": \"/sys\", \"type\": \"sysfs\", \"source\": \"sysfs\",\n"
      "     \"options\": [\"nosuid\", \"noexec\", \"nodev\", \"ro\"]},\n"
      "    {\"destination\": \"/sys/fs/cgroup\", \"type\": \"cgroup\", \"source\": \"cgroup\",\n"
      "     \"options\": [\"nosuid\", \"noexec\", \"nodev\", \"relatime\", \"ro\"]}\n"
      "  ],\n";

static const char s_config_linux_tail[]
    = "    \"namespaces\": [{\"type\": \"pid\"}, {\"type\": \"network\"}, {\"type\": \"ipc\"},\n"
      "                   {\"type\": \"uts\"}, {\"type\": \"mount\"}],\n"
      "    \"maskedPaths\": [\"/proc/acpi\", \"/proc/asound\", \"/proc/kcore\", \"/proc/keys\",\n"
      "                    \"/proc/latency_stats\", \"/proc/timer_list\", \"/proc/timer_stats\",\n"
      "                    \"/proc/sched_debug\", \"/sys/firmware\", \"/proc/scsi\"],\n"
      "    \"readonlyPaths\": [\"/proc/bus\", \"/proc/fs\", \"/proc/irq\", \"/proc/sys\",\n"
      "                      \"/proc/sysrq-trigger\"]\n"
      "  }\n";

/* config.json text (caller frees). */
static char *
s_config_json (const spec_args_t *a, const char *const *args, size_t *len)
{
  char *text = NULL;
  FILE *out = open_memstream (&text, len);
  if (out == NULL)
    return NULL;
  fputs ("{\n  \"ociVersion\": \"1.0.2\",\n", out);
  s_config_process (out, a, args);
  fputs ("  \"root\": {\"path\": ", out);
  s_json_str (out, a->rootfs);
  fputs (", \"readonly\": false},\n  \"hostname\": \"zcd\",\n", out);
  fputs (s_config_mounts, out);
  fputs ("  \"linux\": {\n    \"resources\": {\n"
         "      \"devices\": [{\"allow\": false, \"access\": \"rwm\"}]",
         out);
  if (a->memory)
    fprintf (out, ",\n      \"memory\": {\"limit\": %llu}", (unsigned long long) a->memory);
  fputs ("\n    },\n", out);
  fputs (s_config_linux_tail, out);
  fputs ("}\n", out);
  if (fclose (out) != 0)
    {
      free (text);
      return NULL;
    }
  return text;
}

/* dir/name into out; false when it does not fit. */
static bool
s_join (char *out, size_t size, const char *dir, const char *name)
{
  int n = snprintf (out, size, "%s/%s", dir, name);
  return n >= 0 && (size_t) n < size;
}

static int
s_mkdir (const char *path)
{
  if (mkdir (path, 0755) < 0 && errno != EEXIST)
    return zctr_error (-1, "spec: mkdir %s: %s", path, strerror (errno));
  return 0;
}

static int
s_copy_busybox (const char *bin_dir)
{
  FILE *in = fopen (BUSYBOX_SOURCE, "re");
  if (in == NULL)
    return zctr_error (-1, "spec: %s: %s (install busybox-static)", BUSYBOX_SOURCE, strerror (errno));
  char *data = NULL;
  size_t len = 0;
  FILE *mem = open_memstream (&data, &len);
  char buf[65536];
  size_t n;
  while (mem && (n = fread (buf, 1, sizeof buf, in)) > 0)
    fwrite (buf, 1, n, mem);
  bool read_ok = !ferror (in);
  fclose (in);
  if (mem == NULL || fclose (mem) != 0 || !read_ok)
    {
      free (data);
      return zctr_error (-1, "spec: read %s failed", BUSYBOX_SOURCE);
    }
  char path[4200];
  if (!s_join (path, sizeof path, bin_dir, "busybox"))
    {
      free (data);
      return zctr_error (-1, "spec: path too long");
    }
  int rc = s_write_atomic (path, data, len, 0755);
  free (data);
  if (rc < 0)
    return zctr_error (-1, "spec: write %s: %s", path, strerror (errno));
  for (size_t i = 0; s_applets[i]; i++)
    {
      if (!s_join (path, sizeof path, bin_dir, s_applets[i]))
        return zctr_error (-1, "spec: path too long");
      if (symlink ("busybox", path) < 0 && errno != EEXIST)
        return zctr_error (-1, "spec: symlink %s: %s", path, strerror (errno));
    }
  return 0;
}

static int
s_make_rootfs (const spec_args_t *a)
{
  char root[4096], path[4200];
  bool fits = a->rootfs[0] == '/' ? (size_t) snprintf (root, sizeof root, "%s", a->rootfs) < sizeof root
                                   : s_join (root, sizeof root, a->bundle, a->rootfs);
  if (!fits)
    return zctr_error (-1, "spec: path too long");
  if (s_mkdir (a->bundle) < 0 || s_mkdir (root) < 0)
    return -1;
  static const char *const dirs[] = { "bin", "proc", "dev", "sys", "tmp", "etc", "root", NULL };
  for (size_t i = 0; dirs[i]; i++)
    {
      if (!s_join (path, sizeof path, root, dirs[i]) || s_mkdir (path) < 0)
        return -1;
    }
  static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
  static const char group[] = "root:x:0:\nnogroup:x:65534:\n";
  if (!s_join (path, sizeof path, root, "etc/passwd")
      || s_write_atomic (path, passwd, strlen (passwd), 0644) < 0)
    return zctr_error (-1, "spec: write %s: %s", path, strerror (errno));
  if (!s_join (path, sizeof path, root, "etc/group")
      || s_write_atomic (path, group, strlen (group), 0644) < 0)
    return zctr_error (-1, "spec: write %s: %s", path, strerror (errno));
  if (!s_join (path, sizeof path, root, "bin"))
    return zctr_error (-1, "spec: path too long");
  return s_copy_busybox (path);
}

static int
s_spec_opt (void *ctx, int opt, const char *arg)
{
  spec_args_t *a = ctx;
  if (opt == OPT_BUNDLE)
    a->bundle = arg;
  else if (opt == OPT_ROOTFS)
    a->rootfs = arg;
  else if (opt == OPT_TERMINAL)
    a->terminal = true;
  else if (opt == OPT_MEMORY && !zctr_parse_bytes (arg, &a->memory))
    return zctr_error (ZCTR_EXIT_USAGE, "--memory: not a size: %s", arg);
  return 0;
}

int
zctr_cmd_spec (zctr_t *z, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "bundle", required_argument, NULL, OPT_BUNDLE },
    { "rootfs", required_argument, NULL, OPT_ROOTFS },
    { "terminal", no_argument, NULL, OPT_TERMINAL },
    { "memory", required_argument, NULL, OPT_MEMORY },
    { NULL, 0, NULL, 0 },
  };
  spec_args_t a = { .rootfs = "rootfs" };
  int rc = zctr_getopt (z, argc, argv, longopts, s_spec_opt, &a);
  if (rc)
    return rc;
  if (a.bundle == NULL)
    return zctr_error (ZCTR_EXIT_USAGE,
                       "usage: zctr spec --bundle DIR [--rootfs NAME] [--terminal] [--memory BYTES] "
                       "[-- ARGS...]");
  static const char *const default_args[] = { "sh", NULL };
  const char *const *args = optind < argc ? (const char *const *) argv + optind : default_args;
  if (s_make_rootfs (&a) < 0)
    return ZCTR_EXIT_FAIL;
  size_t len = 0;
  char *config = s_config_json (&a, args, &len);
  if (config == NULL)
    return zctr_error (ZCTR_EXIT_FAIL, "spec: out of memory");
  char path[4200];
  rc = s_join (path, sizeof path, a.bundle, "config.json")
           ? s_write_atomic (path, config, len, 0644)
           : (errno = ENAMETOOLONG, -1);
  free (config);
  if (rc < 0)
    return zctr_error (ZCTR_EXIT_FAIL, "spec: write %s: %s", path, strerror (errno));
  return 0;
}
