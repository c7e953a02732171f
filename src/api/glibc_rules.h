// The argument rules of the aligned entry points of the same names (override.cpp, and the
// tracing library's trace_override.cpp), glibc's where the standards leave a choice: EINVAL
// for alignments they refuse, glibc's rounding for memalign and pvalloc, and errno = ENOMEM
// whenever they fail for want of memory (posix_memalign included, as glibc's).
#pragma once

#include "api/entry.h"

namespace mapalloc {

// Returns 0, EINVAL or ENOMEM; *result is set only on success.
int posix_memalign_impl(void** result, size_t alignment, size_t size);
// aligned_alloc: a power-of-two alignment (glibc 2.38, C17 DR 460), else EINVAL.
void* aligned_alloc_checked(size_t alignment, size_t size);
void* memalign_impl(size_t alignment, size_t size);
void* pvalloc_impl(size_t size);

}  // namespace mapalloc
