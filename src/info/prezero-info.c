/* prezero-info: what the kernel probe found on this machine, what prezero
 * decides from it, the NUMA topology, and the effective configuration
 * (every PREZERO_* variable, its value and where the value came from). The
 * first thing to paste into a bug report, as `numactl --hardware` is for
 * NUMA. With --pid PID: the live statistics and pools of a running process
 * that uses prezero (preloaded or linked).
 *
 * This is an ordinary program (stdio, glibc's malloc, libnuma): it runs the
 * same probe the library runs at start, from the static core. The library
 * never links libnuma; only this program does.
 *
 * --pid reads the snapshot the process publishes (struct pz_snapshot in
 * internal.h, refreshed by its pool workers at most once a second while they
 * work, and by each prezero_stats_get() call): it finds libprezero in
 * /proc/PID/maps, the address of the exported symbol `prezero_snapshot` in
 * that file's ELF dynamic symbol table (parsed here with <elf.h>), adds the
 * load address, and copies the struct with process_vm_readv (which needs
 * ptrace access to the process), again until the seqlock says it was not
 * being written. */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <numa.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "kabi.h"

extern char **environ;
const int pz_inspect_only = 1; /* the core's constructor only initialises */

static const char *yes(bool b) { return b ? "yes" : "no"; }

static const char *human(unsigned long long v, char *buf, size_t cap) {
  static const char units[] = "KMGTP";
  if (v == 0 || v % 1024) {
    snprintf(buf, cap, "%llu", v);
    return buf;
  }
  int u = -1;
  while (v % 1024 == 0 && v >= 1024 && u < 4) v /= 1024, u++;
  snprintf(buf, cap, "%llu%c", v, units[u]);
  return buf;
}

static const char *gib(size_t v, char *buf, size_t cap) {
  if (v >= (1ull << 30)) snprintf(buf, cap, "%.1f GiB", (double)v / (1 << 30));
  else snprintf(buf, cap, "%zu MiB", v >> 20);
  return buf;
}

static const char *limit(size_t v, char *buf, size_t cap) {
  return v == SIZE_MAX ? "none" : gib(v, buf, cap);
}

/* Every file in a sysfs parameters directory, "name=value" on one line. */
static void params(const char *dir) {
  char path[600];
  pz_probe_path(PZ_ROOT_SYS, dir, path, sizeof path);
  DIR *d = opendir(path);
  if (!d) return;
  struct dirent *e;
  int k = 0;
  printf("                             ");
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char f[900], val[128] = "";
    snprintf(f, sizeof f, "%s/%s", path, e->d_name);
    FILE *fp = fopen(f, "r");
    if (fp) {
      if (fgets(val, sizeof val, fp)) val[strcspn(val, "\n")] = 0;
      fclose(fp);
    }
    printf("%s%s=%s", k++ ? " " : "", e->d_name, val);
  }
  closedir(d);
  printf("\n");
}

