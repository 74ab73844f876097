/* Unit tests of the modules through the internal header: size classes,
 * option parsing, the chunk state machine, the formatter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "api/api.h"

static void size_classes_cover_every_size(void **state) {
  (void)state;
  for (size_t s = 0; s <= PZ_SMALL_MAX; s++) {
    unsigned c = pz_size_class(s);
    assert_true(c < PZ_NCLASSES);
    assert_true(pz_class_size[c] >= (s ? s : 1));
    if (c > 0) assert_true(pz_class_size[c - 1] < s); /* the smallest class that fits */
  }
}

static void size_classes_are_aligned_and_bounded(void **state) {
  (void)state;
  for (unsigned c = 0; c < PZ_NCLASSES; c++) {
    assert_int_equal(pz_class_size[c] % 16, 0);
    if (c) assert_true(pz_class_size[c] > pz_class_size[c - 1]);
    /* internal fragmentation at most 25% above 128 bytes */
    if (c > 8) assert_true(pz_class_size[c] * 4 <= pz_class_size[c - 1] * 5 + 1);
    unsigned n = pz_class_slices(c);
    assert_true(n >= 1 && n <= 8);
    assert_true(((size_t)n << PZ_SLICE_SHIFT) / pz_class_size[c] >= 4); /* >= 4 blocks a page */
  }
  assert_int_equal(pz_class_size[PZ_NCLASSES - 1], PZ_SMALL_MAX);
}

/* pz_block_index (one multiply and a rotate) against plain division: every
 * offset in and around the span of every class and medium size, offsets
 * before the start, and random pointers. */
static long block_index_naive(const pz_page *pg, uintptr_t p) {
  uint64_t diff = p - (uintptr_t)pg->start;
  if (diff % pg->block_size || diff / pg->block_size >= pg->capacity) return -1;
  return (long)(diff / pg->block_size);
}
static void block_index_is_exact(void **state) {
  (void)state;
  uint64_t rnd = 0x9e3779b97f4a7c15u;
  for (unsigned c = 0; c < PZ_NCLASSES + PZ_SLICES - 1; c++) {
    pz_page pg;
    memset(&pg, 0, sizeof pg);
    unsigned nslices = c < PZ_NCLASSES ? pz_class_slices(c) : c - PZ_NCLASSES + 1;
    uint32_t bs = c < PZ_NCLASSES ? pz_class_size[c] : (uint32_t)nslices << PZ_SLICE_SHIFT;
    pz_page_set_block_size(&pg, bs);
    assert_int_equal(pg.block_size, bs);
    pg.start = (char *)(uintptr_t)(0x7f1234600000u + PZ_SLICE_SIZE);
    size_t span = (size_t)nslices << PZ_SLICE_SHIFT;
    uint32_t reserved = (uint32_t)(span / bs);
    const uint32_t caps[] = {reserved, reserved / 2 + 1, 1};
    for (unsigned k = 0; k < 3; k++) {
      uint32_t cap = caps[k];
      pg.capacity = cap;
      uintptr_t s = (uintptr_t)pg.start;
      for (uintptr_t p = s - 4096; p < s + span + 2 * (size_t)bs; p++)
        if (pz_block_index(&pg, (void *)p) != block_index_naive(&pg, p))
          fail_msg("block size %u capacity %u: offset %ld", bs, cap, (long)(p - s));
      for (int i = 0; i < 20000; i++) {
        rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
        assert_int_equal(pz_block_index(&pg, (void *)(uintptr_t)rnd), -1);
      }
      assert_int_equal(pz_block_index(&pg, NULL), -1);
    }
  }
}

