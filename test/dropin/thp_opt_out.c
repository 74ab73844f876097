/* thp-opt-out: a program that opts out of transparent huge pages gets none
 * in its large mappings.
 *
 * Hazard: databases and latency-sensitive programs (Redis, MongoDB,
 * Oracle, many JVM set-ups) turn THP off for their memory, with
 * madvise(MADV_NOHUGEPAGE) on a mapping or prctl(PR_SET_THP_DISABLE) for
 * the process, because huge pages cost them RSS (sparse use) and latency
 * (compaction, khugepaged). prezero answers the first touch of each 2 MiB
 * block of a served mmap (>= 32 MiB) by moving a ready huge page in:
 * the program's advice, given after mmap, is not asked.
 *
 * glibc/the kernel: with MADV_NOHUGEPAGE on the range, or THP disabled for
 * the process, or THP mode "never", a write faults in one 4 KiB page, and
 * smaps shows AnonHugePages 0 kB for the mapping.
 *
 * The test (each sub-case a fresh process: this program re-executed, pool
 * warmed first so the mapping is served):
 *   (a) mmap 128 MiB, madvise(MADV_NOHUGEPAGE) on it, 32 one-byte writes
 *       4 MiB apart: AnonHugePages of the mapping 0 kB, its Rss 128 kB, and
 *       its VmFlags without "hg" (MADV_HUGEPAGE: the program never asked);
 *   (b) the same without madvise, in a process whose parent set
 *       prctl(PR_SET_THP_DISABLE, 1) before exec (inherited, as a launcher
 *       such as systemd's or a wrapper script does);
 *   (c) THP mode "never": the same without any advice (skipped in another
 *       mode).
 * And on mappings prezero serves in "madvise" mode, advised MADV_HUGEPAGE
 * right after the mmap (under prezero the run fails if one was not served,
 * prezero_stats_get: uffd_mappings, where userfaultfd with UFFDIO_MOVE is
 * usable; else that sub-case is skipped with the reason):
 *   (d) MADV_HUGEPAGE, then MADV_NOHUGEPAGE over all of it, then the 32
 *       writes: AnonHugePages 0 kB, Rss 128 kB, VmFlags "nh" without "hg";
 *   (e) MADV_HUGEPAGE (served in this process), then fork: the child maps
 *       and advises a second 128 MiB mapping of its own (served there
 *       too), sets prctl(PR_SET_THP_DISABLE, 1), and makes the 32 writes
 *       in both: AnonHugePages 0 kB and Rss 128 kB in each. The parent's
 *       mapping afterwards: its blocks read zero and keep the parent's
 *       writes. Also in (b): an advised mapping in the process whose THP
 *       was disabled before exec gets AnonHugePages 0 kB, Rss 128 kB;
 *   (f) MADV_HUGEPAGE, then MADV_NOHUGEPAGE over its first half (64 MiB),
 *       16 writes 4 MiB apart in each half: the first half has Rss 64 kB
 *       (16 x 4 KiB), AnonHugePages 0 kB, each touched 2 MiB block 1 page
 *       present; the second half Rss 64 kB..32 MiB, each touched block
 *       1..512 pages present; no untouched block has a page present. The
 *       halves are counted from the mapping's first 2 MiB boundary (it is
 *       mapped 2 MiB longer). */
#include "dropin.h"

#include <sys/prctl.h>

extern char **environ;

#define LEN (128 * MiB)

/* 32 one-byte writes 4 MiB apart over [m, m+LEN), then: AnonHugePages
 * 0 kB, Rss 128 kB, each written byte read back with zeros beside it, and
 * with nh (after MADV_NOHUGEPAGE) VmFlags "nh" without "hg". */
