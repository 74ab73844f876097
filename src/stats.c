/* Statistics: per-thread counters (plain increments in the heap, summed on
 * demand), pool counters (under the pool lock), and a few global atomics on
 * slow paths. Printing formats into a stack buffer: safe at exit. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

struct pz_gstats pz_gstats;

/* Resident anonymous memory and how much of it is in huge pages: the
 * kernel's own account (smaps_rollup, one read, no allocation). */
static size_t field_kb(const char *text, const char *name) {
  const char *p = strstr(text, name);
  if (!p) return 0;
  p += strlen(name);
  while (*p == ' ') p++;
  size_t v = 0;
  while (*p >= '0' && *p <= '9') v = v * 10 + (size_t)(*p++ - '0');
  return v;
}

static void read_smaps(struct prezero_stats *st) {
  char buf[2048];
  if (pz_os_read_file("/proc/self/smaps_rollup", buf, sizeof buf) <= 0) return;
  st->anon_bytes = field_kb(buf, "\nAnonymous:") << 10;
  st->anon_huge_bytes = field_kb(buf, "\nAnonHugePages:") << 10;
}

void pz_stats_collect(struct prezero_stats *st) {
  memset(st, 0, sizeof *st);
  st->version = PREZERO_STATS_VERSION;
  struct pz_heap_stats hs;
  size_t used, pages, nheaps;
  pz_heaps_stats(&hs, &used, &pages, &nheaps);
  struct pz_pool_stats ps;
  pz_chunk_stats(&ps);
  size_t large = atomic_load(&pz_gstats.large_allocs);
  st->malloc_calls = hs.malloc_calls + large;
  st->free_calls = hs.free_calls + hs.remote_frees + atomic_load(&pz_gstats.large_frees);
  st->calloc_skipped_bytes = hs.calloc_skipped_bytes + atomic_load(&pz_gstats.calloc_large_skipped);
  st->calloc_zeroed_bytes = hs.calloc_zeroed_bytes + atomic_load(&pz_gstats.calloc_large_zeroed);
  st->large_allocs = large;
  st->large_live_bytes = atomic_load(&pz_gstats.large_bytes_live);
  st->small_live_bytes = used;
  st->small_page_bytes = pages;
  st->reserved_bytes = ps.reserved_bytes;
  st->calloc_ready_bytes = ps.node.zero_from_ready;
  st->calloc_untouched_bytes = ps.node.zero_from_untouched;
  st->worker_zeroed_bytes = ps.node.zeroed_bytes;
  st->worker_populated_bytes = ps.node.populated_bytes;
  st->worker_cpu_ns = ps.node.worker_ns;
  st->workers = ps.workers;
  st->busy_waits = ps.node.busy_waits;
  st->discarded_bytes = ps.node.discarded_bytes;
  read_smaps(st);
  st->mmap_served = atomic_load(&pz_gstats.mmap_served);
  st->faults_injected = pz_faults_injected();
  st->mmap_ready_bytes = atomic_load(&pz_gstats.mmap_moved_bytes);
  st->uffd_mappings = atomic_load(&pz_gstats.uffd_mappings);
  st->uffd_faults = atomic_load(&pz_gstats.uffd_faults);
  st->uffd_moved_bytes = atomic_load(&pz_gstats.uffd_moved_bytes);
  st->uffd_ahead_bytes = atomic_load(&pz_gstats.uffd_ahead_bytes);
  st->uffd_copied_bytes = atomic_load(&pz_gstats.uffd_copied_bytes);
  st->uffd_fallbacks = atomic_load(&pz_gstats.uffd_fallbacks);
  st->released_bytes = ps.node.released_bytes;
  st->refaulted_bytes = ps.node.refaulted_bytes;
  st->pressure_events = ps.node.pressure_events;
  if (ps.pagemap_scan) {
    st->pool_resident_bytes = ps.resident_bytes;
    st->pool_huge_bytes = ps.huge_bytes;
    st->huge_source = 1;
  } else if (st->anon_bytes) { /* older kernels: the process's figures (smaps_rollup) */
    st->pool_resident_bytes = st->anon_bytes;
    st->pool_huge_bytes = st->anon_huge_bytes;
    st->huge_source = 2;
  }
  st->chunks_untouched = ps.chunks[PZ_CS_UNTOUCHED];
  st->chunks_ready = ps.chunks[PZ_CS_READY];
  st->chunks_dirty = ps.chunks[PZ_CS_DIRTY];
  st->chunks_used = ps.chunks[PZ_CS_USED] + ps.chunks[PZ_CS_TAIL];
  st->realloc_moved = atomic_load(&pz_gstats.realloc_moved_pages);
  st->realloc_in_place = atomic_load(&pz_gstats.realloc_in_place);
  st->remote_frees = hs.remote_frees;
  st->heaps = nheaps;
  st->oom = atomic_load(&pz_gstats.oom);
  st->thp = pz_opt(PZ_OPT_THP) != PZ_THP_OPT_NEVER && ps.thp_refused == 0 &&
            (pz_kernel.thp_usable || pz_opt(PZ_OPT_THP) == PZ_THP_OPT_ALWAYS);
}

