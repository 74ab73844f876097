/*
 * first-touch: cost of getting fresh zeroed memory and touching it.
 *
 * Each round does calloc(1, size) and then, timed together with the calloc:
 *   mode=touch   writes one byte in every 4 KiB page (and the last byte);
 *   mode=full    memsets the whole block except the last 64 bytes;
 * then (untimed) verifies that the written bytes read back and that unwritten
 * bytes are zero, and frees the block (timed separately).  With idle=MS the
 * program sleeps between rounds, giving an allocator's background threads
 * time to prepare (e.g. pre-zero) memory.
 *
 *   mode=memset  is the reference: one block is allocated and pre-faulted
 *                once, and each round times a memset of all of it (warm
 *                memory).  With fill=pattern (default) each round writes a
 *                new non-zero byte, the reference for mode=full; with
 *                fill=zero the block is first dirtied (untimed) and the
 *                timed memset writes zeros, the reference for what calloc
 *                has to do when it reuses dirty memory (some CPUs store
 *                zeros markedly faster than other values).
 *
 * Output: ok <checksum> ns_per_round=<median> free_ns=<median> min_ns=<min>
 * where ns_per_round is the median over rounds of the timed part.
 *
 *   size=S      bytes per round (64K .. 1G typical)   (default 16M)
 *   rounds=N    rounds                                (default 50)
 *   mode=M      touch | full | memset                 (default touch)
 *   idle=MS     sleep between rounds, milliseconds    (default 0)
 *   fill=F      pattern | zero (mode=memset only)     (default pattern)
 */
#include "common.h"

#define PAGE 4096u

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t median(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void bad(const char *what, uint64_t round, size_t off, unsigned got, unsigned want)
{
    bench_fail(BENCH_EXIT_CORRUPT, "round %" PRIu64 ": %s byte %zu is %u, expected %u", round,
               what, off, got, want);
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"size", "rounds", "mode", "idle", "fill", NULL};
    arg_validate(argc, argv,
                 "[size=S] [rounds=N] [mode=touch|full|memset] [idle=MS] [fill=pattern|zero]",
                 keys);
    size_t size = (size_t)arg_u64_range(argc, argv, "size", 16u << 20, 256, 1ull << 40);
    uint64_t rounds = arg_u64_range(argc, argv, "rounds", 50, 1, 10000000);
    uint64_t idle = arg_u64_range(argc, argv, "idle", 0, 0, 3600000);
    const char *mode_s = arg_str(argc, argv, "mode", "touch");
    enum { TOUCH, FULL, MEMSET } mode;
    if (strcmp(mode_s, "touch") == 0)
        mode = TOUCH;
    else if (strcmp(mode_s, "full") == 0)
        mode = FULL;
    else if (strcmp(mode_s, "memset") == 0)
        mode = MEMSET;
    else
        bench_fail(BENCH_EXIT_USAGE, "mode must be touch, full or memset, not '%s'", mode_s);
    const char *fill_s = arg_str(argc, argv, "fill", "pattern");
    int zero_fill = 0;
    if (strcmp(fill_s, "zero") == 0)
        zero_fill = 1;
    else if (strcmp(fill_s, "pattern") != 0)
        bench_fail(BENCH_EXIT_USAGE, "fill must be pattern or zero, not '%s'", fill_s);

    uint64_t *t_main = bench_calloc(rounds, sizeof *t_main);
    uint64_t *t_free = bench_calloc(rounds, sizeof *t_free);
    uint64_t sum = 0;
    const size_t keep = 64; /* tail left unwritten in full mode */

    unsigned char *ref = NULL;
    if (mode == MEMSET) {
        ref = bench_malloc(size);
        memset(ref, 0, size);
    }

    for (uint64_t rd = 0; rd < rounds; rd++) {
        if (rd > 0 && idle > 0)
            bench_sleep_ms(idle);
        unsigned char v = (unsigned char)(rd % 251u + 1u);
        if (mode == MEMSET && zero_fill) {
            memset(ref, v, size); /* dirty it, untimed */
            __asm__ volatile("" ::: "memory");
            v = 0;
        }
        uint64_t t0 = bench_now_ns();
        if (mode == MEMSET) {
            memset(ref, v, size);
            __asm__ volatile("" ::: "memory");
            uint64_t t1 = bench_now_ns();
            t_main[rd] = t1 - t0;
            for (size_t off = 0; off < size; off += PAGE) {
                if (ref[off] != v)
                    bad("memset", rd, off, ref[off], v);
                sum += ref[off];
            }
            if (ref[size - 1] != v)
                bad("memset", rd, size - 1, ref[size - 1], v);
            continue;
        }

        unsigned char *p = bench_calloc(1, size);
        if (mode == TOUCH) {
            for (size_t off = 0; off < size; off += PAGE)
                p[off] = v;
            p[size - 1] = v;
        } else {
            memset(p, v, size - keep);
        }
        __asm__ volatile("" ::: "memory");
        uint64_t t1 = bench_now_ns();
        t_main[rd] = t1 - t0;

        /* verify: written bytes read back, unwritten bytes are zero */
        if (mode == TOUCH) {
            for (size_t off = 0; off < size; off += PAGE) {
                if (p[off] != v)
                    bad("written", rd, off, p[off], v);
                size_t z = off + PAGE / 2;
                if (z < size - 1 && p[z] != 0)
                    bad("calloc'd", rd, z, p[z], 0);
                if (off + 1 < size - 1 && p[off + 1] != 0)
                    bad("calloc'd", rd, off + 1, p[off + 1], 0);
                sum += p[off];
            }
            if (p[size - 1] != v)
                bad("written", rd, size - 1, p[size - 1], v);
        } else {
            for (size_t off = 0; off < size - keep; off += PAGE) {
                if (p[off] != v)
                    bad("written", rd, off, p[off], v);
                sum += p[off];
            }
            for (size_t off = size - keep; off < size; off++)
                if (p[off] != 0)
                    bad("calloc'd", rd, off, p[off], 0);
        }
        uint64_t t2 = bench_now_ns();
        free(p);
        t_free[rd] = bench_now_ns() - t2;
    }
    free(ref);

    uint64_t tmin = t_main[0];
    for (uint64_t i = 1; i < rounds; i++)
        if (t_main[i] < tmin)
            tmin = t_main[i];
    uint64_t med = median(t_main, (size_t)rounds);
    uint64_t fmed = median(t_free, (size_t)rounds);
    printf("ok %016" PRIx64 " ns_per_round=%" PRIu64 " free_ns=%" PRIu64 " min_ns=%" PRIu64 "\n",
           fmix64(sum ^ size), med, fmed, tmin);
    free(t_main);
    free(t_free);
    return 0;
}
