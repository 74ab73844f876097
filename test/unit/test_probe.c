/* The kernel probe against fake kernels: sysfs and proc trees written into
 * a temporary directory and read through PREZERO_SYSFS_ROOT /
 * PREZERO_PROC_ROOT, as the library does at start. Userfaultfd is taken
 * away for real, with a seccomp filter in a child process. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/api.h"

static char root[256];
static char sys_env[300], proc_env[300], nodes_env[64];

/* Write `text` to root/rel, making the directories on the way. */
static void put(const char *rel, const char *fmt, ...) {
  char path[1024];
  snprintf(path, sizeof path, "%s%s", root, rel);
  for (char *s = path + strlen(root) + 1; (s = strchr(s, '/')) != NULL; s++) {
    *s = 0;
    mkdir(path, 0755);
    *s = '/';
  }
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fclose(f);
}

static int fresh_root(void **state) {
  (void)state;
  snprintf(root, sizeof root, "/tmp/pz-probe-XXXXXX");
  assert_non_null(mkdtemp(root));
  return 0;
}

static int remove_root(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  assert_int_equal(system(cmd), 0);
  /* the rest of the process sees the real kernel again */
  pz_options_load(NULL, false);
  pz_probe_kernel();
  pz_topo_init();
  return 0;
}

/* Probe the fake kernel under root (sys/ and proc/), with extra variables. */
static void probe(const char *extra) {
  snprintf(sys_env, sizeof sys_env, "PREZERO_SYSFS_ROOT=%s/sys", root);
  snprintf(proc_env, sizeof proc_env, "PREZERO_PROC_ROOT=%s/proc", root);
  snprintf(nodes_env, sizeof nodes_env, "%s", extra ? extra : "X=1");
  char *env[] = {sys_env, proc_env, nodes_env, NULL};
  assert_int_equal(pz_options_load(env, false), 0);
  pz_probe_kernel();
  pz_topo_init();
}

