/* The pool layer: regions of 2 MiB chunks per NUMA node, the chunk state
 * machine and map, the background workers, parallel population, and the
 * ready chunks lent to mappings the program made. The one source of memory
 * for small/ and large/. Includes only os/os.h. */
#ifndef PZ_POOL_H
#define PZ_POOL_H

#include "os/os.h"

/* ==================================================================== pool/chunk.c
 * Regions are reservations of 2 MiB-aligned chunks. Each chunk is in one
 * state; the transitions live in pz_chunk_next_state() and nowhere else:
 *
 *   UNTOUCHED/READY/DIRTY --alloc--> USED (TAIL for a run's other chunks)
 *   USED/TAIL --free--> DIRTY
 *   UNTOUCHED/READY/DIRTY --claim--> BUSY   (a worker or trim works on it)
 *   BUSY --zeroed--> READY   BUSY --discard--> UNTOUCHED   BUSY --unclaim--> DIRTY
 *   BUSY --take--> TAKEN      (an allocation wants it; the worker finishes
 *                              it and hands it over: TAKEN --zeroed--> TAIL)
 *   BUSY --steal--> USED      (a chunk a worker is pre-faulting reads zero
 *                              whatever the worker does: an allocation takes
 *                              it at once; the worker's completion, which no
 *                              longer owns it (claim id), leaves it alone)
 *   DIRTY --discard--> UNTOUCHED            (freed past the pool maximum)
 *
 * UNTOUCHED: never faulted (or given back): reads zero, costs a fault.
 * READY: resident and known zero. DIRTY: freed by the program.
 */
/* nohuge: advised MADV_NOHUGEPAGE; SMALL: before its first fault (4 KiB
 * pages); COLD: the same, because 4 KiB pages faulted faster at the time
 * (PREZERO_COLD_PAGES): free, it is MADV_FREE only under a memory limit
 * (pool_lazyfree), and a worker that would zero it faults it in again as
 * a huge page instead (what the pool lends to served mmaps). */
enum { PZ_NH_ADVISED = 1, PZ_NH_SMALL = 2, PZ_NH_COLD = 3 };
enum pz_chunk_state {
  PZ_CS_UNTOUCHED = 0,
  PZ_CS_READY,
  PZ_CS_DIRTY,
  PZ_CS_USED,
  PZ_CS_TAIL,
  PZ_CS_BUSY,
  PZ_CS_TAKEN,
  PZ_CS__COUNT
};
enum pz_chunk_event { PZ_CE_ALLOC, PZ_CE_FREE, PZ_CE_CLAIM, PZ_CE_ZEROED, PZ_CE_DISCARD, PZ_CE_UNCLAIM, PZ_CE_TAKE,
                      PZ_CE_STEAL };
/* Returns the next state, or -1 for a transition that must not happen. */
PZ_HIDDEN int pz_chunk_next_state(enum pz_chunk_state s, enum pz_chunk_event e);

/* Chunk map: one entry per 2 MiB of address space, telling what the chunk
 * holds, so free() can validate any pointer without touching it. An entry
 * is the kind in its low byte (free tests that byte alone) and the
 * region's id above it; 0 for no chunk of ours. */
enum pz_map_kind { PZ_MK_NONE = 0, PZ_MK_SMALL, PZ_MK_LARGE, PZ_MK_LARGE_TAIL, PZ_MK_FREE };
#define PZ_MAP_LEAF_BITS 13
#define PZ_MAP_TOP_BITS (47 - PZ_CHUNK_SHIFT - PZ_MAP_LEAF_BITS)
PZ_HIDDEN extern _Atomic(uint32_t *) pz_map_top[1u << PZ_MAP_TOP_BITS];
static inline uint32_t pz_map_get(const void *p) {
  uintptr_t a = (uintptr_t)p;
  uintptr_t t = a >> (PZ_CHUNK_SHIFT + PZ_MAP_LEAF_BITS);
  if (PZ_UNLIKELY(t >= (1u << PZ_MAP_TOP_BITS))) return 0;
  uint32_t *leaf = atomic_load_explicit(&pz_map_top[t], memory_order_acquire);
  if (PZ_UNLIKELY(!leaf)) return 0;
  return __atomic_load_n(&leaf[(a >> PZ_CHUNK_SHIFT) & ((1u << PZ_MAP_LEAF_BITS) - 1)],
                         __ATOMIC_RELAXED);
}
PZ_HIDDEN void pz_map_set_range(void *base, size_t nchunks, enum pz_map_kind kind, uint32_t region);

