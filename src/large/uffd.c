/* The userfaultfd service: first touches of served mappings answered with
 * ready huge pages from the pool.
 *
 * What is served: a private anonymous range the kernel itself would back
 * with huge pages (mmap.c decides: THP "always" and a plain mapping, or the
 * program's MADV_HUGEPAGE), registered in missing mode as a whole. When the program first writes to a 2 MiB block of it, the
 * kernel stops the writing thread and tells our reader thread, which moves
 * a ready chunk (resident, zero, one huge page) from the pool into that
 * block with UFFDIO_MOVE (Linux 6.8): ~7 us, against a kernel huge-page
 * fault that zeroes 2 MiB on the touching thread. That is what the kernel
 * would have put there (a huge page, on the first write), only zeroed
 * ahead of time; nothing else changes:
 *   - a read fault maps the zero page over the block (UFFDIO_ZEROPAGE), as
 *     the kernel maps its huge zero page: no memory;
 *   - nothing is moved in ahead of a touch: a page the program never
 *     touched is not present (mincore, RSS, the program's own userfaultfd);
 *   - with nothing ready, zeros are copied in (4 KiB pages, the same RSS
 *     as the huge page the kernel would have faulted); where a block is
 *     partly present, or the mapping changed, the one faulting page is
 *     answered as the kernel would (zero page for a read, a zero page
 *     copied in for a write);
 *   - PR_SET_THP_DISABLE, MADV_NOHUGEPAGE, mlockall and the program's own
 *     UFFDIO_REGISTER unregister what they touch (mmap.c), so from then on
 *     the kernel answers those faults itself.
 *
 * Two threads, with a descriptor table of their own (unshare(CLONE_FILES)
 * right after they start, every inherited descriptor closed): the program
 * never sees our userfaultfd, cannot close it, and a number it reuses is
 * never touched by us. fork() children inherit nothing of it (the kernel
 * drops our registrations in the child: no UFFD_FEATURE_EVENT_FORK).
 *   reader     reads fault messages and answers them;
 *   registrar  registers and unregisters ranges (and fills MAP_POPULATE
 *              mappings) for the program's threads, one request at a time.
 * Neither ever waits for anything a faulting thread may hold: pool locks
 * are only tried (pz_chunk_lend_ready, pz_chunk_lend_one_done); a chunk
 * whose lend cannot be completed yet is kept and completed later. The
 * program's threads never wait for a request while they hold one (a
 * signal handler inside a request gets "not served"). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "large/large.h"
#include "../os/kabi.h"

enum { SVC_NONE, SVC_STARTING, SVC_RUNNING, SVC_UNUSABLE };
static _Atomic uint32_t svc;  /* a futex word */
static pid_t owner_pid;        /* the process the service may run in (not a vfork child) */
static int uffd = -1;          /* in the service threads' own descriptor table only */

static long futex(_Atomic uint32_t *w, int op, uint32_t val, const struct timespec *ts) {
  return syscall(SYS_futex, w, op, val, ts, NULL, 0);
}
static void wake_all(_Atomic uint32_t *w) { futex(w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL); }
static int uioctl(unsigned long request, void *arg) { return pz_os_ioctl(uffd, request, arg); }

/* ---------------------------------------------------------------- ranges */

/* What is registered, with the node whose pool serves it (the caller's).
 * Written by the service threads under table_lock; read without it. A
 * range the program unmapped stays until it is unregistered or its slot is
 * needed (harmless meanwhile: no fault comes from it; unregistering it
 * again is a no-op). */
#define RANGES 256
static struct {
  _Atomic uintptr_t start, end; /* end 0: free slot */
  _Atomic unsigned node;
} ranges[RANGES];
static _Atomic unsigned nlive; /* slots in use: the program's calls skip us when 0 */
static atomic_flag table_lock = ATOMIC_FLAG_INIT;

