// The profiler's cached stack walk (platform/unwind.h) against libgcc's _Unwind_Backtrace: the
// same frames from plain, deep, rbp-framed (alloca) and libc-called (qsort) stacks, in the main
// thread and another, and when a walk reuses the frames of the one before; a signal frame makes
// the cached walk give up, and os_backtrace still gets the full unwinder's answer.
#include <doctest/doctest.h>

#include <alloca.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "platform/prof_os.h"
#include "platform/unwind.h"

using namespace mapalloc;

namespace {

constexpr unsigned kDepth = 64;

struct Stacks {
  uintptr_t cached[kDepth];
  uintptr_t full[kDepth];
  unsigned cached_count = 0;
  unsigned full_count = 0;
};

// Both walks from the same frame; frames up to and including this function's are left out (it
// is the "entry point"), so both start at its caller.
unsigned capture_room = kDepth;  // the frames both walks may collect
__attribute__((noinline)) void capture(Stacks* stacks) {
  static const uintptr_t entries[] = {reinterpret_cast<uintptr_t>(&capture)};
  stacks->cached_count = os_backtrace(stacks->cached, capture_room, entries, 1);
  stacks->full_count = os_backtrace_full(stacks->full, capture_room, entries, 1);
  asm volatile("" ::: "memory");  // (not a tail call)
}

// A walk from inside this function with the given (sorted) entry points: how many frames it
// keeps, and the first.
struct EntryWalk {
  unsigned count;
  uintptr_t first;
};
__attribute__((noinline)) EntryWalk walk_with_entries(const uintptr_t* entries, unsigned count) {
  uintptr_t frames[kDepth];
  unsigned depth = os_backtrace(frames, kDepth, entries, count);
  asm volatile("" ::: "memory");  // (not a tail call)
  return {depth, depth > 0 ? frames[0] : 0};
}

// One call site for every such walk: their first kept frame, when walk_with_entries's is left
// out, is the same return address into this function.
__attribute__((noinline)) EntryWalk walk_from_one_site(const uintptr_t* entries, unsigned count) {
  EntryWalk walk = walk_with_entries(entries, count);
  asm volatile("" ::: "memory");
  return walk;
}

void check_same(const Stacks& stacks) {
  REQUIRE(stacks.full_count >= 3);
  REQUIRE(stacks.cached_count == stacks.full_count);
  for (unsigned i = 0; i < stacks.full_count; ++i) CHECK(stacks.cached[i] == stacks.full[i]);
}

__attribute__((noinline)) void recurse(Stacks* stacks, int depth) {
  if (depth == 0)
    capture(stacks);
  else
    recurse(stacks, depth - 1);
  asm volatile("" ::: "memory");
}

// alloca makes GCC address the frame through rbp: the CFA is rbp-based here.
__attribute__((noinline)) void with_alloca(Stacks* stacks, size_t bytes) {
  auto* buffer = static_cast<volatile char*>(alloca(bytes));
  buffer[0] = 1;
  capture(stacks);
  buffer[bytes - 1] = buffer[0];
}

// Two callers of one shape: called from the same place, both put recurse's frames at the same
// addresses, and only the return address into them differs.
__attribute__((noinline)) void via_first(Stacks* stacks) {
  recurse(stacks, 3);
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) void via_second(Stacks* stacks) {
  recurse(stacks, 3);
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) void through(void (*caller)(Stacks*), Stacks* stacks) {
  caller(stacks);
  asm volatile("" ::: "memory");
}

// A walk `depth` frames below its entry point (capture_above): with room for few frames the
// visitor stops before it gets there, after twice its room, and keeps the frames below it.
__attribute__((noinline)) void capture_above(Stacks* stacks, int depth);
__attribute__((noinline)) void walk_below(Stacks* stacks, int depth) {
  if (depth > 0) {
    walk_below(stacks, depth - 1);
  } else {
    static const uintptr_t entries[] = {reinterpret_cast<uintptr_t>(&capture_above)};
    stacks->cached_count = os_backtrace(stacks->cached, capture_room, entries, 1);
    stacks->full_count = os_backtrace_full(stacks->full, capture_room, entries, 1);
  }
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) void capture_above(Stacks* stacks, int depth) {
  walk_below(stacks, depth);
  asm volatile("" ::: "memory");
}

// One turn of walk_in_turns: the depth to walk from and the room both walks get.
struct Turn {
  int depth;
  unsigned room;
};

// Calls `walk` once per turn, all from this one call site (so that consecutive turns of one
// depth walk the same stack), each with its depth and room; keeps each turn's stacks and how
// many backtraces it copied.
template <size_t kTurns>
void walk_in_turns(void (*walk)(Stacks*, int), const Turn (&turns)[kTurns],
                   Stacks (&stacks)[kTurns], uint64_t (&copied)[kTurns]) {
  for (unsigned i = 0; i < kTurns; ++i) {
    asm volatile("" : "+r"(i));  // (not unrolled)
    capture_room = turns[i].room;
    uint64_t before = unwind_counters().backtraces_copied;
    walk(&stacks[i], turns[i].depth);
    copied[i] = unwind_counters().backtraces_copied - before;
  }
  capture_room = kDepth;
}

Stacks* qsort_stacks = nullptr;
int compare_and_capture(const void* a, const void* b) {
  if (qsort_stacks != nullptr) {
    capture(qsort_stacks);
    qsort_stacks = nullptr;
  }
  return *static_cast<const int*>(a) - *static_cast<const int*>(b);
}

Stacks signal_stacks;
UnwindCounters signal_before, signal_after;
void capture_in_handler(int) {
  signal_before = unwind_counters();
  capture(&signal_stacks);
  signal_after = unwind_counters();
}

}  // namespace

