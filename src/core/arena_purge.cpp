// Large-block arenas (arena.h), giving memory back: free pages purged down to the working
// set's budget, arenas left empty unmapped after the unmap delay, and freed blocks that leave the
// quarantine (arena_quarantine.h) with their canary checked or their protection lifted.
#include <string.h>

#include "core/arena_internal.h"
#include "core/bitmap.h"
#include "core/purge_deadline.h"
#include "platform/diag.h"
#include "platform/memcheck.h"
#include "platform/options.h"

namespace mapalloc {

using namespace arena_detail;

// --- blocks leaving the quarantine ------------------------------------------------------------

namespace arena_detail {

namespace {

// Returns a freed block's pages to the free ones (lock held).
void release_block(char* block, size_t bytes, uint64_t freed_at_ms) {
  Arena* arena = arena_of(block);
  release_pages(arena, page_of(arena, block), static_cast<uint32_t>(bytes / kPageBytes),
                freed_at_ms);
}

// A block waiting with a canary (MAPALLOC_LARGE_QUARANTINE=1) holds these in its first 64 bytes
// (they depend on a process secret and the block's address, so data the program left there
// never matches by chance). A write after free that reaches them is caught when it leaves.
// No canary byte is zero, so that a block zeroed after free is reported at its byte 0.
constexpr unsigned kCanaryWords = 8;
constexpr uint64_t kCanaryNoZeroByte = 0x0101010101010101ull;
uint64_t canary_word(const char* block, unsigned index) {
  uint64_t mixed = (process_secrets.large_check ^ reinterpret_cast<uintptr_t>(block)) +
                   (index + 1) * 0x9e3779b97f4a7c15ull;
  return (mixed * 0xff51afd7ed558ccdull) | kCanaryNoZeroByte;
}

// The canary is the allocator's write to a freed block: memcheck must not see it as the
// program's (platform/memcheck.h).
void write_canary(char* block) {
  memcheck::open_undefined(block, kCanaryWords * sizeof(uint64_t));
  for (unsigned i = 0; i < kCanaryWords; ++i) {
    uint64_t word = canary_word(block, i);
    memcpy(block + i * sizeof word, &word, sizeof word);
  }
  memcheck::close(block, kCanaryWords * sizeof(uint64_t));
}

void check_canary(const QuarantinedBlock& held) {
  memcheck::open_defined(held.block, kCanaryWords * sizeof(uint64_t));
  for (unsigned i = 0; i < kCanaryWords; ++i) {
    uint64_t word;
    memcpy(&word, held.block + i * sizeof word, sizeof word);
    uint64_t expected = canary_word(held.block, i);
    if (word == expected) continue;
    size_t offset = i * sizeof word + static_cast<size_t>(__builtin_ctzll(word ^ expected) / 8);
    fatal(
        "write after free of %p (large block, %zu bytes): byte %zu changed while it waited in "
        "the quarantine",
        static_cast<void*>(held.block), held.bytes, offset);
  }
  memcheck::close(held.block, kCanaryWords * sizeof(uint64_t));
}

}  // namespace

// Frees the pages of quarantined blocks: made accessible again (outside the lock: a system call
// each), or their canary checked. A block that cannot be made accessible keeps its pages out of
// use.
void release_quarantined(const QuarantinedBlock* blocks, unsigned count) {
  bool accessible[kQuarantineSlots];
  for (unsigned i = 0; i < count; ++i) {
    accessible[i] = true;
    if (blocks[i].inaccessible)
      accessible[i] = os_unguard(blocks[i].block, blocks[i].bytes);
    else if (blocks[i].held)
      check_canary(blocks[i]);
  }
  SpinLockGuard guard(arena_set.lock);
  for (unsigned i = 0; i < count; ++i) {
    if (accessible[i]) release_block(blocks[i].block, blocks[i].bytes, blocks[i].freed_at_ms);
  }
}

namespace {

// Frees the quarantined blocks that have waited `delay_ms` (all with `force`). Returns their
// bytes; lowers `*next_deadline_ms` to when the next one is due.
size_t release_expired(uint64_t now_ms, uint64_t delay_ms, bool force, uint64_t* next_deadline_ms) {
  QuarantinedBlock expired[kQuarantineSlots];
  unsigned count;
  {
    SpinLockGuard guard(arena_set.lock);
    count = arena_quarantine_take_expired(now_ms, delay_ms, force, expired, next_deadline_ms);
  }
  release_quarantined(expired, count);
  size_t bytes = 0;
  for (unsigned i = 0; i < count; ++i) bytes += expired[i].bytes;
  return bytes;
}

}  // namespace

// A freed block the quarantine admitted: given its canary, or made inaccessible (if mprotect
// fails, freed as usual); then the block it pushed out is freed.
void quarantine_freed(char* block, size_t bytes, bool inaccessible, uint64_t now_ms,
                      const QuarantinedBlock& evicted) {
  bool held = true;
  if (inaccessible)
    held = os_guard(block, bytes);
  else
    write_canary(block);
  {
    SpinLockGuard guard(arena_set.lock);
    arena_quarantine_protected(block, held);
    if (!held) release_block(block, bytes, now_ms);
  }
  if (evicted.block != nullptr) release_quarantined(&evicted, 1);
  note_global_purge_deadline(now_ms + options().purge_delay_ms);
}

}  // namespace arena_detail

// --- purging and unmapping --------------------------------------------------------------------

namespace {

// Runs of free pages taken out (neither free nor live) while they are purged outside the lock.
struct Victims {
  static constexpr unsigned kMax = 32;
  unsigned count = 0;
  bool truncated = false;
  Arena* arena[kMax];
  uint32_t first[kMax];
  uint32_t length[kMax];
};

void take_victim(Victims* victims, Arena* arena, uint32_t first, uint32_t length) {
  set_bits(arena->free_bits, first, length, false);
  set_bits(arena->dirty_bits, first, length, false);
  arena->free_pages -= length;
  arena_set.dirty_pages -= length;
  victims->arena[victims->count] = arena;
  victims->first[victims->count] = first;
  victims->length[victims->count++] = length;
}

// Takes up to `wanted` resident free pages, the longest free first (passes over decreasing
// ages), as runs of neighbouring pages (lock held).
void collect_victims(size_t wanted, uint64_t now_ms, Victims* victims) {
  static constexpr uint32_t kAgesMs[] = {1000, 400, 200, 100, 50, 20, 0};
  uint32_t now = clock_ms(now_ms);
  for (uint32_t age_ms : kAgesMs) {
    for (Arena* arena = arena_set.first; arena != nullptr && wanted != 0; arena = arena->next) {
      for_each_run(arena->dirty_bits, arena->first_usable_page, arena->page_count,
                   [&](uint32_t start, uint32_t length) {
                     uint32_t run = 0;  // qualifying pages before `page`
                     for (uint32_t page = start; page <= start + length; ++page) {
                       bool due = page < start + length && run < wanted &&
                                  now - arena->freed_at_ms[page] >= age_ms;
                       if (due) {
                         ++run;
                         continue;
                       }
                       if (run == 0) continue;
                       if (victims->count == Victims::kMax) {
                         victims->truncated = true;
                         return false;
                       }
                       take_victim(victims, arena, page - run, run);
                       wanted -= run;
                       run = 0;
                     }
                     return wanted != 0;
                   });
      if (victims->truncated) return;
    }
    if (wanted == 0) return;
  }
}

}  // namespace

namespace arena_detail {

void note_if_empty(Arena* arena, uint64_t now_ms) {
  if (arena->empty_since_ms == 0 &&
      arena->free_pages == arena->page_count - arena->first_usable_page) {
    arena->empty_since_ms = now_ms;
  }
}

// Purges free pages down to the budget (all of them with `force`). Returns the bytes purged.
size_t purge_over_budget(uint64_t now_ms, bool force) {
  auto method = static_cast<PurgeMethod>(options().purge_method);
  size_t purged = 0;
  for (;;) {
    Victims victims;
    {
      SpinLockGuard guard(arena_set.lock);
      size_t budget = force ? 0 : dirty_budget_pages(now_ms);
      if (arena_set.dirty_pages <= budget) break;
      collect_victims(arena_set.dirty_pages - budget, now_ms, &victims);
      if (victims.count == 0) break;
      arena_set.purges_in_flight.fetch_add(1, std::memory_order_relaxed);
    }
    static_assert(Victims::kMax <= kOsPurgeMaxRuns);
    OsRange ranges[Victims::kMax];
    for (unsigned i = 0; i < victims.count; ++i) {
      size_t bytes = size_t{victims.length[i]} * kPageBytes;
      ranges[i] = {page_address(victims.arena[i], victims.first[i]), bytes};
      purged += bytes;
    }
    os_purge_ranges(ranges, victims.count, method);  // one system call for all of them
    SpinLockGuard guard(arena_set.lock);
    for (unsigned i = 0; i < victims.count; ++i) {
      Arena* arena = victims.arena[i];
      set_bits(arena->free_bits, victims.first[i], victims.length[i], true);
      // (MADV_FREE leaves the old data until the kernel needs the pages: still stale.)
      if (method == PurgeMethod::kDontNeed)
        set_bits(arena->stale_bits, victims.first[i], victims.length[i], false);
      arena->free_pages += victims.length[i];
      note_if_empty(arena, now_ms);
    }
    arena_set.purges_in_flight.fetch_sub(1, std::memory_order_relaxed);
    if (!victims.truncated) break;
  }
  return purged;
}

}  // namespace arena_detail

namespace {

// Unmaps arenas with no block in use for the unmap delay (all of them with `force`; else one
// stays). Returns the bytes unmapped; lowers `*next_deadline_ms` to when the next one is due.
size_t unmap_empty(uint64_t now_ms, bool force, uint64_t* next_deadline_ms) {
  constexpr unsigned kMaxAtOnce = 16;
  Arena* doomed[kMaxAtOnce];
  unsigned count = 0;
  {
    SpinLockGuard guard(arena_set.lock);
    uint64_t delay_ms = options().unmap_delay_ms;
    Arena** link = &arena_set.first;
    while (Arena* arena = *link) {
      // (Pages out for purging count as neither free nor live: such an arena is not empty.)
      bool empty = arena->free_pages == arena->page_count - arena->first_usable_page;
      bool due = force || now_ms >= arena->empty_since_ms + delay_ms;
      if (empty && !due) lower_deadline(next_deadline_ms, arena->empty_since_ms + delay_ms);
      if (!empty || !due || count == kMaxAtOnce || (!force && arena_set.arenas - count == 1)) {
        link = &arena->next;
        continue;
      }
      __atomic_store_n(link, arena->next, __ATOMIC_RELEASE);  // one store: see ArenaSet::first
      arena_set.dirty_pages -= count_bits(arena->dirty_bits, 0, arena->page_count);
      arena_set.reserved_bytes -= arena->bytes;
      doomed[count++] = arena;
    }
    arena_set.arenas -= count;
  }
  size_t unmapped = 0;
  for (unsigned i = 0; i < count; ++i) {
    size_t bytes = doomed[i]->bytes;
    mark_units(doomed[i], kUnitNone);
    os_unmap(doomed[i], bytes);
    unmapped += bytes;
  }
  return unmapped;
}

}  // namespace

size_t arena_release_quarantine() {
  uint64_t unused_deadline_ms = 0;
  return release_expired(0, 0, true, &unused_deadline_ms);
}

size_t arena_purge(uint64_t now_ms, bool force, uint64_t* next_deadline_ms) {
  release_expired(now_ms, options().purge_delay_ms, force, next_deadline_ms);
  size_t released = purge_over_budget(now_ms, force);
  released += unmap_empty(now_ms, force, next_deadline_ms);
  SpinLockGuard guard(arena_set.lock);
  if (arena_set.dirty_pages != 0) lower_deadline(next_deadline_ms, next_budget_change_ms());
  return released;
}

}  // namespace mapalloc
