// Compile-time configuration shared by every layer: geometry of segments and pages, and the
// handful of compiler helpers the fast paths rely on. Lowest layer: includes nothing of ours.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#define MAPALLOC_LIKELY(x) __builtin_expect(!!(x), 1)
#define MAPALLOC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MAPALLOC_INLINE inline __attribute__((always_inline))
#define MAPALLOC_NOINLINE __attribute__((noinline))
#define MAPALLOC_COLD __attribute__((cold, noinline))
#define MAPALLOC_EXPORT extern "C" __attribute__((visibility("default")))

// The secure build (libmapalloc-secure): encoded free lists, canaries, guard pages, randomised
// carving and a quarantine. Chosen at compile time so that the default build pays nothing.
#ifndef MAPALLOC_SECURE
#define MAPALLOC_SECURE 0
#endif

namespace mapalloc {

constexpr bool kSecure = MAPALLOC_SECURE != 0;

// MAPALLOC_UNCHECKED=1 builds a variant without the fast paths' double-free key (its check and
// writes; the block-start test stays: it also sends span tails to the slow path). Never shipped:
// the benchmark builds it to report what the default checks cost.
#ifndef MAPALLOC_UNCHECKED
#define MAPALLOC_UNCHECKED 0
#endif
constexpr bool kFreeChecks = MAPALLOC_UNCHECKED == 0;

// The debug build (libmapalloc-debug, MAPALLOC_DEBUG=1): assertions on the invariants the
// comments state (debug_assert.h), a validation walk of the heap at slow paths, freed blocks
// filled with a pattern that is checked when they are handed out again, and Valgrind client
// requests so that memcheck sees mapalloc's blocks (memcheck.h). Every check sits behind
// `if constexpr (kDebug)`, so the default build compiles none of it.
#ifndef MAPALLOC_DEBUG
#define MAPALLOC_DEBUG 0
#endif
constexpr bool kDebug = MAPALLOC_DEBUG != 0;
static_assert(!(kDebug && kSecure),
              "the debug build wraps the default operations, not secure ones");

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// An add by a counter's only writer (under a lock), or to a statistic that may lose a count when
// threads race: a load and a store, where fetch_add is a locked instruction, which waits for all
// of the thread's pending stores (a profiler sample paid for several).
template <typename T>
MAPALLOC_INLINE void add_unlocked(std::atomic<T>& counter, std::type_identity_t<T> amount) {
  counter.store(counter.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
}

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * kKiB;
constexpr size_t kGiB = 1024 * kMiB;

// The OS page (mmap granularity). x86-64 and aarch64 with 4 KiB pages are the supported targets.
constexpr size_t kOsPageBytes = 4 * kKiB;
// A transparent huge page on those targets.
constexpr size_t kHugePageBytes = 2 * kMiB;

// Segments: every small/medium block lives in a segment, a kSegmentBytes-aligned mapping, so
// `ptr & ~(kSegmentBytes-1)` finds its metadata. Large blocks are their own segment-aligned
// mapping with a header at the start, found the same way.
constexpr unsigned kSegmentShift = 22;
constexpr size_t kSegmentBytes = size_t{1} << kSegmentShift;  // 4 MiB

// Pages: a segment is cut into kPagesPerSegment pages; a span of one or more pages serves one
// size class. Page 0 holds the segment's metadata and never serves blocks, so every span starts
// kPageBytes-aligned and power-of-two blocks are naturally aligned to their size.
constexpr unsigned kPageShift = 16;
constexpr size_t kPageBytes = size_t{1} << kPageShift;           // 64 KiB
constexpr size_t kPagesPerSegment = kSegmentBytes / kPageBytes;  // 64
constexpr size_t kFirstUsablePage = 1;

// Every block is at least this aligned; also the smallest block (a free block holds two words).
constexpr size_t kMinAlignBytes = 16;

// Sizes up to kSmallMaxBytes are served by the one-screen fast path (classes 16 bytes apart);
// up to kClassMaxBytes by size-class spans in segments; anything larger is a large block: a run
// of pages in a large-block arena (arena.h), or its own mapping (large.h). Above 128 KiB a
// segment packs blocks badly (three 1 MiB spans fill 48 of its 63 pages), while an arena's runs
// waste at most one 64 KiB page. The secure build keeps classes up to 1 MiB: its large blocks
// are separate mappings with guard pages, too costly to make for every block above 128 KiB.
constexpr size_t kSmallMaxBytes = 1024;
// The secure build makes freed blocks of at least this size inaccessible while they wait in its
// quarantine (api/secure.cpp).
constexpr size_t kSecureProtectMinBytes = 64 * 1024;
// Bytes the secure build adds after every block (its canary trailer): the heap profiler reports
// the size the program asked for.
constexpr size_t kSecureTrailerBytes = kSecure ? 16 : 0;

constexpr size_t kClassMaxBytes = kSecure ? 1 * kMiB : 128 * kKiB;

// Requests above this are refused with ENOMEM before any arithmetic can overflow (glibc uses
// PTRDIFF_MAX the same way).
constexpr size_t kMaxRequestBytes = size_t{PTRDIFF_MAX} - 2 * kSegmentBytes;

// The user address space covered by the segment map: 47 bits on x86-64 (4-level paging; the
// kernel only hands out higher addresses to programs that ask for them), 48 elsewhere.
#if defined(__x86_64__)
constexpr unsigned kAddressBits = 47;
#else
constexpr unsigned kAddressBits = 48;
#endif

}  // namespace mapalloc
