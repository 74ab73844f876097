/* Helpers the unit tests share (after internal.h). */
#ifndef PZ_TEST_UNIT_H
#define PZ_TEST_UNIT_H

/* How far p's block of n bytes must grow to go past the free chunks after
 * it (and so be moved). That can be more than RAM + swap (a region of 6 GiB
 * in a 4 GiB VM), which prezero refuses under vm.overcommit_memory=0 as the
 * kernel would: the tests that use it are about moving, so they run as
 * under mode 1 (pz_kernel.overcommit, read at start). */
static inline size_t growth_past_free_chunks(unsigned char *p, size_t n) {
  pz_kernel.overcommit = 1;
  size_t grow = 2 << 20;
  while ((pz_map_get(p + n + grow - (2 << 20)) & 15) == PZ_MK_FREE) grow += 2 << 20;
  return grow;
}

/* malloc(size) and calloc(1, size) both fail: NULL and errno ENOMEM. */
static inline void expect_enomem(size_t size) {
  errno = 0;
  assert_null(prezero_malloc(size));
  assert_int_equal(errno, ENOMEM);
  errno = 0;
  assert_null(prezero_calloc(1, size));
  assert_int_equal(errno, ENOMEM);
}

#endif
