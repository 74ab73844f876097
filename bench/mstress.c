/*
 * mstress: server-like allocation stress, after the description of mstress
 * in mimalloc-bench: power-of-two sizes, objects migrating between threads,
 * some long-lived objects, unequal per-thread work, and all threads
 * destroyed and re-created after every phase with some objects surviving.
 *
 * All threads share one array of `slots` atomic pointers.  An operation
 * picks a slot, atomically swaps in a new block (or NULL) and checks and
 * frees whatever it took out, so a block is usually freed by a different
 * thread than the one that allocated it.  The first 1/8 of the slots is the
 * long-lived region: it is picked only rarely, so its objects survive many
 * phases.  Sizes are powers of two from 32 B to 1 KiB (skewed small), with
 * `large` per-mille of blocks between 4 KiB and 64 KiB.  Thread i of T does
 * iters*2(i+1)/(T+1) operations per phase, or with work=equal `iters` each:
 * then, with 2 threads, the next thread to pick a slot is the other one
 * half the time, and about half the frees are cross-thread.  The "ok" line gives
 * the share of frees done by a thread other than the allocating one
 * (xfree=, per mille; a thread of a later phase counts as another thread),
 * the number of operations (ops=) and the bytes left in the slots at the
 * end (live_kib=, the live heap: about slots * 7/8 * 365 B).
 *
 *   threads=T   threads per phase                (default 4)
 *   phases=P    phases                           (default 10)
 *   iters=N     average operations per thread    (default 250000)
 *   slots=N     shared slots                     (default 20000)
 *   large=M     per-mille of 4..64 KiB blocks    (default 10)
 *   work=W      skewed or equal, as above        (default skewed)
 *   seed=S      PRNG seed                        (default 1)
 */
#include "common.h"

#include <stdatomic.h>

#define HDR 16 /* tag (8) + size (8): size | allocating thread << 32 */
#define MIN_BLOCK 32
#define MAX_BLOCK (64u << 10)

static _Atomic(void *) *g_slot;
static size_t g_slots, g_long;
static uint64_t g_large, g_seed;

typedef struct {
    uint64_t index, iters, phase;
    uint64_t alloc_sum, free_sum;
    uint64_t frees, xfrees; /* frees, and those of another thread's blocks */
} worker_t;

static uint64_t g_threads;

/* Thread id stored in a block: 0 the main thread, else one per worker. */
static uint64_t owner_id(const worker_t *w)
{
    return w == NULL ? 0 : 1 + w->phase * g_threads + w->index;
}

static size_t draw_size(rng_t *r)
{
    if (rng_below(r, 1000) < g_large)
        return (size_t)1 << rng_range(r, 12, 16);
    /* 32..1024, each class half as likely as the previous one */
    unsigned k = 5;
    while (k < 10 && rng_below(r, 2) == 0)
        k++;
    return (size_t)1 << k;
}

static void *new_block(rng_t *r, uint64_t *sum, uint64_t owner)
{
    size_t n = draw_size(r);
    uint64_t tag = rng_next(r);
    uint64_t sz = n, inv = ~tag, szw = sz | owner << 32;
    unsigned char *p = bench_malloc(n);
    memcpy(p, &tag, 8);
    memcpy(p + 8, &szw, 8);
    memset(p + HDR, blk_byte(tag), n - HDR - 8);
    memcpy(p + n - 8, &inv, 8);
    *sum += fmix64(tag ^ sz);
    return p;
}

