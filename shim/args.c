/* Command line of zcd-shim (core/shimproto.h). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/shimproto.h"
#include "shim/shim.h"

enum
{
  OPT_MODE = 1,
  OPT_ID,
  OPT_BUNDLE,
  OPT_RUNTIME,
  OPT_RUNTIME_ARG,
  OPT_NO_PIVOT,
  OPT_TERMINAL,
  OPT_STDIN,
  OPT_STDOUT,
  OPT_STDERR,
  OPT_CHECKPOINT,
  OPT_RESTORE_ARG,
  OPT_SYNC_FD,
  OPT_LOG_PATH,
  OPT_LOG_MAX_BYTES,
  OPT_LOG_MAX_FILES,
};

static const struct option s_options[] = {
  { "mode", required_argument, NULL, OPT_MODE },
  { "id", required_argument, NULL, OPT_ID },
  { "bundle", required_argument, NULL, OPT_BUNDLE },
  { "runtime", required_argument, NULL, OPT_RUNTIME },
  { "runtime-arg", required_argument, NULL, OPT_RUNTIME_ARG },
  { "no-pivot", no_argument, NULL, OPT_NO_PIVOT },
  { "terminal", no_argument, NULL, OPT_TERMINAL },
  { "stdin", required_argument, NULL, OPT_STDIN },
  { "stdout", required_argument, NULL, OPT_STDOUT },
  { "stderr", required_argument, NULL, OPT_STDERR },
  { "checkpoint", required_argument, NULL, OPT_CHECKPOINT },
  { "restore-arg", required_argument, NULL, OPT_RESTORE_ARG },
  { "sync-fd", required_argument, NULL, OPT_SYNC_FD },
  { "log-path", required_argument, NULL, OPT_LOG_PATH },
  { "log-max-bytes", required_argument, NULL, OPT_LOG_MAX_BYTES },
  { "log-max-files", required_argument, NULL, OPT_LOG_MAX_FILES },
  { "help", no_argument, NULL, 'h' },
  { NULL, 0, NULL, 0 },
};

static int
s_parse_mode (shim_args_t *self, const char *value, zcd_error_t **err)
{
  if (strcmp (value, "init") == 0)
    self->mode = SHIM_MODE_INIT;
  else if (strcmp (value, "exec") == 0)
    self->mode = SHIM_MODE_EXEC;
  else if (strcmp (value, "restore") == 0)
    self->mode = SHIM_MODE_RESTORE;
  else
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "unknown --mode `%s`", value);
  return 0;
}

static int
s_parse_fd (const char *value, int *out, zcd_error_t **err)
{
  char *end = NULL;
  errno = 0;
  long fd = strtol (value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || fd < 0 || fd > INT_MAX)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "bad --sync-fd `%s`", value);
  *out = (int) fd;
  return 0;
}

/* A number of the `log` key, in [min, max] (core/shimproto.h). */
static int
s_parse_bound (const char *name, const char *value, uint64_t min, uint64_t max, uint64_t *out,
               zcd_error_t **err)
{
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull (value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || value[0] == '-' || v < min || v > max)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "bad --%s `%s` (%llu to %llu)", name, value,
                     (unsigned long long) min, (unsigned long long) max);
  *out = v;
  return 0;
}

static int
s_parse_log_files (shim_args_t *self, const char *value, zcd_error_t **err)
{
  uint64_t files = 0;
  if (s_parse_bound ("log-max-files", value, 1, ZCD_LOG_MAX_FILES, &files, err) < 0)
    return -1;
  self->log_max_files = (unsigned) files;
  return 0;
}

/* An empty path means "none", like an absent one. */
static const char *
s_path_or_null (const char *value)
{
  return value[0] == '\0' ? NULL : value;
}

