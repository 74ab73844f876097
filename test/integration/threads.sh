#!/usr/bin/env bash
# Multi-threaded programs under the preload.
#  1. A pthread stress program (compiled here without preload): 8 threads
#     doing malloc/calloc/realloc/aligned allocations of sizes from 1 byte
#     to several MB, writing and checking patterns, checking that calloc
#     memory is zero and that alignment and malloc_usable_size hold, handing
#     blocks to other threads to check and free (cross-thread frees), two
#     waves of threads (later threads free what exited threads allocated),
#     short-lived threads, and fork() from a multi-threaded process with the
#     child allocating. Its output must equal the run without preload.
#  2. xz -T2 and zstd -T2 (whichever are installed) compressing and
#     decompressing a ~24 MB file: compressed bytes must equal those made
#     without preload, and decompression must give back the input.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"
pz_require_cmd gcc

cat >stress.c <<'EOF'
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define NTHREADS 8
#define SLOTS 512
#define OPS 100000

static volatile int errors;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char *what, void *p, size_t size, uint64_t seed) {
  pthread_mutex_lock(&report_lock);
  if (errors < 20)
    fprintf(stderr, "ERROR: %s (ptr %p size %zu seed %llx)\n", what, p, size, (unsigned long long)seed);
  errors++;
  pthread_mutex_unlock(&report_lock);
}

static inline uint64_t xs(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;
  return *s = x;
}

static inline uint64_t word(uint64_t seed, size_t k) { return seed ^ (k * 0x9E3779B97F4A7C15ull); }

/* Fill [from, size) of p with the pattern for seed. */
static void fill(unsigned char *p, size_t from, size_t size, uint64_t seed) {
  size_t nw = size / 8, k = from / 8;
  size_t i = from;
  for (; i < size && (i % 8); i++) p[i] = (unsigned char)(word(seed, i / 8) >> (8 * (i % 8)));
  for (k = i / 8; k < nw; k++) { uint64_t w = word(seed, k); memcpy(p + 8 * k, &w, 8); }
  for (i = nw * 8 > i ? nw * 8 : i; i < size; i++) p[i] = (unsigned char)(word(seed, i / 8) >> (8 * (i % 8)));
}

/* Check [0, size): all of it for blocks up to 64 KiB, else the ends and a
 * sample of words. */
static int check(const unsigned char *p, size_t size, uint64_t seed) {
  size_t nw = size / 8;
  size_t step = size <= 65536 ? 1 : 61;
  for (size_t k = 0; k < nw; k += (k < 512 || k + 512 > nw) ? 1 : step) {
    uint64_t w;
    memcpy(&w, p + 8 * k, 8);
    if (w != word(seed, k)) return 0;
  }
  for (size_t i = nw * 8; i < size; i++)
    if (p[i] != (unsigned char)(word(seed, i / 8) >> (8 * (i % 8)))) return 0;
  return 1;
}

static int all_zero(const unsigned char *p, size_t size) {
  size_t i = 0;
  for (; i < size && ((uintptr_t)(p + i) & 7); i++) if (p[i]) return 0;
  for (; i + 8 <= size; i += 8) if (*(const uint64_t *)(p + i)) return 0;
  for (; i < size; i++) if (p[i]) return 0;
  return 1;
}

static size_t pick_size(uint64_t *rng) {
  uint64_t r = xs(rng) % 10000;
  if (r < 7000) return 1 + xs(rng) % 256;               /* 70% tiny */
  if (r < 9000) return 257 + xs(rng) % 8000;            /* 20% small */
  if (r < 9940) return 8192 + xs(rng) % (256 << 10);    /* 9.4% medium */
  if (r < 9995) return (256 << 10) + xs(rng) % (3 << 20); /* 0.55% large */
  return (4 << 20) + xs(rng) % (12 << 20);              /* 0.05% huge */
}

struct block { unsigned char *p; size_t size; uint64_t seed; };

