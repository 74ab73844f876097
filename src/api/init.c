/* Initialisation and fork.
 *
 * Init runs on the first call that needs it (a slow path), from static
 * state; the constructor is only an early trigger. The first call may come
 * from the dynamic loader, from libc start-up or from another library's
 * constructor, before ours ran, so nothing here allocates: options are read
 * from `environ` by hand, the kernel probe reads files into stack buffers.
 *
 * Fork: prepare takes every allocator lock in one order (heaps -> pool ->
 * meta), parent and child release them; the child also marks heaps of
 * threads that did not survive the fork as abandoned.
 */

#include <stdlib.h>
#include <sys/auxv.h>
#include <unistd.h>

#include "api/api.h"

extern char **environ;

_Atomic int pz_init_state;
static _Atomic pid_t init_tid;
static bool options_from_env;

static void prefork(void) {
  if (atomic_load(&pz_init_state) != 2) return;
  pz_heaps_prefork();
  pz_pool_prefork();
  pz_meta_prefork();
}
static void postfork_parent(void) {
  if (atomic_load(&pz_init_state) != 2) return;
  pz_meta_postfork();
  pz_pool_postfork(false);
  pz_heaps_postfork(false);
}
static void postfork_child(void) {
  if (atomic_load(&pz_init_state) != 2) return;
  pz_meta_postfork();
  pz_threads_postfork_child();
  pz_pool_postfork(true);
  pz_uffd_postfork(true);
  pz_heaps_postfork(true);
  pz_snapshot_postfork_child();
}

static void load_options(void) {
  bool secure = getauxval(AT_SECURE) != 0;
  options_from_env = environ != NULL;
  pz_options_load(environ, secure);
}

/* The main thread ending with pthread_exit (its thread-specific data
 * destructors run; exit() runs none): our threads look at whether they
 * are all that is left. */
static pthread_key_t main_key;
static void main_thread_exit(void *v) {
  (void)v;
  pz_main_exited();
  pz_pool_wake_workers();
}

static void init_once(void) {
  load_options();
  pz_faults_init();
  pz_probe_kernel();
  pz_topo_init();
  pz_pool_init();
  pz_worker_refresh = pz_snapshot_refresh_worker; /* the pool's workers refresh the stats snapshot */
  pz_uffd_init();
  pz_os_read_limits();
  pz_zero_select((int)pz_opt(PZ_OPT_ZERO_METHOD) - 1);
  if (pz_small_init() != 0) pz_warn("pthread_key_create failed: thread caches are not returned at thread exit");
  if (pz_os_gettid() == getpid() && pthread_key_create(&main_key, main_thread_exit) == 0)
    pthread_setspecific(main_key, &main_key);
  pthread_atfork(prefork, postfork_parent, postfork_child);
}

void pz_init_slow(void) {
  int expect = 0;
  if (atomic_compare_exchange_strong(&pz_init_state, &expect, 1)) {
    atomic_store(&init_tid, pz_os_gettid());
    init_once();
    atomic_store_explicit(&pz_init_state, 2, memory_order_release);
    return;
  }
  if (atomic_load(&init_tid) == pz_os_gettid()) return; /* re-entered from init: go on */
  while (atomic_load_explicit(&pz_init_state, memory_order_acquire) != 2) sched_yield();
}

/* Defined by tools that link the core only to inspect it (prezero-info):
 * they get the probe and options, but no pool preparation at start. */
extern const int pz_inspect_only __attribute__((weak));

__attribute__((constructor)) static void pz_constructor(void) {
  pz_ensure_init();
  if (&pz_inspect_only != NULL) return;
  if (!options_from_env && environ) { /* init ran before environ was set */
    load_options();
    pz_zero_select((int)pz_opt(PZ_OPT_ZERO_METHOD) - 1);
  }
  if (pz_opt(PZ_OPT_VERBOSE)) {
    pz_log("prezero %s: THP %s (pmd %zu), huge pages for chunks: %s, %u cpus", prezero_version(),
           pz_thp_mode_name(pz_kernel.thp_enabled), pz_kernel.pmd_size,
           pz_opt(PZ_OPT_THP) == PZ_THP_OPT_NEVER ? "off (PREZERO_THP=never)"
           : pz_kernel.thp_usable || pz_opt(PZ_OPT_THP) == PZ_THP_OPT_ALWAYS ? "yes"
                                                                           : "no (4 KiB pages)",
           pz_kernel.ncpus);
    pz_log("%u NUMA node(s), MADV_POPULATE_WRITE: %s, zeroing: %s", pz_topo.nnodes,
           pz_kernel.populate_write ? "yes" : "no (touching pages)", pz_zero_method_name());
    pz_options_print();
  }
  pz_pool_prepare();
  if (pz_opt(PZ_OPT_RESERVE) && pz_chunk_reserve((size_t)pz_opt(PZ_OPT_RESERVE)) != 0)
    pz_warn("PREZERO_RESERVE: could not prepare %lld bytes", pz_opt(PZ_OPT_RESERVE));
}

__attribute__((destructor)) static void pz_destructor(void) {
  if (pz_opt(PZ_OPT_STATS)) pz_stats_print_fd(2);
}
