/* API conformance: every function of the C allocation API, its edge sizes
 * and error codes, through the prezero_* names (the same code as malloc). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "api/api.h"
#include "unit.h"

static const size_t sizes[] = {0, 1, 8, 15, 16, 17, 100, 128, 129, 1000, 4096, 8193, 65536,
                               131072, 131073, 200000, 1 << 20, (1 << 20) + 1, 3 << 20,
                               (5 << 20) + 12345, 40 << 20};

static bool all_zero(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return false;
  return true;
}

static void malloc_sizes_alignment_and_usable_size(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    unsigned char *p = prezero_malloc(sizes[i]);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 16, 0);
    size_t u = prezero_malloc_usable_size(p);
    assert_true(u >= sizes[i]);
    memset(p, 0xab, u); /* the whole usable size is ours */
    prezero_free(p);
  }
  assert_int_equal(prezero_malloc_usable_size(NULL), 0);
}

static void malloc_zero_is_unique_and_freeable(void **state) {
  (void)state;
  void *a = prezero_malloc(0), *b = prezero_malloc(0);
  assert_non_null(a);
  assert_non_null(b);
  assert_ptr_not_equal(a, b);
  prezero_free(a);
  prezero_free(b);
  prezero_free(NULL); /* no-op */
}

static void impossible_sizes_fail_with_enomem(void **state) {
  (void)state;
  size_t bad[] = {SIZE_MAX, SIZE_MAX / 2, (size_t)PTRDIFF_MAX + 1, (size_t)1 << 62};
  for (size_t i = 0; i < 4; i++) {
    expect_enomem(bad[i]);
    errno = 0;
    assert_null(prezero_aligned_alloc(64, bad[i]));
    assert_int_equal(errno, ENOMEM);
    void *p = NULL;
    assert_int_equal(prezero_posix_memalign(&p, 64, bad[i]), ENOMEM);
    assert_null(p);
  }
}

/* Sizes the kernel refuses under its heuristic overcommit (vm.overcommit_memory
 * 0): more than RAM + swap in one mapping, so glibc's malloc of them fails
 * (its mmap does); prezero commits reserved memory, which the kernel does
 * not check, and refuses them itself. Before: 32 GiB, 1 TiB, 64 TiB and a
 * 2^46 alignment all returned pointers (the program was OOM-killed when it
 * used one). Modes 1 (always) and 2 (strict, checked by the kernel at
 * commit) are not this test's. */
static void sizes_beyond_ram_and_swap_fail_under_heuristic_overcommit(void **state) {
  (void)state;
  char buf[8] = "";
  FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
  if (!f || !fgets(buf, sizeof buf, f) || buf[0] != '0') {
    if (f) fclose(f);
    skip();
  }
  fclose(f);
  pz_kernel.overcommit = 0; /* as read at start (growth_past_free_chunks sets 1) */
  struct sysinfo si;
  assert_int_equal(sysinfo(&si), 0);
  size_t over = ((size_t)si.totalram + si.totalswap) * si.mem_unit + ((size_t)1 << 30);
  size_t sizes[] = {over, over * 32, (size_t)64 << 40};
  for (size_t i = 0; i < 3; i++) {
    expect_enomem(sizes[i]);
  }
  void *p = NULL;
  assert_int_equal(prezero_posix_memalign(&p, (size_t)1 << 46, 1), ENOMEM);
  assert_null(p);
  void *q = prezero_malloc((size_t)4 << 20); /* growing a block beyond it fails, the block stays */
  assert_non_null(q);
  errno = 0;
  assert_null(prezero_realloc(q, over));
  assert_int_equal(errno, ENOMEM);
  prezero_free(q);
}

