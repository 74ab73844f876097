/* prezero internal interface.
 *
 * Layers, dependencies pointing down only:
 *
 *   api/      entry points (pz_malloc ...), init state machine, fork hooks;
 *             override.c holds nothing but the exported malloc/free symbols.
 *   small/    size classes, per-thread heaps, pages carved from chunks
 *             (objects up to PZ_SMALL_MAX, and single-block "medium" spans
 *             up to the large threshold).
 *   large/    runs of whole 2 MiB chunks (one allocation each).
 *   pool/     regions of 2 MiB chunks, the chunk state machine, chunk map.
 *   os/       the only place that makes system calls: mmap/madvise wrappers
 *             behind an injectable hook table, no-alloc file reads, probe.
 *   util      options, stats, log (formatting without malloc).
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

/* ==================================================================== os/os.c
 * System calls. Every primitive returns 0 or an errno value (never sets a
 * global), so callers can fall back. The table is what tests replace. */
struct pz_os_hooks {
  void *(*mmap)(void *addr, size_t len, int prot, int flags, int fd, off_t off);
  int (*munmap)(void *addr, size_t len);
  int (*madvise)(void *addr, size_t len, int advice);
  void *(*mremap)(void *old, size_t old_len, size_t new_len, int flags, void *new_addr);
  int (*mprotect)(void *addr, size_t len, int prot);
};
PZ_HIDDEN extern struct pz_os_hooks pz_os; /* the live table */
PZ_HIDDEN void pz_os_set_hooks(const struct pz_os_hooks *h); /* NULL: defaults */
PZ_HIDDEN void pz_os_default_hooks(struct pz_os_hooks *out);

/* Map `len` bytes aligned to `align` (a power of two >= page size),
 * read/write, private anonymous, MAP_NORESERVE. NULL on failure. */
PZ_HIDDEN void *pz_os_map_aligned(size_t len, size_t align);
/* Reserve `len` bytes of address space aligned to `align`: PROT_NONE,
 * MAP_NORESERVE (no memory, no commit charge, nothing mlockall locks in).
 * NULL on failure. */
PZ_HIDDEN void *pz_os_reserve(size_t len, size_t align);
/* Make reserved memory read/write (commits it). Returns errno. */
PZ_HIDDEN int pz_os_commit(void *p, size_t len);
/* Replace [p, p+len) (ours) by a fresh reservation (MAP_FIXED, PROT_NONE):
 * pages, commit charge and every attribute a program set on it go. errno. */
PZ_HIDDEN int pz_os_decommit(void *p, size_t len);
/* Undo what a program may have set on memory it handed back (protection,
 * fork, dump, KSM and lock flags); errno when the protection cannot be
 * restored (sealed, partly unmapped): the range must then be replaced. */
PZ_HIDDEN int pz_os_reset(void *p, size_t len);
/* The program called mlockall(MCL_FUTURE): fresh mappings are locked, and
 * so is memory the pool hands out again. */
PZ_HIDDEN extern _Atomic bool pz_mcl_future;
/* The program called mlock, mlock2 or mlockall at some point: a freed run
 * may be locked and is unlocked when reset. */
PZ_HIDDEN extern _Atomic bool pz_program_locks;
/* The process has an address-space limit (RLIMIT_AS, ulimit -v): read at
 * start and again whenever the program sets a limit through us (setrlimit,
 * prlimit), not on every free (a sandbox may forbid prlimit64 later on). */
PZ_HIDDEN extern _Atomic bool pz_as_limited;
PZ_HIDDEN void pz_os_read_limits(void);
PZ_HIDDEN int pz_os_unmap(void *p, size_t len);
/* Hint huge pages (returns errno; EINVAL when THP is compiled out). */
PZ_HIDDEN int pz_os_hugepage(void *p, size_t len);
/* Give pages back to the kernel; they read as zero afterwards. */
PZ_HIDDEN int pz_os_discard(void *p, size_t len);
/* Move pages [old, old+old_len) to new_addr (already ours) and grow to
 * new_len. Returns errno. On failure new_addr may have been unmapped (6.1
 * unmaps before it checks): ask pz_os_one_mapping(old) first. */
