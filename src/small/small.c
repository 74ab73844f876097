/* Small and medium objects: size classes, per-thread heaps, pages.
 *
 * A chunk (2 MiB, from the pool) is owned by one heap. Slice 0 holds the
 * chunk header (page descriptors); slices 1..31 (64 KiB each) are carved
 * into pages: spans of slices holding blocks of one size class, or one
 * medium block. Page descriptors are initialised when a page is made, and
 * blocks are threaded onto the free list a few KiB at a time, so a fresh
 * chunk costs nothing until it is used.
 *
 * Free lists per page (free-list sharding):
 *   free        blocks to hand out; `free_is_zero` when they come straight
 *               from fresh (zero) memory, so calloc clears one word only;
 *   local_free  blocks freed by the owner (kept apart so `free` stays zero);
 *   xfree       blocks freed by other threads: a lock-free stack (CAS).
 * A thread that frees another heap's block first keeps it in its own
 * bounded cache (xc, in internal.h) for its next malloc of the class.
 * The links inside free blocks are stored encoded and checked on every pop
 * (pz_link_next in internal.h): an overwritten link aborts, naming the block.
 *
 * Full pages leave the class queue. A full page's xfree carries the
 * DELAYED bit: the first remote free to see it pushes the page onto the
 * owner heap's `delayed` stack (once, via `delayed_pending`), and the owner
 * moves it back when it next runs out of blocks. Remote freers notify
 * before they release their block, so a page on a delayed stack always
 * has a block outstanding and cannot be retired underneath the notice.
 *
 * Heaps are never freed: a thread's heap is abandoned at thread exit
 * (collected, empty pages returned) and adopted whole by the next new
 * thread, so a stale heap pointer read by a remote freer stays valid.
 */

#include <errno.h>
#include <sched.h>
#include <string.h>

#include "small/small.h"

/* 16..128 by 16, then four classes per doubling up to 128 KiB */
/* pz_size_class up to 1024 B: by 16 B steps, 16..128 (classes 0..7), then
 * four classes per doubling (test size_classes_cover_every_size checks every size) */
const uint8_t pz_class_of16[65] = {0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15, 16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 17, 17, 17, 17, 17, 17, 18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 19, 19, 19, 19, 19, 19};
const uint32_t pz_class_size[PZ_NCLASSES] = {
    16,    32,    48,    64,    80,    96,    112,   128,   160,   192,    224,    256,
    320,   384,   448,   512,   640,   768,   896,   1024,  1280,  1536,   1792,   2048,
    2560,  3072,  3584,  4096,  5120,  6144,  7168,  8192,  10240, 12288,  14336,  16384,
    20480, 24576, 28672, 32768, 40960, 49152, 57344, 65536, 81920, 98304, 114688, 131072};

unsigned pz_class_slices(unsigned cls) {
  size_t bs = pz_class_size[cls];
  if (bs <= 8192) return 1;
  size_t n = (bs * 8 + PZ_SLICE_SIZE - 1) / PZ_SLICE_SIZE;
  return n > 8 ? 8 : (unsigned)n;
}

static pz_page empty_page; /* free == NULL: every fast path falls through */
pz_heap pz_heap_empty = {.pages = {[0 ... PZ_NCLASSES - 1] = &empty_page},
                         .tc16 = {[0 ... 64] = &pz_heap_empty.tc_top[0]}}; /* NULL == NULL: empty */
__thread pz_heap *pz_tls_heap __attribute__((tls_model("initial-exec"))) = &pz_heap_empty;
uintptr_t pz_free_key;
uintptr_t pz_xc_key;
uintptr_t pz_link_key;
static uint8_t xc_limit[PZ_XC_CLASSES]; /* blocks a heap's xc keeps per class */

static pthread_mutex_t heaps_lock = PTHREAD_MUTEX_INITIALIZER;
static pz_heap *heaps_all, *heaps_abandoned;
static pthread_key_t heap_key;
static size_t heaps_made;

void pz_page_set_block_size(pz_page *pg, uint32_t bs) {
  unsigned s = (unsigned)__builtin_ctz(bs);
  uint64_t odd = bs >> s, inv = odd; /* right mod 2^3 for any odd number */
  for (int i = 0; i < 5; i++) inv *= 2 - odd * inv; /* Newton: each step doubles the bits right */
  pg->block_size = bs;
  pg->div_inv = inv;
  pg->div_shift = (uint8_t)s;
}

/* ------------------------------------------------------------ page queues */

static void queue_remove(pz_heap *h, pz_page *pg) {
  pz_page **head = pg->in_full ? &h->full : &h->pages[pg->cls];
  if (pg->prev) pg->prev->next = pg->next;
  else *head = pg->next ? pg->next : (pg->in_full ? NULL : &empty_page);
  if (pg->next) pg->next->prev = pg->prev;
  else if (!pg->in_full) h->tails[pg->cls] = pg->prev;
  pg->next = pg->prev = NULL;
}

static void queue_push(pz_heap *h, pz_page *pg) {
  pz_page **head = pg->in_full ? &h->full : &h->pages[pg->cls];
  pz_page *old = (*head == &empty_page) ? NULL : *head;
  pg->prev = NULL;
  pg->next = old;
  if (old) old->prev = pg;
  else if (!pg->in_full) h->tails[pg->cls] = pg;
  *head = pg;
}

