// Reading mapalloc allocation traces (format: src/trace/trace.h), for build/replay and
// build/trace-info. Every problem in a file -- truncation, a wrong magic or version, a record
// that does not decode, a checksum mismatch -- is a TraceError carrying the byte offset where it
// was found; nothing in a trace can make a reader read out of bounds.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "trace/trace.h"

namespace tracefile {

namespace tr = mapalloc::trace;

struct TraceError : std::runtime_error {
  uint64_t offset;
  TraceError(uint64_t at, const std::string& what)
      : std::runtime_error("byte " + std::to_string(at) + ": " + what), offset(at) {}
};

struct Header {
  unsigned version = 0;
  uint32_t pid = 0;
  uint64_t start_unix_ns = 0;
  uint32_t flags = 0;
  std::string program;
  uint64_t bytes = 0;  // header size: the first chunk's offset
};

struct Chunk {
  uint64_t offset = 0;  // of the chunk header in the file
  uint32_t thread = 0, payload = 0, records = 0, checksum = 0;
  uint64_t base_seq = 0, base_time = 0;
};

struct EndMarker {  // written at a normal exit
  bool present = false;
  uint64_t records = 0, threads = 0;
};

constexpr uint64_t kUnknownBlock = ~uint64_t{0};
// Sequence numbers (and so block ids) beyond this are corrupt: a tracer would take centuries to
// get there. Keeps ids clear of kUnknownBlock, and every id + 1 from overflowing.
constexpr uint64_t kMaxSeq = uint64_t{1} << 48;

struct Record {
  unsigned op = 0;
  uint64_t seq = 0, time_us = 0;
  uint64_t ref = 0;  // the block handed in: 0 = NULL, kUnknownBlock, else its id
  uint64_t count = 0, size = 0, alignment = 0;
  uint64_t result = 0;  // the new block's id (= seq); 0: NULL (failed, or realloc freed)
  uint64_t offset = 0;  // of the record in the file
};

// Bytes the call asked for (calloc and reallocarray: count * size, saturated).
inline uint64_t requested_bytes(const Record& r) {
  if (!tr::op_has_count(r.op)) return r.size;
  uint64_t total;
  return __builtin_mul_overflow(r.count, r.size, &total) ? ~uint64_t{0} : total;
}

// Whether the record ends its `ref` block: free, delete, and realloc unless it failed (a
// failed realloc returns NULL for a size above 0 and leaves the block as it was).
inline bool ends_ref(const Record& r) {
  if (r.ref == 0 || r.ref == kUnknownBlock || r.op == tr::kUsableSize) return false;
  if (r.op == tr::kRealloc || r.op == tr::kReallocarray) {
    return r.result != 0 || requested_bytes(r) == 0;
  }
  return true;
}

// Decodes one chunk's payload, record by record.
class ChunkDecoder {
 public:
  ChunkDecoder(const Chunk& chunk, const uint8_t* payload)
      : chunk_(chunk),
        at_(payload),
        begin_(payload),
        end_(payload + chunk.payload),
        seq_(chunk.base_seq),
        time_(chunk.base_time) {}

  // The next record into `r`; false after the last one.
  bool next(Record& r) {
    if (at_ == end_) {
      if (decoded_ != chunk_.records) fail(at_, "the chunk holds fewer records than announced");
      return false;
    }
    if (decoded_ == chunk_.records) fail(at_, "the chunk holds more records than announced");
    const uint8_t* start = at_;
    uint8_t op_byte = *at_++;
    r = Record();
    r.offset = offset_of(start);
    r.op = op_byte & tr::kOpMask;
    if (!tr::op_valid(r.op)) fail(start, "unknown operation code " + std::to_string(r.op));
    uint64_t delta = 1;
    if (!(op_byte & tr::kSeqIsNext) && (delta = varint()) == 0) fail(start, "sequence went back");
    if (seq_ > kMaxSeq || delta > kMaxSeq - seq_) fail(start, "sequence number out of range");
    seq_ += delta;
    if (!(op_byte & tr::kSameTime)) time_ += varint();
    r.seq = seq_;
    r.time_us = time_;
    if (tr::op_has_ref(r.op)) {
      uint64_t code = varint();
      if (code == 0) {
        r.ref = 0;
      } else if (code == 1) {
        r.ref = kUnknownBlock;
      } else if (code - 2 >= seq_) {
        fail(start, "refers to a block allocated before the first call");
      } else {
        r.ref = seq_ - (code - 2);
      }
    }
    if (tr::op_has_count(r.op)) r.count = varint();
    if (tr::op_has_size(r.op)) r.size = varint();
    if (tr::op_has_alignment(r.op)) r.alignment = varint();
    if (op_byte & tr::kNullResult) {
      if (!tr::op_allocates(r.op)) fail(start, "a NULL result for a call that returns none");
    } else if (tr::op_allocates(r.op)) {
      r.result = seq_;
    }
    ++decoded_;
    return true;
  }

