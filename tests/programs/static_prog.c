/* Linked with build/libmapalloc.a (dynamically or fully statically): every allocation, libc's
 * own included, must come from mapalloc; threads and fork must work. Exits non-zero on failure. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mapalloc.h"

static int failures = 0;
static void expect(int condition, const char* what) {
  if (!condition) {
    printf("FAIL %s\n", what);
    failures++;
  }
}

static void* worker(void* argument) {
  long id = (long)argument;
  for (int i = 0; i < 10000; ++i) {
    char* block = malloc(16 + (size_t)(i % 100) * (size_t)id);
    block[0] = (char)i;
    free(block);
  }
  return strdup("done");
}

int main(void) {
  void* block = malloc(64);
  expect(mapalloc_owns(block), "malloc is mapalloc's");
  free(block);
  char* copy = strdup("static");
  expect(mapalloc_owns(copy), "strdup inside libc is mapalloc's");
  free(copy);
  FILE* file = fopen("/proc/self/status", "r");
  char* line = NULL;
  size_t capacity = 0;
  expect(file != NULL && getline(&line, &capacity, file) > 0, "getline works");
  expect(mapalloc_owns(line), "getline's buffer is mapalloc's");
  free(line);
  if (file) fclose(file);
  pthread_t threads[4];
  for (long t = 0; t < 4; ++t) pthread_create(&threads[t], NULL, worker, (void*)(t + 1));
  for (int t = 0; t < 4; ++t) {
    void* result = NULL;
    pthread_join(threads[t], &result);
    expect(mapalloc_owns(result), "a thread's strdup is mapalloc's");
    free(result);
  }
  pid_t child = fork();
  if (child == 0) {
    char* in_child = malloc(1000);
    _exit(mapalloc_owns(in_child) ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a forked child allocates");
  void* large = malloc(10 << 20);
  large = realloc(large, 100 << 20);
  expect(large != NULL && mapalloc_owns(large), "large realloc");
  free(large);
  if (failures == 0) printf("static program: all allocations are mapalloc's\n");
  return failures == 0 ? 0 : 1;
}
