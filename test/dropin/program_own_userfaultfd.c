/* program-own-userfaultfd: a program can register its own large anonymous
 * mapping with its own userfaultfd, and then every missing page faults to
 * its handler.
 *
 * Hazard: virtual machine monitors (snapshot restore, post-copy live
 * migration), CRIU's lazy pages and user-space paging register guest or
 * heap memory they mmap'd themselves with userfaultfd in missing mode. A
 * range can belong to one userfaultfd only: prezero registers every served
 * mmap (>= 32 MiB) with its own, so the program's UFFDIO_REGISTER fails
 * with EBUSY. And pages prezero filled (a whole 2 MiB huge page per first
 * touch) would no longer be missing: they would never reach the program's
 * handler.
 *
 * glibc/the kernel: mmap gives an ordinary anonymous mapping; the first
 * touch of a page faults in a 4 KiB page (THP "madvise" or "never" mode on
 * an un-advised mapping) or the touched 2 MiB block ("always"); the
 * registration succeeds, and every page still missing faults to the
 * registered handler, which fills it with UFFDIO_COPY.
 *
 * The test: mmap 512 MiB (pool warmed, so prezero serves it); touch 4 pages
 * (in 3 different 2 MiB blocks). Check (b): mincore counts exactly the pages
 * the kernel would have made resident for those touches. Register the whole
 * range with the program's own userfaultfd (missing mode): must succeed.
 * Check (a): touch a set of pages mincore reported non-resident, neighbours
 * of touched pages in the same block and pages in blocks never touched;
 * each touch must arrive at the program's handler thread as one
 * UFFD_EVENT_PAGEFAULT for that page, and read the handler's pattern
 * afterwards. Skipped (77) when userfaultfd(2) is not available here. */
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
static void report(char *buf, size_t size) {
  snprintf(buf, size, "touching probe page %d (offset %#lx) never returned; %d faults reached the program's handler",
           probe_page_no, (unsigned long)(atomic_load(&expect_page) - (uintptr_t)map), atomic_load(&faults));
}

int main(void) {
  dropin_name = "program-own-userfaultfd";
  watchdog(30);
  hang_report = report;

  /* userfaultfd must be usable by this process at all (ours, not the allocator's) */
  int probe = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (probe < 0) probe = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  if (probe < 0) skip("userfaultfd(2) is not available to this process: %s", strerror(errno));
  struct uffdio_api api = {.api = UFFD_API, .features = 0};
  if (ioctl(probe, UFFDIO_API, &api) != 0) skip("UFFDIO_API: %s", strerror(errno));
  uffd = probe;

  const char *mode = thp_mode();
  bool exact = (!strcmp(mode, "madvise") || !strcmp(mode, "never")) && !small_mthp_on_plain_mappings();

  warm_pool(256 * MiB, 1500);
  map = anon_map(LEN);
  if (!map) skip("mmap(512 MiB): %s", strerror(errno));
  /* the program's own touches: 4 pages in blocks 3, 3, 10, 200 */
  static const size_t touched[] = {3 * HPAGE + 0 * PAGE, 3 * HPAGE + 100 * PAGE, 10 * HPAGE + 511 * PAGE,
                                   200 * HPAGE + 7 * PAGE};
  for (unsigned i = 0; i < 4; i++) map[touched[i]] = (char)(i + 1);

  /* (b) what is resident is what the kernel gives for those touches */
  size_t res = resident_pages(map, LEN);
  if (exact) {
    if (res != 4) fail("resident pages after 4 one-byte writes (THP %s): expected 4 (16 KiB), mincore says %zu (%zu KiB)",
                       mode, res, res * 4);
  } else {
    /* "always": each touched block whose aligned 2 MiB lies in the mapping
     * may be a huge page (512 pages) or, when none was free, 4 KiB pages */
    if (res < 4 || res > 3 * 512) fail("resident pages after 4 one-byte writes (THP %s): expected 4..1536, mincore says %zu",
                                       mode, res);
  }

  /* the program registers its own mapping */
  struct uffdio_register reg = {.range = {(uintptr_t)map, LEN}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
    fail("UFFDIO_REGISTER of the program's own 512 MiB mapping: expected success, got %s", strerror(errno));
    return dropin_result();
  }
  pthread_t t;
  if (pthread_create(&t, NULL, handler, NULL) != 0) skip("pthread_create failed");

  /* (a) pages near the touched ones and in blocks never touched */
  static const size_t probes[] = {
      3 * HPAGE + 1 * PAGE,   3 * HPAGE + 2 * PAGE,   3 * HPAGE + 101 * PAGE, 3 * HPAGE + 511 * PAGE,
      10 * HPAGE + 0 * PAGE,  10 * HPAGE + 510 * PAGE, 200 * HPAGE + 6 * PAGE, 200 * HPAGE + 8 * PAGE,
      0,                      4 * HPAGE,              4 * HPAGE + 256 * PAGE, 100 * HPAGE + 5 * PAGE,
      255 * HPAGE + 100 * PAGE, LEN - PAGE,
  };
  enum { NPROBES = sizeof probes / sizeof probes[0] };
  int expected = 0, resident_probes = 0;
  for (int i = 0; i < NPROBES; i++) {
    unsigned char v = 0;
    if (mincore(map + probes[i], PAGE, &v) != 0) v = 0;
    if (v & 1) { /* the kernel made it resident already ("always" mode) */
      note("probe page at offset %#zx is resident before registering", probes[i]);
      resident_probes++;
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
      fail("touch of non-resident page at offset %#zx: expected 1 fault at the program's handler for it, "
           "got %d (%d for other pages)", probes[i], n, atomic_load(&faults_elsewhere) - elsewhere);
    if (got != pattern(page) || ((volatile unsigned char *)map)[probes[i] | (PAGE - 1)] != pattern(page))
      fail("page at offset %#zx after the program's handler filled it: expected bytes %#x, read %#x", probes[i],
           pattern(page), got);
  }
  if (exact && resident_probes)
    fail("probe pages (neighbours of touched pages, untouched blocks): expected 0 resident before registering "
         "(THP %s), mincore says %d", mode, resident_probes);
  note("%d probe pages faulted to the program's handler (%d faults in all), %d were resident (THP %s)", expected,
       atomic_load(&faults), resident_probes, mode);
  /* the pages the program wrote kept their bytes */
  for (unsigned i = 0; i < 4; i++)
    if (map[touched[i]] != (char)(i + 1))
      fail("page the program wrote at offset %#zx: expected byte %u, read %d", touched[i], i + 1, map[touched[i]]);

  atomic_store(&handler_stop, true);
  pthread_join(t, NULL);
  struct uffdio_range r = {(uintptr_t)map, LEN};
  ioctl(uffd, UFFDIO_UNREGISTER, &r);
  munmap(map, LEN);
  return dropin_result();
}
