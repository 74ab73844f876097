#!/usr/bin/env bash
# A C++17 program (compiled here without preload) run under the preload:
# plain and sized new/delete, nothrow new, over-aligned new (alignas(32),
# alignas(64), alignas(128) and alignas(4096) types, single objects and
# `new T[n]` arrays, explicit std::align_val_t), std::string, std::map,
# std::unordered_map, std::vector, std::deque, std::list, shared_ptr and
# make_shared of over-aligned types, exceptions, and 8 std::threads that
# hand unique_ptrs to each other (deleting memory allocated by another
# thread) plus std::async. Its alignment and content checks must all hold
# and its output must equal the run without preload.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"
pz_require_cmd g++

cat >prog.cc <<'EOF'
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <queue>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

static std::atomic<long> errors{0};
static std::mutex err_mu;
static void fail(const std::string &what) {
  std::lock_guard<std::mutex> g(err_mu);
  if (errors++ < 20) std::cerr << "ERROR: " << what << std::endl;
}
#define CHECK(cond, what) do { if (!(cond)) fail(what); } while (0)

static bool aligned(const void *p, size_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  auto *c = static_cast<const unsigned char *>(p);
  for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
  return h;
}
static uint64_t fnv(uint64_t h, const std::string &s) { return fnv(h, s.data(), s.size()); }
static uint64_t fnv(uint64_t h, uint64_t v) { return fnv(h, &v, sizeof v); }

template <size_t A, size_t S> struct alignas(A) Over {
  unsigned char bytes[S];
  uint64_t tag;
  Over() : tag(0xC0FFEE00u + A) { std::memset(bytes, int(A & 0xff), sizeof bytes); }
  ~Over() {
    if (tag != 0xC0FFEE00u + A) fail("Over<" + std::to_string(A) + "> tag damaged");
    tag = 0;
  }
  bool ok() const {
    for (unsigned char b : bytes) if (b != (A & 0xff)) return false;
    return tag == 0xC0FFEE00u + A;
  }
};

template <size_t A, size_t S> static uint64_t test_over(uint64_t h, int rounds) {
  using T = Over<A, S>;
  static_assert(alignof(T) == A, "alignment");
  std::vector<T *> singles;
  std::vector<std::pair<T *, size_t>> arrays;
  for (int r = 0; r < rounds; r++) {
    T *p = new T;
    CHECK(aligned(p, A), "new Over<" + std::to_string(A) + "> misaligned");
    singles.push_back(p);
    size_t n = 1 + (r * 7) % 33;
    T *arr = new T[n];
    CHECK(aligned(arr, A), "new Over<" + std::to_string(A) + ">[" + std::to_string(n) + "] misaligned");
    for (size_t i = 0; i < n; i++) CHECK(aligned(&arr[i], A), "array element misaligned");
    arrays.emplace_back(arr, n);
    T *nt = new (std::nothrow) T;
    CHECK(nt && aligned(nt, A), "nothrow aligned new failed or misaligned");
    delete nt;
    if (r % 3 == 0) { delete singles.back(); singles.pop_back(); }
  }
  auto sp = std::make_shared<T>();
  CHECK(aligned(sp.get(), A), "make_shared<Over<" + std::to_string(A) + ">> misaligned");
  std::vector<T> vec(17);
  CHECK(aligned(vec.data(), A), "vector<Over<" + std::to_string(A) + ">> misaligned");
  vec.resize(300);
  CHECK(aligned(vec.data(), A), "vector<Over> misaligned after growth");
  for (auto *p : singles) { CHECK(p->ok(), "Over contents damaged"); delete p; }
  for (auto &a : arrays) {
    for (size_t i = 0; i < a.second; i++) CHECK(a.first[i].ok(), "Over[] contents damaged");
    delete[] a.first;
  }
  // Explicit aligned operator new / sized aligned delete.
  for (size_t sz : {size_t(1), size_t(A), size_t(3 * A + 5), size_t(1) << 20}) {
    void *p = ::operator new(sz, std::align_val_t(A));
    CHECK(aligned(p, A), "operator new(size, align_val_t) misaligned");
    std::memset(p, 0x77, sz);
    ::operator delete(p, sz, std::align_val_t(A));
  }
  return fnv(h, uint64_t(A * 1000 + S + rounds + vec.size()));
}

