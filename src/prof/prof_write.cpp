// The profile files: pprof's protobuf (profile.proto), gzipped with stored deflate blocks and
// CRC-32 (no zlib), and folded stacks. All buffers are mapped directly; nothing here mallocs.
#include <string.h>

#include "platform/os.h"
#include "platform/process.h"
#include "platform/prof_os.h"
#include "prof/prof.h"

namespace mapalloc {

namespace {

// A growable byte buffer in its own mapping.
class Buffer {
 public:
  ~Buffer() {
    if (data_ != nullptr) os_unmap(data_, capacity_);
  }
  bool ok() const { return !failed_; }
  const char* data() const { return data_; }
  size_t size() const { return size_; }
  void clear() { size_ = 0; }
  void put(const void* bytes, size_t length) {
    if (!reserve(length)) return;
    memcpy(data_ + size_, bytes, length);
    size_ += length;
  }
  void byte(uint8_t value) { put(&value, 1); }
  void text(const char* string) { put(string, strlen(string)); }
  void hex(uint64_t value) {
    char digits[19] = "0x";
    int n = 0;
    char reversed[16];
    do {
      reversed[n++] = "0123456789abcdef"[value & 15];
      value >>= 4;
    } while (value != 0);
    for (int i = 0; i < n; ++i) digits[2 + i] = reversed[n - 1 - i];
    put(digits, 2 + n);
  }
  void decimal(uint64_t value) {
    char reversed[20];
    int n = 0;
    do {
      reversed[n++] = static_cast<char>('0' + value % 10);
      value /= 10;
    } while (value != 0);
    while (n > 0) byte(static_cast<uint8_t>(reversed[--n]));
  }
  // protobuf
  void varint(uint64_t value) {
    while (value >= 0x80) {
      byte(static_cast<uint8_t>(value | 0x80));
      value >>= 7;
    }
    byte(static_cast<uint8_t>(value));
  }
  void tag(unsigned field, unsigned wire) { varint(field << 3 | wire); }
  void field_varint(unsigned field, uint64_t value) {
    tag(field, 0);
    varint(value);
  }
  void field_bytes(unsigned field, const void* bytes, size_t length) {
    tag(field, 2);
    varint(length);
    put(bytes, length);
  }
  void field_message(unsigned field, const Buffer& message) {
    field_bytes(field, message.data(), message.size());
  }

