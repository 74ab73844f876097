/* Serving page faults on large mmaps with ready huge pages (userfaultfd).
 *
 * A served mapping (see mmap.c) is registered with userfaultfd in missing
 * mode and nothing is put in it up front. When the program first touches
 * a 2 MiB block of it, the kernel stops the touching thread and tells our
 * handler thread, which moves a ready chunk (resident, zero, one huge page)
 * from the pool into that block with UFFDIO_MOVE (Linux 6.8): ~7 us per
 * 2 MiB, against a kernel huge-page fault that zeroes 2 MiB on the
 * touching thread (0.3-1.2 ms here). Memory is spent only where the
 * program touches (the on-demand initialisation seed), so sparse
 * reservations stay sparse, and the workers refill the pool behind it.
 *
 * With no ready chunk (or where a move fails: the pool's pages shared with
 * a forked child, the program changed the mapping's protection or mlocked
 * it), the handler copies zeros into the block (UFFDIO_COPY: fresh 4 KiB
 * pages, what the kernel's own faults cost on a plain mapping). Where even
 * that cannot be done (the block is partly present, or unmapped
 * meanwhile), it answers for the one faulting 4 KiB page (UFFDIO_ZEROPAGE
 * for a read, UFFDIO_COPY for a write), exactly what the kernel does.
 *
 * Used only with full userfaultfd (root, CAP_SYS_PTRACE or
 * vm.unprivileged_userfaultfd=1): with UFFD_USER_MODE_ONLY, faults taken
 * inside the kernel (read(2) into the mapping) would fail with EFAULT.
 * No events are asked for, so fork, mremap and munmap behave as the
 * kernel makes them for any mapping: a child's copy and a moved mapping
 * are plain anonymous memory. The handler never touches the mappings
 * itself and takes only pool locks, which no thread holds while it
 * touches program memory. In a forked child the inherited descriptor
 * still points at the parent's address space: it is closed and opened
 * afresh on first use. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "../os/kabi.h"

static pthread_mutex_t uffd_lock = PTHREAD_MUTEX_INITIALIZER;
static int uffd_fd;    /* with uffd_state 1 */
static int uffd_state; /* 0 not tried, 1 serving, -1 unusable here */
static pid_t uffd_pid;  /* the process it serves: a child made without fork() handlers starts over */
static dev_t uffd_dev;  /* the descriptor's identity: a program that closes every descriptor */
static ino_t uffd_ino;  /* (a daemon) may see the number reused for another file */

/* fd is still our userfaultfd (each has its own inode) */
static bool still_ours(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && st.st_dev == uffd_dev && st.st_ino == uffd_ino;
}

/* Which node's pool serves a registered range (the mmap caller's node). */
#define RANGES 64
static struct {
  _Atomic uintptr_t start, end;
  _Atomic unsigned node;
} ranges[RANGES];
static _Atomic unsigned ranges_next;

/* The registered range holding a: its node and end (0: not known). */
static unsigned range_of(uintptr_t a, uintptr_t *end) {
  for (unsigned i = 0; i < RANGES; i++) {
    uintptr_t e = atomic_load_explicit(&ranges[i].end, memory_order_relaxed);
    if (a >= atomic_load_explicit(&ranges[i].start, memory_order_relaxed) && a < e) {
      *end = e;
      return atomic_load_explicit(&ranges[i].node, memory_order_relaxed) % pz_topo.nnodes;
    }
  }
  *end = 0;
  return 0;
}

static const char zero_page[PZ_PAGE_SIZE] __attribute__((aligned(PZ_PAGE_SIZE)));
static void *zeros = MAP_FAILED; /* 2 MiB read-only, never written: the kernel's zero page */

/* UFFDIO_MOVE of one chunk; returns the bytes moved. *stale: the pages
 * are shared with a forked child (or were since: EBUSY until written). */
static size_t move_chunk(int fd, void *src, uintptr_t dst, bool *stale) {
  int e = 0;
  *stale = false;
  struct uffdio_move mv = {.dst = dst, .src = (uintptr_t)src, .len = PZ_CHUNK_SIZE, .mode = 0};
  if (pz_fault_hit(PZ_FAULT_MOVE, &e)) mv.move = -e;
  else if (ioctl(fd, UFFDIO_MOVE, &mv) == 0) return PZ_CHUNK_SIZE;
  else e = errno;
  *stale = e == EBUSY && mv.move <= 0;
  return mv.move > 0 ? (size_t)mv.move : 0;
}

/* The kernel's answer for one 4 KiB page: zero page for a read, a fresh
 * zero page for a write. Woken either way. */
