/* Chunk pool: the one source of memory for every other layer.
 *
 * Owns: regions (2 MiB-aligned reservations of chunks, madvised for huge
 * pages), the state of every free chunk, runs of chunks handed out, and the
 * chunk map that lets free() classify any pointer without touching it.
 *
 * Synchronisation:
 *   pool.lock (mutex)   region list, state[], runlen[], nfree, counters,
 *                       map writes. Never held across an madvise/mmap of
 *                       chunks that someone else could be using.
 *   map reads           lock-free (relaxed loads): an entry for a chunk in
 *                       use was written before its memory was handed out.
 *
 * Allocation policy (what makes calloc cheap): calloc and large requests
 * prefer chunks that read zero (READY, then UNTOUCHED) and report per chunk
 * whether they are zero, so the caller memsets only dirty ones; malloc
 * prefers DIRTY chunks, saving zero memory for calloc.
 */

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

/* ---------------------------------------------------------------- states */

int pz_chunk_next_state(enum pz_chunk_state s, enum pz_chunk_event e) {
  switch (e) {
  case PZ_CE_ALLOC:
    return (s == PZ_CS_UNTOUCHED || s == PZ_CS_READY || s == PZ_CS_DIRTY) ? PZ_CS_USED : -1;
  case PZ_CE_FREE:
    return (s == PZ_CS_USED || s == PZ_CS_TAIL) ? PZ_CS_DIRTY : -1;
  case PZ_CE_DISCARD:
    return (s == PZ_CS_DIRTY || s == PZ_CS_READY || s == PZ_CS_UNTOUCHED) ? PZ_CS_UNTOUCHED : -1;
  case PZ_CE_ZEROED:
    return (s == PZ_CS_DIRTY || s == PZ_CS_UNTOUCHED) ? PZ_CS_READY : -1;
  }
  return -1;
}

static inline bool is_free_state(uint8_t s) { return s <= PZ_CS_DIRTY; }
static inline bool is_zero_state(uint8_t s) { return s == PZ_CS_UNTOUCHED || s == PZ_CS_READY; }

/* ------------------------------------------------------------- chunk map */

#define MAP_LEAF_BITS PZ_MAP_LEAF_BITS
#define MAP_TOP_BITS PZ_MAP_TOP_BITS
_Atomic(uint32_t *) pz_map_top[1u << MAP_TOP_BITS];
#define map_top pz_map_top

/* Called with pool.lock held. Leaves come from metadata memory. */
static bool map_prepare(void *base, size_t nchunks) {
  uintptr_t a = (uintptr_t)base;
  for (size_t i = 0; i < nchunks; i++, a += PZ_CHUNK_SIZE) {
    uintptr_t t = a >> (PZ_CHUNK_SHIFT + MAP_LEAF_BITS);
    if (t >= (1u << MAP_TOP_BITS)) return false;
    if (!atomic_load_explicit(&map_top[t], memory_order_relaxed)) {
      uint32_t *leaf = pz_meta_alloc(sizeof(uint32_t) << MAP_LEAF_BITS);
      if (!leaf) return false;
      atomic_store_explicit(&map_top[t], leaf, memory_order_release);
    }
  }
  return true;
}

void pz_map_set_range(void *base, size_t nchunks, enum pz_map_kind kind, uint32_t region) {
  uintptr_t a = (uintptr_t)base;
  for (size_t i = 0; i < nchunks; i++, a += PZ_CHUNK_SIZE) {
    uint32_t *leaf = atomic_load_explicit(&map_top[a >> (PZ_CHUNK_SHIFT + MAP_LEAF_BITS)],
                                          memory_order_relaxed);
    uint32_t v = kind == PZ_MK_NONE ? 0 : ((uint32_t)kind | region << 4);
    __atomic_store_n(&leaf[(a >> PZ_CHUNK_SHIFT) & ((1u << MAP_LEAF_BITS) - 1)], v,
                     __ATOMIC_RELEASE);
  }
}

/* ---------------------------------------------------------------- pool */

#define REGION_DEFAULT_CHUNKS 512 /* 1 GiB of address space, reserved not committed */
#define REGION_MAX_IDS (1u << 20)

static struct {
  pthread_mutex_t lock;
  struct pz_region *regions;   /* newest first */
  struct pz_region **by_id;    /* id -> region */
  uint32_t nregions;
  size_t count[5];             /* chunks per state */
  struct pz_pool_stats st;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER};

void pz_pool_init(void) {}

