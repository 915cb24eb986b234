/* Scope-bound release of local resources (crun's habit): a local declared
 * `cleanup_free char *p = NULL;` is freed when it leaves scope; ownership is
 * handed out with `*out = p; p = NULL;`. */
#ifndef ZCD_CLEANUP_H
#define ZCD_CLEANUP_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/err.h"

static inline void
zcd_cleanup_freep (void *p)
{
  void **pp = (void **) p;
  free (*pp);
}
static inline void
zcd_cleanup_closep (int *fd)
{
  if (*fd >= 0)
    {
      int saved = errno;
      close (*fd);
      errno = saved;
    }
}
static inline void
zcd_cleanup_fclosep (FILE **f)
{
  if (*f)
    fclose (*f);
}
static inline void
zcd_cleanup_closedirp (DIR **d)
{
  if (*d)
    closedir (*d);
}
static inline void
zcd_cleanup_errorp (zcd_error_t **e)
{
  zcd_error_free (e);
}

#define cleanup_free __attribute__ ((cleanup (zcd_cleanup_freep)))
#define cleanup_close __attribute__ ((cleanup (zcd_cleanup_closep)))
#define cleanup_fclose __attribute__ ((cleanup (zcd_cleanup_fclosep)))
#define cleanup_dir __attribute__ ((cleanup (zcd_cleanup_closedirp)))
#define cleanup_error __attribute__ ((cleanup (zcd_cleanup_errorp)))

/* Hand a local's ownership out of its cleanup scope. */
#define steal_pointer(pp) ({ __typeof__ (*(pp)) _v = *(pp); *(pp) = NULL; _v; })
#define steal_fd(fdp) ({ int _fd = *(fdp); *(fdp) = -1; _fd; })

#endif
