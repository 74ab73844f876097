/* served-mapping-semantics: a mapping prezero serves behaves as the
 * kernel's does under every memory call a program makes on it.
 *
 * Hazard: prezero serves a large private anonymous mapping (>= 32 MiB)
 * where the kernel would back it with huge pages (THP "always", or after
 * the program's MADV_HUGEPAGE in "madvise" mode, as QEMU does with guest
 * RAM and the JVM with its heap): it registers the range with its own
 * userfaultfd and answers each first write of a 2 MiB block by moving a
 * pre-zeroed huge page in from its pool (reads: the zero page). The program
 * then moves, shrinks, cuts, protects, discards, forks, locks and maps over
 * that range as it likes: an answer that puts a page where the mapping
 * changed, a stale registration that follows a range that moved, a pool
 * page shared with a forked child moved in, or a registration the
 * program's MAP_FIXED lands on, shows up as wrong data, a page where none
 * should be, a fault that never returns, or a write that does not fault.
 *
 * glibc/the kernel: what the kernel documents for anonymous memory. mremap
 * keeps the contents and the grown part reads zero; a shrink or munmap
 * takes the pages away (mincore ENOMEM there); PROT_READ makes a write
 * fault (SIGSEGV) and keeps the contents; MADV_DONTNEED makes the range
 * read zero (nothing present until touched); fork copies on write, both
 * ways; the last, partial 2 MiB block of a mapping is ordinary memory;
 * MAP_FIXED replaces what was there with fresh zero memory and leaves the
 * rest alone; MAP_POPULATE makes every page present (zero); mlock makes the
 * locked range present, contents unchanged.
 *
 * The test: each sub-case on fresh mappings advised MADV_HUGEPAGE right
 * after the mmap (pool warmed first, PREZERO_POOL_MIN in meson.build, so
 * prezero has ready huge pages to move in). Under prezero, each such
 * mapping must have been served (prezero_stats_get: uffd_mappings grew;
 * MAP_POPULATE: mmap_served grew) where userfaultfd with UFFDIO_MOVE is
 * usable; else the sub-case is skipped with the reason, and if every one
 * is, the test (77). Then:
 *   populate   MAP_POPULATE of 128 MiB: mincore shows all 32768 pages
 *              present, every byte zero;
 *   grow       64 MiB, even blocks written, mremap to 128 MiB
 *              (MREMAP_MAYMOVE): written bytes kept, the rest and the new
 *              64 MiB read zero (one byte per page), every block writable;
 *   shrink     64 MiB, even blocks written, mremap to 32 MiB in place:
 *              the first 32 MiB keep their bytes, the rest is gone
 *              (mincore ENOMEM), the odd blocks read zero and are writable;
 *   munmap     64 MiB, blocks 0..23 written; munmap of blocks 8..15, of 10
 *              pages inside written block 20 and of 3 pages inside
 *              untouched block 26: the holes are gone (ENOMEM), the rest
 *              keeps its bytes, untouched pages read zero, and pages on
 *              both sides of the hole in block 26 are writable;
 *   mprotect   64 MiB, even blocks written, mprotect PROT_READ: bytes kept,
 *              odd blocks read zero; a write to a written page and to a
 *              never-touched page gets SIGSEGV, in a forked child and in
 *              this process; PROT_READ|PROT_WRITE again: writable, zero;
 *   dontneed   64 MiB, blocks 0..3 filled (0x5a), one byte in blocks
 *              4..31; MADV_DONTNEED of blocks 0-1 and of 128 KiB inside
 *              block 2: no page of those present (mincore), they read
 *              zero, the rest keeps its bytes, and they are writable again;
 *   fork       64 MiB, blocks 0..15 written (0x11), fork: the child sees
 *              them, writes 0x22 to blocks 0..7 (shared) and 16..23 (fresh
 *              there); the parent still reads 0x11 and zero there, then
 *              writes 0x33 to blocks 8..15 and 0x44 to 24..31 (fresh): the
 *              child still reads 0x11 and zero there;
 *   oddlen     a 33 MiB + 12 KiB mapping: first and last bytes, the pages
 *              of the last, partial 2 MiB block all writable (filled and
 *              read back), the rest zero;
 *   reserve    QEMU's and the JVM's idiom: a 256 MiB PROT_NONE|MAP_NORESERVE
 *              reservation, 128 MiB mmap'd MAP_FIXED read/write over its
 *              middle (plain, then with MAP_NORESERVE), advised
 *              MADV_HUGEPAGE: reads zero (one byte per page), every block
 *              writable, and the reservation outside it still faults
 *              (SIGSEGV) on a write;
 *   fixed      128 MiB, blocks 0..47 written; MAP_FIXED read/write over
 *              blocks 16..31 (then advised MADV_HUGEPAGE: served again)
 *              and over 64 KiB inside untouched block 50: the replaced
 *              parts read zero and are writable, the rest keeps its bytes,
 *              pages beside the 64 KiB in block 50 are writable;
 *   mlock      64 MiB, even blocks written, mlock of its middle 32 MiB:
 *              succeeds, every page of it present (mincore), its bytes
 *              those written and zero elsewhere; an untouched odd block
 *              outside it has no page present;
 *   mlockall   (last: it locks the process) 64 MiB, even blocks written,
 *              mlockall(MCL_CURRENT|MCL_FUTURE): succeeds, every page
 *              present, bytes those written and zero elsewhere, odd blocks
 *              writable; a new advised 64 MiB mapping under MCL_FUTURE is
 *              all present and zero at once, and writable.
 * A hang (the watchdog, 60 s) fails it, saying which sub-case. */
