/* fork-closes-program-fd: the allocator must never close, read, write or
 * add a file descriptor of the program's.
 *
 * Hazard: an allocator that keeps a descriptor of its own (prezero's
 * userfaultfd, opened by the first served large mmap) remembers it by
 * number. A daemon closes every descriptor above 2 (close_range(3, ~0U, 0)),
 * opens its log file, which gets the number the allocator's descriptor had,
 * and forks: prezero's fork handler in the child closes "its userfaultfd" by
 * number, i.e. the child's log, and the child's first write fails with
 * EBADF.
 *
 * glibc/the kernel: malloc and mmap open no descriptor; the descriptor
 * table is exactly what the program made it; fork copies it.
 *
 * The test (a daemon's start-up): close every inherited descriptor above 2;
 * a served-size mmap (64 MiB, pool warmed) touched on a few pages;
 * close_range(3, ~0U, 0); open a log file (lowest free number); fork: the
 * child writes a line to the log (must succeed), the parent sees it. Then,
 * in the parent: a new served-size mmap reads zero and keeps what is
 * written; after more served mmaps and touches the log's contents and
 * offset are unchanged; /proc/self/fd lists only descriptors the program
 * opened. */
#include "dropin.h"

#include <dirent.h>
#include <sys/syscall.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

static int close_from(unsigned first) {
  return (int)syscall(SYS_close_range, first, ~0U, 0);
}

/* Descriptors open now, as a bit set over 0..1023 (the listing's own one left out). */
static void open_fds(unsigned char set[128]) {
  memset(set, 0, 128);
  DIR *d = opendir("/proc/self/fd");
  if (!d) return;
  int self = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd != self && fd >= 0 && fd < 1024) set[fd / 8] |= (unsigned char)(1u << (fd % 8));
  }
  closedir(d);
}

static void touch_pages(char *p, size_t len, size_t step, char v) {
  for (size_t o = 0; o < len; o += step) p[o] = v;
}

int main(void) {
  dropin_name = "fork-closes-program-fd";
  watchdog(30);
  /* a daemon starts from a clean table: stdin/out/err only */
  if (close_from(3) != 0) skip("close_range(2): %s", strerror(errno));
  warm_pool(256 * MiB, 1500);

  const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  char path[512];

  /* 1. a served-size mapping, touched: an allocator may now hold a descriptor */
  char *m1 = anon_map(64 * MiB);
  if (!m1) skip("mmap(64 MiB): %s", strerror(errno));
  touch_pages(m1, 64 * MiB, 8 * MiB, 1);
  unsigned char before[128];
  open_fds(before);
  for (int fd = 3; fd < 1024; fd++)
    if (before[fd / 8] & (1u << (fd % 8))) note("descriptor %d is open after the first served mmap (not the program's)", fd);

  /* 2. the daemon closes everything above 2 and opens its log */
  if (close_from(3) != 0) skip("close_range(2): %s", strerror(errno));
  snprintf(path, sizeof path, "%s/dropin-fork-fd-XXXXXX", dir);
  int log = mkstemp(path);
  if (log < 0) skip("mkstemp(%s): %s", path, strerror(errno));
  unlink(path);
  note("the log file got descriptor %d", log);
  unsigned char mine[128];
  open_fds(mine);

  /* 3. fork: the child writes its line */
  const char line[] = "child: hello from the log\n";
  pid_t pid = fork();
  if (pid < 0) skip("fork: %s", strerror(errno));
  if (pid == 0) {
    ssize_t n = write(log, line, sizeof line - 1);
    if (n != (ssize_t)(sizeof line - 1)) {
      char buf[200];
      int k = snprintf(buf, sizeof buf,
                       "%s: FAIL: the child's write(%d) to its log: expected %zu bytes written, got %zd (%s)\n",
                       dropin_name, log, sizeof line - 1, n, n < 0 ? strerror(errno) : "short");
      if (write(2, buf, (size_t)k) < 0) { /* nothing to do */ }
      _exit(1);
    }
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fail("the child that writes to the log: expected exit 0, got %s", wait_desc(st));
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
  char *m2 = anon_map(64 * MiB);
  if (!m2) {
    fail("mmap(64 MiB) after close_range: expected a mapping, got %s", strerror(errno));
  } else {
    size_t nonzero = 0;
    for (size_t o = 0; o < 64 * MiB; o += 2 * MiB) nonzero += m2[o + 4096] != 0;
    if (nonzero) fail("a new mapping after close_range: expected 0 non-zero pages, read %zu", nonzero);
    touch_pages(m2, 64 * MiB, 2 * MiB, 7);
    size_t wrong = 0;
    for (size_t o = 0; o < 64 * MiB; o += 2 * MiB) wrong += m2[o] != 7;
    if (wrong) fail("a new mapping after close_range: expected 32 blocks to read 7, %zu did not", wrong);
  }
  for (int i = 0; i < 4; i++) {
    char *m = anon_map(64 * MiB);
    if (!m) continue;
    touch_pages(m, 64 * MiB, 4 * MiB, (char)i);
    munmap(m, 64 * MiB);
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
  open_fds(after);
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
  if (m2) munmap(m2, 64 * MiB);
  munmap(m1, 64 * MiB);
  return dropin_result();
}
