/* guest-ram-idioms: what VMMs and runtimes do to guest RAM behaves as
 * under the kernel on a mapping prezero serves, and a program's MAP_FIXED
 * over memory prezero handed out does not corrupt prezero.
 *
 * Hazard: prezero serves a large private anonymous mapping advised
 * MADV_HUGEPAGE (as QEMU, Cloud Hypervisor and Firecracker with enable_thp
 * advise guest RAM): its 2 MiB-aligned interior is registered with
 * prezero's userfaultfd, and each first write of a 2 MiB block gets a
 * pre-zeroed huge page moved in from its pool; MADV_POPULATE_WRITE over it
 * gets pool pages moved in first. VMMs then do more to guest RAM than the
 * calls served-mapping-semantics covers: Firecracker's guarded region is
 * not 2 MiB aligned and has guard pages at its edges; QEMU marks guest RAM
 * MADV_DONTFORK and MADV_MERGEABLE and preallocates it from several
 * threads at once; Cloud Hypervisor mbind()s a memory zone to a host node.
 * A block answered across an unaligned edge, a fork that copies what the
 * program excluded, a page moved in from another node against the
 * program's policy, or two populating threads racing for one block show up
 * as wrong bytes, a guard that does not fault, a mapping in a child, a
 * policy or node the kernel would not report, or a page not present. And a
 * program that (by mistake) maps MAP_FIXED over a block it malloc'd, then
 * frees the block, must not make prezero hand out memory that is not zero
 * or not its own.
 *
 * glibc/the kernel: (a) a mapping that starts and ends off 2 MiB
 * boundaries, MAP_FIXED|MAP_NORESERVE over a PROT_NONE reservation, reads
 * zero everywhere, is writable everywhere, and the reservation's pages
 * just outside it fault (SIGSEGV) on read and write; (b) MADV_DONTFORK:
 * the child has no mapping there (mincore ENOMEM, a write kills it with
 * SIGSEGV), the parent keeps its bytes and can touch the rest; (c)
 * MADV_MERGEABLE returns what it returns on any private anonymous mapping
 * (0 with KSM built in, EINVAL without), and changes no byte; (d) mbind
 * MPOL_BIND (MPOL_MF_STRICT|MPOL_MF_MOVE, as Cloud Hypervisor) and
 * MPOL_PREFERRED to node 0: get_mempolicy(MPOL_F_ADDR) reports that mode
 * and node mask, and MPOL_F_ADDR|MPOL_F_NODE node 0 for each written page;
 * (e) four threads calling MADV_POPULATE_WRITE at once over disjoint
 * quarters (page-granular, so quarters share 2 MiB blocks, as QEMU's
 * prealloc threads split guest RAM): all succeed, every page is present
 * (mincore), every byte zero, and the program's writes afterwards are
 * kept; (f) malloc(64 MiB), MAP_FIXED of 16 MiB fresh anonymous memory
 * over its middle, written, the block freed; then 3000 mallocs and callocs
 * of 16 B to 48 MiB (patterns checked before each free, every calloc
 * zero), and a 64 MiB block with 32 MiB MAP_FIXED over it (advised
 * MADV_HUGEPAGE) freed, then calloc(64 MiB) 8 times: zero and writable.
 *
 * The test: each of (a)-(e) on a fresh mapping advised MADV_HUGEPAGE, pool
 * warmed first (PREZERO_POOL_MIN in meson.build). Under prezero each such
 * mapping must have been served (prezero_stats_get: uffd_mappings grew)
 * where userfaultfd with UFFDIO_MOVE is usable; else that sub-case is
 * skipped with the reason. (f) under prezero needs the 64 MiB blocks to be
 * prezero's (large_allocs grew), else it is skipped. If every sub-case is
 * skipped, the test is (77). A hang (the watchdog, 120 s) fails it, saying
 * which sub-case. */
#include "dropin.h"
#include "served.h"