int prezero_stats_get(struct prezero_stats *st) {
  if (!st) {
    errno = EINVAL;
    return -1;
  }
  pz_ensure_init();
  pz_stats_collect(st);
  return 0;
}

static void line(int fd, const char *label, unsigned long long v, const char *unit) {
  char buf[160];
  size_t n;
  if (unit && unit[0] == 'B' && v >= 10 * PZ_MiB)
    n = pz_snprintf(buf, sizeof buf, "  %-28s %12llu MiB\n", label, v >> 20);
  else if (unit && unit[0] == 'B' && v >= 10 * PZ_KiB)
    n = pz_snprintf(buf, sizeof buf, "  %-28s %12llu KiB\n", label, v >> 10);
  else
    n = pz_snprintf(buf, sizeof buf, "  %-28s %12llu%s%s\n", label, v, unit ? " " : "", unit ? unit : "");
  if (write(fd, buf, n < sizeof buf ? n : sizeof buf - 1) < 0) return;
}

void pz_stats_print_fd(int fd) {
  struct prezero_stats st;
  pz_stats_collect(&st);
  char head[128];
  size_t n = pz_snprintf(head, sizeof head, "prezero %s statistics (pid %d, pages: %s, zeroing: %s)\n",
                         prezero_version(), (int)getpid(), st.thp ? "2 MiB THP" : "4 KiB",
                         pz_opt(PZ_OPT_ZERO) ? pz_zero_method_name() : "inline only");
  if (write(fd, head, n) < 0) return;
  line(fd, "malloc calls", st.malloc_calls, NULL);
  line(fd, "free calls", st.free_calls, NULL);
  line(fd, "remote frees", st.remote_frees, NULL);
  line(fd, "calloc bytes known zero", st.calloc_skipped_bytes, "B");
  line(fd, "calloc bytes memset", st.calloc_zeroed_bytes, "B");
  line(fd, "large allocations", st.large_allocs, NULL);
  line(fd, "large bytes live", st.large_live_bytes, "B");
  line(fd, "small bytes live", st.small_live_bytes, "B");
  line(fd, "small page bytes", st.small_page_bytes, "B");
  line(fd, "address space reserved", st.reserved_bytes, "B");
  line(fd, "chunks used", st.chunks_used, NULL);
  line(fd, "chunks free untouched", st.chunks_untouched, NULL);
  line(fd, "chunks free ready (zero)", st.chunks_ready, NULL);
  line(fd, "chunks free dirty", st.chunks_dirty, NULL);
  line(fd, "calloc from ready chunks", st.calloc_ready_bytes, "B");
  line(fd, "calloc from untouched chunks", st.calloc_untouched_bytes, "B");
  line(fd, "zeroed by workers", st.worker_zeroed_bytes, "B");
  line(fd, "pre-faulted by workers", st.worker_populated_bytes, "B");
  line(fd, "worker CPU time (us)", st.worker_cpu_ns / 1000, NULL);
  line(fd, "worker threads", st.workers, NULL);
  line(fd, "waits for a worker batch", st.busy_waits, NULL);
  line(fd, "resident anonymous", st.anon_bytes, "B");
  line(fd, "  of which huge pages", st.anon_huge_bytes, "B");
  line(fd, st.huge_source == 1 ? "pool resident (pagemap)" : "pool resident (smaps)", st.pool_resident_bytes, "B");
  line(fd, "  of which huge pages", st.pool_huge_bytes, "B");
  line(fd, "bytes given back", st.discarded_bytes, "B");
  line(fd, "  idle memory released", st.released_bytes, "B");
  line(fd, "  faulted in again", st.refaulted_bytes, "B");
  line(fd, "memory pressure events", st.pressure_events, NULL);
  line(fd, "mmaps served from the pool", st.mmap_served, NULL);
  line(fd, "  ready bytes moved in", st.mmap_ready_bytes, "B");
  line(fd, "  served by userfaultfd", st.uffd_mappings, NULL);
  line(fd, "  first-touch faults answered", st.uffd_faults, NULL);
  line(fd, "    by moving huge pages in", st.uffd_moved_bytes, "B");
  line(fd, "    by copying zeros in", st.uffd_copied_bytes, "B");
  line(fd, "    by zero pages (reads) or one 4 KiB page", st.uffd_fallbacks, NULL);
  line(fd, "large realloc by mremap", st.realloc_moved, NULL);
  line(fd, "realloc in place", st.realloc_in_place, NULL);
  line(fd, "thread heaps", st.heaps, NULL);
  line(fd, "out of memory", st.oom, NULL);
  if (st.faults_injected) line(fd, "faults injected (debug)", st.faults_injected, NULL);
}
