/* The OS refuses memory or a feature: the API returns NULL + ENOMEM, or
 * falls back, and works again when the OS does. Driven through the
 * injectable OS hook table. This file's first allocation happens with mmap
 * failing, so every layer's "no memory yet" path runs. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <pthread.h>
#include <cmocka.h>

#include "internal.h"

static struct pz_os_hooks real;
static int fail_mmap, fail_madvise_huge, fail_mremap, madvise_huge_calls;

static void *fake_mmap(void *a, size_t l, int p, int f, int fd, off_t o) {
  if (fail_mmap) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  return real.mmap(a, l, p, f, fd, o);
}
static int fake_madvise(void *a, size_t l, int adv) {
  if (adv == MADV_HUGEPAGE) {
    madvise_huge_calls++;
    if (fail_madvise_huge) {
      errno = EINVAL;
      return -1;
    }
  }
  return real.madvise(a, l, adv);
}
static void *fake_mremap(void *o, size_t ol, size_t nl, int f, void *na) {
  if (fail_mremap) {
    errno = EFAULT;
    return MAP_FAILED;
  }
  return real.mremap(o, ol, nl, f, na);
}

static int setup(void **state) {
  (void)state;
  pz_os_default_hooks(&real);
  struct pz_os_hooks h = {fake_mmap, real.munmap, fake_madvise, fake_mremap};
  pz_os_set_hooks(&h);
  return 0;
}

static void first_allocation_without_memory_fails_cleanly(void **state) {
  (void)state;
  fail_mmap = 1;
  size_t sizes[] = {1, 100, 4000, 100000, 500000, 4 << 20};
  for (int i = 0; i < 6; i++) {
    errno = 0;
    assert_null(prezero_malloc(sizes[i]));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(prezero_calloc(1, sizes[i]));
    assert_int_equal(errno, ENOMEM);
  }
  void *p = (void *)1;
  assert_int_equal(prezero_posix_memalign(&p, 4096, 100), ENOMEM);
  assert_ptr_equal(p, (void *)1);
  fail_mmap = 0;
  /* the OS gives memory again: everything works */
  for (int i = 0; i < 6; i++) {
    char *q = prezero_malloc(sizes[i]);
    assert_non_null(q);
    memset(q, 1, sizes[i]);
    prezero_free(q);
  }
  struct prezero_stats st;
  prezero_stats_get(&st);
  assert_true(st.oom >= 12);
}

static void hugepage_refused_falls_back_to_small_pages(void **state) {
  (void)state;
  fail_madvise_huge = 1;
  int before = madvise_huge_calls;
  /* larger than any region so far: a new region, madvised and refused */
  char *p = prezero_calloc(1, (size_t)2 << 30);
  assert_non_null(p);
  if (pz_kernel.thp_usable) assert_true(madvise_huge_calls > before);
  for (size_t i = 0; i < ((size_t)2 << 30); i += 1 << 20) assert_int_equal(p[i], 0);
  p[12345] = 1;
  prezero_free(p);
  struct prezero_stats st;
  prezero_stats_get(&st);
  if (pz_kernel.thp_usable) assert_int_equal(st.thp, 0); /* and the stats say so */
  fail_madvise_huge = 0;
}

static void mremap_failure_falls_back_to_copy(void **state) {
  (void)state;
  fail_mremap = 1;
  size_t n = 12 << 20;
  unsigned char *p = prezero_malloc(n);
  for (size_t i = 0; i < n; i += 4096) p[i] = (unsigned char)(i >> 12);
  void *block = prezero_malloc(2 << 20); /* keep p from growing in place */
  p = prezero_realloc(p, 40 << 20);
  assert_non_null(p);
  for (size_t i = 0; i < n; i += 4096) assert_int_equal(p[i], (unsigned char)(i >> 12));
  prezero_free(p);
  prezero_free(block);
  fail_mremap = 0;
}

static void *thread_alloc(void *arg) {
  (void)arg;
  void *p = prezero_malloc(64);
  return p;
}

static void large_request_fails_while_small_ones_work(void **state) {
  (void)state;
  fail_mmap = 1;
  errno = 0;
  assert_null(prezero_malloc((size_t)64 << 30)); /* needs a new region: refused */
  assert_int_equal(errno, ENOMEM);
  void *small = prezero_malloc(100); /* served from memory we already have */
  assert_non_null(small);
  prezero_free(small);
  pthread_t t;
  void *r;
  pthread_create(&t, NULL, thread_alloc, NULL);
  pthread_join(t, &r);
  fail_mmap = 0;
  prezero_free(r); /* NULL or a block: both fine */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(first_allocation_without_memory_fails_cleanly),
      cmocka_unit_test(hugepage_refused_falls_back_to_small_pages),
      cmocka_unit_test(mremap_failure_falls_back_to_copy),
      cmocka_unit_test(large_request_fails_while_small_ones_work),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