static void check_small(char *m, const char *what, bool nh) {
  for (size_t o = 0; o < LEN; o += 4 * MiB) m[o + 12345] = 1;
  char flags[256];
  int nv = 0;
  long huge = smaps_kib(m, LEN, "AnonHugePages", NULL, NULL, NULL, 0);
  long rss = range_rss_kib(m, LEN, &nv, flags, sizeof flags);
  note("%s: 32 one-byte writes: mapping Rss %ld kB, AnonHugePages %ld kB, %d VMA(s), VmFlags%s", what, rss, huge, nv,
       flags);
  if (huge != 0)
    fail("%s: AnonHugePages of the 128 MiB mapping after 32 one-byte writes: expected 0 kB, got %ld kB", what, huge);
  bool hg = strstr(flags, " hg ") || (strlen(flags) >= 3 && !strcmp(flags + strlen(flags) - 3, " hg"));
  bool has_nh = strstr(flags, " nh ") || (strlen(flags) >= 3 && !strcmp(flags + strlen(flags) - 3, " nh"));
  if (nh && (hg || !has_nh))
    fail("%s: VmFlags of the 128 MiB mapping after MADV_NOHUGEPAGE: expected \"nh\" without \"hg\", got%s", what,
         flags);
  if (rss != 32 * 4)
    fail("%s: Rss of the 128 MiB mapping after 32 one-byte writes: expected 128 kB (32 x 4 KiB), got %ld kB", what,
         rss);
  for (size_t o = 0; o < LEN; o += 4 * MiB)
    if (m[o + 12345] != 1 || m[o + 12344] != 0 || m[o] != 0) {
      fail("%s: block at %zu MiB: expected 1 at +12345 and 0 beside it, read %d, %d, %d", what, o >> 20,
           m[o + 12345], m[o + 12344], m[o]);
      break;
    }
}

/* (d): MADV_HUGEPAGE, then MADV_NOHUGEPAGE over all of it. */
static int subcase_d(void) {
  dropin_name = "thp-opt-out (d) MADV_HUGEPAGE then MADV_NOHUGEPAGE";
  watchdog(30);
  warm_pool(256 * MiB, 1500);
  struct served sv;
  served_begin(&sv);
  char *m = anon_map_huge(LEN);
  if (!m) skip("mmap(128 MiB) + madvise(MADV_HUGEPAGE): %s", strerror(errno));
  if (!served_check("the 128 MiB MADV_HUGEPAGE mapping", &sv, 1)) return SKIP;
  if (madvise(m, LEN, MADV_NOHUGEPAGE) != 0) skip("madvise(MADV_NOHUGEPAGE): %s", strerror(errno));
  check_small(m, "MADV_NOHUGEPAGE over a served mapping", true);
  served_note("MADV_NOHUGEPAGE over a served mapping", &sv);
  munmap(m, LEN);
  return dropin_result();
}

/* (e): a served mapping, then PR_SET_THP_DISABLE in a forked child. */
static int subcase_e(void) {
  dropin_name = "thp-opt-out (e) PR_SET_THP_DISABLE in a child";
  watchdog(30);
  warm_pool(256 * MiB, 1500);
  struct served sv;
  served_begin(&sv);
  char *m = anon_map_huge(LEN);
  if (!m) skip("mmap(128 MiB) + madvise(MADV_HUGEPAGE): %s", strerror(errno));
  if (!served_check("the parent's 128 MiB MADV_HUGEPAGE mapping", &sv, 1)) return SKIP;
  pid_t pid = fork();
  if (pid < 0) skip("fork: %s", strerror(errno));
  if (pid == 0) {
    dropin_name = "thp-opt-out (e) PR_SET_THP_DISABLE in a child: the child";
    watchdog(20);
    struct served csv;
    served_begin(&csv);
    char *own = anon_map_huge(LEN);
    if (!own) {
      fail("the child's mmap(128 MiB) + madvise(MADV_HUGEPAGE): %s", strerror(errno));
      _exit(1);
    }
    served_check("the child's own 128 MiB MADV_HUGEPAGE mapping", &csv, 1);
    if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0) {
      note("prctl(PR_SET_THP_DISABLE, 1): %s", strerror(errno));
      _exit(SKIP);
    }
    dropin_step = "the child's writes";
    check_small(m, "the mapping inherited from the parent (served there)", false);
    check_small(own, "the child's own mapping (served, then PR_SET_THP_DISABLE)", false);
    served_note("the child", &csv);
    _exit(dropin_result());
  }
  int st;
  waitpid(pid, &st, 0);
  if (WIFEXITED(st) && WEXITSTATUS(st) == SKIP) skip("prctl(PR_SET_THP_DISABLE) in the child failed");
  if (WIFEXITED(st) && WEXITSTATUS(st) == 1) dropin_failures++; /* it said why */
  else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fail("the child that set PR_SET_THP_DISABLE: expected exit 0, got %s", wait_desc(st));
  /* the parent's mapping: untouched by the child's writes, still usable */
  size_t bad = 0;
  for (size_t o = 0; o < LEN; o += 4 * MiB) {
    if (m[o + 12345] != 0) bad++;
    m[o + 4096] = 2;
    if (m[o + 4096] != 2 || m[o + 12345] != 0) bad++;
  }
  if (bad) fail("the parent's served mapping after the child's writes: expected 32 blocks to read 0, then 2 where "
                "written, %zu reads differ", bad);
  served_note("the parent", &sv);
  munmap(m, LEN);
  return dropin_result();
}

