// Segments: kSegmentBytes-aligned mappings cut into kPagesPerSegment pages. The segment's first
// page holds its metadata: one `Page` record per page (the block-serving state of the span that
// page heads) followed by the segment's own fields. Finding a pointer's page is therefore two
// shifts and a mask, never a search.
//
// The segment map records, for every kSegmentBytes unit of the address space, whether a segment
// or a large block of ours starts there. free() consults it before touching any metadata, so a
// pointer that is not ours is reported instead of crashing.
//
// A segment belongs to one heap (thread) while any of its pages is in use; an entirely free
// segment goes to a process-wide cache and from there to any heap, or back to the OS.
#pragma once

#include <atomic>

#include "core/size_class.h"
#include "platform/config.h"
#include "platform/memcheck.h"
#include "platform/os.h"

namespace mapalloc {

struct Heap;  // the owner of segments and pages; defined by the heap layer

// A free block: the first word links the free list, the second holds its page's free key (how
// a second free of the same block is recognised). Links are read and written only through
// block_next/set_block_next (below).
struct Block {
  Block* next;
  uintptr_t free_key;
};

// --- the segment map ------------------------------------------------------------------------

// Map entries: 0 nothing of ours; 1 a large block with its header at the unit's start; 2 a large
// block with its header one unit lower (alignments of kSegmentBytes and more); 3 a segment
// without a tagged owner; kUnitArena + k (k < kArenaSizeSteps) a unit of a large-block arena of
// kSegmentBytes << k bytes, aligned to its size (arena.h); kFirstHeapTag..254 a segment owned by
// the heap with that tag. free() compares the entry with its own heap's tag, which checks in one
// compare that the pointer is in a segment and that this thread owns every page in it. 255 is
// never stored: heaps without a unique tag use it, so they never match.
enum UnitKind : uint8_t {
  kUnitNone = 0,
  kUnitLarge = 1,
  kUnitLargeBelow = 2,
  kUnitSegment = 3,
  kUnitArena = 4,
};
constexpr unsigned kArenaSizeSteps = 9;  // arenas of 4 MiB .. 1 GiB
constexpr uint8_t kFirstHeapTag = kUnitArena + kArenaSizeSteps;
constexpr uint8_t kLastHeapTag = 254;
constexpr uint8_t kNoHeapTag = 255;

constexpr size_t kUnitCount = size_t{1} << (kAddressBits - kSegmentShift);
// One byte per unit, in .bss: untouched parts cost no memory. Indexes are masked rather than
// bounds-checked: a pointer beyond the user address space (never a valid one) reads the entry of
// some lower unit, so only such non-canonical garbage could be misread.
extern uint8_t segment_map[kUnitCount];

MAPALLOC_INLINE uintptr_t unit_of(const void* pointer) {
  return (reinterpret_cast<uintptr_t>(pointer) >> kSegmentShift) & (kUnitCount - 1);
}
// Entries change only while no block of the unit is live (segment mapped, handed between heap
// and cache, unmapped), so plain reads suffice; a stale read can only send a free to the slow
// path, which re-reads with an atomic load.
MAPALLOC_INLINE uint8_t unit_entry(const void* pointer) {
  return __atomic_load_n(&segment_map[unit_of(pointer)], __ATOMIC_RELAXED);
}
// The kind of the unit holding `pointer`: kUnitNone, kUnitLarge, kUnitLargeBelow, kUnitSegment
// (owned or not) or kUnitArena (any size).
MAPALLOC_INLINE unsigned unit_kind(const void* pointer) {
  uint8_t entry = unit_entry(pointer);
  if (entry >= kFirstHeapTag) return kUnitSegment;
  return entry >= kUnitArena ? unsigned{kUnitArena} : unsigned{entry};
}
inline void set_unit_entry(const void* unit_start, uint8_t entry) {
  __atomic_store_n(&segment_map[reinterpret_cast<uintptr_t>(unit_start) >> kSegmentShift], entry,
                   __ATOMIC_RELAXED);
}

// --- pages ----------------------------------------------------------------------------------

enum class PageState : uint8_t {
  kFree,       // not part of any span
  kSpanTail,   // a non-first page of a span: see head_index
  kCurrent,    // the heap's current page for its class; its free blocks sit in heap->free[c]
  kAvailable,  // in the heap's available queue for its class: has or will have free blocks
  kFull,       // every block handed out; waits for a free (local, or one delayed remote free)
};

// Page accounting (owner thread only):
//   used      = blocks held by the program + blocks in heap->free[c] + blocks in thread_free
//   countdown = used, decremented by each local free (the fast path's only bookkeeping)
//   |local_free| = synced_used - countdown
// A full page instead has countdown = synced_used = 1, so its first local free reaches zero and
// takes the slow path that puts the page back in use. countdown == 0 otherwise means used == 0:
// every block is back in local_free or was never carved, so the span can be retired.
struct alignas(128) Page {
  // First cache line: what the owner's malloc and free touch.
  // Blocks freed by the owner (and remote frees it collected) since the heap last took this
  // page's free blocks into heap->free[c].
  Block* local_free;
  uint32_t countdown;
  uint32_t synced_used;
  // Block-start test (size_class.h): offset * block_magic < start_limit exactly for the start of
  // a carved block. start_limit is 0 for every record that does not head a span in use, so the
  // test also rejects free pages, span tails and the metadata page.
  uint64_t block_magic;
  uint64_t start_limit;
  Heap* owner;  // owning heap; null for free pages, span tails and the metadata page
  // Word 1 of every free (or carved, not yet allocated) block of the span holds this; malloc
  // clears it. Per page, not per heap, so that it survives a reclaim. Derived from a secret.
  uintptr_t free_key;
  uint32_t block_bytes;
  uint16_t capacity;  // blocks in the span
  uint16_t carved;    // blocks carved so far; block i starts at span start + i * block_bytes
  uint8_t size_class;
  PageState state;
  uint8_t span_pages;
  uint8_t head_index;  // this span's first page (itself for a head)

