// Thread-local heaps. Each thread allocates from its own heap: per size class a free list of
// blocks of the class's current page, a queue of pages with free blocks, and the segments those
// pages live in. The common malloc and free touch only the heap and the page record: no lock,
// no atomic read-modify-write.
//
// Ownership: a page belongs to one heap for its whole life in a span, and a heap is never freed.
// When a thread exits, its heap (pages, segments and all) is abandoned to a pool, and the next
// new thread adopts it whole; meanwhile frees into it from other threads keep working, because
// remote frees only need the page record and the (immortal) owner heap. That is how thread exit
// hands memory back without any page changing owner under a concurrent free.
#pragma once

#include <atomic>

#include "core/page.h"
#include "core/page_queue.h"
#include "core/purge_deadline.h"

namespace mapalloc {

struct Heap {
  // Fast path: free[c] holds free blocks of current[c] only (they count as used by that page).
  Block* free[kClassCount] = {};
  SmallClassTable small_classes = kSmallClassTable;
  // This heap's segments' entry in the segment map. kNoHeapTag matches no segment: the empty
  // heap's frees, and those of heaps beyond the tag supply, all take the slow path.
  uint8_t segment_tag = kNoHeapTag;
  Page* current[kClassCount] = {};
  PageQueue available[kClassCount] = {};
  // Blocks freed by other threads into full pages (see kFullFlag); drained by the owner.
  std::atomic<Block*> delayed_free{nullptr};
  SegmentList segments;
  Heap* pool_next = nullptr;  // in the abandoned pool
  Heap* all_next = nullptr;   // in the list of every heap ever made
  uint64_t slow_calls = 0;    // refills and slow frees
  uint64_t remote_frees = 0;  // frees this heap's thread made into other heaps' pages
  // When free pages of this heap's segments fall due for purging (0: none are waiting).
  uint64_t purge_deadline_ms = 0;
  // The working set of spans (owner only): pages of the spans in use, the most in use in each
  // of the last kWorkingSetBuckets buckets of one purge delay (a ring; bucket_index is the
  // current one), and when a span was last taken. Free pages the recent peak needed stay
  // resident past the purge delay while spans are being taken (see heap_purge).
  static constexpr unsigned kWorkingSetBuckets = 8;
  size_t used_pages = 0;
  size_t peak_used_pages[kWorkingSetBuckets] = {};
  unsigned bucket_index = 0;
  uint64_t bucket_start_ms = 0;
  uint64_t last_span_ms = 0;
  // Classes that refilled since the last heap_purge: their empty current pages are in use (a
  // class in light use empties its page between each malloc and free) and stay current. Were
  // they retired, the next malloc would take a span again after every purge, which counts as
  // growth (last_span_ms), and the heap would keep its old peak resident for ever.
  uint64_t classes_refilled[(kClassCount + 63) / 64] = {};
  // Set by another thread's malloc_trim: purge everything at the next slow path.
  std::atomic<bool> purge_requested{false};
  uint64_t next_remote_collect_ms = 0;  // remote frees are collected at most once per delay
  uint64_t next_purge_check_ticks = 0;  // the clock is read at most once per kTicksPerCheck
  std::atomic<bool> abandoned{false};   // in the pool (read by remote frees)
  // Held by a thread purging this heap while it is abandoned (see heap_try_claim).
  std::atomic<bool> purge_claimed{false};
  // While abandoned: its free resident pages, as counted in the allowance all abandoned heaps
  // share (heap.cpp, kAbandonedDirtyBytes).
  size_t counted_dirty_pages = 0;
  // Secure build: blocks this thread freed, held back from reuse for a while (secure.cpp).
  static constexpr unsigned kQuarantineSlots = kSecure ? 256 : 1;
  Block* quarantine[kQuarantineSlots] = {};
  uint64_t quarantine_random = 0;  // the slots' random sequence (seeded by heap_create)
  // Secure build: freed blocks of kSecureProtectMinBytes and more, made inaccessible, wait here
  // (first in, first out) until kProtectedSlots more have come.
  static constexpr unsigned kProtectedSlots = kSecure ? 4 : 1;
  Block* protected_quarantine[kProtectedSlots] = {};
  unsigned protected_next = 0;
  // Heap profiler: per size class the blocks left to hand out until the next sample (the byte
  // countdown drawn for it, in whole blocks: a refill charges its list with a compare and a
  // subtraction), and (last) the bytes left for large blocks; 0: not drawn yet. And the random
  // sequence they are drawn from (prof_hooks.cpp).
  int64_t prof_countdown[kClassCount + 1] = {};
  uint64_t prof_random = 0;
  // Set by other threads' frees into this heap's pages (written only when clear, and on a line
  // of its own, so that remote frees do not keep taking the owner's cache lines away).
  alignas(64) std::atomic<bool> remote_frees_pending{false};
};

// The calling thread's heap. Starts as `empty_heap`, whose lists are all empty, so a thread's
// first malloc falls into the slow path and sets the thread up there: the fast path needs no
// "initialised?" test. initial-exec: no __tls_get_addr (which may itself allocate).
extern constinit Heap empty_heap;
extern __thread Heap* tls_heap __attribute__((tls_model("initial-exec")));

// Slow paths of the fast paths in alloc.h.
// heap_refill: a list of free blocks of `size_class` from one page (nullptr: out of memory).
// heap_refill_counted (the heap profiler's refills) also says how many blocks the list holds
// (`*handed`): known from the page's counters except for blocks other threads freed, which are
// counted by walking.
MAPALLOC_NOINLINE Block* heap_refill(Heap* heap, unsigned size_class);
MAPALLOC_NOINLINE Block* heap_refill_counted(Heap* heap, unsigned size_class, unsigned* handed);
MAPALLOC_NOINLINE void heap_page_countdown_zero(Heap* heap, Page* page);

// Owner: frees `block` of `page` (the page's head record) outside the fast path.
void heap_free_local(Heap* heap, Page* page, Block* block);
// Any thread but the owner: frees `block` into its owner's page.
void heap_free_remote(Page* page, Block* block);

// Whether a block whose word 1 equals its owner's free key really is free (local owner only;
// a remote thread cannot walk the owner's lists safely and trusts the 64-bit key).
bool heap_block_is_free(Heap* owner, Page* page, Block* block);

// Thread life cycle. heap_acquire gives the heap for a new thread (adopting an abandoned one
// when there is one); nullptr when no memory is left for a new heap.
Heap* heap_acquire();
void heap_abandon(Heap* heap);

// Returns every page with no block in use to its segment, and free segments to the cache.
// `heap` must be owned by the caller (its thread's heap, or one taken from the pool).
void heap_collect(Heap* heap);

// Purge work is waiting (this heap's, the process's, or requested by malloc_trim): refills
// then hand out short batches so that even light allocation soon reaches the slow path.
inline bool heap_purge_pending(Heap* heap) {
  return heap->purge_deadline_ms != 0 ||
         global_purge_deadline_ms.load(std::memory_order_relaxed) != 0 ||
         heap->purge_requested.load(std::memory_order_relaxed) ||
         heap->remote_frees_pending.load(std::memory_order_relaxed);
}

// Frees a block of any heap from the calling thread, whose heap is `heap` (local or remote).
void heap_free_any(Heap* heap, Block* block);

// Secure build: a block entering the quarantine (of blocks up to 4 KiB) is marked with its
// page's free key in both of its first two words, and checked when it leaves, whether evicted
// by a later free or flushed: a write after free into its first 16 bytes is reported then.
MAPALLOC_INLINE void quarantine_mark(Block* block, const Page* page) {
  block->next = reinterpret_cast<Block*>(page->free_key);
  block->free_key = page->free_key;
}
[[noreturn]] MAPALLOC_COLD void report_quarantine_write(const Block* block, const Page* page);
MAPALLOC_INLINE void quarantine_check(const Block* block, const Page* page) {
  if (MAPALLOC_UNLIKELY(reinterpret_cast<uintptr_t>(block->next) != page->free_key ||
                        block->free_key != page->free_key))
    report_quarantine_write(block, page);
}

// Secure build: really frees every block waiting in the heap's quarantine.
void heap_flush_quarantine(Heap* heap);
// Secure build: checks every block waiting in the heap's quarantine (quarantine_check), leaving
// it there. Owner only.
void heap_check_quarantine(const Heap* heap);
// Secure build: frees a block of the protected quarantine (makes it accessible first).
void heap_free_protected(Heap* heap, Block* block);

// Takes in the blocks other threads freed into this heap's pages (delayed list and the pages'
// thread_free lists) and retires pages left empty. Owner only. Returns the pages retired.
unsigned heap_collect_remote(Heap* heap);

// Purges free pages, the longest-free first, until the heap keeps no more than its budget of
// free resident pages (1 MiB, or a quarter of its pages in use if more). Owner only. Returns
// the bytes purged.
size_t heap_purge_over_budget(Heap* heap, uint64_t now_ms);

// Retires this heap's empty pages (collecting remote frees first) and purges the free pages of
// its segments that have been free for `delay_ms` (all of them for 0), except, while the heap
// keeps taking spans, as many as its recent peak needed beyond what it uses now (the longest
// free go first). Owner only. Returns the bytes purged and resets the heap's purge deadline.
size_t heap_purge(Heap* heap, uint64_t now_ms, uint64_t delay_ms);

// Calls `visit` for every heap ever created (live, abandoned, or orphaned by fork).
template <typename Visit>
void heap_for_each(Visit visit);
Heap* heap_list_first();

template <typename Visit>
void heap_for_each(Visit visit) {
  for (Heap* heap = heap_list_first(); heap != nullptr; heap = heap->all_next) visit(heap);
}

// Abandoned heaps are purged in place, without leaving the pool (a thread that finds the pool
// empty would create a new heap instead). heap_try_claim gives the caller the owner's rights on
// an abandoned heap until heap_unclaim; a thread taking the heap from the pool waits for that.
bool heap_try_claim(Heap* heap);
void heap_unclaim(Heap* heap);

template <typename Work>
void heap_for_each_abandoned(Work work) {
  heap_for_each([&work](Heap* heap) {
    if (!heap->abandoned.load(std::memory_order_relaxed) || !heap_try_claim(heap)) return;
    work(heap);
    heap_unclaim(heap);
  });
}

// Debug build (heap_validate.cpp): walks every page of the heap, its free lists and queues,
// and aborts with an assertion line at the first broken invariant. Owner only. Returns the
// pages and free blocks it checked.
size_t heap_validate(Heap* heap);
// At slow paths: heap_validate, paced by the size of the last walk (heap_validate.cpp).
void heap_validate_sometimes(Heap* heap);

// In a forked child: no thread holds a claim any more.
void heap_after_fork_child();

}  // namespace mapalloc
