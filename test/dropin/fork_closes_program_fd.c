/* fork-closes-program-fd: the allocator must never close, read, write or
 * add a file descriptor of the program's.
 *
 * Hazard: an allocator that keeps a descriptor of its own (prezero's
 * userfaultfd, opened by the first served large mmap) remembers it by
 * number. A daemon closes every descriptor above 2 (close_range(3, ~0U, 0)),
 * opens its log file, which gets the number the allocator's descriptor had,
 * and forks: prezero's fork handler in the child closes "its userfaultfd" by
 * number, i.e. the child's log, and the child's first write fails with
 * EBADF. Or the allocator's descriptor shows in the program's table, where
 * the program's close_range takes it away from under the allocator.
 *
 * glibc/the kernel: malloc and mmap open no descriptor; the descriptor
 * table is exactly what the program made it; fork copies it.
 *
 * prezero serves a mapping (>= 32 MiB) where the kernel would back it with
 * huge pages: in THP "madvise" mode only after the program's
 * MADV_HUGEPAGE. So each step below uses a plain mapping and one advised
 * MADV_HUGEPAGE right after its mmap; under prezero the run fails if the
 * advised ones were not served (prezero_stats_get: uffd_mappings), where
 * userfaultfd with UFFDIO_MOVE is usable (else the advised steps are
 * skipped with the reason).
 *
 * The test (a daemon's start-up): close every inherited descriptor above 2;
 * served-size mmaps (64 MiB plain, 64 MiB advised; pool warmed) touched on a
 * few pages; close_range(3, ~0U, 0); open a log file (lowest free number);
 * fork: the child maps, advises and touches a 64 MiB mapping of its own,
 * then writes a line to the log (must succeed), the parent sees it. Then,
 * in the parent: new served-size mmaps (plain and advised) read zero and
 * keep what is written; after more mmaps (4 plain, 4 advised) and touches
 * the log's contents and offset are unchanged; /proc/self/fd lists only
 * descriptors the program opened. At every step (parent and child), no
 * descriptor in /proc/self/fd is a userfaultfd ("anon_inode:[userfaultfd]"):
 * the program never opened one. */
#include "dropin.h"

#include <dirent.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define LEN (64 * MiB)

static int close_from(unsigned first) {
  return (int)syscall(SYS_close_range, first, ~0U, 0);
}

/* Descriptors open now, as a bit set over 0..1023 (the listing's own one
 * left out); each one that is a userfaultfd is a failure (`when`). */
static void open_fds(unsigned char set[128], const char *when) {
  memset(set, 0, 128);
  DIR *d = opendir("/proc/self/fd");
  if (!d) return;
  int self = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd == self || fd < 0) continue;
    if (fd < 1024) set[fd / 8] |= (unsigned char)(1u << (fd % 8));
    char link[64], target[256] = "";
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(link, target, sizeof target - 1);
    if (k > 0) target[k] = 0;
    if (strstr(target, "userfaultfd"))
      fail("/proc/self/fd %s: expected no userfaultfd (the program opened none), descriptor %d is %s", when, fd,
           target);
  }
  closedir(d);
}

static void touch_pages(char *p, size_t len, size_t step, char v) {
  for (size_t o = 0; o < len; o += step) p[o] = v;
}

/* A fresh served-size mapping, advised or not, reads zero and keeps what is
 * written (one byte per 2 MiB block). */
static void check_fresh(char *m, const char *what) {
  size_t nonzero = 0;
  for (size_t o = 0; o < LEN; o += 2 * MiB) nonzero += m[o + 4096] != 0;
  if (nonzero) fail("%s: expected 0 non-zero pages, read %zu", what, nonzero);
  touch_pages(m, LEN, 2 * MiB, 7);
  size_t wrong = 0;
  for (size_t o = 0; o < LEN; o += 2 * MiB) wrong += m[o] != 7 || m[o + 1] != 0;
  if (wrong) fail("%s: expected 32 blocks to read 7 then 0, %zu did not", what, wrong);
}

