// Memory return: resident memory falls back after frees, with light activity and no call, at
// once with malloc_trim(0), when another thread frees, and after an allocating thread exited;
// address space comes back too. Each case runs in a child process so that its figures are its
// own (the test binary's other allocations stay out of them).
#include <doctest/doctest.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "core/heap.h"
#include "mapalloc.h"
#include "platform/options.h"
#include "platform/os.h"
#include "test_support.h"

using mapalloc::kMiB;

namespace {

volatile size_t opaque_zero = 0;
size_t runtime(size_t value) { return value + opaque_zero; }

enum class Sizes { kSmall, kMedium, kLarge, kMixed };

// Allocates about `bytes` in blocks of the given kind and touches them all.
std::vector<void*> allocate(size_t bytes, Sizes sizes) {
  std::vector<void*> blocks;
  size_t total = 0;
  for (unsigned i = 0; total < bytes; ++i) {
    size_t size = sizes == Sizes::kSmall    ? 16 + (i * 37) % 1000
                  : sizes == Sizes::kMedium ? 2048 + (i * 7919) % (200 * 1024)
                  : sizes == Sizes::kLarge  ? (2 << 20) + (i % 5) * (512 << 10)
                                            : (i % 3 == 0   ? 16 + i % 500
                                               : i % 3 == 1 ? 4096 + (i * 31) % 100000
                                                            : (300 << 10) + (i % 7) * (100 << 10));
    char* block = static_cast<char*>(malloc(runtime(size)));
    REQUIRE(block != nullptr);
    memset(block, 0x5a, size);
    blocks.push_back(block);
    total += size;
  }
  return blocks;
}

void free_all(std::vector<void*>& blocks) {
  for (void* block : blocks) free(block);
  blocks.clear();
  blocks.shrink_to_fit();
}

// One small malloc/free per millisecond for `milliseconds`: the "light activity" after which
// freed memory must be back with the OS.
void light_activity(int milliseconds) {
  struct timespec one_ms = {0, 1000000};
  for (int i = 0; i < milliseconds; ++i) {
    void* volatile block = malloc(runtime(64));
    free(block);
    nanosleep(&one_ms, nullptr);
  }
}

size_t resident_mib() { return test_support::resident_bytes() / kMiB; }

constexpr size_t kSlackMib = 8;  // "within a few MiB of the start"

// Runs `scenario` in a child; the child exits 0 when its checks pass, else prints and exits 1.
void in_child(const std::function<void()>& scenario) {
  auto result = test_support::run_in_child(scenario);
  INFO("child stderr: " << result.stderr_text);
  CHECK(result.exited);
  CHECK(result.exit_code == 0);
}

void expect_near(size_t resident, size_t baseline, size_t slack_mib, const char* when) {
  if (resident > baseline + slack_mib) {
    fprintf(stderr, "%s: resident %zu MiB, started at %zu MiB\n", when, resident, baseline);
    _exit(1);
  }
}

// Light activity until resident memory is back near `baseline`, for at most two seconds (the
// purge delay is 50 ms; the slack covers a loaded machine). Fails with the figures otherwise.
void expect_back_with_light_activity(size_t baseline, const char* when) {
  for (int waited_ms = 0; waited_ms < 2000; waited_ms += 10) {
    if (resident_mib() <= baseline + kSlackMib) return;
    light_activity(10);
  }
  expect_near(resident_mib(), baseline, kSlackMib, when);
}

}  // namespace

TEST_CASE("freed small, medium and large blocks go back to the OS after the delay") {
  for (Sizes sizes : {Sizes::kSmall, Sizes::kMedium, Sizes::kLarge}) {
    in_child([sizes] {
      size_t start = resident_mib();
      auto blocks = allocate(300 * kMiB, sizes);
      if (resident_mib() < start + 250) _exit(2);  // the allocation really was resident
      free_all(blocks);
      expect_back_with_light_activity(start, "after the delay");
    });
  }
}

TEST_CASE("malloc_trim(0) gives memory back at once and reports it") {
  in_child([] {
    size_t start = resident_mib();
    auto blocks = allocate(300 * kMiB, Sizes::kMixed);
    free_all(blocks);
    if (malloc_trim(0) != 1) _exit(3);
    expect_near(resident_mib(), start, kSlackMib, "after malloc_trim");
  });
}

