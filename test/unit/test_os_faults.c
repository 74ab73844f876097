/* The OS refuses memory or a feature: the API returns NULL + ENOMEM, or
 * falls back, and works again when the OS does. Driven through the
 * injectable OS hook table. This file's first allocation happens with mmap
 * failing, so every layer's "no memory yet" path runs. */
#define _GNU_SOURCE /* MREMAP_FIXED */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <pthread.h>
#include <cmocka.h>

#include "api/api.h"
#include "unit.h"

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
/* fail_mremap: 1 every call fails; 2 the fail_at-th move to a fixed
 * address fails as on 6.1, which unmaps the destination first; 3 the same,
 * and another mapping lands in the hole before prezero can fill it (at
 * `intruder`); 4 it fails with ENOMEM and the destination stays (the
 * kernel's map count check comes first) */
static void *intruder;
static int fixed_moves, fail_at;
static void *fake_mremap(void *o, size_t ol, size_t nl, int f, void *na) {
  fixed_moves += !!(f & MREMAP_FIXED);
  if (fail_mremap == 1 || (fail_mremap && (f & MREMAP_FIXED) && fixed_moves == fail_at)) {
    if (fail_mremap == 2 || fail_mremap == 3) {
      real.munmap(na, nl);
      if (fail_mremap == 3) {
        intruder = real.mmap(na, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        memset(intruder, 0x5a, 4096);
      }
    }
    errno = fail_mremap == 4 ? ENOMEM : EFAULT;
    return MAP_FAILED;
  }
  return real.mremap(o, ol, nl, f, na);
}

static int setup(void **state) {
  (void)state;
  pz_os_default_hooks(&real);
  struct pz_os_hooks h = {fake_mmap, real.munmap, fake_madvise, fake_mremap, real.mprotect};
  pz_os_set_hooks(&h);
  return 0;
}

static void first_allocation_without_memory_fails_cleanly(void **state) {
  (void)state;
  fail_mmap = 1;
  size_t sizes[] = {1, 100, 4000, 100000, 500000, 4 << 20};
  for (int i = 0; i < 6; i++) {
    expect_enomem(sizes[i]);
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
  size_t grow = growth_past_free_chunks(p, n);
  p = prezero_realloc(p, n + grow);
  assert_non_null(p);
  for (size_t i = 0; i < n; i += 4096) assert_int_equal(p[i], (unsigned char)(i >> 12));
  p[n] = p[n + grow - 1] = 1; /* not all of it: it can be 2 GiB */
  prezero_free(p);
  fail_mremap = 0;
}

/* A kernel that unmaps the destination of a failed move (6.1): the range
 * is mapped again and the block copied; when someone else's mapping took
 * the hole first, prezero never touches it and copies to another run. A
 * move that fails leaving the destination: copied there, nothing lost. The
 * same when a block of two mappings moves chunk by chunk and its second
 * chunk fails: the first stays moved, or is put back. Every chunk comes
 * back to the pool but those someone else's mapping took. */
static void failed_move_that_took_the_destination(void **state) {
  (void)state;
  static const struct {
    int mode, split, fail_at;
  } cases[] = {{2, 0, 1}, {3, 0, 1}, {4, 0, 1}, {2, 1, 2}, {3, 1, 2}, {4, 1, 2}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    size_t n = 12 << 20;
    struct prezero_stats start, end;
    prezero_stats_get(&start);
    unsigned char *p = prezero_malloc(n);
    /* one mapping, so that prezero tries the move (the pool's may be split
     * where earlier moves and refills were); or two */
    assert_ptr_equal(real.mmap(p, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0), p);
    if (cases[c].split) assert_int_equal(real.madvise(p + (4 << 20), 2 << 20, MADV_DONTFORK), 0);
    assert_true(pz_os_one_mapping(p, n) == !cases[c].split);
    for (size_t i = 0; i < n; i += 4096) p[i] = (unsigned char)(i >> 12);
    size_t grow = growth_past_free_chunks(p, n);
    intruder = NULL;
    fixed_moves = 0;
    fail_at = cases[c].fail_at;
    fail_mremap = cases[c].mode;
    struct prezero_stats before, after;
    prezero_stats_get(&before);
    unsigned char *q = prezero_realloc(p, n + grow);
    prezero_stats_get(&after);
    fail_mremap = 0;
    assert_non_null(q);
    for (size_t i = 0; i < n; i += 4096) assert_int_equal(q[i], (unsigned char)(i >> 12));
    q[n] = q[n + grow - 1] = 1; /* not all of it: it can be 2 GiB */
    assert_int_equal(fixed_moves, cases[c].fail_at);
    /* the first chunk moved and stayed: a move; else a copy */
    assert_int_equal(after.realloc_moved - before.realloc_moved, cases[c].split && cases[c].mode != 3);
    if (cases[c].mode == 3) {
      assert_non_null(intruder);
      assert_true((unsigned char *)intruder < q || (unsigned char *)intruder >= q + n + grow);
      for (size_t i = 0; i < 4096; i++) assert_int_equal(((unsigned char *)intruder)[i], 0x5a);
      real.munmap(intruder, 4096);
    }
    prezero_free(q);
    prezero_stats_get(&end);
    size_t lost = cases[c].mode != 3 ? 0 : cases[c].split ? 1 : n >> 21;
    assert_int_equal(end.chunks_used, start.chunks_used + lost);
  }
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
      cmocka_unit_test(failed_move_that_took_the_destination),
      cmocka_unit_test(large_request_fails_while_small_ones_work),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
