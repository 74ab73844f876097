/*
 * handoff: what does the node pool's mutex cost next to the work a chunk
 * hand-off carries?  A standalone micro-benchmark (no prezero internals).
 *
 *   (a) mutex    producers push a node (a freed chunk) on a list under one
 *                pthread mutex; one consumer (the worker) takes the whole
 *                list under the mutex; the consumer sleeps on a condvar
 *                and is signalled only when it sleeps (like np->work).
 *   (b) wfcq     the same with liburcu's cds_wfcq: producers
 *                cds_wfcq_enqueue, the consumer __cds_wfcq_splice_blocking;
 *                it sleeps on a futex, woken only by the producer that
 *                made the queue non-empty while it sleeps.
 *   (c) allocfree  lock, scan a 512-byte state array (best fit: every byte
 *                is read, as the pool's find_run does), mark, unlock; lock,
 *                mark free, unlock. 1 thread, then N threads on one lock;
 *                (c0) is the same work without the lock (1 thread).
 *   (d) memset of a resident 2 MiB buffer, and a fresh 2 MiB (mmap, one
 *                byte per 4 KiB page, munmap): the work per hand-off.
 *
 * Each case runs ~0.3 s, 3 times; the median is printed.  wall ns/op is
 * elapsed time / all operations (inverse throughput); cpu ns/op is process
 * CPU time (all threads, consumer included) / operations, the cost the
 * machine pays per operation.  ratio = cpu ns/op / (1-thread memset 2 MiB).
 *
 *   bench-handoff [secs]            the table above
 *   bench-handoff --real [secs] [NM]  malloc(S) + write 1 byte + free(S) for
 *                                   S = 2, 4, 64 MiB (or just N MiB) at 1 and
 *                                   2 threads;
 *                                   run with LD_PRELOAD=build/src/libprezero.so
 */
#define _GNU_SOURCE 1
#define _LGPL_SOURCE 1

#include <inttypes.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* liburcu's blocking dequeue/splice spins 10 times, then sleeps 10 ms when
 * a producer has swapped the tail but not yet linked its node.  Count those
 * sleeps; case (b2) replaces the sleep with sched_yield(). */
static atomic_ulong wfcq_sleeps;
static int wfcq_yield;
#define CDS_WFCQ_WAIT_SLEEP(msec)                                      \
  do {                                                                 \
    atomic_fetch_add_explicit(&wfcq_sleeps, 1, memory_order_relaxed); \
    if (wfcq_yield) sched_yield();                                     \
    else (void)poll(NULL, 0, (msec));                                  \
  } while (0)
#include <urcu/wfcqueue.h>

#define REPS 3
#define MAXT 8
#define RING (1u << 16) /* nodes per producer; a node still queued is not reused */
#define STATES 512

static double run_secs = 0.3;

static double now_s(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0) {}
}

static long futex(atomic_int *a, int op, int val) { return syscall(SYS_futex, a, op, val, NULL, NULL, 0); }

struct node {
  struct node *next;           /* (a) list link */
  struct cds_wfcq_node qnode;  /* (b) queue link */
  atomic_int queued;           /* 1 from push until the consumer is done with it */
  uint64_t payload;
};

struct result {
  double wall_ns, cpu_ns, thr_ns, extra; /* thr: CPU of the measured (producer) threads only */
};

/* --------------------------------------------------------------- shared */

static pthread_barrier_t start_bar;
static atomic_int stop;
static atomic_int consumer_exit;
static uint64_t ops[MAXT * 16];   /* padded: ops[t * 16] */
static double tcpu[MAXT * 16];    /* thread CPU seconds while measured */
static atomic_ulong stalls;       /* producer found its next node still queued */
static struct node *rings[MAXT];

/* (a) mutex + condvar */
static pthread_mutex_t m_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t m_work = PTHREAD_COND_INITIALIZER;
static struct node *m_list;
static bool m_sleeping;
static uint64_t m_wakes;

/* (b) wfcq + futex */
static struct __cds_wfcq_head q_head;
static struct cds_wfcq_tail q_tail;
static atomic_int q_sleeping;
static atomic_ulong q_wakes;