#include "dropin.h"
#include "served.h"

#include <setjmp.h>

#ifndef MREMAP_MAYMOVE
#define MREMAP_MAYMOVE 1
#endif

/* Every 4 KiB page of [p, p+len) reads zero at one byte (offset varies). */
static bool check_zero_pages(const char *p, size_t len, const char *what) {
  size_t bad = 0, first = 0;
  for (size_t o = 0; o < len; o += PAGE)
    if (p[o + (o / PAGE * 61) % PAGE] != 0 && !bad++) first = o;
  if (bad) FAILS("%s: expected every page to read 0, %zu of %zu pages did not (first at offset %zu KiB)", what, bad,
                 len / PAGE, first / KiB);
  return !bad;
}

/* Whether [p, p+len) is unmapped (mincore fails with ENOMEM). */
static bool unmapped(void *p, size_t len) {
  static unsigned char vec[16 * MiB / PAGE];
  return mincore(p, len, vec) != 0 && errno == ENOMEM;
}

/* ... and in a forked child (the wait status). */
static int write_in_child(volatile char *p) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    signal(SIGSEGV, SIG_DFL);
    alarm(10);
    *p = 1;
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  return st;
}

/* ---------------------------------------------------------------- sub-cases */

static void populate(void) {
  sub = "populate";
  const size_t len = 128 * MiB;
  struct served sv;
  served_begin(&sv);
  char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) {
    FAILS("mmap(128 MiB, MAP_POPULATE): expected success, got %s", strerror(errno));
    return;
  }
  if (sv.loaded) {
    struct prezero_stats now;
    pz_stats(&now);
    const char *why = serving_unavailable();
    note("populate: prezero: +%llu MAP_POPULATE mmaps served, %llu MiB moved in ready",
         (unsigned long long)(now.mmap_served - sv.st.mmap_served),
         (unsigned long long)((now.mmap_ready_bytes - sv.st.mmap_ready_bytes) >> 20));
    if (now.mmap_served == sv.st.mmap_served) {
      if (why) {
        note("SKIP populate: prezero moved nothing in and cannot serve here: %s", why);
        skipped++;
        munmap(p, len);
        return;
      }
      FAILS("expected prezero to move ready chunks into the 128 MiB MAP_POPULATE mapping (mmap_served +1, pool "
            "warmed), got +0");
    }
  }
  ran++;
  size_t res = resident_pages(p, len);
  if (res != len / PAGE)
    FAILS("pages present right after mmap(128 MiB, MAP_POPULATE): expected %zu (all), mincore says %zu", len / PAGE,
          res);
  size_t nz = nonzero_bytes(p, len);
  if (nz) FAILS("contents of a fresh 128 MiB MAP_POPULATE mapping: expected every byte 0, %zu are not", nz);
  p[0] = 1;
  p[len - 1] = 2;
  if (p[0] != 1 || p[len - 1] != 2) FAILS("writes to the MAP_POPULATE mapping: expected 1 and 2, read %d and %d",
                                          p[0], p[len - 1]);
  munmap(p, len);
}

