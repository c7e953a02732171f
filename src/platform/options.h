// Run-time options, read once from MAPALLOC_* environment variables without allocating.
// A bad value prints one warning naming the variable and its accepted values, and the default
// stays in force: an option never stops the program.
#pragma once

#include "platform/config.h"

namespace mapalloc {

enum class PurgeMethod : int;  // os.h

constexpr size_t kThpSegmentsFromBytes = 4 * kMiB;

struct Options {
  // Free memory is given back to the OS once it has stayed unused this long (0: at once).
  uint32_t purge_delay_ms = 100;
  // MADV_DONTNEED (resident memory drops at once) or MADV_FREE (the kernel takes pages lazily;
  // cheaper, but they keep counting as resident until memory is short).
  int purge_method = 0;  // PurgeMethod::kDontNeed
  // Empty segments and cached large mappings are unmapped after this long.
  uint32_t unmap_delay_ms = 1000;
  // Secure build: overwrite blocks with zeroes when they are freed.
  bool zero_on_free = false;
  // Transparent huge pages (madvise MADV_HUGEPAGE): far fewer page faults and TLB misses,
  // coarser memory return. 0: never; 1: large-block arenas, and the segments mapped once the
  // process has kThpSegmentsFromBytes of segments (a small program keeps 4 KiB pages); 2:
  // arenas and every segment.
  uint32_t transparent_huge_pages = 1;
  // Print the statistics table at exit (to stats_file, or stderr).
  bool stats_at_exit = false;
  // Append a CSV sample (time, in use, mapped, resident) to stats_file every this many ms.
  uint32_t sample_ms = 0;
  char stats_file[256] = {};  // "%p" in it stands for the process id
  // Print the options in force at start, and OS failures as they happen.
  bool verbose = false;
  // Fault injection for tests: fail the Nth request for memory from the OS (and, for
  // fault_mmap_from, every later one); 0: off.
  uint32_t fault_mmap = 0;
  uint32_t fault_mmap_from = 0;
};

// Changes an option at run time by name ("purge_delay_ms", ...); false for an unknown name or
// a value out of range.
bool option_set(const char* name, long value);
bool option_get(const char* name, long* value);

// The options in force (defaults until options_init has run).
const Options& options();

// Reads the environment. Idempotent; called on the first allocation of the process.
void options_init();

// Parses `text` as a decimal number in [0, max]; false if it is not one.
bool parse_unsigned(const char* text, uint64_t max, uint64_t* value);

}  // namespace mapalloc
