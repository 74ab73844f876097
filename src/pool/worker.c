/* Pool workers: background threads, one or more per NUMA node, that keep
 * the node's READY chunks between the watermarks by zeroing DIRTY chunks
 * (streaming stores, os/zero.c) and pre-faulting UNTOUCHED ones.
 *
 * Contract:
 *   - A worker touches only chunks it has claimed (BUSY): never memory that
 *     has been handed out, never memory someone else is changing.
 *   - Idle workers block on the node's condition variable (an idle process
 *     spends no CPU on them) and exit after a second without work; they are
 *     restarted on the next work. Detached: they never keep the process
 *     alive; at exit they stop with it.
 *   - They run at nice 19 (see worker_main for why not SCHED_IDLE), pinned to their node's
 *     CPUs within the process's own CPU set, in the process's cgroup (so
 *     their work is charged to the program), optionally rate-limited
 *     (PREZERO_ZERO_RATE).
 *   - Started lazily on the first work, outside every allocator lock, with
 *     signals blocked; after fork, restarted lazily in the child.
 *   - After a pass, and before leaving, a worker refreshes the published
 *     statistics snapshot (prezero-info --pid) if it is a second old,
 *     through pz_worker_refresh (the api layer's, set at init): only then,
 *     so an idle process is never woken for it; the refresh never waits
 *     for a lock and opens no file (api/stats.c).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#include "pool/pool-internal.h"

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

struct pz_plan pz_worker_plan(const struct pz_plan_in *in) {
  struct pz_plan p = {PZ_PLAN_IDLE, 0};
  if (!in->batch) return p;
  if (in->forked && in->dirty) { /* measured: 40 forks of a busy parent took 22 s zeroing, 0.4 s discarding */
    p.what = PZ_PLAN_DISCARD;
    p.n = in->dirty; /* all of it, at once: cheap, no copy */
    return p;
  }
  size_t free = in->ready + in->dirty;
  /* the high watermark is never below the low one: with PREZERO_POOL_MIN
   * (or a reserve) above PREZERO_POOL_MAX, what the workers pre-faulted up
   * to the minimum was given back after the decay and pre-faulted again,
   * round after round (a VMM's PREZERO_POOL_MIN=<guest size>, 2G against
   * the default 1G maximum: 11 GiB faulted and 9 GiB given back in 8 s) */
  size_t max_free = in->max_free > in->min_ready ? in->max_free : in->min_ready;
  size_t over_max = free > max_free ? free - max_free : 0;
  size_t over_min = free > in->min_ready ? free - in->min_ready : 0;
  size_t give = in->pressure ? min_sz(over_min, in->idle_any)
                             : min_sz(over_max, in->idle_decay) > min_sz(over_min, in->idle_retain)
                                   ? min_sz(over_max, in->idle_decay)
                                   : min_sz(over_min, in->idle_retain);
  if (give && (give >= in->report_batch || in->pressure)) {
    p.what = PZ_PLAN_RELEASE;
    p.n = give;
    return p;
  }
  size_t max_ready = in->pressure ? in->min_ready : max_free;
  if (in->dirty && in->ready < max_ready) { /* recycling: freed memory becomes ready again */
    p.what = PZ_PLAN_ZERO;
    p.n = min_sz(max_ready - in->ready, in->dirty);
  } else if (in->untouched && in->ready < in->min_ready && in->headroom) { /* reserve: fault fresh memory in */
    p.what = PZ_PLAN_POPULATE;
    p.n = min_sz(min_sz(in->min_ready - in->ready, in->untouched), in->headroom);
  }
  if (p.n > in->batch) p.n = in->batch;
  return p;
}

void (*volatile pz_test_hook)(int where);
void (*volatile pz_worker_refresh)(void);

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Fresh memory's page size (PREZERO_COLD_PAGES=auto). A chunk the pool
 * has nothing resident for faults in when the program first touches it;
 * which page size faults faster depends on the machine and the moment: in
 * a VM whose freed memory goes back to the host, a huge page comes from a
 * block the host took back and costs 5.6-7.2 ms per 2 MiB, 4 KiB pages
 * 0.71-0.85 ms, and a huge page the guest freed a moment ago 0.26-0.86 ms
 * (measured on the development VM; bare metal: huge pages ~3x faster).
 * So the workers measure both, side by side in two scratch mappings, at
 * most once a second while they work, and fresh chunks get huge pages only
 * while the last measurement is recent (PROBE_TTL_NS) and says huge pages
 * were faster: never slower than the kernel's 4 KiB faults, which are what
 * glibc's mmap'd memory gets (THP "madvise"). */
#define PROBE_EVERY_NS 1000000000ull
#define PROBE_TTL_NS 2000000000ull
/* The probe's two scratch chunks are resident for a moment (4 MiB of peak
 * RSS): only in a process that holds 32 times that in chunks already (a
 * smaller one keeps 4 KiB pages, as under glibc; measured: cache-scratch's
 * peak RSS 1.8 -> 7.9 MiB with a probe at any size) */