TEST_CASE("memory freed by another thread than the allocating one comes back") {
  in_child([] {
    size_t start = resident_mib();
    auto blocks = allocate(300 * kMiB, Sizes::kMixed);
    std::thread([&blocks] { free_all(blocks); }).join();
    expect_back_with_light_activity(start, "after remote frees and the delay");
  });
  in_child([] {
    size_t start = resident_mib();
    auto blocks = allocate(300 * kMiB, Sizes::kMixed);
    std::thread([&blocks] { free_all(blocks); }).join();
    malloc_trim(0);
    expect_near(resident_mib(), start, kSlackMib, "after remote frees and malloc_trim");
  });
}

// Blocks of many medium classes, freed by another thread while this one never allocates in
// those classes again: each class's current span got remote frees only, which the heap must
// still collect and give back (it once kept them, 6-7 MiB here, until it allocated there).
TEST_CASE("a class the heap stopped using gives its current span back after remote frees") {
  in_child([] {
    mapalloc_stats_t stats;
    mapalloc_stats_get(&stats);
    size_t in_use_before = stats.in_use_bytes;
    auto blocks = allocate(64 * kMiB, Sizes::kMedium);
    std::thread([&blocks] { free_all(blocks); }).join();
    size_t in_use = 0;
    for (int waited_ms = 0; waited_ms < 2000; waited_ms += 10) {
      light_activity(10);
      mapalloc_stats_get(&stats);
      in_use = stats.in_use_bytes;
      if (in_use <= in_use_before + kMiB) return;
    }
    fprintf(stderr, "in use after remote frees and 2 s: %zu KiB (before: %zu KiB)\n", in_use / 1024,
            in_use_before / 1024);
    _exit(1);
  });
}

// The flags of the mapping that holds `address` (smaps' VmFlags: "hg" MADV_HUGEPAGE, "nh"
// MADV_NOHUGEPAGE).
std::string vm_flags_of(const void* address) {
  FILE* smaps = fopen("/proc/self/smaps", "r");
  REQUIRE(smaps != nullptr);
  char line[512];
  bool inside = false;
  std::string flags;
  auto at = reinterpret_cast<uintptr_t>(address);
  while (fgets(line, sizeof line, smaps) != nullptr) {
    uintptr_t start, end;
    if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, ':') != nullptr &&
        line[0] != 'V') {
      inside = at >= start && at < end;
    } else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
      flags = line + 8;
    }
  }
  fclose(smaps);
  return flags;
}

// A free segment waits in the process cache with its metadata page resident: khugepaged
// could make its first 2 MiB a huge page again (seen: 8 MiB resident in four cached segments
// that held no block). Once purged it is advised MADV_NOHUGEPAGE, and MADV_HUGEPAGE again
// when reused.

// The 4 MiB segments that hold `blocks`, each once.
std::vector<void*> segments_of(const std::vector<void*>& blocks) {
  std::vector<void*> segments;
  for (void* block : blocks) {
    segments.push_back(reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(block) &
                                               ~(mapalloc::kSegmentBytes - 1)));
  }
  std::sort(segments.begin(), segments.end());
  segments.erase(std::unique(segments.begin(), segments.end()), segments.end());
  return segments;
}

size_t count_flagged(const std::vector<void*>& segments, const char* flag) {
  size_t count = 0;
  for (void* segment : segments) count += vm_flags_of(segment).find(flag) != std::string::npos;
  return count;
}

