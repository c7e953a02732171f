#include "heap.h"

#include <sched.h>

#include "options.h"

namespace mapalloc {

constinit Heap empty_heap;
std::atomic<uint64_t> global_purge_deadline_ms{0};
__thread Heap* tls_heap __attribute__((tls_model("initial-exec"))) = &empty_heap;

namespace {

// --- page queues ------------------------------------------------------------------------------

void queue_push(PageQueue& queue, Page* page) {
  page->queue_next = nullptr;
  page->queue_prev = queue.last;
  if (queue.last != nullptr)
    queue.last->queue_next = page;
  else
    queue.first = page;
  queue.last = page;
}

void queue_remove(PageQueue& queue, Page* page) {
  if (page->queue_prev != nullptr)
    page->queue_prev->queue_next = page->queue_next;
  else
    queue.first = page->queue_next;
  if (page->queue_next != nullptr)
    page->queue_next->queue_prev = page->queue_prev;
  else
    queue.last = page->queue_prev;
  page->queue_next = page->queue_prev = nullptr;
}

Page* queue_pop(PageQueue& queue) {
  Page* page = queue.first;
  if (page != nullptr) queue_remove(queue, page);
  return page;
}

// --- every heap, and the pools of abandoned ones --------------------------------------------

// A lock-free stack of heaps. Heaps are never freed, so reading a popped heap's pool_next is
// always safe; the tag in the top 16 bits of the head defeats ABA.
class HeapStack {
 public:
  void push(Heap* heap) {
    uint64_t old = head_.load(std::memory_order_relaxed);
    uint64_t next;
    do {
      heap->pool_next = reinterpret_cast<Heap*>(old & kPointerMask);
      next = reinterpret_cast<uint64_t>(heap) | (((old >> kTagShift) + 1) << kTagShift);
    } while (!head_.compare_exchange_weak(old, next, std::memory_order_release,
                                          std::memory_order_relaxed));
  }

  Heap* pop() {
    uint64_t old = head_.load(std::memory_order_acquire);
    for (;;) {
      Heap* heap = reinterpret_cast<Heap*>(old & kPointerMask);
      if (heap == nullptr) return nullptr;
      uint64_t next =
          reinterpret_cast<uint64_t>(heap->pool_next) | (((old >> kTagShift) + 1) << kTagShift);
      if (head_.compare_exchange_weak(old, next, std::memory_order_acquire,
                                      std::memory_order_acquire)) {
        return heap;
      }
    }
  }

  bool empty() const { return (head_.load(std::memory_order_relaxed) & kPointerMask) == 0; }

