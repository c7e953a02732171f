/* Benchmark workloads for `make bench`: one program, one subcommand per workload, so that every
 * allocator (preloaded) runs exactly the same code. Each workload does a fixed amount of work
 * (scaled by the second argument), touches the memory it allocates, and prints a checksum so
 * that the work cannot be optimised away and outputs can be compared between allocators.
 *
 *   workloads NAME THREADS SCALE
 *
 * lifo, fifo   single thread, every small class (16..1024 bytes), freed in reverse / in order
 * linked       many small list nodes: build long lists, walk them, free half at random, rebuild
 * bigblock     blocks around the large threshold (128 KiB .. 2 MiB), a small live set
 * larson       server simulation: threads replace random blocks in their slot arrays; each
 *              thread hands its array (and the blocks in it) to a successor and exits
 * prodcons     producers allocate, consumers free: every free is remote
 * churn        random sizes 16 B .. 64 KiB with malloc/realloc/free over a bounded live set
 * bigbuffers   16 live buffers of 1 .. 64 MiB; one at random is replaced by a new buffer of
 *              another size, written in full (image, compression or database code)
 * xthread      threads keep a working set of blocks of 8 B .. 16 KiB (mostly small), write
 *              each in full, and hand one replaced block in four to another thread, which frees
 *              it (rpmalloc-benchmark style cross-thread frees)
 * [BUSY]       any workload with BUSY more threads spinning beside it: a loaded machine
 *              (make bench's churn-8t-busy2 is churn with 8 threads and BUSY 2)
 * hashtable    an interpreter's dict: 200,000 entries of 40 - 80 bytes (about 12 MiB, below the
 *              size where mapalloc's segments take huge pages from the start) in a chained hash
 *              table, looked up at random (bound by TLB and cache misses), one in eight
 *              lookups replacing its entry with one of another size
 * cachethrash  Hoard's cache-thrash with one thread: a 1 .. 8-byte object written and read
 *              byte by byte millions of times; the time is the program's own loop, which shows
 *              where the block is placed (cache sets, 4 KiB aliasing with the stack)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long scale = 1;

static inline uint64_t next_random(uint64_t* state) {
  uint64_t x = *state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *state = x;
}

static void* checked_malloc(size_t size) {
  void* block = malloc(size);
  if (block == NULL) {
    fprintf(stderr, "workload: out of memory for %zu bytes\n", size);
    exit(2);
  }
  return block;
}

/* ---- single-thread fast path ------------------------------------------------------------- */

static uint64_t run_lifo(void) {
  enum { kBlocks = 1000 };
  void* blocks[kBlocks];
  uint64_t sum = 0;
  for (long round = 0; round < 4000 * scale; ++round) {
    for (int i = 0; i < kBlocks; ++i) {
      size_t size = 16 + (size_t)((i * 7 + round) % 64) * 16;
      char* block = checked_malloc(size);
      block[0] = (char)i;
      blocks[i] = block;
    }
    for (int i = kBlocks - 1; i >= 0; --i) {
      sum += (unsigned char)((char*)blocks[i])[0];
      free(blocks[i]);
    }
  }
  return sum;
}

static uint64_t run_fifo(void) {
  enum { kBlocks = 1000 };
  void* blocks[kBlocks];
  uint64_t sum = 0;
  uint64_t random = 88172645463325252ull;
  for (long round = 0; round < 4000 * scale; ++round) {
    for (int i = 0; i < kBlocks; ++i) {
      size_t size = 1 + next_random(&random) % 1024;
      char* block = checked_malloc(size);
      block[0] = (char)size;
      block[size - 1] = (char)size;
      blocks[i] = block;
    }
    for (int i = 0; i < kBlocks; ++i) {
      sum += (unsigned char)((char*)blocks[i])[0];
      free(blocks[i]);
    }
  }
  return sum;
}

/* ---- linked structures --------------------------------------------------------------------- */

struct Node {
  struct Node* next;
  uint64_t value;
  char payload[];
};