struct pz_region {
  char *base;
  uint32_t nchunks;      /* 0: a husk (unmapped; its struct and id wait for reuse) */
  uint32_t cap;          /* chunks the arrays below have room for */
  uint32_t id;
  uint32_t nfree;        /* chunks in a free state; guarded by the node lock */
  uint32_t node;
  uint8_t *state;        /* enum pz_chunk_state per chunk; guarded by the node lock */
  uint32_t *runlen;      /* at a run's head: chunks in the run */
  uint8_t *nohuge;       /* chunk madvised MADV_NOHUGEPAGE: PZ_NH_ADVISED, or PZ_NH_SMALL / PZ_NH_COLD
                          * when that was before its first fault (4 KiB pages) */
  uint8_t *released;     /* chunk was given back (faulting it in again is counted) */
  uint32_t *idle_since;  /* free chunks: pz_pool_ms() when they became free */
  uint32_t *claim_id;    /* BUSY/TAKEN chunks: the claim that holds them (PZ_CLAIM_POP: pre-faulting) */
  uint8_t *rw;           /* chunk is committed (read/write). READY, DIRTY, USED and TAIL chunks
                          * always are; an UNTOUCHED one is when it was given back by
                          * MADV_DONTNEED or its pages moved out, not when it is a fresh
                          * PROT_NONE reservation. Written by whoever holds the chunk. */
  uint8_t *foreign;      /* a program put something of its own there (its userfaultfd, a
                          * MAP_FIXED mapping): replaced, never reset, when it comes back */
  uint32_t npop;         /* chunks BUSY being pre-faulted (an allocation may steal them) */
  struct pz_region *next;
};
/* Per-node counters, guarded by the node lock (all size_t: summed as an array). */
struct pz_node_stats {
  size_t runs_alloc, runs_free, discarded_bytes, busy_waits;
  size_t released_bytes, refaulted_bytes, pressure_events;
  size_t zero_from_ready, zero_from_untouched; /* calloc'd chunk bytes by origin */
  size_t zeroed_bytes, populated_bytes;        /* done by workers */
  size_t worker_ns, worker_passes;
  size_t cold_small_bytes;                     /* fresh chunks handed out with 4 KiB pages (COLD_PAGES) */
};
struct pz_node_pool {
  pthread_mutex_t lock;
  pthread_cond_t work, done;
  struct pz_region *regions;
  size_t count[PZ_CS__COUNT];
  size_t reserve;         /* chunks prezero_reserve() asked to keep ready */
  size_t small_chunks;    /* chunks in use by thread heaps */
  unsigned node, sleeping;
  bool forked;            /* child after fork: inherited dirty chunks are shared copy-on-write */
  bool pressure;          /* the last look at the memory limits found them close */
  bool tight;             /* ... or found no head room left for pre-faulting */
  uint64_t limits_checked_ns;
  uint32_t claim_seq;     /* claim ids */
  size_t headroom;        /* chunks the limits let workers pre-fault (SIZE_MAX: no limit) */
  _Atomic int fork_defer; /* child after fork: chunk frees before workers may start */
  _Atomic int workers;    /* started (0 after fork: restarted lazily) */
  struct pz_node_stats st;
} __attribute__((aligned(64)));
PZ_HIDDEN extern struct pz_node_pool pz_nodes[PZ_MAX_NODES];
struct pz_pool_stats {
  size_t regions, reserved_bytes, thp_refused, workers;
  size_t resident_bytes, huge_bytes; /* in our regions, by PAGEMAP_SCAN */
  bool pagemap_scan;                 /* ... which worked */
  size_t chunks[PZ_CS__COUNT];
  struct pz_node_stats node; /* summed over nodes */
};
/* A range of chunks a worker holds BUSY. */
struct pz_claim {
  struct pz_region *region;
  size_t start, n;
  enum pz_chunk_state from; /* DIRTY: zero it; UNTOUCHED: populate it */
  bool discard;             /* give it back instead (a forked child's inherited chunks) */
  bool release;             /* ... because it was idle (decay, pressure, trim) */
  uint32_t id;              /* set by the pool: completion acts only on chunks still held by it */
  bool convert;             /* chunks flagged PZ_NH_COLD: READY ones given back, UNTOUCHED ones
                             * advised again; both faulted in as huge pages */
};
#define PZ_CLAIM_POP 0x80000000u  /* in a claim id: pre-faulting (zero memory stays zero) */
#define PZ_CLAIM_MOVE 0x40000000u /* ... moving its pages out: an allocation may not take it */
/* Allocate a run of `n` chunks aligned to `align` bytes (a power of two;
 * 0 = chunk alignment). Flags: PZ_CA_PREFER_ZERO picks chunks that read
 * zero first (else dirty ones first, saving zero memory for calloc);
 * PZ_CA_ZERO also guarantees the run reads zero (dirty chunks are zeroed
 * outside the pool lock). *zero_out (may be NULL): the run reads zero;
 * *zeroed_out: bytes we had to memset. NULL when the OS refuses memory. */
