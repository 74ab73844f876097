/* Statistics: per-thread counters (plain increments in the heap, summed on
 * demand), pool counters (under the pool lock), and a few global atomics on
 * slow paths. Printing formats into a stack buffer: safe at exit.
 *
 * Also the published snapshot (struct pz_snapshot in internal.h) that
 * prezero-info --pid reads from outside the process. It is written by
 * prezero_stats_get() and by a pool worker that is awake anyway, at most
 * once a second (less often when collecting takes over 10 ms). The worker's collection never waits: it tries the heap
 * list lock (and gives the refresh up when it is busy) and each node lock
 * (reading that node's counters without it when busy), because a thread
 * that holds one of them may be stopped in a fault on program memory (a
 * signal handler touching a served mmap, a program's own userfaultfd), and
 * the worker must never depend on it. It also opens no file: a descriptor
 * appearing at a random moment in a background thread can take the number
 * a program's open() expects (close(0); open("/dev/null")) or be closed
 * under us by a program closing every descriptor; so the figures read from
 * /proc/self (resident anonymous memory, the pool's huge-page coverage)
 * come only from prezero_stats_get() (prezero-info reads /proc/PID itself). */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"

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

/* One node's figures for the snapshot. wait false: the node lock is tried,
 * and when busy the counters are read without it (each a word: a recent
 * value, the set maybe not consistent). */
static void node_figures(unsigned n, struct pz_snap_node *out, bool wait) {
  struct pz_node_pool *np = &pz_nodes[n];
  bool locked = true;
  if (wait) pthread_mutex_lock(&np->lock);
  else locked = pthread_mutex_trylock(&np->lock) == 0;
  memset(out, 0, sizeof *out);
  out->node_id = pz_topo.node_id[n];
  out->mem_total = pz_topo.mem_total[n];
  out->exact = locked;
  for (int k = 0; k < PZ_CS__COUNT && k < PZ_SNAP_STATES; k++)
    out->chunks[k] = __atomic_load_n(&np->count[k], __ATOMIC_RELAXED);
  out->reserve = __atomic_load_n(&np->reserve, __ATOMIC_RELAXED);
  out->zeroed_bytes = __atomic_load_n(&np->st.zeroed_bytes, __ATOMIC_RELAXED);
  out->populated_bytes = __atomic_load_n(&np->st.populated_bytes, __ATOMIC_RELAXED);
  out->worker_ns = __atomic_load_n(&np->st.worker_ns, __ATOMIC_RELAXED);
  out->busy_waits = __atomic_load_n(&np->st.busy_waits, __ATOMIC_RELAXED);
  out->workers = atomic_load(&np->workers);
  if (locked) pthread_mutex_unlock(&np->lock);
}

/* Everything in *st; the per-node figures in nodes[] when not NULL. wait
 * false (a worker): never waits for a lock, opens no file; false when the
 * heap list lock was busy (nothing collected). */
static bool collect(struct prezero_stats *st, struct pz_snap_node *nodes, bool wait) {
  memset(st, 0, sizeof *st);
  st->version = PREZERO_STATS_VERSION;
  struct pz_heap_stats hs;
  size_t used, pages, nheaps;
  if (!pz_heaps_stats(&hs, &used, &pages, &nheaps, wait)) return false;
  struct pz_pool_stats ps;
  pz_chunk_stats(&ps, wait);
  for (unsigned n = 0; nodes && n < pz_topo.nnodes; n++) node_figures(n, &nodes[n], wait);
  size_t large = atomic_load(&pz_gstats.large_allocs);
  st->malloc_calls = hs.malloc_calls + large;
  size_t heapless = atomic_load(&pz_gstats.heapless_frees);
  st->free_calls = hs.free_calls + hs.remote_frees + heapless + atomic_load(&pz_gstats.large_frees);
  st->calloc_calls = hs.calloc_calls + atomic_load(&pz_gstats.calloc_large);
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
  if (wait) read_smaps(st);
  st->mmap_served = atomic_load(&pz_gstats.mmap_served);
  st->faults_injected = pz_faults_injected();
  st->mmap_ready_bytes = atomic_load(&pz_gstats.mmap_moved_bytes);
  st->uffd_mappings = atomic_load(&pz_gstats.uffd_mappings);
  st->uffd_faults = atomic_load(&pz_gstats.uffd_faults);
  st->uffd_moved_bytes = atomic_load(&pz_gstats.uffd_moved_bytes);
  st->uffd_ahead_bytes = atomic_load(&pz_gstats.uffd_ahead_bytes);
  st->uffd_copied_bytes = atomic_load(&pz_gstats.uffd_copied_bytes);
  st->uffd_fallbacks = atomic_load(&pz_gstats.uffd_fallbacks);
  st->cold_small_bytes = ps.node.cold_small_bytes;
  pz_pool_fault_probe(&st->fault_huge_ns, &st->fault_small_ns);
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
  st->remote_frees = hs.remote_frees + heapless;
  st->heaps = nheaps;
  st->oom = atomic_load(&pz_gstats.oom);
  st->thp = pz_opt(PZ_OPT_THP) != PZ_THP_OPT_NEVER && ps.thp_refused == 0 &&
            (pz_kernel.thp_usable || pz_opt(PZ_OPT_THP) == PZ_THP_OPT_ALWAYS);
  return true;
}

void pz_stats_collect(struct prezero_stats *st) { collect(st, NULL, true); }

/* ---------------------------------------------------------------- the published snapshot */

