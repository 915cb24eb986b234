/* See logtail.h. */
#include "core/logtail.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAIL_WINDOW 8192
#define MAX_PICKED 32

/* The last TAIL_WINDOW bytes of a regular file, trailing blanks cut. */
static ssize_t
s_read_end (const char *path, char *buf, size_t cap)
{
  /* O_NONBLOCK: a FIFO planted at the path must not hang the caller. */
  int fd = open (path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return -1;
  struct stat st;
  ssize_t n = -1;
  if (fstat (fd, &st) == 0 && S_ISREG (st.st_mode))
    n = pread (fd, buf, cap, st.st_size > (off_t) cap ? st.st_size - (off_t) cap : 0);
  close (fd);
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
    n--;
  return n;
}

static size_t
s_append (char *out, size_t len, size_t cap, const char *line, size_t line_len)
{
  if (len && len + 1 < cap)
    out[len++] = '\n';
  size_t room = cap - 1 - len;
  if (line_len > room)
    line_len = room;
  memcpy (out + len, line, line_len);
  return len + line_len;
}

size_t
zcd_log_tail (const char *path, size_t max_lines, char *out, size_t cap)
{
  out[0] = '\0';
  char buf[TAIL_WINDOW];
  ssize_t n = s_read_end (path, buf, sizeof buf);
  if (n <= 0 || max_lines == 0)
    return 0;
  /* Line starts; the first may be cut by the window.  A window of empty
   * lines has a start per byte. */
  uint16_t starts[TAIL_WINDOW];
  size_t n_lines = 0;
  starts[n_lines++] = 0;
  for (ssize_t i = 0; i < n - 1 && n_lines < TAIL_WINDOW; i++)
    if (buf[i] == '\n')
      starts[n_lines++] = (uint16_t) (i + 1);
  /* CRIU says why on its "Error (file:line):" lines, often well before its
   * last line: those first (the latest of them), then the last line. */
  size_t picked[MAX_PICKED], n_picked = 0;
  for (size_t l = 0; l < n_lines; l++)
    {
      size_t end = l + 1 < n_lines ? (size_t) starts[l + 1] - 1 : (size_t) n;
      bool is_error = memmem (buf + starts[l], end - starts[l], "Error", 5) != NULL;
      if (is_error || l + 1 == n_lines)
        {
          if (n_picked == MAX_PICKED)
            {
              memmove (picked, picked + 1, sizeof picked - sizeof picked[0]);
              n_picked--;
            }
          picked[n_picked++] = l;
        }
    }
  size_t first = n_picked > max_lines ? n_picked - max_lines : 0;
  if (n_picked == 1)
    /* No error line: the plain tail. */
    for (first = 0, n_picked = 0; n_picked < max_lines && n_picked < n_lines; n_picked++)
      picked[n_picked] = n_lines - (max_lines < n_lines ? max_lines : n_lines) + n_picked;
  size_t len = 0;
  for (size_t k = first; k < n_picked; k++)
    {
      size_t l = picked[k];
      size_t end = l + 1 < n_lines ? (size_t) starts[l + 1] - 1 : (size_t) n;
      len = s_append (out, len, cap, buf + starts[l], end - starts[l]);
    }
  out[len] = '\0';
  return len;
}