static uint64_t run_linked(void) {
  enum { kLists = 64 };
  struct Node* heads[kLists] = {0};
  uint64_t random = 0x9e3779b97f4a7c15ull;
  uint64_t sum = 0;
  long nodes_per_round = 100000 * scale;
  for (int round = 0; round < 8; ++round) {
    for (long i = 0; i < nodes_per_round; ++i) {
      uint64_t r = next_random(&random);
      size_t payload = (r >> 8) % 48;
      struct Node* node = checked_malloc(sizeof(struct Node) + payload);
      node->value = r;
      int list = (int)(r % kLists);
      node->next = heads[list];
      heads[list] = node;
    }
    for (int list = 0; list < kLists; ++list) {  // walk, and unlink about half at random
      struct Node** link = &heads[list];
      while (*link != NULL) {
        struct Node* node = *link;
        sum += node->value & 0xff;
        if (node->value & 0x100) {
          *link = node->next;
          free(node);
        } else {
          link = &node->next;
        }
      }
    }
  }
  for (int list = 0; list < kLists; ++list) {
    while (heads[list] != NULL) {
      struct Node* next = heads[list]->next;
      free(heads[list]);
      heads[list] = next;
    }
  }
  return sum;
}

/* ---- big blocks ---------------------------------------------------------------------------- */

static uint64_t run_bigblock(void) {
  enum { kLive = 16 };
  void* live[kLive] = {0};
  uint64_t random = 0x2545f4914f6cdd1dull;
  uint64_t sum = 0;
  for (long i = 0; i < 20000 * scale; ++i) {
    uint64_t r = next_random(&random);
    size_t size;
    if (r % 4 != 0) size = 192 * 1024 + (r >> 8) % (128 * 1024); /* dense around 256 KiB */
    else size = 128 * 1024 + (r >> 8) % (2 * 1024 * 1024);
    int slot = (int)((r >> 40) % kLive);
    free(live[slot]);
    char* block = checked_malloc(size);
    memset(block, (int)i, 4096); /* a page at each end, as a header and a tail would be */
    block[size - 1] = (char)i;
    sum += (unsigned char)block[size - 1];
    live[slot] = block;
  }
  for (int slot = 0; slot < kLive; ++slot) free(live[slot]);
  return sum;
}

/* ---- larson -------------------------------------------------------------------------------- */

enum { kLarsonSlots = 2000 };

struct LarsonState {
  void* slots[kLarsonSlots];
  uint64_t random;
  int generations_left;
  long ops;
  uint64_t sum;
};

static void* larson_thread(void* argument) {
  struct LarsonState* state = argument;
  for (long op = 0; op < state->ops; ++op) {
    uint64_t r = next_random(&state->random);
    int slot = (int)(r % kLarsonSlots);
    char* old = state->slots[slot];
    if (old != NULL) state->sum += (unsigned char)old[0];
    free(old);
    size_t size = 16 + (r >> 32) % 1000;
    char* block = checked_malloc(size);
    block[0] = (char)r;
    state->slots[slot] = block;
  }
  /* Hand the slots, with the blocks this thread allocated, to a successor thread. */
  int left = __atomic_sub_fetch(&state->generations_left, 1, __ATOMIC_RELAXED);
  if (left > 0) {
    pthread_t successor;
    pthread_create(&successor, NULL, larson_thread, state);
    pthread_detach(successor);
  } else {
    __atomic_store_n(&state->generations_left, -1, __ATOMIC_RELEASE); /* finished */
  }
  return NULL;
}