static void option_sizes_parse(void **state) {
  (void)state;
  const struct pz_option_desc *d = &pz_option_table[PZ_OPT_POOL_MAX];
  long long v;
  assert_int_equal(pz_option_parse(d, "512M", &v), 0);
  assert_int_equal(v, 512LL << 20);
  assert_int_equal(pz_option_parse(d, "2G", &v), 0);
  assert_int_equal(v, 2LL << 30);
  assert_int_equal(pz_option_parse(d, "64KiB", &v), 0);
  assert_int_equal(v, 64LL << 10);
  assert_int_equal(pz_option_parse(d, "123", &v), 0);
  assert_int_equal(v, 123);
  assert_int_equal(pz_option_parse(d, "", &v), -1);
  assert_int_equal(pz_option_parse(d, "12X", &v), -1);
  assert_int_equal(pz_option_parse(d, "-5", &v), -1);
  assert_int_equal(pz_option_parse(d, "99999999999999999999999", &v), -1);
  assert_int_equal(pz_option_parse(d, "99999999T", &v), -1); /* above max */
  const struct pz_option_desc *lt = &pz_option_table[PZ_OPT_LARGE_THRESHOLD];
  assert_int_equal(pz_option_parse(lt, "4K", &v), -1); /* below min */
}

static void option_bools_and_enums_parse(void **state) {
  (void)state;
  long long v;
  const struct pz_option_desc *b = &pz_option_table[PZ_OPT_STATS];
  const char *yes[] = {"1", "on", "TRUE", "yes"}, *no[] = {"0", "off", "false", "No"};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(pz_option_parse(b, yes[i], &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(pz_option_parse(b, no[i], &v), 0);
    assert_int_equal(v, 0);
  }
  assert_int_equal(pz_option_parse(b, "maybe", &v), -1);
  const struct pz_option_desc *e = &pz_option_table[PZ_OPT_THP];
  assert_int_equal(pz_option_parse(e, "never", &v), 0);
  assert_int_equal(v, PZ_THP_OPT_NEVER);
  assert_int_equal(pz_option_parse(e, "Always", &v), 0);
  assert_int_equal(v, PZ_THP_OPT_ALWAYS);
  assert_int_equal(pz_option_parse(e, "sometimes", &v), -1);
}

static void options_load_warns_and_keeps_defaults(void **state) {
  (void)state;
  char *env[] = {"PATH=/bin", "PREZERO_STATS=1", "PREZERO_POOL_MAX=bogus", "PREZERO_NOSUCH=1",
                 "PREZERO_THP=never", NULL};
  int warnings = pz_options_load(env, false);
  assert_int_equal(warnings, 2);
  assert_int_equal(pz_opt(PZ_OPT_STATS), 1);
  assert_int_equal(pz_opt(PZ_OPT_POOL_MAX), pz_option_table[PZ_OPT_POOL_MAX].def);
  assert_int_equal(pz_opt(PZ_OPT_THP), PZ_THP_OPT_NEVER);
  /* secure execution: every PREZERO_* is ignored */
  assert_int_equal(pz_options_load(env, true), 0);
  assert_int_equal(pz_opt(PZ_OPT_STATS), 0);
  assert_int_equal(pz_opt(PZ_OPT_THP), PZ_THP_OPT_AUTO);
  pz_options_load(NULL, false);
  for (int i = 0; i < PZ_OPT__COUNT; i++) assert_int_equal(pz_opts[i], pz_option_table[i].def);
}

static void chunk_state_machine(void **state) {
  (void)state;
  const enum pz_chunk_state free_states[] = {PZ_CS_UNTOUCHED, PZ_CS_READY, PZ_CS_DIRTY};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(pz_chunk_next_state(free_states[i], PZ_CE_ALLOC), PZ_CS_USED);
    assert_int_equal(pz_chunk_next_state(free_states[i], PZ_CE_CLAIM), PZ_CS_BUSY);
    assert_int_equal(pz_chunk_next_state(free_states[i], PZ_CE_FREE), -1); /* double free */
    assert_int_equal(pz_chunk_next_state(free_states[i], PZ_CE_ZEROED), -1); /* only claimed chunks */
    assert_int_equal(pz_chunk_next_state(free_states[i], PZ_CE_UNCLAIM), -1);
  }
  assert_int_equal(pz_chunk_next_state(PZ_CS_USED, PZ_CE_FREE), PZ_CS_DIRTY);
  assert_int_equal(pz_chunk_next_state(PZ_CS_TAIL, PZ_CE_FREE), PZ_CS_DIRTY);
  assert_int_equal(pz_chunk_next_state(PZ_CS_BUSY, PZ_CE_ZEROED), PZ_CS_READY);
  assert_int_equal(pz_chunk_next_state(PZ_CS_BUSY, PZ_CE_DISCARD), PZ_CS_UNTOUCHED);
  assert_int_equal(pz_chunk_next_state(PZ_CS_BUSY, PZ_CE_UNCLAIM), PZ_CS_DIRTY);
  assert_int_equal(pz_chunk_next_state(PZ_CS_DIRTY, PZ_CE_DISCARD), PZ_CS_UNTOUCHED);
  /* memory in use is never claimed, zeroed or discarded by anyone */
  const enum pz_chunk_state in_use[] = {PZ_CS_USED, PZ_CS_TAIL};
  for (int i = 0; i < 2; i++) {
    assert_int_equal(pz_chunk_next_state(in_use[i], PZ_CE_ALLOC), -1);
    assert_int_equal(pz_chunk_next_state(in_use[i], PZ_CE_CLAIM), -1);
    assert_int_equal(pz_chunk_next_state(in_use[i], PZ_CE_ZEROED), -1);
    assert_int_equal(pz_chunk_next_state(in_use[i], PZ_CE_DISCARD), -1);
  }
  /* an allocation takes over a chunk a worker holds; the worker hands it over */
  assert_int_equal(pz_chunk_next_state(PZ_CS_BUSY, PZ_CE_TAKE), PZ_CS_TAKEN);
  assert_int_equal(pz_chunk_next_state(PZ_CS_BUSY, PZ_CE_STEAL), PZ_CS_USED);
  assert_int_equal(pz_chunk_next_state(PZ_CS_DIRTY, PZ_CE_STEAL), -1);
  assert_int_equal(pz_chunk_next_state(PZ_CS_TAKEN, PZ_CE_STEAL), -1);
  assert_int_equal(pz_chunk_next_state(PZ_CS_TAKEN, PZ_CE_ZEROED), PZ_CS_TAIL);
  assert_int_equal(pz_chunk_next_state(PZ_CS_TAKEN, PZ_CE_UNCLAIM), PZ_CS_TAIL);
  assert_int_equal(pz_chunk_next_state(PZ_CS_TAKEN, PZ_CE_ALLOC), -1);
  assert_int_equal(pz_chunk_next_state(PZ_CS_TAKEN, PZ_CE_CLAIM), -1);
  assert_int_equal(pz_chunk_next_state(PZ_CS_DIRTY, PZ_CE_TAKE), -1);
  assert_int_equal(pz_chunk_next_state(PZ_CS_USED, PZ_CE_TAKE), -1);
  /* a chunk a worker holds is not handed out or freed */
  assert_int_equal(pz_chunk_next_state(PZ_CS_BUSY, PZ_CE_ALLOC), -1);
  assert_int_equal(pz_chunk_next_state(PZ_CS_BUSY, PZ_CE_FREE), -1);
  assert_int_equal(pz_chunk_next_state(PZ_CS_BUSY, PZ_CE_CLAIM), -1);
}