static void table_lock_take(void) {
  while (atomic_flag_test_and_set_explicit(&table_lock, memory_order_acquire)) sched_yield();
}
static void table_lock_drop(void) { atomic_flag_clear_explicit(&table_lock, memory_order_release); }

static void slot_clear(unsigned i) {
  if (atomic_exchange_explicit(&ranges[i].end, 0, memory_order_relaxed)) atomic_fetch_sub(&nlive, 1);
}

/* A slot for [a, b); false when every slot holds a range still mapped (the
 * caller then does not serve it: every registration of ours must stay
 * known, or the program's own UFFDIO_REGISTER there would fail). */
static bool table_add(uintptr_t a, uintptr_t b, unsigned node) {
  table_lock_take();
  unsigned slot = RANGES;
  for (int pass = 0; pass < 2 && slot == RANGES; pass++)
    for (unsigned i = 0; i < RANGES; i++) {
      uintptr_t s = atomic_load_explicit(&ranges[i].start, memory_order_relaxed);
      uintptr_t e = atomic_load_explicit(&ranges[i].end, memory_order_relaxed);
      unsigned char v;
      if (e && s >= a && e <= b) slot_clear(i); /* registered again, whole */
      /* full: forget ranges the program unmapped (their registration went with them) */
      else if (e && pass && mincore((void *)s, PZ_PAGE_SIZE, &v) != 0 && errno == ENOMEM) slot_clear(i);
      if (!atomic_load_explicit(&ranges[i].end, memory_order_relaxed) && slot == RANGES) slot = i;
    }
  if (slot < RANGES) {
    atomic_store_explicit(&ranges[slot].start, a, memory_order_relaxed);
    atomic_store_explicit(&ranges[slot].node, node, memory_order_relaxed);
    atomic_store_explicit(&ranges[slot].end, b, memory_order_release);
    atomic_fetch_add(&nlive, 1);
  }
  table_lock_drop();
  return slot < RANGES;
}

/* The registered range holding a (false: none known). */
static bool range_of(uintptr_t a, uintptr_t *start, uintptr_t *end, unsigned *node) {
  for (unsigned i = 0; i < RANGES; i++) {
    uintptr_t e = atomic_load_explicit(&ranges[i].end, memory_order_acquire);
    uintptr_t s = atomic_load_explicit(&ranges[i].start, memory_order_relaxed);
    if (a >= s && a < e) {
      *start = s;
      *end = e;
      *node = atomic_load_explicit(&ranges[i].node, memory_order_relaxed) % pz_topo.nnodes;
      return true;
    }
  }
  return false;
}

/* Unregister what we registered of [a, b) (a service thread). Ranges wholly
 * inside it are forgotten; one that overlaps its edge keeps its entry (the
 * part left is still ours; the part gone sends no faults). */
static void unregister_range(uintptr_t a, uintptr_t b) {
  table_lock_take();
  for (unsigned i = 0; i < RANGES; i++) {
    uintptr_t s = atomic_load_explicit(&ranges[i].start, memory_order_relaxed);
    uintptr_t e = atomic_load_explicit(&ranges[i].end, memory_order_relaxed);
    if (!e || e <= a || s >= b) continue;
    uintptr_t lo = s > a ? s : a, hi = e < b ? e : b;
    struct uffdio_range r = {lo, hi - lo};
    uioctl(UFFDIO_UNREGISTER, &r); /* wakes threads waiting there: they fault again, to the kernel */
    if (s >= a && e <= b) slot_clear(i);
  }
  table_lock_drop();
}

/* ---------------------------------------------------------------- lends */

/* Chunks moved (or not) whose lend could not be completed yet: the pool
 * lock was busy. Completed on the thread's next round. */
#define PENDING 32
struct pending {
  struct {
    void *chunk;
    size_t moved;
    bool stale;
  } e[PENDING];
  unsigned n;
};

