#include "platform/options.h"

#include <stddef.h>
#include <string.h>

#include "platform/diag.h"
#include "platform/process.h"

namespace mapalloc {

namespace {

constexpr long kMaxMilliseconds = 3600 * 1000;  // an hour
const char* const kPurgeMethodWords[] = {"dontneed", "free"};
const char* const kStatsFileEmpty[] = {"stderr"};
const char* const kProfFileEmpty[] = {"mapalloc.%p"};

// A row whose value lives in Options::field.
#define MAPALLOC_OPTION_FIELD(field)                                     \
  [](const Options& values) { return static_cast<long>(values.field); }, \
      [](Options& values, long value) {                                  \
        values.field = static_cast<decltype(Options::field)>(value);     \
      },                                                                 \
      0
// A kPath row whose text lives in Options::field.
#define MAPALLOC_OPTION_PATH(field) nullptr, nullptr, offsetof(Options, field)

}  // namespace

// The README's table of options lists these rows in this order, with these variables, defaults
// and descriptions (tests/unit_options.cpp compares them).
constexpr OptionRow kOptionTable[kOptionCount] = {
    {"purge_delay_ms", "MAPALLOC_PURGE_DELAY_MS", OptionKind::kMilliseconds, true, 100,
     kMaxMilliseconds, nullptr, "free memory goes back to the OS after staying free this long",
     MAPALLOC_OPTION_FIELD(purge_delay_ms)},
    {"unmap_delay_ms", "MAPALLOC_UNMAP_DELAY_MS", OptionKind::kMilliseconds, true, 1000,
     kMaxMilliseconds, nullptr,
     "empty segments and empty large-block arenas are unmapped after this",
     MAPALLOC_OPTION_FIELD(unmap_delay_ms)},
    {"purge_method", "MAPALLOC_PURGE_METHOD", OptionKind::kWord, true, 0, 1, kPurgeMethodWords,
     "or `free` (MADV_FREE: cheaper, RSS drops only under memory pressure)",
     MAPALLOC_OPTION_FIELD(purge_method)},
    {"purge_list", "MAPALLOC_PURGE_LIST", OptionKind::kChoice, true, 1, 1, nullptr,
     "1: purge several runs with one `process_madvise` (Linux 6.15+, else one `madvise` each); "
     "0: one `madvise` each (for a system-call filter that kills on calls it does not list)",
     MAPALLOC_OPTION_FIELD(purge_list)},
    {"transparent_huge_pages", "MAPALLOC_THP", OptionKind::kChoice, true, 1, 2, nullptr,
     "transparent huge pages (MADV_HUGEPAGE): 0 never, 1 for large-block arenas and for "
     "segments once the process holds 24 MiB of them (before that, for each 2 MiB region of a "
     "segment once blocks fill it), 2 for every segment too",
     MAPALLOC_OPTION_FIELD(transparent_huge_pages)},
    {"stats_at_exit", "MAPALLOC_STATS", OptionKind::kChoice, true, 0, 1, nullptr,
     "1: print the statistics table at exit", MAPALLOC_OPTION_FIELD(stats_at_exit)},
    {"stats_file", "MAPALLOC_STATS_FILE", OptionKind::kPath, false, 0, 256, kStatsFileEmpty,
     "where the table (and samples) go; `%p` stands for the process id",
     MAPALLOC_OPTION_PATH(stats_file)},
    {"sample_ms", "MAPALLOC_SAMPLE_MS", OptionKind::kMilliseconds, false, 0, kMaxMilliseconds,
     nullptr,
     "append `time_ms,in_use_bytes,mapped_bytes,resident_bytes` to the stats file every N ms (a "
     "sampler thread)",
     MAPALLOC_OPTION_FIELD(sample_ms)},
    {"verbose", "MAPALLOC_VERBOSE", OptionKind::kChoice, true, 0, 1, nullptr,
     "1: print the options in force at start, and failed mappings", MAPALLOC_OPTION_FIELD(verbose)},
    {"zero_on_free", "MAPALLOC_ZERO_ON_FREE", OptionKind::kChoice, true, 0, 1, nullptr,
     "secure build: 1 zeroes blocks when freed", MAPALLOC_OPTION_FIELD(zero_on_free)},
    {"large_quarantine", "MAPALLOC_LARGE_QUARANTINE", OptionKind::kChoice, true, 1, 2, nullptr,
     "default build: freed blocks above 128 KiB wait a while (at most about 60 a second) with a "
     "canary in their first 64 bytes (1; a write after free aborts when they leave) or "
     "inaccessible (2; any use after free faults); 0: never",
     MAPALLOC_OPTION_FIELD(large_quarantine)},
    {"report_faults", "MAPALLOC_REPORT_FAULTS", OptionKind::kChoice, false, 1, 1, nullptr,
     "1: a segmentation fault in mapalloc's memory prints one line saying where, 0: no handler",
     MAPALLOC_OPTION_FIELD(report_faults)},
    {"fault_mmap", "MAPALLOC_FAULT_MMAP", OptionKind::kNumber, false, 0, 1 << 30, nullptr,
     "tests: fail the Nth request for memory from the OS", MAPALLOC_OPTION_FIELD(fault_mmap)},
    {"fault_mmap_from", "MAPALLOC_FAULT_MMAP_FROM", OptionKind::kNumber, false, 0, 1 << 30, nullptr,
     "tests: fail the Nth request for memory from the OS and every later one",
     MAPALLOC_OPTION_FIELD(fault_mmap_from)},
    {"prof", "MAPALLOC_PROF", OptionKind::kChoice, false, 0, 1, nullptr,
     "1: the heap profiler samples from the start (`mapalloc_prof_set_active` at run time)",
     MAPALLOC_OPTION_FIELD(prof)},
    {"prof_sample_bytes", "MAPALLOC_PROF_SAMPLE", OptionKind::kNumber, false,
     kProfDefaultSampleBytes, long{1} << 40, nullptr,
     "the heap profiler's mean interval between samples, in allocated bytes",
     MAPALLOC_OPTION_FIELD(prof_sample_bytes)},
    {"prof_file", "MAPALLOC_PROF_FILE", OptionKind::kPath, false, 0, 224, kProfFileEmpty,
     "the prefix of the heap profile's files; `%p` stands for the process id",
     MAPALLOC_OPTION_PATH(prof_file)},
    {"prof_signal", "MAPALLOC_PROF_SIGNAL", OptionKind::kNumber, false, 0, 64, nullptr,
     "the signal number that writes the heap profile", MAPALLOC_OPTION_FIELD(prof_signal)},
};

#undef MAPALLOC_OPTION_FIELD
#undef MAPALLOC_OPTION_PATH

namespace {

constexpr Options default_options() {
  Options values{};
  for (const OptionRow& row : kOptionTable) {
    if (row.kind != OptionKind::kPath) row.set(values, row.default_value);
  }
  return values;
}

constinit Options current_options = default_options();
bool initialised = false;

// The accepted values of `row`, for a warning.
void describe_accepted(const OptionRow& row, char* buffer, size_t capacity) {
  switch (row.kind) {
    case OptionKind::kMilliseconds:
      diag_snprintf(buffer, capacity, "milliseconds, 0..%zu", size_t(row.max));
      return;
    case OptionKind::kNumber:
      diag_snprintf(buffer, capacity, "a number, 1..%zu", size_t(row.max));
      return;
    case OptionKind::kPath:
      diag_snprintf(buffer, capacity, "a path shorter than %zu bytes", size_t(row.max));
      return;
    case OptionKind::kChoice:
    case OptionKind::kWord: {
      size_t length = 0;
      for (long choice = 0; choice <= row.max; ++choice) {
        const char* separator = choice == 0 ? "" : ", ";
        if (row.kind == OptionKind::kWord)
          length += diag_snprintf(buffer + length, capacity - length, "%s%s", separator,
                                  row.words[choice]);
        else
          length +=
              diag_snprintf(buffer + length, capacity - length, "%s%d", separator, int(choice));
      }
      return;
    }
  }
}

// Parses the text of `row`'s variable into a value; false if it is not one the row accepts.
bool parse_value(const OptionRow& row, const char* text, long* value) {
  uint64_t number = 0;
  switch (row.kind) {
    case OptionKind::kMilliseconds:
      if (!parse_unsigned(text, static_cast<uint64_t>(row.max), &number)) return false;
      break;
    case OptionKind::kChoice:  // one digit
      if (!parse_unsigned(text, static_cast<uint64_t>(row.max), &number) || text[1] != '\0')
        return false;
      break;
    case OptionKind::kNumber:
      if (!parse_unsigned(text, static_cast<uint64_t>(row.max), &number) || number == 0)
        return false;
      break;
    case OptionKind::kWord:
      for (long word = 0; word <= row.max; ++word) {
        if (strcmp(text, row.words[word]) == 0) {
          *value = word;
          return true;
        }
      }
      return false;
    case OptionKind::kPath:
      return false;
  }
  *value = static_cast<long>(number);
  return true;
}

// Reads `row`'s variable, if set, into current_options (or warns).
void read_variable(const OptionRow& row) {
  const char* text = os_getenv(row.variable);
  if (text == nullptr) return;
  const char* shown = text;
  if (row.kind == OptionKind::kPath) {
    if (strlen(text) < size_t(row.max)) {
      strcpy(option_path(row, current_options), text);
      return;
    }
    shown = "(too long)";
  } else {
    long value;
    if (parse_value(row, text, &value)) {
      row.set(current_options, value);
      return;
    }
  }
  char accepted[64];
  describe_accepted(row, accepted, sizeof(accepted));
  diag_write("mapalloc: ignoring %s=%s (accepted: %s); using the default", row.variable, shown,
             accepted);
}

}  // namespace

bool parse_unsigned(const char* text, uint64_t max, uint64_t* value) {
  if (text == nullptr || *text == '\0') return false;
  uint64_t result = 0;
  for (const char* c = text; *c != '\0'; ++c) {
    if (*c < '0' || *c > '9') return false;
    result = result * 10 + static_cast<uint64_t>(*c - '0');
    if (result > max) return false;
  }
  *value = result;
  return true;
}

const Options& options() { return current_options; }

const OptionRow* option_find(const char* name) {
  if (name == nullptr) return nullptr;
  for (const OptionRow& row : kOptionTable) {
    if (strcmp(row.name, name) == 0) return &row;
  }
  return nullptr;
}

size_t option_format(const OptionRow& row, const Options& values, char* buffer, size_t capacity) {
  if (row.kind == OptionKind::kPath) {
    const char* path = option_path(row, values);
    return diag_snprintf(buffer, capacity, "%s", path[0] != '\0' ? path : row.words[0]);
  }
  long value = row.get(values);
  if (row.kind == OptionKind::kWord) return diag_snprintf(buffer, capacity, "%s", row.words[value]);
  if (row.kind == OptionKind::kNumber && value == 0) return diag_snprintf(buffer, capacity, "off");
  return diag_snprintf(buffer, capacity, "%zu", size_t(value));
}

bool option_set(const char* name, long value) {
  const OptionRow* row = option_find(name);
  if (row == nullptr || !row->settable || value < 0 || value > row->max) return false;
  row->set(current_options, value);
  return true;
}

bool option_get(const char* name, long* value) {
  const OptionRow* row = option_find(name);
  if (row == nullptr || row->get == nullptr) return false;
  *value = row->get(current_options);
  return true;
}

void options_init() {
  if (initialised) return;
  initialised = true;
  for (const OptionRow& row : kOptionTable) read_variable(row);
  if (!current_options.verbose) return;
  // "mapalloc: options: purge_delay_ms=100 unmap_delay_ms=1000 ...", one line.
  char line[2048];
  size_t length = diag_snprintf(line, sizeof(line), "mapalloc: options:");
  for (const OptionRow& row : kOptionTable) {
    char value[sizeof(current_options.stats_file) + 16];
    option_format(row, current_options, value, sizeof(value));
    length += diag_snprintf(line + length, sizeof(line) - length, " %s=%s", row.name, value);
  }
  diag_put_line(kStderrFd, line);
}

}  // namespace mapalloc