  // Second cache line: written by other threads. Remote frees push onto this list with a CAS;
  // bit 0 (kFullFlag) is set by the owner when the page is full and the list empty: the first
  // remote free then claims the flag and hands its block to the owner's delayed list instead,
  // which is how the owner learns that a full page has free blocks again. The top 16 bits count
  // the blocks listed (kThreadFreeCountShift), so that the owner learns the count with the list
  // and need not walk its cold blocks for it.
  alignas(64) std::atomic<uintptr_t> thread_free;
  Page* queue_next;  // the heap's available queue of this class
  Page* queue_prev;
  uint64_t retired_at_ms;  // for a free page: when its span was freed (purge bookkeeping)
  // Heap profiler: sampled blocks live in this span. While not 0, start_limit stops at the
  // lowest sampled block (the owner's frees of it and the blocks above take the slow path, which
  // looks the block up: prof_hooks.h).
  std::atomic<uint32_t> prof_samples;
  // Which blocks are sampled, so that the span's other frees need no lookup: eight 16-bit
  // lanes, four per word, each a block index + 1 (0: empty), so that a free tests a word for
  // its mark in a few instructions; samples beyond them are counted in prof_overflow and looked
  // up.
  static constexpr unsigned kProfSlotWords = 2;
  std::atomic<uint64_t> prof_slot_words[kProfSlotWords];
  std::atomic<uint16_t> prof_overflow;
};
static_assert(sizeof(Page) == 128);
static_assert(offsetof(Page, thread_free) == 64, "remote writes must not share the owner's line");
constexpr uintptr_t kFullFlag = 1;
// The thread_free word: the first block's address (below 2^48: user-space addresses are, unless
// a mapping is asked for above that, which mapalloc never does) and kFullFlag in the low bits,
// the count of blocks listed above (a span holds fewer than 2^16 blocks: Page::capacity).
constexpr unsigned kThreadFreeCountShift = 48;
constexpr uintptr_t kThreadFreeCountOne = uintptr_t{1} << kThreadFreeCountShift;
constexpr uintptr_t kThreadFreeBlockMask = (kThreadFreeCountOne - 1) & ~kFullFlag;
static_assert(kAddressBits <= kThreadFreeCountShift, "a block's address leaves the count's bits");

struct Segment;

// 2 MiB regions: each a transparent huge page when the segment is advised MADV_HUGEPAGE, or
// when collapsed (segment_count_carved).
constexpr unsigned kPagesPerHugePage = static_cast<unsigned>(kHugePageBytes / kPageBytes);
constexpr unsigned kRegionsPerSegment = static_cast<unsigned>(kSegmentBytes / kHugePageBytes);
static_assert(kPagesPerSegment % kPagesPerHugePage == 0 && kPagesPerHugePage < 64);

// All segments of one heap.
struct SegmentList {
  Segment* first = nullptr;
  size_t count = 0;
  // Empty segments stay in the list (an abandoned heap keeps them for the thread that adopts
  // it) until segment_list_release_empty lets them go.
  bool keep_empty = false;
  // Until then, empty segments stay in the list too: the heap took spans lately, and keeps the
  // free pages its recent peak needed (heap_purge's working set). In the process cache they
  // would be purged after the delay whatever the heap's working set.
  uint64_t keep_empty_until_ms = 0;
};

struct Segment {
  Page pages[kPagesPerSegment];  // must stay at offset 0: see page_entry_of
  Heap* owner;
  Segment* next;  // in the owner's SegmentList, or in the process-wide cache
  Segment* prev;
  uint64_t free_pages;     // bit i set: page i is not part of any span
  uint64_t purged_pages;   // bit i set: page i is free and not resident (purged, or never used)
  uint64_t cached_at_ms;   // when it entered the process cache of free segments
  Segment* registry_next;  // every mapped segment, for statistics (segment_registry_walk)
  // Advised MADV_HUGEPAGE: the first touch of a 2 MiB region none of whose pages is resident
  // makes the whole region resident (a huge page), so taking a span there marks the region's
  // other free pages dirty, and untouched: those are not purged while the region has a span in
  // use (that would split the huge page, and the next spans there would fault 4 KiB pages one
  // at a time). Pages freed by a span are purged after the delay as always.
  bool huge_pages;
  // Advised MADV_NOHUGEPAGE while it waits purged in the process cache, MADV_HUGEPAGE again
  // when a heap takes it (then huge_pages is set again). Without it khugepaged may collapse
  // the first 2 MiB region, whose metadata page stays resident, into a huge page: 2 MiB
  // resident for a segment that holds no block.
  bool huge_pages_paused;
  uint64_t untouched_pages;
  // On 4 KiB pages (huge_pages false): the bytes carved into blocks in each 2 MiB region by the
  // spans in use (a span's blocks are counted in the region where they lie). A region is made a
  // huge page when this comes within kCollapseSlackBytes of 2 MiB (the first region's metadata
  // page counts as unfilled; segment_count_carved); collapsed_regions marks those, until a purge
  // splits one again.
  uint32_t region_carved_bytes[kRegionsPerSegment];
  uint8_t collapsed_regions;
};
static_assert(sizeof(Segment) <= kPageBytes);

// The secure build maps an inaccessible page right after every segment: an overflow out of its
// last block faults instead of running into the mapping above. (Outside the segment, not its
// last page: a protection inside would split the segment's second 2 MiB region, which could no
// longer be a transparent huge page; the secure build then took twice the default build's page
// faults.) The rest of the 4 MiB unit above stays free for mappings of no particular alignment.
constexpr size_t kSegmentGuardBytes = kSecure ? kPageBytes : 0;
constexpr uint64_t kAllUsablePages = ~uint64_t{0} << kFirstUsablePage;

// Pages that are free but still resident: not purged since their span was freed.
MAPALLOC_INLINE uint64_t segment_dirty_pages(const Segment* segment) {
  return segment->free_pages & ~segment->purged_pages & kAllUsablePages;
}

MAPALLOC_INLINE Segment* segment_of(const void* pointer) {
  return reinterpret_cast<Segment*>(reinterpret_cast<uintptr_t>(pointer) & ~(kSegmentBytes - 1));
}

// The page record covering `pointer` (a span tail's record for blocks past a span's first page).
MAPALLOC_INLINE Page* page_entry_of(const void* pointer) {
  uintptr_t address = reinterpret_cast<uintptr_t>(pointer);
  uintptr_t index = (address >> kPageShift) & (kPagesPerSegment - 1);
  return reinterpret_cast<Page*>((address & ~(kSegmentBytes - 1)) + index * sizeof(Page));
}

// page_entry_of for a pointer whose (masked) unit is `unit` and lies in the address space.
MAPALLOC_INLINE Page* page_entry_in_unit(uintptr_t unit, const void* pointer) {
  uintptr_t index = (reinterpret_cast<uintptr_t>(pointer) >> kPageShift) & (kPagesPerSegment - 1);
  return reinterpret_cast<Page*>((unit << kSegmentShift) + index * sizeof(Page));
}

inline unsigned page_index(const Page* page) {
  return static_cast<unsigned>((reinterpret_cast<uintptr_t>(page) & (kSegmentBytes - 1)) /
                               sizeof(Page));
}

inline char* page_start(const Page* page) {
  return reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(segment_of(page)) +
                                 page_index(page) * kPageBytes);
}

