/* zcd error values.
 *
 * Contract (as in crun's design-docs/error_handling.md): a function that can
 * fail returns a negative number and, when `err` is not NULL, fills `*err`
 * with a freshly allocated error that the caller owns and must release with
 * zcd_error_free().  `*err` must be NULL on entry.  A caller that adds
 * context wraps it: zcd_error_wrap (err, "create %s", id) turns
 * "open config.json: No such file" into "create web1: open config.json: ...".
 * The protocol code (PROTOCOL.md section 2) travels with the error, so the
 * edge never has to guess which code a failure deep down deserves.
 */
#ifndef ZCD_ERR_H
#define ZCD_ERR_H

#include <stdarg.h>

typedef enum
{
  ZCD_OK = 0,
  ZCD_E_INVALID_REQUEST,
  ZCD_E_UNKNOWN_OP,
  ZCD_E_UNSUPPORTED_VERSION,
  ZCD_E_INVALID_ARGUMENT,
  ZCD_E_TOO_LARGE,
  ZCD_E_NOT_FOUND,
  ZCD_E_ALREADY_EXISTS,
  ZCD_E_INVALID_STATE,
  ZCD_E_RUNTIME_ERROR,
  ZCD_E_TIMEOUT,
  ZCD_E_SHIM_EXITED,
  ZCD_E_UNAVAILABLE,
  ZCD_E_BUSY,
  ZCD_E_INTERNAL,
  ZCD_CODE_COUNT
} zcd_code_t;

typedef struct zcd_error
{
  zcd_code_t code;
  int sys_errno; /* 0 when the failure was not a system call's */
  char *msg;
} zcd_error_t;

/* Wire name of a code ("invalid_argument"), NULL for an unknown value. */
const char *zcd_code_name (zcd_code_t code);
/* Code for a wire name; ZCD_CODE_COUNT when there is none. */
zcd_code_t zcd_code_from_name (const char *name);

/* Fill *err (if err != NULL) and return -1. */
int zcd_fail (zcd_error_t **err, zcd_code_t code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
/* Same with a system error: the message ends with ": strerror(errnum)" and the
 * code is ZCD_E_INTERNAL, or ZCD_E_UNAVAILABLE for exhausted resources (ENOSPC,
 * EDQUOT, EROFS, ENOMEM, EMFILE, ENFILE). */
int zcd_fail_errno (zcd_error_t **err, int errnum, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
int zcd_failv (zcd_error_t **err, zcd_code_t code, int errnum, const char *fmt, va_list ap);

/* Prefix context to an existing error: "<context>: <old message>". */
void zcd_error_wrap (zcd_error_t **err, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
void zcd_error_free (zcd_error_t **err);

#endif
