/* NUMA placement and worker locality, run inside the emulated NUMA VM
 * (test/vm/run-vm.sh; meson test --suite vm). Linked against libprezero.
 *
 *   numa            every node: memory allocated by a thread pinned to node n
 *                   must be on node n, and the workers that zero what was
 *                   freed must be pinned to exactly one node's CPUs each
 *   numa --nodes0   run with PREZERO_NODES=0: every pool is node 0's, so a
 *                   thread pinned to node 1 must get memory on node 0 and
 *                   only node 0 gets a worker
 *
 * Exit 0 pass, 1 fail, 77 skip (one NUMA node: nothing to check).
 *
 * Each node's allocations are made by a thread of its own, started after the
 * pin and kept alive to the end: a thread heap keeps the chunks it took (on
 * the node it ran on then), and an exiting thread hands its heap to the next
 * new thread, so one thread migrating between nodes would see its small
 * blocks on the old node - correct behaviour, not what this test asks. The
 * large blocks are freed by the main thread, which is not pinned: the worker
 * it starts inherits every CPU and has to pin itself to its node.
 *
 * With one CPU per node the kernel's first-touch rule alone would put a
 * pinned thread's pages on its node; the binding (mbind) shows where it makes
 * the difference: a block allocated on node n but first touched from another
 * node's CPU must still be on node n (and in --nodes0 mode, memory of a thread
 * on node 1 is on node 0).
 *
 * Where a page is comes from libnuma: numa_move_pages(0, n, pages, NULL,
 * status, 0) with no target nodes moves nothing and fills status[] with each
 * page's node (or -errno: -ENOENT for a page not present). The test is
 * linked with libnuma.so.1 (the VM rig packs a program's ldd dependencies);
 * prezero itself never uses libnuma. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <numa.h>

#include "prezero.h"

#define MAX_NODES 64
#define PAGE 4096ul
#define LARGE_SIZE (16ul << 20) /* 8 chunks of 2 MiB from the node's pool */
#define NSMALL 1000
#define SMALL_SIZE 64
#define NMEDIUM 16
#define MEDIUM_SIZE (100ul << 10)
#define LARGE_STRIDE 64 /* sample every 64th 4 KiB page of the large block, plus the last */
#define CROSS_SIZE (8ul << 20) /* allocated on node n, first touched from another node */

static int failures;
static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("numa: FAIL: ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* whole small file into buf (NUL-terminated); -1 if unreadable */
static int read_text(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, cap - 1, f);
  fclose(f);
  buf[n] = 0;
  return (int)n;
}

/* "0-3,8,10-11" -> set */
static void parse_list(const char *s, cpu_set_t *set) {
  CPU_ZERO(set);
  while (*s >= '0' && *s <= '9') {
    char *e;
    unsigned long a = strtoul(s, &e, 10), b = a;
    s = e;
    if (*s == '-') b = strtoul(s + 1, &e, 10), s = e;
    for (unsigned long c = a; c <= b && c < CPU_SETSIZE; c++) CPU_SET(c, set);
    if (*s == ',') s++;
  }
}

static void format_set(const cpu_set_t *set, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = 0;
  for (int c = 0; c < CPU_SETSIZE && n + 8 < cap; c++) {
    if (!CPU_ISSET(c, set)) continue;
    int e = c;
    while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, set)) e++;
    n += (size_t)snprintf(buf + n, cap - n, n ? ",%d" : "%d", c);
    if (e > c) n += (size_t)snprintf(buf + n, cap - n, "-%d", e);
    c = e;
  }
}

static int nnodes;
static int node_id[MAX_NODES];      /* kernel node numbers that have CPUs */
static cpu_set_t node_cpus[MAX_NODES]; /* ... their CPUs, within our CPU set */
static cpu_set_t allowed;           /* the process's CPU set at start */
static int nodes0;                  /* --nodes0: every pool is node 0's */

/* Pages to look up, then checked in one numa_move_pages call. */
#define BATCH 512
struct batch {
  int n;
  void *pages[BATCH];
  const char *what[BATCH];
};

