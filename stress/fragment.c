/* fragment — fragmentation under alternating lifetimes.
 *
 * What it tests: how well the allocator reuses partly used pages. Each phase allocates
 * --total bytes in blocks of one size, keeps every --keep-every'th block and frees the rest, so
 * every page it touched is left mostly empty but not free; the next phase uses another size, and
 * can only do well by reusing those holes (or returning the emptied pages). The sizes go up
 * through the small and medium classes; then half of the kept blocks are freed and the sizes
 * come down again. Every block is tagged (size, seed, pattern) and checked before it is freed;
 * all kept blocks are checked at the end.
 *
 * Reported: peak live bytes (requested sizes), peak RSS (VmHWM) and their ratio; and the worst
 * ratio of resident memory to live bytes seen after a phase's frees (what fragmentation costs
 * a long-running program). These are measurements, not pass/fail criteria: the program fails
 * only on corruption or a failed allocation.
 */
#include "stress_alloc.h"
#include "stress_util.h"

static long long opt_total = 16 << 20, opt_keep_every = 8, opt_seed = 1;

static const size_t sizes[] = {16,    24,     32,     48,     64,    96,    128,   200,
                               256,   384,    512,    768,    1000,  1500,  2048,  3000,
                               4096,  6000,   8192,   12000,  16384, 24000, 32768, 50000,
                               65536, 100000, 131072, 200000, 262144};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static void** kept;
static size_t nkept, capkept, live, peak_live;
static double worst_ratio;
static size_t worst_rss, worst_live;
static long long phases, blocks_total;
static rng_t rng;

static void keep(void* p) {
  if (nkept == capkept) {
    capkept = capkept ? capkept * 2 : 4096;
    void** k = (void**)S_REALLOC(kept, capkept * sizeof(void*));
    CHECK_ALLOC(k, "realloc", capkept * sizeof(void*));
    kept = k;
  }
  kept[nkept++] = p;
}

static void free_tagged(void* p, const char* where) {
  live -= verify_tagged(p, 1 << 20, where);
  S_FREE(p);
}

static void phase(size_t size) {
  size_t count = (size_t)opt_total / size;
  if (count < 16) count = 16;
  void** blocks = (void**)S_MALLOC(count * sizeof(void*));
  CHECK_ALLOC(blocks, "malloc", count * sizeof(void*));
  for (size_t i = 0; i < count; i++) {
    blocks[i] = S_MALLOC(size);
    CHECK_ALLOC(blocks[i], "malloc", size);
    tag_block(blocks[i], size, rng_next(&rng));
    live += size;
  }
  if (live > peak_live) peak_live = live;
  for (size_t i = 0; i < count; i++) {
    if (i % (size_t)opt_keep_every == 0)
      keep(blocks[i]);
    else
      free_tagged(blocks[i], "fragment: phase free");
  }
  S_FREE(blocks);
  blocks_total += (long long)count;
  phases++;
  size_t rss = rss_bytes();
  double ratio = (double)rss / (double)(live ? live : 1);
  if (ratio > worst_ratio) {
    worst_ratio = ratio;
    worst_rss = rss;
    worst_live = live;
  }
}

int main(int argc, char** argv) {
  set_prog_name(argv[0]);
  option_t opts[] = {
      {"total", &opt_total, "bytes allocated in each phase", 0},
      {"keep-every", &opt_keep_every, "keep one block in N, free the others", 0},
      {"seed", &opt_seed, "random seed", 0},
  };
  parse_options(argc, argv,
                "Fragmentation: phases of one size keep every Nth block and free the rest; "
                "reports peak RSS against peak live bytes.",
                opts, (int)(sizeof opts / sizeof opts[0]));
  if (opt_total < (1 << 16) || opt_keep_every < 2)
    fail("bad options (total >= 64k, keep-every >= 2)");
  snprintf(g_fail_context, sizeof g_fail_context, "seed=%lld", opt_seed);
  rng.s = (uint64_t)opt_seed;
  size_t base_rss = rss_bytes();
  double t0 = now_sec();

  for (size_t i = 0; i < NSIZES; i++) phase(sizes[i]);
  /* free every other kept block (holes everywhere), then the sizes again, coming down */
  size_t j = 0;
  for (size_t i = 0; i < nkept; i++) {
    if (i % 2)
      free_tagged(kept[i], "fragment: thinning");
    else
      kept[j++] = kept[i];
  }
  nkept = j;
  for (size_t i = NSIZES; i-- > 0;) phase(sizes[i] + 8); /* other sizes than the first time */

  size_t hwm = peak_rss_bytes();
  size_t live_end = live;
  for (size_t i = 0; i < nkept; i++) free_tagged(kept[i], "fragment: final check");
  S_FREE(kept);
  if (live != 0) fail("live byte count %zu after freeing everything", live);
  size_t rss_end = rss_bytes();
  printf(
      "fragment: %lld phases, %lld blocks, peak live %.1f MiB, peak RSS %.1f MiB "
      "(ratio %.2f, %.1f MiB at start), worst after-free RSS/live %.2f (%.1f / %.1f MiB), "
      "live at end %.1f MiB, RSS after freeing all %.1f MiB, %.2f s, ok\n",
      phases, blocks_total, mib(peak_live), mib(hwm), (double)hwm / (double)peak_live,
      mib(base_rss), worst_ratio, mib(worst_rss), mib(worst_live), mib(live_end), mib(rss_end),
      now_sec() - t0);
  return 0;
}
