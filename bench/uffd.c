/*
 * uffd: what userfaultfd would buy prezero, measured before building it
 * into the library (the mmap issue: "each stays in only if its benchmark
 * shows a win").
 *
 * move:  a program touches every 4 KiB page of a fresh `size` region.
 *        - thp:   the kernel faults in and zeroes 2 MiB huge pages
 *        - 4k:    the kernel faults in 4 KiB pages (MADV_NOHUGEPAGE)
 *        - uffd:  the region is registered with userfaultfd (missing mode);
 *                 a handler thread answers each fault by moving a huge page
 *                 that was pre-faulted and zeroed in advance (the pool)
 *                 into place with UFFDIO_MOVE (6.8)
 *        Prints the program's touch time per GiB for each.
 * track: re-zeroing a 4 KiB-page block after the program wrote `permille`
 *        of its pages: memset of the whole block, against asynchronous
 *        write-protect tracking (UFFD_FEATURE_WP_ASYNC, 6.7) and one
 *        PAGEMAP_SCAN that lists the written pages and protects them
 *        again, zeroing only those. Also the cost the tracking adds to the
 *        program's writes (one minor fault per first write to a page).
 *
 *   mode=move|track  size=S (default 1G)  permille=N (track, default 10)
 * Exits 0 printing "skip: <reason>" where the kernel lacks a feature.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../src/os/kabi.h"

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef PM_SCAN_WP_MATCHING
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define HP (2u << 20)

static char *map_aligned(size_t len, int huge)
{
    char *p = mmap(NULL, len + HP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        bench_fail(BENCH_EXIT_NOMEM, "mmap: %s", strerror(errno));
    char *a = (char *)(((uintptr_t)p + HP - 1) & ~(uintptr_t)(HP - 1));
    if (a > p)
        munmap(p, (size_t)(a - p));
    munmap(a + len, (size_t)(p + len + HP - (a + len)));
    madvise(a, len, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    return a;
}

static double touch(char *p, size_t len)
{
    uint64_t t0 = bench_now_ns();
    for (size_t off = 0; off < len; off += 4096)
        p[off] = 1;
    return (double)(bench_now_ns() - t0) / 1e9;
}

static int uffd_open(uint64_t features, uint64_t *got)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
    if (fd < 0)
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct uffdio_api api = {.api = UFFD_API, .features = features};
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
        close(fd);
        return -1;
    }
    *got = api.features;
    return fd;
}

struct mover {
    int fd;
    char *pool;
    size_t next, len;
    uint64_t faults, ns;
};

static void *move_handler(void *arg)
{
    struct mover *m = arg;
    for (;;) {
        struct uffd_msg msg;
        ssize_t n = read(m->fd, &msg, sizeof msg);
        if (n != sizeof msg)
            return NULL; /* closed */
        if (msg.event != UFFD_EVENT_PAGEFAULT)
            continue;
        uint64_t t0 = bench_now_ns();
        uint64_t dst = msg.arg.pagefault.address & ~(uint64_t)(HP - 1);
        struct uffdio_move mv = {.dst = dst, .src = (uintptr_t)(m->pool + m->next), .len = HP, .mode = 0};
        if (ioctl(m->fd, UFFDIO_MOVE, &mv) != 0 && errno != EEXIST)
            bench_fail(BENCH_EXIT_CORRUPT, "UFFDIO_MOVE: %s", strerror(errno));
        m->next += HP;
        m->faults++;
        m->ns += bench_now_ns() - t0;
    }
}

static void mode_move(size_t size)
{
    char *a = map_aligned(size, 1);
    double thp = touch(a, size);
    munmap(a, size);
    a = map_aligned(size, 0);
    double small = touch(a, size);
    munmap(a, size);

    uint64_t feat;
    int fd = uffd_open(UFFD_FEATURE_MOVE, &feat);
    if (fd < 0 || !(feat & UFFD_FEATURE_MOVE)) {
        printf("move: thp %.3f s/GiB, 4k %.3f s/GiB; skip uffd: no UFFD_FEATURE_MOVE\n",
               thp * (double)(1u << 30) / (double)size, small * (double)(1u << 30) / (double)size);
        return;
    }
    /* the pool: huge pages faulted and zeroed in advance (the workers' job) */
    struct mover m = {.fd = fd, .pool = map_aligned(size, 1), .len = size};
    uint64_t tp = bench_now_ns();
    if (madvise(m.pool, size, MADV_POPULATE_WRITE) != 0)
        bench_fail(BENCH_EXIT_NOMEM, "populate: %s", strerror(errno));
    double prep = (double)(bench_now_ns() - tp) / 1e9;
    char *dst = map_aligned(size, 1);
    struct uffdio_register reg = {.range = {(uintptr_t)dst, size}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0)
        bench_fail(BENCH_EXIT_CORRUPT, "UFFDIO_REGISTER: %s", strerror(errno));
    pthread_t t;
    bench_thread_create(&t, move_handler, &m);
    double moved = touch(dst, size);
    for (size_t off = 0; off < size; off += 4096 * 37)
        if (dst[off] != 1 || dst[off + 1] != 0)
            bench_fail(BENCH_EXIT_CORRUPT, "moved page at %zu wrong", off);
    close(fd); /* the handler's read fails: it leaves */
    pthread_cancel(t);
    bench_thread_join(t);
    double g = (double)(1u << 30) / (double)size;
    printf("move: touch per GiB: kernel THP faults %.3f s, kernel 4 KiB faults %.3f s, "
           "uffd + UFFDIO_MOVE of ready huge pages %.3f s (%" PRIu64 " faults, %.1f us per move); "
           "pool preparation (background) %.3f s/GiB\n",
           thp * g, small * g, moved * g, m.faults, m.faults ? (double)m.ns / 1e3 / (double)m.faults : 0.0,
           prep * g);
}

