/* uffd-handler-deadlock: a first touch of a large mmap from a signal
 * handler that interrupted malloc must not hang.
 *
 * Hazard: profilers write samples into a big mmap'd buffer from a SIGPROF
 * handler, without calling malloc. If that handler runs while the thread is
 * inside a large malloc/free (an allocator holding its pool lock there), and
 * the touched page of the buffer is still missing, the allocator's own fault
 * handling must not need the lock the interrupted thread holds. prezero
 * answers first touches of a served mmap (>= 32 MiB, where the kernel would
 * use huge pages: THP "always", or MADV_HUGEPAGE in "madvise" mode) from a
 * userfaultfd handler thread that takes chunks from the pool: if it waited
 * for the pool lock, the faulting thread would wait for the handler and the
 * handler for the lock the faulting thread holds.
 *
 * glibc/the kernel: a page fault is served by the kernel (a 4 KiB page, or
 * with MADV_HUGEPAGE a huge page zeroed on the spot); nothing waits for
 * user space; the program finishes.
 *
 * The test, twice: (1) a plain 1 GiB mapping (served by prezero only in THP
 * "always" mode); (2) a 1 GiB mapping advised MADV_HUGEPAGE right after the
 * mmap, which prezero serves in "madvise" mode too: under prezero the run
 * fails if it did not register it (prezero_stats_get: uffd_mappings), where
 * userfaultfd with UFFDIO_MOVE is usable (else that case is skipped). Each
 * time: the pool is warmed (so there are ready huge pages to move in;
 * PREZERO_POOL_MIN in meson.build too); one thread loops malloc(4 MiB) /
 * touch one byte / free; a per-thread POSIX timer (SIGEV_THREAD_ID) sends it
 * SIGPROF every 100 us; the handler writes one byte into the next untouched
 * 2 MiB block of the mapping, but only when the signal interrupted malloc or
 * free (a flag the loop sets around the calls): samples taken elsewhere
 * cannot show the hazard, and each first touch costs a fault, so spending
 * the 512 blocks there makes the test deterministic (on a prezero that
 * waits for the lock it hangs within the first few blocks, every run). It
 * runs for 2 s or until every block was touched, then checks each touched
 * block holds its byte and the rest of its page reads zero. A hang (the
 * watchdog, 20 s per case: 10x the expected time) fails it. */
#include "dropin.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>

#define MAP_LEN (1 * GiB)
#define BLOCKS (MAP_LEN / HPAGE)

static char *map;
static atomic_size_t next_block;
static atomic_size_t signals;
static atomic_bool stop;
static atomic_int worker_tid;
static atomic_size_t loops;
static volatile sig_atomic_t in_alloc; /* the worker is inside malloc or free */
static const char *case_name = "";

static void on_prof(int sig) {
  (void)sig;
  atomic_fetch_add_explicit(&signals, 1, memory_order_relaxed);
  if (!in_alloc) return; /* samples elsewhere prove nothing: spend the blocks where it matters */
  size_t b = atomic_load_explicit(&next_block, memory_order_relaxed);
  if (b >= BLOCKS) return;
  atomic_store_explicit(&next_block, b + 1, memory_order_relaxed); /* only this thread gets it */
  map[b * HPAGE + (b % 512) * PAGE] = (char)(b | 1);
}

static void *worker(void *arg) {
  (void)arg;
  sigset_t prof;
  sigemptyset(&prof);
  sigaddset(&prof, SIGPROF);
  pthread_sigmask(SIG_UNBLOCK, &prof, NULL); /* created with it blocked, as every other thread */
  atomic_store(&worker_tid, (int)syscall(SYS_gettid));
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    in_alloc = 1;
    char *p = malloc(4 * MiB);
    in_alloc = 0;
    if (p) {
      p[(loops % 1024) * PAGE] = 1;
      in_alloc = 1;
      free(p);
      in_alloc = 0;
    }
    atomic_fetch_add_explicit(&loops, 1, memory_order_relaxed);
  }
  return NULL;
}

