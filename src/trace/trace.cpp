// The recorder of the tracing build (build/libmapalloc-trace.so): logs each call that its entry
// points (trace_override.cpp) report into the trace file (format in trace.h). A separate
// library, so that the normal build's fast paths never test whether tracing is on.
//
// Per call: one shared atomic (the sequence number, which is also a new block's id), a lookup
// or store in the address -> id map, the thread's own log lock (only ever contended by the exit
// flush), a cycle-counter read and a few bytes appended to the thread's buffer. The tracer's
// memory (buffers, map) comes from mmap, never from the allocator it traces, and it calls
// nothing that allocates while it holds a lock, so a nested malloc (pthread_setspecific,
// pthread_atfork) is traced like any other call. A call from a signal handler that interrupted
// the tracer goes through untraced (tls_busy). A write that fails (full disk, RLIMIT_FSIZE, the
// descriptor closed by the program) stops tracing; the program runs on.
//
// Files: the first traced process writes MAPALLOC_TRACE_FILE (default mapalloc.trace) and holds
// an flock on it; a process started while it runs (an exec'd child that inherited LD_PRELOAD)
// finds it locked and writes FILE.<pid>. fork() children that do not exec are not traced.
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <new>

#include "api/cxx_runtime.h"
#include "api/entry.h"
#include "platform/diag.h"
#include "platform/os.h"
#include "platform/spin_lock.h"
#include "trace/trace.h"
#include "trace/trace_recorder.h"

using namespace mapalloc;
namespace tr = mapalloc::trace;
using namespace mapalloc::tracer;

namespace {

class ErrnoGuard {  // a successful allocation leaves errno unchanged: so must its tracing
 public:
  ErrnoGuard() : saved_(errno) {}
  ~ErrnoGuard() { errno = saved_; }

