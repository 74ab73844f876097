/* Kernel limits a program may run under, in the VM rig with the sysctl
 * set on the kernel command line (test/vm/meson.build):
 *
 *   overcommit   vm.overcommit_memory=2 (strict commit accounting): what
 *                prezero reserves is not charged, and memory the program
 *                freed does not keep charge another allocation needs:
 *                after freeing 60% of what may still be committed, a raw
 *                read/write mmap of as much succeeds, as under glibc
 *                (which unmapped it); the pool then serves again.
 *   mapcount     a small vm.max_map_count: the program fills the map count
 *                with mappings of its own; every allocation then succeeds
 *                or fails cleanly (NULL, ENOMEM), nothing crashes or
 *                hangs, data stays intact, and once the program unmaps a
 *                few of its mappings large allocations work again.
 *
 * Linked with prezero. Usage: test-vm-limits overcommit|mapcount */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "prezero.h"

#define MiB ((size_t)1 << 20)
static int failures;
#define CHECK(c, ...)                                                                              \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "limits: FAIL: " __VA_ARGS__);                                               \
      fprintf(stderr, "\n");                                                                       \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static size_t meminfo_kb(const char *field) {
  FILE *f = fopen("/proc/meminfo", "r");
  char line[256];
  size_t v = 0, n = strlen(field);
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, field, n) && line[n] == ':') v = strtoul(line + n + 1, NULL, 10);
  if (f) fclose(f);
  return v;
}

static long read_long(const char *path) {
  FILE *f = fopen(path, "r");
  long v = -1;
  if (f && fscanf(f, "%ld", &v) != 1) v = -1;
  if (f) fclose(f);
  return v;
}

/* ------------------------------------------------------------ overcommit */

static int overcommit(void) {
  if (read_long("/proc/sys/vm/overcommit_memory") != 2) {
    printf("limits: SKIP: vm.overcommit_memory is not 2\n");
    return 77;
  }
  size_t c0 = meminfo_kb("Committed_AS");
  void *small = malloc(100);
  size_t c1 = meminfo_kb("Committed_AS");
  /* the other processes of the VM change it a little too */
  CHECK(c1 < c0 + 16 * 1024, "malloc(100) charged %zu KiB of commit", c1 - c0);
  size_t avail = (meminfo_kb("CommitLimit") - meminfo_kb("Committed_AS")) * 1024;
  size_t n = avail * 6 / 10 / (32 * MiB), got = 0;
  printf("limits: CommitLimit %zu MiB, %zu MiB may still be committed: %zu blocks of 32 MiB\n",
         meminfo_kb("CommitLimit") / 1024, avail / MiB, n);
  char **blocks = calloc(n, sizeof *blocks);
  for (int round = 0; round < 3; round++) {
    got = 0;
    for (size_t i = 0; i < n; i++) {
      blocks[i] = malloc(32 * MiB);
      if (!blocks[i]) break;
      memset(blocks[i], round + 1, 32 * MiB);
      got++;
    }
    CHECK(got == n, "round %d: only %zu of %zu blocks of 32 MiB could be allocated", round, got, n);
    for (size_t i = 0; i < got; i++) free(blocks[i]);
    /* what was freed must not keep charge: a raw mapping of as much */
    size_t len = got * 32 * MiB;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED, "round %d: after freeing %zu MiB, a mmap of as much failed: %s", round, len / MiB,
          strerror(errno));
    if (m != MAP_FAILED) {
      for (size_t i = 0; i < len; i += 4096) m[i] = 1;
      munmap(m, len);
    }
  }
  /* small objects too */
  for (int i = 0; i < 100000; i++) {
    void *p = malloc(16 + (size_t)(i % 2000));
    CHECK(p != NULL, "small malloc failed");
    if (!p) break;
    free(p);
  }
  free(blocks);
  free(small);
  return failures ? 1 : 0;
}

/* ------------------------------------------------------------ mapcount */

/* Allocations of every kind, each either working or failing with ENOMEM;
 * what succeeded keeps its contents. Returns allocations that failed. */
static size_t churn(int rounds) {
  static const size_t sizes[] = {24, 700, 8192, 100000, 300000, 1500000, 3 * MiB, 9 * MiB, 40 * MiB};
  enum { N = sizeof sizes / sizeof sizes[0] };
  size_t failed = 0;
  for (int r = 0; r < rounds; r++) {
    unsigned char *p[N];
    for (int i = 0; i < N; i++) {
      errno = 0;
      p[i] = (i & 1) ? calloc(1, sizes[i]) : malloc(sizes[i]);
      if (!p[i]) {
        CHECK(errno == ENOMEM, "allocation of %zu failed with errno %d, not ENOMEM", sizes[i], errno);
        failed++;
        continue;
      }
      if (i & 1)
        for (size_t k = 0; k < sizes[i]; k += 4096) CHECK(p[i][k] == 0, "calloc(%zu) not zero", sizes[i]);
      memset(p[i], i + 1, sizes[i]);
    }
    for (int i = 0; i < N; i++) {
      if (!p[i]) continue;
      unsigned char *q = realloc(p[i], sizes[i] * 2);
      if (q) p[i] = q;
      CHECK(p[i][0] == i + 1 && p[i][sizes[i] - 1] == i + 1, "block of %zu lost its contents", sizes[i]);
      free(p[i]);
    }
  }
  return failed;
}

static int mapcount(void) {
  long max = read_long("/proc/sys/vm/max_map_count");
  if (max <= 0 || max > 4096) {
    printf("limits: SKIP: vm.max_map_count is %ld (the test wants a small one)\n", max);
    return 77;
  }
  churn(2); /* the pool and the small heap exist */
  /* fill the map count: pages that do not merge (alternating protection) */
  size_t cap = (size_t)max + 64, n = 0;
  char **pages = malloc(cap * sizeof *pages);
  char *area = mmap(NULL, cap * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  CHECK(area != MAP_FAILED, "reserving an area failed");
  if (area == MAP_FAILED) return 1;
  munmap(area, cap * 4096);
  for (; n < cap; n++) {
    int prot = n & 1 ? PROT_READ : PROT_READ | PROT_WRITE;
    char *p = mmap(area + n * 4096, 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED) break;
    pages[n] = p;
  }
  printf("limits: vm.max_map_count %ld: the program holds %zu mappings\n", max, n);
  size_t failed = churn(4);
  printf("limits: with the map count full, %zu allocations failed (ENOMEM), none crashed\n", failed);
  /* some room again: large allocations work */
  for (size_t i = 0; i < 64 && n; i++) munmap(pages[--n], 4096);
  failed = churn(4);
  CHECK(failed == 0, "with 64 mappings free again, %zu allocations still failed", failed);
  void *big = malloc(64 * MiB);
  CHECK(big != NULL, "malloc(64 MiB) failed with room in the map count");
  free(big);
  while (n) munmap(pages[--n], 4096);
  free(pages);
  return failures ? 1 : 0;
}

int main(int argc, char **argv) {
  alarm(240);
  if (argc == 2 && !strcmp(argv[1], "overcommit")) return overcommit();
  if (argc == 2 && !strcmp(argv[1], "mapcount")) return mapcount();
  fprintf(stderr, "usage: test-vm-limits overcommit|mapcount\n");
  return 2;
}
