/* differential — randomised differential test of the whole allocation API against a model.
 *
 * What it tests: the semantics of every call, on random sequences: malloc (including 0 bytes),
 * calloc (zeroed; overflowing products give NULL, and errno ENOMEM with --strict-errno), realloc
 * (growing, shrinking, across size ranges, realloc(NULL, n), realloc(p, 0) — which may free and
 * return NULL, or return a new minimal block: both are accepted), aligned_alloc, posix_memalign
 * (valid alignments, and invalid ones that must give EINVAL; not in the prefixed build),
 * malloc_usable_size (at least the size asked for, stable, and all of it writable) and free (also
 * of NULL).
 *
 * The shadow model keeps, per live block, its size, usable size, alignment and a seed; the
 * block's contents (all of its usable bytes) are a function of the seed, so they are
 * regenerated and compared before every operation on the block, and for every live block every
 * --check-every operations, together with a check that no two live blocks overlap. The
 * sequence of operations depends only on --seed (not on addresses), so a failure replays under
 * any allocator; the seed is printed in the result line and in every failure message.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "stress_alloc.h"
#include "stress_util.h"

static long long opt_ops = 200000, opt_slots = 1000, opt_threads = 1, opt_max_live = 64 << 20,
                 opt_check_every = 5000, opt_seed = -1, opt_strict_errno = 0;

#define KiB ((size_t)1024)
#define MiB (KiB * 1024)

typedef struct {
  unsigned char* p;
  size_t size, usable, align;
  uint64_t seed;
} block_t;

static __thread int t_id;
static __thread long long t_op;
static __thread const char* t_what = "";
#define DFAIL(...) dfail_(__VA_ARGS__)
__attribute__((format(printf, 1, 2), noreturn)) static void dfail_(const char* fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fail("thread %d, op %lld (%s): %s", t_id, t_op, t_what, msg);
}

static atomic_llong counts[12];
enum {
  C_MALLOC,
  C_CALLOC,
  C_REALLOC,
  C_ALIGNED,
  C_MEMALIGN,
  C_USABLE,
  C_FREE,
  C_REALLOC0,
  C_EINVAL,
  C_OVERFLOW,
  C_FULLCHECK
};

static size_t random_size(rng_t* r) {
  uint64_t x = rng_below(r, 1000);
  if (x < 10) return 0;
  if (x < 40) {
    static const size_t edges[] = {1,         8,
                                   15,        16,
                                   17,        1023,
                                   1024,      1025,
                                   65535,     65536,
                                   65537,     256 * KiB - 1,
                                   256 * KiB, 256 * KiB + 1,
                                   4 * MiB,   4 * MiB + 1};
    return edges[rng_below(r, sizeof edges / sizeof edges[0])];
  }
  if (x < 750) return (size_t)rng_range(r, 1, KiB);
  if (x < 970) return (size_t)rng_logrange(r, KiB, 256 * KiB);
  return (size_t)rng_logrange(r, 256 * KiB, 8 * MiB);
}

static size_t random_alignment(rng_t* r) {
  return rng_below(r, 20) == 0 ? (size_t)1 << rng_range(r, 17, 21)
                               : (size_t)1 << rng_range(r, 3, 16);
}

static void check_contents(const block_t* b) {
  if (!b->usable) return;
  size_t bad = check_pattern(b->p, b->usable, b->usable, b->seed);
  if (bad != SIZE_MAX)
    DFAIL("block %p (size %zu, usable %zu) corrupted at offset %zu", (void*)b->p, b->size,
          b->usable, bad);
}

static void check_zero(const unsigned char* p, size_t n) {
  size_t step = n <= STRESS_FULL_LIMIT ? 1 : 4093;
  for (size_t o = 0; o < n; o += step)
    if (p[o]) DFAIL("calloc'ed block %p of %zu bytes not zero at offset %zu", (void*)p, n, o);
  if (n && p[n - 1]) DFAIL("calloc'ed block %p of %zu bytes not zero at its end", (void*)p, n);
}

/* A block just returned: record it, check alignment and usable size, write its pattern. */
static void adopt(block_t* b, void* p, size_t size, size_t align, rng_t* r) {
  b->p = (unsigned char*)p;
  b->size = size;
  b->align = align;
  if ((uintptr_t)p & 15 && size >= 16) DFAIL("%p is not 16-byte aligned (size %zu)", p, size);
  if (align && ((uintptr_t)p & (align - 1))) DFAIL("%p is not aligned to %zu", p, align);
  b->usable = S_USABLE_SIZE(p);
  if (b->usable < size)
    DFAIL("usable size %zu of %p below the %zu bytes asked", b->usable, p, size);
  b->seed = rng_next(r);
  fill_pattern(p, b->usable, b->seed);
}

static int cmp_block(const void* x, const void* y) {
  uintptr_t a = (uintptr_t)((const block_t*)x)->p, b = (uintptr_t)((const block_t*)y)->p;
  return (a > b) - (a < b);
}

