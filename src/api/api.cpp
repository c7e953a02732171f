// mapalloc's own exported functions (include/mapalloc.h). Built into every variant of the
// library, including the prefix-only one used under sanitizers.
#include <errno.h>

#include "api/glibc_rules.h"
#include "core/stats.h"
#include "mapalloc.h"
#include "platform/diag.h"
#include "platform/options.h"
#include "prof/prof.h"

using namespace mapalloc;

#define MAPALLOC_STRINGIFY2(x) #x
#define MAPALLOC_STRINGIFY(x) MAPALLOC_STRINGIFY2(x)

MAPALLOC_EXPORT void* mapalloc_malloc(size_t size) { return malloc_fast(size); }
MAPALLOC_EXPORT void mapalloc_free(void* pointer) { free_fast(pointer); }
MAPALLOC_EXPORT void* mapalloc_calloc(size_t count, size_t size) {
  return calloc_impl(count, size);
}
MAPALLOC_EXPORT void* mapalloc_realloc(void* pointer, size_t size) {
  return realloc_impl(pointer, size);
}

MAPALLOC_EXPORT void* mapalloc_aligned_alloc(size_t alignment, size_t size) {
  return aligned_alloc_checked(alignment, size);
}

MAPALLOC_EXPORT size_t mapalloc_usable_size(const void* pointer) {
  return usable_size_impl(pointer);
}
MAPALLOC_EXPORT int mapalloc_owns(const void* pointer) {
  if (kSecure && secure_is_zero_block(pointer)) return 1;
  return owns_impl(pointer) ? 1 : 0;
}
MAPALLOC_EXPORT int mapalloc_trim(void) { return trim_impl(0); }

MAPALLOC_EXPORT int mapalloc_stats_get(mapalloc_stats_t* stats) {
  stats_collect(stats);
  return 0;
}

MAPALLOC_EXPORT void mapalloc_stats_print(mapalloc_writer_t writer, void* context) {
  if (writer == nullptr) {
    writer = diag_line_writer;
    context = diag_fd_context(kStderrFd);
  }
  stats_print(writer, context);
}

MAPALLOC_EXPORT int mapalloc_option_get(const char* name, long* value) {
  return value != nullptr && option_get(name, value) ? 0 : EINVAL;
}

MAPALLOC_EXPORT int mapalloc_option_set(const char* name, long value) {
  return option_set(name, value) ? 0 : EINVAL;
}

MAPALLOC_EXPORT const char* mapalloc_version(void) {
  return MAPALLOC_STRINGIFY(MAPALLOC_VERSION_MAJOR) "." MAPALLOC_STRINGIFY(
      MAPALLOC_VERSION_MINOR) "." MAPALLOC_STRINGIFY(MAPALLOC_VERSION_PATCH);
}

MAPALLOC_EXPORT int mapalloc_prof_set_active(int active) {
  free_fast(malloc_fast(1));  // the options are read (and the thread has a heap)
  return prof_set_active(active != 0) ? 1 : 0;
}

MAPALLOC_EXPORT int mapalloc_prof_dump(const char* path_prefix) {
  free_fast(malloc_fast(1));  // the options are read (and the thread has a heap)
  return prof_dump(path_prefix) == 0 ? 0 : -1;
}

// The heap profiler's stacks start below these.
__attribute__((constructor)) static void register_profiler_entry_points() {
  const uintptr_t starts[] = {reinterpret_cast<uintptr_t>(&mapalloc_malloc),
                              reinterpret_cast<uintptr_t>(&mapalloc_calloc),
                              reinterpret_cast<uintptr_t>(&mapalloc_realloc),
                              reinterpret_cast<uintptr_t>(&mapalloc_aligned_alloc)};
  prof_set_entry_points(starts, sizeof starts / sizeof starts[0]);
}
