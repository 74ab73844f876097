/* A memory cgroup with no swap (test/stress/limit.sh makes one, 512 MiB):
 * memory the program freed and prezero keeps in its pool must be the first
 * thing the kernel takes back, never the reason the program is killed.
 * Under glibc freed blocks this large are unmapped, so a program may free
 * 320 MiB and fault 320 MiB elsewhere in a 512 MiB cgroup; with prezero the
 * freed chunks stay resident, and the kernel must be able to reclaim them
 * (they are MADV_FREE: reclaimed without swap, reading zero afterwards).
 * Three rounds: right after the free (dirty chunks), after the workers
 * zeroed them (ready chunks), and a calloc afterwards that must read zero
 * wherever the kernel took pages back. limit.sh fails the test on a kill.
 * "late": the limit comes after start (limit.sh moves the process into the
 * cgroup 0.3 s in; prezero saw no limit when it started): the rounds wait
 * 300 ms after the free, when a program's freed memory must be reclaimable
 * wherever it went out (fresh chunks on 4 KiB pages are MADV_FREE only
 * once free for 100 ms: killed before that was fixed).
 * Usage: test-oom LIMIT_MIB [late] */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "prezero.h"

#define MiB ((size_t)1 << 20)

/* free then fault fresh memory elsewhere, as much again */
static int round_trip(const char *what, size_t n, unsigned settle_us) {
  enum { BLOCK = 32 };
  char *blocks[64];
  size_t nb = n / (BLOCK * MiB);
  for (size_t i = 0; i < nb; i++) {
    blocks[i] = malloc(BLOCK * MiB);
    if (!blocks[i]) {
      fprintf(stderr, "oom: %s: malloc failed\n", what);
      return 1;
    }
    memset(blocks[i], 0x5a, BLOCK * MiB);
  }
  for (size_t i = 0; i < nb; i++) free(blocks[i]);
  usleep(settle_us);
  /* not through malloc: memory the pool cannot give us */
  char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    fprintf(stderr, "oom: %s: mmap failed\n", what);
    return 1;
  }
  madvise(m, n, MADV_NOHUGEPAGE);
  for (size_t i = 0; i < n; i += 4096) m[i] = 1;
  munmap(m, n);
  printf("oom: %s: freed %zu MiB, then faulted %zu MiB elsewhere: alive\n", what, n / MiB, n / MiB);
  return 0;
}

int main(int argc, char **argv) {
  size_t limit = (argc > 1 ? strtoul(argv[1], NULL, 10) : 512) * MiB;
  size_t n = (limit * 5 / 8) & ~(32 * MiB - 1); /* twice that does not fit */
  bool late = argc > 2 && !strcmp(argv[2], "late");
  char *live = calloc(1, 64 * MiB);
  memset(live, 1, 64 * MiB);
  if (late) sleep(1); /* moved into the limited cgroup meanwhile */
  if (round_trip("dirty", n, late ? 300000 : 0) || round_trip("ready", n, 1500000)) return 1;
  /* chunks the kernel took back read zero */
  unsigned char *c = calloc(1, n);
  if (!c) {
    fprintf(stderr, "oom: calloc(%zu MiB) failed\n", n / MiB);
    return 1;
  }
  for (size_t i = 0; i < n; i += 512)
    if (c[i]) {
      fprintf(stderr, "oom: calloc'd memory not zero at offset %zu: %#x\n", i, c[i]);
      return 1;
    }
  memset(c, 3, n);
  free(c);
  free(live);
  struct prezero_stats st;
  prezero_stats_get(&st);
  printf("oom: ok (pool: %llu MiB given back by the workers, %llu pressure events)\n",
         (unsigned long long)st.released_bytes / MiB, (unsigned long long)st.pressure_events);
  return 0;
}
