// Large blocks of their own mapping: those too big or too aligned for an arena (arena.h), those
// that outgrew their arena run by realloc, and in the secure build every large block. Each
// mapping starts kSegmentBytes-aligned with a header there, the block at `header + offset`. The
// offset is one OS page (secure build: two, the second a guard page), or the alignment when
// larger; in the secure build a block of a huge page or more starts at the second huge page
// (the gap inaccessible); from kSegmentBytes alignment on it is kSegmentBytes and the block's
// unit is marked kUnitLargeBelow (its header is one unit lower).
// realloc moves pages with mremap instead of copying them. A freed mapping is unmapped at once
// (blocks that are replaced over and over are the arenas' business), except in the secure
// build, where it is kept a while to serve a later block (see large.cpp).
#pragma once

#include "core/segment.h"

namespace mapalloc {

enum class LargeState : uint32_t { kLive = 0x4c495645, kCached = 0x43414348 };

struct LargeHeader {
  uintptr_t check;       // address of the block XOR the process secret: a header we wrote
  char* block;           // what the program holds
  size_t mapping_bytes;  // the whole mapping, header included
  size_t alignment;      // alignment of `block` (>= kOsPageBytes)
  LargeState state;
  bool purged;            // cached, and its block's pages given back to the OS
  bool guarded;           // cached, and its block inaccessible (secure build)
  uint64_t cached_at_ms;  // when it entered the secure build's cache of freed mappings
};

// A new large block of at least `size` bytes aligned to `alignment` (a power of two), zeroed if
// `zero` (a new mapping always is). nullptr when the OS refuses.
void* large_alloc(size_t size, size_t alignment, bool zero);

// The header of the large block starting exactly at `pointer`, or nullptr if `pointer` is not
// the start of a live (or, in the secure build, cached) large block of ours. `unit` is
// unit_entry(pointer), kUnitLarge or kUnitLargeBelow.
LargeHeader* large_header_of(const void* pointer, unsigned unit);

// The secure build puts an inaccessible page right before each large block and one after it.
constexpr size_t kLargeTailGuardBytes = kSecure ? kOsPageBytes : 0;

inline size_t large_usable_bytes(const LargeHeader* header) {
  return header->mapping_bytes - kLargeTailGuardBytes -
         static_cast<size_t>(header->block - reinterpret_cast<const char*>(header));
}

void large_free(LargeHeader* header);

// Resizes in place or by moving the mapping; nullptr if impossible (the block is unchanged).
void* large_resize(LargeHeader* header, size_t new_size);

// Live large blocks (counted in large_alloc/large_free and resizes).
struct LargeCounters {
  std::atomic<size_t> live_blocks{0};
  std::atomic<size_t> live_bytes{0};  // their mappings
};
extern LargeCounters large_counters;

// The secure build's cache of freed mappings: their bytes; purge of those cached longer than the
// purge delay and unmapping of those cached longer than the unmap delay (all of them with
// `force`), returning the bytes released and lowering `*next_deadline_ms` to the next due time.
// (Always empty in the default build.)
size_t large_cache_bytes();
size_t large_cache_purge(uint64_t now_ms, bool force, uint64_t* next_deadline_ms);
void large_after_fork_child();

}  // namespace mapalloc
