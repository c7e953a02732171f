#include "api/prof_hooks.h"

namespace mapalloc {

namespace {

// The size the program asked for (the secure build allocates a trailer more).
size_t requested(size_t size) {
  return size >= kSecureTrailerBytes ? size - kSecureTrailerBytes : size;
}

// The blocks of a class to hand out until the next sample, that one included: the byte countdown
// runs out at the block that takes the count of bytes to it or past it.
int64_t blocks_until_sample(Heap* heap, unsigned size_class) {
  auto bytes = static_cast<uint64_t>(prof_next_countdown(&heap->prof_random));
  uint64_t block_bytes = class_block_bytes(size_class);
  return static_cast<int64_t>((bytes - 1) / block_bytes + 1);  // (bytes >= 1)
}

int64_t& class_countdown_of(Heap* heap, unsigned size_class) {
  int64_t& countdown = heap->prof_countdown[size_class];
  if (countdown == 0) countdown = blocks_until_sample(heap, size_class);
  return countdown;
}

// Replaces `old_mark` by `new_mark` in the first lane of the page's slots that holds it.
// Returns false when no lane does.
MAPALLOC_INLINE bool swap_slot(Page* page, uint16_t old_mark, uint16_t new_mark) {
  for (auto& slot_word : page->prof_slot_words) {
    uint64_t word = slot_word.load(std::memory_order_relaxed);
    for (uint64_t lane = lane_of(word, old_mark); lane != 0; lane = lane_of(word, old_mark)) {
      uint64_t lane_low = lane & (~lane + 1);  // the lane's lowest bit
      uint64_t replaced = (word & ~lane) | lane_low * new_mark;
      if (slot_word.compare_exchange_weak(word, replaced, std::memory_order_relaxed)) return true;
    }
  }
  return false;
}

Page* span_head_of(void* block) {
  Page* entry = page_entry_of(block);
  return entry->state == PageState::kSpanTail ? span_head(entry) : entry;
}

// A sampled block's span names it in a slot (or counts it as overflow) and sends the frees of
// its blocks from the sampled one's index up to the slow path, which looks sampled blocks up
// (prof_class_free).
void hold_frees_of_sampled(Block* block) {
  Page* page = span_head_of(block);
  if (!swap_slot(page, 0, block_mark(page, block)))
    page->prof_overflow.fetch_add(1, std::memory_order_relaxed);
  page->prof_samples.fetch_add(1, std::memory_order_relaxed);
  prof_restore_fast_free(page);
}

// How many of a refill's listed blocks a sample may be swapped with (highest_of_refill).
constexpr unsigned kSampleCandidates = 16;

// The block to sample in place of `block`, the refill's first (just taken, its key cleared):
// the highest-addressed of it and the next few of the class's list, all of one span (a refill
// lists blocks of heap->current[c]). The span holds the frees of its blocks from the sampled
// one's index up (prof_hooks.h), so the higher it lies, the fewer frees take the slow path
// while it lives: with k candidates in random order, about 1 / (k + 1) of the span's frees
// instead of half. The candidates are the next to be handed out, so looking at them costs
// little more than moving their cache misses earlier. The one chosen leaves the list; `block`
// takes its place, free again.
Block* highest_of_refill(Heap* heap, unsigned size_class, Block* block) {
  Block* highest = block;
  Block* before_highest = nullptr;  // its predecessor in the list (nullptr: the list's head)
  Block* previous = nullptr;
  unsigned looked = 0;
  for (Block* next = heap->free[size_class]; next != nullptr && looked < kSampleCandidates;
       previous = next, next = block_next(next), ++looked) {
    if (next > highest) {
      highest = next;
      before_highest = previous;
    }
  }
  if (highest == block) return block;
  set_block_next(block, block_next(highest));
  set_block_key(block, heap->current[size_class]->free_key);
  if (before_highest == nullptr)
    heap->free[size_class] = block;
  else
    set_block_next(before_highest, block);
  set_block_key(highest, 0);
  return highest;
}

// Hands out the blocks of `list` (the refill's, after its first; `handed` blocks in all) that
// lie before the one where `countdown` (in blocks) runs out, and gives the rest back to the page:
// its length is known (handed - 1 - kept), so the cold blocks need no walk.
void cut_before_sample_point(Heap* heap, unsigned size_class, Block* list, unsigned handed,
                             int64_t& countdown) {
  int64_t allowed = countdown - 1;
  int64_t kept = 0;
  Block* last = nullptr;
  for (Block* next = list; next != nullptr && kept < allowed; next = block_next(next)) {
    last = next;
    ++kept;
  }
  Block* rest = list;
  if (last == nullptr) {
    heap->free[size_class] = nullptr;
  } else {
    rest = block_next(last);
    set_block_next(last, nullptr);
  }
  page_return_counted(heap->current[size_class], rest, static_cast<unsigned>(handed - 1 - kept));
  countdown -= kept;
}

}  // namespace

void* prof_class_alloc(Heap* heap, unsigned size_class, Block* block, size_t size,
                       unsigned handed) {
  // Every block of a class comes from a list that a refill handed out, and is charged then:
  // the refill's first block (`block`) here, the rest of its list below.
  if (handed == 0) return block;
  int64_t& countdown = class_countdown_of(heap, size_class);
  countdown -= 1;
  bool sample = countdown <= 0;
  if (sample) {
    countdown = blocks_until_sample(heap, size_class);
    block = highest_of_refill(heap, size_class, block);
  }
  if (Block* list = heap->free[size_class]) {
    // The rest of the refill's list (`block` was its first) is charged now.
    int64_t listed = static_cast<int64_t>(handed) - 1;
    if (countdown > listed) {  // the sample point lies beyond the list: hand all of it out
      countdown -= listed;
    } else {
      cut_before_sample_point(heap, size_class, list, handed, countdown);
    }
  }
  // Recorded last: prof_record may allocate (libgcc's first look into a library's unwind
  // tables calls malloc), which must find the class's list as the cut left it.
  if (sample && prof_record(block, requested(size), class_block_bytes(size_class)))
    hold_frees_of_sampled(block);
  return block;
}

void prof_large_alloc(void* block, size_t size) {
  Heap* heap = tls_heap;
  if (heap == &empty_heap) return;  // (a thread that never allocated, reallocating)
  int64_t& countdown = heap->prof_countdown[kClassCount];
  if (countdown == 0) countdown = prof_next_countdown(&heap->prof_random);
  countdown -= static_cast<int64_t>(size);
  if (countdown > 0) return;
  countdown = prof_next_countdown(&heap->prof_random);
  prof_record(block, requested(size), size);
}

void prof_class_free(Page* page, void* block) {
  if (swap_slot(page, block_mark(page, block), 0)) {
    prof_forget(block);
  } else {
    // Not in a slot: a sample only if the span has more than its slots hold.
    if (page->prof_overflow.load(std::memory_order_relaxed) == 0 || !prof_forget(block)) return;
    page->prof_overflow.fetch_sub(1, std::memory_order_relaxed);
  }
  page->prof_samples.fetch_sub(1, std::memory_order_relaxed);
}

void prof_restore_fast_free(Page* page) {
  uint64_t step = page_block_start_step(page);
  if (page->prof_samples.load(std::memory_order_relaxed) == 0) {
    page->start_limit = page->carved * step;
    return;
  }
  // The fast path admits the blocks below the lowest sampled index (none while a sample is
  // only counted in prof_overflow: its index is not known). Other threads only ever clear
  // lanes, which can only raise that index: a limit computed from an older view is lower,
  // never above a live sample.
  uint32_t lowest = page->prof_overflow.load(std::memory_order_relaxed) != 0 ? 0 : page->carved;
  for (auto& slot_word : page->prof_slot_words) {
    uint64_t word = slot_word.load(std::memory_order_relaxed);
    for (unsigned lane = 0; lane < 4; ++lane) {
      // (An empty lane's mark, 0, wraps to the largest index: never the lowest.)
      uint32_t index = static_cast<uint16_t>(word >> (16 * lane)) - 1u;
      lowest = index < lowest ? index : lowest;
    }
  }
  page->start_limit = lowest * step;
}

}  // namespace mapalloc