static void fill_page(int fd, uintptr_t page, bool write) {
  int r;
  if (write) {
    struct uffdio_copy c = {.dst = page, .src = (uintptr_t)zero_page, .len = PZ_PAGE_SIZE, .mode = 0};
    r = ioctl(fd, UFFDIO_COPY, &c);
  } else {
    struct uffdio_zeropage z = {.range = {page, PZ_PAGE_SIZE}, .mode = 0};
    r = ioctl(fd, UFFDIO_ZEROPAGE, &z);
  }
  if (r == 0) {
    atomic_fetch_add_explicit(&pz_gstats.uffd_fallbacks, 1, memory_order_relaxed);
    return;
  }
  /* EEXIST: it is there already (a second fault on the block, answered by
   * the first); ENOENT: unmapped meanwhile. Wake the thread: it retries. */
  struct uffdio_range w = {page, PZ_PAGE_SIZE};
  ioctl(fd, UFFDIO_WAKE, &w);
}

/* Nothing ready: copy zeros in (fresh 4 KiB pages, the cost of the
 * kernel's own faults on a plain mapping; no huge-page fault on the
 * faulting thread's behalf, which costs more than 4 KiB ones in a VM whose
 * host took the memory back). Returns the bytes filled. */
static size_t copy_zeros(int fd, uintptr_t dst, size_t len) {
  if (zeros == MAP_FAILED) return 0;
  struct uffdio_copy c = {.dst = dst, .src = (uintptr_t)zeros, .len = len, .mode = 0};
  if (ioctl(fd, UFFDIO_COPY, &c) == 0) return len;
  return c.copy > 0 ? (size_t)c.copy : 0;
}

/* Fault-around for a program touching block after block (a guest's RAM
 * being initialised): once faults arrive in address order, the blocks
 * after this one are moved in ahead of the touches, up to a window that
 * doubles while the order holds (to 16 blocks, 32 MiB), so the program
 * stops waiting for a round trip per block (a wake-up across CPUs costs
 * 50-200 us in a VM). Only ready chunks go ahead: nothing is copied, and
 * scattered touches (no order) never move anything ahead. Handler state:
 * one handler thread. */
#define AHEAD_MAX 16
static uintptr_t seq_next;
static size_t seq_window;

/* Move ready chunks into [dst, dst + n blocks), in order, until one fails;
 * chunks not used go back. Returns the bytes moved. */
static size_t move_ready(int fd, void **c, size_t nc, uintptr_t dst) {
  size_t moved = 0;
  bool failed = false;
  for (size_t k = 0; k < nc; k++) {
    size_t done = 0;
    bool stale = false;
    if (!failed) done = move_chunk(fd, c[k], dst + moved, &stale);
    pz_chunk_lend_one_done(c[k], done, stale);
    moved += done;
    failed |= done != PZ_CHUNK_SIZE; /* there already (touched meanwhile), or the mapping changed */
  }
  atomic_fetch_add_explicit(&pz_gstats.uffd_moved_bytes, moved, memory_order_relaxed);
  return moved;
}

static void serve(int fd, uintptr_t addr, bool write) {
  uintptr_t dst = addr & ~(uintptr_t)(PZ_CHUNK_SIZE - 1), end;
  unsigned node = range_of(addr, &end);
  /* a mapping's last block may be shorter (as far as we know its end) */
  size_t len = end > dst && end - dst < PZ_CHUNK_SIZE ? end - dst : PZ_CHUNK_SIZE;
  seq_window = dst == seq_next ? (seq_window ? 2 * seq_window : 1) : 0;
  if (seq_window > AHEAD_MAX) seq_window = AHEAD_MAX;
  size_t want = len < PZ_CHUNK_SIZE ? 0 : 1 + seq_window;
  if (end && want > (end - dst) >> PZ_CHUNK_SHIFT) want = (end - dst) >> PZ_CHUNK_SHIFT;
  void *c[1 + AHEAD_MAX];
  size_t done = move_ready(fd, c, pz_chunk_lend_ready(node, c, want), dst);
  if (done > PZ_CHUNK_SIZE)
    atomic_fetch_add_explicit(&pz_gstats.uffd_ahead_bytes, done - PZ_CHUNK_SIZE, memory_order_relaxed);
  if (!done) {
    done = copy_zeros(fd, dst, len);
    atomic_fetch_add_explicit(&pz_gstats.uffd_copied_bytes, done, memory_order_relaxed);
  }
  seq_next = dst + (done > PZ_CHUNK_SIZE ? done : PZ_CHUNK_SIZE);
  if (addr < dst + done) return; /* the ioctl woke the faulting thread */
  /* the block is partly there, or the mapping changed (protection, mlock,
   * munmap): answer for the one page, as the kernel would */
  fill_page(fd, addr & ~(uintptr_t)(PZ_PAGE_SIZE - 1), write);
}

