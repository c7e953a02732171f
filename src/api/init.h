// Process and thread life cycle: lazy process set-up on the first allocation (no allocation,
// no static constructor), a heap for each thread on its first allocation, the heap handed back
// when the thread exits, and the fork child's repair of the process-wide locks.
#pragma once

#include "core/heap.h"

namespace mapalloc {

// Sets up the process if needed and gives the calling thread a heap; nullptr when there is no
// memory for one. Safe to re-enter (the thread's heap is installed before anything that may
// allocate runs).
Heap* thread_init();

// Hands the calling thread's heap back to the pool (idempotent).
void thread_exit();

// In a forked child: resets the process-wide locks (see spin_lock.h).
void after_fork_child();

// For the segmentation-fault report (os_report_faults; defined in entry.cpp): what `address`
// is in mapalloc's memory, written to `buffer`; 0 when it is not near mapalloc's memory.
size_t describe_fault(const void* address, char* buffer, size_t capacity);

}  // namespace mapalloc
