/* churn — random-size churn with a bounded live set, across all three size ranges.
 *
 * What it tests: that every allocation path gives correct, non-overlapping memory while the
 * mix keeps moving between them: small (16 B–1 KiB, the size-class fast path), medium
 * (1 KiB–256 KiB, size-class spans) and large (256 KiB–8 MiB, own mappings), with calloc
 * (checked zeroed), aligned_alloc (alignments 16..64 KiB, and a few 128 KiB..2 MiB which take
 * the large path), and realloc growing and shrinking, often across those boundaries (and onto
 * the boundary sizes themselves), which checks that the contents survive every move.
 *
 * Each thread owns --slots slots and a live-byte budget; a random slot is filled if empty, or
 * checked and then freed or realloc'ed if not. Everything is checked again at the end.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "stress_alloc.h"
#include "stress_util.h"

static long long opt_threads = 2, opt_ops = 300000, opt_slots = 4096, opt_budget = 96 << 20,
                 opt_seed = 1;

#define KiB ((size_t)1024)
#define MiB (KiB * 1024)

typedef struct {
  unsigned char* p;
  size_t size, align;
  uint64_t seed;
} slot_t;

typedef struct {
  long long mallocs, callocs, aligned, reallocs, crossings, frees;
  size_t peak_live;
} stats_t;

static stats_t totals;
static pthread_mutex_t totals_lock = PTHREAD_MUTEX_INITIALIZER;

static const size_t boundary_sizes[] = {16,
                                        17,
                                        1008,
                                        1023,
                                        1024,
                                        1025,
                                        1040,
                                        64 * KiB,
                                        64 * KiB + 1,
                                        256 * KiB - 16,
                                        256 * KiB - 1,
                                        256 * KiB,
                                        256 * KiB + 1,
                                        256 * KiB + 16,
                                        512 * KiB,
                                        4 * MiB - 1,
                                        4 * MiB,
                                        4 * MiB + 1};

static int category(size_t n) { return n <= KiB ? 0 : n <= 256 * KiB ? 1 : 2; }

static size_t random_size(rng_t* r, int cat) {
  if (rng_below(r, 20) == 0)
    return boundary_sizes[rng_below(r, sizeof boundary_sizes / sizeof boundary_sizes[0])];
  switch (cat) {
    case 0:
      return (size_t)rng_range(r, 16, KiB);
    case 1:
      return (size_t)rng_logrange(r, KiB + 1, 256 * KiB);
    default:
      return (size_t)rng_logrange(r, 256 * KiB + 1, 8 * MiB);
  }
}

static int random_category(rng_t* r) {
  uint64_t x = rng_below(r, 100);
  return x < 70 ? 0 : x < 96 ? 1 : 2;
}

static void check_zero(const unsigned char* p, size_t n) {
  size_t step = n <= STRESS_FULL_LIMIT ? 8 : 4096 - 8;
  for (size_t o = 0; o < n; o += step) {
    size_t k = n - o < 8 ? n - o : 8;
    for (size_t i = 0; i < k; i++)
      if (p[o + i]) fail("calloc(%zu) block %p not zeroed at offset %zu", n, (void*)p, o + i);
  }
  for (size_t i = n >= 8 ? n - 8 : 0; i < n; i++)
    if (p[i]) fail("calloc(%zu) block %p not zeroed at offset %zu", n, (void*)p, i);
}

static void check_block(const slot_t* s, const char* where) {
  if (s->align && ((uintptr_t)s->p & (s->align - 1)))
    fail("%s: block %p not aligned to %zu", where, (void*)s->p, s->align);
  size_t usable = S_USABLE_SIZE(s->p);
  if (usable < s->size) fail("%s: usable size %zu < size %zu", where, usable, s->size);
  verify_pattern(s->p, s->size, s->size, s->seed, where);
}

static void* thread_main(void* arg) {
  rng_t r = {(uint64_t)opt_seed * 1000003ULL + (uint64_t)(uintptr_t)arg};
  size_t nslots = (size_t)opt_slots, live = 0, budget = (size_t)opt_budget;
  slot_t* slots = (slot_t*)S_CALLOC(nslots, sizeof(slot_t));
  CHECK_ALLOC(slots, "calloc", nslots * sizeof(slot_t));
  stats_t st = {0};

  for (long long op = 0; op < opt_ops; op++) {
    slot_t* s = &slots[rng_below(&r, nslots)];
    if (!s->p) {
      size_t n = random_size(&r, random_category(&r));
      if (live + n > budget) continue;
      uint64_t how = rng_below(&r, 100);
      s->align = 0;
      if (how < 60) {
        s->p = (unsigned char*)S_MALLOC(n);
        CHECK_ALLOC(s->p, "malloc", n);
        st.mallocs++;
      } else if (how < 75) {
        size_t cnt = n % 3 == 0 ? 3 : 1;
        s->p = (unsigned char*)S_CALLOC(cnt, n / cnt);
        n = cnt * (n / cnt);
        CHECK_ALLOC(s->p, "calloc", n);
        check_zero(s->p, n);
        st.callocs++;
      } else {
        size_t a = rng_below(&r, 20) == 0 ? (size_t)1 << rng_range(&r, 17, 21)
                                          : (size_t)1 << rng_range(&r, 4, 16);
        s->p = (unsigned char*)S_ALIGNED_ALLOC(a, n);
        CHECK_ALLOC(s->p, "aligned_alloc", n);
        if ((uintptr_t)s->p & (a - 1))
          fail("aligned_alloc(%zu, %zu) = %p, misaligned", a, n, (void*)s->p);
        s->align = a;
        st.aligned++;
      }
      s->size = n;
      s->seed = rng_next(&r);
      fill_pattern(s->p, n, s->seed);
      live += n;
      if (live > st.peak_live) st.peak_live = live;
      continue;
    }
    check_block(s, "churn: before free/realloc");
    if (rng_below(&r, 2) == 0) {
      S_FREE(s->p);
      live -= s->size;
      s->p = NULL;
      st.frees++;
      continue;
    }
    /* realloc: half the time into another size range */
    int from = category(s->size);
    int to = rng_below(&r, 2) ? from : (int)rng_below(&r, 3);
    size_t n = random_size(&r, to);
    if (live - s->size + n > budget) n = (size_t)rng_range(&r, 16, KiB);
    unsigned char* np = (unsigned char*)S_REALLOC(s->p, n);
    CHECK_ALLOC(np, "realloc", n);
    size_t keep = n < s->size ? n : s->size;
    verify_pattern(np, s->size, keep, s->seed, "churn: after realloc");
    st.reallocs++;
    if (category(n) != from) st.crossings++;
    live = live - s->size + n;
    if (live > st.peak_live) st.peak_live = live;
    s->p = np;
    s->size = n;
    s->align = 0; /* realloc keeps only the basic alignment */
    s->seed = rng_next(&r);
    fill_pattern(np, n, s->seed);
  }
  for (size_t i = 0; i < nslots; i++) {
    if (!slots[i].p) continue;
    check_block(&slots[i], "churn: final check");
    S_FREE(slots[i].p);
  }
  S_FREE(slots);
  pthread_mutex_lock(&totals_lock);
  totals.mallocs += st.mallocs;
  totals.callocs += st.callocs;
  totals.aligned += st.aligned;
  totals.reallocs += st.reallocs;
  totals.crossings += st.crossings;
  totals.frees += st.frees;
  totals.peak_live += st.peak_live;
  pthread_mutex_unlock(&totals_lock);
  return NULL;
}

