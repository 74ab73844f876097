/*
 * vmm-guarded: guest RAM as the rust-vmm VMMs map it, touched by vCPU-like
 * threads after an API-style delay.
 *
 * What the real programs do (read in their sources):
 *   - Firecracker, src/vm-memory/src/lib.rs, build_guarded_region() (its
 *     earlier wrapper over rust-vmm's vm-memory, commit 7aa10bce): a PROT_NONE
 *     reservation of size + GUARD_NUMBER (2) pages, MAP_ANONYMOUS |
 *     MAP_PRIVATE | MAP_NORESERVE; guest RAM mmap'd read/write over it at
 *     reservation + 1 page with MAP_NORESERVE | MAP_PRIVATE | MAP_ANONYMOUS
 *     | MAP_FIXED, so one guard page on each side (a stray access past
 *     either end faults). Guest RAM therefore starts 4 KiB past wherever
 *     the reservation landed: it is not 2 MiB aligned.
 *   - rust-vmm vm-memory, src/mmap/unix.rs: MmapRegion::new() maps
 *     MAP_ANONYMOUS | MAP_NORESERVE | MAP_PRIVATE read/write and refuses
 *     MAP_FIXED; a guarded region is built by the VMM and handed over with
 *     MmapRegionBuilder::with_raw_mmap_pointer() (build_raw), as above.
 *   - Firecracker today, src/vmm/src/vstate/memory.rs, create(): the same
 *     flags (no guard pages), then madvise(madvise_flags) over each region;
 *     `enable_thp` in /machine-config makes that MADV_HUGEPAGE
 *     (firecracker PR 5495, docs/hugepages.md).
 *   - Cloud Hypervisor, docs/memory.md, `--memory thp=on|off`: private
 *     anonymous guest RAM is labelled MADV_HUGEPAGE with madvise(2); on by
 *     default (`[default: size=512M,thp=on]`).
 *   - None of them preallocates by default (Firecracker has no prefault;
 *     Cloud Hypervisor's `prefault` is off): the guest's vCPUs fault guest
 *     RAM in as they first touch it, through KVM (a get_user_pages write
 *     fault on the vCPU thread, one per page or per huge page).
 *
 * The program: sleep `delay_ms` first (the VMM's API phase: it is started,
 * then configured over its HTTP API, /machine-config, /boot-source,
 * /drives, before InstanceStart creates guest memory; an allocator's
 * background workers can prepare memory meanwhile: prezero with
 * PREZERO_POOL_MIN=<guest>). Then, timed:
 *   map    the PROT_NONE | MAP_NORESERVE reservation of guest + 2 * guard
 *          pages, guest RAM MAP_FIXED | MAP_NORESERVE | MAP_PRIVATE |
 *          MAP_ANONYMOUS read/write at reservation + guard pages, and with
 *          thp=1 madvise(MADV_HUGEPAGE) over it (Cloud Hypervisor's
 *          default, Firecracker's enable_thp);
 *   touch  `vcpus` threads start together; thread i writes its contiguous
 *          1/vcpus of guest RAM in address order, one 8-byte atomic
 *          exchange per 4 KiB page (a guest's first store: faults the page
 *          once, and the old value must be 0).
 * Untimed afterwards: every page's tag, a word in its middle and its last
 * byte (still 0) are checked, and a forked child's write to each guard
 * page must die of SIGSEGV (guard=0: no guard pages, no check).
 *
 * Output: ok <checksum> touch_us=N map_us=N slowest_vcpu_us=N
 *         fastest_vcpu_us=N offset_2m=N
 * touch_us is the time from releasing the vCPU threads until the last one
 * finished (what a guest's boot waits for); offset_2m is where guest RAM
 * starts within a 2 MiB block (4096 with one guard page on a 2 MiB-aligned
 * reservation).
 *
 *   guest=S      guest RAM, a multiple of 4 KiB     (default 2G)
 *   vcpus=N      vCPU-like touching threads         (default 2)
 *   thp=0|1      madvise(MADV_HUGEPAGE) guest RAM   (default 1)
 *   delay_ms=MS  API-style delay before creating it (default 8000)
 *   guard=N      guard pages on each side           (default 1, Firecracker's)
 */
#include "common.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096u

struct vcpu {
    unsigned char *p;
    size_t len, first_page; /* first_page: index of p's page in guest RAM */
    uint64_t us;
    size_t bad;             /* pages whose word was not 0 before the first write */
};

static pthread_barrier_t go;

static uint64_t tag_of(size_t page) { return page * 0x9E3779B97F4A7C15ull + 1; }

static void *vcpu_run(void *arg)
{
    struct vcpu *v = arg;
    pthread_barrier_wait(&go);
    uint64_t t0 = bench_now_ns();
    for (size_t off = 0, pg = v->first_page; off < v->len; off += PAGE, pg++) {
        uint64_t old = __atomic_exchange_n((uint64_t *)(v->p + off), tag_of(pg), __ATOMIC_RELAXED);
        v->bad += old != 0;
    }
    v->us = (bench_now_ns() - t0) / 1000u;
    return NULL;
}

