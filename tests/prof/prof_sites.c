// The heap profiler's accuracy test program: four allocation sites of known sizes.
//   site_small  200000 x 48 bytes, held at exit            (9.6 MB)
//   site_churn  20000 x 4000 bytes, all held at once (the peak), then all freed (80 MB)
//   site_medium 20000 x 900 bytes, held at exit            (18 MB)
//   site_large  40 x 512 KiB (large blocks), held at exit  (21 MB)
// Peak: small + churn. End: small + medium + large. Allocated: churn the most.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

void* keep[300000];  // (global: the compiler may not drop the allocations)
static int kept;

NOINLINE void site_small(void) {
  for (int i = 0; i < 200000; ++i) keep[kept++] = malloc(48);
}
NOINLINE void* churn_one(void) { return malloc(4000); }
NOINLINE void site_churn(void) {
  static void* held[20000];
  for (int i = 0; i < 20000; ++i) {
    held[i] = churn_one();
    memset(held[i], 1, 64);
  }
  for (int i = 0; i < 20000; ++i) free(held[i]);
}
NOINLINE void site_medium(void) {
  for (int i = 0; i < 20000; ++i) keep[kept++] = malloc(900);
}
NOINLINE void site_large(void) {
  for (int i = 0; i < 40; ++i) keep[kept++] = malloc(512 * 1024);
}

int main(void) {
  site_small();
  site_churn();
  site_medium();
  site_large();
  printf("kept %d blocks\n", kept);
  return 0;
}
