#include "platform/process.h"

#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

namespace mapalloc {

const char* os_getenv(const char* name) { return getenv(name); }

size_t os_write_all(int fd, const char* text, size_t length) {
  size_t done = 0;
  while (done < length) {
    ssize_t written = write(fd, text + done, length - done);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) break;
    done += static_cast<size_t>(written);
  }
  return done;
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

namespace {

FaultDescriber fault_describer = nullptr;

// The executable range of this shared library: [code_start, code_end); empty when the library
// is linked into the executable itself (a fault there may be the program's own).
extern "C" const ElfW(Ehdr) __ehdr_start __attribute__((visibility("hidden")));
uintptr_t code_start = 0, code_end = 0;

void find_own_code() {
  const auto* header = &__ehdr_start;
  auto base = reinterpret_cast<uintptr_t>(header);
  if (base + header->e_phoff == getauxval(AT_PHDR)) return;  // we are the executable
  const auto* segments = reinterpret_cast<const ElfW(Phdr)*>(base + header->e_phoff);
  for (unsigned i = 0; i < header->e_phnum; ++i) {
    if (segments[i].p_type != PT_LOAD || (segments[i].p_flags & PF_X) == 0) continue;
    code_start = base + segments[i].p_vaddr;
    code_end = code_start + segments[i].p_memsz;
  }
}

uintptr_t fault_instruction(void* context) {
#if defined(__x86_64__)
  return static_cast<uintptr_t>(static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_RIP]);
#elif defined(__aarch64__)
  return static_cast<uintptr_t>(static_cast<ucontext_t*>(context)->uc_mcontext.pc);
#else
  (void)context;
  return 0;
#endif
}

void fault_handler(int signal_number, siginfo_t* info, void* context) {
  if (info->si_code > 0 && fault_describer != nullptr) {  // a real fault, not kill()
    char line[256];
    memcpy(line, "mapalloc: ", 10);
    size_t length = fault_describer(info->si_addr, line + 10, sizeof line - 11);
    uintptr_t instruction = fault_instruction(context);
    if (length == 0 && instruction >= code_start && instruction < code_end) {
      const char kInside[] =
          "segmentation fault inside mapalloc: a heap structure was corrupted (heap overflow, "
          "underflow or use after free)";
      length = sizeof kInside - 1;
      memcpy(line + 10, kInside, length);
    }
    if (length != 0) {
      line[10 + length] = '\n';
      os_write_all(2, line, 10 + length + 1);
    }
  }
  // The default action from now on, also when a handler the program installed later called
  // this one as the previous handler (SA_RESETHAND then reset nothing): the access runs again
  // and faults, or the signal is raised again, and the process dies of it.
  struct sigaction default_action;
  memset(&default_action, 0, sizeof default_action);
  default_action.sa_handler = SIG_DFL;
  sigaction(signal_number, &default_action, nullptr);
  if (info->si_code <= 0) raise(signal_number);
}

}  // namespace

void os_report_faults(FaultDescriber describe) {
  fault_describer = describe;
  find_own_code();
  const int kSignals[] = {SIGSEGV, SIGBUS};
  for (int signal_number : kSignals) {
    struct sigaction current;
    if (sigaction(signal_number, nullptr, &current) != 0) continue;
    if ((current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != SIG_DFL) continue;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = fault_handler;
    action.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(signal_number, &action, nullptr);
  }
}

}  // namespace mapalloc
