// Size classes, computed at compile time.
//
//   classes 0..15   : 16, 32, 48, ..., 256 bytes (16 apart)
//   classes 16..31  : eight per power of two, 288 bytes .. 1 KiB (32, then 64 apart)
//   classes 32..    : four per power of two, 1280 bytes .. kClassMaxBytes (128 KiB; 1 MiB in
//                     the secure build)
// A request up to 1 KiB wastes at most 1/8 of itself (glibc's chunks waste 8-23 bytes); above,
// at most 25%. Interpreters' hot objects sit in the fine range (jq's 272- and 392-byte objects,
// which four classes per doubling rounded to 320 and 448: 7 % more peak RSS than glibc).
//
// Few classes matter as much as little waste: every class in use holds at least one partly
// filled page per thread. Every power of two from 16 bytes to kClassMaxBytes is a class, and
// blocks of a power-of-two class are aligned to their size (spans start kPageBytes-aligned),
// which is how aligned allocation up to kPageBytes is served from size classes.
#pragma once

#include "platform/config.h"

namespace mapalloc {

// 16-byte steps to 512 bytes: objects of a few hundred bytes are common (jq's 272- and 392-byte
// values), and 32-byte steps there cost up to 1/9 of every such block.
constexpr unsigned kExactClassShift = 9;  // 16 .. 512 (2^9) bytes
constexpr size_t kExactClassMaxBytes = size_t{1} << kExactClassShift;
constexpr unsigned kExactClassCount = kExactClassMaxBytes / kMinAlignBytes;
constexpr unsigned kFineClassesPerDoubling = 8;  // 512 bytes .. 1 KiB (2^10)
constexpr unsigned kFineClassEnd =
    kExactClassCount + (10 - kExactClassShift) * kFineClassesPerDoubling;
constexpr size_t kFineClassMaxBytes = 1024;
constexpr unsigned kClassesPerDoubling = 4;  // 1 KiB .. kClassMaxBytes
constexpr unsigned kClassCount =
    kFineClassEnd + kClassesPerDoubling * (__builtin_ctzll(kClassMaxBytes) - 10);

constexpr size_t class_block_bytes(unsigned size_class) {
  if (size_class < kExactClassCount) return (size_class + 1) * kMinAlignBytes;
  if (size_class < kFineClassEnd) {
    unsigned group = (size_class - kExactClassCount) / kFineClassesPerDoubling;
    unsigned step = (size_class - kExactClassCount) % kFineClassesPerDoubling;
    return size_t{kFineClassesPerDoubling + 1 + step} << (group + kExactClassShift - 3);
  }
  unsigned group = (size_class - kFineClassEnd) / kClassesPerDoubling;
  unsigned step = (size_class - kFineClassEnd) % kClassesPerDoubling;
  return size_t{kClassesPerDoubling + 1 + step} << (group + 8);
}

static_assert(class_block_bytes(kExactClassCount - 1) == kExactClassMaxBytes);
static_assert(class_block_bytes(kFineClassEnd - 1) == kFineClassMaxBytes);
static_assert(class_block_bytes(kClassCount - 1) == kClassMaxBytes);

// class_block_bytes as a table, for paths that look it up at run time (one load instead of
// shifts and adds).
struct ClassBlockBytesTable {
  uint32_t bytes[kClassCount];
};
constexpr ClassBlockBytesTable make_class_block_bytes_table() {
  ClassBlockBytesTable table{};
  for (unsigned c = 0; c < kClassCount; ++c)
    table.bytes[c] = static_cast<uint32_t>(class_block_bytes(c));
  return table;
}
constexpr ClassBlockBytesTable kClassBlockBytes = make_class_block_bytes_table();

// The smallest class whose blocks hold `size` bytes; `size` must be 1..kClassMaxBytes.
constexpr unsigned size_class_of(size_t size) {
  size_t last_byte = size - 1;
  if (last_byte < kExactClassMaxBytes) return static_cast<unsigned>(last_byte / kMinAlignBytes);
  unsigned top_bit = 63u - static_cast<unsigned>(__builtin_clzll(last_byte));  // >= 9
  if (last_byte < kFineClassMaxBytes) {
    unsigned step = static_cast<unsigned>(last_byte >> (top_bit - 3)) & 7u;
    return kExactClassCount + (top_bit - kExactClassShift) * kFineClassesPerDoubling + step;
  }
  unsigned step = static_cast<unsigned>(last_byte >> (top_bit - 2)) & 3u;
  return kFineClassEnd + (top_bit - 10) * kClassesPerDoubling + step;
}

// The fast path's size-to-class table for sizes 0..kSmallMaxBytes, indexed by
// (size + 15) / 16 (size 0 shares the 16-byte class). Each heap carries a copy, so that the
// lookup is one load relative to the heap pointer already in a register.
constexpr unsigned kSmallGranules = kSmallMaxBytes / kMinAlignBytes + 1;
struct SmallClassTable {
  uint8_t class_of[kSmallGranules];
};
constexpr SmallClassTable make_small_class_table() {
  SmallClassTable table{};
  for (unsigned granule = 0; granule < kSmallGranules; ++granule) {
    table.class_of[granule] =
        static_cast<uint8_t>(size_class_of(granule == 0 ? 1 : granule * kMinAlignBytes));
  }
  return table;
}
constexpr SmallClassTable kSmallClassTable = make_small_class_table();

// Pages in one span of a class: the fewest that hold a handful of blocks (one block of the
// biggest classes) while wasting less than 1/16 of the span. Small classes get one 64 KiB page,
// which keeps all their frees on the fast path (it handles a span's first page only).
constexpr unsigned class_span_pages(unsigned size_class) {
  size_t block = class_block_bytes(size_class);
  size_t min_blocks = block <= 16 * kKiB ? 8 : block <= 128 * kKiB ? 4 : block < 256 * kKiB ? 2 : 1;
  size_t pages = (block * min_blocks + kPageBytes - 1) / kPageBytes;
  while ((pages * kPageBytes % block) * 16 > pages * kPageBytes) ++pages;
  return static_cast<unsigned>(pages);
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
// The same M gives the block index of an offset without a division: M = 2^64 / B + d with
// 0 < d <= 2, so offset * M / 2^64 = offset / B + offset * d / 2^64, whose second term stays
// below 1 / B (which the fraction of offset / B never reaches up to) while offset < 2^63 / B:
// the high half of the product is floor(offset / B) in any span.
constexpr uint64_t block_index_of(uint64_t offset, uint64_t block_magic) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(offset) * block_magic) >> 64);
}

// Compile-time checks of the tables.
constexpr bool classes_are_consistent() {
  for (unsigned c = 0; c < kClassCount; ++c) {
    size_t block = class_block_bytes(c);
    if (block % kMinAlignBytes != 0) return false;
    if (size_class_of(block) != c) return false;  // exact fit maps to itself
    if (c > 0 && size_class_of(class_block_bytes(c - 1) + 1) != c) return false;  // next up
    if (class_span_pages(c) > kPagesPerSegment - kFirstUsablePage - 1) return false;
    if (class_capacity(c) < 1 || class_capacity(c) > 65535) return false;
  }
  return true;
}
static_assert(classes_are_consistent());

}  // namespace mapalloc
