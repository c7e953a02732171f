/* Small programs for tests/debug_plant_test.sh, statically linked with a debug build of
 * mapalloc (build/libmapalloc-debug.a or a planted copy of it).
 *   debug_plants medium   frees medium blocks (16 KiB class: two-page spans, so the blocks of
 *                         the second page take the slow free path) and allocates them again
 *   debug_plants remote   a second thread frees blocks the main thread allocated
 *   debug_plants uaf      writes into a freed block, then allocates until it gets the block
 *                         again
 * Each prints "done" when it finishes. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COUNT 64

static void* blocks[COUNT];

static void* free_all(void* unused) {
  (void)unused;
  for (int i = 0; i < COUNT; ++i) free(blocks[i]);
  return NULL;
}

int main(int argc, char** argv) {
  const char* what = argc > 1 ? argv[1] : "";
  if (strcmp(what, "medium") == 0) {
    for (int round = 0; round < 4; ++round) {
      for (int i = 0; i < COUNT; ++i) blocks[i] = malloc(16000);
      for (int i = 0; i < COUNT; ++i) free(blocks[i]);
    }
  } else if (strcmp(what, "remote") == 0) {
    for (int i = 0; i < COUNT; ++i) blocks[i] = malloc(64);
    pthread_t thread;
    pthread_create(&thread, NULL, free_all, NULL);
    pthread_join(thread, NULL);
    for (int i = 0; i < COUNT; ++i) blocks[i] = malloc(64);
  } else if (strcmp(what, "uaf") == 0) {
    char* block = malloc(64);
    free(block);
    ((volatile char*)block)[40] = 1; /* use after free (volatile: the compiler knows free) */
    /* The block comes back once the heap's list of the class runs out and the page's freed
     * blocks are taken again. */
    char* again = NULL;
    for (int i = 0; i < 100000 && again != block; ++i) again = malloc(64);
    printf("%s\n", again == block ? "same block" : "another block");
  } else {
    fprintf(stderr, "usage: debug_plants medium|remote|uaf\n");
    return 2;
  }
  printf("done\n");
  return 0;
}
