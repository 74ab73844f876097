/* Chunk pool: the one source of memory for every other layer.
 *
 * Owns: regions (2 MiB-aligned reservations of chunks, madvised for huge
 * pages, bound to a NUMA node), the state of every chunk, runs of chunks
 * handed out, the chunk map that lets free() classify any pointer without
 * touching it, and the hand-off to the pool workers (worker.c).
 *
 * Synchronisation, per node pool:
 *   np->lock     the node's region list, state[], runlen[], nfree, counts,
 *                map writes. Never held across zeroing, populating or
 *                madvise of chunks: a chunk being worked on is BUSY, which
 *                keeps everyone else off it.
 *   np->work     workers sleep on it; signalled when work appears.
 *   np->done     broadcast when BUSY chunks settle; an allocation that
 *                finds no free run but BUSY chunks waits here (a worker
 *                batch takes well under a millisecond) rather than fault a
 *                fresh region.
 * Map reads are lock-free: an entry for a chunk in use was written before
 * its memory was handed out. A region is unmapped only when all of it is
 * free and the address space is needed (RLIMIT_AS); its struct and id stay
 * (a husk, reused by the next region), so lock-free readers never see freed
 * metadata.
 *
 * Address space: regions are PROT_NONE reservations, grown geometrically
 * (the first is 2 MiB, each next as large as the node's others together,
 * at most 1 GiB, or the request). A chunk is committed (read/write) when
 * it is first used, and decommitted (replaced by a fresh reservation) when
 * it goes back to the kernel: what is reserved but unused is neither RSS,
 * commit charge (vm.overcommit_memory=2), locked memory (mlockall) nor
 * data segment (RLIMIT_DATA). A run the program gives back is restored
 * first (sanitize()): whatever it set on the memory (protection, locks,
 * fork and dump flags, its own userfaultfd or mappings) must not reach the
 * workers or the next owner.
 *
 * Allocation policy: see score() (region.c). The chunk state machine is
 * pz_chunk_next_state() and nothing else changes a state.
 *
 * Files: chunk.c (this: states, allocating and freeing runs, moves),
 * region.c (regions, the map, memory state), lend.c (ready chunks lent to
 * the program's mappings), release.c (claims, release, limits, trim,
 * stats, fork); their shared internals are in pool-internal.h.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pool-internal.h"

/* ---------------------------------------------------------------- states */

int pz_chunk_next_state(enum pz_chunk_state s, enum pz_chunk_event e) {
  bool free_state = s == PZ_CS_UNTOUCHED || s == PZ_CS_READY || s == PZ_CS_DIRTY;
  switch (e) {
  case PZ_CE_ALLOC: return free_state ? PZ_CS_USED : -1;
  case PZ_CE_FREE: return (s == PZ_CS_USED || s == PZ_CS_TAIL) ? PZ_CS_DIRTY : -1;
  case PZ_CE_CLAIM: return free_state ? PZ_CS_BUSY : -1;
  case PZ_CE_ZEROED: return s == PZ_CS_BUSY ? PZ_CS_READY : s == PZ_CS_TAKEN ? PZ_CS_TAIL : -1;
  case PZ_CE_DISCARD: return (s == PZ_CS_BUSY || s == PZ_CS_DIRTY) ? PZ_CS_UNTOUCHED : -1;
  /* a failed populate leaves the chunk untouched (zero): a taken one is handed over all the same */
  case PZ_CE_UNCLAIM: return s == PZ_CS_BUSY ? PZ_CS_DIRTY : s == PZ_CS_TAKEN ? PZ_CS_TAIL : -1;
  case PZ_CE_TAKE: return s == PZ_CS_BUSY ? PZ_CS_TAKEN : -1;
  case PZ_CE_STEAL: return s == PZ_CS_BUSY ? PZ_CS_USED : -1;
  }
  return -1;
}

#define ZERO_RANGES 16