PZ_HIDDEN int pz_os_move(void *old, size_t old_len, void *new_addr, size_t new_len);
/* [p, p+len) lies in one mapping (mremap can move it); asks without
 * changing anything. */
PZ_HIDDEN bool pz_os_one_mapping(void *p, size_t len);
/* Re-map a fresh reservation (PROT_NONE) over a hole [p, p+len)
 * (MAP_FIXED_NOREPLACE). Returns errno: EEXIST when something is mapped
 * there. */
PZ_HIDDEN int pz_os_remap_fresh(void *p, size_t len);
/* [p, p+len) is mapped at both ends (after a failed move: not unmapped). */
PZ_HIDDEN bool pz_os_mapped(void *p, size_t len);
/* Read a small file (/proc, /sys) into buf without allocating. Returns
 * bytes read (NUL-terminated) or -errno. */
PZ_HIDDEN ssize_t pz_os_read_file(const char *path, char *buf, size_t cap);
PZ_HIDDEN pid_t pz_os_gettid(void);
/* ioctl(2) itself: libprezero.so exports ioctl (large/mmap.c), and a call
 * of ours must not come back through it. Returns -1 with errno set. */
PZ_HIDDEN int pz_os_ioctl(int fd, unsigned long request, void *arg);
/* Adds [p, p+len)'s resident and huge-page bytes (PAGEMAP_SCAN); errno when
 * the kernel lacks it. */
PZ_HIDDEN int pz_os_pagemap_huge(void *p, size_t len, size_t *present, size_t *huge);
PZ_HIDDEN uint64_t pz_os_random(void); /* getrandom or a time-seeded fallback */
PZ_HIDDEN uint64_t pz_os_now_ns(void);

/* ==================================================================== os/faults.c
 * Fault injection (debug build, PREZERO_FAULTS): makes the OS calls fail,
 * every Nth call of a kind, with a chosen errno. */
enum pz_fault_kind { PZ_FAULT_MMAP, PZ_FAULT_MUNMAP, PZ_FAULT_MADVISE, PZ_FAULT_POPULATE, PZ_FAULT_MREMAP,
                     PZ_FAULT_THREAD, PZ_FAULT_UFFD, PZ_FAULT_MOVE, PZ_FAULT_MPROTECT, PZ_FAULT__COUNT };
PZ_HIDDEN void pz_faults_init(void);           /* after the options: installs the wrappers */
PZ_HIDDEN size_t pz_faults_injected(void);
/* For calls made outside the hook table (userfaultfd): true (and *err)
 * when this call of kind k is to fail. */
PZ_HIDDEN bool pz_fault_hit(enum pz_fault_kind k, int *err);
/* pthread_create, or EAGAIN when a thread fault is injected. */
PZ_HIDDEN int pz_thread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);
/* One of our threads: detached (never keeps the process alive), every
 * signal blocked (the program's handlers never run on it), `stack` bytes,
 * named (NULL: unnamed). 0 or the error (EAGAIN). */
PZ_HIDDEN int pz_thread_spawn(void *(*fn)(void *), void *arg, size_t stack, const char *name);

/* ==================================================================== os/zero.c
 * Zeroing with non-temporal stores, chosen by CPU features; populating. */
enum pz_zero_method { PZ_ZERO_MEMSET, PZ_ZERO_SSE2, PZ_ZERO_AVX2, PZ_ZERO_CLZERO };
PZ_HIDDEN bool pz_zero_method_supported(enum pz_zero_method m);
PZ_HIDDEN void pz_zero_select(int requested); /* -1: auto */
PZ_HIDDEN const char *pz_zero_method_name(void);
PZ_HIDDEN void pz_zero(void *p, size_t n);
/* Fault [p, p+n) in, writable. False when the kernel refused the memory. */
PZ_HIDDEN bool pz_populate(void *p, size_t n);

