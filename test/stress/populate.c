/* Parallel population: prezero_populate() and PREZERO_POPULATE=eager|lazy
 * leave every page resident and every byte as it was (zero for fresh
 * memory, the program's data otherwise, also data written while lazy
 * helpers run); bad ranges fail cleanly; lazy helpers never keep a process
 * alive at exit.
 * Usage: test-populate api|eager|lazy (run with PREZERO_POPULATE to match). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "prezero.h"

#define MiB ((size_t)1 << 20)
static int failures;

static void fail(const char *what, size_t v) {
  fprintf(stderr, "populate: %s (%zu)\n", what, v);
  failures++;
}

static size_t resident_pages(void *p, size_t len) {
  static unsigned char vec[(2048 * MiB) / 4096];
  if (mincore(p, len, vec) != 0) return 0;
  size_t n = 0;
  for (size_t i = 0; i < len / 4096; i++) n += vec[i] & 1;
  return n;
}

static size_t first_nonzero(const unsigned char *p, size_t len) {
  for (size_t i = 0; i < len; i += 4096)
    for (size_t k = 0; k < 4096; k += 512)
      if (p[i + k]) return i + k;
  return SIZE_MAX;
}

static void api(void) {
  size_t len = 512 * MiB;
  unsigned char *p = calloc(1, len);
  if (prezero_populate(p, len) != 0) fail("prezero_populate failed", (size_t)errno);
  if (resident_pages(p, len) != len / 4096) fail("pages left out", len / 4096 - resident_pages(p, len));
  if (first_nonzero(p, len) != SIZE_MAX) fail("not zero at", first_nonzero(p, len));
  /* memory holding data keeps it */
  unsigned char *q = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  for (size_t i = 0; i < len; i += 3 * 4096 + 64) q[i] = (unsigned char)(i >> 12 | 1);
  if (prezero_populate(q + 100, len - 200) != 0) fail("prezero_populate of a mapping failed", (size_t)errno);
  if (resident_pages(q, len) != len / 4096) fail("mapping pages left out", len / 4096 - resident_pages(q, len));
  for (size_t i = 0; i < len; i += 3 * 4096 + 64)
    if (q[i] != (unsigned char)(i >> 12 | 1)) {
      fail("populate changed data at", i);
      break;
    }
  munmap(q, len);
  free(p);
  /* bad input */
  errno = 0;
  if (prezero_populate(NULL, 4096) != -1 || errno != EINVAL) fail("NULL not refused with EINVAL", (size_t)errno);
  char *hole = mmap(NULL, 64 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  munmap(hole, 64 * MiB);
  errno = 0;
  if (prezero_populate(hole, 64 * MiB) != -1 || errno != ENOMEM) fail("unmapped range not refused with ENOMEM", (size_t)errno);
}

static void eager(void) {
  size_t len = 512 * MiB;
  unsigned char *p = calloc(1, len);
  if (resident_pages(p, len) != len / 4096) fail("eager: pages left out", len / 4096 - resident_pages(p, len));
  if (first_nonzero(p, len) != SIZE_MAX) fail("eager: not zero at", first_nonzero(p, len));
  free(p);
}

static void lazy(void) {
  size_t len = 1024 * MiB;
  unsigned char *p = calloc(1, len);
  /* the program writes while the helpers populate: its bytes must stay */
  for (size_t i = 0; i < len; i += 1 * MiB + 4096) p[i] = 0xa5;
  size_t res = 0;
  for (int i = 0; i < 200 && (res = resident_pages(p, len)) != len / 4096; i++) usleep(50000);
  if (res != len / 4096) fail("lazy: pages still out after 10 s", len / 4096 - res);
  for (size_t i = 0; i < len; i += 1 * MiB + 4096)
    if (p[i] != 0xa5) {
      fail("lazy: the program's write was lost at", i);
      break;
    }
  for (size_t i = 0; i < len; i += 1 * MiB + 4096) p[i] = 0;
  if (first_nonzero(p, len) != SIZE_MAX) fail("lazy: not zero at", first_nonzero(p, len));
  free(p);
  /* helpers never keep a process alive: a child leaves at once */
  pid_t pid = fork();
  if (pid == 0) {
    void *volatile big = calloc(1, 1536 * MiB);
    (void)big;
    exit(0); /* with the helpers still at work */
  }
  int st = 0;
  pid_t got = 0;
  for (int i = 0; i < 100 && (got = waitpid(pid, &st, WNOHANG)) == 0; i++) usleep(50000);
  if (got != pid) {
    fail("a process with lazy helpers at work did not exit within 5 s", 0);
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
  } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fail("the child died", (size_t)st);
  }
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "api";
  if (!strcmp(mode, "api")) api();
  else if (!strcmp(mode, "eager")) eager();
  else if (!strcmp(mode, "lazy")) lazy();
  else return 2;
  printf("populate %s: %d failures\n", mode, failures);
  return failures != 0;
}
