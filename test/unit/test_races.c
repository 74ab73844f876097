/* Races between allocations and the pool workers, driven by a test hook
 * that holds a worker right after it claimed chunks (BUSY): an allocation
 * that needs them takes them over (TAKEN) and gets them zero; fork while a
 * worker holds chunks leaves the child able to allocate them; trim skips
 * them and returns them once the worker is done. The same hook holds a
 * remote free that is delivering a notice, to fork beside it. */
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/api.h"

#define MiB ((size_t)1 << 20)
static sem_t claimed, go;
static _Atomic int hold; /* hold the next claim */

static sem_t noticed;
static _Atomic int slow_notice; /* the next remote-free notice dawdles */

static sem_t may_land, landed;
static _Atomic int hold_notice; /* the next notice waits for may_land */
static _Atomic int hold_collect; /* the next exiting heap waits for landed */

static void hook(int where) {
  if (where == PZ_HOOK_NOTICE_TAKEN && atomic_exchange(&hold_notice, 0)) {
    sem_post(&noticed);
    sem_wait(&may_land);
    return;
  }
  if (where == PZ_HOOK_HEAP_COLLECT && atomic_exchange(&hold_collect, 0)) {
    sem_post(&may_land);
    sem_wait(&landed);
    return;
  }
  if (where == PZ_HOOK_NOTICE_TAKEN && atomic_exchange(&slow_notice, 0)) {
    sem_post(&noticed);
    usleep(200000); /* FREEING is up meanwhile */
    return;
  }
  if (where != PZ_HOOK_WORKER_CLAIMED || !atomic_exchange(&hold, 0)) return;
  sem_post(&claimed);
  sem_wait(&go);
}

static struct pz_node_pool *np0(void) { return &pz_nodes[0]; }

static size_t count(int s) {
  pthread_mutex_lock(&np0()->lock);
  size_t n = np0()->count[s];
  pthread_mutex_unlock(&np0()->lock);
  return n;
}

/* Free a dirty run of n chunks and wait until the worker holds some of it. */
static void worker_holds_dirty(size_t n) {
  char *p = pz_malloc(n * PZ_CHUNK_SIZE);
  assert_non_null(p);
  memset(p, 0xab, n * PZ_CHUNK_SIZE);
  atomic_store(&hold, 1);
  pz_free(p); /* a run of several chunks wakes a worker */
  assert_int_equal(sem_wait(&claimed), 0);
  assert_true(count(PZ_CS_BUSY) > 0);
}

static void release_worker(void) {
  sem_post(&go);
  for (int i = 0; i < 2000 && count(PZ_CS_BUSY) + count(PZ_CS_TAKEN); i++) usleep(1000);
  assert_int_equal(count(PZ_CS_BUSY), 0);
  assert_int_equal(count(PZ_CS_TAKEN), 0);
}

static int setup(void **state) {
  (void)state;
  /* the pool under test is node 0's: run on its CPUs */
  pz_ensure_init();
  pz_os_pin_node(0);
  sem_init(&claimed, 0, 0);
  sem_init(&go, 0, 0);
  sem_init(&noticed, 0, 0);
  sem_init(&may_land, 0, 0);
  sem_init(&landed, 0, 0);
  pz_ensure_init();
  pz_test_hook = hook;
  return 0;
}

/* Wake the waiting allocation until it has taken the worker's chunks
 * over (TAKEN), then let the worker finish. */
static void *nudge_then_release(void *arg) {
  (void)arg;
  for (int i = 0; i < 2000 && count(PZ_CS_TAKEN) == 0; i++) {
    pthread_mutex_lock(&np0()->lock);
    pthread_cond_broadcast(&np0()->done);
    pthread_mutex_unlock(&np0()->lock);
    usleep(1000);
  }
  sem_post(&go);
  return NULL;
}

static size_t free_chunks(void) {
  return count(PZ_CS_UNTOUCHED) + count(PZ_CS_READY) + count(PZ_CS_DIRTY);
}

static void allocation_takes_over_busy_chunks(void **state) {
  (void)state;
  const size_t n = 16;
  char *p = pz_malloc(n * PZ_CHUNK_SIZE);
  assert_non_null(p);
  memset(p, 0xab, n * PZ_CHUNK_SIZE);
  /* take every other free chunk, so that the only run of n is p's */
  size_t nfill = free_chunks();
  void **fill = calloc(nfill, sizeof *fill);
  for (size_t i = 0; i < nfill; i++) {
    fill[i] = pz_chunk_alloc(1, 0, 0, PZ_MK_LARGE, NULL, NULL);
    assert_non_null(fill[i]);
  }
  assert_int_equal(free_chunks(), 0);
  atomic_store(&hold, 1);
  pz_free(p);
  assert_int_equal(sem_wait(&claimed), 0);
  assert_true(count(PZ_CS_BUSY) > 0 && count(PZ_CS_BUSY) < n);
  size_t waits0 = np0()->st.busy_waits;
  pthread_t t;
  pthread_create(&t, NULL, nudge_then_release, NULL);
  unsigned char *q = pz_calloc(1, n * PZ_CHUNK_SIZE);
  pthread_join(t, NULL);
  assert_ptr_equal(q, p); /* the same run: the busy part was handed over */
  for (size_t i = 0; i < n * PZ_CHUNK_SIZE; i += 512)
    if (q[i]) fail_msg("byte %zu of the taken-over run is 0x%x, not zero", i, q[i]);
  assert_true(np0()->st.busy_waits > waits0);
  assert_int_equal(count(PZ_CS_BUSY), 0);
  assert_int_equal(count(PZ_CS_TAKEN), 0);
  pz_free(q);
  for (size_t i = 0; i < nfill; i++) pz_chunk_free(fill[i]);
  free(fill);
  pz_chunk_trim(0);
}

