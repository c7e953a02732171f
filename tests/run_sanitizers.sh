#!/usr/bin/env bash
# make check-sanitize: the stress programs under ThreadSanitizer (against the instrumented,
# prefix-only build of mapalloc) and the unit tests against the UndefinedBehaviorSanitizer build.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
stress/run.sh --allocators "" --tsan || status=1
build/tests/unit-ubsan || status=1
exit $status