static uint64_t consumed_sum;

static void consume(struct node *n) {
  consumed_sum += n->payload;
  atomic_store_explicit(&n->queued, 0, memory_order_release);
}

static struct node *next_node(int t, uint64_t i) {
  struct node *n = &rings[t][i % RING];
  if (atomic_load_explicit(&n->queued, memory_order_acquire)) {
    atomic_fetch_add_explicit(&stalls, 1, memory_order_relaxed);
    while (atomic_load_explicit(&n->queued, memory_order_acquire)) sched_yield();
  }
  n->payload = i;
  atomic_store_explicit(&n->queued, 1, memory_order_relaxed);
  return n;
}

static void *mutex_producer(void *arg) {
  int t = (int)(intptr_t)arg;
  uint64_t i = 0;
  pthread_barrier_wait(&start_bar);
  double c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    struct node *n = next_node(t, i);
    pthread_mutex_lock(&m_lock);
    n->next = m_list;
    m_list = n;
    if (m_sleeping) { /* once signalled it is no longer asleep: one wake per sleep */
      m_sleeping = false;
      m_wakes++;
      pthread_cond_signal(&m_work);
    }
    pthread_mutex_unlock(&m_lock);
    i++;
  }
  tcpu[t * 16] = now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
  ops[t * 16] = i;
  return NULL;
}

static void *mutex_consumer(void *arg) {
  (void)arg;
  pthread_barrier_wait(&start_bar);
  for (;;) {
    pthread_mutex_lock(&m_lock);
    while (!m_list && !atomic_load(&consumer_exit)) {
      m_sleeping = true;
      pthread_cond_wait(&m_work, &m_lock);
    }
    m_sleeping = false;
    struct node *l = m_list;
    m_list = NULL;
    pthread_mutex_unlock(&m_lock);
    if (!l && atomic_load(&consumer_exit)) return NULL;
    while (l) {
      struct node *nx = l->next;
      consume(l);
      l = nx;
    }
  }
}

static void *wfcq_producer(void *arg) {
  int t = (int)(intptr_t)arg;
  uint64_t i = 0;
  pthread_barrier_wait(&start_bar);
  double c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    struct node *n = next_node(t, i);
    cds_wfcq_node_init(&n->qnode);
    /* enqueue is an xchg (full barrier); only the producer that made the
     * queue non-empty can owe the consumer a wake-up */
    if (!cds_wfcq_enqueue(&q_head, &q_tail, &n->qnode)) {
      atomic_thread_fence(memory_order_seq_cst);
      if (atomic_load_explicit(&q_sleeping, memory_order_relaxed) &&
          atomic_exchange(&q_sleeping, 0)) {
        atomic_fetch_add_explicit(&q_wakes, 1, memory_order_relaxed);
        futex(&q_sleeping, FUTEX_WAKE_PRIVATE, 1);
      }
    }
    i++;
  }
  tcpu[t * 16] = now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
  ops[t * 16] = i;
  return NULL;
}

static void *wfcq_consumer(void *arg) {
  (void)arg;
  struct __cds_wfcq_head lh;
  struct cds_wfcq_tail lt;
  pthread_barrier_wait(&start_bar);
  for (;;) {
    __cds_wfcq_init(&lh, &lt);
    if (__cds_wfcq_splice_blocking(&lh, &lt, &q_head, &q_tail) == CDS_WFCQ_RET_SRC_EMPTY) {
      if (atomic_load(&consumer_exit)) return NULL;
      atomic_store(&q_sleeping, 1); /* seq_cst: Dekker with the producer's fence */
      if (cds_wfcq_empty(&q_head, &q_tail) && !atomic_load(&consumer_exit))
        while (atomic_load(&q_sleeping)) futex(&q_sleeping, FUTEX_WAIT_PRIVATE, 1);
      atomic_store(&q_sleeping, 0);
      continue;
    }
    struct cds_wfcq_node *qn, *nx;
    __cds_wfcq_for_each_blocking_safe(&lh, &lt, qn, nx) consume(caa_container_of(qn, struct node, qnode));
  }
}