static void grow(void) {
  sub = "grow";
  const size_t len = 64 * MiB, blocks = len / HPAGE;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  for (size_t b = 0; b < blocks; b += 2) m[at(b)] = val(b, 1);
  char *n = mremap(m, len, 2 * len, MREMAP_MAYMOVE);
  if (n == MAP_FAILED) {
    FAILS("mremap(64 MiB -> 128 MiB, MREMAP_MAYMOVE): expected success, got %s", strerror(errno));
    munmap(m, len);
    return;
  }
  note("grow: mremap %s the mapping", n == m ? "grew in place" : "moved");
  for (size_t b = 0; b < blocks; b++) {
    char want = b % 2 ? 0 : val(b, 1);
    if (n[at(b)] != want || n[b * HPAGE + HPAGE - 1] != 0) {
      FAILS("after mremap: block %zu: expected byte %d at page %zu and 0 at its end, read %d, %d", b, want, b % 512,
            n[at(b)], n[b * HPAGE + HPAGE - 1]);
      break;
    }
  }
  check_zero_pages(n + len, len, "the 64 MiB mremap added");
  for (size_t b = 0; b < 2 * blocks; b++) n[b * HPAGE + 777] = (char)(b | 1);
  for (size_t b = 0; b < 2 * blocks; b++)
    if (n[b * HPAGE + 777] != (char)(b | 1) || n[b * HPAGE + 776] != 0) {
      FAILS("after mremap: block %zu: expected %d written at +777 and 0 beside it, read %d, %d", b, (char)(b | 1),
            n[b * HPAGE + 777], n[b * HPAGE + 776]);
      break;
    }
  served_note(sub, &sv);
  munmap(n, 2 * len);
}

static void shrink(void) {
  sub = "shrink";
  const size_t len = 64 * MiB, keep = 32 * MiB;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  for (size_t b = 0; b < len / HPAGE; b += 2) m[at(b)] = val(b, 1);
  char *n = mremap(m, len, keep, 0);
  if (n != m) {
    FAILS("mremap(64 MiB -> 32 MiB): expected the same address, got %s",
          n == MAP_FAILED ? strerror(errno) : "another one");
    munmap(m, len);
    return;
  }
  if (!unmapped(m + keep, len - keep)) FAILS("the 32 MiB mremap took off: expected unmapped (mincore ENOMEM)");
  for (size_t b = 0; b < keep / HPAGE; b++) {
    char want = b % 2 ? 0 : val(b, 1);
    if (m[at(b)] != want) {
      FAILS("after the shrink: block %zu: expected byte %d, read %d", b, want, m[at(b)]);
      break;
    }
  }
  for (size_t b = 1; b < keep / HPAGE; b += 2) m[at(b)] = val(b, 1);
  check_blocks(m, 0, keep / HPAGE - 1, 1, "after the shrink, the odd blocks written");
  served_note(sub, &sv);
  munmap(m, keep);
}

static void partial_munmap(void) {
  sub = "munmap";
  const size_t len = 64 * MiB;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  write_blocks(m, 0, 23, 1);
  char *h20 = m + 20 * HPAGE + 100 * PAGE, *h26 = m + 26 * HPAGE + 7 * PAGE;
  if (munmap(m + 8 * HPAGE, 8 * HPAGE) != 0 || munmap(h20, 10 * PAGE) != 0 || munmap(h26, 3 * PAGE) != 0) {
    FAILS("munmap of parts of the mapping: expected success, got %s", strerror(errno));
    munmap(m, len);
    return;
  }
  if (!unmapped(m + 8 * HPAGE, 8 * HPAGE)) FAILS("blocks 8..15 after munmap: expected unmapped (mincore ENOMEM)");
  if (!unmapped(h20, 10 * PAGE)) FAILS("the 10 pages of block 20 after munmap: expected unmapped (mincore ENOMEM)");
  if (!unmapped(h26, 3 * PAGE)) FAILS("the 3 pages of block 26 after munmap: expected unmapped (mincore ENOMEM)");
  check_blocks(m, 0, 7, 1, "after munmap");
  check_blocks(m, 16, 23, 1, "after munmap");
  /* block 20: the pages beside its hole */
  if (h20[-1] != 0 || h20[10 * PAGE] != 0) FAILS("block 20 beside its hole: expected 0, read %d and %d", h20[-1],
                                                 h20[10 * PAGE]);
  check_zero_pages(m + 24 * HPAGE, 2 * HPAGE, "untouched blocks 24-25 after munmap");
  /* block 26: both sides of its hole, first touches (writes) */
  h26[-1] = 5;
  h26[3 * PAGE] = 6;
  m[26 * HPAGE] = 7;
  m[27 * HPAGE - 1] = 8;
  if (h26[-1] != 5 || h26[3 * PAGE] != 6 || m[26 * HPAGE] != 7 || m[27 * HPAGE - 1] != 8 || h26[-2] != 0)
    FAILS("block 26 beside its hole: expected 5, 6, 7, 8 written and 0 beside, read %d, %d, %d, %d, %d", h26[-1],
          h26[3 * PAGE], m[26 * HPAGE], m[27 * HPAGE - 1], h26[-2]);
  size_t nz26 = nonzero_bytes(m + 26 * HPAGE, 7 * PAGE) + nonzero_bytes(h26 + 3 * PAGE, HPAGE - 10 * PAGE);
  if (nz26 != 4) FAILS("block 26 beside its hole: expected 4 non-zero bytes (those written), %zu are", nz26);
  write_blocks(m, 27, 31, 3);
  check_blocks(m, 27, 31, 3, "after munmap, untouched blocks written");
  served_note(sub, &sv);
  munmap(m, len);
}