#include <pthread.h>
#include <setjmp.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_MERGEABLE
#define MADV_MERGEABLE 12
#define MADV_UNMERGEABLE 13
#endif
#define MPOL_PREFERRED 1
#define MPOL_BIND 2
#define MPOL_F_NODE (1 << 0)
#define MPOL_F_ADDR (1 << 1)
#define MPOL_MF_STRICT (1 << 0)
#define MPOL_MF_MOVE (1 << 1)
#define MAXNODE 1024

/* Bytes of [p, p+len) that do not read c. */
static size_t bytes_not(const char *p, size_t len, char c) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) n += p[i] != c;
  return n;
}

static uint64_t tag_of(size_t page) { return page * 0x9E3779B97F4A7C15ull + 1; }

/* ---------------------------------------------------------------- (a) */

static void unaligned_guarded(void) {
  sub = "(a) unaligned, guard pages";
  const size_t rlen = 80 * MiB, len = 64 * MiB + 5 * PAGE;
  char *r = mmap(NULL, rlen, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) skip("mmap(80 MiB, PROT_NONE, MAP_NORESERVE): %s", strerror(errno));
  char *g = align_up_2m(r) + 2 * MiB + 3 * PAGE; /* 12 KiB past a 2 MiB boundary, guard pages below */
  struct served sv;
  served_begin(&sv);
  char *p = mmap(g, len, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_NORESERVE | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p != g) {
    FAILS("mmap(MAP_FIXED|MAP_NORESERVE, 64 MiB + 20 KiB) inside the reservation: expected %p, got %s", (void *)g,
          p == MAP_FAILED ? strerror(errno) : "another address");
    munmap(r, rlen);
    return;
  }
  if (madvise(g, len, MADV_HUGEPAGE) != 0) {
    FAILS("madvise(MADV_HUGEPAGE): expected success, got %s", strerror(errno));
    munmap(r, rlen);
    return;
  }
  if (!served_check("(a): the unaligned guarded mapping", &sv, 1)) {
    skipped++;
    munmap(r, rlen);
    return;
  }
  ran++;
  /* first touches, in order, as vCPUs do: an 8-byte exchange on every even
   * page (old value must be 0); the odd pages are read first */
  size_t pages = len / PAGE, bad = 0, first_bad = 0;
  for (size_t pg = 0; pg < pages; pg += 2)
    if (__atomic_exchange_n((uint64_t *)(g + pg * PAGE), tag_of(pg), __ATOMIC_RELAXED) != 0 && !bad++) first_bad = pg;
  if (bad) FAILS("first writes: expected every page to read 0 before, %zu did not (first: page %zu)", bad, first_bad);
  size_t wrong = 0, first_wrong = 0;
  for (size_t pg = 0; pg < pages; pg++) {
    const char *q = g + pg * PAGE;
    uint64_t w;
    memcpy(&w, q, 8);
    bool ok = (pg % 2 ? w == 0 : w == tag_of(pg)) && !nonzero_bytes(q + 8, PAGE - 8);
    if (!ok && !wrong++) first_wrong = pg;
  }
  if (wrong)
    FAILS("after the first writes: expected the tag on even pages and 0 elsewhere, %zu of %zu pages differ (first: "
          "page %zu, %zu KiB into the mapping)", wrong, pages, first_wrong, first_wrong * PAGE / KiB);
  memset(g, 0xa5, len);
  size_t nw = bytes_not(g, len, (char)0xa5);
  if (nw) FAILS("all of it filled with 0xa5: expected every byte to read it back, %zu did not", nw);
  if (!access_faults(g - 1, false) || !access_faults(g - 1, true))
    FAILS("the guard page below the mapping: expected a read and a write to fault (SIGSEGV), one went through");
  if (!access_faults(g + len, false) || !access_faults(g + len, true))
    FAILS("the guard page above the mapping: expected a read and a write to fault (SIGSEGV), one went through");
  served_note(sub, &sv);
  munmap(r, rlen);
}

