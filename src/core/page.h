// Pages of one size class: carving blocks, the owner's free lists, and the lock-free protocol by
// which other threads free into a page. Everything here acts on one span; which spans a heap
// uses, and when, is the heap layer's business.
#pragma once

#include "core/segment.h"

namespace mapalloc {

constexpr size_t kCarveBatchBytes = 8 * kKiB;

// Prepares a span freshly taken from span_alloc to serve `size_class` for `owner`.
void page_init(Page* head, Heap* owner, unsigned size_class);

// In a forked child (the forking thread): the secure build's carving order is drawn afresh,
// so that the child's new blocks are not handed out in the order the parent's would be.
void page_after_fork_child();

// Owner: the next batch of never-used blocks, linked, followed by the list `then` (nullptr
// when the span is fully carved and `then` is empty). Carving in batches keeps a new span's
// untouched tail out of the resident set.
Block* page_carve(Page* page, Block* then = nullptr);

// Blocks page_carve hands out at a time (at most kCarveBatchBytes worth, at least one). Every
// refill asks: the quotient comes from the record's magic (block_index_of), not a division.
inline unsigned page_carve_batch(const Page* page) {
  auto batch = static_cast<unsigned>(block_index_of(kCarveBatchBytes, page->block_magic));
  return batch == 0 ? 1 : batch;
}

// Blocks in local_free.
inline unsigned page_local_free_count(const Page* page) {
  return page->synced_used - page->countdown;
}

// Owner: up to `limit` blocks of local_free; they count as used again (they go to the heap's
// free list).
Block* page_take_local_free(Page* page, unsigned limit = ~0u);

// Owner: every block freed by other threads so far (nullptr if none), and how many in *count
// (when not null). Accounting is unchanged: blocks in thread_free already count as used.
Block* page_take_thread_free(Page* page, unsigned* count = nullptr);

// Owner: for a page with no free block anywhere, sets kFullFlag. Fails (returns false) if a
// remote free arrived meanwhile: page_take_thread_free then has blocks.
bool page_try_mark_full(Page* page);

// Owner: a full page got a local free (countdown reached zero): restores true accounting and
// clears kFullFlag if no remote free claimed it yet. The page's state is left to the caller.
void page_leave_full(Page* page);

// Owner: puts a list of this page's blocks (from the heap's free list) back into local_free.
void page_return_blocks(Page* page, Block* blocks);
// The same for a list of `count` blocks: only the shorter of it and local_free is walked, and
// while local_free is empty (as after a refill took it all) neither is: the list becomes
// local_free as it is (its blocks are cold, most of them).
void page_return_counted(Page* page, Block* blocks, unsigned count);

// Owner: moves remote frees into local_free so that an unused page's emptiness shows in its
// countdown. Not for full pages.
void page_collect_remote(Page* page);

// Any thread other than the owner: frees `block` into `page`. Returns true if this free claimed
// the page's kFullFlag; the caller must then push the block onto the owner's delayed list.
bool page_remote_free(Page* page, Block* block);

// The span's block_start_step (size_class.h), from the record's magic: without the division.
inline uint64_t page_block_start_step(const Page* head) {
  return uint64_t{head->block_bytes} * head->block_magic;
}

// Whether `pointer` is the start of a block carved from the span headed by `head`.
inline bool page_is_block_start(const Page* head, const void* pointer) {
  uint64_t offset =
      reinterpret_cast<uintptr_t>(pointer) - reinterpret_cast<uintptr_t>(page_start(head));
  // (Not head->start_limit: the heap profiler lowers it while the span holds sampled blocks.)
  return offset * head->block_magic < head->carved * page_block_start_step(head);
}

// Whether `pointer` lies within the pages of the span headed by `head`.
inline bool span_contains(const Page* head, const void* pointer) {
  uintptr_t offset =
      reinterpret_cast<uintptr_t>(pointer) - reinterpret_cast<uintptr_t>(page_start(head));
  return offset < size_t{head->span_pages} * kPageBytes;
}

// Whether `block` is on the singly linked list starting at `list` (used to confirm a suspected
// double free; linear, off the fast path).
bool block_list_contains(const Block* list, const Block* block);
// The number of blocks in `list`.
unsigned block_list_length(const Block* list);
// `front` followed by `back` (front's tail is found by walking it: the shorter list goes first).
Block* block_list_append(Block* front, Block* back);

}  // namespace mapalloc
