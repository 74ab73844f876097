/* The C allocation API, implemented once (pz_*); override.c exports it as
 * malloc/free/..., public.c as prezero_*.
 *
 * Dispatch: sizes up to PZ_SMALL_MAX take the inline thread-cache path;
 * up to PREZERO_LARGE_THRESHOLD a medium span in the thread's chunks;
 * above it whole chunks from the pool. free() classifies a pointer by the
 * chunk map, so pointers we never returned are caught before we touch
 * them. Errors: NULL + ENOMEM when memory is refused; EINVAL for bad
 * alignments, as glibc documents each function.
 */
#include <errno.h>
#include <string.h>

#include "api/api.h"

#define oom pz_oom

static PZ_NOINLINE void *alloc_big(size_t size, bool zero) {
  if (PZ_UNLIKELY(size > PZ_MAX_ALLOC)) return oom();
  pz_ensure_init();
  void *p;
  if (size < (size_t)pz_opt(PZ_OPT_LARGE_THRESHOLD)) {
    pz_heap *h = pz_heap_get();
    return h ? pz_small_alloc_slow(h, size, zero) : oom(); /* which says ENOMEM itself */
  } else {
    p = pz_os_overcommit_refuses(size) ? NULL : pz_large_alloc(size, 0, zero);
  }
  return p ? p : oom();
}

/* Small sizes above 1024 B: their class is computed, not looked up (the
 * fast path for the rest tests one bound, not two). */
static PZ_NOINLINE void *malloc_upper(size_t size) {
  if (size <= 1024) __builtin_unreachable();
  if (PZ_LIKELY(size <= PZ_SMALL_MAX)) return pz_small_alloc(size, false);
  return alloc_big(size, false);
}
static PZ_NOINLINE void *calloc_upper(size_t size) {
  if (size <= 1024) __builtin_unreachable();
  if (PZ_LIKELY(size <= PZ_SMALL_MAX)) return pz_small_alloc(size, true);
  return alloc_big(size, true);
}

void *pz_malloc(size_t size) {
  if (PZ_LIKELY(size <= 1024)) return pz_small_alloc(size, false); /* NULL: ENOMEM said */
  return malloc_upper(size);
}

void *pz_calloc(size_t n, size_t size) {
  size_t total;
  if (PZ_UNLIKELY(__builtin_mul_overflow(n, size, &total))) return oom();
  if (PZ_LIKELY(total <= 1024)) return pz_small_alloc(total, true);
  return calloc_upper(total);
}

/* Validate p and tell what it is. Aborts on a pointer we did not return. */
enum kind { K_SMALL, K_LARGE };
static enum kind classify(const void *p, uint32_t e, const char *fn) {
  switch (e & 15) {
  case PZ_MK_SMALL:
    return K_SMALL;
  case PZ_MK_LARGE:
    if (((uintptr_t)p & PZ_CHUNK_MASK) == 0) return K_LARGE;
    break;
  case PZ_MK_FREE:
    pz_fatal("%s(): double free or invalid pointer: %p (memory is free)", fn, p);
  default:
    break;
  }
  pz_fatal("%s(): invalid pointer: %p (not allocated by prezero)", fn, p);
}

/* free of anything but a small block: NULL, a large run, or a bad pointer */
static PZ_NOINLINE void free_other(void *p, uint32_t e) {
  if (p && classify(p, e, "free") == K_LARGE) pz_large_free(p);
}

void pz_free(void *p) {
  uint32_t e = pz_map_get(p); /* NULL: never a chunk's (the first 2 MiB are never mapped) */
  if (PZ_LIKELY((uint8_t)e == PZ_MK_SMALL)) {
    pz_small_free(p, pz_chunk_of(p));
    return;
  }
  free_other(p, e);
}

size_t pz_usable_size(const void *p) {
  if (!p) return 0;
  uint32_t e = pz_map_get(p);
  if ((e & 15) == PZ_MK_SMALL) {
    pz_page *pg = pz_small_page_of(pz_chunk_of(p), p);
    if (!pg) return 0;
    pz_block *b = (pz_block *)p; /* freed: 0, as glibc answers for a chunk not in use */
    if (PZ_LIKELY(pz_block_index(pg, p) >= 0)) { /* a block's start: all of it (no division) */
      if ((b->key | 2) == pz_xc_key && pz_small_is_free(pz_tls_heap, pg, b)) return 0;
      return pg->block_size;
    }
    return pg->block_size - (size_t)((const char *)p - pg->start) % pg->block_size;
  }
  if ((e & 15) == PZ_MK_LARGE && ((uintptr_t)p & PZ_CHUNK_MASK) == 0) return pz_large_usable(p);
  return 0;
}

