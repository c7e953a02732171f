// Heaps and threads: cross-thread frees, full pages freed remotely, thread exit and heap reuse,
// many threads over time, fork while other threads allocate.
#include <doctest/doctest.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <thread>
#include <vector>

#include "api/entry.h"
#include "mapalloc.h"
#include "test_support.h"

using namespace mapalloc;

namespace {

volatile size_t opaque_zero = 0;
size_t runtime(size_t value) { return value + opaque_zero; }

Heap* current_heap() { return tls_heap; }

// free(malloc(n)) that the compiler cannot fold away.
void allocate_and_free(size_t size) {
  void* volatile block = malloc(runtime(size));
  free(block);
}

}  // namespace

TEST_CASE("a thread's first malloc gives it a heap of its own") {
  Heap* main_heap = nullptr;
  allocate_and_free(8);
  main_heap = current_heap();
  CHECK(main_heap != &empty_heap);
  Heap* other = nullptr;
  std::thread thread([&] {
    CHECK(current_heap() == &empty_heap);
    allocate_and_free(8);
    other = current_heap();
  });
  thread.join();
  CHECK(other != nullptr);
  CHECK(other != &empty_heap);
  CHECK(other != main_heap);
}

TEST_CASE("blocks freed by another thread return to their page and are reused") {
  constexpr size_t kCount = 20000;
  std::vector<void*> blocks(kCount);
  for (auto& block : blocks) block = malloc(runtime(64));
  Page* first_page = span_head(page_entry_of(blocks[0]));
  std::thread freer([&] {
    for (void* block : blocks) free(block);
  });
  freer.join();
  // The owner sees the remote frees when it refills, and serves new blocks from the same pages.
  std::vector<void*> again(kCount);
  size_t reused = 0;
  for (auto& block : again) {
    block = malloc(runtime(64));
    if (span_head(page_entry_of(block)) == first_page) ++reused;
  }
  CHECK(reused > 0);
  for (void* block : again) free(block);
}

TEST_CASE("producer/consumer: every block freed remotely, contents intact") {
  constexpr int kRounds = 50000;
  std::atomic<void*> slot{nullptr};
  std::atomic<bool> corrupt{false};
  std::thread consumer([&] {
    for (int received = 0; received < kRounds;) {
      void* block = slot.exchange(nullptr, std::memory_order_acquire);
      if (block == nullptr) {
        std::this_thread::yield();  // on a loaded 2-core machine, spinning starves the producer
        continue;
      }
      if (*static_cast<int*>(block) != received) corrupt = true;
      free(block);
      ++received;
    }
  });
  for (int i = 0; i < kRounds; ++i) {
    size_t size = 16 + static_cast<size_t>(i % 64) * 32;
    auto* block = static_cast<int*>(malloc(runtime(size)));
    *block = i;
    while (slot.load(std::memory_order_relaxed) != nullptr) std::this_thread::yield();
    slot.store(block, std::memory_order_release);
  }
  consumer.join();
  CHECK_FALSE(corrupt.load());
}

TEST_CASE("a full page freed remotely is noticed through the delayed list") {
  // Fill whole pages, let another thread free them while this one allocates other sizes.
  size_t size = 256;
  size_t per_page = kPageBytes / size;
  std::vector<void*> blocks;
  for (size_t i = 0; i < per_page * 4; ++i) blocks.push_back(malloc(runtime(size)));
  std::thread freer([&] {
    for (void* block : blocks) free(block);
  });
  freer.join();
  // Allocate the same class again: the freed pages must be reused, not new ones mapped.
  size_t mapped_before = os_counters.mapped_bytes.load();
  std::vector<void*> again;
  for (size_t i = 0; i < per_page * 4; ++i) again.push_back(malloc(runtime(size)));
  CHECK(os_counters.mapped_bytes.load() <= mapped_before);
  for (void* block : again) free(block);
}

TEST_CASE("an exited thread's heap is adopted by the next thread, blocks and all") {
  Heap* first = nullptr;
  void* survivor = nullptr;
  std::thread([&] {
    survivor = malloc(runtime(100));
    memset(survivor, 0x77, 100);
    first = current_heap();
  }).join();
  Heap* second = nullptr;
  std::thread([&] {
    allocate_and_free(100);
    second = current_heap();
  }).join();
  CHECK(second == first);
  // A block that outlived its thread is still valid and can be freed from here.
  CHECK(static_cast<unsigned char*>(survivor)[99] == 0x77);
  free(survivor);
}

TEST_CASE("creating and joining many threads does not grow memory") {
  auto run_batch = [](int threads) {
    for (int i = 0; i < threads; ++i) {
      std::thread([] {
        void* blocks[32];
        for (size_t j = 0; j < 32; ++j) blocks[j] = malloc(runtime(16 + j * 100));
        for (void* block : blocks) free(block);
      }).join();
    }
  };
  run_batch(200);
  size_t mapped_after_warmup = os_counters.mapped_bytes.load();
  run_batch(3000);
  CHECK(os_counters.mapped_bytes.load() <= mapped_after_warmup + kSegmentBytes);
}

