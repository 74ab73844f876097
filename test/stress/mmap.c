/* Large anonymous mmaps (PREZERO_MMAP): a mapping served from the pool
 * must behave exactly like one from the kernel for every later call: read
 * zero, one VMA, partial munmap, mremap (grow, shrink, move), mprotect,
 * madvise(MADV_DONTNEED) reading zero afterwards, mlock, fork (copy on
 * write both ways), MAP_POPULATE. Each case runs on a served mapping (the
 * program madvises MADV_HUGEPAGE, as VMMs do with guest RAM: the kernel
 * would give it huge pages) and on one that is not (MADV_NOHUGEPAGE).
 * Sparse reservations (64 GiB PROT_NONE, 64 GiB MAP_NORESERVE) are neither
 * populated nor refused.
 *
 * Where served mappings are answered by userfaultfd (PREZERO_UFFD, root on
 * Linux 6.8+), also: a scattered touch costs only the blocks touched; a
 * read costs no memory; touches in address order bring in only the blocks
 * touched (nothing ahead); a fault taken inside the kernel (read(2) into
 * the mapping) is served; four threads touching at once; a 4 KiB hole
 * punched into a moved huge page reads zero (read and write); a forked
 * child touching untouched parts; an empty pool (zeros copied in); a
 * mapping whose length is not a multiple of 2 MiB; no descriptor of ours
 * is visible to the program, which may close all of its own. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prezero.h"

#define MiB ((size_t)1 << 20)
#define LEN (128 * MiB)
static int failures;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "mmap: %s: ", variant);                                                      \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fprintf(stderr, "\n");                                                                       \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static const char *variant;

static size_t rss(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, res = 0;
  if (f) {
    if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0;
    fclose(f);
  }
  return res * 4096;
}

static int vmas_in(const void *a, size_t len) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  int n = 0;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long s, e;
    if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s < (uintptr_t)a + len && e > (uintptr_t)a) n++;
  }
  if (f) fclose(f);
  return n;
}

static int all_zero(const unsigned char *p, size_t len) {
  for (size_t i = 0; i < len; i += 4096)
    if (p[i] || p[i + 4095]) return 0;
  return 1;
}

static int child_writes_segv(char *p) { /* a write to p kills a child with SIGSEGV */
  pid_t pid = fork();
  if (pid == 0) {
    p[0] = 1;
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  return WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV;
}

static uint64_t served(void) {
  struct prezero_stats st;
  prezero_stats_get(&st);
  return st.mmap_served;
}

static struct prezero_stats stats(void) {
  struct prezero_stats st;
  prezero_stats_get(&st);
  return st;
}

/* advice MADV_HUGEPAGE: served; MADV_NOHUGEPAGE: not */
static char *map_advised(int extra, int advice) {
  char *m = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
  if (m != MAP_FAILED && madvise(m, LEN, advice) != 0) CHECK(0, "madvise: %s", strerror(errno));
  return m;
}
static char *map(int extra) { return map_advised(extra, MADV_HUGEPAGE); }

/* Freed memory becomes ready in the pool (the workers zero it). */
static void warm_pool(void) {
  char *volatile p = calloc(1, 2 * LEN);
  memset(p, 0x77, 2 * LEN);
  free(p);
  for (int i = 0; i < 100; i++) {
    struct prezero_stats st;
    prezero_stats_get(&st);
    if (st.chunks_ready * 2 * MiB >= LEN) return;
    usleep(20000);
  }
}

