/* prezero: a malloc replacement that serves calloc and large allocations from
 * memory that is already resident and known to be zero.
 *
 * Preload it (LD_PRELOAD=libprezero.so) or link it (-lprezero): either way it
 * replaces malloc, free and the rest of the C allocation API. The functions
 * below are the same allocator under explicit names, plus what only prezero
 * offers (statistics). See prezero(3) / README.md for the environment
 * variables that tune it.
 */
#ifndef PREZERO_H
#define PREZERO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PREZERO_API __attribute__((visibility("default")))

#define PREZERO_VERSION_MAJOR 0
#define PREZERO_VERSION_MINOR 1
#define PREZERO_VERSION_PATCH 0

/* Same contracts as the C library functions of the same name without the
 * prefix (including errno values). */
PREZERO_API void *prezero_malloc(size_t size);
PREZERO_API void prezero_free(void *ptr);
PREZERO_API void *prezero_calloc(size_t nmemb, size_t size);
PREZERO_API void *prezero_realloc(void *ptr, size_t size);
PREZERO_API void *prezero_reallocarray(void *ptr, size_t nmemb, size_t size);
PREZERO_API int prezero_posix_memalign(void **memptr, size_t alignment, size_t size);
PREZERO_API void *prezero_aligned_alloc(size_t alignment, size_t size);
PREZERO_API void *prezero_memalign(size_t alignment, size_t size);
PREZERO_API void *prezero_valloc(size_t size);
PREZERO_API void *prezero_pvalloc(size_t size);
PREZERO_API size_t prezero_malloc_usable_size(void *ptr);
PREZERO_API void prezero_free_sized(void *ptr, size_t size);
PREZERO_API void prezero_free_aligned_sized(void *ptr, size_t alignment, size_t size);
PREZERO_API int prezero_malloc_trim(size_t pad);

/* Statistics: a snapshot summed over all threads on demand. Counters are
 * totals since start unless they say "now". */
