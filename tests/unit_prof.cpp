// The heap profiler's table of live samples (prof/prof.h), driven directly: a sample is
// recorded and forgotten by address, and a new sample at the address of one still recorded
// (its block's free was missed) replaces it and is counted as stale. The addresses are this
// file's own array, never a block the allocator hands out.
#include <doctest/doctest.h>

#include <math.h>
#include <stdlib.h>

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

TEST_CASE("a sample's weight is the inverse of its chance to be sampled, for every size") {
  const double interval = static_cast<double>(prof_interval());
  // Far more sizes than the memo has slots (so that many share one), asked for in turn twice:
  // a weight must always be its own size's. Small sizes weigh about interval / size, large
  // ones about 1.
  int wrong = 0;
  for (int round = 0; round < 2; ++round) {
    for (size_t size = 16; size <= 16 * 1024; size += 16) {
      for (size_t charged : {size, size << 10}) {
        double expected = 1 / -expm1(-static_cast<double>(charged) / interval);
        wrong += fabs(prof_sample_weight(charged) - expected) > 1e-9 * expected;
      }
    }
  }
  CHECK(wrong == 0);
}

TEST_CASE("countdowns between samples are exponential around the interval") {
  const double interval = static_cast<double>(prof_interval());
  uint64_t random = 0x9e3779b97f4a7c15ull;
  constexpr int kDraws = 200000;
  double sum = 0;
  int below_median = 0, below_tenth = 0, below_one = 0;
  for (int i = 0; i < kDraws; ++i) {
    int64_t countdown = prof_next_countdown(&random);
    below_one += countdown < 1;
    sum += static_cast<double>(countdown);
    below_median += countdown < interval * M_LN2;               // P = 1/2
    below_tenth += countdown < interval * 0.10536051565782630;  // -ln(0.9): P = 1/10
  }
  CHECK(below_one == 0);
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
