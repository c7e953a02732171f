// The secure build's allocation API (compiled into libmapalloc-secure; the default build never
// calls it). On top of the default build's checks:
//   - a trailer after every block: the requested size (encoded) in the last 8 bytes of the
//     block and a canary in the bytes right after the requested size, checked on free,
//     realloc and malloc_usable_size (a one-byte overflow is caught);
//   - a quarantine: freed blocks wait in a random slot of the freeing thread's ring before
//     they can be reused;
//   - optional zeroing on free (MAPALLOC_ZERO_ON_FREE=1).
// Encoded free lists, guard pages and randomised carving live in the lower layers (kSecure).
#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "diag.h"
#include "options.h"

namespace mapalloc {

namespace {

// Encoded size (8 bytes) plus at least 8 canary bytes after every block.
constexpr size_t kTrailerBytes = 16;
constexpr size_t kCanaryCheckBytes = 16;  // canary bytes written and checked, at most

uint64_t size_mask(const void* block) { return block_link_mask(static_cast<const Block*>(block)); }

uint8_t canary_byte(const void* block, size_t offset) {
  uint64_t mixed = size_mask(block) * 0xff51afd7ed558ccdull;
  return static_cast<uint8_t>(mixed >> ((offset & 7) * 8)) ^ static_cast<uint8_t>(offset);
}

// The bytes a block can hold, its trailer included.
size_t block_total_bytes(const BlockRef& ref) { return ref.usable_bytes; }

// The same for a block just allocated (no validation needed).
size_t new_block_total_bytes(const void* block) {
  unsigned kind = unit_kind(block);
  if (kind == kUnitSegment) return span_head(page_entry_of(block))->block_bytes;
  return large_usable_bytes(large_header_of(block, kind));
}

void write_trailer(void* block, size_t total, size_t size) {
  auto* bytes = static_cast<uint8_t*>(block);
  uint64_t encoded = size ^ size_mask(block);
  memcpy(bytes + total - 8, &encoded, 8);
  size_t canary_end = total - 8 < size + kCanaryCheckBytes ? total - 8 : size + kCanaryCheckBytes;
  for (size_t i = size; i < canary_end; ++i) bytes[i] = canary_byte(block, i);
}

// The requested size, after checking the trailer; an overwritten one ends the program.
size_t check_trailer(const void* block, size_t total, const char* operation) {
  const auto* bytes = static_cast<const uint8_t*>(block);
  uint64_t encoded;
  memcpy(&encoded, bytes + total - 8, 8);
  uint64_t size = encoded ^ size_mask(block);
  if (size > total - kTrailerBytes) {
    fatal("%s of %p: heap overflow detected (the block's size field was overwritten)", operation,
          block);
  }
  size_t canary_end = total - 8 < size + kCanaryCheckBytes ? total - 8 : size + kCanaryCheckBytes;
  for (size_t i = size; i < canary_end; ++i) {
    if (bytes[i] != canary_byte(block, i)) {
      fatal("%s of %p: heap overflow detected %zu bytes past the %zu-byte block", operation, block,
            i - size, static_cast<size_t>(size));
    }
  }
  return size;
}

void* out_of_memory() {
  errno = ENOMEM;
  return nullptr;
}

void* secure_allocate(size_t size, size_t alignment, bool zero) {
  size_t inner;
  if (size > kMaxRequestBytes || __builtin_add_overflow(size, kTrailerBytes, &inner)) {
    return out_of_memory();
  }
  void* block = default_aligned_alloc(alignment, inner);
  if (block == nullptr) return nullptr;
  write_trailer(block, new_block_total_bytes(block), size);
  if (zero) memset(block, 0, size);
  return block;
}

uint64_t next_random(Heap* heap) {
  uint64_t x = heap->quarantine_random;
  if (x == 0) x = os_random_seed() | 1;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  heap->quarantine_random = x;
  return x;
}

// Blocks bigger than this skip the quarantine: each waiting block keeps its whole span in use.
constexpr size_t kQuarantineMaxBlockBytes = 4 * kKiB;

}  // namespace

void* secure_malloc(size_t size) { return secure_allocate(size, kMinAlignBytes, false); }
void* secure_calloc(size_t total) { return secure_allocate(total, kMinAlignBytes, true); }
void* secure_aligned_alloc(size_t alignment, size_t size) {
  return secure_allocate(size, alignment, false);
}

void secure_free(void* pointer) {
  if (pointer == nullptr) return;
  BlockRef ref = locate(pointer, "free");
  size_t size = check_trailer(pointer, block_total_bytes(ref), "free");
  if (options().zero_on_free) memset(pointer, 0, size);
  Heap* heap = tls_heap;
  if (ref.large != nullptr || heap == &empty_heap || ref.usable_bytes > kQuarantineMaxBlockBytes) {
    return free_located(ref, pointer);
  }
  // Mark it free now (a second free is caught at once), and let it wait in a random slot.
  auto* block = static_cast<Block*>(pointer);
  block->free_key = ref.page->free_key;
  Block*& slot = heap->quarantine[next_random(heap) % Heap::kQuarantineSlots];
  Block* evicted = slot;
  slot = block;
  if (evicted != nullptr) heap_free_any(heap, evicted);
}

void* secure_realloc(void* pointer, size_t size) {
  BlockRef ref = locate(pointer, "realloc");
  size_t old_size = check_trailer(pointer, block_total_bytes(ref), "realloc");
  void* moved = secure_allocate(size, kMinAlignBytes, false);
  if (moved == nullptr) return nullptr;
  memcpy(moved, pointer, old_size < size ? old_size : size);
  secure_free(pointer);
  return moved;
}

size_t secure_usable_size(const void* pointer) {
  BlockRef ref = locate(pointer, "malloc_usable_size");
  return check_trailer(pointer, block_total_bytes(ref), "malloc_usable_size");
}

}  // namespace mapalloc