static void print_probe(void) {
  char a[64], b[64];
  struct pz_kernel *k = &pz_kernel;
  printf("kernel probe\n");
  printf("  page size                  %zu\n", k->page_size);
  printf("  THP enabled                %s (defrag: %s), PMD size %s\n", pz_thp_mode_name(k->thp_enabled),
         pz_thp_mode_name(k->thp_defrag), k->pmd_size ? human(k->pmd_size, a, sizeof a) : "unknown");
  if (k->mthp_orders) {
    printf("  multi-size THP             offered:");
    for (unsigned o = 0; o < 32; o++)
      if (k->mthp_orders & (1u << o)) printf(" %s", human(4096ull << o, a, sizeof a));
    printf("; enabled:");
    if (!k->mthp_enabled) printf(" none");
    for (unsigned o = 0; o < 32; o++)
      if (k->mthp_enabled & (1u << o)) printf(" %s", human(4096ull << o, a, sizeof a));
    printf("\n");
  } else {
    printf("  multi-size THP             no (kernel before 6.8, or THP off)\n");
  }
  printf("  MADV_POPULATE_WRITE        %s\n", yes(k->populate_write));
  printf("  MADV_COLLAPSE              %s\n", k->collapse < 0 ? "not probed" : yes(k->collapse));
  printf("  PAGEMAP_SCAN               %s\n", yes(k->pagemap_scan));
  printf("  userfaultfd(2)             %s; with UFFD_USER_MODE_ONLY: %s; /dev/userfaultfd: %s; "
         "vm.unprivileged_userfaultfd: %d\n",
         k->uffd ? strerror(k->uffd) : "yes", k->uffd_user_mode ? strerror(k->uffd_user_mode) : "yes",
         yes(k->uffd_dev), k->unprivileged_uffd);
  if (!k->uffd || !k->uffd_user_mode)
    printf("                             features 0x%llx (WP_ASYNC: %s, MOVE: %s), ioctls 0x%llx\n",
           (unsigned long long)k->uffd_features, yes(k->uffd_features & UFFD_FEATURE_WP_ASYNC),
           yes(k->uffd_features & UFFD_FEATURE_MOVE), (unsigned long long)k->uffd_ioctls);
  const char *why = pz_uffd_why_not();
  printf("                             served mmaps: %s%s\n",
         why ? "ready run moved in with mremap; userfaultfd not used: " : "first touches answered by moving ready huge pages in (UFFDIO_MOVE)",
         why ? why : "");
  if (k->reporting_order >= 0) {
    printf("  free page reporting        order %d (%s blocks)\n", k->reporting_order,
           human((unsigned long long)k->page_size << k->reporting_order, a, sizeof a));
    params("/module/page_reporting/parameters");
  } else if (k->reporting_order_raw >= 0) {
    printf("  free page reporting        not active (page_reporting_order %d: no reporting device set it)\n",
           k->reporting_order_raw);
    params("/module/page_reporting/parameters");
  } else {
    printf("  free page reporting        no (no page_reporting module)\n");
  }
  printf("  kernel pre-zeroes pages    %s (init_on_free: %s, zero_page: %s, kzerod: %s, "
         "host_zeroes_pages: %s, zeroable_hugepages: %s)\n",
         yes(k->kernel_prezeroes), yes(k->init_on_free), yes(k->zero_page), yes(k->kzerod),
         yes(k->host_zeroes_pages), yes(k->zeroable_hugepages));
  if (k->zero_page)
    printf("                             zero_page batch_size %zu, delay %u ms\n", k->zero_page_batch,
           k->zero_page_delay_ms);
  printf("  init_on_alloc              %s\n", yes(k->init_on_alloc));
  printf("  memory                     MemTotal %s, MemAvailable %s\n", gib(k->mem_total, a, sizeof a),
         gib(k->mem_available, b, sizeof b));
  printf("  cgroup memory limit        %s (v%d): max %s, high %s", k->cgroup_usage[0] ? "set" : "none",
         k->cgroup_v2 ? 2 : 1, limit(k->cgroup_max, a, sizeof a), limit(k->cgroup_high, b, sizeof b));
  if (k->cgroup_usage[0]) printf(", usage now %s", gib(pz_probe_cgroup_usage(), a, sizeof a));
  printf("\n");
  printf("  CPUs usable                %u\n", k->ncpus);
  printf("  NUMA                       %u node(s) on the machine, pools on %u:", pz_topo.machine_nodes,
         pz_topo.nnodes);
  for (unsigned n = 0; n < pz_topo.nnodes; n++) printf(" %u", pz_topo.node_id[n]);
  printf(" (PREZERO_NODES %s; topology below)\n", pz_opt_strs[PZ_OPT_NODES] ? pz_opt_strs[PZ_OPT_NODES] : "all");
}

/* The NUMA topology as `numactl --hardware` prints it, from libnuma. */
static void print_topology(void) {
  printf("NUMA topology (libnuma)\n");
  if (numa_available() < 0) {
    printf("  No NUMA available on this system: one node, every CPU\n");
    return;
  }
  int max = numa_max_node();
  struct bitmask *cpus = numa_allocate_cpumask();
  int nodes = 0;
  char list[256] = "";
  size_t ln = 0;
  for (int n = 0; n <= max; n++) { /* "0-3,6" as numactl writes it */
    if (!numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)n)) continue;
    int e = n;
    while (e + 1 <= max && numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)e + 1)) e++;
    nodes += e - n + 1;
    ln += (size_t)snprintf(list + ln, ln < sizeof list ? sizeof list - ln : 0, "%s%d", ln ? "," : "", n);
    if (e > n) ln += (size_t)snprintf(list + ln, ln < sizeof list ? sizeof list - ln : 0, "-%d", e);
    n = e;
  }
  printf("  available: %d nodes (%s)\n", nodes, list);
  for (int n = 0; n <= max; n++) {
    if (!numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)n)) continue;
    printf("  node %d cpus:", n);
    if (numa_node_to_cpus(n, cpus) == 0)
      for (unsigned c = 0; c < cpus->size; c++)
        if (numa_bitmask_isbitset(cpus, c)) printf(" %u", c);
    printf("\n");
    long long free_b = -1, size = numa_node_size64(n, &free_b);
    printf("  node %d size: %lld MB\n", n, size < 0 ? -1 : size >> 20);
    printf("  node %d free: %lld MB\n", n, free_b < 0 ? -1 : free_b >> 20);
  }
  numa_free_cpumask(cpus);
  printf("  node distances:\n  node ");
  for (int n = 0; n <= max; n++)
    if (numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)n)) printf("%3d ", n);
  printf("\n");
  for (int a = 0; a <= max; a++) {
    if (!numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)a)) continue;
    printf("  %3d: ", a);
    for (int b = 0; b <= max; b++)
      if (numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)b)) printf("%3d ", numa_distance(a, b));
    printf("\n");
  }
}

