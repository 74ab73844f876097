/* Lending: ready chunks leaving the pool for memory the program mapped
 * itself. Owns the mremap lend (a run moved out whole) and the userfaultfd
 * service's single-chunk lends (taken and completed with trylock only: the
 * service never waits for a lock a faulting thread may hold), and chunks
 * the program mapped over or registered (foreign, clobbered). */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pool-internal.h"

/* ---------------------------------------------------------------- lending */

/* The longest run of READY chunks with huge pages (one VMA: no flag
 * boundary inside), up to max, is moved out of the pool to dst with mremap
 * and grown to dst_len there: the program gets one ordinary anonymous
 * mapping whose head is resident, zero and PMD-mapped, moved in page-table
 * entries (no copy). A fresh range fills the hole in the region. */
/* A lend finished (lock held; released here): chunks held for it are free
 * again for waiting allocations, and ready chunks that left are made anew
 * when the pool keeps some. */
static void lend_done_unlock(struct pz_node_pool *np, bool moved) {
  bool start = moved && np->count[PZ_CS_READY] < pool_min_ready_chunks(np);
  if (start) pool_wake_worker(np);
  pthread_cond_broadcast(&np->done);
  pthread_mutex_unlock(&np->lock);
  if (start) pz_workers_start(np->node);
}

size_t pz_chunk_lend(size_t max, void *dst, size_t dst_len) {
  struct pz_node_pool *np = pool_current();
  /* mmap may be called from a signal handler that interrupted this thread
   * inside malloc: never wait for the pool lock here. Once it was free the
   * thread does not hold it, and waiting for it again below is safe. */
  if (pthread_mutex_trylock(&np->lock) != 0) return 0;
  struct pz_region *best = NULL;
  size_t best_i = 0, best_n = 0;
  for (struct pz_region *r = np->regions; r && best_n < max; r = r->next)
    for (size_t i = 0; i < r->nchunks && best_n < max;) {
      if (r->state[i] != PZ_CS_READY || r->nohuge[i]) {
        i++;
        continue;
      }
      size_t n = 0;
      while (i + n < r->nchunks && n < max && r->state[i + n] == PZ_CS_READY && !r->nohuge[i + n]) n++;
      if (n > best_n) best = r, best_i = i, best_n = n;
      i += n;
    }
  if (!best) {
    pthread_mutex_unlock(&np->lock);
    return 0;
  }
  uint32_t id = pool_new_claim_id(np, false) | PZ_CLAIM_MOVE; /* nobody may take these meanwhile */
  for (size_t k = 0; k < best_n; k++) pool_claim_chunk(np, best, best_i + k, id);
  pthread_mutex_unlock(&np->lock);
  char *src = best->base + (best_i << PZ_CHUNK_SHIFT);
  size_t len = best_n << PZ_CHUNK_SHIFT;
  /* one flag, but maybe still two mappings (pages moved in, or faulted
   * under another anon_vma): asked first, as a failed move can take dst */
  bool moved = pz_os_one_mapping(src, len) && pz_os_move(src, len, dst, dst_len) == 0;
  bool refilled = moved && pool_refill(best, best_i, best_n, false);
  pthread_mutex_lock(&np->lock);
  for (size_t k = 0; k < best_n; k++) {
    size_t i = best_i + k;
    best->claim_id[i] = 0;
    if (!moved) {
      pool_transition(np, best, i, PZ_CE_ZEROED); /* still ready, still ours */
      continue;
    }
    pool_transition(np, best, i, PZ_CE_DISCARD); /* a fresh range in its place */
    best->released[i] = 0;
    if (!refilled) { /* someone else's mapping sits there now: never hand it out */
      pool_transition(np, best, i, PZ_CE_ALLOC);
      if (k) pool_set_state(np, best, i, PZ_CS_TAIL);
    }
  }
  if (moved && !refilled) {
    best->runlen[best_i] = (uint32_t)best_n;
    pz_map_set_range(src, best_n, PZ_MK_NONE, 0);
  }
  lend_done_unlock(np, moved);
  return moved ? best_n : 0;
}