/* Mailbox for cross-thread frees. */
#define MAILBOX 1024
static struct block mailbox[MAILBOX];
static int mail_n;
static pthread_mutex_t mail_lock = PTHREAD_MUTEX_INITIALIZER;

static int post(struct block b) {
  int ok = 0;
  pthread_mutex_lock(&mail_lock);
  if (mail_n < MAILBOX) { mailbox[mail_n++] = b; ok = 1; }
  pthread_mutex_unlock(&mail_lock);
  return ok;
}

static int fetch(struct block *b) {
  int ok = 0;
  pthread_mutex_lock(&mail_lock);
  if (mail_n > 0) { *b = mailbox[--mail_n]; ok = 1; }
  pthread_mutex_unlock(&mail_lock);
  return ok;
}

static void fail_msg(const char *fmt, ...) {
  va_list ap;
  pthread_mutex_lock(&report_lock);
  if (errors < 20) {
    fputs("ERROR: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
  }
  errors++;
  pthread_mutex_unlock(&report_lock);
}

static void fail_align(const char *what, void *p, size_t size, size_t align) {
  pthread_mutex_lock(&report_lock);
  if (errors < 20) fprintf(stderr, "ERROR: %s (ptr %p size %zu alignment %zu)\n", what, p, size, align);
  errors++;
  pthread_mutex_unlock(&report_lock);
}

static void check_and_free(struct block b) {
  if (!check(b.p, b.size, b.seed)) fail("pattern damaged", b.p, b.size, b.seed);
  free(b.p);
}

static void *worker(void *arg) {
  uintptr_t id = (uintptr_t)arg;
  uint64_t rng = 0x1234567ull + id * 0x10001ull;
  static __thread struct block slot[SLOTS];  /* per thread */
  memset(slot, 0, sizeof slot);
  for (int op = 0; op < OPS; op++) {
    struct block *b = &slot[xs(&rng) % SLOTS];
    uint64_t kind = xs(&rng) % 100;
    if (b->p) {
      if (!check(b->p, b->size, b->seed)) fail("pattern damaged", b->p, b->size, b->seed);
      if (kind < 15) {                                   /* realloc, keep prefix */
        size_t ns = kind < 5 ? b->size / 2 + 1 : kind < 10 ? b->size + 1 + xs(&rng) % 64 : pick_size(&rng);
        unsigned char *np = realloc(b->p, ns);
        if (!np) { fail("realloc returned NULL", b->p, ns, b->seed); continue; }
        size_t keep = ns < b->size ? ns : b->size;
        if (!check(np, keep, b->seed)) fail("realloc lost data", np, keep, b->seed);
        fill(np, keep, ns, b->seed);
        b->p = np; b->size = ns;
      } else if (kind < 25) {                            /* hand to another thread */
        if (!post(*b)) free(b->p);
        b->p = NULL;
      } else {
        free(b->p);
        b->p = NULL;
      }
    } else {
      size_t size = pick_size(&rng);
      uint64_t seed = xs(&rng);
      unsigned char *p;
      if (kind < 20) {
        p = calloc(1, size);
        if (p && !all_zero(p, size)) fail("calloc memory not zero", p, size, seed);
      } else if (kind < 25) {
        size_t n = 1 + size % 7;
        p = calloc(n, size / n + 1);
        size = n * (size / n + 1);
        if (p && !all_zero(p, size)) fail("calloc(n, m) memory not zero", p, size, seed);
      } else if (kind < 30) {
        size_t align = (size_t)16 << (xs(&rng) % 9);    /* 16 .. 4096 */
        void *q = NULL;
        int rc = posix_memalign(&q, align, size);
        if (rc) { fail_align("posix_memalign failed", NULL, size, align); continue; }
        p = q;
        if ((uintptr_t)p % align) fail_align("posix_memalign misaligned", p, size, align);
      } else if (kind < 33) {
        size_t align = (size_t)8 << (xs(&rng) % 10);
        size_t asize = (size + align - 1) / align * align;
        p = aligned_alloc(align, asize);
        if (p && (uintptr_t)p % align) fail_align("aligned_alloc misaligned", p, asize, align);
        size = asize;
      } else if (kind < 35) {
        size_t align = (size_t)64 << (xs(&rng) % 6);
        p = memalign(align, size);
        if (p && (uintptr_t)p % align) fail_align("memalign misaligned", p, size, align);
      } else {
        p = malloc(size);
      }
      if (!p) { fail("allocation returned NULL", NULL, size, seed); continue; }
      if (malloc_usable_size(p) < size) fail("malloc_usable_size too small", p, size, seed);
      if ((uintptr_t)p % 16 && size >= 16) fail("malloc result not 16-byte aligned", p, size, seed);
      if (kind >= 35 && kind < 40) {                     /* write all usable bytes */
        size_t us = malloc_usable_size(p);
        memset(p, 0x5a, us);
      }
      fill(p, 0, size, seed);
      b->p = p; b->size = size; b->seed = seed;
    }
    if ((op & 63) == 0) {                                /* free others' blocks */
      struct block m;
      if (fetch(&m)) check_and_free(m);
    }
    if (op % (OPS / 16) == 0) {         /* calloc right after freeing dirty memory */
      size_t big = ((size_t)1 << 20) * (1 + xs(&rng) % 8) + xs(&rng) % 5000;
      unsigned char *d = malloc(big);
      if (!d) { fail("malloc returned NULL", NULL, big, 0); continue; }
      memset(d, 0xff, big);
      free(d);
      unsigned char *z = calloc(big, 1);
      if (!z || !all_zero(z, big)) fail("calloc after free of dirty memory not zero", z, big, 0);
      free(z);
      unsigned char *s = malloc(200);                    /* and a small one */
      if (!s) { fail("malloc returned NULL", NULL, 200, 0); continue; }
      memset(s, 0xff, 200);
      free(s);
      s = calloc(25, 8);
      if (!s || !all_zero(s, 200)) fail("small calloc after free not zero", s, 200, 0);
      free(s);
    }
  }
  /* Leave a few blocks in the mailbox for the next wave; free the rest. */
  for (int i = 0; i < SLOTS; i++)
    if (slot[i].p) {
      if (!(i % 16) && post(slot[i])) continue;
      check_and_free(slot[i]);
      slot[i].p = NULL;
    }
  return NULL;
}

static void *short_lived(void *arg) {
  size_t n = 100 + (uintptr_t)arg * 37;
  unsigned char *p = malloc(n);
  if (p) fill(p, 0, n, n);
  return p;                                 /* freed by the main thread */
}

static void fork_children(int count) {
  for (int i = 0; i < count; i++) {
    pid_t pid = fork();
    if (pid < 0) { fail_msg("fork failed: %s", strerror(errno)); return; }
    if (pid == 0) {
      alarm(10);                              /* a deadlock shows as SIGALRM */
      int bad = 0;
      for (int j = 0; j < 2000; j++) {
        size_t n = 1 + (size_t)j * 97 % 70000;
        unsigned char *p = j % 3 ? malloc(n) : calloc(1, n);
        if (!p) { bad = 1; break; }
        if (!(j % 3) && !all_zero(p, n)) bad = 1;
        fill(p, 0, n, j);
        if (!check(p, n, j)) bad = 1;
        free(p);
      }
      _exit(bad ? 3 : 0);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid) { fail_msg("waitpid failed: %s", strerror(errno)); continue; }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      if (WIFSIGNALED(st))
        fail_msg("child forked from a multi-threaded process killed by signal %d%s", WTERMSIG(st),
                 WTERMSIG(st) == SIGALRM ? " (SIGALRM: it hung for 10 s, deadlock in malloc after fork?)" : "");
      else
        fail_msg("child forked from a multi-threaded process exited %d (3: bad memory)", WEXITSTATUS(st));
      return;                                 /* one is enough (a hang costs 10 s) */
    }
  }
}

