/* A deliberately broken malloc for checking that the integration tests
 * notice allocator bugs (see selftest.sh). It forwards to glibc's
 * __libc_* functions and injects the bug chosen by BAD_MODE:
 *   none                correct (every test must pass)
 *   calloc_dirty        calloc of >= BAD_MIN bytes (default 65536) is not zeroed
 *   calloc_dirty_small  calloc of 64..65535 bytes is not zeroed
 *   realloc_trunc       growing realloc of >= 64 KiB keeps only half the data
 *   misalign            aligned_alloc/memalign/posix_memalign ignore alignment > 16
 *   forklock            one global lock and no fork handling: children forked
 *                       from multi-threaded processes can deadlock
 * Not part of prezero; built only by selftest.sh. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

enum { NONE, CALLOC_DIRTY, REALLOC_TRUNC, MISALIGN, CALLOC_DIRTY_SMALL, FORKLOCK };
static size_t bad_min = 65536;
static int mode = -1;

static int get_mode(void) {  /* getenv does not allocate */
  if (mode < 0) {
    const char *m = getenv("BAD_MODE"), *mn = getenv("BAD_MIN");
    if (mn) bad_min = strtoul(mn, NULL, 0);
    mode = !m ? NONE
         : !strcmp(m, "calloc_dirty") ? CALLOC_DIRTY
         : !strcmp(m, "realloc_trunc") ? REALLOC_TRUNC
         : !strcmp(m, "misalign") ? MISALIGN
         : !strcmp(m, "calloc_dirty_small") ? CALLOC_DIRTY_SMALL
         : !strcmp(m, "forklock") ? FORKLOCK : NONE;
  }
  return mode;
}

static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;

void *malloc(size_t n) {
  if (get_mode() != FORKLOCK) return __libc_malloc(n);
  pthread_mutex_lock(&big_lock);
  void *p = __libc_malloc(n);
  for (volatile int i = 0; i < 200; i++) {}   /* widen the window */
  pthread_mutex_unlock(&big_lock);
  return p;
}

void free(void *p) {
  if (get_mode() != FORKLOCK) { __libc_free(p); return; }
  pthread_mutex_lock(&big_lock);
  __libc_free(p);
  pthread_mutex_unlock(&big_lock);
}

void *calloc(size_t a, size_t b) {
  size_t n;
  if (__builtin_mul_overflow(a, b, &n)) { errno = ENOMEM; return NULL; }
  int m = get_mode();
  if ((m == CALLOC_DIRTY && n >= bad_min) || (m == CALLOC_DIRTY_SMALL && n >= 64 && n < 65536)) {
    void *p = __libc_malloc(n);
    if (p) memset(p, 0xA5, n);
    return p;
  }
  return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n) {
  if (get_mode() == REALLOC_TRUNC && p && n >= 65536) {
    size_t old = malloc_usable_size(p);
    if (n > old) {
      char *q = __libc_malloc(n);
      if (!q) return NULL;
      memcpy(q, p, old / 2);
      memset(q + old / 2, 0x5A, old - old / 2);
      __libc_free(p);
      return q;
    }
  }
  return __libc_realloc(p, n);
}

/* misalign: plain malloc (16-aligned, freeable by free) instead. */
void *aligned_alloc(size_t align, size_t n) {
  if (get_mode() == MISALIGN && align > 16) return __libc_malloc(n);
  return __libc_memalign(align, n);
}

void *memalign(size_t align, size_t n) {
  if (get_mode() == MISALIGN && align > 16) return __libc_malloc(n);
  return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n) {
  if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
  void *p = (get_mode() == MISALIGN && align > 16) ? __libc_malloc(n) : __libc_memalign(align, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
