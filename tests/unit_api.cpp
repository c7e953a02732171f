// Every C/POSIX/glibc entry point and its error cases. The test binary links mapalloc whole, so
// these calls (and doctest's own allocations) go through it.
#include <doctest/doctest.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <set>
#include <vector>

#include "mapalloc.h"
#include "platform/config.h"

namespace {

// A block filled with a pattern derived from its address and a seed, and checked later.
void fill(void* block, size_t bytes, unsigned seed) {
  auto* bytes_ptr = static_cast<unsigned char*>(block);
  for (size_t i = 0; i < bytes; ++i) bytes_ptr[i] = static_cast<unsigned char>(i * 31 + seed);
}
bool check(const void* block, size_t bytes, unsigned seed) {
  auto* bytes_ptr = static_cast<const unsigned char*>(block);
  for (size_t i = 0; i < bytes; ++i) {
    if (bytes_ptr[i] != static_cast<unsigned char>(i * 31 + seed)) return false;
  }
  return true;
}

bool aligned_to(const void* pointer, size_t alignment) {
  return reinterpret_cast<uintptr_t>(pointer) % alignment == 0;
}

// Keeps the compiler from folding malloc/free pairs or sizes known at compile time.
volatile size_t opaque_zero = 0;
size_t runtime(size_t value) { return value + opaque_zero; }

}  // namespace

TEST_CASE("malloc(0) returns distinct, freeable, 16-byte aligned blocks") {
  std::set<void*> seen;
  for (int i = 0; i < 100; ++i) {
    void* block = malloc(runtime(0));
    REQUIRE(block != nullptr);
    CHECK(aligned_to(block, 16));
    CHECK(seen.insert(block).second);
    CHECK(mapalloc_owns(block));
  }
  for (void* block : seen) free(block);
}

TEST_CASE("malloc serves every size with an aligned block that holds it exactly") {
  std::vector<std::pair<void*, size_t>> blocks;
  for (size_t size = 1; size <= 600 * 1024; size += (size < 2048 ? 1 : size / 7)) {
    void* block = malloc(runtime(size));
    REQUIRE(block != nullptr);
    CHECK(aligned_to(block, 16));
    size_t usable = malloc_usable_size(block);
    CHECK(usable >= size);
    fill(block, usable, static_cast<unsigned>(size));  // every usable byte can be written
    blocks.emplace_back(block, usable);
  }
  size_t size = 1;
  for (auto& [block, usable] : blocks) {
    CHECK(check(block, usable, static_cast<unsigned>(size)));
    free(block);
    size += (size < 2048 ? 1 : size / 7);
  }
}

TEST_CASE("impossible sizes give NULL with ENOMEM") {
  for (size_t size : {SIZE_MAX, SIZE_MAX / 2, size_t{PTRDIFF_MAX}, size_t{1} << 62}) {
    errno = 0;
    CHECK(malloc(runtime(size)) == nullptr);
    CHECK(errno == ENOMEM);
  }
  errno = 0;
  CHECK(calloc(runtime(SIZE_MAX / 2), 3) == nullptr);
  CHECK(errno == ENOMEM);
  errno = 0;
  CHECK(calloc(runtime(1) << 40, size_t{1} << 40) == nullptr);
  CHECK(errno == ENOMEM);
}

TEST_CASE("a successful allocation leaves errno alone") {
  errno = 4321;
  void* small = malloc(runtime(100));
  void* large = malloc(runtime(5 * 1024 * 1024));
  void* aligned = aligned_alloc(4096, runtime(100));
  free(small);
  free(large);
  free(aligned);
  CHECK(errno == 4321);
}

