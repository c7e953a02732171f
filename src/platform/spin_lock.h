// A small spin lock for the few process-wide lists (segment cache, large-block cache).
//
// Fork rule: every critical section guarded by a SpinLock publishes its effect with a single
// pointer-sized store, so any state a forked child can observe is consistent. The child therefore
// simply resets every lock (a thread that held one in the parent does not exist in the child);
// no lock is ever held across fork(), which avoids the stdio-lock deadlock that jemalloc hits.
#pragma once

#include <atomic>

#include "platform/config.h"
#include "platform/process.h"

namespace mapalloc {

class SpinLock {
 public:
  void lock() {
    for (unsigned spins = 0;; ++spins) {
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
      while (locked_.load(std::memory_order_relaxed)) {
        if (++spins % 64 == 0)
          os_yield();
        else
          cpu_relax();
      }
    }
  }
  bool try_lock() { return !locked_.exchange(true, std::memory_order_acquire); }
  void unlock() { locked_.store(false, std::memory_order_release); }
  // In a forked child: whether a thread (which does not exist there) held it at the fork.
  bool held() const { return locked_.load(std::memory_order_relaxed); }
  void reset_after_fork() { locked_.store(false, std::memory_order_relaxed); }

 private:
  std::atomic<bool> locked_{false};
};

class SpinLockGuard {
 public:
  explicit SpinLockGuard(SpinLock& lock) : lock_(lock) { lock_.lock(); }
  ~SpinLockGuard() { lock_.unlock(); }
  SpinLockGuard(const SpinLockGuard&) = delete;
  SpinLockGuard& operator=(const SpinLockGuard&) = delete;

 private:
  SpinLock& lock_;
};

}  // namespace mapalloc
