# Writes a large C++ translation unit (templates, containers, lambdas) for the g++ benchmark.
# Usage: python3 gen_cpp.py FUNCTIONS > big.cpp
import sys

count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
print("#include <algorithm>\n#include <map>\n#include <memory>\n#include <string>")
print("#include <unordered_map>\n#include <vector>\n#include <functional>\n")
print("template <typename K, typename V> struct Table { std::map<K, std::vector<V>> rows;")
print("  void add(const K& k, const V& v) { rows[k].push_back(v); }")
print("  size_t total() const { size_t n = 0; for (auto& [k, v] : rows) n += v.size(); return n; } };\n")
for i in range(count):
    print(f"struct Item{i} {{ int a{i}; std::string name; double w; }};")
    print(f"size_t work{i}(int n) {{")
    print(f"  Table<std::string, Item{i}> table;")
    print(f"  std::unordered_map<int, std::shared_ptr<Item{i}>> index;")
    print(f"  for (int k = 0; k < n; ++k) {{ Item{i} item{{k, std::to_string(k * {i + 1}), k * 0.5}};")
    print(f"    table.add(item.name.substr(0, 2), item); index[k] = std::make_shared<Item{i}>(item); }}")
    print(f"  std::vector<Item{i}> all; for (auto& [k, p] : index) all.push_back(*p);")
    print(f"  std::sort(all.begin(), all.end(), [](const Item{i}& x, const Item{i}& y) {{ return x.name < y.name; }});")
    print(f"  std::function<size_t(size_t)> f = [&](size_t x) {{ return x + table.total() + all.size(); }};")
    print(f"  return f({i}); }}\n")
print("int main() { size_t s = 0;")
for i in range(count):
    print(f"  s += work{i}(10);")
print("  return static_cast<int>(s & 1); }")