#define PZ_STR_(x) #x
#define PZ_STR(x) PZ_STR_(x)
PZ_EXPORT struct pz_snapshot prezero_snapshot = {
    .magic = PZ_SNAP_MAGIC,
    .version = PZ_SNAP_VERSION,
    .size = sizeof(struct pz_snapshot),
    .lib_version = PZ_STR(PREZERO_VERSION_MAJOR) "." PZ_STR(PREZERO_VERSION_MINOR) "." PZ_STR(PREZERO_VERSION_PATCH),
};
static const char *zeroing_name(void);
static _Atomic uint64_t worker_next_ns; /* the earliest next refresh by a worker */
static _Atomic uint64_t worker_skipped;

static uint64_t realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Become the writer: seq even -> odd. false: another writer is at it (its
 * figures are as fresh as ours would be) - nobody ever waits here. */
static bool snap_begin(uint64_t *seq) {
  struct pz_snapshot *s = &prezero_snapshot;
  *seq = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);
  if ((*seq & 1) || !__atomic_compare_exchange_n(&s->seq, seq, *seq + 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
    return false;
  __atomic_thread_fence(__ATOMIC_RELEASE); /* the odd seq is seen before any field changes */
  return true;
}

static void snap_end(uint64_t seq, uint64_t t0, uint32_t source) {
  struct pz_snapshot *s = &prezero_snapshot;
  s->pid = (int32_t)getpid();
  s->source = source;
  s->taken_mono_ns = t0;
  s->taken_real_ns = realtime_ns();
  s->collect_ns = pz_os_now_ns() - t0;
  s->published++;
  s->worker_skipped = atomic_load(&worker_skipped);
  s->nnodes = pz_topo.nnodes;
  s->machine_nodes = pz_topo.machine_nodes;
  const char *z = zeroing_name();
  size_t k = 0;
  for (; z[k] && k + 1 < sizeof s->zeroing; k++) s->zeroing[k] = z[k];
  s->zeroing[k] = 0;
  __atomic_store_n(&s->seq, seq + 2, __ATOMIC_RELEASE);
}

void pz_snapshot_refresh_worker(void) {
  uint64_t now = pz_os_now_ns(), next = atomic_load_explicit(&worker_next_ns, memory_order_relaxed);
  if (now < next || !atomic_compare_exchange_strong(&worker_next_ns, &next, now + 1000000000u)) return;
  uint64_t seq;
  if (!snap_begin(&seq)) return;
  struct pz_snapshot *s = &prezero_snapshot;
  struct prezero_stats st;
  if (!collect(&st, s->nodes, false)) { /* the heap list is busy: the next pass tries again */
    atomic_fetch_add(&worker_skipped, 1);
    atomic_store(&worker_next_ns, now);
    __atomic_store_n(&s->seq, seq + 2, __ATOMIC_RELEASE); /* node figures may have changed */
    return;
  }
  s->stats = st;
  snap_end(seq, now, PZ_SNAP_FROM_WORKER);
  /* at most 1% of a CPU: summing the heaps' pages takes ~2 ms for 100
   * threads with 300 MiB of small pages, ~50 ms for 1000 with 3 GiB */
  uint64_t spent = pz_os_now_ns() - now;
  if (spent > 10000000u) atomic_store(&worker_next_ns, now + 100 * spent);
}

void pz_snapshot_postfork_child(void) {
  uint64_t seq = __atomic_load_n(&prezero_snapshot.seq, __ATOMIC_RELAXED);
  if (seq & 1) __atomic_store_n(&prezero_snapshot.seq, seq + 1, __ATOMIC_RELEASE);
}

int prezero_stats_get(struct prezero_stats *st) {
  if (!st) {
    errno = EINVAL;
    return -1;
  }
  pz_ensure_init();
  uint64_t seq, t0 = pz_os_now_ns();
  if (!snap_begin(&seq)) { /* another thread is publishing */
    collect(st, NULL, true);
    return 0;
  }
  collect(st, prezero_snapshot.nodes, true);
  prezero_snapshot.stats = *st;
  snap_end(seq, t0, PZ_SNAP_FROM_STATS_GET);
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

static const char *zeroing_name(void) { return pz_opt(PZ_OPT_ZERO) ? pz_zero_method_name() : "inline only"; }

void pz_stats_print_fd(int fd) {
  struct prezero_stats st;
  pz_stats_collect(&st);
  pz_stats_format(fd, &st, prezero_version(), (int)getpid(), zeroing_name());
}

void pz_stats_format(int fd, const struct prezero_stats *stp, const char *version, int pid, const char *zeroing) {
  const struct prezero_stats st = *stp;
  char head[160];
  size_t n = pz_snprintf(head, sizeof head, "prezero %s statistics (pid %d, pages: %s, zeroing: %s)\n", version,
                         pid, st.thp ? "2 MiB THP" : "4 KiB", zeroing);
  if (write(fd, head, n < sizeof head ? n : sizeof head - 1) < 0) return;
  line(fd, "malloc calls", st.malloc_calls, NULL);
  line(fd, "free calls", st.free_calls, NULL);
  line(fd, "calloc calls", st.calloc_calls, NULL);
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
  line(fd, "fresh chunks with 4 KiB pages", st.cold_small_bytes, "B");
  line(fd, "fault of 2 MiB, huge page (ns)", st.fault_huge_ns, NULL);
  line(fd, "fault of 2 MiB, 4 KiB pages (ns)", st.fault_small_ns, NULL);
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