/* Last in its class queue: it is used after every page before it, by which
 * time more of its blocks have come back. */
static void queue_push_back(pz_heap *h, pz_page *pg) {
  pz_page *last = h->tails[pg->cls];
  if (!last) {
    queue_push(h, pg);
    return;
  }
  pg->prev = last;
  pg->next = NULL;
  last->next = pg;
  h->tails[pg->cls] = pg;
}

/* ------------------------------------------------------------ chunks/spans */

static pz_chunk *chunk_new(pz_heap *h, bool want_zero) {
  bool zero;
  pz_chunk *c = pz_chunk_alloc(1, 0, want_zero ? PZ_CA_PREFER_ZERO : 0, PZ_MK_SMALL, &zero, NULL);
  if (!c) return NULL;
  if (!zero) memset(c, 0, sizeof *c);
  c->magic = PZ_CHUNK_MAGIC;
  c->used_slices = 1;
  c->dirty_slices = zero ? 0 : ~0u;
  c->heap = h;
  c->prev = NULL;
  while (atomic_flag_test_and_set_explicit(&h->chunks_lock, memory_order_acquire)) {}
  c->next = h->chunks;
  if (h->chunks) h->chunks->prev = c;
  h->chunks = c;
  atomic_flag_clear_explicit(&h->chunks_lock, memory_order_release);
  return c;
}

static void chunk_release(pz_heap *h, pz_chunk *c) {
  while (atomic_flag_test_and_set_explicit(&h->chunks_lock, memory_order_acquire)) {}
  if (c->prev) c->prev->next = c->next;
  else h->chunks = c->next;
  if (c->next) c->next->prev = c->prev;
  atomic_flag_clear_explicit(&h->chunks_lock, memory_order_release);
  c->magic = 0;
  pz_chunk_free(c);
}

static inline uint32_t span_mask(unsigned start, unsigned n) {
  return (uint32_t)((((uint64_t)1 << n) - 1) << start);
}

static inline void heap_maybe_purge(pz_heap *h);

/* Mark slices [head + from, head + to) of c used by the span at `head`
 * (owner): a new span takes [1, n), a growing one [old, n). */
static void take_slices(pz_chunk *c, unsigned head, unsigned from, unsigned to) {
  uint32_t m = span_mask(head + from, to - from);
  c->used_slices |= m;
  c->purge_slices &= ~m; /* in use again: not to be given back */
  atomic_fetch_add_explicit(&pz_small_used_slices, to - from, memory_order_relaxed);
  for (unsigned k = from; k < to; k++) c->pages[head + k].head_back = (uint16_t)(k * sizeof(pz_page));
}

/* Find n free slices in one of h's chunks, or in a new chunk. */
static pz_page *span_alloc(pz_heap *h, unsigned n, bool want_zero) {
  pz_chunk *c;
  unsigned start = 0;
  heap_maybe_purge(h);
  for (c = h->chunks; c; c = c->next) {
    if (__builtin_popcount(~c->used_slices) < (int)n) continue;
    for (start = 1; start + n <= PZ_SLICES; start++)
      if (!(c->used_slices & span_mask(start, n))) goto found;
  }
  c = chunk_new(h, want_zero);
  if (!c) return NULL;
  start = 1;
found:
  take_slices(c, start, 0, n); /* the head's head_back: 0 */
  pz_page *pg = &c->pages[start];
  pg->nslices = (uint8_t)n;
  pg->span_zero = !(c->dirty_slices & span_mask(start, n));
  pg->start = (char *)c + ((size_t)start << PZ_SLICE_SHIFT);
  atomic_store_explicit(&pg->heap, h, memory_order_relaxed);
  return pg;
}


static void drain_delayed(pz_heap *h);

/* Purging: slices of retired pages go back to the kernel (MADV_DONTNEED)
 * PURGE_DELAY_NS after the first of them was freed, in chunks of 4 KiB
 * pages (in a huge page it would split it); so at most one purge per chunk
 * per delay. A span reused within the delay keeps its pages; a
 * purged one reads zero, so calloc skips the memset. Looked at on the slow
 * paths only (making and retiring pages), as mimalloc does with its purge
 * delay (10 ms): freed memory in a fragmented heap stops counting as RSS
 * (measured: cxx-containers peaked at 17 MiB against glibc's 10 without). */
#define PURGE_DELAY_NS 10000000u

static void heap_purge(pz_heap *h, uint64_t now) {
  uint64_t next = 0;
  for (pz_chunk *c = h->chunks; c; c = c->next) {
    uint32_t m = c->purge_slices & ~c->used_slices;
    c->purge_slices = m;
    if (!m) continue;
    if (c->purge_due_ns > now) {
      if (!next || c->purge_due_ns < next) next = c->purge_due_ns;
      continue;
    }
    while (m) { /* each run of free slices in one call */
      /* bit 0 is the header, never free: start >= 1 and ~(m >> start) has bit 31 set */
      unsigned start = (unsigned)__builtin_ctz(m), n = (unsigned)__builtin_ctz(~(m >> start));
      if (pz_os_discard((char *)c + ((size_t)start << PZ_SLICE_SHIFT), (size_t)n << PZ_SLICE_SHIFT) == 0)
        c->dirty_slices &= ~span_mask(start, n);
      m &= ~span_mask(start, n);
    }
    c->purge_slices = 0;
  }
  h->purge_due_ns = next;
}

