/* Kernel probe: what this kernel offers, recorded once at init in
 * `pz_kernel` and read from there by every later decision. Files are read
 * with raw system calls into stack buffers (this runs inside malloc's
 * init: nothing here allocates). Paths under /sys and /proc are read below
 * PREZERO_SYSFS_ROOT / PREZERO_PROC_ROOT when set, so tests can present
 * fake kernels of every kind. Features that need a system call (madvise
 * advice, userfaultfd) are tried on scratch memory: EINVAL means absent. */

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "os/os.h"
#include "kabi.h"

#define KERNEL_UNKNOWN                                                                             \
  {.thp_enabled = PZ_THP_UNKNOWN, .thp_defrag = PZ_THP_UNKNOWN, .page_size = 4096, .ncpus = 1,        \
   .reporting_order = -1, .collapse = -1, .unprivileged_uffd = -1, .cgroup_max = SIZE_MAX,           \
   .cgroup_high = SIZE_MAX}
struct pz_kernel pz_kernel = KERNEL_UNKNOWN;

const char *pz_thp_mode_name(enum pz_thp_mode m) {
  static const char *const names[] = {"always", "madvise", "never", "defer", "defer+madvise",
                                      "inherit", "unknown"};
  return names[m];
}

/* ------------------------------------------------------------- reading */

size_t pz_probe_path(enum pz_root root, const char *rel, char *buf, size_t cap) {
  const char *base = pz_opt_path(root == PZ_ROOT_SYS ? PZ_OPT_SYSFS_ROOT : PZ_OPT_PROC_ROOT);
  if (!*base) base = root == PZ_ROOT_SYS ? "/sys" : "/proc";
  return pz_snprintf(buf, cap, "%s%s", base, rel);
}

ssize_t pz_probe_read(enum pz_root root, const char *rel, char *buf, size_t cap) {
  char path[512];
  if (pz_probe_path(root, rel, path, sizeof path) >= sizeof path) return -ENAMETOOLONG;
  return pz_os_read_file(path, buf, cap);
}

static bool exists(enum pz_root root, const char *rel) {
  char path[512];
  pz_probe_path(root, rel, path, sizeof path);
  return access(path, F_OK) == 0;
}

/* The first unsigned number in s; `fallback` when there is none. */
static unsigned long long number(const char *s, unsigned long long fallback) {
  while (*s == ' ' || *s == '\t' || *s == '\n') s++;
  if (*s < '0' || *s > '9') return fallback;
  unsigned long long v = 0;
  for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (unsigned)(*s - '0');
  return v;
}

static long long read_number(enum pz_root root, const char *rel, long long fallback) {
  char buf[64];
  if (pz_probe_read(root, rel, buf, sizeof buf) <= 0) return fallback;
  return (long long)number(buf, (unsigned long long)fallback);
}

/* "Y", "1", "on": a kernel boolean (kstrtobool) */
static bool is_true(const char *s) {
  return s[0] == 'Y' || s[0] == 'y' || s[0] == '1' || (s[0] == 'o' && s[1] == 'n');
}

static int read_bool(enum pz_root root, const char *rel) { /* -1: absent */
  char buf[32];
  if (pz_probe_read(root, rel, buf, sizeof buf) <= 0) return -1;
  return is_true(buf);
}

/* sysfs shows the choices with the active one in brackets: "always [madvise] never" */
static enum pz_thp_mode parse_bracketed(const char *s) {
  static const struct { const char *tag; enum pz_thp_mode m; } modes[] = {
      {"[always]", PZ_THP_ALWAYS},          {"[madvise]", PZ_THP_MADVISE}, {"[never]", PZ_THP_NEVER},
      {"[defer+madvise]", PZ_THP_DEFER_MADVISE}, {"[defer]", PZ_THP_DEFER}, {"[inherit]", PZ_THP_INHERIT}};
  const char *b = strchr(s, '[');
  if (!b) return PZ_THP_UNKNOWN;
  for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
    if (!strncmp(b, modes[i].tag, strlen(modes[i].tag))) return modes[i].m;
  return PZ_THP_UNKNOWN;
}

