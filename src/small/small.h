/* The small layer: size classes, per-thread heaps, pages carved from pool
 * chunks (objects up to PZ_SMALL_MAX, single-block medium spans up to the
 * large threshold); the fast paths are inline here. Includes only
 * pool/pool.h. */
#ifndef PZ_SMALL_H
#define PZ_SMALL_H

#include "pool/pool.h"

/* ==================================================================== small/
 * Blocks are linked through their first word, stored encoded (pz_link_*
 * below); the second word holds a per-process key while the block is free
 * (pz_free_key, or pz_xc_key in a heap's xc), which makes double frees
 * cheap to detect (a freshly handed-out block has it cleared). */
typedef struct pz_block { uintptr_t link; uintptr_t key; } pz_block;

struct pz_heap;
/* A page descriptor's size: a power of two, so that free finds the
 * descriptor of a slice with a shift (three cache lines are used). */
#define PZ_PAGE_DESC 256
/* A page: a span of slices holding blocks of one size. Lives in the chunk
 * header. Fields marked (owner) are touched only by the owning heap's
 * thread; xfree is the one field other threads write. */
typedef struct pz_page {
  /* cache line 0: read-mostly (set when the page is made), read by every
   * free, local or remote, to find and check the block */
  uint32_t block_size;
  uint32_t capacity;     /* (owner) blocks initialised so far (lazy) */
  uint64_t div_inv;      /* block_size = odd << div_shift: the odd part's inverse mod 2^64 */
  char *start;
  _Atomic(struct pz_heap *) heap;
  uint32_t reserved;     /* blocks that fit in the span */
  uint8_t cls;           /* size class, or PZ_NCLASSES for a medium span */
  uint8_t nslices;       /* span length; 0 = slice is free */
  uint8_t span_zero;     /* span was zero when the page was made */
  uint8_t div_shift;     /* trailing zero bits of block_size */
  uint16_t head_back;    /* in a non-head slice: bytes back to the head's descriptor */
  /* cache line 1: written by the owner on every malloc and free, read by
   * no other thread (no false sharing with remote frees) */
  pz_block *free __attribute__((aligned(64))); /* (owner) blocks to hand out */
  pz_block *local_free;  /* (owner) blocks freed by the owner */
  uint32_t used;         /* (owner) blocks handed out, incl. pending xfree */
  uint8_t free_is_zero;  /* (owner) blocks in `free` read zero past word 0 */
  uint8_t in_full;       /* (owner) on the heap's full list */
  struct pz_page *next, *prev;   /* (owner) in a class queue or full list */
  /* cache line 2: written by other threads */
  /* remote frees: [count:16][list head:44, 16-aligned][flags:4]. The count
   * lets the owner collect without walking a list of blocks other cores
   * touched last (a page holds at most 4096 blocks). Flags: DELAYED (the
   * owner wants a notice with the next remote free), FREEING (a freer took
   * the notice and is delivering it; its block lands right after). */
  _Atomic(uintptr_t) xfree __attribute__((aligned(64)));
  _Atomic(uint8_t) delayed_pending; /* on its heap's delayed stack */
  struct pz_page *delayed_next;     /* on heap->delayed */
} __attribute__((aligned(PZ_PAGE_DESC))) pz_page;
#define PZ_XF_DELAYED ((uintptr_t)1)
#define PZ_XF_FREEING ((uintptr_t)2)
#define PZ_XF_FLAGS ((uintptr_t)15)
#define PZ_XF_COUNT_SHIFT 48
#define PZ_XF_PTR(x) ((pz_block *)((x) & ((((uintptr_t)1) << PZ_XF_COUNT_SHIFT) - 16)))
#define PZ_XF_COUNT(x) ((uint32_t)((x) >> PZ_XF_COUNT_SHIFT))

typedef struct pz_chunk {
  uint32_t magic;
  uint32_t used_slices;  /* (owner) bitmap; bit 0 = header */
  uint32_t dirty_slices; /* (owner) slices written since the chunk was zero */
  uint32_t npages;
  uint32_t purge_slices; /* (owner) free dirty slices to give back at purge_due_ns */
  uint64_t purge_due_ns;
  struct pz_heap *heap;
  struct pz_chunk *next, *prev; /* (owner) heap's chunk list */
  pz_page pages[PZ_SLICES];
} pz_chunk;
#define PZ_CHUNK_MAGIC 0x707a6368u
_Static_assert(sizeof(pz_chunk) <= PZ_SLICE_SIZE, "the chunk header must fit in slice 0");

