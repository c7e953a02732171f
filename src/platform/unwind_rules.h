// The unwind rule of one code address, read from its .eh_frame entry and packed into one word:
// what platform/unwind.cpp's cached stack walk needs to step from a frame to its caller's.
// x86-64 only (unwind.cpp walks with libgcc's unwinder elsewhere).
#pragma once

#include "platform/config.h"

#if defined(__x86_64__)

namespace mapalloc {

// bit 0 valid; 1 the walk must give up here; 2 no unwind information (the walk ends, as
// libgcc's does); 3 outermost frame (return address undefined); 4 CFA = rbp + offset (else
// rsp + offset); 5 rbp saved at CFA - 8 * slot (else unchanged); bits 6-29 the CFA offset;
// 30-43 the slot; 44-63 the address's offset into its function (kFarOffset: too far).
constexpr uint64_t kRuleValid = 1, kRuleGiveUp = 2, kRuleNoInfo = 4, kRuleOutermost = 8,
                   kRuleCfaRbp = 16, kRuleRbpSaved = 32;
constexpr unsigned kCfaShift = 6, kSlotShift = 30, kOffsetShift = 44;
constexpr uint64_t kCfaLimit = uint64_t{1} << 24, kSlotLimit = uint64_t{1} << 14,
                   kFarOffset = (uint64_t{1} << 20) - 1;

// The rule at `address` (a return address minus one, or the walk's own first address), found by
// libgcc's _Unwind_Find_FDE and interpreted here: neither allocates.
uint64_t read_rule(uintptr_t address);

}  // namespace mapalloc

#endif
