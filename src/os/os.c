/* The OS layer: the only file that maps memory or advises the kernel.
 * Primitives go through `pz_os`, a table of hooks that unit tests replace
 * with fakes (to make mmap fail, to count madvise calls). Every wrapper
 * returns 0 or an errno value and leaves the caller's errno alone. */

#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "os/os.h"
#include "kabi.h"
#include <sys/ioctl.h>

/* Raw system calls: libprezero.so exports mmap itself (PREZERO_MMAP), so
 * the library's own mappings must not go through the symbol. */
static void *sys_mmap(void *a, size_t l, int p, int f, int fd, off_t o) {
  return (void *)syscall(SYS_mmap, a, l, p, f, fd, o);
}
static int sys_munmap(void *a, size_t l) { return (int)syscall(SYS_munmap, a, l); }
static int sys_madvise(void *a, size_t l, int adv) { return (int)syscall(SYS_madvise, a, l, adv); }
static void *sys_mremap(void *o, size_t ol, size_t nl, int f, void *na) {
  return (void *)syscall(SYS_mremap, o, ol, nl, f, na);
}
static int sys_mprotect(void *a, size_t l, int p) { return (int)syscall(SYS_mprotect, a, l, p); }

struct pz_os_hooks pz_os = {sys_mmap, sys_munmap, sys_madvise, sys_mremap, sys_mprotect};

void pz_os_default_hooks(struct pz_os_hooks *out) {
  *out = (struct pz_os_hooks){sys_mmap, sys_munmap, sys_madvise, sys_mremap, sys_mprotect};
}

void pz_os_set_hooks(const struct pz_os_hooks *h) {
  if (h) pz_os = *h;
  else pz_os_default_hooks(&pz_os);
}

#define KEEP_ERRNO(expr)                                                                           \
  ({                                                                                               \
    int saved_ = errno, rc_;                                                                       \
    rc_ = (expr) ? errno : 0;                                                                      \
    errno = saved_;                                                                                \
    rc_;                                                                                           \
  })

/* Map len bytes aligned to align: at the exact size first (a recent kernel
 * aligns mappings of whole 2 MiB blocks itself, and a tight RLIMIT_AS is
 * not spent on the slack of aligning by hand), else over-mapped and
 * trimmed. */
static void *map_aligned(size_t len, size_t align, int prot) {
  int saved = errno;
  const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  char *p = pz_os.mmap(NULL, len, prot, flags, -1, 0);
  if (p != MAP_FAILED && ((uintptr_t)p & (align - 1)) == 0) {
    errno = saved;
    return p;
  }
  if (p != MAP_FAILED) pz_os.munmap(p, len);
  size_t over = len + align - PZ_PAGE_SIZE;
  p = over < len ? MAP_FAILED : pz_os.mmap(NULL, over, prot, flags, -1, 0);
  errno = saved;
  if (p == MAP_FAILED) return NULL;
  char *a = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
  if (a > p) pz_os.munmap(p, (size_t)(a - p));
  size_t tail = (size_t)((p + over) - (a + len));
  if (tail) pz_os.munmap(a + len, tail);
  errno = saved;
  return a;
}

void *pz_os_map_aligned(size_t len, size_t align) { return map_aligned(len, align, PROT_READ | PROT_WRITE); }

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* Address space for chunks: PROT_NONE, so it is neither memory nor commit
 * charge until a chunk is committed. A program's mlockall(MCL_CURRENT)
 * then populates none of it, and under vm.overcommit_memory=2 it costs
 * nothing. */
void *pz_os_reserve(size_t len, size_t align) { return map_aligned(len, align, PROT_NONE); }

bool pz_os_overcommit_refuses(size_t bytes) {
  if (pz_kernel.overcommit != 0 || bytes < ((size_t)64 << 20)) return false;
  struct sysinfo si;
  if (syscall(SYS_sysinfo, &si) != 0 || !si.mem_unit) return false;
  return bytes / si.mem_unit > (size_t)si.totalram + si.totalswap;
}

int pz_os_commit(void *p, size_t len) {
  return KEEP_ERRNO(pz_os.mprotect(p, len, PROT_READ | PROT_WRITE) != 0);
}