TEST_CASE("the cached walk finds the frames libgcc's unwinder finds") {
  Stacks stacks;
  recurse(&stacks, 0);
  check_same(stacks);
  recurse(&stacks, 40);
  check_same(stacks);
  CHECK(stacks.full_count >= 40);
  with_alloca(&stacks, 4000);
  check_same(stacks);
  int numbers[16];
  for (int i = 0; i < 16; ++i) numbers[i] = (i * 7) % 16;
  qsort_stacks = &stacks;
  qsort(numbers, 16, sizeof numbers[0], compare_and_capture);
  check_same(stacks);
}

TEST_CASE("a second walk of a stack reads no rule again") {
  Stacks stacks;
  uint64_t reads[2];
  for (uint64_t& read : reads) {  // (one call site: the same return addresses twice)
    UnwindCounters before = unwind_counters();
    recurse(&stacks, 5);
    read = unwind_counters().rules_read - before.rules_read;
  }
  CHECK(reads[0] > 0);
  CHECK(reads[1] == 0);
  check_same(stacks);
}

TEST_CASE("a walk of the stack walked last takes its frames from that walk") {
  Stacks stacks;
  recurse(&stacks, 5);
  uint64_t before = unwind_counters().frames_reused;
  recurse(&stacks, 5);
  // (the walk's own frames, capture's, recurse's six, the test's and doctest's, up to 32 kept)
  CHECK(unwind_counters().frames_reused - before >= 9);
  check_same(stacks);
}

TEST_CASE("a backtrace of the stack walked last is copied whole from that walk") {
  // The second is the first's stack again and is copied; the third is deeper (its first frame
  // lies lower on the stack, so it is compared with the other kept walk) and is walked; the
  // fourth is copied.
  const Turn turns[] = {{5, kDepth}, {5, kDepth}, {7, kDepth}, {7, kDepth}};
  static Stacks stacks[4];
  uint64_t copied[4];
  walk_in_turns(recurse, turns, stacks, copied);
  const uint64_t copies[] = {0, 1, 0, 1};  // (the first is not checked)
  for (unsigned i = 0; i < 4; ++i) {
    CAPTURE(i);
    if (i > 0) CHECK(copied[i] == copies[i]);
    check_same(stacks[i]);
  }
}

TEST_CASE("a backtrace with less room than the last one collected is walked, not copied") {
  const Turn turns[] = {{5, kDepth}, {5, kDepth}, {5, 4}, {5, kDepth}, {5, kDepth}};
  static Stacks stacks[5];
  uint64_t copied[5];
  walk_in_turns(recurse, turns, stacks, copied);
  const uint64_t copies[] = {0, 1, 0, 0, 1};  // (the first is not checked)
  for (unsigned i = 0; i < 5; ++i) {
    CAPTURE(i);
    if (i > 0) CHECK(copied[i] == copies[i]);
    check_same(stacks[i]);
    CHECK(stacks[i].cached_count == (turns[i].room == 4 ? 4u : stacks[i].full_count));
  }
}

TEST_CASE("a backtrace with less room, its entry point out of reach, is not copied") {
  // Room 64 twice (the second copied), then room 4: the visitor stops 8 frames in, 12 below the
  // entry point, with the 4 frames below it (a copy would give the frames above it).
  const Turn turns[] = {{12, kDepth}, {12, kDepth}, {12, 4}};
  static Stacks stacks[3];
  uint64_t copied[3];
  walk_in_turns(capture_above, turns, stacks, copied);
  CHECK(copied[1] == 1);
  CHECK(copied[2] == 0);
  CHECK(stacks[2].cached_count == 4);
  CHECK(stacks[2].full_count == 4);
  check_same(stacks[0]);
  check_same(stacks[1]);
}