struct job {
  int idx, node, expect; /* our index, kernel node, node the memory must be on */
  unsigned cpu;          /* where the thread ran after the pin */
  char *large;
  char *cross; /* allocated here, not touched: the next node's CPU touches it first */
  char *small[NSMALL];
  char *medium[NMEDIUM];
  long sampled[4], wrong[4]; /* large, small, medium, cross */
  sem_t done, go;
};
static struct job jobs[MAX_NODES];

/* Every page of the batch must be on node j->expect. */
static void check_batch(struct job *j, int kind, struct batch *b) {
  int status[BATCH];
  if (b->n && numa_move_pages(0, (unsigned long)b->n, b->pages, NULL, status, 0) != 0) {
    fail("node %d: numa_move_pages(%d pages): %s", j->node, b->n, strerror(errno));
    for (int i = 0; i < b->n; i++) status[i] = -errno;
  }
  for (int i = 0; i < b->n; i++) {
    j->sampled[kind]++;
    if (status[i] != j->expect && j->wrong[kind]++ < 3) {
      if (status[i] < 0)
        fail("node %d: %s: page %p: numa_move_pages status %d (%s), expected node %d", j->node, b->what[i],
             b->pages[i], status[i], strerror(-status[i]), j->expect);
      else
        fail("node %d: %s: page %p is on node %d, expected node %d", j->node, b->what[i], b->pages[i], status[i],
             j->expect);
    }
  }
  b->n = 0;
}

static void check_page(struct job *j, int kind, struct batch *b, const char *what, const void *p) {
  if (b->n == BATCH) check_batch(j, kind, b);
  b->pages[b->n] = (void *)p;
  b->what[b->n++] = what;
}

static void *node_thread(void *arg) {
  struct job *j = arg;
  struct batch b = {0};
  if (sched_setaffinity(0, sizeof node_cpus[j->idx], &node_cpus[j->idx]) != 0) {
    fail("node %d: sched_setaffinity: %s", j->node, strerror(errno));
  } else {
    sched_yield();
    unsigned cpu = 0, node = 0;
    syscall(SYS_getcpu, &cpu, &node, NULL);
    j->cpu = cpu;
    if ((int)node != j->node) fail("node %d: pinned thread runs on cpu %u of node %u", j->node, cpu, node);
  }

  /* large: whole chunks from the pool of the thread's node */
  j->large = calloc(1, LARGE_SIZE);
  if (!j->large) {
    fail("node %d: calloc(%lu) failed", j->node, LARGE_SIZE);
  } else {
    for (size_t off = 0; off < LARGE_SIZE; off += PAGE) {
      if (j->large[off] || j->large[off + PAGE - 1]) {
        fail("node %d: calloc'd memory not zero at offset %zu", j->node, off);
        break;
      }
      j->large[off] = 1;
      j->large[off + PAGE - 1] = 1;
    }
    for (size_t pg = 0; pg < LARGE_SIZE / PAGE; pg += LARGE_STRIDE)
      check_page(j, 0, &b, "large calloc", j->large + pg * PAGE);
    check_page(j, 0, &b, "large calloc (last page)", j->large + LARGE_SIZE - 1);
    check_batch(j, 0, &b);
  }
  j->cross = malloc(CROSS_SIZE);
  if (!j->cross) fail("node %d: malloc(%lu) failed", j->node, CROSS_SIZE);
  /* small and medium blocks: pages of this thread's heap, chunks of the same pool */
  const char *lastpage = NULL;
  for (int i = 0; i < NSMALL; i++) {
    j->small[i] = malloc(SMALL_SIZE);
    if (!j->small[i]) {
      fail("node %d: malloc(%d) failed", j->node, SMALL_SIZE);
      break;
    }
    memset(j->small[i], 0x5a, SMALL_SIZE);
  }
  for (int i = 0; i < NSMALL && j->small[i]; i++) {
    const char *pg = (const char *)((uintptr_t)j->small[i] & ~(PAGE - 1));
    if (pg != lastpage) check_page(j, 1, &b, "malloc(64)", j->small[i]);
    lastpage = pg;
  }
  check_batch(j, 1, &b);
  for (int i = 0; i < NMEDIUM; i++) {
    j->medium[i] = malloc(MEDIUM_SIZE);
    if (!j->medium[i]) {
      fail("node %d: malloc(%lu) failed", j->node, MEDIUM_SIZE);
      break;
    }
    for (size_t off = 0; off < MEDIUM_SIZE; off += PAGE) j->medium[i][off] = 7;
    j->medium[i][MEDIUM_SIZE - 1] = 7;
    for (size_t off = 0; off < MEDIUM_SIZE; off += PAGE) check_page(j, 2, &b, "malloc(100K)", j->medium[i] + off);
    check_page(j, 2, &b, "malloc(100K) (last byte)", j->medium[i] + MEDIUM_SIZE - 1);
  }
  check_batch(j, 2, &b);
  printf("numa: node %d (cpu %u): large %lu MiB: %ld pages sampled, %ld off node %d; "
         "%d x %d B: %ld pages, %ld off; %d x 100 KiB: %ld pages, %ld off\n",
         j->node, j->cpu, LARGE_SIZE >> 20, j->sampled[0], j->wrong[0], j->expect, NSMALL, SMALL_SIZE,
         j->sampled[1], j->wrong[1], NMEDIUM, j->sampled[2], j->wrong[2]);
  sem_post(&j->done);
  sem_wait(&j->go); /* stay alive: an exiting thread's heap goes to the next new thread */
  for (int i = 0; i < NSMALL; i++) free(j->small[i]);
  for (int i = 0; i < NMEDIUM; i++) free(j->medium[i]);
  return NULL;
}

