/*
 * realloc-growth: string-builder style growth by realloc.
 *
 * Phase 1: `nbuf` buffers start at 16 bytes and grow, round robin, by a
 * random step of minstep..maxstep bytes per realloc until they reach `max`
 * bytes (the appended bytes are written with a position-dependent pattern),
 * so the allocator sees long sequences of small in-place or moving growths
 * with neighbours competing for the space behind each buffer.
 *
 * Phase 2: `nbig` buffers grow, round robin, from 16 bytes to `bigmax` in
 * steps of about `bigstep` (new pages are written once), exercising realloc
 * of huge blocks (mremap or copy).
 *
 * After every realloc the old contents are spot-checked; every buffer is
 * fully checked before it is freed.
 *
 *   nbuf=N      small buffers                   (default 64)
 *   max=S       final size of small buffers     (default 1M)
 *   minstep=S   smallest append                 (default 8)
 *   maxstep=S   largest append                  (default 128)
 *   nbig=N      big buffers                     (default 2)
 *   bigmax=S    final size of big buffers       (default 64M)
 *   bigstep=S   average big append              (default 1M)
 *   seed=S      PRNG seed                       (default 1)
 */
#include "common.h"

typedef struct {
    unsigned char *p;
    size_t len;
} buf_t;

static unsigned char pat_small(size_t b, size_t i)
{
    return (unsigned char)((i * 131u) ^ (i >> 9) ^ (b * 37u));
}

static unsigned char pat_big(size_t b, size_t i)
{
    return (unsigned char)((i >> 12) * 37u + b * 11u + 1u);
}

static void expect_byte(const buf_t *bf, size_t b, size_t i, unsigned char want)
{
    if (bf->p[i] != want)
        bench_fail(BENCH_EXIT_CORRUPT, "buffer %zu (%p, len %zu): byte %zu is %u, expected %u",
                   b, (void *)bf->p, bf->len, i, bf->p[i], want);
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"nbuf", "max",     "minstep", "maxstep",
                                       "nbig", "bigmax",  "bigstep", "seed", NULL};
    arg_validate(argc, argv,
                 "[nbuf=N] [max=S] [minstep=S] [maxstep=S] [nbig=N] [bigmax=S] [bigstep=S] "
                 "[seed=S]",
                 keys);
    size_t nbuf = (size_t)arg_u64_range(argc, argv, "nbuf", 64, 0, 1u << 20);
    size_t max = (size_t)arg_u64_range(argc, argv, "max", 1u << 20, 16, 1ull << 36);
    size_t minstep = (size_t)arg_u64_range(argc, argv, "minstep", 8, 1, 1u << 30);
    size_t maxstep = (size_t)arg_u64_range(argc, argv, "maxstep", 128, minstep, 1u << 30);
    size_t nbig = (size_t)arg_u64_range(argc, argv, "nbig", 2, 0, 1024);
    size_t bigmax = (size_t)arg_u64_range(argc, argv, "bigmax", 64u << 20, 16, 1ull << 36);
    size_t bigstep = (size_t)arg_u64_range(argc, argv, "bigstep", 1u << 20, 2, 1ull << 34);
    uint64_t seed = arg_u64(argc, argv, "seed", 1);

    rng_t r;
    rng_seed(&r, seed, 0);
    uint64_t sum = 0, reallocs = 0;

    /* ---- phase 1: many small-step builders ---- */
    buf_t *bf = bench_calloc(nbuf ? nbuf : 1, sizeof *bf);
    for (size_t b = 0; b < nbuf; b++) {
        bf[b].len = 16;
        bf[b].p = bench_malloc(16);
        for (size_t i = 0; i < 16; i++)
            bf[b].p[i] = pat_small(b, i);
    }
    size_t active = nbuf;
    while (active > 0) {
        active = 0;
        for (size_t b = 0; b < nbuf; b++) {
            buf_t *x = &bf[b];
            if (x->len >= max)
                continue;
            active++;
            size_t old = x->len;
            size_t nl = old + (size_t)rng_range(&r, minstep, maxstep);
            if (nl > max)
                nl = max;
            x->p = bench_realloc(x->p, nl);
            x->len = nl;
            reallocs++;
            expect_byte(x, b, 0, pat_small(b, 0));
            expect_byte(x, b, old - 1, pat_small(b, old - 1));
            size_t probe = (size_t)rng_below(&r, old);
            expect_byte(x, b, probe, pat_small(b, probe));
            for (size_t i = old; i < nl; i++)
                x->p[i] = pat_small(b, i);
        }
    }
    for (size_t b = 0; b < nbuf; b++) {
        for (size_t i = 0; i < bf[b].len; i++)
            expect_byte(&bf[b], b, i, pat_small(b, i));
        sum = mix64(sum, bf[b].len);
        free(bf[b].p);
    }
    free(bf);

    /* ---- phase 2: a few huge builders ---- */
    buf_t *bg = bench_calloc(nbig ? nbig : 1, sizeof *bg);
    for (size_t b = 0; b < nbig; b++) {
        bg[b].len = 16;
        bg[b].p = bench_malloc(16);
        memset(bg[b].p, pat_big(b, 0), 16);
    }
    size_t lo = bigstep / 2, hi = bigstep + bigstep / 2;
    active = nbig;
    while (active > 0) {
        active = 0;
        for (size_t b = 0; b < nbig; b++) {
            buf_t *x = &bg[b];
            if (x->len >= bigmax)
                continue;
            active++;
            size_t old = x->len;
            size_t nl = old + (size_t)rng_range(&r, lo, hi);
            if (nl > bigmax)
                nl = bigmax;
            x->p = bench_realloc(x->p, nl);
            x->len = nl;
            reallocs++;
            expect_byte(x, b, 0, pat_big(b, 0));
            expect_byte(x, b, old - 1, pat_big(b, old - 1));
            size_t probe = (size_t)rng_below(&r, old);
            expect_byte(x, b, probe, pat_big(b, probe));
            /* write the new bytes page by page */
            size_t i = old;
            while (i < nl) {
                size_t end = ((i >> 12) + 1) << 12;
                if (end > nl)
                    end = nl;
                memset(x->p + i, pat_big(b, i), end - i);
                i = end;
            }
        }
    }
    for (size_t b = 0; b < nbig; b++) {
        buf_t *x = &bg[b];
        for (size_t i = 0; i < x->len; i += 4096) {
            size_t last = i + 4095 < x->len ? i + 4095 : x->len - 1;
            expect_byte(x, b, i, pat_big(b, i));
            expect_byte(x, b, last, pat_big(b, last));
        }
        sum = mix64(sum, x->len);
        free(x->p);
    }
    free(bg);

    sum = mix64(sum, reallocs);
    printf("ok %016" PRIx64 "\n", sum);
    return 0;
}
