/* threadstorm — a storm of short-lived threads; memory must not grow without bound.
 *
 * What it tests: thread start-up and thread exit in the allocator (per-thread heaps created,
 * cleaned, pooled, adopted), with blocks that outlive their thread. Each round starts --threads
 * threads at once; each allocates --blocks blocks (mostly small, one in four threads also a
 * large one), waits until all threads of the round hold their blocks (so every round has the
 * same peak), checks them, frees most of them, frees half of the blocks the previous round's (dead)
 * threads handed over, and hands --keep blocks of its own to main before exiting. Main frees the
 * rest of the previous round's blocks, so every round leaves the same amount of live memory.
 *
 * Memory check: resident memory (/proc/self/statm) is read after every round. The level after
 * the first --warmup rounds is the baseline; any later round above 2 x baseline + 32 MiB (the
 * --growth-* options) fails: the usual symptom of heaps or pages of dead threads never reused.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "stress_alloc.h"
#include "stress_util.h"

static long long opt_rounds = 40, opt_threads = 64, opt_blocks = 200, opt_keep = 4, opt_max = 16384,
                 opt_warmup = 3, opt_growth_factor = 2, opt_growth_mib = 32, opt_seed = 1,
                 opt_verbose = 0;

#define LARGE_MAX ((size_t)1 << 20)

typedef struct {
  uint64_t seed;
  void** kept;      /* out: opt_keep blocks handed to main */
  void** inherited; /* in: blocks of the previous round; this thread frees them */
  size_t ninherited;
} job_t;

static atomic_llong total_blocks;

static pthread_barrier_t all_allocated;

static void* new_block(rng_t* r, size_t i) {
  size_t n = i == 0 && rng_below(r, 4) == 0 ? (size_t)rng_range(r, 300 * 1024, LARGE_MAX)
                                            : (size_t)rng_logrange(r, 16, (uint64_t)opt_max);
  void* p = S_MALLOC(n);
  CHECK_ALLOC(p, "malloc", n);
  tag_block(p, n, rng_next(r));
  return p;
}

static size_t max_size(void) { return (size_t)opt_max > LARGE_MAX ? (size_t)opt_max : LARGE_MAX; }

static void* storm_thread(void* arg) {
  job_t* j = (job_t*)arg;
  rng_t r = {j->seed};
  size_t n = (size_t)opt_blocks;
  void** blocks = (void**)S_MALLOC(n * sizeof(void*));
  CHECK_ALLOC(blocks, "malloc", n * sizeof(void*));
  for (size_t i = 0; i < n; i++) blocks[i] = new_block(&r, i);
  /* every thread of the round holds all its blocks at once: the same peak every round */
  pthread_barrier_wait(&all_allocated);
  for (size_t i = 0; i < j->ninherited; i++) { /* remote frees into a dead thread's heap */
    verify_tagged(j->inherited[i], max_size(), "threadstorm: inherited block");
    S_FREE(j->inherited[i]);
  }
  for (size_t i = 0; i < n; i++) {
    verify_tagged(blocks[i], max_size(), "threadstorm: own block");
    if (i < (size_t)opt_keep)
      j->kept[i] = blocks[i];
    else
      S_FREE(blocks[i]);
  }
  S_FREE(blocks);
  atomic_fetch_add(&total_blocks, (long long)n);
  return NULL;
}

