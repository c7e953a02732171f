/* Threads for tests/trace_test.sh: blocks allocated by one thread are reallocated and freed by
 * others, so a replay must wait for each allocation before the free that depends on it.
 *
 *   4 producers: 2000 blocks each (16..2063 bytes), filled, handed over through a queue
 *   2 consumers: check each block, reallocate every 10th one (to twice its size), free it
 *   every producer and consumer: 500 private malloc/free pairs
 *   then 20 short-lived threads one after another: 10 malloc/free pairs each (thread exit
 *   while the process goes on; the tracer's buffers of exited threads are reused)
 *   then a thread allocates a 1 MiB block, churns 20,000 pairs, asks the block's
 *   malloc_usable_size and ends; the next thread frees the block (a replay must not free it
 *   before the malloc_usable_size: under glibc the block is unmapped when freed)
 *   then a fork(): the child allocates and exits (a fork child is not traced)
 * Exit status 0 when every block arrived intact.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { kProducers = 4, kConsumers = 2, kBlocks = 2000, kQueue = 256, kChurn = 500 };

static struct {
  pthread_mutex_t lock;
  pthread_cond_t changed;
  unsigned char* items[kQueue];
  size_t sizes[kQueue];
  unsigned head, tail, done_producers;
} queue = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, {0}, 0, 0, 0};

static int corrupted;

static void churn(unsigned seed) {
  for (int i = 0; i < kChurn; ++i) {
    seed = seed * 1103515245 + 12345;
    char* p = malloc(16 + (seed >> 16) % 512);
    p[0] = 1;
    free(p);
  }
}

static void* producer(void* arg) {
  unsigned id = (unsigned)(uintptr_t)arg;
  for (int i = 0; i < kBlocks; ++i) {
    size_t size = 16 + (size_t)((i * 7 + id * 131) % 2048);
    unsigned char* block = malloc(size);
    memset(block, (int)(size & 0xff), size);
    pthread_mutex_lock(&queue.lock);
    while (queue.tail - queue.head == kQueue) pthread_cond_wait(&queue.changed, &queue.lock);
    queue.items[queue.tail % kQueue] = block;
    queue.sizes[queue.tail % kQueue] = size;
    ++queue.tail;
    pthread_cond_broadcast(&queue.changed);
    pthread_mutex_unlock(&queue.lock);
  }
  churn(id);
  pthread_mutex_lock(&queue.lock);
  ++queue.done_producers;
  pthread_cond_broadcast(&queue.changed);
  pthread_mutex_unlock(&queue.lock);
  return NULL;
}

static void* consumer(void* arg) {
  unsigned taken = 0;
  for (;;) {
    pthread_mutex_lock(&queue.lock);
    while (queue.head == queue.tail && queue.done_producers < kProducers)
      pthread_cond_wait(&queue.changed, &queue.lock);
    if (queue.head == queue.tail) {
      pthread_mutex_unlock(&queue.lock);
      break;
    }
    unsigned char* block = queue.items[queue.head % kQueue];
    size_t size = queue.sizes[queue.head % kQueue];
    ++queue.head;
    pthread_cond_broadcast(&queue.changed);
    pthread_mutex_unlock(&queue.lock);
    if (block[0] != (size & 0xff) || block[size - 1] != (size & 0xff)) corrupted = 1;
    if (++taken % 10 == 0) {
      block = realloc(block, 2 * size);
      if (block[size - 1] != (size & 0xff)) corrupted = 1;
    }
    free(block);
  }
  churn((unsigned)(uintptr_t)arg + 1000);
  return NULL;
}

static void* short_lived(void* arg) {
  (void)arg;
  for (int i = 0; i < 10; ++i) free(malloc(100 + i));
  return NULL;
}

static void* sized_block;

static void* sizer(void* arg) {
  (void)arg;
  sized_block = malloc(1 << 20);
  for (int i = 0; i < 40; ++i) churn((unsigned)i);
  if (malloc_usable_size(sized_block) < 1 << 20) corrupted = 1;
  return NULL;
}

static void* freer(void* arg) {
  (void)arg;
  free(sized_block);
  return NULL;
}

int main(void) {
  pthread_t threads[kProducers + kConsumers];
  for (int i = 0; i < kProducers; ++i)
    pthread_create(&threads[i], NULL, producer, (void*)(uintptr_t)i);
  for (int i = 0; i < kConsumers; ++i)
    pthread_create(&threads[kProducers + i], NULL, consumer, (void*)(uintptr_t)i);
  for (int i = 0; i < kProducers + kConsumers; ++i) pthread_join(threads[i], NULL);
  for (int i = 0; i < 20; ++i) {
    pthread_t t;
    pthread_create(&t, NULL, short_lived, NULL);
    pthread_join(t, NULL);
  }
  void* (*const sized[2])(void*) = {sizer, freer};
  for (int i = 0; i < 2; ++i) {
    pthread_t t;
    pthread_create(&t, NULL, sized[i], NULL);
    pthread_join(t, NULL);
  }
  pid_t child = fork();
  if (child == 0) {
    for (int i = 0; i < 1000; ++i) free(malloc(64));
    exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  return corrupted || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}
