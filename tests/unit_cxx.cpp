// The C++ operators: every new/delete form, alignment, the new-handler and std::bad_alloc.
#include <doctest/doctest.h>
#include <stdint.h>

#include <memory>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "mapalloc.h"

namespace {

volatile size_t opaque_zero = 0;
size_t runtime(size_t value) { return value + opaque_zero; }

struct alignas(256) OverAligned {
  char bytes[300];
};

int handler_calls = 0;
void* reserve = nullptr;
void release_reserve_then_give_up() {
  ++handler_calls;
  if (reserve != nullptr) {
    ::operator delete(reserve);
    reserve = nullptr;
  } else {
    std::set_new_handler(nullptr);
  }
}

}  // namespace

TEST_CASE("plain, array, sized and nothrow forms go through mapalloc") {
  int* single = new int(7);
  CHECK(mapalloc_owns(single));
  delete single;
  char* array = new char[runtime(1000)];
  CHECK(mapalloc_owns(array));
  delete[] array;
  void* raw = ::operator new(runtime(48));
  ::operator delete(raw, 48);  // sized delete
  void* raw_array = ::operator new[](runtime(480));
  ::operator delete[](raw_array, 480);
  void* nothrow = ::operator new(runtime(64), std::nothrow);
  CHECK(nothrow != nullptr);
  ::operator delete(nothrow, std::nothrow);
  void* nothrow_array = ::operator new[](runtime(64), std::nothrow);
  ::operator delete[](nothrow_array, std::nothrow);
  ::operator delete(nullptr);
}

TEST_CASE("aligned new honours std::align_val_t up to large alignments") {
  auto* object = new OverAligned();
  CHECK(reinterpret_cast<uintptr_t>(object) % 256 == 0);
  delete object;
  auto* objects = new OverAligned[5];
  CHECK(reinterpret_cast<uintptr_t>(objects) % 256 == 0);
  delete[] objects;
  for (size_t alignment = 16; alignment <= (size_t{1} << 22); alignment *= 8) {
    auto align = static_cast<std::align_val_t>(alignment);
    void* block = ::operator new(runtime(100), align);
    CHECK(reinterpret_cast<uintptr_t>(block) % alignment == 0);
    ::operator delete(block, align);
    void* sized = ::operator new[](runtime(100), align);
    ::operator delete[](sized, 100, align);
    void* nothrow = ::operator new(runtime(100), align, std::nothrow);
    CHECK(reinterpret_cast<uintptr_t>(nothrow) % alignment == 0);
    ::operator delete(nothrow, align, std::nothrow);
    void* nothrow_array = ::operator new[](runtime(100), align, std::nothrow);
    ::operator delete[](nothrow_array, align, std::nothrow);
    void* sized_single = ::operator new(runtime(100), align);
    ::operator delete(sized_single, 100, align);
  }
}

TEST_CASE("an impossible new throws std::bad_alloc; the nothrow forms return nullptr") {
  CHECK_THROWS_AS((void)::operator new(runtime(SIZE_MAX / 2)), std::bad_alloc);
  CHECK_THROWS_AS((void)::operator new[](runtime(SIZE_MAX / 2)), std::bad_alloc);
  CHECK_THROWS_AS((void)::operator new (runtime(SIZE_MAX / 2), std::align_val_t{64}),
                  std::bad_alloc);
  CHECK(::operator new(runtime(SIZE_MAX / 2), std::nothrow) == nullptr);
  CHECK(::operator new[](runtime(SIZE_MAX / 2), std::align_val_t{64}, std::nothrow) == nullptr);
}

TEST_CASE("the new-handler is called until it gives up") {
  handler_calls = 0;
  reserve = ::operator new(runtime(100));
  std::set_new_handler(release_reserve_then_give_up);
  CHECK_THROWS_AS((void)::operator new(runtime(SIZE_MAX / 2)), std::bad_alloc);
  CHECK(handler_calls == 2);  // first call released the reserve, second uninstalled itself
  CHECK(reserve == nullptr);
  CHECK((std::get_new_handler() == nullptr));
}

TEST_CASE("the standard library's containers run on mapalloc") {
  std::unordered_map<std::string, std::vector<int>> map;
  for (int i = 0; i < 20000; ++i) map[std::to_string(i)].assign(static_cast<size_t>(i % 50), i);
  size_t total = 0;
  for (auto& [key, values] : map) total += values.size();
  CHECK(total == 20000u / 50u * (49u * 50u / 2u));
  std::unique_ptr<int[]> owned(new int[10]);
  CHECK(mapalloc_owns(owned.get()));
}
