#include "core/stats.h"

#include <stdarg.h>
#include <string.h>

#include "core/arena.h"
#include "core/arena_quarantine.h"
#include "core/large.h"
#include "platform/diag.h"
#include "platform/options.h"
#include "prof/prof.h"

namespace mapalloc {

namespace {

void add_segment(const Segment* segment, void* context) {
  auto* stats = static_cast<mapalloc_stats_t*>(context);
  stats->segments++;
  if (segment->owner == nullptr) return;      // cached: counted from the cache
  stats->resident_bytes += kOsPageBytes * 3;  // the metadata page's records in use, roughly
  for (unsigned i = kFirstUsablePage; i < kPagesPerSegment; ++i) {
    const Page& page = segment->pages[i];
    PageState state = page.state;
    if (state == PageState::kFree) {
      if (((segment->purged_pages >> i) & 1) == 0) stats->resident_bytes += kPageBytes;
      continue;
    }
    if (state == PageState::kSpanTail) continue;  // counted with its span's first page
    unsigned size_class = page.size_class;
    if (size_class >= kClassCount) continue;  // a record being rewritten right now
    size_t used = state == PageState::kFull ? page.capacity : page.countdown;
    if (used > page.capacity) used = page.capacity;
    mapalloc_class_stats_t& entry = stats->classes[size_class];
    entry.blocks_in_use += used;
    entry.blocks_capacity += page.capacity;
    entry.spans++;
    stats->resident_bytes += size_t{page.carved} * page.block_bytes;
  }
}

struct LineWriter {
  mapalloc_writer_t writer;
  void* context;
  void line(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    char buffer[256];
    va_list args;
    va_start(args, fmt);
    diag_format(buffer, sizeof(buffer), fmt, args);
    va_end(args);
    writer(context, buffer);
  }
};

// "12.3 MiB"-style text for a byte count.
const char* human(size_t bytes, char* buffer) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  unsigned unit = 0;
  size_t whole = bytes, tenths = 0;
  while (whole >= 1024 && unit < 4) {
    tenths = (whole % 1024) * 10 / 1024;
    whole /= 1024;
    ++unit;
  }
  char digits[24];
  int count = 0;
  do {
    digits[count++] = static_cast<char>('0' + whole % 10);
    whole /= 10;
  } while (whole != 0);
  char* out = buffer;
  while (count > 0) *out++ = digits[--count];
  if (unit > 0) {
    *out++ = '.';
    *out++ = static_cast<char>('0' + tenths);
  }
  *out++ = ' ';
  for (const char* u = units[unit]; *u != '\0'; ++u) *out++ = *u;
  *out = '\0';
  return buffer;
}

// --- the sampler and the report at exit ----------------------------------------------------

int report_fd = kStderrFd;
std::atomic<bool> sampler_stop{false};
uint32_t sample_ms = 0;

void* sampler_main(void*) {
  uint64_t start_ms = os_precise_now_ms();
  diag_put_line(report_fd, "time_ms,in_use_bytes,mapped_bytes,resident_bytes");
  while (!sampler_stop.load(std::memory_order_relaxed)) {
    mapalloc_stats_t stats;
    stats_collect(&stats);
    char line[160];
    diag_snprintf(line, sizeof(line), "%zu,%zu,%zu,%zu", size_t(os_precise_now_ms() - start_ms),
                  stats.in_use_bytes, stats.mapped_bytes, stats.resident_bytes);
    if (sampler_stop.load(std::memory_order_relaxed)) break;
    diag_put_line(report_fd, line);
    os_sleep_ms(sample_ms);
  }
  return nullptr;
}

}  // namespace

// The public struct's table must hold every class of every build (the secure build's classes
// go up to 1 MiB).
static_assert(kClassCount <= MAPALLOC_STATS_MAX_CLASSES);

void stats_collect(mapalloc_stats_t* stats) {
  memset(stats, 0, sizeof(*stats));
  stats->class_count = kClassCount;
  for (unsigned c = 0; c < kClassCount; ++c) stats->classes[c].block_bytes = class_block_bytes(c);
  segment_registry_walk(add_segment, stats);
  for (unsigned c = 0; c < kClassCount; ++c) {
    stats->in_use_blocks += stats->classes[c].blocks_in_use;
    stats->in_use_bytes += stats->classes[c].blocks_in_use * stats->classes[c].block_bytes;
  }
  ArenaCounters arenas = arena_counters();
  stats->large_blocks =
      large_counters.live_blocks.load(std::memory_order_relaxed) + arenas.live_blocks;
  stats->large_bytes =
      large_counters.live_bytes.load(std::memory_order_relaxed) + arenas.live_bytes;
  stats->in_use_blocks += stats->large_blocks;
  stats->in_use_bytes += stats->large_bytes;
  // (Blocks in the arenas' quarantine are freed and resident: counted with the free pages.)
  stats->cached_large_bytes = arenas.dirty_bytes + arena_quarantine_bytes() + large_cache_bytes();
  stats->arenas = arenas.arenas;
  stats->arena_reserved_bytes = arenas.reserved_bytes;
  SegmentCacheCounters cache = segment_cache_counters();
  stats->cached_segments = cache.cached_segments;
  stats->resident_bytes += stats->large_bytes + stats->cached_large_bytes;
  stats->mapped_bytes = os_counters.mapped_bytes.load(std::memory_order_relaxed);
  stats->peak_mapped_bytes = os_counters.peak_mapped_bytes.load(std::memory_order_relaxed);
  stats->peak_resident_bytes = process_peak_resident_bytes();
  stats->purged_bytes = os_counters.purged_bytes.load(std::memory_order_relaxed);
  stats->unmapped_bytes = os_counters.unmapped_bytes.load(std::memory_order_relaxed);
  stats->mmap_calls = os_counters.mmap_calls.load(std::memory_order_relaxed);
  stats->munmap_calls = os_counters.munmap_calls.load(std::memory_order_relaxed);
  stats->madvise_calls = os_counters.madvise_calls.load(std::memory_order_relaxed);
  stats->mremap_calls = os_counters.mremap_calls.load(std::memory_order_relaxed);
  heap_for_each([stats](Heap* heap) {
    stats->heaps++;
    if (!heap->abandoned.load(std::memory_order_relaxed) && heap->segments.first != nullptr) {
      stats->threads++;
    }
    stats->remote_frees += __atomic_load_n(&heap->remote_frees, __ATOMIC_RELAXED);
  });
}

