// Segments and pages in isolation: spans, carving, the page accounting, and the remote-free
// protocol with its full flag.
#include <doctest/doctest.h>

#include <set>
#include <thread>
#include <vector>

#include "core/page.h"
#include "core/page_queue.h"

using namespace mapalloc;

namespace {

// A stand-in owner: the page layer never looks inside a heap.
Heap* fake_owner() { return reinterpret_cast<Heap*>(uintptr_t{0x1000}); }

struct SpanFixture {
  SegmentList list;
  Page* page = nullptr;
  explicit SpanFixture(unsigned size_class) {
    page = span_alloc(list, fake_owner(), kUnitSegment, class_span_pages(size_class));
    REQUIRE(page != nullptr);
    page_init(page, fake_owner(), size_class);
  }
  ~SpanFixture() {
    if (page != nullptr) span_free(list, page, 0);
  }
};

unsigned list_length(Block* block) {
  unsigned count = 0;
  for (; block != nullptr; block = block_next(block)) ++count;
  return count;
}

}  // namespace

TEST_CASE("spans are page-aligned runs inside a mapped segment") {
  SegmentList list;
  Page* one = span_alloc(list, fake_owner(), kUnitSegment, 1);
  Page* four = span_alloc(list, fake_owner(), kUnitSegment, 4);
  REQUIRE(one != nullptr);
  REQUIRE(four != nullptr);
  CHECK(unit_kind(page_start(one)) == kUnitSegment);
  CHECK(reinterpret_cast<uintptr_t>(page_start(four)) % kPageBytes == 0);
  CHECK(page_index(one) >= kFirstUsablePage);
  CHECK(four->span_pages == 4);
  for (unsigned i = 1; i < 4; ++i) {
    CHECK(four[i].state == PageState::kSpanTail);
    CHECK(span_head(&four[i]) == four);
    CHECK(page_entry_of(page_start(four) + i * kPageBytes + 100) == &four[i]);
  }
  CHECK(list.count == 1);
  span_free(list, one, 0);
  span_free(list, four, 0);
  CHECK(list.count == 1);  // a heap keeps its last segment, even empty
  CHECK(segment_list_release_empty(list, 0, false, 0) == kSegmentBytes);
  CHECK(list.count == 0);
}

TEST_CASE("a segment's usable pages can all be used, then a new segment is taken") {
  SegmentList list;
  std::vector<Page*> spans;
  // 63 pages (the first holds the segment's metadata).
  for (int i = 0; i < __builtin_popcountll(kAllUsablePages); ++i) {
    spans.push_back(span_alloc(list, fake_owner(), kUnitSegment, 1));
  }
  CHECK(list.count == 1);
  Page* extra = span_alloc(list, fake_owner(), kUnitSegment, 1);
  CHECK(list.count == 2);
  CHECK(segment_of(extra) != segment_of(spans[0]));
  span_free(list, extra, 0);
  for (Page* page : spans) span_free(list, page, 0);
  CHECK(list.count == 1);  // the other, now empty, went to the cache; the last one stays
  CHECK(segment_list_release_empty(list, 1, false, 0) == 0);  // asked to keep one
  CHECK(segment_list_release_empty(list, 0, true, 0) == 0);   // not purged yet
  CHECK(segment_list_release_empty(list, 0, false, 0) == kSegmentBytes);
  CHECK(list.count == 0);
}

TEST_CASE("carving hands out distinct blocks in bounded batches, in address order by default") {
  SpanFixture span(size_class_of(48));
  Page* page = span.page;
  CHECK(page->capacity == kPageBytes / 48);
  std::set<Block*> seen;
  unsigned total = 0;
  while (Block* blocks = page_carve(page)) {
    unsigned batch = list_length(blocks);
    CHECK(batch <= page_carve_batch(page));
    unsigned in_order = 0;
    for (Block* block = blocks; block != nullptr; block = block_next(block)) {
      CHECK(seen.insert(block).second);
      CHECK((reinterpret_cast<char*>(block) - page_start(page)) % 48 == 0);
      Block* next = block_next(block);
      if (next != nullptr && reinterpret_cast<char*>(next) == reinterpret_cast<char*>(block) + 48) {
        ++in_order;
      }
    }
    // The secure build links each batch in a random order.
    if (kSecure && batch > 2)
      CHECK(in_order < batch - 1);
    else
      CHECK(in_order == batch - 1);
    total += batch;
  }
  CHECK(total == page->capacity);
  CHECK(page->countdown == page->capacity);
  CHECK(page_is_block_start(page, page_start(page)));
  CHECK_FALSE(page_is_block_start(page, page_start(page) + 16));
  CHECK_FALSE(page_is_block_start(page, page_start(page) + 48 * page->capacity));
}

TEST_CASE("every class carves kCarveBatchBytes worth of blocks at a time, at least one") {
  for (unsigned size_class = 0; size_class < kClassCount; ++size_class) {
    SpanFixture span(size_class);
    size_t block_bytes = class_block_bytes(size_class);
    size_t expected = kCarveBatchBytes / block_bytes;
    CHECK(page_carve_batch(span.page) == (expected == 0 ? 1 : expected));
    CHECK(page_block_start_step(span.page) == block_start_step(block_bytes));
  }
}

