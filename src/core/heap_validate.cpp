// The debug build's validation walk of a heap (heap.h, heap_validate): every page of every
// segment the heap owns, the spans they form, the free lists of its current pages and of the
// heap, and its queues of available pages, checked against the invariants that segment.h,
// page.h, page_queue.h and heap.h state. The first broken one ends the process with an
// assertion line naming it and the page or block concerned.
//
// Owner only; the pages' thread_free lists and the heap's delayed list (pushed to by other
// threads at any time) are not walked.
#include "core/debug_fill.h"
#include "core/heap.h"
#include "core/heap_internal.h"
#include "platform/debug_assert.h"

namespace mapalloc {

namespace {

// Blocks of a free list of `page` (local_free, or the heap's list of its current page): each a
// block of the span, marked free with the page's key, its fill pattern intact; no cycle (at
// most `carved` blocks). Returns how many.
unsigned validate_free_list(const Page* page, const Block* list) {
  unsigned count = 0;
  for (const Block* block = list; block != nullptr; block = block_next(block)) {
    MAPALLOC_ASSERT(span_contains(page, block) && page_is_block_start(page, block),
                    "a page's free blocks are blocks of its span", block);
    MAPALLOC_ASSERT(!kFreeChecks || block_key(block) == page->free_key,
                    "a free block carries its page's free key", block);
    MAPALLOC_ASSERT(debug_fill_damage(block, page->block_bytes) == 0,
                    "a free block keeps the fill pattern (written after it was freed?)", block);
    ++count;
    MAPALLOC_ASSERT(count <= page->carved, "a free list has no cycle (at most carved blocks)",
                    page);
  }
  return count;
}

// A span head in use by `heap`. Returns the free blocks walked.
unsigned validate_page(const Heap* heap, const Page* page) {
  MAPALLOC_ASSERT(page->owner == heap, "a span in a heap's segment belongs to that heap", page);
  MAPALLOC_ASSERT(
      page->size_class < kClassCount && page->block_bytes == class_block_bytes(page->size_class),
      "a page's block size is its class's", page);
  MAPALLOC_ASSERT(page->free_key == page_free_key(page), "a page's free key is derived from it",
                  page);
  MAPALLOC_ASSERT(page->carved <= page->capacity, "a span carves no more blocks than it holds",
                  page);
  // (Lower while the heap profiler sends the frees of sampled blocks and those above them to
  // the slow path: prof_hooks.h. Also after another thread freed the span's last sample, until
  // the owner's next slow free into the span restores it: so not tied to prof_samples.)
  uint64_t step = block_start_step(page->block_bytes);
  MAPALLOC_ASSERT(page->block_magic == block_start_magic(page->block_bytes) &&
                      page_block_start_step(page) == step,
                  "block_magic is the block size's (page_block_start_step relies on it)", page);
  MAPALLOC_ASSERT(page->start_limit <= page->carved * step && page->start_limit % step == 0,
                  "start_limit admits the first blocks of the carved ones", page);
  MAPALLOC_ASSERT(page->countdown <= page->synced_used,
                  "countdown <= synced_used (local frees only count down)", page);
  if (page->state == PageState::kFull) {
    MAPALLOC_ASSERT(page->synced_used == 1 && page->carved == page->capacity,
                    "a full page is fully carved and keeps synced_used = 1", page);
  } else {
    MAPALLOC_ASSERT(page->synced_used <= page->carved, "synced_used counts carved blocks only",
                    page);
  }
  unsigned listed = validate_free_list(page, page->local_free);
  MAPALLOC_ASSERT(listed == page->synced_used - page->countdown,
                  "local_free holds synced_used - countdown blocks", page);
  if (page->state != PageState::kAvailable) {
    MAPALLOC_ASSERT(page->queue_next == nullptr && page->queue_prev == nullptr,
                    "only available pages are linked into a queue", page);
  }
  return listed;
}

}  // namespace

size_t heap_validate(Heap* heap) {
  if constexpr (!kDebug) return 0;
  size_t visited = 0;
  MAPALLOC_ASSERT(!heap->abandoned.load(std::memory_order_relaxed) ||
                      heap->purge_claimed.load(std::memory_order_relaxed),
                  "a heap is validated by its owner", heap);
  size_t queued[kClassCount] = {};
  for (unsigned c = 0; c < kClassCount; ++c) {
    const Page* current = heap->current[c];
    if (current != nullptr) {
      MAPALLOC_ASSERT(current->state == PageState::kCurrent && current->size_class == c &&
                          current->owner == heap,
                      "heap->current[c] is a kCurrent page of class c of this heap", current);
    }
    if (heap->free[c] != nullptr) {
      MAPALLOC_ASSERT(current != nullptr, "heap->free[c] holds blocks of current[c] only",
                      heap->free[c]);
      unsigned count = validate_free_list(current, heap->free[c]);
      visited += count;
      MAPALLOC_ASSERT(count <= current->countdown,
                      "the heap's free blocks of a page count as used by it", current);
    }
    const Page* previous = nullptr;
    for (const Page* page = heap->available[c].first; page != nullptr; page = page->queue_next) {
      MAPALLOC_ASSERT(page->queue_prev == previous, "a queued page links back to its predecessor",
                      page);
      MAPALLOC_ASSERT(
          page->state == PageState::kAvailable && page->size_class == c && page->owner == heap,
          "the available queue of class c holds kAvailable pages of class c", page);
      previous = page;
      ++queued[c];
      MAPALLOC_ASSERT(queued[c] <= heap->segments.count * kPagesPerSegment, "a queue has no cycle",
                      page);
    }
    MAPALLOC_ASSERT(heap->available[c].last == previous, "a queue's last page is its last one",
                    heap->available[c].last);
  }

  size_t available[kClassCount] = {};
  size_t used_pages = 0;
  size_t segments = 0;
  uint8_t entry = map_entry_of(heap);
  for (const Segment* segment = heap->segments.first; segment != nullptr; segment = segment->next) {
    ++segments;
    MAPALLOC_ASSERT(segments <= heap->segments.count, "a heap's segment list has count segments",
                    segment);
    MAPALLOC_ASSERT(segment->owner == heap, "a segment in a heap's list belongs to it", segment);
    MAPALLOC_ASSERT(unit_entry(segment) == entry,
                    "a heap's segments carry its entry in the segment map", segment);
    MAPALLOC_ASSERT((segment->free_pages & ~kAllUsablePages) == 0 &&
                        (segment->purged_pages & ~segment->free_pages & kAllUsablePages) == 0,
                    "only usable pages are free, and only free pages are purged", segment);
    for (unsigned i = kFirstUsablePage; i < kPagesPerSegment;) {
      const Page* page = &segment->pages[i];
      if ((segment->free_pages >> i) & 1) {
        MAPALLOC_ASSERT(
            page->state == PageState::kFree && page->owner == nullptr && page->start_limit == 0,
            "a free page is kFree, unowned, and admits no block", page);
        ++i;
        continue;
      }
      MAPALLOC_ASSERT(
          page->head_index == i && page->span_pages > 0 && i + page->span_pages <= kPagesPerSegment,
          "a span lies within its segment's usable pages", page);
      MAPALLOC_ASSERT(page->state == PageState::kCurrent || page->state == PageState::kAvailable ||
                          page->state == PageState::kFull,
                      "a span head in use is kCurrent, kAvailable or kFull", page);
      if (page->state == PageState::kCurrent) {
        MAPALLOC_ASSERT(heap->current[page->size_class] == page,
                        "a kCurrent page is its heap's current page of its class", page);
      }
      if (page->state == PageState::kAvailable) available[page->size_class]++;
      visited += 1 + validate_page(heap, page);
      for (unsigned t = 1; t < page->span_pages; ++t) {
        const Page* tail = page + t;
        MAPALLOC_ASSERT(tail->state == PageState::kSpanTail && tail->head_index == i &&
                            tail->owner == nullptr && tail->start_limit == 0 &&
                            ((segment->free_pages >> (i + t)) & 1) == 0,
                        "a span's tail pages are in use and point to its head", tail);
      }
      used_pages += page->span_pages;
      i += page->span_pages;
    }
  }
  MAPALLOC_ASSERT(segments == heap->segments.count, "a heap's segment list has count segments",
                  heap);
  MAPALLOC_ASSERT(used_pages == heap->used_pages,
                  "a heap's used_pages counts the pages of its spans in use", heap);
  for (unsigned c = 0; c < kClassCount; ++c) {
    MAPALLOC_ASSERT(available[c] == queued[c],
                    "every kAvailable page is in its class's queue exactly once",
                    heap->available[c].first);
  }
  return visited;
}

// A full walk costs time in proportion to the heap's pages and free blocks. Run at every slow
// path it made the stress suite's fragmentation program 30 times slower (a heap of many
// partly used pages walks thousands of free blocks, and a slow path comes every few dozen
// operations). So the walks are paced by their own size: after a walk of N pages and blocks
// the next one comes N / kVisitsPerSlowCall slow calls later, which bounds the walks' cost to about
// kVisitsPerSlowCall block checks per slow path, while a small heap (a test program, a planted bug)
// is still walked at every one.
constexpr size_t kVisitsPerSlowCall = 16;

struct ValidatePace {
  const Heap* heap;
  uint64_t next_slow_call;
};
// (Not all zero, so that it lives in .tdata: a static glibc places .tbss in memory that
// memcheck sees as undefined.)
thread_local ValidatePace validate_pace = {nullptr, 1};

void heap_validate_sometimes(Heap* heap) {
  if constexpr (!kDebug) return;
  if (validate_pace.heap == heap && heap->slow_calls < validate_pace.next_slow_call) return;
  size_t visited = heap_validate(heap);
  validate_pace = {heap, heap->slow_calls + 1 + visited / kVisitsPerSlowCall};
}

}  // namespace mapalloc