static void set_state(struct pz_region *r, size_t i, enum pz_chunk_state s) {
  pool.count[r->state[i]]--;
  pool.count[s]++;
  if (is_free_state(r->state[i]) != is_free_state(s)) {
    if (is_free_state(s)) r->nfree++;
    else r->nfree--;
  }
  r->state[i] = (uint8_t)s;
}

static void transition(struct pz_region *r, size_t i, enum pz_chunk_event e) {
  int next = pz_chunk_next_state(r->state[i], e);
  if (PZ_UNLIKELY(next < 0))
    pz_fatal("internal error: chunk %p state %d event %d", (void *)(r->base + i * PZ_CHUNK_SIZE),
             r->state[i], e);
  set_state(r, i, next);
}

static void advise(void *p, size_t len) {
  long long thp = pz_opt(PZ_OPT_THP);
  if (thp == PZ_THP_OPT_NEVER) {
    pz_os.madvise(p, len, MADV_NOHUGEPAGE);
    return;
  }
  if (thp == PZ_THP_OPT_ALWAYS || pz_kernel.thp_usable) {
    if (pz_os_hugepage(p, len) != 0) pool.st.thp_refused++;
  }
}

/* Called with the lock held. */
static struct pz_region *region_create(size_t need_chunks, size_t align) {
  if (!pool.by_id) {
    pool.by_id = pz_meta_alloc(sizeof(*pool.by_id) * REGION_MAX_IDS);
    if (!pool.by_id) return NULL;
  }
  if (pool.nregions + 1 >= REGION_MAX_IDS) return NULL;
  size_t want = need_chunks > REGION_DEFAULT_CHUNKS ? need_chunks : REGION_DEFAULT_CHUNKS;
  size_t al = align > PZ_CHUNK_SIZE ? align : PZ_CHUNK_SIZE;
  char *base = NULL;
  for (;;) { /* a smaller region when the OS refuses the default size */
    if (want > (SIZE_MAX >> PZ_CHUNK_SHIFT)) return NULL;
    base = pz_os_map_aligned(want << PZ_CHUNK_SHIFT, al);
    if (base || want == need_chunks) break;
    want = want / 2 > need_chunks ? want / 2 : need_chunks;
  }
  if (!base) return NULL;
  struct pz_region *r = pz_meta_alloc(sizeof *r);
  uint8_t *state = pz_meta_alloc(want);
  uint32_t *runlen = pz_meta_alloc(want * sizeof(uint32_t));
  if (!r || !state || !runlen || !map_prepare(base, want)) {
    pz_os_unmap(base, want << PZ_CHUNK_SHIFT);
    return NULL; /* metadata lost (never freed); we are out of memory anyway */
  }
  advise(base, want << PZ_CHUNK_SHIFT);
  r->base = base;
  r->nchunks = (uint32_t)want;
  r->nfree = (uint32_t)want;
  r->state = state; /* zero = PZ_CS_UNTOUCHED */
  r->runlen = runlen;
  r->id = ++pool.nregions;
  pool.by_id[r->id] = r;
  r->next = pool.regions;
  pool.regions = r;
  pool.count[PZ_CS_UNTOUCHED] += want;
  pool.st.regions++;
  pool.st.reserved_bytes += want << PZ_CHUNK_SHIFT;
  pz_map_set_range(base, want, PZ_MK_FREE, r->id);
  return r;
}

/* How well a chunk state fits the request (higher is better). Measured on
 * these machines: memset of resident memory runs at ~25 GB/s, a first
 * touch of fresh memory costs ~0.12 s/GiB with THP, 0.5 s/GiB without, and
 * 1.4-2.8 s/GiB when the host reclaimed it. So a dirty chunk zeroed inline
 * beats an untouched one even for calloc; READY (pre-zeroed in the
 * background) beats both. malloc takes dirty first, saving READY chunks
 * for calloc. */
static int score(uint8_t s, bool want_zero) {
  if (want_zero) return s == PZ_CS_READY ? 2 : s == PZ_CS_DIRTY ? 1 : 0;
  return s == PZ_CS_DIRTY ? 2 : s == PZ_CS_READY ? 1 : 0;
}

