/* rlimit-as: a program under an address-space limit (RLIMIT_AS, `ulimit -v`)
 * can allocate what it could under glibc.
 *
 * Hazard: prezero reserves address space in big regions (a malloc(100)
 * makes VmSize ~0.5-1 GiB) and serves large mmaps from a 2 MiB-aligned
 * over-sized reservation. RLIMIT_AS counts reserved address space, not
 * memory: a program (or a shell script: `ulimit -v 16000; ls`) whose limit
 * glibc leaves room under fails to start or gets ENOMEM.
 *
 * glibc/the kernel: after malloc(100) a small program maps ~2.5 MiB
 * (measured: VmSize 2592 kB, Debian 12, glibc 2.36, x86_64, dynamically
 * linked); every mmap and malloc costs its own size in address space
 * (plus a page of header).
 *
 * The test:
 *   - VmSize after malloc(100) < 20 MiB (glibc: 2.5 MiB; 16 MiB of margin
 *     for other libcs and an allocator's own metadata);
 *   - RLIMIT_AS = VmSize + 800 MiB: mmap(400 MiB) succeeds and can be
 *     written; after munmap, malloc(700 MiB) succeeds and can be written;
 *     then mmap(400 MiB) advised MADV_HUGEPAGE (a mapping prezero serves
 *     in "madvise" mode, its pool holding the freed 700 MiB) succeeds and
 *     can be written; the same in this program re-executed under
 *     RLIMIT_AS = 820 MiB from the start (a limit sized for what the
 *     program uses);
 *   - RLIMIT_AS = 16000 KiB (ulimit -v 16000): /bin/ls (execve with the
 *     environment, so an LD_PRELOAD applies) exits 0;
 *   - RLIMIT_AS = 16000 KiB: this program re-executed as a small workload
 *     (10000 blocks of 16..512 bytes malloc'd, written, freed) exits 0
 *     (glibc: VmSize 5196 kB at its peak; it passes under 8000 KiB). */
#include "dropin.h"

#include <sys/resource.h>

extern char **environ;

#define LIMIT_LS_KIB 16000L
#define LIMIT_WORKLOAD_KIB 16000L
#define LIMIT_BIG_KIB (820L * 1024)

static int workload(void) {
  enum { N = 10000 };
  static char *b[N];
  for (int i = 0; i < N; i++) {
    size_t sz = 16 + (size_t)(i * 7919 % 497);
    b[i] = malloc(sz);
    if (!b[i]) {
      fail("workload under RLIMIT_AS %ld KiB: malloc(%zu) #%d returned NULL (VmSize %ld kB)", LIMIT_WORKLOAD_KIB, sz, i,
           status_kib("VmSize"));
      return 1;
    }
    memset(b[i], i & 0xff, sz);
  }
  long vm = status_kib("VmSize");
  for (int i = 0; i < N; i += 2) free(b[i]);
  for (int i = 0; i < N; i += 2) {
    b[i] = malloc(64);
    if (!b[i]) {
      fail("workload under RLIMIT_AS %ld KiB: malloc(64) after frees returned NULL", LIMIT_WORKLOAD_KIB);
      return 1;
    }
  }
  for (int i = 0; i < N; i++) free(b[i]);
  note("workload under RLIMIT_AS %ld KiB: done, VmSize was %ld kB", LIMIT_WORKLOAD_KIB, vm);
  return 0;
}

/* mmap(400 MiB), written and unmapped; then malloc(700 MiB), written and
 * freed; then mmap(400 MiB) advised MADV_HUGEPAGE (what prezero serves in
 * THP "madvise" mode), written and unmapped. Returns the number of
 * failures. */
static int big_allocations(const char *how, long limit_kib) {
  int before = dropin_failures;
  char *m = mmap(NULL, 400 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    fail("mmap(400 MiB) with %s (%ld kB): expected a mapping, got %s (VmSize %ld kB)", how, limit_kib, strerror(errno),
         status_kib("VmSize"));
  } else {
    for (size_t o = 0; o < 400 * MiB; o += 1 * MiB) m[o] = 1;
    m[400 * MiB - 1] = 1;
    munmap(m, 400 * MiB);
  }
  char *big = malloc(700 * MiB);
  if (!big) {
    fail("malloc(700 MiB) with %s (%ld kB): expected a block, got NULL (%s, VmSize %ld kB)", how, limit_kib,
         strerror(errno), status_kib("VmSize"));
  } else {
    for (size_t o = 0; o < 700 * MiB; o += 1 * MiB) big[o] = 2;
    big[700 * MiB - 1] = 2;
    free(big);
  }
  /* a mapping prezero may serve (MADV_HUGEPAGE), after the free: pool
   * memory moved into it must not count twice, nor the pool's hold on
   * freed memory leave the program without address space */
  struct served sv;
  served_begin(&sv);
  m = mmap(NULL, 400 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    fail("mmap(400 MiB) after malloc(700 MiB)/free, with %s (%ld kB): expected a mapping, got %s (VmSize %ld kB)", how,
         limit_kib, strerror(errno), status_kib("VmSize"));
  } else {
    if (madvise(m, 400 * MiB, MADV_HUGEPAGE) != 0)
      fail("madvise(MADV_HUGEPAGE) on the 400 MiB mapping with %s: expected success, got %s", how, strerror(errno));
    size_t bad = 0;
    for (size_t o = 0; o < 400 * MiB; o += 1 * MiB) {
      bad += m[o + 4096] != 0;
      m[o] = 3;
    }
    m[400 * MiB - 1] = 3;
    for (size_t o = 0; o < 400 * MiB; o += 1 * MiB) bad += m[o] != 3 || m[o + 1] != 0;
    if (bad)
      fail("the 400 MiB MADV_HUGEPAGE mapping with %s: expected 400 bytes 3 and 0 beside them, %zu reads differ", how,
           bad);
    served_note("the 400 MiB MADV_HUGEPAGE mapping", &sv);
    munmap(m, 400 * MiB);
  }
  return dropin_failures - before;
}

