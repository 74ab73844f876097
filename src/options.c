/* Options: one table, read from the environment at init without
 * allocating (we scan `environ` ourselves: getenv is safe but the table
 * drives the README and the verbose dump). A malformed value warns once
 * and keeps the default. Secure-execution programs (setuid, AT_SECURE)
 * ignore every PREZERO_* variable, as jemalloc does with secure_getenv. */
#include <string.h>

#include "internal.h"

static const char *const thp_choices[] = {"auto", "always", "never", NULL};
static const char *const populate_choices[] = {"off", "eager", "lazy", NULL};
static const char *const cold_choices[] = {"auto", "huge", "small", NULL};
static const char *const zero_choices[] = {"auto", "memset", "sse2", "avx2", "clzero", NULL};

const struct pz_option_desc pz_option_table[PZ_OPT__COUNT] = {
    [PZ_OPT_STATS] = {"STATS", PZ_OK_BOOL, 0, 0, 1, NULL,
                      "print a statistics summary on stderr at exit"},
    [PZ_OPT_VERBOSE] = {"VERBOSE", PZ_OK_BOOL, 0, 0, 1, NULL,
                        "print the effective options and the kernel probe at start"},
    [PZ_OPT_THP] = {"THP", PZ_OK_ENUM, PZ_THP_OPT_AUTO, 0, 2, thp_choices,
                    "huge pages for chunks: auto (madvise when THP is available), always, never"},
    [PZ_OPT_LARGE_THRESHOLD] = {"LARGE_THRESHOLD", PZ_OK_SIZE, (long long)PZ_MEDIUM_MAX, 256 << 10,
                                (long long)PZ_MEDIUM_MAX, NULL,
                                "allocations of at least this size take whole 2 MiB chunks"},
    [PZ_OPT_HUGE_MIN] = {"HUGE_MIN", PZ_OK_SIZE, 16 << 20, 0, 64 << 20, NULL,
                         "large allocations smaller than this fault 4 KiB pages where the pool had nothing resident (sparse tables stay small)"},
    [PZ_OPT_COLD_PAGES] = {"COLD_PAGES", PZ_OK_ENUM, PZ_COLD_AUTO, 0, 2, cold_choices,
                           "page size for memory the pool had nothing resident for: auto (huge pages only while the workers measure them faulting faster than 4 KiB pages here), huge, small"},
    [PZ_OPT_POOL_MIN] = {"POOL_MIN", PZ_OK_SIZE, 0, 0, 1LL << 50, NULL,
                         "ready (resident, zero) memory the workers keep per node, pre-faulting if needed"},
    [PZ_OPT_POOL_MAX] = {"POOL_MAX", PZ_OK_SIZE, 1LL << 30, 0, 1LL << 50, NULL,
                         "free memory kept resident per node (ready + dirty); beyond it freed chunks go back to the kernel"},
    [PZ_OPT_CHECKS] = {"CHECKS", PZ_OK_BOOL, 1, 0, 1, NULL,
                       "detect invalid, interior and double frees and abort with a message"},
    [PZ_OPT_MREMAP_THRESHOLD] = {"MREMAP_THRESHOLD", PZ_OK_SIZE, 8 << 20, 2 << 20, 1LL << 50, NULL,
                                 "large realloc moves pages (mremap) instead of copying at this size"},
    [PZ_OPT_ZERO] = {"ZERO", PZ_OK_BOOL, 1, 0, 1, NULL,
                     "background workers pre-zero freed chunks (0: off, calloc zeroes inline)"},
    [PZ_OPT_WORKERS] = {"WORKERS", PZ_OK_COUNT, 1, 1, 64, NULL, "worker threads per NUMA node"},
    [PZ_OPT_BATCH] = {"BATCH", PZ_OK_COUNT, 4, 1, 4096, NULL,
                      "chunks (2 MiB) a worker claims per pass"},
    [PZ_OPT_ZERO_RATE] = {"ZERO_RATE", PZ_OK_SIZE, 0, 0, 1LL << 50, NULL,
                          "most bytes per second a node's workers zero or populate (0: unlimited)"},
    [PZ_OPT_ZERO_METHOD] = {"ZERO_METHOD", PZ_OK_ENUM, 0, 0, 4, zero_choices,
                            "how workers zero: auto (streaming stores by CPU features), memset, sse2, avx2, clzero"},
    [PZ_OPT_RESERVE] = {"RESERVE", PZ_OK_SIZE, 0, 0, 1LL << 50, NULL,
                        "ready memory to prepare at start (as prezero_reserve())"},
    [PZ_OPT_DECAY_MS] = {"DECAY_MS", PZ_OK_COUNT, 1000, 0, 1LL << 40, NULL,
                         "milliseconds free memory above POOL_MAX stays idle before it goes back to the kernel"},
    [PZ_OPT_RETAIN_MS] = {"RETAIN_MS", PZ_OK_COUNT, 10000, 0, 1LL << 40, NULL,
                          "milliseconds free memory above POOL_MIN stays idle before it goes back to the kernel (0: kept)"},
    [PZ_OPT_REPORT_BATCH] = {"REPORT_BATCH", PZ_OK_COUNT, 8, 1, 1 << 20, NULL,
                             "fewest chunks (2 MiB) given back to the kernel at once, in ranges aligned for free page reporting"},
    [PZ_OPT_MMAP] = {"MMAP", PZ_OK_BOOL, 1, 0, 1, NULL,
                     "serve large private anonymous read/write mmaps the kernel would give huge pages (THP always, or MADV_HUGEPAGE) from ready chunks"},
    [PZ_OPT_MMAP_THRESHOLD] = {"MMAP_THRESHOLD", PZ_OK_SIZE, 32 << 20, 2 << 20, 1LL << 50, NULL,
                               "smallest mmap served from the pool"},
    [PZ_OPT_UFFD] = {"UFFD", PZ_OK_BOOL, 1, 0, 1, NULL,
                     "answer first writes to served mmaps by moving ready huge pages in (userfaultfd, Linux 6.8, privileged; else only MAP_POPULATE is served)"},
    [PZ_OPT_POPULATE] = {"POPULATE", PZ_OK_ENUM, PZ_POP_OFF, 0, 2, populate_choices,
                         "large allocations beyond the ready pool: off, eager (fault in before returning, in parallel), lazy (in the background)"},
    [PZ_OPT_POPULATE_MIN] = {"POPULATE_MIN", PZ_OK_SIZE, 64 << 20, 2 << 20, 1LL << 50, NULL,
                             "least memory each population helper thread gets (and the smallest allocation populated)"},
    [PZ_OPT_POPULATE_THREADS] = {"POPULATE_THREADS", PZ_OK_COUNT, 0, 0, 1024, NULL,
                                 "most threads populating one request, the caller included (0: the node's CPUs)"},
    [PZ_OPT_NODES] = {"NODES", PZ_OK_NODES, 0, 0, 0, NULL,
                      "NUMA nodes to keep pools on, e.g. 0 or 0,2-3 (threads elsewhere use the first); all by default"},
    [PZ_OPT_SYSFS_ROOT] = {"SYSFS_ROOT", PZ_OK_PATH, 0, 0, 0, NULL,
                           "directory read in place of /sys by the kernel probe (testing)"},
    [PZ_OPT_PROC_ROOT] = {"PROC_ROOT", PZ_OK_PATH, 0, 0, 0, NULL,
                          "directory read in place of /proc by the kernel probe (testing)"},
    [PZ_OPT_FAULTS] = {"FAULTS", PZ_OK_TEXT, 0, 0, 0, NULL,
                       "fault injection for developers, debug build only: e.g. mmap:every=50,populate:every=3:errno=EFAULT"},
};

