/* stress_alloc.h — the one place where the stress programs call the allocator.
 *
 * By default the macros call the standard functions, so a program can run under any allocator
 * (glibc, or one chosen with LD_PRELOAD, or libmapalloc.a linked in statically).
 *
 * Compiled with -DSTRESS_MAPALLOC_PREFIX they call mapalloc's own names from
 * include/mapalloc.h instead, so that a -fsanitize=thread build (where the sanitizer keeps its
 * own malloc) can link build/libmapalloc-prefixed.a and put mapalloc under the programs' load.
 * The library itself is not instrumented there, so its internal hand-over of memory from one
 * thread to another (a block freed by one thread, reused by another) is invisible to
 * ThreadSanitizer, which would report the reuse as a race. The macros tell it: a free
 * "releases" the block's memory and an allocation "acquires" it (see stress_regions_). What is
 * left is what we want to see: two threads touching the same bytes while both hold them, e.g.
 * because the allocator handed one block out twice.
 */
#ifndef STRESS_ALLOC_H
#define STRESS_ALLOC_H

#include <stddef.h>
#include <stdlib.h>

#ifdef STRESS_MAPALLOC_PREFIX

#include "mapalloc.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STRESS_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define STRESS_TSAN 1
#endif

#ifdef STRESS_TSAN
/* 1. Happens-before from every free of a block to every later allocation overlapping it: each
 *    64 KiB region a block covers is "released" before the block is freed and "acquired" after
 *    an allocation returns it (ThreadSanitizer keeps a sync object per address; two blocks at
 *    the same bytes share a region, whatever their starts).
 * 2. Accesses made inside the library (memcpy in realloc, memset in calloc: libc's, which the
 *    sanitizer intercepts) are ignored; the library is not instrumented anyway. */
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
#define STRESS_TSAN_REGION ((size_t)1 << 16)
static inline size_t stress_usable_(const void* p) {
  __tsan_ignore_thread_begin();
  size_t n = mapalloc_usable_size(p);
  __tsan_ignore_thread_end();
  return n;
}
static inline void stress_regions_(void* p, void (*op)(void*)) {
  if (!p) return;
  size_t n = stress_usable_(p);
  size_t first = (size_t)p & ~(STRESS_TSAN_REGION - 1), last = (size_t)p + (n ? n : 1) - 1;
  op(p);
  for (size_t r = first + STRESS_TSAN_REGION; r <= last; r += STRESS_TSAN_REGION) op((void*)r);
}
#define STRESS_IN_LIB_(call)             \
  ({                                     \
    __tsan_ignore_thread_begin();        \
    __typeof__(call) r_ = (call);        \
    __tsan_ignore_thread_end();          \
    stress_regions_(r_, __tsan_acquire); \
    r_;                                  \
  })
static inline void stress_free_(void* p) {
  stress_regions_(p, __tsan_release);
  __tsan_ignore_thread_begin();
  mapalloc_free(p);
  __tsan_ignore_thread_end();
}
static inline void* stress_realloc_(void* p, size_t n) {
  stress_regions_(p, __tsan_release);
  return STRESS_IN_LIB_(mapalloc_realloc(p, n));
}
#define S_MALLOC(n) STRESS_IN_LIB_(mapalloc_malloc(n))
#define S_FREE(p) stress_free_(p)
#define S_CALLOC(n, m) STRESS_IN_LIB_(mapalloc_calloc((n), (m)))
#define S_REALLOC(p, n) stress_realloc_((p), (n))
#define S_ALIGNED_ALLOC(a, n) STRESS_IN_LIB_(mapalloc_aligned_alloc((a), (n)))
#define S_USABLE_SIZE(p) stress_usable_(p)
#else
#define S_MALLOC(n) mapalloc_malloc(n)
#define S_FREE(p) mapalloc_free(p)
#define S_CALLOC(n, m) mapalloc_calloc((n), (m))
#define S_REALLOC(p, n) mapalloc_realloc((p), (n))
#define S_ALIGNED_ALLOC(a, n) mapalloc_aligned_alloc((a), (n))
#define S_USABLE_SIZE(p) mapalloc_usable_size(p)
#endif

#define S_ALLOCATOR_NAMES "mapalloc_* (prefixed)"
/* posix_memalign has no prefixed form: programs test S_HAVE_POSIX_MEMALIGN. */
#define S_HAVE_POSIX_MEMALIGN 0

#else /* standard names */

#include <malloc.h>

#define S_ALLOCATOR_NAMES "standard"
#define S_MALLOC(n) malloc(n)
#define S_FREE(p) free(p)
#define S_CALLOC(n, m) calloc((n), (m))
#define S_REALLOC(p, n) realloc((p), (n))
#define S_ALIGNED_ALLOC(a, n) aligned_alloc((a), (n))
#define S_USABLE_SIZE(p) malloc_usable_size(p)
#define S_HAVE_POSIX_MEMALIGN 1
#define S_POSIX_MEMALIGN(pp, a, n) posix_memalign((pp), (a), (n))

#endif

#endif /* STRESS_ALLOC_H */
