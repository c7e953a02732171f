/* Prints the options mapalloc read from the environment (run with libmapalloc preloaded), then
 * allocates and frees for `argv[1]` milliseconds (default 0). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char** argv) {
  const char* names[] = {"purge_delay_ms", "unmap_delay_ms", "purge_method", "zero_on_free",
                         "transparent_huge_pages", "stats_at_exit", "verbose"};
  /* Found at run time: the program is not linked with mapalloc, only preloaded with it. */
  int (*option_get)(const char*, long*) =
      (int (*)(const char*, long*))dlsym(RTLD_DEFAULT, "mapalloc_option_get");
  if (option_get == NULL) {
    fprintf(stderr, "mapalloc is not loaded\n");
    return 1;
  }
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); ++i) {
    long value = -1;
    if (option_get(names[i], &value) == 0) printf("%s=%ld\n", names[i], value);
  }
  long milliseconds = argc > 1 ? atol(argv[1]) : 0;
  struct timespec one_ms = {0, 1000000};
  void* held[64] = {0};
  for (long i = 0; i < milliseconds; ++i) {
    free(held[i % 64]);
    held[i % 64] = malloc(1000 + (size_t)(i % 7) * 4000);
    nanosleep(&one_ms, NULL);
  }
  for (int i = 0; i < 64; ++i) free(held[i]);
  return 0;
}