static void *release_later(void *arg) { /* if the allocation waits for the worker, free it after 3 s */
  (void)arg;
  struct timespec d = {3, 0};
  nanosleep(&d, NULL);
  if (atomic_exchange(&hold, 0) == 0 && count(PZ_CS_BUSY)) sem_post(&go);
  return NULL;
}

static void allocation_steals_chunks_being_prefaulted(void **state) {
  (void)state;
  const size_t n = 16;
  pz_chunk_trim(0);
  /* every free chunk taken but a run of n untouched ones */
  char *p = pz_chunk_alloc(n, 0, 0, PZ_MK_LARGE, NULL, NULL);
  assert_non_null(p);
  size_t nfill = free_chunks();
  void **fill = calloc(nfill, sizeof *fill);
  for (size_t i = 0; i < nfill; i++) assert_non_null(fill[i] = pz_chunk_alloc(1, 0, 0, PZ_MK_LARGE, NULL, NULL));
  pz_chunk_free(p);
  pz_chunk_trim(0); /* back to untouched */
  assert_int_equal(count(PZ_CS_UNTOUCHED), n);
  /* a reserve makes the worker pre-fault them; hold it there */
  atomic_store(&hold, 1);
  pthread_mutex_lock(&np0()->lock);
  np0()->reserve = n;
  pthread_cond_signal(&np0()->work);
  pthread_mutex_unlock(&np0()->lock);
  pz_workers_start(0);
  assert_int_equal(sem_wait(&claimed), 0);
  size_t busy = count(PZ_CS_BUSY);
  assert_true(busy > 0);
  pthread_t t;
  pthread_create(&t, NULL, release_later, NULL);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  unsigned char *q = pz_calloc(1, n * PZ_CHUNK_SIZE); /* takes the held chunks at once */
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  assert_ptr_equal(q, p);
  assert_true(secs < 2.0); /* did not wait for the held worker (which would take 3 s) */
  assert_int_equal(count(PZ_CS_BUSY), 0);
  memset(q, 0x3c, n * PZ_CHUNK_SIZE); /* the program writes while the worker is still "populating" */
  sem_post(&go);
  pthread_join(t, NULL);
  for (int i = 0; i < 2000 && np0()->st.populated_bytes == 0; i++) usleep(1000);
  usleep(20000);
  for (size_t i = 0; i < n * PZ_CHUNK_SIZE; i += 4096)
    if (q[i] != 0x3c) fail_msg("the worker's completion changed byte %zu of a stolen chunk", i);
  pthread_mutex_lock(&np0()->lock);
  np0()->reserve = 0;
  pthread_mutex_unlock(&np0()->lock);
  assert_int_equal(count(PZ_CS_READY), 0); /* the completion left the stolen chunks alone */
  pz_free(q);
  for (size_t i = 0; i < nfill; i++) pz_chunk_free(fill[i]);
  free(fill);
  pz_chunk_trim(0);
}

static void fork_while_worker_holds_chunks(void **state) {
  (void)state;
  worker_holds_dirty(16);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) { /* the worker did not come along: its chunks are dirty again, usable */
    int bad = count(PZ_CS_BUSY) != 0 || count(PZ_CS_TAKEN) != 0;
    unsigned char *q = pz_calloc(1, 16 * PZ_CHUNK_SIZE);
    for (size_t i = 0; q && i < 16 * PZ_CHUNK_SIZE; i += 4096) bad |= q[i] != 0;
    _exit(q && !bad ? 0 : 1);
  }
  int st;
  waitpid(pid, &st, 0);
  release_worker();
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  pz_chunk_trim(0);
}

/* fork while another thread delivers a remote-free notice (FREEING up on a
 * full page, its block not landed yet): fork waits for it to land, so the
 * child can free into that page (it used to spin there for ever). */
