/* prezero internal interface: what every layer shares (sizes, log,
 * options, the global counters, init). Each layer has its own header with
 * its contract, and includes only the layer below it:
 *
 *   api/api.h      entry points (pz_malloc ...), stats, init and fork hooks;
 *                  override.c holds nothing but the exported malloc/free
 *                  symbols.
 *   small/small.h  size classes, per-thread heaps, pages carved from chunks
 *                  (objects up to PZ_SMALL_MAX, and single-block "medium"
 *                  spans up to the large threshold).
 *   large/large.h  runs of whole 2 MiB chunks (one allocation each), the
 *                  program's memory calls, the userfaultfd service.
 *   pool/pool.h    regions of 2 MiB chunks, the chunk state machine, chunk
 *                  map, workers, population, lending.
 *   os/os.h        the only place that makes system calls: mmap/madvise
 *                  wrappers behind an injectable hook table, no-alloc file
 *                  reads, probe, topology, zeroing, metadata memory.
 *   internal.h     (this) log (formatting without malloc), options, counters.
 *
 * small/ and large/ sit side by side on pool/ and do not call each other.
 * The one call upwards is pz_ensure_init() (declared here): any entry point,
 * at any layer, may be the process's first call.
 *
 * Rule for every file: nothing reachable from an allocation path may call
 * malloc, stdio, getenv or libnuma (they may allocate, and we are malloc).
 */
#ifndef PZ_INTERNAL_H
#define PZ_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/types.h>

#include "prezero.h"

#define PZ_LIKELY(x) __builtin_expect(!!(x), 1)
#define PZ_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define PZ_HIDDEN __attribute__((visibility("hidden")))
#define PZ_EXPORT __attribute__((visibility("default")))
#define PZ_NOINLINE __attribute__((noinline))
#define PZ_INLINE inline __attribute__((always_inline))
#define PZ_COLD __attribute__((cold, noinline))

#define PZ_KiB ((size_t)1024)
#define PZ_MiB (1024 * PZ_KiB)
#define PZ_GiB (1024 * PZ_MiB)

#define PZ_CHUNK_SHIFT 21
#define PZ_CHUNK_SIZE ((size_t)1 << PZ_CHUNK_SHIFT) /* 2 MiB, one PMD huge page */
#define PZ_CHUNK_MASK (PZ_CHUNK_SIZE - 1)
#define PZ_SLICE_SHIFT 16
#define PZ_SLICE_SIZE ((size_t)1 << PZ_SLICE_SHIFT) /* 64 KiB */
#define PZ_SLICES (PZ_CHUNK_SIZE / PZ_SLICE_SIZE)   /* 32, slice 0 = header */
#define PZ_PAGE_SIZE ((size_t)4096)
#define PZ_ALIGN 16                                  /* minimum alignment */

#define PZ_SMALL_MAX ((size_t)128 * 1024) /* largest size class */
#define PZ_NCLASSES 48
#define PZ_MEDIUM_MAX ((PZ_SLICES - 1) * PZ_SLICE_SIZE) /* 1984 KiB */
#define PZ_MAX_ALLOC ((size_t)PTRDIFF_MAX - PZ_CHUNK_SIZE)

/* Debug build (-Ddebug_checks=true): internal assertions, and freed small
 * blocks are poisoned past their two link words and checked when handed
 * out again, which catches writes after free. */
