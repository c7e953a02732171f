// build/trace-info: the statistics of a mapalloc trace, as JSON on stdout, for
// `mapalloc trace-info` (scripts/mapalloc_trace.py), which renders them as text and a chart.
//
//   trace-info TRACE
//
// The records of all threads are merged in their global order (the sequence numbers), so that
// the live-memory peak and block lifetimes are those the program went through. Lifetimes are
// counted in allocations: how many blocks were allocated, by any thread, between a block's
// allocation and its free. Exit status 2, with the byte offset, for a bad trace.
#include <cstdio>
#include <map>
#include <memory>
#include <queue>
#include <unordered_map>

#include "trace_reader.h"

using namespace tracefile;

namespace {

struct OpStats {
  uint64_t calls = 0, failed = 0, bytes = 0;
};
struct ThreadStats {
  uint64_t calls = 0, allocations = 0, frees = 0, bytes = 0;
};
struct Block {
  uint64_t size = 0;
  uint64_t birth = 0;  // allocations so far when it was made
};

// Power-of-two buckets. Sizes: 0, 1, 2, 3-4, 5-8, ... (bucket b > 0 ends at 2^(b-1)).
// Lifetimes: 0, 1, 2-3, 4-7, ... (bucket b > 0 starts at 2^(b-1)).
unsigned size_bucket(uint64_t size) {
  return size <= 1 ? unsigned(size) : 65 - __builtin_clzll(size - 1);
}
unsigned lifetime_bucket(uint64_t n) { return n == 0 ? 0 : 64 - __builtin_clzll(n); }

struct Stats {
  OpStats ops[tr::kOpLimit];
  std::map<uint32_t, ThreadStats> threads;
  std::unordered_map<uint64_t, Block> blocks;  // the live ones, by id (ids may be sparse)
  uint64_t size_histogram[66] = {}, lifetime_histogram[65] = {};
  uint64_t calls = 0, allocations = 0, allocated_bytes = 0, frees = 0, unknown_refs = 0;
  uint64_t live_bytes = 0, live_blocks = 0, peak_bytes = 0, peak_blocks = 0, peak_seq = 0;
  uint64_t last_time_us = 0;

  void add(uint32_t thread, const Record& r) {
    ++calls;
    ++ops[r.op].calls;
    ThreadStats& t = threads[thread];
    ++t.calls;
    if (r.time_us > last_time_us) last_time_us = r.time_us;
    if (r.ref == kUnknownBlock) ++unknown_refs;
    if (ends_ref(r)) {  // first: a realloc's new block is not part of the old one's life
      auto block = blocks.find(r.ref);
      if (block == blocks.end()) {
        ++unknown_refs;  // (its allocation was not recorded)
      } else {
        ++frees, ++t.frees;
        ++lifetime_histogram[lifetime_bucket(allocations - block->second.birth)];
        live_bytes -= block->second.size;
        --live_blocks;
        blocks.erase(block);
      }
    }
    if (!tr::op_allocates(r.op)) return;
    if (r.result == 0) {
      if (!ends_ref(r)) ++ops[r.op].failed;
      return;
    }
    uint64_t size = requested_bytes(r);
    if (!blocks.emplace(r.result, Block{size, allocations + 1}).second) {
      throw TraceError(r.offset,
                       "corrupted: block " + std::to_string(r.result) + " is allocated twice");
    }
    ++allocations, ++t.allocations;
    allocated_bytes += size, t.bytes += size, ops[r.op].bytes += size;
    ++size_histogram[size_bucket(size)];
    live_bytes += size;
    ++live_blocks;
    if (live_bytes > peak_bytes) peak_bytes = live_bytes, peak_seq = r.seq;
    if (live_blocks > peak_blocks) peak_blocks = live_blocks;
  }
};

// One thread's records, chunk after chunk.
struct Cursor {
  uint32_t thread = 0;
  const std::vector<Chunk>* chunks = nullptr;
  size_t next_chunk = 0;
  std::vector<uint8_t> payload;
  std::unique_ptr<ChunkDecoder> decoder;
  Record record;

