/*
 * large-loop: malloc / touch / free of one large block, many times.
 *
 * Each iteration allocates `size` bytes, writes one byte in every
 * `stride`-byte page (plus the last byte), reads them back and frees the
 * block.  This is the pattern of programs that build a big temporary buffer
 * per request; the cost is dominated by how the allocator obtains and
 * returns large blocks (mmap/munmap per call, retained dirty memory, or
 * pre-zeroed pages) and by page faults.
 *
 *   size=S     block size                  (default 32M)
 *   iters=N    iterations                  (default 200)
 *   stride=S   distance between writes     (default 4096)
 */
#include "common.h"

int main(int argc, char **argv)
{
    static const char *const keys[] = {"size", "iters", "stride", NULL};
    arg_validate(argc, argv, "[size=S] [iters=N] [stride=S]", keys);
    size_t size = (size_t)arg_u64_range(argc, argv, "size", 32u << 20, 1, 1ull << 40);
    uint64_t iters = arg_u64(argc, argv, "iters", 200);
    size_t stride = (size_t)arg_u64_range(argc, argv, "stride", 4096, 1, 1ull << 40);

    uint64_t sum = 0;
    for (uint64_t it = 0; it < iters; it++) {
        unsigned char *p = bench_malloc(size);
        unsigned char salt = (unsigned char)(it * 7u + 1u);
        for (size_t off = 0; off < size; off += stride)
            p[off] = (unsigned char)((off / stride) ^ salt);
        p[size - 1] = salt;
        uint64_t s = 0;
        for (size_t off = 0; off < size - 1; off += stride) {
            unsigned char want = (unsigned char)((off / stride) ^ salt);
            if (p[off] != want)
                bench_fail(BENCH_EXIT_CORRUPT, "iteration %" PRIu64 ": byte %zu is %u, expected %u",
                           it, off, p[off], want);
            s += p[off];
        }
        if (p[size - 1] != salt)
            bench_fail(BENCH_EXIT_CORRUPT, "iteration %" PRIu64 ": last byte clobbered", it);
        sum = mix64(sum, s);
        free(p);
    }
    printf("ok %016" PRIx64 "\n", sum);
    return 0;
}