/* Huge pages for small-object chunks only once the small heap is big: a
 * partly used chunk costs a whole 2 MiB page of RSS, which dominates small
 * heaps (measured: ls 4.2 vs 2.2 MiB, a python run 44 vs 35 MiB) and is
 * noise above this. Large runs always get huge pages. */
#define SMALL_HUGE_MIN_CHUNKS 32
_Atomic size_t pz_small_used_slices; /* slices in use by small/medium spans, all heaps */


/* Chunks [i + keep, i + n) of the run at i, just taken, could not be
 * committed: free again (dirty where committed, else reserved), the run
 * keeping `keep` chunks. */
static void unwind(struct pz_node_pool *np, struct pz_region *r, size_t i, size_t keep, size_t n) {
  pthread_mutex_lock(&np->lock);
  if (!keep && (pz_map_get(r->base + (i << PZ_CHUNK_SHIFT)) & 15) == PZ_MK_SMALL) np->small_chunks -= n;
  r->runlen[i] = (uint32_t)keep;
  pool_release_range(np, r, i + keep, n - keep);
  for (size_t k = keep; k < n; k++)
    if (!r->rw[i + k]) pool_transition(np, r, i + k, PZ_CE_DISCARD);
  pthread_cond_broadcast(&np->done);
  pthread_mutex_unlock(&np->lock);
}

