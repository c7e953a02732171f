// The heap profiler's table of live samples (prof/prof.h), driven directly: a sample is
// recorded and forgotten by address, and a new sample at the address of one still recorded
// (its block's free was missed) replaces it and is counted as stale (addresses of this file's
// own array, never a block the allocator hands out). Also its arithmetic (weights, countdowns)
// and its hooks into the allocator (prof_hooks.h): which block of a refill is sampled, and the
// owner's frees into a span that holds a sample.
#include <doctest/doctest.h>

#include <math.h>
#include <stdlib.h>

#include <algorithm>
#include <string>

#include "api/prof_hooks.h"
#include "prof/prof.h"
#include "test_support.h"

using namespace mapalloc;

namespace {

alignas(64) char fake_blocks[4][256];

}  // namespace

TEST_CASE("the profiler replaces a sample still recorded at a new sample's address") {
  ProfStats before = prof_stats();
  REQUIRE(prof_record(fake_blocks[0], 200, 200));
  ProfStats one = prof_stats();
  CHECK(one.live_samples == before.live_samples + 1);
  CHECK(one.stale == before.stale);

  // The same address again without a free in between: one live sample, one stale.
  REQUIRE(prof_record(fake_blocks[0], 100, 100));
  ProfStats replaced = prof_stats();
  CHECK(replaced.live_samples == before.live_samples + 1);
  CHECK(replaced.stale == before.stale + 1);

  // Another address is a sample of its own; each is forgotten once.
  REQUIRE(prof_record(fake_blocks[1], 100, 100));
  CHECK(prof_stats().live_samples == before.live_samples + 2);
  CHECK(prof_forget(fake_blocks[0]));
  CHECK_FALSE(prof_forget(fake_blocks[0]));
  CHECK(prof_forget(fake_blocks[1]));
  ProfStats after = prof_stats();
  CHECK(after.live_samples == before.live_samples);
  CHECK(after.stale == before.stale + 1);
  CHECK(after.dropped == before.dropped);
}

TEST_CASE("a live sample's address bucket is counted: frees of other blocks skip the lookup") {
  // An address whose bucket holds no live sample (the test program may hold samples of its own).
  const char* block = nullptr;
  for (auto& fake : fake_blocks) {
    const uint32_t count =
        prof_address_buckets[prof_address_bucket(fake)].load(std::memory_order_relaxed);
    if (count == 0) block = fake;
  }
  REQUIRE(block != nullptr);
  CHECK_FALSE(prof_may_be_sampled(block));
  REQUIRE(prof_record(block, 200, 200));
  CHECK(prof_may_be_sampled(block));
  REQUIRE(prof_record(block, 100, 100));  // replaced at the same address: still counted once
  CHECK(prof_forget(block));
  CHECK_FALSE(prof_may_be_sampled(block));
  CHECK_FALSE(prof_forget(block));
}

TEST_CASE("the address buckets count every live sample, across the table's growth") {
  // More samples than the first table holds (256 slots, grown at 3/4 full), then all forgotten:
  // the buckets' total stays the count of live samples.
  constexpr int kSamples = 1000;
  static char blocks[kSamples][16];
  auto bucket_total = [] {
    size_t total = 0;
    for (auto& bucket : prof_address_buckets) total += bucket.load(std::memory_order_relaxed);
    return total;
  };
  const size_t before = prof_stats().live_samples;
  REQUIRE(bucket_total() == before);
  int recorded = 0;
  for (auto& block : blocks) recorded += prof_record(block, 16, 16);
  REQUIRE(recorded == kSamples);
  CHECK(prof_stats().live_samples == before + kSamples);
  CHECK(bucket_total() == before + kSamples);
  for (auto& block : blocks) CHECK(prof_forget(block));
  CHECK(bucket_total() == before);
  CHECK(prof_stats().live_samples == before);
}