static void protect(void) {
  sub = "mprotect";
  const size_t len = 64 * MiB, blocks = len / HPAGE;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  for (size_t b = 0; b < blocks; b += 2) m[at(b)] = val(b, 1);
  if (mprotect(m, len, PROT_READ) != 0) {
    FAILS("mprotect(PROT_READ): expected success, got %s", strerror(errno));
    munmap(m, len);
    return;
  }
  for (size_t b = 0; b < blocks - 1; b++) {
    char want = b % 2 ? 0 : val(b, 1);
    if (m[at(b)] != want) {
      FAILS("after mprotect(PROT_READ): block %zu: expected byte %d, read %d", b, want, m[at(b)]);
      break;
    }
  }
  /* block 31 (odd): never touched, not even read */
  char *fresh = m + 31 * HPAGE + 300 * PAGE, *written = m + at(4);
  int st = write_in_child(written);
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV)
    FAILS("a write to a written page of the PROT_READ mapping in a child: expected SIGSEGV, got %s", wait_desc(st));
  st = write_in_child(fresh);
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV)
    FAILS("a write to a never-touched page of the PROT_READ mapping in a child: expected SIGSEGV, got %s",
          wait_desc(st));
  if (!access_faults(fresh, true))
    FAILS("a write to a never-touched page of the PROT_READ mapping: expected SIGSEGV, the write went through");
  if (!access_faults(written, true))
    FAILS("a write to a written page of the PROT_READ mapping: expected SIGSEGV, the write went through");
  if (*written != val(4, 1) || *fresh != 0)
    FAILS("after the faulting writes: expected %d and 0, read %d and %d", val(4, 1), *written, *fresh);
  if (mprotect(m, len, PROT_READ | PROT_WRITE) != 0) {
    FAILS("mprotect(PROT_READ|PROT_WRITE): expected success, got %s", strerror(errno));
    munmap(m, len);
    return;
  }
  *fresh = 9;
  if (*fresh != 9 || fresh[1] != 0 || m[31 * HPAGE] != 0)
    FAILS("writable again: expected 9 written and 0 beside, read %d, %d, %d", *fresh, fresh[1], m[31 * HPAGE]);
  for (size_t b = 1; b < blocks; b += 2) m[at(b)] = val(b, 1);
  check_blocks(m, 0, blocks - 1, 1, "writable again, odd blocks written");
  served_note(sub, &sv);
  munmap(m, len);
}

