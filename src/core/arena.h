// Large-block arenas. Every large block up to kArenaMaxBlockBytes (above kClassMaxBytes) is a
// run of 64 KiB pages in an arena: a reservation of 4 MiB .. 1 GiB of address space, aligned to
// its own size, whose units the segment map marks (kUnitArena + size step), so that a pointer's
// arena, page and block are found in O(1) from the pointer alone. Page states live in bitmaps at
// the arena's start: a freed run is available at once to any request that fits, free neighbours
// merge by construction, and the part of a run a request does not need stays free (and
// resident). Blocks that outgrow their run by realloc, and bigger or more aligned ones, are
// separate mappings (large.h), which grow with mremap.
//
// Free pages stay resident ("dirty") for reuse while the program needs them: purging follows
// the working set (see arena.cpp, dirty_budget_pages), not the clock alone. Arenas are
// process-wide, under one spin lock whose critical sections never make a system call.
#pragma once

#include "core/segment.h"

namespace mapalloc {

constexpr size_t kArenaMinBytes = kSegmentBytes;                           // 4 MiB
constexpr size_t kArenaMaxBytes = kSegmentBytes << (kArenaSizeSteps - 1);  // 1 GiB
constexpr size_t kArenaFirstBytes = 64 * kMiB;  // later arenas double, up to kArenaMaxBytes
constexpr size_t kArenaMaxBlockBytes = 128 * kMiB;
constexpr size_t kArenaMaxAlignBytes = kArenaMinBytes;  // every arena is at least this aligned

// Whether a request of `size` bytes aligned to `alignment` is served by an arena.
constexpr bool arena_serves(size_t size, size_t alignment) {
  return !kSecure && size <= kArenaMaxBlockBytes && alignment <= kArenaMaxAlignBytes;
}

// A new block of at least `size` bytes (above kClassMaxBytes) at a multiple of `alignment`,
// zero-filled if `zero` (only its resident pages are written: the others read as zero). nullptr
// when no arena has room and no new one can be reserved.
void* arena_alloc(size_t size, size_t alignment, bool zero);

// What a pointer into an arena unit refers to. Read without the lock: exact for the blocks the
// program holds (their records change only when they are freed or resized).
enum class ArenaBlockState { kLive, kFreed, kNotBlockStart };
struct ArenaBlock {
  ArenaBlockState state;
  size_t usable_bytes;  // for a live block
};
ArenaBlock arena_locate(const void* pointer);

// For the fault handler (reads only): if `address` lies in the inaccessible gap between an
// arena's metadata and its first block, where that block starts (an underflow ran out of it);
// else nullptr. `address` must be in an arena's unit.
const char* arena_gap_end(const void* address);

// Frees a live block; a block freed twice meanwhile (a race between two frees) is reported.
// Within a budget, freed blocks wait inaccessible for a while (core/arena_quarantine.h).
void arena_free(void* pointer);

// Resizes a live block in place to hold `new_size` bytes: shrinking gives its tail pages back,
// growing takes the free pages after it. false if they are not free, or if the block would
// outgrow kArenaMaxBlockBytes (nothing changes).
bool arena_resize_in_place(void* pointer, size_t new_size);

// Figures for statistics (read without the lock: estimates while other threads allocate).
struct ArenaCounters {
  size_t arenas;
  size_t reserved_bytes;
  size_t live_blocks;
  size_t live_bytes;   // pages of live blocks
  size_t dirty_bytes;  // free pages kept resident for reuse
};
ArenaCounters arena_counters();

// Process-wide purge work: free pages beyond the working-set budget are purged (the longest
// free first), all of them once large blocks have not been allocated for a while, and arenas
// empty for the unmap delay are unmapped (one stays). With `force`, every free page is purged
// and every empty arena unmapped. Returns the bytes released; lowers `*next_deadline_ms` to
// when more work falls due.
size_t arena_purge(uint64_t now_ms, bool force, uint64_t* next_deadline_ms);

// Frees every block the quarantine holds (their pages stay resident, first in line for the next
// request). Returns their bytes. For a request that found no room.
size_t arena_release_quarantine();

// In a forked child: a thread that does not exist there may have been changing an arena.
void arena_after_fork_child();

}  // namespace mapalloc