/* MAP_FIXED over our own range: the pages, the commit charge and whatever
 * a program set on it (protection, locks, fork and dump flags, KSM, its
 * userfaultfd registration, a MAP_FIXED mapping of its own) go; a fresh
 * PROT_NONE reservation takes its place. */
int pz_os_decommit(void *p, size_t len) {
  int saved = errno;
  void *q = pz_os.mmap(p, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
  int e = q == MAP_FAILED ? errno : 0;
  errno = saved;
  return e;
}

_Atomic bool pz_mcl_future, pz_program_locks, pz_as_limited;

void pz_os_read_limits(void) {
  struct rlimit rl;
  bool limited = syscall(SYS_prlimit64, 0, RLIMIT_AS, NULL, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY;
  atomic_store_explicit(&pz_as_limited, limited, memory_order_relaxed);
}

/* What a program may have set on memory it gave back, undone: protection
 * (the one call that can fail: sealed memory, a hole the program
 * unmapped), fork and dump flags, KSM merging, access pattern, locks (kept
 * locked under mlockall(MCL_FUTURE), where a fresh mapping would be). Each
 * call is a few hundred ns on a range that has none of it. Huge-page
 * advice and NUMA binding are the caller's to restore. */
/* Memory protection keys are enabled (x86 CPUID.7.0:ECX.OSPKE): asked of
 * the CPU, not the kernel, so a process whose seccomp filter forbids
 * pkey_mprotect never sees us call it where keys cannot exist. */
static bool pkeys_enabled(void) {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & (1u << 4));
#else
  return false;
#endif
}

int pz_os_reset(void *p, size_t len) {
  static int pkeys = -1;
  if (pkeys < 0) pkeys = pkeys_enabled();
  int saved = errno, e = -1;
  /* a program's memory key goes too: a plain mprotect keeps it */
  if (pkeys) {
    e = syscall(SYS_pkey_mprotect, p, len, PROT_READ | PROT_WRITE, 0) ? errno : 0;
    if (e == EINVAL || e == ENOSYS) e = -1;
  }
  if (e < 0) e = pz_os.mprotect(p, len, PROT_READ | PROT_WRITE) ? errno : 0;
  if (!e) {
    pz_os.madvise(p, len, MADV_DOFORK);
    pz_os.madvise(p, len, MADV_KEEPONFORK);
    pz_os.madvise(p, len, MADV_DODUMP);
    pz_os.madvise(p, len, MADV_NORMAL);
    pz_os.madvise(p, len, MADV_UNMERGEABLE);
    /* only for a program that ever locked memory: a sandbox's system-call
     * filter may allow no more than glibc's malloc makes */
    if (atomic_load_explicit(&pz_mcl_future, memory_order_relaxed)) syscall(SYS_mlock, p, len);
    else if (atomic_load_explicit(&pz_program_locks, memory_order_relaxed)) syscall(SYS_munlock, p, len);
  }
  errno = saved;
  return e;
}

int pz_os_unmap(void *p, size_t len) { return KEEP_ERRNO(pz_os.munmap(p, len) != 0); }

int pz_os_hugepage(void *p, size_t len) {
  return KEEP_ERRNO(pz_os.madvise(p, len, MADV_HUGEPAGE) != 0);
}

int pz_os_discard(void *p, size_t len) {
  return KEEP_ERRNO(pz_os.madvise(p, len, MADV_DONTNEED) != 0);
}

bool pz_os_mostly_absent(void *p, size_t len) {
  unsigned char vec[PZ_CHUNK_SIZE / PZ_PAGE_SIZE];
  size_t pages = len / PZ_PAGE_SIZE, resident = 0;
  int saved = errno;
  for (size_t off = 0; off < len; off += PZ_CHUNK_SIZE) {
    size_t l = len - off < PZ_CHUNK_SIZE ? len - off : PZ_CHUNK_SIZE;
    if (syscall(SYS_mincore, (char *)p + off, l, vec) != 0) {
      errno = saved;
      return false; /* as if all there: zeroed, never dropped */
    }
    for (size_t i = 0; i < l / PZ_PAGE_SIZE; i++) resident += vec[i] & 1;
    if (resident * 2 > pages) break;
  }
  errno = saved;
  return resident * 2 <= pages;
}

/* Whether [p, p+len) lies in one mapping, so that mremap can move it. A
 * grow in place by a page without MREMAP_MAYMOVE answers without changing
 * anything: EFAULT when the range spans mappings, ENOMEM when the mapping
 * would have to move. Where the page after it happens to be free it grows;
 * that page is unmapped again. Asked before every move, because a kernel
 * before 6.x unmaps an MREMAP_FIXED destination before it checks the
 * source (measured on 6.1: the destination is gone after an EFAULT). */
bool pz_os_one_mapping(void *p, size_t len) {
  int saved = errno;
  void *r = pz_os.mremap(p, len, len + PZ_PAGE_SIZE, 0, NULL);
  int e = errno;
  if (r != MAP_FAILED) pz_os.munmap((char *)p + len, PZ_PAGE_SIZE);
  errno = saved;
  return r != MAP_FAILED || e == ENOMEM;
}

int pz_os_move(void *old, size_t old_len, void *new_addr, size_t new_len) {
  return KEEP_ERRNO(pz_os.mremap(old, old_len, new_len, MREMAP_MAYMOVE | MREMAP_FIXED,
                                 new_addr) == MAP_FAILED);
}

/* Never MAP_FIXED: between mremap moving the pages away and this call,
 * another thread's mmap may have been placed in the hole. NOREPLACE (4.17)
 * fails then; an older kernel takes it as a hint and maps elsewhere. */
int pz_os_remap_fresh(void *p, size_t len) {
  int saved = errno, e = 0;
  /* EEXIST may be passing: another thread's pz_os_one_mapping grows a run
   * by a page for two system calls, maybe into this hole */
  for (int tries = 0; tries < 4; tries++) {
    if (tries) sched_yield();
    void *q = pz_os.mmap(p, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE,
                         -1, 0);
    e = q == MAP_FAILED ? errno : 0;
    if (q != MAP_FAILED && q != p) {
      pz_os.munmap(q, len);
      e = EEXIST;
    }
    if (e != EEXIST) break;
  }
  errno = saved;
  return e;
}

/* Whether [p, p+len) is mapped at both ends (mincore fails with ENOMEM on
 * a hole): after a failed move, whether the kernel unmapped the
 * destination (6.1 does that first, for the whole range) or not. */
bool pz_os_mapped(void *p, size_t len) {
  int saved = errno;
  unsigned char v;
  bool r = mincore(p, PZ_PAGE_SIZE, &v) == 0 && mincore((char *)p + len - PZ_PAGE_SIZE, PZ_PAGE_SIZE, &v) == 0;
  errno = saved;
  return r;
}

static const char *hex(const char *s, uintptr_t *out) {
  uintptr_t v = 0;
  for (;; s++) {
    unsigned d = *s >= '0' && *s <= '9' ? (unsigned)(*s - '0') : *s >= 'a' && *s <= 'f' ? (unsigned)(*s - 'a' + 10) : 16;
    if (d == 16) break;
    v = v << 4 | d;
  }
  *out = v;
  return s;
}

/* One line of /proc/self/maps: its range, and whether it is private,
 * anonymous (no file: inode 0, no name but an [anon:...] or [heap] one),
 * readable and writable. False for a line it cannot read. */
static bool maps_line(const char *l, uintptr_t *s, uintptr_t *e, bool *anon_rw) {
  l = hex(l, s);
  if (*l++ != '-') return false;
  l = hex(l, e);
  if (*l++ != ' ' || !l[0] || !l[1] || !l[2] || !l[3]) return false;
  bool rwp = l[0] == 'r' && l[1] == 'w' && l[3] == 'p';
  l += 4;
  for (int field = 0; field < 3; field++) { /* offset, device, inode */
    while (*l == ' ') l++;
    if (field == 2) {
      uintptr_t inode;
      const char *end = hex(l, &inode); /* decimal, but only zero matters */
      if (end == l || inode != 0) rwp = false;
      l = end;
    } else {
      while (*l && *l != ' ') l++;
    }
  }
  while (*l == ' ') l++;
  *anon_rw = rwp && (!*l || !strncmp(l, "[anon:", 6) || !strcmp(l, "[heap]"));
  return true;
}

bool pz_os_range_private_anon(const void *p, size_t len) {
  uintptr_t a = (uintptr_t)p, b = a + len, covered = a;
  if (!len || b < a) return false;
  int saved = errno;
  int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    errno = saved;
    return false;
  }
  char buf[4096];
  size_t have = 0;
  bool ok = false, done = false;
  while (!done) {
    ssize_t n = syscall(SYS_read, fd, buf + have, sizeof buf - 1 - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    have += (size_t)n;
    buf[have] = 0;
    char *line = buf, *nl;
    while (!done && (nl = strchr(line, '\n'))) {
      *nl = 0;
      uintptr_t s, e;
      bool anon_rw;
      if (!maps_line(line, &s, &e, &anon_rw)) done = true;
      else if (e > covered) {
        if (s > covered || !anon_rw) done = true; /* a hole, or not plain private anonymous memory */
        else if ((covered = e) >= b) ok = done = true;
      }
      line = nl + 1;
    }
    have = (size_t)(buf + have - line);
    memmove(buf, line, have);
    if (have == sizeof buf - 1) break; /* a line longer than the buffer: cannot tell */
  }
  syscall(SYS_close, fd);
  errno = saved;
  return ok;
}

ssize_t pz_os_read_file(const char *path, char *buf, size_t cap) {
  int saved = errno;
  int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    errno = saved;
    return -e;
  }
  size_t n = 0;
  while (n + 1 < cap) {
    ssize_t r = syscall(SYS_read, fd, buf + n, cap - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
  }
  buf[n] = 0;
  syscall(SYS_close, fd);
  errno = saved;
  return (ssize_t)n;
}

pid_t pz_os_gettid(void) { return (pid_t)syscall(SYS_gettid); }

int pz_os_ioctl(int fd, unsigned long request, void *arg) { return (int)syscall(SYS_ioctl, fd, request, arg); }

uint64_t pz_os_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t pz_os_random(void) {
  int saved = errno;
  uint64_t v = 0;
  if (syscall(SYS_getrandom, &v, sizeof v, GRND_NONBLOCK) != (long)sizeof v) {
    /* splitmix64 over time and an address: fine for a free-list key */
    v = pz_os_now_ns() ^ (uintptr_t)&v;
    v += 0x9e3779b97f4a7c15ull;
    v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ull;
    v = (v ^ (v >> 27)) * 0x94d049bb133111ebull;
    v ^= v >> 31;
  }
  errno = saved;
  return v;
}

/* Resident and huge-page-mapped bytes of [p, p+len) by PAGEMAP_SCAN (6.7):
 * one ioctl walks the page tables and returns ranges by category, without
 * reading a text file. ENOTTY/EINVAL on older kernels: the caller falls back. */
int pz_os_pagemap_huge(void *p, size_t len, size_t *present, size_t *huge) {
  /* opened and closed per call: a library must not keep a descriptor the
   * program can see (programs list and close their fds; python's
   * subprocess tests check that a child has exactly the fds it passed) */
  char path[256];
  pz_probe_path(PZ_ROOT_PROC, "/self/pagemap", path, sizeof path);
  int saved = errno;
  int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    errno = saved;
    return e;
  }
  struct page_region vec[64];
  uint64_t start = (uintptr_t)p, end = start + len;
  int err = 0;
  while (start < end) {
    struct pm_scan_arg arg = {.size = sizeof arg, .start = start, .end = end, .vec = (uintptr_t)vec,
                              .vec_len = 64, .category_anyof_mask = PAGE_IS_PRESENT,
                              .return_mask = PAGE_IS_PRESENT | PAGE_IS_HUGE};
    long n = pz_os_ioctl(fd, PAGEMAP_SCAN, &arg);
    if (n < 0) {
      err = errno;
      break;
    }
    for (long i = 0; i < n; i++) {
      size_t bytes = (size_t)(vec[i].end - vec[i].start);
      *present += bytes;
      if (vec[i].categories & PAGE_IS_HUGE) *huge += bytes;
    }
    if (arg.walk_end <= start) break;
    start = arg.walk_end;
  }
  close(fd);
  errno = saved;
  return err;
}
