/* Memory return scenario: allocate ~770 MiB in mixed sizes (small, medium, large), touch it,
 * free it all, then run lightly (one small malloc/free per millisecond) for a second, then call
 * malloc_trim(0). Prints resident memory (from /proc/self/statm) at each step:
 *   peak_kib after_free_kib after_1s_kib after_trim_kib
 * Usage: memory_return [MIB] [FREE_IN_OTHER_THREAD(0/1)] */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long resident_kib(void) {
  long pages_total = 0, pages_resident = 0;
  FILE* statm = fopen("/proc/self/statm", "r");
  if (statm == NULL || fscanf(statm, "%ld %ld", &pages_total, &pages_resident) != 2) return -1;
  fclose(statm);
  return pages_resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void** blocks;
static size_t block_count;

static void* free_all(void* unused) {
  (void)unused;
  for (size_t i = 0; i < block_count; ++i) free(blocks[i]);
  return NULL;
}

int main(int argc, char** argv) {
  size_t target = (size_t)(argc > 1 ? atol(argv[1]) : 770) << 20;
  int other_thread = argc > 2 && atoi(argv[2]) != 0;
  uint64_t random = 0x853c49e6748fea9bull;
  size_t capacity = 1 << 22, total = 0;
  blocks = malloc(capacity * sizeof(void*));
  while (total < target && block_count < capacity) {
    random ^= random << 13; random ^= random >> 7; random ^= random << 17;
    unsigned kind = (unsigned)(random % 100);
    size_t size = kind < 50 ? 16 + random % 1000              /* small: half the blocks */
                : kind < 90 ? 1024 + (random >> 8) % (255 * 1024)  /* medium */
                : 256 * 1024 + (random >> 8) % (4 << 20);   /* large */
    char* block = malloc(size);
    if (block == NULL) break;
    memset(block, 1, size);
    blocks[block_count++] = block;
    total += size;
  }
  long peak = resident_kib();
  if (other_thread) {
    pthread_t thread;
    pthread_create(&thread, NULL, free_all, NULL);
    pthread_join(thread, NULL);
  } else {
    free_all(NULL);
  }
  long after_free = resident_kib();
  struct timespec millisecond = {0, 1000000};
  for (int i = 0; i < 1000; ++i) {
    void* volatile light = malloc(64);
    free(light);
    nanosleep(&millisecond, NULL);
  }
  long after_second = resident_kib();
  malloc_trim(0);
  long after_trim = resident_kib();
  printf("%ld %ld %ld %ld\n", peak, after_free, after_second, after_trim);
  free(blocks);
  return 0;
}