TEST_CASE("a walk that differs from the last one in one return address finds its own frames") {
  Stacks first, second;
  void (*callers[])(Stacks*) = {via_first, via_second};
  Stacks* results[] = {&first, &second};
  for (int round = 0; round < 3; ++round) {
    uint64_t before = unwind_counters().frames_reused;
    uint64_t copied_before = unwind_counters().backtraces_copied;
    for (int i = 0; i < 2; ++i) {
      asm volatile("" : "+r"(i));  // (not unrolled: one call site for both)
      through(callers[i], results[i]);
    }
    // The frames up to recurse's outermost are taken from the walk before; the return address
    // into via_first or via_second then differs, and the walk goes on with rules.
    if (round > 0) CHECK(unwind_counters().frames_reused - before >= 2 * 6);
    CHECK(unwind_counters().backtraces_copied == copied_before);  // (each differs from the last)
    check_same(first);
    check_same(second);
    REQUIRE(first.full_count == second.full_count);
    unsigned differing = 0;
    for (unsigned i = 0; i < first.full_count; ++i) differing += first.full[i] != second.full[i];
    CHECK(differing == 1);  // the return address into via_first or via_second
  }
}

TEST_CASE("two stacks walked in turn both take their frames from the walks before") {
  Stacks shallow, deep;
  uint64_t reused[2] = {0, 0};
  for (int round = 0; round < 3; ++round) {
    uint64_t before = unwind_counters().frames_reused;
    recurse(&shallow, 2);
    uint64_t between = unwind_counters().frames_reused;
    recurse(&deep, 9);
    if (round > 0) {  // (from the second round on, each finds its own walk kept)
      reused[0] = between - before;
      reused[1] = unwind_counters().frames_reused - between;
    }
  }
  CHECK(reused[0] >= 2 + 4);  // capture's and recurse's frames, the walk's own, the callers'
  CHECK(reused[1] >= 9 + 4);
  check_same(shallow);
  check_same(deep);
}

TEST_CASE("after unwind_thread_exit a thread's walks keep nothing, and still find every frame") {
  struct Result {
    Stacks stacks;
    uint64_t reused_before_exit = 0, reused_after_exit = 0;
  } result;
  pthread_t thread;
  REQUIRE(pthread_create(
              &thread, nullptr,
              [](void* argument) -> void* {
                auto* out = static_cast<Result*>(argument);
                recurse(&out->stacks, 3);
                uint64_t before = unwind_counters().frames_reused;
                recurse(&out->stacks, 3);
                out->reused_before_exit = unwind_counters().frames_reused - before;
                unwind_thread_exit();
                recurse(&out->stacks, 3);
                before = unwind_counters().frames_reused;
                recurse(&out->stacks, 3);
                out->reused_after_exit = unwind_counters().frames_reused - before;
                return nullptr;
              },
              &result) == 0);
  pthread_join(thread, nullptr);
  CHECK(result.reused_before_exit >= 6);
  CHECK(result.reused_after_exit == 0);
  check_same(result.stacks);
}

TEST_CASE("the cached walk gives the same frames in another thread") {
  Stacks stacks;
  pthread_t thread;
  REQUIRE(pthread_create(
              &thread, nullptr,
              [](void* argument) -> void* {
                recurse(static_cast<Stacks*>(argument), 3);
                return nullptr;
              },
              &stacks) == 0);
  pthread_join(thread, nullptr);
  check_same(stacks);
}

TEST_CASE("through a signal frame the cached walk gives up, and the full unwinder answers") {
  struct sigaction action = {}, previous = {};
  action.sa_handler = capture_in_handler;
  REQUIRE(sigaction(SIGUSR2, &action, &previous) == 0);
  raise(SIGUSR2);
  sigaction(SIGUSR2, &previous, nullptr);
  CHECK(signal_after.walks_given_up == signal_before.walks_given_up + 1);
  check_same(signal_stacks);
}

TEST_CASE("a frame is left out exactly when its function is one of many entry points") {
  const auto own = reinterpret_cast<uintptr_t>(&walk_with_entries);
  // Alone: the walk starts at this test's frame, below walk_with_entries.
  EntryWalk alone = walk_from_one_site(&own, 1);
  REQUIRE(alone.count >= 2);
  // Among 9 sorted entries, at every position, the same. (The others are the 8 bytes on either
  // side of its start: inside it or the code before it, where no function on this stack
  // starts.)
  const auto caller = reinterpret_cast<uintptr_t>(&walk_from_one_site);
  // (An array each: the cached walk reuses a backtrace for the same entries pointer and count.)
  uintptr_t entries_at[9][9];
  for (unsigned at = 0; at < 9; ++at) {
    CAPTURE(at);
    uintptr_t* entries = entries_at[at];
    for (unsigned i = 0; i < 9; ++i) {
      entries[i] = own - at + i;
      REQUIRE(entries[i] != caller);
    }
    EntryWalk walk = walk_from_one_site(entries, 9);
    CHECK(walk.count == alone.count);
    CHECK(walk.first == alone.first);
  }
  // Entries on both sides of it but not it: its frame and the walk's own are kept.
  uintptr_t around[] = {own - 2, own - 1, own + 1, own + 2};
  EntryWalk kept = walk_from_one_site(around, 4);
  CHECK(kept.count > alone.count);
  CHECK(kept.first != alone.first);
}
