// Fault injection and out of memory. Every path that maps memory (a new segment, a large block,
// a large block's realloc growth in place and its move, a new thread's heap) is made to fail with
// os_fail_mmap_after, the MAPALLOC_FAULT_MMAP* variables or RLIMIT_AS, and each entry point must
// report it the way its standard says (NULL and ENOMEM, posix_memalign's ENOMEM, std::bad_alloc
// or nullptr from operator new, realloc's old block intact), while the heap stays consistent:
// blocks allocated before keep their contents, allocation works again once mapping does, and
// memory freed after a failure is reused.
//
// Each scenario runs in a child process: the injected state stays there, and so would a crash.
// The children check with EXPECT (print the line, _exit(1)), never with doctest's macros, and
// keep their books in static arrays: under injected failures the test's own allocations would
// fail too. The fresh-process sweeps re-execute this binary with MAPALLOC_FAULT_MMAP(_FROM) set
// (see probe_at_start: it runs before main and never reaches doctest).
#include <doctest/doctest.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <new>
#include <string>
#include <vector>

#include "core/arena.h"
#include "mapalloc.h"
#include "platform/config.h"
#include "platform/os.h"
#include "test_support.h"

extern char** environ;

using mapalloc::kMiB;

namespace {

volatile size_t opaque_zero = 0;
size_t runtime(size_t value) { return value + opaque_zero; }

constexpr size_t kKiB = 1024;

// --- checks inside a child ------------------------------------------------------------------

[[noreturn]] __attribute__((format(printf, 2, 3))) void child_failed(int line, const char* format,
                                                                     ...) {
  char text[600];
  va_list args;
  va_start(args, format);
  vsnprintf(text, sizeof(text), format, args);
  va_end(args);
  fprintf(stderr, "unit_faults.cpp:%d: %s\n", line, text);
  _exit(1);
}

#define EXPECT(condition)                                                \
  do {                                                                   \
    if (!(condition)) child_failed(__LINE__, "expected %s", #condition); \
  } while (0)
#define EXPECTF(condition, ...)                            \
  do {                                                     \
    if (!(condition)) child_failed(__LINE__, __VA_ARGS__); \
  } while (0)

// Runs `scenario` in a child and asserts that it exited 0.
void in_child(const char* what, const std::function<void()>& scenario) {
  auto result = test_support::run_in_child(scenario);
  INFO(std::string(what) << ": child stderr: " << result.stderr_text);
  CHECK(result.exited);
  CHECK(result.signal == 0);
  CHECK(result.exit_code == 0);
}

mapalloc_stats_t stats_now() {
  mapalloc_stats_t stats;
  mapalloc_stats_get(&stats);
  return stats;
}

size_t failed_maps() { return mapalloc::os_counters.failed_maps.load(); }

// Empties the segment cache and unmaps empty arenas (the first trim may move abandoned heaps'
// empty segments into the cache; the next one unmaps them), so that the next allocation that
// fails has nothing to release and retry with.
void empty_caches() {
  for (int i = 0; i < 8; ++i) {
    malloc_trim(0);  // (unmaps every empty arena)
    mapalloc_stats_t stats = stats_now();
    if (stats.cached_segments == 0 && stats.cached_large_bytes == 0) return;
  }
  child_failed(__LINE__, "the caches do not empty with malloc_trim(0)");
}

// Timing must not matter: nothing cached is unmapped for age while a scenario runs.
void no_unmapping_for_age() { mapalloc_option_set("unmap_delay_ms", 3600 * 1000); }

// --- contents -------------------------------------------------------------------------------

// Word i of a block holds seed ^ (i * golden ratio); a tail shorter than a word the seed's bytes.
void fill(void* block, size_t bytes, uint64_t seed) {
  auto* out = static_cast<unsigned char*>(block);
  size_t words = bytes / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t word = seed ^ (i * 0x9e3779b97f4a7c15ull);
    memcpy(out + 8 * i, &word, 8);
  }
  for (size_t i = words * 8; i < bytes; ++i) out[i] = static_cast<unsigned char>(seed >> (i % 8));
}

// The first offset below `bytes` that does not hold the pattern, or SIZE_MAX.
size_t first_mismatch(const void* block, size_t bytes, uint64_t seed) {
  const auto* in = static_cast<const unsigned char*>(block);
  size_t words = bytes / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t word;
    memcpy(&word, in + 8 * i, 8);
    if (word != (seed ^ (i * 0x9e3779b97f4a7c15ull))) return 8 * i;
  }
  for (size_t i = words * 8; i < bytes; ++i) {
    if (in[i] != static_cast<unsigned char>(seed >> (i % 8))) return i;
  }
  return SIZE_MAX;
}

bool all_zero(const void* block, size_t bytes) {
  const auto* in = static_cast<const unsigned char*>(block);
  for (size_t i = 0; i < bytes; ++i) {
    if (in[i] != 0) return false;
  }
  return true;
}

// --- the entry points -----------------------------------------------------------------------

enum class Api {
  kMalloc,
  kCalloc,
  kAlignedAlloc,
  kPosixMemalign,
  kMemalign,
  kValloc,
  kNew,
  kNewArray,
  kNewNothrow,
  kNewAligned,
  kNewAlignedNothrow,
};

const char* api_name(Api api) {
  switch (api) {
    case Api::kMalloc:
      return "malloc";
    case Api::kCalloc:
      return "calloc";
    case Api::kAlignedAlloc:
      return "aligned_alloc";
    case Api::kPosixMemalign:
      return "posix_memalign";
    case Api::kMemalign:
      return "memalign";
    case Api::kValloc:
      return "valloc";
    case Api::kNew:
      return "operator new";
    case Api::kNewArray:
      return "operator new[]";
    case Api::kNewNothrow:
      return "operator new(nothrow)";
    case Api::kNewAligned:
      return "operator new(align_val_t)";
    case Api::kNewAlignedNothrow:
      return "operator new(align_val_t, nothrow)";
  }
  return "?";
}

bool is_cxx(Api api) { return api >= Api::kNew; }

// In a process whose very first mapping requests failed, libstdc++ has no emergency pool for
// exceptions (it mallocs it at start-up), and throwing std::bad_alloc calls std::terminate: the
// fresh-process probes use the nothrow forms instead of the throwing ones.
bool avoid_throwing_new = false;

Api without_throwing(Api api) {
  if (!avoid_throwing_new) return api;
  if (api == Api::kNew || api == Api::kNewArray) return Api::kNewNothrow;
  if (api == Api::kNewAligned) return Api::kNewAlignedNothrow;
  return api;
}