 private:
  int saved_;
};

// ---- state ------------------------------------------------------------------------------------
__thread bool tls_starting __attribute__((tls_model("initial-exec"))) = false;

int trace_fd = -1;
std::atomic<bool> write_failed{false};
SpinLock write_lock;  // one writer at a time: a failed write can be taken back whole
dev_t trace_dev;
ino_t trace_ino;
pid_t trace_pid;
uint64_t start_ns;  // CLOCK_MONOTONIC at the start: record times are microseconds since then
pthread_key_t thread_key;
bool thread_key_ready = false;

std::atomic<uint64_t> next_seq{0};     // records so far, process-wide: the global order
std::atomic<uint32_t> next_thread{0};  // threads that recorded so far

// Set while this thread is inside the tracer (taking a log, or from taking a sequence number to
// the end of its record): a call made meanwhile can only come from a signal handler that
// interrupted the tracer. It goes through untraced: recording it would take a lock this thread
// holds, or emit a record numbered after the interrupted one, before it.
__thread bool tls_busy __attribute__((tls_model("initial-exec"))) = false;
// Set once this thread's log went back at thread exit (its key destructor ran): calls it makes
// later (other destructors, glibc's own clean-up) each take a log and give it back at once.
__thread bool tls_exited __attribute__((tls_model("initial-exec"))) = false;
__thread bool tls_writing __attribute__((tls_model("initial-exec"))) = false;  // holds write_lock
struct BusyGuard {
  bool saved = tls_busy;
  BusyGuard() { tls_busy = true; }
  ~BusyGuard() { tls_busy = saved; }
};

uint64_t monotonic_ns() { return os_clock_ns(OsClock::kPrecise); }

// ---- the address -> block id map ----------------------------------------------------------------
// A two-level table indexed by address, like a sanitizer's shadow memory: for each 64 MiB of
// address space that holds blocks, a lazily mapped array of one 8-byte id per 16 bytes (every
// block is 16-byte aligned). Unlike a hash table, a block's entry sits next to its neighbours'
// entries, so the map's cache footprint follows the program's own (a hash table made tracing
// several times slower with 200,000 live blocks). An address belongs to one live block at a
// time, and the allocator orders a free before the reuse of its address, so entries need no
// lock: relaxed atomic loads and stores.
constexpr unsigned kRegionShift = 26;
constexpr size_t kRegionSlots = (size_t{1} << kRegionShift) / kMinAlignBytes;
constexpr size_t kRegions = size_t{1} << (kAddressBits - kRegionShift);
std::atomic<uint64_t*>* regions = nullptr;  // kRegions entries, mapped when tracing starts

void* map_reserve(size_t bytes) {  // address space, backed by memory only where touched
  void* start = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return start == MAP_FAILED ? nullptr : start;
}

uint64_t* slot_of(const void* pointer, bool create) {
  auto address = reinterpret_cast<uintptr_t>(pointer);
  if ((address >> kAddressBits) != 0 || address % kMinAlignBytes != 0) return nullptr;
  std::atomic<uint64_t*>& entry = regions[address >> kRegionShift];
  uint64_t* region = entry.load(std::memory_order_acquire);
  if (MAPALLOC_UNLIKELY(region == nullptr)) {
    if (!create) return nullptr;
    ErrnoGuard errno_guard;
    region = static_cast<uint64_t*>(map_reserve(kRegionSlots * sizeof(uint64_t)));
    if (region == nullptr) return nullptr;  // the block stays unknown
    uint64_t* winner = nullptr;
    if (!entry.compare_exchange_strong(winner, region, std::memory_order_acq_rel)) {
      munmap(region, kRegionSlots * sizeof(uint64_t));  // another thread mapped it first
      region = winner;
    }
  }
  return region + (address / kMinAlignBytes) % kRegionSlots;
}

void map_insert(const void* pointer, uint64_t id) {
  if (uint64_t* slot = slot_of(pointer, true)) __atomic_store_n(slot, id, __ATOMIC_RELAXED);
}

// The block's id (0: unknown); with `remove`, the entry goes.
uint64_t map_find(const void* pointer, bool remove) {
  uint64_t* slot = slot_of(pointer, false);
  if (slot == nullptr) return 0;
  uint64_t id = __atomic_load_n(slot, __ATOMIC_RELAXED);
  if (remove && id != 0) __atomic_store_n(slot, 0, __ATOMIC_RELAXED);
  return id;
}

// ---- per-thread logs
// ------------------------------------------------------------------------------ A log is one
// thread's buffer: a chunk header followed by records. It lives in its own mapping and is never
// unmapped: a thread's log returns to the pool at thread exit (flushed) and serves the next new
// thread; the exit flush walks the list of every log.
constexpr size_t kPayloadBytes = 256 * kKiB;
constexpr size_t kMaxRecordBytes = 1 + 7 * tr::kMaxVarintBytes;

struct Log {
  SpinLock lock;  // the owner while it appends or flushes; the exit flush
  uint32_t thread = 0;
  uint32_t records = 0;
  size_t used = 0;  // payload bytes
  uint64_t base_seq = 0, base_time = 0;
  uint64_t prev_seq = 0, prev_time = 0;
  uint64_t clock_ticks = 0;  // os_ticks() at the last clock read
  bool transient = false;    // taken after its thread's exit: given back after each record
  Log* all_next = nullptr;
  Log* pool_next = nullptr;
  uint8_t* buffer = nullptr;  // chunk header, then kPayloadBytes
};

std::atomic<Log*> all_logs{nullptr};
SpinLock pool_lock;
Log* pool = nullptr;
__thread Log* tls_log __attribute__((tls_model("initial-exec"))) = nullptr;
__thread uint32_t tls_thread __attribute__((tls_model("initial-exec"))) = 0;  // index + 1

void stop_tracing(const char* why) {
  write_failed.store(true);
  if (state.exchange(kOff) == kRecording) diag_write("mapalloc-trace: %s; tracing stopped", why);
}

// Writes all of it (false on failure: a full disk, the file size limit), undoing a partial
// write so that the file ends on a whole chunk. Under write_lock: no other writer comes between.
bool write_whole(int fd, const uint8_t* data, size_t bytes, const char** why) {
  struct stat now;
  if (fstat(fd, &now) != 0 ||
      (trace_fd == fd && (now.st_dev != trace_dev || now.st_ino != trace_ino))) {
    *why = "the program closed the trace file's descriptor";
    return false;
  }
  // Past RLIMIT_FSIZE, write(2) raises SIGXFSZ, which kills the program by default.
  struct rlimit limit;
  if (getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
      static_cast<uint64_t>(now.st_size) + bytes > limit.rlim_cur) {
    *why = "the trace file reached the file size limit (RLIMIT_FSIZE)";
    return false;
  }
  for (size_t done = 0; done < bytes;) {
    ssize_t written = write(fd, data + done, bytes - done);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) {
      if (done != 0) {  // (if this fails too, the reader reports the torn chunk)
        int undone = ftruncate(fd, now.st_size);
        (void)undone;
      }
      *why = "cannot write the trace file";
      return false;
    }
    done += static_cast<size_t>(written);
  }
  return true;
}