enum { PZ_CA_PREFER_ZERO = 1, PZ_CA_ZERO = 3 };
PZ_HIDDEN void *pz_chunk_alloc(size_t n, size_t align, int flags, enum pz_map_kind kind,
                               bool *zero_out, size_t *zeroed_out);
PZ_HIDDEN void pz_chunk_free(void *base);         /* whole run, by head */
PZ_HIDDEN extern _Atomic size_t pz_small_used_slices; /* kept by small.c: spans in use */
/* Move the pages of run `from` into the head of run `to` (just allocated,
 * longer) with mremap: no copy. PZ_MOVED: `from` is freed, its address
 * range fresh again. PZ_MOVE_NO: nothing moved, copy instead. PZ_MOVE_LOST:
 * nothing moved and `to` can no longer be used (its head is gone, its tail
 * freed): copy into another run. */
enum { PZ_MOVED, PZ_MOVE_NO, PZ_MOVE_LOST };
PZ_HIDDEN int pz_chunk_move(void *from, void *to);
PZ_HIDDEN size_t pz_chunk_run_len(const void *base); /* chunks in run */
/* Shrink a run in place to n chunks (tail chunks become DIRTY). */
PZ_HIDDEN void pz_chunk_shrink(void *base, size_t n);
/* Try to grow a run in place to n chunks (new contents undefined). */
PZ_HIDDEN bool pz_chunk_grow(void *base, size_t n);
/* Discard DIRTY free chunks beyond `keep` bytes; returns bytes discarded. */
PZ_HIDDEN size_t pz_chunk_trim(size_t keep);
/* The pool's figures, summed over nodes. wait false (a pool worker): node
 * locks only tried, and no PAGEMAP_SCAN (resident figures left 0). */
PZ_HIDDEN void pz_chunk_stats(struct pz_pool_stats *out, bool wait);
/* Fresh chunks get 4 KiB pages (PREZERO_COLD_PAGES; auto: unless the
 * workers measured huge pages faulting faster a moment ago). */
PZ_HIDDEN bool pz_pool_cold_small_pages(void);
/* The workers' last measurement: ns to fault 2 MiB as one huge page and
 * as 512 4 KiB pages (0: none yet). */
PZ_HIDDEN void pz_pool_fault_probe(uint64_t *huge_ns, uint64_t *small_ns);
PZ_HIDDEN void pz_pool_init(void);
PZ_HIDDEN void pz_pool_prefork(void);
PZ_HIDDEN void pz_pool_postfork(bool child);
/* Workers: claim a batch of work, blocking while there is none; SIZE_MAX
 * when the worker should exit (idle for a second). Hand it back done (ok[i]:
 * the range is zero now) or not. */
PZ_HIDDEN size_t pz_pool_claim(unsigned node, struct pz_claim *claims, size_t nclaims);
PZ_HIDDEN void pz_pool_complete(unsigned node, const struct pz_claim *claims, size_t n, const bool *ok);
/* Before a claim's work: commit its chunks (pre-faulting). After: give them
 * back (decommitted: a fresh reservation, or MADV_DONTNEED where refused). */
PZ_HIDDEN bool pz_pool_commit(const struct pz_claim *c);
PZ_HIDDEN bool pz_pool_give_back(const struct pz_claim *c);
/* Keep `bytes` ready on the caller's node (0 clears); waits until it is.
 * Returns 0 or ENOMEM. */
PZ_HIDDEN int pz_chunk_reserve(size_t bytes);
PZ_HIDDEN void pz_pool_prepare(void); /* PREZERO_POOL_MIN at start: background */
PZ_HIDDEN void pz_pool_wake_workers(void); /* every sleeping worker looks again */

/* ==================================================================== pool/worker.c
 * Background workers, one or more per node: pre-zero dirty chunks and
 * pre-fault untouched ones, between the watermarks. */
enum pz_plan_what { PZ_PLAN_IDLE, PZ_PLAN_ZERO, PZ_PLAN_POPULATE, PZ_PLAN_DISCARD, PZ_PLAN_RELEASE };
struct pz_plan { enum pz_plan_what what; size_t n; };
/* What a worker sees, all counts in chunks. */
struct pz_plan_in {
  size_t ready, dirty, untouched; /* free chunks by state */
  size_t min_ready;               /* low watermark: POOL_MIN or the reserve */
  size_t max_free;                /* high watermark: POOL_MAX (ready + dirty kept) */
  size_t batch;                   /* PREZERO_BATCH */
  size_t report_batch;            /* PREZERO_REPORT_BATCH */
  /* free chunks that may go back to the kernel (whole aligned blocks),
   * by how long they have been idle: past DECAY_MS, past RETAIN_MS, any */
  size_t idle_decay, idle_retain, idle_any;
  size_t headroom;                /* chunks the memory limits let us pre-fault */
  bool forked;                    /* a child after fork: inherited dirty chunks are shared */
  bool pressure;                  /* memory is short: shrink to the low watermark now */
};
/* The watermark logic: pure, unit-tested. Forked children give inherited
 * dirty chunks back first (zeroing them would copy every page); then idle
 * memory above the watermarks goes back (at least report_batch chunks at a
 * time, unless under pressure); then dirty chunks are zeroed while ready
 * memory is under the high watermark; then fresh chunks are pre-faulted up
 * to the low one, within the headroom. */
