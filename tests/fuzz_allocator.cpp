// libFuzzer target for mapalloc (built by scripts/make/fuzz.mk: make fuzz, make fuzz-quick).
//
// The input is decoded into calls of the mapalloc_* API (include/mapalloc.h): malloc, calloc,
// realloc, aligned_alloc, free, usable_size, owns, trim, option get/set, plus the library's
// fault injection (os_fail_mmap_after). Each call runs on one of four threads: the fuzzer's own
// (0) and three workers (1..3), created once and reused (an op can restart one, so that heaps
// are abandoned and adopted), so blocks are freed and reallocated by other threads than their
// allocator's. Calls run one at a time, or in concurrent batches where each block is touched
// by one worker only.
//
// A shadow model holds, per slot, the live block, its requested size, the usable size it got
// and a seed. Blocks are filled with a pattern of their seed over their whole usable size
// (sampled above 64 KiB) and checked before every realloc and free and at the end of each input;
// realloc must keep the prefix; usable_size must stay what it was and cover the request;
// owns() must be true for live blocks and false right after a free (calls one at a time) and
// for interior pointers; failures must be NULL with ENOMEM (EINVAL for a bad alignment), and
// only where they may happen (an impossible size, or a failure injected). Every input ends
// with all blocks freed and no large block left.
//
// FUZZ_ALLOCATOR_TRACE=1 prints each decoded call and its result (to read a crash's input).
// FUZZ_ALLOCATOR_WRITE_SEEDS=dir writes the hand-written seed inputs into dir and exits.
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <string>
#include <vector>

#include "mapalloc.h"
#include "platform/os.h"  // mapalloc::os_fail_mmap_after, the library's fault injection

