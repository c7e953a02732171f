// When process-wide purge work (cached segments, cached large mappings, abandoned heaps) next
// falls due. Lower layers lower it when they cache memory; the purge layer runs the work and
// recomputes it. 0 means nothing is pending.
#pragma once

#include <atomic>

#include "platform/config.h"

namespace mapalloc {

inline std::atomic<uint64_t> global_purge_deadline_ms{0};

inline void note_global_purge_deadline(uint64_t due_ms) {
  if (due_ms == 0) return;
  uint64_t current = global_purge_deadline_ms.load(std::memory_order_relaxed);
  while ((current == 0 || due_ms < current) && !global_purge_deadline_ms.compare_exchange_weak(
                                                   current, due_ms, std::memory_order_relaxed)) {
  }
}

}  // namespace mapalloc
