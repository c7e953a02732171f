// The secure build's operations (secure.cpp): a one-way wrapper over the default ones of
// alloc.h (trailer canaries, a quarantine, zeroing on free), chosen by entry.h when kSecure.
#pragma once

#include "api/alloc.h"

namespace mapalloc {

// Which operator allocated a block: the secure build records it in the trailer and checks it
// at operator delete (delete of a new[] block, delete[] of a new block); malloc's blocks (and
// the default build's) are kMalloc, which every deallocation accepts.
enum class AllocKind : uint8_t { kMalloc = 0, kNew = 1, kNewArray = 2 };
// A sized deallocation's size when there is none.
constexpr size_t kAnySize = ~size_t{0};

void* secure_malloc(size_t size, AllocKind kind = AllocKind::kMalloc);
void secure_free(void* pointer);
// operator delete: `size` the sized forms' size (else kAnySize), checked against the requested
// size; `kind` kNew or kNewArray, checked against the allocating operator.
void secure_delete(void* pointer, size_t size, AllocKind kind);
void* secure_calloc(size_t total);
// `pointer` is not NULL and `size` not 0.
void* secure_realloc(void* pointer, size_t size);
void* secure_aligned_alloc(size_t alignment, size_t size, AllocKind kind = AllocKind::kMalloc);
// `pointer` is not NULL.
size_t secure_usable_size(const void* pointer);
// Whether `pointer` is a block of 0 bytes: those point into a reserved inaccessible region.
bool secure_is_zero_block(const void* pointer);

}  // namespace mapalloc
