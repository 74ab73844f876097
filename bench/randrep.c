/*
 * randrep: random replacement of small blocks in a heap of real size.
 *
 * The other small-object workloads keep a few hundred KiB live, which fits
 * in the L2 cache; a real server's heap does not.  Here each thread owns an
 * array of slots and repeats
 *
 *     x = xorshift();  i = slot index from x;  n = 8 + x % 1017;
 *     free(slot[i]);  slot[i] = malloc(n);  write the new block's first word
 *
 * so frees and mallocs land at random places in a heap of `ws` bytes (the
 * mean block is 516 B: ws / 516 slots in all, split evenly between the
 * threads).  Index and size come from different bits of one draw, so a
 * slot's size changes at every replacement and free + malloc of the same
 * size class does not simply hand the same block back.  Nothing else is
 * written: the cost is the allocator's own memory traffic (free lists,
 * headers, bitmaps) plus one line of each new block, as in Larson's
 * original, which writes a byte or two.
 *
 * Validation: the first 8 bytes of a block hold (slot << 16 | size) ^ key,
 * key per thread; the word is checked before the block is freed, so a block
 * handed out twice (an overwritten start) fails the run.  Blocks are at
 * least 8 bytes, so the word always fits.  Overlaps that miss the first word
 * are not detected (the other programs fill whole blocks; this one must not,
 * or the memset would be the workload).
 *
 *   ws=SIZE     live heap, all threads together   (default 16M)
 *   threads=T   threads, each with its own slots  (default 1)
 *   iters=N     replacements per thread           (default 10000000)
 *   seed=S      PRNG seed                         (default 1)
 *
 * Prints "ok <checksum> ops=N slots=N": ops = replacements in all (each one
 * free + one malloc), for throughput.
 */
#include "common.h"

#define MEAN_BLOCK 516u /* 8 + 1016 / 2 */
#define SIZE_SPAN 1017u  /* sizes 8 .. 1024 */

typedef struct {
    void **slot;
    size_t slots;
    uint64_t iters, key, sum;
    rng_t rng;
} worker_t;

static inline void stamp(void *p, size_t i, size_t n, uint64_t key)
{
    uint64_t w = (((uint64_t)i << 16) | n) ^ key;
    memcpy(p, &w, 8);
}

/* Check the block in slot i; returns its size. */
static inline size_t check(const void *p, size_t i, uint64_t key)
{
    uint64_t w;
    memcpy(&w, p, 8);
    w ^= key;
    size_t n = (size_t)(w & 0xffff);
    if ((w >> 16) != i || n < 8 || n > 8 + SIZE_SPAN - 1)
        bench_fail(BENCH_EXIT_CORRUPT, "corrupted block %p in slot %zu", p, i);
    return n;
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    rng_t r = w->rng;
    uint64_t sum = 0;
    for (size_t i = 0; i < w->slots; i++) {
        size_t n = 8 + (size_t)(rng_next(&r) % SIZE_SPAN);
        w->slot[i] = bench_malloc(n);
        stamp(w->slot[i], i, n, w->key);
    }
    for (uint64_t k = 0; k < w->iters; k++) {
        uint64_t x = rng_next(&r);
        size_t i = (size_t)(((x >> 32) * w->slots) >> 32);
        size_t n = 8 + (size_t)((x & 0xffffffffu) % SIZE_SPAN);
        sum += check(w->slot[i], i, w->key);
        free(w->slot[i]);
        void *p = malloc(n);
        if (p == NULL)
            bench_fail(BENCH_EXIT_NOMEM, "malloc(%zu) failed", n);
        stamp(p, i, n, w->key);
        w->slot[i] = p;
    }
    for (size_t i = 0; i < w->slots; i++) {
        sum = mix64(sum, check(w->slot[i], i, w->key));
        free(w->slot[i]);
    }
    w->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"ws", "threads", "iters", "seed", NULL};
    arg_validate(argc, argv, "[ws=SIZE] [threads=T] [iters=N] [seed=S]", keys);
    uint64_t ws = arg_u64_range(argc, argv, "ws", 16u << 20, 64u << 10, 1ull << 36);
    uint64_t threads = arg_u64_range(argc, argv, "threads", 1, 1, 256);
    uint64_t iters = arg_u64(argc, argv, "iters", 10000000);
    uint64_t seed = arg_u64(argc, argv, "seed", 1);

    size_t slots = (size_t)(ws / MEAN_BLOCK / threads);
    if (slots < 16 || slots >= (1ull << 32))
        bench_fail(BENCH_EXIT_USAGE, "ws / threads gives %zu slots per thread", slots);

    worker_t *w = bench_calloc(threads, sizeof *w);
    pthread_t *tid = bench_calloc(threads, sizeof *tid);
    for (uint64_t t = 0; t < threads; t++) {
        w[t].slots = slots;
        w[t].iters = iters;
        w[t].slot = bench_calloc(slots, sizeof *w[t].slot);
        rng_seed(&w[t].rng, seed, t);
        w[t].key = fmix64(seed ^ (t << 40)) & ~0xffffull;
    }
    for (uint64_t t = 0; t < threads; t++)
        bench_thread_create(&tid[t], worker, &w[t]);
    uint64_t sum = 0;
    for (uint64_t t = 0; t < threads; t++) {
        bench_thread_join(tid[t]);
        sum += fmix64(w[t].sum); /* order independent */
        free(w[t].slot);
    }
    free(w);
    free(tid);
    printf("ok %016" PRIx64 " ops=%" PRIu64 " slots=%zu\n", sum, threads * iters,
           slots * (size_t)threads);
    return 0;
}
