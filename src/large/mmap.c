/* The program's own memory calls: mmap, madvise, ioctl (UFFDIO_REGISTER),
 * mlockall and munlockall pass through here (override.c) on their way to
 * the kernel. Every call is made exactly as the program asked, first; what
 * prezero adds never changes its result, its errno or what the program's
 * memory holds:
 *
 * mmap: a large private anonymous read/write mapping (PREZERO_MMAP, at
 *   least PREZERO_MMAP_THRESHOLD, MAP_NORESERVE and MAP_FIXED allowed) is
 *   served from the pool where the kernel itself would back it with huge
 *   pages: in THP "always" mode at once, in "madvise" mode once the program
 *   madvises MADV_HUGEPAGE over it (as VMMs do with guest RAM). Served
 *   means: its 2 MiB-aligned interior is registered with the userfaultfd
 *   service (uffd.c), which answers each first write of a block with a
 *   ready huge page. Never when the process or the system turned huge pages
 *   off, nor under mlockall(MCL_FUTURE) (the kernel populates it at once).
 *   With MAP_POPULATE the mapping is made without it, ready chunks are
 *   moved into its head (by the service, or without userfaultfd by mremap),
 *   and the rest is populated by helper threads: all of it is present on
 *   return, as the kernel promises. Without userfaultfd nothing else is
 *   served: a plain mapping the program may use sparsely gets nothing from
 *   the pool (the memory would stay resident for good).
 *   MAP_FIXED over memory of ours (a program bug, or a program mapping a
 *   file over a block it allocated): those chunks are never touched by
 *   prezero again (pz_chunk_clobbered).
 * madvise: MADV_HUGEPAGE serves the range (above); MADV_NOHUGEPAGE stops
 *   serving it, so the kernel's 4 KiB pages come as asked.
 *   MADV_POPULATE_WRITE over a served range (a VMM preallocating guest RAM,
 *   QEMU's prealloc threads) first gets ready chunks moved into its blocks
 *   that hold nothing yet; the kernel then populates the rest.
 * ioctl: before the program registers a range with its own userfaultfd,
 *   our registration there goes, so its UFFDIO_REGISTER succeeds and every
 *   page it never touched faults to its handler, as without prezero.
 * setrlimit, prlimit: an address-space limit is noted (pz_as_limited).
 * mlockall: MCL_CURRENT first unregisters everything (the kernel then
 *   populates it natively) and gives free memory back (unprivileged, all
 *   mapped memory must fit RLIMIT_MEMLOCK); MCL_FUTURE is remembered
 *   (pz_mcl_future). mlock, mlock2, mlockall: that the program locks memory
 *   at all is remembered, so that a freed run is unlocked when reset.
 *
 * Calls made before prezero is initialised go straight to the kernel.
 * mmap may be called from a signal handler (it is async-signal-safe): no
 * lock here is waited for that a thread inside malloc may hold. */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "large/large.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static bool ready(void) { return atomic_load_explicit(&pz_init_state, memory_order_acquire) == 2; }

/* Huge pages are allowed for the process and the system now (the kernel
 * would use them where the mapping asks). */
static bool thp_allowed(void) {
  if (pz_opt(PZ_OPT_THP) == PZ_THP_OPT_NEVER || prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) > 0) return false;
  enum pz_thp_mode m = pz_probe_thp_now();
  return m == PZ_THP_ALWAYS || m == PZ_THP_MADVISE || pz_opt(PZ_OPT_THP) == PZ_THP_OPT_ALWAYS;
}

/* The 2 MiB-aligned interior [*a, *b) of [p, p+len); false when empty. */
static bool interior(void *p, size_t len, uintptr_t *a, uintptr_t *b) {
  *a = pz_align_up((uintptr_t)p, PZ_CHUNK_SIZE);
  *b = ((uintptr_t)p + len) & ~(uintptr_t)PZ_CHUNK_MASK;
  return *b > *a;
}

/* Serve [p, p+len) lazily: first writes of its whole 2 MiB blocks get
 * ready huge pages. Registered whole, not just its aligned interior: a
 * registration splits the VMA where it ends, and a mapping of several VMAs
 * cannot be grown by mremap (EFAULT). */
/* known_anon: the program's mmap just made it private anonymous read/write;
 * else (its madvise) only such memory is served: a private mapping of a
 * file (tmpfs, memfd) or shared memory must never get zeros or our pages */
static void serve(void *p, size_t len, bool known_anon) {
  uintptr_t a, b;
  unsigned node = pz_topo_current_node();
  if (interior(p, len, &a, &b) && !pz_uffd_why_not() && pz_pool_serves(node) && thp_allowed() &&
      !pz_chunk_overlaps(p, len) && (known_anon || pz_os_range_private_anon(p, len)))
    pz_uffd_register(p, pz_align_up(len, PZ_PAGE_SIZE), node);
}

/* MAP_POPULATE: ready chunks at the head, the rest populated by helpers. */
static void populate(void *p, size_t len, int flags) {
  uintptr_t a, b;
  unsigned node = pz_topo_current_node();
  size_t moved = 0;
  if (interior(p, len, &a, &b) && pz_pool_serves(node) && thp_allowed()) {
    if (!pz_uffd_why_not()) {
      moved = pz_uffd_fill(p, pz_align_up(len, PZ_PAGE_SIZE), node);
    } else if (!(flags & MAP_FIXED) && (uintptr_t)p == a) {
      /* without userfaultfd: the longest ready run moved to the head with
       * mremap (the mapping there is the pool's then: same protection,
       * huge-page advice) */
      moved = pz_chunk_lend((b - a) >> PZ_CHUNK_SHIFT, (void *)a, b - a) << PZ_CHUNK_SHIFT;
    }
  }
  if (moved) {
    atomic_fetch_add_explicit(&pz_gstats.mmap_served, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pz_gstats.mmap_moved_bytes, moved, memory_order_relaxed);
  }
  /* what is still missing; the kernel ignores population failures too */
  pz_populate_parallel(p, len, node, false);
}

