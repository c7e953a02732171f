// What the debug build tells Valgrind's memcheck about mapalloc's blocks, through its client
// requests (header only, from Debian's `valgrind` package: no run-time dependency; each request
// is a few no-op instructions when the program does not run under Valgrind). In every other
// build these functions are empty.
//
// The protocol (api/debug.cpp, core): a block handed out is announced with malloclike (its
// bytes past the requested size stay inaccessible: the red zone), a freed one with freelike.
// Free blocks and the not yet carved part of a span are inaccessible to the program; the
// allocator's own reads and writes of them (free-list links, free keys, the fill pattern) open
// the bytes they touch and close them again (open_*, close), so memcheck reports the
// program's accesses and never mapalloc's.
#pragma once

#include "platform/config.h"

#if MAPALLOC_DEBUG
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#elif __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>  // (header only: RUNNING_ON_VALGRIND, a few no-op instructions)
#endif

namespace mapalloc::memcheck {

// In every build, where Valgrind's header is there: whether the process runs under Valgrind
// (any tool), which does not know some system calls (platform/os.cpp) and warns about them.
inline bool running_under_valgrind() {
#if __has_include(<valgrind/valgrind.h>)
  return RUNNING_ON_VALGRIND != 0;
#else
  return false;
#endif
}

// The debug build under Valgrind: the client requests below reach memcheck.
inline bool running() { return kDebug && running_under_valgrind(); }

// `bytes` at `block` are a block the program now holds (undefined, or defined if `zeroed`).
inline void malloclike(const void* block, size_t bytes, bool zeroed) {
#if MAPALLOC_DEBUG
  VALGRIND_MALLOCLIKE_BLOCK(block, bytes, 0, zeroed ? 1 : 0);
#else
  (void)block, (void)bytes, (void)zeroed;
#endif
}

// The program gave the block back: every access to it is an error from now on.
inline void freelike(const void* block) {
#if MAPALLOC_DEBUG
  VALGRIND_FREELIKE_BLOCK(block, 0);
#else
  (void)block;
#endif
}

// A held block changed size in place (bytes past the new size become inaccessible).
inline void resize_in_place(const void* block, size_t old_bytes, size_t new_bytes) {
#if MAPALLOC_DEBUG
  VALGRIND_RESIZEINPLACE_BLOCK(block, old_bytes, new_bytes, 0);
#else
  (void)block, (void)old_bytes, (void)new_bytes;
#endif
}

// The allocator is about to read bytes of a free block (or write the bytes it reads back).
inline void open_defined(const void* address, size_t bytes) {
#if MAPALLOC_DEBUG
  VALGRIND_MAKE_MEM_DEFINED(address, bytes);
#else
  (void)address, (void)bytes;
#endif
}

// The allocator is about to write bytes of a free block.
inline void open_undefined(const void* address, size_t bytes) {
#if MAPALLOC_DEBUG
  VALGRIND_MAKE_MEM_UNDEFINED(address, bytes);
#else
  (void)address, (void)bytes;
#endif
}

// Bytes no longer the program's (free blocks, red zones, spans not carved yet).
inline void close(const void* address, size_t bytes) {
#if MAPALLOC_DEBUG
  VALGRIND_MAKE_MEM_NOACCESS(address, bytes);
#else
  (void)address, (void)bytes;
#endif
}

// Reads the word at `address` whatever memcheck thinks of it (a word of a block the program
// holds, which it may never have written, or of a freed one) and leaves memcheck's view of each
// byte as it was: the double-free check reads a block's second word before knowing which.
inline uintptr_t peek_word(const uintptr_t* address) {
#if MAPALLOC_DEBUG
  if (!running()) return *address;
  const char* bytes = reinterpret_cast<const char*>(address);
  unsigned char vbits[sizeof(uintptr_t)];
  unsigned status[sizeof(uintptr_t)];
  for (size_t i = 0; i < sizeof(uintptr_t); ++i)
    status[i] = VALGRIND_GET_VBITS(bytes + i, &vbits[i], 1);
  VALGRIND_MAKE_MEM_DEFINED(address, sizeof(uintptr_t));
  uintptr_t value = *static_cast<const volatile uintptr_t*>(address);
  for (size_t i = 0; i < sizeof(uintptr_t); ++i) {
    if (status[i] == 1)
      VALGRIND_SET_VBITS(bytes + i, &vbits[i], 1);
    else
      VALGRIND_MAKE_MEM_NOACCESS(bytes + i, 1);
  }
  return value;
#else
  return *address;
#endif
}

}  // namespace mapalloc::memcheck
