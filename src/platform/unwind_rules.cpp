#include "platform/unwind_rules.h"

#if defined(__x86_64__)

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

}  // namespace

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

}  // namespace mapalloc

#endif
