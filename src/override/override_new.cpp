// Every replaceable C++ operator new and operator delete: plain, array, nothrow, sized,
// std::align_val_t and their combinations. Failure follows the standard: call the installed
// new-handler until it gives up, then throw std::bad_alloc (or return nullptr for nothrow forms).
#include <new>

#include "api/operator_new.h"
#include "prof/prof.h"

using namespace mapalloc;

namespace {

// `kind`: which operator allocates (the secure build records it and checks it at delete).
MAPALLOC_INLINE void* new_or_throw(size_t size, AllocKind kind) {
  void* block = new_fast(size, kind);
  if (MAPALLOC_LIKELY(block != nullptr)) return block;
  block = new_retry_with_handler(size, kMinAlignBytes);
  if (block == nullptr) cxx_throw_bad_alloc();
  return block;
}

void* new_or_throw(size_t size, std::align_val_t alignment, AllocKind kind) {
  void* block = aligned_new(size, static_cast<size_t>(alignment), kind);
  if (block == nullptr) block = new_retry_with_handler(size, static_cast<size_t>(alignment));
  if (block == nullptr) cxx_throw_bad_alloc();
  return block;
}

void* new_or_null(size_t size, AllocKind kind) {
  void* block = new_fast(size, kind);
  return block != nullptr ? block : new_retry_with_handler(size, kMinAlignBytes);
}

void* new_or_null(size_t size, std::align_val_t alignment, AllocKind kind) {
  void* block = aligned_new(size, static_cast<size_t>(alignment), kind);
  return block != nullptr ? block : new_retry_with_handler(size, static_cast<size_t>(alignment));
}

constexpr AllocKind kNew = AllocKind::kNew;
constexpr AllocKind kArray = AllocKind::kNewArray;

}  // namespace

#define MAPALLOC_CXX_EXPORT __attribute__((visibility("default")))

MAPALLOC_CXX_EXPORT void* operator new(size_t size) { return new_or_throw(size, kNew); }
MAPALLOC_CXX_EXPORT void* operator new[](size_t size) { return new_or_throw(size, kArray); }
MAPALLOC_CXX_EXPORT void* operator new(size_t size, const std::nothrow_t&) noexcept {
  return new_or_null(size, kNew);
}
MAPALLOC_CXX_EXPORT void* operator new[](size_t size, const std::nothrow_t&) noexcept {
  return new_or_null(size, kArray);
}
MAPALLOC_CXX_EXPORT void* operator new(size_t size, std::align_val_t alignment) {
  return new_or_throw(size, alignment, kNew);
}
MAPALLOC_CXX_EXPORT void* operator new[](size_t size, std::align_val_t alignment) {
  return new_or_throw(size, alignment, kArray);
}
MAPALLOC_CXX_EXPORT void* operator new(size_t size, std::align_val_t alignment,
                                       const std::nothrow_t&) noexcept {
  return new_or_null(size, alignment, kNew);
}
MAPALLOC_CXX_EXPORT void* operator new[](size_t size, std::align_val_t alignment,
                                         const std::nothrow_t&) noexcept {
  return new_or_null(size, alignment, kArray);
}

// Sized forms: the size is checked (default build: not above the block's, and exactly on the
// slow path; secure build: against the requested size). The secure build also checks new against
// delete[] and new[] against delete.
MAPALLOC_CXX_EXPORT void operator delete(void* pointer) noexcept { delete_fast(pointer, kNew); }
MAPALLOC_CXX_EXPORT void operator delete[](void* pointer) noexcept { delete_fast(pointer, kArray); }
MAPALLOC_CXX_EXPORT void operator delete(void* pointer, size_t size) noexcept {
  delete_sized_fast(pointer, kNew, size);
}
MAPALLOC_CXX_EXPORT void operator delete[](void* pointer, size_t size) noexcept {
  delete_sized_fast(pointer, kArray, size);
}
MAPALLOC_CXX_EXPORT void operator delete(void* pointer, const std::nothrow_t&) noexcept {
  delete_fast(pointer, kNew);
}
MAPALLOC_CXX_EXPORT void operator delete[](void* pointer, const std::nothrow_t&) noexcept {
  delete_fast(pointer, kArray);
}
MAPALLOC_CXX_EXPORT void operator delete(void* pointer, std::align_val_t) noexcept {
  delete_fast(pointer, kNew);
}
MAPALLOC_CXX_EXPORT void operator delete[](void* pointer, std::align_val_t) noexcept {
  delete_fast(pointer, kArray);
}
MAPALLOC_CXX_EXPORT void operator delete(void* pointer, size_t size, std::align_val_t) noexcept {
  delete_sized_fast(pointer, kNew, size, false);
}
MAPALLOC_CXX_EXPORT void operator delete[](void* pointer, size_t size, std::align_val_t) noexcept {
  delete_sized_fast(pointer, kArray, size, false);
}
MAPALLOC_CXX_EXPORT void operator delete(void* pointer, std::align_val_t,
                                         const std::nothrow_t&) noexcept {
  delete_fast(pointer, kNew);
}
MAPALLOC_CXX_EXPORT void operator delete[](void* pointer, std::align_val_t,
                                           const std::nothrow_t&) noexcept {
  delete_fast(pointer, kArray);
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