// A huge page makes 2 MiB resident at its first touch: a small program's few MiB of blocks would
// grow by up to half (larson-2t's peak RSS: 9.9 MB with 4 KiB pages, 13.7 MB once segments past
// the first 4 MiB were huge). So a segment is advised MADV_HUGEPAGE only when the process
// already holds kThpSegmentsFromBytes of segments.
TEST_CASE("segments get huge pages only once the process holds kThpSegmentsFromBytes of them") {
  in_child([] {
    malloc_trim(0);  // no cached segments: each new segment below is mapped for these blocks
    std::vector<void*> blocks, seen;
    size_t small_checked = 0, huge_checked = 0;
    while (huge_checked == 0 && blocks.size() < 1000000) {
      mapalloc_stats_t before, after;
      mapalloc_stats_get(&before);
      auto batch = allocate(256 * mapalloc::kKiB, Sizes::kSmall);
      mapalloc_stats_get(&after);
      for (void* segment : segments_of(batch)) {
        if (std::find(seen.begin(), seen.end(), segment) != seen.end()) continue;
        seen.push_back(segment);
        if (after.segments != before.segments + 1) continue;  // not known to be this one
        bool advised = vm_flags_of(segment).find(" hg") != std::string::npos;
        bool expected =
            before.segments * mapalloc::kSegmentBytes >= mapalloc::kThpSegmentsFromBytes;
        if (advised != expected) {
          fprintf(stderr, "segment mapped when %zu were: MADV_HUGEPAGE %s\n", before.segments,
                  advised ? "given" : "missing");
          _exit(1);
        }
        (expected ? huge_checked : small_checked)++;
      }
      blocks.insert(blocks.end(), batch.begin(), batch.end());
    }
    fprintf(stderr, "%zu segments checked below the threshold, %zu above\n", small_checked,
            huge_checked);
    if (huge_checked == 0) _exit(1);
    free_all(blocks);
  });
}

// The process's anonymous memory mapped as huge pages (smaps_rollup's AnonHugePages), in KiB.
size_t anon_huge_kib() {
  FILE* rollup = fopen("/proc/self/smaps_rollup", "r");
  REQUIRE(rollup != nullptr);
  char line[256];
  size_t kib = 0;
  while (fgets(line, sizeof line, rollup) != nullptr) sscanf(line, "AnonHugePages: %zu", &kib);
  fclose(rollup);
  return kib;
}

bool thp_disabled_here() {
  FILE* enabled = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
  if (enabled == nullptr) return true;
  char line[128] = "";
  bool never = fgets(line, sizeof line, enabled) != nullptr && strstr(line, "[never]") != nullptr;
  fclose(enabled);
  return never;
}

size_t collapsed_regions() {
  return mapalloc::os_counters.collapsed_huge_pages.load(std::memory_order_relaxed);
}

// Below kThpSegmentsFromBytes a segment keeps 4 KiB pages, but each 2 MiB region that its blocks
// fill (all but kCollapseSlackBytes) is made a huge page (MADV_COLLAPSE): the TLB reach of huge
// pages for the dense part of a small heap, at no more than the slack in resident memory.
TEST_CASE("a 2 MiB region of a 4 KiB-page segment becomes a huge page once its blocks fill it") {
  if (thp_disabled_here()) {
    MESSAGE("transparent huge pages are disabled on this machine: nothing to collapse");
    return;
  }
  // This process holds dozens of segments after the other tests (new ones get huge pages from
  // the start): the case runs again, alone, in a fresh copy of the test program.
  if (getenv("MAPALLOC_TEST_FRESH_PROCESS") == nullptr) {
    char program[4096] = {};
    REQUIRE(readlink("/proc/self/exe", program, sizeof program - 1) > 0);
    std::string command = std::string("MAPALLOC_TEST_FRESH_PROCESS=1 '") + program +
                          "' '-tc=a 2 MiB region of a 4 KiB-page*' >/dev/null";
    int status = system(command.c_str());
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    return;
  }
  in_child([] {
    malloc_trim(0);
    mapalloc_stats_t stats;
    mapalloc_stats_get(&stats);
    if ((stats.segments + 3) * mapalloc::kSegmentBytes > mapalloc::kThpSegmentsFromBytes) {
      fprintf(stderr, "the test process holds %zu segments already\n", stats.segments);
      _exit(1);
    }
    constexpr size_t kBlockBytes = 64, kStepBytes = 64 * mapalloc::kKiB;
    std::vector<void*> blocks(6 * kMiB / kBlockBytes);  // resident before the count starts
    size_t count = 0;
    size_t collapsed_before = collapsed_regions(), huge_kib_before = anon_huge_kib();
    size_t resident_before = test_support::resident_bytes(), in_use_before = stats.in_use_bytes;
    for (size_t total = 0; total < 6 * kMiB; total += kBlockBytes) {
      void* block = malloc(runtime(kBlockBytes));
      REQUIRE(block != nullptr);
      memset(block, 0x5a, kBlockBytes);
      blocks[count++] = block;
      if ((total + kBlockBytes) % kStepBytes != 0) continue;
      // Never more resident than the blocks, the slack of the regions made huge pages, their
      // metadata page and a carve batch.
      mapalloc_stats_get(&stats);  // blocks' bytes: the secure build's carry a trailer
      size_t grown = test_support::resident_bytes() - resident_before;
      size_t allowed = stats.in_use_bytes - in_use_before +
                       (collapsed_regions() - collapsed_before + 1) *
                           (mapalloc::kCollapseSlackBytes + 2 * mapalloc::kPageBytes);
      if (grown > allowed) {
        fprintf(stderr, "%zu KiB of blocks: resident grew by %zu KiB (%zu regions collapsed)\n",
                (stats.in_use_bytes - in_use_before) / 1024, grown / 1024,
                collapsed_regions() - collapsed_before);
        _exit(1);
      }
    }
    // 6 MiB of blocks fill at least two regions whole.
    size_t collapsed = collapsed_regions() - collapsed_before;
    size_t huge_kib = anon_huge_kib() - huge_kib_before;
    fprintf(stderr, "%zu regions collapsed, AnonHugePages +%zu KiB\n", collapsed, huge_kib);
    if (collapsed < 2 || huge_kib < 2 * 2048) _exit(1);
    free_all(blocks);
  });
}