/* ------------------------------------------------------------ alloc/free */

static pthread_mutex_t a_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t a_state[STATES]; /* 0 used, 1 dirty, 2 ready: like the pool */
static int a_nolock;            /* control (1 thread only): the same work without the lock */

static void *allocfree_thread(void *arg) {
  int t = (int)(intptr_t)arg;
  uint64_t i = 0;
  pthread_barrier_wait(&start_bar);
  double c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    if (a_nolock) {
      int best = -1, best_s = 0;
      for (int k = 0; k < STATES; k++)
        if (a_state[k] > best_s) best_s = a_state[k], best = k;
      if (best >= 0) a_state[best] = 0;
      __asm__ volatile("" ::: "memory");
      if (best >= 0) a_state[best] = (uint8_t)(1 + (i & 1));
      __asm__ volatile("" ::: "memory");
      i++;
      continue;
    }
    pthread_mutex_lock(&a_lock);
    int best = -1, best_s = 0;
    for (int k = 0; k < STATES; k++) /* best fit: reads every byte */
      if (a_state[k] > best_s) best_s = a_state[k], best = k;
    if (best >= 0) a_state[best] = 0;
    pthread_mutex_unlock(&a_lock);
    if (best >= 0) {
      pthread_mutex_lock(&a_lock);
      a_state[best] = (uint8_t)(1 + (i & 1));
      pthread_mutex_unlock(&a_lock);
    }
    i++;
  }
  tcpu[t * 16] = now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
  ops[t * 16] = i;
  return NULL;
}

/* ---------------------------------------------------------------- (d) */

#define TWO_MIB (2u << 20)

static void *memset_thread(void *arg) {
  int t = (int)(intptr_t)arg;
  uint64_t i = 0;
  char *buf = mmap(NULL, TWO_MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) abort();
  memset(buf, 1, TWO_MIB); /* resident */
  pthread_barrier_wait(&start_bar);
  double c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    memset(buf, 0, TWO_MIB);
    __asm__ volatile("" ::"r"(buf) : "memory");
    i++;
  }
  munmap(buf, TWO_MIB);
  tcpu[t * 16] = now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
  ops[t * 16] = i;
  return NULL;
}

static void *touch_thread(void *arg) {
  int t = (int)(intptr_t)arg;
  uint64_t i = 0;
  pthread_barrier_wait(&start_bar);
  double c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    char *p = mmap(NULL, TWO_MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    for (size_t off = 0; off < TWO_MIB; off += 4096) p[off] = 1;
    munmap(p, TWO_MIB);
    i++;
  }
  tcpu[t * 16] = now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
  ops[t * 16] = i;
  return NULL;
}

/* ------------------------------------------------------------ --real */

static size_t real_size;

static void *real_thread(void *arg) {
  int t = (int)(intptr_t)arg;
  uint64_t i = 0;
  pthread_barrier_wait(&start_bar);
  double c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    volatile char *p = malloc(real_size);
    if (!p) abort();
    p[(i * 4096) % real_size] = 1;
    free((void *)p);
    i++;
  }
  tcpu[t * 16] = now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
  ops[t * 16] = i;
  return NULL;
}

/* ------------------------------------------------------------- driver */

enum kind { K_MUTEX, K_WFCQ, K_WFCQ_YIELD, K_ALLOCFREE, K_SCAN_NOLOCK, K_MEMSET, K_TOUCH, K_REAL };