enum pz_thp_mode pz_probe_thp_now(void) {
  char buf[256];
  if (pz_probe_read(PZ_ROOT_SYS, "/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf) <= 0)
    return PZ_THP_UNKNOWN;
  return parse_bracketed(buf);
}

/* "Field:   1234 kB" in a meminfo-style text -> bytes; 0 when absent */
size_t pz_probe_kb_field(const char *text, const char *field) {
  const char *p = strstr(text, field);
  if (!p) return 0;
  return (size_t)number(p + strlen(field), 0) << 10;
}

/* ------------------------------------------------------------- parts */

static void probe_thp(void) {
  char buf[256];
  if (pz_probe_read(PZ_ROOT_SYS, "/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf) > 0)
    pz_kernel.thp_enabled = parse_bracketed(buf);
  if (pz_probe_read(PZ_ROOT_SYS, "/kernel/mm/transparent_hugepage/defrag", buf, sizeof buf) > 0)
    pz_kernel.thp_defrag = parse_bracketed(buf);
  long long pmd = read_number(PZ_ROOT_SYS, "/kernel/mm/transparent_hugepage/hpage_pmd_size", 0);
  pz_kernel.pmd_size = pmd > 0 ? (size_t)pmd : 0;
  /* multi-size THP (6.8): one directory per size, hugepages-<size>kB */
  char dir[512];
  pz_probe_path(PZ_ROOT_SYS, "/kernel/mm/transparent_hugepage", dir, sizeof dir);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  char ents[2048];
  long got;
  while ((got = syscall(SYS_getdents64, fd, ents, sizeof ents)) > 0) {
    for (long off = 0; off < got;) {
      const char *name = ents + off + 19; /* struct linux_dirent64: ino 8, off 8, reclen 2, type 1 */
      unsigned short reclen;
      memcpy(&reclen, ents + off + 16, sizeof reclen);
      off += reclen;
      if (strncmp(name, "hugepages-", 10) != 0) continue;
      unsigned long long kb = number(name + 10, 0);
      if (!kb || kb & (kb - 1) || kb < 8) continue;
      unsigned order = (unsigned)__builtin_ctzll(kb / 4);
      if (order >= 32) continue;
      pz_kernel.mthp_orders |= 1u << order;
      char rel[128];
      pz_snprintf(rel, sizeof rel, "/kernel/mm/transparent_hugepage/%s/enabled", name);
      if (pz_probe_read(PZ_ROOT_SYS, rel, buf, sizeof buf) > 0) {
        enum pz_thp_mode m = parse_bracketed(buf);
        if (m == PZ_THP_INHERIT) m = pz_kernel.thp_enabled;
        if (m == PZ_THP_ALWAYS || m == PZ_THP_MADVISE) pz_kernel.mthp_enabled |= 1u << order;
      }
    }
  }
  close(fd);
}

static void probe_madvise(void) {
  size_t len = PZ_PAGE_SIZE;
  void *scratch = pz_os.mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (scratch == MAP_FAILED) return;
  int saved = errno;
  pz_kernel.populate_write = pz_os.madvise(scratch, len, MADV_POPULATE_WRITE) == 0;
  errno = saved;
  pz_os.munmap(scratch, len);
}

/* userfaultfd: the syscall, unprivileged with UFFD_USER_MODE_ONLY, the
 * device node, and the features and ioctls the API handshake reports. */
static void probe_uffd(void) {
  int saved = errno;
  pz_kernel.unprivileged_uffd = (int)read_number(PZ_ROOT_PROC, "/sys/vm/unprivileged_userfaultfd", -1);
  pz_kernel.uffd_dev = access("/dev/userfaultfd", F_OK) == 0;
  long fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  pz_kernel.uffd = fd >= 0 ? 0 : errno;
  long fdu = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  pz_kernel.uffd_user_mode = fdu >= 0 ? 0 : errno;
  long use = fd >= 0 ? fd : fdu;
  if (use >= 0) {
    struct uffdio_api api = {.api = UFFD_API, .features = 0};
    if (pz_os_ioctl((int)use, UFFDIO_API, &api) == 0) {
      pz_kernel.uffd_features = api.features;
      pz_kernel.uffd_ioctls = api.ioctls;
    }
  }
  if (fd >= 0) close((int)fd);
  if (fdu >= 0) close((int)fdu);
  errno = saved;
}

/* "name=value" on the kernel command line; -1 when absent */
static int cmdline_bool(const char *cmdline, const char *name) {
  int v = -1;
  size_t n = strlen(name);
  for (const char *p = cmdline; (p = strstr(p, name)) != NULL; p += n) {
    if ((p == cmdline || p[-1] == ' ') && p[n] == '=') v = is_true(p + n + 1);
  }
  return v;
}

/* Kernels that hand out pre-zeroed pages: none of these is upstream except
 * init_on_free. Any of them on means a page given back with MADV_DONTNEED
 * comes back zero without the kernel zeroing it on our fault. */
static void probe_prezero(void) {
  char buf[4096];
  if (pz_probe_read(PZ_ROOT_PROC, "/cmdline", buf, sizeof buf) > 0) {
    pz_kernel.init_on_free = cmdline_bool(buf, "init_on_free") == 1;
    pz_kernel.init_on_alloc = cmdline_bool(buf, "init_on_alloc") == 1;
  }
  pz_kernel.zero_page = read_bool(PZ_ROOT_SYS, "/kernel/mm/zero_page/enabled") == 1;
  if (pz_kernel.zero_page) {
    pz_kernel.zero_page_batch = (size_t)read_number(PZ_ROOT_SYS, "/kernel/mm/zero_page/batch_size", 0);
    pz_kernel.zero_page_delay_ms = (unsigned)read_number(PZ_ROOT_SYS, "/kernel/mm/zero_page/delay_millisecs", 0);
  }
  pz_kernel.kzerod = read_bool(PZ_ROOT_SYS, "/module/kzerod/parameters/enabled") == 1;
  pz_kernel.host_zeroes_pages = read_bool(PZ_ROOT_SYS, "/module/virtio_balloon/parameters/host_zeroes_pages") == 1;
  /* hugetlb pre-zeroing proposals: per node, per size */
  char rel[160];
  for (unsigned n = 0; n < 64 && !pz_kernel.zeroable_hugepages; n++) {
    pz_snprintf(rel, sizeof rel, "/devices/system/node/node%u/hugepages/hugepages-2048kB/zeroable_hugepages", n);
    pz_kernel.zeroable_hugepages = exists(PZ_ROOT_SYS, rel);
    if (n > 0 && !pz_kernel.zeroable_hugepages) {
      pz_snprintf(rel, sizeof rel, "/devices/system/node/node%u", n);
      if (!exists(PZ_ROOT_SYS, rel)) break;
    }
  }
  pz_kernel.kernel_prezeroes = pz_kernel.init_on_free || pz_kernel.zero_page || pz_kernel.kzerod ||
                               pz_kernel.host_zeroes_pages || pz_kernel.zeroable_hugepages;
}

/* Free page reporting: the guest hands free blocks of 2^order pages back
 * to its host. The release path aligns to it. */
static void probe_reporting(void) {
  long long raw = read_number(PZ_ROOT_SYS, "/module/page_reporting/parameters/page_reporting_order", -1);
  pz_kernel.reporting_order_raw = (int)(raw > 1000 ? -1 : raw);
  /* Without a reporting device the parameter holds a placeholder: MAX_ORDER
   * (11 on 6.1) or -1 (4294967295, newer kernels). Blocks exist up to
   * order 10 with 4 KiB pages (4 MiB); anything above means "not set". */
  size_t max_order = pz_kernel.page_size == 4096 ? 10 : 13;
  pz_kernel.reporting_order = raw >= 0 && (size_t)raw <= max_order ? (int)raw : -1;
}

/* The cgroup's memory limit: cgroup v2 (memory.max / memory.high) or v1
 * (memory.limit_in_bytes), the tightest along the path to the root. The
 * limiting cgroup's usage file is kept for the workers' pressure checks. */
static size_t limit_value(const char *s) {
  if (!strncmp(s, "max", 3)) return SIZE_MAX;
  unsigned long long v = number(s, ~0ull);
  return v >= (1ull << 62) ? SIZE_MAX : (size_t)v; /* v1 "unlimited" is 2^63 - page */
}

static void probe_cgroup(void) {
  char buf[1024], rel[512], val[64];
  size_t tightest = SIZE_MAX;
  if (pz_probe_read(PZ_ROOT_PROC, "/self/cgroup", buf, sizeof buf) <= 0) return;
  /* v2 "0::/path"; v1 "N:memory:/path" (a line may list several controllers) */
  for (int pass = 0; pass < 2; pass++) {
    const char *line = buf;
    while (line && *line) {
      const char *end = strchr(line, '\n');
      size_t len = end ? (size_t)(end - line) : strlen(line);
      const char *c1 = memchr(line, ':', len);
      const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - line)) : NULL;
      bool v2 = c1 && c2 == c1 + 1 && line[0] == '0';
      bool v1 = false;
      if (c1 && c2 && !v2) /* controllers between the colons, comma-separated */
        for (const char *p = c1 + 1; p < c2;) {
          const char *q = p;
          while (q < c2 && *q != ',') q++;
          if (q - p == 6 && !strncmp(p, "memory", 6)) v1 = true;
          p = q + 1;
        }
      if (c2 && ((pass == 0 && v2) || (pass == 1 && v1))) {
        char path[256];
        size_t plen = len - (size_t)(c2 + 1 - line);
        if (plen >= sizeof path) plen = sizeof path - 1;
        memcpy(path, c2 + 1, plen);
        path[plen] = 0;
        const char *mount = v2 ? "/fs/cgroup" : "/fs/cgroup/memory";
        /* cgroup2 may sit at /sys/fs/cgroup (pure v2) or /sys/fs/cgroup/unified (hybrid) */
        if (v2) {
          pz_snprintf(rel, sizeof rel, "/fs/cgroup/cgroup.controllers");
          if (!exists(PZ_ROOT_SYS, rel)) mount = "/fs/cgroup/unified";
        }
        for (;;) { /* walk up to the root, keeping the tightest limit */
          const char *files[2] = {v2 ? "memory.max" : "memory.limit_in_bytes", v2 ? "memory.high" : NULL};
          for (int f = 0; f < 2 && files[f]; f++) {
            pz_snprintf(rel, sizeof rel, "%s%s/%s", mount, strcmp(path, "/") ? path : "", files[f]);
            if (pz_probe_read(PZ_ROOT_SYS, rel, val, sizeof val) <= 0) continue;
            size_t lim = limit_value(val);
            size_t *slot = f ? &pz_kernel.cgroup_high : &pz_kernel.cgroup_max;
            if (lim < *slot) *slot = lim;
            if (lim < tightest) {
              tightest = lim;
              pz_snprintf(pz_kernel.cgroup_usage, sizeof pz_kernel.cgroup_usage, "%s%s/%s", mount,
                          strcmp(path, "/") ? path : "", v2 ? "memory.current" : "memory.usage_in_bytes");
            }
          }
          char *slash = strrchr(path, '/');
          if (!slash || slash == path) {
            if (!strcmp(path, "/") || !slash) break;
            path[1] = 0;
            continue;
          }
          *slash = 0;
        }
        pz_kernel.cgroup_v2 = v2;
        if (pz_kernel.cgroup_max != SIZE_MAX || pz_kernel.cgroup_high != SIZE_MAX) return;
      }
      line = end ? end + 1 : NULL;
    }
  }
}

/* MADV_COLLAPSE (6.1) answers EINVAL both when it is unknown and when the
 * range cannot hold a huge page, so the only clear test collapses a real
 * 2 MiB page: a fault's worth of work, done on demand, not at start. */
bool pz_probe_collapse(void) {
  if (pz_kernel.collapse >= 0) return pz_kernel.collapse;
  int saved = errno;
  char *m = pz_os.mmap(NULL, 2 * PZ_CHUNK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  pz_kernel.collapse = 0;
  if (m != MAP_FAILED) {
    char *a = (char *)pz_align_up((uintptr_t)m, PZ_CHUNK_SIZE);
    a[0] = 1;
    int r = pz_os.madvise(a, PZ_CHUNK_SIZE, MADV_COLLAPSE);
    pz_kernel.collapse = r == 0 || errno == EAGAIN || errno == ENOMEM; /* known; resources aside */
    pz_os.munmap(m, 2 * PZ_CHUNK_SIZE);
  }
  errno = saved;
  return pz_kernel.collapse;
}

bool pz_probe_memory_nofile(size_t *total, size_t *available) {
  struct sysinfo si;
  if (*pz_opt_path(PZ_OPT_PROC_ROOT) || syscall(SYS_sysinfo, &si) != 0 || !si.totalram || !si.mem_unit ||
      ((uint64_t)si.freeram + si.bufferram) * 2 < si.totalram)
    return false;
  *total = (size_t)si.totalram * si.mem_unit;
  *available = (size_t)(si.freeram + si.bufferram) * si.mem_unit;
  return true;
}

void pz_probe_memory(size_t *total, size_t *available) {
  char buf[2048];
  *total = *available = 0;
  if (pz_probe_read(PZ_ROOT_PROC, "/meminfo", buf, sizeof buf) <= 0) return;
  *total = pz_probe_kb_field(buf, "MemTotal:");
  *available = pz_probe_kb_field(buf, "MemAvailable:");
}

size_t pz_probe_cgroup_usage(void) {
  if (!pz_kernel.cgroup_usage[0]) return 0;
  return (size_t)read_number(PZ_ROOT_SYS, pz_kernel.cgroup_usage, 0);
}

void pz_probe_kernel(void) {
  static const struct pz_kernel unknown = KERNEL_UNKNOWN;
  pz_kernel = unknown;
  long ps = sysconf(_SC_PAGESIZE);
  pz_kernel.page_size = ps > 0 ? (size_t)ps : 4096;
  /* CPUs we may run on, by raw syscall (sysconf may read files via stdio) */
  unsigned long mask[16] = {0};
  long got = syscall(SYS_sched_getaffinity, 0, sizeof mask, mask);
  unsigned n = 0;
  for (long i = 0; got > 0 && i < got / (long)sizeof(long); i++) n += (unsigned)__builtin_popcountl(mask[i]);
  pz_kernel.ncpus = n ? n : 1;
  probe_thp();
  probe_madvise();
  probe_uffd();
  probe_prezero();
  probe_reporting();
  probe_cgroup();
  pz_probe_memory(&pz_kernel.mem_total, &pz_kernel.mem_available);
  pz_kernel.overcommit = (int)read_number(PZ_ROOT_PROC, "/sys/vm/overcommit_memory", 0);
  size_t present = 0, huge = 0; /* PAGEMAP_SCAN (6.7): on our own stack page */
  pz_kernel.pagemap_scan = pz_os_pagemap_huge((void *)((uintptr_t)&present & ~(uintptr_t)4095), 4096,
                                              &present, &huge) == 0;
  pz_kernel.thp_usable = pz_kernel.pmd_size == PZ_CHUNK_SIZE &&
                         (pz_kernel.thp_enabled == PZ_THP_ALWAYS || pz_kernel.thp_enabled == PZ_THP_MADVISE);
}

size_t pz_release_align(void) {
  size_t a = PZ_CHUNK_SIZE;
  if (pz_kernel.reporting_order >= 0) {
    size_t r = pz_kernel.page_size << pz_kernel.reporting_order;
    if (r > a) a = r;
  }
  return a;
}