static void lend_done(struct pending *pd, void *chunk, size_t moved, bool stale) {
  if (pz_chunk_lend_one_done(chunk, moved, stale)) return;
  pd->e[pd->n].chunk = chunk;
  pd->e[pd->n].moved = moved;
  pd->e[pd->n].stale = stale;
  pd->n++;
}

static void pending_flush(struct pending *pd) {
  unsigned k = 0;
  for (unsigned i = 0; i < pd->n; i++)
    if (!pz_chunk_lend_one_done(pd->e[i].chunk, pd->e[i].moved, pd->e[i].stale)) pd->e[k++] = pd->e[i];
  pd->n = k;
}

/* A ready chunk of node's pool, held for a move (NULL: none, or the pool
 * lock is busy, or too many lends wait for completion). */
static void *take_ready(struct pending *pd, unsigned node) {
  void *c;
  if (pd->n == PENDING) pending_flush(pd);
  return pd->n < PENDING && pz_chunk_lend_ready(node, &c, 1) ? c : NULL;
}

/* UFFDIO_MOVE of one chunk to dst; returns the bytes moved. *stale: its
 * pages are shared with a forked child (or were since: EBUSY until written). */
static size_t move_chunk(void *src, uintptr_t dst, bool *stale) {
  int e = 0;
  *stale = false;
  struct uffdio_move mv = {.dst = dst, .src = (uintptr_t)src, .len = PZ_CHUNK_SIZE, .mode = 0};
  if (pz_fault_hit(PZ_FAULT_MOVE, &e)) mv.move = -e;
  else if (uioctl(UFFDIO_MOVE, &mv) == 0) return PZ_CHUNK_SIZE;
  else e = errno;
  *stale = e == EBUSY && mv.move <= 0;
  return mv.move > 0 ? (size_t)mv.move : 0;
}

/* Move a ready chunk of node's pool to the block at dst. */
static bool move_ready(struct pending *pd, unsigned node, uintptr_t dst) {
  void *c = take_ready(pd, node);
  if (!c) return false;
  bool stale;
  size_t moved = move_chunk(c, dst, &stale);
  lend_done(pd, c, moved, stale);
  if (moved) atomic_fetch_add_explicit(&pz_gstats.uffd_moved_bytes, moved, memory_order_relaxed);
  return moved == PZ_CHUNK_SIZE;
}

/* ---------------------------------------------------------------- faults */

static const char zero_page[PZ_PAGE_SIZE] __attribute__((aligned(PZ_PAGE_SIZE)));
static void *zeros = MAP_FAILED; /* 2 MiB read-only, never written: the kernel's zero page */

/* The kernel's answer for one 4 KiB page: zero page for a read, a fresh
 * zero page for a write. Woken either way. */
static void fill_page(uintptr_t page, bool write) {
  int r;
  if (write) {
    struct uffdio_copy c = {.dst = page, .src = (uintptr_t)zero_page, .len = PZ_PAGE_SIZE, .mode = 0};
    r = uioctl(UFFDIO_COPY, &c);
  } else {
    struct uffdio_zeropage z = {.range = {page, PZ_PAGE_SIZE}, .mode = 0};
    r = uioctl(UFFDIO_ZEROPAGE, &z);
  }
  if (r == 0) {
    atomic_fetch_add_explicit(&pz_gstats.uffd_fallbacks, 1, memory_order_relaxed);
    return;
  }
  /* EEXIST: there already (a second fault on the block, answered by the
   * first); ENOENT: unmapped meanwhile. Wake the thread: it retries. */
  struct uffdio_range w = {page, PZ_PAGE_SIZE};
  uioctl(UFFDIO_WAKE, &w);
}

/* A read of an untouched block: the zero page over all of it, as the
 * kernel maps its huge zero page there (no memory). */
static bool zero_block(uintptr_t dst) {
  struct uffdio_zeropage z = {.range = {dst, PZ_CHUNK_SIZE}, .mode = 0};
  if (uioctl(UFFDIO_ZEROPAGE, &z) != 0) return false;
  atomic_fetch_add_explicit(&pz_gstats.uffd_fallbacks, 1, memory_order_relaxed);
  return true;
}

