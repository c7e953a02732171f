// Heap misuse ends in a one-line diagnostic and abort(), never a crash or silence. Each case runs
// in a child process.

// The misuse is the point here.
#pragma GCC diagnostic ignored "-Wuse-after-free"
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"
#include <doctest/doctest.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <algorithm>
#include <string>
#include <thread>

#include "test_support.h"

namespace {

volatile size_t opaque_zero = 0;
size_t runtime(size_t value) { return value + opaque_zero; }

// Keeps the compiler from seeing through the misuse (and warning about it).
void* launder(void* pointer) {
  void* volatile copy = pointer;
  return copy;
}

int global_object = 0;

void expect_abort(const std::function<void()>& misuse, const char* message) {
  test_support::ChildResult result = test_support::run_in_child(misuse);
  INFO("stderr: " << result.stderr_text);
  CHECK_FALSE(result.exited);
  CHECK(result.signal == SIGABRT);
  CHECK(result.stderr_text.find(message) != std::string::npos);
  CHECK(result.stderr_text.rfind("mapalloc: ", 0) == 0);
  CHECK(std::count(result.stderr_text.begin(), result.stderr_text.end(), '\n') == 1);
}

}  // namespace

TEST_CASE("double free of a small block, at once and after other frees") {
  expect_abort(
      [] {
        void* block = malloc(runtime(32));
        free(block);
        free(launder(block));
      },
      "double free of 0x");
  expect_abort(
      [] {
        void* block = malloc(runtime(32));
        void* others[10];
        for (auto& other : others) other = malloc(runtime(32));
        free(block);
        for (auto& other : others) free(other);
        free(launder(block));
      },
      "double free of 0x");
}

TEST_CASE("double free of a medium block in a span's later page") {
  expect_abort(
      [] {
        void* blocks[8];
        for (auto& block : blocks) block = malloc(runtime(100000));
        free(blocks[5]);
        free(launder(blocks[5]));
      },
      "double free");
}

TEST_CASE("double free of a block freed by another thread") {
  expect_abort(
      [] {
        void* block = malloc(runtime(64));
        std::thread([block] { free(block); }).join();
        free(launder(block));
      },
      "double free");
}

TEST_CASE("double free of a large block") {
  expect_abort(
      [] {
        void* block = malloc(runtime(2 << 20));
        free(block);
        free(launder(block));
      },
      "free");
}

TEST_CASE("free of pointers mapalloc never returned") {
  expect_abort(
      [] {
        int on_stack = 0;
        free(launder(&on_stack));
      },
      "not allocated by mapalloc");
  expect_abort([] { free(launder(&global_object)); }, "not allocated by mapalloc");
  expect_abort(
      [] {
        void* mapping =
            mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        free(launder(static_cast<char*>(mapping) + 4096));
      },
      "free of 0x");
}

TEST_CASE("free of interior and misaligned pointers") {
  expect_abort(
      [] {
        auto* block = static_cast<char*>(malloc(runtime(64)));
        free(launder(block + 16));
      },
      "not the start of a block");
  expect_abort(
      [] {
        auto* block = static_cast<char*>(malloc(runtime(64)));
        free(launder(block + 1));
      },
      "not the start of a block");
  expect_abort(
      [] {
        auto* block = static_cast<char*>(malloc(runtime(4 << 20)));
        free(launder(block + 4096));
      },
      "not the start of a block");
}

TEST_CASE("realloc and malloc_usable_size of bad pointers") {
  expect_abort(
      [] {
        void* block = malloc(runtime(100));
        free(block);
        void* result = realloc(launder(block), runtime(200));
        (void)result;
      },
      "realloc of freed block");
  expect_abort(
      [] {
        int on_stack = 0;
        (void)malloc_usable_size(launder(&on_stack));
      },
      "malloc_usable_size of 0x");
  expect_abort(
      [] {
        auto* block = static_cast<char*>(malloc(runtime(100)));
        void* result = realloc(launder(block + 32), runtime(10));
        (void)result;
      },
      "realloc of 0x");
}