static void semantics(int extra, int advice, int expect_served) {
  warm_pool();
  uint64_t s0 = stats().uffd_mappings;
  char *m = map_advised(extra, advice);
  CHECK(m != MAP_FAILED, "mmap failed: %s", strerror(errno));
  if (m == MAP_FAILED) return;
  CHECK(stats().uffd_mappings - s0 == (uint64_t)expect_served, "served %llu, expected %d",
        (unsigned long long)(stats().uffd_mappings - s0), expect_served);
  CHECK(all_zero((unsigned char *)m, LEN), "a fresh mapping does not read zero");
  CHECK(vmas_in(m, LEN) == 1, "the mapping is %d VMAs, not one", vmas_in(m, LEN));
  memset(m, 0x5a, LEN);

  /* fork: copy on write, both ways */
  pid_t pid = fork();
  if (pid == 0) {
    int ok = (unsigned char)m[LEN / 2] == 0x5a;
    m[LEN / 2] = 1;
    usleep(100000);
    ok &= m[10] == 0x5a; /* the parent's later write is not seen */
    _exit(ok ? 0 : 1);
  }
  usleep(20000);
  m[10] = 2;
  int st;
  waitpid(pid, &st, 0);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork: the child saw the wrong data");
  CHECK((unsigned char)m[LEN / 2] == 0x5a, "fork: the child's write reached the parent");
  m[10] = 0x5a;

  /* madvise(MADV_DONTNEED): reads zero afterwards, also where huge pages were moved in */
  CHECK(madvise(m, 64 * MiB, MADV_DONTNEED) == 0, "madvise: %s", strerror(errno));
  CHECK(all_zero((unsigned char *)m, 64 * MiB), "not zero after MADV_DONTNEED");
  CHECK((unsigned char)m[64 * MiB] == 0x5a, "MADV_DONTNEED went too far");
  memset(m, 0x5a, 64 * MiB);

  /* mprotect */
  CHECK(mprotect(m, 4 * MiB, PROT_READ) == 0, "mprotect: %s", strerror(errno));
  CHECK(child_writes_segv(m), "a write to a read-only part did not fault");
  CHECK((unsigned char)m[0] == 0x5a, "read-only part lost its data");
  CHECK(mprotect(m, 4 * MiB, PROT_READ | PROT_WRITE) == 0, "mprotect back: %s", strerror(errno));
  m[0] = 0x5a;

  /* mlock */
  int r = mlock(m, 16 * MiB);
  CHECK(r == 0 || errno == EPERM || errno == ENOMEM, "mlock: %s", strerror(errno));
  if (r == 0) CHECK(munlock(m, 16 * MiB) == 0, "munlock: %s", strerror(errno));

  /* mremap: grow (new part zero), shrink, move */
  char *g = mremap(m, LEN, 2 * LEN, MREMAP_MAYMOVE);
  CHECK(g != MAP_FAILED, "mremap grow: %s", strerror(errno));
  if (g == MAP_FAILED) return;
  CHECK((unsigned char)g[LEN - 1] == 0x5a && (unsigned char)g[7] == 0x5a, "mremap lost data");
  CHECK(all_zero((unsigned char *)g + LEN, LEN), "grown part not zero");
  char *s = mremap(g, 2 * LEN, LEN / 2, 0);
  CHECK(s == g, "mremap shrink: %s", strerror(errno));
  CHECK((unsigned char)s[LEN / 2 - 1] == 0x5a, "shrink lost data");

  /* partial munmap: a hole in the middle, both sides still there */
  CHECK(munmap(s + 16 * MiB, 16 * MiB) == 0, "partial munmap: %s", strerror(errno));
  CHECK((unsigned char)s[16 * MiB - 1] == 0x5a && (unsigned char)s[32 * MiB] == 0x5a, "munmap took too much");
  CHECK(child_writes_segv(s + 16 * MiB), "the unmapped hole is still mapped");
  CHECK(munmap(s, 16 * MiB) == 0 && munmap(s + 32 * MiB, LEN / 2 - 32 * MiB) == 0, "munmap: %s",
        strerror(errno));
}

static void populate_flag(void) {
  variant = "MAP_POPULATE";
  warm_pool();
  char *m = map(MAP_POPULATE);
  CHECK(m != MAP_FAILED, "mmap failed");
  if (m == MAP_FAILED) return;
  unsigned char vec[LEN / 4096];
  CHECK(mincore(m, LEN, vec) == 0, "mincore: %s", strerror(errno));
  size_t res = 0;
  for (size_t i = 0; i < LEN / 4096; i++) res += vec[i] & 1;
  CHECK(res == LEN / 4096, "MAP_POPULATE left %zu of %zu pages out", LEN / 4096 - res, LEN / 4096);
  CHECK(all_zero((unsigned char *)m, LEN), "not zero");
  munmap(m, LEN);
}