/* A write with nothing ready: zeros copied in (fresh 4 KiB pages: the RSS
 * of the huge page the kernel would have faulted, without a huge-page
 * fault on the writer's behalf, which costs more than 4 KiB ones in a VM
 * whose host took the memory back). */
static bool copy_zeros(uintptr_t dst) {
  if (zeros == MAP_FAILED) return false;
  struct uffdio_copy c = {.dst = dst, .src = (uintptr_t)zeros, .len = PZ_CHUNK_SIZE, .mode = 0};
  if (uioctl(UFFDIO_COPY, &c) != 0 && c.copy != (long long)PZ_CHUNK_SIZE) return false;
  atomic_fetch_add_explicit(&pz_gstats.uffd_copied_bytes, PZ_CHUNK_SIZE, memory_order_relaxed);
  return true;
}

static void unregister_all(void);

static void serve(struct pending *pd, uintptr_t addr, bool write) {
  uintptr_t block = addr & ~(uintptr_t)PZ_CHUNK_MASK, start, end;
  unsigned node;
  if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) > 0) {
    /* the program turned huge pages off for itself: the kernel answers from now on */
    unregister_all();
    return;
  }
  bool whole = range_of(addr, &start, &end, &node) && block >= start && block + PZ_CHUNK_SIZE <= end;
  if (whole && (write ? move_ready(pd, node, block) || copy_zeros(block) : zero_block(block))) return;
  /* partly present, or the mapping changed (protection, mlock, munmap) */
  fill_page(addr & ~(uintptr_t)(PZ_PAGE_SIZE - 1), write);
}

/* ---------------------------------------------------------------- requests */

enum { OP_REGISTER = 1, OP_UNREGISTER, OP_UNREGISTER_ALL, OP_FILL, OP_FILL_SERVED };
static atomic_flag req_lock = ATOMIC_FLAG_INIT;
static _Atomic pid_t req_owner; /* thread holding req_lock */
static struct {
  int op;
  uintptr_t a, b;
  unsigned node;
  size_t result;
} req;
static _Atomic uint32_t req_seq, ack_seq; /* futex words */

static void unregister_all(void) {
  table_lock_take();
  for (unsigned i = 0; i < RANGES; i++) {
    uintptr_t s = atomic_load_explicit(&ranges[i].start, memory_order_relaxed);
    uintptr_t e = atomic_load_explicit(&ranges[i].end, memory_order_relaxed);
    if (!e) continue;
    struct uffdio_range r = {s, e - s};
    uioctl(UFFDIO_UNREGISTER, &r);
    slot_clear(i);
  }
  table_lock_drop();
}

