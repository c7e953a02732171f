#include "platform/diag.h"

#include "platform/debug_assert.h"
#include "platform/process.h"

#include <stdarg.h>
#include <stdlib.h>

namespace mapalloc {
namespace {

struct Writer {
  char* buffer;
  size_t capacity;  // excluding the terminating NUL
  size_t length = 0;

  void put(char c) {
    if (length < capacity) buffer[length++] = c;
  }
  void put(const char* s) {
    for (; s != nullptr && *s != '\0'; ++s) put(*s);
  }
  void put_unsigned(unsigned long long value, unsigned base) {
    char digits[24];
    int count = 0;
    do {
      digits[count++] = "0123456789abcdef"[value % base];
      value /= base;
    } while (value != 0);
    while (count > 0) put(digits[--count]);
  }
};

}  // namespace

size_t diag_format(char* buffer, size_t capacity, const char* fmt, va_list args) {
  if (capacity == 0) return 0;
  Writer out{buffer, capacity - 1};
  for (const char* f = fmt; *f != '\0'; ++f) {
    if (*f != '%') {
      out.put(*f);
      continue;
    }
    ++f;
    bool left = *f == '-';
    if (left) ++f;
    size_t width = 0;
    for (; *f >= '0' && *f <= '9'; ++f) width = width * 10 + static_cast<size_t>(*f - '0');
    // Each conversion is written to a scratch writer first, then padded to the width.
    char scratch[64];
    Writer item{scratch, sizeof(scratch) - 1};
    const char* text = nullptr;  // long strings are copied directly
    switch (*f) {
      case 's':
        text = va_arg(args, const char*);
        break;
      case 'p':
        item.put("0x");
        item.put_unsigned(reinterpret_cast<uintptr_t>(va_arg(args, void*)), 16);
        break;
      case 'z':  // %zu
        if (f[1] == 'u') ++f;
        item.put_unsigned(va_arg(args, size_t), 10);
        break;
      case 'd': {
        int value = va_arg(args, int);
        if (value < 0) {
          item.put('-');
          item.put_unsigned(0ull - static_cast<unsigned long long>(value), 10);
        } else {
          item.put_unsigned(static_cast<unsigned long long>(value), 10);
        }
        break;
      }
      case '%':
        item.put('%');
        break;
      default:  // unknown conversion: print it literally
        item.put('%');
        if (*f == '\0')
          --f;
        else
          item.put(*f);
    }
    if (text == nullptr) {
      scratch[item.length] = '\0';
      text = scratch;
    }
    size_t length = 0;
    while (text[length] != '\0') ++length;
    if (!left)
      for (size_t pad = length; pad < width; ++pad) out.put(' ');
    out.put(text);
    if (left)
      for (size_t pad = length; pad < width; ++pad) out.put(' ');
  }
  buffer[out.length] = '\0';
  return out.length;
}

size_t diag_snprintf(char* buffer, size_t capacity, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  size_t length = diag_format(buffer, capacity, fmt, args);
  va_end(args);
  return length;
}

void diag_put_line(int fd, const char* line) {
  size_t length = 0;
  while (line[length] != '\0') ++length;
  char buffer[1024];
  if (length < sizeof(buffer)) {
    __builtin_memcpy(buffer, line, length);
    buffer[length] = '\n';
    os_write_all(fd, buffer, length + 1);
  } else {
    os_write_all(fd, line, length);
    os_write_all(fd, "\n", 1);
  }
}

void diag_line_writer(void* context, const char* line) {
  diag_put_line(static_cast<int>(reinterpret_cast<intptr_t>(context)), line);
}

namespace {
// "<prefix><formatted message>" on stderr, truncated at 255 bytes.
void write_formatted(const char* prefix, const char* fmt, va_list args) {
  char line[256];
  size_t length = diag_snprintf(line, sizeof(line), "%s", prefix);
  diag_format(line + length, sizeof(line) - length, fmt, args);
  diag_put_line(kStderrFd, line);
}
}  // namespace

void diag_write(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  write_formatted("", fmt, args);
  va_end(args);
}

void fatal(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  write_formatted("mapalloc: ", fmt, args);
  va_end(args);
  abort();
}

void debug_assert_failed(const char* file, int line, const char* invariant, const void* where) {
  fatal("assertion failed at %s:%d: %s (block/page %p)", file, line, invariant, where);
}

}  // namespace mapalloc
