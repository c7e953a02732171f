// Where the heap profiler (src/prof/) meets the allocator. Every hook runs off the fast paths:
//  - Size classes: each heap keeps a countdown per class, drawn in bytes and kept in blocks
//    (all of a class's blocks charge the same bytes). Every block of a class comes from a list
//    that a refill hands out, so a refill charges its whole list (the count comes from the
//    page's counters, not from a walk) and lists only as many blocks as the countdown still
//    covers (the rest go back to the page): the allocation where the countdown runs out is the
//    first of the next refill, which samples it. malloc's fast path has no extra test; its
//    slow path tests prof_active only where a refill is due.
//  - A sampled small block's span gets a start_limit at the sampled block's index (the lowest
//    one's, with several; Page::prof_samples counts them): the owner's free fast path then fails
//    its block-start test for the blocks from there up, and the slow path looks the block up.
//    Other blocks' and spans' frees never look anything up.
//  - Large blocks are on the slow path anyway: one countdown per heap, in bytes; their frees
//    look the block up only when its address's bucket counts a live sample
//    (prof_may_be_sampled).
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

// A sampled span's block is being freed (page->prof_samples != 0): forgets it if it is a sample.
// (The owner's fast path is its caller's to restore: prof_note_class_free.)
MAPALLOC_NOINLINE void prof_class_free(Page* page, void* block);

// Sets the span's start_limit from its samples (by the owner only): below the lowest sampled
// block's index while it holds any (0 while one is only counted, in prof_overflow), all the
// carved blocks once it holds none.
void prof_restore_fast_free(Page* page);

// class_alloc with profiling on, after the refill that listed `handed` blocks (`block` first;
// 0: no refill): the common case inline, the refill's whole list lying before the sample point
// (a countdown of 0 is one not drawn yet), the rest in prof_class_alloc.
MAPALLOC_INLINE void* prof_charge_class_alloc(Heap* heap, unsigned size_class, Block* block,
                                              size_t size, unsigned handed) {
  int64_t& countdown = heap->prof_countdown[size_class];
  if (MAPALLOC_LIKELY(countdown > static_cast<int64_t>(handed))) {
    countdown -= handed;
    return block;
  }
  return prof_class_alloc(heap, size_class, block, size, handed);
}

// A block's mark in its span's prof_slot_words: its index + 1 (spans hold fewer than 65535
// blocks).
MAPALLOC_INLINE uint16_t block_mark(const Page* page, const void* block) {
  uint64_t offset = static_cast<uint64_t>(static_cast<const char*>(block) - page_start(page));
  return static_cast<uint16_t>(block_index_of(offset, page->block_magic) + 1);
}

// Slot lanes (Page::prof_slot_words): the lowest lane of `word` equal to `mark`, as a mask of
// its 16 bits (0: none). SWAR zero-lane test: a lane of word ^ marks is 0 exactly where the
// mark is; the subtraction sets a lane's top bit from a zero lane upwards, so only the lowest
// such lane is exact, which is the one taken.
constexpr uint64_t kLaneLows = 0x0001000100010001ull;
constexpr uint64_t kLaneHighs = 0x8000800080008000ull;
MAPALLOC_INLINE uint64_t lane_of(uint64_t word, uint16_t mark) {
  uint64_t differences = word ^ (kLaneLows * mark);
  uint64_t zero_tops = (differences - kLaneLows) & ~differences & kLaneHighs;
  if (zero_tops == 0) return 0;
  unsigned lane_shift = static_cast<unsigned>(__builtin_ctzll(zero_tops)) - 15;
  return uint64_t{0xffff} << lane_shift;
}

// The owner's free of a block of a span whose frees the profiler holds on the slow path: while
// a sampled block lives, the frees of its span's blocks from its index up get here, most of
// them of blocks that are not sampled. Those are validated as the fast path validates (a carved
// block's start, not carrying the free key) and pushed as it pushes; true when done. False sends
// the free to the general path: a sampled block, a span with samples beyond its slots, or a block
// that fails a check (which the general path reports). `page` is the entry of the block's page,
// owned by `heap`.
MAPALLOC_INLINE bool prof_owner_free(Heap* heap, Page* page, Block* block) {
  if (page->prof_samples.load(std::memory_order_relaxed) == 0 ||
      page->prof_overflow.load(std::memory_order_relaxed) != 0) {
    return false;
  }
  if (!page_is_block_start(page, block)) return false;
  if (kFreeChecks && block_key(block) == page->free_key) return false;
  uint16_t mark = block_mark(page, block);
  for (auto& slot_word : page->prof_slot_words) {
    if (lane_of(slot_word.load(std::memory_order_relaxed), mark) != 0) return false;
  }
  heap_free_local(heap, page, block);
  return true;
}

// The profiler's part of a size-class block's free on a slow path (by `heap`'s thread): sampled
// blocks lie at or above their span's start_limit, so a block below it (the fast path's test:
// one multiply and compare) is not one, and neither is any block of a span never sampled.
MAPALLOC_INLINE void prof_note_class_free(Heap* heap, Page* page, Block* block) {
  uint64_t offset = static_cast<uint64_t>(reinterpret_cast<char*>(block) - page_start(page));
  if (MAPALLOC_LIKELY(offset * page->block_magic < page->start_limit)) return;
  if (page->prof_samples.load(std::memory_order_relaxed) != 0) prof_class_free(page, block);
  if (page->owner == heap) prof_restore_fast_free(page);
}

}  // namespace mapalloc