/* A forked child writing to p dies of SIGSEGV. */
static int write_faults(volatile unsigned char *p)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        bench_fail(BENCH_EXIT_NOMEM, "fork: %s", strerror(errno));
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        *p = 1;
        _exit(0);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid)
        bench_fail(BENCH_EXIT_CORRUPT, "waitpid: %s", strerror(errno));
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV;
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"guest", "vcpus", "thp", "delay_ms", "guard", NULL};
    arg_validate(argc, argv, "[guest=S] [vcpus=N] [thp=0|1] [delay_ms=MS] [guard=N]", keys);
    size_t guest = (size_t)arg_u64_range(argc, argv, "guest", 2ull << 30, 2 * PAGE, 1ull << 42);
    unsigned vcpus = (unsigned)arg_u64_range(argc, argv, "vcpus", 2, 1, 256);
    int thp = (int)arg_u64_range(argc, argv, "thp", 1, 0, 1);
    uint64_t delay_ms = arg_u64_range(argc, argv, "delay_ms", 8000, 0, 3600000);
    size_t guard = (size_t)arg_u64_range(argc, argv, "guard", 1, 0, 512) * PAGE;
    if (guest % PAGE != 0)
        bench_fail(BENCH_EXIT_USAGE, "guest=%zu is not a multiple of %u", guest, PAGE);

    /* the API phase: the VMM runs, configured over its API, before it
       creates guest memory at InstanceStart */
    bench_sleep_ms(delay_ms);

    struct vcpu v[256];
    pthread_t t[256];
    size_t pages = guest / PAGE, per = pages / vcpus;
    if (pthread_barrier_init(&go, NULL, vcpus + 1) != 0)
        bench_fail(BENCH_EXIT_NOMEM, "pthread_barrier_init failed");

    uint64_t t0 = bench_now_ns();
    size_t rlen = guest + 2 * guard;
    unsigned char *r = mmap(NULL, rlen, PROT_NONE, MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED)
        bench_fail(BENCH_EXIT_NOMEM, "mmap of the %zu-byte PROT_NONE reservation: %s", rlen, strerror(errno));
    unsigned char *g = mmap(r + guard, guest, PROT_READ | PROT_WRITE,
                            MAP_NORESERVE | MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (g != r + guard)
        bench_fail(BENCH_EXIT_NOMEM, "mmap(MAP_FIXED) of guest RAM at %p: %s", (void *)(r + guard),
                   g == MAP_FAILED ? strerror(errno) : "another address");
    if (thp && madvise(g, guest, MADV_HUGEPAGE) != 0)
        fprintf(stderr, "bench: madvise(MADV_HUGEPAGE) of guest RAM: %s (going on, as the VMMs do)\n",
                strerror(errno));
    uint64_t t1 = bench_now_ns();

    for (unsigned i = 0; i < vcpus; i++) {
        size_t first = per * i, n = i + 1 == vcpus ? pages - first : per;
        v[i] = (struct vcpu){g + first * PAGE, n * PAGE, first, 0, 0};
        bench_thread_create(&t[i], vcpu_run, &v[i]);
    }
    uint64_t t2 = bench_now_ns();
    pthread_barrier_wait(&go); /* the vCPUs run */
    for (unsigned i = 0; i < vcpus; i++)
        bench_thread_join(t[i]);
    uint64_t t3 = bench_now_ns();

    /* verify, untimed */
    uint64_t sum = 0, slow = 0, fast = UINT64_MAX;
    for (unsigned i = 0; i < vcpus; i++) {
        if (v[i].bad)
            bench_fail(BENCH_EXIT_CORRUPT, "vCPU %u: %zu pages of guest RAM were not zero before the first write",
                       i, v[i].bad);
        slow = v[i].us > slow ? v[i].us : slow;
        fast = v[i].us < fast ? v[i].us : fast;
    }
    for (size_t pg = 0; pg < pages; pg++) {
        const unsigned char *p = g + pg * PAGE;
        uint64_t w, mid;
        memcpy(&w, p, 8);
        memcpy(&mid, p + PAGE / 2, 8);
        if (w != tag_of(pg))
            bench_fail(BENCH_EXIT_CORRUPT, "guest page %zu holds %016" PRIx64 ", wrote %016" PRIx64, pg, w,
                       tag_of(pg));
        if (mid != 0 || p[PAGE - 1] != 0)
            bench_fail(BENCH_EXIT_CORRUPT, "guest page %zu not zero beyond the written word", pg);
        sum += w;
    }
    if (guard && (!write_faults(r) || !write_faults(g + guest + guard - 1)))
        bench_fail(BENCH_EXIT_CORRUPT, "a write to a guard page did not fault");
    munmap(r, rlen);

    printf("ok %016" PRIx64 " touch_us=%" PRIu64 " map_us=%" PRIu64 " slowest_vcpu_us=%" PRIu64
           " fastest_vcpu_us=%" PRIu64 " offset_2m=%zu\n",
           fmix64(mix64(mix64(guest, vcpus), sum)), (t3 - t2) / 1000u, (t1 - t0) / 1000u, slow, fast,
           (size_t)((uintptr_t)g & ((2u << 20) - 1)));
    return 0;
}