inline Page* span_head(Page* entry) { return &segment_of(entry)->pages[entry->head_index]; }

// --- free-list links ----------------------------------------------------------------------------

// In the secure build a link is stored XOR-ed with a process secret (process_secrets.block_link)
// mixed with the block's own address, so that a heap overflow cannot plant a pointer the
// allocator would follow; a decoded link that leaves the block's segment is reported as
// corruption. (The delayed list, which links blocks of many segments, uses block_next_any.)

// A page's free key: the process secret process_secrets.page_key mixed with the page's address
// (drawn before the first heap exists).
inline uintptr_t page_free_key(const Page* page) {
  return process_secrets.page_key ^
         ((reinterpret_cast<uintptr_t>(page) >> 7) * 0xd6e8feb86659fd93ull);
}

MAPALLOC_INLINE uintptr_t block_link_mask(const Block* block) {
  return process_secrets.block_link ^
         ((reinterpret_cast<uintptr_t>(block) >> 4) * 0x9e3779b97f4a7c15ull);
}

// Secure build: the last 8 bytes of every carved block below kSecureProtectMinBytes (and above
// 16 bytes) hold, XOR block_link_mask, either this (never allocated) or the trailer's size word
// (api/secure.cpp), so that a free can check the block before it (a heap underflow). It reads
// as the size word of a 0-byte malloc block, which passes that check as it is.
constexpr uint64_t kCarvedTrailerWord = 0;