/* ---------------------------------------------------------------- (b) */

static int child_status(void (*fn)(char *), char *m) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) skip("fork: %s", strerror(errno));
  if (pid == 0) {
    signal(SIGSEGV, SIG_DFL);
    alarm(20);
    fn(m);
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  return st;
}

static void child_mincore(char *m) {
  unsigned char v[16];
  int r = mincore(m, 16 * PAGE, v);
  _exit(r == -1 && errno == ENOMEM ? 0 : 3);
}

static void child_write(char *m) { *(volatile char *)m = 1; }

static void dontfork(void) {
  sub = "(b) MADV_DONTFORK";
  const size_t len = 64 * MiB;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  write_blocks(m, 0, 15, 1);
  if (madvise(m, len, MADV_DONTFORK) != 0) {
    FAILS("madvise(MADV_DONTFORK): expected success, got %s", strerror(errno));
    munmap(m, len);
    return;
  }
  int st = child_status(child_mincore, m);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    FAILS("a forked child's mincore() of the MADV_DONTFORK mapping: expected ENOMEM (exit 0), got %s%s", wait_desc(st),
          WIFEXITED(st) && WEXITSTATUS(st) == 3 ? " (mincore succeeded or failed otherwise)" : "");
  st = child_status(child_write, m);
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV)
    FAILS("a forked child's write to the MADV_DONTFORK mapping: expected SIGSEGV, got %s", wait_desc(st));
  check_blocks(m, 0, 15, 1, "the parent after the forks");
  size_t nz = nonzero_bytes(m + 16 * HPAGE, 4 * HPAGE);
  if (nz) FAILS("the parent's untouched blocks 16..19 after the forks: expected 0, %zu bytes are not", nz);
  write_blocks(m, 16, 31, 2);
  check_blocks(m, 16, 31, 2, "the parent's blocks 16..31 written after the forks");
  served_note(sub, &sv);
  munmap(m, len);
}

/* ---------------------------------------------------------------- (c) */

static void mergeable(void) {
  sub = "(c) MADV_MERGEABLE";
  /* the kernel's answer on memory prezero never serves (1 MiB) */
  char *ref = mmap(NULL, MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ref == MAP_FAILED) skip("mmap(1 MiB): %s", strerror(errno));
  errno = 0;
  int r0 = madvise(ref, MiB, MADV_MERGEABLE), e0 = errno;
  const size_t len = 64 * MiB;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) {
    munmap(ref, MiB);
    return;
  }
  memset(m, 0x5a, 2 * HPAGE); /* identical pages: what KSM would merge */
  write_blocks(m, 2, 15, 1);
  errno = 0;
  int r1 = madvise(m, len, MADV_MERGEABLE), e1 = errno;
  if (r1 != r0 || (r1 && e1 != e0))
    FAILS("madvise(MADV_MERGEABLE) on the served mapping: expected %d (%s) as on a 1 MiB mapping, got %d (%s)", r0,
          r0 ? strerror(e0) : "success", r1, r1 ? strerror(e1) : "success");
  char run[16] = "?";
  read_file("/sys/kernel/mm/ksm/run", run, sizeof run);
  run[strcspn(run, "\n")] = 0;
  note("(c): MADV_MERGEABLE returned %d (%s) (KSM run: %s)", r1, r1 ? strerror(e1) : "success", run);
  size_t nw = bytes_not(m, 2 * HPAGE, 0x5a);
  if (nw) FAILS("blocks 0-1 after MADV_MERGEABLE: expected all 0x5a, %zu bytes are not", nw);
  check_blocks(m, 2, 15, 1, "after MADV_MERGEABLE");
  size_t nz = nonzero_bytes(m + 16 * HPAGE, 16 * HPAGE);
  if (nz) FAILS("untouched blocks 16..31 after MADV_MERGEABLE: expected 0, %zu bytes are not", nz);
  write_blocks(m, 16, 31, 2);
  check_blocks(m, 16, 31, 2, "blocks 16..31 written after MADV_MERGEABLE");
  errno = 0;
  r0 = madvise(ref, MiB, MADV_UNMERGEABLE), e0 = errno;
  errno = 0;
  r1 = madvise(m, len, MADV_UNMERGEABLE), e1 = errno;
  if (r1 != r0 || (r1 && e1 != e0))
    FAILS("madvise(MADV_UNMERGEABLE): expected %d (%s) as on a 1 MiB mapping, got %d (%s)", r0,
          r0 ? strerror(e0) : "success", r1, r1 ? strerror(e1) : "success");
  check_blocks(m, 2, 15, 1, "after MADV_UNMERGEABLE");
  check_blocks(m, 16, 31, 2, "after MADV_UNMERGEABLE");
  served_note(sub, &sv);
  munmap(m, len);
  munmap(ref, MiB);
}

