// The secure build's operations (secure.cpp): a one-way wrapper over the default ones of
// alloc.h (trailer canaries, a quarantine, zeroing on free), chosen by entry.h when kSecure.
#pragma once

#include "api/alloc.h"

namespace mapalloc {

void* secure_malloc(size_t size);
void secure_free(void* pointer);
void* secure_calloc(size_t total);
// `pointer` is not NULL and `size` not 0.
void* secure_realloc(void* pointer, size_t size);
void* secure_aligned_alloc(size_t alignment, size_t size);
// `pointer` is not NULL.
size_t secure_usable_size(const void* pointer);

}  // namespace mapalloc
