// Where the heap profiler (src/prof/) meets the allocator. Every hook runs off the fast paths:
//  - Size classes: each heap keeps a byte countdown per class. Every block of a class comes
//    from a list that a refill hands out, so a refill charges its whole list (the count comes
//    from the page's counters, not from a walk) and lists only as many blocks as the countdown
//    still covers (the rest go back to the page): the allocation where the countdown runs out
//    is the first of the next refill, which samples it. malloc's fast path has no extra test;
//    its slow path tests prof_active only where a refill is due.
//  - A sampled small block's span gets start_limit 0 (Page::prof_samples counts its samples):
//    the owner's free fast path then fails its block-start test for that span, and the slow
//    path looks the block up. Other spans' frees never look anything up.
//  - Large blocks are on the slow path anyway: one countdown per heap; their frees look the
//    block up while any sample is live.
#pragma once

#include "core/heap.h"
#include "prof/prof.h"

namespace mapalloc {

// class_alloc with profiling on: `block` was just taken from heap->free[size_class] for a request
// of `size` bytes, after a refill that listed `handed` blocks (`block` among them; 0: no refill,
// the block's list was charged already).
MAPALLOC_NOINLINE void* prof_class_alloc(Heap* heap, unsigned size_class, Block* block, size_t size,
                                         unsigned handed);

// A large block of `size` bytes was allocated (profiling on).
MAPALLOC_NOINLINE void prof_large_alloc(void* block, size_t size);

// A sampled span's block is being freed (page->prof_samples != 0).
MAPALLOC_NOINLINE void prof_class_free(Page* page, void* block);

// The owner frees into a span whose start_limit the profiler had zeroed: restores the fast
// path once the span holds no sample.
void prof_restore_fast_free(Page* page);

// The profiler's part of a size-class block's free on a slow path (by `heap`'s thread): a span
// holding sampled blocks has start_limit 0, so one test of a field the block's lookup has just
// read covers both hooks.
MAPALLOC_INLINE void prof_note_class_free(Heap* heap, Page* page, Block* block) {
  if (MAPALLOC_LIKELY(page->start_limit != 0)) return;
  if (page->prof_samples.load(std::memory_order_relaxed) != 0) prof_class_free(page, block);
  if (page->owner == heap) prof_restore_fast_free(page);
}

}  // namespace mapalloc
