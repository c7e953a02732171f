// Giving memory back to the OS without being asked. Free pages are purged (madvise) once they
// have stayed free for the purge delay, so that memory reused at once is not purged and
// refaulted over and over; empty segments and cached large mappings are unmapped after the
// longer unmap delay. The work runs in allocation slow paths of any thread: a heap purges its
// own segments, and whichever thread finds the process-wide deadline passed purges the caches
// and the abandoned heaps. While work is waiting, refills hand out short batches
// (heap_purge_pending), so even a program that only allocates lightly reaches a slow path
// soon; the fast paths never look at the clock.
#pragma once

#include "core/heap.h"

namespace mapalloc {

// Runs whatever purge work has fallen due. Called from slow paths with the thread's heap
// (or &empty_heap for a thread without one).
void purge_if_due(Heap* heap);

// purge_if_due, at most once per kTicksPerCheck for a heap (busy threads reach slow paths
// thousands of times a millisecond; reading the clock each time would cost ~3%).
inline void purge_if_due_soon(Heap* heap) {
  if (!heap_purge_pending(heap)) return;
  uint64_t ticks = os_ticks();
  if (ticks < heap->next_purge_check_ticks) return;
  heap->next_purge_check_ticks = ticks + kTicksPerCheck;
  purge_if_due(heap);
}

// malloc_trim(0): everything that can be released is released now: this thread's heap, the
// abandoned ones, the caches; other live threads purge at their next slow path. Returns the
// bytes purged or unmapped.
size_t purge_all_now(Heap* heap);

void purge_after_fork_child();

}  // namespace mapalloc