static void dontneed(void) {
  sub = "dontneed";
  const size_t len = 64 * MiB, blocks = len / HPAGE;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  memset(m, 0x5a, 4 * HPAGE);
  write_blocks(m, 4, blocks - 1, 1);
  char *hole = m + 2 * HPAGE + 64 * KiB;
  if (madvise(m, 2 * HPAGE, MADV_DONTNEED) != 0 || madvise(hole, 128 * KiB, MADV_DONTNEED) != 0) {
    FAILS("madvise(MADV_DONTNEED): expected success, got %s", strerror(errno));
    munmap(m, len);
    return;
  }
  size_t r1 = resident_pages(m, 2 * HPAGE), r2 = resident_pages(hole, 128 * KiB);
  if (r1 || r2)
    FAILS("pages present right after MADV_DONTNEED: expected 0 in blocks 0-1 and 0 in the 128 KiB of block 2, "
          "mincore says %zu and %zu", r1, r2);
  /* block 1 written first (below), block 0 and the hole read first */
  m[HPAGE + 5] = 8;
  size_t nz = nonzero_bytes(m, HPAGE) + nonzero_bytes(hole, 128 * KiB);
  if (nz) FAILS("after MADV_DONTNEED: expected block 0 and the 128 KiB to read 0, %zu bytes did not", nz);
  nz = nonzero_bytes(m + HPAGE, HPAGE);
  if (nz != 1 || m[HPAGE + 5] != 8)
    FAILS("block 1 after MADV_DONTNEED and one write: expected 1 non-zero byte (8), %zu are (read %d)", nz,
          m[HPAGE + 5]);
  size_t kept = 0;
  for (char *p = m + 2 * HPAGE; p < m + 4 * HPAGE; p++)
    if (p < hole || p >= hole + 128 * KiB) kept += *p == 0x5a;
  if (kept != 2 * HPAGE - 128 * KiB)
    FAILS("blocks 2-3 beside the MADV_DONTNEED: expected %zu bytes 0x5a, %zu are", 2 * HPAGE - 128 * KiB, kept);
  check_blocks(m, 4, blocks - 1, 1, "after MADV_DONTNEED");
  m[5] = 7;
  hole[5] = 9;
  if (m[5] != 7 || m[HPAGE + 5] != 8 || hole[5] != 9 || m[6] != 0 || hole[6] != 0)
    FAILS("writes after MADV_DONTNEED: expected 7, 8, 9 written and 0 beside, read %d, %d, %d, %d, %d", m[5],
          m[HPAGE + 5], hole[5], m[6], hole[6]);
  served_note(sub, &sv);
  munmap(m, len);
}

static bool pipe_wait(int fd) {
  char c;
  return read(fd, &c, 1) == 1;
}
static void pipe_post(int fd) {
  if (write(fd, "x", 1) != 1) { /* the other side is gone: it says so */ }
}

static void cow(void) {
  sub = "fork";
  const size_t len = 64 * MiB;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  for (size_t b = 0; b < 16; b++) m[at(b)] = 0x11;
  int to_parent[2], to_child[2];
  if (pipe(to_parent) != 0 || pipe(to_child) != 0) skip("pipe: %s", strerror(errno));
  pid_t pid = fork();
  if (pid < 0) skip("fork: %s", strerror(errno));
  if (pid == 0) {
    dropin_name = "served-mapping-semantics (fork child)";
    watchdog(20);
    for (size_t b = 0; b < 32; b++)
      if (m[at(b)] != (b < 16 ? 0x11 : 0)) {
        FAILS("the child at fork: block %zu: expected %d, read %d", b, b < 16 ? 0x11 : 0, m[at(b)]);
        break;
      }
    for (size_t b = 0; b < 8; b++) m[at(b)] = 0x22;
    for (size_t b = 16; b < 24; b++) m[at(b)] = 0x22;
    pipe_post(to_parent[1]);
    pipe_wait(to_child[0]);
    for (size_t b = 0; b < 32; b++) {
      char want = b < 8 || (b >= 16 && b < 24) ? 0x22 : b < 16 ? 0x11 : 0;
      if (m[at(b)] != want || m[at(b) + 1] != 0) {
        FAILS("the child after the parent's writes: block %zu: expected %d (and 0 beside), read %d (%d)", b, want,
              m[at(b)], m[at(b) + 1]);
        break;
      }
    }
    _exit(dropin_result());
  }
  if (!pipe_wait(to_parent[0])) FAILS("the child died before its writes");
  for (size_t b = 0; b < 24; b++) {
    char want = b < 16 ? 0x11 : 0;
    if (m[at(b)] != want) {
      FAILS("the parent after the child's writes: block %zu: expected %d, read %d", b, want, m[at(b)]);
      break;
    }
  }
  for (size_t b = 8; b < 16; b++) m[at(b)] = 0x33;
  for (size_t b = 24; b < 32; b++) m[at(b)] = 0x44; /* fresh blocks, with a child alive */
  pipe_post(to_child[1]);
  int st;
  waitpid(pid, &st, 0);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 1) dropin_failures++; /* it said why */
  else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) FAILS("the child: expected exit 0, got %s", wait_desc(st));
  for (size_t b = 0; b < 32; b++) {
    char want = b < 8 ? 0x11 : b < 16 ? 0x33 : b < 24 ? 0 : 0x44;
    if (m[at(b)] != want || m[at(b) + 1] != 0) {
      FAILS("the parent after the child exited: block %zu: expected %d (and 0 beside), read %d (%d)", b, want,
            m[at(b)], m[at(b) + 1]);
      break;
    }
  }
  close(to_parent[0]);
  close(to_parent[1]);
  close(to_child[0]);
  close(to_child[1]);
  served_note(sub, &sv);
  munmap(m, len);
}