/* Per-heap counters; pz_heaps_stats gives totals. Per heap, the fast
 * paths count only tc_reused (mallocs from tc): malloc_calls counts the
 * other mallocs, free_calls the owner's frees that reached a page (at
 * once, or later from tc); frees into tc are the blocks that left it
 * (tc_reused, free_calls) plus the ones still there. */
struct pz_heap_stats {
  size_t malloc_calls, free_calls, calloc_calls, realloc_calls;
  size_t calloc_skipped_bytes, calloc_zeroed_bytes;
  size_t remote_frees, tc_reused;
};

/* xc: blocks this thread freed whose pages other heaps own, kept in a
 * per-class stack (an array: nothing is written into the blocks but the
 * key) and handed out again by this thread's next malloc of the class,
 * while their lines are still in this core's cache; neither side does an
 * atomic operation (measured: mstress, where most frees are remote, 0.62 ->
 * 0.49 s). They still count as used in their pages, so a thread that goes
 * idle pins their pages until it exits: a heap keeps at most PZ_XC_TOTAL
 * blocks, a class at most PZ_XC_BYTES (and PZ_XC_MAX blocks); when a class
 * is full its older half goes home, when the heap is, all of xc.
 * A block is reused from xc once: malloc notes it in xc_lent (hashed, may
 * forget), and its next free by this thread sends it home. Otherwise
 * blocks a thread inherited would circulate there for ever, interleaved
 * with the owner's blocks in the owner's pages (measured: larson, whose
 * threads hand their blocks to a successor, 10-50% slower that way). */
#define PZ_XC_CLASSES 32 /* classes up to 8 KiB */
#define PZ_XC_MAX 32
#define PZ_XC_BYTES 8192
#define PZ_XC_TOTAL 64 /* blocks in all classes: what an idle thread pins */
#define PZ_XC_LENT_BITS 8
#define PZ_TC_MAX 128
#define PZ_TC_BYTES 16384
static inline unsigned pz_xc_hash(const void *b) {
  return (unsigned)(((uintptr_t)b >> 4) * 0x9e3779b97f4a7c15u >> (64 - PZ_XC_LENT_BITS));
}

/* tc: the thread cache, a per-class stack of blocks of this heap's own
 * pages that the thread freed, handed out again by its next malloc of the
 * class (last freed, first out). Under a heap larger than the caches, the
 * block just freed is still in this core's cache where the page free list's
 * next block is not (measured: random replacement over 4 MiB, 0.9 cache
 * misses per malloc that way). An array, not a list through the blocks: a
 * pop reads nothing the program can overwrite, so it needs no link check.
 * Blocks in tc carry pz_xc_key and count as used in their pages. A class
 * keeps at most PZ_TC_BYTES (PZ_TC_MAX blocks; 16 KiB against 8 measured
 * 3-4% faster at 4 and 16 MiB); when it is full, its older half goes to
 * the pages. Classes from PZ_XC_CLASSES up (and medium spans,
 * class PZ_NCLASSES) have none: top = base = end (NULL in pz_heap_empty,
 * so that both paths fall through). */
