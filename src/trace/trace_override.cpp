// The tracing build's entry points (build/libmapalloc-trace.so): every allocation function
// that override.cpp and override_new.cpp export, each doing the core's work and telling the
// recorder (trace.cpp, through trace_recorder.h) what it did. The rest of override.cpp's
// exports (mallopt, mallinfo, malloc_trim, ...) come from a weakened copy of override.o
// (scripts/make/trace.mk).
#include <errno.h>
#include <malloc.h>

#include <new>

#include "api/glibc_rules.h"
#include "api/operator_new.h"
#include "trace/trace.h"
#include "trace/trace_recorder.h"

using namespace mapalloc;
using namespace mapalloc::tracer;
namespace tr = mapalloc::trace;

namespace {

// kind: kArrayBit | kNothrowBit; alignment 0: the default one.
MAPALLOC_INLINE void* traced_new(unsigned kind, size_t size, size_t alignment) {
  void* block = alignment == 0 ? malloc_fast(size) : aligned_new(size, alignment);
  if (MAPALLOC_UNLIKELY(block == nullptr)) {
    block = new_retry_with_handler(size, alignment == 0 ? kMinAlignBytes : alignment);
  }
  note_alloc(tr::kNew | kind | (alignment != 0 ? tr::kAlignedBit : 0), 0, size, alignment, block);
  if (MAPALLOC_UNLIKELY(block == nullptr) && (kind & tr::kNothrowBit) == 0) {
    cxx_throw_bad_alloc();
  }
  return block;
}

// kind: kArrayBit | kSizedBit | kAlignedBit.
MAPALLOC_INLINE void traced_delete(unsigned kind, void* block, size_t size, size_t alignment) {
  note_release(tr::kDelete | kind, block, size, alignment);
  free_fast(block);
}

}  // namespace

// ---- the C, POSIX and glibc entry points -------------------------------------------------------
MAPALLOC_EXPORT void* malloc(size_t size) __THROW {
  return note_alloc(tr::kMalloc, 0, size, 0, malloc_fast(size));
}
MAPALLOC_EXPORT void free(void* pointer) __THROW {
  note_release(tr::kFree, pointer);
  free_fast(pointer);
}
MAPALLOC_EXPORT void cfree(void* pointer) { free(pointer); }
MAPALLOC_EXPORT void* calloc(size_t count, size_t size) __THROW {
  return note_alloc(tr::kCalloc, count, size, 0, calloc_impl(count, size));
}
MAPALLOC_EXPORT void* realloc(void* pointer, size_t size) __THROW {
  return traced_realloc(tr::kRealloc, pointer, 0, size, size, false);
}
MAPALLOC_EXPORT void* reallocarray(void* pointer, size_t count, size_t size) __THROW {
  size_t total;
  bool overflow = __builtin_mul_overflow(count, size, &total);
  if (overflow) errno = ENOMEM;
  return traced_realloc(tr::kReallocarray, pointer, count, size, total, overflow);
}

MAPALLOC_EXPORT int posix_memalign(void** result, size_t alignment, size_t size) __THROW {
  void* block = nullptr;
  int status = posix_memalign_impl(&block, alignment, size);
  note_alloc(tr::kPosixMemalign, 0, size, alignment, block);
  if (status == 0) *result = block;
  return status;
}

MAPALLOC_EXPORT void* aligned_alloc(size_t alignment, size_t size) __THROW {
  return note_alloc(tr::kAlignedAlloc, 0, size, alignment, aligned_alloc_checked(alignment, size));
}

MAPALLOC_EXPORT void* memalign(size_t alignment, size_t size) __THROW {
  return note_alloc(tr::kMemalign, 0, size, alignment, memalign_impl(alignment, size));
}

MAPALLOC_EXPORT void* valloc(size_t size) __THROW {
  return note_alloc(tr::kValloc, 0, size, 0, aligned_alloc_impl(kOsPageBytes, size));
}

MAPALLOC_EXPORT void* pvalloc(size_t size) __THROW {
  return note_alloc(tr::kPvalloc, 0, size, 0, pvalloc_impl(size));
}

MAPALLOC_EXPORT size_t malloc_usable_size(void* pointer) __THROW {
  note_release(tr::kUsableSize, pointer);
  return usable_size_impl(pointer);
}

#include "override/glibc_aliases.h"
MAPALLOC_ALLOCATION_ALIASES();

// ---- C++ operators
// -------------------------------------------------------------------------------
#define MAPALLOC_CXX_EXPORT __attribute__((visibility("default")))
using std::align_val_t;
using std::nothrow_t;
constexpr unsigned kArr = tr::kArrayBit, kNothrow = tr::kNothrowBit;
constexpr unsigned kSized = tr::kSizedBit, kAligned = tr::kAlignedBit;
inline size_t bytes_of(align_val_t alignment) { return static_cast<size_t>(alignment); }

// Every form of operator new and operator delete, spelled once per family through a macro.
#define MAPALLOC_NEW_FORMS(name, kind)                                                 \
  MAPALLOC_CXX_EXPORT void* name(size_t n) { return traced_new(kind, n, 0); }          \
  MAPALLOC_CXX_EXPORT void* name(size_t n, const nothrow_t&) noexcept {                \
    return traced_new(kind | kNothrow, n, 0);                                          \
  }                                                                                    \
  MAPALLOC_CXX_EXPORT void* name(size_t n, align_val_t a) {                            \
    return traced_new(kind, n, bytes_of(a));                                           \
  }                                                                                    \
  MAPALLOC_CXX_EXPORT void* name(size_t n, align_val_t a, const nothrow_t&) noexcept { \
    return traced_new(kind | kNothrow, n, bytes_of(a));                                \
  }
#define MAPALLOC_DELETE_FORMS(name, kind)                                            \
  MAPALLOC_CXX_EXPORT void name(void* p) noexcept { traced_delete(kind, p, 0, 0); }  \
  MAPALLOC_CXX_EXPORT void name(void* p, size_t n) noexcept {                        \
    traced_delete(kind | kSized, p, n, 0);                                           \
  }                                                                                  \
  MAPALLOC_CXX_EXPORT void name(void* p, const nothrow_t&) noexcept {                \
    traced_delete(kind, p, 0, 0);                                                    \
  }                                                                                  \
  MAPALLOC_CXX_EXPORT void name(void* p, align_val_t a) noexcept {                   \
    traced_delete(kind | kAligned, p, 0, bytes_of(a));                               \
  }                                                                                  \
  MAPALLOC_CXX_EXPORT void name(void* p, size_t n, align_val_t a) noexcept {         \
    traced_delete(kind | kSized | kAligned, p, n, bytes_of(a));                      \
  }                                                                                  \
  MAPALLOC_CXX_EXPORT void name(void* p, align_val_t a, const nothrow_t&) noexcept { \
    traced_delete(kind | kAligned, p, 0, bytes_of(a));                               \
  }
MAPALLOC_NEW_FORMS(operator new, 0)
MAPALLOC_NEW_FORMS(operator new[], kArr)
MAPALLOC_DELETE_FORMS(operator delete, 0)
MAPALLOC_DELETE_FORMS(operator delete[], kArr)