/* A partial 2 MiB block [a, b) of the odd-length mapping: zero, and all
 * of it writable. */
static void fill_partial(char *a, char *b, const char *what) {
  if (b <= a) return;
  a[0] = 1; /* first touches: writes at both ends */
  b[-1] = 1;
  if (a[0] != 1 || b[-1] != 1 || a[1] != 0 || b[-2] != 0)
    FAILS("%s: expected 1 written at both ends and 0 beside, read %d, %d, %d, %d", what, a[0], b[-1], a[1], b[-2]);
  if (b - a > (ptrdiff_t)(2 * PAGE)) check_zero_pages(a + PAGE, (size_t)(b - a) - 2 * PAGE, what);
  memset(a, 0x77, (size_t)(b - a));
  size_t good = 0;
  for (char *p = a; p < b; p++) good += *p == 0x77;
  if (good != (size_t)(b - a))
    FAILS("%s filled with 0x77: expected %zu bytes to read it back, %zu did", what, (size_t)(b - a), good);
}

static void odd_length(void) {
  sub = "oddlen";
  const size_t len = 33 * MiB + 12 * KiB;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  char *end = m + len, *head = align_up_2m(m), *tail = (char *)((uintptr_t)end & ~(uintptr_t)(HPAGE - 1));
  note("oddlen: the mapping at %p: a partial 2 MiB block of %zu KiB at its start, of %zu KiB at its end", (void *)m,
       (size_t)(head - m) / KiB, (size_t)(end - tail) / KiB);
  /* the whole blocks between: one byte each, first touches */
  size_t whole = (size_t)(tail - head) / HPAGE;
  for (size_t b = 0; b < whole; b++) head[b * HPAGE + 4096 + b] = (char)(b | 1);
  for (size_t b = 0; b < whole; b++)
    if (head[b * HPAGE + 4096 + b] != (char)(b | 1) || head[b * HPAGE] != 0 || head[b * HPAGE + HPAGE - 1] != 0) {
      FAILS("whole block %zu: expected %d written and 0 at its ends, read %d, %d, %d", b, (char)(b | 1),
            head[b * HPAGE + 4096 + b], head[b * HPAGE], head[b * HPAGE + HPAGE - 1]);
      break;
    }
  /* the partial blocks: both ends written first, then all of them */
  fill_partial(m, head, "the partial block at the start");
  fill_partial(tail, end, "the partial block at the end");
  served_note(sub, &sv);
  munmap(m, len);
}

