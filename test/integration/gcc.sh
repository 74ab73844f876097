#!/usr/bin/env bash
# gcc and g++ under the preload (the driver, cc1/cc1plus, as and ld all
# inherit LD_PRELOAD). A multi-file C program (hash table, sort, main) is
# built with -O2 -g and a C++ program using the standard containers with
# -O2; the object files must be byte-identical to those built without the
# preload, and the programs must print the known results.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"
pz_require_cmd gcc

mkdir -p src ref pz

cat >src/util.h <<'EOF'
#ifndef UTIL_H
#define UTIL_H
#include <stddef.h>
#include <stdint.h>

struct entry {
  char *key;
  uint64_t value;
  struct entry *next;
};

struct table {
  struct entry **slots;
  size_t nslots, count;
};

uint64_t hash_str(const char *s);
void table_init(struct table *t, size_t nslots);
void table_put(struct table *t, const char *key, uint64_t value);
int table_get(const struct table *t, const char *key, uint64_t *value);
size_t table_del(struct table *t, const char *key);
void table_free(struct table *t);
char **table_keys(const struct table *t, size_t *n);

void merge_sort_strings(char **v, size_t n);
void quick_sort_u64(uint64_t *v, size_t n);
#endif
EOF

cat >src/hash.c <<'EOF'
#include <stdlib.h>
#include <string.h>
#include "util.h"

uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;          /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static void grow(struct table *t) {
  struct table n;
  table_init(&n, t->nslots * 2);
  for (size_t i = 0; i < t->nslots; i++) {
    struct entry *e = t->slots[i];
    while (e) {
      struct entry *next = e->next;
      size_t s = hash_str(e->key) & (n.nslots - 1);
      e->next = n.slots[s];
      n.slots[s] = e;
      e = next;
    }
  }
  n.count = t->count;
  free(t->slots);
  *t = n;
}

void table_init(struct table *t, size_t nslots) {
  t->nslots = nslots;
  t->count = 0;
  t->slots = calloc(nslots, sizeof *t->slots);
  if (!t->slots) abort();
}

void table_put(struct table *t, const char *key, uint64_t value) {
  size_t s = hash_str(key) & (t->nslots - 1);
  for (struct entry *e = t->slots[s]; e; e = e->next)
    if (strcmp(e->key, key) == 0) { e->value = value; return; }
  struct entry *e = malloc(sizeof *e);
  if (!e || !(e->key = strdup(key))) abort();
  e->value = value;
  e->next = t->slots[s];
  t->slots[s] = e;
  if (++t->count > t->nslots) grow(t);
}

int table_get(const struct table *t, const char *key, uint64_t *value) {
  size_t s = hash_str(key) & (t->nslots - 1);
  for (struct entry *e = t->slots[s]; e; e = e->next)
    if (strcmp(e->key, key) == 0) { *value = e->value; return 1; }
  return 0;
}

size_t table_del(struct table *t, const char *key) {
  size_t s = hash_str(key) & (t->nslots - 1);
  for (struct entry **p = &t->slots[s]; *p; p = &(*p)->next)
    if (strcmp((*p)->key, key) == 0) {
      struct entry *e = *p;
      *p = e->next;
      free(e->key);
      free(e);
      t->count--;
      return 1;
    }
  return 0;
}

void table_free(struct table *t) {
  for (size_t i = 0; i < t->nslots; i++)
    for (struct entry *e = t->slots[i], *next; e; e = next) {
      next = e->next;
      free(e->key);
      free(e);
    }
  free(t->slots);
}

char **table_keys(const struct table *t, size_t *n) {
  char **v = malloc((t->count + 1) * sizeof *v);
  size_t k = 0;
  if (!v) abort();
  for (size_t i = 0; i < t->nslots; i++)
    for (struct entry *e = t->slots[i]; e; e = e->next) v[k++] = e->key;
  *n = k;
  return v;
}
EOF

cat >src/sort.c <<'EOF'
#include <stdlib.h>
#include <string.h>
#include "util.h"

