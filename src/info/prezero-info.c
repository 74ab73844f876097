/* prezero-info: what the kernel probe found on this machine, what prezero
 * decides from it, and the effective configuration (every PREZERO_*
 * variable, its value and where the value came from). The first thing to
 * paste into a bug report, as `numactl --hardware` is for NUMA.
 *
 * This is an ordinary program (stdio, glibc's malloc): it runs the same
 * probe the library runs at start, from the static core. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/utsname.h>

#include "internal.h"
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

static void cpulist(const unsigned long *set, char *out, size_t cap) {
  size_t n = 0;
  out[0] = 0;
  for (unsigned c = 0; c < PZ_CPUSET_WORDS * 64; c++) {
    if (!(set[c / 64] & (1ul << (c % 64)))) continue;
    unsigned e = c;
    while (e + 1 < PZ_CPUSET_WORDS * 64 && (set[(e + 1) / 64] & (1ul << ((e + 1) % 64)))) e++;
    n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%u", n ? "," : "", c);
    if (e > c) n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "-%u", e);
    c = e;
  }
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
  printf("  NUMA                       %u node(s) on the machine, pools on %u\n", pz_topo.machine_nodes,
         pz_topo.nnodes);
  for (unsigned n = 0; n < pz_topo.nnodes; n++) {
    char cpus[256];
    cpulist(pz_topo.cpus[n], cpus, sizeof cpus);
    printf("    node %-3u                 cpus %s, memory %s\n", pz_topo.node_id[n], cpus,
           pz_topo.mem_total[n] ? gib(pz_topo.mem_total[n], a, sizeof a) : "unknown");
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

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: prezero-info\n\nPrints what prezero's kernel probe finds on this machine, what prezero does\n"
             "with it, and every PREZERO_* setting with its value and source.\n");
      return 0;
    }
    if (!strcmp(argv[i], "--version")) {
      printf("prezero-info %s\n", prezero_version());
      return 0;
    }
    fprintf(stderr, "prezero-info: unknown argument %s (try --help)\n", argv[i]);
    return 2;
  }
  bool secure = getauxval(AT_SECURE) != 0;
  pz_ensure_init(); /* options, probe and topology, as the library does at start (done by now) */
  pz_probe_collapse();
  struct utsname u;
  uname(&u);
  printf("prezero %s on %s %s (%s)\n", prezero_version(), u.sysname, u.release, u.machine);
  print_probe();
  print_decisions();
  print_options(secure);
  return 0;
}
