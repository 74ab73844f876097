/*
 * churn: single-threaded churn of mixed small sizes.
 *
 * Models programs like cfrac (big-number factoring) and espresso (logic
 * minimisation): one thread, very many short- and medium-lived small objects
 * (8..512 bytes, skewed toward the small end), a working set of a few
 * thousand live objects, frees in an order unrelated to allocation order.
 *
 * Each operation picks a random slot of the working set, frees what is there
 * (after checking its pattern) and, most of the time, puts a freshly
 * allocated and fully written block in its place.  A fraction of operations
 * also allocate a temporary that is freed immediately.
 *
 *   ops=N     number of operations            (default 10M)
 *   live=N    working-set slots               (default 4096)
 *   temp=P    percent of ops with a temporary (default 25)
 *   seed=S    PRNG seed                       (default 1)
 */
#include "common.h"

static size_t draw_size(rng_t *r)
{
    uint64_t c = rng_below(r, 100);
    if (c < 60)
        return (size_t)rng_range(r, 8, 64);
    if (c < 90)
        return (size_t)rng_range(r, 65, 256);
    return (size_t)rng_range(r, 257, 512);
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"ops", "live", "temp", "seed", NULL};
    arg_validate(argc, argv, "[ops=N] [live=N] [temp=PERCENT] [seed=S]", keys);
    uint64_t ops = arg_u64(argc, argv, "ops", 10000000);
    size_t live = (size_t)arg_u64_range(argc, argv, "live", 4096, 1, 1u << 26);
    uint64_t temp = arg_u64_range(argc, argv, "temp", 25, 0, 100);
    uint64_t seed = arg_u64(argc, argv, "seed", 1);

    rng_t r;
    rng_seed(&r, seed, 0);

    void **ptr = bench_calloc(live, sizeof *ptr);
    size_t *size = bench_calloc(live, sizeof *size);
    uint64_t *tag = bench_calloc(live, sizeof *tag);
    uint64_t sum = 0;

    for (uint64_t op = 0; op < ops; op++) {
        size_t i = (size_t)rng_below(&r, live);
        if (ptr[i] != NULL) {
            blk_check(ptr[i], size[i], tag[i], 1);
            sum = mix64(sum, tag[i] ^ size[i]);
            free(ptr[i]);
            ptr[i] = NULL;
        }
        if (rng_below(&r, 8) != 0) {
            size_t n = draw_size(&r);
            uint64_t t = rng_next(&r);
            void *p = bench_malloc(n);
            blk_fill(p, n, t);
            ptr[i] = p;
            size[i] = n;
            tag[i] = t;
        }
        if (rng_below(&r, 100) < temp) {
            size_t n = draw_size(&r);
            uint64_t t = rng_next(&r);
            void *p = bench_malloc(n);
            blk_fill(p, n, t);
            blk_check(p, n, t, 1);
            sum = mix64(sum, n);
            free(p);
        }
    }
    for (size_t i = 0; i < live; i++) {
        if (ptr[i] != NULL) {
            blk_check(ptr[i], size[i], tag[i], 1);
            sum = mix64(sum, tag[i] ^ size[i]);
            free(ptr[i]);
        }
    }
    free(ptr);
    free(size);
    free(tag);
    printf("ok %016" PRIx64 "\n", sum);
    return 0;
}
