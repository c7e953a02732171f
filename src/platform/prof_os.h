// The OS services of the heap profiler (src/prof/): call stacks, profile files, /proc/self/maps,
// the dump signal and fork handlers. None of these calls malloc.
#pragma once

#include "platform/config.h"

namespace mapalloc {

// Up to `capacity` return addresses of the calling thread's stack, innermost first. Frames up to
// and including the outermost one, among the first few, whose function starts at one of the
// `entries` (the allocator's functions, sorted ascending) are left out: the stack starts at the
// caller of malloc.
// Needs unwind tables (.eh_frame, the default on x86-64 and AArch64) in the program, not frame
// pointers. Walks with the cached rules of unwind.h where it can (tens of instructions a frame),
// else with the DWARF unwinder (_Unwind_Backtrace of libgcc, linked into the library: thousands
// of instructions a frame). Both find unwind tables with _dl_find_object on glibc 2.35 or later,
// which neither allocates nor takes the loader lock.
unsigned os_backtrace(uintptr_t* frames, unsigned capacity, const uintptr_t* entries,
                      unsigned entry_count);

// The same walk with _Unwind_Backtrace alone (the tests compare the two).
unsigned os_backtrace_full(uintptr_t* frames, unsigned capacity, const uintptr_t* entries,
                           unsigned entry_count);

// Makes the file at `path` hold exactly `content` (created 0644 if missing); false if it could
// not be opened or fully written (the file then holds what was written, nothing of its old
// content). An existing file is overwritten in place and then cut to length, not truncated
// first: on ext4 a truncation to zero frees the file's blocks (a device discard on a file system
// mounted with `discard`, as on this project's machines) and makes close() flush the new data
// (auto_da_alloc); measured, 100 rewrites of a 600-byte file: open 160-175 us and close 34-40 us
// with O_TRUNC, 2.4 us and 1-1.4 us in place.
bool os_write_whole_file(const char* path, const char* content, size_t length);

// Reads a whole file of unknown size (such as /proc/self/maps) into memory mapped for it;
// *length is its length. os_unmap(data, *mapped) frees it. nullptr on failure.
char* os_read_whole_file(const char* path, size_t* length, size_t* mapped);

// Installs `handler` for `signal` (SA_RESTART); false if the number is not a signal.
bool os_install_signal(int signal, void (*handler)(int));

// pthread_atfork with all three handlers.
void os_at_fork(void (*prepare)(), void (*parent)(), void (*child)());

// The seconds and nanoseconds of the real-time clock, in nanoseconds.
int64_t os_wall_clock_ns();

}  // namespace mapalloc