static uint64_t run_larson(int threads) {
  enum { kGenerations = 10 };
  struct LarsonState* states = calloc((size_t)threads, sizeof(struct LarsonState));
  long total_ops = 6000000 * scale;
  pthread_t first[64];
  for (int t = 0; t < threads; ++t) {
    states[t].random = 0x1234567ull * (uint64_t)(t + 1);
    states[t].generations_left = kGenerations;
    states[t].ops = total_ops / threads / kGenerations;
    pthread_create(&first[t], NULL, larson_thread, &states[t]);
  }
  for (int t = 0; t < threads; ++t) pthread_join(first[t], NULL);
  /* Later generations are detached: wait until every chain has finished. */
  for (int t = 0; t < threads; ++t) {
    while (__atomic_load_n(&states[t].generations_left, __ATOMIC_ACQUIRE) != -1) sched_yield();
  }
  uint64_t sum = 0;
  for (int t = 0; t < threads; ++t) {
    sum += states[t].sum;
    for (int slot = 0; slot < kLarsonSlots; ++slot) free(states[t].slots[slot]);
  }
  free(states);
  return sum;
}

/* ---- producer / consumer ------------------------------------------------------------------- */

enum { kBatch = 64, kQueueBatches = 256 };

struct Queue {
  pthread_mutex_t lock;
  pthread_cond_t not_empty, not_full;
  void** batches[kQueueBatches];
  int head, count, producers_left;
};

static struct Queue queue = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                             PTHREAD_COND_INITIALIZER, {0}, 0, 0, 0};
static long batches_per_producer;

static void* producer(void* argument) {
  uint64_t random = 0xabcdefull + (uintptr_t)argument;
  for (long b = 0; b < batches_per_producer; ++b) {
    void** batch = checked_malloc(kBatch * sizeof(void*));
    for (int i = 0; i < kBatch; ++i) {
      size_t size = 16 + next_random(&random) % 512;
      char* block = checked_malloc(size);
      block[0] = (char)size;
      batch[i] = block;
    }
    pthread_mutex_lock(&queue.lock);
    while (queue.count == kQueueBatches) pthread_cond_wait(&queue.not_full, &queue.lock);
    queue.batches[(queue.head + queue.count) % kQueueBatches] = batch;
    queue.count++;
    pthread_cond_signal(&queue.not_empty);
    pthread_mutex_unlock(&queue.lock);
  }
  pthread_mutex_lock(&queue.lock);
  queue.producers_left--;
  pthread_cond_broadcast(&queue.not_empty);
  pthread_mutex_unlock(&queue.lock);
  return NULL;
}

static void* consumer(void* argument) {
  uint64_t* sum = argument;
  for (;;) {
    pthread_mutex_lock(&queue.lock);
    while (queue.count == 0 && queue.producers_left > 0) {
      pthread_cond_wait(&queue.not_empty, &queue.lock);
    }
    if (queue.count == 0) {
      pthread_mutex_unlock(&queue.lock);
      return NULL;
    }
    void** batch = queue.batches[queue.head];
    queue.head = (queue.head + 1) % kQueueBatches;
    queue.count--;
    pthread_cond_signal(&queue.not_full);
    pthread_mutex_unlock(&queue.lock);
    for (int i = 0; i < kBatch; ++i) {
      *sum += (unsigned char)((char*)batch[i])[0];
      free(batch[i]);
    }
    free(batch);
  }
}

static uint64_t run_prodcons(int threads) {
  int producers = threads / 2 > 0 ? threads / 2 : 1;
  int consumers = threads - producers > 0 ? threads - producers : 1;
  batches_per_producer = 60000 * scale / producers;
  queue.producers_left = producers;
  pthread_t ids[64];
  uint64_t sums[64] = {0};
  for (int p = 0; p < producers; ++p) pthread_create(&ids[p], NULL, producer, (void*)(uintptr_t)p);
  for (int c = 0; c < consumers; ++c) pthread_create(&ids[producers + c], NULL, consumer, &sums[c]);
  uint64_t sum = 0;
  for (int i = 0; i < producers + consumers; ++i) pthread_join(ids[i], NULL);
  for (int c = 0; c < consumers; ++c) sum += sums[c];
  return sum;
}

/* ---- churn with realloc -------------------------------------------------------------------- */

struct ChurnState {
  uint64_t random;
  long ops;
  uint64_t sum;
};

