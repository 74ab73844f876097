/* fork while other threads allocate: the child must be able to allocate
 * and free at once (and start threads of its own); the parent goes on. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;

static void *churn(void *arg) {
  unsigned s = (unsigned)(uintptr_t)arg;
  void *keep[64] = {0};
  while (!atomic_load(&stop)) {
    s = s * 1103515245 + 12345;
    unsigned i = (s >> 8) % 64;
    free(keep[i]);
    size_t n = (s >> 4) % 3 == 0 ? (s >> 12) % 3000000 : (s >> 12) % 2000;
    keep[i] = (s & 1) ? malloc(n + 1) : calloc(1, n + 1);
    if (keep[i]) memset(keep[i], 1, n + 1);
  }
  for (int i = 0; i < 64; i++) free(keep[i]);
  return NULL;
}

static void *child_thread(void *arg) {
  (void)arg;
  for (int i = 0; i < 10000; i++) free(malloc((size_t)(i % 5000) + 1));
  return malloc(10);
}

static int child_work(void) {
  for (int i = 0; i < 20000; i++) {
    char *p = malloc((size_t)(i % 700) + 1);
    if (!p) return 2;
    memset(p, 2, (size_t)(i % 700) + 1);
    free(p);
  }
  char *big = calloc(1, 32 << 20);
  if (!big || big[12345]) return 3;
  free(big);
  pthread_t t;
  void *r;
  if (pthread_create(&t, NULL, child_thread, NULL)) return 4;
  pthread_join(t, &r);
  free(r);
  return 0;
}

int main(int argc, char **argv) {
  int forks = argc > 1 && !strcmp(argv[1], "--smoke") ? 40 : 200;
  pthread_t t[3];
  for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1));
  int bad = 0;
  for (int i = 0; i < forks; i++) {
    pid_t pid = fork();
    if (pid == 0) _exit(child_work());
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "fork: child %d failed (status %#x)\n", i, st);
      bad++;
    }
    free(malloc(100)); /* the parent still works */
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
  printf("fork: %d forks while 3 threads allocate: %d failed\n", forks, bad);
  return bad != 0;
}
