#include "core/large.h"

#include <string.h>

#include "core/purge_deadline.h"
#include "platform/options.h"
#include "platform/spin_lock.h"

namespace mapalloc {

LargeCounters large_counters;

namespace {

// Secure build: the header page, then a guard page, then the block.
constexpr size_t kMinHeaderOffset = kSecure ? 2 * kOsPageBytes : kOsPageBytes;

// Secure build with transparent huge pages: a block of a huge page or more starts at the mapping's
// second huge page, so that its first bytes are on a huge page as well (see advise_huge_pages); the
// gap between the header page and the block is inaccessible address space, not committed memory
// (os_guard_fresh).
bool starts_on_huge_page(size_t size, size_t alignment) {
  return kSecure && size >= kHugePageBytes && alignment < kHugePageBytes &&
         options().transparent_huge_pages != 0;
}

size_t header_offset(size_t size, size_t alignment) {
  if (alignment >= kSegmentBytes) return kSegmentBytes;
  if (starts_on_huge_page(size, alignment)) return kHugePageBytes;
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

// What a mapping can make resident, as the statistics and the cache's limits count it: all of it,
// except in the secure build its inaccessible parts (the gap before the block, the guard after),
// which leaves the header page and the block.
size_t usable_mapping_bytes(const LargeHeader* header) {
  return kSecure ? kOsPageBytes + large_usable_bytes(header) : header->mapping_bytes;
}

void count_live(const LargeHeader* header, bool live) {
  size_t bytes = usable_mapping_bytes(header);
  if (live) {
    large_counters.live_blocks.fetch_add(1, std::memory_order_relaxed);
    large_counters.live_bytes.fetch_add(bytes, std::memory_order_relaxed);
  } else {
    large_counters.live_blocks.fetch_sub(1, std::memory_order_relaxed);
    large_counters.live_bytes.fetch_sub(bytes, std::memory_order_relaxed);
  }
}

void publish(LargeHeader* header, size_t alignment, size_t offset) {
  header->alignment = alignment;
  header->block = reinterpret_cast<char*>(header) + offset;
  os_draw_secrets();
  header->check = reinterpret_cast<uintptr_t>(header->block) ^ process_secrets.large_check;
  header->state = LargeState::kLive;
  mark_unit(header, true);
}

void unmap_mapping(LargeHeader* header) {
  mark_unit(header, false);
  os_unmap(header, header->mapping_bytes);
}

// --- the secure build's cache of freed mappings -------------------------------------------------

// In the secure build every large block is a mapping of its own, with guard pages: three system
// calls to set up, and its pages faulted in afresh. Freed mappings wait here to serve later blocks
// of the same alignment that fit in this one's block and need at least half of it: the
// longest-waiting first, so that a freed block's address comes back as late as possible. Their
// pages stay resident for the purge delay, then are purged; after the unmap delay they are
// unmapped. A waiting block is inaccessible (uses after free fault) within the guard budget
// (os.h): the pair of mprotect calls costs about 60 us here, which made bigblock 40 times as
// long when every freed block paid it.
// Guarded by `lock`; each change is one store to a slot (fork: spin_lock.h).
constexpr unsigned kCacheSlots = kSecure ? 32 : 1;
constexpr size_t kMaxCachedMappingBytes = 64 * kMiB;
constexpr size_t kMaxCachedBytes = 128 * kMiB;

struct FreedMappings {
  SpinLock lock;
  LargeHeader* slots[kCacheSlots] = {};
  size_t bytes = 0;
};
FreedMappings freed_mappings;

char* block_end(const LargeHeader* header) {
  return reinterpret_cast<char*>(const_cast<LargeHeader*>(header)) + header->mapping_bytes -
         kLargeTailGuardBytes;
}

// Takes the slot `index` out (lock held).
LargeHeader* cache_remove(unsigned index) {
  LargeHeader* header = freed_mappings.slots[index];
  __atomic_store_n(&freed_mappings.slots[index], nullptr, __ATOMIC_RELEASE);
  freed_mappings.bytes -= usable_mapping_bytes(header);
  return header;
}

LargeHeader* cache_take(size_t size, size_t alignment) {
  size_t most_bytes = 2 * align_up(size, kOsPageBytes);
  if (__atomic_load_n(&freed_mappings.bytes, __ATOMIC_RELAXED) == 0) return nullptr;
  SpinLockGuard guard(freed_mappings.lock);
  unsigned best = kCacheSlots;
  for (unsigned i = 0; i < kCacheSlots; ++i) {
    const LargeHeader* candidate = freed_mappings.slots[i];
    if (candidate == nullptr || candidate->alignment != alignment ||
        large_usable_bytes(candidate) < size || large_usable_bytes(candidate) > most_bytes) {
      continue;
    }
    if (best == kCacheSlots || candidate->cached_at_ms < freed_mappings.slots[best]->cached_at_ms) {
      best = i;
    }
  }
  return best == kCacheSlots ? nullptr : cache_remove(best);
}

// Keeps a freed mapping, evicting the longest-waiting ones beyond the limits; false if it is too
// big to wait there.
bool cache_put(LargeHeader* header) {
  if (usable_mapping_bytes(header) > kMaxCachedMappingBytes) return false;
  header->state = LargeState::kCached;
  header->purged = false;
  // Inaccessible while it waits, within the guard budget (os.h): a use after free faults (and
  // is reported, os_report_faults).
  header->guarded =
      os_guard_within_budget(header->block, static_cast<size_t>(block_end(header) - header->block));
  header->cached_at_ms = os_now_ms();
  LargeHeader* evicted[kCacheSlots];
  unsigned evicted_count = 0;
  {
    SpinLockGuard guard(freed_mappings.lock);
    for (;;) {
      unsigned empty = kCacheSlots, oldest = kCacheSlots;
      for (unsigned i = 0; i < kCacheSlots; ++i) {
        LargeHeader* slot = freed_mappings.slots[i];
        if (slot == nullptr) {
          empty = i;
        } else if (oldest == kCacheSlots ||
                   slot->cached_at_ms < freed_mappings.slots[oldest]->cached_at_ms) {
          oldest = i;
        }
      }
      if (empty != kCacheSlots &&
          freed_mappings.bytes + usable_mapping_bytes(header) <= kMaxCachedBytes) {
        __atomic_store_n(&freed_mappings.slots[empty], header, __ATOMIC_RELEASE);
        freed_mappings.bytes += usable_mapping_bytes(header);
        break;
      }
      evicted[evicted_count++] = cache_remove(oldest);
    }
  }
  for (unsigned i = 0; i < evicted_count; ++i) unmap_mapping(evicted[i]);
  note_global_purge_deadline(header->cached_at_ms + options().purge_delay_ms);
  return true;
}

// Secure build: transparent huge pages on a block's own mapping, as the default build's arenas
// have them (its large blocks live there). With 4 KiB pages a program that replaces big buffers
// faulted each one in 4 KiB at a time: bigbuffers took 15x the default build's time. Advised on
// the whole block (the guards around it have other protections, so the block is a region of
// its own either way); only its whole 2 MiB pages can be huge.
[[maybe_unused]] void advise_huge_pages(const LargeHeader* header) {
  size_t bytes = static_cast<size_t>(block_end(header) - header->block);
  if (options().transparent_huge_pages != 0 && bytes >= kHugePageBytes)
    os_advise_huge_pages(header->block, bytes);
}

}  // namespace

void* large_alloc(size_t size, size_t alignment, bool zero) {
  // A block of 0 bytes at a 4 MiB+ alignment would start exactly at the mapping's end (and mark
  // the segment map of the unit after it): every block holds at least one byte.
  if (size == 0) size = 1;
  size_t offset = header_offset(size, alignment);
  size_t needed = mapping_bytes_for(size, offset);
  if (LargeHeader* reused = cache_take(size, alignment)) {
    reused->state = LargeState::kLive;
    if (reused->guarded)
      os_unguard(reused->block, static_cast<size_t>(block_end(reused) - reused->block));
    count_live(reused, true);
    if (zero) memset(reused->block, 0, static_cast<size_t>(block_end(reused) - reused->block));
    return reused->block;
  }
  auto* header = static_cast<LargeHeader*>(map_region(needed, alignment, offset));
  if (header == nullptr) return nullptr;
  header->mapping_bytes = needed;
  publish(header, alignment, offset);
  count_live(header, true);
  if constexpr (kSecure) {
    os_guard_fresh(reinterpret_cast<char*>(header) + kOsPageBytes, offset - kOsPageBytes);
    os_guard_fresh(reinterpret_cast<char*>(header) + needed - kLargeTailGuardBytes,
                   kLargeTailGuardBytes);
    advise_huge_pages(header);
  }
  return header->block;
}

LargeHeader* large_header_of(const void* pointer, unsigned unit) {
  char* unit_start = reinterpret_cast<char*>(segment_of(pointer));
  auto* header = reinterpret_cast<LargeHeader*>(unit == kUnitLargeBelow ? unit_start - kSegmentBytes
                                                                        : unit_start);
  if (header->block != pointer) return nullptr;
  // (Before any large block, the secret is 0 and no map entry leads here.)
  if (header->check != (reinterpret_cast<uintptr_t>(pointer) ^ process_secrets.large_check))
    return nullptr;
  return header;
}

void large_free(LargeHeader* header) {
  count_live(header, false);
  if (kSecure && cache_put(header)) return;
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
  publish(moved, alignment, offset);
  return moved->block;
}

size_t large_cache_bytes() { return __atomic_load_n(&freed_mappings.bytes, __ATOMIC_RELAXED); }

size_t large_cache_purge(uint64_t now_ms, bool force, uint64_t* next_deadline_ms) {
  if (large_cache_bytes() == 0) return 0;
  const Options& settings = options();
  size_t released = 0;
  for (unsigned i = 0; i < kCacheSlots; ++i) {
    LargeHeader* header;
    bool unmap;
    {
      SpinLockGuard guard(freed_mappings.lock);
      header = freed_mappings.slots[i];
      if (header == nullptr) continue;
      uint64_t age = now_ms > header->cached_at_ms ? now_ms - header->cached_at_ms : 0;
      unmap = force || age >= settings.unmap_delay_ms;
      if (!unmap && (header->purged || age < settings.purge_delay_ms)) {
        lower_deadline(next_deadline_ms,
                       header->cached_at_ms +
                           (header->purged ? settings.unmap_delay_ms : settings.purge_delay_ms));
        continue;
      }
      cache_remove(i);  // out while the system call runs
    }
    if (unmap) {
      released += usable_mapping_bytes(header);
      unmap_mapping(header);
      continue;
    }
    size_t bytes = static_cast<size_t>(block_end(header) - header->block);
    os_purge(header->block, bytes, static_cast<PurgeMethod>(settings.purge_method));
    header->purged = true;
    released += bytes;
    lower_deadline(next_deadline_ms, header->cached_at_ms + settings.unmap_delay_ms);
    bool back = false;
    {
      SpinLockGuard guard(freed_mappings.lock);
      if (freed_mappings.slots[i] == nullptr) {
        __atomic_store_n(&freed_mappings.slots[i], header, __ATOMIC_RELEASE);
        freed_mappings.bytes += usable_mapping_bytes(header);
        back = true;
      }
    }
    if (!back) unmap_mapping(header);  // its slot was taken meanwhile
  }
  return released;
}

void large_after_fork_child() { freed_mappings.lock.reset_after_fork(); }

}  // namespace mapalloc
