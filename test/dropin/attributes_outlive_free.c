/* attributes-outlive-free: what a program did to the pages of a large block
 * (protection, fork advice, locks) must go away when it frees the block.
 *
 * Hazard: glibc serves blocks this large (64 MiB, above its mmap threshold)
 * with their own mmap and unmaps them on free, so a program may mprotect a
 * guard page in a block, mark it MADV_DONTFORK or MADV_WIPEONFORK, or mlock
 * part of it, and forget about it when it frees the block. prezero keeps
 * freed chunks mapped and hands them out again: a background worker zeroing
 * a PROT_NONE or read-only page takes SIGSEGV and kills the process; the
 * next block placed there faults on write, is missing in a forked child
 * (DONTFORK) or reads zero there (WIPEONFORK); locked pages stay locked.
 *
 * glibc/the kernel: free() munmaps the block; every attribute goes with the
 * mapping; later allocations are fresh, writable, inherited by fork, and
 * VmLck is back where it was.
 *
 * The test: sub-cases, each in its own forked child (so one crash does not
 * hide the others), each on a fresh malloc(64 MiB) written once per page and
 * then freed:
 *   (a) mprotect 4 KiB at offset 1 MiB PROT_NONE; free; sleep 1.5 s; then
 *       malloc 2000 blocks of 16 KiB and write each whole; then malloc(64 MiB)
 *       and write every page: the child must exit 0;
 *   (b) the same with 1 MiB at offset 8 MiB PROT_READ;
 *   (c) madvise(MADV_DONTFORK) on the block; free; malloc(64 MiB) again
 *       (until one lands on the old pages, at most 16 tries), fill every page
 *       with a pattern, fork: the grandchild must read the pattern on every
 *       page;
 *   (d) the same with MADV_WIPEONFORK;
 *   (e) mlock 4 MiB of it; free: VmLck must be what it was before the malloc.
 */
#include "dropin.h"

#include <ucontext.h>

#define BLOCK (64 * MiB)

static pid_t main_tid; /* the sub-case's own thread, for SIGSEGV reports */

static char *page_up(void *p) { return (char *)(((uintptr_t)p + PAGE - 1) & ~(uintptr_t)(PAGE - 1)); }

static void write_pages(char *p, size_t len, uintptr_t tag) {
  for (size_t o = 0; o + sizeof(uintptr_t) <= len; o += PAGE) *(volatile uintptr_t *)(p + o) = tag ^ o;
}

/* A fresh 64 MiB block, written once per page (a program's use of it). */
static char *fresh_block(void) {
  char *p = malloc(BLOCK);
  if (!p) {
    fail("malloc(64 MiB): expected a block, got NULL (%s)", strerror(errno));
    _exit(1);
  }
  write_pages(p, BLOCK, 1);
  return p;
}

/* After the block went away: the program allocates and writes as usual. */
static int use_memory_again(void) {
  sleep_ms(1500); /* an allocator's background zeroing of the freed block happens here */
  static char *small[2000];
  for (int i = 0; i < 2000; i++) {
    small[i] = malloc(16 * KiB);
    if (!small[i]) {
      fail("malloc(16 KiB) #%d: expected a block, got NULL", i);
      return 1;
    }
    memset(small[i], 0x5a, 16 * KiB);
  }
  char *big = malloc(BLOCK);
  if (!big) {
    fail("malloc(64 MiB) after the free: expected a block, got NULL");
    return 1;
  }
  write_pages(big, BLOCK, 2);
  free(big);
  for (int i = 0; i < 2000; i++) free(small[i]);
  return 0;
}

static int case_protect(int prot, size_t off, size_t len) {
  char *p = fresh_block();
  if (mprotect(page_up(p) + off, len, prot) != 0) {
    note("mprotect: %s", strerror(errno));
    return SKIP;
  }
  free(p);
  return use_memory_again();
}