#define PROBE_MIN_CHUNKS 64
static _Atomic uint64_t probe_at_ns, probe_huge_ns, probe_small_ns;

/* Write one byte per 4 KiB page of 2 MiB in m (a fresh scratch chunk): ns. */
static uint64_t probe_touch(char *m) {
  uint64_t t0 = pz_os_now_ns();
  for (size_t off = 0; off < PZ_CHUNK_SIZE; off += PZ_PAGE_SIZE) ((volatile char *)m)[off] = 1;
  return pz_os_now_ns() - t0 + 1;
}

static void probe_fault_costs(const struct pz_node_pool *np) {
  if (pz_opt(PZ_OPT_COLD_PAGES) != PZ_COLD_AUTO || !pool_thp_on() || np->pressure || np->tight ||
      atomic_load_explicit(&pz_mcl_future, memory_order_relaxed)) /* locked: faulted at mmap */
    return;
  size_t held = 0;
  for (int st = PZ_CS_READY; st <= PZ_CS_BUSY; st++) held += __atomic_load_n(&np->count[st], __ATOMIC_RELAXED);
  if (held < PROBE_MIN_CHUNKS) return;
  uint64_t now = pz_os_now_ns(), at = atomic_load_explicit(&probe_at_ns, memory_order_relaxed);
  if (at && now - at < PROBE_EVERY_NS) return;
  atomic_store_explicit(&probe_at_ns, now, memory_order_relaxed); /* a failed probe waits too */
  /* both mapped at once: neither gets the pages the other just freed */
  size_t len = 3 * PZ_CHUNK_SIZE;
  char *m = pz_os.mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return;
  /* not for a child forked meanwhile: nobody there would unmap it */
  pz_os.madvise(m, len, MADV_DONTFORK);
  char *huge = (char *)pz_align_up((uintptr_t)m, PZ_CHUNK_SIZE), *small = huge + PZ_CHUNK_SIZE;
  if (pz_os.madvise(huge, PZ_CHUNK_SIZE, MADV_HUGEPAGE) == 0 &&
      pz_os.madvise(small, PZ_CHUNK_SIZE, MADV_NOHUGEPAGE) == 0) {
    uint64_t h = probe_touch(huge), s = probe_touch(small);
    atomic_store_explicit(&probe_huge_ns, h, memory_order_relaxed);
    atomic_store_explicit(&probe_small_ns, s, memory_order_relaxed);
    atomic_store_explicit(&probe_at_ns, pz_os_now_ns(), memory_order_release);
  }
  pz_os.munmap(m, len);
}

bool pz_pool_cold_small_pages(void) {
  long long o = pz_opt(PZ_OPT_COLD_PAGES);
  if (o != PZ_COLD_AUTO) return o == PZ_COLD_SMALL;
  uint64_t at = atomic_load_explicit(&probe_at_ns, memory_order_acquire);
  uint64_t h = atomic_load_explicit(&probe_huge_ns, memory_order_relaxed);
  uint64_t s = atomic_load_explicit(&probe_small_ns, memory_order_relaxed);
  return !(h && h < s && pz_os_now_ns() - at < PROBE_TTL_NS);
}

void pz_pool_fault_probe(uint64_t *huge_ns, uint64_t *small_ns) {
  *huge_ns = atomic_load_explicit(&probe_huge_ns, memory_order_relaxed);
  *small_ns = atomic_load_explicit(&probe_small_ns, memory_order_relaxed);
}

