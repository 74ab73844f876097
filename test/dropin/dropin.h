/* Helpers shared by the drop-in tests (test/dropin/).
 *
 * Every program here is a plain C program that does not link prezero: meson
 * runs it once plainly (glibc and the kernel: the reference, which must pass)
 * and once with LD_PRELOAD=libprezero.so. A program exits 0 (pass), 1 (fail,
 * with one line per failed check on stderr: what was expected, what was
 * seen) or 77 (skip, with the reason).
 *
 * Nothing here calls malloc: the readers of /proc use open/read into stack
 * buffers, so measuring does not disturb what is measured. */
#ifndef DROPIN_H
#define DROPIN_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* struct prezero_stats only: nothing of prezero is linked (dlsym when
 * loaded) */
#include "../../include/prezero.h"

#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16) /* Linux 6.8: UFFDIO_MOVE */
#endif

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)
#define PAGE ((size_t)4096)
#define HPAGE (2 * MiB)

#define SKIP 77

static const char *dropin_name = "dropin";
static int dropin_failures;

/* One line, "name: TAG" and the message, written to fd without stdio. */
static void say(int fd, const char *tag, const char *fmt, va_list ap) {
  char buf[512];
  int n = snprintf(buf, sizeof buf, "%s: %s", dropin_name, tag);
  if (n < 0) n = 0;
  vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
  size_t len = strlen(buf);
  if (len + 1 < sizeof buf) buf[len++] = '\n';
  if (write(fd, buf, len) < 0) { /* nothing to do */ }
}

/* One line per failed check. */
__attribute__((format(printf, 1, 2), unused)) static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  say(2, "FAIL: ", fmt, ap);
  va_end(ap);
  dropin_failures++;
}

/* Informational line (stdout: meson keeps it in the log). */
__attribute__((format(printf, 1, 2), unused)) static void note(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  say(1, "", fmt, ap);
  va_end(ap);
}

__attribute__((format(printf, 1, 2), noreturn, unused)) static void skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  say(1, "SKIP: ", fmt, ap);
  va_end(ap);
  exit(SKIP);
}

static int dropin_result(void) { return dropin_failures ? 1 : 0; }

/* ------------------------------------------------------------- watchdog */

/* Set by a program to say, from the watchdog, how far it got: a function,
 * and/or the step it is at (anon_map_huge sets one while it runs). */
static void (*hang_report)(char *buf, size_t size);
static const char *volatile dropin_step;

static void on_alarm(int sig) {
  (void)sig;
  char buf[512], more[200] = "";
  if (hang_report) hang_report(more, sizeof more);
  const char *step = dropin_step;
  int n = snprintf(buf, sizeof buf, "%s: FAIL: hang (watchdog expired)%s%s%s%s\n", dropin_name,
                   more[0] ? ": " : "", more, step ? ": stuck at: " : "", step ? step : "");
  if (write(2, buf, (size_t)n) < 0) { /* nothing to do */ }
  _exit(1);
}

/* A hang fails the test instead of blocking the suite. Call again in a
 * forked child: fork clears pending alarms. */
__attribute__((unused)) static void watchdog(unsigned seconds) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, NULL);
  alarm(seconds);
}

/* ------------------------------------------------------------- /proc */

