/* The end of a log file, for error messages that must point at the cause
 * (CRIU's dump.log and restore.log: its last lines say why it failed). */
#ifndef ZCD_LOGTAIL_H
#define ZCD_LOGTAIL_H

#include <stddef.h>

/* The last max_lines lines of the file at path (at most its last 8 KiB),
 * joined by "\n", NUL-terminated in out (cap bytes, cap > 0).  Returns
 * the length written; 0 when the file cannot be read or is empty. */
size_t zcd_log_tail (const char *path, size_t max_lines, char *out, size_t cap);

#endif