/* ---------------------------------------------------------------- (d) */

static long sys_mbind(void *p, size_t len, int mode, const unsigned long *mask, unsigned long maxnode, unsigned flags) {
  return syscall(SYS_mbind, p, len, mode, mask, maxnode, flags);
}

static void numa_policy(void) {
  sub = "(d) mbind";
  const size_t len = 64 * MiB, half = len / 2;
  unsigned long mask[MAXNODE / (8 * sizeof(unsigned long))] = {1}; /* node 0 */
  /* does this kernel have NUMA policies at all? (on a scratch mapping) */
  char *t = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (t == MAP_FAILED) skip("mmap(4 KiB): %s", strerror(errno));
  if (sys_mbind(t, PAGE, MPOL_BIND, mask, MAXNODE, 0) != 0 && errno == ENOSYS) {
    note("SKIP %s: mbind(2): ENOSYS (a kernel without NUMA)", sub);
    skipped++;
    munmap(t, PAGE);
    return;
  }
  munmap(t, PAGE);
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  if (sys_mbind(m, half, MPOL_BIND, mask, MAXNODE, MPOL_MF_STRICT | MPOL_MF_MOVE) != 0) {
    FAILS("mbind(MPOL_BIND, node 0, MPOL_MF_STRICT|MPOL_MF_MOVE) of the first 32 MiB: expected success, got %s",
          strerror(errno));
    munmap(m, len);
    return;
  }
  if (sys_mbind(m + half, half, MPOL_PREFERRED, mask, MAXNODE, 0) != 0) {
    FAILS("mbind(MPOL_PREFERRED, node 0) of the last 32 MiB: expected success, got %s", strerror(errno));
    munmap(m, len);
    return;
  }
  write_blocks(m, 0, 31, 1); /* first touches, after the policy */
  check_blocks(m, 0, 31, 1, "written after mbind");
  for (size_t b = 0; b < 32; b++) {
    int mode = -1, node = -1;
    unsigned long got[MAXNODE / (8 * sizeof(unsigned long))];
    memset(got, 0xff, sizeof got);
    int want = b < 16 ? MPOL_BIND : MPOL_PREFERRED;
    if (syscall(SYS_get_mempolicy, &mode, got, MAXNODE, m + at(b), MPOL_F_ADDR) != 0) {
      FAILS("get_mempolicy(MPOL_F_ADDR) at block %zu: expected success, got %s", b, strerror(errno));
      break;
    }
    if (mode != want || got[0] != 1) {
      FAILS("get_mempolicy(MPOL_F_ADDR) at block %zu: expected mode %d, nodes 0x1, got mode %d, nodes 0x%lx", b, want,
            mode, got[0]);
      break;
    }
    if (syscall(SYS_get_mempolicy, &node, NULL, 0, m + at(b), MPOL_F_ADDR | MPOL_F_NODE) != 0 || node != 0) {
      FAILS("get_mempolicy(MPOL_F_ADDR|MPOL_F_NODE) of the written page in block %zu: expected node 0, got %d (%s)", b,
            node, node < 0 ? strerror(errno) : "no error");
      break;
    }
  }
  served_note(sub, &sv);
  munmap(m, len);
}

