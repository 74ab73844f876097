/* The exported C library allocation symbols, and nothing else: thin
 * forwards to api.c. Built into libprezero.so only (tests link the core
 * without these, so the test harness keeps glibc's malloc). */
/* meson builds with _FILE_OFFSET_BITS=64, under which glibc's headers
 * rename mmap to mmap64: we define both names ourselves. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "api/api.h"

PZ_EXPORT void *malloc(size_t n) { return pz_malloc(n); }
PZ_EXPORT void free(void *p) { pz_free(p); }
PZ_EXPORT void *calloc(size_t n, size_t s) { return pz_calloc(n, s); }
PZ_EXPORT void *realloc(void *p, size_t n) { return pz_realloc(p, n); }
PZ_EXPORT void *reallocarray(void *p, size_t n, size_t s) { return pz_reallocarray(p, n, s); }
PZ_EXPORT int posix_memalign(void **out, size_t a, size_t n) { return pz_posix_memalign(out, a, n); }
PZ_EXPORT void *aligned_alloc(size_t a, size_t n) { return pz_aligned_alloc(a, n); }
PZ_EXPORT void *memalign(size_t a, size_t n) { return pz_memalign(a, n); }
PZ_EXPORT void *valloc(size_t n) { return pz_valloc(n); }
PZ_EXPORT void *pvalloc(size_t n) { return pz_pvalloc(n); }
PZ_EXPORT size_t malloc_usable_size(void *p) { return pz_usable_size(p); }
PZ_EXPORT void free_sized(void *p, size_t n) { pz_free_sized(p, n); }
PZ_EXPORT void free_aligned_sized(void *p, size_t a, size_t n) { pz_free_aligned_sized(p, a, n); }
PZ_EXPORT int malloc_trim(size_t pad) { return pz_trim(pad); }
PZ_EXPORT void cfree(void *p) { pz_free(p); }

/* The program's memory calls (PREZERO_MMAP, and what keeps prezero out of
 * the program's way): see large/mmap.c. */
PZ_EXPORT void *mmap(void *a, size_t n, int prot, int flags, int fd, off_t off) {
  return pz_mmap(a, n, prot, flags, fd, off);
}
PZ_EXPORT void *mmap64(void *a, size_t n, int prot, int flags, int fd, off_t off) {
  return pz_mmap(a, n, prot, flags, fd, off);
}
PZ_EXPORT int madvise(void *a, size_t n, int advice) { return pz_madvise(a, n, advice); }
PZ_EXPORT int ioctl(int fd, unsigned long request, ...) {
  va_list ap;
  va_start(ap, request);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return pz_ioctl(fd, request, arg);
}
PZ_EXPORT int mlockall(int flags) { return pz_mlockall(flags); }
PZ_EXPORT int setrlimit(__rlimit_resource_t resource, const struct rlimit *rl) {
  return pz_prlimit(0, (int)resource, rl, NULL);
}
PZ_EXPORT int setrlimit64(__rlimit_resource_t resource, const struct rlimit64 *rl) {
  return pz_prlimit(0, (int)resource, rl, NULL);
}
PZ_EXPORT int prlimit(pid_t pid, __rlimit_resource_t resource, const struct rlimit *rl, struct rlimit *old) {
  return pz_prlimit(pid, (int)resource, rl, old);
}
PZ_EXPORT int prlimit64(pid_t pid, __rlimit_resource_t resource, const struct rlimit64 *rl, struct rlimit64 *old) {
  return pz_prlimit(pid, (int)resource, rl, old);
}
PZ_EXPORT int mlock(const void *a, size_t n) { return pz_mlock(a, n, 0); }
PZ_EXPORT int mlock2(const void *a, size_t n, unsigned int flags) { return pz_mlock(a, n, flags); }
PZ_EXPORT int munlockall(void) { return pz_munlockall(); }

/* glibc's internal names, which some programs and tools call directly */
PZ_EXPORT void *__libc_malloc(size_t n) { return pz_malloc(n); }
PZ_EXPORT void __libc_free(void *p) { pz_free(p); }
PZ_EXPORT void *__libc_calloc(size_t n, size_t s) { return pz_calloc(n, s); }
PZ_EXPORT void *__libc_realloc(void *p, size_t n) { return pz_realloc(p, n); }
PZ_EXPORT void *__libc_memalign(size_t a, size_t n) { return pz_memalign(a, n); }
PZ_EXPORT void *__libc_valloc(size_t n) { return pz_valloc(n); }
PZ_EXPORT void *__libc_pvalloc(size_t n) { return pz_pvalloc(n); }
PZ_EXPORT int __posix_memalign(void **out, size_t a, size_t n) { return pz_posix_memalign(out, a, n); }

/* mallopt: every parameter is accepted and ignored (returns 1, success):
 * prezero is tuned by PREZERO_* variables; glibc's M_* knobs describe
 * arenas and sbrk, which prezero does not have. */
