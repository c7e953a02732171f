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
#define MAPALLOC_VERSION_MINOR 2
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

/* ---- statistics ---------------------------------------------------------------------------- */

/* Receives the statistics table a line at a time (no trailing newline). */
typedef void (*mapalloc_writer_t)(void* context, const char* line);

#define MAPALLOC_STATS_MAX_CLASSES 96

typedef struct mapalloc_class_stats {
  size_t block_bytes;     /* block size of the size class */
  size_t blocks_in_use;   /* held by the program, or cached in a thread's free list */
  size_t blocks_capacity; /* blocks of the spans that serve the class */
  size_t spans;
} mapalloc_class_stats_t;

/* Figures of the whole process. Other threads' pages are read without synchronisation, so the
 * in-use figures are estimates while threads run. */
typedef struct mapalloc_stats {
  size_t in_use_bytes; /* blocks in use (arena blocks, plus large blocks' mappings) */
  size_t in_use_blocks;
  size_t large_bytes; /* large blocks (own mappings), included above */
  size_t large_blocks;
  size_t mapped_bytes; /* everything mapped by mapalloc */
  size_t peak_mapped_bytes;
  size_t resident_bytes;      /* estimate of mapalloc's resident memory */
  size_t peak_resident_bytes; /* the process's peak resident memory (VmHWM) */
  size_t purged_bytes;        /* given back with madvise, since start */
  size_t unmapped_bytes;      /* given back with munmap, since start */
  size_t mmap_calls, munmap_calls, madvise_calls, mremap_calls;
  size_t remote_frees; /* frees of blocks owned by another thread */
  size_t threads;      /* threads with a heap */
  size_t heaps;        /* heaps ever made (reused by new threads) */
  size_t segments;     /* 4 MiB segments mapped */
  size_t cached_segments;
  size_t cached_large_bytes;   /* free large-block memory kept resident for reuse (arenas) */
  size_t arenas;               /* large-block arenas */
  size_t arena_reserved_bytes; /* their address space (committed as it is used) */
  size_t class_count;
  mapalloc_class_stats_t classes[MAPALLOC_STATS_MAX_CLASSES];
} mapalloc_stats_t;

/* Fills `stats`; returns 0. */
int mapalloc_stats_get(mapalloc_stats_t* stats);

/* Prints the table through `writer` (NULL: to stderr). malloc_stats() prints the same. */
void mapalloc_stats_print(mapalloc_writer_t writer, void* context);

/* ---- options ------------------------------------------------------------------------------- */

/* Options by name: "purge_delay_ms", "unmap_delay_ms", "purge_method" (0 dontneed, 1 free),
 * "transparent_huge_pages", "stats_at_exit", "verbose", "zero_on_free" (secure build); and,
 * read-only since they act at start, "sample_ms", "fault_mmap", "fault_mmap_from". They start
 * from the MAPALLOC_* environment variables (README, "Options"). Both return 0, or EINVAL for
 * an unknown name, a value out of range, or setting a read-only option. */
int mapalloc_option_get(const char* name, long* value);
int mapalloc_option_set(const char* name, long value);

/* ---- heap profiler (README: "Heap profiling") ----------------------------------------------- */

/* Turns sampling on (non-zero) or off; returns the previous state. MAPALLOC_PROF=1 turns it on
 * at start; MAPALLOC_PROF_SAMPLE=BYTES sets the mean interval (default 524288). */
int mapalloc_prof_set_active(int active);
/* Writes PREFIX.heap.pb.gz (alloc_objects, alloc_space, inuse_objects, inuse_space),
 * PREFIX.peak.pb.gz (the in-use profile at the sampled peak) and PREFIX.{inuse,alloc,peak}.folded;
 * "%p" in PREFIX is the process id; NULL: MAPALLOC_PROF_FILE (default "mapalloc.%p").
 * Returns 0, or -1 if a file could not be written. */
int mapalloc_prof_dump(const char* path_prefix);

#ifdef __cplusplus
}
#endif

#endif /* MAPALLOC_H */
