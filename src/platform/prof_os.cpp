#include "platform/prof_os.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>

#include "platform/os.h"
#include "platform/process.h"
#include "platform/unwind.h"

namespace mapalloc {

namespace {

_Unwind_Reason_Code walk_frame(struct _Unwind_Context* context, void* argument) {
  return backtrace_visit(argument, _Unwind_GetIP(context), _Unwind_GetRegionStart(context))
             ? _URC_NO_REASON
             : _URC_END_OF_STACK;
}

}  // namespace

unsigned os_backtrace_full(uintptr_t* frames, unsigned capacity, const uintptr_t* entries,
                           unsigned entry_count) {
  BacktraceWalk walk = make_backtrace_walk(frames, capacity, entries, entry_count);
  unwinder_enter();
  _Unwind_Backtrace(walk_frame, &walk);
  unwinder_leave();
  return walk.count;
}

unsigned os_backtrace(uintptr_t* frames, unsigned capacity, const uintptr_t* entries,
                      unsigned entry_count) {
  BacktraceWalk walk = make_backtrace_walk(frames, capacity, entries, entry_count);
  if (unwind_backtrace_cached(&walk)) return walk.count;
  return os_backtrace_full(frames, capacity, entries, entry_count);
}

bool os_write_whole_file(const char* path, const char* content, size_t length) {
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  size_t written = os_write_all(fd, content, length);
  // Cut at what was written, complete or not: a failed write must not leave the previous
  // profile's tail behind the new bytes (a plausible-looking mix).
  bool cut = ftruncate(fd, static_cast<off_t>(written)) == 0;
  close(fd);
  return written == length && cut;
}

char* os_read_whole_file(const char* path, size_t* length, size_t* mapped) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  size_t capacity = 256 * kKiB;
  char* data = static_cast<char*>(os_map_aligned(capacity, kOsPageBytes));
  size_t used = 0;
  while (data != nullptr) {
    if (used == capacity) {  // grow: map twice the size and copy
      char* bigger = static_cast<char*>(os_map_aligned(capacity * 2, kOsPageBytes));
      if (bigger != nullptr) memcpy(bigger, data, used);
      os_unmap(data, capacity);
      data = bigger;
      capacity *= 2;
      if (data == nullptr) break;
    }
    ssize_t got = read(fd, data + used, capacity - used);
    if (got <= 0) break;
    used += static_cast<size_t>(got);
  }
  close(fd);
  *length = used;
  *mapped = capacity;
  return data;
}

bool os_install_signal(int signal, void (*handler)(int)) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = handler;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  return sigaction(signal, &action, nullptr) == 0;
}

void os_at_fork(void (*prepare)(), void (*parent)(), void (*child)()) {
  pthread_atfork(prepare, parent, child);
}

int64_t os_wall_clock_ns() {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
}

}  // namespace mapalloc
