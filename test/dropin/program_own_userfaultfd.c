/* program-own-userfaultfd: a program can register its own large anonymous
 * mapping with its own userfaultfd, and then every missing page faults to
 * its handler.
 *
 * Hazard: virtual machine monitors (snapshot restore, post-copy live
 * migration), CRIU's lazy pages and user-space paging register guest or
 * heap memory they mmap'd themselves with userfaultfd in missing mode; QEMU
 * advises guest RAM MADV_HUGEPAGE first. A range can belong to one
 * userfaultfd only: prezero registers every mapping it serves (>= 32 MiB,
 * where the kernel would use huge pages: THP "always", or after
 * MADV_HUGEPAGE in "madvise" mode) with its own, so the program's
 * UFFDIO_REGISTER would fail with EBUSY. And pages prezero filled ahead of
 * the program's touches would no longer be missing: they would never reach
 * the program's handler.
 *
 * glibc/the kernel: mmap gives an ordinary anonymous mapping; the first
 * write to a page faults in a 4 KiB page (THP "madvise" or "never" mode on
 * an un-advised mapping) or, with MADV_HUGEPAGE (or in "always" mode), the
 * touched 2 MiB block when a huge page can be had (4 KiB when not); a first
 * read maps the zero page (the huge zero page over the block, advised:
 * mincore counts all 512 pages, or one 4 KiB zero page). Nothing else
 * becomes present. The registration succeeds, and every page still missing
 * faults to the registered handler, which fills it with UFFDIO_COPY.
 *
 * The test, three times: (1) a plain 512 MiB mapping; (2) a 514 MiB mapping
 * advised MADV_HUGEPAGE right after the mmap, its offsets counted from its
 * first 2 MiB boundary (so 512 MiB of whole blocks, even if the kernel did
 * not align it; 2 MiB untouched elsewhere) (under prezero the run fails
 * if it was not served, where userfaultfd with UFFDIO_MOVE is usable; else
 * that case is skipped); (3) guest RAM as QEMU maps it: 512 MiB MAP_FIXED
 * over its own PROT_NONE reservation (MAP_NORESERVE, a guard before it),
 * advised MADV_HUGEPAGE, MADV_DONTFORK and MADV_MERGEABLE, 8 blocks
 * preallocated with MADV_POPULATE_WRITE (all 512 pages of each present),
 * then as (2). Pool warmed each time, so prezero has huge pages
 * to move in. The program writes 4 pages (in 3 different 2 MiB blocks),
 * and in (2) also reads 2 pages of 2 other blocks. Check (b): mincore
 * counts the pages the kernel would have made resident for those touches:
 * (1) exactly the 4 written pages in "madvise"/"never" mode (no small
 * mTHP); (2) per 2 MiB block, between the pages touched there and 512, and
 * none in a block never touched. Register the whole range with the
 * program's own userfaultfd (missing mode): must succeed. Check (a): touch
 * a set of pages (neighbours of touched pages in the same blocks, pages in
 * blocks never touched); each one mincore reported non-resident must
 * arrive at the program's handler thread as one UFFD_EVENT_PAGEFAULT for
 * that page and read the handler's pattern afterwards; a resident one must
 * read zero without a fault. The written pages keep their bytes, the read
 * ones read zero. Skipped (77) when userfaultfd(2) is not available here. */
#include "dropin.h"

#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#define LEN (512 * MiB)

static char *map;
static int uffd = -1;
static atomic_int faults;           /* UFFD_EVENT_PAGEFAULT messages */
static atomic_int faults_elsewhere; /* ... for a page other than the one touched */
static atomic_uintptr_t expect_page;
static atomic_bool handler_stop;
static char src_page[4096] __attribute__((aligned(4096)));

static unsigned char pattern(uintptr_t page) { return (unsigned char)(0xa5 ^ (page >> 12)); }