// One write(2) per chunk, under write_lock: chunks of different threads never interleave.
void write_chunk(const uint8_t* chunk, size_t bytes) {
  const char* why = nullptr;
  bool ok;
  {
    SpinLockGuard guard(write_lock);
    tls_writing = true;
    ok = !write_failed.load() && write_whole(trace_fd, chunk, bytes, &why);
    tls_writing = false;
  }
  if (!ok && why != nullptr) stop_tracing(why);
}

void flush_locked(Log* log) {
  if (log->records == 0) return;
  ErrnoGuard errno_guard;
  tr::put_chunk_header(log->buffer, log->thread, log->used, log->records, log->base_seq,
                       log->base_time);
  // What was recorded is written even after recording stopped (at exit), but never by a fork
  // child: the buffers it inherited belong to the parent.
  if (!write_failed.load(std::memory_order_relaxed) && getpid() == trace_pid) {
    write_chunk(log->buffer, tr::kChunkHeaderBytes + log->used);
  }
  log->used = 0;
  log->records = 0;
  log->base_seq = log->prev_seq;
  log->base_time = log->prev_time;
}

MAPALLOC_NOINLINE Log* attach_log() {
  if (tls_busy) return nullptr;  // (a signal handler's call, inside attach_log itself)
  ErrnoGuard errno_guard;
  Log* log;
  {
    BusyGuard busy;
    {
      SpinLockGuard guard(pool_lock);
      log = pool;
      if (log != nullptr) pool = log->pool_next;
    }
    if (log == nullptr) {
      void* memory = map_reserve(sizeof(Log) + tr::kChunkHeaderBytes + kPayloadBytes);
      if (memory == nullptr) return nullptr;
      log = new (memory) Log;
      log->buffer = static_cast<uint8_t*>(memory) + sizeof(Log);
      log->all_next = all_logs.load(std::memory_order_relaxed);
      while (!all_logs.compare_exchange_weak(log->all_next, log, std::memory_order_release)) {
      }
    }
    if (tls_thread == 0) tls_thread = next_thread.fetch_add(1, std::memory_order_relaxed) + 1;
    log->thread = tls_thread - 1;
    log->base_seq = log->base_time = log->prev_seq = log->prev_time = log->clock_ticks = 0;
    log->transient = tls_exited;
    tls_log = log;  // before anything that may allocate: a nested call finds the log
  }
  // Re-arming the key after the thread's destructors ran would leave the log attached to a
  // dead thread for good: a transient log goes back after each record instead.
  if (thread_key_ready && !tls_exited) pthread_setspecific(thread_key, log);
  return log;
}

