#include "core/segment.h"

#include "core/purge_deadline.h"
#include "platform/debug_assert.h"
#include "platform/diag.h"
#include "platform/options.h"
#include "platform/spin_lock.h"

namespace mapalloc {

uint8_t segment_map[kUnitCount];

void report_corrupt_link(const Block* block) {
  fatal(
      "heap corruption: the free-list link in freed block %p was overwritten (use after free "
      "or overflow)",
      block);
}

namespace {

// Process-wide cache of entirely free segments. Guarded by `lock`; every change is published by
// one store to `first` (see spin_lock.h for why that makes fork safe).
struct SegmentCache {
  SpinLock lock;
  Segment* first = nullptr;
  size_t count = 0;
  size_t dirty_count = 0;  // cached segments with pages not purged yet
};
SegmentCache segment_cache;

// Segments kept for reuse before further free segments go straight back to the OS; how many
// of them may keep their (resident) pages until the purge delay passes, beyond which a segment
// is purged as it enters the cache; and how many stay cached (purged) after the unmap delay.
constexpr size_t kMaxCachedSegments = 16;
constexpr size_t kMaxDirtyCachedSegments = 4;
constexpr size_t kRetainedSegments = 2;

bool is_dirty(const Segment* segment) { return segment_dirty_pages(segment) != 0; }

// Every mapped segment, newest first. Insertion and removal are single stores (a removal
// finds the predecessor by walking: segments are unmapped rarely).
struct SegmentRegistry {
  SpinLock lock;
  Segment* first = nullptr;
  std::atomic<size_t> count{0};
};
SegmentRegistry segment_registry;

void registry_add(Segment* segment) {
  SpinLockGuard guard(segment_registry.lock);
  segment->registry_next = segment_registry.first;
  __atomic_store_n(&segment_registry.first, segment, __ATOMIC_RELEASE);
  segment_registry.count.fetch_add(1, std::memory_order_relaxed);
}

void registry_remove(Segment* segment) {
  SpinLockGuard guard(segment_registry.lock);
  Segment** link = &segment_registry.first;
  while (*link != nullptr && *link != segment) link = &(*link)->registry_next;
  if (*link == segment) __atomic_store_n(link, segment->registry_next, __ATOMIC_RELEASE);
  segment_registry.count.fetch_sub(1, std::memory_order_relaxed);
}

Segment* cache_pop() {
  if (__atomic_load_n(&segment_cache.first, __ATOMIC_RELAXED) == nullptr) return nullptr;
  SpinLockGuard guard(segment_cache.lock);
  Segment* segment = segment_cache.first;
  if (segment != nullptr) {
    __atomic_store_n(&segment_cache.first, segment->next, __ATOMIC_RELEASE);
    segment_cache.count--;
    if (is_dirty(segment)) segment_cache.dirty_count--;
  }
  return segment;
}

bool cache_push(Segment* segment) {
  SpinLockGuard guard(segment_cache.lock);
  if (segment_cache.count >= kMaxCachedSegments) return false;
  segment->next = segment_cache.first;
  // Published by this store alone, after `next` is written (see spin_lock.h: a forked child may
  // see the cache at any point between two stores of a thread that does not exist there).
  __atomic_store_n(&segment_cache.first, segment, __ATOMIC_RELEASE);
  segment_cache.count++;
  if (is_dirty(segment)) segment_cache.dirty_count++;
  return true;
}

// Takes the whole cache out (one store), so that slow work on it runs outside the lock.
Segment* cache_take_all() {
  SpinLockGuard guard(segment_cache.lock);
  Segment* all = segment_cache.first;
  segment_cache.first = nullptr;
  segment_cache.count = 0;
  segment_cache.dirty_count = 0;
  return all;
}

void segment_unmap(Segment* segment) {
  registry_remove(segment);
  set_unit_entry(segment, kUnitNone);
  os_unmap(segment, kSegmentBytes + kSegmentGuardBytes);
}

constexpr uint64_t kUntouchedDelayFactor = 5;

Segment* segment_map_new() {
  void* memory = os_map_aligned(kSegmentBytes + kSegmentGuardBytes, kSegmentBytes);
  if (memory == nullptr) return nullptr;
  // Fresh mappings are zero (all pages kFree) and not resident: as good as purged, so spans are
  // taken from them only when no recently freed (resident) pages are left.
  Segment* segment = static_cast<Segment*>(memory);
  if constexpr (kSegmentGuardBytes != 0)
    os_guard_fresh(static_cast<char*>(memory) + kSegmentBytes, kSegmentGuardBytes);
  // Huge pages: one fault (and one TLB entry) per 2 MiB instead of 512. Page faults cost
  // 1-12 us each (12 on a VM), which is what malloc-bound programs lost to mimalloc 3, whose
  // arenas are MADV_HUGEPAGE. In auto mode a small program's first segments keep 4 KiB pages:
  // a huge page would make 2 MiB resident for its first few blocks.
  // (Advised before the first write to the segment, which would fault in 4 KiB pages.)
  unsigned thp = options().transparent_huge_pages;
  bool huge_pages =
      thp == 2 ||
      (thp == 1 && segment_registry.count.load(std::memory_order_relaxed) * kSegmentBytes >=
                       kThpSegmentsFromBytes);
  if (huge_pages) os_advise_huge_pages(memory, kSegmentBytes);
  segment->huge_pages = huge_pages;
  segment->huge_pages_paused = false;
  segment->free_pages = kAllUsablePages;
  segment->purged_pages = kAllUsablePages;
  segment->untouched_pages = 0;
  for (auto& bytes : segment->region_carved_bytes) bytes = 0;
  segment->collapsed_regions = 0;
  if (segment->huge_pages) {
    // Writing these fields faulted in the whole first region (a huge page).
    uint64_t first_region = (~uint64_t{0} >> (64 - kPagesPerHugePage)) & kAllUsablePages;
    segment->purged_pages &= ~first_region;
    segment->untouched_pages = first_region;
  }
  set_unit_entry(segment, kUnitSegment);
  registry_add(segment);
  return segment;
}

void list_remove(SegmentList& list, Segment* segment) {
  if (segment->prev != nullptr)
    segment->prev->next = segment->next;
  else
    list.first = segment->next;
  if (segment->next != nullptr) segment->next->prev = segment->prev;
  list.count--;
}

// Bit mask of the pages that start a run of `pages` free pages.
uint64_t run_starts(uint64_t free_pages, unsigned pages) {
  uint64_t starts = free_pages;
  for (unsigned shift = 1; shift < pages && starts != 0; ++shift) starts &= free_pages >> shift;
  return starts;
}

uint64_t span_mask(unsigned first, unsigned pages) {
  uint64_t bits = pages >= 64 ? ~uint64_t{0} : (uint64_t{1} << pages) - 1;
  return bits << first;
}

uint64_t region_pages(unsigned region) {
  return span_mask(region * kPagesPerHugePage, kPagesPerHugePage) & kAllUsablePages;
}

// Free pages that a huge page just made resident: dirty now, and untouched (see Segment).
void mark_resident(Segment* segment, uint64_t now_resident) {
  if (now_resident == 0) return;
  uint64_t now_ms = os_now_ms();
  for (uint64_t rest = now_resident; rest != 0; rest &= rest - 1)
    segment->pages[__builtin_ctzll(rest)].retired_at_ms = now_ms;
  segment->purged_pages &= ~now_resident;
  segment->untouched_pages |= now_resident;
}

// Adds the bytes [from, to) to the count of each region they overlap (or takes them off);
// offsets from the segment's start. Returns those regions, a bit each.
unsigned count_carved(Segment* segment, size_t from, size_t to, bool add) {
  unsigned regions = 0;
  for (unsigned region = static_cast<unsigned>(from / kHugePageBytes);
       region < kRegionsPerSegment && region * kHugePageBytes < to; ++region) {
    size_t start = from > region * kHugePageBytes ? from : region * kHugePageBytes;
    size_t end = to < (region + 1) * kHugePageBytes ? to : (region + 1) * kHugePageBytes;
    uint32_t bytes = static_cast<uint32_t>(end - start);
    MAPALLOC_ASSERT(add || segment->region_carved_bytes[region] >= bytes,
                    "a region's carved count holds the blocks of its spans in use", segment);
    segment->region_carved_bytes[region] += add ? bytes : 0u - bytes;
    regions |= 1u << region;
  }
  return regions;
}

// Of `regions` (a bit each), collapses those filled and not collapsed yet.
void collapse_filled(Segment* segment, unsigned regions) {
  for (unsigned region = 0; region < kRegionsPerSegment; ++region) {
    // (The first region's metadata page counts as unfilled: the huge page makes it resident.)
    if ((regions & ~segment->collapsed_regions & (1u << region)) == 0 ||
        segment->region_carved_bytes[region] + kCollapseSlackBytes < kHugePageBytes)
      continue;
    // Marked even when the budget or the kernel says no: tried again only after a purge.
    segment->collapsed_regions |= static_cast<uint8_t>(1u << region);
    if (os_collapse_huge_page_within_budget(reinterpret_cast<char*>(segment) +
                                            region * kHugePageBytes))
      mark_resident(segment, region_pages(region) & segment->purged_pages);
  }
}

Page* take_span(Segment* segment, unsigned first, unsigned pages) {
  MAPALLOC_ASSERT(pages > 0 &&
                      (segment->free_pages & span_mask(first, pages)) == span_mask(first, pages) &&
                      (span_mask(first, pages) & ~kAllUsablePages) == 0,
                  "a new span takes free, usable pages only", &segment->pages[first]);
  if (segment->huge_pages) {
    // The first touch of a region none of whose pages is resident maps a huge page: its other
    // free pages are resident (dirty) now. (A region partly purged was split: it faults 4 KiB
    // pages from then on.)
    uint64_t now_resident = 0;
    uint64_t taken = span_mask(first, pages);
    for (unsigned index = 0; index < kRegionsPerSegment; ++index) {
      uint64_t region = region_pages(index);
      if ((region & taken) != 0 && (region & ~segment->purged_pages) == 0)
        now_resident |= region & ~taken;
    }
    mark_resident(segment, now_resident);
  }
  segment->untouched_pages &= ~span_mask(first, pages);
  segment->free_pages &= ~span_mask(first, pages);
  segment->purged_pages &= ~span_mask(first, pages);
  Page* head = &segment->pages[first];
  for (unsigned i = 0; i < pages; ++i) {
    Page* page = head + i;
    page->owner = nullptr;
    page->start_limit = 0;
    page->state = i == 0 ? PageState::kFree : PageState::kSpanTail;
    page->head_index = static_cast<uint8_t>(first);
  }
  head->span_pages = static_cast<uint8_t>(pages);
  return head;
}

}  // namespace

void segment_list_push(SegmentList& list, Segment* segment) {
  segment->prev = nullptr;
  segment->next = list.first;
  if (list.first != nullptr) list.first->prev = segment;
  list.first = segment;
  list.count++;
}

// Free pages still resident (freed, not purged yet) are taken first: reusing them costs no page
// faults, and leaves the purged ones out of the resident set. Only when no run of them is long
// enough does a span take purged or never-touched pages.
Page* span_alloc_in_list(SegmentList& list, unsigned pages) {
  for (Segment* segment = list.first; segment != nullptr; segment = segment->next) {
    uint64_t starts = run_starts(segment_dirty_pages(segment), pages);
    if (starts != 0)
      return take_span(segment, static_cast<unsigned>(__builtin_ctzll(starts)), pages);
  }
  for (Segment* segment = list.first; segment != nullptr; segment = segment->next) {
    uint64_t starts = run_starts(segment->free_pages, pages);
    if (starts != 0)
      return take_span(segment, static_cast<unsigned>(__builtin_ctzll(starts)), pages);
  }
  return nullptr;
}

namespace {

// A cached segment whose pages are all purged stops being a huge-page candidate (see
// Segment::huge_pages_paused); one taken from the cache becomes one again.
void pause_huge_pages_if_purged(Segment* segment) {
  if (!segment->huge_pages || is_dirty(segment)) return;
  os_advise_no_huge_pages(segment, kSegmentBytes);
  segment->huge_pages = false;
  segment->huge_pages_paused = true;
}

void resume_huge_pages(Segment* segment) {
  if (!segment->huge_pages_paused) return;
  os_advise_huge_pages(segment, kSegmentBytes);
  segment->huge_pages = true;
  segment->huge_pages_paused = false;
}

}  // namespace

Page* span_alloc(SegmentList& list, Heap* owner, uint8_t owner_tag, unsigned pages) {
  if (Page* page = span_alloc_in_list(list, pages)) return page;
  Segment* segment = cache_pop();
  if (segment != nullptr) resume_huge_pages(segment);
  if (segment == nullptr) segment = segment_map_new();
  if (segment == nullptr) return nullptr;
  MAPALLOC_ASSERT(unit_entry(segment) == kUnitSegment && segment->owner == nullptr,
                  "a segment from the cache or the OS has the unowned map entry", segment);
  segment->owner = owner;
  set_unit_entry(segment, owner_tag);
  segment_list_push(list, segment);
  // The segment is now first in the list, and the only one with room: the same search takes
  // its resident pages first (a cached segment may be partly purged).
  return span_alloc_in_list(list, pages);
}

// An empty segment leaves its heap for the process cache (purged first if the cache already
// holds enough resident segments), or goes back to the OS when the cache is full.
void release_segment(SegmentList& list, Segment* segment, uint64_t now_ms) {
  MAPALLOC_ASSERT(segment->free_pages == kAllUsablePages,
                  "a segment leaves its heap only with every page free", segment);
  for (uint32_t carved_bytes : segment->region_carved_bytes)
    MAPALLOC_ASSERT(carved_bytes == 0, "an empty segment counts no carved blocks", segment);
  list_remove(list, segment);
  segment->owner = nullptr;
  segment->cached_at_ms = now_ms;
  set_unit_entry(segment, kUnitSegment);
  if (__atomic_load_n(&segment_cache.dirty_count, __ATOMIC_RELAXED) >= kMaxDirtyCachedSegments) {
    uint64_t unused_deadline = 0;
    segment_purge(segment, now_ms, 0, &unused_deadline);
    pause_huge_pages_if_purged(segment);
  }
  if (cache_push(segment)) {
    note_global_purge_deadline(now_ms + options().purge_delay_ms);
  } else {
    segment_unmap(segment);
  }
}

// Only segments on 4 KiB pages count: a segment's huge_pages does not change while it has spans
// in use (it is paused and resumed only when empty).
void segment_count_carved(Page* head, size_t from_bytes, size_t to_bytes) {
  Segment* segment = segment_of(head);
  if (segment->huge_pages) return;
  size_t span_offset = size_t{page_index(head)} * kPageBytes;
  unsigned regions = count_carved(segment, span_offset + from_bytes, span_offset + to_bytes, true);
  if (options().transparent_huge_pages != 0) collapse_filled(segment, regions);
}

void span_free(SegmentList& list, Page* head, uint64_t now_ms) {
  Segment* segment = segment_of(head);
  unsigned first = page_index(head);
  unsigned pages = head->span_pages;
  size_t span_offset = size_t{first} * kPageBytes;
  if (!segment->huge_pages)
    count_carved(segment, span_offset, span_offset + size_t{head->carved} * head->block_bytes,
                 false);
  MAPALLOC_ASSERT(head->head_index == first && head->state != PageState::kSpanTail && pages > 0 &&
                      first + pages <= kPagesPerSegment,
                  "a span freed is a span in use within its segment", head);
  MAPALLOC_ASSERT((segment->free_pages & span_mask(first, pages)) == 0,
                  "the pages of a span in use are not free in the segment", head);
  MAPALLOC_ASSERT(head->owner == nullptr || segment->owner == head->owner,
                  "a span's segment belongs to the span's heap", head);
  if constexpr (kDebug) {
    for (unsigned i = 1; i < pages; ++i) {
      MAPALLOC_ASSERT(head[i].state == PageState::kSpanTail && head[i].head_index == first,
                      "a span's tail pages point to its head", &head[i]);
    }
  }
  for (unsigned i = 0; i < pages; ++i) {
    head[i].owner = nullptr;
    head[i].start_limit = 0;
    head[i].state = PageState::kFree;
    head[i].retired_at_ms = now_ms;
  }
  segment->free_pages |= span_mask(first, pages);
  // A heap keeps its last segment even when empty: its thread (or the next thread to adopt the
  // heap) needs pages again soon, and a round trip through the cache would cost a purge and
  // refault. Its free pages are purged after the delay like any others.
  if (segment->free_pages != kAllUsablePages || list.count == 1 || list.keep_empty ||
      now_ms < list.keep_empty_until_ms)
    return;
  release_segment(list, segment, now_ms);
}

size_t segment_list_release_empty(SegmentList& list, size_t keep, bool purged_only,
                                  uint64_t now_ms) {
  size_t released = 0;
  for (Segment* segment = list.first; segment != nullptr && list.count > keep;) {
    Segment* next = segment->next;
    bool empty = segment->free_pages == kAllUsablePages;
    if (empty && !(purged_only && is_dirty(segment))) {
      release_segment(list, segment, now_ms);
      released += kSegmentBytes;
    }
    segment = next;
  }
  return released;
}

size_t segment_purge(Segment* segment, uint64_t now_ms, uint64_t delay_ms,
                     uint64_t* next_deadline_ms, unsigned max_pages) {
  uint64_t dirty = segment_dirty_pages(segment);
  uint64_t due = 0;
  for (uint64_t rest = dirty; rest != 0; rest &= rest - 1) {
    unsigned index = static_cast<unsigned>(__builtin_ctzll(rest));
    uint64_t due_ms = segment->pages[index].retired_at_ms + delay_ms;
    if (delay_ms == 0 || due_ms <= now_ms)
      due |= uint64_t{1} << index;
    else
      lower_deadline(next_deadline_ms, due_ms);
  }
  if (segment->untouched_pages != 0 && delay_ms != 0) {
    // Untouched pages of a huge page with spans in use wait longer (kUntouchedDelayFactor
    // delays): purging them splits the huge page, and the next spans taken there would fault
    // 4 KiB at a time.
    uint64_t busy_regions = 0;
    for (unsigned first = 0; first < kPagesPerSegment; first += kPagesPerHugePage) {
      uint64_t region = span_mask(first, kPagesPerHugePage) & kAllUsablePages;
      if ((region & ~segment->free_pages) != 0) busy_regions |= region;
    }
    for (uint64_t rest = due & busy_regions & segment->untouched_pages; rest != 0;
         rest &= rest - 1) {
      unsigned index = static_cast<unsigned>(__builtin_ctzll(rest));
      uint64_t due_ms = segment->pages[index].retired_at_ms + kUntouchedDelayFactor * delay_ms;
      if (due_ms > now_ms) {
        due &= ~(uint64_t{1} << index);
        lower_deadline(next_deadline_ms, due_ms);
      }
    }
  }
  if (static_cast<unsigned>(__builtin_popcountll(due)) > max_pages) {
    lower_deadline(next_deadline_ms, now_ms);  // the pages left out are due already
    while (static_cast<unsigned>(__builtin_popcountll(due)) > max_pages) due &= due - 1;
  }
  // Every run of neighbouring pages in one list (at most 32: runs are separated by a page).
  static_assert(kPagesPerSegment / 2 <= kOsPurgeMaxRuns);
  OsRange runs[kPagesPerSegment / 2];
  unsigned run_count = 0;
  size_t purged = 0;
  segment->purged_pages |= due;
  segment->untouched_pages &= ~due;
  for (unsigned region = 0; region < kRegionsPerSegment; ++region) {
    if ((due & region_pages(region)) != 0)  // a huge page there is split now
      segment->collapsed_regions &= static_cast<uint8_t>(~(1u << region));
  }
  while (due != 0) {
    unsigned first = static_cast<unsigned>(__builtin_ctzll(due));
    unsigned length = static_cast<unsigned>(__builtin_ctzll(~(due >> first)));
    runs[run_count++] = {reinterpret_cast<char*>(segment) + first * kPageBytes,
                         length * kPageBytes};
    due &= ~span_mask(first, length);
    purged += length * kPageBytes;
  }
  os_purge_ranges(runs, run_count, static_cast<PurgeMethod>(options().purge_method));
  return purged;
}

SegmentCacheCounters segment_cache_counters() {
  SpinLockGuard guard(segment_cache.lock);
  return {segment_cache.count, segment_cache.count * kSegmentBytes};
}

size_t segment_cache_purge(uint64_t now_ms, bool force, uint64_t* next_deadline_ms) {
  Segment* all = cache_take_all();
  const Options& settings = options();
  size_t released = 0;
  size_t kept = 0;
  Segment* keep = nullptr;
  while (Segment* segment = all) {
    all = segment->next;
    uint64_t age = now_ms > segment->cached_at_ms ? now_ms - segment->cached_at_ms : 0;
    bool unmap = force || (age >= settings.unmap_delay_ms && kept >= kRetainedSegments);
    if (unmap) {
      segment_unmap(segment);
      released += kSegmentBytes;
      continue;
    }
    // Every usable page is free here; purge those not purged yet once the delay has passed.
    size_t purged = segment_purge(segment, now_ms, settings.purge_delay_ms, next_deadline_ms);
    pause_huge_pages_if_purged(segment);
    released += purged;
    if (age < settings.unmap_delay_ms && kept >= kRetainedSegments) {
      lower_deadline(next_deadline_ms, segment->cached_at_ms + settings.unmap_delay_ms);
    }
    segment->next = keep;
    keep = segment;
    ++kept;
  }
  while (Segment* segment = keep) {
    keep = segment->next;
    if (!cache_push(segment)) segment_unmap(segment);
  }
  return released;
}

size_t segment_cache_release_all() {
  size_t released = 0;
  while (Segment* segment = cache_pop()) {
    segment_unmap(segment);
    released += kSegmentBytes;
  }
  return released;
}

void segment_cache_after_fork_child() {
  segment_cache.lock.reset_after_fork();
  segment_registry.lock.reset_after_fork();
}

void segment_registry_walk(void (*visit)(const Segment*, void*), void* context) {
  SpinLockGuard guard(segment_registry.lock);
  for (Segment* segment = segment_registry.first; segment != nullptr;
       segment = segment->registry_next) {
    visit(segment, context);
  }
}

}  // namespace mapalloc