TEST_CASE("calloc returns zeroed memory, also when reusing dirty blocks") {
  for (size_t size : {size_t{8}, size_t{200}, size_t{5000}, size_t{300000}, size_t{3} << 20}) {
    void* dirty = malloc(runtime(size));
    memset(dirty, 0xee, size);
    free(dirty);
    auto* zeroed = static_cast<unsigned char*>(calloc(runtime(size), 1));
    REQUIRE(zeroed != nullptr);
    for (size_t i = 0; i < size; ++i) REQUIRE(zeroed[i] == 0);
    free(zeroed);
  }
  void* nothing = calloc(runtime(0), 10);
  CHECK(nothing != nullptr);
  free(nothing);
}

TEST_CASE("realloc keeps contents across small, medium and large sizes, both ways") {
  size_t sizes[] = {1,       24,       100,     1000,   5000, 70000, 300000,
                    5 << 20, 40 << 20, 3 << 20, 200000, 3000, 17};
  void* block = realloc(nullptr, runtime(sizes[0]));  // realloc(NULL, n) is malloc
  fill(block, sizes[0], 7);
  size_t previous = sizes[0];
  for (size_t size : sizes) {
    block = realloc(block, runtime(size));
    REQUIRE(block != nullptr);
    size_t kept = previous < size ? previous : size;
    REQUIRE(check(block, kept, 7));
    fill(block, size, 7);
    CHECK(malloc_usable_size(block) >= size);
    previous = size;
  }
  // glibc semantics: realloc(p, 0) frees p and returns NULL.
  CHECK(realloc(block, runtime(0)) == nullptr);
}

TEST_CASE("realloc within the block's room keeps the address; far smaller moves") {
  auto* block = static_cast<char*>(malloc(runtime(100)));
  fill(block, 100, 3);
  auto* grown = static_cast<char*>(realloc(block, runtime(104)));
  CHECK(grown == block);
  CHECK(check(grown, 100, 3));
  if (mapalloc::kSecure) CHECK(malloc_usable_size(grown) == 104);  // the trailer moved with it
  fill(grown, 104, 4);
  auto* shrunk = static_cast<char*>(realloc(grown, runtime(90)));
  CHECK(shrunk == grown);
  CHECK(check(shrunk, 90, 4));
  if (mapalloc::kSecure) CHECK(malloc_usable_size(shrunk) == 90);
  // Less than half the block: moved to a smaller one.
  auto* small = static_cast<char*>(realloc(shrunk, runtime(8)));
  CHECK(small != shrunk);
  CHECK(check(small, 8, 4));
  free(small);
}

TEST_CASE("realloc of blocks in every page of a multi-page span keeps contents") {
  // 40,000-byte blocks share spans of several 64 KiB pages: some start in a span's later page,
  // whose record is not the span's (realloc then validates the pointer in full).
  constexpr int kBlocks = 8;
  char* blocks[kBlocks];
  for (int i = 0; i < kBlocks; ++i) {
    blocks[i] = static_cast<char*>(malloc(runtime(40000)));
    REQUIRE(blocks[i] != nullptr);
    fill(blocks[i], 40000, static_cast<unsigned char>(i + 1));
  }
  for (int i = 0; i < kBlocks; ++i) {
    char* kept = static_cast<char*>(realloc(blocks[i], runtime(40100)));  // fits its block
    CHECK(kept == blocks[i]);
    REQUIRE(check(kept, 40000, static_cast<unsigned char>(i + 1)));
    char* moved = static_cast<char*>(realloc(kept, runtime(300)));  // far smaller: moves
    REQUIRE(moved != nullptr);
    CHECK(moved != kept);
    CHECK(check(moved, 300, static_cast<unsigned char>(i + 1)));
    blocks[i] = moved;
  }
  for (char* block : blocks) free(block);
}

TEST_CASE("a failed realloc leaves the block untouched") {
  for (size_t size : {size_t{64}, size_t{100000}, size_t{8} << 20}) {
    void* block = malloc(runtime(size));
    fill(block, size, 3);
    errno = 0;
    CHECK(realloc(block, runtime(SIZE_MAX / 2)) == nullptr);
    CHECK(errno == ENOMEM);
    CHECK(check(block, size, 3));
    free(block);
  }
}