static inline void heap_maybe_purge(pz_heap *h) {
  if (h->purge_due_ns) {
    uint64_t now = pz_os_now_ns();
    if (now >= h->purge_due_ns) heap_purge(h, now);
  }
}

/* Slices m of c were freed: give them back after the delay. The first
 * slice waiting sets the time, so a chunk retiring pages all the time is
 * still purged, at most once per delay. */
static void purge_later(pz_heap *h, pz_chunk *c, uint32_t m) {
  if (!c->purge_slices) c->purge_due_ns = pz_os_now_ns() + PURGE_DELAY_NS;
  c->purge_slices |= m;
  if (!h->purge_due_ns || c->purge_due_ns < h->purge_due_ns) h->purge_due_ns = c->purge_due_ns;
}

static bool other_empty_chunk(const pz_heap *h, const pz_chunk *c) {
  for (const pz_chunk *o = h->chunks; o; o = o->next)
    if (o != c && o->used_slices == 1) return true;
  return false;
}

/* Return the span of an empty page to its chunk; the chunk to the pool when
 * it holds nothing else (one empty chunk per heap is kept as a spare). */
static void page_retire(pz_heap *h, pz_page *pg) {
  pz_assert(pg->used == 0);
  if (atomic_load_explicit(&pg->delayed_pending, memory_order_acquire)) {
    drain_delayed(h); /* the page is on our delayed stack: take it off first */
    /* which may have retired it: a full page drained there goes back to its
     * class queue, and page_unfull retires an empty front page (this one) */
    if (!pg->nslices) return;
  }
  queue_remove(h, pg);
  pz_chunk *c = pz_chunk_of(pg->start);
  unsigned start = (unsigned)((pg->start - (char *)c) >> PZ_SLICE_SHIFT), n = pg->nslices;
  uint32_t m = span_mask(start, n);
  c->used_slices &= ~m;
  atomic_fetch_sub_explicit(&pz_small_used_slices, n, memory_order_relaxed);
  c->dirty_slices |= m;
  for (unsigned k = 0; k < n; k++) c->pages[start + k].head_back = 0;
  memset(pg, 0, sizeof *pg);
  if (c->used_slices == 1 && other_empty_chunk(h, c)) chunk_release(h, c);
  else if (pz_chunk_small_pages(c)) purge_later(h, c, m);
  heap_maybe_purge(h);
}

/* ------------------------------------------------------------ pages */

static pz_page *page_make(pz_heap *h, unsigned cls, bool want_zero) {
  pz_page *pg = span_alloc(h, pz_class_slices(cls), want_zero);
  if (!pg) return NULL;
  uint32_t bs = pz_class_size[cls];
  pg->cls = (uint8_t)cls;
  pz_page_set_block_size(pg, bs);
  pg->reserved = (uint32_t)(((size_t)pg->nslices << PZ_SLICE_SHIFT) / bs);
  pg->capacity = pg->used = 0;
  pg->free = pg->local_free = NULL;
  pg->free_is_zero = 0;
  pg->in_full = 0;
  atomic_store_explicit(&pg->xfree, 0, memory_order_relaxed);
  queue_push(h, pg);
  return pg;
}

/* Thread a few KiB of never-used blocks onto the (empty) free list. */
static void page_extend(pz_page *pg) {
  uint32_t bs = pg->block_size, n = pg->reserved - pg->capacity;
  uint32_t step = bs >= 4096 ? 1 : 4096 / bs;
  if (n > step) n = step;
  if (!n) return;
  char *first = pg->start + (size_t)pg->capacity * bs;
  char *b = first;
  for (uint32_t i = 1; i < n; i++, b += bs) {
    if (PZ_DEBUG && !pg->span_zero) pz_debug_poison(b, bs); /* as if freed: checked when handed out */
    ((pz_block *)b)->link = pz_link_encode((pz_block *)b, (pz_block *)(b + bs));
  }
  if (PZ_DEBUG && !pg->span_zero) pz_debug_poison(b, bs);
  ((pz_block *)b)->link = pz_link_encode((pz_block *)b, NULL);
  pg->free = (pz_block *)first;
  pg->free_is_zero = pg->span_zero;
  pg->capacity += n;
}

/* Take the remotely freed blocks, leaving the flags (a FREEING notice in
 * flight must stay visible). Returns the old word; 0 blocks if none. */
static uintptr_t xfree_take(pz_page *pg) {
  uintptr_t x = atomic_load_explicit(&pg->xfree, memory_order_relaxed);
  while (PZ_XF_PTR(x) && !atomic_compare_exchange_weak_explicit(&pg->xfree, &x, x & PZ_XF_FLAGS,
                                                                 memory_order_acquire, memory_order_relaxed)) {
  }
  return x;
}

/* Gather blocks freed locally and remotely into `free` (which is empty). */
static void page_collect(pz_page *pg) {
  if (pg->local_free) {
    pg->free = pg->local_free;
    pg->local_free = NULL;
    pg->free_is_zero = 0;
    return;
  }
  uintptr_t x = xfree_take(pg);
  if (PZ_XF_PTR(x)) {
    uint32_t n = PZ_XF_COUNT(x);
    pz_assert(n <= pg->used);
    pg->used -= n;
    pg->free = PZ_XF_PTR(x);
    pg->free_is_zero = 0;
  }
}

