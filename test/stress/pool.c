/* The pre-zeroed pool under real use: every calloc'd byte is zero, however
 * the memory came back (worker-zeroed, inline memset, untouched, discarded),
 * and the workers never write a block that is handed out.
 *   pool [--smoke]
 * Run by meson with the workers on, off (PREZERO_ZERO=0), with 4 KiB pages
 * (PREZERO_THP=never) and with no pool (PREZERO_POOL_MAX=0). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "prezero.h"

static atomic_long failures;
static int rounds = 200;

static void fail(const char *what, const void *p, size_t n) {
  fprintf(stderr, "pool: %s at %p (size %zu)\n", what, p, n);
  atomic_fetch_add(&failures, 1);
}

static int is_zero(const unsigned char *p, size_t n) {
  const uint64_t *w = (const uint64_t *)p;
  for (size_t i = 0; i < n / 8; i++)
    if (w[i]) return 0;
  for (size_t i = n & ~(size_t)7; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

/* calloc / check zero / dirty / free, sizes across all three paths */
static void *recycle(void *arg) {
  uint64_t s = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
  for (int r = 0; r < rounds; r++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    size_t n = (r % 4 == 0) ? (s % (24u << 20)) + 1 : (s % 3 == 0) ? (s % 900000) + 1 : (s % 5000) + 1;
    unsigned char *p = calloc(1, n);
    if (!p) {
      fail("calloc returned NULL", p, n);
      continue;
    }
    if (!is_zero(p, n)) fail("calloc returned non-zero memory", p, n);
    memset(p, 0xee, n); /* dirty it: the pool must zero it before the next calloc */
    free(p);
    if (r % 16 == 0) usleep(2000); /* let the workers run */
  }
  return NULL;
}

/* Blocks held across worker activity keep their contents. */
static void held_blocks_survive_workers(void) {
  enum { N = 24 };
  unsigned char *held[N];
  size_t sz[N];
  for (int i = 0; i < N; i++) {
    sz[i] = (size_t)(i + 1) * (3u << 20) / 2; /* 1.5 .. 36 MiB: whole chunks */
    held[i] = malloc(sz[i]);
    if (!held[i]) {
      fail("malloc returned NULL", NULL, sz[i]);
      return;
    }
    memset(held[i], 0x40 + i, sz[i]);
  }
  /* make lots of dirty memory around them and let the workers chew on it */
  for (int k = 0; k < 40; k++) {
    void *tmp = malloc(8u << 20);
    if (tmp) memset(tmp, 0x99, 8u << 20);
    free(tmp);
  }
  prezero_reserve(256u << 20); /* workers also pre-fault fresh chunks */
  usleep(50000);
  for (int i = 0; i < N; i++) {
    for (size_t k = 0; k < sz[i]; k += 509)
      if (held[i][k] != 0x40 + i) {
        fail("a worker wrote into a block in use", held[i] + k, sz[i]);
        break;
      }
    free(held[i]);
  }
  prezero_reserve(0);
}

/* Ready memory the program reserved is kept for it: small objects growing
 * the heap take other chunks. */
static void reserve_is_kept_from_small_objects(void) {
  if (prezero_reserve(64u << 20) != 0) {
    fail("prezero_reserve(64M) failed", NULL, 0);
    return;
  }
  struct prezero_stats before, after;
  prezero_stats_get(&before);
  enum { N = 40000 };
  static void *small[N];
  for (int i = 0; i < N; i++) small[i] = malloc(512); /* ~20 MiB: new small chunks */
  prezero_stats_get(&after);
  if (after.chunks_ready < 32)
    fail("small objects took the reserved ready chunks (ready chunks left)", NULL, after.chunks_ready);
  for (int i = 0; i < N; i++) free(small[i]);
  prezero_reserve(0);
  (void)before;
}

static size_t resident_pages(const void *p, size_t len) {
  static unsigned char vec[(64u << 20) / 4096];
  size_t n = 0;
  if (len > sizeof vec * 4096 || mincore((void *)p, len, vec) != 0) return SIZE_MAX;
  for (size_t i = 0; i < len / 4096; i++) n += vec[i] & 1;
  return n;
}

/* A large calloc under PREZERO_HUGE_MIN (16 MiB), from chunks nobody has
 * faulted yet, used sparsely: only the pages touched become resident, not
 * a 2 MiB huge page per chunk touched. Runs first, while the pool is fresh. */
