/* info-pid: prezero-info --pid PID shows the statistics of a running
 * process that uses prezero, as of a snapshot the process's pool workers
 * refresh (at most once a second, while they work), and says clearly why
 * it cannot (no such process, permission, not prezero, another version).
 *
 * Hazard: the figures come from a snapshot nobody asked for: a worker must
 * refresh it on its own, or prezero-info shows nothing (or an old state) of
 * a program that never calls prezero_stats_get(). This program therefore
 * never calls it (nor mallinfo, malloc_stats): only its workers publish.
 *
 *   test-info-pid PREZERO_INFO FAKE
 *
 * PREZERO_INFO: the prezero-info program; FAKE: test-info-pid-fake, a
 * program that exports a `prezero_snapshot` of another version.
 *
 * 1. Known amounts: NSMALL blocks of SMALL bytes and NLARGE of 8 MiB live,
 *    then a 12 MiB calloc freed (dirty chunks: a worker wakes to zero them).
 *    prezero-info --pid on ourselves, every 200 ms, until malloc calls,
 *    small and large bytes live and the pool's used chunks reach them
 *    (fails after 20 s: a snapshot never refreshed or stale).
 * 2. NLARGE2 more large blocks, and a free to wake a worker again: the
 *    figures must follow (a snapshot refreshed while the process runs, not
 *    once).
 * 2b. 32 MiB written and freed (more than a release batch; written, so
 *    that it is kept), then 5000 more small
 *    blocks while the worker only waits to give the freed chunks back
 *    (RETAIN_MS is long: it wakes, but does no pass): the figures must
 *    follow within 10 s (RETAIN_MS is 20 s: the next pass comes after).
 * 3. Errors: a pid that has exited, a process without prezero (sleep), a
 *    process with a snapshot of another version (FAKE), and one we may not
 *    read (as root: prezero-info run as nobody; else pid 1).
 *
 * Exit 0 pass, 1 fail, 77 skip (prctl/ptrace refused for our own process). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NSMALL 20000
#define SMALL 200
#define NLARGE 24
#define NLARGE2 16
#define LARGE (8ul << 20)
#define CHUNK (2ul << 20)

static const char *info, *fake;
static int failures;

static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("info-pid: FAIL: ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  failures++;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Run prezero-info --pid PID (as uid `as` when >= 0); its stdout and stderr
 * into out; returns its exit status (-1 if it could not run). */