TEST_CASE("carving stops at the carved boundary for the block-start test") {
  SpanFixture span(size_class_of(1024));
  Page* page = span.page;
  CHECK_FALSE(page_is_block_start(page, page_start(page)));  // nothing carved yet
  page_carve(page);
  unsigned carved = page->carved;
  CHECK(page_is_block_start(page, page_start(page) + 1024 * (carved - 1)));
  CHECK_FALSE(page_is_block_start(page, page_start(page) + 1024 * carved));
}

TEST_CASE("local frees count down to an empty page") {
  SpanFixture span(size_class_of(64));
  Page* page = span.page;
  Block* blocks = page_carve(page);
  unsigned count = list_length(blocks);
  CHECK(page->countdown == count);
  // Free them all locally, the way free() does.
  for (Block* block = blocks; block != nullptr;) {
    Block* next = block_next(block);
    set_block_next(block, page->local_free);
    page->local_free = block;
    --page->countdown;
    block = next;
  }
  CHECK(page->countdown == 0);
  CHECK(page_local_free_count(page) == count);
  Block* again = page_take_local_free(page);
  CHECK(list_length(again) == count);
  CHECK(page->countdown == count);  // back in use
}

TEST_CASE("remote frees land in thread_free and are taken whole") {
  SpanFixture span(size_class_of(32));
  Page* page = span.page;
  Block* blocks = page_carve(page);
  std::vector<Block*> all;
  for (Block* block = blocks; block != nullptr; block = block_next(block)) all.push_back(block);
  // Two threads free half each, concurrently.
  auto free_range = [&](size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) CHECK_FALSE(page_remote_free(page, all[i]));
  };
  std::thread first(free_range, 0, all.size() / 2);
  std::thread second(free_range, all.size() / 2, all.size());
  first.join();
  second.join();
  // The word counts what it lists (above the address): the owner learns it without a walk.
  CHECK((page->thread_free.load() >> kThreadFreeCountShift) == all.size());
  unsigned count = 0;
  Block* taken = page_take_thread_free(page, &count);
  CHECK(count == all.size());
  CHECK(list_length(taken) == all.size());
  std::set<Block*> unique;
  for (Block* block = taken; block != nullptr; block = block_next(block)) unique.insert(block);
  CHECK(unique.size() == all.size());
  CHECK(page_take_thread_free(page, &count) == nullptr);
  CHECK(count == 0);
  // Counting starts again from an empty list, and the links hold addresses only.
  CHECK_FALSE(page_remote_free(page, all[0]));
  CHECK_FALSE(page_remote_free(page, all[1]));
  CHECK(page_take_thread_free(page, &count) == all[1]);
  CHECK(count == 2);
  CHECK(block_next(all[1]) == all[0]);
  CHECK(block_next(all[0]) == nullptr);
}

TEST_CASE("a full page's first remote free claims the flag; later ones queue normally") {
  SpanFixture span(size_class_of(16));
  Page* page = span.page;
  Block* first = page_carve(page);
  Block* second = block_next(first);
  CHECK(page_try_mark_full(page));
  CHECK(page->thread_free.load() == kFullFlag);
  CHECK(page_remote_free(page, first));         // claimed: goes to the owner's delayed list
  CHECK_FALSE(page_remote_free(page, second));  // an ordinary push
  unsigned count = 0;
  CHECK(page_take_thread_free(page, &count) == second);
  CHECK(count == 1);  // the claimed block is not listed
}

TEST_CASE("marking full fails once a remote free arrived, and leaving full clears the flag") {
  SpanFixture span(size_class_of(16));
  Page* page = span.page;
  Block* block = page_carve(page);
  CHECK_FALSE(page_remote_free(page, block));
  CHECK_FALSE(page_try_mark_full(page));
  CHECK(page_take_thread_free(page) == block);
  CHECK(page_try_mark_full(page));
  CHECK(page->countdown == 1);
  page->countdown = 0;  // a local free happened
  page_leave_full(page);
  CHECK(page->thread_free.load() == 0);
  CHECK(page->countdown == page->capacity - 1u);
  CHECK(page_local_free_count(page) == 1);
}

TEST_CASE("returning blocks to a page and collecting remote frees keep the accounting") {
  SpanFixture span(size_class_of(128));
  Page* page = span.page;
  Block* blocks = page_carve(page);
  unsigned count = list_length(blocks);
  Block* remote = blocks;
  Block* rest = block_next(blocks);
  set_block_next(remote, nullptr);
  page_return_blocks(page, rest);
  CHECK(page->countdown == 1);
  CHECK_FALSE(page_remote_free(page, remote));
  page_collect_remote(page);
  CHECK(page->countdown == 0);
  CHECK(page_local_free_count(page) == count);
  CHECK(block_list_contains(page->local_free, remote));
}