static struct pz_plan plan7(size_t ready, size_t dirty, size_t untouched, size_t min, size_t max,
                             size_t batch, bool forked) {
  struct pz_plan_in in = {.ready = ready, .dirty = dirty, .untouched = untouched, .min_ready = min,
                          .max_free = max, .batch = batch, .report_batch = 8, .headroom = SIZE_MAX,
                          .forked = forked};
  return pz_worker_plan(&in);
}

static void worker_watermarks(void **state) {
  (void)state;
  struct pz_plan p;
  /* dirty memory is zeroed while ready is under the maximum, a batch at a time */
  p = plan7(0, 100, 500, 0, 512, 4, false);
  assert_int_equal(p.what, PZ_PLAN_ZERO);
  assert_int_equal(p.n, 4);
  p = plan7(510, 100, 500, 0, 512, 4, false);
  assert_int_equal(p.what, PZ_PLAN_ZERO);
  assert_int_equal(p.n, 2); /* up to the maximum, not past it */
  p = plan7(0, 3, 500, 0, 512, 8, false);
  assert_int_equal(p.n, 3);
  /* at the maximum: dirty chunks stay dirty */
  p = plan7(512, 100, 500, 0, 512, 4, false);
  assert_int_equal(p.what, PZ_PLAN_IDLE);
  /* untouched memory is pre-faulted only up to the minimum (reserve) */
  p = plan7(0, 0, 500, 0, 512, 4, false);
  assert_int_equal(p.what, PZ_PLAN_IDLE);
  p = plan7(10, 0, 500, 13, 512, 4, false);
  assert_int_equal(p.what, PZ_PLAN_POPULATE);
  assert_int_equal(p.n, 3);
  p = plan7(10, 0, 2, 100, 512, 4, false);
  assert_int_equal(p.n, 2); /* no more untouched than there is */
  p = plan7(13, 0, 500, 13, 512, 4, false);
  assert_int_equal(p.what, PZ_PLAN_IDLE);
  /* recycling comes before pre-faulting */
  p = plan7(0, 5, 500, 100, 512, 4, false);
  assert_int_equal(p.what, PZ_PLAN_ZERO);
  p = plan7(0, 5, 500, 100, 512, 0, false);
  assert_int_equal(p.what, PZ_PLAN_IDLE);
  /* a forked child gives inherited dirty chunks back, all at once, before anything else */
  p = plan7(0, 100, 500, 100, 512, 4, true);
  assert_int_equal(p.what, PZ_PLAN_DISCARD);
  assert_int_equal(p.n, 100);
  p = plan7(0, 0, 500, 10, 512, 4, true); /* none left: plan as usual */
  assert_int_equal(p.what, PZ_PLAN_POPULATE);
  /* returning memory: what is above the maximum once idle past the decay,
   * what is above the minimum once idle past the retention, in batches */
  struct pz_plan_in in = {.ready = 30, .dirty = 70, .min_ready = 10, .max_free = 64, .batch = 4,
                          .report_batch = 8, .headroom = SIZE_MAX};
  p = pz_worker_plan(&in); /* nothing idle long enough yet: recycle */
  assert_int_equal(p.what, PZ_PLAN_ZERO);
  in.idle_decay = in.idle_any = 100;
  p = pz_worker_plan(&in);
  assert_int_equal(p.what, PZ_PLAN_RELEASE);
  assert_int_equal(p.n, 36); /* down to the maximum */
  in.idle_decay = 20; /* only some of it idle that long */
  p = pz_worker_plan(&in);
  assert_int_equal(p.n, 20);
  in.idle_decay = 5; /* less than a reporting batch: wait */
  p = pz_worker_plan(&in);
  assert_int_equal(p.what, PZ_PLAN_ZERO);
  in.idle_retain = 100; /* idle past the retention too: down to the minimum */
  p = pz_worker_plan(&in);
  assert_int_equal(p.what, PZ_PLAN_RELEASE);
  assert_int_equal(p.n, 90);
  in.idle_retain = 0;
  in.pressure = true; /* memory is short: down to the minimum now, any amount */
  p = pz_worker_plan(&in);
  assert_int_equal(p.what, PZ_PLAN_RELEASE);
  assert_int_equal(p.n, 90);
  in.ready = 12, in.dirty = 0, in.idle_any = 12;
  p = pz_worker_plan(&in);
  assert_int_equal(p.n, 2);
  /* pre-faulting stays within the headroom the limits leave */
  struct pz_plan_in fresh = {.ready = 0, .untouched = 500, .min_ready = 100, .max_free = 512, .batch = 64,
                             .report_batch = 8, .headroom = 3};
  p = pz_worker_plan(&fresh);
  assert_int_equal(p.what, PZ_PLAN_POPULATE);
  assert_int_equal(p.n, 3);
  fresh.headroom = 0;
  assert_int_equal(pz_worker_plan(&fresh).what, PZ_PLAN_IDLE);
  /* under pressure, dirty memory is zeroed only up to the minimum */
  struct pz_plan_in tight = {.ready = 10, .dirty = 5, .min_ready = 10, .max_free = 512, .batch = 4,
                             .report_batch = 8, .headroom = SIZE_MAX, .pressure = true};
  assert_int_equal(pz_worker_plan(&tight).what, PZ_PLAN_IDLE);
  /* a minimum above the maximum (a VMM's PREZERO_POOL_MIN=<guest size>
   * over the default 1G maximum): what was pre-faulted for the minimum is
   * never given back after the decay, only what is above the minimum */
  struct pz_plan_in vmm = {.ready = 1024, .min_ready = 1024, .max_free = 512, .batch = 4,
                           .report_batch = 8, .headroom = SIZE_MAX, .idle_decay = 1024, .idle_any = 1024};
  assert_int_equal(pz_worker_plan(&vmm).what, PZ_PLAN_IDLE);
  vmm.ready = 1100, vmm.idle_decay = vmm.idle_any = 1100;
  p = pz_worker_plan(&vmm);
  assert_int_equal(p.what, PZ_PLAN_RELEASE);
  assert_int_equal(p.n, 76);
  vmm.ready = 1000, vmm.dirty = 100, vmm.idle_decay = vmm.idle_any = 0; /* recycled up to the minimum */
  p = pz_worker_plan(&vmm);
  assert_int_equal(p.what, PZ_PLAN_ZERO);
}

