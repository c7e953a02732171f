// A rate limit for costly safety work (protecting freed blocks: two mprotect calls each, and a
// TLB shootdown in a threaded process): `burst` at once, then one more per `refill_ms`. A
// program that does the work rarely (most programs, and a typical use after free of a big
// buffer) has all of it done; one that does it thousands of times a second has a steady trickle
// done and the rest skipped, at a cost that stays a small fraction of its time.
//
// Not synchronized: the caller holds whatever lock guards the bucket.
#pragma once

#include "platform/config.h"

namespace mapalloc {

struct TokenBucket {
  unsigned tokens;
  uint64_t refilled_at_ms;

  // Takes one token, after adding those earned since the last refill (up to `burst`); false
  // when none is left.
  bool take(uint64_t now_ms, unsigned burst, uint64_t refill_ms) {
    if (now_ms >= refilled_at_ms) {  // (a clock that went back: wait)
      uint64_t earned = (now_ms - refilled_at_ms) / refill_ms;
      if (earned != 0) {
        uint64_t total = tokens + earned;
        tokens = total > burst ? burst : static_cast<unsigned>(total);
        refilled_at_ms = now_ms;
      }
    }
    if (tokens == 0) return false;
    --tokens;
    return true;
  }
};

}  // namespace mapalloc
