/* The contract between the daemon and zcd-shim (DESIGN.md, "The shim").
 *
 * The daemon starts `zcd-shim` with its working directory set to the
 * process's state directory <state-dir>/<container-id>/<process-id>/, which
 * already holds the `exit` and `control` FIFOs (created by the daemon, which
 * opens the read end of `exit` before the spawn) and, for an exec,
 * `process.json`.  Arguments:
 *
 *   zcd-shim --mode init|exec|restore --id CID --bundle DIR --runtime PATH
 *            [--runtime-arg ARG]... [--no-pivot] [--terminal]
 *            [--stdin PATH] [--stdout PATH] [--stderr PATH]
 *            [--log-path PATH [--log-max-bytes N] [--log-max-files N]]
 *            [--checkpoint DIR] [--sync-fd N]
 *
 * The shim reports the outcome of the start exactly once on the sync fd (a
 * pipe write end, closed right after) as one binary record: a
 * zcd_sync_record followed by text_len bytes of text (no NUL).  EOF without
 * a record means the shim died before the process started (shim_exited).
 * Errors travel typed (code, errno, text) so the daemon can say exactly why
 * the runtime failed: the text of a runtime failure is the runtime's own
 * stderr.
 *
 * Files the shim writes in its directory, each atomically: shim.pid (its
 * own pid), pid and starttime (container process; starttime is field 22 of
 * /proc/<pid>/stat), exitStatus (decimal 0-255, 128+N for signal N), and
 * shim.log (its errors and the runtime's error output).  With --log-path
 * (PROTOCOL.md `create`, key `log`; never with --stdout or --stderr) the
 * process's output goes to that file, rotated (shim/outlog.c), and output the
 * shim had to drop is counted in `log-dropped` (decimal, the running total,
 * "0" from the writer's start on), replaced at most a few times a second.
 *
 * Control records on the `control` FIFO are fixed-size zcd_control_record.
 */
#ifndef ZCD_SHIMPROTO_H
#define ZCD_SHIMPROTO_H

#include <stdint.h>

#define ZCD_SYNC_MAGIC 0x7a637331u /* "zcs1" */
#define ZCD_SYNC_MAX_TEXT 8192

enum zcd_sync_type
{
  ZCD_SYNC_STARTED = 1, /* pid = the container process's host pid */
  ZCD_SYNC_ERROR = 2,   /* code (zcd_code_t), sys_errno, text */
};

struct zcd_sync_record
{
  uint32_t magic;
  uint32_t type;
  int32_t pid;
  int32_t code;
  int32_t sys_errno;
  uint32_t text_len;
};

/* The `log` key's bounds and defaults, the daemon's and the shim's. */
#define ZCD_LOG_MIN_BYTES 4096ULL
#define ZCD_LOG_MAX_BYTES (1ULL << 40)
#define ZCD_LOG_DEFAULT_BYTES (10ULL << 20)
#define ZCD_LOG_MAX_FILES 100U
#define ZCD_LOG_DEFAULT_FILES 5U

#define ZCD_CONTROL_MAGIC 0x7a636331u /* "zcc1" */

enum zcd_control_type
{
  ZCD_CONTROL_CLOSE_STDIN = 1,
  ZCD_CONTROL_RESIZE = 2, /* width, height */
};

struct zcd_control_record
{
  uint32_t magic;
  uint32_t type;
  uint32_t width;
  uint32_t height;
};

#endif
