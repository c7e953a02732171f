/* Planted memory errors for tests/memcheck_test.sh, linked statically with mapalloc's debug
 * build (memcheck cannot replace malloc in a static program: only the debug build's client
 * requests show it the blocks).
 *   memcheck_plants uaf        writes into a freed block
 *   memcheck_plants overflow   writes one byte past a 32-byte block, into the next block
 *   memcheck_plants uninit     branches on a word of a block never written
 *   memcheck_plants leak       drops the only pointer to a 100-byte block
 *   memcheck_plants clean      malloc, calloc, realloc (growing, shrinking, large), aligned
 *                              blocks and a thread freeing another's blocks: no error at all */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char* shared[64];

static void* free_shared(void* unused) {
  (void)unused;
  for (int i = 0; i < 64; ++i) free(shared[i]);
  return NULL;
}

static void clean(void) {
  for (size_t i = 0; i < 2000; ++i) {
    size_t size = 1 + (i * 37) % 3000;
    char* block = malloc(size);
    memset(block, 1, size);
    block = realloc(block, size * 2 + 1);
    block[size * 2] = 0;
    block = realloc(block, size / 2 + 1);
    block[size / 2] = 2;
    free(block);
  }
  char* big = malloc(300000);
  memset(big, 3, 300000);
  big = realloc(big, 900000);
  if (big[299999] != 3) printf("realloc lost data\n");
  free(big);
  int* zeroed = calloc(100, sizeof(int));
  if (zeroed[50] != 0) printf("calloc not zero\n");
  free(zeroed);
  void* aligned = NULL;
  if (posix_memalign(&aligned, 256, 100) == 0) memset(aligned, 4, 100);
  free(aligned);
  for (int i = 0; i < 64; ++i) shared[i] = strdup("shared between threads");
  pthread_t thread;
  pthread_create(&thread, NULL, free_shared, NULL);
  pthread_join(thread, NULL);
}

int main(int argc, char** argv) {
  const char* what = argc > 1 ? argv[1] : "";
  if (strcmp(what, "uaf") == 0) {
    char* block = malloc(48);
    strcpy(block, "freed");
    free(block);
    ((volatile char*)block)[3] = 7;
  } else if (strcmp(what, "overflow") == 0) {
    char* block = malloc(32);
    char* next = malloc(32);
    ((volatile char*)block)[32] = 1;
    free(block);
    free(next);
  } else if (strcmp(what, "uninit") == 0) {
    int* block = malloc(64);
    if (block[3] == 42) printf("42\n");
    free(block);
  } else if (strcmp(what, "leak") == 0) {
    void* volatile block = malloc(100);
    block = NULL;
  } else if (strcmp(what, "clean") == 0) {
    clean();
  } else {
    fprintf(stderr, "usage: memcheck_plants uaf|overflow|uninit|leak|clean\n");
    return 2;
  }
  return 0;
}
