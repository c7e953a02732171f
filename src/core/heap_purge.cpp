// Purging a heap's free pages: after the purge delay (keeping what the recent working set
// needed while the heap keeps taking spans), and beyond a budget when other threads emptied
// its pages (heap_purge_over_budget).
#include "core/heap.h"

#include "core/heap_internal.h"

namespace mapalloc {

size_t dirty_pages_of(const Heap* heap) {
  size_t pages = 0;
  for (const Segment* segment = heap->segments.first; segment != nullptr; segment = segment->next)
    pages += static_cast<size_t>(__builtin_popcountll(segment_dirty_pages(segment)));
  return pages;
}

namespace {

// Free, unpurged pages a heap may keep: this many bytes, or a quarter of its pages in use if
// that is more.
constexpr size_t kDirtyFloorBytes = 1 * kMiB;
constexpr size_t kDirtyShareOfUsed = 4;

// See heap_purge: the age, in purge delays, of the free pages a heap that keeps taking spans
// gives back beyond its working set.
constexpr uint64_t kActiveHeapPurgeDelays = 4;

// Free, unpurged pages beyond the heap's budget.
size_t dirty_pages_over_budget(const Heap* heap) {
  size_t dirty_pages = dirty_pages_of(heap);
  size_t used_pages = 0;
  for (const Segment* segment = heap->segments.first; segment != nullptr; segment = segment->next)
    used_pages += static_cast<size_t>(__builtin_popcountll(~segment->free_pages & kAllUsablePages));
  size_t floor_pages = kDirtyFloorBytes / kPageBytes;
  size_t share_pages = used_pages / kDirtyShareOfUsed;
  size_t budget_pages = floor_pages > share_pages ? floor_pages : share_pages;
  return dirty_pages > budget_pages ? dirty_pages - budget_pages : 0;
}

// Purges up to `excess_pages` free resident pages, the longest free first: each pass takes the
// pages free for at least its age (within a segment the highest pages, which span allocation
// reuses last). Returns the bytes purged.
size_t purge_longest_free(Heap* heap, uint64_t now_ms, size_t excess_pages,
                          const uint64_t (&ages_ms)[7]) {
  size_t purged = 0;
  for (uint64_t age_ms : ages_ms) {
    uint64_t unused_deadline_ms = 0;
    for (Segment* segment = heap->segments.first; segment != nullptr && excess_pages != 0;
         segment = segment->next) {
      unsigned limit =
          excess_pages < kPagesPerSegment ? static_cast<unsigned>(excess_pages) : kPagesPerSegment;
      size_t bytes = segment_purge(segment, now_ms, age_ms, &unused_deadline_ms, limit);
      purged += bytes;
      excess_pages -= bytes / kPageBytes;
    }
  }
  return purged;
}

// Free resident pages the heap keeps past the purge delay: those its peak of the last
// kWorkingSetBuckets delays needed beyond what it uses now, while it keeps taking spans (a
// program whose memory comes and goes in waves, such as an interpreter's collector, reuses
// them instead of faulting them in again); none once it has taken no span for two delays,
// nor with a delay of 0.
size_t working_set_keep_pages(Heap* heap, uint64_t now_ms, uint64_t delay_ms) {
  if (delay_ms == 0) return 0;
  note_used_pages(heap, now_ms);
  if (now_ms >= heap->last_span_ms + 2 * (delay_ms + 1)) return 0;
  size_t peak = 0;
  for (size_t pages : heap->peak_used_pages) peak = pages > peak ? pages : peak;
  return peak > heap->used_pages ? peak - heap->used_pages : 0;
}

}  // namespace

size_t heap_purge_over_budget(Heap* heap, uint64_t now_ms) {
  static constexpr uint64_t kAgesMs[] = {50, 20, 10, 5, 2, 1, 0};
  return purge_longest_free(heap, now_ms, dirty_pages_over_budget(heap), kAgesMs);
}

size_t heap_purge(Heap* heap, uint64_t now_ms, uint64_t delay_ms) {
  heap_collect_remote(heap);
  for (unsigned c = 0; c < kClassCount; ++c) {
    // An empty page kept current (see heap_page_countdown_zero) is retired now, unless its
    // class refilled since the last purge (Heap::classes_refilled).
    Page* current = heap->current[c];
    bool refilled = (heap->classes_refilled[c / 64] >> (c % 64)) & 1;
    if (current != nullptr && current->countdown == 0 && heap->free[c] == nullptr && !refilled) {
      heap->current[c] = nullptr;
      retire(heap, current);
    }
  }
  for (uint64_t& classes : heap->classes_refilled) classes = 0;
  uint64_t next_deadline_ms = 0;
  size_t purged = 0;
  size_t keep_pages = working_set_keep_pages(heap, now_ms, delay_ms);
  if (keep_pages == 0) {
    for (Segment* segment = heap->segments.first; segment != nullptr; segment = segment->next)
      purged += segment_purge(segment, now_ms, delay_ms, &next_deadline_ms);
  } else {
    // While the heap keeps taking spans, a free page beyond its working set is purged only
    // once it has been free for kActiveHeapPurgeDelays delays. Pages a busy heap frees come
    // back soon: with one delay, churn-8t on a loaded machine (threads waiting for a core, so
    // more wall time per unit of work) purged and faulted in again hundreds of MiB (70,000
    // faults, 6.4 s against mimalloc 3's 1.1 s).
    size_t dirty_pages = dirty_pages_of(heap);
    const uint64_t active_ms = kActiveHeapPurgeDelays * delay_ms;
    const uint64_t kAgesMs[] = {8 * delay_ms, active_ms, active_ms, active_ms,
                                active_ms,    active_ms, active_ms};
    if (dirty_pages > keep_pages)
      purged += purge_longest_free(heap, now_ms, dirty_pages - keep_pages, kAgesMs);
    lower_deadline(&next_deadline_ms, now_ms + delay_ms + 1);  // the working set may shrink
  }
  // Empty segments whose pages are purged go back to the process (a live heap keeps its last
  // segment).
  purged +=
      segment_list_release_empty(heap->segments, heap->abandoned.load() ? 0 : 1, true, now_ms);
  heap->purge_deadline_ms = next_deadline_ms;
  // An abandoned heap (purged by purge_process, under its claim) gave back pages, and may have
  // gained some from collected remote frees.
  if (heap->abandoned.load(std::memory_order_relaxed)) recount_dirty(heap);
  return purged;
}

}  // namespace mapalloc