static void calloc_overflow_and_zeroing(void **state) {
  (void)state;
  errno = 0;
  assert_null(prezero_calloc(SIZE_MAX / 2, 3));
  assert_int_equal(errno, ENOMEM);
  errno = 0;
  assert_null(prezero_calloc((size_t)1 << 33, (size_t)1 << 33));
  assert_int_equal(errno, ENOMEM);
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    for (int round = 0; round < 3; round++) {
      /* dirty a block of the same size first, so calloc may get it back */
      unsigned char *d = prezero_malloc(sizes[i]);
      memset(d, 0x5a, prezero_malloc_usable_size(d));
      prezero_free(d);
      unsigned char *p = prezero_calloc(1, sizes[i]);
      assert_non_null(p);
      assert_true(all_zero(p, prezero_malloc_usable_size(p)));
      prezero_free(p);
    }
  }
  unsigned char *p = prezero_calloc(0, 100);
  assert_non_null(p);
  prezero_free(p);
}

static void realloc_semantics(void **state) {
  (void)state;
  unsigned char *p = prezero_realloc(NULL, 10); /* realloc(NULL, n) = malloc(n) */
  assert_non_null(p);
  for (int i = 0; i < 10; i++) p[i] = (unsigned char)i;
  size_t steps[] = {20, 100, 5000, 200000, 3 << 20, 20 << 20, 100, 7};
  size_t keep = 10;
  for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
    p = prezero_realloc(p, steps[s]);
    assert_non_null(p);
    for (size_t i = 0; i < keep && i < steps[s]; i++) assert_int_equal(p[i], (unsigned char)(i & 0xff));
    for (size_t i = keep; i < steps[s]; i++) p[i] = (unsigned char)(i & 0xff);
    keep = steps[s];
  }
  errno = 0;
  assert_null(prezero_realloc(p, SIZE_MAX)); /* failure leaves p alone */
  assert_int_equal(errno, ENOMEM);
  assert_int_equal(p[3], 3);
  assert_null(prezero_realloc(p, 0)); /* glibc: frees, returns NULL */
}

static void realloc_large_moves_pages_and_keeps_contents(void **state) {
  (void)state;
  size_t n = 16 << 20;
  uint64_t *p = prezero_malloc(n);
  for (size_t i = 0; i < n / 8; i += 512) p[i] = i * 2654435761u;
  void *blocker = prezero_malloc(4 << 20); /* likely sits right after p */
  struct prezero_stats before, after;
  prezero_stats_get(&before);
  p = prezero_realloc(p, 64 << 20);
  assert_non_null(p);
  for (size_t i = 0; i < n / 8; i += 512) assert_int_equal(p[i], i * 2654435761u);
  memset((char *)p + n, 1, (64 << 20) - n);
  prezero_stats_get(&after);
  assert_true(after.realloc_moved + after.realloc_in_place > before.realloc_moved + before.realloc_in_place);
  prezero_free(blocker);
  p = prezero_realloc(p, 6 << 20); /* shrink in place */
  for (size_t i = 0; i < (6 << 20) / 8; i += 512) assert_int_equal(p[i], i < n / 8 ? i * 2654435761u : 0x0101010101010101ull);
  prezero_free(p);
}

/* A program that madvised part of its block split it into mappings that
 * one mremap cannot move (a 6.1 kernel unmapped the destination trying,
 * and the copy that followed crashed): it moves chunk by chunk. */
static void realloc_of_a_block_the_program_split(void **state) {
  (void)state;
  size_t n = 16 << 20;
  unsigned char *p = prezero_malloc(n);
  for (size_t i = 0; i < n; i += 4096) p[i] = (unsigned char)(i >> 12);
  assert_int_equal(madvise(p + (4 << 20), 2 << 20, MADV_NOHUGEPAGE), 0);
  assert_int_equal(madvise(p + (6 << 20), 2 << 20, MADV_DONTFORK), 0);
  size_t grow = growth_past_free_chunks(p, n);
  struct prezero_stats before, after;
  prezero_stats_get(&before);
  unsigned char *q = prezero_realloc(p, n + grow);
  prezero_stats_get(&after);
  assert_non_null(q);
  assert_ptr_not_equal(q, p);
  /* moved chunk by chunk: each is one mapping */
  assert_int_equal(after.realloc_moved, before.realloc_moved + 1);
  for (size_t i = 0; i < n; i += 4096) assert_int_equal(q[i], (unsigned char)(i >> 12));
  q[n] = q[n + grow - 1] = 1; /* not all of it: it can be 2 GiB */
  prezero_free(q);
}

