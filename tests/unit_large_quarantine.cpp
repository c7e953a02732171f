// The default build's quarantine of freed arena blocks (core/arena_quarantine.h): freed blocks
// wait inaccessible within a budget of mprotect calls, leave after the purge delay, on
// malloc_trim, when a request finds no other room, and in a forked child;
// MAPALLOC_LARGE_QUARANTINE=0 (large_quarantine) switches it off. The catches themselves (a use
// after free faults and is reported) are tests/unit_misuse.cpp's and the security suite's.
#include <doctest/doctest.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "core/arena_quarantine.h"
#include "mapalloc.h"
#include "platform/os.h"
#include "test_support.h"

using namespace mapalloc;

namespace {

// Through a pointer the compiler cannot see through: a malloc whose block is only freed would
// otherwise be elided with its free.
void* (*volatile opaque_malloc)(size_t) = malloc;
volatile size_t opaque_zero = 0;
size_t runtime(size_t value) { return value + opaque_zero; }
constexpr size_t kBlockBytes = 256 * kKiB;

// The protection of the mapping that holds the address `target`, from /proc/self/maps ("rw-p",
// "---p").
std::string protection_of(uintptr_t target) {
  FILE* maps = fopen("/proc/self/maps", "r");
  if (maps == nullptr) return "";
  char line[512];
  std::string found;
  while (fgets(line, sizeof line, maps) != nullptr) {
    unsigned long start, end;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3) continue;
    if (target >= start && target < end) found = perms;
  }
  fclose(maps);
  return found;
}

// In a child process: a failed expectation prints `what` and exits 1.
void require(bool condition, const char* what) {
  if (condition) return;
  fprintf(stderr, "%s\n", what);
  _exit(1);
}

void expect_child_passes(const std::function<void()>& body) {
  auto result = test_support::run_in_child(body);
  INFO("child stderr: " << result.stderr_text);
  CHECK(result.exited);
  CHECK(result.exit_code == 0);
}

// A block's address, kept as a number (comparing a freed pointer is undefined behaviour).
uintptr_t address_of(const void* block) { return reinterpret_cast<uintptr_t>(block); }

// In a child: the quarantine on, nothing leaving it (or unmapped) for age while the test runs,
// and a full budget (every token refilled).
void switch_on_with_full_budget() {
  mapalloc_option_set("large_quarantine", 2);
  mapalloc_option_set("purge_delay_ms", 3600 * 1000);
  mapalloc_option_set("unmap_delay_ms", 3600 * 1000);
  usleep((kQuarantineBurst + 1) * kQuarantineRefillMs * 1000);
}

uint64_t now_ms() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000 + static_cast<uint64_t>(now.tv_nsec) / 1000000;
}

}  // namespace

TEST_CASE("a freed arena block waits inaccessible, and its address is not handed out again") {
  if (kSecure) return;  // (the secure build has no arenas: see its own protected quarantine)
  expect_child_passes([] {
    mapalloc_option_set("large_quarantine", 2);
    mapalloc_option_set("unmap_delay_ms", 3600 * 1000);
    mapalloc_option_set("purge_delay_ms", 3600 * 1000);  // (nothing leaves for age meanwhile)
    usleep((kQuarantineBurst + 1) * kQuarantineRefillMs * 1000);  // a full budget
    auto* block = static_cast<char*>(opaque_malloc(runtime(kBlockBytes)));
    memset(block, 1, kBlockBytes);
    require(protection_of(address_of(block)) == "rw-p", "a live block is not read-write");
    uintptr_t address = address_of(block);
    size_t admitted = arena_quarantine_admitted();
    free(block);
    require(arena_quarantine_admitted() == admitted + 1, "the free was not admitted");
    require(protection_of(address) == "---p", "the freed block is accessible");
    require(arena_quarantine_bytes() == kBlockBytes, "the quarantine does not hold its bytes");
    mapalloc_stats_t stats;
    mapalloc_stats_get(&stats);
    require(stats.cached_large_bytes >= kBlockBytes, "the statistics do not count it as cached");
    void* next = opaque_malloc(runtime(kBlockBytes));
    require(address_of(next) != address, "the just-freed address was handed out again at once");
    free(next);
    // malloc_trim frees every waiting block (accessible again, then purged).
    malloc_trim(0);
    require(arena_quarantine_bytes() == 0, "malloc_trim left blocks in the quarantine");
  });
}

TEST_CASE("a waiting block leaves the quarantine after the purge delay, accessible and free") {
  if (kSecure) return;
  expect_child_passes([] {
    mapalloc_option_set("large_quarantine", 2);
    mapalloc_option_set("unmap_delay_ms", 3600 * 1000);
    mapalloc_option_set("purge_delay_ms", 20);
    usleep((kQuarantineBurst + 1) * kQuarantineRefillMs * 1000);  // a full budget
    auto* block = static_cast<char*>(opaque_malloc(runtime(kBlockBytes)));
    memset(block, 1, kBlockBytes);
    uintptr_t address = address_of(block);
    free(block);
    require(protection_of(address) == "---p", "the freed block is accessible");
    usleep(60 * 1000);
    // The next large request runs the purge that fell due (purge_if_due_soon).
    void* other = opaque_malloc(runtime(3 * kBlockBytes));
    require(arena_quarantine_bytes() == 0, "the block stayed past the purge delay");
    require(protection_of(address) == "rw-p", "the block left the quarantine inaccessible");
    free(other);
  });
}