static void full_check(block_t* blocks, size_t n, block_t* scratch) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (blocks[i].p) {
      check_contents(&blocks[i]);
      scratch[k++] = blocks[i];
    }
  qsort(scratch, k, sizeof(block_t), cmp_block);
  for (size_t i = 1; i < k; i++) {
    size_t len = scratch[i - 1].usable ? scratch[i - 1].usable : 1;
    if ((uintptr_t)scratch[i - 1].p + len > (uintptr_t)scratch[i].p)
      DFAIL("live blocks overlap: %p (usable %zu) and %p (usable %zu)", (void*)scratch[i - 1].p,
            scratch[i - 1].usable, (void*)scratch[i].p, scratch[i].usable);
  }
  atomic_fetch_add(&counts[C_FULLCHECK], 1);
}

static void* run_model(void* arg) {
  t_id = (int)(uintptr_t)arg;
  rng_t r = {(uint64_t)opt_seed + (uint64_t)t_id * 0x632BE59BD9B4E019ULL};
  size_t ns = (size_t)opt_slots, live = 0, max_live = (size_t)opt_max_live;
  block_t* blocks = (block_t*)S_CALLOC(ns, sizeof(block_t));
  block_t* scratch = (block_t*)S_MALLOC(ns * sizeof(block_t));
  CHECK_ALLOC(blocks && scratch, "calloc", ns * sizeof(block_t));
  long long c[12] = {0};
  for (t_op = 0; t_op < opt_ops; t_op++) {
    if (opt_check_every > 0 && t_op % opt_check_every == 0) full_check(blocks, ns, scratch);
    block_t* b = &blocks[rng_below(&r, ns)];
    uint64_t x = rng_below(&r, 100);
    if (b->p) {
      check_contents(b);
      if (x < 45) {
        t_what = "free";
        live -= b->usable;
        S_FREE(b->p);
        b->p = NULL;
        c[C_FREE]++;
      } else if (x < 85) {
        t_what = "realloc";
        size_t n = random_size(&r);
        if (n == 0) n = 1;
        if (live - b->usable + n > max_live) n = (size_t)rng_range(&r, 1, KiB);
        unsigned char* q = (unsigned char*)S_REALLOC(b->p, n);
        if (!q) DFAIL("realloc(%p, %zu) returned NULL (errno %d)", (void*)b->p, n, errno);
        size_t keep = n < b->size ? n : b->size;
        size_t bad = check_pattern(q, b->usable, keep, b->seed);
        if (bad != SIZE_MAX)
          DFAIL("realloc %zu -> %zu bytes lost the content at offset %zu", b->size, n, bad);
        live -= b->usable;
        adopt(b, q, n, 0, &r);
        live += b->usable;
        c[C_REALLOC]++;
      } else if (x < 97) {
        t_what = "malloc_usable_size";
        size_t u = S_USABLE_SIZE(b->p);
        if (u != b->usable)
          DFAIL("usable size of %p changed from %zu to %zu", (void*)b->p, b->usable, u);
        c[C_USABLE]++;
      } else {
        t_what = "realloc(p, 0)";
        errno = 0;
        void* q = S_REALLOC(b->p, 0);
        live -= b->usable;
        b->p = NULL;
        if (q) { /* allowed: a new minimal block */
          adopt(b, q, 0, 0, &r);
          live += b->usable;
        }
        c[C_REALLOC0]++;
      }
      continue;
    }
    size_t n = random_size(&r);
    if (live + n > max_live) n = (size_t)rng_range(&r, 0, KiB);
    void* p = NULL;
    size_t align = 0;
    if (x < 40) {
      t_what = "malloc";
      p = S_MALLOC(n);
      if (!p && n) DFAIL("malloc(%zu) returned NULL (errno %d)", n, errno);
      c[C_MALLOC]++;
    } else if (x < 55) {
      t_what = "calloc";
      size_t cnt = n > 16 && n % 4 == 0 ? 4 : 1;
      p = S_CALLOC(cnt, n / cnt);
      if (!p && n) DFAIL("calloc(%zu, %zu) returned NULL (errno %d)", cnt, n / cnt, errno);
      if (p) check_zero((unsigned char*)p, n);
      c[C_CALLOC]++;
    } else if (x < 70) {
      t_what = "aligned_alloc";
      align = random_alignment(&r);
      p = S_ALIGNED_ALLOC(align, n);
      if (!p && n) DFAIL("aligned_alloc(%zu, %zu) returned NULL (errno %d)", align, n, errno);
      c[C_ALIGNED]++;
    } else if (x < 80) {
#if S_HAVE_POSIX_MEMALIGN
      t_what = "posix_memalign";
      align = random_alignment(&r);
      int rc = S_POSIX_MEMALIGN(&p, align, n);
      if (rc) DFAIL("posix_memalign(%zu, %zu) returned %d", align, n, rc);
      if (rng_below(&r, 4) == 0) {
        static const size_t bad_align[] = {0, 4, 24, 48, 1000, 4097};
        size_t a = bad_align[rng_below(&r, sizeof bad_align / sizeof bad_align[0])];
        void* q = NULL;
        int rc2 = S_POSIX_MEMALIGN(&q, a, 64);
        if (rc2 != EINVAL) DFAIL("posix_memalign(alignment %zu) returned %d, not EINVAL", a, rc2);
        c[C_EINVAL]++;
      }
      c[C_MEMALIGN]++;
#else
      t_what = "malloc";
      p = S_MALLOC(n);
      if (!p && n) DFAIL("malloc(%zu) returned NULL (errno %d)", n, errno);
      c[C_MALLOC]++;
#endif
    } else if (x < 92) {
      t_what = "realloc(NULL, n)";
      p = S_REALLOC(NULL, n);
      if (!p && n) DFAIL("realloc(NULL, %zu) returned NULL (errno %d)", n, errno);
      c[C_REALLOC]++;
    } else if (x < 97) {
      t_what = "free(NULL)";
      S_FREE(NULL);
      c[C_FREE]++;
    } else {
      t_what = "calloc overflow";
      errno = 0;
      static volatile size_t huge_count = ((size_t)1 << 62) + 1; /* hidden from the compiler */
      void* q = S_CALLOC(huge_count, 4);
      if (q) DFAIL("calloc with an overflowing product returned %p", q);
      if (opt_strict_errno && errno != ENOMEM)
        DFAIL("calloc overflow set errno %d, not ENOMEM", errno);
      c[C_OVERFLOW]++;
    }
    if (p) {
      adopt(b, p, n, align, &r);
      live += b->usable;
    }
  }
  t_what = "final check";
  full_check(blocks, ns, scratch);
  for (size_t i = 0; i < ns; i++)
    if (blocks[i].p) S_FREE(blocks[i].p);
  S_FREE(blocks);
  S_FREE(scratch);
  for (int i = 0; i < 12; i++) atomic_fetch_add(&counts[i], c[i]);
  return NULL;
}

