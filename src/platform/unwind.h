// A stack walk for the heap profiler that costs tens of instructions per frame instead of the
// thousands of a full DWARF unwind (_Unwind_Backtrace interprets each frame's call-frame
// information anew on every walk).
//
// On x86-64 nearly every frame's rule is "the caller's stack pointer (the CFA) is rsp or rbp plus
// a constant, the return address sits just below it, and rbp is either untouched or saved at a
// constant offset from the CFA". The walk reads that rule from the function's .eh_frame entry
// (found by libgcc's _Unwind_Find_FDE) the first time it meets a return address and keeps it in
// a process-wide cache, so later walks only look rules up. Each thread also keeps its last walk:
// the frames a new walk shares with it (same pc and stack pointer, checked frame by frame) need
// no look-up at all. A frame whose rule is anything else
// (a signal frame, a DWARF expression, a stack realigned through another register) makes
// unwind_backtrace_cached return false, and the caller walks with _Unwind_Backtrace instead.
//
// The cache is keyed by address: a library unloaded with dlclose, and another mapped at the
// same addresses, could leave a stale rule (the profiler's stacks would then be wrong there).
#pragma once

#include "platform/config.h"

namespace mapalloc {

// The profiler's backtrace: up to `capacity` return addresses collected into `frames`, innermost
// first, leaving out the frames up to and including the outermost one, among the first
// kAllocatorFrames, whose function starts at one of `entries` (the allocator's functions, sorted
// ascending; tail calls leave some of them off the stack). A thread's last backtrace is reused
// for the same `entries` pointer and count (unwind_backtrace_cached): the same pointer and count
// must always hold the same values (the profiler's table only grows).
struct BacktraceWalk {
  uintptr_t* frames;
  unsigned capacity;
  const uintptr_t* entries;
  unsigned entry_count;
  unsigned count;          // frames collected
  unsigned seen;           // frames visited
  uintptr_t lowest_entry;  // the bounds of `entries`: most frames are outside them
  uintptr_t highest_entry;
};
constexpr unsigned kAllocatorFrames = 24;
BacktraceWalk make_backtrace_walk(uintptr_t* frames, unsigned capacity, const uintptr_t* entries,
                                  unsigned entry_count);
// One frame of a backtrace (also for _Unwind_Backtrace): `pc` is the frame's return address,
// `function_start` the start of its function. false: the walk stops here.
bool backtrace_visit(void* walk, uintptr_t pc, uintptr_t function_start);

// The backtrace by the cached walk, which starts at its own frame. A stack that is, frame for
// frame, the whole of the thread's last backtrace (a loop that allocates from one place) is only
// checked, not visited again: its frames are copied from that walk's. true: the walk ended
// (outermost frame, a frame without unwind information, or the visitor stopped); false: a frame
// needs the full unwinder, and what the walk collected is to be discarded.
bool unwind_backtrace_cached(BacktraceWalk* walk);

// Gives back the calling thread's record of its last walk (at thread exit; later walks of the
// thread keep none).
void unwind_thread_exit();

// Threads inside libgcc's unwinder (_Unwind_Find_FDE, _Unwind_Backtrace), which takes locks (the
// loader's; in a static program dl_iterate_phdr's): a child forked meanwhile must not walk. Only
// those calls are counted, so that a walk the cache serves costs no locked instruction.
void unwinder_enter();
void unwinder_leave();
bool unwinder_in_use();
void unwinder_reset_after_fork();  // (in a child: the threads counted are not there)

// For the statistics and tests (counted without locked instructions: concurrent walks in
// several threads may lose a count): rules read from .eh_frame, walks given up to the full
// unwinder, frames taken from the thread's previous walk without a rule look-up, and backtraces
// copied whole from it (unwind_backtrace_cached).
struct UnwindCounters {
  uint64_t rules_read;
  uint64_t walks_given_up;
  uint64_t frames_reused;
  uint64_t backtraces_copied;
};
UnwindCounters unwind_counters();

}  // namespace mapalloc
