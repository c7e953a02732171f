// Large-block arenas (arena.h): one arena's layout, the process-wide set, allocation, free,
// resize and the forked child's rebuild. Purging and the quarantine's releases: arena_purge.cpp.
#include "core/arena.h"

#include <string.h>

#include "core/arena_internal.h"
#include "core/bitmap.h"
#include "core/purge_deadline.h"
#include "platform/diag.h"
#include "platform/options.h"

namespace mapalloc {

using namespace arena_detail;

namespace {

// --- one arena --------------------------------------------------------------------------------

constexpr size_t metadata_bytes(size_t page_count) {
  return align_up(sizeof(Arena), 64) + 3 * words_for(page_count) * sizeof(uint64_t) +
         2 * page_count * sizeof(uint32_t);
}
static_assert(metadata_bytes(kArenaMaxBytes / kPageBytes) <= 4 * kPageBytes);

// Commits grow in steps of this much (fewer mprotect calls, each extending one mapping).
constexpr size_t kCommitStepBytes = 4 * kMiB;

// The metadata's pages, committed when the arena is reserved.
constexpr size_t metadata_commit_bytes(size_t arena_bytes) {
  return align_up(metadata_bytes(arena_bytes / kPageBytes), kPageBytes);
}

// Blocks start after an inaccessible gap that follows the metadata: an underflow from the
// arena's first block faults (and is reported: arena_gap_end) instead of overwriting the
// page records. The gap is address space only, never committed: at least one page, and up to
// the second huge page in arenas of kArenaFirstBytes and more (the first huge page then holds
// only the metadata, which keeps it in normal pages where transparent huge pages are on).
constexpr size_t first_usable_page_of(size_t arena_bytes) {
  if (arena_bytes >= kArenaFirstBytes) return kHugePageBytes / kPageBytes;
  return metadata_commit_bytes(arena_bytes) / kPageBytes + 1;
}
static_assert(metadata_commit_bytes(kArenaMaxBytes) < kHugePageBytes);

Arena* arena_at(void* base, size_t bytes) {
  auto* arena = static_cast<Arena*>(base);
  size_t page_count = bytes / kPageBytes;
  char* cursor = static_cast<char*>(base) + align_up(sizeof(Arena), 64);
  arena->bytes = bytes;
  arena->page_count = static_cast<uint32_t>(page_count);
  arena->first_usable_page = static_cast<uint32_t>(first_usable_page_of(bytes));
  arena->free_bits = reinterpret_cast<uint64_t*>(cursor);
  cursor += words_for(page_count) * sizeof(uint64_t);
  arena->dirty_bits = reinterpret_cast<uint64_t*>(cursor);
  cursor += words_for(page_count) * sizeof(uint64_t);
  arena->stale_bits = reinterpret_cast<uint64_t*>(cursor);
  cursor += words_for(page_count) * sizeof(uint64_t);
  arena->heads = reinterpret_cast<uint32_t*>(cursor);
  cursor += page_count * sizeof(uint32_t);
  arena->freed_at_ms = reinterpret_cast<uint32_t*>(cursor);
  return arena;
}

uint8_t map_entry_of(size_t bytes) {
  return static_cast<uint8_t>(kUnitArena + __builtin_ctzll(bytes / kArenaMinBytes));
}

// --- the set of arenas ------------------------------------------------------------------------

}  // namespace

ArenaSet arena_detail::arena_set;

namespace {

uint64_t bucket_ms() { return uint64_t{options().purge_delay_ms} + 1; }

void note_live(uint64_t now_ms) {
  Demand& demand = arena_set.demand;
  uint64_t length = bucket_ms();
  if (now_ms >= demand.bucket_start_ms + length) {
    // A whole bucket without activity forgets the previous peak as well.
    bool skipped = now_ms >= demand.bucket_start_ms + 2 * length;
    demand.previous_peak_pages = skipped ? arena_set.live_pages : demand.current_peak_pages;
    demand.current_peak_pages = arena_set.live_pages;
    demand.bucket_start_ms = now_ms;
  }
  if (arena_set.live_pages > demand.current_peak_pages)
    demand.current_peak_pages = arena_set.live_pages;
}

// Free pages kept resident beyond this many are purged. The budget follows the working set:
// the pages the program held at its recent peak (the last two buckets) but not now, which it
// will likely need again, plus as many as it holds now (at least kFitReserveFloorBytes), so that
// requests of varying sizes find resident runs that fit. The pool of free resident pages grows
// only when no such run fits, so it stays well below the budget unless the sizes keep changing
// (README, Memory return, has figures). Once no large block has been allocated for two buckets
// the program has stopped needing them: the budget is 0, as it always is with a purge delay
// of 0.
constexpr size_t kFitReserveFloorBytes = 32 * kMiB;

}  // namespace

size_t arena_detail::dirty_budget_pages(uint64_t now_ms) {
  if (options().purge_delay_ms == 0) return 0;
  note_live(now_ms);
  const Demand& demand = arena_set.demand;
  if (now_ms >= demand.last_alloc_ms + 2 * bucket_ms()) return 0;
  size_t peak = demand.previous_peak_pages > demand.current_peak_pages ? demand.previous_peak_pages
                                                                       : demand.current_peak_pages;
  size_t live = arena_set.live_pages;
  constexpr size_t kFloorPages = kFitReserveFloorBytes / kPageBytes;
  return (peak > live ? peak - live : 0) + (live > kFloorPages ? live : kFloorPages);
}

// When the budget can next fall (a bucket ends, or the idle time is reached).
uint64_t arena_detail::next_budget_change_ms() {
  const Demand& demand = arena_set.demand;
  uint64_t bucket_end = demand.bucket_start_ms + bucket_ms();
  uint64_t idle_at = demand.last_alloc_ms + 2 * bucket_ms();
  return bucket_end < idle_at ? bucket_end : idle_at;
}

namespace {

// --- placement --------------------------------------------------------------------------------

struct Placement {
  Arena* arena = nullptr;
  uint32_t first = 0;
  uint32_t clean_pages = ~0u;  // pages of the block not resident: each costs page faults
  uint32_t run_pages = ~0u;    // the free run it is cut from
};

// (align_pages is 1 for all but aligned requests: no division then.)
uint32_t align_page(uint32_t page, uint32_t align_pages) {
  if (align_pages == 1) return page;
  return (page + align_pages - 1) / align_pages * align_pages;
}

// Best fit: the block goes where it needs the fewest clean (non-resident) pages, then into the
// smallest free run, so that freed runs are reused whole and big runs stay big. Within a run it
// sits at the run's start or end, whichever covers more resident pages.
void consider_arena(Arena* arena, uint32_t pages, uint32_t align_pages, Placement* best) {
  for_each_run(
      arena->free_bits, arena->first_usable_page, arena->page_count,
      [&](uint32_t start, uint32_t length) {
        uint32_t at_start = align_page(start, align_pages);
        if (at_start + pages > start + length) return true;
        if (best->clean_pages == 0 && length >= best->run_pages) return true;  // cannot be better
        uint32_t at_end = start + length - pages;
        if (align_pages != 1) at_end = at_end / align_pages * align_pages;
        uint32_t dirty_start = count_bits(arena->dirty_bits, at_start, pages);
        uint32_t dirty_end = at_end == at_start || dirty_start == pages
                                 ? dirty_start
                                 : count_bits(arena->dirty_bits, at_end, pages);
        uint32_t first = dirty_end > dirty_start ? at_end : at_start;
        uint32_t clean = pages - (dirty_end > dirty_start ? dirty_end : dirty_start);
        if (clean < best->clean_pages || (clean == best->clean_pages && length < best->run_pages)) {
          *best = {arena, first, clean, length};
        }
        return !(clean == 0 && length == pages);  // an exact resident fit: done
      });
}

// Commits the arena up to `end_page` (exclusive); false if the kernel refuses.
bool commit_to(Arena* arena, uint32_t end_page) {
  if (end_page <= arena->committed_pages) return true;
  size_t end = align_up(size_t{end_page} * kPageBytes, kCommitStepBytes);
  if (end > arena->bytes) end = arena->bytes;
  char* from = page_address(arena, arena->committed_pages);
  if (!os_commit(from, reinterpret_cast<char*>(arena) + end - from)) return false;
  arena->committed_pages = static_cast<uint32_t>(end / kPageBytes);
  return true;
}

// The runs of a block about to be handed out that may not read as zero, which calloc zeroes.
struct StaleRuns {
  static constexpr unsigned kMax = 16;
  unsigned count = 0;
  bool overflow = false;
  uint32_t first[kMax];
  uint32_t length[kMax];
};

// Sets (or clears) the free, dirty and stale bits of [first, first + pages) together. Returns how
// many of the pages were dirty before.
uint32_t set_free_bits(Arena* arena, uint32_t first, uint32_t pages, bool free) {
  uint32_t was_dirty = 0;
  for_each_word(first, pages, [&](uint32_t word, uint64_t mask, uint32_t length) {
    was_dirty += count_masked(arena->dirty_bits[word], mask, length);
    uint64_t set = free ? mask : 0;
    arena->free_bits[word] = (arena->free_bits[word] & ~mask) | set;
    arena->dirty_bits[word] = (arena->dirty_bits[word] & ~mask) | set;
    arena->stale_bits[word] = (arena->stale_bits[word] & ~mask) | set;
  });
  return was_dirty;
}

// Takes [first, first + pages) out of the free pages for a live block (lock held).
void claim(Arena* arena, uint32_t first, uint32_t pages, StaleRuns* stale_runs) {
  if (stale_runs != nullptr) {
    for_each_run(arena->stale_bits, first, first + pages, [&](uint32_t start, uint32_t length) {
      if (stale_runs->count == StaleRuns::kMax) {
        stale_runs->overflow = true;
        return false;
      }
      stale_runs->first[stale_runs->count] = start;
      stale_runs->length[stale_runs->count++] = length;
      return true;
    });
  }
  arena_set.dirty_pages -= set_free_bits(arena, first, pages, false);
  arena->free_pages -= pages;
  arena->empty_since_ms = 0;
}

}  // namespace

// Returns [first, first + pages) to the free pages, resident (lock held).
void arena_detail::release_pages(Arena* arena, uint32_t first, uint32_t pages, uint64_t now_ms) {
  set_free_bits(arena, first, pages, true);
  for (uint32_t page = first; page < first + pages; ++page)
    arena->freed_at_ms[page] = clock_ms(now_ms);
  arena->free_pages += pages;
  arena_set.dirty_pages += pages;
  if (arena->free_pages == arena->page_count - arena->first_usable_page)
    arena->empty_since_ms = now_ms;
}

namespace {

// --- new arenas -------------------------------------------------------------------------------

size_t pages_for(size_t bytes) { return (bytes + kPageBytes - 1) / kPageBytes; }

size_t power_of_two_at_least(size_t value) {
  return value <= 1 ? 1 : size_t{1} << (64 - __builtin_clzll(value - 1));
}

// Reserves a new arena for a block of `pages` aligned to `align_pages`: the next size in the
// doubling sequence, or enough for four such blocks; smaller ones (down to the least that holds
// the block) when address space is short. Outside the lock: the reservation is a system call.
Arena* reserve_arena(size_t pages, size_t align_pages, size_t wanted_bytes) {
  // (with room for the metadata: a huge page where arenas have them)
  size_t block_bytes = (pages + align_pages) * kPageBytes + kHugePageBytes;
  size_t least = power_of_two_at_least(block_bytes);
  if (least < kArenaMinBytes) least = kArenaMinBytes;
  size_t bytes = power_of_two_at_least(4 * pages * kPageBytes);
  if (bytes < wanted_bytes) bytes = wanted_bytes;
  if (bytes > kArenaMaxBytes) bytes = kArenaMaxBytes;
  if (bytes < least) bytes = least;
  for (; bytes >= least && bytes <= kArenaMaxBytes; bytes /= 2) {
    void* base = os_reserve_aligned(bytes, bytes);
    if (base == nullptr) continue;
    if (!os_commit(base, metadata_commit_bytes(bytes))) {
      os_unmap(base, bytes);
      continue;
    }
    Arena* arena = arena_at(base, bytes);
    if (options().transparent_huge_pages != 0 && bytes >= kArenaFirstBytes) {
      // Transparent huge pages: a 2 MiB page faulted in at once (on the benchmark machine, a
      // VM, a 4 KiB fault costs 12-18 us) and one TLB entry. (Arenas smaller than
      // kArenaFirstBytes, made when address space is short, keep normal pages.)
      os_advise_huge_pages(static_cast<char*>(base) + kHugePageBytes, bytes - kHugePageBytes);
    }
    arena->committed_pages = arena->first_usable_page;  // (the gap before it never is)
    arena->free_pages = arena->page_count - arena->first_usable_page;
    set_bits(arena->free_bits, arena->first_usable_page, arena->free_pages, true);
    return arena;
  }
  return nullptr;
}

// Links a new arena in (lock held).
void publish_arena(Arena* arena, uint64_t now_ms) {
  arena->empty_since_ms = now_ms;  // until its first block (which may go to another arena)
  arena->next = arena_set.first;
  mark_units(arena, map_entry_of(arena->bytes));
  __atomic_store_n(&arena_set.first, arena, __ATOMIC_RELEASE);
  arena_set.arenas++;
  arena_set.reserved_bytes += arena->bytes;
  if (arena->bytes >= arena_set.next_bytes && arena_set.next_bytes < kArenaMaxBytes)
    arena_set.next_bytes = arena->bytes * 2;
}

// --- lookup -----------------------------------------------------------------------------------

bool is_page_start(const void* pointer) {
  return (reinterpret_cast<uintptr_t>(pointer) & (kPageBytes - 1)) == 0;
}

uint32_t load_head(const Arena* arena, uint32_t page) {
  return __atomic_load_n(&arena->heads[page], __ATOMIC_RELAXED);
}

void store_head(Arena* arena, uint32_t page, uint32_t head) {
  __atomic_store_n(&arena->heads[page], head, __ATOMIC_RELAXED);
}

}  // namespace

// --- allocation -------------------------------------------------------------------------------

namespace {

// Takes the best place for a block over all arenas (lock held); nullptr if none has room, or if
// the place could not be committed.
char* take_best(size_t pages, uint32_t align_pages, uint64_t now_ms, StaleRuns* stale_runs) {
  Placement best;
  for (Arena* arena = arena_set.first; arena != nullptr; arena = arena->next) {
    if (arena->free_pages < pages) continue;
    consider_arena(arena, static_cast<uint32_t>(pages), align_pages, &best);
    if (best.clean_pages == 0 && best.run_pages == pages) break;
  }
  auto count = static_cast<uint32_t>(pages);
  if (best.arena == nullptr || !commit_to(best.arena, best.first + count)) return nullptr;
  claim(best.arena, best.first, count, stale_runs);
  store_head(best.arena, best.first, head_of(count, kHeadLive));
  arena_set.live_pages += pages;
  arena_set.live_blocks++;
  arena_set.demand.last_alloc_ms = now_ms;
  note_live(now_ms);
  if (stale_runs != nullptr) {
    for (unsigned i = 0; i < stale_runs->count; ++i) stale_runs->first[i] -= best.first;
  }
  return page_address(best.arena, best.first);
}

}  // namespace

void* arena_alloc(size_t size, size_t alignment, bool zero) {
  size_t pages = pages_for(size == 0 ? 1 : size);
  uint32_t align_pages =
      alignment <= kPageBytes ? 1u : static_cast<uint32_t>(alignment / kPageBytes);
  uint64_t now_ms = os_now_ms();
  StaleRuns stale_runs;
  StaleRuns* stale_wanted = zero ? &stale_runs : nullptr;
  char* block;
  size_t next_bytes;
  {
    SpinLockGuard guard(arena_set.lock);
    block = take_best(pages, align_pages, now_ms, stale_wanted);
    next_bytes = arena_set.next_bytes;
  }
  if (block == nullptr) {
    Arena* fresh = reserve_arena(pages, align_pages, next_bytes);
    if (fresh == nullptr) return nullptr;
    SpinLockGuard guard(arena_set.lock);
    publish_arena(fresh, now_ms);
    block = take_best(pages, align_pages, now_ms, stale_wanted);
    if (block == nullptr) return nullptr;
  }
  if (zero) {
    if (stale_runs.overflow) {
      stale_runs.count = 1;
      stale_runs.first[0] = 0;
      stale_runs.length[0] = static_cast<uint32_t>(pages);
    }
    for (unsigned i = 0; i < stale_runs.count; ++i) {
      memset(block + size_t{stale_runs.first[i]} * kPageBytes, 0,
             size_t{stale_runs.length[i]} * kPageBytes);
    }
  }
  return block;
}

// --- lookup, free, resize ---------------------------------------------------------------------

const char* arena_gap_end(const void* address) {
  const Arena* arena = arena_of(address);
  size_t offset =
      static_cast<size_t>(static_cast<const char*>(address) - reinterpret_cast<const char*>(arena));
  if (offset < metadata_commit_bytes(arena->bytes) ||
      offset >= size_t{arena->first_usable_page} * kPageBytes) {
    return nullptr;
  }
  return page_address(arena, arena->first_usable_page);
}

ArenaBlock arena_locate(const void* pointer) {
  const Arena* arena = arena_of(pointer);
  uint32_t page = page_of(arena, pointer);
  if (!is_page_start(pointer) || page < arena->first_usable_page) {
    return {ArenaBlockState::kNotBlockStart, 0};
  }
  uint32_t head = load_head(arena, page);
  size_t bytes = size_t{head_pages(head)} * kPageBytes;
  switch (head & kHeadStateMask) {
    case kHeadLive:
      return {ArenaBlockState::kLive, bytes};
    case kHeadFreed:
      return {ArenaBlockState::kFreed, bytes};
    default:
      return {ArenaBlockState::kNotBlockStart, 0};
  }
}

void arena_free(void* pointer) {
  Arena* arena = arena_of(pointer);
  uint32_t page = page_of(arena, pointer);
  uint64_t now_ms = os_now_ms();
  arena_set.lock.lock();
  uint32_t head = load_head(arena, page);
  if ((head & kHeadStateMask) != kHeadLive) {
    arena_set.lock.unlock();
    fatal("double free of %p (large block, %zu bytes)", pointer,
          size_t{head_pages(head)} * kPageBytes);
  }
  uint32_t pages = head_pages(head);
  store_head(arena, page, head_of(pages, kHeadFreed));
  // Quarantined: its pages stay out of the free ones until it leaves the quarantine.
  QuarantinedBlock evicted;
  uint32_t quarantine_mode = options().large_quarantine;
  bool quarantined = quarantine_mode != 0 &&
                     arena_quarantine_admit(static_cast<char*>(pointer), size_t{pages} * kPageBytes,
                                            quarantine_mode == 2, now_ms, &evicted);
  if (!quarantined) release_pages(arena, page, pages, now_ms);
  arena_set.live_pages -= pages;
  arena_set.live_blocks--;
  bool over_budget = arena_set.dirty_pages > dirty_budget_pages(now_ms);
  uint64_t budget_change_ms = next_budget_change_ms();
  arena_set.lock.unlock();
  if (quarantined)
    quarantine_freed(static_cast<char*>(pointer), size_t{pages} * kPageBytes, quarantine_mode == 2,
                     now_ms, evicted);
  if (over_budget) purge_over_budget(now_ms, false);
  note_global_purge_deadline(budget_change_ms);
}

bool arena_resize_in_place(void* pointer, size_t new_size) {
  if (new_size > kArenaMaxBlockBytes) return false;  // then its own mapping: mremap from there
  Arena* arena = arena_of(pointer);
  uint32_t page = page_of(arena, pointer);
  auto new_pages = static_cast<uint32_t>(pages_for(new_size));
  uint64_t now_ms = os_now_ms();
  SpinLockGuard guard(arena_set.lock);
  uint32_t head = load_head(arena, page);
  uint32_t pages = head_pages(head);
  if ((head & kHeadStateMask) != kHeadLive) return false;
  if (new_pages == pages) return true;
  if (new_pages < pages) {
    store_head(arena, page, head_of(new_pages, kHeadLive));
    release_pages(arena, page + new_pages, pages - new_pages, now_ms);
    arena_set.live_pages -= pages - new_pages;
    return true;
  }
  uint32_t end = page + pages;
  uint32_t extra = new_pages - pages;
  if (end + extra > arena->page_count || count_bits(arena->free_bits, end, extra) != extra)
    return false;
  if (!commit_to(arena, end + extra)) return false;
  claim(arena, end, extra, nullptr);
  store_head(arena, page, head_of(new_pages, kHeadLive));
  arena_set.live_pages += extra;
  arena_set.demand.last_alloc_ms = now_ms;
  note_live(now_ms);
  return true;
}

ArenaCounters arena_counters() {
  return {__atomic_load_n(&arena_set.arenas, __ATOMIC_RELAXED),
          __atomic_load_n(&arena_set.reserved_bytes, __ATOMIC_RELAXED),
          __atomic_load_n(&arena_set.live_blocks, __ATOMIC_RELAXED),
          __atomic_load_n(&arena_set.live_pages, __ATOMIC_RELAXED) * kPageBytes,
          __atomic_load_n(&arena_set.dirty_pages, __ATOMIC_RELAXED) * kPageBytes};
}

// --- fork -------------------------------------------------------------------------------------

namespace {

// Rebuilds an arena's free pages from its live blocks' records: whatever a vanished thread was
// doing (a block half taken or half given back, pages out for purging) ends up either free
// (counted resident, to be safe) or in a block nobody holds.
void rebuild(Arena* arena, uint64_t now_ms) {
  uint32_t usable = arena->first_usable_page;
  for (size_t word = 0; word < words_for(arena->page_count); ++word) {
    arena->dirty_bits[word] |= ~arena->free_bits[word];  // pages in an unknown state
    arena->stale_bits[word] |= ~arena->free_bits[word];
  }
  set_bits(arena->free_bits, usable, arena->page_count - usable, true);
  for (uint32_t page = usable; page < arena->page_count;) {
    uint32_t head = arena->heads[page];
    uint32_t pages = head_pages(head);
    if ((head & kHeadStateMask) != kHeadLive || pages == 0 || page + pages > arena->page_count) {
      ++page;
      continue;
    }
    set_bits(arena->free_bits, page, pages, false);
    arena_set.live_pages += pages;
    arena_set.live_blocks++;
    page += pages;
  }
  uint32_t uncommitted = arena->page_count - arena->committed_pages;
  for (uint64_t* bits : {arena->dirty_bits, arena->stale_bits}) {
    for (size_t word = 0; word < words_for(arena->page_count); ++word)
      bits[word] &= arena->free_bits[word];
    set_bits(bits, 0, usable, false);
    set_bits(bits, arena->committed_pages, uncommitted, false);
  }
  arena->free_pages = count_bits(arena->free_bits, usable, arena->page_count - usable);
  arena_set.dirty_pages += count_bits(arena->dirty_bits, usable, arena->page_count - usable);
  arena->empty_since_ms = 0;
  note_if_empty(arena, now_ms);
}

}  // namespace

void arena_after_fork_child() {
  bool busy = arena_set.lock.held() || arena_set.purges_in_flight.load() != 0;
  arena_set.lock.reset_after_fork();
  arena_set.purges_in_flight.store(0, std::memory_order_relaxed);
  // The quarantine starts empty: a block another thread was protecting would never finish.
  // (When the arenas are rebuilt, its blocks are freed by that, being no longer live.)
  QuarantinedBlock held[kQuarantineSlots];
  unsigned held_count = arena_quarantine_take_all(held);
  if (!busy) return release_quarantined(held, held_count);
  for (unsigned i = 0; i < held_count; ++i) {
    if (held[i].inaccessible) os_unguard(held[i].block, held[i].bytes);
  }
  arena_set.live_pages = 0;
  arena_set.live_blocks = 0;
  arena_set.dirty_pages = 0;
  uint64_t now_ms = os_now_ms();
  for (Arena* arena = arena_set.first; arena != nullptr; arena = arena->next)
    rebuild(arena, now_ms);
}

}  // namespace mapalloc