static void *alloc_page_full(void *arg) { /* its heap owns the page, then is abandoned */
  void **b = arg;
  for (int i = 0; i < 40; i++) b[i] = pz_malloc(4096);
  return NULL;
}
static void *free_one(void *p) {
  pz_free(p); /* this thread has no heap: straight to the page, with the notice */
  return NULL;
}
static void fork_while_a_remote_free_delivers_a_notice(void **state) {
  (void)state;
  void *b[40];
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, alloc_page_full, b), 0);
  pthread_join(t, NULL);
  pz_page *pg = pz_small_page_of(pz_chunk_of(b[0]), b[0]);
  assert_true(pg->in_full);
  assert_true(atomic_load(&pg->xfree) & PZ_XF_DELAYED);
  atomic_store(&slow_notice, 1);
  assert_int_equal(pthread_create(&t, NULL, free_one, b[0]), 0);
  assert_int_equal(sem_wait(&noticed), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(10); /* a hang is the failure */
    pz_free(b[1]);
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  pthread_join(t, NULL);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  for (int i = 1; i < 40; i++) pz_free(b[i]);
}

/* A thread exits while remote frees land in its pages: its heap retires
 * the empty front page of a class, and draining the notices first put a
 * full page of that class back, which retired the same front page (page_unfull
 * retires an empty front page pushed back): retired twice, the second time
 * with its descriptor zeroed, SIGSEGV (bench-mstress: 2 of 30 runs). Pages
 * of few blocks (16 KiB: page_unfull puts them at the front). */
static pz_page *page_of(void *p) { return pz_small_page_of(pz_chunk_of(p), p); }
static sem_t owner_ready, owner_exit;
static void *owner_of_two_full_pages(void *arg) {
  void **out = arg; /* out[0]: a block of P1, out[1]: a block of P2 */
  const size_t bs = 16384;
  void *b[256];
  b[0] = pz_malloc(bs);
  pz_page *p1 = page_of(b[0]);
  size_t r = p1->reserved, n = 2 * r + 1;
  assert_true(r < 64 && n <= 256);
  for (size_t i = 1; i < n; i++) b[i] = pz_malloc(bs);
  pz_page *p2 = page_of(b[r]), *p3 = page_of(b[2 * r]);
  assert_true(p1->in_full && p2->in_full && !p3->in_full && p1 != p2 && p2 != p3);
  /* P1 gets blocks back from its owner: to the front of its class queue,
   * its notice request (DELAYED) still up; one block left out, for another
   * thread to free */
  for (size_t i = 1; i < r; i++) pz_free(b[i]);
  assert_false(p1->in_full);
  assert_true(atomic_load(&p1->xfree) & PZ_XF_DELAYED);
  pz_free(b[2 * r]); /* P3 is empty and not the front: retired */
  out[0] = b[0];
  out[1] = b[r];
  out[2] = (void *)(uintptr_t)r;
  memcpy(&out[3], &b[r + 1], (r - 1) * sizeof(void *));
  sem_post(&owner_ready);
  sem_wait(&owner_exit);
  return NULL; /* the heap is collected: the hook holds it after its drain */
}
static void thread_exit_while_remote_frees_land(void **state) {
  (void)state;
  void *out[3 + 256];
  pthread_t a, b;
  assert_int_equal(pthread_create(&a, NULL, owner_of_two_full_pages, out), 0);
  assert_int_equal(sem_wait(&owner_ready), 0);
  /* another thread starts freeing P1's last block: it takes the notice,
   * and waits there */
  atomic_store(&hold_notice, 1);
  assert_int_equal(pthread_create(&b, NULL, free_one, out[0]), 0);
  assert_int_equal(sem_wait(&noticed), 0);
  /* the owner exits; its heap drains the notices (none yet), then lets
   * the free land (P1 on its delayed stack), and a free into full P2
   * (also delayed), before retiring its empty pages */
  atomic_store(&hold_collect, 1);
  sem_post(&owner_exit);
  pthread_join(b, NULL); /* landed: P1 is empty */
  assert_int_equal(pthread_create(&b, NULL, free_one, out[1]), 0);
  pthread_join(b, NULL);
  sem_post(&landed);
  pthread_join(a, NULL);
  /* the abandoned heap's pages still work: P2's other blocks free, and the
   * size class allocates */
  size_t r = (size_t)(uintptr_t)out[2];
  for (size_t i = 0; i < r - 1; i++) pz_free(out[3 + i]);
  void *q = pz_malloc(16384);
  assert_non_null(q);
  pz_free(q);
}

static void trim_skips_busy_chunks(void **state) {
  (void)state;
  worker_holds_dirty(16);
  size_t busy = count(PZ_CS_BUSY);
  pz_chunk_trim(0); /* gives back what is not held */
  assert_int_equal(count(PZ_CS_BUSY), busy);
  assert_int_equal(count(PZ_CS_DIRTY), 0);
  release_worker(); /* the worker finishes: its chunks are ready */
  assert_int_equal(count(PZ_CS_READY), busy);
  pz_chunk_trim(0);
  assert_int_equal(count(PZ_CS_READY) + count(PZ_CS_DIRTY), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(allocation_takes_over_busy_chunks),
      cmocka_unit_test(allocation_steals_chunks_being_prefaulted),
      cmocka_unit_test(fork_while_worker_holds_chunks),
      cmocka_unit_test(trim_skips_busy_chunks),
      cmocka_unit_test(fork_while_a_remote_free_delivers_a_notice),
      cmocka_unit_test(thread_exit_while_remote_frees_land),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
