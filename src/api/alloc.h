// The default build's allocation operations: the two fast paths (inline, read top to bottom)
// and the general operations built on them. The secure build wraps these (secure.h); entry.h
// picks one or the other for every exported entry point.
#pragma once

#include "core/arena.h"
#include "core/heap.h"
#include "core/large.h"

namespace mapalloc {

MAPALLOC_NOINLINE void* malloc_slow(size_t size, Heap* heap);
MAPALLOC_NOINLINE void free_slow(void* pointer);
// default_free's block lies at or past start_limit in a page record of the heap's own segment
// (`page`, found by the fast path): a free the heap profiler holds on the slow path (most of
// them, while it is on), or a span tail, an uncarved block, misuse (free_slow).
MAPALLOC_NOINLINE void free_past_start_limit(void* pointer, Page* page, Heap* heap);

// The class of a request of `size` bytes (at most kSmallMaxBytes), from the heap's copy of the
// table.
MAPALLOC_INLINE unsigned small_class_of(const Heap* heap, size_t size) {
  return heap->small_classes.class_of[(size + kMinAlignBytes - 1) / kMinAlignBytes];
}

// The first block of the heap's free list of `size_class`, taken off it (nullptr: the list is
// empty).
MAPALLOC_INLINE Block* pop_free_block(Heap* heap, unsigned size_class) {
  Block* block = heap->free[size_class];
  if (MAPALLOC_LIKELY(block != nullptr)) {
    heap->free[size_class] = block_next(block);
    if constexpr (kFreeChecks) set_block_key(block, 0);  // a live block never carries the key
  }
  return block;
}

// realloc's rule for a block of `usable` bytes asked to hold `needed`: it stays where it is when
// it holds them and moving would not save much (it would keep more than half of itself unused).
MAPALLOC_INLINE bool realloc_keeps_block(size_t needed, size_t usable) {
  return needed <= usable && needed >= usable / 2;
}

// malloc: sizes up to kSmallMaxBytes pop the heap's free list of their class. Everything else
// (bigger sizes, an empty list, a thread's first call) goes to malloc_slow.
MAPALLOC_INLINE void* default_malloc(size_t size) {
  Heap* heap = tls_heap;
  if (MAPALLOC_LIKELY(size <= kSmallMaxBytes)) {
    Block* block = pop_free_block(heap, small_class_of(heap, size));
    if (MAPALLOC_LIKELY(block != nullptr)) return block;
  }
  return malloc_slow(size, heap);
}

// free: a block in a segment this thread owns (one compare against the segment map), at the
// start of a carved block of a span's first page (one multiply and compare), not already free
// (the free key), goes on the page's local free list. Everything else (NULL, large blocks,
// remote frees, span tails, pages emptying or leaving the full state, and all misuse) goes to
// free_slow or the countdown path.
MAPALLOC_INLINE void default_free(void* pointer) {
  Heap* heap = tls_heap;
  uintptr_t unit = unit_of(pointer);
  if (MAPALLOC_LIKELY(segment_map[unit] == heap->segment_tag)) {  // NULL's entry is 0
    Page* page = page_entry_in_unit(unit, pointer);
    auto* block = static_cast<Block*>(pointer);
    uint64_t offset = reinterpret_cast<uintptr_t>(pointer) & (kPageBytes - 1);
    if (MAPALLOC_UNLIKELY(offset * page->block_magic >= page->start_limit))
      return free_past_start_limit(pointer, page, heap);
    if (MAPALLOC_LIKELY(!kFreeChecks || block_key(block) != page->free_key)) {
      if constexpr (kFreeChecks) set_block_key(block, page->free_key);
      set_block_next(block, page->local_free);
      page->local_free = block;
      if (MAPALLOC_LIKELY(--page->countdown != 0)) return;
      return heap_page_countdown_zero(heap, page);
    }
  }
  free_slow(pointer);
}

// Sized operator delete (`size` the size given to operator new; `exact_class` false for the
// aligned forms, which may have been served by a bigger class): a size that does not fit the
// block ends the program. The fast path only checks that the size is not above the block's
// (one load and a compare: a bigger size is the delete of another object, and what an
// allocator that trusted sizes would corrupt with); everything else goes to free_sized_slow,
// which checks the size's class exactly. A size too small for the block passes the fast path
// in the default build (the secure build checks every size exactly).
MAPALLOC_NOINLINE void free_sized_slow(void* pointer, size_t size, bool exact_class);
MAPALLOC_INLINE void default_free_sized(void* pointer, size_t size) {
  Heap* heap = tls_heap;
  uintptr_t unit = unit_of(pointer);
  // (A span tail's record fails this or default_free's block-start test: both go slow.)
  if (MAPALLOC_LIKELY(segment_map[unit] == heap->segment_tag &&
                      size <= page_entry_in_unit(unit, pointer)->block_bytes)) {
    return default_free(pointer);
  }
  free_sized_slow(pointer, size, true);
}

// What a pointer handed to free/realloc/malloc_usable_size refers to, after validation.
enum class BlockKind { kClass, kArena, kOwnMapping };
struct BlockRef {
  BlockKind kind;
  Page* page;          // the span's head record, for size-class blocks
  LargeHeader* large;  // for blocks of their own mapping
  size_t usable_bytes;
};

// Validates `pointer` (never NULL) for `operation`; every misuse ends in a one-line diagnostic
// and abort(), so callers only ever see blocks that are live and ours.
BlockRef locate(const void* pointer, const char* operation);

// Frees a block that locate() accepted.
void free_located(const BlockRef& ref, void* pointer);

// A sized delete's check: a class block must be of `size`'s class (aligned forms, `exact_class`
// false: any size up to the block's); a large block must be more than half of `size`'s usable
// bytes and no more than all of them. Ends the program with a one-line diagnostic otherwise.
void check_sized_delete(const BlockRef& ref, const void* pointer, size_t size, bool exact_class);

// calloc of `total` bytes (the product already checked).
void* default_calloc(size_t total);
// realloc of a block that is not NULL to a size that is not 0.
void* default_realloc(void* pointer, size_t size);
// `alignment` must be a power of two; returns nullptr with errno = ENOMEM on failure.
void* default_aligned_alloc(size_t alignment, size_t size);
// Returns 1 if memory was given back to the OS.
int trim_impl(size_t pad);

// Whether `pointer` is the start of a live block of ours (never aborts).
bool owns_impl(const void* pointer);

// NULL with errno = ENOMEM.
MAPALLOC_COLD void* out_of_memory();

}  // namespace mapalloc