TEST_CASE("realloc of large sampled blocks: each old sample forgotten, none left behind") {
  // Blocks of 2 MiB and more (sampled with probability above 0.98 at the default interval),
  // grown out of their arena into a mapping of their own and then by mremap, which may move
  // them: every step forgets the old block's sample before its address can be anyone else's.
  bool was_on = prof_set_active(true);
  const ProfStats before = prof_stats();
  char* block = static_cast<char*>(malloc(2 << 20));
  REQUIRE(block != nullptr);
  block[0] = 1;
  for (size_t size : {size_t{4} << 20, size_t{16} << 20, size_t{64} << 20, size_t{3} << 20}) {
    block = static_cast<char*>(realloc(block, size));
    REQUIRE(block != nullptr);
    CHECK(block[0] == 1);
    CHECK(prof_stats().live_samples <= before.live_samples + 1);
  }
  free(block);
  prof_set_active(was_on);
  const ProfStats after = prof_stats();
  CHECK(after.live_samples == before.live_samples);
  CHECK(after.stale == before.stale);
}

TEST_CASE("a sample's weight is the inverse of its chance to be sampled, for every size") {
  const double interval = static_cast<double>(prof_interval());
  // Far more sizes than the memo has slots (so that many share one), asked for in turn twice:
  // a weight must always be its own size's. Small sizes weigh about interval / size, large
  // ones about 1. (Within 1e-15 of libm's, about 4.5 units in the last place: the table and
  // series are good to 1.5, and a wrong entry or coefficient moves the result by far more.)
  int wrong = 0;
  for (int round = 0; round < 2; ++round) {
    for (size_t size = 16; size <= 16 * 1024; size += 16) {
      for (size_t charged : {size, size << 10}) {
        double expected = 1 / -expm1(-static_cast<double>(charged) / interval);
        wrong += fabs(prof_sample_weight(charged) - expected) > 1e-15 * expected;
      }
    }
  }
  CHECK(wrong == 0);
}

TEST_CASE("a countdown is -ln(u) intervals for its uniform draw u, to the byte") {
  // The logarithm's table and series (prof.cpp) against libm's, over draws from the same
  // sequence: a wrong table entry or coefficient moves countdowns by far more than a byte.
  const double interval = static_cast<double>(prof_interval());
  uint64_t random = 0x2545f4914f6cdd1dull, mirror = random;
  int wrong = 0;
  for (int i = 0; i < 100000; ++i) {
    double uniform =
        static_cast<double>((os_next_random(&mirror) >> 11) + 1) * (1.0 / 9007199254740992.0);
    double expected = -log(uniform) * interval;
    double got = static_cast<double>(prof_next_countdown(&random));
    wrong += expected >= 1 && fabs(got - expected) > 1.0;
  }
  CHECK(random == mirror);
  CHECK(wrong == 0);
}

TEST_CASE("countdowns between samples are exponential around the interval") {
  const double interval = static_cast<double>(prof_interval());
  uint64_t random = 0x9e3779b97f4a7c15ull;
  constexpr int kDraws = 200000;
  double sum = 0;
  int below_median = 0, below_tenth = 0;
  for (int i = 0; i < kDraws; ++i) {
    int64_t countdown = prof_next_countdown(&random);
    sum += static_cast<double>(countdown);
    below_median += countdown < interval * M_LN2;               // P = 1/2
    below_tenth += countdown < interval * 0.10536051565782630;  // -ln(0.9): P = 1/10
  }
  // (Standard errors: 0.22 % of the mean, 0.11 % and 0.07 % of the draws.)
  CHECK(sum / kDraws == doctest::Approx(interval).epsilon(0.01));
  CHECK(below_median == doctest::Approx(kDraws * 0.5).epsilon(0.01));
  CHECK(below_tenth == doctest::Approx(kDraws * 0.1).epsilon(0.03));
}

