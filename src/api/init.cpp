#include "api/init.h"

#include "core/arena.h"
#include "core/large.h"
#include "core/page.h"
#include "core/purge.h"
#include "core/stats.h"
#include "platform/options.h"
#include "platform/unwind.h"
#include "prof/prof.h"

namespace mapalloc {

namespace {

std::atomic<bool> atfork_registered{false};

void on_thread_exit(void*) { thread_exit(); }

// Options, and the fault injection they may ask for, once: from the first allocation or from
// the load-time constructor, whichever comes first.
std::atomic<bool> options_applied{false};
void apply_options() {
  if (options_applied.exchange(true, std::memory_order_acq_rel)) return;
  options_init();
  prof_init();
  if (options().fault_mmap != 0) os_fail_mmap_after(options().fault_mmap, false);
  if (options().fault_mmap_from != 0) os_fail_mmap_after(options().fault_mmap_from, true);
}

void process_init() {
  apply_options();
  os_draw_secrets();
  os_thread_exit_key_create(on_thread_exit);
  // Segmentation faults in our memory get a one-line report (MAPALLOC_REPORT_FAULTS=0: not).
  if (options().report_faults) os_report_faults(describe_fault);
}

// At load: options and, if asked for, the statistics sampler (the one start-up work that
// allocates, and only when MAPALLOC_SAMPLE_MS is set). At exit: the statistics table if asked.
__attribute__((constructor)) void at_load() {
  apply_options();
  prof_start_unwinding();
  stats_start_sampler_if_asked();
}
__attribute__((destructor)) void at_exit() {
  // Secure build: the blocks still waiting in the exiting thread's quarantine are checked for
  // writes after free now, since they will never leave it (other threads' quarantines are
  // checked when they exit).
  if constexpr (kSecure) {
    if (tls_heap != &empty_heap) heap_check_quarantine(tls_heap);
  }
  prof_dump_at_exit();
  stats_report_at_exit();
}

}  // namespace

Heap* thread_init() {
  os_run_once(process_init);
  Heap* heap = heap_acquire();
  if (heap == nullptr) return nullptr;
  tls_heap = heap;
  // Both calls below may allocate (a high key's storage, glibc's atfork list): by now this
  // thread has its heap, so such a nested malloc takes the ordinary path.
  os_thread_exit_key_set(heap);
  if (!atfork_registered.exchange(true, std::memory_order_acq_rel)) {
    os_at_fork_child(after_fork_child);
    prof_register_fork_handlers();
  }
  return heap;
}

void thread_exit() {
  Heap* heap = tls_heap;
  if (heap == &empty_heap) return;
  if constexpr (kSecure) heap_flush_quarantine(heap);
  // Detach first: once in the pool the heap may be adopted by another thread at any moment,
  // and frees this thread still makes (later destructors, glibc's own clean-up) must then take
  // the remote path.
  tls_heap = &empty_heap;
  heap_abandon(heap);
  unwind_thread_exit();
}

void after_fork_child() {
  page_after_fork_child();
  segment_cache_after_fork_child();
  arena_after_fork_child();
  large_after_fork_child();
  purge_after_fork_child();
}

}  // namespace mapalloc
