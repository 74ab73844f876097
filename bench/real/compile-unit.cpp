// bench/real/compile-unit.cpp: the translation unit that the g++ real-program
// workload of bench/run.py compiles (g++ -std=c++17 -O2 -g -c).  It is not
// run: it only has to be a realistic, template-heavy unit for the compiler
// (std::regex, the associative containers, std::variant, std::function,
// streams, algorithms), so that cc1plus allocates as it does on real code.
#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <iostream>
#include <list>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

namespace unit {

using Value = std::variant<std::int64_t, double, std::string, std::vector<std::string>>;

struct Record {
  std::string name;
  std::map<std::string, Value> fields;
  std::optional<std::string> note;
};

template <typename K, typename V>
class Lru {
 public:
  explicit Lru(std::size_t cap) : cap_(cap) {}
  void put(const K &k, V v) {
    auto it = map_.find(k);
    if (it != map_.end()) order_.erase(it->second.second);
    order_.push_front(k);
    map_[k] = {std::move(v), order_.begin()};
    if (map_.size() > cap_) {
      map_.erase(order_.back());
      order_.pop_back();
    }
  }
  std::optional<V> get(const K &k) {
    auto it = map_.find(k);
    if (it == map_.end()) return std::nullopt;
    order_.splice(order_.begin(), order_, it->second.second);
    return it->second.first;
  }
  std::size_t size() const { return map_.size(); }

 private:
  std::size_t cap_;
  std::list<K> order_;
  std::unordered_map<K, std::pair<V, typename std::list<K>::iterator>> map_;
};

std::string to_text(const Value &v) {
  return std::visit(
      [](const auto &x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        std::ostringstream os;
        if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          for (const auto &s : x) os << s << ',';
        } else {
          os << x;
        }
        return os.str();
      },
      v);
}

std::vector<Record> parse(const std::string &text) {
  static const std::regex line_re(R"(^(\w+):\s*(.*)$)");
  static const std::regex field_re(R"((\w+)=([^;]*);?)");
  std::vector<Record> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_match(line, m, line_re)) continue;
    Record r;
    r.name = m[1];
    std::string rest = m[2];
    for (std::sregex_iterator it(rest.begin(), rest.end(), field_re), end; it != end; ++it) {
      std::string k = (*it)[1], v = (*it)[2];
      if (std::all_of(v.begin(), v.end(), ::isdigit) && !v.empty())
        r.fields[k] = static_cast<std::int64_t>(std::stoll(v));
      else if (v.find('.') != std::string::npos && std::regex_match(v, std::regex(R"(\d+\.\d+)")))
        r.fields[k] = std::stod(v);
      else if (v.find(',') != std::string::npos) {
        std::vector<std::string> parts;
        std::stringstream ss(v);
        std::string p;
        while (std::getline(ss, p, ',')) parts.push_back(p);
        r.fields[k] = parts;
      } else
        r.fields[k] = v;
    }
    if (r.fields.size() > 3) r.note = "wide";
    out.push_back(std::move(r));
  }
  return out;
}

std::map<std::string, std::vector<std::size_t>> index_by(const std::vector<Record> &rs,
                                                         const std::string &field) {
  std::map<std::string, std::vector<std::size_t>> idx;
  for (std::size_t i = 0; i < rs.size(); ++i) {
    auto it = rs[i].fields.find(field);
    if (it != rs[i].fields.end()) idx[to_text(it->second)].push_back(i);
  }
  return idx;
}

struct Pipeline {
  std::vector<std::function<bool(const Record &)>> filters;
  std::vector<std::function<std::string(const Record &)>> maps;
  std::deque<std::string> run(const std::vector<Record> &rs) const {
    std::deque<std::string> out;
    for (const auto &r : rs) {
      if (!std::all_of(filters.begin(), filters.end(), [&](const auto &f) { return f(r); }))
        continue;
      std::string s;
      for (const auto &m : maps) s += m(r);
      out.push_back(std::move(s));
    }
    return out;
  }
};

std::uint64_t summarize(const std::vector<Record> &rs) {
  std::unordered_set<std::string> names;
  std::set<std::pair<std::size_t, std::string>> by_width;
  Lru<std::string, std::size_t> lru(64);
  for (const auto &r : rs) {
    names.insert(r.name);
    by_width.emplace(r.fields.size(), r.name);
    lru.put(r.name, r.fields.size());
  }
  std::vector<std::uint64_t> hs;
  std::transform(names.begin(), names.end(), std::back_inserter(hs),
                 [](const std::string &s) { return std::hash<std::string>{}(s); });
  std::sort(hs.begin(), hs.end());
  return std::accumulate(hs.begin(), hs.end(), std::uint64_t(by_width.size() + lru.size()),
                         [](std::uint64_t a, std::uint64_t b) { return a * 31 + b; });
}

}  // namespace unit

int main() {
  std::ostringstream text;
  for (int i = 0; i < 1000; ++i)
    text << "rec" << i << ": a=" << i << ";b=" << i * 0.5 << ";c=x,y,z;d=name" << i % 7 << "\n";
  auto rs = unit::parse(text.str());
  auto idx = unit::index_by(rs, "d");
  unit::Pipeline p;
  p.filters.push_back([](const unit::Record &r) { return r.note.has_value(); });
  p.maps.push_back([](const unit::Record &r) { return r.name + ":"; });
  p.maps.push_back([](const unit::Record &r) { return std::to_string(r.fields.size()); });
  auto out = p.run(rs);
  std::cout << rs.size() << ' ' << idx.size() << ' ' << out.size() << ' ' << unit::summarize(rs) << '\n';
  return 0;
}
