/* The prezero_* names: the same allocator for programs that link prezero
 * and want to call it explicitly (include/prezero.h). */
#include <errno.h>

#include "api/api.h"

PZ_EXPORT void *prezero_malloc(size_t n) { return pz_malloc(n); }
PZ_EXPORT void prezero_free(void *p) { pz_free(p); }
PZ_EXPORT void *prezero_calloc(size_t n, size_t s) { return pz_calloc(n, s); }
PZ_EXPORT void *prezero_realloc(void *p, size_t n) { return pz_realloc(p, n); }
PZ_EXPORT void *prezero_reallocarray(void *p, size_t n, size_t s) { return pz_reallocarray(p, n, s); }
PZ_EXPORT int prezero_posix_memalign(void **out, size_t a, size_t n) { return pz_posix_memalign(out, a, n); }
PZ_EXPORT void *prezero_aligned_alloc(size_t a, size_t n) { return pz_aligned_alloc(a, n); }
PZ_EXPORT void *prezero_memalign(size_t a, size_t n) { return pz_memalign(a, n); }
PZ_EXPORT void *prezero_valloc(size_t n) { return pz_valloc(n); }
PZ_EXPORT void *prezero_pvalloc(size_t n) { return pz_pvalloc(n); }
PZ_EXPORT size_t prezero_malloc_usable_size(void *p) { return pz_usable_size(p); }
PZ_EXPORT void prezero_free_sized(void *p, size_t n) { pz_free_sized(p, n); }
PZ_EXPORT void prezero_free_aligned_sized(void *p, size_t a, size_t n) { pz_free_aligned_sized(p, a, n); }
PZ_EXPORT int prezero_malloc_trim(size_t pad) { return pz_trim(pad); }
PZ_EXPORT size_t prezero_trim(void) {
  if (atomic_load(&pz_init_state) != 2) return 0;
  pz_heaps_collect_all();
  return pz_chunk_trim(0);
}
PZ_EXPORT int prezero_populate(void *ptr, size_t len) {
  if (!ptr || !len || (uintptr_t)ptr + len < (uintptr_t)ptr) {
    errno = EINVAL;
    return -1;
  }
  pz_ensure_init();
  uintptr_t a = (uintptr_t)ptr & ~(uintptr_t)(PZ_PAGE_SIZE - 1);
  uintptr_t e = pz_align_up((uintptr_t)ptr + len, PZ_PAGE_SIZE);
  if (!pz_populate_parallel((void *)a, e - a, pz_topo_current_node(), false)) {
    errno = ENOMEM;
    return -1;
  }
  return 0;
}
PZ_EXPORT void prezero_stats_print(void) { pz_stats_print_fd(2); }
PZ_EXPORT const char *prezero_version(void) { return "0.1.0"; }
PZ_EXPORT int prezero_reserve(size_t bytes) {
  pz_ensure_init();
  int e = pz_chunk_reserve(bytes);
  if (e) {
    errno = e;
    return -1;
  }
  return 0;
}
