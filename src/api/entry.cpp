#include "api/entry.h"

namespace mapalloc {

void* calloc_impl(size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) return out_of_memory();
  if constexpr (kDebug)
    return debug_calloc(total);
  else if constexpr (kSecure)
    return secure_calloc(total);
  else
    return default_calloc(total);
}

void* realloc_impl(void* pointer, size_t size) {
  if (pointer == nullptr) return malloc_fast(size);
  if (size == 0) {  // glibc semantics: free and return NULL
    free_fast(pointer);
    return nullptr;
  }
  if constexpr (kDebug)
    return debug_realloc(pointer, size);
  else if constexpr (kSecure)
    return secure_realloc(pointer, size);
  else
    return default_realloc(pointer, size);
}

void* aligned_alloc_impl(size_t alignment, size_t size) {
  if constexpr (kDebug)
    return debug_aligned_alloc(alignment, size);
  else if constexpr (kSecure)
    return secure_aligned_alloc(alignment, size);
  else
    return default_aligned_alloc(alignment, size);
}

size_t usable_size_impl(const void* pointer) {
  if (pointer == nullptr) return 0;
  if constexpr (kDebug)
    return debug_usable_size(pointer);
  else if constexpr (kSecure)
    return secure_usable_size(pointer);
  else
    return locate(pointer, "malloc_usable_size").usable_bytes;
}

}  // namespace mapalloc
