/*
 * Shared helpers for the prezero benchmark workloads.
 *
 * Everything here is header-only (static inline) so each workload is a
 * single translation unit.  The workloads are linked against nothing but
 * libc and pthreads; the allocator under test is chosen with LD_PRELOAD.
 *
 * Conventions used by every workload:
 *   - parameters are given on argv as key=value (sizes accept K/M/G suffixes,
 *     binary units), unknown keys are an error;
 *   - on success the program prints exactly one line "ok <checksum> ..." on
 *     stdout and exits 0; the checksum depends only on the parameters, never
 *     on addresses or thread scheduling, so it must be identical under every
 *     allocator;
 *   - every block is stamped with a pattern after allocation and checked
 *     before it is freed; a mismatch prints a diagnostic on stderr and exits 2;
 *     allocation failure exits 3; bad arguments exit 64.
 */
#ifndef PREZERO_BENCH_COMMON_H
#define PREZERO_BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_EXIT_CORRUPT 2
#define BENCH_EXIT_NOMEM 3
#define BENCH_EXIT_USAGE 64

/* ------------------------------------------------------------------ */
/* diagnostics                                                         */
/* ------------------------------------------------------------------ */

__attribute__((noreturn, format(printf, 2, 3))) static inline void
bench_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    exit(code);
}

static inline void *bench_malloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL)
        bench_fail(BENCH_EXIT_NOMEM, "malloc(%zu) failed", n);
    return p;
}

static inline void *bench_calloc(size_t k, size_t n)
{
    void *p = calloc(k, n);
    if (p == NULL)
        bench_fail(BENCH_EXIT_NOMEM, "calloc(%zu, %zu) failed", k, n);
    return p;
}

static inline void *bench_realloc(void *old, size_t n)
{
    void *p = realloc(old, n);
    if (p == NULL)
        bench_fail(BENCH_EXIT_NOMEM, "realloc(%p, %zu) failed", old, n);
    return p;
}

static inline void bench_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc != 0)
        bench_fail(BENCH_EXIT_NOMEM, "pthread_create failed: %s", strerror(rc));
}

static inline void bench_thread_join(pthread_t t)
{
    int rc = pthread_join(t, NULL);
    if (rc != 0)
        bench_fail(BENCH_EXIT_CORRUPT, "pthread_join failed: %s", strerror(rc));
}

/* ------------------------------------------------------------------ */
/* time                                                                */
/* ------------------------------------------------------------------ */

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void bench_sleep_ms(uint64_t ms)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)((ms % 1000) * 1000000u);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ */
/* deterministic PRNG: splitmix64 for seeding, xorshift64* for streams  */
/* ------------------------------------------------------------------ */

typedef struct {
    uint64_t s;
} rng_t;

static inline uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Independent stream `stream` derived from `seed`. */
static inline void rng_seed(rng_t *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ull) ^ 0x6A09E667F3BCC909ull;
    r->s = splitmix64(&x);
    if (r->s == 0)
        r->s = 0x853C49E6748FEA9Bull;
}

static inline uint64_t rng_next(rng_t *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, n), n > 0 (multiply-shift for n <= 2^32, else modulo). */
static inline uint64_t rng_below(rng_t *r, uint64_t n)
{
    if (n <= (1ull << 32)) {
        uint64_t hi = rng_next(r) >> 32;
        return (hi * n) >> 32;
    }
    return rng_next(r) % n;
}

/* Uniform in [lo, hi]. */
static inline uint64_t rng_range(rng_t *r, uint64_t lo, uint64_t hi)
{
    return lo + rng_below(r, hi - lo + 1);
}

/* ------------------------------------------------------------------ */
/* argv parsing: key=value                                             */
/* ------------------------------------------------------------------ */

static inline const char *arg_find(int argc, char **argv, const char *key)
{
    size_t kl = strlen(key);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], key, kl) == 0 && argv[i][kl] == '=')
            return argv[i] + kl + 1;
    return NULL;
}

/* Reject anything that is not key=value with a known key; handle --help. */
static inline void arg_validate(int argc, char **argv, const char *usage,
                                const char *const *keys)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("usage: %s %s\n", argv[0], usage);
            exit(0);
        }
        const char *eq = strchr(a, '=');
        int known = 0;
        if (eq != NULL) {
            size_t kl = (size_t)(eq - a);
            for (const char *const *k = keys; *k != NULL; k++)
                if (strlen(*k) == kl && strncmp(*k, a, kl) == 0)
                    known = 1;
        }
        if (!known)
            bench_fail(BENCH_EXIT_USAGE, "unknown argument '%s'\nusage: %s %s", a,
                       argv[0], usage);
    }
}