static void *handler(void *arg) {
  (void)arg;
  while (!atomic_load(&handler_stop)) {
    struct pollfd pfd = {uffd, POLLIN, 0};
    if (poll(&pfd, 1, 50) <= 0) continue;
    struct uffd_msg msg;
    ssize_t n = read(uffd, &msg, sizeof msg);
    if (n != sizeof msg || msg.event != UFFD_EVENT_PAGEFAULT) continue;
    uintptr_t page = (uintptr_t)msg.arg.pagefault.address & ~(uintptr_t)(PAGE - 1);
    atomic_fetch_add(&faults, 1);
    if (page != atomic_load(&expect_page)) atomic_fetch_add(&faults_elsewhere, 1);
    memset(src_page, pattern(page), sizeof src_page);
    struct uffdio_copy c = {.dst = page, .src = (uintptr_t)src_page, .len = PAGE, .mode = 0};
    if (ioctl(uffd, UFFDIO_COPY, &c) != 0 && errno != EEXIST) {
      struct uffdio_range w = {page, PAGE};
      ioctl(uffd, UFFDIO_WAKE, &w);
    }
  }
  return NULL;
}

static int probe_page_no; /* for the watchdog's message */
static const char *case_name = "";
static void report(char *buf, size_t size) {
  if (probe_page_no < 0) {
    snprintf(buf, size, "%s: before the probes", case_name);
    return;
  }
  snprintf(buf, size, "%s: touching probe page %d (offset %#lx) never returned; %d faults reached the program's "
           "handler", case_name, probe_page_no, (unsigned long)(atomic_load(&expect_page) - (uintptr_t)map),
           atomic_load(&faults));
}

/* the program's own touches: 4 pages written in blocks 3, 3, 10, 200 */
static const size_t written[] = {3 * HPAGE + 0 * PAGE, 3 * HPAGE + 100 * PAGE, 10 * HPAGE + 511 * PAGE,
                                 200 * HPAGE + 7 * PAGE};
/* ... and in (2) 2 pages read, in blocks 20 and 201 */
static const size_t read_only[] = {20 * HPAGE + 300 * PAGE, 201 * HPAGE + 0 * PAGE};
/* pages touched after the registration: near touched pages, in blocks never touched */
static const size_t probes[] = {
    3 * HPAGE + 1 * PAGE,   3 * HPAGE + 2 * PAGE,   3 * HPAGE + 101 * PAGE, 3 * HPAGE + 511 * PAGE,
    10 * HPAGE + 0 * PAGE,  10 * HPAGE + 510 * PAGE, 200 * HPAGE + 6 * PAGE, 200 * HPAGE + 8 * PAGE,
    0,                      4 * HPAGE,              4 * HPAGE + 256 * PAGE, 100 * HPAGE + 5 * PAGE,
    255 * HPAGE + 100 * PAGE, LEN - PAGE,           20 * HPAGE + 301 * PAGE, 21 * HPAGE,
    201 * HPAGE + 1 * PAGE, 202 * HPAGE + 2 * PAGE,
};
enum { NWRITTEN = 4, NREAD = 2, NPROBES = sizeof probes / sizeof probes[0] };

/* Pages of block b (2 MiB from base) the program touched. */
static size_t touched_in(size_t b, bool advise) {
  size_t n = 0;
  for (unsigned i = 0; i < NWRITTEN; i++) n += written[i] / HPAGE == b;
  for (unsigned i = 0; advise && i < NREAD; i++) n += read_only[i] / HPAGE == b;
  return n;
}

/* (3): blocks QEMU's preallocation populated (MADV_POPULATE_WRITE) */
#define PREALLOC_FIRST 120
#define PREALLOC_N 8
static bool preallocated(size_t b, bool qemu) { return qemu && b >= PREALLOC_FIRST && b < PREALLOC_FIRST + PREALLOC_N; }

/* (3): guest RAM as QEMU maps it: a PROT_NONE reservation, guest RAM
 * MAP_FIXED over it (2 MiB aligned, a guard page before), advised
 * MADV_HUGEPAGE, MADV_DONTFORK and MADV_MERGEABLE, part of it preallocated
 * with MADV_POPULATE_WRITE. Returns the reservation. */
