/*
 * recycle-sparse: calloc a large block, write a small fraction of its
 * pages, free it, repeat (the mmap issue's measure of re-zeroing cost).
 *
 * Every round callocs `size` bytes, checks that the pages it is about to
 * write read zero (a recycled block must come back zero even though only a
 * few of its pages were dirtied), writes one word in `permille` of the
 * 4 KiB pages (spread evenly, a different set each round), and frees the
 * block. An allocator that keeps freed memory must re-zero it; one that
 * knew which pages were written could re-zero only those.
 *
 *   size=S       block size                       (default 1G)
 *   rounds=N     rounds                           (default 40)
 *   permille=N   pages written per thousand       (default 10: 1%)
 *   idle_ms=MS   pause between rounds             (default 0)
 */
#include "common.h"

int main(int argc, char **argv)
{
    static const char *const keys[] = {"size", "rounds", "permille", "idle_ms", NULL};
    arg_validate(argc, argv, "[size=S] [rounds=N] [permille=N] [idle_ms=MS]", keys);
    size_t size = (size_t)arg_u64_range(argc, argv, "size", 1ull << 30, 4096, 1ull << 40);
    uint64_t rounds = arg_u64(argc, argv, "rounds", 40);
    uint64_t permille = arg_u64_range(argc, argv, "permille", 10, 1, 1000);
    uint64_t idle_ms = arg_u64_range(argc, argv, "idle_ms", 0, 0, 60000);
    size_t pages = size / 4096, step = (size_t)(1000 / permille);
    uint64_t sum = 0;
    for (uint64_t r = 0; r < rounds; r++) {
        unsigned char *p = bench_calloc(1, size);
        size_t first = (size_t)(r % step);
        for (size_t pg = first; pg < pages; pg += step) {
            uint64_t *w = (uint64_t *)(p + pg * 4096 + 8 * (r % 64));
            if (*w != 0)
                bench_fail(BENCH_EXIT_CORRUPT, "round %" PRIu64 ": page %zu not zero", r, pg);
            *w = r * 0x9E3779B97F4A7C15ull + pg;
            sum += *w;
        }
        free(p);
        if (idle_ms)
            bench_sleep_ms(idle_ms);
    }
    printf("ok %016" PRIx64 "\n", sum);
    return 0;
}