size_t pz_chunk_lend_ready(unsigned node, void **out, size_t max) {
  struct pz_node_pool *np = &pz_nodes[node];
  size_t n = 0;
  /* the userfaultfd threads never wait for the lock: the thread that holds
   * it may be the one waiting for them (a signal handler touching a served
   * mapping while its thread is inside malloc) */
  if (pthread_mutex_trylock(&np->lock) != 0) return 0;
  for (struct pz_region *r = np->regions; r && n < max && np->count[PZ_CS_READY]; r = r->next)
    for (size_t i = 0; i < r->nchunks && n < max && np->count[PZ_CS_READY]; i++)
      /* COLD chunks too (4 KiB pages, not yet made huge again: 18-66 us
       * a move against 1.4, still far under a fault); never other nohuge
       * ones, whose pages were kept small on purpose */
      if (r->state[i] == PZ_CS_READY && (!r->nohuge[i] || r->nohuge[i] == PZ_NH_COLD) && !r->foreign[i]) {
        pool_claim_chunk(np, r, i, pool_new_claim_id(np, false) | PZ_CLAIM_MOVE);
        out[n++] = r->base + (i << PZ_CHUNK_SHIFT);
      }
  pthread_mutex_unlock(&np->lock);
  return n;
}

bool pz_chunk_lend_one_done(void *chunk, size_t moved, bool stale) {
  size_t i;
  struct pz_region *r = pool_region_of(chunk, &i);
  struct pz_node_pool *np = &pz_nodes[r->node];
  if (!moved && stale && pz_os_discard(chunk, PZ_CHUNK_SIZE) == 0) moved = PZ_CHUNK_SIZE;
  if (pthread_mutex_trylock(&np->lock) != 0) return false; /* as above: the caller comes back */
  r->claim_id[i] = 0;
  /* pages moved out (or given back): the range reads zero again, as a fresh one */
  pool_transition(np, r, i, moved ? PZ_CE_DISCARD : PZ_CE_ZEROED);
  r->idle_since[i] = pool_now_ms();
  if (r->foreign[i]) pool_clobber_one(np, r, i);
  lend_done_unlock(np, moved);
  return true;
}

bool pz_chunk_overlaps(const void *p, size_t len) {
  uintptr_t a = (uintptr_t)p & ~(uintptr_t)PZ_CHUNK_MASK, end = (uintptr_t)p + len;
  for (; a < end && a >= ((uintptr_t)p & ~(uintptr_t)PZ_CHUNK_MASK); a += PZ_CHUNK_SIZE)
    if (pz_map_get((const void *)a)) return true;
  return false;
}

/* Lock held: a program mapped over chunk i, or registered it with its own
 * userfaultfd. A free chunk leaves the pool for good (it is not ours to
 * touch any more; its address space is lost); one in use or worked on is
 * replaced, never reset, when it comes back (sanitize). */
void pool_clobber_one(struct pz_node_pool *np, struct pz_region *r, size_t i) {
  r->foreign[i] = 1;
  if (!is_free_state(r->state[i])) return;
  pool_transition(np, r, i, PZ_CE_ALLOC);
  r->runlen[i] = 1;
  pz_map_set_range(r->base + (i << PZ_CHUNK_SHIFT), 1, PZ_MK_NONE, 0);
}

void pz_chunk_clobbered(const void *p, size_t len) {
  if (!pz_chunk_overlaps(p, len)) return;
  /* marked at once, without the lock (a signal handler's MAP_FIXED may
   * interrupt a thread holding it): nothing takes or claims a free foreign
   * chunk (pool_avail(), claim()), and one in use is replaced when it comes
   * back; where the lock is free, a free one leaves the pool now */
  uintptr_t a = (uintptr_t)p & ~(uintptr_t)PZ_CHUNK_MASK, end = (uintptr_t)p + len;
  for (; a < end && a >= ((uintptr_t)p & ~(uintptr_t)PZ_CHUNK_MASK); a += PZ_CHUNK_SIZE) {
    size_t i;
    struct pz_region *r = pool_region_of((const void *)a, &i);
    if (!r) continue;
    __atomic_store_n(&r->foreign[i], 1, __ATOMIC_RELEASE);
    struct pz_node_pool *np = &pz_nodes[r->node];
    if (pthread_mutex_trylock(&np->lock) != 0) continue;
    if (pool_region_of((const void *)a, &i) == r) pool_clobber_one(np, r, i);
    pthread_mutex_unlock(&np->lock);
  }
}

bool pz_pool_serves(unsigned node) {
  struct pz_node_pool *np = &pz_nodes[node];
  return __atomic_load_n(&np->count[PZ_CS_READY], __ATOMIC_RELAXED) ||
         __atomic_load_n(&np->count[PZ_CS_BUSY], __ATOMIC_RELAXED) || pool_min_ready_chunks(np);
}