void *pz_chunk_alloc(size_t n, size_t align, int flags, enum pz_map_kind kind, bool *zero_out,
                     size_t *zeroed_out) {
  pz_workers_start_deferred();
  if (n == 0 || n > (PZ_MAX_ALLOC >> PZ_CHUNK_SHIFT)) return NULL;
  struct pz_node_pool *np = pool_current();
  pthread_mutex_lock(&np->lock);
  int mode = (flags & PZ_CA_PREFER_ZERO) ? SCORE_ZERO : SCORE_MALLOC;
  if (kind == PZ_MK_SMALL && np->count[PZ_CS_READY] <= pool_min_ready_chunks(np) && pool_min_ready_chunks(np))
    mode = SCORE_KEEP_READY;
  struct pz_region *r = NULL;
  long best_i = -1;
  int best_s = -1;
  for (int tries = 0;; tries++) {
    best_s = -1;
    for (struct pz_region *q = np->regions; q; q = q->next) {
      if (q->nfree + q->npop < n) continue;
      int s;
      long i = pool_find_run(q, n, align, mode, &s);
      /* best fit among equals: the fullest region, so that small requests
       * do not break up the long free runs large ones need */
      if (i >= 0 && (s > best_s || (s == best_s && q->nfree < r->nfree))) {
        best_s = s;
        best_i = i;
        r = q;
      }
    }
    /* Workers hold some chunks for a moment: wait for them rather than
     * fault fresh memory, when waiting could make a run appear. */
    if (r || !np->count[PZ_CS_BUSY] || tries >= 8 ||
        np->count[PZ_CS_BUSY] + np->count[PZ_CS_DIRTY] + np->count[PZ_CS_READY] +
                np->count[PZ_CS_UNTOUCHED] < n)
      break;
    np->st.busy_waits++;
    pool_cond_wait_ms(&np->done, &np->lock, 10); /* a batch in flight, or a lend the uffd threads complete */
  }
  /* only ready chunks left, and the program keeps them for itself
   * (prezero_reserve, POOL_MIN): small objects take fresh address space */
  if (r && mode == SCORE_KEEP_READY && best_s == 0) {
    struct pz_region *q = pool_region_create(np, n, align);
    int s;
    long i = q ? pool_find_run(q, n, align, mode, &s) : -1;
    if (i >= 0) r = q, best_i = i;
  }
  bool take_busy = false;
  if (!r && np->count[PZ_CS_BUSY]) { /* a run through chunks the workers hold? */
    for (struct pz_region *q = np->regions; q; q = q->next) {
      int s;
      long i = q->nfree + np->count[PZ_CS_BUSY] >= n ? pool_find_run_busy(q, n, align, mode, &s, true) : -1;
      if (i >= 0 && s > best_s) best_s = s, best_i = i, r = q;
    }
    take_busy = r != NULL;
  }
  if (!r) {
    r = pool_region_create(np, n, align);
    int s;
    if (r) best_i = pool_find_run(r, n, align, mode, &s);
  }
  if (!r || best_i < 0) {
    pthread_mutex_unlock(&np->lock);
    return NULL;
  }
  /* Huge pages: small-object chunks get them only in a big and dense small
   * heap (a chunk holding one 1 MiB block would otherwise cost 2 MiB of
   * RSS). A large run under HUGE_MIN faults 4 KiB pages into its fresh
   * chunks: a calloc'd table used sparsely (a hash table sized for the
   * worst case) then costs the pages touched, not 2 MiB per chunk touched
   * (measured: bench-guests' 12 MiB table, 1.9 MiB of 2 MiB resident).
   * Chunks resident already (ready, dirty, or a worker's pre-faulting one,
   * which becomes resident whole) keep their pages; so does a run
   * PREZERO_POPULATE will populate. */
  bool thp = pool_thp_on(), want_small = false, sparse = false, cold_small = false, readvise = false;
  if (thp) {
    size_t used = (size_t)atomic_load_explicit(&pz_small_used_slices, memory_order_relaxed);
    want_small = kind == PZ_MK_SMALL && (np->small_chunks < SMALL_HUGE_MIN_CHUNKS ||
                                         used * 4 < np->small_chunks * (PZ_SLICES - 1) * 3);
    size_t bytes = n << PZ_CHUNK_SHIFT;
    bool populated = pz_opt(PZ_OPT_POPULATE) != PZ_POP_OFF && bytes >= (size_t)pz_opt(PZ_OPT_POPULATE_MIN);
    sparse = kind == PZ_MK_LARGE && bytes < (size_t)pz_opt(PZ_OPT_HUGE_MIN) && !populated;
    /* fresh chunks: the page size that faults faster here (worker.c) */
    cold_small = !sparse && !want_small && !(kind == PZ_MK_LARGE && populated) && pz_pool_cold_small_pages();
  }
  size_t ranges[ZERO_RANGES][2], nranges = 0; /* dirty chunk ranges [start, end) */
  size_t ready = 0, untouched = 0;
  for (size_t k = 0; k < n; k++) {
    size_t i = (size_t)best_i + k;
    uint8_t s = r->state[i];
    ready += s == PZ_CS_READY;
    untouched += s == PZ_CS_UNTOUCHED;
    if (thp)
      readvise |= pool_note_advice(&r->nohuge[i], want_small || ((sparse || cold_small) && s == PZ_CS_UNTOUCHED),
                                   s == PZ_CS_UNTOUCHED, cold_small);
    if (cold_small && s == PZ_CS_UNTOUCHED) np->st.cold_small_bytes += PZ_CHUNK_SIZE;
    if (r->released[i]) { /* given back earlier: this allocation faults it in again */
      r->released[i] = 0;
      if (s == PZ_CS_UNTOUCHED) np->st.refaulted_bytes += PZ_CHUNK_SIZE;
    }
    if (s == PZ_CS_BUSY && (r->claim_id[i] & PZ_CLAIM_POP)) { /* being pre-faulted: zero, ours now */
      pool_transition(np, r, i, PZ_CE_STEAL);
      r->claim_id[i] = 0;
      r->npop--;
      untouched++;
      if (k) pool_set_state(np, r, i, PZ_CS_TAIL);
      continue;
    }
    if (s == PZ_CS_BUSY) { /* the worker finishes it (zero) and hands it over */
      pool_transition(np, r, i, PZ_CE_TAKE);
      ready++;
      continue;
    }
    if (!is_zero_state(s)) {
      if (nranges && ranges[nranges - 1][1] == k) ranges[nranges - 1][1] = k + 1;
      else if (nranges < ZERO_RANGES) {
        ranges[nranges][0] = k;
        ranges[nranges++][1] = k + 1;
      } else ranges[nranges - 1][1] = k + 1; /* out of slots: widen the last */
    }
    pool_transition(np, r, i, PZ_CE_ALLOC);
    if (k) pool_set_state(np, r, i, PZ_CS_TAIL);
  }
  if (take_busy) {
    np->st.busy_waits++;
    for (size_t k = 0; k < n; k++)
      while (r->state[(size_t)best_i + k] == PZ_CS_TAKEN) pool_cond_wait(&np->done, &np->lock);
    pool_set_state(np, r, (size_t)best_i, PZ_CS_USED); /* the head may have been handed over as TAIL */
  }
  r->runlen[best_i] = (uint32_t)n;
  if (kind == PZ_MK_SMALL) np->small_chunks += n;
  char *base = r->base + ((size_t)best_i << PZ_CHUNK_SHIFT);
  pz_map_set_range(base, 1, kind, r->id);
  if (n > 1)
    pz_map_set_range(base + PZ_CHUNK_SIZE, n - 1,
                     kind == PZ_MK_LARGE ? PZ_MK_LARGE_TAIL : kind, r->id);
  np->st.runs_alloc++;
  if (flags & PZ_CA_PREFER_ZERO) {
    np->st.zero_from_ready += ready << PZ_CHUNK_SHIFT;
    np->st.zero_from_untouched += untouched << PZ_CHUNK_SHIFT;
  }
  bool start = ready && np->count[PZ_CS_READY] < pool_min_ready_chunks(np);
  if (start) pool_wake_worker(np);
  pthread_mutex_unlock(&np->lock);
  if (untouched) pool_make_room(np, untouched);
  if (readvise) pool_apply_advice(r, (size_t)best_i, n);
  if (pool_commit(r, (size_t)best_i, n) != 0) {
    /* the commit limit, RLIMIT_DATA or vm.max_map_count: free memory of
     * ours may be what stands in the way; else fail as mmap would */
    pool_shrink_node(np->node, SIZE_MAX, 0);
    if (pool_commit(r, (size_t)best_i, n) != 0) {
      unwind(np, r, (size_t)best_i, 0, n);
      return NULL;
    }
  }
  /* mlockall(MCL_FUTURE): memory handed out is locked, as a fresh mapping
   * would be (chunks the pool had before the call are not) */
  if (atomic_load_explicit(&pz_mcl_future, memory_order_relaxed))
    syscall(SYS_mlock, base, n << PZ_CHUNK_SHIFT);
  if (start) pz_workers_start(np->node);
  size_t zeroed = 0;
  if ((flags & PZ_CA_ZERO) == PZ_CA_ZERO) {
    for (size_t k = 0; k < nranges; k++) {
      size_t off = ranges[k][0] << PZ_CHUNK_SHIFT, len = (ranges[k][1] - ranges[k][0]) << PZ_CHUNK_SHIFT;
      if (pz_os_mostly_absent(base + off, len) && pz_os_discard(base + off, len) == 0) continue;
      memset(base + off, 0, len);
      zeroed += len;
    }
    nranges = 0;
  }
  if (zero_out) *zero_out = nranges == 0;
  if (zeroed_out) *zeroed_out = zeroed;
  return base;
}