static size_t churn_size(uint64_t r) {
  /* log-uniform 16 B .. 64 KiB: as many small as medium requests per octave */
  unsigned octave = (unsigned)(r % 13); /* 2^4 .. 2^16 */
  size_t base = (size_t)16 << octave;
  return base + (r >> 16) % base;
}

static void* churn_thread(void* argument) {
  enum { kLive = 2000 };
  struct ChurnState* state = argument;
  void* live[kLive] = {0};
  size_t sizes[kLive] = {0};
  for (long op = 0; op < state->ops; ++op) {
    uint64_t r = next_random(&state->random);
    int slot = (int)((r >> 20) % kLive);
    unsigned action = (unsigned)(r >> 60);
    if (live[slot] == NULL) {
      sizes[slot] = churn_size(r);
      live[slot] = checked_malloc(sizes[slot]);
      memset(live[slot], (int)slot, sizes[slot] < 256 ? sizes[slot] : 256);
    } else if (action < 5) { /* grow or shrink in place where possible */
      size_t size = churn_size(r >> 3);
      char* moved = realloc(live[slot], size);
      if (moved == NULL) exit(2);
      state->sum += (unsigned char)moved[0];
      live[slot] = moved;
      sizes[slot] = size;
    } else {
      state->sum += (unsigned char)((char*)live[slot])[0];
      free(live[slot]);
      live[slot] = NULL;
    }
  }
  for (int slot = 0; slot < kLive; ++slot) free(live[slot]);
  return NULL;
}

static uint64_t run_churn(int threads) {
  pthread_t ids[64];
  struct ChurnState states[64];
  for (int t = 0; t < threads; ++t) {
    states[t] = (struct ChurnState){0x5555ull * (uint64_t)(t + 1), 3000000 * scale / threads, 0};
    pthread_create(&ids[t], NULL, churn_thread, &states[t]);
  }
  uint64_t sum = 0;
  for (int t = 0; t < threads; ++t) {
    pthread_join(ids[t], NULL);
    sum += states[t].sum;
  }
  return sum;
}

/* ---- big buffers replaced ----------------------------------------------------------------- */

static size_t bigbuffer_size(uint64_t r) {
  /* 1 MiB .. 64 MiB, log-uniform (as many 1-2 MiB buffers as 32-64 MiB ones; 15 MiB on
   * average): an octave, then a size within it */
  size_t base = (size_t)1 << (20 + r % 6);
  return base + (size_t)(r >> 16) % base;
}

/* A buffer of `size` bytes written in full with `fill`; returns it. */
static char* new_bigbuffer(size_t size, int fill) {
  char* buffer = checked_malloc(size);
  memset(buffer, fill, size);
  return buffer;
}

static uint64_t run_bigbuffers(void) {
  enum { kBuffers = 16 };
  char* buffers[kBuffers];
  size_t sizes[kBuffers];
  uint64_t random = 0x6a09e667f3bcc909ull;
  uint64_t sum = 0;
  for (int slot = 0; slot < kBuffers; ++slot) {
    sizes[slot] = bigbuffer_size(next_random(&random));
    buffers[slot] = new_bigbuffer(sizes[slot], slot + 1);
  }
  /* Few replacements (8 per unit of scale, 120 MiB written): on the benchmark machine (a VM)
   * a page fault costs about 18 us, so an allocator that hands each buffer back to the system
   * and faults it in again writes about 0.2 GB/s, one that reuses the pages 5-10 GB/s. */
  for (long i = 0; i < 8 * scale; ++i) {
    uint64_t r = next_random(&random);
    int slot = (int)(r % kBuffers);
    char* old = buffers[slot];
    size_t size = sizes[slot];
    sum += (unsigned char)old[0] + (unsigned char)old[size / 2] + (unsigned char)old[size - 1];
    free(old);
    sizes[slot] = bigbuffer_size(next_random(&random));
    buffers[slot] = new_bigbuffer(sizes[slot], (int)(i % 251) + 1);
  }
  for (int slot = 0; slot < kBuffers; ++slot) {
    sum += (unsigned char)buffers[slot][sizes[slot] - 1];
    free(buffers[slot]);
  }
  return sum;
}

