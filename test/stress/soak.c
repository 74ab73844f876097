/* Soak: a bounded run of everything at once, in rounds: worker threads
 * (started and joined anew every round: thread churn) allocate every size
 * class, medium and large blocks, aligned blocks and callocs, grow and
 * shrink them with realloc, hand a share to the next thread to free
 * (cross-thread frees), and check every byte they wrote; each round also
 * forks a child that allocates and checks. RSS is sampled after every
 * round: from the third round on it must not grow (no leak), beyond a
 * slack for the pool (PREZERO_POOL_MAX).
 * Usage: test-soak [seconds] [threads]   (CI: 60 s; longer on demand) */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NSLOT 2048
#define HANDOFF 512
static atomic_int failures;
static atomic_long bytes_checked;
static int nthreads = 4;

static void fail(const char *what, size_t v) {
  if (atomic_fetch_add(&failures, 1) < 20) fprintf(stderr, "soak: %s (%zu)\n", what, v);
}

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

struct blk { unsigned char *p; size_t n; unsigned char tag; };

/* A mailbox per thread: blocks another thread allocated, to free here. */
static struct { pthread_mutex_t mu; struct blk b[HANDOFF]; int n; } box[64];

static void fill(struct blk *b) {
  size_t step = b->n <= 8192 ? 1 : 509;
  for (size_t i = 0; i < b->n; i += step) b->p[i] = (unsigned char)(b->tag + i);
  b->p[b->n - 1] = b->tag;
}

static void check_free(struct blk *b) {
  size_t step = b->n <= 8192 ? 1 : 509;
  for (size_t i = 0; i < b->n - 1; i += step)
    if (b->p[i] != (unsigned char)(b->tag + i)) {
      fail("a block lost its data at offset", i);
      break;
    }
  if (b->p[b->n - 1] != b->tag) fail("a block lost its last byte", b->n);
  atomic_fetch_add_explicit(&bytes_checked, (long)b->n, memory_order_relaxed);
  free(b->p);
  b->p = NULL;
}

static size_t pick_size(uint64_t *s) {
  uint64_t r = rnd(s) % 1000;
  if (r < 700) return 1 + rnd(s) % 256;           /* small */
  if (r < 930) return 257 + rnd(s) % 32000;       /* larger classes */
  if (r < 990) return 128 * 1024 + rnd(s) % (2u << 20); /* medium */
  return (2u << 20) + rnd(s) % (24u << 20);       /* large */
}

struct targ { int id; uint64_t seed; long iters; };

static void *worker(void *arg) {
  struct targ *a = arg;
  uint64_t s = a->seed;
  static __thread struct blk slots[NSLOT];
  memset(slots, 0, sizeof slots);
  for (long it = 0; it < a->iters; it++) {
    struct blk *b = &slots[rnd(&s) % NSLOT];
    uint64_t r = rnd(&s);
    if (b->p) {
      if (r % 8 == 0) { /* realloc, data kept */
        size_t n = pick_size(&s);
        unsigned char *q = realloc(b->p, n);
        if (!q) {
          fail("realloc failed", n);
          continue;
        }
        size_t keep = n < b->n ? n : b->n, step = b->n <= 8192 ? 1 : 509;
        for (size_t i = 0; i + 1 < keep; i += step)
          if (q[i] != (unsigned char)(b->tag + i)) {
            fail("realloc lost data at", i);
            break;
          }
        b->p = q;
        b->n = n;
        fill(b);
      } else if (r % 3 == 0) { /* to the next thread's mailbox */
        int to = (a->id + 1) % nthreads;
        pthread_mutex_lock(&box[to].mu);
        if (box[to].n < HANDOFF) {
          box[to].b[box[to].n++] = *b;
          b->p = NULL;
        }
        pthread_mutex_unlock(&box[to].mu);
        if (b->p) check_free(b);
      } else {
        check_free(b);
      }
      continue;
    }
    b->n = pick_size(&s);
    b->tag = (unsigned char)(r >> 16);
    switch (r % 5) {
    case 0: { /* calloc: zero first */
      b->p = calloc(1, b->n);
      size_t step = b->n <= 8192 ? 1 : 4093;
      for (size_t i = 0; b->p && i < b->n; i += step)
        if (b->p[i]) {
          fail("calloc not zero at", i);
          break;
        }
      break;
    }
    case 1: { /* aligned */
      size_t al = (size_t)16 << (rnd(&s) % 12);
      void *q = NULL;
      if (posix_memalign(&q, al, b->n) == 0 && ((uintptr_t)q & (al - 1))) fail("misaligned", al);
      b->p = q;
      break;
    }
    default:
      b->p = malloc(b->n);
    }
    if (!b->p) {
      fail("allocation failed", b->n);
      continue;
    }
    fill(b);
    if (r % 64 == 0) { /* drain our mailbox */
      pthread_mutex_lock(&box[a->id].mu);
      int n = box[a->id].n;
      struct blk tmp[HANDOFF];
      memcpy(tmp, box[a->id].b, (size_t)n * sizeof tmp[0]);
      box[a->id].n = 0;
      pthread_mutex_unlock(&box[a->id].mu);
      for (int i = 0; i < n; i++) check_free(&tmp[i]);
    }
  }
  for (int i = 0; i < NSLOT; i++)
    if (slots[i].p) check_free(&slots[i]);
  return NULL;
}

static size_t rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  size_t kb = 0;
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) kb = strtoul(line + 6, NULL, 10);
  if (f) fclose(f);
  return kb;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 60;
  if (argc > 2) nthreads = atoi(argv[2]);
  if (nthreads < 1 || nthreads > 64) nthreads = 4;
  for (int i = 0; i < 64; i++) pthread_mutex_init(&box[i].mu, NULL);
  double start = now();
  size_t base = 0, worst = 0;
  int round = 0;
  while (now() - start < seconds) {
    pthread_t t[64];
    struct targ a[64];
    for (int i = 0; i < nthreads; i++) {
      a[i] = (struct targ){i, (uint64_t)(round * 131 + i + 1) * 0x9E3779B97F4A7C15ull, 60000};
      pthread_create(&t[i], NULL, worker, &a[i]);
    }
    pid_t pid = fork(); /* while the threads run */
    if (pid == 0) {
      int bad = 0;
      for (int k = 0; k < 2000; k++) {
        size_t n = 1 + (size_t)k * 37 % 100000;
        unsigned char *p = calloc(1, n);
        if (!p || p[n - 1]) bad = 1;
        else memset(p, k, n);
        free(p);
      }
      _exit(bad);
    }
    for (int i = 0; i < nthreads; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < nthreads; i++) { /* leftovers in the mailboxes */
      for (int k = 0; k < box[i].n; k++) check_free(&box[i].b[k]);
      box[i].n = 0;
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) fail("a forked child failed", (size_t)st);
    malloc_trim(0);
    size_t r = rss_kib();
    round++;
    if (round == 2) base = r;
    if (round > 2 && r > worst) worst = r;
    if (round > 2 && r > base + base / 4 + 64 * 1024)
      fail("RSS grows across rounds (KiB)", r);
  }
  printf("soak: %d rounds of %d threads in %.0f s, %ld MiB of blocks checked, RSS after round 2 %zu MiB, worst after %zu MiB: "
         "%d failures\n",
         round, nthreads, now() - start, atomic_load(&bytes_checked) >> 20, base >> 10, worst >> 10,
         atomic_load(&failures));
  return atomic_load(&failures) != 0;
}
