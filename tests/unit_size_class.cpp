// Size classes: every size maps to the smallest class that holds it; the block-start test is
// exact for every offset of every class's span.
#include <doctest/doctest.h>

#include <initializer_list>

#include "core/size_class.h"

using namespace mapalloc;

TEST_CASE("every size 1..kClassMaxBytes maps to the smallest class that holds it") {
  for (size_t size = 1; size <= kClassMaxBytes; ++size) {
    unsigned size_class = size_class_of(size);
    REQUIRE(size_class < kClassCount);
    REQUIRE(class_block_bytes(size_class) >= size);
    if (size_class > 0) REQUIRE(class_block_bytes(size_class - 1) < size);
  }
}

TEST_CASE("classes grow, stay 16-byte multiples and waste at most 1/8 of a request to 1 KiB") {
  for (unsigned c = 1; c < kClassCount; ++c) {
    size_t block = class_block_bytes(c);
    size_t previous = class_block_bytes(c - 1);
    CHECK(block > previous);
    CHECK(block % kMinAlignBytes == 0);
    // The worst request of class c is previous + 1 bytes; 16-byte steps up to 512 bytes, eight
    // classes per doubling to 1 KiB, then four.
    if (block <= kExactClassMaxBytes)
      CHECK(block - previous == 16);
    else if (block <= kFineClassMaxBytes)
      CHECK((block - previous - 1) * 8 <= previous + 1);
    else
      CHECK((block - previous - 1) * 4 <= previous + 1);
  }
  // The classes jq's hot objects fall in (272 and 392 bytes, which once took 320 and 448, then
  // 288 and 416).
  CHECK(class_block_bytes(size_class_of(272)) == 272);
  CHECK(class_block_bytes(size_class_of(392)) == 400);
  CHECK(class_block_bytes(size_class_of(513)) == 576);
  CHECK(class_block_bytes(size_class_of(1025)) == 1280);
  CHECK(class_block_bytes(0) == 16);
  CHECK(class_block_bytes(kClassCount - 1) == kClassMaxBytes);
}

TEST_CASE("the fast path's table gives the same class as size_class_of for 0..1024") {
  for (size_t size = 0; size <= kSmallMaxBytes; ++size) {
    unsigned from_table = kSmallClassTable.class_of[(size + 15) / 16];
    CHECK(from_table == size_class_of(size == 0 ? 1 : size));
  }
}

TEST_CASE("every power of two up to the arena limit is a class") {
  for (size_t power = 16; power <= kClassMaxBytes; power *= 2) {
    CHECK(class_block_bytes(size_class_of(power)) == power);
  }
}

TEST_CASE("spans fit a segment and hold several blocks with little waste") {
  for (unsigned c = 0; c < kClassCount; ++c) {
    size_t span = class_span_pages(c) * kPageBytes;
    size_t block = class_block_bytes(c);
    CHECK(class_span_pages(c) <= kPagesPerSegment - kFirstUsablePage);
    // Blocks per span: 8 up to 16 KiB, 4 up to 128 KiB, 2 below 256 KiB, then one (a span of
    // exactly the block's pages: those classes are multiples of 64 KiB).
    unsigned expected = block <= 16 * kKiB    ? 8
                        : block <= 128 * kKiB ? 4
                        : block < 256 * kKiB  ? 2
                                              : 1;
    CHECK(class_capacity(c) >= expected);
    if (expected == 1) CHECK(span == block);
    CHECK((span - class_capacity(c) * class_block_bytes(c)) * 8 <= span);
  }
}

TEST_CASE("the block-start test accepts exactly the starts of carved blocks") {
  for (unsigned c = 0; c < kClassCount; ++c) {
    size_t block = class_block_bytes(c);
    uint64_t magic = block_start_magic(block);
    size_t span = class_span_pages(c) * kPageBytes;
    for (unsigned carved : {0u, 1u, class_capacity(c) / 2, class_capacity(c)}) {
      uint64_t limit = carved * block_start_step(block);
      // Offsets are checked at every 16-byte step plus the odd ones around each block start.
      for (uint64_t offset = 0; offset < span; offset += (offset % 16 == 0 ? 1 : 15)) {
        bool expected = offset % block == 0 && offset / block < carved;
        if ((offset * magic < limit) != expected) {
          FAIL("class " << c << " offset " << offset << " carved " << carved);
        }
      }
    }
  }
}

TEST_CASE("block_index_of divides by the block size for every offset of a span") {
  for (unsigned c = 0; c < kClassCount; ++c) {
    size_t block = class_block_bytes(c);
    uint64_t magic = block_start_magic(block);
    size_t span = class_span_pages(c) * kPageBytes;
    for (uint64_t offset = 0; offset < span; ++offset) {
      if (block_index_of(offset, magic) != offset / block) {
        FAIL("class " << c << " offset " << offset);
      }
    }
  }
}