static void *worker_main(void *arg) {
  pz_thread_name("prezero-zero");
  unsigned node = (unsigned)(uintptr_t)arg;
  struct pz_node_pool *np = &pz_nodes[node];
  pz_os_pin_node(node);
  /* nice 19, not SCHED_IDLE. A process cannot finish exiting until every
   * thread has run once more to die, and a starved low-priority thread can
   * wait long for that on a busy machine (measured: forked children of a
   * busy parent took 20-30 s each to exit with SCHED_IDLE workers, ~0.13 s
   * at nice 19, ~0.02 s at nice 0). Hence also: idle workers exit, and a
   * forked child starts none until it has real work (pool/chunk.c). */
  setpriority(PRIO_PROCESS, (id_t)pz_os_gettid(), 19);
  struct pz_claim c[16];
  bool ok[16];
  for (;;) {
    size_t n = pz_pool_claim(node, c, 16);
    if (n == SIZE_MAX) { /* idle for a while: this worker has left the pool */
      if (pz_worker_refresh) pz_worker_refresh(); /* the figures after the last pass, for prezero-info --pid */
      return NULL;
    }
    if (PZ_UNLIKELY(pz_test_hook != NULL)) pz_test_hook(PZ_HOOK_WORKER_CLAIMED);
    uint64_t cpu0 = thread_cpu_ns(), wall0 = pz_os_now_ns();
    size_t bytes = 0;
    for (size_t k = 0; k < n; k++) {
      char *p = c[k].region->base + (c[k].start << PZ_CHUNK_SHIFT);
      size_t len = c[k].n << PZ_CHUNK_SHIFT;
      if (c[k].discard) {
        ok[k] = pz_pool_give_back(&c[k]);
      } else if (c[k].convert && c[k].from == PZ_CS_UNTOUCHED) {
        ok[k] = pz_pool_commit(&c[k]) && pz_os_hugepage(p, len) == 0 && pz_populate(p, len);
      } else if (c[k].convert) {
        /* went out fresh on 4 KiB pages (they faulted faster then): a huge
         * page again, faulted here, off the program's path; discarded, it
         * reads zero whether the populate works or not */
        ok[k] = pz_os_discard(p, len) == 0;
        if (ok[k]) {
          pz_os_hugepage(p, len);
          pz_populate(p, len);
        } else {
          pz_zero(p, len), ok[k] = true;
        }
      } else if (c[k].from == PZ_CS_DIRTY && pz_kernel.kernel_prezeroes) {
        /* the kernel zeroes freed pages itself: give the chunk back and
         * fault in a page it has already zeroed */
        ok[k] = pz_os_discard(p, len) == 0 && pz_populate(p, len);
        if (!ok[k]) pz_zero(p, len), ok[k] = true;
      } else if (c[k].from == PZ_CS_DIRTY && pz_os_mostly_absent(p, len)) {
        c[k].discard = true; /* given back, not written: see pz_os_mostly_absent */
        ok[k] = pz_pool_give_back(&c[k]);
      } else if (c[k].from == PZ_CS_DIRTY) {
        pz_zero(p, len);
        ok[k] = true;
      } else {
        ok[k] = pz_pool_commit(&c[k]) && pz_populate(p, len);
      }
      bytes += len;
    }
    pz_pool_complete(node, c, n, ok);
    probe_fault_costs(np);
    __atomic_fetch_add(&np->st.worker_ns, thread_cpu_ns() - cpu0, __ATOMIC_RELAXED);
    __atomic_fetch_add(&np->st.worker_passes, 1, __ATOMIC_RELAXED);
    if (pz_worker_refresh) pz_worker_refresh(); /* at most once a second; holds nothing here, waits for nothing */
    uint64_t rate = (uint64_t)pz_opt(PZ_OPT_ZERO_RATE);
    if (rate && bytes) { /* stay under PREZERO_ZERO_RATE bytes per second */
      uint64_t need = (uint64_t)((double)bytes / (double)rate * 1e9), spent = pz_os_now_ns() - wall0;
      if (need > spent) {
        struct timespec ts = {(time_t)((need - spent) / 1000000000u), (long)((need - spent) % 1000000000u)};
        nanosleep(&ts, NULL);
      }
    }
  }
  return NULL;
}

__thread bool pz_tls_no_spawn;
static atomic_bool deferred[PZ_MAX_NODES], any_deferred;

void pz_workers_start_deferred(void) {
  if (PZ_LIKELY(!atomic_load_explicit(&any_deferred, memory_order_relaxed)) || pz_tls_no_spawn) return;
  atomic_store(&any_deferred, false);
  for (unsigned n = 0; n < PZ_MAX_NODES; n++)
    if (atomic_load_explicit(&deferred[n], memory_order_relaxed) && atomic_exchange(&deferred[n], false))
      pz_workers_start(n);
}

bool pz_workers_start(unsigned node) {
  struct pz_node_pool *np = &pz_nodes[node];
  int w = atomic_load_explicit(&np->workers, memory_order_acquire);
  if (PZ_LIKELY(w != 0)) return w > 0 || w == -1; /* running, or being started */
  if (!pz_opt(PZ_OPT_ZERO)) return false;
  if (pz_tls_no_spawn) { /* see pool.h: later, from a thread that may */
    atomic_store(&deferred[node], true);
    atomic_store(&any_deferred, true);
    return false;
  }
  if (atomic_load(&np->fork_defer) > 0) { /* a forked child: only once it has work of its own */
    atomic_fetch_sub(&np->fork_defer, 1);
    return false;
  }
  int expect = 0;
  if (!atomic_compare_exchange_strong(&np->workers, &expect, -1)) return true;
  int started = 0;
  for (long long i = 0; i < pz_opt(PZ_OPT_WORKERS); i++)
    started += pz_thread_spawn(worker_main, (void *)(uintptr_t)node, 256 * PZ_KiB) == 0;
  /* -2: could not start (EAGAIN): callers fall back to zeroing inline */
  atomic_store_explicit(&np->workers, started ? started : -2, memory_order_release);
  return started > 0;
}
