#include "platform/prof_os.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>

#include "platform/os.h"

namespace mapalloc {

namespace {

constexpr unsigned kAllocatorFrames = 24;

struct Walk {
  uintptr_t* frames;
  unsigned capacity;
  const uintptr_t* entries;
  unsigned entry_count;
  unsigned count;
  unsigned seen;
};

_Unwind_Reason_Code walk_frame(struct _Unwind_Context* context, void* argument) {
  auto* walk = static_cast<Walk*>(argument);
  uintptr_t pc = _Unwind_GetIP(context);
  if (pc == 0) return _URC_END_OF_STACK;
  if (++walk->seen > 256) return _URC_END_OF_STACK;  // a corrupt or endless chain
  uintptr_t start = _Unwind_GetRegionStart(context);
  // The outermost of the allocator's frames among the first few (tail calls leave some out).
  for (unsigned i = 0; i < walk->entry_count && walk->seen <= kAllocatorFrames; ++i) {
    if (walk->entries[i] == start) {  // what came before was the allocator
      walk->count = 0;
      return _URC_NO_REASON;
    }
  }
  if (walk->count < walk->capacity) walk->frames[walk->count++] = pc;
  // Past capacity the walk goes on a little, in case an entry point is still to come (a deep
  // chain inside the allocator), then stops.
  return walk->count == walk->capacity && walk->seen > 2 * walk->capacity ? _URC_END_OF_STACK
                                                                          : _URC_NO_REASON;
}

}  // namespace

unsigned os_backtrace(uintptr_t* frames, unsigned capacity, const uintptr_t* entries,
                      unsigned entry_count) {
  Walk walk = {frames, capacity, entries, entry_count, 0, 0};
  _Unwind_Backtrace(walk_frame, &walk);
  return walk.count;
}

int os_create_file(const char* path) {
  return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
}

void os_close(int fd) { close(fd); }

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
