// Heap misuse ends in a one-line diagnostic and abort(), never a crash or silence. Each case is
// its own run of tests/programs/misuse.c, with the default and then the secure library preloaded.
#include <doctest/doctest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "test_support.h"

namespace {

const char* kDefaultLibrary = "build/libmapalloc.so";
const char* kSecureLibrary = "build/libmapalloc-secure.so";

test_support::ChildResult run_case(const char* library, const char* name,
                                   const char* zero_on_free = nullptr) {
  return test_support::run_in_child([library, name, zero_on_free] {
    setenv("LD_PRELOAD", library, 1);
    if (zero_on_free != nullptr) setenv("MAPALLOC_ZERO_ON_FREE", zero_on_free, 1);
    execl("build/tests/misuse", "misuse", name, static_cast<char*>(nullptr));
    _exit(127);
  });
}

void expect_abort(const char* library, const char* name, const char* message) {
  test_support::ChildResult result = run_case(library, name);
  INFO(library << " " << name << ": stderr: " << result.stderr_text);
  CHECK_FALSE(result.exited);
  CHECK(result.signal == SIGABRT);
  CHECK(result.stderr_text.find(message) != std::string::npos);
  CHECK(result.stderr_text.rfind("mapalloc: ", 0) == 0);
  CHECK(std::count(result.stderr_text.begin(), result.stderr_text.end(), '\n') == 1);
}

void expect_abort_in_both(const char* name, const char* message) {
  expect_abort(kDefaultLibrary, name, message);
  expect_abort(kSecureLibrary, name, message);
}

}  // namespace

TEST_CASE("double free of a small block, at once and after other frees") {
  expect_abort_in_both("double-free", "double free of 0x");
  expect_abort_in_both("double-free-later", "double free of 0x");
}

TEST_CASE("double free of a medium block in a span's later page, and of a remote-freed block") {
  expect_abort_in_both("double-free-medium", "double free of 0x");
  expect_abort_in_both("double-free-remote", "double free of 0x");
}

TEST_CASE("double free of a large block") {
  // Freed large blocks are cached (default build: "double free") or unmapped at once (secure
  // build: the pointer then belongs to nothing of ours).
  expect_abort(kDefaultLibrary, "double-free-large", "double free of 0x");
  expect_abort(kSecureLibrary, "double-free-large", "free of 0x");
}

TEST_CASE("free of pointers mapalloc never returned: stack, globals, another mapping") {
  expect_abort_in_both("free-stack", "not allocated by mapalloc");
  expect_abort_in_both("free-global", "not allocated by mapalloc");
  expect_abort_in_both("free-mapping", "free of 0x");
}

TEST_CASE("free of interior and misaligned pointers") {
  expect_abort_in_both("free-interior", "not the start of a block");
  expect_abort_in_both("free-misaligned", "not the start of a block");
  // A block start that was never handed out is a free block: "double free" (the secure build's
  // blocks are bigger, by the trailer, so the same address is inside the block there).
  expect_abort(kDefaultLibrary, "free-neighbour", "double free of 0x");
  expect_abort(kSecureLibrary, "free-neighbour", "free of 0x");
  expect_abort_in_both("free-interior-large", "not the start of a block");
}

TEST_CASE("realloc and malloc_usable_size of bad pointers") {
  expect_abort_in_both("realloc-freed", "realloc of freed block");
  expect_abort_in_both("realloc-interior", "realloc of 0x");
  expect_abort_in_both("usable-size-stack", "malloc_usable_size of 0x");
}

TEST_CASE("the secure build catches a one-byte overflow; the default build survives it") {
  expect_abort(kSecureLibrary, "overflow-one-byte", "heap overflow detected");
  expect_abort(kSecureLibrary, "overflow-one-byte-many", "heap overflow detected");
  expect_abort(kSecureLibrary, "overflow-large", "heap overflow detected");
  test_support::ChildResult result = run_case(kDefaultLibrary, "overflow-one-byte");
  CHECK(result.exited);  // the byte lands in the block's rounding slack
  CHECK(result.exit_code == 0);
}

TEST_CASE("the secure build detects a free-list link overwritten after free") {
  expect_abort(kSecureLibrary, "use-after-free-link", "heap corruption");
}

TEST_CASE("the secure build zeroes blocks on free when MAPALLOC_ZERO_ON_FREE=1, and only then") {
  test_support::ChildResult zeroed = run_case(kSecureLibrary, "zero-on-free", "1");
  INFO("stderr: " << zeroed.stderr_text);
  CHECK(zeroed.exited);
  CHECK(zeroed.exit_code == 0);
  test_support::ChildResult kept = run_case(kSecureLibrary, "zero-on-free", "0");
  CHECK(kept.exited);
  CHECK(kept.exit_code == 3);
}