// Flush the log and hand it to the pool (thread exit, and after a transient log's record).
void release_log(Log* log) {
  BusyGuard busy;
  log->lock.lock();
  flush_locked(log);
  log->lock.unlock();
  if (tls_log == log) tls_log = nullptr;
  SpinLockGuard guard(pool_lock);
  log->pool_next = pool;
  pool = log;
}

// Thread exit (a pthread key destructor). In a fork child (which records nothing) the log and
// the pool are the parent's, their locks perhaps held by threads the child does not have.
void on_thread_exit(void* value) {
  tls_exited = true;
  if (getpid() != trace_pid) {
    tls_log = nullptr;
    return;
  }
  release_log(static_cast<Log*>(value));
}

MAPALLOC_INLINE Log* current_log() {
  Log* log = tls_log;
  return MAPALLOC_LIKELY(log != nullptr) ? log : attach_log();
}

// ---- records -----------------------------------------------------------------------------------
constexpr uint64_t kUnknownBlock = ~uint64_t{0};
struct Fields {
  uint64_t ref = 0;  // 0: NULL, kUnknownBlock, else a block id
  uint64_t count = 0, size = 0, alignment = 0;
  bool null_result = false;
};

// The call's sequence number, which is also the id of the block it allocates.
MAPALLOC_INLINE uint64_t take_seq() { return next_seq.fetch_add(1, std::memory_order_relaxed) + 1; }

// Microseconds since the start. The clock (a vDSO call, 25-40 ns) is read again only once the
// cycle counter (a few ns) says about a microsecond has passed since the thread's last read, so
// a busy thread pays for it once per microsecond and every record is still accurate to ~1 us.
constexpr uint64_t kTicksPerClockRead = kTicksPerCheck >> 9;  // (kTicksPerCheck: ~1 ms)
MAPALLOC_INLINE uint64_t now_us(Log* log) {
  uint64_t ticks = os_ticks();
  if (ticks - log->clock_ticks < kTicksPerClockRead) return log->prev_time;
  log->clock_ticks = ticks;
  uint64_t time = (monotonic_ns() - start_ns) / 1000;
  return time > log->prev_time ? time : log->prev_time;
}

void emit(Log* log, unsigned op, uint64_t seq, const Fields& f) {
  log->lock.lock();
  if (log->used + kMaxRecordBytes > kPayloadBytes) flush_locked(log);
  uint64_t time = now_us(log);
  uint8_t* start = log->buffer + tr::kChunkHeaderBytes + log->used;
  uint8_t* out = start + 1;
  uint8_t op_byte = static_cast<uint8_t>(op | (f.null_result ? tr::kNullResult : 0));
  if (seq == log->prev_seq + 1)
    op_byte |= tr::kSeqIsNext;
  else
    out = tr::put_varint(out, seq - log->prev_seq);
  if (time == log->prev_time)
    op_byte |= tr::kSameTime;
  else
    out = tr::put_varint(out, time - log->prev_time);
  *start = op_byte;
  if (tr::op_has_ref(op)) {
    out = tr::put_varint(out, f.ref == 0 ? 0 : f.ref == kUnknownBlock ? 1 : 2 + (seq - f.ref));
  }
  if (tr::op_has_count(op)) out = tr::put_varint(out, f.count);
  if (tr::op_has_size(op)) out = tr::put_varint(out, f.size);
  if (tr::op_has_alignment(op)) out = tr::put_varint(out, f.alignment);
  log->used += static_cast<size_t>(out - start);
  ++log->records;
  log->prev_seq = seq;
  log->prev_time = time;
  log->lock.unlock();
  if (MAPALLOC_UNLIKELY(log->transient)) release_log(log);
}

// ---- starting and stopping -------------------------------------------------------------------
void on_fork_child() { state.store(kOff, std::memory_order_relaxed); }

