// The OS layer: aligned mapping, purge, unmap, in-place resize, move, failure reporting.
#include <doctest/doctest.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <initializer_list>

#include <unistd.h>

#include "platform/memcheck.h"
#include "platform/options.h"
#include "platform/os.h"
#include "platform/prof_os.h"
#include "platform/token_bucket.h"
#include "test_support.h"

using namespace mapalloc;

TEST_CASE("os_map_aligned returns zeroed memory at the requested alignment") {
  for (size_t alignment : {kOsPageBytes, size_t{64} * kKiB, kSegmentBytes, size_t{64} * kMiB}) {
    size_t bytes = 3 * kOsPageBytes;
    auto* memory = static_cast<unsigned char*>(os_map_aligned(bytes, alignment));
    REQUIRE(memory != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(memory) % alignment == 0);
    for (size_t i = 0; i < bytes; ++i) REQUIRE(memory[i] == 0);
    memset(memory, 0xab, bytes);
    os_unmap(memory, bytes);
  }
}

TEST_CASE("mapping and unmapping are counted") {
  size_t before = os_counters.mapped_bytes.load();
  void* memory = os_map_aligned(kSegmentBytes, kSegmentBytes);
  REQUIRE(memory != nullptr);
  CHECK(os_counters.mapped_bytes.load() >= before + kSegmentBytes);
  size_t unmapped_before = os_counters.unmapped_bytes.load();
  os_unmap(memory, kSegmentBytes);
  CHECK(os_counters.unmapped_bytes.load() == unmapped_before + kSegmentBytes);
}

TEST_CASE("purge with MADV_DONTNEED drops resident pages and reads back zero") {
  size_t bytes = 16 * kMiB;
  auto* memory = static_cast<char*>(os_map_aligned(bytes, kOsPageBytes));
  REQUIRE(memory != nullptr);
  memset(memory, 1, bytes);
  size_t resident_full = test_support::resident_bytes();
  os_purge(memory, bytes, PurgeMethod::kDontNeed);
  size_t resident_purged = test_support::resident_bytes();
  CHECK(resident_full - resident_purged >= bytes - kMiB);
  CHECK(memory[0] == 0);
  CHECK(memory[bytes - 1] == 0);
  os_purge(memory, bytes, PurgeMethod::kFree);  // accepted either way
  os_unmap(memory, bytes);
}

// Linux 6.15 or later (PIDFD_SELF), and not under Valgrind, which does not know the call.
bool kernel_takes_purge_lists() {
  struct utsname name {};
  unsigned major = 0, minor = 0;
  if (uname(&name) != 0 || sscanf(name.release, "%u.%u", &major, &minor) != 2) return false;
  return (major > 6 || (major == 6 && minor >= 15)) && !memcheck::running_under_valgrind();
}

TEST_CASE("os_purge_ranges purges every range of a list and nothing between them") {
  constexpr unsigned kRanges = 40;  // more than a segment's 32 runs, fewer than the maximum
  static_assert(kRanges <= kOsPurgeMaxRuns);
  size_t range_bytes = 64 * kKiB;
  size_t bytes = 2 * kRanges * range_bytes;
  auto* memory = static_cast<char*>(os_map_aligned(bytes, kOsPageBytes));
  REQUIRE(memory != nullptr);
  for (auto method : {PurgeMethod::kDontNeed, PurgeMethod::kFree}) {
    memset(memory, 1, bytes);
    size_t resident_full = test_support::resident_bytes();
    OsRange ranges[kRanges];
    for (unsigned i = 0; i < kRanges; ++i) ranges[i] = {memory + 2 * i * range_bytes, range_bytes};
    size_t madvise_calls = os_counters.madvise_calls.load();
    size_t purged_bytes = os_counters.purged_bytes.load();
    os_purge_ranges(ranges, kRanges, method);
    size_t calls = os_counters.madvise_calls.load() - madvise_calls;
    CHECK(os_counters.purged_bytes.load() - purged_bytes == kRanges * range_bytes);
    // One list where the kernel takes them (Linux 6.15 and later, not under Valgrind) and
    // MAPALLOC_PURGE_LIST is not 0, else one call per range.
    if (kernel_takes_purge_lists() && options().purge_list) {
      CHECK(os_purge_lists_in_use());
      CHECK(calls == 1);
    } else {
      CHECK(calls == kRanges);
    }
    if (method == PurgeMethod::kDontNeed) {
      CHECK(resident_full - test_support::resident_bytes() >= kRanges * range_bytes - kMiB);
      for (unsigned i = 0; i < kRanges; ++i) {
        CHECK(memory[2 * i * range_bytes] == 0);        // purged
        CHECK(memory[(2 * i + 1) * range_bytes] == 1);  // between: kept
        CHECK(memory[(2 * i + 2) * range_bytes - 1] == 1);
      }
    }
  }
  os_purge_ranges(nullptr, 0, PurgeMethod::kDontNeed);  // nothing to do
  os_unmap(memory, bytes);
}

TEST_CASE("resize in place grows when the neighbourhood is free and always shrinks") {
  // Reserve a range, then release its upper half so the lower half can grow into it.
  auto* memory = static_cast<char*>(os_map_aligned(8 * kMiB, kSegmentBytes));
  REQUIRE(memory != nullptr);
  os_unmap(memory + 4 * kMiB, 4 * kMiB);
  memory[0] = 42;
  CHECK(os_resize_in_place(memory, 4 * kMiB, 6 * kMiB));
  memory[6 * kMiB - 1] = 7;
  CHECK(memory[0] == 42);
  CHECK(os_resize_in_place(memory, 6 * kMiB, 1 * kMiB));
  CHECK(memory[0] == 42);
  os_unmap(memory, 1 * kMiB);
}