PZ_HIDDEN struct pz_plan pz_worker_plan(const struct pz_plan_in *in);
/* Tests only: called by a worker right after it claimed chunks (they are
 * BUSY), and by a remote free that took a notice (FREEING is up), so a
 * test can hold it there and race allocations, fork and trim against it.
 * NULL in programs. */
enum {
  PZ_HOOK_WORKER_CLAIMED = 1,
  PZ_HOOK_NOTICE_TAKEN = 2, /* free_remote: FREEING up */
  PZ_HOOK_HEAP_COLLECT = 3  /* an exiting thread's heap: delayed pages drained, pages not yet retired */
};
PZ_HIDDEN extern void (*volatile pz_test_hook)(int where);
/* Called by a worker awake anyway (after a pass, before it leaves): the api
 * layer's statistics snapshot (prezero-info --pid), set at init; NULL until
 * then. Must never wait for a lock. */
PZ_HIDDEN extern void (*volatile pz_worker_refresh)(void);
/* Start the node's workers if not running. False when none could start. */
PZ_HIDDEN bool pz_workers_start(unsigned node);
/* Set while this thread may hold a lock pthread_create takes: glibc frees
 * dead threads' TLS under its stack-cache lock, from pthread_join and from
 * a thread's own exit. A worker start asked for then is deferred (a
 * pthread_create there would wait for ever on the lock its own thread
 * holds) and made by the next pool call from a thread without the flag,
 * or after the join (pz_workers_start_deferred). */
PZ_HIDDEN extern __thread bool pz_tls_no_spawn;
PZ_HIDDEN void pz_workers_start_deferred(void);

/* ==================================================================== pool/populate.c
 * Fault [p, p+len) in with helper threads pinned to `node`, never changing
 * a byte. Eager waits; lazy returns at once and leaves the work to detached
 * helpers. False when the kernel refused memory (eager only). */
PZ_HIDDEN bool pz_populate_parallel(void *p, size_t len, unsigned node, bool lazy);


/* Move up to `max` ready chunks (one run) to dst, as the head of a mapping
 * of dst_len bytes replacing [dst, dst+dst_len). Returns chunks moved (0:
 * none ready, or the move failed and nothing changed). */
PZ_HIDDEN size_t pz_chunk_lend(size_t max, void *dst, size_t dst_len);
/* userfaultfd serving: up to `max` READY huge-page chunks of `node`'s pool,
 * in address order, held while their pages are moved out (returns how
 * many, in out[]); then each done with the bytes that left it (0: it is
 * still ready; else it reads zero, untouched). `stale`: its pages could not
 * move (shared with a forked child since): give them back, the workers
 * fault in fresh ones. */
PZ_HIDDEN size_t pz_chunk_lend_ready(unsigned node, void **out, size_t max);
/* False when the pool lock was busy: nothing done, call again later (the
 * userfaultfd threads never wait for it; nor does the lend above). */
PZ_HIDDEN bool pz_chunk_lend_one_done(void *chunk, size_t moved, bool stale);
/* Some chunk overlapping [p, p+len) is ours (lock-free). */
PZ_HIDDEN bool pz_chunk_overlaps(const void *p, size_t len);
/* The program mapped over [p, p+len), or registered it with its own
 * userfaultfd: chunks of ours there are never touched by us again (free
 * ones leave the pool; one in use is replaced when it comes back). */
PZ_HIDDEN void pz_chunk_clobbered(const void *p, size_t len);
/* The program ran out of address space, data segment or commit (RLIMIT_AS,
 * RLIMIT_DATA, mlock limits): free memory is decommitted and every region
 * left wholly free unmapped; returns chunks given back or unmapped. Skips a
 * node whose lock is busy (it may be called from a signal handler). */
PZ_HIDDEN size_t pz_chunk_unmap_free(void);

/* The node's pool has, or keeps, ready chunks (a racy look, no lock). */
PZ_HIDDEN bool pz_pool_serves(unsigned node);
PZ_HIDDEN bool pz_chunk_small_pages(const void *chunk);

#endif
