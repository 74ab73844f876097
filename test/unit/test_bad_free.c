/* Bad frees are caught and abort with one line naming the pointer: each
 * case runs in a forked child whose stderr we read. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>
#include <cmocka.h>

#include "api/api.h"

static int report_fd = -1; /* the child's end of the pipe report_ptr writes to */

/* In the child: the message must name this pointer. */
static void report_ptr(const void *p) {
  char t[64];
  int n = snprintf(t, sizeof t, "%p", p);
  if (write(report_fd, t, (size_t)n) != n) _exit(4);
}

/* Run fn in a child; expect SIGABRT and `expect` in its stderr, which must
 * also name the pointer the child reports through report_ptr(). */
static void expect_abort(void (*fn)(char *ptrtext), const char *expect) {
  int out[2], msg[2];
  assert_int_equal(pipe(out), 0);
  assert_int_equal(pipe(msg), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 2);
    report_fd = msg[1];
    char ptrtext[64] = "";
    fn(ptrtext);
    _exit(0); /* not reached when the check works */
  }
  close(out[1]);
  close(msg[1]);
  char buf[1024] = "", named[64] = "";
  size_t n = 0;
  ssize_t r;
  while ((r = read(out[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
  buf[n] = 0;
  n = 0;
  while ((r = read(msg[0], named + n, sizeof named - 1 - n)) > 0) n += (size_t)r;
  named[n] = 0;
  int st;
  waitpid(pid, &st, 0);
  close(out[0]);
  close(msg[0]);
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT)
    fail_msg("child did not abort (status 0x%x); stderr: %s", st, buf);
  if (!strstr(buf, expect)) fail_msg("expected '%s' in: %s", expect, buf);
  assert_non_null(strstr(buf, "prezero: "));
  assert_non_null(strstr(buf, "0x")); /* names the pointer */
  if (named[0] && !strstr(buf, named)) fail_msg("expected the block %s named in: %s", named, buf);
}

static void do_double_free_small(char *t) {
  (void)t;
  void *p = prezero_malloc(40);
  prezero_free(p);
  prezero_free(p);
}
static void do_double_free_large(char *t) {
  (void)t;
  void *p = prezero_malloc(8 << 20);
  prezero_free(p);
  prezero_free(p);
}
static void do_interior_free(char *t) {
  (void)t;
  char *p = prezero_malloc(100);
  prezero_free(p + 16);
}
static void do_interior_free_large(char *t) {
  (void)t;
  char *p = prezero_malloc(8 << 20);
  prezero_free(p + 4096);
}
static void do_stack_free(char *t) {
  (void)t;
  int x;
  prezero_malloc(1);
  prezero_free(&x);
}
static void do_foreign_free(char *t) {
  (void)t;
  prezero_malloc(1);
  prezero_free(malloc(32)); /* glibc's block: not ours */
}
static void do_realloc_freed(char *t) {
  (void)t;
  void *p = prezero_malloc(8 << 20);
  prezero_free(p);
  prezero_realloc(p, 100);
}
static void *free_in_thread(void *p) {
  prezero_free(p);
  return NULL;
}
/* realloc checks a small block as free() does: a freed block that still
 * fits (the in-place path) or must move, freed here or by another thread
 * (kept in that thread's cache of remote blocks) */
static void do_realloc_freed_small_fits(char *t) {
  (void)t;
  void *keep = prezero_malloc(64), *p = prezero_malloc(64);
  (void)keep;
  prezero_free(p);
  report_ptr(p);
  prezero_realloc(p, 40);
}
static void do_realloc_freed_small_grows(char *t) {
  (void)t;
  void *keep = prezero_malloc(64), *p = prezero_malloc(64);
  (void)keep;
  prezero_free(p);
  report_ptr(p);
  prezero_realloc(p, 1000);
}
static void do_realloc_freed_small_remote(char *t) {
  (void)t;
  void *p = prezero_malloc(96);
  pthread_t th;
  pthread_create(&th, NULL, free_in_thread, p);
  pthread_join(th, NULL);
  report_ptr(p);
  prezero_realloc(p, 50);
}
/* malloc_usable_size of a freed block is 0, as glibc answers */
static void usable_size_of_freed(void **s) {
  (void)s;
  void *keep = prezero_malloc(128), *p = prezero_malloc(128);
  assert_true(prezero_malloc_usable_size(p) >= 128);
  prezero_free(p);
  assert_int_equal(prezero_malloc_usable_size(p), 0);
  prezero_free(keep);
}
static void do_double_free_cross_thread(char *t) {
  (void)t;
  void *p = prezero_malloc(64);
  pthread_t th;
  pthread_create(&th, NULL, free_in_thread, p);
  pthread_join(th, NULL);
  prezero_free(p); /* the owner frees what another thread already freed */
}

/* A thread that has a heap keeps blocks of other heaps it frees in its own
 * cache (xc) for reuse; a second free of such a block, by the owner or by
 * the caching thread, must still abort. The caching thread stays alive (its
 * exit would send the block home). */
static int hold_pipe[2];
static void *free_and_hold(void *p) {
  prezero_free(prezero_malloc(64)); /* this thread now has a heap */
  prezero_free(p);
  char c = 0;
  if (write(hold_pipe[1], &c, 1) != 1) _exit(5);
  pause();
  return NULL;
}
static void *free_twice(void *p) {
  prezero_free(prezero_malloc(64));
  prezero_free(p);
  prezero_free(p);
  return NULL;
}
static void do_double_free_cached_owner(char *t) {
  (void)t;
  void *p = prezero_malloc(64);
  report_ptr(p);
  if (pipe(hold_pipe) != 0) _exit(6);
  pthread_t th;
  pthread_create(&th, NULL, free_and_hold, p);
  char c;
  if (read(hold_pipe[0], &c, 1) != 1) _exit(7);
  prezero_free(p); /* the owner frees it while it sits in th's cache */
}
static void do_double_free_cached_twice(char *t) {
  (void)t;
  void *p = prezero_malloc(64);
  report_ptr(p);
  pthread_t th;
  pthread_create(&th, NULL, free_twice, p);
  pthread_join(th, NULL);
}

/* Pointers into a small chunk that are no block: its header (slice 0), and
 * a slice no page holds (free fails on the page descriptor's capacity, 0
 * for both, before it reads the pointed-to memory). */
static void do_free_into_chunk_header(char *t) {
  (void)t;
  char *p = prezero_malloc(64);
  char *h = (char *)pz_chunk_of(p) + 512;
  report_ptr(h);
  prezero_free(h);
}
static void do_free_into_free_slice(char *t) {
  (void)t;
  char *p = prezero_malloc(64);
  pz_chunk *c = pz_chunk_of(p);
  for (unsigned s = PZ_SLICES - 1; s > 0; s--)
    if (!(c->used_slices & (1u << s))) {
      char *q = (char *)c + ((size_t)s << PZ_SLICE_SHIFT) + 64;
      report_ptr(q);
      prezero_free(q);
      return;
    }
  _exit(2); /* no free slice: the test could not run */
}

/* Overwrites of a free block's link word (use after free, overflow from the
 * block before): the allocator must abort naming the block instead of
 * handing out the forged address. A child that gets the forged address
 * exits with 3, one that allocates on without noticing with 0. */
static void alloc_until(size_t size, const void *forged) {
  for (int i = 0; i < 20000; i++) {
    void *q = prezero_malloc(size);
    if (q == forged) _exit(3);
  }
}
/* Free p, then push it out of the thread's tc (which holds its own freed
 * blocks in an array, not linked through them) onto its page's local_free:
 * free more blocks of the class than xc keeps, p first (the older half of
 * a full class goes to the pages). */
static void free_to_page(void *p, size_t size) {
  void *more[2 * PZ_TC_MAX];
  for (int i = 0; i < 2 * PZ_TC_MAX; i++) more[i] = prezero_malloc(size);
  prezero_free(p);
  for (int i = 0; i < 2 * PZ_TC_MAX; i++) prezero_free(more[i]);
}
static void do_uaf_link_stack(char *t) { /* freed by the owner: local_free */
  (void)t;
  int x;
  void **p = prezero_malloc(48);
  free_to_page(p, 48);
  report_ptr(p);
  *p = &x; /* the classic: point the list at memory the attacker controls */
  alloc_until(48, &x);
}
static void do_uaf_link_sibling(char *t) { /* a plain pointer to a live block of the same page */
  (void)t;
  void **p = prezero_malloc(80), **live = prezero_malloc(80);
  free_to_page(p, 80);
  report_ptr(p);
  *p = live; /* would hand `live` out twice */
  alloc_until(80, live);
}
static void do_uaf_link_zeroed(char *t) { /* a freed block cleared by the program */
  (void)t;
  char *p = prezero_malloc(112);
  free_to_page(p, 112);
  report_ptr(p);
  memset(p, 0, 8);
  alloc_until(112, NULL);
}
static void do_overflow_into_free(char *t) { /* `free`: a never handed out block after p */
  (void)t;
  int x;
  char *p = prezero_malloc(1000);
  pz_page *pg = pz_small_page_of(pz_chunk_of(p), p);
  if (pg->free != (pz_block *)(p + 1024)) _exit(2); /* not a fresh page */
  report_ptr(p + 1024);
  memset(p, 'A', 1024);
  *(void **)(p + 1024) = &x; /* the overflow reaches the next block's link */
  alloc_until(1000, &x);
}
static void do_uaf_link_remote(char *t) { /* freed by another thread: xfree */
  (void)t;
  int x;
  void **p = prezero_malloc(160);
  pthread_t th;
  pthread_create(&th, NULL, free_in_thread, p);
  pthread_join(th, NULL);
  report_ptr(p);
  *p = &x;
  alloc_until(160, &x);
}
static void do_uaf_link_remote_trim(char *t) { /* the owner walks xfree in malloc_trim */
  (void)t;
  int x;
  void **keep = prezero_malloc(192), **p = prezero_malloc(192);
  (void)keep;
  pthread_t th;
  pthread_create(&th, NULL, free_in_thread, p);
  pthread_join(th, NULL);
  report_ptr(p);
  *p = &x;
  prezero_malloc_trim(0);
}
/* A test whose child must abort with `msg` in its one line. */
#define ABORT_TEST(name, fn, msg) \
  static void name(void **s) {      \
    (void)s;                        \
    expect_abort(fn, msg);          \
  }
ABORT_TEST(uaf_link_stack, do_uaf_link_stack, "corrupted free list")
ABORT_TEST(uaf_link_sibling, do_uaf_link_sibling, "corrupted free list")
ABORT_TEST(uaf_link_zeroed, do_uaf_link_zeroed, "corrupted free list")
ABORT_TEST(overflow_into_free, do_overflow_into_free, "corrupted free list")
ABORT_TEST(uaf_link_remote, do_uaf_link_remote, "corrupted free list")
ABORT_TEST(uaf_link_remote_trim, do_uaf_link_remote_trim, "corrupted free list")

/* A block freed into the thread's tc is not linked through: what the
 * program writes into it after the free is never taken for an address,
 * and the next malloc of the class hands the block itself out again
 * (checked in a child: the forged address must never come back). */
static void uaf_write_into_cached(void **s) {
  (void)s;
  pid_t pid = fork();
  if (pid == 0) {
    int x;
    void **p = prezero_malloc(48);
    prezero_free(p);
    *p = &x;
    void *q = prezero_malloc(48);
    if (q != p) _exit(5); /* the block just freed comes back first */
    alloc_until(48, &x);
    _exit(0);
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

/* The links are stored encoded: a freed block holds neither its successor's
 * address nor NULL. */
static void links_encoded(void **s) {
  (void)s;
  void **a = prezero_malloc(224), **b = prezero_malloc(224), *more[2 * PZ_TC_MAX];
  for (int i = 0; i < 2 * PZ_TC_MAX; i++) more[i] = prezero_malloc(224);
  *a = *b = NULL;
  prezero_free(a);
  prezero_free(b);
  for (int i = 0; i < 2 * PZ_TC_MAX; i++) prezero_free(more[i]); /* a, b go to local_free */
  assert_true(*b != (void *)a);
  assert_true(*a != NULL);
  void *b2 = prezero_malloc(224), *a2 = prezero_malloc(224);
  (void)b2;
  (void)a2;
}

#if PZ_DEBUG
static void do_write_after_free(char *t) {
  (void)t;
  char *p = prezero_malloc(64);
  prezero_free(p);
  p[40] = 1; /* the program writes into a freed block */
  for (int i = 0; i < 2000; i++) prezero_malloc(64); /* p is handed out again: checked */
}
ABORT_TEST(write_after_free, do_write_after_free, "write after free")
#endif

ABORT_TEST(double_free_small, do_double_free_small, "double free")
ABORT_TEST(double_free_large, do_double_free_large, "double free")
ABORT_TEST(double_free_cross_thread, do_double_free_cross_thread, "double free")
ABORT_TEST(interior_pointer, do_interior_free, "invalid pointer")
ABORT_TEST(interior_pointer_large, do_interior_free_large, "invalid pointer")
ABORT_TEST(stack_pointer, do_stack_free, "not allocated by prezero")
ABORT_TEST(pointer_into_chunk_header, do_free_into_chunk_header, "invalid pointer")
ABORT_TEST(pointer_into_free_slice, do_free_into_free_slice, "invalid pointer")
ABORT_TEST(foreign_pointer, do_foreign_free, "not allocated by prezero")
ABORT_TEST(realloc_of_freed, do_realloc_freed, "realloc()")
ABORT_TEST(realloc_of_freed_small_fits, do_realloc_freed_small_fits, "realloc(): pointer already freed")
ABORT_TEST(realloc_of_freed_small_grows, do_realloc_freed_small_grows, "realloc(): pointer already freed")
ABORT_TEST(realloc_of_freed_small_remote, do_realloc_freed_small_remote, "realloc(): pointer already freed")
ABORT_TEST(double_free_cached_owner, do_double_free_cached_owner, "double free")
ABORT_TEST(double_free_cached_twice, do_double_free_cached_twice, "double free")

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(double_free_small),      cmocka_unit_test(double_free_large),
      cmocka_unit_test(double_free_cross_thread), cmocka_unit_test(interior_pointer),
      cmocka_unit_test(interior_pointer_large), cmocka_unit_test(stack_pointer),
      cmocka_unit_test(foreign_pointer),        cmocka_unit_test(pointer_into_chunk_header),
      cmocka_unit_test(pointer_into_free_slice),        cmocka_unit_test(realloc_of_freed),
      cmocka_unit_test(uaf_link_stack),         cmocka_unit_test(uaf_link_sibling),
      cmocka_unit_test(uaf_link_zeroed),        cmocka_unit_test(overflow_into_free),
      cmocka_unit_test(uaf_link_remote),        cmocka_unit_test(uaf_link_remote_trim),
      cmocka_unit_test(uaf_write_into_cached),  cmocka_unit_test(links_encoded),          cmocka_unit_test(double_free_cached_owner),
      cmocka_unit_test(double_free_cached_twice), cmocka_unit_test(realloc_of_freed_small_fits),
      cmocka_unit_test(realloc_of_freed_small_grows), cmocka_unit_test(realloc_of_freed_small_remote),
      cmocka_unit_test(usable_size_of_freed),
#if PZ_DEBUG
      cmocka_unit_test(write_after_free),
#endif
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
