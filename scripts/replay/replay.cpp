// build/replay: re-executes the allocation calls of a mapalloc trace against whichever allocator
// serves this process (run it with LD_PRELOAD=... to pick one).
//
//   replay [--quiet | --check] TRACE     (--check: only check the trace, replay nothing)
//
// Every traced thread gets a thread of its own that makes that thread's calls in their recorded
// order. A free (or realloc) of a block another thread allocates waits until that allocation has
// been replayed, and until every malloc_usable_size of the block recorded before it (by any
// thread) has been; no other ordering is imposed, so the replay runs as fast as the allocator
// lets it. Each block gets a pattern in its first and last byte when allocated, checked when it is
// freed, reallocated (also after the copy) and, for blocks the program never freed, at the end.
//
// First the whole trace is checked (a bad trace is rejected before any call is made); the
// replay then reads each thread's chunks again as it goes, so that replay's own memory stays
// small next to the allocator's: a table of 16 bytes per block id, mapped here with mmap and
// released page by page once every block of a page is freed, plus one chunk buffer per thread.
//
// Exit status: 0 all verified; 1 a check failed or an allocation failed that had succeeded when
// recorded; 2 a bad trace or usage; 3 the trace's threads cannot make progress (inconsistent).
#include <malloc.h>
#include <sched.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "trace_reader.h"

using namespace tracefile;

