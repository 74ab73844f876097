/*
 * cache-thrash / cache-scratch: allocator-induced false sharing, after the
 * benchmarks of the same names in the Hoard paper (Berger et al., ASPLOS
 * 2000).  Built twice from this file: bench-cache-thrash (default) and
 * bench-cache-scratch (-DBENCH_CACHE_SCRATCH=1).
 *
 * cache-thrash (active false sharing): each thread repeatedly allocates a
 * small object, writes every byte of it `reps` times, checks and frees it.
 * If the allocator hands objects on the same cache line to different
 * threads, the writes ping-pong the line between cores.
 *
 * cache-scratch (passive false sharing): the main thread allocates one small
 * object per thread, back to back (so they likely share cache lines), and
 * gives one to each thread.  The thread frees it and then runs the same loop
 * as cache-thrash.  An allocator that puts the freed object in the freeing
 * thread's cache will hand it back on the next malloc, and the threads then
 * write to a shared line.
 *
 *   threads=T   worker threads                      (default 2)
 *   iters=N     alloc/write/free cycles per thread  (default 2000)
 *   reps=N      writes of each byte per cycle       (default 20000)
 *   size=S      object size in bytes                (default 8)
 */
#include "common.h"

#ifndef BENCH_CACHE_SCRATCH
#define BENCH_CACHE_SCRATCH 0
#endif

typedef struct {
    void *initial; /* scratch: object from the main thread, freed first */
    uint64_t iters, reps, size;
    uint64_t sum;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    size_t n = (size_t)w->size;
    uint64_t sum = 0;
    if (w->initial != NULL) {
        blk_check(w->initial, n, 0x1234567890ABCDEFull, 1);
        free(w->initial);
    }
    for (uint64_t it = 0; it < w->iters; it++) {
        unsigned char *p = bench_malloc(n);
        memset(p, 0, n);
        volatile unsigned char *v = p;
        for (uint64_t r = 0; r < w->reps; r++)
            for (size_t k = 0; k < n; k++)
                v[k] = (unsigned char)(v[k] + 1u);
        unsigned char expect = (unsigned char)w->reps;
        for (size_t k = 0; k < n; k++) {
            if (p[k] != expect)
                bench_fail(BENCH_EXIT_CORRUPT, "object %p byte %zu is %u, expected %u",
                           (void *)p, k, p[k], expect);
            sum += p[k];
        }
        free(p);
    }
    w->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"threads", "iters", "reps", "size", NULL};
    arg_validate(argc, argv, "[threads=T] [iters=N] [reps=N] [size=S]", keys);
    uint64_t threads = arg_u64_range(argc, argv, "threads", 2, 1, 1024);
    uint64_t iters = arg_u64(argc, argv, "iters", 2000);
    uint64_t reps = arg_u64(argc, argv, "reps", 20000);
    uint64_t size = arg_u64_range(argc, argv, "size", 8, 1, 1u << 20);

    worker_t *w = bench_calloc(threads, sizeof *w);
    pthread_t *tid = bench_calloc(threads, sizeof *tid);
    for (uint64_t i = 0; i < threads; i++) {
        w[i].iters = iters;
        w[i].reps = reps;
        w[i].size = size;
        if (BENCH_CACHE_SCRATCH) {
            w[i].initial = bench_malloc((size_t)size);
            blk_fill(w[i].initial, (size_t)size, 0x1234567890ABCDEFull);
        }
    }
    for (uint64_t i = 0; i < threads; i++)
        bench_thread_create(&tid[i], worker, &w[i]);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < threads; i++) {
        bench_thread_join(tid[i]);
        sum += w[i].sum;
    }
    free(w);
    free(tid);
    printf("ok %016" PRIx64 "\n", fmix64(sum));
    return 0;
}