static void msort(char **v, char **tmp, size_t n) {
  if (n < 2) return;
  size_t h = n / 2;
  msort(v, tmp, h);
  msort(v + h, tmp, n - h);
  size_t i = 0, j = h, k = 0;
  while (i < h && j < n) tmp[k++] = strcmp(v[i], v[j]) <= 0 ? v[i++] : v[j++];
  while (i < h) tmp[k++] = v[i++];
  while (j < n) tmp[k++] = v[j++];
  memcpy(v, tmp, n * sizeof *v);
}

void merge_sort_strings(char **v, size_t n) {
  char **tmp = malloc((n ? n : 1) * sizeof *tmp);
  if (!tmp) abort();
  msort(v, tmp, n);
  free(tmp);
}

static void qs(uint64_t *v, long lo, long hi) {
  while (lo < hi) {
    uint64_t p = v[lo + (hi - lo) / 2];
    long i = lo, j = hi;
    while (i <= j) {
      while (v[i] < p) i++;
      while (v[j] > p) j--;
      if (i <= j) { uint64_t t = v[i]; v[i] = v[j]; v[j] = t; i++; j--; }
    }
    if (j - lo < hi - i) { qs(v, lo, j); lo = i; } else { qs(v, i, hi); hi = j; }
  }
}

void quick_sort_u64(uint64_t *v, size_t n) { if (n) qs(v, 0, (long)n - 1); }
EOF

cat >src/main.c <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "util.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

int main(void) {
  struct table t;
  char key[64];
  const size_t N = 200000;
  table_init(&t, 16);
  for (size_t i = 0; i < N; i++) {
    snprintf(key, sizeof key, "k%zu-%llx", i % 150000, (unsigned long long)(next() % 1000));
    table_put(&t, key, i);
  }
  size_t deleted = 0, n0;
  char **k0 = table_keys(&t, &n0);
  char **dup = malloc(n0 * sizeof *dup);
  for (size_t i = 0; i < n0; i++) dup[i] = strdup(k0[i]);
  free(k0);
  for (size_t i = 0; i < n0; i += 3) deleted += table_del(&t, dup[i]);
  for (size_t i = 0; i < n0; i++) free(dup[i]);
  free(dup);
  size_t n;
  char **keys = table_keys(&t, &n);
  merge_sort_strings(keys, n);
  uint64_t h = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t v;
    if (!table_get(&t, keys[i], &v)) { puts("lookup failed"); return 1; }
    h = h * 31 + hash_str(keys[i]) + v;
  }
  for (size_t i = 1; i < n; i++)
    if (strcmp(keys[i - 1], keys[i]) >= 0) { puts("not sorted"); return 1; }
  uint64_t *nums = malloc(N * sizeof *nums);
  for (size_t i = 0; i < N; i++) nums[i] = next();
  quick_sort_u64(nums, N);
  uint64_t hn = 0;
  for (size_t i = 0; i < N; i++) {
    if (i && nums[i - 1] > nums[i]) { puts("nums not sorted"); return 1; }
    hn = hn * 1000003 + nums[i];
  }
  printf("entries %zu deleted %zu first %s last %s\n", n, deleted, keys[0], keys[n - 1]);
  printf("hash %016llx nums %016llx\n", (unsigned long long)h, (unsigned long long)hn);
  free(keys);
  free(nums);
  table_free(&t);
  return 0;
}
EOF

cat >src/prog.cc <<'EOF'
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

struct Node {
  std::string name;
  std::vector<int> data;
  std::map<std::string, std::shared_ptr<Node>> children;
};

template <typename T> static uint64_t mix(uint64_t h, const T &v) {
  return (h ^ std::hash<T>{}(v)) * 1099511628211ull;
}

