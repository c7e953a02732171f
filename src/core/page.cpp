#include "core/page.h"

#include <string.h>
#include "core/debug_fill.h"
#include "platform/debug_assert.h"

namespace mapalloc {

namespace {

// Secure build: the sequence link_shuffled draws from, per thread (0: not started; seeded on
// first use).
thread_local uint64_t carve_random_state = 0;

// Secure build: links `count` blocks in a random order (index i visited at (start + i * stride)
// mod count, the stride prime to count), so that neighbours in memory are not handed out one
// after the other.
[[maybe_unused]] Block* link_shuffled(char* first, size_t block_bytes, unsigned count, Block* then,
                                      uintptr_t key) {
  uint64_t random = os_next_random(&carve_random_state);
  unsigned start = static_cast<unsigned>(random % count);
  // A stride in [2, count - 1] (stride 1 would keep the address order); count - 1 is always
  // prime to count, so the search below ends.
  unsigned stride = count > 2 ? 2 + static_cast<unsigned>((random >> 32) % (count - 2)) : 1;
  auto coprime = [](unsigned a, unsigned b) {
    while (b != 0) {
      unsigned rest = a % b;
      a = b;
      b = rest;
    }
    return a == 1;
  };
  while (!coprime(stride, count)) ++stride;
  Block* head = then;  // built backwards from the last visited index
  for (unsigned i = count; i-- > 0;) {
    auto* block =
        reinterpret_cast<Block*>(first + ((start + uint64_t{i} * stride) % count) * block_bytes);
    set_block_next(block, head);
    set_block_key(block, key);
    if (block_bytes > 16 && block_bytes < kSecureProtectMinBytes) {
      uint64_t word = kCarvedTrailerWord ^ block_link_mask(block);
      memcpy(reinterpret_cast<char*>(block) + block_bytes - 8, &word, 8);
    }
    head = block;
  }
  return head;
}

}  // namespace

void page_init(Page* head, Heap* owner, unsigned size_class) {
  size_t block_bytes = class_block_bytes(size_class);
  head->owner = owner;
  head->local_free = nullptr;
  head->countdown = 0;
  head->synced_used = 0;
  head->free_key = page_free_key(head);
  head->block_magic = block_start_magic(block_bytes);
  head->start_limit = 0;
  head->block_bytes = static_cast<uint32_t>(block_bytes);
  head->capacity = static_cast<uint16_t>(head->span_pages * kPageBytes / block_bytes);
  head->carved = 0;
  head->size_class = static_cast<uint8_t>(size_class);
  head->queue_next = nullptr;
  head->queue_prev = nullptr;
  head->thread_free.store(0, std::memory_order_relaxed);
  head->prof_samples.store(0, std::memory_order_relaxed);
  for (auto& word : head->prof_slot_words) word.store(0, std::memory_order_relaxed);
  head->prof_overflow.store(0, std::memory_order_relaxed);
  MAPALLOC_ASSERT(head->state == PageState::kFree, "a new span's head is not in use yet", head);
  MAPALLOC_ASSERT(page_index(head) >= kFirstUsablePage &&
                      page_index(head) + head->span_pages <= kPagesPerSegment,
                  "a span lies within its segment's usable pages", head);
  MAPALLOC_ASSERT(head->capacity > 0 &&
                      size_t{head->capacity} * block_bytes <= size_t{head->span_pages} * kPageBytes,
                  "a span's blocks fit in its pages", head);
  // Memcheck: the span is the allocator's until its blocks are handed out.
  if constexpr (kDebug) memcheck::close(page_start(head), size_t{head->span_pages} * kPageBytes);
}

void page_after_fork_child() { carve_random_state = 0; }

Block* page_carve(Page* page, Block* then) {
  unsigned remaining = page->capacity - page->carved;
  if (remaining == 0) return then;
  size_t block_bytes = page->block_bytes;
  unsigned batch = page_carve_batch(page);
  unsigned count = batch < remaining ? batch : remaining;
  char* first = page_start(page) + size_t{page->carved} * block_bytes;
  segment_count_carved(page, size_t{page->carved} * block_bytes,
                       size_t{page->carved + count} * block_bytes);
  page->carved = static_cast<uint16_t>(page->carved + count);
  if (page->prof_samples.load(std::memory_order_relaxed) == 0)
    page->start_limit = page->carved * page_block_start_step(page);
  page->synced_used += count;
  page->countdown += count;
  MAPALLOC_ASSERT(page->carved <= page->capacity, "a span carves no more blocks than it holds",
                  page);
  if constexpr (kDebug) {
    for (unsigned i = 0; i < count; ++i)
      debug_fill_block(reinterpret_cast<Block*>(first + size_t{i} * block_bytes), block_bytes);
  }
  if constexpr (kSecure) return link_shuffled(first, block_bytes, count, then, page->free_key);
  char* block = first;
  for (unsigned i = 1; i < count; ++i, block += block_bytes) {
    set_block_next(reinterpret_cast<Block*>(block), reinterpret_cast<Block*>(block + block_bytes));
    set_block_key(reinterpret_cast<Block*>(block), page->free_key);
  }
  set_block_next(reinterpret_cast<Block*>(block), then);
  set_block_key(reinterpret_cast<Block*>(block), page->free_key);
  return reinterpret_cast<Block*>(first);
}

Block* page_take_local_free(Page* page, unsigned limit) {
  Block* blocks = page->local_free;
  if constexpr (kDebug) {
    unsigned listed = 0;
    for (Block* block = blocks; block != nullptr && listed <= page->capacity;
         block = block_next(block)) {
      ++listed;
    }
    MAPALLOC_ASSERT(listed == page_local_free_count(page),
                    "local_free holds synced_used - countdown blocks", page);
  }
  if (limit >= page_local_free_count(page)) {
    page->local_free = nullptr;
    page->countdown = page->synced_used;
    return blocks;
  }
  if (limit == 0) return nullptr;
  Block* last = blocks;
  for (unsigned i = 1; i < limit; ++i) {
    last = block_next(last);
    MAPALLOC_ASSERT(last != nullptr, "local_free holds synced_used - countdown blocks", page);
  }
  page->local_free = block_next(last);
  set_block_next(last, nullptr);
  page->countdown += limit;
  return blocks;
}

Block* page_take_thread_free(Page* page, unsigned* count) {
  if (page->thread_free.load(std::memory_order_relaxed) == 0) {
    if (count != nullptr) *count = 0;
    return nullptr;
  }
  uintptr_t taken = page->thread_free.exchange(0, std::memory_order_acquire);
  auto* blocks = reinterpret_cast<Block*>(taken & kThreadFreeBlockMask);
  if (count != nullptr) *count = static_cast<unsigned>(taken >> kThreadFreeCountShift);
  MAPALLOC_ASSERT(block_list_length(blocks) == (taken >> kThreadFreeCountShift),
                  "thread_free counts the blocks it lists", page);
  return blocks;
}

bool page_try_mark_full(Page* page) {
  uintptr_t expected = 0;
  if (!page->thread_free.compare_exchange_strong(expected, kFullFlag, std::memory_order_acq_rel)) {
    return false;
  }
  page->countdown = 1;
  page->synced_used = 1;
  return true;
}

void page_leave_full(Page* page) {
  // One local free happened: every other block is still out (held, or in thread_free).
  page->synced_used = page->capacity;
  page->countdown = page->capacity - 1u;
  uintptr_t expected = kFullFlag;
  page->thread_free.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
}

void page_return_blocks(Page* page, Block* blocks) {
  if (blocks == nullptr) return;
  unsigned count = 1;
  Block* last = blocks;
  for (Block* next = block_next(last); next != nullptr; next = block_next(last)) {
    MAPALLOC_ASSERT(span_contains(page, last) && page_is_block_start(page, last),
                    "a page's free blocks are blocks of its span", last);
    last = next;
    ++count;
  }
  MAPALLOC_ASSERT(span_contains(page, last) && page_is_block_start(page, last),
                  "a page's free blocks are blocks of its span", last);
  MAPALLOC_ASSERT(count <= page->countdown,
                  "blocks coming back to a page were counted as used (countdown >= blocks)", page);
  set_block_next(last, page->local_free);
  page->local_free = blocks;
  page->countdown -= count;
}

void page_return_counted(Page* page, Block* blocks, unsigned count) {
  if (blocks == nullptr) return;
  MAPALLOC_ASSERT(block_list_length(blocks) == count && count <= page->countdown,
                  "a counted list coming back to a page has `count` blocks, counted as used", page);
  if constexpr (kDebug) {
    for (Block* block = blocks; block != nullptr; block = block_next(block))
      MAPALLOC_ASSERT(span_contains(page, block) && page_is_block_start(page, block),
                      "a page's free blocks are blocks of its span", block);
  }
  // Both lengths are known: the shorter list goes in front, and only it is walked (for its
  // tail).
  page->local_free = page_local_free_count(page) < count
                         ? block_list_append(page->local_free, blocks)
                         : block_list_append(blocks, page->local_free);
  page->countdown -= count;
}

void page_collect_remote(Page* page) {
  unsigned count = 0;
  Block* blocks = page_take_thread_free(page, &count);
  page_return_counted(page, blocks, count);
}

bool page_remote_free(Page* page, Block* block) {
  MAPALLOC_ASSERT(
      page->owner != nullptr && span_contains(page, block) && page_is_block_start(page, block),
      "a remote free lands on the page whose span holds the block", block);
  MAPALLOC_ASSERT(reinterpret_cast<uintptr_t>(block) >> kThreadFreeCountShift == 0,
                  "a block's address leaves thread_free's count bits clear", block);
  uintptr_t old = page->thread_free.load(std::memory_order_relaxed);
  for (;;) {
    if (old == kFullFlag) {
      // The page is full and its owner is not looking at it: claim the flag and deliver this
      // block through the owner's delayed list, which the owner drains in its slow path.
      if (page->thread_free.compare_exchange_weak(old, 0, std::memory_order_seq_cst)) return true;
      continue;
    }
    // kFullFlag is clear here (the owner sets it only over an empty list), so the list's first
    // block is the word without its count. (Shifts: no 64-bit mask constants in the loop.)
    constexpr unsigned kCountBits = 64 - kThreadFreeCountShift;
    set_block_next(block, reinterpret_cast<Block*>(old << kCountBits >> kCountBits));
    uintptr_t pushed = reinterpret_cast<uintptr_t>(block) |
                       (((old >> kThreadFreeCountShift) + 1) << kThreadFreeCountShift);
    // seq_cst: pairs with heap_collect_remote's clear of remote_frees_pending (see there).
    if (page->thread_free.compare_exchange_weak(old, pushed, std::memory_order_seq_cst,
                                                std::memory_order_relaxed)) {
      return false;
    }
  }
}

Block* block_list_append(Block* front, Block* back) {
  if (front == nullptr) return back;
  Block* last = front;
  for (Block* next = block_next(last); next != nullptr; next = block_next(last)) last = next;
  set_block_next(last, back);
  return front;
}

unsigned block_list_length(const Block* list) {
  unsigned count = 0;
  for (; list != nullptr; list = block_next(list)) ++count;
  return count;
}

bool block_list_contains(const Block* list, const Block* block) {
  for (; list != nullptr; list = block_next_any(list)) {
    if (list == block) return true;
  }
  return false;
}

}  // namespace mapalloc
