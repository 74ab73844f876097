/* Kernel probe: what this kernel offers, read once at init from /sys and
 * /proc with raw reads into stack buffers (no allocation). Later decisions
 * read `pz_kernel`, never the kernel. */

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

struct pz_kernel pz_kernel = {PZ_THP_UNKNOWN, 0, false, 4096, 1, false};

const char *pz_thp_mode_name(enum pz_thp_mode m) {
  static const char *const names[] = {"always", "madvise", "never", "unknown"};
  return names[m];
}

/* sysfs shows the choices with the active one in brackets: "always [madvise] never" */
static enum pz_thp_mode parse_bracketed(const char *s) {
  const char *b = strchr(s, '[');
  if (!b) return PZ_THP_UNKNOWN;
  if (!strncmp(b, "[always]", 8)) return PZ_THP_ALWAYS;
  if (!strncmp(b, "[madvise]", 9)) return PZ_THP_MADVISE;
  if (!strncmp(b, "[never]", 7)) return PZ_THP_NEVER;
  return PZ_THP_UNKNOWN;
}

void pz_probe_kernel(void) {
  char buf[256];
  long ps = sysconf(_SC_PAGESIZE);
  pz_kernel.page_size = ps > 0 ? (size_t)ps : 4096;
  /* CPUs we may run on, by raw syscall (sysconf may read files via stdio) */
  unsigned long mask[16] = {0};
  long got = syscall(SYS_sched_getaffinity, 0, sizeof mask, mask);
  unsigned n = 0;
  for (long i = 0; got > 0 && i < got / (long)sizeof(long); i++) n += (unsigned)__builtin_popcountl(mask[i]);
  pz_kernel.ncpus = n ? n : 1;
  if (pz_os_read_file("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf) > 0)
    pz_kernel.thp_enabled = parse_bracketed(buf);
  if (pz_os_read_file("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", buf, sizeof buf) > 0) {
    size_t v = 0;
    for (const char *s = buf; *s >= '0' && *s <= '9'; s++) v = v * 10 + (size_t)(*s - '0');
    pz_kernel.pmd_size = v;
  }
  /* MADV_POPULATE_WRITE (5.14): try it on a scratch page; EINVAL = absent */
  void *scratch = pz_os.mmap(NULL, PZ_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (scratch != MAP_FAILED) {
    int saved = errno;
    pz_kernel.populate_write = pz_os.madvise(scratch, PZ_PAGE_SIZE, 23 /* MADV_POPULATE_WRITE */) == 0;
    errno = saved;
    pz_os.munmap(scratch, PZ_PAGE_SIZE);
  }
  pz_kernel.thp_usable = pz_kernel.pmd_size == PZ_CHUNK_SIZE &&
                         (pz_kernel.thp_enabled == PZ_THP_ALWAYS ||
                          pz_kernel.thp_enabled == PZ_THP_MADVISE);
}