struct prezero_stats {
  uint64_t version;              /* PREZERO_STATS_VERSION */
  uint64_t malloc_calls;         /* malloc, calloc, realloc, aligned */
  uint64_t free_calls;
  uint64_t calloc_calls;
  uint64_t calloc_skipped_bytes; /* calloc bytes known zero: no memset */
  uint64_t calloc_zeroed_bytes;  /* calloc bytes we had to memset */
  uint64_t large_allocs;         /* allocations of whole 2 MiB chunks */
  uint64_t large_live_bytes;     /* now */
  uint64_t small_live_bytes;     /* now: bytes in handed-out small blocks */
  uint64_t small_page_bytes;     /* now: bytes in small/medium pages */
  uint64_t reserved_bytes;       /* now: address space reserved in regions */
  uint64_t chunks_untouched;     /* now: free chunks never faulted */
  uint64_t chunks_ready;         /* now: free chunks resident and zero */
  uint64_t chunks_dirty;         /* now: free chunks holding old data */
  uint64_t chunks_used;          /* now: chunks holding allocations */
  uint64_t discarded_bytes;      /* given back to the kernel */
  uint64_t realloc_moved;        /* large reallocs done by moving pages */
  uint64_t realloc_in_place;     /* reallocs grown without moving (medium and large blocks) */
  uint64_t remote_frees;         /* frees from a thread other than the owner */
  uint64_t heaps;                /* thread heaps made (reused on thread exit) */
  uint64_t oom;                  /* requests refused with ENOMEM */
  int thp;                       /* 1: huge pages in use, 0: 4 KiB pages */
  /* version 2: the pre-zeroed pool */
  uint64_t calloc_ready_bytes;     /* large calloc bytes served from READY chunks */
  uint64_t calloc_untouched_bytes; /* ... from never-faulted chunks (a fault, no memset) */
  uint64_t worker_zeroed_bytes;    /* dirty memory zeroed by the workers */
  uint64_t worker_populated_bytes; /* untouched memory pre-faulted by the workers */
  uint64_t worker_cpu_ns;          /* CPU time the workers used */
  uint64_t workers;                /* worker threads running now */
  uint64_t busy_waits;             /* allocations that waited for a worker batch */
  uint64_t anon_bytes;             /* now: resident anonymous memory of the process */
  uint64_t anon_huge_bytes;        /* now: of which in transparent huge pages */
  /* version 3: returning memory, huge-page coverage of the pool */
  uint64_t released_bytes;         /* idle memory given back (decay, pressure, trim) */
  uint64_t refaulted_bytes;        /* given-back memory faulted in again since */
  uint64_t pressure_events;        /* times the workers found memory short and shrank the pool */
  uint64_t pool_resident_bytes;    /* now: resident memory in prezero's chunks */
  uint64_t pool_huge_bytes;        /* now: of which mapped by huge pages */
  int huge_source;                 /* how the two above were measured: 1 PAGEMAP_SCAN, 2 smaps, 0 not */
  /* version 4: mmaps */
  uint64_t mmap_served;            /* MAP_POPULATE mmaps that got ready chunks (PREZERO_MMAP) */
  uint64_t mmap_ready_bytes;       /* ... bytes moved in ready */
  uint64_t faults_injected;        /* OS calls failed on purpose (PREZERO_FAULTS, debug build) */
  /* version 5: first touches of served mmaps answered by userfaultfd (PREZERO_UFFD) */
  uint64_t uffd_mappings;          /* ranges registered (mmaps, MADV_HUGEPAGE) */
  uint64_t uffd_faults;            /* faults the handler answered */
  uint64_t uffd_moved_bytes;       /* ... by moving ready huge pages in */
  uint64_t uffd_ahead_bytes;       /* always 0: nothing is moved in ahead of a touch (kept for the ABI) */
  uint64_t uffd_copied_bytes;      /* ... with nothing ready: by copying zeros in (4 KiB pages) */
  uint64_t uffd_fallbacks;         /* ... by zero pages (read faults), or one 4 KiB page as the kernel does */
  /* version 6: the page size of fresh memory (PREZERO_COLD_PAGES) */
  uint64_t cold_small_bytes;       /* fresh chunk bytes handed out with 4 KiB pages, which faulted faster */
  uint64_t fault_huge_ns;          /* the workers' last measurement: ns to fault 2 MiB as a huge page (0: none) */
  uint64_t fault_small_ns;         /* ... and as 512 4 KiB pages */
};
#define PREZERO_STATS_VERSION 6

/* Fault [ptr, ptr+len) in (writable, resident) with helper threads on the
 * calling thread's NUMA node, without changing its contents (rounded out to
 * whole pages). For memory from prezero or any private writable mapping.
 * Returns 0, or -1 with errno ENOMEM (the kernel refused) or EINVAL. */
PREZERO_API int prezero_populate(void *ptr, size_t len);

/* Give free memory above the low watermark (PREZERO_POOL_MIN or the
 * reserve) back to the kernel now; returns the bytes given back. */
PREZERO_API size_t prezero_trim(void);

/* Fill *st (returns 0), or -1 with errno EINVAL for NULL. Also publishes
 * the figures as the snapshot `prezero-info --pid` reads (which the pool
 * workers otherwise refresh at most once a second while they work). */
PREZERO_API int prezero_stats_get(struct prezero_stats *st);
/* Print a readable summary on stderr (what PREZERO_STATS=1 prints at exit). */
PREZERO_API void prezero_stats_print(void);
/* Ask for `bytes` of ready (resident, zero, huge-page) memory on the calling
 * thread's NUMA node before a critical phase; the pool keeps that much ready
 * until another call changes it (0 clears the reserve on every node). Waits
 * until it is ready.
 * Returns 0, or -1 with errno ENOMEM. */
PREZERO_API int prezero_reserve(size_t bytes);
/* "major.minor.patch" */
PREZERO_API const char *prezero_version(void);

#ifdef __cplusplus
}
#endif
#endif
