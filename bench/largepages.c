/*
 * largepages: first-touch and TLB-miss cost of one big malloc'd block.
 *
 * Re-creates the "largepages3" program that Andrea Arcangeli posted with the
 * transparent hugepage patch (2010) to show what huge pages buy: one block
 * of `size` bytes is malloc'd, then five phases are timed, each over the
 * whole block:
 *
 *   memset page fault              first memset: every page faults in
 *   memset tlb miss                second memset: memory resident, TLB cold
 *   memset second tlb miss         third memset: the same again
 *   stride touch tlb miss          one byte written every 4096 bytes
 *   stride touch second tlb miss   the same again
 *
 * (The original calls the stride phases "random access"; they are a linear
 * walk one page apart, so they are named for what they do.)  Each phase is
 * printed in microseconds on its own line, as the original does.  With huge
 * pages the first phase takes far fewer faults and the later phases far
 * fewer TLB misses; with an allocator that hands out already-faulted memory
 * the first phase costs about what the second does.
 *
 * Unlike the original, every phase writes a different byte (fill=pattern,
 * the default) so the program can check, untimed, that each phase reached
 * the memory: between phases a fixed pseudo-random sample of bytes is
 * checked, and at the end one byte per page plus the bytes around it.
 * fill=zero writes zeros everywhere, as the original does.
 *
 * Output: the five phase lines, then
 *   ok <checksum> first_us=N memset2_us=N memset3_us=N stride1_us=N stride2_us=N
 *
 *   size=S      block size                     (default 1G)
 *   fill=F      pattern | zero                 (default pattern)
 *   seed=S      seed of the sampled offsets    (default 1)
 */
#include "common.h"

#define PAGE 4096u
#define SAMPLES 256u
#define NPHASES 5

static const char *const phase_name[NPHASES] = {
    "memset page fault", "memset tlb miss", "memset second tlb miss",
    "stride touch tlb miss", "stride touch second tlb miss",
};

static void bad(const char *when, size_t off, unsigned got, unsigned want)
{
    bench_fail(BENCH_EXIT_CORRUPT, "after %s: byte %zu is %u, expected %u", when, off, got,
               want);
}

/*
 * Check a fixed sample of bytes: a byte at a page boundary must hold `edge`
 * (what the last stride phase wrote, or the memset byte before any stride),
 * any other byte `body`.  Returns the checksum contribution.
 */
static uint64_t check_sample(const unsigned char *p, size_t size, uint64_t seed,
                             unsigned char body, unsigned char edge, const char *when)
{
    rng_t r;
    rng_seed(&r, seed, 1); /* the same offsets after every phase */
    uint64_t acc = 0;
    for (unsigned i = 0; i < SAMPLES + 2; i++) {
        size_t off = i == 0 ? 0 : i == 1 ? size - 1 : (size_t)rng_below(&r, size);
        unsigned char want = off % PAGE == 0 ? edge : body;
        if (p[off] != want)
            bad(when, off, p[off], want);
        acc = mix64(acc, (uint64_t)off ^ ((uint64_t)p[off] << 56));
    }
    return acc;
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"size", "fill", "seed", NULL};
    arg_validate(argc, argv, "[size=S] [fill=pattern|zero] [seed=S]", keys);
    size_t size = (size_t)arg_u64_range(argc, argv, "size", 1ull << 30, 1u << 20, 1ull << 40);
    uint64_t seed = arg_u64(argc, argv, "seed", 1);
    const char *fill_s = arg_str(argc, argv, "fill", "pattern");
    int zero = 0;
    if (strcmp(fill_s, "zero") == 0)
        zero = 1;
    else if (strcmp(fill_s, "pattern") != 0)
        bench_fail(BENCH_EXIT_USAGE, "fill must be pattern or zero, not '%s'", fill_s);

    /* byte written by each phase: three memsets, then two stride walks */
    unsigned char v[NPHASES];
    for (int i = 0; i < NPHASES; i++)
        v[i] = zero ? 0 : (unsigned char)(0x11 * (i + 1));

    unsigned char *p = bench_malloc(size);
    uint64_t us[NPHASES];
    uint64_t sum = 0;

    for (int ph = 0; ph < NPHASES; ph++) {
        uint64_t t0 = bench_now_ns();
        if (ph < 3) {
            memset(p, v[ph], size);
        } else {
            for (size_t off = 0; off < size; off += PAGE)
                p[off] = v[ph];
        }
        __asm__ volatile("" ::: "memory");
        us[ph] = (bench_now_ns() - t0) / 1000u;
        printf("%s %" PRIu64 "\n", phase_name[ph], us[ph]);
        unsigned char body = ph < 3 ? v[ph] : v[2];
        sum = mix64(sum, check_sample(p, size, seed, body, v[ph], phase_name[ph]));
    }

    /* full check, untimed: every page's first byte and its neighbours */
    for (size_t off = 0; off < size; off += PAGE) {
        if (p[off] != v[4])
            bad("the last stride touch", off, p[off], v[4]);
        if (off + 1 < size && p[off + 1] != v[2])
            bad("the last memset", off + 1, p[off + 1], v[2]);
        if (off > 0 && p[off - 1] != v[2])
            bad("the last memset", off - 1, p[off - 1], v[2]);
        sum += p[off];
    }
    if (size % PAGE != 0 && p[size - 1] != v[2])
        bad("the last memset", size - 1, p[size - 1], v[2]);
    free(p);

    printf("ok %016" PRIx64 " first_us=%" PRIu64 " memset2_us=%" PRIu64 " memset3_us=%" PRIu64
           " stride1_us=%" PRIu64 " stride2_us=%" PRIu64 "\n",
           fmix64(sum ^ size), us[0], us[1], us[2], us[3], us[4]);
    return 0;
}