TEST_CASE("the quarantine admits a burst of frees, then one per refill interval, and holds four") {
  if (kSecure) return;
  expect_child_passes([] {
    switch_on_with_full_budget();
    constexpr int kBlocks = 40;
    uintptr_t addresses[kBlocks];
    for (uintptr_t& address : addresses) address = address_of(opaque_malloc(runtime(kBlockBytes)));
    size_t admitted = arena_quarantine_admitted();
    uint64_t start_ms = now_ms();
    for (uintptr_t address : addresses) free(reinterpret_cast<void*>(address));
    uint64_t elapsed_ms = now_ms() - start_ms;
    size_t taken = arena_quarantine_admitted() - admitted;
    require(taken >= kQuarantineBurst, "fewer frees than the burst were admitted");
    require(taken <= kQuarantineBurst + elapsed_ms / kQuarantineRefillMs + 1,
            "more frees were admitted than the budget allows");
    require(arena_quarantine_bytes() == kQuarantineSlots * kBlockBytes,
            "the quarantine does not hold exactly its slots' blocks");
    unsigned inaccessible = 0;
    for (uintptr_t address : addresses) inaccessible += protection_of(address) == "---p";
    require(inaccessible == kQuarantineSlots, "not exactly the held blocks are inaccessible");
    // The budget refills: after a pause, a free is admitted again.
    usleep(3 * kQuarantineRefillMs * 1000);
    admitted = arena_quarantine_admitted();
    free(opaque_malloc(runtime(kBlockBytes)));
    require(arena_quarantine_admitted() == admitted + 1, "the budget did not refill");
    // Blocks above kQuarantineMaxBlockBytes are never held.
    usleep((kQuarantineBurst + 1) * kQuarantineRefillMs * 1000);
    admitted = arena_quarantine_admitted();
    free(opaque_malloc(runtime(kQuarantineMaxBlockBytes + kBlockBytes)));
    require(arena_quarantine_admitted() == admitted, "a block above the limit was admitted");
  });
}

TEST_CASE("by default a freed block waits with a canary: a write after free aborts as it leaves") {
  if (kSecure) return;
  auto result = test_support::run_in_child([] {
    long mode = -1;
    mapalloc_option_get("large_quarantine", &mode);
    require(mode == 1, "the canary quarantine is not the default");
    mapalloc_option_set("purge_delay_ms", 3600 * 1000);
    usleep((kQuarantineBurst + 1) * kQuarantineRefillMs * 1000);  // a full budget
    auto* block = static_cast<char*>(opaque_malloc(runtime(kBlockBytes)));
    memset(block, 1, kBlockBytes);
    uintptr_t address = address_of(block);
    free(block);
    require(protection_of(address) == "rw-p", "the block was made inaccessible");
    require(arena_quarantine_bytes() == kBlockBytes, "the freed block was not held");
    require(address_of(opaque_malloc(runtime(kBlockBytes))) != address,
            "the just-freed address was handed out again at once");
    // The use after free: a byte flipped (a fixed value would equal the random canary's byte
    // once in 256 runs, and change nothing).
    auto* freed = reinterpret_cast<volatile char*>(runtime(address));
    freed[5] = static_cast<char>(~freed[5]);
    malloc_trim(0);  // the block leaves: checked
    _exit(0);
  });
  INFO("child stderr: " << result.stderr_text);
  CHECK(result.signal == SIGABRT);
  CHECK(result.stderr_text.find("write after free of 0x") != std::string::npos);
  CHECK(result.stderr_text.find("byte 5 changed") != std::string::npos);
  // Untouched, it leaves without a word.
  expect_child_passes([] {
    mapalloc_option_set("purge_delay_ms", 3600 * 1000);
    usleep((kQuarantineBurst + 1) * kQuarantineRefillMs * 1000);
    free(opaque_malloc(runtime(kBlockBytes)));
    require(arena_quarantine_bytes() == kBlockBytes, "the freed block was not held");
    malloc_trim(0);
    require(arena_quarantine_bytes() == 0, "the block stayed");
  });
}

TEST_CASE("MAPALLOC_LARGE_QUARANTINE=0: freed arena blocks are free at once") {
  if (kSecure) return;
  expect_child_passes([] {
    mapalloc_option_set("large_quarantine", 0);
    auto* block = static_cast<char*>(opaque_malloc(runtime(kBlockBytes)));
    memset(block, 1, kBlockBytes);
    uintptr_t address = address_of(block);
    size_t admitted = arena_quarantine_admitted();
    free(block);
    require(arena_quarantine_admitted() == admitted, "a free was admitted");
    require(protection_of(address) == "rw-p", "the freed block was made inaccessible");
    require(address_of(opaque_malloc(runtime(kBlockBytes))) == address,
            "the freed run was not reused at once");
  });
}