struct Request {
  Api api;
  size_t size;
  size_t alignment = 16;  // for the aligned entry points
};

constexpr int kErrnoSentinel = 4242;

// Calls the entry point. On success checks what every block must satisfy (alignment, usable
// size, ownership, errno untouched, calloc's zeroes); on failure checks that it was reported as
// the entry point reports out of memory, and returns nullptr.
void* call_api(const Request& original) {
  Request request = original;
  request.api = without_throwing(request.api);
  size_t size = runtime(request.size);
  size_t alignment = runtime(request.alignment);
  void* block = nullptr;
  bool threw = false;
  errno = kErrnoSentinel;
  switch (request.api) {
    case Api::kMalloc:
      block = malloc(size);
      break;
    case Api::kCalloc:
      block = calloc(1, size);
      break;
    case Api::kAlignedAlloc:
      block = aligned_alloc(alignment, size);
      break;
    case Api::kPosixMemalign: {
      int result = posix_memalign(&block, alignment, size);
      if (result != 0) {
        EXPECTF(result == ENOMEM, "posix_memalign(%zu, %zu) returned %d", alignment, size, result);
        // errno is ENOMEM as well, as glibc sets it (programs written for glibc read it).
        EXPECTF(errno == ENOMEM, "posix_memalign failure left errno at %d", errno);
        return nullptr;
      }
      break;
    }
    case Api::kMemalign:
      block = memalign(alignment, size);
      break;
    case Api::kValloc:
      block = valloc(size);
      break;
    case Api::kNew:
      try {
        block = ::operator new(size);
      } catch (const std::bad_alloc&) {
        threw = true;
      }
      break;
    case Api::kNewArray:
      try {
        block = ::operator new[](size);
      } catch (const std::bad_alloc&) {
        threw = true;
      }
      break;
    case Api::kNewNothrow:
      block = ::operator new(size, std::nothrow);
      break;
    case Api::kNewAligned:
      try {
        block = ::operator new (size, std::align_val_t{alignment});
      } catch (const std::bad_alloc&) {
        threw = true;
      }
      break;
    case Api::kNewAlignedNothrow:
      block = ::operator new (size, std::align_val_t{alignment}, std::nothrow);
      break;
  }
  if (threw) return nullptr;  // operator new reports by std::bad_alloc alone
  if (block == nullptr) {
    bool cxx = request.api == Api::kNewNothrow || request.api == Api::kNewAlignedNothrow;
    EXPECTF(cxx || errno == ENOMEM, "%s(%zu) returned NULL with errno %d, not ENOMEM",
            api_name(request.api), size, errno);
    return nullptr;
  }
  // (operator new's retries through a new-handler may leave the failed attempt's ENOMEM behind,
  // as libstdc++'s own operator new does: the C++ forms are not held to this.)
  EXPECTF(is_cxx(request.api) || errno == kErrnoSentinel,
          "a successful %s(%zu) changed errno to %d", api_name(request.api), size, errno);
  size_t expected_alignment =
      request.api == Api::kValloc ? 4096
      : request.api == Api::kAlignedAlloc || request.api == Api::kPosixMemalign ||
              request.api == Api::kMemalign || request.api == Api::kNewAligned ||
              request.api == Api::kNewAlignedNothrow
          ? alignment
          : 16;
  EXPECTF(reinterpret_cast<uintptr_t>(block) % expected_alignment == 0,
          "%s(%zu) gave %p, not %zu-aligned", api_name(request.api), size, block,
          expected_alignment);
  EXPECTF(malloc_usable_size(block) >= size, "%s(%zu): usable size %zu", api_name(request.api),
          size, malloc_usable_size(block));
  EXPECT(mapalloc_owns(block));
  if (request.api == Api::kCalloc) EXPECTF(all_zero(block, size), "calloc(%zu) not zeroed", size);
  return block;
}

void release_api(Api api, void* block, size_t alignment) {
  switch (api) {
    case Api::kNew:
      ::operator delete(block);
      break;
    case Api::kNewArray:
      ::operator delete[](block);
      break;
    case Api::kNewNothrow:
      ::operator delete(block, std::nothrow);
      break;
    case Api::kNewAligned:
      ::operator delete (block, std::align_val_t{alignment});
      break;
    case Api::kNewAlignedNothrow:
      ::operator delete (block, std::align_val_t{alignment}, std::nothrow);
      break;
    default:
      free(block);
      break;
  }
}

// --- the blocks a child holds ---------------------------------------------------------------

struct Live {
  void* block;
  Request request;  // request.size is the current size (after reallocs)
  uint64_t seed;    // also orders the blocks by when they were obtained (or last reallocated)
};

constexpr int kMaxLive = 2048;
Live live[kMaxLive];
int live_count = 0;
uint64_t next_seed = 1;

struct Tally {
  int attempts = 0;
  int failures = 0;
};

// Allocates, fills and records a block; nullptr (counted) when the entry point reported failure.
void* track(const Request& request, Tally& tally) {
  EXPECT(live_count < kMaxLive);
  tally.attempts++;
  void* block = call_api(request);
  if (block == nullptr) {
    tally.failures++;
    return nullptr;
  }
  uint64_t seed = next_seed++;
  fill(block, request.size, seed * 0x2545f4914f6cdd1dull);
  live[live_count++] =
      Live{block, {without_throwing(request.api), request.size, request.alignment}, seed};
  return block;
}

void verify(const Live& entry) {
  size_t bad = first_mismatch(entry.block, entry.request.size, entry.seed * 0x2545f4914f6cdd1dull);
  EXPECTF(bad == SIZE_MAX, "block %p (%s, %zu bytes) corrupted at offset %zu", entry.block,
          api_name(entry.request.api), entry.request.size, bad);
  EXPECT(mapalloc_owns(entry.block));
  EXPECT(malloc_usable_size(entry.block) >= entry.request.size);
}

void verify_all() {
  for (int i = 0; i < live_count; ++i) {
    if (live[i].block != nullptr) verify(live[i]);
  }
}

void release(Live& entry) {
  verify(entry);
  release_api(entry.request.api, entry.block, entry.request.alignment);
  entry.block = nullptr;
}

void release_all() {
  for (int i = live_count - 1; i >= 0; --i) {
    if (live[i].block != nullptr) release(live[i]);
  }
  live_count = 0;
}