// The owner's frees into a span that holds a sample take prof_owner_free (prof_hooks.h): blocks
// that are not sampled are pushed at once, misuse still reaches the general path's reports, and
// the sampled block's own free still reaches the profiler, which restores the fast path.
TEST_CASE(
    "frees into a span holding a sample: the others pushed, misuse reported, sample forgotten") {
  constexpr size_t kBytes = 2000;
  constexpr int kCount = 24;
  void* blocks[kCount];
  for (auto& block : blocks) block = malloc(kBytes);
  Page* page = page_entry_of(blocks[0]);
  REQUIRE(page->owner == tls_heap);
  // Blocks of the span's first page only (the others' records are span tails: general path).
  int in_page = 0;
  while (in_page < kCount && page_entry_of(blocks[in_page]) == page) ++in_page;
  REQUIRE(in_page >= 4);

  // Hold the span's frees as the profiler does when it samples blocks[1]: the fast path keeps
  // the blocks below it, the others go to prof_owner_free (the default build carves a fresh
  // span in address order, so blocks[2] and blocks[3] lie above it).
  ProfStats before = prof_stats();
  REQUIRE(prof_record(blocks[1], kBytes, page->block_bytes));
  page->prof_slot_words[0].store(block_mark(page, blocks[1]), std::memory_order_relaxed);
  page->prof_samples.store(1, std::memory_order_relaxed);
  uint64_t fast_limit = page->start_limit;
  prof_restore_fast_free(page);
  uint64_t step = block_start_step(page->block_bytes);
  uint64_t index_of_sampled = block_mark(page, blocks[1]) - 1u;
  CHECK(page->start_limit == index_of_sampled * step);
  CHECK(page->start_limit < fast_limit);
  uint64_t held_limit = page->start_limit;

  free(blocks[2]);
  auto* freed = static_cast<Block*>(blocks[2]);
  CHECK(block_key(freed) == page->free_key);
  // (The secure build's free holds the block in its quarantine, off the page's lists.)
  if (!kSecure) CHECK(heap_block_is_free(tls_heap, page, freed));
  CHECK(page->start_limit == held_limit);  // still held: blocks[1] lives
  CHECK(prof_stats().live_samples == before.live_samples + 1);

  test_support::ChildResult twice = test_support::run_in_child([&] { free(blocks[2]); });
  CHECK(twice.stderr_text.find("double free of") != std::string::npos);
  test_support::ChildResult interior = test_support::run_in_child([&] {
    char* volatile interior_pointer = static_cast<char*>(blocks[3]) + 16;
    free(interior_pointer);
  });
  CHECK(interior.stderr_text.find("not the start of a block") != std::string::npos);

  free(blocks[1]);  // the sample: forgotten, and the span's fast path restored
  CHECK(prof_stats().live_samples == before.live_samples);
  CHECK(page->prof_samples.load(std::memory_order_relaxed) == 0);
  CHECK(page->start_limit == fast_limit);
  for (int i = 0; i < kCount; ++i) {
    if (i != 1 && i != 2) free(blocks[i]);
  }
}