/* The chunk is backed by 4 KiB pages (giving back part of it does not
 * split a huge page): advised MADV_NOHUGEPAGE before its first fault. One
 * advised later may still hold the huge pages of an earlier use (the advice
 * does not split them). Read without the lock: the owner asks, a stale
 * answer costs only a split or a purge skipped. */
bool pz_chunk_small_pages(const void *chunk) {
  size_t i;
  struct pz_region *r = pool_region_of(chunk, &i);
  uint8_t nh = r ? __atomic_load_n(&r->nohuge[i], __ATOMIC_RELAXED) : 0;
  return r && (!pool_thp_on() || nh == PZ_NH_SMALL || nh == PZ_NH_COLD);
}

size_t pz_chunk_run_len(const void *base) {
  size_t i;
  struct pz_region *r = pool_region_of(base, &i);
  return r ? r->runlen[i] : 0;
}

/* Mark chunks [i, i+n) of r free and DIRTY (lock held). */
void pool_release_range(struct pz_node_pool *np, struct pz_region *r, size_t i, size_t n) {
  uint32_t now = pool_now_ms();
  for (size_t k = 0; k < n; k++) {
    pool_transition(np, r, i + k, PZ_CE_FREE);
    r->idle_since[i + k] = now;
  }
  pz_map_set_range(r->base + (i << PZ_CHUNK_SHIFT), n, PZ_MK_FREE, r->id);
}