/* ---- cross-thread frees -------------------------------------------------------------------- */

enum { kXthreadLive = 4000, kXthreadBatch = 64 };

/* Blocks handed to another thread travel in batches (themselves malloc'ed by the sender and
 * freed by the receiver) through the receiver's lock-protected inbox. */
struct XthreadBatch {
  struct XthreadBatch* next;
  int count;
  char* blocks[kXthreadBatch];
};

struct XthreadInbox {
  pthread_mutex_t lock;
  struct XthreadBatch* head;
} __attribute__((aligned(64)));

struct XthreadState {
  int index;
  uint64_t random;
  long ops;
  uint64_t sum;
};

static struct XthreadInbox xthread_inboxes[64];
static int xthread_count;
static pthread_barrier_t xthread_barrier;

static size_t xthread_size(uint64_t r) {
  /* 8 B .. 16 KiB: the octave is the smaller of two uniform picks, so small sizes dominate
   * (an octave of 8-16 B 21 times as likely as 8-16 KiB); uniform within the octave. */
  unsigned first = (unsigned)(r % 11), second = (unsigned)((r >> 8) % 11);
  size_t base = (size_t)8 << (first < second ? first : second);
  return base + (size_t)(r >> 16) % base;
}

static void xthread_send(int target, struct XthreadBatch* batch) {
  struct XthreadInbox* inbox = &xthread_inboxes[target];
  pthread_mutex_lock(&inbox->lock);
  batch->next = inbox->head;
  inbox->head = batch;
  pthread_mutex_unlock(&inbox->lock);
}

/* Frees every block other threads handed to thread `index`; returns their checksum. */
static uint64_t xthread_drain(int index) {
  struct XthreadInbox* inbox = &xthread_inboxes[index];
  pthread_mutex_lock(&inbox->lock);
  struct XthreadBatch* batch = inbox->head;
  inbox->head = NULL;
  pthread_mutex_unlock(&inbox->lock);
  uint64_t sum = 0;
  while (batch != NULL) {
    struct XthreadBatch* next = batch->next;
    for (int i = 0; i < batch->count; ++i) {
      sum += (unsigned char)batch->blocks[i][0];
      free(batch->blocks[i]);
    }
    free(batch);
    batch = next;
  }
  return sum;
}

static struct XthreadBatch* xthread_new_batch(void) {
  struct XthreadBatch* batch = checked_malloc(sizeof *batch);
  batch->count = 0;
  return batch;
}

static void* xthread_thread(void* argument) {
  enum { kRound = 4096 };
  struct XthreadState* state = argument;
  char** live = calloc(kXthreadLive, sizeof *live);
  struct XthreadBatch* outgoing = xthread_new_batch();
  /* Rounds of kRound operations end with a barrier, after which every thread frees what the
   * others handed it in the round: the threads stay in step, so that a thread the scheduler
   * leaves waiting does not pile up the others' blocks (peak RSS and time would depend on
   * the scheduler). In each round blocks go to one other thread, the next round to the next. */
  for (long done = 0, round = 0; done < state->ops; done += kRound, ++round) {
    int target = (int)((state->index + 1 + round % (xthread_count - 1)) % xthread_count);
    for (long op = done; op < done + kRound && op < state->ops; ++op) {
      uint64_t r = next_random(&state->random);
      int slot = (int)((r >> 24) % kXthreadLive);
      char* old = live[slot];
      if (old != NULL) {
        state->sum += (unsigned char)old[0];
        if (r % 4 == 0) { /* one in four goes to another thread, which frees it */
          outgoing->blocks[outgoing->count++] = old;
          if (outgoing->count == kXthreadBatch) {
            xthread_send(target, outgoing);
            outgoing = xthread_new_batch();
          }
        } else {
          free(old);
        }
      }
      size_t size = xthread_size(next_random(&state->random));
      char* block = checked_malloc(size);
      memset(block, (int)(size & 0xff), size);
      live[slot] = block;
    }
    if (outgoing->count > 0) {
      xthread_send(target, outgoing);
      outgoing = xthread_new_batch();
    }
    pthread_barrier_wait(&xthread_barrier); /* this round's blocks are all in the inboxes */
    state->sum += xthread_drain(state->index);
  }
  free(outgoing);
  for (int slot = 0; slot < kXthreadLive; ++slot) free(live[slot]);
  free(live);
  return NULL;
}

