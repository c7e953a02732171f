/* How many blocks of one size fit under an address-space limit (RLIMIT_AS):
 *   address_space BLOCK_KIB LIMIT_MIB
 * sets the limit, allocates blocks until malloc fails, and prints the count. Run preloaded with
 * any allocator (tests/unit_large.cpp, for mapalloc). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: address_space BLOCK_KIB LIMIT_MIB\n");
    return 2;
  }
  size_t block_bytes = strtoul(argv[1], NULL, 10) << 10;
  struct rlimit limit = {strtoul(argv[2], NULL, 10) << 20, RLIM_INFINITY};
  if (setrlimit(RLIMIT_AS, &limit) != 0) {
    perror("setrlimit");
    return 2;
  }
  size_t count = 0;
  while (malloc(block_bytes) != NULL) ++count;
  printf("%zu\n", count);
  return 0;
}
