// The heap profiler's coverage program (tests/prof/prof_test.sh). Modes:
//   threads  4 threads keep 4000 x 1000 B each (site_thread_kept) and hand 4000 x 1000 B each
//            to main, which frees them after the threads exited (site_remote: remote frees)
//   kinds    realloc'd blocks growing to large ones (site_realloc, 100 x 300000 B kept),
//            aligned blocks (site_aligned, 5000 x 1000 B at 256 kept), calloc (site_calloc,
//            10000 x 500 B kept), large blocks freed (site_large_freed, 200 x 1 MiB)
//   fork     site_parent keeps 20000 x 500 B; the child frees half, keeps 10000 x 500 B of
//            site_child and exits (its own profile: site_parent inherited)
//   signal   site_signal keeps 20000 x 500 B, raises MAPALLOC_PROF_SIGNAL's signal, _exit(0)
//   api      profiling off: site_off 20000 x 500 B; on: site_on 20000 x 500 B;
//            mapalloc_prof_dump(argv[2])
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void* keep[100000];  // (global: the compiler may not drop the allocations)
int kept;

enum { kThreads = 4, kPerThread = 4000 };
void* handed[kThreads][kPerThread];
void* thread_kept[kThreads][kPerThread];

NOINLINE void site_thread_kept(int t) {
  for (int i = 0; i < kPerThread; ++i) thread_kept[t][i] = malloc(1000);
}
NOINLINE void site_remote(int t) {
  for (int i = 0; i < kPerThread; ++i) handed[t][i] = malloc(1000);
}
static void* thread_main(void* argument) {
  int t = (int)(long)argument;
  site_thread_kept(t);
  site_remote(t);
  return NULL;
}

NOINLINE void site_realloc(void) {
  for (int i = 0; i < 100; ++i) {
    void* block = malloc(64);
    block = realloc(block, 1000);
    block = realloc(block, 5000);
    block = realloc(block, 100000);
    block = realloc(block, 300000);
    keep[kept++] = block;
  }
}
NOINLINE void site_aligned(void) {
  for (int i = 0; i < 5000; ++i) keep[kept++] = aligned_alloc(256, 1000);
}
NOINLINE void site_calloc(void) {
  for (int i = 0; i < 10000; ++i) keep[kept++] = calloc(1, 500);
}
void* volatile sink;  // (the compiler may drop a malloc whose block is only freed)
NOINLINE void site_large_freed(void) {
  for (int i = 0; i < 200; ++i) {
    sink = malloc(1 << 20);
    free(sink);
  }
}
NOINLINE void site_parent(void) {
  for (int i = 0; i < 20000; ++i) keep[kept++] = malloc(500);
}
NOINLINE void site_child(void) {
  for (int i = 0; i < 10000; ++i) keep[kept++] = malloc(500);
}
NOINLINE void site_signal(void) {
  for (int i = 0; i < 20000; ++i) keep[kept++] = malloc(500);
}
NOINLINE void site_off(void) {
  for (int i = 0; i < 20000; ++i) keep[kept++] = malloc(500);
}
NOINLINE void site_on(void) {
  for (int i = 0; i < 20000; ++i) keep[kept++] = malloc(500);
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "threads") == 0) {
    pthread_t threads[kThreads];
    for (long t = 0; t < kThreads; ++t) pthread_create(&threads[t], NULL, thread_main, (void*)t);
    for (int t = 0; t < kThreads; ++t) pthread_join(threads[t], NULL);
    for (int t = 0; t < kThreads; ++t)
      for (int i = 0; i < kPerThread; ++i) free(handed[t][i]);
  } else if (strcmp(mode, "kinds") == 0) {
    site_realloc();
    site_aligned();
    site_calloc();
    site_large_freed();
  } else if (strcmp(mode, "fork") == 0) {
    site_parent();
    pid_t child = fork();
    if (child == 0) {
      for (int i = 0; i < 10000; ++i) free(keep[i]);
      site_child();
      exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    printf("child %d\n", (int)child);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
  } else if (strcmp(mode, "signal") == 0) {
    site_signal();
    raise(atoi(getenv("MAPALLOC_PROF_SIGNAL")));
    _exit(0);
  } else if (strcmp(mode, "api") == 0) {
    int (*set_active)(int) = (int (*)(int))dlsym(RTLD_DEFAULT, "mapalloc_prof_set_active");
    int (*dump)(const char*) = (int (*)(const char*))dlsym(RTLD_DEFAULT, "mapalloc_prof_dump");
    if (set_active == NULL || dump == NULL) return 2;
    set_active(0);
    site_off();
    set_active(1);
    site_on();
    if (dump(argv[2]) != 0) return 3;
    if (dump("/nonexistent-dir/x") != -1) return 4;
    _exit(0);
  } else {
    fprintf(stderr, "usage: prof_kinds threads|kinds|fork|signal|api [PREFIX]\n");
    return 2;
  }
  return 0;
}
