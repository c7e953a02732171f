// The OS boundary: the only place that maps, purges and unmaps memory. Anonymous mmap is the one
// source of memory. Every function reports failure by its return value and leaves errno as it was
// (callers decide whether a failure becomes ENOMEM for the user).
#pragma once

#include <atomic>

#include "platform/config.h"
#include "platform/process.h"

namespace mapalloc {

// Counters of OS activity, kept with relaxed atomics (each call is a syscall anyway).
struct OsCounters {
  std::atomic<size_t> mapped_bytes{0};  // currently mapped by us
  std::atomic<size_t> peak_mapped_bytes{0};
  std::atomic<size_t> mmap_calls{0};
  std::atomic<size_t> munmap_calls{0};
  std::atomic<size_t> madvise_calls{0};
  std::atomic<size_t> collapsed_huge_pages{0};  // regions made huge pages by MADV_COLLAPSE
  std::atomic<size_t> mremap_calls{0};
  std::atomic<size_t> purged_bytes{0};    // total ever purged
  std::atomic<size_t> unmapped_bytes{0};  // total ever unmapped
  std::atomic<size_t> failed_maps{0};
};
extern OsCounters os_counters;

// Maps `bytes` (a multiple of kOsPageBytes) of zeroed read-write memory whose address plus
// `offset` is aligned to `alignment` (a power of two >= kOsPageBytes; `offset` a multiple of
// kOsPageBytes). Returns nullptr if the kernel refuses.
void* os_map_aligned(size_t bytes, size_t alignment, size_t offset = 0);

// Reserves `bytes` of address space aligned to `alignment` (as os_map_aligned, offset 0) without
// making it usable: the range is inaccessible and, under strict overcommit, not charged until
// os_commit makes parts of it read-write. nullptr if the kernel refuses.
void* os_reserve_aligned(size_t bytes, size_t alignment);

// Makes a page-aligned part of a reservation read-write (zeroed, faulted in on first touch).
// false if the kernel refuses (commit limit): the range stays inaccessible.
bool os_commit(void* start, size_t bytes);

// Unmaps a range previously returned by os_map_aligned or os_reserve_aligned (or a page-aligned
// part of one).
void os_unmap(void* start, size_t bytes);

// Gives the physical pages of a range back to the kernel; the range stays mapped and reads as
// zero (MADV_DONTNEED) or as either old contents or zero (MADV_FREE) afterwards.
enum class PurgeMethod : int { kDontNeed = 0, kFree = 1 };
void os_purge(void* start, size_t bytes, PurgeMethod method);

// The same for several page-aligned ranges at once (at most kOsPurgeMaxRuns go as one list).
// One system call where the kernel takes a list (process_madvise on the process itself, Linux
// 6.15 and later, unless MAPALLOC_PURGE_LIST=0), else one per range. In a threaded process each
// purge interrupts the other cores that run the process to flush their TLBs, and one call
// flushes once for the whole list (6.16 and later): on the benchmark VM, 32 ranges of 64 KiB
// with a thread running on the other core took 700-730 us as 32 madvise calls and 180-190 us
// as one list.
struct OsRange {
  void* start;
  size_t bytes;
};
constexpr unsigned kOsPurgeMaxRuns = 64;
void os_purge_ranges(const OsRange* ranges, unsigned count, PurgeMethod method);
// Whether os_purge_ranges sends lists (false before its first list, and where they are refused).
bool os_purge_lists_in_use();

// Resizes the mapping [start, start+old_bytes) in place. Returns false if the kernel cannot
// (the neighbouring address space is taken); nothing changes then.
bool os_resize_in_place(void* start, size_t old_bytes, size_t new_bytes);

// Moves the mapping [start, start+old_bytes) to `target` (already reserved with os_map_aligned,
// `new_bytes` long) and resizes it, without copying the pages. Returns false on failure; the
// old mapping is then untouched and `target` is still mapped.
bool os_move(void* start, size_t old_bytes, void* target, size_t new_bytes);

// Asks for transparent huge pages on a range (MADV_HUGEPAGE); ignored where unsupported.
void os_advise_huge_pages(void* start, size_t bytes);
// MADV_NOHUGEPAGE: khugepaged leaves the range alone (see segment.cpp's cache).
void os_advise_no_huge_pages(void* start, size_t bytes);

// Makes a page-aligned range inaccessible (a guard: any access faults). Secure build only.
bool os_guard(void* start, size_t bytes);
// Makes such a range readable and writable again.
bool os_unguard(void* start, size_t bytes);
// A permanent guard over fresh, never written memory of a mapping: replaced by inaccessible
// address space that the kernel does not count as committed memory (an mprotect would keep
// counting it where overcommit is strict). Falls back to os_guard.
bool os_guard_fresh(void* start, size_t bytes);
// os_guard for freed blocks, within a process-wide budget (platform/token_bucket.h):
// kGuardBurst at once, then one per kGuardRefillMs. False, and the range stays accessible, when
// the budget is spent (or the kernel refuses). Unlimited, the secure build's churn workload made
// 340,000 mprotect calls (each about 20 us) and took 11x the time of the default build.
constexpr unsigned kGuardBurst = 8;
constexpr uint64_t kGuardRefillMs = 16;
bool os_guard_within_budget(void* start, size_t bytes);

// Makes the kHugePageBytes-aligned 2 MiB region at `start` one transparent huge page now
// (MADV_COLLAPSE: its resident 4 KiB pages are copied into it, the rest zero-filled), within a
// process-wide budget: kCollapseBurst at once, then one per kCollapseRefillMs. Each costs
// 0.3-1.4 ms here (a 2 MiB copy, and compaction when no free huge page is at hand). False when
// the budget is spent or the kernel refuses (before Linux 6.1, or THP disabled).
constexpr unsigned kCollapseBurst = 16;
constexpr uint64_t kCollapseRefillMs = 16;
bool os_collapse_huge_page_within_budget(void* start);

// Fault injection: make the mapping request that is `countdown` requests from now fail (1 = the
// next one), and with `and_all_later` every request after it too; 0 disables. Reaches every path
// that maps memory (segments, arenas and their commits, large blocks and their moves, heap
// metadata). Also set from MAPALLOC_FAULT_MMAP / MAPALLOC_FAULT_MMAP_FROM.
void os_fail_mmap_after(size_t countdown, bool and_all_later = false);

// A free-running cycle counter read in one instruction, for rate-limiting clock reads; only
// differences of it mean anything. kTicksPerCheck is roughly a third to one millisecond.
#if defined(__x86_64__) || defined(__i386__)
inline uint64_t os_ticks() { return __builtin_ia32_rdtsc(); }
constexpr uint64_t kTicksPerCheck = uint64_t{1} << 20;  // TSC at 1..3 GHz
#elif defined(__aarch64__)
inline uint64_t os_ticks() {
  uint64_t ticks;
  asm volatile("mrs %0, cntvct_el0" : "=r"(ticks));
  return ticks;
}
constexpr uint64_t kTicksPerCheck = uint64_t{1} << 15;  // generic timer at 25..100 MHz
#else
inline uint64_t os_ticks() { return os_now_ms(); }
constexpr uint64_t kTicksPerCheck = 1;
#endif

constexpr size_t align_up(size_t value, size_t alignment) {
  return (value + alignment - 1) & ~(alignment - 1);
}

constexpr bool is_power_of_two(size_t value) { return value != 0 && (value & (value - 1)) == 0; }

// The next number of a per-thread xorshift sequence (not for secrets: for randomised carving
// and the heap profiler's sample points). `*state` 0 means not started: it is seeded from
// os_random_seed.
inline uint64_t os_next_random(uint64_t* state) {
  uint64_t x = *state != 0 ? *state : os_random_seed() | 1;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *state = x;
}

}  // namespace mapalloc