int main(void) {
  dropin_name = "fork-closes-program-fd";
  watchdog(30);
  /* a daemon starts from a clean table: stdin/out/err only */
  if (close_from(3) != 0) skip("close_range(2): %s", strerror(errno));
  warm_pool(256 * MiB, 1500);
  /* the advised steps, when prezero cannot serve here (glibc: true) */
  bool advised = true;

  const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  char path[512];

  /* 1. served-size mappings, touched: an allocator may now hold a descriptor */
  char *m1 = anon_map(LEN);
  if (!m1) skip("mmap(64 MiB): %s", strerror(errno));
  touch_pages(m1, LEN, 8 * MiB, 1);
  struct served sv;
  served_begin(&sv);
  char *h1 = anon_map_huge(LEN);
  if (!h1) skip("mmap(64 MiB) + madvise(MADV_HUGEPAGE): %s", strerror(errno));
  advised = served_check("the first MADV_HUGEPAGE mapping (64 MiB)", &sv, 1);
  touch_pages(h1, LEN, 8 * MiB, 1);
  served_note("the first MADV_HUGEPAGE mapping, touched", &sv);
  unsigned char before[128];
  open_fds(before, "after the first served mmaps");
  for (int fd = 3; fd < 1024; fd++)
    if (before[fd / 8] & (1u << (fd % 8))) note("descriptor %d is open after the first served mmaps (not the program's)", fd);

  /* 2. the daemon closes everything above 2 and opens its log */
  if (close_from(3) != 0) skip("close_range(2): %s", strerror(errno));
  snprintf(path, sizeof path, "%s/dropin-fork-fd-XXXXXX", dir);
  int log = mkstemp(path);
  if (log < 0) skip("mkstemp(%s): %s", path, strerror(errno));
  unlink(path);
  note("the log file got descriptor %d", log);
  unsigned char mine[128];
  open_fds(mine, "after close_range and the log's open");
  /* the mappings made before still work (the program's close_range took
   * nothing from the allocator) */
  for (size_t o = 0; o < LEN; o += 8 * MiB)
    if (m1[o] != 1 || h1[o] != 1) {
      fail("a mapping touched before close_range: expected byte 1 at offset %zu MiB, read %d (plain) and %d "
           "(advised)", o >> 20, m1[o], h1[o]);
      break;
    }
  size_t fresh = 0;
  for (size_t o = 4 * MiB; o < LEN; o += 8 * MiB) {
    h1[o + 100] = 3; /* blocks never touched before: first writes after close_range */
    fresh += h1[o + 100] == 3 && h1[o] == 0;
  }
  if (fresh != LEN / (8 * MiB))
    fail("the advised mapping after close_range: expected %zu fresh blocks to read 3 and 0, %zu did",
         LEN / (8 * MiB), fresh);

  /* 3. fork: the child maps and touches an advised mapping (prezero's
   * service starts again there), then writes its line */
  const char line[] = "child: hello from the log\n";
  pid_t pid = fork();
  if (pid < 0) skip("fork: %s", strerror(errno));
  if (pid == 0) {
    watchdog(20);
    dropin_name = "fork-closes-program-fd (child)";
    struct served csv;
    served_begin(&csv);
    char *c = anon_map_huge(LEN);
    if (c && advised) {
      served_check("the child's MADV_HUGEPAGE mapping (64 MiB)", &csv, 1);
      dropin_step = "the child's first writes to its MADV_HUGEPAGE mapping";
      touch_pages(c, LEN, 4 * MiB, 5);
      served_note("the child's MADV_HUGEPAGE mapping, touched", &csv);
    }
    dropin_step = "the child's write to the log";
    unsigned char cset[128];
    open_fds(cset, "in the child after its served mmap");
    for (int fd = 0; fd < 1024; fd++) {
      bool a = cset[fd / 8] & (1u << (fd % 8)), b = mine[fd / 8] & (1u << (fd % 8));
      if (a != b) fail("the child's descriptor %d: expected %s (as in the parent at fork), it is %s", fd,
                       b ? "open" : "closed", a ? "open" : "closed");
    }
    ssize_t n = write(log, line, sizeof line - 1);
    if (n != (ssize_t)(sizeof line - 1))
      fail("the child's write(%d) to its log: expected %zu bytes written, got %zd (%s)", log, sizeof line - 1, n,
           n < 0 ? strerror(errno) : "short");
    _exit(dropin_result());
  }
  int st;
  dropin_step = "waiting for the child";
  waitpid(pid, &st, 0);
  dropin_step = "after the child";
  if (!WIFEXITED(st) || WEXITSTATUS(st) > 1)
    fail("the child that writes to the log: expected exit 0, got %s", wait_desc(st));
  else if (WEXITSTATUS(st) == 1)
    dropin_failures++; /* it said why */
  char got[256] = "";
  ssize_t n = pread(log, got, sizeof got - 1, 0);
  if (n != (ssize_t)(sizeof line - 1) || memcmp(got, line, sizeof line - 1) != 0)
    fail("the log after the child's write: expected %zu bytes (the child's line), read %zd", sizeof line - 1, n);
  off_t off = lseek(log, 0, SEEK_CUR);
  if (off != (off_t)(sizeof line - 1))
    fail("the log's offset after the child's write: expected %zu, got %lld", sizeof line - 1, (long long)off);

  /* 4. more served mmaps and touches: they work, and leave the log alone
   * (compared with what it holds now, so that a failure above is not
   * counted twice) */
  char had[256] = "";
  ssize_t had_n = pread(log, had, sizeof had - 1, 0);
  off_t had_off = lseek(log, 0, SEEK_CUR);
  char *m2 = anon_map(LEN);
  if (!m2) fail("mmap(64 MiB) after close_range: expected a mapping, got %s", strerror(errno));
  else check_fresh(m2, "a new mapping after close_range");
  served_begin(&sv);
  char *h2 = anon_map_huge(LEN);
  if (!h2) {
    fail("mmap(64 MiB) + madvise(MADV_HUGEPAGE) after close_range: expected a mapping, got %s", strerror(errno));
  } else if (advised) {
    served_check("a new MADV_HUGEPAGE mapping after close_range and fork", &sv, 1);
    check_fresh(h2, "a new MADV_HUGEPAGE mapping after close_range");
    served_note("a new MADV_HUGEPAGE mapping after close_range", &sv);
  }
  served_begin(&sv);
  for (int i = 0; i < 8; i++) {
    bool huge = i & 1;
    if (huge && !advised) continue;
    char *m = huge ? anon_map_huge(LEN) : anon_map(LEN);
    if (!m) continue;
    touch_pages(m, LEN, 4 * MiB, (char)i);
    unsigned char now[128];
    open_fds(now, huge ? "after a MADV_HUGEPAGE mapping's touches" : "after a mapping's touches");
    munmap(m, LEN);
  }
  if (advised) {
    served_check("4 more MADV_HUGEPAGE mappings", &sv, 4);
    served_note("4 more MADV_HUGEPAGE mappings, touched", &sv);
  }
  memset(got, 0, sizeof got);
  n = pread(log, got, sizeof got - 1, 0);
  if (n != had_n || memcmp(got, had, sizeof got) != 0)
    fail("the log after more served mmaps: expected its %zd bytes unchanged, read %zd bytes%s", had_n, n,
         n == had_n ? " that differ" : "");
  off = lseek(log, 0, SEEK_CUR);
  if (off != had_off)
    fail("the log's offset after more served mmaps: expected %lld (unchanged), got %lld", (long long)had_off,
         (long long)off);
  unsigned char after[128];
  open_fds(after, "after more mmaps");
  for (int fd = 0; fd < 1024; fd++) {
    bool a = after[fd / 8] & (1u << (fd % 8)), b = mine[fd / 8] & (1u << (fd % 8));
    if (a && !b) {
      char target[256] = "?", link[64];
      snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
      ssize_t k = readlink(link, target, sizeof target - 1);
      if (k > 0) target[k] = 0;
      fail("/proc/self/fd after more mmaps: descriptor %d (%s) is open, the program did not open it", fd, target);
    }
    if (b && !a) fail("/proc/self/fd after more mmaps: the program's descriptor %d is closed", fd);
  }
  close(log);
  if (h2) munmap(h2, LEN);
  if (m2) munmap(m2, LEN);
  munmap(h1, LEN);
  munmap(m1, LEN);
  return dropin_result();
}