/* Free resident memory (dirty + ready) is kept up to PREZERO_POOL_MAX per
 * node; the workers give back what is above it once it has been idle for
 * PREZERO_DECAY_MS. Without workers, a run freed beyond it is discarded at
 * once, while we still own it. */
static bool over_max(struct pz_node_pool *np, size_t adding) {
  size_t kept = __atomic_load_n(&np->count[PZ_CS_DIRTY], __ATOMIC_RELAXED) +
                __atomic_load_n(&np->count[PZ_CS_READY], __ATOMIC_RELAXED) +
                __atomic_load_n(&np->count[PZ_CS_BUSY], __ATOMIC_RELAXED);
  return ((kept + adding) << PZ_CHUNK_SHIFT) > (size_t)pz_opt(PZ_OPT_POOL_MAX);
}

static bool workers_usable(struct pz_node_pool *np) {
  return pz_opt(PZ_OPT_ZERO) && atomic_load_explicit(&np->workers, memory_order_relaxed) != -2;
}

/* Free chunks [i, i+n) of r; `head` is the run's head and `keep` how many
 * chunks the run keeps (0 when the whole run goes). */
static void free_range(struct pz_region *r, size_t head, size_t keep, size_t i, size_t n) {
  struct pz_node_pool *np = &pz_nodes[r->node];
  bool fresh, ok = pool_sanitize(r, i, n, &fresh);
  bool workers = workers_usable(np), over = over_max(np, n);
  /* Kept memory would hold what another allocation (ours or anyone's,
   * glibc having unmapped it) may need: commit charge under
   * vm.overcommit_memory=2, locked memory (RLIMIT_MEMLOCK) under
   * mlockall(MCL_FUTURE). It goes back at once there. */
  bool mcl = atomic_load_explicit(&pz_mcl_future, memory_order_relaxed);
  bool discard = ok && !fresh && ((!workers && over) || pz_kernel.overcommit == 2 || mcl) && pool_decommit(r, i, n) == 0;
  if (ok && !fresh && !discard) pool_lazyfree(r, i, n);
  pthread_mutex_lock(&np->lock);
  if ((pz_map_get(r->base + (head << PZ_CHUNK_SHIFT)) & 15) == PZ_MK_SMALL) np->small_chunks -= n;
  r->runlen[head] = (uint32_t)keep;
  if (!ok) { /* sealed, or another mapping sits there: in use for ever, unknown to free() */
    if (i != head) pool_set_state(np, r, i, PZ_CS_USED);
    r->runlen[i] = (uint32_t)n;
    pz_map_set_range(r->base + (i << PZ_CHUNK_SHIFT), n, PZ_MK_NONE, 0);
    pthread_mutex_unlock(&np->lock);
    return;
  }
  pool_release_range(np, r, i, n);
  if (discard || fresh) {
    for (size_t k = 0; k < n; k++) {
      pool_transition(np, r, i + k, PZ_CE_DISCARD);
      r->released[i + k] = discard;
    }
    np->st.discarded_bytes += n << PZ_CHUNK_SHIFT;
  }
  np->st.runs_free++;
  /* under RLIMIT_AS a region all free is unmapped at once: glibc would have
   * unmapped the block, and the program may need the address space */
  if (r->nfree == r->nchunks && !r->npop && (mcl || atomic_load_explicit(&pz_as_limited, memory_order_relaxed))) pool_unmap_free_regions(np);
  /* wake a worker for a batch, not for every chunk: a single chunk freed and
   * allocated again at once is better zeroed inline than raced for; and
   * for memory past the maximum, which it gives back once idle */
  bool work = workers && (n > 1 || over || np->count[PZ_CS_DIRTY] >= (size_t)pz_opt(PZ_OPT_BATCH));
  if (work) pool_wake_worker(np);
  pthread_mutex_unlock(&np->lock);
  /* running (not woken) also when the memory will only decay later */
  if (work || (workers && pz_opt(PZ_OPT_RETAIN_MS))) pz_workers_start(np->node);
}