/* --------------------------------------------------------------- workers */

#define MAX_WORKERS 64
struct worker {
  pid_t tid;
  char cpus[256]; /* Cpus_allowed_list, as last read */
  int node_idx;   /* index whose CPU set it matches exactly, -1 none */
};
static struct worker workers[MAX_WORKERS];
static int nworkers;

static int match_node(const char *list) {
  cpu_set_t s;
  parse_list(list, &s);
  for (int k = 0; k < nnodes; k++)
    if (CPU_EQUAL(&s, &node_cpus[k])) return k;
  return -1;
}

/* one look at /proc/self/task: every "prezero-zero" thread and its CPU list */
static void scan_workers(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return;
  struct dirent *e;
  char path[320], buf[4096];
  while ((e = readdir(d))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    if (read_text(path, buf, sizeof buf) <= 0 || strncmp(buf, "prezero-zero", 12)) continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
    if (read_text(path, buf, sizeof buf) <= 0) continue;
    const char *c = strstr(buf, "Cpus_allowed_list:");
    if (!c) continue;
    c += strlen("Cpus_allowed_list:");
    while (*c == ' ' || *c == '\t') c++;
    pid_t tid = atoi(e->d_name);
    int w;
    for (w = 0; w < nworkers && workers[w].tid != tid; w++) {}
    if (w == nworkers) {
      if (nworkers == MAX_WORKERS) continue;
      nworkers++;
      workers[w].tid = tid;
    }
    size_t n = strcspn(c, "\n");
    if (n >= sizeof workers[w].cpus) n = sizeof workers[w].cpus - 1;
    memcpy(workers[w].cpus, c, n);
    workers[w].cpus[n] = 0;
    workers[w].node_idx = match_node(workers[w].cpus);
  }
  closedir(d);
}

static int expected_worker(int k) { return nodes0 ? k == 0 : 1; }

