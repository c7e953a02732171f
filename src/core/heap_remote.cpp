// The remote-free protocol: a block freed by a thread that does not own its page goes on the
// page's thread_free list (an atomic push); the one that finds the page full (kFullFlag) puts
// it on the owner's delayed list instead, so that the owner sees the page again. The owner
// collects both at its slow paths (heap_collect_remote, drain_delayed).
#include "core/heap.h"

#include "core/heap_internal.h"
#include "core/purge_deadline.h"
#include "platform/debug_assert.h"
#include "platform/diag.h"
#include "platform/options.h"

namespace mapalloc {

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
    MAPALLOC_ASSERT(owner != nullptr && page->state != PageState::kFree &&
                        span_contains(page, block) && page_is_block_start(page, block),
                    "a delayed block belongs to a span in use", block);
    if (owner == heap) {
      heap_free_local(heap, page, block);
    } else {
      push_delayed(owner, block);
      note_remote_free(owner);
    }
    block = next;
  }
}

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

namespace {

// The heap's current page of the class, when other threads' frees emptied it, is retired like
// the pages collect_available retires (returns 1 then). Remote frees to a current page are
// otherwise collected only when the heap allocates in that class again, which a thread whose
// blocks another thread freed may never do: it kept a span per class resident. (A page the heap
// emptied itself stays current until heap_purge: the working set of a program in waves.)
unsigned collect_current(Heap* heap, unsigned size_class) {
  Page* current = heap->current[size_class];
  if (current == nullptr) return 0;
  uint32_t countdown_before = current->countdown;
  page_collect_remote(current);
  if (current->countdown == countdown_before) return 0;
  // countdown counts the blocks in heap->free[c] as used: all free when it equals their number.
  unsigned free_listed = 0;
  for (const Block* block = heap->free[size_class];
       block != nullptr && free_listed <= current->countdown; block = block_next(block)) {
    ++free_listed;
  }
  if (free_listed != current->countdown) return 0;
  release_current(heap, size_class);
  return 1;
}

}  // namespace

void heap_free_remote(Page* page, Block* block) {
  Heap* owner = __atomic_load_n(&page->owner, __ATOMIC_ACQUIRE);
  MAPALLOC_ASSERT(
      owner != nullptr && page->state != PageState::kSpanTail && page->state != PageState::kFree,
      "a remote free goes to the head of a span in use", page);
  set_block_key(block, page->free_key);
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

void report_quarantine_write(const Block* block, const Page* page) {
  fatal("write after free of %p (size class, %zu bytes): it changed while it waited in quarantine",
        static_cast<const void*>(block), size_t{page->block_bytes});
}

void heap_check_quarantine(const Heap* heap) {
  for (const Block* block : heap->quarantine) {
    if (block != nullptr) quarantine_check(block, page_entry_of(block));
  }
}

void heap_flush_quarantine(Heap* heap) {
  for (Block*& slot : heap->quarantine) {
    Block* block = slot;
    slot = nullptr;
    if (block == nullptr) continue;
    quarantine_check(block, page_entry_of(block));  // (blocks up to 4 KiB: one-page spans)
    heap_free_any(heap, block);
  }
  for (Block*& slot : heap->protected_quarantine) {
    Block* block = slot;
    slot = nullptr;
    if (block != nullptr) heap_free_protected(heap, block);
  }
}

void heap_free_protected(Heap* heap, Block* block) {
  Page* entry = page_entry_of(block);
  Page* head = entry->state == PageState::kSpanTail ? span_head(entry) : entry;
  os_unguard(block, head->block_bytes);
  heap_free_any(heap, block);
}

bool heap_block_is_free(Heap* owner, Page* page, Block* block) {
  if (owner->current[page->size_class] == page &&
      block_list_contains(owner->free[page->size_class], block)) {
    return true;
  }
  if (block_list_contains(page->local_free, block)) return true;
  uintptr_t remote = page->thread_free.load(std::memory_order_acquire) & kThreadFreeBlockMask;
  if (block_list_contains(reinterpret_cast<Block*>(remote), block)) return true;
  return block_list_contains(owner->delayed_free.load(std::memory_order_acquire), block);
}

unsigned heap_collect_remote(Heap* heap) {
  heap->remote_frees_pending.store(false, std::memory_order_seq_cst);
  drain_delayed(heap);
  unsigned retired = 0;
  for (unsigned c = 0; c < kClassCount; ++c)
    retired += collect_available(heap, c) + collect_current(heap, c);
  return retired;
}

}  // namespace mapalloc
