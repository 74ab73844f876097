/*
 * vm-create: a virtual machine monitor starting a guest.
 *
 * The headline case of the kernel patch that pre-zeroes free pages (Liang
 * Li, "speed up page allocation for __GFP_ZERO", 2020): creating a VM with
 * 64 GiB of RAM took 15-18 s with THP, most of it faulting in and zeroing
 * the guest's memory, and about 1.9 s with the memory zeroed in advance.
 *
 * The program plays the VMM.  First a start-up phase of `startup_ms`
 * milliseconds of real CPU work on the main thread, as a VMM initialising
 * devices and parsing its configuration does: rounds that build a hash
 * table of ~25 000 small records (a few MB, 32..512 B each) filled with
 * pseudo-random bytes, hash every record and free them all in table order.
 * Every round is identical, so each round's hash must equal the first's (an
 * allocator that corrupts a block fails here).  It never sleeps.
 *
 * Then, timed: calloc(1, guest) of "guest RAM" and one touch of every 4 KiB
 * page, as a booting guest does.  The touch is an atomic exchange of the
 * page's first 8 bytes: the old value must be 0 (calloc'd memory, read
 * before it is written), and being a single write access it faults the
 * page once, as a guest's first store does (a plain read followed by a
 * write would fault twice on fresh memory: zero page, then copy).  Untimed
 * afterwards, every page's tag and a word in its middle (still 0) are
 * checked.
 *
 * An allocator can prepare the guest memory during the start-up phase;
 * with prezero that is PREZERO_POOL_MIN=<guest size>.
 *
 * Output: ok <checksum> create_us=N startup_us=N rounds=N
 * where create_us is the calloc + touch time, startup_us the length of the
 * start-up phase and rounds the number of start-up rounds it ran.
 *
 *   mode=M         how guest RAM is obtained           (default calloc)
 *                  calloc: calloc(1, guest)
 *                  mmap: mmap(NULL, guest, RW, MAP_PRIVATE|MAP_ANONYMOUS) and
 *                    madvise(MADV_HUGEPAGE) over it, as QEMU does with guest RAM
 *                  mmap-populate: the same with MAP_POPULATE (the kernel, or an
 *                    allocator that intercepts mmap, faults it all in first)
 *                  mmap-raw: mmap and MADV_HUGEPAGE, then `threads` raw threads each calling
 *                    MADV_POPULATE_WRITE on a disjoint slice: the best the
 *                    kernel allows on this machine, with no allocator involved
 *   threads=N      threads for mode=mmap-raw            (default 2)
 *   touch=N        touch the pages of one 2 MiB block in every N (default 1:
 *                  all); N > 1 plays a guest that uses part of its RAM,
 *                  scattered (the rest is checked to read zero, sampled)
 *   guest=S        guest RAM, a multiple of 4 KiB      (default 2G)
 *   startup_ms=MS  length of the start-up phase        (default 1500)
 *   records=N      records per start-up round          (default 24576)
 *   seed=S         PRNG seed                           (default 1)
 */
#include "common.h"

#define PAGE 4096u
#define BUCKETS 4096u

struct record {
    struct record *next;
    uint64_t key;
    uint32_t len;
    unsigned char data[];
};

/* FNV-1a over the bytes, 64-bit: the "real work" done per record. */
static uint64_t hash_bytes(const unsigned char *b, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001B3ull;
    }
    return h;
}

/* One start-up round: build, hash and tear down the record table. */
static uint64_t startup_round(uint64_t seed, size_t records)
{
    rng_t r;
    rng_seed(&r, seed, 7);
    struct record **table = bench_calloc(BUCKETS, sizeof *table);
    for (size_t i = 0; i < records; i++) {
        uint32_t len = (uint32_t)rng_range(&r, 32, 512) - (uint32_t)sizeof(struct record);
        struct record *rec = bench_malloc(sizeof *rec + len);
        rec->key = rng_next(&r);
        rec->len = len;
        uint64_t x = rec->key;
        for (uint32_t j = 0; j < len; j += 8) {
            uint64_t w = splitmix64(&x);
            memcpy(rec->data + j, &w, len - j < 8 ? len - j : 8);
        }
        struct record **b = &table[rec->key % BUCKETS];
        rec->next = *b;
        *b = rec;
    }
    uint64_t h = 0;
    for (unsigned i = 0; i < BUCKETS; i++) {
        struct record *rec = table[i];
        while (rec != NULL) {
            struct record *next = rec->next;
            if (rec->key % BUCKETS != i)
                bench_fail(BENCH_EXIT_CORRUPT, "record %p in bucket %u has key %016" PRIx64,
                           (void *)rec, i, rec->key);
            h += fmix64(hash_bytes(rec->data, rec->len, rec->key ^ 0xCBF29CE484222325ull));
            free(rec);
            rec = next;
        }
    }
    free(table);
    return h;
}

#include <sys/mman.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

struct slice { unsigned char *p; size_t len; int err; };

static void *populate_slice(void *arg)
{
    struct slice *s = arg;
    if (madvise(s->p, s->len, MADV_POPULATE_WRITE) != 0)
        s->err = errno;
    return NULL;
}

