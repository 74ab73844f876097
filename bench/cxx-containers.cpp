// cxx-containers: allocation behaviour of typical C++ code.
//
// Each round builds and tears down standard containers the way ordinary C++
// programs do: a std::map<std::string, uint64_t> (node allocations plus heap
// strings longer than the small-string buffer), a std::unordered_map with
// string values (bucket array rehashing plus nodes), a std::vector of
// strings grown by push_back, sorted and deduplicated, and a string built by
// repeated appends.  Lookups are checked against values derived from the
// keys; any mismatch exits 2.  Memory comes from operator new/delete, which
// in libstdc++ forward to malloc/free, so the preloaded allocator is used.
//
//   n=N        elements per container per round   (default 20000)
//   rounds=R   rounds                             (default 30)
//   seed=S     PRNG seed                          (default 1)

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed)
    {
        uint64_t x = seed ^ 0x6A09E667F3BCC909ull;
        s = splitmix(x);
        if (s == 0)
            s = 1;
    }
    static uint64_t splitmix(uint64_t &x)
    {
        uint64_t z = (x += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    uint64_t next()
    {
        uint64_t x = s;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s = x;
        return x * 0x2545F4914F6CDD1Dull;
    }
    uint64_t below(uint64_t n) { return ((next() >> 32) * n) >> 32; }
};

[[noreturn]] void fail(const char *what, uint64_t detail)
{
    std::fprintf(stderr, "bench: cxx-containers check failed: %s (%" PRIu64 ")\n", what,
                 detail);
    std::exit(2);
}

uint64_t fnv(const std::string &s, uint64_t h = 0xcbf29ce484222325ull)
{
    for (unsigned char c : s) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    return h;
}

// A key of 6..40 characters (many exceed the 15-char SSO buffer).
std::string make_key(uint64_t v, uint64_t len)
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    std::string s = "k";
    uint64_t x = v;
    while (s.size() < len) {
        s.push_back(digits[x % 36]);
        x = x / 36 + (x % 7) * 0x9E3779B97F4A7C15ull;
        if (x == 0)
            x = v | 1;
    }
    return s;
}

uint64_t value_of(const std::string &k) { return fnv(k) * 31 + k.size(); }

uint64_t arg(int argc, char **argv, const char *key, uint64_t def)
{
    size_t kl = std::strlen(key);
    for (int i = 1; i < argc; i++) {
        if (std::strncmp(argv[i], key, kl) == 0 && argv[i][kl] == '=') {
            char *end = nullptr;
            unsigned long long v = std::strtoull(argv[i] + kl + 1, &end, 0);
            if (end == argv[i] + kl + 1 || *end != '\0') {
                std::fprintf(stderr, "bench: bad value for %s\n", key);
                std::exit(64);
            }
            return v;
        }
    }
    return def;
}

} // namespace

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (std::strncmp(argv[i], "n=", 2) != 0 && std::strncmp(argv[i], "rounds=", 7) != 0 &&
            std::strncmp(argv[i], "seed=", 5) != 0) {
            std::fprintf(stderr, "bench: unknown argument '%s'\nusage: %s [n=N] [rounds=R] "
                                 "[seed=S]\n", argv[i], argv[0]);
            return 64;
        }
    }
    const uint64_t n = arg(argc, argv, "n", 20000);
    const uint64_t rounds = arg(argc, argv, "rounds", 30);
    Rng rng(arg(argc, argv, "seed", 1));
    uint64_t sum = 0;

    for (uint64_t round = 0; round < rounds; round++) {
        // --- ordered map keyed by strings ---
        std::map<std::string, uint64_t> m;
        std::vector<std::string> keys;
        keys.reserve(n);
        for (uint64_t i = 0; i < n; i++) {
            std::string k = make_key(rng.next(), 6 + rng.below(35));
            uint64_t v = value_of(k);
            auto it = m.emplace(k, v);
            if (!it.second && it.first->second != v)
                fail("map duplicate value", i);
            keys.push_back(std::move(k));
        }
        // erase about half in random order, check the rest
        for (uint64_t i = 0; i < n / 2; i++) {
            const std::string &k = keys[rng.below(n)];
            m.erase(k);
        }
        for (const std::string &k : keys) {
            auto it = m.find(k);
            if (it != m.end()) {
                if (it->second != value_of(k))
                    fail("map value", it->second);
                sum += it->second;
            }
        }
        sum = sum * 3 + m.size();

        // --- unordered map with string values ---
        std::unordered_map<uint64_t, std::string> u;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t k = rng.below(n * 2);
            u[k] = make_key(k * 0x9E3779B97F4A7C15ull + 1, 4 + (k % 50));
        }
        for (uint64_t i = 0; i < n; i++) {
            uint64_t k = rng.below(n * 2);
            auto it = u.find(k);
            if (it != u.end()) {
                if (it->second != make_key(k * 0x9E3779B97F4A7C15ull + 1, 4 + (k % 50)))
                    fail("unordered_map value", k);
                sum += fnv(it->second) & 0xffff;
                if (k % 3 == 0)
                    u.erase(it);
            }
        }
        sum = sum * 3 + u.size();

        // --- vector of strings: grow, sort, unique ---
        std::vector<std::string> v;
        for (uint64_t i = 0; i < n; i++)
            v.push_back(keys[rng.below(n)] + "/" + std::to_string(i % 97));
        std::sort(v.begin(), v.end());
        v.erase(std::unique(v.begin(), v.end()), v.end());
        for (size_t i = 1; i < v.size(); i++)
            if (!(v[i - 1] < v[i]))
                fail("sorted order", i);
        sum = sum * 3 + v.size() + fnv(v.front()) % 1000;

        // --- string builder ---
        std::string out;
        for (uint64_t i = 0; i < n; i++) {
            out += keys[i];
            out += ',';
        }
        uint64_t expect = 0;
        for (const std::string &k : keys)
            expect += k.size() + 1;
        if (out.size() != expect)
            fail("string length", out.size());
        sum = sum * 3 + fnv(out);
    }
    std::printf("ok %016" PRIx64 "\n", sum);
    return 0;
}
