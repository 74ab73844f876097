/*
 * xmalloc: asymmetric allocate-here / free-there workload after the
 * xmalloc-test of Lever & Boreham ("malloc() Performance in a Multithreaded
 * Linux Environment", 2000) as described in mimalloc-bench.
 *
 * `alloc` threads only allocate: they fill batches of blocks of various sizes
 * (skewed toward small, up to `max` bytes) and push each batch onto one
 * shared bounded queue.  `free` threads only free: they pop whichever batch
 * is next, check and free its blocks.  Blocks thus migrate between arbitrary
 * pairs of threads, and the allocating threads never get their own memory
 * back through local frees.
 *
 *   alloc=N     allocating threads                (default 4)
 *   free=N      freeing threads                   (default 4)
 *   batches=N   batches per allocating thread     (default 20000)
 *   batch=B     blocks per batch                  (default 100)
 *   depth=D     batches the shared queue can hold (default 64)
 *   max=S       largest block size                (default 4096)
 *   seed=S      PRNG seed                         (default 1)
 */
#include "common.h"

typedef struct {
    void *p;
    size_t n;
    uint64_t tag;
} entry_t;

typedef struct {
    size_t count;
    entry_t e[];
} batch_t;

static struct {
    pthread_mutex_t m;
    pthread_cond_t not_empty, not_full;
    batch_t **buf;
    size_t cap, head, count;
    uint64_t producers_left;
} Q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
       NULL, 0, 0, 0, 0};

static uint64_t g_batches, g_batch, g_max, g_seed;

typedef struct {
    uint64_t index;
    uint64_t sum; /* additive, so independent of which thread handled what */
    uint64_t blocks;
} worker_t;

static size_t draw_size(rng_t *r)
{
    uint64_t c = rng_below(r, 100);
    size_t n;
    if (c < 50)
        n = (size_t)rng_range(r, 8, 64);
    else if (c < 80)
        n = (size_t)rng_range(r, 65, 512);
    else if (c < 95)
        n = (size_t)rng_range(r, 513, 2048);
    else
        n = (size_t)rng_range(r, 2049, 8192);
    return n < g_max ? n : (size_t)g_max;
}

static void *allocator_thread(void *arg)
{
    worker_t *w = arg;
    rng_t r;
    rng_seed(&r, g_seed, w->index);
    uint64_t sum = 0;
    for (uint64_t k = 0; k < g_batches; k++) {
        batch_t *b = bench_malloc(sizeof *b + g_batch * sizeof(entry_t));
        b->count = (size_t)g_batch;
        for (size_t j = 0; j < b->count; j++) {
            size_t n = draw_size(&r);
            uint64_t t = rng_next(&r);
            void *p = bench_malloc(n);
            blk_fill(p, n, t);
            b->e[j].p = p;
            b->e[j].n = n;
            b->e[j].tag = t;
            sum += fmix64(t ^ n);
        }
        pthread_mutex_lock(&Q.m);
        while (Q.count == Q.cap)
            pthread_cond_wait(&Q.not_full, &Q.m);
        Q.buf[(Q.head + Q.count) % Q.cap] = b;
        Q.count++;
        pthread_cond_signal(&Q.not_empty);
        pthread_mutex_unlock(&Q.m);
    }
    w->sum = sum;
    w->blocks = g_batches * g_batch;
    pthread_mutex_lock(&Q.m);
    if (--Q.producers_left == 0)
        pthread_cond_broadcast(&Q.not_empty);
    pthread_mutex_unlock(&Q.m);
    return NULL;
}

static void *freer_thread(void *arg)
{
    worker_t *w = arg;
    uint64_t sum = 0, blocks = 0;
    for (;;) {
        pthread_mutex_lock(&Q.m);
        while (Q.count == 0 && Q.producers_left > 0)
            pthread_cond_wait(&Q.not_empty, &Q.m);
        if (Q.count == 0) {
            pthread_mutex_unlock(&Q.m);
            break;
        }
        batch_t *b = Q.buf[Q.head];
        Q.head = (Q.head + 1) % Q.cap;
        Q.count--;
        pthread_cond_signal(&Q.not_full);
        pthread_mutex_unlock(&Q.m);

        for (size_t j = 0; j < b->count; j++) {
            entry_t *e = &b->e[j];
            blk_check(e->p, e->n, e->tag, 1);
            sum += fmix64(e->tag ^ e->n);
            free(e->p);
        }
        blocks += b->count;
        free(b);
    }
    w->sum = sum;
    w->blocks = blocks;
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"alloc", "free", "batches", "batch",
                                       "depth", "max",  "seed",    NULL};
    arg_validate(argc, argv,
                 "[alloc=N] [free=N] [batches=N] [batch=B] [depth=D] [max=S] [seed=S]", keys);
    uint64_t nalloc = arg_u64_range(argc, argv, "alloc", 4, 1, 1024);
    uint64_t nfree = arg_u64_range(argc, argv, "free", 4, 1, 1024);
    g_batches = arg_u64(argc, argv, "batches", 20000);
    g_batch = arg_u64_range(argc, argv, "batch", 100, 1, 1u << 20);
    uint64_t depth = arg_u64_range(argc, argv, "depth", 64, 1, 1u << 20);
    g_max = arg_u64_range(argc, argv, "max", 4096, 8, 1u << 30);
    g_seed = arg_u64(argc, argv, "seed", 1);

    Q.buf = bench_calloc(depth, sizeof *Q.buf);
    Q.cap = (size_t)depth;
    Q.producers_left = nalloc;

    worker_t *w = bench_calloc(nalloc + nfree, sizeof *w);
    pthread_t *tid = bench_calloc(nalloc + nfree, sizeof *tid);
    for (uint64_t i = 0; i < nfree; i++) {
        w[nalloc + i].index = nalloc + i;
        bench_thread_create(&tid[nalloc + i], freer_thread, &w[nalloc + i]);
    }
    for (uint64_t i = 0; i < nalloc; i++) {
        w[i].index = i;
        bench_thread_create(&tid[i], allocator_thread, &w[i]);
    }
    for (uint64_t i = 0; i < nalloc + nfree; i++)
        bench_thread_join(tid[i]);

    uint64_t asum = 0, fsum = 0, ablocks = 0, fblocks = 0;
    for (uint64_t i = 0; i < nalloc; i++) {
        asum += w[i].sum;
        ablocks += w[i].blocks;
    }
    for (uint64_t i = nalloc; i < nalloc + nfree; i++) {
        fsum += w[i].sum;
        fblocks += w[i].blocks;
    }
    if (asum != fsum || ablocks != fblocks)
        bench_fail(BENCH_EXIT_CORRUPT,
                   "freed %" PRIu64 " of %" PRIu64 " blocks, sums %016" PRIx64 " vs %016" PRIx64,
                   fblocks, ablocks, fsum, asum);
    free(w);
    free(tid);
    free(Q.buf);
    printf("ok %016" PRIx64 "\n", fmix64(asum));
    return 0;
}
