/* NUMA topology: nodes and their CPUs from /sys/devices/system/node, read
 * with raw syscalls into stack buffers (libnuma allocates, and this runs in
 * malloc's init). A machine without that directory is one node.
 * PREZERO_NODES keeps pools on the listed nodes only; CPUs of the other
 * nodes map to the first listed one. Memory is still bound (mbind) to its
 * pool's node whenever the machine has more than one. */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "os/os.h"

struct pz_topology pz_topo;

/* "0-3,8,10-11" -> bits */
static void parse_cpulist(const char *s, unsigned long *set) {
  while (*s >= '0' && *s <= '9') {
    unsigned a = 0, b;
    while (*s >= '0' && *s <= '9') a = a * 10 + (unsigned)(*s++ - '0');
    b = a;
    if (*s == '-') {
      s++;
      b = 0;
      while (*s >= '0' && *s <= '9') b = b * 10 + (unsigned)(*s++ - '0');
    }
    for (unsigned c = a; c <= b && c < PZ_CPUSET_WORDS * 64; c++) set[c / 64] |= 1ul << (c % 64);
    if (*s == ',') s++;
  }
}

void pz_topo_init(void) {
  char buf[1024], rel[96];
  memset(&pz_topo, 0, sizeof pz_topo);
  syscall(SYS_sched_getaffinity, 0, sizeof pz_topo.allowed, pz_topo.allowed);
  unsigned long nodes[PZ_CPUSET_WORDS] = {0};
  if (pz_probe_read(PZ_ROOT_SYS, "/devices/system/node/online", buf, sizeof buf) > 0) parse_cpulist(buf, nodes);
  unsigned long long want = (unsigned long long)pz_opt(PZ_OPT_NODES); /* 0: all */
  unsigned n = 0, machine = 0;
  for (unsigned k = 0; k < PZ_CPUSET_WORDS * 64 && n < PZ_MAX_NODES; k++) {
    if (!(nodes[k / 64] & (1ul << (k % 64)))) continue;
    pz_snprintf(rel, sizeof rel, "/devices/system/node/node%u/cpulist", k);
    if (pz_probe_read(PZ_ROOT_SYS, rel, buf, sizeof buf) <= 0) continue;
    machine++;
    if (want && (k >= 64 || !(want & (1ull << k)))) continue; /* its CPUs map to pool 0 */
    pz_topo.node_id[n] = k;
    parse_cpulist(buf, pz_topo.cpus[n]);
    for (unsigned c = 0; c < PZ_CPUSET_WORDS * 64; c++)
      if (pz_topo.cpus[n][c / 64] & (1ul << (c % 64))) pz_topo.cpu_node[c] = (int16_t)n;
    pz_snprintf(rel, sizeof rel, "/devices/system/node/node%u/meminfo", k);
    if (pz_probe_read(PZ_ROOT_SYS, rel, buf, sizeof buf) > 0) pz_topo.mem_total[n] = pz_probe_kb_field(buf, "MemTotal:");
    n++;
  }
  if (n == 0) { /* no NUMA information (or PREZERO_NODES named none that exists): one pool, every CPU */
    n = 1;
    pz_topo.node_id[0] = 0;
    memcpy(pz_topo.cpus[0], pz_topo.allowed, sizeof pz_topo.allowed);
    if (machine == 0) machine = 1;
  }
  pz_topo.nnodes = n;
  pz_topo.machine_nodes = machine;
}

unsigned pz_topo_current_node(void) {
  if (pz_topo.nnodes <= 1) return 0;
  unsigned cpu = 0;
  if (syscall(SYS_getcpu, &cpu, NULL, NULL) != 0 || cpu >= PZ_CPUSET_WORDS * 64) return 0;
  return (unsigned)pz_topo.cpu_node[cpu];
}

int pz_os_bind_node(void *p, size_t len, unsigned n) {
  if (pz_topo.machine_nodes <= 1) return 0;
  unsigned long mask[PZ_CPUSET_WORDS] = {0};
  unsigned id = pz_topo.node_id[n];
  mask[id / 64] = 1ul << (id % 64);
  int saved = errno;
  /* MPOL_PREFERRED = 1: node-local, falling back to other nodes when full */
  long r = syscall(SYS_mbind, p, len, 1, mask, (unsigned long)PZ_CPUSET_WORDS * 64, 0);
  int e = r ? errno : 0;
  errno = saved;
  return e;
}

int pz_os_pin_node(unsigned n) {
  unsigned long set[PZ_CPUSET_WORDS];
  bool any = false;
  for (unsigned i = 0; i < PZ_CPUSET_WORDS; i++) {
    set[i] = pz_topo.cpus[n][i] & pz_topo.allowed[i];
    any |= set[i] != 0;
  }
  if (!any) return EINVAL; /* the node's CPUs are outside our CPU set: stay unpinned */
  int saved = errno;
  long r = syscall(SYS_sched_setaffinity, 0, sizeof set, set);
  int e = r ? errno : 0;
  errno = saved;
  return e;
}
