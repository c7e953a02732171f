// The operations every exported entry point calls (override.cpp, override_new.cpp, api.cpp and
// the tracing library): the default build's (alloc.h), the secure build's (secure.h) or the
// debug build's (debug.h), chosen at compile time, after the checks common to all (NULL, size
// 0, overflowing products).
#pragma once

#include "api/alloc.h"
#include "api/debug.h"
#include "api/secure.h"

namespace mapalloc {

MAPALLOC_INLINE void* malloc_fast(size_t size) {
  if constexpr (kDebug)
    return debug_malloc(size);
  else if constexpr (kSecure)
    return secure_malloc(size);
  else
    return default_malloc(size);
}

MAPALLOC_INLINE void free_fast(void* pointer) {
  if constexpr (kDebug)
    debug_free(pointer);
  else if constexpr (kSecure)
    secure_free(pointer);
  else
    default_free(pointer);
}

// operator new: malloc, and the secure build records `kind` (kNew or kNewArray).
MAPALLOC_INLINE void* new_fast(size_t size, AllocKind kind) {
  if constexpr (kDebug)
    return debug_malloc(size);
  else if constexpr (kSecure)
    return secure_malloc(size, kind);
  else
    return default_malloc(size);
}

// operator delete: `kind` the operator's (kNew or kNewArray). The secure build checks it
// against the allocating operator; the debug build frees through debug_free (fill pattern,
// validation).
MAPALLOC_INLINE void delete_fast(void* pointer, AllocKind kind) {
  if constexpr (kDebug)
    debug_free(pointer);
  else if constexpr (kSecure)
    secure_delete(pointer, kAnySize, kind);
  else
    default_free(pointer);
}

// The sized forms: `size` the size given, `exact_class` false for the aligned forms. The
// default build checks the size against the block (default_free_sized), the secure build
// against the requested size and the kind against the allocating operator; the debug build
// checks every size exactly.
MAPALLOC_INLINE void delete_sized_fast(void* pointer, AllocKind kind, size_t size,
                                       bool exact_class = true) {
  if constexpr (kDebug)
    debug_free_sized(pointer, size, exact_class);
  else if constexpr (kSecure)
    secure_delete(pointer, size, kind);
  else if (exact_class)
    default_free_sized(pointer, size);
  else
    free_sized_slow(pointer, size, false);
}

// NULL with errno = ENOMEM when count * size overflows.
void* calloc_impl(size_t count, size_t size);

// glibc's realloc: NULL allocates, size 0 frees and returns NULL; on failure the block stays.
void* realloc_impl(void* pointer, size_t size);

// `alignment` must be a power of two; returns nullptr with errno = ENOMEM on failure.
void* aligned_alloc_impl(size_t alignment, size_t size, AllocKind kind = AllocKind::kMalloc);

// 0 for NULL; aborts with a diagnostic for pointers that are not live blocks of ours.
size_t usable_size_impl(const void* pointer);

}  // namespace mapalloc
