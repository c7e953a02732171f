/* cache — active and passive false sharing (after the cache-scratch/cache-thrash benchmarks).
 *
 * What it tests: whether small blocks of different threads land on the same 64-byte cache line,
 * which makes threads that never share data fight over cache lines.
 *  - active: all threads allocate --objects small objects at the same moment, then each writes
 *    its own objects over and over. An allocator that serves concurrent threads from one shared
 *    region interleaves them on the same lines.
 *  - passive: main allocates the objects and hands them out round-robin (neighbours go to
 *    different threads); each thread frees what it was given and allocates its own. An allocator
 *    that puts a freed block on the freeing thread's list gives threads each other's lines.
 * It prints the number of cache lines holding objects of more than one thread and the time of
 * the write phase. Shared lines are only reported (glibc's arenas, for one, do share them):
 * the program fails only on corrupted data — every object holds a counter and a pattern that
 * are checked at the end.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "stress_alloc.h"
#include "stress_util.h"

static long long opt_threads = 4, opt_objects = 1000, opt_size = 8, opt_iters = 20000, opt_seed = 1;

typedef struct {
  int id;
  void** objs;    /* this thread's objects */
  void** given;   /* passive: objects from main, to free first */
  double seconds; /* write phase */
} worker_t;

static pthread_barrier_t barrier;
static int passive_mode;

static void init_object(void* p, uint64_t seed) {
  fill_pattern(p, (size_t)opt_size, seed);
  memset(p, 0, 8); /* the counter */
}

static void* worker(void* arg) {
  worker_t* w = (worker_t*)arg;
  size_t n = (size_t)opt_objects;
  uint64_t seed = (uint64_t)opt_seed * 31 + (uint64_t)w->id;
  if (passive_mode) {
    for (size_t i = 0; i < n; i++) {
      uint64_t c;
      memcpy(&c, w->given[i], 8);
      if (c != 0xC0FFEE) fail("passive: object %p from main corrupted", w->given[i]);
      S_FREE(w->given[i]);
    }
  }
  pthread_barrier_wait(&barrier);
  for (size_t i = 0; i < n; i++) {
    w->objs[i] = S_MALLOC((size_t)opt_size);
    CHECK_ALLOC(w->objs[i], "malloc", opt_size);
    init_object(w->objs[i], seed);
  }
  pthread_barrier_wait(&barrier);
  double t0 = now_sec();
  for (long long it = 0; it < opt_iters; it++)
    for (size_t i = 0; i < n; i++) {
      volatile uint64_t* c = (volatile uint64_t*)w->objs[i];
      *c = *c + 1;
    }
  w->seconds = now_sec() - t0;
  return NULL;
}

static int cmp_line(const void* a, const void* b) {
  const uint64_t* x = (const uint64_t*)a;
  const uint64_t* y = (const uint64_t*)b;
  return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : (x[1] > y[1]) - (x[1] < y[1]);
}

/* Lines (64-byte) that hold bytes of objects of two or more threads. */
static size_t shared_lines(worker_t* w, size_t nt) {
  size_t n = (size_t)opt_objects, per = ((size_t)opt_size + 63) / 64 + 1, k = 0;
  uint64_t* pairs = (uint64_t*)S_MALLOC(nt * n * per * 2 * sizeof(uint64_t));
  CHECK_ALLOC(pairs, "malloc", nt * n * per * 16);
  for (size_t t = 0; t < nt; t++)
    for (size_t i = 0; i < n; i++) {
      uintptr_t a = (uintptr_t)w[t].objs[i], b = a + (uintptr_t)opt_size - 1;
      for (uintptr_t line = a >> 6; line <= b >> 6; line++) {
        pairs[2 * k] = line;
        pairs[2 * k + 1] = t;
        k++;
      }
    }
  qsort(pairs, k, 2 * sizeof(uint64_t), cmp_line);
  size_t shared = 0;
  for (size_t i = 0; i < k;) {
    size_t j = i + 1;
    int multi = 0;
    for (; j < k && pairs[2 * j] == pairs[2 * i]; j++)
      if (pairs[2 * j + 1] != pairs[2 * i + 1]) multi = 1;
    shared += (size_t)multi;
    i = j;
  }
  S_FREE(pairs);
  return shared;
}

