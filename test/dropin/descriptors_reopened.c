/* descriptors-reopened: a program opens, closes and reopens descriptors
 * while another of its threads allocates and frees big blocks.
 *
 * Hazard: prezero's background threads must never hold a descriptor the
 * program can see. A pool worker that opens a file (to watch memory: the
 * machine's /proc/meminfo, a cgroup's usage) takes the lowest free
 * descriptor for a moment, so the program's open() gets another number,
 * and a program that closes every descriptor above 2 (close_range, as
 * daemons and shells do) and opens its own file can have the worker read
 * that file or close it. A thread started from inside free() and named by
 * its creator (pthread_setname_np opens /proc/self/task/TID/comm) does the
 * same in the program's own thread. Found by a cold review: 106 opens out
 * of 4 million got the wrong number in 6 s, 3 reads failed (EBADF) and 3
 * read wrong bytes.
 *
 * glibc/POSIX: open() returns the lowest free descriptor; a program's
 * descriptors are its own. The test: a thread mallocs, writes and frees
 * 64 MiB blocks every 2 ms (prezero's pool workers start, zero and watch
 * memory) while the main thread, for 4 s, (a) opens /dev/null and checks
 * it got the lowest free number, and (b) every 64th time closes all
 * descriptors from 3 up, opens its own file and reads it back. Skipped
 * where prezero's workers must read files (less than half the machine's
 * memory free, or a memory cgroup limit: doc/design.md's known limits). */
#include "dropin.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/sysinfo.h>
#include <sys/syscall.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

static volatile int stop;

static void *churn(void *arg) {
  (void)arg;
  while (!stop) {
    char *volatile p = malloc(64 * MiB);
    if (p) {
      memset(p, 1, 64 * MiB);
      free(p);
    }
    sleep_ms(2);
  }
  return NULL;
}

static int limited_cgroup(void) {
  char buf[4096], path[512], val[64];
  if (read_file("/proc/self/cgroup", buf, sizeof buf) <= 0) return 0;
  for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
    char *rel = strrchr(line, ':');
    if (!rel) continue;
    rel++;
    const char *files[] = {"/sys/fs/cgroup%s/memory.max", "/sys/fs/cgroup/memory%s/memory.limit_in_bytes"};
    for (int f = 0; f < 2; f++) {
      snprintf(path, sizeof path, files[f], strcmp(rel, "/") ? rel : "");
      ssize_t n = read_file(path, val, sizeof val);
      if (n > 0 && strncmp(val, "max", 3) && strtoull(val, NULL, 10) < (1ull << 50)) return 1;
    }
  }
  return 0;
}

int main(void) {
  dropin_name = "descriptors-reopened";
  watchdog(60);
  struct sysinfo si;
  if (sysinfo(&si) == 0 && ((unsigned long long)si.freeram + si.bufferram) * 2 < si.totalram)
    skip("less than half the machine's memory is free: prezero's workers read /proc/meminfo then");
  if (limited_cgroup()) skip("a memory cgroup limit: prezero's workers read its usage file");
  char own[64]; /* one per process: the glibc run of this test may run beside it */
  snprintf(own, sizeof own, "/tmp/prezero-dropin-descriptors-%d", (int)getpid());
  int w = open(own, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  if (w < 0 || write(w, "0123456789", 10) != 10) skip("cannot write %s", own);
  close(w);
  pthread_t t;
  if (pthread_create(&t, NULL, churn, NULL) != 0) skip("pthread_create failed");
  int expect = open("/dev/null", O_RDONLY);
  close(expect);
  long n = 0, wrong = 0, lost = 0, bad = 0;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  do {
    int fd = open("/dev/null", O_RDONLY);
    if (fd != expect) wrong++;
    close(fd);
    if (++n % 64 == 0) {
      syscall(SYS_close_range, 3u, ~0u, 0u);
      int f = open(own, O_RDONLY);
      char got[16] = {0};
      ssize_t r = f < 0 ? -1 : read(f, got, 10);
      if (r < 0 && errno == EBADF) lost++;
      else if (r != 10 || memcmp(got, "0123456789", 10)) {
        if (!bad++) note("first wrong read: descriptor %d, read %zd (%s), bytes \"%.10s\"", f, r,
                         r < 0 ? strerror(errno) : "ok", got);
      }
      if (f >= 0) close(f);
      expect = open("/dev/null", O_RDONLY);
      close(expect);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
  } while (b.tv_sec - a.tv_sec < 4);
  stop = 1;
  pthread_join(t, NULL);
  unlink(own);
  note("%ld opens, %ld not the lowest, %ld reads lost, %ld wrong", n, wrong, lost, bad);
  if (wrong) fail("open() returned another number than the lowest free descriptor %ld times in %ld opens", wrong, n);
  if (lost || bad) fail("the program's own file, reopened after close_range: %ld reads lost (EBADF), %ld wrong", lost, bad);
  return dropin_result();
}