static void report(char *buf, size_t size) {
  if (!atomic_load(&worker_tid)) {
    snprintf(buf, size, "%s: before the SIGPROF loop started", case_name);
    return;
  }
  snprintf(buf, size, "%s: the thread that took SIGPROF is stuck after %zu malloc/free loops, %zu blocks touched "
           "from the handler (a malloc/free and a signal-handler first touch should finish in ~2 s)",
           case_name, atomic_load(&loops), atomic_load(&next_block));
}

/* One run over a fresh 1 GiB mapping, advised MADV_HUGEPAGE or not. */
static void run(bool advise) {
  case_name = advise ? "(2) MADV_HUGEPAGE mapping" : "(1) plain mapping";
  atomic_store(&next_block, 0);
  atomic_store(&signals, 0);
  atomic_store(&stop, false);
  atomic_store(&worker_tid, 0);
  atomic_store(&loops, 0);
  in_alloc = 0;
  watchdog(20);
  warm_pool(256 * MiB, 1500);
  struct served sv;
  served_begin(&sv);
  map = advise ? anon_map_huge(MAP_LEN) : anon_map(MAP_LEN);
  if (!map) skip("%s: mmap(1 GiB)%s: %s", case_name, advise ? " + madvise(MADV_HUGEPAGE)" : "", strerror(errno));
  if (advise && !served_check("the 1 GiB MADV_HUGEPAGE mapping", &sv, 1)) {
    munmap(map, MAP_LEN);
    return;
  }

  /* only the worker takes SIGPROF (the timer targets it; blocked elsewhere) */
  pthread_t t;
  if (pthread_create(&t, NULL, worker, NULL) != 0) skip("pthread_create failed");
  while (!atomic_load(&worker_tid)) sched_yield();

  struct sigevent sev;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = SIGPROF;
  sev._sigev_un._tid = atomic_load(&worker_tid);
  timer_t timer;
  if (timer_create(CLOCK_MONOTONIC, &sev, &timer) != 0) skip("timer_create(SIGEV_THREAD_ID): %s", strerror(errno));
  struct itimerspec its = {.it_interval = {0, 100000}, .it_value = {0, 100000}};
  timer_settime(timer, 0, &its, NULL);

  double t0 = now_s();
  while (now_s() - t0 < 2.0 && atomic_load(&next_block) < BLOCKS) sleep_ms(10);
  struct itimerspec off = {{0, 0}, {0, 0}};
  timer_settime(timer, 0, &off, NULL);
  atomic_store(&stop, true);
  pthread_join(t, NULL); /* hangs (watchdog) if the worker is stuck in a fault */
  timer_delete(timer);

  size_t touched = atomic_load(&next_block);
  note("%s: %zu signals, %zu malloc/free loops, %zu blocks touched from the handler in %.2f s", case_name,
       atomic_load(&signals), atomic_load(&loops), touched, now_s() - t0);
  served_note(case_name, &sv);
  for (size_t b = 0; b < touched; b++) {
    size_t at = b * HPAGE + (b % 512) * PAGE;
    if (map[at] != (char)(b | 1)) {
      fail("%s: block %zu: expected byte %d, read %d", case_name, b, (char)(b | 1), map[at]);
      break;
    }
    if (map[at + 1] != 0 || map[at + PAGE - 1] != 0) {
      fail("%s: block %zu: expected the bytes after the handler's to read 0, read %d and %d", case_name, b,
           map[at + 1], map[at + PAGE - 1]);
      break;
    }
  }
  if (touched == 0) fail("%s: expected the SIGPROF handler to touch at least one block, it touched 0", case_name);
  munmap(map, MAP_LEN);
}

int main(void) {
  dropin_name = "uffd-handler-deadlock";
  hang_report = report;

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_prof;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPROF, &sa, NULL);
  sigset_t prof;
  sigemptyset(&prof);
  sigaddset(&prof, SIGPROF);
  pthread_sigmask(SIG_BLOCK, &prof, NULL);

  run(false);
  run(true);
  alarm(0);
  return dropin_result();
}