int main(void) {
  pthread_t t[NTHREADS];
  for (int wave = 0; wave < 2; wave++) {
    for (uintptr_t i = 0; i < NTHREADS; i++)
      if (pthread_create(&t[i], NULL, worker, (void *)(i + wave * NTHREADS))) { puts("pthread_create failed"); return 1; }
    fork_children(10);                        /* while the workers run */
    for (int i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
  }
  struct block m;
  while (fetch(&m)) check_and_free(m);
  for (uintptr_t i = 0; i < 200; i++) {
    pthread_t s;
    void *p;
    if (pthread_create(&s, NULL, short_lived, (void *)i)) { puts("pthread_create failed"); return 1; }
    pthread_join(s, &p);
    size_t n = 100 + i * 37;
    if (!p || !check(p, n, n)) fail("block from an exited thread damaged", p, n, n);
    free(p);
  }
  printf("threads %d waves 2 ops %d errors %d\n", NTHREADS, NTHREADS * 2 * OPS, errors);
  return errors ? 1 : 0;
}
EOF
pz_ref build gcc -O2 -g -pthread -Wall -o stress stress.c
pz_ref stress ./stress >stress.ref.out
pz_run stress ./stress >stress.pz.out
pz_compare_files "pthread stress output" stress.ref.out stress.pz.out
summary="$(cat stress.pz.out)"

# ---- xz / zstd -T2 ----------------------------------------------------------
awk 'BEGIN {
  x = 7
  for (i = 0; i < 400000; i++) {
    x = (x * 1103515245 + 12345) % 2147483648
    printf("%d %x %s %d\n", i, x, substr("lorem ipsum dolor sit amet consectetur adipiscing elit sed do", x % 30 + 1, 8 + x % 25), x % 1000)
  }
}' >data.txt
head -c 6000000 /dev/zero | tr '\0' 'z' >>data.txt
awk 'BEGIN { x = 3; for (i = 0; i < 1500000; i++) { x = (x * 69069 + 1) % 4294967296; printf("%c", 32 + x % 90) } }' >>data.txt
in_sha=$(pz_sha data.txt)