/* Reads a whole small file into buf (NUL-terminated); returns the length or -1. */
__attribute__((unused)) static ssize_t read_file(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t got = 0;
  while (got + 1 < size) {
    ssize_t n = read(fd, buf + got, size - 1 - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(fd);
  buf[got] = 0;
  return (ssize_t)got;
}

/* A "Field:   N kB" line of /proc/self/status, in KiB (-1: absent). */
__attribute__((unused)) static long status_kib(const char *field) {
  char buf[8192];
  if (read_file("/proc/self/status", buf, sizeof buf) < 0) return -1;
  size_t fl = strlen(field);
  for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    if (!strncmp(l, field, fl) && l[fl] == ':') return strtol(l + fl + 1, NULL, 10);
  return -1;
}

/* Sum of a smaps field ("Rss", "AnonHugePages", ...) in KiB over every VMA
 * that overlaps [a, a + len) (whole VMAs). Also returns the number of those
 * VMAs, whether they lie wholly inside the range (*inside: false when the
 * kernel merged the range with a neighbour, whose pages then count too) and,
 * if vmflags is non-NULL, the VmFlags line of the first one. */
__attribute__((unused)) static long smaps_kib(const void *a, size_t len, const char *field, int *nvmas,
                                              bool *inside, char *vmflags, size_t vmflags_size) {
  int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  uintptr_t lo = (uintptr_t)a, hi = lo + len;
  static char buf[1 << 16];
  char line[512];
  size_t ll = 0, have = 0, pos = 0;
  bool in = false;
  long sum = 0;
  int n = 0;
  size_t fl = strlen(field);
  if (vmflags && vmflags_size) vmflags[0] = 0;
  if (inside) *inside = true;
  for (;;) {
    if (pos == have) {
      ssize_t r = read(fd, buf, sizeof buf);
      if (r <= 0) break;
      have = (size_t)r;
      pos = 0;
    }
    char c = buf[pos++];
    if (c != '\n') {
      if (ll + 1 < sizeof line) line[ll++] = c;
      continue;
    }
    line[ll] = 0;
    ll = 0;
    unsigned long s, e;
    char dash;
    if (sscanf(line, "%lx%c%lx", &s, &dash, &e) == 3 && dash == '-' && strchr(line, ' ')) {
      /* a VMA header line: "start-end perms ..." */
      in = s < hi && e > lo;
      if (in) n++;
      if (in && inside && (s < lo || e > hi)) *inside = false;
      continue;
    }
    if (!in) continue;
    if (!strncmp(line, field, fl) && line[fl] == ':') sum += strtol(line + fl + 1, NULL, 10);
    if (vmflags && n == 1 && !vmflags[0] && !strncmp(line, "VmFlags:", 8)) {
      snprintf(vmflags, vmflags_size, "%.*s", (int)(vmflags_size - 1), line + 8);
    }
  }
  close(fd);
  if (nvmas) *nvmas = n;
  return sum;
}

/* KiB of private memory of the process's own in [a, a + len), from
 * /proc/self/pagemap: pages present and mapped exclusively (the shared zero
 * page is not), as smaps counts Rss for a private mapping. */
__attribute__((unused)) static long pagemap_private_kib(const void *a, size_t len) {
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  static uint64_t ent[4096];
  long kib = 0;
  uintptr_t first = (uintptr_t)a / PAGE, pages = (len + PAGE - 1) / PAGE;
  for (uintptr_t i = 0; i < pages;) {
    size_t n = pages - i < 4096 ? pages - i : 4096;
    ssize_t got = pread(fd, ent, n * 8, (off_t)((first + i) * 8));
    if (got <= 0) break;
    for (size_t k = 0; k < (size_t)got / 8; k++)
      if ((ent[k] >> 63 & 1) && (ent[k] >> 56 & 1)) kib += 4;
    i += (size_t)got / 8;
  }
  close(fd);
  return kib;
}

/* Rss of exactly [a, a + len) in KiB: smaps when the range is whole VMAs,
 * pagemap when the kernel merged it with a neighbour (said on stdout). */
__attribute__((unused)) static long range_rss_kib(const void *a, size_t len, int *nvmas, char *vmflags,
                                                  size_t vmflags_size) {
  bool inside;
  long rss = smaps_kib(a, len, "Rss", nvmas, &inside, vmflags, vmflags_size);
  if (inside) return rss;
  long pm = pagemap_private_kib(a, len);
  note("the range %p+%zu KiB shares a VMA with a neighbour (smaps Rss %ld kB for the VMA): Rss of the range from "
       "pagemap, %ld kB", a, len / KiB, rss, pm);
  return pm;
}

/* Pages of [a, a + len) that mincore(2) reports resident. */
__attribute__((unused)) static size_t resident_pages(const void *a, size_t len) {
  static unsigned char vec[(1 * GiB) / PAGE];
  size_t total = 0;
  for (size_t off = 0; off < len; off += 1 * GiB) {
    size_t l = len - off < 1 * GiB ? len - off : 1 * GiB;
    if (mincore((char *)a + off, l, vec) != 0) return (size_t)-1;
    for (size_t i = 0; i < (l + PAGE - 1) / PAGE; i++) total += vec[i] & 1;
  }
  return total;
}

/* The kernel's THP mode ("always", "madvise", "never"; "" when unknown). */
__attribute__((unused)) static const char *thp_mode(void) {
  static char mode[16];
  char buf[256];
  mode[0] = 0;
  if (read_file("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf) < 0) return mode;
  char *o = strchr(buf, '['), *c = o ? strchr(o, ']') : NULL;
  if (o && c && (size_t)(c - o) < sizeof mode) {
    memcpy(mode, o + 1, (size_t)(c - o - 1));
    mode[c - o - 1] = 0;
  }
  return mode;
}

/* Multi-size THP: some size below 2 MiB can be used on a plain (not
 * madvised) anonymous mapping, so a 4 KiB touch may fault in more. */
__attribute__((unused)) static bool small_mthp_on_plain_mappings(void) {
  static const int sizes[] = {8, 16, 32, 64, 128, 256, 512, 1024};
  bool top_always = !strcmp(thp_mode(), "always");
  for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    char path[128], buf[128];
    snprintf(path, sizeof path, "/sys/kernel/mm/transparent_hugepage/hugepages-%dkB/enabled", sizes[i]);
    if (read_file(path, buf, sizeof buf) < 0) continue;
    if (strstr(buf, "[always]") || (top_always && strstr(buf, "[inherit]"))) return true;
  }
  return false;
}

/* ------------------------------------------------------------- misc */

__attribute__((unused)) static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

__attribute__((unused)) static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Whether prezero is loaded into this process (LD_PRELOAD). Only for
 * messages and for promises prezero's README makes beyond glibc's. */
__attribute__((unused)) static bool prezero_loaded(void) {
  return dlsym(RTLD_DEFAULT, "prezero_version") != NULL;
}

/* Gives an allocator a pool of ready memory to serve large mmaps from:
 * `bytes` malloc'd and touched in 32 MiB blocks, freed, then a pause for
 * background zeroing. 32 MiB: prezero faults blocks under 16 MiB
 * (PREZERO_HUGE_MIN) with 4 KiB pages, and only huge-page chunks are moved
 * into served mappings. Under glibc the blocks are mmapped and unmapped on
 * free: harmless. */
__attribute__((unused)) static void warm_pool(size_t bytes, long pause_ms) {
  enum { MAXB = 64 };
  void *b[MAXB];
  size_t n = bytes / (32 * MiB);
  if (n > MAXB) n = MAXB;
  for (size_t i = 0; i < n; i++) {
    b[i] = malloc(32 * MiB);
    if (b[i])
      for (size_t o = 0; o < 32 * MiB; o += PAGE) ((volatile char *)b[i])[o] = 1;
  }
  for (size_t i = 0; i < n; i++) free(b[i]);
  if (pause_ms) sleep_ms(pause_ms);
}

/* A large private anonymous read/write mapping, the kind prezero serves. */
__attribute__((unused)) static void *anon_map(size_t len) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

/* Describes a wait status: "exit 0", "signal 11 (Segmentation fault)". */
__attribute__((unused)) static const char *wait_desc(int st) {
  static char buf[64];
  if (WIFEXITED(st)) snprintf(buf, sizeof buf, "exit %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st)) snprintf(buf, sizeof buf, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
  else snprintf(buf, sizeof buf, "status 0x%x", st);
  return buf;
}

/* ------------------------------------------------------------- served mappings */

/* prezero serves a large private anonymous mapping (first writes of its
 * 2 MiB blocks get pre-zeroed huge pages through its userfaultfd) only
 * where the kernel would back it with huge pages: THP "always", or the
 * program's MADV_HUGEPAGE in "madvise" mode. A test's served sub-case maps,
 * advises MADV_HUGEPAGE and asks served_check() whether prezero really
 * registered the range, so that the prezero run cannot pass without
 * exercising the serving. */

/* The first PMD-sized (2 MiB) boundary at or above p. */
__attribute__((unused)) static char *align_up_2m(void *p) {
  return (char *)(((uintptr_t)p + HPAGE - 1) & ~(uintptr_t)(HPAGE - 1));
}

/* prezero's statistics, when it is loaded (false: it is not). */
__attribute__((unused)) static bool pz_stats(struct prezero_stats *st) {
  memset(st, 0, sizeof *st);
  int (*get)(struct prezero_stats *);
  void *sym = dlsym(RTLD_DEFAULT, "prezero_stats_get");
  if (!sym) return false;
  memcpy(&get, &sym, sizeof get);
  return get(st) == 0 && st->version >= 5;
}

/* Why prezero could not serve an advised mapping with its userfaultfd in
 * this process; NULL when it can (full userfaultfd: root, CAP_SYS_PTRACE
 * or vm.unprivileged_userfaultfd=1; UFFDIO_MOVE: Linux 6.8; huge pages on),
 * and then an advised mapping it did not serve is a failure. */
__attribute__((unused)) static const char *serving_unavailable(void) {
  static char why[200];
  const char *e;
  if ((e = getenv("PREZERO_UFFD")) && !strcmp(e, "0")) return "PREZERO_UFFD=0";
  if ((e = getenv("PREZERO_MMAP")) && !strcmp(e, "0")) return "PREZERO_MMAP=0";
  const char *mode = thp_mode();
  if (strcmp(mode, "always") && strcmp(mode, "madvise")) {
    snprintf(why, sizeof why, "THP mode \"%s\": the kernel gives no huge pages", mode);
    return why;
  }
  if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) > 0) return "PR_SET_THP_DISABLE is in force for this process";
  char buf[64];
  if (read_file("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", buf, sizeof buf) > 0 &&
      strtoul(buf, NULL, 10) != HPAGE)
    return "huge pages are not 2 MiB";
  int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    snprintf(why, sizeof why, "userfaultfd(2) (full, not user-mode only): %s (needs root, CAP_SYS_PTRACE or "
             "vm.unprivileged_userfaultfd=1)", strerror(errno));
    return why;
  }
  struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_MOVE};
  bool move = ioctl(fd, UFFDIO_API, &api) == 0 && (api.features & UFFD_FEATURE_MOVE);
  close(fd);
  if (!move) return "no UFFDIO_MOVE (Linux 6.8 or later)";
  return NULL;
}

