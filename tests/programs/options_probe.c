/* Prints the options mapalloc read from the environment (run with libmapalloc preloaded): those
 * named by argv[2...], or by default the ones below, as "name=value" (nothing for a name that
 * mapalloc_option_get refuses). Then allocates and frees for `argv[1]` milliseconds (default 0). */
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
  const char* const* asked = names;
  size_t count = sizeof(names) / sizeof(names[0]);
  if (argc > 2) {
    asked = (const char* const*)argv + 2;
    count = (size_t)argc - 2;
  }
  for (size_t i = 0; i < count; ++i) {
    long value = -1;
    if (option_get(asked[i], &value) == 0) printf("%s=%ld\n", asked[i], value);
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
