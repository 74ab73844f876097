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
 * measurement; the "ok" line also gives the number of replacements (ops=),
 * from which the harness derives the throughput.
 *
 * touch=head writes only the block's first 8 bytes (the tag) and checks
 * only those, as the original writes a byte or two of each new block: with
 * the default touch=full the memset of every block is a large part of the
 * time.  Blocks under 8 bytes are filled in full either way.
 *
 *   threads=T      concurrent lineages            (default 4)
 *   slots=N        blocks per lineage             (default 1000)
 *   rounds=N       replacements per thread        (default 50000)
 *   generations=G  threads per lineage            (default 20)
 *   min=S max=S    block size range               (default 16..1024)
 *   touch=full|head write/check every byte, or the first 8  (default full)
 *   seed=S         PRNG seed                      (default 1)
 */
#include "common.h"

typedef struct {
    void **blk;
    size_t *size;
    uint64_t *tag;
    size_t slots;
    uint64_t rounds, generations, min, max;
    int head; /* touch=head */
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

/* touch=head: the tag in the first 8 bytes only (blocks of 8 bytes and more). */
static inline void put(void *p, size_t n, uint64_t tag, int head)
{
    if (head && n >= 8)
        memcpy(p, &tag, 8);
    else
        blk_fill(p, n, tag);
}

static inline void check(const void *p, size_t n, uint64_t tag, int head)
{
    if (head && n >= 8) {
        uint64_t h;
        memcpy(&h, p, 8);
        if (h != tag)
            bench_fail(BENCH_EXIT_CORRUPT, "corrupted block %p size %zu tag %016" PRIx64, p,
                       n, tag);
    } else {
        blk_check(p, n, tag, 1);
    }
}

static void *worker(void *arg)
{
    lineage_t *L = arg;
    if (L->gen > 0)
        bench_thread_join(L->prev);

    rng_t r = L->rng;
    uint64_t sum = L->sum;
    for (uint64_t k = 0; k < L->rounds; k++) {
        size_t i = (size_t)rng_below(&r, L->slots);
        check(L->blk[i], L->size[i], L->tag[i], L->head);
        sum = mix64(sum, L->tag[i] ^ L->size[i]);
        free(L->blk[i]);
        size_t n = (size_t)rng_range(&r, L->min, L->max);
        uint64_t t = rng_next(&r);
        void *p = bench_malloc(n);
        put(p, n, t, L->head);
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
                                       "min",     "max",   "touch",  "seed", NULL};
    arg_validate(argc, argv,
                 "[threads=T] [slots=N] [rounds=N] [generations=G] [min=S] [max=S] "
                 "[touch=full|head] [seed=S]",
                 keys);
    uint64_t threads = arg_u64_range(argc, argv, "threads", 4, 1, 1024);
    uint64_t slots = arg_u64_range(argc, argv, "slots", 1000, 1, 1u << 24);
    uint64_t rounds = arg_u64(argc, argv, "rounds", 50000);
    uint64_t generations = arg_u64_range(argc, argv, "generations", 20, 1, 1u << 20);
    uint64_t min = arg_u64_range(argc, argv, "min", 16, 1, 1u << 30);
    uint64_t max = arg_u64_range(argc, argv, "max", 1024, min, 1u << 30);
    uint64_t seed = arg_u64(argc, argv, "seed", 1);
    const char *touch = arg_str(argc, argv, "touch", "full");
    if (strcmp(touch, "full") != 0 && strcmp(touch, "head") != 0)
        bench_fail(BENCH_EXIT_USAGE, "touch=%s: expected full or head", touch);
    int head = strcmp(touch, "head") == 0;

    lineage_t *lin = bench_calloc(threads, sizeof *lin);
    for (uint64_t t = 0; t < threads; t++) {
        lineage_t *L = &lin[t];
        L->slots = (size_t)slots;
        L->rounds = rounds;
        L->generations = generations;
        L->min = min;
        L->max = max;
        L->head = head;
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
            put(L->blk[i], n, tg, head);
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
            check(L->blk[i], L->size[i], L->tag[i], head);
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
    printf("ok %016" PRIx64 " ops=%" PRIu64 "\n", sum, threads * rounds * generations);
    return 0;
}