static struct result run_once(enum kind k, int nthr) {
  void *(*fn)(void *) = NULL, *(*cons)(void *) = NULL;
  switch (k) {
  case K_MUTEX: fn = mutex_producer, cons = mutex_consumer; break;
  case K_WFCQ:
  case K_WFCQ_YIELD: fn = wfcq_producer, cons = wfcq_consumer; break;
  case K_ALLOCFREE:
  case K_SCAN_NOLOCK: fn = allocfree_thread; break;
  case K_MEMSET: fn = memset_thread; break;
  case K_TOUCH: fn = touch_thread; break;
  case K_REAL: fn = real_thread; break;
  }
  atomic_store(&stop, 0);
  atomic_store(&consumer_exit, 0);
  m_list = NULL, m_sleeping = false, m_wakes = 0;
  __cds_wfcq_init(&q_head, &q_tail);
  atomic_store(&q_sleeping, 0);
  atomic_store(&q_wakes, 0);
  atomic_store(&wfcq_sleeps, 0);
  atomic_store(&stalls, 0);
  wfcq_yield = k == K_WFCQ_YIELD;
  a_nolock = k == K_SCAN_NOLOCK;
  for (int k2 = 0; k2 < STATES; k2++) a_state[k2] = (uint8_t)(k2 % 3 == 0 ? 0 : 1 + (k2 & 1));
  if (cons)
    for (int t = 0; t < nthr; t++) memset(rings[t], 0, RING * sizeof(struct node));