int main(int argc, char** argv) {
  set_prog_name(argv[0]);
  option_t opts[] = {
      {"threads", &opt_threads, "threads (each with its own live set)", 0},
      {"ops", &opt_ops, "operations per thread", 0},
      {"slots", &opt_slots, "live-set slots per thread", 0},
      {"budget", &opt_budget, "live bytes per thread at most", 0},
      {"seed", &opt_seed, "random seed", 0},
  };
  parse_options(argc, argv,
                "Random-size churn over small, medium and large sizes with calloc, "
                "aligned_alloc and realloc across size ranges; contents checked throughout.",
                opts, (int)(sizeof opts / sizeof opts[0]));
  if (opt_threads < 1 || opt_slots < 1 || opt_ops < 0 || opt_budget < (long long)(16 * MiB))
    fail("bad options (budget must be at least 16 MiB)");
  snprintf(g_fail_context, sizeof g_fail_context, "seed=%lld", opt_seed);

  double t0 = now_sec();
  pthread_t* t = (pthread_t*)S_MALLOC((size_t)opt_threads * sizeof(pthread_t));
  CHECK_ALLOC(t, "malloc", sizeof(pthread_t));
  for (long long i = 0; i < opt_threads; i++) {
    int rc = pthread_create(&t[i], NULL, thread_main, (void*)(uintptr_t)i);
    if (rc) fail("pthread_create: %s", strerror(rc));
  }
  for (long long i = 0; i < opt_threads; i++) pthread_join(t[i], NULL);
  S_FREE(t);
  printf(
      "churn: %lld threads, %lld ops (%lld malloc, %lld calloc, %lld aligned, %lld realloc of "
      "which %lld across size ranges, %lld free), peak live %.1f MiB, %.2f s, ok\n",
      opt_threads, opt_threads * opt_ops, totals.mallocs, totals.callocs, totals.aligned,
      totals.reallocs, totals.crossings, totals.frees, mib(totals.peak_live), now_sec() - t0);
  return 0;
}
