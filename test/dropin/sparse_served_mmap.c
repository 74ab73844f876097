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
 * The test (pool warmed, PREZERO_POOL_MIN=256M in meson.build, so the
 * mapping is served):
 *   - a fresh 1 GiB mapping, one byte read from every 4 KiB page: the
 *     mapping's Rss (smaps) stays < 4 MiB, and all reads are zero;
 *   - a second fresh 1 GiB mapping, 512 one-byte writes, one per 2 MiB:
 *     its Rss is exactly 2 MiB (512 x 4 KiB) in "madvise"/"never" mode,
 *     between 2 MiB and 1 GiB in "always" mode (no check there: the
 *     kernel's own answer is 1 GiB when huge pages are free). */
#include "dropin.h"

#define LEN (1 * GiB)

int main(void) {
  dropin_name = "sparse-served-mmap";
  watchdog(60);
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
  return dropin_result();
}