/* Unsigned integer with optional binary suffix k/K, m/M, g/G. */
static inline uint64_t arg_u64(int argc, char **argv, const char *key, uint64_t def)
{
    const char *s = arg_find(argc, argv, key);
    if (s == NULL)
        return def;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno != 0 || end == s || s[0] == '-')
        bench_fail(BENCH_EXIT_USAGE, "bad value for %s: '%s'", key, s);
    uint64_t mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1ull << 10; end++; break;
    case 'm': case 'M': mul = 1ull << 20; end++; break;
    case 'g': case 'G': mul = 1ull << 30; end++; break;
    default: break;
    }
    if (*end != '\0')
        bench_fail(BENCH_EXIT_USAGE, "bad value for %s: '%s'", key, s);
    if (v > UINT64_MAX / mul)
        bench_fail(BENCH_EXIT_USAGE, "value for %s too large: '%s'", key, s);
    return (uint64_t)v * mul;
}

static inline uint64_t arg_u64_range(int argc, char **argv, const char *key, uint64_t def,
                                     uint64_t lo, uint64_t hi)
{
    uint64_t v = arg_u64(argc, argv, key, def);
    if (v < lo || v > hi)
        bench_fail(BENCH_EXIT_USAGE, "%s=%" PRIu64 " out of range [%" PRIu64 ", %" PRIu64 "]",
                   key, v, lo, hi);
    return v;
}

static inline const char *arg_str(int argc, char **argv, const char *key, const char *def)
{
    const char *s = arg_find(argc, argv, key);
    return s != NULL ? s : def;
}

/* ------------------------------------------------------------------ */
/* block stamping                                                      */
/*                                                                     */
/* A block of n >= 16 bytes gets `tag` in its first 8 bytes, ~tag in   */
/* its last 8 bytes and (for blk_fill) the byte fill(tag) in between.  */
/* Smaller blocks are filled entirely with fill(tag).                  */
/* ------------------------------------------------------------------ */

static inline unsigned char blk_byte(uint64_t tag)
{
    return (unsigned char)((tag >> 56) ^ (tag >> 24) ^ tag ^ 0x5Au);
}

static inline void blk_stamp_ends(void *p, size_t n, uint64_t tag)
{
    unsigned char *b = (unsigned char *)p;
    if (n >= 16) {
        uint64_t inv = ~tag;
        memcpy(b, &tag, 8);
        memcpy(b + n - 8, &inv, 8);
    } else {
        memset(b, blk_byte(tag), n);
    }
}

/* Stamp the ends and fill the whole block (touches every byte). */
static inline void blk_fill(void *p, size_t n, uint64_t tag)
{
    if (n > 16)
        memset((unsigned char *)p + 8, blk_byte(tag), n - 16);
    blk_stamp_ends(p, n, tag);
}

/*
 * Check a block.  `filled` says whether it was written with blk_fill (then a
 * few interior bytes are checked as well).  Returns 1 when intact.
 */
static inline int blk_intact(const void *p, size_t n, uint64_t tag, int filled)
{
    const unsigned char *b = (const unsigned char *)p;
    if (n >= 16) {
        uint64_t h, t;
        memcpy(&h, b, 8);
        memcpy(&t, b + n - 8, 8);
        if (h != tag || t != ~tag)
            return 0;
        if (filled && n > 16) {
            unsigned char c = blk_byte(tag);
            if (b[8] != c || b[n - 9] != c || b[8 + (n - 16) / 2] != c)
                return 0;
        }
        return 1;
    }
    unsigned char c = blk_byte(tag);
    for (size_t i = 0; i < n; i++)
        if (b[i] != c)
            return 0;
    return 1;
}

static inline void blk_check(const void *p, size_t n, uint64_t tag, int filled)
{
    if (!blk_intact(p, n, tag, filled))
        bench_fail(BENCH_EXIT_CORRUPT, "corrupted block %p size %zu tag %016" PRIx64, p, n,
                   tag);
}

/* Mix a value into a running checksum (order dependent). */
static inline uint64_t mix64(uint64_t acc, uint64_t v)
{
    acc ^= v + 0x9E3779B97F4A7C15ull + (acc << 6) + (acc >> 2);
    return acc;
}

/* Finalize a 64-bit value (used to make order-independent sums look random). */
static inline uint64_t fmix64(uint64_t v)
{
    uint64_t x = v;
    return splitmix64(&x);
}

#endif /* PREZERO_BENCH_COMMON_H */