#ifndef PZ_DEBUG
#define PZ_DEBUG 0
#endif
#define PZ_POISON 0xdf
#define pz_assert(c)                                                                               \
  do {                                                                                             \
    if (PZ_DEBUG && PZ_UNLIKELY(!(c)))                                                             \
      pz_fatal("internal check failed: %s (%s:%d)", #c, __FILE__, __LINE__);                       \
  } while (0)

static inline size_t pz_align_up(size_t x, size_t a) { return (x + a - 1) & ~(a - 1); }
static inline bool pz_is_pow2(size_t x) { return x && !(x & (x - 1)); }

/* ==================================================================== log.c
 * Messages are formatted into a stack buffer by a small printf subset
 * (%s %d %u %ld %lu %zu %zd %x %lx %p %c %%, with l/z modifiers and a
 * minimum width) and written with write(2) to stderr. */
#include <stdarg.h>
PZ_HIDDEN size_t pz_vsnprintf(char *buf, size_t cap, const char *fmt, va_list ap);
PZ_HIDDEN size_t pz_snprintf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
PZ_HIDDEN void pz_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
PZ_HIDDEN void pz_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
PZ_HIDDEN _Noreturn void pz_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A bad pointer passed to fn (free, realloc, ...): one line naming it, abort. */
PZ_HIDDEN _Noreturn PZ_COLD void pz_bad_pointer(const char *fn, const char *what, const void *p);
PZ_HIDDEN void pz_write_stderr(const char *s, size_t n);
PZ_HIDDEN void pz_debug_poison(void *b, size_t size);
PZ_HIDDEN void pz_debug_check_poison(void *b, size_t size);


/* ==================================================================== options.c
 * One table; values read from environ without allocating. */
enum pz_opt {
  PZ_OPT_STATS,            /* bool: print stats at exit */
  PZ_OPT_VERBOSE,          /* bool: print options and probe at start */
  PZ_OPT_THP,              /* enum auto|always|never */
  PZ_OPT_LARGE_THRESHOLD,  /* size: >= this go to whole chunks */
  PZ_OPT_HUGE_MIN,         /* size: smaller large runs fault 4 KiB pages into fresh chunks */
  PZ_OPT_COLD_PAGES,       /* enum auto|huge|small: page size of fresh chunks handed out */
  PZ_OPT_POOL_MIN,         /* size: ready memory workers keep per node */
  PZ_OPT_POOL_MAX,         /* size: free resident memory kept per node */
  PZ_OPT_CHECKS,           /* bool: invalid/double free checks */
  PZ_OPT_MREMAP_THRESHOLD, /* size: large realloc moves pages above this */
  PZ_OPT_ZERO,             /* bool: background pre-zeroing */
  PZ_OPT_WORKERS,          /* count per node */
  PZ_OPT_BATCH,            /* chunks per worker pass */
  PZ_OPT_ZERO_RATE,        /* size per second, 0 = unlimited */
  PZ_OPT_ZERO_METHOD,      /* enum */
  PZ_OPT_RESERVE,          /* size: ready memory asked for at start */
  PZ_OPT_DECAY_MS,         /* count: ms free memory above POOL_MAX stays before release */
  PZ_OPT_RETAIN_MS,        /* count: ms free memory above POOL_MIN stays (0: forever) */
  PZ_OPT_REPORT_BATCH,     /* count: chunks released at least per batch */
  PZ_OPT_MMAP,             /* bool: serve large anonymous mmaps from ready chunks */
  PZ_OPT_MMAP_THRESHOLD,   /* size: from this length */
  PZ_OPT_UFFD,             /* bool: serve faults on served mmaps with userfaultfd moves */
  PZ_OPT_POPULATE,         /* enum off|eager|lazy: populate large allocations */
  PZ_OPT_POPULATE_MIN,     /* size: least work per population helper */
  PZ_OPT_POPULATE_THREADS, /* count: most helpers (0: the node's CPUs) */
  PZ_OPT_NODES,            /* node list as a bit mask (0: every node) */
  PZ_OPT_SYSFS_ROOT,       /* path: where /sys is read (tests present fake kernels) */
  PZ_OPT_PROC_ROOT,        /* path: where /proc is read */
  PZ_OPT_FAULTS,           /* text: fault injection spec (debug build) */
  PZ_OPT__COUNT
};
enum { PZ_THP_OPT_AUTO = 0, PZ_THP_OPT_ALWAYS = 1, PZ_THP_OPT_NEVER = 2 };
enum { PZ_POP_OFF = 0, PZ_POP_EAGER = 1, PZ_POP_LAZY = 2 };
enum { PZ_COLD_AUTO = 0, PZ_COLD_HUGE = 1, PZ_COLD_SMALL = 2 };
/* NODES: "0,2-3" -> bit mask; PATH: the value itself (points into environ) */
enum pz_opt_kind { PZ_OK_BOOL, PZ_OK_SIZE, PZ_OK_ENUM, PZ_OK_COUNT, PZ_OK_NODES, PZ_OK_PATH, PZ_OK_TEXT };
enum pz_opt_source { PZ_SRC_DEFAULT, PZ_SRC_ENV, PZ_SRC_INVALID, PZ_SRC_SECURE };
struct pz_option_desc {
  const char *name; /* without the PREZERO_ prefix */
  enum pz_opt_kind kind;
  long long def, min, max;
  const char *const *choices; /* for PZ_OK_ENUM, NULL-terminated */
  const char *doc;
};
PZ_HIDDEN extern long long pz_opts[PZ_OPT__COUNT];
PZ_HIDDEN extern const char *pz_opt_strs[PZ_OPT__COUNT]; /* the raw value, NULL when unset */
PZ_HIDDEN extern uint8_t pz_opt_sources[PZ_OPT__COUNT];   /* enum pz_opt_source */
PZ_HIDDEN extern const struct pz_option_desc pz_option_table[PZ_OPT__COUNT];
/* Parse from an environment vector (NULL: use defaults). `secure` ignores
 * all PREZERO_* variables (setuid programs). Returns warnings printed. */
PZ_HIDDEN int pz_options_load(char *const *envp, bool secure);
/* Parse one value; returns 0 and sets *out, or -1 on malformed input. */
PZ_HIDDEN int pz_option_parse(const struct pz_option_desc *d, const char *s, long long *out);
PZ_HIDDEN void pz_options_print(void);
static inline long long pz_opt(enum pz_opt o) { return pz_opts[o]; }
/* A PATH option's value, "" when unset. */
static inline const char *pz_opt_path(enum pz_opt o) { return pz_opt_strs[o] ? pz_opt_strs[o] : ""; }
PZ_HIDDEN const char *pz_opt_source_name(enum pz_opt_source s);


/* ==================================================================== stats.c */
struct pz_gstats {
  _Atomic size_t large_allocs, large_frees, large_bytes_live;
  _Atomic size_t calloc_large_skipped, calloc_large_zeroed, calloc_large;
  _Atomic size_t realloc_moved_pages, realloc_in_place, realloc_copied;
  _Atomic size_t oom;
  _Atomic size_t heapless_frees; /* small blocks freed by threads that never allocated (no heap) */
  _Atomic size_t mmap_served, mmap_moved_bytes;
  _Atomic size_t uffd_mappings, uffd_faults, uffd_moved_bytes, uffd_ahead_bytes, uffd_copied_bytes,
      uffd_fallbacks;
};
PZ_HIDDEN extern struct pz_gstats pz_gstats;
/* A request refused: counted, errno ENOMEM, NULL (log.c). */
PZ_HIDDEN PZ_COLD void *pz_oom(void);


/* ==================================================================== api/init.c */
PZ_HIDDEN extern _Atomic int pz_init_state; /* 0 none, 1 running, 2 done */
PZ_HIDDEN void pz_init_slow(void);
static inline void pz_ensure_init(void) {
  if (PZ_UNLIKELY(atomic_load_explicit(&pz_init_state, memory_order_acquire) != 2))
    pz_init_slow();
}

#endif
