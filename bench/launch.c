/*
 * bench-launch: run one workload and record its resource usage.
 *
 *   bench-launch RESULT_FILE PRELOAD|- PROGRAM [ARGS...]
 *
 * Forks, sets LD_PRELOAD=PRELOAD in the child (or removes LD_PRELOAD when
 * PRELOAD is "-"), execs PROGRAM, waits for it with wait4() and writes one
 * line to RESULT_FILE:
 *
 *   wall_ns=N utime_us=N stime_us=N maxrss_kib=N minflt=N majflt=N
 *   nvcsw=N nivcsw=N status=exit:CODE|signal:SIG
 *
 * Exits with the child's exit code (128+signal if it was killed).
 *
 * Why this exists: Linux accounts a process's ru_maxrss as the maximum of
 * its own peak RSS and the RSS of the address space it replaced at exec().
 * A child forked directly from the (comparatively large) Python harness
 * therefore reports at least the harness's RSS.  This launcher is tiny, so
 * the workload's ru_maxrss is accurate to within a few hundred KiB.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long long tv_us(struct timeval tv)
{
    return (long long)tv.tv_sec * 1000000 + (long long)tv.tv_usec;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s RESULT_FILE PRELOAD|- PROGRAM [ARGS...]\n", argv[0]);
        return 64;
    }
    const char *result = argv[1];
    const char *preload = argv[2];

    uint64_t t0 = now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        perror("bench-launch: fork");
        return 70;
    }
    if (pid == 0) {
        if (strcmp(preload, "-") == 0)
            unsetenv("LD_PRELOAD");
        else
            setenv("LD_PRELOAD", preload, 1);
        execv(argv[3], argv + 3);
        fprintf(stderr, "bench-launch: exec %s: %s\n", argv[3], strerror(errno));
        _exit(127);
    }

    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    pid_t w;
    while ((w = wait4(pid, &st, 0, &ru)) < 0 && errno == EINTR) {
    }
    uint64_t t1 = now_ns();
    if (w < 0) {
        perror("bench-launch: wait4");
        return 70;
    }

    char status[64];
    int code;
    if (WIFEXITED(st)) {
        code = WEXITSTATUS(st);
        snprintf(status, sizeof status, "exit:%d", code);
    } else if (WIFSIGNALED(st)) {
        code = 128 + WTERMSIG(st);
        snprintf(status, sizeof status, "signal:%d", WTERMSIG(st));
    } else {
        code = 70;
        snprintf(status, sizeof status, "unknown:%d", st);
    }

    FILE *f = fopen(result, "w");
    if (f == NULL) {
        perror("bench-launch: result file");
        return 70;
    }
    fprintf(f,
            "wall_ns=%llu utime_us=%lld stime_us=%lld maxrss_kib=%ld minflt=%ld majflt=%ld "
            "nvcsw=%ld nivcsw=%ld status=%s\n",
            (unsigned long long)(t1 - t0), tv_us(ru.ru_utime), tv_us(ru.ru_stime), ru.ru_maxrss,
            ru.ru_minflt, ru.ru_majflt, ru.ru_nvcsw, ru.ru_nivcsw, status);
    if (fclose(f) != 0) {
        perror("bench-launch: result file");
        return 70;
    }
    return code;
}
