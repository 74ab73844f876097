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
 *       mode). */
#include "dropin.h"

#include <sys/prctl.h>

extern char **environ;

#define LEN (128 * MiB)

static int subcase(const char *which) {
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
  };
  for (int i = 0; i < 3; i++) {
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