long long pz_opts[PZ_OPT__COUNT];
const char *pz_opt_strs[PZ_OPT__COUNT];
uint8_t pz_opt_sources[PZ_OPT__COUNT];

const char *pz_opt_source_name(enum pz_opt_source s) {
  static const char *const names[] = {"default", "environment", "default (invalid value ignored)",
                                      "default (secure execution: environment ignored)"};
  return names[s];
}

/* "all", or node numbers and ranges: "0", "0,2-3". */
static int parse_nodes(const char *s, long long *out) {
  if (!strcmp(s, "all") || !strcmp(s, "ALL")) {
    *out = 0;
    return 0;
  }
  unsigned long long mask = 0;
  while (*s) {
    unsigned a = 0, b;
    if (*s < '0' || *s > '9') return -1;
    while (*s >= '0' && *s <= '9' && a < 1000) a = a * 10 + (unsigned)(*s++ - '0');
    b = a;
    if (*s == '-') {
      s++;
      if (*s < '0' || *s > '9') return -1;
      b = 0;
      while (*s >= '0' && *s <= '9' && b < 1000) b = b * 10 + (unsigned)(*s++ - '0');
    }
    if (a > b || b >= 64) return -1;
    for (unsigned k = a; k <= b; k++) mask |= 1ull << k;
    if (*s == ',') s++;
    else if (*s) return -1;
  }
  if (!mask) return -1;
  *out = (long long)mask;
  return 0;
}

static bool streq_ci(const char *a, const char *b) {
  for (; *a && *b; a++, b++) {
    char x = *a, y = *b;
    if (x >= 'A' && x <= 'Z') x = (char)(x + 32);
    if (y >= 'A' && y <= 'Z') y = (char)(y + 32);
    if (x != y) return false;
  }
  return *a == *b;
}

