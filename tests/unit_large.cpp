// Large blocks: own mappings, the reuse cache, alignment, and realloc by mremap.
#include <doctest/doctest.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "mapalloc.h"
#include "test_support.h"

using namespace mapalloc;

namespace {
volatile size_t opaque_zero = 0;
size_t runtime(size_t value) { return value + opaque_zero; }
}  // namespace

TEST_CASE("blocks above the arena limit are large blocks with exact usable sizes") {
  for (size_t size :
       {kArenaMaxBytes + 1, kArenaMaxBytes + 5000, size_t{5} << 20, size_t{100} << 20}) {
    auto* block = static_cast<char*>(malloc(runtime(size)));
    REQUIRE(block != nullptr);
    CHECK(unit_kind(block) == kUnitLarge);
    CHECK(reinterpret_cast<uintptr_t>(block) % kOsPageBytes == 0);
    size_t usable = malloc_usable_size(block);
    CHECK(usable >= size);
    CHECK(usable - size < kOsPageBytes);
    block[0] = 1;
    block[usable - 1] = 2;
    free(block);
  }
}

TEST_CASE("a freed large block's mapping is reused for the next one of similar size") {
  void* volatile first = malloc(runtime(3 << 20));  // volatile: the pair must not be folded
  auto first_address = reinterpret_cast<uintptr_t>(first);
  free(first);
  size_t maps_before = os_counters.mmap_calls.load();
  void* volatile second = malloc(runtime(3 << 20));
  // (The secure build reuses only mappings of the same alignment, the oldest first: here the
  // only one.)
  CHECK(reinterpret_cast<uintptr_t>(second) == first_address);
  CHECK(os_counters.mmap_calls.load() == maps_before);
  free(second);
}

TEST_CASE("large alignments up to 1 GiB") {
  for (size_t alignment = size_t{1} << 17; alignment <= (size_t{1} << 30); alignment <<= 3) {
    void* block = aligned_alloc(alignment, runtime(100));
    REQUIRE(block != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(block) % alignment == 0);
    CHECK(mapalloc_owns(block));
    free(block);
  }
}

TEST_CASE("zero bytes at a 4 MiB alignment is a block inside its own mapping") {
  // Found by the fuzzer: the block used to start at its mapping's end, and the segment map entry
  // of the next 4 MiB unit was claimed for it.
  for (size_t alignment : {size_t{4} << 20, size_t{8} << 20}) {
    void* block = aligned_alloc(alignment, runtime(0));
    REQUIRE(block != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(block) % alignment == 0);
    if (!kSecure) {  // (the secure build's usable size is exactly the request: 0)
      CHECK(malloc_usable_size(block) >= 1);
      static_cast<volatile char*>(block)[0] = 1;  // its byte is mapped
    }
    char* next_unit = static_cast<char*>(block) + (size_t{4} << 20);
    CHECK_FALSE(mapalloc_owns(next_unit));
    free(block);
  }
}

TEST_CASE("realloc grows a buffer to 1 GiB by doubling with mremap, keeping its contents") {
  size_t size = 1 << 20;
  auto* buffer = static_cast<unsigned char*>(malloc(runtime(size)));
  for (size_t i = 0; i < size; i += 4096) buffer[i] = static_cast<unsigned char>(i >> 12);
  size_t remaps_before = os_counters.mremap_calls.load();
  size_t filled = size;
  while (size < (size_t{1} << 30)) {
    size *= 2;
    buffer = static_cast<unsigned char*>(realloc(buffer, runtime(size)));
    REQUIRE(buffer != nullptr);
    for (size_t i = 0; i < filled; i += 4096) {
      REQUIRE(buffer[i] == static_cast<unsigned char>(i >> 12));
    }
    for (size_t i = filled; i < size; i += 4096) buffer[i] = static_cast<unsigned char>(i >> 12);
    filled = size;
  }
  // The secure build copies instead (its guard pages would not move with the mapping).
  if (kSecure)
    CHECK(os_counters.mremap_calls.load() == remaps_before);
  else
    CHECK(os_counters.mremap_calls.load() > remaps_before);
  buffer = static_cast<unsigned char*>(realloc(buffer, runtime(3 << 20)));  // shrink in place
  CHECK(buffer[4096 * 5] == 5);
  free(buffer);
}

TEST_CASE("a large mapping reused with another alignment leaves no stale map entry") {
  // aligned to 4 MiB, its block sits one unit above its header; reused for an unaligned block,
  // the block sits in the header's unit. After both are freed and unmapped, asking about the
  // old address must not read the (gone) header.
  auto result = test_support::run_in_child([] {
    void* volatile aligned = aligned_alloc(4 << 20, runtime(2 << 20));
    auto old_address = reinterpret_cast<uintptr_t>(aligned);
    free(aligned);
    void* volatile reused = malloc(runtime((4 << 20) - 8192));
    free(reused);
    malloc_trim(0);
    _exit(mapalloc_owns(reinterpret_cast<void*>(old_address)) == 0 ? 0 : 1);
  });
  CHECK(result.exited);
  CHECK(result.exit_code == 0);
}

TEST_CASE("malloc_trim releases cached large mappings") {
  void* volatile block = malloc(runtime(6 << 20));  // volatile: not folded with its free
  free(block);
  CHECK(large_cache_bytes() >= (6u << 20));
  CHECK(malloc_trim(0) == 1);
  CHECK(large_cache_bytes() == 0);
}