static size_t do_register(uintptr_t a, uintptr_t b, unsigned node) {
  struct uffdio_register reg = {.range = {a, b - a}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (uioctl(UFFDIO_REGISTER, &reg) != 0) return 0; /* EBUSY: the program's own; EINVAL: not anonymous */
  if (!(reg.ioctls & (1ull << _UFFDIO_MOVE))) { /* shared memory, hugetlbfs: not ours to serve */
    struct uffdio_range r = {a, b - a};
    uioctl(UFFDIO_UNREGISTER, &r);
    return 0;
  }
  if (!table_add(a, b, node)) { /* no slot: not served */
    struct uffdio_range r = {a, b - a};
    uioctl(UFFDIO_UNREGISTER, &r);
    return 0;
  }
  atomic_fetch_add_explicit(&pz_gstats.uffd_mappings, 1, memory_order_relaxed);
  return 1;
}

/* MAP_POPULATE: ready chunks moved into [a, b) at once, block by block from
 * its start, while nothing else can be there yet; the rest is the caller's
 * to populate. Returns bytes moved. */
static size_t do_fill(struct pending *pd, uintptr_t a, uintptr_t b, unsigned node) {
  struct uffdio_register reg = {.range = {a, b - a}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (uioctl(UFFDIO_REGISTER, &reg) != 0) return 0;
  size_t done = 0;
  uintptr_t first = pz_align_up(a, PZ_CHUNK_SIZE);
  if (reg.ioctls & (1ull << _UFFDIO_MOVE))
    while (first + done + PZ_CHUNK_SIZE <= b && move_ready(pd, node, first + done)) done += PZ_CHUNK_SIZE;
  struct uffdio_range r = {a, b - a};
  uioctl(UFFDIO_UNREGISTER, &r); /* merges back with nothing changed */
  return done;
}

/* MADV_POPULATE_WRITE over our ranges: the program asks for every page of
 * [a, b) now, so each whole block of ours there that holds nothing yet
 * gets a ready chunk moved in, with no fault (each first write costs the
 * faulting thread ~75 us even when answered at once: the kernel allocates
 * and zeroes a huge page before it finds the range registered, and throws
 * it away). A block with anything present is left to the kernel (a move
 * there would split the ready huge page). Stops when nothing is ready. */
static size_t do_fill_served(struct pending *pd, uintptr_t a, uintptr_t b) {
  static unsigned char vec[PZ_CHUNK_SIZE / PZ_PAGE_SIZE]; /* this thread's only */
  size_t done = 0;
  for (unsigned i = 0; i < RANGES; i++) { /* our ranges within [a, b): never a block of the rest */
    uintptr_t e = atomic_load_explicit(&ranges[i].end, memory_order_acquire);
    uintptr_t s = atomic_load_explicit(&ranges[i].start, memory_order_relaxed);
    unsigned node = atomic_load_explicit(&ranges[i].node, memory_order_relaxed) % pz_topo.nnodes;
    if (!e || e <= a || s >= b) continue;
    uintptr_t lo = pz_align_up(s > a ? s : a, PZ_CHUNK_SIZE), hi = e < b ? e : b;
    for (uintptr_t blk = lo; blk + PZ_CHUNK_SIZE <= hi; blk += PZ_CHUNK_SIZE) {
      if (syscall(SYS_mincore, blk, PZ_CHUNK_SIZE, vec) != 0) break; /* unmapped meanwhile */
      size_t k = 0;
      while (k < sizeof vec && !(vec[k] & 1)) k++;
      if (k < sizeof vec) continue;
      void *c = take_ready(pd, node);
      if (!c) return done;
      bool stale;
      size_t moved = move_chunk(c, blk, &stale);
      lend_done(pd, c, moved, stale);
      if (moved) atomic_fetch_add_explicit(&pz_gstats.uffd_moved_bytes, moved, memory_order_relaxed);
      if (moved == PZ_CHUNK_SIZE) done += PZ_CHUNK_SIZE;
    }
  }
  return done;
}

static void *registrar(void *arg) {
  pz_thread_name("prezero-uffdreg");
  (void)arg;
  static struct pending pd;
  /* from the last request answered: one may be posted before this thread runs */
  uint32_t seen = atomic_load(&ack_seq);
  for (;;) {
    uint32_t s = atomic_load_explicit(&req_seq, memory_order_acquire);
    if (s == seen) {
      /* idle: a look once a second at whether the program's threads are
       * all gone (then this thread must not keep the process alive) */
      struct timespec t = {pd.n ? 0 : 1, pd.n ? 5000000 : 0};
      futex(&req_seq, FUTEX_WAIT_PRIVATE, seen, &t);
      pending_flush(&pd);
      if (!pd.n && pz_only_own_threads()) return NULL;
      continue;
    }
    size_t res = 0;
    switch (req.op) {
    case OP_REGISTER: res = do_register(req.a, req.b, req.node); break;
    case OP_UNREGISTER: unregister_range(req.a, req.b); break;
    case OP_UNREGISTER_ALL: unregister_all(); break;
    case OP_FILL: res = do_fill(&pd, req.a, req.b, req.node); break;
    case OP_FILL_SERVED: res = do_fill_served(&pd, req.a, req.b); break;
    }
    req.result = res;
    seen = s;
    atomic_store_explicit(&ack_seq, s, memory_order_release);
    wake_all(&ack_seq);
  }
  return NULL;
}

static void *reader(void *arg) {
  pz_thread_name("prezero-uffd");
  (void)arg;
  static struct pending pd;
  /* a descriptor table of our own, holding nothing of the program's */
  uint32_t state = SVC_UNUSABLE;
  int fd = -1;
  if (syscall(SYS_unshare, CLONE_FILES) == 0 && syscall(SYS_close_range, 0u, ~0u, 0u) == 0 &&
      !pz_fault_hit(PZ_FAULT_UFFD, &(int){0}))
    fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_MOVE};
  if (fd >= 0 && pz_os_ioctl(fd, UFFDIO_API, &api) == 0 && (api.features & UFFD_FEATURE_MOVE)) {
    uffd = fd;
    if (zeros == MAP_FAILED)
      zeros = pz_os.mmap(NULL, PZ_CHUNK_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pz_thread_spawn(registrar, NULL, 128 << 10) == 0) /* shares this thread's table */
      state = SVC_RUNNING;
  }
  atomic_store(&svc, state);
  wake_all(&svc);
  if (state != SVC_RUNNING) return NULL;
  struct uffd_msg msgs[16];
  for (;;) {
    struct pollfd p = {uffd, POLLIN, 0};
    int ready = poll(&p, 1, pd.n ? 5 : 1000); /* idle: as the registrar */
    if (ready < 0 && errno != EINTR) return NULL;
    pending_flush(&pd);
    if (ready == 0 && !pd.n && pz_only_own_threads()) return NULL;
    ssize_t n = read(uffd, msgs, sizeof msgs);
    if (n <= 0) continue; /* EAGAIN (a timeout), EINTR */
    for (size_t i = 0; i < (size_t)n / sizeof msgs[0]; i++) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
      atomic_fetch_add_explicit(&pz_gstats.uffd_faults, 1, memory_order_relaxed);
      serve(&pd, (uintptr_t)msgs[i].arg.pagefault.address, msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE);
    }
  }
}

