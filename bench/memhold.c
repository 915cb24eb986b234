/* Touches and holds anonymous memory, then sleeps: the "big" container of
 * the checkpoint section (bench/bench_checkpoint.py).  busybox has no applet
 * that holds memory, and CRIU dumps what a process has touched, so the page
 * count is what the figures depend on.  Linked statically: it runs in the
 * bench's busybox rootfs, which has no libc.
 *
 * usage: memhold MIB */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int
main (int argc, char **argv)
{
  if (argc != 2) {
    fprintf (stderr, "usage: memhold MIB\n");
    return 2;
  }
  size_t len = (size_t) strtoull (argv[1], NULL, 10) << 20;
  /* mmap, not malloc: no allocator slack, and MAP_POPULATE is not enough
   * (a zero page stays shared until written). */
  unsigned char *p = mmap (NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror ("memhold: mmap");
    return 1;
  }
  /* Non-zero bytes: every page is private and present, none can be
   * mistaken for a zero page by the kernel or by CRIU. */
  for (size_t i = 0; i < len; i += 4096)
    memset (p + i, (int) (i >> 12) | 1, 4096);
  for (;;)
    pause ();
}
