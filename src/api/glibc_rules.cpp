#include "api/glibc_rules.h"

#include <errno.h>

namespace mapalloc {

int posix_memalign_impl(void** result, size_t alignment, size_t size) {
  if (!is_power_of_two(alignment) || alignment % sizeof(void*) != 0) return EINVAL;
  void* block = aligned_alloc_impl(alignment, size);
  if (block == nullptr) return ENOMEM;  // errno is ENOMEM too, as with glibc
  *result = block;
  return 0;
}

void* aligned_alloc_checked(size_t alignment, size_t size) {
  if (!is_power_of_two(alignment)) {  // as glibc 2.38 and C17 DR 460
    errno = EINVAL;
    return nullptr;
  }
  return aligned_alloc_impl(alignment, size);
}

void* memalign_impl(size_t alignment, size_t size) {
  // glibc rounds a non-power-of-two alignment up; beyond SIZE_MAX/2+1 it cannot be one.
  if (alignment > SIZE_MAX / 2 + 1) {
    errno = EINVAL;
    return nullptr;
  }
  size_t rounded = alignment <= 1 ? 1 : size_t{1} << (64 - __builtin_clzll(alignment - 1));
  return aligned_alloc_impl(rounded, size);
}

void* pvalloc_impl(size_t size) {
  size_t rounded = align_up(size == 0 ? 1 : size, kOsPageBytes);
  if (rounded < size) return out_of_memory();
  return aligned_alloc_impl(kOsPageBytes, rounded);
}

}  // namespace mapalloc