static void mode_track(size_t size, unsigned permille)
{
    char *a = map_aligned(size, 0);
    memset(a, 0, size); /* resident, 4 KiB pages, zero */
    size_t pages = size / 4096, step = 1000 / permille;
    uint64_t feat;
    int fd = uffd_open(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, &feat);
    /* baseline: the program writes, then the whole block is zeroed */
    uint64_t t0 = bench_now_ns();
    for (size_t pg = 0; pg < pages; pg += step)
        a[pg * 4096 + 8] = 1;
    uint64_t t1 = bench_now_ns();
    memset(a, 0, size);
    uint64_t t2 = bench_now_ns();
    printf("track: %zu MiB, %u per mille of pages written: program writes %.2f ms, memset of the block %.2f ms\n",
           size >> 20, permille, (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6);
    if (fd < 0 || !(feat & UFFD_FEATURE_WP_ASYNC)) {
        printf("track: skip: no UFFD_FEATURE_WP_ASYNC\n");
        return;
    }
    struct uffdio_register reg = {.range = {(uintptr_t)a, size}, .mode = UFFDIO_REGISTER_MODE_WP};
    if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0) {
        printf("track: skip: UFFDIO_REGISTER(WP): %s\n", strerror(errno));
        return;
    }
    int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    static struct page_region vec[1 << 16];
    /* protect everything (the block is zero now) */
    struct pm_scan_arg arg = {.size = sizeof arg, .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                              .start = (uintptr_t)a, .end = (uintptr_t)a + size, .vec = (uintptr_t)vec,
                              .vec_len = 1 << 16, .category_mask = PAGE_IS_WRITTEN,
                              .category_anyof_mask = 0, .return_mask = PAGE_IS_WRITTEN};
    uint64_t t3 = bench_now_ns();
    if (ioctl(pm, PAGEMAP_SCAN, &arg) < 0) {
        printf("track: skip: PAGEMAP_SCAN: %s\n", strerror(errno));
        return;
    }
    uint64_t t4 = bench_now_ns();
    for (int round = 0; round < 3; round++) {
        uint64_t w0 = bench_now_ns();
        for (size_t pg = (size_t)round; pg < pages; pg += step)
            a[pg * 4096 + 8] = 1;
        uint64_t w1 = bench_now_ns();
        /* recycle: list the written pages, zero only those, then protect
         * them again (protecting first would let the zeroing mark them
         * written once more) */
        struct pm_scan_arg list = arg;
        list.flags = 0;
        long n = ioctl(pm, PAGEMAP_SCAN, &list);
        if (n < 0)
            bench_fail(BENCH_EXIT_CORRUPT, "PAGEMAP_SCAN: %s", strerror(errno));
        size_t bytes = 0;
        for (long i = 0; i < n; i++) {
            memset((void *)(uintptr_t)vec[i].start, 0, vec[i].end - vec[i].start);
            bytes += vec[i].end - vec[i].start;
        }
        for (long i = 0; i < n; i++) {
            struct uffdio_writeprotect wp = {.range = {vec[i].start, vec[i].end - vec[i].start},
                                             .mode = UFFDIO_WRITEPROTECT_MODE_WP};
            if (ioctl(fd, UFFDIO_WRITEPROTECT, &wp) != 0)
                bench_fail(BENCH_EXIT_CORRUPT, "UFFDIO_WRITEPROTECT: %s", strerror(errno));
        }
        uint64_t w2 = bench_now_ns();
        for (size_t off = 0; off < size; off += 4096 * 13)
            if (a[off + 8] != 0)
                bench_fail(BENCH_EXIT_CORRUPT, "page %zu not zeroed", off / 4096);
        printf("track round %d: program writes %.2f ms (with write-protect faults), scan + zero written "
               "%.2f ms (%ld ranges, %zu KiB)\n",
               round, (double)(w1 - w0) / 1e6, (double)(w2 - w1) / 1e6, n, bytes >> 10);
    }
    printf("track: protecting the whole block first took %.2f ms\n", (double)(t4 - t3) / 1e6);
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"mode", "size", "permille", NULL};
    arg_validate(argc, argv, "mode=move|track [size=S] [permille=N]", keys);
    const char *mode = arg_str(argc, argv, "mode", "move");
    size_t size = (size_t)arg_u64_range(argc, argv, "size", 1u << 30, HP, 1ull << 40) & ~(size_t)(HP - 1);
    unsigned permille = (unsigned)arg_u64_range(argc, argv, "permille", 10, 1, 1000);
    if (!strcmp(mode, "move"))
        mode_move(size);
    else if (!strcmp(mode, "track"))
        mode_track(size, permille);
    else
        bench_fail(BENCH_EXIT_USAGE, "mode=%s", mode);
    return 0;
}