int pz_option_parse(const struct pz_option_desc *d, const char *s, long long *out) {
  switch (d->kind) {
  case PZ_OK_BOOL:
    if (streq_ci(s, "1") || streq_ci(s, "on") || streq_ci(s, "true") || streq_ci(s, "yes")) {
      *out = 1;
      return 0;
    }
    if (streq_ci(s, "0") || streq_ci(s, "off") || streq_ci(s, "false") || streq_ci(s, "no")) {
      *out = 0;
      return 0;
    }
    return -1;
  case PZ_OK_NODES: return parse_nodes(s, out);
  case PZ_OK_PATH:
    if (s[0] != '/') return -1; /* absolute paths only */
    *out = 1;
    return 0;
  case PZ_OK_TEXT:
    if (!s[0]) return -1;
    *out = 1;
    return 0;
  case PZ_OK_ENUM:
    for (int i = 0; d->choices[i]; i++)
      if (streq_ci(s, d->choices[i])) {
        *out = i;
        return 0;
      }
    return -1;
  case PZ_OK_COUNT:
  case PZ_OK_SIZE: {
    unsigned long long v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9') return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
      if (v > (~0ull - 9) / 10) return -1;
      v = v * 10 + (unsigned)(*p - '0');
    }
    unsigned shift = 0;
    if (d->kind == PZ_OK_SIZE) switch (*p) {
    case 'k': case 'K': shift = 10; p++; break;
    case 'm': case 'M': shift = 20; p++; break;
    case 'g': case 'G': shift = 30; p++; break;
    case 't': case 'T': shift = 40; p++; break;
    }
    if (shift && (*p == 'i' || *p == 'I')) p++;
    if (shift && (*p == 'b' || *p == 'B')) p++;
    if (*p) return -1;
    if (shift && v > (~0ull >> shift)) return -1;
    v <<= shift;
    if (v < (unsigned long long)d->min || v > (unsigned long long)d->max) return -1;
    *out = (long long)v;
    return 0;
  }
  }
  return -1;
}

static const char *kind_hint(const struct pz_option_desc *d, char *buf, size_t cap) {
  switch (d->kind) {
  case PZ_OK_BOOL: return "0 or 1";
  case PZ_OK_ENUM: {
    size_t n = 0;
    for (int i = 0; d->choices[i]; i++)
      n += pz_snprintf(buf + n, n < cap ? cap - n : 0, "%s%s", i ? "|" : "", d->choices[i]);
    return buf;
  }
  case PZ_OK_SIZE:
    pz_snprintf(buf, cap, "a size from %lld to %lld, e.g. 512K, 64M, 2G", d->min, d->max);
    return buf;
  case PZ_OK_COUNT:
    pz_snprintf(buf, cap, "a number from %lld to %lld", d->min, d->max);
    return buf;
  case PZ_OK_NODES: return "all, or node numbers and ranges below 64, e.g. 0,2-3";
  case PZ_OK_PATH: return "an absolute path";
  case PZ_OK_TEXT: return "a non-empty value";
  }
  return "";
}

int pz_options_load(char *const *envp, bool secure) {
  for (int i = 0; i < PZ_OPT__COUNT; i++) {
    pz_opts[i] = pz_option_table[i].def;
    pz_opt_strs[i] = NULL;
    pz_opt_sources[i] = secure ? PZ_SRC_SECURE : PZ_SRC_DEFAULT;
  }
  if (!envp || secure) return 0;
  int warnings = 0;
  for (char *const *e = envp; *e; e++) {
    const char *v = *e;
    if (strncmp(v, "PREZERO_", 8) != 0) continue;
    const char *name = v + 8, *eq = strchr(name, '=');
    if (!eq) continue;
    size_t nlen = (size_t)(eq - name);
    int found = -1;
    for (int i = 0; i < PZ_OPT__COUNT; i++)
      if (strlen(pz_option_table[i].name) == nlen && !strncmp(pz_option_table[i].name, name, nlen))
        found = i;
    if (found < 0) {
      /* names reserved for tests/bench tooling are not ours to judge */
      if (strncmp(name, "TEST_", 5) != 0) {
        char nbuf[64];
        size_t k = nlen < sizeof nbuf - 1 ? nlen : sizeof nbuf - 1;
        memcpy(nbuf, name, k);
        nbuf[k] = 0;
        pz_warn("unknown variable PREZERO_%s ignored", nbuf);
        warnings++;
      }
      continue;
    }
    long long val;
    if (pz_option_parse(&pz_option_table[found], eq + 1, &val) != 0) {
      char hint[128];
      pz_warn("PREZERO_%s=%s is not valid (expected %s); using the default", pz_option_table[found].name,
              eq + 1, kind_hint(&pz_option_table[found], hint, sizeof hint));
      warnings++;
      pz_opt_sources[found] = PZ_SRC_INVALID;
      continue;
    }
    pz_opts[found] = val;
    pz_opt_strs[found] = eq + 1;
    pz_opt_sources[found] = PZ_SRC_ENV;
  }
  return warnings;
}

void pz_options_print(void) {
  for (int i = 0; i < PZ_OPT__COUNT; i++) {
    const struct pz_option_desc *d = &pz_option_table[i];
    if (d->kind == PZ_OK_ENUM)
      pz_log("option PREZERO_%s=%s", d->name, d->choices[pz_opts[i]]);
    else if (d->kind == PZ_OK_PATH || d->kind == PZ_OK_NODES || d->kind == PZ_OK_TEXT)
      pz_log("option PREZERO_%s=%s", d->name, pz_opt_strs[i] ? pz_opt_strs[i] : (d->kind == PZ_OK_NODES ? "all" : ""));
    else
      pz_log("option PREZERO_%s=%lld", d->name, pz_opts[i]);
  }
}