/* prezero's counters when a sub-case starts (loaded false: glibc). */
struct served {
  bool loaded;
  struct prezero_stats st;
};

__attribute__((unused)) static void served_begin(struct served *s) { s->loaded = pz_stats(&s->st); }

/* After the program advised `what` MADV_HUGEPAGE: under prezero, `ranges`
 * more registrations than at served_begin(). True: go on with the sub-case
 * (glibc; served; or not served where it could have been: a FAIL line).
 * False: prezero cannot serve here (a line saying why the sub-case is
 * skipped). */
__attribute__((unused)) static bool served_check(const char *what, const struct served *s, unsigned ranges) {
  if (!s->loaded) return true;
  struct prezero_stats now;
  pz_stats(&now);
  uint64_t got = now.uffd_mappings - s->st.uffd_mappings;
  if (got >= ranges) return true;
  const char *why = serving_unavailable();
  if (why) {
    note("SKIP %s: prezero registered %llu of %u range(s) with its userfaultfd, and it cannot serve here: %s",
         what, (unsigned long long)got, ranges, why);
    return false;
  }
  fail("%s: expected prezero to serve it (uffd_mappings +%u; userfaultfd with UFFDIO_MOVE, THP \"%s\", "
       "MADV_HUGEPAGE), got +%llu", what, ranges, thp_mode(), (unsigned long long)got);
  return true;
}

