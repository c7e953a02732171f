// Bitmaps of pages: setting, counting and walking runs of bits a word at a time. Bit i of a
// bitmap is bit i % 64 of word i / 64.
#pragma once

#include "platform/config.h"

namespace mapalloc {

constexpr size_t words_for(size_t bits) { return (bits + 63) / 64; }

// The mask of bits [offset, offset + length) of one word (length 1..64 - offset).
inline uint64_t word_mask(uint32_t offset, uint32_t length) {
  return (length == 64 ? ~uint64_t{0} : (uint64_t{1} << length) - 1) << offset;
}

// Calls visit(word index, mask, bits in the mask) for the words covering [first, first + count).
template <typename Visit>
void for_each_word(uint32_t first, uint32_t count, Visit visit) {
  for (uint32_t index = first; index < first + count;) {
    uint32_t offset = index % 64;
    uint32_t left = first + count - index;
    uint32_t length = left < 64 - offset ? left : 64 - offset;
    visit(index / 64, word_mask(offset, length), length);
    index += length;
  }
}

// The set bits of `bits & mask`, where the mask has `length` bits. Page bitmaps are mostly all
// clear or all set under a mask, and the baseline x86-64 build has no POPCNT instruction
// (__builtin_popcountll is a call into libgcc), so those two cases are answered first.
inline uint32_t count_masked(uint64_t bits, uint64_t mask, uint32_t length) {
  uint64_t masked = bits & mask;
  if (masked == 0) return 0;
  if (masked == mask) return length;
  return static_cast<uint32_t>(__builtin_popcountll(masked));
}

inline void set_bits(uint64_t* bits, uint32_t first, uint32_t count, bool value) {
  for_each_word(first, count, [&](uint32_t word, uint64_t mask, uint32_t) {
    if (value)
      bits[word] |= mask;
    else
      bits[word] &= ~mask;
  });
}

inline uint32_t count_bits(const uint64_t* bits, uint32_t first, uint32_t count) {
  uint32_t total = 0;
  for_each_word(first, count, [&](uint32_t word, uint64_t mask, uint32_t length) {
    total += count_masked(bits[word], mask, length);
  });
  return total;
}

// Calls visit(start, length) for each maximal run of set bits in [begin, end); stops early when
// visit returns false. Bits past `end` in the last word may be set.
template <typename Visit>
void for_each_run(const uint64_t* bits, uint32_t begin, uint32_t end, Visit visit) {
  uint32_t index = begin;
  while (index < end) {
    uint32_t word = index / 64;
    uint64_t rest = bits[word] & (~uint64_t{0} << (index % 64));
    while (rest == 0) {
      if (++word * 64 >= end) return;
      rest = bits[word];
    }
    uint32_t start = word * 64 + static_cast<uint32_t>(__builtin_ctzll(rest));
    if (start >= end) return;
    uint64_t clear = ~bits[word] & (~uint64_t{0} << (start % 64));
    while (clear == 0 && (word + 1) * 64 < end) clear = ~bits[++word];
    uint32_t stop = clear == 0 ? end : word * 64 + static_cast<uint32_t>(__builtin_ctzll(clear));
    if (stop > end) stop = end;
    if (!visit(start, stop - start)) return;
    index = stop;
  }
}

}  // namespace mapalloc
