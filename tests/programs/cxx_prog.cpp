// A C++ program for the preload and static-link tests: operator new/delete must be mapalloc's,
// std::bad_alloc must propagate, and the standard containers must work.
#include <cstdio>
#include <map>
#include <new>
#include <string>
#include <vector>

#include "mapalloc.h"

// Built with MAPALLOC_PRELOADED for the LD_PRELOAD test: links without mapalloc and finds it at
// run time.
#ifdef MAPALLOC_PRELOADED
#pragma weak mapalloc_owns
#endif

int main() {
  int failures = 0;
  std::map<std::string, std::vector<long>> table;
  for (long i = 0; i < 100000; ++i) table[std::to_string(i % 5000)].push_back(i);
  long sum = 0;
  for (auto& [key, values] : table) sum += static_cast<long>(values.size());
  if (sum != 100000) ++failures;
  int* value = new int(5);
  if (mapalloc_owns == nullptr || !mapalloc_owns(value)) ++failures;
  delete value;
  try {
    volatile size_t huge = static_cast<size_t>(-1) / 4;
    char* impossible = new char[huge];
    impossible[0] = 0;
    ++failures;
  } catch (const std::bad_alloc&) {
  }
  std::printf("%s\n", failures == 0 ? "c++ program: ok" : "c++ program: FAILED");
  return failures == 0 ? 0 : 1;
}
