/* cold-pages: the page size of fresh memory (PREZERO_COLD_PAGES).
 *
 * Hazard: a large allocation the pool has nothing resident for faults in
 * when the program first touches it. With huge pages, on a VM whose freed
 * memory went back to the host, that first touch cost 5.6-7.2 ms per
 * 2 MiB against 0.7-0.85 ms for the 4 KiB pages glibc's mmap'd memory
 * gets (bench-largepages: 2.47 s against glibc's 0.41 s for 1 GiB), so a
 * program whose big allocations come at start-up was slower than under
 * glibc.
 *
 * The rule: fresh chunks get 4 KiB pages unless the pool workers measured
 * huge pages faulting faster a moment ago (auto, the default), or always
 * 4 KiB pages (small), or always huge pages (huge, the old behaviour).
 *
 * The test, run once per mode (argv[1]: auto, small or huge, matching
 * PREZERO_COLD_PAGES in meson.build): at start, before any worker has run
 * (nothing measured), a 64 MiB malloc is written one byte per page; then
 *   auto, small  its chunks were handed out with 4 KiB pages: the stats
 *                count 64 MiB of them and no huge page backs the block
 *                (smaps: AnonHugePages of the mappings holding it is 0);
 *   huge         none counted, and huge pages back it (when the kernel
 *                gives this process huge pages at all: else skipped).
 * The block is freed and a 192 MiB one dirtied and freed so the workers
 * run: under auto they measure both page sizes within 5 s (the stats show
 * both fault costs; only a process holding 128 MiB of chunks is measured
 * for), under small and huge they never measure. The memory
 * reads as written throughout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "prezero.h"

#define MiB (1024ul * 1024)
#define LEN (64 * MiB)

static int fails;
#define CHECK(c, ...)                                                                              \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "cold-pages: " __VA_ARGS__);                                                 \
      fputc('\n', stderr);                                                                         \
      fails++;                                                                                     \
    }                                                                                              \
  } while (0)

/* AnonHugePages (bytes) of the mappings that overlap [p, p + len). */
static long huge_bytes(const char *p, size_t len) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f) return -1;
  char line[512];
  long sum = 0;
  int in = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    long kb;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
      in = lo < (unsigned long)p + len && hi > (unsigned long)p;
    else if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
      sum += kb << 10;
  }
  fclose(f);
  return sum;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "auto";
  struct prezero_stats a, b;
  prezero_stats_get(&a);
  CHECK(a.fault_huge_ns == 0 && a.fault_small_ns == 0, "%s: fault costs measured before any worker ran: %llu, %llu",
        mode, (unsigned long long)a.fault_huge_ns, (unsigned long long)a.fault_small_ns);
  char *m = malloc(LEN);
  CHECK(m != NULL, "%s: malloc(64 MiB) failed", mode);
  if (!m) return 1;
  for (size_t off = 0; off < LEN; off += 4096) m[off] = (char)(off >> 12);
  prezero_stats_get(&b);
  long huge = huge_bytes(m, LEN);
  size_t cold = (size_t)(b.cold_small_bytes - a.cold_small_bytes);
  if (!strcmp(mode, "huge")) {
    CHECK(cold == 0, "huge: %zu bytes of fresh chunks handed out with 4 KiB pages, expected 0", cold);
    if (!b.thp) {
      printf("huge: this process gets no huge pages (stats: thp 0): huge-page check skipped\n");
    } else {
      CHECK(huge > 0, "huge: no huge page backs the fresh 64 MiB block (AnonHugePages %ld)", huge);
    }
  } else if (b.thp) {
    CHECK(cold >= LEN, "%s: %zu bytes of fresh chunks with 4 KiB pages, expected at least the 64 MiB block", mode, cold);
    CHECK(huge == 0, "%s: the fresh 64 MiB block is backed by %ld bytes of huge pages, expected none", mode, huge);
  } else {
    printf("%s: this process gets no huge pages (stats: thp 0): page-size checks skipped\n", mode);
  }
  for (size_t off = 0; off < LEN; off += 4096)
    if (m[off] != (char)(off >> 12)) {
      CHECK(0, "%s: byte at offset %zu is %d, expected %d", mode, off, m[off], (char)(off >> 12));
      break;
    }
  free(m);
  /* work for the workers: dirty chunks to zero, in a pool big enough to be
   * measured for (128 MiB and more: the probe's own 4 MiB stay small) */
  char *volatile d = malloc(3 * LEN); /* volatile: the compiler may not drop the pair */
  memset(d, 1, 3 * LEN);
  free(d);
  struct prezero_stats c = b;
  for (int i = 0; i < 50; i++) {
    prezero_stats_get(&c);
    if (c.fault_huge_ns && c.fault_small_ns) break;
    usleep(100000);
  }
  if (!strcmp(mode, "auto")) {
    if (b.thp) /* no huge pages: nothing to choose, nothing measured */
      CHECK(c.fault_huge_ns && c.fault_small_ns, "auto: the workers measured no fault costs in 5 s (%llu, %llu ns)",
            (unsigned long long)c.fault_huge_ns, (unsigned long long)c.fault_small_ns);
  } else {
    CHECK(c.fault_huge_ns == 0 && c.fault_small_ns == 0, "%s: fault costs measured (%llu, %llu ns), expected none",
          mode, (unsigned long long)c.fault_huge_ns, (unsigned long long)c.fault_small_ns);
  }
  printf("%s: fresh 4 KiB-page bytes %zu, huge bytes of the block %ld, fault of 2 MiB: huge %llu ns, 4 KiB pages %llu ns\n",
         mode, cold, huge, (unsigned long long)c.fault_huge_ns, (unsigned long long)c.fault_small_ns);
  return fails ? 1 : 0;
}
