// The secure build's operations (secure.cpp): a one-way wrapper over the default ones of
// alloc.h (trailer canaries, a quarantine, zeroing on free), chosen by entry.h when kSecure.
#pragma once

#include "api/alloc.h"

namespace mapalloc {

// Bytes the secure build adds after every block (its canary trailer): the heap profiler reports
// the size the program asked for.
constexpr size_t kSecureTrailerBytes = kSecure ? 16 : 0;

void* secure_malloc(size_t size);
void secure_free(void* pointer);
void* secure_calloc(size_t total);
// `pointer` is not NULL and `size` not 0.
void* secure_realloc(void* pointer, size_t size);
void* secure_aligned_alloc(size_t alignment, size_t size);
// `pointer` is not NULL.
size_t secure_usable_size(const void* pointer);

}  // namespace mapalloc