int main() {
  std::unordered_map<std::string, std::vector<std::string>> index;
  std::map<int, std::set<std::string>> by_len;
  uint64_t seed = 12345;
  auto rnd = [&] { seed = seed * 6364136223846793005ull + 1442695040888963407ull; return seed >> 33; };
  for (int i = 0; i < 60000; i++) {
    std::string w = "w" + std::to_string(rnd() % 20000) + std::string(rnd() % 24, 'a' + i % 26);
    index[w.substr(0, 4)].push_back(w);
    by_len[int(w.size())].insert(w);
  }
  auto root = std::make_shared<Node>();
  root->name = "root";
  for (int i = 0; i < 2000; i++) {
    auto n = std::make_shared<Node>();
    n->name = "n" + std::to_string(i);
    n->data.resize(i % 100);
    std::iota(n->data.begin(), n->data.end(), i);
    root->children[n->name] = n;
  }
  std::ostringstream os;
  for (auto &[k, v] : root->children) os << k << ':' << std::accumulate(v->data.begin(), v->data.end(), 0L) << ';';
  std::regex re("n(1[0-9]{2}):([0-9]+)");
  uint64_t h = 1469598103934665603ull;
  long matches = 0;
  std::string s = os.str();
  for (std::sregex_iterator it(s.begin(), s.end(), re), end; it != end; ++it, ++matches) h = mix(h, it->str());
  std::vector<std::string> keys;
  for (auto &kv : index) keys.push_back(kv.first);
  std::sort(keys.begin(), keys.end());
  for (auto &k : keys) { auto &v = index[k]; std::sort(v.begin(), v.end()); h = mix(h, k + v.front() + v.back()); }
  size_t total = 0;
  for (auto &kv : by_len) total += kv.second.size();
  std::cout << "keys " << keys.size() << " distinct " << total << " lens " << by_len.size()
            << " matches " << matches << " hash " << std::hex << h << std::endl;
  return 0;
}
EOF

CFLAGS=(-O2 -g -Wall -std=c11 -D_GNU_SOURCE)
for f in hash sort main; do
  pz_ref "cc-$f" gcc "${CFLAGS[@]}" -c "src/$f.c" -o "ref/$f.o"
  pz_run "cc-$f" gcc "${CFLAGS[@]}" -c "src/$f.c" -o "pz/$f.o"
  pz_compare_files "object file $f.o from gcc -O2 -g" "ref/$f.o" "pz/$f.o"
done
pz_ref link gcc -O2 ref/hash.o ref/sort.o ref/main.o -o ref/prog
pz_run link gcc -O2 pz/hash.o pz/sort.o pz/main.o -o pz/prog
pz_compare_files "linked C program" ref/prog pz/prog

# One-step compile+link of all three files too (driver juggling temp files).
pz_run cc-all gcc "${CFLAGS[@]}" src/hash.c src/sort.c src/main.c -o pz/prog2

pz_ref c-run ./ref/prog >c.ref.out
pz_run c-run ./pz/prog >c.pz.out
pz_run c-run2 ./pz/prog2 >c.pz2.out
pz_compare_files "output of the C program" c.ref.out c.pz.out
pz_compare_files "output of the C program (one-step build)" c.ref.out c.pz2.out
# Known values (the program is plain deterministic C).
printf '%s\n' "entries 133300 deleted 66650 first k0-200 last k99999-ff" \
  "hash 2f9cbffeee0274f0 nums 57bb7bcd675aad5f" >c.known
pz_compare_files "output of the C program vs known values" c.known c.pz.out

if command -v g++ >/dev/null 2>&1; then
  CXXFLAGS=(-O2 -std=c++17 -Wall)
  pz_ref cxx g++ "${CXXFLAGS[@]}" -c src/prog.cc -o ref/prog_cc.o
  pz_run cxx g++ "${CXXFLAGS[@]}" -c src/prog.cc -o pz/prog_cc.o
  pz_compare_files "object file prog_cc.o from g++ -O2" ref/prog_cc.o pz/prog_cc.o
  pz_run cxx-link g++ pz/prog_cc.o -o pz/prog_cc
  pz_ref cxx-link g++ ref/prog_cc.o -o ref/prog_cc
  pz_compare_files "linked C++ program" ref/prog_cc pz/prog_cc
  pz_ref cxx-run ./ref/prog_cc >cxx.ref.out
  pz_run cxx-run ./pz/prog_cc >cxx.pz.out
  pz_compare_files "output of the C++ program" cxx.ref.out cxx.pz.out
  grep -q '^keys ' cxx.ref.out || pz_fail "C++ program printed nothing useful: $(cat cxx.ref.out)"
  pz_pass "C: $(head -n1 c.ref.out | cut -c1-40)...; C++: $(cut -c1-40 cxx.ref.out)..."
fi
pz_pass "C only (g++ not installed): $(head -n1 c.ref.out)"
