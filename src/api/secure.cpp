// The secure build's allocation API (compiled into libmapalloc-secure; the default build never
// calls it). On top of the default build's checks:
//   - a trailer in every block: the requested size (encoded) in the block's last 8 bytes and an
//     8-byte canary right after the requested bytes, checked on free, realloc and
//     malloc_usable_size (a one-byte overflow is caught);
//   - the allocating operator (malloc, new or new[]) in the size field's top byte, checked at
//     operator delete, and the sized deletes' size checked against the requested size;
//   - a free checks the size field of the block before the freed one: a heap underflow that
//     reaches it is caught (blocks of 32 bytes to 64 KiB that are not first in their span);
//   - blocks of 0 bytes point into a reserved inaccessible region (any access faults);
//   - a quarantine: freed blocks up to 4 KiB wait in a random slot of the freeing thread's
//     ring before they can be reused, and a write into their first 16 bytes meanwhile is
//     reported when they leave it;
//   - optional zeroing on free (MAPALLOC_ZERO_ON_FREE=1).
// Encoded free lists, guard pages and randomised carving live in the lower layers (kSecure).
#include <errno.h>
#include <string.h>

#include "api/secure.h"

#include "api/init.h"
#include "api/prof_hooks.h"
#include "platform/diag.h"
#include "platform/options.h"