/* (f): MADV_NOHUGEPAGE over half of a served mapping. */
static int subcase_f(void) {
  dropin_name = "thp-opt-out (f) MADV_NOHUGEPAGE over half";
  watchdog(30);
  warm_pool(256 * MiB, 1500);
  struct served sv;
  served_begin(&sv);
  char *m = anon_map_huge(LEN + HPAGE);
  if (!m) skip("mmap(130 MiB) + madvise(MADV_HUGEPAGE): %s", strerror(errno));
  if (!served_check("the MADV_HUGEPAGE mapping", &sv, 1)) return SKIP;
  char *a = align_up_2m(m), *h = a + LEN / 2;
  if (madvise(a, LEN / 2, MADV_NOHUGEPAGE) != 0) skip("madvise(MADV_NOHUGEPAGE): %s", strerror(errno));
  for (size_t o = 0; o < LEN; o += 4 * MiB) a[o + 12345] = 1;
  char flags[256];
  int nv = 0;
  long huge1 = smaps_kib(a, LEN / 2, "AnonHugePages", NULL, NULL, NULL, 0);
  long rss1 = range_rss_kib(a, LEN / 2, &nv, flags, sizeof flags);
  long huge2 = smaps_kib(h, LEN / 2, "AnonHugePages", NULL, NULL, NULL, 0);
  long rss2 = range_rss_kib(h, LEN / 2, NULL, NULL, 0);
  note("16 one-byte writes in each half: MADV_NOHUGEPAGE half Rss %ld kB, AnonHugePages %ld kB, VmFlags%s; "
       "MADV_HUGEPAGE half Rss %ld kB, AnonHugePages %ld kB", rss1, huge1, flags, rss2, huge2);
  served_note("half MADV_NOHUGEPAGE", &sv);
  if (huge1 != 0) fail("AnonHugePages of the MADV_NOHUGEPAGE half after 16 one-byte writes: expected 0 kB, got %ld kB",
                       huge1);
  if (rss1 != 16 * 4)
    fail("Rss of the MADV_NOHUGEPAGE half after 16 one-byte writes: expected 64 kB (16 x 4 KiB), got %ld kB", rss1);
  if (rss2 < 16 * 4 || rss2 > 16 * 2048)
    fail("Rss of the MADV_HUGEPAGE half after 16 one-byte writes: expected 64 kB (16 x 4 KiB) to 32768 kB "
         "(16 x 2 MiB), got %ld kB", rss2);
  int bad = 0;
  for (size_t b = 0; b < LEN / HPAGE; b++) {
    size_t res = resident_pages(a + b * HPAGE, HPAGE);
    bool touched = b % 2 == 0, nohuge = b < LEN / HPAGE / 2;
    size_t lo = touched, hi = !touched ? 0 : nohuge ? 1 : 512;
    if ((res < lo || res > hi) && bad++ < 4)
      fail("2 MiB block %zu (%s half, %s): expected %zu..%zu pages present, mincore says %zu", b,
           nohuge ? "MADV_NOHUGEPAGE" : "MADV_HUGEPAGE", touched ? "one byte written" : "never touched", lo, hi, res);
    if (a[b * HPAGE + 12345] != (char)touched && bad++ < 4)
      fail("2 MiB block %zu: expected byte %d at +12345, read %d", b, touched, a[b * HPAGE + 12345]);
  }
  munmap(m, LEN + HPAGE);
  return dropin_result();
}

