#include "core/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_code_names[ZCD_CODE_COUNT] = {
  [ZCD_OK] = "ok",
  [ZCD_E_INVALID_REQUEST] = "invalid_request",
  [ZCD_E_UNKNOWN_OP] = "unknown_op",
  [ZCD_E_UNSUPPORTED_VERSION] = "unsupported_version",
  [ZCD_E_INVALID_ARGUMENT] = "invalid_argument",
  [ZCD_E_TOO_LARGE] = "too_large",
  [ZCD_E_NOT_FOUND] = "not_found",
  [ZCD_E_ALREADY_EXISTS] = "already_exists",
  [ZCD_E_INVALID_STATE] = "invalid_state",
  [ZCD_E_RUNTIME_ERROR] = "runtime_error",
  [ZCD_E_TIMEOUT] = "timeout",
  [ZCD_E_SHIM_EXITED] = "shim_exited",
  [ZCD_E_UNAVAILABLE] = "unavailable",
  [ZCD_E_BUSY] = "busy",
  [ZCD_E_INTERNAL] = "internal",
};

const char *
zcd_code_name (zcd_code_t code)
{
  if ((int) code < 0 || code >= ZCD_CODE_COUNT)
    return NULL;
  return s_code_names[code];
}

zcd_code_t
zcd_code_from_name (const char *name)
{
  for (int i = 1; i < ZCD_CODE_COUNT; i++)
    if (strcmp (s_code_names[i], name) == 0)
      return (zcd_code_t) i;
  return ZCD_CODE_COUNT;
}

int
zcd_failv (zcd_error_t **err, zcd_code_t code, int errnum, const char *fmt, va_list ap)
{
  if (err == NULL)
    return -1;
  /* Never overwrite (and leak) an error the caller did not consume. */
  if (*err != NULL)
    return -1;
  zcd_error_t *e = calloc (1, sizeof *e);
  if (e == NULL)
    abort ();
  char *text = NULL;
  if (vasprintf (&text, fmt, ap) < 0)
    abort ();
  if (errnum != 0)
    {
      char *with = NULL;
      if (asprintf (&with, "%s: %s", text, strerror (errnum)) < 0)
        abort ();
      free (text);
      text = with;
    }
  e->code = code;
  e->sys_errno = errnum;
  e->msg = text;
  *err = e;
  return -1;
}

int
zcd_fail (zcd_error_t **err, zcd_code_t code, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  zcd_failv (err, code, 0, fmt, ap);
  va_end (ap);
  return -1;
}

int
zcd_fail_errno (zcd_error_t **err, int errnum, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  /* Exhausted resources are no bug of ours: the caller may retry later
   * (PROTOCOL.md: a full disk is `unavailable`). */
  zcd_code_t code = errnum == ENOSPC || errnum == EDQUOT || errnum == EROFS || errnum == ENOMEM
                            || errnum == EMFILE || errnum == ENFILE
                        ? ZCD_E_UNAVAILABLE
                        : ZCD_E_INTERNAL;
  zcd_failv (err, code, errnum, fmt, ap);
  va_end (ap);
  return -1;
}

void
zcd_error_wrap (zcd_error_t **err, const char *fmt, ...)
{
  if (err == NULL || *err == NULL)
    return;
  char *context = NULL;
  va_list ap;
  va_start (ap, fmt);
  if (vasprintf (&context, fmt, ap) < 0)
    abort ();
  va_end (ap);
  char *joined = NULL;
  if (asprintf (&joined, "%s: %s", context, (*err)->msg) < 0)
    abort ();
  free (context);
  free ((*err)->msg);
  (*err)->msg = joined;
}

void
zcd_error_free (zcd_error_t **err)
{
  if (err == NULL || *err == NULL)
    return;
  free ((*err)->msg);
  free (*err);
  *err = NULL;
}
