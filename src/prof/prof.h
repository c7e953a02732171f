// The heap profiler's records (README.md, "Heap profiling"): which call stacks allocated the
// sampled blocks, which of them are live, and what was live at the peak. Below the core layer:
// it knows blocks only as addresses and sizes. The sampling decision itself (where a countdown
// runs out) is made by the api layer at refill time, off the fast paths; this layer
// draws the countdowns, captures and interns stacks, keeps the table of live samples, and
// writes the profiles (prof_write.cpp).
//
// Memory: the interned stacks' table (kProfMaxStacks), mapped once and touched as it fills, and
// the live samples' table, grown with the live samples up to kProfSampleSlots. One spin lock
// guards both; it is never held while allocating or unwinding.
#pragma once

#include <atomic>

#include "platform/config.h"

namespace mapalloc {

constexpr unsigned kProfMaxDepth = 64;
constexpr unsigned kProfMaxStacks = 16384;
constexpr unsigned kProfSampleSlots = 1u << 20;

// Sampling is on (MAPALLOC_PROF=1, or mapalloc_prof_set_active).
extern std::atomic<bool> prof_on;
// Live sampled blocks anywhere (a large block's free looks it up only when this is not 0 and
// its address's bucket is not 0 either: prof_may_be_sampled).
extern std::atomic<size_t> prof_live_samples;

MAPALLOC_INLINE bool prof_active() { return prof_on.load(std::memory_order_relaxed); }

// Live samples by address: a count per bucket of their addresses' hash, changed under the
// profiler's lock and read without it, so that the free of a large block that is not sampled
// (about half of them, for blocks near the interval) takes no lock and looks nothing up. A
// block is counted before its pointer reaches the program, and the program orders its free
// after that: the free sees the count. (Size-class samples are counted too, though their frees
// never ask: a program would need thousands of them live, gigabytes at the default interval,
// before the buckets stopped saving large frees most lookups.)
constexpr unsigned kProfAddressBucketsLog2 = 12;
extern std::atomic<uint32_t> prof_address_buckets[1u << kProfAddressBucketsLog2];
MAPALLOC_INLINE unsigned prof_address_bucket(const void* block) {
  return static_cast<unsigned>((reinterpret_cast<uintptr_t>(block) * 0x9e3779b97f4a7c15ull) >>
                               (64 - kProfAddressBucketsLog2));
}
// False: `block` is not a live sample. (True: it may be one.)
MAPALLOC_INLINE bool prof_may_be_sampled(const void* block) {
  return prof_live_samples.load(std::memory_order_relaxed) != 0 &&
         prof_address_buckets[prof_address_bucket(block)].load(std::memory_order_relaxed) != 0;
}

// Reads MAPALLOC_PROF, MAPALLOC_PROF_SAMPLE, MAPALLOC_PROF_FILE, MAPALLOC_PROF_SIGNAL; installs
// the signal and fork handlers when profiling is on. Once, at load or first allocation.
void prof_init();

// pthread_atfork for the profiler's lock and the inherited marks (may allocate: called once a
// thread has its heap).
void prof_register_fork_handlers();

// Called from the library's constructor: from now on stacks can be unwound (allocations made
// earlier, while libc itself starts, are not sampled).
void prof_start_unwinding();

// The mean bytes between samples.
size_t prof_interval();

// Bytes until the next sample: exponentially distributed around the interval, at least 1.
int64_t prof_next_countdown(uint64_t* random);

// The exported functions a stack starts below (override layer, at load).
void prof_set_entry_points(const uintptr_t* starts, unsigned count);

// Records a sampled block of `size` requested bytes, picked by a countdown over `charged`
// bytes (its block size). Captures the caller's stack. False if not recorded (a nested call
// from the unwinder, or the table is full); the caller then does not mark the block.
bool prof_record(const void* block, size_t size, size_t charged);

// Forgets a sampled block being freed; false if it was not recorded.
bool prof_forget(const void* block);

// mapalloc_prof_set_active; returns the previous state.
bool prof_set_active(bool on);

// Writes PREFIX.heap.pb.gz, PREFIX.peak.pb.gz and the folded stacks (PREFIX.inuse.folded,
// PREFIX.alloc.folded, PREFIX.peak.folded); `prefix` nullptr: MAPALLOC_PROF_FILE's. 0 on
// success, -1 if a file could not be written.
int prof_dump(const char* prefix);

// At exit: dumps if profiling was ever on.
void prof_dump_at_exit();

// For the statistics: bytes of the profiler's tables in use (touched), interned stacks, live
// samples, samples dropped because a table was full, samples replaced because a new sample
// came at their address (their free was missed: always 0 unless mapalloc has a bug).
struct ProfStats {
  size_t memory_bytes;
  size_t stacks;
  size_t live_samples;
  size_t dropped;
  size_t stale;
};
ProfStats prof_stats();

// What a sample of a block charging `charged` bytes stands for: 1 / (1 - exp(-charged /
// interval)), the inverse of its chance to be sampled (memoized by size; for the tests).
double prof_sample_weight(size_t charged);

// ---- for prof_write.cpp --------------------------------------------------------------------

struct ProfStack {
  uint64_t hash;
  uint32_t depth;
  double alloc_objects, alloc_bytes;
  double inuse_objects, inuse_bytes;
  double peak_objects, peak_bytes;
  double inherited_objects, inherited_bytes;  // of inuse, allocated before this process forked
  double peak_inherited_objects, peak_inherited_bytes;
  uintptr_t frames[kProfMaxDepth];  // innermost first
};

// Calls under the profiler's lock: the stacks in use (entry 0 is "stack table full").
struct ProfView {
  ProfStack* stacks;  // stacks[0 .. count): every stack interned so far
  unsigned count;
  size_t interval;
  double peak_total_bytes;
};

}  // namespace mapalloc

namespace mapalloc {

// prof_write.cpp: writes every file of a dump; 0 on success.
int prof_write_files(const ProfView& view, const char* prefix);

}  // namespace mapalloc