void pz_chunk_free(void *base) {
  pz_workers_start_deferred();
  size_t i;
  struct pz_region *r = pool_region_of(base, &i);
  free_range(r, i, 0, i, r->runlen[i]);
}

/* Map a fresh reservation into the hole that a move left at chunks
 * [i, i+n) of r, advised and bound as the region is, and committed when
 * `rw` (it is written next). False when something is mapped there, or
 * (rw) it cannot be committed. */
bool pool_refill(struct pz_region *r, size_t i, size_t n, bool rw) {
  if (pz_os_remap_fresh(r->base + (i << PZ_CHUNK_SHIFT), n << PZ_CHUNK_SHIFT) != 0) return false;
  pool_fresh_range(r, i, n);
  return !rw || pool_commit(r, i, n) == 0;
}

/* mremap chunks [i, i+n) of r onto chunks [j, j+n) of q (ours). PZ_MOVED;
 * PZ_MOVE_NO or MOVE_SPLIT: nothing moved, the destination whole (maybe
 * fresh); PZ_MOVE_LOST: nothing moved and the destination is not ours any
 * more. A 6.1 kernel unmaps the destination before it checks the source
 * (measured): so the source is asked first whether it is one mapping. When
 * a move fails still (ENOMEM at vm.max_map_count), a destination still
 * mapped is ours (the kernel failed first); a hole is filled again, and a
 * mapping found in it is someone else's (mapped there meanwhile): never
 * touched again. */
enum { MOVE_SPLIT = -1 }; /* nothing moved: the source spans mappings */
static int move_pages(struct pz_region *r, size_t i, struct pz_region *q, size_t j, size_t n) {
  char *src = r->base + (i << PZ_CHUNK_SHIFT), *dst = q->base + (j << PZ_CHUNK_SHIFT);
  size_t len = n << PZ_CHUNK_SHIFT;
  if (!pz_os_one_mapping(src, len)) return MOVE_SPLIT;
  if (pz_os_move(src, len, dst, len) == 0) return PZ_MOVED;
  if (pz_os_mapped(dst, len)) return PZ_MOVE_NO;
  return pool_refill(q, j, n, true) ? PZ_MOVE_NO : PZ_MOVE_LOST;
}

