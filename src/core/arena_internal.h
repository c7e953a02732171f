// Internals shared by the arena's two files: arena.cpp (one arena, the set of arenas, allocation,
// free, resize, fork) and arena_purge.cpp (purging free pages, unmapping empty arenas, and the
// blocks that leave the quarantine). Nothing outside src/core/arena*.cpp includes it.
#pragma once

#include <atomic>

#include "core/arena.h"
#include "core/arena_quarantine.h"
#include "platform/spin_lock.h"

namespace mapalloc::arena_detail {

// A page's record in `heads`: for the first page of a live block, its page count and kLive; for
// the first page of a freed block (until its pages serve another block's start), kFreed, so
// that a second free is reported as one. Every other page holds whatever it held last: only a
// block's first page is ever consulted for it.
constexpr uint32_t kHeadLive = 1;
constexpr uint32_t kHeadFreed = 2;
constexpr uint32_t kHeadStateMask = 3;
constexpr uint32_t head_of(uint32_t pages, uint32_t state) { return pages << 2 | state; }
constexpr uint32_t head_pages(uint32_t head) { return head >> 2; }

// The arena's metadata, at its start (its first pages; they never serve blocks). Invariants,
// under arena_set.lock: a usable page is either in exactly one live block or free; dirty pages
// are free pages not purged since they were last used; stale pages are free pages that may not
// read as zero: the dirty ones, and those purged with MADV_FREE (never-used pages, and those
// purged with MADV_DONTNEED, read as zero); pages at or above `committed_pages` are free, clean
// and inaccessible, and so are those between the metadata and `first_usable_page` (a gap).
struct Arena {
  Arena* next;  // every arena, newest first
  size_t bytes;
  uint32_t page_count;
  uint32_t first_usable_page;
  uint32_t committed_pages;
  uint32_t free_pages;
  uint64_t empty_since_ms;  // since when no block is live (0 while any is)
  uint64_t* free_bits;      // page_count bits: free
  uint64_t* dirty_bits;     // page_count bits: free and resident
  uint64_t* stale_bits;     // page_count bits: free and perhaps not zero
  uint32_t* heads;          // page_count records (see head_of)
  uint32_t* freed_at_ms;    // page_count: when a free page was freed (truncated clock)
};

// The working set of large blocks: the most live pages seen in the current and the previous
// window bucket (each one purge delay long), and when a block was last allocated.
struct Demand {
  uint64_t bucket_start_ms = 0;
  size_t previous_peak_pages = 0;
  size_t current_peak_pages = 0;
  uint64_t last_alloc_ms = 0;
};

struct ArenaSet {
  SpinLock lock;
  Arena* first = nullptr;  // published by one store (a forked child sees a consistent list)
  size_t next_bytes = kArenaFirstBytes;
  size_t arenas = 0;
  size_t reserved_bytes = 0;
  size_t live_blocks = 0;
  size_t live_pages = 0;
  size_t dirty_pages = 0;
  Demand demand;
  // Purges running outside the lock; their pages are neither free nor live meanwhile.
  std::atomic<unsigned> purges_in_flight{0};
};
extern ArenaSet arena_set;

// A page's address; the arena of a pointer the segment map marks as an arena's (the entry
// says the arena's size, and an arena is aligned to its size); a pointer's page.
inline char* page_address(const Arena* arena, uint32_t page) {
  return reinterpret_cast<char*>(const_cast<Arena*>(arena)) + size_t{page} * kPageBytes;
}
inline Arena* arena_of(const void* pointer) {
  uint8_t entry = unit_entry(pointer);
  size_t bytes = kArenaMinBytes << (entry - kUnitArena);
  return reinterpret_cast<Arena*>(reinterpret_cast<uintptr_t>(pointer) & ~(bytes - 1));
}
inline uint32_t page_of(const Arena* arena, const void* pointer) {
  return static_cast<uint32_t>(
      (reinterpret_cast<uintptr_t>(pointer) - reinterpret_cast<uintptr_t>(arena)) / kPageBytes);
}
// Marks every 4 MiB unit of the arena in the segment map.
inline void mark_units(const Arena* arena, uint8_t entry) {
  for (size_t offset = 0; offset < arena->bytes; offset += kSegmentBytes)
    set_unit_entry(reinterpret_cast<const char*>(arena) + offset, entry);
}
// The page records' clock (freed_at_ms): milliseconds, truncated to 32 bits.
inline uint32_t clock_ms(uint64_t now_ms) { return static_cast<uint32_t>(now_ms); }
// How many free pages may stay resident now, and when that budget changes next (lock held).
size_t dirty_budget_pages(uint64_t now_ms);
uint64_t next_budget_change_ms();
// Returns a run of pages of a freed block to the free ones, dirty (lock held).
void release_pages(Arena* arena, uint32_t first, uint32_t pages, uint64_t now_ms);

// (arena_purge.cpp) Starts an arena's empty time once it holds no live page (lock held).
void note_if_empty(Arena* arena, uint64_t now_ms);
// Purges free pages down to the budget (all of them with `force`); the bytes purged.
size_t purge_over_budget(uint64_t now_ms, bool force);
// A freed block the quarantine admitted (see arena_free), and blocks that leave it early (fork).
void quarantine_freed(char* block, size_t bytes, bool inaccessible, uint64_t now_ms,
                      const QuarantinedBlock& evicted);
void release_quarantined(const QuarantinedBlock* blocks, unsigned count);

}  // namespace mapalloc::arena_detail
