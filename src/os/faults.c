/* Fault injection for developers (PREZERO_FAULTS, honoured by the debug
 * build only): makes the OS calls prezero depends on fail, so tests can
 * check that every failure is survived: the API returns NULL with ENOMEM
 * where memory really is unavailable, falls back where another path
 * exists, and never crashes, leaks or deadlocks.
 *
 *   PREZERO_FAULTS=KIND:every=N[:errno=NAME],...
 *   KIND: mmap munmap madvise populate (MADV_POPULATE_WRITE) mremap
 *         thread (pthread_create of workers and population helpers)
 *         uffd (opening userfaultfd) move (UFFDIO_MOVE) mprotect (committing
 *         reserved chunks, restoring a program's protection)
 *   every=N: the Nth, 2Nth, ... call of that kind fails
 *   errno: ENOMEM EINVAL EAGAIN EFAULT EPERM EBUSY ENOSYS (default: the likeliest)
 *
 * Parsed from the option's text without allocating; the wrappers sit in
 * the os hook table in front of the real calls. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "os/os.h"
#include "kabi.h"

static const char *const kind_names[PZ_FAULT__COUNT] = {"mmap", "munmap", "madvise", "populate", "mremap",
                                                        "thread", "uffd", "move", "mprotect"};
static const int default_errno[PZ_FAULT__COUNT] = {ENOMEM, EINVAL, EINVAL, ENOMEM, ENOMEM,
                                                   EAGAIN, EPERM, EBUSY, ENOMEM};
static struct {
  unsigned long every;
  int err;
  _Atomic unsigned long calls, injected;
} faults[PZ_FAULT__COUNT];
static struct pz_os_hooks real;
static bool active;

static bool hit(enum pz_fault_kind k, int *err) {
  if (!faults[k].every) return false;
  unsigned long n = atomic_fetch_add_explicit(&faults[k].calls, 1, memory_order_relaxed) + 1;
  if (n % faults[k].every) return false;
  atomic_fetch_add_explicit(&faults[k].injected, 1, memory_order_relaxed);
  *err = faults[k].err;
  return true;
}

static void *f_mmap(void *a, size_t l, int p, int f, int fd, off_t o) {
  int e;
  if (hit(PZ_FAULT_MMAP, &e)) {
    errno = e;
    return MAP_FAILED;
  }
  return real.mmap(a, l, p, f, fd, o);
}
static int f_munmap(void *a, size_t l) {
  int e;
  if (hit(PZ_FAULT_MUNMAP, &e)) {
    errno = e;
    return -1;
  }
  return real.munmap(a, l);
}
static int f_madvise(void *a, size_t l, int adv) {
  int e;
  if (hit(adv == MADV_POPULATE_WRITE ? PZ_FAULT_POPULATE : PZ_FAULT_MADVISE, &e)) {
    errno = e;
    return -1;
  }
  return real.madvise(a, l, adv);
}
static void *f_mremap(void *o, size_t ol, size_t nl, int f, void *na) {
  int e;
  if (hit(PZ_FAULT_MREMAP, &e)) {
    errno = e;
    return MAP_FAILED;
  }
  return real.mremap(o, ol, nl, f, na);
}

static int f_mprotect(void *a, size_t l, int p) {
  int e;
  if (hit(PZ_FAULT_MPROTECT, &e)) {
    errno = e;
    return -1;
  }
  return real.mprotect(a, l, p);
}

bool pz_fault_hit(enum pz_fault_kind k, int *err) { return active && hit(k, err); }

int pz_thread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg) {
  int e = 0;
  if (pz_fault_hit(PZ_FAULT_THREAD, &e)) return e;
  return pthread_create(t, attr, fn, arg);
}

/* The thread names itself (pz_thread_name): naming it from here opens
 * /proc/self/task/TID/comm in the calling thread, a descriptor taken in
 * the middle of a program's malloc, which another of its threads may see
 * (its open() not getting the lowest free descriptor). */
/* Our threads alive, counted so that they can tell when they are all the
 * process has left: a program whose main thread ended with pthread_exit()
 * lives until its last thread exits, and ours must not be that thread
 * (they waited up to 11 s for memory to give back). Counted by a
 * trampoline: a slot holds the function until the thread has read it. */
static _Atomic int own_threads;
static _Atomic bool main_exited;
#define SPAWN_SLOTS 256
static struct spawn_slot { void *(*_Atomic fn)(void *); void *arg; } spawn_slots[SPAWN_SLOTS];

static void *spawned(void *slot) {
  struct spawn_slot *sl = slot;
  void *(*fn)(void *) = atomic_load(&sl->fn);
  void *arg = sl->arg;
  atomic_store(&sl->fn, NULL); /* free again */
  void *r = fn(arg);
  atomic_fetch_sub(&own_threads, 1);
  return r;
}

