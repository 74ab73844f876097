/* The chunk pool's own shared internals (the pool/ files only; the other layers
 * see the pool through internal.h). See chunk.c for the design: states,
 * locking, address space. Everything here is called with the node's lock
 * held unless it says otherwise. */
#ifndef PZ_POOL_INTERNAL_H
#define PZ_POOL_INTERNAL_H

#include "pool/pool.h"

static inline bool is_free_state(uint8_t s) { return s <= PZ_CS_DIRTY; }
static inline bool is_zero_state(uint8_t s) { return s == PZ_CS_UNTOUCHED || s == PZ_CS_READY; }
/* A chunk an allocation may use: free, or being pre-faulted (stealable). */
static inline bool pool_avail(const struct pz_region *r, size_t i) {
  uint8_t s = r->state[i];
  if (PZ_UNLIKELY(__atomic_load_n(&r->foreign[i], __ATOMIC_ACQUIRE))) return false; /* the program's now */
  return s <= PZ_CS_DIRTY || (s == PZ_CS_BUSY && (r->claim_id[i] & PZ_CLAIM_POP));
}

/* find_run's preference (see score() in region.c) */
enum { SCORE_MALLOC = 0, SCORE_ZERO = 1, SCORE_KEEP_READY = 2 };

PZ_HIDDEN extern _Atomic size_t pool_regions_made, pool_reserved_bytes, pool_thp_refused; /* all nodes */

/* region.c: regions, the chunk map, states, and the memory state of chunks
 * (commit, decommit, advice, sanitize) */
PZ_HIDDEN uint32_t pool_now_ms(void);
PZ_HIDDEN struct pz_region *pool_region_of(const void *p, size_t *idx);
PZ_HIDDEN int pool_cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, long ms);
PZ_HIDDEN void pool_cond_wait(pthread_cond_t *c, pthread_mutex_t *m); /* not a cancellation point */
PZ_HIDDEN void pool_set_state(struct pz_node_pool *np, struct pz_region *r, size_t i, enum pz_chunk_state s);
PZ_HIDDEN void pool_transition(struct pz_node_pool *np, struct pz_region *r, size_t i, enum pz_chunk_event e);
PZ_HIDDEN uint32_t pool_new_claim_id(struct pz_node_pool *np, bool pop);
PZ_HIDDEN void pool_claim_chunk(struct pz_node_pool *np, struct pz_region *r, size_t i, uint32_t id);
PZ_HIDDEN size_t pool_unmap_free_regions(struct pz_node_pool *np);
PZ_HIDDEN struct pz_region *pool_region_create(struct pz_node_pool *np, size_t need_chunks, size_t align);
PZ_HIDDEN long pool_find_run(struct pz_region *r, size_t n, size_t align, int mode, int *best_score);
PZ_HIDDEN struct pz_node_pool *pool_current(void);
PZ_HIDDEN size_t pool_min_ready_chunks(const struct pz_node_pool *np);
PZ_HIDDEN void pool_wake_worker(struct pz_node_pool *np);
PZ_HIDDEN bool pool_thp_on(void);
PZ_HIDDEN bool pool_note_advice(uint8_t *nh, bool want_small_pages, bool fresh, bool cold);
PZ_HIDDEN void pool_apply_advice(struct pz_region *r, size_t i, size_t n);
PZ_HIDDEN void pool_lazyfree(struct pz_region *r, size_t i, size_t n);
PZ_HIDDEN int pool_commit(struct pz_region *r, size_t i, size_t n);
PZ_HIDDEN void pool_fresh_range(struct pz_region *r, size_t i, size_t n);
PZ_HIDDEN int pool_decommit(struct pz_region *r, size_t i, size_t n);
PZ_HIDDEN bool pool_sanitize(struct pz_region *r, size_t i, size_t n, bool *fresh);
PZ_HIDDEN long pool_find_run_busy(struct pz_region *r, size_t n, size_t align, int mode, int *best_score, bool busy_ok);

/* chunk.c: allocation and freeing of runs */
PZ_HIDDEN void pool_release_range(struct pz_node_pool *np, struct pz_region *r, size_t i, size_t n);
PZ_HIDDEN bool pool_refill(struct pz_region *r, size_t i, size_t n, bool rw);

/* lend.c: ready chunks leaving the pool (mremap, userfaultfd moves) */
PZ_HIDDEN void pool_clobber_one(struct pz_node_pool *np, struct pz_region *r, size_t i);

/* release.c: claims for the workers, idle memory given back, limits, trim */
PZ_HIDDEN size_t pool_shrink_node(unsigned node, size_t give, size_t floor);
PZ_HIDDEN void pool_make_room(struct pz_node_pool *np, size_t fresh);

#endif