static uint64_t run_xthread(int threads) {
  if (threads < 2) threads = 2; /* frees need another thread */
  xthread_count = threads;
  pthread_barrier_init(&xthread_barrier, NULL, (unsigned)threads);
  pthread_t ids[64];
  struct XthreadState states[64];
  for (int t = 0; t < threads; ++t) {
    pthread_mutex_init(&xthread_inboxes[t].lock, NULL);
    states[t] = (struct XthreadState){t, 0xc2b2ae3d27d4eb4full * (uint64_t)(t + 1),
                                      1500000 * scale / threads, 0};
    pthread_create(&ids[t], NULL, xthread_thread, &states[t]);
  }
  uint64_t sum = 0;
  for (int t = 0; t < threads; ++t) {
    pthread_join(ids[t], NULL);
    sum += states[t].sum;
  }
  pthread_barrier_destroy(&xthread_barrier);
  return sum;
}

/* ---- cache thrash (one thread) ------------------------------------------------------------- */

/* Hoard's cache-thrash loop run by one thread: objects of 1 .. 8 bytes, each written and read
 * byte by byte `repetitions` times, through a volatile pointer and a volatile stack variable
 * so that every access happens. */
static __attribute__((noinline)) uint64_t cachethrash_loop(long repetitions) {
  enum { kObjects = 8 };
  uint64_t sum = 0;
  for (int j = 0; j < kObjects; ++j) {
    size_t size = 1 + (size_t)j % 8;
    volatile char* object = checked_malloc(size);
    for (long k = 0; k < repetitions; ++k) {
      for (size_t i = 0; i < size; ++i) {
        object[i] = (char)(i + (size_t)j + (size_t)k);
        volatile char ch = object[i];
        ch++;
      }
    }
    for (size_t i = 0; i < size; ++i) sum += (unsigned char)object[i];
    free((void*)object);
  }
  return sum;
}

static uint64_t run_cachethrash(void) {
  /* The stack's offset within its page is random (the kernel's stack randomization, and the
   * environment's size, LD_PRELOAD included), and whether the loop's stack variable shares
   * the object's address bits 0-11 (4 KiB aliasing) changed the time from run to run. Padding
   * the stack to a fixed page offset makes the time a function of where the allocator put
   * the object alone. */
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
  volatile char* pad = __builtin_alloca((frame & 4095) + 256);
  pad[0] = 0;
  return cachethrash_loop(4000000 * scale) + pad[0];
}

/* ---- a loaded machine ------------------------------------------------------------------------
 * BUSY threads that only spin, started before the workload and stopped after it: the
 * workload's threads wait for a core as they would on a machine other programs keep busy, so
 * that each unit of its work takes more wall time (which time-based purge policies see). */

static volatile int busy_stop = 0;

/* ---- hash table -------------------------------------------------------------------------- */

struct Entry {
  struct Entry* next;
  uint64_t key;
  uint64_t value;
  char payload[];
};

