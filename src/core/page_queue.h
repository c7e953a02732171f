// A heap's queues of pages of one size class (Heap::available): doubly linked through the pages'
// queue_next / queue_prev, owner only. A page is in at most one queue, and in one exactly while
// its state is kAvailable.
#pragma once

#include "core/page.h"
#include "platform/debug_assert.h"

namespace mapalloc {

struct PageQueue {
  Page* first = nullptr;
  Page* last = nullptr;
};

inline void queue_push(PageQueue& queue, Page* page) {
  MAPALLOC_ASSERT(page->state == PageState::kAvailable && page->queue_next == nullptr &&
                      page->queue_prev == nullptr && queue.first != page,
                  "a page joins a queue only while kAvailable and in no queue", page);
  MAPALLOC_ASSERT((queue.first == nullptr) == (queue.last == nullptr) &&
                      (queue.last == nullptr || queue.last->queue_next == nullptr),
                  "a queue's first and last ends are consistent", queue.last);
  page->queue_next = nullptr;
  page->queue_prev = queue.last;
  if (queue.last != nullptr)
    queue.last->queue_next = page;
  else
    queue.first = page;
  queue.last = page;
}

inline void queue_remove(PageQueue& queue, Page* page) {
  MAPALLOC_ASSERT(page->state == PageState::kAvailable, "a queued page is kAvailable", page);
  MAPALLOC_ASSERT(
      page->queue_prev != nullptr ? page->queue_prev->queue_next == page : queue.first == page,
      "a queued page's predecessor links to it", page);
  MAPALLOC_ASSERT(
      page->queue_next != nullptr ? page->queue_next->queue_prev == page : queue.last == page,
      "a queued page's successor links back to it", page);
  if (page->queue_prev != nullptr)
    page->queue_prev->queue_next = page->queue_next;
  else
    queue.first = page->queue_next;
  if (page->queue_next != nullptr)
    page->queue_next->queue_prev = page->queue_prev;
  else
    queue.last = page->queue_prev;
  page->queue_next = page->queue_prev = nullptr;
}

inline Page* queue_pop(PageQueue& queue) {
  Page* page = queue.first;
  if (page != nullptr) queue_remove(queue, page);
  return page;
}

inline void queue_append(PageQueue& into, PageQueue& from) {
  if (from.first == nullptr) return;
  if (into.last != nullptr) {
    into.last->queue_next = from.first;
    from.first->queue_prev = into.last;
  } else {
    into.first = from.first;
  }
  into.last = from.last;
  from = PageQueue{};
}

}  // namespace mapalloc