[[noreturn]] void report_corrupt_link(const Block* block);

MAPALLOC_INLINE Block* block_next_any(const Block* block) {
  if constexpr (kDebug) {  // (the block is free: see memcheck.h)
    memcheck::open_defined(&block->next, sizeof(block->next));
    Block* next = block->next;
    memcheck::close(&block->next, sizeof(block->next));
    return next;
  }
  if constexpr (!kSecure) return block->next;
  return reinterpret_cast<Block*>(reinterpret_cast<uintptr_t>(block->next) ^
                                  block_link_mask(block));
}

MAPALLOC_INLINE Block* block_next(const Block* block) {
  Block* next = block_next_any(block);
  if constexpr (kSecure) {
    if (next != nullptr && segment_of(next) != segment_of(block)) report_corrupt_link(block);
  }
  return next;
}

MAPALLOC_INLINE void set_block_next(Block* block, Block* next) {
  if constexpr (kDebug) {
    memcheck::open_undefined(&block->next, sizeof(block->next));
    block->next = next;
    memcheck::close(&block->next, sizeof(block->next));
    return;
  }
  if constexpr (!kSecure)
    block->next = next;
  else
    block->next =
        reinterpret_cast<Block*>(reinterpret_cast<uintptr_t>(next) ^ block_link_mask(block));
}

// A block's second word: its page's free key while the block is free, 0 (or the program's data)
// while it is held. Read through block_key, which leaves memcheck's view of the word as it was
// (the word may belong to a held block the program never wrote); written through set_block_key
// only for blocks becoming free or handed out, whose words the debug build keeps closed to the
// program (memcheck.h).
MAPALLOC_INLINE uintptr_t block_key(const Block* block) {
  if constexpr (kDebug) return memcheck::peek_word(&block->free_key);
  return block->free_key;
}