TEST_CASE("with MAPALLOC_THP=0 no region is made a huge page") {
  in_child([] {
    REQUIRE(mapalloc_option_set("transparent_huge_pages", 0) == 0);
    size_t collapsed_before = collapsed_regions();
    auto blocks = allocate(8 * kMiB, Sizes::kSmall);
    if (collapsed_regions() != collapsed_before) {
      fprintf(stderr, "%zu regions collapsed\n", collapsed_regions() - collapsed_before);
      _exit(1);
    }
    free_all(blocks);
  });
}

TEST_CASE("a purged cached segment is no huge-page candidate until a heap takes it again") {
  in_child([] {
    auto blocks = allocate(40 * kMiB, Sizes::kSmall);  // beyond kThpSegmentsFromBytes: huge pages
    auto segments = segments_of(blocks);
    if (count_flagged(segments, " hg") == 0) {
      fprintf(stderr, "none of %zu segments was advised MADV_HUGEPAGE\n", segments.size());
      _exit(1);
    }
    // Freed by another thread: every span goes back, so the empty segments (but the one a live
    // heap keeps) enter the cache, are purged after the delay and then advised "nh".
    std::thread([&blocks] { free_all(blocks); }).join();
    size_t paused = 0;
    for (int waited_ms = 0; waited_ms < 2000 && paused == 0; waited_ms += 10) {
      light_activity(10);
      paused = count_flagged(segments, " nh");
    }
    if (paused == 0) {
      fprintf(stderr, "no free, purged segment of %zu was advised MADV_NOHUGEPAGE\n",
              segments.size());
      _exit(1);
    }
    blocks = allocate(40 * kMiB, Sizes::kSmall);  // takes the cached segments first
    auto reused = segments_of(blocks);
    if (count_flagged(reused, " nh") != 0 || count_flagged(reused, " hg") == 0) {
      fprintf(stderr, "segments in use again: %zu of %zu still MADV_NOHUGEPAGE\n",
              count_flagged(reused, " nh"), reused.size());
      _exit(1);
    }
    free_all(blocks);
  });
}

TEST_CASE("memory of a thread that exited comes back, freed there or elsewhere") {
  in_child([] {
    size_t start = resident_mib();
    std::vector<void*> blocks;
    std::thread([&blocks] { blocks = allocate(300 * kMiB, Sizes::kMixed); }).join();
    free_all(blocks);  // remote frees into the abandoned heap
    expect_back_with_light_activity(start, "after the allocating thread exited");
  });
  in_child([] {
    size_t start = resident_mib();
    std::thread([] {
      auto blocks = allocate(300 * kMiB, Sizes::kMixed);
      free_all(blocks);
    }).join();
    expect_back_with_light_activity(start, "after a thread freed its own and exited");
  });
}

TEST_CASE("memory reused at once is not purged (no refault churn)") {
  in_child([] {
    malloc_trim(0);  // nothing else pending: only this test's frees could be purged
    auto blocks = allocate(16 * kMiB, Sizes::kSmall);
    free_all(blocks);
    size_t purged_before = mapalloc::os_counters.purged_bytes.load();
    blocks = allocate(16 * kMiB, Sizes::kSmall);  // at once: a few ms, well within the delay
    if (mapalloc::os_counters.purged_bytes.load() != purged_before) _exit(5);
    free_all(blocks);
  });
}