/* Guest RAM by `mode` (see above); NULL never returns (bench_fail). */
static unsigned char *guest_ram(const char *mode, size_t guest, unsigned threads)
{
    if (!strcmp(mode, "calloc"))
        return bench_calloc(1, guest);
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | (!strcmp(mode, "mmap-populate") ? MAP_POPULATE : 0);
    unsigned char *g = mmap(NULL, guest, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (g == MAP_FAILED)
        bench_fail(BENCH_EXIT_NOMEM, "mmap of %zu bytes: %s", guest, strerror(errno));
    if (!(flags & MAP_POPULATE))
        madvise(g, guest, MADV_HUGEPAGE); /* the kernel (THP madvise mode) then faults huge pages too */
    if (!strcmp(mode, "mmap-raw")) {
        struct slice sl[64];
        pthread_t t[64];
        size_t per = (guest / threads + 4095) & ~(size_t)4095;
        for (unsigned i = 0; i < threads; i++) {
            size_t off = per * i < guest ? per * i : guest;
            sl[i] = (struct slice){g + off, off + per <= guest ? per : guest - off, 0};
            bench_thread_create(&t[i], populate_slice, &sl[i]);
        }
        for (unsigned i = 0; i < threads; i++) {
            bench_thread_join(t[i]);
            if (sl[i].err)
                bench_fail(BENCH_EXIT_NOMEM, "MADV_POPULATE_WRITE: %s", strerror(sl[i].err));
        }
    }
    return g;
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"guest", "startup_ms", "records", "seed", "mode", "threads", "touch", NULL};
    arg_validate(argc, argv, "[guest=S] [startup_ms=MS] [records=N] [seed=S] [mode=calloc|mmap|mmap-populate|mmap-raw] [threads=N] [touch=N]", keys);
    size_t every = (size_t)arg_u64_range(argc, argv, "touch", 1, 1, 1u << 20);
    const char *mode = arg_str(argc, argv, "mode", "calloc");
    unsigned threads = (unsigned)arg_u64_range(argc, argv, "threads", 2, 1, 64);
    if (strcmp(mode, "calloc") && strcmp(mode, "mmap") && strcmp(mode, "mmap-populate") && strcmp(mode, "mmap-raw"))
        bench_fail(BENCH_EXIT_USAGE, "mode=%s: calloc, mmap, mmap-populate or mmap-raw", mode);
    size_t guest = (size_t)arg_u64_range(argc, argv, "guest", 2ull << 30, PAGE, 1ull << 42);
    uint64_t startup_ms = arg_u64_range(argc, argv, "startup_ms", 1500, 0, 3600000);
    size_t records = (size_t)arg_u64_range(argc, argv, "records", 24576, 1, 1u << 24);
    uint64_t seed = arg_u64(argc, argv, "seed", 1);
    if (guest % PAGE != 0)
        bench_fail(BENCH_EXIT_USAGE, "guest=%zu is not a multiple of %u", guest, PAGE);

    /* start-up: CPU work on the main thread for startup_ms */
    uint64_t t_start = bench_now_ns();
    uint64_t rounds = 0, round_hash = 0;
    if (startup_ms > 0) {
        uint64_t until = t_start + startup_ms * 1000000u;
        do {
            uint64_t h = startup_round(seed, records);
            if (rounds == 0)
                round_hash = h;
            else if (h != round_hash)
                bench_fail(BENCH_EXIT_CORRUPT,
                           "start-up round %" PRIu64 " hashed %016" PRIx64 ", round 0 %016" PRIx64,
                           rounds, h, round_hash);
            rounds++;
        } while (bench_now_ns() < until);
    }
    uint64_t t0 = bench_now_ns();

    /* create: calloc the guest RAM and touch every page once */
    unsigned char *g = guest_ram(mode, guest, threads);
    for (size_t off = 0; off < guest; off += PAGE) {
        if ((off >> 21) % every) {
            off = (((off >> 21) + 1) << 21) - PAGE; /* skip the block */
            continue;
        }
        uint64_t tag = (off / PAGE) * 0x9E3779B97F4A7C15ull + 1;
        uint64_t old = __atomic_exchange_n((uint64_t *)(g + off), tag, __ATOMIC_RELAXED);
        if (old != 0)
            bench_fail(BENCH_EXIT_CORRUPT,
                       "guest RAM not zero: word at %zu was %016" PRIx64 " before the first write",
                       off, old);
    }
    __asm__ volatile("" ::: "memory");
    uint64_t t1 = bench_now_ns();

    /* verify, untimed: tags stayed, the rest of each page is still zero */
    uint64_t sum = 0;
    for (size_t off = 0; off < guest; off += PAGE) {
        if ((off >> 21) % every) { /* untouched: reads zero (one word in 16 blocks:
                                      reading faults memory in) */
            if ((off >> 21) % 16 == 1 && g[off] != 0)
                bench_fail(BENCH_EXIT_CORRUPT, "untouched guest page at %zu not zero", off);
            off = (((off >> 21) + 1) << 21) - PAGE;
            continue;
        }
        uint64_t tag = (off / PAGE) * 0x9E3779B97F4A7C15ull + 1;
        uint64_t w, mid;
        memcpy(&w, g + off, 8);
        memcpy(&mid, g + off + PAGE / 2, 8);
        if (w != tag)
            bench_fail(BENCH_EXIT_CORRUPT, "guest word at %zu is %016" PRIx64 ", wrote %016" PRIx64,
                       off, w, tag);
        if (mid != 0 || g[off + PAGE - 1] != 0)
            bench_fail(BENCH_EXIT_CORRUPT, "guest page at %zu not zero beyond the touched word",
                       off);
        sum += w;
    }
    if (!strcmp(mode, "calloc"))
        free(g);
    else
        munmap(g, guest);

    printf("ok %016" PRIx64 " create_us=%" PRIu64 " startup_us=%" PRIu64 " rounds=%" PRIu64 "\n",
           fmix64(mix64(mix64(round_hash, guest), sum)), (t1 - t0) / 1000u,
           (t0 - t_start) / 1000u, rounds);
    return 0;
}