int main(int argc, char** argv) {
  set_prog_name(argv[0]);
  option_t opts[] = {
      {"ops", &opt_ops, "operations per thread", 0},
      {"slots", &opt_slots, "live blocks per thread at most", 0},
      {"threads", &opt_threads, "independent models run at once (thread i uses seed + i)", 0},
      {"max-live", &opt_max_live, "live bytes per thread at most", 0},
      {"check-every", &opt_check_every, "check all blocks and overlaps every N ops (0: never)", 0},
      {"seed", &opt_seed, "random seed (-1: from the clock)", 0},
      {"strict-errno", &opt_strict_errno,
       "calloc overflow must set errno to ENOMEM (POSIX; mimalloc and tcmalloc do not)", 1},
  };
  parse_options(argc, argv,
                "Differential test: random sequences of every allocation call, checked against "
                "a shadow model of every block's contents; seedable.",
                opts, (int)(sizeof opts / sizeof opts[0]));
  if (opt_ops < 0 || opt_slots < 1 || opt_threads < 1 || opt_max_live < (long long)(16 * MiB))
    fail("bad options (max-live at least 16 MiB)");
  if (opt_seed < 0)
    opt_seed = (long long)(((uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid()) & 0x7fffffff);
  snprintf(g_fail_context, sizeof g_fail_context,
           "seed=%lld; replay: %s --seed %lld --ops %lld "
           "--slots %lld --threads %lld",
           opt_seed, g_prog, opt_seed, opt_ops, opt_slots, opt_threads);
  double t0 = now_sec();
  pthread_t* t = (pthread_t*)S_MALLOC((size_t)opt_threads * sizeof(pthread_t));
  CHECK_ALLOC(t, "malloc", sizeof(pthread_t));
  for (long long i = 0; i < opt_threads; i++) {
    int rc = pthread_create(&t[i], NULL, run_model, (void*)(uintptr_t)i);
    if (rc) fail("pthread_create: %s", strerror(rc));
  }
  for (long long i = 0; i < opt_threads; i++) pthread_join(t[i], NULL);
  S_FREE(t);
#define N(k) ((long long)atomic_load(&counts[k]))
  printf(
      "differential: seed %lld, %lld threads x %lld ops (%lld malloc, %lld calloc, %lld realloc, "
      "%lld realloc-to-0, %lld aligned_alloc, %lld posix_memalign, %lld EINVAL, %lld usable, "
      "%lld free, %lld overflow, %lld full checks), %.2f s, ok\n",
      opt_seed, opt_threads, opt_ops, N(C_MALLOC), N(C_CALLOC), N(C_REALLOC), N(C_REALLOC0),
      N(C_ALIGNED), N(C_MEMALIGN), N(C_EINVAL), N(C_USABLE), N(C_FREE), N(C_OVERFLOW),
      N(C_FULLCHECK), now_sec() - t0);
  return 0;
}
