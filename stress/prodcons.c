/* prodcons — producers allocate, consumers free.
 *
 * What it tests: the pure remote-free pattern of pipelines and message passing. Every block is
 * allocated and filled by a producer thread and checked and freed (sometimes first realloc'ed)
 * by a consumer thread, so no block is ever freed by the thread that allocated it: the owner's
 * pages fill up and only come back through remote frees. Sizes are mostly small (log-uniform up
 * to --max), with every --large-every'th block above the large-block threshold.
 *
 * The queue is a bounded ring under a mutex; NULL is the end-of-stream marker, one per consumer.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "stress_alloc.h"
#include "stress_util.h"

static long long opt_producers = 2, opt_consumers = 2, opt_items = 200000, opt_max = 8192,
                 opt_large_every = 1000, opt_queue = 1024, opt_seed = 1;

#define LARGE_MAX ((size_t)1 << 20)

static struct {
  pthread_mutex_t lock;
  pthread_cond_t not_empty, not_full;
  void** ring;
  size_t cap, head, count;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0};

static atomic_llong consumed, consumed_bytes, reallocs;

static void push(void* p) {
  pthread_mutex_lock(&q.lock);
  while (q.count == q.cap) pthread_cond_wait(&q.not_full, &q.lock);
  q.ring[(q.head + q.count) % q.cap] = p;
  q.count++;
  pthread_cond_signal(&q.not_empty);
  pthread_mutex_unlock(&q.lock);
}

static void* pop(void) {
  pthread_mutex_lock(&q.lock);
  while (q.count == 0) pthread_cond_wait(&q.not_empty, &q.lock);
  void* p = q.ring[q.head];
  q.head = (q.head + 1) % q.cap;
  q.count--;
  pthread_cond_signal(&q.not_full);
  pthread_mutex_unlock(&q.lock);
  return p;
}

static void* producer(void* arg) {
  rng_t r = {(uint64_t)(uintptr_t)arg * 0x1234567ULL + (uint64_t)opt_seed};
  for (long long i = 0; i < opt_items; i++) {
    size_t n;
    if (opt_large_every > 0 && rng_below(&r, (uint64_t)opt_large_every) == 0)
      n = (size_t)rng_range(&r, 200 * 1024, LARGE_MAX);
    else
      n = (size_t)rng_logrange(&r, 16, (uint64_t)opt_max);
    void* p = S_MALLOC(n);
    CHECK_ALLOC(p, "malloc", n);
    tag_block(p, n, rng_next(&r));
    push(p);
  }
  return NULL;
}

static void* consumer(void* arg) {
  rng_t r = {(uint64_t)(uintptr_t)arg * 0x7654321ULL + (uint64_t)opt_seed};
  size_t limit = (size_t)opt_max > LARGE_MAX ? (size_t)opt_max : LARGE_MAX;
  long long count = 0, bytes = 0, re = 0;
  for (;;) {
    void* p = pop();
    if (!p) break;
    size_t n = verify_tagged(p, limit, "prodcons: consumer");
    if (rng_below(&r, 32) == 0) { /* realloc a block another thread owns */
      size_t m = (size_t)rng_logrange(&r, 16, (uint64_t)opt_max);
      uint64_t h[2];
      memcpy(h, p, sizeof h);
      void* np = S_REALLOC(p, m);
      CHECK_ALLOC(np, "realloc", m);
      verify_pattern_from(np, n, 16, m < n ? m : n, h[1], "prodcons: after realloc");
      p = np;
      re++;
    }
    S_FREE(p);
    count++;
    bytes += (long long)n;
  }
  atomic_fetch_add(&consumed, count);
  atomic_fetch_add(&consumed_bytes, bytes);
  atomic_fetch_add(&reallocs, re);
  return NULL;
}

int main(int argc, char** argv) {
  set_prog_name(argv[0]);
  option_t opts[] = {
      {"producers", &opt_producers, "producer threads", 0},
      {"consumers", &opt_consumers, "consumer threads", 0},
      {"items", &opt_items, "blocks per producer", 0},
      {"max", &opt_max, "largest ordinary block", 0},
      {"large-every", &opt_large_every, "about one block in N is 200 KiB..1 MiB (0: never)", 0},
      {"queue", &opt_queue, "queue capacity", 0},
      {"seed", &opt_seed, "random seed", 0},
  };
  parse_options(argc, argv,
                "Producer/consumer: producers allocate and fill, consumers check and free "
                "through a queue (every free is remote).",
                opts, (int)(sizeof opts / sizeof opts[0]));
  if (opt_producers < 1 || opt_consumers < 1 || opt_items < 0 || opt_max < 16 || opt_queue < 1)
    fail("bad options");
  snprintf(g_fail_context, sizeof g_fail_context, "seed=%lld", opt_seed);

  q.cap = (size_t)opt_queue;
  q.ring = (void**)S_MALLOC(q.cap * sizeof(void*));
  CHECK_ALLOC(q.ring, "malloc", q.cap * sizeof(void*));

  double t0 = now_sec();
  pthread_t* prod = (pthread_t*)S_MALLOC((size_t)opt_producers * sizeof(pthread_t));
  pthread_t* cons = (pthread_t*)S_MALLOC((size_t)opt_consumers * sizeof(pthread_t));
  CHECK_ALLOC(prod && cons, "malloc", sizeof(pthread_t));
  for (long long i = 0; i < opt_consumers; i++) {
    int rc = pthread_create(&cons[i], NULL, consumer, (void*)(uintptr_t)(i + 1));
    if (rc) fail("pthread_create: %s", strerror(rc));
  }
  for (long long i = 0; i < opt_producers; i++) {
    int rc = pthread_create(&prod[i], NULL, producer, (void*)(uintptr_t)(i + 1));
    if (rc) fail("pthread_create: %s", strerror(rc));
  }
  for (long long i = 0; i < opt_producers; i++) pthread_join(prod[i], NULL);
  for (long long i = 0; i < opt_consumers; i++) push(NULL);
  for (long long i = 0; i < opt_consumers; i++) pthread_join(cons[i], NULL);
  double elapsed = now_sec() - t0;

  long long expect = opt_producers * opt_items;
  if (atomic_load(&consumed) != expect)
    fail("consumed %lld blocks, produced %lld", (long long)atomic_load(&consumed), expect);
  S_FREE(prod);
  S_FREE(cons);
  S_FREE(q.ring);
  printf(
      "prodcons: %lld producers, %lld consumers, %lld blocks (%.1f MiB, %lld remote reallocs)"
      " in %.2f s, ok\n",
      opt_producers, opt_consumers, expect, mib((size_t)atomic_load(&consumed_bytes)),
      (long long)atomic_load(&reallocs), elapsed);
  return 0;
}
