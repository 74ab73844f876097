/*
 * larson: server simulation after Larson & Krishnan (1998).
 *
 * Each of `threads` lineages owns an array of `slots` blocks.  The main
 * thread allocates every initial block, then starts one thread per lineage.
 * A thread repeatedly picks a random slot, checks and frees the block there
 * and replaces it with a new block of random size in [min, max].  After
 * `rounds` replacements the thread starts a successor thread, hands it the
 * array and exits (the successor joins it): thread churn, and blocks are
 * freed by threads that did not allocate them.  Each lineage runs for
 * `generations` threads.  The original benchmark is time-based and reports
 * throughput; this one does a fixed amount of work so the run time is the
 * measurement.
 *
 *   threads=T      concurrent lineages            (default 4)
 *   slots=N        blocks per lineage             (default 1000)
 *   rounds=N       replacements per thread        (default 50000)
 *   generations=G  threads per lineage            (default 20)
 *   min=S max=S    block size range               (default 16..1024)
 *   seed=S         PRNG seed                      (default 1)
 */
#include "common.h"

typedef struct {
    void **blk;
    size_t *size;
    uint64_t *tag;
    size_t slots;
    uint64_t rounds, generations, min, max;
    rng_t rng;
    uint64_t sum;
    uint64_t gen;
    pthread_t prev; /* thread to join (set by the predecessor) */
    /* completion, under m */
    pthread_mutex_t m;
    pthread_cond_t c;
    int done;
    pthread_t last;
} lineage_t;

static void *worker(void *arg)
{
    lineage_t *L = arg;
    if (L->gen > 0)
        bench_thread_join(L->prev);

    rng_t r = L->rng;
    uint64_t sum = L->sum;
    for (uint64_t k = 0; k < L->rounds; k++) {
        size_t i = (size_t)rng_below(&r, L->slots);
        blk_check(L->blk[i], L->size[i], L->tag[i], 1);
        sum = mix64(sum, L->tag[i] ^ L->size[i]);
        free(L->blk[i]);
        size_t n = (size_t)rng_range(&r, L->min, L->max);
        uint64_t t = rng_next(&r);
        void *p = bench_malloc(n);
        blk_fill(p, n, t);
        L->blk[i] = p;
        L->size[i] = n;
        L->tag[i] = t;
    }
    L->rng = r;
    L->sum = sum;
    L->gen++;

    if (L->gen < L->generations) {
        pthread_t next;
        L->prev = pthread_self();
        bench_thread_create(&next, worker, L);
        /* `next` joins us; we must not touch L after this point. */
        return NULL;
    }
    pthread_mutex_lock(&L->m);
    L->last = pthread_self();
    L->done = 1;
    pthread_cond_signal(&L->c);
    pthread_mutex_unlock(&L->m);
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"threads", "slots", "rounds", "generations",
                                       "min",     "max",   "seed",   NULL};
    arg_validate(argc, argv,
                 "[threads=T] [slots=N] [rounds=N] [generations=G] [min=S] [max=S] [seed=S]",
                 keys);
    uint64_t threads = arg_u64_range(argc, argv, "threads", 4, 1, 1024);
    uint64_t slots = arg_u64_range(argc, argv, "slots", 1000, 1, 1u << 24);
    uint64_t rounds = arg_u64(argc, argv, "rounds", 50000);
    uint64_t generations = arg_u64_range(argc, argv, "generations", 20, 1, 1u << 20);
    uint64_t min = arg_u64_range(argc, argv, "min", 16, 1, 1u << 30);
    uint64_t max = arg_u64_range(argc, argv, "max", 1024, min, 1u << 30);
    uint64_t seed = arg_u64(argc, argv, "seed", 1);

    lineage_t *lin = bench_calloc(threads, sizeof *lin);
    for (uint64_t t = 0; t < threads; t++) {
        lineage_t *L = &lin[t];
        L->slots = (size_t)slots;
        L->rounds = rounds;
        L->generations = generations;
        L->min = min;
        L->max = max;
        rng_seed(&L->rng, seed, t);
        L->blk = bench_calloc(slots, sizeof *L->blk);
        L->size = bench_calloc(slots, sizeof *L->size);
        L->tag = bench_calloc(slots, sizeof *L->tag);
        pthread_mutex_init(&L->m, NULL);
        pthread_cond_init(&L->c, NULL);
        /* The main thread allocates all initial blocks. */
        for (size_t i = 0; i < slots; i++) {
            size_t n = (size_t)rng_range(&L->rng, min, max);
            uint64_t tg = rng_next(&L->rng);
            L->blk[i] = bench_malloc(n);
            blk_fill(L->blk[i], n, tg);
            L->size[i] = n;
            L->tag[i] = tg;
        }
    }
    for (uint64_t t = 0; t < threads; t++) {
        pthread_t first;
        bench_thread_create(&first, worker, &lin[t]);
    }
    uint64_t sum = 0;
    for (uint64_t t = 0; t < threads; t++) {
        lineage_t *L = &lin[t];
        pthread_mutex_lock(&L->m);
        while (!L->done)
            pthread_cond_wait(&L->c, &L->m);
        pthread_mutex_unlock(&L->m);
        bench_thread_join(L->last);
        for (size_t i = 0; i < L->slots; i++) {
            blk_check(L->blk[i], L->size[i], L->tag[i], 1);
            L->sum = mix64(L->sum, L->tag[i] ^ L->size[i]);
            free(L->blk[i]);
        }
        sum = mix64(sum, L->sum);
        free(L->blk);
        free(L->size);
        free(L->tag);
        pthread_mutex_destroy(&L->m);
        pthread_cond_destroy(&L->c);
    }
    free(lin);
    printf("ok %016" PRIx64 "\n", sum);
    return 0;
}