static void *handler(void *arg) {
  int fd = (int)(intptr_t)arg;
  struct uffd_msg msgs[16];
  for (;;) {
    /* never read another file's data: if the program closed ours, leave
     * (the kernel then serves the faults itself) */
    if (!still_ours(fd)) return NULL;
    ssize_t n = read(fd, msgs, sizeof msgs);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return NULL; /* closed (fork child) or broken: faults can no longer come */
    for (size_t i = 0; i < (size_t)n / sizeof msgs[0]; i++) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
      atomic_fetch_add_explicit(&pz_gstats.uffd_faults, 1, memory_order_relaxed);
      serve(fd, (uintptr_t)msgs[i].arg.pagefault.address,
            msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE);
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

/* Open the descriptor and start the handler; with uffd_lock held. */
static int start(void) {
  if (pz_uffd_why_not()) return -1;
  int e;
  if (pz_fault_hit(PZ_FAULT_UFFD, &e)) return -1;
  /* full mode only: faults the kernel takes on the program's behalf
   * (read(2) into the mapping) must be served too */
  int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
  if (fd < 0) return -1;
  if (zeros == MAP_FAILED) zeros = pz_os.mmap(NULL, PZ_CHUNK_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return -1;
  }
  uffd_dev = st.st_dev;
  uffd_ino = st.st_ino;
  struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_MOVE};
  if (ioctl(fd, UFFDIO_API, &api) != 0 || !(api.features & UFFD_FEATURE_MOVE)) {
    close(fd);
    return -1;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 << 10);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  int rc = pz_thread_create(&t, &attr, handler, (void *)(intptr_t)fd);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    close(fd);
    return -1;
  }
  uffd_fd = fd;
  return 1;
}

bool pz_uffd_register(void *p, size_t len, unsigned node) {
  pthread_mutex_lock(&uffd_lock);
  pid_t pid = getpid();
  if (uffd_state && uffd_pid != pid) { /* inherited: it serves another address space */
    if (uffd_state == 1) close(uffd_fd);
    uffd_state = 0;
  } else if (uffd_state == 1 && !still_ours(uffd_fd)) { /* the program closed it */
    uffd_state = 0;
  }
  if (!uffd_state) {
    uffd_state = start();
    uffd_pid = pid;
  }
  int fd = uffd_state == 1 ? uffd_fd : -1;
  pthread_mutex_unlock(&uffd_lock);
  if (fd < 0) return false;
  for (unsigned i = 0; i < RANGES; i++) /* forget older mappings that were here */
    if (atomic_load_explicit(&ranges[i].start, memory_order_relaxed) < (uintptr_t)p + len &&
        atomic_load_explicit(&ranges[i].end, memory_order_relaxed) > (uintptr_t)p)
      atomic_store_explicit(&ranges[i].end, 0, memory_order_relaxed);
  unsigned slot = atomic_fetch_add_explicit(&ranges_next, 1, memory_order_relaxed) % RANGES;
  atomic_store_explicit(&ranges[slot].end, 0, memory_order_relaxed);
  atomic_store_explicit(&ranges[slot].start, (uintptr_t)p, memory_order_relaxed);
  atomic_store_explicit(&ranges[slot].node, node, memory_order_relaxed);
  atomic_store_explicit(&ranges[slot].end, (uintptr_t)p + len, memory_order_relaxed);
  /* faults must come at the PMD level, with no page table below it yet,
   * for a huge page to move in whole: the range must be THP-eligible */
  if (pz_kernel.thp_enabled != PZ_THP_ALWAYS) pz_os_hugepage(p, len);
  struct uffdio_register reg = {.range = {(uintptr_t)p, len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0) return false;
  if (!(reg.ioctls & (1ull << _UFFDIO_MOVE))) {
    struct uffdio_range r = {(uintptr_t)p, len};
    ioctl(fd, UFFDIO_UNREGISTER, &r);
    return false;
  }
  atomic_fetch_add_explicit(&pz_gstats.uffd_mappings, 1, memory_order_relaxed);
  return true;
}

void pz_uffd_postfork(bool child) {
  if (!child) return;
  /* the descriptor serves the parent's address space and the handler did
   * not come along: start over on first use */
  pthread_mutex_init(&uffd_lock, NULL);
  if (uffd_state == 1) close(uffd_fd);
  uffd_state = 0;
  for (unsigned i = 0; i < RANGES; i++) atomic_store(&ranges[i].end, 0);
}