struct Record {
  std::string name;
  std::vector<int> values;
  std::map<std::string, double> attrs;
  std::shared_ptr<Record> parent;
};

static uint64_t containers(uint64_t seed, int scale) {
  uint64_t x = seed | 1;
  auto rnd = [&] { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x; };
  std::unordered_map<std::string, std::shared_ptr<Record>> recs;
  std::map<uint64_t, std::string> ordered;
  std::deque<std::string> dq;
  std::list<std::vector<char>> lst;
  std::shared_ptr<Record> last;
  for (int i = 0; i < scale; i++) {
    auto r = std::make_shared<Record>();
    r->name = "rec" + std::to_string(rnd() % (scale * 2)) + std::string(rnd() % 40, char('a' + i % 26));
    r->values.resize(rnd() % 64);
    for (size_t k = 0; k < r->values.size(); k++) r->values[k] = int(k * i);
    for (int k = 0; k < int(rnd() % 5); k++) r->attrs["attr" + std::to_string(k)] = k * 0.5 + i;
    r->parent = (i % 4) ? last : nullptr;
    last = r;
    recs[r->name] = r;
    ordered[rnd()] = r->name;
    dq.push_back(r->name + "#");
    if (dq.size() > 1000) dq.pop_front();
    lst.emplace_back(size_t(rnd() % 3000), char(i));
    if (lst.size() > 200) lst.pop_front();
    if (i % 1000 == 999) {                  // erase a slice of the maps
      auto it = ordered.begin();
      for (int k = 0; k < 300 && it != ordered.end(); k++) {
        recs.erase(it->second);
        it = ordered.erase(it);
      }
    }
  }
  uint64_t h = 1469598103934665603ull;
  for (auto &kv : ordered) {
    h = fnv(h, kv.first);
    auto it = recs.find(kv.second);
    if (it != recs.end()) {
      auto &r = *it->second;
      h = fnv(h, r.name);
      for (size_t k = 0; k < r.values.size(); k++)
        if (r.values[k] != int(k) * int(r.values.size() > 1 ? r.values[1] : 0)) fail("Record values damaged");
      for (auto &a : r.attrs) h = fnv(h, a.first);
    }
  }
  for (auto &s : dq) h = fnv(h, s);
  for (auto &v : lst) h = fnv(h, uint64_t(v.size()));
  std::string big;
  for (int i = 0; i < 2000; i++) big += std::to_string(i) + std::string(i % 100, 'x');
  std::string copy = big;
  copy.append(big).append(big);
  h = fnv(h, uint64_t(copy.size()));
  h = fnv(h, copy.substr(copy.size() / 3, 1000));
  return h;
}

// Queue of unique_ptrs passed between threads: deleted by another thread.
struct Msg { int from, seq; std::string text; std::vector<uint64_t> data; };
static std::mutex qmu;
static std::condition_variable qcv;
static std::queue<std::unique_ptr<Msg>> q;

