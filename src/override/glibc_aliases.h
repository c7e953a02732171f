// glibc's internal names for the allocation functions. libc calls some of them directly; in a
// static program any one left undefined would drag glibc's malloc.o (and duplicate symbols) in.
// Included by each file that defines malloc, free, ... (override.cpp, and trace_override.cpp
// for the tracing library) after those definitions; the names must alias that file's own.
// (The aliases need not repeat the declarations' attributes: they are definitions, not calls.)
#pragma once

#pragma GCC diagnostic ignored "-Wmissing-attributes"
#define MAPALLOC_ALIAS(name, target) \
  MAPALLOC_EXPORT __typeof__(target) name __attribute__((alias(#target)))

#define MAPALLOC_ALLOCATION_ALIASES()                \
  MAPALLOC_ALIAS(__libc_malloc, malloc);             \
  MAPALLOC_ALIAS(__libc_free, free);                 \
  MAPALLOC_ALIAS(__libc_calloc, calloc);             \
  MAPALLOC_ALIAS(__libc_realloc, realloc);           \
  MAPALLOC_ALIAS(__libc_memalign, memalign);         \
  MAPALLOC_ALIAS(__libc_valloc, valloc);             \
  MAPALLOC_ALIAS(__libc_pvalloc, pvalloc);           \
  MAPALLOC_ALIAS(__libc_reallocarray, reallocarray); \
  MAPALLOC_ALIAS(__malloc, malloc);                  \
  MAPALLOC_ALIAS(__free, free);                      \
  MAPALLOC_ALIAS(__calloc, calloc);                  \
  MAPALLOC_ALIAS(__realloc, realloc);                \
  MAPALLOC_ALIAS(__memalign, memalign);              \
  MAPALLOC_ALIAS(__valloc, valloc);                  \
  MAPALLOC_ALIAS(__pvalloc, pvalloc);                \
  MAPALLOC_ALIAS(__posix_memalign, posix_memalign);  \
  MAPALLOC_ALIAS(__malloc_usable_size, malloc_usable_size)
