// Statistics, gathered on demand: nothing on the fast paths. Blocks in use per size class come
// from the page records (walked under the segment registry lock), OS activity from the OS
// layer's counters, large blocks from the large layer's, remote frees and threads from the
// heaps. Figures from other threads' pages are read without synchronisation: estimates.
#pragma once

#include "core/heap.h"
#include "mapalloc.h"

namespace mapalloc {

void stats_collect(mapalloc_stats_t* stats);

// Prints the table through `write` (one call per line, without the newline).
void stats_print(mapalloc_writer_t write, void* context);

// The process's peak resident memory (VmHWM), in bytes, or 0 if /proc is not readable.
size_t process_peak_resident_bytes();

// MAPALLOC_STATS / MAPALLOC_STATS_FILE / MAPALLOC_SAMPLE_MS: set up at process start (the
// sampler thread) and at exit (the table).
void stats_start_sampler_if_asked();
void stats_report_at_exit();

}  // namespace mapalloc
