// The default build's quarantine of freed arena blocks (blocks above kClassMaxBytes).
//
// A freed arena block is normally available again at once. A held one instead waits a while out
// of reach of new requests, so the address just freed is not the next one handed out, and a
// second free is caught by the arena's head record. MAPALLOC_LARGE_QUARANTINE picks how it waits:
//   1 (default): with a canary in its first 64 bytes, checked when it leaves (arena_purge.cpp):
//     a write after free that reaches them aborts;
//   2: inaccessible (mprotect PROT_NONE): any use after free faults and is reported
//     (os_report_faults). Not the default: with transparent huge pages it was measured to cost
//     make bench's bigblock twice its time (README, Hardening).
//
// Only a budget of frees is held: kQuarantineBurst at once, then one per kQuarantineRefillMs.
// (Inaccessible blocks cost two mprotect calls each, and a TLB shootdown in a threaded process.)
// A program that frees big blocks faster than that has most of its frees take the usual path;
// a program that frees few of them (most programs, and the typical use after free of a big
// buffer) has every one held. A held block waits for kQuarantineSlots later held frees or one
// purge delay, whichever comes first, then its pages are freed (still resident).
//
// The ring is guarded by the arena lock (its caller's): every function but
// arena_quarantine_find expects it held, and none makes a system call.
#pragma once

#include "platform/config.h"

namespace mapalloc {

constexpr unsigned kQuarantineSlots = 4;
constexpr unsigned kQuarantineBurst = 8;
constexpr uint64_t kQuarantineRefillMs = 16;
// Bigger blocks are never watched (they would hold too much memory back).
constexpr size_t kQuarantineMaxBlockBytes = 32 * kMiB;

struct QuarantinedBlock {
  char* block = nullptr;  // nullptr: none
  size_t bytes = 0;
  uint64_t freed_at_ms = 0;
  bool inaccessible = false;  // protected (MAPALLOC_LARGE_QUARANTINE=2), else it holds a canary
  // Its canary or protection is complete. Only a forked child takes out a block that is not:
  // another thread of the parent was still writing its canary, so it cannot be checked.
  bool held = false;
};

// Admits a freed block of `bytes` if the budget allows and the slot it would take is not still
// being protected by another thread: the block takes that slot, marked as being protected, and
// the slot's previous block (fully protected) is returned for the caller to make accessible and
// free. false (nothing changes) if the block is not admitted.
bool arena_quarantine_admit(char* block, size_t bytes, bool inaccessible, uint64_t now_ms,
                            QuarantinedBlock* evicted);

// The caller protected `block` (admitted, not yet evicted: only the slot's owner evicts a slot
// being protected, never another thread) or failed to (`protected_ok` false: the slot is
// emptied and the caller frees the block as usual).
void arena_quarantine_protected(const char* block, bool protected_ok);

// Takes out the fully protected blocks that have waited `delay_ms` (all of them with `force`);
// lowers `*next_deadline_ms` to when the next one is due. Returns how many it wrote to `out`.
unsigned arena_quarantine_take_expired(uint64_t now_ms, uint64_t delay_ms, bool force,
                                       QuarantinedBlock out[kQuarantineSlots],
                                       uint64_t* next_deadline_ms);

// In a forked child (one thread, lock reset): takes out every block, whatever its state.
unsigned arena_quarantine_take_all(QuarantinedBlock out[kQuarantineSlots]);

// For the fault handler (no lock; an estimate while other threads free): the watched block that
// holds `address`, if any.
bool arena_quarantine_find(const void* address, QuarantinedBlock* found);

// The bytes waiting, and how many blocks were ever admitted (statistics, tests; no lock).
size_t arena_quarantine_bytes();
size_t arena_quarantine_admitted();

}  // namespace mapalloc
