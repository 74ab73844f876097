/* Helpers the unit tests share (after internal.h). */
#ifndef PZ_TEST_UNIT_H
#define PZ_TEST_UNIT_H

/* A growth of block [p, p+n) that cannot happen in place: one chunk more
 * than is free after it. */
static inline size_t growth_past_free_chunks(unsigned char *p, size_t n) {
  size_t grow = 2 << 20;
  while ((pz_map_get(p + n + grow - (2 << 20)) & 15) == PZ_MK_FREE) grow += 2 << 20;
  return grow;
}

#endif
