#include "large.h"

#include "options.h"
#include "purge_deadline.h"
#include "spin_lock.h"

namespace mapalloc {

LargeCounters large_counters;

namespace {

// Freed mappings kept for reuse, most recent last. Guarded by `lock`; each change is one store
// to a slot or to `count` (fork: see spin_lock.h).
constexpr unsigned kCacheSlots = 32;
constexpr size_t kMaxCachedMappingBytes = 64 * kMiB;
constexpr size_t kMaxCachedTotalBytes = 128 * kMiB;

struct LargeCache {
  SpinLock lock;
  LargeHeader* slots[kCacheSlots] = {};
  unsigned count = 0;
  size_t bytes = 0;
};
LargeCache large_cache;

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

// Slot changes, ordered for a forked child (see spin_lock.h), which may observe the cache
// between any two stores of a thread that does not exist there: removal lowers `count` before
// overwriting the slot, so the child can at worst see the removed mapping still cached (its
// taker is gone: it is free there) or lose the moved one (a leak), never one mapping twice;
// appending fills the slot before `count` covers it.
LargeHeader* remove_slot(unsigned index) {
  LargeHeader* removed = large_cache.slots[index];
  unsigned last = large_cache.count - 1;
  LargeHeader* moved = large_cache.slots[last];
  __atomic_store_n(&large_cache.count, last, __ATOMIC_RELAXED);
  __atomic_store_n(&large_cache.slots[index], moved, __ATOMIC_RELEASE);
  large_cache.bytes -= removed->mapping_bytes;
  return removed;
}

void append_slot(LargeHeader* header) {
  __atomic_store_n(&large_cache.slots[large_cache.count], header, __ATOMIC_RELAXED);
  __atomic_store_n(&large_cache.count, large_cache.count + 1, __ATOMIC_RELEASE);
  large_cache.bytes += header->mapping_bytes;
}

// The smallest cached mapping that can hold `needed` bytes (and is at most twice as big). A tail
// of more than a quarter is given back: the mapping is shrunk in place.
LargeHeader* cache_take(size_t needed, size_t alignment) {
  if (__atomic_load_n(&large_cache.count, __ATOMIC_RELAXED) == 0) return nullptr;
  LargeHeader* found = nullptr;
  {
    SpinLockGuard guard(large_cache.lock);
    unsigned best = kCacheSlots;
    for (unsigned i = 0; i < large_cache.count; ++i) {
      const LargeHeader* candidate = large_cache.slots[i];
      size_t bytes = candidate->mapping_bytes;
      if (bytes < needed || bytes > 2 * needed) continue;
      if constexpr (kSecure) {
        // Same alignment, so that the guard page before the block is where the block needs it;
        // the oldest, so that a freed block's address is reused as late as possible.
        if (candidate->alignment != alignment) continue;
        if (best == kCacheSlots ||
            candidate->cached_at_ms < large_cache.slots[best]->cached_at_ms) {
          best = i;
        }
      } else if (best == kCacheSlots || bytes < large_cache.slots[best]->mapping_bytes) {
        best = i;  // the smallest that fits
      }
    }
    if (best == kCacheSlots) return nullptr;
    found = remove_slot(best);
  }
  // A much bigger mapping gives its tail back (not in the secure build: its last page is the
  // guard, and the block may use the rest).
  if (!kSecure && found->mapping_bytes - needed > needed / 4 &&
      os_resize_in_place(found, found->mapping_bytes, needed)) {
    found->mapping_bytes = needed;
  }
  return found;
}

bool cache_put(LargeHeader* header) {
  if (header->mapping_bytes > kMaxCachedMappingBytes) return false;
  LargeHeader* evicted = nullptr;
  uint64_t now_ms = os_now_ms();
  {
    SpinLockGuard guard(large_cache.lock);
    if (large_cache.count == kCacheSlots ||
        large_cache.bytes + header->mapping_bytes > kMaxCachedTotalBytes) {
      if (large_cache.count == 0) return false;
      evicted = remove_slot(0);  // the oldest, roughly
    }
    header->state = LargeState::kCached;
    header->purged = false;
    header->cached_at_ms = now_ms;
    append_slot(header);
  }
  // `header` may already be another thread's again: only locals from here on.
  if (evicted != nullptr) unmap_mapping(evicted);
  note_global_purge_deadline(now_ms + options().purge_delay_ms);
  return true;
}

// Returns a mapping taken out by cache_take_all, timestamps unchanged; false if full.
bool cache_put_back(LargeHeader* header) {
  SpinLockGuard guard(large_cache.lock);
  if (large_cache.count == kCacheSlots) return false;
  append_slot(header);
  return true;
}

// Takes every cached mapping out (one store of `count`), for slow work outside the lock.
unsigned cache_take_all(LargeHeader** taken) {
  SpinLockGuard guard(large_cache.lock);
  unsigned count = large_cache.count;
  for (unsigned i = 0; i < count; ++i) taken[i] = large_cache.slots[i];
  large_cache.count = 0;
  large_cache.bytes = 0;
  return count;
}

}  // namespace

void* large_alloc(size_t size, size_t alignment, bool* zeroed) {
  // A block of 0 bytes at a 4 MiB+ alignment would start exactly at the mapping's end (and mark
  // the segment map of the unit after it): every block holds at least one byte.
  if (size == 0) size = 1;
  size_t offset = header_offset(alignment);
  size_t needed = mapping_bytes_for(size, offset);
  if (alignment < kSegmentBytes) {
    if (LargeHeader* header = cache_take(needed, alignment)) {
      mark_unit(header, false);  // it may have held a block of another alignment (another unit)
      publish(header, alignment);
      count_live(header, true);
      *zeroed = false;
      return header->block;
    }
  }
  auto* header = static_cast<LargeHeader*>(map_region(needed, alignment, offset));
  if (header == nullptr) return nullptr;
  header->mapping_bytes = needed;
  publish(header, alignment);
  count_live(header, true);
  if constexpr (kSecure) {
    os_guard(header->block - kOsPageBytes, kOsPageBytes);
    os_guard(reinterpret_cast<char*>(header) + needed - kLargeTailGuardBytes, kLargeTailGuardBytes);
  }
  *zeroed = true;
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
  if (!cache_put(header)) unmap_mapping(header);
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

size_t large_cache_bytes() { return __atomic_load_n(&large_cache.bytes, __ATOMIC_RELAXED); }

size_t large_cache_purge(uint64_t now_ms, bool force, uint64_t* next_deadline_ms) {
  LargeHeader* taken[kCacheSlots];
  unsigned count = cache_take_all(taken);
  const Options& settings = options();
  size_t released = 0;
  for (unsigned i = 0; i < count; ++i) {
    LargeHeader* header = taken[i];
    uint64_t age = now_ms > header->cached_at_ms ? now_ms - header->cached_at_ms : 0;
    if (force || age >= settings.unmap_delay_ms) {
      released += header->mapping_bytes;
      unmap_mapping(header);
      continue;
    }
    if (!header->purged && age >= settings.purge_delay_ms) {
      os_purge(reinterpret_cast<char*>(header) + kOsPageBytes, header->mapping_bytes - kOsPageBytes,
               static_cast<PurgeMethod>(settings.purge_method));
      header->purged = true;
      released += header->mapping_bytes - kOsPageBytes;
    }
    lower_deadline(next_deadline_ms,
                   header->cached_at_ms +
                       (header->purged ? settings.unmap_delay_ms : settings.purge_delay_ms));
    if (!cache_put_back(header)) unmap_mapping(header);  // the cache filled up meanwhile
  }
  return released;
}

size_t large_cache_release_all() {
  size_t released = 0;
  for (;;) {
    LargeHeader* header = nullptr;
    {
      SpinLockGuard guard(large_cache.lock);
      if (large_cache.count == 0) break;
      header = remove_slot(large_cache.count - 1);
    }
    released += header->mapping_bytes;
    unmap_mapping(header);
  }
  return released;
}

void large_after_fork_child() { large_cache.lock.reset_after_fork(); }

}  // namespace mapalloc