TEST_CASE("many threads allocate and free concurrently without corruption") {
  constexpr int kThreads = 16;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &failures] {
      std::vector<std::pair<unsigned char*, size_t>> live;
      unsigned seed = static_cast<unsigned>(t) * 7919u + 1;
      for (int i = 0; i < 20000; ++i) {
        seed = seed * 1103515245u + 12345u;
        if (live.size() < 200 && (seed >> 16) % 3 != 0) {
          size_t size = 1 + (seed >> 8) % 3000;
          auto* block = static_cast<unsigned char*>(malloc(runtime(size)));
          memset(block, t, size);
          live.emplace_back(block, size);
        } else if (!live.empty()) {
          size_t index = (seed >> 4) % live.size();
          auto [block, size] = live[index];
          for (size_t k = 0; k < size; ++k) {
            if (block[k] != static_cast<unsigned char>(t)) {
              failures++;
              break;
            }
          }
          free(block);
          live[index] = live.back();
          live.pop_back();
        }
      }
      for (auto& entry : live) free(entry.first);
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(failures.load() == 0);
}

TEST_CASE("fork while other threads allocate: the child allocates and frees") {
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < 3; ++t) {
    workers.emplace_back([&stop] {
      std::vector<void*> held;
      for (unsigned i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        held.push_back(malloc(runtime(16 + (i % 200) * 64)));
        if (held.size() > 500) {
          for (void* block : held) free(block);
          held.clear();
        }
        if (i % 1000 == 0) allocate_and_free(1 << 20);  // the large-block cache too
      }
      for (void* block : held) free(block);
    });
  }
  int failures = 0;
  // (50 forks: about 4 s on 2 cores with the three workers; stress/forkstorm forks more.)
  for (int round = 0; round < 50; ++round) {
    auto result = test_support::run_in_child([] {
      std::vector<void*> blocks;
      for (size_t i = 0; i < 2000; ++i) blocks.push_back(malloc(runtime(1 + i * 37 % 5000)));
      for (void* block : blocks) free(block);
      void* large = malloc(runtime(4 << 20));
      free(large);
      mapalloc_trim();
      std::thread([] { allocate_and_free(100); }).join();
    });
    if (!result.exited || result.exit_code != 0) ++failures;
  }
  stop = true;
  for (auto& worker : workers) worker.join();
  CHECK(failures == 0);
}

namespace {

// The addresses of 4,000 new 40-byte blocks, in the order handed out, hashed (then freed).
uint64_t handout_fingerprint() {
  constexpr int kBlocks = 4000;
  static void* blocks[kBlocks];
  uint64_t hash = 0xcbf29ce484222325ull;
  for (int i = 0; i < kBlocks; ++i) {
    blocks[i] = malloc(runtime(40));
    hash = (hash ^ reinterpret_cast<uintptr_t>(blocks[i])) * 0x100000001b3ull;
  }
  for (void* block : blocks) free(block);
  return hash;
}

}  // namespace

TEST_CASE("a forked child does not hand blocks out in the parent's order (secure build)") {
  // The secure build carves new blocks in a random order and holds freed ones in random
  // quarantine slots: a child that kept its parent's sequences would repeat the parent's
  // layout, which one child could then learn for all of them. (The default build's order is
  // deterministic by design.)
  if (!kSecure) return;
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    uint64_t child = handout_fingerprint();
    _exit(write(fds[1], &child, sizeof child) == sizeof child ? 0 : 1);
  }
  uint64_t parent = handout_fingerprint();
  uint64_t child = 0;
  CHECK(read(fds[0], &child, sizeof child) == static_cast<ssize_t>(sizeof child));
  int status = 0;
  waitpid(pid, &status, 0);
  close(fds[0]);
  close(fds[1]);
  CHECK(WIFEXITED(status));
  CHECK(child != parent);
}

TEST_CASE("blocks of an exited thread freed later by others are returned to its heap") {
  std::vector<void*> blocks;
  std::thread([&] {
    for (int i = 0; i < 5000; ++i) blocks.push_back(malloc(runtime(48)));
  }).join();
  std::thread([&] {
    for (void* block : blocks) free(block);
  }).join();
  // A later thread adopts that heap and gets the blocks back instead of new memory.
  size_t mapped_before = os_counters.mapped_bytes.load();
  std::thread([&] {
    std::vector<void*> again;
    for (int i = 0; i < 5000; ++i) again.push_back(malloc(runtime(48)));
    for (void* block : again) free(block);
  }).join();
  CHECK(os_counters.mapped_bytes.load() <= mapped_before);
}
