/* The large layer: runs of whole chunks (one allocation each), the
 * program's own memory calls passed through us (mmap, madvise, ioctl,
 * mlock, limits), and the userfaultfd service. Includes only
 * pool/pool.h. */
#ifndef PZ_LARGE_H
#define PZ_LARGE_H

#include "pool/pool.h"

/* ==================================================================== large/large.c */
PZ_HIDDEN void *pz_large_alloc(size_t size, size_t align, bool zero);
PZ_HIDDEN void pz_large_free(void *p);
PZ_HIDDEN void *pz_large_realloc(void *p, size_t size);
PZ_HIDDEN size_t pz_large_usable(const void *p);
/* The program's memory calls, made as asked and then served or kept out of
 * our way (large/mmap.c): mmap (PREZERO_MMAP), madvise, ioctl
 * (UFFDIO_REGISTER), mlockall, munlockall. */
PZ_HIDDEN void *pz_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
PZ_HIDDEN int pz_madvise(void *p, size_t len, int advice);
PZ_HIDDEN int pz_ioctl(int fd, unsigned long request, void *arg);
PZ_HIDDEN int pz_mlockall(int flags);
PZ_HIDDEN int pz_mlock(const void *p, size_t len, unsigned flags); /* mlock2; mlock with flags 0 */
PZ_HIDDEN int pz_munlockall(void);
PZ_HIDDEN int pz_prlimit(pid_t pid, int resource, const void *new_limit, void *old_limit);
/* large/uffd.c: the userfaultfd service. Register [p, p+len): first writes
 * of its whole 2 MiB blocks get ready huge pages from node's pool. False when
 * it cannot be served (no service here, the range is not private anonymous,
 * or the program registered it itself). */
PZ_HIDDEN bool pz_uffd_register(void *p, size_t len, unsigned node);
/* Our registrations overlapping [p, p+len), or all of them, go (the
 * kernel answers those faults from then on). */
PZ_HIDDEN void pz_uffd_unregister(const void *p, size_t len);
PZ_HIDDEN void pz_uffd_unregister_all(void);
/* Move ready chunks into the whole 2 MiB blocks of [p, p+len) (nothing
 * present yet) now, from the first; returns bytes moved (MAP_POPULATE). */
PZ_HIDDEN size_t pz_uffd_fill(void *p, size_t len, unsigned node);
/* The program's MADV_POPULATE_WRITE over [p, p+len): ready chunks moved
 * into the whole blocks of our ranges there that hold nothing yet, before
 * the kernel populates the rest; returns bytes moved. */
PZ_HIDDEN size_t pz_uffd_populate(void *p, size_t len);
/* Some range of ours overlaps [p, p+len) (lock-free, racy). */
PZ_HIDDEN bool pz_uffd_serving(const void *p, size_t len);
PZ_HIDDEN void pz_uffd_init(void);
PZ_HIDDEN void pz_uffd_postfork(bool child);
/* Why served mmaps will not use userfaultfd here (NULL: they will). */
PZ_HIDDEN const char *pz_uffd_why_not(void);

#endif
