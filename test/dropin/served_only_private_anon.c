/* served-only-private-anon: only private anonymous memory is served, and a
 * populate the kernel refuses changes nothing.
 *
 * Hazard: prezero serves a large mapping once the program madvises it
 * MADV_HUGEPAGE, and it fills the blocks of a served mapping on
 * MADV_POPULATE_WRITE. madvise says nothing about what the memory is: a
 * private mapping of a tmpfs or memfd file, or shared memory, can be
 * advised too. Answering a fault there with zeros or a page of ours hides
 * the file's data (the program reads 0 where the file has bytes); serving
 * shared memory makes a sparse user pay 2 MiB per touch. And a populate
 * the kernel refuses (EINVAL, ENOMEM) must leave memory as it was.
 *
 * glibc/the kernel: (1) a 64 MiB memfd, page 0 of every 2 MiB block
 * holding 'A', mapped MAP_PRIVATE and advised MADV_HUGEPAGE: after a write
 * to page 200 of block 1 and a read of a hole, page 0 of every block still
 * reads 'A'. (2) 256 MiB MAP_SHARED|MAP_ANONYMOUS advised MADV_HUGEPAGE,
 * one byte written per 2 MiB block: at most a few pages per block present
 * (shared memory gets huge pages only where shmem_enabled says so: the test
 * allows 8 per block unless that is "always"/"advise"). (3) 32 MiB private
 * anonymous, advised: MADV_POPULATE_WRITE from p + 1 fails with EINVAL; over
 * a range that starts in a hole, with ENOMEM; over a range with a
 * read-only part, with EINVAL or EFAULT, and nothing is present past the
 * read-only part; in each case nothing else is present. Under prezero the
 * pool is warm (PREZERO_POOL_MIN), so any serving would show. */
#include "dropin.h"

#include <sys/syscall.h>

#define BLOCKS 32

static void file_data_survives(void) {
  int fd = (int)syscall(SYS_memfd_create, "served-only-private-anon", 0);
  if (fd < 0) {
    note("(1) memfd_create: %s: skipped", strerror(errno));
    return;
  }
  size_t len = BLOCKS * HPAGE;
  if (ftruncate(fd, (off_t)len) != 0) skip("ftruncate: %s", strerror(errno));
  for (size_t b = 0; b < BLOCKS; b++)
    if (pwrite(fd, "A", 1, (off_t)(b * HPAGE)) != 1) skip("pwrite: %s", strerror(errno));
  char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (m == MAP_FAILED) skip("mmap of the memfd: %s", strerror(errno));
  if (madvise(m, len, MADV_HUGEPAGE) != 0) note("(1) madvise(MADV_HUGEPAGE) on a file mapping: %s", strerror(errno));
  m[HPAGE + 200 * PAGE] = 1;                            /* a write into a hole of block 1 */
  volatile char r = m[3 * HPAGE + 100 * PAGE];          /* a read of a hole of block 3 */
  (void)r;
  size_t wrong = 0;
  for (size_t b = 0; b < BLOCKS; b++) wrong += m[b * HPAGE] != 'A';
  if (wrong) fail("(1) private mapping of a memfd: page 0 of %zu of %d blocks does not read the file's 'A'", wrong,
                  BLOCKS);
  munmap(m, len);
  close(fd);
}

static void shared_stays_sparse(void) {
  size_t len = 128 * HPAGE;
  char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) skip("mmap MAP_SHARED: %s", strerror(errno));
  madvise(m, len, MADV_HUGEPAGE);
  for (size_t b = 0; b < 128; b++) m[b * HPAGE + 5] = 1;
  char shmem[64] = "";
  read_file("/sys/kernel/mm/transparent_hugepage/shmem_enabled", shmem, sizeof shmem);
  bool huge_ok = strstr(shmem, "[always]") || strstr(shmem, "[advise]") || strstr(shmem, "[force]");
  size_t res = resident_pages(m, len);
  if (!huge_ok && res > 8 * 128)
    fail("(2) shared anonymous memory, one byte per 2 MiB block: %zu pages present, expected at most %d", res,
         8 * 128);
  note("(2) shared anonymous: %zu pages present for 128 one-byte writes (shmem_enabled: %.40s)", res, shmem);
  munmap(m, len);
}

static void refused_populate_changes_nothing(void) {
  size_t len = 16 * HPAGE;
  char *raw = mmap(NULL, len + HPAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) skip("mmap: %s", strerror(errno));
  char *m = align_up_2m(raw);
  madvise(raw, len + HPAGE, MADV_HUGEPAGE);
  /* an unaligned start */
  errno = 0;
  int r = madvise(m + 1, len - HPAGE, MADV_POPULATE_WRITE);
  if (r != -1 || errno != EINVAL) fail("(3) MADV_POPULATE_WRITE from p + 1: expected EINVAL, got %d (%s)", r,
                                       strerror(errno));
  size_t res = resident_pages(raw, len + HPAGE);
  if (res) fail("(3) after the refused populate from p + 1: expected 0 pages present, %zu", res);
  /* a range that starts in a hole */
  char *hole = m + 4 * HPAGE;
  if (munmap(hole, HPAGE) != 0) skip("munmap: %s", strerror(errno));
  errno = 0;
  r = madvise(hole, 8 * HPAGE, MADV_POPULATE_WRITE);
  if (r != -1 || errno != ENOMEM)
    fail("(3) MADV_POPULATE_WRITE starting in a hole: expected ENOMEM, got %d (%s)", r, strerror(errno));
  res = resident_pages(m + 5 * HPAGE, 4 * HPAGE);
  if (res) fail("(3) after the populate that started in a hole: expected 0 pages present past it, %zu", res);
  /* a read-only part in the middle */
  if (mprotect(m + 10 * HPAGE, HPAGE, PROT_READ) != 0) skip("mprotect: %s", strerror(errno));
  errno = 0;
  r = madvise(m + 8 * HPAGE, 6 * HPAGE, MADV_POPULATE_WRITE);
  if (r != -1 || (errno != EINVAL && errno != EFAULT))
    fail("(3) MADV_POPULATE_WRITE over a read-only part: expected EINVAL or EFAULT, got %d (%s)", r, strerror(errno));
  res = resident_pages(m + 11 * HPAGE, 3 * HPAGE);
  if (res) fail("(3) after the populate that met a read-only part: expected 0 pages present past it, %zu", res);
  munmap(raw, len + HPAGE);
}

int main(void) {
  dropin_name = "served-only-private-anon";
  watchdog(60);
  warm_pool(256 * MiB, 1500);
  file_data_survives();
  shared_stays_sparse();
  refused_populate_changes_nothing();
  return dropin_result();
}