/* Move a page whose blocks are all out to the full list, asking remote
 * freers for a notice. False when a remote free raced in or is landing
 * (the page is not full). */
static bool page_to_full(pz_heap *h, pz_page *pg) {
  uintptr_t expect = atomic_load_explicit(&pg->xfree, memory_order_relaxed);
  if (expect & ~PZ_XF_DELAYED) return false; /* blocks, or FREEING: never arm over them */
  if (!atomic_compare_exchange_strong_explicit(&pg->xfree, &expect, PZ_XF_DELAYED,
                                               memory_order_acq_rel, memory_order_relaxed))
    return false;
  queue_remove(h, pg);
  pg->in_full = 1;
  queue_push(h, pg);
  return true;
}

/* A full page got blocks back: into its class queue again. A page of many
 * blocks that got one back from its owner (`second`) goes to the back of
 * the queue: it is used after every other page of the class, by which time
 * many more of its blocks have come back. Right after the front (as before)
 * a heap whose blocks are freed at random served one or two blocks a page:
 * half the mallocs of randrep (16 MiB live) took the slow path and moved a
 * page between the queues; at the back, one in eleven (measured, randrep
 * 4 MiB 0.38 -> 0.24 s, 16 MiB 0.54 -> 0.37 s, larson-lk 0.71 -> 0.47 s,
 * the rest within noise; at the front each such free cost the next malloc
 * a slow path: larson 0.41 -> 0.35 s then). Others go to the front: blocks freed by other threads come in batches,
 * and a page of a few big blocks gains much from one; using them first
 * keeps a fresh page from being extended meanwhile (measured: peak RSS
 * otherwise 1.7 MiB higher in xmalloc, 1-2 MiB in mstress). */
static void page_unfull(pz_heap *h, pz_page *pg, bool second) {
  if (pg->cls == PZ_NCLASSES) { /* a medium block, freed remotely: retire it */
    for (;;) {
      page_collect(pg);
      if (pg->used == 0) {
        page_retire(h, pg);
        return;
      }
      /* the notice came before the block: wait for it to land, or re-arm */
      uintptr_t x = atomic_load_explicit(&pg->xfree, memory_order_acquire);
      if (x & PZ_XF_FREEING) continue;
      if (PZ_XF_PTR(x)) continue;
      if (atomic_compare_exchange_strong_explicit(&pg->xfree, &x, PZ_XF_DELAYED,
                                                  memory_order_acq_rel, memory_order_relaxed))
        return;
    }
  }
  queue_remove(h, pg);
  pg->in_full = 0;
  /* a front page kept although empty (the alloc/free ping-pong) that is
   * pushed back now would never be retired: no free comes to it again
   * (measured: 12000 blocks of 64 KiB freed kept 750 MiB resident) */
  pz_page *front = h->pages[pg->cls];
  if (!second && front != pg && front->used == 0 && front->nslices && !front->in_full) page_retire(h, front);
  if (second) queue_push_back(h, pg);
  else queue_push(h, pg);
}

static void drain_delayed(pz_heap *h) {
  pz_page *d = atomic_exchange_explicit(&h->delayed, NULL, memory_order_acquire);
  while (d) {
    pz_page *next = d->delayed_next;
    atomic_store_explicit(&d->delayed_pending, 0, memory_order_release);
    if (d->in_full) page_unfull(h, d, false);
    d = next;
  }
}

static inline void *page_pop(pz_heap *h, pz_page *pg, bool zero) {
  pz_block *b = pg->free;
  pz_assert(pg->used < pg->capacity && pg->capacity <= pg->reserved);
  if (PZ_DEBUG && !pg->free_is_zero) pz_debug_check_poison(b, pg->block_size);
  pg->free = pz_link_next(pg, b);
  pg->used++;
  h->stats.malloc_calls++;
  return pz_block_hand_out(h, b, pg->block_size, zero, pg->free_is_zero);
}

static void *alloc_class(pz_heap *h, unsigned cls, bool zero) {
  if (atomic_load_explicit(&h->delayed, memory_order_relaxed)) drain_delayed(h);
  pz_page *pg = h->pages[cls];
  while (pg != &empty_page) {
    pz_page *next = pg->next ? pg->next : &empty_page;
    if (!pg->free) page_collect(pg);
    if (!pg->free) page_extend(pg);
    if (pg->free) {
      if (h->pages[cls] != pg) { /* to the front, where the fast path looks */
        queue_remove(h, pg);
        queue_push(h, pg);
      }
      return page_pop(h, pg, zero);
    }
    if (!page_to_full(h, pg)) {
      uintptr_t x = atomic_load_explicit(&pg->xfree, memory_order_relaxed);
      if (PZ_XF_PTR(x)) continue; /* a remote free arrived: collect it */
      /* one is landing (FREEING): leave the page in the queue, look further */
    }
    pg = next;
  }
  pg = page_make(h, cls, zero);
  if (!pg) return NULL;
  page_extend(pg);
  return page_pop(h, pg, zero);
}

