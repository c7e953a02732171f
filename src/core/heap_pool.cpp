// Every heap (heaps are immortal: made once, never unmapped), and the pools of heaps whose
// threads exited: a new thread adopts one, a live heap short of pages reclaims one's pages, and
// the process-wide purge (purge.cpp) gives back their free pages meanwhile.
#include "core/heap.h"

#include <new>

#include "core/heap_internal.h"
#include "core/purge_deadline.h"
#include "platform/debug_assert.h"

namespace mapalloc {

namespace {

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

void uncount_dirty(Heap* heap) {
  MAPALLOC_ASSERT(
      abandoned_dirty_pages.load(std::memory_order_relaxed) >= heap->counted_dirty_pages,
      "the abandoned heaps' allowance counts each abandoned heap's pages", heap);
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
  MAPALLOC_ASSERT(heap->abandoned.load(std::memory_order_relaxed),
                  "a heap in the pool is abandoned", heap);
  heap->abandoned.store(false, std::memory_order_seq_cst);
  while (heap->purge_claimed.load(std::memory_order_seq_cst)) os_yield();
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
  if constexpr (kSecure) heap->quarantine_random = os_random_seed();  // (secure.cpp)
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

// Moves everything `from` (an abandoned heap taken from the pool) holds into `into`: its
// segments, page ownership, map entries and page queues. Pages change owner only here, while
// their old owner belongs to no thread; a remote free racing with the change may still deliver
// a block to `from`'s delayed list, and whoever takes `from` next forwards it (drain_delayed).
void reclaim(Heap* into, Heap* from) {
  MAPALLOC_ASSERT(from->counted_dirty_pages == 0,
                  "a heap taken from the pool no longer counts in the allowance", from);
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

}  // namespace

// Sets an abandoned heap's share of the allowance to what it holds now.
void recount_dirty(Heap* heap) {
  size_t pages = dirty_pages_of(heap);
  MAPALLOC_ASSERT(
      abandoned_dirty_pages.load(std::memory_order_relaxed) >= heap->counted_dirty_pages,
      "the abandoned heaps' allowance counts each abandoned heap's pages", heap);
  abandoned_dirty_pages.fetch_add(pages - heap->counted_dirty_pages, std::memory_order_relaxed);
  heap->counted_dirty_pages = pages;
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

Heap* heap_list_first() { return all_heaps.load(std::memory_order_acquire); }

Heap* heap_acquire() {
  Heap* heap = pool_pop();
  if (heap == nullptr) heap = heap_create();
  if (heap != nullptr) heap->segments.keep_empty = false;
  return heap;
}

void heap_abandon(Heap* heap) {
  MAPALLOC_ASSERT(
      !heap->abandoned.load(std::memory_order_relaxed) && heap->counted_dirty_pages == 0,
      "a heap abandoned was owned and counted nothing in the allowance", heap);
  if constexpr (kDebug) heap_validate(heap);
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
    // Secure build: the child's quarantine slots are not the parent's sequence.
    if constexpr (kSecure) heap->quarantine_random = os_random_seed();
    heap->purge_claimed.store(false, std::memory_order_relaxed);
    bool abandoned = heap->abandoned.load(std::memory_order_relaxed);
    heap->counted_dirty_pages = abandoned ? dirty_pages_of(heap) : 0;
    total_pages += heap->counted_dirty_pages;
  });
  abandoned_dirty_pages.store(total_pages, std::memory_order_relaxed);
}

}  // namespace mapalloc
