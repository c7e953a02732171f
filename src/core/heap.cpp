// Pages of a heap: the refill behind the malloc fast path, the countdown behind the free fast
// path, and a page's life from a new span to its retirement (counted in the working set).
#include "core/heap.h"

#include "core/heap_internal.h"
#include "platform/debug_assert.h"
#include "platform/options.h"

namespace mapalloc {

constinit Heap empty_heap;
__thread Heap* tls_heap __attribute__((tls_model("initial-exec"))) = &empty_heap;

namespace {

// Refills hand out at most this many blocks while purge work is waiting: a program making one
// malloc per millisecond still reaches a slow path every quarter of a second.
constexpr unsigned kPendingRefillBlocks = 256;

// A span was taken: counted in the working set.
Page* counted_span(Heap* heap, Page* page) {
  if (page == nullptr) return nullptr;
  uint64_t now_ms = os_now_ms();
  heap->used_pages += page->span_pages;
  heap->last_span_ms = now_ms;
  heap->segments.keep_empty_until_ms = now_ms + 2 * (uint64_t{options().purge_delay_ms} + 1);
  note_used_pages(heap, now_ms);
  return page;
}

Page* new_page_in_own_segments(Heap* heap, unsigned size_class) {
  Page* page = span_alloc_in_list(heap->segments, class_span_pages(size_class));
  if (page != nullptr) page_init(page, heap, size_class);
  return counted_span(heap, page);
}

Page* new_page(Heap* heap, unsigned size_class) {
  Page* page = span_alloc(heap->segments, heap, map_entry_of(heap), class_span_pages(size_class));
  if (page != nullptr) page_init(page, heap, size_class);
  return counted_span(heap, page);
}

}  // namespace

// The working set's buckets (see Heap::used_pages), one purge delay long. Buckets passed
// without a look held no more than the pages in use now.
void note_used_pages(Heap* heap, uint64_t now_ms) {
  uint64_t bucket_ms = uint64_t{options().purge_delay_ms} + 1;
  if (now_ms >= heap->bucket_start_ms + bucket_ms) {
    uint64_t passed = (now_ms - heap->bucket_start_ms) / bucket_ms;
    if (passed > Heap::kWorkingSetBuckets) passed = Heap::kWorkingSetBuckets;
    for (uint64_t i = 0; i < passed; ++i) {
      heap->bucket_index = (heap->bucket_index + 1) % Heap::kWorkingSetBuckets;
      heap->peak_used_pages[heap->bucket_index] = heap->used_pages;
    }
    heap->bucket_start_ms = now_ms;
  }
  size_t& current = heap->peak_used_pages[heap->bucket_index];
  if (heap->used_pages > current) current = heap->used_pages;
}

void retire(Heap* heap, Page* page) {
  MAPALLOC_ASSERT(page->owner == heap && page->countdown == 0 && page->queue_next == nullptr &&
                      page->queue_prev == nullptr,
                  "a retired page is its heap's, has no block in use and is in no queue", page);
  MAPALLOC_ASSERT(heap->used_pages >= page->span_pages,
                  "a heap's used_pages counts the pages of its spans in use", page);
  uint64_t now_ms = os_now_ms();
  heap->used_pages -= page->span_pages;
  span_free(heap->segments, page, now_ms);
  lower_deadline(&heap->purge_deadline_ms, now_ms + options().purge_delay_ms);
}

// The page is no longer the current one of its class: its free blocks go back to it.
void release_current(Heap* heap, unsigned size_class) {
  Page* page = heap->current[size_class];
  if (page == nullptr) return;
  heap->current[size_class] = nullptr;
  page_return_blocks(page, heap->free[size_class]);
  heap->free[size_class] = nullptr;
  if (page->countdown == 0) {
    retire(heap, page);
  } else {
    page->state = PageState::kAvailable;
    queue_push(heap->available[size_class], page);
  }
}

uint8_t map_entry_of(const Heap* heap) {
  return heap->segment_tag == kNoHeapTag ? uint8_t{kUnitSegment} : heap->segment_tag;
}

// kCounted: heap_refill_counted (the count costs the others nothing).
template <bool kCounted>
MAPALLOC_INLINE Block* refill(Heap* heap, unsigned size_class, unsigned* handed) {
  heap->slow_calls++;
  heap->classes_refilled[size_class / 64] |= uint64_t{1} << (size_class % 64);
  if constexpr (kDebug) heap_validate_sometimes(heap);
  MAPALLOC_ASSERT(heap->free[size_class] == nullptr, "a refill finds its class's free list empty",
                  heap);
  bool reclaimed = false;
  if (heap->delayed_free.load(std::memory_order_relaxed) != nullptr) drain_delayed(heap);
  for (;;) {
    if (Page* page = heap->current[size_class]) {
      MAPALLOC_ASSERT(page->state == PageState::kCurrent && page->owner == heap &&
                          page->size_class == size_class,
                      "heap->current[c] is a kCurrent page of class c of this heap", page);
      MAPALLOC_ASSERT((page->local_free == nullptr) == (page_local_free_count(page) == 0),
                      "local_free is empty exactly when countdown == synced_used", page);
      // A short local_free would make the next refill come soon, and the one after (a steady
      // state of a few live blocks cycling): top it up, with the blocks other threads freed
      // into the page if there are any (a producer thread never frees locally), else with new
      // blocks while the span has any.
      bool short_list = page_local_free_count(page) < page_carve_batch(page) / 2 + 1;
      unsigned limit = heap_purge_pending(heap) ? kPendingRefillBlocks : ~0u;
      unsigned count = 0;
      if constexpr (kCounted) {
        unsigned local_count = page_local_free_count(page);
        count = limit < local_count ? limit : local_count;
      }
      Block* blocks = page_take_local_free(page, limit);
      if (short_list) {
        unsigned remote_count = 0;
        if (Block* remote = page_take_thread_free(page, &remote_count)) {
          count += remote_count;
          blocks = block_list_append(blocks, remote);
        } else {
          unsigned carved_before = page->carved;
          blocks = page_carve(page, blocks);
          if constexpr (kCounted) count += page->carved - carved_before;
        }
      }
      if (blocks == nullptr) {
        blocks = page_take_thread_free(page, &count);
      }
      if (blocks != nullptr) {
        if constexpr (kCounted) {
          MAPALLOC_ASSERT(block_list_length(blocks) == count,
                          "a counted refill lists as many blocks as it says", page);
          *handed = count;
        }
        return blocks;
      }
      if (!page_try_mark_full(page)) continue;  // a remote free just arrived: take it
      page->state = PageState::kFull;
      heap->current[size_class] = nullptr;
    }
    Page* page = queue_pop_for_refill(heap->available[size_class]);
    if (page == nullptr && heap->delayed_free.load(std::memory_order_relaxed) != nullptr) {
      drain_delayed(heap);  // full pages that got a block back since the refill began
      continue;
    }
    if (page == nullptr) page = new_page_in_own_segments(heap, size_class);
    // Before taking a new segment, take over an abandoned heap's pages instead.
    if (page == nullptr && !reclaimed) {
      reclaimed = true;
      if (reclaim_abandoned(heap)) continue;
    }
    if (page == nullptr) page = new_page(heap, size_class);
    if (page == nullptr) return nullptr;
    MAPALLOC_ASSERT(page->owner == heap && page->size_class == size_class &&
                        (page->state == PageState::kAvailable || page->state == PageState::kFree),
                    "a page becoming current is an available or new page of its class", page);
    page->state = PageState::kCurrent;
    heap->current[size_class] = page;
  }
}

Block* heap_refill(Heap* heap, unsigned size_class) {
  return refill<false>(heap, size_class, nullptr);
}

Block* heap_refill_counted(Heap* heap, unsigned size_class, unsigned* handed) {
  return refill<true>(heap, size_class, handed);
}

void heap_page_countdown_zero(Heap* heap, Page* page) {
  heap->slow_calls++;
  if constexpr (kDebug) heap_validate_sometimes(heap);
  MAPALLOC_ASSERT(page->owner == heap && page->countdown == 0,
                  "the countdown path runs for a page of this heap whose countdown reached 0",
                  page);
  MAPALLOC_ASSERT(page->state == PageState::kFull || page->state == PageState::kCurrent ||
                      page->state == PageState::kAvailable,
                  "a page with blocks in use is kCurrent, kAvailable or kFull", page);
  if (page->state == PageState::kFull) {
    page_leave_full(page);
    if (page->countdown != 0) {
      page->state = PageState::kAvailable;
      queue_push(heap->available[page->size_class], page);
      return;
    }
  } else if (page->state == PageState::kCurrent) {
    // An empty one-page span stays current, so that a block allocated and freed over and over
    // does not retire and rebuild it each time; bigger spans go back to the segment at once.
    if (page->span_pages == 1) return;
    heap->current[page->size_class] = nullptr;
  } else {
    queue_remove(heap->available[page->size_class], page);
  }
  retire(heap, page);
}

void heap_free_local(Heap* heap, Page* page, Block* block) {
  MAPALLOC_ASSERT(
      page->owner == heap && span_contains(page, block) && page_is_block_start(page, block),
      "a local free's block starts a block of a span its heap owns", block);
  MAPALLOC_ASSERT(page->countdown > 0 && page->countdown <= page->synced_used,
                  "a page with a block in use has 0 < countdown <= synced_used", page);
  set_block_key(block, page->free_key);
  set_block_next(block, page->local_free);
  page->local_free = block;
  if (--page->countdown == 0) heap_page_countdown_zero(heap, page);
}

void heap_collect(Heap* heap) {
  drain_delayed(heap);
  for (unsigned c = 0; c < kClassCount; ++c) {
    release_current(heap, c);
    collect_available(heap, c);
  }
}

}  // namespace mapalloc