static void print_decisions(void) {
  char a[64];
  bool thp = pz_opt(PZ_OPT_THP) != PZ_THP_OPT_NEVER &&
             (pz_kernel.thp_usable || pz_opt(PZ_OPT_THP) == PZ_THP_OPT_ALWAYS);
  printf("what prezero does here\n");
  printf("  chunk pages                %s\n",
         thp ? "2 MiB transparent huge pages (MADV_HUGEPAGE)"
         : pz_opt(PZ_OPT_THP) == PZ_THP_OPT_NEVER ? "4 KiB pages (PREZERO_THP=never)"
                                                  : "4 KiB pages (THP is off or the PMD size is not 2 MiB)");
  printf("  pre-faulting               %s\n",
         pz_kernel.populate_write ? "MADV_POPULATE_WRITE" : "touching one byte per page");
  printf("  recycling freed chunks     %s\n",
         !pz_opt(PZ_OPT_ZERO) ? "off (PREZERO_ZERO=0): calloc zeroes inline"
         : pz_kernel.kernel_prezeroes ? "give back and fault in again (the kernel pre-zeroes freed pages)"
                                      : "zeroed by background workers with streaming stores");
  printf("  zeroing method             %s\n", pz_zero_method_name());
  printf("  returning memory           MADV_DONTNEED in ranges of at least %lld chunks, aligned to %s\n",
         pz_opt(PZ_OPT_REPORT_BATCH), human(pz_release_align(), a, sizeof a));
  printf("  huge-page coverage stats   %s\n",
         pz_kernel.pagemap_scan ? "PAGEMAP_SCAN over the pool" : "/proc/self/smaps_rollup (whole process)");
}

static void print_options(bool secure) {
  printf("configuration%s\n", secure ? " (secure execution: PREZERO_* variables are ignored)" : "");
  for (int i = 0; i < PZ_OPT__COUNT; i++) {
    const struct pz_option_desc *d = &pz_option_table[i];
    char v[96], name[64];
    long long x = pz_opts[i];
    switch (d->kind) {
    case PZ_OK_BOOL: snprintf(v, sizeof v, "%lld", x); break;
    case PZ_OK_ENUM: snprintf(v, sizeof v, "%s", d->choices[x]); break;
    case PZ_OK_SIZE: human((unsigned long long)x, v, sizeof v); break;
    case PZ_OK_COUNT: snprintf(v, sizeof v, "%lld", x); break;
    case PZ_OK_NODES:
    case PZ_OK_PATH:
    case PZ_OK_TEXT: snprintf(v, sizeof v, "%s", pz_opt_strs[i] ? pz_opt_strs[i] : d->kind == PZ_OK_NODES ? "all" : "-"); break;
    }
    snprintf(name, sizeof name, "PREZERO_%s", d->name);
    printf("  %-26s %-10s %s\n", name, v, pz_opt_source_name((enum pz_opt_source)pz_opt_sources[i]));
  }
}

/* ---------------------------------------------------------------- --pid: another process's snapshot */

static pid_t target;

/* pid's number in its own PID namespace (what its getpid() returns, and
 * what its snapshot holds): the last of /proc/PID/status's NSpid. */
static pid_t own_pid(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  pid_t last = pid;
  if (!f) return pid;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "NSpid:", 6)) {
      char *save = NULL;
      for (char *t = strtok_r(line + 6, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save)) last = (pid_t)atoi(t);
      break;
    }
  fclose(f);
  return last;
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "prezero-info: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  return 1;
}