/* Check and free a block; returns the id of the thread that allocated it. */
static uint64_t drop_block(void *vp, uint64_t *sum)
{
    unsigned char *p = vp;
    uint64_t tag, sz, inv;
    memcpy(&tag, p, 8);
    memcpy(&sz, p + 8, 8);
    uint64_t owner = sz >> 32;
    sz &= 0xffffffffu;
    if (sz < MIN_BLOCK || sz > MAX_BLOCK || (sz & (sz - 1)) != 0)
        bench_fail(BENCH_EXIT_CORRUPT, "corrupted block %p: bad size field %" PRIu64, vp, sz);
    memcpy(&inv, p + sz - 8, 8);
    unsigned char c = blk_byte(tag);
    if (inv != ~tag || p[HDR] != c || p[sz - 9] != c || p[HDR + (sz - HDR - 8) / 2] != c)
        bench_fail(BENCH_EXIT_CORRUPT, "corrupted block %p size %" PRIu64, vp, sz);
    *sum += fmix64(tag ^ sz);
    free(p);
    return owner;
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    rng_t r;
    rng_seed(&r, g_seed, 1 + w->phase * 65536 + w->index);
    uint64_t asum = 0, fsum = 0, frees = 0, xfrees = 0, self = owner_id(w);
    for (uint64_t k = 0; k < w->iters; k++) {
        size_t s;
        if (rng_below(&r, 50) == 0)
            s = (size_t)rng_below(&r, g_long);
        else
            s = g_long + (size_t)rng_below(&r, g_slots - g_long);
        void *nb = rng_below(&r, 8) == 0 ? NULL : new_block(&r, &asum, self);
        void *old = atomic_exchange_explicit(&g_slot[s], nb, memory_order_acq_rel);
        if (old != NULL) {
            frees++;
            xfrees += drop_block(old, &fsum) != self;
        }
    }
    w->alloc_sum = asum;
    w->free_sum = fsum;
    w->frees = frees;
    w->xfrees = xfrees;
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"threads", "phases", "iters", "slots",
                                       "large",   "work",   "seed", NULL};
    arg_validate(argc, argv,
                 "[threads=T] [phases=P] [iters=N] [slots=N] [large=PERMILLE] "
                 "[work=skewed|equal] [seed=S]",
                 keys);
    uint64_t threads = arg_u64_range(argc, argv, "threads", 4, 1, 1024);
    uint64_t phases = arg_u64_range(argc, argv, "phases", 10, 1, 1u << 20);
    uint64_t iters = arg_u64(argc, argv, "iters", 250000);
    g_slots = (size_t)arg_u64_range(argc, argv, "slots", 20000, 16, 1u << 26);
    g_large = arg_u64_range(argc, argv, "large", 10, 0, 1000);
    g_seed = arg_u64(argc, argv, "seed", 1);
    g_long = g_slots / 8;
    g_threads = threads;
    const char *work = arg_str(argc, argv, "work", "skewed");
    if (strcmp(work, "skewed") != 0 && strcmp(work, "equal") != 0)
        bench_fail(BENCH_EXIT_USAGE, "work=%s: expected skewed or equal", work);
    int equal = strcmp(work, "equal") == 0;

    g_slot = bench_malloc(g_slots * sizeof *g_slot);
    for (size_t i = 0; i < g_slots; i++)
        atomic_init(&g_slot[i], NULL);

    uint64_t asum = 0, fsum = 0, frees = 0, xfrees = 0, ops = 0;
    /* The main thread creates the initial long-lived objects. */
    rng_t r;
    rng_seed(&r, g_seed, 0);
    for (size_t i = 0; i < g_long; i++)
        atomic_store_explicit(&g_slot[i], new_block(&r, &asum, owner_id(NULL)),
                              memory_order_relaxed);

    worker_t *w = bench_calloc(threads, sizeof *w);
    pthread_t *tid = bench_calloc(threads, sizeof *tid);
    for (uint64_t ph = 0; ph < phases; ph++) {
        for (uint64_t i = 0; i < threads; i++) {
            w[i].index = i;
            w[i].phase = ph;
            w[i].iters = equal ? iters : iters * 2 * (i + 1) / (threads + 1);
            ops += w[i].iters;
            bench_thread_create(&tid[i], worker, &w[i]);
        }
        for (uint64_t i = 0; i < threads; i++) {
            bench_thread_join(tid[i]);
            asum += w[i].alloc_sum;
            fsum += w[i].free_sum;
            frees += w[i].frees;
            xfrees += w[i].xfrees;
        }
    }
    uint64_t live = 0; /* bytes in the slots at the end */
    for (size_t i = 0; i < g_slots; i++) {
        void *p = atomic_load_explicit(&g_slot[i], memory_order_relaxed);
        if (p != NULL) {
            uint64_t szw;
            memcpy(&szw, (unsigned char *)p + 8, 8);
            live += szw & 0xffffffffu;
            drop_block(p, &fsum);
        }
    }
    if (asum != fsum)
        bench_fail(BENCH_EXIT_CORRUPT, "alloc/free sums differ: %016" PRIx64 " vs %016" PRIx64,
                   asum, fsum);
    free(w);
    free(tid);
    free((void *)g_slot);
    printf("ok %016" PRIx64 " ops=%" PRIu64 " xfree=%" PRIu64 " live_kib=%" PRIu64 "\n",
           fmix64(asum), ops, frees ? xfrees * 1000 / frees : 0, live >> 10);
    return 0;
}