/* One block filling a span of slices, for sizes above the largest class. */
static void *alloc_medium(pz_heap *h, size_t size, bool zero) {
  unsigned n = (unsigned)((size + PZ_SLICE_SIZE - 1) >> PZ_SLICE_SHIFT);
  if (atomic_load_explicit(&h->delayed, memory_order_relaxed)) drain_delayed(h);
  pz_page *pg = span_alloc(h, n, zero);
  if (!pg) return NULL;
  pg->cls = PZ_NCLASSES;
  pz_page_set_block_size(pg, (uint32_t)n << PZ_SLICE_SHIFT);
  pg->reserved = pg->capacity = pg->used = 1;
  pg->free = pg->local_free = NULL;
  pg->in_full = 1;
  atomic_store_explicit(&pg->xfree, PZ_XF_DELAYED, memory_order_relaxed);
  queue_push(h, pg);
  h->stats.malloc_calls++;
  if (!pg->span_zero) ((pz_block *)pg->start)->key = 0; /* stale memory must not look freed */
  if (zero) {
    h->stats.calloc_calls++;
    if (pg->span_zero) h->stats.calloc_skipped_bytes += pg->block_size;
    else {
      memset(pg->start, 0, pg->block_size);
      h->stats.calloc_zeroed_bytes += pg->block_size;
    }
  }
  return pg->start;
}

void *pz_small_alloc_slow(pz_heap *h, size_t size, bool zero) {
  if (PZ_UNLIKELY(h == &pz_heap_empty)) {
    h = pz_heap_get();
    if (!h) return pz_oom();
  }
  void *p = size > PZ_SMALL_MAX ? alloc_medium(h, size, zero) : alloc_class(h, pz_size_class(size), zero);
  return PZ_LIKELY(p != NULL) ? p : pz_oom(); /* the fast paths return our answer as it is */
}

void *pz_small_alloc_aligned(size_t size, size_t align, bool zero) {
  pz_heap *h = pz_heap_get();
  if (!h) return NULL;
  if (size > PZ_SMALL_MAX) return alloc_medium(h, size, zero); /* spans: 64 KiB aligned */
  for (unsigned cls = pz_size_class(size); cls < PZ_NCLASSES; cls++)
    if (pz_class_size[cls] % align == 0) return alloc_class(h, cls, zero);
  return alloc_medium(h, size, zero);
}

/* Grow a medium block in place over the free slices after it, when the
 * calling thread owns it: realloc without a copy, and without leaving a
 * hole the next growth step cannot use (measured: realloc-growth's 96
 * builders peaked at ~136 MiB growing by copies, against glibc's ~101). */
bool pz_small_grow_medium(pz_page *pg, size_t size) {
  pz_heap *h = pz_tls_heap;
  if (pg->cls != PZ_NCLASSES || atomic_load_explicit(&pg->heap, memory_order_relaxed) != h)
    return false; /* (pz_heap_empty owns no page) */
  pz_chunk *c = pz_chunk_of(pg->start);
  unsigned start = (unsigned)((pg->start - (char *)c) >> PZ_SLICE_SHIFT), old = pg->nslices;
  unsigned n = (unsigned)((size + PZ_SLICE_SIZE - 1) >> PZ_SLICE_SHIFT);
  if (n <= old || start + n > PZ_SLICES) return false;
  if (c->used_slices & span_mask(start + old, n - old)) return false;
  take_slices(c, start, old, n);
  pg->nslices = (uint8_t)n;
  pz_page_set_block_size(pg, n << PZ_SLICE_SHIFT);
  return true;
}

/* ------------------------------------------------------------ free */

void pz_small_bad_link(const pz_page *pg, const pz_block *b) {
  pz_fatal("corrupted free list: block %p (size %u): its link was overwritten while it was free "
           "(use after free, or an overflow from the block before)", (const void *)b, pg->block_size);
}

bool pz_small_is_free(pz_heap *h, pz_page *pg, pz_block *b) {
  /* in some heap's xc (not looked up: those are other threads' arrays) */
  if (b->key == pz_xc_key) return true;
  if (atomic_load_explicit(&pg->heap, memory_order_relaxed) == h) {
    for (pz_block *x = pg->free; x; x = pz_link_next(pg, x))
      if (x == b) return true;
    for (pz_block *x = pg->local_free; x; x = pz_link_next(pg, x))
      if (x == b) return true;
    uintptr_t xf = atomic_load_explicit(&pg->xfree, memory_order_acquire);
    for (pz_block *x = PZ_XF_PTR(xf); x; x = pz_link_next(pg, x))
      if (x == b) return true;
    return false; /* the program stored our key: not a free block */
  }
  return true; /* another heap's page: its lists are not ours to walk; the key is random */
}

void pz_small_confirm_double_free(pz_heap *h, pz_page *pg, pz_block *b) {
  if (pz_small_is_free(h, pg, b)) pz_bad_pointer("free", "double free", b);
}

void pz_small_free_suspect(pz_heap *h, pz_page *pg, pz_block *b) {
  pz_small_confirm_double_free(h, pg, b); /* the program stored the key's value there: a block in use */
  pz_small_free_block(h, pg, b);
}

/* One attempt to push b onto pg's remote-free stack (counted), expecting
 * *old; keeps the flags but FREEING, which the notifying freer clears by
 * landing its block. On failure *old holds the current word. */
static bool xfree_push(pz_page *pg, pz_block *b, uintptr_t *old) {
  b->link = pz_link_encode(b, PZ_XF_PTR(*old));
  uintptr_t next = ((uintptr_t)(PZ_XF_COUNT(*old) + 1) << PZ_XF_COUNT_SHIFT) | (uintptr_t)b |
                   (*old & PZ_XF_FLAGS & ~PZ_XF_FREEING);
  return atomic_compare_exchange_weak_explicit(&pg->xfree, old, next, memory_order_release,
                                               memory_order_relaxed);
}