tools=()
if command -v xz >/dev/null 2>&1; then
  tools+=(xz)
  pz_ref xz-c xz -T2 -3 --block-size=3MiB -c data.txt >data.ref.xz
  pz_run xz-c xz -T2 -3 --block-size=3MiB -c data.txt >data.pz.xz
  pz_compare_files "xz -T2 compressed output" data.ref.xz data.pz.xz
  pz_run xz-d xz -T2 -d -c data.ref.xz >xz.out
  pz_compare_str "sha256 of xz -T2 -d output" "$in_sha" "$(pz_sha xz.out)"
else
  pz_note "xz not installed: not tested"
fi
if command -v zstd >/dev/null 2>&1; then
  tools+=(zstd)
  pz_ref zstd-c zstd -q -T2 -9 -c data.txt >data.ref.zst
  pz_run zstd-c zstd -q -T2 -9 -c data.txt >data.pz.zst
  pz_compare_files "zstd -T2 compressed output" data.ref.zst data.pz.zst
  pz_run zstd-long zstd -q -T2 --long=27 -3 -c data.txt >data.pz.long.zst
  pz_run zstd-d zstd -q -d -c --long=27 data.pz.long.zst >zstd.out
  pz_compare_str "sha256 of zstd --long round trip" "$in_sha" "$(pz_sha zstd.out)"
  pz_run zstd-d2 zstd -q -d -c data.ref.zst >zstd2.out
  pz_compare_str "sha256 of zstd -d output" "$in_sha" "$(pz_sha zstd2.out)"
else
  pz_note "zstd not installed: not tested"
fi

pz_pass "$summary; compressors: ${tools[*]:-none}"
