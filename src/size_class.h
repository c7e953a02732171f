// Size classes, computed at compile time.
//
//   classes 0..63   : 16, 32, 48, ..., 1024 bytes (16 apart: the fast path indexes them as
//                     (size-1)/16 with no table)
//   classes 64..107 : four per power of two, 1280 bytes .. 2 MiB (a request wastes at most 25%
//                     of itself, 1/5 of the block)
//
// Every power of two from 16 to 256 KiB is a class, and blocks of a power-of-two class are
// aligned to their size (spans start kPageBytes-aligned), which is how aligned allocation up to
// kPageBytes is served from the arenas.
#pragma once

#include "config.h"

namespace mapalloc {

constexpr unsigned kSmallClassCount = kSmallMaxBytes / kMinAlignBytes;  // 64
constexpr unsigned kClassesPerDoubling = 4;
constexpr unsigned kClassCount = kSmallClassCount + kClassesPerDoubling * 10;  // up to 1 MiB

constexpr size_t class_block_bytes(unsigned size_class) {
  if (size_class < kSmallClassCount) return (size_class + 1) * kMinAlignBytes;
  unsigned group = (size_class - kSmallClassCount) / kClassesPerDoubling;
  unsigned step = (size_class - kSmallClassCount) % kClassesPerDoubling;
  return size_t{kClassesPerDoubling + 1 + step} << (group + 8);
}

static_assert(class_block_bytes(kSmallClassCount - 1) == kSmallMaxBytes);
static_assert(class_block_bytes(kClassCount - 1) == kArenaMaxBytes);

// The smallest class whose blocks hold `size` bytes; `size` must be 1..kArenaMaxBytes.
constexpr unsigned size_class_of(size_t size) {
  size_t last_byte = size - 1;
  if (last_byte < kSmallMaxBytes) return static_cast<unsigned>(last_byte / kMinAlignBytes);
  unsigned top_bit = 63u - static_cast<unsigned>(__builtin_clzll(last_byte));  // >= 10
  unsigned step = static_cast<unsigned>(last_byte >> (top_bit - 2)) & 3u;
  return kSmallClassCount + (top_bit - 10) * kClassesPerDoubling + step;
}

// Pages in one span of a class: small classes use one 64 KiB page; bigger blocks use enough
// pages for a handful of blocks (down to one block of the biggest classes), choosing the page
// count that wastes the least of the span.
constexpr unsigned class_span_pages(unsigned size_class) {
  size_t block = class_block_bytes(size_class);
  size_t min_blocks = block <= 16 * kKiB ? 8 : block <= 128 * kKiB ? 4 : block < 256 * kKiB ? 2 : 1;
  size_t pages = (block * min_blocks + kPageBytes - 1) / kPageBytes;
  size_t best_pages = pages;
  size_t best_waste_permille = 1000;
  for (size_t candidate = pages; candidate < pages + 4; ++candidate) {
    size_t span = candidate * kPageBytes;
    size_t waste_permille = (span % block) * 1000 / span;
    if (waste_permille < best_waste_permille) {
      best_waste_permille = waste_permille;
      best_pages = candidate;
    }
  }
  return static_cast<unsigned>(best_pages);
}

constexpr unsigned class_capacity(unsigned size_class) {
  return static_cast<unsigned>(class_span_pages(size_class) * kPageBytes /
                               class_block_bytes(size_class));
}

// Block-start test in one multiply and one compare (a variant of Lemire's divisibility test).
// With M = floor(2^64 / B) + 1 and e = B * M mod 2^64 (1 <= e <= B):
//   offset = k * B      gives offset * M mod 2^64 = k * e       (small, growing with k)
//   offset = k * B + r  gives offset * M mod 2^64 >= M           (0 < r < B; huge)
// so "offset * M < carved * e" holds exactly for the starts of the first `carved` blocks.
// (Valid while carved * B stays far below M, i.e. for spans of a few MiB.)
constexpr uint64_t block_start_magic(size_t block_bytes) {
  bool power_of_two = (block_bytes & (block_bytes - 1)) == 0;
  return ~uint64_t{0} / block_bytes + 1 + (power_of_two ? 1 : 0);
}
constexpr uint64_t block_start_step(size_t block_bytes) {
  return static_cast<uint64_t>(block_bytes) * block_start_magic(block_bytes);  // mod 2^64
}

// Compile-time checks of the tables.
constexpr bool classes_are_consistent() {
  for (unsigned c = 0; c < kClassCount; ++c) {
    size_t block = class_block_bytes(c);
    if (block % kMinAlignBytes != 0) return false;
    if (size_class_of(block) != c) return false;  // exact fit maps to itself
    if (c > 0 && size_class_of(class_block_bytes(c - 1) + 1) != c) return false;  // next up
    if (class_span_pages(c) > kPagesPerSegment - kFirstUsablePage) return false;
    if (class_capacity(c) < 1 || class_capacity(c) > 65535) return false;
  }
  return true;
}
static_assert(classes_are_consistent());

}  // namespace mapalloc