static int subcase(const char *which) {
  if (which[0] == 'd') return subcase_d();
  if (which[0] == 'e') return subcase_e();
  if (which[0] == 'f') return subcase_f();
  dropin_name = which[0] == 'a'   ? "thp-opt-out (a) MADV_NOHUGEPAGE"
                : which[0] == 'b' ? "thp-opt-out (b) PR_SET_THP_DISABLE"
                                  : "thp-opt-out (c) THP never";
  watchdog(30);
  if (which[0] == 'b' && prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1) {
    fail("PR_GET_THP_DISABLE after exec: expected 1 (inherited), got %d", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
    return 1;
  }
  warm_pool(256 * MiB, 1500);
  char *m = anon_map(LEN);
  if (!m) skip("mmap(128 MiB): %s", strerror(errno));
  if (which[0] == 'a' && madvise(m, LEN, MADV_NOHUGEPAGE) != 0) skip("madvise(MADV_NOHUGEPAGE): %s", strerror(errno));
  for (size_t o = 0; o < LEN; o += 4 * MiB) m[o + 12345] = 1;
  char flags[256];
  int nv = 0;
  long huge = smaps_kib(m, LEN, "AnonHugePages", NULL, NULL, NULL, 0);
  long rss = range_rss_kib(m, LEN, &nv, flags, sizeof flags);
  note("32 one-byte writes: mapping Rss %ld kB, AnonHugePages %ld kB, %d VMA(s), VmFlags%s", rss, huge, nv, flags);
  if (huge != 0) fail("AnonHugePages of the 128 MiB mapping after 32 one-byte writes: expected 0 kB, got %ld kB", huge);
  if (strstr(flags, " hg ") || (strlen(flags) >= 3 && !strcmp(flags + strlen(flags) - 3, " hg")))
    fail("VmFlags of the 128 MiB mapping: expected no \"hg\" (the program never asked for huge pages), got%s", flags);
  if (rss != 32 * 4)
    fail("Rss of the 128 MiB mapping after 32 one-byte writes: expected 128 kB (32 x 4 KiB), got %ld kB", rss);
  munmap(m, LEN);
  if (which[0] == 'b') {
    /* advised: the kernel gives no huge pages to a process that turned them off */
    struct served sv;
    served_begin(&sv);
    m = anon_map_huge(LEN);
    if (!m) skip("mmap(128 MiB) + madvise(MADV_HUGEPAGE): %s", strerror(errno));
    for (size_t o = 0; o < LEN; o += 4 * MiB) m[o + 12345] = 1;
    huge = smaps_kib(m, LEN, "AnonHugePages", NULL, NULL, NULL, 0);
    rss = range_rss_kib(m, LEN, &nv, flags, sizeof flags);
    note("MADV_HUGEPAGE mapping, 32 one-byte writes: Rss %ld kB, AnonHugePages %ld kB", rss, huge);
    served_note("MADV_HUGEPAGE under PR_SET_THP_DISABLE", &sv);
    if (huge != 0)
      fail("AnonHugePages of a 128 MiB MADV_HUGEPAGE mapping after 32 one-byte writes: expected 0 kB, got %ld kB",
           huge);
    if (rss != 32 * 4)
      fail("Rss of a 128 MiB MADV_HUGEPAGE mapping after 32 one-byte writes: expected 128 kB (32 x 4 KiB), got %ld kB",
           rss);
    munmap(m, LEN);
  }
  return dropin_result();
}

/* Runs this program again as sub-case `which`; returns its wait status. */
static int run(const char *which, bool thp_disable) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (thp_disable && prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0) _exit(SKIP);
    char *argv[] = {"/proc/self/exe", (char *)which, NULL};
    execve(argv[0], argv, environ);
    _exit(127);
  }
  int st;
  waitpid(pid, &st, 0);
  return st;
}

int main(int argc, char **argv) {
  if (argc > 1) return subcase(argv[1]);
  dropin_name = "thp-opt-out";
  watchdog(90);
  int ran = 0;
  struct {
    const char *which, *what;
    bool disable;
  } cases[] = {
      {"a", "(a) MADV_NOHUGEPAGE on a served 128 MiB mapping", false},
      {"b", "(b) PR_SET_THP_DISABLE for the process", true},
      {"c", "(c) THP mode never", false},
      {"d", "(d) MADV_NOHUGEPAGE over all of a served MADV_HUGEPAGE mapping", false},
      {"e", "(e) PR_SET_THP_DISABLE in a child, served MADV_HUGEPAGE mappings", false},
      {"f", "(f) MADV_NOHUGEPAGE over half of a served MADV_HUGEPAGE mapping", false},
  };
  for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
    if (i == 2 && strcmp(thp_mode(), "never") != 0) {
      note("%s: skipped (THP mode is \"%s\")", cases[i].what, thp_mode());
      continue;
    }
    int st = run(cases[i].which, cases[i].disable);
    if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == SKIP) {
      note("%s: skipped", cases[i].what);
      continue;
    }
    ran++;
    if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0) continue;
    if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1) {
      dropin_failures++; /* it said why */
      continue;
    }
    fail("%s: expected exit 0, got %s", cases[i].what, st == -1 ? "no child" : wait_desc(st));
  }
  if (!ran) skip("no sub-case could run");
  return dropin_result();
}