PZ_EXPORT int mallopt(int param, int value) {
  (void)param;
  (void)value;
  return 1;
}

static struct mallinfo2 info2(void) {
  struct prezero_stats st;
  pz_stats_collect(&st);
  struct mallinfo2 mi;
  memset(&mi, 0, sizeof mi);
  mi.arena = st.small_page_bytes + st.large_live_bytes;
  mi.ordblks = st.chunks_untouched + st.chunks_ready + st.chunks_dirty;
  mi.hblks = 0;
  mi.hblkhd = st.large_live_bytes;
  mi.uordblks = st.small_live_bytes + st.large_live_bytes;
  mi.fordblks = mi.arena > mi.uordblks ? mi.arena - mi.uordblks : 0;
  mi.keepcost = st.chunks_dirty << PZ_CHUNK_SHIFT;
  return mi;
}

PZ_EXPORT struct mallinfo2 mallinfo2(void) { return info2(); }

PZ_EXPORT struct mallinfo mallinfo(void) {
  struct mallinfo2 m2 = info2();
  struct mallinfo mi;
  mi.arena = (int)m2.arena;
  mi.ordblks = (int)m2.ordblks;
  mi.smblks = 0;
  mi.hblks = (int)m2.hblks;
  mi.hblkhd = (int)m2.hblkhd;
  mi.usmblks = 0;
  mi.fsmblks = 0;
  mi.uordblks = (int)m2.uordblks;
  mi.fordblks = (int)m2.fordblks;
  mi.keepcost = (int)m2.keepcost;
  return mi;
}

PZ_EXPORT void malloc_stats(void) { pz_stats_print_fd(2); }

/* Called by the program, not on an allocation path: stdio is fine here. */
PZ_EXPORT int malloc_info(int options, FILE *fp) {
  if (options != 0) {
    errno = EINVAL;
    return -1;
  }
  struct prezero_stats st;
  pz_stats_collect(&st);
  fprintf(fp,
          "<malloc version=\"prezero-%s\">\n"
          "<total type=\"small\" size=\"%llu\"/>\n<total type=\"large\" size=\"%llu\"/>\n"
          "<system type=\"reserved\" size=\"%llu\"/>\n</malloc>\n",
          prezero_version(), (unsigned long long)st.small_live_bytes,
          (unsigned long long)st.large_live_bytes, (unsigned long long)st.reserved_bytes);
  return 0;
}

/* pthread_join and its variants: glibc frees the joined (and other cached)
 * threads' TLS under its stack-cache lock, and a free that would start a
 * pool worker must not call pthread_create there (it takes the same lock:
 * the program would hang for good). The start is deferred to after the
 * join. The real functions are looked up at the first call (never on an
 * allocation path). */
static void *next_fn(void **cache, const char *name) {
  void *f = __atomic_load_n(cache, __ATOMIC_ACQUIRE);
  if (!f) {
    f = dlsym(RTLD_NEXT, name);
    __atomic_store_n(cache, f, __ATOMIC_RELEASE);
  }
  return f;
}
#define JOIN_WRAP(call)                  \
  bool was = pz_tls_no_spawn;            \
  pz_tls_no_spawn = true;                \
  int r = (call);                        \
  pz_tls_no_spawn = was;                 \
  if (!was) pz_workers_start_deferred(); \
  return r

PZ_EXPORT int pthread_join(pthread_t t, void **ret) {
  static void *f;
  int (*real)(pthread_t, void **) = (int (*)(pthread_t, void **))next_fn(&f, "pthread_join");
  if (!real) return ENOSYS;
  JOIN_WRAP(real(t, ret));
}
PZ_EXPORT int pthread_tryjoin_np(pthread_t t, void **ret) {
  static void *f;
  int (*real)(pthread_t, void **) = (int (*)(pthread_t, void **))next_fn(&f, "pthread_tryjoin_np");
  if (!real) return ENOSYS;
  JOIN_WRAP(real(t, ret));
}
PZ_EXPORT int pthread_timedjoin_np(pthread_t t, void **ret, const struct timespec *abstime) {
  static void *f;
  int (*real)(pthread_t, void **, const struct timespec *) =
      (int (*)(pthread_t, void **, const struct timespec *))next_fn(&f, "pthread_timedjoin_np");
  if (!real) return ENOSYS;
  JOIN_WRAP(real(t, ret, abstime));
}
PZ_EXPORT int pthread_clockjoin_np(pthread_t t, void **ret, clockid_t clock, const struct timespec *abstime) {
  static void *f;
  int (*real)(pthread_t, void **, clockid_t, const struct timespec *) =
      (int (*)(pthread_t, void **, clockid_t, const struct timespec *))next_fn(&f, "pthread_clockjoin_np");
  if (!real) return ENOSYS;
  JOIN_WRAP(real(t, ret, clock, abstime));
}