static int fail_access(const char *what, int e) {
  if (e == ESRCH || e == ENOENT) return fail("no such process: %d", (int)target);
  if (e == EPERM || e == EACCES)
    return fail("permission denied: %s of process %d needs ptrace access to it (the same user, not setuid, "
                "and kernel.yama.ptrace_scope allowing it, or CAP_SYS_PTRACE: try as root)",
                what, (int)target);
  return fail("%s of process %d: %s", what, (int)target, strerror(e));
}

#if defined(__x86_64__)
#define OUR_EM EM_X86_64
#elif defined(__aarch64__)
#define OUR_EM EM_AARCH64
#else
#define OUR_EM 0
#endif

/* One loaded object, from its mapping at file offset 0 in /proc/PID/maps. */
struct object {
  unsigned long start, end;
  unsigned long inode;
  char path[PATH_MAX];
  bool deleted; /* " (deleted)": replaced on disk since it was loaded */
};

/* The address of `name` in the dynamic symbol table of the ELF file fd
 * mapped at `start` (file offset 0) in the process, or 0. *why: what was
 * wrong with the file when it is not an object of our kind. */
static uint64_t elf_symbol(int fd, unsigned long start, const char *name, uint64_t *size, const char **why) {
  struct stat sb;
  if (fstat(fd, &sb) != 0 || sb.st_size < (off_t)sizeof(Elf64_Ehdr)) return *why = "not an ELF file", 0;
  size_t len = (size_t)sb.st_size;
  const unsigned char *f = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
  if (f == MAP_FAILED) return *why = "cannot be mapped", 0;
  uint64_t addr = 0;
  const Elf64_Ehdr *eh = (const void *)f;
#define IN_FILE(off, n) ((uint64_t)(off) <= len && (uint64_t)(n) <= len - (uint64_t)(off))
  if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
      eh->e_ident[EI_DATA] != ELFDATA2LSB || (OUR_EM && eh->e_machine != OUR_EM)) {
    *why = "not a 64-bit little-endian ELF object of this machine";
    goto out;
  }
  /* the load bias: where the segment at file offset 0 is, minus its address in the file */
  if (eh->e_phentsize != sizeof(Elf64_Phdr) || !IN_FILE(eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr))) {
    *why = "bad program headers";
    goto out;
  }
  const Elf64_Phdr *ph = (const void *)(f + eh->e_phoff);
  uint64_t bias = 0;
  bool found = false;
  for (unsigned i = 0; i < eh->e_phnum && !found; i++)
    if (ph[i].p_type == PT_LOAD && ph[i].p_offset == 0) {
      bias = start - (ph[i].p_vaddr & ~(uint64_t)(sysconf(_SC_PAGESIZE) - 1));
      found = true;
    }
  if (!found) {
    *why = "no segment at file offset 0";
    goto out;
  }
  if (eh->e_shentsize != sizeof(Elf64_Shdr) || !IN_FILE(eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr))) {
    *why = "bad section headers";
    goto out;
  }
  const Elf64_Shdr *sh = (const void *)(f + eh->e_shoff);
  *why = "no dynamic symbol of that name";
  for (unsigned i = 0; i < eh->e_shnum; i++) {
    if (sh[i].sh_type != SHT_DYNSYM || sh[i].sh_link >= eh->e_shnum) continue;
    const Elf64_Shdr *strs = &sh[sh[i].sh_link];
    if (!IN_FILE(sh[i].sh_offset, sh[i].sh_size) || !IN_FILE(strs->sh_offset, strs->sh_size) ||
        sh[i].sh_entsize != sizeof(Elf64_Sym))
      continue;
    const Elf64_Sym *sym = (const void *)(f + sh[i].sh_offset);
    const char *str = (const char *)(f + strs->sh_offset);
    for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Sym); k++) {
      if (sym[k].st_name >= strs->sh_size || sym[k].st_shndx == SHN_UNDEF) continue;
      if (strncmp(str + sym[k].st_name, name, strs->sh_size - sym[k].st_name)) continue;
      addr = bias + sym[k].st_value;
      *size = sym[k].st_size;
      goto out;
    }
  }
out:
#undef IN_FILE
  munmap((void *)f, len);
  return addr;
}

