/*
 * urcu-ranges: the lookup the userfaultfd reader makes on every fault
 * (which registered range holds this address), done two ways, to decide
 * whether liburcu earns a place in the library (doc/design.md, "liburcu").
 *
 *   table: prezero's own (src/large/uffd.c): a fixed array of RANGES slots
 *          of atomics, scanned lock-free by readers; writers take a spin
 *          flag.  At most RANGES ranges.
 *   urcu:  a sorted array published through liburcu (urcu-memb flavour):
 *          readers binary-search it inside rcu_read_lock(); a writer copies
 *          it, adds the range, publishes the copy and waits a grace period
 *          (synchronize_rcu) before freeing the old one.  Unbounded.
 *
 * Readers look up random addresses, half inside a range; one writer
 * replaces a range every `period_us` (registrations come with the
 * program's mmaps: rare).  Output, per variant:
 *   <variant> ranges=N readers=R ns_per_lookup=X writes=W
 *
 *   ranges=N      ranges in the table            (default 256)
 *   readers=R     reader threads                 (default 1)
 *   seconds=S     run time per variant           (default 1)
 *   period_us=P   writer period                  (default 100)
 */
#define _GNU_SOURCE
#define _LGPL_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#define MAXR 4096
static unsigned nranges = 256, nreaders = 1, period_us = 100;
static double seconds = 1;
static atomic_bool stop;
static atomic_ulong lookups, writes;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}
static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}
/* range k: [k << 32, (k << 32) + 1 GiB) */
static uintptr_t addr_of(uint64_t r) { return ((r % nranges) << 32) + ((r >> 20) % (2u << 30)); }

/* ---- prezero's table */
static struct {
  _Atomic uintptr_t start, end;
  _Atomic unsigned node;
} slots[MAXR];
static atomic_flag lock = ATOMIC_FLAG_INIT;
static bool table_find(uintptr_t a, unsigned *node) {
  for (unsigned i = 0; i < nranges; i++) {
    uintptr_t e = atomic_load_explicit(&slots[i].end, memory_order_acquire);
    uintptr_t s = atomic_load_explicit(&slots[i].start, memory_order_relaxed);
    if (a >= s && a < e) {
      *node = atomic_load_explicit(&slots[i].node, memory_order_relaxed);
      return true;
    }
  }
  return false;
}
static void table_replace(unsigned k, unsigned node) {
  while (atomic_flag_test_and_set_explicit(&lock, memory_order_acquire)) sched_yield();
  atomic_store_explicit(&slots[k].end, 0, memory_order_relaxed);
  atomic_store_explicit(&slots[k].start, (uintptr_t)k << 32, memory_order_relaxed);
  atomic_store_explicit(&slots[k].node, node, memory_order_relaxed);
  atomic_store_explicit(&slots[k].end, ((uintptr_t)k << 32) + (1u << 30), memory_order_release);
  atomic_flag_clear_explicit(&lock, memory_order_release);
}

/* ---- liburcu */
struct rtab {
  unsigned n;
  struct { uintptr_t start, end; unsigned node; } r[];
};
static struct rtab *rt;
static bool urcu_find(uintptr_t a, unsigned *node) {
  bool found = false;
  urcu_memb_read_lock();
  struct rtab *t = rcu_dereference(rt);
  unsigned lo = 0, hi = t->n;
  while (lo < hi) {
    unsigned mid = (lo + hi) / 2;
    if (a < t->r[mid].start) hi = mid;
    else if (a >= t->r[mid].end) lo = mid + 1;
    else {
      *node = t->r[mid].node;
      found = true;
      break;
    }
  }
  urcu_memb_read_unlock();
  return found;
}
static struct rtab *rtab_new(unsigned n) { return malloc(sizeof(struct rtab) + n * sizeof(((struct rtab *)0)->r[0])); }
static void urcu_replace(unsigned k, unsigned node) {
  struct rtab *old = rt, *t = rtab_new(old->n);
  memcpy(t, old, sizeof(struct rtab) + old->n * sizeof(old->r[0]));
  t->r[k].node = node;
  rcu_assign_pointer(rt, t);
  urcu_memb_synchronize_rcu();
  free(old);
}

static int variant; /* 0 table, 1 urcu */
static void *reader(void *arg) {
  uint64_t s = 0x9e3779b97f4a7c15u ^ (uintptr_t)arg, n = 0;
  unsigned node, sum = 0;
  if (variant) urcu_memb_register_thread();
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    for (int i = 0; i < 256; i++) {
      uint64_t r = rnd(&s);
      uintptr_t a = r & 1 ? addr_of(r) : addr_of(r) + (3u << 30); /* half miss */
      if (variant ? urcu_find(a, &node) : table_find(a, &node)) sum += node;
    }
    n += 256;
  }
  if (variant) urcu_memb_unregister_thread();
  atomic_fetch_add(&lookups, n);
  return (void *)(uintptr_t)sum;
}
static void *writer(void *arg) {
  (void)arg;
  uint64_t s = 12345;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    unsigned k = (unsigned)(rnd(&s) % nranges), node = (unsigned)(rnd(&s) & 3);
    if (variant) urcu_replace(k, node);
    else table_replace(k, node);
    atomic_fetch_add(&writes, 1);
    usleep(period_us);
  }
  return NULL;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strncmp(argv[i], "ranges=", 7)) nranges = (unsigned)atoi(argv[i] + 7);
    else if (!strncmp(argv[i], "readers=", 8)) nreaders = (unsigned)atoi(argv[i] + 8);
    else if (!strncmp(argv[i], "seconds=", 8)) seconds = atof(argv[i] + 8);
    else if (!strncmp(argv[i], "period_us=", 10)) period_us = (unsigned)atoi(argv[i] + 10);
    else {
      fprintf(stderr, "usage: %s [ranges=N] [readers=R] [seconds=S] [period_us=P]\n", argv[0]);
      return 2;
    }
  }
  if (nranges < 1 || nranges > MAXR || nreaders < 1 || nreaders > 64) return 2;
  rt = rtab_new(nranges);
  rt->n = nranges;
  for (unsigned k = 0; k < nranges; k++) {
    table_replace(k, k & 3);
    rt->r[k].start = (uintptr_t)k << 32;
    rt->r[k].end = ((uintptr_t)k << 32) + (1u << 30);
    rt->r[k].node = k & 3;
  }
  for (variant = 0; variant < 2; variant++) {
    pthread_t t[65];
    atomic_store(&stop, false);
    atomic_store(&lookups, 0);
    atomic_store(&writes, 0);
    for (unsigned i = 0; i < nreaders; i++) pthread_create(&t[i], NULL, reader, (void *)(uintptr_t)(i + 1));
    pthread_create(&t[nreaders], NULL, writer, NULL);
    double t0 = now();
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&stop, true);
    for (unsigned i = 0; i <= nreaders; i++) pthread_join(t[i], NULL);
    double el = now() - t0;
    printf("%s ranges=%u readers=%u ns_per_lookup=%.1f writes=%lu\n", variant ? "urcu" : "table", nranges, nreaders,
           el * 1e9 * nreaders / (double)atomic_load(&lookups), atomic_load(&writes));
  }
  return 0;
}
