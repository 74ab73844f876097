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
 * The test (PREZERO_UFFD=0 PREZERO_RETAIN_MS=500 in meson.build): RssAnon
 * before; malloc, write and free 256 MiB in 32 MiB blocks; 0.3 s later
 * (the freed memory zeroed, not yet given back) mmap 1 GiB and write one
 * byte in its middle; wait 3 s: RssAnon must be within 16 MiB of the level
 * before the 256 MiB, and mincore must show only the touched page (or its
 * 2 MiB block in "always" mode) resident in the 1 GiB mapping. */
#include "dropin.h"

#define LEN (1 * GiB)

int main(void) {
  dropin_name = "no-uffd-retains-pool";
  watchdog(60);
  const char *mode = thp_mode();
  bool exact = (!strcmp(mode, "madvise") || !strcmp(mode, "never")) && !small_mthp_on_plain_mappings();
  long base = status_kib("RssAnon");
  warm_pool(256 * MiB, 300);
  long freed = status_kib("RssAnon");
  char *m = anon_map(LEN);
  if (!m) skip("mmap(1 GiB): %s", strerror(errno));
  m[LEN / 2 + 123] = 1;
  size_t res_now = resident_pages(m, LEN);
  sleep_ms(3000);
  long after = status_kib("RssAnon");
  size_t res = resident_pages(m, LEN);
  note("RssAnon: %ld kB before, %ld kB after the 256 MiB were freed, %ld kB 3 s after mmap(1 GiB) + one write; "
       "resident pages in the mapping: %zu at once, %zu after 3 s", base, freed, after, res_now, res);
  if (after - base > 16 * 1024)
    fail("RssAnon 3 s after freeing 256 MiB and mapping 1 GiB with one page written: expected within 16384 kB of "
         "%ld kB (before the 256 MiB), got %ld kB (%+ld kB)", base, after, after - base);
  if (exact && res != 1)
    fail("resident pages of a fresh 1 GiB mapping after one one-byte write (THP %s): expected 1 (4 KiB), mincore "
         "says %zu (%zu KiB)", mode, res, res * 4);
  if (!exact && (res < 1 || res > 512))
    fail("resident pages of a fresh 1 GiB mapping after one one-byte write (THP %s): expected 1..512, mincore says %zu",
         mode, res);
  if (m[LEN / 2 + 123] != 1) fail("the byte written: expected 1, read %d", m[LEN / 2 + 123]);
  munmap(m, LEN);
  return dropin_result();
}
