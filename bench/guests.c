/*
 * guests: one "guest" of the guests-in-a-budget benchmark (bench/guests.py).
 *
 * The kernel's free page reporting series (Alexander Duyck, 2019-2020) was
 * measured by how many guests fit in a host's memory: a guest that frees
 * memory after a peak should give it back, so that the host can start more
 * guests.  This program plays one guest (or any program with a burst of
 * memory at start-up followed by a long idle period, e.g. a build step, a
 * JIT warm-up, a VM booting and settling):
 *
 *   1. timed: calloc `peak` bytes, of which peak - ws in `block`-sized
 *      blocks and the working set (ws) interleaved with them: ws - small in
 *      `wsblock`-sized blocks and `small` bytes in small objects of 16 B to
 *      4 KiB; every 4 KiB page is written once (an atomic exchange of the
 *      page's first word: it must read 0, calloc'd memory).  Prints
 *          peak bytes=N us=N gibps=X
 *   2. holds the memory for `hold_ms` (still touching nothing);
 *   3. frees the big blocks: what remains is the working set, ~ws bytes.
 *      Prints  idle rss_kib=N free_us=N
 *      ("idle" is the driver's cue);
 *   4. touches its working set every `period_ms` milliseconds (one write per
 *      4 KiB page of each ws block, one per small object, checking the
 *      blocks' tags) until SIGTERM or SIGINT.  The handler only sets a flag:
 *      the program then leaves the loop, frees its working set, prints
 *          exit rss_kib=N rounds=N
 *      and returns from main, so destructors run (PREZERO_STATS=1 prints
 *      prezero's statistics there).
 *
 *   peak=S       peak memory                           (default 1536M)
 *   ws=S         working set kept after the peak       (default 128M)
 *   block=S      block size of the peak allocations    (default 64M)
 *   wsblock=S,.. block size(s) of the working set: one size, or a
 *                comma-separated list used in turn (e.g. 64K,256K,1M,4M)
 *                                                      (default 1M)
 *   small=S      part of ws held in small objects      (default 8M)
 *   hold_ms=MS   time the peak is held                 (default 500)
 *   period_ms=MS working-set touch period when idle    (default 200)
 *
 * Exit status: 0 after SIGTERM/SIGINT, 2 on a corrupt block, 3 when an
 * allocation fails, 64 on bad arguments.
 */
#include "common.h"

#include <signal.h>
#include <unistd.h>

#define PAGE 4096u

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static long rss_kib(void)
{
    char buf[4096];
    FILE *f = fopen("/proc/self/status", "r");
    long v = -1;
    if (f == NULL)
        return -1;
    while (fgets(buf, sizeof buf, f) != NULL)
        if (strncmp(buf, "VmRSS:", 6) == 0) {
            v = strtol(buf + 6, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* One size from "S[,S...]" (K/M/G suffixes); *next points past it. */
static uint64_t parse_size_item(const char *s, const char **next)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno != 0 || end == s || s[0] == '-')
        bench_fail(BENCH_EXIT_USAGE, "bad size in '%s'", s);
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    default: break;
    }
    if (*end != '\0' && *end != ',')
        bench_fail(BENCH_EXIT_USAGE, "bad size in '%s'", s);
    *next = *end == ',' ? end + 1 : NULL;
    return v;
}

/* Write every 4 KiB page of a calloc'd block once; the old value must be 0. */
static void first_touch(unsigned char *p, size_t n, uint64_t tag)
{
    for (size_t off = 0; off < n; off += PAGE) {
        uint64_t old = __atomic_exchange_n((uint64_t *)(void *)(p + off), tag + off,
                                           __ATOMIC_RELAXED);
        if (old != 0)
            bench_fail(BENCH_EXIT_CORRUPT, "calloc'd block %p not zero at +%zu: %#" PRIx64,
                       (void *)p, off, old);
    }
}

struct wsblk {
    unsigned char *p;
    size_t n;
    uint64_t tag;
};