/* (c), (d): advice on a freed block must not reach the next one. */
static int case_fork_advice(int advice, const char *name) {
  char *p = fresh_block();
  char *old = page_up(p);
  size_t oldlen = BLOCK - PAGE;
  if (madvise(old, oldlen, advice) != 0) {
    note("madvise(%s): %s", name, strerror(errno));
    return SKIP;
  }
  free(p);
  sleep_ms(500);
  /* the next 64 MiB blocks, until one lands on the old pages (glibc: the
   * first, at the same or another address) */
  enum { TRIES = 16 };
  char *b[TRIES];
  int n = 0, pick = 0;
  for (; n < TRIES; n++) {
    b[n] = malloc(BLOCK);
    if (!b[n]) break;
    if (b[n] < old + oldlen && b[n] + BLOCK > old) {
      pick = n;
      n++;
      break;
    }
  }
  if (!n) {
    fail("malloc(64 MiB) after the free: expected a block, got NULL");
    return 1;
  }
  char *q = b[pick];
  write_pages(q, BLOCK, 3);
  pid_t pid = fork();
  if (pid == 0) {
    watchdog(20);
    main_tid = gettid();
    for (size_t o = 0; o + sizeof(uintptr_t) <= BLOCK; o += PAGE) {
      uintptr_t v = *(volatile uintptr_t *)(q + o);
      if (v != (3 ^ o)) {
        fail("(%s) forked child, new block %p at offset %#zx: expected %#lx, read %#lx", name, (void *)q, o,
             (unsigned long)(3 ^ o), (unsigned long)v);
        _exit(1);
      }
    }
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  int rc = 0;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fail("(%s) a forked child reading every page of a new 64 MiB block (%s the old one): expected exit 0, got %s",
         name, pick == 0 && !(q < old + oldlen && q + BLOCK > old) ? "not on" : "on", wait_desc(st));
    rc = 1;
  }
  for (int i = 0; i < n; i++) free(b[i]);
  return rc;
}

static int case_mlock(void) {
  long before = status_kib("VmLck");
  char *p = fresh_block();
  if (mlock(page_up(p), 4 * MiB) != 0) {
    note("mlock(4 MiB): %s", strerror(errno));
    return SKIP;
  }
  long locked = status_kib("VmLck");
  free(p);
  long after = status_kib("VmLck");
  if (after != before) {
    fail("(mlock) VmLck after free of a 64 MiB block with 4 MiB locked: expected %ld kB (as before the malloc), "
         "got %ld kB (%ld kB while locked)", before, after, locked);
    return 1;
  }
  return 0;
}

/* Says where a SIGSEGV came from (the program's thread or another, which
 * address), then dies of it as it would have. */
static void on_segv(int sig, siginfo_t *si, void *ctx) {
  char buf[512], where[200] = "";
#if defined(__x86_64__)
  ucontext_t *uc = ctx;
  void *ip = (void *)uc->uc_mcontext.gregs[REG_RIP];
  Dl_info di;
  if (dladdr(ip, &di) && di.dli_fname)
    snprintf(where, sizeof where, ", code at %p in %s (%s)", ip, strrchr(di.dli_fname, '/') ? strrchr(di.dli_fname, '/') + 1 : di.dli_fname,
             di.dli_sname ? di.dli_sname : "?");
#else
  (void)ctx;
#endif
  pid_t tid = gettid();
  int n = snprintf(buf, sizeof buf, "%s: SIGSEGV at address %p in %s (tid %d)%s\n", dropin_name, si->si_addr,
                   tid == main_tid ? "the program's thread" : "a thread the program did not create", (int)tid, where);
  if (write(2, buf, (size_t)n) < 0) { /* nothing to do */ }
  signal(sig, SIG_DFL);
  raise(sig);
}

static int run_case(int which) {
  switch (which) {
  case 0: return case_protect(PROT_NONE, 1 * MiB, PAGE);
  case 1: return case_protect(PROT_READ, 8 * MiB, 1 * MiB);
  case 2: return case_fork_advice(MADV_DONTFORK, "MADV_DONTFORK");
  case 3: return case_fork_advice(MADV_WIPEONFORK, "MADV_WIPEONFORK");
  default: return case_mlock();
  }
}

int main(void) {
  dropin_name = "attributes-outlive-free";
  static const char *names[] = {
      "(a) 4 KiB PROT_NONE guard page in a freed block, then the program allocates and writes",
      "(b) 1 MiB PROT_READ in a freed block, then the program allocates and writes",
      "(c) MADV_DONTFORK on a freed block, then a new block is inherited by fork",
      "(d) MADV_WIPEONFORK on a freed block, then a new block is inherited by fork",
      "(e) mlock in a freed block: VmLck back to before",
  };
  int skipped = 0;
  for (int i = 0; i < 5; i++) {
    double t0 = now_s();
    pid_t pid = fork();
    if (pid < 0) skip("fork: %s", strerror(errno));
    if (pid == 0) {
      watchdog(30);
      main_tid = gettid();
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_sigaction = on_segv;
      sa.sa_flags = SA_SIGINFO;
      sigaction(SIGSEGV, &sa, NULL);
      _exit(run_case(i));
    }
    int st;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
      note("%s: pass (%.1f s)", names[i], now_s() - t0);
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == SKIP) {
      note("%s: skipped", names[i]);
      skipped++;
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 1) {
      fail("%s: failed (the check above)", names[i]);
    } else {
      fail("%s: expected the program to go on and exit 0, got %s", names[i], wait_desc(st));
    }
  }
  if (skipped == 5) skip("every sub-case was skipped");
  return dropin_result();
}
