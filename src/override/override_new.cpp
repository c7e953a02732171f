// Every replaceable C++ operator new and operator delete: plain, array, nothrow, sized,
// std::align_val_t and their combinations. Failure follows the standard: call the installed
// new-handler until it gives up, then throw std::bad_alloc (or return nullptr for nothrow forms).
#include <new>

#include "api/operator_new.h"
#include "prof/prof.h"

using namespace mapalloc;

namespace {

MAPALLOC_INLINE void* new_or_throw(size_t size) {
  void* block = malloc_fast(size);
  if (MAPALLOC_LIKELY(block != nullptr)) return block;
  block = new_retry_with_handler(size, kMinAlignBytes);
  if (block == nullptr) cxx_throw_bad_alloc();
  return block;
}

void* new_or_throw(size_t size, std::align_val_t alignment) {
  void* block = aligned_new(size, static_cast<size_t>(alignment));
  if (block == nullptr) block = new_retry_with_handler(size, static_cast<size_t>(alignment));
  if (block == nullptr) cxx_throw_bad_alloc();
  return block;
}

void* new_or_null(size_t size) {
  void* block = malloc_fast(size);
  return block != nullptr ? block : new_retry_with_handler(size, kMinAlignBytes);
}

void* new_or_null(size_t size, std::align_val_t alignment) {
  void* block = aligned_new(size, static_cast<size_t>(alignment));
  return block != nullptr ? block : new_retry_with_handler(size, static_cast<size_t>(alignment));
}

}  // namespace

#define MAPALLOC_CXX_EXPORT __attribute__((visibility("default")))

MAPALLOC_CXX_EXPORT void* operator new(size_t size) { return new_or_throw(size); }
MAPALLOC_CXX_EXPORT void* operator new[](size_t size) { return new_or_throw(size); }
MAPALLOC_CXX_EXPORT void* operator new(size_t size, const std::nothrow_t&) noexcept {
  return new_or_null(size);
}
MAPALLOC_CXX_EXPORT void* operator new[](size_t size, const std::nothrow_t&) noexcept {
  return new_or_null(size);
}
MAPALLOC_CXX_EXPORT void* operator new(size_t size, std::align_val_t alignment) {
  return new_or_throw(size, alignment);
}
MAPALLOC_CXX_EXPORT void* operator new[](size_t size, std::align_val_t alignment) {
  return new_or_throw(size, alignment);
}
MAPALLOC_CXX_EXPORT void* operator new(size_t size, std::align_val_t alignment,
                                       const std::nothrow_t&) noexcept {
  return new_or_null(size, alignment);
}
MAPALLOC_CXX_EXPORT void* operator new[](size_t size, std::align_val_t alignment,
                                         const std::nothrow_t&) noexcept {
  return new_or_null(size, alignment);
}

MAPALLOC_CXX_EXPORT void operator delete(void* pointer) noexcept { free_fast(pointer); }
MAPALLOC_CXX_EXPORT void operator delete[](void* pointer) noexcept { free_fast(pointer); }
MAPALLOC_CXX_EXPORT void operator delete(void* pointer, size_t) noexcept { free_fast(pointer); }
MAPALLOC_CXX_EXPORT void operator delete[](void* pointer, size_t) noexcept { free_fast(pointer); }
MAPALLOC_CXX_EXPORT void operator delete(void* pointer, const std::nothrow_t&) noexcept {
  free_fast(pointer);
}
MAPALLOC_CXX_EXPORT void operator delete[](void* pointer, const std::nothrow_t&) noexcept {
  free_fast(pointer);
}
MAPALLOC_CXX_EXPORT void operator delete(void* pointer, std::align_val_t) noexcept {
  free_fast(pointer);
}
MAPALLOC_CXX_EXPORT void operator delete[](void* pointer, std::align_val_t) noexcept {
  free_fast(pointer);
}
MAPALLOC_CXX_EXPORT void operator delete(void* pointer, size_t, std::align_val_t) noexcept {
  free_fast(pointer);
}
MAPALLOC_CXX_EXPORT void operator delete[](void* pointer, size_t, std::align_val_t) noexcept {
  free_fast(pointer);
}
MAPALLOC_CXX_EXPORT void operator delete(void* pointer, std::align_val_t,
                                         const std::nothrow_t&) noexcept {
  free_fast(pointer);
}
MAPALLOC_CXX_EXPORT void operator delete[](void* pointer, std::align_val_t,
                                           const std::nothrow_t&) noexcept {
  free_fast(pointer);
}

// The heap profiler's stacks start below these.
__attribute__((constructor)) static void register_profiler_entry_points() {
  using Plain = void* (*)(size_t);
  using Nothrow = void* (*)(size_t, const std::nothrow_t&);
  using Aligned = void* (*)(size_t, std::align_val_t);
  using AlignedNothrow = void* (*)(size_t, std::align_val_t, const std::nothrow_t&);
  const uintptr_t starts[] = {
      reinterpret_cast<uintptr_t>(static_cast<Plain>(&operator new)),
      reinterpret_cast<uintptr_t>(static_cast<Plain>(&operator new[])),
      reinterpret_cast<uintptr_t>(static_cast<Nothrow>(&operator new)),
      reinterpret_cast<uintptr_t>(static_cast<Nothrow>(&operator new[])),
      reinterpret_cast<uintptr_t>(static_cast<Aligned>(&operator new)),
      reinterpret_cast<uintptr_t>(static_cast<Aligned>(&operator new[])),
      reinterpret_cast<uintptr_t>(static_cast<AlignedNothrow>(&operator new)),
      reinterpret_cast<uintptr_t>(static_cast<AlignedNothrow>(&operator new[]))};
  mapalloc::prof_set_entry_points(starts, sizeof starts / sizeof starts[0]);
}
