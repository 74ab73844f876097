/* sparse-served-mmap: a large anonymous mapping costs the memory the kernel
 * gives for the touches made, no more.
 *
 * Hazard: prezero serves a large mmap (>= 32 MiB) from its pool and answers
 * the first touch of each 2 MiB block, read or write, with a whole 2 MiB
 * (a ready huge page moved in, or 2 MiB of zeros copied in). A program that
 * scans a big reservation (reads that find nothing: a sparse table, a
 * hash set probed for absent keys) or writes a few bytes here and there then
 * costs 2 MiB of RSS per block touched: +1 GiB for 1 GiB scanned.
 *
 * glibc/the kernel: a read of a missing page of a private anonymous
 * mapping maps the shared zero page (no RSS; the huge zero page in "always"
 * mode, no RSS either); a write faults in one 4 KiB page in THP "madvise"
 * or "never" mode on a mapping nobody advised, or the 2 MiB block in
 * "always" mode (where the block lies wholly in the mapping and a huge page
 * is free).
 *
 * With MADV_HUGEPAGE on the mapping (what prezero serves in "madvise"
 * mode), the same in "madvise" mode as in "always": reads map the (huge)
 * zero page, no RSS; a write faults in a huge page over its 2 MiB block
 * when one can be had, 4 KiB when not; never anything in another block.
 *
 * The test (pool warmed, PREZERO_POOL_MIN=256M in meson.build, so prezero
 * has ready huge pages to serve with):
 *   - a fresh 1 GiB mapping, one byte read from every 4 KiB page: the
 *     mapping's Rss (smaps) stays < 4 MiB, and all reads are zero;
 *   - a second fresh 1 GiB mapping, 512 one-byte writes, one per 2 MiB:
 *     its Rss is exactly 2 MiB (512 x 4 KiB) in "madvise"/"never" mode,
 *     between 2 MiB and 1 GiB in "always" mode (no check there: the
 *     kernel's own answer is 1 GiB when huge pages are free);
 *   - the same two, each on a fresh mapping advised MADV_HUGEPAGE right
 *     after the mmap (1 GiB + 2 MiB, its blocks counted from its first
 *     2 MiB boundary, so that each is one of the kernel's blocks). Under
 *     prezero each must have been served (prezero_stats_get: uffd_mappings;
 *     the case is skipped with the reason where userfaultfd with
 *     UFFDIO_MOVE is not usable). Reads: Rss < 4 MiB, all zero. Writes,
 *     first to the 256 even blocks: after each, the two odd blocks beside
 *     it have no page present (mincore), and after all of them no odd
 *     block has; then to the 256 odd blocks: the mapping's Rss is between
 *     512 x 4 KiB and 512 x 2 MiB, and every block has between 1 and 512
 *     pages present. */
#include "dropin.h"

#define LEN (1 * GiB)

