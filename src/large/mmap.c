/* Large anonymous mmaps served from the pool (PREZERO_MMAP, on by default).
 *
 * Only mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
 * [|MAP_POPULATE], -1, 0) with len >= PREZERO_MMAP_THRESHOLD is served;
 * fixed addresses, other protections (PROT_NONE reservations), other flags
 * (MAP_NORESERVE, MAP_SHARED, MAP_HUGETLB, ...) and files go straight to the
 * kernel, and so does every call before prezero is initialised.
 *
 * How: reserve a 2 MiB-aligned range of len bytes. Then, where the pool
 * has or keeps ready chunks and userfaultfd can be used (PREZERO_UFFD,
 * uffd.c), register it: each first touch of a 2 MiB block is answered by
 * moving a ready huge page in, wherever the program touches, and nothing
 * is spent on blocks it never touches. Otherwise (and for MAP_POPULATE,
 * which wants it all at once) move the longest run of ready chunks to its
 * start with mremap, growing the moved mapping to len; MAP_POPULATE then
 * populates the rest with helper threads. Either way the program gets one
 * ordinary private anonymous mapping (one VMA, THP-eligible): munmap (also
 * partial), mremap, mprotect, madvise, mlock and fork behave exactly as on
 * any other, because it is one; the pool never sees that memory again.
 * Sparse reservations stay sparse.
 *
 * Why on by default: the memory was already resident in the pool, so a
 * served mapping costs no RSS the program would not have paid on touch,
 * and a VMM's guest RAM arrives resident; the cost is ~5 system calls and
 * a page-table move (~50 us for 64 MiB), or ~10 us per 2 MiB touched,
 * against 10-40x that in faults. */
#include <errno.h>
#include <sys/mman.h>

#include "internal.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static void *kernel_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  return pz_os.mmap(addr, len, prot, flags, fd, off);
}

void *pz_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  const int served = MAP_PRIVATE | MAP_ANONYMOUS;
  if (addr || fd != -1 || off || prot != (PROT_READ | PROT_WRITE) || (flags & ~MAP_POPULATE) != served ||
      atomic_load_explicit(&pz_init_state, memory_order_acquire) != 2 || !pz_opt(PZ_OPT_MMAP) ||
      len < (size_t)pz_opt(PZ_OPT_MMAP_THRESHOLD) || len > PZ_MAX_ALLOC ||
      pz_opt(PZ_OPT_THP) == PZ_THP_OPT_NEVER)
    return kernel_mmap(addr, len, prot, flags, fd, off);
  int saved = errno;
  len = pz_align_up(len, PZ_PAGE_SIZE);
  /* a 2 MiB-aligned home for it, so moved huge pages stay PMD-mapped */
  char *raw = kernel_mmap(NULL, len + PZ_CHUNK_SIZE, prot, served, -1, 0);
  if (raw == MAP_FAILED) return MAP_FAILED; /* errno from the kernel */
  char *a = (char *)pz_align_up((uintptr_t)raw, PZ_CHUNK_SIZE);
  if (a > raw) pz_os.munmap(raw, (size_t)(a - raw));
  size_t tail = (size_t)((raw + len + PZ_CHUNK_SIZE) - (a + len));
  if (tail) pz_os.munmap(a + len, tail);
  unsigned node = pz_topo_current_node();
  if (!(flags & MAP_POPULATE) && pz_pool_serves(node) && pz_uffd_register(a, len, node)) {
    /* first touches are answered by moving ready huge pages in, wherever
     * they happen (uffd.c): nothing is spent on what is never touched */
    atomic_fetch_add_explicit(&pz_gstats.mmap_served, 1, memory_order_relaxed);
    errno = saved;
    return a;
  }
  size_t got = pz_chunk_lend(len >> PZ_CHUNK_SHIFT, a, len);
  if (!got) {
    /* nothing ready, or the move failed; a failed mremap may have unmapped
     * the target: make sure the whole range is there */
    void *q = kernel_mmap(a, len, prot, served | MAP_FIXED_NOREPLACE, -1, 0);
    if (q != MAP_FAILED && q != a) pz_os.munmap(q, len);
    /* EEXIST: it is still mapped (ours) */
  } else {
    atomic_fetch_add_explicit(&pz_gstats.mmap_served, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pz_gstats.mmap_moved_bytes, got << PZ_CHUNK_SHIFT, memory_order_relaxed);
  }
  if (got && got < (len >> PZ_CHUNK_SHIFT) && pz_kernel.thp_enabled != PZ_THP_ALWAYS) {
    /* the moved mapping carries the pool's MADV_HUGEPAGE over its whole
     * length; the rest should fault as an ordinary mapping does (in
     * madvise mode: 4 KiB pages; huge-page faults cost 3-4x more here once
     * the host took the memory back). The moved huge pages stay. */
    pz_os.madvise(a, len, MADV_NOHUGEPAGE);
  }
  if (flags & MAP_POPULATE) {
    size_t done = got << PZ_CHUNK_SHIFT;
    pz_populate_parallel(a + done, len - done, node, false);
  }
  errno = saved;
  return a;
}