/* ==================================================================== os/topo.c
 * NUMA topology from sysfs, read without allocating. */
#define PZ_MAX_NODES 64
#define PZ_CPUSET_WORDS 16 /* 1024 CPUs */
struct pz_topology {
  unsigned nnodes;                    /* pools: >= 1 */
  unsigned machine_nodes;             /* nodes the machine has (>= nnodes with PREZERO_NODES) */
  size_t mem_total[PZ_MAX_NODES];     /* per pool's node, bytes; 0 unknown */
  unsigned node_id[PZ_MAX_NODES];     /* kernel node numbers, index = our node */
  unsigned long cpus[PZ_MAX_NODES][PZ_CPUSET_WORDS];
  unsigned long allowed[PZ_CPUSET_WORDS]; /* the process's CPU set at init */
  int16_t cpu_node[PZ_CPUSET_WORDS * 64]; /* cpu -> our node index */
};
PZ_HIDDEN extern struct pz_topology pz_topo;
PZ_HIDDEN void pz_topo_init(void);
PZ_HIDDEN unsigned pz_topo_current_node(void); /* our index for the calling CPU */
/* Prefer node `n` for [p, p+len) (mbind MPOL_PREFERRED); 0 or errno. */
PZ_HIDDEN int pz_os_bind_node(void *p, size_t len, unsigned n);
/* Pin the calling thread to node n's CPUs (within the process's CPU set). */
PZ_HIDDEN int pz_os_pin_node(unsigned n);

/* ==================================================================== os/probe.c
 * What the kernel offers, read once at init (files under PREZERO_SYSFS_ROOT
 * and PREZERO_PROC_ROOT when set). Later decisions read `pz_kernel`. */
enum pz_thp_mode { PZ_THP_ALWAYS, PZ_THP_MADVISE, PZ_THP_NEVER, PZ_THP_DEFER, PZ_THP_DEFER_MADVISE,
                   PZ_THP_INHERIT, PZ_THP_UNKNOWN };
