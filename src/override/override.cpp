// The C, POSIX and glibc allocation entry points, interposed. Covers every symbol that glibc's
// own malloc object (malloc.o in libc.a) defines, so that a fully static program never pulls
// glibc's allocator in beside ours, plus reallocarray and cfree.
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#include "api/glibc_rules.h"
#include "api/init.h"
#include "api/prof_hooks.h"
#include "core/stats.h"
#include "platform/diag.h"
#include "platform/process.h"
#include "prof/prof.h"

using namespace mapalloc;

// The allocator's functions that may be the outermost of its frames on a sampled allocation's
// stack (tail calls leave the exported entry point itself out): the stack starts below the
// outermost of them (os_backtrace).
namespace {

// (Here, above every layer it names, and in the object a static link always pulls in.)
__attribute__((constructor)) void register_profiler_frames() {
  const uintptr_t starts[] = {reinterpret_cast<uintptr_t>(&malloc_slow),
                              reinterpret_cast<uintptr_t>(&default_calloc),
                              reinterpret_cast<uintptr_t>(&default_realloc),
                              reinterpret_cast<uintptr_t>(&default_aligned_alloc),
                              reinterpret_cast<uintptr_t>(&calloc_impl),
                              reinterpret_cast<uintptr_t>(&realloc_impl),
                              reinterpret_cast<uintptr_t>(&aligned_alloc_impl),
                              reinterpret_cast<uintptr_t>(&posix_memalign_impl),
                              reinterpret_cast<uintptr_t>(&aligned_alloc_checked),
                              reinterpret_cast<uintptr_t>(&memalign_impl),
                              reinterpret_cast<uintptr_t>(&pvalloc_impl),
                              reinterpret_cast<uintptr_t>(&secure_malloc),
                              reinterpret_cast<uintptr_t>(&secure_calloc),
                              reinterpret_cast<uintptr_t>(&secure_realloc),
                              reinterpret_cast<uintptr_t>(&secure_aligned_alloc),
                              reinterpret_cast<uintptr_t>(&prof_class_alloc),
                              reinterpret_cast<uintptr_t>(&prof_large_alloc)};
  prof_set_entry_points(starts, sizeof starts / sizeof starts[0]);
}

}  // namespace

MAPALLOC_EXPORT void* malloc(size_t size) __THROW { return malloc_fast(size); }
MAPALLOC_EXPORT void free(void* pointer) __THROW { free_fast(pointer); }
MAPALLOC_EXPORT void* calloc(size_t count, size_t size) __THROW { return calloc_impl(count, size); }
MAPALLOC_EXPORT void* realloc(void* pointer, size_t size) __THROW {
  return realloc_impl(pointer, size);
}

MAPALLOC_EXPORT void* reallocarray(void* pointer, size_t count, size_t size) __THROW {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) return out_of_memory();
  return realloc_impl(pointer, total);
}

MAPALLOC_EXPORT int posix_memalign(void** result, size_t alignment, size_t size) __THROW {
  return posix_memalign_impl(result, alignment, size);
}
MAPALLOC_EXPORT void* aligned_alloc(size_t alignment, size_t size) __THROW {
  return aligned_alloc_checked(alignment, size);
}
MAPALLOC_EXPORT void* memalign(size_t alignment, size_t size) __THROW {
  return memalign_impl(alignment, size);
}

MAPALLOC_EXPORT void* valloc(size_t size) __THROW { return aligned_alloc_impl(kOsPageBytes, size); }

MAPALLOC_EXPORT void* pvalloc(size_t size) __THROW { return pvalloc_impl(size); }

MAPALLOC_EXPORT size_t malloc_usable_size(void* pointer) __THROW {
  return usable_size_impl(pointer);
}
MAPALLOC_EXPORT int malloc_trim(size_t pad) __THROW { return trim_impl(pad); }
MAPALLOC_EXPORT void cfree(void* pointer) { free_fast(pointer); }

// glibc tuning and reporting interfaces. mallopt accepts and ignores glibc's parameters (they
// tune ptmalloc's arenas, which do not exist here).
MAPALLOC_EXPORT int mallopt(int, int) __THROW { return 1; }

