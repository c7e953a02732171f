/* The loop behind the benchmark's instruction counts: 64 live blocks of one size, each step frees
 * one and allocates one, so every call stays on the allocator's fast path.
 *   fastpath ITERATIONS SIZE */
#include <stdlib.h>

int main(int argc, char** argv) {
  long iterations = argc > 1 ? atol(argv[1]) : 1000000;
  size_t size = argc > 2 ? (size_t)atol(argv[2]) : 32;
  enum { kSlots = 64 };
  void* volatile slots[kSlots];
  for (int i = 0; i < kSlots; ++i) slots[i] = malloc(size);
  for (long i = 0; i < iterations; ++i) {
    unsigned j = (unsigned)i & (kSlots - 1);
    free(slots[j]);
    slots[j] = malloc(size);
  }
  for (int i = 0; i < kSlots; ++i) free(slots[i]);
  return 0;
}
