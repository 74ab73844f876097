/* Pool regions: the address space of the chunk pool and the memory state
 * of its chunks.
 *
 * Owns: the node pools (pz_nodes), regions (PROT_NONE reservations grown
 * geometrically, their per-chunk arrays, husks reused), the chunk map,
 * chunk states and claim ids (every state change goes through
 * pool_transition), finding runs (score()), and what a chunk's memory is:
 * committed or not, huge-page advice, lazily freed, sanitized after the
 * program had it. The design and the locking are described in chunk.c. */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pool-internal.h"

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
    uint32_t v = kind == PZ_MK_NONE ? 0 : ((uint32_t)kind | region << 8); /* kind alone in the low byte */
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
_Atomic size_t pool_regions_made, pool_reserved_bytes, pool_thp_refused; /* all nodes */

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
uint32_t pool_now_ms(void) {
  struct timespec ts; /* the coarse clock: a few ns (vDSO), ticks of a few ms are enough here */
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static struct pz_region *region_by_id(uint32_t id) {
  return atomic_load_explicit(&regions_by_id, memory_order_acquire)[id];
}

struct pz_region *pool_region_of(const void *p, size_t *idx) {
  uint32_t e = pz_map_get(p);
  if (!e) return NULL;
  struct pz_region *r = region_by_id(e >> 8);
  *idx = (size_t)(((const char *)p - r->base) >> PZ_CHUNK_SHIFT);
  return r;
}

/* pthread_cond_timedwait for at most ms milliseconds (the condition
 * variables use the default clock). Both waits are cancellation points,
 * and malloc is not: a program thread cancelled while it waits in malloc
 * would leave holding the node's lock (every allocation after it hangs),
 * so cancellation is off while it waits. */
int pool_cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, long ms) {
  struct timespec ts;
  int old, rc;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_nsec += (ms % 1000) * 1000000;
  ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000;
  ts.tv_nsec %= 1000000000;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
  rc = pthread_cond_timedwait(c, m, &ts);
  pthread_setcancelstate(old, NULL);
  return rc;
}

void pool_cond_wait(pthread_cond_t *c, pthread_mutex_t *m) {
  int old;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
  pthread_cond_wait(c, m);
  pthread_setcancelstate(old, NULL);
}

void pool_set_state(struct pz_node_pool *np, struct pz_region *r, size_t i, enum pz_chunk_state s) {
  np->count[r->state[i]]--;
  np->count[s]++;
  if (is_free_state(r->state[i]) != is_free_state(s)) {
    if (is_free_state(s)) r->nfree++;
    else r->nfree--;
  }
  r->state[i] = (uint8_t)s;
}

void pool_transition(struct pz_node_pool *np, struct pz_region *r, size_t i, enum pz_chunk_event e) {
  int next = pz_chunk_next_state(r->state[i], e);
  if (PZ_UNLIKELY(next < 0))
    pz_fatal("internal error: chunk %p state %d event %d", (void *)(r->base + i * PZ_CHUNK_SIZE),
             r->state[i], e);
  pool_set_state(np, r, i, next);
}

/* With the lock held: a fresh claim id (never 0), with PZ_CLAIM_POP for
 * pre-faulting claims. */
uint32_t pool_new_claim_id(struct pz_node_pool *np, bool pop) {
  uint32_t id = ++np->claim_seq & ~(PZ_CLAIM_POP | PZ_CLAIM_MOVE);
  if (!id) id = ++np->claim_seq & ~(PZ_CLAIM_POP | PZ_CLAIM_MOVE);
  return id | (pop ? PZ_CLAIM_POP : 0);
}

/* With the lock held: chunk i of r becomes BUSY under claim id. */
void pool_claim_chunk(struct pz_node_pool *np, struct pz_region *r, size_t i, uint32_t id) {
  pool_transition(np, r, i, PZ_CE_CLAIM);
  r->claim_id[i] = id;
  if (id & PZ_CLAIM_POP) r->npop++;
}


