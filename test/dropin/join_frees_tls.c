/* join-frees-tls: a thread joins threads while free() is called under
 * glibc's stack-cache lock.
 *
 * Hazard: when a joined thread's stack pushes glibc's stack cache over its
 * limit (40 MiB), pthread_join frees the cached stacks' TLS (their DTVs,
 * small callocs pthread_create made) with that lock held. If such a free
 * empties a small-heap chunk while the heap keeps a spare, prezero gives
 * the chunk back and, with no pool worker running, starts one:
 * pthread_create takes the same stack-cache lock, and the thread waits for
 * itself for ever (every signal blocked: only SIGKILL ends it).
 *
 * glibc: the joins return. The creator thread T arranges its heap so: one
 * chunk of 300-byte blocks ending with K threads' DTVs, another chunk of
 * 300-byte blocks (a spare once freed), then frees all but one block, waits
 * 2 s (no worker running), joins the K threads, and joins three threads
 * with 64 MiB stacks (the cache overflows; the DTVs are freed under the
 * lock). Found by a cold review; the test hangs (watchdog) on the build
 * before the fix. */
#include "dropin.h"

#include <pthread.h>

#define PER_CHUNK (204 * 31) /* 300-byte blocks (class 320) in one chunk's 31 64-KiB pages */
#define K 10
static pthread_barrier_t bar;
static void *waiter(void *a) {
  pthread_barrier_wait(&bar);
  return a;
}
static void *T(void *a) {
  (void)a;
  static void *blk[3 * PER_CHUNK];
  int n1 = PER_CHUNK - K, n2 = PER_CHUNK + 1;
  for (int i = 0; i < n1; i++) blk[i] = malloc(300);
  pthread_t t[K];
  pthread_barrier_init(&bar, NULL, K + 1);
  for (int i = 0; i < K; i++)
    if (pthread_create(&t[i], NULL, waiter, NULL) != 0) skip("pthread_create failed");
  for (int i = 0; i < n2; i++) blk[n1 + i] = malloc(300);
  for (int i = 0; i < n1 + n2 - 1; i++) free(blk[i]);
  sleep_ms(2000); /* no pool worker running now */
  dropin_step = "joining threads whose TLS glibc frees under its stack-cache lock";
  pthread_barrier_wait(&bar);
  for (int i = 0; i < K; i++) pthread_join(t[i], NULL);
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setstacksize(&at, 64 << 20);
  for (int r = 0; r < 3; r++) {
    pthread_barrier_destroy(&bar);
    pthread_barrier_init(&bar, NULL, 2);
    pthread_t b;
    if (pthread_create(&b, &at, waiter, NULL) != 0) skip("pthread_create (64 MiB stack) failed");
    pthread_barrier_wait(&bar);
    pthread_join(b, NULL);
  }
  free(blk[n1 + n2 - 1]);
  return NULL;
}

int main(void) {
  dropin_name = "join-frees-tls";
  watchdog(30);
  pthread_t t;
  if (pthread_create(&t, NULL, T, NULL) != 0) skip("pthread_create failed");
  pthread_join(t, NULL);
  /* and the pool still works: a large free and calloc (a worker may start now) */
  char *p = calloc(1, 64 * MiB);
  if (!p) fail("calloc(64 MiB) after the joins failed");
  else {
    p[12345] = 1;
    free(p);
    p = calloc(1, 64 * MiB);
    if (!p || p[12345]) fail("calloc(64 MiB) again: not zero");
    free(p);
  }
  return dropin_result();
}