static void reallocarray_overflow(void **state) {
  (void)state;
  void *p = prezero_malloc(16);
  errno = 0;
  assert_null(prezero_reallocarray(p, SIZE_MAX / 4, 8));
  assert_int_equal(errno, ENOMEM);
  p = prezero_reallocarray(p, 100, 8);
  assert_non_null(p);
  memset(p, 1, 800);
  prezero_free(p);
}

static void alignment_apis(void **state) {
  (void)state;
  for (size_t a = sizeof(void *); a <= (8 << 20); a <<= 1) {
    size_t sz[] = {1, 24, a, a + 1, 3 * a, 300000};
    for (size_t i = 0; i < 6; i++) {
      void *p = NULL;
      assert_int_equal(prezero_posix_memalign(&p, a, sz[i]), 0);
      assert_int_equal((uintptr_t)p % a, 0);
      memset(p, 7, sz[i]);
      assert_true(prezero_malloc_usable_size(p) >= sz[i]);
      prezero_free(p);
      p = prezero_aligned_alloc(a, sz[i]);
      assert_non_null(p);
      assert_int_equal((uintptr_t)p % a, 0);
      prezero_free_aligned_sized(p, a, sz[i]);
      p = prezero_memalign(a, sz[i]);
      assert_int_equal((uintptr_t)p % a, 0);
      prezero_free(p);
    }
  }
  void *p = (void *)1;
  assert_int_equal(prezero_posix_memalign(&p, 24, 10), EINVAL); /* not a power of two */
  assert_int_equal(prezero_posix_memalign(&p, 4, 10), EINVAL);  /* below sizeof(void*) */
  assert_int_equal(prezero_posix_memalign(&p, 0, 10), EINVAL);
  assert_ptr_equal(p, (void *)1); /* untouched on error */
  errno = 0;
  assert_null(prezero_aligned_alloc(48, 10));
  assert_int_equal(errno, EINVAL);
  errno = 0;
  assert_null(prezero_memalign(SIZE_MAX, 10));
  assert_int_equal(errno, EINVAL);
  p = prezero_memalign(48, 10); /* glibc rounds 48 up to 64 */
  assert_int_equal((uintptr_t)p % 64, 0);
  prezero_free(p);
  p = prezero_valloc(100);
  assert_int_equal((uintptr_t)p % 4096, 0);
  prezero_free(p);
  p = prezero_pvalloc(5000);
  assert_int_equal((uintptr_t)p % 4096, 0);
  assert_true(prezero_malloc_usable_size(p) >= 8192);
  prezero_free(p);
  p = prezero_pvalloc(0);
  assert_non_null(p);
  prezero_free(p);
}

static void free_sized_accepts_matching_sizes(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    void *p = prezero_malloc(sizes[i]);
    prezero_free_sized(p, sizes[i]);
  }
  prezero_free_sized(NULL, 10);
}

/* Frees by a thread that never allocated (it has no heap) are counted:
 * before, 1000 such frees left free_calls unchanged. */
static void *free_all(void *arg) {
  void **v = arg;
  for (int i = 0; i < 1000; i++) prezero_free(v[i]);
  return NULL;
}
static void stats_count_frees_by_a_thread_that_never_allocated(void **state) {
  (void)state;
  static void *v[1000];
  for (int i = 0; i < 1000; i++) assert_non_null(v[i] = prezero_malloc(48));
  struct prezero_stats a, b;
  prezero_stats_get(&a);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, free_all, v), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  prezero_stats_get(&b);
  assert_true(b.free_calls - a.free_calls >= 1000);
  assert_true(b.remote_frees - a.remote_frees >= 1000);
}

