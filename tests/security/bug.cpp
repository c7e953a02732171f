// One heap bug per program, chosen at compile time: -DBUG_<NAME> (the bug class) and
// -DSIZE=<bytes> (the block size; ignored by the classes that have none). tests/security/run.py
// builds every (class, size) case from this file and runs each under every allocator.
//
// Each program commits its bug, then frees what it holds and allocates and frees a few more
// blocks of the same size (so that checks made at allocation or free can see it), and last
// prints "got away" on stdout and exits 0. The allocator caught the bug when the program stops
// (abort, signal, error exit) before that line.
//
// A few classes are not misuse that should stop the program but a question of correct
// behaviour (an impossibly large request must fail cleanly; heap memory must never be
// executable; the just-freed address should not be handed out again at once). Those print
// "prevented" and exit 3 when the allocator behaved, and "got away" when it did not.
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <new>

#ifndef SIZE
#define SIZE 8
#endif

namespace {

constexpr size_t kMiB = 1 << 20;

// Hide values from the compiler so that it neither warns nor folds the bug away.
template <typename T>
T launder(T value) {
  T volatile copy = value;
  return copy;
}
size_t size() { return launder(static_cast<size_t>(SIZE)); }

char source[3 * kMiB];  // for the memcpy overflows (2 MiB block + 1 MiB)
char global_object[64] __attribute__((aligned(64)));

void write_bytes(char* at, size_t count) {
  volatile char* bytes = at;
  for (size_t i = 0; i < count; ++i) bytes[i] = 'A';
}

char read_bytes(const char* at, size_t count) {
  const volatile char* bytes = at;
  char sum = 0;
  for (size_t i = 0; i < count; ++i) sum = static_cast<char>(sum + bytes[i]);
  return sum;
}

// After the bug: blocks of the same size allocated and freed, so that the allocator's checks
// at allocation and free have their chance.
void churn(size_t bytes) {
  void* blocks[16];
  for (int round = 0; round < 2; ++round) {
    for (auto& block : blocks) block = malloc(bytes);
    for (auto& block : blocks) free(block);
  }
}

[[noreturn]] void got_away() {
  churn(size());
  printf("got away\n");
  fflush(stdout);
  exit(0);
}

[[noreturn]] void prevented() {
  printf("prevented\n");
  fflush(stdout);
  exit(3);
}

// Is `address` in a mapping with execute permission (/proc/self/maps)?
bool executable(const void* address) {
  FILE* maps = fopen("/proc/self/maps", "r");
  if (maps == nullptr) return false;
  char line[512];
  bool found = false;
  auto target = reinterpret_cast<uintptr_t>(address);
  while (fgets(line, sizeof line, maps) != nullptr) {
    unsigned long start, end;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3) continue;
    if (target >= start && target < end) found = perms[2] == 'x';
  }
  fclose(maps);
  return found;
}

#if defined(BUG_OVERFLOW) || defined(BUG_UNDERFLOW)
// -DBY=<bytes>, -DMEMCPY=0/1.
void overflow_or_underflow() {
  char* block = static_cast<char*>(malloc(size()));
  size_t by = launder(static_cast<size_t>(BY));
#ifdef BUG_OVERFLOW
  char* start = block + size();
  size_t count = by;
#else
  char* start = block - by;
  size_t count = by;
#endif
  if (MEMCPY) {
    memset(source, 'B', size() + by);
    // One copy that covers the block and the bytes past (or before) it.
#ifdef BUG_OVERFLOW
    memcpy(block, source, size() + by);
#else
    memcpy(start, source, by + size());
#endif
  } else {
    write_bytes(start, count);
  }
  free(block);
  got_away();
}
#endif

}  // namespace

