// The allocation trace format, shared by the tracing library (src/trace.cpp) and the tools that
// read traces (scripts/replay/). Freestanding on purpose: the library includes it without the
// C++ runtime, the tools with it. All integers are little-endian.
//
// File:   header, then chunks in the order they were written.
// Header: "MAPTRACE", u16 version, u16 header bytes (with the program name), u32 pid,
//         u64 start (Unix time, ns), u32 flags, u32 name length, program name (no NUL).
// Chunk:  40-byte chunk header (below), then `payload` bytes of records of one thread. Every
//         chunk is written with one write(2), so a crash leaves whole chunks only (at most one
//         unflushed buffer per thread is lost); the end marker is a chunk of thread kEndThread.
// Record: op byte, [seq delta], [time delta], fields of the op, each field a LEB128 varint.
//         Deltas restart from the chunk header's base values, so every chunk decodes alone.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace mapalloc::trace {

constexpr char kMagic[8] = {'M', 'A', 'P', 'T', 'R', 'A', 'C', 'E'};
constexpr uint16_t kVersion = 1;
constexpr size_t kHeaderFixedBytes = 32;  // before the program name
constexpr size_t kMaxProgramBytes = 1024;
constexpr uint32_t kFlagChildProcess = 1;  // written to FILE.<pid>: another process held FILE

// Chunk header: u32 magic "CHNK", u32 thread (0, 1, 2... in the order threads first called),
// u32 payload bytes, u32 records, u64 base seq and u64 base time (the thread's values before
// the chunk's first record), u32 checksum of the payload, u32 zero.
constexpr uint32_t kChunkMagic = 0x4b4e4843;
constexpr size_t kChunkHeaderBytes = 40;
constexpr size_t kChunkThread = 4, kChunkPayload = 8, kChunkRecords = 12, kChunkBaseSeq = 16,
                 kChunkBaseTime = 24, kChunkChecksum = 32;
constexpr uint32_t kEndThread = 0xffffffff;       // the end marker: varints records, threads
constexpr uint32_t kMaxPayloadBytes = 64u << 20;  // readers reject anything larger as corrupt

// Every record has a sequence number: 1, 2, 3... process-wide, in the order the calls were
// made (a free is numbered before its block is released, so that no allocation of the same
// address by another thread comes first; an allocation once it has its block). A block's id is
// the sequence number of the call that allocated it.
//
// Op byte: the operation in the low 5 bits, and flags: kNullResult, the call returned NULL (an
// allocation failed; realloc to size 0 freed its block); kSeqIsNext, the sequence number is the
// thread's previous one plus 1 (no seq varint); kSameTime, the time (microseconds since the
// start) did not change (no time varint). In a single-threaded program both hold for most
// calls, so a malloc record is usually 2 bytes.
constexpr uint8_t kNullResult = 0x20, kSeqIsNext = 0x40, kSameTime = 0x80, kOpMask = 0x1f;

// Fields, always in the order ref, count, size, alignment; which ones an op has is given by
// the op_has_* functions below. size, count and alignment are as the program passed them.
// ref, a block handed in: 0 = NULL, 1 = unknown to the tracer (allocated while it was not
// recording), else 2 + (this record's seq - the block's id). realloc ends block `ref` and,
// unless it returned NULL, starts a new block (a new id even when the address stayed).
enum Op : uint8_t {
  kMalloc = 1,         // size
  kCalloc = 2,         // count, size
  kRealloc = 3,        // ref, size
  kReallocarray = 4,   // ref, count, size
  kFree = 5,           // ref (also cfree)
  kPosixMemalign = 6,  // size, alignment
  kAlignedAlloc = 7,   // size, alignment
  kMemalign = 8,       // size, alignment
  kValloc = 9,         // size
  kPvalloc = 10,       // size
  kUsableSize = 11,    // ref
  kNew = 16,           // | kArrayBit | kNothrowBit | kAlignedBit: size, [alignment]
  kDelete = 24,        // | kArrayBit | kSizedBit | kAlignedBit: ref, [size], [alignment]
  kOpLimit = 32,
};
constexpr uint8_t kArrayBit = 1, kNothrowBit = 2, kSizedBit = 2, kAlignedBit = 4;

inline const char* op_name(unsigned op) {
  static const char* const names[kOpLimit] = {nullptr,
                                              "malloc",
                                              "calloc",
                                              "realloc",
                                              "reallocarray",
                                              "free",
                                              "posix_memalign",
                                              "aligned_alloc",
                                              "memalign",
                                              "valloc",
                                              "pvalloc",
                                              "malloc_usable_size",
                                              nullptr,
                                              nullptr,
                                              nullptr,
                                              nullptr,
                                              "new",
                                              "new[]",
                                              "new(nothrow)",
                                              "new[](nothrow)",
                                              "new(align)",
                                              "new[](align)",
                                              "new(align,nothrow)",
                                              "new[](align,nothrow)",
                                              "delete",
                                              "delete[]",
                                              "delete(sized)",
                                              "delete[](sized)",
                                              "delete(align)",
                                              "delete[](align)",
                                              "delete(sized,align)",
                                              "delete[](sized,align)"};
  return op < kOpLimit ? names[op] : nullptr;
}

