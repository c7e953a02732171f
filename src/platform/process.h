// The process services the allocator uses besides memory (os.h): the environment, output to
// file descriptors, /proc, the clocks, sleeping and yielding, background threads, thread-exit
// keys, fork handlers, the random seed and the process secrets, and the program break. With os.h
// this is the one place that calls the OS or libc's services: a port to another OS (or to musl)
// changes these two files and nothing above them (scripts/check_layers.py keeps it so).
//
// None of these allocates, except os_start_thread (the thread's stack and glibc's thread
// record) and, for high key numbers, os_thread_exit_key_set.
#pragma once

#include "platform/config.h"

namespace mapalloc {

// ---- the environment and files ---------------------------------------------------------------

// getenv, before and after main (NULL: not set).
const char* os_getenv(const char* name);

constexpr int kStderrFd = 2;

// Writes the whole buffer (short writes and EINTR retried; gives up on another error). Returns
// the bytes written: `length` unless it gave up.
size_t os_write_all(int fd, const char* text, size_t length);

// A file opened for writing, truncated and appended to (created 0644); -1 on failure.
int os_open_for_append(const char* path);

// A close-on-exec copy of stderr numbered 3 or higher; -1 on failure. (GNU coreutils close
// stderr before exit handlers run; a copy still reaches the terminal.)
int os_duplicate_stderr();

// Reads up to `capacity - 1` bytes of a (small) file such as /proc/self/status into `buffer`,
// NUL-terminated. Returns the length read, 0 on failure.
size_t os_read_small_file(const char* path, char* buffer, size_t capacity);

int os_process_id();

// ---- clocks and waiting -----------------------------------------------------------------------

// The one clock reader; everything else asks it. kCoarse: the monotonic clock at a few ms
// resolution, no system call on x86-64 (the allocator's clock for purge deadlines); kPrecise:
// the monotonic clock (reports, samples, the seed, trace times); kWall: the time of day, since
// 1970 (trace headers).
enum class OsClock { kCoarse, kPrecise, kWall };
uint64_t os_clock_ns(OsClock clock);

// Milliseconds of the coarse and of the precise monotonic clock.
uint64_t os_now_ms();
uint64_t os_precise_now_ms();

void os_sleep_ms(uint32_t milliseconds);

// Gives the processor to another thread (spin locks and waits for another thread's purge).
void os_yield();

// ---- threads and fork --------------------------------------------------------------------------

// Starts a detached thread running `main(nullptr)`; false if it could not start.
bool os_start_thread(void* (*main)(void*));

// Runs `init` exactly once per process, whichever thread gets here first; the others wait.
void os_run_once(void (*init)());

// A thread-exit key: `on_exit(value)` runs when a thread whose value is set exits. Creating it
// does not allocate (glibc stores keys below 32 inline). False if no key is left.
bool os_thread_exit_key_create(void (*on_exit)(void*));
void os_thread_exit_key_set(void* value);

// pthread_atfork: `child` runs in the child after each fork (it may allocate the first time).
void os_at_fork_child(void (*child)());

// Reports of segmentation faults in the allocator's memory: for SIGSEGV and SIGBUS whose
// disposition is still the default, a handler that asks `describe` about the faulting address
// and, if it writes a description (returns its length, else 0), prints "mapalloc: <it>" on
// stderr; then the default action runs as it would have (the access faults again and the
// process dies of the signal). A program that installs its own handler replaces this one.
using FaultDescriber = size_t (*)(const void* address, char* buffer, size_t capacity);
void os_report_faults(FaultDescriber describe);

// ---- randomness, the process secrets and the break --------------------------------------------

// 64 unpredictable bits: the kernel's AT_RANDOM bytes, mixed with the clock.
uint64_t os_random_seed();

// The process's secrets, all in one place: random values that neither another process nor a
// stray write can know, drawn together once and kept for the life of the process (a fork child
// keeps them). Read the fields directly (the secure build's fast paths read block_link).
struct ProcessSecrets {
  uint64_t page_key;     // page free keys derive from it (segment.h, page_free_key)
  uint64_t block_link;   // secure build: free-list links are XOR-ed with it (block_link_mask)
  uint64_t large_check;  // a large block's header holds the block's address XOR-ed with it
};
extern ProcessSecrets process_secrets;

// Draws the secrets from os_random_seed the first time (whichever thread comes first; the others
// wait), and does nothing after that. None is ever 0. Called by process set-up, before the first
// heap exists, and before each large block's header is written (large blocks need no heap).
void os_draw_secrets();

// sbrk: the previous break, or NULL when the break cannot move.
void* os_move_break(intptr_t increment);

}  // namespace mapalloc
