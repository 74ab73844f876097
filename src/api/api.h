/* The api layer: the entry points behind both symbol prefixes, the
 * statistics that gather every layer's counters, and init. The top: it may
 * include every layer. */
#ifndef PZ_API_H
#define PZ_API_H

#include "small/small.h"
#include "large/large.h"

/* api/stats.c: every layer's counters gathered (prezero_stats_get), and
 * the summary PREZERO_STATS prints. */
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
 * refresh the snapshot if the last one is a second old; never waits. The
 * pool calls it through pz_worker_refresh (pool.h), set at init. */
PZ_HIDDEN void pz_snapshot_refresh_worker(void);
/* In a forked child: a parent's writer interrupted by fork left seq odd. */
PZ_HIDDEN void pz_snapshot_postfork_child(void);

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