// Reallocates a malloc'd block: on success the contents up to the smaller size survive and the
// block is refilled; on failure (counted) realloc gave NULL and ENOMEM and the old block is
// untouched.
void realloc_tracked(Live& entry, size_t new_size, Tally& tally) {
  EXPECT(entry.request.api == Api::kMalloc || entry.request.api == Api::kCalloc);
  verify(entry);
  tally.attempts++;
  size_t old_usable = malloc_usable_size(entry.block);
  errno = kErrnoSentinel;
  void* moved = realloc(entry.block, runtime(new_size));
  if (moved == nullptr) {
    tally.failures++;
    EXPECTF(errno == ENOMEM, "realloc(%zu -> %zu) failed with errno %d", entry.request.size,
            new_size, errno);
    verify(entry);  // the old block is intact
    EXPECT(malloc_usable_size(entry.block) == old_usable);
    return;
  }
  EXPECTF(errno == kErrnoSentinel, "a successful realloc changed errno to %d", errno);
  size_t kept = entry.request.size < new_size ? entry.request.size : new_size;
  size_t bad = first_mismatch(moved, kept, entry.seed * 0x2545f4914f6cdd1dull);
  EXPECTF(bad == SIZE_MAX, "realloc(%zu -> %zu) lost the contents at offset %zu",
          entry.request.size, new_size, bad);
  EXPECT(malloc_usable_size(moved) >= new_size);
  EXPECT(reinterpret_cast<uintptr_t>(moved) % 16 == 0);
  entry.block = moved;
  entry.request.size = new_size;
  entry.request.api = Api::kMalloc;
  entry.seed = next_seed++;
  fill(moved, new_size, entry.seed * 0x2545f4914f6cdd1dull);
}

// Allocates and frees blocks of every kind of size, checking their contents: the heap works.
void exercise_heap() {
  static const size_t kSizes[] = {1,    16,    24,    100,    256,     1000,    1024,
                                  4000, 12345, 65536, 200000, 1 << 20, 3 << 20, 5 * kMiB + 7};
  int start = live_count;
  Tally tally;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 120; ++i) {
      size_t size = kSizes[(i * 7 + round) % (sizeof(kSizes) / sizeof(kSizes[0]))];
      if (size > kMiB && i % 5 != 0) size = 777;  // a few large blocks, not dozens
      Api api = i % 3 == 0 ? Api::kCalloc : i % 11 == 0 ? Api::kNew : Api::kMalloc;
      track({api, size}, tally);
    }
    verify_all();
    for (int i = start; i < live_count; i += 2) {
      if (live[i].block != nullptr) release(live[i]);
    }
    for (int i = start + 1; i < live_count; i += 4) {
      if (live[i].block != nullptr && !is_cxx(live[i].request.api)) {
        realloc_tracked(live[i], live[i].request.size * 2 + 1, tally);
      }
    }
    verify_all();
  }
  EXPECTF(tally.failures == 0, "%d of %d allocations failed with nothing injected", tally.failures,
          tally.attempts);
  for (int i = live_count - 1; i >= start; --i) {
    if (live[i].block != nullptr) release(live[i]);
  }
  live_count = start;
}

// --- threads --------------------------------------------------------------------------------

// The stack size of every thread these tests start. glibc caches a joined thread's stack and
// reuses it only for a thread whose stack is not much smaller.
constexpr size_t kThreadStackBytes = 256 * kKiB;

pthread_t start_thread(void* (*body)(void*), void* argument) {
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setstacksize(&attributes, kThreadStackBytes);
  pthread_t thread;
  int created = pthread_create(&thread, &attributes, body, argument);
  pthread_attr_destroy(&attributes);
  EXPECTF(created == 0, "pthread_create: %s", strerror(created));
  return thread;
}