/* Notices being delivered (FREEING up, block not landed yet). fork waits
 * for none to be in flight: a child must not inherit a FREEING bit whose
 * freer it does not have (every later free into that page would wait for
 * it for ever). Both counters are touched only on the notice path: once
 * per full page that gets a remote free. */
static _Atomic unsigned notices_in_flight;
static _Atomic bool forking;

static PZ_NOINLINE void free_remote(pz_page *pg, pz_block *b) {
  uintptr_t old = atomic_load_explicit(&pg->xfree, memory_order_relaxed);
  for (;;) {
    if (old & PZ_XF_FREEING) { /* another freer is delivering a notice: its block lands next */
      __builtin_ia32_pause();
      old = atomic_load_explicit(&pg->xfree, memory_order_relaxed);
      continue;
    }
    if (!(old & PZ_XF_DELAYED)) {
      if (xfree_push(pg, b, &old)) break;
      continue; /* the word changed (DELAYED may be up now): look again */
    }
    /* the owner wants a notice: take it (exclusively), deliver it, then land
     * the block, which clears FREEING (nobody sets DELAYED while it is up) */
    atomic_fetch_add(&notices_in_flight, 1); /* seq_cst: pairs with pz_heaps_prefork */
    if (atomic_load(&forking)) {
      atomic_fetch_sub(&notices_in_flight, 1);
      while (atomic_load(&forking)) sched_yield();
      old = atomic_load_explicit(&pg->xfree, memory_order_relaxed);
      continue;
    }
    if (!atomic_compare_exchange_weak_explicit(&pg->xfree, &old, (old & ~PZ_XF_DELAYED) | PZ_XF_FREEING,
                                               memory_order_acq_rel, memory_order_relaxed)) {
      atomic_fetch_sub(&notices_in_flight, 1);
      continue;
    }
    if (PZ_UNLIKELY(pz_test_hook != NULL)) pz_test_hook(PZ_HOOK_NOTICE_TAKEN);
    pz_heap *owner = atomic_load_explicit(&pg->heap, memory_order_acquire);
    atomic_store_explicit(&pg->delayed_pending, 1, memory_order_release);
    pz_page *top = atomic_load_explicit(&owner->delayed, memory_order_relaxed);
    do pg->delayed_next = top;
    while (!atomic_compare_exchange_weak_explicit(&owner->delayed, &top, pg, memory_order_release,
                                                  memory_order_relaxed));
    old = atomic_load_explicit(&pg->xfree, memory_order_relaxed);
    while (!xfree_push(pg, b, &old)) {
    }
    atomic_fetch_sub_explicit(&notices_in_flight, 1, memory_order_release);
    break;
  }
}

/* b goes to its page's remote-free stack, marked free. */
static void free_home(pz_page *pg, pz_block *b) {
  b->key = pz_free_key;
  free_remote(pg, b);
}
static void xc_send_home(pz_block *x) { free_home(pz_small_page_of(pz_chunk_of(x), x), x); }

static void xc_flush(pz_heap *h);

/* Keep b (whose page another heap owns) in h's xc; when the class is full,
 * its older half goes home first, and when the heap keeps PZ_XC_TOTAL
 * blocks, all of them do. */
static void xc_push(pz_heap *h, unsigned cls, pz_block *b) {
  unsigned n = h->xc_n[cls];
  pz_block **xc = h->xc[cls];
  if (n == xc_limit[cls]) {
    unsigned k = (n + 1) / 2;
    for (unsigned i = 0; i < k; i++) xc_send_home(xc[i]);
    memmove(xc, xc + k, (n - k) * sizeof *xc);
    n -= k;
    h->xc_total -= k;
  } else if (h->xc_total == PZ_XC_TOTAL) {
    xc_flush(h);
    n = 0;
  }
  b->key = pz_xc_key;
  xc[n] = b;
  h->xc_n[cls] = (uint8_t)(n + 1);
  h->xc_total++;
}

void *pz_small_alloc_xc(pz_heap *h, unsigned cls, bool zero) {
  pz_block *b = h->xc[cls][--h->xc_n[cls]];
  h->xc_total--;
  h->xc_lent[pz_xc_hash(b)] = (uintptr_t)b;
  h->stats.malloc_calls++;
  if (PZ_DEBUG) pz_debug_check_poison(b, pz_class_size[cls]);
  return pz_block_hand_out(h, b, pz_class_size[cls], zero, false);
}

/* Every block in h's xc goes home. */
static void xc_flush(pz_heap *h) {
  for (unsigned cls = 0; cls < PZ_XC_CLASSES; cls++) {
    for (unsigned i = 0; i < h->xc_n[cls]; i++) xc_send_home(h->xc[cls][i]);
    h->xc_n[cls] = 0;
  }
  h->xc_total = 0;
}

void pz_small_free_invalid(const void *p) {
  pz_bad_pointer("free", "invalid pointer (not the start of a block in use)", p);
}

/* b, a block of h's own page pg, goes to the page's local_free; the page
 * leaves the full list, or retires when it has no block out (but the front
 * page of a class queue stays: alloc/free ping-pong stays cheap). */