/* Open the file of a loaded object as the process sees it: its map_files
 * link (the very file, even deleted; needs CAP_SYS_ADMIN or
 * CAP_CHECKPOINT_RESTORE), else its path under /proc/PID/root (the
 * process's mount namespace), else the path; the inode must match. */
static int open_object(const struct object *o) {
  char p[PATH_MAX + 64];
  snprintf(p, sizeof p, "/proc/%d/map_files/%lx-%lx", (int)target, o->start, o->end);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) return fd;
  for (int k = 0; k < 2; k++) {
    if (k == 0) snprintf(p, sizeof p, "/proc/%d/root%s", (int)target, o->path);
    else snprintf(p, sizeof p, "%s", o->path);
    fd = open(p, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd >= 0 && fstat(fd, &sb) == 0 && (unsigned long)sb.st_ino == o->inode) return fd;
    if (fd >= 0) close(fd);
  }
  return -1;
}

static int read_mem(uint64_t addr, void *buf, size_t len) {
  struct iovec l = {buf, len}, r = {(void *)(uintptr_t)addr, len};
  ssize_t n = process_vm_readv(target, &l, 1, &r, 1, 0);
  if (n == (ssize_t)len) return 0;
  return n < 0 ? errno : EFAULT;
}

static double age_s(const struct pz_snapshot *s) {
  /* CLOCK_MONOTONIC is the same for both unless they are in different time namespaces */
  char a[64], b[64];
  struct stat sa, sb;
  snprintf(a, sizeof a, "/proc/%d/ns/time", (int)target);
  snprintf(b, sizeof b, "/proc/self/ns/time");
  struct timespec ts;
  if (stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_ino == sb.st_ino) {
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ((double)ts.tv_sec * 1e9 + (double)ts.tv_nsec - (double)s->taken_mono_ns) / 1e9;
  }
  clock_gettime(CLOCK_REALTIME, &ts);
  return ((double)ts.tv_sec * 1e9 + (double)ts.tv_nsec - (double)s->taken_real_ns) / 1e9;
}

static void smaps_rollup(struct prezero_stats *st) {
  char p[64], l[256];
  snprintf(p, sizeof p, "/proc/%d/smaps_rollup", (int)target);
  FILE *f = fopen(p, "r");
  if (!f) return;
  unsigned long long kb;
  while (fgets(l, sizeof l, f)) {
    if (sscanf(l, "Anonymous: %llu kB", &kb) == 1) st->anon_bytes = kb << 10;
    if (sscanf(l, "AnonHugePages: %llu kB", &kb) == 1) st->anon_huge_bytes = kb << 10;
  }
  fclose(f);
}