static void stats_count_and_calloc_skips_memset_on_fresh_memory(void **state) {
  (void)state;
  struct prezero_stats a, b;
  assert_int_equal(prezero_stats_get(NULL), -1);
  assert_int_equal(prezero_stats_get(&a), 0);
  assert_int_equal(a.version, PREZERO_STATS_VERSION);
  /* with no dirty chunks left (trim), a 64 MiB calloc gets untouched chunks:
   * they read zero, so no memset */
  prezero_malloc_trim(0);
  assert_int_equal(prezero_stats_get(&a), 0);
  assert_int_equal(a.chunks_dirty, 0);
  void *p = prezero_calloc(1, 64 << 20);
  assert_int_equal(prezero_stats_get(&b), 0);
  assert_true(b.calloc_skipped_bytes >= a.calloc_skipped_bytes + (64 << 20));
  assert_true(b.large_live_bytes >= (64 << 20));
  assert_true(b.malloc_calls > a.malloc_calls);
  assert_int_equal(b.calloc_calls, a.calloc_calls + 1);
  /* calloc calls counted for every size: small, medium, large */
  void *q[3] = {prezero_calloc(3, 10), prezero_calloc(1, 300 << 10), prezero_malloc(100)};
  struct prezero_stats c;
  assert_int_equal(prezero_stats_get(&c), 0);
  assert_int_equal(c.calloc_calls, b.calloc_calls + 2);
  for (int i = 0; i < 3; i++) prezero_free(q[i]);
  prezero_free(p);
  assert_int_equal(prezero_stats_get(&a), 0);
  assert_true(a.chunks_dirty + a.chunks_untouched >= 32);
  /* trim gives dirty chunks back to the kernel */
  prezero_malloc_trim(0);
  assert_int_equal(prezero_stats_get(&b), 0);
  assert_int_equal(b.chunks_dirty, 0);
  assert_true(b.discarded_bytes >= a.chunks_dirty << PZ_CHUNK_SHIFT);
  assert_string_equal(prezero_version(), "0.1.0");
}

static size_t resident_pages(const void *p, size_t len) {
  unsigned char vec[256];
  assert_true(len / 4096 <= sizeof vec);
  assert_int_equal(mincore((void *)((uintptr_t)p & ~(uintptr_t)4095), len, vec), 0);
  size_t n = 0;
  for (size_t i = 0; i < len / 4096; i++) n += vec[i] & 1;
  return n;
}

/* Spans freed in a chunk of 4 KiB pages go back to the kernel once the
 * purge delay (10 ms) has passed, at the heap's next slow path (here: the
 * next span retired); the live neighbours keep their bytes, and a purged
 * span reused by calloc reads zero. */
static void freed_spans_are_purged_after_the_delay(void **state) {
  (void)state;
  enum { N = 6, SZ = 256 << 10 };
  unsigned char *b[N];
  for (int i = 0; i < N; i++) {
    b[i] = prezero_malloc(SZ);
    assert_non_null(b[i]);
    memset(b[i], 0xa5, SZ);
  }
  for (int i = 0; i < N; i += 2) prezero_free(b[i]);
  usleep(30000);
  prezero_free(b[1]); /* a slow path after the delay: everything waiting goes */
  for (int i = 0; i < 3; i++) assert_int_equal(resident_pages(b[i], SZ), 0);
  assert_int_equal(resident_pages(b[4], SZ), 0);
  for (int i = 3; i < N; i += 2) {
    assert_int_equal(resident_pages(b[i], SZ), SZ / 4096);
    for (size_t k = 0; k < SZ; k++)
      if (b[i][k] != 0xa5) fail_msg("live block %d changed at %zu", i, k);
  }
  struct prezero_stats a, c;
  prezero_stats_get(&a);
  unsigned char *z = prezero_calloc(1, SZ);
  prezero_stats_get(&c);
  assert_true(all_zero(z, SZ));
  assert_true(c.calloc_skipped_bytes >= a.calloc_skipped_bytes + SZ); /* purged: no memset */
  prezero_free(z);
  prezero_free(b[3]);
  prezero_free(b[5]);
}

