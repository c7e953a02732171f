#include "platform/process.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <time.h>
#include <unistd.h>

namespace mapalloc {

const char* os_getenv(const char* name) { return getenv(name); }

void os_write_all(int fd, const char* text, size_t length) {
  while (length > 0) {
    ssize_t written = write(fd, text, length);
    if (written <= 0) return;
    text += written;
    length -= static_cast<size_t>(written);
  }
}

int os_open_for_append(const char* path) {
  return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
}

int os_duplicate_stderr() { return fcntl(kStderrFd, F_DUPFD_CLOEXEC, 3); }

size_t os_read_small_file(const char* path, char* buffer, size_t capacity) {
  if (capacity == 0) return 0;
  buffer[0] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t length = read(fd, buffer, capacity - 1);
  close(fd);
  if (length <= 0) return 0;
  buffer[length] = '\0';
  return static_cast<size_t>(length);
}

int os_process_id() { return static_cast<int>(getpid()); }

uint64_t os_clock_ns(OsClock clock) {
  struct timespec now;
  clock_gettime(clock == OsClock::kCoarse    ? CLOCK_MONOTONIC_COARSE
                : clock == OsClock::kPrecise ? CLOCK_MONOTONIC
                                             : CLOCK_REALTIME,
                &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000000000u + static_cast<uint64_t>(now.tv_nsec);
}

uint64_t os_now_ms() { return os_clock_ns(OsClock::kCoarse) / 1000000u; }
uint64_t os_precise_now_ms() { return os_clock_ns(OsClock::kPrecise) / 1000000u; }

void os_sleep_ms(uint32_t milliseconds) {
  struct timespec pause = {static_cast<time_t>(milliseconds / 1000),
                           static_cast<long>(milliseconds % 1000) * 1000000};
  nanosleep(&pause, nullptr);
}

void os_yield() { sched_yield(); }

bool os_start_thread(void* (*main)(void*)) {
  pthread_t thread;
  if (pthread_create(&thread, nullptr, main, nullptr) != 0) return false;
  pthread_detach(thread);
  return true;
}

namespace {
pthread_once_t once_control = PTHREAD_ONCE_INIT;
pthread_key_t exit_key;
bool exit_key_ready = false;
}  // namespace

// One caller in the library (process set-up); a second would need its own once_control.
void os_run_once(void (*init)()) { pthread_once(&once_control, init); }

bool os_thread_exit_key_create(void (*on_exit)(void*)) {
  exit_key_ready = pthread_key_create(&exit_key, on_exit) == 0;
  return exit_key_ready;
}

void os_thread_exit_key_set(void* value) {
  if (exit_key_ready) pthread_setspecific(exit_key, value);
}

void os_at_fork_child(void (*child)()) { pthread_atfork(nullptr, nullptr, child); }

uint64_t os_random_seed() {
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  if (const void* random_bytes = reinterpret_cast<const void*>(getauxval(AT_RANDOM))) {
    uint64_t words[2];
    __builtin_memcpy(words, random_bytes, sizeof(words));
    seed ^= words[0] * 0xbf58476d1ce4e5b9ull ^ words[1];
  }
  uint64_t now_ns = os_clock_ns(OsClock::kPrecise);
  seed ^= (now_ns % 1000000000u << 20) ^ now_ns / 1000000000u;
  // splitmix64 finaliser
  seed = (seed ^ (seed >> 30)) * 0xbf58476d1ce4e5b9ull;
  seed = (seed ^ (seed >> 27)) * 0x94d049bb133111ebull;
  return seed ^ (seed >> 31);
}

ProcessSecrets process_secrets;

namespace {
pthread_once_t secrets_once = PTHREAD_ONCE_INIT;
void draw_secrets() {
  process_secrets.page_key = os_random_seed() | 1;
  process_secrets.block_link = os_random_seed() | 1;
  process_secrets.large_check = os_random_seed() | 1;
}
}  // namespace

void os_draw_secrets() { pthread_once(&secrets_once, draw_secrets); }

void* os_move_break(intptr_t increment) {
  void* previous = sbrk(increment);
  return previous == reinterpret_cast<void*>(-1) ? nullptr : previous;
}

}  // namespace mapalloc