 private:
  bool reserve(size_t more) {
    if (failed_) return false;
    if (size_ + more <= capacity_) return true;
    size_t capacity = capacity_ == 0 ? 64 * kKiB : capacity_;
    while (capacity < size_ + more) capacity *= 2;
    char* bigger = static_cast<char*>(os_map_aligned(capacity, kOsPageBytes));
    if (bigger == nullptr) {
      failed_ = true;
      return false;
    }
    if (data_ != nullptr) {
      memcpy(bigger, data_, size_);
      os_unmap(data_, capacity_);
    }
    data_ = bigger;
    capacity_ = capacity;
    return true;
  }
  char* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
  bool failed_ = false;
};

// ---- gzip (RFC 1952) of stored deflate blocks (RFC 1951, BTYPE 00) ------------------------------

uint32_t crc32_update(uint32_t crc, const uint8_t* data, size_t length) {
  static uint32_t table[256];
  static bool table_ready = false;
  if (!table_ready) {
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
      table[n] = c;
    }
    table_ready = true;
  }
  crc = ~crc;
  for (size_t i = 0; i < length; ++i) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void gzip_stored(const Buffer& input, Buffer& output) {
  static const uint8_t header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
  output.put(header, sizeof header);
  const auto* data = reinterpret_cast<const uint8_t*>(input.data());
  size_t left = input.size(), at = 0;
  do {
    size_t length = left < 65535 ? left : 65535;
    output.byte(length == left ? 1 : 0);  // BFINAL, BTYPE 00
    uint8_t sizes[4] = {static_cast<uint8_t>(length), static_cast<uint8_t>(length >> 8),
                        static_cast<uint8_t>(~length), static_cast<uint8_t>(~length >> 8)};
    output.put(sizes, 4);
    output.put(data + at, length);
    at += length;
    left -= length;
  } while (left > 0);
  uint32_t crc = crc32_update(0, data, input.size());
  uint32_t size = static_cast<uint32_t>(input.size());
  uint8_t trailer[8] = {static_cast<uint8_t>(crc),        static_cast<uint8_t>(crc >> 8),
                        static_cast<uint8_t>(crc >> 16),  static_cast<uint8_t>(crc >> 24),
                        static_cast<uint8_t>(size),       static_cast<uint8_t>(size >> 8),
                        static_cast<uint8_t>(size >> 16), static_cast<uint8_t>(size >> 24)};
  output.put(trailer, 8);
}

// ---- the process's executable mappings (/proc/self/maps) ----------------------------------------

struct Mapping {
  uintptr_t start, limit, offset;
  const char* path;  // into the maps text
  size_t path_length;
};
constexpr unsigned kMaxMappings = 1024;

uintptr_t parse_hex(const char*& at) {
  uintptr_t value = 0;
  for (;; ++at) {
    char c = *at;
    if (c >= '0' && c <= '9')
      value = value * 16 + static_cast<uintptr_t>(c - '0');
    else if (c >= 'a' && c <= 'f')
      value = value * 16 + static_cast<uintptr_t>(c - 'a' + 10);
    else
      return value;
  }
}

// Parses the executable mappings of files out of `text`; returns how many.
unsigned parse_maps(const char* text, size_t length, Mapping* mappings) {
  unsigned count = 0;
  const char* end = text + length;
  for (const char* line = text; line < end && count < kMaxMappings;) {
    const char* eol = static_cast<const char*>(memchr(line, '\n', static_cast<size_t>(end - line)));
    if (eol == nullptr) eol = end;
    const char* at = line;
    Mapping m;
    m.start = parse_hex(at);
    ++at;  // '-'
    m.limit = parse_hex(at);
    ++at;  // ' '
    bool executable = at + 4 <= eol && at[2] == 'x';
    at += 5;
    m.offset = parse_hex(at);
    // device, inode, then spaces and the path
    for (int fields = 0; fields < 2 && at < eol; ++fields) {
      while (at < eol && *at == ' ') ++at;
      while (at < eol && *at != ' ') ++at;
    }
    while (at < eol && *at == ' ') ++at;
    m.path = at;
    m.path_length = static_cast<size_t>(eol - at);
    if (executable && m.path_length > 0 && *m.path == '/') mappings[count++] = m;
    line = eol + 1;
  }
  return count;
}

// ---- pprof
// ---------------------------------------------------------------------------------------

// String table indexes (profile.proto: entry 0 is "").
enum : unsigned {
  kEmpty,
  kAllocObjects,
  kCount,
  kAllocSpace,
  kBytes,
  kInuseObjects,
  kInuseSpace,
  kSpace,
  kInherited,
  kFixedStrings
};
const char* const kFixed[kFixedStrings] = {
    "",      "alloc_objects", "count", "alloc_space", "bytes", "inuse_objects", "inuse_space",
    "space", "inherited"};

int64_t rounded(double value) { return value <= 0 ? 0 : static_cast<int64_t>(value + 0.5); }

// Address -> location id, an open-addressing table mapped for one dump.
class LocationIds {
 public:
  explicit LocationIds(size_t slots) : slots_(slots) {
    bytes_ = align_up(slots * sizeof(uintptr_t) * 2, kOsPageBytes);
    table_ = static_cast<uintptr_t*>(os_map_aligned(bytes_, kOsPageBytes));
  }
  ~LocationIds() {
    if (table_ != nullptr) os_unmap(table_, bytes_);
  }
  bool ok() const { return table_ != nullptr; }
  // The id of `address` (1, 2, ...); *is_new says whether it was just given.
  uint64_t id(uintptr_t address, bool* is_new) {
    size_t i = (address * 0x9e3779b97f4a7c15ULL >> 20) % slots_;
    for (;; i = (i + 1) % slots_) {
      if (table_[2 * i + 1] == 0) {
        table_[2 * i] = address;
        table_[2 * i + 1] = ++count_;
        *is_new = true;
        return count_;
      }
      if (table_[2 * i] == address) {
        *is_new = false;
        return table_[2 * i + 1];
      }
    }
  }