/* What prezero's userfaultfd service did since served_begin(), on stdout. */
__attribute__((unused)) static void served_note(const char *what, const struct served *s) {
  struct prezero_stats now;
  if (!s->loaded || !pz_stats(&now)) return;
  note("%s: prezero: +%llu range(s) served, +%llu faults answered, %llu MiB moved in ready, %llu MiB copied, "
       "+%llu zero-page/4 KiB answers", what, (unsigned long long)(now.uffd_mappings - s->st.uffd_mappings),
       (unsigned long long)(now.uffd_faults - s->st.uffd_faults),
       (unsigned long long)((now.uffd_moved_bytes - s->st.uffd_moved_bytes) >> 20),
       (unsigned long long)((now.uffd_copied_bytes - s->st.uffd_copied_bytes) >> 20),
       (unsigned long long)(now.uffd_fallbacks - s->st.uffd_fallbacks));
}

/* Faults prezero's service answered since served_begin() (0 under glibc). */
__attribute__((unused)) static uint64_t served_faults(const struct served *s) {
  struct prezero_stats now;
  if (!s->loaded || !pz_stats(&now)) return 0;
  return now.uffd_faults - s->st.uffd_faults;
}

/* A large private anonymous mapping advised MADV_HUGEPAGE right after the
 * mmap, as QEMU does with guest RAM: what prezero serves in "madvise" mode.
 * NULL (errno set) when either call fails. */
__attribute__((unused)) static void *anon_map_huge(size_t len) {
  const char *was = dropin_step;
  dropin_step = "mmap + madvise(MADV_HUGEPAGE) of a large mapping (prezero registers it with its userfaultfd)";
  void *p = anon_map(len);
  if (p && madvise(p, len, MADV_HUGEPAGE) != 0) {
    int e = errno;
    munmap(p, len);
    errno = e;
    p = NULL;
  }
  dropin_step = was;
  return p;
}

#endif