static int show_pid(const char *arg) {
  char *end;
  long v = strtol(arg, &end, 10);
  if (*arg == 0 || *end || v <= 0 || v > INT_MAX) return fail("--pid wants a process id, not '%s'", arg);
  target = (pid_t)v;
  if (kill(target, 0) != 0 && errno == ESRCH) return fail_access("", ESRCH);
  char p[64], comm[64] = "?";
  snprintf(p, sizeof p, "/proc/%d/comm", (int)target);
  FILE *f = fopen(p, "r");
  if (f) {
    if (fgets(comm, sizeof comm, f)) comm[strcspn(comm, "\n")] = 0;
    fclose(f);
  }
  snprintf(p, sizeof p, "/proc/%d/maps", (int)target);
  f = fopen(p, "r");
  if (!f) return fail_access("reading the memory map", errno);
  /* the objects: mapped at file offset 0; the ones named *prezero* first */
  struct object *objs = NULL;
  size_t nobj = 0, cap = 0;
  char *line = NULL;
  size_t lcap = 0;
  bool named = false;
  while (getline(&line, &lcap, f) > 0) {
    unsigned long start, endv, off, inode;
    int pos = 0;
    if (sscanf(line, "%lx-%lx %*s %lx %*s %lu %n", &start, &endv, &off, &inode, &pos) < 4 || !pos) continue;
    char *path = line + pos;
    path[strcspn(path, "\n")] = 0;
    if (off != 0 || path[0] != '/' || inode == 0) continue;
    bool dup = false;
    for (size_t i = 0; i < nobj && !dup; i++) dup = objs[i].inode == inode && !strcmp(objs[i].path, path);
    if (dup) continue;
    if (nobj == cap) {
      cap = cap ? cap * 2 : 64;
      objs = realloc(objs, cap * sizeof *objs);
      if (!objs) return fail("out of memory");
    }
    struct object *o = &objs[nobj++];
    o->start = start;
    o->end = endv;
    o->inode = inode;
    size_t pl = strlen(path);
    o->deleted = pl > 10 && !strcmp(path + pl - 10, " (deleted)");
    if (o->deleted) path[pl - 10] = 0;
    snprintf(o->path, sizeof o->path, "%s", path);
    const char *base = strrchr(o->path, '/') + 1;
    if (strstr(base, "prezero")) {
      named = true;
      struct object t = *o; /* to the front */
      memmove(objs + 1, objs, (nobj - 1) * sizeof *objs);
      objs[0] = t;
    }
  }
  free(line);
  int e = errno;
  bool bad = ferror(f);
  fclose(f);
  if (bad) return fail_access("reading the memory map", e);
  if (nobj == 0) return fail("process %d (%s) has no loaded objects (a kernel thread?)", (int)target, comm);
  uint64_t addr = 0, size = 0;
  const struct object *lib = NULL;
  const char *why = NULL, *lib_why = NULL;
  for (size_t i = 0; i < nobj && !addr; i++) {
    int fd = open_object(&objs[i]);
    bool ours = strstr(strrchr(objs[i].path, '/'), "prezero") != NULL;
    if (fd < 0) {
      if (ours)
        lib_why = objs[i].deleted ? "it was replaced on disk since it was loaded (deleted), and its old file "
                                    "cannot be opened (/proc/PID/map_files needs CAP_SYS_ADMIN)"
                                  : "its file cannot be opened";
      continue;
    }
    addr = elf_symbol(fd, objs[i].start, "prezero_snapshot", &size, &why);
    close(fd);
    if (addr) lib = &objs[i];
    else if (ours && !lib_why) lib_why = why;
  }
  if (!addr) {
    int r = named ? fail("process %d (%s) has %s loaded, but no snapshot to read: %s", (int)target, comm,
                         objs[0].path, lib_why ? lib_why : "not found")
                  : fail("process %d (%s) does not use prezero: no libprezero in /proc/%d/maps and no loaded "
                         "object exports prezero_snapshot",
                         (int)target, comm, (int)target);
    free(objs);
    return r;
  }
  /* the header first: is it ours, and of our version? */
  static struct pz_snapshot snap_copy;
  struct pz_snapshot *snap = &snap_copy;
  e = read_mem(addr, snap, offsetof(struct pz_snapshot, seq));
  if (e) return fail_access("reading the snapshot", e);
  if (snap->magic != PZ_SNAP_MAGIC)
    return fail("process %d (%s): %s exports prezero_snapshot, but what is there is not a prezero snapshot",
                (int)target, comm, lib->path);
  if (snap->version != PZ_SNAP_VERSION || snap->size != sizeof *snap || (size && size != sizeof *snap))
    return fail("version mismatch: process %d (%s) publishes snapshot version %u (%u bytes) through %s; this "
                "prezero-info %s reads version %u (%zu bytes): use the prezero-info of the same prezero",
                (int)target, comm, snap->version, snap->size, lib->path, prezero_version(), PZ_SNAP_VERSION,
                sizeof *snap);
  /* the seqlock: seq, the struct, seq again, until both agree and are even */
  uint64_t s1 = 1, s2 = 0;
  int tries = 0;
  for (; tries < 2000; tries++) {
    if ((e = read_mem(addr + offsetof(struct pz_snapshot, seq), &s1, sizeof s1)) ||
        (e = read_mem(addr, snap, sizeof *snap)) ||
        (e = read_mem(addr + offsetof(struct pz_snapshot, seq), &s2, sizeof s2)))
      return fail_access("reading the snapshot", e);
    if (s1 == s2 && !(s1 & 1) && snap->seq == s1) break;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  if (tries == 2000)
    return fail("process %d (%s): the snapshot was being written for 2 s: try again", (int)target, comm);
  printf("process %d (%s): prezero %s at %s%s\n", (int)target, comm, snap->lib_version, lib->path,
         lib->deleted ? " (deleted: replaced on disk since)" : "");
  if (s1 == 0) {
    printf("no snapshot yet: the process has not called prezero_stats_get() and no pool worker has run since it "
           "started\n(a worker refreshes it while it works, at most once a second)\n");
    free(objs);
    return 3;
  }
  double age = age_s(snap);
  char when[64];
  time_t t = (time_t)(snap->taken_real_ns / 1000000000u);
  strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&t));
  printf("snapshot #%llu taken at %s by %s, as of %.1f s ago (collecting took %llu us)%s\n",
         (unsigned long long)snap->published, when,
         snap->source == PZ_SNAP_FROM_WORKER ? "a pool worker" : "prezero_stats_get()", age,
         (unsigned long long)(snap->collect_ns / 1000),
         snap->pid != target && snap->pid != own_pid(target) ? " - by the parent before fork: nothing of this process yet"
                                                             : "");
  struct prezero_stats st = snap->stats;
  if (snap->source == PZ_SNAP_FROM_WORKER) { /* a worker opens no file: read /proc/PID now */
    smaps_rollup(&st);
    if (!st.huge_source) st.pool_resident_bytes = st.anon_bytes, st.pool_huge_bytes = st.anon_huge_bytes;
    if (!st.huge_source && st.anon_bytes) st.huge_source = 2;
    printf("(resident figures read now from /proc/%d/smaps_rollup, the rest as of the snapshot)\n", (int)target);
  }
  fflush(stdout);
  pz_stats_format(1, &st, snap->lib_version, (int)target, snap->zeroing);
  static const char *const state[] = {"untouched", "ready", "dirty", "used", "tail", "busy", "lent"};
  printf("pools (%u, machine nodes %u)\n", snap->nnodes, snap->machine_nodes);
  for (unsigned n = 0; n < snap->nnodes && n < PZ_MAX_NODES; n++) {
    const struct pz_snap_node *d = &snap->nodes[n];
    char a[64];
    printf("  node %-3u workers %d, chunks:", d->node_id, d->workers);
    for (int k = 0; k < PZ_CS__COUNT && k < PZ_SNAP_STATES; k++)
      printf(" %s %llu%s", state[k], (unsigned long long)d->chunks[k], k + 1 < PZ_CS__COUNT ? "," : "");
    printf("; reserve %llu; memory %s%s\n", (unsigned long long)d->reserve,
           d->mem_total ? gib(d->mem_total, a, sizeof a) : "unknown", d->exact ? "" : " (read while busy)");
  }
  free(objs);
  return 0;
}