int main(int argc, char **argv)
{
    static const char *const keys[] = {"peak", "ws", "block", "wsblock", "small",
                                       "hold_ms", "period_ms", NULL};
    const char *usage = "[peak=1536M] [ws=128M] [block=64M] [wsblock=1M[,S...]] [small=8M] "
                        "[hold_ms=500] [period_ms=200]";
    arg_validate(argc, argv, usage, keys);
    uint64_t peak = arg_u64(argc, argv, "peak", 1536ull << 20);
    uint64_t ws = arg_u64(argc, argv, "ws", 128ull << 20);
    uint64_t block = arg_u64(argc, argv, "block", 64ull << 20);
    const char *wsblock_arg = arg_str(argc, argv, "wsblock", "1M");
    uint64_t wsizes[32];
    size_t nwsizes = 0;
    for (const char *q = wsblock_arg; q != NULL && nwsizes < 32;)
        wsizes[nwsizes++] = parse_size_item(q, &q);
    uint64_t small = arg_u64(argc, argv, "small", 8ull << 20);
    uint64_t hold_ms = arg_u64(argc, argv, "hold_ms", 500);
    uint64_t period_ms = arg_u64_range(argc, argv, "period_ms", 200, 1, 3600000);
    int bad = block < PAGE || ws > peak || small > ws || nwsizes == 0;
    for (size_t i = 0; i < nwsizes; i++)
        bad |= wsizes[i] < 16;
    if (bad)
        bench_fail(BENCH_EXIT_USAGE, "need block >= 4K, wsblock >= 16, small <= ws <= peak\nusage: %s %s",
                   argv[0], usage);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: the sleep returns at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);

    size_t nbig = (size_t)((peak - ws + block - 1) / block);
    /* working-set blocks: the sizes in turn while they fit in ws - small */
    size_t nws = 0;
    for (uint64_t sum = 0;; nws++) {
        uint64_t n = wsizes[nws % nwsizes];
        if (sum + n > ws - small)
            break;
        sum += n;
    }
    unsigned char **big = bench_calloc(nbig ? nbig : 1, sizeof *big);
    struct wsblk *wsb = bench_calloc(nws ? nws : 1, sizeof *wsb);
    /* small objects: sizes 16..4096, as many as fit in `small` bytes */
    size_t nsmall_cap = (size_t)(small / 16) + 1, nsmall = 0;
    struct wsblk *sm = bench_calloc(nsmall_cap, sizeof *sm);
    rng_t r;
    rng_seed(&r, 1, 3);

    /* 1. the peak: big blocks with the working set interleaved */
    uint64_t total = 0, left_big = peak - ws, left_small = small;
    size_t iws = 0;
    uint64_t t0 = bench_now_ns();
    for (size_t b = 0; b <= nbig; b++) {
        if (b < nbig) {
            size_t n = (size_t)(left_big < block ? left_big : block);
            big[b] = bench_calloc(1, n);
            first_touch(big[b], n, 0x100000000ull * (b + 1));
            left_big -= n;
            total += n;
        }
        /* the working set's share that goes between this block and the next */
        size_t ws_upto = nbig ? (size_t)((uint64_t)nws * (b + 1) / (nbig + 1)) : nws;
        if (b == nbig)
            ws_upto = nws;
        for (; iws < ws_upto; iws++) {
            wsb[iws].n = (size_t)wsizes[iws % nwsizes];
            wsb[iws].tag = rng_next(&r) | 1;
            wsb[iws].p = bench_calloc(1, wsb[iws].n);
            first_touch(wsb[iws].p, wsb[iws].n, wsb[iws].tag);
            total += wsb[iws].n;
        }
        uint64_t small_upto = nbig ? small * (b + 1) / (nbig + 1) : small;
        if (b == nbig)
            small_upto = small;
        while (small - left_small < small_upto && nsmall < nsmall_cap) {
            size_t n = (size_t)rng_range(&r, 16, 4096) & ~(size_t)15;
            if (n > left_small)
                n = (size_t)left_small;
            if (n < 16)
                break;
            struct wsblk *s = &sm[nsmall++];
            s->n = n;
            s->tag = rng_next(&r) | 1;
            s->p = bench_calloc(1, n);
            first_touch(s->p, 8, s->tag); /* first word only: one write per object */
            left_small -= n;
            total += n;
        }
    }
    uint64_t t1 = bench_now_ns();
    double secs = (double)(t1 - t0) / 1e9;
    printf("peak bytes=%" PRIu64 " us=%" PRIu64 " gibps=%.3f\n", total, (t1 - t0) / 1000,
           secs > 0 ? (double)total / (1024.0 * 1024 * 1024) / secs : 0.0);

    /* 2. hold */
    bench_sleep_ms(hold_ms);

    /* 3. free all but the working set */
    uint64_t t2 = bench_now_ns();
    for (size_t b = 0; b < nbig; b++) {
        if (*(uint64_t *)(void *)big[b] != 0x100000000ull * (b + 1))
            bench_fail(BENCH_EXIT_CORRUPT, "big block %zu clobbered", b);
        free(big[b]);
    }
    uint64_t t3 = bench_now_ns();
    printf("idle rss_kib=%ld free_us=%" PRIu64 "\n", rss_kib(), (t3 - t2) / 1000);

    /* 4. the idle loop */
    uint64_t rounds = 0;
    while (!stop_flag) {
        struct timespec ts = {(time_t)(period_ms / 1000), (long)(period_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL); /* EINTR on SIGTERM: the loop test sees the flag */
        if (stop_flag)
            break;
        rounds++;
        for (size_t i = 0; i < nws; i++) {
            uint64_t *w = (uint64_t *)(void *)wsb[i].p;
            if (w[0] != wsb[i].tag + rounds - 1)
                bench_fail(BENCH_EXIT_CORRUPT, "working-set block %zu clobbered", i);
            w[0] = wsb[i].tag + rounds;
            for (size_t off = PAGE; off + 8 < wsb[i].n; off += PAGE)
                wsb[i].p[off + 8] = (unsigned char)rounds;
        }
        for (size_t i = 0; i < nsmall; i++) {
            uint64_t *w = (uint64_t *)(void *)sm[i].p;
            if (w[0] != sm[i].tag + rounds - 1)
                bench_fail(BENCH_EXIT_CORRUPT, "small object %zu clobbered", i);
            w[0] = sm[i].tag + rounds;
        }
    }

    long rss = rss_kib();
    for (size_t i = 0; i < nws; i++)
        free(wsb[i].p);
    for (size_t i = 0; i < nsmall; i++)
        free(sm[i].p);
    free(sm);
    free(wsb);
    free(big);
    printf("exit rss_kib=%ld rounds=%" PRIu64 "\n", rss, rounds);
    return 0;
}
