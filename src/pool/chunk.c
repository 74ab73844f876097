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
 * Allocation policy: see score(). The chunk state machine is
 * pz_chunk_next_state() and nothing else changes a state.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

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

static inline bool is_free_state(uint8_t s) { return s <= PZ_CS_DIRTY; }
static inline bool is_zero_state(uint8_t s) { return s == PZ_CS_UNTOUCHED || s == PZ_CS_READY; }

/* ------------------------------------------------------------- chunk map */

#define MAP_LEAF_BITS PZ_MAP_LEAF_BITS
#define MAP_TOP_BITS PZ_MAP_TOP_BITS
_Atomic(uint32_t *) pz_map_top[1u << MAP_TOP_BITS];

/* Leaves come from metadata memory (its own lock). */
static bool map_prepare(void *base, size_t nchunks) {
  uintptr_t a = (uintptr_t)base;
  for (size_t i = 0; i < nchunks; i++, a += PZ_CHUNK_SIZE) {
    uintptr_t t = a >> (PZ_CHUNK_SHIFT + MAP_LEAF_BITS);
    if (t >= (1u << MAP_TOP_BITS)) return false;
    if (!atomic_load_explicit(&pz_map_top[t], memory_order_acquire)) {
      uint32_t *leaf = pz_meta_alloc(sizeof(uint32_t) << MAP_LEAF_BITS);
      if (!leaf) return false;
      uint32_t *expect = NULL; /* two nodes may race for one leaf */
      atomic_compare_exchange_strong(&pz_map_top[t], &expect, leaf);
    }
  }
  return true;
}

void pz_map_set_range(void *base, size_t nchunks, enum pz_map_kind kind, uint32_t region) {
  uintptr_t a = (uintptr_t)base;
  for (size_t i = 0; i < nchunks; i++, a += PZ_CHUNK_SIZE) {
    uint32_t *leaf = atomic_load_explicit(&pz_map_top[a >> (PZ_CHUNK_SHIFT + MAP_LEAF_BITS)],
                                          memory_order_relaxed);
    uint32_t v = kind == PZ_MK_NONE ? 0 : ((uint32_t)kind | region << 4);
    __atomic_store_n(&leaf[(a >> PZ_CHUNK_SHIFT) & ((1u << MAP_LEAF_BITS) - 1)], v,
                     __ATOMIC_RELEASE);
  }
}

/* ---------------------------------------------------------------- pools */

#define REGION_MIN_CHUNKS 1   /* a node's first region: 2 MiB of address space */
#define REGION_MAX_CHUNKS 512 /* regions grow to 1 GiB (larger only for one request) */
#define REGION_MAX_IDS (1u << 14)

struct pz_node_pool pz_nodes[PZ_MAX_NODES];
static _Atomic(struct pz_region **) regions_by_id;
static _Atomic uint32_t region_ids;
static _Atomic size_t regions_made, reserved_bytes, thp_refused; /* all nodes */

void pz_pool_init(void) {
  for (unsigned n = 0; n < PZ_MAX_NODES; n++) {
    struct pz_node_pool *np = &pz_nodes[n];
    pthread_mutex_init(&np->lock, NULL);
    pthread_cond_init(&np->work, NULL);
    pthread_cond_init(&np->done, NULL);
    np->node = n;
    np->headroom = SIZE_MAX;
  }
}

/* Milliseconds, wrapping: only differences are used (idle times < 49 days). */
static uint32_t now_ms(void) {
  struct timespec ts; /* the coarse clock: a few ns (vDSO), ticks of a few ms are enough here */
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static struct pz_region *region_by_id(uint32_t id) {
  return atomic_load_explicit(&regions_by_id, memory_order_acquire)[id];
}

static struct pz_region *region_of(const void *p, size_t *idx) {
  uint32_t e = pz_map_get(p);
  if (!e) return NULL;
  struct pz_region *r = region_by_id(e >> 4);
  *idx = (size_t)(((const char *)p - r->base) >> PZ_CHUNK_SHIFT);
  return r;
}

/* pthread_cond_timedwait for at most ms milliseconds (the condition
 * variables use the default clock). */
static int cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, long ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_nsec += (ms % 1000) * 1000000;
  ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000;
  ts.tv_nsec %= 1000000000;
  return pthread_cond_timedwait(c, m, &ts);
}

static void set_state(struct pz_node_pool *np, struct pz_region *r, size_t i, enum pz_chunk_state s) {
  np->count[r->state[i]]--;
  np->count[s]++;
  if (is_free_state(r->state[i]) != is_free_state(s)) {
    if (is_free_state(s)) r->nfree++;
    else r->nfree--;
  }
  r->state[i] = (uint8_t)s;
}

static void transition(struct pz_node_pool *np, struct pz_region *r, size_t i, enum pz_chunk_event e) {
  int next = pz_chunk_next_state(r->state[i], e);
  if (PZ_UNLIKELY(next < 0))
    pz_fatal("internal error: chunk %p state %d event %d", (void *)(r->base + i * PZ_CHUNK_SIZE),
             r->state[i], e);
  set_state(np, r, i, next);
}

/* With the lock held: a fresh claim id (never 0), with PZ_CLAIM_POP for
 * pre-faulting claims. */
static uint32_t new_claim_id(struct pz_node_pool *np, bool pop) {
  uint32_t id = ++np->claim_seq & ~(PZ_CLAIM_POP | PZ_CLAIM_MOVE);
  if (!id) id = ++np->claim_seq & ~(PZ_CLAIM_POP | PZ_CLAIM_MOVE);
  return id | (pop ? PZ_CLAIM_POP : 0);
}

/* With the lock held: chunk i of r becomes BUSY under claim id. */
static void claim_chunk(struct pz_node_pool *np, struct pz_region *r, size_t i, uint32_t id) {
  transition(np, r, i, PZ_CE_CLAIM);
  r->claim_id[i] = id;
  if (id & PZ_CLAIM_POP) r->npop++;
}

/* A chunk an allocation may use: free, or being pre-faulted (stealable). */
static inline bool avail(const struct pz_region *r, size_t i) {
  uint8_t s = r->state[i];
  if (PZ_UNLIKELY(__atomic_load_n(&r->foreign[i], __ATOMIC_ACQUIRE))) return false; /* the program's now */
  return s <= PZ_CS_DIRTY || (s == PZ_CS_BUSY && (r->claim_id[i] & PZ_CLAIM_POP));
}

static void advise(void *p, size_t len) {
  long long thp = pz_opt(PZ_OPT_THP);
  if (thp == PZ_THP_OPT_NEVER) {
    pz_os.madvise(p, len, MADV_NOHUGEPAGE);
    return;
  }
  if (thp == PZ_THP_OPT_ALWAYS || pz_kernel.thp_usable) {
    if (pz_os_hugepage(p, len) != 0) atomic_fetch_add(&thp_refused, 1);
  }
}

static size_t node_chunks(const struct pz_node_pool *np) {
  size_t n = 0;
  for (int k = 0; k < PZ_CS__COUNT; k++) n += np->count[k];
  return n;
}

/* With np->lock held: unmap the node's regions that are wholly free (no
 * chunk in use or worked on), when a reservation was refused (RLIMIT_AS):
 * glibc would have unmapped that memory at free(). Returns chunks unmapped. */
static size_t unmap_free_regions(struct pz_node_pool *np) {
  size_t done = 0;
  for (struct pz_region *r = np->regions; r; r = r->next) {
    if (!r->nchunks || r->nfree != r->nchunks || r->npop) continue;
    size_t n = r->nchunks;
    pz_map_set_range(r->base, n, PZ_MK_NONE, 0);
    for (size_t i = 0; i < n; i++) np->count[r->state[i]]--;
    __atomic_store_n(&r->nchunks, 0, __ATOMIC_RELEASE);
    r->nfree = 0;
    pz_os_unmap(r->base, n << PZ_CHUNK_SHIFT);
    atomic_fetch_sub(&reserved_bytes, n << PZ_CHUNK_SHIFT);
    done += n;
  }
  return done;
}

static size_t shrink_node(unsigned node, size_t give, size_t floor);
static int decommit(struct pz_region *r, size_t i, size_t n);