typedef struct pz_heap {
  pz_block **tc_top[PZ_NCLASSES + 1];  /* next free slot of tc[cls] */
  pz_block **tc_base[PZ_NCLASSES + 1]; /* tc[cls]: empty at top == base */
  pz_block **tc_end[PZ_NCLASSES + 1];  /* full at top == end */
  /* &tc_top[class of sizes up to 16 * i] for i <= 64: malloc's one load
   * from a size to its tc (the class table and an address computation
   * cost three instructions more) */
  pz_block ***tc16[65];
  pz_page *pages[PZ_NCLASSES];   /* head of each class queue (never NULL) */
  pz_page *tails[PZ_NCLASSES];   /* last page of each class queue (NULL when empty) */
  uint8_t xc_n[PZ_NCLASSES];     /* blocks in xc[cls] (0 from PZ_XC_CLASSES up) */
  pz_page *full;                 /* pages with no free block, or medium */
  _Atomic(pz_page *) delayed;    /* full pages that got a remote free */
  pz_chunk *chunks;              /* chunks owned; list changes under chunks_lock */
  atomic_flag chunks_lock;       /* owner: adding/releasing a chunk; stats: walking */
  bool in_use;
  uint64_t purge_due_ns;         /* earliest purge_due_ns of its chunks; 0: none */
  struct pz_heap_stats stats;
  struct pz_heap *next_all;      /* all heaps; guarded by pz_heaps_lock */
  struct pz_heap *next_abandoned;
  pz_block *xc[PZ_XC_CLASSES][PZ_XC_MAX]; /* remotely owned blocks freed here */
  unsigned xc_total;              /* blocks in all of xc */
  uintptr_t xc_lent[1 << PZ_XC_LENT_BITS]; /* blocks malloc took from xc */
  pz_block *tc[PZ_XC_CLASSES][PZ_TC_MAX];
} pz_heap;

PZ_HIDDEN extern __thread pz_heap *pz_tls_heap;
PZ_HIDDEN extern pz_heap pz_heap_empty;
PZ_HIDDEN extern uintptr_t pz_free_key; /* bit 1 clear */
PZ_HIDDEN extern uintptr_t pz_xc_key;   /* pz_free_key | 2: a block in some heap's xc */
PZ_HIDDEN extern uintptr_t pz_link_key;

PZ_HIDDEN extern const uint32_t pz_class_size[PZ_NCLASSES];
/* The class of sizes up to 1024 by (size + 15) / 16 (every class boundary
 * up to there is a multiple of 16): one load on the fast path, where the
 * formula below costs a bit scan and six more instructions. */
PZ_HIDDEN extern const uint8_t pz_class_of16[65];
static inline unsigned pz_size_class(size_t size) {
  if (PZ_LIKELY(size <= 1024)) return pz_class_of16[(size + 15) >> 4];
  size_t s = size - 1;
  unsigned b = 63 - (unsigned)__builtin_clzl(s);
  return 8 + (b - 7) * 4 + (unsigned)((s >> (b - 2)) & 3);
}
PZ_HIDDEN unsigned pz_class_slices(unsigned cls);

/* NULL: refused, with errno ENOMEM and the count (pz_oom) */
PZ_HIDDEN void *pz_small_alloc_slow(pz_heap *h, size_t size, bool zero);
/* malloc from h->xc[cls] (not empty) */
PZ_HIDDEN void *pz_small_alloc_xc(pz_heap *h, unsigned cls, bool zero);
PZ_HIDDEN void *pz_small_alloc_aligned(size_t size, size_t align, bool zero);
PZ_HIDDEN void pz_small_free_slow(pz_heap *h, pz_page *pg, pz_block *b, int why);
/* b carries the free key: abort if it really is free, return if the program
 * merely stored the key's value there. */
PZ_HIDDEN PZ_COLD void pz_small_confirm_double_free(pz_heap *h, pz_page *pg, pz_block *b);
/* b carries the free key: whether it really is free. */
PZ_HIDDEN PZ_COLD bool pz_small_is_free(pz_heap *h, pz_page *pg, pz_block *b);
PZ_HIDDEN _Noreturn PZ_COLD void pz_small_free_invalid(const void *p);
PZ_HIDDEN size_t pz_small_usable(const void *p, const pz_chunk *c);
PZ_HIDDEN bool pz_small_grow_medium(pz_page *pg, size_t size); /* in place, owner only */
static inline pz_chunk *pz_chunk_of(const void *p) {
  return (pz_chunk *)((uintptr_t)p & ~(uintptr_t)PZ_CHUNK_MASK);
}
/* The descriptor of the page holding p: the head slice's, found by a
 * shift and the slice's head_back. Slice 0 holds the header: its
 * descriptor, pages[0], is never a page; it and those of free slices
 * have nslices 0 and capacity 0 (page_retire clears them). */