// Empties the pool of abandoned heaps: starts threads that allocate once and stay parked until
// the child exits, until one of them had to create a heap. From then on a new thread's first
// allocation creates a heap, which is a mapping request. Returns the threads parked.
int drain_heap_pool() {
  static int park_pipe[2] = {-1, -1};
  static sem_t ready;
  if (park_pipe[0] < 0) {
    EXPECT(pipe(park_pipe) == 0);
    sem_init(&ready, 0, 0);
  }
  auto parked = [](void*) -> void* {
    void* volatile block = malloc(runtime(16));
    free(block);
    sem_post(&ready);
    char byte;
    while (read(park_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    return nullptr;
  };
  for (int count = 1; count <= 4096; ++count) {
    size_t heaps_before = stats_now().heaps;
    start_thread(parked, nullptr);
    while (sem_wait(&ready) != 0) {
    }
    if (stats_now().heaps > heaps_before) return count;
  }
  child_failed(__LINE__, "4096 threads and still no new heap");
}

// ---- the workload of the sweeps ------------------------------------------------------------

struct HelperWork {
  Tally tally;
  int main_small_first, main_small_end;  // main's small blocks, some freed here
  int main_medium;                       // a block of main's reallocated here
};

// A second thread: a heap of its own (created: the pool is drained), its own blocks, and frees
// and a realloc of the main thread's blocks (remote).
void* helper_main(void* argument) {
  auto* work = static_cast<HelperWork*>(argument);
  for (int i = 0; i < 60; ++i)
    track({i % 4 == 0 ? Api::kCalloc : Api::kMalloc, size_t(8 + i * 40)}, work->tally);
  for (int i = 0; i < 6; ++i) track({Api::kMalloc, 100 * kKiB + i * 30000}, work->tally);
  track({Api::kNew, 2 * kMiB + 12345}, work->tally);
  for (int i = work->main_small_first; i < work->main_small_end; i += 3) {
    if (live[i].block != nullptr) release(live[i]);
  }
  if (work->main_medium >= 0 && live[work->main_medium].block != nullptr) {
    realloc_tracked(live[work->main_medium], live[work->main_medium].request.size + 70000,
                    work->tally);
  }
  return nullptr;
}

// A fixed sequence of allocations of every kind: small and medium blocks (new segments), large
// blocks of every entry point and alignment, realloc growth of a large block (in place or by
// moving), arena-to-large realloc, a thread with a new heap that frees the main thread's blocks.
// Every failure must be a clean one; every block obtained is verified and freed.
Tally run_workload() {
  Tally tally;
  live_count = 0;
  int small_first = live_count;
  for (int i = 0; i < 150; ++i) {
    Api api = i % 5 == 0 ? Api::kCalloc : i % 7 == 0 ? Api::kNew : Api::kMalloc;
    track({api, size_t(16 + (i * 37) % 1000)}, tally);
  }
  int small_end = live_count;
  int medium = -1;
  for (int i = 0; i < 40; ++i) {
    size_t size = 64 * kKiB + (i * 7919 % 240) * kKiB;
    Request request = {Api::kMalloc, size};
    if (i % 4 == 1) request = {Api::kAlignedAlloc, size, size_t{4096} << (i % 5)};
    if (i % 4 == 2) request = {Api::kPosixMemalign, size, size_t{256} << (i % 9)};
    if (i % 8 == 3) request.api = Api::kCalloc;
    if (track(request, tally) != nullptr && request.api == Api::kMalloc) medium = live_count - 1;
  }
  track({Api::kMalloc, 3 * kMiB}, tally);
  int grown = live[live_count - 1].request.size == 3 * kMiB &&
                      live[live_count - 1].request.api == Api::kMalloc
                  ? live_count - 1
                  : -1;
  track({Api::kCalloc, 2 * kMiB + kMiB / 2}, tally);
  track({Api::kAlignedAlloc, 3 * kMiB / 2, kMiB}, tally);
  track({Api::kPosixMemalign, 2 * kMiB + 1, 256 * kKiB}, tally);
  track({Api::kAlignedAlloc, 100, 128 * kKiB}, tally);  // alignment beyond spans: large
  track({Api::kNewArray, 5 * kMiB}, tally);
  track({Api::kNewAligned, 3 * kMiB, 2 * kMiB}, tally);
  track({Api::kNewNothrow, 2 * kMiB}, tally);
  track({Api::kMemalign, 64 * kKiB, 8 * kMiB}, tally);  // segment-aligned: the header below
  if (grown >= 0) realloc_tracked(live[grown], 7 * kMiB, tally);          // large growth
  if (grown >= 0) realloc_tracked(live[grown], 12 * kMiB + 4321, tally);  // and again
  if (small_end > small_first && live[small_first + 1].block != nullptr &&
      live[small_first + 1].request.api == Api::kMalloc) {
    realloc_tracked(live[small_first + 1], 2 * kMiB, tally);  // arena to large
  }
  if (medium >= 0) realloc_tracked(live[medium], live[medium].request.size + 300 * kKiB, tally);

  HelperWork work{Tally{}, small_first, small_end, medium};
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setstacksize(&attributes, kThreadStackBytes);
  pthread_t helper;
  // pthread_create may itself allocate (its thread's TLS vector), and fail like anything else.
  if (pthread_create(&helper, &attributes, helper_main, &work) == 0) {
    pthread_join(helper, nullptr);
    tally.attempts += work.tally.attempts;
    tally.failures += work.tally.failures;
  }
  pthread_attr_destroy(&attributes);

  for (int i = 0; i < 80; ++i) {
    track({i % 2 == 0 ? Api::kMalloc : Api::kNewNothrow, size_t(900 + i * 1500)}, tally);
  }
  track({Api::kValloc, 3 * kMiB + 5}, tally);
  verify_all();
  return tally;
}

// Whether a request is served by a large block rather than by a size class's span; and whether
// that block is its own mapping (too big or too aligned for an arena; every large block in the
// secure build), which is unmapped when freed, rather than a run of an arena's pages.
bool is_large(const Request& request) {
  size_t alignment = request.alignment < 16 ? 16 : request.alignment;
  return alignment > 64 * kKiB ||
         (request.size + alignment - 1) / alignment * alignment > mapalloc::kClassMaxBytes;
}
bool is_own_mapping(const Request& request) {
  size_t alignment = request.alignment < 16 ? 16 : request.alignment;
  return is_large(request) && !mapalloc::arena_serves(request.size, alignment);
}
// The same for a block obtained (a block that outgrew its arena run by realloc is one, too).
bool is_own_mapping(const void* block) {
  unsigned kind = mapalloc::unit_kind(block);
  return kind == mapalloc::kUnitLarge || kind == mapalloc::kUnitLargeBelow;
}

// Mappings a scenario may leave behind after everything was freed and trimmed: the heaps it
// created (heaps are immortal) and the one empty segment a live heap keeps.
constexpr size_t kKeptAfterTrimBytes = mapalloc::kSegmentBytes + 4 * 64 * kKiB;

// After a workload under failures (`mapped_before`: the mapped bytes when the failures were
// armed): everything it got is verified and freed, then the freed memory must be reused and
// nothing may stay lost:
//   - every arena block the workload held at its end is allocated again while every mapping
//     request fails (their pages are free in the arenas; blocks of their own mapping are
//     unmapped when freed and left out);
//   - every size-class block it held at its end is allocated again, in the order the workload
//     got them, with at most one new segment (blocks of different span sizes may pack differently
//     the second time), and the mapped bytes do not grow past those of the workload's end (the
//     secure build, whose quarantine holds freed blocks back, is trimmed first);
//   - with mapping allowed again, every kind of allocation works;
//   - once all is freed and trimmed, the mapped bytes are back to where they started.
void recover_after_failures(size_t mapped_before) {
  verify_all();
  static Live replay_order[kMaxLive];
  static Request replay[kMaxLive];
  int replay_count = 0;
  for (int i = 0; i < live_count; ++i) {
    if (live[i].block != nullptr && !is_own_mapping(live[i].block)) {
      replay_order[replay_count++] = live[i];
    }
  }
  std::sort(replay_order, replay_order + replay_count,
            [](const Live& a, const Live& b) { return a.seed < b.seed; });
  for (int i = 0; i < replay_count; ++i) replay[i] = replay_order[i].request;
  size_t mapped_at_end = stats_now().mapped_bytes;
  release_all();
  // (The last blocks freed may wait in the arenas' quarantine, and the replay's placement
  // would differ: out of the way first. A request with no room takes them anyway: see
  // tests/unit_large_quarantine.cpp.)
  mapalloc::arena_release_quarantine();

  Tally tally;
  if constexpr (!mapalloc::kSecure) {
    mapalloc::os_fail_mmap_after(1, true);
    for (int i = 0; i < replay_count; ++i) {
      if (!is_large(replay[i])) continue;
      EXPECTF(track(replay[i], tally) != nullptr,
              "large block %d of %d freed after the failures, %s(%zu, alignment %zu), was not "
              "served from the arenas' free pages",
              i, replay_count, api_name(replay[i].api), replay[i].size, replay[i].alignment);
    }
    mapalloc::os_fail_mmap_after(2, true);
  } else {
    mapalloc::os_fail_mmap_after(0);
    malloc_trim(0);  // flushes the quarantine
  }
  for (int i = 0; i < replay_count; ++i) {
    if (is_large(replay[i])) continue;
    EXPECTF(track(replay[i], tally) != nullptr,
            "block %d of %d freed after the failures, %s(%zu, alignment %zu), could not be "
            "allocated again with at most one new segment",
            i, replay_count, api_name(replay[i].api), replay[i].size, replay[i].alignment);
  }
  size_t mapped_again = stats_now().mapped_bytes;
  EXPECTF(mapped_again <= mapped_at_end + mapalloc::kSegmentBytes,
          "re-allocating the %d blocks freed after the failures grew the mapped bytes from %zu "
          "to %zu",
          replay_count, mapped_at_end, mapped_again);
  release_all();

  mapalloc::os_fail_mmap_after(0);
  exercise_heap();

  malloc_trim(0);
  malloc_trim(0);
  size_t mapped_after = stats_now().mapped_bytes;
  EXPECTF(mapped_after <= mapped_before + kKeptAfterTrimBytes,
          "after freeing everything and trimming, %zu bytes mapped, %zu before the failures",
          mapped_after, mapped_before);
}

// Under RLIMIT_AS, free memory that is still mapped (empty arenas, cached segments) can be all
// that stands between a request and success: a failed allocation releases it and retries.
void retry_after_release() {
  no_unmapping_for_age();
  Tally tally;
  for (int i = 0; i < 100; ++i) track({Api::kMalloc, 300 * kKiB}, tally);  // an arena
  for (int i = 0; i < 1500; ++i) track({Api::kMalloc, 4000}, tally);       // segments
  release_all();
  mapalloc_stats_t before = stats_now();
  EXPECTF(before.arenas == 1, "%zu arenas after %d blocks", before.arenas, tally.attempts);
  struct rlimit limit = {test_support::virtual_bytes() + 8 * kMiB, RLIM_INFINITY};
  EXPECT(setrlimit(RLIMIT_AS, &limit) == 0);
  // More than the (empty) arena holds: a new arena cannot be reserved, nor its own mapping
  // made, until the empty arena is unmapped.
  EXPECT(track({Api::kMalloc, 68 * kMiB}, tally) != nullptr);  // the retry succeeded
  mapalloc_stats_t after = stats_now();
  EXPECT(after.cached_segments == 0);
  EXPECTF(after.unmapped_bytes >= before.unmapped_bytes + before.arena_reserved_bytes,
          "unmapped %zu bytes for the retry, arenas reserved %zu",
          after.unmapped_bytes - before.unmapped_bytes, before.arena_reserved_bytes);
  // Nothing left to release: NULL, and the heap is fine.
  EXPECT(track({Api::kMalloc, 1024 * kMiB}, tally) == nullptr);
  limit.rlim_cur = RLIM_INFINITY;
  EXPECT(setrlimit(RLIMIT_AS, &limit) == 0);
  verify_all();
  release_all();
  exercise_heap();
  fprintf(stderr, "retry: ok\n");
}

// The fresh-process probes: this binary started again with MAPALLOC_UNIT_FAULTS_PROBE set runs a
// scenario before main and exits. With "1" (and MAPALLOC_FAULT_MMAP(_FROM)=N), the sweep's
// workload: its first mapping requests are the main thread's heap and segments (libstdc++'s
// start-up allocations come first). With "retry", retry_after_release.
__attribute__((constructor(101))) void probe_at_start() {
  const char* probe = getenv("MAPALLOC_UNIT_FAULTS_PROBE");
  if (probe == nullptr) return;
  if (strcmp(probe, "retry") == 0) {
    retry_after_release();
    _exit(0);
  }
  avoid_throwing_new = true;
  no_unmapping_for_age();
  // glibc keeps a joined thread's stack in its cache, with the stack's DTV (a calloc of about
  // 300 bytes) still allocated. Made here, before the workload, that long-lived block sits in
  // the first segment; made by the workload's pthread_create, it could pin whichever segment its
  // class's span happened to be in, and the check that everything is unmapped again would fail.
  // (kThreadStackBytes, as for the workload's helper, so that the helper reuses this stack.)
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setstacksize(&attributes, kThreadStackBytes);
  pthread_t warm_up;
  if (pthread_create(
          &warm_up, &attributes, [](void*) -> void* { return nullptr; }, nullptr) == 0)
    pthread_join(warm_up, nullptr);
  pthread_attr_destroy(&attributes);
  Tally tally = run_workload();
  recover_after_failures(0);
  fprintf(stderr, "probe: attempts=%d failures=%d\n", tally.attempts, tally.failures);
  _exit(0);
}

// Parses "attempts=A failures=F" from a child's stderr; false if absent.
bool parse_tally(const std::string& text, Tally* tally) {
  size_t at = text.find("attempts=");
  return at != std::string::npos && sscanf(text.c_str() + at, "attempts=%d failures=%d",
                                           &tally->attempts, &tally->failures) == 2;
}

// Runs this binary again as a probe `mode` (see probe_at_start), with `setting` in its
// environment if given.
test_support::ChildResult run_probe_mode(const char* mode, const std::string& setting = "") {
  std::vector<std::string> settings;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (strncmp(*entry, "MAPALLOC_", 9) != 0) settings.emplace_back(*entry);
  }
  if (!setting.empty()) settings.push_back(setting);
  settings.push_back(std::string("MAPALLOC_UNIT_FAULTS_PROBE=") + mode);
  std::vector<char*> envp;
  for (std::string& setting : settings) envp.push_back(setting.data());
  envp.push_back(nullptr);
  char program[] = "unit-faults-probe";
  char* argv[] = {program, nullptr};
  return test_support::run_in_child([&] {
    execve("/proc/self/exe", argv, envp.data());
    _exit(127);
  });
}

// Runs this binary again as a probe of the sweep's workload with `variable`=`value`.
test_support::ChildResult run_probe(const char* variable, size_t value) {
  return run_probe_mode("1", std::string(variable) + "=" + std::to_string(value));
}

constexpr size_t kMaxSweep = 400;

}  // namespace