namespace {

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * kKiB;

constexpr int kWorkers = 3;  // threads 1..3; thread 0 is the fuzzer's
constexpr int kSlots = 64;   // blocks live at once, at most
constexpr size_t kMaxLiveBytes = 48 * kMiB;
constexpr int kMaxOps = 2000;                  // per input
constexpr size_t kFullCheckBytes = 64 * kKiB;  // blocks above this are filled and checked sampled
constexpr int kErrnoSentinel = 7777;

// ---- the ops ----------------------------------------------------------------------------------

enum Kind : uint8_t {
  kMalloc,
  kCalloc,
  kRealloc,
  kAlignedAlloc,
  kFree,
  kCheck,
  kHuge,
  kTrim,
  kOption,
  kFault,
  kFaultOff,
  kParallel,
  kRespawn,
  kProbe,
  kKindCount
};

const char* const kKindNames[kKindCount] = {
    "malloc", "calloc", "realloc", "aligned_alloc", "free",     "check",   "huge",
    "trim",   "option", "fault",   "fault_off",     "parallel", "respawn", "probe"};

// The first byte of an op picks its kind through this table (weights: how often).
const Kind kKindTable[32] = {
    kMalloc,  kMalloc,  kMalloc,  kMalloc,  kMalloc,   kMalloc,       kCalloc,       kCalloc,
    kRealloc, kRealloc, kRealloc, kRealloc, kRealloc,  kAlignedAlloc, kAlignedAlloc, kAlignedAlloc,
    kFree,    kFree,    kFree,    kFree,    kFree,     kFree,         kCheck,        kCheck,
    kHuge,    kTrim,    kOption,  kFault,   kFaultOff, kParallel,     kRespawn,      kProbe};

struct Op {
  int index;  // in the input, for messages
  Kind kind;
  uint8_t thread;  // 0..3
  uint8_t slot;    // 0..kSlots-1
  uint8_t variant;
  size_t size;
  size_t count;      // calloc
  size_t alignment;  // aligned_alloc
};

// Sizes that sit on the library's boundaries (classes, spans, pages, segments, large blocks).
const size_t kBoundarySizes[] = {0,
                                 1,
                                 8,
                                 16,
                                 17,
                                 128,
                                 129,
                                 1024,
                                 1025,
                                 8 * kKiB,
                                 16 * kKiB,
                                 64 * kKiB,
                                 128 * kKiB,
                                 256 * kKiB,
                                 kMiB - 16,
                                 kMiB,
                                 kMiB + 1,
                                 2 * kMiB,
                                 4 * kMiB - 4096,
                                 4 * kMiB,
                                 4 * kMiB + 1};

const size_t kInvalidAlignments[] = {0, 3, 6, 24, 48, 100, 1000, 12345, (1 << 20) + 1, SIZE_MAX};
const size_t kHugeAlignments[] = {size_t{1} << 30, size_t{1} << 40, size_t{1} << 62,
                                  size_t{1} << 63};

struct OptionSetting {
  const char* name;
  long value;
  bool valid;
};
const OptionSetting kOptionSettings[] = {
    {"purge_delay_ms", 0, true},         {"purge_delay_ms", 1, true},
    {"purge_delay_ms", 100, true},       {"unmap_delay_ms", 0, true},
    {"unmap_delay_ms", 5, true},         {"unmap_delay_ms", 1000, true},
    {"purge_method", 0, true},           {"purge_method", 1, true},
    {"transparent_huge_pages", 1, true}, {"transparent_huge_pages", 0, true},
    {"zero_on_free", 1, true},           {"zero_on_free", 0, true},
    {"purge_method", 2, false},          {"purge_delay_ms", -1, false},
    {"no_such_option", 1, false},        {"unmap_delay_ms", 3600 * 1000 + 1, false},
    {"large_quarantine", 0, true},       {"large_quarantine", 1, true},
    {"large_quarantine", 2, true},       {"large_quarantine", 3, false},
};
// Restored after every input, so that inputs do not depend on each other's settings.
const char* const kRestoredOptions[] = {"purge_delay_ms", "unmap_delay_ms",
                                        "purge_method",   "transparent_huge_pages",
                                        "zero_on_free",   "large_quarantine"};
long default_options[sizeof(kRestoredOptions) / sizeof(kRestoredOptions[0])];

// Reads the input front to back; past its end every read gives 0.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return at_ >= size_; }
  uint64_t take(unsigned bytes) {
    uint64_t value = 0;
    for (unsigned i = 0; i < bytes; ++i) {
      uint64_t byte = at_ < size_ ? data_[at_] : 0;
      ++at_;
      value |= byte << (8 * i);
    }
    return value;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

// A size: mostly small, then medium (to 1 MiB), large (to 6 MiB), boundaries, or exact.
size_t take_size(Reader& in) {
  switch (in.take(1) % 11) {
    case 0:
      return in.take(1) % 17;
    case 1:
    case 2:
    case 3:
    case 4:
      return 1 + in.take(2) % 1024;
    case 5:
    case 6:
      return 1025 + in.take(2) % (64 * kKiB - 1024);
    case 7:
      return 64 * kKiB + in.take(3) % (kMiB - 64 * kKiB + 1);
    case 8:
      return kMiB + 1 + in.take(3) % (5 * kMiB);
    case 9: {
      size_t base = kBoundarySizes[in.take(1) % (sizeof(kBoundarySizes) / sizeof(size_t))];
      size_t delta = in.take(1) % 5;  // -2..+2
      return base + delta >= 2 ? base + delta - 2 : 0;
    }
    default:
      return in.take(4) % (8 * kMiB + 1);
  }
}

size_t take_alignment(Reader& in) {
  unsigned choice = static_cast<unsigned>(in.take(1));
  if (choice < 200) return size_t{1} << (choice % 21);      // 1 B .. 1 MiB
  if (choice < 230) return size_t{1} << (21 + choice % 3);  // 2, 4, 8 MiB
  if (choice < 250)
    return kInvalidAlignments[choice % (sizeof(kInvalidAlignments) / sizeof(size_t))];
  return kHugeAlignments[choice % 4];
}

Op decode(Reader& in, int index) {
  Op op{};
  op.index = index;
  op.kind = kKindTable[in.take(1) % 32];
  uint8_t where = static_cast<uint8_t>(in.take(1));
  op.thread = where & 3;
  op.slot = static_cast<uint8_t>((where >> 2) % kSlots);
  switch (op.kind) {
    case kMalloc:
      op.size = take_size(in);
      break;
    case kCalloc:
      op.variant = static_cast<uint8_t>(in.take(1));
      op.count = in.take(1) % 65;
      op.size = take_size(in);
      break;
    case kRealloc:
      op.variant = static_cast<uint8_t>(in.take(1));
      op.size = take_size(in);
      break;
    case kAlignedAlloc:
      op.alignment = take_alignment(in);
      op.size = take_size(in);
      break;
    case kHuge:
    case kOption:
    case kFault:
    case kParallel:
      op.variant = static_cast<uint8_t>(in.take(1));
      break;
    default:
      break;
  }
  return op;
}

// ---- the shadow model -------------------------------------------------------------------------

struct Slot {
  char* block = nullptr;
  size_t size = 0;    // requested
  size_t filled = 0;  // the usable size it got: all of it carries the pattern
  size_t alignment = 16;
  uint64_t seed = 0;
  int allocated_by = 0;
};

Slot slots[kSlots];
std::atomic<size_t> live_bytes{0};
std::atomic<uint64_t> next_seed{1};
// A failure was injected (and not yet switched off): allocations may then fail.
std::atomic<bool> faults_armed{false};
// Ops run one at a time (not in a concurrent batch): checks that need a quiet heap are on.
std::atomic<bool> one_at_a_time{true};
bool trace = false;
thread_local int this_thread = 0;

[[noreturn]] __attribute__((format(printf, 2, 3))) void fail(const Op& op, const char* format,
                                                             ...) {
  char text[512];
  va_list args;
  va_start(args, format);
  vsnprintf(text, sizeof(text), format, args);
  va_end(args);
  fprintf(stderr, "fuzz_allocator: op %d (%s, thread %d, slot %d): %s\n", op.index,
          kKindNames[op.kind], this_thread, op.slot, text);
  abort();
}

void note(const Op& op, const char* format, ...) __attribute__((format(printf, 2, 3)));
void note(const Op& op, const char* format, ...) {
  if (!trace) return;
  char text[512];
  va_list args;
  va_start(args, format);
  vsnprintf(text, sizeof(text), format, args);
  va_end(args);
  fprintf(stderr, "  op %4d  thread %d  slot %2d  %-13s %s\n", op.index, this_thread, op.slot,
          kKindNames[op.kind], text);
}

inline uint64_t pattern_word(uint64_t seed, size_t word) {
  return (seed ^ (word * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
}

// The parts of a block of `bytes` that carry the pattern: all of it up to kFullCheckBytes, else
// the first and last 4 KiB and one word in every 64 KiB between (on a page chosen by the seed;
// 64 KiB is the library's page: a purged or misplaced page of a live block shows). Regions start
// 8-aligned. Returns false when there is no region after `*offset` (start with *length = 0).
// The pattern loops are kept out of coverage and address checking: they only touch the
// allocator's memory, and would otherwise cost most of the fuzzer's time.
#define FUZZ_UNINSTRUMENTED __attribute__((no_sanitize("address", "coverage")))
FUZZ_UNINSTRUMENTED inline bool next_region(size_t bytes, uint64_t seed, size_t* offset,
                                            size_t* length) {
  if (bytes <= kFullCheckBytes) {
    if (*length != 0 || bytes == 0) return false;
    *offset = 0;
    *length = bytes;
    return true;
  }
  size_t tail = (bytes - 4096) & ~size_t{7};
  if (*length == 0) {
    *offset = 0;
    *length = 4096;
    return true;
  }
  if (*offset >= tail) return false;
  size_t next = (*offset & ~(64 * kKiB - 1)) + 64 * kKiB + ((seed >> 20) % 16) * 4096 + 2048;
  if (next + 8 <= tail) {
    *offset = next;
    *length = 8;
  } else {
    *offset = tail;
    *length = bytes - tail;
  }
  return true;
}

FUZZ_UNINSTRUMENTED void fill(char* block, size_t bytes, uint64_t seed) {
  size_t offset = 0, length = 0;
  while (next_region(bytes, seed, &offset, &length)) {
    size_t end = offset + length;
    size_t at = offset;
    for (; at + 8 <= end; at += 8) {
      uint64_t word = pattern_word(seed, at / 8);
      __builtin_memcpy(block + at, &word, 8);
    }
    uint64_t word = pattern_word(seed, at / 8);
    for (size_t i = 0; at + i < end; ++i) block[at + i] = static_cast<char>(word >> (8 * i));
  }
}

// The first offset below `limit` where the pattern of a `bytes`-byte block is wrong, or SIZE_MAX.
FUZZ_UNINSTRUMENTED size_t first_mismatch(const char* block, size_t bytes, uint64_t seed,
                                          size_t limit) {
  size_t offset = 0, length = 0;
  while (next_region(bytes, seed, &offset, &length)) {
    size_t end = offset + length < limit ? offset + length : limit;
    size_t at = offset;
    for (; at + 8 <= end; at += 8) {
      uint64_t actual;
      __builtin_memcpy(&actual, block + at, 8);
      if (actual != pattern_word(seed, at / 8)) return at;
    }
    uint64_t word = pattern_word(seed, at / 8);
    for (size_t i = 0; at + i < end; ++i) {
      if (block[at + i] != static_cast<char>(word >> (8 * i))) return at + i;
    }
  }
  return SIZE_MAX;
}

FUZZ_UNINSTRUMENTED size_t first_nonzero(const char* block, size_t bytes, uint64_t seed) {
  size_t offset = 0, length = 0;
  while (next_region(bytes, seed, &offset, &length)) {
    for (size_t at = offset; at < offset + length; ++at) {
      if (block[at] != 0) return at;
    }
  }
  return SIZE_MAX;
}

void verify(const Op& op, const Slot& slot) {
  size_t bad = first_mismatch(slot.block, slot.filled, slot.seed, slot.filled);
  if (bad != SIZE_MAX) {
    fail(op,
         "block %p (%zu bytes requested, %zu usable, allocated by thread %d) corrupted at "
         "offset %zu",
         static_cast<void*>(slot.block), slot.size, slot.filled, slot.allocated_by, bad);
  }
}

// A NULL result: allowed only under injected failure, and then with ENOMEM.
void failed_allocation(const Op& op, const char* call, size_t size) {
  int error = errno;
  if (!faults_armed.load()) {
    fail(op, "%s(%zu) returned NULL (errno %d) with no failure injected", call, size, error);
  }
  if (error != ENOMEM) fail(op, "%s(%zu) failed with errno %d, not ENOMEM", call, size, error);
  note(op, "%s(%zu) -> NULL, ENOMEM (injected failure)", call, size);
}

// Shrinks a size so that the live bytes stay under the cap (`freeing`: the bytes the op releases).
size_t capped(size_t size, size_t freeing = 0) {
  size_t live = live_bytes.load();
  live = live > freeing ? live - freeing : 0;
  return live + size <= kMaxLiveBytes ? size : size % (4 * kKiB);
}

// Checks a new block and records it in `slot`.
void accept(const Op& op, Slot& slot, void* pointer, size_t size, size_t alignment, bool zeroed,
            const char* call) {
  char* block = static_cast<char*>(pointer);
  if (errno != kErrnoSentinel)
    fail(op, "a successful %s(%zu) changed errno to %d", call, size, errno);
  size_t required = alignment < 16 ? 16 : alignment;
  if (reinterpret_cast<uintptr_t>(block) % required != 0) {
    fail(op, "%s(%zu) gave %p, not %zu-aligned", call, size, pointer, required);
  }
  size_t usable = mapalloc_usable_size(block);
  if (usable < size) fail(op, "%s(%zu): usable size %zu", call, size, usable);
  if (!mapalloc_owns(block))
    fail(op, "%s(%zu) gave %p, which mapalloc_owns denies", call, size, pointer);
  uint64_t seed = next_seed.fetch_add(1) * 0x2545f4914f6cdd1dull;
  if (zeroed) {
    size_t bad = first_nonzero(block, size, seed);
    if (bad != SIZE_MAX) fail(op, "%s(%zu): byte %zu is not zero", call, size, bad);
  }
  slot.block = block;
  slot.size = size;
  slot.filled = usable;
  slot.alignment = required;
  slot.seed = seed;
  slot.allocated_by = this_thread;
  fill(block, usable, slot.seed);
  live_bytes.fetch_add(usable);
  note(op, "%s(%zu) -> %p, usable %zu", call, size, pointer, usable);
}

// Frees the slot's block (after checking it); owns() must deny it afterwards when nothing else
// runs meanwhile.
void release(const Op& op, Slot& slot) {
  verify(op, slot);
  char* block = slot.block;
  mapalloc_free(block);
  live_bytes.fetch_sub(slot.filled);
  slot.block = nullptr;
  if (one_at_a_time.load() && mapalloc_owns(block)) {
    fail(op, "mapalloc_owns(%p) is true right after its free", static_cast<void*>(block));
  }
  note(op, "free(%p)", static_cast<void*>(block));
}

void do_malloc(const Op& op, Slot& slot) {
  if (slot.block != nullptr) release(op, slot);
  size_t size = capped(op.size);
  errno = kErrnoSentinel;
  void* block = mapalloc_malloc(size);
  if (block == nullptr) return failed_allocation(op, "malloc", size);
  accept(op, slot, block, size, 16, false, "malloc");
}

void do_calloc(const Op& op, Slot& slot) {
  if (slot.block != nullptr) release(op, slot);
  errno = kErrnoSentinel;
  if (op.variant % 8 == 0) {  // count * size overflows
    size_t count = (size_t{1} << 33) + op.count, each = (size_t{1} << 31) + op.size;
    void* block = mapalloc_calloc(count, each);
    if (block != nullptr || errno != ENOMEM) {
      fail(op, "calloc(%zu, %zu) (overflowing) gave %p, errno %d", count, each, block, errno);
    }
    note(op, "calloc(%zu, %zu) -> NULL, ENOMEM (overflow)", count, each);
    return;
  }
  size_t total = capped(op.size);
  size_t count = op.count;
  size_t each = count == 0 ? total : total / count;
  void* block = mapalloc_calloc(count, each);
  if (block == nullptr) return failed_allocation(op, "calloc", count * each);
  accept(op, slot, block, count * each, 16, true, "calloc");
}

void do_realloc(const Op& op, Slot& slot) {
  errno = kErrnoSentinel;
  if (slot.block == nullptr) {  // realloc(NULL, n) is malloc(n)
    size_t size = capped(op.size);
    void* block = mapalloc_realloc(nullptr, size);
    if (block == nullptr) return failed_allocation(op, "realloc(NULL)", size);
    return accept(op, slot, block, size, 16, false, "realloc(NULL)");
  }
  verify(op, slot);
  if (op.variant % 8 == 0) {  // realloc(p, 0) frees p and returns NULL
    char* block = slot.block;
    void* result = mapalloc_realloc(block, 0);
    if (result != nullptr)
      fail(op, "realloc(%p, 0) returned %p, not NULL", static_cast<void*>(block), result);
    if (errno != kErrnoSentinel) fail(op, "realloc(p, 0) changed errno to %d", errno);
    live_bytes.fetch_sub(slot.filled);
    slot.block = nullptr;
    if (one_at_a_time.load() && mapalloc_owns(block)) {
      fail(op, "mapalloc_owns(%p) is true after realloc(p, 0)", static_cast<void*>(block));
    }
    note(op, "realloc(%p, 0) -> NULL (freed)", static_cast<void*>(block));
    return;
  }
  size_t size = capped(op.size, slot.filled);
  if (size == 0) size = 1;
  void* moved = mapalloc_realloc(slot.block, size);
  if (moved == nullptr) {
    failed_allocation(op, "realloc", size);
    verify(op, slot);  // the old block is intact
    if (mapalloc_usable_size(slot.block) != slot.filled) {
      fail(op, "a failed realloc changed the old block's usable size to %zu",
           mapalloc_usable_size(slot.block));
    }
    return;
  }
  size_t kept = slot.size < size ? slot.size : size;
  size_t bad = first_mismatch(static_cast<char*>(moved), slot.filled, slot.seed, kept);
  if (bad != SIZE_MAX) {
    fail(op, "realloc(%p, %zu -> %zu) = %p lost the contents at offset %zu",
         static_cast<void*>(slot.block), slot.size, size, moved, bad);
  }
  live_bytes.fetch_sub(slot.filled);
  slot.block = nullptr;
  accept(op, slot, moved, size, 16, false, "realloc");
}

bool is_power_of_two(size_t value) { return value != 0 && (value & (value - 1)) == 0; }

void do_aligned_alloc(const Op& op, Slot& slot) {
  if (slot.block != nullptr) release(op, slot);
  size_t alignment = op.alignment;
  size_t size = capped(op.size);
  errno = kErrnoSentinel;
  void* block = mapalloc_aligned_alloc(alignment, size);
  if (!is_power_of_two(alignment)) {
    if (block != nullptr || errno != EINVAL) {
      fail(op, "aligned_alloc(%zu, %zu) (not a power of two) gave %p, errno %d", alignment, size,
           block, errno);
    }
    note(op, "aligned_alloc(%zu, %zu) -> NULL, EINVAL", alignment, size);
    return;
  }
  if (alignment > 8 * kMiB) {  // 1 GiB and beyond: it may work, or fail for want of room
    if (block == nullptr) {
      if (errno != ENOMEM && errno != EINVAL) {
        fail(op, "aligned_alloc(%zu, %zu) failed with errno %d", alignment, size, errno);
      }
      note(op, "aligned_alloc(%zu, %zu) -> NULL, errno %d", alignment, size, errno);
      return;
    }
  } else if (block == nullptr) {
    return failed_allocation(op, "aligned_alloc", size);
  }
  accept(op, slot, block, size, alignment, false, "aligned_alloc");
}

void do_check(const Op& op, Slot& slot) {
  if (slot.block == nullptr) {
    if (mapalloc_usable_size(nullptr) != 0) fail(op, "usable_size(NULL) != 0");
    return;
  }
  verify(op, slot);
  size_t usable = mapalloc_usable_size(slot.block);
  if (usable != slot.filled) fail(op, "usable size changed from %zu to %zu", slot.filled, usable);
  if (!mapalloc_owns(slot.block)) fail(op, "mapalloc_owns denies a live block");
  if (mapalloc_owns(slot.block + 8)) fail(op, "mapalloc_owns accepts an interior pointer");
  if (reinterpret_cast<uintptr_t>(slot.block) % slot.alignment != 0) fail(op, "alignment lost");
  note(op, "%p: %zu bytes, usable %zu, intact", static_cast<void*>(slot.block), slot.size, usable);
}

// Impossible requests: NULL and ENOMEM whatever else happens; a block passed in is left alone.
void do_huge(const Op& op, Slot& slot) {
  static const size_t kHugeSizes[] = {SIZE_MAX, SIZE_MAX - 4095, SIZE_MAX / 2 + 1,
                                      size_t{PTRDIFF_MAX}, size_t{PTRDIFF_MAX} - kMiB};
  size_t size = kHugeSizes[op.variant % 5];
  errno = kErrnoSentinel;
  void* result = nullptr;
  const char* call = "";
  switch ((op.variant / 5) % 5) {
    case 0:
      call = "malloc";
      result = mapalloc_malloc(size);
      break;
    case 1:
      call = "calloc(1, n)";
      result = mapalloc_calloc(1, size);
      break;
    case 2:
      call = "calloc(n, 3)";
      result = mapalloc_calloc(size, 3);
      break;
    case 3:
      call = "aligned_alloc(4096, n)";
      result = mapalloc_aligned_alloc(4096, size);
      break;
    default:
      call = "realloc";
      if (slot.block != nullptr) verify(op, slot);
      result = mapalloc_realloc(slot.block, size);
      if (slot.block != nullptr) verify(op, slot);
      break;
  }
  if (result != nullptr || errno != ENOMEM) {
    fail(op, "%s(%zu) gave %p, errno %d: expected NULL, ENOMEM", call, size, result, errno);
  }
  note(op, "%s(%zu) -> NULL, ENOMEM", call, size);
}

void do_option(const Op& op) {
  const OptionSetting& setting =
      kOptionSettings[op.variant % (sizeof(kOptionSettings) / sizeof(kOptionSettings[0]))];
  int result = mapalloc_option_set(setting.name, setting.value);
  if (setting.valid != (result == 0)) {
    fail(op, "option_set(%s, %ld) returned %d", setting.name, setting.value, result);
  }
  if (setting.valid && one_at_a_time.load()) {
    long value = -1;
    if (mapalloc_option_get(setting.name, &value) != 0 || value != setting.value) {
      fail(op, "option_get(%s) gave %ld after setting %ld", setting.name, value, setting.value);
    }
  }
  note(op, "option_set(%s, %ld) -> %d", setting.name, setting.value, result);
}

void do_probe(const Op& op) {
  int local = 0;
  static int global = 0;
  if (mapalloc_owns(&local) || mapalloc_owns(&global) || mapalloc_owns(nullptr)) {
    fail(op, "mapalloc_owns accepts a stack, global or NULL pointer");
  }
  void* foreign = malloc(64);  // the sanitizer's malloc: not mapalloc's
  if (mapalloc_owns(foreign)) fail(op, "mapalloc_owns accepts another allocator's block");
  free(foreign);
  mapalloc_free(nullptr);
  if (mapalloc_usable_size(nullptr) != 0) fail(op, "usable_size(NULL) != 0");
  note(op, "owns() of foreign pointers: 0");
}

void execute(const Op& op) {
  Slot& slot = slots[op.slot];
  switch (op.kind) {
    case kMalloc:
      return do_malloc(op, slot);
    case kCalloc:
      return do_calloc(op, slot);
    case kRealloc:
      return do_realloc(op, slot);
    case kAlignedAlloc:
      return do_aligned_alloc(op, slot);
    case kFree:
      if (slot.block != nullptr) return release(op, slot);
      mapalloc_free(nullptr);
      return;
    case kCheck:
      return do_check(op, slot);
    case kHuge:
      return do_huge(op, slot);
    case kTrim: {
      int released = mapalloc_trim();
      if (released != 0 && released != 1) fail(op, "mapalloc_trim returned %d", released);
      note(op, "-> %d", released);
      return;
    }
    case kOption:
      return do_option(op);
    case kFault: {
      size_t countdown = 1 + (op.variant & 0x7f) % 48;
      bool persistent = (op.variant & 0x80) != 0;
      faults_armed.store(true);
      mapalloc::os_fail_mmap_after(countdown, persistent);
      note(op, "mapping request %zu from now fails%s", countdown,
           persistent ? ", and all later" : "");
      return;
    }
    case kFaultOff:
      mapalloc::os_fail_mmap_after(0);
      // In a concurrent batch other ops may have run under the failure: stay lenient till its end.
      if (one_at_a_time.load()) faults_armed.store(false);
      note(op, "no more injected failures");
      return;
    case kProbe:
      return do_probe(op);
    default:
      return;  // kParallel and kRespawn are the driver's
  }
}

// ---- threads ----------------------------------------------------------------------------------

struct Worker {
  pthread_t thread;
  sem_t go;
  sem_t done;
  std::vector<Op> batch;
  bool stop = false;
  int index = 0;
};
Worker workers[kWorkers];

void* worker_main(void* argument) {
  auto* worker = static_cast<Worker*>(argument);
  this_thread = worker->index;
  for (;;) {
    while (sem_wait(&worker->go) != 0) {
    }
    if (worker->stop) break;
    for (const Op& op : worker->batch) execute(op);
    sem_post(&worker->done);
  }
  return nullptr;
}

void start_worker(int index) {
  Worker& worker = workers[index - 1];
  worker.index = index;
  worker.stop = false;
  if (pthread_create(&worker.thread, nullptr, worker_main, &worker) != 0) {
    fprintf(stderr, "fuzz_allocator: pthread_create failed\n");
    abort();
  }
}

// Ends a worker (its heap is abandoned: blocks it allocated now belong to a heap without a
// thread) and starts a new one in its place (which adopts a heap from the pool).
void restart_worker(int index) {
  Worker& worker = workers[index - 1];
  worker.stop = true;
  sem_post(&worker.go);
  pthread_join(worker.thread, nullptr);
  start_worker(index);
}

void run_on(int thread, const Op& op) {
  if (thread == 0) return execute(op);
  Worker& worker = workers[thread - 1];
  worker.batch.assign(1, op);
  sem_post(&worker.go);
  while (sem_wait(&worker.done) != 0) {
  }
}

// A concurrent batch: the workers run their shares at once. Each slot is given to the first
// worker that touches it in the batch, so that no block is used by two threads at the same time.
void run_batch(std::vector<Op>& batch) {
  int owner[kSlots];
  for (int& entry : owner) entry = 0;
  for (Worker& worker : workers) worker.batch.clear();
  for (const Op& op : batch) {
    if (op.kind == kParallel || op.kind == kRespawn) continue;
    if (op.kind == kFault) faults_armed.store(true);  // before any op of the batch runs
    int& slot_owner = owner[op.slot];
    if (slot_owner == 0) slot_owner = 1 + op.thread % kWorkers;
    workers[slot_owner - 1].batch.push_back(op);
  }
  one_at_a_time.store(false);
  for (Worker& worker : workers) {
    if (!worker.batch.empty()) sem_post(&worker.go);
  }
  for (Worker& worker : workers) {
    if (!worker.batch.empty()) {
      while (sem_wait(&worker.done) != 0) {
      }
    }
  }
  one_at_a_time.store(true);
}

// ---- the end of an input -----------------------------------------------------------------------

void finish_input() {
  mapalloc::os_fail_mmap_after(0);
  faults_armed.store(false);
  Op end{};
  end.index = -1;
  end.kind = kFree;
  // Every block checked and freed, each by the thread of its slot number (often not its own).
  for (int i = 0; i < kSlots; ++i) {
    if (slots[i].block == nullptr) continue;
    end.slot = static_cast<uint8_t>(i);
    run_on(i % (kWorkers + 1), end);
  }
  if (live_bytes.load() != 0) {
    fprintf(stderr, "fuzz_allocator: %zu live bytes left in the model\n", live_bytes.load());
    abort();
  }
  mapalloc_stats_t stats;
  mapalloc_stats_get(&stats);
  if (stats.large_blocks != 0 || stats.large_bytes != 0) {
    fprintf(stderr, "fuzz_allocator: all blocks freed, but %zu large blocks (%zu bytes) live\n",
            stats.large_blocks, stats.large_bytes);
    abort();
  }
  for (size_t i = 0; i < sizeof(kRestoredOptions) / sizeof(kRestoredOptions[0]); ++i) {
    mapalloc_option_set(kRestoredOptions[i], default_options[i]);
  }
}

// ---- seeds --------------------------------------------------------------------------------------

// Writes ops in the format decode() reads (sizes exact), for the hand-written seeds.
class Encoder {
 public:
  std::vector<uint8_t> bytes;
  Encoder& op(Kind kind, int thread, int slot) {
    for (uint8_t i = 0; i < 32; ++i) {
      if (kKindTable[i] == kind) {
        put(i, 1);
        break;
      }
    }
    put(static_cast<uint64_t>(thread & 3) | static_cast<uint64_t>(slot) << 2, 1);
    return *this;
  }
  Encoder& size(size_t value) { return put(10, 1).put(value, 4); }
  Encoder& put(uint64_t value, unsigned count) {
    for (unsigned i = 0; i < count; ++i) bytes.push_back(static_cast<uint8_t>(value >> (8 * i)));
    return *this;
  }
  Encoder& malloc(int thread, int slot, size_t n) { return op(kMalloc, thread, slot).size(n); }
  Encoder& calloc(int thread, int slot, size_t count, size_t total) {
    return op(kCalloc, thread, slot).put(1, 1).put(count, 1).size(total);
  }
  Encoder& realloc(int thread, int slot, size_t n, bool to_zero = false) {
    return op(kRealloc, thread, slot).put(to_zero ? 0 : 1, 1).size(n);
  }
  Encoder& aligned(int thread, int slot, unsigned alignment_choice, size_t n) {
    return op(kAlignedAlloc, thread, slot).put(alignment_choice, 1).size(n);
  }
  Encoder& free(int thread, int slot) { return op(kFree, thread, slot); }
  Encoder& check(int thread, int slot) { return op(kCheck, thread, slot); }
  Encoder& simple(Kind kind, int thread, int variant) {
    op(kind, thread, 0);
    if (kind == kHuge || kind == kOption || kind == kFault || kind == kParallel) put(variant, 1);
    return *this;
  }
};

void write_seeds(const char* directory) {
  std::vector<std::pair<std::string, Encoder>> seeds;
  {
    Encoder e;  // every size range on one thread, grown and shrunk, then freed
    const size_t sizes[] = {0,     1,      16,   100,      1024,     1025,           5000,
                            70000, 300000, kMiB, kMiB + 1, 3 * kMiB, 4 * kMiB - 4096};
    for (int i = 0; i < 13; ++i) e.malloc(0, i, sizes[i]);
    for (int i = 0; i < 13; ++i) e.check(0, i);
    for (int i = 0; i < 13; ++i) e.realloc(0, i, sizes[12 - i] + 7);
    for (int i = 0; i < 13; i += 2) e.free(0, i);
    e.realloc(0, 1, 0, true);
    seeds.push_back({"sizes", e});
  }
  {
    Encoder e;  // allocated on one thread, freed and reallocated on others
    for (int i = 0; i < 24; ++i) e.malloc(1 + i % 3, i, 24 + 1000 * i);
    e.malloc(1, 30, 2 * kMiB + 5).malloc(2, 31, 600000);
    for (int i = 0; i < 24; ++i) e.realloc((i + 1) % 4, i, 40 + 2000 * i);
    e.realloc(3, 30, 5 * kMiB).realloc(0, 31, 900000);
    for (int i = 0; i < 24; ++i) e.free((i + 2) % 4, i);
    e.simple(kRespawn, 1, 0).simple(kRespawn, 2, 0);
    e.free(0, 30).free(1, 31);
    seeds.push_back({"threads", e});
  }
  {
    Encoder e;  // a concurrent batch of allocations, then one of frees
    e.simple(kParallel, 0, 20);
    for (int i = 0; i < 22; ++i) e.malloc(i % 4, i, 16 + 3000 * i);
    e.simple(kParallel, 0, 20);
    for (int i = 0; i < 22; ++i) e.free((i + 1) % 4, 21 - i);
    seeds.push_back({"parallel", e});
  }
  {
    Encoder e;  // alignments, valid and not
    for (unsigned choice = 0; choice < 21; ++choice)
      e.aligned(choice % 4, choice, choice, 100 + choice * 999);
    e.aligned(0, 40, 200, 100).aligned(1, 41, 201, 3 * kMiB).aligned(2, 42, 202, 50);
    e.aligned(0, 43, 230, 64).aligned(0, 44, 237, 64).aligned(0, 45, 250, 64);
    for (int i = 0; i < 46; ++i) e.free(0, i);
    seeds.push_back({"alignment", e});
  }
  {
    Encoder e;  // injected failures: once, then for good, then off
    e.malloc(0, 0, 3 * kMiB).simple(kFault, 0, 1);
    for (int i = 1; i < 10; ++i) e.malloc(0, i, 200000 * i);
    e.realloc(0, 0, 7 * kMiB).simple(kFault, 0, 0x81);
    for (int i = 10; i < 20; ++i) e.malloc(i % 4, i, 100 + 150000 * (i - 10));
    e.simple(kRespawn, 2, 0).malloc(2, 21, 64).realloc(0, 0, 9 * kMiB);
    e.simple(kFaultOff, 0, 0);
    for (int i = 0; i < 22; ++i) e.check(0, i);
    e.malloc(2, 21, 64).realloc(0, 0, 5 * kMiB);
    seeds.push_back({"faults", e});
  }
  {
    Encoder e;  // options, trim, impossible sizes
    e.simple(kOption, 0, 0).simple(kOption, 0, 3).simple(kOption, 0, 7);
    for (int i = 0; i < 10; ++i) e.malloc(i % 4, i, 50000 * (i + 1));
    for (int i = 0; i < 10; ++i) e.free(0, i);
    e.simple(kTrim, 1, 0).simple(kTrim, 0, 0);
    for (int v = 0; v < 25; ++v) e.simple(kHuge, v % 4, v);
    e.simple(kOption, 0, 12).simple(kOption, 0, 14).simple(kProbe, 3, 0);
    e.calloc(0, 5, 7, 7000).calloc(1, 6, 0, 100).calloc(2, 7, 3, 3 * kMiB);
    seeds.push_back({"options", e});
  }
  for (auto& [name, encoder] : seeds) {
    std::string path = std::string(directory) + "/" + name;
    FILE* file = fopen(path.c_str(), "wb");
    if (file == nullptr) {
      perror(path.c_str());
      exit(1);
    }
    fwrite(encoder.bytes.data(), 1, encoder.bytes.size(), file);
    fclose(file);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* directory = getenv("FUZZ_ALLOCATOR_WRITE_SEEDS")) {
    write_seeds(directory);
    exit(0);
  }
  trace = getenv("FUZZ_ALLOCATOR_TRACE") != nullptr;
  for (size_t i = 0; i < sizeof(kRestoredOptions) / sizeof(kRestoredOptions[0]); ++i) {
    mapalloc_option_get(kRestoredOptions[i], &default_options[i]);
  }
  for (Worker& worker : workers) {
    sem_init(&worker.go, 0, 0);
    sem_init(&worker.done, 0, 0);
  }
  for (int i = 1; i <= kWorkers; ++i) start_worker(i);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in(data, size);
  std::vector<Op> batch;
  if (trace) fprintf(stderr, "input of %zu bytes\n", size);
  for (int index = 0; index < kMaxOps && !in.empty(); ++index) {
    Op op = decode(in, index);
    if (op.kind == kParallel) {
      int count = 2 + op.variant % 23;
      batch.clear();
      for (int i = 0; i < count && !in.empty() && index + 1 < kMaxOps; ++i) {
        batch.push_back(decode(in, ++index));
      }
      if (trace) fprintf(stderr, "  concurrent batch of %zu ops:\n", batch.size());
      run_batch(batch);
      if (trace) fprintf(stderr, "  end of batch\n");
    } else if (op.kind == kRespawn) {
      int worker = 1 + op.thread % kWorkers;
      if (trace) fprintf(stderr, "  op %4d  worker %d exits, a new one starts\n", op.index, worker);
      restart_worker(worker);
    } else {
      run_on(op.thread, op);
    }
  }
  finish_input();
  return 0;
}