size_t pz_chunk_unmap_free(void) {
  size_t n = 0;
  for (unsigned node = 0; node < pz_topo.nnodes; node++) {
    struct pz_node_pool *np = &pz_nodes[node];
    /* the program's mmap may come from a signal handler that interrupted
     * this thread inside malloc: a busy lock is skipped. Once it was free,
     * this thread does not hold it, and shrink_node may wait for it. */
    if (pthread_mutex_trylock(&np->lock) != 0) continue;
    pthread_mutex_unlock(&np->lock);
    /* free memory decommitted first (no longer data, commit, or lockable;
     * with it free chunks committed but empty: pages moved out, or given
     * back by MADV_DONTNEED), then every region left wholly free unmapped */
    n += shrink_node(node, SIZE_MAX, 0);
    pthread_mutex_lock(&np->lock);
    for (struct pz_region *r = np->regions; r; r = r->next)
      for (size_t i = 0; i < r->nchunks; i++)
        if (r->state[i] == PZ_CS_UNTOUCHED && r->rw[i] && !r->foreign[i] && decommit(r, i, 1) == 0) n++;
    n += unmap_free_regions(np);
    pthread_mutex_unlock(&np->lock);
  }
  return n;
}

/* The per-chunk arrays of r for `want` chunks, zeroed: one metadata block
 * (a husk's, when it is large enough). False when memory is refused. */
static bool region_arrays(struct pz_region *r, size_t want) {
  if (r->cap < want) {
    char *m = pz_meta_alloc(want * (3 * sizeof(uint32_t) + 5));
    if (!m) return false;
    r->runlen = (uint32_t *)m, r->idle_since = r->runlen + want, r->claim_id = r->idle_since + want;
    r->state = (uint8_t *)(r->claim_id + want), r->nohuge = r->state + want, r->released = r->nohuge + want;
    r->rw = r->released + want, r->foreign = r->rw + want;
    r->cap = (uint32_t)want;
    return true; /* fresh metadata is zero */
  }
  memset(r->runlen, 0, (size_t)r->cap * (3 * sizeof(uint32_t) + 5)); /* a husk's block, laid out as above */
  return true;
}

/* Called with np->lock held. */
static struct pz_region *region_create(struct pz_node_pool *np, size_t need_chunks, size_t align) {
  if (!atomic_load(&regions_by_id)) {
    struct pz_region **t = pz_meta_alloc(sizeof(*t) * REGION_MAX_IDS);
    struct pz_region **expect = NULL;
    if (!t) return NULL;
    atomic_compare_exchange_strong(&regions_by_id, &expect, t);
  }
  struct pz_region *r = NULL; /* a husk to reuse (its id too) */
  for (struct pz_region *q = np->regions; q && !r; q = q->next)
    if (!q->nchunks) r = q;
  if (!r && atomic_load(&region_ids) + 1 >= REGION_MAX_IDS) return NULL;
  /* geometric growth: as much again as the node has, within bounds; a
   * quarter more than a large request, so that a chunk the small heap takes
   * next to a freed run does not push the next run of that size into fresh
   * memory (measured: large-loop's peak RSS doubled with regions of the
   * exact size) */
  size_t have = node_chunks(np);
  size_t want = have < REGION_MIN_CHUNKS ? REGION_MIN_CHUNKS : have > REGION_MAX_CHUNKS ? REGION_MAX_CHUNKS : have;
  size_t room = need_chunks > 1 ? need_chunks + need_chunks / 4 + 1 : need_chunks;
  if (want < room) want = room;
  if (atomic_load_explicit(&pz_mcl_future, memory_order_relaxed)) want = need_chunks; /* all of it counts as locked */
  size_t al = align > PZ_CHUNK_SIZE ? align : PZ_CHUNK_SIZE;
  char *base = NULL;
  for (bool unmapped = false;;) { /* a smaller region when the OS refuses (RLIMIT_AS) */
    if (want > (SIZE_MAX >> PZ_CHUNK_SHIFT)) return NULL;
    base = pz_os_reserve(want << PZ_CHUNK_SHIFT, al);
    if (base) break;
    if (want > need_chunks) want = want / 2 > need_chunks ? want / 2 : need_chunks;
    else if (!unmapped && unmap_free_regions(np)) unmapped = true;
    else return NULL;
  }
  bool reuse = r != NULL;
  if (!r) r = pz_meta_alloc(sizeof *r);
  if (!r || !region_arrays(r, want) || !map_prepare(base, want)) {
    pz_os_unmap(base, want << PZ_CHUNK_SHIFT);
    return NULL; /* metadata lost (never freed); we are out of memory anyway */
  }
  advise(base, want << PZ_CHUNK_SHIFT);
  pz_os_bind_node(base, want << PZ_CHUNK_SHIFT, np->node);
  r->base = base;
  r->nfree = (uint32_t)want; /* all UNTOUCHED (state 0), reserved only (rw 0) */
  r->node = np->node;
  r->npop = 0;
  if (!reuse) {
    r->id = atomic_fetch_add(&region_ids, 1) + 1;
    atomic_load(&regions_by_id)[r->id] = r;
    r->next = np->regions;
  }
  __atomic_store_n(&r->nchunks, (uint32_t)want, __ATOMIC_RELEASE);
  if (!reuse) __atomic_store_n(&np->regions, r, __ATOMIC_RELEASE); /* stats walk the list without the lock */
  np->count[PZ_CS_UNTOUCHED] += want;
  atomic_fetch_add(&regions_made, 1);
  atomic_fetch_add(&reserved_bytes, want << PZ_CHUNK_SHIFT);
  pz_map_set_range(base, want, PZ_MK_FREE, r->id);
  return r;
}

/* How well a chunk state fits the request (higher is better). Measured on
 * these machines: memset of resident memory runs at 47-90 GB/s, a first
 * touch of fresh memory costs ~0.12 s/GiB with THP, 0.5 s/GiB without, and
 * 1.4-2.8 s/GiB when the host reclaimed it. So a dirty chunk zeroed inline
 * beats an untouched one even for calloc; READY (zeroed in the background)
 * beats both. malloc takes dirty first, saving READY chunks for calloc. */
enum { SCORE_MALLOC = 0, SCORE_ZERO = 1, SCORE_KEEP_READY = 2 };
static int score(uint8_t s, int mode) {
  if (mode == SCORE_ZERO) return s == PZ_CS_READY ? 2 : s == PZ_CS_DIRTY ? 1 : 0;
  if (mode == SCORE_KEEP_READY) /* ready memory is promised (reserve): leave it */
    return s == PZ_CS_DIRTY ? 2 : s == PZ_CS_UNTOUCHED ? 1 : 0;
  return s == PZ_CS_DIRTY ? 2 : s == PZ_CS_READY ? 1 : 0;
}

/* Best run of n free chunks in r, aligned; returns start index or -1. */
static long find_run_busy(struct pz_region *r, size_t n, size_t align, int mode,
                          int *best_score, bool busy_ok);
static long find_run(struct pz_region *r, size_t n, size_t align, int mode, int *best_score) {
  return find_run_busy(r, n, align, mode, best_score, false);
}

/* busy_ok: chunks a worker holds count as free (score 0): the allocation
 * takes them over and waits only for the batch in flight. */
static long find_run_busy(struct pz_region *r, size_t n, size_t align, int mode,
                          int *best_score, bool busy_ok) {
  long best = -1;
  int bscore = -1;
  size_t step = align > PZ_CHUNK_SIZE ? align >> PZ_CHUNK_SHIFT : 1;
  if (n == 1 && step == 1 && !busy_ok && mode == SCORE_KEEP_READY) {
    /* a reserve is being made ready from the low end of the region (claim()
     * works in address order): take single chunks from the high end, so
     * the reserve stays one run */
    for (size_t i = r->nchunks; i-- > 0;) {
      if (!avail(r, i)) continue;
      int s = score(r->state[i], mode);
      if (s > bscore) {
        bscore = s;
        best = (long)i;
        if (s == 2) break;
      }
    }
    *best_score = bscore * 2;
    return best;
  }
  if (n == 1 && step == 1 && !busy_ok) {
    for (size_t i = 0; i < r->nchunks; i++) {
      if (!avail(r, i)) {
        i += r->runlen[i] ? r->runlen[i] - 1 : 0; /* skip a run by its head */
        continue;
      }
      int s = score(r->state[i], mode);
      if (s > bscore) {
        bscore = s;
        best = (long)i;
        if (s == 2) break;
      }
    }
    *best_score = bscore * 2;
    return best;
  }
  /* sliding window: free chunks and their score over [i-n+1, i] */
  size_t nfree = 0, total = 0;
  for (size_t i = 0; i < r->nchunks; i++) {
    if (avail(r, i) || (busy_ok && r->state[i] == PZ_CS_BUSY && !(r->claim_id[i] & PZ_CLAIM_MOVE))) {
      nfree++;
      total += (size_t)score(r->state[i], mode);
    } else {
      nfree = total = 0;
      continue;
    }
    if (nfree > n) {
      total -= (size_t)score(r->state[i - n], mode); /* BUSY scores 0 */
      nfree = n;
    }
    if (nfree == n) {
      size_t start = i + 1 - n;
      if ((((uintptr_t)r->base >> PZ_CHUNK_SHIFT) + start) % step) continue;
      int sc = (int)(total * 2 / n); /* 0..4 */
      if (sc > bscore) {
        bscore = sc;
        best = (long)start;
        if (total == 2 * n) break;
      }
    }
  }
  *best_score = bscore;
  return best;
}

