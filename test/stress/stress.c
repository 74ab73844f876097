/* Randomized, seeded stress: threads doing malloc/calloc/realloc/aligned
 * allocation and free of random sizes, handing blocks to each other through
 * shared slots (so many frees are cross-thread), writing a pattern into
 * every block and checking it before free, and checking every calloc'd byte
 * is zero. Linked against libprezero; plain malloc API.
 *   stress [--smoke] [threads] [ops-per-thread] [seed] */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 4096

struct blk {
  size_t size;
  uint64_t tag;
};
static _Atomic(unsigned char *) slots[SLOTS]; /* each block starts with struct blk */
static _Atomic long failures;
static long ops_per_thread = 200000;
static uint64_t seed = 42;

static uint64_t rnd(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static size_t pick_size(uint64_t *s) {
  uint64_t r = rnd(s) % 1000;
  if (r < 700) return sizeof(struct blk) + rnd(s) % 256;
  if (r < 950) return sizeof(struct blk) + rnd(s) % 8192;
  if (r < 995) return sizeof(struct blk) + rnd(s) % 600000;
  return sizeof(struct blk) + rnd(s) % (6 << 20);
}

static void fill(unsigned char *p, size_t size, uint64_t tag) {
  struct blk b = {size, tag};
  memcpy(p, &b, sizeof b);
  for (size_t i = sizeof b; i < size; i += 61) p[i] = (unsigned char)(tag + i);
  p[size - 1] = (unsigned char)(tag ^ 0x5a);
}

static void check(unsigned char *p) {
  struct blk b;
  memcpy(&b, p, sizeof b);
  int bad = 0;
  for (size_t i = sizeof b; i < b.size - 1; i += 61)
    if (p[i] != (unsigned char)(b.tag + i)) bad = 1;
  if (b.size > sizeof b && p[b.size - 1] != (unsigned char)(b.tag ^ 0x5a)) bad = 1;
  if (bad) {
    fprintf(stderr, "stress: block %p (size %zu) corrupted\n", (void *)p, b.size);
    atomic_fetch_add(&failures, 1);
  }
}

static int all_zero(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

static void *worker(void *arg) {
  uint64_t s = seed * 1000003 + (uintptr_t)arg;
  for (long op = 0; op < ops_per_thread; op++) {
    size_t size = pick_size(&s);
    unsigned kind = (unsigned)(rnd(&s) % 10);
    unsigned char *p;
    if (kind < 5) {
      p = malloc(size);
    } else if (kind < 7) {
      p = calloc(1, size);
      if (p && !all_zero(p, size)) {
        fprintf(stderr, "stress: calloc(%zu) returned non-zero memory at %p\n", size, (void *)p);
        atomic_fetch_add(&failures, 1);
      }
    } else if (kind < 8) {
      size_t align = (size_t)16 << (rnd(&s) % 10);
      if (posix_memalign((void **)&p, align, size) != 0) p = NULL;
      if (p && (uintptr_t)p % align) {
        fprintf(stderr, "stress: misaligned %p for %zu\n", (void *)p, align);
        atomic_fetch_add(&failures, 1);
      }
    } else {
      /* realloc a block from the slots (ours or another thread's) */
      unsigned i = (unsigned)(rnd(&s) % SLOTS);
      unsigned char *old = atomic_exchange(&slots[i], NULL);
      if (!old) continue;
      check(old);
      p = realloc(old, size);
      if (!p) {
        free(old);
        continue;
      }
      struct blk b;
      memcpy(&b, p, sizeof b);
      size_t keep = b.size < size ? b.size : size;
      /* the kept prefix must be intact */
      for (size_t k = sizeof b; k + 1 < keep; k += 61)
        if (p[k] != (unsigned char)(b.tag + k)) {
          fprintf(stderr, "stress: realloc lost data at %p\n", (void *)p);
          atomic_fetch_add(&failures, 1);
          break;
        }
    }
    if (!p) {
      fprintf(stderr, "stress: allocation of %zu failed\n", size);
      atomic_fetch_add(&failures, 1);
      continue;
    }
    if (malloc_usable_size(p) < size) {
      fprintf(stderr, "stress: usable size %zu < %zu\n", malloc_usable_size(p), size);
      atomic_fetch_add(&failures, 1);
    }
    fill(p, size, rnd(&s));
    unsigned i = (unsigned)(rnd(&s) % SLOTS);
    unsigned char *old = atomic_exchange(&slots[i], p);
    if (old) {
      check(old);
      free(old);
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  int threads = 4, a = 1;
  if (argc > 1 && !strcmp(argv[1], "--smoke")) {
    ops_per_thread = 30000;
    a = 2;
  }
  if (argc > a) threads = atoi(argv[a]);
  if (argc > a + 1) ops_per_thread = atol(argv[a + 1]);
  if (argc > a + 2) seed = strtoull(argv[a + 2], NULL, 0);
  for (int round = 0; round < 3; round++) { /* threads come and go: heaps are reused */
    pthread_t t[64];
    if (threads > 64) threads = 64;
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(round * 64 + i));
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  }
  for (unsigned i = 0; i < SLOTS; i++) {
    unsigned char *p = atomic_exchange(&slots[i], NULL);
    if (p) {
      check(p);
      free(p);
    }
  }
  long f = atomic_load(&failures);
  printf("stress: %d threads x %ld ops x 3 rounds, seed %llu: %ld failures\n", threads, ops_per_thread,
         (unsigned long long)seed, f);
  return f ? 1 : 0;
}