int pz_chunk_move(void *from, void *to) {
  size_t i, j;
  struct pz_region *r = pool_region_of(from, &i), *q = pool_region_of(to, &j);
  size_t n = r->runlen[i], m = q->runlen[j], moved = 0, step = n;
  /* to the same length: the rest of `to` keeps its own (maybe ready) pages.
   * The whole run at once, else chunk by chunk: the pool's moves and refills
   * leave mappings that do not merge, and a run may span several. */
  int res = move_pages(r, i, q, j, n);
  if (res == PZ_MOVED) moved = n;
  if (res == MOVE_SPLIT)
    for (step = 1; moved < n; moved++)
      if ((res = move_pages(r, i + moved, q, j + moved, 1)) != PZ_MOVED) break;
  char *src = from, *dst = to;
  size_t len = moved << PZ_CHUNK_SHIFT;
  if (res == PZ_MOVE_LOST) {
    /* chunks [moved, moved+step) of `to` are gone: put what moved back
     * into `from` (a copy) and give the rest of `to` up */
    if (moved && !pool_refill(r, i, moved, true)) /* both holes taken: nothing left to stand on */
      pz_fatal("mremap failed and %p could not be mapped again", from);
    memcpy(src, dst, len);
    if (moved) free_range(q, j, 0, j, moved);
    pz_map_set_range(dst + len, step, PZ_MK_NONE, 0); /* USED for ever: a stale free is caught */
    if (moved + step < m) free_range(q, j, moved ? 0 : step, j + moved + step, m - moved - step);
    return PZ_MOVE_LOST;
  }
  if (!moved) return PZ_MOVE_NO;
  if (moved < n) memcpy(dst + len, src + len, (n - moved) << PZ_CHUNK_SHIFT);
  /* mremap took the source's advice along: the destination chunks get
   * their own back (they hold moved pages now, of whatever size: advised,
   * backing unknown) */
  for (size_t k = 0; k < moved; k++)
    if (q->nohuge[j + k]) q->nohuge[j + k] = PZ_NH_ADVISED;
  if (pool_thp_on()) pool_apply_advice(q, j, moved);
  /* the moved part of `from` is a hole now: map fresh zero memory back so
   * the region stays whole; what was copied is freed as any run is */
  bool refilled = pool_refill(r, i, moved, false);
  if (moved < n) free_range(r, i, moved, i + moved, n - moved);
  if (!refilled) {
    /* someone else's mapping may sit there now: the chunks stay USED forever
     * (never handed out again), and the map forgets them, so a stale free
     * of the old pointer is caught */
    pz_map_set_range(src, moved, PZ_MK_NONE, 0);
    return PZ_MOVED;
  }
  struct pz_node_pool *np = &pz_nodes[r->node];
  pthread_mutex_lock(&np->lock);
  r->runlen[i] = 0;
  pool_release_range(np, r, i, moved);
  for (size_t k = 0; k < moved; k++) pool_transition(np, r, i + k, PZ_CE_DISCARD);
  if (moved == n) np->st.runs_free++;
  pthread_mutex_unlock(&np->lock);
  return PZ_MOVED;
}

void pz_chunk_shrink(void *base, size_t n) {
  size_t i;
  struct pz_region *r = pool_region_of(base, &i);
  size_t old = r->runlen[i];
  if (n >= old || n == 0) return;
  free_range(r, i, n, i + n, old - n);
}

bool pz_chunk_grow(void *base, size_t n) {
  size_t i;
  struct pz_region *r = pool_region_of(base, &i);
  struct pz_node_pool *np = &pz_nodes[r->node];
  pthread_mutex_lock(&np->lock);
  size_t old = r->runlen[i];
  bool ok = i + n <= r->nchunks;
  for (size_t k = old; ok && k < n; k++) ok = is_free_state(r->state[i + k]);
  if (ok) {
    for (size_t k = old; k < n; k++) {
      pool_transition(np, r, i + k, PZ_CE_ALLOC);
      pool_set_state(np, r, i + k, PZ_CS_TAIL);
    }
    r->runlen[i] = (uint32_t)n;
    pz_map_set_range(r->base + ((i + old) << PZ_CHUNK_SHIFT), n - old, PZ_MK_LARGE_TAIL, r->id);
  }
  pthread_mutex_unlock(&np->lock);
  if (ok && pool_commit(r, i + old, n - old) != 0) {
    unwind(np, r, i, old, n);
    return false;
  }
  return ok;
}