static void thp(const char *enabled, const char *defrag) {
  put("/sys/kernel/mm/transparent_hugepage/enabled", "%s\n", enabled);
  put("/sys/kernel/mm/transparent_hugepage/defrag", "%s\n", defrag);
  put("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "2097152\n");
}

static void thp_modes(void **state) {
  (void)state;
  thp("[always] madvise never", "always defer defer+madvise [madvise] never");
  put("/sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled", "[always] inherit madvise never\n");
  put("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled", "always [inherit] madvise never\n");
  put("/sys/kernel/mm/transparent_hugepage/hugepages-16kB/enabled", "always inherit madvise [never]\n");
  probe(NULL);
  assert_int_equal(pz_kernel.thp_enabled, PZ_THP_ALWAYS);
  assert_int_equal(pz_kernel.thp_defrag, PZ_THP_MADVISE);
  assert_int_equal(pz_kernel.pmd_size, 2 << 20);
  assert_true(pz_kernel.thp_usable);
  assert_int_equal(pz_kernel.mthp_orders, (1u << 4) | (1u << 9) | (1u << 2));
  assert_int_equal(pz_kernel.mthp_enabled, (1u << 4) | (1u << 9)); /* 2 MiB inherits "always" */

  thp("always [madvise] never", "always [defer] defer+madvise madvise never");
  probe(NULL);
  assert_int_equal(pz_kernel.thp_enabled, PZ_THP_MADVISE);
  assert_int_equal(pz_kernel.thp_defrag, PZ_THP_DEFER);
  assert_true(pz_kernel.thp_usable);

  thp("always madvise [never]", "always defer defer+madvise madvise [never]");
  probe(NULL);
  assert_int_equal(pz_kernel.thp_enabled, PZ_THP_NEVER);
  assert_false(pz_kernel.thp_usable); /* 4 KiB pages */
  assert_int_equal(pz_kernel.mthp_enabled, 1u << 4); /* 64 kB says always itself */
}

static void no_thp_at_all(void **state) {
  (void)state;
  put("/proc/meminfo", "MemTotal:       1000 kB\n");
  probe(NULL);
  assert_int_equal(pz_kernel.thp_enabled, PZ_THP_UNKNOWN);
  assert_int_equal(pz_kernel.pmd_size, 0);
  assert_false(pz_kernel.thp_usable);
  assert_int_equal(pz_kernel.mthp_orders, 0);
  assert_int_equal(pz_kernel.reporting_order, -1);
  assert_false(pz_kernel.kernel_prezeroes);
  assert_int_equal(pz_kernel.cgroup_max, SIZE_MAX);
  assert_int_equal(pz_release_align(), 2 << 20);
  assert_int_equal(pz_topo.nnodes, 1); /* no node directory: one node */
}

static void page_reporting_orders(void **state) {
  (void)state;
  put("/sys/module/page_reporting/parameters/page_reporting_order", "9\n");
  probe(NULL);
  assert_int_equal(pz_kernel.reporting_order, 9);
  assert_int_equal(pz_release_align(), 2 << 20);
  put("/sys/module/page_reporting/parameters/page_reporting_order", "10\n");
  probe(NULL);
  assert_int_equal(pz_kernel.reporting_order, 10);
  assert_int_equal(pz_release_align(), 4 << 20); /* releases in aligned 4 MiB blocks */
  /* 11 is MAX_ORDER on 6.1: the placeholder the parameter holds until a
   * reporting device (virtio-balloon) sets it; newer kernels hold -1 */
  put("/sys/module/page_reporting/parameters/page_reporting_order", "11\n");
  probe(NULL);
  assert_int_equal(pz_kernel.reporting_order, -1);
  assert_int_equal(pz_kernel.reporting_order_raw, 11);
  assert_int_equal(pz_release_align(), 2 << 20);
  put("/sys/module/page_reporting/parameters/page_reporting_order", "4294967295\n");
  probe(NULL);
  assert_int_equal(pz_kernel.reporting_order, -1);
  assert_int_equal(pz_release_align(), 2 << 20);
}

static void prezeroing_kernels(void **state) {
  (void)state;
  put("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/vda1 init_on_alloc=0 quiet\n");
  probe(NULL);
  assert_false(pz_kernel.kernel_prezeroes);
  assert_false(pz_kernel.init_on_alloc);
  put("/proc/cmdline", "BOOT_IMAGE=/vmlinuz init_on_free=1 init_on_alloc=1\n");
  probe(NULL);
  assert_true(pz_kernel.init_on_free);
  assert_true(pz_kernel.init_on_alloc);
  assert_true(pz_kernel.kernel_prezeroes);
  put("/proc/cmdline", "quiet noinit_on_free=1 init_on_free=0\n"); /* a look-alike and an off */
  probe(NULL);
  assert_false(pz_kernel.init_on_free);
  assert_false(pz_kernel.kernel_prezeroes);
  /* the seed's series: /sys/kernel/mm/zero_page */
  put("/sys/kernel/mm/zero_page/enabled", "0\n");
  probe(NULL);
  assert_false(pz_kernel.kernel_prezeroes);
  put("/sys/kernel/mm/zero_page/enabled", "1\n");
  put("/sys/kernel/mm/zero_page/batch_size", "67108864\n");
  put("/sys/kernel/mm/zero_page/delay_millisecs", "1000\n");
  probe(NULL);
  assert_true(pz_kernel.zero_page);
  assert_int_equal(pz_kernel.zero_page_batch, 64 << 20);
  assert_int_equal(pz_kernel.zero_page_delay_ms, 1000);
  assert_true(pz_kernel.kernel_prezeroes);
  put("/sys/kernel/mm/zero_page/enabled", "0\n");
  put("/sys/module/kzerod/parameters/enabled", "Y\n"); /* openEuler */
  probe(NULL);
  assert_true(pz_kernel.kzerod);
  assert_true(pz_kernel.kernel_prezeroes);
  put("/sys/module/kzerod/parameters/enabled", "N\n");
  put("/sys/module/virtio_balloon/parameters/host_zeroes_pages", "1\n");
  probe(NULL);
  assert_true(pz_kernel.host_zeroes_pages);
  assert_true(pz_kernel.kernel_prezeroes);
  put("/sys/module/virtio_balloon/parameters/host_zeroes_pages", "0\n");
  put("/sys/devices/system/node/node0/hugepages/hugepages-2048kB/zeroable_hugepages", "0\n");
  probe(NULL);
  assert_true(pz_kernel.zeroable_hugepages);
  assert_true(pz_kernel.kernel_prezeroes);
}

static void cgroup_v2_limits(void **state) {
  (void)state;
  put("/proc/self/cgroup", "0::/a/b\n");
  put("/sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
  put("/sys/fs/cgroup/a/memory.max", "1073741824\n");
  put("/sys/fs/cgroup/a/memory.high", "max\n");
  put("/sys/fs/cgroup/a/b/memory.max", "max\n");
  put("/sys/fs/cgroup/a/b/memory.high", "536870912\n");
  put("/sys/fs/cgroup/a/b/memory.current", "123456789\n");
  probe(NULL);
  assert_true(pz_kernel.cgroup_v2);
  assert_int_equal(pz_kernel.cgroup_max, 1 << 30);
  assert_int_equal(pz_kernel.cgroup_high, 512 << 20);
  assert_string_equal(pz_kernel.cgroup_usage, "/fs/cgroup/a/b/memory.current"); /* the tighter one */
  assert_int_equal(pz_probe_cgroup_usage(), 123456789);
}

static void cgroup_v2_hybrid_and_unlimited(void **state) {
  (void)state;
  put("/proc/self/cgroup", "1:name=systemd:/\n0::/job\n");
  put("/sys/fs/cgroup/unified/job/memory.max", "max\n");
  probe(NULL);
  assert_int_equal(pz_kernel.cgroup_max, SIZE_MAX);
  assert_int_equal(pz_kernel.cgroup_usage[0], 0);
  put("/sys/fs/cgroup/unified/job/memory.max", "2147483648\n");
  probe(NULL);
  assert_int_equal(pz_kernel.cgroup_max, 2ul << 30);
}

static void cgroup_v1_limits(void **state) {
  (void)state;
  put("/proc/self/cgroup", "5:cpu,cpuacct:/x\n4:memory:/x/y\n0::/\n");
  put("/sys/fs/cgroup/memory/x/memory.limit_in_bytes", "805306368\n");
  put("/sys/fs/cgroup/memory/x/y/memory.limit_in_bytes", "9223372036854771712\n"); /* unlimited */
  put("/sys/fs/cgroup/memory/x/memory.usage_in_bytes", "1000\n");
  probe(NULL);
  assert_false(pz_kernel.cgroup_v2);
  assert_int_equal(pz_kernel.cgroup_max, 768 << 20);
  assert_int_equal(pz_probe_cgroup_usage(), 1000);
}

static void memory_available(void **state) {
  (void)state;
  put("/proc/meminfo", "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   12000000 kB\n");
  probe(NULL);
  assert_int_equal(pz_kernel.mem_total, 24000000ul << 10);
  assert_int_equal(pz_kernel.mem_available, 12000000ul << 10);
}

static void numa_nodes(void **state) {
  (void)state;
  put("/sys/devices/system/node/online", "0\n");
  put("/sys/devices/system/node/node0/cpulist", "0-1\n");
  put("/sys/devices/system/node/node0/meminfo", "Node 0 MemTotal:  1048576 kB\n");
  probe(NULL);
  assert_int_equal(pz_topo.nnodes, 1);
  assert_int_equal(pz_topo.machine_nodes, 1);
  assert_int_equal(pz_topo.mem_total[0], 1ul << 30);

  put("/sys/devices/system/node/online", "0-3\n");
  for (int n = 0; n < 4; n++) {
    char rel[96];
    snprintf(rel, sizeof rel, "/sys/devices/system/node/node%d/cpulist", n);
    put(rel, "%d-%d\n", 4 * n, 4 * n + 3);
  }
  probe(NULL);
  assert_int_equal(pz_topo.nnodes, 4);
  assert_int_equal(pz_topo.node_id[3], 3);
  assert_int_equal(pz_topo.cpu_node[13], 3);
  assert_int_equal(pz_topo.cpu_node[4], 1);

  probe("PREZERO_NODES=1,3"); /* pools on two of them: CPUs elsewhere use the first */
  assert_int_equal(pz_topo.nnodes, 2);
  assert_int_equal(pz_topo.machine_nodes, 4);
  assert_int_equal(pz_topo.node_id[0], 1);
  assert_int_equal(pz_topo.node_id[1], 3);
  assert_int_equal(pz_topo.cpu_node[13], 1);
  assert_int_equal(pz_topo.cpu_node[5], 0);
  assert_int_equal(pz_topo.cpu_node[0], 0);
  assert_int_equal(pz_topo.cpu_node[9], 0);

  probe("PREZERO_NODES=7"); /* names no node that exists: one pool, every CPU */
  assert_int_equal(pz_topo.nnodes, 1);
  assert_int_equal(pz_topo.machine_nodes, 4);
}

/* userfaultfd taken away (seccomp: ENOSYS), as in a container that
 * blocks it: the probe records it and nothing else changes. */
static void no_userfaultfd(void **state) {
  (void)state;
  put("/proc/sys/vm/unprivileged_userfaultfd", "0\n");
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_userfaultfd, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) _exit(3);
    probe(NULL);
    _exit(pz_kernel.uffd == ENOSYS && pz_kernel.uffd_user_mode == ENOSYS && pz_kernel.uffd_features == 0 &&
                  pz_kernel.unprivileged_uffd == 0 && pz_kernel.populate_write
              ? 0
              : 1);
  }
  int st;
  waitpid(pid, &st, 0);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(thp_modes, fresh_root, remove_root),
      cmocka_unit_test_setup_teardown(no_thp_at_all, fresh_root, remove_root),
      cmocka_unit_test_setup_teardown(page_reporting_orders, fresh_root, remove_root),
      cmocka_unit_test_setup_teardown(prezeroing_kernels, fresh_root, remove_root),
      cmocka_unit_test_setup_teardown(cgroup_v2_limits, fresh_root, remove_root),
      cmocka_unit_test_setup_teardown(cgroup_v2_hybrid_and_unlimited, fresh_root, remove_root),
      cmocka_unit_test_setup_teardown(cgroup_v1_limits, fresh_root, remove_root),
      cmocka_unit_test_setup_teardown(memory_available, fresh_root, remove_root),
      cmocka_unit_test_setup_teardown(numa_nodes, fresh_root, remove_root),
      cmocka_unit_test_setup_teardown(no_userfaultfd, fresh_root, remove_root),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