/* Best run of n free chunks in r, aligned; returns start index or -1. */
static long find_run(struct pz_region *r, size_t n, size_t align, bool want_zero, int *best_score) {
  long best = -1;
  int bscore = -1;
  size_t step = align > PZ_CHUNK_SIZE ? align >> PZ_CHUNK_SHIFT : 1;
  if (n == 1 && step == 1) {
    for (size_t i = 0; i < r->nchunks; i++) {
      if (!is_free_state(r->state[i])) {
        i += r->runlen[i] ? r->runlen[i] - 1 : 0; /* skip a run by its head */
        continue;
      }
      int s = score(r->state[i], want_zero);
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
    if (is_free_state(r->state[i])) {
      nfree++;
      total += (size_t)score(r->state[i], want_zero);
    } else {
      nfree = total = 0;
      continue;
    }
    if (nfree > n) {
      total -= (size_t)score(r->state[i - n], want_zero);
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

static struct pz_region *region_of(const void *p, size_t *idx) {
  uint32_t e = pz_map_get(p);
  if (!e) return NULL;
  struct pz_region *r = pool.by_id[e >> 4];
  *idx = (size_t)(((const char *)p - r->base) >> PZ_CHUNK_SHIFT);
  return r;
}

#define ZERO_RANGES 16

void *pz_chunk_alloc(size_t n, size_t align, int flags, enum pz_map_kind kind, bool *zero_out,
                     size_t *zeroed_out) {
  if (n == 0 || n > (PZ_MAX_ALLOC >> PZ_CHUNK_SHIFT)) return NULL;
  bool want_zero = flags & PZ_CA_PREFER_ZERO;
  pthread_mutex_lock(&pool.lock);
  struct pz_region *best_r = NULL;
  long best_i = -1;
  int best_s = -1;
  for (struct pz_region *r = pool.regions; r; r = r->next) {
    if (r->nfree < n) continue;
    int s;
    long i = find_run(r, n, align, want_zero, &s);
    if (i >= 0 && s > best_s) {
      best_s = s;
      best_i = i;
      best_r = r;
      if (s == 4) break;
    }
  }
  if (!best_r) {
    struct pz_region *r = region_create(n, align);
    if (r) {
      best_r = r;
      best_i = find_run(r, n, align, want_zero, &best_s);
    }
  }
  if (!best_r || best_i < 0) {
    pthread_mutex_unlock(&pool.lock);
    return NULL;
  }
  struct pz_region *r = best_r;
  size_t ranges[ZERO_RANGES][2], nranges = 0; /* dirty chunk ranges [start, end) */
  for (size_t k = 0; k < n; k++) {
    size_t i = (size_t)best_i + k;
    if (!is_zero_state(r->state[i])) {
      if (nranges && ranges[nranges - 1][1] == k) ranges[nranges - 1][1] = k + 1;
      else if (nranges < ZERO_RANGES) {
        ranges[nranges][0] = k;
        ranges[nranges++][1] = k + 1;
      } else ranges[nranges - 1][1] = k + 1; /* out of slots: widen the last */
    }
    transition(r, i, PZ_CE_ALLOC);
    if (k) set_state(r, i, PZ_CS_TAIL);
  }
  r->runlen[best_i] = (uint32_t)n;
  char *base = r->base + ((size_t)best_i << PZ_CHUNK_SHIFT);
  pz_map_set_range(base, 1, kind, r->id);
  if (n > 1)
    pz_map_set_range(base + PZ_CHUNK_SIZE, n - 1,
                     kind == PZ_MK_LARGE ? PZ_MK_LARGE_TAIL : kind, r->id);
  pool.st.runs_alloc++;
  pthread_mutex_unlock(&pool.lock);
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

size_t pz_chunk_run_len(const void *base) {
  size_t i;
  struct pz_region *r = region_of(base, &i);
  return r ? r->runlen[i] : 0;
}

/* Mark chunks [i, i+n) of r free and DIRTY (lock held). */
static void release_range(struct pz_region *r, size_t i, size_t n) {
  for (size_t k = 0; k < n; k++) transition(r, i + k, PZ_CE_FREE);
  pz_map_set_range(r->base + (i << PZ_CHUNK_SHIFT), n, PZ_MK_FREE, r->id);
}

/* Keep at most PREZERO_RETAIN bytes of dirty free chunks: discard the run
 * being freed when over, while we still own it (no lock held). */
static bool over_retain(size_t adding) {
  size_t dirty = __atomic_load_n(&pool.count[PZ_CS_DIRTY], __ATOMIC_RELAXED);
  return ((dirty + adding) << PZ_CHUNK_SHIFT) > (size_t)pz_opt(PZ_OPT_RETAIN);
}

/* Free chunks [i, i+n) of r; `head` is the run's head and `keep` how many
 * chunks the run keeps (0 when the whole run goes). */
static void free_range(struct pz_region *r, size_t head, size_t keep, size_t i, size_t n) {
  char *p = r->base + (i << PZ_CHUNK_SHIFT);
  bool discard = over_retain(n) && pz_os_discard(p, n << PZ_CHUNK_SHIFT) == 0;
  pthread_mutex_lock(&pool.lock);
  r->runlen[head] = (uint32_t)keep;
  release_range(r, i, n);
  if (discard) {
    for (size_t k = 0; k < n; k++) transition(r, i + k, PZ_CE_DISCARD);
    pool.st.discarded_bytes += n << PZ_CHUNK_SHIFT;
  }
  pool.st.runs_free++;
  pthread_mutex_unlock(&pool.lock);
}

void pz_chunk_free(void *base) {
  size_t i;
  struct pz_region *r = region_of(base, &i);
  free_range(r, i, 0, i, r->runlen[i]);
}

bool pz_chunk_move(void *from, void *to) {
  size_t i, j;
  struct pz_region *r = region_of(from, &i), *q = region_of(to, &j);
  size_t n = r->runlen[i], m = q->runlen[j];
  if (pz_os_move(from, n << PZ_CHUNK_SHIFT, to, m << PZ_CHUNK_SHIFT) != 0) return false;
  /* `from` is a hole now: map fresh zero memory back so the region stays whole */
  if (pz_os_remap_fresh(from, n << PZ_CHUNK_SHIFT) != 0) {
    /* keep the chunks USED forever: a hole in the region is never handed out */
    return true;
  }
  advise(from, n << PZ_CHUNK_SHIFT);
  pthread_mutex_lock(&pool.lock);
  r->runlen[i] = 0;
  release_range(r, i, n);
  for (size_t k = 0; k < n; k++) transition(r, i + k, PZ_CE_DISCARD);
  pool.st.runs_free++;
  pthread_mutex_unlock(&pool.lock);
  return true;
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
  pthread_mutex_lock(&pool.lock);
  size_t old = r->runlen[i];
  bool ok = i + n <= r->nchunks;
  for (size_t k = old; ok && k < n; k++) ok = is_free_state(r->state[i + k]);
  if (ok) {
    for (size_t k = old; k < n; k++) {
      transition(r, i + k, PZ_CE_ALLOC);
      set_state(r, i + k, PZ_CS_TAIL);
    }
    r->runlen[i] = (uint32_t)n;
    pz_map_set_range(r->base + ((i + old) << PZ_CHUNK_SHIFT), n - old, PZ_MK_LARGE_TAIL, r->id);
  }
  pthread_mutex_unlock(&pool.lock);
  return ok;
}

size_t pz_chunk_trim(size_t keep) {
  size_t done = 0;
  for (;;) {
    pthread_mutex_lock(&pool.lock);
    if ((pool.count[PZ_CS_DIRTY] << PZ_CHUNK_SHIFT) <= keep) {
      pthread_mutex_unlock(&pool.lock);
      return done;
    }
    /* take the first maximal run of dirty chunks out of the free set */
    struct pz_region *r;
    size_t i = 0, n = 0;
    for (r = pool.regions; r && !n; r = n ? r : r->next) {
      for (i = 0; i < r->nchunks; i++)
        if (r->state[i] == PZ_CS_DIRTY) break;
      while (i + n < r->nchunks && r->state[i + n] == PZ_CS_DIRTY) n++;
    }
    for (size_t k = 0; k < n; k++) set_state(r, i + k, PZ_CS_USED);
    pthread_mutex_unlock(&pool.lock);
    if (!n) return done; /* counts said dirty but none found: cannot happen */
    bool ok = pz_os_discard(r->base + (i << PZ_CHUNK_SHIFT), n << PZ_CHUNK_SHIFT) == 0;
    pthread_mutex_lock(&pool.lock);
    for (size_t k = 0; k < n; k++) set_state(r, i + k, ok ? PZ_CS_UNTOUCHED : PZ_CS_DIRTY);
    if (ok) pool.st.discarded_bytes += n << PZ_CHUNK_SHIFT;
    pthread_mutex_unlock(&pool.lock);
    if (!ok) return done;
    done += n << PZ_CHUNK_SHIFT;
  }
}

void pz_chunk_stats(struct pz_pool_stats *out) {
  pthread_mutex_lock(&pool.lock);
  *out = pool.st;
  memcpy(out->chunks, pool.count, sizeof pool.count);
  pthread_mutex_unlock(&pool.lock);
}

void pz_pool_prefork(void) { pthread_mutex_lock(&pool.lock); }

void pz_pool_postfork(bool child) {
  if (child) pthread_mutex_init(&pool.lock, NULL);
  else pthread_mutex_unlock(&pool.lock);
}
