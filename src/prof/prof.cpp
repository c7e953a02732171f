#include "prof/prof.h"

#include <string.h>

#include "platform/diag.h"
#include "platform/options.h"
#include "platform/os.h"
#include "platform/process.h"
#include "platform/prof_os.h"
#include "platform/spin_lock.h"
#include "platform/unwind.h"

namespace mapalloc {

std::atomic<bool> prof_on{false};
// (Written under the profiler's lock, a copy of sample_count: a store, not a locked add.)
std::atomic<size_t> prof_live_samples{0};
std::atomic<uint32_t> prof_address_buckets[1u << kProfAddressBucketsLog2];

namespace {

// ---- arithmetic without libm ------------------------------------------------------------------

// Each sample evaluates a logarithm (its countdown) and, unless its size's weight is memoized
// (a large block's size rarely recurs), an exponential. Both reduce their argument with a table
// to a few thousandths around 0, where a polynomial of five or six terms is exact to double
// precision: a long chain of dependent multiply-adds (a series over a wide range) costs its
// latency, about 7 cycles a term, on every sample, and a division more.

// exp(-x) for 0 <= x < 1, in long double at compile time (the series' terms fall below its
// precision long before 40).
constexpr long double exp_minus_series(long double x) {
  long double term = 1, sum = 1;
  for (int k = 1; k < 40; ++k) {
    term *= -x / k;
    sum += term;
  }
  return sum;
}

// ln(c) for c in [1, 2), in long double at compile time: 2 atanh(s), s = (c - 1) / (c + 1) < 1/3.
constexpr long double log_series(long double c) {
  long double s = (c - 1) / (c + 1), power = s, sum = 0;
  for (int k = 1; k < 80; k += 2) {
    sum += power / k;
    power *= s * s;
  }
  return 2 * sum;
}

constexpr long double kLn2Long = 0.693147180559945309417232121458176568L;

// 2^(-j/64) for j < 64, and 1 minus it: both rounded once from long double, so that
// 1 - exp(-y) for y below ln 2 does not cancel at run time.
constexpr unsigned kExpTableLog2 = 6;
constexpr unsigned kExpTableEntries = 1u << kExpTableLog2;
struct ExpStep {
  double power, one_minus_power;
};
struct ExpTable {
  ExpStep at[kExpTableEntries];
};
constexpr ExpTable make_exp_table() {
  ExpTable table{};
  for (unsigned j = 0; j < kExpTableEntries; ++j) {
    long double power = exp_minus_series(kLn2Long * j / kExpTableEntries);
    table.at[j] = {static_cast<double>(power), static_cast<double>(1 - power)};
  }
  return table;
}
constexpr ExpTable kExpTable = make_exp_table();

// The mantissa's top 7 bits pick the centre c of an interval of [1, 2) 1/128 wide: c, 1 / c and
// ln c side by side, so that a sample, whose table line is usually not in the cache any more,
// misses once.
constexpr unsigned kLogTableBits = 7;
struct LogCentre {
  double centre, inverse, log;
  double padding;  // (32 bytes: an entry never straddles two cache lines)
};
struct LogTable {
  LogCentre at[1u << kLogTableBits];
};
constexpr LogTable make_log_table() {
  LogTable table{};
  constexpr int kLogTableEntries = 1 << kLogTableBits;
  for (int j = 0; j < kLogTableEntries; ++j) {
    long double centre =
        1 + (j + 0.5L) / kLogTableEntries;  // (exact in a double: 9 significant bits)
    table.at[j] = {static_cast<double>(centre), static_cast<double>(1 / centre),
                   static_cast<double>(log_series(centre)), 0};
  }
  return table;
}
alignas(32) constexpr LogTable kLogTable = make_log_table();

// ln(x) for a normal x > 0: x = m * 2^e with m in [1, 2), m = c (1 + t) with c the table's
// centre and |t| < 1/256 (m - c is exact; rounding t moves the result by an ulp of t), and
// ln(1 + t)'s series to t^6: the first term left out, t^7 / 7, is below 2e-18.
double natural_log(double x) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof bits);
  int exponent = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
  unsigned j = static_cast<unsigned>(bits >> (52 - kLogTableBits)) & ((1u << kLogTableBits) - 1);
  bits = (bits & ((uint64_t{1} << 52) - 1)) | (uint64_t{1023} << 52);
  double m;
  memcpy(&m, &bits, sizeof m);
  const LogCentre& near = kLogTable.at[j];
  double t = (m - near.centre) * near.inverse;
  constexpr double c3 = 1.0 / 3, c5 = 1.0 / 5, c6 = 1.0 / 6;
  double series = t - t * t * (0.5 - t * (c3 - t * (0.25 - t * (c5 - t * c6))));
  return exponent * 0.69314718055994530942 + (near.log + series);
}