TEST_CASE("reallocarray checks for overflow") {
  void* block = reallocarray(nullptr, 10, runtime(10));
  REQUIRE(block != nullptr);
  errno = 0;
  CHECK(reallocarray(block, SIZE_MAX / 4, runtime(8)) == nullptr);
  CHECK(errno == ENOMEM);
  block = reallocarray(block, 100, runtime(100));
  CHECK(block != nullptr);
  free(block);
}

TEST_CASE("posix_memalign serves every power-of-two alignment up to 1 GiB") {
  for (size_t alignment = sizeof(void*); alignment <= (size_t{1} << 30); alignment *= 2) {
    for (size_t size : {size_t{1}, size_t{100}, alignment, size_t{300000}}) {
      void* block = nullptr;
      REQUIRE(posix_memalign(&block, alignment, runtime(size)) == 0);
      CHECK(aligned_to(block, alignment));
      CHECK(malloc_usable_size(block) >= size);
      memset(block, 0x5a, size);
      free(block);
    }
  }
}

TEST_CASE(
    "posix_memalign: EINVAL for bad alignments, ENOMEM (returned and in errno) without memory") {
  void* sentinel = reinterpret_cast<void*>(0x1234);
  for (size_t alignment : {size_t{0}, size_t{3}, size_t{4}, size_t{24}, size_t{100}}) {
    void* result = sentinel;
    errno = 0;
    CHECK(posix_memalign(&result, alignment, 16) == EINVAL);
    CHECK(result == sentinel);
    CHECK(errno == 0);  // reported through the return value
  }
  // Out of memory: ENOMEM returned and, as glibc does, in errno too.
  void* result = sentinel;
  errno = 0;
  CHECK(posix_memalign(&result, 64, runtime(SIZE_MAX / 2)) == ENOMEM);
  CHECK(result == sentinel);
  CHECK(errno == ENOMEM);
  errno = 0;
  CHECK(posix_memalign(&result, 4096, runtime(SIZE_MAX - 100)) == ENOMEM);
  CHECK(errno == ENOMEM);
}

TEST_CASE("aligned_alloc, memalign, valloc and pvalloc") {
  errno = 0;
  CHECK(aligned_alloc(48, runtime(96)) == nullptr);
  CHECK(errno == EINVAL);
  errno = 0;
  CHECK(aligned_alloc(0, runtime(16)) == nullptr);
  CHECK(errno == EINVAL);
  for (size_t alignment = 1; alignment <= (size_t{1} << 24); alignment *= 4) {
    void* block = aligned_alloc(alignment, runtime(3 * alignment));
    REQUIRE(block != nullptr);
    CHECK(aligned_to(block, alignment));
    free(block);
  }
  void* rounded = memalign(48, runtime(10));  // glibc rounds the alignment up to 64
  REQUIRE(rounded != nullptr);
  CHECK(aligned_to(rounded, 64));
  free(rounded);
  errno = 0;
  CHECK(memalign(SIZE_MAX, runtime(10)) == nullptr);
  CHECK(errno == EINVAL);
  void* page = valloc(runtime(10));
  CHECK(aligned_to(page, 4096));
  free(page);
  void* whole_pages = pvalloc(runtime(5000));
  CHECK(aligned_to(whole_pages, 4096));
  CHECK(malloc_usable_size(whole_pages) >= 8192);
  free(whole_pages);
}

TEST_CASE("aligned blocks of every arena alignment are distinct and usable") {
  for (size_t alignment = 32; alignment <= 65536; alignment *= 2) {
    std::vector<void*> blocks;
    for (size_t size : {size_t{1}, alignment - 1, alignment + 1, 5 * alignment / 2}) {
      void* block = aligned_alloc(alignment, runtime(size));
      REQUIRE(block != nullptr);
      CHECK(aligned_to(block, alignment));
      CHECK(mapalloc_owns(block));
      fill(block, size, 9);
      blocks.push_back(block);
    }
    for (void* block : blocks) free(block);
  }
}