void *pz_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  const int plain = MAP_PRIVATE | MAP_ANONYMOUS, extra = MAP_POPULATE | MAP_NORESERVE | MAP_FIXED | MAP_FIXED_NOREPLACE;
  bool candidate = ready() && pz_opt(PZ_OPT_MMAP) && fd == -1 && !off && prot == (PROT_READ | PROT_WRITE) &&
                   (flags & ~extra) == plain && len >= (size_t)pz_opt(PZ_OPT_MMAP_THRESHOLD) &&
                   len <= PZ_MAX_ALLOC && !atomic_load_explicit(&pz_mcl_future, memory_order_relaxed);
  bool pop = candidate && (flags & MAP_POPULATE);
  void *p = pz_os.mmap(addr, len, prot, pop ? flags & ~MAP_POPULATE : flags, fd, off);
  int err = errno;
  if (p == MAP_FAILED && (err == ENOMEM || err == EAGAIN) && ready() && pz_chunk_unmap_free()) {
    /* out of address space, data segment or lockable memory (RLIMIT_AS,
     * RLIMIT_DATA, RLIMIT_MEMLOCK) while memory of ours sits free: glibc
     * would have unmapped it at free() */
    errno = err;
    p = pz_os.mmap(addr, len, prot, pop ? flags & ~MAP_POPULATE : flags, fd, off);
  }
  if (p == MAP_FAILED || !ready()) return p;
  int saved = errno;
  if (flags & MAP_FIXED) pz_chunk_clobbered(p, len);
  if (pop) populate(p, len, flags);
  else if (candidate && pz_kernel.thp_enabled == PZ_THP_ALWAYS) serve(p, len, true);
  errno = saved;
  return p;
}

int pz_madvise(void *p, size_t len, int advice) {
  if (advice == MADV_POPULATE_WRITE && ready() && len >= PZ_CHUNK_SIZE && !((uintptr_t)p & (PZ_PAGE_SIZE - 1)) &&
      pz_uffd_serving(p, len) && pz_os_range_private_anon(p, len)) {
    /* only where the kernel's populate will succeed: all of it mapped,
     * writable, ours to fill (a failed call must leave memory as it was) */
    int saved = errno;
    pz_uffd_populate(p, len);
    errno = saved;
  }
  int r = (int)syscall(SYS_madvise, p, len, advice);
  if (r != 0 || !ready() || !pz_opt(PZ_OPT_MMAP)) return r;
  int saved = errno;
  if (advice == MADV_HUGEPAGE && len >= (size_t)pz_opt(PZ_OPT_MMAP_THRESHOLD) &&
      !atomic_load_explicit(&pz_mcl_future, memory_order_relaxed))
    serve(p, len, false);
  else if (advice == MADV_NOHUGEPAGE)
    pz_uffd_unregister(p, len);
  errno = saved;
  return r;
}

int pz_ioctl(int fd, unsigned long request, void *arg) {
  if (request == UFFDIO_REGISTER && arg && ready()) {
    int saved = errno;
    const struct uffdio_register *reg = arg;
    pz_uffd_unregister((void *)(uintptr_t)reg->range.start, reg->range.len);
    /* over memory of ours (the program registers blocks it allocated, or
     * more than it owns): never zeroed or reused by us while it may fault
     * to the program's handler */
    pz_chunk_clobbered((void *)(uintptr_t)reg->range.start, reg->range.len);
    errno = saved;
  }
  return (int)syscall(SYS_ioctl, fd, request, arg);
}

int pz_mlock(const void *p, size_t len, unsigned flags) {
  atomic_store_explicit(&pz_program_locks, true, memory_order_relaxed);
  return flags ? (int)syscall(SYS_mlock2, p, len, flags) : (int)syscall(SYS_mlock, p, len);
}

int pz_mlockall(int flags) {
  atomic_store_explicit(&pz_program_locks, true, memory_order_relaxed);
  if (ready() && (flags & MCL_CURRENT)) {
    /* what is free goes back first: the kernel would populate and lock it,
     * and unprivileged, all mapped memory must fit RLIMIT_MEMLOCK (glibc
     * had unmapped it at free()) */
    int saved = errno;
    pz_uffd_unregister_all();
    pz_chunk_unmap_free();
    errno = saved;
  }
  int r = (int)syscall(SYS_mlockall, flags);
  if (r == 0 && (flags & MCL_FUTURE)) atomic_store(&pz_mcl_future, true);
  return r;
}

int pz_munlockall(void) {
  int r = (int)syscall(SYS_munlockall);
  if (r == 0) atomic_store(&pz_mcl_future, false);
  return r;
}

/* setrlimit, prlimit: an address-space limit makes prezero unmap regions
 * that come free (glibc would have unmapped the blocks). */
int pz_prlimit(pid_t pid, int resource, const void *new_limit, void *old_limit) {
  int r = (int)syscall(SYS_prlimit64, pid, resource, new_limit, old_limit);
  if (r == 0 && new_limit && resource == RLIMIT_AS && (pid == 0 || pid == getpid())) {
    int saved = errno;
    pz_os_read_limits();
    errno = saved;
  }
  return r;
}