int main() {
  setvbuf(stdout, nullptr, _IONBF, 0);
#if defined(BUG_OVERFLOW) || defined(BUG_UNDERFLOW)
  overflow_or_underflow();
#elif defined(BUG_UAF)
  // -DACCESS=0 write 16 bytes, 1 read, 2 zero the block; -DBETWEEN=1: one allocation of the
  // same size between the free and the access.
  char* block = static_cast<char*>(malloc(size()));
  memset(block, 'x', size());
  free(block);
  char* other = BETWEEN ? static_cast<char*>(malloc(size())) : nullptr;
  if (ACCESS == 0) write_bytes(block, size() < 16 ? size() : 16);
  if (ACCESS == 1) launder(read_bytes(block, size()));
  if (ACCESS == 2) memset(launder(block), 0, size());
  free(other);
  got_away();
#elif defined(BUG_DOUBLE_FREE_NOW)
  void* block = malloc(size());
  free(block);
  free(launder(block));
  got_away();
#elif defined(BUG_DOUBLE_FREE_DELAYED)
  void* block = malloc(size());
  free(block);
  for (int i = 0; i < 64; ++i) free(malloc(size() * 2 + 16));
  free(launder(block));
  got_away();
#elif defined(BUG_DOUBLE_FREE_INTERLEAVED)
  void* block = malloc(size());
  void* other = malloc(size());
  free(block);
  free(other);
  free(launder(block));
  got_away();
#elif defined(BUG_DOUBLE_FREE_REUSED)
  void* block = malloc(size());
  free(block);
  void* other = malloc(size());  // often the same address: block is live again
  free(launder(block));
  free(other);
  got_away();
#elif defined(BUG_FREE_STACK)
  char on_stack[64] __attribute__((aligned(16)));
  launder(on_stack)[0] = 1;
  free(launder(on_stack + 16));
  got_away();
#elif defined(BUG_FREE_ALLOCA)
  char* on_stack = static_cast<char*>(alloca(launder(64)));
  on_stack[0] = 1;
  free(launder(on_stack));
  got_away();
#elif defined(BUG_FREE_GLOBAL)
  free(launder(global_object + 16));
  got_away();
#elif defined(BUG_FREE_FAR)
  char* block = static_cast<char*>(malloc(64));
  free(launder(block + 256 * kMiB));
  free(block);
  got_away();
#elif defined(BUG_FREE_UNALIGNED)
  char* block = static_cast<char*>(malloc(size()));
  free(launder(block + 1));
  free(block);
  got_away();
#elif defined(BUG_FREE_INTERIOR)
  char* block = static_cast<char*>(malloc(size()));
  free(launder(block + (size() <= 16 ? 8 : size() / 2)));
  free(block);
  got_away();
#elif defined(BUG_ZERO)
  // -DACCESS=0 write 8 bytes, 1 read 8 bytes; -DFREED=1 after the block was freed.
  char* block = static_cast<char*>(malloc(launder(0)));
  if (FREED) free(block);
  if (ACCESS == 0) write_bytes(block, 8);
  if (ACCESS == 1) launder(read_bytes(block, 8));
  if (!FREED) free(block);
  for (int i = 0; i < 32; ++i) free(malloc(launder(0)));
  printf("got away\n");
  exit(0);
#elif defined(BUG_SIZED_DELETE)
  void* block = ::operator new(size());
  ::operator delete(block, launder(size() * 2 + 64));
  got_away();
#elif defined(BUG_NEW_DELETE_ARRAY)
  void* block = ::operator new(size());
  ::operator delete[](launder(block));
  got_away();
#elif defined(BUG_NEW_ARRAY_DELETE)
  void* block = ::operator new[](size());
  ::operator delete(launder(block));
  got_away();
#elif defined(BUG_HUGE)
  // -DHOW=0 malloc, 1 calloc (count * size overflows), 2 realloc, 3 posix_memalign,
  // 4 operator new, 5 operator new[] (nothrow), 6 aligned_alloc. Correct: NULL and ENOMEM
  // (posix_memalign: returns ENOMEM), or std::bad_alloc.
  size_t huge = launder(SIZE_MAX - 4096);
  errno = 0;
  void* block = nullptr;
  int error = 0;
  if (HOW == 0) block = malloc(huge);
  if (HOW == 1) block = calloc(launder(size_t{1} << 33), launder(size_t{1} << 32));
  if (HOW == 2) {
    void* small = malloc(16);
    block = realloc(small, huge);
    if (block == nullptr) free(small);
  }
  if (HOW == 3) error = posix_memalign(&block, 64, huge);
  if (HOW == 4) {
    try {
      block = ::operator new(huge);
    } catch (const std::bad_alloc&) {
      prevented();
    }
    got_away();
  }
  if (HOW == 5) {
    block = ::operator new[](huge, std::nothrow);
    if (block == nullptr) prevented();
    got_away();
  }
  if (HOW == 6) block = aligned_alloc(4096, huge & ~size_t{4095});
  if (HOW == 3 ? (block == nullptr && error == ENOMEM) : (block == nullptr && errno == ENOMEM))
    prevented();
  got_away();
#elif defined(BUG_EXEC_HEAP)
  void* block = malloc(size());
  bool exec = executable(block);
  free(block);
  if (!exec) prevented();
  got_away();
#elif defined(BUG_REUSE)
  void* block = malloc(size());
  free(block);
  void* again = malloc(size());
  bool same = again == block;
  free(again);
  if (!same) prevented();
  got_away();
#else
#error "no BUG_ class given"
#endif
}
