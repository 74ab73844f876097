/* Parallel population: fault a large range in with several threads, as the
 * kernel's multithreaded page initialisation (padata) and QEMU's guest RAM
 * preallocation do. The range is cut into 2 MiB-aligned pieces handed out
 * by an atomic cursor (dynamic load balancing: a slow helper takes fewer
 * pieces); helpers = min(the node's CPUs in our CPU set,
 * len / PREZERO_POPULATE_MIN, PREZERO_POPULATE_THREADS), the caller
 * included; helpers run pinned to the node that owns the memory.
 *
 * Populating never changes what memory holds: MADV_POPULATE_WRITE (or a
 * write of the byte already there) only faults pages in, so it may run
 * beside the program touching the same pages. Eager population waits for
 * its helpers; lazy population leaves them running detached (they never
 * keep the process alive) and returns at once. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include "pool/pool.h"

struct job {
  char *base;
  size_t len, piece;
  _Atomic size_t next;   /* offset of the next piece */
  _Atomic int failed;
  _Atomic int refs;      /* threads still using the job (lazy: the helpers free it) */
  unsigned node;
  bool meta;             /* lazy jobs live in metadata memory, recycled through a free list */
  struct job *free_next;
};

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct job *jobs_free;

/* Fault [p, p+n) in without changing a byte: MADV_POPULATE_WRITE, or an
 * atomic add of zero per page (a plain write of the byte read could undo
 * a write the program makes in between). */
static bool populate_keep(char *p, size_t n) {
  if (pz_kernel.populate_write) {
    int saved = errno;
    int r = pz_os.madvise(p, n, MADV_POPULATE_WRITE);
    int e = errno;
    errno = saved;
    if (r == 0) return true;
    if (e != EINVAL) return false; /* ENOMEM, EFAULT: the pages are not there */
  }
  for (size_t i = 0; i < n; i += PZ_PAGE_SIZE) __atomic_fetch_add(p + i, 0, __ATOMIC_RELAXED);
  return true;
}

static void work(struct job *j) {
  for (;;) {
    size_t off = atomic_fetch_add_explicit(&j->next, j->piece, memory_order_relaxed);
    if (off >= j->len || atomic_load_explicit(&j->failed, memory_order_relaxed)) return;
    size_t n = j->len - off < j->piece ? j->len - off : j->piece;
    if (!populate_keep(j->base + off, n)) atomic_store(&j->failed, 1);
  }
}

static void job_put(struct job *j) {
  if (atomic_fetch_sub(&j->refs, 1) != 1 || !j->meta) return;
  pthread_mutex_lock(&jobs_lock);
  j->free_next = jobs_free;
  jobs_free = j;
  pthread_mutex_unlock(&jobs_lock);
}

static void *helper(void *arg) {
  struct job *j = arg;
  if (pz_topo.nnodes > 1) pz_os_pin_node(j->node);
  work(j);
  job_put(j);
  return NULL;
}

/* Helpers for a range of `len` bytes on `node`, the caller included. */
static unsigned helpers_for(size_t len, unsigned node) {
  unsigned cpus = 0;
  for (unsigned w = 0; w < PZ_CPUSET_WORDS; w++)
    cpus += (unsigned)__builtin_popcountl(pz_topo.cpus[node][w] & pz_topo.allowed[w]);
  if (!cpus) cpus = pz_kernel.ncpus;
  size_t by_size = len / (size_t)pz_opt(PZ_OPT_POPULATE_MIN);
  unsigned n = by_size < cpus ? (unsigned)by_size : cpus;
  long long cap = pz_opt(PZ_OPT_POPULATE_THREADS);
  if (cap > 0 && n > (unsigned)cap) n = (unsigned)cap;
  return n ? n : 1;
}

static bool start(struct job *j, unsigned helpers, unsigned *started) {
  unsigned n = 0;
  for (unsigned i = 0; i < helpers; i++) {
    atomic_fetch_add(&j->refs, 1);
    if (pz_thread_spawn(helper, j, 64 * PZ_KiB) != 0) { /* EAGAIN: fewer helpers, same work */
      atomic_fetch_sub(&j->refs, 1);
      break;
    }
    n++;
  }
  *started = n;
  return n > 0;
}

bool pz_populate_parallel(void *p, size_t len, unsigned node, bool lazy) {
  if (!len) return true;
  unsigned helpers = helpers_for(len, node);
  if (helpers <= 1 && !lazy) return populate_keep(p, len);
  size_t piece = len / ((size_t)helpers * 8); /* several pieces per helper: balance */
  piece = piece < PZ_CHUNK_SIZE ? PZ_CHUNK_SIZE : pz_align_up(piece, PZ_CHUNK_SIZE);
  if (lazy) {
    pthread_mutex_lock(&jobs_lock);
    struct job *j = jobs_free;
    if (j) jobs_free = j->free_next;
    pthread_mutex_unlock(&jobs_lock);
    if (!j && !(j = pz_meta_alloc(sizeof *j))) return false;
    *j = (struct job){.base = p, .len = len, .piece = piece, .node = node, .meta = true};
    atomic_store(&j->refs, 1);
    unsigned n;
    start(j, helpers, &n);
    job_put(j); /* the helpers hold it now (or nobody: then it is free again) */
    return true;
  }
  struct job j = {.base = p, .len = len, .piece = piece, .node = node};
  atomic_store(&j.refs, 1);
  unsigned n;
  start(&j, helpers - 1, &n);
  work(&j); /* the caller is a helper too */
  while (atomic_load_explicit(&j.refs, memory_order_acquire) > 1) sched_yield(); /* helpers leave the job */
  return !atomic_load(&j.failed);
}
