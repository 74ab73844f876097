/* Regressions from review, one per hazard (each aborted or leaked before):
 *  - remote frees of medium blocks, producer/consumer: the owner's notice
 *    must not be lost, or freed pages stay held for good;
 *  - malloc_trim while large allocations take over chunks it holds;
 *  - prezero_reserve over a run fragmented into >64 pieces. */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "prezero.h"

#define CH ((size_t)2 << 20)
static int failures;

/* ---- 1: producer/consumer, remote frees */
#define Q 1024
static _Atomic(void *) q[Q];
static atomic_long head, tail;
static atomic_int done;

static void *consumer(void *a) {
  (void)a;
  for (;;) {
    long t = atomic_load(&tail);
    if (t == atomic_load(&head)) {
      /* done is set after the last push: look at head once more after it */
      if (atomic_load(&done) && t == atomic_load(&head)) break;
      continue;
    }
    void *p = atomic_exchange(&q[t % Q], NULL);
    if (!p) continue;
    atomic_store(&tail, t + 1);
    free(p);
  }
  return NULL;
}

static void remote_frees_do_not_leak(long iters, size_t size) {
  pthread_t c;
  atomic_store(&head, 0);
  atomic_store(&tail, 0);
  atomic_store(&done, 0);
  pthread_create(&c, NULL, consumer, NULL);
  for (long i = 0; i < iters; i++) {
    while (atomic_load(&head) - atomic_load(&tail) >= Q - 1) {
    }
    char *p = malloc(size);
    p[0] = 1;
    atomic_store(&q[atomic_load(&head) % Q], p);
    atomic_fetch_add(&head, 1);
  }
  atomic_store(&done, 1);
  pthread_join(c, NULL);
  malloc_trim(0);
  struct prezero_stats st;
  prezero_stats_get(&st);
  if (st.small_live_bytes > (1u << 20)) {
    fprintf(stderr, "regress: %zu-byte blocks all freed remotely, %llu bytes still live\n", size,
            (unsigned long long)st.small_live_bytes);
    failures++;
  }
}

/* ---- 2: trim racing allocations that take over its chunks */
static atomic_int stop;
static void *trimmer(void *a) {
  (void)a;
  while (!atomic_load(&stop)) malloc_trim(0);
  return NULL;
}
static void *reserver(void *a) {
  (void)a;
  while (!atomic_load(&stop)) prezero_reserve(CH);
  return NULL;
}

static void trim_races_allocations(void) {
  pthread_t t, r;
  atomic_store(&stop, 0);
  pthread_create(&t, NULL, trimmer, NULL);
  pthread_create(&r, NULL, reserver, NULL);
  for (int i = 0; i < 60; i++) {
    char *x = malloc(60 * CH);
    memset(x, 1, 60 * CH);
    free(x);
    unsigned char *z = calloc(1, 40 * CH);
    for (size_t k = 0; k < 40 * CH; k += 4096)
      if (z[k]) {
        fprintf(stderr, "regress: calloc returned non-zero memory while trimming\n");
        failures++;
        break;
      }
    free(z);
  }
  atomic_store(&stop, 1);
  pthread_join(t, NULL);
  pthread_join(r, NULL);
  prezero_reserve(0);
}

/* ---- 3: reserve over a run in many pieces */
static void reserve_over_fragments(void) {
  enum { N = 200 };
  static char *b[N];
  for (int i = 0; i < N; i++) {
    b[i] = malloc(CH);
    memset(b[i], 1, CH);
  }
  for (int i = 1; i < N; i += 2) free(b[i]);
  usleep(100000); /* workers turn some into READY: alternating states */
  for (int i = 0; i < N; i += 2) free(b[i]);
  if (prezero_reserve((size_t)N * CH) != 0) {
    fprintf(stderr, "regress: reserve over a fragmented run failed\n");
    failures++;
  }
  unsigned char *z = calloc(1, (size_t)N * CH);
  for (size_t k = 0; k < (size_t)N * CH; k += 4096)
    if (z[k]) {
      fprintf(stderr, "regress: calloc after reserve returned non-zero memory\n");
      failures++;
      break;
    }
  free(z);
  prezero_reserve(0);
}

/* ---- a library must not keep descriptors the program can see (python's
 * subprocess tests list a child's fds; daemons close them all) */
static int kept_fds(void) { /* descriptors on kernel files a library might open */
  int n = 0;
  char path[64], target[256];
  for (int fd = 0; fd < 1024; fd++) {
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(path, target, sizeof target - 1);
    if (len <= 0) continue;
    target[len] = 0;
    if (strstr(target, "/proc/") || strstr(target, "/sys/") || strstr(target, "userfaultfd")) {
      /* a worker reads /proc/meminfo or a cgroup file now and then (open,
       * read, close): only a descriptor that stays is kept */
      int stays = 1;
      for (int k = 0; k < 5 && stays; k++) {
        char again[256];
        usleep(20000);
        ssize_t l2 = readlink(path, again, sizeof again - 1);
        stays = l2 == len && !memcmp(again, target, (size_t)len);
      }
      if (!stays) continue;
      fprintf(stderr, "regress: fd %d open on %s\n", fd, target);
      n++;
    }
  }
  return n;
}

static void no_descriptors_kept(void) {
  struct prezero_stats st;
  prezero_stats_get(&st); /* PAGEMAP_SCAN, smaps_rollup */
  void *volatile p = calloc(1, 64 << 20);
  free(p);
  prezero_stats_get(&st);
  if (kept_fds() != 0) failures++;
}

int main(void) {
  no_descriptors_kept();
  remote_frees_do_not_leak(300000, 200000); /* medium blocks */
  remote_frees_do_not_leak(300000, 64);     /* small blocks */
  trim_races_allocations();
  reserve_over_fragments();
  printf("regress: %d failures\n", failures);
  return failures != 0;
}