// What each op carries and does, for writers and readers alike.
inline bool op_valid(unsigned op) { return op_name(op) != nullptr; }
inline bool op_allocates(unsigned op) {  // starts a block unless kNullResult
  return op == kMalloc || op == kCalloc || op == kRealloc || op == kReallocarray ||
         (op >= kPosixMemalign && op <= kPvalloc) || (op >= kNew && op < kDelete);
}
inline bool op_has_ref(unsigned op) {
  return op == kRealloc || op == kReallocarray || op == kFree || op == kUsableSize || op >= kDelete;
}
inline bool op_has_count(unsigned op) { return op == kCalloc || op == kReallocarray; }
inline bool op_has_size(unsigned op) {
  return (op != kFree && op != kUsableSize && op < kDelete) ||
         (op >= kDelete && (op & kSizedBit) != 0);
}
inline bool op_has_alignment(unsigned op) {
  return (op >= kPosixMemalign && op <= kMemalign) || (op >= kNew && (op & kAlignedBit) != 0);
}

// LEB128: 7 bits per byte, low first; at most 10 bytes for 64 bits.
constexpr size_t kMaxVarintBytes = 10;
inline uint8_t* put_varint(uint8_t* out, uint64_t value) {
  while (value >= 0x80) {
    *out++ = static_cast<uint8_t>(value | 0x80);
    value >>= 7;
  }
  *out++ = static_cast<uint8_t>(value);
  return out;
}
// Returns the position after the varint, or nullptr if it runs past `end` or over 64 bits.
inline const uint8_t* get_varint(const uint8_t* in, const uint8_t* end, uint64_t* value) {
  uint64_t result = 0;
  for (unsigned shift = 0; in < end && shift < 64; shift += 7) {
    uint8_t byte = *in++;
    if (shift == 63 && byte > 1) return nullptr;
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *value = result;
      return in;
    }
  }
  return nullptr;
}
// The chunk checksum: a multiply-xor hash of the payload read as little-endian 64-bit words
// (the last one zero-padded), folded to 32 bits. Eight bytes per multiply, so that sealing a
// chunk costs the tracer next to nothing; it catches corruption that still decodes.
inline uint32_t checksum(const uint8_t* data, size_t bytes) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ bytes;
  auto mix = [&h](uint64_t word) {
    h = (h ^ word) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  };
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {  // (the compiler makes this one load on little-endian CPUs)
    const uint8_t* p = data + i;
    mix(uint64_t{p[0]} | uint64_t{p[1]} << 8 | uint64_t{p[2]} << 16 | uint64_t{p[3]} << 24 |
        uint64_t{p[4]} << 32 | uint64_t{p[5]} << 40 | uint64_t{p[6]} << 48 | uint64_t{p[7]} << 56);
  }
  if (i < bytes) {
    uint64_t word = 0;
    for (size_t k = 0; i + k < bytes; ++k) word |= uint64_t{data[i + k]} << (8 * k);
    mix(word);
  }
  return static_cast<uint32_t>(h ^ (h >> 32));
}

inline void put_u16(uint8_t* out, uint16_t v) {
  for (int i = 0; i < 2; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void put_u32(uint8_t* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void put_u64(uint8_t* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint64_t get_le(const uint8_t* in, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | in[i];
  return v;
}

// The writer's side: the file header, with the program name already at out +
// kHeaderFixedBytes (returns the header's size), and a chunk's header in front of its payload.
inline size_t put_header(uint8_t* out, uint32_t pid, uint64_t unix_ns, uint32_t flags,
                         size_t name_bytes) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(kMagic[i]);
  put_u16(out + 8, kVersion);
  put_u16(out + 10, static_cast<uint16_t>(kHeaderFixedBytes + name_bytes));
  put_u32(out + 12, pid);
  put_u64(out + 16, unix_ns);
  put_u32(out + 24, flags);
  put_u32(out + 28, static_cast<uint32_t>(name_bytes));
  return kHeaderFixedBytes + name_bytes;
}
inline void put_chunk_header(uint8_t* chunk, uint32_t thread, size_t payload, uint32_t records,
                             uint64_t base_seq, uint64_t base_time) {
  put_u32(chunk, kChunkMagic);
  put_u32(chunk + kChunkThread, thread);
  put_u32(chunk + kChunkPayload, static_cast<uint32_t>(payload));
  put_u32(chunk + kChunkRecords, records);
  put_u64(chunk + kChunkBaseSeq, base_seq);
  put_u64(chunk + kChunkBaseTime, base_time);
  put_u32(chunk + kChunkChecksum, checksum(chunk + kChunkHeaderBytes, payload));
  put_u32(chunk + kChunkChecksum + 4, 0);
}

}  // namespace mapalloc::trace
