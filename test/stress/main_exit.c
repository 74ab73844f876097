/* A program whose main thread ends with pthread_exit() ends when its last
 * thread does; prezero's threads (pool workers, the userfaultfd service)
 * must not be that thread. Before the fix the process lived on for up to
 * 11 s after a 64 MiB block was freed (the workers waited to give memory
 * back), and for ever once the userfaultfd service had started.
 *
 * Each case runs in a fresh process (this program again: a forked child
 * gives its inherited memory back at once): it allocates, touches and frees, optionally
 * maps and touches a large anonymous mapping (served from the pool where
 * the service runs), optionally leaves a thread of its own running a
 * little longer, then calls pthread_exit(). The parent waits at most 5 s
 * for it (glibc: a few ms; the limit is far above any honest run). */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *late(void *a) { /* a program thread that outlives main a little */
  (void)a;
  usleep(200000);
  char *volatile p = malloc(8 << 20);
  memset(p, 1, 8 << 20);
  free(p);
  return NULL;
}

static void child(size_t mib, int map, int thread) {
  char *volatile p = malloc(mib << 20);
  if (!p) _exit(3);
  memset(p, 1, mib << 20);
  free(p);
  if (map) {
    usleep(300000); /* the workers make the freed block ready: mmap is served from it */
    size_t len = (size_t)256 << 20;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) _exit(4);
    madvise(m, len, MADV_HUGEPAGE); /* as VMMs do: served where THP is "madvise" */
    for (size_t i = 0; i < len; i += (size_t)2 << 20) m[i] = 1;
    munmap(m, len);
  }
  if (thread) {
    pthread_t t;
    pthread_create(&t, NULL, late, NULL);
    pthread_detach(t);
  }
  pthread_exit(NULL);
}

int main(int argc, char **argv) {
  if (argc == 5 && !strcmp(argv[1], "child")) child((size_t)atol(argv[2]), atoi(argv[3]), atoi(argv[4]));
  static const struct { size_t mib; int map, thread; } cases[] = {{4, 0, 0}, {64, 0, 0}, {64, 1, 0}, {64, 0, 1}};
  int failures = 0;
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    char a[3][16];
    snprintf(a[0], sizeof a[0], "%zu", cases[c].mib);
    snprintf(a[1], sizeof a[1], "%d", cases[c].map);
    snprintf(a[2], sizeof a[2], "%d", cases[c].thread);
    fflush(stdout);
    double t0 = now();
    pid_t pid = fork();
    if (pid == 0) {
      execl("/proc/self/exe", argv[0], "child", a[0], a[1], a[2], (char *)NULL);
      _exit(5);
    }
    int st = 0;
    pid_t r = 0;
    while ((r = waitpid(pid, &st, WNOHANG)) == 0 && now() - t0 < 5.0) usleep(10000);
    double dt = now() - t0;
    if (r == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
    }
    bool ok = r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    printf("main-exit %zu MiB%s%s: %s in %.2f s\n", cases[c].mib, cases[c].map ? " + mmap" : "",
           cases[c].thread ? " + a later thread" : "", ok ? "ended" : "still running or failed", dt);
    failures += !ok;
  }
  printf("main-exit: %d failures\n", failures);
  return failures != 0;
}