namespace {

using Clock = std::chrono::steady_clock;

struct Slot {
  std::atomic<void*> pointer;  // nullptr: not allocated yet; kGone: freed (or failed)
  uint64_t size;
};
void* const kGone = reinterpret_cast<void*>(1);
constexpr size_t kPageBytes = 4096;
constexpr size_t kSlotsPerPage = kPageBytes / sizeof(Slot);
constexpr uint32_t kNever = ~uint32_t{0};  // a page holding a block that is never freed

struct Counters {
  uint64_t calls[tr::kOpLimit] = {};
  uint64_t verified = 0, mismatches = 0, misaligned = 0, replay_failures = 0;
  uint64_t failed_in_trace = 0, unknown = 0;
  void add(const Counters& o) {
    for (unsigned i = 0; i < tr::kOpLimit; ++i) calls[i] += o.calls[i];
    verified += o.verified, mismatches += o.mismatches, misaligned += o.misaligned;
    replay_failures += o.replay_failures;
    failed_in_trace += o.failed_in_trace, unknown += o.unknown;
  }
};

// ---- what pass 1 learns, shared by the replay threads ------------------------------------------
std::map<uint32_t, std::vector<Chunk>> thread_chunks;  // by thread index (may be sparse)
std::vector<uint64_t> allocated_bits;  // per block id: allocated somewhere in the trace
std::vector<uint64_t> ended_bits;      // per block id: freed somewhere in the trace
std::vector<uint64_t> used_bits;       // per block id: malloc_usable_size is called on it
// For those blocks: the malloc_usable_size calls still to be replayed. The block's end waits
// for them (another thread's call on a freed block would read freed, perhaps unmapped, memory).
std::unordered_map<uint64_t, std::atomic<uint32_t>> pending_uses;
std::vector<uint32_t> page_allocs, page_frees;
std::vector<uint32_t> page_pending;  // frees still to come before a page can go, or kNever
Slot* table = nullptr;
uint64_t table_ids = 0;
Counters trace_counts;

bool bit(const std::vector<uint64_t>& bits, uint64_t id) {
  return id < table_ids && (bits[id / 64] >> (id % 64) & 1);
}
bool allocated_in_trace(uint64_t id) { return bit(allocated_bits, id); }

// Sets the id's bit in `bits`; false if it was set already.
bool note_block(const TraceReader& reader, const Record& r, uint64_t id,
                std::vector<uint64_t>& bits) {
  if (id >= table_ids) {
    if (id > reader.max_plausible_id()) {
      throw TraceError(r.offset, "corrupted: block id " + std::to_string(id) +
                                     " is out of range for a trace of this size");
    }
    table_ids = id + 1;
    for (auto* b : {&allocated_bits, &ended_bits, &used_bits}) b->resize(table_ids / 64 + 1, 0);
    page_allocs.resize(table_ids / kSlotsPerPage + 1, 0);
    page_frees.resize(table_ids / kSlotsPerPage + 1, 0);
  }
  uint64_t& word = bits[id / 64];
  bool fresh = !(word >> (id % 64) & 1);
  word |= uint64_t{1} << (id % 64);
  return fresh;
}

void index_trace(TraceReader& reader) {
  reader.scan([&](const Chunk& chunk, const std::vector<uint8_t>& payload) {
    thread_chunks[chunk.thread].push_back(chunk);
    ChunkDecoder decoder(chunk, payload.data());
    Record r;
    while (decoder.next(r)) {
      ++trace_counts.calls[r.op];
      if (r.result != 0) {
        if (!note_block(reader, r, r.result, allocated_bits)) {
          throw TraceError(r.offset,
                           "corrupted: block " + std::to_string(r.result) + " is allocated twice");
        }
        ++page_allocs[r.result / kSlotsPerPage];
        // The tracer's allocator refuses such alignments (some others abort on them).
        bool power_of_two = r.alignment != 0 && (r.alignment & (r.alignment - 1)) == 0;
        if (tr::op_has_alignment(r.op) && r.op != tr::kMemalign && !power_of_two) {
          throw TraceError(r.offset, "corrupted: an allocation at alignment " +
                                         std::to_string(r.alignment) + " succeeded");
        }
      }
      if (ends_ref(r)) {
        if (!note_block(reader, r, r.ref, ended_bits)) {
          throw TraceError(r.offset,
                           "corrupted: block " + std::to_string(r.ref) + " is freed twice");
        }
        ++page_frees[r.ref / kSlotsPerPage];
      }
      if (r.op == tr::kUsableSize && r.ref != 0 && r.ref != kUnknownBlock) {
        note_block(reader, r, r.ref, used_bits);
        ++pending_uses[r.ref];
      }
    }
  });
  page_pending.resize(page_allocs.size());
  for (size_t page = 0; page < page_allocs.size(); ++page) {
    page_pending[page] = page_allocs[page] == page_frees[page] ? page_frees[page] : kNever;
  }
  size_t bytes = (table_ids * sizeof(Slot) + kPageBytes - 1) / kPageBytes * kPageBytes;
  void* memory = mmap(nullptr, bytes == 0 ? kPageBytes : bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (memory == MAP_FAILED) throw std::runtime_error("cannot map the block table");
  table = static_cast<Slot*>(memory);
}

// ---- progress across threads
// ---------------------------------------------------------------------
std::atomic<bool> go{false}, stop{false};
std::atomic<int> running{0}, waiting{0};
std::mutex error_lock;
std::string first_error;
int error_status = 0;

void report_error(int status, const std::string& message) {
  std::lock_guard<std::mutex> guard(error_lock);
  if (error_status == 0) first_error = message, error_status = status;
  stop.store(true);
}

// Waits until ready() holds: another thread has replayed what the record needs. If every live
// thread is waiting for two seconds, the trace is inconsistent (a call no thread will reach):
// give up rather than hang.
template <class Ready>
void wait_until(Ready&& ready, uint64_t id, const Record& r, const char* what) {
  if (ready()) return;
  waiting.fetch_add(1);
  Clock::time_point stalled{};
  for (unsigned spins = 0; !ready(); ++spins) {
    if (spins < 64) continue;
    sched_yield();
    if (spins % 256 != 0) continue;
    if (stop.load()) break;
    if (waiting.load() < running.load()) {
      stalled = {};
    } else if (stalled == Clock::time_point{}) {
      stalled = Clock::now();
    } else if (Clock::now() - stalled > std::chrono::seconds(2)) {
      report_error(3, "byte " + std::to_string(r.offset) + ": every thread waits for " + what +
                          " (block " + std::to_string(id) + ")");
    }
  }
  waiting.fetch_sub(1);
}

// The block `id`, once another thread has replayed its allocation (kGone: stopped, or failed).
void* wait_for(uint64_t id, const Record& r) {
  std::atomic<void*>& slot = table[id].pointer;
  void* pointer = nullptr;
  wait_until([&] { return (pointer = slot.load(std::memory_order_acquire)) != nullptr; }, id, r,
             "a block that no thread allocates");
  return pointer == nullptr ? kGone : pointer;
}

// Before block `id` is freed: the malloc_usable_size calls on it that came before.
void wait_for_uses(uint64_t id, const Record& r) {
  if (!bit(used_bits, id)) return;
  std::atomic<uint32_t>& pending = pending_uses.find(id)->second;
  wait_until([&] { return pending.load(std::memory_order_acquire) == 0; }, id, r,
             "malloc_usable_size calls that no thread makes");
}

// The pattern: a non-zero byte derived from the id at each end of the requested bytes.
uint8_t tag(uint64_t id, bool last) {
  return static_cast<uint8_t>((id * 0x9e3779b97f4a7c15ull) >> (last ? 56 : 48)) | 1;
}

class Replayer {
 public:
  Counters counts;

  void run(const Record& r) {
    ++counts.calls[r.op];
    if (r.op == tr::kUsableSize) return usable_size(r);
    void* old = nullptr;
    uint64_t old_size = 0;
    if (tr::op_has_ref(r.op) && r.ref != 0) {
      if (r.ref != kUnknownBlock && allocated_in_trace(r.ref)) {
        old = wait_for(r.ref, r);
      } else {
        ++counts.unknown;
        old = kGone;
      }
      if (old == kGone) {  // nothing to hand in: unknown block, or its allocation failed here
        if (ends_ref(r)) finish_ref(r);
        if (!tr::op_allocates(r.op) || r.result == 0) return;
        old = nullptr;  // a realloc that made a block: replayed as realloc(NULL, size)
      } else {
        if (ends_ref(r)) wait_for_uses(r.ref, r);
        old_size = table[r.ref].size;
        if (!verify(old, old_size, r.ref, r, "before it is freed")) {
          return;  // (the mismatch is counted; the block is left alone)
        }
      }
    }
    if (tr::op_allocates(r.op) && r.result == 0 && !ends_ref(r)) {
      return void(++counts.failed_in_trace);  // a call that failed then is not made now
    }
    uint64_t size = requested_bytes(r);
    size_t alignment = 0;
    void* block = nullptr;
    switch (r.op) {
      case tr::kMalloc:
        block = malloc(size);
        break;
      case tr::kCalloc:
        block = calloc(r.count, r.size);
        break;
      case tr::kRealloc:
      case tr::kReallocarray:  // (as realloc: not every allocator exports reallocarray)
        if (r.result == 0) {   // realloc(p, 0) freed p (as mapalloc does, recording)
          free(old);
          return finish_ref(r);
        }
        block = realloc(old, size);
        if (block != nullptr && old != nullptr) {
          check_copy(block, size, old_size, r);
          finish_ref(r);
        }
        break;
      case tr::kFree:
        free(old);
        return finish_ref(r);
      case tr::kPosixMemalign:
        alignment = r.alignment;
        if (posix_memalign(&block, alignment, size) != 0) block = nullptr;
        break;
      case tr::kAlignedAlloc:
        block = aligned_alloc(alignment = r.alignment, size);
        break;
      case tr::kMemalign:  // rounded as glibc does: other allocators reject odd alignments
        alignment = r.alignment <= 1 ? 1
                    : r.alignment > SIZE_MAX / 2 + 1
                        ? SIZE_MAX / 2 + 1  // (fails, as it did)
                        : size_t{1} << (64 - __builtin_clzll(r.alignment - 1));
        block = memalign(alignment, size);
        break;
      case tr::kValloc:
        block = valloc(size), alignment = kPageBytes;
        break;
      case tr::kPvalloc:  // as posix_memalign: jemalloc has no pvalloc of its own
        alignment = kPageBytes;
        if (size > SIZE_MAX - kPageBytes ||
            posix_memalign(&block, kPageBytes, ((size ? size : 1) + 4095) & ~size_t{4095}) != 0)
          block = nullptr;
        break;
      default:
        if (r.op >= tr::kDelete) {
          delete_block(r.op, old, r.size, r.alignment);
          return finish_ref(r);
        }
        alignment = r.op & tr::kAlignedBit ? r.alignment : 0;
        block = new_block(r.op, size, alignment);
    }
    start_block(r, block, size, alignment);
  }

 private:
  void usable_size(const Record& r) {
    if (r.ref == 0) return;  // malloc_usable_size(NULL): nothing to ask
    if (r.ref == kUnknownBlock || !allocated_in_trace(r.ref)) return void(++counts.unknown);
    void* block = wait_for(r.ref, r);
    if (block != kGone && malloc_usable_size(block) < table[r.ref].size) mismatch(r, "usable size");
    pending_uses.find(r.ref)->second.fetch_sub(1, std::memory_order_release);
  }

  void mismatch(const Record& r, const char* what,
                uint64_t Counters::*counter = &Counters::mismatches) {
    if (++(counts.*counter) <= 5) {
      fprintf(stderr, "replay: check failed at the record at byte %llu (%s): %s\n",
              static_cast<unsigned long long>(r.offset), tr::op_name(r.op), what);
    }
  }

  bool verify(void* block, uint64_t size, uint64_t id, const Record& r, const char* when) {
    auto* bytes = static_cast<uint8_t*>(block);
    bool ok =
        (size < 1 || bytes[0] == tag(id, false)) && (size < 2 || bytes[size - 1] == tag(id, true));
    if (ok) ++counts.verified;
    if (!ok) mismatch(r, (std::string("block contents changed ") + when).c_str());
    return ok;
  }

  // realloc must have moved the old contents: the first byte, and the last one if it fits.
  void check_copy(void* block, uint64_t size, uint64_t old_size, const Record& r) {
    auto* bytes = static_cast<uint8_t*>(block);
    if (old_size >= 1 && size >= 1 && bytes[0] != tag(r.ref, false)) mismatch(r, "realloc copy");
    if (old_size >= 2 && size >= old_size && bytes[old_size - 1] != tag(r.ref, true))
      mismatch(r, "realloc copy (last byte)");
  }

  void start_block(const Record& r, void* block, uint64_t size, size_t alignment) {
    Slot& slot = table[r.result];
    if (block == nullptr) {
      if (++counts.replay_failures <= 5)
        fprintf(stderr, "replay: %s of %llu bytes failed (it succeeded when recorded)\n",
                tr::op_name(r.op), static_cast<unsigned long long>(size));
      slot.pointer.store(kGone, std::memory_order_release);
      return;
    }
    auto* bytes = static_cast<uint8_t*>(block);
    if (alignment > 1 && reinterpret_cast<uintptr_t>(block) % alignment != 0)
      mismatch(r, "misaligned block", &Counters::misaligned);
    if (r.op == tr::kCalloc && size >= 1 && (bytes[0] != 0 || bytes[size - 1] != 0))
      mismatch(r, "calloc memory not zeroed");
    if (size >= 1) bytes[0] = tag(r.result, false);
    if (size >= 2) bytes[size - 1] = tag(r.result, true);
    slot.size = size;
    slot.pointer.store(block, std::memory_order_release);
  }

  // The block is gone: its page of the table goes too once all its blocks are gone.
  void finish_ref(const Record& r) {
    if (r.ref == 0 || r.ref == kUnknownBlock || !allocated_in_trace(r.ref)) return;
    table[r.ref].pointer.store(kGone, std::memory_order_relaxed);
    uint32_t& pending = page_pending[r.ref / kSlotsPerPage];
    if (__atomic_load_n(&pending, __ATOMIC_RELAXED) != kNever &&
        __atomic_sub_fetch(&pending, 1, __ATOMIC_ACQ_REL) == 0) {
      madvise(table + r.ref / kSlotsPerPage * kSlotsPerPage, kPageBytes, MADV_DONTNEED);
    }
  }

  static void* new_block(unsigned op, size_t size, size_t alignment) {
    bool array = op & tr::kArrayBit, nothrow = op & tr::kNothrowBit;
    std::align_val_t align{alignment};
    try {
      if (alignment == 0) {
        if (nothrow)
          return array ? operator new[](size, std::nothrow) : operator new(size, std::nothrow);
        return array ? operator new[](size) : operator new(size);
      }
      if (nothrow) {
        return array ? operator new[](size, align, std::nothrow) :
                     operator new(size, align, std::nothrow);
      }
      return array ? operator new[](size, align) : operator new(size, align);
    } catch (const std::bad_alloc&) {
      return nullptr;
    }
  }

  static void delete_block(unsigned op, void* block, size_t size, size_t alignment) {
    bool array = op & tr::kArrayBit, sized = op & tr::kSizedBit;
    std::align_val_t align{alignment};
    if (!(op & tr::kAlignedBit)) {
      if (sized) return array ? operator delete[](block, size) : operator delete(block, size);
      return array ? operator delete[](block) : operator delete(block);
    }
    if (sized)
      return array ? operator delete[](block, size, align) : operator delete(block, size, align);
    return array ? operator delete[](block, align) : operator delete(block, align);
  }
};

void replay_thread(const TraceReader& reader, const std::vector<Chunk>& chunks, Counters& out) {
  Replayer replayer;
  std::vector<uint8_t> payload;
  while (!go.load(std::memory_order_acquire)) sched_yield();
  try {
    for (const Chunk& chunk : chunks) {
      if (stop.load(std::memory_order_relaxed)) break;
      reader.read_payload(chunk, payload);  // checked in full by index_trace already
      ChunkDecoder decoder(chunk, payload.data());
      Record r;
      while (decoder.next(r) && !stop.load(std::memory_order_relaxed)) replayer.run(r);
    }
  } catch (const std::exception& e) {
    report_error(2, e.what());
  }
  running.fetch_sub(1);
  out = replayer.counts;
}

// Blocks the program never freed: checked once the replay is over (outside the timing).
uint64_t verify_live_blocks(Counters& counts) {
  uint64_t live = 0;
  for (uint64_t id = 1; id < table_ids; ++id) {
    if (page_pending[id / kSlotsPerPage] != kNever) {
      id = (id / kSlotsPerPage + 1) * kSlotsPerPage - 1;  // every block of the page was freed
      continue;
    }
    void* block = table[id].pointer.load(std::memory_order_acquire);
    if (block == nullptr || block == kGone) continue;
    ++live;
    auto* bytes = static_cast<uint8_t*>(block);
    uint64_t size = table[id].size;
    bool ok =
        (size < 1 || bytes[0] == tag(id, false)) && (size < 2 || bytes[size - 1] == tag(id, true));
    ok ? ++counts.verified : ++counts.mismatches;
  }
  return live;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string option = argc == 3 ? argv[1] : "";
  bool quiet = option == "--quiet", check_only = option == "--check";
  if (argc != 2 + (quiet || check_only) || argv[argc - 1][0] == '-') {
    fprintf(stderr,
            "usage: replay [--quiet | --check] TRACE\n(run it with LD_PRELOAD=LIBRARY to "
            "replay the trace against that allocator; --check: only check the trace)\n");
    return 2;
  }
  const char* path = argv[argc - 1];
  auto started = Clock::now();
  try {
    TraceReader reader(path);
    index_trace(reader);
    double reading = seconds_since(started);
    const Header& header = reader.header();
    uint64_t calls = 0;
    for (uint64_t c : trace_counts.calls) calls += c;
    size_t threads = thread_chunks.size();
    if (!quiet || check_only) {
      printf(
          "trace %s: %s (pid %u), %zu thread%s, %llu calls%s\n", path, header.program.c_str(),
          header.pid, threads, threads == 1 ? "" : "s", static_cast<unsigned long long>(calls),
          reader.end_marker().present ? "" : " (no end marker: the program did not exit normally)");
    }
    if (check_only) return 0;

    std::vector<std::thread> workers;
    std::vector<Counters> results(threads);
    running.store(static_cast<int>(threads));
    size_t next = 0;
    for (const auto& [thread, chunks] : thread_chunks) {
      try {
        workers.emplace_back(replay_thread, std::cref(reader), std::cref(chunks),
                             std::ref(results[next++]));
      } catch (const std::system_error& e) {  // (the threads started so far must be joined)
        report_error(2, "cannot start the trace's " + std::to_string(threads) +
                            " threads at once (started " + std::to_string(workers.size()) +
                            "): " + e.what());
        break;
      }
    }
    auto replay_start = Clock::now();
    go.store(true, std::memory_order_release);
    for (auto& worker : workers) worker.join();
    double replay_seconds = seconds_since(replay_start);
    if (error_status != 0) {
      fprintf(stderr, "replay: %s: %s\n", path, first_error.c_str());
      return error_status;
    }

    Counters total;
    for (const Counters& c : results) total.add(c);
    uint64_t live = verify_live_blocks(total);
    uint64_t replayed = 0;
    for (unsigned op = 0; op < tr::kOpLimit; ++op) {
      replayed += total.calls[op];
      if (total.calls[op] != 0 && !quiet) {
        printf("  %-24s %12llu\n", tr::op_name(op),
               static_cast<unsigned long long>(total.calls[op]));
      }
    }
    if (!quiet) {
      printf("replayed %llu calls in %.6f s (%.3f s checking and indexing the trace first)\n",
             static_cast<unsigned long long>(replayed), replay_seconds, reading);
      printf(
          "verified %llu blocks (first and last byte; %llu never freed, checked at the end), "
          "%llu mismatches, %llu misaligned\n",
          static_cast<unsigned long long>(total.verified), static_cast<unsigned long long>(live),
          static_cast<unsigned long long>(total.mismatches),
          static_cast<unsigned long long>(total.misaligned));
      printf(
          "not replayed: %llu calls that failed when recorded, %llu on blocks unknown to the "
          "tracer\n",
          static_cast<unsigned long long>(total.failed_in_trace),
          static_cast<unsigned long long>(total.unknown));
    }
    printf(
        "result calls=%llu seconds=%.6f verified=%llu mismatches=%llu misaligned=%llu "
        "failures=%llu threads=%zu\n",
        static_cast<unsigned long long>(replayed), replay_seconds,
        static_cast<unsigned long long>(total.verified),
        static_cast<unsigned long long>(total.mismatches),
        static_cast<unsigned long long>(total.misaligned),
        static_cast<unsigned long long>(total.replay_failures), threads);
    return total.mismatches + total.misaligned + total.replay_failures == 0 ? 0 : 1;
  } catch (const std::bad_alloc&) {
    fprintf(stderr, "replay: %s: not enough memory to index the trace\n", path);
    return 2;
  } catch (const std::exception& e) {
    fprintf(stderr, "replay: %s: %s\n", path, e.what());
    return 2;
  }
}
