/* realloc-of-freed-block: realloc (or a sized free) of a block already freed
 * must not hand the block back as live.
 *
 * Hazard: a use-after-free bug of the form free(p); ...; p = realloc(p, n).
 * If the allocator returns p, the program goes on using memory the allocator
 * may give to someone else: silent corruption instead of a crash at the bug.
 * prezero's README promises: "realloc of a freed pointer prints one line
 * and aborts, e.g. prezero: free(): double free: 0x7f3a1c0400c0". It returns
 * p as live when the new size fits the old size class (64 -> 32, 64 -> 64,
 * 24 -> 16), and aborts otherwise.
 *
 * glibc/the kernel (measured, glibc 2.36): NOT an abort for small blocks:
 * a freed small block sits in the tcache with its header intact, and
 * realloc does not look there: it returns p (shrink, same size, grow in
 * place) or copies and then aborts in free ("double free detected in
 * tcache 2") when it moves. A freed block of 128 KiB or more was unmapped:
 * realloc reads its header and dies of SIGSEGV. So the reference run
 * accepts any of: SIGABRT, SIGSEGV, or realloc returning; it checks the
 * harness works. With prezero loaded, its own promise is checked: killed by
 * SIGABRT, with a line on stderr that names the pointer.
 *
 * The test: each case in a forked child (stderr captured): p = malloc(a),
 * written, free(p), realloc(p, b): 64 -> 32, 64 -> 64, 24 -> 16,
 * 64 -> 128, 1000 -> 500, 200 KiB -> 100 KiB, 200 KiB -> 400 KiB,
 * 4 MiB -> 2 MiB, 4 MiB -> 8 MiB; and free(p); free_sized(p, 64) when the
 * process has free_sized (C23; glibc 2.36 has not). */
#include "dropin.h"

struct rcase {
  size_t a, b;
  bool sized; /* free_sized(p, a) instead of realloc */
};

/* Runs one case; returns its wait status and what it wrote on stderr. */
static int run(const struct rcase *c, char *err, size_t errsize, void **pp) {
  int pfd[2];
  if (pipe(pfd) != 0) return -1;
  /* the child reports the pointer it got on a second pipe */
  int ptr[2];
  if (pipe(ptr) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    watchdog(10);
    dup2(pfd[1], 2);
    close(pfd[0]);
    close(ptr[0]);
    char *p = malloc(c->a);
    if (!p) _exit(4);
    memset(p, 0x33, c->a);
    if (write(ptr[1], &p, sizeof p) < 0) _exit(4);
    free(p);
    if (c->sized) {
      void (*fs)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
      fs(p, c->a);
      _exit(3);
    }
    void *q = realloc(p, c->b);
    char buf[128];
    int n = snprintf(buf, sizeof buf, "realloc returned %p\n", q);
    if (write(2, buf, (size_t)n) < 0) { /* nothing to do */ }
    _exit(3);
  }
  close(pfd[1]);
  close(ptr[1]);
  *pp = NULL;
  if (read(ptr[0], pp, sizeof *pp) != (ssize_t)sizeof *pp) *pp = NULL;
  close(ptr[0]);
  size_t got = 0;
  ssize_t n;
  while (got + 1 < errsize && (n = read(pfd[0], err + got, errsize - 1 - got)) > 0) got += (size_t)n;
  err[got] = 0;
  close(pfd[0]);
  int st;
  waitpid(pid, &st, 0);
  return st;
}

int main(void) {
  dropin_name = "realloc-of-freed-block";
  watchdog(60);
  bool pz = prezero_loaded();
  bool have_free_sized = dlsym(RTLD_DEFAULT, "free_sized") != NULL;
  static const struct rcase cases[] = {
      {64, 32, false},           {64, 64, false},           {24, 16, false},
      {64, 128, false},          {1000, 500, false},        {200 * KiB, 100 * KiB, false},
      {200 * KiB, 400 * KiB, false}, {4 * MiB, 2 * MiB, false}, {4 * MiB, 8 * MiB, false},
      {64, 0, true},
  };
  for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const struct rcase *c = &cases[i];
    char what[96];
    if (c->sized) snprintf(what, sizeof what, "free(p); free_sized(p, %zu)", c->a);
    else snprintf(what, sizeof what, "p = malloc(%zu); free(p); realloc(p, %zu)", c->a, c->b);
    if (c->sized && !have_free_sized) {
      note("%s: skipped (no free_sized in this process)", what);
      continue;
    }
    char err[1024];
    void *p = NULL;
    int st = run(c, err, sizeof err, &p);
    char *nl = strchr(err, '\n');
    if (nl && nl[1] == 0) *nl = 0;
    if (st == -1 || (WIFEXITED(st) && WEXITSTATUS(st) == 4)) {
      fail("%s: the child could not run the case (%s)", what, st == -1 ? "fork/pipe failed" : "malloc failed");
      continue;
    }
    char ptr[32];
    snprintf(ptr, sizeof ptr, "%p", p);
    if (!pz) {
      /* glibc: abort, segfault or return are all what glibc does here */
      bool ok = (WIFSIGNALED(st) && (WTERMSIG(st) == SIGABRT || WTERMSIG(st) == SIGSEGV)) ||
                (WIFEXITED(st) && WEXITSTATUS(st) == 3);
      if (!ok) fail("%s: expected SIGABRT, SIGSEGV or a return, got %s", what, wait_desc(st));
      else note("%s: %s%s%s", what, wait_desc(st), err[0] ? ": " : "", err);
      continue;
    }
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT) {
      fail("%s: expected an abort (SIGABRT) with a message naming %s, got %s%s%s", what, ptr, wait_desc(st),
           err[0] ? ": " : "", err);
      continue;
    }
    if (!strstr(err, ptr)) {
      fail("%s: expected the abort message to name %s, stderr was: %s", what, ptr, err[0] ? err : "(empty)");
      continue;
    }
    note("%s: %s: %s", what, wait_desc(st), err);
  }
  return dropin_result();
}