static void reservation(bool noreserve) {
  sub = noreserve ? "reserve (MAP_NORESERVE)" : "reserve";
  const size_t rlen = 256 * MiB, len = 128 * MiB;
  char *r = mmap(NULL, rlen, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) skip("mmap(256 MiB, PROT_NONE, MAP_NORESERVE): %s", strerror(errno));
  char *g = align_up_2m(r + 64 * MiB);
  struct served sv;
  served_begin(&sv);
  char *p = mmap(g, len, PROT_READ | PROT_WRITE,
                 MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | (noreserve ? MAP_NORESERVE : 0), -1, 0);
  if (p != g) {
    FAILS("mmap(MAP_FIXED, 128 MiB) over the program's PROT_NONE reservation: expected %p, got %s", (void *)g,
          p == MAP_FAILED ? strerror(errno) : "another address");
    munmap(r, rlen);
    return;
  }
  if (madvise(g, len, MADV_HUGEPAGE) != 0) {
    FAILS("madvise(MADV_HUGEPAGE) over the MAP_FIXED mapping: expected success, got %s", strerror(errno));
    munmap(r, rlen);
    return;
  }
  char what[96];
  snprintf(what, sizeof what, "%s: the 128 MiB MAP_FIXED mapping in a PROT_NONE reservation", sub);
  if (!served_check(what, &sv, 1)) {
    skipped++;
    munmap(r, rlen);
    return;
  }
  ran++;
  /* first touches: writes to the even blocks, reads of the odd ones */
  for (size_t b = 0; b < len / HPAGE; b += 2) g[at(b)] = val(b, 1);
  for (size_t b = 1; b < len / HPAGE; b += 2) check_zero_pages(g + b * HPAGE, HPAGE, "an odd block, first read");
  for (size_t b = 1; b < len / HPAGE; b += 2) g[at(b)] = val(b, 1);
  check_blocks(g, 0, len / HPAGE - 1, 1, "the MAP_FIXED mapping written");
  if (!access_faults(r + PAGE, true)) FAILS("a write to the PROT_NONE reservation below: expected SIGSEGV, it went through");
  if (!access_faults(g + len, true)) FAILS("a write to the PROT_NONE reservation above: expected SIGSEGV, it went through");
  served_note(sub, &sv);
  munmap(r, rlen);
}