// mallinfo2, in glibc's terms: arena = bytes mapped for the arenas, uordblks = in use,
// fordblks = mapped but free, hblks/hblkhd = large blocks (own mappings), keepcost = what
// malloc_trim could release now (the caches).
MAPALLOC_EXPORT struct mallinfo2 mallinfo2(void) __THROW {
  mapalloc_stats_t stats;
  stats_collect(&stats);
  struct mallinfo2 info = {};
  info.arena = stats.mapped_bytes - stats.large_bytes;
  info.uordblks = stats.in_use_bytes - stats.large_bytes;
  info.fordblks = info.arena > info.uordblks ? info.arena - info.uordblks : 0;
  info.hblks = stats.large_blocks;
  info.hblkhd = stats.large_bytes;
  info.usmblks = stats.peak_mapped_bytes;
  info.keepcost = stats.cached_segments * kSegmentBytes + stats.cached_large_bytes;
  return info;
}

MAPALLOC_EXPORT struct mallinfo mallinfo(void) __THROW {
  struct mallinfo2 wide = mallinfo2();
  struct mallinfo info = {};
  // (int fields: glibc's own mallinfo wraps around the same way past 2 GiB)
  info.arena = static_cast<int>(wide.arena);
  info.uordblks = static_cast<int>(wide.uordblks);
  info.fordblks = static_cast<int>(wide.fordblks);
  info.hblks = static_cast<int>(wide.hblks);
  info.hblkhd = static_cast<int>(wide.hblkhd);
  info.usmblks = static_cast<int>(wide.usmblks);
  info.keepcost = static_cast<int>(wide.keepcost);
  return info;
}

MAPALLOC_EXPORT void malloc_stats(void) __THROW {
  stats_print(diag_line_writer, diag_fd_context(kStderrFd));
}

MAPALLOC_EXPORT int malloc_info(int options, FILE* stream) __THROW {
  if (options != 0) {
    errno = EINVAL;
    return -1;
  }
  fprintf(stream, "<malloc version=\"mapalloc\"><system type=\"current\" size=\"%zu\"/></malloc>\n",
          os_counters.mapped_bytes.load(std::memory_order_relaxed));
  return 0;
}

#include "override/glibc_aliases.h"
MAPALLOC_ALLOCATION_ALIASES();
MAPALLOC_ALIAS(__libc_mallopt, mallopt);
MAPALLOC_ALIAS(__libc_mallinfo, mallinfo);
MAPALLOC_ALIAS(__libc_mallinfo2, mallinfo2);
MAPALLOC_ALIAS(__malloc_trim, malloc_trim);
MAPALLOC_ALIAS(__malloc_stats, malloc_stats);
MAPALLOC_ALIAS(__malloc_info, malloc_info);
MAPALLOC_ALIAS(__mallinfo, mallinfo);
MAPALLOC_ALIAS(__mallinfo2, mallinfo2);
MAPALLOC_ALIAS(__mallopt, mallopt);

// Called by a static glibc's fork() and thread exit. mapalloc holds no lock across fork (see
// spin_lock.h), so only the child has work; a dynamic glibc calls its own versions instead, and
// the pthread_atfork handler and thread key registered in init.cpp do the same work there.
MAPALLOC_EXPORT void __malloc_fork_lock_parent(void) {}
MAPALLOC_EXPORT void __malloc_fork_unlock_parent(void) {}
MAPALLOC_EXPORT void __malloc_fork_unlock_child(void) { after_fork_child(); }
MAPALLOC_EXPORT void __malloc_arena_thread_freeres(void) { thread_exit(); }

// glibc's malloc grows its main arena through this (sbrk); nothing of mapalloc calls it, but it
// completes the set of malloc.o's symbols. Same contract: NULL when the break cannot move.
MAPALLOC_EXPORT void* __glibc_morecore(ptrdiff_t increment) { return os_move_break(increment); }

// The heap profiler's stacks start below these (the caller of malloc is the first frame).
__attribute__((constructor)) static void register_profiler_entry_points() {
  const uintptr_t starts[] = {
      reinterpret_cast<uintptr_t>(&malloc),         reinterpret_cast<uintptr_t>(&calloc),
      reinterpret_cast<uintptr_t>(&realloc),        reinterpret_cast<uintptr_t>(&reallocarray),
      reinterpret_cast<uintptr_t>(&posix_memalign), reinterpret_cast<uintptr_t>(&aligned_alloc),
      reinterpret_cast<uintptr_t>(&memalign),       reinterpret_cast<uintptr_t>(&valloc),
      reinterpret_cast<uintptr_t>(&pvalloc)};
  prof_set_entry_points(starts, sizeof starts / sizeof starts[0]);
}
