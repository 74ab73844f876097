/* mmap is async-signal-safe: a program may call it from a signal handler
 * that interrupted one of its threads inside malloc or free. prezero's mmap
 * must then never wait for a lock that thread holds (found by a cold
 * review: two hangs, 5 of 5 and 3 of 8 runs).
 *
 *   (a) a SIGPROF handler's mmap(1 GiB) fails with ENOMEM under RLIMIT_AS
 *       while the main thread allocates and frees 32 MiB blocks: prezero
 *       retries such an mmap after giving its free memory back;
 *   (b) two threads allocate, reallocate and free (1 byte to 8 MiB) while
 *       a SIGPROF handler maps a fresh page MAP_FIXED over a page of an
 *       8 MiB block the program owns: prezero notes a MAP_FIXED over its
 *       memory.
 *
 * glibc: both finish. Checked: no hang (watchdog), every handler mmap
 * either succeeds or fails with ENOMEM, the owned block's replaced pages
 * read zero where written last by the handler. */
#include <pthread.h>
#include <sys/resource.h>
#include <sys/time.h>

#include "dropin.h"

static volatile long nsig, nbad;
static size_t big = 1 * GiB;
static char *own;
static volatile int mode;

static void on_prof(int sig) {
  (void)sig;
  int e = errno;
  nsig++;
  if (mode == 0) {
    void *p = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) munmap(p, big);
    else if (errno != ENOMEM) nbad++;
  } else {
    unsigned r = (unsigned)nsig * 2654435761u;
    char *at = own + (r % 1024) * PAGE;
    void *m = mmap(at, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (m != at || *(volatile char *)at != 0) nbad++;
  }
  errno = e;
}

static long vmsize_kb(void) {
  char buf[4096];
  if (read_file("/proc/self/status", buf, sizeof buf) < 0) return -1;
  char *v = strstr(buf, "VmSize:");
  return v ? atol(v + 7) : -1;
}

static void *churn(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  char *keep[16] = {0};
  for (long i = 0; i < 20000; i++) {
    int k = rand_r(&seed) % 16;
    size_t sz = rand_r(&seed) % 4 == 0 ? (size_t)(rand_r(&seed) % 8 + 1) * MiB : (size_t)(rand_r(&seed) % 5000 + 1);
    if (keep[k] && (rand_r(&seed) & 1)) {
      char *q = realloc(keep[k], sz);
      if (q) keep[k] = q, q[0] = q[sz - 1] = 1;
    } else if (keep[k]) {
      free(keep[k]);
      keep[k] = NULL;
    } else if ((keep[k] = rand_r(&seed) & 1 ? calloc(1, sz) : malloc(sz)) != NULL) {
      keep[k][0] = keep[k][sz - 1] = 1;
    }
  }
  for (int k = 0; k < 16; k++) free(keep[k]);
  return NULL;
}

static void timer(long us) {
  struct itimerval it = {{0, us}, {0, us}};
  setitimer(ITIMER_PROF, &it, NULL);
}

int main(void) {
  dropin_name = "signal-handler-mmap";
  watchdog(60);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_prof;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGPROF, &sa, NULL);

  /* (a) in a child: the address-space limit stays there */
  pid_t pid = fork();
  if (pid == 0) {
    watchdog(30);
    void *w = malloc(32 * MiB);
    memset(w, 1, 32 * MiB);
    free(w);
    struct rlimit rl = {(rlim_t)vmsize_kb() * 1024 + 512 * MiB, (rlim_t)vmsize_kb() * 1024 + 512 * MiB};
    setrlimit(RLIMIT_AS, &rl);
    mode = 0;
    timer(200);
    /* for 1.5 s (the work is not measured: glibc with MALLOC_PERTURB_
     * writes every block it hands out) */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < 100000; i++) {
      clock_gettime(CLOCK_MONOTONIC, &t);
      if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > 1500000000L) break;
      char *p = malloc(32 * MiB);
      if (p) p[0] = p[32 * MiB - 1] = 1;
      free(p);
    }
    timer(0);
    if (nbad) fail("(a) %ld handler mmaps failed with an error other than ENOMEM", nbad);
    printf("signal-handler-mmap: (a) %ld signals, each an mmap of 1 GiB past RLIMIT_AS\n", nsig);
    fflush(stdout);
    _exit(dropin_result());
  }
  int st;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st)) fail("(a) the child: status 0x%x", st);

  /* (b) */
  char *b = malloc(8 * MiB + PAGE);
  own = (char *)(((uintptr_t)b + PAGE - 1) & ~(uintptr_t)(PAGE - 1));
  mode = 1;
  pthread_t t[2];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1));
  timer(500);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  timer(0);
  if (nbad) fail("(b) %ld MAP_FIXED mappings over the program's block failed or did not read zero", nbad);
  printf("signal-handler-mmap: (b) %ld signals, each a MAP_FIXED page over the program's own block\n", nsig);
  free(b);
  return dropin_result();
}
