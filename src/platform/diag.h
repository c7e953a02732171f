// Diagnostics that never allocate: formatted with a fixed stack buffer and written with write(2).
// Heap misuse ends in `fatal`, which prints one line and calls abort().
#pragma once

#include "platform/config.h"

namespace mapalloc {

// A tiny formatter: %s (C string), %p (pointer), %zu (size_t), %d (int), %%, each with an
// optional width (right-aligned; "-" aligns left), e.g. %8zu, %-12s.
// diag_write: output truncated at 255 bytes; a newline is appended.
void diag_write(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// One line "mapalloc: <message>" on stderr, then abort(). Used for detected heap misuse.
[[noreturn]] MAPALLOC_COLD void fatal(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Format into `buffer` (always NUL-terminated); returns the length written.
size_t diag_format(char* buffer, size_t capacity, const char* fmt, __builtin_va_list args);
size_t diag_snprintf(char* buffer, size_t capacity, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

}  // namespace mapalloc
