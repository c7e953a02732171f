// The debug build's operations (debug.cpp): a one-way wrapper over the default ones of alloc.h,
// chosen by entry.h when kDebug. They check the fill pattern of a block handed out again, fill
// freed size-class blocks, and tell memcheck about every block (platform/memcheck.h).
#pragma once

#include "api/alloc.h"

namespace mapalloc {

void* debug_malloc(size_t size);
void debug_free(void* pointer);
// Sized operator delete: the size checked as the default build's slow path does (not under
// Valgrind, whose red zones make blocks bigger than asked for), then debug_free.
void debug_free_sized(void* pointer, size_t size, bool exact_class);
void* debug_calloc(size_t total);
// `pointer` is not NULL and `size` not 0.
void* debug_realloc(void* pointer, size_t size);
void* debug_aligned_alloc(size_t alignment, size_t size);
// `pointer` is not NULL.
size_t debug_usable_size(const void* pointer);

}  // namespace mapalloc