struct pz_kernel {
  enum pz_thp_mode thp_enabled, thp_defrag;
  size_t pmd_size;        /* 0 when unknown */
  uint32_t mthp_orders;   /* multi-size THP: orders the kernel offers (bit k: 4 KiB << k) */
  uint32_t mthp_enabled;  /* ... and those enabled (always/madvise, or inherit) */
  bool thp_usable;        /* huge pages can be had for our chunks */
  size_t page_size;
  unsigned ncpus;
  bool populate_write;    /* MADV_POPULATE_WRITE works (5.14) */
  int collapse;           /* MADV_COLLAPSE works (6.1); -1 until pz_probe_collapse() */
  bool pagemap_scan;      /* the PAGEMAP_SCAN ioctl works (6.7) */
  int uffd;               /* userfaultfd(2): 0 works, else its errno (ENOSYS, EPERM) */
  int uffd_user_mode;     /* ... with UFFD_USER_MODE_ONLY */
  bool uffd_dev;          /* /dev/userfaultfd exists */
  int unprivileged_uffd;  /* vm.unprivileged_userfaultfd, -1 unknown */
  uint64_t uffd_features, uffd_ioctls; /* from the UFFDIO_API handshake */
  int reporting_order;    /* free page reporting order, -1 without page_reporting (or not set) */
  int reporting_order_raw; /* the parameter as read (-1: absent) */
  bool init_on_free, init_on_alloc;         /* kernel command line */
  bool zero_page, kzerod, host_zeroes_pages; /* pre-zeroing kernels (see probe.c) */
  bool zeroable_hugepages;
  size_t zero_page_batch;
  unsigned zero_page_delay_ms;
  bool kernel_prezeroes;  /* freed pages come back zero without our work */
  bool cgroup_v2;
  size_t cgroup_max, cgroup_high; /* tightest along the cgroup path; SIZE_MAX: none */
  char cgroup_usage[320];         /* the limiting cgroup's usage file, below the sysfs root */
  size_t mem_total, mem_available; /* /proc/meminfo at probe time */
  int overcommit;                  /* vm.overcommit_memory: 2 = strict commit accounting */
};
PZ_HIDDEN extern struct pz_kernel pz_kernel;
PZ_HIDDEN void pz_probe_kernel(void);
PZ_HIDDEN const char *pz_thp_mode_name(enum pz_thp_mode m);
enum pz_root { PZ_ROOT_SYS, PZ_ROOT_PROC };
/* "/sys" + rel (or PREZERO_SYSFS_ROOT + rel) into buf; returns its length. */
PZ_HIDDEN size_t pz_probe_path(enum pz_root root, const char *rel, char *buf, size_t cap);
PZ_HIDDEN ssize_t pz_probe_read(enum pz_root root, const char *rel, char *buf, size_t cap);
PZ_HIDDEN size_t pz_probe_kb_field(const char *text, const char *field);
/* Now (not cached): MemTotal and MemAvailable in bytes, 0 when unknown. */
PZ_HIDDEN void pz_probe_memory(size_t *total, size_t *available);
/* Now: the limiting cgroup's usage in bytes, 0 without a limit. */
PZ_HIDDEN size_t pz_probe_cgroup_usage(void);
/* Alignment of ranges given back: 2 MiB or the page reporting order's. */
PZ_HIDDEN size_t pz_release_align(void);
PZ_HIDDEN bool pz_probe_collapse(void); /* tries it once (a 2 MiB collapse) */
/* The system's THP mode now (an administrator may change it at run time). */
PZ_HIDDEN enum pz_thp_mode pz_probe_thp_now(void);

/* ==================================================================== options.c
 * One table; values read from environ without allocating. */
enum pz_opt {
  PZ_OPT_STATS,            /* bool: print stats at exit */
  PZ_OPT_VERBOSE,          /* bool: print options and probe at start */
  PZ_OPT_THP,              /* enum auto|always|never */
  PZ_OPT_LARGE_THRESHOLD,  /* size: >= this go to whole chunks */
  PZ_OPT_HUGE_MIN,         /* size: smaller large runs fault 4 KiB pages into fresh chunks */
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
enum { PZ_NH_ADVISED = 1, PZ_NH_SMALL = 2 };
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
 * holds, so free() can validate any pointer without touching it. */
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
  uint8_t *nohuge;       /* chunk madvised MADV_NOHUGEPAGE: PZ_NH_ADVISED, or PZ_NH_SMALL when
                          * that was before its first fault (4 KiB pages) */
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
PZ_HIDDEN void pz_chunk_stats(struct pz_pool_stats *out);
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
/* Start the node's workers if not running. False when none could start. */
PZ_HIDDEN bool pz_workers_start(unsigned node);

/* ==================================================================== pool/populate.c
 * Fault [p, p+len) in with helper threads pinned to `node`, never changing
 * a byte. Eager waits; lazy returns at once and leaves the work to detached
 * helpers. False when the kernel refused memory (eager only). */
PZ_HIDDEN bool pz_populate_parallel(void *p, size_t len, unsigned node, bool lazy);

/* ==================================================================== meta.c
 * Internal metadata memory (heaps, region arrays, map leaves): bump
 * allocation from mapped blocks, never freed. Zeroed. */
PZ_HIDDEN void *pz_meta_alloc(size_t size);
PZ_HIDDEN void pz_meta_prefork(void);
PZ_HIDDEN void pz_meta_postfork(void); /* parent and child */

/* ==================================================================== small/
 * Blocks are linked through their first word, stored encoded (pz_link_*
 * below); the second word holds a per-process key while the block is free
 * (pz_free_key, or pz_xc_key in a heap's xc), which makes double frees
 * cheap to detect (a freshly handed-out block has it cleared). */
typedef struct pz_block { uintptr_t link; uintptr_t key; } pz_block;

struct pz_heap;
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
  uint8_t slice_offset;  /* in a non-head slice: distance to the head */
  uint8_t span_zero;     /* span was zero when the page was made */
  uint8_t div_shift;     /* trailing zero bits of block_size */
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
} __attribute__((aligned(64))) pz_page;
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