/* A medium block (above 128 KiB) grows in place over free slices after it:
 * same pointer, contents kept, usable size grown, counted. Where the heap
 * puts a block depends on what ran before, so blocks are made until one
 * has room after it (a fresh chunk always has); the ones that moved
 * instead must have kept their contents too. */
static void realloc_grows_medium_blocks_in_place(void **state) {
  (void)state;
  enum { TRIES = 64, SZ = 200 << 10, GROWN = 260 << 10 };
  unsigned char *held[TRIES];
  int n = 0, in_place = 0;
  for (; n < TRIES && !in_place; n++) {
    struct prezero_stats a, b;
    unsigned char *p = prezero_malloc(SZ);
    assert_non_null(p);
    for (size_t i = 0; i < SZ; i++) p[i] = (unsigned char)(i * 7 + n);
    prezero_stats_get(&a);
    unsigned char *q = prezero_realloc(p, GROWN);
    prezero_stats_get(&b);
    assert_non_null(q);
    for (size_t i = 0; i < SZ; i++)
      if (q[i] != (unsigned char)(i * 7 + n)) fail_msg("byte %zu lost growing", i);
    assert_true(prezero_malloc_usable_size(q) >= GROWN);
    memset(q + SZ, 0x5a, GROWN - SZ);
    if (q == p) {
      in_place = 1;
      assert_int_equal(b.realloc_in_place, a.realloc_in_place + 1);
    }
    held[n] = q;
  }
  assert_true(in_place); /* within 64 tries */
  /* and on, to 1500 KiB (in place or moved): everything kept */
  unsigned char *r = prezero_realloc(held[n - 1], 1500 << 10);
  assert_non_null(r);
  for (size_t i = 0; i < SZ; i++)
    if (r[i] != (unsigned char)(i * 7 + n - 1)) fail_msg("byte %zu lost", i);
  for (size_t i = SZ; i < GROWN; i++)
    if (r[i] != 0x5a) fail_msg("byte %zu lost", i);
  held[n - 1] = r;
  for (int i = 0; i < n; i++) prezero_free(held[i]);
}

/* A block freed by a thread that does not own its page stays in that
 * thread's cache (xc) and is the thread's next malloc of its size (once its
 * tc has no block of the size); calloc
 * from there reads zero; a block reused once goes home when that thread
 * frees it again (nothing circulates for ever in a foreign thread); the
 * thread's exit sends what it kept home, where the owner hands it out. */
struct xc_case {
  unsigned char *p[3];
  bool reused, sent_home, zeroed;
};
static void *xc_thread(void *arg) {
  struct xc_case *x = arg;
  prezero_free(prezero_malloc(4000)); /* this thread now has a heap (and its tc no 64-byte block) */
  prezero_free(x->p[0]);
  unsigned char *q = prezero_malloc(64);
  x->reused = q == x->p[0];
  prezero_free(q);
  unsigned char *r = prezero_malloc(64);
  x->sent_home = r != x->p[0];
  prezero_free(x->p[1]);
  unsigned char *c = prezero_calloc(1, 64);
  x->zeroed = c == x->p[1];
  for (int i = 0; i < 64; i++)
    if (c[i]) x->zeroed = false;
  prezero_free(c);
  prezero_free(r); /* (its own tc's blocks come before xc's) */
  prezero_free(x->p[2]); /* kept until the thread exits */
  return NULL;
}
static void blocks_freed_by_another_thread_are_reused_there(void **state) {
  (void)state;
  struct xc_case x;
  memset(&x, 0, sizeof x);
  for (int i = 0; i < 3; i++) {
    x.p[i] = prezero_malloc(64);
    memset(x.p[i], 0xab, 64);
  }
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, xc_thread, &x), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_true(x.reused);
  assert_true(x.sent_home);
  assert_true(x.zeroed);
  enum { N = 8192 };
  void **got = calloc(N, sizeof *got);
  assert_non_null(got);
  int seen = 0, n = 0;
  while (n < N && seen < 3) {
    got[n] = prezero_malloc(64);
    for (int i = 0; i < 3; i++) seen += got[n] == x.p[i];
    n++;
  }
  assert_int_equal(seen, 3); /* all three came home */
  for (int i = 0; i < n; i++) prezero_free(got[i]);
  free(got);
}

