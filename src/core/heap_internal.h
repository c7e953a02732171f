// What the parts of the heap layer share: heap.cpp (pages of a heap: refill, free, retire),
// heap_remote.cpp (the remote-free protocol), heap_pool.cpp (every heap, and the pools of
// abandoned ones) and heap_purge.cpp (purging a heap's free pages). Not for other layers.
#pragma once

#include "core/heap.h"
#include "core/page_queue.h"

namespace mapalloc {

// --- heap.cpp
// The span of an empty page goes back to its segment (owner only).
void retire(Heap* heap, Page* page);
// The page is no longer the current one of its class: its free blocks go back to it.
void release_current(Heap* heap, unsigned size_class);
// The segment-map entry of the heap's segments: its tag, or the shared entry without one.
uint8_t map_entry_of(const Heap* heap);
// Rolls the working set's buckets forward to `now_ms` (see Heap::used_pages).
void note_used_pages(Heap* heap, uint64_t now_ms);

// --- heap_remote.cpp
// Delivers a block that claimed its full page's kFullFlag to the owner's delayed list.
void push_delayed(Heap* owner, Block* block);
// Tells the owner that remote frees wait for it (after the block is on a list).
void note_remote_free(Heap* owner);
// Frees the blocks of the heap's delayed list (forwarding those of pages it no longer owns).
void drain_delayed(Heap* heap);
// Moves the remote frees of a class's available pages into their local lists, and retires the
// pages that leaves empty. Returns how many it retired.
unsigned collect_available(Heap* heap, unsigned size_class);

// --- heap_pool.cpp
// Before mapping new memory: takes over an abandoned heap's segments and pages, if any.
bool reclaim_abandoned(Heap* heap);
// Sets an abandoned heap's share of the abandoned heaps' allowance to what it holds now.
void recount_dirty(Heap* heap);

// --- heap_purge.cpp
// Free pages of the heap's segments that are not purged.
size_t dirty_pages_of(const Heap* heap);

}  // namespace mapalloc