static inline pz_page *pz_small_desc_of(const pz_chunk *c, const void *p) {
  _Static_assert(sizeof(pz_page) == PZ_PAGE_DESC, "descriptors found by a shift");
  size_t off = ((uintptr_t)p & PZ_CHUNK_MASK) >> PZ_SLICE_SHIFT << __builtin_ctz(PZ_PAGE_DESC);
  const pz_page *pg = (const pz_page *)((const char *)c->pages + off);
  return (pz_page *)((const char *)pg - pg->head_back);
}
/* NULL: invalid (the header, or a free slice) */
static inline pz_page *pz_small_page_of(const pz_chunk *c, const void *p) {
  pz_page *pg = pz_small_desc_of(c, p);
  if (PZ_UNLIKELY(pg->nslices == 0)) return NULL;
  return pg;
}
/* Sets block_size, div_inv and div_shift. */
PZ_HIDDEN void pz_page_set_block_size(pz_page *pg, uint32_t block_size);
/* Index of p's block in its page, or -1 when p is not the start of a block
 * that was ever handed out (an interior or stray pointer). Exact division
 * by one multiply: with block_size = odd << s, rotating (p - start) * div_inv
 * right by s gives the quotient when block_size divides p - start, and
 * otherwise at least 2^64 / block_size (one of the low s bits rotated to the
 * top, or a product that wrapped), far above any capacity. */
static inline long pz_block_index(const pz_page *pg, const void *p) {
  uint64_t x = (uint64_t)((const char *)p - pg->start) * pg->div_inv;
  unsigned s = pg->div_shift;
  uint64_t q = (x >> s) | (x << ((64 - s) & 63));
  if (PZ_UNLIKELY(q >= pg->capacity)) return -1;
  return (long)q;
}

/* Free-list links inside free blocks (the `free`, `local_free` and `xfree`
 * lists; the heads in the page descriptor stay plain) are stored as
 * next ^ block address ^ pz_link_key, a per-process random key kept apart
 * from pz_free_key (which free blocks show in their second word). A pointer
 * the program writes into a freed block (use after free, overflow from the
 * block before) decodes to noise, and every pop checks that the link decodes
 * to NULL or to a block of the same page that was handed out before (range
 * and block size), so the forged address is never handed out: one line
 * naming the block, then abort. Links are always written before they are
 * read (page_extend threads fresh blocks; zero memory is never taken for a
 * list end). Owner only: the check reads `capacity`. */
static inline uintptr_t pz_link_encode(const pz_block *b, const pz_block *next) {
  return (uintptr_t)next ^ (uintptr_t)b ^ pz_link_key;
}
PZ_HIDDEN _Noreturn PZ_COLD void pz_small_bad_link(const pz_page *pg, const pz_block *b);
static inline pz_block *pz_link_next(const pz_page *pg, const pz_block *b) {
  pz_block *n = (pz_block *)(b->link ^ (uintptr_t)b ^ pz_link_key);
  if (PZ_UNLIKELY(pz_block_index(pg, n) < 0) && n) pz_small_bad_link(pg, b);
  return n;
}

enum { PZ_FREE_LOCAL, PZ_FREE_REMOTE }; /* why pz_small_free_slow */
PZ_HIDDEN pz_heap *pz_heap_get(void);     /* current thread's heap, made on demand */
PZ_HIDDEN void pz_heap_thread_exit(void *h);
PZ_HIDDEN void pz_heaps_prefork(void);
PZ_HIDDEN void pz_heaps_postfork(bool child);
PZ_HIDDEN void pz_heaps_collect_all(void);
PZ_HIDDEN void pz_heap_flush_tc(void);      /* the calling thread's tc goes to the pages */  /* malloc_trim: reclaim abandoned */
/* Sum the thread heaps' counters and pages. wait false: give up (false)
 * when the heap list lock is busy, never wait for it (a pool worker). */
PZ_HIDDEN bool pz_heaps_stats(struct pz_heap_stats *sum, size_t *small_used_bytes,
                              size_t *small_pages_bytes, size_t *nheaps, bool wait);
PZ_HIDDEN int pz_small_init(void);

/* A block leaves a free list for the program: malloc clears its free key,
 * calloc the block (one word when the rest is known zero). */
static PZ_INLINE void *pz_block_hand_out(pz_heap *h, pz_block *b, size_t bs, bool zero, bool known_zero) {
  if (zero) {
    h->stats.calloc_calls++;
    if (known_zero) {
      b->link = 0;
      h->stats.calloc_skipped_bytes += bs;
    } else {
      __builtin_memset(b, 0, bs);
      h->stats.calloc_zeroed_bytes += bs;
    }
  } else {
    b->key = 0;
  }
  return b;
}