static void check_and_free(worker_t* w, size_t nt) {
  for (size_t t = 0; t < nt; t++) {
    uint64_t seed = (uint64_t)opt_seed * 31 + (uint64_t)w[t].id;
    for (size_t i = 0; i < (size_t)opt_objects; i++) {
      uint64_t c;
      memcpy(&c, w[t].objs[i], 8);
      if (c != (uint64_t)opt_iters)
        fail("object %p of thread %zu: counter %llu, expected %lld", w[t].objs[i], t,
             (unsigned long long)c, opt_iters);
      verify_pattern_from(w[t].objs[i], (size_t)opt_size, 8, (size_t)opt_size, seed,
                          "cache: object");
      S_FREE(w[t].objs[i]);
    }
  }
}

static void run(worker_t* w, size_t nt, size_t* shared_out, double* seconds_out) {
  pthread_t* tids = (pthread_t*)S_MALLOC(nt * sizeof(pthread_t));
  CHECK_ALLOC(tids, "malloc", nt * sizeof(pthread_t));
  pthread_barrier_init(&barrier, NULL, (unsigned)nt);
  for (size_t t = 0; t < nt; t++) {
    int rc = pthread_create(&tids[t], NULL, worker, &w[t]);
    if (rc) fail("pthread_create: %s", strerror(rc));
  }
  double slowest = 0;
  for (size_t t = 0; t < nt; t++) {
    pthread_join(tids[t], NULL);
    if (w[t].seconds > slowest) slowest = w[t].seconds;
  }
  pthread_barrier_destroy(&barrier);
  *shared_out = shared_lines(w, nt);
  *seconds_out = slowest;
  check_and_free(w, nt);
  S_FREE(tids);
}

int main(int argc, char** argv) {
  set_prog_name(argv[0]);
  option_t opts[] = {
      {"threads", &opt_threads, "threads", 0},
      {"objects", &opt_objects, "objects per thread", 0},
      {"size", &opt_size, "object size in bytes (>= 8)", 0},
      {"iters", &opt_iters, "write passes over the objects", 0},
      {"seed", &opt_seed, "pattern seed", 0},
  };
  parse_options(argc, argv,
                "Active and passive false sharing: counts cache lines shared by objects of "
                "different threads and times repeated writes; fails only on corruption.",
                opts, (int)(sizeof opts / sizeof opts[0]));
  if (opt_threads < 1 || opt_objects < 1 || opt_size < 8 || opt_iters < 1) fail("bad options");
  size_t nt = (size_t)opt_threads, n = (size_t)opt_objects;
  worker_t* w = (worker_t*)S_CALLOC(nt, sizeof(worker_t));
  CHECK_ALLOC(w, "calloc", nt * sizeof(worker_t));
  for (size_t t = 0; t < nt; t++) {
    w[t].id = (int)t;
    w[t].objs = (void**)S_MALLOC(n * sizeof(void*));
    w[t].given = (void**)S_MALLOC(n * sizeof(void*));
    CHECK_ALLOC(w[t].objs && w[t].given, "malloc", n * sizeof(void*));
  }
  double t0 = now_sec(), active_s, passive_s;
  size_t active_shared, passive_shared;
  run(w, nt, &active_shared, &active_s);

  /* passive: main's objects, neighbours handed to different threads */
  passive_mode = 1;
  for (size_t i = 0; i < n; i++)
    for (size_t t = 0; t < nt; t++) {
      void* p = S_MALLOC((size_t)opt_size);
      CHECK_ALLOC(p, "malloc", opt_size);
      uint64_t c = 0xC0FFEE;
      memcpy(p, &c, 8);
      w[t].given[i] = p;
    }
  run(w, nt, &passive_shared, &passive_s);

  for (size_t t = 0; t < nt; t++) {
    S_FREE(w[t].objs);
    S_FREE(w[t].given);
  }
  S_FREE(w);
  printf(
      "cache: %zu threads x %zu objects of %lld bytes x %lld passes: active %zu shared lines "
      "(writes %.3f s), passive %zu shared lines (writes %.3f s), total %.2f s, ok\n",
      nt, n, opt_size, opt_iters, active_shared, active_s, passive_shared, passive_s,
      now_sec() - t0);
  return 0;
}