TEST_CASE("malloc_usable_size is exact: the block holds that much and no more is promised") {
  CHECK(malloc_usable_size(nullptr) == 0);
  void* first = malloc(runtime(40));
  void* second = malloc(runtime(40));
  size_t usable = malloc_usable_size(first);
  CHECK(usable == (mapalloc::kSecure ? 40 : 48));  // the secure build: exactly what was asked
  fill(second, 40, 1);
  memset(first, 0xff, usable);  // writing all usable bytes leaves the neighbour intact
  CHECK(check(second, 40, 1));
  free(first);
  free(second);
}

TEST_CASE("free(NULL) and cfree are accepted; malloc_trim answers") {
  free(nullptr);
  void* block = malloc(runtime(1 << 20));
  free(block);
  int trimmed = malloc_trim(0);
  CHECK((trimmed == 0 || trimmed == 1));
  CHECK(mapalloc_trim() >= 0);
}

TEST_CASE("glibc's reporting functions answer without allocating a crash") {
  CHECK(mallopt(M_ARENA_MAX, 1) == 1);
  struct mallinfo2 info = mallinfo2();
  CHECK(info.arena > 0);
  FILE* sink = fopen("/dev/null", "w");
  REQUIRE(sink != nullptr);
  CHECK(malloc_info(0, sink) == 0);
  CHECK(malloc_info(1, sink) == -1);
  fclose(sink);
}

TEST_CASE("mapalloc_owns tells our blocks from everything else") {
  int on_stack = 0;
  static int in_globals = 0;
  void* small = malloc(runtime(32));
  void* large = malloc(runtime(8 << 20));
  CHECK(mapalloc_owns(small));
  CHECK(mapalloc_owns(large));
  CHECK_FALSE(mapalloc_owns(static_cast<char*>(small) + 16));
  CHECK_FALSE(mapalloc_owns(static_cast<char*>(large) + 4096));
  CHECK_FALSE(mapalloc_owns(&on_stack));
  CHECK_FALSE(mapalloc_owns(&in_globals));
  CHECK_FALSE(mapalloc_owns(nullptr));
  void* volatile freed = malloc(runtime(48));
  free(freed);
  CHECK_FALSE(mapalloc_owns(freed));
  free(small);
  free(large);
  CHECK(strchr(mapalloc_version(), '.') != nullptr);
}

TEST_CASE("the mapalloc_ functions behave like the standard ones") {
  void* block = mapalloc_malloc(runtime(100));
  REQUIRE(block != nullptr);
  block = mapalloc_realloc(block, runtime(10000));
  CHECK(mapalloc_usable_size(block) >= 10000);
  mapalloc_free(block);
  auto* zeroed = static_cast<char*>(mapalloc_calloc(10, runtime(10)));
  CHECK(zeroed[99] == 0);
  mapalloc_free(zeroed);
  errno = 0;
  CHECK(mapalloc_aligned_alloc(3, 10) == nullptr);
  CHECK(errno == EINVAL);
  void* aligned = mapalloc_aligned_alloc(256, runtime(10));
  CHECK(aligned_to(aligned, 256));
  mapalloc_free(aligned);
}

TEST_CASE("libc's own allocations (strdup, fopen, getline) come from mapalloc") {
  char* copy = strdup("mapalloc");
  CHECK(mapalloc_owns(copy));
  free(copy);
  FILE* file = fopen("/proc/self/status", "r");
  REQUIRE(file != nullptr);
  char* line = nullptr;
  size_t capacity = 0;
  CHECK(getline(&line, &capacity, file) > 0);
  CHECK(mapalloc_owns(line));
  free(line);
  fclose(file);
}
