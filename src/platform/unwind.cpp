#include "platform/unwind.h"

#include <atomic>

#include "platform/os.h"

// libgcc's lookup of the .eh_frame entry (FDE) that covers an address, as _Unwind_Backtrace uses
// it: with glibc 2.35 or later it finds the object by _dl_find_object, which neither allocates
// nor takes the loader lock. Declared here because libgcc installs no header for it.
struct dwarf_eh_bases {
  void* tbase;
  void* dbase;
  void* func;
};
extern "C" const void* _Unwind_Find_FDE(void* pc, struct dwarf_eh_bases* bases);

namespace mapalloc {

namespace {
std::atomic<uint64_t> rules_read{0};
std::atomic<uint64_t> walks_given_up{0};
}  // namespace

#if defined(__x86_64__)

namespace {

// ---- A frame's rule, packed into one word ----------------------------------------------------
// bit 0 valid; 1 the walk must give up here; 2 no unwind information (the walk ends, as
// libgcc's does); 3 outermost frame (return address undefined); 4 CFA = rbp + offset (else
// rsp + offset); 5 rbp saved at CFA - 8 * slot (else unchanged); bits 6-29 the CFA offset;
// 30-43 the slot; 44-63 the address's offset into its function (kFarOffset: too far).
constexpr uint64_t kRuleValid = 1, kRuleGiveUp = 2, kRuleNoInfo = 4, kRuleOutermost = 8,
                   kRuleCfaRbp = 16, kRuleRbpSaved = 32;
constexpr unsigned kCfaShift = 6, kSlotShift = 30, kOffsetShift = 44;
constexpr uint64_t kCfaLimit = uint64_t{1} << 24, kSlotLimit = uint64_t{1} << 14,
                   kFarOffset = (uint64_t{1} << 20) - 1;

// A caller's frame more than this far above its callee's is taken for a bad rule.
constexpr uintptr_t kMaxFrameBytes = 1 * kMiB;
constexpr unsigned kMaxFrames = 256;

// x86-64 DWARF register numbers.
constexpr uint64_t kRegRbp = 6, kRegRsp = 7, kRegReturnAddress = 16;

// ---- Reading .eh_frame -----------------------------------------------------------------------

uint64_t read_uleb(const uint8_t*& p, const uint8_t* end) {
  uint64_t value = 0;
  for (unsigned shift = 0; p < end; shift += 7) {
    uint8_t byte = *p++;
    if (shift < 64) value |= uint64_t{byte & 0x7fu} << shift;
    if ((byte & 0x80) == 0) break;
  }
  return value;
}

int64_t read_sleb(const uint8_t*& p, const uint8_t* end) {
  uint64_t value = 0;
  unsigned shift = 0;
  uint8_t byte = 0;
  do {
    if (p >= end) return 0;
    byte = *p++;
    if (shift < 64) value |= uint64_t{byte & 0x7fu} << shift;
    shift += 7;
  } while (byte & 0x80);
  if (shift < 64 && (byte & 0x40)) value |= ~uint64_t{0} << shift;
  return static_cast<int64_t>(value);
}

template <typename T>
T read_fixed(const uint8_t*& p) {
  T value;
  __builtin_memcpy(&value, p, sizeof value);
  p += sizeof value;
  return value;
}

// Skips a pointer of DWARF encoding `encoding` (DW_EH_PE_*); false if the encoding is unknown.
bool skip_encoded(const uint8_t*& p, const uint8_t* end, uint8_t encoding) {
  if (encoding == 0xff) return true;  // omitted
  switch (encoding & 0x0f) {
    case 0x00:
    case 0x04:
    case 0x0c:
      p += 8;
      return true;  // absptr, udata8, sdata8
    case 0x02:
    case 0x0a:
      p += 2;
      return true;  // udata2, sdata2
    case 0x03:
    case 0x0b:
      p += 4;
      return true;  // udata4, sdata4
    case 0x01:
      read_uleb(p, end);
      return true;
    case 0x09:
      read_sleb(p, end);
      return true;
    default:
      return false;
  }
}

// How rbp and the return address are recovered, and where the CFA is, at one address.
enum class Saved : uint8_t { kSame, kAtOffset, kUndefined, kOther };
struct FrameState {
  uint64_t cfa_register = kRegRsp;
  int64_t cfa_offset = 8;
  bool cfa_is_expression = false;
  Saved rbp = Saved::kSame;
  int64_t rbp_offset = 0;
  Saved return_address = Saved::kSame;
  int64_t return_address_offset = 0;
};

struct Cie {
  uint64_t code_alignment = 1;
  int64_t data_alignment = -8;
  uint8_t fde_encoding = 0;  // absptr
  bool augmented = false;    // "z": FDEs carry an augmentation length
  const uint8_t* instructions = nullptr;
  const uint8_t* end = nullptr;
};

bool parse_cie(const uint8_t* cie, Cie* out) {
  const uint8_t* p = cie;
  uint32_t length = read_fixed<uint32_t>(p);
  if (length == 0 || length == 0xffffffffu) return false;  // (64-bit DWARF: not on x86-64 Linux)
  const uint8_t* end = p + length;
  if (read_fixed<uint32_t>(p) != 0) return false;  // not a CIE
  uint8_t version = *p++;
  const char* augmentation = reinterpret_cast<const char*>(p);
  while (p < end && *p != 0) ++p;
  ++p;
  out->code_alignment = read_uleb(p, end);
  out->data_alignment = read_sleb(p, end);
  uint64_t return_register = version == 1 ? *p++ : read_uleb(p, end);
  if (return_register != kRegReturnAddress) return false;
  const uint8_t* instructions = p;
  if (augmentation[0] == 'z') {
    out->augmented = true;
    uint64_t data_length = read_uleb(p, end);
    instructions = p + data_length;
    for (const char* letter = augmentation + 1; *letter != 0; ++letter) {
      if (*letter == 'R') {
        out->fde_encoding = *p++;
      } else if (*letter == 'P') {
        uint8_t encoding = *p++;
        if (!skip_encoded(p, end, encoding)) return false;
      } else if (*letter == 'L') {
        ++p;
      } else if (*letter != 'B') {
        return false;  // 'S' (a signal frame) and anything unknown: the full unwinder's
      }
    }
  } else if (augmentation[0] != 0) {
    return false;
  }
  if (instructions > end) return false;
  out->instructions = instructions;
  out->end = end;
  return true;
}

void set_register(FrameState* state, uint64_t reg, Saved how, int64_t offset) {
  if (reg == kRegRbp) {
    state->rbp = how;
    state->rbp_offset = offset;
  } else if (reg == kRegReturnAddress) {
    state->return_address = how;
    state->return_address_offset = offset;
  }  // other registers do not matter for a walk that needs only rsp, rbp and the return address
}

void restore_register(FrameState* state, const FrameState& initial, uint64_t reg) {
  if (reg == kRegRbp) set_register(state, reg, initial.rbp, initial.rbp_offset);
  if (reg == kRegReturnAddress)
    set_register(state, reg, initial.return_address, initial.return_address_offset);
}

// Runs call-frame instructions [p, end) from address *location while it stays at or below
// `target`. false: an instruction the walk does not model (the caller gives up on the frame).
bool execute(const uint8_t* p, const uint8_t* end, const Cie& cie, uintptr_t* location,
             uintptr_t target, const FrameState& initial, FrameState* state) {
  constexpr unsigned kStateDepth = 8;
  FrameState remembered[kStateDepth];
  unsigned depth = 0;
  auto advance = [&](uint64_t delta) {
    *location += delta * cie.code_alignment;
    return *location <= target;
  };
  while (p < end) {
    uint8_t op = *p++;
    uint8_t low = op & 0x3f;
    switch (op >> 6) {
      case 1:  // DW_CFA_advance_loc
        if (!advance(low)) return true;
        continue;
      case 2:  // DW_CFA_offset
        set_register(state, low, Saved::kAtOffset,
                     static_cast<int64_t>(read_uleb(p, end)) * cie.data_alignment);
        continue;
      case 3:  // DW_CFA_restore
        restore_register(state, initial, low);
        continue;
      default:
        break;
    }
    switch (op) {
      case 0x00:
        break;  // nop
      case 0x02:
        if (!advance(*p++)) return true;
        break;
      case 0x03:
        if (!advance(read_fixed<uint16_t>(p))) return true;
        break;
      case 0x04:
        if (!advance(read_fixed<uint32_t>(p))) return true;
        break;
      case 0x05: {  // offset_extended
        uint64_t reg = read_uleb(p, end);
        set_register(state, reg, Saved::kAtOffset,
                     static_cast<int64_t>(read_uleb(p, end)) * cie.data_alignment);
        break;
      }
      case 0x11: {  // offset_extended_sf
        uint64_t reg = read_uleb(p, end);
        set_register(state, reg, Saved::kAtOffset, read_sleb(p, end) * cie.data_alignment);
        break;
      }
      case 0x2f: {  // GNU_negative_offset_extended
        uint64_t reg = read_uleb(p, end);
        set_register(state, reg, Saved::kAtOffset,
                     -static_cast<int64_t>(read_uleb(p, end)) * cie.data_alignment);
        break;
      }
      case 0x06:
        restore_register(state, initial, read_uleb(p, end));
        break;
      case 0x07:
        set_register(state, read_uleb(p, end), Saved::kUndefined, 0);
        break;
      case 0x08:
        set_register(state, read_uleb(p, end), Saved::kSame, 0);
        break;
      case 0x09: {  // register: rbp or the return address in another register
        uint64_t reg = read_uleb(p, end);
        read_uleb(p, end);
        set_register(state, reg, Saved::kOther, 0);
        break;
      }
      case 0x0a:
        if (depth == kStateDepth) return false;
        remembered[depth++] = *state;
        break;
      case 0x0b:
        if (depth == 0) return false;
        *state = remembered[--depth];
        break;
      case 0x0c:  // def_cfa
        state->cfa_register = read_uleb(p, end);
        state->cfa_offset = static_cast<int64_t>(read_uleb(p, end));
        state->cfa_is_expression = false;
        break;
      case 0x12:  // def_cfa_sf
        state->cfa_register = read_uleb(p, end);
        state->cfa_offset = read_sleb(p, end) * cie.data_alignment;
        state->cfa_is_expression = false;
        break;
      case 0x0d:
        state->cfa_register = read_uleb(p, end);
        state->cfa_is_expression = false;
        break;
      case 0x0e:
        state->cfa_offset = static_cast<int64_t>(read_uleb(p, end));
        break;
      case 0x13:
        state->cfa_offset = read_sleb(p, end) * cie.data_alignment;
        break;
      case 0x0f: {  // def_cfa_expression
        state->cfa_is_expression = true;
        uint64_t length = read_uleb(p, end);
        p += length;
        break;
      }
      case 0x10:    // expression
      case 0x16: {  // val_expression
        uint64_t reg = read_uleb(p, end);
        uint64_t length = read_uleb(p, end);
        p += length;
        set_register(state, reg, Saved::kOther, 0);
        break;
      }
      case 0x14:    // val_offset
      case 0x15: {  // val_offset_sf
        uint64_t reg = read_uleb(p, end);
        if (op == 0x14)
          read_uleb(p, end);
        else
          read_sleb(p, end);
        set_register(state, reg, Saved::kOther, 0);
        break;
      }
      case 0x2e:
        read_uleb(p, end);
        break;  // GNU_args_size
      default:
        return false;  // set_loc and anything unknown
    }
  }
  return true;
}

// The rule at `address` (a return address minus one, or the walk's own first address).
uint64_t read_rule(uintptr_t address) {
  dwarf_eh_bases bases = {};
  auto* fde =
      static_cast<const uint8_t*>(_Unwind_Find_FDE(reinterpret_cast<void*>(address), &bases));
  if (fde == nullptr) return kRuleValid | kRuleNoInfo;
  const uint8_t* p = fde;
  uint32_t length = read_fixed<uint32_t>(p);
  if (length == 0xffffffffu) return kRuleValid | kRuleGiveUp;
  const uint8_t* fde_end = p + length;
  const uint8_t* cie_pointer_field = p;
  uint32_t cie_offset = read_fixed<uint32_t>(p);
  Cie cie;
  if (!parse_cie(cie_pointer_field - cie_offset, &cie)) return kRuleValid | kRuleGiveUp;
  if (!skip_encoded(p, fde_end, cie.fde_encoding) ||         // pc_begin
      !skip_encoded(p, fde_end, cie.fde_encoding & 0x0f)) {  // pc_range
    return kRuleValid | kRuleGiveUp;
  }
  if (cie.augmented) {
    uint64_t data_length = read_uleb(p, fde_end);
    p += data_length;
  }
  auto function_start = reinterpret_cast<uintptr_t>(bases.func);
  uintptr_t location = function_start;
  FrameState state;
  if (!execute(cie.instructions, cie.end, cie, &location, ~uintptr_t{0}, state, &state))
    return kRuleValid | kRuleGiveUp;
  FrameState initial = state;
  location = function_start;
  if (p > fde_end || !execute(p, fde_end, cie, &location, address, initial, &state))
    return kRuleValid | kRuleGiveUp;

  uint64_t offset = address - function_start;
  uint64_t rule = kRuleValid | (offset < kFarOffset ? offset : kFarOffset) << kOffsetShift;
  if (state.return_address == Saved::kUndefined) return rule | kRuleOutermost;
  bool cfa_ok = !state.cfa_is_expression &&
                (state.cfa_register == kRegRsp || state.cfa_register == kRegRbp) &&
                state.cfa_offset > 0 && static_cast<uint64_t>(state.cfa_offset) < kCfaLimit;
  bool return_address_ok =
      state.return_address == Saved::kAtOffset && state.return_address_offset == -8;
  bool rbp_ok =
      state.rbp == Saved::kSame ||
      (state.rbp == Saved::kAtOffset && state.rbp_offset < 0 && state.rbp_offset % 8 == 0 &&
       static_cast<uint64_t>(-state.rbp_offset / 8) < kSlotLimit);
  if (!cfa_ok || !return_address_ok || !rbp_ok) return kRuleValid | kRuleGiveUp;
  rule |= static_cast<uint64_t>(state.cfa_offset) << kCfaShift;
  if (state.cfa_register == kRegRbp) rule |= kRuleCfaRbp;
  if (state.rbp == Saved::kAtOffset)
    rule |= kRuleRbpSaved | static_cast<uint64_t>(-state.rbp_offset / 8) << kSlotShift;
  return rule;
}

// ---- The cache -------------------------------------------------------------------------------
// Two-way set-associative, process-wide, mapped on first use. Each entry is guarded by a
// sequence number (odd while a writer fills it), so a reader never takes a key from one writer
// with a rule from another; a writer that finds the entry busy leaves it. A miss replaces the
// way written longer ago: two return addresses of one stack that share a set both stay (with
// one way per set they evicted each other on every walk of that stack; about 1 stack in 60 of
// a dozen frames has such a pair).

constexpr unsigned kCacheEntriesLog2 = 12;
constexpr size_t kCacheEntries = size_t{1} << kCacheEntriesLog2;

struct CacheEntry {
  std::atomic<uint64_t> sequence;
  std::atomic<uint64_t> address;
  std::atomic<uint64_t> rule;
  std::atomic<uint64_t> written;  // when, in cache_writes, for the choice of a victim
};
constexpr size_t kCacheBytes = kCacheEntries * sizeof(CacheEntry);

std::atomic<CacheEntry*> cache_table{nullptr};
std::atomic<uint64_t> cache_writes{0};

CacheEntry* cache() {
  CacheEntry* table = cache_table.load(std::memory_order_acquire);
  if (MAPALLOC_LIKELY(table != nullptr)) return table;
  auto* mapped = static_cast<CacheEntry*>(os_map_aligned(kCacheBytes, kOsPageBytes));
  if (mapped == nullptr) return nullptr;  // (zeroed memory: every entry empty)
  if (!cache_table.compare_exchange_strong(table, mapped, std::memory_order_acq_rel)) {
    os_unmap(mapped, kCacheBytes);
    return table;
  }
  return mapped;
}

// The rule `entry` holds for `address`, or 0.
uint64_t cached_rule(CacheEntry& entry, uintptr_t address) {
  uint64_t sequence = entry.sequence.load(std::memory_order_acquire);
  if ((sequence & 1) != 0) return 0;
  uint64_t key = entry.address.load(std::memory_order_relaxed);
  uint64_t rule = entry.rule.load(std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (key != address || entry.sequence.load(std::memory_order_relaxed) != sequence) return 0;
  return rule;
}

void store_rule(CacheEntry& entry, uintptr_t address, uint64_t rule) {
  uint64_t sequence = entry.sequence.load(std::memory_order_relaxed);
  if ((sequence & 1) != 0 ||
      !entry.sequence.compare_exchange_strong(sequence, sequence + 1, std::memory_order_acquire)) {
    return;
  }
  std::atomic_thread_fence(std::memory_order_release);
  entry.address.store(address, std::memory_order_relaxed);
  entry.rule.store(rule, std::memory_order_relaxed);
  entry.written.store(cache_writes.fetch_add(1, std::memory_order_relaxed) + 1,
                      std::memory_order_relaxed);
  entry.sequence.store(sequence + 2, std::memory_order_release);
}

uint64_t rule_for(CacheEntry* table, uintptr_t address) {
  CacheEntry* set = &table[((address * 0x9e3779b97f4a7c15ull) >> (64 - kCacheEntriesLog2)) & ~1ull];
  if (uint64_t rule = cached_rule(set[0], address)) return rule;
  if (uint64_t rule = cached_rule(set[1], address)) return rule;
  uint64_t rule = read_rule(address);
  rules_read.fetch_add(1, std::memory_order_relaxed);
  bool second_older = set[1].written.load(std::memory_order_relaxed) <
                      set[0].written.load(std::memory_order_relaxed);
  store_rule(set[second_older ? 1 : 0], address, rule);
  return rule;
}

// ---- The last walks, per thread -----------------------------------------------------------
// A thread that samples walks the same few stacks again and again. Each frame of its last walks
// is kept with the registers it began with and what its rule made of them. A frame that begins
// with the same pc and rsp (and rbp, if its CFA is rbp-based) has the same rule (a rule is a
// function of the pc), hence the same CFA and the same slots to read; the walk then reads those
// slots and compares what it finds with the kept frame after it, and needs no rule look-up.
// Every value the walk depends on is read from the stack again, so a different stack at the same
// addresses (another caller, a new thread on a reused stack) is found where it first differs, and
// walked from there with rules, overwriting the kept frames from that point on. Two walks are
// kept, told apart by their first frame's stack pointer (the depth at which the walk began), so
// that two stacks sampled in turn (malloc's and realloc's, say) both find theirs.
constexpr unsigned kKeptFrames = 32;
constexpr unsigned kKeptWalks = 2;

struct KeptFrame {
  uintptr_t pc, sp, bp;  // the registers the frame began with
  uintptr_t start;       // its function's first address (0: unknown), for the visitor
  uintptr_t cfa;         // 0: the walk ended at this frame (no unwind information, outermost)
  uintptr_t saved_rbp;   // where the caller's rbp was saved (0: rbp unchanged)
  bool cfa_from_bp;      // else rbp need not match: most code uses it as any other register
};

struct LastWalk {
  KeptFrame frames[kKeptFrames];
  unsigned count;  // frames[0, count) are the walk's
};

struct LastWalks {
  LastWalk walks[kKeptWalks];
  unsigned latest;  // the walk used last (the other is replaced first)
  bool busy;        // a walk in this thread is using them (a signal handler's walk keeps off)
};
static_assert(sizeof(LastWalks) <= kOsPageBytes);

// Mapped at the thread's first walk, unmapped at its exit (unwind_thread_exit). Only the
// pointer is thread-local: the library's static TLS must stay small, or dlopen cannot load it
// (glibc keeps little static TLS spare for libraries loaded later).
LastWalks* const kThreadExited = reinterpret_cast<LastWalks*>(uintptr_t{1});
LastWalks* const kMapping = reinterpret_cast<LastWalks*>(uintptr_t{2});
__thread LastWalks* thread_last_walks __attribute__((tls_model("initial-exec"))) = nullptr;
std::atomic<uint64_t> frames_reused{0};

// This thread's last walks, for the walk beginning now; nullptr if there are none to use
// (another walk of this thread is under way, the thread is exiting, or no memory).
// (The signal fences keep the compiler from moving these stores past the calls and accesses
// they guard: a signal handler's walk in this thread sees them in program order.)
LastWalks* take_last_walks() {
  LastWalks* kept = thread_last_walks;
  if (kept == nullptr) {
    thread_last_walks = kMapping;  // (a walk in a signal handler meanwhile keeps nothing)
    std::atomic_signal_fence(std::memory_order_seq_cst);
    kept = static_cast<LastWalks*>(os_map_aligned(kOsPageBytes, kOsPageBytes));  // (zeroed)
    std::atomic_signal_fence(std::memory_order_seq_cst);
    thread_last_walks = kept;  // (nullptr if no memory: tried again at the next walk)
    if (kept == nullptr) return nullptr;
  }
  if (kept == kThreadExited || kept == kMapping || kept->busy) return nullptr;
  kept->busy = true;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return kept;
}

void release_last_walks(LastWalks* kept) {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  kept->busy = false;
}

// The kept walk that began at stack pointer `sp`, else the one to replace.
LastWalk* walk_from(LastWalks* kept, uintptr_t sp) {
  static_assert(kKeptWalks == 2, "the walk replaced is the least recently used of two");
  unsigned chosen = (kept->latest + 1) % kKeptWalks;
  for (unsigned i = 0; i < kKeptWalks; ++i) {  // (the latest first)
    unsigned index = (kept->latest + i) % kKeptWalks;
    const LastWalk& walk = kept->walks[index];
    if (walk.count != 0 && walk.frames[0].sp == sp) {
      chosen = index;
      break;
    }
  }
  kept->latest = chosen;
  return &kept->walks[chosen];
}

}  // namespace

// Not inlined, so that its own frame has a rule like any other; not instrumented by
// AddressSanitizer, whose redzones do not cover the saved registers it reads anyway.
__attribute__((noinline, no_sanitize_address)) bool unwind_stack_cached(FrameVisitor visit,
                                                                        void* argument) {
  CacheEntry* table = cache();
  if (table == nullptr) return false;
  uintptr_t pc, sp, bp;
  asm volatile("lea 0(%%rip), %0\n\tmov %%rsp, %1\n\tmov %%rbp, %2" : "=r"(pc), "=r"(sp), "=r"(bp));
  LastWalks* all_kept = take_last_walks();
  LastWalk* kept = all_kept != nullptr ? walk_from(all_kept, sp) : nullptr;
  unsigned frame = 0;
  bool ended = false;
  // Frames of the last walk, while they begin as this one's do.
  if (kept != nullptr) {
    for (; frame < kept->count; ++frame) {
      const KeptFrame& same = kept->frames[frame];
      if (same.pc != pc || same.sp != sp || (same.cfa_from_bp && same.bp != bp)) break;
      if (!visit(argument, pc, same.start) || same.cfa == 0) {
        ended = true;
        break;
      }
      if (same.saved_rbp != 0) bp = *reinterpret_cast<const uintptr_t*>(same.saved_rbp);
      pc = *reinterpret_cast<const uintptr_t*>(same.cfa - 8);
      sp = same.cfa;
      if (pc == 0) {
        ended = true;
        break;
      }
    }
    frames_reused.fetch_add(frame, std::memory_order_relaxed);
    if (ended) {
      release_last_walks(all_kept);
      return true;
    }
    kept->count = frame;  // what follows is walked afresh and kept anew
  }
  // The rest with rules. (pc is the first frame's own address, later a return address: the
  // rule is looked up for the call, one byte before.)
  for (; frame < kMaxFrames; ++frame) {
    uintptr_t address = frame == 0 ? pc : pc - 1;
    uint64_t rule = rule_for(table, address);
    if (rule & kRuleGiveUp) break;
    uint64_t offset = rule >> kOffsetShift;
    uintptr_t function_start = (rule & kRuleNoInfo) || offset == kFarOffset ? 0 : address - offset;
    // (The frame is kept whole before the visitor sees it: another visitor may go further.)
    bool last = (rule & (kRuleNoInfo | kRuleOutermost)) != 0;
    uintptr_t cfa = 0, saved_rbp = 0;
    if (!last) {
      cfa = ((rule & kRuleCfaRbp) ? bp : sp) + ((rule >> kCfaShift) & (kCfaLimit - 1));
      if (cfa <= sp || cfa - sp > kMaxFrameBytes || cfa % 8 != 0) break;  // a bad rule: give up
      if (rule & kRuleRbpSaved) saved_rbp = cfa - 8 * ((rule >> kSlotShift) & (kSlotLimit - 1));
    }
    if (kept != nullptr && frame < kKeptFrames) {
      kept->frames[frame] = {pc, sp, bp, function_start, cfa, saved_rbp, (rule & kRuleCfaRbp) != 0};
      kept->count = frame + 1;
    }
    if (!visit(argument, pc, function_start) || last) {
      ended = true;
      break;
    }
    if (saved_rbp != 0) bp = *reinterpret_cast<const uintptr_t*>(saved_rbp);
    pc = *reinterpret_cast<const uintptr_t*>(cfa - 8);
    sp = cfa;
    if (pc == 0 || frame + 1 == kMaxFrames) {  // (deeper than any profile keeps)
      ended = true;
      break;
    }
  }
  if (kept != nullptr) {
    if (!ended) kept->count = 0;  // a walk given up is not kept
    release_last_walks(all_kept);
  }
  if (ended) return true;
  walks_given_up.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void unwind_thread_exit() {
  LastWalks* kept = thread_last_walks;
  thread_last_walks = kThreadExited;  // (later walks of this thread keep nothing)
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (kept != nullptr && kept != kThreadExited && kept != kMapping) os_unmap(kept, kOsPageBytes);
}

#else  // other architectures: always the full unwinder

bool unwind_stack_cached(FrameVisitor, void*) {
  walks_given_up.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void unwind_thread_exit() {}

#endif

UnwindCounters unwind_counters() {
  return {rules_read.load(std::memory_order_relaxed),
          walks_given_up.load(std::memory_order_relaxed),
          frames_reused.load(std::memory_order_relaxed)};
}

}  // namespace mapalloc
