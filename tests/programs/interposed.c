/* Run with libmapalloc preloaded (or linked): checks that every allocation entry point resolves
 * to mapalloc and that memory from libc's own allocations (strdup, getline, fopen, qsort...) is
 * mapalloc's. Exits non-zero with a message on the first problem. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int (*owns)(const void*);
static const char* library;

static void expect_ours(const char* symbol) {
  void* address = dlsym(RTLD_DEFAULT, symbol);
  Dl_info info;
  if (address == NULL || dladdr(address, &info) == 0 || info.dli_fname == NULL) {
    printf("FAIL %s is not defined\n", symbol);
    exit(1);
  }
  if (strstr(info.dli_fname, library) == NULL) {
    printf("FAIL %s resolves to %s\n", symbol, info.dli_fname);
    exit(1);
  }
}

static void expect_owned(const char* what, const void* pointer) {
  if (!owns(pointer)) {
    printf("FAIL %s (%p) is not a mapalloc block\n", what, pointer);
    exit(1);
  }
}

static void* thread_body(void* argument) {
  (void)argument;
  char* copy = strdup("from a thread");
  expect_owned("strdup in a thread", copy);
  return copy;
}

int main(int argc, char** argv) {
  library = argc > 1 ? argv[1] : "libmapalloc";
  const char* symbols[] = {
      "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
      "memalign", "valloc", "pvalloc", "malloc_usable_size", "malloc_trim", "cfree", "mallopt",
      "mallinfo", "mallinfo2", "malloc_stats", "malloc_info", "__libc_malloc", "__libc_free",
      "__libc_calloc", "__libc_realloc", "__libc_memalign", "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t",
      "_ZnamRKSt9nothrow_t", "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t",
      "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t", "_ZdlPv",
      "_ZdaPv", "_ZdlPvm", "_ZdaPvm", "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t",
      "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t",
      "_ZdaPvmSt11align_val_t", "_ZdlPvSt11align_val_tRKSt9nothrow_t",
      "_ZdaPvSt11align_val_tRKSt9nothrow_t"};
  owns = (int (*)(const void*))dlsym(RTLD_DEFAULT, "mapalloc_owns");
  if (owns == NULL) {
    printf("FAIL mapalloc_owns not found: mapalloc is not loaded\n");
    return 1;
  }
  for (size_t i = 0; i < sizeof(symbols) / sizeof(symbols[0]); ++i) expect_ours(symbols[i]);

  void* block = malloc(100);
  expect_owned("malloc", block);
  free(block);
  char* copy = strdup("mapalloc");
  expect_owned("strdup", copy);
  free(copy);
  FILE* file = fopen("/proc/self/maps", "r");
  char* line = NULL;
  size_t capacity = 0;
  if (file == NULL || getline(&line, &capacity, file) <= 0) {
    printf("FAIL cannot read /proc/self/maps\n");
    return 1;
  }
  expect_owned("getline buffer", line);
  free(line);
  fclose(file);
  char* formatted = NULL;
  if (asprintf(&formatted, "%d-%s", 42, "x") < 0) return 1;
  expect_owned("asprintf", formatted);
  free(formatted);
  pthread_t thread;
  void* result = NULL;
  pthread_create(&thread, NULL, thread_body, NULL);
  pthread_join(thread, &result);
  free(result);
  pid_t child = fork();
  if (child == 0) {
    char* in_child = strdup("child");
    expect_owned("strdup in a forked child", in_child);
    free(in_child);
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    printf("FAIL forked child\n");
    return 1;
  }
  printf("interposed: all entry points and libc allocations are mapalloc's\n");
  return 0;
}
