#include "api/alloc.h"

#include <errno.h>
#include <string.h>

#include "api/init.h"
#include "api/prof_hooks.h"
#include "core/purge.h"
#include "platform/diag.h"

namespace mapalloc {

void* out_of_memory() {
  errno = ENOMEM;
  return nullptr;
}

namespace {

// The calling thread's heap, set up on first use; nullptr if no heap could be made.
Heap* heap_for_slow_path() {
  Heap* heap = tls_heap;
  if (MAPALLOC_UNLIKELY(heap == &empty_heap)) heap = thread_init();
  return heap;
}

// Address space may be exhausted (RLIMIT_AS) by what the caches and empty arenas hold: releases
// them all. Returns the bytes released (0: retrying is pointless).
size_t release_for_retry() {
  uint64_t now_ms = os_now_ms(), unused_deadline_ms = 0;
  return segment_cache_release_all() + arena_purge(now_ms, true, &unused_deadline_ms) +
         large_cache_purge(now_ms, true, &unused_deadline_ms);
}

// kCounted: class_alloc_profiled's, whose refills also say how many blocks they listed
// (`*handed`, left alone if no refill happened).
template <bool kCounted = false>
void* class_alloc(Heap* heap, unsigned size_class, unsigned* handed = nullptr) {
  Block* block = heap->free[size_class];
  if (block == nullptr) {
    purge_if_due_soon(heap);
    auto refill = [&] {
      return kCounted ? heap_refill_counted(heap, size_class, handed)
                      : heap_refill(heap, size_class);
    };
    block = refill();
    if (block == nullptr && release_for_retry() != 0) block = refill();
    if (block == nullptr) return out_of_memory();
  }
  heap->free[size_class] = block_next(block);
  set_block_key(block, 0);
  return block;
}

// class_alloc with the heap profiler on (prof_hooks.h): the sampling decision.
MAPALLOC_NOINLINE void* class_alloc_profiled(Heap* heap, unsigned size_class, size_t size) {
  unsigned handed = 0;
  void* block = class_alloc<true>(heap, size_class, &handed);
  if (block == nullptr) return nullptr;
  return prof_charge_class_alloc(heap, size_class, static_cast<Block*>(block), size, handed);
}

// class_alloc, through the profiler's path when it is on and a refill is due (prof_hooks.h).
MAPALLOC_INLINE void* class_alloc_sampled(Heap* heap, unsigned size_class, size_t size) {
  if (MAPALLOC_UNLIKELY(prof_active()) && heap->free[size_class] == nullptr)
    return class_alloc_profiled(heap, size_class, size);
  return class_alloc(heap, size_class);
}

// Blocks that outgrow their arena run by realloc past this size move to their own mapping,
// where later growth moves pages with mremap instead of copying them.
constexpr size_t kGrowIntoOwnMappingBytes = 1 * kMiB;

enum class LargePlace { kAny, kOwnMapping };

// A run of an arena when one serves the request and has (or can reserve) room, else its own
// mapping (which a request may still get when address space is too short for an arena).
void* allocate_large(size_t size, size_t alignment, bool zero, LargePlace place) {
  if (place == LargePlace::kAny && arena_serves(size, alignment)) {
    if (void* block = arena_alloc(size, alignment, zero)) return block;
  }
  return large_alloc(size, alignment, zero);
}

void* large_malloc(size_t size, size_t alignment, bool zero, LargePlace place = LargePlace::kAny) {
  if (size > kMaxRequestBytes) return out_of_memory();
  purge_if_due_soon(tls_heap);
  void* block = allocate_large(size, alignment, zero, place);
  // No room and no new memory: first the quarantine's blocks, whose pages are resident and
  // committed, then everything cached.
  if (block == nullptr && arena_release_quarantine() != 0)
    block = allocate_large(size, alignment, zero, place);
  if (block == nullptr) {
    if (release_for_retry() == 0) return out_of_memory();
    block = allocate_large(size, alignment, zero, place);
  }
  if (block == nullptr) return out_of_memory();
  if (MAPALLOC_UNLIKELY(prof_active())) prof_large_alloc(block, size);
  return block;
}

// A large block about to be resized in place or moved by the kernel: for the profiler, the old
// block is freed (its sample, if any, forgotten now: once the mapping has moved, another thread
// may map and sample the old address) and a new one allocated (prof_resized). If the resize
// fails, realloc copies and frees the block anyway; only if that fails too does the block stay
// with its sample forgotten.
MAPALLOC_INLINE void prof_before_resize(void* old_block) {
  if (MAPALLOC_UNLIKELY(prof_may_be_sampled(old_block))) prof_forget(old_block);
}
MAPALLOC_INLINE void* prof_resized(void* block, size_t size) {
  if (MAPALLOC_UNLIKELY(prof_active())) prof_large_alloc(block, size);
  return block;
}

[[noreturn]] MAPALLOC_COLD void report_freed(const char* operation, const void* pointer,
                                             const char* what, size_t bytes) {
  if (strcmp(operation, "free") == 0)
    fatal("double free of %p (%s, %zu bytes)", pointer, what, bytes);
  fatal("%s of freed block %p (%s, %zu bytes)", operation, pointer, what, bytes);
}

// locate's case of a size-class block, inlined into free_slow: the path of every remote free
// and of the owner's frees of a span that holds a heap profiler's sample (a call less there).
MAPALLOC_INLINE BlockRef locate_class_block(const void* pointer, const char* operation) {
  Page* entry = page_entry_of(pointer);
  Page* head = entry->state == PageState::kSpanTail ? span_head(entry) : entry;
  Heap* owner = head->owner;
  if (owner == nullptr) {
    fatal("%s of %p: not a block of mapalloc (no span in use there)", operation, pointer);
  }
  if (!page_is_block_start(head, pointer)) {
    fatal(
        "%s of %p: not the start of a block (interior or misaligned pointer; size class "
        "%zu bytes)",
        operation, pointer, size_t{head->block_bytes});
  }
  auto* block = static_cast<Block*>(const_cast<void*>(pointer));
  // The key is random per page: a match is a double free, except in the rare case of user
  // data that equals it, which the owner can rule out by looking through its lists (the
  // secure build, whose quarantine such a search would miss, trusts the key).
  if (kFreeChecks && block_key(block) == head->free_key &&
      (kSecure || owner != tls_heap || heap_block_is_free(owner, head, block))) {
    report_freed(operation, pointer, "size class", head->block_bytes);
  }
  return {BlockKind::kClass, head, nullptr, head->block_bytes};
}

}  // namespace

BlockRef locate(const void* pointer, const char* operation) {
  switch (unit_kind(pointer)) {
    case kUnitSegment:
      return locate_class_block(pointer, operation);
    case kUnitArena: {
      ArenaBlock block = arena_locate(pointer);
      if (block.state == ArenaBlockState::kFreed)
        report_freed(operation, pointer, "large block", block.usable_bytes);
      if (block.state != ArenaBlockState::kLive) {
        fatal(
            "%s of %p: not the start of a block (interior pointer into a large block, or not "
            "allocated by mapalloc)",
            operation, pointer);
      }
      return {BlockKind::kArena, nullptr, nullptr, block.usable_bytes};
    }
    case kUnitLarge:
    case kUnitLargeBelow: {
      LargeHeader* header = large_header_of(pointer, unit_kind(pointer));
      if (header == nullptr) {
        fatal(
            "%s of %p: not the start of a block (interior pointer into a large block, or not "
            "allocated by mapalloc)",
            operation, pointer);
      }
      if (header->state != LargeState::kLive) {  // (cached: the secure build)
        report_freed(operation, pointer, "large block", large_usable_bytes(header));
      }
      return {BlockKind::kOwnMapping, nullptr, header, large_usable_bytes(header)};
    }
    default:
      fatal("%s of %p: not allocated by mapalloc (or already returned to the OS)", operation,
            pointer);
  }
}

namespace {

// free_located's body, inlined into free_slow: the path of every remote free (a call more
// there, and the profiler's tests, cost prodcons-2t about 10 % more instructions).
MAPALLOC_INLINE void release_located(const BlockRef& ref, void* pointer) {
  auto* block = static_cast<Block*>(pointer);
  if (MAPALLOC_LIKELY(ref.kind == BlockKind::kClass)) {
    Page* page = ref.page;
    Heap* heap = tls_heap;
    prof_note_class_free(heap, page, block);
    if (page->owner == heap) return heap_free_local(heap, page, block);
    if (heap != &empty_heap) heap->remote_frees++;
    return heap_free_remote(page, block);
  }
  if (MAPALLOC_UNLIKELY(prof_may_be_sampled(pointer))) prof_forget(pointer);
  if (ref.kind == BlockKind::kArena) return arena_free(pointer);
  large_free(ref.large);
}

}  // namespace

void free_located(const BlockRef& ref, void* pointer) { release_located(ref, pointer); }

void* malloc_slow(size_t size, Heap* heap) {
  if (MAPALLOC_UNLIKELY(heap == &empty_heap)) {
    heap = thread_init();
    if (heap == nullptr) return out_of_memory();
  }
  if (size <= kClassMaxBytes) {
    unsigned size_class = size_class_of(size == 0 ? 1 : size);
    return class_alloc_sampled(heap, size_class, size);
  }
  return large_malloc(size, kMinAlignBytes, false);
}

void free_slow(void* pointer) {
  if (pointer == nullptr) return;
  if (MAPALLOC_LIKELY(unit_kind(pointer) == kUnitSegment))
    return release_located(locate_class_block(pointer, "free"), pointer);
  release_located(locate(pointer, "free"), pointer);
}

// (The owner's frees the heap profiler holds come here, not through free_slow: free_slow sees
// remote frees, double frees and stale map reads, whose general path handles a held span too.)
void free_past_start_limit(void* pointer, Page* page, Heap* heap) {
  if (page->owner == heap && prof_owner_free(heap, page, static_cast<Block*>(pointer))) return;
  release_located(locate_class_block(pointer, "free"), pointer);
}

void check_sized_delete(const BlockRef& ref, const void* pointer, size_t size, bool exact_class) {
  bool fits = size <= ref.usable_bytes;
  if (ref.kind == BlockKind::kClass && exact_class)
    fits = fits && size_class_of(size == 0 ? 1 : size) == ref.page->size_class;
  else if (ref.kind != BlockKind::kClass && exact_class)
    fits = fits && size > ref.usable_bytes / 2;
  if (MAPALLOC_UNLIKELY(!fits)) {
    fatal("sized delete of %p: wrong size %zu for a block of %zu bytes (%s)", pointer, size,
          ref.usable_bytes, ref.kind == BlockKind::kClass ? "size class" : "large block");
  }
}

void free_sized_slow(void* pointer, size_t size, bool exact_class) {
  if (pointer == nullptr) return;
  BlockRef ref = locate(pointer, "sized delete");
  check_sized_delete(ref, pointer, size, exact_class);
  free_located(ref, pointer);
}

void* default_calloc(size_t total) {
  if (total <= kClassMaxBytes) {
    void* block = default_malloc(total);
    if (block != nullptr) memset(block, 0, total);
    return block;
  }
  Heap* heap = heap_for_slow_path();
  if (heap == nullptr) return out_of_memory();
  return large_malloc(total, kMinAlignBytes, true);
}

// realloc of a block that default_free's fast path would take (a carved block starting in a
// span's first page, in this thread's own segments, not held by the heap profiler, not free):
// the same checks replace locate(), and a move frees the old block with default_free (which
// checks it again) instead of free_located. nullptr with *handled false for every other
// pointer, which default_realloc validates in full. (churn, where one operation in five is a
// realloc: about 50 instructions less per call that takes this way.)
MAPALLOC_INLINE void* realloc_own_class_block(void* pointer, size_t size, bool* handled) {
  Heap* heap = tls_heap;
  uintptr_t unit = unit_of(pointer);
  *handled = false;
  if (segment_map[unit] != heap->segment_tag) return nullptr;
  Page* page = page_entry_in_unit(unit, pointer);
  uint64_t offset = reinterpret_cast<uintptr_t>(pointer) & (kPageBytes - 1);
  if (offset * page->block_magic >= page->start_limit) return nullptr;
  if (kFreeChecks && block_key(static_cast<Block*>(pointer)) == page->free_key) return nullptr;
  *handled = true;
  size_t usable = page->block_bytes;
  if (realloc_keeps_block(size, usable)) return pointer;
  void* moved = default_malloc(size);  // (ENOMEM above kMaxRequestBytes: large_malloc)
  if (moved == nullptr) return nullptr;
  memcpy(moved, pointer, size < usable ? size : usable);
  default_free(pointer);
  return moved;
}

void* default_realloc(void* pointer, size_t size) {
  bool handled;
  void* resized = realloc_own_class_block(pointer, size, &handled);
  if (MAPALLOC_LIKELY(handled)) return resized;
  BlockRef ref = locate(pointer, "realloc");
  if (size > kMaxRequestBytes) return out_of_memory();
  if (ref.kind == BlockKind::kOwnMapping && size > kClassMaxBytes) {
    prof_before_resize(pointer);
    if (void* resized = large_resize(ref.large, size)) return prof_resized(resized, size);
  } else if (ref.kind == BlockKind::kArena && size > kClassMaxBytes &&
             arena_resize_in_place(pointer, size)) {
    prof_before_resize(pointer);  // (in place: the address stays this block's meanwhile)
    return prof_resized(pointer, size);
  } else if (realloc_keeps_block(size, ref.usable_bytes)) {
    return pointer;
  }
  bool outgrown =
      ref.kind == BlockKind::kArena && size > ref.usable_bytes && size >= kGrowIntoOwnMappingBytes;
  void* moved = outgrown ? large_malloc(size, kMinAlignBytes, false, LargePlace::kOwnMapping)
                         : default_malloc(size);
  if (moved == nullptr) return nullptr;
  memcpy(moved, pointer, size < ref.usable_bytes ? size : ref.usable_bytes);
  free_located(ref, pointer);
  return moved;
}

void* default_aligned_alloc(size_t alignment, size_t size) {
  if (alignment <= kMinAlignBytes) return default_malloc(size);
  if (size > kMaxRequestBytes) return out_of_memory();
  Heap* heap = heap_for_slow_path();
  if (heap == nullptr) return out_of_memory();
  if (alignment <= kPageBytes) {
    // Spans start kPageBytes-aligned, so every block of a class whose size is a multiple of
    // `alignment` is aligned.
    size_t rounded = align_up(size == 0 ? 1 : size, alignment);
    if (rounded <= kClassMaxBytes) {
      unsigned size_class = size_class_of(rounded);
      while (size_class < kClassCount && class_block_bytes(size_class) % alignment != 0) {
        ++size_class;
      }
      if (size_class < kClassCount) {
        return class_alloc_sampled(heap, size_class, size);
      }
    }
  }
  return large_malloc(size, alignment, false);
}

// (For the heap profiler: see prof_hooks.cpp.)
__attribute__((constructor)) static void register_profiler_frames() {
  const uintptr_t starts[] = {reinterpret_cast<uintptr_t>(&class_alloc<false>),
                              reinterpret_cast<uintptr_t>(&class_alloc_profiled),
                              reinterpret_cast<uintptr_t>(&large_malloc)};
  prof_set_entry_points(starts, sizeof starts / sizeof starts[0]);
}

bool owns_impl(const void* pointer) {
  switch (unit_kind(pointer)) {
    case kUnitSegment: {
      Page* entry = page_entry_of(pointer);
      Page* head = entry->state == PageState::kSpanTail ? span_head(entry) : entry;
      if (head->owner == nullptr || !page_is_block_start(head, pointer)) return false;
      // Live unless it carries the free key (exact for the owner; by the key for others).
      auto* block = static_cast<Block*>(const_cast<void*>(pointer));
      if (!kFreeChecks || block_key(block) != head->free_key) return true;
      return !kSecure && head->owner == tls_heap && !heap_block_is_free(head->owner, head, block);
    }
    case kUnitArena:
      return arena_locate(pointer).state == ArenaBlockState::kLive;
    case kUnitLarge:
    case kUnitLargeBelow: {
      LargeHeader* header = large_header_of(pointer, unit_kind(pointer));
      return header != nullptr && header->state == LargeState::kLive;
    }
    default:
      return false;
  }
}

int trim_impl(size_t) {
  if constexpr (kSecure) {
    if (tls_heap != &empty_heap) heap_flush_quarantine(tls_heap);
  }
  return purge_all_now(tls_heap) != 0 ? 1 : 0;
}

}  // namespace mapalloc