static void sparse(void) {
  variant = "sparse";
  size_t big = (size_t)64 << 30, r0 = rss();
  uint64_t s0 = served();
  char *a = mmap(NULL, big, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  char *b = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  CHECK(a != MAP_FAILED, "64 GiB PROT_NONE refused: %s", strerror(errno));
  CHECK(b != MAP_FAILED, "64 GiB MAP_NORESERVE refused: %s", strerror(errno));
  CHECK(rss() < r0 + 16 * MiB, "a sparse reservation was populated: RSS +%zu MiB", (rss() - r0) / MiB);
  CHECK(served() == s0, "a sparse reservation was served from the pool");
  if (b != MAP_FAILED) {
    b[big - 1] = 1; /* usable, one page at a time */
    munmap(b, big);
  }
  if (a != MAP_FAILED) munmap(a, big);
}

struct toucher {
  char *m;
  size_t len;
  int id, n;
};
static void *touch_part(void *arg) {
  struct toucher *t = arg;
  for (size_t off = (size_t)t->id * 4096; off < t->len; off += (size_t)t->n * 4096) {
    if (t->m[off + 7]) return (void *)1;
    t->m[off] = (char)(t->id + 1);
  }
  return NULL;
}

static void uffd_cases(void) {
  variant = "userfaultfd";
  warm_pool();
  uint64_t r0 = stats().uffd_mappings;
  char *m = map(0);
  CHECK(m != MAP_FAILED, "mmap failed");
  if (m == MAP_FAILED) return;
  CHECK(stats().uffd_mappings > r0, "not served");
  /* a scattered touch: one byte in every 8th block */
  struct prezero_stats a = stats();
  size_t before = rss();
  for (size_t b = 0; b < LEN; b += 16 * MiB) m[b + 4096 * 3] = 1;
  size_t blocks = LEN / (16 * MiB), got = 0;
  struct prezero_stats z;
  /* the reader thread counts a move after it woke the writer: wait for it */
  for (int w = 0; w < 100; w++, usleep(10000)) {
    z = stats();
    got = z.uffd_moved_bytes + z.uffd_copied_bytes - a.uffd_moved_bytes - a.uffd_copied_bytes;
    if (got >= blocks * 2 * MiB && z.uffd_faults - a.uffd_faults >= blocks) break;
  }
  CHECK(z.uffd_faults - a.uffd_faults == blocks, "%zu blocks touched, %llu faults answered", blocks,
        (unsigned long long)(z.uffd_faults - a.uffd_faults));
  CHECK(got == blocks * 2 * MiB, "touching %zu blocks brought %zu MiB in", blocks, got / MiB);
  (void)before;
  for (size_t b = 0; b < LEN; b += 16 * MiB)
    CHECK(m[b + 4096 * 3] == 1 && m[b] == 0 && m[b + 2 * MiB - 1] == 0, "block at %zu wrong", b);
  CHECK(m[2 * MiB] == 0, "an untouched block does not read zero");

  /* a fault inside the kernel: read(2) into an untouched block */
  int fd = open("/proc/self/stat", O_RDONLY);
  ssize_t n = fd >= 0 ? read(fd, m + 4 * MiB + 100, 64) : -1;
  CHECK(n > 0, "read(2) into an untouched block: %s", strerror(errno));
  if (fd >= 0) close(fd);

  /* a hole in a moved huge page: reads zero, and can be written */
  memset(m + 32 * MiB, 0x33, 2 * MiB);
  CHECK(madvise(m + 32 * MiB + 8192, 4096, MADV_DONTNEED) == 0, "madvise: %s", strerror(errno));
  CHECK(m[32 * MiB + 8192] == 0 && m[32 * MiB + 8191] == 0x33 && m[32 * MiB + 12288] == 0x33,
        "a hole in a huge page does not read zero");
  CHECK(madvise(m + 32 * MiB + 20480, 4096, MADV_DONTNEED) == 0, "madvise: %s", strerror(errno));
  m[32 * MiB + 20480 + 5] = 9;
  CHECK(m[32 * MiB + 20480] == 0 && m[32 * MiB + 20480 + 5] == 9, "a write into a hole went wrong");

  /* a forked child touches untouched blocks (the kernel serves it) */
  pid_t pid = fork();
  if (pid == 0) {
    int ok = m[40 * MiB] == 0;
    m[42 * MiB] = 5;
    ok &= m[42 * MiB] == 5 && m[32 * MiB] == 0x33;
    _exit(ok ? 0 : 1);
  }
  int st;
  waitpid(pid, &st, 0);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork: the child could not use the mapping");
  CHECK(m[42 * MiB] == 0, "fork: the child's write reached the parent");

  /* four threads touching every page at once, interleaved */
  pthread_t t[4];
  struct toucher tt[4];
  char *m2 = map(0);
  CHECK(m2 != MAP_FAILED, "mmap failed");
  if (m2 != MAP_FAILED) {
    for (int i = 0; i < 4; i++) {
      tt[i] = (struct toucher){m2, LEN, i, 4};
      pthread_create(&t[i], NULL, touch_part, &tt[i]);
    }
    for (int i = 0; i < 4; i++) {
      void *r;
      pthread_join(t[i], &r);
      CHECK(r == NULL, "thread %d found a page not zero", i);
    }
    for (size_t off = 0; off < LEN; off += 4096)
      if (m2[off] != (char)((off / 4096) % 4 + 1)) {
        CHECK(0, "page %zu lost its write", off / 4096);
        break;
      }
    munmap(m2, LEN);
  }

  /* touches in address order: each block touched is brought in, none
   * ahead of the touches (a page never touched is not present) */
  warm_pool();
  char *q = map(0);
  CHECK(q != MAP_FAILED, "mmap failed");
  if (q != MAP_FAILED) {
    a = stats();
    for (size_t off = 0; off < LEN / 2; off += 4096) {
      if (q[off + 64]) {
        CHECK(0, "a page brought in is not zero");
        break;
      }
      q[off] = 7;
    }
    z = stats();
    static unsigned char vec[LEN / 4096];
    CHECK(mincore(q, LEN, vec) == 0, "mincore: %s", strerror(errno));
    size_t beyond = 0;
    for (size_t i = LEN / 2 / 4096; i < LEN / 4096; i++) beyond += vec[i] & 1;
    CHECK(beyond == 0, "%zu pages present past the last touch", beyond);
    CHECK(z.uffd_faults - a.uffd_faults == LEN / 2 / (2 * MiB), "%llu faults for %zu blocks touched in order",
          (unsigned long long)(z.uffd_faults - a.uffd_faults), LEN / 2 / (2 * MiB));
    /* reads of untouched blocks: the zero page, no memory */
    size_t r0 = rss();
    for (size_t off = LEN / 2; off < LEN; off += 4096) CHECK(q[off] == 0, "an untouched page is not zero");
    CHECK(rss() < r0 + 4 * MiB, "reading %zu MiB brought %zu MiB in", LEN / 2 / MiB, (rss() - r0) / MiB);
    munmap(q, LEN);
  }

  /* MADV_POPULATE_WRITE, as a VMM preallocating guest RAM: ready chunks
   * moved in without a fault per block; all present, zero, writable, and a
   * block written before keeps its data */
  warm_pool();
  char *pw = map(0);
  CHECK(pw != MAP_FAILED, "mmap failed");
  if (pw != MAP_FAILED) {
    pw[6 * MiB + 5] = 6;
    usleep(50000); /* the reader counts that fault after waking the writer */
    a = stats();
    CHECK(madvise(pw, LEN, MADV_POPULATE_WRITE) == 0, "MADV_POPULATE_WRITE: %s", strerror(errno));
    z = stats();
    static unsigned char pv[LEN / 4096];
    CHECK(mincore(pw, LEN, pv) == 0, "mincore: %s", strerror(errno));
    size_t absent = 0;
    for (size_t i = 0; i < LEN / 4096; i++) absent += !(pv[i] & 1);
    CHECK(absent == 0, "%zu pages not present after MADV_POPULATE_WRITE", absent);
    CHECK(pw[6 * MiB + 5] == 6 && pw[6 * MiB] == 0, "MADV_POPULATE_WRITE lost a write");
    pw[6 * MiB + 5] = 0;
    CHECK(all_zero((unsigned char *)pw, LEN), "MADV_POPULATE_WRITE: not zero");
    /* the served interior: every block but the one written and the partial edges */
    size_t whole = ((uintptr_t)(pw + LEN) & ~(2 * MiB - 1)) - (((uintptr_t)pw + 2 * MiB - 1) & ~(2 * MiB - 1));
    CHECK(z.uffd_faults - a.uffd_faults == 0, "MADV_POPULATE_WRITE: %llu faults to the reader",
          (unsigned long long)(z.uffd_faults - a.uffd_faults));
    CHECK(z.uffd_moved_bytes - a.uffd_moved_bytes == whole - 2 * MiB, "MADV_POPULATE_WRITE moved %llu MiB of %zu",
          (unsigned long long)(z.uffd_moved_bytes - a.uffd_moved_bytes) / MiB, (whole - 2 * MiB) / MiB);
    munmap(pw, LEN);
  }

  /* an empty pool: zeros are copied in */
  prezero_trim();
  a = stats();
  for (size_t b = 64 * MiB; b < LEN; b += 2 * MiB) m[b + 4096] = 1;
  z = stats();
  CHECK(all_zero((unsigned char *)m + 66 * MiB + 8192, 2 * MiB - 8192) && m[66 * MiB] == 0 &&
            m[66 * MiB + 4096] == 1,
        "copied-in block wrong");
  printf("mmap: empty pool: %llu MiB moved, %llu MiB copied in\n",
         (unsigned long long)(z.uffd_moved_bytes - a.uffd_moved_bytes) / MiB,
         (unsigned long long)(z.uffd_copied_bytes - a.uffd_copied_bytes) / MiB);
  munmap(m, LEN);

  /* no descriptor of ours is the program's to see; a program that closes
   * every descriptor (a daemon) changes nothing for served mappings */
  warm_pool();
  char *d = map(0);
  CHECK(d != MAP_FAILED, "mmap failed");
  if (d != MAP_FAILED) {
    d[0] = 1; /* served */
    int seen = 0;
    for (int fd = 0; fd < 1024; fd++) {
      char path[64], target[128];
      snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
      ssize_t l = readlink(path, target, sizeof target - 1);
      if (l > 0 && (target[l] = 0, strstr(target, "userfaultfd"))) seen++;
    }
    CHECK(seen == 0, "%d userfaultfd descriptors visible to the program", seen);
    for (int fd = 3; fd < 1024; fd++) close(fd);
    a = stats();
    d[20 * MiB] = 2; /* a fault after the close: still answered */
    CHECK(d[20 * MiB] == 2 && d[20 * MiB + 1] == 0 && d[40 * MiB] == 0, "after the close");
    CHECK(stats().uffd_faults > a.uffd_faults, "no fault answered after the program closed its descriptors");
    munmap(d, LEN);
    char *e = map(0);
    CHECK(e != MAP_FAILED && all_zero((unsigned char *)e, LEN), "a mapping after the close");
    if (e != MAP_FAILED) munmap(e, LEN);
  }

  /* a length that is not a multiple of 2 MiB: one VMA, the last block too */
  warm_pool();
  size_t odd = LEN - 3 * 4096;
  char *o = mmap(NULL, odd, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(o != MAP_FAILED, "mmap failed");
  if (o != MAP_FAILED) {
    CHECK(madvise(o, odd, MADV_HUGEPAGE) == 0, "madvise: %s", strerror(errno));
    CHECK(vmas_in(o, odd) == 1, "%d VMAs", vmas_in(o, odd));
    o[odd - 1] = 3;
    o[0] = 4;
    CHECK(o[odd - 2] == 0 && o[odd - 1] == 3 && o[1] == 0, "the last partial block went wrong");
    munmap(o, odd);
  }
}

int main(void) {
  const char *off = getenv("PREZERO_MMAP");
  int on = !(off && !strcmp(off, "0"));
  /* served where userfaultfd can answer (root, Linux 6.8+, PREZERO_UFFD) */
  char *probe = map(0);
  uint64_t u0 = stats().uffd_mappings;
  munmap(probe, LEN);
  warm_pool();
  probe = map(0);
  int uffd = on && stats().uffd_mappings > u0;
  munmap(probe, LEN);
  variant = uffd ? "served" : on ? "served (no userfaultfd here: passed through)" : "PREZERO_MMAP=0";
  semantics(0, MADV_HUGEPAGE, uffd);
  variant = "served, MAP_NORESERVE";
  semantics(MAP_NORESERVE, MADV_HUGEPAGE, uffd);
  variant = "passed through (MADV_NOHUGEPAGE)";
  semantics(0, MADV_NOHUGEPAGE, 0);
  populate_flag();
  sparse();
  if (uffd) uffd_cases();
  else printf("mmap: userfaultfd cases skipped: served mappings are not answered by userfaultfd here "
              "(PREZERO_UFFD=0, not privileged, or a kernel before 6.8)\n");
  /* the pool still works */
  unsigned char *c = calloc(1, LEN);
  variant = "after";
  CHECK(c && all_zero(c, LEN), "calloc after the mmaps is not zero");
  free(c);
  struct prezero_stats st;
  prezero_stats_get(&st);
  printf("mmap: served %llu mappings, %llu MiB moved in ready; userfaultfd: %llu mappings, %llu faults, "
         "%llu MiB moved, %llu MiB copied, %llu single pages: %d failures\n",
         (unsigned long long)st.mmap_served, (unsigned long long)st.mmap_ready_bytes / MiB,
         (unsigned long long)st.uffd_mappings, (unsigned long long)st.uffd_faults,
         (unsigned long long)st.uffd_moved_bytes / MiB, (unsigned long long)st.uffd_copied_bytes / MiB,
         (unsigned long long)st.uffd_fallbacks, failures);
  return failures != 0;
}