static void sparse_table_stays_small(void) {
  size_t len = 12u << 20;
  unsigned char *p = calloc(1, len);
  if (!p) {
    fail("calloc(12 MiB) failed", NULL, 0);
    return;
  }
  for (size_t off = 0; off < len; off += 4u << 20) p[off + 4096] = 1;
  size_t n = resident_pages(p, len);
  if (n > 16) fail("sparse 12 MiB table: 3 pages touched, pages resident", p, n);
  for (size_t off = 0; off < len; off += 4096)
    if (p[off] != (off % (4u << 20) == 4096)) fail("sparse table: wrong byte", p + off, 1);
  free(p);
}

int main(int argc, char **argv) {
  int threads = 3;
  if (argc > 1 && !strcmp(argv[1], "--smoke")) rounds = 120;
  sparse_table_stays_small();
  reserve_is_kept_from_small_objects();
  held_blocks_survive_workers();
  struct prezero_stats st0; /* the tests above zero memory for the reserve on this thread */
  prezero_stats_get(&st0);
  pthread_t t[8];
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, recycle, (void *)(uintptr_t)(i + 1));
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  /* with workers on, some calloc must have been served ready: the pool works */
  struct prezero_stats st;
  prezero_stats_get(&st);
  const char *z = getenv("PREZERO_ZERO");
  const char *mx = getenv("PREZERO_POOL_MAX");
  int workers_expected = !(z && !strcmp(z, "0")) && !(mx && !strcmp(mx, "0"));
  /* zeroed, or (fresh chunks that went out on 4 KiB pages) made huge pages again */
  if (workers_expected && st.worker_zeroed_bytes == st0.worker_zeroed_bytes &&
      st.worker_populated_bytes == st0.worker_populated_bytes)
    fail("workers zeroed nothing", NULL, 0);
  if (!workers_expected && st.worker_zeroed_bytes != st0.worker_zeroed_bytes)
    fail("workers ran although off", NULL, st.worker_zeroed_bytes - st0.worker_zeroed_bytes);
  /* idle: the workers stop using CPU at once (a worker waiting for free
   * memory to decay wakes a few times a second); once the pool holds
   * nothing it will give back, they leave after a second */
  /* first let the workers finish the work the rounds left (zeroing freed
   * chunks takes long under an emulator, and the counters move only when
   * a batch is done): idle means no progress in three windows in a row */
  for (int i = 0, quiet = 0; i < 100 && quiet < 3; i++) {
    struct prezero_stats a, b;
    prezero_stats_get(&a);
    usleep(300000);
    prezero_stats_get(&b);
    if (a.worker_zeroed_bytes == b.worker_zeroed_bytes && a.worker_populated_bytes == b.worker_populated_bytes &&
        a.released_bytes == b.released_bytes)
      quiet++;
    else
      quiet = 0;
  }
  struct rusage r0, r1;
  getrusage(RUSAGE_SELF, &r0);
  sleep(2);
  getrusage(RUSAGE_SELF, &r1);
  long idle_us = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1000000L + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) +
                 (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1000000L + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
  /* PZ_IDLE_CPU_MS: a looser bound for emulators (the vm suite under TCG) */
  const char *lim = getenv("PZ_IDLE_CPU_MS");
  long limit_us = (lim ? atol(lim) : 100) * 1000L;
  if (idle_us > limit_us) fail("CPU used while idle (us)", NULL, (size_t)idle_us);
  malloc_trim(0); /* gives back everything above the low watermark now */
  struct prezero_stats idle;
  for (int i = 0; i < 40; i++) { /* leaving takes a second; allow for a slow machine */
    usleep(100000);
    prezero_stats_get(&idle);
    if (idle.workers == 0 && i >= 20) break;
  }
  if (idle.workers != 0) fail("workers still there 2 s after the pool was trimmed", NULL, idle.workers);
  if (idle.chunks_ready + idle.chunks_dirty != 0)
    fail("free chunks resident after malloc_trim(0)", NULL, idle.chunks_ready + idle.chunks_dirty);
  printf("pool: %d threads x %d rounds: ready %llu MiB, untouched %llu MiB, memset %llu MiB, "
         "worker-zeroed %llu MiB in %.1f ms CPU, waits %llu: %ld failures\n",
         threads, rounds, (unsigned long long)st.calloc_ready_bytes >> 20,
         (unsigned long long)st.calloc_untouched_bytes >> 20,
         (unsigned long long)st.calloc_zeroed_bytes >> 20,
         (unsigned long long)st.worker_zeroed_bytes >> 20, st.worker_cpu_ns / 1e6,
         (unsigned long long)st.busy_waits, atomic_load(&failures));
  return atomic_load(&failures) ? 1 : 0;
}