 private:
  size_t slots_, bytes_;
  uintptr_t* table_;
  uint64_t count_ = 0;
};

enum class View { kHeap, kPeak };

// One pprof profile of the stacks with anything to show.
bool encode_profile(const ProfView& view, View kind, const Mapping* mappings,
                    unsigned mapping_count, Buffer& out) {
  Buffer message;
  auto value_type = [&](unsigned field, unsigned type, unsigned unit) {
    message.clear();
    message.field_varint(1, type);
    message.field_varint(2, unit);
    out.field_message(field, message);
  };
  if (kind == View::kHeap) {
    value_type(1, kAllocObjects, kCount);
    value_type(1, kAllocSpace, kBytes);
  }
  value_type(1, kInuseObjects, kCount);
  value_type(1, kInuseSpace, kBytes);

  // At most half full with every frame of the view distinct. (Sized by the frames there are,
  // not by count * kProfMaxDepth: its slots are touched at random, and a small profile's table
  // then fits in a page or two instead of faulting in a page per frame.)
  size_t frames = 0;
  for (unsigned i = 0; i < view.count; ++i) frames += view.stacks[i].depth;
  LocationIds ids(2 * frames + 64);
  if (!ids.ok()) return false;
  Buffer locations;
  Buffer location;
  Buffer packed;
  auto sample = [&](const ProfStack& stack, double objects, double bytes, double alloc_objects,
                    double alloc_bytes, bool inherited) {
    message.clear();
    packed.clear();
    for (unsigned f = 0; f < stack.depth; ++f) {
      bool is_new;
      uint64_t id = ids.id(stack.frames[f], &is_new);
      packed.varint(id);
      if (is_new) {
        location.clear();
        location.field_varint(1, id);
        for (unsigned m = 0; m < mapping_count; ++m) {
          if (stack.frames[f] >= mappings[m].start && stack.frames[f] < mappings[m].limit) {
            location.field_varint(2, m + 1);
            break;
          }
        }
        location.field_varint(3, stack.frames[f]);
        locations.field_message(4, location);
      }
    }
    message.field_message(1, packed);
    packed.clear();
    if (kind == View::kHeap) {
      packed.varint(static_cast<uint64_t>(rounded(alloc_objects)));
      packed.varint(static_cast<uint64_t>(rounded(alloc_bytes)));
    }
    packed.varint(static_cast<uint64_t>(rounded(objects)));
    packed.varint(static_cast<uint64_t>(rounded(bytes)));
    message.field_message(2, packed);
    if (inherited) {
      packed.clear();
      packed.field_varint(1, kInherited);
      packed.field_varint(3, 1);
      message.field_message(3, packed);
    }
    out.field_message(2, message);
  };
  for (unsigned i = 0; i < view.count; ++i) {
    const ProfStack& stack = view.stacks[i];
    if (kind == View::kHeap) {
      if (stack.alloc_objects <= 0) continue;
      sample(stack, stack.inuse_objects - stack.inherited_objects,
             stack.inuse_bytes - stack.inherited_bytes, stack.alloc_objects, stack.alloc_bytes,
             false);
      if (stack.inherited_objects > 0.5)
        sample(stack, stack.inherited_objects, stack.inherited_bytes, 0, 0, true);
    } else {
      if (stack.peak_objects <= 0.5) continue;
      sample(stack, stack.peak_objects - stack.peak_inherited_objects,
             stack.peak_bytes - stack.peak_inherited_bytes, 0, 0, false);
      if (stack.peak_inherited_objects > 0.5)
        sample(stack, stack.peak_inherited_objects, stack.peak_inherited_bytes, 0, 0, true);
    }
  }
  for (unsigned m = 0; m < mapping_count; ++m) {
    message.clear();
    message.field_varint(1, m + 1);
    message.field_varint(2, mappings[m].start);
    message.field_varint(3, mappings[m].limit);
    message.field_varint(4, mappings[m].offset);
    message.field_varint(5, kFixedStrings + m);
    out.field_message(3, message);
  }
  out.put(locations.data(), locations.size());
  for (unsigned s = 0; s < kFixedStrings; ++s) out.field_bytes(6, kFixed[s], strlen(kFixed[s]));
  for (unsigned m = 0; m < mapping_count; ++m)
    out.field_bytes(6, mappings[m].path, mappings[m].path_length);
  out.field_varint(9, static_cast<uint64_t>(os_wall_clock_ns()));
  value_type(11, kSpace, kBytes);
  out.field_varint(12, view.interval);
  return out.ok() && locations.ok() && location.ok() && message.ok() && packed.ok();
}

// ---- folded stacks: "0xOUTER;...;0xINNER VALUE" lines, after "# map" lines --------------------

enum class Folded { kInuse, kAlloc, kPeak };

void encode_folded(const ProfView& view, Folded kind, const Mapping* mappings,
                   unsigned mapping_count, Buffer& out) {
  out.text("# mapalloc heap profile: ");
  out.text(kind == Folded::kInuse ? "inuse" : kind == Folded::kAlloc ? "alloc" : "peak");
  out.text(" bytes; interval ");
  out.decimal(view.interval);
  out.text("\n");
  for (unsigned m = 0; m < mapping_count; ++m) {
    out.text("# map ");
    out.hex(mappings[m].start);
    out.text(" ");
    out.hex(mappings[m].limit);
    out.text(" ");
    out.hex(mappings[m].offset);
    out.text(" ");
    out.put(mappings[m].path, mappings[m].path_length);
    out.text("\n");
  }
  for (unsigned i = 0; i < view.count; ++i) {
    const ProfStack& stack = view.stacks[i];
    double bytes = kind == Folded::kInuse   ? stack.inuse_bytes
                   : kind == Folded::kAlloc ? stack.alloc_bytes
                                            : stack.peak_bytes;
    int64_t value = rounded(bytes);
    if (value <= 0) continue;
    if (stack.depth == 0) out.text("[unknown]");
    for (unsigned f = stack.depth; f-- > 0;) {
      out.hex(stack.frames[f]);
      if (f != 0) out.text(";");
    }
    out.text(" ");
    out.decimal(static_cast<uint64_t>(value));
    out.text("\n");
  }
}

bool write_file(const char* path, const Buffer& content) {
  return content.ok() && os_write_whole_file(path, content.data(), content.size());
}

// PREFIX with %p replaced by the process id, then `suffix`.
void file_name(const char* prefix, const char* suffix, char* out, size_t capacity) {
  size_t n = 0;
  for (const char* c = prefix; *c != '\0' && n + 24 < capacity; ++c) {
    if (c[0] == '%' && c[1] == 'p') {
      char digits[16];
      int d = 0;
      unsigned pid = static_cast<unsigned>(os_process_id());
      do {
        digits[d++] = static_cast<char>('0' + pid % 10);
        pid /= 10;
      } while (pid != 0);
      while (d > 0) out[n++] = digits[--d];
      ++c;
    } else {
      out[n++] = *c;
    }
  }
  size_t suffix_length = strlen(suffix);
  if (n + suffix_length + 1 > capacity) suffix_length = capacity - n - 1;
  memcpy(out + n, suffix, suffix_length);
  out[n + suffix_length] = '\0';
}

}  // namespace

int prof_write_files(const ProfView& view, const char* prefix) {
  size_t maps_length = 0, maps_mapped = 0;
  char* maps = os_read_whole_file("/proc/self/maps", &maps_length, &maps_mapped);
  size_t mappings_bytes = align_up(sizeof(Mapping) * kMaxMappings, kOsPageBytes);
  auto* mappings = static_cast<Mapping*>(os_map_aligned(mappings_bytes, kOsPageBytes));
  if (mappings == nullptr) {
    if (maps != nullptr) os_unmap(maps, maps_mapped);
    return -1;
  }
  unsigned mapping_count = maps != nullptr ? parse_maps(maps, maps_length, mappings) : 0;
  bool ok = true;
  char path[512];
  for (View kind : {View::kHeap, View::kPeak}) {
    Buffer profile, gzipped;
    ok = encode_profile(view, kind, mappings, mapping_count, profile) && ok;
    gzip_stored(profile, gzipped);
    file_name(prefix, kind == View::kHeap ? ".heap.pb.gz" : ".peak.pb.gz", path, sizeof path);
    ok = write_file(path, gzipped) && ok;
  }
  for (Folded kind : {Folded::kInuse, Folded::kAlloc, Folded::kPeak}) {
    Buffer folded;
    encode_folded(view, kind, mappings, mapping_count, folded);
    file_name(prefix,
              kind == Folded::kInuse   ? ".inuse.folded"
              : kind == Folded::kAlloc ? ".alloc.folded"
                                       : ".peak.folded",
              path, sizeof path);
    ok = write_file(path, folded) && ok;
  }
  os_unmap(mappings, mappings_bytes);
  if (maps != nullptr) os_unmap(maps, maps_mapped);
  return ok ? 0 : -1;
}

}  // namespace mapalloc