TEST_CASE("memory reused in waves a little longer apart than the purge delay stays resident") {
  // The working set: a heap that keeps taking spans keeps the free pages its recent peak needed
  // past the purge delay, instead of purging them and faulting them in again for the next wave.
  in_child([] {
    REQUIRE(mapalloc_option_set("transparent_huge_pages", 0) == 0);
    REQUIRE(mapalloc_option_set("purge_delay_ms", 300) == 0);
    malloc_trim(0);
    size_t start = resident_mib();
    auto blocks = allocate(8 * kMiB, Sizes::kSmall);
    free_all(blocks);
    size_t purged_before = mapalloc::os_counters.purged_bytes.load();
    struct timespec pause = {0, 400 * 1000000};  // past one delay, within two
    nanosleep(&pause, nullptr);
    blocks = allocate(8 * kMiB, Sizes::kSmall);
    size_t purged = mapalloc::os_counters.purged_bytes.load() - purged_before;
    if (purged > 1 * kMiB) {
      fprintf(stderr, "the next wave found %zu KiB purged\n", purged / 1024);
      _exit(5);
    }
    free_all(blocks);
    // Once the waves stop, the same memory still goes back.
    expect_back_with_light_activity(start, "after the last wave");
  });
}

TEST_CASE("a busy heap keeps its peak of the last several purge delays resident") {
  // An interpreter's collector: a big wave, then half a second of small work that still takes
  // spans, then the big wave again. The peak of the last 8 delays stays resident meanwhile.
  in_child([] {
    REQUIRE(mapalloc_option_set("transparent_huge_pages", 0) == 0);
    REQUIRE(mapalloc_option_set("purge_delay_ms", 100) == 0);
    malloc_trim(0);
    auto blocks = allocate(8 * kMiB, Sizes::kSmall);
    free_all(blocks);
    size_t purged_before = mapalloc::os_counters.purged_bytes.load();
    struct timespec pause = {0, 60 * 1000000};
    for (int i = 0; i < 8; ++i) {  // about 500 ms, taking spans of a class the wave did not use
      std::vector<void*> small;
      for (int j = 0; j < 40; ++j) small.push_back(malloc(runtime(3000)));
      for (void* block : small) free(block);
      nanosleep(&pause, nullptr);
    }
    blocks = allocate(8 * kMiB, Sizes::kSmall);
    size_t purged = mapalloc::os_counters.purged_bytes.load() - purged_before;
    if (purged > 1 * kMiB) {
      fprintf(stderr, "the second wave found %zu KiB purged\n", purged / 1024);
      _exit(5);
    }
    free_all(blocks);
  });
}

TEST_CASE("a busy heap's free pages beyond its working set wait four purge delays") {
  // heap_purge driven with times of the test's choosing: 8 MiB of pages freed at t0, a working
  // set of one page (a peak one page above what is in use), and a heap that took a span just
  // now (busy). Two delays later the pages stay; five delays later they are purged.
  in_child([] {
    constexpr uint64_t kDelayMs = 1000;  // (no purge of the heap's own meanwhile)
    REQUIRE(mapalloc_option_set("purge_delay_ms", kDelayMs) == 0);
    malloc_trim(0);
    auto blocks = allocate(8 * kMiB, Sizes::kSmall);
    free_all(blocks);
    mapalloc::Heap* heap = mapalloc::tls_heap;
    uint64_t t0 = mapalloc::os_now_ms();
    auto purge_at = [heap, t0](uint64_t delays) {
      uint64_t now_ms = t0 + delays * kDelayMs;
      for (size_t& peak : heap->peak_used_pages) peak = heap->used_pages + 1;
      heap->bucket_start_ms = now_ms;
      heap->last_span_ms = now_ms;
      size_t before = mapalloc::os_counters.purged_bytes.load();
      mapalloc::heap_purge(heap, now_ms, kDelayMs);
      return mapalloc::os_counters.purged_bytes.load() - before;
    };
    size_t purged = purge_at(2);
    if (purged > 1 * kMiB) {
      fprintf(stderr, "two delays: %zu KiB purged from a busy heap\n", purged / 1024);
      _exit(5);
    }
    purged = purge_at(5);
    if (purged < 4 * kMiB) {
      fprintf(stderr, "five delays: only %zu KiB purged\n", purged / 1024);
      _exit(6);
    }
  });
}

