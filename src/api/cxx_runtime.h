// The two pieces of the C++ runtime that operator new needs, reached through weak references
// so that libmapalloc itself never links libstdc++: a C++ program brings its own runtime, and
// only C++ programs call operator new.
#pragma once

namespace mapalloc {

using NewHandler = void (*)();

// std::get_new_handler(), or nullptr when no C++ runtime is present.
NewHandler cxx_new_handler();

// Throws std::bad_alloc through the program's runtime; without one, prints a diagnostic and
// aborts (only reachable from a non-C++ program calling operator new by its mangled name).
[[noreturn]] void cxx_throw_bad_alloc();

}  // namespace mapalloc