int main() {
  if (const char *lib = std::getenv("PZ_EXPECT_LIB")) {
    std::ifstream maps("/proc/self/maps");
    std::stringstream ss;
    ss << maps.rdbuf();
    if (ss.str().find(lib) == std::string::npos) { std::cerr << "preload library not mapped\n"; return 2; }
  }
  uint64_t h = 1469598103934665603ull;
  h = test_over<32, 40>(h, 300);
  h = test_over<64, 24>(h, 300);
  h = test_over<64, 200>(h, 300);
  h = test_over<128, 8>(h, 200);
  h = test_over<4096, 100>(h, 60);
  std::cout << "aligned " << std::hex << h << std::dec << std::endl;

  // Exceptions allocate their objects with malloc.
  int caught = 0;
  for (int i = 0; i < 2000; i++) {
    try {
      if (i % 2) throw std::runtime_error("error number " + std::to_string(i) + std::string(i % 300, 'e'));
      std::vector<int> v; v.at(size_t(i) + 1);
    } catch (const std::exception &e) { caught += e.what()[0] != 0; }
  }
  std::cout << "exceptions " << caught << std::endl;

  std::cout << "containers " << std::hex << containers(42, 20000) << std::dec << std::endl;

  // 8 threads: 4 producers, 4 consumers, plus each thread does container work.
  const int producers = 4, per = 20000;
  std::atomic<long> consumed{0}, checksum{0};
  std::vector<std::thread> ts;
  std::vector<uint64_t> results(8);
  for (int t = 0; t < producers; t++)
    ts.emplace_back([t, &results] {
      for (int s = 0; s < per; s++) {
        auto m = std::make_unique<Msg>();
        m->from = t; m->seq = s;
        m->text = "msg " + std::to_string(t) + "/" + std::to_string(s) + std::string(s % 90, 'm');
        m->data.assign(size_t(s % 40), uint64_t(t) * 1000003u + uint64_t(s));
        std::lock_guard<std::mutex> g(qmu);
        q.push(std::move(m));
        qcv.notify_one();
      }
      results[size_t(t)] = containers(uint64_t(t) + 100, 4000);
    });
  for (int t = 0; t < 4; t++)
    ts.emplace_back([t, &consumed, &checksum, &results] {
      for (;;) {
        std::unique_ptr<Msg> m;
        {
          std::unique_lock<std::mutex> g(qmu);
          qcv.wait(g, [&] { return !q.empty() || consumed.load() >= long(producers) * per; });
          if (q.empty()) break;
          m = std::move(q.front());
          q.pop();
        }
        std::string want = "msg " + std::to_string(m->from) + "/" + std::to_string(m->seq);
        if (m->text.compare(0, want.size(), want) != 0) fail("message text damaged");
        for (auto v : m->data) if (v != uint64_t(m->from) * 1000003u + uint64_t(m->seq)) { fail("message data damaged"); break; }
        checksum += m->seq + m->from;
        if (++consumed >= long(producers) * per) { // under the lock: a waiter between its check and its wait must not miss it
          std::lock_guard<std::mutex> g(qmu);
          qcv.notify_all();
        }
        // m (allocated by a producer) is deleted here, in a consumer.
      }
      results[size_t(4 + t)] = containers(uint64_t(t) + 200, 4000);
    });
  for (auto &t : ts) t.join();
  uint64_t th = 0;
  for (auto r : results) th = fnv(th, r);
  std::cout << "threads consumed " << consumed << " checksum " << checksum << " work " << std::hex << th << std::dec << std::endl;

  std::vector<std::future<uint64_t>> fs;
  for (int i = 0; i < 6; i++) fs.push_back(std::async(std::launch::async, [i] { return containers(uint64_t(i) + 300, 3000); }));
  uint64_t ah = 0;
  for (auto &f : fs) ah = fnv(ah, f.get());
  std::cout << "async " << std::hex << ah << std::dec << std::endl;

  std::cout << "errors " << errors << std::endl;
  return errors ? 1 : 0;
}
EOF
pz_ref build g++ -O2 -std=c++17 -pthread -Wall -o prog prog.cc
pz_ref prog ./prog >ref.out
pz_run prog ./prog >pz.out
pz_compare_files "C++ program output" ref.out pz.out
grep -qx "errors 0" pz.out || pz_fail "C++ program reported errors"
pz_compare_str "exceptions caught" "exceptions 2000" "$(grep '^exceptions' pz.out)"
pz_compare_str "messages passed between threads" "threads consumed 80000 checksum 800080000" \
  "$(grep '^threads' pz.out | cut -d' ' -f1-5)"
pz_pass "$(tr '\n' ' ' <pz.out)"