  bool advance(const TraceReader& reader) {
    while (!decoder || !decoder->next(record)) {
      if (next_chunk == chunks->size()) return false;
      const Chunk& chunk = (*chunks)[next_chunk++];
      reader.read_payload(chunk, payload);
      decoder = std::make_unique<ChunkDecoder>(chunk, payload.data());
    }
    return true;
  }
};

void merge(const TraceReader& reader, const std::map<uint32_t, std::vector<Chunk>>& per_thread,
           Stats& stats) {
  std::vector<Cursor> cursors(per_thread.size());
  using Entry = std::pair<uint64_t, size_t>;  // (seq, cursor)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> next;
  size_t i = 0;
  for (const auto& [thread, chunks] : per_thread) {
    cursors[i].thread = thread;
    cursors[i].chunks = &chunks;
    if (cursors[i].advance(reader)) next.push({cursors[i].record.seq, i});
    ++i;
  }
  while (!next.empty()) {
    size_t i = next.top().second;
    next.pop();
    stats.add(cursors[i].thread, cursors[i].record);
    if (cursors[i].advance(reader)) next.push({cursors[i].record.seq, i});
  }
}

void print_string(const std::string& text) {
  putchar('"');
  for (unsigned char c : text) {
    if (c == '"' || c == '\\')
      printf("\\%c", c);
    else if (c < 0x20)
      printf("\\u%04x", c);
    else
      putchar(c);
  }
  putchar('"');
}

template <size_t N>
void print_histogram(const char* name, const uint64_t (&counts)[N], bool sizes) {
  printf(",\n \"%s\": [", name);
  bool first = true;
  for (unsigned b = 0; b < N; ++b) {
    if (counts[b] == 0) continue;
    uint64_t low, high;
    if (sizes) {
      low = b <= 2 ? b : (uint64_t{1} << (b - 2)) + 1;
      high = b == 0 ? 0 : b == 65 ? ~uint64_t{0} : uint64_t{1} << (b - 1);
    } else {
      low = b == 0 ? 0 : uint64_t{1} << (b - 1);
      high = b == 0 ? 0 : (uint64_t{1} << (b - 1)) * 2 - 1;
    }
    printf("%s{\"min\": %llu, \"max\": %llu, \"count\": %llu}", first ? "" : ", ",
           static_cast<unsigned long long>(low), static_cast<unsigned long long>(high),
           static_cast<unsigned long long>(counts[b]));
    first = false;
  }
  printf("]");
}

void print_json(const char* path, const TraceReader& reader, size_t chunks, const Stats& s) {
  using ull = unsigned long long;
  const Header& h = reader.header();
  const EndMarker& end = reader.end_marker();
  printf("{\"file\": ");
  print_string(path);
  printf(", \"file_bytes\": %llu, \"version\": %u, \"pid\": %u, \"program\": ",
         ull(reader.file_bytes()), h.version, h.pid);
  print_string(h.program);
  printf(",\n \"start_unix_ns\": %llu, \"child_process\": %s, \"complete\": %s, \"chunks\": %zu",
         ull(h.start_unix_ns), h.flags & tr::kFlagChildProcess ? "true" : "false",
         end.present ? "true" : "false", chunks);
  if (end.present) {
    printf(", \"end_marker\": {\"records\": %llu, \"threads\": %llu}", ull(end.records),
           ull(end.threads));
  }
  printf(
      ",\n \"calls\": %llu, \"duration_us\": %llu, \"allocations\": %llu, \"allocated_bytes\": "
      "%llu",
      ull(s.calls), ull(s.last_time_us), ull(s.allocations), ull(s.allocated_bytes));
  printf(
      ", \"frees\": %llu, \"unknown_refs\": %llu,\n \"peak_live_bytes\": %llu, "
      "\"peak_live_blocks\": %llu, \"peak_at_call\": %llu, \"live_at_end_bytes\": %llu, "
      "\"live_at_end_blocks\": %llu",
      ull(s.frees), ull(s.unknown_refs), ull(s.peak_bytes), ull(s.peak_blocks), ull(s.peak_seq),
      ull(s.live_bytes), ull(s.live_blocks));
  printf(",\n \"ops\": [");
  bool first = true;
  for (unsigned op = 0; op < tr::kOpLimit; ++op) {
    if (s.ops[op].calls == 0) continue;
    printf("%s\n  {\"op\": \"%s\", \"calls\": %llu, \"failed\": %llu, \"bytes\": %llu}",
           first ? "" : ",", tr::op_name(op), ull(s.ops[op].calls), ull(s.ops[op].failed),
           ull(s.ops[op].bytes));
    first = false;
  }
  printf("],\n \"threads\": [");
  first = true;
  for (const auto& [t, th] : s.threads) {
    printf(
        "%s\n  {\"thread\": %u, \"calls\": %llu, \"allocations\": %llu, \"frees\": %llu, "
        "\"bytes\": %llu}",
        first ? "" : ",", t, ull(th.calls), ull(th.allocations), ull(th.frees), ull(th.bytes));
    first = false;
  }
  printf("]");
  print_histogram("size_histogram", s.size_histogram, true);
  print_histogram("lifetime_histogram", s.lifetime_histogram, false);
  printf(",\n \"never_freed\": %llu}\n", ull(s.live_blocks));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || argv[1][0] == '-') {
    fprintf(stderr, "usage: trace-info TRACE   (statistics as JSON; see `mapalloc trace-info`)\n");
    return 2;
  }
  try {
    TraceReader reader(argv[1]);
    std::map<uint32_t, std::vector<Chunk>> per_thread;
    size_t chunks = 0;
    reader.scan([&](const Chunk& chunk, const std::vector<uint8_t>&) {
      per_thread[chunk.thread].push_back(chunk);
      ++chunks;
    });
    Stats stats;
    merge(reader, per_thread, stats);
    print_json(argv[1], reader, chunks, stats);
    return 0;
  } catch (const std::exception& e) {
    fprintf(stderr, "trace-info: %s: %s\n", argv[1], e.what());
    return 2;
  }
}