void pz_main_exited(void) { atomic_store(&main_exited, true); }
bool pz_main_has_exited(void) { return atomic_load_explicit(&main_exited, memory_order_relaxed); }

void pz_threads_postfork_child(void) { /* none of ours was copied; the forking thread is main */
  atomic_store(&own_threads, 0);
  atomic_store(&main_exited, false);
  for (unsigned i = 0; i < SPAWN_SLOTS; i++) atomic_store(&spawn_slots[i].fn, NULL);
}

bool pz_only_own_threads(void) {
  if (!atomic_load(&main_exited)) return false; /* the main thread ends the process with exit() */
  struct stat st; /* no descriptor: a program's open() keeps the lowest free number */
  if (syscall(SYS_newfstatat, AT_FDCWD, "/proc/self/task", &st, 0) != 0) return false;
  /* 2 + the threads, the exited main thread (a zombie until the last one
   * leaves) included; a count read early errs on the side of staying */
  return (long)st.st_nlink - 2 - 1 <= (long)atomic_load(&own_threads);
}

int pz_thread_spawn(void *(*fn)(void *), void *arg, size_t stack) {
  struct spawn_slot *sl = NULL;
  for (unsigned i = 0; i < SPAWN_SLOTS && !sl; i++) {
    void *(*expect)(void *) = NULL;
    if (atomic_compare_exchange_strong(&spawn_slots[i].fn, &expect, fn)) sl = &spawn_slots[i];
  }
  if (!sl) return EAGAIN;
  sl->arg = arg;
  atomic_fetch_add(&own_threads, 1);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, stack);
  pthread_t t;
  int rc = pz_thread_create(&t, &attr, spawned, sl);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    atomic_fetch_sub(&own_threads, 1);
    atomic_store(&sl->fn, NULL);
  }
  return rc;
}

void pz_thread_name(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }

size_t pz_faults_injected(void) {
  size_t n = 0;
  for (int k = 0; k < PZ_FAULT__COUNT; k++) n += atomic_load(&faults[k].injected);
  return n;
}

static int errno_by_name(const char *s, size_t n) {
  static const struct { const char *name; int e; } names[] = {
      {"ENOMEM", ENOMEM}, {"EINVAL", EINVAL}, {"EAGAIN", EAGAIN}, {"EFAULT", EFAULT}, {"EPERM", EPERM},
      {"EBUSY", EBUSY},   {"ENOSYS", ENOSYS}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strlen(names[i].name) == n && !strncmp(s, names[i].name, n)) return names[i].e;
  return 0;
}

void pz_faults_init(void) {
  const char *spec = pz_opt_strs[PZ_OPT_FAULTS];
  if (!spec) return;
  if (!PZ_DEBUG) {
    pz_warn("PREZERO_FAULTS is honoured by the debug build only (-Ddebug_checks=true); ignored");
    return;
  }
  for (const char *p = spec; *p;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    const char *colon = memchr(p, ':', len);
    size_t nlen = colon ? (size_t)(colon - p) : len;
    int k = -1;
    for (int i = 0; i < PZ_FAULT__COUNT; i++)
      if (strlen(kind_names[i]) == nlen && !strncmp(p, kind_names[i], nlen)) k = i;
    unsigned long every = 0;
    int err = k >= 0 ? default_errno[k] : 0;
    bool ok = k >= 0 && colon;
    for (const char *q = colon; ok && q && q < p + len;) { /* ":every=N" ":errno=NAME" */
      q++;
      const char *next = memchr(q, ':', (size_t)(p + len - q));
      size_t flen = next ? (size_t)(next - q) : (size_t)(p + len - q);
      if (flen > 6 && !strncmp(q, "every=", 6)) {
        every = 0;
        for (const char *d = q + 6; d < q + flen; d++) {
          if (*d < '0' || *d > '9') ok = false;
          else every = every * 10 + (unsigned long)(*d - '0');
        }
      } else if (flen > 6 && !strncmp(q, "errno=", 6)) {
        err = errno_by_name(q + 6, flen - 6);
        ok = err != 0;
      } else {
        ok = false;
      }
      q = next;
    }
    if (!ok || !every) {
      pz_warn("PREZERO_FAULTS: cannot read '%.*s' (want KIND:every=N[:errno=NAME]); ignored", (int)len, p);
    } else {
      faults[k].every = every;
      faults[k].err = err;
      active = true;
    }
    p = end ? end + 1 : p + len;
  }
  if (!active) return;
  real = pz_os;
  pz_os.mmap = f_mmap;
  pz_os.munmap = f_munmap;
  pz_os.madvise = f_madvise;
  pz_os.mremap = f_mremap;
  pz_os.mprotect = f_mprotect;
}