static void usage(void) {
  printf("usage: prezero-info [--pid PID]\n"
         "\n"
         "Without arguments: what prezero's kernel probe finds on this machine, what prezero\n"
         "does with it, the NUMA topology (as `numactl --hardware` shows it, from libnuma)\n"
         "and every PREZERO_* setting with its value and source.\n"
         "\n"
         "  --pid PID   the statistics and pools of running process PID that uses prezero\n"
         "              (LD_PRELOAD or linked), as PREZERO_STATS=1 prints them at exit. They\n"
         "              are the process's published snapshot, refreshed by its pool workers\n"
         "              at most once a second while they work and by each prezero_stats_get()\n"
         "              call: an idle process keeps its last one (its age is shown). Needs\n"
         "              ptrace access to the process (same user, kernel.yama.ptrace_scope, or\n"
         "              CAP_SYS_PTRACE). Exit status: 0 shown; 1 no such process, permission\n"
         "              denied, not using prezero, or a snapshot version this prezero-info\n"
         "              does not read; 3 no snapshot published yet.\n"
         "  --version   prezero-info's version\n");
}

int main(int argc, char **argv) {
  const char *pid = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage();
      return 0;
    }
    if (!strcmp(argv[i], "--version")) {
      printf("prezero-info %s\n", prezero_version());
      return 0;
    }
    if (!strcmp(argv[i], "--pid") && i + 1 < argc) {
      pid = argv[++i];
      continue;
    }
    if (!strncmp(argv[i], "--pid=", 6)) {
      pid = argv[i] + 6;
      continue;
    }
    fprintf(stderr, "prezero-info: unknown argument %s (try --help)\n", argv[i]);
    return 2;
  }
  if (pid) return show_pid(pid);
  bool secure = getauxval(AT_SECURE) != 0;
  pz_ensure_init(); /* options, probe and topology, as the library does at start (done by now) */
  pz_probe_collapse();
  struct utsname u;
  uname(&u);
  printf("prezero %s on %s %s (%s)\n", prezero_version(), u.sysname, u.release, u.machine);
  print_probe();
  print_topology();
  print_decisions();
  print_options(secure);
  return 0;
}
