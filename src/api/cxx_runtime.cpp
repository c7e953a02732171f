// Kept apart from <new>: the weak declarations below name libstdc++'s symbols directly.
#include "api/cxx_runtime.h"

#include "platform/diag.h"

extern "C" {
mapalloc::NewHandler runtime_get_new_handler() __asm__("_ZSt15get_new_handlerv")
    __attribute__((weak));
[[noreturn]] void runtime_throw_bad_alloc() __asm__("_ZSt17__throw_bad_allocv")
    __attribute__((weak));
}

namespace mapalloc {

NewHandler cxx_new_handler() {
  return runtime_get_new_handler != nullptr ? runtime_get_new_handler() : nullptr;
}

void cxx_throw_bad_alloc() {
  if (runtime_throw_bad_alloc != nullptr) runtime_throw_bad_alloc();
  fatal("operator new: out of memory and no C++ runtime to throw std::bad_alloc");
}

}  // namespace mapalloc