// ---- new segments ----------------------------------------------------------------------------

TEST_CASE(
    "fault: a segment that cannot be mapped fails the size-class allocation of every entry "
    "point") {
  const Request requests[] = {
      {Api::kMalloc, 100 * kKiB},
      {Api::kCalloc, 110 * kKiB},
      {Api::kAlignedAlloc, 64 * kKiB, 64 * kKiB},
      {Api::kPosixMemalign, 90 * kKiB, 4096},
      {Api::kMemalign, 80 * kKiB, 32 * kKiB},
      {Api::kValloc, 100 * kKiB},
      {Api::kNew, 100 * kKiB},
      {Api::kNewArray, 96 * kKiB},
      {Api::kNewNothrow, 100 * kKiB},
      {Api::kNewAligned, 100 * kKiB, 8 * kKiB},
      {Api::kNewAlignedNothrow, 90 * kKiB, 1024},
  };
  for (const Request& request : requests) {
    in_child(api_name(request.api), [request] {
      no_unmapping_for_age();
      empty_caches();
      size_t failed_before = failed_maps();
      mapalloc::os_fail_mmap_after(1);  // the next request: a segment, once the pages run out
      Tally tally;
      while (track(request, tally) != nullptr) {
        EXPECTF(tally.attempts < 20000, "%s: no failure after %d blocks", api_name(request.api),
                tally.attempts);
      }
      EXPECT(tally.failures == 1);
      EXPECT(failed_maps() == failed_before + 1);
      // Only one request was made to fail: the same call succeeds now (a new segment).
      EXPECT(track(request, tally) != nullptr);
      verify_all();
      release_all();
      exercise_heap();
    });
  }
}

