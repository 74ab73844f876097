/* Bad frees are caught and abort with one line naming the pointer: each
 * case runs in a forked child whose stderr we read. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>
#include <cmocka.h>

#include "internal.h"

/* Run fn in a child; expect SIGABRT and `expect` in its stderr, which must
 * also name the pointer the child reports through `ptr_out`. */
static void expect_abort(void (*fn)(char *ptrtext), const char *expect) {
  int out[2], msg[2];
  assert_int_equal(pipe(out), 0);
  assert_int_equal(pipe(msg), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 2);
    char ptrtext[64] = "";
    fn(ptrtext);
    _exit(0); /* not reached when the check works */
  }
  close(out[1]);
  close(msg[1]);
  char buf[1024] = "";
  size_t n = 0;
  ssize_t r;
  while ((r = read(out[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
  buf[n] = 0;
  int st;
  waitpid(pid, &st, 0);
  close(out[0]);
  close(msg[0]);
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT) fail_msg("child did not abort; stderr: %s", buf);
  if (!strstr(buf, expect)) fail_msg("expected '%s' in: %s", expect, buf);
  assert_non_null(strstr(buf, "prezero: "));
  assert_non_null(strstr(buf, "0x")); /* names the pointer */
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
static void do_double_free_cross_thread(char *t) {
  (void)t;
  void *p = prezero_malloc(64);
  pthread_t th;
  pthread_create(&th, NULL, free_in_thread, p);
  pthread_join(th, NULL);
  prezero_free(p); /* the owner frees what another thread already freed */
}

#if PZ_DEBUG
static void do_write_after_free(char *t) {
  (void)t;
  char *p = prezero_malloc(64);
  prezero_free(p);
  p[40] = 1; /* the program writes into a freed block */
  for (int i = 0; i < 2000; i++) prezero_malloc(64); /* p is handed out again: checked */
}
static void write_after_free(void **s) { (void)s; expect_abort(do_write_after_free, "write after free"); }
#endif

static void double_free_small(void **s) { (void)s; expect_abort(do_double_free_small, "double free"); }
static void double_free_large(void **s) { (void)s; expect_abort(do_double_free_large, "double free"); }
static void double_free_cross_thread(void **s) { (void)s; expect_abort(do_double_free_cross_thread, "double free"); }
static void interior_pointer(void **s) { (void)s; expect_abort(do_interior_free, "invalid pointer"); }
static void interior_pointer_large(void **s) { (void)s; expect_abort(do_interior_free_large, "invalid pointer"); }
static void stack_pointer(void **s) { (void)s; expect_abort(do_stack_free, "not allocated by prezero"); }
static void foreign_pointer(void **s) { (void)s; expect_abort(do_foreign_free, "not allocated by prezero"); }
static void realloc_of_freed(void **s) { (void)s; expect_abort(do_realloc_freed, "realloc()"); }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(double_free_small),      cmocka_unit_test(double_free_large),
      cmocka_unit_test(double_free_cross_thread), cmocka_unit_test(interior_pointer),
      cmocka_unit_test(interior_pointer_large), cmocka_unit_test(stack_pointer),
      cmocka_unit_test(foreign_pointer),        cmocka_unit_test(realloc_of_freed),
#if PZ_DEBUG
      cmocka_unit_test(write_after_free),
#endif
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