static void advise(void *p, size_t len) {
  long long thp = pz_opt(PZ_OPT_THP);
  if (thp == PZ_THP_OPT_NEVER) {
    pz_os.madvise(p, len, MADV_NOHUGEPAGE);
    return;
  }
  if (thp == PZ_THP_OPT_ALWAYS || pz_kernel.thp_usable) {
    if (pz_os_hugepage(p, len) != 0) atomic_fetch_add(&pool_thp_refused, 1);
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
size_t pool_unmap_free_regions(struct pz_node_pool *np) {
  size_t done = 0;
  for (struct pz_region *r = np->regions; r; r = r->next) {
    if (!r->nchunks || r->nfree != r->nchunks || r->npop) continue;
    size_t n = r->nchunks;
    pz_map_set_range(r->base, n, PZ_MK_NONE, 0);
    for (size_t i = 0; i < n; i++) np->count[r->state[i]]--;
    __atomic_store_n(&r->nchunks, 0, __ATOMIC_RELEASE);
    r->nfree = 0;
    pz_os_unmap(r->base, n << PZ_CHUNK_SHIFT);
    atomic_fetch_sub(&pool_reserved_bytes, n << PZ_CHUNK_SHIFT);
    done += n;
  }
  return done;
}


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
    n += pool_shrink_node(node, SIZE_MAX, 0);
    pthread_mutex_lock(&np->lock);
    for (struct pz_region *r = np->regions; r; r = r->next)
      for (size_t i = 0; i < r->nchunks; i++)
        if (r->state[i] == PZ_CS_UNTOUCHED && r->rw[i] && !r->foreign[i] && pool_decommit(r, i, 1) == 0) n++;
    n += pool_unmap_free_regions(np);
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
struct pz_region *pool_region_create(struct pz_node_pool *np, size_t need_chunks, size_t align) {
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
    else if (!unmapped && pool_unmap_free_regions(np)) unmapped = true;
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
  atomic_fetch_add(&pool_regions_made, 1);
  atomic_fetch_add(&pool_reserved_bytes, want << PZ_CHUNK_SHIFT);
  pz_map_set_range(base, want, PZ_MK_FREE, r->id);
  return r;
}

/* How well a chunk state fits the request (higher is better). Measured on
 * these machines: memset of resident memory runs at 47-90 GB/s, a first
 * touch of fresh memory costs ~0.12 s/GiB with THP, 0.5 s/GiB without, and
 * 1.4-2.8 s/GiB when the host reclaimed it. So a dirty chunk zeroed inline
 * beats an untouched one even for calloc; READY (zeroed in the background)
 * beats both. malloc takes dirty first, saving READY chunks for calloc. */
static int score(uint8_t s, int mode) {
  if (mode == SCORE_ZERO) return s == PZ_CS_READY ? 2 : s == PZ_CS_DIRTY ? 1 : 0;
  if (mode == SCORE_KEEP_READY) /* ready memory is promised (reserve): leave it */
    return s == PZ_CS_DIRTY ? 2 : s == PZ_CS_UNTOUCHED ? 1 : 0;
  return s == PZ_CS_DIRTY ? 2 : s == PZ_CS_READY ? 1 : 0;
}

/* Best run of n free chunks in r, aligned; returns start index or -1. */
long pool_find_run(struct pz_region *r, size_t n, size_t align, int mode, int *best_score) {
  return pool_find_run_busy(r, n, align, mode, best_score, false);
}

/* busy_ok: chunks a worker holds count as free (score 0): the allocation
 * takes them over and waits only for the batch in flight. */
long pool_find_run_busy(struct pz_region *r, size_t n, size_t align, int mode,
                          int *best_score, bool busy_ok) {
  long best = -1;
  int bscore = -1;
  size_t step = align > PZ_CHUNK_SIZE ? align >> PZ_CHUNK_SHIFT : 1;
  if (n == 1 && step == 1 && !busy_ok && mode == SCORE_KEEP_READY) {
    /* a reserve is being made ready from the low end of the region (claim()
     * works in address order): take single chunks from the high end, so
     * the reserve stays one run */
    for (size_t i = r->nchunks; i-- > 0;) {
      if (!pool_avail(r, i)) continue;
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
      if (!pool_avail(r, i)) {
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
    if (pool_avail(r, i) || (busy_ok && r->state[i] == PZ_CS_BUSY && !(r->claim_id[i] & PZ_CLAIM_MOVE))) {
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

struct pz_node_pool *pool_current(void) { return &pz_nodes[pz_topo_current_node()]; }

size_t pool_min_ready_chunks(const struct pz_node_pool *np) {
  size_t m = (size_t)pz_opt(PZ_OPT_POOL_MIN) >> PZ_CHUNK_SHIFT;
  return np->reserve > m ? np->reserve : m;
}

void pz_pool_wake_workers(void) {
  for (unsigned node = 0; node < pz_topo.nnodes; node++) {
    struct pz_node_pool *np = &pz_nodes[node];
    pthread_mutex_lock(&np->lock);
    if (np->sleeping) pthread_cond_broadcast(&np->work);
    pthread_mutex_unlock(&np->lock);
  }
}

/* With np->lock held: let a sleeping worker know the numbers changed. */
void pool_wake_worker(struct pz_node_pool *np) {
  if (np->sleeping) pthread_cond_signal(&np->work);
}

bool pool_thp_on(void) {
  return pz_opt(PZ_OPT_THP) != PZ_THP_OPT_NEVER &&
         (pz_kernel.thp_usable || pz_opt(PZ_OPT_THP) == PZ_THP_OPT_ALWAYS);
}


/* With the lock held: chunk flag *nh for an allocation that wants 4 KiB
 * pages there or not; `fresh`: the chunk was never faulted (advice given
 * now is what its pages will be); `cold`: it wants them only because they
 * fault faster now (PZ_NH_COLD). True when the advice changes. */
bool pool_note_advice(uint8_t *nh, bool want_small_pages, bool fresh, bool cold) {
  uint8_t small = cold ? PZ_NH_COLD : PZ_NH_SMALL;
  if (*nh == PZ_NH_COLD && !fresh) return false; /* 4 KiB pages until it is given back: keep saying so */
  if (want_small_pages == !!*nh) {
    if (want_small_pages && fresh) *nh = small; /* advised before its first fault */
    return false;
  }
  *nh = !want_small_pages ? 0 : fresh ? small : PZ_NH_ADVISED;
  return true;
}

/* madvise chunks [i, i+n) of r as their flags say, one call per run of
 * equal advice. The caller owns the run: nobody else changes its flags. */
void pool_apply_advice(struct pz_region *r, size_t i, size_t n) {
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
  else if (pool_thp_on()) pool_apply_advice(r, i, n);
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
void pool_lazyfree(struct pz_region *r, size_t i, size_t n) {
  if (!pool_thp_on()) return;
  /* Chunks that went out fresh on 4 KiB pages (PZ_NH_COLD, many: every
   * large allocation the pool had nothing for) too, under a memory limit
   * (a cgroup's, or the machine short of memory), where what the program
   * freed must be the first memory the kernel takes (test cgroup-oom);
   * elsewhere they are kept as the 4 KiB chunks of sparse tables and small
   * heaps are, and given back after PREZERO_RETAIN_MS */
  const struct pz_node_pool *np = &pz_nodes[r->node];
  bool limited = pz_kernel.cgroup_max != SIZE_MAX || pz_kernel.cgroup_high != SIZE_MAX ||
                 __atomic_load_n(&np->tight, __ATOMIC_RELAXED) || __atomic_load_n(&np->pressure, __ATOMIC_RELAXED);
  for (size_t k = 0, e; k < n; k = e) {
    for (e = k + 1; e < n && r->nohuge[i + e] == r->nohuge[i + k];) e++;
    if (!r->nohuge[i + k] || (r->nohuge[i + k] == PZ_NH_COLD && limited))
      pz_os.madvise(r->base + ((i + k) << PZ_CHUNK_SHIFT), (e - k) << PZ_CHUNK_SHIFT, MADV_FREE);
  }
}

/* Commit chunks [i, i+n) of r where they are only reserved (the caller
 * holds them). 0 or errno: ENOMEM at vm.max_map_count or at the commit
 * limit (vm.overcommit_memory=2), where glibc's mmap would fail too. */
int pool_commit(struct pz_region *r, size_t i, size_t n) {
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
void pool_fresh_range(struct pz_region *r, size_t i, size_t n) {
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
int pool_decommit(struct pz_region *r, size_t i, size_t n) {
  char *p = r->base + (i << PZ_CHUNK_SHIFT);
  if (pz_os_decommit(p, n << PZ_CHUNK_SHIFT) == 0) {
    pool_fresh_range(r, i, n);
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
bool pool_sanitize(struct pz_region *r, size_t i, size_t n, bool *fresh) {
  char *p = r->base + (i << PZ_CHUNK_SHIFT);
  size_t len = n << PZ_CHUNK_SHIFT;
  *fresh = false;
  if (!memchr(&r->foreign[i], 1, n) && pz_os_reset(p, len) == 0) {
    restore_advice(r, i, n);
    pz_os_bind_node(p, len, r->node);
    return true;
  }
  if (pz_os_decommit(p, len) != 0) return false;
  pool_fresh_range(r, i, n);
  *fresh = true;
  return true;
}

