#include "large.h"

namespace mapalloc {

LargeCounters large_counters;

namespace {

uint64_t secret() {
  static uint64_t value = 0;  // written once; a racing first use writes the same kind of value
  uint64_t current = __atomic_load_n(&value, __ATOMIC_RELAXED);
  if (current == 0) {
    current = os_random_seed() | 1;
    uint64_t expected = 0;
    if (!__atomic_compare_exchange_n(&value, &expected, current, false, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED)) {
      current = expected;
    }
  }
  return current;
}

// Secure build: the header page, then a guard page, then the block.
constexpr size_t kMinHeaderOffset = kSecure ? 2 * kOsPageBytes : kOsPageBytes;

size_t header_offset(size_t alignment) {
  if (alignment >= kSegmentBytes) return kSegmentBytes;
  return alignment < kMinHeaderOffset ? kMinHeaderOffset : alignment;
}

// Sets (or clears) the map entry of the unit holding the block.
void mark_unit(const LargeHeader* header, bool present) {
  bool below = header->block - reinterpret_cast<const char*>(header) >=
               static_cast<ptrdiff_t>(kSegmentBytes);
  const void* unit = below ? static_cast<const void*>(header->block) : header;
  set_unit_entry(unit, !present ? kUnitNone : below ? kUnitLargeBelow : kUnitLarge);
}

// Maps a region for a block of `bytes` (header included) whose block, at `offset`, is aligned
// to `alignment`; the header itself is always kSegmentBytes-aligned.
void* map_region(size_t bytes, size_t alignment, size_t offset) {
  if (alignment <= kSegmentBytes) return os_map_aligned(bytes, kSegmentBytes);
  return os_map_aligned(bytes, alignment, offset);
}

size_t mapping_bytes_for(size_t size, size_t offset) {
  return align_up(offset + size, kOsPageBytes) + kLargeTailGuardBytes;
}

void count_live(const LargeHeader* header, bool live) {
  if (live) {
    large_counters.live_blocks.fetch_add(1, std::memory_order_relaxed);
    large_counters.live_bytes.fetch_add(header->mapping_bytes, std::memory_order_relaxed);
  } else {
    large_counters.live_blocks.fetch_sub(1, std::memory_order_relaxed);
    large_counters.live_bytes.fetch_sub(header->mapping_bytes, std::memory_order_relaxed);
  }
}

void publish(LargeHeader* header, size_t alignment) {
  header->alignment = alignment;
  header->block = reinterpret_cast<char*>(header) + header_offset(alignment);
  header->check = reinterpret_cast<uintptr_t>(header->block) ^ secret();
  header->state = LargeState::kLive;
  mark_unit(header, true);
}

void unmap_mapping(LargeHeader* header) {
  mark_unit(header, false);
  os_unmap(header, header->mapping_bytes);
}

}  // namespace

void* large_alloc(size_t size, size_t alignment) {
  // A block of 0 bytes at a 4 MiB+ alignment would start exactly at the mapping's end (and mark
  // the segment map of the unit after it): every block holds at least one byte.
  if (size == 0) size = 1;
  size_t offset = header_offset(alignment);
  size_t needed = mapping_bytes_for(size, offset);
  auto* header = static_cast<LargeHeader*>(map_region(needed, alignment, offset));
  if (header == nullptr) return nullptr;
  header->mapping_bytes = needed;
  publish(header, alignment);
  count_live(header, true);
  if constexpr (kSecure) {
    os_guard(header->block - kOsPageBytes, kOsPageBytes);
    os_guard(reinterpret_cast<char*>(header) + needed - kLargeTailGuardBytes, kLargeTailGuardBytes);
  }
  return header->block;
}

LargeHeader* large_header_of(const void* pointer, unsigned unit) {
  char* unit_start = reinterpret_cast<char*>(segment_of(pointer));
  auto* header = reinterpret_cast<LargeHeader*>(unit == kUnitLargeBelow ? unit_start - kSegmentBytes
                                                                        : unit_start);
  if (header->block != pointer) return nullptr;
  if (header->check != (reinterpret_cast<uintptr_t>(pointer) ^ secret())) return nullptr;
  return header;
}

void large_free(LargeHeader* header) {
  count_live(header, false);
  header->state = LargeState{};  // a racing second free finds no live header
  unmap_mapping(header);
}

void* large_resize(LargeHeader* header, size_t new_size) {
  if constexpr (kSecure) return nullptr;  // the guards would not move with it: realloc copies
  size_t offset = static_cast<size_t>(header->block - reinterpret_cast<char*>(header));
  size_t old_bytes = header->mapping_bytes;
  size_t new_bytes = mapping_bytes_for(new_size, offset);
  if (new_bytes == old_bytes) return header->block;
  if (os_resize_in_place(header, old_bytes, new_bytes)) {
    count_live(header, false);
    header->mapping_bytes = new_bytes;
    count_live(header, true);
    return header->block;
  }
  // Move the pages to a new aligned reservation (no copy); the header travels with them.
  size_t alignment = header->alignment;
  void* target = map_region(new_bytes, alignment, offset);
  if (target == nullptr) return nullptr;
  mark_unit(header, false);
  if (!os_move(header, old_bytes, target, new_bytes)) {
    mark_unit(header, true);
    os_unmap(target, new_bytes);
    return nullptr;
  }
  auto* moved = static_cast<LargeHeader*>(target);
  large_counters.live_bytes.fetch_sub(old_bytes, std::memory_order_relaxed);
  large_counters.live_bytes.fetch_add(new_bytes, std::memory_order_relaxed);
  moved->mapping_bytes = new_bytes;
  publish(moved, alignment);
  return moved->block;
}

}  // namespace mapalloc