// prof_class_alloc samples, of the refill's first block and the next kSampleCandidates (16)
// listed, the highest-addressed one: its span then holds fewer frees on the slow path. Here
// the class's list starts with blocks of one span in an order of the test's choosing.
namespace {

constexpr unsigned kSpanBlocks = 24;
constexpr size_t kSampleTestBytes = 48;

// kSpanBlocks allocated blocks of the class's current span, sorted by address (allocated
// blocks count as used, as listed ones do, so they may be listed again); `others` gets those of
// spans left behind, to be freed at the end.
Page* blocks_of_current_span(Block** sorted, void** others, unsigned* other_count) {
  unsigned taken = 0;
  Page* page = nullptr;
  while (taken < kSpanBlocks && *other_count + kSpanBlocks < 2048) {
    void* block = malloc(kSampleTestBytes);
    REQUIRE(block != nullptr);
    if (page_entry_of(block) != page) {  // a new span: start again there
      for (unsigned i = 0; i < taken; ++i) others[(*other_count)++] = sorted[i];
      taken = 0;
      page = page_entry_of(block);
    }
    sorted[taken++] = static_cast<Block*>(block);
  }
  REQUIRE(taken == kSpanBlocks);
  REQUIRE(tls_heap->current[page->size_class] == page);
  std::sort(sorted, sorted + kSpanBlocks);
  return page;
}

// Lists sorted[order[0..count)] (then the class's list as it was, if `then_the_rest`), takes
// the first as class_alloc does and has prof_class_alloc sample it; checks that
// sorted[expected] was sampled and that the list is what it was with the first block in the
// sample's place.
void check_sample_choice(const unsigned* order, unsigned count, bool then_the_rest,
                         unsigned expected) {
  REQUIRE_FALSE(prof_active());  // (no other sample may be taken meanwhile)
  static void* others[2048];
  unsigned other_count = 0;
  Block* sorted[kSpanBlocks];
  Page* page = blocks_of_current_span(sorted, others, &other_count);
  Heap* heap = tls_heap;
  unsigned size_class = page->size_class;
  Block* rest = heap->free[size_class];
  for (unsigned i = 0; i < count; ++i) {
    Block* next = i + 1 < count ? sorted[order[i + 1]] : then_the_rest ? rest : nullptr;
    set_block_next(sorted[order[i]], next);
    set_block_key(sorted[order[i]], page->free_key);
  }
  unsigned listed = 0;
  for (Block* block = sorted[order[0]]; block != nullptr; block = block_next(block)) ++listed;

  // The countdown about to run out, and a next countdown far beyond the list (so that no cut
  // moves blocks back to the page).
  Block* first = sorted[order[0]];
  heap->free[size_class] = block_next(first);
  set_block_key(first, 0);
  heap->prof_countdown[size_class] = 1;
  uint64_t random = 1;
  for (uint64_t probe = random; prof_next_countdown(&probe) < (1 << 20); probe = ++random) {
  }
  heap->prof_random = random;
  ProfStats before = prof_stats();
  void* sampled = prof_class_alloc(heap, size_class, first, kSampleTestBytes, listed);

  CHECK(sampled == sorted[expected]);
  CHECK(block_key(static_cast<Block*>(sampled)) == 0);
  CHECK(prof_stats().live_samples == before.live_samples + 1);
  CHECK(page->prof_samples.load(std::memory_order_relaxed) == 1);
  // The list, position by position: order[1..count), the sample replaced by the first block.
  Block* next = heap->free[size_class];
  for (unsigned i = 1; i < count; ++i, next = next != nullptr ? block_next(next) : nullptr) {
    CAPTURE(i);
    Block* expected_block = order[i] == expected ? first : sorted[order[i]];
    REQUIRE(next == expected_block);
    CHECK(block_key(next) == page->free_key);
  }
  CHECK(next == (then_the_rest ? rest : nullptr));

  free(sampled);  // forgotten, and the span's fast path restored
  CHECK(prof_stats().live_samples == before.live_samples);
  CHECK(page->prof_samples.load(std::memory_order_relaxed) == 0);
  if (!then_the_rest) {  // the class's old list back behind the test's
    Block* last = heap->free[size_class];
    if (last == nullptr) {
      heap->free[size_class] = rest;
    } else {
      while (block_next(last) != nullptr) last = block_next(last);
      set_block_next(last, rest);
    }
  }
  for (unsigned i = 0; i < other_count; ++i) free(others[i]);
}

}  // namespace

TEST_CASE(
    "a sample is the highest-addressed of the refill's first blocks, swapped out of its list") {
  SUBCASE("the highest of the window is its last, a higher one just beyond it") {
    const unsigned order[] = {1,  2,  3,  4,  5,  6,  7, 8,  9,  10, 11, 12,
                              13, 14, 15, 16, 20, 21, 0, 17, 18, 19, 22, 23};
    check_sample_choice(order, kSpanBlocks, true, 20);
  }
  SUBCASE("the highest is the list's head") {
    const unsigned order[] = {0, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    check_sample_choice(order, 17, true, 16);
  }
  SUBCASE("the first block is the highest: no swap") {
    const unsigned order[] = {16, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 23};
    check_sample_choice(order, 18, true, 16);
  }
  SUBCASE("a list shorter than the window") {
    const unsigned order[] = {2, 0, 5, 1, 3};
    check_sample_choice(order, 5, false, 5);
  }
}
