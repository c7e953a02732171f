#include "api/entry.h"

#include "api/init.h"
#include "core/arena.h"
#include "core/arena_quarantine.h"
#include "platform/diag.h"

namespace mapalloc {

void* calloc_impl(size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) return out_of_memory();
  if constexpr (kDebug)
    return debug_calloc(total);
  else if constexpr (kSecure)
    return secure_calloc(total);
  else
    return default_calloc(total);
}

void* realloc_impl(void* pointer, size_t size) {
  if (pointer == nullptr) return malloc_fast(size);
  if (size == 0) {  // glibc semantics: free and return NULL
    free_fast(pointer);
    return nullptr;
  }
  if constexpr (kDebug)
    return debug_realloc(pointer, size);
  else if constexpr (kSecure)
    return secure_realloc(pointer, size);
  else
    return default_realloc(pointer, size);
}

void* aligned_alloc_impl(size_t alignment, size_t size, [[maybe_unused]] AllocKind kind) {
  if constexpr (kDebug)
    return debug_aligned_alloc(alignment, size);
  else if constexpr (kSecure)
    return secure_aligned_alloc(alignment, size, kind);
  else
    return default_aligned_alloc(alignment, size);
}

size_t usable_size_impl(const void* pointer) {
  if (pointer == nullptr) return 0;
  if constexpr (kDebug)
    return debug_usable_size(pointer);
  else if constexpr (kSecure)
    return secure_usable_size(pointer);
  else
    return locate(pointer, "malloc_usable_size").usable_bytes;
}

// Reads only (called from the fault handler).
size_t describe_fault(const void* address, char* buffer, size_t capacity) {
  auto at = reinterpret_cast<uintptr_t>(address);
  if (kSecure && secure_is_zero_block(address)) {
    return diag_snprintf(buffer, capacity,
                         "segmentation fault at %p: access through a pointer of a 0-byte block",
                         address);
  }
  switch (unit_kind(address)) {
    case kUnitSegment: {
      Page* entry = page_entry_of(address);
      if (page_index(entry) < kFirstUsablePage) {
        return diag_snprintf(buffer, capacity,
                             "segmentation fault at %p, in a segment's metadata (heap "
                             "underflow or stray write)",
                             address);
      }
      Page* head = entry->state == PageState::kSpanTail ? span_head(entry) : entry;
      if (head->owner == nullptr || head->block_bytes == 0) {
        return diag_snprintf(buffer, capacity,
                             "segmentation fault at %p, in unused memory of a segment (heap "
                             "overflow or use after free)",
                             address);
      }
      uintptr_t start = reinterpret_cast<uintptr_t>(page_start(head));
      size_t offset = (at - start) % head->block_bytes;
      const char* what = kSecure && head->block_bytes >= kSecureProtectMinBytes
                             ? "a freed block held inaccessible: use after free or double free"
                             : "heap misuse";
      return diag_snprintf(
          buffer, capacity, "segmentation fault at %p, %zu bytes into the %zu-byte block %p (%s)",
          address, offset, size_t{head->block_bytes}, reinterpret_cast<void*>(at - offset), what);
    }
    case kUnitArena: {
      QuarantinedBlock freed;
      if (arena_quarantine_find(address, &freed)) {
        return diag_snprintf(buffer, capacity,
                             "segmentation fault at %p, %zu bytes into the freed %zu-byte block %p "
                             "(use after free: freed large blocks wait inaccessible)",
                             address,
                             static_cast<size_t>(at - reinterpret_cast<uintptr_t>(freed.block)),
                             freed.bytes, static_cast<void*>(freed.block));
      }
      if (const char* first_block = arena_gap_end(address)) {
        return diag_snprintf(buffer, capacity,
                             "segmentation fault at %p, %zu bytes before the block %p (heap "
                             "underflow)",
                             address,
                             static_cast<size_t>(reinterpret_cast<uintptr_t>(first_block) - at),
                             static_cast<const void*>(first_block));
      }
      [[fallthrough]];
    }
    case kUnitLarge:
    case kUnitLargeBelow:
      return diag_snprintf(buffer, capacity,
                           "segmentation fault at %p, in a large block's memory or its guard "
                           "(heap overflow, underflow or use after free)",
                           address);
    default:
      break;
  }
  // Within a unit of mapalloc's memory: a write that ran off the end (or the start) of it.
  if (unit_kind(reinterpret_cast<void*>(at - kSegmentBytes)) != kUnitNone) {
    return diag_snprintf(buffer, capacity,
                         "segmentation fault at %p, just past mapalloc's memory (heap overflow?)",
                         address);
  }
  if (unit_kind(reinterpret_cast<void*>(at + kSegmentBytes)) != kUnitNone) {
    return diag_snprintf(buffer, capacity,
                         "segmentation fault at %p, just before mapalloc's memory (heap "
                         "underflow?)",
                         address);
  }
  return 0;
}

}  // namespace mapalloc
