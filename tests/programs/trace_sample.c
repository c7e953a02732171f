/* A deterministic allocation pattern for tests/trace_test.sh: the test records it and checks
 * the trace against the exact counts and sizes below. Build it with -fno-builtin (so that the
 * compiler keeps every call). Nothing here prints (stdio would allocate its buffer). A few C++
 * operators are called by their mangled names through weak references, which the preloaded
 * tracing library satisfies: linking libstdc++ would add its own start-up allocation.
 *
 *   malloc 100 (sizes 1, 9, ..., 793: 8i + 1) + 2 (3 MiB each, large blocks) + 1 (33 bytes)
 *   calloc 50 (i + 1 elements of 24 bytes)      realloc 20 (mallocs 0..19 to twice 8i + 1)
 *     + 1 realloc(p, 0), which frees p          reallocarray 2 (4 x 100 bytes, from NULL)
 *   posix_memalign 10 (64, 100)  aligned_alloc 5 (256, 512)  memalign 5 (4096, 1000)
 *   valloc 2 (5000)  pvalloc 1 (100)  malloc_usable_size 3
 *   new 4 (40 bytes), new[] 3 (80), new(align) 2 (128-aligned, 256 bytes)
 *   delete(sized) 4, delete[] 3, delete(align) 2
 *   free 171: every block but 7 (mallocs 95..99 and the two 3 MiB blocks), plus free(NULL)
 * 207 blocks in all, 200 of them freed (by free, delete, or realloc).
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#define WEAK __attribute__((weak))
WEAK void* _Znwm(size_t);                       /* operator new(size_t) */
WEAK void* _Znam(size_t);                       /* operator new[](size_t) */
WEAK void* _ZnwmSt11align_val_t(size_t, size_t); /* operator new(size_t, align_val_t) */
WEAK void _ZdlPvm(void*, size_t);               /* operator delete(void*, size_t) */
WEAK void _ZdaPv(void*);                        /* operator delete[](void*) */
WEAK void _ZdlPvSt11align_val_t(void*, size_t); /* operator delete(void*, align_val_t) */

static void* keep[512];
static int kept;

static void* use(void* p, size_t size) {
  if (p == NULL) abort();
  if (size > 0) memset(p, 0x5a, size < 64 ? size : 64);
  keep[kept++] = p;
  return p;
}

int main(void) {
  void* mallocs[100];
  for (int i = 0; i < 100; ++i) mallocs[i] = use(malloc(8 * i + 1), 8 * i + 1);
  void* large[2] = {malloc(3 << 20), malloc(3 << 20)};
  for (int i = 0; i < 50; ++i) use(calloc(i + 1, 24), 24);
  for (int i = 0; i < 20; ++i) {
    mallocs[i] = realloc(mallocs[i], 2 * (8 * i + 1));
    if (mallocs[i] == NULL) abort();
  }
  void* p = use(malloc(33), 33);
  if (realloc(p, 0) != NULL) abort(); /* frees p */
  --kept;
  void* arrays[2];
  for (int i = 0; i < 2; ++i) arrays[i] = reallocarray(NULL, 4, 100);
  for (int i = 0; i < 10; ++i) {
    void* block;
    if (posix_memalign(&block, 64, 100) != 0) abort();
    use(block, 100);
  }
  for (int i = 0; i < 5; ++i) use(aligned_alloc(256, 512), 512);
  for (int i = 0; i < 5; ++i) use(memalign(4096, 1000), 1000);
  for (int i = 0; i < 2; ++i) use(valloc(5000), 5000);
  use(pvalloc(100), 100);
  for (int i = 0; i < 3; ++i) {
    if (malloc_usable_size(mallocs[i]) < 8 * (size_t)i + 1) abort();
  }
  if (_Znwm == NULL) return 1; /* not preloaded with a library that has the operators */
  void* objects[4];
  void* vectors[3];
  void* aligned[2];
  for (int i = 0; i < 4; ++i) objects[i] = _Znwm(40);
  for (int i = 0; i < 3; ++i) vectors[i] = _Znam(80);
  for (int i = 0; i < 2; ++i) aligned[i] = _ZnwmSt11align_val_t(256, 128);
  for (int i = 0; i < 4; ++i) _ZdlPvm(objects[i], 40);
  for (int i = 0; i < 3; ++i) _ZdaPv(vectors[i]);
  for (int i = 0; i < 2; ++i) _ZdlPvSt11align_val_t(aligned[i], 128);

  /* Free everything but mallocs 95..99 and the large blocks (7 blocks never freed). */
  for (int i = 0; i < 95; ++i) free(mallocs[i]);
  for (int i = 100; i < kept; ++i) free(keep[i]);
  for (int i = 0; i < 2; ++i) free(arrays[i]);
  free(NULL);
  (void)large;
  return 0;
}