static char *qemu_guest_ram(size_t *resv_len, char **ram) {
  *resv_len = LEN + 4 * HPAGE;
  char *r = mmap(NULL, *resv_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) return NULL;
  char *g = align_up_2m(r + PAGE);
  char *m = mmap(g, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
  if (m != g || madvise(m, LEN, MADV_HUGEPAGE) != 0 || madvise(m, LEN, MADV_DONTFORK) != 0 ||
      madvise(m + PREALLOC_FIRST * HPAGE, PREALLOC_N * HPAGE, MADV_POPULATE_WRITE) != 0) {
    int e = errno;
    munmap(r, *resv_len);
    errno = e;
    return NULL;
  }
  madvise(m, LEN, MADV_MERGEABLE); /* EINVAL without KSM: as QEMU, go on */
  *ram = m;
  return r;
}

static void scenario(int shape) {
  bool advise = shape >= 1, qemu = shape == 2;
  case_name = qemu ? "(3) guest RAM as QEMU maps it" : advise ? "(2) MADV_HUGEPAGE mapping" : "(1) plain mapping";
  probe_page_no = -1;
  watchdog(30);
  const char *mode = thp_mode();
  bool exact = !advise && (!strcmp(mode, "madvise") || !strcmp(mode, "never")) && !small_mthp_on_plain_mappings();

  warm_pool(256 * MiB, 1500);
  struct served sv;
  served_begin(&sv);
  size_t resv_len = 0;
  char *resv = NULL, *m;
  if (qemu) {
    resv = qemu_guest_ram(&resv_len, &m);
    if (!resv) skip("%s: mmap and madvise: %s", case_name, strerror(errno));
  } else {
    m = advise ? anon_map_huge(LEN + HPAGE) : anon_map(LEN);
    if (!m) skip("%s: mmap(512 MiB)%s: %s", case_name, advise ? " + madvise(MADV_HUGEPAGE)" : "", strerror(errno));
    resv = m;
    resv_len = advise ? LEN + HPAGE : LEN;
  }
  size_t maplen = advise && !qemu ? LEN + HPAGE : LEN;
  /* (2): the offsets count from the first 2 MiB boundary, so that a block
   * of the test is a block of the kernel's (a huge page or none) */
  map = advise ? align_up_2m(m) : m;
  if (advise && !served_check(qemu ? "QEMU's guest RAM" : "the 512 MiB MADV_HUGEPAGE mapping", &sv, 1)) {
    munmap(resv, resv_len);
    return;
  }
  for (unsigned i = 0; i < NWRITTEN; i++) map[written[i]] = (char)(i + 1);
  size_t read_nonzero = 0;
  for (unsigned i = 0; advise && i < NREAD; i++) read_nonzero += ((volatile char *)map)[read_only[i]] != 0;
  if (read_nonzero) fail("%s: reads of never-written pages: expected 0, %zu read non-zero", case_name, read_nonzero);

  /* (b) what is resident is what the kernel gives for those touches */
  size_t res = resident_pages(m, maplen);
  if (exact) {
    if (res != 4) fail("%s: resident pages after 4 one-byte writes (THP %s): expected 4 (16 KiB), mincore says %zu "
                       "(%zu KiB)", case_name, mode, res, res * 4);
  } else if (!advise) {
    /* "always": each touched block whose aligned 2 MiB lies in the mapping
     * may be a huge page (512 pages) or, when none was free, 4 KiB pages */
    if (res < 4 || res > 3 * 512) fail("%s: resident pages after 4 one-byte writes (THP %s): expected 4..1536, "
                                       "mincore says %zu", case_name, mode, res);
  } else {
    size_t in_blocks = 0;
    for (size_t b = 0; b < LEN / HPAGE; b++) {
      size_t t = touched_in(b, true), r = resident_pages(map + b * HPAGE, HPAGE);
      in_blocks += r;
      if (preallocated(b, qemu)) {
        if (r != 512)
          fail("%s: resident pages of 2 MiB block %zu after MADV_POPULATE_WRITE: expected 512, mincore says %zu",
               case_name, b, r);
      } else if (t ? r < t || r > 512 : r != 0)
        fail("%s: resident pages of 2 MiB block %zu after the program touched %zu page(s) there: expected %s%zu, "
             "mincore says %zu", case_name, b, t, t ? "512 (a huge page or the huge zero page) down to " : "", t, r);
    }
    if (res != in_blocks)
      fail("%s: resident pages outside the 2 MiB-aligned 512 MiB (the mapping's unaligned head and tail, never "
           "touched): expected 0, mincore says %zu", case_name, res - in_blocks);
  }
  note("%s: %zu pages resident after the program's touches (THP %s)", case_name, res, mode);

  /* the program registers its own mapping */
  struct uffdio_register reg = {.range = {(uintptr_t)m, maplen}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
    fail("%s: UFFDIO_REGISTER of the program's own 512 MiB mapping: expected success, got %s", case_name,
         strerror(errno));
    munmap(resv, resv_len);
    return;
  }

  /* (a) pages near the touched ones and in blocks never touched */
  int expected = 0, resident_probes = 0;
  for (int i = 0; i < NPROBES; i++) {
    unsigned char v = 0;
    if (mincore(map + probes[i], PAGE, &v) != 0) v = 0;
    if (v & 1) { /* the kernel made it resident already (a huge page, the zero page) */
      note("%s: probe page at offset %#zx is resident before registering", case_name, probes[i]);
      resident_probes++;
      unsigned char got = ((volatile unsigned char *)map)[probes[i]];
      if (got != 0) fail("%s: resident, never-written page at offset %#zx: expected to read 0, read %#x", case_name,
                         probes[i], got);
      continue;
    }
    probe_page_no = i;
    int before = atomic_load(&faults), elsewhere = atomic_load(&faults_elsewhere);
    uintptr_t page = (uintptr_t)(map + probes[i]);
    atomic_store(&expect_page, page);
    unsigned char got = ((volatile unsigned char *)map)[probes[i]]; /* faults to our handler */
    expected++;
    int n = atomic_load(&faults) - before;
    if (n != 1 || atomic_load(&faults_elsewhere) != elsewhere)
      fail("%s: touch of non-resident page at offset %#zx: expected 1 fault at the program's handler for it, "
           "got %d (%d for other pages)", case_name, probes[i], n, atomic_load(&faults_elsewhere) - elsewhere);
    if (got != pattern(page) || ((volatile unsigned char *)map)[probes[i] | (PAGE - 1)] != pattern(page))
      fail("%s: page at offset %#zx after the program's handler filled it: expected bytes %#x, read %#x",
           case_name, probes[i], pattern(page), got);
  }
  if (exact && resident_probes)
    fail("%s: probe pages (neighbours of touched pages, untouched blocks): expected 0 resident before registering "
         "(THP %s), mincore says %d", case_name, mode, resident_probes);
  note("%s: %d probe pages faulted to the program's handler (%d faults in all), %d were resident (THP %s)",
       case_name, expected, atomic_load(&faults), resident_probes, mode);
  /* the pages the program wrote kept their bytes, the ones it read are zero */
  for (unsigned i = 0; i < NWRITTEN; i++)
    if (map[written[i]] != (char)(i + 1))
      fail("%s: page the program wrote at offset %#zx: expected byte %u, read %d", case_name, written[i], i + 1,
           map[written[i]]);
  for (unsigned i = 0; advise && i < NREAD; i++)
    if (map[read_only[i]] != 0)
      fail("%s: page the program read at offset %#zx: expected 0, read %d", case_name, read_only[i],
           map[read_only[i]]);
  served_note(case_name, &sv);

  struct uffdio_range r = {(uintptr_t)m, maplen};
  ioctl(uffd, UFFDIO_UNREGISTER, &r);
  munmap(resv, resv_len);
}

int main(void) {
  dropin_name = "program-own-userfaultfd";
  hang_report = report;

  /* userfaultfd must be usable by this process at all (ours, not the allocator's) */
  int probe = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (probe < 0) probe = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  if (probe < 0) skip("userfaultfd(2) is not available to this process: %s", strerror(errno));
  struct uffdio_api api = {.api = UFFD_API, .features = 0};
  if (ioctl(probe, UFFDIO_API, &api) != 0) skip("UFFDIO_API: %s", strerror(errno));
  uffd = probe;
  pthread_t t;
  if (pthread_create(&t, NULL, handler, NULL) != 0) skip("pthread_create failed");

  scenario(0);
  scenario(1);
  scenario(2);

  alarm(0);
  atomic_store(&handler_stop, true);
  pthread_join(t, NULL);
  return dropin_result();
}
