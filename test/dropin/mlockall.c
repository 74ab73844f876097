/* mlockall: a program that locks its memory at start (real-time programs:
 * mlockall(MCL_CURRENT | MCL_FUTURE)) locks and makes resident what it
 * uses, not an allocator's reserve.
 *
 * Hazard: prezero reserves a 1 GiB region of chunks (read/write, not
 * touched) on the first malloc. mlockall(MCL_CURRENT) locks every mapping,
 * so it faults the whole reservation in: VmLck and VmRSS become ~1 GiB and
 * start-up takes seconds. Without CAP_IPC_LOCK, with the usual 8 MiB
 * RLIMIT_MEMLOCK, mlockall fails with ENOMEM. With MCL_FUTURE every new
 * mapping the allocator makes is locked and populated too.
 *
 * glibc/the kernel: after malloc(100) the process maps a few MiB (program,
 * libc, ld.so, stack, a 132 KiB heap); mlockall locks that. Measured on
 * Debian 12 (glibc 2.36, x86_64): VmLck 2444 kB, VmRSS 2452 kB after
 * mlockall; after 100 malloc(4 MiB)/free with MCL_FUTURE: VmLck 6540 kB,
 * VmRSS 6548 kB, i.e. +4 MiB (once its mmap threshold has grown past
 * 4 MiB, glibc's heap keeps one 4 MiB top, locked). The bounds below
 * (24 MiB at start, 16 MiB of growth over the loop) leave glibc a margin of
 * several times that, for bigger libcs and other distributions.
 *
 * The test:
 *   - a forked child dropped to uid/gid 65534 with RLIMIT_MEMLOCK 8 MiB
 *     (the usual default): malloc(100) and mlockall(MCL_CURRENT |
 *     MCL_FUTURE) must succeed (not root: only the limit is set);
 *   - here: malloc(100), mlockall(MCL_CURRENT | MCL_FUTURE) must succeed,
 *     then VmLck < 24 MiB and VmRSS < 24 MiB;
 *   - then 100 times malloc(4 MiB), write a byte, free: VmLck and VmRSS
 *     grow by less than 16 MiB over the loop. */
#include "dropin.h"

#include <grp.h>
#include <sys/resource.h>

#define BOUND_START_KIB (24L * 1024)
#define BOUND_GROWTH_KIB (16L * 1024)

static int unprivileged_child(void) {
  struct rlimit rl = {8 * MiB, 8 * MiB}, cur;
  if (getuid() != 0 && getrlimit(RLIMIT_MEMLOCK, &cur) == 0 && cur.rlim_max < 8 * MiB) {
    note("RLIMIT_MEMLOCK hard limit below 8 MiB here");
    return SKIP;
  }
  if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0) {
    fail("setrlimit(RLIMIT_MEMLOCK, 8 MiB): %s", strerror(errno));
    return 1;
  }
  if (getuid() == 0) {
    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) {
      note("could not drop to uid 65534: %s", strerror(errno));
      return SKIP;
    }
  }
  char *p = malloc(100);
  if (!p) {
    fail("unprivileged: malloc(100) returned NULL");
    return 1;
  }
  p[0] = 1;
  if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
    fail("unprivileged (uid %d, RLIMIT_MEMLOCK 8 MiB): mlockall(MCL_CURRENT|MCL_FUTURE) after malloc(100): expected "
         "success, got %s (VmSize %ld kB)", (int)getuid(), strerror(errno), status_kib("VmSize"));
    return 1;
  }
  note("unprivileged: mlockall succeeded, VmLck %ld kB", status_kib("VmLck"));
  return 0;
}

int main(void) {
  dropin_name = "mlockall";
  watchdog(60);

  /* first, from a process that has done nothing yet */
  pid_t pid = fork();
  if (pid < 0) skip("fork: %s", strerror(errno));
  if (pid == 0) {
    watchdog(60);
    _exit(unprivileged_child());
  }
  int st;
  waitpid(pid, &st, 0);
  if (WIFEXITED(st) && WEXITSTATUS(st) == SKIP) note("unprivileged sub-case skipped");
  else if (WIFEXITED(st) && WEXITSTATUS(st) == 1)
    dropin_failures++; /* it said why */
  else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fail("unprivileged child: expected exit 0, got %s", wait_desc(st));

  char *p = malloc(100);
  if (!p) skip("malloc(100) returned NULL");
  p[0] = 1;
  double t0 = now_s();
  if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
    fail("mlockall(MCL_CURRENT|MCL_FUTURE) after malloc(100): expected success, got %s", strerror(errno));
    return dropin_result();
  }
  double took = now_s() - t0;
  long lck = status_kib("VmLck"), rss = status_kib("VmRSS");
  note("after malloc(100) + mlockall: VmLck %ld kB, VmRSS %ld kB, mlockall took %.3f s", lck, rss, took);
  if (lck >= BOUND_START_KIB)
    fail("VmLck after malloc(100) + mlockall: expected < %ld kB, got %ld kB", BOUND_START_KIB, lck);
  if (rss >= BOUND_START_KIB)
    fail("VmRSS after malloc(100) + mlockall: expected < %ld kB, got %ld kB", BOUND_START_KIB, rss);

  long lck0 = lck, rss0 = rss;
  for (int i = 0; i < 100; i++) {
    char *b = malloc(4 * MiB);
    if (!b) {
      fail("malloc(4 MiB) #%d under MCL_FUTURE: expected a block, got NULL", i);
      break;
    }
    b[(size_t)i * 37 * PAGE % (4 * MiB)] = 1;
    free(b);
  }
  lck = status_kib("VmLck");
  rss = status_kib("VmRSS");
  note("after 100 malloc(4 MiB)/free under MCL_FUTURE: VmLck %ld kB, VmRSS %ld kB", lck, rss);
  if (lck - lck0 >= BOUND_GROWTH_KIB)
    fail("VmLck growth over 100 malloc(4 MiB)/free under MCL_FUTURE: expected < %ld kB, got %ld kB (%ld -> %ld kB)",
         BOUND_GROWTH_KIB, lck - lck0, lck0, lck);
  if (rss - rss0 >= BOUND_GROWTH_KIB)
    fail("VmRSS growth over 100 malloc(4 MiB)/free under MCL_FUTURE: expected < %ld kB, got %ld kB (%ld -> %ld kB)",
         BOUND_GROWTH_KIB, rss - rss0, rss0, rss);
  munlockall();
  return dropin_result();
}