int main(void) {
  dropin_name = "sparse-served-mmap";
  watchdog(45);
  const char *mode = thp_mode();
  bool exact = (!strcmp(mode, "madvise") || !strcmp(mode, "never")) && !small_mthp_on_plain_mappings();
  warm_pool(256 * MiB, 1500);

  /* reads that find nothing */
  long anon0 = status_kib("RssAnon");
  volatile char *r = anon_map(LEN);
  if (!r) skip("mmap(1 GiB): %s", strerror(errno));
  size_t nonzero = 0;
  double t0 = now_s();
  for (size_t o = 0; o < LEN; o += PAGE) nonzero += r[o] != 0;
  double tread = now_s() - t0;
  int nv = 0;
  long rss = range_rss_kib((void *)r, LEN, &nv, NULL, 0);
  long anon1 = status_kib("RssAnon");
  note("1 GiB read once per page in %.2f s: mapping Rss %ld kB (%d VMAs), process RssAnon %+ld kB", tread, rss, nv,
       anon1 - anon0);
  if (nonzero) fail("reads of a fresh 1 GiB mapping: expected every byte 0, %zu pages read non-zero", nonzero);
  if (rss < 0 || rss >= 4 * 1024)
    fail("Rss of a fresh 1 GiB mapping after one read per 4 KiB page: expected < 4096 kB (the zero page), got %ld kB",
         rss);
  munmap((void *)r, LEN);

  /* one write per 2 MiB */
  volatile char *w = anon_map(LEN);
  if (!w) skip("mmap(1 GiB): %s", strerror(errno));
  for (size_t o = 0; o < LEN; o += HPAGE) w[o + 4096] = 1;
  rss = range_rss_kib((void *)w, LEN, &nv, NULL, 0);
  long huge = smaps_kib((void *)w, LEN, "AnonHugePages", NULL, NULL, NULL, 0);
  note("512 one-byte writes, one per 2 MiB: mapping Rss %ld kB, AnonHugePages %ld kB (THP %s)", rss, huge, mode);
  if (exact && rss != 2048)
    fail("Rss of a fresh 1 GiB mapping after 512 one-byte writes, one per 2 MiB (THP %s): expected 2048 kB "
         "(512 x 4 KiB), got %ld kB (AnonHugePages %ld kB)", mode, rss, huge);
  if (!exact && (rss < 2048 || rss > 1024 * 1024 + 2048))
    fail("Rss of a fresh 1 GiB mapping after 512 one-byte writes (THP %s): expected 2048..1050624 kB, got %ld kB",
         mode, rss);
  munmap((void *)w, LEN);

  /* the same, advised MADV_HUGEPAGE: reads */
  const size_t len = LEN + HPAGE;
  struct served sv;
  served_begin(&sv);
  char *hr = anon_map_huge(len);
  if (!hr) skip("mmap(1 GiB) + madvise(MADV_HUGEPAGE): %s", strerror(errno));
  if (served_check("a 1 GiB MADV_HUGEPAGE mapping (reads)", &sv, 1)) {
    anon0 = status_kib("RssAnon");
    dropin_step = "the reads of the MADV_HUGEPAGE mapping";
    volatile char *a = align_up_2m(hr);
    nonzero = 0;
    t0 = now_s();
    for (size_t o = 0; o < LEN; o += PAGE) nonzero += a[o] != 0;
    tread = now_s() - t0;
    rss = range_rss_kib(hr, len, &nv, NULL, 0);
    anon1 = status_kib("RssAnon");
    note("MADV_HUGEPAGE: 1 GiB read once per page in %.2f s: mapping Rss %ld kB (%d VMAs), process RssAnon %+ld kB",
         tread, rss, nv, anon1 - anon0);
    served_note("MADV_HUGEPAGE, reads", &sv);
    if (nonzero)
      fail("reads of a fresh 1 GiB MADV_HUGEPAGE mapping: expected every byte 0, %zu pages read non-zero", nonzero);
    if (rss < 0 || rss >= 4 * 1024)
      fail("Rss of a fresh 1 GiB MADV_HUGEPAGE mapping after one read per 4 KiB page: expected < 4096 kB (the zero "
           "page), got %ld kB", rss);
  }
  munmap(hr, len);

  /* writes */
  served_begin(&sv);
  char *hw = anon_map_huge(len);
  if (!hw) skip("mmap(1 GiB) + madvise(MADV_HUGEPAGE): %s", strerror(errno));
  if (served_check("a 1 GiB MADV_HUGEPAGE mapping (writes)", &sv, 1)) {
    volatile char *a = align_up_2m(hw);
    const size_t blocks = LEN / HPAGE;
    anon0 = status_kib("RssAnon");
    dropin_step = "the writes to the MADV_HUGEPAGE mapping";
    size_t spilled = 0;
    for (size_t b = 0; b < blocks; b += 2) {
      a[b * HPAGE + 4096] = 1;
      for (size_t n = b ? b - 1 : b + 1; n <= b + 1 && n < blocks; n += 2) {
        size_t res = resident_pages((char *)a + n * HPAGE, HPAGE);
        if (res && spilled++ < 4)
          fail("MADV_HUGEPAGE mapping: one-byte write to 2 MiB block %zu: expected no page of block %zu (never "
               "touched) present, mincore says %zu", b, n, res);
      }
    }
    size_t odd = 0, odd_blocks = 0;
    for (size_t b = 1; b < blocks; b += 2) {
      size_t res = resident_pages((char *)a + b * HPAGE, HPAGE);
      odd += res;
      odd_blocks += res != 0;
    }
    if (odd)
      fail("MADV_HUGEPAGE mapping after one-byte writes to the 256 even 2 MiB blocks: expected no page of an odd "
           "block present, mincore says %zu pages in %zu blocks", odd, odd_blocks);
    for (size_t b = 1; b < blocks; b += 2) a[b * HPAGE + 4096] = 1;
    rss = range_rss_kib(hw, len, &nv, NULL, 0);
    huge = smaps_kib(hw, len, "AnonHugePages", NULL, NULL, NULL, 0);
    anon1 = status_kib("RssAnon");
    note("MADV_HUGEPAGE: 512 one-byte writes, one per 2 MiB: mapping Rss %ld kB, AnonHugePages %ld kB, process "
         "RssAnon %+ld kB (THP %s)", rss, huge, anon1 - anon0, mode);
    served_note("MADV_HUGEPAGE, writes", &sv);
    if (rss < 512 * 4 || rss > 512 * 2048)
      fail("Rss of a fresh 1 GiB MADV_HUGEPAGE mapping after 512 one-byte writes, one per 2 MiB: expected 2048 kB "
           "(512 x 4 KiB) to 1048576 kB (512 x 2 MiB), got %ld kB", rss);
    size_t bad = 0;
    for (size_t b = 0; b < blocks; b++) {
      size_t res = resident_pages((char *)a + b * HPAGE, HPAGE);
      if ((res < 1 || res > 512) && bad++ < 4)
        fail("MADV_HUGEPAGE mapping: 2 MiB block %zu after one one-byte write: expected 1..512 pages present, "
             "mincore says %zu", b, res);
      if (a[b * HPAGE + 4096] != 1 || a[b * HPAGE] != 0 || a[b * HPAGE + HPAGE - 1] != 0) {
        if (bad++ < 4)
          fail("MADV_HUGEPAGE mapping: 2 MiB block %zu: expected 1 at offset 4096 and 0 at its ends, read %d, %d, %d",
               b, a[b * HPAGE + 4096], a[b * HPAGE], a[b * HPAGE + HPAGE - 1]);
      }
    }
    size_t outside = resident_pages(hw, len) - resident_pages((char *)a, LEN);
    if (outside)
      fail("MADV_HUGEPAGE mapping: pages outside its 512 whole 2 MiB blocks (never touched): expected 0 present, "
           "mincore says %zu", outside);
  }
  munmap(hw, len);
  return dropin_result();
}
