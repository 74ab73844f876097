/* The os layer: the only code that makes system calls. Primitives return
 * 0 or an errno value and never allocate; the hook table is what fault
 * injection replaces. Also: the kernel probe, NUMA topology, zeroing, and
 * the metadata memory every layer above takes its structures from.
 * Includes only internal.h. */
#ifndef PZ_OS_H
#define PZ_OS_H

#include "internal.h"

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
/* vm.overcommit_memory=0 (heuristic): the kernel refuses a private
 * writable mapping larger than RAM + swap, and so glibc's malloc of that
 * size fails; ours commits reserved memory, which the kernel does not
 * check, so prezero refuses it itself (NULL + ENOMEM, as glibc). */
PZ_HIDDEN bool pz_os_overcommit_refuses(size_t bytes);
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
/* At most half of [p, p+len) resident (mincore; a page in swap counts as
 * absent, which is why the caller drops such memory, MADV_DONTNEED, rather
 * than take it for zero). Freed memory the program hardly touched is made
 * zero that way: writing zeros would fault in the rest (a thread's heap
 * chunk with 200 KiB used: 2 MiB of RSS), and memset a range it never
 * touched (calloc after malloc + free of 4 GiB: 2.9 s, 4 GiB of RSS). */
PZ_HIDDEN bool pz_os_mostly_absent(void *p, size_t len);
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
/* [p, p+len) is wholly mapped, readable and writable, by private anonymous
 * memory (no file, not shared), per /proc/self/maps (read with a stack
 * buffer: no allocation; async-signal-safe calls only). False when it
 * cannot tell. */
PZ_HIDDEN bool pz_os_range_private_anon(const void *p, size_t len);
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
PZ_HIDDEN int pz_thread_spawn(void *(*fn)(void *), void *arg, size_t stack);
/* The main thread has ended (pthread_exit: the process goes on). */
PZ_HIDDEN void pz_main_exited(void);
PZ_HIDDEN bool pz_main_has_exited(void);
PZ_HIDDEN void pz_threads_postfork_child(void);
/* true when the main thread has ended and every thread left is one of
 * ours: they leave then (a stat of /proc/self/task; no descriptor). */
PZ_HIDDEN bool pz_only_own_threads(void);
/* The calling thread's name (prctl: no file). */
PZ_HIDDEN void pz_thread_name(const char *name);

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
/* The same without opening a file (sysinfo(2)), when half the machine or
 * more is free (free + buffers, a lower bound of MemAvailable, is enough
 * then); false: only /proc/meminfo can tell. For background threads: their
 * open() takes the lowest free descriptor, which a program that closes
 * descriptors it does not own (close_range) and opens its own can see, or
 * lose to them (test dropin-descriptors-reopened). */
PZ_HIDDEN bool pz_probe_memory_nofile(size_t *total, size_t *available);
/* Now: the limiting cgroup's usage in bytes, 0 without a limit. */
PZ_HIDDEN size_t pz_probe_cgroup_usage(void);
/* Alignment of ranges given back: 2 MiB or the page reporting order's. */
PZ_HIDDEN size_t pz_release_align(void);
PZ_HIDDEN bool pz_probe_collapse(void); /* tries it once (a 2 MiB collapse) */
/* The system's THP mode now (an administrator may change it at run time). */
PZ_HIDDEN enum pz_thp_mode pz_probe_thp_now(void);


/* ==================================================================== meta.c
 * Internal metadata memory (heaps, region arrays, map leaves): bump
 * allocation from mapped blocks, never freed. Zeroed. */
PZ_HIDDEN void *pz_meta_alloc(size_t size);
PZ_HIDDEN void pz_meta_prefork(void);
PZ_HIDDEN void pz_meta_postfork(void); /* parent and child */

#endif
