#include "core/arena_quarantine.h"

#include "core/segment.h"
#include "platform/token_bucket.h"

namespace mapalloc {

namespace {

enum class SlotState : uint8_t { kEmpty, kProtecting, kHeld };

// A slot's fields are written under the arena lock; `block` and `bytes` are also read by the
// fault handler without it (hence the atomic accesses).
struct Slot {
  char* block;
  size_t bytes;
  uint64_t freed_at_ms;
  SlotState state;
  bool inaccessible;
};

struct Quarantine {
  Slot slots[kQuarantineSlots] = {};
  unsigned next = 0;  // the slot the next admitted block takes (first in, first out)
  TokenBucket budget = {kQuarantineBurst, 0};
  size_t bytes = 0;
  size_t admitted = 0;  // since the start
};
Quarantine quarantine;

QuarantinedBlock take(Slot* slot) {
  QuarantinedBlock taken{slot->block, slot->bytes, slot->freed_at_ms, slot->inaccessible,
                         slot->state == SlotState::kHeld};
  quarantine.bytes -= slot->bytes;
  slot->state = SlotState::kEmpty;
  __atomic_store_n(&slot->block, nullptr, __ATOMIC_RELAXED);
  return taken;
}

Slot* slot_of(const char* block) {
  for (Slot& slot : quarantine.slots) {
    if (slot.state != SlotState::kEmpty && slot.block == block) return &slot;
  }
  return nullptr;
}

}  // namespace

bool arena_quarantine_admit(char* block, size_t bytes, bool inaccessible, uint64_t now_ms,
                            QuarantinedBlock* evicted) {
  *evicted = {};
  if (bytes > kQuarantineMaxBlockBytes) return false;
  Slot& slot = quarantine.slots[quarantine.next];
  if (slot.state == SlotState::kProtecting ||
      !quarantine.budget.take(now_ms, kQuarantineBurst, kQuarantineRefillMs)) {
    return false;
  }
  ++quarantine.admitted;
  quarantine.next = (quarantine.next + 1) % kQuarantineSlots;
  if (slot.state == SlotState::kHeld) *evicted = take(&slot);
  __atomic_store_n(&slot.bytes, bytes, __ATOMIC_RELAXED);
  slot.freed_at_ms = now_ms;
  slot.inaccessible = inaccessible;
  slot.state = SlotState::kProtecting;
  __atomic_store_n(&slot.block, block, __ATOMIC_RELAXED);
  quarantine.bytes += bytes;
  return true;
}

void arena_quarantine_protected(const char* block, bool protected_ok) {
  Slot* slot = slot_of(block);
  if (slot == nullptr) return;  // (cannot happen: see the header)
  if (protected_ok) {
    slot->state = SlotState::kHeld;
  } else {
    take(slot);
  }
}

unsigned arena_quarantine_take_expired(uint64_t now_ms, uint64_t delay_ms, bool force,
                                       QuarantinedBlock out[kQuarantineSlots],
                                       uint64_t* next_deadline_ms) {
  unsigned count = 0;
  for (Slot& slot : quarantine.slots) {
    if (slot.state != SlotState::kHeld) continue;
    uint64_t due_ms = slot.freed_at_ms + delay_ms;
    if (force || now_ms >= due_ms) {
      out[count++] = take(&slot);
    } else {
      lower_deadline(next_deadline_ms, due_ms);
    }
  }
  return count;
}

unsigned arena_quarantine_take_all(QuarantinedBlock out[kQuarantineSlots]) {
  unsigned count = 0;
  for (Slot& slot : quarantine.slots) {
    if (slot.state != SlotState::kEmpty) out[count++] = take(&slot);
  }
  return count;
}

bool arena_quarantine_find(const void* address, QuarantinedBlock* found) {
  auto at = static_cast<const char*>(address);
  for (const Slot& slot : quarantine.slots) {
    const char* block = __atomic_load_n(&slot.block, __ATOMIC_RELAXED);
    size_t bytes = __atomic_load_n(&slot.bytes, __ATOMIC_RELAXED);
    if (block != nullptr && at >= block && at < block + bytes) {
      *found = {const_cast<char*>(block), bytes, slot.freed_at_ms, slot.inaccessible,
                slot.state == SlotState::kHeld};
      return true;
    }
  }
  return false;
}

size_t arena_quarantine_bytes() { return __atomic_load_n(&quarantine.bytes, __ATOMIC_RELAXED); }

size_t arena_quarantine_admitted() {
  return __atomic_load_n(&quarantine.admitted, __ATOMIC_RELAXED);
}

}  // namespace mapalloc