const char *pz_uffd_why_not(void) {
  if (!pz_opt(PZ_OPT_UFFD)) return "PREZERO_UFFD=0";
  if (!pz_opt(PZ_OPT_MMAP)) return "PREZERO_MMAP=0";
  /* the win is moving whole huge pages: without them, no use */
  if (pz_opt(PZ_OPT_THP) != PZ_THP_OPT_ALWAYS && !pz_kernel.thp_usable) return "no huge pages";
  /* user-mode-only would fail faults the kernel takes for the program (read(2) into the mapping) */
  if (pz_kernel.uffd != 0)
    return "needs full userfaultfd (root, CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)";
  if (!(pz_kernel.uffd_features & UFFD_FEATURE_MOVE)) return "no UFFDIO_MOVE (Linux 6.8)";
  return NULL;
}

/* Running in this process, started on first use. Never in a child made
 * without fork()'s handlers (vfork, clone): it shares or copied our state. */
static bool running(void) {
  uint32_t s = atomic_load_explicit(&svc, memory_order_acquire);
  if (s == SVC_RUNNING || s == SVC_UNUSABLE) return s == SVC_RUNNING && owner_pid == getpid();
  if (owner_pid != getpid()) return false;
  uint32_t expect = SVC_NONE;
  if (atomic_compare_exchange_strong(&svc, &expect, SVC_STARTING)) {
    if (pz_uffd_why_not()) {
      atomic_store(&svc, SVC_UNUSABLE);
      return false;
    }
    if (pz_thread_spawn(reader, NULL, 128 << 10) != 0) atomic_store(&svc, SVC_UNUSABLE);
  }
  while ((s = atomic_load(&svc)) == SVC_STARTING) futex(&svc, FUTEX_WAIT_PRIVATE, SVC_STARTING, NULL);
  return s == SVC_RUNNING;
}

