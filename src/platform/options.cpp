#include "platform/options.h"

#include <stdlib.h>
#include <string.h>

#include "platform/diag.h"
#include "platform/process.h"

namespace mapalloc {

namespace {

Options current_options;
bool initialised = false;

void warn(const char* name, const char* value, const char* accepted) {
  diag_write("mapalloc: ignoring %s=%s (accepted: %s); using the default", name, value, accepted);
}

// Milliseconds up to one hour.
void read_milliseconds(const char* name, uint32_t* field) {
  const char* text = os_getenv(name);
  if (text == nullptr) return;
  uint64_t value;
  if (parse_unsigned(text, 3600 * 1000, &value))
    *field = static_cast<uint32_t>(value);
  else
    warn(name, text, "milliseconds, 0..3600000");
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

namespace {

// A positive request number (fault injection).
void read_request_number(const char* name, uint32_t* field) {
  const char* text = os_getenv(name);
  if (text == nullptr) return;
  uint64_t value;
  if (parse_unsigned(text, 1u << 30, &value) && value != 0)
    *field = static_cast<uint32_t>(value);
  else
    warn(name, text, "a request number, 1 or more");
}

// "0" or "1".
void read_flag(const char* name, bool* field) {
  const char* text = os_getenv(name);
  if (text == nullptr) return;
  if (strcmp(text, "0") == 0 || strcmp(text, "1") == 0)
    *field = text[0] == '1';
  else
    warn(name, text, "0, 1");
}

// A small number 0..max ("0", "1", ...).
void read_choice(const char* name, uint32_t max, uint32_t* field) {
  const char* text = os_getenv(name);
  if (text == nullptr) return;
  uint64_t value;
  if (parse_unsigned(text, max, &value) && text[1] == '\0') {
    *field = static_cast<uint32_t>(value);
    return;
  }
  char accepted[32] = "0";
  size_t length = 1;
  for (uint32_t choice = 1; choice <= max && choice < 10; ++choice)
    length += diag_snprintf(accepted + length, sizeof(accepted) - length, ", %d", int(choice));
  warn(name, text, accepted);
}

struct NamedOption {
  const char* name;
  long max;
  long (*get)();
  void (*set)(long);
};

#define MAPALLOC_OPTION(field, limit)                                     \
  NamedOption {                                                           \
#field, limit, [] { return static_cast<long>(current_options.field); }, \
        [](long value) { current_options.field = static_cast<decltype(current_options.field)>(value); } \
  }

const NamedOption named_options[] = {
    MAPALLOC_OPTION(purge_delay_ms, 3600 * 1000),
    MAPALLOC_OPTION(unmap_delay_ms, 3600 * 1000),
    MAPALLOC_OPTION(purge_method, 1),
    MAPALLOC_OPTION(zero_on_free, 1),
    MAPALLOC_OPTION(transparent_huge_pages, 2),
    MAPALLOC_OPTION(stats_at_exit, 1),
    MAPALLOC_OPTION(verbose, 1),
};

const NamedOption* find_option(const char* name) {
  for (const NamedOption& option : named_options) {
    if (name != nullptr && strcmp(option.name, name) == 0) return &option;
  }
  return nullptr;
}

}  // namespace

bool option_set(const char* name, long value) {
  const NamedOption* option = find_option(name);
  if (option == nullptr || value < 0 || value > option->max) return false;
  option->set(value);
  return true;
}

bool option_get(const char* name, long* value) {
  const NamedOption* option = find_option(name);
  if (option == nullptr) return false;
  *value = option->get();
  return true;
}

void options_init() {
  if (initialised) return;
  initialised = true;
  read_milliseconds("MAPALLOC_PURGE_DELAY_MS", &current_options.purge_delay_ms);
  read_milliseconds("MAPALLOC_UNMAP_DELAY_MS", &current_options.unmap_delay_ms);
  read_milliseconds("MAPALLOC_SAMPLE_MS", &current_options.sample_ms);
  read_flag("MAPALLOC_ZERO_ON_FREE", &current_options.zero_on_free);
  read_choice("MAPALLOC_THP", 2, &current_options.transparent_huge_pages);
  read_flag("MAPALLOC_STATS", &current_options.stats_at_exit);
  read_flag("MAPALLOC_VERBOSE", &current_options.verbose);
  read_request_number("MAPALLOC_FAULT_MMAP", &current_options.fault_mmap);
  read_request_number("MAPALLOC_FAULT_MMAP_FROM", &current_options.fault_mmap_from);
  if (const char* method = os_getenv("MAPALLOC_PURGE_METHOD")) {
    if (strcmp(method, "dontneed") == 0)
      current_options.purge_method = 0;
    else if (strcmp(method, "free") == 0)
      current_options.purge_method = 1;
    else
      warn("MAPALLOC_PURGE_METHOD", method, "dontneed, free");
  }
  if (const char* file = os_getenv("MAPALLOC_STATS_FILE")) {
    if (strlen(file) < sizeof(current_options.stats_file))
      strcpy(current_options.stats_file, file);
    else
      warn("MAPALLOC_STATS_FILE", "(too long)", "a path shorter than 256 bytes");
  }
  if (current_options.verbose) {
    diag_write(
        "mapalloc: options: purge_delay_ms=%zu unmap_delay_ms=%zu purge_method=%s thp=%d "
        "stats=%d sample_ms=%zu stats_file=%s",
        size_t{current_options.purge_delay_ms}, size_t{current_options.unmap_delay_ms},
        current_options.purge_method == 0 ? "dontneed" : "free",
        static_cast<int>(current_options.transparent_huge_pages),
        current_options.stats_at_exit ? 1 : 0, size_t{current_options.sample_ms},
        current_options.stats_file[0] != '\0' ? current_options.stats_file : "(stderr)");
  }
}

}  // namespace mapalloc
