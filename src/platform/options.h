// Run-time options. One table (kOptionTable) names each option and drives everything about it:
// reading its MAPALLOC_* environment variable once (without allocating), mapalloc_option_get/set
// by name, the listing MAPALLOC_VERBOSE=1 prints at start, and the README's table of options
// (tests/unit_options.cpp checks that the README matches). A bad value prints one warning naming
// the variable and its accepted values, and the default stays in force: an option never stops
// the program.
//
// A new option: a field in Options, a row in kOptionTable (options.cpp), a row in the README.
#pragma once

#include "platform/config.h"

namespace mapalloc {

enum class PurgeMethod : int;  // os.h

// A huge page makes 2 MiB resident at once; below this much in segments that is a large share of
// the footprint (larson-2t: 9.9 MB peak RSS with 4 KiB pages, 13.7 MB with huge pages from
// 4 MiB), above it the faults saved are worth more (a 4 KiB fault costs 2.4 us on the benchmark
// VM, huge-page memory 0.36 us per 4 KiB). A new huge-page segment makes up to both its 2 MiB
// regions resident before they fill, 1/6 of 24 MiB: from 16 MiB, perl (peak in its 5th
// segment) kept 1.12x glibc's peak RSS, from 24 MiB 1.04x, for 2,048 more 4 KiB faults in the
// programs that grow past 16 MiB.
constexpr size_t kThpSegmentsFromBytes = 24 * kMiB;
// Below that, a segment's 2 MiB region becomes a huge page once carved blocks fill all of it but
// this much (MADV_COLLAPSE): the TLB reach of huge pages for the dense part of a small heap, at
// most this much more resident per region. (perl's hash-heavy run, whose whole heap stayed on
// 4 KiB pages: 0.79 s, against 0.69 s with huge pages on every segment and 1.16x glibc's peak
// RSS. A slack of 256 KiB took lua5.4 past 1.1x glibc's peak RSS.)
constexpr size_t kCollapseSlackBytes = 128 * kKiB;
// The heap profiler's mean sampling interval, unless MAPALLOC_PROF_SAMPLE says otherwise.
constexpr size_t kProfDefaultSampleBytes = 512 * kKiB;

// The values in force, read by the layers above with options().field. Their defaults are the
// table's.
struct Options {
  // Free memory is given back to the OS once it has stayed unused this long (0: at once).
  uint32_t purge_delay_ms;
  // MADV_DONTNEED (resident memory drops at once) or MADV_FREE (the kernel takes pages lazily;
  // cheaper, but they keep counting as resident until memory is short).
  int purge_method;  // a PurgeMethod
  // Several runs purged with one system call (process_madvise on the process itself, where the
  // kernel has it: os_purge_ranges). 0: one madvise per run, for a sandbox whose system-call
  // filter kills a process that makes a call it does not list.
  bool purge_list;
  // Empty segments and cached large mappings are unmapped after this long.
  uint32_t unmap_delay_ms;
  // Secure build: overwrite blocks with zeroes when they are freed.
  bool zero_on_free;
  // Default build: freed arena blocks wait for a while, within a budget (0 never, 1 with a
  // canary, 2 inaccessible; core/arena_quarantine.h).
  uint32_t large_quarantine;
  // Install the SIGSEGV/SIGBUS reporter that names the block or structure a fault hit.
  bool report_faults;
  // Transparent huge pages (madvise MADV_HUGEPAGE): far fewer page faults and TLB misses,
  // coarser memory return. 0: never; 1: large-block arenas, and the segments mapped once the
  // process has kThpSegmentsFromBytes of segments (a small program keeps 4 KiB pages); 2:
  // arenas and every segment.
  uint32_t transparent_huge_pages;
  // Print the statistics table at exit (to stats_file, or stderr).
  bool stats_at_exit;
  // Append a CSV sample (time, in use, mapped, resident) to stats_file every this many ms.
  uint32_t sample_ms;
  char stats_file[256];  // "%p" in it stands for the process id; empty: stderr
  // Print the options in force at start, and OS failures as they happen.
  bool verbose;
  // Fault injection for tests: fail the Nth request for memory from the OS (and, for
  // fault_mmap_from, every later one); 0: off.
  uint32_t fault_mmap;
  uint32_t fault_mmap_from;
  // Heap profiler (README, "Heap profiling"): on from the start; the mean sampling interval;
  // the prefix of its files ("%p": the process id; empty: "mapalloc.%p"); the signal that
  // writes them (0: none).
  bool prof;
  uint64_t prof_sample_bytes;
  char prof_file[256];
  uint32_t prof_signal;
};

enum class OptionKind : uint8_t {
  kMilliseconds,  // 0..max
  kChoice,        // one digit, 0..max (0/1 for a switch)
  kWord,          // one of `words`; the value is its index
  kNumber,        // 1..max; a default of 0 means off
  kPath,          // text shorter than max bytes; not a number, so not reachable by
                  // mapalloc_option_get/set
};

struct OptionRow {
  const char* name;      // for mapalloc_option_get/set and the verbose listing
  const char* variable;  // the environment variable
  OptionKind kind;
  // false: the option acts only at start (its variable is read before anything else happens),
  // so mapalloc_option_set refuses it; mapalloc_option_get still reads it.
  bool settable;
  long default_value;
  long max;
  // kWord: the accepted words, max + 1 of them; kPath: one, shown when the path is empty.
  const char* const* words;
  const char* description;  // the README table's "meaning" column, word for word
  // The field in Options: numbers through get/set (null for kPath), a path at path_offset.
  long (*get)(const Options&);
  void (*set)(Options&, long);
  size_t path_offset;
};

constexpr size_t kOptionCount = 18;
extern const OptionRow kOptionTable[kOptionCount];

// The row named `name` (as mapalloc_option_get/set take it); nullptr if there is none.
const OptionRow* option_find(const char* name);

// The value of `row` in `values` as the README's table and the verbose listing show it (a
// number, the word, "off" for an unset request number, the path or "stderr"), into `buffer`
// (NUL-terminated). Returns its length.
size_t option_format(const OptionRow& row, const Options& values, char* buffer, size_t capacity);

// Changes an option at run time by name ("purge_delay_ms", ...); false for an unknown name, an
// option that acts only at start, or a value out of range.
bool option_set(const char* name, long value);
bool option_get(const char* name, long* value);

// The options in force (the defaults until options_init has run).
const Options& options();

// Reads the environment. Idempotent; called on the first allocation of the process. With
// MAPALLOC_VERBOSE=1, prints every option in force on one line.
void options_init();

// The path that a kPath row keeps in `values`.
inline char* option_path(const OptionRow& row, Options& values) {
  return reinterpret_cast<char*>(&values) + row.path_offset;
}
inline const char* option_path(const OptionRow& row, const Options& values) {
  return reinterpret_cast<const char*>(&values) + row.path_offset;
}

// Parses `text` as a decimal number in [0, max]; false if it is not one.
bool parse_unsigned(const char* text, uint64_t max, uint64_t* value);

}  // namespace mapalloc