int main(int argc, char** argv) {
  set_prog_name(argv[0]);
  option_t opts[] = {
      {"rounds", &opt_rounds, "rounds", 0},
      {"threads", &opt_threads, "threads started per round", 0},
      {"blocks", &opt_blocks, "blocks allocated per thread", 0},
      {"keep", &opt_keep, "blocks per thread that outlive it", 0},
      {"max", &opt_max,
       "largest ordinary block (a quarter of the threads add one of 300 KiB..1 MiB)", 0},
      {"warmup", &opt_warmup, "rounds before the memory baseline is taken", 0},
      {"growth-factor", &opt_growth_factor, "fail above baseline x this + growth-mib", 0},
      {"growth-mib", &opt_growth_mib, "allowed growth beyond the factor, MiB", 0},
      {"seed", &opt_seed, "random seed", 0},
      {"verbose", &opt_verbose, "print resident memory after every round", 1},
  };
  parse_options(argc, argv,
                "Thread creation storm: many short-lived threads allocate and exit, some blocks "
                "outlive them; resident memory must stay bounded.",
                opts, (int)(sizeof opts / sizeof opts[0]));
  if (opt_rounds < 1 || opt_threads < 1 || opt_blocks < 1 || opt_keep < 0 ||
      opt_keep > opt_blocks || opt_max < 16 || opt_warmup < 1)
    fail("bad options");
  snprintf(g_fail_context, sizeof g_fail_context, "seed=%lld", opt_seed);

  size_t nt = (size_t)opt_threads, keep = (size_t)opt_keep;
  pthread_t* tids = (pthread_t*)S_MALLOC(nt * sizeof(pthread_t));
  job_t* jobs = (job_t*)S_CALLOC(nt, sizeof(job_t));
  void** kept_prev = (void**)S_CALLOC(nt * keep + 1, sizeof(void*));
  void** kept_now = (void**)S_CALLOC(nt * keep + 1, sizeof(void*));
  CHECK_ALLOC(tids && jobs && kept_prev && kept_now, "malloc", nt * sizeof(job_t));
  size_t nprev = 0;
  rng_t r = {(uint64_t)opt_seed};
  size_t baseline = 0, peak = 0, first = 0;
  double t0 = now_sec();

  for (long long round = 0; round < opt_rounds; round++) {
    /* half of the previous round's blocks go to this round's threads, spread evenly */
    size_t give = nprev / 2, per = give / nt, extra = give % nt, next = 0;
    for (size_t i = 0; i < nt; i++) {
      jobs[i].seed = rng_next(&r);
      jobs[i].kept = kept_now + i * keep;
      jobs[i].inherited = kept_prev + next;
      jobs[i].ninherited = per + (i < extra ? 1 : 0);
      next += jobs[i].ninherited;
    }
    pthread_barrier_init(&all_allocated, NULL, (unsigned)nt);
    for (size_t i = 0; i < nt; i++) {
      int rc = pthread_create(&tids[i], NULL, storm_thread, &jobs[i]);
      if (rc) fail("round %lld: pthread_create: %s", round, strerror(rc));
    }
    for (size_t i = 0; i < nt; i++) pthread_join(tids[i], NULL);
    pthread_barrier_destroy(&all_allocated);
    for (size_t i = next; i < nprev; i++) {
      verify_tagged(kept_prev[i], max_size(), "threadstorm: main frees kept block");
      S_FREE(kept_prev[i]);
    }
    void** t = kept_prev;
    kept_prev = kept_now;
    kept_now = t;
    nprev = nt * keep;

    size_t rss = rss_bytes();
    if (opt_verbose) printf("round %lld: rss %.1f MiB\n", round, mib(rss));
    if (round == 0) first = rss;
    if (rss > peak) peak = rss;
    if (round < opt_warmup) {
      if (rss > baseline) baseline = rss;
    } else {
      size_t limit = baseline * (size_t)opt_growth_factor + ((size_t)opt_growth_mib << 20);
      if (rss > limit)
        fail("resident memory grows: %.1f MiB after round %lld, baseline %.1f MiB (limit %.1f)",
             mib(rss), round, mib(baseline), mib(limit));
    }
  }
  for (size_t i = 0; i < nprev; i++) {
    verify_tagged(kept_prev[i], max_size(), "threadstorm: final check");
    S_FREE(kept_prev[i]);
  }
  size_t last = rss_bytes();
  S_FREE(tids);
  S_FREE(jobs);
  S_FREE(kept_prev);
  S_FREE(kept_now);
  printf(
      "threadstorm: %lld rounds x %lld threads, %lld blocks, rss first %.1f / baseline %.1f / "
      "peak %.1f / last %.1f MiB, %.2f s, ok\n",
      opt_rounds, opt_threads, (long long)atomic_load(&total_blocks), mib(first), mib(baseline),
      mib(peak), mib(last), now_sec() - t0);
  return 0;
}