namespace mapalloc {

namespace {

// Encoded size (8 bytes) plus an 8-byte canary after every block.
constexpr size_t kTrailerBytes = 16;
static_assert(!kSecure || kTrailerBytes == kSecureTrailerBytes);

// options().zero_on_free, read on the first free (the fast path should not call out for it).
// The fast path tests only for kZeroOff: the other two states take an out-of-line path, so
// that it saves no registers for a call it almost never makes.
enum class ZeroOnFree : uint8_t { kUnread, kOff, kOn };
ZeroOnFree zero_on_free = ZeroOnFree::kUnread;

// Whether zeroing on free is on (the option, read on first use).
bool zeroing_on_free() {
  if (zero_on_free == ZeroOnFree::kUnread)
    zero_on_free = options().zero_on_free ? ZeroOnFree::kOn : ZeroOnFree::kOff;
  return zero_on_free == ZeroOnFree::kOn;
}

// Blocks bigger than this skip the quarantine: each waiting block keeps its whole span in use.
constexpr size_t kQuarantineMaxBlockBytes = 4 * kKiB;

uint64_t size_mask(const void* block) { return block_link_mask(static_cast<const Block*>(block)); }
// The canary's first byte (the one right after the requested bytes) is never zero, so the
// commonest overflow, a string's terminating NUL written one past the end, is always caught;
// any other single byte goes unnoticed with probability 1/255.
uint64_t canary_of(const void* block) {
  uint64_t canary = size_mask(block) * 0xff51afd7ed558ccdull;
  return (canary & 0xff) == 0 ? canary | 0x5a : canary;
}

// The size field: the requested size, the allocating operator in the top byte.
constexpr unsigned kKindShift = 56;
constexpr uint64_t kSizeBits = (uint64_t{1} << kKindShift) - 1;

void write_trailer(void* block, size_t total, size_t size, AllocKind kind = AllocKind::kMalloc) {
  auto* bytes = static_cast<uint8_t*>(block);
  uint64_t encoded = (size | uint64_t{static_cast<uint8_t>(kind)} << kKindShift) ^ size_mask(block);
  uint64_t canary = canary_of(block);
  memcpy(bytes + total - 8, &encoded, 8);
  memcpy(bytes + size, &canary, 8);  // total >= size + 16: the two never overlap
}

[[noreturn]] MAPALLOC_COLD void report_overflow(const void* block, uint64_t size, uint64_t canary,
                                                uint64_t expected, const char* operation) {
  size_t first = 0;
  while (((canary ^ expected) >> (8 * first) & 0xff) == 0) ++first;
  fatal("%s of %p: heap overflow detected %zu bytes past the %zu-byte block", operation, block,
        first, static_cast<size_t>(size));
}

const char* kind_name(unsigned kind) {
  return kind == 1 ? "operator new" : kind == 2 ? "operator new[]" : "malloc";
}

[[noreturn]] MAPALLOC_COLD void report_delete(const void* block, uint64_t size, unsigned kind,
                                              size_t expected_size, AllocKind expected_kind) {
  if (expected_size != kAnySize && expected_size != size) {
    fatal("sized delete of %p: wrong size %zu for a block of %zu bytes (allocated by %s)", block,
          expected_size, static_cast<size_t>(size), kind_name(kind));
  }
  fatal("%s of %p: the %zu-byte block was allocated by %s (new/delete mismatch)",
        expected_kind == AllocKind::kNewArray ? "operator delete[]" : "operator delete", block,
        static_cast<size_t>(size), kind_name(kind));
}

// The requested size, after checking the trailer; an overwritten one ends the program. Also
// checks operator delete's size (unless kAnySize) and kind (kMalloc: any).
MAPALLOC_INLINE size_t check_trailer(const void* block, size_t total, const char* operation,
                                     size_t expected_size = kAnySize,
                                     AllocKind expected_kind = AllocKind::kMalloc) {
  const auto* bytes = static_cast<const uint8_t*>(block);
  uint64_t encoded;
  memcpy(&encoded, bytes + total - 8, 8);
  uint64_t word = encoded ^ size_mask(block);
  uint64_t size = word & kSizeBits;
  unsigned kind = static_cast<unsigned>(word >> kKindShift);
  if (MAPALLOC_UNLIKELY(size > total - kTrailerBytes || kind > 2)) {
    fatal("%s of %p: heap overflow detected (the block's size field was overwritten)", operation,
          block);
  }
  uint64_t canary;
  memcpy(&canary, bytes + size, 8);
  uint64_t expected = canary_of(block);
  if (MAPALLOC_UNLIKELY(canary != expected))
    report_overflow(block, size, canary, expected, operation);
  if (expected_size != kAnySize && MAPALLOC_UNLIKELY(expected_size != size))
    report_delete(block, size, kind, expected_size, expected_kind);
  if (expected_kind != AllocKind::kMalloc && kind != 0 &&
      MAPALLOC_UNLIKELY(kind != static_cast<unsigned>(expected_kind)))
    report_delete(block, size, kind, kAnySize, expected_kind);
  return size;
}

[[noreturn]] MAPALLOC_NOINLINE MAPALLOC_COLD void report_underflow(const void* block,
                                                                   size_t total) {
  fatal(
      "free of %p: heap underflow detected (the size field of the %zu-byte block before it, %p, "
      "was overwritten)",
      block, total, static_cast<const char*>(block) - total);
}

// The block before `block` (of `total` bytes): its size word must be a trailer's (or
// kCarvedTrailerWord, which reads as one). A one-byte underflow changes the word's top byte,
// the allocating operator. (Skipped for blocks at the start of a page: a span's first block
// has none before it.)
MAPALLOC_INLINE void check_previous(Block* block, size_t total) {
  if (total >= kSecureProtectMinBytes || total <= 16) return;  // (those carry no such word)
  auto* bytes = reinterpret_cast<char*>(block);
  if ((reinterpret_cast<uintptr_t>(bytes) & (kPageBytes - 1)) == 0) return;
  auto* previous = reinterpret_cast<Block*>(bytes - total);
  uint64_t encoded;
  memcpy(&encoded, bytes - 8, 8);
  uint64_t word = encoded ^ size_mask(previous);
  static_assert((kCarvedTrailerWord & kSizeBits) == 0 && kCarvedTrailerWord >> kKindShift == 0);
  uint64_t size = word & kSizeBits;
  if (MAPALLOC_UNLIKELY(size > total - kTrailerBytes || (word >> kKindShift) > 2))
    report_underflow(block, total);
  // (Its canary is checked when it is freed: an underflow of up to 8 bytes always reaches the
  // size field first.)
}

// Blocks of 0 bytes: distinct addresses 16 bytes apart in a reserved, inaccessible region
// (reused after kZeroRegionBytes / 16 of them).
constexpr size_t kZeroRegionBytes = 64 * kMiB;
std::atomic<char*> zero_region{nullptr};
std::atomic<size_t> zero_next{0};

void* zero_block() {
  char* region = zero_region.load(std::memory_order_acquire);
  if (region == nullptr) {
    auto* fresh = static_cast<char*>(os_reserve_aligned(kZeroRegionBytes, kOsPageBytes));
    if (fresh == nullptr) return nullptr;
    if (zero_region.compare_exchange_strong(region, fresh, std::memory_order_acq_rel)) {
      region = fresh;
    } else {
      os_unmap(fresh, kZeroRegionBytes);
    }
  }
  size_t index = zero_next.fetch_add(1, std::memory_order_relaxed) % (kZeroRegionBytes / 16);
  return region + index * 16;
}

// The bytes a just-allocated block can hold (no validation needed).
size_t new_block_total_bytes(const void* block) {
  unsigned kind = unit_kind(block);
  if (kind == kUnitSegment) return span_head(page_entry_of(block))->block_bytes;
  return large_usable_bytes(large_header_of(block, kind));
}

void* secure_allocate(size_t size, size_t alignment, bool zero,
                      AllocKind kind = AllocKind::kMalloc) {
  if (size == 0 && alignment <= kMinAlignBytes) {
    // (Set up as any first allocation is: the fault report among it.)
    if (tls_heap == &empty_heap && thread_init() == nullptr) return out_of_memory();
    if (void* block = zero_block()) return block;
  }
  size_t inner;
  if (size > kMaxRequestBytes || __builtin_add_overflow(size, kTrailerBytes, &inner)) {
    return out_of_memory();
  }
  void* block = default_aligned_alloc(alignment, inner);
  if (block == nullptr) return nullptr;
  write_trailer(block, new_block_total_bytes(block), size, kind);
  if (zero) memset(block, 0, size);
  return block;
}

// The slot a freed block waits in: the top bits of the heap's linear congruential sequence
// (seeded when the heap is made, heap_create), a multiply and an add where xorshift took six
// operations and a test for a sequence not started.
constexpr unsigned kQuarantineSlotBits = 8;
static_assert(!kSecure || Heap::kQuarantineSlots == 1u << kQuarantineSlotBits);
MAPALLOC_INLINE unsigned next_quarantine_slot(Heap* heap) {
  heap->quarantine_random =
      heap->quarantine_random * 6364136223846793005ull + 1442695040888963407ull;
  return static_cast<unsigned>(heap->quarantine_random >> (64 - kQuarantineSlotBits));
}

// secure_malloc of `size` bytes (1 to kSmallMaxBytes - kTrailerBytes) when the class's list is
// empty: the default slow path, then the trailer.
MAPALLOC_NOINLINE void* small_malloc_slow(Heap* heap, size_t size, AllocKind kind) {
  size_t inner = size + kTrailerBytes;
  void* block = malloc_slow(inner, heap);
  if (block == nullptr) return nullptr;
  write_trailer(block, kClassBlockBytes.bytes[size_class_of(inner)], size, kind);
  return block;
}

// Frees a block evicted from the quarantine: at most 4 KiB, so its span is one page and its
// page record is page_entry_of's; this thread's own blocks take the default fast path's push.
MAPALLOC_INLINE void free_evicted(Heap* heap, Block* block) {
  Page* page = page_entry_of(block);
  quarantine_check(block, page);
  if (page->owner != heap) return heap_free_any(heap, block);
  set_block_next(block, page->local_free);
  page->local_free = block;
  if (MAPALLOC_UNLIKELY(--page->countdown == 0)) heap_page_countdown_zero(heap, page);
}

// A checked block of `total` bytes: held in quarantine, or freed.
MAPALLOC_INLINE void quarantine_or_free(Heap* heap, Page* page, Block* block, size_t total) {
  // (A thread without a heap frees remotely: no page is ever owned by empty_heap.)
  if (heap == &empty_heap) return heap_free_any(heap, block);
  if (total >= kSecureProtectMinBytes) {
    // Marked free, then inaccessible until kProtectedSlots later such frees: a use after free
    // faults (and is reported, os_report_faults), a double free too. Within the guard budget
    // (os.h); beyond it the block is freed at once, as it is when the kernel refuses.
    block->free_key = page->free_key;
    if (!os_guard_within_budget(block, total)) return heap_free_any(heap, block);
    Block*& slot = heap->protected_quarantine[heap->protected_next];
    heap->protected_next = (heap->protected_next + 1) % Heap::kProtectedSlots;
    Block* evicted = slot;
    slot = block;
    if (evicted != nullptr) heap_free_protected(heap, evicted);
    return;
  }
  if (total > kQuarantineMaxBlockBytes) return heap_free_any(heap, block);
  // Marked free now (a second free is caught at once); it waits in a random slot.
  quarantine_mark(block, page);
  Block*& slot = heap->quarantine[next_quarantine_slot(heap)];
  Block* evicted = slot;
  slot = block;
  if (evicted != nullptr) free_evicted(heap, evicted);
}

// release() when zeroing on free is on, or not read yet.
MAPALLOC_NOINLINE void release_zeroing(Heap* heap, Page* page, Block* block, size_t total,
                                       size_t expected_size, AllocKind kind) {
  bool zeroing = zeroing_on_free();
  size_t size = check_trailer(block, total, "free", expected_size, kind);
  if (zeroing) memset(block, 0, size);
  quarantine_or_free(heap, page, block, total);
}

// A block that passed validation: checked, optionally zeroed, then held in quarantine or freed.
MAPALLOC_INLINE void release(Heap* heap, Page* page, Block* block, size_t total,
                             size_t expected_size, AllocKind kind) {
  check_previous(block, total);
  if (MAPALLOC_UNLIKELY(zero_on_free != ZeroOnFree::kOff))
    return release_zeroing(heap, page, block, total, expected_size, kind);
  check_trailer(block, total, "free", expected_size, kind);
  quarantine_or_free(heap, page, block, total);
}

// secure_free for everything but this thread's own small blocks: null, other threads' blocks,
// large blocks, and pointers that are not blocks (reported).
MAPALLOC_NOINLINE void free_elsewhere(Heap* heap, void* pointer, size_t expected_size,
                                      AllocKind kind) {
  if (pointer == nullptr || secure_is_zero_block(pointer)) return;
  // A block in this thread's protected quarantine is inaccessible: its free key cannot be read.
  for (Block* waiting : heap->protected_quarantine) {
    if (MAPALLOC_UNLIKELY(waiting == pointer && waiting != nullptr)) {
      Page* entry = page_entry_of(pointer);
      Page* head = entry->state == PageState::kSpanTail ? span_head(entry) : entry;
      fatal("double free of %p (size class, %zu bytes)", pointer, size_t{head->block_bytes});
    }
  }
  BlockRef ref = locate(pointer, "free");
  if (ref.large != nullptr) {
    check_trailer(pointer, ref.usable_bytes, "free", expected_size, kind);
    return free_located(ref, pointer);
  }
  prof_note_class_free(heap, ref.page, static_cast<Block*>(pointer));
  release(heap, ref.page, static_cast<Block*>(pointer), ref.usable_bytes, expected_size, kind);
}

// free and operator delete: the default fast path's checks first (segment of this heap, block
// start, not yet free).
MAPALLOC_INLINE void free_checked(void* pointer, size_t expected_size, AllocKind kind) {
  Heap* heap = tls_heap;
  uintptr_t unit = unit_of(pointer);
  if (MAPALLOC_LIKELY(segment_map[unit] == heap->segment_tag)) {
    Page* page = page_entry_in_unit(unit, pointer);
    auto* block = static_cast<Block*>(pointer);
    uint64_t offset = reinterpret_cast<uintptr_t>(pointer) & (kPageBytes - 1);
    // (Blocks that may wait inaccessible in the protected quarantine go the slow way.)
    if (MAPALLOC_LIKELY(offset * page->block_magic < page->start_limit &&
                        page->block_bytes < kSecureProtectMinBytes &&
                        block->free_key != page->free_key)) {
      return release(heap, page, block, page->block_bytes, expected_size, kind);
    }
  }
  free_elsewhere(heap, pointer, expected_size, kind);
}

// secure_realloc's resize of a block of `total` bytes from `old_size` to `size` bytes within it.
// Growing, the old canary becomes the block's bytes: cleared, since it is derived from the
// block's link mask. Shrinking, the bytes given up are cleared when zeroing on free is on, as
// a free would have cleared them.
void resize_in_place(uint8_t* block, size_t total, size_t old_size, size_t size) {
  if (size > old_size)
    memset(block + old_size, 0, size - old_size < 8 ? size - old_size : 8);
  else if (zeroing_on_free())
    memset(block + size, 0, old_size - size);
  write_trailer(block, total, size);
}

}  // namespace

void* secure_malloc(size_t size, AllocKind kind) {
  // Small sizes: the default fast path's pop, the block size straight from the class table (0:
  // a block of the zero region, by secure_allocate). The slow path is a call of its own, so
  // that this one saves no registers.
  if (MAPALLOC_LIKELY(size - 1 < kSmallMaxBytes - kTrailerBytes)) {
    Heap* heap = tls_heap;
    unsigned size_class = small_class_of(heap, size + kTrailerBytes);
    Block* block = pop_free_block(heap, size_class);
    if (MAPALLOC_UNLIKELY(block == nullptr)) return small_malloc_slow(heap, size, kind);
    write_trailer(block, kClassBlockBytes.bytes[size_class], size, kind);
    return block;
  }
  return secure_allocate(size, kMinAlignBytes, false, kind);
}

void* secure_calloc(size_t total) { return secure_allocate(total, kMinAlignBytes, true); }

void* secure_aligned_alloc(size_t alignment, size_t size, AllocKind kind) {
  return secure_allocate(size, alignment, false, kind);
}

void secure_free(void* pointer) { free_checked(pointer, kAnySize, AllocKind::kMalloc); }

void secure_delete(void* pointer, size_t size, AllocKind kind) {
  free_checked(pointer, size, kind);
}

bool secure_is_zero_block(const void* pointer) {
  const char* region = zero_region.load(std::memory_order_relaxed);
  const auto* at = static_cast<const char*>(pointer);
  return region != nullptr && at >= region && at < region + kZeroRegionBytes;
}

void* secure_realloc(void* pointer, size_t size) {
  if (secure_is_zero_block(pointer)) return secure_allocate(size, kMinAlignBytes, false);
  BlockRef ref = locate(pointer, "realloc");
  size_t old_size = check_trailer(pointer, ref.usable_bytes, "realloc");
  // A size-class block resizes in place as the default build's would, counting its trailer:
  // the canary moves to the new end, the size word is rewritten. (Large blocks move: a fresh
  // mapping puts the guard page after the new end, and the heap profiler's sample of the block
  // goes with the free.)
  size_t inner = size + kTrailerBytes;
  if (ref.kind == BlockKind::kClass && inner > size &&
      realloc_keeps_block(inner, ref.usable_bytes)) {
    resize_in_place(static_cast<uint8_t*>(pointer), ref.usable_bytes, old_size, size);
    return pointer;
  }
  void* moved = secure_allocate(size, kMinAlignBytes, false);
  if (moved == nullptr) return nullptr;
  memcpy(moved, pointer, old_size < size ? old_size : size);
  secure_free(pointer);
  return moved;
}

size_t secure_usable_size(const void* pointer) {
  if (secure_is_zero_block(pointer)) return 0;
  BlockRef ref = locate(pointer, "malloc_usable_size");
  return check_trailer(pointer, ref.usable_bytes, "malloc_usable_size");
}

}  // namespace mapalloc