  pthread_t th[MAXT + 1];
  int n = nthr + (cons != NULL);
  pthread_barrier_init(&start_bar, NULL, (unsigned)n + 1);
  for (int t = 0; t < nthr; t++) pthread_create(&th[t], NULL, fn, (void *)(intptr_t)t);
  if (cons) pthread_create(&th[nthr], NULL, cons, NULL);
  pthread_barrier_wait(&start_bar);
  double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
  sleep_s(run_secs);
  atomic_store(&stop, 1);
  for (int t = 0; t < nthr; t++) pthread_join(th[t], NULL);
  double w1 = now_s(CLOCK_MONOTONIC), c1 = now_s(CLOCK_PROCESS_CPUTIME_ID);
  if (cons) {
    atomic_store(&consumer_exit, 1);
    pthread_mutex_lock(&m_lock);
    pthread_cond_signal(&m_work);
    pthread_mutex_unlock(&m_lock);
    atomic_store(&q_sleeping, 0);
    futex(&q_sleeping, FUTEX_WAKE_PRIVATE, 1);
    pthread_join(th[nthr], NULL);
  }
  pthread_barrier_destroy(&start_bar);
  uint64_t total = 0;
  double thr = 0;
  for (int t = 0; t < nthr; t++) total += ops[t * 16], thr += tcpu[t * 16];
  struct result r = {(w1 - w0) * 1e9 / (double)total, (c1 - c0) * 1e9 / (double)total,
                     thr * 1e9 / (double)total, 0};
  if (k == K_MUTEX) r.extra = (double)m_wakes / (double)total;
  if (k == K_WFCQ || k == K_WFCQ_YIELD) r.extra = (double)atomic_load(&q_wakes) / (double)total;
  return r;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* median of each column separately; sleeps/stall counts summed over the runs */
static struct result run_median(enum kind k, int nthr, unsigned long *sleeps, unsigned long *stall) {
  double w[REPS], c[REPS], h[REPS], e[REPS];
  unsigned long s = 0, st = 0;
  for (int i = 0; i < REPS; i++) {
    struct result r = run_once(k, nthr);
    w[i] = r.wall_ns, c[i] = r.cpu_ns, h[i] = r.thr_ns, e[i] = r.extra;
    s += atomic_load(&wfcq_sleeps);
    st += atomic_load(&stalls);
  }
  qsort(w, REPS, sizeof w[0], cmp_d);
  qsort(c, REPS, sizeof c[0], cmp_d);
  qsort(h, REPS, sizeof h[0], cmp_d);
  qsort(e, REPS, sizeof e[0], cmp_d);
  if (sleeps) *sleeps = s;
  if (stall) *stall = st;
  return (struct result){w[REPS / 2], c[REPS / 2], h[REPS / 2], e[REPS / 2]};
}

static const int thread_counts[] = {1, 2, 4, 8};

int main(int argc, char **argv) {
  bool real = false;
  size_t only_mib = 0;
  for (int i = 1; i < argc; i++) {
    size_t len = strlen(argv[i]);
    if (!strcmp(argv[i], "--real")) real = true;
    else if (len > 1 && argv[i][len - 1] == 'M' && atoi(argv[i]) > 0) only_mib = (size_t)atoi(argv[i]);
    else if (atof(argv[i]) > 0) run_secs = atof(argv[i]);
    else {
      fprintf(stderr, "usage: %s [--real] [secs] [NM]\n", argv[0]);
      return 64;
    }
  }
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

  if (real) {
    const char *pre = getenv("LD_PRELOAD");
    printf("# --real: malloc(S) + write 1 byte + free, %.2f s x %d, median; %ld online CPUs; LD_PRELOAD=%s\n",
           run_secs, REPS, ncpu, pre ? pre : "(none)");
    printf("%-10s %7s %12s %12s %12s\n", "size", "threads", "wall ns/op", "cpu ns/op", "thr ns/op");
    static const size_t sizes[] = {2u << 20, 4u << 20, 64u << 20};
    for (size_t s = 0; s < 3; s++)
      for (int nthr = 1; nthr <= 2; nthr++) {
        real_size = only_mib ? only_mib << 20 : sizes[s];
        if (only_mib && s) break;
        struct result r = run_median(K_REAL, nthr, NULL, NULL);
        printf("%4zu MiB   %7d %12.0f %12.0f %12.0f\n", real_size >> 20, nthr, r.wall_ns, r.cpu_ns, r.thr_ns);
        fflush(stdout);
      }
    return 0;
  }

  for (int t = 0; t < MAXT; t++)
    if (posix_memalign((void **)&rings[t], 64, RING * sizeof(struct node))) abort();

  printf("# handoff: %.2f s x %d, median; %ld online CPUs (threads > CPUs are oversubscribed)\n",
         run_secs, REPS, ncpu);
  printf("# wall = elapsed/ops; cpu = process CPU (consumer included)/ops; thr = CPU of the\n"
         "# 'threads' program threads only/ops (hand-off: producer side); ratio = cpu / memset\n"
         "# hand-off rows: 'threads' producers + 1 consumer; wakes = consumer wake-ups per op;\n"
         "# stalls = producer found its node (ring of %u) still queued; 10ms = wfcq consumer sleeps\n",
         RING);
  struct result ms1 = run_median(K_MEMSET, 1, NULL, NULL);
  printf("%-22s %7s %11s %11s %11s %9s %7s %7s %5s\n", "operation", "threads", "wall ns/op", "cpu ns/op",
         "thr ns/op", "ratio", "wakes", "stalls", "10ms");
  static const struct {
    enum kind k;
    const char *name;
  } cases[] = {
      {K_MUTEX, "(a) mutex+condvar"},
      {K_WFCQ, "(b) wfcq+futex"},
      {K_WFCQ_YIELD, "(b2) wfcq, yield"},
      {K_ALLOCFREE, "(c) lock alloc+free"},
      {K_SCAN_NOLOCK, "(c0) same, no lock"},
      {K_MEMSET, "(d) memset 2MiB"},
      {K_TOUCH, "(d) fresh 2MiB touch"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    for (size_t ti = 0; ti < sizeof thread_counts / sizeof thread_counts[0]; ti++) {
      int nthr = thread_counts[ti];
      if (cases[c].k == K_SCAN_NOLOCK && nthr > 1) break;
      unsigned long sleeps = 0, st = 0;
      struct result r = run_median(cases[c].k, nthr, &sleeps, &st);
      printf("%-22s %7d %11.1f %11.1f %11.1f %9.5f", cases[c].name, nthr, r.wall_ns, r.cpu_ns, r.thr_ns,
             r.cpu_ns / ms1.cpu_ns);
      if (cases[c].k <= K_WFCQ_YIELD) printf(" %7.4f %7lu %5lu", r.extra, st, sleeps);
      printf("\n");
      fflush(stdout);
    }
  printf("# ratio denominator: 1-thread memset 2 MiB = %.0f ns (cpu)\n", ms1.cpu_ns);
  if (consumed_sum == 1) printf("#\n"); /* keep the consumers' work */
  return 0;
}