static void free_local(pz_heap *h, pz_page *pg, pz_block *b) {
  b->key = pz_free_key;
  b->link = pz_link_encode(b, pg->local_free);
  pg->local_free = b;
  if (--pg->used == 0) {
    if (pg->in_full || h->pages[pg->cls] != pg) page_retire(h, pg);
  } else if (pg->in_full) {
    page_unfull(h, pg, pg->reserved >= 64);
  }
}

/* The oldest n blocks of tc[cls] go to their pages. */
static void tc_drain(pz_heap *h, unsigned cls, size_t n) {
  pz_block **base = h->tc_base[cls], **top = h->tc_top[cls];
  h->stats.free_calls += n;
  for (size_t i = 0; i < n; i++) free_local(h, pz_small_page_of(pz_chunk_of(base[i]), base[i]), base[i]);
  memmove(base, base + n, (size_t)(top - base - (ptrdiff_t)n) * sizeof *base);
  h->tc_top[cls] = top - n;
}

static void tc_flush(pz_heap *h) {
  for (unsigned cls = 0; cls < PZ_XC_CLASSES; cls++) tc_drain(h, cls, (size_t)(h->tc_top[cls] - h->tc_base[cls]));
}

void pz_heap_flush_tc(void) {
  if (pz_tls_heap != &pz_heap_empty) tc_flush(pz_tls_heap);
}

void pz_small_free_slow(pz_heap *h, pz_page *pg, pz_block *b, int why) {
  if (why == PZ_FREE_LOCAL) { /* the class's tc is full, or it has none */
    unsigned cls = pg->cls;
    if (h->tc_end[cls] == h->tc_base[cls]) {
      h->stats.free_calls++;
      free_local(h, pg, b);
      return;
    }
    size_t n = (size_t)(h->tc_top[cls] - h->tc_base[cls]);
    tc_drain(h, cls, (n + 1) / 2);
    b->key = pz_xc_key;
    *h->tc_top[cls]++ = b;
    return;
  }
  if (h == &pz_heap_empty) { /* a thread that never allocated has no xc, nor counters */
    atomic_fetch_add_explicit(&pz_gstats.heapless_frees, 1, memory_order_relaxed);
  } else {
    h->stats.remote_frees++;
    unsigned hb = pz_xc_hash(b);
    if (h->xc_lent[hb] == (uintptr_t)b) { /* it came from xc: once is enough, it goes home */
      h->xc_lent[hb] = 0;
    } else if (pg->cls < PZ_XC_CLASSES) {
      xc_push(h, pg->cls, b);
      return;
    }
  }
  free_home(pg, b);
}

size_t pz_small_usable(const void *p, const pz_chunk *c) {
  const pz_page *pg = pz_small_page_of(c, p);
  return pg ? pg->block_size : 0;
}

/* ------------------------------------------------------------ heaps */

int pz_small_init(void) {
  pz_free_key = ((uintptr_t)pz_os_random() | 1) & ~(uintptr_t)2; /* odd: never a valid pointer */
  pz_xc_key = pz_free_key | 2;
  for (unsigned cls = 0; cls < PZ_XC_CLASSES; cls++) {
    size_t n = PZ_XC_BYTES / pz_class_size[cls];
    xc_limit[cls] = (uint8_t)(n > PZ_XC_MAX ? PZ_XC_MAX : n);
  }
  pz_link_key = (uintptr_t)pz_os_random();     /* kept across fork: the lists are inherited */
  return pthread_key_create(&heap_key, pz_heap_thread_exit);
}

pz_heap *pz_heap_get(void) {
  pz_heap *h = pz_tls_heap;
  if (PZ_LIKELY(h != &pz_heap_empty)) return h;
  pz_ensure_init();
  pthread_mutex_lock(&heaps_lock);
  h = heaps_abandoned;
  if (h) {
    heaps_abandoned = h->next_abandoned;
  } else {
    h = pz_meta_alloc(sizeof *h);
    if (h) {
      for (unsigned i = 0; i < PZ_NCLASSES; i++) h->pages[i] = &empty_page;
      for (unsigned i = 0; i <= 64; i++) h->tc16[i] = &h->tc_top[pz_class_of16[i]];
      for (unsigned i = 0; i < PZ_XC_CLASSES; i++) {
        size_t n = PZ_TC_BYTES / pz_class_size[i];
        h->tc_top[i] = h->tc_base[i] = h->tc[i];
        h->tc_end[i] = h->tc[i] + (n > PZ_TC_MAX ? PZ_TC_MAX : n);
      }
      h->next_all = heaps_all;
      heaps_all = h;
      heaps_made++;
    }
  }
  if (h) {
    h->in_use = true;
  }
  pthread_mutex_unlock(&heaps_lock);
  if (!h) return NULL;
  pz_tls_heap = h;
  pthread_setspecific(heap_key, h);
  return h;
}