TEST_CASE("fault: realloc that needs a new segment fails and keeps the old block") {
  in_child("realloc", [] {
    no_unmapping_for_age();
    empty_caches();
    Tally tally;
    // Small blocks first, so that only the reallocs below can need a new segment.
    for (int i = 0; i < 1500; ++i) EXPECT(track({Api::kMalloc, 48}, tally) != nullptr);
    mapalloc::os_fail_mmap_after(1);
    // Each realloc of a small block to a medium size takes a new block of the medium class.
    int failed = -1;
    for (int i = 0; i < 1500 && failed < 0; ++i) {
      realloc_tracked(live[i], 120 * kKiB, tally);
      if (tally.failures != 0) failed = i;
    }
    EXPECTF(failed >= 0, "1500 reallocs to 120 KiB and no new segment needed");
    EXPECT(tally.failures == 1);
    realloc_tracked(live[failed], 120 * kKiB, tally);  // one failure only: now it works
    EXPECT(tally.failures == 1);
    verify_all();
    release_all();
    exercise_heap();
  });
}

// ---- large blocks ----------------------------------------------------------------------------

TEST_CASE("fault: a large block that cannot be mapped fails every entry point cleanly") {
  const Request requests[] = {
      {Api::kMalloc, 3 * kMiB},
      {Api::kCalloc, 3 * kMiB + 17},
      {Api::kMalloc, 300 * kKiB},
      {Api::kAlignedAlloc, 2 * kMiB, kMiB},
      {Api::kAlignedAlloc, 100, 128 * kKiB},  // alignment above what spans give
      {Api::kAlignedAlloc, 4096, 8 * kMiB},   // beyond arenas' alignment: its own mapping
      {Api::kPosixMemalign, 3 * kMiB, 2 * kMiB},
      {Api::kMemalign, 1 << 20 | 1, 4096},
      {Api::kValloc, 6 * kMiB},
      {Api::kNew, 3 * kMiB},
      {Api::kNewArray, 9 * kMiB},
      {Api::kNewNothrow, 2 * kMiB},
      {Api::kNewAligned, 3 * kMiB, 4 * kMiB},
      {Api::kNewAlignedNothrow, 64, 256 * kKiB},
      {Api::kMalloc, 200 * kMiB},  // beyond arenas' block size: its own mapping
  };
  for (const Request& request : requests) {
    if (!is_large(request)) continue;  // (the secure build's size classes go up to 1 MiB)
    in_child(api_name(request.api), [request] {
      no_unmapping_for_age();
      Tally tally;
      track({Api::kMalloc, 100}, tally);  // a block from before, which must survive
      empty_caches();                     // nothing to release and retry with
      // Every request refused: NULL (or std::bad_alloc), and nothing else changes.
      size_t failed_before = failed_maps();
      mapalloc::os_fail_mmap_after(1, true);
      EXPECT(track(request, tally) == nullptr);
      EXPECT(failed_maps() > failed_before);
      verify_all();
      // One request refused: an arena block is still served (a smaller arena, or a mapping of
      // its own, is asked for next); a block of its own mapping has no other way (and nothing
      // cached to release and retry with).
      empty_caches();
      failed_before = failed_maps();
      mapalloc::os_fail_mmap_after(1);
      void* once = track(request, tally);
      EXPECT(failed_maps() == failed_before + 1);
      EXPECTF((once != nullptr) == !is_own_mapping(request),
              "%s(%zu, alignment %zu) after one failed request: %p", api_name(request.api),
              request.size, request.alignment, once);
      mapalloc::os_fail_mmap_after(0);
      EXPECT(track(request, tally) != nullptr);
      verify_all();
      release_all();
      exercise_heap();
    });
  }
}

TEST_CASE("fault: realloc to a large size fails and keeps the old block") {
  in_child("class to large", [] {
    no_unmapping_for_age();
    Tally tally;
    track({Api::kMalloc, 5000}, tally);
    track({Api::kMalloc, 100 * kKiB}, tally);
    track({Api::kMalloc, 300 * kKiB}, tally);
    empty_caches();
    mapalloc::os_fail_mmap_after(1, true);
    realloc_tracked(live[0], 200 * kMiB, tally);  // a mapping of its own: refused
    EXPECT(tally.failures == 1);
    // Into an arena's free pages it may still work (nothing new to map), or be refused.
    realloc_tracked(live[1], 600 * kKiB, tally);
    verify_all();
    int failures = tally.failures;
    mapalloc::os_fail_mmap_after(0);
    realloc_tracked(live[0], 200 * kMiB, tally);
    realloc_tracked(live[1], 700 * kKiB, tally);
    realloc_tracked(live[2], 900 * kKiB, tally);
    EXPECT(tally.failures == failures);
    verify_all();
    release_all();
    exercise_heap();
  });
}

TEST_CASE("fault: out of address space, a failed allocation releases empty arenas and retries") {
  // In a fresh process (this binary as a probe): the test binary's own arenas, with room left
  // by earlier tests, would serve the request without any retry.
  if (mapalloc::kSecure) return;  // (no arenas there)
  auto result = run_probe_mode("retry");
  INFO("child stderr: " << result.stderr_text);
  CHECK(result.exited);
  CHECK(result.exit_code == 0);
  CHECK(result.stderr_text.find("retry: ok") != std::string::npos);
}

// ---- large realloc growth --------------------------------------------------------------------