bool open_trace() {
  const char* path = getenv("MAPALLOC_TRACE_FILE");
  if (path == nullptr || *path == '\0') path = "mapalloc.trace";
  uint32_t flags = 0;
  char child_path[4096];
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  // (A file system without flock: the file is taken as if unlocked.)
  bool held = fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  if (fd >= 0 && !held) {
    if (ftruncate(fd, 0) != 0) {
      close(fd);
      fd = -1;
    }
  } else if (fd >= 0) {  // held by a traced process that is still running: our parent
    close(fd);
    diag_snprintf(child_path, sizeof(child_path), "%s.%d", path, static_cast<int>(getpid()));
    fd = open(child_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) flock(fd, LOCK_EX | LOCK_NB);
    flags |= tr::kFlagChildProcess;
    path = child_path;
  }
  if (fd < 0) {
    diag_write("mapalloc-trace: cannot open %s: not tracing", path);
    return false;
  }
  int high = fcntl(fd, F_DUPFD_CLOEXEC, 700);  // out of the way of programs reusing low fds
  if (high >= 0) {
    close(fd);
    fd = high;
  }
  struct stat info;
  if (fstat(fd, &info) != 0) {
    close(fd);
    return false;
  }
  trace_dev = info.st_dev;
  trace_ino = info.st_ino;

  uint8_t header[tr::kHeaderFixedBytes + tr::kMaxProgramBytes];
  ssize_t name_bytes =
      readlink("/proc/self/exe", reinterpret_cast<char*>(header) + tr::kHeaderFixedBytes,
               tr::kMaxProgramBytes);
  if (name_bytes < 0) name_bytes = 0;
  uint64_t unix_ns = os_clock_ns(OsClock::kWall);
  size_t bytes = tr::put_header(header, static_cast<uint32_t>(getpid()), unix_ns, flags,
                                static_cast<size_t>(name_bytes));
  // (Recording is published by start_tracing once everything here is in place.)
  const char* why;
  if (!write_whole(fd, header, bytes, &why)) {
    diag_write("mapalloc-trace: %s: %s; not tracing", path, why);
    close(fd);
    return false;
  }
  trace_fd = fd;
  trace_pid = getpid();
  start_ns = monotonic_ns();
  return true;
}

// The first call of the process starts tracing. Calls the starting thread makes meanwhile go
// through untraced; other threads wait.
bool start_tracing_once() {
  int expected = kUnstarted;
  if (state.compare_exchange_strong(expected, kStarting, std::memory_order_acq_rel)) {
    ErrnoGuard errno_guard;
    tls_starting = true;
    thread_key_ready = pthread_key_create(&thread_key, on_thread_exit) == 0;  // no allocation
    regions = static_cast<std::atomic<uint64_t*>*>(map_reserve(kRegions * sizeof(uint64_t*)));
    bool ok = regions != nullptr && open_trace();
    state.store(ok ? kRecording : kOff, std::memory_order_release);
    if (ok) pthread_atfork(nullptr, nullptr, on_fork_child);  // may allocate: traced
    tls_starting = false;
    return ok;
  }
  if (expected == kStarting && tls_starting) return false;
  while (state.load(std::memory_order_acquire) == kStarting) sched_yield();
  return state.load(std::memory_order_acquire) == kRecording;
}

// At load, if no call came before: a program that never allocates still leaves a trace.
__attribute__((constructor)) void start_at_load() {
  if (state.load(std::memory_order_acquire) == kUnstarted) start_tracing_once();
}

// A log's lock at exit. Not this thread's own log if exit() was called by a signal handler
// that interrupted the tracer (its lock is held below us, its buffer half-written: it is
// lost); another thread's after a second at most (a thread stopped inside the tracer).
bool lock_at_exit(Log* log, bool busy) {
  if (log == tls_log && busy) return false;
  uint64_t deadline = 0;
  for (unsigned spins = 0; !log->lock.try_lock(); ++spins) {
    if (spins < 64) continue;
    sched_yield();
    uint64_t now = monotonic_ns();
    if (deadline == 0) deadline = now + 1000000000u;
    if (now > deadline) return false;
  }
  return true;
}