static int workers_settled(void) {
  for (int k = 0; k < nnodes; k++) {
    if (!expected_worker(k)) continue;
    int seen = 0;
    for (int w = 0; w < nworkers; w++) seen |= workers[w].node_idx == k;
    if (!seen) return 0;
  }
  for (int w = 0; w < nworkers; w++)
    if (workers[w].node_idx < 0) return 0; /* not pinned yet (or wrongly): look again */
  return 1;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  double t0 = now();
  if (argc > 1 && !strcmp(argv[1], "--nodes0")) {
    nodes0 = 1;
    const char *v = getenv("PREZERO_NODES");
    if (!v || strcmp(v, "0")) {
      printf("numa: --nodes0 needs PREZERO_NODES=0 in the environment\n");
      return 2;
    }
  } else if (argc > 1) {
    printf("usage: numa [--nodes0]\n");
    return 2;
  }
  /* prezero reads the process CPU set at init: make sure it ran (the
   * constructor does it; this is only a second trigger) before any pin */
  free(malloc(1));
  sched_getaffinity(0, sizeof allowed, &allowed);

  char buf[4096], path[96];
  if (read_text("/sys/devices/system/node/online", buf, sizeof buf) <= 0) {
    printf("numa: SKIP: no /sys/devices/system/node/online (kernel without NUMA)\n");
    return 77;
  }
  cpu_set_t online;
  parse_list(buf, &online);
  for (int k = 0; k < CPU_SETSIZE && nnodes < MAX_NODES; k++) {
    if (!CPU_ISSET(k, &online)) continue;
    snprintf(path, sizeof path, "/sys/devices/system/node/node%d/cpulist", k);
    if (read_text(path, buf, sizeof buf) <= 0) continue;
    cpu_set_t s;
    parse_list(buf, &s);
    CPU_AND(&s, &s, &allowed);
    if (CPU_COUNT(&s) == 0) {
      printf("numa: node %d has no CPU in our CPU set: not tested\n", k);
      continue;
    }
    node_id[nnodes] = k;
    node_cpus[nnodes] = s;
    nnodes++;
  }
  if (nnodes < 2) {
    printf("numa: SKIP: %d NUMA node(s) with CPUs we may use; the test needs 2 or more "
           "(run it in the VM: meson test --suite vm)\n",
           nnodes);
    return 77;
  }
  for (int k = 0; k < nnodes; k++) {
    format_set(&node_cpus[k], buf, sizeof buf);
    printf("numa: node %d: cpus %s\n", node_id[k], buf);
  }
  printf("numa: mode: %s\n", nodes0 ? "PREZERO_NODES=0: every thread uses node 0's pool" : "one pool per node");

  /* 1. placement: one thread per node, started in turn, all kept alive */
  pthread_t th[MAX_NODES];
  for (int k = 0; k < nnodes; k++) {
    struct job *j = &jobs[k];
    j->idx = k;
    j->node = node_id[k];
    j->expect = nodes0 ? node_id[0] : node_id[k];
    sem_init(&j->done, 0, 0);
    sem_init(&j->go, 0, 0);
    if (pthread_create(&th[k], NULL, node_thread, j) != 0) {
      fail("pthread_create failed");
      return 1;
    }
    sem_wait(&j->done);
  }
  /* the binding: the main thread touches node k's untouched block first, from node k+1 */
  for (int k = 0; k < nnodes; k++) {
    struct job *j = &jobs[k];
    int other = (k + 1) % nnodes;
    if (!j->cross) continue;
    if (sched_setaffinity(0, sizeof node_cpus[other], &node_cpus[other]) != 0) {
      fail("main: sched_setaffinity: %s", strerror(errno));
      break;
    }
    sched_yield();
    for (size_t off = 0; off < CROSS_SIZE; off += PAGE) j->cross[off] = 3;
    static struct batch b;
    for (size_t pg = 0; pg < CROSS_SIZE / PAGE; pg += LARGE_STRIDE / 2)
      check_page(j, 3, &b, "malloc(8M) touched first from another node", j->cross + pg * PAGE);
    check_page(j, 3, &b, "malloc(8M) touched first from another node (last page)", j->cross + CROSS_SIZE - 1);
    check_batch(j, 3, &b);
    printf("numa: node %d's thread: %lu MiB malloc, first touched from node %d: %ld pages sampled, %ld off node %d\n",
           j->node, CROSS_SIZE >> 20, node_id[other], j->sampled[3], j->wrong[3], j->expect);
  }
  sched_setaffinity(0, sizeof allowed, &allowed); /* unpinned again: the workers must pin themselves */
  long sampled = 0, wrong = 0;
  for (int k = 0; k < nnodes; k++)
    for (int i = 0; i < 4; i++) sampled += jobs[k].sampled[i], wrong += jobs[k].wrong[i];
  printf("numa: placement: %ld pages checked on %d nodes, %ld on the wrong node (%.2f s)\n", sampled, nnodes, wrong,
         now() - t0);

  /* 2. workers: free the large blocks from the unpinned main thread */
  struct prezero_stats s0, s1;
  prezero_stats_get(&s0);
  double t1 = now();
  for (int k = 0; k < nnodes; k++) {
    free(jobs[k].large);
    free(jobs[k].cross);
    jobs[k].large = jobs[k].cross = NULL;
  }
  double deadline = t1 + 3.0;
  do {
    scan_workers();
    if (workers_settled()) break;
    sleep_ms(10);
  } while (now() < deadline);
  double t_workers = now() - t1;
  /* a few more looks: a worker that pinned itself late shows its final set */
  for (int i = 0; i < 5; i++) {
    sleep_ms(10);
    scan_workers();
  }
  int per_node[MAX_NODES] = {0};
  for (int w = 0; w < nworkers; w++) {
    int k = workers[w].node_idx;
    if (k >= 0)
      printf("numa: worker tid %d: Cpus_allowed_list %s -> node %d\n", (int)workers[w].tid, workers[w].cpus,
             node_id[k]);
    else
      printf("numa: worker tid %d: Cpus_allowed_list %s -> no single node\n", (int)workers[w].tid, workers[w].cpus);
    if (k < 0) fail("worker tid %d is not pinned to exactly one node's CPUs (Cpus_allowed_list %s)",
                    (int)workers[w].tid, workers[w].cpus);
    else per_node[k]++;
  }
  for (int k = 0; k < nnodes; k++) {
    if (expected_worker(k) && !per_node[k])
      fail("no prezero-zero worker pinned to node %d within 3 s of freeing %lu MiB there", node_id[k],
           (LARGE_SIZE + CROSS_SIZE) >> 20);
    if (!expected_worker(k) && per_node[k])
      fail("%d worker(s) pinned to node %d, which PREZERO_NODES leaves out", per_node[k], node_id[k]);
  }
  printf("numa: workers: %d seen (%.2f s after the frees)\n", nworkers, t_workers);

  /* 3. the workers did the work: poll the counters (nice 19 under TCG is slow) */
  uint64_t before = s0.worker_zeroed_bytes + s0.worker_populated_bytes, after = before;
  do {
    prezero_stats_get(&s1);
    after = s1.worker_zeroed_bytes + s1.worker_populated_bytes;
    if (after > before) break;
    sleep_ms(20);
  } while (now() < t1 + 5.0);
  printf("numa: worker counters after %.2f s: zeroed %llu -> %llu KiB, populated %llu -> %llu KiB, "
         "workers now %llu\n",
         now() - t1, (unsigned long long)s0.worker_zeroed_bytes >> 10,
         (unsigned long long)s1.worker_zeroed_bytes >> 10, (unsigned long long)s0.worker_populated_bytes >> 10,
         (unsigned long long)s1.worker_populated_bytes >> 10, (unsigned long long)s1.workers);
  if (after <= before)
    fail("worker_zeroed_bytes / worker_populated_bytes did not grow within 5 s of freeing %d x %lu MiB", nnodes,
         (LARGE_SIZE + CROSS_SIZE) >> 20);

  for (int k = 0; k < nnodes; k++) sem_post(&jobs[k].go);
  for (int k = 0; k < nnodes; k++) pthread_join(th[k], NULL);
  printf("numa: %s: %d failure(s), %.2f s\n", failures ? "FAIL" : "PASS", failures, now() - t0);
  return failures ? 1 : 0;
}