/* ---------------------------------------------------------------- (e) */

struct quarter {
  char *p;
  size_t len;
  int r, err;
};

static pthread_barrier_t go;

static void *populate_quarter(void *arg) {
  struct quarter *q = arg;
  pthread_barrier_wait(&go);
  errno = 0;
  q->r = madvise(q->p, q->len, MADV_POPULATE_WRITE);
  q->err = errno;
  return NULL;
}

static void populate_threads(void) {
  sub = "(e) MADV_POPULATE_WRITE, 4 threads";
  const size_t len = 128 * MiB + 6 * PAGE, pages = len / PAGE;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  /* QEMU's split: numpages / threads each, the last one the remainder */
  struct quarter q[4];
  pthread_t t[4];
  pthread_barrier_init(&go, NULL, 4);
  for (int i = 0; i < 4; i++) {
    size_t first = pages / 4 * (size_t)i, n = i == 3 ? pages - first : pages / 4;
    q[i] = (struct quarter){m + first * PAGE, n * PAGE, 0, 0};
    if (pthread_create(&t[i], NULL, populate_quarter, &q[i]) != 0) skip("pthread_create failed");
  }
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&go);
  for (int i = 0; i < 4; i++)
    if (q[i].r != 0)
      FAILS("thread %d's MADV_POPULATE_WRITE of %zu KiB at +%zu KiB: expected success, got %s", i, q[i].len / KiB,
            (size_t)(q[i].p - m) / KiB, strerror(q[i].err));
  size_t res = resident_pages(m, len);
  if (res != pages) FAILS("pages present after the four populates: expected %zu (all), mincore says %zu", pages, res);
  size_t nz = nonzero_bytes(m, len);
  if (nz) FAILS("after the four populates: expected every byte 0, %zu are not", nz);
  for (size_t pg = 0; pg < pages; pg++) *(uint64_t *)(m + pg * PAGE + (pg % 8) * 8) = tag_of(pg);
  size_t wrong = 0, first = 0;
  for (size_t pg = 0; pg < pages; pg++) {
    uint64_t w;
    memcpy(&w, m + pg * PAGE + (pg % 8) * 8, 8);
    if ((w != tag_of(pg) || m[pg * PAGE + PAGE - 1] != 0) && !wrong++) first = pg;
  }
  if (wrong) FAILS("the program's writes after the populates: %zu pages lost or changed them (first: page %zu)", wrong,
                   first);
  served_note(sub, &sv);
  munmap(m, len);
}

/* ---------------------------------------------------------------- (f) */