TEST_CASE("fault: large realloc growth, in place and by moving") {
  in_child("growth with one failed request", [] {
    no_unmapping_for_age();
    empty_caches();
    Tally tally;
    track({Api::kMalloc, 3 * kMiB}, tally);
    mapalloc::os_fail_mmap_after(1);
    realloc_tracked(live[0], 6 * kMiB, tally);
    if constexpr (mapalloc::kSecure) {
      EXPECT(tally.failures == 1);  // the secure build copies into a new mapping: that failed
    } else {
      // Growth in the arena, or a move to a mapping of its own: one of them got through.
      EXPECT(tally.failures == 0);
      EXPECT(malloc_usable_size(live[0].block) >= 6 * kMiB);
    }
    verify_all();
    release_all();
    exercise_heap();
  });

  in_child("growth fails for good", [] {
    no_unmapping_for_age();
    empty_caches();
    Tally tally;
    track({Api::kMalloc, 3 * kMiB}, tally);
    track({Api::kMalloc, 3 * kMiB}, tally);  // right after the first: no room to grow in place
    track({Api::kMalloc, 64}, tally);
    mapalloc::os_fail_mmap_after(1, true);
    realloc_tracked(live[0], 6 * kMiB, tally);  // in place, move, copy: all refused
    realloc_tracked(live[0], 40 * kMiB, tally);
    EXPECT(tally.failures == 2);
    if constexpr (!mapalloc::kSecure) {
      realloc_tracked(live[0], 2 * kMiB, tally);  // shrinking in place needs no new memory
      EXPECT(tally.failures == 2);
    }
    mapalloc::os_fail_mmap_after(0);
    realloc_tracked(live[0], 6 * kMiB, tally);
    EXPECT(tally.failures == 2);
    verify_all();
    release_all();
    exercise_heap();
  });

  if (mapalloc::kSecure) return;  // no growth in place or moving in the secure build

  // A block of its own mapping whose move fails: block A is followed at once by block B (own
  // mappings are placed upwards in their own address range), so A cannot grow in place.
  for (bool for_good : {false, true}) {
    in_child(for_good ? "move reservation fails for good" : "move reservation fails", [for_good] {
      no_unmapping_for_age();
      empty_caches();
      Tally tally;
      bool adjacent = false;
      // A mapping of exactly kArenaMaxBlockBytes + 4 MiB: header page plus the block.
      constexpr size_t kSize = mapalloc::kArenaMaxBlockBytes + 4 * kMiB - 4096;
      for (int attempt = 0; attempt < 20 && !adjacent; ++attempt) {
        release_all();
        empty_caches();
        char* first = static_cast<char*>(track({Api::kMalloc, kSize}, tally));
        char* second = static_cast<char*>(track({Api::kMalloc, kSize}, tally));
        adjacent = second == first + kSize + 4096;
      }
      EXPECTF(adjacent, "could not place two large blocks next to each other");
      size_t failed_before = failed_maps();
      mapalloc::os_fail_mmap_after(2, for_good);  // 1: growth in place (fails anyway), 2: move
      realloc_tracked(live[live_count - 2], kSize + 2 * kMiB, tally);
      if (for_good) {
        EXPECT(tally.failures == 1);  // and the copy's mapping failed too
      } else {
        EXPECT(tally.failures == 0);  // copied into a new block instead
        EXPECT(failed_maps() == failed_before + 1);
      }
      mapalloc::os_fail_mmap_after(0);
      verify_all();
      release_all();
      exercise_heap();
    });
  }
}

// ---- a new thread's heap ---------------------------------------------------------------------

namespace {

struct HeaplessThread {
  sem_t go, done, go_again;
  bool for_good;
  void* main_small;  // blocks of the main thread, freed by the heapless thread
  void* main_large;
  size_t heaps_after_failure;
  Tally tally;
};

void* heapless_main(void* argument) {
  auto* state = static_cast<HeaplessThread*>(argument);
  while (sem_wait(&state->go) != 0) {
  }
  // The first allocation must create a heap, and that fails.
  EXPECT(call_api({Api::kMalloc, 32}) == nullptr);
  if (state->for_good) {
    // Every entry point fails the same way while this thread has no heap.
    EXPECT(call_api({Api::kCalloc, 10}) == nullptr);
    EXPECT(call_api({Api::kAlignedAlloc, 100, 64}) == nullptr);
    EXPECT(call_api({Api::kPosixMemalign, 100, 4096}) == nullptr);
    EXPECT(call_api({Api::kMalloc, 3 * kMiB}) == nullptr);
    EXPECT(call_api({Api::kCalloc, 3 * kMiB}) == nullptr);
    EXPECT(call_api({Api::kAlignedAlloc, 100, 8 * kMiB}) == nullptr);
    EXPECT(call_api({Api::kNew, 64}) == nullptr);
    EXPECT(call_api({Api::kNewNothrow, 64}) == nullptr);
    EXPECT(call_api({Api::kNewAligned, 64, 128}) == nullptr);
    errno = kErrnoSentinel;
    EXPECT(realloc(nullptr, runtime(40)) == nullptr);
    EXPECT(errno == ENOMEM);
    // Frees and queries of other threads' blocks work without a heap.
    EXPECT(malloc_usable_size(state->main_large) >= 3 * kMiB);
    EXPECT(mapalloc_owns(state->main_small));
    free(state->main_small);
    free(state->main_large);
    free(nullptr);
    state->heaps_after_failure = stats_now().heaps;
    sem_post(&state->done);
    while (sem_wait(&state->go_again) != 0) {
    }
  }
  // Mapping works again (a single failure, or the main thread stopped them): a heap now.
  void* block = call_api({Api::kMalloc, 32});
  EXPECT(block != nullptr);
  free(block);
  exercise_heap();
  sem_post(&state->done);
  return nullptr;
}

}  // namespace

TEST_CASE("fault: a new thread whose heap cannot be created gets NULL, then a heap later") {
  for (bool for_good : {false, true}) {
    in_child(for_good ? "heap creation fails until stopped" : "heap creation fails once",
             [for_good] {
               no_unmapping_for_age();
               empty_caches();
               drain_heap_pool();
               static HeaplessThread state;
               sem_init(&state.go, 0, 0);
               sem_init(&state.done, 0, 0);
               sem_init(&state.go_again, 0, 0);
               state.for_good = for_good;
               Tally tally;
               state.main_small = track({Api::kMalloc, 200}, tally);
               state.main_large = track({Api::kMalloc, 3 * kMiB}, tally);
               live_count = 0;  // the thread frees them
               pthread_t thread = start_thread(heapless_main, &state);
               size_t heaps_before = stats_now().heaps;
               mapalloc::os_fail_mmap_after(1, for_good);
               sem_post(&state.go);
               if (for_good) {
                 while (sem_wait(&state.done) != 0) {
                 }
                 EXPECT(state.heaps_after_failure == heaps_before);
                 // The main thread's own heap is unaffected as far as its free lists go.
                 mapalloc::os_fail_mmap_after(0);
                 sem_post(&state.go_again);
               }
               while (sem_wait(&state.done) != 0) {
               }
               pthread_join(thread, nullptr);
               EXPECT(stats_now().heaps == heaps_before + 1);
               exercise_heap();
             });
  }
}