void stats_print(mapalloc_writer_t write, void* context) {
  mapalloc_stats_t stats;
  stats_collect(&stats);
  LineWriter out{write, context};
  char a[32], b[32], c[32], d[32];
  out.line("mapalloc statistics (blocks in use include those cached in threads' free lists)");
  out.line("  in use        %s in %zu blocks (large: %s in %zu blocks)",
           human(stats.in_use_bytes, a), stats.in_use_blocks, human(stats.large_bytes, b),
           stats.large_blocks);
  out.line("  mapped        %s (peak %s), resident about %s (process peak %s)",
           human(stats.mapped_bytes, a), human(stats.peak_mapped_bytes, b),
           human(stats.resident_bytes, c), human(stats.peak_resident_bytes, d));
  out.line("  returned      %s purged, %s unmapped", human(stats.purged_bytes, a),
           human(stats.unmapped_bytes, b));
  out.line("  system calls  mmap %zu, munmap %zu, madvise %zu, mremap %zu", stats.mmap_calls,
           stats.munmap_calls, stats.madvise_calls, stats.mremap_calls);
  out.line("  segments      %zu mapped (%zu cached), huge pages made of filled 2 MiB regions: %zu",
           stats.segments, stats.cached_segments,
           os_counters.collapsed_huge_pages.load(std::memory_order_relaxed));
  out.line("  arenas        %zu reserving %s, free large-block pages kept resident %s",
           stats.arenas, human(stats.arena_reserved_bytes, a), human(stats.cached_large_bytes, b));
  out.line("  threads       %zu with a heap (%zu heaps in all), %zu remote frees", stats.threads,
           stats.heaps, stats.remote_frees);
  ProfStats prof = prof_stats();
  if (prof.memory_bytes != 0) {
    out.line(
        "  heap profiler %s in its tables (touched), %zu stacks, %zu live samples, %zu dropped, "
        "%zu stale",
        human(prof.memory_bytes, a), prof.stacks, prof.live_samples, prof.dropped, prof.stale);
  }
  out.line("  %5s %12s %14s %10s %7s %14s", "class", "block bytes", "blocks in use", "capacity",
           "spans", "bytes in use");
  for (unsigned i = 0; i < stats.class_count; ++i) {
    const mapalloc_class_stats_t& entry = stats.classes[i];
    if (entry.spans == 0) continue;
    out.line("  %5d %12zu %14zu %10zu %7zu %14s", static_cast<int>(i), entry.block_bytes,
             entry.blocks_in_use, entry.blocks_capacity, entry.spans,
             human(entry.blocks_in_use * entry.block_bytes, a));
  }
}

size_t process_peak_resident_bytes() {
  char buffer[4096];
  if (os_read_small_file("/proc/self/status", buffer, sizeof(buffer)) == 0) return 0;
  const char* field = strstr(buffer, "VmHWM:");
  if (field == nullptr) return 0;
  size_t kib = 0;
  for (field += 6; *field == ' ' || *field == '\t'; ++field) {
  }
  for (; *field >= '0' && *field <= '9'; ++field)
    kib = kib * 10 + static_cast<size_t>(*field - '0');
  return kib * 1024;
}

void stats_start_sampler_if_asked() {
  const Options& settings = options();
  bool have_file = settings.stats_file[0] != '\0';
  if (have_file) {
    // "%p" stands for the process id: each process of a pipeline or a shell script can get
    // its own file instead of truncating its parent's.
    char path[sizeof(settings.stats_file) + 24];
    size_t length = 0;
    for (const char* c = settings.stats_file; *c != '\0' && length + 24 < sizeof(path); ++c) {
      if (c[0] == '%' && c[1] == 'p') {
        length += diag_snprintf(path + length, sizeof(path) - length, "%d", os_process_id());
        ++c;
      } else {
        path[length++] = *c;
      }
    }
    path[length] = '\0';
    int fd = os_open_for_append(path);
    if (fd >= 0)
      report_fd = fd;
    else
      diag_write("mapalloc: cannot open MAPALLOC_STATS_FILE=%s; using stderr", path);
  } else if (settings.stats_at_exit) {
    // A copy of stderr for the table at exit: GNU coreutils (ls, sort...) close stderr first.
    int fd = os_duplicate_stderr();
    if (fd >= 0) report_fd = fd;
  }
  if (settings.sample_ms == 0) return;
  if (!have_file) {
    diag_write(
        "mapalloc: MAPALLOC_SAMPLE_MS needs MAPALLOC_STATS_FILE (where to write the samples)");
    return;
  }
  sample_ms = settings.sample_ms;
  os_start_thread(sampler_main);
}

void stats_report_at_exit() {
  sampler_stop.store(true, std::memory_order_relaxed);
  if (!options().stats_at_exit) return;
  stats_print(diag_line_writer, diag_fd_context(report_fd));
}

}  // namespace mapalloc
