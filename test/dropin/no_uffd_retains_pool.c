/* no-uffd-retains-pool: memory a program freed goes back (RSS falls), even
 * when it then maps a large reservation and touches a page of it.
 *
 * Hazard: without userfaultfd (PREZERO_UFFD=0 here; by default for programs
 * that are not root), prezero serves a large mmap by moving the longest run
 * of ready (freed, zeroed) pool chunks to the head of the new mapping with
 * mremap. The pool would have given that memory back after
 * PREZERO_RETAIN_MS; inside the program's mapping it stays resident for as
 * long as the mapping lives, though the program never touches it: a
 * reservation (a JIT's code space, a VMM's guest RAM, a big arena) keeps
 * everything the program freed before it, for ever.
 *
 * glibc/the kernel: free() of large blocks unmaps them (RSS falls at
 * once); a fresh mapping has no pages until touched; one write makes one
 * 4 KiB page resident (THP "madvise"/"never", un-advised mapping), or the
 * touched 2 MiB block ("always").
 *
 * The same holds for a mapping advised MADV_HUGEPAGE (which prezero
 * serves with userfaultfd; without it, not at all), except that the kernel
 * may fault the touched 2 MiB block in as a huge page.
 *
 * The test (PREZERO_UFFD=0 PREZERO_RETAIN_MS=500 in meson.build), twice:
 * (1) a plain mapping, (2) one advised MADV_HUGEPAGE right after the mmap.
 * RssAnon before; malloc, write and free 256 MiB in 32 MiB blocks; 0.3 s
 * later (the freed memory zeroed, not yet given back) mmap 1 GiB and write
 * one byte in its middle; wait 3 s: RssAnon must be within 16 MiB (2:
 * 18 MiB) of the level before the 256 MiB, and mincore must show only the
 * touched page (1: "madvise"/"never" mode) or only pages of its 2 MiB
 * block (1..512: "always" mode, or 2) resident in the 1 GiB mapping. */
#include "dropin.h"

#define LEN (1 * GiB)

/* One round: (1) a plain mapping, (2) advised MADV_HUGEPAGE. */
static void round_(bool advise) {
  const char *what = advise ? "(2) MADV_HUGEPAGE" : "(1) plain";
  const char *mode = thp_mode();
  bool exact = !advise && (!strcmp(mode, "madvise") || !strcmp(mode, "never")) && !small_mthp_on_plain_mappings();
  long base = status_kib("RssAnon");
  warm_pool(256 * MiB, 300);
  long freed = status_kib("RssAnon");
  char *m = advise ? anon_map_huge(LEN) : anon_map(LEN);
  if (!m) skip("%s: mmap(1 GiB)%s: %s", what, advise ? " + madvise(MADV_HUGEPAGE)" : "", strerror(errno));
  m[LEN / 2 + 123] = 1;
  size_t res_now = resident_pages(m, LEN);
  sleep_ms(3000);
  long after = status_kib("RssAnon");
  size_t res = resident_pages(m, LEN);
  /* the touched 2 MiB block (the mapping's offsets may not be aligned) */
  char *blk = (char *)((uintptr_t)(m + LEN / 2 + 123) & ~(uintptr_t)(HPAGE - 1));
  size_t res_blk = resident_pages(blk, HPAGE);
  note("%s: RssAnon: %ld kB before, %ld kB after the 256 MiB were freed, %ld kB 3 s after mmap(1 GiB) + one write; "
       "resident pages in the mapping: %zu at once, %zu after 3 s (%zu in the touched 2 MiB block)", what, base, freed,
       after, res_now, res, res_blk);
  long slack = advise ? 16 * 1024 + 2048 : 16 * 1024; /* advised: the touched block may be a huge page */
  if (after - base > slack)
    fail("%s: RssAnon 3 s after freeing 256 MiB and mapping 1 GiB with one page written: expected within %ld kB of "
         "%ld kB (before the 256 MiB), got %ld kB (%+ld kB)", what, slack, base, after, after - base);
  if (exact && res != 1)
    fail("%s: resident pages of a fresh 1 GiB mapping after one one-byte write (THP %s): expected 1 (4 KiB), mincore "
         "says %zu (%zu KiB)", what, mode, res, res * 4);
  if (!exact && (res < 1 || res > 512 || res != res_blk))
    fail("%s: resident pages of a fresh 1 GiB mapping after one one-byte write (THP %s): expected 1..512, all in the "
         "touched 2 MiB block, mincore says %zu (%zu in that block)", what, mode, res, res_blk);
  if (m[LEN / 2 + 123] != 1) fail("%s: the byte written: expected 1, read %d", what, m[LEN / 2 + 123]);
  munmap(m, LEN);
}

int main(void) {
  dropin_name = "no-uffd-retains-pool";
  watchdog(60);
  round_(false);
  round_(true);
  return dropin_result();
}