static uint64_t entry_key(uint64_t index) {  /* splitmix64: distinct keys, spread over buckets */
  uint64_t z = index + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static struct Entry* new_entry(uint64_t key, uint64_t r) {
  size_t payload = 16 + (r >> 16) % 41;
  struct Entry* entry = checked_malloc(sizeof(struct Entry) + payload);
  entry->key = key;
  entry->value = r;
  memset(entry->payload, (int)(r & 0xff), payload);
  return entry;
}

static uint64_t run_hashtable(void) {
  enum { kBucketBits = 18, kEntries = 200000 };
  struct Entry** buckets = calloc((size_t)1 << kBucketBits, sizeof *buckets);
  if (buckets == NULL) exit(2);
  uint64_t random = 0x2545f4914f6cdd1dull;
  for (uint64_t i = 0; i < kEntries; ++i) {
    uint64_t key = entry_key(i);
    struct Entry* entry = new_entry(key, next_random(&random));
    struct Entry** bucket = &buckets[key >> (64 - kBucketBits)];
    entry->next = *bucket;
    *bucket = entry;
  }
  uint64_t sum = 0;
  long lookups = 1000000 * scale;
  for (long n = 0; n < lookups; ++n) {
    uint64_t r = next_random(&random);
    uint64_t key = entry_key(r % kEntries);
    struct Entry** link = &buckets[key >> (64 - kBucketBits)];
    while ((*link)->key != key) link = &(*link)->next;
    struct Entry* entry = *link;
    sum += entry->value + (uint8_t)entry->payload[0];
    if ((r >> 40) % 8 == 0) {  /* replace it with an entry of another size */
      struct Entry* replacement = new_entry(key, next_random(&random));
      replacement->next = entry->next;
      *link = replacement;
      free(entry);
    }
  }
  for (uint64_t i = 0; i < (uint64_t)1 << kBucketBits; ++i) {
    while (buckets[i] != NULL) {
      struct Entry* next = buckets[i]->next;
      free(buckets[i]);
      buckets[i] = next;
    }
  }
  free(buckets);
  return sum;
}

static void* busy_thread(void* unused) {
  (void)unused;
  volatile uint64_t spins = 0;
  while (!busy_stop) ++spins;
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr,
            "usage: %s lifo|fifo|linked|bigblock|larson|prodcons|churn|bigbuffers|xthread|"
            "cachethrash|hashtable [THREADS] [SCALE] [BUSY]\n",
            argv[0]);
    return 2;
  }
  int threads = argc > 2 ? atoi(argv[2]) : 1;
  if (threads < 1 || threads > 64) threads = 1;
  if (argc > 3) scale = atol(argv[3]);
  if (scale < 1) scale = 1;
  int busy = argc > 4 ? atoi(argv[4]) : 0;
  if (busy < 0 || busy > 16) busy = 0;
  pthread_t busy_threads[16];
  for (int i = 0; i < busy; ++i) pthread_create(&busy_threads[i], NULL, busy_thread, NULL);
  const char* name = argv[1];
  uint64_t sum;
  if (strcmp(name, "lifo") == 0) sum = run_lifo();
  else if (strcmp(name, "fifo") == 0) sum = run_fifo();
  else if (strcmp(name, "linked") == 0) sum = run_linked();
  else if (strcmp(name, "bigblock") == 0) sum = run_bigblock();
  else if (strcmp(name, "larson") == 0) sum = run_larson(threads);
  else if (strcmp(name, "prodcons") == 0) sum = run_prodcons(threads);
  else if (strcmp(name, "churn") == 0) sum = run_churn(threads);
  else if (strcmp(name, "bigbuffers") == 0) sum = run_bigbuffers();
  else if (strcmp(name, "xthread") == 0) sum = run_xthread(threads);
  else if (strcmp(name, "cachethrash") == 0) sum = run_cachethrash();
  else if (strcmp(name, "hashtable") == 0) sum = run_hashtable();
  else {
    fprintf(stderr, "unknown workload %s\n", name);
    return 2;
  }
  busy_stop = 1;
  for (int i = 0; i < busy; ++i) pthread_join(busy_threads[i], NULL);
  printf("%s %d %ld %llu\n", name, threads, scale, (unsigned long long)sum);
  return 0;
}
