/* larson — a Larson-style server simulation.
 *
 * What it tests: the cross-thread ("remote") free path and heap hand-over at thread exit, the
 * two things a server-like workload leans on. A shared array of slots holds live blocks; worker
 * threads pick slots at random, check the block there (it was usually allocated by another
 * thread, often one that has exited), free it and put a new block of a random size in its place
 * (sometimes with realloc instead of free + malloc). Each worker exits after --rounds operations
 * and starts its own successor, so blocks keep outliving the threads that allocated them, and
 * the allocator has to hand a dead thread's memory to somebody. The first blocks are allocated
 * by main, so even the first frees are remote.
 *
 * Slots are taken with an atomic exchange (NULL = someone else holds it), so the program itself
 * is race-free; every block carries its size, seed and pattern and is checked before it is
 * freed or realloc'ed, and every slot is checked at the end.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "stress_alloc.h"
#include "stress_util.h"

static long long opt_threads = 4, opt_ms = 3000, opt_slots = 2000, opt_rounds = 20000, opt_min = 16,
                 opt_max = 1024, opt_seed = 1;

static _Atomic(void*)* slots;
static size_t nslots;
static atomic_int stop_flag;
static atomic_int live_workers;
static atomic_llong total_ops, total_busy, generations;

typedef struct {
  uint64_t seed;
} worker_arg_t;

static void* worker(void* argp);

static void start_worker(uint64_t seed) {
  worker_arg_t* a = (worker_arg_t*)S_MALLOC(sizeof *a);
  CHECK_ALLOC(a, "malloc", sizeof *a);
  a->seed = seed;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  atomic_fetch_add(&live_workers, 1);
  pthread_t t;
  int rc = pthread_create(&t, &attr, worker, a);
  if (rc) fail("pthread_create: %s", strerror(rc));
  pthread_attr_destroy(&attr);
  atomic_fetch_add(&generations, 1);
}

static void* new_block(rng_t* r, size_t* size_out) {
  size_t n = (size_t)rng_logrange(r, (uint64_t)opt_min, (uint64_t)opt_max);
  void* p = S_MALLOC(n);
  CHECK_ALLOC(p, "malloc", n);
  tag_block(p, n, rng_next(r));
  if (size_out) *size_out = n;
  return p;
}

static void* worker(void* argp) {
  worker_arg_t* a = (worker_arg_t*)argp;
  rng_t r = {a->seed};
  S_FREE(a); /* allocated by the predecessor (or main): a remote free at once */
  long long ops = 0, busy = 0;
  for (long long i = 0; i < opt_rounds && !atomic_load_explicit(&stop_flag, memory_order_relaxed);
       i++) {
    size_t idx = (size_t)rng_below(&r, nslots);
    void* p = atomic_exchange(&slots[idx], NULL);
    if (!p) {
      busy++;
      continue;
    }
    size_t old = verify_tagged(p, (size_t)opt_max, "larson: before free");
    void* q;
    if (rng_below(&r, 16) == 0) {
      size_t n = (size_t)rng_logrange(&r, (uint64_t)opt_min, (uint64_t)opt_max);
      q = S_REALLOC(p, n);
      CHECK_ALLOC(q, "realloc", n);
      uint64_t h[2];
      memcpy(h, q, sizeof h);
      if (h[0] != old)
        fail("realloc lost the header of %p (size %llu)", q, (unsigned long long)h[0]);
      verify_pattern_from(q, old, 16, n < old ? n : old, h[1], "larson: after realloc");
      tag_block(q, n, rng_next(&r));
    } else {
      S_FREE(p);
      q = new_block(&r, NULL);
    }
    atomic_store(&slots[idx], q);
    ops++;
  }
  atomic_fetch_add(&total_ops, ops);
  atomic_fetch_add(&total_busy, busy);
  if (!atomic_load(&stop_flag)) start_worker(rng_next(&r)); /* the successor */
  atomic_fetch_sub(&live_workers, 1);
  return NULL;
}

int main(int argc, char** argv) {
  set_prog_name(argv[0]);
  option_t opts[] = {
      {"threads", &opt_threads, "worker threads alive at any time", 0},
      {"ms", &opt_ms, "duration in milliseconds", 0},
      {"slots", &opt_slots, "slots per thread", 0},
      {"rounds", &opt_rounds, "operations per worker before it is replaced", 0},
      {"min", &opt_min, "smallest block (>= 16)", 0},
      {"max", &opt_max, "largest block", 0},
      {"seed", &opt_seed, "random seed", 0},
  };
  parse_options(argc, argv,
                "Larson server simulation: threads replace blocks in shared slots at random "
                "(remote frees), and are themselves replaced over time.",
                opts, (int)(sizeof opts / sizeof opts[0]));
  if (opt_threads < 1 || opt_slots < 1 || opt_min < 16 || opt_max < opt_min || opt_rounds < 1)
    fail("bad options (need threads>=1, slots>=1, 16<=min<=max, rounds>=1)");
  snprintf(g_fail_context, sizeof g_fail_context, "seed=%lld", opt_seed);

  nslots = (size_t)(opt_threads * opt_slots);
  slots = (_Atomic(void*)*)S_CALLOC(nslots, sizeof *slots);
  CHECK_ALLOC(slots, "calloc", nslots * sizeof *slots);
  rng_t r = {(uint64_t)opt_seed};
  for (size_t i = 0; i < nslots; i++) atomic_init(&slots[i], new_block(&r, NULL));

  double t0 = now_sec();
  for (long long t = 0; t < opt_threads; t++) start_worker(rng_next(&r));
  while (now_sec() - t0 < (double)opt_ms / 1000.0) usleep(10000);
  atomic_store(&stop_flag, 1);
  while (atomic_load(&live_workers) > 0) usleep(1000);
  double elapsed = now_sec() - t0;

  for (size_t i = 0; i < nslots; i++) {
    void* p = atomic_load(&slots[i]);
    if (!p) fail("slot %zu empty at the end", i);
    verify_tagged(p, (size_t)opt_max, "larson: final check");
    S_FREE(p);
  }
  S_FREE((void*)slots);
  long long ops = atomic_load(&total_ops);
  printf("larson: %lld threads, %lld ops (%.0f ops/s), %lld thread generations, %lld busy, ok\n",
         opt_threads, ops, (double)ops / elapsed, (long long)atomic_load(&generations),
         (long long)atomic_load(&total_busy));
  return 0;
}
