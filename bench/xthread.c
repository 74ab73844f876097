/*
 * xthread: producer/consumer cross-thread free.
 *
 * `threads` producer threads allocate small blocks (16..256 bytes by
 * default), write them, and hand them in batches through a bounded queue to
 * a dedicated consumer thread, which checks and frees every block and the
 * batch descriptor.  Every free is therefore a remote free: the block was
 * allocated by another thread.  Queues are bounded, so the amount of memory
 * in flight stays small and the producer must wait for the consumer.
 *
 *   threads=T   producer/consumer pairs (2*T threads)    (default 2)
 *   items=N     blocks allocated by each producer         (default 2M)
 *   batch=B     blocks per hand-over                      (default 64)
 *   depth=D     batches a queue can hold                  (default 16)
 *   min=S max=S block size range                          (default 16..256)
 *   seed=S      PRNG seed                                 (default 1)
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

typedef struct {
    pthread_mutex_t m;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    batch_t **buf;
    size_t cap, head, count;
    int closed;
} queue_t;

typedef struct {
    queue_t q;
    uint64_t items, batch, min, max, seed, index;
    uint64_t produced_sum; /* written by the producer */
    uint64_t consumed_sum; /* written by the consumer */
    uint64_t consumed_n;
} pair_t;

static void queue_init(queue_t *q, size_t cap)
{
    pthread_mutex_init(&q->m, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
    q->buf = bench_calloc(cap, sizeof *q->buf);
    q->cap = cap;
    q->head = q->count = 0;
    q->closed = 0;
}

static void queue_destroy(queue_t *q)
{
    pthread_mutex_destroy(&q->m);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    free(q->buf);
}

static void queue_push(queue_t *q, batch_t *b)
{
    pthread_mutex_lock(&q->m);
    while (q->count == q->cap)
        pthread_cond_wait(&q->not_full, &q->m);
    q->buf[(q->head + q->count) % q->cap] = b;
    q->count++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->m);
}

static void queue_close(queue_t *q)
{
    pthread_mutex_lock(&q->m);
    q->closed = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->m);
}

/* Returns NULL once the queue is closed and drained. */
static batch_t *queue_pop(queue_t *q)
{
    pthread_mutex_lock(&q->m);
    while (q->count == 0 && !q->closed)
        pthread_cond_wait(&q->not_empty, &q->m);
    batch_t *b = NULL;
    if (q->count > 0) {
        b = q->buf[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->m);
    return b;
}

static void *producer(void *arg)
{
    pair_t *pr = arg;
    rng_t r;
    rng_seed(&r, pr->seed, pr->index);
    uint64_t sum = 0;
    uint64_t left = pr->items;
    while (left > 0) {
        size_t cnt = (size_t)(left < pr->batch ? left : pr->batch);
        batch_t *b = bench_malloc(sizeof *b + cnt * sizeof(entry_t));
        b->count = cnt;
        for (size_t j = 0; j < cnt; j++) {
            size_t n = (size_t)rng_range(&r, pr->min, pr->max);
            uint64_t t = rng_next(&r);
            void *p = bench_malloc(n);
            blk_fill(p, n, t);
            b->e[j].p = p;
            b->e[j].n = n;
            b->e[j].tag = t;
            sum += fmix64(t ^ n);
        }
        queue_push(&pr->q, b);
        left -= cnt;
    }
    pr->produced_sum = sum;
    queue_close(&pr->q);
    return NULL;
}

static void *consumer(void *arg)
{
    pair_t *pr = arg;
    uint64_t sum = 0, n = 0;
    batch_t *b;
    while ((b = queue_pop(&pr->q)) != NULL) {
        for (size_t j = 0; j < b->count; j++) {
            entry_t *e = &b->e[j];
            blk_check(e->p, e->n, e->tag, 1);
            sum += fmix64(e->tag ^ e->n);
            free(e->p);
        }
        n += b->count;
        free(b);
    }
    pr->consumed_sum = sum;
    pr->consumed_n = n;
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"threads", "items", "batch", "depth",
                                       "min",     "max",   "seed",  NULL};
    arg_validate(argc, argv,
                 "[threads=T] [items=N] [batch=B] [depth=D] [min=S] [max=S] [seed=S]", keys);
    uint64_t threads = arg_u64_range(argc, argv, "threads", 2, 1, 1024);
    uint64_t items = arg_u64(argc, argv, "items", 2000000);
    uint64_t batch = arg_u64_range(argc, argv, "batch", 64, 1, 1u << 20);
    uint64_t depth = arg_u64_range(argc, argv, "depth", 16, 1, 1u << 20);
    uint64_t min = arg_u64_range(argc, argv, "min", 16, 1, 1u << 30);
    uint64_t max = arg_u64_range(argc, argv, "max", 256, min, 1u << 30);
    uint64_t seed = arg_u64(argc, argv, "seed", 1);

    pair_t *pairs = bench_calloc(threads, sizeof *pairs);
    pthread_t *tid = bench_calloc(2 * threads, sizeof *tid);
    for (uint64_t i = 0; i < threads; i++) {
        pair_t *pr = &pairs[i];
        queue_init(&pr->q, (size_t)depth);
        pr->items = items;
        pr->batch = batch;
        pr->min = min;
        pr->max = max;
        pr->seed = seed;
        pr->index = i;
    }
    for (uint64_t i = 0; i < threads; i++) {
        bench_thread_create(&tid[2 * i], consumer, &pairs[i]);
        bench_thread_create(&tid[2 * i + 1], producer, &pairs[i]);
    }
    for (uint64_t i = 0; i < 2 * threads; i++)
        bench_thread_join(tid[i]);

    uint64_t sum = 0;
    for (uint64_t i = 0; i < threads; i++) {
        pair_t *pr = &pairs[i];
        if (pr->consumed_n != items || pr->consumed_sum != pr->produced_sum)
            bench_fail(BENCH_EXIT_CORRUPT, "pair %" PRIu64 ": consumed %" PRIu64 " of %" PRIu64
                       " blocks, sums %016" PRIx64 " vs %016" PRIx64, i, pr->consumed_n, items,
                       pr->consumed_sum, pr->produced_sum);
        sum = mix64(sum, pr->consumed_sum);
        queue_destroy(&pr->q);
    }
    free(pairs);
    free(tid);
    printf("ok %016" PRIx64 "\n", sum);
    return 0;
}