/* One request to the registrar; false when it cannot be made now. `wait`:
 * another thread's request in flight is waited for (never this thread's
 * own: a signal handler that interrupted it). */
static bool call(int op, uintptr_t a, uintptr_t b, unsigned node, bool wait, size_t *result) {
  if (!running()) return false;
  pid_t me = pz_os_gettid();
  while (atomic_flag_test_and_set_explicit(&req_lock, memory_order_acquire)) {
    if (!wait || atomic_load(&req_owner) == me) return false;
    sched_yield();
  }
  atomic_store(&req_owner, me);
  req.op = op;
  req.a = a;
  req.b = b;
  req.node = node;
  uint32_t s = atomic_fetch_add_explicit(&req_seq, 1, memory_order_release) + 1;
  futex(&req_seq, FUTEX_WAKE_PRIVATE, 1, NULL);
  uint32_t v;
  while ((v = atomic_load_explicit(&ack_seq, memory_order_acquire)) != s)
    futex(&ack_seq, FUTEX_WAIT_PRIVATE, v, NULL);
  if (result) *result = req.result;
  atomic_store(&req_owner, 0);
  atomic_flag_clear_explicit(&req_lock, memory_order_release);
  return true;
}

bool pz_uffd_register(void *p, size_t len, unsigned node) {
  size_t r = 0;
  return call(OP_REGISTER, (uintptr_t)p, (uintptr_t)p + len, node, false, &r) && r;
}

/* Some registered range overlaps [a, b) (a lock-free look). */
static bool overlaps(uintptr_t a, uintptr_t b) {
  if (!atomic_load_explicit(&nlive, memory_order_relaxed)) return false;
  for (unsigned i = 0; i < RANGES; i++) {
    uintptr_t e = atomic_load_explicit(&ranges[i].end, memory_order_acquire);
    if (e > a && atomic_load_explicit(&ranges[i].start, memory_order_relaxed) < b) return true;
  }
  return false;
}

void pz_uffd_unregister(const void *p, size_t len) {
  if (overlaps((uintptr_t)p, (uintptr_t)p + len)) call(OP_UNREGISTER, (uintptr_t)p, (uintptr_t)p + len, 0, true, NULL);
}

void pz_uffd_unregister_all(void) {
  if (atomic_load_explicit(&nlive, memory_order_relaxed)) call(OP_UNREGISTER_ALL, 0, 0, 0, true, NULL);
}

bool pz_uffd_serving(const void *p, size_t len) { return overlaps((uintptr_t)p, (uintptr_t)p + len); }

size_t pz_uffd_populate(void *p, size_t len) {
  size_t r = 0;
  uintptr_t a = (uintptr_t)p, b = a + len;
  return overlaps(a, b) && call(OP_FILL_SERVED, a, b, 0, true, &r) ? r : 0;
}

size_t pz_uffd_fill(void *p, size_t len, unsigned node) {
  size_t r = 0;
  return call(OP_FILL, (uintptr_t)p, (uintptr_t)p + len, node, false, &r) ? r : 0;
}

void pz_uffd_init(void) { owner_pid = getpid(); }

void pz_uffd_postfork(bool child) {
  if (!child) return;
  /* the service threads did not come along; the kernel dropped our
   * registrations in the child: start over on first use */
  owner_pid = getpid();
  uffd = -1;
  atomic_store(&svc, SVC_NONE);
  atomic_flag_clear(&req_lock);
  atomic_flag_clear(&table_lock);
  atomic_store(&req_owner, 0);
  atomic_store(&req_seq, 0); /* a request in flight at fork has no registrar here */
  atomic_store(&ack_seq, 0);
  for (unsigned i = 0; i < RANGES; i++) atomic_store(&ranges[i].end, 0);
  atomic_store(&nlive, 0);
}