static void zero_methods_zero(void **state) {
  (void)state;
  static char buf[1 << 20] __attribute__((aligned(64)));
  for (int m = PZ_ZERO_MEMSET; m <= PZ_ZERO_CLZERO; m++) {
    if (!pz_zero_method_supported((enum pz_zero_method)m)) continue;
    pz_zero_select(m);
    memset(buf, 0xa5, sizeof buf);
    pz_zero(buf + 4096, sizeof buf - 8192);
    for (size_t i = 0; i < sizeof buf; i++)
      assert_int_equal(buf[i], (i < 4096 || i >= sizeof buf - 4096) ? (char)0xa5 : 0);
  }
  pz_zero_select(-1);
  assert_true(pz_zero_method_supported(PZ_ZERO_MEMSET));
}

static void formatter_without_malloc(void **state) {
  (void)state;
  char buf[128];
  size_t n = pz_snprintf(buf, sizeof buf, "%s=%d %u %zu %x %p %5d|%-4s|%c%%", "a", -42, 7u,
                         (size_t)123456789012ull, 0xbeefu, (void *)0x1000, 12, "ab", 'z');
  assert_string_equal(buf, "a=-42 7 123456789012 beef 0x1000    12|ab  |z%");
  assert_int_equal(n, strlen(buf));
  n = pz_snprintf(buf, 8, "%s", "truncated text");
  assert_int_equal(n, 14);
  assert_string_equal(buf, "truncat");
}

/* Every option in the table is documented in the README, with its default. */
static void readme_documents_every_option(void **state) {
  (void)state;
  const char *path = getenv("PZ_README");
  assert_non_null(path);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  static char text[1 << 18];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  for (int i = 0; i < PZ_OPT__COUNT; i++) {
    char name[64];
    snprintf(name, sizeof name, "`PREZERO_%s`", pz_option_table[i].name);
    if (!strstr(text, name)) fail_msg("README does not document %s", name);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(size_classes_cover_every_size),
      cmocka_unit_test(size_classes_are_aligned_and_bounded),
      cmocka_unit_test(block_index_is_exact),
      cmocka_unit_test(option_sizes_parse),
      cmocka_unit_test(option_bools_and_enums_parse),
      cmocka_unit_test(options_load_warns_and_keeps_defaults),
      cmocka_unit_test(chunk_state_machine),
      cmocka_unit_test(worker_watermarks),
      cmocka_unit_test(zero_methods_zero),
      cmocka_unit_test(formatter_without_malloc),
      cmocka_unit_test(readme_documents_every_option),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