MAPALLOC_INLINE void set_block_key(Block* block, uintptr_t key) {
  if constexpr (kDebug) memcheck::open_undefined(&block->free_key, sizeof(block->free_key));
  block->free_key = key;
  if constexpr (kDebug) memcheck::close(&block->free_key, sizeof(block->free_key));
}

// --- spans ----------------------------------------------------------------------------------

// Finds `pages` contiguous free pages in one of `list`'s segments, taking a segment from the
// process cache or the OS if needed (it joins `list`, owned by `owner`, whose map entry becomes
// `owner_tag`). Returns the span's head record with state kFree and the pages marked in use, or
// nullptr if memory is exhausted.
Page* span_alloc(SegmentList& list, Heap* owner, uint8_t owner_tag, unsigned pages);

// The same within `list`'s segments only (nullptr if none has room).
Page* span_alloc_in_list(SegmentList& list, unsigned pages);

// Adds a segment to a heap's list (reclaiming an abandoned heap's segments).
void segment_list_push(SegmentList& list, Segment* segment);

// Returns a span (all its blocks free) to its segment at time `now_ms`. A segment left without
// any span in use leaves `list` for the process cache, unless it is the list's last one or
// the list keeps its empty segments (keep_empty, keep_empty_until_ms).
void span_free(SegmentList& list, Page* head, uint64_t now_ms);
// The span at `head` carved the blocks in bytes [from_bytes, to_bytes) of its pages: counted in
// Segment::region_carved_bytes, and a region of a segment on 4 KiB pages whose blocks now fill
// it but for kCollapseSlackBytes is made a huge page (at most kCollapseSlackBytes more resident,
// one TLB entry instead of 512). span_free takes the span's blocks off the count.
void segment_count_carved(Page* head, size_t from_bytes, size_t to_bytes);

// Releases to the process cache (or unmaps) the list's empty segments while the list holds more
// than `keep` segments;
// with `purged_only`, only those whose pages are all purged already. Returns the bytes released.
size_t segment_list_release_empty(SegmentList& list, size_t keep, bool purged_only,
                                  uint64_t now_ms);

// Gives back to the OS the free pages of `segment` that have been free for `delay_ms` (all of
// them for delay 0), at most `max_pages` of them: the highest ones, which span allocation (lowest
// first) would reuse last. Returns the bytes purged; `*next_deadline_ms` is lowered to when the
// remaining unpurged free pages fall due (left alone if there are none).
size_t segment_purge(Segment* segment, uint64_t now_ms, uint64_t delay_ms,
                     uint64_t* next_deadline_ms, unsigned max_pages = kPagesPerSegment);

// Process cache of free segments.
struct SegmentCacheCounters {
  size_t cached_segments;
  size_t cached_bytes;
};
SegmentCacheCounters segment_cache_counters();
// Purges cached segments older than the purge delay and unmaps those older than the unmap
// delay (beyond a couple kept for reuse); with `force`, unmaps them all now. Returns the bytes
// purged or unmapped; `*next_deadline_ms` is lowered to the cache's next due time.
size_t segment_cache_purge(uint64_t now_ms, bool force, uint64_t* next_deadline_ms);
// Unmaps every cached segment; returns the bytes released.
size_t segment_cache_release_all();
void segment_cache_after_fork_child();

// Calls `visit(segment, context)` for every mapped segment while holding the registry lock, so
// that none is unmapped meanwhile. The visitor reads page records without synchronisation:
// figures from other threads' pages are estimates.
void segment_registry_walk(void (*visit)(const Segment*, void*), void* context);

// Lowers `*deadline` to `candidate`. 0 means "none" for both: a candidate of 0 changes nothing.
inline void lower_deadline(uint64_t* deadline, uint64_t candidate) {
  if (candidate != 0 && (*deadline == 0 || candidate < *deadline)) *deadline = candidate;
}

}  // namespace mapalloc
