// The recorder of the tracing build (trace.cpp), as its entry points (trace_override.cpp) see
// it. Only libmapalloc-trace.so contains either file.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <atomic>

#include "platform/config.h"

namespace mapalloc::tracer {

enum State : int { kUnstarted, kStarting, kRecording, kOff };
extern std::atomic<int> state;

// Opens the trace file on the first call (any thread); false if tracing is off for good (the
// file cannot be written, a fork child) or while this thread is the one starting it.
bool start_tracing();

MAPALLOC_INLINE bool tracing() {
  int now = state.load(std::memory_order_acquire);
  if (MAPALLOC_LIKELY(now == kRecording)) return true;
  return now != kOff && start_tracing();
}

// A call that returned `block` (nullptr: it failed). `op` is a trace.h operation code.
void record_alloc(unsigned op, uint64_t count, uint64_t size, uint64_t alignment, void* block);
// A call handing `block` in: a free or delete (the block leaves the address map), or
// malloc_usable_size.
void record_release(unsigned op, void* block, uint64_t size, uint64_t alignment);
// realloc and reallocarray, traced around the call itself (`total` = count * size unless that
// overflows: `overflow`).
void* traced_realloc(unsigned op, void* block, uint64_t count, uint64_t size, size_t total,
                     bool overflow);

MAPALLOC_INLINE void* note_alloc(unsigned op, uint64_t count, uint64_t size, uint64_t alignment,
                                 void* block) {
  if (MAPALLOC_LIKELY(tracing())) record_alloc(op, count, size, alignment, block);
  return block;
}

MAPALLOC_INLINE void note_release(unsigned op, void* block, uint64_t size = 0,
                                  uint64_t alignment = 0) {
  if (MAPALLOC_LIKELY(tracing())) record_release(op, block, size, alignment);
}

}  // namespace mapalloc::tracer
