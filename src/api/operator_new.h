// The failure protocol of operator new, shared by override_new.cpp and the tracing library's
// operators: an aligned form refuses alignments that are not powers of two; after a failure
// the installed new-handler is called until it gives up (then the caller throws
// std::bad_alloc, or returns nullptr for the nothrow forms).
#pragma once

#include "api/cxx_runtime.h"
#include "api/entry.h"

namespace mapalloc {

inline void* aligned_new(size_t size, size_t alignment, AllocKind kind = AllocKind::kMalloc) {
  if (!is_power_of_two(alignment)) return nullptr;
  return aligned_alloc_impl(alignment, size, kind);
}

// Retries through the new-handler; nullptr once there is none.
MAPALLOC_COLD inline void* new_retry_with_handler(size_t size, size_t alignment) {
  for (;;) {
    NewHandler handler = cxx_new_handler();
    if (handler == nullptr) return nullptr;
    handler();
    void* block = alignment <= kMinAlignBytes ? malloc_fast(size) : aligned_new(size, alignment);
    if (block != nullptr) return block;
  }
}

}  // namespace mapalloc