// 1 - exp(-y) for y >= 0, to a few units in the last place: y = k ln(2) / 64 + r with |r| <=
// ln(2) / 128, so exp(-y) = 2^-(k / 64) exp(-r), the power from the table and a shift of the
// exponent, exp(-r) - 1 by its series to r^6 (the first term left out, r^7 / 7!, is below 6e-18
// of the result even where that is -(exp(-r) - 1) itself). With k = 0 the result is -(exp(-r) - 1)
// itself; below 64, the table's 1 - 2^-(k/64) less 2^-(k/64) (exp(-r) - 1), a small correction;
// from 64 on the power is below 1/2, and 1 - power loses nothing.
double one_minus_exp_minus(double y) {
  if (y > 40) return 1;  // (below 1e-17 from it)
  constexpr double kEntriesLog2E = kExpTableEntries * 1.44269504088896340736;
  // ln(2) / 64 in two parts: the first has 32 significant bits, so k times it is exact
  // (k < 2^21).
  constexpr double kLn2StepHigh = 6.93147180369123816490e-01 / kExpTableEntries;
  constexpr double kLn2StepLow = 1.90821492927058770002e-10 / kExpTableEntries;
  auto k = static_cast<int64_t>(y * kEntriesLog2E + 0.5);  // (y >= 0: rounds to nearest)
  double r = (y - static_cast<double>(k) * kLn2StepHigh) - static_cast<double>(k) * kLn2StepLow;
  constexpr double f3 = 1.0 / 6, f4 = f3 / 4, f5 = f4 / 5, f6 = f5 / 6;
  double exp_minus_r_minus_1 = -r * (1 - r * (0.5 - r * (f3 - r * (f4 - r * (f5 - r * f6)))));
  if (k == 0) return -exp_minus_r_minus_1;
  const ExpStep& step = kExpTable.at[k & (kExpTableEntries - 1)];
  if (k < kExpTableEntries) return step.one_minus_power - step.power * exp_minus_r_minus_1;
  // 2^-(k / 64), k / 64 <= 58
  uint64_t bits = static_cast<uint64_t>(1023 - (k >> kExpTableLog2)) << 52;
  double whole_power;
  memcpy(&whole_power, &bits, sizeof whole_power);
  double power = whole_power * step.power;
  return (1 - power) - power * exp_minus_r_minus_1;
}

// ---- state --------------------------------------------------------------------------------------

struct Sample {
  uintptr_t address;  // 0: empty slot
  uint64_t size;
  double weight;
  uint32_t stack;
  uint32_t generation;  // the process's fork generation when sampled (older: inherited)
};

size_t interval_bytes = kProfDefaultSampleBytes;
char file_prefix[256] = "mapalloc.%p";
bool ever_on = false;
bool unwinding_safe = false;
uint32_t generation = 0;  // forks since the profile began, in this process's line
int dump_signal = 0;

