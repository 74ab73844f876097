/* Returning memory: a program grows to several GiB, frees it, and its RSS
 * comes back to its live data plus the high watermark (PREZERO_POOL_MAX)
 * once the memory has been idle for PREZERO_DECAY_MS, then to its live data
 * alone after PREZERO_RETAIN_MS; memory faulted in again reads zero and is
 * counted. A functional check with generous bounds, not a timing test.
 * Run with PREZERO_POOL_MAX=256M PREZERO_DECAY_MS=200 PREZERO_RETAIN_MS=3000. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "prezero.h"

#define MiB (1024ul * 1024)

static size_t rss(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  size_t kb = 0;
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) kb = strtoul(line + 6, NULL, 10);
  if (f) fclose(f);
  return kb << 10;
}

/* Wait up to `secs` for RSS <= bound; returns the last RSS seen. */
static size_t wait_rss(size_t bound, int secs) {
  size_t r = rss();
  for (int i = 0; i < secs * 10 && r > bound; i++) {
    usleep(100000);
    r = rss();
  }
  return r;
}

int main(void) {
  int fails = 0;
  const char *mx = getenv("PREZERO_POOL_MAX");
  size_t pool_max = mx ? strtoul(mx, NULL, 10) * MiB : 1024 * MiB; /* "256M" */
  /* live data that stays: small and large */
  enum { NSMALL = 20000, NBIG = 24 };
  char *small[NSMALL];
  for (int i = 0; i < NSMALL; i++) small[i] = memset(malloc(1000), i, 1000);
  char *live = calloc(1, 32 * MiB);
  memset(live, 7, 32 * MiB);
  size_t base = rss();
  char *big[NBIG];
  for (int i = 0; i < NBIG; i++) big[i] = memset(calloc(1, 128 * MiB), 0x5a, 128 * MiB);
  size_t peak = rss();
  for (int i = 0; i < NBIG; i++) free(big[i]);
  size_t slack = 64 * MiB;
  size_t after_decay = wait_rss(base + pool_max + slack, 10);
  if (after_decay > base + pool_max + slack) {
    fprintf(stderr, "release: RSS %zu MiB after the decay, want <= %zu MiB\n", after_decay / MiB,
            (base + pool_max + slack) / MiB);
    fails++;
  }
  size_t after_retain = wait_rss(base + slack, 20);
  if (after_retain > base + slack) {
    fprintf(stderr, "release: RSS %zu MiB after the retention, want <= %zu MiB\n", after_retain / MiB,
            (base + slack) / MiB);
    fails++;
  }
  struct prezero_stats st;
  prezero_stats_get(&st);
  if (st.released_bytes < (NBIG - 2) * 128 * MiB) {
    fprintf(stderr, "release: released only %llu MiB\n", (unsigned long long)st.released_bytes / MiB);
    fails++;
  }
  /* what comes back in reads zero, and is counted as faulted in again */
  unsigned char *again = calloc(1, 1024 * MiB);
  for (size_t i = 0; i < 1024 * MiB; i += 4096)
    if (again[i] || again[i + 4095]) {
      fprintf(stderr, "release: calloc after release not zero at %zu\n", i);
      fails++;
      break;
    }
  prezero_stats_get(&st);
  if (st.refaulted_bytes == 0) {
    fprintf(stderr, "release: faulting released memory in again was not counted\n");
    fails++;
  }
  free(again);
  for (int i = 0; i < NSMALL; i++)
    if (small[i][999] != (char)i) fails++;
  for (int i = 0; i < NSMALL; i++) free(small[i]);
  free(live);
  printf("release: base %zu MiB, peak %zu MiB, after decay %zu MiB, after retention %zu MiB, released %llu MiB, "
         "faulted in again %llu MiB: %d failures\n",
         base / MiB, peak / MiB, after_decay / MiB, after_retain / MiB,
         (unsigned long long)st.released_bytes / MiB, (unsigned long long)st.refaulted_bytes / MiB, fails);
  return fails != 0;
}
