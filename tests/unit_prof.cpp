// The heap profiler's table of live samples (prof/prof.h), driven directly: a sample is
// recorded and forgotten by address, and a new sample at the address of one still recorded
// (its block's free was missed) replaces it and is counted as stale. The addresses are this
// file's own array, never a block the allocator hands out.
#include <doctest/doctest.h>

#include "prof/prof.h"

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
