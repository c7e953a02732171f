// The debug build's operations: the default ones (alloc.h), and around them
//   - the fill pattern (core/debug_fill.h): a freed size-class block is filled past its links
//     before it goes back, and checked when it is handed out again: a write after free ends
//     the process with one line naming the block and the offset written;
//   - memcheck's view (platform/memcheck.h): each block handed out is announced as held, each
//     freed one as free. Under Valgrind every request is kRedZoneBytes larger, and the bytes
//     past the requested size stay inaccessible, so that an overflow into the next block is
//     reported; the requested size is kept in the block's last word (inside the red zone) for
//     realloc and malloc_usable_size.
// Outside Valgrind blocks are exactly as in the default build (the unit tests check sizes).
#include "api/debug.h"

#include <string.h>

#include "core/debug_fill.h"
#include "platform/diag.h"

namespace mapalloc {

namespace {

constexpr size_t kRedZoneBytes = 16;

[[noreturn]] MAPALLOC_COLD void report_written_after_free(const void* block, size_t bytes,
                                                          size_t offset) {
  fatal(
      "use after free: block %p (%zu bytes) was written at offset %zu after it was freed (the "
      "fill pattern is damaged)",
      block, bytes, offset);
}

// The last word of a block held under Valgrind: the size the program asked for.
size_t* stashed_size(void* block, size_t usable_bytes) {
  return reinterpret_cast<size_t*>(static_cast<char*>(block) + usable_bytes - sizeof(size_t));
}

size_t read_stashed_size(void* block, size_t usable_bytes) {
  size_t* stash = stashed_size(block, usable_bytes);
  memcheck::open_defined(stash, sizeof(size_t));
  size_t size = *stash;
  memcheck::close(stash, sizeof(size_t));
  return size;
}

// Under Valgrind: `size` the program's now; the rest of the block (and the stash) closed.
void stash_size(void* block, size_t usable_bytes, size_t size) {
  memcheck::close(static_cast<char*>(block) + size, usable_bytes - size);
  size_t* stash = stashed_size(block, usable_bytes);
  memcheck::open_undefined(stash, sizeof(size_t));
  *stash = size;
  memcheck::close(stash, sizeof(size_t));
}

// The size the program may use: what it asked for under Valgrind, else the usable size.
size_t requested_size(void* block, size_t usable_bytes) {
  return memcheck::running() ? read_stashed_size(block, usable_bytes) : usable_bytes;
}

// A block the default operations just handed out for a request of `size` bytes.
void* handed_out(void* block, size_t size, bool valgrind) {
  if (block == nullptr) return nullptr;
  BlockRef ref = locate(block, "malloc");
  if (ref.kind == BlockKind::kClass) {
    size_t damaged = debug_fill_damage(static_cast<Block*>(block), ref.usable_bytes);
    if (damaged != 0) report_written_after_free(block, ref.usable_bytes, damaged);
  }
  if (valgrind) {
    memcheck::malloclike(block, size, false);
    stash_size(block, ref.usable_bytes, size);
  }
  return block;
}

// The request under Valgrind: room for the red zone (nullptr if that overflows).
bool padded(size_t size, bool valgrind, size_t* request) {
  if (!valgrind) {
    *request = size;
    return true;
  }
  return !__builtin_add_overflow(size, kRedZoneBytes, request);
}

}  // namespace

void* debug_malloc(size_t size) {
  bool valgrind = memcheck::running();
  size_t request;
  if (!padded(size, valgrind, &request)) return out_of_memory();
  return handed_out(default_malloc(request), size, valgrind);
}

void debug_free(void* pointer) {
  if (pointer == nullptr) return;
  BlockRef ref = locate(pointer, "free");  // every misuse is reported here, as by default
  memcheck::freelike(pointer);
  if (ref.kind == BlockKind::kClass)
    debug_fill_block(static_cast<Block*>(pointer), ref.usable_bytes);
  // The default free again, so that its fast path is what the debug build exercises.
  default_free(pointer);
}

void debug_free_sized(void* pointer, size_t size, bool exact_class) {
  if (pointer != nullptr && !memcheck::running())
    check_sized_delete(locate(pointer, "sized delete"), pointer, size, exact_class);
  debug_free(pointer);
}

void* debug_calloc(size_t total) {
  void* block = debug_malloc(total);
  if (block != nullptr) memset(block, 0, total);
  return block;
}

void* debug_realloc(void* pointer, size_t size) {
  BlockRef ref = locate(pointer, "realloc");
  if (size > kMaxRequestBytes) return out_of_memory();
  bool valgrind = memcheck::running();
  size_t old_size = requested_size(pointer, ref.usable_bytes);
  size_t request;
  if (!padded(size, valgrind, &request)) return out_of_memory();
  // Large blocks outside Valgrind: the default realloc (in place, or by mremap), which frees no
  // size-class block. Otherwise in place as the default build would (size classes only), else
  // a new block: under Valgrind large blocks always move, which leaves the old one to memcheck
  // as freed.
  if (!valgrind && ref.kind != BlockKind::kClass) return default_realloc(pointer, size);
  if (ref.kind == BlockKind::kClass && realloc_keeps_block(request, ref.usable_bytes)) {
    if (valgrind) {
      memcheck::resize_in_place(pointer, old_size, size);
      stash_size(pointer, ref.usable_bytes, size);
    }
    return pointer;
  }
  void* moved = debug_malloc(size);
  if (moved == nullptr) return nullptr;
  memcpy(moved, pointer, size < old_size ? size : old_size);
  debug_free(pointer);
  return moved;
}

void* debug_aligned_alloc(size_t alignment, size_t size) {
  bool valgrind = memcheck::running();
  size_t request;
  if (!padded(size, valgrind, &request)) return out_of_memory();
  return handed_out(default_aligned_alloc(alignment, request), size, valgrind);
}

size_t debug_usable_size(const void* pointer) {
  BlockRef ref = locate(pointer, "malloc_usable_size");
  return requested_size(const_cast<void*>(pointer), ref.usable_bytes);
}

}  // namespace mapalloc
