/* bigblock — blocks around and above the large-block threshold, and huge realloc growth.
 *
 * What it tests: the seam between the size-class allocator and large blocks (mapalloc switches
 * at 256 KiB; other allocators have similar seams), and realloc of large blocks.
 *  Part 1: --threads threads churn blocks of 128 KiB..2 MiB, half of them dense around 256 KiB
 *   (240..272 KiB, including 256 KiB - 1, 256 KiB and 256 KiB + 1), a few up to 16 MiB, made with
 *   malloc, calloc (checked zero) and aligned_alloc (4 KiB..2 MiB), and realloc'ed up and down
 *   across the threshold; contents are checked before every free and after every realloc.
 *  Part 2: one buffer grows by realloc from 1 MiB, doubling up to --grow-mib (default 256 MiB,
 *   1 GiB with --huge), with a 1 MiB block allocated after each step so the neighbourhood
 *   changes; the whole old content is checked after every step. Then it shrinks back by halves,
 *   checked again.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "stress_alloc.h"
#include "stress_util.h"

static long long opt_threads = 2, opt_ops = 3000, opt_slots = 48, opt_grow_mib = 256, opt_huge = 0,
                 opt_seed = 1;

#define KiB ((size_t)1024)
#define MiB (KiB * 1024)

typedef struct {
  unsigned char* p;
  size_t n, align;
  uint64_t seed;
} slot_t;

static atomic_llong total_ops, total_reallocs;

static size_t pick_size(rng_t* r) {
  uint64_t x = rng_below(r, 100);
  if (x < 10) return 256 * KiB - 1 + (size_t)rng_below(r, 3); /* 256 KiB - 1, +0, +1 */
  if (x < 50) return (size_t)rng_range(r, 240 * KiB, 272 * KiB);
  if (x < 95) return (size_t)rng_logrange(r, 128 * KiB, 2 * MiB);
  return (size_t)rng_logrange(r, 2 * MiB, 16 * MiB);
}

static void check_zero(const unsigned char* p, size_t n) {
  for (size_t o = 0; o < n; o += 4093)
    if (p[o]) fail("calloc(%zu) = %p not zero at offset %zu", n, (const void*)p, o);
  if (p[n - 1]) fail("calloc(%zu) = %p not zero at its end", n, (const void*)p);
}

static void* churn_thread(void* arg) {
  rng_t r = {(uint64_t)opt_seed * 65537 + (uint64_t)(uintptr_t)arg};
  size_t ns = (size_t)opt_slots;
  slot_t* s = (slot_t*)S_CALLOC(ns, sizeof(slot_t));
  CHECK_ALLOC(s, "calloc", ns * sizeof(slot_t));
  long long re = 0;
  for (long long op = 0; op < opt_ops; op++) {
    slot_t* x = &s[rng_below(&r, ns)];
    if (!x->p) {
      size_t n = pick_size(&r);
      uint64_t how = rng_below(&r, 10);
      x->align = 0;
      if (how < 6) {
        x->p = (unsigned char*)S_MALLOC(n);
      } else if (how < 8) {
        x->p = (unsigned char*)S_CALLOC(1, n);
        if (x->p) check_zero(x->p, n);
      } else {
        x->align = (size_t)1 << rng_range(&r, 12, 21);
        x->p = (unsigned char*)S_ALIGNED_ALLOC(x->align, n);
        if (x->p && ((uintptr_t)x->p & (x->align - 1)))
          fail("aligned_alloc(%zu, %zu) = %p, misaligned", x->align, n, (void*)x->p);
      }
      CHECK_ALLOC(x->p, "malloc/calloc/aligned_alloc", n);
      x->n = n;
      x->seed = rng_next(&r);
      fill_pattern(x->p, n, x->seed);
    } else if (rng_below(&r, 3) == 0) {
      size_t n = pick_size(&r);
      unsigned char* q = (unsigned char*)S_REALLOC(x->p, n);
      CHECK_ALLOC(q, "realloc", n);
      verify_pattern(q, x->n, n < x->n ? n : x->n, x->seed, "bigblock: after realloc");
      x->p = q;
      x->n = n;
      x->align = 0; /* realloc keeps only the basic alignment */
      x->seed = rng_next(&r);
      fill_pattern(q, n, x->seed);
      re++;
    } else {
      if (x->align && ((uintptr_t)x->p & (x->align - 1)))
        fail("block %p lost its alignment", (void*)x->p);
      if (S_USABLE_SIZE(x->p) < x->n) fail("usable size of %p below %zu", (void*)x->p, x->n);
      verify_pattern(x->p, x->n, x->n, x->seed, "bigblock: before free");
      S_FREE(x->p);
      x->p = NULL;
    }
  }
  for (size_t i = 0; i < ns; i++)
    if (s[i].p) {
      verify_pattern(s[i].p, s[i].n, s[i].n, s[i].seed, "bigblock: final check");
      S_FREE(s[i].p);
    }
  S_FREE(s);
  atomic_fetch_add(&total_ops, opt_ops);
  atomic_fetch_add(&total_reallocs, re);
  return NULL;
}