SpinLock lock;
SpinLock map_lock;
// Interned stacks, stored densely in the order they were first seen (stacks[0] is the catch-all
// for a full table), so that N stacks touch N * sizeof(ProfStack) bytes; stack_index, an open
// addressing table of their indexes by hash, is what a lookup touches at random. (Stored by
// hash instead, each 608-byte stack faulted in a page or two of its own.)
ProfStack* stacks = nullptr;      // kProfMaxStacks
uint32_t* stack_index = nullptr;  // kStackIndexSlots; 0: empty
unsigned used_stack_count = 0;
// Live samples: open addressing in `sample_slots` slots (a power of two), grown 4x at 3/4 full
// up to kProfSampleSlots: a table sized for the live samples, not for the most there could be,
// keeps a new sample from faulting in a page of its own, and its lines in the cache (each
// sample's slot is at random: in a 4096-slot table, 128 KiB, churn's samples missed the cache
// on nearly every look-up).
Sample* samples = nullptr;
size_t sample_slots = 0;
size_t sample_count = 0;
size_t dropped = 0;
// Samples found still recorded at the address of a new sample: their block's free was missed
// (a bug: every free path forgets its sample). Replaced, so that the new block is counted.
size_t stale = 0;
double inuse_total = 0, peak_total = 0, snapshot_total = 0;
std::atomic<bool> dump_pending{false};
// Sample weights by charged bytes, direct-mapped: a size class's samples all charge its block
// size, so a few dozen sizes recur and each sample need not evaluate the series again. (The
// interval is fixed at prof_init, before any sample.) Under the lock.
struct WeightMemo {
  size_t charged;  // 0: empty
  double weight;
};
constexpr unsigned kWeightMemoShift = 7;
WeightMemo weight_memo[1u << kWeightMemoShift];

uintptr_t entry_points[128];
unsigned entry_point_count = 0;

__thread bool busy __attribute__((tls_model("initial-exec"))) = false;

constexpr size_t kStacksBytes = align_up(sizeof(ProfStack) * kProfMaxStacks, kOsPageBytes);
constexpr size_t kStackIndexSlots = 2 * kProfMaxStacks;  // at most half full
constexpr size_t kStackIndexBytes = sizeof(uint32_t) * kStackIndexSlots;
static_assert(kStackIndexBytes % kOsPageBytes == 0);
constexpr size_t kInitialSampleSlots = 256;

constexpr size_t samples_bytes(size_t slots) { return sizeof(Sample) * slots; }

bool tables_ready() {
  if (__atomic_load_n(&samples, __ATOMIC_ACQUIRE) != nullptr) return true;
  SpinLockGuard guard(map_lock);
  if (samples != nullptr) return true;
  auto* new_stacks = static_cast<ProfStack*>(os_map_aligned(kStacksBytes, kOsPageBytes));
  auto* new_index = static_cast<uint32_t*>(os_map_aligned(kStackIndexBytes, kOsPageBytes));
  auto* new_samples =
      static_cast<Sample*>(os_map_aligned(samples_bytes(kInitialSampleSlots), kOsPageBytes));
  if (new_stacks == nullptr || new_index == nullptr || new_samples == nullptr) {
    if (new_stacks != nullptr) os_unmap(new_stacks, kStacksBytes);
    if (new_index != nullptr) os_unmap(new_index, kStackIndexBytes);
    if (new_samples != nullptr) os_unmap(new_samples, samples_bytes(kInitialSampleSlots));
    return false;
  }
  stacks = new_stacks;
  stack_index = new_index;
  used_stack_count = 1;  // stacks[0]: the catch-all for a full table
  sample_slots = kInitialSampleSlots;
  __atomic_store_n(&samples, new_samples, __ATOMIC_RELEASE);
  return true;
}

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

// The interned index of a stack (0 when the table is full). Under the lock.
uint32_t intern(const uintptr_t* frames, unsigned depth, uint64_t hash) {
  constexpr size_t kMask = kStackIndexSlots - 1;
  for (size_t i = static_cast<size_t>(hash) & kMask;; i = (i + 1) & kMask) {
    uint32_t at = stack_index[i];
    if (at == 0) {
      if (used_stack_count >= kProfMaxStacks) return 0;
      uint32_t fresh = used_stack_count;
      ProfStack& stack = stacks[fresh];
      stack.hash = hash;
      stack.depth = depth;
      memcpy(stack.frames, frames, depth * sizeof(uintptr_t));
      used_stack_count++;
      stack_index[i] = fresh;
      return fresh;
    }
    const ProfStack& stack = stacks[at];
    if (stack.hash == hash && stack.depth == depth &&
        memcmp(stack.frames, frames, depth * sizeof(uintptr_t)) == 0) {
      return at;
    }
  }
}