struct pz_heap_stats {
  size_t malloc_calls, free_calls, calloc_calls, realloc_calls;
  size_t calloc_skipped_bytes, calloc_zeroed_bytes;
  size_t remote_frees;
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
static inline unsigned pz_xc_hash(const void *b) {
  return (unsigned)(((uintptr_t)b >> 4) * 0x9e3779b97f4a7c15u >> (64 - PZ_XC_LENT_BITS));
}

typedef struct pz_heap {
  pz_page *pages[PZ_NCLASSES];   /* head of each class queue (never NULL) */
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
} pz_heap;

PZ_HIDDEN extern __thread pz_heap *pz_tls_heap;
PZ_HIDDEN extern pz_heap pz_heap_empty;
PZ_HIDDEN extern uintptr_t pz_free_key; /* bit 1 clear */
PZ_HIDDEN extern uintptr_t pz_xc_key;   /* pz_free_key | 2: a block in some heap's xc */
PZ_HIDDEN extern uintptr_t pz_link_key;

PZ_HIDDEN extern const uint32_t pz_class_size[PZ_NCLASSES];
static inline unsigned pz_size_class(size_t size) {
  if (size <= 128) return size <= 16 ? 0 : (unsigned)((size + 15) >> 4) - 1;
  size_t s = size - 1;
  unsigned b = 63 - (unsigned)__builtin_clzl(s);
  return 8 + (b - 7) * 4 + (unsigned)((s >> (b - 2)) & 3);
}
PZ_HIDDEN unsigned pz_class_slices(unsigned cls);

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
PZ_HIDDEN PZ_COLD void pz_small_free_invalid(const void *p);
PZ_HIDDEN size_t pz_small_usable(const void *p, const pz_chunk *c);
PZ_HIDDEN bool pz_small_grow_medium(pz_page *pg, size_t size); /* in place, owner only */
static inline pz_chunk *pz_chunk_of(const void *p) {
  return (pz_chunk *)((uintptr_t)p & ~(uintptr_t)PZ_CHUNK_MASK);
}
static inline pz_page *pz_small_page_of(const pz_chunk *c, const void *p) { /* NULL: invalid */
  size_t idx = (size_t)((const char *)p - (const char *)c) >> PZ_SLICE_SHIFT;
  const pz_page *pg = &c->pages[idx];
  pg -= pg->slice_offset;
  if (PZ_UNLIKELY(idx == 0 || pg->nslices == 0)) return NULL;
  return (pz_page *)pg;
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

enum { PZ_FREE_EMPTY, PZ_FREE_UNFULL, PZ_FREE_REMOTE };
PZ_HIDDEN pz_heap *pz_heap_get(void);     /* current thread's heap, made on demand */
PZ_HIDDEN void pz_heap_thread_exit(void *h);
PZ_HIDDEN void pz_heaps_prefork(void);
PZ_HIDDEN void pz_heaps_postfork(bool child);
PZ_HIDDEN void pz_heaps_collect_all(void);  /* malloc_trim: reclaim abandoned */
/* Sum the thread heaps' counters and pages. wait false: give up (false)
 * when the heap list lock is busy, never wait for it (a pool worker). */
PZ_HIDDEN bool pz_heaps_stats(struct pz_heap_stats *sum, size_t *small_used_bytes,
                              size_t *small_pages_bytes, size_t *nheaps, bool wait);
PZ_HIDDEN int pz_small_init(void);

/* A block leaves a free list for the program: malloc clears its free key,
 * calloc the block (one word when the rest is known zero). */
static PZ_INLINE void *pz_block_hand_out(pz_heap *h, pz_block *b, size_t bs, bool zero, bool known_zero) {
  h->stats.malloc_calls++;
  if (zero) {
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
  unsigned cls = pz_size_class(size);
  pz_block *b;
  if (PZ_UNLIKELY(h->xc_n[cls])) return pz_small_alloc_xc(h, cls, zero);
  pz_page *pg = h->pages[cls];
  b = pg->free;
  if (PZ_LIKELY(b != NULL)) {
    if (PZ_DEBUG && !pg->free_is_zero) pz_debug_check_poison(b, pz_class_size[pg->cls]);
    pg->free = pz_link_next(pg, b);
    pg->used++;
    return pz_block_hand_out(h, b, pz_class_size[cls], zero, pg->free_is_zero);
  }
  return pz_small_alloc_slow(h, size, zero);
}

/* Free of a block in a small chunk: the local push inline, the rest out of
 * line. With checks on (the default) an interior or stray pointer and a
 * block that carries the free key abort with a message. */
static PZ_INLINE void pz_small_free(void *p, pz_chunk *c) {
  pz_page *pg = pz_small_page_of(c, p);
  pz_block *b = p;
  if (PZ_UNLIKELY(!pg)) pz_small_free_invalid(p);
  pz_heap *h = pz_tls_heap;
  if (pz_opt(PZ_OPT_CHECKS)) {
    if (PZ_UNLIKELY(pz_block_index(pg, p) < 0)) pz_small_free_invalid(p);
    if (PZ_UNLIKELY((b->key | 2) == pz_xc_key)) pz_small_confirm_double_free(h, pg, b);
  }
  if (PZ_DEBUG) pz_debug_poison(b, pg->block_size);
  if (PZ_LIKELY(atomic_load_explicit(&pg->heap, memory_order_relaxed) == h)) {
    b->key = pz_free_key;
    b->link = pz_link_encode(b, pg->local_free);
    pg->local_free = b;
    h->stats.free_calls++;
    if (PZ_UNLIKELY(--pg->used == 0)) pz_small_free_slow(h, pg, b, PZ_FREE_EMPTY);
    else if (PZ_UNLIKELY(pg->in_full)) pz_small_free_slow(h, pg, b, PZ_FREE_UNFULL);
    return;
  }
  pz_small_free_slow(h, pg, b, PZ_FREE_REMOTE);
}

/* ==================================================================== large/large.c */
PZ_HIDDEN void *pz_large_alloc(size_t size, size_t align, bool zero);
PZ_HIDDEN void pz_large_free(void *p);
PZ_HIDDEN void *pz_large_realloc(void *p, size_t size);
PZ_HIDDEN size_t pz_large_usable(const void *p);
/* The program's memory calls, made as asked and then served or kept out of
 * our way (large/mmap.c): mmap (PREZERO_MMAP), madvise, ioctl
 * (UFFDIO_REGISTER), mlockall, munlockall. */
PZ_HIDDEN void *pz_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
PZ_HIDDEN int pz_madvise(void *p, size_t len, int advice);
PZ_HIDDEN int pz_ioctl(int fd, unsigned long request, void *arg);
PZ_HIDDEN int pz_mlockall(int flags);
PZ_HIDDEN int pz_mlock(const void *p, size_t len, unsigned flags); /* mlock2; mlock with flags 0 */
PZ_HIDDEN int pz_munlockall(void);
PZ_HIDDEN int pz_prlimit(pid_t pid, int resource, const void *new_limit, void *old_limit);
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
/* large/uffd.c: the userfaultfd service. Register [p, p+len): first writes
 * of its whole 2 MiB blocks get ready huge pages from node's pool. False when
 * it cannot be served (no service here, the range is not private anonymous,
 * or the program registered it itself). */
PZ_HIDDEN bool pz_uffd_register(void *p, size_t len, unsigned node);
/* Our registrations overlapping [p, p+len), or all of them, go (the
 * kernel answers those faults from then on). */
PZ_HIDDEN void pz_uffd_unregister(const void *p, size_t len);
PZ_HIDDEN void pz_uffd_unregister_all(void);
/* Move ready chunks into the whole 2 MiB blocks of [p, p+len) (nothing
 * present yet) now, from the first; returns bytes moved (MAP_POPULATE). */
PZ_HIDDEN size_t pz_uffd_fill(void *p, size_t len, unsigned node);
/* The program's MADV_POPULATE_WRITE over [p, p+len): ready chunks moved
 * into the whole blocks of our ranges there that hold nothing yet, before
 * the kernel populates the rest; returns bytes moved. */
PZ_HIDDEN size_t pz_uffd_populate(void *p, size_t len);
PZ_HIDDEN void pz_uffd_init(void);
PZ_HIDDEN void pz_uffd_postfork(bool child);
/* Why served mmaps will not use userfaultfd here (NULL: they will). */
PZ_HIDDEN const char *pz_uffd_why_not(void);

/* ==================================================================== stats.c */
struct pz_gstats {
  _Atomic size_t large_allocs, large_frees, large_bytes_live;
  _Atomic size_t calloc_large_skipped, calloc_large_zeroed;
  _Atomic size_t realloc_moved_pages, realloc_in_place, realloc_copied;
  _Atomic size_t oom;
  _Atomic size_t mmap_served, mmap_moved_bytes;
  _Atomic size_t uffd_mappings, uffd_faults, uffd_moved_bytes, uffd_ahead_bytes, uffd_copied_bytes,
      uffd_fallbacks;
};
PZ_HIDDEN extern struct pz_gstats pz_gstats;
PZ_HIDDEN void pz_stats_collect(struct prezero_stats *st);
PZ_HIDDEN void pz_stats_print_fd(int fd);
/* The summary pz_stats_print_fd writes, of given figures (prezero-info
 * prints another process's snapshot with it). */
PZ_HIDDEN void pz_stats_format(int fd, const struct prezero_stats *st, const char *version, int pid,
                               const char *zeroing);

/* The published snapshot: the statistics as of a recent moment, in a
 * fixed-size struct of our own that another process reads without our help
 * (prezero-info --pid: it finds the exported symbol `prezero_snapshot` in
 * libprezero.so's dynamic symbol table and reads it with process_vm_readv).
 * Its layout is an ABI between the library and prezero-info: fixed-width
 * fields; any change bumps PZ_SNAP_VERSION.
 *
 * Writers: a pool worker after a pass or before it leaves (at most once a
 * second, and less often when collecting is slow, to stay under 1% of a
 * CPU; never waiting for a lock: pz_snapshot_refresh_worker) and every
 * prezero_stats_get(). Nothing else refreshes it: an idle process (no
 * worker running) keeps its last snapshot, and prezero-info shows its age.
 *
 * Synchronization: `seq` is a seqlock. A writer moves it from even to odd
 * with a compare-and-swap (a busy writer makes the other give up: there is
 * never a wait), writes, and stores seq + 2 (release). A reader reads seq,
 * the struct, seq again, and keeps the copy if both are the same even
 * value. seq 0: never published (the header fields are static data). */
#define PZ_SNAP_MAGIC 0x313050414e535a50ull /* "PZSNAP01" in memory */
#define PZ_SNAP_VERSION 1
#define PZ_SNAP_STATES 8 /* room for PZ_CS__COUNT */
enum { PZ_SNAP_FROM_WORKER = 1, PZ_SNAP_FROM_STATS_GET = 2 };
struct pz_snap_node {
  uint32_t node_id;    /* the kernel's node number */
  int32_t workers;     /* worker threads running now (-2: could not start) */
  uint64_t chunks[PZ_SNAP_STATES]; /* free and used chunks by enum pz_chunk_state */
  uint64_t reserve;    /* chunks prezero_reserve() asked to keep ready */
  uint64_t mem_total;  /* the node's MemTotal, bytes (0 unknown) */
  uint64_t zeroed_bytes, populated_bytes, worker_ns, busy_waits;
  uint32_t exact;      /* 0: the node lock was busy, figures read without it */
  uint32_t pad;
};
struct pz_snapshot {
  uint64_t magic;   /* PZ_SNAP_MAGIC */
  uint32_t version; /* PZ_SNAP_VERSION */
  uint32_t size;    /* sizeof (struct pz_snapshot) */
  uint64_t seq;     /* the seqlock: odd while written, 0 never published */
  char lib_version[16];   /* prezero_version() */
  int32_t pid;            /* getpid() when taken (a forked child holds its parent's) */
  uint32_t source;        /* PZ_SNAP_FROM_* */
  uint64_t taken_mono_ns; /* CLOCK_MONOTONIC when taken */
  uint64_t taken_real_ns; /* CLOCK_REALTIME when taken */
  uint64_t collect_ns;    /* how long taking it took */
  uint64_t published;     /* snapshots published so far */
  uint64_t worker_skipped; /* worker refreshes given up: the heap list lock was busy */
  uint32_t nnodes;         /* pools (entries of nodes[] in use) */
  uint32_t machine_nodes;
  char zeroing[24];        /* how workers zero ("inline only": PREZERO_ZERO=0) */
  struct prezero_stats stats; /* from a worker: anon_*, pool_resident/huge_bytes are 0
                               * (they need a file descriptor; see stats.c) */
  struct pz_snap_node nodes[PZ_MAX_NODES];
};
PZ_EXPORT extern struct pz_snapshot prezero_snapshot;
/* From a worker that is awake anyway (after a pass, or about to leave):
 * refresh the snapshot if the last one is a second old; never waits. */
PZ_HIDDEN void pz_snapshot_refresh_worker(void);
/* In a forked child: a parent's writer interrupted by fork left seq odd. */
PZ_HIDDEN void pz_snapshot_postfork_child(void);

/* ==================================================================== api/init.c */
PZ_HIDDEN extern _Atomic int pz_init_state; /* 0 none, 1 running, 2 done */
PZ_HIDDEN void pz_init_slow(void);
static inline void pz_ensure_init(void) {
  if (PZ_UNLIKELY(atomic_load_explicit(&pz_init_state, memory_order_acquire) != 2))
    pz_init_slow();
}


/* api/api.c: the implementation behind both prefixes. */
PZ_HIDDEN void *pz_malloc(size_t size);
PZ_HIDDEN void pz_free(void *p);
PZ_HIDDEN void *pz_calloc(size_t n, size_t size);
PZ_HIDDEN void *pz_realloc(void *p, size_t size);
PZ_HIDDEN void *pz_reallocarray(void *p, size_t n, size_t size);
PZ_HIDDEN int pz_posix_memalign(void **out, size_t align, size_t size);
PZ_HIDDEN void *pz_aligned_alloc(size_t align, size_t size);
PZ_HIDDEN void *pz_memalign(size_t align, size_t size);
PZ_HIDDEN void *pz_valloc(size_t size);
PZ_HIDDEN void *pz_pvalloc(size_t size);
PZ_HIDDEN size_t pz_usable_size(const void *p);
PZ_HIDDEN void pz_free_sized(void *p, size_t size);
PZ_HIDDEN void pz_free_aligned_sized(void *p, size_t align, size_t size);
PZ_HIDDEN int pz_trim(size_t pad);

#endif
