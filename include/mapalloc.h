/* mapalloc: a malloc replacement on anonymous mmap.
 *
 * Linking or preloading libmapalloc replaces malloc, free and every other allocation entry
 * point of C, POSIX, glibc and C++. This header adds mapalloc's own functions, usable from C and
 * C++. They work the same whether or not the standard names are overridden (the prefix-only
 * build, libmapalloc-prefixed.a, provides these and nothing else).
 */
#ifndef MAPALLOC_H
#define MAPALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MAPALLOC_VERSION_MAJOR 0
#define MAPALLOC_VERSION_MINOR 1
#define MAPALLOC_VERSION_PATCH 0

/* The standard operations under mapalloc's own names (same semantics as the glibc ones). */
void* mapalloc_malloc(size_t size);
void mapalloc_free(void* pointer);
void* mapalloc_calloc(size_t count, size_t size);
void* mapalloc_realloc(void* pointer, size_t size);
/* alignment: a power of two (EINVAL otherwise); any size. */
void* mapalloc_aligned_alloc(size_t alignment, size_t size);
size_t mapalloc_usable_size(const void* pointer);

/* 1 if `pointer` is the start of a live block allocated by mapalloc, else 0. Never aborts. */
int mapalloc_owns(const void* pointer);

/* Gives every unused page back to the OS now (as malloc_trim(0)); 1 if memory was released. */
int mapalloc_trim(void);

/* "major.minor.patch" */
const char* mapalloc_version(void);

#ifdef __cplusplus
}
#endif

#endif /* MAPALLOC_H */
