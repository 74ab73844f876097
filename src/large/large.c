/* Large objects: one allocation per run of whole 2 MiB chunks, so its
 * memory is huge-page backed and 2 MiB aligned, and calloc gets it zero
 * without a memset whenever the pool has zero chunks. Metadata lives in the
 * pool (run length per head chunk), never next to the object. */
#include <string.h>

#include "large/large.h"

static inline size_t chunks_for(size_t size) {
  return (size + PZ_CHUNK_SIZE - 1) >> PZ_CHUNK_SHIFT;
}

void *pz_large_alloc(size_t size, size_t align, bool zero) {
  size_t n = chunks_for(size ? size : 1), zeroed = 0;
  void *p = pz_chunk_alloc(n, align > PZ_CHUNK_SIZE ? align : 0, zero ? PZ_CA_ZERO : 0,
                           PZ_MK_LARGE, NULL, &zeroed);
  if (!p) return NULL;
  /* PREZERO_POPULATE: a large run the pool had not ready is faulted in by
   * helpers, before returning (eager) or beside the program (lazy) */
  long long pop = pz_opt(PZ_OPT_POPULATE);
  if (pop != PZ_POP_OFF && (n << PZ_CHUNK_SHIFT) >= (size_t)pz_opt(PZ_OPT_POPULATE_MIN))
    pz_populate_parallel(p, n << PZ_CHUNK_SHIFT, pz_topo_current_node(), pop == PZ_POP_LAZY);
  atomic_fetch_add_explicit(&pz_gstats.large_allocs, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&pz_gstats.large_bytes_live, n << PZ_CHUNK_SHIFT, memory_order_relaxed);
  if (zero) {
    atomic_fetch_add_explicit(&pz_gstats.calloc_large, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pz_gstats.calloc_large_zeroed, zeroed, memory_order_relaxed);
    atomic_fetch_add_explicit(&pz_gstats.calloc_large_skipped, (n << PZ_CHUNK_SHIFT) - zeroed,
                              memory_order_relaxed);
  }
  return p;
}

void pz_large_free(void *p) {
  size_t n = pz_chunk_run_len(p);
  atomic_fetch_add_explicit(&pz_gstats.large_frees, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&pz_gstats.large_bytes_live, n << PZ_CHUNK_SHIFT, memory_order_relaxed);
  pz_chunk_free(p);
}

size_t pz_large_usable(const void *p) { return pz_chunk_run_len(p) << PZ_CHUNK_SHIFT; }

void *pz_large_realloc(void *p, size_t size) {
  size_t old = pz_chunk_run_len(p), n = chunks_for(size);
  if (n == old) return p;
  /* the kernel checks an mremap's growth, not the whole size */
  if (n > old && pz_os_overcommit_refuses((n - old) << PZ_CHUNK_SHIFT)) return NULL;
  if (n < old) {
    pz_chunk_shrink(p, n);
    atomic_fetch_sub_explicit(&pz_gstats.large_bytes_live, (old - n) << PZ_CHUNK_SHIFT,
                              memory_order_relaxed);
    return p;
  }
  if (pz_chunk_grow(p, n)) {
    atomic_fetch_add_explicit(&pz_gstats.realloc_in_place, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pz_gstats.large_bytes_live, (n - old) << PZ_CHUNK_SHIFT,
                              memory_order_relaxed);
    return p;
  }
  void *q = pz_large_alloc(size, 0, false);
  if (!q) return NULL;
  bool big = (old << PZ_CHUNK_SHIFT) >= (size_t)pz_opt(PZ_OPT_MREMAP_THRESHOLD);
  int moved = big ? pz_chunk_move(p, q) : PZ_MOVE_NO;
  if (moved == PZ_MOVED) {
    atomic_fetch_add_explicit(&pz_gstats.realloc_moved_pages, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&pz_gstats.large_bytes_live, old << PZ_CHUNK_SHIFT, memory_order_relaxed);
    atomic_fetch_add_explicit(&pz_gstats.large_frees, 1, memory_order_relaxed);
    return q;
  }
  if (moved == PZ_MOVE_LOST) { /* q's head is gone (see pz_chunk_move): another run */
    atomic_fetch_sub_explicit(&pz_gstats.large_bytes_live, n << PZ_CHUNK_SHIFT, memory_order_relaxed);
    atomic_fetch_add_explicit(&pz_gstats.large_frees, 1, memory_order_relaxed);
    if (!(q = pz_large_alloc(size, 0, false))) return NULL;
  }
  memcpy(q, p, old << PZ_CHUNK_SHIFT);
  pz_large_free(p);
  return q;
}