 private:
  static constexpr unsigned kTagShift = 48;
  static constexpr uint64_t kPointerMask = (uint64_t{1} << kTagShift) - 1;
  std::atomic<uint64_t> head_{0};
};

// Free resident pages that exited threads' heaps may keep, all together, for the threads that
// will adopt them: a thread pool replacing a few threads refaults nothing, while a storm of
// threads exiting at once does not leave the sum of their peaks behind (each heap beyond the
// allowance keeps only its own budget, see heap_abandon). Remote frees collected later into an
// abandoned heap can take the total past the allowance until the purge delay passes.
constexpr size_t kAbandonedDirtyBytes = 16 * kMiB;
constexpr size_t kAbandonedDirtyPages = kAbandonedDirtyBytes / kPageBytes;
// The sum of the abandoned heaps' counted_dirty_pages (exact while no thread is between two
// updates; a forked child recomputes it).
std::atomic<size_t> abandoned_dirty_pages{0};

size_t dirty_pages_of(const Heap* heap) {
  size_t pages = 0;
  for (const Segment* segment = heap->segments.first; segment != nullptr; segment = segment->next)
    pages += static_cast<size_t>(__builtin_popcountll(segment_dirty_pages(segment)));
  return pages;
}

// Sets an abandoned heap's share of the allowance to what it holds now.
void recount_dirty(Heap* heap) {
  size_t pages = dirty_pages_of(heap);
  abandoned_dirty_pages.fetch_add(pages - heap->counted_dirty_pages, std::memory_order_relaxed);
  heap->counted_dirty_pages = pages;
}

void uncount_dirty(Heap* heap) {
  abandoned_dirty_pages.fetch_sub(heap->counted_dirty_pages, std::memory_order_relaxed);
  heap->counted_dirty_pages = 0;
}

// Abandoned heaps that still hold segments, and emptied ones. A new thread adopts from the
// first if it can (its pages are as good as new ones); a live heap short of pages reclaims
// from it; emptied heaps wait for new threads.
HeapStack abandoned_with_memory;
HeapStack abandoned_empty;

void pool_push(Heap* heap) {
  if (heap->segments.first != nullptr)
    abandoned_with_memory.push(heap);
  else
    abandoned_empty.push(heap);
}

// Takes a heap out of a pool for a thread to own: it stops being abandoned first, then the
// caller waits for a purge that claimed it to finish (the store and the load are sequentially
// consistent, pairing with heap_try_claim's: one of the two sides always sees the other).
Heap* take_from(HeapStack& stack) {
  Heap* heap = stack.pop();
  if (heap == nullptr) return nullptr;
  heap->abandoned.store(false, std::memory_order_seq_cst);
  while (heap->purge_claimed.load(std::memory_order_seq_cst)) sched_yield();
  uncount_dirty(heap);
  return heap;
}

Heap* pool_pop() {
  Heap* heap = take_from(abandoned_with_memory);
  return heap != nullptr ? heap : take_from(abandoned_empty);
}

std::atomic<Heap*> all_heaps{nullptr};
std::atomic<unsigned> next_heap_tag{kFirstHeapTag};

Heap* heap_create() {
  void* memory = os_map_aligned(align_up(sizeof(Heap), kOsPageBytes), kOsPageBytes);
  if (memory == nullptr) return nullptr;
  Heap* heap = new (memory) Heap();
  // Heaps are immortal, so the first kLastHeapTag - kFirstHeapTag + 1 keep unique tags forever;
  // later ones (only with that many threads alive at once) free through the slow path.
  unsigned tag = next_heap_tag.fetch_add(1, std::memory_order_relaxed);
  heap->segment_tag = tag <= kLastHeapTag ? static_cast<uint8_t>(tag) : kNoHeapTag;
  Heap* first = all_heaps.load(std::memory_order_relaxed);
  do {
    heap->all_next = first;
  } while (!all_heaps.compare_exchange_weak(first, heap, std::memory_order_release,
                                            std::memory_order_relaxed));
  return heap;
}

// --- pages of a heap --------------------------------------------------------------------------

// `front` (short: its tail is found by walking) followed by `back`.
Block* append_blocks(Block* front, Block* back) {
  if (front == nullptr) return back;
  Block* last = front;
  for (Block* next = block_next(last); next != nullptr; next = block_next(last)) last = next;
  set_block_next(last, back);
  return front;
}

// Refills hand out at most this many blocks while purge work is waiting: a program making one
// malloc per millisecond still reaches a slow path every quarter of a second.
constexpr unsigned kPendingRefillBlocks = 256;

// The working set's buckets (see Heap::used_pages), one purge delay long.
void note_used_pages(Heap* heap, uint64_t now_ms) {
  uint64_t bucket_ms = uint64_t{options().purge_delay_ms} + 1;
  if (now_ms >= heap->bucket_start_ms + bucket_ms) {
    // A whole bucket without a look forgets the previous peak as well.
    bool skipped = now_ms >= heap->bucket_start_ms + 2 * bucket_ms;
    heap->peak_used_pages[0] = skipped ? heap->used_pages : heap->peak_used_pages[1];
    heap->peak_used_pages[1] = heap->used_pages;
    heap->bucket_start_ms = now_ms;
  }
  if (heap->used_pages > heap->peak_used_pages[1]) heap->peak_used_pages[1] = heap->used_pages;
}

// A span was taken: counted in the working set.
Page* counted_span(Heap* heap, Page* page) {
  if (page == nullptr) return nullptr;
  uint64_t now_ms = os_now_ms();
  heap->used_pages += page->span_pages;
  heap->last_span_ms = now_ms;
  note_used_pages(heap, now_ms);
  return page;
}

void retire(Heap* heap, Page* page) {
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

// Delivers a block that claimed its full page's kFullFlag to the owner's delayed list.
void push_delayed(Heap* owner, Block* block) {
  Block* first = owner->delayed_free.load(std::memory_order_relaxed);
  do {
    set_block_next(block, first);
  } while (!owner->delayed_free.compare_exchange_weak(first, block, std::memory_order_release,
                                                      std::memory_order_relaxed));
}

// Tells the owner that remote frees wait for it. Called after the block is on a list; the
// sequentially consistent load pairs with heap_collect_remote's clear-then-collect, so that
// either this thread sets the flag again or the owner's collection sees the block.
void note_remote_free(Heap* owner) {
  if (owner->remote_frees_pending.load(std::memory_order_seq_cst)) return;
  owner->remote_frees_pending.store(true, std::memory_order_seq_cst);
  // No thread owns an abandoned heap: have the process-wide purge collect it.
  if (owner->abandoned.load(std::memory_order_relaxed)) {
    note_global_purge_deadline(os_now_ms() + options().purge_delay_ms);
  }
}

void drain_delayed(Heap* heap) {
  Block* block = heap->delayed_free.exchange(nullptr, std::memory_order_acquire);
  while (block != nullptr) {
    Block* next = block_next_any(block);
    Page* page = span_head(page_entry_of(block));
    // A remote free may have read the owner just before a reclaim moved the page to another
    // heap (see reclaim): its block is passed on to the page's owner now, still as a claimed
    // delayed block (the page's kFullFlag was consumed by it).
    Heap* owner = __atomic_load_n(&page->owner, __ATOMIC_ACQUIRE);
    if (owner == heap) {
      heap_free_local(heap, page, block);
    } else {
      push_delayed(owner, block);
      note_remote_free(owner);
    }
    block = next;
  }
}

// Moves the remote frees of a class's available pages into their local lists, and retires the
// pages that leaves empty. Returns how many it retired.
unsigned collect_available(Heap* heap, unsigned size_class) {
  unsigned retired = 0;
  for (Page* page = heap->available[size_class].first; page != nullptr;) {
    Page* next = page->queue_next;
    page_collect_remote(page);
    if (page->countdown == 0) {
      queue_remove(heap->available[size_class], page);
      retire(heap, page);
      retired++;
    }
    page = next;
  }
  return retired;
}

void queue_append(PageQueue& into, PageQueue& from) {
  if (from.first == nullptr) return;
  if (into.last != nullptr) {
    into.last->queue_next = from.first;
    from.first->queue_prev = into.last;
  } else {
    into.first = from.first;
  }
  into.last = from.last;
  from = PageQueue{};
}

// Moves everything `from` (an abandoned heap taken from the pool) holds into `into`: its
// segments, page ownership, map entries and page queues. Pages change owner only here, while
// their old owner belongs to no thread; a remote free racing with the change may still deliver
// a block to `from`'s delayed list, and whoever takes `from` next forwards it (drain_delayed).
void reclaim(Heap* into, Heap* from) {
  heap_collect(from);
  // The segments `from` kept empty for an adopting thread go to the process cache: the
  // reclaiming heap wants pages with blocks to reuse, not more empty segments.
  segment_list_release_empty(from->segments, 0, false, os_now_ms());
  lower_deadline(&into->purge_deadline_ms, from->purge_deadline_ms);
  into->used_pages += from->used_pages;  // (its spans still in use, after the collection)
  from->used_pages = 0;
  uint8_t entry = map_entry_of(into);
  while (Segment* segment = from->segments.first) {
    from->segments.first = segment->next;
    from->segments.count--;
    for (Page& page : segment->pages) {
      if (page.owner == from) __atomic_store_n(&page.owner, into, __ATOMIC_RELEASE);
    }
    segment->owner = into;
    set_unit_entry(segment, entry);
    segment_list_push(into->segments, segment);
  }
  for (unsigned c = 0; c < kClassCount; ++c) queue_append(into->available[c], from->available[c]);
}

// Before mapping new memory, take over an abandoned heap's (its free blocks are as good, and
// its thread is gone). The emptied heap goes back to the pool for a new thread to adopt.
bool reclaim_abandoned(Heap* heap) {
  if (abandoned_with_memory.empty()) return false;
  Heap* abandoned = take_from(abandoned_with_memory);
  if (abandoned == nullptr) return false;
  reclaim(heap, abandoned);
  abandoned->abandoned.store(true, std::memory_order_seq_cst);
  abandoned_empty.push(abandoned);
  return true;
}

}  // namespace

Heap* heap_list_first() { return all_heaps.load(std::memory_order_acquire); }

Block* heap_refill(Heap* heap, unsigned size_class) {
  heap->slow_calls++;
  bool reclaimed = false;
  if (heap->delayed_free.load(std::memory_order_relaxed) != nullptr) drain_delayed(heap);
  for (;;) {
    if (Page* page = heap->current[size_class]) {
      // A short local_free would make the next refill come soon, and the one after (a steady
      // state of a few live blocks cycling): top it up, with the blocks other threads freed
      // into the page if there are any (a producer thread never frees locally), else with new
      // blocks while the span has any.
      bool short_list = page_local_free_count(page) < page_carve_batch(page) / 2 + 1;
      unsigned limit = heap_purge_pending(heap) ? kPendingRefillBlocks : ~0u;
      Block* blocks = page_take_local_free(page, limit);
      if (short_list) {
        if (Block* remote = page_take_thread_free(page))
          blocks = append_blocks(blocks, remote);
        else
          blocks = page_carve(page, blocks);
      }
      if (blocks == nullptr) blocks = page_take_thread_free(page);
      if (blocks != nullptr) return blocks;
      if (!page_try_mark_full(page)) continue;  // a remote free just arrived: take it
      page->state = PageState::kFull;
      heap->current[size_class] = nullptr;
    }
    Page* page = queue_pop(heap->available[size_class]);
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
    page->state = PageState::kCurrent;
    heap->current[size_class] = page;
  }
}

void heap_page_countdown_zero(Heap* heap, Page* page) {
  heap->slow_calls++;
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
  block->free_key = page->free_key;
  set_block_next(block, page->local_free);
  page->local_free = block;
  if (--page->countdown == 0) heap_page_countdown_zero(heap, page);
}

void heap_free_remote(Page* page, Block* block) {
  Heap* owner = __atomic_load_n(&page->owner, __ATOMIC_ACQUIRE);
  block->free_key = page->free_key;
  if (page_remote_free(page, block)) push_delayed(owner, block);
  note_remote_free(owner);
}

void heap_free_any(Heap* heap, Block* block) {
  if (heap != &empty_heap && span_head(page_entry_of(block))->owner != heap) heap->remote_frees++;
  Page* page = span_head(page_entry_of(block));
  if (page->owner == heap)
    heap_free_local(heap, page, block);
  else
    heap_free_remote(page, block);
}

void heap_flush_quarantine(Heap* heap) {
  for (Block*& slot : heap->quarantine) {
    Block* block = slot;
    slot = nullptr;
    if (block != nullptr) heap_free_any(heap, block);
  }
}

bool heap_block_is_free(Heap* owner, Page* page, Block* block) {
  if (owner->current[page->size_class] == page &&
      block_list_contains(owner->free[page->size_class], block)) {
    return true;
  }
  if (block_list_contains(page->local_free, block)) return true;
  uintptr_t remote = page->thread_free.load(std::memory_order_acquire) & ~kFullFlag;
  if (block_list_contains(reinterpret_cast<Block*>(remote), block)) return true;
  return block_list_contains(owner->delayed_free.load(std::memory_order_acquire), block);
}

void heap_collect(Heap* heap) {
  drain_delayed(heap);
  for (unsigned c = 0; c < kClassCount; ++c) {
    release_current(heap, c);
    collect_available(heap, c);
  }
}

unsigned heap_collect_remote(Heap* heap) {
  heap->remote_frees_pending.store(false, std::memory_order_seq_cst);
  drain_delayed(heap);
  unsigned retired = 0;
  for (unsigned c = 0; c < kClassCount; ++c) retired += collect_available(heap, c);
  return retired;
}

namespace {

// Free, unpurged pages a heap may keep: this many bytes, or a quarter of its pages in use if
// that is more.
constexpr size_t kDirtyFloorBytes = 1 * kMiB;
constexpr size_t kDirtyShareOfUsed = 4;

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

// Free resident pages the heap keeps past the purge delay: those its recent peak needed beyond
// what it uses now, while it keeps taking spans (a program whose memory comes and goes in waves
// reuses them instead of faulting them in again); none once it has taken no span for two
// buckets, nor with a delay of 0.
size_t working_set_keep_pages(Heap* heap, uint64_t now_ms, uint64_t delay_ms) {
  if (delay_ms == 0) return 0;
  note_used_pages(heap, now_ms);
  if (now_ms >= heap->last_span_ms + 2 * (delay_ms + 1)) return 0;
  size_t peak = heap->peak_used_pages[0] > heap->peak_used_pages[1] ? heap->peak_used_pages[0]
                                                                    : heap->peak_used_pages[1];
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
    // An empty page kept current (see heap_page_countdown_zero) is retired now.
    Page* current = heap->current[c];
    if (current != nullptr && current->countdown == 0 && heap->free[c] == nullptr) {
      heap->current[c] = nullptr;
      retire(heap, current);
    }
  }
  uint64_t next_deadline_ms = 0;
  size_t purged = 0;
  size_t keep_pages = working_set_keep_pages(heap, now_ms, delay_ms);
  if (keep_pages == 0) {
    for (Segment* segment = heap->segments.first; segment != nullptr; segment = segment->next)
      purged += segment_purge(segment, now_ms, delay_ms, &next_deadline_ms);
  } else {
    size_t dirty_pages = dirty_pages_of(heap);
    const uint64_t kAgesMs[] = {8 * delay_ms, 4 * delay_ms, 2 * delay_ms, delay_ms,
                                delay_ms,     delay_ms,     delay_ms};
    if (dirty_pages > keep_pages)
      purged += purge_longest_free(heap, now_ms, dirty_pages - keep_pages, kAgesMs);
    lower_deadline(&next_deadline_ms, now_ms + delay_ms + 1);  // the working set may shrink
  }
  // Empty segments whose pages are purged go back to the process (a live heap keeps one).
  purged +=
      segment_list_release_empty(heap->segments, heap->abandoned.load() ? 0 : 1, true, now_ms);
  heap->purge_deadline_ms = next_deadline_ms;
  // An abandoned heap (purged by purge_process, under its claim) gave back pages, and may have
  // gained some from collected remote frees.
  if (heap->abandoned.load(std::memory_order_relaxed)) recount_dirty(heap);
  return purged;
}

Heap* heap_acquire() {
  Heap* heap = pool_pop();
  if (heap == nullptr) heap = heap_create();
  if (heap != nullptr) heap->segments.keep_empty = false;
  return heap;
}

void heap_abandon(Heap* heap) {
  // Its empty segments stay with it: the next thread to adopt it will need pages (see
  // heap_purge for when they are let go).
  heap->segments.keep_empty = true;
  heap_collect(heap);
  // A dead thread's pages are reused only if a new thread adopts its heap: beyond the allowance
  // shared by all abandoned heaps it keeps no more free resident pages than its budget. The
  // pages are reserved first, so that threads exiting together cannot all take the same room.
  size_t pages = dirty_pages_of(heap);
  if (abandoned_dirty_pages.fetch_add(pages, std::memory_order_relaxed) + pages >
      kAbandonedDirtyPages) {
    abandoned_dirty_pages.fetch_sub(pages, std::memory_order_relaxed);
    heap_purge_over_budget(heap, os_now_ms());
    pages = dirty_pages_of(heap);
    abandoned_dirty_pages.fetch_add(pages, std::memory_order_relaxed);
  }
  heap->counted_dirty_pages = pages;
  heap->abandoned.store(true, std::memory_order_seq_cst);
  // Its free pages are now the process's to purge (any thread processes abandoned heaps).
  note_global_purge_deadline(heap->purge_deadline_ms);
  pool_push(heap);
}

bool heap_try_claim(Heap* heap) {
  if (heap->purge_claimed.exchange(true, std::memory_order_seq_cst)) return false;
  if (heap->abandoned.load(std::memory_order_seq_cst)) return true;
  heap->purge_claimed.store(false, std::memory_order_release);  // adopted meanwhile
  return false;
}

void heap_unclaim(Heap* heap) { heap->purge_claimed.store(false, std::memory_order_release); }

void heap_after_fork_child() {
  // A thread that does not exist here may have been between two updates of the allowance's
  // count: recompute it from the heaps.
  size_t total_pages = 0;
  heap_for_each([&total_pages](Heap* heap) {
    heap->purge_claimed.store(false, std::memory_order_relaxed);
    bool abandoned = heap->abandoned.load(std::memory_order_relaxed);
    heap->counted_dirty_pages = abandoned ? dirty_pages_of(heap) : 0;
    total_pages += heap->counted_dirty_pages;
  });
  abandoned_dirty_pages.store(total_pages, std::memory_order_relaxed);
}

}  // namespace mapalloc