size_t slot_of(uintptr_t address) { return static_cast<size_t>(mix(address) & (sample_slots - 1)); }

// The slot of `address`, or the empty slot where it would go. Under the lock.
size_t find_slot(uintptr_t address) {
  size_t slot = slot_of(address);
  while (samples[slot].address != 0 && samples[slot].address != address)
    slot = (slot + 1) & (sample_slots - 1);
  return slot;
}

// A live sample's address counted in (+1) or out (-1) of its bucket (under the lock).
void count_address(uintptr_t address, int change) {
  add_unlocked(prof_address_buckets[prof_address_bucket(reinterpret_cast<const void*>(address))],
               static_cast<uint32_t>(change));  // (-1 wraps: unsigned arithmetic)
}

// The inverse of the probability that a block charging `charged` bytes is sampled: what its
// sample stands for. Under the lock.
double sample_weight(size_t charged) {
  WeightMemo& memo = weight_memo[(charged * 0x9e3779b97f4a7c15ull) >> (64 - kWeightMemoShift)];
  if (memo.charged != charged) {
    memo.charged = charged;
    memo.weight = 1 / one_minus_exp_minus(static_cast<double>(charged) / interval_bytes);
  }
  return memo.weight;
}

// A live sample's block is gone: its bytes leave its stack's in-use counts. Under the lock.
void uncount(const Sample& sample) {
  ProfStack& stack = stacks[sample.stack];
  double bytes = sample.weight * static_cast<double>(sample.size);
  stack.inuse_objects -= sample.weight;
  stack.inuse_bytes -= bytes;
  if (sample.generation != generation) {
    stack.inherited_objects -= sample.weight;
    stack.inherited_bytes -= bytes;
  }
  inuse_total -= bytes;
}

// Room for one more sample: grows the table at 3/4 full; false at the limit or if no memory
// could be mapped. Under the lock.
bool make_room_for_sample() {
  if (sample_count < sample_slots / 4 * 3) return true;
  if (sample_slots >= kProfSampleSlots) return false;
  size_t new_slots = sample_slots * 4 < kProfSampleSlots ? sample_slots * 4 : kProfSampleSlots;
  auto* grown = static_cast<Sample*>(os_map_aligned(samples_bytes(new_slots), kOsPageBytes));
  if (grown == nullptr) return false;
  Sample* old = samples;
  size_t old_slots = sample_slots;
  samples = grown;
  sample_slots = new_slots;
  for (size_t i = 0; i < old_slots; ++i)
    if (old[i].address != 0) samples[find_slot(old[i].address)] = old[i];
  os_unmap(old, samples_bytes(old_slots));
  return true;
}

// The peak profile: copies every stack's live counts (under the lock).
void take_snapshot() {
  for (unsigned i = 0; i < used_stack_count; ++i) {
    ProfStack& stack = stacks[i];
    stack.peak_objects = stack.inuse_objects;
    stack.peak_bytes = stack.inuse_bytes;
    stack.peak_inherited_objects = stack.inherited_objects;
    stack.peak_inherited_bytes = stack.inherited_bytes;
  }
  snapshot_total = inuse_total;
}

void dump_locked(const char* prefix) {
  if (samples == nullptr) return;
  if (inuse_total >= peak_total && peak_total > snapshot_total) take_snapshot();
  ProfView view = {stacks, used_stack_count, interval_bytes, snapshot_total};
  if (prof_write_files(view, prefix != nullptr ? prefix : file_prefix) != 0) {
    diag_write("mapalloc: could not write the heap profile %s.*", prefix ? prefix : file_prefix);
  }
}

void unlock_and_serve_signal() {
  lock.unlock();
  if (MAPALLOC_UNLIKELY(dump_pending.load(std::memory_order_relaxed)) && lock.try_lock()) {
    dump_pending.store(false, std::memory_order_relaxed);
    dump_locked(nullptr);
    lock.unlock();
  }
}

