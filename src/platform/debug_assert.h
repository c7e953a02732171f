// Assertions of the debug build. MAPALLOC_ASSERT(condition, "the invariant, in words", where):
// in the debug build (MAPALLOC_DEBUG=1) a false condition prints one line
//   mapalloc: assertion failed at src/core/page.cpp:120: <invariant> (block/page 0x...)
// on stderr and aborts; `where` is the block or page record concerned. In every other build the
// condition sits in a discarded `if constexpr` branch: type-checked, never compiled into code.
#pragma once

#include "platform/config.h"

namespace mapalloc {

[[noreturn]] MAPALLOC_COLD void debug_assert_failed(const char* file, int line,
                                                    const char* invariant, const void* where);

}  // namespace mapalloc

#define MAPALLOC_ASSERT(condition, invariant, where)                           \
  do {                                                                         \
    if constexpr (::mapalloc::kDebug) {                                        \
      if (MAPALLOC_UNLIKELY(!(condition)))                                     \
        ::mapalloc::debug_assert_failed(__FILE__, __LINE__, invariant,         \
                                        reinterpret_cast<const void*>(where)); \
    }                                                                          \
  } while (0)