TEST_CASE("pages other threads emptied are purged beyond a small budget, long before the delay") {
  // A producer's heap whose blocks were consumed elsewhere must not keep its old peak resident
  // for the purge delay (10 s here): only its budget may stay, 1 MiB or a quarter of the pages
  // still in use. One block stays on every 8th page, so that no segment empties completely (the
  // process's cache of empty segments has its own allowance).
  in_child([] {
    size_t start = resident_mib();
    constexpr size_t kBlockBytes = 256;
    constexpr size_t kCount = 64 * kMiB / kBlockBytes;
    std::vector<void*> kept, consumed;
    kept.reserve(kCount);
    consumed.reserve(kCount);
    for (size_t i = 0; i < kCount; ++i) {
      char* block = static_cast<char*>(malloc(runtime(kBlockBytes)));
      if (block == nullptr) _exit(2);
      memset(block, 0x5a, kBlockBytes);
      uintptr_t address = reinterpret_cast<uintptr_t>(block);
      bool first_of_page = (address & (mapalloc::kPageBytes - 1)) < kBlockBytes;
      (first_of_page && (address / mapalloc::kPageBytes) % 8 == 0 ? kept : consumed)
          .push_back(block);
    }
    size_t peak = resident_mib();
    if (peak < start + 60) _exit(3);
    // Set only now: remote frees are collected at most once per purge delay, and one collected
    // during the allocations above must not push the next collection 10 s away.
    mapalloc_option_set("purge_delay_ms", 10000);
    size_t purged_before = mapalloc::os_counters.purged_bytes.load();
    std::thread([&consumed] { free_all(consumed); }).join();
    // The owner's next slow paths collect the remote frees and purge the excess.
    size_t limit = start + kept.size() * mapalloc::kPageBytes / kMiB + 2 + kSlackMib;
    for (int i = 0; i < 500 && resident_mib() > limit; ++i) light_activity(1);
    size_t purged_mib = (mapalloc::os_counters.purged_bytes.load() - purged_before) / kMiB;
    if (purged_mib < 48) {
      fprintf(stderr, "purged %zu MiB of the 56 emptied by another thread\n", purged_mib);
      _exit(4);
    }
    expect_near(resident_mib(), limit, 0, "after remote frees, within the budget");
    free_all(kept);
  });
}

TEST_CASE("threads that exit together leave only a small budget of free pages each") {
  // Each thread's heap waits for a new thread to adopt it; were it to keep its whole peak
  // resident until the purge delay (10 s here), the process would hold the sum of all the dead
  // threads' peaks. Abandoned heaps share an allowance of 16 MiB of free resident pages; beyond
  // it each keeps only its budget (1 MiB).
  in_child([] {
    // Empties the heaps the test binary's other threads left behind, which these threads may
    // adopt, and their share of the allowance.
    malloc_trim(0);
    mapalloc_option_set("purge_delay_ms", 10000);
    size_t start = resident_mib();
    size_t purged_before = mapalloc::os_counters.purged_bytes.load();
    constexpr size_t kThreads = 24;
    constexpr size_t kPerThreadMib = 4;
    constexpr size_t kKeptMib = 16 + kThreads * 1;
    pthread_barrier_t all_freed;
    pthread_barrier_init(&all_freed, nullptr, kThreads);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < kThreads; ++t) {
      threads.emplace_back([&all_freed] {
        auto blocks = allocate(kPerThreadMib * kMiB, Sizes::kSmall);
        free_all(blocks);
        pthread_barrier_wait(&all_freed);  // all alive at once: 24 heaps
      });
    }
    for (auto& thread : threads) thread.join();
    pthread_barrier_destroy(&all_freed);
    size_t purged_mib = (mapalloc::os_counters.purged_bytes.load() - purged_before) / kMiB;
    if (purged_mib + kKeptMib + kSlackMib < kThreads * kPerThreadMib) {
      fprintf(stderr, "purged %zu MiB of the %zu MiB the threads freed\n", purged_mib,
              kThreads * kPerThreadMib);
      _exit(2);
    }
    expect_near(resident_mib(), start, kKeptMib + kSlackMib, "after 24 threads exited");
  });
}

