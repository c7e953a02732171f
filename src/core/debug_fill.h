// The debug build's fill pattern: every free block of a size class holds kFreeFill in all its
// bytes past the two words the free lists use (Block), from its carving or its free until it is
// handed out again, when the pattern is checked. A write through a dangling pointer into a free
// block is thereby caught at the next malloc of that block (or by the heap validation walk),
// not as a crash somewhere else much later.
#pragma once

#include <string.h>

#include "core/segment.h"

namespace mapalloc {

constexpr unsigned char kFreeFill = 0xdf;
constexpr size_t kFillStart = sizeof(Block);  // the links and the free key come first

// Fills the free block's bytes past its links (debug build; memcheck-closed afterwards).
inline void debug_fill_block(Block* block, size_t block_bytes) {
  if constexpr (kDebug) {
    if (block_bytes <= kFillStart) return;
    char* body = reinterpret_cast<char*>(block) + kFillStart;
    memcheck::open_undefined(body, block_bytes - kFillStart);
    memset(body, kFreeFill, block_bytes - kFillStart);
    memcheck::close(body, block_bytes - kFillStart);
  }
}

// The offset of the first byte of a free block past its links that lost the pattern, or 0 if
// it is intact.
inline size_t debug_fill_damage(const Block* block, size_t block_bytes) {
  if constexpr (kDebug) {
    if (block_bytes <= kFillStart) return 0;
    const unsigned char* body = reinterpret_cast<const unsigned char*>(block) + kFillStart;
    size_t bytes = block_bytes - kFillStart;
    memcheck::open_defined(body, bytes);
    size_t damaged = 0;
    // Word at a time, then the bytes of the word that differs.
    uint64_t pattern;
    memset(&pattern, kFreeFill, sizeof(pattern));
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
      uint64_t word;
      memcpy(&word, body + i, sizeof(word));
      if (word != pattern) break;
    }
    for (; i < bytes; ++i) {
      if (body[i] != kFreeFill) {
        damaged = kFillStart + i;
        break;
      }
    }
    memcheck::close(body, bytes);
    return damaged;
  }
  (void)block, (void)block_bytes;
  return 0;
}

}  // namespace mapalloc