/* Retire every page with no block out; return empty chunks to the pool. */
static void heap_collect(pz_heap *h) {
  tc_flush(h);
  xc_flush(h);
  drain_delayed(h);
  if (PZ_UNLIKELY(pz_test_hook != NULL)) pz_test_hook(PZ_HOOK_HEAP_COLLECT);
  for (unsigned cls = 0; cls < PZ_NCLASSES; cls++) {
    pz_page *pg = h->pages[cls];
    while (pg != &empty_page) {
      pz_page *next = pg->next ? pg->next : &empty_page;
      if (pg->local_free || PZ_XF_PTR(atomic_load_explicit(&pg->xfree, memory_order_relaxed))) {
        /* merge both lists into local_free, counting remote blocks */
        uintptr_t x = xfree_take(pg);
        for (pz_block *b = PZ_XF_PTR(x); b;) {
          pz_block *nb = pz_link_next(pg, b);
          b->link = pz_link_encode(b, pg->local_free);
          pg->local_free = b;
          pg->used--;
          b = nb;
        }
      }
      if (pg->used == 0) page_retire(h, pg);
      pg = next;
    }
  }
  for (pz_chunk *c = h->chunks, *next; c; c = next) {
    next = c->next;
    if (c->used_slices == 1) chunk_release(h, c);
  }
  heap_purge(h, UINT64_MAX); /* what is free now goes back without waiting */
}

void pz_heap_thread_exit(void *arg) {
  /* from here the thread exits: glibc frees TLS under its stack-cache lock */
  pz_tls_no_spawn = true;
  pz_heap *h = arg;
  if (!h || h == &pz_heap_empty) return;
  heap_collect(h);
  pz_tls_heap = &pz_heap_empty;
  pthread_mutex_lock(&heaps_lock);
  h->in_use = false;
  h->next_abandoned = heaps_abandoned;
  heaps_abandoned = h;
  pthread_mutex_unlock(&heaps_lock);
}

void pz_heaps_collect_all(void) {
  pz_heap *self = pz_tls_heap;
  if (self != &pz_heap_empty) heap_collect(self);
  /* abandoned heaps: take them all off the list, act as their owner, put back */
  pthread_mutex_lock(&heaps_lock);
  pz_heap *list = heaps_abandoned;
  heaps_abandoned = NULL;
  pthread_mutex_unlock(&heaps_lock);
  pz_heap *last = NULL;
  for (pz_heap *h = list; h; h = h->next_abandoned) {
    heap_collect(h);
    last = h;
  }
  if (!last) return;
  pthread_mutex_lock(&heaps_lock);
  last->next_abandoned = heaps_abandoned;
  heaps_abandoned = list;
  pthread_mutex_unlock(&heaps_lock);
}

bool pz_heaps_stats(struct pz_heap_stats *sum, size_t *used_bytes, size_t *page_bytes,
                    size_t *nheaps, bool wait) {
  memset(sum, 0, sizeof *sum);
  *used_bytes = *page_bytes = 0;
  if (wait) pthread_mutex_lock(&heaps_lock);
  else if (pthread_mutex_trylock(&heaps_lock) != 0) return false;
  *nheaps = heaps_made;
  for (pz_heap *h = heaps_all; h; h = h->next_all) {
    /* counters are per-thread and read racily: a snapshot, not a fence */
    const size_t *src = (const size_t *)&h->stats;
    size_t *dst = (size_t *)sum;
    for (size_t i = 0; i < sizeof *sum / sizeof(size_t); i++)
      dst[i] += __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    size_t tc_bytes = 0; /* blocks in tc: freed, though used in their pages */
    for (unsigned cls = 0; cls < PZ_XC_CLASSES; cls++) {
      ptrdiff_t n = __atomic_load_n(&h->tc_top[cls], __ATOMIC_RELAXED) - h->tc_base[cls];
      if (n <= 0 || n > PZ_TC_MAX) continue;
      sum->free_calls += (size_t)n;
      tc_bytes += (size_t)n * pz_class_size[cls];
    }
    /* the owner may be releasing a chunk: take its list lock, or skip this
     * heap (a heap orphaned by fork may hold it forever) */
    int tries = 0;
    while (atomic_flag_test_and_set_explicit(&h->chunks_lock, memory_order_acquire))
      if (++tries > 1000) break;
    if (tries > 1000) continue;
    for (pz_chunk *c = h->chunks; c; c = c->next)
      for (unsigned s = 1; s < PZ_SLICES; s++) {
        const pz_page *pg = &c->pages[s];
        if (!pg->nslices) continue;
        *page_bytes += (size_t)pg->nslices << PZ_SLICE_SHIFT;
        *used_bytes += (size_t)__atomic_load_n(&pg->used, __ATOMIC_RELAXED) * pg->block_size;
      }
    *used_bytes -= tc_bytes < *used_bytes ? tc_bytes : *used_bytes;
    atomic_flag_clear_explicit(&h->chunks_lock, memory_order_release);
  }
  pthread_mutex_unlock(&heaps_lock);
  sum->malloc_calls += sum->tc_reused;
  sum->free_calls += sum->tc_reused;
  return true;
}

void pz_heaps_prefork(void) {
  pthread_mutex_lock(&heaps_lock);
  atomic_store(&forking, true); /* no new notice from here; the ones under way land */
  while (atomic_load(&notices_in_flight)) sched_yield();
}

void pz_heaps_postfork(bool child) {
  /* the parent keeps its count: a freer that backed off may not have
   * taken itself off it yet; the child has none of them */
  if (child) atomic_store(&notices_in_flight, 0);
  atomic_store(&forking, false);
  if (!child) {
    pthread_mutex_unlock(&heaps_lock);
    return;
  }
  pthread_mutex_init(&heaps_lock, NULL);
  /* The threads that owned other heaps do not exist in the child, and may
   * have been stopped half-way through changing them: those heaps are left
   * alone (in use, never adopted; their memory stays mapped, frees into them
   * still work) rather than handed to a new thread. */
}