static int
s_parse_one (shim_args_t *self, int opt, const char *value, zcd_error_t **err)
{
  switch (opt)
    {
    case OPT_MODE: return s_parse_mode (self, value, err);
    case OPT_ID: self->id = value; return 0;
    case OPT_BUNDLE: self->bundle = value; return 0;
    case OPT_RUNTIME: self->runtime = value; return 0;
    case OPT_RUNTIME_ARG:
      if (self->runtime_args_len == SHIM_MAX_RUNTIME_ARGS)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "more than %d --runtime-arg",
                         SHIM_MAX_RUNTIME_ARGS);
      self->runtime_args[self->runtime_args_len++] = value;
      return 0;
    case OPT_RESTORE_ARG:
      if (self->restore_args_len == SHIM_MAX_RESTORE_ARGS)
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "more than %d --restore-arg",
                         SHIM_MAX_RESTORE_ARGS);
      self->restore_args[self->restore_args_len++] = value;
      return 0;
    case OPT_NO_PIVOT: self->no_pivot = true; return 0;
    case OPT_TERMINAL: self->terminal = true; return 0;
    case OPT_STDIN: self->stdin_path = s_path_or_null (value); return 0;
    case OPT_STDOUT: self->stdout_path = s_path_or_null (value); return 0;
    case OPT_STDERR: self->stderr_path = s_path_or_null (value); return 0;
    case OPT_CHECKPOINT: self->checkpoint = value; return 0;
    case OPT_SYNC_FD: return s_parse_fd (value, &self->sync_fd, err);
    case OPT_LOG_PATH: self->log_path = s_path_or_null (value); return 0;
    case OPT_LOG_MAX_BYTES:
      return s_parse_bound ("log-max-bytes", value, ZCD_LOG_MIN_BYTES, ZCD_LOG_MAX_BYTES,
                            &self->log_max_bytes, err);
    case OPT_LOG_MAX_FILES: return s_parse_log_files (self, value, err);
    default: return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "unknown option");
    }
}

static int
s_check (const shim_args_t *self, bool mode_seen, zcd_error_t **err)
{
  if (!mode_seen)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--mode is required");
  if (self->id == NULL || !zcd_valid_id (self->id, strlen (self->id)))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--id missing or not a valid id");
  if (self->runtime == NULL || self->runtime[0] == '\0')
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--runtime is required");
  if (self->mode != SHIM_MODE_EXEC && (self->bundle == NULL || self->bundle[0] == '\0'))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--bundle is required");
  if (self->mode == SHIM_MODE_RESTORE && (self->checkpoint == NULL || self->checkpoint[0] == '\0'))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--checkpoint is required for restore");
  /* One destination for the output: the log, or the stdio paths. */
  if (self->log_path && (self->stdout_path || self->stderr_path))
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--log-path excludes --stdout and --stderr");
  if (self->log_path && self->log_path[0] != '/')
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--log-path must be absolute");
  return 0;
}

/* For people reading about the shim (zcd-shim(8) says more); zcd itself
 * never asks.  Printed before fds 0-2 become /dev/null (main.c). */
static const char s_usage[]
    = "usage: zcd-shim --mode init|exec|restore --id CID [--bundle DIR] --runtime PATH [options]\n"
      "Started by zcd, one per container process, in the process's state directory.\n"
      "  --mode MODE          init, exec or restore\n"
      "  --id CID             the container id\n"
      "  --bundle DIR         the OCI bundle (init and restore)\n"
      "  --runtime PATH       the OCI runtime (a path, or a name in PATH)\n"
      "  --runtime-arg ARG    an extra global runtime argument (repeatable)\n"
      "  --no-pivot           pass --no-pivot to the runtime\n"
      "  --terminal           the process gets a terminal (console socket)\n"
      "  --stdin PATH         its stdin (absent: end of input)\n"
      "  --stdout PATH        its stdout (absent: /dev/null)\n"
      "  --stderr PATH        its stderr (absent: /dev/null)\n"
      "  --log-path PATH      its output (stdout, stderr) into this file, rotated\n"
      "  --log-max-bytes N    rotate before the file passes N bytes (default 10 MiB)\n"
      "  --log-max-files N    keep N files in all, PATH and PATH.1 ... (default 5)\n"
      "  --checkpoint DIR     the checkpoint to restore (restore)\n"
      "  --restore-arg ARG    an argument for the runtime's restore (repeatable)\n"
      "  --sync-fd N          the pipe the start is reported on\n"
      "  --help               this text\n";

int
shim_args_parse (shim_args_t *self, int argc, char **argv, zcd_error_t **err)
{
  memset (self, 0, sizeof *self);
  self->sync_fd = -1;
  self->log_max_bytes = ZCD_LOG_DEFAULT_BYTES;
  self->log_max_files = ZCD_LOG_DEFAULT_FILES;
  bool mode_seen = false;
  opterr = 0;
  optind = 1;
  for (;;)
    {
      int opt = getopt_long (argc, argv, "", s_options, NULL);
      if (opt == -1)
        break;
      if (opt == 'h')
        {
          fputs (s_usage, stdout);
          exit (0);
        }
      if (opt == '?' || opt == ':')
        return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "bad option `%s`",
                         argv[optind - 1] ? argv[optind - 1] : "?");
      if (opt == OPT_MODE)
        mode_seen = true;
      if (s_parse_one (self, opt, optarg, err) < 0)
        return -1;
    }
  if (optind < argc)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "unexpected argument `%s`", argv[optind]);
  return s_check (self, mode_seen, err);
}
