/* A library whose constructor allocates (and starts a thread) before
 * prezero's own constructor has run: the program links -lprezero -learly,
 * so libearly is initialised first while malloc already resolves to
 * prezero. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

void *early_block;
int early_ok;

static void *thread_fn(void *arg) {
  (void)arg;
  void *p = calloc(100, 10);
  return p;
}

__attribute__((constructor)) static void early_ctor(void) {
  early_block = malloc(1000);
  char *z = calloc(1, 3 << 20);
  pthread_t t;
  void *r = NULL;
  int ok = early_block && z && !z[12345];
  if (pthread_create(&t, NULL, thread_fn, NULL) == 0) {
    pthread_join(t, &r);
    ok = ok && r;
    free(r);
  }
  free(z);
  early_ok = ok;
}