 private:
  uint64_t offset_of(const uint8_t* p) const {
    return chunk_.offset + tr::kChunkHeaderBytes + static_cast<uint64_t>(p - begin_);
  }
  [[noreturn]] void fail(const uint8_t* p, const std::string& why) const {
    throw TraceError(offset_of(p), "corrupted record (in the chunk of thread " +
                                       std::to_string(chunk_.thread) + " that starts at byte " +
                                       std::to_string(chunk_.offset) + "): " + why);
  }
  uint64_t varint() {
    uint64_t value;
    const uint8_t* after = tr::get_varint(at_, end_, &value);
    if (after == nullptr) fail(at_, "a number runs past the end of the chunk or over 64 bits");
    at_ = after;
    return value;
  }

  Chunk chunk_;
  const uint8_t* at_;
  const uint8_t* begin_;
  const uint8_t* end_;
  uint64_t seq_, time_;
  uint32_t decoded_ = 0;
};

class TraceReader {
 public:
  explicit TraceReader(const std::string& path) : path_(path) {
    fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat info;
    if (fd_ < 0 || fstat(fd_, &info) != 0) {
      throw std::runtime_error("cannot open: " + std::string(strerror(errno)));
    }
    size_ = static_cast<uint64_t>(info.st_size);
    read_header();
  }
  ~TraceReader() {
    if (fd_ >= 0) close(fd_);
  }
  TraceReader(const TraceReader&) = delete;
  TraceReader& operator=(const TraceReader&) = delete;

  const Header& header() const { return header_; }
  const EndMarker& end_marker() const { return end_; }
  uint64_t file_bytes() const { return size_; }
  // Block ids a genuine trace of this size can hold: every record takes 2 bytes or more, and a
  // crash loses at most one buffer (256 KiB) per thread; 2^31 covers 16,384 of them.
  uint64_t max_plausible_id() const { return size_ / 2 + (uint64_t{1} << 31); }

  // Walks every chunk in file order, checking each one whole (structure, record count,
  // checksum, per-thread order), and calls visit(chunk, payload) for thread chunks. Throws
  // TraceError at the first problem.
  template <class Visit>
  void scan(Visit&& visit) {
    std::vector<uint8_t> payload;
    std::unordered_map<uint32_t, uint64_t> last_seq;  // per thread (indices may be sparse)
    for (uint64_t at = header_.bytes; at < size_;) {
      Chunk chunk = read_chunk_header(at);
      read_payload(chunk, payload);
      if (chunk.thread == tr::kEndThread) {
        read_end_marker(chunk, payload);
      } else {
        if (chunk.thread >= (1u << 24)) throw TraceError(at + 4, "corrupted: thread index too big");
        uint64_t& last = last_seq[chunk.thread];
        ChunkDecoder decoder(chunk, payload.data());
        Record record;
        while (decoder.next(record)) {  // a thread's records are in the order it made them
          if (record.seq <= last)
            throw TraceError(record.offset, "corrupted: sequence number out of order");
          last = record.seq;
        }
        check_sum(chunk, payload);
        visit(chunk, payload);
      }
      at += tr::kChunkHeaderBytes + chunk.payload;
    }
  }

  // The chunk's payload, as scan() saw it (a reader that decodes it again relies on that).
  void read_payload(const Chunk& chunk, std::vector<uint8_t>& out) const {
    out.resize(chunk.payload);
    read_exact(out.data(), chunk.payload, chunk.offset + tr::kChunkHeaderBytes);
  }
  void check_sum(const Chunk& chunk, const std::vector<uint8_t>& payload) const {
    if (tr::checksum(payload.data(), payload.size()) != chunk.checksum) {
      throw TraceError(chunk.offset, "corrupted: checksum mismatch in the chunk of thread " +
                                         std::to_string(chunk.thread));
    }
  }