static void fixed_over(void) {
  sub = "fixed";
  const size_t len = 128 * MiB;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  write_blocks(m, 0, 47, 1);
  char *q = mmap(m + 16 * HPAGE, 16 * HPAGE, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (q != m + 16 * HPAGE) {
    FAILS("mmap(MAP_FIXED) over blocks 16..31: expected %p, got %s", (void *)(m + 16 * HPAGE),
          q == MAP_FAILED ? strerror(errno) : "another address");
    munmap(m, len);
    return;
  }
  struct served sv2;
  served_begin(&sv2);
  if (madvise(q, 16 * HPAGE, MADV_HUGEPAGE) != 0) FAILS("madvise(MADV_HUGEPAGE) over the new part: %s", strerror(errno));
  served_check("fixed: the 32 MiB MAP_FIXED mapping over the served one, advised", &sv2, 1);
  char *s = mmap(m + 50 * HPAGE + 64 * KiB, 64 * KiB, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (s != m + 50 * HPAGE + 64 * KiB) {
    FAILS("mmap(MAP_FIXED, 64 KiB) inside block 50: expected %p, got %s", (void *)(m + 50 * HPAGE + 64 * KiB),
          s == MAP_FAILED ? strerror(errno) : "another address");
    munmap(m, len);
    return;
  }
  /* blocks 24..31 written first (check_blocks: 0 around the byte), 16..23 read first */
  write_blocks(m, 24, 31, 2);
  check_zero_pages(q, 8 * HPAGE, "blocks 16..23 after MAP_FIXED over them");
  check_blocks(m, 0, 15, 1, "blocks before the MAP_FIXED");
  check_blocks(m, 32, 47, 1, "blocks after the MAP_FIXED");
  write_blocks(m, 16, 23, 2);
  check_blocks(m, 16, 31, 2, "the MAP_FIXED blocks written");
  /* block 50: first writes on both sides of the 64 KiB and inside it */
  char *b50 = m + 50 * HPAGE;
  b50[0] = 1;
  b50[64 * KiB - 1] = 2;
  s[0] = 3;
  s[64 * KiB - 1] = 4;
  b50[128 * KiB] = 5;
  b50[HPAGE - 1] = 6;
  if (b50[0] != 1 || b50[64 * KiB - 1] != 2 || s[0] != 3 || s[64 * KiB - 1] != 4 || b50[128 * KiB] != 5 ||
      b50[HPAGE - 1] != 6 || b50[1] != 0 || s[1] != 0 || b50[128 * KiB + 1] != 0)
    FAILS("block 50 around the 64 KiB MAP_FIXED: expected 1..6 written and 0 beside, read %d %d %d %d %d %d, %d %d %d",
          b50[0], b50[64 * KiB - 1], s[0], s[64 * KiB - 1], b50[128 * KiB], b50[HPAGE - 1], b50[1], s[1],
          b50[128 * KiB + 1]);
  write_blocks(m, 57, 63, 3); /* first touches, writes */
  check_zero_pages(m + 51 * HPAGE, 6 * HPAGE, "untouched blocks 51..56");
  write_blocks(m, 51, 56, 3);
  check_blocks(m, 51, 63, 3, "untouched blocks 51..63 written");
  served_note(sub, &sv);
  munmap(m, len);
}

static void lock_part(void) {
  sub = "mlock";
  const size_t len = 64 * MiB, blocks = len / HPAGE;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  for (size_t b = 0; b < blocks; b += 2) m[at(b)] = val(b, 1);
  char *l = m + 16 * MiB;
  if (mlock(l, 32 * MiB) != 0) {
    FAILS("mlock of 32 MiB in the middle of the mapping: expected success, got %s", strerror(errno));
    munmap(m, len);
    return;
  }
  size_t res = resident_pages(l, 32 * MiB);
  if (res != 32 * MiB / PAGE)
    FAILS("pages present in the mlock'd 32 MiB: expected %zu (all), mincore says %zu", 32 * MiB / PAGE, res);
  size_t nz = nonzero_bytes(l, 32 * MiB);
  if (nz != 8) FAILS("the mlock'd 32 MiB: expected 8 non-zero bytes (those written), %zu are", nz);
  for (size_t b = 8; b < 24; b++)
    if (m[at(b)] != (b % 2 ? 0 : val(b, 1))) {
      FAILS("the mlock'd 32 MiB: block %zu: expected byte %d, read %d", b, b % 2 ? 0 : val(b, 1), m[at(b)]);
      break;
    }
  size_t outside = resident_pages(m + 1 * HPAGE, HPAGE) + resident_pages(m + 25 * HPAGE, HPAGE);
  if (outside)
    FAILS("untouched blocks 1 and 25 outside the mlock'd range: expected no page present, mincore says %zu", outside);
  munlock(l, 32 * MiB);
  served_note(sub, &sv);
  munmap(m, len);
}

/* Last: it locks the whole process. */
static void lock_all(void) {
  sub = "mlockall";
  const size_t len = 64 * MiB, blocks = len / HPAGE;
  struct served sv;
  char *m = served_map(len, &sv);
  if (!m) return;
  for (size_t b = 0; b < blocks; b += 2) m[at(b)] = val(b, 1);
  if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
    FAILS("mlockall(MCL_CURRENT|MCL_FUTURE): expected success, got %s", strerror(errno));
    munmap(m, len);
    return;
  }
  size_t res = resident_pages(m, len);
  if (res != len / PAGE) FAILS("pages present after mlockall: expected %zu (all), mincore says %zu", len / PAGE, res);
  size_t nz = nonzero_bytes(m, len);
  if (nz != blocks / 2) FAILS("after mlockall: expected %zu non-zero bytes (those written), %zu are", blocks / 2, nz);
  for (size_t b = 1; b < blocks; b += 2) m[at(b)] = val(b, 1);
  check_blocks(m, 0, blocks - 1, 1, "after mlockall, odd blocks written");
  /* MCL_FUTURE: a new mapping is populated (locked) by mmap itself */
  char *n = anon_map_huge(len);
  if (!n) {
    FAILS("mmap(64 MiB) + madvise(MADV_HUGEPAGE) under MCL_FUTURE: expected success, got %s", strerror(errno));
  } else {
    res = resident_pages(n, len);
    if (res != len / PAGE)
      FAILS("pages present in a new mapping under MCL_FUTURE: expected %zu (all), mincore says %zu", len / PAGE, res);
    nz = nonzero_bytes(n, len);
    if (nz) FAILS("a new mapping under MCL_FUTURE: expected every byte 0, %zu are not", nz);
    write_blocks(n, 0, blocks - 1, 2);
    check_blocks(n, 0, blocks - 1, 2, "a new mapping under MCL_FUTURE, written");
    munmap(n, len);
  }
  munlockall();
  served_note(sub, &sv);
  munmap(m, len);
}

int main(void) {
  dropin_name = "served-mapping-semantics";
  watchdog(60);
  hang_report = report;
  warm_pool(256 * MiB, 1500);

  populate();
  grow();
  shrink();
  partial_munmap();
  protect();
  dontneed();
  cow();
  odd_length();
  reservation(false);
  reservation(true);
  fixed_over();
  lock_part();
  lock_all();

  note("%d sub-cases ran, %d skipped", ran, skipped);
  if (!ran && !dropin_failures) skip("prezero cannot serve a mapping here (see above)");
  return dropin_result();
}
