/* Sub-case helpers for the drop-in programs that test served mappings
 * (served-mapping-semantics, guest-ram-idioms): the current sub-case's name
 * in every FAIL line and in the watchdog's report, mappings prezero must
 * serve, one byte per 2 MiB block, zero counts and faulting accesses.
 * Include after dropin.h; each program has its own copy of this state. */
#ifndef DROPIN_SERVED_H
#define DROPIN_SERVED_H

#include <setjmp.h>

static const char *sub = "";
static int ran, skipped;

#define FAILS(fmt, ...) fail("%s: " fmt, sub, ##__VA_ARGS__)

static __attribute__((unused)) void report(char *buf, size_t size) { snprintf(buf, size, "in sub-case \"%s\"", sub); }

/* A fresh len-byte mapping advised MADV_HUGEPAGE that prezero must serve;
 * NULL: skipped (said why) or failed. */
static __attribute__((unused)) char *served_map(size_t len, struct served *sv) {
  served_begin(sv);
  char *m = anon_map_huge(len);
  if (!m) {
    FAILS("mmap(%zu KiB) + madvise(MADV_HUGEPAGE): expected success, got %s", len / KiB, strerror(errno));
    return NULL;
  }
  char what[128];
  snprintf(what, sizeof what, "%s: the %zu KiB MADV_HUGEPAGE mapping", sub, len / KiB);
  if (!served_check(what, sv, 1)) {
    munmap(m, len);
    skipped++;
    return NULL;
  }
  ran++;
  return m;
}

/* The byte the sub-cases write in block b: at page b % 512 of it. */
static __attribute__((unused)) size_t at(size_t b) { return b * HPAGE + (b % 512) * PAGE; }
static __attribute__((unused)) char val(size_t b, char base) { return (char)(base + (char)b); }

static __attribute__((unused)) void write_blocks(char *m, size_t first, size_t last, char base) {
  for (size_t b = first; b <= last; b++) m[at(b)] = val(b, base);
}

/* Blocks first..last hold their byte and zero at the ends of the block. */
static __attribute__((unused)) bool check_blocks(const char *m, size_t first, size_t last, char base, const char *what) {
  for (size_t b = first; b <= last; b++) {
    if (m[at(b)] != val(b, base) || m[b * HPAGE] != (b % 512 ? 0 : val(b, base)) || m[b * HPAGE + HPAGE - 1] != 0) {
      FAILS("%s: block %zu: expected byte %d at page %zu and 0 at its ends, read %d, %d, %d", what, b, val(b, base),
            b % 512, m[at(b)], m[b * HPAGE], m[b * HPAGE + HPAGE - 1]);
      return false;
    }
  }
  return true;
}

/* Bytes of [p, p+len) that are not zero. */
static __attribute__((unused)) size_t nonzero_bytes(const char *p, size_t len) {
  size_t n = 0;
  const uint64_t *q = (const uint64_t *)p;
  for (size_t i = 0; i < len / 8; i++)
    if (q[i])
      for (int k = 0; k < 8; k++) n += ((const char *)&q[i])[k] != 0;
  for (size_t i = len / 8 * 8; i < len; i++) n += p[i] != 0;
  return n;
}

/* An access (a write, or a read) to p gets SIGSEGV, in this process (a
 * handler jumps back). */
static sigjmp_buf segv_jmp;
static __attribute__((unused)) void on_segv(int sig) {
  (void)sig;
  siglongjmp(segv_jmp, 1);
}
static __attribute__((unused)) bool access_faults(volatile char *p, bool write) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_segv;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_NODEFER;
  sigaction(SIGSEGV, &sa, &old);
  bool faulted = true;
  if (!sigsetjmp(segv_jmp, 1)) {
    if (write) *p = 1;
    else (void)*p;
    faulted = false;
  }
  sigaction(SIGSEGV, &old, NULL);
  return faulted;
}

#endif
