// Diagnostics that never allocate: formatted with a fixed stack buffer and written with one
// write(2) (diag_put_line).
// Heap misuse ends in `fatal`, which prints one line and calls abort().
#pragma once

#include "platform/config.h"

namespace mapalloc {

// The one way mapalloc's own output reaches a file descriptor (stderr, or the statistics file):
// `line` and a newline, in a single write(2) when it fits in 1 KiB, so that lines written at
// once by several threads or processes do not interleave.
void diag_put_line(int fd, const char* line);

// diag_put_line as a mapalloc_writer_t (for the statistics table): `context` is
// diag_fd_context(fd).
void diag_line_writer(void* context, const char* line);
inline void* diag_fd_context(int fd) { return reinterpret_cast<void*>(intptr_t{fd}); }

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
