#include "platform/unwind.h"

#include <atomic>

#include "platform/os.h"
#include "platform/unwind_rules.h"

namespace mapalloc {

namespace {
std::atomic<uint64_t> rules_read{0};
std::atomic<uint64_t> walks_given_up{0};
std::atomic<uint64_t> backtraces_copied{0};
std::atomic<uint64_t> frames_reused{0};
std::atomic<int> unwinder_users{0};

// Whether `start`, which lies within the bounds of the `count` sorted `entries` (so that the
// search ends on one of them), is one of them. Every frame inside the allocator asks: binary,
// because a linear scan of the fifty or so was a third of a sample's unwinding.
bool is_entry(const uintptr_t* entries, unsigned count, uintptr_t start) {
  while (count > 0) {
    unsigned half = count / 2;
    if (entries[half] < start) {
      entries += half + 1;
      count -= half + 1;
    } else {
      count = half;
    }
  }
  return *entries == start;
}
}  // namespace

BacktraceWalk make_backtrace_walk(uintptr_t* frames, unsigned capacity, const uintptr_t* entries,
                                  unsigned entry_count) {
  if (entry_count == 0) return {frames, capacity, entries, 0, 0, 0, ~uintptr_t{0}, 0};
  return {frames, capacity, entries, entry_count, 0, 0, entries[0], entries[entry_count - 1]};
}

bool backtrace_visit(void* argument, uintptr_t pc, uintptr_t start) {
  auto* walk = static_cast<BacktraceWalk*>(argument);
  if (pc == 0) return false;
  if (++walk->seen > 256) return false;  // a corrupt or endless chain
  // The outermost of the allocator's frames among the first few (tail calls leave some out).
  if (walk->seen <= kAllocatorFrames && start >= walk->lowest_entry &&
      start <= walk->highest_entry && is_entry(walk->entries, walk->entry_count, start)) {
    walk->count = 0;  // what came before was the allocator
    return true;
  }
  if (walk->count < walk->capacity) walk->frames[walk->count++] = pc;
  // Past capacity the walk goes on a little, in case an entry point is still to come (a deep
  // chain inside the allocator), then stops.
  return !(walk->count == walk->capacity && walk->seen > 2 * walk->capacity);
}

#if defined(__x86_64__)

namespace {

// A caller's frame more than this far above its callee's is taken for a bad rule.
constexpr uintptr_t kMaxFrameBytes = 1 * kMiB;
constexpr unsigned kMaxFrames = 256;

// ---- The cache -------------------------------------------------------------------------------
// Two-way set-associative, process-wide, mapped on first use. Each entry is guarded by a
// sequence number (odd while a writer fills it), so a reader never takes a key from one writer
// with a rule from another; a writer that finds the entry busy leaves it. A miss replaces the
// way written longer ago: two return addresses of one stack that share a set both stay (with
// one way per set they evicted each other on every walk of that stack; about 1 stack in 60 of
// a dozen frames has such a pair).

constexpr unsigned kCacheEntriesLog2 = 12;
constexpr size_t kCacheEntries = size_t{1} << kCacheEntriesLog2;

struct CacheEntry {
  std::atomic<uint64_t> sequence;
  std::atomic<uint64_t> address;
  std::atomic<uint64_t> rule;
  std::atomic<uint64_t> written;  // when, in cache_writes, for the choice of a victim
};
constexpr size_t kCacheBytes = kCacheEntries * sizeof(CacheEntry);

std::atomic<CacheEntry*> cache_table{nullptr};
std::atomic<uint64_t> cache_writes{0};

CacheEntry* cache() {
  CacheEntry* table = cache_table.load(std::memory_order_acquire);
  if (MAPALLOC_LIKELY(table != nullptr)) return table;
  auto* mapped = static_cast<CacheEntry*>(os_map_aligned(kCacheBytes, kOsPageBytes));
  if (mapped == nullptr) return nullptr;  // (zeroed memory: every entry empty)
  if (!cache_table.compare_exchange_strong(table, mapped, std::memory_order_acq_rel)) {
    os_unmap(mapped, kCacheBytes);
    return table;
  }
  return mapped;
}

// The rule `entry` holds for `address`, or 0.
uint64_t cached_rule(CacheEntry& entry, uintptr_t address) {
  uint64_t sequence = entry.sequence.load(std::memory_order_acquire);
  if ((sequence & 1) != 0) return 0;
  uint64_t key = entry.address.load(std::memory_order_relaxed);
  uint64_t rule = entry.rule.load(std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (key != address || entry.sequence.load(std::memory_order_relaxed) != sequence) return 0;
  return rule;
}

void store_rule(CacheEntry& entry, uintptr_t address, uint64_t rule) {
  uint64_t sequence = entry.sequence.load(std::memory_order_relaxed);
  if ((sequence & 1) != 0 ||
      !entry.sequence.compare_exchange_strong(sequence, sequence + 1, std::memory_order_acquire)) {
    return;
  }
  std::atomic_thread_fence(std::memory_order_release);
  entry.address.store(address, std::memory_order_relaxed);
  entry.rule.store(rule, std::memory_order_relaxed);
  entry.written.store(cache_writes.fetch_add(1, std::memory_order_relaxed) + 1,
                      std::memory_order_relaxed);
  entry.sequence.store(sequence + 2, std::memory_order_release);
}

uint64_t rule_for(CacheEntry* table, uintptr_t address) {
  CacheEntry* set = &table[((address * 0x9e3779b97f4a7c15ull) >> (64 - kCacheEntriesLog2)) & ~1ull];
  if (uint64_t rule = cached_rule(set[0], address)) return rule;
  if (uint64_t rule = cached_rule(set[1], address)) return rule;
  unwinder_enter();
  uint64_t rule = read_rule(address);
  unwinder_leave();
  add_unlocked(rules_read, 1);
  bool second_older = set[1].written.load(std::memory_order_relaxed) <
                      set[0].written.load(std::memory_order_relaxed);
  store_rule(set[second_older ? 1 : 0], address, rule);
  return rule;
}

// ---- The last walks, per thread -----------------------------------------------------------
// A thread that samples walks the same few stacks again and again. Each frame of its last walks
// is kept with the registers it began with and what its rule made of them. A frame that begins
// with the same pc and rsp (and rbp, if its CFA is rbp-based) has the same rule (a rule is a
// function of the pc), hence the same CFA and the same slots to read; the walk then reads those
// slots and compares what it finds with the kept frame after it, and needs no rule look-up.
// Every value the walk depends on is read from the stack again, so a different stack at the same
// addresses (another caller, a new thread on a reused stack) is found where it first differs, and
// walked from there with rules, overwriting the kept frames from that point on. Two walks are
// kept, told apart by their first frame's stack pointer (the depth at which the walk began), so
// that two stacks sampled in turn (malloc's and realloc's, say) both find theirs.
constexpr unsigned kKeptFrames = 32;
constexpr unsigned kKeptWalks = 2;

struct KeptFrame {
  uintptr_t pc, sp, bp;  // the registers the frame began with
  uintptr_t start;       // its function's first address (0: unknown), for the visitor
  uintptr_t cfa;         // 0: the walk ended at this frame (no unwind information, outermost)
  uintptr_t saved_rbp;   // where the caller's rbp was saved (0: rbp unchanged)
  bool cfa_from_bp;      // else rbp need not match: most code uses it as any other register
};

struct LastWalk {
  KeptFrame frames[kKeptFrames];
  unsigned count;  // frames[0, count) are the walk's
  // When these frames are a whole backtrace (the walk ended at frames[count - 1], and
  // backtrace_visit saw every frame and collected fewer than backtrace_capacity): the visitor,
  // with these entry points, left out frames[0, backtrace_dropped) and collected the rest; with
  // as much room or more it would again. backtrace_capacity 0: no such backtrace.
  const uintptr_t* backtrace_entries;
  unsigned backtrace_entry_count;
  unsigned backtrace_capacity;
  unsigned backtrace_dropped;
};

struct LastWalks {
  LastWalk walks[kKeptWalks];
  unsigned latest;  // the walk used last (the other is replaced first)
  bool busy;        // a walk in this thread is using them (a signal handler's walk keeps off)
};
static_assert(sizeof(LastWalks) <= kOsPageBytes);

// Mapped at the thread's first walk, unmapped at its exit (unwind_thread_exit). Only the
// pointer is thread-local: the library's static TLS must stay small, or dlopen cannot load it
// (glibc keeps little static TLS spare for libraries loaded later).
LastWalks* const kThreadExited = reinterpret_cast<LastWalks*>(uintptr_t{1});
LastWalks* const kMapping = reinterpret_cast<LastWalks*>(uintptr_t{2});
__thread LastWalks* thread_last_walks __attribute__((tls_model("initial-exec"))) = nullptr;

// This thread's last walks, for the walk beginning now; nullptr if there are none to use
// (another walk of this thread is under way, the thread is exiting, or no memory).
// (The signal fences keep the compiler from moving these stores past the calls and accesses
// they guard: a signal handler's walk in this thread sees them in program order.)
LastWalks* take_last_walks() {
  LastWalks* kept = thread_last_walks;
  if (kept == nullptr) {
    thread_last_walks = kMapping;  // (a walk in a signal handler meanwhile keeps nothing)
    std::atomic_signal_fence(std::memory_order_seq_cst);
    kept = static_cast<LastWalks*>(os_map_aligned(kOsPageBytes, kOsPageBytes));  // (zeroed)
    std::atomic_signal_fence(std::memory_order_seq_cst);
    thread_last_walks = kept;  // (nullptr if no memory: tried again at the next walk)
    if (kept == nullptr) return nullptr;
  }
  if (kept == kThreadExited || kept == kMapping || kept->busy) return nullptr;
  kept->busy = true;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return kept;
}

void release_last_walks(LastWalks* kept) {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  kept->busy = false;
}

// The kept walk that began at stack pointer `sp`, else the one to replace.
LastWalk* walk_from(LastWalks* kept, uintptr_t sp) {
  static_assert(kKeptWalks == 2, "the walk replaced is the least recently used of two");
  unsigned chosen = (kept->latest + 1) % kKeptWalks;
  for (unsigned i = 0; i < kKeptWalks; ++i) {  // (the latest first)
    unsigned index = (kept->latest + i) % kKeptWalks;
    const LastWalk& walk = kept->walks[index];
    if (walk.count != 0 && walk.frames[0].sp == sp) {
      chosen = index;
      break;
    }
  }
  kept->latest = chosen;
  return &kept->walks[chosen];
}

// Whether the frame that begins with these registers is the kept frame `same` (see above).
inline bool begins_as(const KeptFrame& same, uintptr_t pc, uintptr_t sp, uintptr_t bp) {
  return same.pc == pc && same.sp == sp && (!same.cfa_from_bp || same.bp == bp);
}

// Steps the registers from the kept frame `same` (which begins_as them) to its caller's, read
// from the stack; true if the walk ends at `same` (no CFA, or a caller's return address of 0).
inline bool step_past(const KeptFrame& same, uintptr_t& pc, uintptr_t& sp, uintptr_t& bp) {
  if (same.cfa == 0) return true;
  if (same.saved_rbp != 0) bp = *reinterpret_cast<const uintptr_t*>(same.saved_rbp);
  pc = *reinterpret_cast<const uintptr_t*>(same.cfa - 8);
  sp = same.cfa;
  return pc == 0;
}

// Whether the stack that begins with these registers is, frame for frame, the whole of `kept`:
// walk_stack's reuse of kept frames, without visiting them.
bool is_whole_walk(const LastWalk& kept, uintptr_t pc, uintptr_t sp, uintptr_t bp) {
  for (unsigned frame = 0; frame < kept.count; ++frame) {
    const KeptFrame& same = kept.frames[frame];
    if (!begins_as(same, pc, sp, bp)) return false;
    if (step_past(same, pc, sp, bp)) return frame + 1 == kept.count;
  }
  return false;  // the stack goes on past the kept frames
}

// A backtrace of the stack `kept` holds whole, taken from it (see LastWalk); false if it holds
// none for these entry points and capacity, or the stack differs.
bool copy_backtrace(const LastWalk& kept, uintptr_t pc, uintptr_t sp, uintptr_t bp,
                    BacktraceWalk* walk) {
  // (Less room could stop the visitor before an entry point deep in the stack: walked.)
  if (kept.backtrace_capacity == 0 || walk->capacity < kept.backtrace_capacity ||
      kept.backtrace_entries != walk->entries || kept.backtrace_entry_count != walk->entry_count)
    return false;
  unsigned collected = kept.count - kept.backtrace_dropped;
  if (!is_whole_walk(kept, pc, sp, bp)) return false;
  for (unsigned i = 0; i < collected; ++i)
    walk->frames[i] = kept.frames[kept.backtrace_dropped + i].pc;
  walk->count = collected;
  walk->seen = kept.count;
  add_unlocked(frames_reused, kept.count);
  add_unlocked(backtraces_copied, 1);
  return true;
}

// After a walk that ended by itself (not stopped by the visitor): whether `kept` now holds the
// whole backtrace, and what it left out.
void note_backtrace(LastWalk* kept, const BacktraceWalk* walk) {
  if (walk->seen != kept->count || walk->count >= walk->capacity) return;
  kept->backtrace_entries = walk->entries;
  kept->backtrace_entry_count = walk->entry_count;
  kept->backtrace_capacity = walk->capacity;
  kept->backtrace_dropped = walk->seen - walk->count;  // (collected: every frame after those)
}

// Not inlined, so that its own frame has a rule like any other; not instrumented by
// AddressSanitizer, whose redzones do not cover the saved registers it reads anyway.
__attribute__((noinline, no_sanitize_address)) bool walk_stack(BacktraceWalk* backtrace) {
  CacheEntry* table = cache();
  if (table == nullptr) return false;
  uintptr_t pc, sp, bp;
  asm volatile("lea 0(%%rip), %0\n\tmov %%rsp, %1\n\tmov %%rbp, %2" : "=r"(pc), "=r"(sp), "=r"(bp));
  LastWalks* all_kept = take_last_walks();
  LastWalk* kept = all_kept != nullptr ? walk_from(all_kept, sp) : nullptr;
  if (kept != nullptr && copy_backtrace(*kept, pc, sp, bp, backtrace)) {
    release_last_walks(all_kept);
    return true;
  }
  if (kept != nullptr) kept->backtrace_capacity = 0;  // (set again below if it stays whole)
  unsigned frame = 0;
  bool ended = false, visitor_stopped = false;
  // Frames of the last walk, while they begin as this one's do.
  if (kept != nullptr) {
    for (; frame < kept->count; ++frame) {
      const KeptFrame& same = kept->frames[frame];
      if (!begins_as(same, pc, sp, bp)) break;
      visitor_stopped = !backtrace_visit(backtrace, pc, same.start);
      if (visitor_stopped || step_past(same, pc, sp, bp)) {
        ended = true;
        break;
      }
    }
    add_unlocked(frames_reused, frame);
    if (ended) {
      if (!visitor_stopped) note_backtrace(kept, backtrace);
      release_last_walks(all_kept);
      return true;
    }
    kept->count = frame;  // what follows is walked afresh and kept anew
  }
  // The rest with rules. (pc is the first frame's own address, later a return address: the
  // rule is looked up for the call, one byte before.)
  for (; frame < kMaxFrames; ++frame) {
    uintptr_t address = frame == 0 ? pc : pc - 1;
    uint64_t rule = rule_for(table, address);
    if (rule & kRuleGiveUp) break;
    uint64_t offset = rule >> kOffsetShift;
    uintptr_t function_start = (rule & kRuleNoInfo) || offset == kFarOffset ? 0 : address - offset;
    // (The frame is kept whole before the visitor sees it: another visitor may go further.)
    bool last = (rule & (kRuleNoInfo | kRuleOutermost)) != 0;
    uintptr_t cfa = 0, saved_rbp = 0;
    if (!last) {
      cfa = ((rule & kRuleCfaRbp) ? bp : sp) + ((rule >> kCfaShift) & (kCfaLimit - 1));
      if (cfa <= sp || cfa - sp > kMaxFrameBytes || cfa % 8 != 0) break;  // a bad rule: give up
      if (rule & kRuleRbpSaved) saved_rbp = cfa - 8 * ((rule >> kSlotShift) & (kSlotLimit - 1));
    }
    const KeptFrame current = {
        pc, sp, bp, function_start, cfa, saved_rbp, (rule & kRuleCfaRbp) != 0};
    if (kept != nullptr && frame < kKeptFrames) {
      kept->frames[frame] = current;
      kept->count = frame + 1;
    }
    visitor_stopped = !backtrace_visit(backtrace, pc, function_start);
    // (A frame deeper than any profile keeps ends the walk too.)
    if (visitor_stopped || last || step_past(current, pc, sp, bp) || frame + 1 == kMaxFrames) {
      ended = true;
      break;
    }
  }
  if (kept != nullptr) {
    if (!ended) kept->count = 0;  // a walk given up is not kept
    if (ended && !visitor_stopped) note_backtrace(kept, backtrace);
    release_last_walks(all_kept);
  }
  if (ended) return true;
  add_unlocked(walks_given_up, 1);
  return false;
}

}  // namespace

bool unwind_backtrace_cached(BacktraceWalk* walk) { return walk_stack(walk); }

void unwind_thread_exit() {
  LastWalks* kept = thread_last_walks;
  thread_last_walks = kThreadExited;  // (later walks of this thread keep nothing)
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (kept != nullptr && kept != kThreadExited && kept != kMapping) os_unmap(kept, kOsPageBytes);
}

#else  // other architectures: always the full unwinder

bool unwind_backtrace_cached(BacktraceWalk*) {
  add_unlocked(walks_given_up, 1);
  return false;
}

void unwind_thread_exit() {}

#endif

void unwinder_enter() { unwinder_users.fetch_add(1, std::memory_order_acq_rel); }
void unwinder_leave() { unwinder_users.fetch_sub(1, std::memory_order_acq_rel); }
bool unwinder_in_use() { return unwinder_users.load(std::memory_order_relaxed) != 0; }
void unwinder_reset_after_fork() { unwinder_users.store(0, std::memory_order_relaxed); }

UnwindCounters unwind_counters() {
  return {rules_read.load(std::memory_order_relaxed),
          walks_given_up.load(std::memory_order_relaxed),
          frames_reused.load(std::memory_order_relaxed),
          backtraces_copied.load(std::memory_order_relaxed)};
}

}  // namespace mapalloc