TEST_CASE("os_move relocates pages without copying them") {
  size_t bytes = 2 * kMiB;
  auto* source = static_cast<char*>(os_map_aligned(bytes, kOsPageBytes));
  auto* target = static_cast<char*>(os_map_aligned(2 * bytes, kSegmentBytes));
  REQUIRE(source != nullptr);
  REQUIRE(target != nullptr);
  for (size_t i = 0; i < bytes; i += kOsPageBytes) source[i] = static_cast<char>(i / kOsPageBytes);
  CHECK(os_move(source, bytes, target, 2 * bytes));
  for (size_t i = 0; i < bytes; i += kOsPageBytes) {
    REQUIRE(target[i] == static_cast<char>(i / kOsPageBytes));
  }
  target[2 * bytes - 1] = 1;  // the grown part is usable
  os_unmap(target, 2 * bytes);
}

TEST_CASE("failures return nullptr and leave errno alone") {
  errno = 1234;
  CHECK(os_map_aligned(size_t{1} << 62, kOsPageBytes) == nullptr);
  CHECK(errno == 1234);
  os_fail_mmap_after(1);
  CHECK(os_map_aligned(kOsPageBytes, kOsPageBytes) == nullptr);
  void* memory = os_map_aligned(kOsPageBytes, kOsPageBytes);  // only one failure was injected
  CHECK(memory != nullptr);
  os_unmap(memory, kOsPageBytes);
  CHECK(errno == 1234);
}

TEST_CASE("an address-space limit makes mapping fail cleanly") {
  auto result = test_support::run_in_child([] {
    struct rlimit limit = {256 * kMiB + test_support::virtual_bytes(), RLIM_INFINITY};
    setrlimit(RLIMIT_AS, &limit);
    void* big = os_map_aligned(512 * kMiB, kSegmentBytes);
    void* small = os_map_aligned(16 * kMiB, kSegmentBytes);
    _exit(big == nullptr && small != nullptr ? 0 : 1);
  });
  CHECK(result.exited);
  CHECK(result.exit_code == 0);
}

TEST_CASE("the random seed differs between calls") {
  CHECK(os_random_seed() != os_random_seed());
  uint64_t start = os_now_ms();
  CHECK(os_now_ms() >= start);
}

TEST_CASE("a token bucket gives its burst at once, then one token per refill interval") {
  TokenBucket bucket{3, 1000};
  for (int i = 0; i < 3; ++i) CHECK(bucket.take(1000, 3, 16));
  CHECK_FALSE(bucket.take(1000, 3, 16));
  CHECK_FALSE(bucket.take(1015, 3, 16));  // not a whole interval yet
  CHECK(bucket.take(1016, 3, 16));
  CHECK_FALSE(bucket.take(1016, 3, 16));
  CHECK_FALSE(bucket.take(900, 3, 16));  // a clock that went back earns nothing
  // A long pause refills up to the burst, no more.
  for (int i = 0; i < 3; ++i) CHECK(bucket.take(100000, 3, 16));
  CHECK_FALSE(bucket.take(100000, 3, 16));
}

TEST_CASE("freed blocks are guarded within the budget: a burst, then one per refill interval") {
  constexpr size_t kRanges = 4 * kGuardBurst;
  size_t bytes = kRanges * kOsPageBytes;
  auto* memory = static_cast<char*>(os_map_aligned(bytes, kOsPageBytes));
  REQUIRE(memory != nullptr);
  // A pause long enough to refill the whole burst (earlier tests of the secure build free
  // blocks that spend it), then a quick run of requests.
  usleep(static_cast<useconds_t>((kGuardBurst + 1) * kGuardRefillMs * 1000));
  unsigned guarded = 0;
  for (size_t i = 0; i < kRanges; ++i)
    guarded += os_guard_within_budget(memory + i * kOsPageBytes, kOsPageBytes) ? 1 : 0;
  CHECK(guarded >= kGuardBurst);
  CHECK(guarded <= kGuardBurst + 1);  // (+1: an interval may end during the loop)
  usleep(static_cast<useconds_t>(3 * kGuardRefillMs * 1000));
  CHECK(os_guard_within_budget(memory, kOsPageBytes));
  os_unmap(memory, bytes);
}

TEST_CASE("os_write_whole_file rewrites a file in place and cuts it to the new length") {
  char path[] = "/tmp/mapalloc-unit-os-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  const char longer[] = "a longer first content, 40 bytes long...";
  REQUIRE(os_write_whole_file(path, longer, sizeof(longer) - 1));
  struct stat before {};
  REQUIRE(stat(path, &before) == 0);
  CHECK(before.st_size == 40);

  const char shorter[] = "short";
  REQUIRE(os_write_whole_file(path, shorter, sizeof(shorter) - 1));
  size_t length = 0, mapped = 0;
  char* data = os_read_whole_file(path, &length, &mapped);
  REQUIRE(data != nullptr);
  CHECK(length == 5);  // no tail of the longer content left behind
  CHECK(memcmp(data, "short", 5) == 0);
  os_unmap(data, mapped);
  struct stat after {};
  REQUIRE(stat(path, &after) == 0);
  CHECK(after.st_ino == before.st_ino);  // the same file rewritten, not one renamed over it
  unlink(path);

  CHECK_FALSE(os_write_whole_file("/nonexistent-directory/file", shorter, 5));
  // A write that fails (ENOSPC) is reported.
  CHECK_FALSE(os_write_whole_file("/dev/full", shorter, 5));
}