TEST_CASE("new pages come from freed, still resident ones before purged ones") {
  // Half the pages freed and purged (by malloc_trim), then the other half freed but left
  // resident: allocating half again must reuse the resident half, not fault the purged one back.
  // Both halves fit in one segment, which the first and the last block keep in use (an empty
  // segment would go to the process's segment cache, which has its own rules).
  in_child([] {
    mapalloc_option_set("purge_delay_ms", 10000);
    constexpr size_t kBlockBytes = 256;
    constexpr size_t kHalf = 1536 * 1024 / kBlockBytes;
    std::vector<char*> blocks(2 * kHalf);  // allocated up front: its own faults are not counted
    auto fill = [&](size_t from, size_t to) {
      for (size_t i = from; i < to; ++i) {
        blocks[i] = static_cast<char*>(malloc(runtime(kBlockBytes)));
        if (blocks[i] == nullptr) _exit(3);
        memset(blocks[i], 0x5a, kBlockBytes);
      }
    };
    auto release = [&](size_t from, size_t to) {
      for (size_t i = from; i < to; ++i) free(blocks[i]);
    };
    fill(0, 2 * kHalf);
    release(1, kHalf);
    malloc_trim(0);
    std::vector<uintptr_t> resident_pages;  // the second half's pages, about to be freed
    resident_pages.reserve(kHalf);
    for (size_t i = kHalf; i < 2 * kHalf; ++i)
      resident_pages.push_back(reinterpret_cast<uintptr_t>(blocks[i]) &
                               ~(mapalloc::kPageBytes - 1));
    std::sort(resident_pages.begin(), resident_pages.end());
    release(kHalf, 2 * kHalf - 1);
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    fill(1, kHalf);
    getrusage(RUSAGE_SELF, &after);
    size_t reused = 0;
    for (size_t i = 1; i < kHalf; ++i) {
      uintptr_t page = reinterpret_cast<uintptr_t>(blocks[i]) & ~(mapalloc::kPageBytes - 1);
      reused += std::binary_search(resident_pages.begin(), resident_pages.end(), page) ? 1 : 0;
    }
    if (reused < (kHalf - 1) * 9 / 10) {
      fprintf(stderr, "%zu of %zu new blocks on the resident free pages\n", reused, kHalf - 1);
      _exit(2);
    }
    // So no page faults: refaulting the purged half would take up to 1.5 MiB / 4 KiB = 384
    // (fewer where the kernel maps anonymous memory in larger folios: 114 measured here).
    long faults = after.ru_minflt - before.ru_minflt;
    if (faults > 32) {
      fprintf(stderr, "%ld page faults to reuse 1.5 MiB of resident free pages\n", faults);
      _exit(4);
    }
    release(0, kHalf);
    free(blocks[2 * kHalf - 1]);
  });
}

TEST_CASE("under an address-space limit: allocate until NULL, free all, a thread still starts") {
  in_child([] {
    struct rlimit limit = {test_support::virtual_bytes() + 512 * kMiB, RLIM_INFINITY};
    if (setrlimit(RLIMIT_AS, &limit) != 0) _exit(6);
    std::vector<void*> blocks;
    blocks.reserve(1 << 20);
    for (unsigned i = 0;; ++i) {
      size_t size = i % 4 == 0 ? (3 << 20) : i % 4 == 1 ? 200000 : i % 4 == 2 ? 5000 : 100;
      void* block = malloc(runtime(size));
      if (block == nullptr) break;
      blocks.push_back(block);
    }
    if (blocks.size() < 100) _exit(7);
    for (void* block : blocks) free(block);
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, 8 * kMiB);
    pthread_t thread;
    int created = pthread_create(
        &thread, &attributes, [](void*) -> void* { return malloc(100); }, nullptr);
    if (created != 0) {
      fprintf(stderr, "pthread_create: %s\n", strerror(created));
      _exit(8);
    }
    void* result = nullptr;
    pthread_join(thread, &result);
    free(result);
    // And allocation works again after the failure.
    void* again = malloc(runtime(50 * kMiB));
    if (again == nullptr) _exit(9);
    free(again);
  });
}