TEST_CASE("a counted list comes back as local_free, or with the shorter of the two walked") {
  SpanFixture span(size_class_of(96));
  Page* page = span.page;
  Block* blocks = page_carve(page);
  unsigned count = list_length(blocks);
  REQUIRE(count >= 4);
  REQUIRE(page->local_free == nullptr);
  // The first block and the rest (count - 1 blocks), both in use, come back counted.
  Block* rest = block_next(blocks);
  set_block_next(blocks, nullptr);
  SUBCASE("into an empty local_free, then a shorter list in front of it") {
    page_return_counted(page, rest, count - 1);
    CHECK(page->local_free == rest);  // the list itself, not walked
    CHECK(page->countdown == 1);
    CHECK(page_local_free_count(page) == count - 1);
    // local_free not empty: the list goes in front of it, its tail linked to the old head.
    page_return_counted(page, blocks, 1);
    CHECK(page->local_free == blocks);
    CHECK(block_next(blocks) == rest);
    CHECK(page->countdown == 0);
    CHECK(page_local_free_count(page) == count);
    page_return_counted(page, nullptr, 0);  // nothing: no change
    CHECK(page->local_free == blocks);
    CHECK(page->countdown == 0);
  }
  SUBCASE("a list longer than local_free goes behind it: only local_free is walked") {
    page_return_counted(page, blocks, 1);
    REQUIRE(page->local_free == blocks);
    page_return_counted(page, rest, count - 1);
    CHECK(page->local_free == blocks);  // the shorter list in front
    CHECK(block_next(blocks) == rest);
    CHECK(list_length(page->local_free) == count);
    CHECK(page->countdown == 0);
    CHECK(page_local_free_count(page) == count);
  }
}

TEST_CASE("collecting remote frees: the shorter of them and local_free goes in front") {
  SpanFixture span(size_class_of(64));
  Page* page = span.page;
  Block* blocks = page_carve(page);
  unsigned count = list_length(blocks);
  REQUIRE(count >= 4);
  std::vector<Block*> all;
  for (Block* block = blocks; block != nullptr; block = block_next(block)) all.push_back(block);
  // Into an empty local_free: the list as it is.
  for (Block* block : all) CHECK_FALSE(page_remote_free(page, block));
  page_collect_remote(page);
  CHECK(page->local_free == all.back());  // the last pushed heads thread_free
  CHECK(page->countdown == 0);
  CHECK(page_local_free_count(page) == count);
  CHECK(list_length(page->local_free) == count);
  // One block left in local_free, the others freed remotely: the one block goes in front (only
  // it is walked), the remote list behind it.
  Block* taken = page_take_local_free(page);
  CHECK(page->countdown == count);
  Block* kept = taken;
  Block* rest = block_next(taken);
  set_block_next(kept, nullptr);
  page_return_blocks(page, kept);
  for (Block* block = rest; block != nullptr;) {
    Block* next = block_next(block);
    CHECK_FALSE(page_remote_free(page, block));
    block = next;
  }
  page_collect_remote(page);
  CHECK(page->local_free == kept);
  CHECK(block_next(kept) == all.front());  // pushed last: rest ran down to the first carved
  CHECK(list_length(page->local_free) == count);
  CHECK(page->countdown == 0);
}

TEST_CASE("a refill takes the oldest page, or the fullest of the first ones if it is sparse") {
  // Blocks in use per page (of 64), in queue order; the last page lies beyond the pages looked
  // at. Below 16 in use, a page is sparse.
  const uint32_t used[kRefillScanPages + 1] = {3, 40, 10, 40, 62, 1, 0, 20, 64};
  Page pages[kRefillScanPages + 1] = {};
  PageQueue queue;
  for (unsigned i = 0; i <= kRefillScanPages; ++i) {
    pages[i].state = PageState::kAvailable;
    pages[i].capacity = 64;
    pages[i].countdown = used[i];
    queue_push(queue, &pages[i]);
  }
  // The oldest page stays sparse, so each refill takes the fullest of the first eight.
  CHECK(queue_pop_for_refill(queue) == &pages[4]);  // 62 in use; not the 64 past the window
  CHECK(queue_pop_for_refill(queue) == &pages[8]);  // one page gone: the window reaches it
  CHECK(queue_pop_for_refill(queue) == &pages[1]);  // a tie goes to the older page
  CHECK(queue_pop_for_refill(queue) == &pages[3]);
  CHECK(queue_pop_for_refill(queue) == &pages[7]);
  CHECK(queue_pop_for_refill(queue) == &pages[2]);
  CHECK(queue_pop_for_refill(queue) == &pages[0]);
  CHECK(queue_pop_for_refill(queue) == &pages[5]);
  CHECK(queue_pop_for_refill(queue) == &pages[6]);
  CHECK(queue_pop_for_refill(queue) == nullptr);
  CHECK(queue.first == nullptr);
  CHECK(queue.last == nullptr);

  // An oldest page that is not sparse is taken even when a fuller one follows.
  pages[0].countdown = 16;
  pages[1].countdown = 60;
  queue_push(queue, &pages[0]);
  queue_push(queue, &pages[1]);
  CHECK(queue_pop_for_refill(queue) == &pages[0]);
  CHECK(queue_pop_for_refill(queue) == &pages[1]);
}