/* Whether the last malloc of `bytes` came from prezero's large chunks. */
static bool large_from_prezero(const struct served *before, const char *what) {
  if (!before->loaded) return true;
  struct prezero_stats now;
  pz_stats(&now);
  if (now.large_allocs > before->st.large_allocs) return true;
  note("SKIP %s: %s did not come from prezero's large chunks (large_allocs +0)", sub, what);
  return false;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static size_t random_size(void) {
  uint64_t r = next_rand();
  switch (r % 8) {
  case 0: case 1: case 2: case 3: return 16 + (size_t)(r >> 8) % 4080;             /* small */
  case 4: case 5: return 64 * KiB + (size_t)(r >> 8) % (1536 * KiB);             /* medium */
  case 6: return 2 * MiB + (size_t)(r >> 8) % (14 * MiB);                         /* large */
  default: return 16 * MiB + (size_t)(r >> 8) % (32 * MiB);                       /* huge */
  }
}

/* Stamp one word per 4 KiB page (and the last byte, not overlapping a
 * word) with tag; check it. */
static void stamp(char *p, size_t n, uint64_t tag) {
  for (size_t o = 0; o + 9 <= n; o += PAGE) memcpy(p + o, &(uint64_t){tag ^ o}, 8);
  p[n - 1] = (char)tag;
}
static bool stamped(const char *p, size_t n, uint64_t tag) {
  for (size_t o = 0; o + 9 <= n; o += PAGE) {
    uint64_t w;
    memcpy(&w, p + o, 8);
    if (w != (tag ^ o)) return false;
  }
  return p[n - 1] == (char)tag;
}
/* A calloc'd block reads zero: every byte up to 64 KiB, else 3 words a page
 * and the whole first and last pages. */
static bool zeroed(const char *p, size_t n) {
  if (n <= 64 * KiB) return !nonzero_bytes(p, n);
  if (nonzero_bytes(p, PAGE) || nonzero_bytes(p + n - PAGE, PAGE)) return false;
  for (size_t o = 0; o + PAGE <= n; o += PAGE) {
    uint64_t a, b, c;
    memcpy(&a, p + o, 8);
    memcpy(&b, p + o + PAGE / 2, 8);
    memcpy(&c, p + o + PAGE - 8, 8);
    if (a | b | c) return false;
  }
  return true;
}

static void churn(int rounds) {
  enum { LIVE = 48 };
  struct { char *p; size_t n; uint64_t tag; } live[LIVE];
  memset(live, 0, sizeof live);
  size_t bad_zero = 0, bad_stamp = 0, nulls = 0;
  for (int i = 0; i < rounds; i++) {
    unsigned k = (unsigned)(next_rand() % LIVE);
    if (live[k].p) {
      if (!stamped(live[k].p, live[k].n, live[k].tag) && !bad_stamp++)
        FAILS("churn: a %zu-byte block lost its pattern before free (round %d)", live[k].n, i);
      free(live[k].p);
      live[k].p = NULL;
    }
    size_t n = random_size();
    bool c = next_rand() % 2;
    char *p = c ? calloc(1, n) : malloc(n);
    if (!p) {
      if (!nulls++) FAILS("churn: %s(%zu): expected a block, got NULL (%s)", c ? "calloc" : "malloc", n, strerror(errno));
      continue;
    }
    if (c && !zeroed(p, n) && !bad_zero++)
      FAILS("churn: calloc(%zu) at round %d: expected zero, it is not (first of its kind)", n, i);
    live[k].p = p;
    live[k].n = n;
    live[k].tag = next_rand() | 1;
    stamp(p, n, live[k].tag);
  }
  for (unsigned k = 0; k < LIVE; k++)
    if (live[k].p) {
      if (!stamped(live[k].p, live[k].n, live[k].tag) && !bad_stamp++)
        FAILS("churn: a %zu-byte block lost its pattern before the final free", live[k].n);
      free(live[k].p);
    }
  if (bad_zero || bad_stamp || nulls)
    FAILS("churn: %zu callocs not zero, %zu blocks with a lost pattern, %zu NULLs in %d rounds", bad_zero, bad_stamp,
          nulls, rounds);
}

static char *page_up(char *p) { return (char *)(((uintptr_t)p + PAGE - 1) & ~(uintptr_t)(PAGE - 1)); }

static void fixed_over_malloc(void) {
  sub = "(f) MAP_FIXED over malloc'd memory";
  struct served sv;
  served_begin(&sv);
  char *b = malloc(64 * MiB);
  if (!b) {
    FAILS("malloc(64 MiB): expected a block, got NULL (%s)", strerror(errno));
    return;
  }
  if (!large_from_prezero(&sv, "malloc(64 MiB)")) {
    free(b);
    skipped++;
    return;
  }
  ran++;
  memset(b, 0x3c, 64 * MiB);
  char *mid = page_up(b + 24 * MiB);
  char *q = mmap(mid, 16 * MiB, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (q != mid) {
    FAILS("mmap(MAP_FIXED, 16 MiB) over the middle of the block: expected %p, got %s", (void *)mid,
          q == MAP_FAILED ? strerror(errno) : "another address");
    free(b);
    return;
  }
  size_t nz = nonzero_bytes(q, 16 * MiB);
  if (nz) FAILS("the 16 MiB mapped MAP_FIXED over the block: expected 0, %zu bytes are not", nz);
  memset(q, 0x77, 16 * MiB);
  size_t kept = bytes_not(b, (size_t)(mid - b), 0x3c) + bytes_not(mid + 16 * MiB, (size_t)(b + 64 * MiB - mid - 16 * MiB), 0x3c);
  if (kept) FAILS("the block beside the MAP_FIXED part: expected 0x3c, %zu bytes are not", kept);
  free(b);
  sleep_ms(1200); /* an allocator's background zeroing of the freed block happens here */
  churn(3000);

  /* a MAP_FIXED part advised MADV_HUGEPAGE (what prezero would serve), the
   * block freed, then allocated again */
  served_begin(&sv);
  b = malloc(64 * MiB);
  if (!b) {
    FAILS("malloc(64 MiB), second: expected a block, got NULL (%s)", strerror(errno));
    return;
  }
  if (!large_from_prezero(&sv, "the second malloc(64 MiB)")) {
    free(b);
    return;
  }
  memset(b, 0x3c, 64 * MiB);
  mid = align_up_2m(b + 16 * MiB);
  q = mmap(mid, 32 * MiB, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (q != mid) {
    FAILS("mmap(MAP_FIXED, 32 MiB) over the second block: expected %p, got %s", (void *)mid,
          q == MAP_FAILED ? strerror(errno) : "another address");
    free(b);
    return;
  }
  if (madvise(q, 32 * MiB, MADV_HUGEPAGE) != 0)
    FAILS("madvise(MADV_HUGEPAGE) of the MAP_FIXED part: expected success, got %s", strerror(errno));
  write_blocks(q, 0, 7, 4);
  check_blocks(q, 0, 7, 4, "the 32 MiB MAP_FIXED part written");
  nz = nonzero_bytes(q + 8 * HPAGE, 8 * HPAGE);
  if (nz) FAILS("untouched blocks 8..15 of the MAP_FIXED part: expected 0, %zu bytes are not", nz);
  free(b);
  sleep_ms(1200);
  char *again[8];
  for (int i = 0; i < 8; i++) {
    again[i] = calloc(1, 64 * MiB);
    if (!again[i]) {
      FAILS("calloc(64 MiB) #%d after the free: expected a block, got NULL (%s)", i, strerror(errno));
      continue;
    }
    if (!zeroed(again[i], 64 * MiB)) FAILS("calloc(64 MiB) #%d after the free%s: expected zero, it is not", i,
                                           again[i] == b ? " (at the freed block's address)" : "");
    memset(again[i], 0x11 + i, 64 * MiB);
  }
  for (int i = 0; i < 8; i++)
    if (again[i]) {
      size_t n = bytes_not(again[i], 64 * MiB, (char)(0x11 + i));
      if (n) FAILS("calloc(64 MiB) #%d filled with 0x%x: expected it back, %zu bytes differ", i, 0x11 + i, n);
      free(again[i]);
    }
  churn(1000);
}

/* Under prezero: time for its workers to make PREZERO_POOL_MIN ready again
 * after a sub-case took from it, so first touches find huge pages to move
 * in rather than zeros to copy. */
static void refill(void) {
  if (prezero_loaded()) sleep_ms(1000);
}

int main(void) {
  dropin_name = "guest-ram-idioms";
  watchdog(120);
  hang_report = report;
  warm_pool(256 * MiB, 1500);

  unaligned_guarded();
  refill();
  dontfork();
  refill();
  mergeable();
  refill();
  numa_policy();
  refill();
  populate_threads();
  fixed_over_malloc();

  note("%d sub-cases ran, %d skipped", ran, skipped);
  if (!ran && !dropin_failures) skip("prezero cannot serve a mapping here (see above)");
  return dropin_result();
}
