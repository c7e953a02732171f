#include "options.h"

#include <stdlib.h>
#include <string.h>

#include "diag.h"

namespace mapalloc {

namespace {

Options current_options;
bool initialised = false;

void warn(const char* name, const char* value, const char* accepted) {
  diag_write("mapalloc: ignoring %s=%s (accepted: %s); using the default", name, value, accepted);
}

// Milliseconds up to one hour.
void read_milliseconds(const char* name, uint32_t* field) {
  const char* text = getenv(name);
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

void options_init() {
  if (initialised) return;
  initialised = true;
  read_milliseconds("MAPALLOC_PURGE_DELAY_MS", &current_options.purge_delay_ms);
  read_milliseconds("MAPALLOC_UNMAP_DELAY_MS", &current_options.unmap_delay_ms);
  if (const char* zero = getenv("MAPALLOC_ZERO_ON_FREE")) {
    if (strcmp(zero, "0") == 0 || strcmp(zero, "1") == 0)
      current_options.zero_on_free = zero[0] == '1';
    else
      warn("MAPALLOC_ZERO_ON_FREE", zero, "0, 1");
  }
  if (const char* method = getenv("MAPALLOC_PURGE_METHOD")) {
    if (strcmp(method, "dontneed") == 0)
      current_options.purge_method = 0;
    else if (strcmp(method, "free") == 0)
      current_options.purge_method = 1;
    else
      warn("MAPALLOC_PURGE_METHOD", method, "dontneed, free");
  }
}

}  // namespace mapalloc