static PZ_INLINE void *pz_small_alloc(size_t size, bool zero) {
  pz_heap *h = pz_tls_heap;
  pz_block ***top = PZ_LIKELY(size <= 1024) ? h->tc16[(size + 15) >> 4] : &h->tc_top[pz_size_class(size)];
  pz_block **t = *top, *b;
  _Static_assert(offsetof(pz_heap, tc_base) - offsetof(pz_heap, tc_top) == (PZ_NCLASSES + 1) * sizeof(void *),
                 "tc_base[cls] follows tc_top[cls] by PZ_NCLASSES + 1 entries");
  if (PZ_LIKELY(t != top[PZ_NCLASSES + 1])) { /* the block this thread freed last */
    b = *--t;
    *top = t;
    h->stats.tc_reused++;
    if (PZ_DEBUG || zero) {
      size_t bs = pz_class_size[pz_size_class(size)];
      if (PZ_DEBUG) pz_debug_check_poison(b, bs);
      return pz_block_hand_out(h, b, bs, zero, false);
    }
    b->key = 0;
    return b;
  }
  unsigned cls = pz_size_class(size);
  if (PZ_UNLIKELY(h->xc_n[cls])) return pz_small_alloc_xc(h, cls, zero);
  pz_page *pg = h->pages[cls];
  b = pg->free;
  if (PZ_LIKELY(b != NULL)) {
    if (PZ_DEBUG && !pg->free_is_zero) pz_debug_check_poison(b, pz_class_size[pg->cls]);
    pg->free = pz_link_next(pg, b);
    pg->used++;
    h->stats.malloc_calls++;
    return pz_block_hand_out(h, b, pz_class_size[cls], zero, pg->free_is_zero);
  }
  return pz_small_alloc_slow(h, size, zero);
}

/* The rest of a free once b is known to be a block in use of pg: into the
 * thread's tc inline, the rest out of line (tail calls only: the fast path
 * needs no stack frame). */
static PZ_INLINE void pz_small_free_block(pz_heap *h, pz_page *pg, pz_block *b) {
  if (PZ_DEBUG) pz_debug_poison(b, pg->block_size);
  /* a plain aligned load (relaxed, on x86, and the compiler may fold it
   * into the compare): pg->heap is stored when the page is made, before
   * any of its blocks exists, and not changed while one is out (a heap is
   * adopted whole) */
  if (PZ_LIKELY(*(pz_heap *const *)&pg->heap == h)) {
    unsigned cls = pg->cls;
    pz_block **t = h->tc_top[cls];
    if (PZ_LIKELY(t != h->tc_end[cls])) {
      b->key = pz_xc_key;
      *t = b;
      h->tc_top[cls] = t + 1;
      return;
    }
    pz_small_free_slow(h, pg, b, PZ_FREE_LOCAL);
    return;
  }
  pz_small_free_slow(h, pg, b, PZ_FREE_REMOTE);
}
/* b carries the free key: abort if it really is free, else free it. */
PZ_HIDDEN PZ_COLD void pz_small_free_suspect(pz_heap *h, pz_page *pg, pz_block *b);

/* Free of a block in a small chunk. With checks on (the default) an
 * interior or stray pointer and a block that carries the free key abort
 * with a message. */
static PZ_INLINE void pz_small_free(void *p, pz_chunk *c) {
  pz_page *pg = pz_small_desc_of(c, p);
  pz_block *b = p;
  pz_heap *h = pz_tls_heap;
  if (pz_opt(PZ_OPT_CHECKS)) {
    /* also the header and free slices: their descriptors' capacity is 0 */
    if (PZ_UNLIKELY(pz_block_index(pg, p) < 0)) pz_small_free_invalid(p);
    if (PZ_UNLIKELY((b->key | 2) == pz_xc_key)) {
      pz_small_free_suspect(h, pg, b);
      return;
    }
  } else if (PZ_UNLIKELY(pg->nslices == 0)) {
    pz_small_free_invalid(p);
  }
  pz_small_free_block(h, pg, b);
}

#endif