// The dump signal: writes the files at once unless the interrupted code holds the lock; then
// the holder writes them when it lets go.
void on_dump_signal(int) {
  if (samples == nullptr) return;
  if (lock.try_lock()) {
    dump_locked(nullptr);
    lock.unlock();
  } else {
    dump_pending.store(true, std::memory_order_relaxed);
  }
}

// Fork: the child keeps the parent's live samples, marked inherited (older generation). No lock
// is taken around fork (a prepare handler that locks can deadlock against stdio: see
// stress/forkstorm.c); a child forked while another thread was inside the profiler's critical
// section cannot trust the tables, nor one forked while a thread was inside libgcc's unwinder (its
// locks may be held): it stops profiling (and writes no profile).
void fork_child() {
  if (lock.held() || unwinder_in_use()) {
    lock.reset_after_fork();
    unwinder_reset_after_fork();
    prof_on.store(false, std::memory_order_relaxed);
    ever_on = false;
    return;
  }
  generation++;
  if (samples != nullptr) {
    for (unsigned i = 0; i < used_stack_count; ++i) {
      ProfStack& stack = stacks[i];
      stack.inherited_objects = stack.inuse_objects;
      stack.inherited_bytes = stack.inuse_bytes;
    }
  }
}

}  // namespace

void prof_register_fork_handlers() { os_at_fork(nullptr, nullptr, fork_child); }

// The profiler's options (kOptionTable: read and checked by options_init, which has run).
void prof_init() {
  const Options& settings = options();
  interval_bytes = settings.prof_sample_bytes;
  if (settings.prof_file[0] != '\0') {
    static_assert(sizeof settings.prof_file <= sizeof file_prefix);
    memcpy(file_prefix, settings.prof_file, sizeof file_prefix);
  }
  if (settings.prof_signal != 0) {
    int number = static_cast<int>(settings.prof_signal);
    if (os_install_signal(number, on_dump_signal))
      dump_signal = number;
    else
      diag_write("mapalloc: ignoring MAPALLOC_PROF_SIGNAL=%d (not a signal a handler can catch)",
                 number);
  }
  if (settings.prof) prof_set_active(true);
}

size_t prof_interval() { return interval_bytes; }

int64_t prof_next_countdown(uint64_t* random) {
  // A uniform double in (0, 1] from 53 random bits.
  double uniform =
      static_cast<double>((os_next_random(random) >> 11) + 1) * (1.0 / 9007199254740992.0);
  double bytes = -natural_log(uniform) * static_cast<double>(interval_bytes);
  if (bytes < 1) return 1;
  if (bytes > 9e18) return INT64_MAX;
  return static_cast<int64_t>(bytes);
}

// Kept sorted, as os_backtrace wants them (the walk's bounds are then the first and last).
void prof_set_entry_points(const uintptr_t* starts, unsigned count) {
  for (unsigned i = 0; i < count && entry_point_count < 128; ++i) {
    unsigned at = entry_point_count++;
    for (; at > 0 && entry_points[at - 1] > starts[i]; --at)
      entry_points[at] = entry_points[at - 1];
    entry_points[at] = starts[i];
  }
}

void prof_start_unwinding() { __atomic_store_n(&unwinding_safe, true, __ATOMIC_RELEASE); }