static struct pz_node_pool *current_pool(void) { return &pz_nodes[pz_topo_current_node()]; }

static size_t min_ready_chunks(const struct pz_node_pool *np) {
  size_t m = (size_t)pz_opt(PZ_OPT_POOL_MIN) >> PZ_CHUNK_SHIFT;
  return np->reserve > m ? np->reserve : m;
}

/* With np->lock held: let a sleeping worker know the numbers changed. */
static void wake_worker(struct pz_node_pool *np) {
  if (np->sleeping) pthread_cond_signal(&np->work);
}

#define ZERO_RANGES 16

/* Huge pages for small-object chunks only once the small heap is big: a
 * partly used chunk costs a whole 2 MiB page of RSS, which dominates small
 * heaps (measured: ls 4.2 vs 2.2 MiB, a python run 44 vs 35 MiB) and is
 * noise above this. Large runs always get huge pages. */
#define SMALL_HUGE_MIN_CHUNKS 32
_Atomic size_t pz_small_used_slices; /* slices in use by small/medium spans, all heaps */

static bool thp_on(void) {
  return pz_opt(PZ_OPT_THP) != PZ_THP_OPT_NEVER &&
         (pz_kernel.thp_usable || pz_opt(PZ_OPT_THP) == PZ_THP_OPT_ALWAYS);
}

static void make_room(struct pz_node_pool *np, size_t fresh);

/* With the lock held: chunk flag *nh for an allocation that wants 4 KiB
 * pages there or not; `fresh`: the chunk was never faulted (advice given
 * now is what its pages will be). True when the advice changes. */
static bool note_advice(uint8_t *nh, bool want_small_pages, bool fresh) {
  if (want_small_pages == !!*nh) {
    if (want_small_pages && fresh) *nh = PZ_NH_SMALL; /* advised before its first fault */
    return false;
  }
  *nh = !want_small_pages ? 0 : fresh ? PZ_NH_SMALL : PZ_NH_ADVISED;
  return true;
}

/* madvise chunks [i, i+n) of r as their flags say, one call per run of
 * equal advice. The caller owns the run: nobody else changes its flags. */
static void apply_advice(struct pz_region *r, size_t i, size_t n) {
  for (size_t k = 0, e; k < n; k = e) {
    bool nh = r->nohuge[i + k];
    for (e = k + 1; e < n && !!r->nohuge[i + e] == nh;) e++;
    char *p = r->base + ((i + k) << PZ_CHUNK_SHIFT);
    if (nh) pz_os.madvise(p, (e - k) << PZ_CHUNK_SHIFT, MADV_NOHUGEPAGE);
    else pz_os_hugepage(p, (e - k) << PZ_CHUNK_SHIFT);
  }
}

/* The huge-page advice chunks [i, i+n) of r should carry, again (after the
 * program changed it, or a fresh mapping replaced it). */
static void restore_advice(struct pz_region *r, size_t i, size_t n) {
  if (pz_opt(PZ_OPT_THP) == PZ_THP_OPT_NEVER) advise(r->base + (i << PZ_CHUNK_SHIFT), n << PZ_CHUNK_SHIFT);
  else if (thp_on()) apply_advice(r, i, n);
}

/* Free memory the kernel may take back before anything else (MADV_FREE):
 * under memory pressure, in a memory cgroup without swap too, it reclaims
 * these pages instead of killing a process, and they read zero afterwards,
 * which is what READY promises and more than DIRTY does. Only chunks of
 * huge pages: a write to a 4 KiB page the kernel marked clean costs ~250 ns
 * more here (the A/D-bit update in this VM), one to a huge page nothing
 * (measured: memset of 8 MiB 808 vs 305 us, huge 299 vs 299). The caller
 * owns the chunks, or holds the lock with them free: a chunk the program
 * uses must never be marked (its writes could be dropped). */
static void lazyfree(struct pz_region *r, size_t i, size_t n) {
  if (!thp_on()) return;
  for (size_t k = 0, e; k < n; k = e) {
    for (e = k + 1; e < n && !r->nohuge[i + e] == !r->nohuge[i + k];) e++;
    if (!r->nohuge[i + k]) pz_os.madvise(r->base + ((i + k) << PZ_CHUNK_SHIFT), (e - k) << PZ_CHUNK_SHIFT, MADV_FREE);
  }
}

/* Commit chunks [i, i+n) of r where they are only reserved (the caller
 * holds them). 0 or errno: ENOMEM at vm.max_map_count or at the commit
 * limit (vm.overcommit_memory=2), where glibc's mmap would fail too. */
static int commit(struct pz_region *r, size_t i, size_t n) {
  for (size_t k = 0, e; k < n; k = e) {
    for (e = k + 1; e < n && r->rw[i + e] == r->rw[i + k];) e++;
    if (r->rw[i + k]) continue;
    int err = pz_os_commit(r->base + ((i + k) << PZ_CHUNK_SHIFT), (e - k) << PZ_CHUNK_SHIFT);
    if (err) return err;
    memset(&r->rw[i + k], 1, e - k);
  }
  return 0;
}

/* Chunks [i, i+n) of r (held) are a fresh reservation now: advised and
 * bound as the region is. */
static void fresh_range(struct pz_region *r, size_t i, size_t n) {
  char *p = r->base + (i << PZ_CHUNK_SHIFT);
  advise(p, n << PZ_CHUNK_SHIFT);
  pz_os_bind_node(p, n << PZ_CHUNK_SHIFT, r->node);
  memset(&r->rw[i], 0, n);
  memset(&r->foreign[i], 0, n);
  memset(&r->nohuge[i], 0, n);
}

/* Chunks [i, i+n) of r (held, free memory) go back to the kernel: replaced
 * by a fresh reservation (no pages, no commit charge); where the kernel
 * refuses that (vm.max_map_count, an mlock limit) their pages are dropped
 * and they stay committed. 0, or errno when neither could be done. */
static int decommit(struct pz_region *r, size_t i, size_t n) {
  char *p = r->base + (i << PZ_CHUNK_SHIFT);
  if (pz_os_decommit(p, n << PZ_CHUNK_SHIFT) == 0) {
    fresh_range(r, i, n);
    return 0;
  }
  if (memchr(&r->foreign[i], 1, n)) return EBUSY; /* not our mapping there: never touch it */
  return pz_os_discard(p, n << PZ_CHUNK_SHIFT);
}

/* A run the program gave back: undo whatever it set on the memory before
 * a worker zeroes it or the next owner gets it (glibc unmaps blocks this
 * large; they would lose it all). Reset in place (protection, locks, fork,
 * dump and KSM flags, huge-page advice, NUMA binding), or, for what cannot
 * be reset (the program's userfaultfd or mapping there, memory it sealed
 * or unmapped), replaced by a fresh reservation (*fresh). False: neither
 * worked; the chunks are never used again. */
static bool sanitize(struct pz_region *r, size_t i, size_t n, bool *fresh) {
  char *p = r->base + (i << PZ_CHUNK_SHIFT);
  size_t len = n << PZ_CHUNK_SHIFT;
  *fresh = false;
  if (!memchr(&r->foreign[i], 1, n) && pz_os_reset(p, len) == 0) {
    restore_advice(r, i, n);
    pz_os_bind_node(p, len, r->node);
    return true;
  }
  if (pz_os_decommit(p, len) != 0) return false;
  fresh_range(r, i, n);
  *fresh = true;
  return true;
}

static void release_range(struct pz_node_pool *np, struct pz_region *r, size_t i, size_t n);

/* Chunks [i + keep, i + n) of the run at i, just taken, could not be
 * committed: free again (dirty where committed, else reserved), the run
 * keeping `keep` chunks. */
static void unwind(struct pz_node_pool *np, struct pz_region *r, size_t i, size_t keep, size_t n) {
  pthread_mutex_lock(&np->lock);
  if (!keep && (pz_map_get(r->base + (i << PZ_CHUNK_SHIFT)) & 15) == PZ_MK_SMALL) np->small_chunks -= n;
  r->runlen[i] = (uint32_t)keep;
  release_range(np, r, i + keep, n - keep);
  for (size_t k = keep; k < n; k++)
    if (!r->rw[i + k]) transition(np, r, i + k, PZ_CE_DISCARD);
  pthread_cond_broadcast(&np->done);
  pthread_mutex_unlock(&np->lock);
}

