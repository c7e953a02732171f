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
// unwind_stack_cached return false, and the caller walks with _Unwind_Backtrace instead.
//
// The cache is keyed by address: a library unloaded with dlclose, and another mapped at the
// same addresses, could leave a stale rule (the profiler's stacks would then be wrong there).
#pragma once

#include "platform/config.h"

namespace mapalloc {

// Called for each frame, innermost first: `pc` is the frame's return address (the first frame's
// own address within unwind_stack_cached), `function_start` the start of its function. Returns
// false to stop the walk.
using FrameVisitor = bool (*)(void* argument, uintptr_t pc, uintptr_t function_start);

// Walks the calling thread's stack from unwind_stack_cached's own frame outwards. true: the walk
// ended (outermost frame, a frame without unwind information, or the visitor said stop); false:
// a frame needs the full unwinder, and the frames visited so far are to be discarded.
bool unwind_stack_cached(FrameVisitor visit, void* argument);

// Gives back the calling thread's record of its last walk (at thread exit; later walks of the
// thread keep none).
void unwind_thread_exit();

// For the statistics and tests: rules read from .eh_frame, walks given up to the full unwinder,
// and frames taken from the thread's previous walk without a rule look-up.
struct UnwindCounters {
  uint64_t rules_read;
  uint64_t walks_given_up;
  uint64_t frames_reused;
};
UnwindCounters unwind_counters();

}  // namespace mapalloc