TEST_CASE("a request that finds no room takes the quarantine's blocks before failing") {
  if (kSecure) return;
  expect_child_passes([] {
    switch_on_with_full_budget();
    // With every request for memory from the OS refused, 2 MiB blocks until the arenas' committed
    // pages are full; then one freed into the quarantine is the only room for the next.
    constexpr size_t kTwoMiB = 2 * kMiB;
    constexpr int kMaxBlocks = 4096;
    static void* blocks[kMaxBlocks];
    int count = 0;
    for (; count < 6; ++count) blocks[count] = opaque_malloc(runtime(kTwoMiB));  // (an arena)
    os_fail_mmap_after(1, true);
    while (count < kMaxBlocks && (blocks[count] = opaque_malloc(runtime(kTwoMiB))) != nullptr)
      ++count;
    require(count > 0 && count < kMaxBlocks, "the arenas did not fill");
    uintptr_t freed = address_of(blocks[count / 2]);
    free(blocks[count / 2]);
    require(arena_quarantine_bytes() == kTwoMiB, "the freed block was not held");
    size_t purged_before = os_counters.purged_bytes.load();
    void* again = opaque_malloc(runtime(kTwoMiB));
    os_fail_mmap_after(0);
    // (Taken resident: not by the last resort, which purges every free page first.)
    require(os_counters.purged_bytes.load() == purged_before, "free pages were purged for it");
    require(address_of(again) == freed, "the request was not served from the quarantined block");
    require(arena_quarantine_bytes() == 0, "the quarantine still holds the block");
    blocks[count / 2] = again;
    for (int i = 0; i < count; ++i) free(blocks[i]);
  });
}

TEST_CASE("a forked child starts with an empty quarantine and can use the held blocks' pages") {
  if (kSecure) return;
  mapalloc_option_set("large_quarantine", 2);
  mapalloc_option_set("purge_delay_ms", 3600 * 1000);
  usleep((kQuarantineBurst + 1) * kQuarantineRefillMs * 1000);
  auto* block = static_cast<char*>(opaque_malloc(runtime(kBlockBytes)));
  memset(block, 1, kBlockBytes);
  uintptr_t address = address_of(block);
  free(block);
  REQUIRE(protection_of(address) == "---p");
  expect_child_passes([address] {
    require(arena_quarantine_bytes() == 0, "the child inherited a quarantine");
    require(protection_of(address) == "rw-p", "the child's copy of the block is inaccessible");
    mapalloc_option_set("large_quarantine", 0);
    // (Other free runs may come first: take blocks until one covers the held one's address. It
    // need not start there: its pages may have joined a free run before it.)
    static void* blocks[4096];
    bool reused = false;
    int count = 0;
    while (!reused && count < 4096) {
      void* other = opaque_malloc(runtime(kBlockBytes));
      require(other != nullptr, "out of memory in the child");
      blocks[count++] = other;
      reused = address_of(other) <= address && address < address_of(other) + kBlockBytes;
    }
    memset(blocks[count - 1], 2, kBlockBytes);
    require(reused, "the held block's pages were not free in the child");
    for (int i = 0; i < count; ++i) free(blocks[i]);
  });
  CHECK(protection_of(address) == "---p");  // the parent's stays held
  malloc_trim(0);
  mapalloc_option_set("purge_delay_ms", 100);
  mapalloc_option_set("large_quarantine", 1);
}

TEST_CASE("threads freeing big blocks concurrently through the quarantine lose nothing") {
  if (kSecure) return;
  expect_child_passes([] {
    mapalloc_option_set("large_quarantine", 2);
    mapalloc_option_set("purge_delay_ms", 5);
    std::atomic<unsigned> bad{0};
    auto churn = [&bad](unsigned seed) {
      char* held[6] = {};
      size_t held_bytes[6] = {};
      uint64_t end_ms = now_ms() + 500;
      for (unsigned i = 0; now_ms() < end_ms; ++i) {
        unsigned slot = (seed + i * 7) % 6;
        if (held[slot] != nullptr) {
          for (size_t at = 0; at < held_bytes[slot]; at += 4096)
            if (held[slot][at] != static_cast<char>(slot + seed)) bad.fetch_add(1);
          free(held[slot]);
        }
        held_bytes[slot] = (200 << 10) + ((seed * 31 + i * 17) % 24) * (128 << 10);
        held[slot] = static_cast<char*>(opaque_malloc(runtime(held_bytes[slot])));
        if (held[slot] == nullptr) {
          bad.fetch_add(1);
          continue;
        }
        memset(held[slot], static_cast<char>(slot + seed), held_bytes[slot]);
      }
      for (char* block : held) free(block);
    };
    size_t admitted = arena_quarantine_admitted();
    std::thread first(churn, 1), second(churn, 2);
    first.join();
    second.join();
    require(bad.load() == 0, "a block lost its contents (or a request failed)");
    require(arena_quarantine_admitted() > admitted + kQuarantineBurst,
            "the budget never refilled during the run");
    malloc_trim(0);
    require(arena_quarantine_bytes() == 0, "blocks stayed in the quarantine after malloc_trim");
  });
}