void *pz_realloc(void *p, size_t size) {
  if (!p) return pz_malloc(size);
  if (size == 0) { /* glibc: free and return NULL */
    pz_free(p);
    return NULL;
  }
  if (PZ_UNLIKELY(size > PZ_MAX_ALLOC)) return oom();
  size_t old;
  if (classify(p, pz_map_get(p), "realloc") == K_SMALL) {
    pz_page *pg = pz_small_page_of(pz_chunk_of(p), p);
    if (!pg || pz_block_index(pg, p) < 0) pz_bad_pointer("realloc", "invalid pointer", p);
    pz_block *b = p; /* a freed block carries the free key, as free() checks */
    if (pz_opt(PZ_OPT_CHECKS) && (b->key | 2) == pz_xc_key && pz_small_is_free(pz_tls_heap, pg, b))
      pz_bad_pointer("realloc", "pointer already freed", p);
    old = pg->block_size;
    if (size <= old && (size > old / 2 || old <= 64)) return p; /* fits; not too roomy */
    if (size > old && size < (size_t)pz_opt(PZ_OPT_LARGE_THRESHOLD) && pz_small_grow_medium(pg, size)) {
      atomic_fetch_add_explicit(&pz_gstats.realloc_in_place, 1, memory_order_relaxed);
      return p;
    }
  } else {
    if (size >= (size_t)pz_opt(PZ_OPT_LARGE_THRESHOLD)) {
      void *q = pz_large_realloc(p, size);
      return q ? q : oom();
    }
    old = pz_large_usable(p);
  }
  void *q = pz_malloc(size);
  if (!q) return NULL; /* errno set; p untouched */
  memcpy(q, p, old < size ? old : size);
  pz_free(p);
  return q;
}

void *pz_reallocarray(void *p, size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) return oom();
  return pz_realloc(p, total);
}

/* Alignment `align` is a power of two here. */
static void *alloc_aligned(size_t align, size_t size) {
  if (align <= PZ_ALIGN) return pz_malloc(size);
  if (size > PZ_MAX_ALLOC) return oom();
  pz_ensure_init();
  void *p;
  if (align <= PZ_SLICE_SIZE && size < (size_t)pz_opt(PZ_OPT_LARGE_THRESHOLD))
    p = pz_small_alloc_aligned(size, align, false);
  else /* glibc maps size + alignment */
    p = pz_os_overcommit_refuses(size + align) ? NULL : pz_large_alloc(size, align, false);
  return p ? p : oom();
}

int pz_posix_memalign(void **out, size_t align, size_t size) {
  if (!pz_is_pow2(align) || align % sizeof(void *)) return EINVAL;
  int saved = errno;
  void *p = alloc_aligned(align, size);
  errno = saved;
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}

void *pz_aligned_alloc(size_t align, size_t size) {
  if (!pz_is_pow2(align)) {
    errno = EINVAL;
    return NULL;
  }
  return alloc_aligned(align, size);
}

void *pz_memalign(size_t align, size_t size) {
  if (align > ((size_t)1 << 62)) {
    errno = EINVAL;
    return NULL;
  }
  if (!pz_is_pow2(align)) { /* glibc rounds up to a power of two */
    size_t a = PZ_ALIGN;
    while (a < align) a <<= 1;
    align = a;
  }
  return alloc_aligned(align, size);
}

void *pz_valloc(size_t size) { return alloc_aligned(PZ_PAGE_SIZE, size); }

void *pz_pvalloc(size_t size) {
  if (size > PZ_MAX_ALLOC) return oom();
  size_t rounded = pz_align_up(size ? size : 1, PZ_PAGE_SIZE);
  return alloc_aligned(PZ_PAGE_SIZE, rounded);
}

/* A freed pointer has no usable size: free() then names the double free. */
void pz_free_sized(void *p, size_t size) {
  size_t usable = p && pz_opt(PZ_OPT_CHECKS) ? pz_usable_size(p) : 0;
  if (usable && size > usable)
    pz_fatal("free_sized(): size %zu larger than the block at %p", size, p);
  pz_free(p);
}

void pz_free_aligned_sized(void *p, size_t align, size_t size) {
  size_t usable = p && pz_opt(PZ_OPT_CHECKS) ? pz_usable_size(p) : 0;
  if (usable && ((uintptr_t)p % (align ? align : 1) || size > usable))
    pz_fatal("free_aligned_sized(): alignment %zu or size %zu does not match the block at %p",
             align, size, p);
  pz_free(p);
}

int pz_trim(size_t pad) {
  if (atomic_load(&pz_init_state) != 2) return 0;
  pz_heaps_collect_all();
  return pz_chunk_trim(pad) > 0;
}