/* A full page that gets one block back from its owner (through the
 * thread's tc): a page of many
 * blocks waits behind the front page (the next malloc does not take the
 * slow path for that one block); a page of a few big blocks goes to the
 * front and hands the block out next. */
static void a_full_page_that_gets_one_block_back(void **state) {
  (void)state;
  static const struct { size_t size; int n; bool waits; } cases[] = {{256, 1000, true}, {4096, 72, false}};
  for (int c = 0; c < 2; c++) {
    void *b[1100];
    int n = cases[c].n;
    for (int i = 0; i < n; i++) assert_non_null(b[i] = prezero_malloc(cases[c].size));
    pz_page *front = pz_small_page_of(pz_chunk_of(b[n - 1]), b[n - 1]);
    while (cases[c].waits && !front->free && front->capacity == front->reserved && n < 1100) {
      assert_non_null(b[n] = prezero_malloc(cases[c].size)); /* the front page must have blocks */
      front = pz_small_page_of(pz_chunk_of(b[n]), b[n]);
      n++;
    }
    int x = -1;
    for (int i = 0; i < n && x < 0; i++) {
      pz_page *pg = pz_small_page_of(pz_chunk_of(b[i]), b[i]);
      if (pg != front && pg->in_full && pg->used == pg->reserved) x = i;
    }
    assert_true(x >= 0);
    pz_page *pg = pz_small_page_of(pz_chunk_of(b[x]), b[x]);
    if (cases[c].waits) assert_true(front->free || front->capacity < front->reserved); /* it has blocks */
    prezero_free(b[x]);
    assert_true(pg->in_full); /* in the thread's tc: still counted as used */
    pz_heap_flush_tc();       /* home: the one block it gets back */
    assert_false(pg->in_full);
    void *q = prezero_malloc(cases[c].size);
    if (cases[c].waits) {
      assert_ptr_not_equal(q, b[x]);
      assert_ptr_equal(pz_small_page_of(pz_chunk_of(q), q), front);
      assert_ptr_equal(front->next, pg); /* second */
    } else {
      assert_ptr_equal(q, b[x]);
    }
    b[x] = q;
    for (int i = 0; i < n; i++) prezero_free(b[i]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      /* first: its chunks must be fresh (faulted as 4 KiB pages), not ones
       * that held huge pages of the large blocks the later tests free */
      cmocka_unit_test(freed_spans_are_purged_after_the_delay),
      cmocka_unit_test(malloc_sizes_alignment_and_usable_size),
      cmocka_unit_test(malloc_zero_is_unique_and_freeable),
      cmocka_unit_test(impossible_sizes_fail_with_enomem),
      cmocka_unit_test(sizes_beyond_ram_and_swap_fail_under_heuristic_overcommit),
      cmocka_unit_test(calloc_overflow_and_zeroing),
      cmocka_unit_test(realloc_semantics),
      cmocka_unit_test(realloc_large_moves_pages_and_keeps_contents),
      cmocka_unit_test(realloc_of_a_block_the_program_split),
      cmocka_unit_test(reallocarray_overflow),
      cmocka_unit_test(alignment_apis),
      cmocka_unit_test(free_sized_accepts_matching_sizes),
      cmocka_unit_test(stats_count_and_calloc_skips_memset_on_fresh_memory),
      cmocka_unit_test(stats_count_frees_by_a_thread_that_never_allocated),
      cmocka_unit_test(realloc_grows_medium_blocks_in_place),
      cmocka_unit_test(blocks_freed_by_another_thread_are_reused_there),
      cmocka_unit_test(a_full_page_that_gets_one_block_back),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