// At exit: stop recording, flush every thread's buffer, then the end marker (totals). Calls
// made after this (later destructors, threads still running) are not recorded.
__attribute__((destructor(101))) void finish_trace() {
  if (state.load() != kRecording || getpid() != trace_pid) return;
  state.store(kOff);
  if (tls_writing) return;  // exit() from a signal handler that interrupted our write
  bool busy = tls_busy;
  BusyGuard busy_guard;
  for (Log* log = all_logs.load(std::memory_order_acquire); log != nullptr; log = log->all_next) {
    if (!lock_at_exit(log, busy)) continue;
    flush_locked(log);
    log->lock.unlock();
  }
  uint8_t end[tr::kChunkHeaderBytes + 2 * tr::kMaxVarintBytes];
  uint8_t* out = tr::put_varint(end + tr::kChunkHeaderBytes, next_seq.load());
  out = tr::put_varint(out, next_thread.load());
  size_t payload = static_cast<size_t>(out - end) - tr::kChunkHeaderBytes;
  tr::put_chunk_header(end, tr::kEndThread, payload, 0, 0, 0);
  write_chunk(end, tr::kChunkHeaderBytes + payload);
}

// Before the block goes back (a free, or the block handed to realloc): once freed, its address
// may be handed out, and entered in the map, by another thread at once.
uint64_t take_ref(const void* block, bool remove) {
  if (block == nullptr) return 0;
  uint64_t id = map_find(block, remove);
  return id != 0 ? id : kUnknownBlock;
}

}  // namespace

// ---- mapalloc::tracer (trace_recorder.h) -------------------------------------------------------
namespace mapalloc::tracer {

std::atomic<int> state{kUnstarted};

bool start_tracing() { return start_tracing_once(); }

void record_alloc(unsigned op, uint64_t count, uint64_t size, uint64_t alignment, void* block) {
  if (tls_busy) return;      // a signal handler's call, made inside the tracer: untraced
  Log* log = current_log();  // first: attaching a log may allocate (a nested, traced call)
  if (log == nullptr) return;
  BusyGuard busy;
  uint64_t seq = take_seq();
  if (block != nullptr) map_insert(block, seq);
  emit(log, op, seq, {0, count, size, alignment, block == nullptr});
}

void record_release(unsigned op, void* block, uint64_t size, uint64_t alignment) {
  Log* log = tls_busy ? nullptr : current_log();
  uint64_t ref = take_ref(block, op != tr::kUsableSize);  // (even untraced: the block goes)
  if (log == nullptr) return;
  BusyGuard busy;
  emit(log, op, take_seq(), {ref, 0, size, alignment, false});
}

// realloc and reallocarray: the old block leaves the map before the call (once freed, its
// address may go to another thread at once) and comes back under its id if the call fails. The
// record is numbered after the call, which may make a nested, traced call of its own (the
// core's set-up of a thread). `total`: count * size, unless that overflows (`overflow`).
void* traced_realloc(unsigned op, void* block, uint64_t count, uint64_t size, size_t total,
                     bool overflow) {
  if (!tracing() || tls_busy) return overflow ? nullptr : realloc_impl(block, total);
  uint64_t ref = take_ref(block, true);
  void* result = overflow ? nullptr : realloc_impl(block, total);
  bool freed = result == nullptr && total == 0 && !overflow;  // realloc(p, 0) frees p
  if (result == nullptr && !freed && ref != 0 && ref != kUnknownBlock) map_insert(block, ref);
  // The log only now: a nested call in realloc_impl may have given a transient log back.
  Log* log = current_log();
  if (log == nullptr) return result;
  BusyGuard busy;
  uint64_t seq = take_seq();
  if (result != nullptr) map_insert(result, seq);
  emit(log, op, seq, {ref, count, size, 0, result == nullptr});
  return result;
}

}  // namespace mapalloc::tracer
