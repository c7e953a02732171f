// The page bitmaps of large-block arenas: counting, setting and run walking, checked against a
// bit-at-a-time model over random bitmaps and ranges (including the all-clear and all-set words
// that count_masked answers without a popcount).
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "core/bitmap.h"

using namespace mapalloc;

namespace {

constexpr uint32_t kBits = 64 * 6;

bool bit_of(const std::vector<uint64_t>& bits, uint32_t index) {
  return (bits[index / 64] >> (index % 64) & 1) != 0;
}

// A bitmap of long runs (whole words set or clear) with some mixed words among them.
std::vector<uint64_t> random_bitmap(std::mt19937_64& random) {
  std::vector<uint64_t> bits(words_for(kBits));
  for (uint64_t& word : bits) {
    switch (random() % 3) {
      case 0:
        word = 0;
        break;
      case 1:
        word = ~uint64_t{0};
        break;
      default:
        word = random();
        break;
    }
  }
  return bits;
}

}  // namespace

TEST_CASE("count_bits counts the set bits of any range, whole words included") {
  std::mt19937_64 random(7);
  for (int round = 0; round < 2000; ++round) {
    std::vector<uint64_t> bits = random_bitmap(random);
    uint32_t first = static_cast<uint32_t>(random() % kBits);
    uint32_t count = static_cast<uint32_t>(random() % (kBits - first + 1));
    uint32_t expected = 0;
    for (uint32_t index = first; index < first + count; ++index) expected += bit_of(bits, index);
    REQUIRE(count_bits(bits.data(), first, count) == expected);
  }
}

TEST_CASE("count_masked answers all-clear, all-set and mixed words") {
  uint64_t mask = word_mask(8, 16);
  CHECK(count_masked(0, mask, 16) == 0);
  CHECK(count_masked(~uint64_t{0}, mask, 16) == 16);
  CHECK(count_masked(mask, mask, 16) == 16);
  CHECK(count_masked(uint64_t{1} << 8 | uint64_t{1} << 23, mask, 16) == 2);
  CHECK(count_masked(uint64_t{1} << 7 | uint64_t{1} << 24, mask, 16) == 0);  // outside the mask
  CHECK(count_masked(~uint64_t{0}, ~uint64_t{0}, 64) == 64);
}

TEST_CASE("set_bits changes exactly the range, and for_each_run finds the maximal runs") {
  std::mt19937_64 random(11);
  for (int round = 0; round < 500; ++round) {
    std::vector<uint64_t> bits = random_bitmap(random);
    std::vector<uint64_t> before = bits;
    uint32_t first = static_cast<uint32_t>(random() % kBits);
    uint32_t count = static_cast<uint32_t>(random() % (kBits - first + 1));
    bool value = random() % 2 == 0;
    set_bits(bits.data(), first, count, value);
    for (uint32_t index = 0; index < kBits; ++index) {
      bool inside = index >= first && index < first + count;
      REQUIRE(bit_of(bits, index) == (inside ? value : bit_of(before, index)));
    }

    uint32_t begin = static_cast<uint32_t>(random() % kBits);
    uint32_t end = begin + static_cast<uint32_t>(random() % (kBits - begin + 1));
    std::vector<bool> seen(kBits, false);
    uint32_t previous_stop = begin;
    for_each_run(bits.data(), begin, end, [&](uint32_t start, uint32_t length) {
      REQUIRE(length > 0);
      REQUIRE(start >= previous_stop);
      REQUIRE(start + length <= end);
      // Maximal: the bits on either side (within [begin, end)) are clear.
      if (start > begin) REQUIRE_FALSE(bit_of(bits, start - 1));
      if (start + length < end) REQUIRE_FALSE(bit_of(bits, start + length));
      for (uint32_t index = start; index < start + length; ++index) seen[index] = true;
      previous_stop = start + length;
      return true;
    });
    for (uint32_t index = begin; index < end; ++index) REQUIRE(seen[index] == bit_of(bits, index));
  }
}