 private:
  void read_exact(void* out, uint64_t bytes, uint64_t at) const {
    if (at + bytes > size_) {
      throw TraceError(at, "truncated: " + std::to_string(bytes) + " bytes needed here, the file " +
                               "ends at byte " + std::to_string(size_));
    }
    for (uint64_t done = 0; done < bytes;) {
      ssize_t got = pread(fd_, static_cast<uint8_t*>(out) + done, bytes - done,
                          static_cast<off_t>(at + done));
      if (got <= 0) throw TraceError(at + done, "read error: " + std::string(strerror(errno)));
      done += static_cast<uint64_t>(got);
    }
  }

  void read_header() {
    uint8_t fixed[tr::kHeaderFixedBytes] = {};
    if (size_ >= 8) read_exact(fixed, 8, 0);
    if (memcmp(fixed, tr::kMagic, 8) != 0) {
      throw TraceError(0, "not a mapalloc trace (no MAPTRACE magic at the start)");
    }
    read_exact(fixed, sizeof(fixed), 0);
    header_.version = static_cast<unsigned>(tr::get_le(fixed + 8, 2));
    if (header_.version != tr::kVersion) {
      throw TraceError(8, "unsupported trace version " + std::to_string(header_.version) +
                              " (this build reads version " + std::to_string(tr::kVersion) + ")");
    }
    header_.bytes = tr::get_le(fixed + 10, 2);
    header_.pid = static_cast<uint32_t>(tr::get_le(fixed + 12, 4));
    header_.start_unix_ns = tr::get_le(fixed + 16, 8);
    header_.flags = static_cast<uint32_t>(tr::get_le(fixed + 24, 4));
    uint64_t name_bytes = tr::get_le(fixed + 28, 4);
    if (name_bytes > tr::kMaxProgramBytes || header_.bytes != tr::kHeaderFixedBytes + name_bytes) {
      throw TraceError(10, "corrupted header (sizes do not agree)");
    }
    header_.program.resize(name_bytes);
    read_exact(&header_.program[0], name_bytes, tr::kHeaderFixedBytes);
  }

  Chunk read_chunk_header(uint64_t at) const {
    uint8_t raw[tr::kChunkHeaderBytes];
    if (size_ - at < tr::kChunkHeaderBytes) {
      throw TraceError(at, "truncated: the file ends inside a chunk header (" +
                               std::to_string(size_ - at) + " of " +
                               std::to_string(tr::kChunkHeaderBytes) + " bytes)");
    }
    read_exact(raw, sizeof(raw), at);
    if (tr::get_le(raw, 4) != tr::kChunkMagic) {
      throw TraceError(at, "corrupted: no chunk starts here (bad chunk magic)");
    }
    Chunk chunk;
    chunk.offset = at;
    chunk.thread = static_cast<uint32_t>(tr::get_le(raw + tr::kChunkThread, 4));
    chunk.payload = static_cast<uint32_t>(tr::get_le(raw + tr::kChunkPayload, 4));
    chunk.records = static_cast<uint32_t>(tr::get_le(raw + tr::kChunkRecords, 4));
    chunk.base_seq = tr::get_le(raw + tr::kChunkBaseSeq, 8);
    chunk.base_time = tr::get_le(raw + tr::kChunkBaseTime, 8);
    chunk.checksum = static_cast<uint32_t>(tr::get_le(raw + tr::kChunkChecksum, 4));
    if (chunk.payload > tr::kMaxPayloadBytes || chunk.records > chunk.payload) {
      throw TraceError(at + tr::kChunkPayload, "corrupted: impossible chunk size");
    }
    if (at + tr::kChunkHeaderBytes + chunk.payload > size_) {
      throw TraceError(at, "truncated: the chunk here needs " +
                               std::to_string(tr::kChunkHeaderBytes + chunk.payload) +
                               " bytes, the file ends at byte " + std::to_string(size_));
    }
    return chunk;
  }

  void read_end_marker(const Chunk& chunk, const std::vector<uint8_t>& payload) {
    check_sum(chunk, payload);
    const uint8_t* at = payload.data();
    const uint8_t* end = at + payload.size();
    uint64_t* fields[2] = {&end_.records, &end_.threads};
    for (uint64_t* field : fields) {
      if ((at = tr::get_varint(at, end, field)) == nullptr) {
        throw TraceError(chunk.offset, "corrupted end marker");
      }
    }
    end_.present = true;
  }

  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  Header header_;
  EndMarker end_;
};

}  // namespace tracefile