/* Runs argv with RLIMIT_AS = limit (soft and hard, as ulimit -v does),
 * stdout to /dev/null; returns the wait status, the first line of its
 * stderr in err. */
static int run_limited(char *const argv[], rlim_t limit, char *err, size_t errsize) {
  int pfd[2];
  if (pipe(pfd) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 1);
    dup2(pfd[1], 2);
    close(pfd[0]);
    struct rlimit rl = {limit, limit};
    if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(125);
    execve(argv[0], argv, environ);
    _exit(127);
  }
  close(pfd[1]);
  size_t got = 0;
  ssize_t n;
  while ((n = read(pfd[0], err + got, errsize - 1 - got)) > 0 && got + 1 < errsize - 1) got += (size_t)n;
  err[got] = 0;
  char *nl = strchr(err, '\n');
  if (nl) *nl = 0;
  close(pfd[0]);
  int st;
  waitpid(pid, &st, 0);
  return st;
}

int main(int argc, char **argv) {
  dropin_name = "rlimit-as";
  if (argc > 1 && !strcmp(argv[1], "workload")) return workload();
  if (argc > 1 && !strcmp(argv[1], "big")) {
    char *p = malloc(100);
    if (p) p[0] = 1;
    return big_allocations("RLIMIT_AS = 820 MiB from the start", LIMIT_BIG_KIB) ? 1 : 0;
  }
  watchdog(60);

  char *p = malloc(100);
  if (!p) skip("malloc(100) returned NULL");
  p[0] = 1;
  long vm = status_kib("VmSize");
  note("VmSize after malloc(100): %ld kB", vm);
  if (vm >= 20 * 1024) fail("VmSize after malloc(100): expected < 20480 kB, got %ld kB", vm);

  /* a limit with 800 MiB to spare */
  struct rlimit old;
  getrlimit(RLIMIT_AS, &old);
  struct rlimit rl = {(rlim_t)vm * 1024 + 800 * MiB, old.rlim_max};
  if (setrlimit(RLIMIT_AS, &rl) != 0) skip("setrlimit(RLIMIT_AS): %s", strerror(errno));
  big_allocations("RLIMIT_AS = VmSize + 800 MiB", (long)(rl.rlim_cur / 1024));
  setrlimit(RLIMIT_AS, &old);

  /* ulimit -v 16000; ls */
  char err[512];
  char *ls[] = {"/bin/ls", "/", NULL};
  if (access(ls[0], X_OK) != 0) {
    note("/bin/ls not found: that case skipped");
  } else {
    int st = run_limited(ls, (rlim_t)LIMIT_LS_KIB * 1024, err, sizeof err);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
      fail("/bin/ls / under RLIMIT_AS %ld KiB (ulimit -v %ld): expected exit 0, got %s%s%s", LIMIT_LS_KIB,
           LIMIT_LS_KIB, st == -1 ? "no child" : wait_desc(st), err[0] ? ": " : "", err);
  }

  /* the same from the start of a process: a limit sized for the program's
   * needs (20 MiB + 800 MiB), this program re-executed */
  char *selfbig[] = {"/proc/self/exe", "big", NULL};
  int stb = run_limited(selfbig, (rlim_t)LIMIT_BIG_KIB * 1024, err, sizeof err);
  if (stb == -1 || !WIFEXITED(stb) || WEXITSTATUS(stb) != 0)
    fail("mmap(400 MiB), malloc(700 MiB), then an advised mmap(400 MiB), in a process started under RLIMIT_AS %ld KiB: "
         "expected exit 0, got %s%s%s",
         LIMIT_BIG_KIB, stb == -1 ? "no child" : wait_desc(stb), err[0] ? ": " : "", err);

  /* a small C workload, this program re-executed */
  char *self[] = {"/proc/self/exe", "workload", NULL};
  int st = run_limited(self, (rlim_t)LIMIT_WORKLOAD_KIB * 1024, err, sizeof err);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fail("a small malloc/free workload under RLIMIT_AS %ld KiB: expected exit 0, got %s%s%s", LIMIT_WORKLOAD_KIB,
         st == -1 ? "no child" : wait_desc(st), err[0] ? ": " : "", err);
  return dropin_result();
}
