/* Survive injected OS failures (run under the debug build with
 * PREZERO_FAULTS): threads doing every kind of allocation (small, medium,
 * large, aligned, realloc up and down, calloc checked zero, mmap served
 * from the pool, prezero_populate, trim) plus a fork, where any call may
 * fail. A failed allocation must return NULL with errno ENOMEM (or EINVAL
 * for populate of a range the kernel refused); everything handed out must
 * hold its data; nothing may crash or hang. At the end, the faults asked
 * for must really have been injected (the test is not vacuous).
 * Usage: test-faults [seconds] */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "prezero.h"

#define NSLOT 256
static atomic_int failures;
static atomic_long nulls, ops;
static double seconds = 2.0;

static void fail(const char *what, size_t v) {
  fprintf(stderr, "faults: %s (%zu)\n", what, v);
  atomic_fetch_add(&failures, 1);
}

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

struct slot { unsigned char *p; size_t n; unsigned char tag; int mapped; };

static void fill(struct slot *s) {
  if (s->n <= 4096) memset(s->p, s->tag, s->n);
  else
    for (size_t i = 0; i < s->n; i += 4096) s->p[i] = s->tag;
  s->p[s->n - 1] = s->tag;
}

static void check(const struct slot *s) {
  size_t step = s->n <= 4096 ? 1 : 4096;
  for (size_t i = 0; i < s->n; i += step)
    if (s->p[i] != s->tag) {
      fail("data lost", i);
      return;
    }
  if (s->p[s->n - 1] != s->tag) fail("data lost at the end", s->n);
}

static void release(struct slot *s) {
  if (!s->p) return;
  check(s);
  if (s->mapped) munmap(s->p, s->n);
  else free(s->p);
  s->p = NULL;
}

static void null_ok(const char *what) {
  atomic_fetch_add(&nulls, 1);
  if (errno != ENOMEM) fail(what, (size_t)errno);
}

static void *run(void *arg) {
  uint64_t seed = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
  struct slot slots[NSLOT] = {{0}};
  double end = now() + seconds;
  while (now() < end) {
    for (int i = 0; i < 200; i++) {
      struct slot *s = &slots[rnd(&seed) % NSLOT];
      uint64_t r = rnd(&seed);
      atomic_fetch_add(&ops, 1);
      if (s->p) {
        if (r % 4 == 0 && !s->mapped) { /* realloc */
          size_t n = 1 + rnd(&seed) % (r % 8 ? 5000 : 6u << 20);
          errno = 0;
          unsigned char *q = realloc(s->p, n);
          if (!q) {
            null_ok("realloc failed without ENOMEM");
            continue; /* the old block is still ours, intact */
          }
          size_t keep = n < s->n ? n : s->n;
          size_t step = s->n <= 4096 ? 1 : 4096; /* as fill() wrote it */
          for (size_t k = 0; k < keep - 1; k += step)
            if (q[k] != s->tag) {
              fail("realloc lost data", k);
              break;
            }
          s->p = q;
          s->n = n;
          fill(s);
        } else {
          release(s);
        }
        continue;
      }
      errno = 0;
      s->tag = (unsigned char)(r >> 8 | 1);
      s->mapped = 0;
      switch (r % 10) {
      case 0: /* large calloc, checked zero */
        s->n = (1 + rnd(&seed) % 24) << 20;
        s->p = calloc(1, s->n);
        if (s->p)
          for (size_t k = 0; k < s->n; k += 4096)
            if (s->p[k]) {
              fail("calloc not zero", k);
              break;
            }
        break;
      case 1: { /* aligned */
        size_t al = (size_t)1 << (4 + rnd(&seed) % 18);
        s->n = 1 + rnd(&seed) % 300000;
        void *q = NULL;
        int e = posix_memalign(&q, al, s->n);
        if (e) errno = e;
        s->p = e ? NULL : q;
        if (s->p && ((uintptr_t)s->p & (al - 1))) fail("misaligned", al);
        break;
      }
      case 2: /* an mmap the pool may serve: advised huge pages (as a VMM does), some MAP_POPULATE */
        s->n = (32 + rnd(&seed) % 32) << 20;
        s->p = mmap(NULL, s->n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (r % 4 ? 0 : MAP_POPULATE),
                    -1, 0);
        if (s->p == MAP_FAILED) s->p = NULL;
        else s->mapped = 1;
        if (s->p && r % 4) madvise(s->p, s->n, MADV_HUGEPAGE);
        if (s->p && s->p[s->n / 2]) fail("mmap not zero", 0);
        if (s->p && r % 3 == 0 && prezero_populate(s->p, s->n) != 0 && errno != ENOMEM)
          fail("populate failed without ENOMEM", (size_t)errno);
        break;
      case 3:
        s->n = 200000 + rnd(&seed) % 1800000; /* medium */
        s->p = malloc(s->n);
        break;
      case 4:
        if (r % 64 == 0) malloc_trim(0);
        s->n = 1 + rnd(&seed) % 20;
        s->p = calloc(s->n, 1);
        break;
      default:
        s->n = 1 + rnd(&seed) % 2000;
        s->p = malloc(s->n);
      }
      if (!s->p) {
        null_ok("allocation failed without ENOMEM");
        continue;
      }
      fill(s);
    }
  }
  for (int i = 0; i < NSLOT; i++) release(&slots[i]);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc > 1) seconds = atof(argv[1]);
  /* a finite address-space limit, far above what this uses: wholly free
   * regions are then unmapped as they come free (more OS calls to fail) */
  struct rlimit as = {(rlim_t)1 << 40, (rlim_t)1 << 40};
  setrlimit(RLIMIT_AS, &as);
  pthread_t t[3];
  int nt = 0;
  for (int i = 0; i < 3; i++)
    if (pthread_create(&t[nt], NULL, run, (void *)(uintptr_t)(i + 1)) == 0) nt++;
  /* a fork in the middle: the child allocates and exits cleanly */
  usleep((useconds_t)(seconds * 300000));
  pid_t pid = fork();
  if (pid == 0) {
    char *volatile p = malloc(1000), *volatile q = calloc(1, 8 << 20);
    _exit((p || errno == ENOMEM) && (q || errno == ENOMEM) ? 0 : 1);
  }
  int st = 0;
  if (pid > 0) waitpid(pid, &st, 0);
  if (pid > 0 && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) fail("the forked child failed", (size_t)st);
  for (int i = 0; i < nt; i++) pthread_join(t[i], NULL);
  /* a last phase whose OS calls do not depend on timing: blocks too big for
   * any region so far reserve new regions (mmap, trimmed with munmap), and
   * freeing them leaves regions wholly free, unmapped under the limit */
  for (int k = 0; k < 6; k++) {
    size_t n = (size_t)(96 + 64 * k) << 20;
    char *p = malloc(n);
    if (!p) {
      null_ok("large allocation failed without ENOMEM");
      continue;
    }
    p[0] = p[n - 1] = 1;
    free(p);
    malloc_trim(0);
  }
  struct prezero_stats s;
  prezero_stats_get(&s);
  const char *spec = getenv("PREZERO_FAULTS");
  if (spec && *spec && s.faults_injected == 0) fail("PREZERO_FAULTS set but nothing was injected", 0);
  printf("faults: %s: %ld operations, %ld refused with ENOMEM, %llu faults injected: %d failures\n",
         spec ? spec : "(none)", atomic_load(&ops), atomic_load(&nulls), (unsigned long long)s.faults_injected,
         atomic_load(&failures));
  return atomic_load(&failures) != 0;
}
