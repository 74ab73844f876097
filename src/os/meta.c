/* Metadata memory: heaps, region state arrays, chunk-map leaves. Bump
 * allocated from 1 MiB blocks that are never freed, so a pointer to
 * metadata stays valid for the life of the process (remote frees rely on
 * heaps never going away). Guarded by a spinlock held for a few
 * instructions; fork-safe because the child re-initialises it. */
#include <errno.h>

#include "os/os.h"

#define META_BLOCK (256 * PZ_KiB)

static atomic_flag meta_lock = ATOMIC_FLAG_INIT;
static char *meta_cur, *meta_end;

void *pz_meta_alloc(size_t size) {
  size = pz_align_up(size, 64);
  while (atomic_flag_test_and_set_explicit(&meta_lock, memory_order_acquire)) {}
  if ((size_t)(meta_end - meta_cur) < size) {
    size_t len = size > META_BLOCK ? pz_align_up(size, PZ_PAGE_SIZE) : META_BLOCK;
    char *p = pz_os_map_aligned(len, PZ_PAGE_SIZE);
    if (!p) {
      atomic_flag_clear_explicit(&meta_lock, memory_order_release);
      return NULL;
    }
    if (size > META_BLOCK) { /* dedicated block; keep the current one */
      atomic_flag_clear_explicit(&meta_lock, memory_order_release);
      return p;
    }
    meta_cur = p;
    meta_end = p + len;
  }
  void *r = meta_cur;
  meta_cur += size;
  atomic_flag_clear_explicit(&meta_lock, memory_order_release);
  return r;
}

void pz_meta_prefork(void) {
  while (atomic_flag_test_and_set_explicit(&meta_lock, memory_order_acquire)) {}
}
void pz_meta_postfork(void) { atomic_flag_clear_explicit(&meta_lock, memory_order_release); }