/* Part 2; returns the largest size reached. */
static size_t grow_and_shrink(size_t max) {
  const uint64_t seed = (uint64_t)opt_seed * 0x5DEECE66DULL;
  size_t n = MiB;
  unsigned char* p = (unsigned char*)S_MALLOC(n);
  CHECK_ALLOC(p, "malloc", n);
  fill_range(p, 0, n, seed);
  void* obstacles[64];
  int nobst = 0;
  while (n < max) {
    size_t m = n * 2;
    unsigned char* q = (unsigned char*)S_REALLOC(p, m);
    CHECK_ALLOC(q, "realloc (growth)", m);
    size_t bad = check_range(q, 0, n, seed);
    if (bad != SIZE_MAX)
      fail("realloc growth %zu -> %zu MiB (now at %p) lost the content at offset %zu", n / MiB,
           m / MiB, (void*)q, bad);
    fill_range(q, n, m, seed);
    p = q;
    n = m;
    if (nobst < 64) {
      obstacles[nobst] = S_MALLOC(MiB);
      CHECK_ALLOC(obstacles[nobst], "malloc", MiB);
      memset(obstacles[nobst], 0x5A, MiB);
      nobst++;
    }
  }
  size_t top = n;
  while (n > MiB) {
    size_t m = n / 2;
    unsigned char* q = (unsigned char*)S_REALLOC(p, m);
    CHECK_ALLOC(q, "realloc (shrink)", m);
    size_t bad = check_range(q, 0, m, seed);
    if (bad != SIZE_MAX)
      fail("realloc shrink %zu -> %zu MiB lost the content at offset %zu", n / MiB, m / MiB, bad);
    p = q;
    n = m;
  }
  S_FREE(p);
  for (int i = 0; i < nobst; i++) {
    const unsigned char* o = (const unsigned char*)obstacles[i];
    for (size_t k = 0; k < MiB; k += 4096)
      if (o[k] != 0x5A) fail("1 MiB block %p corrupted at offset %zu", (void*)o, k);
    S_FREE(obstacles[i]);
  }
  return top;
}

int main(int argc, char** argv) {
  set_prog_name(argv[0]);
  option_t opts[] = {
      {"threads", &opt_threads, "threads in part 1", 0},
      {"ops", &opt_ops, "operations per thread in part 1", 0},
      {"slots", &opt_slots, "live blocks per thread at most", 0},
      {"grow-mib", &opt_grow_mib, "part 2 grows a buffer up to this many MiB (0: skip)", 0},
      {"huge", &opt_huge, "part 2 up to 1 GiB", 1},
      {"seed", &opt_seed, "random seed", 0},
  };
  parse_options(argc, argv,
                "Large blocks: churn around the 256 KiB threshold and above, then realloc "
                "growth of one buffer from 1 MiB by doubling (256 MiB, or 1 GiB with --huge).",
                opts, (int)(sizeof opts / sizeof opts[0]));
  if (opt_huge) opt_grow_mib = 1024;
  if (opt_threads < 0 || opt_ops < 0 || opt_slots < 1 || opt_grow_mib < 0) fail("bad options");
  snprintf(g_fail_context, sizeof g_fail_context, "seed=%lld", opt_seed);
  double t0 = now_sec();
  pthread_t* t = (pthread_t*)S_MALLOC((size_t)(opt_threads + 1) * sizeof(pthread_t));
  CHECK_ALLOC(t, "malloc", sizeof(pthread_t));
  for (long long i = 0; i < opt_threads; i++) {
    int rc = pthread_create(&t[i], NULL, churn_thread, (void*)(uintptr_t)i);
    if (rc) fail("pthread_create: %s", strerror(rc));
  }
  for (long long i = 0; i < opt_threads; i++) pthread_join(t[i], NULL);
  S_FREE(t);
  double t1 = now_sec();
  size_t top = opt_grow_mib > 0 ? grow_and_shrink((size_t)opt_grow_mib * MiB) : 0;
  printf(
      "bigblock: %lld threads, %lld ops (%lld reallocs) in %.2f s; realloc growth 1 -> %zu MiB "
      "and back in %.2f s, ok\n",
      opt_threads, (long long)atomic_load(&total_ops), (long long)atomic_load(&total_reallocs),
      t1 - t0, top / MiB, now_sec() - t1);
  return 0;
}
