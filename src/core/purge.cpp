#include "core/purge.h"

#include "core/arena.h"
#include "core/large.h"
#include "platform/options.h"

namespace mapalloc {

namespace {

// One thread at a time does the process-wide work; others skip it (it is not urgent).
std::atomic<bool> process_purge_running{false};

size_t purge_process(uint64_t now_ms, bool force) {
  global_purge_deadline_ms.store(0, std::memory_order_relaxed);
  uint64_t next_deadline_ms = 0;
  size_t released = segment_cache_purge(now_ms, force, &next_deadline_ms);
  released += arena_purge(now_ms, force, &next_deadline_ms);
  released += large_cache_purge(now_ms, force, &next_deadline_ms);
  // Abandoned heaps belong to no thread: their remote frees are collected, their empty pages
  // retired and their free pages purged here.
  heap_for_each_abandoned([&](Heap* heap) {
    heap_collect(heap);
    released += heap_purge(heap, now_ms, force ? 0 : options().purge_delay_ms);
    lower_deadline(&next_deadline_ms, heap->purge_deadline_ms);
  });
  if (!force) released += segment_cache_purge(now_ms, false, &next_deadline_ms);
  note_global_purge_deadline(next_deadline_ms);
  return released;
}

}  // namespace

void purge_if_due(Heap* heap) {
  uint64_t now_ms = os_now_ms();
  if (heap != &empty_heap) {
    if (heap->remote_frees_pending.load(std::memory_order_relaxed) &&
        now_ms >= heap->next_remote_collect_ms) {
      heap->next_remote_collect_ms = now_ms + options().purge_delay_ms;
      // Pages emptied by other threads' frees mean the heap's live set shrank (a producer
      // whose blocks were consumed): without a budget it would keep its old peak resident for
      // a whole purge delay while other heaps grow theirs, and the process's peak would be the
      // sum of the heaps' peaks. Pages a heap empties itself are likely reused soon: they wait
      // for the delay as before.
      if (heap_collect_remote(heap) != 0) heap_purge_over_budget(heap, now_ms);
    }
    if (heap->purge_requested.load(std::memory_order_relaxed) &&
        heap->purge_requested.exchange(false, std::memory_order_relaxed)) {
      if constexpr (kSecure) heap_flush_quarantine(heap);
      heap_collect(heap);
      heap_purge(heap, now_ms, 0);
    } else if (heap->purge_deadline_ms != 0 && now_ms >= heap->purge_deadline_ms) {
      // Blocks waiting in quarantine keep their pages from being purged: after a quiet
      // purge delay they have waited long enough.
      if constexpr (kSecure) heap_flush_quarantine(heap);
      heap_purge(heap, now_ms, options().purge_delay_ms);
    }
  }
  uint64_t due_ms = global_purge_deadline_ms.load(std::memory_order_relaxed);
  if (due_ms != 0 && now_ms >= due_ms &&
      !process_purge_running.exchange(true, std::memory_order_acquire)) {
    // This thread's quarantine may hold blocks of the heaps about to be purged.
    if constexpr (kSecure) {
      if (heap != &empty_heap) heap_flush_quarantine(heap);
    }
    purge_process(now_ms, false);
    process_purge_running.store(false, std::memory_order_release);
  }
}

size_t purge_all_now(Heap* heap) {
  uint64_t now_ms = os_now_ms();
  size_t released = 0;
  if (heap != &empty_heap) {
    heap_collect(heap);
    released += heap_purge(heap, now_ms, 0);
  }
  while (process_purge_running.exchange(true, std::memory_order_acquire)) os_yield();
  released += purge_process(now_ms, true);
  process_purge_running.store(false, std::memory_order_release);
  heap_for_each([heap](Heap* other) {
    if (other != heap && !other->abandoned.load(std::memory_order_relaxed)) {
      other->purge_requested.store(true, std::memory_order_relaxed);
    }
  });
  return released;
}

void purge_after_fork_child() {
  process_purge_running.store(false, std::memory_order_relaxed);
  heap_after_fork_child();
}

}  // namespace mapalloc
