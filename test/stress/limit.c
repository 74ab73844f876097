/* Memory limits: run inside a cgroup with a memory limit (test/stress/limit.sh
 * makes one) and a pool asked to be far larger than the limit
 * (PREZERO_POOL_MIN=4G PREZERO_POOL_MAX=16G): pre-faulting stays within the
 * head room the limit leaves, the workers shrink the pool when usage nears
 * the limit (another process in the cgroup grows into it), and neither
 * program, whose own data always fits, is killed.
 * Usage: test-limit LIMIT_MIB */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prezero.h"

#define MiB (1024ul * 1024)

static size_t rss(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  size_t kb = 0;
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) kb = strtoul(line + 6, NULL, 10);
  if (f) fclose(f);
  return kb << 10;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  if (argc == 3 && !strcmp(argv[1], "--grow")) { /* the other process */
    size_t want = strtoul(argv[2], NULL, 10) * MiB;
    for (size_t got = 0; got < want; got += 8 * MiB) {
      char *m = mmap(NULL, 8 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) return 3;
      memset(m, 1, 8 * MiB);
      usleep(150000);
    }
    sleep(1);
    return 0;
  }
  size_t limit = strtoul(argv[1], NULL, 10) * MiB, max_rss = 0;
  char *live = calloc(1, 128 * MiB);
  memset(live, 1, 128 * MiB);
  usleep(500000); /* the workers pre-fault toward POOL_MIN meanwhile */
  size_t r = rss();
  if (r > max_rss) max_rss = r;
  /* churn: each round needs 640 MiB live at most; what is freed stays in the pool up to the limits */
  for (int round = 0; round < 12; round++) {
    size_t n = (256 + 32 * (size_t)round) * MiB;
    unsigned char *p = calloc(1, n);
    if (!p) {
      fprintf(stderr, "limit: calloc of %zu MiB failed in round %d\n", n / MiB, round);
      return 1;
    }
    for (size_t i = 0; i < n; i += 4096)
      if (p[i]) {
        fprintf(stderr, "limit: calloc'd memory not zero\n");
        return 1;
      }
    memset(p, round, n);
    r = rss();
    if (r > max_rss) max_rss = r;
    free(p);
    usleep(150000);
  }
  /* another process in the cgroup grows (raw mmap, 8 MiB every 150 ms) to
   * more than the limit leaves beside our pool: our workers must give the
   * pool back before the kernel runs out and kills someone */
  size_t pool_now = rss() - 128 * MiB;
  size_t want = limit - 128 * MiB - 96 * MiB; /* fits only once the pool is given back */
  pid_t pid = fork();
  if (pid == 0) { /* a fresh process (a forked one would share our pool's pages) */
    char arg[32];
    snprintf(arg, sizeof arg, "%zu", want / MiB);
    execl("/proc/self/exe", argv[0], "--grow", arg, (char *)NULL);
    _exit(4);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "limit: the other process (%zu MiB beside our %zu MiB pool) died: status 0x%x\n", want / MiB,
            pool_now / MiB, status);
    return 1;
  }
  struct prezero_stats st;
  prezero_stats_get(&st);
  r = rss();
  printf("limit: cgroup limit %zu MiB, peak RSS %zu MiB, final RSS %zu MiB, pre-faulted %llu MiB, given back %llu MiB, "
         "pressure events %llu\n",
         limit / MiB, max_rss / MiB, r / MiB, (unsigned long long)st.worker_populated_bytes / MiB,
         (unsigned long long)st.discarded_bytes / MiB, (unsigned long long)st.pressure_events);
  if (st.pressure_events == 0 || st.released_bytes == 0) {
    fprintf(stderr, "limit: the workers never saw the pressure (events %llu, released %llu MiB)\n",
            (unsigned long long)st.pressure_events, (unsigned long long)st.released_bytes / MiB);
    return 1;
  }
  if (r > limit - limit / 10) {
    fprintf(stderr, "limit: the pool keeps %zu MiB resident, within 10%% of the limit\n", r / MiB);
    return 1;
  }
  free(live);
  return 0;
}