void *pz_chunk_alloc(size_t n, size_t align, int flags, enum pz_map_kind kind, bool *zero_out,
                     size_t *zeroed_out) {
  if (n == 0 || n > (PZ_MAX_ALLOC >> PZ_CHUNK_SHIFT)) return NULL;
  struct pz_node_pool *np = current_pool();
  pthread_mutex_lock(&np->lock);
  int mode = (flags & PZ_CA_PREFER_ZERO) ? SCORE_ZERO : SCORE_MALLOC;
  if (kind == PZ_MK_SMALL && np->count[PZ_CS_READY] <= min_ready_chunks(np) && min_ready_chunks(np))
    mode = SCORE_KEEP_READY;
  struct pz_region *r = NULL;
  long best_i = -1;
  int best_s = -1;
  for (int tries = 0;; tries++) {
    best_s = -1;
    for (struct pz_region *q = np->regions; q; q = q->next) {
      if (q->nfree + q->npop < n) continue;
      int s;
      long i = find_run(q, n, align, mode, &s);
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
    cond_wait_ms(&np->done, &np->lock, 10); /* a batch in flight, or a lend the uffd threads complete */
  }
  /* only ready chunks left, and the program keeps them for itself
   * (prezero_reserve, POOL_MIN): small objects take fresh address space */
  if (r && mode == SCORE_KEEP_READY && best_s == 0) {
    struct pz_region *q = region_create(np, n, align);
    int s;
    long i = q ? find_run(q, n, align, mode, &s) : -1;
    if (i >= 0) r = q, best_i = i;
  }
  bool take_busy = false;
  if (!r && np->count[PZ_CS_BUSY]) { /* a run through chunks the workers hold? */
    for (struct pz_region *q = np->regions; q; q = q->next) {
      int s;
      long i = q->nfree + np->count[PZ_CS_BUSY] >= n ? find_run_busy(q, n, align, mode, &s, true) : -1;
      if (i >= 0 && s > best_s) best_s = s, best_i = i, r = q;
    }
    take_busy = r != NULL;
  }
  if (!r) {
    r = region_create(np, n, align);
    int s;
    if (r) best_i = find_run(r, n, align, mode, &s);
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
  bool thp = thp_on(), want_small = false, sparse = false, readvise = false;
  if (thp) {
    size_t used = (size_t)atomic_load_explicit(&pz_small_used_slices, memory_order_relaxed);
    want_small = kind == PZ_MK_SMALL && (np->small_chunks < SMALL_HUGE_MIN_CHUNKS ||
                                         used * 4 < np->small_chunks * (PZ_SLICES - 1) * 3);
    size_t bytes = n << PZ_CHUNK_SHIFT;
    sparse = kind == PZ_MK_LARGE && bytes < (size_t)pz_opt(PZ_OPT_HUGE_MIN) &&
             !(pz_opt(PZ_OPT_POPULATE) != PZ_POP_OFF && bytes >= (size_t)pz_opt(PZ_OPT_POPULATE_MIN));
  }
  size_t ranges[ZERO_RANGES][2], nranges = 0; /* dirty chunk ranges [start, end) */
  size_t ready = 0, untouched = 0;
  for (size_t k = 0; k < n; k++) {
    size_t i = (size_t)best_i + k;
    uint8_t s = r->state[i];
    ready += s == PZ_CS_READY;
    untouched += s == PZ_CS_UNTOUCHED;
    if (thp)
      readvise |= note_advice(&r->nohuge[i], sparse ? s == PZ_CS_UNTOUCHED : want_small, s == PZ_CS_UNTOUCHED);
    if (r->released[i]) { /* given back earlier: this allocation faults it in again */
      r->released[i] = 0;
      if (s == PZ_CS_UNTOUCHED) np->st.refaulted_bytes += PZ_CHUNK_SIZE;
    }
    if (s == PZ_CS_BUSY && (r->claim_id[i] & PZ_CLAIM_POP)) { /* being pre-faulted: zero, ours now */
      transition(np, r, i, PZ_CE_STEAL);
      r->claim_id[i] = 0;
      r->npop--;
      untouched++;
      if (k) set_state(np, r, i, PZ_CS_TAIL);
      continue;
    }
    if (s == PZ_CS_BUSY) { /* the worker finishes it (zero) and hands it over */
      transition(np, r, i, PZ_CE_TAKE);
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
    transition(np, r, i, PZ_CE_ALLOC);
    if (k) set_state(np, r, i, PZ_CS_TAIL);
  }
  if (take_busy) {
    np->st.busy_waits++;
    for (size_t k = 0; k < n; k++)
      while (r->state[(size_t)best_i + k] == PZ_CS_TAKEN) pthread_cond_wait(&np->done, &np->lock);
    set_state(np, r, (size_t)best_i, PZ_CS_USED); /* the head may have been handed over as TAIL */
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
  bool start = ready && np->count[PZ_CS_READY] < min_ready_chunks(np);
  if (start) wake_worker(np);
  pthread_mutex_unlock(&np->lock);
  if (untouched) make_room(np, untouched);
  if (readvise) apply_advice(r, (size_t)best_i, n);
  if (commit(r, (size_t)best_i, n) != 0) {
    /* the commit limit, RLIMIT_DATA or vm.max_map_count: free memory of
     * ours may be what stands in the way; else fail as mmap would */
    shrink_node(np->node, SIZE_MAX, 0);
    if (commit(r, (size_t)best_i, n) != 0) {
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
  struct pz_region *r = region_of(chunk, &i);
  return r && (!thp_on() || __atomic_load_n(&r->nohuge[i], __ATOMIC_RELAXED) == PZ_NH_SMALL);
}

size_t pz_chunk_run_len(const void *base) {
  size_t i;
  struct pz_region *r = region_of(base, &i);
  return r ? r->runlen[i] : 0;
}

/* Mark chunks [i, i+n) of r free and DIRTY (lock held). */
static void release_range(struct pz_node_pool *np, struct pz_region *r, size_t i, size_t n) {
  uint32_t now = now_ms();
  for (size_t k = 0; k < n; k++) {
    transition(np, r, i + k, PZ_CE_FREE);
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
  bool fresh, ok = sanitize(r, i, n, &fresh);
  bool workers = workers_usable(np), over = over_max(np, n);
  /* Kept memory would hold what another allocation (ours or anyone's,
   * glibc having unmapped it) may need: commit charge under
   * vm.overcommit_memory=2, locked memory (RLIMIT_MEMLOCK) under
   * mlockall(MCL_FUTURE). It goes back at once there. */
  bool mcl = atomic_load_explicit(&pz_mcl_future, memory_order_relaxed);
  bool discard = ok && !fresh && ((!workers && over) || pz_kernel.overcommit == 2 || mcl) && decommit(r, i, n) == 0;
  if (ok && !fresh && !discard) lazyfree(r, i, n);
  pthread_mutex_lock(&np->lock);
  if ((pz_map_get(r->base + (head << PZ_CHUNK_SHIFT)) & 15) == PZ_MK_SMALL) np->small_chunks -= n;
  r->runlen[head] = (uint32_t)keep;
  if (!ok) { /* sealed, or another mapping sits there: in use for ever, unknown to free() */
    if (i != head) set_state(np, r, i, PZ_CS_USED);
    r->runlen[i] = (uint32_t)n;
    pz_map_set_range(r->base + (i << PZ_CHUNK_SHIFT), n, PZ_MK_NONE, 0);
    pthread_mutex_unlock(&np->lock);
    return;
  }
  release_range(np, r, i, n);
  if (discard || fresh) {
    for (size_t k = 0; k < n; k++) {
      transition(np, r, i + k, PZ_CE_DISCARD);
      r->released[i + k] = discard;
    }
    np->st.discarded_bytes += n << PZ_CHUNK_SHIFT;
  }
  np->st.runs_free++;
  /* under RLIMIT_AS a region all free is unmapped at once: glibc would have
   * unmapped the block, and the program may need the address space */
  if (r->nfree == r->nchunks && !r->npop && (mcl || atomic_load_explicit(&pz_as_limited, memory_order_relaxed))) unmap_free_regions(np);
  /* wake a worker for a batch, not for every chunk: a single chunk freed and
   * allocated again at once is better zeroed inline than raced for; and
   * for memory past the maximum, which it gives back once idle */
  bool work = workers && (n > 1 || over || np->count[PZ_CS_DIRTY] >= (size_t)pz_opt(PZ_OPT_BATCH));
  if (work) wake_worker(np);
  pthread_mutex_unlock(&np->lock);
  /* running (not woken) also when the memory will only decay later */
  if (work || (workers && pz_opt(PZ_OPT_RETAIN_MS))) pz_workers_start(np->node);
}

void pz_chunk_free(void *base) {
  size_t i;
  struct pz_region *r = region_of(base, &i);
  free_range(r, i, 0, i, r->runlen[i]);
}

/* Map a fresh reservation into the hole that a move left at chunks
 * [i, i+n) of r, advised and bound as the region is, and committed when
 * `rw` (it is written next). False when something is mapped there, or
 * (rw) it cannot be committed. */
static bool refill(struct pz_region *r, size_t i, size_t n, bool rw) {
  if (pz_os_remap_fresh(r->base + (i << PZ_CHUNK_SHIFT), n << PZ_CHUNK_SHIFT) != 0) return false;
  fresh_range(r, i, n);
  return !rw || commit(r, i, n) == 0;
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
  return refill(q, j, n, true) ? PZ_MOVE_NO : PZ_MOVE_LOST;
}

int pz_chunk_move(void *from, void *to) {
  size_t i, j;
  struct pz_region *r = region_of(from, &i), *q = region_of(to, &j);
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
    if (moved && !refill(r, i, moved, true)) /* both holes taken: nothing left to stand on */
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
  if (thp_on()) apply_advice(q, j, moved);
  /* the moved part of `from` is a hole now: map fresh zero memory back so
   * the region stays whole; what was copied is freed as any run is */
  bool refilled = refill(r, i, moved, false);
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
  release_range(np, r, i, moved);
  for (size_t k = 0; k < moved; k++) transition(np, r, i + k, PZ_CE_DISCARD);
  if (moved == n) np->st.runs_free++;
  pthread_mutex_unlock(&np->lock);
  return PZ_MOVED;
}

void pz_chunk_shrink(void *base, size_t n) {
  size_t i;
  struct pz_region *r = region_of(base, &i);
  size_t old = r->runlen[i];
  if (n >= old || n == 0) return;
  free_range(r, i, n, i + n, old - n);
}

bool pz_chunk_grow(void *base, size_t n) {
  size_t i;
  struct pz_region *r = region_of(base, &i);
  struct pz_node_pool *np = &pz_nodes[r->node];
  pthread_mutex_lock(&np->lock);
  size_t old = r->runlen[i];
  bool ok = i + n <= r->nchunks;
  for (size_t k = old; ok && k < n; k++) ok = is_free_state(r->state[i + k]);
  if (ok) {
    for (size_t k = old; k < n; k++) {
      transition(np, r, i + k, PZ_CE_ALLOC);
      set_state(np, r, i + k, PZ_CS_TAIL);
    }
    r->runlen[i] = (uint32_t)n;
    pz_map_set_range(r->base + ((i + old) << PZ_CHUNK_SHIFT), n - old, PZ_MK_LARGE_TAIL, r->id);
  }
  pthread_mutex_unlock(&np->lock);
  if (ok && commit(r, i + old, n - old) != 0) {
    unwind(np, r, i, old, n);
    return false;
  }
  return ok;
}

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
  bool start = moved && np->count[PZ_CS_READY] < min_ready_chunks(np);
  if (start) wake_worker(np);
  pthread_cond_broadcast(&np->done);
  pthread_mutex_unlock(&np->lock);
  if (start) pz_workers_start(np->node);
}

size_t pz_chunk_lend(size_t max, void *dst, size_t dst_len) {
  struct pz_node_pool *np = current_pool();
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
  uint32_t id = new_claim_id(np, false) | PZ_CLAIM_MOVE; /* nobody may take these meanwhile */
  for (size_t k = 0; k < best_n; k++) claim_chunk(np, best, best_i + k, id);
  pthread_mutex_unlock(&np->lock);
  char *src = best->base + (best_i << PZ_CHUNK_SHIFT);
  size_t len = best_n << PZ_CHUNK_SHIFT;
  /* one flag, but maybe still two mappings (pages moved in, or faulted
   * under another anon_vma): asked first, as a failed move can take dst */
  bool moved = pz_os_one_mapping(src, len) && pz_os_move(src, len, dst, dst_len) == 0;
  bool refilled = moved && refill(best, best_i, best_n, false);
  pthread_mutex_lock(&np->lock);
  for (size_t k = 0; k < best_n; k++) {
    size_t i = best_i + k;
    best->claim_id[i] = 0;
    if (!moved) {
      transition(np, best, i, PZ_CE_ZEROED); /* still ready, still ours */
      continue;
    }
    transition(np, best, i, PZ_CE_DISCARD); /* a fresh range in its place */
    best->released[i] = 0;
    if (!refilled) { /* someone else's mapping sits there now: never hand it out */
      transition(np, best, i, PZ_CE_ALLOC);
      if (k) set_state(np, best, i, PZ_CS_TAIL);
    }
  }
  if (moved && !refilled) {
    best->runlen[best_i] = (uint32_t)best_n;
    pz_map_set_range(src, best_n, PZ_MK_NONE, 0);
  }
  lend_done_unlock(np, moved);
  return moved ? best_n : 0;
}

static void clobber_one(struct pz_node_pool *np, struct pz_region *r, size_t i);

size_t pz_chunk_lend_ready(unsigned node, void **out, size_t max) {
  struct pz_node_pool *np = &pz_nodes[node];
  size_t n = 0;
  /* the userfaultfd threads never wait for the lock: the thread that holds
   * it may be the one waiting for them (a signal handler touching a served
   * mapping while its thread is inside malloc) */
  if (pthread_mutex_trylock(&np->lock) != 0) return 0;
  for (struct pz_region *r = np->regions; r && n < max && np->count[PZ_CS_READY]; r = r->next)
    for (size_t i = 0; i < r->nchunks && n < max && np->count[PZ_CS_READY]; i++)
      if (r->state[i] == PZ_CS_READY && !r->nohuge[i] && !r->foreign[i]) {
        claim_chunk(np, r, i, new_claim_id(np, false) | PZ_CLAIM_MOVE);
        out[n++] = r->base + (i << PZ_CHUNK_SHIFT);
      }
  pthread_mutex_unlock(&np->lock);
  return n;
}

bool pz_chunk_lend_one_done(void *chunk, size_t moved, bool stale) {
  size_t i;
  struct pz_region *r = region_of(chunk, &i);
  struct pz_node_pool *np = &pz_nodes[r->node];
  if (!moved && stale && pz_os_discard(chunk, PZ_CHUNK_SIZE) == 0) moved = PZ_CHUNK_SIZE;
  if (pthread_mutex_trylock(&np->lock) != 0) return false; /* as above: the caller comes back */
  r->claim_id[i] = 0;
  /* pages moved out (or given back): the range reads zero again, as a fresh one */
  transition(np, r, i, moved ? PZ_CE_DISCARD : PZ_CE_ZEROED);
  r->idle_since[i] = now_ms();
  if (r->foreign[i]) clobber_one(np, r, i);
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
static void clobber_one(struct pz_node_pool *np, struct pz_region *r, size_t i) {
  r->foreign[i] = 1;
  if (!is_free_state(r->state[i])) return;
  transition(np, r, i, PZ_CE_ALLOC);
  r->runlen[i] = 1;
  pz_map_set_range(r->base + (i << PZ_CHUNK_SHIFT), 1, PZ_MK_NONE, 0);
}

void pz_chunk_clobbered(const void *p, size_t len) {
  if (!pz_chunk_overlaps(p, len)) return;
  /* marked at once, without the lock (a signal handler's MAP_FIXED may
   * interrupt a thread holding it): nothing takes or claims a free foreign
   * chunk (avail(), claim()), and one in use is replaced when it comes
   * back; where the lock is free, a free one leaves the pool now */
  uintptr_t a = (uintptr_t)p & ~(uintptr_t)PZ_CHUNK_MASK, end = (uintptr_t)p + len;
  for (; a < end && a >= ((uintptr_t)p & ~(uintptr_t)PZ_CHUNK_MASK); a += PZ_CHUNK_SIZE) {
    size_t i;
    struct pz_region *r = region_of((const void *)a, &i);
    if (!r) continue;
    __atomic_store_n(&r->foreign[i], 1, __ATOMIC_RELEASE);
    struct pz_node_pool *np = &pz_nodes[r->node];
    if (pthread_mutex_trylock(&np->lock) != 0) continue;
    if (region_of((const void *)a, &i) == r) clobber_one(np, r, i);
    pthread_mutex_unlock(&np->lock);
  }
}

bool pz_pool_serves(unsigned node) {
  struct pz_node_pool *np = &pz_nodes[node];
  return __atomic_load_n(&np->count[PZ_CS_READY], __ATOMIC_RELAXED) ||
         __atomic_load_n(&np->count[PZ_CS_BUSY], __ATOMIC_RELAXED) || min_ready_chunks(np);
}

/* ---------------------------------------------------------------- claims */

/* With the lock held: mark up to `max` free chunks in state `s` BUSY, as
 * contiguous ranges, filling claims[]. Returns the number of ranges. */
static size_t claim(struct pz_node_pool *np, enum pz_chunk_state s, size_t max, struct pz_claim *claims,
                    size_t nclaims) {
  size_t got = 0, nr = 0;
  /* Pre-faulting goes to the region with the most free chunks first, in
   * address order: a reserve then ends up as one contiguous ready run that
   * a large calloc can take whole. */
  struct pz_region *first = NULL;
  if (s == PZ_CS_UNTOUCHED)
    for (struct pz_region *r = np->regions; r; r = r->next)
      if (!first || r->nfree > first->nfree) first = r;
  for (int pass = 0; pass < 2; pass++) {
    for (struct pz_region *r = pass ? np->regions : first; r && got < max && nr < nclaims;
         r = pass ? r->next : NULL) {
      if (pass && r == first) continue;
      for (size_t i = 0; i < r->nchunks && got < max && nr < nclaims; i++) {
        if (r->state[i] != s || r->foreign[i]) continue;
        size_t n = 0;
        uint32_t id = new_claim_id(np, s == PZ_CS_UNTOUCHED);
        while (i + n < r->nchunks && r->state[i + n] == s && !r->foreign[i + n] && got + n < max) {
          claim_chunk(np, r, i + n, id);
          n++;
        }
        claims[nr++] = (struct pz_claim){r, i, n, s, false, false, id};
        got += n;
        i += n;
      }
    }
  }
  return nr;
}

/* PREZERO_POOL_MIN: make room for it as one run and let the workers fill it
 * in the background (the program goes on). */
void pz_pool_prepare(void) {
  size_t want = (size_t)pz_opt(PZ_OPT_POOL_MIN) >> PZ_CHUNK_SHIFT;
  if (!want || !pz_opt(PZ_OPT_ZERO)) return;
  struct pz_node_pool *np = current_pool();
  pthread_mutex_lock(&np->lock);
  bool fits = false;
  for (struct pz_region *r = np->regions; r && !fits; r = r->next) {
    int sc;
    fits = r->nfree >= want && find_run(r, want, 0, SCORE_ZERO, &sc) >= 0;
  }
  /* with room to spare: the program's own small chunks must not break the run */
  if (!fits) region_create(np, want + want / 16 + 8, 0);
  wake_worker(np);
  pthread_mutex_unlock(&np->lock);
  pz_workers_start(np->node);
}

/* ---------------------------------------------------------------- release */

/* Memory goes back to the kernel in whole blocks of the free page reporting
 * size (at least a chunk), aligned to it: a smaller or unaligned release
 * gives a hypervisor nothing and lets khugepaged fill it in again. */
static size_t block_chunks(void) { return pz_release_align() >> PZ_CHUNK_SHIFT; }

/* With the lock held: idle time of the block at chunk i of r in ms, or -1
 * when some chunk of it is not free (or the block leaves the region). */
static long block_idle(const struct pz_region *r, size_t i, size_t b, uint32_t now) {
  if (i + b > r->nchunks) return -1;
  long idle = LONG_MAX;
  for (size_t k = i; k < i + b; k++) {
    uint8_t st = r->state[k];
    if (st != PZ_CS_DIRTY && st != PZ_CS_READY) return -1;
    long t = (long)(uint32_t)(now - r->idle_since[k]);
    if (t < idle) idle = t;
  }
  return idle;
}

/* First chunk index of r at a block boundary (blocks are aligned by address). */
static size_t first_block(const struct pz_region *r, size_t b) {
  size_t at = ((uintptr_t)r->base >> PZ_CHUNK_SHIFT) % b;
  return at ? b - at : 0;
}

/* Free chunks in releasable blocks, idle for at least `ms` (lock held). */
static size_t idle_chunks(struct pz_node_pool *np, uint32_t now, long ms) {
  size_t b = block_chunks(), n = 0;
  for (struct pz_region *r = np->regions; r; r = r->next)
    for (size_t i = first_block(r, b); i + b <= r->nchunks; i += b)
      if (block_idle(r, i, b, now) >= ms) n += b;
  return n;
}

/* Claim up to n chunks (whole blocks idle for `ms`) to give back; dirty
 * blocks before ready ones (a worker's zeroing is worth keeping). */
static size_t claim_release(struct pz_node_pool *np, size_t n, long ms, struct pz_claim *claims,
                            size_t nclaims) {
  size_t b = block_chunks(), got = 0, nr = 0;
  uint32_t now = now_ms();
  for (int pass = 0; pass < 2; pass++)
    for (struct pz_region *r = np->regions; r && got < n; r = r->next)
      for (size_t i = first_block(r, b); i + b <= r->nchunks && got < n; i += b) {
        if (block_idle(r, i, b, now) < ms) continue;
        bool dirty = false;
        for (size_t k = i; k < i + b; k++) dirty |= r->state[k] == PZ_CS_DIRTY;
        if (pass == 0 && !dirty) continue;
        struct pz_claim *last = nr ? &claims[nr - 1] : NULL;
        if (last && last->region == r && last->start + last->n == i) {
          last->n += b;
          if (dirty) last->from = PZ_CS_DIRTY;
        } else if (nr < nclaims) {
          claims[nr++] = (struct pz_claim){r, i, b, dirty ? PZ_CS_DIRTY : PZ_CS_READY, true, true,
                                           new_claim_id(np, false)};
        } else {
          return nr;
        }
        for (size_t k = i; k < i + b; k++) claim_chunk(np, r, k, claims[nr - 1].id);
        got += b;
      }
  return nr;
}

/* Memory limits, looked at no more than every 100 ms (not on any
 * allocation path: only the workers do). Pressure: the cgroup is within
 * 10% of its limit, or MemAvailable under 1/16 of the machine. Headroom:
 * what pre-faulting may still add, leaving a quarter of the cgroup limit
 * and an eighth of the machine free. */
static void check_limits(struct pz_node_pool *np, size_t *headroom) {
  size_t limit = pz_kernel.cgroup_max < pz_kernel.cgroup_high ? pz_kernel.cgroup_max : pz_kernel.cgroup_high;
  size_t total, avail, room = SIZE_MAX;
  bool pressure = false;
  pz_probe_memory(&total, &avail);
  if (total && avail) {
    pressure |= avail < total / 16;
    room = avail > total / 8 ? avail - total / 8 : 0;
  }
  if (limit != SIZE_MAX) {
    size_t used = pz_probe_cgroup_usage();
    pressure |= used > limit - limit / 10;
    size_t cg = used < limit - limit / 4 ? limit - limit / 4 - used : 0;
    if (cg < room) room = cg;
  }
  if (pressure && !np->pressure) np->st.pressure_events++;
  np->pressure = pressure;
  /* tight: no head room left for pre-faulting. Idle memory above the low
   * watermark then goes back after the short decay, not the retention:
   * another process near the limit may need it before we notice pressure */
  np->tight = room == 0;
  *headroom = room == SIZE_MAX ? SIZE_MAX : room >> PZ_CHUNK_SHIFT;
}

size_t pz_pool_claim(unsigned node, struct pz_claim *claims, size_t nclaims) {
  struct pz_node_pool *np = &pz_nodes[node];
  bool timed_out = false;
  pthread_mutex_lock(&np->lock);
  for (;;) {
    uint64_t t = pz_os_now_ns();
    if (t - np->limits_checked_ns > 100000000u) { /* files are read without the lock */
      np->limits_checked_ns = t;
      pthread_mutex_unlock(&np->lock);
      size_t headroom;
      check_limits(np, &headroom);
      pthread_mutex_lock(&np->lock);
      np->headroom = headroom;
    }
    long decay = (long)pz_opt(PZ_OPT_DECAY_MS), retain = (long)pz_opt(PZ_OPT_RETAIN_MS);
    if (np->tight && (!retain || retain > decay)) retain = decay ? decay : 1;
    uint32_t now = now_ms();
    struct pz_plan_in in = {
        .ready = np->count[PZ_CS_READY], .dirty = np->count[PZ_CS_DIRTY],
        .untouched = np->count[PZ_CS_UNTOUCHED],
        /* under pressure only an explicit reserve is kept, not POOL_MIN */
        .min_ready = np->pressure ? np->reserve : min_ready_chunks(np),
        .max_free = (size_t)pz_opt(PZ_OPT_POOL_MAX) >> PZ_CHUNK_SHIFT,
        .batch = (size_t)pz_opt(PZ_OPT_BATCH), .report_batch = (size_t)pz_opt(PZ_OPT_REPORT_BATCH),
        .idle_any = idle_chunks(np, now, 0), .headroom = np->headroom, .forked = np->forked,
        .pressure = np->pressure};
    in.idle_decay = idle_chunks(np, now, decay);
    in.idle_retain = retain ? idle_chunks(np, now, retain) : 0;
    struct pz_plan plan = pz_worker_plan(&in);
    if (!pz_opt(PZ_OPT_ZERO)) plan.what = PZ_PLAN_IDLE;
    if (plan.what != PZ_PLAN_DISCARD) np->forked = false; /* the inherited chunks are gone */
    if (plan.what == PZ_PLAN_RELEASE) {
      /* the threshold that justifies n: memory past the maximum decays first */
      size_t free = in.ready + in.dirty;
      long ms = in.pressure ? 0 : (free > in.max_free && plan.n <= free - in.max_free && plan.n <= in.idle_decay) ? decay : retain;
      size_t nr = claim_release(np, plan.n, ms, claims, nclaims);
      if (nr) {
        pthread_mutex_unlock(&np->lock);
        return nr;
      }
    } else if (plan.what != PZ_PLAN_IDLE) {
      enum pz_chunk_state s = plan.what == PZ_PLAN_POPULATE ? PZ_CS_UNTOUCHED : PZ_CS_DIRTY;
      size_t nr = claim(np, s, plan.n, claims, nclaims);
      for (size_t k = 0; k < nr; k++) {
        claims[k].discard = plan.what == PZ_PLAN_DISCARD;
        if (plan.what == PZ_PLAN_POPULATE) /* until the limits are read again */
          np->headroom -= np->headroom == SIZE_MAX ? 0 : claims[k].n < np->headroom ? claims[k].n : np->headroom;
      }
      pthread_mutex_unlock(&np->lock);
      return nr;
    }
    /* Memory that will be given back once idle long enough keeps the worker
     * (waking a few times per decay period); without it, it leaves. */
    struct pz_plan_in later = in;
    later.idle_decay = in.idle_any;
    later.idle_retain = retain ? in.idle_any : 0;
    later.pressure = false;
    bool pending = pz_worker_plan(&later).what == PZ_PLAN_RELEASE;
    /* a batch or more of memory that pressure would take back (all but an
     * explicit reserve) keeps a worker looking at the limits, four times a
     * second; less is not worth the wake-ups */
    bool watch = in.ready + in.dirty >= np->reserve + in.report_batch && pz_opt(PZ_OPT_ZERO);
    if (timed_out && !pending && !watch) { /* a second without work, and still none: leave; the next work restarts us */
      int w = atomic_load(&np->workers);
      atomic_store(&np->workers, w > 1 ? w - 1 : 0);
      pthread_mutex_unlock(&np->lock);
      return SIZE_MAX;
    }
    /* while memory is pending, look ten times a second (also at the limits:
     * another process may need the memory) */
    long wait_ms = pending ? (decay / 4 < 100 ? (decay / 4 > 10 ? decay / 4 : 10) : 100) : watch ? 250 : 1000;
    np->sleeping++;
    int rc = cond_wait_ms(&np->work, &np->lock, wait_ms);
    np->sleeping--;
    timed_out = rc == ETIMEDOUT; /* look at the plan once more before leaving */
    if (!timed_out) {
      /* Woken by a free: let the program take back what it reuses at once
       * (malloc wants it dirty; zeroing it first is wasted work and makes
       * the allocation wait for us), then zero what is left. */
      pthread_mutex_unlock(&np->lock);
      struct timespec d = {0, 2000000};
      nanosleep(&d, NULL);
      pthread_mutex_lock(&np->lock);
    }
  }
}

bool pz_pool_commit(const struct pz_claim *c) { return commit(c->region, c->start, c->n) == 0; }

bool pz_pool_give_back(const struct pz_claim *c) { return decommit(c->region, c->start, c->n) == 0; }

void pz_pool_complete(unsigned node, const struct pz_claim *claims, size_t n, const bool *ok) {
  struct pz_node_pool *np = &pz_nodes[node];
  pthread_mutex_lock(&np->lock);
  for (size_t c = 0; c < n; c++) {
    const struct pz_claim *cl = &claims[c];
    /* a failed populate (or commit) left the chunk reading zero, maybe not
     * even committed: untouched, not dirty */
    bool unpopulated = !ok[c] && !cl->discard && cl->from == PZ_CS_UNTOUCHED;
    enum pz_chunk_event done = unpopulated ? PZ_CE_DISCARD : !ok[c] ? PZ_CE_UNCLAIM
                               : cl->discard                    ? PZ_CE_DISCARD
                                                                : PZ_CE_ZEROED;
    for (size_t k = 0; k < cl->n; k++) {
      size_t i = cl->start + k;
      uint8_t st = cl->region->state[i];
      if (cl->region->claim_id[i] != cl->id) continue; /* stolen by an allocation: not ours any more */
      cl->region->claim_id[i] = 0;
      if (cl->id & PZ_CLAIM_POP) cl->region->npop--;
      if (ok[c] && cl->discard && st == PZ_CS_BUSY) cl->region->released[i] = 1;
      if (ok[c] && !cl->discard && cl->from == PZ_CS_UNTOUCHED) {
        cl->region->idle_since[i] = now_ms(); /* ready from now */
        if (cl->region->released[i]) np->st.refaulted_bytes += PZ_CHUNK_SIZE;
        cl->region->released[i] = 0;
      }
      if (st == PZ_CS_TAKEN && !ok[c] && cl->from == PZ_CS_DIRTY) /* promised zero: keep it */
        pz_zero(cl->region->base + ((cl->start + k) << PZ_CHUNK_SHIFT), PZ_CHUNK_SIZE);
      if (done == PZ_CE_DISCARD && st == PZ_CS_TAKEN)
        transition(np, cl->region, cl->start + k, PZ_CE_ZEROED); /* reads zero: hand it over */
      else
        transition(np, cl->region, cl->start + k, done);
      if (cl->region->foreign[i] && is_free_state(cl->region->state[i]))
        clobber_one(np, cl->region, i); /* the program mapped over it meanwhile */
      else if (done == PZ_CE_ZEROED) /* written or populated: reclaimable again (still ours: the lock) */
        lazyfree(cl->region, i, 1);
    }
    if (cl->discard && ok[c]) {
      np->st.discarded_bytes += cl->n << PZ_CHUNK_SHIFT;
      if (cl->release) np->st.released_bytes += cl->n << PZ_CHUNK_SHIFT;
    }
    else if (ok[c]) {
      if (cl->from == PZ_CS_DIRTY) np->st.zeroed_bytes += cl->n << PZ_CHUNK_SHIFT;
      else np->st.populated_bytes += cl->n << PZ_CHUNK_SHIFT;
    }
  }
  pthread_cond_broadcast(&np->done);
  pthread_mutex_unlock(&np->lock);
}

/* ---------------------------------------------------------------- reserve */

/* Make one contiguous run of `bytes` ready, so that an allocation of that
 * size finds it whole, on the caller's thread (it waits anyway, and runs
 * at full priority, unlike the workers); then keep that much ready. */
int pz_chunk_reserve(size_t bytes) {
  size_t want = (bytes + PZ_CHUNK_SIZE - 1) >> PZ_CHUNK_SHIFT;
  if (!want) { /* clears the reserve on every node (the caller may have moved since) */
    for (unsigned n = 0; n < pz_topo.nnodes; n++) {
      pthread_mutex_lock(&pz_nodes[n].lock);
      pz_nodes[n].reserve = 0;
      pthread_mutex_unlock(&pz_nodes[n].lock);
    }
    return 0;
  }
  struct pz_node_pool *np = current_pool();
  pthread_mutex_lock(&np->lock);
  np->reserve = want;
  if (!want) {
    pthread_mutex_unlock(&np->lock);
    return 0;
  }
  struct pz_region *r = NULL;
  long start = -1;
  int best = -1;
  for (struct pz_region *q = np->regions; q; q = q->next) {
    int sc;
    long i = q->nfree >= want ? find_run(q, want, 0, SCORE_ZERO, &sc) : -1;
    if (i >= 0 && sc > best) best = sc, start = i, r = q;
  }
  if (!r && (r = region_create(np, want, 0)) != NULL) start = find_run(r, want, 0, SCORE_ZERO, &best);
  if (!r || start < 0) {
    np->reserve = 0;
    pthread_mutex_unlock(&np->lock);
    return ENOMEM;
  }
  /* make every chunk of the run ready, claiming (and working on) up to 64
   * ranges at a time; chunks someone allocated meanwhile are left alone */
  size_t cursor = (size_t)start, end = (size_t)start + want;
  for (;;) {
    struct pz_claim c[64];
    size_t nc = 0;
    for (; cursor < end && nc < 64; cursor++) {
      uint8_t st = r->state[cursor];
      if (st != PZ_CS_UNTOUCHED && st != PZ_CS_DIRTY) continue;
      if (nc && c[nc - 1].from == st && c[nc - 1].start + c[nc - 1].n == cursor) c[nc - 1].n++;
      else c[nc++] = (struct pz_claim){r, cursor, 1, (enum pz_chunk_state)st, false, false,
                                       new_claim_id(np, st == PZ_CS_UNTOUCHED)};
      claim_chunk(np, r, cursor, c[nc - 1].id);
    }
    pthread_mutex_unlock(&np->lock);
    bool ok[64] = {false}, all = true;
    for (size_t k = 0; k < nc; k++) {
      char *p = r->base + (c[k].start << PZ_CHUNK_SHIFT);
      size_t len = c[k].n << PZ_CHUNK_SHIFT;
      if (c[k].from == PZ_CS_UNTOUCHED) ok[k] = commit(r, c[k].start, c[k].n) == 0 && pz_populate(p, len);
      else pz_zero(p, len), ok[k] = true;
      all &= ok[k];
    }
    pz_pool_complete(np->node, c, nc, ok);
    if (!all) return ENOMEM;
    if (cursor >= end) return 0;
    pthread_mutex_lock(&np->lock);
  }
}

/* ---------------------------------------------------------------- trim */

/* Give back up to `give` free chunks of a node, never going under
 * `floor` free chunks, in releasable blocks, on the caller's thread. */
static size_t shrink_node(unsigned node, size_t give, size_t floor) {
  struct pz_node_pool *np = &pz_nodes[node];
  size_t done = 0;
  while (done < give) {
    pthread_mutex_lock(&np->lock);
    size_t free = np->count[PZ_CS_DIRTY] + np->count[PZ_CS_READY];
    size_t n = free > floor ? free - floor : 0;
    if (n > give - done) n = give - done;
    struct pz_claim c[16];
    size_t nr = n ? claim_release(np, n, 0, c, 16) : 0;
    pthread_mutex_unlock(&np->lock);
    if (!nr) break;
    bool ok[16];
    for (size_t k = 0; k < nr; k++) {
      ok[k] = decommit(c[k].region, c[k].start, c[k].n) == 0;
      if (ok[k]) done += c[k].n;
    }
    /* an allocation may have taken some of it meanwhile: complete hands over */
    pz_pool_complete(node, c, nr, ok);
    if (!ok[0]) break;
  }
  return done;
}

/* Give back free memory above max(keep, the low watermark) now (malloc_trim,
 * prezero_trim). */
size_t pz_chunk_trim(size_t keep) {
  size_t done = 0;
  for (unsigned node = 0; node < pz_topo.nnodes; node++) {
    struct pz_node_pool *np = &pz_nodes[node];
    pthread_mutex_lock(&np->lock);
    /* chunks a worker is zeroing are free memory too: let the batch in
     * flight finish (a few ms; at most half a second on a slow machine) */
    for (int waits = 0; waits < 5; waits++) {
      size_t pop = 0;
      for (struct pz_region *r = np->regions; r; r = r->next) pop += r->npop;
      if (np->count[PZ_CS_BUSY] <= pop) break;
      cond_wait_ms(&np->done, &np->lock, 100);
    }
    size_t floor = min_ready_chunks(np), want = (keep + PZ_CHUNK_SIZE - 1) >> PZ_CHUNK_SHIFT;
    pthread_mutex_unlock(&np->lock);
    done += shrink_node(node, SIZE_MAX, want > floor ? want : floor) << PZ_CHUNK_SHIFT;
  }
  return done;
}

/* An allocation about to fault `fresh` chunks in under a cgroup limit:
 * if that would bring the cgroup within 10% of its limit, the pool gives
 * back free memory first, on the allocating thread (the workers may be
 * slow to notice, and the kernel would kill the biggest process: us). */
static void make_room(struct pz_node_pool *np, size_t fresh) {
  size_t limit = pz_kernel.cgroup_max < pz_kernel.cgroup_high ? pz_kernel.cgroup_max : pz_kernel.cgroup_high;
  if (limit == SIZE_MAX) return;
  size_t used = pz_probe_cgroup_usage(), need = fresh << PZ_CHUNK_SHIFT, high = limit - limit / 10;
  if (used + need <= high) return;
  size_t excess = (used + need - high + PZ_CHUNK_SIZE - 1) >> PZ_CHUNK_SHIFT;
  pthread_mutex_lock(&np->lock);
  size_t floor = np->reserve; /* POOL_MIN gives way to the limit; an explicit reserve does not */
  pthread_mutex_unlock(&np->lock);
  shrink_node(np->node, excess, floor);
}

/* ---------------------------------------------------------------- stats, fork */

void pz_chunk_stats(struct pz_pool_stats *out) {
  memset(out, 0, sizeof *out);
  for (unsigned node = 0; node < pz_topo.nnodes; node++) {
    struct pz_node_pool *np = &pz_nodes[node];
    pthread_mutex_lock(&np->lock);
    for (int s = 0; s < PZ_CS__COUNT; s++) out->chunks[s] += np->count[s];
    const size_t *src = (const size_t *)&np->st;
    size_t *dst = (size_t *)&out->node;
    for (size_t k = 0; k < sizeof np->st / sizeof(size_t); k++) dst[k] += src[k];
    out->workers += (size_t)atomic_load(&np->workers);
    pthread_mutex_unlock(&np->lock);
  }
  /* huge-page coverage: regions are never unmapped nor unlinked, so the
   * list is walked (and the page tables scanned) without the lock */
  out->pagemap_scan = true;
  for (unsigned node = 0; node < pz_topo.nnodes && out->pagemap_scan; node++)
    for (struct pz_region *r = __atomic_load_n(&pz_nodes[node].regions, __ATOMIC_ACQUIRE); r; r = r->next)
      if (pz_os_pagemap_huge(r->base, (size_t)r->nchunks << PZ_CHUNK_SHIFT, &out->resident_bytes,
                             &out->huge_bytes) != 0) {
        out->pagemap_scan = false;
        break;
      }
  out->regions = atomic_load(&regions_made);
  out->reserved_bytes = atomic_load(&reserved_bytes);
  out->thp_refused = atomic_load(&thp_refused);
}

void pz_pool_prefork(void) {
  for (unsigned n = 0; n < pz_topo.nnodes; n++) pthread_mutex_lock(&pz_nodes[n].lock);
}

void pz_pool_postfork(bool child) {
  for (unsigned n = 0; n < pz_topo.nnodes; n++) {
    struct pz_node_pool *np = &pz_nodes[n];
    if (!child) {
      pthread_mutex_unlock(&np->lock);
      continue;
    }
    pthread_mutex_init(&np->lock, NULL);
    pthread_cond_init(&np->work, NULL);
    pthread_cond_init(&np->done, NULL);
    /* the workers did not survive: what they held is dirty, they restart lazily */
    np->sleeping = 0;
    np->forked = true;
    atomic_store(&np->fork_defer, 64);
    atomic_store(&np->workers, 0);
    for (struct pz_region *r = np->regions; r; r = r->next)
      for (size_t i = 0; i < r->nchunks; i++)
        if (r->state[i] == PZ_CS_BUSY || r->state[i] == PZ_CS_TAKEN) {
          /* what the worker had done to it is unknown (decommitted half
           * way, its pages moved out, zeroed in part): replaced by a fresh
           * reservation, so that its state says what it is (a child that
           * callocs took such a chunk, PROT_NONE but marked committed, and
           * died: 1 in ~10 runs of faults-mmap under load); else committed
           * and dirty; else never used again */
          transition(np, r, i, PZ_CE_UNCLAIM);
          r->claim_id[i] = 0;
          if (r->state[i] == PZ_CS_TAIL) continue; /* taken by a thread the child does not have: in use for ever */
          if (decommit(r, i, 1) == 0 && !r->rw[i]) transition(np, r, i, PZ_CE_DISCARD);
          else if (pz_os_commit(r->base + (i << PZ_CHUNK_SHIFT), PZ_CHUNK_SIZE) == 0) r->rw[i] = 1;
          else clobber_one(np, r, i);
        }
    for (struct pz_region *r = np->regions; r; r = r->next) r->npop = 0;
  }
}
