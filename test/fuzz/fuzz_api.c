/* libFuzzer harness: input bytes become a sequence of allocator calls on 32
 * slots (malloc, calloc, realloc, free, free_sized, aligned_alloc,
 * posix_memalign and memalign with valid and invalid alignments, sizes from
 * 0 up past the large threshold, and huge ones), run through the prezero_*
 * API of the core (libFuzzer itself keeps glibc's malloc). Invariants
 * checked on every call: the C standard's error returns (EINVAL, ENOMEM),
 * alignment, usable size >= requested, calloc memory reads zero, a block's
 * contents survive realloc, and every block keeps its pattern until freed.
 * A byte switches threads: the slots are handed to a second thread that
 * frees them (cross-thread frees). Everything is freed at the end of each
 * input. Build and run: test/fuzz/run.sh. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prezero.h"

#define SLOTS 32
struct slot { unsigned char *p; size_t n; unsigned char tag; };
static struct slot slots[SLOTS];

static void die(const char *what, size_t v) {
  fprintf(stderr, "fuzz: invariant broken: %s (%zu)\n", what, v);
  abort();
}

static void fill(struct slot *s) {
  size_t step = s->n <= 4096 ? 1 : 997;
  for (size_t i = 0; i < s->n; i += step) s->p[i] = (unsigned char)(s->tag ^ i);
  if (s->n) s->p[s->n - 1] = s->tag;
}

static void verify(const struct slot *s, size_t upto) {
  size_t step = s->n <= 4096 ? 1 : 997;
  for (size_t i = 0; i < upto && i + 1 < s->n; i += step)
    if (s->p[i] != (unsigned char)(s->tag ^ i)) die("block contents changed", i);
  if (upto >= s->n && s->n && s->p[s->n - 1] != s->tag) die("last byte changed", s->n);
}

static void release(struct slot *s, int sized) {
  if (!s->p) return;
  verify(s, s->n);
  if (sized) prezero_free_sized(s->p, s->n);
  else prezero_free(s->p);
  s->p = NULL;
}

static size_t size_from(const uint8_t *d) {
  unsigned v = (unsigned)d[0] | (unsigned)d[1] << 8;
  switch (d[2] % 8) {
  case 0: return v % 64;               /* tiny, including 0 */
  case 1: return v % 4096;
  case 2: return v * 2u;               /* up to 128 KiB */
  case 3: return (size_t)v * 40;       /* medium, up to 2.5 MiB */
  case 4: return (size_t)(v % 64) << 20; /* large: up to 63 MiB */
  case 5: return SIZE_MAX - v;         /* impossible */
  case 6: return ((size_t)1 << 62) + v;
  default: return v;
  }
}

static void *thread_free(void *arg) {
  struct slot *batch = arg;
  for (int i = 0; i < SLOTS; i++) release(&batch[i], 0);
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  for (size_t at = 0; at + 4 <= size; at += 4) {
    const uint8_t *d = data + at;
    struct slot *s = &slots[d[3] % SLOTS];
    size_t n = size_from(d);
    size_t align = (size_t)1 << (d[0] % 20);
    if (d[1] & 0x80) align += d[0] % 3; /* sometimes not a power of two */
    errno = 0;
    switch ((d[3] >> 5) % 8) {
    case 0:
    case 1: { /* malloc or calloc */
      release(s, 0);
      int zero = d[3] & 16;
      void *p = zero ? prezero_calloc(1, n) : prezero_malloc(n);
      if (!p) {
        if (errno != ENOMEM) die("malloc/calloc NULL without ENOMEM", n);
        if (n < ((size_t)1 << 40)) die("a plausible size refused", n);
        break;
      }
      if ((uintptr_t)p % 16) die("misaligned malloc", (uintptr_t)p);
      if (prezero_malloc_usable_size(p) < n) die("usable size below request", n);
      if (zero) {
        size_t step = n <= 65536 ? 1 : 4093;
        for (size_t i = 0; i < n; i += step)
          if (((unsigned char *)p)[i]) die("calloc memory not zero", i);
      }
      *s = (struct slot){p, n, d[1]};
      fill(s);
      break;
    }
    case 2: { /* realloc */
      if (!s->p) break;
      verify(s, s->n);
      if (n > ((size_t)1 << 40)) {
        void *q = prezero_realloc(s->p, n);
        if (q || errno != ENOMEM) die("huge realloc did not fail with ENOMEM", n);
        break; /* the old block is untouched */
      }
      if (n == 0) n = 1; /* realloc(p, 0) frees: tested in the unit tests */
      unsigned char *q = prezero_realloc(s->p, n);
      if (!q) die("realloc failed", n);
      size_t keep = n < s->n ? n : s->n, step = s->n <= 4096 ? 1 : 997;
      for (size_t i = 0; i + 1 < keep; i += step)
        if (q[i] != (unsigned char)(s->tag ^ i)) die("realloc lost data", i);
      s->p = q;
      s->n = n;
      fill(s);
      break;
    }
    case 3:
      release(s, d[0] & 1);
      break;
    case 4: { /* aligned_alloc / posix_memalign / memalign */
      release(s, 0);
      if (n > ((size_t)1 << 26)) n %= (size_t)1 << 26;
      void *p = NULL;
      int kind = d[2] % 3, pow2 = align && !(align & (align - 1));
      if (kind == 0) {
        p = prezero_aligned_alloc(align, n);
        if (!pow2 && (p || errno != EINVAL)) die("aligned_alloc with a bad alignment", align);
      } else if (kind == 1) {
        int e = prezero_posix_memalign(&p, align, n);
        int ok_align = pow2 && align % sizeof(void *) == 0;
        if (!ok_align && e != EINVAL) die("posix_memalign with a bad alignment", align);
        if (e) p = NULL;
      } else {
        p = prezero_memalign(align, n);
      }
      if (!p) break;
      if (pow2 && (uintptr_t)p % align) die("misaligned", align);
      if (prezero_malloc_usable_size(p) < n) die("aligned usable size below request", n);
      *s = (struct slot){p, n, d[1]};
      fill(s);
      break;
    }
    case 5: /* check everything */
      for (int i = 0; i < SLOTS; i++)
        if (slots[i].p) verify(&slots[i], slots[i].n);
      break;
    case 6: { /* another thread frees a batch */
      static struct slot batch[SLOTS];
      memcpy(batch, slots, sizeof batch);
      memset(slots, 0, sizeof slots);
      pthread_t t;
      if (pthread_create(&t, NULL, thread_free, batch) == 0) pthread_join(t, NULL);
      else thread_free(batch);
      break;
    }
    default:
      if (d[0] == 0xff) prezero_malloc_trim(0);
      break;
    }
  }
  for (int i = 0; i < SLOTS; i++) release(&slots[i], 0);
  return 0;
}