bool prof_record(const void* block, size_t size, size_t charged) {
  // Before the library's constructor ran, libc itself may not be set up (a static program's
  // allocations in __libc_init_first): the unwinder would abort. Such blocks are not sampled.
  if (busy || !__atomic_load_n(&unwinding_safe, __ATOMIC_ACQUIRE) || !tables_ready()) return false;
  busy = true;  // the unwinder's own allocations, if any, are not sampled
  uintptr_t frames[kProfMaxDepth];
  unsigned depth = os_backtrace(frames, kProfMaxDepth, entry_points, entry_point_count);
  // A polynomial hash of the frames, mixed once at the end: two instructions per frame, where
  // mixing each frame took ten (stacks are often dozens of frames deep).
  uint64_t hash = depth;
  for (unsigned i = 0; i < depth; ++i) {
    frames[i] -= 1;  // the call, not the return address
    hash = (hash + frames[i]) * 0x9e3779b97f4a7c15ull;
  }
  hash = mix(hash);
  bool recorded = false;
  lock.lock();
  if (make_room_for_sample()) {
    double weight = sample_weight(charged);
    uint32_t index = intern(frames, depth, hash);
    uintptr_t address = reinterpret_cast<uintptr_t>(block);
    size_t slot = find_slot(address);
    if (samples[slot].address == address) {
      stale++;
      uncount(samples[slot]);
    } else {
      sample_count++;
      count_address(address, +1);
      prof_live_samples.store(sample_count, std::memory_order_relaxed);
    }
    samples[slot] = {address, size, weight, index, generation};
    ProfStack& stack = stacks[index];
    double bytes = weight * static_cast<double>(size);
    stack.alloc_objects += weight;
    stack.alloc_bytes += bytes;
    stack.inuse_objects += weight;
    stack.inuse_bytes += bytes;
    inuse_total += bytes;
    if (inuse_total > peak_total) peak_total = inuse_total;
    recorded = true;
  } else {
    dropped++;
  }
  unlock_and_serve_signal();
  busy = false;
  return recorded;
}

bool prof_forget(const void* block) {
  if (samples == nullptr) return false;
  uintptr_t address = reinterpret_cast<uintptr_t>(block);
  lock.lock();
  size_t slot = find_slot(address);
  bool found = samples[slot].address == address;
  if (found) {
    Sample sample = samples[slot];
    // The process is about to leave a new high: keep its composition (the peak profile), unless
    // it is within 1/128 of the last one kept.
    if (inuse_total >= peak_total && peak_total > snapshot_total * (1 + 1.0 / 128)) take_snapshot();
    uncount(sample);
    // Backward-shift deletion (linear probing, no tombstones).
    size_t hole = slot;
    for (size_t next = (hole + 1) & (sample_slots - 1); samples[next].address != 0;
         next = (next + 1) & (sample_slots - 1)) {
      size_t home = slot_of(samples[next].address);
      // Move `next` into the hole unless its home lies cyclically in (hole, next].
      bool stays = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next);
      if (!stays) {
        samples[hole] = samples[next];
        hole = next;
      }
    }
    samples[hole].address = 0;
    sample_count--;
    count_address(address, -1);
    prof_live_samples.store(sample_count, std::memory_order_relaxed);
  }
  unlock_and_serve_signal();
  return found;
}

bool prof_set_active(bool on) {
  if (on) {
    if (!tables_ready()) return false;
    ever_on = true;
  }
  return prof_on.exchange(on, std::memory_order_relaxed);
}

int prof_dump(const char* prefix) {
  if (!tables_ready()) return -1;
  lock.lock();
  ProfView view = {stacks, used_stack_count, interval_bytes, 0};
  if (inuse_total >= peak_total && peak_total > snapshot_total) take_snapshot();
  view.peak_total_bytes = snapshot_total;
  int result = prof_write_files(view, prefix != nullptr ? prefix : file_prefix);
  lock.unlock();
  return result;
}

void prof_dump_at_exit() {
  if (!ever_on) return;
  prof_on.store(false, std::memory_order_relaxed);
  if (prof_dump(nullptr) != 0)
    diag_write("mapalloc: could not write the heap profile %s.*", file_prefix);
}

double prof_sample_weight(size_t charged) {
  SpinLockGuard guard(lock);
  return sample_weight(charged);
}

ProfStats prof_stats() {
  ProfStats result = {0, 0, 0, 0, 0};
  if (samples == nullptr) return result;
  lock.lock();
  result.stacks = used_stack_count;
  result.live_samples = sample_count;
  result.dropped = dropped;
  result.stale = stale;
  // Touched pages: the stacks in use, the index's pages they hash to (at most all of it), and
  // the live samples' table.
  size_t index_pages = kStackIndexBytes / kOsPageBytes;
  if (used_stack_count < index_pages) index_pages = used_stack_count;
  result.memory_bytes = used_stack_count * sizeof(ProfStack) + kOsPageBytes +
                        index_pages * kOsPageBytes + samples_bytes(sample_slots);
  lock.unlock();
  return result;
}

}  // namespace mapalloc
