/*
 * fastpath: instructions per malloc and per free of a small size from a
 * warm thread cache, for any allocator (chosen with LD_PRELOAD).
 *
 * Run under callgrind by bench/fastpath.py: the two phases below are
 * separate non-inlined functions, so `--toggle-collect=` counts each alone.
 * Each round mallocs `batch` blocks of `size` bytes, then frees them in
 * the same order: every call is served from the thread's cache (after the
 * first round the blocks are the same ones again), as in a program's hot
 * loop.
 *
 *   size=N    block size (default 32)
 *   batch=N   blocks per round (default 100)
 *   rounds=N  rounds (default 10000)
 */
#include "common.h"

static void *blocks[4096];

__attribute__((noinline)) void fastpath_mallocs(size_t n, size_t size)
{
    for (size_t i = 0; i < n; i++)
        blocks[i] = malloc(size);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void fastpath_frees(size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(blocks[i]);
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"size", "batch", "rounds", NULL};
    arg_validate(argc, argv, "[size=N] [batch=N] [rounds=N]", keys);
    size_t size = (size_t)arg_u64_range(argc, argv, "size", 32, 1, 1u << 16);
    size_t batch = (size_t)arg_u64_range(argc, argv, "batch", 100, 1, 4096);
    uint64_t rounds = arg_u64(argc, argv, "rounds", 10000);
    for (uint64_t r = 0; r < rounds; r++) {
        fastpath_mallocs(batch, size);
        for (size_t i = 0; i < batch; i++)
            if (blocks[i] == NULL)
                bench_fail(BENCH_EXIT_NOMEM, "malloc(%zu) failed", size);
            else
                ((volatile char *)blocks[i])[0] = (char)i;
        fastpath_frees(batch);
    }
    printf("ok calls=%" PRIu64 "\n", rounds * batch);
    return 0;
}
