#include "platform/os.h"

#include "platform/diag.h"
#include "platform/memcheck.h"
#include "platform/options.h"
#include "platform/process.h"
#include "platform/token_bucket.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>

// MADV_COLLAPSE (Linux 6.1); older headers lack it, and older kernels answer EINVAL.
#ifdef MADV_COLLAPSE
constexpr int kMadviseCollapse = MADV_COLLAPSE;
#else
constexpr int kMadviseCollapse = 25;
#endif

namespace mapalloc {

OsCounters os_counters;

namespace {

// Fault injection (tests): the mapping request `fail_countdown` requests from now fails, and
// with `fail_persistent` every later one too.
std::atomic<size_t> fail_countdown{0};
std::atomic<bool> fail_persistent{false};
std::atomic<bool> failing{false};

// Keeps errno unchanged across a scope: allocation that succeeds must not disturb it.
class ErrnoGuard {
 public:
  ErrnoGuard() : saved_(errno) {}
  ~ErrnoGuard() { errno = saved_; }

 private:
  int saved_;
};

bool injected_failure() {
  if (failing.load(std::memory_order_relaxed)) return true;
  size_t remaining = fail_countdown.load(std::memory_order_relaxed);
  while (remaining != 0) {
    if (fail_countdown.compare_exchange_weak(remaining, remaining - 1)) {
      if (remaining != 1) return false;
      if (fail_persistent.load(std::memory_order_relaxed)) failing.store(true);
      return true;
    }
  }
  return false;
}

void note_mapped(size_t bytes) {
  size_t now = os_counters.mapped_bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  size_t peak = os_counters.peak_mapped_bytes.load(std::memory_order_relaxed);
  while (now > peak && !os_counters.peak_mapped_bytes.compare_exchange_weak(
                           peak, now, std::memory_order_relaxed)) {
  }
}

// Read-write memory, or a reservation of address space only: inaccessible, and not charged
// against the commit limit under strict overcommit until os_commit makes parts of it usable.
enum class Access { kReadWrite, kReserve };
int protection_of(Access access) {
  return access == Access::kReadWrite ? PROT_READ | PROT_WRITE : PROT_NONE;
}
int flags_of(Access access) {
  return MAP_PRIVATE | MAP_ANONYMOUS | (access == Access::kReserve ? MAP_NORESERVE : 0);
}

void* map_anonymous(size_t bytes, Access access) {
  os_counters.mmap_calls.fetch_add(1, std::memory_order_relaxed);
  void* start = mmap(nullptr, bytes, protection_of(access), flags_of(access), -1, 0);
  if (start == MAP_FAILED) {
    os_counters.failed_maps.fetch_add(1, std::memory_order_relaxed);
    if (options().verbose) diag_write("mapalloc: mmap of %zu bytes failed", bytes);
    return nullptr;
  }
  return start;
}

void unmap_raw(void* start, size_t bytes) {
  if (bytes == 0) return;
  os_counters.munmap_calls.fetch_add(1, std::memory_order_relaxed);
  munmap(start, bytes);
}

// Aligned mappings are first tried at a hinted address in a region of their own (as mimalloc
// does): the kernel takes the hint when that range is free, so one mmap usually suffices where
// over-mapping and trimming costs three calls. The region starts at a random 4 MiB-aligned
// address between 2 and 3 TiB and is used upwards, wrapping after kHintAreaBytes.
constexpr uintptr_t kHintAreaStart = uintptr_t{2} << 40;
constexpr uintptr_t kHintAreaBytes = uintptr_t{16} << 40;
std::atomic<uintptr_t> next_hint{0};

void* map_at_hint(size_t bytes, size_t alignment, Access access) {
  if (alignment < kSegmentBytes || alignment > kGiB) return nullptr;
  size_t step = align_up(bytes, alignment);
  uintptr_t current = next_hint.load(std::memory_order_relaxed);
  uintptr_t hint;
  do {
    hint = current;
    if (hint == 0 || hint + step > kHintAreaStart + kHintAreaBytes) {
      hint = kHintAreaStart + (os_random_seed() % (uintptr_t{1} << 40) & ~(kSegmentBytes - 1));
    }
    hint = align_up(hint, alignment);
  } while (!next_hint.compare_exchange_weak(current, hint + step, std::memory_order_relaxed));
  os_counters.mmap_calls.fetch_add(1, std::memory_order_relaxed);
  void* start =
      mmap(reinterpret_cast<void*>(hint), bytes, protection_of(access), flags_of(access), -1, 0);
  if (start == MAP_FAILED) return nullptr;
  if ((reinterpret_cast<uintptr_t>(start) & (alignment - 1)) == 0) return start;
  unmap_raw(start, bytes);  // the hinted range was taken: the caller falls back
  return nullptr;
}

}  // namespace

void os_fail_mmap_after(size_t countdown, bool and_all_later) {
  failing.store(false, std::memory_order_relaxed);
  fail_persistent.store(and_all_later, std::memory_order_relaxed);
  fail_countdown.store(countdown, std::memory_order_relaxed);
}

namespace {

void* map_aligned(size_t bytes, size_t alignment, size_t offset, Access access) {
  ErrnoGuard keep_errno;
  if (bytes == 0 || bytes > kMaxRequestBytes + 2 * kSegmentBytes) return nullptr;
  if (injected_failure()) {
    os_counters.failed_maps.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  if (offset == 0) {
    if (void* hinted = map_at_hint(bytes, alignment, access)) {
      note_mapped(bytes);
      return hinted;
    }
  }
  // Else try the exact size: the kernel often hands out neighbouring addresses, and small
  // alignments are met by chance.
  void* start = map_anonymous(bytes, access);
  if (start == nullptr) return nullptr;
  if (((reinterpret_cast<uintptr_t>(start) + offset) & (alignment - 1)) == 0) {
    note_mapped(bytes);
    return start;
  }
  unmap_raw(start, bytes);
  // Over-map by the alignment and trim both ends.
  size_t padded = bytes + alignment - kOsPageBytes;
  if (padded < bytes) return nullptr;
  char* raw = static_cast<char*>(map_anonymous(padded, access));
  if (raw == nullptr) return nullptr;
  uintptr_t aligned = align_up(reinterpret_cast<uintptr_t>(raw) + offset, alignment) - offset;
  size_t head = aligned - reinterpret_cast<uintptr_t>(raw);
  unmap_raw(raw, head);
  unmap_raw(reinterpret_cast<char*>(aligned) + bytes, padded - head - bytes);
  note_mapped(bytes);
  return reinterpret_cast<void*>(aligned);
}

}  // namespace

void* os_map_aligned(size_t bytes, size_t alignment, size_t offset) {
  return map_aligned(bytes, alignment, offset, Access::kReadWrite);
}

void* os_reserve_aligned(size_t bytes, size_t alignment) {
  return map_aligned(bytes, alignment, 0, Access::kReserve);
}

bool os_commit(void* start, size_t bytes) {
  ErrnoGuard keep_errno;
  if (injected_failure()) {
    os_counters.failed_maps.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  if (mprotect(start, bytes, PROT_READ | PROT_WRITE) == 0) return true;
  os_counters.failed_maps.fetch_add(1, std::memory_order_relaxed);
  if (options().verbose) diag_write("mapalloc: committing %zu bytes failed", bytes);
  return false;
}

void os_unmap(void* start, size_t bytes) {
  ErrnoGuard keep_errno;
  unmap_raw(start, bytes);
  os_counters.mapped_bytes.fetch_sub(bytes, std::memory_order_relaxed);
  os_counters.unmapped_bytes.fetch_add(bytes, std::memory_order_relaxed);
}

void os_purge(void* start, size_t bytes, PurgeMethod method) {
  if (bytes == 0) return;
  ErrnoGuard keep_errno;
  os_counters.madvise_calls.fetch_add(1, std::memory_order_relaxed);
  os_counters.purged_bytes.fetch_add(bytes, std::memory_order_relaxed);
  if (method == PurgeMethod::kFree && madvise(start, bytes, MADV_FREE) == 0) return;
  madvise(start, bytes, MADV_DONTNEED);  // also the fallback for kernels without MADV_FREE
}

namespace {

void os_purge_each(const OsRange* ranges, unsigned count, PurgeMethod method) {
  for (unsigned i = 0; i < count; ++i) os_purge(ranges[i].start, ranges[i].bytes, method);
}

// Whether the ranges may go to process_madvise on the process itself: not when
// MAPALLOC_PURGE_LIST=0, nor after the kernel said it has no such call (an older kernel, or a
// filter that refuses it), nor under Valgrind (which does not know the call and would print a
// warning about it); then every range gets its own madvise. (Decided at the first purge, not
// by a static constructor.)
enum class PurgeList : int { kUndecided, kAllowed, kRefused };
std::atomic<PurgeList> purge_list{PurgeList::kUndecided};

#ifdef SYS_process_madvise
// PIDFD_SELF_THREAD (Linux 6.15): the calling thread's process. Not the thread group's
// -10001, which fails (ESRCH) once the main thread has exited.
constexpr int kPidfdSelf = -10000;

bool purge_list_allowed() {
  PurgeList state = purge_list.load(std::memory_order_relaxed);
  if (state == PurgeList::kUndecided) {
    state = options().purge_list && !memcheck::running_under_valgrind() ? PurgeList::kAllowed
                                                                        : PurgeList::kRefused;
    purge_list.store(state, std::memory_order_relaxed);
  }
  return state == PurgeList::kAllowed;
}

// Purges the ranges as one list; returns how many of them, from the first, it purged whole (all
// of them, or none where the call is refused). Errors that say the call itself is missing or
// not allowed switch lists off for good; others (a range the kernel rejects) only end this one.
unsigned purge_as_list(const OsRange* ranges, unsigned count, int advice) {
  if (!purge_list_allowed()) return 0;
  struct iovec list[kOsPurgeMaxRuns];
  for (unsigned i = 0; i < count; ++i) list[i] = {ranges[i].start, ranges[i].bytes};
  os_counters.madvise_calls.fetch_add(1, std::memory_order_relaxed);
  long done =
      syscall(SYS_process_madvise, kPidfdSelf, list, static_cast<size_t>(count), advice, 0UL);
  if (done < 0) {
    if (errno == ENOSYS || errno == EBADF || errno == EPERM || errno == EACCES)
      purge_list.store(PurgeList::kRefused, std::memory_order_relaxed);
    return 0;
  }
  // A partial result (the kernel stops at a range it rejects, or after 2 GiB) counts the ranges
  // done whole; the caller purges the rest one by one.
  unsigned whole = 0;
  size_t left = static_cast<size_t>(done);
  for (; whole < count && ranges[whole].bytes <= left; ++whole) left -= ranges[whole].bytes;
  os_counters.purged_bytes.fetch_add(static_cast<size_t>(done) - left, std::memory_order_relaxed);
  return whole;
}
#else
unsigned purge_as_list(const OsRange*, unsigned, int) { return 0; }
#endif

}  // namespace

void os_purge_ranges(const OsRange* ranges, unsigned count, PurgeMethod method) {
  if (count == 0) return;
  if (count == 1 || count > kOsPurgeMaxRuns) return os_purge_each(ranges, count, method);
  ErrnoGuard keep_errno;
  unsigned done =
      purge_as_list(ranges, count, method == PurgeMethod::kFree ? MADV_FREE : MADV_DONTNEED);
  os_purge_each(ranges + done, count - done, method);
}

bool os_purge_lists_in_use() {
  return purge_list.load(std::memory_order_relaxed) == PurgeList::kAllowed;
}

void os_advise_huge_pages(void* start, size_t bytes) {
  ErrnoGuard keep_errno;
  os_counters.madvise_calls.fetch_add(1, std::memory_order_relaxed);
  madvise(start, bytes, MADV_HUGEPAGE);
}

void os_advise_no_huge_pages(void* start, size_t bytes) {
  ErrnoGuard keep_errno;
  os_counters.madvise_calls.fetch_add(1, std::memory_order_relaxed);
  madvise(start, bytes, MADV_NOHUGEPAGE);
}

bool os_guard(void* start, size_t bytes) {
  ErrnoGuard keep_errno;
  return mprotect(start, bytes, PROT_NONE) == 0;
}

bool os_guard_fresh(void* start, size_t bytes) {
  ErrnoGuard keep_errno;
  os_counters.mmap_calls.fetch_add(1, std::memory_order_relaxed);
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE;
  if (mmap(start, bytes, PROT_NONE, flags, -1, 0) == start) return true;
  return mprotect(start, bytes, PROT_NONE) == 0;
}

namespace {
// A TokenBucket packed into one word (tokens in the low 8 bits, the refill time above) so that a
// compare-and-swap updates it: no lock for a forked child to inherit held.
bool take_from_budget(std::atomic<uint64_t>& budget, unsigned burst, uint64_t refill_ms) {
  uint64_t now_ms = os_now_ms();
  uint64_t packed = budget.load(std::memory_order_relaxed);
  for (;;) {
    TokenBucket bucket{static_cast<unsigned>(packed & 0xff), packed >> 8};
    if (!bucket.take(now_ms, burst, refill_ms)) return false;
    uint64_t taken = bucket.refilled_at_ms << 8 | bucket.tokens;
    if (budget.compare_exchange_weak(packed, taken, std::memory_order_relaxed)) return true;
  }
}

std::atomic<uint64_t> guard_budget{kGuardBurst};
std::atomic<uint64_t> collapse_budget{kCollapseBurst};
}  // namespace

bool os_guard_within_budget(void* start, size_t bytes) {
  if (!take_from_budget(guard_budget, kGuardBurst, kGuardRefillMs)) return false;
  return os_guard(start, bytes);
}

bool os_collapse_huge_page_within_budget(void* start) {
  if (!take_from_budget(collapse_budget, kCollapseBurst, kCollapseRefillMs)) return false;
  ErrnoGuard keep_errno;
  os_counters.madvise_calls.fetch_add(1, std::memory_order_relaxed);
  if (madvise(start, kHugePageBytes, kMadviseCollapse) != 0) return false;
  os_counters.collapsed_huge_pages.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool os_unguard(void* start, size_t bytes) {
  ErrnoGuard keep_errno;
  return mprotect(start, bytes, PROT_READ | PROT_WRITE) == 0;
}

bool os_resize_in_place(void* start, size_t old_bytes, size_t new_bytes) {
  ErrnoGuard keep_errno;
  os_counters.mremap_calls.fetch_add(1, std::memory_order_relaxed);
  if (new_bytes > old_bytes && injected_failure()) return false;  // a growth is a request too
  if (mremap(start, old_bytes, new_bytes, 0) == MAP_FAILED) return false;
  if (new_bytes > old_bytes) {
    note_mapped(new_bytes - old_bytes);
  } else {
    os_counters.mapped_bytes.fetch_sub(old_bytes - new_bytes, std::memory_order_relaxed);
    os_counters.unmapped_bytes.fetch_add(old_bytes - new_bytes, std::memory_order_relaxed);
  }
  return true;
}

bool os_move(void* start, size_t old_bytes, void* target, size_t new_bytes) {
  ErrnoGuard keep_errno;
  os_counters.mremap_calls.fetch_add(1, std::memory_order_relaxed);
  void* moved = mremap(start, old_bytes, new_bytes, MREMAP_MAYMOVE | MREMAP_FIXED, target);
  if (moved == MAP_FAILED) return false;
  // The target's reservation (new_bytes) was replaced; the old range is gone.
  os_counters.mapped_bytes.fetch_sub(old_bytes, std::memory_order_relaxed);
  return true;
}

}  // namespace mapalloc