static int run_info(pid_t pid, int as, char *out, size_t cap) {
  int p[2];
  if (pipe(p) != 0) return -1;
  pid_t c = fork();
  if (c < 0) return -1;
  if (c == 0) {
    dup2(p[1], 1);
    dup2(p[1], 2);
    close(p[0]);
    close(p[1]);
    if (as >= 0 && (setgid((gid_t)as) != 0 || setuid((uid_t)as) != 0)) _exit(126);
    char arg[32];
    snprintf(arg, sizeof arg, "%d", (int)pid);
    unsetenv("LD_PRELOAD");
    execl(info, info, "--pid", arg, (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  size_t n = 0;
  ssize_t r;
  while ((r = read(p[0], out + n, cap - 1 - n)) > 0) n += (size_t)r;
  out[n] = 0;
  close(p[0]);
  int st;
  while (waitpid(c, &st, 0) < 0 && errno == EINTR) {}
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A figure of the statistics: "  LABEL   1234[ KiB| MiB]" -> bytes or count; -1 if absent. */
static long long figure(const char *out, const char *label) {
  char key[96];
  snprintf(key, sizeof key, "\n  %s ", label);
  const char *p = strstr(out, key);
  if (!p) return -1;
  p += strlen(key);
  while (*p == ' ') p++;
  char *e;
  long long v = strtoll(p, &e, 10);
  if (e == p) return -1;
  if (!strncmp(e, " MiB", 4)) v <<= 20;
  else if (!strncmp(e, " KiB", 4)) v <<= 10;
  return v;
}

/* chunks in use (heads and tails of runs), summed over the node lines of the pools */
static long long used_chunks(const char *out) {
  long long sum = -1;
  const char *pools = strstr(out, "\npools ");
  for (const char *key = " used "; pools; key = key[1] == 'u' ? " tail " : NULL) {
    for (const char *p = pools; (p = strstr(p, key)); p += 6) sum = (sum < 0 ? 0 : sum) + strtoll(p + 6, NULL, 10);
    if (key[1] == 't') break;
  }
  return sum;
}

static double age(const char *out) {
  const char *p = strstr(out, "as of ");
  return p ? strtod(p + 6, NULL) : -1;
}

/* Poll prezero-info --pid on ourselves until the figures reach the wanted
 * ones; false (and the last output shown) after `secs`. */
static bool wait_figures(const char *phase, long long mallocs, long long small, long long large, long long chunks,
                         double secs) {
  static char out[65536];
  double t0 = now();
  int rc = -1, polls = 0;
  long long m = -1, s = -1, l = -1, u = -1;
  do {
    if (polls++) sleep_ms(200);
    rc = run_info(getpid(), -1, out, sizeof out);
    m = figure(out, "malloc calls");
    s = figure(out, "small bytes live");
    l = figure(out, "large bytes live");
    u = used_chunks(out);
    if (rc == 0 && m >= mallocs && s >= small && l >= large && u >= chunks) {
      printf("info-pid: %s: after %.2f s (%d runs): malloc calls %lld >= %lld, small live %lld >= %lld, "
             "large live %lld >= %lld, used chunks %lld >= %lld; snapshot %.1f s old\n",
             phase, now() - t0, polls, m, mallocs, s, small, l, large, u, chunks, age(out));
      if (age(out) < 0 || age(out) > 5) fail("%s: the snapshot's age is %.1f s", phase, age(out));
      /* the pools' lines: one per pool, adding up to the total */
      const char *pools = strstr(out, "\npools (");
      long npools = pools ? strtol(pools + 8, NULL, 10) : -1, lines = 0;
      for (const char *p = pools; p && (p = strstr(p + 1, "\n  node ")); lines++) {}
      if (npools < 1 || lines != npools) fail("%s: pools (%ld) but %ld node lines", phase, npools, lines);
      if (u != figure(out, "chunks used"))
        fail("%s: the nodes' used chunks add up to %lld, the total says %lld", phase, u, figure(out, "chunks used"));
      if (pools) printf("info-pid: %s", pools + 1);
      return true;
    }
  } while (now() - t0 < secs);
  fail("%s: prezero-info --pid did not show the figures within %.0f s (exit %d; malloc calls %lld, want >= %lld; "
       "small live %lld, want >= %lld; large live %lld, want >= %lld; used chunks %lld, want >= %lld). Its last "
       "output:\n%s",
       phase, secs, rc, m, mallocs, s, small, l, large, u, chunks, out);
  return false;
}

static void expect_error(const char *what, pid_t pid, int as, const char *message) {
  static char out[16384];
  int rc = run_info(pid, as, out, sizeof out);
  if (rc == 1 && strstr(out, message))
    printf("info-pid: %s: exit 1, \"%s\"\n", what, message);
  else
    fail("%s: expected exit 1 and \"%s\"; got exit %d:\n%s", what, message, rc, out);
}

/* a child that runs argv with LD_PRELOAD unset, stopped by kill at the end */
static pid_t spawn(char *const argv[]) {
  int p[2];
  if (pipe(p) != 0) return -1;
  pid_t c = fork();
  if (c == 0) {
    close(p[0]);
    fcntl(p[1], F_SETFD, FD_CLOEXEC);
    unsetenv("LD_PRELOAD");
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 1);
    execv(argv[0], argv);
    _exit(127);
  }
  close(p[1]);
  char b;
  while (read(p[0], &b, 1) < 0 && errno == EINTR) {} /* EOF at exec */
  close(p[0]);
  sleep_ms(100); /* its loader has mapped its objects */
  return c;
}

static void reap(pid_t c) {
  kill(c, SIGKILL);
  waitpid(c, NULL, 0);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc != 3) {
    printf("usage: test-info-pid PREZERO_INFO FAKE\n");
    return 2;
  }
  info = argv[1];
  fake = argv[2];
  /* under kernel.yama.ptrace_scope=1 a sibling may read us only if we say so */
  prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);

  /* 1. known amounts */
  static char *small[NSMALL], *large[NLARGE + NLARGE2];
  for (int i = 0; i < NSMALL; i++) {
    small[i] = malloc(SMALL);
    if (!small[i]) return fail("malloc(%d) failed", SMALL), 1;
    small[i][0] = 1;
  }
  for (int i = 0; i < NLARGE; i++) {
    large[i] = malloc(LARGE);
    if (!large[i]) return fail("malloc(8 MiB) failed"), 1;
    large[i][0] = 1;
  }
  char *c = calloc(1, 12ul << 20);
  if (!c) return fail("calloc failed"), 1;
  c[0] = 1;
  free(c); /* 6 dirty chunks: a worker wakes and zeroes them (a pass) */
  wait_figures("phase 1", NSMALL + NLARGE, (long long)NSMALL * SMALL, (long long)NLARGE * LARGE,
               (long long)NLARGE * (LARGE / CHUNK), 20);

  /* 2. more, and a worker woken again: the snapshot follows */
  sleep_ms(1100); /* past the once-a-second limit */
  for (int i = NLARGE; i < NLARGE + NLARGE2; i++) {
    large[i] = malloc(LARGE);
    if (!large[i]) return fail("malloc(8 MiB) failed"), 1;
    large[i][0] = 1;
  }
  c = calloc(1, 12ul << 20);
  if (!c) return fail("calloc failed"), 1;
  c[0] = 1;
  free(c);
  wait_figures("phase 2", NSMALL + NLARGE + NLARGE2, (long long)NSMALL * SMALL,
               (long long)(NLARGE + NLARGE2) * LARGE, (long long)(NLARGE + NLARGE2) * (LARGE / CHUNK), 20);

  /* 2b. the worker now only waits to give the freed chunks back (RETAIN_MS
   * is long): no pass, yet it is awake, and the snapshot must follow the
   * program (small mallocs never wake a worker) */
  char *volatile w = calloc(1, 32ul << 20); /* 16 chunks freed: more than a release batch to wait for */
  if (!w) return fail("calloc failed"), 1;
  memset(w, 1, 32ul << 20); /* all of it (volatile: not a dead store): memory hardly touched is dropped, not kept */
  free(w);
  sleep_ms(1500); /* the worker zeroes them (a pass), then only waits */
  static char *more[5000];
  for (int i = 0; i < 5000; i++) {
    more[i] = malloc(SMALL);
    if (!more[i]) return fail("malloc(%d) failed", SMALL), 1;
  }
  wait_figures("phase 2b (worker waiting to give memory back)", NSMALL + NLARGE + NLARGE2 + 5000,
               (long long)(NSMALL + 5000) * SMALL, (long long)(NLARGE + NLARGE2) * LARGE,
               (long long)(NLARGE + NLARGE2) * (LARGE / CHUNK), 10);
  for (int i = 0; i < 5000; i++) free(more[i]);

  /* 3. errors */
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  waitpid(gone, NULL, 0);
  expect_error("a process that has exited", gone, -1, "no such process");
  char *sleeper[] = {"/bin/sleep", "30", NULL};
  pid_t s = access(sleeper[0], X_OK) == 0 ? spawn(sleeper) : -1;
  if (s < 0) printf("info-pid: no %s: the case of a process without prezero is not run\n", sleeper[0]);
  if (s > 0) {
    expect_error("a process without prezero (sleep)", s, -1, "does not use prezero");
    reap(s);
  }
  char *faker[] = {(char *)fake, NULL};
  pid_t f = spawn(faker);
  if (f > 0) {
    expect_error("a snapshot of another version", f, -1, "version mismatch");
    reap(f);
  }
  if (geteuid() == 0)
    expect_error("root's process read as nobody", getpid(), 65534, "permission denied");
  else if (getpid() != 1)
    expect_error("pid 1 read by a user", 1, -1, "permission denied");

  for (int i = 0; i < NSMALL; i++) free(small[i]);
  for (int i = 0; i < NLARGE + NLARGE2; i++) free(large[i]);
  printf("info-pid: %s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