// ---- sweeps ----------------------------------------------------------------------------------

TEST_CASE("fault sweep: every mapping request from the Nth on fails, for each N") {
  // K, the first N that the workload never reaches (no failure at all), is found on the way.
  size_t n = 1;
  int runs_with_failures = 0;
  for (; n <= kMaxSweep; ++n) {
    auto result = test_support::run_in_child([n] {
      no_unmapping_for_age();
      empty_caches();
      drain_heap_pool();  // so that the helper thread's heap is a request of its own
      size_t mapped_before = stats_now().mapped_bytes;
      mapalloc::os_fail_mmap_after(n, true);
      Tally tally = run_workload();
      recover_after_failures(mapped_before);
      fprintf(stderr, "attempts=%d failures=%d\n", tally.attempts, tally.failures);
    });
    INFO("N = " << n << ", child stderr: " << result.stderr_text);
    REQUIRE(result.exited);
    REQUIRE(result.exit_code == 0);
    Tally tally;
    REQUIRE(parse_tally(result.stderr_text, &tally));
    if (tally.failures == 0) break;
    ++runs_with_failures;
  }
  CHECK(n <= kMaxSweep);
  CHECK(runs_with_failures >= 10);  // the workload makes more than ten mapping requests
}

TEST_CASE("fault sweep in a fresh process: MAPALLOC_FAULT_MMAP_FROM=N and MAPALLOC_FAULT_MMAP=N") {
  size_t requests = 0;
  for (size_t n = 1; n <= kMaxSweep; ++n) {
    auto result = run_probe("MAPALLOC_FAULT_MMAP_FROM", n);
    INFO("MAPALLOC_FAULT_MMAP_FROM=" << n << ", child stderr: " << result.stderr_text);
    REQUIRE(result.exited);
    REQUIRE(result.exit_code == 0);
    Tally tally;
    REQUIRE(parse_tally(result.stderr_text, &tally));
    if (n == 1) CHECK(tally.failures == tally.attempts);  // not even a heap for the main thread
    if (tally.failures == 0) break;
    requests = n;
  }
  CHECK(requests >= 10);
  CHECK(requests < kMaxSweep);
  // One failed request costs at most one failed call (or none: absorbed by a retry).
  int runs_with_a_failure = 0;
  for (size_t n = 1; n <= requests; ++n) {
    auto result = run_probe("MAPALLOC_FAULT_MMAP", n);
    INFO("MAPALLOC_FAULT_MMAP=" << n << ", child stderr: " << result.stderr_text);
    REQUIRE(result.exited);
    REQUIRE(result.exit_code == 0);
    Tally tally;
    REQUIRE(parse_tally(result.stderr_text, &tally));
    CHECK(tally.failures <= 1);
    runs_with_a_failure += tally.failures;
  }
  // Most single refusals are absorbed: an arena allocation asks for a smaller arena, then for a
  // mapping of its own. Those of a new heap, a new segment and a block of its own mapping are
  // not.
  CHECK(runs_with_a_failure >= 3);
}

// ---- RLIMIT_AS: the C++ side -----------------------------------------------------------------

namespace {

void* reserve_block = nullptr;
int handler_calls = 0;
void release_reserve() {
  ++handler_calls;
  ::operator delete(reserve_block);
  reserve_block = nullptr;
  std::set_new_handler(nullptr);
}

}  // namespace

TEST_CASE("out of address space (RLIMIT_AS): operator new throws, nothrow new returns nullptr") {
  in_child("rlimit", [] {
    no_unmapping_for_age();
    empty_caches();
    reserve_block = ::operator new(runtime(40 * kMiB));
    struct rlimit limit = {test_support::virtual_bytes() + 384 * kMiB, RLIM_INFINITY};
    EXPECT(setrlimit(RLIMIT_AS, &limit) == 0);
    // Fill the address space with new'd blocks of mixed sizes until std::bad_alloc.
    auto fill_up = [](Tally& tally) {
      for (int i = 0;; ++i) {
        Api api = i % 2 == 0 ? Api::kNew : Api::kNewArray;
        size_t size = i % 4 == 0 ? 3 * kMiB : i % 4 == 1 ? 200000 : i % 4 == 2 ? 5000 : 100;
        if (track({api, size}, tally) == nullptr) return;
        EXPECT(live_count < kMaxLive);
      }
    };
    Tally first;
    fill_up(first);
    EXPECTF(live_count > 50, "only %d blocks under a 384 MiB limit", live_count);
    int filled = live_count;
    // Every form fails at the limit: the throwing ones with std::bad_alloc, the others nullptr.
    Tally at_limit;
    EXPECT(track({Api::kNew, 64 * kMiB}, at_limit) == nullptr);
    EXPECT(track({Api::kNewArray, 64 * kMiB}, at_limit) == nullptr);
    EXPECT(track({Api::kNewNothrow, 64 * kMiB}, at_limit) == nullptr);
    EXPECT(track({Api::kNewAligned, 64 * kMiB, 2 * kMiB}, at_limit) == nullptr);
    EXPECT(track({Api::kNewAlignedNothrow, 64 * kMiB, 128}, at_limit) == nullptr);
    bool threw = false;
    try {
      char* array = new char[runtime(100 * kMiB)];
      delete[] array;
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    EXPECT(threw);
    EXPECT(new (std::nothrow) char[runtime(100 * kMiB)] == nullptr);
    // The new-handler runs before the throw: here it frees the reserve, and the retry succeeds.
    std::set_new_handler(release_reserve);
    Tally with_handler;
    EXPECT(track({Api::kNew, 30 * kMiB}, with_handler) != nullptr);
    EXPECT(handler_calls == 1);
    verify_all();
    // Everything freed: the address space serves new blocks again, a big one and as many
    // blocks as before.
    release_all();
    EXPECT(track({Api::kNewArray, 200 * kMiB}, with_handler) != nullptr);
    release_all();
    Tally second;
    fill_up(second);
    EXPECTF(live_count >= filled * 9 / 10, "%d blocks after the frees, %d before", live_count,
            filled);
    verify_all();
    release_all();
    exercise_heap();
  });
}
